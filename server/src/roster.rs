//! Roster work done on the server: importing a sheet into a commune's roster and
//! applying the 2025 unit reform. Both write **server changes**: automerge changes made
//! here with a fresh actor, checked with the same document rules as a device's push
//! (`docs::read`), logged with a sequence number like any accepted change, so devices
//! receive them at their next sync. Nothing is written unless the whole change holds.

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, ROOT};
use serde::Serialize;
use sync_core::docs::{self, Contents, DocId};
use sync_core::model::Cadre;
use sync_core::roster::{self, ImportReport};
use sync_core::units::{Level, Scheme, UnitKey, UnitTree};

use crate::store::{DocTx, Store, StoreError, StoreResult};

/// The device id server changes are logged under.
pub const SERVER_DEVICE: &str = "server";

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Applies `puts` and `deletes` to document `id` as one server change, validated like
/// a device's push. Returns false when it changed nothing.
pub fn server_change(
    tx: &mut dyn DocTx,
    id: &DocId,
    message: &str,
    puts: &[(String, String)],
    deletes: &[String],
) -> StoreResult<bool> {
    let mut doc = tx.load(id)?.map(|s| s.doc).unwrap_or_default();
    // A fresh actor per change: two server nodes can never reuse one (a cloned actor
    // corrupts history), and a server change is never confused with a device's.
    doc.set_actor(ActorId::random());
    let before = doc.get_heads();
    let mut t = doc.transaction();
    for (k, v) in puts {
        t.put(ROOT, k.as_str(), v.as_str())?;
    }
    for k in deletes {
        t.delete(ROOT, k.as_str())?;
    }
    let (hash, _) = t.commit_with(CommitOptions::default().with_message(message).with_time(now_millis()));
    if hash.is_none() {
        return Ok(false);
    }
    let course = match id.course_doc().filter(|c| c != id) {
        Some(cid) => match tx.load(&cid)? {
            Some(c) => Some(docs::read_course(&cid, &c.doc).map_err(|e| StoreError::Other(e.reason))?),
            None => None,
        },
        None => None,
    };
    let contents =
        docs::read(id, &doc, course.as_ref()).map_err(|e| StoreError::Other(format!("{id}: {}", e.reason)))?;
    let changes = doc.get_changes(&before);
    tx.store(
        id,
        &doc,
        &changes,
        &crate::store::Projection::Whole(contents),
        SERVER_DEVICE,
    )?;
    Ok(true)
}

fn roster_of(tx: &mut dyn DocTx, unit: &UnitKey) -> StoreResult<BTreeMap<String, Cadre>> {
    let id = DocId::roster(unit);
    let Some(stored) = tx.load(&id)? else {
        return Ok(BTreeMap::new());
    };
    match docs::read(&id, &stored.doc, None) {
        Ok(Contents::Roster(c)) => Ok(c),
        Ok(_) => Ok(BTreeMap::new()),
        Err(e) => Err(StoreError::Other(e.reason)),
    }
}

