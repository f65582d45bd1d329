//! No personal data, token or code in the logs: a whole field scenario (enrolment, roster
//! with ethnicity, course, roll call, conflicts, syncs of two devices over real HTTP, a
//! wrong token, a used code, a bundle) runs with every tracing event of every crate
//! captured at TRACE level (and `log` records bridged in), and the capture must hold none
//! of the cadres' names, their ethnicity, the device tokens (nor their hashes, the bundle
//! MAC key) or the enrolment codes.
//!
//! Its own test binary: the subscriber is global to the process, and TRACE everywhere
//! would slow the other integration tests down.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use diemdanh_server::api::{canonical_code, hash_secret};
use diemdanh_tests::{rawhttp, TestServer, NAM_HANG};
use sync_core::device::{Device, NewSession};
use sync_core::model::{Cadre, CourseMeta, Gender, MarkStatus};
use sync_core::protocol::Transport;

fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init()
            .expect("the only subscriber of this test binary");
        logs
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Names with the Vietnamese letters a log encoder could mangle, and one rare ethnicity.
const NAMES: [&str; 3] = ["Lò Thị Hoa", "Vàng A Dình", "Giàng Thị Xá"];
const ETHNICITY: &str = "54";

fn cadre(name: &str) -> Cadre {
    Cadre {
        name: name.into(),
        gender: Gender::Female,
        birth_year: 1994,
        ethnicity: Some(ETHNICITY.into()),
        category: None,
        position: Some("Công chức văn phòng - thống kê".into()),
        qualification: None,
        theory_level: None,
        state_management: None,
    }
}

fn token_of(home: &std::path::Path) -> String {
    let conn = sync_core::store::open_connection(&home.join("device.sqlite")).expect("open");
    sync_core::store::get_meta(&conn, "token")
        .expect("meta")
        .expect("enrolled")
}

