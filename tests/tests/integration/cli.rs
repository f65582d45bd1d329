//! The command contract, run through the real binaries exactly as written in the issue.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use diemdanh_tests::{bin, NAM_HANG};
use serde_json::Value;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(data: &Path) -> (Server, String) {
    let mut child = Command::new(bin("diemdanh-server"))
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .env("DIEMDANH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("first line");
    let url = line.trim().rsplit(' ').next().expect("url").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    (Server(child), url)
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(bin("diemdanh")).args(args).output().expect("run diemdanh");
    out
}

fn ok_json(home: &Path, args: &[&str]) -> Value {
    let mut full = vec!["--home", home.to_str().expect("utf8")];
    full.extend_from_slice(args);
    let out = run(&full);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn server_cmd(args: &[&str]) -> Output {
    Command::new(bin("diemdanh-server"))
        .args(args)
        .output()
        .expect("run server cmd")
}

#[test]
fn the_command_contract_works_end_to_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("server");
    let data_s = data.to_str().expect("utf8");
    let (mut server, url) = start_server(&data);
    let code = |_: ()| {
        let out = server_cmd(&["enroll-code", "--data", data_s, "--unit", NAM_HANG]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("code")
            .trim()
            .to_string()
    };
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    for (home, c) in [(&a, code(())), (&b, code(()))] {
        ok_json(home, &["enroll", "--server", &url, "--code", &c]);
    }
    let status = ok_json(&a, &["status", "--json"]);
    assert_eq!(status["unit"], NAM_HANG);
    assert_eq!(status["pending_changes"], 0);
    assert!(status["device_id"].is_string());
    assert!(status.get("last_sync").is_some());

    let cadre = ok_json(
        &a,
        &[
            "cadre",
            "add",
            "--unit",
            NAM_HANG,
            "--name",
            "Lò Thị Hoa",
            "--gender",
            "female",
            "--birth-year",
            "1994",
            "--ethnicity",
            "03",
            "--json",
        ],
    );
    let cadre = cadre["id"].as_str().expect("cadre id").to_string();
    let course = ok_json(
        &a,
        &[
            "course",
            "create",
            "--unit",
            NAM_HANG,
            "--title",
            "Lớp bồi dưỡng",
            "--sessions",
            "2026-12-01,2026-12-02",
            "--json",
        ],
    );
    let course_id = course["id"].as_str().expect("course id").to_string();
    assert_eq!(course["sessions"][1]["date"], "2026-12-02");
    let s2 = course["sessions"][1]["id"].as_str().expect("session").to_string();
    ok_json(&a, &["course", "enrol", "--course", &course_id, "--cadre", &cadre]);
    ok_json(
        &a,
        &[
            "mark",
            "--course",
            &course_id,
            "--session",
            "2026-12-01",
            "--all",
            "--status",
            "present",
        ],
    );
    ok_json(
        &a,
        &[
            "mark",
            "--course",
            &course_id,
            "--session",
            &s2,
            "--cadre",
            &cadre,
            "--status",
            "late",
            "--note",
            "mưa lũ",
        ],
    );
    assert_eq!(ok_json(&a, &["status", "--json"])["pending_changes"], 5);

    let stats = ok_json(&a, &["sync", "--json"]);
    assert_eq!(stats["requests"], 1);
    ok_json(&b, &["sync", "--json"]);
    // A conflict between the two devices, then its resolution.
    ok_json(
        &a,
        &[
            "mark",
            "--course",
            &course_id,
            "--session",
            &s2,
            "--cadre",
            &cadre,
            "--status",
            "absent",
        ],
    );
    ok_json(
        &b,
        &[
            "mark",
            "--course",
            &course_id,
            "--session",
            &s2,
            "--cadre",
            &cadre,
            "--status",
            "excused",
        ],
    );
    ok_json(&a, &["sync", "--json"]);
    ok_json(&b, &["sync", "--json"]);
    ok_json(&a, &["sync", "--json"]);
    for home in [&a, &b] {
        let conflicts = ok_json(home, &["conflicts", "--json"]);
        assert_eq!(conflicts.as_array().expect("array").len(), 1, "{conflicts}");
    }
    let report = server_cmd(&["report", "course", &course_id, "--data", data_s, "--json"]);
    assert!(report.status.success(), "report readable while the server runs");
    let report: Value = serde_json::from_slice(&report.stdout).expect("json");
    assert_eq!(report["conflicts"].as_array().expect("array").len(), 1);
    assert_eq!(report, ok_json(&a, &["show", "course", &course_id, "--json"]));

    ok_json(
        &b,
        &[
            "resolve",
            "--course",
            &course_id,
            "--session",
            &s2,
            "--cadre",
            &cadre,
            "--status",
            "excused",
        ],
    );
    ok_json(&b, &["sync", "--json"]);
    ok_json(&a, &["sync", "--json"]);
    let shown = ok_json(&a, &["show", "course", &course_id, "--json"]);
    for key in [
        "id",
        "title",
        "sessions",
        "trainees",
        "marks",
        "conflicts",
        "completion",
    ] {
        assert!(shown.get(key).is_some(), "show course has {key}");
    }
    assert!(shown["conflicts"].as_array().expect("array").is_empty());
    assert_eq!(shown["trainees"][0]["name"], "Lò Thị Hoa");
    assert_eq!(shown["completion"][0]["attended"], 1);
    let report = server_cmd(&["report", "course", &course_id, "--data", data_s, "--json"]);
    assert_eq!(serde_json::from_slice::<Value>(&report.stdout).expect("json"), shown);

    // Bad input gets a clear error and a non-zero exit.
    let home_s = a.to_str().expect("utf8");
    let out = run(&[
        "--home",
        home_s,
        "mark",
        "--course",
        &course_id,
        "--session",
        &s2,
        "--cadre",
        &cadre,
        "--status",
        "here",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("present, late, left_early, excused, absent"));
    let out = run(&[
        "--home",
        home_s,
        "course",
        "create",
        "--unit",
        "2025:99999",
        "--title",
        "x",
        "--sessions",
        "2026-12-01",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the reference list"));

    // Revocation is refused at once with a clear message.
    let device = status["device_id"].as_str().expect("id").to_string();
    let out = server_cmd(&["device", "revoke", "--data", data_s, "--device", &device]);
    assert!(out.status.success());
    let out = run(&["--home", home_s, "sync", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));

    // SIGTERM stops the server cleanly.
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = server.0.wait().expect("wait");
    assert!(status.success(), "clean shutdown: {status:?}");

    // With the server gone, sync says so plainly (exit 3); recording still works.
    let out = run(&["--home", b.to_str().expect("utf8"), "sync"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"));
    ok_json(
        &b,
        &[
            "mark",
            "--course",
            &course_id,
            "--session",
            &s2,
            "--cadre",
            &cadre,
            "--status",
            "present",
        ],
    );
}

#[test]
fn bundles_carry_a_sync_both_ways_through_the_commands() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("server");
    let data_s = data.to_str().expect("utf8");
    let (server, url) = start_server(&data);
    let out = server_cmd(&["enroll-code", "--data", data_s, "--unit", NAM_HANG]);
    let code = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("code")
        .trim()
        .to_string();
    let a = dir.path().join("a");
    ok_json(&a, &["enroll", "--server", &url, "--code", &code]);
    drop(server); // From here on there is no network at all.

    let cadre = ok_json(
        &a,
        &[
            "cadre",
            "add",
            "--unit",
            NAM_HANG,
            "--name",
            "Giàng A Pao",
            "--gender",
            "male",
            "--birth-year",
            "1988",
            "--json",
        ],
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    let course = ok_json(
        &a,
        &[
            "course",
            "create",
            "--unit",
            NAM_HANG,
            "--title",
            "Lớp xa",
            "--sessions",
            "2026-12-01",
            "--json",
        ],
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    ok_json(&a, &["course", "enrol", "--course", &course, "--cadre", &cadre]);
    ok_json(
        &a,
        &[
            "mark",
            "--course",
            &course,
            "--session",
            "2026-12-01",
            "--all",
            "--status",
            "present",
        ],
    );
    let stick = dir.path().join("usb-to-district.ddb");
    let summary = ok_json(
        &a,
        &["bundle", "export", "--out", stick.to_str().expect("utf8"), "--json"],
    );
    assert_eq!(summary["docs"], 3);

    let out = server_cmd(&[
        "bundle",
        "import",
        stick.to_str().expect("utf8"),
        "--data",
        data_s,
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let imported: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(imported["accepted"].as_array().expect("array").len(), 3);
    let report = server_cmd(&["report", "course", &course, "--data", data_s, "--json"]);
    let report: Value = serde_json::from_slice(&report.stdout).expect("json");
    assert_eq!(report, ok_json(&a, &["show", "course", &course, "--json"]));

    let device = ok_json(&a, &["status", "--json"])["device_id"]
        .as_str()
        .expect("id")
        .to_string();
    let back = dir.path().join("usb-to-commune.dds");
    let out = server_cmd(&[
        "bundle",
        "export",
        "--device",
        &device,
        "--out",
        back.to_str().expect("utf8"),
        "--data",
        data_s,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let applied = ok_json(&a, &["bundle", "import", back.to_str().expect("utf8"), "--json"]);
    // The device never synced, so the server's bundle holds its three documents.
    assert_eq!(applied["docs"], 3);
    // A damaged file is refused with a clear message and changes nothing.
    let mut bytes = std::fs::read(&stick).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&stick, &bytes).expect("write");
    let out = server_cmd(&["bundle", "import", stick.to_str().expect("utf8"), "--data", data_s]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("altered"));
}
