//! The HTTP API: enrolment (JSON), sync (binary), health (`/healthz`, `/readyz`),
//! `/metrics`, and the web pages.
//! One error type maps every failure to a status and a JSON body; details of a 5xx go
//! to the log, never to the client.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sync_core::protocol::{self, DecodeError, EnrollRequest, EnrollResponse, ErrorBody, SyncRequest};
use sync_core::units::UnitKey;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::metrics::{Metrics, StoreSize};
use crate::store::{Contact, DocTx, Projection, RedeemError, Store, StoreError, StoreResult, StoredDoc};
use crate::sync::{process, Peer};

/// Largest sync body accepted by default (`max_body_bytes`): a batch is about 256 KiB
/// before compression.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

pub type SharedStore = Arc<dyn Store>;

/// Request rates the server accepts. Per node: a storm from one device is cut here,
/// before any database work, and other devices are served as usual.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sync requests per second per device, sustained.
    pub sync_per_second: u32,
    /// Sync requests one device may send at once (a long sync is many batches).
    pub sync_burst: u32,
    /// Enrolment attempts per minute, whole node: codes are 128-bit, so this only keeps
    /// a guesser from costing us.
    pub enroll_per_minute: u32,
    /// Longest a request may take, body upload included (408 past it): a sync batch
    /// is bounded, so only a stalled or deliberately slow client reaches it.
    pub request_timeout: Duration,
    /// Largest request body, in bytes (413 past it).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sync_per_second: 10,
            sync_burst: 60,
            enroll_per_minute: 60,
            request_timeout: Duration::from_secs(120),
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// Everything a router is built with besides the store.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub limits: Limits,
    /// The bearer token `/metrics` asks for; None: `/metrics` is open (it holds counts
    /// only, no personal data; docs/OPERATIONS.md).
    pub metrics_token: Option<String>,
    /// Where `diemdanh_store_bytes` comes from; None leaves it out.
    pub store_size: Option<StoreSize>,
    /// What is kept of cut exchanges; the server's housekeeping trims it.
    pub resume: Arc<crate::resume::Resume>,
}

/// How long `/readyz` waits for the store's answer before it says not ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

type KeyedLimiter = governor::DefaultKeyedRateLimiter<String>;
type Limiter = governor::DefaultDirectRateLimiter;

#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    sync_limiter: Arc<KeyedLimiter>,
    enroll_limiter: Arc<Limiter>,
    /// Sign-in attempts per account name, and for the whole node (web.rs).
    pub(crate) login_limiter: Arc<KeyedLimiter>,
    pub(crate) login_global: Arc<Limiter>,
    pub metrics: Arc<Metrics>,
    metrics_token: Option<Arc<str>>,
    /// Exchanges a link cut, kept for the device to go on from (resume.rs).
    pub resume: Arc<crate::resume::Resume>,
    /// The largest exchange, whole or in parts (`Limits::max_body_bytes`).
    max_body: usize,
}

pub fn app(store: SharedStore) -> Router {
    app_with(store, Limits::default())
}

pub fn app_with(store: SharedStore, limits: Limits) -> Router {
    app_with_options(
        store,
        Options {
            limits,
            ..Options::default()
        },
    )
}

pub fn app_with_options(store: SharedStore, options: Options) -> Router {
    let limits = options.limits;
    let metrics = Arc::new(Metrics::new(options.store_size));
    let nz = |n: u32| std::num::NonZeroU32::new(n.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    let sync_quota = governor::Quota::per_second(nz(limits.sync_per_second)).allow_burst(nz(limits.sync_burst));
    let enroll_quota = governor::Quota::per_minute(nz(limits.enroll_per_minute));
    let state = AppState {
        store,
        sync_limiter: Arc::new(governor::RateLimiter::keyed(sync_quota)),
        enroll_limiter: Arc::new(governor::RateLimiter::direct(enroll_quota)),
        login_limiter: Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(nz(
            crate::web::LOGIN_PER_MINUTE_PER_NAME,
        )))),
        login_global: Arc::new(governor::RateLimiter::direct(governor::Quota::per_minute(nz(
            crate::web::LOGIN_PER_MINUTE,
        )))),
        metrics: metrics.clone(),
        metrics_token: options.metrics_token.map(Arc::from),
        resume: options.resume,
        max_body: limits.max_body_bytes,
    };
    let max_body = limits.max_body_bytes;
    // Layers run outermost last: a sync request without an id is noted (its answer goes
    // without one), the request id is screened and set, then the span opens, then the
    // metrics see the final status of every answer.
    Router::new()
        .route(protocol::ENROLL_PATH, post(enroll))
        .route(protocol::SYNC_PATH, post(sync))
        .route(protocol::COMPACT_SYNC_PATH, post(sync_compact))
        .route(protocol::PART_PATH, post(sync_part))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .merge(crate::web::routes())
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(move |resp: Response| async move {
            json_limit_errors(resp, max_body)
        }))
        .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(crate::telemetry::request_span)
                .on_request(())
                .on_response(crate::telemetry::on_response),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(crate::telemetry::RandomId))
        .layer(axum::middleware::map_request(crate::telemetry::screen_request_id))
        .layer(axum::middleware::from_fn(crate::telemetry::quiet_sync_answers))
        .with_state(state)
}

