//! The course report: the trainee x session matrix of statuses, each trainee's
//! attendance and completion, the sessions, and the conflicts still to resolve. The
//! numbers come from `sync_core::report::CourseReport::assemble`, the function the
//! devices' `show course` uses too, so the server's report equals every device's view.
//!
//! Evaluations count in completion through `CourseReport::assemble` (a trainee completes
//! when the attendance threshold is met and every evaluation is passed, the devices' rule);
//! they are not listed in a sheet of their own yet.

use std::collections::HashMap;

use serde::Serialize;
use sync_core::model::{MarkStatus, Programme};
use sync_core::report::CourseReport;
use sync_core::units::UnitTree;

use super::{col, labels, pct, Cell, ReportError, ReportResult, Table, Tabular};
use crate::store::Store;

#[derive(Debug, Clone, Serialize)]
pub struct CourseSheet {
    #[serde(flatten)]
    pub report: CourseReport,
    /// The unit's name in the reference list, for the sheets. Not in the JSON: the JSON
    /// of a course report is exactly the device's course view (`diemdanh show course
    /// --json`), a contract the integration tests check.
    #[serde(skip)]
    pub unit_name: Option<String>,
    /// Set when computed as the data stood at a past time (`--as-of`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

pub fn build(store: &dyn Store, course_id: &str) -> ReportResult<CourseSheet> {
    sync_core::model::check_id("course", course_id).map_err(|e| ReportError::Input(e.0))?;
    let rows = store
        .course_rows(course_id)?
        .ok_or_else(|| ReportError::NotFound(format!("course {course_id} is not on this server")))?;
    let report = CourseReport::assemble(rows);
    let unit_name = report
        .unit
        .parse()
        .ok()
        .and_then(|k| UnitTree::reference().get(&k))
        .map(|u| u.name.clone());
    Ok(CourseSheet {
        report,
        unit_name,
        as_of: None,
    })
}

/// `2026-12-01` as `01/12/2026`, with the half day when there is one.
fn session_label(date: &str, half_day: Option<&str>) -> String {
    let d = match (date.get(0..4), date.get(5..7), date.get(8..10)) {
        (Some(y), Some(m), Some(d)) => format!("{d}/{m}/{y}"),
        _ => date.to_string(),
    };
    match half_day {
        Some("morning") => format!("{d} sáng"),
        Some("afternoon") => format!("{d} chiều"),
        _ => d,
    }
}

fn conflict_text(values: &[MarkStatus]) -> String {
    let v: Vec<&str> = values.iter().map(|s| labels::status(*s)).collect();
    format!("Xung đột: {}", v.join(" / "))
}

impl Tabular for CourseSheet {
    fn tables(&self) -> Vec<Table> {
        let r = &self.report;
        let marks: HashMap<(&str, &str), MarkStatus> = r
            .marks
            .iter()
            .map(|m| ((m.session.as_str(), m.cadre.as_str()), m.status))
            .collect();
        let conflicts: HashMap<(&str, &str), &[MarkStatus]> = r
            .conflicts
            .iter()
            .map(|c| ((c.session.as_str(), c.cadre.as_str()), c.values.as_slice()))
            .collect();
        let names: HashMap<&str, &str> = r
            .trainees
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_deref().unwrap_or("")))
            .collect();

        let mut columns = vec![col("STT", 6.0), col("Mã học viên", 14.0), col("Họ và tên", 28.0)];
        for s in &r.sessions {
            columns.push(col(&session_label(&s.date, s.half_day.as_deref()), 14.0));
        }
        columns.extend([
            col("Số buổi dự", 11.0),
            col("Tổng số buổi", 12.0),
            col("Tỷ lệ dự (%)", 12.0),
            col("Hoàn thành", 12.0),
        ]);
        let mut rows = Vec::new();
        for (i, (t, c)) in r.trainees.iter().zip(&r.completion).enumerate() {
            let mut row: Vec<Cell> = vec![(i as i64 + 1).into(), t.id.as_str().into(), t.name.clone().into()];
            for s in &r.sessions {
                let key = (s.id.as_str(), t.id.as_str());
                row.push(match (conflicts.get(&key), marks.get(&key)) {
                    (Some(values), _) => conflict_text(values).into(),
                    (None, Some(st)) => labels::status(*st).into(),
                    (None, None) => Cell::Empty,
                });
            }
            row.extend([
                c.attended.into(),
                c.sessions.into(),
                // The ratio is rounded to 4 decimals once, in assemble: the same number.
                Cell::Num((c.ratio * 10_000.0).round() / 100.0),
                if c.completed { "Đạt" } else { "Chưa đạt" }.into(),
            ]);
            rows.push(row);
        }
        let attendance = Table {
            id: "attendance",
            title: "Điểm danh".into(),
            columns,
            rows,
        };

