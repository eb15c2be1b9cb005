//! Owns connecting to a Kubernetes cluster: kubeconfig loading and client construction.

use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors while connecting to a cluster, named after the failed operation.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("reading kubeconfig {path}: {source}")]
    ReadKubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("loading kubeconfig {path} (context {context:?}): {source}")]
    LoadConfig {
        path: String,
        context: Option<String>,
        source: kube::config::KubeconfigError,
    },
    #[error("inferring cluster config (no kubeconfig given): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("asking the API server for its version: {0}")]
    ServerVersion(#[source] kube::Error),
}

/// Builds a client from an explicit kubeconfig path and optional context, or infers one
/// (KUBECONFIG, ~/.kube/config, in-cluster service account) when no path is given.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Client, ClusterError> {
    fenced_client(kubeconfig, context, None).await
}

/// [`client`], whose writes are refused once `fence` says the Lease may have passed to another
/// replica (reads go through: a stale read harms nothing).
pub async fn fenced_client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    fence: Option<&crate::lease::Fence>,
) -> Result<kube::Client, ClusterError> {
    let config = load_config(kubeconfig, context).await?;
    build_client(config, fence)
}

/// The connection settings of a kubeconfig and context, or inferred (KUBECONFIG,
/// ~/.kube/config, in-cluster service account) when no path is given.
pub async fn load_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, ClusterError> {
    crate::tls::install_crypto_provider();
    Ok(match kubeconfig {
        Some(path) => {
            let kc =
                Kubeconfig::read_from(path).map_err(|source| ClusterError::ReadKubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?;
            let opts = KubeConfigOptions {
                context: context.map(str::to_string),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|source| ClusterError::LoadConfig {
                    path: path.display().to_string(),
                    context: context.map(str::to_string),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    })
}

// The user name is `config`'s (pure; `config` must not depend on the kube client side).
pub use crate::config::policy::service_account_user;

/// `config` acting as `user` (`Impersonate-User` on every request, no groups: the API server
/// then adds the ServiceAccount's own groups, so RBAC bound to
/// `system:serviceaccounts:<namespace>` applies as it would to the ServiceAccount itself).
/// Whatever the kubeconfig itself impersonated is replaced.
pub fn impersonating(config: &kube::Config, user: &str) -> kube::Config {
    let mut config = config.clone();
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = None;
    config.auth_info.impersonate_uid = None;
    config.auth_info.impersonate_user_extra = None;
    config
}

/// A client for `config`, writes fenced by `fence` when given.
pub fn build_client(
    config: kube::Config,
    fence: Option<&crate::lease::Fence>,
) -> Result<kube::Client, ClusterError> {
    crate::tls::install_crypto_provider();
    // kube's own retry (15 tries, backoff up to 1000 s) sits inside any layer added here: a
    // write retried there would pass the Lease fence unchecked, and discovery of a group whose
    // aggregated API is down (a 503, like a stopped metrics-server) would stall for minutes on
    // v1.37. reckon retries whole passes itself; a request gets a few quick tries, each one
    // through the fence.
    let mut config = config;
    config.default_retry = false;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(ClusterError::Client)?;
    // A retry needs a service it can clone: a buffer in front of the stack (kube's client has
    // one of the same size in front of everything).
    let buffer = tower::buffer::BufferLayer::new(1024);
    let retry = tower::retry::RetryLayer::new(request_retry());
    Ok(match fence {
        None => builder.with_layer(&buffer).with_layer(&retry).build(),
        Some(fence) => builder
            .with_layer(&crate::lease::FenceLayer::new(fence.clone()))
            .with_layer(&buffer)
            .with_layer(&retry)
            .build(),
    })
}

/// Retries of one request on 429, 503 and 504: five, 50 ms doubling to at most 5 s (or the
/// server's Retry-After), about 1.5 s in all unless the server asks for more.
fn request_retry() -> kube::client::retry::RetryPolicy {
    kube::client::retry::RetryPolicy::new(
        Duration::from_millis(50),
        Duration::from_secs(5),
        5,
        true,
    )
    .expect("valid backoff parameters")
}

/// The API server's version string (for example `v1.20.2`) and where that release stands
/// against the range reckon supports.
pub async fn server_version(
    client: &kube::Client,
) -> Result<(String, crate::version::Support), ClusterError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(ClusterError::ServerVersion)?;
    let server = crate::version::ServerVersion::parse(&info.major, &info.minor, &info.git_version);
    Ok((info.git_version, server.support()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impersonating_config_acts_as_the_service_account_alone() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        // Whatever the kubeconfig impersonated does not leak into the App's identity.
        config.auth_info.impersonate = Some("admin".into());
        config.auth_info.impersonate_groups = Some(vec!["system:masters".into()]);
        let user = service_account_user("team-a", "reckon-app");
        assert_eq!(user, "system:serviceaccount:team-a:reckon-app");
        let acting = impersonating(&config, &user);
        assert_eq!(acting.auth_info.impersonate.as_deref(), Some(user.as_str()));
        assert_eq!(acting.auth_info.impersonate_groups, None);
        assert_eq!(acting.cluster_url, config.cluster_url);
        assert_eq!(config.auth_info.impersonate.as_deref(), Some("admin"));
    }
}
