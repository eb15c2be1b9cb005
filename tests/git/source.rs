//! The Git source against real repositories and real servers: clone and incremental fetch over
//! every transport and auth mode, ref selection, reading trees, observed commits, force-pushes,
//! deleted branches, corrupt caches and each failure's reason.

use crate::support;

use anyhow::Result;
use reckon::source::{
    Access, DeployDecision, GitSource, HttpCredentials, RefSelector, SecretSource, SignaturePolicy,
    SourceError, SourceSpec, SshAccess,
};
use reckon_testenv::git::{
    Fixture, GitDaemon, HttpAuth, HttpGitServer, HttpOptions, Person, SshKey, SshServer,
};

fn spec(url: &str, reference: RefSelector, path: &str) -> SourceSpec {
    SourceSpec {
        id: "app".into(),
        url: url.into(),
        reference,
        path: path.into(),
        access: Access::default(),
        signatures: SignaturePolicy::default(),
    }
}

struct Env {
    fixture: Fixture,
    cache: tempfile::TempDir,
}

impl Env {
    fn new() -> Result<Self> {
        reckon::tls::install_crypto_provider();
        let fixture = Fixture::new()?;
        fixture
            .commit("initial layout")
            .author(Person::new("Ada", "ada@example.com").at(1_700_000_000, 60))
            .write("apps/web/deploy.yaml", "kind: Deployment\n")
            .write("apps/web/svc.yaml", "kind: Service\n")
            .write("apps/db/sts.yaml", "kind: StatefulSet\n")
            .write("README.md", "readme\n")
            .create()?;
        fixture.push()?;
        Ok(Self {
            fixture,
            cache: tempfile::tempdir()?,
        })
    }

    fn source(&self, spec: SourceSpec) -> GitSource {
        GitSource::new(spec, self.cache.path())
    }
}

fn deployed(o: &reckon::source::FetchOutcome) -> &str {
    match &o.decision {
        DeployDecision::Deploy { sha } => sha,
        DeployDecision::Blocked { reason, .. } => panic!("blocked: {reason}"),
    }
}

#[test]
fn first_fetch_observes_the_head_with_exact_metadata() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let author = Person::new("Zoë Author", "zoe@example.org").at(1_710_000_000, 330);
    let committer = Person::new("Carl Committer", "carl@example.org").at(1_710_000_500, -420);
    let sha = f
        .commit("web: scale up\n\nBecause traffic.\n")
        .author(author.clone())
        .committer(committer.clone())
        .write("apps/web/deploy.yaml", "kind: Deployment\nreplicas: 3\n")
        .write("apps/db/sts.yaml", "kind: StatefulSet\nreplicas: 2\n")
        .create()?;
    f.push()?;
    let parent = f.rev("HEAD~1")?;

    let src = env.source(spec(&f.file_url(), RefSelector::DefaultBranch, "apps/web"));
    let out = src.fetch(None)?;
    assert_eq!(out.head, sha);
    assert_eq!(deployed(&out), sha);
    assert_eq!(out.resolved_ref, "refs/heads/main");
    assert_eq!(out.history_rewritten, None);
    assert_eq!(out.cache_recovered, None);
    assert_eq!(
        out.new_commits.len(),
        1,
        "first observation reports the head only"
    );
    let c = &out.new_commits[0];
    assert_eq!(c.sha, sha);
    assert_eq!(c.parents, vec![parent]);
    assert_eq!(c.message, "web: scale up\n\nBecause traffic.\n");
    assert_eq!(
        (c.author.name.as_str(), c.author.email.as_str()),
        ("Zoë Author", "zoe@example.org")
    );
    assert_eq!(
        (c.author.time, c.author.offset_seconds),
        (1_710_000_000, 330 * 60)
    );
    assert_eq!(
        (c.committer.time, c.committer.offset_seconds),
        (1_710_000_500, -420 * 60)
    );
    assert_eq!(c.committer.name, "Carl Committer");
    assert_eq!(
        c.author.time_with_offset().unwrap().to_rfc3339(),
        "2024-03-09T21:30:00+05:30"
    );
    // Only the App's path: the db change is outside apps/web.
    assert_eq!(c.changed_paths, vec!["apps/web/deploy.yaml"]);
    assert!(src.cache_dir().join("HEAD").is_file());
    assert!(gix::open(src.cache_dir())?.is_bare());
    Ok(())
}

