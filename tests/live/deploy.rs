//! `deploy/` against the real control plane: `kubectl kustomize` renders both modes, a
//! server-side dry run of everything succeeds, a real apply reads back as written, and the
//! RBAC lets the agent's ServiceAccount do what it needs (watch App objects, patch their
//! status, apply and prune the managed kinds) and nothing it must not (impersonate, exec into
//! pods, write RBAC or nodes; in namespaced mode, anything outside its namespace).
//!
//! The least-privilege mode's agent can read, impersonate ServiceAccounts and write App
//! objects' status and its Lease, nothing else: no rule it renders grants another write.
//!
//! Each mode is applied into a fresh namespace of the test through an overlay on a copy of
//! `deploy/` (kustomize needs relative paths), whose namespace transformer also re-points the
//! role bindings' subjects.

use crate::support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
use kube::api::Api;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::TestNamespace;

fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Whether kubectl is on PATH; without it the tests fail with how to get it, unless
/// RECKON_SKIP_KUSTOMIZE_TESTS opts out (as for the render module's kustomize tests).
fn have_kubectl() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("RECKON_SKIP_KUSTOMIZE_TESTS").is_some(),
            "the deploy tests need kubectl on PATH (v1.14+ for kustomize, e.g. \
             https://kubernetes.io/docs/tasks/tools/), or set RECKON_SKIP_KUSTOMIZE_TESTS=1"
        );
        eprintln!("skipped: no kubectl and RECKON_SKIP_KUSTOMIZE_TESTS is set");
    }
    found
}

fn kubectl(args: &[&str]) -> std::process::Output {
    support::kubectl()
        .args(args)
        .output()
        .expect("running kubectl (needed on PATH for the deploy tests)")
}

fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn render(dir: &Path) -> String {
    kubectl_ok(&["kustomize", &dir.display().to_string()])
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("kustomize output is YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Whole floats as integers, so 0.0 and 0 compare equal.
fn numbers(v: &Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && n.is_f64() => Value::from(f as i64),
            _ => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(numbers).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), numbers(v))).collect()),
        other => other.clone(),
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// A copy of deploy/ with an overlay that moves `mode` (`.`, `namespaced` or
/// `least-privilege`) into `ns` (which
/// the test created: the overlay drops deploy's own Namespace object).
fn overlay(mode: &str, ns: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(deploy_dir())
        .arg(dir.path().join("deploy"))
        .status()
        .unwrap();
    assert!(copy.success());
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - deploy/{mode}\ntransformers:\n  - namespace.yaml\n\
             patches:\n  - patch: |-\n      $patch: delete\n      apiVersion: v1\n      \
             kind: Namespace\n      metadata:\n        name: reckon-system\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("namespace.yaml"),
        format!(
            "apiVersion: builtin\nkind: NamespaceTransformer\nmetadata:\n  name: test\n  \
             namespace: {ns}\nsetRoleBindingSubjects: allServiceAccounts\nunsetOnly: false\n\
             fieldSpecs:\n  - path: metadata/namespace\n    create: true\n"
        ),
    )
    .unwrap();
    dir
}

/// Applies rendered manifests: first a server-side dry run of all of them, then for real.
fn dry_run_then_apply(rendered: &str, dir: &Path) {
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, rendered).unwrap();
    let f = file.display().to_string();
    let dry = kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=reckon-deploy-test",
        "--dry-run=server",
        "-f",
        &f,
    ]);
    assert!(
        dry.contains("statefulset.apps/reckon serverside-applied (server dry run)"),
        "{dry}"
    );
    kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=reckon-deploy-test",
        "-f",
        &f,
    ]);
}

