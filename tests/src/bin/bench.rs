//! The benchmark: what a realistic course costs on the wire, on disk and in memory.
//!
//! `cargo run --release -p diemdanh-tests --bin bench` runs the whole workload against a
//! real server on 127.0.0.1 (port 0, its own SQLite store in a temp folder) and prints a
//! plain-text table; BENCHMARKS.md keeps a copy of the figures with the machine.
//!
//! Workload: one device of unit 2025:03434 adds 70 cadres, creates one course of 36
//! sessions and enrols the 70, syncs that setup, then records every session offline as a
//! roll call (`mark_all` present, then 5 single marks: late, absent, excused, ...) and
//! syncs: 2,520 marks. Then one more mark, a fresh second device pulling everything, the
//! plain automerge sync protocol on the same documents for reference, the time to record
//! one mark durably, and the time and peak memory to open the course.
//!
//! Peak memory is measured by running this binary again as a child with a mode argument
//! (`bench open-course HOME COURSE`, `bench load-doc HOME DOC`, `bench baseline`): the child
//! does one thing and reports `VmHWM` from /proc/self/status.
//!
//! Set `DIEMDANH_BENCH_DIR` to put the temp folder somewhere else than the system's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use automerge::sync::State;
use automerge::{ActorId, Automerge, ReadDoc, ROOT};
use diemdanh_tests::workload::{
    automerge_sync, device_docs, one_more_mark, record_one_more_mark, record_roll_calls, setup, Exchange, Lcg,
    CHANGES_PER_SESSION, MARKS, ROLL_CALL_SEED, SESSIONS, TRAINEES,
};
use diemdanh_tests::{TestServer, NAM_HANG};
use sync_core::device::{Device, SyncStats};
use sync_core::docs::{self, DocId, DocKind};
use sync_core::model::MarkStatus;
use sync_core::protocol::{Reply, Transport};
use sync_core::store;

/// Marks timed one by one for the latency figure.
const TIMED_MARKS: usize = 200;
/// In-process repetitions of each open-course measurement.
const OPEN_REPEATS: usize = 20;
/// Child processes per memory measurement.
const CHILD_RUNS: usize = 3;

