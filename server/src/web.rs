//! Server-rendered pages for the province and district organisers: small (each page
//! under 100 KB), no external assets (inline CSS, charts as inline SVG), readable on a
//! slow link and a tablet. Vietnamese first, English with `?lang=en` (kept in a cookie).
//!
//! Access: every page but sign-in needs a session (accounts.rs); an account sees only
//! its unit's subtree, and a course, device or unit outside it answers 404 like one that
//! does not exist. Every form POST carries a CSRF token derived from the session (the
//! sign-in form: a double-submit cookie), and cookies are HttpOnly, SameSite=Strict.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sync_core::model::MarkStatus;
use sync_core::report::CourseReport;
use sync_core::units::{Level, Scheme, UnitKey, UnitTree};

use crate::accounts::{self, csrf_for, same_secret, SESSION_SECONDS};
use crate::api::{canonical_code, hash_secret, new_code, now, ApiError, AppState};
use crate::store::{AccountRow, CourseListRow};

/// Sign-in attempts per account name per minute, and per node per minute.
pub const LOGIN_PER_MINUTE_PER_NAME: u32 = 5;
pub const LOGIN_PER_MINUTE: u32 = 120;

const SESSION_COOKIE: &str = "dd_session";
const LOGIN_COOKIE: &str = "dd_login";
const LANG_COOKIE: &str = "dd_lang";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/courses/{id}", get(course_page))
        .route("/courses/{id}/marks.csv", get(course_csv))
        .route("/courses/{id}/report.xlsx", get(course_xlsx))
        .route("/reports/unit.xlsx", get(unit_xlsx))
        .route("/reports/annual.xlsx", get(annual_xlsx))
        .route("/api/courses/{id}", get(course_json))
        .route("/conflicts", get(conflicts_page))
        .route("/conflicts/resolve", post(resolve_conflict))
        .route("/refusals", get(refusals_page))
        .route("/devices", get(devices_page))
        .route("/devices/revoke", post(revoke_device))
        .route("/devices/code", post(issue_code))
        .route("/downloads", get(downloads_page))
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Percent-encoding for a query value (unit keys and ids are ASCII; this is the rest).
fn url(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Vi,
    En,
}

impl Lang {
    fn t(self, vi: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Vi => vi,
            Lang::En => en,
        }
    }
    fn code(self) -> &'static str {
        self.t("vi", "en")
    }
    fn status(self, s: MarkStatus) -> &'static str {
        match s {
            MarkStatus::Present => self.t("có mặt", "present"),
            MarkStatus::Late => self.t("đi muộn", "late"),
            MarkStatus::LeftEarly => self.t("về sớm", "left early"),
            MarkStatus::Excused => self.t("vắng có phép", "excused"),
            MarkStatus::Absent => self.t("vắng", "absent"),
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query(uri: &Uri) -> HashMap<String, String> {
    Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// The language of a request: `?lang=` first (and then remembered), else the cookie.
fn lang_of(headers: &HeaderMap, uri: &Uri) -> (Lang, Option<Lang>) {
    match query(uri).get("lang").map(String::as_str) {
        Some("en") => (Lang::En, Some(Lang::En)),
        Some("vi") => (Lang::Vi, Some(Lang::Vi)),
        _ => match cookie(headers, LANG_COOKIE) {
            Some("en") => (Lang::En, None),
            _ => (Lang::Vi, None),
        },
    }
}

/// Who is asking, in which language.
struct Ctx {
    lang: Lang,
    set_lang: Option<Lang>,
    account: AccountRow,
    unit: UnitKey,
    csrf: String,
    path: String,
}

impl Ctx {
    fn t(&self, vi: &'static str, en: &'static str) -> &'static str {
        self.lang.t(vi, en)
    }
    /// Is `unit` in this account's view?
    fn sees(&self, unit: &UnitKey) -> bool {
        UnitTree::reference().is_within(unit, &self.unit)
    }
    fn sees_str(&self, unit: &str) -> bool {
        unit.parse::<UnitKey>().map(|u| self.sees(&u)).unwrap_or(false)
    }
    fn csrf_field(&self) -> String {
        format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", self.csrf)
    }
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "page failed"))?
}

