//! The chart repository client against a real chart repository on loopback: charts packaged and
//! indexed by the real `helm`, served with validators, basic auth and TLS. What it proves: the
//! index is read and a version chosen, the archive is checked against the index's digest and
//! unpacked, an unchanged index costs one conditional request and no body, and a wrong password,
//! an unknown CA, a tampered archive or an unreachable repository are clear errors.

use reckon::source::chart_index::{self, Wanted};
use reckon::source::chart_repo::{ChartLimits, ChartRepo, ChartRepoError, IndexFetch, RepoAuth};
use reckon_testenv::git::{ChartRepoServer, HttpAuth};
use std::path::Path;
use std::time::Duration;

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

fn auth() -> HttpAuth {
    HttpAuth {
        username: "charts".into(),
        password: "s3cret-password".into(),
    }
}

fn repo(server: &ChartRepoServer, auth: RepoAuth) -> ChartRepo {
    let ca = server.ca().map(|c| c.bundle_path());
    client(&server.url(), auth, ca.as_deref(), ChartLimits::default())
}

fn client(url: &str, auth: RepoAuth, ca: Option<&Path>, limits: ChartLimits) -> ChartRepo {
    ChartRepo::new(url, auth, ca, limits, Duration::from_secs(10)).unwrap()
}

fn basic() -> RepoAuth {
    RepoAuth::Basic {
        username: "charts".into(),
        password: "s3cret-password".into(),
    }
}

fn choose(repo: &ChartRepo, body: &[u8], wanted: &Wanted) -> chart_index::ChartVersion {
    let versions = chart_index::parse(repo.base(), body, "web").unwrap();
    chart_index::select(repo.base(), "web", &versions, wanted).unwrap()
}

#[test]
fn a_chart_is_chosen_downloaded_checked_and_unpacked_and_an_unchanged_index_costs_one_request() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let server = ChartRepoServer::start(&root, false, Some(auth())).unwrap();
    server
        .publish(&chart(work.path(), "1.0.0", "blue"))
        .unwrap();
    let repo = repo(&server, basic());

    let IndexFetch::Fetched { body, validators } = repo.index(None).unwrap() else {
        panic!("a first fetch gets the index");
    };
    assert!(validators.etag.is_some(), "{validators:?}");
    let range = Wanted::Range(">=1.0.0, <2".parse().unwrap());
    let v1 = choose(&repo, &body, &range);
    assert_eq!(
        (v1.version.as_str(), v1.app_version.as_deref()),
        ("1.0.0", Some("1.0.0"))
    );
    let archive = repo.archive(&v1).unwrap();
    let dir = reckon::source::chart_repo::unpack(
        "web",
        &archive,
        &work.path().join("u1"),
        &ChartLimits::default(),
    )
    .unwrap();
    let values = std::fs::read_to_string(dir.join("values.yaml")).unwrap();
    assert_eq!(values, "color: blue\n");
    assert!(dir.join("templates/cm.yaml").is_file());

    // Polling an unchanged repository: one conditional request, answered 304, no body.
    let before = server.requests().len();
    assert_eq!(
        repo.index(Some(&validators)).unwrap(),
        IndexFetch::NotModified
    );
    let polled = server.requests()[before..].to_vec();
    assert_eq!(polled, vec![("/index.yaml".to_string(), 304)]);

    // A new version: the same validators now get the new index, and the range picks it.
    server
        .publish(&chart(work.path(), "1.1.0", "green"))
        .unwrap();
    let IndexFetch::Fetched { body, .. } = repo.index(Some(&validators)).unwrap() else {
        panic!("a changed index is sent again");
    };
    assert_eq!(choose(&repo, &body, &range).version, "1.1.0");
    let exact = choose(&repo, &body, &Wanted::Exact("1.0.0".into()));
    assert_eq!(exact.digest, v1.digest, "the old version keeps its digest");
}

#[test]
fn wrong_credentials_unknown_ca_tampering_and_an_unreachable_repository_are_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let server = ChartRepoServer::start(&root, true, Some(auth())).unwrap();
    let archive_path = server
        .publish(&chart(work.path(), "1.0.0", "blue"))
        .unwrap();

    // Over TLS with the repository's CA and the right password: fine.
    let good = repo(&server, basic());
    let IndexFetch::Fetched { body, .. } = good.index(None).unwrap() else {
        panic!("index");
    };
    let v1 = choose(&good, &body, &Wanted::Exact("1.0.0".into()));
    good.archive(&v1).unwrap();

    let wrong = repo(
        &server,
        RepoAuth::Basic {
            username: "charts".into(),
            password: "wrong".into(),
        },
    );
    let err = wrong.index(None).unwrap_err();
    assert!(
        matches!(err, ChartRepoError::Status { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("credentials"), "{err}");

    // Without the CA the certificate is not trusted.
    let untrusted = client(&server.url(), basic(), None, ChartLimits::default());
    let err = untrusted.index(None).unwrap_err();
    assert!(matches!(err, ChartRepoError::Request { .. }), "{err}");

    // An archive changed after it was indexed: refused by its digest.
    let mut bytes = std::fs::read(&archive_path).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&archive_path, bytes).unwrap();
    let err = good.archive(&v1).unwrap_err();
    assert!(matches!(err, ChartRepoError::Digest { .. }), "{err}");
    assert!(err.to_string().contains("the index says sha256:"), "{err}");

    // An archive over the download limit: refused while reading.
    let small = client(
        &server.url(),
        basic(),
        server.ca().map(|c| c.bundle_path()).as_deref(),
        ChartLimits {
            archive_bytes: 100,
            ..ChartLimits::default()
        },
    );
    let err = small.archive(&v1).unwrap_err();
    assert!(
        matches!(err, ChartRepoError::TooLarge { limit: 100, .. }),
        "{err}"
    );

    // Nobody listening.
    let port = reckon_testenv::ports::free_ports(1).unwrap()[0];
    let gone = client(
        &format!("http://127.0.0.1:{port}"),
        RepoAuth::None,
        None,
        ChartLimits::default(),
    );
    let err = gone.index(None).unwrap_err();
    assert!(matches!(err, ChartRepoError::Request { .. }), "{err}");
}
