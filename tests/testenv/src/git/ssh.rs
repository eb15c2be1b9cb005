//! Owns an OpenSSH server (`sshd`) on a loopback port serving Git over `ssh://` as the current user,
//! with a generated host key, key-only auth, a client key and a pinned known_hosts file.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{ProcessGuard, start_on_free_port};
use super::repo::SshKey;
use super::{Result, SSH_HINT, SSHD_HINT, io_err, require_binary, run};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd; killed (with its per-connection children) on drop.
#[derive(Debug)]
pub struct SshServer {
    port: u16,
    user: String,
    dir: tempfile::TempDir,
    host_key: SshKey,
    client_key: SshKey,
    process: ProcessGuard,
}

impl SshServer {
    /// Starts sshd accepting only `client_key` (generated here) for the current user.
    pub fn start() -> Result<Self> {
        require_binary(SSHD, SSHD_HINT)?;
        require_binary("ssh", SSH_HINT)?;
        // sshd refuses to start without its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(io_err("/run/sshd"))?;
        let dir = tempfile::Builder::new()
            .prefix("reckon-sshd-")
            .tempdir()
            .map_err(io_err(std::env::temp_dir()))?;
        let d = dir.path();
        let host_key = SshKey::generate(&d.join("ssh_host_ed25519_key"), "reckon-test-host")?;
        let client_key = SshKey::generate(&d.join("client_ed25519"), "reckon-test-client")?;
        let authorized = d.join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", client_key.public))
            .map_err(io_err(&authorized))?;
        let user = String::from_utf8_lossy(&run(Command::new("id").arg("-un"))?)
            .trim()
            .to_string();
        let config = d.join("sshd_config");
        let log = d.join("sshd.log");
        let (process, port) = start_on_free_port("sshd", &log, |port| {
            let text = format!(
                "ListenAddress 127.0.0.1\n\
                 HostKey {host}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {auth}\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PermitRootLogin prohibit-password\n\
                 AllowUsers {user}\n\
                 LogLevel VERBOSE\n",
                host = host_key.private.display(),
                pid = d.join("sshd.pid").display(),
                auth = authorized.display(),
            );
            // Written per attempt: harmless, and keeps the closure self-contained.
            let _ = std::fs::write(&config, text);
            let mut cmd = Command::new(SSHD);
            cmd.arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .arg("-p")
                .arg(port.to_string());
            cmd
        })?;
        let server = Self {
            port,
            user,
            host_key,
            client_key,
            process,
            dir,
        };
        let kh = server.known_hosts_path();
        std::fs::write(&kh, server.known_hosts_line()).map_err(io_err(&kh))?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key sshd accepts.
    pub fn client_key(&self) -> &Path {
        &self.client_key.private
    }

    pub fn host_key(&self) -> &SshKey {
        &self.host_key
    }

    /// The known_hosts line that pins this server's host key.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_key.public_key())
    }

    /// A known_hosts file holding exactly [`Self::known_hosts_line`].
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// `ssh://user@127.0.0.1:PORT/<absolute path>`.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// An `ssh` command line (for `GIT_SSH_COMMAND` / `core.sshCommand`) that uses the client key
    /// only and enforces `known_hosts`, ignoring the user's ssh configuration.
    pub fn ssh_command(&self, known_hosts: &Path) -> String {
        format!(
            "ssh -F /dev/null -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes \
             -o StrictHostKeyChecking=yes -o UserKnownHostsFile='{}' -o GlobalKnownHostsFile=/dev/null",
            self.client_key.private.display(),
            known_hosts.display()
        )
    }

    /// Like [`Self::ssh_command`], with the port given to ssh itself: scp-style URLs
    /// (`user@host:path`) cannot carry a port.
    pub fn ssh_command_with_port(&self, known_hosts: &Path) -> String {
        format!("{} -o Port={}", self.ssh_command(known_hosts), self.port)
    }

    /// scp-style `user@127.0.0.1:<absolute path>`; needs [`Self::ssh_command_with_port`].
    pub fn scp_url(&self, repo: &Path) -> String {
        format!("{}@127.0.0.1:{}", self.user, repo.display())
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}
