//! How the domain lives in automerge documents.
//!
//! **Every document is a flat map of scalar values at the root.** A key names one entity
//! (`c/{cadre}`, `meta`, `s/{session}`, `e/{cadre}`, `m/{session}/{cadre}`) and its value
//! is a small JSON string. Why:
//! - no nested object is ever created, so two devices that start the same document
//!   offline cannot hide each other's contents (automerge#526): there is no skeleton;
//! - a mark as one flat value writes 3.6x faster and loads 2x faster than a nested map
//!   (measured on automerge 0.12, shared/DESIGN.md);
//! - a conflict is exactly "one key with several concurrent values" (`get_all`).
//!
//! Documents per course: one course document (meta, sessions, enrolments) and one or
//! more attendance documents ("parts") that each hold the marks of a run of sessions,
//! sized so a part stays under [`MAX_MARKS_PER_PART`] marks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use automerge::{Automerge, ReadDoc, ROOT};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{InvalidInput, SchemaViolation};
use crate::model::{check_id, Cadre, CourseMeta, Enrolment, Evaluation, Mark, Session};
use crate::units::UnitKey;

/// Upper bound on marks per attendance document: "a few thousand" (shared/DESIGN.md:
/// 2,520 marks load in 11 ms, 50,000 in 260 ms with a 100 MB peak).
pub const MAX_MARKS_PER_PART: u32 = 4000;

/// How many sessions one attendance document takes for a course of `trainees` trainees.
pub fn sessions_per_part(trainees: u32) -> u32 {
    (MAX_MARKS_PER_PART / trainees.max(1)).max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DocKind {
    Roster,
    Course,
    Attendance,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Roster => "roster",
            DocKind::Course => "course",
            DocKind::Attendance => "att",
        }
    }
}

/// A document's identity. The owning unit is part of it so scope is checked without
/// reading the document: `roster:2025:03434`, `course:2025:03434:{course}`,
/// `att:2025:03434:{course}:{part}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId {
    pub kind: DocKind,
    pub unit: UnitKey,
    pub course: Option<String>,
    pub part: u32,
}

impl DocId {
    pub fn roster(unit: &UnitKey) -> Self {
        DocId {
            kind: DocKind::Roster,
            unit: unit.clone(),
            course: None,
            part: 0,
        }
    }
    pub fn course(unit: &UnitKey, course: &str) -> Self {
        DocId {
            kind: DocKind::Course,
            unit: unit.clone(),
            course: Some(course.to_string()),
            part: 0,
        }
    }
    pub fn attendance(unit: &UnitKey, course: &str, part: u32) -> Self {
        DocId {
            kind: DocKind::Attendance,
            unit: unit.clone(),
            course: Some(course.to_string()),
            part,
        }
    }
    /// The course document this document belongs to (itself for a course document).
    pub fn course_doc(&self) -> Option<DocId> {
        self.course.as_ref().map(|c| DocId::course(&self.unit, c))
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.course) {
            (DocKind::Roster, _) => write!(f, "roster:{}", self.unit),
            (DocKind::Course, Some(c)) => write!(f, "course:{}:{c}", self.unit),
            (DocKind::Attendance, Some(c)) => write!(f, "att:{}:{c}:{}", self.unit, self.part),
            (_, None) => write!(f, "invalid:{}", self.unit),
        }
    }
}

impl FromStr for DocId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, InvalidInput> {
        let bad = || InvalidInput::new(format!("`{s}` is not a document id"));
        let parts: Vec<&str> = s.split(':').collect();
        let unit = |i: usize| -> Result<UnitKey, InvalidInput> {
            format!(
                "{}:{}",
                parts.get(i).ok_or_else(bad)?,
                parts.get(i + 1).ok_or_else(bad)?
            )
            .parse()
        };
        let id = match (parts.first().copied(), parts.len()) {
            (Some("roster"), 3) => DocId::roster(&unit(1)?),
            (Some("course"), 4) => {
                check_id("course", parts[3])?;
                DocId::course(&unit(1)?, parts[3])
            }
            (Some("att"), 5) => {
                check_id("course", parts[3])?;
                let part = parts[4].parse().map_err(|_| bad())?;
                DocId::attendance(&unit(1)?, parts[3], part)
            }
            _ => return Err(bad()),
        };
        Ok(id)
    }
}

pub const META_KEY: &str = "meta";

