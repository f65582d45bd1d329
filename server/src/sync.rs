//! The server half of the sync protocol, written once against [`DocTx`] so every
//! backend runs the same rules. Per pushed document: scope, actor, schema; all or
//! nothing. Then the documents of the device's scope that changed since its cursor.
//!
//! No state is kept between requests: the device's cursor and heads travel with each
//! request, so any node can serve any request and a restart forgets nothing.

use automerge::{ActorId, ChangeHash, ReadDoc};
use sync_core::docs::{self, DocId, DocKind};
use sync_core::protocol::{
    hashes_from_wire, hashes_to_wire, pushed_heads, DocPush, DocResult, DocUpdate, Outcome, SyncRequest, SyncResponse,
};
use sync_core::units::{UnitKey, UnitTree};

use crate::store::{DocTx, Projection, StoreResult};

/// Bytes of document data per response before the rest is left for the next request.
pub const RESPONSE_BUDGET: usize = 512 * 1024;

/// Who is syncing, as authenticated.
#[derive(Debug, Clone)]
pub struct Peer {
    pub device_id: String,
    pub unit: UnitKey,
    pub actor: ActorId,
}

struct Refusal {
    reason: String,
    keys: Vec<String>,
}

impl Refusal {
    fn whole(reason: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
            keys: Vec::new(),
        }
    }
}

/// The units whose documents a device of `unit` may read and write.
pub fn scope_units(unit: &UnitKey) -> Vec<String> {
    // `scope` adds the other scheme's communes across the 2025 reform (units.rs).
    UnitTree::reference()
        .scope(unit)
        .iter()
        .map(|u| u.to_string())
        .collect()
}

pub fn process(tx: &mut dyn DocTx, peer: &Peer, req: &SyncRequest) -> StoreResult<SyncResponse> {
    let mut results: Vec<Option<DocResult>> = vec![None; req.docs.len()];
    // Course documents first: marks are checked against the course as it stands after
    // this same request. Results go back in the order of the pushes.
    let mut order: Vec<(usize, &DocPush)> = req.docs.iter().enumerate().collect();
    // Then by id: a backend that locks each pushed document takes the locks in one
    // global order, so two requests never wait on each other's locks.
    order.sort_by(|(_, a), (_, b)| {
        let kind = |p: &DocPush| p.doc.parse::<DocId>().map(|d| d.kind).unwrap_or(DocKind::Attendance);
        kind(a).cmp(&kind(b)).then_with(|| a.doc.cmp(&b.doc))
    });
    let mut sent: Vec<String> = Vec::new();
    for (index, push) in order {
        sent.push(push.doc.clone());
        match accept(tx, peer, push)? {
            Ok(r) => results[index] = Some(r),
            Err(refusal) => {
                tx.refuse(&peer.device_id, &push.doc, &refusal.reason, &push.data)?;
                // Send the server's state back so the device can rebuild, if in scope.
                let (heads, data) = match push.doc.parse::<DocId>() {
                    Ok(id) if in_scope(peer, &id) => match tx.load(&id)? {
                        Some(stored) => (stored.doc.get_heads(), stored.snapshot),
                        None => (Vec::new(), Vec::new()),
                    },
                    _ => (Vec::new(), Vec::new()),
                };
                results[index] = Some(DocResult {
                    outcome: Outcome::Refused {
                        reason: refusal.reason,
                        keys: refusal.keys,
                    },
                    heads: hashes_to_wire(&heads),
                    data,
                });
            }
        }
    }
    let results = results.into_iter().flatten().collect();

    let asked = if req.max_response_bytes == 0 {
        RESPONSE_BUDGET
    } else {
        req.max_response_bytes as usize
    };
    let budget = RESPONSE_BUDGET.min(asked);
    let (updates, cursor, more) = updates_since(tx, &peer.unit, req.cursor as i64, &sent, budget)?;
    Ok(SyncResponse {
        results,
        updates,
        cursor,
        more,
    })
}

