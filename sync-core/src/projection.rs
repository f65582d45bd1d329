//! Projection tables: what screens and reports read, rewritten from a document's
//! contents whenever it changes. Device and server share the tables and this code, so
//! a device's `show course` and the server's `report course` read the same shapes
//! (the server's PostgreSQL backend will mirror them).
//!
//! The device passes `sensitive = false`: ethnicity stays in the documents and is not
//! copied into its query tables (it is sensitive data; the device shows none of it).

use rusqlite::{params, Connection, OptionalExtension};

use crate::docs::{Contents, DocId, MarkEntry};
use crate::model::Mark;
use crate::report::{CourseRows, EvaluationRow, MarkInput, SessionRow, TraineeRow};

/// The tables as first shipped. Frozen: a change is a new migration.
pub const TABLES_V1: &str = "
CREATE TABLE p_cadres (
    id TEXT PRIMARY KEY, unit TEXT NOT NULL, name TEXT NOT NULL, gender TEXT NOT NULL, birth_year INTEGER NOT NULL,
    ethnicity TEXT, category TEXT, position TEXT, qualification TEXT, theory_level TEXT, doc_id TEXT NOT NULL
);
CREATE INDEX p_cadres_doc ON p_cadres(doc_id);
CREATE INDEX p_cadres_unit ON p_cadres(unit);
CREATE TABLE p_courses (
    id TEXT PRIMARY KEY, unit TEXT NOT NULL, title TEXT NOT NULL, min_ratio REAL NOT NULL,
    excused_counts INTEGER NOT NULL, planned INTEGER NOT NULL, start_date TEXT, end_date TEXT, doc_id TEXT NOT NULL
);
CREATE TABLE p_sessions (
    course_id TEXT NOT NULL, id TEXT NOT NULL, date TEXT NOT NULL, half_day TEXT, periods INTEGER, topic TEXT,
    part INTEGER NOT NULL, PRIMARY KEY (course_id, id)
);
CREATE TABLE p_enrolments (course_id TEXT NOT NULL, cadre_id TEXT NOT NULL, PRIMARY KEY (course_id, cadre_id));
CREATE TABLE p_marks (
    course_id TEXT NOT NULL, session_id TEXT NOT NULL, cadre_id TEXT NOT NULL, status TEXT NOT NULL, note TEXT,
    conflict TEXT, device_id TEXT NOT NULL, recorded_at INTEGER NOT NULL, doc_id TEXT NOT NULL,
    PRIMARY KEY (course_id, session_id, cadre_id)
);
CREATE INDEX p_marks_doc ON p_marks(doc_id);
";

/// Added with evaluations (device store migration 4, server migration 3). Frozen too.
pub const TABLES_V2: &str = "
CREATE TABLE p_evaluations (
    course_id TEXT NOT NULL, cadre_id TEXT NOT NULL, slot TEXT NOT NULL, kind TEXT NOT NULL, period TEXT,
    score REAL, passed INTEGER, pass INTEGER NOT NULL, PRIMARY KEY (course_id, cadre_id, slot)
);
";
/// Third version: the course's programme type (for the annual report). Frozen.
pub const TABLES_V3: &str = "ALTER TABLE p_courses ADD COLUMN programme TEXT;";

/// Rewrites the rows of one document.
pub fn write(conn: &Connection, id: &DocId, contents: &Contents, sensitive: bool) -> rusqlite::Result<()> {
    let key = id.to_string();
    match contents {
        Contents::Roster(cadres) => {
            conn.execute("DELETE FROM p_cadres WHERE doc_id = ?1", [&key])?;
            let mut stmt = conn.prepare_cached(
                "INSERT OR REPLACE INTO p_cadres
                   (id, unit, name, gender, birth_year, ethnicity, category, position, qualification, theory_level, doc_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for (cid, c) in cadres {
                stmt.execute(params![
                    cid,
                    id.unit.to_string(),
                    c.name,
                    c.gender.as_str(),
                    c.birth_year,
                    c.ethnicity.as_ref().filter(|_| sensitive),
                    c.category.map(|x| x.as_str()),
                    c.position,
                    c.qualification,
                    c.theory_level.map(|x| x.as_str()),
                    key
                ])?;
            }
        }
        Contents::Course(course) => {
            let Some(cid) = &id.course else { return Ok(()) };
            if let Some(m) = &course.meta {
                conn.execute(
                    "INSERT OR REPLACE INTO p_courses
                       (id, unit, title, min_ratio, excused_counts, planned, start_date, end_date, doc_id, programme)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        cid,
                        id.unit.to_string(),
                        m.title,
                        m.min_ratio,
                        m.excused_counts,
                        m.planned_trainees,
                        m.start_date,
                        m.end_date,
                        key,
                        m.programme.map(|p| p.as_str())
                    ],
                )?;
            }
            conn.execute("DELETE FROM p_sessions WHERE course_id = ?1", [cid])?;
            conn.execute("DELETE FROM p_enrolments WHERE course_id = ?1", [cid])?;
            let mut stmt = conn.prepare_cached(
                "INSERT INTO p_sessions (course_id, id, date, half_day, periods, topic, part) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (sid, s) in &course.sessions {
                stmt.execute(params![
                    cid,
                    sid,
                    s.date,
                    s.half_day.map(|h| h.as_str()),
                    s.periods,
                    s.topic,
                    s.part
                ])?;
            }
            let mut stmt = conn.prepare_cached("INSERT INTO p_enrolments (course_id, cadre_id) VALUES (?1, ?2)")?;
            for cadre in course.enrolments.keys() {
                stmt.execute(params![cid, cadre])?;
            }
            conn.execute("DELETE FROM p_evaluations WHERE course_id = ?1", [cid])?;
            let mut stmt = conn.prepare_cached(
                "INSERT INTO p_evaluations (course_id, cadre_id, slot, kind, period, score, passed, pass)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for ((cadre, slot), v) in &course.evaluations {
                stmt.execute(params![
                    cid,
                    cadre,
                    slot,
                    v.kind.as_str(),
                    v.period,
                    v.score,
                    v.passed,
                    v.is_pass()
                ])?;
            }
        }
        Contents::Attendance(marks) => {
            let Some(cid) = &id.course else { return Ok(()) };
            conn.execute("DELETE FROM p_marks WHERE doc_id = ?1", [&key])?;
            for m in marks {
                let Some(cur) = m.current() else { continue };
                let conflict = m.conflict_statuses();
                let conflict =
                    (!conflict.is_empty()).then(|| conflict.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","));
                upsert_mark(conn, cid, &m.session, &m.cadre, cur, conflict.as_deref(), &key)?;
            }
        }
    }
    Ok(())
}

