//! The device's local store on SQLite.
//!
//! - WAL with `synchronous=FULL`: a mark reported saved has been fsynced, so it
//!   survives a power cut (WAL with NORMAL may lose the last transactions).
//! - A document is a snapshot (automerge `save()`) plus incremental chunks (one per
//!   local commit or received batch), compacted into a new snapshot past
//!   [`COMPACT_AFTER_CHUNKS`] chunks: a mark costs one small row insert, not a re-save
//!   of the whole document.
//! - Query tables (`p_*`, shared with the server in `projection.rs`) mirror what screens show, so opening a course reads rows
//!   instead of loading and walking automerge documents.
//! - The schema version is `PRAGMA user_version`; each migration runs once, in order,
//!   in one transaction. Shipped migrations are never edited.

use std::path::Path;

use automerge::{Automerge, ChangeHash};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::docs::DocId;
use crate::error::Result;

/// Past this many chunks a document is re-saved as one snapshot.
pub const COMPACT_AFTER_CHUNKS: i64 = 64;

/// Migrations, in order, each a list of SQL batches. Index + 1 is the `user_version`
/// after it ran.
pub(crate) const MIGRATIONS: &[&[&str]] = &[
    // 1: the first schema, with the projection tables shared with the server.
    &[
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE docs (
        doc_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        unit TEXT NOT NULL,
        course_id TEXT,
        snapshot BLOB,
        server_heads BLOB NOT NULL DEFAULT x'',
        dirty INTEGER NOT NULL DEFAULT 0,
        pending INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE chunks (
        doc_id TEXT NOT NULL REFERENCES docs(doc_id),
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (doc_id, seq)
     );
     CREATE TABLE refused (
        id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, reason TEXT NOT NULL, at INTEGER NOT NULL,
        changes BLOB NOT NULL
     );",
        crate::projection::TABLES_V1,
    ],
    // 2: remember which entries a refusal named, and a log of syncs for `status`.
    &["ALTER TABLE refused ADD COLUMN keys TEXT NOT NULL DEFAULT '';
     CREATE TABLE sync_log (
        id INTEGER PRIMARY KEY, at INTEGER NOT NULL, ok INTEGER NOT NULL, requests INTEGER NOT NULL,
        bytes_up INTEGER NOT NULL, bytes_down INTEGER NOT NULL, message TEXT
     );"],
    // 3: the heads of each document as last exported in a bundle, so the next sync can
    // ask whether the bundle arrived instead of sending the data again.
    &["ALTER TABLE docs ADD COLUMN bundled_heads BLOB NOT NULL DEFAULT x'';"],
    // 4: evaluations, projected from course documents (existing course documents are
    // re-projected when they next change; before this version they had none).
    &[crate::projection::TABLES_V2],
    // 5: the course's programme type in the shared projection.
    &[crate::projection::TABLES_V3],
];

pub fn open_connection(path: &Path) -> Result<Connection> {
    open_connection_with_key(path, None)
}

/// Opens the store encrypted at rest with SQLCipher when `key` is given (feature
/// `sqlcipher`; the key comes from the app, e.g. Android Keystore, or the CLI's
/// `DIEMDANH_DB_KEY`). `PRAGMA key` must be the first statement on the connection, and
/// SQLCipher only checks it on the first read: read once here, so a wrong key is
/// [`Error::WrongKey`] at open rather than a storage failure later. The key is never
/// logged nor put in an error.
pub fn open_connection_with_key(path: &Path, key: Option<&str>) -> Result<Connection> {
    if let Some(key) = key {
        if !cfg!(feature = "sqlcipher") {
            return Err(crate::Error::invalid(
                "a database key was given but this build has no encryption (build with the `sqlcipher` feature)",
            ));
        }
        if key.is_empty() {
            return Err(crate::Error::invalid("the database key is empty"));
        }
    }
    let mut conn = Connection::open(path)?;
    match key {
        // 32 bytes in hex (what an app makes and keeps in its key store) are used as the
        // raw key: no PBKDF2 run at every open (256,000 rounds, slow on a cheap tablet).
        // Only hex digits reach the statement, so nothing can be injected.
        Some(k) if k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()) => {
            conn.execute_batch(&format!("PRAGMA key = \"x'{k}'\";"))?;
        }
        // Anything else is a passphrase (the CLI's DIEMDANH_DB_KEY), bound as a quoted string.
        Some(k) => conn.pragma_update(None, "key", k)?,
        None => {}
    }
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => {}
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            return Err(crate::Error::WrongKey {
                key_given: key.is_some(),
            })
        }
        Err(e) => return Err(e.into()),
    }
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn)?;
    Ok(conn)
}