/// Everything in the scope of `unit` that changed after `cursor`, oldest first, within
/// `budget` bytes, skipping documents in `sent` (answered already). Returns the updates,
/// the new cursor and whether more wait.
///
/// The new cursor C promises that the device now holds every change in its scope logged
/// up to C. Whole documents go first, oldest update first, while they fit; C is then the
/// last one's update, but never past the first change after the cursor of a document
/// left out (its changes may be older than the last included document's). When not even
/// that moves the cursor (the next document in sequence order is larger than the
/// budget), the response is a piece of that one document: a bundle of its next changes
/// in sequence order (a causal prefix: the server logs a document's changes after their
/// dependencies), up to the budget, with empty heads (the device derives them), and C
/// is the piece's last change. Changes are logged once and numbered in commit order, so
/// a piece cut at a sequence number is exact whatever other devices write meanwhile.
pub fn updates_since(
    tx: &mut dyn DocTx,
    unit: &UnitKey,
    cursor: i64,
    sent: &[String],
    budget: usize,
) -> StoreResult<(Vec<DocUpdate>, u64, bool)> {
    let units = scope_units(unit);
    let changed = tx.changed_since(&units, cursor)?;
    let mut updates = Vec::new();
    let mut left = budget;
    let mut new_cursor = cursor;
    let mut cut = false;
    // Documents that cannot be sent (an id that does not parse, or gone): passed over.
    let mut skipped: Vec<&str> = Vec::new();
    for (doc, created, updated) in &changed {
        if sent.contains(doc) {
            new_cursor = new_cursor.max(*updated);
            continue;
        }
        let Ok(id) = doc.parse::<DocId>() else {
            skipped.push(doc);
            continue;
        };
        let Some(stored) = tx.load(&id)? else {
            skipped.push(doc);
            continue;
        };
        // A document the device has none of comes whole (compact); one it has comes as
        // the changes logged after its cursor.
        let new = *created > cursor && tx.first_change_seq(doc)?.is_none_or(|first| first > cursor);
        let data = if new {
            stored.snapshot
        } else {
            tx.changes_since(doc, cursor)?
        };
        if data.len() > left {
            cut = true;
            break;
        }
        left -= data.len();
        updates.push(DocUpdate {
            doc: doc.clone(),
            heads: hashes_to_wire(&stored.doc.get_heads()),
            data,
        });
        new_cursor = new_cursor.max(*updated);
    }
    let upto = tx.max_seq()?;
    if !cut {
        // Nothing in scope is newer: jump to the global sequence so the next request
        // starts from here.
        return Ok((updates, new_cursor.max(upto).max(0) as u64, false));
    }
    let log = tx.change_log(&units, cursor, upto)?;
    let answered = |doc: &str| sent.iter().any(|s| s == doc) || skipped.contains(&doc);
    let included = |doc: &str| answered(doc) || updates.iter().any(|u| u.doc == doc);
    if let Some((first_left, _, _)) = log.iter().find(|(_, doc, _)| !included(doc)) {
        let limit = new_cursor.min(first_left - 1);
        if limit > cursor {
            return Ok((updates, limit as u64, true));
        }
    } else {
        // Every document left out has no change in the log (it does not parse, or went).
        return Ok((updates, new_cursor.max(upto).max(0) as u64, false));
    }
    // A piece of the document of the first change after the cursor: its changes up to
    // the first change of another document (answered ones aside), within the budget.
    let Some((_, first, _)) = log.iter().find(|(_, doc, _)| !answered(doc)) else {
        return Ok((Vec::new(), upto.max(cursor).max(0) as u64, false));
    };
    let first = first.clone();
    let run: Vec<(i64, automerge::ChangeHash)> = log
        .iter()
        .take_while(|(_, doc, _)| *doc == first || answered(doc))
        .filter(|(_, doc, _)| *doc == first)
        .map(|(seq, _, hash)| (*seq, ChangeHash(*hash)))
        .collect();
    let id: DocId = first
        .parse()
        .map_err(|_| crate::store::StoreError::Other(format!("logged document {first} has a bad id")))?;
    let stored = tx
        .load(&id)?
        .ok_or_else(|| crate::store::StoreError::Other(format!("logged document {first} is not stored")))?;
    let hashes: Vec<ChangeHash> = run.iter().map(|(_, h)| *h).collect();
    let (n, data) = sync_core::protocol::fitting_prefix(&stored.doc, &hashes, budget)
        .ok_or_else(|| crate::store::StoreError::Other(format!("document {first} cannot be bundled")))?;
    let piece_end = run[n - 1].0;
    let updated = changed
        .iter()
        .find(|(d, _, _)| *d == first)
        .map(|(_, _, u)| *u)
        .unwrap_or(upto);
    // The whole document up to now: its heads; else empty (the device derives them).
    let heads = if piece_end >= updated {
        hashes_to_wire(&stored.doc.get_heads())
    } else {
        Vec::new()
    };
    let more = log.iter().any(|(seq, doc, _)| *seq > piece_end && !answered(doc));
    let cursor = if more { piece_end } else { piece_end.max(upto) };
    Ok((
        vec![DocUpdate {
            doc: first,
            heads,
            data,
        }],
        cursor.max(0) as u64,
        more,
    ))
}

fn in_scope(peer: &Peer, id: &DocId) -> bool {
    UnitTree::reference().is_within(&id.unit, &peer.unit)
}