/// `kubectl auth can-i` as the agent's ServiceAccount in `ns`.
fn can(ns: &str, args: &[&str]) -> bool {
    let who = format!("--as=system:serviceaccount:{ns}:reckon");
    let mut all = vec!["auth", "can-i", who.as_str()];
    all.extend_from_slice(args);
    let out = kubectl(&all);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl {all:?}: {other:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn deploy_renders_both_modes_with_a_hardened_statefulset() {
    if !have_kubectl() {
        return;
    }
    let docs = documents(&render(&deploy_dir()));
    let kinds: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (kind, name) in [
        ("Namespace", "reckon-system"),
        ("CustomResourceDefinition", "apps.reckon.dev"),
        ("ServiceAccount", "reckon"),
        ("Role", "reckon-lease"),
        ("RoleBinding", "reckon-lease"),
        ("ClusterRole", "reckon-apps"),
        ("ClusterRole", "reckon-manager"),
        ("ClusterRoleBinding", "reckon-apps"),
        ("ClusterRoleBinding", "reckon-manager"),
        ("ConfigMap", "reckon-config"),
        ("Service", "reckon-api"),
        ("Service", "reckon-webhooks"),
        ("Service", "reckon-metrics"),
        ("Service", "reckon-shards"),
        ("StatefulSet", "reckon"),
    ] {
        assert!(
            kinds.contains(&(kind.to_string(), name.to_string())),
            "{kind} {name} missing from {kinds:?}"
        );
    }
    // The committed CRD is the one kustomize ships (kustomize writes `minimum: 0.0` as 0).
    let crd = find(&docs, "CustomResourceDefinition", "apps.reckon.dev");
    let generated =
        serde_json::to_value(<reckon::crd::App as kube::CustomResourceExt>::crd()).unwrap();
    assert_eq!(numbers(&crd["spec"]), numbers(&generated["spec"]));

    let sts = find(&docs, "StatefulSet", "reckon");
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["requests"]["cpu"].is_string());
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--watch-apps"), "{args:?}");
    // One writer: the Lease, held as the pod's name (downward API).
    assert!(args.contains(&"--lease=reckon"), "{args:?}");
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "POD_NAME"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"),
        "{}",
        c["env"]
    );
    // Only the data volume (and /tmp) is writable; the store is on the claim.
    let mounts = c["volumeMounts"].as_array().unwrap();
    let data = mounts.iter().find(|m| m["name"] == "data").unwrap();
    assert!(args.contains(&"--store=/var/lib/reckon/store"));
    assert_eq!(data["mountPath"], "/var/lib/reckon");
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
    assert_eq!(sts["spec"]["serviceName"], "reckon-shards");
    assert_eq!(
        find(&docs, "Service", "reckon-shards")["spec"]["clusterIP"],
        "None"
    );
    // Sharding: the pod's ordinal is its shard, the shard count is the replica count, and the
    // peers are the headless Service's per-pod names.
    assert!(args.contains(&"--shard-from-hostname"), "{args:?}");
    assert!(args.contains(&"--shards=$(RECKON_SHARDS)"), "{args:?}");
    assert!(
        args.contains(&"--peers=http://reckon-{i}.reckon-shards.$(POD_NAMESPACE).svc:8080"),
        "{args:?}"
    );
    let env = c["env"].as_array().unwrap();
    let shards = env
        .iter()
        .find(|e| e["name"] == "RECKON_SHARDS")
        .expect("RECKON_SHARDS")["value"]
        .as_str()
        .unwrap();
    assert_eq!(
        shards,
        sts["spec"]["replicas"].as_u64().unwrap().to_string(),
        "RECKON_SHARDS is the replica count"
    );
    // The agent's arguments parse (the same clap definition the binary uses), with $(VAR)
    // expanded as the kubelet does from the container's env.
    let expand = |a: &str| {
        let mut a = a.to_string();
        for e in env {
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None => "reckon-system".to_string(), // fieldRef metadata.namespace
            };
            a = a.replace(&format!("$({})", e["name"].as_str().unwrap()), &value);
        }
        a
    };
    let mut argv = vec!["reckon".to_string()];
    argv.extend(args.iter().map(|a| expand(a)));
    assert!(!argv.iter().any(|a| a.contains("$(")), "{argv:?}");
    <reckon::cli::Cli as clap::Parser>::try_parse_from(argv).expect("the StatefulSet's args parse");

    // The image (Dockerfile, not buildable here) runs as the user the StatefulSet requires, and
    // its default command parses too.
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let uid = pod["securityContext"]["runAsUser"].as_i64().unwrap();
    assert!(
        dockerfile.contains(&format!("\nUSER {uid}:{uid}\n")),
        "the Dockerfile's USER is not the StatefulSet's runAsUser {uid}"
    );
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    let mut argv = vec!["reckon".to_string()];
    argv.extend(cmd);
    <reckon::cli::Cli as clap::Parser>::try_parse_from(argv).expect("the image's CMD parses");

    // Namespaced mode: Roles only, and the agent confined to its namespace.
    let ns_docs = documents(&render(&deploy_dir().join("namespaced")));
    assert!(
        !ns_docs
            .iter()
            .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
        "the namespaced mode grants nothing cluster-wide"
    );
    let env = &find(&ns_docs, "StatefulSet", "reckon")["spec"]["template"]["spec"]["containers"][0]
        ["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "RECKON_NAMESPACE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
        "{env}"
    );
}

/// One mode of `deploy/` applied into a namespace of the test's own (through [`overlay`], a
/// server-side dry run first). On drop, also when the test fails: the StatefulSet goes first so
/// the namespace empties quickly, then the mode's cluster-wide objects, then the namespace.
struct Deployed {
    client: kube::Client,
    /// The mode's ClusterRoles and ClusterRoleBindings, by name.
    cluster_scoped: &'static [&'static str],
    dir: Option<tempfile::TempDir>,
    ns: TestNamespace,
}

