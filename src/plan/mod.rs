//! Owns the pure planner: desired × inventory × observed (+ policy) → ordered actions.
//!
//! No I/O and no kube types: the executor gathers the inputs (the rendered set, the inventory
//! projection from the event log, the live objects from its watch cache), calls [`plan`], and
//! carries out the actions, recording each outcome as an event.
//!
//! Invariants the tests pin down:
//! - Only objects in this App's inventory are ever pruned (two Apps never prune each other's
//!   objects), and not one when pruning is off, the desired set is unexpectedly empty, the
//!   object opts out (`reckon.dev/prune: disabled`) or its live label names another App.
//! - An object whose digest equals the last applied digest is not written unless it drifted
//!   and the drift mode is `correct`.
//! - Applies run CRDs, then Namespaces, then everything else; prunes run in the reverse order.
//! - No Secret value appears in an action except in the manifest to apply, which `Debug` hides
//!   and serialisation leaves out: drift and change lists name Secret fields without values.

pub mod boundary;
mod diff;
mod fields;
pub mod ownership;
mod quantity;

pub use crate::model::labels::{FIELD_MANAGER, PRUNE_ANNOTATION, PRUNE_DISABLED};
pub use crate::model::{GroupKind, ObjectKey, ObjectRef, Scope};
pub use diff::{ChangeKind, FieldChange, changed_fields, covers, drifted_fields, escape};
pub use fields::owned_pointers;
pub use ownership::{Owner, RefuseReason, Resident};

use crate::config::{AdoptPolicy, DriftMode, IgnoreRule};
use crate::model::labels::APP_LABEL;
use crate::model::{Digest, Manifest};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Tells the planner the scope of a kind the cluster serves (from discovery), `None` if the
/// cluster does not serve it. CRDs in the desired set are consulted first.
pub type ScopeLookup<'a> = &'a dyn Fn(&GroupKind) -> Option<Scope>;

/// An object the App wants, as rendered. Not `Serialize`: it holds Secret values.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    pub object: ObjectRef,
    /// The manifest to apply (Secret values in plain text, hidden from `Debug`).
    pub manifest: Manifest,
    /// The rendered digest; compared with the inventory's last applied digest.
    pub digest: Digest,
    /// The storable form when it differs from `manifest` (Secrets, see
    /// [`crate::render::digest::storable_object`]); comparisons with stored state use it.
    pub stored: Option<Value>,
}

impl DesiredObject {
    /// From a rendered object; `key` hashes Secret values for the stored form.
    pub fn from_rendered(
        rendered: &crate::render::RenderedObject,
        key: &crate::render::SecretKey,
    ) -> Self {
        let stored = crate::render::digest::storable_object(rendered.manifest.as_value(), key);
        Self {
            object: rendered.object.clone(),
            stored: (rendered.manifest != stored).then_some(stored),
            manifest: rendered.manifest.clone(),
            digest: rendered.digest,
        }
    }

    /// What is compared with stored and live state: the storable form.
    pub fn comparable(&self) -> &Value {
        self.stored.as_ref().unwrap_or(self.manifest.as_value())
    }
}

/// One object of the App's inventory: what reckon last applied (a projection of the log).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InventoryEntry {
    /// With its namespace resolved, as applied.
    pub object: ObjectRef,
    #[serde(serialize_with = "crate::model::digest::prefixed::serialize")]
    pub last_applied_digest: Digest,
    /// The manifest last applied, in storable form (Secret values as keyed hashes).
    pub last_applied: Value,
    /// The object existed before the App took it over (its life in the inventory began with
    /// an adoption): leaving Git, it is orphaned unless the App prunes adopted objects.
    pub adopted: bool,
}

/// One entry of a live object's `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManagedFields {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// When the manager last wrote (RFC 3339, as the API server reports it).
    pub time: Option<String>,
    /// The FieldsV1 trie (`fieldsV1`).
    pub fields_v1: Value,
}

/// A live object from the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveObject {
    pub object: ObjectRef,
    /// The live manifest, in storable form for Secrets (apply
    /// [`crate::render::digest::storable_object`] with the agent key first).
    pub manifest: Value,
    pub managed_fields: Vec<ManagedFields>,
}

