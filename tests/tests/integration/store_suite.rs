//! One store test suite, written once against the `Store` and `DocTx` traits and run on
//! both backends (`sqlite::` and `postgres::` below, made by `store_suite!`). The
//! PostgreSQL half runs when `DIEMDANH_TEST_POSTGRES` names a database (each test in a
//! fresh schema, dropped after); without it, it says it did not run.
//!
//! A [`Backend`] opens as many handles on one database as a test wants: two handles are
//! two server nodes (two pools on PostgreSQL, two connections on one SQLite file).

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ReadDoc, ROOT};
use diemdanh_server::store::{RedeemError, Store, StoreError};
use diemdanh_server::{PgStore, SqliteStore};
use diemdanh_tests::pgtest::TestSchema;
use diemdanh_tests::{HUA_BUM, NAM_HANG};
use sync_core::docs::{self, CourseDoc, DocId};
use sync_core::model::{CourseMeta, Enrolment, EvalKind, Evaluation, Mark, MarkStatus, Session};
use sync_core::units::UnitKey;

use crate::common::{cadre, meta};

pub struct Backend {
    open: Box<dyn Fn() -> Arc<dyn Store>>,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<TestSchema>,
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("server");
        Backend {
            open: Box::new(move || Arc::new(SqliteStore::open(&path).expect("open sqlite store"))),
            _dir: Some(dir),
            _schema: None,
        }
    }

    fn postgres(test: &str) -> Option<Backend> {
        let schema = TestSchema::create(test)?;
        let url = schema.url.clone();
        Some(Backend {
            open: Box::new(move || Arc::new(PgStore::open(&url, 4).expect("open postgres store"))),
            _dir: None,
            _schema: Some(schema),
        })
    }

    /// A new handle on the same database: another server node.
    pub fn node(&self) -> Arc<dyn Store> {
        (self.open)()
    }
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::Backend::sqlite()); } )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(b) = super::Backend::postgres(stringify!($name)) {
                        super::$name(&b);
                    }
                }
            )*
        }
    };
}

store_suite!(
    enrolment_codes_are_one_time_and_expire,
    a_refused_enrolment_leaves_the_code_usable,
    devices_are_listed_revoked_and_counted,
    the_sync_transaction_stores_loads_and_logs_each_change_once,
    changed_since_and_changes_since_follow_the_sequence,
    a_failed_transaction_leaves_nothing,
    refusals_are_kept_newest_first,
    projections_give_course_rows_and_lists,
    concurrent_marks_are_projected_as_a_conflict,
    migrations_are_idempotent_on_reopen,
    two_nodes_writing_one_document_lose_no_change,
    a_cursor_never_skips_a_change_committed_late,
    report_queries_count_a_period_and_replay_the_log,
    unit_and_annual_completion_needs_every_evaluation_passed,
    web_accounts_and_sessions_are_shared_by_every_node,
    a_device_is_moved_to_another_unit,
    certificate_numbers_are_sequential_kept_and_never_reused,
    two_nodes_issuing_certificates_never_give_one_number_twice,
);

const T0: i64 = 1_764_547_200;

fn unit(key: &str) -> UnitKey {
    key.parse().expect("unit")
}

fn commit(doc: &mut Automerge, entries: Vec<(String, String)>) {
    let mut tx = doc.transaction();
    for (k, v) in entries {
        tx.put(ROOT, k, v).expect("put");
    }
    tx.commit_with(CommitOptions::default().with_message("test").with_time(T0 * 1000));
}

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![0xd1, 0xe0, n])
}

/// Stores `doc` (all its changes the store lacks) in one transaction.
fn store_doc(store: &dyn Store, id: &DocId, doc: &Automerge, course: Option<&CourseDoc>) {
    let contents = docs::read(id, doc, course).expect("valid document");
    store
        .write(&mut |tx| {
            tx.store(
                id,
                doc,
                &doc.get_changes(&[]),
                &diemdanh_server::store::Projection::Whole(contents.clone()),
                "dev-1",
            )
        })
        .expect("store");
}

fn count(store: &dyn Store, what: &str) -> i64 {
    store
        .counts()
        .expect("counts")
        .into_iter()
        .find(|(k, _)| k == what)
        .map(|(_, n)| n)
        .expect("count present")
}

fn max_seq(store: &dyn Store) -> i64 {
    let mut seq = 0;
    store
        .write(&mut |tx| {
            seq = tx.max_seq()?;
            Ok(())
        })
        .expect("max seq");
    seq
}

/// A roster with `names` cadres, as one change.
fn roster(unit: &UnitKey, names: &[&str]) -> (DocId, Automerge, Vec<String>) {
    let mut doc = Automerge::new().with_actor(actor(1));
    let ids: Vec<String> = names.iter().map(|_| sync_core::model::new_id()).collect();
    commit(
        &mut doc,
        ids.iter()
            .zip(names)
            .map(|(id, n)| (docs::cadre_key(id), docs::encode(&cadre(n))))
            .collect(),
    );
    (DocId::roster(unit), doc, ids)
}