/// The signed-in account, or a redirect to the sign-in page.
async fn ctx(st: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Ctx, Response> {
    let (lang, set_lang) = lang_of(headers, uri);
    let login = match set_lang {
        Some(l) => format!("/login?lang={}", l.code()),
        None => "/login".to_string(),
    };
    let Some(token) = cookie(headers, SESSION_COOKIE).map(str::to_string) else {
        return Err(redirect(&login));
    };
    let store = st.store.clone();
    let hash = hash_secret(&token);
    let account = blocking(move || Ok(store.web_session(&hash, now())?))
        .await
        .map_err(|e| error_page(lang, e.status(), e.message()))?;
    let Some(account) = account else {
        return Err(redirect(&login));
    };
    let Ok(unit) = account.unit.parse::<UnitKey>() else {
        return Err(error_page(
            lang,
            StatusCode::INTERNAL_SERVER_ERROR,
            "account unit unreadable",
        ));
    };
    Ok(Ctx {
        lang,
        set_lang,
        account,
        unit,
        csrf: csrf_for(&token),
        path: uri.path().to_string(),
    })
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#111;background:#fff;font-size:1rem;line-height:1.4}\
header{background:#0b3d6e;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center}\
header a,header button{color:#fff;font-size:1rem}header .brand{font-weight:bold;margin-right:1rem}\
nav{display:flex;flex-wrap:wrap;gap:.2rem .9rem}nav a{padding:.5rem .1rem;display:inline-block}nav a[aria-current]{font-weight:bold;text-decoration-thickness:3px}\
main{padding:0 1rem 2rem;max-width:80rem}\
.tbl{overflow-x:auto}table{border-collapse:collapse;font-size:.95rem;margin:.5rem 0}td,th{border:1px solid #767676;padding:.35rem .5rem;text-align:left;vertical-align:top}\
th{background:#e8e8e8;white-space:nowrap}td.n{text-align:right}\
.pr{background:#c9efc9}.la{background:#fff0a8}.le{background:#fdd9b0}.ex{background:#d3defc}.ab{background:#f6c3c3}\
.cf{outline:3px solid #b00000;outline-offset:-3px;font-weight:bold}\
a{color:#0645ad}button,input,select{font-size:1rem;padding:.45rem .7rem;min-height:2.6rem}button{cursor:pointer}\
:focus-visible{outline:3px solid #c25100;outline-offset:2px}\
.err{background:#fde2e2;border-left:5px solid #b00000;padding:.6rem}.ok{background:#ddf3dd;border-left:5px solid #1e6b1e;padding:.6rem}\
.code{font-family:monospace;font-size:1.5rem;letter-spacing:.1rem}form.inline{display:inline}label{display:inline-block;margin:.3rem .5rem .3rem 0}\
.crumbs a,.crumbs span{margin-right:.4rem}.muted{color:#555}";

/// The page skeleton; `ctx` adds the navigation and the sign-out button.
fn page(lang: Lang, ctx: Option<&Ctx>, title: &str, body: &str) -> String {
    let other = match lang {
        Lang::Vi => "<a href=\"?lang=en\" lang=\"en\">English</a>",
        Lang::En => "<a href=\"?lang=vi\" lang=\"vi\">Tiếng Việt</a>",
    };
    let nav = ctx
        .map(|c| {
            let items = [
                ("/", c.t("Tổng quan", "Overview")),
                ("/conflicts", c.t("Xung đột", "Conflicts")),
                ("/refusals", c.t("Bị từ chối", "Refused")),
                ("/devices", c.t("Thiết bị", "Devices")),
                ("/downloads", c.t("Tải về", "Downloads")),
            ];
            let mut s = format!("<nav aria-label=\"{}\">", c.t("Trang", "Pages"));
            for (href, label) in items {
                let cur = if c.path == href { " aria-current=\"page\"" } else { "" };
                s.push_str(&format!("<a href=\"{href}\"{cur}>{label}</a>"));
            }
            s.push_str(&format!(
                "</nav><span>{} <b>{}</b> · {}</span><form class=\"inline\" method=\"post\" action=\"/logout\">{}<button type=\"submit\" style=\"background:#0b3d6e;border:1px solid #fff\">{}</button></form>",
                c.t("Tài khoản", "Account"),
                esc(&c.account.name),
                esc(&unit_name(&c.account.unit)),
                c.csrf_field(),
                c.t("Đăng xuất", "Sign out")
            ));
            s
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"{l}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{t} — diemdanh</title><style>{STYLE}</style></head><body><header><span class=\"brand\">diemdanh</span>{nav}{other}</header>\
<main><p class=\"muted\">{sub}</p><h1>{t}</h1>{body}</main></body></html>",
        l = lang.code(),
        t = esc(title),
        sub = lang.t(
            "Điểm danh lớp bồi dưỡng cán bộ, công chức cấp xã",
            "Attendance at training courses for commune cadres and civil servants"
        ),
    )
}

fn html(ctx: Option<&Ctx>, status: StatusCode, doc: String, set_lang: Option<Lang>) -> Response {
    let mut resp = (status, Html(doc)).into_response();
    let set = set_lang.or(ctx.and_then(|c| c.set_lang));
    if let Some(l) = set {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Strict",
            l.code()
        )) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    resp
}

fn ok_page(ctx: &Ctx, title: &str, body: &str) -> Response {
    html(Some(ctx), StatusCode::OK, page(ctx.lang, Some(ctx), title, body), None)
}

fn error_page(lang: Lang, status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => lang.t("Không tìm thấy", "Not found"),
        StatusCode::FORBIDDEN => lang.t("Không được phép", "Forbidden"),
        StatusCode::TOO_MANY_REQUESTS => lang.t("Quá nhiều lần thử", "Too many attempts"),
        s if s.is_client_error() => lang.t("Yêu cầu không hợp lệ", "Bad request"),
        _ => lang.t("Lỗi máy chủ", "Server error"),
    };
    let body = format!(
        "<p class=\"err\" role=\"alert\">{}</p><p><a href=\"/\">{}</a></p>",
        esc(message),
        lang.t("Về trang tổng quan", "Back to the overview")
    );
    html(None, status, page(lang, None, title, &body), None)
}

fn ctx_error(ctx: &Ctx, e: ApiError) -> Response {
    let status = e.status();
    html(
        Some(ctx),
        status,
        page(
            ctx.lang,
            Some(ctx),
            ctx.t("Không thực hiện được", "Could not be done"),
            &format!("<p class=\"err\" role=\"alert\">{}</p>", esc(e.message())),
        ),
        None,
    )
}

fn not_found(ctx: &Ctx) -> Response {
    error_page(
        ctx.lang,
        StatusCode::NOT_FOUND,
        ctx.t(
            "Không có mục này trong phạm vi tài khoản của bạn.",
            "There is no such item in your account's view.",
        ),
    )
}

fn unit_name(unit: &str) -> String {
    UnitTree::reference()
        .resolve(unit)
        .map(|u| u.name.clone())
        .unwrap_or_else(|_| unit.to_string())
}

fn fmt_time(t: Option<i64>, lang: Lang) -> String {
    t.map(sync_core::device::format_time)
        .unwrap_or_else(|| lang.t("chưa bao giờ", "never").to_string())
}

fn bytes(n: i64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

// ---- sign-in ----

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

fn login_doc(lang: Lang, csrf: &str, name: &str, error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"err\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "{err}<form method=\"post\" action=\"/login\" style=\"max-width:24rem\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<p><label for=\"name\">{ln}</label><br><input id=\"name\" name=\"name\" autocomplete=\"username\" required autofocus value=\"{name}\" style=\"width:100%\"></p>\
<p><label for=\"password\">{lp}</label><br><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required style=\"width:100%\"></p>\
<p><button type=\"submit\">{lb}</button></p></form>",
        csrf = esc(csrf),
        name = esc(name),
        ln = lang.t("Tên tài khoản", "Account name"),
        lp = lang.t("Mật khẩu", "Password"),
        lb = lang.t("Đăng nhập", "Sign in"),
    );
    page(lang, None, lang.t("Đăng nhập", "Sign in"), &body)
}

fn login_cookie(value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={value}; Path=/login; Max-Age=3600; HttpOnly; SameSite=Strict"
    ))
    .ok()
}

async fn login_page(headers: HeaderMap, uri: Uri) -> Response {
    let (lang, set_lang) = lang_of(&headers, &uri);
    let existing = cookie(&headers, LOGIN_COOKIE).filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let token = existing
        .map(str::to_string)
        .unwrap_or_else(|| accounts::new_session_token().0);
    let mut resp = html(None, StatusCode::OK, login_doc(lang, &token, "", None), set_lang);
    if existing.is_none() {
        if let Some(v) = login_cookie(&token) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

async fn login(State(st): State<AppState>, headers: HeaderMap, uri: Uri, Form(form): Form<LoginForm>) -> Response {
    let (lang, _) = lang_of(&headers, &uri);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same_secret(expected, &form.csrf) {
        return error_page(
            lang,
            StatusCode::FORBIDDEN,
            lang.t(
                "Biểu mẫu đã hết hạn. Hãy mở lại trang đăng nhập.",
                "The form has expired. Open the sign-in page again.",
            ),
        );
    }
    let name = form.name.trim().to_string();
    let key = name.to_lowercase();
    if st.login_global.check().is_err() || st.login_limiter.check_key(&key).is_err() {
        tracing::warn!("sign-in rate limited");
        return error_page(
            lang,
            StatusCode::TOO_MANY_REQUESTS,
            lang.t(
                "Quá nhiều lần đăng nhập sai. Hãy chờ một phút rồi thử lại.",
                "Too many sign-in attempts. Wait a minute and try again.",
            ),
        );
    }
    if st.login_limiter.len() > 100_000 {
        st.login_limiter.retain_recent();
    }
    let store = st.store.clone();
    let password = form.password;
    let lookup = name.clone();
    let outcome = blocking(move || {
        let account = store.account(&lookup)?;
        let hash = account
            .as_ref()
            .map(|a| a.password_hash.as_str())
            .unwrap_or(accounts::decoy_hash());
        let good = accounts::verify_password(&password, hash) && account.is_some();
        if !good {
            return Ok(None);
        }
        let (token, token_hash) = accounts::new_session_token();
        let t = now();
        store.create_web_session(&token_hash, &lookup, t, t + SESSION_SECONDS)?;
        Ok(Some(token))
    })
    .await;
    match outcome {
        Ok(Some(token)) => {
            tracing::info!("web sign-in");
            let mut resp = redirect("/");
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{SESSION_COOKIE}={token}; Path=/; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict"
            )) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            // The sign-in form's token is spent.
            resp.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_static("dd_login=; Path=/login; Max-Age=0; HttpOnly; SameSite=Strict"),
            );
            resp
        }
        Ok(None) => {
            tracing::info!("web sign-in refused");
            html(
                None,
                StatusCode::UNAUTHORIZED,
                login_doc(
                    lang,
                    expected,
                    &name,
                    Some(lang.t(
                        "Tên tài khoản hoặc mật khẩu không đúng.",
                        "The account name or the password is wrong.",
                    )),
                ),
                None,
            )
        }
        Err(e) => error_page(lang, e.status(), e.message()),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// The refusal page when the form's CSRF token is not the session's, else None.
fn csrf_refused(ctx: &Ctx, sent: &str) -> Option<Response> {
    if same_secret(&ctx.csrf, sent) {
        None
    } else {
        tracing::warn!("web form with a wrong CSRF token");
        Some(error_page(
            ctx.lang,
            StatusCode::FORBIDDEN,
            ctx.t(
                "Biểu mẫu không hợp lệ hoặc đã hết hạn. Hãy tải lại trang rồi thử lại.",
                "The form is not valid or has expired. Reload the page and try again.",
            ),
        ))
    }
}

async fn logout(State(st): State<AppState>, headers: HeaderMap, uri: Uri, Form(form): Form<CsrfForm>) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(r) = csrf_refused(&c, &form.csrf) {
        return r;
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let store = st.store.clone();
        let hash = hash_secret(token);
        if let Err(e) = blocking(move || Ok(store.delete_web_session(&hash)?)).await {
            return ctx_error(&c, e);
        }
    }
    let mut resp = redirect("/login");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

// ---- overview ----

/// Is `x` (a unit of either scheme) the place of a course recorded under `course_unit`?
/// A legacy unit covers the 2025 communes its communes went to.
fn covers(x: &UnitKey, course_unit: &UnitKey) -> bool {
    let tree = UnitTree::reference();
    if tree.is_within(course_unit, x) {
        return true;
    }
    x.scheme == Scheme::Legacy
        && course_unit.scheme == Scheme::S2025
        && tree
            .subtree(x)
            .iter()
            .any(|c| tree.get(c).is_some_and(|u| u.level == Level::Commune) && tree.is_within(c, course_unit))
}

/// Can the account open unit `x` in the overview? Its own subtree, or a legacy unit
/// some of whose communes went into its subtree.
fn visible_unit(c: &Ctx, x: &UnitKey) -> bool {
    if c.sees(x) {
        return true;
    }
    let tree = UnitTree::reference();
    x.scheme == Scheme::Legacy
        && c.unit.scheme == Scheme::S2025
        && tree
            .subtree(x)
            .iter()
            .any(|u| tree.get(u).is_some_and(|u| u.level == Level::Commune) && c.sees(u))
}

/// The province (root) of a unit.
fn province_of(u: &UnitKey) -> UnitKey {
    UnitTree::reference()
        .ancestors(u)
        .last()
        .cloned()
        .unwrap_or_else(|| u.clone())
}

#[derive(Default)]
struct Tally {
    courses: i64,
    trainees: i64,
    marks: i64,
    expected: i64,
    conflicts: i64,
}

impl Tally {
    fn add(&mut self, c: &CourseListRow) {
        self.courses += 1;
        self.trainees += c.trainees;
        self.marks += c.marks;
        self.expected += c.sessions * c.trainees;
        self.conflicts += c.conflicts;
    }
    fn recorded(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            (self.marks as f64 / self.expected as f64).min(1.0)
        }
    }
}

/// A horizontal bar chart as inline SVG: one bar per row, values 0..=1.
fn bar_chart(title: &str, rows: &[(String, f64)]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let h = 26;
    let height = rows.len() * h + 8;
    let mut s = format!(
        "<figure style=\"margin:.5rem 0\"><figcaption>{t}</figcaption><svg role=\"img\" aria-label=\"{t}\" width=\"100%\" viewBox=\"0 0 600 {height}\" style=\"max-width:40rem\">",
        t = esc(title)
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = i * h + 4;
        let w = (v.clamp(0.0, 1.0) * 300.0).round();
        let label: String = label.chars().take(34).collect();
        s.push_str(&format!(
            "<text x=\"0\" y=\"{ty}\" font-size=\"13\" fill=\"#111\">{l}</text><rect x=\"250\" y=\"{y}\" width=\"300\" height=\"18\" fill=\"#e8e8e8\"/><rect x=\"250\" y=\"{y}\" width=\"{w}\" height=\"18\" fill=\"#1f5fa8\"/><text x=\"556\" y=\"{ty}\" font-size=\"13\" fill=\"#111\">{p:.0}%</text>",
            ty = y + 14,
            l = esc(&label),
            p = v * 100.0
        ));
    }
    s.push_str("</svg></figure>");
    s
}

async fn overview(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = query(&uri);
    let unit = match q.get("unit").map(|u| u.parse::<UnitKey>()) {
        None => c.unit.clone(),
        Some(Ok(u)) if UnitTree::reference().get(&u).is_some() && visible_unit(&c, &u) => u,
        Some(_) => return not_found(&c),
    };
    let store = st.store.clone();
    let courses = match blocking(move || Ok(store.courses()?)).await {
        Ok(v) => v,
        Err(e) => return ctx_error(&c, e),
    };
    let tree = UnitTree::reference();
    let courses: Vec<CourseListRow> = courses
        .into_iter()
        .filter(|r| r.unit.parse::<UnitKey>().is_ok_and(|u| c.sees(&u) && covers(&unit, &u)))
        .collect();
    let units: Vec<(CourseListRow, UnitKey)> = courses
        .iter()
        .filter_map(|r| r.unit.parse::<UnitKey>().ok().map(|u| (r.clone(), u)))
        .collect();

    let mut body = String::new();
    // Breadcrumbs: the visible ancestors, then this unit.
    body.push_str(&format!(
        "<p class=\"crumbs\" aria-label=\"{}\">",
        c.t("Vị trí", "Location")
    ));
    let mut ancestors = tree.ancestors(&unit);
    ancestors.reverse();
    for a in ancestors.iter().filter(|a| visible_unit(&c, a)) {
        body.push_str(&format!(
            "<a href=\"/?unit={}\">{}</a> ›",
            url(&a.to_string()),
            esc(&unit_name(&a.to_string()))
        ));
    }
    body.push_str(&format!("<span><b>{}</b></span>", esc(&unit_name(&unit.to_string()))));
    let scheme_link = match unit.scheme {
        Scheme::S2025 => format!(
            " · <a href=\"/?unit={}\">{}</a>",
            url(&format!("legacy:{}", province_of(&unit).code)),
            c.t(
                "Xem theo cơ cấu cũ (trước 7/2025)",
                "View by the former structure (before 7/2025)"
            )
        ),
        Scheme::Legacy => format!(
            " · <a href=\"/\">{}</a>",
            c.t(
                "Xem theo cơ cấu hiện hành (2025)",
                "View by the current structure (2025)"
            )
        ),
    };
    body.push_str(&scheme_link);
    body.push_str("</p>");

    // What this unit's subtree holds (never the whole server's figures: other
    // provinces are not this account's business).
    let mut here = Tally::default();
    for (r, _) in &units {
        here.add(r);
    }
    body.push_str(&format!(
        "<div class=\"tbl\"><table><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr>\
<tr><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.0}%</td><td class=n>{}</td></tr></table></div>",
        c.t("Lớp", "Courses"),
        c.t("Học viên", "Trainees"),
        c.t("Lượt điểm danh", "Marks"),
        c.t("Đã điểm danh", "Recorded"),
        c.t("Xung đột", "Conflicts"),
        here.courses,
        here.trainees,
        here.marks,
        here.recorded() * 100.0,
        here.conflicts
    ));

    // The units one level down, with what they hold.
    let children: Vec<&UnitKey> = tree.children(&unit).iter().filter(|k| visible_unit(&c, k)).collect();
    if !children.is_empty() {
        let mut rows = Vec::new();
        let mut chart = Vec::new();
        for k in &children {
            let mut t = Tally::default();
            for (r, u) in &units {
                if covers(k, u) {
                    t.add(r);
                }
            }
            if t.courses > 0 {
                chart.push((unit_name(&k.to_string()), t.recorded()));
            }
            rows.push((k, t));
        }
        body.push_str(&bar_chart(
            c.t(
                "Tỷ lệ đã điểm danh (lượt đã ghi / học viên × buổi)",
                "Share of attendance recorded (marks / trainees × sessions)",
            ),
            &chart,
        ));
        body.push_str(&format!(
            "<h2>{}</h2><div class=\"tbl\"><table><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr>",
            c.t("Đơn vị trực thuộc", "Units below"),
            c.t("Đơn vị", "Unit"),
            c.t("Lớp", "Courses"),
            c.t("Học viên", "Trainees"),
            c.t("Lượt điểm danh", "Marks"),
            c.t("Xung đột", "Conflicts"),
        ));
        let (busy, idle): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, t)| t.courses > 0);
        for (k, t) in busy {
            body.push_str(&format!(
                "<tr><td><a href=\"/?unit={}\">{}</a></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                url(&k.to_string()),
                esc(&unit_name(&k.to_string())),
                t.courses,
                t.trainees,
                t.marks,
                t.conflicts
            ));
        }
        body.push_str("</table></div>");
        if !idle.is_empty() {
            body.push_str(&format!(
                "<details><summary>{} ({})</summary><p>",
                c.t("Đơn vị chưa có lớp", "Units with no course yet"),
                idle.len()
            ));
            let links: Vec<String> = idle
                .iter()
                .map(|(k, _)| {
                    format!(
                        "<a href=\"/?unit={}\">{}</a>",
                        url(&k.to_string()),
                        esc(&unit_name(&k.to_string()))
                    )
                })
                .collect();
            body.push_str(&links.join(" · "));
            body.push_str("</p></details>");
        }
    }

    body.push_str(&format!("<h2>{}</h2>", c.t("Lớp học", "Courses")));
    if courses.is_empty() {
        body.push_str(&format!("<p>{}</p>", c.t("Chưa có lớp nào.", "No courses yet.")));
    } else {
        body.push_str(&format!(
            "<div class=\"tbl\"><table><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr>",
            c.t("Đơn vị", "Unit"),
            c.t("Lớp", "Course"),
            c.t("Buổi", "Sessions"),
            c.t("Học viên", "Trainees"),
            c.t("Lượt điểm danh", "Marks"),
            c.t("Xung đột", "Conflicts"),
        ));
        for r in courses.iter().take(300) {
            body.push_str(&format!(
                "<tr><td>{}</td><td><a href=\"/courses/{}\">{}</a></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&unit_name(&r.unit)),
                url(&r.id),
                esc(&r.title),
                r.sessions,
                r.trainees,
                r.marks,
                r.conflicts
            ));
        }
        body.push_str("</table></div>");
        if courses.len() > 300 {
            body.push_str(&format!(
                "<p>{} {}</p>",
                courses.len() - 300,
                c.t(
                    "lớp nữa: chọn một đơn vị cấp dưới.",
                    "more courses: choose a unit below."
                )
            ));
        }
    }
    if c.sees(&unit) {
        let year = this_year();
        let u = url(&unit.to_string());
        body.push_str(&format!(
            "<h2>{}</h2><p><a href=\"/reports/unit.xlsx?unit={u}&amp;from={year}-01-01&amp;to={year}-12-31\" download>{} {year} (Excel)</a> · \
<a href=\"/reports/annual.xlsx?unit={u}&amp;year={year}\" download>{} {year} (Excel)</a> · <a href=\"/downloads\">{}</a></p>",
            c.t("Báo cáo", "Reports"),
            c.t("Báo cáo đơn vị năm", "Unit report for"),
            c.t("Báo cáo đào tạo, bồi dưỡng năm", "Annual training report"),
            c.t("Báo cáo khác, chọn kỳ", "Other reports, choose the period"),
        ));
    }
    let title = format!("{} — {}", c.t("Tổng quan", "Overview"), unit_name(&unit.to_string()));
    ok_page(&c, &title, &body)
}

// ---- courses ----

/// The course report, if the course exists and is in the account's view.
async fn load_report(st: &AppState, c: &Ctx, id: String) -> Result<Option<CourseReport>, ApiError> {
    let store = st.store.clone();
    let rows = blocking(move || Ok(store.course_rows(&id)?)).await?;
    Ok(rows.filter(|r| c.sees_str(&r.unit)).map(CourseReport::assemble))
}

async fn course_json(State(st): State<AppState>, headers: HeaderMap, uri: Uri, Path(id): Path<String>) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match load_report(&st, &c, id).await {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such course in this account's view",
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// A matrix cell's class and symbol. Short on purpose: a 100-trainee x 50-session page
/// has 5,000 cells and must stay under 100 KB.
fn cell(s: MarkStatus, lang: Lang) -> (&'static str, &'static str) {
    match s {
        MarkStatus::Present => ("pr", "✓"),
        MarkStatus::Late => ("la", lang.t("M", "L")),
        MarkStatus::LeftEarly => ("le", lang.t("V", "E")),
        MarkStatus::Excused => ("ex", lang.t("P", "X")),
        MarkStatus::Absent => ("ab", "✗"),
    }
}

async fn course_page(State(st): State<AppState>, headers: HeaderMap, uri: Uri, Path(id): Path<String>) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = match load_report(&st, &c, id).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(&c),
        Err(e) => return ctx_error(&c, e),
    };
    let lang = c.lang;
    let mut body = format!(
        "<p><a href=\"/?unit={}\">{}</a> · {} {}% · {} {} · {} {} · {} {}</p>",
        url(&r.unit),
        esc(&unit_name(&r.unit)),
        c.t("ngưỡng chuyên cần", "attendance threshold"),
        (r.min_ratio * 100.0).round(),
        r.sessions.len(),
        c.t("buổi", "sessions"),
        r.trainees.len(),
        c.t("học viên", "trainees"),
        r.conflicts.len(),
        c.t("xung đột", "conflicts"),
    );
    body.push_str(&format!(
        "<p><a href=\"/courses/{id}/report.xlsx\" download>{}</a> · <a href=\"/courses/{id}/marks.csv\" download>{}</a>{}</p>",
        c.t("Tải báo cáo lớp (Excel)", "Download the course report (Excel)"),
        c.t("Tải bảng điểm danh (CSV)", "Download the attendance table (CSV)"),
        if r.conflicts.is_empty() {
            String::new()
        } else {
            format!(
                " · <a href=\"/conflicts#{}\">{}</a>",
                esc(&r.id),
                c.t("Giải quyết xung đột", "Resolve conflicts")
            )
        },
        id = url(&r.id)
    ));
    // Pages of trainees, sized so that a page of the largest course stays small.
    let per_page = (80_000 / (r.sessions.len() * 20 + 150)).clamp(20, 200);
    let pages = r.trainees.len().div_ceil(per_page).max(1);
    let page_no = query(&uri)
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let on_page: std::collections::HashSet<&str> = r
        .trainees
        .iter()
        .skip((page_no - 1) * per_page)
        .take(per_page)
        .map(|t| t.id.as_str())
        .collect();
    // One pass over the course's marks (50,000 for the largest): the chart's per-session
    // counts, and the cells of this page's trainees only.
    let mut attended_in: HashMap<&str, usize> = HashMap::new();
    let mut marks: HashMap<(&str, &str), MarkStatus> = HashMap::new();
    for m in &r.marks {
        if m.status.attended(r.excused_counts) {
            *attended_in.entry(m.session.as_str()).or_default() += 1;
        }
        if on_page.contains(m.cadre.as_str()) {
            marks.insert((m.session.as_str(), m.cadre.as_str()), m.status);
        }
    }
    let conflicts: std::collections::HashSet<(&str, &str)> = r
        .conflicts
        .iter()
        .filter(|k| on_page.contains(k.cadre.as_str()))
        .map(|k| (k.session.as_str(), k.cadre.as_str()))
        .collect();
    // Per session: the share of trainees who attended (as the course counts it; the
    // report holds one mark per enrolled trainee and session at most).
    let chart: Vec<(String, f64)> = r
        .sessions
        .iter()
        .map(|s| {
            let n = attended_in.get(s.id.as_str()).copied().unwrap_or(0);
            (s.date.clone(), n as f64 / r.trainees.len().max(1) as f64)
        })
        .collect();
    body.push_str(&format!(
        "<div class=\"tbl\"><table><caption>{}</caption><tr><th scope=\"col\">{}</th>",
        c.t("Bảng điểm danh", "Attendance"),
        c.t("Học viên", "Trainee")
    ));
    for s in &r.sessions {
        body.push_str(&format!(
            "<th scope=\"col\" title=\"{}\">{}</th>",
            esc(&s.date),
            esc(s.date.get(5..).unwrap_or(&s.date))
        ));
    }
    body.push_str(&format!(
        "<th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr>",
        c.t("Tỷ lệ", "Ratio"),
        c.t("Hoàn thành", "Completed")
    ));
    let rows = r
        .trainees
        .iter()
        .zip(&r.completion)
        .skip((page_no - 1) * per_page)
        .take(per_page);
    for (t, comp) in rows {
        body.push_str(&format!(
            "<tr><th scope=\"row\">{}</th>",
            esc(t.name.as_deref().unwrap_or(&t.id))
        ));
        for s in &r.sessions {
            let k = (s.id.as_str(), t.id.as_str());
            let Some(st) = marks.get(&k).copied() else {
                body.push_str("<td></td>");
                continue;
            };
            let (class, sym) = cell(st, lang);
            if conflicts.contains(&k) {
                body.push_str(&format!(
                    "<td class=\"{class} cf\" title=\"{} ({})\">{sym}!</td>",
                    lang.status(st),
                    c.t("xung đột", "conflict"),
                ));
            } else {
                body.push_str(&format!("<td class={class}>{sym}</td>"));
            }
        }
        body.push_str(&format!(
            "<td class=n>{:.0}%</td><td>{}</td></tr>",
            comp.ratio * 100.0,
            if comp.completed {
                c.t("Đạt", "Yes")
            } else {
                c.t("Chưa đạt", "No")
            }
        ));
    }
    body.push_str("</table></div>");
    if pages > 1 {
        body.push_str(&format!(
            "<nav aria-label=\"{}\"><p>{} {page_no}/{pages}",
            c.t("Trang của bảng", "Table pages"),
            c.t("Trang", "Page")
        ));
        if page_no > 1 {
            body.push_str(&format!(
                " · <a href=\"?page={}\">{}</a>",
                page_no - 1,
                c.t("Trang trước", "Previous")
            ));
        }
        if page_no < pages {
            body.push_str(&format!(
                " · <a href=\"?page={}\">{}</a>",
                page_no + 1,
                c.t("Trang sau", "Next")
            ));
        }
        body.push_str("</p></nav>");
    }
    let mut legend = String::from("<p>");
    for st in MarkStatus::ALL {
        let (class, sym) = cell(*st, lang);
        legend.push_str(&format!(
            "<span class={class} style=\"padding:0 .4rem\">{sym}</span> {} · ",
            lang.status(*st)
        ));
    }
    legend.push_str(&format!("! {}</p>", c.t("xung đột (viền đỏ)", "conflict (red border)")));
    body.push_str(&legend);
    // The chart after the matrix: the matrix is what people come for.
    body.push_str(&bar_chart(
        c.t(
            "Tỷ lệ học viên có mặt theo buổi",
            "Share of trainees attending, by session",
        ),
        &chart,
    ));
    ok_page(&c, &r.title, &body)
}

async fn course_csv(State(st): State<AppState>, headers: HeaderMap, uri: Uri, Path(id): Path<String>) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = match load_report(&st, &c, id).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(&c),
        Err(e) => return ctx_error(&c, e),
    };
    match course_csv_bytes(&r, c.lang) {
        Ok(bytes) => {
            let name = format!("attachment; filename=\"diemdanh-{}.csv\"", r.id);
            let mut resp = (StatusCode::OK, bytes).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            if let Ok(v) = HeaderValue::from_str(&name) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(e) => ctx_error(&c, ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e)),
    }
}

/// The course matrix as CSV: UTF-8 with a BOM so Excel shows Vietnamese.
pub fn course_csv_bytes(r: &CourseReport, lang: Lang) -> Result<Vec<u8>, String> {
    let mut out = b"\xEF\xBB\xBF".to_vec();
    {
        let mut w = csv::Writer::from_writer(&mut out);
        let mut head = vec![lang.t("Học viên", "Trainee").to_string()];
        head.extend(r.sessions.iter().map(|s| s.date.clone()));
        head.push(lang.t("Tỷ lệ (%)", "Ratio (%)").to_string());
        head.push(lang.t("Hoàn thành", "Completed").to_string());
        w.write_record(&head).map_err(|e| e.to_string())?;
        let marks: HashMap<(&str, &str), MarkStatus> = r
            .marks
            .iter()
            .map(|m| ((m.session.as_str(), m.cadre.as_str()), m.status))
            .collect();
        for (t, comp) in r.trainees.iter().zip(&r.completion) {
            let mut row = vec![t.name.clone().unwrap_or_else(|| t.id.clone())];
            for s in &r.sessions {
                row.push(
                    marks
                        .get(&(s.id.as_str(), t.id.as_str()))
                        .map(|m| lang.status(*m).to_string())
                        .unwrap_or_default(),
                );
            }
            row.push(format!("{:.1}", comp.ratio * 100.0));
            row.push(
                if comp.completed {
                    lang.t("Đạt", "Yes")
                } else {
                    lang.t("Chưa đạt", "No")
                }
                .to_string(),
            );
            w.write_record(&row).map_err(|e| e.to_string())?;
        }
        w.flush().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

// ---- conflicts ----

async fn conflicts_page(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let store = st.store.clone();
    let scope = c.unit.clone();
    let reports = blocking(move || {
        let tree = UnitTree::reference();
        let mut out = Vec::new();
        for course in store.courses()? {
            let inside = course.unit.parse::<UnitKey>().is_ok_and(|u| tree.is_within(&u, &scope));
            if course.conflicts == 0 || !inside {
                continue;
            }
            if let Some(rows) = store.course_rows(&course.id)? {
                out.push(CourseReport::assemble(rows));
            }
            if out.len() >= 50 {
                break;
            }
        }
        Ok(out)
    })
    .await;
    let reports = match reports {
        Ok(r) => r,
        Err(e) => return ctx_error(&c, e),
    };
    let q = query(&uri);
    let mut body = String::new();
    if q.contains_key("done") {
        body.push_str(&format!(
            "<p class=\"ok\" role=\"status\">{}</p>",
            c.t(
                "Đã ghi giá trị giải quyết. Các máy tính bảng sẽ nhận được ở lần đồng bộ tới.",
                "The resolving value is recorded. Tablets receive it at their next sync."
            )
        ));
    }
    body.push_str(&format!(
        "<p>{}</p>",
        c.t(
            "Hai máy ghi khác nhau cho cùng một học viên và buổi học khi không có mạng. Chọn giá trị đúng: máy chủ ghi nó thành một thay đổi mới.",
            "Two devices recorded different values for the same trainee and session while offline. Choose the right one: the server records it as a new change."
        )
    ));
    let total: usize = reports.iter().map(|r| r.conflicts.len()).sum();
    if total == 0 {
        body.push_str(&format!(
            "<p class=\"ok\">{}</p>",
            c.t("Không có xung đột nào.", "There are no conflicts.")
        ));
    }
    let mut n = 0;
    for r in &reports {
        body.push_str(&format!(
            "<h2 id=\"{}\"><a href=\"/courses/{}\">{}</a></h2><p>{}</p><div class=\"tbl\"><table><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr>",
            esc(&r.id),
            url(&r.id),
            esc(&r.title),
            esc(&unit_name(&r.unit)),
            c.t("Buổi", "Session"),
            c.t("Học viên", "Trainee"),
            c.t("Các giá trị đã ghi", "Values recorded"),
            c.t("Giải quyết", "Resolve"),
        ));
        let names: HashMap<&str, &str> = r
            .trainees
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_deref().unwrap_or(&t.id)))
            .collect();
        let dates: HashMap<&str, &str> = r.sessions.iter().map(|s| (s.id.as_str(), s.date.as_str())).collect();
        for k in &r.conflicts {
            n += 1;
            if n > 300 {
                break;
            }
            let values: Vec<&str> = k.values.iter().map(|v| c.lang.status(*v)).collect();
            let mut options = String::new();
            for s in MarkStatus::ALL {
                let sel = if k.values.first() == Some(s) { " selected" } else { "" };
                options.push_str(&format!(
                    "<option value=\"{}\"{sel}>{}</option>",
                    s.as_str(),
                    c.lang.status(*s)
                ));
            }
            body.push_str(&format!(
                "<tr><td>{date}</td><td>{name}</td><td>{vals}</td><td><form method=\"post\" action=\"/conflicts/resolve\">{csrf}\
<input type=\"hidden\" name=\"course\" value=\"{course}\"><input type=\"hidden\" name=\"session\" value=\"{session}\"><input type=\"hidden\" name=\"cadre\" value=\"{cadre}\">\
<label for=\"st{n}\">{lab}</label> <select id=\"st{n}\" name=\"status\">{options}</select> <button type=\"submit\">{btn}</button></form></td></tr>",
                date = esc(dates.get(k.session.as_str()).copied().unwrap_or(&k.session)),
                name = esc(names.get(k.cadre.as_str()).copied().unwrap_or(&k.cadre)),
                vals = esc(&values.join(" / ")),
                csrf = c.csrf_field(),
                course = esc(&r.id),
                session = esc(&k.session),
                cadre = esc(&k.cadre),
                lab = c.t("Giá trị đúng", "Right value"),
                btn = c.t("Ghi", "Record"),
            ));
        }
        body.push_str("</table></div>");
    }
    ok_page(&c, c.t("Xung đột cần xem xét", "Conflicts to review"), &body)
}

#[derive(Debug, Deserialize)]
struct ResolveForm {
    #[serde(default)]
    csrf: String,
    course: String,
    session: String,
    cadre: String,
    status: String,
}

async fn resolve_conflict(
    State(st): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<ResolveForm>,
) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(r) = csrf_refused(&c, &form.csrf) {
        return r;
    }
    let Ok(status) = form.status.parse::<MarkStatus>() else {
        return error_page(
            c.lang,
            StatusCode::BAD_REQUEST,
            c.t("Trạng thái không hợp lệ.", "Not a valid status."),
        );
    };
    let checks = [
        ("course", &form.course),
        ("session", &form.session),
        ("cadre", &form.cadre),
    ];
    if checks.iter().any(|(w, v)| sync_core::model::check_id(w, v).is_err()) {
        return error_page(
            c.lang,
            StatusCode::BAD_REQUEST,
            c.t("Mã không hợp lệ.", "Not a valid id."),
        );
    }
    let store = st.store.clone();
    let course = form.course.clone();
    let unit = match blocking(move || Ok(store.course_rows(&course)?.map(|r| r.unit))).await {
        Ok(Some(u)) if c.sees_str(&u) => u,
        Ok(_) => return not_found(&c),
        Err(e) => return ctx_error(&c, e),
    };
    let Ok(unit) = unit.parse::<UnitKey>() else {
        return not_found(&c);
    };
    let store = st.store.clone();
    let done = tokio::task::spawn_blocking(move || {
        crate::resolve::resolve_mark(&*store, &unit, &form.course, &form.session, &form.cadre, status, now())
    })
    .await;
    match done {
        Ok(Ok(())) => {
            tracing::info!("conflict resolved on the web");
            redirect("/conflicts?done=1")
        }
        Ok(Err(crate::resolve::ResolveError::Store(e))) => ctx_error(&c, e.into()),
        Ok(Err(e)) => ctx_error(&c, ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string())),
        Err(_) => ctx_error(
            &c,
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "resolve failed"),
        ),
    }
}

// ---- refusals ----

async fn refusals_page(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let store = st.store.clone();
    let (refusals, devices) = match blocking(move || Ok((store.refusals()?, store.devices()?))).await {
        Ok(v) => v,
        Err(e) => return ctx_error(&c, e),
    };
    let device_unit: HashMap<String, String> = devices.into_iter().map(|d| (d.id, d.unit)).collect();
    // A refusal is in view when its document or (for a document id that does not parse)
    // its device is.
    let mine: Vec<_> = refusals
        .into_iter()
        .filter(|r| match r.doc_id.parse::<sync_core::docs::DocId>() {
            Ok(id) => c.sees(&id.unit),
            Err(_) => device_unit.get(&r.device_id).is_some_and(|u| c.sees_str(u)),
        })
        .collect();
    let mut body = format!(
        "<p>{}</p>",
        c.t(
            "Các lô dữ liệu máy chủ không nhận, kèm lý do. Không có gì bị xóa: máy tính bảng giữ dữ liệu đã ghi và hiển thị lý do cho người dùng.",
            "Batches the server did not accept, with the reason. Nothing is deleted: the tablet keeps what it recorded and shows the reason to its user."
        )
    );
    if mine.is_empty() {
        body.push_str(&format!(
            "<p class=\"ok\">{}</p>",
            c.t("Không có lô nào bị từ chối.", "No refused batches.")
        ));
    } else {
        body.push_str(&format!(
            "<div class=\"tbl\"><table><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr>",
            c.t("Thời điểm", "When"),
            c.t("Thiết bị", "Device"),
            c.t("Tài liệu", "Document"),
            c.t("Lý do", "Reason"),
        ));
        for r in mine.iter().take(200) {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                fmt_time(Some(r.at), c.lang),
                esc(&r.device_id),
                esc(&r.doc_id),
                esc(&r.reason)
            ));
        }
        body.push_str("</table></div>");
    }
    ok_page(&c, c.t("Dữ liệu bị từ chối", "Refused batches"), &body)
}