/// `GET /readyz`: 200 when the store answers a trivial query (an indexed lookup of a
/// token hash no device has) within [`READY_TIMEOUT`], else 503 with the reason as JSON.
/// `/healthz` only says the process answers.
async fn readyz(State(st): State<AppState>) -> Response {
    let store = st.store.clone();
    let probe = tokio::task::spawn_blocking(move || store.device_by_token("readiness-probe").map(|_| ()));
    let (code, message) = match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(Ok(()))) => return (StatusCode::OK, Json(serde_json::json!({"status": "ready"}))).into_response(),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "not ready: the store failed a trivial query");
            (
                "store_error",
                "the store failed a trivial query; the server log has the details",
            )
        }
        Ok(Err(_)) => ("store_error", "the store check did not finish"),
        Err(_) => (
            "store_timeout",
            "the store did not answer a trivial query within 5 seconds",
        ),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"status": "not_ready", "reason": code, "message": message})),
    )
        .into_response()
}

async fn metrics_page(State(st): State<AppState>, headers: HeaderMap) -> Response {
    crate::metrics::scrape(st.metrics.clone(), st.metrics_token.clone(), &headers).await
}

/// The body-size and time limits are tower layers that answer with an empty or plain
/// text body; give those answers the JSON body every other 4xx has.
fn json_limit_errors(resp: Response, max_body: usize) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    match resp.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than {max_body} bytes; send smaller batches"),
        )
        .into_response(),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took too long to arrive or to answer; nothing of it was applied if it did not finish, try again",
        )
        .into_response(),
        _ => resp,
    }
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not complete the request; try again later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

/// The message of an error, for the web pages (which show it in their own page).
impl ApiError {
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// How tokens and enrolment codes are kept: only their SHA-256, never the secret.
///
/// Why a plain hash and an indexed lookup, not a salted slow hash and `subtle`'s
/// constant-time compare: both secrets are at least 128 random bits from the OS CSPRNG
/// (a token 128, a code 130), so no dictionary or brute force applies and a salt or
/// stretching would add nothing. The lookup compares the hash of what the client sent
/// with stored hashes; a timing difference can at most reveal how many leading bytes of
/// that *hash* match a stored one, and turning that into a token would need a SHA-256
/// preimage. So the comparison is not timing-sensitive. (Bundle seals, which are compared
/// against a computed MAC, use `Mac::verify_slice`, constant time.)
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// 130 random bits (26 symbols of Crockford base32, in groups of five) from `rand::rng()`,
/// a CSPRNG (ChaCha12) seeded from the OS and reseeded as it goes.
pub fn new_code() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut bytes = [0u8; 17];
    rand::rng().fill_bytes(&mut bytes);
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::new();
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 5 && out.len() < 26 {
            nbits -= 5;
            out.push(ALPHABET[((bits >> nbits) & 31) as usize] as char);
        }
    }
    out.as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// How a code is compared: case, dashes and spaces do not matter.
pub fn canonical_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs `f` on a blocking thread inside the request's span (its lines carry the request id).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server could not complete the request",
            )
        })?
}

fn too_many(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many {what}; wait a little and try again"),
    )
}