pub fn cadre_key(cadre: &str) -> String {
    format!("c/{cadre}")
}
pub fn session_key(session: &str) -> String {
    format!("s/{session}")
}
pub fn enrolment_key(cadre: &str) -> String {
    format!("e/{cadre}")
}
pub fn mark_key(session: &str, cadre: &str) -> String {
    format!("m/{session}/{cadre}")
}
/// An evaluation lives in the course document: few per trainee, read with enrolments.
pub fn evaluation_key(cadre: &str, slot: &str) -> String {
    format!("v/{cadre}/{slot}")
}

/// What a document key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key<'a> {
    Cadre(&'a str),
    Meta,
    Session(&'a str),
    Enrolment(&'a str),
    Mark { session: &'a str, cadre: &'a str },
    Evaluation { cadre: &'a str, slot: &'a str },
}

pub fn parse_key(key: &str) -> Option<Key<'_>> {
    if key == META_KEY {
        return Some(Key::Meta);
    }
    let (prefix, rest) = key.split_once('/')?;
    let ok = |id: &str| check_id("key", id).is_ok();
    match prefix {
        "c" if ok(rest) => Some(Key::Cadre(rest)),
        "s" if ok(rest) => Some(Key::Session(rest)),
        "e" if ok(rest) => Some(Key::Enrolment(rest)),
        "m" => {
            let (session, cadre) = rest.split_once('/')?;
            (ok(session) && ok(cadre)).then_some(Key::Mark { session, cadre })
        }
        "v" => {
            let (cadre, slot) = rest.split_once('/')?;
            (ok(cadre) && ok(slot)).then_some(Key::Evaluation { cadre, slot })
        }
        _ => None,
    }
}

/// Every value stored at `key`: the winner first, then the concurrent ones (a conflict
/// when there are several). Values that are not strings are returned as `None`.
pub fn values_at(doc: &Automerge, key: &str) -> Vec<Option<String>> {
    // One lookup: automerge's current value (`get`) is the last of `get_all`. Put it
    // first so "current value" and "values[0]" agree everywhere.
    let mut all = doc.get_all(ROOT, key).unwrap_or_default();
    if let Some(winner) = all.pop() {
        all.insert(0, winner);
    }
    all.into_iter().map(|(v, _)| v.as_str().map(str::to_string)).collect()
}

fn decode<T: DeserializeOwned>(key: &str, raw: &Option<String>) -> Result<T, SchemaViolation> {
    let s = raw
        .as_deref()
        .ok_or_else(|| SchemaViolation::at(key, "value is not a string"))?;
    serde_json::from_str(s).map_err(|e| SchemaViolation::at(key, format!("value does not parse: {e}")))
}

pub fn encode<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs cannot fail (no maps with non-string keys).
    serde_json::to_string(value).unwrap_or_default()
}

/// A course document read out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CourseDoc {
    pub meta: Option<CourseMeta>,
    pub sessions: BTreeMap<String, Session>,
    pub enrolments: BTreeMap<String, Enrolment>,
    /// (cadre, slot) -> the evaluation (the current value).
    pub evaluations: BTreeMap<(String, String), Evaluation>,
}

/// One mark key read out: the current value and every concurrent one.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkEntry {
    pub session: String,
    pub cadre: String,
    /// Current value first, then the concurrent ones; more than one is a conflict.
    pub values: Vec<Mark>,
}

impl MarkEntry {
    pub fn current(&self) -> Option<&Mark> {
        self.values.first()
    }
    pub fn is_conflict(&self) -> bool {
        let mut statuses: Vec<_> = self.values.iter().map(|m| m.status).collect();
        statuses.sort();
        statuses.dedup();
        statuses.len() > 1
    }
}

/// Everything a document holds, parsed and checked against the schema of its kind.
/// Course-level rules (marks refer to sessions of this part and enrolled trainees) need
/// the course document: pass it for attendance documents.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // short-lived, one per document read
pub enum Contents {
    Roster(BTreeMap<String, Cadre>),
    Course(CourseDoc),
    Attendance(Vec<MarkEntry>),
}

