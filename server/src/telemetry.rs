//! Structured logs: the subscriber (`--log-format text|json`), and one span per request
//! with its id, method, path, and once known the device, the status and the latency.
//!
//! What a span never holds: a query string (a search could carry a name), a path no
//! route matched or one with characters ids do not have, a header value other than the
//! request id, a token, a web account's name. The device id is not
//! personal: it names a tablet (`diemdanh enroll` makes it), not a person.
//!
//! The request id is the client's `x-request-id` when it is a short token of letters,
//! digits, `-`, `_` and `.` (a proxy in front may set one); anything else is replaced by
//! 16 random hex digits, so a client cannot put arbitrary text in every log line. The
//! answer carries the id back in `x-request-id`, except a successful sync answer to a
//! client that sent none ([`quiet_sync_answers`]): devices read only an error's, and it
//! is 32 bytes of a one-mark exchange counted against 400 (BENCHMARKS.md).

use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use rand::RngCore;
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::field::Empty;
use tracing::Span;

use crate::config::LogFormat;

pub const REQUEST_ID: &str = "x-request-id";

/// Installs the process's subscriber on standard error.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| format!("`{filter}` is not a log filter: {e}"))?;
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, not in the journal or a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let done = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    done.map_err(|e| format!("cannot set up logging: {e}"))
}

/// 16 random hex digits.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomId;

impl MakeRequestId for RandomId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = hex::encode(rand::rng().next_u64().to_be_bytes());
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

fn acceptable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=64).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Leaves the request id out of a successful answer to a sync exchange (`POST /`,
/// `/v1/sync`, `/p`) whose client sent none; an error answer keeps it (someone may quote
/// it), and the log line has it all the same.
pub async fn quiet_sync_answers(req: Request, next: axum::middleware::Next) -> Response {
    use sync_core::protocol::{COMPACT_SYNC_PATH, PART_PATH, SYNC_PATH};
    let path = req.uri().path();
    let quiet = req.method() == axum::http::Method::POST
        && [COMPACT_SYNC_PATH, SYNC_PATH, PART_PATH].contains(&path)
        && !req.headers().contains_key(REQUEST_ID);
    let mut resp = next.run(req).await;
    if quiet && resp.status() == axum::http::StatusCode::OK {
        resp.headers_mut().remove(REQUEST_ID);
    }
    resp
}

/// Removes a client's request id that is not a short plain token (a new one is made).
pub async fn screen_request_id(mut req: Request) -> Request {
    let bad = req
        .headers()
        .get_all(REQUEST_ID)
        .iter()
        .enumerate()
        .any(|(i, v)| i > 0 || !acceptable_id(v));
    if bad {
        req.headers_mut().remove(REQUEST_ID);
    }
    req
}

/// The path as logged: only a path a route matched, and only when it is made of the
/// characters of ids (letters, digits, `/ - _ . :`). Anything else a client can type (a
/// name in a URL, percent-encoded or not) is logged as `-`; the route pattern is always
/// there.
fn loggable_path(path: &str, matched: bool) -> &str {
    let plain = path
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'-' | b'_' | b'.' | b':'));
    if matched && plain && path.len() <= 200 {
        path
    } else {
        "-"
    }
}

/// The span of one request (`TraceLayer::make_span_with`).
pub fn request_span(req: &axum::http::Request<axum::body::Body>) -> Span {
    let id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-");
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str());
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = %route.unwrap_or("unmatched"),
        path = %loggable_path(req.uri().path(), route.is_some()),
        device = Empty,
        status = Empty,
        latency_ms = Empty,
    )
}

/// Records the answer in the request's span and logs one line for it.
pub fn on_response(resp: &Response, latency: Duration, span: &Span) {
    let status = resp.status().as_u16();
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    if resp.status().is_server_error() {
        tracing::warn!("answered");
    } else {
        tracing::info!("answered");
    }
}

/// Names the authenticated device in the current request's span.
pub fn record_device(device: &str) {
    Span::current().record("device", tracing::field::display(device));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        for ok in ["abc", "0123456789abcdef", "req-1_2.3"] {
            assert!(acceptable_id(&HeaderValue::from_static(ok)), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in ["", "has space", "name=Lò", "a\"b", long.as_str()] {
            let v = HeaderValue::from_bytes(bad.as_bytes()).expect("header");
            assert!(!acceptable_id(&v), "{bad}");
        }
        assert_eq!(loggable_path("/courses/c-1", true), "/courses/c-1");
        assert_eq!(loggable_path("/courses/L%C3%B2%20Th%E1%BB%8B", true), "-");
        assert_eq!(loggable_path("/no/such/page", false), "-");
        let mut make = RandomId;
        let req = axum::http::Request::new(());
        let a = make.make_request_id(&req).expect("id");
        let b = make.make_request_id(&req).expect("id");
        assert_eq!(a.header_value().len(), 16);
        assert_ne!(a.header_value(), b.header_value());
    }
}