async fn enroll(State(st): State<AppState>, body: Bytes) -> Result<Json<EnrollResponse>, ApiError> {
    if st.enroll_limiter.check().is_err() {
        return Err(too_many("enrolment attempts"));
    }
    let req: EnrollRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("the enrolment request is not valid JSON: {e}"),
        )
    })?;
    if sync_core::model::check_id("device", &req.device_id).is_err() || req.device_id.len() > 40 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "device_id must be 1-40 letters, digits, - or _",
        ));
    }
    if hex::decode(&req.actor)
        .map(|a| a.is_empty() || a.len() > 32)
        .unwrap_or(true)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "actor must be 1-32 bytes of hex",
        ));
    }
    // 128 random bits, base64url: 22 characters on every request instead of 64 hex
    // digits (a one-mark exchange is counted in bytes). Only its SHA-256 is stored.
    let mut token_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut token_bytes);
    let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token_bytes);
    let token_hash = hash_secret(&token);
    let code_hash = hash_secret(&canonical_code(&req.code));
    let store = st.store.clone();
    let r = req.clone();
    let outcome = blocking(move || {
        Ok(store.redeem_enroll_code(&code_hash, &r.device_id, &r.actor, &r.app_version, &token_hash, now())?)
    })
    .await?;
    match outcome {
        Ok(unit) => {
            tracing::info!(device = %req.device_id, unit = %unit, "device enrolled");
            Ok(Json(EnrollResponse {
                device_id: req.device_id,
                unit,
                token,
            }))
        }
        Err(RedeemError::BadCode) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_code",
            "the enrolment code is unknown, already used or expired; ask for a new one",
        )),
        Err(RedeemError::DeviceExists) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "device_exists",
            "a device with this id or actor is already enrolled",
        )),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn sync(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let token_hash = sync_token(&st, &headers)?;
    let (store, metrics) = (st.store.clone(), st.metrics.clone());
    blocking(move || {
        let device = sync_device(&*store, &token_hash)?;
        run_exchange(&*store, &metrics, &device, &body, false).map(reply)
    })
    .await
}

/// `POST /`: the same exchange with compact bodies (docs/PROTOCOL.md). The body is read
/// as it arrives: when the link cuts it, what came is kept for the device's
/// continuation on `POST /p` ([`crate::resume`]); a large reply is kept a short while in
/// case the link cuts it too.
async fn sync_compact(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let token_hash = sync_token(&st, &headers)?;
    let total = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (body, cut) = read_body(body).await;
    if let Some(error) = cut {
        if let Some(total) = total.filter(|_| body.len() >= crate::resume::KEEP_CUT_MIN && !error.too_large) {
            let (store, resume) = (st.store.clone(), st.resume.clone());
            let _ = blocking(move || {
                let device = sync_device(&*store, &token_hash)?;
                resume.keep_cut(&device.id, total, body);
                Ok(())
            })
            .await;
        }
        return Err(error.into_api());
    }
    let (store, metrics, resume) = (st.store.clone(), st.metrics.clone(), st.resume.clone());
    blocking(move || {
        let device = sync_device(&*store, &token_hash)?;
        let out = run_exchange(&*store, &metrics, &device, &body, true)?;
        resume.keep_reply(&device.id, &body, &out);
        Ok(reply(out))
    })
    .await
}

/// `POST /p`: one part of an exchange (docs/PROTOCOL.md, "Resumable exchanges"). The
/// answer says how much of the body the server holds; once it holds all of it, the
/// exchange runs as on `POST /` and the answer carries a window of the reply.
async fn sync_part(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let token_hash = sync_token(&st, &headers)?;
    let (body, cut) = read_body(body).await;
    let (store, metrics, resume, max_body) = (st.store.clone(), st.metrics.clone(), st.resume.clone(), st.max_body);
    if let Some(cut) = cut {
        // Nobody is left to read an answer: keep what arrived of the part, once its head
        // did, for the device's next part.
        if !cut.too_large {
            let _ = blocking(move || {
                if let Ok((head, bytes)) = protocol::PartHead::decode(&body) {
                    let device = sync_device(&*store, &token_hash)?;
                    if head.total <= max_body as u64 {
                        resume.part(&device.id, &head, bytes, false);
                    }
                }
                Ok(())
            })
            .await;
        }
        return Err(cut.into_api());
    }
    let out = blocking(move || {
        let (head, bytes) = protocol::PartHead::decode(&body).map_err(decode_error)?;
        let device = sync_device(&*store, &token_hash)?;
        if head.total > max_body as u64 {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the exchange is larger than {max_body} bytes; send smaller batches"),
            ));
        }
        let whole = match resume.part(&device.id, &head, bytes, true) {
            crate::resume::Step::Answer(out) => return Ok(out),
            crate::resume::Step::Run(whole) => whole,
        };
        let out = if protocol::exchange_id(&whole) == head.id {
            run_exchange(&*store, &metrics, &device, &whole, true)
        } else {
            Err(malformed(
                "the parts do not make up the exchange they name (its id differs): send it again",
            ))
        };
        match out {
            Ok(out) => Ok(resume.answered(&device.id, &head, &out)),
            Err(e) => {
                resume.forget(&device.id);
                Err(e)
            }
        }
    })
    .await?;
    Ok(reply(out))
}

