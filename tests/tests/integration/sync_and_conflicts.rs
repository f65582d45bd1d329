use diemdanh_tests::{TestServer, NAM_HANG};
use sync_core::device::Device;
use sync_core::model::MarkStatus;

use crate::common::{home, server_change_counts, setup_course};

#[test]
fn two_devices_record_offline_sync_in_any_order_and_converge() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let mut b = server.enrolled_device(&home(dir.path(), "b"), NAM_HANG);
    let (course, cadres) = setup_course(&mut a, NAM_HANG, 6, 4);
    server.sync(&mut a).expect("a sync");
    server.sync(&mut b).expect("b sync");
    assert_eq!(b.show_course(&course.id).expect("b sees course").trainees.len(), 6);

    // Both offline: A takes sessions 0 and 1, B sessions 2 and 3, and each changes a few.
    let s = |i: usize| course.sessions[i].id.clone();
    a.mark_all(&course.id, &s(0), MarkStatus::Present).expect("mark");
    a.mark_all(&course.id, &s(1), MarkStatus::Present).expect("mark");
    a.mark(&course.id, &s(1), &cadres[2], MarkStatus::Late, Some("xe hỏng".into()))
        .expect("mark");
    b.mark_all(&course.id, &s(2), MarkStatus::Present).expect("mark");
    b.mark_all(&course.id, &s(3), MarkStatus::Absent).expect("mark");
    b.mark(&course.id, &s(3), &cadres[0], MarkStatus::Excused, None)
        .expect("mark");
    // The date works as a session reference when the course has one session that day.
    b.mark(&course.id, "2026-12-03", &cadres[1], MarkStatus::LeftEarly, None)
        .expect("mark by date");
    assert!(a.status().expect("status").pending_changes > 0);

    // Any order, any number of times.
    for who in ["b", "a", "a", "b", "a", "b"] {
        let d = if who == "a" { &mut a } else { &mut b };
        server.sync(d).expect("sync");
    }
    let va = a.show_course(&course.id).expect("a view");
    let vb = b.show_course(&course.id).expect("b view");
    let vs = server.report(&course.id);
    assert_eq!(va, vb);
    assert_eq!(va, vs);
    assert_eq!(vs.marks.len(), 4 * 6, "one mark per (session, trainee)");
    assert!(vs.conflicts.is_empty());
    let late = vs
        .marks
        .iter()
        .find(|m| m.session == s(1) && m.cadre == cadres[2])
        .expect("late mark");
    assert_eq!((late.status, late.note.as_deref()), (MarkStatus::Late, Some("xe hỏng")));
    // Completion: cadre 0 was present 3 times and excused once: 3 of 4 = 0.75 < 0.8.
    let c0 = vs.completion.iter().find(|c| c.cadre == cadres[0]).expect("c0");
    assert_eq!((c0.attended, c0.sessions, c0.completed), (3, 4, false));
    assert_eq!(c0.ratio, 0.75);
    let c1 = vs.completion.iter().find(|c| c.cadre == cadres[1]).expect("c1");
    assert_eq!(c1.attended, 3);
    assert_eq!(a.status().expect("status").pending_changes, 0);
    assert_eq!(b.status().expect("status").pending_changes, 0);
    // Every change reached the server exactly once.
    let (logged, distinct) = server_change_counts(&server);
    assert_eq!(logged, distinct);
    assert!(logged > 0);

    // Ethnicity (sensitive) reaches the server's projection but not a device's query tables.
    let count = |path: std::path::PathBuf| -> i64 {
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.query_row("SELECT COUNT(*) FROM p_cadres WHERE ethnicity IS NOT NULL", [], |r| {
            r.get(0)
        })
        .expect("count")
    };
    assert_eq!(count(server.data.join("diemdanh.sqlite")), 6);
    assert_eq!(count(home(dir.path(), "a").join("device.sqlite")), 0);
    assert_eq!(count(home(dir.path(), "b").join("device.sqlite")), 0);

    // A sync with nothing new moves a few bytes and changes nothing.
    let stats = server.sync(&mut a).expect("idle sync");
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.docs_sent + stats.docs_received, 0);
    assert!(stats.bytes_up + stats.bytes_down < 200, "idle sync moved {stats:?}");
    assert_eq!(server_change_counts(&server), (logged, distinct));
}

