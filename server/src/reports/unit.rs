//! The unit report for a period: courses held by a unit's subtree (province, district
//! or commune, in either scheme: see `UnitTree::counts_in`), their trainees and
//! trainee-sessions, attendance and completions, broken down by gender, ethnic
//! minority, age band, category, qualification and political-theory level.
//!
//! Definitions, applied the same way in every breakdown row:
//! - a course is *held* in [from, to] when it has a session dated in it;
//! - *learner-places* are the enrolments of those courses, *trainees* the distinct cadres;
//! - *trainee-sessions* are (session in the period, enrolled trainee) pairs, *attended*
//!   those marked present, late or left early (excused too when the course says so);
//! - *completions* are counted for courses whose last session is in the period
//!   (*finished places*), with the course report's rule: the attendance threshold met
//!   (`sync_core::report::completes`) AND every evaluation slot of the course passed
//!   (`sync_core::report::evaluations_missing`);
//! - age is the period's end year minus the birth year.
//!
//! The SQL (behind `Store::period_courses` / `period_trainees`) reads courses by session
//! date and marks per course from an index; everything else is arithmetic here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use sync_core::model::{Category, Gender, MarkStatus, TheoryLevel};
use sync_core::report::{completes, evaluations_missing};
use sync_core::units::{UnitKey, UnitTree};

use super::{col, labels, parse_date, pct, Cell, ReportError, ReportResult, Table, Tabular};
use crate::store::{PeriodCourse, PeriodTrainee, Store};

