use diemdanh_tests::{TestServer, HUA_BUM, NAM_HANG};
use sync_core::docs::{self, DocId};
use sync_core::model::{Mark, MarkStatus};
use sync_core::{Error, UnitKey};

use crate::common::{home, meta, setup_course};

#[test]
fn a_device_of_another_commune_can_neither_read_nor_write_this_communes_courses() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, _) = setup_course(&mut a, NAM_HANG, 3, 2);
    a.mark_all(&course.id, &course.sessions[0].id, MarkStatus::Present)
        .expect("mark");
    server.sync(&mut a).expect("sync");
    let before = server.report(&course.id);

    let mut other = server.enrolled_device(&home(dir.path(), "other"), HUA_BUM);
    let stats = server.sync(&mut other).expect("sync");
    assert_eq!(stats.docs_received, 0, "nothing of Nậm Hàng is sent to Hua Bum");
    assert!(other.list_courses().expect("list").is_empty());
    assert!(other.list_cadres(None).expect("list").is_empty());
    assert!(matches!(other.show_course(&course.id), Err(Error::NotFound(_))));

    // The device refuses to record outside its unit...
    let err = other
        .create_course(NAM_HANG, meta("x"), vec![])
        .expect_err("out of scope");
    assert!(err.to_string().contains("outside this device's unit"), "{err}");
    // ...and the server refuses a forged write all the same, and applies nothing.
    let unit: UnitKey = NAM_HANG.parse().expect("unit");
    let forged = Mark {
        status: MarkStatus::Absent,
        note: None,
        periods: None,
        device: "x".into(),
        at: 0,
    };
    other
        .write_unchecked(
            &DocId::attendance(&unit, &course.id, 0),
            &docs::mark_key(&course.sessions[0].id, "zzz"),
            &docs::encode(&forged),
        )
        .expect("forge");
    let stats = server.sync(&mut other).expect("sync answers");
    assert_eq!(stats.refused.len(), 1);
    assert!(
        stats.refused[0].reason.contains("outside this device's unit"),
        "{:?}",
        stats.refused
    );
    assert_eq!(server.report(&course.id), before);
    let shown = other.status().expect("status");
    assert_eq!(shown.refused.len(), 1, "the device shows the refusal");
    // The server did not leak the other commune's document in its answer.
    assert!(other.list_courses().expect("list").is_empty());
}

#[test]
fn a_revoked_device_is_refused_with_a_clear_message_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, _) = setup_course(&mut a, NAM_HANG, 2, 1);
    server.sync(&mut a).expect("sync");
    a.mark_all(&course.id, &course.sessions[0].id, MarkStatus::Present)
        .expect("mark offline");
    server.revoke(a.device_id());
    let err = server.sync(&mut a).expect_err("revoked");
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    assert!(err.to_string().contains("revoked"), "{err}");
    assert_eq!(a.status().expect("status").pending_changes, 1);
    assert_eq!(a.show_course(&course.id).expect("view").marks.len(), 2);
    assert!(server.report(&course.id).marks.is_empty());
    // Recording still works offline after revocation.
    a.mark_all(&course.id, &course.sessions[0].id, MarkStatus::Late)
        .expect("mark");
}

#[test]
fn a_change_that_breaks_the_schema_is_refused_and_the_device_shows_why() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, cadres) = setup_course(&mut a, NAM_HANG, 3, 2);
    server.sync(&mut a).expect("sync");
    let session = course.sessions[0].id.clone();
    // A valid roll call, then (through a fault-injection door) a mark for a trainee
    // who is not enrolled, in the same document and the same push.
    a.mark_all(&course.id, &session, MarkStatus::Present).expect("mark");
    let unit: UnitKey = NAM_HANG.parse().expect("unit");
    let bad = Mark {
        status: MarkStatus::Present,
        note: None,
        periods: None,
        device: a.device_id().into(),
        at: 0,
    };
    a.write_unchecked(
        &DocId::attendance(&unit, &course.id, 0),
        &docs::mark_key(&session, "notenrolled"),
        &docs::encode(&bad),
    )
    .expect("inject");
    // The device's own checks refuse the same thing through the normal door.
    let err = a
        .mark(&course.id, &session, "notenrolled", MarkStatus::Present, None)
        .expect_err("local check");
    assert!(err.to_string().contains("not enrolled"), "{err}");

    let stats = server.sync(&mut a).expect("sync answers");
    assert_eq!(stats.refused.len(), 1);
    let reason = &stats.refused[0].reason;
    assert!(
        reason.contains("notenrolled") && reason.contains("not enrolled"),
        "{reason}"
    );
    let status = a.status().expect("status");
    assert_eq!(status.refused.len(), 1);
    assert_eq!(&status.refused[0].reason, reason);
    // The refused change was kept on the device with its reason, and the valid marks of
    // the same push were re-applied and reach the server on the next sync.
    assert!(
        server.report(&course.id).marks.is_empty(),
        "nothing of the refused push applied"
    );
    server.sync(&mut a).expect("second sync");
    let report = server.report(&course.id);
    assert_eq!(report.marks.len(), 3);
    assert!(report.marks.iter().all(|m| cadres.contains(&m.cadre)));
    assert_eq!(report, a.show_course(&course.id).expect("view"));
    assert_eq!(a.status().expect("status").pending_changes, 0);
}

#[test]
fn a_change_by_an_actor_that_is_not_the_devices_is_refused() {
    use automerge::transaction::Transactable;
    use sync_core::protocol::{self, DocPush, Outcome, SyncRequest, SyncResponse, Transport};

    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let (course, cadres) = setup_course(&mut a, NAM_HANG, 2, 1);
    server.sync(&mut a).expect("sync");
    // A document forged with another actor, pushed with A's valid token.
    let unit: UnitKey = NAM_HANG.parse().expect("unit");
    let id = DocId::attendance(&unit, &course.id, 0);
    let mut doc = automerge::Automerge::new().with_actor(automerge::ActorId::random());
    let mut tx = doc.transaction();
    let mark = Mark {
        status: MarkStatus::Absent,
        note: None,
        periods: None,
        device: a.device_id().into(),
        at: 0,
    };
    tx.put(
        automerge::ROOT,
        docs::mark_key(&course.sessions[0].id, &cadres[0]),
        docs::encode(&mark),
    )
    .expect("put");
    tx.commit();
    let token = {
        let conn = sync_core::store::open_connection(&home(dir.path(), "a").join("device.sqlite")).expect("open");
        sync_core::store::get_meta(&conn, "token")
            .expect("meta")
            .expect("token")
    };
    let req = SyncRequest {
        cursor: 0,
        docs: vec![DocPush {
            doc: id.to_string(),
            base: vec![],
            heads: vec![],
            data: doc.save(),
        }],
        pending_changes: 0,
        app_version: "forged".into(),
        max_response_bytes: 1 << 20,
    };
    let reply = server
        .transport()
        .post(protocol::SYNC_PATH, protocol::CONTENT_TYPE, Some(&token), req.encode())
        .expect("reply");
    assert_eq!(reply.status, 200);
    let resp = SyncResponse::decode(&reply.body).expect("response");
    match &resp.results[0].outcome {
        Outcome::Refused { reason, .. } => assert!(reason.contains("not this device's"), "{reason}"),
        other => panic!("accepted a foreign actor's change: {other:?}"),
    }
    assert!(server.report(&course.id).marks.is_empty());
}
