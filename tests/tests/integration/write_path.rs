//! The server's write path under load and beside other writers: group commit (several
//! requests, one transaction, each its own outcome), the in-memory document cache
//! (never serving a state another writer has moved past), and snapshots taken only every
//! few changes (a fresh device still gets everything).

use std::sync::{Arc, Barrier};

use diemdanh_server::resolve::resolve_mark;
use diemdanh_tests::{TestServer, NAM_HANG};
use sync_core::docs::DocId;
use sync_core::model::MarkStatus;
use sync_core::units::UnitTree;

use crate::common::{home, server_change_counts, setup_course};

/// Communes of Lai Châu (2025 structure), one per device.
fn communes(n: usize) -> Vec<String> {
    let tree = UnitTree::reference();
    let province = tree.resolve("2025:12").expect("Lai Châu").key.clone();
    let mut out: Vec<String> = tree.children(&province).iter().map(|u| u.to_string()).collect();
    out.sort();
    assert!(out.len() >= n, "Lai Châu has {} communes", out.len());
    out.truncate(n);
    out
}

#[test]
fn concurrent_devices_each_get_their_own_outcome_and_lose_nothing() {
    const DEVICES: usize = 8;
    const ROUNDS: usize = 4;
    let dir = tempfile::tempdir().expect("tmp");
    let server = Arc::new(TestServer::start(&dir.path().join("server")));
    let units = communes(DEVICES + 1);
    let barrier = Arc::new(Barrier::new(DEVICES + 1));
    let mut threads = Vec::new();
    for (i, unit) in units.iter().take(DEVICES).cloned().enumerate() {
        let (server, barrier) = (server.clone(), barrier.clone());
        let home = home(dir.path(), &format!("d{i}"));
        threads.push(std::thread::spawn(move || {
            let mut d = server.enrolled_device(&home, &unit);
            let (course, cadres) = setup_course(&mut d, &unit, 5, ROUNDS);
            barrier.wait();
            // Every device syncs every round at once: requests queue behind each other.
            for (session, cadre) in course.sessions.iter().zip(&cadres).take(ROUNDS) {
                d.mark_all(&course.id, &session.id, MarkStatus::Present)
                    .expect("mark all");
                d.mark(&course.id, &session.id, cadre, MarkStatus::Late, None)
                    .expect("mark");
                server.sync(&mut d).expect("sync");
            }
            server.sync(&mut d).expect("last sync");
            assert_eq!(d.status().expect("status").pending_changes, 0);
            let view = d.show_course(&course.id).expect("view");
            assert_eq!(view, server.report(&course.id), "device {i}: server == device");
            assert_eq!(view.marks.len(), 5 * ROUNDS);
        }));
    }
    // A ninth device pushes a change that breaks the schema in the same bursts: it is
    // refused alone, and nobody else's request is rolled back with it.
    let bad_unit = units[DEVICES].clone();
    let bad = {
        let (server, barrier) = (server.clone(), barrier.clone());
        let home = home(dir.path(), "bad");
        std::thread::spawn(move || {
            let mut d = server.enrolled_device(&home, &bad_unit);
            let (course, _) = setup_course(&mut d, &bad_unit, 3, 1);
            server.sync(&mut d).expect("setup sync");
            barrier.wait();
            let unit = bad_unit.parse().expect("unit");
            let att = DocId::attendance(&unit, &course.id, 0);
            d.write_unchecked(
                &att,
                &format!("m/nosuchsession/{}", "x1"),
                "{\"s\":\"present\",\"d\":\"x\",\"t\":1}",
            )
            .expect("write");
            let stats = server.sync(&mut d).expect("sync answers");
            assert_eq!(stats.refused.len(), 1, "{stats:?}");
            assert_eq!(d.refused().expect("refused").len(), 1);
        })
    };
    for t in threads {
        t.join().expect("device thread");
    }
    bad.join().expect("bad device thread");
    let (logged, distinct) = server_change_counts(&server);
    assert_eq!(logged, distinct, "every change logged once");
    let store = server.store();
    let refusals = diemdanh_server::Store::refusals(&store).expect("refusals");
    assert_eq!(refusals.len(), 1);
}