// ---- devices ----

fn devices_body(c: &Ctx, devices: &[crate::store::DeviceRow]) -> String {
    let tree = UnitTree::reference();
    let mut body = String::new();
    body.push_str(&format!(
        "<h2>{}</h2><form method=\"post\" action=\"/devices/code\">{}<label for=\"unit\">{}</label> <select id=\"unit\" name=\"unit\">",
        c.t("Cấp mã đăng ký thiết bị", "Issue an enrolment code"),
        c.csrf_field(),
        c.t("Đơn vị", "Unit"),
    ));
    for u in tree.subtree(&c.unit) {
        let indent = if u == c.unit { "" } else { "— " };
        body.push_str(&format!(
            "<option value=\"{}\">{indent}{}</option>",
            esc(&u.to_string()),
            esc(&unit_name(&u.to_string()))
        ));
    }
    body.push_str(&format!(
        "</select> <label for=\"days\">{}</label> <input id=\"days\" name=\"days\" type=\"number\" min=\"1\" max=\"90\" value=\"7\" style=\"width:5rem\"> <button type=\"submit\">{}</button></form>",
        c.t("Hiệu lực (ngày)", "Valid (days)"),
        c.t("Cấp mã", "Issue code"),
    ));
    body.push_str(&format!("<h2>{}</h2>", c.t("Thiết bị đã đăng ký", "Enrolled devices")));
    if devices.is_empty() {
        body.push_str(&format!("<p>{}</p>", c.t("Chưa có thiết bị nào.", "No devices yet.")));
        return body;
    }
    body.push_str(&format!(
        "<div class=\"tbl\"><table><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr>",
        c.t("Thiết bị", "Device"),
        c.t("Đơn vị", "Unit"),
        c.t("Đồng bộ lần cuối", "Last sync"),
        c.t("Thay đổi chờ gửi", "Pending changes"),
        c.t("Phiên bản", "App version"),
        c.t("Đã gửi / nhận", "Sent / received"),
        c.t("Trạng thái", "State"),
        c.t("Thao tác", "Action"),
    ));
    for d in devices {
        let action = if d.revoked_at.is_some() {
            String::new()
        } else {
            format!(
                "<form method=\"post\" action=\"/devices/revoke\">{}<input type=\"hidden\" name=\"device\" value=\"{}\"><button type=\"submit\" aria-label=\"{} {}\">{}</button></form>",
                c.csrf_field(),
                esc(&d.id),
                c.t("Thu hồi", "Revoke"),
                esc(&d.id),
                c.t("Thu hồi", "Revoke"),
            )
        };
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{} / {}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.id),
            esc(&unit_name(&d.unit)),
            fmt_time(d.last_sync_at, c.lang),
            d.pending_reported,
            esc(&d.app_version),
            bytes(d.bytes_up),
            bytes(d.bytes_down),
            if d.revoked_at.is_some() {
                c.t("đã thu hồi", "revoked")
            } else {
                c.t("hoạt động", "active")
            },
            action
        ));
    }
    body.push_str("</table></div>");
    body
}

