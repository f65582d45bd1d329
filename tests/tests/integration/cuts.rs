//! A link that cuts every connection after 4 KB in either direction (netem's
//! `cut_every`), through real sockets, the real server and the real client: the benchmark
//! workload (2,520 marks) is pushed, pulled by a fresh device and resumed after the device
//! process dies, and it completes with nothing lost or logged twice. The device learns a
//! byte budget for the link and sends each exchange in parts within it; the server keeps
//! what arrived of a cut body and a large reply, so the device goes on from the byte where
//! the link stopped (docs/PROTOCOL.md, "Resumable exchanges"). Against a server without
//! parts, a document too large for the budget goes as causal prefixes (bundles), and the
//! server answers one too large for a response in pieces cut at change sequence numbers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use diemdanh::HttpTransport;
use diemdanh_tests::netem::{Counters, Dir, Netem, Profile};
use diemdanh_tests::workload::{self, Course, Lcg, MARKS, ROLL_CALL_SEED};
use diemdanh_tests::{TestServer, NAM_HANG};
use sync_core::device::{Device, RetryPolicy, SyncStats, LINK_FLOOR};

use crate::common::server_change_counts;
use crate::crash_points::{aborted, device, ok_json};

/// The cut of the issue's target: every 4 KB of each connection.
const CUT: u64 = 4096;

