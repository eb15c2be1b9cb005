//! Smoke test of the Git test harness: every transport's server is real, and gix can bare-clone
//! from it and then fetch a commit pushed afterwards, ending at the server's head.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use reckon_testenv::git::{Fixture, GitDaemon, HttpAuth, HttpGitServer, HttpOptions, SshServer};

/// How to reach a remote: config overrides (ssh command), credentials, CA bundle.
#[derive(Default)]
struct Access {
    overrides: Vec<String>,
    basic: Option<(String, String)>,
    ca_bundle: Option<std::path::PathBuf>,
}

/// Bare "clone" = init once, then the same fetch as every later poll: mirror heads and tags.
fn gix_fetch(dir: &Path, url: &str, access: &Access) -> Result<gix::ObjectId> {
    let open =
        gix::open::Options::default().config_overrides(access.overrides.iter().map(String::as_str));
    let repo = if dir.join("HEAD").exists() {
        gix::open_opts(dir, open)?
    } else {
        gix::ThreadSafeRepository::init_opts(
            dir,
            gix::create::Kind::Bare,
            Default::default(),
            open,
        )?
        .to_thread_local()
    };
    let remote = repo.remote_at(url)?.with_refspecs(
        ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
        gix::remote::Direction::Fetch,
    )?;
    let mut connection = remote.connect(gix::remote::Direction::Fetch)?;
    if let Some((user, password)) = access.basic.clone() {
        connection.set_credentials(move |action| match action {
            gix::credentials::helper::Action::Get(ctx) => {
                Ok(Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: user.clone(),
                        password: password.clone(),
                        oauth_refresh_token: None,
                    },
                    next: ctx.into(),
                }))
            }
            _ => Ok(None),
        });
    }
    if let Some(bundle) = &access.ca_bundle {
        let certs = reqwest::Certificate::from_pem_bundle(&std::fs::read(bundle)?)?;
        let mut options = repo
            .transport_options(url, None)?
            .context("no transport options for an http url")?
            .downcast::<gix::protocol::transport::client::blocking_io::http::Options>()
            .map_err(|_| anyhow::anyhow!("not http options"))?;
        let backend = gix::protocol::transport::client::blocking_io::http::reqwest::Options {
            configure_client: Some(Box::new(move |b| Ok(b.tls_certs_only(certs.clone())))),
            configure_request: None,
        };
        options.backend = Some(Arc::new(Mutex::new(backend)));
        connection.set_transport_options(options);
    }
    connection
        .prepare_fetch(gix::progress::Discard, Default::default())?
        .receive(gix::progress::Discard, &AtomicBool::new(false))?;
    let id = repo
        .find_reference("refs/heads/main")?
        .into_fully_peeled_id()?
        .detach();
    Ok(id)
}

/// Clone, check the head, push a new commit to the server, fetch, check the head again.
fn clone_then_fetch(fixture: &Fixture, url: &str, access: &Access) -> Result<()> {
    let cache = tempfile::tempdir()?;
    let dir = cache.path().join("clone.git");
    let head = gix_fetch(&dir, url, access).with_context(|| format!("clone {url}"))?;
    assert_eq!(
        head.to_string(),
        fixture.served_rev("main")?,
        "clone of {url}"
    );
    assert!(gix::open(&dir)?.is_bare(), "the clone is bare");

    let new = fixture
        .commit("second commit")
        .write("deploy/app.yaml", "kind: ConfigMap\n")
        .create()?;
    fixture.push()?;
    let head = gix_fetch(&dir, url, access).with_context(|| format!("fetch {url}"))?;
    assert_eq!(head.to_string(), new, "fetch from {url}");
    Ok(())
}

fn fixture() -> Result<Fixture> {
    reckon::tls::install_crypto_provider();
    let f = Fixture::new()?;
    f.commit("first commit")
        .write("README.md", "hello\n")
        .create()?;
    f.push()?;
    Ok(f)
}

#[test]
fn local_path() -> Result<()> {
    let f = fixture()?;
    clone_then_fetch(
        &f,
        &f.served_path().display().to_string(),
        &Access::default(),
    )
}

#[test]
fn file_url() -> Result<()> {
    let f = fixture()?;
    clone_then_fetch(&f, &f.file_url(), &Access::default())
}

