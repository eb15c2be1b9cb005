//! Helm charts in a real OCI registry (the CNCF distribution registry on loopback), pushed by the
//! real `helm push`: what the OCI chart client proves is that the tags are listed and one chosen,
//! a tag resolves to the manifest digest Helm reported, the chart is pulled by that digest and
//! unpacks to the chart that was packaged, and a wrong password, an unknown CA, a blob changed in
//! the registry's storage, a manifest that is not a chart's and an unreachable registry are clear
//! errors.

use reckon::source::chart_index::Wanted;
use reckon::source::chart_oci::{ChartOciError, OciChart};
use reckon::source::chart_repo::{ChartLimits, RepoAuth};
use reckon_testenv::git::charts::package;
use reckon_testenv::git::{CosignKey, HttpAuth, OciRegistry, SignatureFormat};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn chart(dir: &Path, version: &str, color: &str) -> PathBuf {
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

/// Packages and pushes `web` `version` to `oci://REGISTRY/charts/web`; the digest Helm reports.
fn push(registry: &OciRegistry, work: &Path, version: &str, color: &str) -> String {
    let archives = work.join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    let archive = package(&chart(work, version, color), &archives).unwrap();
    registry.push(&archive, "charts").unwrap()
}

fn client(registry: &OciRegistry, auth: RepoAuth, ca: Option<&Path>) -> OciChart {
    OciChart::new(
        &registry.url("charts/web"),
        auth,
        ca,
        registry.ca().is_none(),
        ChartLimits::default(),
        Duration::from_secs(10),
    )
    .unwrap()
}

fn credentials() -> HttpAuth {
    HttpAuth {
        username: "charts".into(),
        password: "s3cret-password".into(),
    }
}

fn basic(password: &str) -> RepoAuth {
    RepoAuth::Basic {
        username: "charts".into(),
        password: password.into(),
    }
}

#[tokio::test]
async fn a_pushed_chart_is_listed_chosen_resolved_to_its_digest_and_pulled() {
    let work = tempfile::tempdir().unwrap();
    let registry = OciRegistry::start(false, None).unwrap();
    let d1 = push(&registry, work.path(), "1.0.0", "blue");
    let d2 = push(&registry, work.path(), "1.1.0", "green");
    push(&registry, work.path(), "2.0.0", "red");
    let oci = client(&registry, RepoAuth::None, None);

    let mut tags = oci.tags().await.unwrap();
    tags.sort();
    assert_eq!(tags, ["1.0.0", "1.1.0", "2.0.0"]);
    let range = Wanted::Range(">=1.0.0, <2".parse().unwrap());
    let tag = reckon::source::chart_oci::choose_tag("web", &tags, &range).unwrap();
    assert_eq!(tag, "1.1.0");
    assert_eq!(
        oci.resolve(&tag).await.unwrap(),
        d2,
        "the digest helm push reported"
    );

    let pulled = oci.pull(&d2).await.unwrap();
    assert_eq!(
        (pulled.config.name.as_str(), pulled.config.version.as_str()),
        ("web", "1.1.0")
    );
    assert_eq!(pulled.config.app_version.as_deref(), Some("1.1.0"));
    let dir = reckon::source::chart_repo::unpack(
        "web",
        &pulled.archive,
        &work.path().join("unpacked"),
        &ChartLimits::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("values.yaml")).unwrap(),
        "color: green\n"
    );

    // Pinned by digest: 1.0.0 still pulls what was pushed first, and pulling by a tag's old
    // digest after the tag moved still gets the old chart.
    assert_eq!(oci.pull(&d1).await.unwrap().config.version, "1.0.0");
    let d2_again = push(&registry, work.path(), "1.1.0", "purple");
    assert_ne!(
        d2_again, d2,
        "a re-push of 1.1.0 with other values is another manifest"
    );
    assert_eq!(oci.resolve("1.1.0").await.unwrap(), d2_again);
    let old = oci.pull(&d2).await.unwrap();
    let dir = reckon::source::chart_repo::unpack(
        "web",
        &old.archive,
        &work.path().join("old"),
        &ChartLimits::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("values.yaml")).unwrap(),
        "color: green\n"
    );
}

