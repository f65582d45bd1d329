//! Operations endpoints without a socket (`oneshot`): readiness that follows the store,
//! request ids, the body limit from the settings, and what `/metrics` counts.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use diemdanh_server::api::{app_with_options, Limits, Options};
use diemdanh_server::{SqliteStore, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

async fn get(router: &axum::Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn readyz_follows_the_store_and_healthz_only_the_process() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let router = diemdanh_server::app(store);
    let (status, _, body) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["status"], "ready");

    // The store can no longer answer (its devices table is gone under it).
    rusqlite::Connection::open(dir.path().join("diemdanh.sqlite"))
        .expect("open")
        .execute_batch("DROP TABLE devices")
        .expect("drop");
    let (status, _, body) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let v: Value = serde_json::from_str(&body).expect("a JSON reason");
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["reason"], "store_error");
    assert!(!body.contains("devices"), "no database detail for the client: {body}");
    let (status, _, body) = get(&router, "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_metrics_count_by_route_pattern() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let router = diemdanh_server::app(store);
    let (_, headers, _) = get(&router, "/healthz").await;
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id");
    assert_eq!(id.len(), 16);
    let resp = router
        .clone()
        .oneshot(
            Request::get("/healthz")
                .header("x-request-id", "from-the-proxy-7")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.headers()["x-request-id"], "from-the-proxy-7");

    // Two course pages of different ids count under one route label (401: not signed in
    // is a redirect or refusal, whichever; the class is what is counted).
    for path in ["/api/courses/c-1", "/api/courses/c-2"] {
        let _ = get(&router, path).await;
    }
    let (status, headers, text) = get(&router, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("application/openmetrics-text"));
    let course_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("diemdanh_http_requests_total{") && l.contains("route=\"/api/courses/{id}\""))
        .collect();
    assert_eq!(course_lines.len(), 1, "{text}");
    assert!(course_lines[0].ends_with(" 2"), "{text}");
    assert!(!text.contains("c-1"), "{text}");
    assert!(
        text.contains("route=\"/healthz\",method=\"GET\",class=\"2xx\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn the_body_limit_comes_from_the_settings_and_its_answer_names_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let router = app_with_options(
        store,
        Options {
            limits: Limits {
                max_body_bytes: 70_000,
                ..Limits::default()
            },
            ..Options::default()
        },
    );
    let resp = router
        .clone()
        .oneshot(
            Request::post("/v1/sync")
                .header(header::AUTHORIZATION, "Bearer x")
                .body(Body::from(vec![0u8; 70_001]))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"], "too_large");
    assert!(v["message"].as_str().expect("message").contains("70000"), "{v}");
}

/// A body of unknown length (no `content-length`, as a chunked upload) that goes past the
/// limit is stopped as it arrives, on `POST /` and on `POST /p` alike: 413 with the JSON
/// reason, not a 400 for a body "cut" on the way.
#[tokio::test]
async fn a_streamed_body_past_the_limit_is_answered_413_on_the_compact_and_part_paths() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let router = app_with_options(
        store,
        Options {
            limits: Limits {
                max_body_bytes: 70_000,
                ..Limits::default()
            },
            ..Options::default()
        },
    );
    for path in [sync_core::protocol::COMPACT_SYNC_PATH, sync_core::protocol::PART_PATH] {
        let (mut sender, streamed) = http_body_util::channel::Channel::<axum::body::Bytes>::new(4);
        let feed = tokio::spawn(async move {
            // Bounded: 8 chunks of 10,000 bytes, past the 70,000 limit.
            for _ in 0..8 {
                if sender.send_data(vec![0u8; 10_000].into()).await.is_err() {
                    break;
                }
            }
        });
        let resp = router
            .clone()
            .oneshot(
                Request::post(path)
                    .header(header::AUTHORIZATION, "Bearer x")
                    .body(Body::new(streamed))
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"], "too_large", "{path}: {v}");
        feed.abort();
    }
}
