//! Checks render and plan against a real API server: what render produces is accepted by
//! server-side apply as-is (v1.20 rejects ports without `protocol`), an object just applied
//! plans as Unchanged (server defaults are not drift), and edits by another field manager and
//! deletions are reported as drift with the right owner. The applying here is test scaffolding
//! (a plain SSA patch per action), not reckon's executor.

use crate::support;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Discovery};
use reckon::plan::{
    Action, DesiredObject, Drift, GroupKind, InventoryEntry, LiveObject, ManagedFields,
    Observation, Observed, Policy, Scope,
};
use reckon::render::{RenderOptions, SecretKey, digest::storable_object};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use support::TestNamespace;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: "0644"
  count: "3"
---
apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: hunter2
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: dns
    port: 53
    protocol: UDP
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 8080
        resources:
          limits: {cpu: 0.5, memory: 2048Mi}
          requests: {cpu: 0.25, memory: 1024Mi, ephemeral-storage: 1}
        volumeMounts:
        - name: config
          mountPath: /etc/web
      volumes:
      - name: config
        configMap:
          name: settings
          defaultMode: 0644
---
apiVersion: batch/v1beta1
kind: CronJob
metadata:
  name: report
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: report
            image: busybox:1.36
            ports:
            - containerPort: 9090
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: 0
  serviceName: db
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: postgres:16
        ports:
        - containerPort: 5432
          name: pg
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1024Mi
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port: {number: 80}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: reader
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: web-reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: reader
subjects:
- kind: ServiceAccount
  name: web
---
apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: web}
---
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata:
  name: web
spec:
  # A target that does not exist: the HPA controller must not touch the Deployment under test.
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: absent}
  minReplicas: 1
  maxReplicas: 3
  targetCPUUtilizationPercentage: 80
---
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: busybox:1.36
        command: [sh, -c, "true"]
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: busybox:1.36
        ports:
        - containerPort: 9100
          hostPort: 9100
"#;

struct Cluster {
    client: kube::Client,
    resources: BTreeMap<GroupKind, (ApiResource, Scope)>,
}

