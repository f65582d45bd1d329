//! The web pages without a socket (`oneshot`): sign-in, access by unit subtree, CSRF,
//! page sizes, the language switch, conflicts resolved by a server change, XLSX
//! downloads equal to the command line's exports.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use diemdanh_server::api::{app, canonical_code, hash_secret, new_code, now};
use diemdanh_server::{SqliteStore, Store};
use http_body_util::BodyExt;
use sync_core::protocol::{EnrollResponse, SyncRequest, SyncResponse, CONTENT_TYPE};
use tower::ServiceExt;

const PASSWORD: &str = "mật khẩu dài 2026";

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
    bytes: Vec<u8>,
}

impl Resp {
    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The first `name="csrf" value="..."` of the page.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
        self.body[at..at + 64].to_string()
    }
}

struct Browser {
    router: Router,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new(store: &Arc<dyn Store>) -> Self {
        Browser {
            router: app(store.clone()),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, req: axum::http::request::Builder, body: Body) -> Resp {
        let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let req = req.header(header::COOKIE, jar.join("; ")).body(body).expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let r = Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).to_string(),
            bytes: bytes.to_vec(),
        };
        for c in r.cookies() {
            let first = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.split_once('=') {
                if c.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), v.to_string());
                }
            }
        }
        r
    }

    async fn get(&mut self, path: &str) -> Resp {
        self.send(Request::get(path), Body::empty()).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.send(
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            Body::from(body),
        )
        .await
    }

    async fn sign_in(&mut self, name: &str, password: &str) -> Resp {
        let page = self.get("/login").await;
        assert_eq!(page.status, StatusCode::OK);
        let csrf = page.csrf();
        self.post("/login", &[("name", name), ("password", password), ("csrf", &csrf)])
            .await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn demo_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let sqlite = SqliteStore::open(dir).expect("store");
    assert!(diemdanh_server::demo::seed(&sqlite).expect("seed"));
    for (name, unit) in [("tinh", "2025:12"), ("namhang", "2025:03434"), ("other", "2025:03460")] {
        diemdanh_server::accounts::add(&sqlite, name, unit, PASSWORD, false).expect("account");
    }
    Arc::new(sqlite)
}

async fn signed_in(store: &Arc<dyn Store>, name: &str) -> Browser {
    let mut b = Browser::new(store);
    let r = b.sign_in(name, PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    b
}

#[tokio::test]
async fn every_page_but_sign_in_needs_an_account_and_the_session_cookie_is_strict() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = demo_store(dir.path());
    let course = store.courses().expect("courses").remove(0);
    let mut b = Browser::new(&store);
    for path in [
        "/".to_string(),
        format!("/courses/{}", course.id),
        format!("/courses/{}/marks.csv", course.id),
        format!("/api/courses/{}", course.id),
        "/conflicts".into(),
        "/refusals".into(),
        "/devices".into(),
        "/downloads".into(),
    ] {
        let r = b.get(&path).await;
        assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"), "{path}");
    }
    let r = b.post("/devices/code", &[("unit", "2025:03434"), ("csrf", "x")]).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"));
    // A forged session cookie is no session.
    b.cookies.insert("dd_session".into(), "00".repeat(32));
    assert_eq!(b.get("/").await.status, StatusCode::SEE_OTHER);

    let mut b = Browser::new(&store);
    let login = b.get("/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("<html lang=\"vi\"") && login.body.contains("<label for=\"password\">"));
    let r = b.sign_in("tinh", "wrong password!").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("không đúng"));
    let r = b.sign_in("nobody", PASSWORD).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = b.sign_in("tinh", PASSWORD).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/"));
    let session = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("dd_session="))
        .expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    let token = &session["dd_session=".len()..session.find(';').unwrap_or(session.len())];
    assert_eq!(token.len(), 64);
    // The store keeps the hash, never the token itself.
    assert!(store.web_session(token, now()).expect("lookup").is_none());
    assert!(store.web_session(&hash_secret(token), now()).expect("lookup").is_some());
    assert!(
        store
            .web_session(&hash_secret(token), now() + 8 * 3600 + 1)
            .expect("lookup")
            .is_none(),
        "sessions expire"
    );
    let home = b.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("Tỉnh Lai Châu"));

    // Sign-out needs the form's token too, and ends the session.
    let r = b.post("/logout", &[("csrf", "0".repeat(64).as_str())]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let csrf = home.csrf();
    let r = b.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"));
    b.cookies.insert("dd_session".into(), token.to_string());
    assert_eq!(b.get("/").await.status, StatusCode::SEE_OTHER, "the old cookie is dead");
}

