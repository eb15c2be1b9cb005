//! The App CRD in the test cluster, and polling until the cluster (or an agent) gets there.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams};
use reckon::crd::App;
use std::time::{Duration, Instant};

/// Installs the App CRD (server-side apply: idempotent, tests may run at once) and waits until
/// it is served.
pub async fn install_app_crd(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        "apps.reckon.dev",
        &PatchParams::apply("reckon-test").force(),
        &Patch::Apply(App::crd()),
    )
    .await
    .expect("applying the App CRD");
    until(
        "the App CRD to be established",
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move {
                let crd = api.get("apps.reckon.dev").await.unwrap();
                crd.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        },
    )
    .await
}

/// Polls `check` every 200 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
