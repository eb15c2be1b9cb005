//! The App CRD in the test cluster, polling until the cluster (or an agent) gets there, and an
//! agent in the test process that reconciles App objects.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams};
use reckon::crd::{App, AppSpec, Condition, SourceSpec};
use std::time::{Duration, Instant};

/// Installs the App and Policy CRDs (server-side apply: idempotent, tests may run at once) and
/// waits until they are served.
pub async fn install_app_crd(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (name, crd) in [
        ("apps.reckon.dev", App::crd()),
        ("policies.reckon.dev", reckon::crd::policy::Policy::crd()),
    ] {
        api.patch(
            name,
            &PatchParams::apply("reckon-test").force(),
            &Patch::Apply(crd),
        )
        .await
        .expect("applying a reckon CRD");
        until(
            &format!("the CRD {name} to be established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                async move {
                    let crd = api.get(name).await.unwrap();
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
}

/// A namespace for App objects (the CRDs installed) and a repository whose one commit holds
/// `files`: where the App-object tests start.
pub struct AppObjects {
    pub client: kube::Client,
    pub ns: super::TestNamespace,
    pub fixture: reckon_testenv::git::Fixture,
    /// The commit of `files`.
    pub sha: String,
    /// The App objects and the ConfigMaps of the namespace.
    pub apps: Api<App>,
    pub cms: Api<k8s_openapi::api::core::v1::ConfigMap>,
}

impl AppObjects {
    /// `files` are (path, contents), committed with `message` and pushed.
    pub async fn new(prefix: &str, message: &str, files: &[(&str, &str)]) -> AppObjects {
        let client = super::client().await;
        install_app_crd(&client).await;
        let ns = super::TestNamespace::create(&client, prefix).await;
        let fixture = reckon_testenv::git::Fixture::new().unwrap();
        let mut commit = fixture.commit(message);
        for (path, contents) in files {
            commit = commit.write(path, *contents);
        }
        let sha = commit.create().unwrap();
        fixture.push().unwrap();
        let apps = Api::namespaced(client.clone(), &ns.name);
        let cms = Api::namespaced(client.clone(), &ns.name);
        AppObjects {
            client,
            ns,
            fixture,
            sha,
            apps,
            cms,
        }
    }
}

/// App object `name` once its Ready condition is True (within a minute); it may not exist yet.
pub async fn until_ready(apps: &Api<App>, name: &str) -> App {
    until(
        &format!("{name} Ready"),
        Duration::from_secs(60),
        || async {
            let app = apps.get_opt(name).await.unwrap()?;
            (condition(&app, "Ready")?.status == "True").then_some(app)
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

/// The agent (`reckon run --watch-apps`) in the test process, with no configuration file,
/// watching App objects in one namespace only.
pub struct ObjectAgent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), reckon::agent::AgentError>>,
    store: std::path::PathBuf,
}

impl ObjectAgent {
    /// Starts it in `dir` (store, cache) for the App objects of `ns`, under `rules`.
    pub fn start(
        dir: &std::path::Path,
        ns: &str,
        rules: reckon::config::policy::ObjectRules,
    ) -> ObjectAgent {
        Self::start_with(dir, ns, rules, |_| {})
    }

    /// [`Self::start`], with `adjust` changing the options last.
    pub fn start_with(
        dir: &std::path::Path,
        ns: &str,
        rules: reckon::config::policy::ObjectRules,
        adjust: impl FnOnce(&mut reckon::agent::AgentOptions),
    ) -> ObjectAgent {
        use reckon::agent::{AgentOptions, AppObjects};
        let mut options = AgentOptions::new(
            dir.join("reckon.yaml"),
            dir.join("store"),
            dir.join("cache"),
        );
        options.watch.debounce = Duration::from_millis(100);
        options.watch.namespace = Some(ns.to_string());
        options.app_objects = Some(AppObjects {
            namespace: Some(ns.to_string()),
            kubeconfig: Some(super::kubeconfig()),
            // The test process may read cluster-scoped Policy objects.
            policies: true,
        });
        // The tests' repositories are local (file://): the operator allows it, as with
        // `--app-source-schemes https,ssh,file`.
        options.sources.schemes = vec!["https".into(), "ssh".into(), "file".into()];
        options.tenancy = rules;
        adjust(&mut options);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reckon::agent::run(options, async move {
            let _ = rx.await;
        }));
        ObjectAgent {
            stop: Some(tx),
            task,
            store: dir.join("store"),
        }
    }

    /// Stops the agent and returns every event in its store.
    pub async fn stop(mut self) -> Vec<reckon::event::Envelope> {
        use reckon::store::{OpenOptions, SledStore};
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("the agent stops within a minute")
            .unwrap()
            .expect("the agent exits cleanly");
        let store = SledStore::open(&self.store, OpenOptions::default()).unwrap();
        let events = store.reader().iter_from(1).map(|e| e.unwrap()).collect();
        store.close().unwrap();
        events
    }
}

/// An App object named `name` following `url` at `path`, polled every second; tests set the
/// rest of the spec (target, health timeout, labels) on what this returns.
pub fn app_object(name: &str, url: &str, path: &str) -> App {
    App::new(
        name,
        AppSpec {
            source: SourceSpec {
                url: url.to_string(),
                path: Some(path.to_string()),
                interval: Some("1s".to_string()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
}

/// The App object's condition of `type_`, once its status has one.
pub fn condition<'a>(app: &'a App, type_: &str) -> Option<&'a Condition> {
    app.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}
