//! diemdanh-server: consolidates attendance from field devices, validates every change
//! before it is accepted, keeps projections for reports, serves the web pages.

pub mod accounts;
pub mod api;
pub mod backup;
pub mod bundle;
pub mod certificates;
pub mod cli;
pub mod config;
pub mod demo;
pub mod doc_cache;
pub mod metrics;
pub mod pg;
pub mod reports;
pub mod resolve;
pub mod resume;
pub mod roster;
pub mod sqlite;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod web;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use api::app;
pub use pg::PgStore;
pub use sqlite::SqliteStore;
pub use store::Store;

/// Serves on `listener` until `shutdown` completes; in-flight requests finish first.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, app(store), shutdown, None).await.map(|_| ())
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished its request in flight.
    All,
    /// This many connections were still busy when the drain timeout passed; they are
    /// cut when the runtime stops.
    Cut(usize),
}

/// Serves `router` on `listener` until `shutdown` completes. Then no new connection is
/// taken, idle ones close, and requests in flight finish: for at most `drain` (None:
/// however long they take).
///
/// hyper directly rather than `axum::serve`, for one setting axum does not expose: no
/// `date` header (37 bytes on every answer; a one-mark exchange is counted in bytes and
/// devices do not read it).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Option<Duration>,
) -> std::io::Result<Drained> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(AtomicUsize::new(0));
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
                let open = open.clone();
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = conn.await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let busy = open.load(Ordering::SeqCst);
    if busy > 0 {
        tracing::info!(connections = busy, "shutting down: finishing the requests in flight");
    }
    match drain {
        None => {
            graceful.shutdown().await;
            Ok(Drained::All)
        }
        Some(limit) => match tokio::time::timeout(limit, graceful.shutdown()).await {
            Ok(()) => Ok(Drained::All),
            Err(_) => {
                let cut = open.load(Ordering::SeqCst);
                tracing::warn!(
                    connections = cut,
                    drain_seconds = limit.as_secs_f64(),
                    "shutdown: requests still in flight after the drain timeout are cut"
                );
                Ok(Drained::Cut(cut))
            }
        },
    }
}