async fn my_devices(st: &AppState, c: &Ctx) -> Result<Vec<crate::store::DeviceRow>, ApiError> {
    let store = st.store.clone();
    let devices = blocking(move || Ok(store.devices()?)).await?;
    Ok(devices.into_iter().filter(|d| c.sees_str(&d.unit)).collect())
}

async fn devices_page(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let devices = match my_devices(&st, &c).await {
        Ok(d) => d,
        Err(e) => return ctx_error(&c, e),
    };
    let mut body = String::new();
    if query(&uri).contains_key("revoked") {
        body.push_str(&format!(
            "<p class=\"ok\" role=\"status\">{}</p>",
            c.t(
                "Đã thu hồi thiết bị: lần đồng bộ tới của nó sẽ bị từ chối.",
                "The device is revoked: its next sync is refused."
            )
        ));
    }
    body.push_str(&devices_body(&c, &devices));
    ok_page(&c, c.t("Thiết bị", "Devices"), &body)
}

#[derive(Debug, Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    device: String,
}

async fn revoke_device(
    State(st): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<RevokeForm>,
) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(r) = csrf_refused(&c, &form.csrf) {
        return r;
    }
    let devices = match my_devices(&st, &c).await {
        Ok(d) => d,
        Err(e) => return ctx_error(&c, e),
    };
    if !devices.iter().any(|d| d.id == form.device) {
        return not_found(&c);
    }
    let store = st.store.clone();
    match blocking(move || Ok(store.revoke_device(&form.device, now())?)).await {
        Ok(_) => {
            tracing::info!("device revoked on the web");
            redirect("/devices?revoked=1")
        }
        Err(e) => ctx_error(&c, e),
    }
}

