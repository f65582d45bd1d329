//! The course view both sides print: the device's `show course` and the server's
//! `report course` are assembled by this one function from the same kind of rows, so
//! "the server's report equals each device's view" is a property of the code, not luck.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::{MarkStatus, Session};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    pub id: String,
    pub date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_day: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periods: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

impl SessionRow {
    pub fn from_session(id: &str, s: &Session) -> Self {
        SessionRow {
            id: id.to_string(),
            date: s.date.clone(),
            half_day: s.half_day.map(|h| h.as_str().to_string()),
            periods: s.periods,
            topic: s.topic.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraineeRow {
    pub id: String,
    /// None when the trainee's roster is not visible here.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkRow {
    pub session: String,
    pub cadre: String,
    pub status: MarkStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictRow {
    pub session: String,
    pub cadre: String,
    /// Every concurrent status, the current one first.
    pub values: Vec<MarkStatus>,
}

/// One evaluation as the projection tables hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationRow {
    pub cadre: String,
    /// `m2026-12` or `final`.
    pub slot: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    /// Whether it counts as passed (a score of at least `model::PASS_SCORE`, or yes).
    pub pass: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRow {
    pub cadre: String,
    pub attended: u32,
    pub sessions: u32,
    pub ratio: f64,
    /// The attendance threshold is met.
    pub attendance_ok: bool,
    /// Every evaluation the course holds (any slot recorded for any trainee) is
    /// recorded for this trainee and passed; true when the course has none.
    pub evaluations_ok: bool,
    /// Evaluation slots missing or failed for this trainee.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluations_missing_or_failed: Vec<String>,
    /// Attendance AND evaluations: what a certificate needs.
    pub completed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CourseReport {
    pub id: String,
    pub unit: String,
    pub title: String,
    pub min_ratio: f64,
    pub excused_counts: bool,
    pub sessions: Vec<SessionRow>,
    pub trainees: Vec<TraineeRow>,
    pub marks: Vec<MarkRow>,
    pub conflicts: Vec<ConflictRow>,
    #[serde(default)]
    pub evaluations: Vec<EvaluationRow>,
    pub completion: Vec<CompletionRow>,
}

/// The inputs, as either side's query tables hold them.
#[derive(Debug, Clone, Default)]
pub struct CourseRows {
    pub id: String,
    pub unit: String,
    pub title: String,
    pub min_ratio: f64,
    pub excused_counts: bool,
    pub sessions: Vec<SessionRow>,
    pub trainees: Vec<TraineeRow>,
    pub marks: Vec<MarkInput>,
    pub evaluations: Vec<EvaluationRow>,
}

/// One mark key as a query table holds it.
#[derive(Debug, Clone)]
pub struct MarkInput {
    pub session: String,
    pub cadre: String,
    pub status: MarkStatus,
    pub note: Option<String>,
    /// Every concurrent status when in conflict, else empty.
    pub concurrent: Vec<MarkStatus>,
}

impl MarkInput {
    /// From the text columns both sides store: `conflict` is a comma-separated list.
    pub fn from_row(
        session: String,
        cadre: String,
        status: &str,
        note: Option<String>,
        conflict: Option<&str>,
    ) -> Option<Self> {
        Some(MarkInput {
            session,
            cadre,
            status: status.parse().ok()?,
            note,
            concurrent: conflict
                .map(|c| c.split(',').filter_map(|x| x.parse().ok()).collect())
                .unwrap_or_default(),
        })
    }
}

/// Does a trainee who attended `attended` of `sessions` sessions meet `min_ratio`? The one
/// rule every report applies (course, unit, annual), so they agree on who completed.
pub fn completes(attended: u32, sessions: u32, min_ratio: f64) -> bool {
    // Compare in whole sessions so 0.8 x 36 = 28.8 needs 29, with no float edge.
    sessions > 0 && f64::from(attended) + 1e-9 >= min_ratio * f64::from(sessions)
}

/// The evaluation slots of a course that a trainee has not passed, in `slots` order.
/// A course's slots are every slot recorded for any of its enrolled trainees; a trainee
/// completes only when this is empty (and [`completes`] holds). The one evaluation rule
/// of the course view and the unit and annual reports.
pub fn evaluations_missing<'a>(slots: impl IntoIterator<Item = &'a str>, passed: impl Fn(&str) -> bool) -> Vec<String> {
    slots
        .into_iter()
        .filter(|slot| !passed(slot))
        .map(str::to_string)
        .collect()
}

impl CourseReport {
    pub fn assemble(rows: CourseRows) -> CourseReport {
        let mut sessions = rows.sessions;
        sessions.sort_by(|a, b| (&a.date, &a.half_day, &a.id).cmp(&(&b.date, &b.half_day, &b.id)));
        let mut trainees = rows.trainees;
        // Vietnamese list order (given name, then the whole name), the same on every side.
        trainees.sort_by_cached_key(|t| (t.name.as_deref().map(crate::text::name_key), t.id.clone()));
        // Hash sets and per-trainee counters by index: the largest course has 50,000
        // marks, and this runs for every course page the server renders.
        let session_ids: HashSet<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
        let enrolled: HashMap<&str, usize> = trainees.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();

        let mut attended = vec![0u32; trainees.len()];
        let mut raw = rows.marks;
        // Both stores hand the marks over in key order already: the sort then costs one pass.
        raw.sort_by(|a, b| (&a.session, &a.cadre).cmp(&(&b.session, &b.cadre)));
        raw.retain(|m| {
            let Some(&i) = enrolled.get(m.cadre.as_str()) else {
                return false;
            };
            if !session_ids.contains(m.session.as_str()) {
                return false;
            }
            if m.status.attended(rows.excused_counts) {
                attended[i] += 1;
            }
            true
        });
        let mut marks = Vec::with_capacity(raw.len());
        let mut conflicts = Vec::new();
        for MarkInput {
            session,
            cadre,
            status,
            note,
            concurrent,
        } in raw
        {
            if concurrent.len() > 1 {
                conflicts.push(ConflictRow {
                    session: session.clone(),
                    cadre: cadre.clone(),
                    values: concurrent,
                });
            }
            marks.push(MarkRow {
                session,
                cadre,
                status,
                note,
            });
        }
        let mut evaluations: Vec<EvaluationRow> = rows
            .evaluations
            .into_iter()
            .filter(|e| enrolled.contains_key(e.cadre.as_str()))
            .collect();
        evaluations.sort_by(|a, b| (&a.cadre, &a.slot).cmp(&(&b.cadre, &b.slot)));
        let slots: BTreeSet<&str> = evaluations.iter().map(|e| e.slot.as_str()).collect();
        let passed: BTreeSet<(&str, &str)> = evaluations
            .iter()
            .filter(|e| e.pass)
            .map(|e| (e.cadre.as_str(), e.slot.as_str()))
            .collect();
        let total = sessions.len() as u32;
        let completion = trainees
            .iter()
            .zip(&attended)
            .map(|(t, &a)| {
                let ratio = if total == 0 {
                    0.0
                } else {
                    f64::from(a) / f64::from(total)
                };
                // Compare in whole sessions so 0.8 x 36 = 28.8 needs 29, with no float edge.
                let attendance_ok = completes(a, total, rows.min_ratio);
                let missing =
                    evaluations_missing(slots.iter().copied(), |slot| passed.contains(&(t.id.as_str(), slot)));
                CompletionRow {
                    cadre: t.id.clone(),
                    attended: a,
                    sessions: total,
                    ratio: (ratio * 10_000.0).round() / 10_000.0,
                    attendance_ok,
                    evaluations_ok: missing.is_empty(),
                    completed: attendance_ok && missing.is_empty(),
                    evaluations_missing_or_failed: missing,
                }
            })
            .collect();
        CourseReport {
            id: rows.id,
            unit: rows.unit,
            title: rows.title,
            min_ratio: rows.min_ratio,
            excused_counts: rows.excused_counts,
            sessions,
            trainees,
            marks,
            conflicts,
            evaluations,
            completion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mi(session: &str, cadre: &str, status: MarkStatus) -> MarkInput {
        MarkInput {
            session: session.into(),
            cadre: cadre.into(),
            status,
            note: None,
            concurrent: vec![],
        }
    }

    fn rows(excused_counts: bool) -> CourseRows {
        let sessions = (1..=5)
            .map(|i| SessionRow {
                id: format!("s{i}"),
                date: format!("2026-12-0{i}"),
                half_day: None,
                periods: None,
                topic: None,
            })
            .collect();
        let trainees = vec![
            TraineeRow {
                id: "a".into(),
                name: Some("Lò Thị Hoa".into()),
            },
            TraineeRow {
                id: "b".into(),
                name: Some("Vàng A Dình".into()),
            },
        ];
        let mut marks = Vec::new();
        for i in 1..=5 {
            marks.push(mi(&format!("s{i}"), "a", MarkStatus::Present));
        }
        for (i, st) in [
            MarkStatus::Present,
            MarkStatus::Late,
            MarkStatus::LeftEarly,
            MarkStatus::Excused,
            MarkStatus::Absent,
        ]
        .into_iter()
        .enumerate()
        {
            marks.push(mi(&format!("s{}", i + 1), "b", st));
        }
        CourseRows {
            id: "c".into(),
            unit: "2025:03434".into(),
            title: "t".into(),
            min_ratio: 0.8,
            excused_counts,
            sessions,
            trainees,
            marks,
            evaluations: Vec::new(),
        }
    }

    fn ev(cadre: &str, slot: &str, pass: bool) -> EvaluationRow {
        EvaluationRow {
            cadre: cadre.into(),
            slot: slot.into(),
            kind: if slot == "final" { "final" } else { "monthly" }.into(),
            period: None,
            score: Some(if pass { 7.5 } else { 4.0 }),
            passed: None,
            pass,
        }
    }

    #[test]
    fn completion_needs_attendance_and_every_evaluation_passed() {
        let mut input = rows(true);
        // a: full attendance, passed both months; b: 4/5 attended, failed one month.
        input.evaluations = vec![
            ev("a", "m2026-11", true),
            ev("a", "m2026-12", true),
            ev("b", "m2026-11", true),
            ev("b", "m2026-12", false),
            ev("zz", "final", false),
        ];
        let r = CourseReport::assemble(input.clone());
        assert_eq!(
            r.evaluations.len(),
            4,
            "evaluations of trainees not enrolled are left out"
        );
        let a = r.completion.iter().find(|c| c.cadre == "a").expect("a");
        assert!(a.attendance_ok && a.evaluations_ok && a.completed);
        let b = r.completion.iter().find(|c| c.cadre == "b").expect("b");
        assert!(b.attendance_ok && !b.evaluations_ok && !b.completed);
        assert_eq!(b.evaluations_missing_or_failed, vec!["m2026-12".to_string()]);
        // A slot that only some trainees have is missing for the others.
        input.evaluations.retain(|e| e.cadre != "b");
        let r = CourseReport::assemble(input);
        let b = r.completion.iter().find(|c| c.cadre == "b").expect("b");
        assert_eq!(b.evaluations_missing_or_failed.len(), 2);
        assert!(!b.completed);
    }

    #[test]
    fn completion_counts_excused_only_when_the_course_says_so() {
        let r = CourseReport::assemble(rows(false));
        let b = r.completion.iter().find(|c| c.cadre == "b").expect("b");
        assert_eq!((b.attended, b.sessions, b.completed), (3, 5, false));
        assert_eq!(b.ratio, 0.6);
        let r = CourseReport::assemble(rows(true));
        let b = r.completion.iter().find(|c| c.cadre == "b").expect("b");
        assert_eq!((b.attended, b.completed), (4, true));
        let a = r.completion.iter().find(|c| c.cadre == "a").expect("a");
        assert_eq!((a.attended, a.ratio, a.completed), (5, 1.0, true));
    }

    #[test]
    fn marks_of_unknown_sessions_or_trainees_are_not_counted() {
        let mut input = rows(false);
        input.marks.push(mi("s9", "a", MarkStatus::Present));
        input.marks.push(mi("s1", "zz", MarkStatus::Present));
        let r = CourseReport::assemble(input);
        assert_eq!(r.marks.len(), 10);
    }
}