impl Deployed {
    async fn apply(mode: &str, prefix: &str, cluster_scoped: &'static [&'static str]) -> Deployed {
        let client = support::client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        // Made before the apply, so that a failed one is cleaned up too.
        let mut deployed = Deployed {
            client,
            cluster_scoped,
            dir: None,
            ns,
        };
        let dir = overlay(mode, &deployed.ns.name);
        dry_run_then_apply(&render(dir.path()), dir.path());
        deployed.dir = Some(dir);
        deployed
    }
}

impl Drop for Deployed {
    fn drop(&mut self) {
        let ns = self.ns.name.as_str();
        let sts = ["-n", ns, "delete", "statefulset", "reckon", "--wait=false"];
        let _ = kubectl(&[&sts[..], &["--ignore-not-found"]].concat());
        if self.cluster_scoped.is_empty() {
            return;
        }
        for kind in ["clusterrolebinding", "clusterrole"] {
            let mut a = vec!["delete", kind];
            a.extend(self.cluster_scoped);
            a.push("--ignore-not-found");
            let _ = kubectl(&a);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_mode_applies_and_its_rbac_allows_what_the_agent_needs_only() {
    if !have_kubectl() {
        return;
    }
    let deployed = Deployed::apply(".", "deploy", &["reckon-apps", "reckon-manager"]).await;
    let (client, ns) = (&deployed.client, &deployed.ns);

    // Read back.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let sts = sts.get("reckon").await.unwrap();
    let pod = sts.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("reckon"));
    let c = &pod.containers[0];
    assert_eq!(
        c.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    for name in [
        "reckon-api",
        "reckon-webhooks",
        "reckon-metrics",
        "reckon-shards",
    ] {
        svcs.get(name).await.unwrap();
    }
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    sas.get("reckon").await.unwrap();
    let binding: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding = binding.get("reckon-manager").await.unwrap();
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(subject.namespace.as_deref(), Some(ns.name.as_str()));
    let roles: Api<ClusterRole> = Api::all(client.clone());
    roles.get("reckon-apps").await.unwrap();

    let n = ns.name.as_str();
    // What the agent needs.
    assert!(can(n, &["watch", "apps.reckon.dev", "--all-namespaces"]));
    assert!(can(n, &["list", "apps.reckon.dev", "--all-namespaces"]));
    assert!(can(
        n,
        &[
            "patch",
            "apps.reckon.dev",
            "--subresource=status",
            "-n",
            "default"
        ]
    ));
    assert!(can(n, &["patch", "deployments.apps", "-n", "default"]));
    assert!(can(n, &["delete", "configmaps", "-n", "kube-public"]));
    assert!(can(n, &["watch", "services", "--all-namespaces"]));
    assert!(can(
        n,
        &["patch", "customresourcedefinitions.apiextensions.k8s.io"]
    ));
    assert!(can(n, &["patch", "namespaces"]));
    // What it must not have.
    assert!(!can(n, &["patch", "apps.reckon.dev", "-n", "default"]));
    assert!(!can(n, &["delete", "apps.reckon.dev", "-n", "default"]));
    assert!(!can(n, &["impersonate", "users"]));
    assert!(!can(
        n,
        &["create", "pods", "--subresource=exec", "-n", "default"]
    ));
    assert!(!can(
        n,
        &["create", "clusterrolebindings.rbac.authorization.k8s.io"]
    ));
    assert!(!can(
        n,
        &["escalate", "clusterroles.rbac.authorization.k8s.io"]
    ));
    assert!(!can(n, &["delete", "nodes"]));
    assert!(!can(n, &["create", "pods", "-n", "default"]));
    lease_rbac(n);
}

/// The Lease (both modes): every verb the agent uses on Leases in its own namespace, none
/// elsewhere (a Role, also in the cluster-wide mode), and no deleting.
fn lease_rbac(n: &str) {
    for verb in ["get", "list", "watch", "create", "update", "patch"] {
        assert!(
            can(n, &[verb, "leases.coordination.k8s.io", "-n", n]),
            "{verb} leases in {n}"
        );
        assert!(
            !can(
                n,
                &[verb, "leases.coordination.k8s.io", "-n", "kube-system"]
            ),
            "{verb} leases in kube-system"
        );
    }
    assert!(!can(
        n,
        &["list", "leases.coordination.k8s.io", "--all-namespaces"]
    ));
    assert!(!can(n, &["delete", "leases.coordination.k8s.io", "-n", n]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_mode_applies_and_its_rbac_ends_at_the_namespace() {
    if !have_kubectl() {
        return;
    }
    let deployed = Deployed::apply("namespaced", "deploy-ns", &[]).await;
    let (client, ns) = (&deployed.client, &deployed.ns);

    let roles: Api<Role> = Api::namespaced(client.clone(), &ns.name);
    roles.get("reckon-apps").await.unwrap();
    roles.get("reckon-manager").await.unwrap();
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    sts.get("reckon").await.unwrap();

    let n = ns.name.as_str();
    assert!(can(n, &["watch", "apps.reckon.dev", "-n", n]));
    assert!(can(
        n,
        &["patch", "apps.reckon.dev", "--subresource=status", "-n", n]
    ));
    assert!(can(n, &["patch", "deployments.apps", "-n", n]));
    assert!(can(n, &["delete", "secrets", "-n", n]));
    assert!(can(n, &["watch", "configmaps", "-n", n]));
    // Nothing beyond its namespace.
    assert!(!can(n, &["watch", "apps.reckon.dev", "--all-namespaces"]));
    assert!(!can(n, &["patch", "deployments.apps", "-n", "default"]));
    assert!(!can(
        n,
        &["patch", "customresourcedefinitions.apiextensions.k8s.io"]
    ));
    assert!(!can(n, &["patch", "namespaces"]));
    assert!(!can(
        n,
        &["create", "roles.rbac.authorization.k8s.io", "-n", n]
    ));
    assert!(!can(n, &["create", "pods", "--subresource=exec", "-n", n]));
    lease_rbac(n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_mode_reads_impersonates_and_writes_nothing_else() {
    if !have_kubectl() {
        return;
    }
    // Rendered: every rule is a read, an impersonation of ServiceAccounts, or one of the two
    // writes the agent needs of its own (App objects' status, its Lease).
    let docs = documents(&render(&deploy_dir().join("least-privilege")));
    let mut writes = Vec::new();
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in d["rules"].as_array().unwrap() {
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            for verb in rule["verbs"].as_array().unwrap() {
                let verb = verb.as_str().unwrap();
                if !["get", "list", "watch"].contains(&verb) {
                    writes.push(format!("{verb} {}", resources.join(",")));
                }
            }
        }
    }
    writes.sort();
    writes.dedup();
    assert_eq!(
        writes,
        [
            "create leases",
            "impersonate serviceaccounts",
            "patch apps/status",
            "patch leases",
            "update apps/status",
            "update leases"
        ]
    );
    let c = &find(&docs, "StatefulSet", "reckon")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--default-service-account=reckon-app"),
        "{args:?}"
    );
    let mut argv = vec!["reckon".to_string()];
    argv.extend(args.iter().map(|a| {
        a.replace("$(RECKON_SHARDS)", "1")
            .replace("$(POD_NAMESPACE)", "reckon-system")
    }));
    <reckon::cli::Cli as clap::Parser>::try_parse_from(argv).expect("the StatefulSet's args parse");
    // The tenant example is valid YAML naming the ServiceAccount the agent defaults to.
    let tenant =
        std::fs::read_to_string(deploy_dir().join("least-privilege/tenant/rbac.yaml")).unwrap();
    let tenant = documents(&tenant);
    find(&tenant, "ServiceAccount", "reckon-app");
    find(&tenant, "RoleBinding", "reckon-app");

    // Applied: what the agent's ServiceAccount may do, asked of the API server.
    let deployed = Deployed::apply(
        "least-privilege",
        "deploy-lp",
        &["reckon-lp-apps", "reckon-lp-impersonate", "reckon-lp-view"],
    )
    .await;
    let ns = &deployed.ns;
    let n = ns.name.as_str();
    assert!(can(n, &["watch", "apps.reckon.dev", "--all-namespaces"]));
    assert!(can(
        n,
        &[
            "patch",
            "apps.reckon.dev",
            "--subresource=status",
            "-n",
            "default"
        ]
    ));
    assert!(can(n, &["impersonate", "serviceaccounts", "-n", "team-a"]));
    assert!(can(n, &["list", "configmaps", "--all-namespaces"]));
    assert!(can(n, &["watch", "deployments.apps", "-n", "default"]));
    // No write of its own, no Secret, no other identity.
    assert!(!can(n, &["patch", "deployments.apps", "-n", "default"]));
    assert!(!can(n, &["create", "configmaps", "-n", "default"]));
    assert!(!can(n, &["delete", "configmaps", "-n", "default"]));
    assert!(!can(n, &["patch", "namespaces"]));
    assert!(!can(
        n,
        &["patch", "customresourcedefinitions.apiextensions.k8s.io"]
    ));
    assert!(!can(n, &["get", "secrets", "-n", "default"]));
    assert!(!can(n, &["patch", "apps.reckon.dev", "-n", "default"]));
    assert!(!can(n, &["impersonate", "users"]));
    assert!(!can(n, &["impersonate", "groups"]));
    assert!(!can(
        n,
        &["create", "clusterrolebindings.rbac.authorization.k8s.io"]
    ));
    lease_rbac(n);
}
