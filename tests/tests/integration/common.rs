use std::path::Path;

use diemdanh_tests::TestServer;
use sync_core::device::{CreatedCourse, Device, NewSession};
use sync_core::model::{Cadre, CourseMeta, Gender};

pub fn cadre(name: &str) -> Cadre {
    Cadre {
        name: name.to_string(),
        gender: Gender::Female,
        birth_year: 1990,
        ethnicity: Some("03".into()),
        category: None,
        position: None,
        qualification: None,
        theory_level: None,
        state_management: None,
    }
}

pub fn meta(title: &str) -> CourseMeta {
    CourseMeta {
        title: title.to_string(),
        topic: None,
        organiser: None,
        form: None,
        venue: None,
        start_date: None,
        end_date: None,
        min_ratio: 0.8,
        excused_counts: false,
        planned_trainees: 20,
        programme: None,
    }
}

/// A course with `trainees` enrolled cadres and `sessions` sessions, created on `d`.
pub fn setup_course(d: &mut Device, unit: &str, trainees: usize, sessions: usize) -> (CreatedCourse, Vec<String>) {
    let names = [
        "Lò Thị Hoa",
        "Vàng A Dình",
        "Tòng Văn Sính",
        "Chảo Thị Mai",
        "Pờ Thị Dợ",
        "Lường Văn Tùng",
    ];
    let cadres: Vec<String> = (0..trainees)
        .map(|i| {
            d.add_cadre(unit, cadre(&format!("{} {i}", names[i % names.len()])))
                .expect("add cadre")
        })
        .collect();
    let dates = (0..sessions)
        .map(|i| NewSession {
            date: format!("2026-12-{:02}", i + 1),
            ..Default::default()
        })
        .collect();
    let course = d
        .create_course(unit, meta("Bồi dưỡng quản lý nhà nước"), dates)
        .expect("course");
    for c in &cadres {
        d.enrol(&course.id, c).expect("enrol");
    }
    (course, cadres)
}

/// Server-side counts straight from its SQLite file: (changes logged, distinct hashes).
pub fn server_change_counts(server: &TestServer) -> (i64, i64) {
    let conn = rusqlite::Connection::open(server.data.join("diemdanh.sqlite")).expect("open");
    conn.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT doc_id || hex(hash)) FROM changes",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("count")
}

pub fn home(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(name)
}
