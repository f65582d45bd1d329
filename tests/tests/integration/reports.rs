//! Reports and their exports, through the real `diemdanh-server report` commands on a
//! store filled by devices over real syncs: the XLSX is opened with calamine and its
//! cells checked, the CSV's byte-order mark and numbers checked, and every format is
//! held to the same numbers as the JSON.

use std::path::Path;
use std::process::{Command, Output};

use calamine::{Data, Reader, Xlsx};
use diemdanh_tests::{bin, TestServer, HUA_BUM, NAM_HANG};
use serde_json::Value;
use sync_core::device::{Device, NewSession};
use sync_core::model::{Cadre, Category, Gender, MarkStatus, Programme, TheoryLevel};

use crate::common::meta;

fn report(args: &[&str]) -> Output {
    Command::new(bin("diemdanh-server"))
        .arg("report")
        .args(args)
        .output()
        .expect("run diemdanh-server report")
}

fn ok(args: &[&str]) -> String {
    let out = report(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("json output")
}

fn person(name: &str, gender: Gender, birth_year: u16, ethnicity: &str, category: Category) -> Cadre {
    Cadre {
        name: name.into(),
        gender,
        birth_year,
        ethnicity: Some(ethnicity.into()),
        category: Some(category),
        position: None,
        qualification: Some("Đại học".into()),
        theory_level: Some(TheoryLevel::TrungCap),
        state_management: None,
    }
}

struct Scenario {
    server: TestServer,
    course: String,
    /// Hoa, Dình, Mai: Hoa attends everything, Dình 3 of 5, Mai 4 of 5.
    cadres: Vec<String>,
    a: Device,
    sessions: Vec<String>,
}

/// Nậm Hàng: one course of 5 sessions (1-5 December 2026), three trainees; a second
/// device marks one key differently offline, so one conflict is pending. Hua Bum: one
/// course of 2 sessions with two trainees, all present.
fn scenario(dir: &Path) -> Scenario {
    let server = TestServer::start(&dir.join("server"));
    let mut a = server.enrolled_device(&dir.join("a"), NAM_HANG);
    let cadres: Vec<String> = [
        person("Lò Thị Hoa", Gender::Female, 1994, "03", Category::CongChuc),
        person("Vàng A Dình", Gender::Male, 1985, "35", Category::CanBo),
        person("Nguyễn Thị Mai", Gender::Female, 1962, "01", Category::KhongChuyenTrach),
    ]
    .into_iter()
    .map(|c| a.add_cadre(NAM_HANG, c).expect("cadre"))
    .collect();
    let mut m = meta("Bồi dưỡng kiến thức quản lý nhà nước");
    m.programme = Some(Programme::StateManagement);
    let sessions = (1..=5)
        .map(|i| NewSession {
            date: format!("2026-12-0{i}"),
            ..Default::default()
        })
        .collect();
    let course = a.create_course(NAM_HANG, m, sessions).expect("course");
    for c in &cadres {
        a.enrol(&course.id, c).expect("enrol");
    }
    let sessions: Vec<String> = course.sessions.iter().map(|s| s.id.clone()).collect();
    for s in &sessions {
        a.mark_all(&course.id, s, MarkStatus::Present).expect("roll call");
    }
    let dinh = [
        MarkStatus::Present,
        MarkStatus::Late,
        MarkStatus::LeftEarly,
        MarkStatus::Excused,
        MarkStatus::Absent,
    ];
    for (s, st) in sessions.iter().zip(dinh) {
        a.mark(&course.id, s, &cadres[1], st, None).expect("mark");
    }
    a.mark(&course.id, &sessions[4], &cadres[2], MarkStatus::Absent, None)
        .expect("mark");
    server.sync(&mut a).expect("sync a");

    // The conflict: device b has everything, then both mark Hoa at session 1 offline.
    let mut b = server.enrolled_device(&dir.join("b"), NAM_HANG);
    server.sync(&mut b).expect("sync b");
    a.mark(&course.id, &sessions[0], &cadres[0], MarkStatus::Late, None)
        .expect("a marks");
    b.mark(&course.id, &sessions[0], &cadres[0], MarkStatus::Absent, None)
        .expect("b marks");
    server.sync(&mut a).expect("sync a");
    server.sync(&mut b).expect("sync b");

    let mut h = server.enrolled_device(&dir.join("h"), HUA_BUM);
    let hb: Vec<String> = [
        person("Giàng A Páo", Gender::Male, 1999, "25", Category::CongChuc),
        person("Sùng Thị Dợ", Gender::Female, 1975, "25", Category::CanBo),
    ]
    .into_iter()
    .map(|c| h.add_cadre(HUA_BUM, c).expect("cadre"))
    .collect();
    let mut m = meta("Tiếng Mông cho cán bộ");
    m.programme = Some(Programme::EthnicLanguage);
    let hc = h
        .create_course(
            HUA_BUM,
            m,
            vec![
                NewSession {
                    date: "2026-12-10".into(),
                    ..Default::default()
                },
                NewSession {
                    date: "2026-12-11".into(),
                    ..Default::default()
                },
            ],
        )
        .expect("course");
    for c in &hb {
        h.enrol(&hc.id, c).expect("enrol");
    }
    for s in &hc.sessions {
        h.mark_all(&hc.id, &s.id, MarkStatus::Present).expect("roll call");
    }
    server.sync(&mut h).expect("sync h");
    Scenario {
        server,
        course: course.id,
        cadres,
        a,
        sessions,
    }
}

fn sheet(path: &Path, name: &str) -> calamine::Range<Data> {
    let mut wb: Xlsx<_> = calamine::open_workbook(path).expect("open xlsx");
    wb.worksheet_range(name).expect("sheet")
}

fn text(r: &calamine::Range<Data>, row: u32, col: u32) -> String {
    match r.get_value((row, col)) {
        Some(Data::String(s)) => s.clone(),
        other => panic!("({row}, {col}) is not text: {other:?}"),
    }
}

fn num(r: &calamine::Range<Data>, row: u32, col: u32) -> f64 {
    match r.get_value((row, col)) {
        Some(Data::Float(x)) => *x,
        Some(Data::Int(n)) => *n as f64,
        other => panic!("({row}, {col}) is not a number: {other:?}"),
    }
}

/// The CSV without its BOM, as records; fails when the BOM is missing.
fn csv_records(path: &Path) -> Vec<Vec<String>> {
    let bytes = std::fs::read(path).expect("read csv");
    assert!(
        bytes.starts_with(b"\xEF\xBB\xBF"),
        "{} has no UTF-8 BOM",
        path.display()
    );
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&bytes[3..])
        .records()
        .map(|r| r.expect("record").iter().map(str::to_string).collect())
        .collect()
}

