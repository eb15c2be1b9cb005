//! Owns `reckon run`: the agent, until SIGINT or SIGTERM.

use crate::agent::{self, AgentOptions, WebhookSecrets};
use crate::api::auth::Role;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the configuration, the store, the Git mirrors and the secret key are.
#[derive(Debug, clap::Args)]
pub struct Paths {
    /// The configuration file listing the Apps.
    #[arg(long, short, env = "RECKON_CONFIG", default_value = "reckon.yaml")]
    pub config: PathBuf,
    /// The store directory (created when missing).
    #[arg(long, env = "RECKON_STORE", default_value = "./reckon-store")]
    pub store: PathBuf,
    /// Where the bare mirrors of the remotes live.
    #[arg(long, env = "RECKON_CACHE", default_value = "./reckon-cache")]
    pub cache: PathBuf,
    /// The key for keyed hashes of Secret values (default: secret.key in the store; created
    /// when missing). Back it up with the store.
    #[arg(long, env = "RECKON_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

impl Paths {
    /// The store (created when missing) and the secret key (created when missing).
    pub fn open(&self) -> anyhow::Result<(crate::store::SledStore, crate::render::SecretKey)> {
        let store = super::open_writable(&self.store)?;
        let key = crate::agent::key::load_or_create(&self.options().key_file)?;
        Ok((store, key))
    }