#[test]
fn conflicts_show_on_both_devices_and_the_server_until_resolved() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let mut b = server.enrolled_device(&home(dir.path(), "b"), NAM_HANG);
    let (course, cadres) = setup_course(&mut a, NAM_HANG, 3, 2);
    server.sync(&mut a).expect("sync");
    server.sync(&mut b).expect("sync");
    let session = course.sessions[0].id.clone();
    a.mark_all(&course.id, &session, MarkStatus::Present).expect("mark");
    b.mark(&course.id, &session, &cadres[1], MarkStatus::Absent, None)
        .expect("mark");
    server.sync(&mut a).expect("sync");
    server.sync(&mut b).expect("sync");
    server.sync(&mut a).expect("sync");

    for (who, list) in [("a", a.conflicts().expect("a")), ("b", b.conflicts().expect("b"))] {
        assert_eq!(list.len(), 1, "device {who} lists the conflict");
        assert_eq!(
            (list[0].session.as_str(), list[0].cadre.as_str()),
            (session.as_str(), cadres[1].as_str())
        );
        let mut values = list[0].values.clone();
        values.sort();
        assert_eq!(values, vec![MarkStatus::Present, MarkStatus::Absent]);
    }
    let report = server.report(&course.id);
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].cadre, cadres[1]);
    assert_eq!(report, a.show_course(&course.id).expect("view"));

    // Resolving on B clears it everywhere after sync.
    b.resolve(&course.id, &session, &cadres[1], MarkStatus::Late)
        .expect("resolve");
    assert!(b.conflicts().expect("b").is_empty(), "resolved locally at once");
    server.sync(&mut b).expect("sync");
    server.sync(&mut a).expect("sync");
    assert!(a.conflicts().expect("a").is_empty());
    let report = server.report(&course.id);
    assert!(report.conflicts.is_empty());
    let m = report
        .marks
        .iter()
        .find(|m| m.cadre == cadres[1] && m.session == session)
        .expect("mark");
    assert_eq!(m.status, MarkStatus::Late);
    assert_eq!(report, a.show_course(&course.id).expect("view"));
}

#[test]
fn restarting_server_and_devices_loses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let server_dir = dir.path().join("server");
    let server = TestServer::start(&server_dir);
    let (course, cadres) = {
        let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
        let (course, cadres) = setup_course(&mut a, NAM_HANG, 4, 3);
        a.mark_all(&course.id, &course.sessions[0].id, MarkStatus::Present)
            .expect("mark");
        server.sync(&mut a).expect("sync");
        // Recorded after the sync, then the device "powers off".
        a.mark(&course.id, &course.sessions[1].id, &cadres[0], MarkStatus::Absent, None)
            .expect("mark");
        (course, cadres)
    };
    let before = server.report(&course.id);
    server.stop();

    let server = TestServer::start(&server_dir);
    assert_eq!(server.report(&course.id), before, "the server kept everything");
    let mut a = Device::open(&home(dir.path(), "a")).expect("reopen");
    assert_eq!(a.status().expect("status").pending_changes, 1);
    let view = a.show_course(&course.id).expect("view");
    assert_eq!(view.marks.len(), 5);
    server.sync(&mut a).expect("sync after restarts");
    let after = server.report(&course.id);
    assert_eq!(after.marks.len(), 5);
    assert!(after
        .marks
        .iter()
        .any(|m| m.cadre == cadres[0] && m.status == MarkStatus::Absent));
    assert_eq!(after, a.show_course(&course.id).expect("view"));
    let (logged, distinct) = server_change_counts(&server);
    assert_eq!(logged, distinct);
}

#[test]
fn sync_with_no_server_fails_plainly_and_keeps_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, _) = setup_course(&mut a, NAM_HANG, 2, 1);
    a.mark_all(&course.id, &course.sessions[0].id, MarkStatus::Present)
        .expect("mark");
    let pending = a.status().expect("status").pending_changes;
    let url = server.url.clone();
    server.stop();
    let mut t = diemdanh::HttpTransport::new(&url).expect("transport");
    let waits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = waits.clone();
    a.set_retry(sync_core::device::RetryPolicy {
        retries: 3,
        base: std::time::Duration::from_millis(200),
        cap: std::time::Duration::from_millis(500),
        sleep: std::sync::Arc::new(move |d| recorded.lock().expect("lock").push(d)),
    });
    let err = a.sync(&mut t, &mut |_| true).expect_err("no server");
    let waits = waits.lock().expect("lock").clone();
    assert_eq!(waits.len(), 3, "three retries, then give up");
    assert!(waits[0] <= std::time::Duration::from_millis(200));
    assert!(
        waits.iter().all(|w| *w <= std::time::Duration::from_millis(500)),
        "{waits:?}"
    );
    assert!(matches!(err, sync_core::Error::Offline(_)), "{err:?}");
    assert!(err.to_string().contains("cannot reach the server"));
    assert_eq!(a.status().expect("status").pending_changes, pending);
    assert_eq!(a.show_course(&course.id).expect("view").marks.len(), 2);
}

