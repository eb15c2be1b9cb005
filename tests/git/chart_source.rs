//! A chart of a real chart repository as an App's source, recorded in a real store: charts
//! packaged and indexed by the real `helm`, served on loopback with validators and basic auth.
//! Every new matching version is a ChartObserved (the ones passed over too, oldest first), an
//! unchanged repository costs one conditional request and records nothing, the chart's files are
//! read back by revision (downloaded again when the cache lost them), and a tampered or hostile
//! archive, or a repository that went away, is a SourceFetchFailed that leaves the App on its
//! last good revision; over TLS only the configured CA file is trusted, and a wrong password is
//! named as such without the password.

use anyhow::Result;
use reckon::event::{Envelope, Event, EventKind};
use reckon::fetch::fetch as observe;
use reckon::source::GitSource;
use reckon::store::writer::{self, StoreHandle};
use reckon::store::{EventRead, OpenOptions, Query, Selector, SledStore};
use reckon_testenv::git::{ChartRepoServer, HttpAuth};
use sha2::{Digest, Sha256};
use std::path::Path;

fn open(path: &Path) -> StoreHandle {
    let store = SledStore::open(
        path,
        OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    writer::spawn(store).0
}

fn chart(dir: &Path, version: &str, color: &str) -> std::path::PathBuf {
    let chart = dir.join(format!("web-{version}"));
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        format!("apiVersion: v2\nname: web\nversion: {version}\nappVersion: \"{version}\"\n"),
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), format!("color: {color}\n")).unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  color: {{ .Values.color }}\n",
    )
    .unwrap();
    chart
}

/// The App `web` following chart `web` (`version`) at `url`, as `reckon.yaml` gives it, with
/// the password read from `password_file`.
fn source(url: &str, version: &str, password_file: &Path, cache: &Path) -> GitSource {
    let cfg = reckon::config::parse(
        &format!(
            "apps:\n  - name: web\n    source:\n      url: {url}\n      chart: {{name: web, version: \"{version}\"}}\n      auth: {{basic: {{username: charts, password: {{file: {}}}}}}}\n",
            password_file.display()
        ),
        Path::new("reckon.yaml"),
    )
    .unwrap();
    reckon::source::config::source_for(&cfg.apps[0], cache).unwrap()
}

fn events(store: &StoreHandle, selector: Selector) -> Vec<Envelope> {
    store
        .reader()
        .query(&Query::new(selector).oldest_first().limit(1000))
        .unwrap()
        .events
}

