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

/// One HTTP/1.1 exchange over a plain socket (`Connection: close`), no redirects followed:
/// (status, headers with lower-case names, body).
fn http(
    base: &str,
    method: &str,
    path: &str,
    cookie: &str,
    form: Option<&str>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).expect("connect to the node");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let body = form.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nCookie: {cookie}\r\n");
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        // Bounded: every chunk consumes at least its size line.
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The `name=value` of a Set-Cookie header for `name`.
fn set_cookie(headers: &[(String, String)], name: &str) -> String {
    header(headers, "set-cookie")
        .into_iter()
        .map(|c| c.split(';').next().unwrap_or("").to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {headers:?}"))
}

fn form_csrf(page: &[u8]) -> String {
    let page = String::from_utf8_lossy(page);
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..at + 64].to_string()
}

/// The web pages on PostgreSQL: an account made by `user add --database`, signed in on
/// one node; the session works on the other node (sessions live in the database), the
/// course a device synced shows with its marks, its XLSX downloads; signing out on one
/// node ends the session on both.
#[test]
fn the_web_pages_work_on_postgresql_through_either_node() {
    let Some(db) = TestSchema::create("the_web_pages_work_on_postgresql_through_either_node") else {
        return;
    };
    const PASSWORD: &str = "mật khẩu của tỉnh 2026";
    let mut add = Command::new(bin("diemdanh-server"))
        .args([
            "user",
            "add",
            "--database",
            &db.url,
            "--name",
            "laichau",
            "--unit",
            "2025:12",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run user add");
    {
        use std::io::Write;
        let mut stdin = add.stdin.take().expect("stdin");
        writeln!(stdin, "{PASSWORD}").expect("password");
    }
    let out = add.wait_with_output().expect("user add");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (n1, n2) = (Node::start(&db.url), Node::start(&db.url));
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = enrolled(dir.path(), "a", &n1, &db.url);
    let (course, cadres) = setup_course(&mut a, NAM_HANG, 3, 2);
    a.mark(&course.id, &course.sessions[0].id, &cadres[0], MarkStatus::Late, None)
        .expect("mark");
    n1.sync(&mut a);

    // Sign in on node 1: the form's cookie and token, then the session cookie.
    let (status, headers, page) = http(&n1.url, "GET", "/login", "", None);
    assert_eq!(status, 200);
    let login_cookie = set_cookie(&headers, "dd_login");
    let form = format!(
        "name=laichau&password={}&csrf={}",
        PASSWORD
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>(),
        form_csrf(&page)
    );
    let (status, _, _) = http(
        &n1.url,
        "POST",
        "/login",
        &login_cookie,
        Some("name=laichau&password=wrong&csrf=x"),
    );
    assert_eq!(status, 403, "a token that is not the form's");
    let (status, headers, body) = http(&n1.url, "POST", "/login", &login_cookie, Some(&form));
    assert_eq!(status, 303, "{}", String::from_utf8_lossy(&body));
    let session = set_cookie(&headers, "dd_session");

    // Node 2 knows the session: the overview, the course with the synced mark, downloads.
    let (status, _, home) = http(&n2.url, "GET", "/", &session, None);
    assert_eq!(status, 200);
    let home = String::from_utf8_lossy(&home).to_string();
    assert!(
        home.contains(&format!("/courses/{}", course.id)),
        "the synced course is listed"
    );
    let (status, _, page) = http(&n2.url, "GET", &format!("/courses/{}", course.id), &session, None);
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&page).to_string();
    assert!(
        page.contains("Lò Thị Hoa 0") && page.contains("<td class=la>"),
        "the late mark"
    );
    let (status, headers, xlsx) = http(
        &n2.url,
        "GET",
        &format!("/courses/{}/report.xlsx", course.id),
        &session,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        ["application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"]
    );
    assert!(xlsx.starts_with(b"PK"));
    let (status, _, _) = http(
        &n2.url,
        "GET",
        "/reports/unit.xlsx?unit=2025:12&from=2026-12-01&to=2026-12-31",
        &session,
        None,
    );
    assert_eq!(status, 200);

    // Sign out on node 2: node 1 refuses the cookie too.
    let (status, _, _) = http(
        &n2.url,
        "POST",
        "/logout",
        &session,
        Some(&format!("csrf={}", form_csrf(home.as_bytes()))),
    );
    assert_eq!(status, 303);
    let (status, headers, _) = http(&n1.url, "GET", "/", &session, None);
    assert_eq!((status, header(&headers, "location")), (303, vec!["/login"]));
}
