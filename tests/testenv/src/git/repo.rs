//! Owns Git fixtures: a served bare repository plus a work repository that authors real commits
//! (chosen people, times with offsets, messages, file changes, branches, tags, SSH/GPG signatures)
//! with the `git` CLI and pushes them to the served one.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Error, GIT_HINT, GPG_HINT, Result, SSH_HINT, io_err, require_binary, run};

/// A commit author or committer with an exact time and UTC offset, as git records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub email: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// Offset from UTC in minutes, e.g. 120 for +0200, -330 for -0530.
    pub offset_minutes: i32,
}

impl Person {
    /// A person at a fixed, recognisable time (2023-11-14T22:13:20Z, +0000).
    pub fn new(name: &str, email: &str) -> Self {
        Self {
            name: name.into(),
            email: email.into(),
            time: 1_700_000_000,
            offset_minutes: 0,
        }
    }

    pub fn at(mut self, time: i64, offset_minutes: i32) -> Self {
        self.time = time;
        self.offset_minutes = offset_minutes;
        self
    }

    /// git's internal date format: `<unix seconds> <+|-><hhmm>`.
    pub fn git_date(&self) -> String {
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let abs = self.offset_minutes.abs();
        format!("{} {}{:02}{:02}", self.time, sign, abs / 60, abs % 60)
    }
}

/// An ed25519 SSH key pair made by `ssh-keygen`, for client auth, host keys and commit signing.
#[derive(Debug, Clone)]
pub struct SshKey {
    pub private: PathBuf,
    /// The public key line, `ssh-ed25519 AAAA... comment`.
    pub public: String,
}

impl SshKey {
    pub fn generate(path: &Path, comment: &str) -> Result<Self> {
        require_binary("ssh-keygen", SSH_HINT)?;
        let _ = std::fs::remove_file(path);
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path))?;
        let pub_path = path.with_extension("pub");
        let public = std::fs::read_to_string(&pub_path).map_err(io_err(&pub_path))?;
        Ok(Self {
            private: path.into(),
            public: public.trim().to_string(),
        })
    }

    /// `type base64` without the comment, as known_hosts and allowed_signers want it.
    pub fn public_key(&self) -> String {
        self.public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One line of an OpenSSH allowed-signers file allowing this key to sign git commits as `email`.
    pub fn allowed_signers_line(&self, email: &str) -> String {
        format!("{email} namespaces=\"git\" {}\n", self.public_key())
    }
}

/// A GPG key in its own keyring (a private GNUPGHOME), for signing commits with `gpg`.
#[derive(Debug, Clone)]
pub struct GpgKey {
    pub home: PathBuf,
    pub fingerprint: String,
    /// The ASCII-armoured public key, for a verifier's keyring.
    pub public_armored: String,
    _agent: std::sync::Arc<GpgAgentGuard>,
}

/// gpg starts a `gpg-agent` daemon per GNUPGHOME on first use of a secret key; the harness stops
/// it (via gpgconf, which signals the agent's own pid) when the last copy of the key drops.
#[derive(Debug)]
struct GpgAgentGuard {
    home: PathBuf,
}

impl Drop for GpgAgentGuard {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "all"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl GpgKey {
    /// Generates an ed25519 signing key without passphrase for `name <email>` in `home`.
    pub fn generate(home: &Path, name: &str, email: &str) -> Result<Self> {
        require_binary("gpg", GPG_HINT)?;
        // Stops the agent if generating fails half-way; on success it moves into the key, so the
        // agent lives as long as the key (dropping it here killed the agent the first signature
        // was about to use).
        let agent = GpgAgentGuard { home: home.into() };
        std::fs::create_dir_all(home).map_err(io_err(home))?;
        set_mode_700(home)?;
        let gpg = |args: &[&str]| {
            let mut c = Command::new("gpg");
            c.env("GNUPGHOME", home)
                .args(["--batch", "--quiet"])
                .args(args);
            c
        };
        let uid = format!("{name} <{email}>");
        run(&mut gpg(&[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-generate-key",
            &uid,
            "ed25519",
            "sign",
            "never",
        ]))?;
        let listing = run(&mut gpg(&["--with-colons", "--list-secret-keys", email]))?;
        let listing = String::from_utf8_lossy(&listing);
        let fingerprint = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .map(str::to_string)
            .ok_or_else(|| Error::UnexpectedOutput {
                command: "gpg --list-secret-keys".into(),
                detail: format!("no fingerprint in: {listing}"),
            })?;
        let public = run(&mut gpg(&["--armor", "--export", &fingerprint]))?;
        Ok(Self {
            home: home.into(),
            fingerprint,
            public_armored: String::from_utf8_lossy(&public).into_owned(),
            _agent: std::sync::Arc::new(agent),
        })
    }
}

fn set_mode_700(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io_err(path))
}

