//! HTTPS with rustls, for a server that faces a network (`serve --tls-cert --tls-key`).
//!
//! axum-server's rustls acceptor does the handshakes (each on its own task, so a slow
//! client on EDGE does not hold up the others), on the `ring` provider: the one ureq
//! already uses on devices, so the workspace carries one crypto library. Shutdown is
//! graceful as with plain HTTP: no new connection is taken, requests in flight finish
//! (at most [`DRAIN`]).
//!
//! The certificate and key are read and checked before the port is served, and every
//! failure names the file and what is wrong with it, never the key's bytes.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use crate::store::Store;

/// How long a shutdown waits for requests in flight, unless `shutdown_timeout` says otherwise.
pub const DRAIN: Duration = Duration::from_secs(30);

/// Why the certificate or key cannot be used; shown to the administrator as it is.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: std::io::ErrorKind,
    },
    #[error("the TLS {what} {path} holds no `-----BEGIN {label}` block (PEM)")]
    NotPem {
        what: &'static str,
        path: String,
        label: &'static str,
    },
    #[error("the TLS certificate and key cannot be used together: {0}")]
    Unusable(String),
}

fn read(what: &'static str, path: &Path, label: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read {
        what,
        path: path.display().to_string(),
        reason: e.kind(),
    })?;
    // A key may be `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`: match the end.
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")));
    if !has_block {
        return Err(TlsError::NotPem {
            what,
            path: path.display().to_string(),
            label,
        });
    }
    Ok(bytes)
}

/// Reads a PEM certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
pub async fn load(cert: &Path, key: &Path) -> Result<RustlsConfig, TlsError> {
    let cert_pem = read("certificate", cert, "CERTIFICATE")?;
    let key_pem = read("key", key, "PRIVATE KEY")?;
    // rustls checks that the key is the certificate's (`InconsistentKeys`).
    RustlsConfig::from_pem(cert_pem, key_pem)
        .await
        .map_err(|e| TlsError::Unusable(e.to_string()))
}

/// Serves HTTPS on `listener` until `shutdown` completes; in-flight requests finish first.
pub async fn serve_tls_until(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    config: RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls_router(listener, crate::app(store), config, shutdown, DRAIN).await
}

/// Serves `router` over HTTPS until `shutdown` completes; requests in flight then have
/// `drain` to finish before their connections are cut.
pub async fn serve_tls_router(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    config: RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let on_signal = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.graceful_shutdown(Some(drain));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .handle(handle)
        .serve(router.into_make_service())
        .await
}