#[test]
fn a_write_through_another_handle_is_never_hidden_by_the_document_cache() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let mut b = server.enrolled_device(&home(dir.path(), "b"), NAM_HANG);
    let (course, cadres) = setup_course(&mut a, NAM_HANG, 4, 2);
    server.sync(&mut a).expect("sync");
    server.sync(&mut b).expect("sync");
    let s0 = course.sessions[0].id.clone();
    let s1 = course.sessions[1].id.clone();
    // A conflict, pushed by both: the server now holds the part in memory.
    a.mark(&course.id, &s0, &cadres[0], MarkStatus::Late, None)
        .expect("mark");
    b.mark(&course.id, &s0, &cadres[0], MarkStatus::Absent, None)
        .expect("mark");
    server.sync(&mut a).expect("sync");
    server.sync(&mut b).expect("sync");
    assert_eq!(server.report(&course.id).conflicts.len(), 1);

    // An organiser resolves it through another handle on the same file, as the web
    // pages of a second process or an admin command would.
    let other = server.store();
    let unit = NAM_HANG.parse().expect("unit");
    resolve_mark(
        &other,
        &unit,
        &course.id,
        &s0,
        &cadres[0],
        MarkStatus::Present,
        1_800_000_000,
    )
    .expect("resolve");

    // Then A pushes a new mark into the same part through the running server.
    a.mark(&course.id, &s1, &cadres[1], MarkStatus::Excused, None)
        .expect("mark");
    server.sync(&mut a).expect("sync");
    server.sync(&mut b).expect("sync");
    let report = server.report(&course.id);
    assert!(
        report.conflicts.is_empty(),
        "the resolution stands: {:?}",
        report.conflicts
    );
    for (who, d) in [("a", &a), ("b", &b)] {
        let view = d.show_course(&course.id).expect("view");
        assert_eq!(view, report, "{who} sees the server's state");
        let m = view
            .marks
            .iter()
            .find(|m| m.session == s0 && m.cadre == cadres[0])
            .expect("mark");
        assert_eq!(m.status, MarkStatus::Present, "{who} got the resolution");
    }

    // A fresh device after many small pushes (snapshots are saved only every few
    // changes): it gets every change, from snapshot and tail.
    for i in 0..60 {
        let status = if i % 2 == 0 {
            MarkStatus::Late
        } else {
            MarkStatus::Present
        };
        a.mark(&course.id, &s1, &cadres[2], status, None).expect("mark");
        server.sync(&mut a).expect("sync");
    }
    drop(server);
    // And after a restart, with nothing in memory.
    let server = TestServer::start(&dir.path().join("server"));
    let mut c = server.enrolled_device(&home(dir.path(), "c"), NAM_HANG);
    server.sync(&mut c).expect("fresh pull");
    server.sync(&mut a).expect("sync");
    let report = server.report(&course.id);
    assert_eq!(c.show_course(&course.id).expect("c view"), report);
    assert_eq!(a.show_course(&course.id).expect("a view"), report);
    let last = report
        .marks
        .iter()
        .find(|m| m.session == s1 && m.cadre == cadres[2])
        .expect("mark");
    assert_eq!(last.status, MarkStatus::Present, "the 60th push is there");
    let (logged, distinct) = server_change_counts(&server);
    assert_eq!(logged, distinct);
}

#[test]
fn a_store_restored_from_an_older_backup_gets_back_what_the_devices_hold() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("server");
    let backup = dir.path().join("backup");
    let server = TestServer::start(&data);
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, cadres) = setup_course(&mut a, NAM_HANG, 4, 3);
    a.mark_all(&course.id, &course.sessions[0].id, MarkStatus::Present)
        .expect("mark");
    server.sync(&mut a).expect("sync");
    // The backup, taken here (the server stopped, so the files are whole).
    drop(server);
    std::fs::create_dir_all(&backup).expect("mkdir");
    for f in ["diemdanh.sqlite", "diemdanh.sqlite-wal"] {
        if data.join(f).exists() {
            std::fs::copy(data.join(f), backup.join(f)).expect("copy");
        }
    }
    // Marks the server then receives, and loses when it is restored from that backup.
    let server = TestServer::start(&data);
    a.mark_all(&course.id, &course.sessions[1].id, MarkStatus::Present)
        .expect("mark");
    a.mark(&course.id, &course.sessions[1].id, &cadres[0], MarkStatus::Late, None)
        .expect("mark");
    server.sync(&mut a).expect("sync");
    drop(server);
    for f in ["diemdanh.sqlite", "diemdanh.sqlite-wal", "diemdanh.sqlite-shm"] {
        let _ = std::fs::remove_file(data.join(f));
        if backup.join(f).exists() {
            std::fs::copy(backup.join(f), data.join(f)).expect("restore");
        }
    }
    let server = TestServer::start(&data);
    assert_eq!(
        server.report(&course.id).marks.len(),
        4,
        "the restored store has only session 0"
    );

    // The device records on top of what the server lost and syncs: nothing is refused,
    // and the server gets everything back.
    a.mark(&course.id, &course.sessions[2].id, &cadres[1], MarkStatus::Absent, None)
        .expect("mark");
    let stats = server.sync(&mut a).expect("sync");
    assert!(stats.refused.is_empty(), "nothing refused: {:?}", stats.refused);
    assert!(a.refused().expect("refused").is_empty());
    assert_eq!(a.status().expect("status").pending_changes, 0);
    let report = server.report(&course.id);
    assert_eq!(
        report.marks.len(),
        4 + 4 + 1,
        "sessions 0 and 1 whole and one mark of 2"
    );
    assert_eq!(a.show_course(&course.id).expect("view"), report);
    let late = report
        .marks
        .iter()
        .find(|m| m.session == course.sessions[1].id && m.cadre == cadres[0])
        .expect("the lost late mark");
    assert_eq!(late.status, MarkStatus::Late);
    // And a second device of the commune sees it all.
    let mut b = server.enrolled_device(&home(dir.path(), "b"), NAM_HANG);
    server.sync(&mut b).expect("sync");
    assert_eq!(b.show_course(&course.id).expect("view"), report);
}
