//! Owns TLS for reckon's listeners and clients: the process-wide rustls crypto provider choice,
//! and a server configuration from PEM files (the API listener's and the audit receiver's).
//!
//! kube and gix (through reqwest) both use rustls. If two providers are compiled in, rustls cannot
//! pick one and kube panics when it builds a client. reckon compiles exactly one (aws-lc-rs, the one
//! reqwest uses) and installs it explicitly at startup so the choice never depends on feature
//! unification in some future dependency.

/// Installs aws-lc-rs as the process-level rustls provider. Idempotent: a second call, or a
/// provider installed earlier by the same process, is fine.
pub fn install_crypto_provider() {
    // `install_default` fails only when a provider is already installed; that is the state we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate, key or CA file that cannot serve.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {path}: {reason}")]
pub struct TlsError {
    pub path: PathBuf,
    pub reason: String,
}

fn tls_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The certificates in a PEM file, at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(path, e))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// A server configuration serving the chain in `cert` with the key in `key` (HTTP/1.1 only);
/// with `client_ca`, client certificates chaining to it are verified when offered (optional at
/// the TLS layer: a bearer token is the other way in, checked per request).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates(cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(cert, e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(ca)? {
                roots.add(c).map_err(|e| tls_err(ca, e))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| tls_err(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, private)
        .map_err(|e| tls_err(key, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