/// A course document with `sessions` sessions and these trainees enrolled.
fn course(unit: &UnitKey, title: &str, sessions: usize, trainees: &[String]) -> (DocId, Automerge, CourseDoc) {
    let cid = sync_core::model::new_id();
    let m: CourseMeta = meta(title);
    let mut cd = CourseDoc {
        meta: Some(m.clone()),
        ..Default::default()
    };
    let mut entries = vec![(docs::META_KEY.to_string(), docs::encode(&m))];
    for i in 0..sessions {
        let s = Session {
            date: format!("2026-12-{:02}", i + 1),
            half_day: None,
            periods: Some(4),
            topic: None,
            part: docs::part_for_new_session(&cd),
        };
        let sid = format!("s{i}");
        entries.push((docs::session_key(&sid), docs::encode(&s)));
        cd.sessions.insert(sid, s);
    }
    for t in trainees {
        entries.push((docs::enrolment_key(t), docs::encode(&Enrolment { at: T0 })));
        cd.enrolments.insert(t.clone(), Enrolment { at: T0 });
    }
    let mut doc = Automerge::new().with_actor(actor(1));
    commit(&mut doc, entries);
    (DocId::course(unit, &cid), doc, cd)
}

fn mark(status: MarkStatus, device: &str) -> String {
    docs::encode(&Mark {
        status,
        note: None,
        periods: None,
        device: device.into(),
        at: T0,
    })
}

/// Three cadres, a course of two sessions (2026-12-01 and 02) with all three enrolled, and
/// four marks: present / absent / excused on the first day, late for the first cadre on
/// the second.
struct Seeded {
    cadres: Vec<String>,
    rid: DocId,
    cid: DocId,
    cd: CourseDoc,
    course_id: String,
    aid: DocId,
    adoc: Automerge,
}

fn seed_course_with_marks(store: &dyn Store) -> Seeded {
    let u = unit(NAM_HANG);
    let (rid, rdoc, cadres) = roster(&u, &["Lò Thị Hoa", "Vàng A Dình", "Tòng Văn Sính"]);
    store_doc(store, &rid, &rdoc, None);
    let (cid, cdoc, cd) = course(&u, "Bồi dưỡng QLNN", 2, &cadres);
    store_doc(store, &cid, &cdoc, None);
    let course_id = cid.course.clone().expect("course id");
    let aid = DocId::attendance(&u, &course_id, 0);
    let mut adoc = Automerge::new().with_actor(actor(1));
    let statuses = [MarkStatus::Present, MarkStatus::Absent, MarkStatus::Excused];
    let mut entries: Vec<(String, String)> = cadres
        .iter()
        .zip(statuses)
        .map(|(c, s)| (docs::mark_key("s0", c), mark(s, "dev-1")))
        .collect();
    entries.push((docs::mark_key("s1", &cadres[0]), mark(MarkStatus::Late, "dev-1")));
    commit(&mut adoc, entries);
    store_doc(store, &aid, &adoc, Some(&cd));
    Seeded {
        cadres,
        rid,
        cid,
        cd,
        course_id,
        aid,
        adoc,
    }
}

fn redeem(store: &dyn Store, code: &str, device: &str, actor: &str) -> Result<String, RedeemError> {
    store
        .redeem_enroll_code(code, device, actor, "test", &format!("token-{device}"), T0)
        .expect("redeem")
}

fn enrolment_codes_are_one_time_and_expire(b: &Backend) {
    let store = b.node();
    store.create_enroll_code(NAM_HANG, "code-a", T0 + 3600).expect("code");
    store.create_enroll_code(NAM_HANG, "code-old", T0 - 1).expect("code");
    assert_eq!(redeem(&*store, "code-a", "dev-1", "aa01").expect("redeemed"), NAM_HANG);
    assert!(matches!(
        redeem(&*store, "code-a", "dev-2", "aa02"),
        Err(RedeemError::BadCode)
    ));
    assert!(matches!(
        redeem(&*store, "code-old", "dev-3", "aa03"),
        Err(RedeemError::BadCode)
    ));
    assert!(matches!(
        redeem(&*store, "no-such-code", "dev-4", "aa04"),
        Err(RedeemError::BadCode)
    ));
    let d = store.device_by_token("token-dev-1").expect("lookup").expect("enrolled");
    assert_eq!(
        (d.id.as_str(), d.unit.as_str(), d.actor.as_str()),
        ("dev-1", NAM_HANG, "aa01")
    );
    assert!(store.device_by_token("token-dev-2").expect("lookup").is_none());
    // The same code redeemed through another node at once: exactly one device wins.
    store
        .create_enroll_code(NAM_HANG, "code-race", T0 + 3600)
        .expect("code");
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let node = b.node();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                redeem(&*node, "code-race", &format!("racer-{i}"), &format!("bb0{i}")).is_ok()
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().expect("join"))
        .filter(|w| *w)
        .count();
    assert_eq!(wins, 1, "a one-time code enrolled {wins} devices");
}

fn a_refused_enrolment_leaves_the_code_usable(b: &Backend) {
    let store = b.node();
    store.create_enroll_code(NAM_HANG, "c1", T0 + 3600).expect("code");
    store.create_enroll_code(NAM_HANG, "c2", T0 + 3600).expect("code");
    redeem(&*store, "c1", "dev-1", "aa01").expect("first");
    assert!(matches!(
        redeem(&*store, "c2", "dev-1", "aa09"),
        Err(RedeemError::DeviceExists)
    ));
    assert!(matches!(
        redeem(&*store, "c2", "dev-9", "aa01"),
        Err(RedeemError::DeviceExists)
    ));
    assert_eq!(
        redeem(&*store, "c2", "dev-2", "aa02").expect("code still usable"),
        NAM_HANG
    );
}

