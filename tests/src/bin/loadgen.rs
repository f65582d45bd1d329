//! Load generator: N simulated devices (default 1,000), each a commune of its own with a
//! roster and a course, recording roll calls in bursts and syncing them over real HTTP to
//! real `diemdanh-server` processes: one node on the embedded SQLite store, or two nodes
//! on one PostgreSQL database (`--postgres URL`, devices alternating between the nodes).
//!
//! Prints marks accepted per second (in pushes the server answered `Accepted`: validated
//! and committed before the answer), p50/p99/max sync latency, errors, and the server's
//! RSS at idle after the run and at its peak.
//!
//! Devices are simulated in memory (automerge documents and the wire protocol, no SQLite
//! per device) so the generator's own work stays small next to the server's. They are
//! enrolled through the store API before the servers start, because enrolment over HTTP
//! is rate-limited to 60 a minute per node by design.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/loadgen                      # 1,000 devices, one node, SQLite
//! target/release/loadgen --postgres postgres://postgres@127.0.0.1:5432/test
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ChangeHash, ROOT};
use diemdanh::HttpTransport;
use diemdanh_server::api::{canonical_code, hash_secret, new_code, now};
use diemdanh_server::{PgStore, SqliteStore, Store};
use rand::RngCore;
use sync_core::docs::{self, CourseDoc, DocId};
use sync_core::model::{Cadre, Category, CourseMeta, Enrolment, Gender, Mark, MarkStatus, Session};
use sync_core::protocol::{self, DocPush, Outcome, SyncRequest, SyncResponse, Transport};
use sync_core::units::{Scheme, UnitKey, UnitTree};

struct Args {
    devices: usize,
    seconds: u64,
    trainees: usize,
    sessions_per_sync: usize,
    concurrency: usize,
    postgres: Option<String>,
    nodes: usize,
    server_bin: PathBuf,
}

const USAGE: &str = "loadgen [--devices N] [--seconds S] [--trainees T] [--sessions-per-sync K] \
[--concurrency C] [--postgres URL [--nodes 2]] [--server-bin PATH]";

fn parse_args() -> Result<Args, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut a = Args {
        devices: 1000,
        seconds: 30,
        trainees: 40,
        sessions_per_sync: 2,
        concurrency: 48,
        postgres: None,
        nodes: 0,
        server_bin: exe.with_file_name("diemdanh-server"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\nusage: {USAGE}"));
        let num = |v: String| v.parse::<usize>().map_err(|_| format!("{flag}: `{v}` is not a number"));
        match flag.as_str() {
            "--devices" => a.devices = num(value()?)?,
            "--seconds" => a.seconds = num(value()?)? as u64,
            "--trainees" => a.trainees = num(value()?)?,
            "--sessions-per-sync" => a.sessions_per_sync = num(value()?)?,
            "--concurrency" => a.concurrency = num(value()?)?,
            "--postgres" => a.postgres = Some(value()?),
            "--nodes" => a.nodes = num(value()?)?,
            "--server-bin" => a.server_bin = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!("usage: {USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\nusage: {USAGE}")),
        }
    }
    if a.nodes == 0 {
        a.nodes = if a.postgres.is_some() { 2 } else { 1 };
    }
    if a.nodes > 1 && a.postgres.is_none() {
        return Err("several nodes need --postgres (the SQLite store belongs to one process)".into());
    }
    if a.devices == 0 || a.trainees == 0 || a.sessions_per_sync == 0 || a.concurrency == 0 {
        return Err("--devices, --trainees, --sessions-per-sync and --concurrency must be at least 1".into());
    }
    if !a.server_bin.exists() {
        return Err(format!(
            "{} is missing: run `cargo build --release --workspace --bins` first",
            a.server_bin.display()
        ));
    }
    Ok(a)
}

/// One simulated tablet: its documents in memory and what the server has of them.
struct Dev {
    id: String,
    token: String,
    unit: UnitKey,
    actor: ActorId,
    course_id: String,
    trainees: Vec<String>,
    course: CourseDoc,
    /// Documents by id, with the heads the server is known to have (None: never sent).
    docs: Vec<(DocId, Automerge, Option<Vec<ChangeHash>>)>,
    cursor: u64,
    day: usize,
    rng: u64,
}