/// Applies one pushed document if every rule holds; the outer `Result` is the store's.
fn accept(tx: &mut dyn DocTx, peer: &Peer, push: &DocPush) -> StoreResult<Result<DocResult, Refusal>> {
    let id: DocId = match push.doc.parse() {
        Ok(id) => id,
        Err(e) => return Ok(Err(Refusal::whole(e.to_string()))),
    };
    if !in_scope(peer, &id) {
        return Ok(Err(Refusal::whole(format!(
            "document {id} is outside this device's unit {}",
            peer.unit
        ))));
    }
    let stored = tx.load_for_update(&id)?;
    let server_heads = stored.as_ref().map(|s| s.doc.get_heads()).unwrap_or_default();
    if push.data.is_empty() {
        // A probe after a bundle: has the server got these heads?
        let Some(stored) = &stored else {
            return Ok(Ok(DocResult {
                outcome: Outcome::Missing,
                heads: vec![],
                data: vec![],
            }));
        };
        let device_heads = hashes_from_wire(&push.heads);
        if !device_heads.iter().all(|h| stored.doc.get_change_by_hash(h).is_some()) {
            return Ok(Ok(DocResult {
                outcome: Outcome::Missing,
                heads: hashes_to_wire(&server_heads),
                data: vec![],
            }));
        }
        let mut data = Vec::new();
        for c in stored.doc.get_changes(&device_heads) {
            data.extend_from_slice(c.raw_bytes());
        }
        return Ok(Ok(DocResult {
            outcome: Outcome::Accepted,
            heads: hashes_to_wire(&server_heads),
            data,
        }));
    }
    let existed = stored.is_some();
    // The stored document itself, not a copy: on a refusal it is dropped (and reloaded
    // by the next push), on success handed back to the store's cache (`DocTx::keep`).
    let mut candidate = stored.map(|s| s.doc).unwrap_or_default();
    // The device's heads once it has pushed: those of its base and the changes sent.
    let Some(device_heads) = pushed_heads(&push.base, &push.data) else {
        return Ok(Err(Refusal::whole("the document data does not decode")));
    };
    if candidate.load_incremental(&push.data).is_err() {
        return Ok(Err(Refusal::whole("the document data does not decode")));
    }
    if !candidate.get_missing_deps(&[]).is_empty() {
        // The device builds on changes the server does not have: the server lost them
        // (restored from an older backup) or never got them. Nothing is applied and
        // nothing is refused: the answer names what the server has, and the device sends
        // everything after that in its next exchange (docs/PROTOCOL.md).
        return Ok(Ok(DocResult {
            outcome: Outcome::Missing,
            heads: hashes_to_wire(&server_heads),
            data: vec![],
        }));
    }
    let new_changes = candidate.get_changes(&server_heads);
    if let Some(foreign) = new_changes.iter().find(|c| c.actor_id() != &peer.actor) {
        return Ok(Err(Refusal::whole(format!(
            "change {} was made by actor {} which is not this device's",
            foreign.hash(),
            foreign.actor_id()
        ))));
    }
    let course = match id.kind {
        DocKind::Attendance => {
            let Some(course_id) = id.course_doc() else {
                return Ok(Err(Refusal::whole("no course")));
            };
            // The course's sessions and enrolments from its projection rows (written from
            // the checked course document, this request's push included) when the store
            // has them; else from the document.
            match tx.course_outline(&course_id)? {
                Some(outline) => Some(outline),
                None => {
                    let Some(course) = tx.load(&course_id)? else {
                        return Ok(Err(Refusal::whole(format!(
                            "course {} does not exist on the server",
                            course_id
                        ))));
                    };
                    match docs::read_course(&course_id, &course.doc) {
                        Ok(c) => Some(c),
                        Err(e) => return Ok(Err(Refusal::whole(e.reason))),
                    }
                }
            }
        }
        _ => None,
    };
    let refusal = |v: sync_core::error::SchemaViolation| Refusal {
        reason: v.reason,
        keys: v.keys,
    };
    let projection = if id.kind == DocKind::Attendance && existed {
        // An attendance part already on the server was checked when it arrived: check
        // and project only the keys these changes write (a roll call, not the part).
        let keys = match docs::touched_keys(&new_changes) {
            Ok(k) => k,
            Err(v) => return Ok(Err(refusal(v))),
        };
        match docs::read_marks(&id, &candidate, course.as_ref(), keys.iter().map(String::as_str)) {
            Ok(m) => Projection::Marks {
                entries: m.entries,
                removed: m.removed,
            },
            Err(v) => return Ok(Err(refusal(v))),
        }
    } else {
        match docs::read(&id, &candidate, course.as_ref()) {
            Ok(c) => Projection::Whole(c),
            Err(v) => return Ok(Err(refusal(v))),
        }
    };
    if !new_changes.is_empty() {
        tx.store(&id, &candidate, &new_changes, &projection, &peer.device_id)?;
    }
    let device_heads: Vec<ChangeHash> = hashes_from_wire(&device_heads);
    let known: Vec<ChangeHash> = device_heads
        .iter()
        .copied()
        .filter(|h| candidate.get_change_by_hash(h).is_some())
        .collect();
    // When the server knows everything the device has, the device ends with the
    // server's heads once it merges `data`: no need to send them.
    let device_covered = known.len() == device_heads.len();
    let data = if known.is_empty() && existed {
        candidate.save()
    } else {
        let mut out = Vec::new();
        for c in candidate.get_changes(&known) {
            out.extend_from_slice(c.raw_bytes());
        }
        out
    };
    let heads = if device_covered && !known.is_empty() {
        Vec::new()
    } else {
        hashes_to_wire(&candidate.get_heads())
    };
    tx.keep(&id, candidate);
    Ok(Ok(DocResult {
        outcome: Outcome::Accepted,
        heads,
        data,
    }))
}