    pub fn options(&self) -> AgentOptions {
        let mut options =
            AgentOptions::new(self.config.clone(), self.store.clone(), self.cache.clone());
        if let Some(key) = &self.key_file {
            options.key_file = key.clone();
        }
        options
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    paths: Paths,
    /// Serve /healthz, /readyz and the webhook endpoints (/hooks/github, /hooks/gitlab,
    /// /hooks/generic/APP) on this address.
    #[arg(long, env = "RECKON_LISTEN")]
    listen: Option<SocketAddr>,
    /// Connections served at once on --listen and --audit-listen (each); more wait to be
    /// accepted until one closes.
    #[arg(long, env = "RECKON_LISTEN_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    listen_max_connections: u32,
    /// How long a client has to send a request's headers (and how long an idle connection is
    /// kept) on --listen and --audit-listen.
    #[arg(long, env = "RECKON_LISTEN_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    listen_header_timeout: std::time::Duration,
    /// How long a client has to send a request's body; webhooks get at most 10s of it.
    #[arg(long, env = "RECKON_LISTEN_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    listen_body_timeout: std::time::Duration,
    /// MiB of the store's page cache: the event log's and its indexes' pages kept in memory.
    /// It bounds what history costs the agent's memory; pages beyond it are read from disk
    /// (usually from the kernel's page cache) when asked for.
    #[arg(long, env = "RECKON_STORE_CACHE_MIB", default_value_t = crate::agent::STORE_CACHE_BYTES >> 20, value_parser = clap::value_parser!(u64).range(1..=65536))]
    store_cache_mib: u64,
    /// Serve --listen over HTTPS with this PEM certificate chain (with --tls-key): the API's
    /// bearer tokens, webhooks and the shards' fan-out then travel encrypted.
    #[arg(long, env = "RECKON_TLS_CERT", requires_all = ["tls_key", "listen"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RECKON_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// GitHub webhook secret (X-Hub-Signature-256).
    #[arg(long, env = "RECKON_GITHUB_SECRET", hide_env_values = true)]
    github_secret: Option<String>,
    /// GitLab webhook token (X-Gitlab-Token).
    #[arg(long, env = "RECKON_GITLAB_TOKEN", hide_env_values = true)]
    gitlab_token: Option<String>,
    /// Secret of the generic HMAC webhook.
    #[arg(long, env = "RECKON_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// File holding the GitHub webhook secret (instead of --github-secret; one trailing newline
    /// is ignored).
    #[arg(
        long,
        env = "RECKON_GITHUB_SECRET_FILE",
        conflicts_with = "github_secret"
    )]
    github_secret_file: Option<PathBuf>,
    /// File holding the GitLab webhook token (instead of --gitlab-token).
    #[arg(
        long,
        env = "RECKON_GITLAB_TOKEN_FILE",
        conflicts_with = "gitlab_token"
    )]
    gitlab_token_file: Option<PathBuf>,
    /// File holding the generic webhook's secret (instead of --webhook-secret).
    #[arg(
        long,
        env = "RECKON_WEBHOOK_SECRET_FILE",
        conflicts_with = "webhook_secret"
    )]
    webhook_secret_file: Option<PathBuf>,
    /// Sign checkpoints of the store's head with this ed25519 key (its seed, created 0600 when
    /// missing; keep it off the store's volume) and write them to --checkpoint-file
    /// periodically and on stop. `reckon store checkpoint-key` prints its public key for
    /// `reckon store verify --checkpoint-key`. See docs/storage.md, "What verify proves".
    #[arg(long, env = "RECKON_CHECKPOINT_KEY", requires = "checkpoint_file")]
    checkpoint_key: Option<PathBuf>,
    /// Append-only JSON-lines file the checkpoints go to: somewhere the store's disk is not
    /// (another volume, a log shipper's spool).
    #[arg(long, env = "RECKON_CHECKPOINT_FILE", requires = "checkpoint_key")]
    checkpoint_file: Option<PathBuf>,
    /// How often to checkpoint the head (only when it moved).
    #[arg(long, env = "RECKON_CHECKPOINT_EVERY", default_value = "5m", value_parser = humantime::parse_duration)]
    checkpoint_every: std::time::Duration,
    /// Read-only API tokens: a file with one token per line (`TOKEN` or `NAME TOKEN`). They may
    /// call every GET under /api/v1. Without any token file the API refuses every request.
    #[arg(long, env = "RECKON_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// Admin API tokens (same format): GET and POST (rollback, resume); NAME becomes the actor
    /// `api:NAME` of what they record.
    #[arg(long, env = "RECKON_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Also reconcile App objects (apps.reckon.dev): each one created, changed or deleted
    /// starts, restarts or stops its App, and its status is kept up to date. The configuration
    /// file is then optional.
    #[arg(long, env = "RECKON_WATCH_APPS")]
    watch_apps: bool,
    /// URL schemes App objects may use for their source, comma-separated (https, ssh, http,
    /// git, file). `file` lets App objects read Git repositories on the agent's disk; the
    /// configuration file's Apps may use any scheme. Never the agent's own cache or store.
    #[arg(
        long,
        env = "RECKON_APP_SOURCE_SCHEMES",
        value_delimiter = ',',
        default_value = "https,ssh"
    )]
    app_source_schemes: Vec<String>,
    /// Hosts App objects may name in their source, comma-separated (`git.example.com`, or
    /// `*.example.com` for its subdomains). Default: any host.
    #[arg(long, env = "RECKON_APP_SOURCE_HOSTS", value_delimiter = ',')]
    app_source_hosts: Vec<String>,
    /// The lockdown: an App object that names no `serviceAccount` acts as the ServiceAccount
    /// of this name in its own namespace (every request impersonates it), never with the
    /// agent's rights. Default: such App objects act with the agent's rights.
    #[arg(long, env = "RECKON_DEFAULT_SERVICE_ACCOUNT", value_parser = parse_sa_name)]
    default_service_account: Option<String>,
    /// Let App objects write outside their own namespace: another `target.namespace`,
    /// manifests naming other namespaces, cluster-scoped objects (their policy and RBAC
    /// still apply). Default: an App object writes only namespaced objects of its namespace,
    /// and cluster-scoped kinds its policy allows.
    #[arg(long, env = "RECKON_ALLOW_CROSS_NAMESPACE_TARGETS")]
    allow_cross_namespace_targets: bool,
    /// Confine the agent to one namespace (the namespaced install): App objects are watched
    /// there only, and so are the namespaced objects the Apps manage.
    #[arg(long, env = "RECKON_NAMESPACE")]
    namespace: Option<String>,
    /// The cluster App objects are read from and, by default, applied to, and the cluster of
    /// the Lease (default: KUBECONFIG, ~/.kube/config, then the in-cluster service account).
    #[arg(long, env = "RECKON_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    audit: AuditArgs,
    #[command(flatten)]
    shard: ShardArgs,
    #[command(flatten)]
    // Boxed: the command enum's variants stay close in size (clippy::large_enum_variant).
    lease: Box<LeaseArgs>,
}