/// A served bare repository (`<root>/srv/<name>`) and a work repository (`<root>/work`) whose
/// `origin` is the served one. Commits are authored in `work` and pushed.
#[derive(Debug)]
pub struct Fixture {
    root: tempfile::TempDir,
    name: String,
}

impl Fixture {
    /// An empty served repository `repo.git` whose default branch is `main`.
    pub fn new() -> Result<Self> {
        Self::named("repo.git")
    }

    pub fn named(name: &str) -> Result<Self> {
        require_binary("git", GIT_HINT)?;
        let root = tempfile::Builder::new()
            .prefix("reckon-git-")
            .tempdir()
            .map_err(io_err(std::env::temp_dir()))?;
        let fixture = Self {
            root,
            name: name.into(),
        };
        let served = fixture.served_path();
        std::fs::create_dir_all(&served).map_err(io_err(&served))?;
        git_in(
            &served,
            ["init", "--bare", "--quiet", "--initial-branch=main"],
        )?;
        // http-backend serves only repositories that say so (or with GIT_HTTP_EXPORT_ALL).
        std::fs::write(served.join("git-daemon-export-ok"), b"").map_err(io_err(&served))?;
        let work = fixture.work_path();
        std::fs::create_dir_all(&work).map_err(io_err(&work))?;
        git_in(&work, ["init", "--quiet", "--initial-branch=main"])?;
        git_in(
            &work,
            [
                OsStr::new("remote"),
                "add".as_ref(),
                "origin".as_ref(),
                served.as_os_str(),
            ],
        )?;
        Ok(fixture)
    }

    /// The temporary directory holding everything; deleted on drop.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The directory that contains the served repository (a server's base path / project root).
    pub fn served_root(&self) -> PathBuf {
        self.root.path().join("srv")
    }