/// Imports a roster sheet into the roster of `unit` (see `sync_core::roster`).
pub fn import(store: &dyn Store, unit: &str, bytes: &[u8], skip_invalid: bool) -> Result<ImportReport, String> {
    let unit = UnitTree::reference()
        .resolve(unit)
        .map_err(|e| e.to_string())?
        .key
        .clone();
    let parsed = roster::parse(bytes).map_err(|e| e.to_string())?;
    let mut report = ImportReport::new(&unit, &parsed);
    if !parsed.errors.is_empty() && !skip_invalid {
        return Ok(report);
    }
    report.skipped = parsed.errors.len() as u32;
    let mut outcome = (0, 0, 0);
    store
        .write(&mut |tx| {
            let plan = roster::plan(&unit, &roster_of(tx, &unit)?, &parsed.rows);
            let puts: Vec<(String, String)> = plan
                .puts
                .iter()
                .map(|(id, c)| (docs::cadre_key(id), docs::encode(c)))
                .collect();
            server_change(tx, &DocId::roster(&unit), "import roster", &puts, &[])?;
            outcome = (plan.created, plan.updated, plan.unchanged);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    (report.created, report.updated, report.unchanged) = outcome;
    report.applied = true;
    Ok(report)
}

/// The roster of `unit` as an XLSX workbook in the import template.
pub fn export(store: &dyn Store, unit: &str) -> Result<Vec<u8>, String> {
    let unit = UnitTree::reference()
        .resolve(unit)
        .map_err(|e| e.to_string())?
        .key
        .clone();
    let mut cadres = BTreeMap::new();
    store
        .write(&mut |tx| {
            cadres = roster_of(tx, &unit)?;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    roster::export_xlsx(&cadres).map_err(|e| e.to_string())
}

/// What applying the reform did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReformReport {
    /// (legacy commune, 2025 commune, cadres moved)
    pub moved: Vec<(String, String, u32)>,
    pub cadres_moved: u32,
    /// Devices enrolled for a legacy commune, now enrolled for its 2025 successor.
    pub devices_rescoped: u32,
}

/// Applies the legacy-to-2025 mapping: every cadre on a legacy commune's roster moves,
/// with its id, to the roster of the commune's default successor (so enrolments and
/// marks that name it stay valid), and leaves the legacy roster in the same
/// transaction: nothing is lost, nothing is on two rosters. Devices enrolled for a
/// legacy commune are re-scoped to its successor; their scope still covers the legacy
/// documents (`UnitTree::is_within`), so what they hold keeps syncing. Courses stay
/// under the unit that created them (their documents and ids do not change); reports
/// group them by either structure with `UnitTree::group_at`.
///
/// Idempotent: a second run finds the legacy rosters empty. A cadre an offline device
/// added or edited on a legacy roster after a run is moved by the next run.
pub fn apply_reform(store: &dyn Store) -> StoreResult<ReformReport> {
    let tree = UnitTree::reference();
    let mut legacy: Vec<UnitKey> = Vec::new();
    for p in tree.roots(Scheme::Legacy) {
        legacy.extend(
            tree.subtree(&p)
                .into_iter()
                .filter(|u| tree.get(u).map(|x| x.level) == Some(Level::Commune)),
        );
    }
    let mut report = ReformReport::default();
    store.write(&mut |tx| {
        report = ReformReport::default();
        for from in &legacy {
            let cadres = roster_of(tx, from)?;
            if cadres.is_empty() {
                continue;
            }
            let Some(to) = tree.default_successor(from) else {
                continue;
            };
            let target = roster_of(tx, &to)?;
            let puts: Vec<(String, String)> = cadres
                .iter()
                .filter(|(id, c)| target.get(*id) != Some(*c))
                .map(|(id, c)| (docs::cadre_key(id), docs::encode(c)))
                .collect();
            let deletes: Vec<String> = cadres.keys().map(|id| docs::cadre_key(id)).collect();
            // The new roster first, then the old one emptied, in one transaction.
            server_change(tx, &DocId::roster(&to), "unit reform: cadres moved in", &puts, &[])?;
            server_change(tx, &DocId::roster(from), "unit reform: cadres moved out", &[], &deletes)?;
            report.cadres_moved += cadres.len() as u32;
            report
                .moved
                .push((from.to_string(), to.to_string(), cadres.len() as u32));
        }
        Ok(())
    })?;
    for d in store.devices()? {
        let Ok(unit) = d.unit.parse::<UnitKey>() else { continue };
        if unit.scheme != Scheme::Legacy || tree.get(&unit).map(|u| u.level) != Some(Level::Commune) {
            continue;
        }
        if let Some(to) = tree.default_successor(&unit) {
            if store.set_device_unit(&d.id, &to.to_string())? {
                report.devices_rescoped += 1;
            }
        }
    }
    Ok(report)
}