#[test]
fn incremental_fetch_reports_every_new_commit_in_first_parent_order() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let src = env.source(spec(
        &f.file_url(),
        RefSelector::Branch("main".into()),
        "apps/web",
    ));
    let first = src.fetch(None)?;

    let a = f.commit("a").write("apps/web/a.yaml", "a").create()?;
    let b = f
        .commit("b: outside the app")
        .write("docs/b.md", "b")
        .create()?;
    // A merge: its second parent's commit is not on the first-parent chain.
    f.checkout_new_branch("feature")?;
    let side = f.commit("side").write("apps/web/side.yaml", "s").create()?;
    f.checkout("main")?;
    f.git(["merge", "--no-ff", "--no-edit", "feature"])?;
    let merge = f.rev("HEAD")?;
    let c = f.commit("c").remove("apps/web/svc.yaml").create()?;
    f.push()?;

    let out = src.fetch(Some(&first.head))?;
    let shas: Vec<&str> = out.new_commits.iter().map(|c| c.sha.as_str()).collect();
    assert_eq!(
        shas,
        vec![a.as_str(), b.as_str(), merge.as_str(), c.as_str()]
    );
    let expected = f.git([
        "rev-list",
        "--first-parent",
        "--reverse",
        &format!("{}..{}", first.head, c),
    ])?;
    assert_eq!(
        shas.join("\n"),
        expected,
        "same as git rev-list --first-parent"
    );
    assert!(!shas.contains(&side.as_str()));
    assert_eq!(out.new_commits[0].changed_paths, vec!["apps/web/a.yaml"]);
    assert!(out.new_commits[1].changed_paths.is_empty());
    assert_eq!(out.new_commits[2].changed_paths, vec!["apps/web/side.yaml"]);
    assert_eq!(out.new_commits[3].changed_paths, vec!["apps/web/svc.yaml"]);
    assert_eq!(out.new_commits[2].parents.len(), 2);
    assert_eq!(out.history_rewritten, None);

    let again = src.fetch(Some(&out.head))?;
    assert!(again.new_commits.is_empty(), "nothing new");
    assert_eq!(again.head, c);
    Ok(())
}

#[test]
fn force_push_is_detected_as_rewritten_history() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let base = f.rev("HEAD")?;
    let old = f
        .commit("to be rewritten")
        .write("apps/web/x.yaml", "x")
        .create()?;
    f.push()?;
    let src = env.source(spec(&f.file_url(), RefSelector::Branch("main".into()), ""));
    assert_eq!(src.fetch(None)?.head, old);

    f.reset_hard(&base)?;
    let new = f
        .commit("rewritten")
        .write("apps/web/y.yaml", "y")
        .create()?;
    f.push()?;
    let out = src.fetch(Some(&old))?;
    assert_eq!(out.head, new);
    let rw = out.history_rewritten.expect("rewrite detected");
    assert_eq!(
        (rw.old_head.as_str(), rw.new_head.as_str()),
        (old.as_str(), new.as_str())
    );
    assert_eq!(rw.merge_base.as_deref(), Some(base.as_str()));
    let shas: Vec<&str> = out.new_commits.iter().map(|c| c.sha.as_str()).collect();
    assert_eq!(shas, vec![new.as_str()]);

    // A previous head the mirror never saw at all is also a rewrite, with no merge base.
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let out = src.fetch(Some(unknown))?;
    assert_eq!(out.history_rewritten.unwrap().merge_base, None);
    Ok(())
}

