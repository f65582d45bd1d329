//! Everything a device holds, for an administrator who has a lost, stolen or broken
//! tablet in hand (`diemdanh export`): the courses as the device sees them, the roster,
//! what was refused, and, per document, exactly which keys the server has never
//! acknowledged. Reads only the local store: it works offline and after revocation.
//! The data goes back to the server through a bundle (`diemdanh bundle export`, then
//! `diemdanh-server bundle import --accept-revoked` after review), never through this
//! file, which carries no seal.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{PatchAction, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::device::{format_time, CadreRow, Device, RefusedEntry};
use crate::docs::{self, DocId, DocKind};
use crate::error::Result;
use crate::report::CourseReport;
use crate::store::{self, heads_from_blob};

pub const FORMAT: &str = "diemdanh-device-export";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceExport {
    pub format: String,
    pub version: u32,
    pub device_id: String,
    pub unit: Option<String>,
    pub server: Option<String>,
    /// By the device's own clock, which may be wrong.
    pub exported_at: String,
    pub last_sync: Option<String>,
    pub pending_changes: u64,
    pub documents: Vec<DocumentState>,
    /// Every value the server has not acknowledged, document by document.
    pub unsent: Vec<UnsentValue>,
    pub cadres: Vec<CadreRow>,
    pub courses: Vec<CourseReport>,
    pub refused: Vec<RefusedEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DocumentState {
    pub id: String,
    /// Changes the server has not acknowledged.
    pub pending_changes: u64,
    /// The server has everything of this document.
    pub synced: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnsentValue {
    pub doc: String,
    pub key: String,
    /// The values at the key (several when it is a conflict); none when it was deleted.
    pub values: Vec<String>,
}

impl DeviceExport {
    /// Whether the server has never acknowledged the value at `key` of a course's
    /// attendance (a mark key, `m/{session}/{cadre}`).
    pub fn mark_unsent(&self, course: &str, key: &str) -> bool {
        self.unsent.iter().any(|u| {
            u.key == key
                && u.doc
                    .parse::<DocId>()
                    .is_ok_and(|d| d.kind == DocKind::Attendance && d.course.as_deref() == Some(course))
        })
    }
}

impl Device {
    /// Everything this device holds, with what the server never received marked out.
    pub fn export_all(&self) -> Result<DeviceExport> {
        let status = self.status()?;
        let conn = self.connection();
        let mut stmt = conn.prepare("SELECT doc_id, server_heads, dirty, pending FROM docs ORDER BY doc_id")?;
        let rows: Vec<(String, Vec<u8>, bool, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut documents = Vec::new();
        let mut unsent = Vec::new();
        for (key, server_heads, dirty, pending) in rows {
            let id: DocId = key.parse()?;
            let Some(doc) = store::load_doc(conn, &id)? else {
                continue;
            };
            let base = heads_from_blob(&server_heads);
            let knows_base = !base.is_empty() && base.iter().all(|h| doc.get_change_by_hash(h).is_some());
            let keys: BTreeSet<String> = if knows_base {
                doc.diff(&base, &doc.get_heads())
                    .into_iter()
                    .filter(|p| p.obj == automerge::ROOT)
                    .filter_map(|p| match p.action {
                        PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => Some(key),
                        _ => None,
                    })
                    .collect()
            } else {
                // The server has nothing of this document that the device knows of.
                doc.keys(automerge::ROOT).collect()
            };
            let synced = keys.is_empty();
            for k in keys {
                let values = docs::values_at(&doc, &k).into_iter().flatten().collect();
                unsent.push(UnsentValue {
                    doc: key.clone(),
                    key: k,
                    values,
                });
            }
            documents.push(DocumentState {
                id: key,
                pending_changes: if dirty || !synced { pending.max(0) as u64 } else { 0 },
                synced,
            });
        }
        let mut courses = Vec::new();
        let mut seen = BTreeMap::new();
        for c in self.list_courses()? {
            if seen.insert(c.id.clone(), ()).is_none() {
                courses.push(self.show_course(&c.id)?);
            }
        }
        Ok(DeviceExport {
            format: FORMAT.to_string(),
            version: 1,
            device_id: status.device_id,
            unit: status.unit,
            server: status.server,
            exported_at: format_time(self.now_secs()),
            last_sync: status.last_sync,
            pending_changes: status.pending_changes,
            documents,
            unsent,
            cadres: self.list_cadres(None)?,
            courses,
            refused: status.refused,
        })
    }
}