#[derive(Debug, Deserialize)]
struct CodeForm {
    #[serde(default)]
    csrf: String,
    unit: String,
    #[serde(default)]
    days: String,
}

/// The code as a QR code, inline SVG (the XML prologue dropped: this is HTML).
pub fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build();
    svg.find("<svg").map(|i| svg[i..].to_string())
}

async fn issue_code(State(st): State<AppState>, headers: HeaderMap, uri: Uri, Form(form): Form<CodeForm>) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(r) = csrf_refused(&c, &form.csrf) {
        return r;
    }
    let unit = match UnitTree::reference().resolve(&form.unit) {
        Ok(u) if c.sees(&u.key) => u.key.clone(),
        _ => return not_found(&c),
    };
    let days: i64 = match form.days.trim() {
        "" => 7,
        d => match d.parse::<i64>() {
            Ok(n) if (1..=90).contains(&n) => n,
            _ => {
                return error_page(
                    c.lang,
                    StatusCode::BAD_REQUEST,
                    c.t(
                        "Số ngày hiệu lực phải từ 1 đến 90.",
                        "The number of valid days must be 1 to 90.",
                    ),
                )
            }
        },
    };
    let code = new_code();
    let store = st.store.clone();
    let hash = hash_secret(&canonical_code(&code));
    let u = unit.to_string();
    if let Err(e) = blocking(move || Ok(store.create_enroll_code(&u, &hash, now() + days * 86_400)?)).await {
        return ctx_error(&c, e);
    }
    tracing::info!(unit = %unit, "enrolment code issued on the web");
    let qr = qr_svg(&code).unwrap_or_default();
    let body = format!(
        "<p>{} <b>{}</b>, {} {} {}.</p><p class=\"code\" aria-label=\"{}\">{}</p><div role=\"img\" aria-label=\"{}\" style=\"max-width:240px\">{}</div>\
<p>{}</p><p><a href=\"/devices\">{}</a></p>",
        c.t("Mã đăng ký cho", "Enrolment code for"),
        esc(&unit_name(&unit.to_string())),
        c.t("dùng một lần, hiệu lực", "usable once, valid"),
        days,
        c.t("ngày", "days"),
        c.t("Mã đăng ký", "Enrolment code"),
        esc(&code),
        c.t("Mã QR của mã đăng ký", "QR code of the enrolment code"),
        qr,
        c.t(
            "Nhập mã này trên máy tính bảng (hoặc quét mã QR) khi đăng ký thiết bị. Mã không được hiển thị lại.",
            "Type this code on the tablet (or scan the QR code) to enrol it. The code is not shown again."
        ),
        c.t("Về danh sách thiết bị", "Back to the devices"),
    );
    let mut resp = ok_page(&c, c.t("Mã đăng ký thiết bị", "Device enrolment code"), &body);
    // A one-time secret: keep it out of caches.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

