//! diemdanh-server: consolidates attendance from field devices, validates every change
//! before it is accepted, keeps projections for reports, serves the web pages.

pub mod accounts;
pub mod api;
pub mod bundle;
pub mod certificates;
pub mod cli;
pub mod demo;
pub mod doc_cache;
pub mod pg;
pub mod reports;
pub mod resolve;
pub mod roster;
pub mod sqlite;
pub mod store;
pub mod sync;
pub mod tls;
pub mod web;

use std::future::Future;
use std::sync::Arc;

pub use api::app;
pub use pg::PgStore;
pub use sqlite::SqliteStore;
pub use store::Store;

/// Serves on `listener` until `shutdown` completes; in-flight requests finish first.
///
/// hyper directly rather than `axum::serve`, for one setting axum does not expose: no
/// `date` header (37 bytes on every answer; a one-mark exchange is counted in bytes and
/// devices do not read it).
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let router = app(store);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().auto_date_header(false);
    builder.http2().auto_date_header(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
