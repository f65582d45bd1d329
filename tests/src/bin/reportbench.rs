//! The report benchmark: a province-sized data set written straight into the server's
//! store, then the unit, annual and course reports timed on it, and their exports.
//!
//! `cargo run --release -p diemdanh-tests --bin reportbench` generates, in a temp folder
//! (or `--data DIR`, kept), province 2025:38 (Thanh Hóa, 166 communes): 50,000 cadres,
//! 2,000 courses of 20-60 trainees and a number of sessions that brings each to about
//! 1,000 marks, plus one course at the design's upper bound (1,000 trainees x 50
//! sessions): 2,000,000 marks in all; one course in three has a final evaluation per
//! trainee (one in twenty failed), which completion counts. The rows go into the projection tables (what the
//! reports read) through one transaction, not through documents and syncs: the reports
//! do not read documents, and a sync of 2 million marks would take an hour here.
//!
//! Each report runs `--repeat N` times (default 5); the table shows the first (cold
//! statement cache), the median and the 95th-percentile run. `--cadres`, `--courses`
//! shrink the set.
//!
//! The web course page is timed too: the real router (`diemdanh_server::api::app`) called
//! in-process (`oneshot`, no socket) with a signed-in province account's session cookie,
//! for the typical and the largest course, first and middle page of the matrix, each run
//! `--page-repeat N` times (default 50): what a browser waits for, minus the network.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use diemdanh_server::reports::{self, Tabular};
use diemdanh_server::{SqliteStore, Store};
use diemdanh_tests::workload::Lcg;
use rusqlite::params;
use sync_core::model::{MarkStatus, Programme};
use sync_core::units::{Scheme, UnitKey, UnitTree};

const PROVINCE: &str = "38";
const TARGET_MARKS: u64 = 2_000_000;
const BIG_TRAINEES: usize = 1_000;
const BIG_SESSIONS: usize = 50;
const YEAR: i32 = 2026;

struct Args {
    data: Option<PathBuf>,
    cadres: usize,
    courses: usize,
    repeat: usize,
    page_repeat: usize,
}