// ---- downloads ----

/// The current calendar year (the server's clock, UTC).
fn this_year() -> i32 {
    time::OffsetDateTime::from_unix_timestamp(now())
        .map(|t| t.year())
        .unwrap_or(2026)
}

/// `<option>`s of the account's unit and every unit below it.
fn unit_options(c: &Ctx) -> String {
    let mut out = String::new();
    for u in UnitTree::reference().subtree(&c.unit) {
        let indent = if u == c.unit { "" } else { "— " };
        out.push_str(&format!(
            "<option value=\"{}\">{indent}{}</option>",
            esc(&u.to_string()),
            esc(&unit_name(&u.to_string()))
        ));
    }
    out
}

async fn downloads_page(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let store = st.store.clone();
    let courses = match blocking(move || Ok(store.courses()?)).await {
        Ok(v) => v,
        Err(e) => return ctx_error(&c, e),
    };
    let year = this_year();
    let options = unit_options(&c);
    // The period reports: GET forms, so a download is a plain link to the file.
    let mut body = format!(
        "<h2>{h_unit}</h2><p>{p_unit}</p><form method=\"get\" action=\"/reports/unit.xlsx\">\
<label for=\"ru-unit\">{l_unit}</label> <select id=\"ru-unit\" name=\"unit\">{options}</select> \
<label for=\"ru-from\">{l_from}</label> <input id=\"ru-from\" name=\"from\" type=\"date\" required value=\"{year}-01-01\"> \
<label for=\"ru-to\">{l_to}</label> <input id=\"ru-to\" name=\"to\" type=\"date\" required value=\"{year}-12-31\"> \
<button type=\"submit\">{b_unit}</button></form>\
<h2>{h_annual}</h2><p>{p_annual}</p><form method=\"get\" action=\"/reports/annual.xlsx\">\
<label for=\"ra-unit\">{l_unit}</label> <select id=\"ra-unit\" name=\"unit\">{options}</select> \
<label for=\"ra-year\">{l_year}</label> <input id=\"ra-year\" name=\"year\" type=\"number\" min=\"2000\" max=\"2100\" required value=\"{year}\" style=\"width:6rem\"> \
<button type=\"submit\">{b_annual}</button></form>\
<h2>{h_courses}</h2><p>{p_courses}</p>",
        h_unit = c.t("Báo cáo đơn vị theo kỳ", "Unit report for a period"),
        p_unit = c.t(
            "Số lớp, học viên, lượt buổi học, tỷ lệ chuyên cần và hoàn thành, phân tổ theo giới tính, dân tộc, độ tuổi, đối tượng, trình độ (Excel).",
            "Courses, trainees, trainee-sessions, attendance and completion, broken down by gender, ethnicity, age, category and qualification (Excel)."
        ),
        l_unit = c.t("Đơn vị", "Unit"),
        l_from = c.t("Từ ngày", "From"),
        l_to = c.t("Đến ngày", "To"),
        b_unit = c.t("Tải báo cáo đơn vị (Excel)", "Download the unit report (Excel)"),
        h_annual = c.t("Báo cáo đào tạo, bồi dưỡng hằng năm", "Annual training report"),
        p_annual = c.t(
            "Lượt học viên theo loại chương trình, trong đó nữ và dân tộc thiểu số (Excel).",
            "Learner-places by programme type, of which women and ethnic minorities (Excel)."
        ),
        l_year = c.t("Năm", "Year"),
        b_annual = c.t("Tải báo cáo năm (Excel)", "Download the annual report (Excel)"),
        h_courses = c.t("Từng lớp", "Each course"),
        p_courses = c.t(
            "Báo cáo lớp (Excel: điểm danh, buổi học, xung đột, thông tin lớp) và bảng điểm danh (CSV, UTF-8, mở được bằng Excel).",
            "The course report (Excel: attendance, sessions, conflicts, course details) and the attendance table (CSV, UTF-8, opens in Excel)."
        ),
    );
    let mut table = format!(
        "<div class=\"tbl\"><table><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr>",
        c.t("Đơn vị", "Unit"),
        c.t("Lớp", "Course"),
        c.t("Tải về", "Download"),
    );
    let mut any = false;
    for r in courses.iter().filter(|r| c.sees_str(&r.unit)).take(500) {
        any = true;
        let title = esc(&r.title);
        table.push_str(&format!(
            "<tr><td>{}</td><td>{title}</td><td><a href=\"/courses/{id}/report.xlsx\" download aria-label=\"{} {title} (Excel)\">Excel</a> · \
<a href=\"/courses/{id}/marks.csv\" download aria-label=\"{} {title} (CSV)\">CSV</a></td></tr>",
            esc(&unit_name(&r.unit)),
            c.t("Báo cáo lớp", "Course report"),
            c.t("Bảng điểm danh", "Attendance table"),
            id = url(&r.id)
        ));
    }
    table.push_str("</table></div>");
    if any {
        body.push_str(&table);
    } else {
        body.push_str(&format!("<p>{}</p>", c.t("Chưa có lớp nào.", "No courses yet.")));
    }
    ok_page(&c, c.t("Tải về", "Downloads"), &body)
}