// Targets from the issue: push <= 36 KB in 1 request; one more mark <= 400 B in 1
// request; a fresh device pulls <= 40 KB in <= 2 requests. KB read as 1,024 bytes.
const PUSH_TARGET: u64 = 36 * 1024;
const ONE_MARK_TARGET: u64 = 400;
const PULL_TARGET: u64 = 40 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str);
    match mode {
        None => run(),
        Some("baseline") => child_report(Duration::ZERO, 0),
        Some("open-course") if args.len() == 3 => child_open_course(Path::new(&args[1]), &args[2]),
        Some("load-doc") if args.len() == 3 => child_load_doc(Path::new(&args[1]), &args[2]),
        _ => {
            eprintln!("usage: bench | bench baseline | bench open-course HOME COURSE | bench load-doc HOME DOC");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Child modes: do one thing, print one line `micros=.. items=.. hwm_kb=.. rss_kb=..`.

fn child_open_course(home: &Path, course: &str) {
    let started = Instant::now();
    let device = Device::open(home).expect("open device");
    let view = device.show_course(course).expect("show course");
    let elapsed = started.elapsed();
    child_report(elapsed, view.marks.len());
}

fn child_load_doc(home: &Path, doc: &str) {
    let id: DocId = doc.parse().expect("document id");
    let started = Instant::now();
    let conn = store::open_connection(&home.join("device.sqlite")).expect("open device store");
    let loaded = store::load_doc(&conn, &id)
        .expect("load doc")
        .expect("doc is in the store");
    let elapsed = started.elapsed();
    child_report(elapsed, loaded.keys(ROOT).count());
}

fn child_report(elapsed: Duration, items: usize) {
    let (hwm, rss) = memory_kb();
    println!("micros={} items={items} hwm_kb={hwm} rss_kb={rss}", elapsed.as_micros());
}

/// Peak and current resident set size of this process, in KiB, from /proc/self/status.
fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[derive(Debug, Clone, Copy, Default)]
struct ChildFigures {
    micros: u64,
    items: u64,
    hwm_kb: u64,
}

fn run_child(args: &[&str]) -> ChildFigures {
    let exe = std::env::current_exe().expect("path of this binary");
    let out = Command::new(exe).args(args).output().expect("spawn the bench child");
    assert!(
        out.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fig = ChildFigures::default();
    for pair in text.split_whitespace() {
        let Some((k, v)) = pair.split_once('=') else { continue };
        let v: u64 = v.parse().expect("a number from the child");
        match k {
            "micros" => fig.micros = v,
            "items" => fig.items = v,
            "hwm_kb" => fig.hwm_kb = v,
            _ => {}
        }
    }
    fig
}

/// Runs the child [`CHILD_RUNS`] times: median time, largest peak.
fn child_figures(args: &[&str]) -> ChildFigures {
    let runs: Vec<ChildFigures> = (0..CHILD_RUNS).map(|_| run_child(args)).collect();
    let mut micros: Vec<u64> = runs.iter().map(|r| r.micros).collect();
    micros.sort_unstable();
    ChildFigures {
        micros: micros[micros.len() / 2],
        items: runs.iter().map(|r| r.items).max().unwrap_or(0),
        hwm_kb: runs.iter().map(|r| r.hwm_kb).max().unwrap_or(0),
    }
}

/// Wraps the real HTTP transport to count what crosses it and how long the device waits
/// for the server (round trip plus the server's work), apart from its own work.
struct Measured<T: Transport> {
    inner: T,
    posts: u32,
    up: u64,
    down: u64,
    waiting: Duration,
}

impl<T: Transport> Transport for Measured<T> {
    fn post(&mut self, path: &str, content_type: &str, bearer: Option<&str>, body: Vec<u8>) -> Result<Reply, String> {
        self.posts += 1;
        self.up += body.len() as u64;
        let started = Instant::now();
        let reply = self.inner.post(path, content_type, bearer, body);
        self.waiting += started.elapsed();
        if let Ok(r) = &reply {
            self.down += r.body.len() as u64;
        }
        reply
    }
}

/// One sync over a fresh HTTP transport (as `TestServer::sync`), measured at both ends.
struct Measure {
    stats: SyncStats,
    /// Seconds spent waiting on HTTP replies.
    waiting: f64,
    /// The transport saw the same requests and bytes as `SyncStats` counts.
    agrees: bool,
}

fn measured_sync(server: &TestServer, device: &mut Device) -> Measure {
    let mut t = Measured {
        inner: server.transport(),
        posts: 0,
        up: 0,
        down: 0,
        waiting: Duration::ZERO,
    };
    let stats = device.sync(&mut t, &mut |_| true).expect("sync");
    let agrees = (t.posts, t.up, t.down) == (stats.requests, stats.bytes_up, stats.bytes_down);
    Measure {
        stats,
        waiting: t.waiting.as_secs_f64(),
        agrees,
    }
}

/// The marks with no history: `{key: mark}` as JSON.
fn bare_marks_json(doc: &Automerge) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    for key in doc.keys(ROOT) {
        let value = docs::values_at(doc, &key)
            .into_iter()
            .next()
            .flatten()
            .unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(&value).expect("a mark is JSON");
        map.insert(key, parsed);
    }
    serde_json::to_vec(&serde_json::Value::Object(map)).expect("serialise JSON")
}

fn zstd9(bytes: &[u8]) -> usize {
    zstd::bulk::compress(bytes, 9).expect("zstd").len()
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// The file system a path lives on, from /proc/self/mounts (longest mount point prefix).
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let point = Path::new(f[1]);
        if path.starts_with(point) && best.as_ref().is_none_or(|(len, _)| f[1].len() > *len) {
            best = Some((f[1].len(), format!("{} ({} on {})", f[2], f[0], f[1])));
        }
    }
    best.map(|(_, s)| s).unwrap_or_else(|| "unknown".into())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn sync_row(label: &str, m: &Measure, marks: Option<usize>, target: &str) -> String {
    let s = &m.stats;
    let total = s.bytes_up + s.bytes_down;
    let per_mark = marks
        .filter(|m| *m > 0)
        .map(|m| format!("{:.2}", total as f64 / m as f64))
        .unwrap_or_else(|| "-".into());
    format!(
        "{label:<44} {:>8} {:>8} {:>8} {:>4} {:>8.1} {:>8.1} {:>7}  {target}",
        s.bytes_up,
        s.bytes_down,
        total,
        s.requests,
        s.seconds * 1000.0,
        m.waiting * 1000.0,
        per_mark
    )
}

fn exchange_row(label: &str, ex: &Exchange, marks: usize) -> String {
    format!(
        "{label:<44} {:>8} {:>8} {:>8} {:>4} {:>7.2}",
        ex.a_to_b,
        ex.b_to_a,
        ex.total(),
        ex.messages,
        ex.total() as f64 / marks.max(1) as f64
    )
}

fn size_row(label: &str, bytes: usize, marks: usize) -> String {
    format!("{label:<44} {bytes:>8} {:>7.2}", bytes as f64 / marks.max(1) as f64)
}

// ---------------------------------------------------------------------------------------

fn run() {
    let dir = match std::env::var_os("DIEMDANH_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let home_a: PathBuf = dir.path().join("device-a");
    let home_b: PathBuf = dir.path().join("device-b");
    let server = TestServer::start(&dir.path().join("server"));
    let mut out: Vec<String> = Vec::new();

    // Setup, synced before the marks so the next sync measures the marks.
    let mut a = server.enrolled_device(&home_a, NAM_HANG);
    let course = setup(&mut a);
    let setup_sync = measured_sync(&server, &mut a);

    // 1. Roll calls recorded offline, then one sync pushes them.
    let mut rng = Lcg(ROLL_CALL_SEED);
    let started = Instant::now();
    let commits = record_roll_calls(&mut a, &course, &mut rng);
    let record_time = started.elapsed();
    let pending_before_push = a.pending_changes().expect("pending");
    let push = measured_sync(&server, &mut a);

    // 2. One more mark.
    record_one_more_mark(&mut a, &course);
    let one = measured_sync(&server, &mut a);
    let idle = measured_sync(&server, &mut a);

    // 3. A fresh device of the same commune pulls everything.
    let mut b = server.enrolled_device(&home_b, NAM_HANG);
    let pull = measured_sync(&server, &mut b);

    // Checks: the figures mean nothing unless everyone ended with the same course.
    let view_a = a.show_course(&course.id).expect("device A view");
    let view_b = b.show_course(&course.id).expect("device B view");
    let view_s = server.report(&course.id);
    let pending_a = a.pending_changes().expect("pending");
    let checks = format!(
        "checks: marks on A {} / B {} / server {} (want {MARKS}); A == B: {}; A == server: {}; A pending after sync: {pending_a}; \
         transport counts == SyncStats: {}",
        view_a.marks.len(),
        view_b.marks.len(),
        view_s.marks.len(),
        view_a == view_b,
        view_a == view_s,
        [&setup_sync, &push, &one, &idle, &pull].iter().all(|m| m.agrees),
    );

    // 4. Plain automerge sync on the device's own documents.
    let docs_a = device_docs(&home_a);
    let (att_id, att) = docs_a
        .iter()
        .find(|(id, _)| id.kind == DocKind::Attendance)
        .map(|(id, d)| (id.clone(), d.clone()))
        .expect("an attendance document on device A");
    let att_changes = att.get_changes(&[]);
    let att_raw: usize = att_changes.iter().map(|c| c.raw_bytes().len()).sum();
    let att_keys = att.keys(ROOT).count();

    let mut peer_a = att.clone();
    let mut peer_b = Automerge::new();
    let (mut sa, mut sb) = (State::new(), State::new());
    let ref_att = automerge_sync(&mut peer_a, &mut sa, &mut peer_b, &mut sb);

    let mut ref_all = Exchange::default();
    for doc in docs_a.values() {
        let mut x = doc.clone();
        let mut y = Automerge::new();
        ref_all.add(automerge_sync(&mut x, &mut State::new(), &mut y, &mut State::new()));
    }

    // One more mark after the peers are in sync: with the states kept, and with fresh ones.
    let key = docs::mark_key(&course.sessions[0], &course.cadres[1]);
    peer_a.set_actor(ActorId::random());
    one_more_mark(&mut peer_a, &key, MarkStatus::Absent, a.device_id());
    let ref_one_kept = automerge_sync(&mut peer_a, &mut sa, &mut peer_b, &mut sb);
    // A different value: writing the same value again is no change at all in automerge.
    one_more_mark(&mut peer_a, &key, MarkStatus::Late, a.device_id());
    let ref_one_fresh = automerge_sync(&mut peer_a, &mut State::new(), &mut peer_b, &mut State::new());

    let saved = att.save();
    let json = bare_marks_json(&att);

    // 6. Opening the course (before the timed marks add history to it).
    let course_arg = course.id.as_str();
    let att_arg = att_id.to_string();
    let home_a_arg = home_a.to_string_lossy().to_string();
    let home_b_arg = home_b.to_string_lossy().to_string();
    let baseline = child_figures(&["baseline"]);
    let open_a = child_figures(&["open-course", &home_a_arg, course_arg]);
    let load_a = child_figures(&["load-doc", &home_a_arg, &att_arg]);
    let open_b = child_figures(&["open-course", &home_b_arg, course_arg]);
    let load_b = child_figures(&["load-doc", &home_b_arg, &att_arg]);
    let mut open_times = Vec::with_capacity(OPEN_REPEATS);
    let mut load_times = Vec::with_capacity(OPEN_REPEATS);
    for _ in 0..OPEN_REPEATS {
        let t = Instant::now();
        let d = Device::open(&home_a).expect("open device");
        let v = d.show_course(&course.id).expect("show course");
        open_times.push(t.elapsed());
        assert_eq!(v.marks.len(), MARKS);
        let t = Instant::now();
        let conn = store::open_connection(&home_a.join("device.sqlite")).expect("open store");
        let doc = store::load_doc(&conn, &att_id).expect("load").expect("doc");
        load_times.push(t.elapsed());
        assert_eq!(doc.keys(ROOT).count(), att_keys);
    }
    open_times.sort();
    load_times.sort();
    let (chunks, snapshot_bytes) = chunk_layout(&home_a, &att_id);

    // 5. Recording one mark durably, 200 times, on the 2,520-mark course.
    let mut times = Vec::with_capacity(TIMED_MARKS);
    let statuses = [
        MarkStatus::Late,
        MarkStatus::Absent,
        MarkStatus::Excused,
        MarkStatus::Present,
    ];
    for i in 0..TIMED_MARKS {
        let session = &course.sessions[rng.next(SESSIONS)];
        let who = &course.cadres[rng.next(TRAINEES)];
        let t = Instant::now();
        a.mark(&course.id, session, who, statuses[i % statuses.len()], None)
            .expect("timed mark");
        times.push(t.elapsed());
    }
    let mean = times.iter().sum::<Duration>() / TIMED_MARKS as u32;
    times.sort();
    let push_200 = measured_sync(&server, &mut a);
    let fs = filesystem_of(dir.path());

    // The table.
    out.push("diemdanh bench (automerge 0.12, release build; bytes are HTTP bodies as SyncStats counts them)".into());
    out.push(format!(
        "workload: unit {NAM_HANG}, {TRAINEES} trainees x {SESSIONS} sessions = {MARKS} marks, recorded offline as \
         {SESSIONS} mark_all + {} single marks = {commits} commits in {} ms",
        SESSIONS * CHANGES_PER_SESSION,
        ms(record_time)
    ));
    out.push(format!(
        "device counted {pending_before_push} pending changes before the push; the push carried {} changes \
         (attendance doc: {} changes after one more mark)",
        push.stats.changes_sent,
        att_changes.len()
    ));
    out.push(format!("temp dir: {} on {fs}", dir.path().display()));
    out.push(checks);
    out.push(String::new());
    out.push(format!(
        "{:<44} {:>8} {:>8} {:>8} {:>4} {:>8} {:>8} {:>7}  target",
        "SYNC OVER HTTP (loopback)", "up B", "down B", "total B", "req", "wall ms", "http ms", "B/mark"
    ));
    out.push(sync_row(
        "0. setup: roster (70) + course (36 sessions)",
        &setup_sync,
        None,
        "-",
    ));
    out.push(sync_row(
        "1. push 2,520 marks",
        &push,
        Some(MARKS),
        &format!(
            "<= {PUSH_TARGET} B, 1 req: {}",
            verdict(push.stats.bytes_up + push.stats.bytes_down <= PUSH_TARGET && push.stats.requests == 1)
        ),
    ));
    out.push(sync_row(
        "2. one more mark",
        &one,
        Some(1),
        &format!(
            "<= {ONE_MARK_TARGET} B, 1 req: {}",
            verdict(one.stats.bytes_up + one.stats.bytes_down <= ONE_MARK_TARGET && one.stats.requests == 1)
        ),
    ));
    out.push(sync_row("2b. sync with nothing new", &idle, None, "-"));
    out.push(sync_row(
        "3. fresh device pulls everything",
        &pull,
        Some(MARKS),
        &format!(
            "<= {PULL_TARGET} B, <= 2 req: {}",
            verdict(pull.stats.bytes_up + pull.stats.bytes_down <= PULL_TARGET && pull.stats.requests <= 2)
        ),
    ));
    out.push(sync_row(
        "5b. push the 200 timed marks (200 commits)",
        &push_200,
        Some(TIMED_MARKS),
        "-",
    ));
    out.push(String::new());
    out.push(format!(
        "{:<44} {:>8} {:>8} {:>8} {:>4} {:>7}",
        "4. PLAIN AUTOMERGE SYNC (in memory)", "a->b B", "b->a B", "total B", "msgs", "B/mark"
    ));
    out.push(exchange_row("4a. attendance doc -> empty peer", &ref_att, MARKS));
    out.push(exchange_row(
        &format!("4b. all {} docs -> empty peer (pull analogue)", docs_a.len()),
        &ref_all,
        MARKS,
    ));
    out.push(exchange_row("4c. one more mark, sync states kept", &ref_one_kept, 1));
    out.push(exchange_row("4d. one more mark, fresh sync states", &ref_one_fresh, 1));
    out.push(String::new());
    out.push(format!(
        "{:<44} {:>8} {:>7}",
        format!(
            "4e. SIZES (attendance doc: {att_keys} keys, {} changes)",
            att_changes.len()
        ),
        "bytes",
        "B/mark"
    ));
    out.push(size_row("automerge save()", saved.len(), att_keys));
    out.push(size_row("automerge save(), zstd -9", zstd9(&saved), att_keys));
    out.push(size_row("raw changes (sum of change bytes)", att_raw, att_keys));
    out.push(size_row("bare marks as JSON {key: mark}", json.len(), att_keys));
    out.push(size_row("bare marks as JSON, zstd -9", zstd9(&json), att_keys));
    out.push(String::new());
    out.push(format!(
        "5. RECORD ONE MARK DURABLY (Device::mark, WAL + synchronous=FULL, {TIMED_MARKS} marks, fs {fs})"
    ));
    out.push(format!(
        "median {} ms   p95 {} ms   max {} ms   mean {} ms   min {} ms",
        ms(percentile(&times, 50.0)),
        ms(percentile(&times, 95.0)),
        ms(times.last().copied().unwrap_or_default()),
        ms(mean),
        ms(times.first().copied().unwrap_or_default()),
    ));
    out.push(String::new());
    out.push(format!(
        "{:<44} {:>10} {:>10} {:>10} {:>10}",
        "6. OPEN THE COURSE", "child ms", "in-proc ms", "peak RSS", "over base"
    ));
    out.push(format!(
        "{:<44} {:>10} {:>10} {:>7} KB {:>10}",
        "baseline: the process starts, nothing else", "-", "-", baseline.hwm_kb, "-"
    ));
    let row = |label: &str, child: &ChildFigures, inproc: Option<Duration>| {
        format!(
            "{label:<44} {:>10.2} {:>10} {:>7} KB {:>7} KB",
            child.micros as f64 / 1000.0,
            inproc.map(ms).unwrap_or_else(|| "-".into()),
            child.hwm_kb,
            child.hwm_kb.saturating_sub(baseline.hwm_kb),
        )
    };
    out.push(row(
        "6a. Device::open + show_course, device A",
        &open_a,
        Some(percentile(&open_times, 50.0)),
    ));
    out.push(row(
        "6b. load_doc attendance, device A",
        &load_a,
        Some(percentile(&load_times, 50.0)),
    ));
    out.push(row("6a. Device::open + show_course, device B", &open_b, None));
    out.push(row("6b. load_doc attendance, device B", &load_b, None));
    out.push(format!(
        "(child ms: one cold process, median of {CHILD_RUNS}; in-proc ms: median of {OPEN_REPEATS}; \
         device A's attendance doc: snapshot {snapshot_bytes} B + {chunks} chunks; items seen {} / {})",
        open_a.items, load_a.items
    ));

    for line in &out {
        println!("{line}");
    }
    drop(a);
    drop(b);
    server.stop();
}

/// How device A stores a document: (chunks, snapshot bytes).
fn chunk_layout(home: &Path, id: &DocId) -> (i64, i64) {
    let conn = store::open_connection(&home.join("device.sqlite")).expect("open device store");
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM chunks WHERE doc_id = ?1), COALESCE(LENGTH(snapshot), 0) FROM docs WHERE doc_id = ?1",
        [id.to_string()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("chunk layout")
}