fn args() -> Args {
    let mut a = Args {
        data: None,
        cadres: 50_000,
        courses: 2_000,
        repeat: 5,
        page_repeat: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| die(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--data" => a.data = Some(PathBuf::from(value())),
            "--cadres" => a.cadres = value().parse().unwrap_or_else(|_| die("--cadres N")),
            "--courses" => a.courses = value().parse().unwrap_or_else(|_| die("--courses N")),
            "--repeat" => a.repeat = value().parse().unwrap_or_else(|_| die("--repeat N")),
            "--page-repeat" => a.page_repeat = value().parse().unwrap_or_else(|_| die("--page-repeat N")),
            _ => die(&format!("unknown argument {flag}")),
        }
    }
    if a.cadres < BIG_TRAINEES || a.courses < 2 || a.repeat == 0 || a.page_repeat == 0 {
        die("need --cadres >= 1000, --courses >= 2, --repeat >= 1, --page-repeat >= 1");
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("reportbench: {msg}");
    std::process::exit(2)
}

/// A date of YEAR, `day` 0-based from 6 January, on working days only.
fn date(day: usize) -> String {
    let start = time::Date::from_calendar_date(YEAR, time::Month::January, 5).unwrap_or(time::Date::MIN);
    let week = day / 5;
    let d = start + time::Duration::days((week * 7 + day % 5 + 1) as i64);
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

struct Generated {
    marks: u64,
    big_course: String,
    typical_course: String,
    commune: UnitKey,
    seconds: f64,
}

fn generate(store: &SqliteStore, n_cadres: usize, n_courses: usize) -> Generated {
    let t0 = Instant::now();
    let tree = UnitTree::reference();
    let province = UnitKey::new(Scheme::S2025, PROVINCE);
    let communes: Vec<UnitKey> = tree.children(&province).to_vec();
    let mut rng = Lcg(20_261_201);
    // Marks per ordinary course, so that the total lands on TARGET_MARKS.
    let ordinary = (TARGET_MARKS - (BIG_TRAINEES * BIG_SESSIONS) as u64) / (n_courses as u64 - 1);
    let out = store.with_transaction(|tx| {
        let mut cadre = tx.prepare(
            "INSERT INTO p_cadres (id, unit, name, gender, birth_year, ethnicity, category, position, qualification,
               theory_level, doc_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        const QUALIFICATION: &[&str] = &["Đại học", "Cao đẳng", "Trung cấp", "Thạc sĩ", "Sơ cấp"];
        const ETHNIC: &[&str] = &["01", "03", "08", "09", "35", "48", "50", "25", "01", "01"];
        let mut cadres_of: Vec<Vec<String>> = vec![Vec::new(); communes.len()];
        for i in 0..n_cadres {
            let c = i % communes.len();
            let id = format!("k{i:07}");
            let unit = communes[c].to_string();
            cadre.execute(params![
                id,
                unit,
                format!("Cán bộ {i}"),
                if rng.next(100) < 42 { "female" } else { "male" },
                1962 + rng.next(40) as i64,
                ETHNIC[rng.next(ETHNIC.len())],
                ["can_bo", "cong_chuc", "khong_chuyen_trach"][rng.next(3)],
                "Công chức",
                QUALIFICATION[rng.next(QUALIFICATION.len())],
                ["so_cap", "trung_cap", "cao_cap", "cu_nhan"][rng.next(4)],
                format!("roster:{unit}")
            ])?;
            cadres_of[c].push(id);
        }
        let mut course = tx.prepare(
            "INSERT INTO p_courses (id, unit, title, min_ratio, excused_counts, planned, start_date, end_date, doc_id,
               programme) VALUES (?1, ?2, ?3, 0.8, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut session = tx.prepare(
            "INSERT INTO p_sessions (course_id, id, date, half_day, periods, topic, part) VALUES (?1, ?2, ?3, NULL, 4, NULL, 0)",
        )?;
        let mut enrol = tx.prepare("INSERT INTO p_enrolments (course_id, cadre_id) VALUES (?1, ?2)")?;
        let mut evaluation = tx.prepare(
            "INSERT INTO p_evaluations (course_id, cadre_id, slot, kind, period, score, passed, pass)
             VALUES (?1, ?2, 'final', 'final', NULL, ?3, NULL, ?4)",
        )?;
        let mut mark = tx.prepare(
            "INSERT INTO p_marks (course_id, session_id, cadre_id, status, note, conflict, device_id, recorded_at, doc_id)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5, 'bench', 0, ?6)",
        )?;
        let mut marks = 0u64;
        let mut typical = String::new();
        let mut big = String::new();
        for k in 0..n_courses {
            let c = k % communes.len();
            let unit = communes[c].to_string();
            let id = format!("course{k:05}");
            let (trainees, sessions) = if k == 0 {
                big = id.clone();
                (BIG_TRAINEES, BIG_SESSIONS)
            } else {
                let t = 20 + rng.next(41);
                (t, ((ordinary as usize + t / 2) / t).clamp(5, 60))
            };
            if k == 1 {
                typical = id.clone();
            }
            let first = rng.next(200);
            let dates: Vec<String> = (0..sessions).map(|s| date(first + s)).collect();
            let doc = format!("course:{unit}:{id}");
            course.execute(params![
                id,
                unit,
                format!("Lớp bồi dưỡng {k}"),
                k % 4 == 0,
                trainees as i64,
                dates.first(),
                dates.last(),
                doc,
                Programme::ALL[k % Programme::ALL.len()].as_str()
            ])?;
            for (s, d) in dates.iter().enumerate() {
                session.execute(params![id, format!("s{s:02}"), d])?;
            }
            // Trainees from the course's commune first, then its neighbours.
            let mut chosen = Vec::with_capacity(trainees);
            let mut cc = c;
            let mut offset = rng.next(64);
            while chosen.len() < trainees {
                let pool = &cadres_of[cc];
                for j in 0..pool.len().min(trainees - chosen.len()) {
                    chosen.push(pool[(offset + j) % pool.len()].clone());
                }
                cc = (cc + 1) % communes.len();
                offset = rng.next(64);
            }
            chosen.sort();
            chosen.dedup();
            for t in &chosen {
                enrol.execute(params![id, t])?;
                // A final evaluation in one course of three; one trainee in twenty fails it.
                if k % 3 == 0 {
                    let score = if rng.next(20) == 0 { 4.0 } else { 7.5 };
                    evaluation.execute(params![id, t, score, score >= 5.0])?;
                }
            }
            let att = format!("att:{unit}:{id}:0");
            for s in 0..sessions {
                let sid = format!("s{s:02}");
                for t in &chosen {
                    let r = rng.next(100);
                    let status = match r {
                        0..=84 => MarkStatus::Present,
                        85..=89 => MarkStatus::Late,
                        90..=92 => MarkStatus::LeftEarly,
                        93..=96 => MarkStatus::Excused,
                        _ => MarkStatus::Absent,
                    };
                    let conflict = (rng.next(5_000) == 0).then_some("present,absent");
                    mark.execute(params![id, sid, t, status.as_str(), conflict, att])?;
                    marks += 1;
                }
            }
        }
        Ok((marks, big, typical))
    });
    let (marks, big_course, typical_course) = out.unwrap_or_else(|e| die(&format!("generation failed: {e}")));
    Generated {
        marks,
        big_course,
        typical_course,
        commune: communes[1].clone(),
        seconds: t0.elapsed().as_secs_f64(),
    }
}

/// Runs `f` `repeat` times: (first, median, 95th percentile, last value).
fn time_it<T>(repeat: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, Duration, T) {
    let mut times = Vec::with_capacity(repeat);
    let mut last = None;
    for _ in 0..repeat {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    let first = times[0];
    times.sort();
    let p95 = times[((times.len() * 95).div_ceil(100)).clamp(1, times.len()) - 1];
    match last {
        Some(v) => (first, times[times.len() / 2], p95, v),
        None => die("no run"),
    }
}

/// A signed-in session of a province account, straight into the store (the sign-in
/// form itself is not what is measured): the cookie a browser would send.
fn province_session(store: &dyn Store) -> String {
    let province = format!("2025:{PROVINCE}");
    diemdanh_server::accounts::add(store, "bench", &province, "mật khẩu đo hiệu năng", false)
        .unwrap_or_else(|e| die(&format!("account: {e}")));
    let token = "be".repeat(32);
    let now = diemdanh_server::api::now();
    store
        .create_web_session(&diemdanh_server::api::hash_secret(&token), "bench", now, now + 3600)
        .unwrap_or_else(|e| die(&format!("session: {e}")));
    format!("dd_session={token}")
}

/// One GET of a page through the router: (status, body bytes).
async fn get_page(router: &axum::Router, path: &str, cookie: &str) -> (StatusCode, usize) {
    let req = Request::get(path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap_or_else(|e| die(&format!("request: {e}")));
    let resp = router
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| die(&format!("router: {e}")));
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| die(&format!("body: {e}")))
        .to_bytes();
    (status, body.len())
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| die(&format!("temp folder: {e}")));
    let dir = a.data.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let store = Arc::new(SqliteStore::open(&dir).unwrap_or_else(|e| die(&format!("open store: {e}"))));
    let existing = store
        .counts()
        .ok()
        .and_then(|c| c.into_iter().find(|(n, _)| n == "marks"))
        .map(|(_, n)| n)
        .unwrap_or(0);
    if existing > 0 {
        die(&format!(
            "{} already holds {existing} marks; give an empty --data",
            dir.display()
        ));
    }
    let g = generate(&store, a.cadres, a.courses);
    println!(
        "generated {} cadres, {} courses, {} marks into {} in {:.1} s",
        a.cadres,
        a.courses,
        g.marks,
        dir.display(),
        g.seconds
    );
    let from = format!("{YEAR}-01-01");
    let to = format!("{YEAR}-12-31");
    let province = format!("2025:{PROVINCE}");
    let mut lines: Vec<(String, Duration, Duration, Duration, String)> = Vec::new();
    let s: &dyn Store = &*store;

    let p = reports::unit::Period::new(&province, &from, &to).unwrap_or_else(|e| die(&e.to_string()));
    let (first, median, p95, r) = time_it(a.repeat, || reports::unit::build(s, &p));
    let r = r.unwrap_or_else(|e| die(&e.to_string()));
    lines.push((
        format!("unit report, province {province}, year {YEAR}"),
        first,
        median,
        p95,
        format!(
            "{} courses, {} trainees, {} trainee-sessions",
            r.totals.courses, r.totals.trainees, r.totals.trainee_sessions
        ),
    ));
    let (first, median, p95, xlsx) = time_it(a.repeat, || reports::export::xlsx::write(&r.tables()));
    lines.push((
        "  its XLSX export (tables + file)".into(),
        first,
        median,
        p95,
        format!("{} bytes", xlsx.map(|b| b.len()).unwrap_or(0)),
    ));

    let half = reports::unit::Period::new(&province, &format!("{YEAR}-03-01"), &format!("{YEAR}-06-30"))
        .unwrap_or_else(|e| die(&e.to_string()));
    let (first, median, p95, r) = time_it(a.repeat, || reports::unit::build(s, &half));
    let r = r.unwrap_or_else(|e| die(&e.to_string()));
    lines.push((
        format!("unit report, province, {YEAR}-03-01..06-30"),
        first,
        median,
        p95,
        format!("{} courses (most straddle the period)", r.totals.courses),
    ));

    let commune = g.commune.to_string();
    let pc = reports::unit::Period::new(&commune, &from, &to).unwrap_or_else(|e| die(&e.to_string()));
    let (first, median, p95, r) = time_it(a.repeat, || reports::unit::build(s, &pc));
    let r = r.unwrap_or_else(|e| die(&e.to_string()));
    lines.push((
        format!("unit report, commune {commune}, year"),
        first,
        median,
        p95,
        format!("{} courses", r.totals.courses),
    ));

    let (first, median, p95, r) = time_it(a.repeat, || reports::annual::build(s, &province, YEAR));
    let r = r.unwrap_or_else(|e| die(&e.to_string()));
    lines.push((
        format!("annual report, province, {YEAR}"),
        first,
        median,
        p95,
        format!("{} learner-places", r.total.places),
    ));

    for (what, id) in [("typical course", &g.typical_course), ("largest course", &g.big_course)] {
        let (first, median, p95, r) = time_it(a.repeat, || reports::course::build(s, id));
        let r = r.unwrap_or_else(|e| die(&e.to_string()));
        lines.push((
            format!("course report, {what}"),
            first,
            median,
            p95,
            format!(
                "{} trainees x {} sessions",
                r.report.trainees.len(),
                r.report.sessions.len()
            ),
        ));
        let (first, median, p95, xlsx) = time_it(a.repeat, || reports::export::xlsx::write(&r.tables()));
        lines.push((
            "  its XLSX export (tables + file)".into(),
            first,
            median,
            p95,
            format!("{} bytes", xlsx.map(|b| b.len()).unwrap_or(0)),
        ));
    }

    // The web course page, through the router with a signed-in session.
    let cookie = province_session(s);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
    let shared: Arc<dyn Store> = store.clone();
    let router = rt.block_on(async { diemdanh_server::api::app(shared) });
    let mut page_lines = Vec::new();
    for (what, id, page) in [
        ("typical course", &g.typical_course, 1),
        ("largest course", &g.big_course, 1),
        ("largest course", &g.big_course, 8),
    ] {
        let path = format!("/courses/{id}?page={page}");
        let (first, median, p95, (status, size)) =
            time_it(a.page_repeat, || rt.block_on(get_page(&router, &path, &cookie)));
        if status != StatusCode::OK {
            die(&format!("{path} answered {status}"));
        }
        page_lines.push((
            format!("web course page, {what}, matrix page {page}"),
            first,
            median,
            p95,
            format!("{size} bytes of HTML"),
        ));
    }

    println!();
    println!(
        "| what | first run (ms) | median of {} (ms) | p95 (ms) | size |",
        a.repeat
    );
    println!("| --- | ---: | ---: | ---: | --- |");
    for (what, first, median, p95, note) in lines {
        println!("| {what} | {} | {} | {} | {note} |", ms(first), ms(median), ms(p95));
    }
    println!();
    println!(
        "| what | first run (ms) | median of {} (ms) | p95 (ms) | size |",
        a.page_repeat
    );
    println!("| --- | ---: | ---: | ---: | --- |");
    for (what, first, median, p95, note) in page_lines {
        println!("| {what} | {} | {} | {} | {note} |", ms(first), ms(median), ms(p95));
    }
}