#[tokio::test]
async fn wrong_credentials_unknown_ca_tampering_and_an_unreachable_registry_are_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let registry = OciRegistry::start(true, Some(credentials())).unwrap();
    let digest = push(&registry, work.path(), "1.0.0", "blue");
    let ca = registry.ca().unwrap().bundle_path();

    let good = client(&registry, basic("s3cret-password"), Some(&ca));
    assert_eq!(good.tags().await.unwrap(), ["1.0.0"]);
    good.pull(&digest).await.unwrap();

    let wrong = client(&registry, basic("wrong"), Some(&ca));
    let err = wrong.tags().await.unwrap_err();
    assert!(matches!(err, ChartOciError::Registry { .. }), "{err}");
    assert!(
        err.to_string().contains("check the registry's credentials"),
        "{err}"
    );

    let untrusted = client(&registry, basic("s3cret-password"), None);
    let err = untrusted.tags().await.unwrap_err();
    assert!(matches!(err, ChartOciError::Registry { .. }), "{err}");

    // The chart layer changed in the registry's storage after the push: refused by its digest.
    let pulled = good.pull(&digest).await.unwrap();
    let layer = blob_file(&registry.storage(), &pulled.archive);
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let err = good.pull(&digest).await.unwrap_err();
    assert!(matches!(err, ChartOciError::Registry { .. }), "{err}");
    assert!(err.to_string().contains("Digest error"), "{err}");

    // Nobody listening.
    let port = reckon_testenv::ports::free_ports(1).unwrap()[0];
    let gone = OciChart::new(
        &format!("oci://127.0.0.1:{port}/charts/web"),
        RepoAuth::None,
        None,
        true,
        ChartLimits::default(),
        Duration::from_secs(5),
    )
    .unwrap();
    let err = gone.tags().await.unwrap_err();
    assert!(matches!(err, ChartOciError::Registry { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn an_image_that_is_not_a_chart_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let registry = OciRegistry::start(false, None).unwrap();
    push(&registry, work.path(), "1.0.0", "blue");
    // The same repository, a manifest whose config is a container image's, pushed with the
    // OCI client itself (helm pushes only charts).
    let pusher = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference = format!("{}/charts/web:not-a-chart", registry.host())
        .parse()
        .unwrap();
    let layer = oci_client::client::ImageLayer::oci_v1(b"layer bytes".to_vec(), None);
    let config = oci_client::client::Config::oci_v1(b"{}".to_vec(), None);
    let pushed = pusher
        .push(
            &reference,
            &[layer],
            config,
            &oci_client::secrets::RegistryAuth::Anonymous,
            None,
        )
        .await
        .unwrap();
    let digest = pusher
        .fetch_manifest_digest(&reference, &oci_client::secrets::RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert!(
        pushed.manifest_url.ends_with(&digest),
        "{}",
        pushed.manifest_url
    );
    let oci = client(&registry, RepoAuth::None, None);
    let err = oci.pull(&digest).await.unwrap_err();
    assert!(matches!(err, ChartOciError::NotAChart { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("application/vnd.oci.image.config.v1+json"),
        "{err}"
    );
}

/// The file in the registry's filesystem storage that holds the blob `bytes`.
fn blob_file(storage: &Path, bytes: &[u8]) -> PathBuf {
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data")
}

#[tokio::test]
async fn a_chart_signed_by_the_real_cosign_in_either_format_verifies_under_its_key_only() {
    use reckon::source::cosign::{CosignStatus, PublicKey, check};
    let work = tempfile::tempdir().unwrap();
    let registry = OciRegistry::start(false, None).unwrap();
    let bundled = push(&registry, work.path(), "1.0.0", "blue");
    let simple = push(&registry, work.path(), "1.1.0", "green");
    let unsigned = push(&registry, work.path(), "2.0.0", "red");
    let (signer, stranger) = (
        CosignKey::generate().unwrap(),
        CosignKey::generate().unwrap(),
    );
    registry
        .sign(&signer, "charts/web", &bundled, SignatureFormat::Bundle)
        .unwrap();
    registry
        .sign(
            &signer,
            "charts/web",
            &simple,
            SignatureFormat::SimpleSigning,
        )
        .unwrap();
    let load = |key: &CosignKey| {
        let path = key.public_key();
        PublicKey::from_pem(&path, &std::fs::read(&path).unwrap()).unwrap()
    };
    let (trusted, other) = (load(&signer), load(&stranger));
    let oci = client(&registry, RepoAuth::None, None);

    for digest in [&bundled, &simple] {
        let found = oci.signatures(digest).await.unwrap();
        assert_eq!(found.len(), 1, "one signature for {digest}: {found:?}");
        assert_eq!(
            check(digest, &found, &[other.clone(), trusted.clone()]),
            CosignStatus::Verified {
                key: trusted.fingerprint.clone()
            },
            "{digest}"
        );
        assert!(
            matches!(
                check(digest, &found, std::slice::from_ref(&other)),
                CosignStatus::Untrusted { .. }
            ),
            "{digest}"
        );
    }
    // A signature looked up for another manifest is not this one's.
    let of_bundled = oci.signatures(&bundled).await.unwrap();
    assert!(matches!(
        check(&unsigned, &of_bundled, std::slice::from_ref(&trusted)),
        CosignStatus::Invalid { .. }
    ));
    assert_eq!(oci.signatures(&unsigned).await.unwrap(), vec![]);
    assert_eq!(check(&unsigned, &[], &[trusted]), CosignStatus::Unsigned);
}

/// An App following `web` in the registry, as `reckon.yaml` gives it (the CA file and the
/// password from a file), recorded in a real store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_follows_an_oci_chart_pinned_by_digest_and_keeps_its_revision_when_the_registry_goes()
 {
    use reckon::event::{Event, EventKind};
    use sha2::Digest;
    reckon::tls::install_crypto_provider();
    let work = tempfile::tempdir().unwrap();
    let registry = OciRegistry::start(true, Some(credentials())).unwrap();
    // A copy: the registry's own goes with it, and the App's CA file must outlive it.
    let ca = work.path().join("ca.pem");
    std::fs::copy(registry.ca().unwrap().bundle_path(), &ca).unwrap();
    let password = work.path().join("password");
    std::fs::write(&password, "s3cret-password\n").unwrap();
    let archives = work.path().join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    let publish = |version: &str, color: &str| {
        let archive = package(&chart(work.path(), version, color), &archives).unwrap();
        registry.push(&archive, "charts").unwrap();
        hex::encode(sha2::Sha256::digest(std::fs::read(&archive).unwrap()))
    };
    let r1 = publish("1.0.0", "blue");
    let url = registry.url("charts/web");
    let cfg = reckon::config::parse(
        &format!(
            "apps:\n  - name: web\n    source:\n      url: {url}\n      chart: {{name: web, version: \">=1.0.0, <2\"}}\n      ca_file: {}\n      auth: {{basic: {{username: charts, password: {{file: {}}}}}}}\n",
            ca.display(),
            password.display()
        ),
        Path::new("reckon.yaml"),
    )
    .unwrap();
    let cache = work.path().join("cache");
    let src = reckon::source::config::source_for(&cfg.apps[0], &cache).unwrap();
    let store = new_store(work.path());
    let events = |kind: EventKind| of_kind(&store, kind);

    // First look: the chart the range picks, pulled by digest; its revision is the archive's.
    let o = reckon::fetch::fetch(&store, "web", &src).await.unwrap();
    assert_eq!(
        (o.appended, o.deployable_head.as_deref()),
        (1, Some(r1.as_str()))
    );
    let observed = events(EventKind::ChartObserved);
    let Event::ChartObserved(c) = &observed[0].body.event else {
        panic!("{:?}", observed[0].body.event);
    };
    assert_eq!(
        (c.name.as_str(), c.version.as_str(), c.repository.as_str()),
        ("web", "1.0.0", url.as_str())
    );
    assert_eq!(c.digest, format!("sha256:{r1}"));
    let files = src.read_tree_async(r1.clone()).await.unwrap();
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["Chart.yaml", "templates/cm.yaml", "values.yaml"]);

    // Unchanged: the tag still stands for the pinned manifest; nothing pulled or recorded.
    let o = reckon::fetch::fetch(&store, "web", &src).await.unwrap();
    assert_eq!(o.appended, 0);

    // A new version in range is followed; 2.0.0 is outside it.
    let r11 = publish("1.1.0", "green");
    publish("2.0.0", "red");
    let o = reckon::fetch::fetch(&store, "web", &src).await.unwrap();
    assert_eq!(
        (o.appended, o.deployable_head.as_deref()),
        (1, Some(r11.as_str()))
    );

    // Two versions in range between polls: the newer is followed, the one passed over is
    // recorded first, from its manifest (its archive's digest; not pulled, so unverified).
    let r111 = publish("1.1.1", "teal");
    let r12 = publish("1.2.0", "navy");
    let o = reckon::fetch::fetch(&store, "web", &src).await.unwrap();
    assert_eq!(
        (o.appended, o.deployable_head.as_deref()),
        (2, Some(r12.as_str()))
    );
    let observed = events(EventKind::ChartObserved);
    let seen: Vec<(String, String, bool)> = observed[2..]
        .iter()
        .map(|e| match &e.body.event {
            Event::ChartObserved(c) => (c.version.clone(), c.revision.clone(), c.verified),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("1.1.1".to_string(), r111.clone(), false),
            ("1.2.0".to_string(), r12.clone(), true)
        ]
    );

    // The cache lost the first chart: read again from the registry by its digest.
    std::fs::remove_dir_all(src.chart_cache().join(&r1)).unwrap();
    let again = src.read_tree_async(r1.clone()).await.unwrap();
    assert_eq!(again, files);

    // The registry goes away: one SourceFetchFailed, the App stays on 1.2.0.
    drop(registry);
    let o = reckon::fetch::fetch(&store, "web", &src).await.unwrap();
    assert_eq!(o.deployable_head.as_deref(), Some(r12.as_str()));
    let failed = events(EventKind::SourceFetchFailed);
    let Event::SourceFetchFailed(f) = &failed.last().unwrap().body.event else {
        panic!("{failed:?}");
    };
    assert_eq!(f.reason, "Unreachable", "{f:?}");
    assert_eq!(events(EventKind::ChartObserved).len(), 4);
}

/// `chart.signature: {mode: require, keys: [cosign.pub]}`: a chart signed by the real cosign
/// with that key is observed with its signature on the record; an unsigned new version is
/// refused (a SourceFetchFailed, nothing observed, the App stays), and deployed once signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_cosign_signature_gates_what_an_app_observes() {
    use reckon::event::{Event, EventKind, SignatureStatus};
    reckon::tls::install_crypto_provider();
    let work = tempfile::tempdir().unwrap();
    let registry = OciRegistry::start(true, None).unwrap();
    let ca = work.path().join("ca.pem");
    std::fs::copy(registry.ca().unwrap().bundle_path(), &ca).unwrap();
    let key = CosignKey::generate().unwrap();
    let trusted = {
        let path = key.public_key();
        reckon::source::cosign::PublicKey::from_pem(&path, &std::fs::read(&path).unwrap()).unwrap()
    };
    let d1 = push(&registry, work.path(), "1.0.0", "blue");
    registry
        .sign(&key, "charts/web", &d1, SignatureFormat::Bundle)
        .unwrap();
    let cfg = reckon::config::parse(
        &format!(
            "apps:\n  - name: web\n    source:\n      url: {}\n      chart: {{name: web, signature: {{mode: require, keys: [{}]}}}}\n      ca_file: {}\n",
            registry.url("charts/web"),
            key.public_key().display(),
            ca.display()
        ),
        Path::new("reckon.yaml"),
    )
    .unwrap();
    let src = reckon::source::config::source_for(&cfg.apps[0], &work.path().join("cache")).unwrap();
    let store = new_store(work.path());
    let events = |kind: EventKind| of_kind(&store, kind);

    let o = reckon::fetch::fetch(&store, "web", &src).await.unwrap();
    assert_eq!(o.appended, 1);
    let first = o.deployable_head.clone().unwrap();
    let Event::ChartObserved(c) = &events(EventKind::ChartObserved)[0].body.event else {
        unreachable!()
    };
    assert_eq!(
        c.signature,
        SignatureStatus::Good {
            format: "cosign".into(),
            signer: "cosign".into(),
            key: trusted.fingerprint.clone(),
        }
    );

    // 1.1.0 is pushed unsigned: refused, nothing observed, the App stays on 1.0.0.
    let d2 = push(&registry, work.path(), "1.1.0", "green");
    let o = reckon::fetch::fetch(&store, "web", &src).await.unwrap();
    assert_eq!(o.deployable_head.as_deref(), Some(first.as_str()));
    let failed = events(EventKind::SourceFetchFailed);
    let Event::SourceFetchFailed(f) = &failed.last().unwrap().body.event else {
        unreachable!()
    };
    assert_eq!(f.reason, "ChartRefused", "{f:?}");
    assert!(
        f.error.contains("signature by a trusted key is required"),
        "{f:?}"
    );
    assert!(f.error.contains("Unsigned"), "{f:?}");
    assert_eq!(events(EventKind::ChartObserved).len(), 1);

    // Signed by the key: the next poll takes it.
    registry
        .sign(&key, "charts/web", &d2, SignatureFormat::SimpleSigning)
        .unwrap();
    let o = reckon::fetch::fetch(&store, "web", &src).await.unwrap();
    assert_eq!(o.appended, 1);
    assert_ne!(o.deployable_head.as_deref(), Some(first.as_str()));
    let observed = events(EventKind::ChartObserved);
    let Event::ChartObserved(c) = &observed.last().unwrap().body.event else {
        unreachable!()
    };
    assert_eq!(c.version, "1.1.0");
    assert!(
        matches!(&c.signature, SignatureStatus::Good { key, .. } if *key == trusted.fingerprint)
    );
}

/// A registry over plain HTTP on loopback (Helm's `--plain-http`) is followed when the App
/// opts in with `chart.insecure_http`, and refused over HTTPS otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_registry_over_plain_http_is_followed_when_the_app_opts_in() {
    reckon::tls::install_crypto_provider();
    let work = tempfile::tempdir().unwrap();
    let registry = OciRegistry::start(false, None).unwrap();
    push(&registry, work.path(), "1.0.0", "blue");
    let source = |insecure: bool| {
        let cfg = reckon::config::parse(
            &format!(
                "apps:\n  - name: web\n    source:\n      url: {}\n      chart: {{name: web, insecure_http: {insecure}}}\n",
                registry.url("charts/web"),
            ),
            Path::new("reckon.yaml"),
        )
        .unwrap();
        reckon::source::config::source_for(&cfg.apps[0], &work.path().join("cache")).unwrap()
    };
    let store = new_store(work.path());
    let o = reckon::fetch::fetch(&store, "web", &source(true))
        .await
        .unwrap();
    assert_eq!(o.appended, 1, "{o:?}");
    let observed = of_kind(&store, reckon::event::EventKind::ChartObserved);
    let reckon::event::Event::ChartObserved(c) = &observed[0].body.event else {
        unreachable!()
    };
    assert_eq!(c.version, "1.0.0");
    // Without the opt-in, reckon speaks TLS to it, which a plain HTTP registry cannot answer.
    let err = source(false)
        .observe_chart_async(None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err.reason(), "Unreachable" | "TlsUntrusted" | "FetchFailed"),
        "{err}"
    );
}

/// A new store under `dir`, with its writer.
fn new_store(dir: &Path) -> reckon::store::writer::StoreHandle {
    use reckon::store::{OpenOptions, SledStore};
    let store = SledStore::open(
        dir.join("store"),
        OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    reckon::store::writer::spawn(store).0
}

/// Every event of `kind`, oldest first.
fn of_kind(
    store: &reckon::store::writer::StoreHandle,
    kind: reckon::event::EventKind,
) -> Vec<reckon::event::Envelope> {
    use reckon::store::{EventRead, Query, Selector};
    store
        .reader()
        .query(&Query::new(Selector::Kind(kind)).oldest_first().limit(100))
        .unwrap()
        .events
}