/// Sharding across StatefulSet replicas (docs/operations.md, Sharding).
#[derive(Debug, clap::Args)]
pub struct ShardArgs {
    /// How many shards the fleet has; each reconciles the Apps it owns (the reckon.dev/shard
    /// label or the file's `shard:` key, else a consistent hash of namespace/name).
    #[arg(long, env = "RECKON_SHARDS", default_value_t = 1)]
    shards: u32,
    /// This replica's shard, 0-based.
    #[arg(long, env = "RECKON_SHARD", conflicts_with = "shard_from_hostname")]
    shard: Option<u32>,
    /// Take the shard from the StatefulSet ordinal that ends the hostname (reckon-2 → 2).
    #[arg(long, env = "RECKON_SHARD_FROM_HOSTNAME")]
    shard_from_hostname: bool,
    /// The API base URL of every shard in shard order (this one's included), comma-separated,
    /// or one URL with {i} for the shard number (http://reckon-{i}.reckon-shards.reckon.svc:8080).
    /// The API then answers for the whole fleet.
    #[arg(long, env = "RECKON_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// A file holding the read-only API token this shard presents to the others for queries
    /// (default: the caller's own token is passed on). Rollback and resume always pass on the
    /// caller's token: the owning shard records it as the actor.
    #[arg(long, env = "RECKON_PEER_TOKEN_FILE")]
    peer_token_file: Option<PathBuf>,
    /// How long a shard waits for another's answer.
    #[arg(long, env = "RECKON_PEER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    peer_timeout: std::time::Duration,
    /// PEM CA certificate(s) that https:// peers' certificates chain to (added to the system's
    /// roots), for shards serving --tls-cert from a private CA.
    #[arg(long, env = "RECKON_PEER_CA_FILE")]
    peer_ca_file: Option<PathBuf>,
}

impl ShardArgs {
    /// This replica's shard; `hostname` is asked only for --shard-from-hostname.
    fn shards(
        &self,
        hostname: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<crate::shard::Shards> {
        use crate::shard::Shards;
        let index = if self.shard_from_hostname {
            let host = hostname()?;
            return Ok(Shards::from_hostname(&host, self.shards)?);
        } else if let Some(i) = self.shard {
            i
        } else if self.shards > 1 {
            anyhow::bail!(
                "--shards {}: say which shard this is with --shard I or --shard-from-hostname",
                self.shards
            );
        } else {
            0
        };
        Ok(Shards::new(index, self.shards)?)
    }

    fn fleet(
        &self,
        shards: crate::shard::Shards,
    ) -> anyhow::Result<Option<std::sync::Arc<crate::api::fanout::Fleet>>> {
        // One shard is the whole fleet: nothing to ask (deploy/ passes --peers at any size).
        if self.peers.is_empty() || !shards.is_sharded() {
            return Ok(None);
        }
        let token = match &self.peer_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--peer-token-file {}: {e}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let fleet = crate::api::fanout::Fleet::new(
            shards,
            &self.peers,
            token,
            self.peer_timeout,
            self.peer_ca_file.as_deref(),
        )?;
        if let Some(plain) = fleet.plain_http_peer() {
            // Bearer tokens go to the peers with every forwarded request (docs/operations.md).
            tracing::warn!(
                peer = %plain,
                "--peers over plain HTTP: API tokens are forwarded unencrypted; acceptable only \
                 on a network nobody else can read (serve --tls-cert and use https:// peers)"
            );
        }
        Ok(Some(std::sync::Arc::new(fleet)))
    }
}

/// The Lease of `shards`' shard: `NAME-I` when the fleet is sharded, so that every shard has a
/// writer of its own; `NAME` itself for a single shard (what deploy/ runs by default).
fn shard_lease_name(name: &str, shards: crate::shard::Shards) -> String {
    if shards.is_sharded() {
        format!("{name}-{}", shards.index)
    } else {
        name.to_string()
    }
}

/// The pod's hostname: HOSTNAME (set in every container), else the kernel's.
fn hostname() -> anyhow::Result<String> {
    if let Ok(h) = std::env::var("HOSTNAME")
        && !h.is_empty()
    {
        return Ok(h);
    }
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| anyhow::anyhow!("--shard-from-hostname: reading the hostname: {e}"))?
        .trim()
        .to_string())
}