#[test]
fn refs_branch_tag_semver_commit_and_default_branch() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let c1 = f.rev("HEAD")?;
    f.tag("v1.0.0", &c1)?;
    let c2 = f.commit("two").write("apps/web/v.txt", "2").create()?;
    f.annotated_tag(
        "v1.4.0",
        &c2,
        "release 1.4",
        &Person::new("Rel", "rel@example.com"),
    )?;
    let c3 = f.commit("three").write("apps/web/v.txt", "3").create()?;
    f.tag("v2.0.0-rc.1", &c3)?;
    f.tag("1.10.1", &c3)?;
    f.checkout_new_branch("staging")?;
    let s = f
        .commit("staging only")
        .write("apps/web/v.txt", "s")
        .create()?;
    f.checkout("main")?;
    f.push()?;
    let url = f.file_url();
    let resolve = |sel: RefSelector| -> Result<(String, String)> {
        let o = env.source(spec(&url, sel, "")).fetch(None)?;
        Ok((o.resolved_ref, o.head))
    };
    assert_eq!(
        resolve(RefSelector::Branch("staging".into()))?,
        ("refs/heads/staging".into(), s.clone())
    );
    assert_eq!(
        resolve(RefSelector::Tag("v1.0.0".into()))?,
        ("refs/tags/v1.0.0".into(), c1.clone())
    );
    // Annotated tags peel to their commit.
    assert_eq!(
        resolve(RefSelector::Tag("v1.4.0".into()))?,
        ("refs/tags/v1.4.0".into(), c2.clone())
    );
    let req = |r: &str| RefSelector::Semver(semver::VersionReq::parse(r).unwrap());
    assert_eq!(resolve(req("^1"))?, ("refs/tags/1.10.1".into(), c3.clone()));
    assert_eq!(
        resolve(req("~1.4"))?,
        ("refs/tags/v1.4.0".into(), c2.clone())
    );
    assert_eq!(
        resolve(req(">=2.0.0-rc.0"))?,
        ("refs/tags/v2.0.0-rc.1".into(), c3.clone())
    );
    assert_eq!(
        resolve(RefSelector::Commit(c2.clone()))?,
        (c2.clone(), c2.clone())
    );
    assert_eq!(
        resolve(RefSelector::DefaultBranch)?,
        ("refs/heads/main".into(), c3.clone())
    );

    // The default branch follows the remote's HEAD.
    f.set_served_default_branch("staging")?;
    assert_eq!(
        resolve(RefSelector::DefaultBranch)?,
        ("refs/heads/staging".into(), s)
    );

    for missing in [
        RefSelector::Branch("nope".into()),
        RefSelector::Tag("v9".into()),
        req("^7"),
        RefSelector::Commit("1111111111111111111111111111111111111111".into()),
    ] {
        let err = env
            .source(spec(&url, missing.clone(), ""))
            .fetch(None)
            .unwrap_err();
        assert!(
            matches!(err, SourceError::MissingRef { .. }),
            "{missing}: {err}"
        );
    }
    Ok(())
}

#[test]
fn deleted_branch_is_a_missing_ref_and_the_cache_stays_usable() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    f.checkout_new_branch("release")?;
    let r = f.commit("release").write("apps/web/r.txt", "r").create()?;
    f.checkout("main")?;
    f.push()?;
    let src = env.source(spec(
        &f.file_url(),
        RefSelector::Branch("release".into()),
        "apps/web",
    ));
    assert_eq!(src.fetch(None)?.head, r);

    f.delete_served_branch("release")?;
    let err = src.fetch(Some(&r)).unwrap_err();
    assert!(matches!(err, SourceError::MissingRef { .. }), "{err}");
    assert_eq!(err.reason(), "MissingRef");
    assert!(err.to_string().contains("branch release"), "{err}");
    // The last good revision can still be read from the cache.
    assert_eq!(src.read_tree(&r)?.len(), 3);
    Ok(())
}

