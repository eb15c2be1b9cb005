//! The agent behind the HTTP API tests (`process::api`): `reckon run --listen` as a process
//! against the run's control plane and a real Git repository, serving an App that has synced two
//! commits by two authors and put back a drift made with `kubectl patch` ([`Run::start`]). Each
//! test starts its own (a running agent cannot be shared between tests, which nextest runs as
//! processes of their own) and reaches the rest of its starting state itself.

use super::openapi::Spec;
use super::sync::api_for;
use reckon::api::client::Client;
use reckon::query::{AppStatus, HistoryPage};
use reckon_testenv::git::{Fixture, Person};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const READ: &str = "reader-token-abcdefghijkl";
pub const ADMIN: &str = "admin-token-abcdefghijklm";

pub fn cm(name: &str, n: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  n: \"{n}\"\n")
}

/// The reckon binary in `dir`, with no server or token leaking in from the environment.
pub fn reckon(dir: &Path) -> Command {
    let mut c = super::reckon(dir);
    c.env("RUST_LOG", "warn")
        .env_remove("RECKON_SERVER")
        .env_remove("RECKON_TOKEN");
    c
}

/// The agent process; killed if the test fails before stopping it.
pub struct Agent(pub Option<Child>);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn start_agent(dir: &Path, port: u16) -> Agent {
    Agent(Some(
        reckon(dir)
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--api-token-file", "read.tokens"])
            .args(["--admin-token-file", "admin.tokens"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ))
}

pub fn stop_agent(mut agent: Agent) {
    let mut child = agent.0.take().expect("running");
    super::signal(&child, "-TERM");
    let status = super::wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn status(c: &Client) -> AppStatus {
    c.get("/api/v1/apps/web", &[]).unwrap()
}

/// The agent serving an App that has synced two commits by two authors (a ConfigMap removed, one
/// added, one changed) and put back a drift made with `kubectl patch`. Fields drop in order: the
/// agent first, the namespace and the runtime last.
pub struct Run {
    pub agent: Agent,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub base: String,
    /// A client with the read token.
    pub reader: Client,
    pub http: reqwest::blocking::Client,
    pub spec: Spec,
    pub long: Duration,
    pub f: Fixture,
    pub ann: Person,
    pub rev_a: String,
    pub rev_b: String,
    /// An instant between the first sync and the second commit.
    pub between: chrono::DateTime<chrono::Utc>,
    /// The ConfigMap both commits change and the drift touched.
    pub object: String,
    pub cms: kube::Api<kube::api::DynamicObject>,
    pub ns: super::TestNamespace,
    pub rt: tokio::runtime::Runtime,
}

impl Run {
    pub fn start() -> Run {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let kube = rt.block_on(super::client());
        let ns = rt.block_on(super::TestNamespace::create(&kube, "api"));
        let cms = api_for(&kube, "v1", "ConfigMap", "configmaps", Some(&ns.name));
        let data = |name: &str| -> Option<String> {
            rt.block_on(cms.get_opt(name))
                .unwrap()
                .and_then(|o| o.data["data"]["n"].as_str().map(str::to_owned))
        };

        let f = Fixture::new().unwrap();
        let ann = Person::new("Ann", "ann@example.com");
        let bob = Person::new("Bob", "bob@example.com").at(1_700_000_100, 0);
        let rev_a = f
            .commit("Add a and keep")
            .author(ann.clone())
            .write("app/a.yaml", cm("a", "1"))
            .write("app/keep.yaml", cm("keep", "1"))
            .create()
            .unwrap();
        f.push().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("reckon.yaml"),
            super::one_app_config(
                "web",
                &f.file_url(),
                "app",
                Some("1s"),
                &super::kubeconfig(),
                &ns.name,
            ),
        )
        .unwrap();
        std::fs::write(d.join("read.tokens"), format!("{READ}\n")).unwrap();
        std::fs::write(d.join("admin.tokens"), format!("ops {ADMIN}\n")).unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let agent = start_agent(d, port);
        let reader = Client::new(&base, Some(READ.into())).unwrap();
        let spec = Spec::load();
        let long = Duration::from_secs(90);

        eventually("the first sync", long, || {
            reader
                .get::<AppStatus>("/api/v1/apps/web", &[])
                .is_ok_and(|s| s.applied_revision.as_deref() == Some(rev_a.as_str()))
        });
        assert_eq!(data("a").as_deref(), Some("1"));
        let between = chrono::Utc::now();
        std::thread::sleep(Duration::from_millis(50));

        // B: a goes, b comes, keep changes.
        let rev_b = f
            .commit("Replace a by b\n\nlonger body")
            .author(bob.clone())
            .remove("app/a.yaml")
            .write("app/b.yaml", cm("b", "1"))
            .write("app/keep.yaml", cm("keep", "2"))
            .create()
            .unwrap();
        f.push().unwrap();
        eventually("B applied", long, || {
            status(&reader).applied_revision.as_deref() == Some(rev_b.as_str())
                && data("a").is_none()
        });
        assert_eq!(data("keep").as_deref(), Some("2"));

        // Drift by hand; the agent's watch sees it and puts it back.
        let out = super::kubectl()
            .args([
                "-n",
                &ns.name,
                "patch",
                "configmap",
                "keep",
                "--type",
                "merge",
            ])
            .args(["-p", r#"{"data":{"n":"9"}}"#])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eventually("the drift corrected", long, || {
            let page: HistoryPage = reader
                .get("/api/v1/events", &[("kind", Some("drift".into()))])
                .unwrap();
            page.events.iter().any(|e| e.kind == "DriftCorrected")
                && data("keep").as_deref() == Some("2")
        });
        let object = format!("ConfigMap/{}/keep", ns.name);
        Run {
            agent,
            dir,
            port,
            base,
            reader,
            http: reqwest::blocking::Client::new(),
            spec,
            long,
            f,
            ann,
            rev_a,
            rev_b,
            between,
            object,
            cms,
            ns,
            rt,
        }
    }

    /// `data.n` of ConfigMap `name` in the cluster, if it exists.
    pub fn data(&self, name: &str) -> Option<String> {
        self.rt
            .block_on(self.cms.get_opt(name))
            .unwrap()
            .and_then(|o| o.data["data"]["n"].as_str().map(str::to_owned))
    }
}
