//! Sync scaffolding for executor and watch tests: a request-counting client, a catalog that
//! waits for built-in kinds, and a test App (manifests in a directory, an inventory folded
//! from change sets the way the event store's projection will fold events).

use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use reckon::apply::{self, ApplyOptions, Catalog, ChangeSet, Outcome};
use reckon::config::DriftMode;
use reckon::plan::{Action, DesiredObject, GroupKind, InventoryEntry, Observed, Plan, Policy};
use reckon::render::{RenderOptions, SecretKey, digest::storable_object};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every request the client sent: method and URI (path and query).
#[derive(Default)]
pub struct Requests(Mutex<Vec<(http::Method, String)>>);

impl Requests {
    pub fn take(&self) -> Vec<(http::Method, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

pub fn writes(requests: &[(http::Method, String)]) -> Vec<&(http::Method, String)> {
    requests
        .iter()
        .filter(|(m, _)| *m != http::Method::GET)
        .collect()
}

/// A client for the test cluster whose every request is recorded.
pub async fn counting_client() -> (kube::Client, Arc<Requests>) {
    reckon::tls::install_crypto_provider();
    let path = super::kubeconfig();
    let kubeconfig = Kubeconfig::read_from(&path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    let requests = Arc::new(Requests::default());
    let log = requests.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        log.0
            .lock()
            .unwrap()
            .push((req.method().clone(), req.uri().to_string()));
        req
    });
    let client = kube::client::ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&layer)
        .build();
    (client, requests)
}

/// A catalog that serves the built-in kinds these tests use: right after the control plane
/// starts, discovery can list the core group alone (`Catalog::wait_for_kinds` covers that).
pub async fn catalog(client: kube::Client) -> Catalog {
    let catalog = Catalog::new(client).await.expect("discovery");
    let wanted = [
        GroupKind::new("apps", "Deployment"),
        GroupKind::new("", "ConfigMap"),
        GroupKind::new("networking.k8s.io", "Ingress"),
        GroupKind::new("apiextensions.k8s.io", "CustomResourceDefinition"),
    ];
    let missing = catalog
        .wait_for_kinds(&wanted, Duration::from_secs(60))
        .await;
    assert!(missing.is_empty(), "discovery still lacks {missing:?}");
    catalog
}

/// One App under test: manifests in a directory, an inventory folded from outcomes.
pub struct TestApp {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub namespace: String,
    pub key: SecretKey,
    pub inventory: Vec<InventoryEntry>,
    pub drift: DriftMode,
    /// Which existing objects the App may take over (`adopt`).
    pub adopt: reckon::config::AdoptPolicy,
}

impl TestApp {
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.to_string(),
            dir: tempfile::tempdir().unwrap(),
            namespace: namespace.to_string(),
            key: SecretKey::new([7; 32]),
            inventory: Vec::new(),
            drift: DriftMode::Correct,
            adopt: reckon::config::AdoptPolicy::default(),
        }
    }

    pub fn write(&self, file: &str, contents: &str) {
        std::fs::write(self.dir.path().join(file), contents).unwrap();
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.path().join(file)).unwrap();
    }

    pub fn desired(&self) -> Vec<DesiredObject> {
        let options = RenderOptions {
            yaml_expanded_bytes: reckon::render::DEFAULT_YAML_EXPANDED_BYTES,
            app: self.name.clone(),
            secret_key: self.key.clone(),
            kustomize_timeout: Duration::from_secs(60),
            // Filled in as for the floor (v1.20), which needs it; any later release accepts it too.
            fill_port_protocol: true,
        };
        let rendered = reckon::render::render_dir(self.dir.path(), &options).expect("render");
        // As a pass does: a Secret naming no namespace is placed in the App's before its values
        // are hashed (the hash binds the namespace).
        let rendered = reckon::reconcile::namespace::with_secret_namespaces(
            rendered,
            &self.namespace,
            &self.key,
        );
        rendered
            .objects
            .iter()
            .map(|o| DesiredObject::from_rendered(o, &self.key))
            .collect()
    }

    pub fn policy(&self) -> Policy {
        Policy {
            app: self.name.clone(),
            field_manager: reckon::plan::FIELD_MANAGER.to_string(),
            default_namespace: self.namespace.clone(),
            prune: true,
            allow_empty: false,
            drift: self.drift,
            ignore: Vec::new(),
            adopt: self.adopt,
            prune_adopted: false,
            prune_non_empty_namespaces: false,
            former_names: Vec::new(),
        }
    }

    pub async fn observed(&self, catalog: &Catalog, desired: &[DesiredObject]) -> Observed {
        apply::observe(
            catalog,
            desired,
            &self.inventory,
            &self.namespace,
            &self.key,
            8,
        )
        .await
    }

    pub async fn plan(&self, catalog: &Catalog) -> Plan {
        let desired = self.desired();
        let observed = self.observed(catalog, &desired).await;
        self.plan_with(catalog, &desired, &observed)
    }

    pub fn plan_with(
        &self,
        catalog: &Catalog,
        desired: &[DesiredObject],
        observed: &Observed,
    ) -> Plan {
        let lookup = |gk: &reckon::plan::GroupKind| catalog.scope(gk);
        let plan = reckon::plan::plan(desired, &self.inventory, observed, &self.policy(), &lookup);
        assert!(plan.rejected.is_empty(), "{:?}", plan.rejected);
        plan
    }

    /// What the store's inventory projection will do with a change set.
    pub fn fold(&mut self, plan: &Plan, changes: &ChangeSet) {
        let manifests: BTreeMap<_, _> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Create {
                    object, manifest, ..
                }
                | Action::Configure {
                    object, manifest, ..
                } => Some((object.key(), manifest.as_value().clone())),
                _ => None,
            })
            .collect();
        for outcome in &changes.outcomes {
            let key = outcome.object.key();
            match &outcome.outcome {
                Outcome::Created | Outcome::Configured { .. } | Outcome::Adopted { .. } => {
                    self.inventory.retain(|e| e.object.key() != key);
                    self.inventory.push(InventoryEntry {
                        object: outcome.object.clone(),
                        last_applied_digest: outcome.digest.unwrap(),
                        last_applied: storable_object(&manifests[&key], &self.key),
                        adopted: matches!(outcome.outcome, Outcome::Adopted { .. }),
                    });
                }
                Outcome::Pruned | Outcome::Orphaned => {
                    self.inventory.retain(|e| e.object.key() != key)
                }
                _ => {}
            }
        }
    }

    pub async fn sync(&mut self, catalog: &Catalog, options: &ApplyOptions) -> (Plan, ChangeSet) {
        let plan = self.plan(catalog).await;
        let changes = apply::execute(catalog, &plan, options).await;
        self.fold(&plan, &changes);
        (plan, changes)
    }
}

pub fn outcomes_by_name(changes: &ChangeSet) -> BTreeMap<String, &Outcome> {
    changes
        .outcomes
        .iter()
        .map(|o| (format!("{}/{}", o.object.kind, o.object.name), &o.outcome))
        .collect()
}

pub fn api_for(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}