/// One writer per shard: a coordination.k8s.io Lease (docs/operations.md, "The Lease").
#[derive(Debug, clap::Args)]
pub struct LeaseArgs {
    /// Hold this Lease before opening the store or writing anything; wait in standby (writing
    /// nothing, /readyz 503) while another replica holds it; exit with code 3 on losing it.
    #[arg(long, env = "RECKON_LEASE")]
    lease: Option<String>,
    /// The Lease's namespace (default: the namespace of the kubeconfig's context, in a pod its
    /// own).
    #[arg(long, env = "RECKON_LEASE_NAMESPACE", requires = "lease")]
    lease_namespace: Option<String>,
    /// Who this replica is in the Lease (default: $POD_NAME, else HOSTNAME-PID).
    #[arg(long, env = "RECKON_LEASE_IDENTITY", requires = "lease")]
    lease_identity: Option<String>,
    /// How long a renewal is valid, in seconds: a standby takes over this long after the
    /// holder's last renewal. The holder renews a third of it before expiry.
    #[arg(long, env = "RECKON_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_duration: u64,
}

impl LeaseArgs {
    fn config(&self, kubeconfig: Option<PathBuf>) -> Option<agent::LeaseConfig> {
        Some(agent::LeaseConfig {
            name: self.lease.clone()?,
            namespace: self.lease_namespace.clone(),
            identity: self
                .lease_identity
                .clone()
                .unwrap_or_else(crate::lease::default_identity),
            duration: std::time::Duration::from_secs(self.lease_duration),
            kubeconfig,
        })
    }
}

/// The Kubernetes audit webhook receiver: names the person behind every drift (docs/audit.md).
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Serve the audit webhook receiver (POST /audit/v1/events, TLS) on this address; the API
    /// server's --audit-webhook-config-file points here.
    #[arg(long, env = "RECKON_AUDIT_LISTEN", requires_all = ["audit_tls_cert", "audit_tls_key"])]
    audit_listen: Option<SocketAddr>,
    /// PEM certificate chain the receiver serves.
    #[arg(long, env = "RECKON_AUDIT_TLS_CERT")]
    audit_tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(long, env = "RECKON_AUDIT_TLS_KEY")]
    audit_tls_key: Option<PathBuf>,
    /// Bearer tokens the webhook kubeconfig carries (`TOKEN` or `NAME TOKEN` per line).
    #[arg(long, env = "RECKON_AUDIT_TOKEN_FILE")]
    audit_token_file: Option<PathBuf>,
    /// Accept client certificates signed by this CA (PEM) instead of a token; only those that
    /// name an --audit-client-identity.
    #[arg(
        long,
        env = "RECKON_AUDIT_CLIENT_CA",
        requires = "audit_client_identity"
    )]
    audit_client_ca: Option<PathBuf>,
    /// A name (subject common name, or a DNS, URI or e-mail alternative name) a client
    /// certificate must carry to be accepted: the API server's (repeat, or comma-separated).
    #[arg(
        long,
        env = "RECKON_AUDIT_CLIENT_IDENTITY",
        value_delimiter = ',',
        requires = "audit_client_ca"
    )]
    audit_client_identity: Vec<String>,
    /// Writes per second one sender (token or certificate identity) may deliver; past it the
    /// batch is refused with 429 and the API server retries it.
    #[arg(long, env = "RECKON_AUDIT_SENDER_RATE", default_value = "200")]
    audit_sender_rate: std::num::NonZeroU32,
    /// Writes one sender may deliver at once (at least the API server's
    /// --audit-webhook-batch-max-size, 400 by default).
    #[arg(long, env = "RECKON_AUDIT_SENDER_BURST", default_value = "4000")]
    audit_sender_burst: std::num::NonZeroU32,
    /// The user the agent's credentials are on the cluster, when the API server cannot say
    /// (no SelfSubjectReview before Kubernetes 1.28): writes under the field manager `reckon`
    /// by anyone else are attributed (repeat, or comma-separated).
    #[arg(long, env = "RECKON_AUDIT_OWN_USER", value_delimiter = ',')]
    audit_own_user: Vec<String>,
    /// How long a drift waits for its audit events before it is recorded unattributed; at
    /// least the API server's --audit-webhook-batch-max-wait (30s by default).
    #[arg(long, env = "RECKON_AUDIT_WAIT", default_value = "40s", value_parser = humantime::parse_duration)]
    audit_wait: std::time::Duration,
}

