//! Proves the one-crypto-provider rule: in one process, gix's HTTPS transport (reqwest + rustls)
//! is used and then a kube client is built against an HTTPS API server, without reckon installing
//! a provider by hand. Two compiled-in providers would make kube panic at client creation.

use crate::support;

use std::sync::atomic::AtomicBool;

#[test]
fn gix_https_and_kube_client_share_one_provider() {
    let kubeconfig = support::kubeconfig();
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server in kubeconfig")
        .to_string();
    assert!(server.starts_with("https://"), "{server}");

    // gix over HTTPS against the API server's self-signed certificate: it must get as far as the
    // TLS handshake and reject the unknown issuer (not panic, not "unsupported scheme").
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{server}/not-a-repo.git");
    let err = gix::prepare_clone_bare(url.as_str(), dir.path().join("r"))
        .expect("prepare clone")
        .fetch_only(gix::progress::Discard, &AtomicBool::new(false))
        .expect_err("an https clone of a non-git endpoint with an untrusted cert fails");
    let chain = format!("{:?}", anyhow::Error::from(err));
    assert!(
        chain.to_lowercase().contains("certificate") || chain.contains("UnknownIssuer"),
        "expected a TLS certificate error, got: {chain}"
    );

    // Now kube, in the same process, against the same HTTPS server.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let version = rt.block_on(async {
        let c = kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
                &Default::default(),
            )
            .await
            .unwrap(),
        )
        .expect("kube client builds with the shared provider");
        c.apiserver_version().await.expect("server version")
    });
    assert!(version.git_version.starts_with('v'), "{version:?}");
}