fn header_index(r: &calamine::Range<Data>, header: &str) -> u32 {
    (0..r.width() as u32)
        .find(|c| matches!(r.get_value((0, *c)), Some(Data::String(s)) if s == header))
        .unwrap_or_else(|| panic!("no column {header}"))
}

#[test]
fn the_course_report_is_the_same_in_json_xlsx_and_csv() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = scenario(dir.path());
    let data = s.server.data.to_str().expect("utf8").to_string();
    let c = s.course.as_str();

    // The contract README uses still answers.
    let old = json(&["course", c, "--data", &data, "--json"]);
    let j = json(&["course", c, "--data", &data, "--format", "json"]);
    assert_eq!(old, j);
    assert_eq!(j["conflicts"].as_array().expect("conflicts").len(), 1);
    let completion = j["completion"].as_array().expect("completion");
    let by_cadre = |id: &str| completion.iter().find(|x| x["cadre"] == id).expect("row").clone();
    assert_eq!(by_cadre(&s.cadres[1])["attended"], 3);
    assert_eq!(by_cadre(&s.cadres[1])["ratio"], 0.6);
    assert_eq!(by_cadre(&s.cadres[1])["completed"], false);
    assert_eq!(by_cadre(&s.cadres[2])["completed"], true);

    let xlsx = dir.path().join("course.xlsx");
    ok(&[
        "course",
        c,
        "--data",
        &data,
        "--format",
        "xlsx",
        "--out",
        xlsx.to_str().expect("utf8"),
    ]);
    let wb: Xlsx<_> = calamine::open_workbook(&xlsx).expect("open");
    assert_eq!(
        wb.sheet_names(),
        vec!["Điểm danh", "Buổi học", "Xung đột chờ xử lý", "Thông tin lớp"]
    );
    let m = sheet(&xlsx, "Điểm danh");
    assert_eq!(text(&m, 0, 2), "Họ và tên");
    assert_eq!(text(&m, 0, 3), "01/12/2026");
    assert_eq!(m.height(), 4, "header and three trainees");
    let ratio_col = header_index(&m, "Tỷ lệ dự (%)");
    let attended_col = header_index(&m, "Số buổi dự");
    let done_col = header_index(&m, "Hoàn thành");
    let row_of = |id: &str| (1..4).find(|r| text(&m, *r, 1) == id).expect("trainee row");
    let dinh = row_of(&s.cadres[1]);
    assert_eq!(text(&m, dinh, 2), "Vàng A Dình");
    let statuses: Vec<String> = (3..8).map(|col| text(&m, dinh, col)).collect();
    assert_eq!(statuses, ["Có mặt", "Đi muộn", "Về sớm", "Vắng có phép", "Vắng"]);
    assert_eq!(num(&m, dinh, attended_col), 3.0);
    assert_eq!(num(&m, dinh, ratio_col), 60.0);
    assert_eq!(text(&m, dinh, done_col), "Chưa đạt");
    let hoa = row_of(&s.cadres[0]);
    assert!(text(&m, hoa, 3).starts_with("Xung đột: "), "{}", text(&m, hoa, 3));
    let mai = row_of(&s.cadres[2]);
    assert_eq!(num(&m, mai, ratio_col), 80.0);
    assert_eq!(text(&m, mai, done_col), "Đạt");
    for (row, cadre) in [(dinh, 1), (hoa, 0), (mai, 2)] {
        let r = by_cadre(&s.cadres[cadre]);
        let ratio = r["ratio"].as_f64().expect("ratio");
        assert!((num(&m, row, ratio_col) - ratio * 100.0).abs() < 1e-9);
    }
    let conflicts = sheet(&xlsx, "Xung đột chờ xử lý");
    assert_eq!(conflicts.height(), 2);
    assert_eq!(text(&conflicts, 1, 2), "Lò Thị Hoa");

    let out = dir.path().join("course.csv");
    let printed = ok(&[
        "course",
        c,
        "--data",
        &data,
        "--format",
        "csv",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert!(printed.contains("course-sessions.csv"), "{printed}");
    let rows = csv_records(&out);
    assert_eq!(rows[0][2], "Họ và tên");
    let ratio_col = ratio_col as usize;
    let dinh_row = rows.iter().find(|r| r[1] == s.cadres[1]).expect("csv row");
    assert_eq!(dinh_row[attended_col as usize], "3");
    assert_eq!(dinh_row[ratio_col], "60");
    assert_eq!(dinh_row[4], "Đi muộn");
    let sessions = csv_records(&dir.path().join("course-sessions.csv"));
    assert_eq!(sessions.len(), 6);
    assert_eq!(sessions[1][2], "01/12/2026");
}

fn summary_numbers(r: &calamine::Range<Data>) -> Vec<f64> {
    (3..11).map(|c| num(r, 1, c)).collect()
}

fn figures(v: &Value) -> Vec<f64> {
    [
        "courses",
        "trainees",
        "places",
        "trainee_sessions",
        "attended",
        "attendance_rate",
        "finished_places",
        "completed",
    ]
    .iter()
    .map(|k| v[*k].as_f64().unwrap_or_else(|| panic!("{k} in {v}")))
    .collect()
}

#[test]
fn unit_and_annual_reports_agree_across_formats_schemes_and_the_course_report() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = scenario(dir.path());
    let data = s.server.data.to_str().expect("utf8").to_string();
    let period = ["--from", "2026-12-01", "--to", "2026-12-31", "--data", &data];
    let unit = |u: &str| {
        let mut a = vec!["unit", u];
        a.extend_from_slice(&period);
        a.extend_from_slice(&["--format", "json"]);
        json(&a)
    };

    let commune = unit(NAM_HANG);
    // 3 trainees x 5 sessions; attended: Hoa 5 (her conflict's current value is a
    // present-like or absent status: read it from the course report), Dình 3, Mai 4.
    let course = json(&["course", &s.course, "--data", &data, "--json"]);
    let attended: u64 = course["completion"]
        .as_array()
        .expect("completion")
        .iter()
        .map(|c| c["attended"].as_u64().expect("attended"))
        .sum();
    let completed = course["completion"]
        .as_array()
        .expect("completion")
        .iter()
        .filter(|c| c["completed"] == true)
        .count() as f64;
    let t = &commune["totals"];
    assert_eq!(
        figures(t),
        vec![
            1.0,
            3.0,
            3.0,
            15.0,
            attended as f64,
            (attended as f64 * 10_000.0 / 15.0).round() / 100.0,
            3.0,
            completed
        ]
    );

    let province = unit("2025:12");
    assert_eq!(province["totals"]["courses"], 2);
    assert_eq!(province["totals"]["trainees"], 5);
    assert_eq!(province["totals"]["trainee_sessions"], 19);
    // The former Nậm Nhùn district (legacy scheme) holds both communes' courses.
    let legacy = unit("legacy:112");
    assert_eq!(legacy["totals"], province["totals"]);
    // Before the courses: nothing held.
    let before = json(&[
        "unit",
        "2025:12",
        "--from",
        "2026-01-01",
        "--to",
        "2026-11-30",
        "--data",
        &data,
        "--format",
        "json",
    ]);
    assert_eq!(before["totals"]["courses"], 0);

    let breakdown = |v: &Value, dim: &str, key: &str| -> Value {
        v["breakdowns"]
            .as_array()
            .expect("breakdowns")
            .iter()
            .find(|b| b["dimension"] == dim)
            .expect("dimension")["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("{dim}/{key}"))
            .clone()
    };
    assert_eq!(breakdown(&province, "gender", "female")["trainees"], 3);
    assert_eq!(breakdown(&province, "gender", "male")["trainees"], 2);
    assert_eq!(breakdown(&province, "ethnic_minority", "minority")["trainees"], 4);
    assert_eq!(breakdown(&province, "ethnic_minority", "kinh")["trainees"], 1);
    // Ages at the end of 2026: 32, 41, 64, 27, 51.
    for (band, n) in [("<30", 1), ("30-39", 1), ("40-49", 1), ("50-59", 1), (">=60", 1)] {
        assert_eq!(breakdown(&province, "age_band", band)["trainees"], n, "{band}");
    }
    assert_eq!(breakdown(&province, "category", "can_bo")["trainees"], 2);
    assert_eq!(breakdown(&province, "theory_level", "trung_cap")["trainees"], 5);
    assert_eq!(breakdown(&province, "qualification", "Đại học")["trainees"], 5);
    assert_eq!(breakdown(&province, "theory_level", "cao_cap")["trainees"], 0);

    let xlsx = dir.path().join("unit.xlsx");
    let mut a = vec!["unit", "2025:12"];
    a.extend_from_slice(&period);
    a.extend_from_slice(&["--format", "xlsx", "--out", xlsx.to_str().expect("utf8")]);
    ok(&a);
    let summary = sheet(&xlsx, "Tổng hợp");
    assert_eq!(text(&summary, 0, 0), "Đơn vị");
    assert_eq!(text(&summary, 1, 0), "Tỉnh Lai Châu");
    assert_eq!(summary_numbers(&summary), figures(&province["totals"]));
    let b = sheet(&xlsx, "Phân tổ");
    let female = (1..b.height() as u32)
        .find(|r| text(&b, *r, 0) == "Theo giới tính" && text(&b, *r, 1) == "Nữ")
        .expect("female row");
    assert_eq!(num(&b, female, 3), 3.0);

    let out = dir.path().join("unit.csv");
    let mut a = vec!["unit", "2025:12"];
    a.extend_from_slice(&period);
    a.extend_from_slice(&["--format", "csv", "--out", out.to_str().expect("utf8")]);
    ok(&a);
    let rows = csv_records(&out);
    assert_eq!(rows[0][0], "Đơn vị");
    let csv_numbers: Vec<f64> = rows[1][3..11].iter().map(|x| x.parse().expect("number")).collect();
    assert_eq!(csv_numbers, figures(&province["totals"]));
    assert!(dir.path().join("unit-breakdown.csv").exists());

    let annual = json(&[
        "annual", "2025:12", "--year", "2026", "--data", &data, "--format", "json",
    ]);
    let row = |p: &str| {
        annual["programmes"]
            .as_array()
            .expect("programmes")
            .iter()
            .find(|r| r["programme"] == p)
            .expect("programme row")
            .clone()
    };
    let qlnn = row("quan_ly_nha_nuoc");
    assert_eq!(
        (
            qlnn["places"].as_u64(),
            qlnn["women"].as_u64(),
            qlnn["ethnic_minority"].as_u64()
        ),
        (Some(3), Some(2), Some(2))
    );
    let tdt = row("tieng_dan_toc");
    assert_eq!(
        (
            tdt["places"].as_u64(),
            tdt["women"].as_u64(),
            tdt["ethnic_minority"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );
    assert_eq!(annual["total"]["places"], 5);
    assert_eq!(
        annual["programmes"].as_array().expect("all").len(),
        Programme::ALL.len()
    );
    let xlsx = dir.path().join("annual.xlsx");
    ok(&[
        "annual",
        "2025:12",
        "--year",
        "2026",
        "--data",
        &data,
        "--format",
        "xlsx",
        "--out",
        xlsx.to_str().expect("utf8"),
    ]);
    let a = sheet(&xlsx, "Năm 2026");
    let qrow = (1..a.height() as u32)
        .find(|r| text(&a, *r, 0) == "Quản lý nhà nước")
        .expect("row");
    assert_eq!((num(&a, qrow, 2), num(&a, qrow, 3), num(&a, qrow, 4)), (3.0, 2.0, 2.0));
    let last = a.height() as u32 - 1;
    assert_eq!(text(&a, last, 0), "Tổng số");
    assert_eq!(num(&a, last, 2), 5.0);
}

#[test]
fn a_report_as_of_a_past_date_shows_the_data_as_it_then_stood() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = scenario(dir.path());
    let data = s.server.data.to_str().expect("utf8").to_string();
    // Everything so far reached the server on 1 November 2026 (10:00 in Lai Châu).
    let conn = rusqlite::Connection::open(s.server.data.join("diemdanh.sqlite")).expect("open");
    let nov_1 = 1_793_502_000; // 2026-11-01T03:00:00Z
    conn.execute("UPDATE changes SET received_at = ?1", [nov_1])
        .expect("backdate");
    // Then Dình's absence at session 5 is corrected to present, and synced today.
    let dinh = s.cadres[1].clone();
    s.a.mark(&s.course, &s.sessions[4], &dinh, MarkStatus::Present, None)
        .expect("correct");
    s.server.sync(&mut s.a).expect("sync");

    let now = json(&["course", &s.course, "--data", &data, "--format", "json"]);
    let then = json(&[
        "course",
        &s.course,
        "--data",
        &data,
        "--format",
        "json",
        "--as-of",
        "2026-11-15",
    ]);
    let attended = |v: &Value| {
        v["completion"]
            .as_array()
            .expect("completion")
            .iter()
            .find(|c| c["cadre"] == dinh.as_str())
            .expect("row")["attended"]
            .as_u64()
    };
    assert_eq!(attended(&now), Some(4));
    assert_eq!(attended(&then), Some(3));
    assert!(then["as_of"]
        .as_str()
        .expect("as_of")
        .starts_with("2026-11-15 23:59:59"));
    assert_eq!(now.get("as_of"), None);
    // The rest of the report is the same as it was.
    assert_eq!(then["conflicts"], now["conflicts"]);
    assert_eq!(then["sessions"], now["sessions"]);

    let unit_then = json(&[
        "unit",
        NAM_HANG,
        "--from",
        "2026-12-01",
        "--to",
        "2026-12-31",
        "--data",
        &data,
        "--format",
        "json",
        "--as-of",
        "2026-11-15",
    ]);
    let unit_now = json(&[
        "unit",
        NAM_HANG,
        "--from",
        "2026-12-01",
        "--to",
        "2026-12-31",
        "--data",
        &data,
        "--format",
        "json",
    ]);
    assert_eq!(
        unit_now["totals"]["attended"].as_u64(),
        unit_then["totals"]["attended"].as_u64().map(|n| n + 1)
    );
    // Before 1 November the course did not exist yet.
    let out = report(&["course", &s.course, "--data", &data, "--json", "--as-of", "2026-10-31"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not on this server"));
}

#[test]
fn bad_report_requests_get_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("server");
    let data = data.to_str().expect("utf8");
    for (args, expect) in [
        (
            vec!["unit", "2025:99999", "--from", "2026-01-01", "--to", "2026-12-31"],
            "not in the reference list",
        ),
        (
            vec!["unit", "2025:12", "--from", "2026-12-31", "--to", "2026-01-01"],
            "after it ends",
        ),
        (
            vec!["unit", "2025:12", "--from", "2026-13-01", "--to", "2026-12-31"],
            "YYYY-MM-DD",
        ),
        (
            vec![
                "unit",
                "2025:12",
                "--from",
                "2026-01-01",
                "--to",
                "2026-12-31",
                "--format",
                "pdf",
            ],
            "not one of xlsx, csv, json",
        ),
        (
            vec![
                "unit",
                "2025:12",
                "--from",
                "2026-01-01",
                "--to",
                "2026-12-31",
                "--format",
                "xlsx",
            ],
            "need --out",
        ),
        (vec!["annual", "2025:12", "--year", "26"], "between 2000 and 2100"),
        (vec!["course", "no-such-course", "--json"], "is not on this server"),
        (vec!["course", "../etc", "--json"], "not a valid course id"),
        (
            vec!["course", "c1", "--json", "--as-of", "yesterday"],
            "neither YYYY-MM-DD nor an RFC 3339",
        ),
    ] {
        let mut a = args.clone();
        a.extend_from_slice(&["--data", data]);
        let out = report(&a);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