    /// The served repository's name under [`Self::served_root`], e.g. `repo.git`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn served_path(&self) -> PathBuf {
        self.served_root().join(&self.name)
    }

    pub fn work_path(&self) -> PathBuf {
        self.root.path().join("work")
    }

    /// `file://` URL of the served repository.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.served_path().display())
    }

    /// Runs git in the work repository and returns trimmed stdout.
    pub fn git<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        git_in(&self.work_path(), args)
    }

    /// Runs git in the served (bare) repository and returns trimmed stdout.
    pub fn served_git<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        git_in(&self.served_path(), args)
    }

    /// The full SHA `rev` names in the served repository.
    pub fn served_rev(&self, rev: &str) -> Result<String> {
        self.served_git(["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
    }

    pub fn rev(&self, rev: &str) -> Result<String> {
        self.git(["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
    }

    /// Starts a commit on the work repository's current branch.
    pub fn commit(&self, message: &str) -> CommitBuilder<'_> {
        CommitBuilder {
            fixture: self,
            message: message.into(),
            author: Person::new("Ada Author", "ada@example.com"),
            committer: None,
            writes: Vec::new(),
            removes: Vec::new(),
            sign: Sign::None,
        }
    }

    /// Creates `branch` at the current HEAD and switches to it.
    pub fn checkout_new_branch(&self, branch: &str) -> Result<()> {
        self.git(["checkout", "--quiet", "-b", branch]).map(drop)
    }

    pub fn checkout(&self, branch: &str) -> Result<()> {
        self.git(["checkout", "--quiet", branch]).map(drop)
    }

    /// Moves the current branch to `rev`, discarding later commits (to rewrite history).
    pub fn reset_hard(&self, rev: &str) -> Result<()> {
        self.git(["reset", "--quiet", "--hard", rev]).map(drop)
    }

    /// A lightweight tag at `rev`.
    pub fn tag(&self, name: &str, rev: &str) -> Result<()> {
        self.git(["tag", name, rev]).map(drop)
    }

    /// An annotated tag at `rev`, made by `tagger`.
    pub fn annotated_tag(
        &self,
        name: &str,
        rev: &str,
        message: &str,
        tagger: &Person,
    ) -> Result<()> {
        let mut cmd = git_command(&self.work_path());
        cmd.env("GIT_COMMITTER_NAME", &tagger.name)
            .env("GIT_COMMITTER_EMAIL", &tagger.email)
            .env("GIT_COMMITTER_DATE", tagger.git_date())
            .args(["tag", "-a", name, rev, "-m", message]);
        run(&mut cmd).map(drop)
    }

    /// Pushes all branches and tags to the served repository, forcing (so rewritten history and
    /// moved tags arrive as they are in `work`).
    pub fn push(&self) -> Result<()> {
        self.git([
            "push",
            "--quiet",
            "origin",
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ])
        .map(drop)
    }

    /// Deletes `branch` on the served repository only.
    pub fn delete_served_branch(&self, branch: &str) -> Result<()> {
        self.git([
            "push",
            "--quiet",
            "origin",
            &format!(":refs/heads/{branch}"),
        ])
        .map(drop)
    }

    /// Points the served repository's HEAD (its default branch) at `branch`.
    pub fn set_served_default_branch(&self, branch: &str) -> Result<()> {
        self.served_git(["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")])
            .map(drop)
    }

    /// Appends `commits` commits touching `files` distinct files (`f/NNNNN.txt`, one changed per
    /// commit, all created in the first) to the current branch in one `git fast-import` run: the
    /// only way to build a 10,000-commit history in seconds. Commit times advance by one minute.
    pub fn generate_history(&self, commits: usize, files: usize) -> Result<String> {
        let branch = self.git(["symbolic-ref", "--short", "HEAD"])?;
        let parent = self.rev("HEAD").ok();
        let mut stream = Vec::with_capacity(commits * 200 + files * 60);
        let base = 1_600_000_000i64;
        for i in 0..commits {
            let t = base + 60 * i as i64;
            writeln!(stream, "commit refs/heads/{branch}").unwrap();
            writeln!(stream, "mark :{}", i + 1).unwrap();
            writeln!(stream, "author Gen Erator <gen@example.com> {t} +0100").unwrap();
            writeln!(stream, "committer Gen Erator <gen@example.com> {t} +0100").unwrap();
            let msg = format!("generated commit {i}\n");
            writeln!(stream, "data {}\n{msg}", msg.len()).unwrap();
            if i == 0 {
                if let Some(p) = &parent {
                    writeln!(stream, "from {p}").unwrap();
                }
                for f in 0..files {
                    let body = format!("file {f} version 0\n");
                    writeln!(
                        stream,
                        "M 100644 inline f/{f:05}.txt\ndata {}\n{body}",
                        body.len()
                    )
                    .unwrap();
                }
            } else {
                let f = i % files.max(1);
                let body = format!("file {f} version {i}\n");
                writeln!(
                    stream,
                    "M 100644 inline f/{f:05}.txt\ndata {}\n{body}",
                    body.len()
                )
                .unwrap();
            }
            writeln!(stream).unwrap();
        }
        let mut cmd = git_command(&self.work_path());
        cmd.args(["fast-import", "--quiet", "--force"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let command = format!("{cmd:?}");
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(&stream)
            .map_err(io_err("git fast-import stdin"))?;
        let out = child
            .wait_with_output()
            .map_err(io_err("git fast-import"))?;
        if !out.status.success() {
            return Err(Error::CommandFailed {
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        // fast-import updates the ref but not the index or work tree.
        self.git(["reset", "--quiet", "--hard"])?;
        self.rev("HEAD")
    }
}

enum Sign<'a> {
    None,
    Ssh(&'a SshKey),
    Gpg(&'a GpgKey),
}

/// A commit being described; [`CommitBuilder::create`] writes the files and commits.
pub struct CommitBuilder<'a> {
    fixture: &'a Fixture,
    message: String,
    author: Person,
    committer: Option<Person>,
    writes: Vec<(String, Vec<u8>)>,
    removes: Vec<String>,
    sign: Sign<'a>,
}

impl<'a> CommitBuilder<'a> {
    pub fn author(mut self, author: Person) -> Self {
        self.author = author;
        self
    }

    /// Defaults to the author.
    pub fn committer(mut self, committer: Person) -> Self {
        self.committer = Some(committer);
        self
    }

    /// Adds or changes a file (parents created as needed).
    pub fn write(mut self, path: &str, contents: impl AsRef<[u8]>) -> Self {
        self.writes.push((path.into(), contents.as_ref().to_vec()));
        self
    }

    pub fn remove(mut self, path: &str) -> Self {
        self.removes.push(path.into());
        self
    }

    pub fn sign_ssh(mut self, key: &'a SshKey) -> Self {
        self.sign = Sign::Ssh(key);
        self
    }

    pub fn sign_gpg(mut self, key: &'a GpgKey) -> Self {
        self.sign = Sign::Gpg(key);
        self
    }

    /// Writes the changes, commits (allowing an empty commit) and returns the new commit's SHA.
    pub fn create(self) -> Result<String> {
        let work = self.fixture.work_path();
        for (path, contents) in &self.writes {
            let full = work.join(path);
            if let Some(dir) = full.parent() {
                std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            }
            std::fs::write(&full, contents).map_err(io_err(&full))?;
            git_in(&work, ["add", "--", path])?;
        }
        for path in &self.removes {
            git_in(&work, ["rm", "--quiet", "--", path])?;
        }
        let committer = self.committer.as_ref().unwrap_or(&self.author);
        let mut cmd = git_command(&work);
        cmd.env("GIT_AUTHOR_NAME", &self.author.name)
            .env("GIT_AUTHOR_EMAIL", &self.author.email)
            .env("GIT_AUTHOR_DATE", self.author.git_date())
            .env("GIT_COMMITTER_NAME", &committer.name)
            .env("GIT_COMMITTER_EMAIL", &committer.email)
            .env("GIT_COMMITTER_DATE", committer.git_date());
        match self.sign {
            Sign::None => {}
            Sign::Ssh(key) => {
                cmd.arg("-c")
                    .arg("gpg.format=ssh")
                    .arg("-c")
                    .arg(format!("user.signingkey={}", key.private.display()));
            }
            Sign::Gpg(key) => {
                cmd.env("GNUPGHOME", &key.home)
                    .arg("-c")
                    .arg("gpg.format=openpgp")
                    .arg("-c")
                    .arg(format!("user.signingkey={}", key.fingerprint));
            }
        }
        // --cleanup=verbatim keeps the message byte for byte, so tests can compare it exactly.
        cmd.args([
            "commit",
            "--quiet",
            "--allow-empty",
            "--cleanup=verbatim",
            "-m",
            &self.message,
        ]);
        if !matches!(self.sign, Sign::None) {
            cmd.arg("-S");
        }
        run(&mut cmd)?;
        self.fixture.rev("HEAD")
    }
}

/// A git command isolated from the machine's and user's configuration, so fixtures come out the
/// same everywhere (no global hooks, signing defaults, or templates).
pub fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "user.name=Fixture",
            "-c",
            "user.email=fixture@example.com",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ]);
    cmd
}

fn git_in<I, S>(dir: &Path, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = git_command(dir);
    cmd.args(args);
    let out = run(&mut cmd)?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}