impl AuditArgs {
    fn options(&self) -> Option<crate::audit::AuditOptions> {
        let listen = self.audit_listen?;
        let mut o = crate::audit::AuditOptions::new(
            listen,
            self.audit_tls_cert.clone()?,
            self.audit_tls_key.clone()?,
        );
        o.token_file = self.audit_token_file.clone();
        o.client_ca = self.audit_client_ca.clone();
        o.client_identities = self.audit_client_identity.clone();
        o.sender_rate = crate::audit::receiver::SenderRate {
            per_second: self.audit_sender_rate,
            burst: self.audit_sender_burst,
        };
        o.own_users = self.audit_own_user.clone();
        o.wait = self.audit_wait;
        Some(o)
    }
}

impl RunArgs {
    fn store_cache_bytes(&self) -> u64 {
        self.store_cache_mib << 20
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut options = args.paths.options();
    options.listen = args.listen;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = crate::tls::server_config(cert, key, None)?;
        options.listen_tls = Some(std::sync::Arc::new(tls));
    }
    options.store_cache_bytes = args.store_cache_bytes();
    options.listen_limits = crate::listen::ListenLimits {
        max_connections: args.listen_max_connections as usize,
        header_timeout: args.listen_header_timeout,
        body_timeout: args.listen_body_timeout,
    };
    options.webhooks = WebhookSecrets {
        github: webhook_secret(
            "--github-secret",
            args.github_secret,
            args.github_secret_file,
        )?,
        gitlab: webhook_secret("--gitlab-token", args.gitlab_token, args.gitlab_token_file)?,
        generic: webhook_secret(
            "--webhook-secret",
            args.webhook_secret,
            args.webhook_secret_file,
        )?,
    };
    let mut tokens = crate::api::auth::Tokens::default();
    if let Some(path) = &args.api_token_file {
        tokens.load(path, Role::Read)?;
    }
    if let Some(path) = &args.admin_token_file {
        tokens.load(path, Role::Admin)?;
    }
    if !tokens.is_empty() && args.listen.is_none() {
        anyhow::bail!("API token files were given but no --listen address to serve the API on");
    }
    options.api_tokens = std::sync::Arc::new(tokens);
    options.watch.namespace = args.namespace.clone();
    options.lease = args.lease.config(args.kubeconfig.clone());
    if let (Some(key), Some(file)) = (&args.checkpoint_key, &args.checkpoint_file) {
        options.checkpoints = Some(agent::CheckpointOptions {
            key: key.clone(),
            file: file.clone(),
            every: args.checkpoint_every.max(std::time::Duration::from_secs(1)),
        });
    }
    options.sources = crate::source::allow::SourceRules {
        schemes: args.app_source_schemes.clone(),
        hosts: args.app_source_hosts.clone(),
        agent_dirs: Vec::new(),
    };
    options.tenancy = crate::config::policy::ObjectRules {
        default_service_account: args.default_service_account.clone(),
        allow_cross_namespace_targets: args.allow_cross_namespace_targets,
    };
    if args.watch_apps {
        // Policy objects are cluster-scoped: an agent confined to one namespace (whose RBAC
        // ends there) uses the configuration file's policies only.
        options.app_objects = Some(agent::AppObjects {
            policies: args.namespace.is_none(),
            namespace: args.namespace,
            kubeconfig: args.kubeconfig,
        });
    } else if args.kubeconfig.is_some() && options.lease.is_none() {
        anyhow::bail!(
            "--kubeconfig names the cluster of App objects and of the Lease: it needs \
             --watch-apps or --lease"
        );
    }
    options.audit = args.audit.options();
    if let Some(audit) = options.audit.as_mut() {
        audit.listen_limits = options.listen_limits;
    }
    options.shards = args.shard.shards(hostname)?;
    options.fleet = args.shard.fleet(options.shards)?;
    if let Some(lease) = &mut options.lease {
        // One writer per shard: each shard's replicas contend for their own Lease.
        lease.name = shard_lease_name(&lease.name, options.shards);
    }
    if options.shards.is_sharded() && options.fleet.is_none() && !options.api_tokens.is_empty() {
        // A shard's API alone would answer history for a part of the fleet as if it were all.
        anyhow::bail!(
            "--shards {}: the API needs --peers to answer for the whole fleet",
            options.shards.count
        );
    }
    tracing::info!(
        shard = options.shards.index,
        shards = options.shards.count,
        "shard"
    );
    match agent::run(options, agent::stop_signal()).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ agent::AgentError::LeaseLost { .. }) => {
            // Not an ordinary failure: Kubernetes restarts the pod, which waits in standby.
            eprintln!("error: {e}");
            Ok(ExitCode::from(agent::LEASE_LOST_EXIT))
        }
        Err(e) => Err(e.into()),
    }
}