/// Rewrites only the rows of `entries` and deletes those of `removed` (session, trainee):
/// what one push changed in an attendance part (the server's write path).
pub fn write_marks(
    conn: &Connection,
    id: &DocId,
    entries: &[MarkEntry],
    removed: &[(String, String)],
) -> rusqlite::Result<()> {
    let Some(cid) = &id.course else { return Ok(()) };
    let key = id.to_string();
    for m in entries {
        let Some(cur) = m.current() else { continue };
        let conflict = m.conflict_statuses();
        let conflict =
            (!conflict.is_empty()).then(|| conflict.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","));
        upsert_mark(conn, cid, &m.session, &m.cadre, cur, conflict.as_deref(), &key)?;
    }
    let mut stmt =
        conn.prepare_cached("DELETE FROM p_marks WHERE course_id = ?1 AND session_id = ?2 AND cadre_id = ?3")?;
    for (session, cadre) in removed {
        stmt.execute(params![cid, session, cadre])?;
    }
    Ok(())
}

/// Writes one mark row (the device's fast path after a local write, which supersedes
/// every value it has seen for the key, so `conflict` is then `None`).
pub fn upsert_mark(
    conn: &Connection,
    course: &str,
    session: &str,
    cadre: &str,
    mark: &Mark,
    conflict: Option<&str>,
    doc_id: &str,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO p_marks (course_id, session_id, cadre_id, status, note, conflict, device_id, recorded_at, doc_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(course_id, session_id, cadre_id) DO UPDATE SET status = excluded.status, note = excluded.note,
           conflict = excluded.conflict, device_id = excluded.device_id, recorded_at = excluded.recorded_at,
           doc_id = excluded.doc_id",
    )?;
    stmt.execute(params![
        course,
        session,
        cadre,
        mark.status.as_str(),
        mark.note,
        conflict,
        mark.device,
        mark.at,
        doc_id
    ])?;
    Ok(())
}

/// The rows of one course, for [`crate::report::CourseReport::assemble`].
pub fn course_rows(conn: &Connection, course_id: &str) -> rusqlite::Result<Option<CourseRows>> {
    let head: Option<(String, String, f64, bool)> = conn
        .query_row(
            "SELECT unit, title, min_ratio, excused_counts FROM p_courses WHERE id = ?1",
            [course_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((unit, title, min_ratio, excused_counts)) = head else {
        return Ok(None);
    };
    let mut stmt =
        conn.prepare_cached("SELECT id, date, half_day, periods, topic FROM p_sessions WHERE course_id = ?1")?;
    let sessions = stmt
        .query_map([course_id], |r| {
            Ok(SessionRow {
                id: r.get(0)?,
                date: r.get(1)?,
                half_day: r.get(2)?,
                periods: r.get(3)?,
                topic: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT e.cadre_id, c.name FROM p_enrolments e LEFT JOIN p_cadres c ON c.id = e.cadre_id WHERE e.course_id = ?1",
    )?;
    let trainees = stmt
        .query_map([course_id], |r| {
            Ok(TraineeRow {
                id: r.get(0)?,
                name: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt =
        conn.prepare_cached("SELECT session_id, cadre_id, status, note, conflict FROM p_marks WHERE course_id = ?1")?;
    let marks = stmt
        .query_map([course_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter_map(|(s, c, st, note, conflict)| MarkInput::from_row(s, c, &st, note, conflict.as_deref()))
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT cadre_id, slot, kind, period, score, passed, pass FROM p_evaluations WHERE course_id = ?1",
    )?;
    let evaluations = stmt
        .query_map([course_id], |r| {
            Ok(EvaluationRow {
                cadre: r.get(0)?,
                slot: r.get(1)?,
                kind: r.get(2)?,
                period: r.get(3)?,
                score: r.get(4)?,
                passed: r.get(5)?,
                pass: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(CourseRows {
        evaluations,
        id: course_id.to_string(),
        unit,
        title,
        min_ratio,
        excused_counts,
        sessions,
        trainees,
        marks,
    }))
}