fn devices_are_listed_revoked_and_counted(b: &Backend) {
    let store = b.node();
    for (i, u) in [(1, HUA_BUM), (2, NAM_HANG)] {
        store.create_enroll_code(u, &format!("c{i}"), T0 + 3600).expect("code");
        redeem(&*store, &format!("c{i}"), &format!("dev-{i}"), &format!("aa0{i}")).expect("enrol");
    }
    let list = store.devices().expect("devices");
    // By unit, then id: Nậm Hàng (03434) before Hua Bum (03460).
    assert_eq!(
        list.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["dev-2", "dev-1"]
    );
    assert!(list.iter().all(|d| d.revoked_at.is_none() && d.last_sync_at.is_none()));
    store
        .record_contact("dev-1", T0 + 10, 3, "1.2", 100, 2000)
        .expect("contact");
    store
        .record_contact("dev-1", T0 + 20, 0, "1.3", 50, 500)
        .expect("contact");
    store.set_device_cursor("dev-1", 7).expect("cursor");
    store.set_device_cursor("dev-1", 5).expect("an older cursor");
    let (d, token_hash) = store.device_by_id("dev-1").expect("lookup").expect("known");
    assert_eq!(token_hash, "token-dev-1");
    assert_eq!(
        (
            d.last_sync_at,
            d.pending_reported,
            d.app_version.as_str(),
            d.bytes_up,
            d.bytes_down,
            d.last_cursor
        ),
        (Some(T0 + 20), 0, "1.3", 150, 2500, 7)
    );
    assert!(store.revoke_device("dev-1", T0 + 30).expect("revoke"));
    assert!(store.revoke_device("dev-1", T0 + 40).expect("revoke again"));
    assert!(!store.revoke_device("dev-404", T0).expect("unknown"));
    let d = store
        .device_by_token("token-dev-1")
        .expect("lookup")
        .expect("still known");
    assert_eq!(d.revoked_at, Some(T0 + 30), "the first revocation time stays");
    assert_eq!(count(&*store, "devices"), 2);
    assert!(store.device_by_id("dev-404").expect("lookup").is_none());
}

fn the_sync_transaction_stores_loads_and_logs_each_change_once(b: &Backend) {
    let store = b.node();
    let u = unit(NAM_HANG);
    let (id, mut doc, _) = roster(&u, &["Lò Thị Hoa", "Vàng A Dình"]);
    assert_eq!(max_seq(&*store), 0);
    store_doc(&*store, &id, &doc, None);
    let first = max_seq(&*store);
    assert!(first > 0);
    // The same change again (a repeated batch) is logged once and moves nothing.
    store_doc(&*store, &id, &doc, None);
    assert_eq!((count(&*store, "changes"), max_seq(&*store)), (1, first));
    commit(
        &mut doc,
        vec![(docs::cadre_key("c-3"), docs::encode(&cadre("Tòng Văn Sính")))],
    );
    commit(
        &mut doc,
        vec![(docs::cadre_key("c-4"), docs::encode(&cadre("Chảo Thị Mai")))],
    );
    store_doc(&*store, &id, &doc, None);
    // SQLite's AUTOINCREMENT spends a number on an ignored duplicate; PostgreSQL's
    // counter has no gaps (checked in `a_failed_transaction_leaves_nothing` and nodes.rs).
    let last = max_seq(&*store);
    assert!(last >= first + 2, "two new changes, two new numbers at least");
    assert_eq!(count(&*store, "changes"), 3);
    assert_eq!(count(&*store, "cadres"), 4);
    // Another node reads what this one wrote.
    let other = b.node();
    let mut loaded = None;
    other
        .write(&mut |tx| {
            loaded = tx.load(&id)?;
            assert!(tx.load(&DocId::roster(&unit(HUA_BUM)))?.is_none());
            Ok(())
        })
        .expect("load");
    let loaded = loaded.expect("stored");
    assert_eq!(loaded.doc.get_heads(), doc.get_heads());
    assert_eq!((loaded.created_seq, loaded.updated_seq), (first, last));
    assert_eq!(
        Automerge::load(&loaded.snapshot).expect("snapshot").get_heads(),
        doc.get_heads()
    );
}

