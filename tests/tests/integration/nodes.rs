//! Several server nodes on one PostgreSQL database: two real `diemdanh-server`
//! processes (`serve --database`), devices syncing through either, in any order and at
//! the same time. Runs when `DIEMDANH_TEST_POSTGRES` names a database (a fresh schema per
//! test); without it, it says it did not run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use diemdanh::HttpTransport;
use diemdanh_server::{PgStore, Store};
use diemdanh_tests::pgtest::TestSchema;
use diemdanh_tests::{bin, NAM_HANG};
use sync_core::device::Device;
use sync_core::model::MarkStatus;
use sync_core::report::CourseReport;

use crate::common::{home, setup_course};

/// A `diemdanh-server serve --database URL` process on 127.0.0.1:0, killed on drop.
struct Node {
    child: Child,
    url: String,
}

impl Node {
    fn start(database: &str) -> Node {
        let mut child = Command::new(bin("diemdanh-server"))
            .args(["serve", "--database", database, "--listen", "127.0.0.1:0"])
            .env("DIEMDANH_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start diemdanh-server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).expect("first line");
        let url = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
        let node = Node { child, url };
        assert!(
            node.url.starts_with("http://127.0.0.1:"),
            "node did not start: {line:?}"
        );
        node
    }

    fn transport(&self) -> HttpTransport {
        HttpTransport::new(&self.url).expect("transport")
    }

    fn sync(&self, d: &mut Device) {
        d.sync(&mut self.transport(), &mut |_| true).expect("sync");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An enrolment code issued by the command line, on the database (not on a node).
fn enroll_code(database: &str, unit: &str) -> String {
    let out = Command::new(bin("diemdanh-server"))
        .args(["enroll-code", "--database", database, "--unit", unit])
        .output()
        .expect("run enroll-code");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("a code")
        .trim()
        .to_string()
}

fn enrolled(dir: &Path, name: &str, node: &Node, database: &str) -> Device {
    let mut d = Device::open(&home(dir, name)).expect("open device");
    d.enroll(&mut node.transport(), &node.url, &enroll_code(database, NAM_HANG))
        .expect("enrol");
    d
}

fn server_report(store: &PgStore, course: &str) -> CourseReport {
    CourseReport::assemble(store.course_rows(course).expect("rows").expect("course on the server"))
}

#[test]
fn devices_sync_through_either_node_in_any_order_and_converge() {
    let Some(db) = TestSchema::create("devices_sync_through_either_node_in_any_order_and_converge") else {
        return;
    };
    let (n1, n2) = (Node::start(&db.url), Node::start(&db.url));
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = enrolled(dir.path(), "a", &n1, &db.url);
    let mut b = enrolled(dir.path(), "b", &n2, &db.url);
    let (course, cadres) = setup_course(&mut a, NAM_HANG, 5, 3);
    n1.sync(&mut a);
    n2.sync(&mut b);
    assert_eq!(b.show_course(&course.id).expect("b has the course").trainees.len(), 5);
    let s = |i: usize| course.sessions[i].id.clone();
    a.mark_all(&course.id, &s(0), MarkStatus::Present).expect("mark");
    b.mark_all(&course.id, &s(1), MarkStatus::Present).expect("mark");
    b.mark(&course.id, &s(2), &cadres[3], MarkStatus::Late, None)
        .expect("mark");
    // The same trainee marked differently on both, offline: a conflict, on every side.
    a.mark(&course.id, &s(2), &cadres[0], MarkStatus::Absent, None)
        .expect("mark");
    b.mark(&course.id, &s(2), &cadres[0], MarkStatus::Excused, None)
        .expect("mark");
    for (who, node) in [("b", &n1), ("a", &n2), ("a", &n1), ("b", &n2), ("a", &n2), ("b", &n1)] {
        node.sync(if who == "a" { &mut a } else { &mut b });
    }
    let store = PgStore::open(&db.url, 2).expect("open the database");
    let vs = server_report(&store, &course.id);
    assert_eq!(a.show_course(&course.id).expect("a view"), vs);
    assert_eq!(b.show_course(&course.id).expect("b view"), vs);
    assert_eq!(vs.marks.len(), 5 + 5 + 2);
    assert_eq!(vs.conflicts.len(), 1);
    assert_eq!(a.status().expect("status").pending_changes, 0);
    assert_eq!(b.status().expect("status").pending_changes, 0);
    // Revoked through the command line, refused by both nodes.
    let out = Command::new(bin("diemdanh-server"))
        .args(["device", "revoke", "--database", &db.url, "--device", b.device_id()])
        .output()
        .expect("revoke");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for node in [&n1, &n2] {
        let e = b.sync(&mut node.transport(), &mut |_| true).expect_err("revoked");
        assert!(e.to_string().contains("revoked"), "{e}");
    }
    let n: usize = store
        .devices()
        .expect("devices")
        .iter()
        .filter(|d| d.revoked_at.is_some())
        .count();
    assert_eq!(n, 1);
}

/// Six devices record into one attendance document and sync at the same moment, half
/// through each node, three rounds: no mark is lost, each change is logged once, and
/// every device ends with the server's view.
#[test]
fn concurrent_syncs_of_one_document_through_two_nodes_lose_nothing() {
    let Some(db) = TestSchema::create("concurrent_syncs_of_one_document_through_two_nodes_lose_nothing") else {
        return;
    };
    let nodes = [Node::start(&db.url), Node::start(&db.url)];
    let dir = tempfile::tempdir().expect("tmp");
    const DEVICES: usize = 6;
    const ROUNDS: usize = 3;
    let mut devices: Vec<Device> = (0..DEVICES)
        .map(|i| enrolled(dir.path(), &format!("d{i}"), &nodes[i % 2], &db.url))
        .collect();
    let (course, cadres) = setup_course(&mut devices[0], NAM_HANG, DEVICES * ROUNDS, 2);
    nodes[0].sync(&mut devices[0]);
    for (i, d) in devices.iter_mut().enumerate().skip(1) {
        nodes[i % 2].sync(d);
    }
    let session = course.sessions[0].id.clone();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    for round in 0..ROUNDS {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(DEVICES));
        devices = std::thread::scope(|scope| {
            let handles: Vec<_> = devices
                .into_iter()
                .enumerate()
                .map(|(i, mut d)| {
                    let cadre = cadres[round * DEVICES + i].clone();
                    let (course, session, barrier) = (course.id.clone(), session.clone(), barrier.clone());
                    let url = urls[(i + round) % 2].clone();
                    scope.spawn(move || {
                        d.mark(&course, &session, &cadre, MarkStatus::Present, None)
                            .expect("mark");
                        barrier.wait();
                        d.sync(&mut HttpTransport::new(&url).expect("transport"), &mut |_| true)
                            .expect("concurrent sync");
                        d
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("device thread")).collect()
        });
    }
    for (i, d) in devices.iter_mut().enumerate() {
        nodes[(i + 1) % 2].sync(d);
    }
    let store = PgStore::open(&db.url, 2).expect("open the database");
    let vs = server_report(&store, &course.id);
    assert_eq!(
        vs.marks.len(),
        DEVICES * ROUNDS,
        "every mark of every device is on the server"
    );
    assert!(vs.conflicts.is_empty());
    for d in &devices {
        assert_eq!(d.show_course(&course.id).expect("view"), vs);
        assert_eq!(d.status().expect("status").pending_changes, 0);
    }
    let mut client = postgres::Client::connect(&db.url, postgres::NoTls).expect("connect");
    let row = client
        .query_one(
            "SELECT COUNT(*), COUNT(DISTINCT (doc_id, hash)), MAX(seq), MIN(seq) FROM changes",
            &[],
        )
        .expect("count");
    let (logged, distinct, max, min): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(logged, distinct, "a change was logged twice");
    assert_eq!((min, max), (1, logged), "the sequence has a gap");
}
