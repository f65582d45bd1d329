//! The annual training report of a unit (báo cáo kết quả đào tạo, bồi dưỡng hằng năm):
//! learner-places by programme type, each with "of which women" and "of which ethnic
//! minority", over the courses held in the calendar year. Places and completions are
//! those of the unit report for 1 January - 31 December (same definitions, same code).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use sync_core::model::Programme;
use sync_core::units::UnitKey;

use super::unit::{is_minority, load, places, Period};
use super::{col, Cell, ReportError, ReportResult, Table, Tabular};
use crate::store::Store;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProgrammeRow {
    /// `Programme::as_str` (`khac` for courses that name none).
    pub programme: String,
    pub label: String,
    pub courses: u32,
    pub places: u32,
    pub women: u32,
    pub ethnic_minority: u32,
    pub completed: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnualReport {
    pub unit: String,
    pub unit_name: String,
    pub year: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// Every programme type, in a fixed order, zeros included.
    pub programmes: Vec<ProgrammeRow>,
    pub total: ProgrammeRow,
}

pub fn build(store: &dyn Store, unit: &str, year: i32) -> ReportResult<AnnualReport> {
    build_within(store, unit, year, None)
}

/// [`build`], counting only the courses inside `within` too (a web account's view).
pub fn build_within(store: &dyn Store, unit: &str, year: i32, within: Option<&UnitKey>) -> ReportResult<AnnualReport> {
    if !(2000..=2100).contains(&year) {
        return Err(ReportError::Input(format!(
            "--year {year} is not a year between 2000 and 2100"
        )));
    }
    let mut p = Period::new(unit, &format!("{year:04}-01-01"), &format!("{year:04}-12-31"))?;
    if let Some(w) = within {
        p = p.within(w);
    }
    let (courses, trainees) = load(store, &p)?;
    let mut rows: BTreeMap<Programme, (ProgrammeRow, HashSet<&str>)> = BTreeMap::new();
    for pr in Programme::ALL {
        rows.insert(
            *pr,
            (
                ProgrammeRow {
                    programme: pr.as_str().into(),
                    label: pr.label_vi().into(),
                    ..Default::default()
                },
                HashSet::new(),
            ),
        );
    }
    let programme_of = |code: Option<&str>| code.and_then(|c| c.parse().ok()).unwrap_or(Programme::Other);
    for c in &courses {
        if let Some((_, set)) = rows.get_mut(&programme_of(c.programme.as_deref())) {
            set.insert(c.id.as_str());
        }
    }
    for pl in places(&courses, &trainees, &p.to) {
        let Some((row, _)) = rows.get_mut(&programme_of(pl.course.programme.as_deref())) else {
            continue;
        };
        let cadre = pl.trainee.cadre.as_ref();
        row.places += 1;
        row.women += u32::from(cadre.and_then(|c| c.gender.as_deref()) == Some("female"));
        row.ethnic_minority += u32::from(is_minority(cadre.and_then(|c| c.ethnicity.as_deref())) == Some(true));
        row.completed += u32::from(pl.completed);
    }
    let mut total = ProgrammeRow {
        programme: "total".into(),
        label: "Tổng số".into(),
        ..Default::default()
    };
    let programmes: Vec<ProgrammeRow> = rows
        .into_values()
        .map(|(mut row, set)| {
            row.courses = set.len() as u32;
            total.courses += row.courses;
            total.places += row.places;
            total.women += row.women;
            total.ethnic_minority += row.ethnic_minority;
            total.completed += row.completed;
            row
        })
        .collect();
    Ok(AnnualReport {
        unit: p.unit.to_string(),
        unit_name: p.unit_name,
        year,
        as_of: None,
        programmes,
        total,
    })
}

impl Tabular for AnnualReport {
    fn tables(&self) -> Vec<Table> {
        let cells = |r: &ProgrammeRow| -> Vec<Cell> {
            vec![
                r.label.as_str().into(),
                r.courses.into(),
                r.places.into(),
                r.women.into(),
                r.ethnic_minority.into(),
                r.completed.into(),
            ]
        };
        vec![Table {
            id: "annual",
            title: format!("Năm {}", self.year),
            columns: vec![
                col("Loại chương trình", 40.0),
                col("Số lớp", 9.0),
                col("Số lượt học viên", 16.0),
                col("Trong đó: nữ", 13.0),
                col("Trong đó: dân tộc thiểu số", 24.0),
                col("Số lượt hoàn thành", 18.0),
            ],
            rows: self.programmes.iter().chain([&self.total]).map(cells).collect(),
        }]
    }
}
