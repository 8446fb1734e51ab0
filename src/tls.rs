//! TLS: one stack (rustls with the `ring` provider) for serving and for calling partners.
//!
//! When `[tls]` is configured, Hearth serves HTTPS and may ask clients for a certificate;
//! a partner whose config pins `client_cert_sha256` must present that certificate on
//! every request its principals make (mutual TLS). The certificate seen on a connection
//! reaches the request as [`ClientCert`]. [`serve`] is the accept loop for plain HTTP
//! too, so both keep the same deadlines.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Installs `ring` as rustls' process-wide crypto provider. Idempotent; call before
/// building any TLS config or HTTP client.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The SHA-256 (hex) of the client certificate a connection presented, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert(pub Option<String>);

/// SHA-256 hex of a DER certificate: what `client_cert_sha256` pins.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))
}

pub fn load_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .with_context(|| format!("a certificate in {} is not a usable root", path.display()))?;
    }
    Ok(roots)
}

/// The server config: our certificate, and (with `client_ca`) optional client
/// certificates verified against those roots.
pub fn server_config(tls: &crate::config::Tls) -> anyhow::Result<rustls::ServerConfig> {
    install_crypto_provider();
    let certs = load_certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("reading the key {}", tls.key.display()))?;
    let verifier = match &tls.client_ca {
        Some(ca) => WebPkiClientVerifier::builder(Arc::new(load_roots(ca)?))
            // Partners that are not pinned may connect without a certificate.
            .allow_unauthenticated()
            .build()
            .context("client certificate roots")?,
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the server certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The server's own deadlines (see [`crate::config::Tls`] and `header_read_timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub handshake: std::time::Duration,
    pub accept_error_pause: std::time::Duration,
    /// A connection that has not sent a request's headers by then is closed: a client
    /// trickling bytes would otherwise hold it, and shutdown, open for ever.
    pub header_read: std::time::Duration,
}

impl Timeouts {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let ms = std::time::Duration::from_millis;
        let (handshake, pause) = config.tls.as_ref().map_or(
            (
                crate::config::DEFAULT_HANDSHAKE_MS,
                crate::config::DEFAULT_ACCEPT_ERROR_PAUSE_MS,
            ),
            |t| (t.handshake_timeout_ms, t.accept_error_pause_ms),
        );
        Self {
            handshake: ms(handshake),
            accept_error_pause: ms(pause),
            header_read: ms(config.header_read_timeout_ms),
        }
    }
}

/// Serves `router` until `shutdown` resolves, then lets open connections finish: over
/// TLS with `tls`, plain HTTP without. Each request carries its peer's address
/// (`ConnectInfo`) and, over TLS, the client certificate the connection presented.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<rustls::ServerConfig>,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(timeouts.accept_error_pause).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let peer = axum::extract::ConnectInfo(peer);
            let Some(acceptor) = acceptor else {
                serve_connection(TokioIo::new(tcp), router, peer, None, timeouts, watcher).await;
                return;
            };
            let tls = match tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake not finished in time; connection dropped");
                    return;
                }
            };
            let cert = ClientCert(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| fingerprint(c)),
            );
            serve_connection(
                TokioIo::new(tls),
                router,
                peer,
                Some(cert),
                timeouts,
                watcher,
            )
            .await;
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// HTTP/1.1 or HTTP/2 on one accepted connection.
async fn serve_connection<I>(
    io: TokioIo<I>,
    router: Router,
    peer: axum::extract::ConnectInfo<std::net::SocketAddr>,
    cert: Option<ClientCert>,
    timeouts: Timeouts,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer);
            if let Some(cert) = &cert {
                req.extensions_mut().insert(cert.clone());
            }
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let conn = builder.serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