#[test]
fn read_tree_refuses_a_commit_over_any_limit_naming_it() -> Result<()> {
    use reckon::source::tree::TreeLimits;
    let env = Env::new()?;
    let f = &env.fixture;
    f.commit("big and deep")
        .write("apps/web/big.yaml", "x".repeat(5000))
        .write("apps/web/a/b/c/deep.yaml", "kind: ConfigMap\n")
        .create()?;
    f.push()?;
    let src = |limits: TreeLimits| {
        env.source(spec(
            &f.file_url(),
            RefSelector::Branch("main".into()),
            "apps/web",
        ))
        .with_tree_limits(limits)
    };
    let head = src(TreeLimits::default()).fetch(None)?.head;
    assert_eq!(
        src(TreeLimits::default()).read_tree(&head)?.len(),
        4,
        "the defaults read a normal App"
    );
    let over = |limits: TreeLimits| -> String {
        match src(limits).read_tree(&head) {
            Err(e @ SourceError::Limit { .. }) => {
                assert_eq!(e.reason(), "OverLimit");
                e.to_string()
            }
            other => panic!("expected a limit error, got {other:?}"),
        }
    };
    let d = TreeLimits::default();
    let e = over(TreeLimits {
        max_file_bytes: 4999,
        ..d
    });
    assert!(e.contains("big.yaml is 5000 bytes"), "{e}");
    let e = over(TreeLimits { max_files: 3, ..d });
    assert!(e.contains("more than 3 files"), "{e}");
    let e = over(TreeLimits {
        max_bytes: 5010,
        ..d
    });
    assert!(e.contains("exceed 5010 bytes"), "{e}");
    let e = over(TreeLimits { max_depth: 2, ..d });
    assert!(e.contains("a/b/c is nested more than 2"), "{e}");
    assert_eq!(
        src(TreeLimits { max_depth: 3, ..d })
            .read_tree(&head)?
            .len(),
        4
    );
    Ok(())
}

#[test]
fn read_tree_returns_files_under_the_path_sorted_with_exact_bytes() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let sha = f
        .commit("more files")
        .write("apps/web/z/last.yaml", "z")
        .write("apps/web/a-first.yaml", [0u8, 159, 146, 150])
        .write("apps/web/B.yaml", "B")
        .create()?;
    f.push()?;
    let src = env.source(spec(
        &f.file_url(),
        RefSelector::Branch("main".into()),
        "apps/web",
    ));
    let out = src.fetch(None)?;
    let files = src.read_tree(&out.head)?;
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "B.yaml",
            "a-first.yaml",
            "deploy.yaml",
            "svc.yaml",
            "z/last.yaml"
        ]
    );
    let listed = f.git(["ls-tree", "-r", "--name-only", &sha, "apps/web/"])?;
    let listed: Vec<String> = listed
        .lines()
        .map(|l| l.trim_start_matches("apps/web/").to_string())
        .collect();
    assert_eq!(names, listed, "same files and order as git ls-tree");
    assert_eq!(files[1].1, vec![0u8, 159, 146, 150]);
    assert_eq!(files[2].1, b"kind: Deployment\n");
    assert!(
        src.read_tree("0123456789abcdef0123456789abcdef01234567")
            .is_err()
    );
    let root = GitSource::new(
        spec(&f.file_url(), RefSelector::DefaultBranch, ""),
        env.cache.path(),
    );
    assert_eq!(root.read_tree(&sha)?.len(), 7);
    Ok(())
}

#[test]
fn local_path_and_git_daemon_transports() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let daemon = GitDaemon::start(&f.served_root())?;
    for url in [f.served_path().display().to_string(), daemon.url(f.name())] {
        let src = env.source(spec(&url, RefSelector::DefaultBranch, ""));
        let first = src.fetch(None)?;
        assert_eq!(first.head, f.served_rev("main")?, "{url}");
        let new = f
            .commit(&format!("via {url}"))
            .write("apps/web/t.txt", &url)
            .create()?;
        f.push()?;
        let out = src.fetch(Some(&first.head))?;
        assert_eq!(out.head, new, "{url}");
        assert_eq!(out.new_commits.len(), 1, "{url}");
    }
    Ok(())
}