pub fn read(id: &DocId, doc: &Automerge, course: Option<&CourseDoc>) -> Result<Contents, SchemaViolation> {
    match id.kind {
        DocKind::Roster => {
            let mut cadres = BTreeMap::new();
            for key in doc.keys(ROOT) {
                let Some(Key::Cadre(cid)) = parse_key(&key) else {
                    return Err(SchemaViolation::at(&key, "unknown field in a roster"));
                };
                for raw in values_at(doc, &key).iter().rev() {
                    let c: Cadre = decode(&key, raw)?;
                    c.check().map_err(|e| SchemaViolation::at(&key, e.0))?;
                    cadres.insert(cid.to_string(), c);
                }
            }
            Ok(Contents::Roster(cadres))
        }
        DocKind::Course => {
            let mut course = CourseDoc::default();
            for key in doc.keys(ROOT) {
                let values = values_at(doc, &key);
                // Check every concurrent value; keep the winner (first).
                match parse_key(&key) {
                    Some(Key::Meta) => {
                        for raw in values.iter().rev() {
                            let m: CourseMeta = decode(&key, raw)?;
                            m.check().map_err(|e| SchemaViolation::at(&key, e.0))?;
                            course.meta = Some(m);
                        }
                    }
                    Some(Key::Session(sid)) => {
                        for raw in values.iter().rev() {
                            let s: Session = decode(&key, raw)?;
                            s.check().map_err(|e| SchemaViolation::at(&key, e.0))?;
                            course.sessions.insert(sid.to_string(), s);
                        }
                    }
                    Some(Key::Enrolment(cid)) => {
                        for raw in values.iter().rev() {
                            let e: Enrolment = decode(&key, raw)?;
                            course.enrolments.insert(cid.to_string(), e);
                        }
                    }
                    Some(Key::Evaluation { cadre, slot }) => {
                        for raw in values.iter().rev() {
                            let v: Evaluation = decode(&key, raw)?;
                            v.check().map_err(|e| SchemaViolation::at(&key, e.0))?;
                            if v.slot() != slot {
                                return Err(SchemaViolation::at(&key, "the evaluation does not match its key"));
                            }
                            course.evaluations.insert((cadre.to_string(), slot.to_string()), v);
                        }
                    }
                    _ => return Err(SchemaViolation::at(&key, "unknown field in a course")),
                }
            }
            let stray: Vec<String> = course
                .evaluations
                .keys()
                .filter(|(cadre, _)| !course.enrolments.contains_key(cadre))
                .map(|(cadre, slot)| evaluation_key(cadre, slot))
                .collect();
            if !stray.is_empty() {
                return Err(SchemaViolation {
                    reason: format!("{}: the trainee is not enrolled in this course", stray[0]),
                    keys: stray,
                });
            }
            Ok(Contents::Course(course))
        }
        DocKind::Attendance => {
            let keys: Vec<String> = doc.keys(ROOT).collect();
            let marks = read_marks(id, doc, course, keys.iter().map(String::as_str))?;
            Ok(Contents::Attendance(marks.entries))
        }
    }
}

/// Reads and checks only `keys` of an attendance document, as they stand in `doc`: the
/// entries still there, and the (session, trainee) of the keys no longer there. What a
/// push changed, when the rest of the document was checked when it arrived (the server's
/// write path: a roll call costs its own marks, not the whole part).
pub fn read_marks<'k>(
    id: &DocId,
    doc: &Automerge,
    course: Option<&CourseDoc>,
    keys: impl IntoIterator<Item = &'k str>,
) -> Result<MarkChanges, SchemaViolation> {
    let mut marks = Vec::new();
    let mut removed = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for key in keys {
        let Some(Key::Mark { session, cadre }) = parse_key(key) else {
            return Err(SchemaViolation::at(key, "unknown field in an attendance document"));
        };
        let values = values_at(doc, key);
        if values.is_empty() {
            removed.push((session.to_string(), cadre.to_string()));
            continue;
        }
        if let Some(course) = course {
            let problem = match course.sessions.get(session) {
                None => Some(format!("session {session} does not exist in this course")),
                Some(s) if s.part != id.part => {
                    Some(format!("session {session} belongs to part {}, not {}", s.part, id.part))
                }
                Some(_) if !course.enrolments.contains_key(cadre) => {
                    Some(format!("trainee {cadre} is not enrolled in this course"))
                }
                Some(_) => None,
            };
            if let Some(p) = problem {
                reasons.push(format!("{key}: {p}"));
                bad.push(key.to_string());
                continue;
            }
        }
        let mut entry = Vec::new();
        for raw in values {
            let m: Mark = decode(key, &raw)?;
            m.check().map_err(|e| SchemaViolation::at(key, e.0))?;
            entry.push(m);
        }
        marks.push(MarkEntry {
            session: session.to_string(),
            cadre: cadre.to_string(),
            values: entry,
        });
    }
    if !bad.is_empty() {
        let more = if reasons.len() > 3 {
            format!(" (and {} more)", reasons.len() - 3)
        } else {
            String::new()
        };
        return Err(SchemaViolation {
            reason: format!("{}{more}", reasons[..reasons.len().min(3)].join("; ")),
            keys: bad,
        });
    }
    Ok(MarkChanges {
        entries: marks,
        removed,
    })
}