fn changed_since_and_changes_since_follow_the_sequence(b: &Backend) {
    let store = b.node();
    let (r1, d1, _) = roster(&unit(NAM_HANG), &["Lò Thị Hoa"]);
    let (r2, mut d2, _) = roster(&unit(HUA_BUM), &["Pờ Thị Dợ"]);
    store_doc(&*store, &r1, &d1, None);
    let s1 = max_seq(&*store);
    store_doc(&*store, &r2, &d2, None);
    let s2 = max_seq(&*store);
    let first = d2.get_heads();
    commit(
        &mut d2,
        vec![(docs::cadre_key("c-9"), docs::encode(&cadre("Lường Văn Tùng")))],
    );
    store_doc(&*store, &r2, &d2, None);
    let s3 = max_seq(&*store);
    assert!(s1 < s2 && s2 < s3);
    let both = vec![NAM_HANG.to_string(), HUA_BUM.to_string()];
    store
        .write(&mut |tx| {
            let all = tx.changed_since(&both, 0)?;
            assert_eq!(all, vec![(r1.to_string(), s1, s1), (r2.to_string(), s2, s3)]);
            assert_eq!(tx.changed_since(&both, s1)?, vec![(r2.to_string(), s2, s3)]);
            assert!(tx.changed_since(&both, s3)?.is_empty());
            assert!(tx
                .changed_since(&[HUA_BUM.to_string()], 0)?
                .iter()
                .all(|(d, _, _)| *d == r2.to_string()));
            // The changes after a cursor, in order, apply on the document as it was there.
            let raw = tx.changes_since(&r2.to_string(), s2)?;
            let mut old = d2.fork_at(&first).expect("fork");
            old.load_incremental(&raw).expect("apply");
            assert_eq!(old.get_heads(), d2.get_heads());
            assert_eq!(tx.changes_since(&r2.to_string(), 0)?.len(), {
                let c: usize = d2.get_changes(&[]).iter().map(|c| c.raw_bytes().len()).sum();
                c
            });
            assert!(tx.changes_since(&r2.to_string(), s3)?.is_empty());
            assert_eq!(tx.max_seq()?, s3);
            Ok(())
        })
        .expect("reads");
}

fn a_failed_transaction_leaves_nothing(b: &Backend) {
    let store = b.node();
    let (id, doc, _) = roster(&unit(NAM_HANG), &["Lò Thị Hoa"]);
    let contents = docs::read(&id, &doc, None).expect("valid");
    let r = store.write(&mut |tx| {
        tx.store(
            &id,
            &doc,
            &doc.get_changes(&[]),
            &diemdanh_server::store::Projection::Whole(contents.clone()),
            "dev-1",
        )?;
        tx.refuse("dev-1", "roster:x", "a reason", b"data")?;
        Err(StoreError::Other("the request failed half way".into()))
    });
    assert!(r.is_err());
    assert_eq!(
        (count(&*store, "changes"), count(&*store, "cadres"), max_seq(&*store)),
        (0, 0, 0)
    );
    assert!(store.refusals().expect("refusals").is_empty());
    let mut loaded = true;
    store
        .write(&mut |tx| {
            loaded = tx.load(&id)?.is_some();
            Ok(())
        })
        .expect("load");
    assert!(!loaded);
    // The numbers it would have had are given to the next one: no gap.
    store_doc(&*store, &id, &doc, None);
    assert_eq!(max_seq(&*store), 1);
}

fn refusals_are_kept_newest_first(b: &Backend) {
    let store = b.node();
    store
        .write(&mut |tx| {
            tx.refuse("dev-1", "roster:2025:03434", "document outside scope", b"one")?;
            tx.refuse("dev-2", "att:2025:03434:c:0", "mark for an unknown session", b"two")
        })
        .expect("refuse");
    let r = store.refusals().expect("refusals");
    assert_eq!(
        r.iter()
            .map(|r| (r.device_id.as_str(), r.reason.as_str()))
            .collect::<Vec<_>>(),
        [
            ("dev-2", "mark for an unknown session"),
            ("dev-1", "document outside scope")
        ]
    );
    assert!(r[0].id > r[1].id && r[0].at > 0);
}

fn projections_give_course_rows_and_lists(b: &Backend) {
    let store = b.node();
    let Seeded {
        cadres,
        cd,
        course_id,
        aid,
        mut adoc,
        ..
    } = seed_course_with_marks(&*store);
    let rows = store.course_rows(&course_id).expect("rows").expect("course");
    assert_eq!((rows.unit.as_str(), rows.title.as_str()), (NAM_HANG, "Bồi dưỡng QLNN"));
    assert_eq!((rows.min_ratio, rows.excused_counts), (0.8, false));
    let mut sessions: Vec<_> = rows
        .sessions
        .iter()
        .map(|s| (s.id.as_str(), s.date.as_str(), s.periods))
        .collect();
    sessions.sort();
    assert_eq!(sessions, [("s0", "2026-12-01", Some(4)), ("s1", "2026-12-02", Some(4))]);
    let names: BTreeSet<String> = rows.trainees.iter().filter_map(|t| t.name.clone()).collect();
    let expected: BTreeSet<String> = ["Lò Thị Hoa", "Tòng Văn Sính", "Vàng A Dình"].map(String::from).into();
    assert_eq!(names, expected);
    assert_eq!(rows.marks.len(), 4);
    let report = sync_core::report::CourseReport::assemble(rows);
    assert_eq!(report.marks.len(), 4);
    assert!(report.conflicts.is_empty());
    let list = store.courses().expect("courses");
    assert_eq!(list.len(), 1);
    let c = &list[0];
    assert_eq!(
        (
            c.id.as_str(),
            c.unit.as_str(),
            c.sessions,
            c.trainees,
            c.marks,
            c.conflicts
        ),
        (course_id.as_str(), NAM_HANG, 2, 3, 4, 0)
    );
    // A later version replaces the rows of that document, it does not add to them.
    commit(
        &mut adoc,
        vec![(docs::mark_key("s1", &cadres[1]), mark(MarkStatus::Present, "dev-1"))],
    );
    store_doc(&*store, &aid, &adoc, Some(&cd));
    assert_eq!(count(&*store, "marks"), 5);
    assert_eq!(count(&*store, "cadres"), 3);
    assert!(store.course_rows("no-such-course").expect("rows").is_none());
}

