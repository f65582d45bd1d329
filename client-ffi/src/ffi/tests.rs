//! The exported object without a network: enrolment goes through a transport that
//! answers like the server's enrolment endpoint. The scenarios against a real server
//! run through the generated bindings (client-ffi/tests/).

use std::sync::Arc;

use sync_core::protocol::{
    DocResult, EnrollResponse, Outcome, Reply, SyncRequest, SyncResponse, Transport, COMPACT_SYNC_PATH, ENROLL_PATH,
    SYNC_PATH,
};

use super::*;

const NAM_HANG: &str = "2025:03434";
const NAME: &str = "Lò Thị Hoa";

/// Answers like the server: enrolment with a good code, and a sync that accepts every
/// pushed document and has nothing new to send.
struct FakeServer;

impl Transport for FakeServer {
    fn post(&mut self, path: &str, _: &str, _: Option<&str>, body: Vec<u8>) -> Result<Reply, String> {
        let body = match path {
            ENROLL_PATH => serde_json::to_vec(&EnrollResponse {
                device_id: "dev".into(),
                unit: NAM_HANG.into(),
                token: "secret".into(),
            })
            .map_err(|e| e.to_string())?,
            SYNC_PATH | COMPACT_SYNC_PATH => {
                let compact = path == COMPACT_SYNC_PATH;
                let req = if compact {
                    SyncRequest::decode_compact(&body)
                } else {
                    SyncRequest::decode(&body)
                }
                .map_err(|e| e.to_string())?;
                let resp = SyncResponse {
                    results: req
                        .docs
                        .into_iter()
                        .map(|_| DocResult {
                            outcome: Outcome::Accepted,
                            heads: vec![],
                            data: vec![],
                        })
                        .collect(),
                    updates: vec![],
                    cursor: 1,
                    more: false,
                };
                if compact {
                    resp.encode_compact()
                } else {
                    resp.encode()
                }
            }
            _ => return Err(format!("no route {path}")),
        };
        Ok(Reply { status: 200, body })
    }
}

fn fake(_: &str, _: Option<&str>) -> sync_core::Result<Box<dyn Transport>> {
    Ok(Box::new(FakeServer))
}

/// A listener that answers `answer(call number)`, counting from 1.
struct Listener<F: Fn(usize) -> FieldResult<bool> + Send + Sync> {
    calls: std::sync::Mutex<Vec<SyncProgress>>,
    answer: F,
}

impl<F: Fn(usize) -> FieldResult<bool> + Send + Sync> SyncListener for Listener<F> {
    fn on_progress(&self, progress: SyncProgress) -> FieldResult<bool> {
        let mut calls = self.calls.lock().expect("calls");
        calls.push(progress);
        (self.answer)(calls.len())
    }
}

fn listener<F: Fn(usize) -> FieldResult<bool> + Send + Sync + 'static>(answer: F) -> Arc<Listener<F>> {
    Arc::new(Listener {
        calls: std::sync::Mutex::new(vec![]),
        answer,
    })
}

fn open(dir: &tempfile::TempDir) -> Arc<FieldClient> {
    FieldClient::open(dir.path().join("home").to_string_lossy().into_owned(), None).expect("open")
}

fn enrolled(dir: &tempfile::TempDir) -> Arc<FieldClient> {
    let client = open(dir);
    let e = client
        .enroll_with(&mut FakeServer, "http://127.0.0.1:9", "code", None)
        .expect("enrol");
    assert_eq!(e.unit, NAM_HANG);
    client
}

fn cadre(name: &str, birth_year: u16) -> NewCadre {
    NewCadre {
        name: name.into(),
        gender: Gender::Female,
        birth_year,
        ethnicity: Some("03".into()),
        category: None,
        position: None,
        qualification: None,
        theory_level: None,
    }
}

fn course(title: &str) -> NewCourse {
    NewCourse {
        title: title.into(),
        topic: None,
        organiser: None,
        form: None,
        venue: None,
        min_ratio: 0.8,
        excused_counts: false,
        planned_trainees: 100,
    }
}

fn session(date: &str) -> NewSession {
    NewSession {
        date: date.into(),
        half_day: None,
        periods: None,
        topic: None,
    }
}

#[test]
fn before_enrolment_recording_and_sync_say_not_enrolled() {
    let dir = tempfile::tempdir().expect("tmp");
    let client = open(&dir);
    assert_eq!(client.sync(None), Err(FieldError::NotEnrolled));
    assert_eq!(
        client.add_cadre(NAM_HANG.into(), cadre(NAME, 1994)),
        Err(FieldError::NotEnrolled)
    );
    let status = client.status().expect("status");
    assert_eq!(status.device_id, client.device_id());
    assert_eq!((status.unit, status.pending_changes), (None, 0));
}

