//! Two shards as processes (`reckon run --shards 2 --shard I --peers ...`) against the run's
//! control plane, each with its own store, watching the same App objects: the fleet the shard
//! tests (`process::shard`) each start for themselves — a running fleet cannot be shared between
//! tests, which nextest runs as processes of their own — and what they read it with (the API as
//! a reader, live event streams), and the states a test starts from: every owned App Ready
//! ([`Fleet::ready`]), an App moved to the other shard with a new commit ([`Fleet::move_app`]),
//! the history window both shards had recorded ([`Window::take`]).

use super::TestNamespace;
use super::crd::{install_app_crd, until};

use kube::api::{Api, Patch, PatchParams, PostParams};
use reckon::crd::App;
use reckon::event::Envelope;
use reckon_testenv::git::{Fixture, TestCa};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const READER: &str = "reader-token-7f3a";
pub const ADMIN: &str = "admin-token-91c2";

pub fn app_object(name: &str, url: &str, shard_label: Option<&str>) -> App {
    let mut app = super::crd::app_object(name, url, name);
    if let Some(v) = shard_label {
        app.metadata.labels = Some([(reckon::shard::LABEL.to_string(), v.to_string())].into());
    }
    app
}

pub fn config_map(app: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{app}\ndata:\n  app: {app}\n")
}

/// One shard: the `reckon run` process, its directory (store) and API URL.
pub struct Shard {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub url: String,
}

impl Shard {
    pub fn start(index: u32, ports: &[u16], ns: &str, root: &Path) -> Shard {
        Shard::start_with(index, ports, ns, root, None)
    }

