//! Tablets whose clocks are days off, and jump back between writes: nothing is lost and
//! nothing is ordered by time. automerge orders by causality, so a later write (one made
//! after seeing the earlier) wins whatever its timestamp, concurrent writes stay a
//! conflict whatever theirs, and a resolution supersedes them even when its clock says
//! it happened weeks before. The server trusts its own clock for what it records.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use diemdanh_tests::{TestServer, NAM_HANG};
use sync_core::device::Device;
use sync_core::model::MarkStatus;

use crate::common::setup_course;

const DAY_MS: i64 = 86_400_000;

/// A device clock `offset` milliseconds away from the real one; the test moves it.
fn skewed(device: &mut Device, offset: &Arc<AtomicI64>) {
    let offset = offset.clone();
    device.set_clock(Arc::new(move || {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        real + offset.load(Ordering::SeqCst)
    }));
}

fn status_of(d: &Device, course: &str, session: &str, cadre: &str) -> Option<MarkStatus> {
    d.show_course(course)
        .expect("show")
        .marks
        .into_iter()
        .find(|m| m.session == session && m.cadre == cadre)
        .map(|m| m.status)
}

#[test]
fn skewed_and_jumping_clocks_lose_nothing_and_order_nothing_by_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let (behind, ahead) = (
        Arc::new(AtomicI64::new(-5 * DAY_MS)),
        Arc::new(AtomicI64::new(3 * DAY_MS)),
    );
    let mut a = server.enrolled_device(&dir.path().join("a"), NAM_HANG);
    let mut b = server.enrolled_device(&dir.path().join("b"), NAM_HANG);
    skewed(&mut a, &behind);
    skewed(&mut b, &ahead);
    let (course, cadres) = setup_course(&mut a, NAM_HANG, 2, 1);
    let session = course.sessions[0].id.clone();
    let (c0, c1) = (cadres[0].clone(), cadres[1].clone());

    // a (5 days behind) marks; b (3 days ahead) sees it and overwrites it.
    a.mark(&course.id, &session, &c0, MarkStatus::Present, None)
        .expect("mark");
    server.sync(&mut a).expect("sync a");
    server.sync(&mut b).expect("sync b");
    b.mark(&course.id, &session, &c0, MarkStatus::Late, None).expect("mark");
    server.sync(&mut b).expect("sync b");
    server.sync(&mut a).expect("sync a");
    assert_eq!(status_of(&a, &course.id, &session, &c0), Some(MarkStatus::Late));

    // a's clock jumps back ten more days; its next write, made after seeing b's, wins
    // although its timestamp is 18 days before b's.
    behind.store(-15 * DAY_MS, Ordering::SeqCst);
    a.mark(&course.id, &session, &c0, MarkStatus::Absent, None)
        .expect("mark");
    server.sync(&mut a).expect("sync a");
    server.sync(&mut b).expect("sync b");
    for d in [&a, &b] {
        assert_eq!(status_of(d, &course.id, &session, &c0), Some(MarkStatus::Absent));
        assert!(d.conflicts().expect("conflicts").is_empty());
    }
    assert_eq!(server.report(&course.id), a.show_course(&course.id).expect("show"));

    // Concurrent writes offline, with a's clock a month back: a conflict with both values.
    behind.store(-30 * DAY_MS, Ordering::SeqCst);
    a.mark(&course.id, &session, &c1, MarkStatus::Excused, None)
        .expect("mark");
    b.mark(&course.id, &session, &c1, MarkStatus::Present, None)
        .expect("mark");
    server.sync(&mut a).expect("sync a");
    server.sync(&mut b).expect("sync b");
    server.sync(&mut a).expect("sync a");
    for report in [
        a.show_course(&course.id).expect("a"),
        b.show_course(&course.id).expect("b"),
        server.report(&course.id),
    ] {
        assert_eq!(report.conflicts.len(), 1, "{:?}", report.conflicts);
        let mut values = report.conflicts[0].values.clone();
        values.sort_by_key(|v| v.as_str().to_string());
        assert_eq!(values, vec![MarkStatus::Excused, MarkStatus::Present]);
        assert_eq!(report.conflicts[0].cadre, c1);
    }

    // b resolves it with its clock now 40 days behind: the resolution supersedes both.
    ahead.store(-40 * DAY_MS, Ordering::SeqCst);
    b.resolve(&course.id, &session, &c1, MarkStatus::LeftEarly)
        .expect("resolve");
    server.sync(&mut b).expect("sync b");
    server.sync(&mut a).expect("sync a");
    let report = server.report(&course.id);
    assert!(report.conflicts.is_empty());
    assert_eq!(report, a.show_course(&course.id).expect("a"));
    assert_eq!(report, b.show_course(&course.id).expect("b"));
    assert_eq!(status_of(&a, &course.id, &session, &c1), Some(MarkStatus::LeftEarly));
    assert_eq!(status_of(&a, &course.id, &session, &c0), Some(MarkStatus::Absent));

    // The skew really reached the changes, and the server kept its own time for contacts.
    let now = diemdanh_server::api::now();
    let conn = rusqlite::Connection::open(server.data.join("diemdanh.sqlite")).expect("open");
    let (oldest, newest): (i64, i64) = conn
        .query_row("SELECT MIN(time), MAX(time) FROM changes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("times");
    assert!(
        oldest < (now - 35 * 86_400) * 1000,
        "a's month-back clock is in its changes"
    );
    assert!(newest > (now + 2 * 86_400) * 1000, "b's clock ahead is in its changes");
    use diemdanh_server::Store;
    for d in server.store().devices().expect("devices") {
        let last = d.last_sync_at.expect("synced");
        assert!(
            (last - now).abs() < 600,
            "last contact by the server's clock: {last} vs {now}"
        );
    }
    let (logged, distinct) = crate::common::server_change_counts(&server);
    assert_eq!(logged, distinct);
}