#[test]
fn a_field_scenario_at_trace_level_logs_no_name_ethnicity_token_or_code() {
    let logs = captured();
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut secrets: Vec<String> = Vec::new();

    let mut devices = Vec::new();
    for name in ["a", "b"] {
        let home = dir.path().join(name);
        let mut d = Device::open(&home).expect("open device");
        let code = server.enroll_code(NAM_HANG);
        d.enroll(&mut server.transport(), &server.url, &code).expect("enrol");
        let token = token_of(&home);
        secrets.extend([code.clone(), canonical_code(&code), hash_secret(&canonical_code(&code))]);
        secrets.extend([token.clone(), hash_secret(&token)]);
        // A used code is refused: the refusal is logged without the code.
        let mut t = server.transport();
        let body = serde_json::json!({"code": code, "device_id": "x", "actor": "01", "app_version": "t"});
        let reply = t
            .post("/v1/enroll", "application/json", None, body.to_string().into_bytes())
            .expect("answer");
        assert_eq!(reply.status, 401);
        devices.push((home, d));
    }

    let (_, a) = &mut devices[0];
    let cadres: Vec<String> = NAMES
        .iter()
        .map(|n| a.add_cadre(NAM_HANG, cadre(n)).expect("cadre"))
        .collect();
    let meta = CourseMeta {
        title: "Bồi dưỡng kiến thức QLNN".into(),
        topic: None,
        organiser: None,
        form: None,
        venue: None,
        start_date: None,
        end_date: None,
        min_ratio: 0.8,
        excused_counts: false,
        planned_trainees: 20,
        programme: None,
    };
    let sessions = vec![NewSession {
        date: "2026-12-01".into(),
        ..Default::default()
    }];
    let course = a.create_course(NAM_HANG, meta, sessions).expect("course");
    for c in &cadres {
        a.enrol(&course.id, c).expect("enrol");
    }
    a.mark_all(&course.id, "2026-12-01", MarkStatus::Present)
        .expect("roll call");
    server.sync(a).expect("sync a");

    // The second device receives everything, then both mark the same trainee
    // differently offline: a conflict on both sides and on the server.
    let (_, b) = &mut devices[1];
    server.sync(b).expect("sync b");
    b.mark(
        &course.id,
        "2026-12-01",
        &cadres[0],
        MarkStatus::Absent,
        Some("ốm".into()),
    )
    .expect("mark b");
    let (_, a) = &mut devices[0];
    a.mark(&course.id, "2026-12-01", &cadres[0], MarkStatus::Late, None)
        .expect("mark a");
    for (_, d) in devices.iter_mut() {
        server.sync(d).expect("sync");
    }
    let (_, a) = &mut devices[0];
    server.sync(a).expect("sync a again");
    assert!(
        !a.conflicts().expect("conflicts").is_empty(),
        "the scenario made a conflict"
    );
    assert_eq!(server.report(&course.id).trainees.len(), NAMES.len());

    // A wrong token and a bundle import and export, through the same code paths.
    let mut t = server.transport();
    let reply = t
        .post(
            "/v1/sync",
            sync_core::protocol::CONTENT_TYPE,
            Some("not-a-token"),
            vec![1, 2, 3],
        )
        .expect("answer");
    assert_eq!(reply.status, 401);
    let (_, b) = &mut devices[1];
    b.add_cadre(NAM_HANG, cadre("Sùng Thị Chua")).expect("cadre offline");
    let bundle = b.export_bundle().expect("bundle");
    diemdanh_server::bundle::import(&server.store(), &bundle.data).expect("import bundle");

    // A request id a proxy set is kept and sent back; one that could carry anything (a
    // name) is replaced by a fresh one and never logged.
    let kept = rawhttp::get(&server.url, "/healthz", &[("x-request-id", "hygiene-probe-1")]).expect("healthz");
    assert_eq!(kept.header("x-request-id"), Some("hygiene-probe-1"));
    let replaced = rawhttp::get(&server.url, "/healthz", &[("x-request-id", NAMES[0])]).expect("healthz");
    let fresh = replaced.header("x-request-id").expect("a fresh id").to_string();
    assert_eq!(fresh.len(), 16, "{fresh}");
    assert!(fresh.bytes().all(|b| b.is_ascii_hexdigit()), "{fresh}");
    // A device's successful sync answer goes without the id (it is 32 bytes of a one-mark
    // exchange); an error answer keeps it, and one the client sent comes back.
    let token = diemdanh_tests::device_token(devices[0].1.home());
    let nothing_new = diemdanh_tests::empty_exchange();
    let bearer = format!("Bearer {token}");
    let ok = rawhttp::post(&server.url, "/", &[("authorization", &bearer)], &nothing_new).expect("sync");
    assert_eq!((ok.status, ok.header("x-request-id")), (200, None));
    let echoed = rawhttp::post(
        &server.url,
        "/",
        &[("authorization", &bearer), ("x-request-id", "hygiene-probe-2")],
        &nothing_new,
    )
    .expect("sync");
    assert_eq!(
        (echoed.status, echoed.header("x-request-id")),
        (200, Some("hygiene-probe-2"))
    );
    let refused = rawhttp::post(
        &server.url,
        "/",
        &[("authorization", "Bearer not-a-token")],
        &nothing_new,
    )
    .expect("sync");
    assert_eq!(refused.status, 401);
    assert!(refused.header("x-request-id").is_some(), "{refused:?}");
    let device_ids: Vec<String> = devices.iter().map(|(_, d)| d.device_id().to_string()).collect();
    server.stop();

    let text = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    // The capture is real: the server's own sync lines are in it.
    assert!(text.contains("sync"), "nothing was captured");
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "not at debug/trace level"
    );
    for name in NAMES.iter().chain(&["Sùng Thị Chua"]) {
        assert!(!text.contains(name), "a cadre's name is in the logs");
        // Also as JSON would escape it.
        let escaped = serde_json::to_string(name).expect("json");
        assert!(
            !text.contains(escaped.trim_matches('"')),
            "a cadre's name (escaped) is in the logs"
        );
    }
    for form in [
        format!("\"ethnicity\":\"{ETHNICITY}\""),
        format!("ethnicity: Some(\"{ETHNICITY}\")"),
        format!("ethnicity={ETHNICITY}"),
    ] {
        assert!(!text.contains(&form), "ethnicity is in the logs: {form}");
    }
    // Every request has its span: id, method, path, status, latency; a sync names its
    // device once authenticated, and the sync's own line carries both.
    assert!(
        text.contains("request_id=hygiene-probe-1"),
        "the kept request id is in the span"
    );
    assert!(
        text.contains(&format!("request_id={fresh}")),
        "the fresh request id is in the span"
    );
    for id in &device_ids {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("device={id}")) && l.contains("request_id=") && l.contains(" sync "))
            .unwrap_or_else(|| panic!("no sync line names device {id} with a request id"));
        // Devices sync on `POST /` (compact bodies), or /v1/sync after a fallback.
        assert!(line.contains("path=/ ") || line.contains("path=/v1/sync"), "{line}");
    }
    assert!(
        text.lines()
            .any(|l| l.contains("answered") && l.contains("status=200") && l.contains("latency_ms=")),
        "the answer's status and latency are recorded"
    );
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a token, code or its hash is in the logs"
        );
    }
}
