//! The network emulator (`diemdanh_tests::netem`) in front of a real server: it adds what it
//! is told to add, and a device syncing through it converges, or fails plainly as Offline
//! and loses nothing when the link is cut or down. Small delays keep these tests fast;
//! timings are asserted with generous slack (correctness here, figures in `netbench`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diemdanh::HttpTransport;
use diemdanh_tests::netem::{Counters, Dir, Netem, Profile, Shape};
use diemdanh_tests::{TestServer, NAM_HANG};
use sync_core::device::{CreatedCourse, Device, RetryPolicy, SyncStats};
use sync_core::model::MarkStatus;

use crate::common::{home, server_change_counts, setup_course};

/// Slack on every measured time: CI runs on 2 busy cores.
const SLACK: Duration = Duration::from_millis(700);

/// A TCP echo server on 127.0.0.1, one connection at a time, until dropped.
struct Echo {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("echo address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).expect("blocking connection");
                        conn.set_read_timeout(Some(Duration::from_secs(10)))
                            .expect("read timeout");
                        let mut buf = [0u8; 8192];
                        // Ends at EOF, on an error or at the read timeout.
                        while let Ok(n) = conn.read(&mut buf) {
                            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `bytes` through `stream` and reads as many back: the time it took.
fn echo_round(stream: &mut TcpStream, bytes: usize) -> Duration {
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    stream.write_all(&data).expect("send through the proxy");
    let mut back = vec![0u8; bytes];
    stream.read_exact(&mut back).expect("echo through the proxy");
    let took = started.elapsed();
    assert_eq!(back, data, "the proxy delivers the bytes unchanged and in order");
    took
}

fn assert_between(what: &str, took: Duration, low: Duration, high: Duration) {
    assert!(
        took >= low && took <= high,
        "{what}: took {took:?}, expected between {low:?} and {high:?}"
    );
}

#[test]
fn the_proxy_adds_the_latency_and_the_bandwidth_it_is_given() {
    let echo = Echo::start();
    let ms = Duration::from_millis;

    // 50 ms each way, no rate limit: the first byte pays the handshake's round trip too.
    let proxy = Netem::start(echo.addr, Profile::symmetric("50 ms", Shape::new(ms(50), None))).expect("proxy");
    let mut stream = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let opened = Instant::now();
    echo_round(&mut stream, 1);
    assert_between(
        "handshake + first round trip",
        opened.elapsed(),
        ms(195),
        ms(200) + SLACK,
    );
    let again = echo_round(&mut stream, 1);
    assert_between("a round trip on the open connection", again, ms(98), ms(100) + SLACK);
    drop(stream);
    let seen = proxy.counters();
    assert_eq!(
        (seen.up_bytes, seen.down_bytes, seen.connections, seen.turns),
        (2, 2, 1, 2)
    );
    drop(proxy);

    // 200,000 B/s up with 20 ms one way; down unlimited: 60,000 bytes take 0.3 s to send.
    let profile = Profile::asymmetric(
        "200 kB/s up",
        Shape::new(ms(20), Some(200_000)),
        Shape::new(ms(20), None),
    );
    let proxy = Netem::start(echo.addr, profile).expect("proxy");
    let mut stream = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    echo_round(&mut stream, 1);
    let took = echo_round(&mut stream, 60_000);
    assert_between("60,000 bytes at 200,000 B/s", took, ms(340), ms(340) + SLACK);
    assert_eq!(proxy.counters().up_bytes, 60_001);
    assert_eq!(proxy.counters().down_bytes, 60_001);

    // Dropping the proxy closes the connections it held.
    drop(proxy);
    let mut byte = [0u8; 1];
    let after_drop = stream.read(&mut byte);
    let closed = match &after_drop {
        Ok(n) => *n == 0,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    };
    assert!(closed, "the connection is closed, not left hanging: {after_drop:?}");
}

/// A device with a synced course of 6 trainees and 2 sessions, then both sessions marked
/// offline (12 marks, pending).
fn device_with_offline_marks(server: &TestServer, dir: &std::path::Path) -> (Device, CreatedCourse) {
    let mut device = server.enrolled_device(&home(dir, "a"), NAM_HANG);
    let (course, cadres) = setup_course(&mut device, NAM_HANG, 6, 2);
    server.sync(&mut device).expect("setup sync");
    for session in &course.sessions {
        device
            .mark_all(&course.id, &session.id, MarkStatus::Present)
            .expect("mark all");
    }
    device
        .mark(&course.id, &course.sessions[1].id, &cadres[2], MarkStatus::Late, None)
        .expect("mark");
    device
        .mark(
            &course.id,
            &course.sessions[0].id,
            &cadres[4],
            MarkStatus::Excused,
            Some("ốm".into()),
        )
        .expect("mark");
    assert!(device.pending_changes().expect("pending") > 0);
    (device, course)
}

fn sync_through(proxy: &Netem, device: &mut Device) -> sync_core::Result<SyncStats> {
    let mut transport = HttpTransport::new(proxy.url()).expect("transport");
    device.sync(&mut transport, &mut |_| true)
}

/// The device and the server agree on the course, nothing is pending, no change twice.
fn assert_converged(server: &TestServer, device: &Device, course: &CreatedCourse) {
    let on_device = device.show_course(&course.id).expect("device view");
    let on_server = server.report(&course.id);
    assert_eq!(on_device, on_server);
    assert_eq!(on_server.marks.len(), 12, "6 trainees x 2 sessions");
    assert_eq!(device.pending_changes().expect("pending"), 0);
    let (logged, distinct) = server_change_counts(server);
    assert_eq!(logged, distinct, "every change reached the server once");
}

/// `retries` retries of an unanswered exchange, at once (the waits are not slept).
fn retries_at_once(retries: u32) -> RetryPolicy {
    RetryPolicy {
        retries,
        sleep: Arc::new(|_| {}),
        ..RetryPolicy::default()
    }
}

fn assert_offline(result: sync_core::Result<SyncStats>, what: &str) {
    match result {
        Err(sync_core::Error::Offline(_)) => {}
        other => panic!("{what}: expected Offline, got {other:?}"),
    }
}

#[test]
fn a_device_syncs_through_a_slow_link_and_converges() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let (mut device, course) = device_with_offline_marks(&server, dir.path());
    let shape = Shape::new(Duration::from_millis(60), Some(100_000));
    let proxy = Netem::in_front_of(&server.url, Profile::symmetric("60 ms, 100 kB/s", shape)).expect("proxy");

    let started = Instant::now();
    let stats = sync_through(&proxy, &mut device).expect("sync through the proxy");
    let took = started.elapsed();
    assert_converged(&server, &device, &course);

    // One connection (handshake) and one turn per request, each a 120 ms round trip.
    let seen = proxy.counters();
    assert_eq!(seen.connections, 1);
    assert_eq!(seen.turns, u64::from(stats.requests));
    assert!(took >= Duration::from_millis(120) * (1 + stats.requests), "{took:?}");
    // The TCP payload is the HTTP bodies plus the headers.
    assert!(
        seen.up_bytes > stats.bytes_up && seen.down_bytes > stats.bytes_down,
        "{seen:?} {stats:?}"
    );
    assert_eq!((seen.cuts, seen.refused, seen.lost_segments), (0, 0, 0));
}

#[test]
fn a_cut_link_fails_the_sync_as_offline_and_the_next_sync_completes() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut device = server.enrolled_device(&home(dir.path(), "a"), NAM_HANG);
    let proxy = Netem::in_front_of(
        &server.url,
        Profile::symmetric("5 ms", Shape::new(Duration::from_millis(5), None)),
    )
    .expect("proxy");
    // A sync with nothing to push tells how long the reply's HTTP headers are.
    let before = proxy.counters();
    let idle = sync_through(&proxy, &mut device).expect("sync with nothing new");
    let reply_headers = proxy.counters().since(&before).down_bytes - idle.bytes_down;
    assert!(reply_headers > 20, "{reply_headers}");

    let (course, cadres) = setup_course(&mut device, NAM_HANG, 6, 2);
    sync_through(&proxy, &mut device).expect("setup sync");
    for session in &course.sessions {
        device
            .mark_all(&course.id, &session.id, MarkStatus::Present)
            .expect("mark all");
    }
    device
        .mark(&course.id, &course.sessions[1].id, &cadres[2], MarkStatus::Late, None)
        .expect("mark");
    device
        .mark(
            &course.id,
            &course.sessions[0].id,
            &cadres[4],
            MarkStatus::Excused,
            None,
        )
        .expect("mark");
    let pending = device.pending_changes().expect("pending");
    assert!(pending > 0);

    // Without retries, each cut fails the sync.
    device.set_retry(RetryPolicy::none());
    let cuts: [(Dir, u64, &str); 3] = [
        (Dir::Up, 300, "the request cut in its body"),
        (Dir::Down, 40, "the reply cut in its headers"),
        // Protocol 2 answers a push in a few bytes: cut just past the headers.
        (Dir::Down, reply_headers + 2, "the reply cut in its body"),
    ];
    for (dir, after, what) in cuts {
        let before = proxy.counters();
        proxy.cut_after(dir, after);
        assert_offline(sync_through(&proxy, &mut device), what);
        let seen = proxy.counters().since(&before);
        assert_eq!(seen.cuts, 1, "{what}: the cut fired in this sync");
        assert_eq!(seen.bytes(dir), after, "{what}: exactly {after} bytes went through");
        assert_eq!(
            device.pending_changes().expect("pending"),
            pending,
            "{what}: nothing lost"
        );
    }

    // With retries, the sync repeats the cut exchange on a new connection and completes;
    // the server, which had applied the push before its reply was cut, applies it once.
    device.set_retry(retries_at_once(3));
    proxy.cut_after(Dir::Down, reply_headers + 2);
    let before = proxy.counters();
    let stats = sync_through(&proxy, &mut device).expect("sync after the cuts");
    let seen = proxy.counters().since(&before);
    assert_eq!((stats.retries, seen.cuts, seen.connections), (1, 1, 2));
    assert_converged(&server, &device, &course);
}

#[test]
fn an_outage_fails_the_sync_as_offline_and_after_it_the_sync_completes() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let (mut device, course) = device_with_offline_marks(&server, dir.path());
    let pending = device.pending_changes().expect("pending");