fn concurrent_marks_are_projected_as_a_conflict(b: &Backend) {
    let store = b.node();
    let u = unit(NAM_HANG);
    let (rid, rdoc, cadres) = roster(&u, &["Lò Thị Hoa"]);
    store_doc(&*store, &rid, &rdoc, None);
    let (cid, cdoc, cd) = course(&u, "Tập huấn", 1, &cadres);
    store_doc(&*store, &cid, &cdoc, None);
    let course_id = cid.course.clone().expect("course id");
    let aid = DocId::attendance(&u, &course_id, 0);
    let key = docs::mark_key("s0", &cadres[0]);
    let mut a = Automerge::new().with_actor(actor(2));
    let mut other = Automerge::new().with_actor(actor(3));
    commit(&mut a, vec![(key.clone(), mark(MarkStatus::Present, "dev-a"))]);
    commit(&mut other, vec![(key, mark(MarkStatus::Absent, "dev-b"))]);
    a.merge(&mut other).expect("merge");
    store_doc(&*store, &aid, &a, Some(&cd));
    let report = sync_core::report::CourseReport::assemble(store.course_rows(&course_id).expect("rows").expect("c"));
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(count(&*store, "conflicts"), 1);
    assert_eq!(store.courses().expect("courses")[0].conflicts, 1);
}

fn migrations_are_idempotent_on_reopen(b: &Backend) {
    let store = b.node();
    let (id, doc, _) = roster(&unit(NAM_HANG), &["Lò Thị Hoa"]);
    store_doc(&*store, &id, &doc, None);
    drop(store);
    // Opening again (a restart, or a second node starting) migrates nothing and keeps all.
    let again = b.node();
    let third = b.node();
    assert_eq!(count(&*again, "cadres"), 1);
    assert_eq!(count(&*third, "changes"), 1);
}

