//! No network at all: syncs carried as sealed files, both ways.

use diemdanh_server::Store;
use diemdanh_tests::{TestServer, NAM_HANG};
use sync_core::model::MarkStatus;

use crate::common::{home, server_change_counts, setup_course};

#[test]
fn a_device_bundle_is_applied_with_sync_checks_and_not_sent_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, _) = setup_course(&mut a, NAM_HANG, 5, 2);
    for s in &course.sessions {
        a.mark_all(&course.id, &s.id, MarkStatus::Present).expect("mark");
    }
    let bundle = a.export_bundle().expect("export");
    assert_eq!(bundle.docs, 3);
    assert!(bundle.changes > 0);

    // At the district office, with a connection.
    let report = diemdanh_server::bundle::import(&server.store(), &bundle.data).expect("import");
    assert_eq!((report.accepted.len(), report.refused.len()), (3, 0));
    assert_eq!(server.report(&course.id).marks.len(), 10);
    assert_eq!(server.report(&course.id), a.show_course(&course.id).expect("view"));
    // Importing the same bundle again changes nothing.
    let (logged, _) = server_change_counts(&server);
    diemdanh_server::bundle::import(&server.store(), &bundle.data).expect("import again");
    assert_eq!(server_change_counts(&server).0, logged);

    // Back in signal, the device learns the bundle arrived and sends no data again.
    let stats = server.sync(&mut a).expect("sync");
    assert_eq!(stats.changes_sent, 0);
    assert!(stats.bytes_up < 600, "probes only: {stats:?}");
    assert_eq!(a.status().expect("status").pending_changes, 0);
}

#[test]
fn a_bundle_that_never_arrived_is_sent_by_the_next_sync() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, _) = setup_course(&mut a, NAM_HANG, 3, 1);
    server.sync(&mut a).expect("sync");
    a.mark_all(&course.id, &course.sessions[0].id, MarkStatus::Late)
        .expect("mark");
    let _lost_on_the_road = a.export_bundle().expect("export");
    let stats = server.sync(&mut a).expect("sync");
    assert!(stats.changes_sent > 0, "{stats:?}");
    assert_eq!(server.report(&course.id).marks.len(), 3);
    assert_eq!(a.status().expect("status").pending_changes, 0);
}

#[test]
fn a_server_bundle_brings_a_device_up_to_date_without_a_network() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let mut b = server.enrolled_device(&home(dir.path(), "b"), NAM_HANG);
    let (course, _) = setup_course(&mut a, NAM_HANG, 4, 2);
    server.sync(&mut b).expect("b syncs once, before anything exists");
    server.sync(&mut a).expect("a sync");
    a.mark_all(&course.id, &course.sessions[1].id, MarkStatus::Absent)
        .expect("mark");
    server.sync(&mut a).expect("a sync");

    let (bytes, docs) = diemdanh_server::bundle::export(&server.store(), b.device_id()).expect("export");
    assert_eq!(docs, 3);
    let summary = b.import_bundle(&bytes).expect("import");
    assert_eq!(summary.docs, 3);
    assert_eq!(b.show_course(&course.id).expect("view"), server.report(&course.id));
    // The bundle moved B's cursor: its next sync brings nothing it already has.
    let stats = server.sync(&mut b).expect("sync");
    assert_eq!(stats.docs_received, 0);

    // Sealed for B: A cannot use it, and a changed byte is caught.
    let err = a.import_bundle(&bytes).expect_err("other device");
    assert!(err.to_string().contains("made for device"), "{err}");
    let mut tampered = bytes.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x40;
    let err = b.import_bundle(&tampered).expect_err("tampered");
    assert!(err.to_string().contains("altered"), "{err}");
}

#[test]
fn tampered_forged_or_revoked_device_bundles_are_refused_by_the_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, _) = setup_course(&mut a, NAM_HANG, 2, 1);
    a.mark_all(&course.id, &course.sessions[0].id, MarkStatus::Present)
        .expect("mark");
    let bundle = a.export_bundle().expect("export").data;
    let mut tampered = bundle.clone();
    let at = tampered.len() - 40;
    tampered[at] ^= 1;
    let err = diemdanh_server::bundle::import(&server.store(), &tampered).expect_err("tampered");
    assert!(err.to_string().contains("altered"), "{err}");
    let forged = sync_core::bundle::seal(
        sync_core::bundle::DEVICE_TO_SERVER,
        a.device_id(),
        &sync_core::bundle::key_from_token("guessed"),
        b"anything",
    );
    assert!(diemdanh_server::bundle::import(&server.store(), &forged).is_err());
    assert!(
        server.store().course_rows(&course.id).expect("rows").is_none(),
        "nothing applied"
    );
    server.revoke(a.device_id());
    let err = diemdanh_server::bundle::import(&server.store(), &bundle).expect_err("revoked");
    assert!(err.to_string().contains("revoked"), "{err}");
    assert!(
        server.store().course_rows(&course.id).expect("rows").is_none(),
        "nothing applied"
    );
}