pub const XLSX_CONTENT_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// A file name safe in any file system: no path separators, reserved or control
/// characters, at most 120 characters before the extension.
fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|ch| {
            if ch.is_control() || "/\\:*?\"<>|".contains(ch) {
                ' '
            } else {
                ch
            }
        })
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let joined: String = words.join(" ").chars().take(120).collect();
    let trimmed = joined.trim_matches(|ch: char| ch == '.' || ch == ' ');
    if trimmed.is_empty() {
        "diemdanh".to_string()
    } else {
        trimmed.to_string()
    }
}

/// `Content-Disposition: attachment` for a (Vietnamese) file name, RFC 6266: `filename`
/// an ASCII fallback (accents folded, the rest replaced by `-`), `filename*` the name in
/// UTF-8, percent-encoded (RFC 8187), which every current browser prefers.
pub fn attachment(stem: &str, ext: &str) -> HeaderValue {
    let name = format!("{}.{ext}", safe_file_name(stem));
    let mut ascii = String::new();
    for ch in sync_core::text::fold(&safe_file_name(stem)).chars() {
        let ch = if ch.is_ascii_alphanumeric() || ch == '.' || ch == '_' {
            ch
        } else {
            '-'
        };
        if !(ch == '-' && ascii.ends_with('-')) {
            ascii.push(ch);
        }
    }
    let ascii = ascii.trim_matches('-');
    let ascii = if ascii.is_empty() { "diemdanh" } else { ascii };
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}.{ext}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn xlsx_response(bytes: Vec<u8>, stem: &str) -> Response {
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(XLSX_CONTENT_TYPE));
    h.insert(header::CONTENT_DISPOSITION, attachment(stem, "xlsx"));
    // Personal data: kept by the person who asked, not by caches on the way.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    resp
}

