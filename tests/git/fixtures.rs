//! Checks the Git fixture builders against git itself: people, times and offsets, messages, file
//! changes, tags, and SSH/GPG signatures that `git verify-commit` accepts.

use anyhow::Result;
use reckon_testenv::git::{Fixture, GpgKey, Person, SshKey};

#[test]
fn commits_carry_the_chosen_people_times_and_message() -> Result<()> {
    let f = Fixture::new()?;
    let author = Person::new("Ana Müller", "ana@example.org").at(1_650_000_000, 120);
    let committer = Person::new("Cy Commit", "cy@example.org").at(1_650_000_100, -330);
    let sha = f
        .commit("subject line\n\nbody line\n")
        .author(author)
        .committer(committer)
        .write("a/b.txt", "one\n")
        .create()?;
    let raw = f.git(["cat-file", "commit", &sha])?;
    assert!(
        raw.contains("\nauthor Ana Müller <ana@example.org> 1650000000 +0200\n"),
        "{raw}"
    );
    assert!(
        raw.contains("\ncommitter Cy Commit <cy@example.org> 1650000100 -0530\n"),
        "{raw}"
    );
    assert!(raw.ends_with("subject line\n\nbody line"), "{raw}");

    let second = f
        .commit("remove")
        .remove("a/b.txt")
        .write("c.txt", "c")
        .create()?;
    let changed = f.git([
        "diff-tree",
        "--no-commit-id",
        "--name-status",
        "-r",
        &second,
    ])?;
    assert_eq!(changed, "D\ta/b.txt\nA\tc.txt");
    f.tag("v1.0.0", &sha)?;
    f.annotated_tag(
        "v1.1.0",
        &second,
        "release",
        &Person::new("T", "t@example.org"),
    )?;
    f.push()?;
    assert_eq!(f.served_rev("v1.0.0")?, sha);
    assert_eq!(f.served_rev("v1.1.0")?, second);
    Ok(())
}

#[test]
fn ssh_signed_commits_verify_against_allowed_signers() -> Result<()> {
    let f = Fixture::new()?;
    let key = SshKey::generate(&f.root().join("signer"), "signer")?;
    let other = SshKey::generate(&f.root().join("other"), "other")?;
    let sha = f
        .commit("signed")
        .author(Person::new("Sig Ner", "signer@example.com"))
        .sign_ssh(&key)
        .create()?;
    let allowed = f.root().join("allowed_signers");
    std::fs::write(&allowed, key.allowed_signers_line("signer@example.com"))?;
    let verify = |allowed: &std::path::Path| {
        f.git([
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
            "verify-commit",
            &sha,
        ])
    };
    verify(&allowed)?;
    std::fs::write(&allowed, other.allowed_signers_line("signer@example.com"))?;
    assert!(
        verify(&allowed).is_err(),
        "a key not in allowed_signers must not verify"
    );
    Ok(())
}

/// The key's gpg-agent must still be running when `generate` returns: a guard dropped at its end
/// used to kill it, so the first signature raced the dying agent ("gpg failed to sign the
/// data", seen once in a full run on a loaded machine).
#[test]
fn a_generated_gpg_key_keeps_its_agent_until_the_key_is_dropped() -> Result<()> {
    let f = Fixture::new()?;
    let key = GpgKey::generate(&f.root().join("gnupg"), "Gee Pee", "gpg@example.com")?;
    let agent_alive = |home: &std::path::Path| {
        // Without an agent this still exits 0 ("no gpg-agent running"): only a running agent
        // answers its pid.
        std::process::Command::new("gpg-connect-agent")
            .env("GNUPGHOME", home)
            .args(["--no-autostart", "GETINFO pid", "/bye"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with("D "))
            })
            .unwrap_or(false)
    };
    // gpgconf's kill is asynchronous: a killed agent still answers for a moment, which is the
    // race. Give a kill time to land before asking.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(agent_alive(&key.home), "the agent was stopped by generate");
    let home = key.home.clone();
    drop(key);
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !agent_alive(&home)
    });
    assert!(gone, "the agent outlived the key by 10 s");
    Ok(())
}

#[test]
fn gpg_signed_commits_verify() -> Result<()> {
    let f = Fixture::new()?;
    let key = GpgKey::generate(&f.root().join("gnupg"), "Gee Pee", "gpg@example.com")?;
    let sha = f.commit("gpg signed").sign_gpg(&key).create()?;
    let raw = f.git(["cat-file", "commit", &sha])?;
    assert!(raw.contains("-----BEGIN PGP SIGNATURE-----"), "{raw}");
    let out = std::process::Command::new("git")
        .current_dir(f.work_path())
        .env("GNUPGHOME", &key.home)
        .args(["verify-commit", &sha])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn generated_history_has_the_requested_shape() -> Result<()> {
    let f = Fixture::new()?;
    let head = f.generate_history(50, 20)?;
    f.push()?;
    assert_eq!(f.served_rev("main")?, head);
    assert_eq!(f.git(["rev-list", "--count", "HEAD"])?, "50");
    assert_eq!(f.git(["ls-files"])?.lines().count(), 20);
    Ok(())
}

fn alive(pid: u32) -> bool {
    // A killed-and-reaped process has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn servers_are_stopped_by_pid_on_drop_and_on_panic() -> Result<()> {
    let f = Fixture::new()?;
    let daemon = reckon_testenv::git::GitDaemon::start(&f.served_root())?;
    let sshd = reckon_testenv::git::SshServer::start()?;
    let (dpid, spid) = (daemon.pid(), sshd.pid());
    assert!(alive(dpid) && alive(spid));
    drop(daemon);
    drop(sshd);
    assert!(!alive(dpid), "git daemon {dpid} still running");
    assert!(!alive(spid), "sshd {spid} still running");

    let root = f.served_root();
    let pid = std::sync::Mutex::new(0);
    let panicked = std::panic::catch_unwind(|| {
        let daemon = reckon_testenv::git::GitDaemon::start(&root).unwrap();
        *pid.lock().unwrap() = daemon.pid();
        panic!("test failure while a server runs");
    });
    assert!(panicked.is_err());
    let pid = *pid.lock().unwrap();
    assert!(pid != 0 && !alive(pid), "git daemon {pid} survived a panic");
    Ok(())
}