/// What the watch cache knows about an object. An object missing from [`Observed`] is
/// unknown (for example its kind's watch has not synced): no drift is claimed for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Observation {
    Present(LiveObject),
    /// Looked for and not found.
    Absent,
}

/// Observations by object identity.
pub type Observed = BTreeMap<ObjectKey, Observation>;

/// The App's policy as the planner needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The App's name, as in its objects' `reckon.dev/app` label.
    pub app: String,
    /// reckon's server-side apply field manager; never reported as the author of a drift.
    pub field_manager: String,
    /// Namespace for namespaced objects that name none.
    pub default_namespace: String,
    pub prune: bool,
    pub allow_empty: bool,
    pub drift: DriftMode,
    pub ignore: Vec<IgnoreRule>,
    /// Which existing objects outside the inventory may be taken over.
    pub adopt: AdoptPolicy,
    /// Whether adopted objects are deleted when they leave Git (otherwise orphaned).
    pub prune_adopted: bool,
    /// Whether a Namespace is deleted even while it holds objects the plan does not prune.
    pub prune_non_empty_namespaces: bool,
    /// Names the App's history was recorded under before (an App object's bare name, from a
    /// store written before App objects had identities): its objects may still carry them in
    /// their `reckon.dev/app` label until it applies them again, and they are its own.
    pub former_names: Vec<String>,
}

impl Policy {
    pub fn from_app(app: &crate::config::App) -> Self {
        Self {
            app: app.name.clone(),
            field_manager: FIELD_MANAGER.to_string(),
            default_namespace: app.target.namespace.clone(),
            prune: app.prune.enabled,
            allow_empty: app.prune.allow_empty,
            drift: app.drift,
            ignore: app.ignore.clone(),
            adopt: app.adopt,
            prune_adopted: app.prune.adopted,
            prune_non_empty_namespaces: app.prune.non_empty_namespaces,
            former_names: Vec::new(),
        }
    }

    /// Whether a `reckon.dev/app` label value names this App (now or by a former name).
    fn is_own(&self, label: &str) -> bool {
        label == self.app || self.former_names.iter().any(|n| n == label)
    }

    fn ignored_pointers(&self, object: &ObjectRef) -> Vec<&str> {
        self.ignore
            .iter()
            .filter(|rule| {
                rule.select.matches(
                    &object.group,
                    &object.kind,
                    object.namespace.as_deref(),
                    &object.name,
                )
            })
            .flat_map(|rule| rule.pointers.iter().map(String::as_str))
            .collect()
    }
}

/// Why an object is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ApplyReason {
    /// Not in the inventory and not in the cluster.
    New,
    /// Not in the inventory but already in the cluster; `previous_owner` is the App its
    /// `reckon.dev/app` label names, if another one.
    Adopt { previous_owner: Option<String> },
    /// The desired state differs from what was last applied.
    DesiredChanged,
    /// The desired state is unchanged but the live object drifted (drift mode `correct`).
    DriftCorrection,
}

/// Who wrote a field, from `managedFields`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldOwner {
    pub manager: String,
    pub operation: String,
    pub time: Option<String>,
}

/// One drifted field and who owns it now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftedField {
    /// Applied field's JSON pointer, with list indices as in the applied manifest.
    pub change: FieldChange,
    /// Managers other than reckon whose fields overlap this one.
    pub owners: Vec<FieldOwner>,
}

/// How a live object drifted from what was applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Drift {
    /// The object was deleted from the cluster.
    Deleted,
    /// Managed fields differ.
    Modified(Vec<DriftedField>),
}

/// Why an inventory object that left the desired set is not deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PruneSkipReason {
    /// The App's policy has pruning off.
    PruningDisabled,
    /// The desired set is empty and the App does not allow empty syncs to prune.
    EmptyDesiredSet,
    /// The object carries `reckon.dev/prune: disabled`.
    Annotation,
    /// The live object's `reckon.dev/app` label names another App: it was taken over.
    OwnedByOtherApp { owner: String },
    /// Rendering failed, so the desired set is unknown (see [`render_failed`]).
    RenderFailed,
    /// A Namespace that holds objects this plan does not delete (the first few named).
    NamespaceNotEmpty { residents: Vec<String>, more: usize },
    /// The object is outside what the App may write ([`boundary`]): the rule it breaks.
    OutsideBoundary { rule: String },
}

