//! `/metrics`: what an operator watches, in the OpenMetrics text format Prometheus
//! scrapes (prometheus-client; one registry per router, so tests that build many routers
//! in one process do not share counters).
//!
//! Only counts: no device token, name or unit appears in a label. The one per-device
//! figure is how many distinct devices this process has served (`devices_seen`), kept as
//! a set of device ids in memory (a province has thousands of devices, not millions).
//! Labels are bounded: `route` is the route's pattern (`/courses/{id}`, never the id),
//! and a path no route matches counts as `unmatched`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::pg::PgStore;

/// The content type of the answer (OpenMetrics 1.0 text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where the store's size on disk comes from, for `diemdanh_store_bytes`.
#[derive(Clone)]
pub enum StoreSize {
    /// The SQLite files (`diemdanh.sqlite` and its `-wal` and `-shm`) in this folder.
    SqliteDir(PathBuf),
    /// `pg_database_size` of the PostgreSQL database.
    Postgres(Arc<PgStore>),
}

impl std::fmt::Debug for StoreSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSize::SqliteDir(d) => write!(f, "SqliteDir({})", d.display()),
            StoreSize::Postgres(_) => f.write_str("Postgres"),
        }
    }
}

impl StoreSize {
    /// Bytes, or None when they cannot be read now (the scrape then leaves the gauge out).
    pub fn bytes(&self) -> Option<u64> {
        match self {
            StoreSize::SqliteDir(dir) => {
                let main = std::fs::metadata(dir.join(crate::sqlite::FILE)).ok()?.len();
                let side: u64 = ["-wal", "-shm"]
                    .iter()
                    .filter_map(|s| std::fs::metadata(dir.join(format!("{}{s}", crate::sqlite::FILE))).ok())
                    .map(|m| m.len())
                    .sum();
                Some(main + side)
            }
            StoreSize::Postgres(pg) => match pg.database_size() {
                Ok(n) => u64::try_from(n).ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the database size");
                    None
                }
            },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    class: String,
}

/// The server's counters. Cheap to update: atomics, and one mutex for the set of devices.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    sync_seconds: Histogram,
    syncs_in_flight: Gauge,
    marks_accepted: Counter,
    pushes_accepted: Counter,
    pushes_refused: Counter,
    devices: Mutex<HashSet<String>>,
    devices_seen: Gauge,
    store_bytes: Gauge,
    store_size: Option<StoreSize>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(store_size: Option<StoreSize>) -> Metrics {
        let mut registry = Registry::with_prefix("diemdanh");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status class",
            requests.clone(),
        );
        // 5 ms to about 82 s: a loopback exchange to a long sync on EDGE.
        let sync_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        registry.register(
            "sync_duration_seconds",
            "Time of a sync request from its headers to its answer (body upload included)",
            sync_seconds.clone(),
        );
        let syncs_in_flight = Gauge::default();
        registry.register(
            "syncs_in_flight",
            "Sync requests being answered now",
            syncs_in_flight.clone(),
        );
        let marks_accepted = Counter::default();
        registry.register(
            "marks_accepted",
            "Mark writes in accepted pushed changes (validated and committed)",
            marks_accepted.clone(),
        );
        let pushes_accepted = Counter::default();
        registry.register(
            "pushes_accepted",
            "Pushed documents accepted (each a batch applied whole)",
            pushes_accepted.clone(),
        );
        let pushes_refused = Counter::default();
        registry.register(
            "pushes_refused",
            "Pushed documents refused and quarantined (nothing of them applied)",
            pushes_refused.clone(),
        );
        let devices_seen = Gauge::default();
        registry.register(
            "devices_seen",
            "Distinct enrolled devices that synced with this process since it started",
            devices_seen.clone(),
        );
        let store_bytes = Gauge::default();
        if store_size.is_some() {
            registry.register(
                "store_bytes",
                "Size of the store: the SQLite files, or the PostgreSQL database",
                store_bytes.clone(),
            );
        }
        Metrics {
            registry,
            requests,
            sync_seconds,
            syncs_in_flight,
            marks_accepted,
            pushes_accepted,
            pushes_refused,
            devices: Mutex::new(HashSet::new()),
            devices_seen,
            store_bytes,
            store_size,
        }
    }

    /// What one sync committed: marks written, documents accepted and refused.
    pub fn sync_done(&self, device: &str, marks: u64, accepted: u64, refused: u64) {
        self.marks_accepted.inc_by(marks);
        self.pushes_accepted.inc_by(accepted);
        self.pushes_refused.inc_by(refused);
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if !devices.contains(device) {
            devices.insert(device.to_string());
            self.devices_seen.set(i64::try_from(devices.len()).unwrap_or(i64::MAX));
        }
    }

    /// The text of a scrape. Reads the store's size first (a file stat or one query):
    /// call it off the async threads.
    pub fn encode(&self) -> String {
        if let Some(bytes) = self.store_size.as_ref().and_then(StoreSize::bytes) {
            self.store_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

fn class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Counts every answer by route and status class, and times sync requests.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // A method outside the usual ones counts as `other`: a label cannot grow unbounded.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "PATCH") => m.to_string(),
        _ => "other".to_string(),
    };
    let is_sync = route == sync_core::protocol::SYNC_PATH
        || (route == sync_core::protocol::COMPACT_SYNC_PATH && req.method() == axum::http::Method::POST);
    let started = Instant::now();
    let resp = if is_sync {
        metrics.syncs_in_flight.inc();
        // Decremented by a guard, so a cancelled request (client gone) does not leak.
        let _in_flight = InFlight(&metrics.syncs_in_flight);
        next.run(req).await
    } else {
        next.run(req).await
    };
    if is_sync {
        metrics.sync_seconds.observe(started.elapsed().as_secs_f64());
    }
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            class: class(resp.status()).to_string(),
        })
        .inc();
    resp
}

struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics`; with a token set, only for `Authorization: Bearer TOKEN`.
pub async fn scrape(metrics: Arc<Metrics>, token: Option<Arc<str>>, headers: &HeaderMap) -> Response {
    if let Some(token) = token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // Compared as SHA-256 digests: equal length, and no early exit on the secret.
        let ok = given.is_some_and(|g| crate::api::hash_secret(g) == crate::api::hash_secret(&token));
        if !ok {
            return crate::api::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "metrics_token",
                "/metrics needs the bearer token set in the server's metrics_token setting",
            )
            .into_response();
        }
    }
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_counts_marks_pushes_and_each_device_once() {
        let m = Metrics::new(None);
        m.sync_done("tab-1", 40, 2, 0);
        m.sync_done("tab-1", 2, 1, 1);
        m.sync_done("tab-2", 0, 0, 0);
        let text = m.encode();
        assert!(text.contains("diemdanh_marks_accepted_total 42\n"), "{text}");
        assert!(text.contains("diemdanh_pushes_accepted_total 3\n"), "{text}");
        assert!(text.contains("diemdanh_pushes_refused_total 1\n"), "{text}");
        assert!(text.contains("diemdanh_devices_seen 2\n"), "{text}");
        assert!(!text.contains("store_bytes"), "no size without a source: {text}");
        assert!(!text.contains("tab-1"), "no device id in a label");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_store_size_is_the_sqlite_files_together() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(crate::sqlite::FILE), vec![0u8; 4096]).expect("write");
        std::fs::write(dir.path().join(format!("{}-wal", crate::sqlite::FILE)), vec![0u8; 100]).expect("write");
        let size = StoreSize::SqliteDir(dir.path().to_path_buf());
        assert_eq!(size.bytes(), Some(4196));
        let m = Metrics::new(Some(size));
        assert!(m.encode().contains("diemdanh_store_bytes 4196\n"));
        let missing = StoreSize::SqliteDir(dir.path().join("nothing-here"));
        assert_eq!(missing.bytes(), None);
    }
}
