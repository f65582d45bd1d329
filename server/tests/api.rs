//! The HTTP API without a socket (`oneshot`): every bad input gets a 4xx and a JSON body.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use diemdanh_server::api::{app_with, Limits};
use diemdanh_server::api::{canonical_code, hash_secret, new_code, now};
use diemdanh_server::{app, SqliteStore, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use sync_core::protocol::{EnrollResponse, SyncRequest, SyncResponse, CONTENT_TYPE};
use tower::ServiceExt;

async fn call(store: &Arc<dyn Store>, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = app(store.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
    (status, body)
}

fn sync_req(token: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut b = Request::post("/v1/sync").header(header::CONTENT_TYPE, CONTENT_TYPE);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body)).expect("request")
}

/// A well-formed sync request that pushes nothing (the token names the device).
fn empty_request() -> Vec<u8> {
    SyncRequest {
        cursor: 0,
        docs: vec![],
        pending_changes: 0,
        app_version: "t".into(),
        max_response_bytes: 1 << 20,
    }
    .encode()
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("JSON error body");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    v["error"].as_str().expect("error code").to_string()
}

async fn enrolled(store: &Arc<dyn Store>, device: &str) -> EnrollResponse {
    let code = new_code();
    store
        .create_enroll_code("2025:03434", &hash_secret(&canonical_code(&code)), now() + 3600)
        .expect("code");
    // Codes are matched regardless of case and dashes.
    let typed = code.to_lowercase().replace('-', " ");
    let actor = hex::encode(device.as_bytes());
    let body = serde_json::json!({"code": typed, "device_id": device, "actor": actor, "app_version": "t"});
    let (status, body) = call(
        store,
        Request::post("/v1/enroll")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let resp: EnrollResponse = serde_json::from_slice(&body).expect("json");
    // One-time: the same code again is refused.
    let again = serde_json::json!({"code": code, "device_id": "other", "actor": "99", "app_version": "t"});
    let (status, body) = call(
        store,
        Request::post("/v1/enroll")
            .body(Body::from(again.to_string()))
            .expect("req"),
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "bad_code")
    );
    resp
}

#[tokio::test]
async fn bad_requests_get_4xx_with_a_json_reason_and_nothing_is_applied() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let dev = enrolled(&store, "dev1").await;
    let good = empty_request();

    let (s, b) = call(&store, sync_req(None, good.clone())).await;
    assert_eq!((s, error_code(&b).as_str()), (StatusCode::UNAUTHORIZED, "no_token"));
    let (s, b) = call(&store, sync_req(Some("nope"), good.clone())).await;
    assert_eq!((s, error_code(&b).as_str()), (StatusCode::UNAUTHORIZED, "bad_token"));
    let (s, b) = call(&store, sync_req(Some(&dev.token), b"{not a sync body".to_vec())).await;
    assert_eq!((s, error_code(&b).as_str()), (StatusCode::BAD_REQUEST, "malformed"));
    let (s, b) = call(&store, sync_req(Some(&dev.token), good[..good.len() - 2].to_vec())).await;
    assert_eq!((s, error_code(&b).as_str()), (StatusCode::BAD_REQUEST, "malformed"));
    let mut v9 = good.clone();
    v9[3] = 9;
    let (s, b) = call(&store, sync_req(Some(&dev.token), v9)).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::BAD_REQUEST, "unsupported_version")
    );
    let (s, _) = call(&store, sync_req(Some(&dev.token), vec![0u8; 9 * 1024 * 1024])).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, b) = call(&store, Request::post("/v1/enroll").body(Body::from("{")).expect("req")).await;
    assert_eq!((s, error_code(&b).as_str()), (StatusCode::BAD_REQUEST, "malformed"));

    // The well-formed request still works after all that.
    let (s, b) = call(&store, sync_req(Some(&dev.token), good.clone())).await;
    assert_eq!(s, StatusCode::OK);
    let resp = SyncResponse::decode(&b).expect("response");
    assert!(resp.results.is_empty() && resp.updates.is_empty() && !resp.more);

    store.revoke_device("dev1", now()).expect("revoke");
    let (s, b) = call(&store, sync_req(Some(&dev.token), good)).await;
    assert_eq!((s, error_code(&b).as_str()), (StatusCode::FORBIDDEN, "device_revoked"));
    assert!(store
        .counts()
        .expect("counts")
        .iter()
        .all(|(k, n)| k == "devices" || *n == 0));
}

#[tokio::test]
async fn demo_data_is_seeded_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let sqlite = SqliteStore::open(dir.path()).expect("store");
    assert!(diemdanh_server::demo::seed(&sqlite).expect("seed"));
    assert!(
        !diemdanh_server::demo::seed(&sqlite).expect("seed twice"),
        "seeding is once"
    );
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let counts: std::collections::HashMap<_, _> = store.counts().expect("counts").into_iter().collect();
    assert_eq!(counts["cadres"], 207);
    assert!(counts["conflicts"] >= 3);
    // The pages it fills are tested in tests/web.rs (they need a signed-in account).
}

#[tokio::test]
async fn a_request_storm_from_one_device_is_cut_and_others_are_still_served() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let a = enrolled(&store, "deva").await;
    let b = enrolled(&store, "devb").await;
    let limits = Limits {
        sync_per_second: 1,
        sync_burst: 3,
        enroll_per_minute: 100,
    };
    let router = app_with(store.clone(), limits);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let resp = router
            .clone()
            .oneshot(sync_req(Some(&a.token), empty_request()))
            .await
            .expect("resp");
        statuses.push(resp.status());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(error_code(&bytes), "rate_limited");
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(),
        3
    );
    let resp = router
        .clone()
        .oneshot(sync_req(Some(&b.token), empty_request()))
        .await
        .expect("resp");
    assert_eq!(resp.status(), StatusCode::OK, "another device is still served");
}
