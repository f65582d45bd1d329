//! Reports as the data stood at a past time. The server logs every change it accepts
//! with the time it received it (`changes.received_at`), and automerge changes carry
//! their whole history, so the documents of that time are the changes received up to
//! it, applied in log order. They are rebuilt into a scratch store in memory with the
//! same projection code a sync uses, and any report is computed on it unchanged.
//!
//! "Received" rather than the device's recording time: a report as of a date shows what
//! the province could have seen that day (a tablet offline for a week had not told it
//! yet), and device clocks can be wrong.

use std::collections::BTreeMap;

use automerge::Automerge;
use sync_core::docs::{self, Contents, DocId, DocKind};

use super::{ReportError, ReportResult};
use crate::sqlite::SqliteStore;
use crate::store::Store;

/// Parses `--as-of`: a day `YYYY-MM-DD` means the end of that day in Vietnam (UTC+7);
/// an RFC 3339 time (`2026-12-01T10:00:00+07:00`) is taken as given. Unix seconds.
pub fn parse_as_of(s: &str) -> ReportResult<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let d = super::parse_date("--as-of", s)
        .map_err(|_| ReportError::Input(format!("--as-of `{s}` is neither YYYY-MM-DD nor an RFC 3339 time")))?;
    let next = d
        .next_day()
        .ok_or_else(|| ReportError::Input(format!("--as-of `{s}` is out of range")))?;
    let offset = time::UtcOffset::from_hms(7, 0, 0).map_err(|e| ReportError::Input(e.to_string()))?;
    Ok(next.midnight().assume_offset(offset).unix_timestamp() - 1)
}

/// A store holding the documents as they were at `until` (Unix seconds, inclusive).
pub fn rebuild(store: &dyn Store, until: i64) -> ReportResult<SqliteStore> {
    let mut by_doc: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (doc_id, data) in store.changes_until(until)? {
        by_doc.entry(doc_id).or_default().extend_from_slice(&data);
    }
    let mut loaded: Vec<(DocId, Automerge)> = Vec::new();
    for (key, bytes) in by_doc {
        // Ids and changes were checked when they were accepted; one that does not parse
        // now would be a store fault, reported rather than skipped.
        let id: DocId = key
            .parse()
            .map_err(|_| ReportError::Export(format!("the change log names an invalid document `{key}`")))?;
        let mut doc = Automerge::new();
        doc.load_incremental(&bytes)
            .map_err(|e| ReportError::Export(format!("cannot replay the changes of {key}: {e}")))?;
        loaded.push((id, doc));
    }
    // Course documents first: reading an attendance document checks it against its course.
    let mut courses = BTreeMap::new();
    let mut out = Vec::new();
    for (id, doc) in loaded.iter().filter(|(id, _)| id.kind != DocKind::Attendance) {
        let contents = docs::read(id, doc, None)
            .map_err(|e| ReportError::Export(format!("{id} as of then does not read: {}", e.reason)))?;
        if let Contents::Course(c) = &contents {
            courses.insert(id.clone(), c.clone());
        }
        out.push((id.clone(), contents));
    }
    for (id, doc) in loaded.iter().filter(|(id, _)| id.kind == DocKind::Attendance) {
        let course = id.course_doc().and_then(|c| courses.get(&c));
        // A part whose course document had not arrived yet is read without the course
        // checks: its marks are then not counted by any report (no session, no trainee).
        let contents = docs::read(id, doc, course)
            .or_else(|_| docs::read(id, doc, None))
            .map_err(|e| ReportError::Export(format!("{id} as of then does not read: {}", e.reason)))?;
        out.push((id.clone(), contents));
    }
    let scratch = SqliteStore::open_in_memory()?;
    scratch.project(&out)?;
    Ok(scratch)
}

/// `until` as the report prints it (`2026-12-01 23:59:59 +07:00`).
pub fn describe(until: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] [offset_hour sign:mandatory]:[offset_minute]"
    );
    time::OffsetDateTime::from_unix_timestamp(until)
        .ok()
        .and_then(|t| time::UtcOffset::from_hms(7, 0, 0).ok().map(|o| t.to_offset(o)))
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| until.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_means_its_end_in_vietnam() {
        // 2026-11-15 23:59:59 +07:00 = 2026-11-15 16:59:59 UTC.
        assert_eq!(parse_as_of("2026-11-15").ok(), Some(1_794_761_999));
        assert_eq!(parse_as_of("2026-11-15T23:59:59+07:00").ok(), Some(1_794_761_999));
        assert_eq!(describe(1_794_761_999), "2026-11-15 23:59:59 +07:00");
        assert!(parse_as_of("15/11/2026").is_err());
    }
}