    // A dead zone: refused at once, plainly, every retry too.
    device.set_retry(retries_at_once(3));
    let dead = Netem::in_front_of(&server.url, Profile::dead_zone()).expect("proxy");
    let started = Instant::now();
    assert_offline(sync_through(&dead, &mut device), "dead zone");
    assert!(started.elapsed() < Duration::from_secs(5), "a refused link fails fast");
    assert_eq!((dead.counters().connections, dead.counters().refused), (0, 4));
    drop(dead);

    // An outage that begins while a sync is in flight resets its connection.
    let slow = Shape::new(Duration::from_millis(300), None);
    let proxy = Netem::in_front_of(&server.url, Profile::symmetric("300 ms", slow)).expect("proxy");
    let url = proxy.url().to_string();
    let home_a = home(dir.path(), "a");
    drop(device);
    let in_flight = std::thread::spawn(move || {
        let mut device = Device::open(&home_a).expect("open device");
        device.set_retry(RetryPolicy::none());
        let mut transport = HttpTransport::new(&url).expect("transport");
        device.sync(&mut transport, &mut |_| true).map(|_| ())
    });
    // Once the connection is open the sync needs 1.2 s more (the handshake's round trip,
    // then the request's): the outage begins well inside it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.counters().connections == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    proxy.outage_for(Duration::from_millis(600));
    let result = in_flight.join().expect("sync thread");
    assert!(
        matches!(result, Err(sync_core::Error::Offline(_))),
        "in flight: {result:?}"
    );
    assert_eq!(proxy.counters().killed, 1);
    let mut device = Device::open(&home(dir.path(), "a")).expect("open device");
    device.set_retry(RetryPolicy::none());
    assert_eq!(device.pending_changes().expect("pending"), pending);

    // Still inside the window: refused on arrival.
    if proxy.in_outage() {
        assert_offline(sync_through(&proxy, &mut device), "during the outage");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.in_outage() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!proxy.in_outage(), "the outage ended");
    let before: Counters = proxy.counters();
    sync_through(&proxy, &mut device).expect("sync after the outage");
    assert_eq!(proxy.counters().since(&before).refused, 0);
    assert_converged(&server, &device, &course);
}

#[test]
fn an_outage_window_from_the_profile_refuses_then_lets_through() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let (mut device, course) = device_with_offline_marks(&server, dir.path());
    let profile = Profile::symmetric("10 ms", Shape::new(Duration::from_millis(10), None))
        .with_outage(Duration::ZERO, Duration::from_millis(700));
    let proxy = Netem::in_front_of(&server.url, profile).expect("proxy");
    device.set_retry(RetryPolicy::none());
    let attempt = sync_through(&proxy, &mut device);
    if proxy.in_outage() {
        // The attempt was made inside the window (it ends well within 700 ms here).
        assert_offline(attempt, "inside the scheduled window");
        assert!(proxy.counters().refused >= 1);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.in_outage() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    sync_through(&proxy, &mut device).expect("sync after the window");
    assert_converged(&server, &device, &course);
}