/// Why a desired object cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RejectReason {
    /// The cluster does not serve the kind and no CRD in the set defines it.
    UnknownKind,
    /// Another desired object has the same identity once namespaces are defaulted.
    Duplicate,
}

/// A desired object the planner could not plan; it is neither applied nor pruned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    pub object: ObjectRef,
    pub reason: RejectReason,
}

/// One thing to do (or, for `Unchanged`, `Drift` and `PruneSkipped`, to record). Serialising
/// an action leaves the manifest out (it may hold Secret values); store it with
/// [`crate::render::digest::storable_object`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    Create {
        object: ObjectRef,
        #[serde(skip)]
        manifest: Manifest,
        #[serde(serialize_with = "crate::model::digest::prefixed::serialize")]
        digest: Digest,
        reason: ApplyReason,
    },
    Configure {
        object: ObjectRef,
        #[serde(skip)]
        manifest: Manifest,
        #[serde(serialize_with = "crate::model::digest::prefixed::serialize")]
        digest: Digest,
        /// What this apply changes: against the last applied state for `DesiredChanged`, the
        /// drifted fields for `DriftCorrection`, against the live object for `Adopt`.
        changed: Vec<FieldChange>,
        reason: ApplyReason,
    },
    Unchanged {
        object: ObjectRef,
        #[serde(serialize_with = "crate::model::digest::prefixed::serialize")]
        digest: Digest,
    },
    /// Recorded before the apply (if any) that corrects it.
    Drift {
        object: ObjectRef,
        drift: Drift,
        /// Whether this plan re-applies the object (drift mode `correct`, or Git changed).
        corrected: bool,
    },
    Prune {
        object: ObjectRef,
    },
    PruneSkipped {
        object: ObjectRef,
        reason: PruneSkipReason,
    },
    /// A desired object the App may not write (ownership): nothing is sent, it is recorded as
    /// an `ApplyFailed` with the reason.
    Refuse {
        object: ObjectRef,
        #[serde(serialize_with = "crate::model::digest::prefixed::serialize")]
        digest: Digest,
        reason: RefuseReason,
    },
    /// An adopted object that left Git, released instead of deleted (`prune.adopted` off):
    /// the App's label is taken off and it leaves the inventory.
    Orphan {
        object: ObjectRef,
    },
}

/// Apply order: CRDs must exist before their custom resources, Namespaces before their content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Stage {
    Crds,
    Namespaces,
    Resources,
    Prune,
}

impl Action {
    pub fn object(&self) -> &ObjectRef {
        match self {
            Action::Create { object, .. }
            | Action::Configure { object, .. }
            | Action::Unchanged { object, .. }
            | Action::Drift { object, .. }
            | Action::Prune { object }
            | Action::PruneSkipped { object, .. }
            | Action::Refuse { object, .. }
            | Action::Orphan { object } => object,
        }
    }

    /// The stage the action belongs to; the executor finishes one stage before the next.
    pub fn stage(&self) -> Stage {
        match self {
            Action::Prune { .. } | Action::PruneSkipped { .. } | Action::Orphan { .. } => {
                Stage::Prune
            }
            other => apply_stage(other.object()),
        }
    }
}

fn is_crd(object: &ObjectRef) -> bool {
    object.group == "apiextensions.k8s.io" && object.kind == "CustomResourceDefinition"
}

fn is_namespace(object: &ObjectRef) -> bool {
    object.group.is_empty() && object.kind == "Namespace"
}

fn apply_stage(object: &ObjectRef) -> Stage {
    if is_crd(object) {
        Stage::Crds
    } else if is_namespace(object) {
        Stage::Namespaces
    } else {
        Stage::Resources
    }
}

/// The result of planning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// In execution order: applies by stage (render order within a stage), then prunes.
    pub actions: Vec<Action>,
    pub rejected: Vec<Rejected>,
}

/// Scopes defined by CRDs in the desired set, so their custom resources can be planned before
/// the cluster serves them.
fn crd_scopes(desired: &[DesiredObject]) -> BTreeMap<GroupKind, Scope> {
    desired
        .iter()
        .filter(|d| is_crd(&d.object))
        .filter_map(|d| {
            let spec = d.manifest.get("spec")?;
            let group = spec.get("group")?.as_str()?;
            let kind = spec.get("names")?.get("kind")?.as_str()?;
            let scope = match spec.get("scope")?.as_str()? {
                "Namespaced" => Scope::Namespaced,
                "Cluster" => Scope::Cluster,
                _ => return None,
            };
            Some((GroupKind::new(group, kind), scope))
        })
        .collect()
}