/// The 400 for a body that does not decode.
fn decode_error(e: DecodeError) -> ApiError {
    match e {
        DecodeError::Version(_) => ApiError::new(StatusCode::BAD_REQUEST, "unsupported_version", e.to_string()),
        _ => malformed(&e.to_string()),
    }
}

fn malformed(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed", message)
}

/// The sync answer: no content type, the body names itself (kind, version), and a
/// one-mark exchange is counted in bytes (docs/PROTOCOL.md).
fn reply(out: Vec<u8>) -> Response {
    Response::new(axum::body::Body::from(out))
}

/// The bearer token's hash, once the device's request rate allows one more exchange.
fn sync_token(st: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_token",
            "a bearer token is required: enrol the device first",
        ));
    };
    let token_hash = hash_secret(token);
    // Keyed by the token's hash: a storm is cut before any database work, whether or
    // not the token is valid.
    if st.sync_limiter.check_key(&token_hash).is_err() {
        return Err(too_many("sync requests from this device"));
    }
    if st.sync_limiter.len() > 100_000 {
        st.sync_limiter.retain_recent();
    }
    Ok(token_hash)
}

/// The enrolled, not revoked, device the token names.
fn sync_device(store: &dyn Store, token_hash: &str) -> Result<crate::store::DeviceRow, ApiError> {
    let Some(device) = store.device_by_token(token_hash)? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "the token is not known to this server",
        ));
    };
    crate::telemetry::record_device(&device.id);
    if device.revoked_at.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "device_revoked",
            "this device has been revoked by an administrator; its unsent data stays on the device",
        ));
    }
    Ok(device)
}

/// Why a request body stopped before its end.
struct BodyCut {
    too_large: bool,
    message: String,
}

impl BodyCut {
    fn into_api(self) -> ApiError {
        if self.too_large {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", self.message)
        } else {
            malformed(&format!("the request body stopped before its end: {}", self.message))
        }
    }
}

/// The body as it arrives, and why it stopped early if it did; the bytes that came
/// before a cut are returned too. Bounded by the body limit layer.
async fn read_body(body: axum::body::Body) -> (Vec<u8>, Option<BodyCut>) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut out = Vec::new();
    // Bounded: every frame is at least one byte or ends the body, and the limit layer
    // ends it past `max_body_bytes`.
    loop {
        match body.frame().await {
            None => return (out, None),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                }
            }
            Some(Err(e)) => {
                // The limit layer's error, somewhere under axum's.
                let too_large = std::iter::successors(std::error::Error::source(&e), |s| s.source())
                    .any(|s| s.is::<http_body_util::LengthLimitError>());
                return (
                    out,
                    Some(BodyCut {
                        too_large,
                        message: e.to_string(),
                    }),
                );
            }
        }
    }
}