#[test]
fn https_with_ca_bundle_and_password_from_a_file() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let server = HttpGitServer::start(
        &f.served_root(),
        HttpOptions {
            tls: true,
            auth: Some(HttpAuth {
                username: "x-access-token".into(),
                password: "t0ken".into(),
            }),
        },
    )?;
    let secret = env.cache.path().join("token");
    std::fs::write(&secret, "t0ken\n")?;
    let mut s = spec(&server.url(f.name()), RefSelector::DefaultBranch, "");
    s.access = Access {
        http: Some(HttpCredentials::token(SecretSource::File(secret.clone()))),
        ca_bundle: server.ca_bundle(),
        ssh: None,
    };
    let src = env.source(s.clone());
    let first = src.fetch(None)?;
    assert_eq!(first.head, f.served_rev("main")?);
    let new = f
        .commit("over https")
        .write("apps/web/h.txt", "h")
        .create()?;
    f.push()?;
    assert_eq!(src.fetch(Some(&first.head))?.head, new);

    // A wrong password is an authentication failure.
    std::fs::write(&secret, "wrong")?;
    let err = env.source(s.clone()).fetch(Some(&new)).unwrap_err();
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err}");
    // No CA bundle: the certificate is not trusted.
    std::fs::write(&secret, "t0ken")?;
    let mut untrusted = s.clone();
    untrusted.access.ca_bundle = None;
    let err = env.source(untrusted).fetch(None).unwrap_err();
    assert!(matches!(err, SourceError::TlsUntrusted { .. }), "{err}");
    // A secret that cannot be read is its own error, before any connection.
    let mut unreadable = s;
    unreadable.access.http = Some(HttpCredentials::token(SecretSource::File(
        env.cache.path().join("missing"),
    )));
    let err = env.source(unreadable).fetch(None).unwrap_err();
    assert!(matches!(err, SourceError::Credentials { .. }), "{err}");
    Ok(())
}

/// Issue 18, item 3: a remote that accepts the connection and never answers held the fetch,
/// and with it the mirror's lock for every App on that URL, for ever. Now a fetch ends at
/// `limits.fetch_timeout` with an error naming it, and the next fetch of the URL gets the lock:
/// over HTTP, and over `git://`, whose daemon protocol stalled before the pack (where gix checks
/// its interrupt flag) until its socket got the deadline as a timeout.
#[test]
fn a_stalled_remote_fails_the_fetch_at_its_deadline_and_frees_the_mirror() -> Result<()> {
    for scheme in ["http", "git"] {
        stalled_remote_over(scheme)?;
    }
    Ok(())
}

fn stalled_remote_over(scheme: &str) -> Result<()> {
    let env = Env::new()?;
    // Accepts connections, reads what is sent, answers nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let limits = reckon::config::InputLimits {
        fetch_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let url = format!("{scheme}://127.0.0.1:{port}/stalled.git");
    let src = env
        .source(spec(&url, RefSelector::DefaultBranch, ""))
        .with_input_limits(&limits);
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..2 {
        let (src, tx) = (src.clone(), tx.clone());
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let result = src.fetch(None);
            let _ = tx.send((started.elapsed(), result));
        });
    }
    // Both fetches of the URL end (the second waited for the first's lock): nothing hangs.
    for _ in 0..2 {
        let (took, result) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("a fetch of a stalled {scheme}:// remote ended"));
        let err = result.unwrap_err().to_string();
        assert!(err.contains("limits.fetch_timeout"), "{scheme}: {err}");
        assert!(took >= std::time::Duration::from_secs(2), "{took:?}");
    }
    Ok(())
}

#[test]
fn plain_http_anonymous_and_refused_credentials() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let open = HttpGitServer::start(&f.served_root(), HttpOptions::default())?;
    let src = env.source(spec(&open.url(f.name()), RefSelector::DefaultBranch, ""));
    assert_eq!(src.fetch(None)?.head, f.served_rev("main")?);

    let guarded = HttpGitServer::start(
        &f.served_root(),
        HttpOptions {
            tls: false,
            auth: Some(HttpAuth {
                username: "u".into(),
                password: "p".into(),
            }),
        },
    )?;
    // Anonymous against a server demanding auth.
    let err = env
        .source(spec(&guarded.url(f.name()), RefSelector::DefaultBranch, ""))
        .fetch(None)
        .unwrap_err();
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err}");
    Ok(())
}

fn ssh_spec(
    server: &SshServer,
    url: &str,
    known_hosts: &std::path::Path,
    key: &std::path::Path,
) -> SourceSpec {
    let mut s = spec(url, RefSelector::DefaultBranch, "apps");
    s.access.ssh = Some(SshAccess {
        private_key: Some(key.into()),
        known_hosts: Some(known_hosts.into()),
        options: vec![format!("Port={}", server.port())],
    });
    s
}