#[tokio::test]
async fn the_sign_in_form_needs_its_token_and_attempts_are_rate_limited() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = demo_store(dir.path());
    let mut b = Browser::new(&store);
    // No sign-in form cookie: a cross-site POST.
    let r = b
        .post("/login", &[("name", "tinh"), ("password", PASSWORD), ("csrf", "abc")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let page = b.get("/login").await;
    let r = b
        .post(
            "/login",
            &[("name", "tinh"), ("password", PASSWORD), ("csrf", &"f".repeat(64))],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a token that is not the cookie's");
    let csrf = page.csrf();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = b
            .post(
                "/login",
                &[("name", "namhang"), ("password", "guess guess guess"), ("csrf", &csrf)],
            )
            .await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses[5..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    // Even the right password waits now; another name is not held up.
    let r = b
        .post(
            "/login",
            &[("name", "namhang"), ("password", PASSWORD), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = b
        .post("/login", &[("name", "other"), ("password", PASSWORD), ("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_account_of_one_commune_cannot_see_another_communes_course_even_by_url() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = demo_store(dir.path());
    let courses = store.courses().expect("courses");
    let mine: Vec<_> = courses.iter().filter(|c| c.unit == "2025:03434").collect();
    let theirs: Vec<_> = courses.iter().filter(|c| c.unit == "2025:03460").collect();
    assert!(!mine.is_empty() && !theirs.is_empty());
    let mut b = signed_in(&store, "namhang").await;
    let home = b.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    for c in &mine {
        assert!(home.body.contains(&format!("/courses/{}", c.id)));
    }
    for c in &theirs {
        assert!(!home.body.contains(&c.id), "another commune's course on the overview");
        for path in [
            format!("/courses/{}", c.id),
            format!("/courses/{}/marks.csv", c.id),
            format!("/api/courses/{}", c.id),
        ] {
            let r = b.get(&path).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
            assert!(!r.body.contains(&c.title) || c.title == mine[0].title);
        }
    }
    assert_eq!(b.get(&format!("/courses/{}", mine[0].id)).await.status, StatusCode::OK);
    // Drilling up or sideways is refused; the province is not in a commune's view.
    assert_eq!(b.get("/?unit=2025:03460").await.status, StatusCode::NOT_FOUND);
    assert_eq!(b.get("/?unit=2025:12").await.status, StatusCode::NOT_FOUND);
    assert_eq!(b.get("/?unit=bogus").await.status, StatusCode::NOT_FOUND);
    // Other pages show only the subtree: the devices page offers codes for this commune only.
    let devices = b.get("/devices").await;
    assert!(devices.body.contains("value=\"2025:03434\"") && !devices.body.contains("value=\"2025:03460\""));
    let csrf = devices.csrf();
    let r = b
        .post("/devices/code", &[("unit", "2025:03460"), ("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "no enrolment code for another commune");
    let conflicts = b.get("/conflicts").await;
    for c in &theirs {
        assert!(!conflicts.body.contains(&c.id));
    }

    // The province sees every commune and drills down to one.
    let mut p = signed_in(&store, "tinh").await;
    let home = p.get("/").await;
    for c in courses.iter() {
        assert!(home.body.contains(&format!("/courses/{}", c.id)));
    }
    assert!(home.body.contains("href=\"/?unit=2025%3A03434\""));
    let commune = p.get("/?unit=2025:03434").await;
    assert_eq!(commune.status, StatusCode::OK);
    assert!(commune.body.contains(&mine[0].id) && !commune.body.contains(&theirs[0].id));
    // The former structure: Lai Châu's old districts, down to Nậm Nhùn, which holds
    // the courses of the communes that took it over.
    let legacy = p.get("/?unit=legacy:12").await;
    assert_eq!(legacy.status, StatusCode::OK);
    assert!(legacy.body.contains("Huyện Nậm Nhùn"), "legacy districts listed");
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_change_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = demo_store(dir.path());
    let mut b = signed_in(&store, "tinh").await;
    let page = b.get("/devices").await;
    let csrf = page.csrf();
    assert_eq!(csrf.len(), 64);
    // Another session's token does not do either.
    let mut other = signed_in(&store, "tinh").await;
    let other_csrf = other.get("/devices").await.csrf();
    assert_ne!(csrf, other_csrf);
    for bad in ["", "nope", other_csrf.as_str()] {
        let r = b.post("/devices/code", &[("unit", "2025:03434"), ("csrf", bad)]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "csrf {bad:?}");
    }
    let r = b
        .post(
            "/devices/code",
            &[("unit", "2025:03434"), ("days", "500"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = b
        .post(
            "/devices/code",
            &[("unit", "2025:03434"), ("days", "3"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("<svg") && r.body.contains("Xã Nậm Hàng"));
    assert_eq!(
        r.headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    // The code on the page enrols a device once.
    let at = r.body.find("class=\"code\"").expect("code");
    let code: String = r.body[at..]
        .split('>')
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("code text")
        .to_string();
    let enrolled = enroll(&b.router, &code, "tab1").await;
    assert_eq!(enrolled.unit, "2025:03434");

    // Revoke: CSRF first, then the device is refused at its next sync.
    let r = b.post("/devices/revoke", &[("device", "tab1"), ("csrf", "x")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(store.devices().expect("devices")[0].revoked_at.is_none());
    let r = b.post("/devices/revoke", &[("device", "tab1"), ("csrf", &csrf)]).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/devices?revoked=1"));
    assert!(store.devices().expect("devices")[0].revoked_at.is_some());
    let (s, _) = sync(&b.router, &enrolled.token, 0).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn enroll(router: &Router, code: &str, device: &str) -> EnrollResponse {
    let body = serde_json::json!({"code": code, "device_id": device, "actor": hex::encode(device), "app_version": "t"});
    let resp = router
        .clone()
        .oneshot(
            Request::post("/v1/enroll")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .expect("req"),
        )
        .await
        .expect("resp");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).expect("json")
}

/// A sync exchange; the token names the device.
async fn sync(router: &Router, token: &str, cursor: u64) -> (StatusCode, Option<SyncResponse>) {
    let body = SyncRequest {
        cursor,
        docs: vec![],
        pending_changes: 0,
        app_version: "t".into(),
        max_response_bytes: 1 << 22,
    }
    .encode();
    let resp = router
        .clone()
        .oneshot(
            Request::post("/v1/sync")
                .header(header::CONTENT_TYPE, CONTENT_TYPE)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::from(body))
                .expect("req"),
        )
        .await
        .expect("resp");
    let s = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (s, SyncResponse::decode(&bytes).ok())
}

#[tokio::test]
async fn pages_are_small_self_contained_and_switch_language() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = demo_store(dir.path());
    let mut b = signed_in(&store, "tinh").await;
    let course = store
        .courses()
        .expect("courses")
        .into_iter()
        .find(|c| c.trainees == 70)
        .expect("70-trainee class");
    let pages = [
        "/".to_string(),
        "/?unit=2025:03434".into(),
        "/?unit=legacy:12".into(),
        format!("/courses/{}", course.id),
        "/conflicts".into(),
        "/refusals".into(),
        "/devices".into(),
        "/downloads".into(),
    ];
    for path in &pages {
        let r = b.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.body.len() < 100_000, "{path}: {} bytes", r.body.len());
        assert!(r.body.starts_with("<!doctype html><html lang=\"vi\""), "{path}");
        for external in ["http://", "https://", "src=", "<script"] {
            assert!(!r.body.contains(external), "{path} has {external}");
        }
        let csp = r.headers.get(header::CONTENT_SECURITY_POLICY).expect("CSP");
        assert!(csp.to_str().unwrap_or("").starts_with("default-src 'none'"));
    }
    let matrix = b.get(&format!("/courses/{}", course.id)).await;
    assert_eq!(matrix.body.matches("<tr>").count(), 71, "header + 70 trainees");
    assert_eq!(matrix.body.matches(" cf\"").count(), 1, "the class's one conflict");
    assert!(matrix.body.contains("<svg role=\"img\""), "the chart is inline SVG");
    let home = b.get("/").await;
    assert!(home.body.contains("Trung cấp lý luận chính trị - hành chính"));

    // English by ?lang=en, remembered by a cookie; Vietnamese again by ?lang=vi.
    let en = b.get("/?lang=en").await;
    assert!(en.body.starts_with("<!doctype html><html lang=\"en\""));
    assert!(en.body.contains("Overview") && en.body.contains("Sign out") && !en.body.contains("Đăng xuất"));
    assert!(en.cookies().iter().any(|c| c.starts_with("dd_lang=en")));
    for path in &pages {
        let r = b.get(path).await;
        assert!(r.body.contains("<html lang=\"en\""), "{path}");
        for vi in ["Tổng quan", "Thiết bị", "Tải về", "Học viên", "Đơn vị"] {
            // Unit and course names stay Vietnamese; the interface's words do not.
            assert!(!r.body.contains(&format!(">{vi}<")), "{path}: {vi}");
        }
    }
    let vi = b.get("/devices?lang=vi").await;
    assert!(
        vi.body.contains("<html lang=\"vi\"") && vi.body.contains("Thu hồi") || vi.body.contains("Chưa có thiết bị")
    );
    let csv = b.get(&format!("/courses/{}/marks.csv", course.id)).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.body.starts_with('\u{feff}'), "BOM for Excel");
    assert_eq!(csv.body.lines().count(), 71);
}

#[tokio::test]
async fn a_conflict_resolved_on_the_web_is_a_server_change_devices_receive() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = demo_store(dir.path());
    let mut b = signed_in(&store, "namhang").await;
    let course = store
        .courses()
        .expect("courses")
        .into_iter()
        .find(|c| c.unit == "2025:03434" && c.conflicts > 0)
        .expect("a course with conflicts");
    let before: serde_json::Value =
        serde_json::from_str(&b.get(&format!("/api/courses/{}", course.id)).await.body).expect("json");
    let conflict = &before["conflicts"][0];
    let (session, cadre) = (
        conflict["session"].as_str().expect("session").to_string(),
        conflict["cadre"].as_str().expect("cadre").to_string(),
    );
    let n_conflicts = before["conflicts"].as_array().map(Vec::len).unwrap_or(0);

    // A device of the commune, up to date before the resolution.
    let code = new_code();
    store
        .create_enroll_code("2025:03434", &hash_secret(&canonical_code(&code)), now() + 600)
        .expect("code");
    let dev = enroll(&b.router, &code, "tab9").await;
    let (s, first) = sync(&b.router, &dev.token, 0).await;
    assert_eq!(s, StatusCode::OK);
    let cursor = first.expect("response").cursor;

    let page = b.get("/conflicts").await;
    assert!(page.body.contains(&format!("value=\"{session}\"")));
    let csrf = page.csrf();
    let form = [
        ("course", course.id.as_str()),
        ("session", session.as_str()),
        ("cadre", cadre.as_str()),
        ("status", "excused"),
    ];
    let mut with_bad = form.to_vec();
    with_bad.push(("csrf", "bad"));
    assert_eq!(
        b.post("/conflicts/resolve", &with_bad).await.status,
        StatusCode::FORBIDDEN
    );
    let mut bad_status = form.to_vec();
    bad_status[3] = ("status", "asleep");
    bad_status.push(("csrf", &csrf));
    assert_eq!(
        b.post("/conflicts/resolve", &bad_status).await.status,
        StatusCode::BAD_REQUEST
    );
    let mut good = form.to_vec();
    good.push(("csrf", &csrf));
    let r = b.post("/conflicts/resolve", &good).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/conflicts?done=1"),
        "{}",
        r.body
    );

    let after: serde_json::Value =
        serde_json::from_str(&b.get(&format!("/api/courses/{}", course.id)).await.body).expect("json");
    assert_eq!(after["conflicts"].as_array().map(Vec::len), Some(n_conflicts - 1));
    let mark = after["marks"]
        .as_array()
        .expect("marks")
        .iter()
        .find(|m| m["session"] == session.as_str() && m["cadre"] == cadre.as_str())
        .expect("the mark");
    assert_eq!(mark["status"], "excused");
    // Once resolved, the same form is refused (nothing to resolve), not written twice.
    let again = b.post("/conflicts/resolve", &good).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);

    // The device's next sync brings the attendance document's new change.
    let (s, next) = sync(&b.router, &dev.token, cursor).await;
    assert_eq!(s, StatusCode::OK);
    let next = next.expect("response");
    let update = next
        .updates
        .iter()
        .find(|u| u.doc.starts_with(&format!("att:2025:03434:{}", course.id)))
        .expect("the attendance document is sent again");
    assert!(!update.data.is_empty());
    // An account of another commune cannot resolve this course's conflicts.
    let mut o = signed_in(&store, "other").await;
    let csrf = o.get("/conflicts").await.csrf();
    let mut theirs = form.to_vec();
    theirs.push(("csrf", &csrf));
    assert_eq!(
        o.post("/conflicts/resolve", &theirs).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Every sheet of an XLSX file, as (sheet name, cells row by row).
type Workbook = Vec<(String, Vec<Vec<calamine::Data>>)>;

fn workbook(bytes: &[u8]) -> Workbook {
    use calamine::Reader;
    let mut wb: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec())).expect("an XLSX calamine opens");
    wb.sheet_names()
        .into_iter()
        .map(|name| {
            let range = wb.worksheet_range(&name).expect("sheet");
            let rows = range.rows().map(<[calamine::Data]>::to_vec).collect();
            (name, rows)
        })
        .collect()
}

/// What `diemdanh-server report ARGS --data DIR --format xlsx --out FILE` writes.
fn cli_xlsx(dir: &std::path::Path, args: &[&str]) -> Workbook {
    let out = dir.join("cli.xlsx");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_diemdanh-server"))
        .arg("report")
        .args(args)
        .arg("--data")
        .arg(dir)
        .args(["--format", "xlsx", "--out"])
        .arg(&out)
        .output()
        .expect("run diemdanh-server report");
    assert!(
        run.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    workbook(&std::fs::read(&out).expect("the CLI's file"))
}

fn assert_xlsx(r: &Resp, filename_star: &str, ascii: &str) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    );
    let cd = r
        .headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .expect("Content-Disposition")
        .to_string();
    assert!(cd.starts_with("attachment; "), "{cd}");
    assert!(
        cd.contains(&format!("filename=\"{ascii}\"")),
        "ASCII fallback {ascii} in {cd}"
    );
    assert!(
        cd.contains(&format!("filename*=UTF-8''{filename_star}")),
        "RFC 6266 filename* {filename_star} in {cd}"
    );
    assert!(r.bytes.starts_with(b"PK"), "a zip container");
}

/// Decodes an RFC 8187 `filename*` value.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

fn filename_star(r: &Resp) -> String {
    let cd = r
        .headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let at = cd.find("filename*=UTF-8''").expect("filename*") + "filename*=UTF-8''".len();
    let value = &cd[at..];
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%-._~".contains(&b)),
        "only attr-chars and escapes: {value}"
    );
    percent_decode(value)
}

#[tokio::test]
async fn xlsx_downloads_are_the_command_lines_exports_within_the_accounts_view() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = demo_store(dir.path());
    let courses = store.courses().expect("courses");
    let big = courses.iter().find(|c| c.trainees == 70).expect("the province's class");
    let mut p = signed_in(&store, "tinh").await;

    // The course page and the downloads page link the files, with names people can read.
    let page = p.get(&format!("/courses/{}", big.id)).await;
    assert!(page.body.contains(&format!(
        "<a href=\"/courses/{}/report.xlsx\" download>Tải báo cáo lớp (Excel)</a>",
        big.id
    )));
    let downloads = p.get("/downloads").await;
    assert_eq!(downloads.status, StatusCode::OK);
    for needle in [
        "action=\"/reports/unit.xlsx\"",
        "action=\"/reports/annual.xlsx\"",
        "<label for=\"ru-from\">",
        "<label for=\"ra-year\">",
        &format!("/courses/{}/report.xlsx", big.id),
    ] {
        assert!(downloads.body.contains(needle), "{needle}");
    }
    assert!(downloads.body.len() < 100_000);
    let home = p.get("/").await;
    assert!(
        home.body.contains("/reports/unit.xlsx?unit=2025%3A12&amp;from="),
        "overview links the unit report"
    );

    // Course report: the CLI's file, cell for cell.
    let r = p.get(&format!("/courses/{}/report.xlsx", big.id)).await;
    assert_xlsx(
        &r,
        "B%C3%A1o%20c%C3%A1o%20l%E1%BB%9Bp%20Trung%20c%E1%BA%A5p%20l%C3%BD%20lu%E1%BA%ADn%20ch%C3%ADnh%20tr%E1%BB%8B%20-%20h%C3%A0nh%20ch%C3%ADnh.xlsx",
        "bao-cao-lop-trung-cap-ly-luan-chinh-tri-hanh-chinh.xlsx",
    );
    assert_eq!(
        filename_star(&r),
        "Báo cáo lớp Trung cấp lý luận chính trị - hành chính.xlsx"
    );
    let web = workbook(&r.bytes);
    assert_eq!(web, cli_xlsx(dir.path(), &["course", &big.id]));
    let names: Vec<&str> = web.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Điểm danh", "Buổi học", "Xung đột chờ xử lý", "Thông tin lớp"]);
    assert_eq!(web[0].1.len(), 71, "header + 70 trainees");

    // Unit report for a period, and the annual report: the CLI's files.
    let r = p
        .get("/reports/unit.xlsx?unit=2025:12&from=2025-12-01&to=2026-06-30")
        .await;
    assert_xlsx(
        &r,
        "B%C3%A1o%20c%C3%A1o%20T%E1%BB%89nh%20Lai%20Ch%C3%A2u%20t%E1%BB%AB%202025-12-01%20%C4%91%E1%BA%BFn%202026-06-30.xlsx",
        "bao-cao-tinh-lai-chau-tu-2025-12-01-den-2026-06-30.xlsx",
    );
    let unit = workbook(&r.bytes);
    assert_eq!(
        unit,
        cli_xlsx(
            dir.path(),
            &["unit", "2025:12", "--from", "2025-12-01", "--to", "2026-06-30"]
        )
    );
    // The totals row: every course held, and completions as the course reports count them.
    let totals = &unit[0].1[1];
    assert_eq!(totals[3], calamine::Data::Float(courses.len() as f64), "{totals:?}");
    let mut completed = 0;
    for c in &courses {
        let sheet = diemdanh_server::reports::course::build(&*store, &c.id).expect("course report");
        completed += sheet.report.completion.iter().filter(|x| x.completed).count();
    }
    assert_eq!(
        totals[10],
        calamine::Data::Float(completed as f64),
        "completions: {totals:?}"
    );
    let r = p.get("/reports/annual.xlsx?unit=2025:12&year=2026").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        filename_star(&r),
        "Báo cáo đào tạo, bồi dưỡng năm 2026 Tỉnh Lai Châu.xlsx"
    );
    assert_eq!(
        workbook(&r.bytes),
        cli_xlsx(dir.path(), &["annual", "2025:12", "--year", "2026"])
    );

    // Bad requests are told what is wrong.
    for (path, words) in [
        (
            "/reports/unit.xlsx?unit=2025:12&from=2026-13-01&to=2026-12-31",
            "NNNN-TT-NN",
        ),
        (
            "/reports/unit.xlsx?unit=2025:12&from=2026-12-31&to=2026-01-01",
            "trước hoặc bằng",
        ),
        ("/reports/unit.xlsx?unit=2025:12&to=2026-01-01", "Ngày bắt đầu"),
        ("/reports/unit.xlsx?from=2026-01-01&to=2026-12-31", "chọn một đơn vị"),
        ("/reports/annual.xlsx?unit=2025:12&year=1999", "2000 đến 2100"),
        ("/reports/annual.xlsx?unit=2025:12&year=abc", "2000 đến 2100"),
    ] {
        let r = p.get(path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(r.body.contains(words), "{path}: {}", r.body);
    }

    // A commune's account: its own commune's report is the CLI's; anything outside is 404.
    let mut n = signed_in(&store, "namhang").await;
    let r = n
        .get("/reports/unit.xlsx?unit=2025:03434&from=2025-12-01&to=2026-06-30")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        workbook(&r.bytes),
        cli_xlsx(
            dir.path(),
            &["unit", "2025:03434", "--from", "2025-12-01", "--to", "2026-06-30"]
        )
    );
    let theirs = courses
        .iter()
        .find(|c| c.unit == "2025:03460")
        .expect("another commune's course");
    for path in [
        format!("/courses/{}/report.xlsx", theirs.id),
        format!("/courses/{}/report.xlsx", big.id),
        "/courses/nonexistent/report.xlsx".into(),
        "/reports/unit.xlsx?unit=2025:03460&from=2025-12-01&to=2026-06-30".into(),
        "/reports/unit.xlsx?unit=2025:12&from=2025-12-01&to=2026-06-30".into(),
        "/reports/annual.xlsx?unit=2025:12&year=2026".into(),
        "/reports/annual.xlsx?unit=bogus&year=2026".into(),
    ] {
        let r = n.get(&path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!r.bytes.starts_with(b"PK"), "{path}");
    }
    // Without a session: sign in first.
    let mut anon = Browser::new(&store);
    let r = anon.get(&format!("/courses/{}/report.xlsx", big.id)).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"));
}
