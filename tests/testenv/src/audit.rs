//! Owns the opt-in audit wiring of the test control plane (`reckon-testenv run --audit`): the
//! API server sends the audit events of *people's* writes to a receiver slot on a loopback port,
//! and everything a test needs to fill that slot with a reckon agent — and to act as one of those
//! people — is written into one directory, [`AuditDir`], whose path the command run gets as
//! [`AUDIT_DIR_ENV`].
//!
//! Who counts as a person: the token users [`PEOPLE`], added to the API server's static token
//! file. Every other client of the shared control plane — the tests, the agents they start, the
//! controller manager, KWOK — uses the admin token (group `system:masters`), and the policy sends
//! nothing for that group, so the webhook stays silent for every test that does not ask for it:
//! the run behaves as it does without `--audit` until someone writes as a person.
//!
//! The files in the directory:
//!
//! | file | for |
//! |---|---|
//! | `listen` | `reckon run --audit-listen` (`127.0.0.1:PORT`, the address the webhook posts to) |
//! | `tls.crt`, `tls.key` | `--audit-tls-cert`, `--audit-tls-key` (a serving certificate for 127.0.0.1) |
//! | `tokens` | `--audit-token-file` (the token the webhook kubeconfig carries) |
//! | `ca.pem` | the CA that signed `tls.crt` (the webhook trusts only it) |
//! | `policy.yaml`, `webhook.yaml` | what kube-apiserver was started with |
//! | `PERSON.kubeconfig` | a kubeconfig that acts as that person (no RBAC rights: grant what the test needs) |

use crate::control_plane::{AuditWebhook, ControlPlaneError, kubeconfig_yaml};
use crate::git::TestCa;
use std::path::{Path, PathBuf};

/// Set by `reckon-testenv run --audit` for the command it runs: the [`AuditDir`].
pub const AUDIT_DIR_ENV: &str = "RECKON_TEST_AUDIT_DIR";

/// The token users who stand for people: their writes are the ones the API server audits.
pub const PEOPLE: &[&str] = &["alice", "bob"];

/// The shipped policy (`deploy/audit/policy.yaml`): what the webhook sends is what users get.
const SHIPPED_POLICY: &str = include_str!("../../../deploy/audit/policy.yaml");

/// The shipped webhook kubeconfig template, with its three `${...}` placeholders.
const WEBHOOK_TEMPLATE: &str = include_str!("../../../deploy/audit/webhook-kubeconfig.yaml");

/// The shipped policy with one rule in front: nothing for the admin token's group, which every
/// test, agent and controller of the shared control plane uses. Policy rules match the
/// authenticated user (before impersonation), so an admin impersonating someone is not sent
/// either: a person here is a token user of [`PEOPLE`].
pub fn people_only_policy() -> String {
    SHIPPED_POLICY.replacen(
        "\nrules:\n",
        "\nrules:\n  # reckon-testenv: the admin token (tests, agents, controllers) is not a person.\n  \
         - level: None\n    userGroups: [\"system:masters\"]\n",
        1,
    )
}

/// The directory described in the module documentation, prepared before the API server starts.
#[derive(Debug)]
pub struct AuditDir {
    dir: PathBuf,
    /// `TOKEN,NAME,UID` lines for the API server's token file, one per person.
    token_lines: Vec<String>,
    people: Vec<(String, String)>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ControlPlaneError + '_ {
    move |source| ControlPlaneError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: PathBuf, contents: impl AsRef<[u8]>) -> Result<(), ControlPlaneError> {
    std::fs::write(&path, contents).map_err(io_err(&path))
}