fn set_namespace(manifest: &mut Value, namespace: Option<&str>) {
    if let Some(Value::Object(metadata)) = manifest.get_mut("metadata") {
        match namespace {
            Some(ns) => {
                metadata.insert("namespace".into(), Value::String(ns.to_string()));
            }
            None => {
                metadata.remove("namespace");
            }
        }
    }
}

fn is_secret(object: &ObjectRef) -> bool {
    object.group.is_empty() && object.kind == "Secret"
}

/// Secret fields are named, never shown: the stored form holds hashes, and showing even those
/// invites treating them as values.
fn redact(object: &ObjectRef, mut changes: Vec<FieldChange>) -> Vec<FieldChange> {
    if is_secret(object) {
        for change in &mut changes {
            change.before = None;
            change.after = None;
        }
    }
    changes
}

fn label<'a>(manifest: &'a Value, key: &str) -> Option<&'a str> {
    manifest.get("metadata")?.get("labels")?.get(key)?.as_str()
}

fn annotation<'a>(manifest: &'a Value, key: &str) -> Option<&'a str> {
    manifest
        .get("metadata")?
        .get("annotations")?
        .get(key)?
        .as_str()
}

fn owners(live: &LiveObject, pointer: &str, field_manager: &str) -> Vec<FieldOwner> {
    live.managed_fields
        .iter()
        .filter(|entry| entry.manager != field_manager)
        .filter(|entry| {
            owned_pointers(&entry.fields_v1, &live.manifest)
                .iter()
                .any(|owned| covers(owned, pointer) || covers(pointer, owned))
        })
        .map(|entry| FieldOwner {
            manager: entry.manager.clone(),
            operation: entry.operation.clone(),
            time: entry.time.clone(),
        })
        .collect()
}

/// Plans one sync of one App.
pub fn plan(
    desired: &[DesiredObject],
    inventory: &[InventoryEntry],
    observed: &Observed,
    policy: &Policy,
    scopes: ScopeLookup<'_>,
) -> Plan {
    let crd_scopes = crd_scopes(desired);
    let scope_of = |gk: &GroupKind| crd_scopes.get(gk).copied().or_else(|| scopes(gk));
    let inventory_by_key: BTreeMap<ObjectKey, &InventoryEntry> =
        inventory.iter().map(|e| (e.object.key(), e)).collect();

    // Resolve namespaces; keep every identity a desired object may have, so that nothing
    // still in Git is pruned, even when it cannot be planned.
    let mut resolved: Vec<DesiredObject> = Vec::new();
    let mut rejected: Vec<Rejected> = Vec::new();
    let mut keep: BTreeSet<ObjectKey> = BTreeSet::new();
    for item in desired {
        let mut item = item.clone();
        let namespace = match scope_of(&item.object.group_kind()) {
            Some(Scope::Namespaced) => Some(
                item.object
                    .namespace
                    .clone()
                    .unwrap_or_else(|| policy.default_namespace.clone()),
            ),
            // kubectl ignores a namespace on a cluster-scoped object; so does reckon.
            Some(Scope::Cluster) => None,
            None => {
                let mut key = item.object.key();
                keep.insert(key.clone());
                if key.namespace.is_none() {
                    key.namespace = Some(policy.default_namespace.clone());
                    keep.insert(key);
                }
                rejected.push(Rejected {
                    object: item.object,
                    reason: RejectReason::UnknownKind,
                });
                continue;
            }
        };
        if item.object.namespace != namespace {
            item.object.namespace = namespace;
            set_namespace(
                item.manifest.as_value_mut(),
                item.object.namespace.as_deref(),
            );
            if let Some(stored) = &mut item.stored {
                set_namespace(stored, item.object.namespace.as_deref());
            }
        }
        if !keep.insert(item.object.key()) {
            rejected.push(Rejected {
                object: item.object,
                reason: RejectReason::Duplicate,
            });
            continue;
        }
        resolved.push(item);
    }
    resolved.sort_by_key(|item| apply_stage(&item.object));

    let mut actions = Vec::new();
    for item in resolved {
        plan_one(item, &inventory_by_key, observed, policy, &mut actions);
    }

    // Prune: inventory objects no longer desired, in reverse stage order.
    let mut gone: Vec<&InventoryEntry> = inventory_by_key
        .iter()
        .filter(|(key, _)| !keep.contains(*key))
        .map(|(_, entry)| *entry)
        .collect();
    gone.sort_by(|a, b| {
        apply_stage(&b.object)
            .cmp(&apply_stage(&a.object))
            .then_with(|| a.object.key().cmp(&b.object.key()))
    });
    for entry in gone {
        let object = entry.object.clone();
        let live = match observed.get(&object.key()) {
            Some(Observation::Present(live)) => Some(live),
            _ => None,
        };
        let opted_out = [Some(&entry.last_applied), live.map(|l| &l.manifest)]
            .into_iter()
            .flatten()
            .any(|m| annotation(m, PRUNE_ANNOTATION) == Some(PRUNE_DISABLED));
        let other_owner = live
            .and_then(|l| label(&l.manifest, APP_LABEL))
            .filter(|owner| !policy.is_own(owner));
        let reason = if !policy.prune {
            Some(PruneSkipReason::PruningDisabled)
        } else if desired.is_empty() && !policy.allow_empty {
            Some(PruneSkipReason::EmptyDesiredSet)
        } else if opted_out {
            Some(PruneSkipReason::Annotation)
        } else {
            other_owner.map(|owner| PruneSkipReason::OwnedByOtherApp {
                owner: owner.to_string(),
            })
        };
        actions.push(match reason {
            Some(reason) => Action::PruneSkipped { object, reason },
            // Someone made it before the App took it over: deleting it is not the App's call
            // unless it says so.
            None if entry.adopted && !policy.prune_adopted => Action::Orphan { object },
            None => Action::Prune { object },
        });
    }
    Plan { actions, rejected }
}

