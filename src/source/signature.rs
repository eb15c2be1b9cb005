//! Owns commit signature verification per source (policy `off | record | require`): SSH signatures
//! against an OpenSSH allowed-signers file (`ssh-keygen -Y`), GPG signatures against configured
//! public keys (`gpg` with a private, throwaway keyring), as git itself verifies them.
//!
//! The signed payload and signature are extracted with gix; only the cryptography is delegated to
//! the same programs git uses, so a commit verifies here exactly when `git verify-commit` agrees.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use gix::bstr::ByteSlice;

/// What the source does with signatures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignatureMode {
    /// Not checked at all.
    #[default]
    Off,
    /// Checked and recorded on each commit; never blocks a deploy.
    Record,
    /// Checked and recorded; a head that is not [`SignatureStatus::Verified`] is not deployed.
    Require,
}

#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    pub mode: SignatureMode,
    /// OpenSSH allowed-signers file (`principal namespaces="git" key`), as `gpg.ssh.allowedSignersFile`.
    pub ssh_allowed_signers: Option<PathBuf>,
    /// ASCII-armoured or binary OpenPGP public keys whose signatures count.
    pub gpg_public_keys: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignatureFormat {
    Ssh,
    Gpg,
    /// X.509 (gpgsm) or anything else reckon does not verify.
    Other,
    /// A cosign signature of an OCI chart (appended last: the variant index is stored).
    Cosign,
}

/// The result recorded on each commit event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignatureStatus {
    /// Policy `off`.
    NotChecked,
    Unsigned,
    /// A good signature by an allowed key; `signer` is the allowed-signers principal or the GPG user
    /// id, `key` the key's fingerprint.
    Verified {
        format: SignatureFormat,
        signer: String,
        key: String,
    },
    /// A signature by a key that is not allowed (or no keys are configured for its format).
    Untrusted {
        format: SignatureFormat,
        detail: String,
    },
    /// A signature that does not verify (tampered commit, wrong key, expired key, unsupported format).
    Invalid {
        format: SignatureFormat,
        detail: String,
    },
}

/// Verifies commits under one policy; holds the GPG keyring built on first use.
pub(crate) struct Verifier<'a> {
    policy: &'a super::SignaturePolicy,
    gpg_home: OnceLock<Result<tempfile::TempDir, String>>,
}

impl<'a> Verifier<'a> {
    pub(crate) fn new(policy: &'a SignaturePolicy) -> Self {
        Self {
            policy,
            gpg_home: OnceLock::new(),
        }
    }