/// A webhook secret given inline or in a file. An empty one is refused: an HMAC keyed with
/// nothing, or an empty GitLab token, would let anyone trigger fetches.
fn webhook_secret(
    flag: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    let secret = match (inline, file) {
        (Some(s), _) => s,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("{flag}-file {}: {e}", path.display()))?;
            // Files written by editors and `echo` end with a newline that is not part of it.
            let text = text.strip_suffix('\n').unwrap_or(&text);
            text.strip_suffix('\r').unwrap_or(text).to_string()
        }
        (None, None) => return Ok(None),
    };
    if secret.trim().is_empty() {
        anyhow::bail!("{flag} is empty: a webhook needs a non-empty secret (or leave it out)");
    }
    Ok(Some(secret))
}

/// A ServiceAccount name as `--default-service-account` takes it: alone (each App object's
/// own namespace is used), a DNS-1123 subdomain.
fn parse_sa_name(text: &str) -> Result<String, String> {
    if text.contains('/') {
        return Err("a name alone: it is looked up in each App object's own namespace".into());
    }
    crate::config::ServiceAccount::parse(text, "default").map(|sa| sa.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn webhook_secrets_come_inline_or_from_a_file_and_are_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(
            webhook_secret("--x", None, Some(file.clone())).unwrap(),
            Some("s3cret".to_string())
        );
        assert_eq!(
            webhook_secret("--x", Some("inline".into()), None).unwrap(),
            Some("inline".to_string())
        );
        assert_eq!(webhook_secret("--x", None, None).unwrap(), None);
        let e = webhook_secret("--github-secret", Some(String::new()), None).unwrap_err();
        assert!(e.to_string().contains("--github-secret is empty"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        assert!(webhook_secret("--x", None, Some(file.clone())).is_err());
        let e = webhook_secret("--x", None, Some(dir.path().join("missing"))).unwrap_err();
        assert!(e.to_string().contains("--x-file"), "{e}");
    }

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        audit: AuditArgs,
    }

    #[derive(Parser)]
    struct Sharding {
        #[command(flatten)]
        shard: ShardArgs,
    }

    fn shards_of(args: &[&str], host: &str) -> anyhow::Result<crate::shard::Shards> {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        let w = Sharding::try_parse_from(all)?;
        let host = host.to_string();
        w.shard.shards(move || Ok(host))
    }

    #[test]
    fn shard_flags_name_this_replica() {
        use crate::shard::Shards;
        assert_eq!(shards_of(&[], "h").unwrap(), Shards::default());
        assert_eq!(
            shards_of(&["--shards", "3", "--shard", "2"], "h").unwrap(),
            Shards { index: 2, count: 3 }
        );
        assert_eq!(
            shards_of(&["--shards", "3", "--shard-from-hostname"], "reckon-1").unwrap(),
            Shards { index: 1, count: 3 }
        );
        let e = shards_of(&["--shards", "3", "--shard-from-hostname"], "web").unwrap_err();
        assert!(e.to_string().contains("hostname web"), "{e}");
        assert!(shards_of(&["--shards", "3"], "h").is_err(), "which shard?");
        assert!(shards_of(&["--shards", "2", "--shard", "2"], "h").is_err());
        assert!(shards_of(&["--shard", "1", "--shard-from-hostname"], "h").is_err());
        let w = Sharding::try_parse_from([
            "x",
            "--shards",
            "2",
            "--shard",
            "0",
            "--peers",
            "http://a:1,http://b:2",
        ])
        .unwrap();
        let fleet = w
            .shard
            .fleet(Shards { index: 0, count: 2 })
            .unwrap()
            .unwrap();
        assert_eq!(fleet.peers.len(), 2);
        assert_eq!(fleet.peers[1].as_str(), "http://b:2/");
        let w = Sharding::try_parse_from([
            "x",
            "--peers",
            "http://reckon-{i}.reckon-shards.ns.svc:8080",
        ])
        .unwrap();
        let fleet = w
            .shard
            .fleet(Shards { index: 1, count: 3 })
            .unwrap()
            .unwrap();
        assert_eq!(
            fleet.peers[2].as_str(),
            "http://reckon-2.reckon-shards.ns.svc:8080/"
        );
        let w = Sharding::try_parse_from(["x", "--peers", "http://a:1"]).unwrap();
        assert!(
            w.shard.fleet(Shards { index: 0, count: 2 }).is_err(),
            "one URL for two shards"
        );
        assert!(
            w.shard.fleet(Shards::default()).unwrap().is_none(),
            "one shard asks nobody"
        );
    }

    #[derive(Parser)]
    struct RunWrapper {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn the_store_cache_is_given_in_mib_and_never_zero() {
        let parse = |args: &[&str]| {
            RunWrapper::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
                .map(|w| w.run.store_cache_bytes())
        };
        assert_eq!(parse(&[]).unwrap(), crate::agent::STORE_CACHE_BYTES);
        assert_eq!(parse(&["--store-cache-mib", "16"]).unwrap(), 16 << 20);
        assert!(parse(&["--store-cache-mib", "0"]).is_err());
    }

    #[derive(Parser)]
    struct LeaseWrapper {
        #[command(flatten)]
        lease: LeaseArgs,
    }

    #[test]
    fn each_shard_has_a_lease_of_its_own() {
        use crate::shard::Shards;
        assert_eq!(shard_lease_name("reckon", Shards::default()), "reckon");
        let names: Vec<String> = (0..3)
            .map(|index| shard_lease_name("reckon", Shards { index, count: 3 }))
            .collect();
        assert_eq!(names, ["reckon-0", "reckon-1", "reckon-2"]);
    }

    #[test]
    fn lease_flags_become_the_lease_config() {
        let w = LeaseWrapper::try_parse_from(["x"]).unwrap();
        assert!(w.lease.config(None).is_none(), "off without --lease");
        let w = LeaseWrapper::try_parse_from([
            "x",
            "--lease",
            "reckon",
            "--lease-namespace",
            "ops",
            "--lease-identity",
            "reckon-0",
            "--lease-duration",
            "20",
        ])
        .unwrap();
        let c = w.lease.config(Some(PathBuf::from("kc"))).unwrap();
        assert_eq!(c.name, "reckon");
        assert_eq!(c.namespace.as_deref(), Some("ops"));
        assert_eq!(c.identity, "reckon-0");
        assert_eq!(c.duration, std::time::Duration::from_secs(20));
        assert_eq!(c.kubeconfig, Some(PathBuf::from("kc")));
        let w = LeaseWrapper::try_parse_from(["x", "--lease", "reckon"]).unwrap();
        let c = w.lease.config(None).unwrap();
        assert_eq!(c.duration, std::time::Duration::from_secs(15));
        assert_eq!(c.identity, crate::lease::default_identity());
        assert_eq!(
            c.namespace, None,
            "the client's namespace, resolved at run time"
        );
        // A duration under 2 s leaves no room for a renewal before expiry.
        assert!(
            LeaseWrapper::try_parse_from(["x", "--lease", "r", "--lease-duration", "1"]).is_err()
        );
        // The other Lease flags mean nothing without a Lease.
        assert!(LeaseWrapper::try_parse_from(["x", "--lease-identity", "a"]).is_err());
    }

    #[test]
    fn audit_flags_become_audit_options() {
        let w = Wrapper::try_parse_from(["x"]).unwrap();
        assert!(w.audit.options().is_none(), "off without --audit-listen");
        let w = Wrapper::try_parse_from([
            "x",
            "--audit-listen",
            "127.0.0.1:8443",
            "--audit-tls-cert",
            "c.pem",
            "--audit-tls-key",
            "k.pem",
            "--audit-token-file",
            "tokens",
            "--audit-wait",
            "5s",
        ])
        .unwrap();
        let o = w.audit.options().unwrap();
        assert_eq!(o.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(o.tls_cert, PathBuf::from("c.pem"));
        assert_eq!(o.tls_key, PathBuf::from("k.pem"));
        assert_eq!(o.token_file, Some(PathBuf::from("tokens")));
        assert_eq!(o.client_ca, None);
        assert!(o.client_identities.is_empty() && o.own_users.is_empty());
        assert_eq!(o.sender_rate, crate::audit::receiver::SenderRate::default());
        assert_eq!(o.wait, std::time::Duration::from_secs(5));
        let base = [
            "x",
            "--audit-listen",
            "127.0.0.1:8443",
            "--audit-tls-cert",
            "c.pem",
            "--audit-tls-key",
            "k.pem",
        ];
        let with = |extra: &[&str]| Wrapper::try_parse_from(base.iter().chain(extra));
        // A client CA alone would let every certificate it signed in: refused at parse.
        assert!(with(&["--audit-client-ca", "ca.pem"]).is_err());
        assert!(with(&["--audit-client-identity", "kube-apiserver"]).is_err());
        let w = with(&[
            "--audit-client-ca",
            "ca.pem",
            "--audit-client-identity",
            "kube-apiserver,audit.example",
            "--audit-sender-rate",
            "50",
            "--audit-sender-burst",
            "800",
            "--audit-own-user",
            "system:serviceaccount:reckon:reckon",
        ])
        .unwrap();
        let o = w.audit.options().unwrap();
        assert_eq!(o.client_identities, ["kube-apiserver", "audit.example"]);
        assert_eq!(
            (o.sender_rate.per_second.get(), o.sender_rate.burst.get()),
            (50, 800)
        );
        assert_eq!(o.own_users, ["system:serviceaccount:reckon:reckon"]);
        assert!(with(&["--audit-sender-rate", "0"]).is_err());
        // The receiver serves TLS only: a listen address without a certificate is an error.
        assert!(Wrapper::try_parse_from(["x", "--audit-listen", "127.0.0.1:8443"]).is_err());
    }
}
