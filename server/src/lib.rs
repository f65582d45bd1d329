//! diemdanh-server: consolidates attendance from field devices, validates every change
//! before it is accepted, keeps projections for reports, serves the web pages.

pub mod api;
pub mod bundle;
pub mod certificates;
pub mod cli;
pub mod demo;
pub mod reports;
pub mod roster;
pub mod sqlite;
pub mod store;
pub mod sync;
pub mod web;

use std::future::Future;
use std::sync::Arc;

pub use api::app;
pub use sqlite::SqliteStore;
pub use store::Store;

/// Serves on `listener` until `shutdown` completes; in-flight requests finish first.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(store)).with_graceful_shutdown(shutdown).await
}
