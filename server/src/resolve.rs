//! A conflict resolved on the web pages: the server writes the chosen status as a new
//! automerge change on the attendance document, under an actor of its own, checks the
//! result with the same schema rules as a device's push, and logs it like any change,
//! so devices receive it on their next sync.
//!
//! Each resolution gets a fresh actor (`srv` and 13 random bytes): server nodes share
//! no counter, and two writers under one actor would corrupt history
//! (DuplicateSeqNumber). The cost is one actor entry per resolution, a few bytes.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, ROOT};
use rand::RngCore;
use sync_core::docs::{self, Contents, DocId};
use sync_core::model::{Mark, MarkStatus};
use sync_core::units::UnitKey;

use crate::store::{Store, StoreError};

/// The device name written in marks the server records.
pub const SERVER_DEVICE: &str = "server";

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

fn server_actor() -> ActorId {
    let mut bytes = [0u8; 16];
    bytes[..3].copy_from_slice(b"srv");
    rand::rng().fill_bytes(&mut bytes[3..]);
    ActorId::from(bytes.to_vec())
}

/// Writes `status` for (session, trainee) of the course in `unit`, superseding every
/// concurrent value. Refuses when the mark has no conflict (nothing to resolve).
pub fn resolve_mark(
    store: &dyn Store,
    unit: &UnitKey,
    course: &str,
    session: &str,
    cadre: &str,
    status: MarkStatus,
    now: i64,
) -> Result<(), ResolveError> {
    let mut outcome: Result<(), ResolveError> = Ok(());
    let written = store.write(&mut |tx| {
        outcome = (|| {
            let cid = DocId::course(unit, course);
            let stored = tx
                .load(&cid)?
                .ok_or_else(|| ResolveError::NotFound(format!("course {course} is not on this server")))?;
            let course_doc = docs::read_course(&cid, &stored.doc).map_err(|v| ResolveError::Invalid(v.reason))?;
            let part = course_doc
                .sessions
                .get(session)
                .map(|s| s.part)
                .ok_or_else(|| ResolveError::NotFound(format!("session {session} is not in course {course}")))?;
            let aid = DocId::attendance(unit, course, part);
            let att = tx
                .load(&aid)?
                .ok_or_else(|| ResolveError::NotFound(format!("no attendance is recorded for session {session}")))?;
            let key = docs::mark_key(session, cadre);
            let before = match docs::read(&aid, &att.doc, Some(&course_doc)) {
                Ok(Contents::Attendance(marks)) => marks,
                Ok(_) => return Err(ResolveError::Invalid("not an attendance document".into())),
                Err(v) => return Err(ResolveError::Invalid(v.reason)),
            };
            let Some(entry) = before.iter().find(|m| m.session == session && m.cadre == cadre) else {
                return Err(ResolveError::NotFound(
                    "no mark is recorded for this trainee and session".into(),
                ));
            };
            if !entry.is_conflict() {
                return Err(ResolveError::Invalid(
                    "this mark has no conflict any more (it may have been resolved already)".into(),
                ));
            }
            let mut doc = att.doc.clone();
            doc.set_actor(server_actor());
            let heads = doc.get_heads();
            let mark = Mark {
                status,
                note: None,
                periods: None,
                device: SERVER_DEVICE.to_string(),
                at: now,
            };
            let mut t = doc.transaction();
            t.put(ROOT, key.as_str(), docs::encode(&mark))
                .map_err(|e| ResolveError::Store(StoreError::Doc(e)))?;
            let _ = t.commit_with(
                CommitOptions::default()
                    .with_message("resolve conflict (web)")
                    .with_time(now * 1000),
            );
            let changes = doc.get_changes(&heads);
            // The same rules as a device's push: a change that breaks them is not stored.
            let contents = docs::read(&aid, &doc, Some(&course_doc)).map_err(|v| ResolveError::Invalid(v.reason))?;
            if let Contents::Attendance(marks) = &contents {
                if marks
                    .iter()
                    .any(|m| m.session == session && m.cadre == cadre && m.is_conflict())
                {
                    return Err(ResolveError::Invalid("the conflict remained after the write".into()));
                }
            }
            tx.store(
                &aid,
                &doc,
                &changes,
                &crate::store::Projection::Whole(contents),
                SERVER_DEVICE,
            )?;
            Ok(())
        })();
        // Only a store failure aborts the transaction; a refusal commits nothing anyway.
        match &outcome {
            Err(ResolveError::Store(_)) => Err(StoreError::Other("resolve failed".into())),
            _ => Ok(()),
        }
    });
    match (written, outcome) {
        (_, Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e.into()),
        (Ok(()), Ok(())) => Ok(()),
    }
}