/// Two nodes, many writers, one document: every writer's change is in the stored
/// document, the change log and the projection.
fn two_nodes_writing_one_document_lose_no_change(b: &Backend) {
    let nodes = [b.node(), b.node()];
    let u = unit(NAM_HANG);
    let (id, base, _) = course(&u, "Tập huấn", 1, &[]);
    store_doc(&*nodes[0], &id, &base, None);
    const WRITERS: usize = 8;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let handles: Vec<_> = (0..WRITERS)
        .map(|i| {
            let node = nodes[i % 2].clone();
            let barrier = barrier.clone();
            let mut mine = base.fork().with_actor(actor(10 + i as u8));
            let cadre = format!("cadre-{i}");
            commit(
                &mut mine,
                vec![(docs::enrolment_key(&cadre), docs::encode(&Enrolment { at: T0 }))],
            );
            let id = id.clone();
            std::thread::spawn(move || {
                barrier.wait();
                node.write(&mut |tx| {
                    // What `sync::accept` does: load under the lock, merge, check, store.
                    let stored = tx.load_for_update(&id)?.expect("the course exists");
                    let server_heads = stored.doc.get_heads();
                    let mut doc = stored.doc;
                    doc.merge(&mut mine.clone())?;
                    let new = doc.get_changes(&server_heads);
                    let contents = docs::read(&id, &doc, None).map_err(|e| StoreError::Other(e.reason))?;
                    // Widen the window in which a lost update would happen.
                    std::thread::sleep(Duration::from_millis(20));
                    tx.store(
                        &id,
                        &doc,
                        &new,
                        &diemdanh_server::store::Projection::Whole(contents.clone()),
                        "dev",
                    )
                })
                .expect("write")
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    let mut stored = None;
    nodes[1]
        .write(&mut |tx| {
            stored = tx.load(&id)?;
            Ok(())
        })
        .expect("load");
    let doc = stored.expect("stored").doc;
    let enrolled: Vec<String> = doc.keys(ROOT).filter(|k| k.starts_with("e/")).collect();
    assert_eq!(enrolled.len(), WRITERS, "enrolments kept in the document: {enrolled:?}");
    assert_eq!(count(&*nodes[0], "changes"), 1 + WRITERS as i64);
    assert_eq!(max_seq(&*nodes[1]), 1 + WRITERS as i64);
    let course_id = id.course.clone().expect("course id");
    let rows = nodes[0].course_rows(&course_id).expect("rows").expect("course");
    assert_eq!(rows.trainees.len(), WRITERS, "the projection has every enrolment");
}

/// Writers on two nodes create documents (each written once) while a reader pulls with
/// its cursor exactly as a device's sync does (`sync::updates_since`). If a change could
/// become visible after the cursor had passed its number, that document would never be
/// seen: at the end the reader must have every document.
fn a_cursor_never_skips_a_change_committed_late(b: &Backend) {
    let nodes = [b.node(), b.node()];
    let u = unit(NAM_HANG);
    const WRITERS: usize = 4;
    const DOCS_EACH: usize = 12;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let node = nodes[w % 2].clone();
            let done = done.clone();
            let u = u.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..DOCS_EACH {
                    let (id, doc, _) = course(&u, &format!("Lớp {w}-{i}"), 1, &[]);
                    let contents = docs::read(&id, &doc, None).expect("valid");
                    node.write(&mut |tx| {
                        tx.store(
                            &id,
                            &doc,
                            &doc.get_changes(&[]),
                            &diemdanh_server::store::Projection::Whole(contents.clone()),
                            "dev",
                        )?;
                        // Read the sequence (as a sync does before it answers), then
                        // commit late: the transaction holds on after its numbers exist.
                        tx.max_seq()?;
                        std::thread::sleep(Duration::from_millis(if i % 3 == 0 { 15 } else { 1 }));
                        Ok(())
                    })
                    .expect("write");
                    ids.push(id.to_string());
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ids
            })
        })
        .collect();
    let reader = nodes[1].clone();
    let mut cursor = 0i64;
    let mut seen = BTreeSet::new();
    let pull = |cursor: &mut i64, seen: &mut BTreeSet<String>| {
        reader
            .write(&mut |tx| {
                let (updates, next, _more) = diemdanh_server::sync::updates_since(tx, &u, *cursor, &[], usize::MAX)?;
                for up in updates {
                    seen.insert(up.doc);
                }
                *cursor = next as i64;
                Ok(())
            })
            .expect("pull")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pulls = 0;
    while done.load(std::sync::atomic::Ordering::SeqCst) < WRITERS && Instant::now() < deadline && pulls < 100_000 {
        pull(&mut cursor, &mut seen);
        pulls += 1;
    }
    let mut all = BTreeSet::new();
    for w in writers {
        all.extend(w.join().expect("writer"));
    }
    pull(&mut cursor, &mut seen);
    assert!(pulls > 1, "the reader pulled while the writers wrote");
    let missed: Vec<_> = all.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "the cursor skipped {} document(s): {missed:?}",
        missed.len()
    );
    assert_eq!(cursor, (WRITERS * DOCS_EACH) as i64);
}

/// The report methods (`reports/`): courses held in a period, trainees with their mark
/// counts in the whole course and in the period, the change log up to a time.
fn report_queries_count_a_period_and_replay_the_log(b: &Backend) {
    let store = b.node();
    let Seeded {
        cadres,
        rid,
        cid,
        course_id,
        aid,
        ..
    } = seed_course_with_marks(&*store);

    assert!(store
        .period_courses("2027-01-01", "2027-12-31")
        .expect("period")
        .is_empty());
    let courses = store.period_courses("2026-12-01", "2026-12-01").expect("period");
    assert_eq!(courses.len(), 1);
    let c = &courses[0];
    assert_eq!(
        (c.id.as_str(), c.unit.as_str(), c.sessions, c.sessions_in_period),
        (course_id.as_str(), NAM_HANG, 2, 1)
    );
    assert_eq!(
        (c.first_date.as_str(), c.last_date.as_str()),
        ("2026-12-01", "2026-12-02")
    );
    let trainees = store
        .period_trainees(&courses, "2026-12-01", "2026-12-01")
        .expect("trainees");
    assert_eq!(trainees.len(), 3);
    let of = |cadre: &str| trainees.iter().find(|t| t.cadre_id == cadre).expect("trainee");
    // MarkStatus::ALL order: present, late, left early, excused, absent.
    assert_eq!(of(&cadres[0]).marks.total, [1, 1, 0, 0, 0]);
    assert_eq!(of(&cadres[0]).marks.in_period, [1, 0, 0, 0, 0]);
    assert_eq!(of(&cadres[1]).marks.in_period, [0, 0, 0, 0, 1]);
    assert_eq!(of(&cadres[2]).marks.total, [0, 0, 0, 1, 0]);
    assert!(trainees
        .iter()
        .all(|t| t.cadre.as_ref().and_then(|f| f.birth_year).is_some()));
    // A period that holds the whole course counts the same marks both ways.
    let whole = store.period_courses("2026-12-01", "2026-12-31").expect("period");
    let t = store
        .period_trainees(&whole, "2026-12-01", "2026-12-31")
        .expect("trainees");
    assert!(t.iter().all(|t| t.marks.total == t.marks.in_period));

    assert!(store.changes_until(0).expect("log").is_empty());
    let log = store.changes_until(i64::MAX).expect("log");
    assert_eq!(log.len() as i64, count(&*store, "changes"));
    let docs_in_log: BTreeSet<&str> = log.iter().map(|(d, _)| d.as_str()).collect();
    let expected: BTreeSet<String> = [rid.to_string(), cid.to_string(), aid.to_string()].into();
    assert_eq!(docs_in_log, expected.iter().map(String::as_str).collect());
}

/// Completion in the unit and annual reports is the course report's: the attendance
/// threshold AND every evaluation slot of the course (any slot recorded for any trainee)
/// recorded for the trainee and passed.
fn unit_and_annual_completion_needs_every_evaluation_passed(b: &Backend) {
    use diemdanh_server::reports;
    let store = b.node();
    let Seeded {
        cadres, cid, course_id, ..
    } = seed_course_with_marks(&*store);
    let period = reports::unit::Period::new(NAM_HANG, "2026-12-01", "2026-12-31").expect("period");
    let completed = |store: &dyn Store| {
        let unit = reports::unit::build(store, &period)
            .expect("unit report")
            .totals
            .completed;
        let annual = reports::annual::build(store, NAM_HANG, 2026)
            .expect("annual report")
            .total
            .completed;
        let course = reports::course::build(store, &course_id).expect("course report");
        let by_course = course.report.completion.iter().filter(|c| c.completed).count() as u32;
        assert_eq!((unit, annual), (by_course, by_course), "the three reports agree");
        unit
    };
    // Attendance alone: the first trainee attended both sessions, the others none.
    assert_eq!(completed(&*store), 1);

    // Evaluations land in the course document.
    let mut doc = None;
    store
        .write(&mut |tx| {
            doc = tx.load(&cid)?.map(|s| s.doc);
            Ok(())
        })
        .expect("load");
    let mut doc = doc.expect("the course document").with_actor(actor(2));
    let eval = |slot: &str, passed: bool| {
        let (kind, period) = match slot {
            "final" => (EvalKind::Final, None),
            m => (EvalKind::Monthly, Some(m.trim_start_matches('m').to_string())),
        };
        docs::encode(&Evaluation {
            kind,
            period,
            score: None,
            passed: Some(passed),
            device: "dev-1".into(),
            at: T0,
        })
    };
    let update = |doc: &mut Automerge, entries: Vec<(String, String)>| {
        let heads = doc.get_heads();
        commit(doc, entries);
        let contents = docs::read(&cid, doc, None).expect("valid course");
        let new = doc.get_changes(&heads);
        store
            .write(&mut |tx| {
                tx.store(
                    &cid,
                    doc,
                    &new,
                    &diemdanh_server::store::Projection::Whole(contents.clone()),
                    "dev-1",
                )
            })
            .expect("store");
    };
    // The first trainee failed the final evaluation: nobody completes.
    update(
        &mut doc,
        vec![
            (docs::evaluation_key(&cadres[0], "final"), eval("final", false)),
            (docs::evaluation_key(&cadres[1], "final"), eval("final", true)),
        ],
    );
    let trainees = store
        .period_trainees(
            &store.period_courses("2026-12-01", "2026-12-31").expect("courses"),
            "2026-12-01",
            "2026-12-31",
        )
        .expect("trainees");
    let of = |c: &str| trainees.iter().find(|t| t.cadre_id == c).expect("trainee");
    assert_eq!(of(&cadres[0]).evaluations, [("final".to_string(), false)]);
    assert_eq!(of(&cadres[1]).evaluations, [("final".to_string(), true)]);
    assert!(of(&cadres[2]).evaluations.is_empty());
    assert_eq!(completed(&*store), 0, "a failed evaluation blocks completion");
    // Passed again: completes.
    update(
        &mut doc,
        vec![(docs::evaluation_key(&cadres[0], "final"), eval("final", true))],
    );
    assert_eq!(completed(&*store), 1);
    // A slot recorded for another trainee only is missing for this one.
    update(
        &mut doc,
        vec![(docs::evaluation_key(&cadres[1], "m2026-12"), eval("m2026-12", true))],
    );
    assert_eq!(completed(&*store), 0, "a missing evaluation blocks completion");
    update(
        &mut doc,
        vec![(docs::evaluation_key(&cadres[0], "m2026-12"), eval("m2026-12", true))],
    );
    assert_eq!(completed(&*store), 1);
}

/// Web accounts and sign-in sessions (the web pages): created on one node, seen on
/// another; a session expires; a new password ends the sessions of the old one.
fn web_accounts_and_sessions_are_shared_by_every_node(b: &Backend) {
    let one = b.node();
    let two = b.node();
    assert!(one.account("tinh").expect("lookup").is_none());
    assert!(one.put_account("tinh", "2025:12", "hash-1", T0, false).expect("create"));
    assert!(
        !two.put_account("tinh", "2025:03434", "hash-x", T0, false)
            .expect("exists"),
        "an existing account is not replaced without --replace"
    );
    let a = two.account("tinh").expect("lookup").expect("created on the other node");
    assert_eq!(
        (a.name.as_str(), a.unit.as_str(), a.password_hash.as_str()),
        ("tinh", "2025:12", "hash-1")
    );

    one.create_web_session("session-1", "tinh", T0, T0 + 100)
        .expect("session");
    let s = two
        .web_session("session-1", T0 + 99)
        .expect("lookup")
        .expect("live session");
    assert_eq!(s.name, "tinh");
    assert!(
        two.web_session("session-1", T0 + 100).expect("lookup").is_none(),
        "expired"
    );
    assert!(two.web_session("session-404", T0).expect("lookup").is_none());
    // A session of an unknown account cannot be made.
    assert!(one.create_web_session("session-x", "nobody", T0, T0 + 100).is_err());
    // Creating a session deletes the expired ones on the way.
    two.create_web_session("session-2", "tinh", T0 + 200, T0 + 300)
        .expect("session");
    assert!(
        one.web_session("session-1", T0).expect("lookup").is_none(),
        "expired rows are deleted"
    );
    two.delete_web_session("session-2").expect("sign out");
    assert!(one.web_session("session-2", T0 + 201).expect("lookup").is_none());

    one.create_web_session("session-3", "tinh", T0 + 200, T0 + 300)
        .expect("session");
    assert!(two
        .put_account("tinh", "2025:03434", "hash-2", T0, true)
        .expect("replace"));
    assert!(
        one.web_session("session-3", T0 + 201).expect("lookup").is_none(),
        "a new password ends the old sessions"
    );
    let a = one.account("tinh").expect("lookup").expect("account");
    assert_eq!((a.unit.as_str(), a.password_hash.as_str()), ("2025:03434", "hash-2"));
}

fn a_device_is_moved_to_another_unit(b: &Backend) {
    let store = b.node();
    store.create_enroll_code(HUA_BUM, "c1", T0 + 3600).expect("code");
    redeem(&*store, "c1", "dev-1", "aa01").expect("enrol");
    assert!(store.set_device_unit("dev-1", NAM_HANG).expect("move"));
    assert!(!store.set_device_unit("dev-404", NAM_HANG).expect("unknown device"));
    let (d, _) = store.device_by_id("dev-1").expect("lookup").expect("known");
    assert_eq!(d.unit, NAM_HANG);
    let d = store.device_by_token("token-dev-1").expect("lookup").expect("known");
    assert_eq!(d.unit, NAM_HANG);
}

fn cadres_named(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

fn certificate_numbers_are_sequential_kept_and_never_reused(b: &Backend) {
    let store = b.node();
    let first = store
        .issue_certificates("course-a", NAM_HANG, 2026, &cadres_named("k", 2), T0)
        .expect("issue");
    assert_eq!(
        first
            .iter()
            .map(|(c, new)| (c.number.as_str(), *new))
            .collect::<Vec<_>>(),
        [("03434/2026/00001", true), ("03434/2026/00002", true)]
    );
    // Issuing again keeps the numbers given and adds the new trainee after them.
    let again = store
        .issue_certificates("course-a", NAM_HANG, 2026, &cadres_named("k", 3), T0 + 60)
        .expect("issue again");
    assert_eq!(
        again
            .iter()
            .map(|(c, new)| (c.cadre_id.as_str(), c.seq, c.issued_at, *new))
            .collect::<Vec<_>>(),
        [
            ("k000", 1, T0, false),
            ("k001", 2, T0, false),
            ("k002", 3, T0 + 60, true)
        ]
    );
    // Another course of the same register continues its count; another year starts one.
    let b2 = store
        .issue_certificates("course-b", NAM_HANG, 2026, &cadres_named("k", 1), T0)
        .expect("issue");
    assert_eq!(b2[0].0.number, "03434/2026/00004");
    let next_year = store
        .issue_certificates("course-c", NAM_HANG, 2027, &cadres_named("k", 1), T0)
        .expect("issue");
    assert_eq!(next_year[0].0.number, "03434/2027/00001");
    let other = store
        .issue_certificates("course-d", HUA_BUM, 2026, &cadres_named("k", 1), T0)
        .expect("issue");
    assert_eq!(other[0].0.number, "03460/2026/00001");
    let list = store.certificates("course-a").expect("list");
    assert_eq!(
        list.iter().map(|c| c.number.as_str()).collect::<Vec<_>>(),
        ["03434/2026/00001", "03434/2026/00002", "03434/2026/00003"]
    );
    assert_eq!(list[2], again[2].0);
    assert!(store.certificates("course-404").expect("list").is_empty());
    // Issuing nothing takes no number.
    assert!(store
        .issue_certificates("course-e", NAM_HANG, 2026, &[], T0)
        .expect("issue nothing")
        .is_empty());
    let e = store
        .issue_certificates("course-e", NAM_HANG, 2026, &cadres_named("k", 1), T0)
        .expect("issue");
    assert_eq!(e[0].0.seq, 5);
}

/// Two nodes issue from one register at once (different courses, and the same course
/// with the same trainees): every number is given once, the numbers run 1..=N without a
/// gap, and a trainee issued twice concurrently has one certificate.
fn two_nodes_issuing_certificates_never_give_one_number_twice(b: &Backend) {
    const ROUNDS: usize = 6;
    const EACH: usize = 5;
    let nodes = [b.node(), b.node()];
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, store)| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait();
                    // Its own course...
                    let own = store
                        .issue_certificates(
                            &format!("own-{n}-{round}"),
                            NAM_HANG,
                            2026,
                            &cadres_named("k", EACH),
                            T0,
                        )
                        .expect("issue own");
                    // ...and one both nodes issue for the same trainees.
                    let shared = store
                        .issue_certificates(&format!("shared-{round}"), NAM_HANG, 2026, &cadres_named("s", EACH), T0)
                        .expect("issue shared");
                    got.extend(own.into_iter().chain(shared).map(|(c, _)| c));
                }
                got
            })
        })
        .collect();
    let got: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("issuer thread"))
        .collect();
    let store = &nodes[0];
    let mut all = Vec::new();
    for round in 0..ROUNDS {
        for course in [
            format!("own-0-{round}"),
            format!("own-1-{round}"),
            format!("shared-{round}"),
        ] {
            let list = store.certificates(&course).expect("list");
            assert_eq!(list.len(), EACH, "{course}: one certificate per trainee");
            all.extend(list);
        }
    }
    let mut seqs: Vec<i64> = all.iter().map(|c| c.seq).collect();
    seqs.sort_unstable();
    let expected: Vec<i64> = (1..=(3 * ROUNDS * EACH) as i64).collect();
    assert_eq!(seqs, expected, "every number once, none skipped");
    let numbers: BTreeSet<&str> = all.iter().map(|c| c.number.as_str()).collect();
    assert_eq!(numbers.len(), all.len());
    // What each node was told is what the register holds.
    for c in &got {
        assert!(all.contains(c), "{c:?} was answered but is not in the register");
    }
}