    /// With `tls`, the shard serves HTTPS with the CA's server certificate and trusts it for
    /// its https:// peers.
    pub fn start_with(
        index: u32,
        ports: &[u16],
        ns: &str,
        root: &Path,
        tls: Option<&TestCa>,
    ) -> Shard {
        let dir = root.join(format!("shard-{index}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("read.tokens"), format!("fleet {READER}\n")).unwrap();
        std::fs::write(dir.join("admin.tokens"), format!("ops {ADMIN}\n")).unwrap();
        std::fs::write(dir.join("peer.token"), format!("{READER}\n")).unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let peers: Vec<String> = ports
            .iter()
            .map(|p| format!("{scheme}://127.0.0.1:{p}"))
            .collect();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let mut command = super::reckon(&dir);
        command
            .env("RUST_LOG", "info")
            .env_remove("HOSTNAME")
            .args([
                "run",
                "--watch-apps",
                // The test's repositories are local (file://): allowed by the operator.
                "--app-source-schemes",
                "https,ssh,file",
                "--namespace",
                ns,
                "--kubeconfig",
                super::kubeconfig().to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{}", ports[index as usize]),
                "--api-token-file",
                "read.tokens",
                "--admin-token-file",
                "admin.tokens",
                "--shards",
                "2",
                "--shard",
                &index.to_string(),
                "--peers",
                &peers.join(","),
                "--peer-token-file",
                "peer.token",
            ]);
        if let Some(ca) = tls {
            let (cert, key) = ca.server_pem_files().unwrap();
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key)
                .arg("--peer-ca-file")
                .arg(ca.bundle_path());
        }
        let child = command.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        Shard {
            child: Some(child),
            dir,
            url: peers[index as usize].clone(),
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        super::signal(&child, "-TERM");
        let status = super::wait_exit(&mut child, Duration::from_secs(60));
        assert!(
            status.success(),
            "shard exits 0 on SIGTERM: {status:?}\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    pub fn events(&self) -> Vec<Envelope> {
        super::events(&self.dir)
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Http {
    pub client: reqwest::Client,
}

impl Http {
    /// GET `url` with the read token; `own` asks that shard alone (as a peer would).
    pub async fn get(&self, url: &str, own: bool) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.get(url).bearer_auth(READER);
        if own {
            req = req.header(reckon::api::fanout::FANOUT_HEADER, "1");
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, body)
    }

    pub async fn ok(&self, url: &str, own: bool) -> (reqwest::header::HeaderMap, Value) {
        let (status, headers, body) = self.get(url, own).await;
        assert_eq!(status, 200, "GET {url}: {body}");
        (headers, body)
    }
}

/// (shard, seq) of every event of a history answer.
pub fn keys(page: &Value, shard: Option<u64>) -> Vec<(u64, u64)> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["shard"]
                    .as_u64()
                    .or(shard)
                    .expect("a fleet event names its shard"),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// App → the shard that reconciles it, from an App list answer (`GET /api/v1/apps`).
pub fn owners(list: &Value) -> BTreeMap<String, u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["app"].as_str().unwrap().to_string(),
                a["shard"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Two shards serving App objects in one namespace: four Apps the hash splits two and two, one
/// labelled to shard 1 against its hash, and an orphan labelled to a shard that does not exist,
/// all pointing at one commit. Fields drop in order: the shards stop before the namespace goes.
pub struct Fleet {
    pub shards: Vec<Shard>,
    pub http: Http,
    pub apps: Api<App>,
    pub cms: Api<k8s_openapi::api::core::v1::ConfigMap>,
    /// The Apps the hash gives to each shard.
    pub hashed: BTreeMap<u32, Vec<String>>,
    /// Every App that has an owner, with it.
    pub owner_of: BTreeMap<String, u64>,
    pub orphan: String,
    pub fixture: Fixture,
    /// The commit every App starts at.
    pub sha: String,
    pub root: tempfile::TempDir,
    pub ns: TestNamespace,
}

impl Fleet {
    /// An App object's identity (`NAMESPACE.NAME`): how the API, the CLI and the stores name
    /// it.
    pub fn id(&self, name: &str) -> String {
        reckon::model::identity::of_object(&self.ns.name, name)
    }

    /// The fleet started and every owned App Ready, its status written by its owner: where
    /// every shard test starts.
    pub async fn ready() -> Fleet {
        let fleet = Fleet::start().await;
        for name in fleet.owner_of.keys() {
            until(
                &format!("{name} Ready"),
                Duration::from_secs(90),
                || async {
                    let app = fleet.apps.get(name).await.unwrap();
                    let ready = app
                        .status
                        .as_ref()?
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    ready.then_some(())
                },
            )
            .await;
        }
        fleet
    }

    /// Moves the first App the hash gives to shard 0 to shard 1 (its label) and pushes a second
    /// commit that reaches every App; returns the moved App and the new commit.
    pub async fn move_app(&self) -> (String, String) {
        let moved = self.hashed[&0][0].clone();
        self.apps
            .patch(
                &moved,
                &PatchParams::default(),
                &Patch::Merge(
                    serde_json::json!({"metadata": {"labels": {reckon::shard::LABEL: "1"}}}),
                ),
            )
            .await
            .unwrap();
        let sha2 = self
            .fixture
            .commit("Second commit")
            .write("README", "two\n")
            .create()
            .unwrap();
        self.fixture.push().unwrap();
        (moved, sha2)
    }

    /// The moved App's status once its new owner (shard 1) has applied `sha2` and found it Ready.
    pub async fn moved_app_applied(&self, moved: &str, sha2: &str) -> reckon::crd::AppStatus {
        until(
            "the moved App's status from shard 1",
            Duration::from_secs(60),
            || async {
                let app = self.apps.get(moved).await.unwrap();
                let st = app.status?;
                let ready = st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let at2 = st.applied_revision.as_deref() == Some(sha2);
                (st.shard == Some(1) && ready && at2).then_some(st)
            },
        )
        .await
    }

    /// Starts both shards and creates the Apps; nothing is applied yet.
    async fn start() -> Fleet {
        let client = super::client().await;
        install_app_crd(&client).await;
        let ns = TestNamespace::create(&client, "shard").await;

        // Names that the hash gives to both shards (two each), one pinned against its hash to
        // shard 1, and one with a label naming no shard of two.
        let mut hashed: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for i in 0.. {
            let name = format!("app{i}");
            let owner = reckon::shard::owner(&ns.name, &name, None, 2).unwrap();
            let list = hashed.entry(owner).or_default();
            if list.len() < 2 {
                list.push(name);
            }
            if hashed.values().map(Vec::len).sum::<usize>() == 4 {
                break;
            }
        }
        let pinned = (0..)
            .map(|i| format!("pin{i}"))
            .find(|n| reckon::shard::owner(&ns.name, n, None, 2).unwrap() == 0)
            .unwrap();
        let mut owner_of: BTreeMap<String, u64> = BTreeMap::new();
        for (s, names) in &hashed {
            for n in names {
                owner_of.insert(n.clone(), u64::from(*s));
            }
        }
        owner_of.insert(pinned.clone(), 1);
        let orphan = "orphan".to_string();

        let fixture = Fixture::new().unwrap();
        let mut commit = fixture.commit("One directory per App");
        for name in owner_of.keys().chain([&orphan]) {
            commit = commit.write(&format!("{name}/cm.yaml"), config_map(name));
        }
        let sha = commit.create().unwrap();
        fixture.push().unwrap();

        let root = tempfile::tempdir().unwrap();
        let ports = reckon_testenv::ports::free_ports(2).unwrap();
        let shards: Vec<Shard> = (0..2)
            .map(|i| Shard::start(i, &ports, &ns.name, root.path()))
            .collect();

        let apps: Api<App> = Api::namespaced(client.clone(), &ns.name);
        for name in owner_of.keys() {
            let label = (*name == pinned).then_some("1");
            apps.create(
                &PostParams::default(),
                &app_object(name, &fixture.file_url(), label),
            )
            .await
            .unwrap();
        }
        apps.create(
            &PostParams::default(),
            &app_object(&orphan, &fixture.file_url(), Some("7")),
        )
        .await
        .unwrap();
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(client.clone(), &ns.name);

        let http = Http {
            client: reqwest::Client::new(),
        };
        Fleet {
            shards,
            http,
            apps,
            cms,
            hashed,
            owner_of,
            orphan,
            fixture,
            sha,
            root,
            ns,
        }
    }
}

/// `/`-free query values: a time's `+` and `:` percent-encoded.
pub fn enc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// The window of history both shards had recorded before the steps that change it.
pub struct Window {
    /// Its end (the `until` of every query).
    pub until_t: String,
    /// (shard, seq) of every event in it, newest first: the union of both stores.
    pub want: Vec<(u64, u64)>,
}

impl Window {
    /// A fixed window (shards keep polling), each shard's own events as the oracle: asked of
    /// each shard alone (as a peer would), its events carry no shard and its App events are only
    /// its own Apps'.
    pub async fn take(fleet: &Fleet) -> Window {
        let (shards, http) = (&fleet.shards, &fleet.http);
        let owner_of = fleet.owner_of.clone();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let until_t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut union: Vec<(chrono::DateTime<chrono::Utc>, u64, u64)> = Vec::new();
        for (i, s) in shards.iter().enumerate() {
            let (_, page) = http
                .ok(
                    &format!("{}/api/v1/events?limit=1000&until={}", s.url, enc(&until_t)),
                    true,
                )
                .await;
            assert!(page["next"].is_null(), "one page holds a shard's events");
            for e in page["events"].as_array().unwrap() {
                assert!(
                    e.get("shard").is_none(),
                    "a shard's own answer is not a fleet's"
                );
                let t: chrono::DateTime<chrono::Utc> = e["time"].as_str().unwrap().parse().unwrap();
                union.push((t, i as u64, e["seq"].as_u64().unwrap()));
                // Its App events are only its own Apps'.
                if let Some(app) = e["app"].as_str() {
                    let owner = owner_of.iter().find(|(n, _)| fleet.id(n) == app);
                    assert_eq!(
                        owner.map(|(_, o)| o),
                        Some(&(i as u64)),
                        "{app} on shard {i}"
                    );
                }
            }
        }
        union.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
        let want: Vec<(u64, u64)> = union.iter().map(|(_, s, q)| (*s, *q)).collect();
        assert!(
            want.len() > 20,
            "both shards recorded history: {}",
            want.len()
        );
        Window { until_t, want }
    }
}

/// An open live event stream (server-sent events) and what it has sent so far.
pub struct Live {
    pub resp: reqwest::Response,
    pub buf: String,
    pub rows: Vec<Value>,
    pub ended: bool,
}

impl Live {
    /// Opens `GET url` with the read token; its status and the shard that streams it.
    pub async fn open(http: &Http, url: &str) -> (u16, Option<String>, Live) {
        let resp = http
            .client
            .get(url)
            .bearer_auth(READER)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let shard = resp
            .headers()
            .get(reckon::api::fanout::SHARD_HEADER)
            .map(|v| v.to_str().unwrap().to_string());
        let live = Live {
            resp,
            buf: String::new(),
            rows: Vec::new(),
            ended: false,
        };
        (live.resp.status().as_u16(), shard, live)
    }

    /// Reads until `done(rows so far)`, the stream's end, or `limit`; whether `done` held.
    pub async fn read_until(&mut self, limit: Duration, done: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !done(&self.rows) && !self.ended {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Err(_) => return false,
                Ok(Ok(Some(bytes))) => {
                    self.buf.push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(i) = self.buf.find("\n\n") {
                        let block: String = self.buf.drain(..i + 2).collect();
                        let data: String = block
                            .lines()
                            .filter_map(|l| l.strip_prefix("data:"))
                            .map(str::trim_start)
                            .collect();
                        if !data.is_empty() {
                            self.rows.push(serde_json::from_str(&data).unwrap());
                        }
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
        done(&self.rows)
    }
}
