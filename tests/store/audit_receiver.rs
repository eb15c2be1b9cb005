//! The audit webhook receiver over real TLS (no cluster needed): a client certificate signed by
//! the configured CA and naming an allowed identity gets in, as does the token; no credential, a
//! wrong token, a certificate from another CA, or one from the right CA naming anybody else (a
//! user's or a kubelet's, which the cluster CA also signs) does not.

use reckon::audit::{AuditOptions, ResourceOf};
use reckon::store::{OpenOptions, SledStore, writer};
use reckon_testenv::git::TestCa;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const BATCH: &str = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}"#;

/// The HTTP status curl saw ("000" when the TLS handshake failed).
fn post(url: &str, ca: &Path, token: Option<&str>, cert: Option<(&Path, &Path)>) -> String {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args(["-X", "POST", "-d", BATCH]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some((cert, key)) = cert {
        c.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = c.arg(url).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The receiver and attributor over `store`, with no cluster behind them (no resources, no
/// known reckon user).
async fn start(
    options: AuditOptions,
    store: &writer::StoreHandle,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, reckon::audit::AuditError> {
    let resource_of: ResourceOf = Arc::new(|_| None);
    reckon::audit::start(
        options,
        store.clone(),
        resource_of,
        Arc::new(Vec::new),
        stop,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_or_client_certificate_and_nothing_else() {
    reckon::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("store"), OpenOptions::create()).unwrap();
    let (handle, writer_task) = writer::spawn(store);
    let ca = TestCa::generate().unwrap();
    let other = TestCa::generate().unwrap();
    let (cert, key) = ca.server_pem_files().unwrap();
    let port = reckon_testenv::ports::free_ports(1).unwrap()[0];
    std::fs::write(
        dir.path().join("tokens"),
        "apiserver webhook-token-0123456789\n",
    )
    .unwrap();
    let mut options = AuditOptions::new(format!("127.0.0.1:{port}").parse().unwrap(), cert, key);
    options.token_file = Some(dir.path().join("tokens"));
    options.client_ca = Some(ca.bundle_path());
    options.client_identities = vec!["kube-apiserver".into(), "audit.cluster.example".into()];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = start(options, &handle, stop_rx).await.unwrap();
    let url = format!("https://127.0.0.1:{port}/audit/v1/events");
    let ca_pem = ca.bundle_path();
    let (client_cert, client_key) = ca.client_pem_files_named("kube-apiserver", &[]).unwrap();
    let (san_cert, san_key) = ca
        .client_pem_files_named("apiserver-7", &["audit.cluster.example"])
        .unwrap();
    let (user_cert, user_key) = ca.client_pem_files_named("alice", &[]).unwrap();
    let (node_cert, node_key) = ca
        .client_pem_files_named("system:node:worker-1", &["worker-1"])
        .unwrap();
    let (other_cert, other_key) = other.client_pem_files_named("kube-apiserver", &[]).unwrap();
    let statuses = tokio::task::spawn_blocking(move || {
        [
            post(&url, &ca_pem, None, None),
            post(&url, &ca_pem, Some("not-the-token-0123456789"), None),
            post(&url, &ca_pem, Some("webhook-token-0123456789"), None),
            post(&url, &ca_pem, None, Some((&client_cert, &client_key))),
            post(&url, &ca_pem, None, Some((&other_cert, &other_key))),
            post(&url, &ca_pem, None, Some((&san_cert, &san_key))),
            post(&url, &ca_pem, None, Some((&user_cert, &user_key))),
            post(&url, &ca_pem, None, Some((&node_cert, &node_key))),
        ]
    })
    .await
    .unwrap();
    assert_eq!(statuses[0], "401", "no credential");
    assert_eq!(statuses[1], "401", "an unknown token");
    assert_eq!(statuses[2], "200", "the webhook's token");
    assert_eq!(statuses[3], "200", "the API server's certificate (its CN)");
    assert_eq!(
        statuses[4], "000",
        "a certificate from another CA fails the handshake"
    );
    assert_eq!(statuses[5], "200", "an allowed DNS alternative name");
    assert_eq!(statuses[6], "401", "a user's certificate from the same CA");
    assert_eq!(
        statuses[7], "401",
        "a kubelet's certificate from the same CA"
    );
    let _ = stop_tx.send(true);
    task.await.unwrap();
    handle.close().await.unwrap();
    writer_task.await.unwrap().unwrap();
}

/// A client CA without an allowlist would let in every certificate it signed: refused at start.
#[tokio::test]
async fn a_client_ca_without_identities_is_refused_at_start() {
    reckon::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("store"), OpenOptions::create()).unwrap();
    let (handle, writer_task) = writer::spawn(store);
    let ca = TestCa::generate().unwrap();
    let (cert, key) = ca.server_pem_files().unwrap();
    let mut options = AuditOptions::new("127.0.0.1:0".parse().unwrap(), cert, key);
    options.client_ca = Some(ca.bundle_path());
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let err = start(options, &handle, stop_rx).await.expect_err("refused");
    assert!(err.to_string().contains("--audit-client-identity"), "{err}");
    handle.close().await.unwrap();
    writer_task.await.unwrap().unwrap();
}