/// Some keys of an attendance document read out: the entries there, and the
/// (session, trainee) of the keys no longer there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarkChanges {
    pub entries: Vec<MarkEntry>,
    pub removed: Vec<(String, String)>,
}

/// The root keys the changes write or delete, or Err with the first change that touches
/// anything but the root map (no document of ours has a nested object).
pub fn touched_keys<'c>(
    changes: impl IntoIterator<Item = &'c automerge::Change>,
) -> Result<BTreeSet<String>, SchemaViolation> {
    let mut keys = BTreeSet::new();
    for change in changes {
        for op in change.decode().operations {
            match (&op.obj, &op.key) {
                (automerge::legacy::ObjectId::Root, automerge::legacy::Key::Map(k)) => {
                    keys.insert(k.to_string());
                }
                _ => {
                    return Err(SchemaViolation {
                        reason: format!("change {} writes inside a nested object", change.hash()),
                        keys: vec![],
                    })
                }
            }
        }
    }
    Ok(keys)
}

/// Reads a course document, for callers that need only that.
pub fn read_course(id: &DocId, doc: &Automerge) -> Result<CourseDoc, SchemaViolation> {
    match read(&id.course_doc().unwrap_or_else(|| id.clone()), doc, None)? {
        Contents::Course(c) => Ok(c),
        _ => Err(SchemaViolation {
            reason: "not a course document".into(),
            keys: vec![],
        }),
    }
}

/// Sessions of a course that live in attendance part `part`.
pub fn sessions_in_part(course: &CourseDoc, part: u32) -> BTreeSet<String> {
    course
        .sessions
        .iter()
        .filter(|(_, s)| s.part == part)
        .map(|(id, _)| id.clone())
        .collect()
}

/// The part a new session goes to: the last part while it has room for the course's
/// trainees (planned or enrolled, whichever is more), else a new one.
pub fn part_for_new_session(course: &CourseDoc) -> u32 {
    let trainees = course
        .meta
        .as_ref()
        .map(|m| m.planned_trainees)
        .unwrap_or(1)
        .max(course.enrolments.len() as u32);
    let per_part = sessions_per_part(trainees);
    let last = course.sessions.values().map(|s| s.part).max();
    match last {
        None => 0,
        Some(p) => {
            let in_last = course.sessions.values().filter(|s| s.part == p).count() as u32;
            if in_last < per_part {
                p
            } else {
                p + 1
            }
        }
    }
}