#[test]
fn bad_input_is_invalid_input_and_names_no_person() {
    let dir = tempfile::tempdir().expect("tmp");
    let client = enrolled(&dir);
    let err = client
        .add_cadre(NAM_HANG.into(), cadre(NAME, 1850))
        .expect_err("too old");
    match &err {
        FieldError::InvalidInput { reason } => assert!(reason.contains("1850") && !reason.contains("Hoa"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!format!("{err}").contains("Hoa"));
    let bad_date = client.create_course(NAM_HANG.into(), course("Lớp"), vec![session("2026-13-40")]);
    assert!(matches!(bad_date, Err(FieldError::InvalidInput { .. })), "{bad_date:?}");
    let unknown = client.mark(
        "nosuchcourse".into(),
        "2026-12-01".into(),
        "x".into(),
        MarkStatus::Present,
        None,
    );
    assert!(matches!(unknown, Err(FieldError::InvalidInput { .. })), "{unknown:?}");
    assert!(matches!(
        client.show_course("bad id!".into()),
        Err(FieldError::InvalidInput { .. })
    ));
    assert!(matches!(
        client.enroll("ftp://example".into(), "code".into(), None),
        Err(FieldError::InvalidInput { .. })
    ));
    assert!(matches!(
        FieldClient::open(" ".into(), None),
        Err(FieldError::InvalidInput { .. })
    ));
}

#[test]
fn an_unreachable_server_is_offline() {
    let dir = tempfile::tempdir().expect("tmp");
    let client = open(&dir);
    // Nothing listens on port 1 of loopback.
    match client.enroll("http://127.0.0.1:1".into(), "code".into(), None) {
        Err(FieldError::Offline { reason }) => assert!(reason.contains("connection"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.status().expect("status").unit, None);
}

#[test]
fn a_panic_becomes_an_internal_error_and_the_client_goes_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let client = enrolled(&dir);
    let before = client.status().expect("status");
    let result: FieldResult<()> = client.with_device(|_| panic!("a bug"));
    assert!(matches!(result, Err(FieldError::Internal { .. })), "{result:?}");
    // A panic while the lock is held by a thread that dies poisons it; the client
    // still answers afterwards.
    let c2 = Arc::clone(&client);
    let _ = std::thread::spawn(move || {
        let _guard = c2.lock();
        panic!("a bug while holding the device");
    })
    .join();
    assert_eq!(client.status().expect("status after panics"), before);
    client
        .add_cadre(NAM_HANG.into(), cadre(NAME, 1994))
        .expect("still records");
}

#[test]
fn two_threads_marking_at_once_both_land() {
    let dir = tempfile::tempdir().expect("tmp");
    let client = enrolled(&dir);
    let ids: Vec<String> = (0..20)
        .map(|i| {
            client
                .add_cadre(NAM_HANG.into(), cadre(&format!("Học viên {i}"), 1980 + i))
                .expect("cadre")
        })
        .collect();
    let created = client
        .create_course(NAM_HANG.into(), course("Lớp bồi dưỡng"), vec![session("2026-12-01")])
        .expect("course");
    client.enrol_trainees(created.id.clone(), ids.clone()).expect("enrol");
    let threads: Vec<_> = [(0..10, MarkStatus::Present), (10..20, MarkStatus::Late)]
        .into_iter()
        .map(|(range, status)| {
            let client = Arc::clone(&client);
            let ids = ids[range].to_vec();
            let course = created.id.clone();
            std::thread::spawn(move || {
                for id in ids {
                    client
                        .mark(course.clone(), "2026-12-01".into(), id, status, None)
                        .expect("mark");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let view = client.show_course(created.id.clone()).expect("show");
    assert_eq!(view.marks.len(), 20);
    for (i, id) in ids.iter().enumerate() {
        let mark = view.marks.iter().find(|m| &m.cadre_id == id).expect("mark");
        let want = if i < 10 { MarkStatus::Present } else { MarkStatus::Late };
        assert_eq!(mark.status, want);
    }
    assert!(client.status().expect("status").pending_changes >= 20);
    assert_eq!(client.list_cadres(Some(NAM_HANG.into())).expect("cadres").len(), 20);
    assert_eq!(client.list_courses().expect("courses")[0].trainees, 20);
    assert_eq!(
        client
            .mark_all(created.id.clone(), created.sessions[0].id.clone(), MarkStatus::Absent)
            .expect("all"),
        20
    );
    assert!(client.conflicts().expect("conflicts").is_empty());
}

#[test]
fn a_session_added_later_is_shown() {
    let dir = tempfile::tempdir().expect("tmp");
    let client = enrolled(&dir);
    let created = client
        .create_course(NAM_HANG.into(), course("Lớp"), vec![session("2026-12-01")])
        .expect("course");
    let mut s = session("2026-12-02");
    s.half_day = Some(HalfDay::Afternoon);
    let added = client.add_session(created.id.clone(), s).expect("session");
    let view = client.show_course(created.id).expect("show");
    assert_eq!(view.sessions.len(), 2);
    let shown = view.sessions.iter().find(|x| x.id == added.id).expect("added");
    assert_eq!(shown.half_day, Some(HalfDay::Afternoon));
}

/// Three documents with changes (roster, course, attendance), sent one per request.
fn three_dirty_documents(client: &FieldClient) -> String {
    let hoa = client.add_cadre(NAM_HANG.into(), cadre(NAME, 1994)).expect("cadre");
    let created = client
        .create_course(NAM_HANG.into(), course("Lớp"), vec![session("2026-12-01")])
        .expect("course");
    client
        .enrol_trainees(created.id.clone(), vec![hoa.clone()])
        .expect("enrol");
    client
        .mark(created.id.clone(), "2026-12-01".into(), hoa, MarkStatus::Present, None)
        .expect("mark");
    client.set_batch_limits(1, 1024 * 1024);
    created.id
}

#[test]
fn a_cancelled_sync_keeps_what_was_sent_and_the_next_one_finishes() {
    let dir = tempfile::tempdir().expect("tmp");
    let client = enrolled(&dir);
    let course = three_dirty_documents(&client);
    let before = client.status().expect("status").pending_changes;

    let stop_at_first = listener(|_| Ok(false));
    let result = client.sync_with(Some(stop_at_first.clone()), fake);
    assert_eq!(result, Err(FieldError::Cancelled));
    assert_eq!(stop_at_first.calls.lock().expect("calls").len(), 1);
    let after = client.status().expect("status").pending_changes;
    assert!(0 < after && after < before, "{before} -> {after}");

    // cancel_sync from another thread while the sync runs (here: during the listener's call).
    let c2 = Arc::clone(&client);
    let button = listener(move |_| {
        let c3 = Arc::clone(&c2);
        std::thread::spawn(move || c3.cancel_sync()).join().expect("thread");
        Ok(true)
    });
    assert_eq!(client.sync_with(Some(button), fake), Err(FieldError::Cancelled));

    let report = client.sync_with(None, fake).expect("sync");
    assert!(report.requests >= 1 && report.bytes_up > 0, "{report:?}");
    let status = client.status().expect("status");
    assert_eq!(status.pending_changes, 0);
    assert!(status.last_sync.is_some());
    assert_eq!(client.show_course(course).expect("show").marks.len(), 1);
}

#[test]
fn a_listener_that_throws_stops_the_sync_with_internal() {
    let dir = tempfile::tempdir().expect("tmp");
    let client = enrolled(&dir);
    three_dirty_documents(&client);
    let throws = listener(|_| {
        Err(uniffi::UnexpectedUniFFICallbackError::new("java.lang.IllegalStateException: app bug").into())
    });
    match client.sync_with(Some(throws), fake) {
        Err(FieldError::Internal { reason }) => assert!(!reason.contains("app bug"), "{reason}"),
        other => panic!("{other:?}"),
    }
    client.sync_with(None, fake).expect("the next sync finishes");
    assert_eq!(client.status().expect("status").pending_changes, 0);
}

#[test]
fn everything_the_device_holds_is_exported_with_what_the_server_never_received() {
    let dir = tempfile::tempdir().expect("tmp");
    let client = enrolled(&dir);
    let course = three_dirty_documents(&client);
    let path = dir.path().join("tablet.json");
    let unsent = client
        .export_everything(path.to_string_lossy().into_owned())
        .expect("export");
    let export: sync_core::export::DeviceExport =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    assert_eq!(export.unsent.len() as u32, unsent);
    assert_eq!(export.format, sync_core::export::FORMAT);
    assert_eq!(export.courses.len(), 1);
    assert_eq!(export.courses[0].id, course);
    let marks: Vec<_> = export.unsent.iter().filter(|u| u.key.starts_with("m/")).collect();
    assert_eq!(marks.len(), 1, "the one mark, never synced");
    assert_eq!(marks[0].values.len(), 1);
    let mark: serde_json::Value = serde_json::from_str(&marks[0].values[0]).expect("mark json");
    assert_eq!(mark["s"], "present");
    assert!(export.documents.iter().all(|d| !d.synced));
}