fn plan_one(
    item: DesiredObject,
    inventory: &BTreeMap<ObjectKey, &InventoryEntry>,
    observed: &Observed,
    policy: &Policy,
    actions: &mut Vec<Action>,
) {
    let key = item.object.key();
    let observation = observed.get(&key);
    let live = match observation {
        Some(Observation::Present(live)) => Some(live),
        _ => None,
    };
    let Some(entry) = inventory.get(&key) else {
        // Not ours yet.
        match live {
            Some(live) => {
                let mut owners = ownership::owners(&live.manifest, item.comparable(), &policy.app);
                owners.retain(|o| !matches!(o, Owner::App(app) if policy.is_own(app)));
                if let Some(reason) = ownership::adoption(policy.adopt, &owners) {
                    actions.push(Action::Refuse {
                        object: item.object,
                        digest: item.digest,
                        reason,
                    });
                    return;
                }
                let previous_owner = label(&live.manifest, APP_LABEL)
                    .filter(|owner| !policy.is_own(owner))
                    .map(str::to_string);
                let changed = redact(
                    &item.object,
                    drifted_fields(item.comparable(), &live.manifest, &[]),
                );
                actions.push(Action::Configure {
                    object: item.object,
                    manifest: item.manifest,
                    digest: item.digest,
                    changed,
                    reason: ApplyReason::Adopt { previous_owner },
                });
            }
            None => actions.push(Action::Create {
                object: item.object,
                manifest: item.manifest,
                digest: item.digest,
                reason: ApplyReason::New,
            }),
        }
        return;
    };

    // Another App took it over (its `adopt: always`): taking it back at every pass would make
    // the two Apps fight over it, and the log grow without bound.
    if let Some(owner) = live
        .and_then(|l| label(&l.manifest, APP_LABEL))
        .filter(|owner| !policy.is_own(owner))
    {
        actions.push(Action::Refuse {
            object: item.object,
            digest: item.digest,
            reason: RefuseReason::TakenOver {
                owner: owner.to_string(),
            },
        });
        return;
    }
    let desired_changed = item.digest != entry.last_applied_digest;
    let drift = match (policy.drift, observation) {
        (DriftMode::Off, _) | (_, None) => None,
        (_, Some(Observation::Absent)) => Some(Drift::Deleted),
        (_, Some(Observation::Present(live))) => {
            let ignored = policy.ignored_pointers(&item.object);
            let changes = drifted_fields(&entry.last_applied, &live.manifest, &ignored);
            let fields: Vec<DriftedField> = redact(&item.object, changes)
                .into_iter()
                .map(|change| DriftedField {
                    owners: owners(live, &change.pointer, &policy.field_manager),
                    change,
                })
                .collect();
            (!fields.is_empty()).then_some(Drift::Modified(fields))
        }
    };
    let correct = policy.drift == DriftMode::Correct;
    let reapply = desired_changed || (drift.is_some() && correct);
    let drifted_pointers: Vec<FieldChange> = match &drift {
        Some(Drift::Modified(fields)) => fields.iter().map(|f| f.change.clone()).collect(),
        _ => Vec::new(),
    };
    let deleted =
        matches!(drift, Some(Drift::Deleted)) || matches!(observation, Some(Observation::Absent));
    if let Some(drift) = drift {
        actions.push(Action::Drift {
            object: item.object.clone(),
            drift,
            corrected: reapply,
        });
    }
    if !reapply {
        actions.push(Action::Unchanged {
            object: item.object,
            digest: item.digest,
        });
        return;
    }
    let reason = if desired_changed {
        ApplyReason::DesiredChanged
    } else {
        ApplyReason::DriftCorrection
    };
    if deleted {
        actions.push(Action::Create {
            object: item.object,
            manifest: item.manifest,
            digest: item.digest,
            reason,
        });
        return;
    }
    let changed = if desired_changed {
        redact(
            &item.object,
            changed_fields(&entry.last_applied, item.comparable()),
        )
    } else {
        drifted_pointers
    };
    actions.push(Action::Configure {
        object: item.object,
        manifest: item.manifest,
        digest: item.digest,
        changed,
        reason,
    });
}