impl Dev {
    fn next(&mut self, n: usize) -> usize {
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.rng >> 33) % n as u64) as usize
    }

    fn doc_mut(&mut self, id: &DocId) -> &mut Automerge {
        if let Some(i) = self.docs.iter().position(|(d, _, _)| d == id) {
            return &mut self.docs[i].1;
        }
        let mut doc = Automerge::new();
        doc.set_actor(self.actor.clone());
        self.docs.push((id.clone(), doc, None));
        let last = self.docs.len() - 1;
        &mut self.docs[last].1
    }

    fn commit(&mut self, id: &DocId, message: &str, entries: Vec<(String, String)>) {
        let time = now() * 1000;
        let doc = self.doc_mut(id);
        let mut tx = doc.transaction();
        for (k, v) in entries {
            // Keys and values come from this program: a put into a fresh map cannot fail.
            let _ = tx.put(ROOT, k, v);
        }
        tx.commit_with(CommitOptions::default().with_message(message).with_time(time));
    }

    /// The roster and the course with its trainees enrolled: sent once, before the clock.
    fn setup(&mut self, trainees: usize) {
        let roster = DocId::roster(&self.unit);
        let mut entries = Vec::new();
        for i in 0..trainees {
            let cid = format!("c{i:04}");
            let cadre = Cadre {
                name: format!("Lò Thị Học Viên {i}"),
                gender: if i % 2 == 0 { Gender::Female } else { Gender::Male },
                birth_year: 1970 + (i % 30) as u16,
                ethnicity: Some(["03", "08", "09", "01"][i % 4].into()),
                category: Some(Category::CongChuc),
                position: None,
                qualification: None,
                theory_level: None,
                state_management: None,
            };
            entries.push((docs::cadre_key(&cid), docs::encode(&cadre)));
            self.trainees.push(cid);
        }
        self.commit(&roster, "import roster", entries);
        let meta = CourseMeta {
            title: "Bồi dưỡng kỹ năng quản lý nhà nước cấp xã".into(),
            topic: None,
            organiser: None,
            form: None,
            venue: None,
            start_date: None,
            end_date: None,
            min_ratio: 0.8,
            excused_counts: false,
            planned_trainees: trainees as u32,
            programme: None,
        };
        let course = DocId::course(&self.unit, &self.course_id);
        let mut entries = vec![(docs::META_KEY.to_string(), docs::encode(&meta))];
        self.course.meta = Some(meta);
        for cid in self.trainees.clone() {
            let e = Enrolment { at: now() };
            entries.push((docs::enrolment_key(&cid), docs::encode(&e)));
            self.course.enrolments.insert(cid, e);
        }
        self.commit(&course, "create course", entries);
    }

    /// A day's roll calls: `sessions` new sessions, each `mark all` present and then a
    /// few single marks (late, absent, excused). Returns the marks written.
    fn record_burst(&mut self, sessions: usize) -> usize {
        let course = DocId::course(&self.unit, &self.course_id);
        let mut marks = 0;
        for _ in 0..sessions {
            self.day += 1;
            let sid = format!("s{:05}", self.day);
            let session = Session {
                date: date(self.day),
                half_day: None,
                periods: Some(4),
                topic: None,
                part: docs::part_for_new_session(&self.course),
            };
            let part = session.part;
            self.commit(
                &course,
                "add session",
                vec![(docs::session_key(&sid), docs::encode(&session))],
            );
            self.course.sessions.insert(sid.clone(), session);
            let att = DocId::attendance(&self.unit, &self.course_id, part);
            let at = now();
            let mark = |status: MarkStatus, device: &str| Mark {
                status,
                note: None,
                periods: None,
                device: device.to_string(),
                at,
            };
            let all: Vec<(String, String)> = self
                .trainees
                .iter()
                .map(|c| {
                    (
                        docs::mark_key(&sid, c),
                        docs::encode(&mark(MarkStatus::Present, &self.id)),
                    )
                })
                .collect();
            marks += all.len();
            self.commit(&att, "mark all", all);
            for _ in 0..3 {
                let n = self.trainees.len();
                let pick = self.next(n);
                let who = self.trainees[pick].clone();
                let status = [MarkStatus::Late, MarkStatus::Absent, MarkStatus::Excused][self.next(3)];
                let value = docs::encode(&mark(status, &self.id));
                self.commit(&att, "mark", vec![(docs::mark_key(&sid, &who), value)]);
                marks += 1;
            }
        }
        marks
    }

    /// The request pushing everything the server has not acknowledged.
    fn request(&self) -> SyncRequest {
        let mut pushes = Vec::new();
        for (id, doc, sent) in &self.docs {
            let push = match sent {
                None => DocPush {
                    doc: id.to_string(),
                    base: vec![],
                    heads: vec![],
                    data: doc.save(),
                },
                Some(base) => {
                    let changes = doc.get_changes(base);
                    if changes.is_empty() {
                        continue;
                    }
                    let deps: std::collections::HashSet<ChangeHash> =
                        changes.iter().flat_map(|c| c.deps().to_vec()).collect();
                    let mut data = Vec::new();
                    for c in &changes {
                        data.extend_from_slice(c.raw_bytes());
                    }
                    DocPush {
                        doc: id.to_string(),
                        base: protocol::hashes_to_wire(
                            &base.iter().filter(|h| !deps.contains(h)).copied().collect::<Vec<_>>(),
                        ),
                        heads: vec![],
                        data,
                    }
                }
            };
            pushes.push(push);
        }
        SyncRequest {
            cursor: self.cursor,
            docs: pushes,
            pending_changes: 0,
            app_version: String::new(),
            max_response_bytes: 0,
        }
    }

    /// Takes in the answer to `req`; returns an error text for anything not accepted.
    fn absorb(&mut self, req: &SyncRequest, resp: SyncResponse) -> Result<(), String> {
        if resp.results.len() != req.docs.len() {
            return Err(format!(
                "{} results for {} documents",
                resp.results.len(),
                req.docs.len()
            ));
        }
        for (push, result) in req.docs.iter().zip(&resp.results) {
            if let Outcome::Refused { reason, .. } = &result.outcome {
                return Err(format!("{} refused: {reason}", push.doc));
            }
            let Some(entry) = self.docs.iter_mut().find(|(d, _, _)| d.to_string() == push.doc) else {
                continue;
            };
            if !result.data.is_empty() {
                entry.1.load_incremental(&result.data).map_err(|e| e.to_string())?;
            }
            // Everything this device holds of the document is the server's now.
            entry.2 = Some(entry.1.get_heads());
        }
        for update in resp.updates {
            if let Some(entry) = self.docs.iter_mut().find(|(d, _, _)| d.to_string() == update.doc) {
                entry.1.load_incremental(&update.data).map_err(|e| e.to_string())?;
            }
        }
        self.cursor = resp.cursor;
        Ok(())
    }
}

