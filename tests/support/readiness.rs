//! Pod readiness the test controls, on a control plane without kubelets: the test plays the
//! kubelet for one fake Node (binds Pods to it and writes their status), so a Deployment with
//! replicas above zero really becomes Available when the test says so, and never before.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use std::time::Duration;

/// The fake Node every test binds Pods to (created once; a test never deletes it, since other
/// tests' Pods may be bound to it).
pub const NODE: &str = "reckon-test-node";

async fn ensure_node(client: &kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"reckon.dev/test": "true"}},
    }))
    .unwrap();
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating Node {NODE}: {e}"),
    }
    let now = chrono::Utc::now().to_rfc3339();
    let status = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "the test plays the kubelet",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]}});
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("Node {NODE} status: {e}"));
}

/// Makes every Pod of Deployment `name` in `ns` Running and Ready, then waits until the
/// Deployment is Available (the controller manager computes that from the Pods). On a cluster
/// with simulated nodes the scheduler places the Pods and no fake Node is registered: a Node
/// nobody runs would take other tests' Pods (a DaemonSet's, a rollout's) and never start them.
pub async fn make_deployment_ready(client: &kube::Client, ns: &str, name: &str) {
    let play_kubelet = super::simulated_nodes(client).await == 0;
    if play_kubelet {
        ensure_node(client).await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deployment = deployments.get(name).await.unwrap();
    let spec = deployment.spec.unwrap();
    let want = spec.replicas.unwrap_or(1) as usize;
    let selector = spec
        .selector
        .match_labels
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let listed = super::crd::until(
        &format!("{want} Pods of Deployment {ns}/{name}"),
        Duration::from_secs(30),
        || {
            let (pods, selector) = (pods.clone(), selector.clone());
            async move {
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?;
                (list.items.len() >= want).then_some(list.items)
            }
        },
    )
    .await;
    for pod in listed {
        let pod_name = pod.metadata.name.clone().unwrap();
        if play_kubelet
            && pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_none()
        {
            let binding = serde_json::json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": pod_name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
            });
            let _: serde_json::Value = pods
                .create_subresource("binding", &pod_name, &PostParams::default(), &binding)
                .await
                .unwrap_or_else(|e| panic!("binding Pod {pod_name}: {e}"));
        }
        let containers: Vec<serde_json::Value> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name, "image": c.image.clone().unwrap_or_default(),
                    "imageID": "", "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": chrono::Utc::now().to_rfc3339()}},
                })
            })
            .collect();
        let now = chrono::Utc::now().to_rfc3339();
        let condition =
            |t: &str| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": now});
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "startTime": now,
            "conditions": [condition("PodScheduled"), condition("Initialized"),
                           condition("ContainersReady"), condition("Ready")],
            "containerStatuses": containers,
        }});
        pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("Pod {pod_name} status: {e}"));
    }
    super::crd::until(
        &format!("Deployment {ns}/{name} to be Available"),
        Duration::from_secs(30),
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get(name).await.ok()?;
                let available = d.status?.available_replicas.unwrap_or(0) as usize;
                (available >= want).then_some(())
            }
        },
    )
    .await;
}