    /// The status of the commit whose raw object bytes are `data`.
    pub(crate) fn verify(&self, data: &[u8], id: gix::ObjectId) -> SignatureStatus {
        if self.policy.mode == SignatureMode::Off {
            return SignatureStatus::NotChecked;
        }
        let extracted = match gix::objs::CommitRefIter::signature(data, id.kind()) {
            Ok(Some((sig, signed))) => (sig.to_vec(), signed.to_bstring().to_vec()),
            Ok(None) => return SignatureStatus::Unsigned,
            Err(e) => {
                return SignatureStatus::Invalid {
                    format: SignatureFormat::Other,
                    detail: format!("unparsable signature: {e}"),
                };
            }
        };
        let (sig, payload) = extracted;
        if sig.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
            self.verify_ssh(&sig, &payload)
        } else if sig.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
            self.verify_gpg(&sig, &payload)
        } else {
            SignatureStatus::Invalid {
                format: SignatureFormat::Other,
                detail: "unsupported signature format (only SSH and OpenPGP are verified)".into(),
            }
        }
    }

    fn verify_ssh(&self, sig: &[u8], payload: &[u8]) -> SignatureStatus {
        let format = SignatureFormat::Ssh;
        let Some(allowed) = &self.policy.ssh_allowed_signers else {
            return SignatureStatus::Untrusted {
                format,
                detail: "no SSH allowed-signers file configured".into(),
            };
        };
        let fail = |detail: String| SignatureStatus::Invalid { format, detail };
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => return fail(format!("temporary file: {e}")),
        };
        let sig_path = dir.path().join("sig");
        if let Err(e) = std::fs::write(&sig_path, sig) {
            return fail(format!("temporary file: {e}"));
        }
        // Which allowed principals hold the signing key? None: the key is not allowed, and
        // check-novalidate tells an untrusted-but-valid signature from a broken one.
        let principals = run(
            Command::new("ssh-keygen")
                .args(["-Y", "find-principals", "-s"])
                .arg(&sig_path)
                .arg("-f")
                .arg(allowed),
            None,
        );
        let principal = match principals {
            Ok(out) if out.status.success() => out
                .stdout
                .lines()
                .next()
                .map(|l| l.to_str_lossy().trim().to_string()),
            Ok(_) => None,
            Err(e) => return fail(e),
        };
        let Some(principal) = principal.filter(|p| !p.is_empty()) else {
            let check = run(
                Command::new("ssh-keygen")
                    .args(["-Y", "check-novalidate", "-n", "git", "-s"])
                    .arg(&sig_path),
                Some(payload),
            );
            return match check {
                Ok(out) if out.status.success() => SignatureStatus::Untrusted {
                    format,
                    detail: "signed by a key that is not in the allowed signers".into(),
                },
                Ok(out) => fail(output_text(&out)),
                Err(e) => fail(e),
            };
        };
        let verified = run(
            Command::new("ssh-keygen")
                .args(["-Y", "verify", "-n", "git", "-f"])
                .arg(allowed)
                .arg("-I")
                .arg(&principal)
                .arg("-s")
                .arg(&sig_path),
            Some(payload),
        );
        match verified {
            Ok(out) if out.status.success() => {
                // "Good "git" signature for P with ED25519 key SHA256:..."
                let text = output_text(&out);
                let key = text
                    .split_whitespace()
                    .find(|w| w.starts_with("SHA256:"))
                    .unwrap_or_default()
                    .to_string();
                SignatureStatus::Verified {
                    format,
                    signer: principal,
                    key,
                }
            }
            Ok(out) => fail(output_text(&out)),
            Err(e) => fail(e),
        }
    }

    fn gpg_home(&self) -> Result<&std::path::Path, String> {
        let home = self.gpg_home.get_or_init(|| {
            let home = tempfile::Builder::new()
                .prefix("reckon-gpg-")
                .tempdir()
                .map_err(|e| format!("keyring directory: {e}"))?;
            for key in &self.policy.gpg_public_keys {
                let out = run(gpg(home.path()).arg("--import").arg(key), None)?;
                if !out.status.success() {
                    return Err(format!(
                        "importing {}: {}",
                        key.display(),
                        output_text(&out)
                    ));
                }
            }
            Ok(home)
        });
        home.as_ref().map(|h| h.path()).map_err(Clone::clone)
    }

    fn verify_gpg(&self, sig: &[u8], payload: &[u8]) -> SignatureStatus {
        let format = SignatureFormat::Gpg;
        if self.policy.gpg_public_keys.is_empty() {
            return SignatureStatus::Untrusted {
                format,
                detail: "no GPG public keys configured".into(),
            };
        }
        let fail = |detail: String| SignatureStatus::Invalid { format, detail };
        let home = match self.gpg_home() {
            Ok(h) => h,
            Err(e) => return fail(e),
        };
        let sig_path = home.join("commit.sig");
        if let Err(e) = std::fs::write(&sig_path, sig) {
            return fail(format!("temporary file: {e}"));
        }
        let out = match run(
            gpg(home)
                .args(["--status-fd", "1", "--verify"])
                .arg(&sig_path)
                .arg("-"),
            Some(payload),
        ) {
            Ok(o) => o,
            Err(e) => return fail(e),
        };
        let status = String::from_utf8_lossy(&out.stdout);
        let field = |tag: &str| {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix("[GNUPG:] ")
                        .and_then(|l| l.strip_prefix(tag))
                })
                .map(|rest| rest.trim().to_string())
        };
        if let (Some(good), Some(valid)) = (field("GOODSIG "), field("VALIDSIG ")) {
            let signer = good
                .split_once(' ')
                .map(|(_, uid)| uid.to_string())
                .unwrap_or(good);
            let key = valid
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            return SignatureStatus::Verified {
                format,
                signer,
                key,
            };
        }
        if let Some(keyid) = field("NO_PUBKEY ") {
            return SignatureStatus::Untrusted {
                format,
                detail: format!("signed by key {keyid}, which is not among the configured keys"),
            };
        }
        for tag in ["BADSIG ", "EXPKEYSIG ", "REVKEYSIG ", "EXPSIG ", "ERRSIG "] {
            if let Some(rest) = field(tag) {
                return fail(format!("{}{rest}", tag.trim_end().to_lowercase() + " "));
            }
        }
        fail(output_text(&out))
    }
}

/// Under `require`, why the head must not be deployed; None when it may be.
pub(crate) fn block_reason(
    policy: &SignaturePolicy,
    head_status: &SignatureStatus,
) -> Option<String> {
    if policy.mode != SignatureMode::Require {
        return None;
    }
    match head_status {
        SignatureStatus::Verified { .. } => None,
        SignatureStatus::Unsigned => Some("the commit is not signed".into()),
        SignatureStatus::NotChecked => Some("the signature was not checked".into()),
        SignatureStatus::Untrusted { detail, .. } => Some(format!("untrusted signature: {detail}")),
        SignatureStatus::Invalid { detail, .. } => Some(format!("invalid signature: {detail}")),
    }
}

fn gpg(home: &std::path::Path) -> Command {
    let mut cmd = Command::new("gpg");
    // --no-autostart: verification needs no agent, and reckon must not leave daemons behind.
    cmd.arg("--homedir").arg(home).args([
        "--batch",
        "--no-tty",
        "--no-autostart",
        "--trust-model",
        "always",
    ]);
    cmd
}

fn output_text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !s.is_empty() {
            s.push_str("; ");
        }
        s.push_str(err.trim());
    }
    s
}

/// Runs `cmd`, feeding `stdin` from a thread so a large payload cannot deadlock on full pipes.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output, String> {
    let name = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "running {name}: {e} (is it installed? ssh-keygen is in openssh-client, gpg in gpg)"
            )
        })?;
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("piped");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {name}: {e}"))?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(out)
}