pub fn schema_version(conn: &Connection) -> Result<i64> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, batches) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        for sql in *batches {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

pub fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

pub fn heads_to_blob(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

pub fn heads_from_blob(blob: &[u8]) -> Vec<ChangeHash> {
    blob.chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok().map(ChangeHash))
        .collect()
}

/// Loads a document from its snapshot and chunks; `None` when this store has none.
pub fn load_doc(conn: &Connection, id: &DocId) -> Result<Option<Automerge>> {
    let key = id.to_string();
    let snapshot: Option<Option<Vec<u8>>> = conn
        .query_row("SELECT snapshot FROM docs WHERE doc_id = ?1", [&key], |r| r.get(0))
        .optional()?;
    let Some(snapshot) = snapshot else { return Ok(None) };
    let mut doc = match snapshot {
        Some(bytes) if !bytes.is_empty() => Automerge::load(&bytes)?,
        _ => Automerge::new(),
    };
    let mut stmt = conn.prepare_cached("SELECT data FROM chunks WHERE doc_id = ?1 ORDER BY seq")?;
    let chunks = stmt.query_map([&key], |r| r.get::<_, Vec<u8>>(0))?;
    for chunk in chunks {
        doc.load_incremental(&chunk?)?;
    }
    Ok(Some(doc))
}

/// Makes sure a row exists for the document.
pub fn ensure_doc(tx: &Transaction<'_>, id: &DocId) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO docs (doc_id, kind, unit, course_id) VALUES (?1, ?2, ?3, ?4)",
        params![id.to_string(), id.kind.as_str(), id.unit.to_string(), id.course],
    )?;
    Ok(())
}

/// Appends `bytes` (changes or a saved document) to the document, compacting when the
/// chunk list grows long. `doc` is the document with `bytes` already applied.
pub fn append_chunk(tx: &Transaction<'_>, id: &DocId, doc: &Automerge, bytes: &[u8]) -> Result<()> {
    ensure_doc(tx, id)?;
    let key = id.to_string();
    let (count, next): (i64, i64) = tx.query_row(
        "SELECT COUNT(*), COALESCE(MAX(seq), 0) + 1 FROM chunks WHERE doc_id = ?1",
        [&key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if count + 1 > COMPACT_AFTER_CHUNKS {
        tx.execute("DELETE FROM chunks WHERE doc_id = ?1", [&key])?;
        tx.execute(
            "UPDATE docs SET snapshot = ?2 WHERE doc_id = ?1",
            params![key, doc.save()],
        )?;
    } else {
        tx.execute(
            "INSERT INTO chunks (doc_id, seq, data) VALUES (?1, ?2, ?3)",
            params![key, next, bytes],
        )?;
    }
    Ok(())
}

/// Replaces the document's whole content (after a rebuild).
pub fn replace_doc(tx: &Transaction<'_>, id: &DocId, doc: &Automerge) -> Result<()> {
    ensure_doc(tx, id)?;
    let key = id.to_string();
    tx.execute("DELETE FROM chunks WHERE doc_id = ?1", [&key])?;
    tx.execute(
        "UPDATE docs SET snapshot = ?2 WHERE doc_id = ?1",
        params![key, doc.save()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema as version 1 shipped it, frozen: the upgrade must keep its data.
    #[test]
    fn upgrades_a_version_1_store_without_losing_data() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| crate::Error::invalid(e.to_string()))?;
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path)?;
            for sql in MIGRATIONS[0] {
                conn.execute_batch(sql)?;
            }
            conn.pragma_update(None, "user_version", 1)?;
            conn.execute(
                "INSERT INTO refused (doc_id, reason, at, changes) VALUES ('roster:2025:03434', 'old reason', 5, x'00')",
                [],
            )?;
            set_meta(&conn, "device_id", "dev1")?;
        }
        let conn = open_connection(&path)?;
        assert_eq!(schema_version(&conn)?, MIGRATIONS.len() as i64);
        assert_eq!(get_meta(&conn, "device_id")?.as_deref(), Some("dev1"));
        let (reason, keys): (String, String) =
            conn.query_row("SELECT reason, keys FROM refused", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        assert_eq!((reason.as_str(), keys.as_str()), ("old reason", ""));
        conn.execute(
            "INSERT INTO sync_log (at, ok, requests, bytes_up, bytes_down) VALUES (1, 1, 1, 1, 1)",
            [],
        )?;
        // Opening again runs nothing twice.
        drop(conn);
        let conn = open_connection(&path)?;
        assert_eq!(schema_version(&conn)?, MIGRATIONS.len() as i64);
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
        assert_eq!((mode.as_str(), sync), ("wal", 2));
        Ok(())
    }
}
