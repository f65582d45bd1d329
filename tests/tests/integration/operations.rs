//! Operations through the real `diemdanh-server` binary: graceful shutdown on SIGTERM and
//! SIGINT with a sync in flight (slowed by the user-space link emulator), the drain bound,
//! `/metrics`, `/healthz` and `/readyz` over a socket, settings from flags, environment
//! and a TOML file, and an online backup restored into a new folder and served.
//!
//! Every process started here is stopped (killed when its guard drops), every wait is
//! bounded, and every address is 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use diemdanh_tests::netem::{Netem, Profile, Shape};
use diemdanh_tests::rawhttp::{self, metric, metric_sum};
use diemdanh_tests::{bin, NAM_HANG};

use super::crash_points::{
    converged, device_cmd, enrol_and_setup, ok_json, ok_text, pending, server_cmd, server_report,
};

/// A `diemdanh-server serve` child, killed and reaped when dropped; its log in a file.
struct Server {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = data.with_extension(format!("log-{}", rand::random::<u32>()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut cmd = Command::new(bin("diemdanh-server"));
            cmd.args(["serve", "--data"])
                .arg(data)
                .args(["--listen", listen])
                .args(args)
                .env_remove(sync_core::failpoint::ENV)
                .env("DIEMDANH_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).expect("log file"));
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("start server");
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
            if let Some(url) = line
                .trim()
                .rsplit(' ')
                .next()
                .filter(|u| u.starts_with("http://127.0.0.1:"))
            {
                return Server {
                    child: Some(child),
                    url: url.to_string(),
                    log,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "the server did not start on {listen}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits at most `limit` for the process to end.
    fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        let r = rawhttp::get(&self.url, "/metrics", &[]).expect("GET /metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// Polls /metrics (bounded) until a sync is being answered.
    fn wait_for_sync_in_flight(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if metric(&self.metrics(), "diemdanh_syncs_in_flight").unwrap_or(0.0) >= 1.0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no sync reached the server within {limit:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child killed and reaped when dropped.
struct Guard(Option<Child>);

impl Guard {
    fn wait_output(&mut self, limit: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + limit;
        let child = self.0.as_mut().expect("running");
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let mut out = String::new();
                let mut err = String::new();
                if let Some(mut s) = child.stdout.take() {
                    let _ = s.read_to_string(&mut out);
                }
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                self.0 = None;
                return (status, out, err);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the process did not finish within {limit:?}");
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn listen_of(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// A roll call of every trainee in both sessions of the setup course.
fn roll_call(home: &Path, course: &str, sessions: &[String]) {
    for (i, session) in sessions.iter().enumerate() {
        let status = if i == 0 { "present" } else { "late" };
        ok_text(
            home,
            &[
                "mark",
                "--course",
                course,
                "--session",
                session,
                "--all",
                "--status",
                status,
            ],
        );
    }
}

#[test]
fn sigterm_mid_sync_lets_the_sync_finish_and_the_server_exit_zero_within_the_drain_bound() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("server");
    let home = dir.path().join("tablet");
    let mut server = Server::start(&data, "127.0.0.1:0", &["--shutdown-timeout", "20s"], &[]);
    let listen = listen_of(&server.url);
    // A slow uplink (1,500 bytes/s, DESIGN.md's 2G is 50 kbit/s up): the first push of a
    // course of 40 trainees takes seconds to upload, so SIGTERM lands mid-request.
    let profile = Profile::asymmetric("slow-up", Shape::new(Duration::ZERO, Some(1_500)), Shape::CLEAR);
    let link = Netem::in_front_of(&server.url, profile).expect("netem");
    let s = enrol_and_setup(&data, link.url(), &home, 40);
    roll_call(&home, &s.course, &s.sessions);
    assert!(pending(&home) > 0);

    let before = link.counters();
    let mut sync = Guard(Some(
        device_cmd(&home, &["sync", "--retries", "0"], None)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sync"),
    ));
    server.wait_for_sync_in_flight(Duration::from_secs(30));
    let signalled = Instant::now();
    server.signal("TERM");

    // The listener closes at once: no new connection is taken while the sync finishes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(&listen).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the server still accepts connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, out, err) = sync.wait_output(Duration::from_secs(60));
    assert!(status.success(), "the sync in flight failed: {out} {err}");
    let exit = server
        .wait_for_exit(Duration::from_secs(25))
        .expect("the server exits within the drain bound (20 s) and a margin");
    assert!(exit.success(), "exit status {exit:?}: {}", server.log());
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(25), "{took:?}");
    let uploaded = link.counters().since(&before).up_bytes;
    assert!(
        took > Duration::from_millis(500) && uploaded > 1_500,
        "the sync was really in flight when the signal came ({took:?}, {uploaded} bytes up)"
    );
    let log = server.log();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(!log.contains("drain timeout"), "nothing was cut: {log}");
    assert_eq!(pending(&home), 0, "the device has nothing pending: the answer arrived");

    // Against a restarted server the device has nothing to send, and both sides agree.
    let restarted = Server::start(&data, &listen, &[], &[]);
    ok_text(&home, &["sync"]);
    let report = converged(&data, &home, &s.course);
    assert_eq!(report["marks"].as_array().map(Vec::len), Some(80));
    drop(restarted);
}

#[test]
fn sigint_with_a_stalled_request_cuts_it_at_the_drain_timeout_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("server");
    let mut server = Server::start(&data, "127.0.0.1:0", &["--shutdown-timeout", "1s"], &[]);
    // Headers of a sync and a few bytes of a body that never comes.
    let mut stalled = std::net::TcpStream::connect(listen_of(&server.url)).expect("connect");
    stalled
        .write_all(
            b"POST /v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\nContent-Length: 100000\r\n\r\n0123",
        )
        .expect("send");
    server.wait_for_sync_in_flight(Duration::from_secs(10));
    let signalled = Instant::now();
    server.signal("INT");
    let exit = server
        .wait_for_exit(Duration::from_secs(6))
        .expect("the server exits about 1 s after SIGINT, not when the client gives up");
    assert!(exit.success(), "{exit:?}: {}", server.log());
    let took = signalled.elapsed();
    assert!(took >= Duration::from_millis(900), "it waited for the drain: {took:?}");
    let log = server.log();
    assert!(log.contains("SIGINT") && log.contains("drain timeout"), "{log}");
}

#[test]
fn metrics_health_and_readiness_over_http_count_a_real_sync() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("server");
    let home = dir.path().join("tablet");
    let server = Server::start(&data, "127.0.0.1:0", &[], &[]);
    let health = rawhttp::get(&server.url, "/healthz", &[]).expect("healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let ready = rawhttp::get(&server.url, "/readyz", &[]).expect("readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ready.body).expect("json")["status"],
        "ready"
    );

    let s = enrol_and_setup(&data, &server.url, &home, 5);
    roll_call(&home, &s.course, &s.sessions);
    ok_text(&home, &["sync"]);
    // One more mark, pushed as a change on top of what the server has.
    ok_text(
        &home,
        &[
            "mark",
            "--course",
            &s.course,
            "--session",
            &s.sessions[0],
            "--cadre",
            &s.cadres[0],
            "--status",
            "absent",
        ],
    );
    ok_text(&home, &["sync"]);

    let r = rawhttp::get(&server.url, "/metrics", &[]).expect("metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type").is_some_and(|c| c.contains("openmetrics-text")),
        "{:?}",
        r.headers
    );
    let text = r.body;
    assert_eq!(metric(&text, "diemdanh_marks_accepted_total"), Some(11.0), "{text}");
    assert_eq!(metric(&text, "diemdanh_devices_seen"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "diemdanh_pushes_refused_total"), Some(0.0), "{text}");
    assert!(
        metric(&text, "diemdanh_pushes_accepted_total").unwrap_or(0.0) >= 3.0,
        "{text}"
    );
    let db = std::fs::metadata(data.join("diemdanh.sqlite")).expect("store").len() as f64;
    assert!(metric(&text, "diemdanh_store_bytes").unwrap_or(0.0) >= db, "{text}");
    // Devices sync on `POST /` (compact bodies) and fall back to /v1/sync.
    let syncs = metric_sum(
        &text,
        "diemdanh_http_requests_total",
        &["route=\"/v1/sync\"", "method=\"POST\"", "class=\"2xx\""],
    ) + metric_sum(
        &text,
        "diemdanh_http_requests_total",
        &["route=\"/\"", "method=\"POST\"", "class=\"2xx\""],
    );
    assert!(syncs >= 2.0, "{text}");
    assert_eq!(
        metric(&text, "diemdanh_sync_duration_seconds_count"),
        Some(syncs),
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "diemdanh_http_requests_total",
            &["route=\"/v1/enroll\"", "class=\"2xx\""]
        ),
        1.0
    );
    // A path no route has counts under one label, whatever the path.
    let _ = rawhttp::get(&server.url, "/no/such/Lò-Thị-Hoa", &[]).expect("404");
    let text = server.metrics();
    assert_eq!(
        metric_sum(
            &text,
            "diemdanh_http_requests_total",
            &["route=\"unmatched\"", "class=\"4xx\""]
        ),
        1.0
    );
    assert!(!text.contains("no/such"), "{text}");
    let log = server.log();
    assert!(log.contains("request_id="), "{log}");
    assert!(log.contains("route=/ ") || log.contains("route=/v1/sync"), "{log}");
    assert!(!log.contains("Lò"), "a path a client typed is not logged: {log}");
    assert!(!log.contains('\u{1b}'), "no terminal colours in a log file");
}

#[test]
fn a_metrics_token_set_in_the_environment_protects_metrics_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let token = "metrics-token-0123456789";
    let server = Server::start(
        &dir.path().join("server"),
        "127.0.0.1:0",
        &["--log-format", "json"],
        &[("DIEMDANH_METRICS_TOKEN", token)],
    );
    let open = rawhttp::get(&server.url, "/metrics", &[]).expect("metrics");
    assert_eq!(open.status, 401);
    assert!(open.body.contains("metrics_token"), "{}", open.body);
    let wrong = rawhttp::get(
        &server.url,
        "/metrics",
        &[("Authorization", "Bearer wrong-token-0123456789")],
    )
    .expect("m");
    assert_eq!(wrong.status, 401);
    let auth = format!("Bearer {token}");
    let ok = rawhttp::get(&server.url, "/metrics", &[("Authorization", &auth)]).expect("metrics");
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("diemdanh_http_requests_total"));
    assert_eq!(rawhttp::get(&server.url, "/healthz", &[]).expect("h").status, 200);
    assert_eq!(rawhttp::get(&server.url, "/readyz", &[]).expect("r").status, 200);
    let log = server.log();
    assert!(!log.contains(token), "the token is not logged");
    // JSON logs: one object per line, the request's span fields in `span`.
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refused = lines
        .iter()
        .find(|v| v["fields"]["message"] == "answered" && v["span"]["status"] == 401)
        .unwrap_or_else(|| panic!("no answered line for the 401: {log}"));
    assert_eq!(refused["span"]["route"], "/metrics");
    assert_eq!(refused["span"]["request_id"].as_str().map(str::len), Some(16));
}

fn print_config(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(bin("diemdanh-server"));
    cmd.arg("serve").args(args).arg("--print-config");
    for (k, _) in std::env::vars() {
        if k.starts_with("DIEMDANH_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run diemdanh-server")
}

#[test]
fn settings_come_from_flags_then_environment_then_the_file_then_defaults() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9101\"\nlog_format = \"json\"\nshutdown_timeout = \"7s\"\ndata = \"store\"\nsync_burst = 9\nmetrics_token = \"file-token-0123456789\"\n",
    )
    .expect("write");
    let cfg = file.to_str().expect("utf8");
    let out = print_config(
        &["--config", cfg, "--listen", "127.0.0.1:9103"],
        &[
            ("DIEMDANH_LISTEN", "127.0.0.1:9102"),
            ("DIEMDANH_LOG_FORMAT", "text"),
            ("DIEMDANH_REQUEST_TIMEOUT", "45s"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("toml");
    let get = |k: &str| {
        printed[k]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| printed[k].to_string())
    };
    assert_eq!(
        get("listen"),
        "127.0.0.1:9103",
        "a flag beats the environment and the file"
    );
    assert_eq!(get("log_format"), "text", "the environment beats the file");
    assert_eq!(get("request_timeout"), "45s", "the environment beats the default");
    assert_eq!(get("shutdown_timeout"), "7s", "the file beats the default");
    assert_eq!(get("sync_burst"), "9");
    assert_eq!(get("sync_per_second"), "10", "the default");
    assert_eq!(
        PathBuf::from(get("data")),
        dir.path().join("store"),
        "a path in the file is relative to the file"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("file-token"),
        "the token is hidden"
    );

    // The file's own DIEMDANH_CONFIG variable works like --config.
    let out = print_config(&[], &[("DIEMDANH_CONFIG", cfg)]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("listen = \"127.0.0.1:9101\""));
}

#[test]
fn an_unknown_or_bad_setting_in_the_file_stops_the_server_with_its_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("server.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9101\"\nshutdown_timout = \"7s\"\n").expect("write");
    let out = print_config(&["--config", file.to_str().expect("utf8")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shutdown_timout") && err.contains("server.toml"), "{err}");

    std::fs::write(&file, "sync_per_second = \"fast\"\n").expect("write");
    let out = print_config(&["--config", file.to_str().expect("utf8")], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync_per_second"));

    let out = print_config(
        &["--config", dir.path().join("missing.toml").to_str().expect("utf8")],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn an_online_backup_restored_into_a_new_folder_serves_the_same_report() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("server");
    let home = dir.path().join("tablet");
    let server = Server::start(&data, "127.0.0.1:0", &[], &[]);
    let s = enrol_and_setup(&data, &server.url, &home, 6);
    roll_call(&home, &s.course, &s.sessions);
    ok_text(&home, &["sync"]);
    let original = server_report(&data, &s.course);

    // Taken while the server runs, with the server's WAL holding recent commits.
    let backup = dir.path().join("backup.sqlite");
    let out = server_cmd(&[
        "backup",
        "--data",
        data.to_str().expect("utf8"),
        "--out",
        backup.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("integrity ok"));
    // The server still serves after the backup.
    ok_text(&home, &["sync"]);
    let again = server_cmd(&[
        "backup",
        "--data",
        data.to_str().expect("utf8"),
        "--out",
        backup.to_str().expect("utf8"),
    ]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "an existing backup is not overwritten without --force"
    );

    // Refused: over the running server's folder, and a file that is not a store.
    let refused = server_cmd(&[
        "restore",
        "--data",
        data.to_str().expect("utf8"),
        "--from",
        backup.to_str().expect("utf8"),
        "--force",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is running"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(&junk, b"PK\x03\x04 a spreadsheet, not a store".repeat(100)).expect("write");
    let restored = dir.path().join("restored");
    let refused = server_cmd(&[
        "restore",
        "--data",
        restored.to_str().expect("utf8"),
        "--from",
        junk.to_str().expect("utf8"),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("not a diemdanh store") && err.contains("junk.sqlite"),
        "{err}"
    );

    let out = server_cmd(&[
        "restore",
        "--data",
        restored.to_str().expect("utf8"),
        "--from",
        backup.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check: String = rusqlite::Connection::open(restored.join("diemdanh.sqlite"))
        .expect("open")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");

    // Served, the restored store answers a new device with the same course.
    drop(server);
    let second = Server::start(&restored, "127.0.0.1:0", &[], &[]);
    assert_eq!(rawhttp::get(&second.url, "/readyz", &[]).expect("readyz").status, 200);
    assert_eq!(server_report(&restored, &s.course), original);
    let other = dir.path().join("other-tablet");
    let code = String::from_utf8_lossy(
        &server_cmd(&[
            "enroll-code",
            "--data",
            restored.to_str().expect("utf8"),
            "--unit",
            NAM_HANG,
        ])
        .stdout,
    )
    .lines()
    .last()
    .expect("code")
    .trim()
    .to_string();
    ok_text(&other, &["enroll", "--server", &second.url, "--code", &code]);
    ok_text(&other, &["sync"]);
    assert_eq!(ok_json(&other, &["show", "course", &s.course, "--json"]), original);
}

#[test]
fn on_postgresql_readyz_answers_and_metrics_report_the_database_size() {
    let Some(schema) = diemdanh_tests::pgtest::TestSchema::create("operations::postgres") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(
        &dir.path().join("unused"),
        "127.0.0.1:0",
        &["--database", &schema.url],
        &[],
    );
    let ready = rawhttp::get(&server.url, "/readyz", &[]).expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let bytes = metric(&server.metrics(), "diemdanh_store_bytes").expect("store size");
    assert!(bytes > 100_000.0, "pg_database_size of a migrated database: {bytes}");
    drop(server);
}

/// Backups taken while a device records and syncs in a loop are each whole: integrity
/// ok (checked by `backup`), openable as a store, and each holds at least what the one
/// before it held.
#[test]
fn backups_taken_during_syncs_are_each_a_whole_store() {
    use diemdanh_tests::TestServer;
    use sync_core::model::MarkStatus;

    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start(&dir.path().join("server"));
    let mut d = server.enrolled_device(&dir.path().join("tablet"), NAM_HANG);
    let (course, cadres) = super::common::setup_course(&mut d, NAM_HANG, 12, 10);
    server.sync(&mut d).expect("first sync");
    let url = server.url.clone();
    let writer = std::thread::spawn(move || {
        let mut t = diemdanh::HttpTransport::new(&url).expect("transport");
        for day in 1..=10 {
            let date = format!("2026-12-{day:02}");
            d.mark_all(&course.id, &date, MarkStatus::Present).expect("roll call");
            for c in cadres.iter().take(3) {
                d.mark(&course.id, &date, c, MarkStatus::Late, None).expect("mark");
            }
            d.sync(&mut t, &mut |_| true).expect("sync");
        }
    });
    let mut last = 0i64;
    let mut taken = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !writer.is_finished() && taken < 20 && Instant::now() < deadline {
        let out = dir.path().join(format!("b{taken}.sqlite"));
        let info = diemdanh_server::sqlite::backup(&server.data, &out).expect("backup during syncs");
        assert_eq!(info.schema_version, diemdanh_server::sqlite::schema_version());
        let changes: i64 = rusqlite::Connection::open(&out)
            .expect("open the copy")
            .query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0))
            .expect("count");
        assert!(changes >= last, "a later backup holds less: {changes} < {last}");
        last = changes;
        taken += 1;
    }
    writer.join().expect("writer");
    assert!(taken >= 2, "backups ran during the syncs ({taken})");
    let out = dir.path().join("final.sqlite");
    diemdanh_server::sqlite::backup(&server.data, &out).expect("final backup");
    let restored = dir.path().join("restored");
    diemdanh_server::backup::restore(&restored, &out, false, 1).expect("restore");
    let live = server.store();
    let copy = diemdanh_server::SqliteStore::open(&restored).expect("open the restored store");
    use diemdanh_server::Store;
    assert_eq!(copy.counts().expect("counts"), live.counts().expect("counts"));
    server.stop();
}