/// Runs one exchange for `device`: decode, check and store the pushes, updates since its
/// cursor, its contact figures, all in one transaction; the encoded answer.
fn run_exchange(
    store: &dyn Store,
    metrics: &Metrics,
    device: &crate::store::DeviceRow,
    body: &[u8],
    compact: bool,
) -> Result<Vec<u8>, ApiError> {
    let bytes_up = body.len() as i64;
    let req = if compact {
        SyncRequest::decode_compact(body)
    } else {
        SyncRequest::decode(body)
    };
    let req = req.map_err(decode_error)?;
    let unit: UnitKey = device
        .unit
        .parse()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "device unit unreadable"))?;
    let actor = automerge::ActorId::from(hex::decode(&device.actor).unwrap_or_default());
    let peer = Peer {
        device_id: device.id.clone(),
        unit,
        actor,
    };
    // An empty version: the device told it before and it has not changed.
    let app_version = if req.app_version.is_empty() {
        device.app_version.clone()
    } else {
        req.app_version.clone()
    };
    let mut answer = None;
    let mut marks = 0;
    store.write(&mut |tx| {
        // Counted afresh on each attempt: a backend may run the transaction again.
        let mut counting = CountingTx { inner: tx, marks: 0 };
        let response = process(&mut counting, &peer, &req)?;
        marks = counting.marks;
        let out = if compact {
            response.encode_compact()
        } else {
            response.encode()
        };
        // The device's page figures and cursor in the same transaction: one commit.
        tx.record_contact(&Contact {
            device_id: &device.id,
            now: now(),
            pending: req.pending_changes as i64,
            app_version: &app_version,
            bytes_up,
            bytes_down: out.len() as i64,
            cursor: response.cursor as i64,
        })?;
        sync_core::failpoint::hit("server.before_commit");
        answer = Some((response, out));
        Ok(())
    })?;
    sync_core::failpoint::hit("server.after_commit");
    let (response, out) =
        answer.ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no response"))?;
    let refused = response
        .results
        .iter()
        .filter(|r| matches!(r.outcome, protocol::Outcome::Refused { .. }))
        .count();
    let accepted = response
        .results
        .iter()
        .filter(|r| matches!(r.outcome, protocol::Outcome::Accepted))
        .count();
    metrics.sync_done(&device.id, marks, accepted as u64, refused as u64);
    tracing::info!(device = %device.id, docs_in = req.docs.len(), refused, updates = response.updates.len(), bytes_up, bytes_down = out.len(), "sync");
    Ok(out)
}

/// The sync's transaction, counting the marks it stores: every op of a new change to an
/// attendance document is one mark written (the documents are flat maps whose only keys
/// are marks, `docs.rs`), so the count costs nothing beyond the changes already parsed.
struct CountingTx<'a> {
    inner: &'a mut dyn DocTx,
    marks: u64,
}

impl DocTx for CountingTx<'_> {
    fn load(&mut self, id: &sync_core::docs::DocId) -> StoreResult<Option<StoredDoc>> {
        self.inner.load(id)
    }
    fn load_for_update(&mut self, id: &sync_core::docs::DocId) -> StoreResult<Option<StoredDoc>> {
        self.inner.load_for_update(id)
    }
    fn store(
        &mut self,
        id: &sync_core::docs::DocId,
        doc: &automerge::Automerge,
        new_changes: &[automerge::Change],
        projection: &Projection,
        device: &str,
    ) -> StoreResult<()> {
        self.inner.store(id, doc, new_changes, projection, device)?;
        if id.kind == sync_core::docs::DocKind::Attendance {
            self.marks += new_changes.iter().map(|c| c.len() as u64).sum::<u64>();
        }
        Ok(())
    }
    fn refuse(&mut self, device: &str, doc: &str, reason: &str, data: &[u8]) -> StoreResult<()> {
        self.inner.refuse(device, doc, reason, data)
    }
    fn changed_since(&mut self, units: &[String], cursor: i64) -> StoreResult<Vec<(String, i64, i64)>> {
        self.inner.changed_since(units, cursor)
    }
    fn changes_since(&mut self, id: &str, cursor: i64) -> StoreResult<Vec<u8>> {
        self.inner.changes_since(id, cursor)
    }
    fn max_seq(&mut self) -> StoreResult<i64> {
        self.inner.max_seq()
    }
    fn change_log(&mut self, units: &[String], after: i64, upto: i64) -> StoreResult<Vec<(i64, String, [u8; 32])>> {
        self.inner.change_log(units, after, upto)
    }
    fn first_change_seq(&mut self, doc: &str) -> StoreResult<Option<i64>> {
        self.inner.first_change_seq(doc)
    }
    // Every method with a default body is forwarded too, or the backend's own would be
    // silently replaced by the default.
    fn keep(&mut self, id: &sync_core::docs::DocId, doc: automerge::Automerge) {
        self.inner.keep(id, doc)
    }
    fn course_outline(&mut self, course: &sync_core::docs::DocId) -> StoreResult<Option<sync_core::docs::CourseDoc>> {
        self.inner.course_outline(course)
    }
    fn record_contact(&mut self, contact: &Contact<'_>) -> StoreResult<()> {
        self.inner.record_contact(contact)
    }
}