#[test]
fn ssh_and_scp_style_with_pinned_host_key() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let server = SshServer::start()?;
    let kh = server.known_hosts_path();
    for url in [
        server.url(&f.served_path()),
        server.scp_url(&f.served_path()),
    ] {
        let src = env.source(ssh_spec(&server, &url, &kh, server.client_key()));
        let first = src
            .fetch(None)
            .map_err(|e| anyhow::anyhow!("{e}\nsshd: {}", server.log()))?;
        assert_eq!(first.head, f.served_rev("main")?, "{url}");
        let new = f
            .commit(&format!("over {url}"))
            .write("apps/s.txt", &url)
            .create()?;
        f.push()?;
        let out = src.fetch(Some(&first.head))?;
        assert_eq!(out.head, new);
        assert_eq!(out.new_commits[0].changed_paths, vec!["apps/s.txt"]);
    }
    Ok(())
}

#[test]
fn ssh_unknown_or_changed_host_key_and_wrong_client_key_are_refused() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let server = SshServer::start()?;
    let url = server.url(&f.served_path());
    let dir = env.cache.path();

    // Unknown: an empty known_hosts.
    let empty = dir.join("known_hosts_empty");
    std::fs::write(&empty, "")?;
    let err = env
        .source(ssh_spec(&server, &url, &empty, server.client_key()))
        .fetch(None)
        .unwrap_err();
    assert!(matches!(err, SourceError::HostKeyRejected { .. }), "{err}");

    // Changed: known_hosts pins another key for this host and port.
    let impostor = SshKey::generate(&dir.join("impostor"), "impostor")?;
    let changed = dir.join("known_hosts_changed");
    std::fs::write(
        &changed,
        format!("[127.0.0.1]:{} {}\n", server.port(), impostor.public_key()),
    )?;
    let err = env
        .source(ssh_spec(&server, &url, &changed, server.client_key()))
        .fetch(None)
        .unwrap_err();
    assert!(matches!(err, SourceError::HostKeyRejected { .. }), "{err}");
    assert!(err.to_string().to_lowercase().contains("host key"), "{err}");

    // A client key sshd does not accept.
    let stranger = SshKey::generate(&dir.join("stranger"), "stranger")?;
    let err = env
        .source(ssh_spec(
            &server,
            &url,
            &server.known_hosts_path(),
            &stranger.private,
        ))
        .fetch(None)
        .unwrap_err();
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err}");
    Ok(())
}

#[test]
fn unreachable_remotes_are_reported_as_such() -> Result<()> {
    let env = Env::new()?;
    let port = reckon_testenv::git::process::free_port()?;
    for url in [
        format!("git://127.0.0.1:{port}/repo.git"),
        format!("http://127.0.0.1:{port}/repo.git"),
        "/nonexistent/reckon/repo.git".to_string(),
    ] {
        let err = env
            .source(spec(&url, RefSelector::DefaultBranch, ""))
            .fetch(None)
            .unwrap_err();
        assert!(
            matches!(err, SourceError::Unreachable { .. }),
            "{url}: {err}"
        );
    }
    Ok(())
}

#[test]
fn a_corrupt_cache_is_removed_cloned_again_and_recorded() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let src = env.source(spec(&f.file_url(), RefSelector::DefaultBranch, ""));
    let first = src.fetch(None)?;

    // A damaged config: the mirror cannot even be opened.
    std::fs::write(
        src.cache_dir().join("config"),
        "[core\n\tbare = \u{0}garbage[[[",
    )?;
    let out = src.fetch(Some(&first.head))?;
    assert!(out.cache_recovered.is_some(), "recovery recorded");
    assert_eq!(out.head, first.head);
    assert!(out.new_commits.is_empty());

    // Lost objects: refs are fine but the head commit is gone; "nothing new" must not hide it.
    let objects = src.cache_dir().join("objects");
    for entry in walk(&objects)? {
        if entry.extension().is_some_and(|e| e == "pack" || e == "idx")
            || entry.parent() != Some(&objects.join("pack"))
        {
            std::fs::remove_file(&entry)?;
        }
    }
    let out = src.fetch(Some(&first.head))?;
    let reason = out.cache_recovered.expect("recovery recorded");
    assert!(reason.contains(&first.head), "{reason}");
    assert_eq!(src.read_tree(&out.head)?.len(), 4);
    Ok(())
}

