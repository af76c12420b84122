//! TLS: one rustls crypto provider (ring) for every HTTPS client in the
//! process. reqwest is built without a provider of its own (no aws-lc), and
//! building a client before a provider is installed panics, so every place
//! that builds a client calls [`install_crypto_provider`] first.

/// Installs ring as the process-wide rustls provider; idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