fn charts(envs: &[Envelope]) -> Vec<(String, String, bool)> {
    envs.iter()
        .filter_map(|e| match &e.body.event {
            Event::ChartObserved(c) => Some((c.version.clone(), c.revision.clone(), c.verified)),
            _ => None,
        })
        .collect()
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

struct Setup {
    work: tempfile::TempDir,
    root: std::path::PathBuf,
    password: std::path::PathBuf,
}

fn setup() -> Setup {
    reckon::tls::install_crypto_provider();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let password = work.path().join("password");
    std::fs::write(&password, "s3cret-password\n").unwrap();
    Setup {
        work,
        root,
        password,
    }
}

fn auth() -> HttpAuth {
    HttpAuth {
        username: "charts".into(),
        password: "s3cret-password".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_chart_version_is_observed_and_an_unchanged_repository_costs_one_request()
-> Result<()> {
    let s = setup();
    let server = ChartRepoServer::start(&s.root, false, Some(auth()))?;
    let v1 = server.publish(&chart(s.work.path(), "1.0.0", "blue"))?;
    let store = open(&s.work.path().join("store"));
    let cache = s.work.path().join("cache");
    let src = source(&server.url(), ">=1.0.0, <2", &s.password, &cache);

    // First look: the version the range picks, downloaded and checked.
    let o = observe(&store, "web", &src).await?;
    let r1 = sha256(&v1);
    assert_eq!(
        (o.appended, o.deployable_head.as_deref()),
        (1, Some(r1.as_str()))
    );
    let all = events(&store, Selector::App("web".into()));
    let Event::ChartObserved(c) = &all[0].body.event else {
        panic!("{:?}", all[0].body.event);
    };
    assert_eq!(c.name, "web");
    assert_eq!(c.version, "1.0.0");
    assert_eq!(c.app_version.as_deref(), Some("1.0.0"));
    assert_eq!(c.digest, format!("sha256:{r1}"));
    assert_eq!(c.repository, server.url());
    assert!(c.verified);
    let files = src.read_tree_async(r1.clone()).await?;
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["Chart.yaml", "templates/cm.yaml", "values.yaml"]);
    assert_eq!(files[2].1, b"color: blue\n");

    // An unchanged repository: one conditional request answered 304, nothing recorded.
    let before = server.requests().len();
    let o = observe(&store, "web", &src).await?;
    assert_eq!(o.appended, 0);
    assert_eq!(
        server.requests()[before..].to_vec(),
        vec![("/index.yaml".to_string(), 304)]
    );

    // Two new versions and one outside the range: both matching ones are observed, oldest
    // first, the one passed over taken from the index, the highest downloaded and deployed.
    let v11 = server.publish(&chart(s.work.path(), "1.1.0", "green"))?;
    let v12 = server.publish(&chart(s.work.path(), "1.2.0", "red"))?;
    server.publish(&chart(s.work.path(), "2.0.0", "black"))?;
    let before = server.requests().len();
    let o = observe(&store, "web", &src).await?;
    let (r11, r12) = (sha256(&v11), sha256(&v12));
    assert_eq!(
        (o.appended, o.deployable_head.as_deref()),
        (2, Some(r12.as_str()))
    );
    let paths: Vec<String> = server.requests()[before..]
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(
        paths,
        ["/index.yaml", "/web-1.2.0.tgz"],
        "only the deployed one is downloaded"
    );
    let observed = charts(&events(&store, Selector::Kind(EventKind::ChartObserved)));
    assert_eq!(
        observed,
        vec![
            ("1.0.0".into(), r1.clone(), true),
            ("1.1.0".into(), r11.clone(), false),
            ("1.2.0".into(), r12.clone(), true),
        ]
    );
    // The commit index finds a chart revision by its digest.
    let by_rev = events(&store, Selector::Commit(r12.clone()));
    assert_eq!(by_rev.len(), 1);

    // `revisions` shows chart and version.
    let projections = store.projections().await?;
    let rows = reckon::query::revisions(store.reader(), &projections, "web")?;
    let versions: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| (r.sha.clone(), r.chart.as_ref().map(|c| c.version.clone())))
        .collect();
    assert!(
        versions.contains(&(r12.clone(), Some("1.2.0".into()))),
        "{versions:?}"
    );
    assert!(
        versions.contains(&(r1.clone(), Some("1.0.0".into()))),
        "{versions:?}"
    );
    let row = rows.iter().find(|r| r.sha == r12).unwrap();
    assert!(
        row.summary
            .as_deref()
            .unwrap()
            .starts_with("chart web 1.2.0 (app 1.2.0) from http://"),
        "{:?}",
        row.summary
    );

    // A cache that lost the chart downloads it again by its digest.
    std::fs::remove_dir_all(src.chart_cache())?;
    let files = src.read_tree_async(r1.clone()).await?;
    assert!(files.contains(&("values.yaml".to_string(), b"color: blue\n".to_vec())));
    Ok(())
}

/// A gzip tar holding `entries` (path, content), headers written by hand so that a hostile name
/// the tar crate's builder would refuse can be made.
fn tgz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (path, content) in entries {
        let mut header = tar::Header::new_old();
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, *content).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// An index listing `versions` (version, archive file name, its bytes' digest).
fn write_index(root: &Path, versions: &[(&str, &str, String)]) {
    let mut text = String::from("apiVersion: v1\nentries:\n  web:\n");
    for (version, file, digest) in versions {
        text.push_str(&format!(
            "  - apiVersion: v2\n    name: web\n    version: {version}\n    digest: {digest}\n    urls:\n    - {file}\n"
        ));
    }
    std::fs::write(root.join("index.yaml"), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_archive_or_a_repository_gone_is_a_failure_that_keeps_the_last_good_revision()
-> Result<()> {
    let s = setup();
    let server = ChartRepoServer::start(&s.root, false, Some(auth()))?;
    let v1 = server.publish(&chart(s.work.path(), "1.0.0", "blue"))?;
    let r1 = sha256(&v1);
    let store = open(&s.work.path().join("store"));
    let src = source(
        &server.url(),
        "*",
        &s.password,
        &s.work.path().join("cache"),
    );
    let o = observe(&store, "web", &src).await?;
    assert_eq!(o.deployable_head.as_deref(), Some(r1.as_str()));

    let failure = |store: &StoreHandle| {
        let all = events(store, Selector::Kind(EventKind::SourceFetchFailed));
        match &all.last().unwrap().body.event {
            Event::SourceFetchFailed(f) => f.clone(),
            other => panic!("{other:?}"),
        }
    };

    // A new version whose archive is not what the index says.
    let good = tgz(&[
        (
            "web/Chart.yaml",
            b"apiVersion: v2\nname: web\nversion: 1.1.0\n",
        ),
        ("web/templates/cm.yaml", b"kind: ConfigMap\n"),
    ]);
    std::fs::write(s.root.join("web-1.1.0.tgz"), b"not the indexed bytes")?;
    let indexed = format!("sha256:{}", hex::encode(Sha256::digest(&good)));
    write_index(
        &s.root,
        &[
            ("1.0.0", "web-1.0.0.tgz", format!("sha256:{r1}")),
            ("1.1.0", "web-1.1.0.tgz", indexed),
        ],
    );
    let o = observe(&store, "web", &src).await?;
    assert_eq!(
        o.deployable_head.as_deref(),
        Some(r1.as_str()),
        "the last good revision stays"
    );
    let f = failure(&store);
    assert_eq!(f.reason, "ChartRefused");
    assert!(
        f.error.contains("the archive's digest is sha256:"),
        "{}",
        f.error
    );
    assert!(f.error.contains("web 1.1.0"), "{}", f.error);

    // A new version whose archive (its digest right) reaches outside its directory.
    let hostile = tgz(&[
        (
            "web/Chart.yaml",
            b"apiVersion: v2\nname: web\nversion: 1.2.0\n",
        ),
        ("web/../../escaped", b"x"),
    ]);
    std::fs::write(s.root.join("web-1.2.0.tgz"), &hostile)?;
    write_index(
        &s.root,
        &[
            ("1.0.0", "web-1.0.0.tgz", format!("sha256:{r1}")),
            (
                "1.2.0",
                "web-1.2.0.tgz",
                format!("sha256:{}", hex::encode(Sha256::digest(&hostile))),
            ),
        ],
    );
    let o = observe(&store, "web", &src).await?;
    assert_eq!(o.deployable_head.as_deref(), Some(r1.as_str()));
    let f = failure(&store);
    assert_eq!(f.reason, "ChartRefused");
    assert!(
        f.error.contains("leaves the chart's directory"),
        "{}",
        f.error
    );
    assert!(!s.work.path().join("escaped").exists());
    let leftovers: Vec<_> = std::fs::read_dir(src.chart_cache())?
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from(&r1)],
        "nothing of the refused archive is kept"
    );

    // The repository goes away.
    drop(server);
    let o = observe(&store, "web", &src).await?;
    assert_eq!(o.deployable_head.as_deref(), Some(r1.as_str()));
    let f = failure(&store);
    assert_eq!(f.reason, "Unreachable");
    assert!(charts(&events(&store, Selector::App("web".into()))).len() == 1);
    // Its files are still read from the cache.
    assert!(
        src.read_tree_async(r1.clone())
            .await?
            .iter()
            .any(|(p, _)| p == "Chart.yaml")
    );
    Ok(())
}

/// The App as `reckon.yaml` gives it, with `extra` source keys (indented under `source`).
fn source_with(url: &str, extra: &str, cache: &Path) -> GitSource {
    let cfg = reckon::config::parse(
        &format!(
            "apps:\n  - name: web\n    source:\n      url: {url}\n      chart: {{name: web}}\n{extra}"
        ),
        Path::new("reckon.yaml"),
    )
    .unwrap();
    reckon::source::config::source_for(&cfg.apps[0], cache).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_ca_file_is_trusted_and_nothing_else_and_a_wrong_password_is_named()
-> Result<()> {
    let s = setup();
    let server = ChartRepoServer::start(&s.root, true, Some(auth()))?;
    let v1 = server.publish(&chart(s.work.path(), "1.0.0", "blue"))?;
    let store = open(&s.work.path().join("store"));
    let ca = server.ca().unwrap().bundle_path();
    let pw = s.password.display();

    // With the repository's CA and the password: observed.
    let trusted = source_with(
        &server.url(),
        &format!(
            "      ca_file: {}\n      auth: {{basic: {{username: charts, password: {{file: {pw}}}}}}}\n",
            ca.display()
        ),
        &s.work.path().join("cache"),
    );
    let o = observe(&store, "web", &trusted).await?;
    assert_eq!(o.deployable_head.as_deref(), Some(sha256(&v1).as_str()));

    // Without it, the system roots do not trust the test CA.
    let untrusted = source_with(
        &server.url(),
        &format!("      auth: {{basic: {{username: charts, password: {{file: {pw}}}}}}}\n"),
        &s.work.path().join("cache2"),
    );
    let o = observe(&store, "other", &untrusted).await?;
    assert!(o.deployable_head.is_none());
    let failures = events(&store, Selector::Kind(EventKind::SourceFetchFailed));
    let Event::SourceFetchFailed(f) = &failures.last().unwrap().body.event else {
        unreachable!()
    };
    assert_eq!(f.reason, "TlsUntrusted", "{}", f.error);

    // A wrong password is refused by the repository and said so.
    let wrong = s.work.path().join("wrong");
    std::fs::write(&wrong, "nope\n")?;
    let refused = source_with(
        &server.url(),
        &format!(
            "      ca_file: {}\n      auth: {{basic: {{username: charts, password: {{file: {}}}}}}}\n",
            ca.display(),
            wrong.display()
        ),
        &s.work.path().join("cache3"),
    );
    let o = observe(&store, "third", &refused).await?;
    assert!(o.deployable_head.is_none());
    let failures = events(&store, Selector::Kind(EventKind::SourceFetchFailed));
    let Event::SourceFetchFailed(f) = &failures.last().unwrap().body.event else {
        unreachable!()
    };
    assert_eq!(f.reason, "AuthFailed", "{}", f.error);
    assert!(f.error.contains("HTTP 401"), "{}", f.error);
    assert!(
        !f.error.contains("nope"),
        "the secret is never in the record: {}",
        f.error
    );
    Ok(())
}