fn report_failed(c: &Ctx, e: crate::reports::ReportError) -> Response {
    use crate::reports::ReportError;
    match e {
        ReportError::NotFound(_) => not_found(c),
        ReportError::Input(m) => error_page(c.lang, StatusCode::BAD_REQUEST, &m),
        ReportError::Store(e) => ctx_error(c, e.into()),
        ReportError::Export(m) => {
            tracing::error!(error = %m, "report export failed");
            ctx_error(
                c,
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the export failed"),
            )
        }
    }
}

/// Runs a report and its XLSX export off the async threads.
async fn xlsx_of(
    c: &Ctx,
    f: impl FnOnce() -> crate::reports::ReportResult<(Vec<u8>, String)> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok((bytes, stem))) => xlsx_response(bytes, &stem),
        Ok(Err(e)) => report_failed(c, e),
        Err(_) => ctx_error(
            c,
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the report failed"),
        ),
    }
}

/// The course report as XLSX: the file `diemdanh-server report course ID --format xlsx` writes.
async fn course_xlsx(State(st): State<AppState>, headers: HeaderMap, uri: Uri, Path(id): Path<String>) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if sync_core::model::check_id("course", &id).is_err() {
        return not_found(&c);
    }
    let store = st.store.clone();
    let scope = c.unit.clone();
    xlsx_of(&c, move || {
        use crate::reports::{course, export::xlsx, ReportError, Tabular};
        let sheet = course::build(&*store, &id)?;
        let inside = sheet
            .report
            .unit
            .parse::<UnitKey>()
            .is_ok_and(|u| UnitTree::reference().is_within(&u, &scope));
        if !inside {
            return Err(ReportError::NotFound(id));
        }
        let bytes = xlsx::write(&sheet.tables())?;
        Ok((bytes, format!("Báo cáo lớp {}", sheet.report.title)))
    })
    .await
}

/// The unit of a report request: in the account's view, else 404.
fn report_unit(c: &Ctx, q: &HashMap<String, String>) -> Result<UnitKey, Box<Response>> {
    let Some(raw) = q.get("unit").filter(|u| !u.trim().is_empty()) else {
        return Err(Box::new(error_page(
            c.lang,
            StatusCode::BAD_REQUEST,
            c.t("Hãy chọn một đơn vị.", "Choose a unit."),
        )));
    };
    match UnitTree::reference().resolve(raw.trim()) {
        Ok(u) if c.sees(&u.key) => Ok(u.key.clone()),
        _ => Err(Box::new(not_found(c))),
    }
}

/// A `YYYY-MM-DD` query value, or a page saying what is wrong with it.
fn report_date(c: &Ctx, q: &HashMap<String, String>, key: &str) -> Result<String, Box<Response>> {
    let v = q.get(key).map(|v| v.trim().to_string()).unwrap_or_default();
    if crate::reports::parse_date(key, &v).is_ok() {
        return Ok(v);
    }
    let what = if key == "from" {
        c.t("Ngày bắt đầu", "The start date")
    } else {
        c.t("Ngày kết thúc", "The end date")
    };
    Err(Box::new(error_page(
        c.lang,
        StatusCode::BAD_REQUEST,
        &format!(
            "{what} {}",
            c.t(
                "không hợp lệ: cần một ngày dạng NNNN-TT-NN (ví dụ 2026-12-31).",
                "is not valid: it must be a date of the form YYYY-MM-DD (for example 2026-12-31)."
            )
        ),
    )))
}

/// The unit report for a period as XLSX: what `report unit UNIT --from --to --format
/// xlsx` writes, counting only the account's subtree.
async fn unit_xlsx(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = query(&uri);
    let checked = report_unit(&c, &q).and_then(|u| Ok((u, report_date(&c, &q, "from")?, report_date(&c, &q, "to")?)));
    let (unit, from, to) = match checked {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if from > to {
        return error_page(
            c.lang,
            StatusCode::BAD_REQUEST,
            c.t(
                "Ngày bắt đầu phải trước hoặc bằng ngày kết thúc.",
                "The start date must be on or before the end date.",
            ),
        );
    }
    let store = st.store.clone();
    let scope = c.unit.clone();
    xlsx_of(&c, move || {
        use crate::reports::{export::xlsx, unit, Tabular};
        let period = unit::Period::new(&unit.to_string(), &from, &to)?.within(&scope);
        let report = unit::build(&*store, &period)?;
        let bytes = xlsx::write(&report.tables())?;
        Ok((bytes, format!("Báo cáo {} từ {from} đến {to}", report.unit_name)))
    })
    .await
}

/// The annual training report as XLSX: what `report annual UNIT --year --format xlsx`
/// writes, counting only the account's subtree.
async fn annual_xlsx(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let c = match ctx(&st, &headers, &uri).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = query(&uri);
    let unit = match report_unit(&c, &q) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let year = match q.get("year").and_then(|y| y.trim().parse::<i32>().ok()) {
        Some(y) if (2000..=2100).contains(&y) => y,
        _ => {
            return error_page(
                c.lang,
                StatusCode::BAD_REQUEST,
                c.t(
                    "Năm không hợp lệ: cần một năm từ 2000 đến 2100.",
                    "Not a valid year: it must be a year from 2000 to 2100.",
                ),
            )
        }
    };
    let store = st.store.clone();
    let scope = c.unit.clone();
    xlsx_of(&c, move || {
        use crate::reports::{annual, export::xlsx, Tabular};
        let report = annual::build_within(&*store, &unit.to_string(), year, Some(&scope))?;
        let bytes = xlsx::write(&report.tables())?;
        Ok((
            bytes,
            format!("Báo cáo đào tạo, bồi dưỡng năm {year} {}", report.unit_name),
        ))
    })
    .await
}