fn walk(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

#[test]
fn a_burst_larger_than_the_cap_reports_the_newest_commits_and_says_so() -> Result<()> {
    let env = Env::new()?;
    let f = &env.fixture;
    let src = env
        .source(spec(&f.file_url(), RefSelector::DefaultBranch, ""))
        .with_options(reckon::source::mirror::FetchOptions {
            max_new_commits: 2,
            ..Default::default()
        });
    let first = src.fetch(None)?;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            f.commit(&format!("c{i}"))
                .write("n.txt", format!("{i}"))
                .create()?,
        );
    }
    f.push()?;
    let out = src.fetch(Some(&first.head))?;
    assert!(out.new_commits_truncated);
    let shas: Vec<&str> = out.new_commits.iter().map(|c| c.sha.as_str()).collect();
    assert_eq!(shas, vec![made[3].as_str(), made[4].as_str()]);
    Ok(())
}

#[test]
fn an_empty_remote_has_no_default_branch_yet() -> Result<()> {
    reckon::tls::install_crypto_provider();
    let f = Fixture::new()?;
    let cache = tempfile::tempdir()?;
    let src = GitSource::new(
        spec(&f.file_url(), RefSelector::DefaultBranch, ""),
        cache.path(),
    );
    let err = src.fetch(None).unwrap_err();
    assert!(matches!(err, SourceError::MissingRef { .. }), "{err}");
    // The first push makes it followable, with the same cache.
    let sha = f.commit("first").write("a", "a").create()?;
    f.push()?;
    assert_eq!(src.fetch(None)?.head, sha);
    Ok(())
}

/// An overlay at the App's path over `../../base`, with a patch kept elsewhere in the
/// repository, renders from a real commit; a reference that climbs out of the repository is
/// refused by name.
#[test]
fn a_kustomize_overlay_renders_from_the_revision_tree() -> Result<()> {
    if !support::kustomize_available() {
        return Ok(());
    }
    let env = Env::new()?;
    let f = &env.fixture;
    let k = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n";
    let cm = |data: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  {data}\n")
    };
    let overlay = |extra: &str| {
        format!(
            "{k}namePrefix: prod-\nresources:\n- ../../base\n{extra}\
             patches:\n- path: ../../../../shared/colour.yaml\n"
        )
    };
    let sha = f
        .commit("overlay over a base")
        .write(
            "kube/web/base/kustomization.yaml",
            format!("{k}resources:\n- cm.yaml\n"),
        )
        .write("kube/web/base/cm.yaml", cm("colour: grey"))
        .write("kube/web/overlays/prod/kustomization.yaml", overlay(""))
        .write("shared/colour.yaml", cm("colour: blue"))
        .create()?;
    f.push()?;
    let src = env.source(spec(
        &f.file_url(),
        RefSelector::Branch("main".into()),
        "kube/web/overlays/prod",
    ));
    src.fetch(None)?;
    let options = reckon::render::RenderOptions {
        yaml_expanded_bytes: reckon::render::DEFAULT_YAML_EXPANDED_BYTES,
        app: "web".into(),
        secret_key: reckon::render::SecretKey::new([7; 32]),
        kustomize_timeout: std::time::Duration::from_secs(60),
        // Filled in as for the floor (v1.20), which needs it; any later release accepts it too.
        fill_port_protocol: true,
    };
    let render = |sha: &str| {
        reckon::render::render_in(
            &src.read_tree(sha).unwrap(),
            &src.tree_at(sha).unwrap(),
            &options,
        )
    };
    let set = render(&sha)?;
    assert_eq!(set.objects.len(), 1);
    assert_eq!(set.objects[0].object.name, "prod-settings");
    assert_eq!(set.objects[0].manifest["data"]["colour"], "blue");

    let escaping = f
        .commit("reach outside")
        .write(
            "kube/web/overlays/prod/kustomization.yaml",
            overlay("- ../../../../../outside\n"),
        )
        .create()?;
    f.push()?;
    src.fetch(None)?;
    let err = render(&escaping).unwrap_err().to_string();
    assert!(
        err.contains(
            "kube/web/overlays/prod/kustomization.yaml: \"../../../../../outside\" points \
             outside the repository"
        ),
        "{err}"
    );
    Ok(())
}