/// The figures of one row.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub courses: u32,
    pub trainees: u32,
    pub places: u32,
    pub trainee_sessions: u64,
    pub attended: u64,
    /// attended / trainee_sessions, in percent with two decimals.
    pub attendance_rate: f64,
    pub finished_places: u32,
    pub completed: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakdownRow {
    /// Stable code (`female`, `minority`, `30-39`, `cong_chuc`, `unknown`...).
    pub key: String,
    /// Vietnamese label.
    pub label: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breakdown {
    /// `gender`, `ethnic_minority`, `age_band`, `category`, `qualification`, `theory_level`.
    pub dimension: &'static str,
    pub title: &'static str,
    pub rows: Vec<BreakdownRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CourseLine {
    pub id: String,
    pub unit: String,
    pub title: String,
    pub programme: Option<String>,
    pub first_date: String,
    pub last_date: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitReport {
    pub unit: String,
    pub unit_name: String,
    pub from: String,
    pub to: String,
    /// Set when computed as the data stood at a past time (`--as-of`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    pub totals: Figures,
    pub breakdowns: Vec<Breakdown>,
    pub courses: Vec<CourseLine>,
}

/// A checked request for a period report.
#[derive(Debug, Clone)]
pub struct Period {
    pub unit: UnitKey,
    pub unit_name: String,
    pub from: String,
    pub to: String,
    pub end_year: i32,
    /// Counts only the courses of this subtree too (`UnitTree::is_within`): a web
    /// account's view. None for the command line, which sees the whole server.
    pub within: Option<UnitKey>,
}

impl Period {
    pub fn new(unit: &str, from: &str, to: &str) -> ReportResult<Period> {
        let u = UnitTree::reference()
            .resolve(unit)
            .map_err(|e| ReportError::Input(e.0))?;
        let f = parse_date("--from", from)?;
        let t = parse_date("--to", to)?;
        if f > t {
            return Err(ReportError::Input(format!(
                "the period starts ({from}) after it ends ({to})"
            )));
        }
        Ok(Period {
            unit: u.key.clone(),
            unit_name: u.name.clone(),
            from: from.to_string(),
            to: to.to_string(),
            end_year: t.year(),
            within: None,
        })
    }

    /// The same period, counting only the courses inside `viewer`'s subtree.
    pub fn within(mut self, viewer: &UnitKey) -> Period {
        self.within = Some(viewer.clone());
        self
    }
}

/// The courses of the unit's subtree held in the period, with their enrolments.
pub(crate) fn load(store: &dyn Store, p: &Period) -> ReportResult<(Vec<PeriodCourse>, Vec<PeriodTrainee>)> {
    let tree = UnitTree::reference();
    let mut inside: HashMap<String, bool> = HashMap::new();
    let courses: Vec<PeriodCourse> = store
        .period_courses(&p.from, &p.to)?
        .into_iter()
        .filter(|c| {
            *inside.entry(c.unit.clone()).or_insert_with(|| {
                c.unit
                    .parse::<UnitKey>()
                    .map(|k| tree.counts_in(&k, &p.unit) && p.within.as_ref().is_none_or(|w| tree.is_within(&k, w)))
                    .unwrap_or(false)
            })
        })
        .collect();
    let trainees = store.period_trainees(&courses, &p.from, &p.to)?;
    Ok((courses, trainees))
}

/// One enrolment's contribution.
pub(crate) struct Place<'a> {
    pub course: &'a PeriodCourse,
    pub trainee: &'a PeriodTrainee,
    pub trainee_sessions: u64,
    pub attended: u64,
    pub finished: bool,
    pub completed: bool,
}

pub(crate) fn places<'a>(courses: &'a [PeriodCourse], trainees: &'a [PeriodTrainee], to: &str) -> Vec<Place<'a>> {
    let by_id: HashMap<&str, &PeriodCourse> = courses.iter().map(|c| (c.id.as_str(), c)).collect();
    let attended = |counts: &[u32; 5], excused_counts: bool| -> u32 {
        MarkStatus::ALL
            .iter()
            .zip(counts)
            .filter(|(s, _)| s.attended(excused_counts))
            .map(|(_, n)| *n)
            .sum()
    };
    // Each course's evaluation slots: every slot recorded for any of its trainees (as
    // the course report counts them, `sync_core::report::CourseReport::assemble`).
    let mut slots: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for t in trainees {
        let set = slots.entry(t.course_id.as_str()).or_default();
        set.extend(t.evaluations.iter().map(|(slot, _)| slot.as_str()));
    }
    trainees
        .iter()
        .filter_map(|t| {
            let c = *by_id.get(t.course_id.as_str())?;
            let finished = c.last_date.as_str() <= to;
            let total = attended(&t.marks.total, c.excused_counts);
            let course_slots = slots.get(t.course_id.as_str());
            let evaluations_ok = evaluations_missing(course_slots.into_iter().flatten().copied(), |slot| {
                t.evaluations.iter().any(|(s, pass)| s == slot && *pass)
            })
            .is_empty();
            Some(Place {
                course: c,
                trainee: t,
                trainee_sessions: c.sessions_in_period.max(0) as u64,
                // A trainee cannot attend more sessions than the period has (a duplicate
                // row would be a store bug; the cap keeps the rate within 100%).
                attended: u64::from(attended(&t.marks.in_period, c.excused_counts))
                    .min(c.sessions_in_period.max(0) as u64),
                finished,
                completed: finished && completes(total, c.sessions.max(0) as u32, c.min_ratio) && evaluations_ok,
            })
        })
        .collect()
}

/// Sums places into figures; trainees and courses are counted distinct.
#[derive(Default)]
pub(crate) struct Acc<'a> {
    courses: HashSet<&'a str>,
    cadres: HashSet<&'a str>,
    f: Figures,
}

impl<'a> Acc<'a> {
    pub fn add(&mut self, p: &Place<'a>) {
        self.courses.insert(p.course.id.as_str());
        self.cadres.insert(p.trainee.cadre_id.as_str());
        self.f.places += 1;
        self.f.trainee_sessions += p.trainee_sessions;
        self.f.attended += p.attended;
        self.f.finished_places += u32::from(p.finished);
        self.f.completed += u32::from(p.completed);
    }
    pub fn finish(self) -> Figures {
        let mut f = self.f;
        f.courses = self.courses.len() as u32;
        f.trainees = self.cadres.len() as u32;
        f.attendance_rate = pct(f.attended, f.trainee_sessions);
        f
    }
}

fn age_band(year: i32, birth: Option<i64>) -> (&'static str, &'static str) {
    match birth.map(|b| i64::from(year) - b) {
        None => ("unknown", labels::UNKNOWN),
        Some(a) if a < 30 => ("<30", "Dưới 30 tuổi"),
        Some(a) if a < 40 => ("30-39", "Từ 30 đến dưới 40"),
        Some(a) if a < 50 => ("40-49", "Từ 40 đến dưới 50"),
        Some(a) if a < 60 => ("50-59", "Từ 50 đến dưới 60"),
        Some(_) => (">=60", "Từ 60 tuổi trở lên"),
    }
}

pub(crate) fn is_minority(ethnicity: Option<&str>) -> Option<bool> {
    ethnicity.map(|e| e != "01")
}

type Classify = fn(&PeriodTrainee, i32) -> (String, String);

fn unknown() -> (String, String) {
    ("unknown".into(), labels::UNKNOWN.into())
}

const DIMENSIONS: &[(&str, &str, Classify, &[&str])] = &[
    (
        "gender",
        "Theo giới tính",
        |t, _| match t
            .cadre
            .as_ref()
            .and_then(|c| c.gender.as_deref()?.parse::<Gender>().ok())
        {
            Some(g) => (g.as_str().into(), labels::gender(g).into()),
            None => unknown(),
        },
        &["female", "male", "other"],
    ),
    (
        "ethnic_minority",
        "Theo dân tộc",
        |t, _| match is_minority(t.cadre.as_ref().and_then(|c| c.ethnicity.as_deref())) {
            Some(true) => ("minority".into(), "Dân tộc thiểu số".into()),
            Some(false) => ("kinh".into(), "Dân tộc Kinh".into()),
            None => unknown(),
        },
        &["minority", "kinh"],
    ),
    (
        "age_band",
        "Theo độ tuổi",
        |t, year| {
            let (k, l) = age_band(year, t.cadre.as_ref().and_then(|c| c.birth_year));
            (k.into(), l.into())
        },
        &["<30", "30-39", "40-49", "50-59", ">=60"],
    ),
    (
        "category",
        "Theo đối tượng",
        |t, _| match t
            .cadre
            .as_ref()
            .and_then(|c| c.category.as_deref()?.parse::<Category>().ok())
        {
            Some(c) => (c.as_str().into(), labels::category(c).into()),
            None => unknown(),
        },
        &["can_bo", "cong_chuc", "khong_chuyen_trach"],
    ),
    (
        "qualification",
        "Theo trình độ chuyên môn",
        |t, _| match t.cadre.as_ref().and_then(|c| c.qualification.clone()) {
            Some(q) if !q.trim().is_empty() => (q.clone(), q),
            _ => unknown(),
        },
        &[],
    ),
    (
        "theory_level",
        "Theo trình độ lý luận chính trị",
        |t, _| match t
            .cadre
            .as_ref()
            .and_then(|c| c.theory_level.as_deref()?.parse::<TheoryLevel>().ok())
        {
            Some(l) => (l.as_str().into(), labels::theory_level(l).into()),
            None => unknown(),
        },
        &["so_cap", "trung_cap", "cao_cap", "cu_nhan"],
    ),
];

pub fn build(store: &dyn Store, p: &Period) -> ReportResult<UnitReport> {
    let (courses, trainees) = load(store, p)?;
    let places = places(&courses, &trainees, &p.to);
    let mut totals = Acc::default();
    let mut per_course: BTreeMap<&str, Acc<'_>> = BTreeMap::new();
    for pl in &places {
        totals.add(pl);
        per_course.entry(pl.course.id.as_str()).or_default().add(pl);
    }
    let mut breakdowns = Vec::new();
    for (dimension, title, classify, order) in DIMENSIONS {
        let mut groups: HashMap<String, (String, Acc<'_>)> = HashMap::new();
        for pl in &places {
            let (key, label) = classify(pl.trainee, p.end_year);
            groups.entry(key).or_insert_with(|| (label, Acc::default())).1.add(pl);
        }
        // Known values in their natural order (every one, even when zero, so a sheet
        // always has the same rows), then free-text values by name, unknown last.
        let mut rows = Vec::new();
        for key in *order {
            let (label, acc) = groups.remove(*key).unwrap_or_else(|| {
                let label = sample_label(dimension, key);
                (label, Acc::default())
            });
            rows.push(BreakdownRow {
                key: key.to_string(),
                label,
                figures: acc.finish(),
            });
        }
        let unknown_row = groups.remove("unknown");
        let mut rest: Vec<_> = groups.into_iter().collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, (label, acc)) in rest.into_iter().chain(unknown_row.map(|u| ("unknown".to_string(), u))) {
            rows.push(BreakdownRow {
                key,
                label,
                figures: acc.finish(),
            });
        }
        breakdowns.push(Breakdown { dimension, title, rows });
    }
    let course_lines = courses
        .iter()
        .map(|c| CourseLine {
            id: c.id.clone(),
            unit: c.unit.clone(),
            title: c.title.clone(),
            programme: c.programme.clone(),
            first_date: c.first_date.clone(),
            last_date: c.last_date.clone(),
            figures: per_course
                .remove(c.id.as_str())
                .map(Acc::finish)
                .unwrap_or_else(|| Figures {
                    courses: 1,
                    ..Default::default()
                }),
        })
        .collect();
    let mut totals = totals.finish();
    // A course held with nobody enrolled is still a course held.
    totals.courses = courses.len() as u32;
    Ok(UnitReport {
        unit: p.unit.to_string(),
        unit_name: p.unit_name.clone(),
        from: p.from.clone(),
        to: p.to.clone(),
        as_of: None,
        totals,
        breakdowns,
        courses: course_lines,
    })
}

/// The label of a known key that had no rows.
fn sample_label(dimension: &str, key: &str) -> String {
    let l = match dimension {
        "gender" => key.parse::<Gender>().map(labels::gender).ok(),
        "category" => key.parse::<Category>().map(labels::category).ok(),
        "theory_level" => key.parse::<TheoryLevel>().map(labels::theory_level).ok(),
        "ethnic_minority" => Some(if key == "minority" {
            "Dân tộc thiểu số"
        } else {
            "Dân tộc Kinh"
        }),
        "age_band" => Some(match key {
            "<30" => "Dưới 30 tuổi",
            "30-39" => "Từ 30 đến dưới 40",
            "40-49" => "Từ 40 đến dưới 50",
            "50-59" => "Từ 50 đến dưới 60",
            _ => "Từ 60 tuổi trở lên",
        }),
        _ => None,
    };
    l.unwrap_or(labels::UNKNOWN).to_string()
}

pub(crate) const FIGURE_COLUMNS: &[(&str, f64)] = &[
    ("Số lớp", 9.0),
    ("Số học viên", 12.0),
    ("Số lượt học viên", 15.0),
    ("Số lượt buổi học", 15.0),
    ("Số lượt có mặt", 14.0),
    ("Tỷ lệ chuyên cần (%)", 18.0),
    ("Số lượt đã kết thúc lớp", 20.0),
    ("Số lượt hoàn thành", 17.0),
];

pub(crate) fn figure_cells(f: &Figures) -> Vec<Cell> {
    vec![
        f.courses.into(),
        f.trainees.into(),
        f.places.into(),
        f.trainee_sessions.into(),
        f.attended.into(),
        f.attendance_rate.into(),
        f.finished_places.into(),
        f.completed.into(),
    ]
}

impl Tabular for UnitReport {
    fn tables(&self) -> Vec<Table> {
        let figure_cols = FIGURE_COLUMNS.iter().map(|(h, w)| col(h, *w));
        let mut summary_cols = vec![col("Đơn vị", 30.0), col("Từ ngày", 12.0), col("Đến ngày", 12.0)];
        summary_cols.extend(figure_cols.clone());
        let mut summary_row: Vec<Cell> = vec![
            self.unit_name.as_str().into(),
            self.from.as_str().into(),
            self.to.as_str().into(),
        ];
        summary_row.extend(figure_cells(&self.totals));
        let mut tables = vec![Table {
            id: "summary",
            title: "Tổng hợp".into(),
            columns: summary_cols,
            rows: vec![summary_row],
        }];
        // All breakdowns on one sheet, one block per dimension: what a report page shows.
        let mut cols = vec![col("Tiêu chí", 30.0), col("Nhóm", 34.0)];
        cols.extend(figure_cols.clone());
        let mut rows = Vec::new();
        for b in &self.breakdowns {
            for r in &b.rows {
                let mut row: Vec<Cell> = vec![b.title.into(), r.label.as_str().into()];
                row.extend(figure_cells(&r.figures));
                rows.push(row);
            }
        }
        tables.push(Table {
            id: "breakdown",
            title: "Phân tổ".into(),
            columns: cols,
            rows,
        });
        let mut cols = vec![
            col("Mã lớp", 14.0),
            col("Mã đơn vị", 14.0),
            col("Tên lớp", 40.0),
            col("Loại chương trình", 24.0),
            col("Ngày bắt đầu", 13.0),
            col("Ngày kết thúc", 13.0),
        ];
        cols.extend(figure_cols.skip(1));
        tables.push(Table {
            id: "courses",
            title: "Các lớp".into(),
            columns: cols,
            rows: self
                .courses
                .iter()
                .map(|c| {
                    let mut row: Vec<Cell> = vec![
                        c.id.as_str().into(),
                        c.unit.as_str().into(),
                        c.title.as_str().into(),
                        super::course::programme_label(c.programme.as_deref()).into(),
                        c.first_date.as_str().into(),
                        c.last_date.as_str().into(),
                    ];
                    row.extend(figure_cells(&c.figures).into_iter().skip(1));
                    row
                })
                .collect(),
        });
        tables
    }
}