        let enrolled = r.trainees.len() as u64;
        let sessions = Table {
            id: "sessions",
            title: "Buổi học".into(),
            columns: vec![
                col("STT", 6.0),
                col("Mã buổi", 14.0),
                col("Ngày", 14.0),
                col("Số tiết", 9.0),
                col("Chủ đề", 36.0),
                col("Số học viên", 12.0),
                col("Số dự", 9.0),
                col("Tỷ lệ dự (%)", 12.0),
            ],
            rows: r
                .sessions
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let attended = r
                        .marks
                        .iter()
                        .filter(|m| m.session == s.id && m.status.attended(r.excused_counts))
                        .count() as u64;
                    vec![
                        (i as i64 + 1).into(),
                        s.id.as_str().into(),
                        session_label(&s.date, s.half_day.as_deref()).into(),
                        s.periods.map(|p| Cell::Int(i64::from(p))).unwrap_or(Cell::Empty),
                        s.topic.clone().into(),
                        enrolled.into(),
                        attended.into(),
                        pct(attended, enrolled).into(),
                    ]
                })
                .collect(),
        };

        let dates: HashMap<&str, String> = r
            .sessions
            .iter()
            .map(|s| (s.id.as_str(), session_label(&s.date, s.half_day.as_deref())))
            .collect();
        let conflicts = Table {
            id: "conflicts",
            title: "Xung đột chờ xử lý".into(),
            columns: vec![
                col("Buổi", 14.0),
                col("Mã học viên", 14.0),
                col("Họ và tên", 28.0),
                col("Các giá trị ghi nhận", 40.0),
            ],
            rows: r
                .conflicts
                .iter()
                .map(|c| {
                    vec![
                        dates
                            .get(c.session.as_str())
                            .cloned()
                            .unwrap_or_else(|| c.session.clone())
                            .into(),
                        c.cadre.as_str().into(),
                        names.get(c.cadre.as_str()).copied().unwrap_or("").into(),
                        c.values
                            .iter()
                            .map(|s| labels::status(*s))
                            .collect::<Vec<_>>()
                            .join(" / ")
                            .into(),
                    ]
                })
                .collect(),
        };

        let summary = Table {
            id: "course",
            title: "Thông tin lớp".into(),
            columns: vec![col("Mục", 32.0), col("Giá trị", 50.0)],
            rows: vec![
                vec!["Mã lớp".into(), r.id.as_str().into()],
                vec!["Tên lớp".into(), r.title.as_str().into()],
                vec![
                    "Đơn vị".into(),
                    self.unit_name.clone().unwrap_or_else(|| r.unit.clone()).into(),
                ],
                vec!["Mã đơn vị".into(), r.unit.as_str().into()],
                vec![
                    "Tỷ lệ dự tối thiểu (%)".into(),
                    Cell::Num((r.min_ratio * 10_000.0).round() / 100.0),
                ],
                vec![
                    "Vắng có phép được tính là dự".into(),
                    if r.excused_counts { "Có" } else { "Không" }.into(),
                ],
                vec!["Số buổi".into(), (r.sessions.len() as u64).into()],
                vec!["Số học viên".into(), enrolled.into()],
                vec![
                    "Số học viên hoàn thành".into(),
                    (r.completion.iter().filter(|c| c.completed).count() as u64).into(),
                ],
                vec!["Số xung đột chờ xử lý".into(), (r.conflicts.len() as u64).into()],
            ],
        };
        vec![attendance, sessions, conflicts, summary]
    }
}

/// The Vietnamese label of a stored programme code (None: "Khác").
pub fn programme_label(code: Option<&str>) -> &'static str {
    code.and_then(|c| c.parse::<Programme>().ok())
        .unwrap_or(Programme::Other)
        .label_vi()
}
