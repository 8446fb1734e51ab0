//! TLS: one stack (rustls with the `ring` provider) for serving and for calling partners.

/// Installs `ring` as rustls' process-wide crypto provider. Idempotent; call before
/// building any TLS config or HTTP client.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
