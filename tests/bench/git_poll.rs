//! Benchmark of the Git source against `git fetch`, measured in the same run on the same remotes:
//! the steady-state poll (nothing new) and a fetch of one new commit, median milliseconds.
//!
//! A repository of RECKON_BENCH_COMMITS commits (default 10,000) and RECKON_BENCH_FILES files
//! (default 5,000) is generated with git fast-import and served over file://, git:// (git
//! daemon) and ssh:// (sshd, same key and pinned known_hosts for both sides). Each iteration of "one new commit" pushes a commit (untimed), then times reckon's
//! fetch (including resolving the ref and describing the new commit with its changed paths) and
//! `git fetch` into a separate bare clone configured with the same refspecs and pruning.
//! RECKON_BENCH_ITERS (default 15) iterations per cell.

use std::process::Command;
use std::time::{Duration, Instant};

use reckon::source::{Access, GitSource, RefSelector, SourceSpec, SshAccess};
use reckon_testenv::git::{Fixture, GitDaemon, SshServer};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    let n = v.len();
    let mid = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    mid.as_secs_f64() * 1000.0
}

fn git(dir: &std::path::Path, ssh: &str, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_SSH_COMMAND", ssh)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

struct Row {
    remote: String,
    op: &'static str,
    reckon: f64,
    git: f64,
}

#[test]
#[ignore = "benchmark: run explicitly (--run-ignored only); prints a table"]
fn run() {
    reckon::tls::install_crypto_provider();
    let commits = env_usize("RECKON_BENCH_COMMITS", 10_000);
    let files = env_usize("RECKON_BENCH_FILES", 5_000);
    let iters = env_usize("RECKON_BENCH_ITERS", 15).max(1);
    eprintln!("generating {commits} commits over {files} files ...");
    let f = Fixture::new().expect("fixture");
    let t = Instant::now();
    f.generate_history(commits, files).expect("history");
    f.push().expect("push");
    eprintln!("generated in {:.1}s", t.elapsed().as_secs_f64());
    let daemon = GitDaemon::start(&f.served_root()).expect("git daemon");
    let sshd = SshServer::start().expect("sshd");
    let known_hosts = sshd.known_hosts_path();

    let mut rows = Vec::new();
    let mut clones = Vec::new();
    let remotes = [
        f.file_url(),
        daemon.url(f.name()),
        sshd.url(&f.served_path()),
    ];
    for url in remotes {
        let scheme = url.split("://").next().unwrap_or("?").to_string();
        // Same ssh options for both sides (key, pinned known_hosts); unused by other schemes.
        let ssh_cmd = sshd.ssh_command(&known_hosts);
        let cache = tempfile::tempdir().expect("tmp");
        let source = GitSource::new(
            SourceSpec {
                id: "bench".into(),
                url: url.clone(),
                reference: RefSelector::Branch("main".into()),
                // One changed path in ten falls under it: the diff must still prune the rest.
                path: "f".into(),
                access: Access {
                    ssh: Some(SshAccess {
                        private_key: Some(sshd.client_key().into()),
                        known_hosts: Some(known_hosts.clone()),
                        options: Vec::new(),
                    }),
                    ..Default::default()
                },
                signatures: Default::default(),
            },
            cache.path(),
        );
        let git_clone = cache.path().join("git-fetch.git");
        let mut head = String::new();
        let reckon_clone = timed(|| head = source.fetch(None).expect("clone").head);
        let git_clone_t = timed(|| {
            git(
                cache.path(),
                &ssh_cmd,
                &[
                    "clone",
                    "--quiet",
                    "--bare",
                    &url,
                    git_clone.to_str().unwrap(),
                ],
            );
            git(
                &git_clone,
                &ssh_cmd,
                &[
                    "config",
                    "remote.origin.fetch",
                    "+refs/heads/*:refs/heads/*",
                ],
            );
            git(
                &git_clone,
                &ssh_cmd,
                &[
                    "config",
                    "--add",
                    "remote.origin.fetch",
                    "+refs/tags/*:refs/tags/*",
                ],
            );
            git(
                &git_clone,
                &ssh_cmd,
                &["config", "remote.origin.prune", "true"],
            );
        });
        clones.push((scheme.clone(), reckon_clone, git_clone_t));

        let (mut r, mut g) = (Vec::new(), Vec::new());
        for _ in 0..iters {
            r.push(timed(|| {
                let o = source.fetch(Some(&head)).expect("poll");
                assert!(o.new_commits.is_empty());
            }));
            g.push(timed(|| {
                git(&git_clone, &ssh_cmd, &["fetch", "--quiet", "origin"])
            }));
        }
        rows.push(Row {
            remote: scheme.clone(),
            op: "poll, nothing new",
            reckon: median(r),
            git: median(g),
        });

        let (mut r, mut g) = (Vec::new(), Vec::new());
        for i in 0..iters {
            let new = f
                .commit(&format!("bench {scheme} {i}"))
                .write(
                    &format!("f/{:05}.txt", i % files.max(1)),
                    format!("bench {scheme} {i}\n"),
                )
                .create()
                .expect("commit");
            f.push().expect("push");
            r.push(timed(|| {
                let o = source.fetch(Some(&head)).expect("fetch");
                assert_eq!(o.head, new);
                assert_eq!(o.new_commits.len(), 1);
                assert_eq!(o.new_commits[0].changed_paths.len(), 1);
                head = o.head;
            }));
            g.push(timed(|| {
                git(&git_clone, &ssh_cmd, &["fetch", "--quiet", "origin"])
            }));
        }
        rows.push(Row {
            remote: scheme,
            op: "fetch 1 new commit",
            reckon: median(r),
            git: median(g),
        });
    }

    println!(
        "\nGit source benchmark: {commits} commits, {files} files, {iters} iterations per cell (median ms)\n"
    );
    println!("| remote | operation          | reckon (gix) | git fetch | ratio |");
    println!("|--------|--------------------|-------------:|----------:|------:|");
    for r in &rows {
        println!(
            "| {:6} | {:18} | {:12.1} | {:9.1} | {:5.2} |",
            r.remote,
            r.op,
            r.reckon,
            r.git,
            r.reckon / r.git
        );
    }
    println!("\nInitial clone (one run, ms):");
    for (scheme, r, g) in clones {
        println!(
            "  {scheme:6} reckon {:8.1}   git clone --bare {:8.1}",
            r.as_secs_f64() * 1000.0,
            g.as_secs_f64() * 1000.0
        );
    }
}
