//! Smoke tests through kube against the real control plane: discovery on the legacy (non
//! aggregated) path, server-side apply of DynamicObjects, read back, delete, and namespace
//! deletion (which only completes when kube-controller-manager runs).

use crate::support;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use std::time::{Duration, Instant};
use support::TestNamespace;

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn server_side_apply_of_dynamic_objects_found_by_discovery() {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "ssa").await;
    // Discovery::run (per-group requests) works on every server; the aggregated path returns
    // nothing before 1.26 and this server is 1.20.
    let discovery = Discovery::new(client.clone())
        .filter(&["", "apps"])
        .run()
        .await
        .expect("discovery");
    let (deploy_ar, deploy_caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .expect("Deployment discovered");
    assert_eq!(deploy_caps.scope, Scope::Namespaced);
    let (svc_ar, _) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Service"))
        .expect("Service discovered");

    let deploy: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}
            }
        }
    }))
    .unwrap();
    let svc: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .unwrap();

    let deploys: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &deploy_ar);
    let svcs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &svc_ar);
    let pp = PatchParams::apply("reckon").force();
    deploys
        .patch("web", &pp, &Patch::Apply(&deploy))
        .await
        .expect("apply Deployment");
    svcs.patch("web", &pp, &Patch::Apply(&svc))
        .await
        .expect("apply Service");

    // Read back: our fields are there and reckon is the field manager.
    let live = deploys.get("web").await.expect("get Deployment");
    assert_eq!(live.data["spec"]["replicas"], 0);
    assert_eq!(
        live.data["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    let managers: Vec<_> = live
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"reckon".to_string()), "{managers:?}");
    let live_svc = svcs.get("web").await.expect("get Service");
    assert_eq!(live_svc.data["spec"]["ports"][0]["port"], 80);
    assert!(
        live_svc.data["spec"]["clusterIP"].as_str().is_some(),
        "the API server allocated a cluster IP"
    );

    // The controller manager turns the Deployment into a ReplicaSet.
    let (rs_ar, _) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "ReplicaSet"))
        .expect("ReplicaSet discovered");
    let rss: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &rs_ar);
    wait_until(
        "a ReplicaSet from the Deployment",
        Duration::from_secs(60),
        || async {
            !rss.list(&Default::default())
                .await
                .unwrap()
                .items
                .is_empty()
        },
    )
    .await;

    // Delete, and see both gone.
    deploys
        .delete("web", &DeleteParams::foreground())
        .await
        .expect("delete Deployment");
    svcs.delete("web", &DeleteParams::default())
        .await
        .expect("delete Service");
    wait_until(
        "Deployment and Service gone",
        Duration::from_secs(60),
        || async {
            deploys.get_opt("web").await.unwrap().is_none()
                && svcs.get_opt("web").await.unwrap().is_none()
        },
    )
    .await;
}

#[tokio::test]
async fn a_deleted_namespace_goes_away() {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "nsdel").await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let cm = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}
    }))
    .unwrap();
    cms.create(&Default::default(), &cm)
        .await
        .expect("create ConfigMap");

    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    nss.delete(&ns.name, &DeleteParams::default())
        .await
        .expect("delete namespace");
    // Without the namespace controller (kube-controller-manager) it would stay Terminating.
    wait_until("namespace deleted", Duration::from_secs(90), || async {
        nss.get_opt(&ns.name).await.unwrap().is_none()
    })
    .await;
}