impl AuditDir {
    /// Writes everything but the people's kubeconfigs (they need the API server's address and
    /// CA: [`AuditDir::write_kubeconfigs`]) into `dir`, with a receiver port free now and fresh
    /// tokens. The port is only reserved by convention: a test that binds port 0 could in
    /// principle be given it before the receiver binds it.
    pub fn prepare(
        dir: &Path,
        token: impl Fn() -> String,
    ) -> Result<(AuditDir, AuditWebhook), ControlPlaneError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ca = TestCa::generate().map_err(|e| ControlPlaneError::AuditCa(e.to_string()))?;
        let (cert, key) = ca
            .server_pem_files()
            .map_err(|e| ControlPlaneError::AuditCa(e.to_string()))?;
        for (from, to) in [
            (cert, "tls.crt"),
            (key, "tls.key"),
            (ca.bundle_path(), "ca.pem"),
        ] {
            let to = dir.join(to);
            std::fs::copy(&from, &to).map_err(io_err(&to))?;
        }
        let port = crate::ports::free_ports(1)?[0];
        write(dir.join("listen"), format!("127.0.0.1:{port}\n"))?;
        let webhook_token = token();
        write(dir.join("tokens"), format!("apiserver {webhook_token}\n"))?;
        write(dir.join("policy.yaml"), people_only_policy())?;
        let webhook = WEBHOOK_TEMPLATE
            .replace(
                "${RECKON_AUDIT_URL}",
                &format!("https://127.0.0.1:{port}/audit/v1/events"),
            )
            .replace(
                "${RECKON_AUDIT_CA}",
                &dir.join("ca.pem").display().to_string(),
            )
            .replace("${RECKON_AUDIT_TOKEN}", &webhook_token);
        write(dir.join("webhook.yaml"), webhook)?;
        let people: Vec<(String, String)> =
            PEOPLE.iter().map(|p| (p.to_string(), token())).collect();
        let token_lines = people
            .iter()
            .zip(3001..)
            .map(|((name, t), uid)| format!("{t},{name},{uid}"))
            .collect();
        let hook = AuditWebhook {
            policy: dir.join("policy.yaml"),
            kubeconfig: dir.join("webhook.yaml"),
        };
        Ok((
            AuditDir {
                dir: dir.to_path_buf(),
                token_lines,
                people,
            },
            hook,
        ))
    }

    /// The people's lines for the API server's static token file.
    pub fn token_lines(&self) -> &[String] {
        &self.token_lines
    }

    /// Writes `PERSON.kubeconfig` for each person, once the API server's address and CA exist.
    pub fn write_kubeconfigs(&self, server: &str, ca: &Path) -> Result<(), ControlPlaneError> {
        for (name, token) in &self.people {
            write(
                self.dir.join(format!("{name}.kubeconfig")),
                kubeconfig_yaml(server, token, ca),
            )?;
        }
        Ok(())
    }

    /// The directory (the value of [`AUDIT_DIR_ENV`]).
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_the_shipped_one_with_the_admin_group_left_out_first() {
        let p = people_only_policy();
        assert_ne!(p, SHIPPED_POLICY, "the rule was inserted");
        let rules = p.find("\nrules:\n").unwrap();
        let admin = p.find("userGroups: [\"system:masters\"]").unwrap();
        let first_shipped = p
            .find("users: [\"system:serviceaccount:reckon:reckon\"]")
            .unwrap();
        assert!(rules < admin && admin < first_shipped, "{p}");
        // Everything the shipped policy says is still there.
        assert!(p.contains(SHIPPED_POLICY.split("\nrules:\n").nth(1).unwrap()));
    }

    #[test]
    fn the_directory_holds_what_an_agent_and_a_person_need() {
        let d = tempfile::tempdir().unwrap();
        let n = std::cell::Cell::new(0);
        let token = || {
            n.set(n.get() + 1);
            format!("t{}", n.get())
        };
        let (audit, hook) = AuditDir::prepare(d.path(), token).unwrap();
        let listen = std::fs::read_to_string(d.path().join("listen")).unwrap();
        let addr: std::net::SocketAddr = listen.trim().parse().unwrap();
        let webhook = std::fs::read_to_string(&hook.kubeconfig).unwrap();
        assert!(
            webhook.contains(&format!("server: https://{addr}/audit/v1/events")),
            "{webhook}"
        );
        assert!(
            webhook.contains("token: t1") && !webhook.contains("${RECKON_"),
            "{webhook}"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("tokens")).unwrap(),
            "apiserver t1\n"
        );
        assert_eq!(audit.token_lines(), ["t2,alice,3001", "t3,bob,3002"]);
        for f in ["tls.crt", "tls.key", "ca.pem", "policy.yaml"] {
            assert!(d.path().join(f).is_file(), "{f}");
        }
        audit
            .write_kubeconfigs("https://127.0.0.1:1", Path::new("/ca"))
            .unwrap();
        let alice = std::fs::read_to_string(d.path().join("alice.kubeconfig")).unwrap();
        assert!(alice.contains("token: t2"), "{alice}");
    }
}