impl MarkEntry {
    /// The distinct statuses in conflict, the current one first; empty when none.
    pub fn conflict_statuses(&self) -> Vec<crate::model::MarkStatus> {
        if !self.is_conflict() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for m in &self.values {
            if !out.contains(&m.status) {
                out.push(m.status);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;

    use super::*;
    use crate::model::{Mark, MarkStatus};

    fn unit() -> UnitKey {
        "2025:03434".parse().expect("unit")
    }

    fn doc_with(entries: &[(&str, &str)]) -> Automerge {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        for (k, v) in entries {
            tx.put(ROOT, *k, *v).expect("put");
        }
        tx.commit();
        doc
    }

    fn course_doc(sessions: &[(&str, u32)], enrolled: &[&str]) -> CourseDoc {
        let mut c = CourseDoc::default();
        for (id, part) in sessions {
            let s = Session {
                date: "2026-12-01".into(),
                half_day: None,
                periods: None,
                topic: None,
                part: *part,
            };
            c.sessions.insert(id.to_string(), s);
        }
        for e in enrolled {
            c.enrolments.insert(e.to_string(), Enrolment { at: 0 });
        }
        c
    }

    fn mark(status: MarkStatus) -> String {
        encode(&Mark {
            status,
            note: None,
            periods: None,
            device: "d".into(),
            at: 1,
        })
    }

    #[test]
    fn doc_ids_round_trip_and_reject_garbage() {
        for id in [
            DocId::roster(&unit()),
            DocId::course(&unit(), "abc"),
            DocId::attendance(&unit(), "abc", 3),
        ] {
            assert_eq!(id.to_string().parse::<DocId>(), Ok(id.clone()));
        }
        assert_eq!(DocId::attendance(&unit(), "abc", 3).to_string(), "att:2025:03434:abc:3");
        for bad in [
            "",
            "roster:2025",
            "course:2025:03434:a/b",
            "att:2025:03434:abc:x",
            "mark:2025:03434",
        ] {
            assert!(bad.parse::<DocId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_parse_only_in_the_known_shapes() {
        assert_eq!(
            parse_key("m/s1/c2"),
            Some(Key::Mark {
                session: "s1",
                cadre: "c2"
            })
        );
        assert_eq!(parse_key("meta"), Some(Key::Meta));
        assert_eq!(parse_key("c/x"), Some(Key::Cadre("x")));
        for bad in ["m/s1", "x/y", "c/", "m/s1/c2/d", "c/a b"] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn attendance_schema_requires_known_sessions_of_the_part_and_enrolled_trainees() {
        let id = DocId::attendance(&unit(), "abc", 0);
        let course = course_doc(&[("s1", 0), ("s2", 1)], &["c1"]);
        let good = doc_with(&[("m/s1/c1", &mark(MarkStatus::Present))]);
        assert!(read(&id, &good, Some(&course)).is_ok());
        let cases = [
            ("m/s9/c1", mark(MarkStatus::Present), "does not exist"),
            ("m/s2/c1", mark(MarkStatus::Present), "belongs to part 1"),
            ("m/s1/c9", mark(MarkStatus::Present), "not enrolled"),
            ("m/s1/c1", r#"{"s":"here","d":"d","t":1}"#.to_string(), "does not parse"),
            ("zzz", mark(MarkStatus::Present), "unknown field"),
        ];
        for (key, value, why) in cases {
            let doc = doc_with(&[(key, &value)]);
            let err = read(&id, &doc, Some(&course)).expect_err(key);
            assert!(err.reason.contains(why), "{key}: {}", err.reason);
        }
        let err = read(&id, &doc_with(&[("m/s1/c9", &mark(MarkStatus::Late))]), Some(&course)).expect_err("bad");
        assert_eq!(err.keys, vec!["m/s1/c9".to_string()]);
    }

    #[test]
    fn concurrent_values_are_all_kept_and_listed() {
        let id = DocId::attendance(&unit(), "abc", 0);
        let mut a = doc_with(&[("m/s1/c1", &mark(MarkStatus::Present))]);
        let mut b = a.fork();
        for (doc, st) in [(&mut a, MarkStatus::Late), (&mut b, MarkStatus::Absent)] {
            let mut tx = doc.transaction();
            tx.put(ROOT, "m/s1/c1", mark(st)).expect("put");
            tx.commit();
        }
        a.merge(&mut b).expect("merge");
        let Ok(Contents::Attendance(marks)) = read(&id, &a, None) else {
            panic!("attendance")
        };
        assert_eq!(marks.len(), 1);
        let mut statuses = marks[0].conflict_statuses();
        assert_eq!(
            statuses[0],
            marks[0].current().expect("current").status,
            "current first"
        );
        statuses.sort();
        assert_eq!(statuses, vec![MarkStatus::Late, MarkStatus::Absent]);
    }

    #[test]
    fn the_first_value_is_the_one_automerge_calls_current() {
        let mut a = doc_with(&[("k", "base")]);
        let mut forks: Vec<Automerge> = (0..3).map(|_| a.fork()).collect();
        for (i, f) in forks.iter_mut().enumerate() {
            let mut tx = f.transaction();
            tx.put(ROOT, "k", format!("v{i}")).expect("put");
            tx.commit();
        }
        for f in &mut forks {
            a.merge(f).expect("merge");
        }
        let values = values_at(&a, "k");
        assert_eq!(values.len(), 3, "three concurrent values");
        let (current, _) = a.get(ROOT, "k").expect("get").expect("a value");
        assert_eq!(values[0].as_deref(), current.as_str());
    }

    #[test]
    fn sessions_fill_a_part_up_to_the_mark_bound_then_open_a_new_one() {
        let mut c = CourseDoc {
            meta: Some(crate::model::CourseMeta {
                title: "t".into(),
                topic: None,
                organiser: None,
                form: None,
                venue: None,
                start_date: None,
                end_date: None,
                min_ratio: 0.8,
                excused_counts: false,
                planned_trainees: 1000,
                programme: None,
            }),
            ..Default::default()
        };
        let per_part = sessions_per_part(1000);
        assert_eq!(per_part, 4);
        for i in 0..10 {
            let part = part_for_new_session(&c);
            assert_eq!(part, i / per_part, "session {i}");
            let s = Session {
                date: "2026-12-01".into(),
                half_day: None,
                periods: None,
                topic: None,
                part,
            };
            c.sessions.insert(format!("s{i}"), s);
        }
        // 70 trainees x 36 sessions = 2,520 marks: one part.
        assert!(sessions_per_part(70) >= 36);
    }
}
