//! Owns the process-wide rustls crypto provider choice.
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
