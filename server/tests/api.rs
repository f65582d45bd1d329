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
    v9[1] = 9;
    let (s, b) = call(&store, sync_req(Some(&dev.token), v9)).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::BAD_REQUEST, "unsupported_version")
    );
    let (s, b) = call(&store, sync_req(Some(&dev.token), vec![0u8; 9 * 1024 * 1024])).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
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
        ..Limits::default()
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

/// A client that sends its headers and then stalls mid-body (or a body that trickles in
/// slower than the limit) gets a 408 with a JSON reason, and nothing is applied.
#[tokio::test]
async fn a_request_past_the_time_limit_gets_408_with_a_json_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let dev = enrolled(&store, "dev1").await;
    let limits = Limits {
        request_timeout: std::time::Duration::from_millis(200),
        ..Limits::default()
    };
    let router = app_with(store.clone(), limits);
    // The first bytes of a body that never finishes: the sender stays open, silent.
    let (mut sender, stalled) = http_body_util::channel::Channel::<axum::body::Bytes>::new(1);
    sender
        .send_data(empty_request()[..4].to_vec().into())
        .await
        .expect("first bytes");
    let req = Request::post("/v1/sync")
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(header::AUTHORIZATION, format!("Bearer {}", dev.token))
        .body(Body::new(stalled))
        .expect("request");
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), router.clone().oneshot(req))
        .await
        .expect("the server answers within the limit, not never")
        .expect("response");
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::REQUEST_TIMEOUT, "timeout")
    );
    // The device is served as usual after that (with the default time limit: a debug
    // build on a busy machine may take longer than 200 ms for a real sync).
    let (s, b) = call(&store, sync_req(Some(&dev.token), empty_request())).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    drop(router);
    drop(sender);
}

/// Tokens are 256 random bits and codes 130; the server's file holds only their hashes.
#[tokio::test]
async fn tokens_and_codes_are_long_random_and_stored_only_hashed() {
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let codes: Vec<String> = (0..50).map(|_| new_code()).collect();
    for c in &codes {
        let symbols = canonical_code(c);
        assert_eq!(symbols.len(), 26, "{c}: 26 base32 symbols are 130 bits");
        assert!(symbols
            .bytes()
            .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)));
    }
    let distinct: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), codes.len());

    let code = new_code();
    store
        .create_enroll_code("2025:03434", &hash_secret(&canonical_code(&code)), now() + 3600)
        .expect("code");
    let body = serde_json::json!({"code": code, "device_id": "dev1", "actor": "0a0b", "app_version": "t"});
    let (status, body) = call(
        &store,
        Request::post("/v1/enroll")
            .body(Body::from(body.to_string()))
            .expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let resp: EnrollResponse = serde_json::from_slice(&body).expect("json");
    // 128 random bits in base64url (22 characters, no padding).
    assert_eq!(resp.token.len(), 22);
    assert!(resp
        .token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let other = enrolled(&store, "dev2").await;
    assert_ne!(resp.token, other.token);
    drop(store);

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("data dir") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("diemdanh.sqlite"))
        {
            bytes.extend(std::fs::read(&path).expect("read"));
        }
    }
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has(&hash_secret(&resp.token)), "the token's hash is what is stored");
    for secret in [&resp.token, &other.token, &code, &canonical_code(&code)] {
        assert!(!has(secret), "a token or code is stored in clear");
    }
}

/// Whatever bytes a client sends to the enrolment and sync endpoints, the answer is never a
/// 5xx, every non-200 has the JSON error body, and the server keeps serving. Bounded: a
/// few hundred cases, each through the real router and store.
#[test]
fn arbitrary_bodies_get_4xx_json_never_5xx() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let dev = rt.block_on(enrolled(&store, "dev1"));
    let good = empty_request();
    let check = |status: StatusCode, body: &[u8]| {
        assert!(!status.is_server_error(), "{status}: {}", String::from_utf8_lossy(body));
        if status != StatusCode::OK {
            error_code(body);
        }
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 150,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let json_ish = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        "[ -~]{0,200}".prop_map(String::into_bytes),
        (any::<Option<String>>(), any::<Option<String>>(), "[0-9a-f]{0,80}").prop_map(|(c, d, a)| {
            serde_json::json!({"code": c, "device_id": d, "actor": a, "app_version": "t"})
                .to_string()
                .into_bytes()
        }),
    ];
    runner
        .run(&json_ish, |body| {
            let (s, b) = rt.block_on(call(
                &store,
                Request::post("/v1/enroll").body(Body::from(body)).expect("req"),
            ));
            check(s, &b);
            Ok(())
        })
        .expect("enrolment bodies");
    let mutated = (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(writes, cut)| {
            let mut b = good.clone();
            for (at, byte) in writes {
                let at = at.index(b.len());
                b[at] = byte;
            }
            b.truncate(cut.index(b.len() + 1).max(1));
            b
        });
    runner
        .run(&mutated, |body| {
            let (s, b) = rt.block_on(call(&store, sync_req(Some(&dev.token), body)));
            check(s, &b);
            Ok(())
        })
        .expect("sync bodies");
    let (s, _) = rt.block_on(call(&store, sync_req(Some(&dev.token), empty_request())));
    assert_eq!(s, StatusCode::OK, "still serving");
}