impl Cluster {
    /// Connects and waits until discovery lists every kind in `wanted`.
    async fn connect(wanted: &[GroupKind]) -> Self {
        let client = support::client().await;
        // Right after the API server starts, discovery can list the core group alone: the
        // other groups appear once its APIService registration catches up. Wait for them.
        let started = std::time::Instant::now();
        loop {
            let resources = Self::discover(&client).await;
            if wanted.iter().all(|gk| resources.contains_key(gk)) {
                return Self { client, resources };
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "discovery still lacks {wanted:?}: {:?}",
                resources
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn discover(client: &kube::Client) -> BTreeMap<GroupKind, (ApiResource, Scope)> {
        let discovery = Discovery::new(client.clone())
            .filter(&[
                "",
                "apps",
                "batch",
                "networking.k8s.io",
                "rbac.authorization.k8s.io",
                "policy",
                "autoscaling",
            ])
            .run()
            .await
            .expect("discovery");
        let mut resources = BTreeMap::new();
        for group in discovery.groups() {
            // Every kind at its most stable version (CronJob is only in batch/v1beta1 on v1.20).
            for (ar, caps) in group.resources_by_stability() {
                let scope = match caps.scope {
                    kube::discovery::Scope::Namespaced => Scope::Namespaced,
                    kube::discovery::Scope::Cluster => Scope::Cluster,
                };
                resources.insert(GroupKind::new(&ar.group, &ar.kind), (ar, scope));
            }
        }
        resources
    }

    fn api(&self, object: &reckon::plan::ObjectRef) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(&object.group, &object.version, &object.kind);
        let (known, _) = self.resources.get(&object.group_kind()).unwrap_or_else(|| {
            panic!(
                "{} not discovered; have {:?}",
                object.group_kind(),
                self.resources
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            )
        });
        let ar = ApiResource::from_gvk_with_plural(&gvk, &known.plural);
        match &object.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// What the watch cache would hold: each desired object's live state, storable form.
    async fn observe(&self, desired: &[DesiredObject], ns: &str, key: &SecretKey) -> Observed {
        let mut observed = Observed::new();
        for d in desired {
            let mut object = d.object.clone();
            object.namespace.get_or_insert_with(|| ns.to_string());
            let live = self.api(&object).get_opt(&object.name).await.expect("get");
            let observation = match live {
                None => Observation::Absent,
                Some(live) => {
                    let manifest = serde_json::to_value(&live).unwrap();
                    let managed_fields = manifest["metadata"]["managedFields"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|entry| ManagedFields {
                            manager: entry["manager"].as_str().unwrap_or_default().into(),
                            operation: entry["operation"].as_str().unwrap_or_default().into(),
                            time: entry["time"].as_str().map(str::to_string),
                            fields_v1: entry["fieldsV1"].clone(),
                        })
                        .collect();
                    Observation::Present(LiveObject {
                        object: object.clone(),
                        manifest: storable_object(&manifest, key),
                        managed_fields,
                    })
                }
            };
            observed.insert(object.key(), observation);
        }
        observed
    }
}

fn scope_lookup(cluster: &Cluster) -> impl Fn(&GroupKind) -> Option<Scope> + '_ {
    |gk| cluster.resources.get(gk).map(|(_, scope)| *scope)
}

#[tokio::test]
async fn rendered_objects_apply_and_plan_unchanged_then_drift_is_attributed() {
    let key = SecretKey::new([9; 32]);
    let options = RenderOptions {
        yaml_expanded_bytes: reckon::render::DEFAULT_YAML_EXPANDED_BYTES,
        app: "shop".into(),
        secret_key: key.clone(),
        kustomize_timeout: Duration::from_secs(60),
        // Filled in as for the floor (v1.20), which needs it; any later release accepts it too.
        fill_port_protocol: true,
    };
    // CronJob and PodDisruptionBudget are in batch/v1beta1 and policy/v1beta1 alone on v1.20;
    // v1.21 added their v1 and v1.25 removed the beta: use what this server serves.
    let version = support::client().await.apiserver_version().await.unwrap();
    let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap();
    let manifests = if minor >= 21 {
        MANIFESTS
            .replace("batch/v1beta1", "batch/v1")
            .replace("policy/v1beta1", "policy/v1")
    } else {
        MANIFESTS.to_string()
    };
    let rendered =
        reckon::render::render(&[("app.yaml".into(), manifests.into_bytes())], &options).unwrap();
    let kinds: Vec<GroupKind> = rendered
        .objects
        .iter()
        .map(|o| o.object.group_kind())
        .collect();
    let cluster = Cluster::connect(&kinds).await;
    let ns = TestNamespace::create(&cluster.client, "plan").await;
    // As a pass does: the Secret, naming no namespace, is placed in the App's before its values
    // are hashed (the hash binds the namespace).
    let rendered = reckon::reconcile::namespace::with_secret_namespaces(rendered, &ns.name, &key);
    let desired: Vec<DesiredObject> = rendered
        .objects
        .iter()
        .map(|o| DesiredObject::from_rendered(o, &key))
        .collect();
    let policy = Policy {
        default_namespace: ns.name.clone(),
        ..Policy::from_app(
            &reckon::config::parse(
                "apps:\n  - name: shop\n    source: {url: https://x/y}\n",
                std::path::Path::new("t.yaml"),
            )
            .unwrap()
            .apps[0],
        )
    };
    let lookup = scope_lookup(&cluster);

    // First sync: everything is new; apply each Create exactly as planned.
    let observed = cluster.observe(&desired, &ns.name, &key).await;
    let plan = reckon::plan::plan(&desired, &[], &observed, &policy, &lookup);
    assert!(plan.rejected.is_empty(), "{:?}", plan.rejected);
    let mut inventory = Vec::new();
    for action in &plan.actions {
        let Action::Create {
            object,
            manifest,
            digest,
            ..
        } = action
        else {
            panic!("first sync should only create: {action:?}");
        };
        cluster
            .api(object)
            .patch(
                &object.name,
                &PatchParams::apply(&policy.field_manager).force(),
                &Patch::Apply(manifest.as_value()),
            )
            .await
            .unwrap_or_else(|e| panic!("server-side apply of {object}: {e}"));
        inventory.push(InventoryEntry {
            object: object.clone(),
            last_applied_digest: *digest,
            last_applied: storable_object(manifest, &key),
            adopted: false,
        });
    }

    // Second sync, nothing changed anywhere: no writes, no drift despite server defaults
    // (clusterIP, imagePullPolicy, terminationMessagePath, quantities, defaultMode, ...).
    let observed = cluster.observe(&desired, &ns.name, &key).await;
    let plan = reckon::plan::plan(&desired, &inventory, &observed, &policy, &lookup);
    let not_unchanged: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::Unchanged { .. }))
        .collect();
    assert!(not_unchanged.is_empty(), "{not_unchanged:#?}");
    assert_eq!(plan.actions.len(), desired.len());