#[test]
fn small_batches_and_paged_responses_still_converge_exactly_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let mut b = server.enrolled_device(&home(dir.path(), "b"), NAM_HANG);
    let mut courses = Vec::new();
    for _ in 0..3 {
        let (course, _) = setup_course(&mut a, NAM_HANG, 5, 3);
        for s in &course.sessions {
            a.mark_all(&course.id, &s.id, MarkStatus::Present).expect("mark");
        }
        courses.push(course);
    }
    // One document per request up, one per response down.
    a.set_batch_limits(1, 1);
    b.set_batch_limits(1, 1);
    let up = server.sync(&mut a).expect("sync a");
    // 1 roster + 3 courses + 3 attendance documents, each in its own request.
    assert_eq!(up.docs_sent, 7);
    assert!(up.requests >= 7, "{up:?}");
    let down = server.sync(&mut b).expect("sync b");
    assert_eq!(down.docs_received, 7);
    assert!(down.requests >= 7, "paged: {down:?}");
    for c in &courses {
        assert_eq!(b.show_course(&c.id).expect("b"), server.report(&c.id));
        assert_eq!(server.report(&c.id).marks.len(), 15);
    }
    let (logged, distinct) = server_change_counts(&server);
    assert_eq!(logged, distinct);
}

#[test]
fn a_cancelled_sync_stops_cleanly_and_the_next_one_finishes() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, _) = setup_course(&mut a, NAM_HANG, 4, 2);
    a.mark_all(&course.id, &course.sessions[0].id, MarkStatus::Present)
        .expect("mark");
    a.set_batch_limits(1, 1);
    let mut t = server.transport();
    let err = a.sync(&mut t, &mut |_| false).expect_err("cancelled");
    assert!(matches!(err, sync_core::Error::Cancelled), "{err:?}");
    let pending = a.status().expect("status").pending_changes;
    assert!(pending > 0, "only the first exchange went");
    server.sync(&mut a).expect("resume");
    assert_eq!(a.status().expect("status").pending_changes, 0);
    assert_eq!(server.report(&course.id), a.show_course(&course.id).expect("view"));
}

#[test]
fn writing_the_value_a_key_already_holds_adds_no_pending_change() {
    use sync_core::docs::{self, DocId};
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, cadres) = setup_course(&mut a, NAM_HANG, 2, 1);
    server.sync(&mut a).expect("sync");
    let unit: sync_core::UnitKey = NAM_HANG.parse().expect("unit");
    let doc = DocId::attendance(&unit, &course.id, 0);
    let key = docs::mark_key(&course.sessions[0].id, &cadres[0]);
    let value = docs::encode(&sync_core::Mark {
        status: MarkStatus::Late,
        note: None,
        periods: None,
        device: a.device_id().into(),
        at: 1_764_547_200,
    });
    a.write_unchecked(&doc, &key, &value).expect("write");
    assert_eq!(a.status().expect("status").pending_changes, 1);
    // The very same value again: automerge makes no change, so nothing is pending or sent.
    a.write_unchecked(&doc, &key, &value).expect("same write");
    a.write_unchecked(&doc, &key, &value).expect("same write");
    assert_eq!(a.status().expect("status").pending_changes, 1);
    let stats = server.sync(&mut a).expect("sync");
    assert_eq!(stats.changes_sent, 1);
    assert_eq!(a.status().expect("status").pending_changes, 0);
    assert_eq!(server.report(&course.id).marks.len(), 1);
}

#[test]
fn an_exchange_that_gets_no_answer_is_retried_and_the_sync_completes() {
    use diemdanh_tests::{Fault, InProcessTransport};
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, _) = setup_course(&mut a, NAM_HANG, 3, 1);
    a.mark_all(&course.id, &course.sessions[0].id, MarkStatus::Present)
        .expect("mark");
    a.set_retry(sync_core::device::RetryPolicy {
        retries: 3,
        sleep: std::sync::Arc::new(|_| {}),
        ..Default::default()
    });
    let rt = std::sync::Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt"),
    );
    let store: std::sync::Arc<dyn diemdanh_server::Store> = std::sync::Arc::new(server.store());
    let mut t = InProcessTransport::new(store, rt);
    let mut faults = vec![Fault::DropRequest, Fault::DropResponse].into_iter();
    t.next_fault = Box::new(move || faults.next().unwrap_or(Fault::None));
    let stats = a.sync(&mut t, &mut |_| true).expect("sync rides out two losses");
    assert_eq!(stats.retries, 2);
    assert_eq!(server.report(&course.id), a.show_course(&course.id).expect("view"));
    let (logged, distinct) = server_change_counts(&server);
    assert_eq!(logged, distinct, "the repeated exchange applied nothing twice");
}