/// The workload recorded once for every test of this module: a server and device A with
/// the course set up and synced, then 2,520 marks recorded offline; both closed.
struct Template {
    _dir: tempfile::TempDir,
    path: PathBuf,
    course: Course,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("template");
        let server = TestServer::start(&path.join("server"));
        let mut a = server.enrolled_device(&path.join("device-a"), NAM_HANG);
        let course = workload::setup(&mut a);
        server.sync(&mut a).expect("setup sync");
        workload::record_roll_calls(&mut a, &course, &mut Lcg(ROLL_CALL_SEED));
        drop(a);
        server.stop();
        Template {
            _dir: dir,
            path,
            course,
        }
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a folder");
    for entry in std::fs::read_dir(from).expect("read a folder") {
        let entry = entry.expect("folder entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// A copy of the template with its server running.
fn run(dir: &Path) -> TestServer {
    copy_dir(&template().path, dir);
    TestServer::start(&dir.join("server"))
}

/// Retries enough for the budget to settle, not slept.
fn retries_at_once() -> RetryPolicy {
    RetryPolicy {
        retries: 6,
        sleep: Arc::new(|_| {}),
        ..RetryPolicy::default()
    }
}

fn sync_via(url: &str, device: &mut Device) -> SyncStats {
    let mut transport = HttpTransport::new(url).expect("transport");
    device.sync(&mut transport, &mut |_| true).expect("the sync completes")
}

/// The server holds the course the device shows, every change once, nothing pending.
fn assert_converged(server: &TestServer, device: &Device) {
    let course = &template().course;
    let on_device = device.show_course(&course.id).expect("device view");
    let on_server = server.report(&course.id);
    assert_eq!(on_device.marks.len(), MARKS, "every mark on the device");
    assert_eq!(on_device, on_server, "device and server agree");
    assert_eq!(device.pending_changes().expect("pending"), 0, "nothing left to push");
    let (logged, distinct) = server_change_counts(server);
    assert_eq!(logged, distinct, "no change logged twice");
}

fn total(c: &Counters) -> u64 {
    c.up_bytes + c.down_bytes
}

/// The push of the workload, on a clear link and on one cut every 4 KB.
#[test]
fn the_workload_push_completes_on_a_link_cut_every_4_kb_without_losing_or_repeating() {
    let dir = tempfile::tempdir().expect("tmp");

    let clear_server = run(&dir.path().join("clear"));
    let clear = Netem::in_front_of(&clear_server.url, Profile::loopback()).expect("proxy");
    let mut a = Device::open(&dir.path().join("clear/device-a")).expect("open");
    let uncut = sync_via(clear.url(), &mut a);
    assert_eq!(uncut.requests, 1, "one request on a clear link");
    assert_converged(&clear_server, &a);
    let uncut_bytes = total(&clear.counters());
    assert!(uncut_bytes > 2 * CUT, "the push is larger than a cut: {uncut_bytes} B");

    let server = run(&dir.path().join("cut"));
    let proxy = Netem::in_front_of(&server.url, Profile::loopback().with_cut_every(CUT)).expect("proxy");
    let mut a = Device::open(&dir.path().join("cut/device-a")).expect("open");
    a.set_retry(retries_at_once());
    assert_eq!(a.link_budget().expect("budget"), None, "nothing learnt yet");
    let stats = sync_via(proxy.url(), &mut a);
    let seen = proxy.counters();
    assert!(seen.cuts >= 1, "the link cut the first, too large, request: {seen:?}");
    assert!(stats.requests > 2, "the push went in parts: {stats:?}");
    let budget = a.link_budget().expect("budget").expect("a budget was learnt");
    assert!((LINK_FLOOR..CUT as usize).contains(&budget), "{budget}");
    assert_converged(&server, &a);
    let ratio = total(&seen) as f64 / uncut_bytes as f64;
    eprintln!(
        "push cut every {CUT} B: {} B in {} requests ({} cuts), uncut {uncut_bytes} B: {ratio:.2}x",
        total(&seen),
        stats.requests,
        seen.cuts
    );
    // The server kept what arrived of the cut requests: the issue's bound of 1.5x holds
    // with room (the benchmark records 1.06x).
    assert!(ratio < 1.5, "{ratio:.2}x");

    // The learnt budget is kept: one more mark goes in one request, with no cut.
    workload::record_one_more_mark(&mut a, &template().course);
    let before = proxy.counters();
    let one = sync_via(proxy.url(), &mut a);
    assert_eq!((one.requests, proxy.counters().since(&before).cuts), (1, 0));
    assert_converged(&server, &a);
    // A small sync proves nothing about the link: the budget stays.
    assert_eq!(a.link_budget().expect("budget"), Some(budget));

    // A fresh device of the commune pulls everything, its reply in windows.
    let mut b = server.enrolled_device(&dir.path().join("cut/device-b"), NAM_HANG);
    b.set_retry(retries_at_once());
    let before = proxy.counters();
    let pull = sync_via(proxy.url(), &mut b);
    let pulled = proxy.counters().since(&before);
    assert!(pulled.cuts >= 1 && pull.requests > 2, "{pulled:?} {pull:?}");
    let course = &template().course;
    assert_eq!(
        b.show_course(&course.id).expect("B's view"),
        server.report(&course.id),
        "the fresh device holds what the server holds"
    );
    assert_eq!(b.pending_changes().expect("pending"), 0, "it pushes nothing back");
    eprintln!(
        "fresh pull cut every {CUT} B: {} B in {} requests ({} cuts)",
        total(&pulled),
        pull.requests,
        pulled.cuts
    );
    drop(proxy);
    drop(clear);
    server.stop();
    clear_server.stop();
}

/// A reply lost after the server applied a piece: the device sends the piece again and
/// the server logs nothing twice.
#[test]
fn a_piece_whose_reply_is_lost_is_sent_again_and_applied_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = run(&dir.path().join("run"));
    let proxy = Netem::in_front_of(&server.url, Profile::loopback()).expect("proxy");
    let mut a = Device::open(&dir.path().join("run/device-a")).expect("open");
    a.set_retry(retries_at_once());
    // A budget learnt on an earlier sync: the push goes in pieces of about 2 KB.
    a.set_batch_limits(2048, 2048);
    let changes_before = server_change_counts(&server).0;
    // Replies to pushes are about 50 bytes with their headers: the third or so is cut.
    proxy.cut_after(Dir::Down, 120);
    let stats = sync_via(proxy.url(), &mut a);
    assert_eq!(proxy.counters().cuts, 1);
    assert!(stats.retries >= 1 && stats.requests > 3, "{stats:?}");
    assert_converged(&server, &a);
    assert!(server_change_counts(&server).0 > changes_before);
    drop(proxy);
    server.stop();
}

/// The device process dies in the middle of a sync on the cut link (the real binary,
/// aborted by a failpoint after the second answered part of an exchange going in
/// parts); the next run builds the same exchange, finds its first bytes held by the
/// server, goes on after them, and moves fewer bytes than a sync from the start.
#[test]
fn a_device_killed_mid_sync_on_a_cut_link_resumes_after_what_was_acknowledged() {
    let dir = tempfile::tempdir().expect("tmp");

    // A whole sync on the cut link, for comparison.
    let whole_server = run(&dir.path().join("whole"));
    let whole_proxy = Netem::in_front_of(&whole_server.url, Profile::loopback().with_cut_every(CUT)).expect("proxy");
    let home = dir.path().join("whole/device-a");
    point_at(&home, whole_proxy.url());
    let whole = ok_json(&home, &["sync", "--retries", "6", "--json"]);
    let whole_bytes = total(&whole_proxy.counters());
    assert!(whole["requests"].as_u64().unwrap_or(0) > 2, "{whole}");
    drop(whole_proxy);
    whole_server.stop();

    let server = run(&dir.path().join("killed"));
    let proxy = Netem::in_front_of(&server.url, Profile::loopback().with_cut_every(CUT)).expect("proxy");
    let home = dir.path().join("killed/device-a");
    point_at(&home, proxy.url());
    let (changes_before, _) = server_change_counts(&server);
    let out = device(
        &home,
        &["sync", "--retries", "6", "--json"],
        Some("device.after_part@2"),
    );
    assert!(aborted(&out), "the process died mid-sync: {out:?}");
    let before = proxy.counters();
    let (changes_at_kill, _) = server_change_counts(&server);
    assert_eq!(
        changes_at_kill, changes_before,
        "the marks' exchange was not complete at the kill"
    );
    let resumed = ok_json(&home, &["sync", "--retries", "6", "--json"]);
    let after = proxy.counters().since(&before);
    eprintln!(
        "killed and resumed on the cut link: {} B after the restart ({} requests, {} cuts), a whole sync {whole_bytes} B",
        total(&after),
        resumed["requests"],
        after.cuts
    );
    assert!(
        total(&after) < whole_bytes,
        "resumed after what was acknowledged: {} B against {whole_bytes} B",
        total(&after)
    );
    // The budget was learnt before the kill and kept: the restart is not cut again.
    assert_eq!(after.cuts, 0, "{after:?}");
    let a = Device::open(&home).expect("open");
    assert_converged(&server, &a);
    drop(proxy);
    server.stop();
}

/// One cut in the middle of the push's body and one in the middle of the fresh pull's
/// reply, on a link that otherwise carries anything: the server keeps what arrived of
/// the body, the device what arrived of the reply, and each exchange goes on from the byte
/// where the link stopped. Only the bytes of the headers are paid twice.
#[test]
fn a_cut_in_the_middle_of_a_body_or_a_reply_costs_only_the_bytes_in_flight() {
    let dir = tempfile::tempdir().expect("tmp");
    let clear_server = run(&dir.path().join("clear"));
    let clear = Netem::in_front_of(&clear_server.url, Profile::loopback()).expect("proxy");
    let mut a = Device::open(&dir.path().join("clear/device-a")).expect("open");
    sync_via(clear.url(), &mut a);
    let push = clear.counters();
    let mut b = clear_server.enrolled_device(&dir.path().join("clear/device-b"), NAM_HANG);
    sync_via(clear.url(), &mut b);
    let pull = clear.counters().since(&push);

    let server = run(&dir.path().join("cut"));
    let proxy = Netem::in_front_of(&server.url, Profile::loopback()).expect("proxy");
    let mut a = Device::open(&dir.path().join("cut/device-a")).expect("open");
    a.set_retry(retries_at_once());
    proxy.cut_after(Dir::Up, push.up_bytes / 2);
    let stats = sync_via(proxy.url(), &mut a);
    let seen = proxy.counters();
    assert_eq!((seen.cuts, stats.retries), (1, 1), "{seen:?} {stats:?}");
    assert_converged(&server, &a);
    eprintln!(
        "push cut once at {} B: {} B up, {} B down in {} requests; uncut {} B up",
        push.up_bytes / 2,
        seen.up_bytes,
        seen.down_bytes,
        stats.requests,
        push.up_bytes
    );
    // The body went once: what came before the cut and the rest, plus a few hundred
    // bytes of headers and part heads (a sync from the start would move 1.5x).
    assert!(
        seen.up_bytes < push.up_bytes + 1024,
        "{} B up against {} B",
        seen.up_bytes,
        push.up_bytes
    );

    let mut b = server.enrolled_device(&dir.path().join("cut/device-b"), NAM_HANG);
    b.set_retry(retries_at_once());
    let before = proxy.counters();
    proxy.cut_after(Dir::Down, pull.down_bytes / 2);
    let stats = sync_via(proxy.url(), &mut b);
    let seen = proxy.counters().since(&before);
    assert_eq!((seen.cuts, stats.retries), (1, 1), "{seen:?} {stats:?}");
    let course = &template().course;
    assert_eq!(b.show_course(&course.id).expect("B's view"), server.report(&course.id));
    eprintln!(
        "pull cut once at {} B: {} B down in {} requests; uncut {} B down",
        pull.down_bytes / 2,
        seen.down_bytes,
        stats.requests,
        pull.down_bytes
    );
    assert!(
        seen.down_bytes < pull.down_bytes + 1024,
        "{} B down against {} B",
        seen.down_bytes,
        pull.down_bytes
    );
    drop((proxy, clear));
    server.stop();
    clear_server.stop();
}

/// The server restarts while a device is sending an exchange in parts: what it held is
/// gone, it says so (it holds 0 bytes of the exchange), and the device sends the
/// exchange again from its first byte; nothing is lost or logged twice.
#[test]
fn a_server_that_lost_the_parts_it_held_is_sent_the_exchange_again() {
    struct Restarting {
        server: Option<TestServer>,
        inner: HttpTransport,
        parts: u32,
    }
    impl sync_core::protocol::Transport for Restarting {
        fn post(
            &mut self,
            path: &str,
            content_type: &str,
            bearer: Option<&str>,
            body: Vec<u8>,
        ) -> Result<sync_core::protocol::Reply, String> {
            if path == sync_core::protocol::PART_PATH {
                self.parts += 1;
                if self.parts == 3 {
                    let old = self.server.take().expect("server");
                    let data = old.data.clone();
                    old.stop();
                    let new = TestServer::start(&data);
                    self.inner = HttpTransport::new(&new.url).expect("transport");
                    self.server = Some(new);
                }
            }
            self.inner.post(path, content_type, bearer, body)
        }
    }
    let dir = tempfile::tempdir().expect("tmp");
    let server = run(&dir.path().join("run"));
    let mut a = Device::open(&dir.path().join("run/device-a")).expect("open");
    // A budget learnt earlier: the exchange goes in parts of about 2.8 KB.
    a.set_link_budget(Some(3000)).expect("budget");
    let mut t = Restarting {
        inner: HttpTransport::new(&server.url).expect("transport"),
        server: Some(server),
        parts: 0,
    };
    let stats = a.sync(&mut t, &mut |_| true).expect("the sync completes");
    let server = t.server.take().expect("server");
    assert!(
        t.parts > 6,
        "the parts went again after the restart: {} parts, {stats:?}",
        t.parts
    );
    assert_converged(&server, &a);
    server.stop();
}

/// Parts can outrun the server's per-device request rate (a large exchange in small parts
/// on a link that turned fast): a part answered 429 is sent again after the backoff, and
/// the sync completes.
#[test]
fn a_part_answered_too_many_requests_is_sent_again_after_a_wait() {
    struct Limited {
        inner: HttpTransport,
        parts: u32,
        refused: u32,
    }
    impl sync_core::protocol::Transport for Limited {
        fn post(
            &mut self,
            path: &str,
            content_type: &str,
            bearer: Option<&str>,
            body: Vec<u8>,
        ) -> Result<sync_core::protocol::Reply, String> {
            if path == sync_core::protocol::PART_PATH {
                self.parts += 1;
                if self.parts.is_multiple_of(3) {
                    self.refused += 1;
                    return Ok(sync_core::protocol::Reply {
                        status: 429,
                        body: br#"{"error":"rate_limited","message":"too many sync requests from this device"}"#
                            .to_vec(),
                    });
                }
            }
            self.inner.post(path, content_type, bearer, body)
        }
    }
    let dir = tempfile::tempdir().expect("tmp");
    let server = run(&dir.path().join("run"));
    let mut a = Device::open(&dir.path().join("run/device-a")).expect("open");
    let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = waits.clone();
    a.set_retry(RetryPolicy {
        retries: 3,
        sleep: Arc::new(move |d| seen.lock().expect("waits").push(d)),
        ..RetryPolicy::default()
    });
    a.set_link_budget(Some(3000)).expect("budget");
    let mut t = Limited {
        inner: HttpTransport::new(&server.url).expect("transport"),
        parts: 0,
        refused: 0,
    };
    let stats = a.sync(&mut t, &mut |_| true).expect("the sync completes");
    assert!(t.refused >= 1, "some parts were refused: {} of {}", t.refused, t.parts);
    assert_eq!(stats.retries, t.refused, "{stats:?}");
    assert_eq!(
        waits.lock().expect("waits").len() as u32,
        t.refused,
        "a wait before each repeat"
    );
    assert_converged(&server, &a);
    server.stop();
}

/// `POST /p` refuses what is not a part of the device's own exchange, plainly: no token,
/// bytes that are not a part, an exchange past the body limit, parts that do not make up
/// the exchange their id names; and a whole exchange in one part is answered as on `/`.
#[test]
fn parts_that_are_not_an_exchange_are_refused_plainly() {
    use sync_core::protocol::{exchange_id, PartAnswerHead, PartHead, SyncResponse, Transport, PART_PATH};
    let dir = tempfile::tempdir().expect("tmp");
    let server = run(&dir.path().join("run"));
    let token = diemdanh_tests::device_token(&dir.path().join("run/device-a"));
    let mut t = HttpTransport::new(&server.url).expect("transport");
    let ct = sync_core::protocol::CONTENT_TYPE;
    let error = |reply: &sync_core::protocol::Reply| -> String {
        let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("a JSON error body");
        format!("{} {}", reply.status, body["error"].as_str().unwrap_or(""))
    };
    let request = diemdanh_tests::empty_exchange();
    let part = |body: &[u8], total: u64, bytes: &[u8]| {
        PartHead {
            id: exchange_id(body),
            total,
            offset: 0,
            from: 0,
            window: 0,
        }
        .encode(bytes)
    };
    let whole = part(&request, request.len() as u64, &request);
    let reply = t.post(PART_PATH, ct, None, whole.clone()).expect("reply");
    assert_eq!(error(&reply), "401 no_token");
    let reply = t
        .post(PART_PATH, ct, Some(&token), b"not a part".to_vec())
        .expect("reply");
    assert_eq!(error(&reply), "400 malformed");
    let reply = t
        .post(PART_PATH, ct, Some(&token), part(&request, 1 << 40, &request))
        .expect("reply");
    assert_eq!(error(&reply), "413 too_large");
    // The bytes of one exchange under the id of another.
    let reply = t
        .post(
            PART_PATH,
            ct,
            Some(&token),
            part(b"another", request.len() as u64, &request),
        )
        .expect("reply");
    assert_eq!(error(&reply), "400 malformed");
    // The exchange itself in one part: the answer holds all of it and the whole reply.
    let reply = t.post(PART_PATH, ct, Some(&token), whole).expect("reply");
    assert_eq!(reply.status, 200);
    let (head, tail) = PartAnswerHead::decode(&reply.body).expect("an answer");
    assert_eq!(
        (head.have, head.reply_total, head.from),
        (request.len() as u64, tail.len() as u64, 0)
    );
    let resp = SyncResponse::decode_compact(tail).expect("the reply of the exchange");
    assert!(
        resp.cursor > 0,
        "the device's cursor was 0 and the server holds its setup: {resp:?}"
    );
    server.stop();
}

/// Makes the device's stored server URL the emulator's.
fn point_at(home: &Path, url: &str) {
    let conn = rusqlite::Connection::open(home.join("device.sqlite")).expect("device store");
    conn.execute("UPDATE meta SET value = ?1 WHERE key = 'server'", [url])
        .expect("set the server URL");
}

/// A server from before compact bodies answers `POST /` with 405: the device says the
/// same on the full path, remembers it, and converges.
#[test]
fn a_server_without_compact_bodies_is_spoken_to_on_the_full_path() {
    struct OldServer {
        inner: HttpTransport,
        paths: Vec<String>,
    }
    impl sync_core::protocol::Transport for OldServer {
        fn post(
            &mut self,
            path: &str,
            content_type: &str,
            bearer: Option<&str>,
            body: Vec<u8>,
        ) -> Result<sync_core::protocol::Reply, String> {
            self.paths.push(path.to_string());
            if path == sync_core::protocol::COMPACT_SYNC_PATH {
                return Ok(sync_core::protocol::Reply {
                    status: 405,
                    body: Vec::new(),
                });
            }
            // The old path takes full bodies only.
            if path == sync_core::protocol::SYNC_PATH {
                sync_core::protocol::SyncRequest::decode(&body).map_err(|e| e.to_string())?;
            }
            self.inner.post(path, content_type, bearer, body)
        }
    }
    let dir = tempfile::tempdir().expect("tmp");
    let server = run(&dir.path().join("run"));
    let mut a = Device::open(&dir.path().join("run/device-a")).expect("open");
    let mut old = OldServer {
        inner: HttpTransport::new(&server.url).expect("transport"),
        paths: Vec::new(),
    };
    a.sync(&mut old, &mut |_| true).expect("sync with an old server");
    assert_eq!(old.paths, ["/", "/v1/sync"], "one try on /, then the full path");
    assert_converged(&server, &a);
    workload::record_one_more_mark(&mut a, &template().course);
    old.paths.clear();
    a.sync(&mut old, &mut |_| true).expect("the next sync");
    assert_eq!(old.paths, ["/v1/sync"], "remembered");
    server.stop();
}

/// A budget learnt earlier grows back once a sync shows the link carries it: a clean
/// sync whose exchanges filled the budget doubles it.
#[test]
fn a_clean_sync_that_fills_its_exchanges_doubles_the_budget() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = run(&dir.path().join("run"));
    let mut a = Device::open(&dir.path().join("run/device-a")).expect("open");
    a.set_link_budget(Some(3000)).expect("budget");
    let stats = sync_via(&server.url, &mut a);
    assert!(stats.requests > 2, "parts within 3,000 B: {stats:?}");
    assert_converged(&server, &a);
    assert_eq!(a.link_budget().expect("budget"), Some(6000));
}

/// Two documents whose logged changes interleave (X, Y, X, Y, ...), pulled by a fresh
/// device whose responses hold one change at most: the cursor never passes a change of a
/// document left out, so nothing is skipped.
#[test]
fn interleaved_documents_pulled_a_change_at_a_time_arrive_whole() {
    use sync_core::model::MarkStatus;
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut a = server.enrolled_device(&dir.path().join("a"), NAM_HANG);
    let (x, cadres_x) = crate::common::setup_course(&mut a, NAM_HANG, 3, 2);
    let (y, cadres_y) = crate::common::setup_course(&mut a, NAM_HANG, 3, 2);
    server.sync(&mut a).expect("setup sync");
    // Each sync logs one change: the attendance documents of X and Y take turns.
    for round in 0..3 {
        let status = if round % 2 == 0 {
            MarkStatus::Late
        } else {
            MarkStatus::Absent
        };
        a.mark(&x.id, &x.sessions[round % 2].id, &cadres_x[round], status, None)
            .expect("mark X");
        server.sync(&mut a).expect("sync X");
        a.mark(&y.id, &y.sessions[round % 2].id, &cadres_y[round], status, None)
            .expect("mark Y");
        server.sync(&mut a).expect("sync Y");
    }
    let mut c = server.enrolled_device(&dir.path().join("c"), NAM_HANG);
    c.set_batch_limits(1, 1);
    let pull = server.sync(&mut c).expect("pull a change at a time");
    assert!(pull.requests > 10, "{pull:?}");
    for course in [&x, &y] {
        let on_c = c.show_course(&course.id).expect("C's view");
        assert_eq!(on_c, server.report(&course.id));
        assert_eq!(on_c.marks.len(), 3, "every mark of {}", course.id);
    }
    assert_eq!(c.pending_changes().expect("pending"), 0, "C pushes nothing back");
    server.stop();
}