    // Someone scales the Deployment and edits the Secret with their own field managers.
    let deploy = desired
        .iter()
        .find(|d| d.object.kind == "Deployment")
        .unwrap();
    let mut deploy_ref = deploy.object.clone();
    deploy_ref.namespace = Some(ns.name.clone());
    let edit = |manager: &str| PatchParams {
        field_manager: Some(manager.to_string()),
        ..PatchParams::default()
    };
    cluster
        .api(&deploy_ref)
        .patch(
            "web",
            &edit("kubectl-scale"),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale");
    let secret = desired.iter().find(|d| d.object.kind == "Secret").unwrap();
    let mut secret_ref = secret.object.clone();
    secret_ref.namespace = Some(ns.name.clone());
    cluster
        .api(&secret_ref)
        .patch(
            "db",
            &edit("kubectl-edit"),
            &Patch::Merge(json!({"stringData": {"password": "changed-by-hand"}})),
        )
        .await
        .expect("edit secret");
    // And deletes the ConfigMap.
    let cm = desired
        .iter()
        .find(|d| d.object.kind == "ConfigMap")
        .unwrap();
    let mut cm_ref = cm.object.clone();
    cm_ref.namespace = Some(ns.name.clone());
    cluster
        .api(&cm_ref)
        .delete("settings", &DeleteParams::default())
        .await
        .expect("delete configmap");

    let observed = cluster.observe(&desired, &ns.name, &key).await;
    let plan = reckon::plan::plan(&desired, &inventory, &observed, &policy, &lookup);
    let drifts: BTreeMap<String, &Drift> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Drift { object, drift, .. } => Some((object.kind.clone(), drift)),
            _ => None,
        })
        .collect();
    assert_eq!(drifts.len(), 3, "{drifts:#?}");
    match drifts["Deployment"] {
        Drift::Modified(fields) => {
            assert_eq!(fields.len(), 1, "{fields:#?}");
            assert_eq!(fields[0].change.pointer, "/spec/replicas");
            assert_eq!(fields[0].change.after, Some(Value::from(2)));
            let owners: Vec<&str> = fields[0]
                .owners
                .iter()
                .map(|o| o.manager.as_str())
                .collect();
            assert_eq!(owners, ["kubectl-scale"]);
            assert!(fields[0].owners[0].time.is_some());
        }
        other => panic!("{other:?}"),
    }
    match drifts["Secret"] {
        Drift::Modified(fields) => {
            let pointers: Vec<&str> = fields.iter().map(|f| f.change.pointer.as_str()).collect();
            assert_eq!(pointers, ["/data/password"]);
            assert_eq!(fields[0].change.after, None, "no Secret values in drift");
            let owners: Vec<&str> = fields[0]
                .owners
                .iter()
                .map(|o| o.manager.as_str())
                .collect();
            assert_eq!(owners, ["kubectl-edit"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(drifts["ConfigMap"], &Drift::Deleted);
    let text = serde_json::to_string(&plan.actions).unwrap();
    assert!(!text.contains("changed-by-hand"));

    // Correcting: re-apply what the plan says, then nothing is left to do.
    for action in &plan.actions {
        if let Action::Create {
            object, manifest, ..
        }
        | Action::Configure {
            object, manifest, ..
        } = action
        {
            cluster
                .api(object)
                .patch(
                    &object.name,
                    &PatchParams::apply(&policy.field_manager).force(),
                    &Patch::Apply(manifest.as_value()),
                )
                .await
                .unwrap_or_else(|e| panic!("re-apply {object}: {e}"));
        }
    }
    let observed = cluster.observe(&desired, &ns.name, &key).await;
    let plan = reckon::plan::plan(&desired, &inventory, &observed, &policy, &lookup);
    assert!(
        plan.actions
            .iter()
            .all(|a| matches!(a, Action::Unchanged { .. })),
        "{:#?}",
        plan.actions
    );
}