/// Namespaces named in the plan's prunes, whose residents [`guard_namespaces`] needs.
pub fn pruned_namespaces(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Prune { object } if is_namespace(object) => Some(object.name.clone()),
            _ => None,
        })
        .collect()
}

/// Residents named in a `NamespaceNotEmpty` reason at most (the rest are counted).
const RESIDENTS_NAMED: usize = 5;

/// Keeps every Namespace prune whose Namespace holds objects the plan does not delete (deleting
/// a Namespace deletes everything in it), unless the App allows it. `residents` maps each
/// Namespace of [`pruned_namespaces`] to what it holds; a Namespace missing from it could not
/// be listed and is kept too, since what it holds is unknown.
pub fn guard_namespaces(
    plan: &mut Plan,
    residents: &BTreeMap<String, Vec<Resident>>,
    policy: &Policy,
) {
    if policy.prune_non_empty_namespaces {
        return;
    }
    let pruned: BTreeSet<ObjectKey> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Prune { .. }))
        .map(|a| a.object().key())
        .collect();
    for action in &mut plan.actions {
        let Action::Prune { object } = action else {
            continue;
        };
        if !is_namespace(object) {
            continue;
        }
        let foreign: Vec<String> = match residents.get(&object.name) {
            Some(list) => ownership::foreign_residents(list, &pruned)
                .iter()
                .map(|o| o.to_string())
                .collect(),
            None => vec!["(its objects could not be listed)".to_string()],
        };
        if foreign.is_empty() {
            continue;
        }
        let more = foreign.len().saturating_sub(RESIDENTS_NAMED);
        *action = Action::PruneSkipped {
            object: object.clone(),
            reason: PruneSkipReason::NamespaceNotEmpty {
                residents: foreign.into_iter().take(RESIDENTS_NAMED).collect(),
                more,
            },
        };
    }
}

/// The actions to record when rendering failed: every inventory object is kept, with the
/// reason, because an unknown desired set must never be read as an empty one.
pub fn render_failed(inventory: &[InventoryEntry]) -> Vec<Action> {
    let mut entries: Vec<&InventoryEntry> = inventory.iter().collect();
    entries.sort_by_key(|e| e.object.key());
    entries.dedup_by_key(|e| e.object.key());
    entries
        .into_iter()
        .map(|entry| Action::PruneSkipped {
            object: entry.object.clone(),
            reason: PruneSkipReason::RenderFailed,
        })
        .collect()
}

#[cfg(test)]
mod tests;
