//! The parts of a Git source that come from the process environment: an https proxy
//! (HTTPS_PROXY) and a token in an environment variable. Setting variables inside a running test
//! is unsafe (other threads may read the environment), so the test starts this same test binary as
//! a child process with the variables set, runs one ignored test there, and checks from outside
//! that the fetch succeeded and that the proxy really carried it.

use std::process::Command;

use anyhow::Result;
use reckon::source::{Access, GitSource, HttpCredentials, RefSelector, SecretSource, SourceSpec};
use reckon_testenv::git::{Fixture, HttpAuth, HttpGitServer, HttpOptions, HttpProxy};

const TOKEN_VAR: &str = "RECKON_TEST_GIT_TOKEN";

#[test]
fn https_through_the_environment_proxy_with_a_token_from_an_environment_variable() -> Result<()> {
    let f = Fixture::new()?;
    let head = f.commit("one").write("a", "1").create()?;
    f.push()?;
    let server = HttpGitServer::start(
        &f.served_root(),
        HttpOptions {
            tls: true,
            auth: Some(HttpAuth {
                username: "x-access-token".into(),
                password: "env-t0ken".into(),
            }),
        },
    )?;
    let proxy = HttpProxy::start()?;
    let cache = tempfile::tempdir()?;
    let child = |token: &str| -> Result<std::process::Output> {
        Ok(Command::new(std::env::current_exe()?)
            .args([
                "--exact",
                "source_env::child_fetch",
                "--include-ignored",
                "--nocapture",
            ])
            .env("HTTPS_PROXY", proxy.url())
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env(TOKEN_VAR, token)
            .env("RECKON_CHILD_URL", server.url(f.name()))
            .env("RECKON_CHILD_CA", server.ca_bundle().unwrap())
            .env("RECKON_CHILD_CACHE", cache.path())
            .env("RECKON_CHILD_EXPECT", &head)
            .output()?)
    };
    let out = child("env-t0ken")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed"),
        "the child test must really run: {text}"
    );
    let target = format!("127.0.0.1:{}", server.port());
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty(), "the fetch must go through the proxy");
    assert!(tunnels.iter().all(|t| *t == target), "{tunnels:?}");

    // The token really is read from the variable: a wrong one fails authentication.
    let out = child("wrong")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(text.contains("AuthFailed"), "{text}");
    Ok(())
}

#[test]
#[ignore = "runs only as the child process of the test above, which sets its environment"]
fn child_fetch() {
    reckon::tls::install_crypto_provider();
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} unset"));
    let spec = SourceSpec {
        id: "env".into(),
        url: var("RECKON_CHILD_URL"),
        reference: RefSelector::DefaultBranch,
        path: String::new(),
        access: Access {
            http: Some(HttpCredentials::token(SecretSource::Env(TOKEN_VAR.into()))),
            ca_bundle: Some(var("RECKON_CHILD_CA").into()),
            ssh: None,
        },
        signatures: Default::default(),
    };
    let cache = std::path::PathBuf::from(var("RECKON_CHILD_CACHE"));
    match GitSource::new(spec, &cache).fetch(None) {
        Ok(out) => assert_eq!(out.head, var("RECKON_CHILD_EXPECT")),
        Err(e) => panic!("{}: {e}", e.reason()),
    }
}
