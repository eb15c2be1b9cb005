//! Owns the pass's desired-state stage: which revision to deploy (followed or pinned), whether
//! the App is suspended, and the desired objects of that revision (rendered from Git — plain
//! manifests, kustomize, or a Helm chart with its values and its `Chart.lock` dependencies
//! fetched before Helm runs — the set recorded for a pinned
//! revision, or the set kept from the last pass), with what a render records when it succeeds
//! and when it fails.

use super::{ReconcileError, Reconciler, events, namespace};
use crate::apply::{self, ObjectOutcome, Outcome};
use crate::event::{self, Digest, Draft, Event};
use crate::plan::{self, Action, DesiredObject, InventoryEntry};
use crate::render::helm::{self, SkippedHook, ValuesLayer, ValuesSource};
use crate::render::repo::RepoTree;
use crate::render::{self, RenderOptions, SecretKey};
use crate::source::{self, GitSource, chart_deps};
use crate::store::projection::AppState;
use crate::store::{EventRead, blob};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One revision rendered: the desired objects, the same objects as recorded (Secret values
/// sealed once, when rendered) and the blob address of their recorded set.
#[derive(Clone)]
pub(super) struct Rendered {
    pub revision: String,
    pub desired: Arc<Vec<DesiredObject>>,
    /// Each desired object as recorded ([`recorded_form`]), one canonical object per line in
    /// render order: what [`Packed`] keeps and what the recorded set is made of. Sealing takes a
    /// random nonce, so the set's bytes cannot be rebuilt from `desired` to the same address:
    /// they are kept from the one sealing.
    pub lines: Arc<Vec<u8>>,
    pub digest: Digest,
    /// For a Helm App, the keyed digest of the values read outside Git (the cluster's and the
    /// App's inline ones): the same revision renders differently when they change.
    pub values_key: Option<String>,
    /// Helm hooks the chart rendered and the App does not apply (recorded with the render).
    pub hooks: Arc<Vec<SkippedHook>>,
    /// The `Chart.lock` dependencies fetched for this render (none when it was not rendered
    /// now, or all were vendored).
    pub dependencies: Arc<Vec<chart_deps::Resolved>>,
}

/// The dependencies a render of `revision` fetched, and when the repositories were last asked
/// about them: a kept render is rendered again when one of them now holds another archive
/// under the locked version.
pub(super) struct KeptDependencies {
    revision: String,
    resolved: Arc<Vec<chart_deps::Resolved>>,
    checked: std::time::Instant,
}

/// A rendered revision as a pass keeps it for the next: each object's canonical JSON as
/// recorded (Secret values sealed), one per line in render order, lz4-compressed. A thousand
/// Apps' parsed sets (`serde_json::Value`, a B-tree node per map) were tens of MB; a pass
/// unpacks its own in microseconds.
pub(super) struct Packed {
    revision: String,
    digest: Digest,
    values_key: Option<String>,
    hooks: Arc<Vec<SkippedHook>>,
    bytes: Box<[u8]>,
}

impl Rendered {
    /// `desired` of `revision` rendered now: each object's recorded form made (Secret values
    /// sealed) once, and the address of the set they make.
    pub fn new(revision: String, desired: Vec<DesiredObject>, key: &SecretKey) -> Rendered {
        let lines = packed_lines(&desired, key);
        let digest = Digest::of(&set_of_lines(&lines).expect("lines just written"));
        Rendered {
            revision,
            desired: Arc::new(desired),
            lines: Arc::new(lines),
            digest,
            values_key: None,
            hooks: Arc::default(),
            dependencies: Arc::default(),
        }
    }
}

impl Packed {
    pub fn pack(rendered: &Rendered) -> Packed {
        Packed {
            revision: rendered.revision.clone(),
            digest: rendered.digest,
            values_key: rendered.values_key.clone(),
            hooks: rendered.hooks.clone(),
            bytes: lz4_flex::compress_prepend_size(&rendered.lines).into_boxed_slice(),
        }
    }

    pub fn unpack(&self, key: &SecretKey, namespace: &str) -> Result<Rendered, String> {
        let bytes = lz4_flex::decompress_size_prepended(&self.bytes).map_err(|e| e.to_string())?;
        let mut rendered =
            open_recorded(self.revision.clone(), &bytes, self.digest, key, namespace)?;
        rendered.values_key = self.values_key.clone();
        rendered.hooks = self.hooks.clone();
        Ok(rendered)
    }

    /// Whether this is the render of `revision` with the values `values_key` names.
    fn is_for(&self, revision: &str, values_key: Option<&str>) -> bool {
        self.revision == revision && self.values_key.as_deref() == values_key
    }
}

/// Objects in the recorded format ([`render::from_recorded`]: one canonical object per line,
/// Secret values sealed) opened as `revision`'s desired set, whose address is `digest`; a Secret
/// naming no namespace is placed in `namespace`, as a render places it.
fn open_recorded(
    revision: String,
    bytes: &[u8],
    digest: Digest,
    key: &SecretKey,
    namespace: &str,
) -> Result<Rendered, String> {
    let set = render::from_recorded(bytes, key).map_err(|e| e.to_string())?;
    // Recorded before Secrets were placed in the target when rendered (or as rendered since):
    // placing them again is a no-op for the latter.
    let set = namespace::with_secret_namespaces(set, namespace, key);
    Ok(Rendered {
        revision,
        desired: Arc::new(
            set.objects
                .iter()
                .map(|o| DesiredObject::from_rendered(o, key))
                .collect(),
        ),
        lines: Arc::new(bytes.to_vec()),
        digest,
        values_key: None,
        hooks: Arc::default(),
        dependencies: Arc::default(),
    })
}

/// One object as recorded: as rendered, a Secret's values sealed.
fn recorded_form(d: &DesiredObject, key: &SecretKey) -> serde_json::Value {
    match d.stored {
        // Only objects whose storable form differs (Secrets) need sealing.
        Some(_) => render::sealed_object(d.manifest.as_value(), key),
        None => d.manifest.as_value().clone(),
    }
}

/// What [`Packed`] keeps, before compression: [`render::from_recorded`]'s input format (the
/// recorded set's), but in render order rather than sorted.
fn packed_lines(desired: &[DesiredObject], key: &SecretKey) -> Vec<u8> {
    let mut out = Vec::new();
    for d in desired {
        out.extend_from_slice(render::canonical_json(&recorded_form(d, key)).as_bytes());
        out.push(b'\n');
    }
    out
}

/// The canonical bytes of a rendered set as recorded for its revision, from its objects as
/// recorded ([`packed_lines`]: as rendered, Secret values sealed under the agent's key, see
/// [`render::sealed_object`]), so a rollback can apply it without Git. Per-object blobs (the
/// inventory) keep the keyed-hash form instead.
fn set_of_lines(lines: &[u8]) -> Result<Vec<u8>, String> {
    let objects = lines
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<Vec<serde_json::Value>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(blob::canonical(&objects))
}

/// What names a Helm App's values from outside Git in the kept render: their keyed digest, or
/// none when there are none.
fn values_key(values: &[ValuesLayer], key: &SecretKey) -> Option<String> {
    (!values.is_empty()).then(|| helm::values_digest(values, key))
}

/// A chart's files with the dependencies its `Chart.lock` names and `charts/` lacks added
/// (fetched, or read from the cache by digest; a `file://` one read from the revision): their
/// archives are files of the chart, so the chart digest on every rendered object covers them and
/// a dependency whose archive changed under the same version is another render. Blocking.
fn with_dependencies(
    app: &str,
    source: &GitSource,
    revision: &str,
    fetcher: &chart_deps::Fetcher,
    files: Vec<render::SourceFile>,
) -> Result<(Vec<render::SourceFile>, Vec<chart_deps::Resolved>), String> {
    let label = chart_deps::chart_label(&files);
    let tree = || -> Result<Box<dyn RepoTree>, String> {
        Ok(Box::new(
            source.tree_at(revision).map_err(|e| e.to_string())?,
        ))
    };
    let (files, resolved) = fetcher
        .vendor(files, tree, &source.spec().path)
        .map_err(|e| format!("helm chart {label}: {e}"))?;
    for d in &resolved {
        tracing::debug!(%app, %revision, dependency = %d.name, version = %d.version, repository = %d.repository, digest = %d.digest, "chart dependency ready");
    }
    Ok((files, resolved))
}

/// The revision to deploy: the pinned one, else the source's deployable head.
pub(super) fn target_revision(state: &AppState) -> Option<String> {
    if state.intent.is_pinned() {
        state.intent.revision.clone()
    } else {
        state.deployable_head.clone()
    }
}

/// The event recording a change of suspension (the configuration says `configured`, the log
/// last recorded `recorded`), if it changed.
pub(super) fn suspension_change(configured: bool, recorded: bool) -> Option<Event> {
    match (configured, recorded) {
        (true, false) => Some(Event::AppSuspended(event::AppSuspended {
            reason: Some("suspend: true in the configuration".into()),
        })),
        (false, true) => Some(Event::AppResumed(event::AppResumed {
            reason: Some("suspend removed from the configuration".into()),
        })),
        _ => None,
    }
}

/// What a render failure of `revision` records: the failure, and for each inventory object
/// the prune it does not do (a render failure never prunes).
pub(super) fn render_failure_drafts(
    app: &str,
    revision: &str,
    error: &str,
    inventory: &[InventoryEntry],
) -> Vec<Draft> {
    let mut drafts = vec![Draft::new(
        Some(app),
        Event::RenderFailed(event::RenderFailed {
            revision: revision.to_string(),
            error: error.to_string(),
        }),
    )];
    for action in plan::render_failed(inventory) {
        if let Action::PruneSkipped { object, reason } = &action {
            let outcome = ObjectOutcome {
                object: object.clone(),
                outcome: Outcome::Skipped {
                    reason: apply::SkipReason::Prune(reason.clone()),
                },
                digest: None,
                reason: None,
                resource_version: None,
                uid: None,
            };
            drafts.extend(events::outcome_draft(app, revision, &outcome, None));
        }
    }
    drafts
}

/// Whether a render failure is news: the same failure of the same revision is recorded once,
/// not at every pass.
pub(super) fn render_failure_is_new(
    last: Option<&(String, String)>,
    revision: &str,
    error: &str,
) -> bool {
    last.is_none_or(|(r, e)| r != revision || e != error)
}

/// Whether `rendered` is the render `recorded` holds (the set recorded for the same revision):
/// the same objects with the same digests, which cover Secret values through keyed hashes.
/// When it is, `rendered` takes the recorded set's address and returns true. Sealing is random,
/// so the same render seals to new bytes every time: without this, every render of a revision
/// in a new process would record its set again.
fn keep_recorded(rendered: &mut Rendered, recorded: &Rendered) -> bool {
    let keyed = |r: &Rendered| render::set_digest_of(r.desired.iter().map(|d| &d.digest));
    let same = rendered.revision == recorded.revision
        && rendered.desired.len() == recorded.desired.len()
        && keyed(rendered) == keyed(recorded);
    if same {
        rendered.digest = recorded.digest;
    }
    same
}

/// Whether `rendered` must be recorded (blob and RenderSucceeded): once per distinct render of
/// a revision.
pub(super) fn needs_render_record(state: &AppState, rendered: &Rendered) -> bool {
    state
        .revisions
        .get(&rendered.revision)
        .and_then(|r| r.digest)
        != Some(rendered.digest)
}

/// The RenderSucceeded event for `rendered`.
pub(super) fn render_succeeded(app: &str, rendered: &Rendered) -> Draft {
    Draft::new(
        Some(app),
        Event::RenderSucceeded(event::RenderSucceeded {
            revision: rendered.revision.clone(),
            digest: rendered.digest,
            object_count: rendered.desired.len() as u32,
        }),
    )
}

/// The blob and RenderSucceeded recording `rendered`, when it must be recorded
/// ([`needs_render_record`]); they go with the pass's first append.
pub(super) fn render_records(
    app: &str,
    state: &AppState,
    rendered: &Rendered,
) -> (Vec<Vec<u8>>, Vec<Draft>) {
    if needs_render_record(state, rendered) {
        // The lines are canonical JSON this process wrote (or read from a blob): they parse.
        let bytes = set_of_lines(&rendered.lines).expect("recorded lines parse");
        // The event names the bytes written, whatever happened to `digest` since: a
        // RenderSucceeded never names a blob the store does not hold.
        let mut drafts = vec![render_succeeded(
            app,
            &Rendered {
                digest: Digest::of(&bytes),
                ..rendered.clone()
            },
        )];
        drafts.extend(hook_drafts(app, &rendered.revision, &rendered.hooks));
        (vec![bytes], drafts)
    } else {
        (Vec::new(), Vec::new())
    }
}

/// One note per Helm hook the render left out, so none is skipped silently: a `PruneSkipped`
/// (an object the App does not touch, and why) naming the hook and its template.
pub(super) fn hook_drafts(app: &str, revision: &str, hooks: &[SkippedHook]) -> Vec<Draft> {
    hooks
        .iter()
        .map(|hook| {
            Draft::new(
                Some(app),
                Event::PruneSkipped(event::PruneSkipped {
                    revision: revision.to_string(),
                    object: event::ObjectRef::new(hook.object.clone()),
                    reason: hook.reason(),
                }),
            )
        })
        .collect()
}

impl Reconciler {
    /// Records a change of suspension (once per change); returns the events appended.
    pub(super) async fn record_suspension(
        &self,
        state: &AppState,
    ) -> Result<usize, ReconcileError> {
        match suspension_change(self.app.suspend, state.suspended) {
            Some(event) => {
                self.append(vec![], vec![Draft::new(Some(&self.app.name), event)])
                    .await
            }
            None => Ok(0),
        }
    }

    /// The desired set for `revision`: the one kept from the last pass when it is the same
    /// revision (a revision renders the same every time: a pass woken by the watch re-plans
    /// without reading and rendering the tree again), else [`Self::desired_for`].
    pub(super) async fn desired_state(
        &mut self,
        state: &AppState,
        revision: &str,
    ) -> Result<Rendered, String> {
        // A Helm App's values from the cluster are read at every pass: when they (or the inline
        // ones) change, the same revision is rendered again.
        let values = self.helm_values().await?;
        let values_key = values_key(&values, &self.key);
        let cached = self
            .memory
            .rendered
            .as_ref()
            .filter(|r| r.is_for(revision, values_key.as_deref()))
            .map(|r| r.unpack(&self.key, &self.app.target.namespace));
        // A kept render whose dependencies the repositories now hold under other archives
        // (an OCI tag pushed again) is rendered again: looked at once per poll interval.
        let cached = match cached {
            Some(Ok(_)) if self.dependencies_changed(revision).await => None,
            other => other,
        };
        let mut rendered = match cached {
            Some(Ok(r)) => Ok(r),
            // Unpacking what this process packed cannot fail short of a bug; render again then.
            Some(Err(error)) => {
                tracing::warn!(app = %self.app.name, %revision, %error, "the kept rendered set did not unpack; rendering again");
                self.desired_for(state, revision, &values).await
            }
            None => self.desired_for(state, revision, &values).await,
        }?;
        rendered.values_key = values_key;
        if !rendered.dependencies.is_empty() {
            self.memory.dependencies = Some(KeptDependencies {
                revision: revision.to_string(),
                resolved: rendered.dependencies.clone(),
                checked: std::time::Instant::now(),
            });
        }
        self.memory.render_failure = None;
        self.memory.rendered = Some(Packed::pack(&rendered));
        Ok(rendered)
    }

    /// Whether the dependencies the kept render of `revision` fetched are now other archives
    /// in their repositories (asked at most once per poll interval; a repository that does not
    /// answer leaves the kept render as it is: nothing needs fetching for it).
    async fn dependencies_changed(&mut self, revision: &str) -> bool {
        let interval = self.app.source.interval;
        let Some(kept) = self
            .memory
            .dependencies
            .as_mut()
            .filter(|k| k.revision == revision && k.checked.elapsed() >= interval)
        else {
            return false;
        };
        kept.checked = std::time::Instant::now();
        let resolved = kept.resolved.clone();
        let fetcher = self.dependency_fetcher();
        let changed = tokio::task::spawn_blocking(move || fetcher.changed(&resolved)).await;
        match changed {
            Ok(Ok(changed)) if !changed.is_empty() => {
                tracing::info!(app = %self.app.name, %revision, changed = ?changed, "chart dependencies changed under their locked versions; rendering again");
                true
            }
            Ok(Ok(_)) => false,
            Ok(Err(error)) => {
                tracing::debug!(app = %self.app.name, %revision, %error, "chart dependencies not checked");
                false
            }
            Err(error) => {
                tracing::debug!(app = %self.app.name, %revision, %error, "chart dependencies not checked");
                false
            }
        }
    }

    /// What fetches the App's `Chart.lock` dependencies (`helm.repositories`), caching beside
    /// the source's mirrors.
    fn dependency_fetcher(&self) -> chart_deps::Fetcher {
        let root = self.source.cache_dir().parent().unwrap_or(Path::new("."));
        source::config::dependency_fetcher(&self.app, root, self.limits.input.fetch_timeout)
    }

    /// Records a render failure once (it keeps everything applied before and prunes nothing);
    /// returns the events appended.
    pub(super) async fn record_render_failure(
        &mut self,
        state: &AppState,
        revision: &str,
        error: &str,
    ) -> Result<usize, ReconcileError> {
        if !render_failure_is_new(self.memory.render_failure.as_ref(), revision, error) {
            tracing::debug!(app = %self.app.name, %revision, "render still failing");
            return Ok(0);
        }
        let inventory = self.inventory(state, &[])?;
        let drafts = render_failure_drafts(&self.app.name, revision, error, &inventory);
        let appended = self.append(vec![], drafts).await?;
        self.memory.render_failure = Some((revision.to_string(), error.to_string()));
        tracing::warn!(app = %self.app.name, %revision, %error, "render failed; nothing applied or pruned");
        Ok(appended)
    }

    /// A Helm App's values from outside Git, in merge order: each `values_from` ConfigMap or
    /// Secret key (read with the App's client), then the inline `values`. None for other Apps.
    pub(super) async fn helm_values(&self) -> Result<Vec<ValuesLayer>, String> {
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        let Some(config) = &self.app.helm else {
            return Ok(Vec::new());
        };
        let mut layers = Vec::new();
        for from in &config.values_from {
            let namespace = from
                .namespace
                .clone()
                .unwrap_or_else(|| self.app.target.namespace.clone());
            let client = self.catalog.client().clone();
            let (source, bytes) = match from.kind {
                crate::config::ValuesKind::ConfigMap => {
                    let api = kube::Api::<ConfigMap>::namespaced(client, &namespace);
                    let object = api.get_opt(&from.name).await;
                    let source = ValuesSource::ConfigMap {
                        namespace,
                        name: from.name.clone(),
                        key: from.key.clone(),
                    };
                    let object = object.map_err(|e| format!("helm values_from {source}: {e}"))?;
                    let bytes = object
                        .and_then(|cm| cm.data)
                        .and_then(|data| data.get(&from.key).cloned())
                        .map(String::into_bytes);
                    (source, bytes)
                }
                crate::config::ValuesKind::Secret => {
                    let api = kube::Api::<Secret>::namespaced(client, &namespace);
                    let object = api.get_opt(&from.name).await;
                    let source = ValuesSource::Secret {
                        namespace,
                        name: from.name.clone(),
                        key: from.key.clone(),
                    };
                    let object = object.map_err(|e| format!("helm values_from {source}: {e}"))?;
                    let bytes = object
                        .and_then(|secret| secret.data)
                        .and_then(|data| data.get(&from.key).map(|b| b.0.clone()));
                    (source, bytes)
                }
            };
            match bytes {
                Some(bytes) => layers.push(ValuesLayer { source, bytes }),
                None if from.optional => {}
                None => {
                    return Err(format!(
                        "helm values_from {source}: not found (set optional: true to render \
                         without it)"
                    ));
                }
            }
        }
        if let Some(values) = &config.values {
            layers.push(ValuesLayer {
                source: ValuesSource::Inline,
                // JSON is YAML: Helm reads it as a values file.
                bytes: serde_json::to_vec(values).map_err(|e| e.to_string())?,
            });
        }
        Ok(layers)
    }

    /// Reads and renders a revision (off the async threads); a chart at the App's path is
    /// rendered by Helm with `values` after its values files.
    async fn render(&self, revision: &str, values: &[ValuesLayer]) -> Result<Rendered, String> {
        let files = self
            .source
            .read_tree_async(revision.to_string())
            .await
            .map_err(|e| format!("reading revision {revision}: {e}"))?;
        let options = RenderOptions {
            app: self.app.name.clone(),
            secret_key: self.key.clone(),
            kustomize_timeout: Duration::from_secs(60),
            yaml_expanded_bytes: self.limits.input.yaml_expanded_bytes,
            fill_port_protocol: self.catalog.server().needs_port_protocol(),
        };
        let revision = revision.to_string();
        let create_namespace = self
            .app
            .target
            .create_namespace
            .then(|| self.app.target.namespace.clone());
        let target_namespace = self.app.target.namespace.clone();
        let source = self.source.clone();
        let chart = helm::is_chart(&files);
        if self.app.helm.is_some() && !chart {
            return Err(format!(
                "helm is set, but the App's path {:?} holds no Chart.yaml",
                self.app.source.path
            ));
        }
        let helm_options = chart.then(|| helm::HelmOptions {
            release: self
                .app
                .helm
                .as_ref()
                .and_then(|h| h.release.clone())
                .unwrap_or_else(|| self.app.given_name().to_string()),
            namespace: self.app.target.namespace.clone(),
            kube_version: self.catalog.server().git_version.clone(),
            api_versions: self.catalog.api_versions(),
            values_files: self
                .app
                .helm
                .as_ref()
                .map(|h| h.values_files.clone())
                .unwrap_or_default(),
            values: values.to_vec(),
            timeout: Duration::from_secs(60),
        });
        // Dependencies of Chart.lock that are not vendored are fetched now, before Helm runs
        // (and without network for Helm): they are part of the chart it renders.
        let fetcher = chart.then(|| self.dependency_fetcher());
        let app = self.app.name.clone();
        tokio::task::spawn_blocking(move || {
            let mut dependencies = Vec::new();
            let (mut set, hooks) = match &helm_options {
                Some(helm_options) => {
                    let files = match &fetcher {
                        Some(fetcher) => {
                            let (files, resolved) =
                                with_dependencies(&app, &source, &revision, fetcher, files)?;
                            dependencies = resolved;
                            files
                        }
                        None => files,
                    };
                    let chart = helm::render_chart(&files, &options, helm_options)
                        .map_err(|e| e.to_string())?;
                    (chart.set, chart.hooks)
                }
                None => {
                    // kustomize units may reach the rest of the repository (`../../base`).
                    let repo = source
                        .tree_at(&revision)
                        .map_err(|e| format!("reading revision {revision}: {e}"))?;
                    let set =
                        render::render_in(&files, &repo, &options).map_err(|e| e.to_string())?;
                    (set, Vec::new())
                }
            };
            if let Some(ns) = &create_namespace {
                set = namespace::with_target_namespace(set, ns, &options.app, &options.secret_key);
            }
            set = namespace::with_secret_namespaces(set, &target_namespace, &options.secret_key);
            let desired: Vec<DesiredObject> = set
                .objects
                .iter()
                .map(|o| DesiredObject::from_rendered(o, &options.secret_key))
                .collect();
            Ok(Rendered {
                hooks: Arc::new(hooks),
                dependencies: Arc::new(dependencies),
                ..Rendered::new(revision, desired, &options.secret_key)
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The manifests recorded for a revision (its RenderSucceeded blob), opened to apply.
    async fn recorded(&self, revision: &str, digest: Digest) -> Result<Rendered, String> {
        let reader = self.store.reader().clone();
        let key = self.key.clone();
        let revision = revision.to_string();
        let namespace = self.app.target.namespace.clone();
        tokio::task::spawn_blocking(move || {
            let bytes = reader
                .blob(&digest)
                .map_err(|e| format!("reading blob {digest}: {e}"))?
                .ok_or_else(|| format!("the store does not hold blob {digest}"))?;
            // The blob's address is the set's digest, and its lines are the recorded objects:
            // kept as they are (sealing again would give other bytes at another address).
            open_recorded(revision, &bytes, digest, &key, &namespace)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// `rendered` with the address of the set recorded for its revision when that set is this
    /// render ([`keep_recorded`]); as it is when none was recorded, it differs, or the recorded
    /// set cannot be read (then it is recorded again, as any new render).
    async fn keep_recorded(&self, state: &AppState, mut rendered: Rendered) -> Rendered {
        let recorded = state
            .revisions
            .get(&rendered.revision)
            .and_then(|r| r.digest);
        let Some(digest) = recorded.filter(|d| *d != rendered.digest) else {
            return rendered;
        };
        match self.recorded(&rendered.revision, digest).await {
            Ok(recorded) => {
                keep_recorded(&mut rendered, &recorded);
            }
            Err(error) => {
                tracing::debug!(app = %self.app.name, revision = %rendered.revision, %error, "the recorded set does not open; recording this render");
            }
        }
        rendered
    }

    /// The desired set for `revision`. A pinned App (rollback, pin) applies what was recorded
    /// for its revision, so it needs neither the commit on the remote nor the mirror; only when
    /// nothing usable was recorded (never rendered, or recorded by an older reckon that kept
    /// Secret values as keyed hashes only) is the revision rendered from Git, and when that fails
    /// too the error names both causes. A followed revision is rendered from Git.
    pub(super) async fn desired_for(
        &self,
        state: &AppState,
        revision: &str,
        values: &[ValuesLayer],
    ) -> Result<Rendered, String> {
        let recorded = state
            .intent
            .is_pinned()
            .then(|| state.revisions.get(revision).and_then(|r| r.digest))
            .flatten();
        let Some(digest) = recorded else {
            let rendered = self.render(revision, values).await?;
            return Ok(self.keep_recorded(state, rendered).await);
        };
        match self.recorded(revision, digest).await {
            Ok(r) => Ok(r),
            Err(recorded) => {
                tracing::warn!(app = %self.app.name, %revision, error = %recorded, "the recorded manifests cannot be applied; rendering the revision from Git");
                self.render(revision, values).await.map_err(|git| {
                    format!(
                        "the manifests recorded for {revision} cannot be applied ({recorded}), \
                         and rendering it from Git failed: {git}"
                    )
                })
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::event::IntentKind;
    use crate::store::projection::{Intent, RevisionEntry};

    /// A revision first seen now, never synced.
    pub(in crate::reconcile) fn revision_entry(digest: Option<Digest>) -> RevisionEntry {
        RevisionEntry {
            first_seen: chrono::Utc::now(),
            applied_at: None,
            outcome: None,
            digest,
            first_seq: 1,
            commit_seq: None,
            objects_changed: 0,
        }
    }

    fn desired_set(key: &SecretKey) -> Vec<DesiredObject> {
        desired_set_with(key, "hunter2")
    }

    /// The set of [`desired_set`] with the Secret's password `password`.
    fn desired_set_with(key: &SecretKey, password: &str) -> Vec<DesiredObject> {
        let secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: db}}\n\
             stringData: {{password: {password}}}\ndata: {{user: YWRtaW4=}}\n"
        );
        let files: Vec<render::SourceFile> = vec![
            (
                "app.yaml".into(),
                b"apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
                  apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n\
                  spec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    \
                  metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]\n"
                    .to_vec(),
            ),
            ("secret.yaml".into(), secret.into_bytes()),
        ];
        let options = RenderOptions {
            app: "shop".into(),
            secret_key: key.clone(),
            kustomize_timeout: Duration::from_secs(5),
            yaml_expanded_bytes: render::DEFAULT_YAML_EXPANDED_BYTES,
            fill_port_protocol: true,
        };
        // As a pass renders it: the Secret, naming no namespace, placed in the App's.
        let set = namespace::with_secret_namespaces(
            render::render(&files, &options).unwrap(),
            "shop",
            key,
        );
        set.objects
            .iter()
            .map(|o| DesiredObject::from_rendered(o, key))
            .collect()
    }

    /// Revision abc rendered as a pass renders it: the desired objects and the address of their
    /// set as it would be recorded (sealed now).
    fn rendered_with(key: &SecretKey, password: &str) -> Rendered {
        Rendered::new("abc".into(), desired_set_with(key, password), key)
    }

    #[test]
    fn an_unchanged_render_keeps_the_recorded_set_and_a_changed_one_is_recorded() {
        let key = SecretKey::new([7; 32]);
        // The first render of the revision is recorded: its set and a RenderSucceeded.
        let first = rendered_with(&key, "hunter2");
        let (blobs, drafts) = render_records("shop", &AppState::default(), &first);
        assert_eq!((blobs.len(), drafts.len()), (1, 1));
        assert_eq!(
            Digest::of(&blobs[0]),
            first.digest,
            "the blob is at its address"
        );
        let mut state = AppState::default();
        state
            .revisions
            .insert("abc".into(), revision_entry(Some(first.digest)));
        let recorded = open_recorded("abc".into(), &blobs[0], first.digest, &key, "shop").unwrap();

        // Rendered again (a restart, a new process): the Secret's values seal to other bytes,
        // but it is the render recorded, so the recorded set is kept and nothing is recorded.
        let mut again = rendered_with(&key, "hunter2");
        assert_ne!(again.digest, first.digest, "random nonces");
        assert!(keep_recorded(&mut again, &recorded));
        assert_eq!(again.digest, first.digest);
        let (blobs, drafts) = render_records("shop", &state, &again);
        assert!(blobs.is_empty() && drafts.is_empty(), "one blob per render");

        // A changed Secret value is another render of the revision: recorded.
        let mut changed = rendered_with(&key, "hunter3");
        assert!(!keep_recorded(&mut changed, &recorded));
        let (blobs, drafts) = render_records("shop", &state, &changed);
        assert_eq!(blobs.len(), 1);
        assert!(matches!(
            &drafts[0].event,
            Event::RenderSucceeded(r) if r.digest == changed.digest && r.digest != first.digest
        ));
    }

    #[test]
    fn a_packed_render_unpacks_to_the_same_desired_objects() {
        let key = SecretKey::new([7; 32]);
        let desired = desired_set(&key);
        assert_eq!(desired.len(), 3);
        assert!(desired.iter().any(|d| d.stored.is_some()), "the Secret");
        let rendered = Rendered {
            values_key: Some("hmac-sha256:00".into()),
            hooks: Arc::new(vec![hook()]),
            ..Rendered::new("abc".into(), desired.clone(), &key)
        };

        let packed = Packed::pack(&rendered);
        // Kept sealed: the Secret's value is not in the packed bytes in plain text.
        let bytes = lz4_flex::decompress_size_prepended(&packed.bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("YWRtaW4="),
            "{text}"
        );

        let unpacked = packed.unpack(&key, "shop").unwrap();
        assert_eq!(unpacked.revision, "abc");
        assert_eq!(unpacked.values_key.as_deref(), Some("hmac-sha256:00"));
        assert_eq!(*unpacked.hooks, vec![hook()]);
        assert!(packed.is_for("abc", Some("hmac-sha256:00")));
        assert!(!packed.is_for("abc", None), "other values: render again");
        assert!(!packed.is_for("def", Some("hmac-sha256:00")));
        assert_eq!(unpacked.digest, rendered.digest);
        assert_eq!(*unpacked.desired, desired);
        // Recorded from either, the set is the one sealing's, at the address the event names.
        for r in [&rendered, &unpacked] {
            let (blobs, drafts) = render_records("shop", &AppState::default(), r);
            assert_eq!(Digest::of(&blobs[0]), rendered.digest);
            assert!(
                matches!(&drafts[0].event, Event::RenderSucceeded(e) if e.digest == rendered.digest)
            );
        }
    }

    fn hook() -> SkippedHook {
        SkippedHook {
            object: plan::ObjectRef::from_api_version("batch/v1", "Job", Some("shop"), "migrate"),
            hook: "pre-install,pre-upgrade".into(),
            template: "templates/migrate.yaml".into(),
        }
    }

    #[test]
    fn each_skipped_hook_is_recorded_by_name_with_the_render() {
        let key = SecretKey::new([7; 32]);
        let desired = desired_set(&key);
        let rendered = Rendered {
            hooks: Arc::new(vec![hook()]),
            ..Rendered::new("abc".into(), desired, &key)
        };
        let (blobs, drafts) = render_records("shop", &AppState::default(), &rendered);
        assert_eq!(blobs.len(), 1);
        assert_eq!(drafts.len(), 2, "RenderSucceeded and the hook's note");
        match &drafts[1].event {
            Event::PruneSkipped(p) => {
                assert_eq!(p.revision, "abc");
                assert_eq!(p.object.name, "migrate");
                assert_eq!(p.object.kind, "Job");
                assert!(
                    p.reason.contains("Helm hook pre-install,pre-upgrade"),
                    "{}",
                    p.reason
                );
                assert!(p.reason.contains("templates/migrate.yaml"), "{}", p.reason);
            }
            other => panic!("{other:?}"),
        }
        // Recorded once per distinct render, with it.
        let mut state = AppState::default();
        state
            .revisions
            .insert("abc".into(), revision_entry(Some(rendered.digest)));
        assert!(render_records("shop", &state, &rendered).1.is_empty());
    }

    #[test]
    fn values_from_outside_git_name_the_kept_render() {
        let key = SecretKey::new([7; 32]);
        assert_eq!(values_key(&[], &key), None);
        let layer = |text: &str| ValuesLayer {
            source: ValuesSource::Inline,
            bytes: text.as_bytes().to_vec(),
        };
        let one = values_key(&[layer("a: 1")], &key).unwrap();
        assert_ne!(Some(one.clone()), values_key(&[layer("a: 2")], &key));
        assert!(!one.contains("a: 1"));
    }

    fn state(pinned: Option<&str>, head: Option<&str>) -> AppState {
        AppState {
            intent: Intent {
                kind: if pinned.is_some() {
                    IntentKind::Pin
                } else {
                    IntentKind::Follow
                },
                revision: pinned.map(String::from),
                ..Intent::default()
            },
            deployable_head: head.map(String::from),
            ..AppState::default()
        }
    }

    #[test]
    fn a_followed_app_deploys_the_deployable_head_and_a_pinned_one_its_pin() {
        assert_eq!(
            target_revision(&state(None, Some("head"))),
            Some("head".into())
        );
        assert_eq!(target_revision(&state(None, None)), None);
        assert_eq!(
            target_revision(&state(Some("old"), Some("head"))),
            Some("old".into())
        );
    }

    #[test]
    fn suspension_is_recorded_only_when_it_changes() {
        assert!(matches!(
            suspension_change(true, false),
            Some(Event::AppSuspended(_))
        ));
        assert!(matches!(
            suspension_change(false, true),
            Some(Event::AppResumed(_))
        ));
        assert_eq!(suspension_change(true, true), None);
        assert_eq!(suspension_change(false, false), None);
    }

    #[test]
    fn the_same_render_failure_is_recorded_once() {
        let last = ("abc".to_string(), "broken".to_string());
        assert!(render_failure_is_new(None, "abc", "broken"));
        assert!(!render_failure_is_new(Some(&last), "abc", "broken"));
        assert!(render_failure_is_new(
            Some(&last),
            "abc",
            "broken differently"
        ));
        assert!(render_failure_is_new(Some(&last), "def", "broken"));
    }

    fn entry(kind: &str, name: &str) -> InventoryEntry {
        InventoryEntry {
            object: plan::ObjectRef::from_api_version("v1", kind, Some("shop"), name),
            last_applied_digest: Digest::ZERO,
            last_applied: serde_json::json!({}),
            adopted: false,
        }
    }

    #[test]
    fn a_render_failure_records_the_failure_and_prunes_nothing() {
        let drafts = render_failure_drafts("shop", "abc", "broken", &[]);
        assert_eq!(drafts.len(), 1);
        assert!(
            matches!(&drafts[0].event, Event::RenderFailed(f) if f.revision == "abc" && f.error == "broken")
        );

        let inventory = [entry("ConfigMap", "a"), entry("Service", "b")];
        let drafts = render_failure_drafts("shop", "abc", "broken", &inventory);
        assert!(matches!(drafts[0].event, Event::RenderFailed(_)));
        assert_eq!(drafts.len(), 3, "one skipped prune per inventory object");
        assert!(
            drafts[1..]
                .iter()
                .all(|d| !matches!(d.event, Event::ObjectPruned(_))),
            "nothing is pruned"
        );
    }

    #[test]
    fn a_render_is_recorded_once_per_distinct_set_of_a_revision() {
        let key = SecretKey::new([7; 32]);
        let desired = desired_set(&key);
        let rendered = Rendered::new("abc".into(), desired, &key);
        let mut state = AppState::default();
        assert!(needs_render_record(&state, &rendered), "never rendered");
        state
            .revisions
            .insert("abc".into(), revision_entry(Some(rendered.digest)));
        assert!(!needs_render_record(&state, &rendered), "recorded already");
        state.revisions.get_mut("abc").unwrap().digest = Some(Digest::of(b"other"));
        assert!(
            needs_render_record(&state, &rendered),
            "rendered differently"
        );
        let draft = render_succeeded("shop", &rendered);
        assert!(
            matches!(&draft.event, Event::RenderSucceeded(r) if r.object_count == 3 && r.digest == rendered.digest)
        );
    }
}