fn date(day: usize) -> String {
    // Working days from 2026-01-05 on, 28-day months: valid dates, in order.
    let month = 1 + (day / 28) % 12;
    let dom = 1 + day % 28;
    format!("{}-{month:02}-{dom:02}", 2026 + day / 336)
}

fn sync(transport: &mut HttpTransport, dev: &mut Dev) -> Result<(), String> {
    let req = dev.request();
    let reply = transport.post(
        protocol::SYNC_PATH,
        protocol::CONTENT_TYPE,
        Some(&dev.token),
        req.encode(),
    )?;
    if reply.status != 200 {
        return Err(format!(
            "HTTP {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
        ));
    }
    let resp = SyncResponse::decode(&reply.body).map_err(|e| e.to_string())?;
    dev.absorb(&req, resp)
}

struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(bin: &Path, store_args: &[String]) -> Result<Node, String> {
    let mut child = Command::new(bin)
        .arg("serve")
        .args(store_args)
        .args(["--listen", "127.0.0.1:0"])
        .env("DIEMDANH_LOG", "warn")
        .env("_RJEM_MALLOC_CONF", std::env::var("LG_MALLOC_CONF").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // The first line names the address; bounded: a server that says nothing is an error.
    for _ in 0..20 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(url) = line.strip_prefix("diemdanh-server listening on ") {
            let url = url.trim().to_string();
            // Keep draining its stdout so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return Ok(Node { child, url });
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("the server did not say where it listens".into())
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): state is the 3rd field.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut schema_to_drop = None;
    let (store, store_args): (Arc<dyn Store>, Vec<String>) = match &args.postgres {
        None => {
            let dir = tmp.path().join("server");
            let s = SqliteStore::open(&dir).map_err(|e| e.to_string())?;
            (Arc::new(s), vec!["--data".into(), dir.display().to_string()])
        }
        Some(base) => {
            let mut bytes = [0u8; 6];
            rand::rng().fill_bytes(&mut bytes);
            let schema = format!("loadgen_{}", hex::encode(bytes));
            let mut client = postgres::Client::connect(base, postgres::NoTls).map_err(|e| format!("{base}: {e}"))?;
            client
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .map_err(|e| e.to_string())?;
            schema_to_drop = Some((base.clone(), schema.clone()));
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            let s = PgStore::open(&url, 4).map_err(|e| e.to_string())?;
            (Arc::new(s), vec!["--database".into(), url])
        }
    };
    let size: Box<dyn Fn() -> u64> = match &schema_to_drop {
        None => {
            let dir = tmp.path().join("server");
            Box::new(move || {
                ["diemdanh.sqlite", "diemdanh.sqlite-wal"]
                    .iter()
                    .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
                    .map(|m| m.len())
                    .sum()
            })
        }
        Some((base, schema)) => {
            let (base, schema) = (base.clone(), schema.clone());
            Box::new(move || {
                postgres::Client::connect(&base, postgres::NoTls)
                    .and_then(|mut c| {
                        c.query_one(
                            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c
                             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
                            &[&schema],
                        )
                    })
                    .map(|r| r.get::<_, i64>(0) as u64)
                    .unwrap_or(0)
            })
        }
    };
    let result = run_with(args, store, &store_args, &*size);
    if let Some((base, schema)) = schema_to_drop {
        if let Ok(mut c) = postgres::Client::connect(&base, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
        }
    }
    result
}

fn run_with(args: &Args, store: Arc<dyn Store>, store_args: &[String], size: &dyn Fn() -> u64) -> Result<(), String> {
    // Communes of the 2025 structure, one per device, spread over every province.
    let tree = UnitTree::reference();
    let mut communes = Vec::new();
    let mut stack = tree.roots(Scheme::S2025);
    while let Some(u) = stack.pop() {
        let children = tree.children(&u);
        if children.is_empty() && !tree.ancestors(&u).is_empty() {
            communes.push(u.clone());
        }
        stack.extend(children.iter().cloned());
    }
    communes.sort();
    if communes.len() < args.devices {
        return Err(format!("{} devices but only {} communes", args.devices, communes.len()));
    }
    let step = communes.len() / args.devices;
    let mut devs = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let unit = communes[i * step].clone();
        let code = new_code();
        store
            .create_enroll_code(&unit.to_string(), &hash_secret(&canonical_code(&code)), now() + 3600)
            .map_err(|e| e.to_string())?;
        let mut token = [0u8; 16];
        rand::rng().fill_bytes(&mut token);
        let token = hex::encode(token);
        let mut actor = [0u8; 16];
        rand::rng().fill_bytes(&mut actor);
        let actor = ActorId::from(actor.to_vec());
        let id = format!("lg-{i:05}");
        store
            .redeem_enroll_code(
                &hash_secret(&canonical_code(&code)),
                &id,
                &actor.to_hex_string(),
                "loadgen",
                &hash_secret(&token),
                now(),
            )
            .map_err(|e| e.to_string())?
            .map_err(|_| "enrolment refused".to_string())?;
        let mut dev = Dev {
            id,
            token,
            unit,
            actor,
            course_id: format!("k{i:05}"),
            trainees: Vec::new(),
            course: CourseDoc::default(),
            docs: Vec::new(),
            cursor: 0,
            day: 0,
            rng: i as u64 + 1,
        };
        dev.setup(args.trainees);
        devs.push(Mutex::new(dev));
    }

    let mut nodes = Vec::new();
    for _ in 0..args.nodes {
        nodes.push(start_node(&args.server_bin, store_args)?);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
    println!(
        "loadgen: {} devices, {} trainees each, {} sessions per sync, {} concurrent, {} node(s) on {}",
        args.devices,
        args.trainees,
        args.sessions_per_sync,
        args.concurrency,
        args.nodes,
        if args.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );

    // Setup: every device sends its roster and course (not timed).
    let devs = Arc::new(devs);
    let setup_errors = drive(&devs, &urls, args.concurrency, None, 0)?;
    if setup_errors.errors > 0 {
        return Err(format!(
            "{} setup syncs failed; first: {}",
            setup_errors.errors,
            setup_errors.first_error.unwrap_or_default()
        ));
    }

    let cpu = |pids: &[u32]| -> Vec<f64> { pids.iter().map(|p| cpu_seconds(&p.to_string())).collect() };
    let (servers_before, own_before) = (cpu(&pids), cpu_seconds("self"));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let run = drive(&devs, &urls, args.concurrency, Some(deadline), args.sessions_per_sync)?;
    let elapsed = started.elapsed().max(run.elapsed);
    let servers_cpu: f64 = cpu(&pids).iter().zip(&servers_before).map(|(a, b)| a - b).sum();
    let own_cpu = cpu_seconds("self") - own_before;

    // Idle: right after the run, and once the server has dropped what it keeps in memory
    // for active documents (30 s unused, checked every 10 s).
    std::thread::sleep(Duration::from_secs(5));
    let idle_5: Vec<u64> = pids.iter().map(|p| rss_kib(*p, "VmRSS:")).collect();
    std::thread::sleep(Duration::from_secs(40));
    let idle: Vec<u64> = pids.iter().map(|p| rss_kib(*p, "VmRSS:")).collect();
    let idle_anon: Vec<u64> = pids.iter().map(|p| rss_kib(*p, "RssAnon:")).collect();
    let peak: Vec<u64> = pids.iter().map(|p| rss_kib(*p, "VmHWM:")).collect();
    let mut lat = run.latencies;
    lat.sort();
    let secs = elapsed.as_secs_f64();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| syncs | {} ({:.0}/s) |", lat.len(), lat.len() as f64 / secs);
    println!("| marks accepted | {} |", run.marks);
    println!("| marks accepted per second | {:.0} |", run.marks as f64 / secs);
    println!(
        "| sync latency p50 | {:.1} ms |",
        percentile(&lat, 0.50).as_secs_f64() * 1e3
    );
    println!(
        "| sync latency p99 | {:.1} ms |",
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| sync latency max | {:.1} ms |",
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("| errors | {} |", run.errors);
    println!(
        "| CPU: server(s) / load generator | {:.1} s / {:.1} s of {:.1} s ({:.2} ms of server CPU per sync) |",
        servers_cpu,
        own_cpu,
        secs,
        servers_cpu * 1e3 / lat.len().max(1) as f64
    );
    for (i, (((idle, anon), idle_5), peak)) in idle.iter().zip(&idle_anon).zip(&idle_5).zip(&peak).enumerate() {
        println!(
            "| node {} RSS: idle 45 s after the run (of which heap) / 5 s after / peak | {:.1} MiB ({:.1} MiB) / {:.1} MiB / {:.1} MiB |",
            i + 1,
            *idle as f64 / 1024.0,
            *anon as f64 / 1024.0,
            *idle_5 as f64 / 1024.0,
            *peak as f64 / 1024.0
        );
    }
    // What the servers projected: one row per (session, trainee) every device recorded.
    let expected: usize = devs
        .iter()
        .map(|d| d.lock().map(|d| d.day * d.trainees.len()).unwrap_or(0))
        .sum();
    let rows = store
        .counts()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|(name, _)| name == "marks")
        .map(|(_, n)| n)
        .unwrap_or(0);
    println!("| mark rows in the server's projection / recorded | {rows} / {expected} |");
    let bytes = size();
    println!(
        "| store size | {:.1} MiB ({:.0} B per mark accepted) |",
        bytes as f64 / 1048576.0,
        bytes as f64 / run.marks.max(1) as f64
    );
    if let Some(e) = run.first_error {
        println!("first error: {e}");
    }
    drop(nodes);
    if run.errors == 0 && rows as usize != expected {
        return Err(format!(
            "the server holds {rows} mark rows, the devices recorded {expected}"
        ));
    }
    Ok(())
}

struct RunStats {
    marks: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// Workers take devices in turn; each turn records a burst (unless `sessions` is 0) and
/// syncs it through node `turn % nodes`. Without a deadline every device syncs once.
fn drive(
    devs: &Arc<Vec<Mutex<Dev>>>,
    urls: &[String],
    concurrency: usize,
    deadline: Option<Instant>,
    sessions: usize,
) -> Result<RunStats, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let marks = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let (devs, next, marks, errors, first_error, stop) = (
            devs.clone(),
            next.clone(),
            marks.clone(),
            errors.clone(),
            first_error.clone(),
            stop.clone(),
        );
        let mut transports: Vec<HttpTransport> =
            urls.iter().map(|u| HttpTransport::new(u)).collect::<Result<_, _>>()?;
        handles.push(std::thread::spawn(move || {
            let mut latencies = Vec::new();
            // Bounded: a turn per device without a deadline; with one, until it passes
            // (and never more than a million turns per worker).
            for _ in 0..1_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let turn = next.fetch_add(1, Ordering::Relaxed);
                match deadline {
                    None if turn >= devs.len() => break,
                    Some(d) if Instant::now() >= d => break,
                    _ => {}
                }
                let Ok(mut dev) = devs[turn % devs.len()].lock() else {
                    break;
                };
                let n = if sessions > 0 { dev.record_burst(sessions) } else { 0 };
                let nodes = transports.len();
                let transport = &mut transports[turn % nodes];
                let t = Instant::now();
                match sync(transport, &mut dev) {
                    Ok(()) => {
                        latencies.push(t.elapsed());
                        marks.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        latencies.push(t.elapsed());
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.join().map_err(|_| "a worker panicked")?);
    }
    stop.store(true, Ordering::Relaxed);
    let first_error = first_error.lock().map(|mut f| f.take()).unwrap_or(None);
    Ok(RunStats {
        marks: marks.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        latencies,
        elapsed: started.elapsed(),
    })
}