#[test]
fn git_daemon() -> Result<()> {
    let f = fixture()?;
    let daemon = GitDaemon::start(&f.served_root())?;
    clone_then_fetch(&f, &daemon.url(f.name()), &Access::default())
}

#[test]
fn smart_http() -> Result<()> {
    let f = fixture()?;
    let server = HttpGitServer::start(&f.served_root(), HttpOptions::default())?;
    clone_then_fetch(&f, &server.url(f.name()), &Access::default())
}

/// The harness serves basic auth over plain HTTP, and gix (rightly) refuses to send credentials in
/// clear text: this pins that refusal, so reckon users are told to use https for authenticated
/// remotes. Without credentials the server answers 401, so the clone fails either way.
#[test]
fn smart_http_basic_auth_is_refused_in_clear_text() -> Result<()> {
    let f = fixture()?;
    let auth = HttpAuth {
        username: "deployer".into(),
        password: "s3cret".into(),
    };
    let server = HttpGitServer::start(
        &f.served_root(),
        HttpOptions {
            tls: false,
            auth: Some(auth.clone()),
        },
    )?;
    let dir = tempfile::tempdir()?;
    let access = Access {
        basic: Some((auth.username, auth.password)),
        ..Default::default()
    };
    let err = gix_fetch(&dir.path().join("a.git"), &server.url(f.name()), &access)
        .expect_err("gix must not send a password over plain http");
    assert!(
        format!("{err:#}").contains("clear text"),
        "unexpected error: {err:#}"
    );
    let err = gix_fetch(
        &dir.path().join("b.git"),
        &server.url(f.name()),
        &Access::default(),
    );
    assert!(err.is_err(), "a clone without credentials must fail");
    Ok(())
}

#[test]
fn https_with_ca_bundle_and_basic_auth() -> Result<()> {
    let f = fixture()?;
    let auth = HttpAuth {
        username: "deployer".into(),
        password: "s3cret".into(),
    };
    let server = HttpGitServer::start(
        &f.served_root(),
        HttpOptions {
            tls: true,
            auth: Some(auth.clone()),
        },
    )?;
    let access = Access {
        basic: Some((auth.username, auth.password)),
        ca_bundle: server.ca_bundle(),
        ..Default::default()
    };
    assert!(server.url(f.name()).starts_with("https://"));
    clone_then_fetch(&f, &server.url(f.name()), &access)?;
    // Without the CA bundle the server's certificate is not trusted.
    let dir = tempfile::tempdir()?;
    let untrusted = Access {
        basic: access.basic.clone(),
        ..Default::default()
    };
    assert!(gix_fetch(&dir.path().join("c.git"), &server.url(f.name()), &untrusted).is_err());
    Ok(())
}

#[test]
fn https_without_auth() -> Result<()> {
    let f = fixture()?;
    let server = HttpGitServer::start(
        &f.served_root(),
        HttpOptions {
            tls: true,
            auth: None,
        },
    )?;
    let access = Access {
        ca_bundle: server.ca_bundle(),
        ..Default::default()
    };
    clone_then_fetch(&f, &server.url(f.name()), &access)
}

#[test]
fn ssh() -> Result<()> {
    let f = fixture()?;
    let server = SshServer::start()?;
    let access = Access {
        overrides: vec![
            format!(
                "core.sshCommand={}",
                server.ssh_command(&server.known_hosts_path())
            ),
            "ssh.variant=ssh".into(),
        ],
        ..Default::default()
    };
    clone_then_fetch(&f, &server.url(&f.served_path()), &access)
        .with_context(|| format!("sshd log:\n{}", server.log()))
}

#[test]
fn ssh_scp_style() -> Result<()> {
    let f = fixture()?;
    let server = SshServer::start()?;
    let access = Access {
        overrides: vec![
            format!(
                "core.sshCommand={}",
                server.ssh_command_with_port(&server.known_hosts_path())
            ),
            "ssh.variant=ssh".into(),
        ],
        ..Default::default()
    };
    clone_then_fetch(&f, &server.scp_url(&f.served_path()), &access)
        .with_context(|| format!("sshd log:\n{}", server.log()))
}
