//! The embedded store: one SQLite file under `--data`, WAL mode so the admin commands
//! (`report`, `enroll-code`, `device revoke`) can read and write while `serve` runs.
//!
//! Why it is shaped the way it is (docs/SCALING.md has the figures):
//! - **One writer connection, group commit.** SQLite has one writer anyway, and with
//!   `synchronous=FULL` every commit is an fsync. Sync requests that queue behind one
//!   another join one open transaction, each in its own savepoint (a failing request
//!   rolls back only itself), and the last of the queue commits for all: one fsync per
//!   burst instead of one per request. No request is answered before its commit.
//! - **Reader connections.** Token lookups, pages and reports read committed data on
//!   their own connections, never waiting for a writer or seeing an open batch.
//! - **Snapshots every few changes.** A push appends its changes to the log; the
//!   document's snapshot is re-saved only when the tail since it grows past a bound,
//!   and loading is snapshot + tail. With the document cache (`doc_cache.rs`) a roll
//!   call costs its own bytes, not its part's.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use automerge::{Automerge, Change};
use rusqlite::{params, Connection, OptionalExtension};
use sync_core::docs::{Contents, DocId};
use sync_core::report::CourseRows;

use crate::doc_cache::DocCache;
use crate::store::{
    AccountRow, CadreFacts, CertificateRow, Contact, CourseListRow, DeviceRow, DocTx, MarkCounts, PeriodCourse,
    PeriodTrainee, Projection, RedeemError, RefusalRow, Store, StoreError, StoreResult, StoredDoc,
};

/// Changes logged after a document's snapshot before it is saved again (and at most as
/// many bytes as the snapshot itself, or [`TAIL_MIN_BYTES`]).
const TAIL_CHANGES: i64 = 48;
const TAIL_MIN_BYTES: i64 = 16 * 1024;
/// Requests one group transaction takes at most, and the longest it stays open: bounds
/// what one failed commit can cost and how long a queued request waits for its answer.
const BATCH_REQUESTS: usize = 64;
const BATCH_OPEN: Duration = Duration::from_millis(50);
/// Reader connections beside the writer.
const READERS: usize = 3;

/// Migrations, in order, each a list of SQL batches; shipped ones are never edited.
const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE devices (
        id TEXT PRIMARY KEY, unit TEXT NOT NULL, actor TEXT NOT NULL UNIQUE, token_hash TEXT NOT NULL UNIQUE,
        app_version TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER, last_sync_at INTEGER,
        pending_reported INTEGER NOT NULL DEFAULT 0, bytes_up INTEGER NOT NULL DEFAULT 0, bytes_down INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE enroll_codes (
        code_hash TEXT PRIMARY KEY, unit TEXT NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER, device_id TEXT
     );
     CREATE TABLE docs (
        doc_id TEXT PRIMARY KEY, kind TEXT NOT NULL, unit TEXT NOT NULL, course_id TEXT,
        snapshot BLOB NOT NULL, created_seq INTEGER NOT NULL, updated_seq INTEGER NOT NULL
     );
     CREATE INDEX docs_unit_seq ON docs(unit, updated_seq);
     CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, hash BLOB NOT NULL, actor TEXT NOT NULL,
        device_id TEXT NOT NULL, time INTEGER NOT NULL, received_at INTEGER NOT NULL, data BLOB NOT NULL,
        UNIQUE (doc_id, hash)
     );
     CREATE INDEX changes_doc_seq ON changes(doc_id, seq);
     CREATE TABLE refusals (
        id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, doc_id TEXT NOT NULL, reason TEXT NOT NULL,
        at INTEGER NOT NULL, data BLOB NOT NULL
     );",
    sync_core::projection::TABLES_V1,
    ],
    // 2: the cursor each device was last answered with, for server bundles.
    &["ALTER TABLE devices ADD COLUMN last_cursor INTEGER NOT NULL DEFAULT 0;"],
    // 3: evaluations, and the certificate register: one counter per (unit, year) that
    // only goes up, so a number is never given twice.
    &[
        sync_core::projection::TABLES_V2,
        "CREATE TABLE cert_register (unit TEXT NOT NULL, year INTEGER NOT NULL, last INTEGER NOT NULL,
            PRIMARY KEY (unit, year));
         CREATE TABLE certificates (
            course_id TEXT NOT NULL, cadre_id TEXT NOT NULL, unit TEXT NOT NULL, year INTEGER NOT NULL,
            seq INTEGER NOT NULL, number TEXT NOT NULL UNIQUE, issued_at INTEGER NOT NULL,
            PRIMARY KEY (course_id, cadre_id)
         );",
    ],
    // 4: web accounts and their sign-in sessions (tokens stored hashed).
    &["CREATE TABLE accounts (
        name TEXT PRIMARY KEY, unit TEXT NOT NULL, password_hash TEXT NOT NULL, created_at INTEGER NOT NULL
     );
     CREATE TABLE web_sessions (
        token_hash TEXT PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(name), expires_at INTEGER NOT NULL
     );"],
    // 5: reports: the course's programme type, and the indexes the unit and annual
    // reports read through (`reports/`): marks counted per course, trainee and status
    // from the index alone, sessions found by date.
    &[
        sync_core::projection::TABLES_V3,
        "CREATE INDEX p_marks_report ON p_marks(course_id, cadre_id, status);
         CREATE INDEX p_sessions_date ON p_sessions(date, course_id);",
    ],
    // 6: snapshots every few changes: the change sequence a document's snapshot covers,
    // and the changes and bytes logged after it. Existing snapshots cover everything.
    &["ALTER TABLE docs ADD COLUMN snapshot_seq INTEGER NOT NULL DEFAULT 0;
       ALTER TABLE docs ADD COLUMN tail_changes INTEGER NOT NULL DEFAULT 0;
       ALTER TABLE docs ADD COLUMN tail_bytes INTEGER NOT NULL DEFAULT 0;
       UPDATE docs SET snapshot_seq = updated_seq;"],
];

pub struct SqliteStore {
    writer: Mutex<Writer>,
    /// Signalled when a group transaction ends (committed or failed).
    batch_done: Condvar,
    /// Sync requests waiting for the writer: while there are any, a request leaves the
    /// commit to the last of them.
    queued: AtomicUsize,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// The writer connection and what lives with it.
struct Writer {
    conn: Connection,
    cache: DocCache,
    /// Documents stored by requests of the open batch, as they left them: the cache's
    /// once the batch commits, dropped if it fails.
    uncommitted: HashMap<String, (i64, Automerge)>,
    batch: Option<Batch>,
    next_batch: u64,
    /// The last batch that ended, and the recent ones whose commit failed (with why).
    done: u64,
    failed: VecDeque<(u64, String)>,
    stats: WriteStats,
}

/// What the group commit has done since the store was opened (for `/metrics` and the
/// tests): transactions committed, and the sync requests they carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub commits: u64,
    pub requests: u64,
}

struct Batch {
    id: u64,
    requests: usize,
    opened: Instant,
}

impl Writer {
    /// Ends the open batch, if any: commits it (its documents join the cache) or, when
    /// the commit fails, rolls it back and remembers the failure for its requests.
    fn end_batch(&mut self) -> Result<(), String> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        self.done = batch.id;
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => {
                self.stats.commits += 1;
                self.stats.requests += batch.requests as u64;
                for (key, (seq, doc)) in self.uncommitted.drain() {
                    self.cache.put(key, seq, doc);
                }
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.uncommitted.clear();
                self.cache.clear();
                let msg = format!("database: {e}");
                self.failed.push_back((batch.id, msg.clone()));
                while self.failed.len() > 64 {
                    self.failed.pop_front();
                }
                Err(msg)
            }
        }
    }

    fn outcome(&self, batch: u64) -> Result<(), String> {
        match self.failed.iter().find(|(id, _)| *id == batch) {
            Some((_, msg)) => Err(msg.clone()),
            None => Ok(()),
        }
    }
}

/// The writer connection for a write outside the sync path (admin commands, pages):
/// any open batch is committed first, so the write runs on its own.
pub struct WriterGuard<'a>(MutexGuard<'a, Writer>);

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0.conn
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0.conn
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > MIGRATIONS.len() as i64 {
        // Written by a newer server: this one would misread it, and must not write to it.
        return Err(StoreError::Other(format!(
            "the store has schema version {current}, newer than this diemdanh-server knows ({}): use a newer server",
            MIGRATIONS.len()
        )));
    }
    for (i, batches) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        for sql in *batches {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

impl SqliteStore {
    pub fn open(dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Other(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("diemdanh.sqlite");
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        let mut readers = Vec::new();
        for _ in 0..READERS {
            let r = Connection::open(&path)?;
            r.busy_timeout(std::time::Duration::from_secs(30))?;
            r.pragma_update(None, "query_only", true)?;
            readers.push(Mutex::new(r));
        }
        Ok(SqliteStore::with(conn, readers))
    }

    /// A scratch store in memory, with the same schema: what `reports::asof` rebuilds
    /// the documents of a past date into. It has no reader connections (a memory
    /// database is private to its connection): reads go to the writer.
    pub fn open_in_memory() -> StoreResult<SqliteStore> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        Ok(SqliteStore::with(conn, Vec::new()))
    }

    fn with(conn: Connection, readers: Vec<Mutex<Connection>>) -> SqliteStore {
        SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                cache: DocCache::default(),
                uncommitted: HashMap::new(),
                batch: None,
                next_batch: 1,
                done: 0,
                failed: VecDeque::new(),
                stats: WriteStats::default(),
            }),
            batch_done: Condvar::new(),
            queued: AtomicUsize::new(0),
            readers,
            next_reader: AtomicUsize::new(0),
        }
    }

    /// Rewrites the projection rows of many documents in one transaction (the as-of
    /// rebuild; a sync writes them through [`DocTx::store`]).
    pub fn project(&self, docs: &[(DocId, Contents)]) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (id, contents) in docs {
            sync_core::projection::write(&tx, id, contents, true)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` on the connection in one transaction (the report benchmark's generator
    /// writes projection rows straight through it).
    pub fn with_transaction<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock leaves SQLite consistent (an open batch is
        // committed or rolled back by the next holder), so a poisoned lock is safe to
        // take over.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer connection, with no batch open on it.
    fn conn(&self) -> WriterGuard<'_> {
        let mut w = self.lock_writer();
        if w.batch.is_some() {
            // Its requests learn the outcome from `failed`; this write goes on alone.
            let _ = w.end_batch();
            self.batch_done.notify_all();
        }
        WriterGuard(w)
    }

    /// A connection for reading committed data: a free reader, else the next one in
    /// turn (the writer for a memory store).
    fn reader(&self) -> ReadGuard<'_> {
        if self.readers.is_empty() {
            return ReadGuard::Writer(self.conn());
        }
        for r in &self.readers {
            if let Ok(g) = r.try_lock() {
                return ReadGuard::Reader(g);
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        ReadGuard::Reader(self.readers[i].lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn write_stats(&self) -> WriteStats {
        self.lock_writer().stats
    }

    /// Drops cached documents unused for a while (`serve` calls it every few seconds);
    /// once nothing is cached (no push for that long), the connections give their page
    /// caches back too: an idle server holds little memory.
    pub fn trim_cache(&self) {
        let Ok(mut w) = self.writer.try_lock() else { return };
        w.cache.trim(crate::doc_cache::IDLE);
        if !w.cache.is_empty() || w.batch.is_some() {
            return;
        }
        let _ = w.conn.execute_batch("PRAGMA shrink_memory");
        drop(w);
        for r in &self.readers {
            if let Ok(r) = r.try_lock() {
                let _ = r.execute_batch("PRAGMA shrink_memory");
            }
        }
    }
}

enum ReadGuard<'a> {
    Reader(MutexGuard<'a, Connection>),
    Writer(WriterGuard<'a>),
}

impl std::ops::Deref for ReadGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            ReadGuard::Reader(g) => g,
            ReadGuard::Writer(g) => g,
        }
    }
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: r.get(0)?,
        unit: r.get(1)?,
        actor: r.get(2)?,
        app_version: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
        last_sync_at: r.get(6)?,
        pending_reported: r.get(7)?,
        bytes_up: r.get(8)?,
        bytes_down: r.get(9)?,
        last_cursor: r.get(10)?,
    })
}

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertificateRow> {
    Ok(CertificateRow {
        number: r.get(0)?,
        course_id: r.get(1)?,
        cadre_id: r.get(2)?,
        unit: r.get(3)?,
        year: r.get(4)?,
        seq: r.get(5)?,
        issued_at: r.get(6)?,
    })
}

const DEVICE_COLS: &str =
    "id, unit, actor, app_version, created_at, revoked_at, last_sync_at, pending_reported, bytes_up, bytes_down, last_cursor";

struct SqliteTx<'a> {
    conn: &'a Connection,
    cache: &'a mut DocCache,
    uncommitted: &'a mut HashMap<String, (i64, Automerge)>,
    /// Documents this request stored, by the sequence they were stored at.
    stored: HashMap<String, i64>,
    /// Documents handed back by [`DocTx::keep`]: the batch's once this request succeeds.
    kept: Vec<(String, i64, Automerge)>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SqliteTx<'_> {
    /// The document as of `seq` if memory has it: this request's own version first, then
    /// the open batch's, then the committed cache; each only for the state the row says.
    /// Taken out when the caller will change it, else a copy.
    fn in_memory(&mut self, key: &str, seq: i64, take: bool) -> Option<Automerge> {
        if let Some(i) = self.kept.iter().position(|(k, s, _)| k == key && *s == seq) {
            return Some(if take {
                self.kept.remove(i).2
            } else {
                self.kept[i].2.clone()
            });
        }
        match self.uncommitted.get(key) {
            Some((s, _)) if *s != seq => {
                self.uncommitted.remove(key);
            }
            Some(_) if take => return self.uncommitted.remove(key).map(|(_, d)| d),
            Some((_, d)) => return Some(d.clone()),
            None => {}
        }
        self.cache.get(key, seq, take)
    }

    /// The bytes of a stored document: its snapshot and the changes logged after it.
    fn bytes(&self, key: &str, snapshot_seq: i64, updated_seq: i64) -> StoreResult<Vec<u8>> {
        let mut bytes: Vec<u8> = self
            .conn
            .prepare_cached("SELECT snapshot FROM docs WHERE doc_id = ?1")?
            .query_row([key], |r| r.get(0))?;
        if updated_seq > snapshot_seq {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT data FROM changes WHERE doc_id = ?1 AND seq > ?2 ORDER BY seq")?;
            let mut rows = stmt.query(params![key, snapshot_seq])?;
            while let Some(row) = rows.next()? {
                bytes.extend_from_slice(row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?);
            }
        }
        Ok(bytes)
    }

    fn load_doc(&mut self, id: &DocId, for_update: bool) -> StoreResult<Option<StoredDoc>> {
        let key = id.to_string();
        let row: Option<(i64, i64, i64)> = self
            .conn
            .prepare_cached("SELECT created_seq, updated_seq, snapshot_seq FROM docs WHERE doc_id = ?1")?
            .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((created_seq, updated_seq, snapshot_seq)) = row else {
            return Ok(None);
        };
        let doc = self.in_memory(&key, updated_seq, for_update);
        // A document about to be changed needs no bytes (the caller only merges into
        // it); one read for sending does.
        let snapshot = if for_update && doc.is_some() {
            Vec::new()
        } else {
            self.bytes(&key, snapshot_seq, updated_seq)?
        };
        let doc = match doc {
            Some(d) => d,
            None => Automerge::load(&snapshot)?,
        };
        self.stored.entry(key).or_insert(updated_seq);
        Ok(Some(StoredDoc {
            doc,
            snapshot,
            created_seq,
            updated_seq,
        }))
    }
}

impl DocTx for SqliteTx<'_> {
    fn load(&mut self, id: &DocId) -> StoreResult<Option<StoredDoc>> {
        self.load_doc(id, false)
    }

    /// `snapshot` is empty when the document came from memory: the caller changes it
    /// and never sends those bytes.
    fn load_for_update(&mut self, id: &DocId) -> StoreResult<Option<StoredDoc>> {
        self.load_doc(id, true)
    }

    fn store(
        &mut self,
        id: &DocId,
        doc: &Automerge,
        new_changes: &[Change],
        projection: &Projection,
        device: &str,
    ) -> StoreResult<()> {
        let key = id.to_string();
        let received = now();
        let mut last_seq = None;
        let mut logged = 0i64;
        let mut logged_bytes = 0i64;
        {
            let mut stmt = self.conn.prepare_cached(
                "INSERT OR IGNORE INTO changes (doc_id, hash, actor, device_id, time, received_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for c in new_changes {
                if stmt.execute(params![
                    key,
                    c.hash().0.to_vec(),
                    c.actor_id().to_hex_string(),
                    device,
                    c.timestamp(),
                    received,
                    c.raw_bytes()
                ])? > 0
                {
                    last_seq = Some(self.conn.last_insert_rowid());
                    logged += 1;
                    logged_bytes += c.raw_bytes().len() as i64;
                }
            }
        }
        let Some(seq) = last_seq else { return Ok(()) };
        let tail: Option<(i64, i64, i64)> = self
            .conn
            .prepare_cached("SELECT tail_changes, tail_bytes, length(snapshot) FROM docs WHERE doc_id = ?1")?
            .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        match tail {
            Some((changes, bytes, snapshot))
                if changes + logged <= TAIL_CHANGES && bytes + logged_bytes <= snapshot.max(TAIL_MIN_BYTES) =>
            {
                self.conn.execute(
                    "UPDATE docs SET updated_seq = ?2, tail_changes = tail_changes + ?3, tail_bytes = tail_bytes + ?4
                     WHERE doc_id = ?1",
                    params![key, seq, logged, logged_bytes],
                )?;
            }
            _ => {
                self.conn.execute(
                    "INSERT INTO docs (doc_id, kind, unit, course_id, snapshot, created_seq, updated_seq, snapshot_seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)
                     ON CONFLICT(doc_id) DO UPDATE SET snapshot = excluded.snapshot, updated_seq = excluded.updated_seq,
                       snapshot_seq = excluded.updated_seq, tail_changes = 0, tail_bytes = 0",
                    params![key, id.kind.as_str(), id.unit.to_string(), id.course, doc.save(), seq],
                )?;
            }
        }
        match projection {
            Projection::Whole(contents) => sync_core::projection::write(self.conn, id, contents, true)?,
            Projection::Marks { entries, removed } => {
                sync_core::projection::write_marks(self.conn, id, entries, removed)?
            }
        }
        self.stored.insert(key, seq);
        Ok(())
    }

    fn keep(&mut self, id: &DocId, doc: Automerge) {
        let key = id.to_string();
        if let Some(seq) = self.stored.get(&key) {
            self.kept.push((key, *seq, doc));
        }
    }

    fn course_outline(&mut self, course: &DocId) -> StoreResult<Option<sync_core::docs::CourseDoc>> {
        let Some(cid) = &course.course else { return Ok(None) };
        let doc: Option<String> = self
            .conn
            .prepare_cached("SELECT doc_id FROM p_courses WHERE id = ?1")?
            .query_row([cid], |r| r.get(0))
            .optional()?;
        if doc.as_deref() != Some(course.to_string().as_str()) {
            return Ok(None);
        }
        let mut outline = sync_core::docs::CourseDoc::default();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, date, part FROM p_sessions WHERE course_id = ?1")?;
        for row in stmt.query_map([cid], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, i64>(2)?)))? {
            let (id, date, part) = row?;
            let session = sync_core::model::Session {
                date,
                half_day: None,
                periods: None,
                topic: None,
                part: u32::try_from(part).unwrap_or(u32::MAX),
            };
            outline.sessions.insert(id, session);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT cadre_id FROM p_enrolments WHERE course_id = ?1")?;
        for cadre in stmt.query_map([cid], |r| r.get::<_, String>(0))? {
            outline.enrolments.insert(cadre?, sync_core::model::Enrolment { at: 0 });
        }
        Ok(Some(outline))
    }

    fn record_contact(&mut self, c: &Contact<'_>) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE devices SET last_sync_at = ?2, pending_reported = ?3, app_version = ?4,
               bytes_up = bytes_up + ?5, bytes_down = bytes_down + ?6, last_cursor = MAX(last_cursor, ?7)
             WHERE id = ?1",
            params![
                c.device_id,
                c.now,
                c.pending,
                c.app_version,
                c.bytes_up,
                c.bytes_down,
                c.cursor
            ],
        )?;
        Ok(())
    }

    fn refuse(&mut self, device: &str, doc: &str, reason: &str, data: &[u8]) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO refusals (device_id, doc_id, reason, at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![device, doc, reason, now(), data],
        )?;
        Ok(())
    }

    fn changed_since(&mut self, units: &[String], cursor: i64) -> StoreResult<Vec<(String, i64, i64)>> {
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT doc_id, created_seq, updated_seq FROM docs WHERE unit = ?1 AND updated_seq > ?2")?;
        for unit in units {
            let rows = stmt.query_map(params![unit, cursor], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            for row in rows {
                out.push(row?);
            }
        }
        out.sort_by_key(|(_, _, updated)| *updated);
        Ok(out)
    }

    fn changes_since(&mut self, id: &str, cursor: i64) -> StoreResult<Vec<u8>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT data FROM changes WHERE doc_id = ?1 AND seq > ?2 ORDER BY seq")?;
        let mut out = Vec::new();
        for data in stmt.query_map(params![id, cursor], |r| r.get::<_, Vec<u8>>(0))? {
            out.extend_from_slice(&data?);
        }
        Ok(out)
    }

    fn max_seq(&mut self) -> StoreResult<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| r.get(0))?)
    }

    fn change_log(&mut self, units: &[String], after: i64, upto: i64) -> StoreResult<Vec<(i64, String, [u8; 32])>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.seq, c.doc_id, c.hash FROM docs d JOIN changes c ON c.doc_id = d.doc_id
             WHERE d.unit = ?1 AND d.updated_seq > ?2 AND c.seq > ?2 AND c.seq <= ?3",
        )?;
        let mut out = Vec::new();
        for unit in units {
            let rows = stmt.query_map(params![unit, after, upto], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?))
            })?;
            for row in rows {
                let (seq, doc, hash) = row?;
                let hash: [u8; 32] = hash
                    .try_into()
                    .map_err(|_| StoreError::Other(format!("change {seq} has a hash that is not 32 bytes")))?;
                out.push((seq, doc, hash));
            }
        }
        out.sort_by_key(|(seq, _, _)| *seq);
        Ok(out)
    }

    fn first_change_seq(&mut self, doc: &str) -> StoreResult<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT MIN(seq) FROM changes WHERE doc_id = ?1", [doc], |r| r.get(0))?)
    }
}

impl Store for SqliteStore {
    fn maintain(&self) {
        self.trim_cache();
    }

    fn create_enroll_code(&self, unit: &str, code_hash: &str, expires_at: i64) -> StoreResult<()> {
        self.conn().execute(
            "INSERT INTO enroll_codes (code_hash, unit, expires_at) VALUES (?1, ?2, ?3)",
            params![code_hash, unit, expires_at],
        )?;
        Ok(())
    }

    fn redeem_enroll_code(
        &self,
        code_hash: &str,
        device_id: &str,
        actor: &str,
        app_version: &str,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Result<String, RedeemError>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let unit: Option<String> = tx
            .query_row(
                "SELECT unit FROM enroll_codes WHERE code_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![code_hash, now],
                |r| r.get(0),
            )
            .optional()?;
        let Some(unit) = unit else {
            return Ok(Err(RedeemError::BadCode));
        };
        let exists: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM devices WHERE id = ?1 OR actor = ?2)",
            params![device_id, actor],
            |r| r.get(0),
        )?;
        if exists {
            return Ok(Err(RedeemError::DeviceExists));
        }
        tx.execute(
            "INSERT INTO devices (id, unit, actor, token_hash, app_version, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![device_id, unit, actor, token_hash, app_version, now],
        )?;
        tx.execute(
            "UPDATE enroll_codes SET used_at = ?2, device_id = ?3 WHERE code_hash = ?1",
            params![code_hash, now, device_id],
        )?;
        tx.commit()?;
        Ok(Ok(unit))
    }

    fn device_by_token(&self, token_hash: &str) -> StoreResult<Option<DeviceRow>> {
        Ok(self
            .reader()
            .query_row(
                &format!("SELECT {DEVICE_COLS} FROM devices WHERE token_hash = ?1"),
                [token_hash],
                device_row,
            )
            .optional()?)
    }

    fn device_by_id(&self, device_id: &str) -> StoreResult<Option<(DeviceRow, String)>> {
        Ok(self
            .reader()
            .query_row(
                &format!("SELECT {DEVICE_COLS}, token_hash FROM devices WHERE id = ?1"),
                [device_id],
                |r| Ok((device_row(r)?, r.get(11)?)),
            )
            .optional()?)
    }

    fn set_device_cursor(&self, device_id: &str, cursor: i64) -> StoreResult<()> {
        self.conn().execute(
            "UPDATE devices SET last_cursor = MAX(last_cursor, ?2) WHERE id = ?1",
            params![device_id, cursor],
        )?;
        Ok(())
    }

    fn revoke_device(&self, device_id: &str, now: i64) -> StoreResult<bool> {
        let n = self.conn().execute(
            "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            params![device_id, now],
        )?;
        Ok(n > 0)
    }

    fn issue_certificates(
        &self,
        course_id: &str,
        unit: &str,
        year: i64,
        cadres: &[String],
        now: i64,
    ) -> StoreResult<Vec<(CertificateRow, bool)>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::new();
        for cadre in cadres {
            let existing = tx
                .query_row(
                    "SELECT number, course_id, cadre_id, unit, year, seq, issued_at FROM certificates
                     WHERE course_id = ?1 AND cadre_id = ?2",
                    params![course_id, cadre],
                    cert_row,
                )
                .optional()?;
            if let Some(row) = existing {
                out.push((row, false));
                continue;
            }
            tx.execute(
                "INSERT INTO cert_register (unit, year, last) VALUES (?1, ?2, 1)
                 ON CONFLICT(unit, year) DO UPDATE SET last = last + 1",
                params![unit, year],
            )?;
            let seq: i64 = tx.query_row(
                "SELECT last FROM cert_register WHERE unit = ?1 AND year = ?2",
                params![unit, year],
                |r| r.get(0),
            )?;
            let code = unit.rsplit(':').next().unwrap_or(unit);
            let row = CertificateRow {
                number: format!("{code}/{year}/{seq:05}"),
                course_id: course_id.to_string(),
                cadre_id: cadre.clone(),
                unit: unit.to_string(),
                year,
                seq,
                issued_at: now,
            };
            tx.execute(
                "INSERT INTO certificates (course_id, cadre_id, unit, year, seq, number, issued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    row.course_id,
                    row.cadre_id,
                    row.unit,
                    row.year,
                    row.seq,
                    row.number,
                    row.issued_at
                ],
            )?;
            out.push((row, true));
        }
        tx.commit()?;
        Ok(out)
    }

    fn certificates(&self, course_id: &str) -> StoreResult<Vec<CertificateRow>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT number, course_id, cadre_id, unit, year, seq, issued_at FROM certificates
             WHERE course_id = ?1 ORDER BY unit, year, seq",
        )?;
        let rows = stmt.query_map([course_id], cert_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn set_device_unit(&self, device_id: &str, unit: &str) -> StoreResult<bool> {
        let n = self
            .conn()
            .execute("UPDATE devices SET unit = ?2 WHERE id = ?1", params![device_id, unit])?;
        Ok(n > 0)
    }

    fn devices(&self) -> StoreResult<Vec<DeviceRow>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!("SELECT {DEVICE_COLS} FROM devices ORDER BY unit, id"))?;
        let rows = stmt.query_map([], device_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn record_contact(
        &self,
        device_id: &str,
        now: i64,
        pending: i64,
        app_version: &str,
        bytes_up: i64,
        bytes_down: i64,
    ) -> StoreResult<()> {
        self.conn().execute(
            "UPDATE devices SET last_sync_at = ?2, pending_reported = ?3, app_version = ?4,
               bytes_up = bytes_up + ?5, bytes_down = bytes_down + ?6 WHERE id = ?1",
            params![device_id, now, pending, app_version, bytes_up, bytes_down],
        )?;
        Ok(())
    }

    /// Group commit (module docs): the request runs in a savepoint of the open batch;
    /// the last request of a queue commits, the others wait for that commit.
    fn write(&self, f: &mut dyn FnMut(&mut dyn DocTx) -> StoreResult<()>) -> StoreResult<()> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut w = self.lock_writer();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if w.batch.is_none() {
            w.conn.execute_batch("BEGIN IMMEDIATE")?;
            let id = w.next_batch;
            w.next_batch += 1;
            w.batch = Some(Batch {
                id,
                requests: 0,
                opened: Instant::now(),
            });
        }
        // Outer error: the savepoint itself failed; the batch is ended for everyone.
        let outcome: Result<StoreResult<()>, rusqlite::Error> = (|| {
            let Writer {
                conn,
                cache,
                uncommitted,
                ..
            } = &mut *w;
            conn.execute_batch("SAVEPOINT sync_request")?;
            let mut t = SqliteTx {
                conn,
                cache,
                uncommitted,
                stored: HashMap::new(),
                kept: Vec::new(),
            };
            let result = f(&mut t);
            let (stored, kept) = (t.stored, t.kept);
            match result {
                Ok(()) => {
                    conn.execute_batch("RELEASE sync_request")?;
                    for (key, seq, doc) in kept {
                        uncommitted.insert(key, (seq, doc));
                    }
                    Ok(Ok(()))
                }
                Err(e) => {
                    // What this request loaded or stored may not be what the batch holds.
                    for key in stored.keys() {
                        uncommitted.remove(key);
                        cache.remove(key);
                    }
                    conn.execute_batch("ROLLBACK TO sync_request; RELEASE sync_request")?;
                    Ok(Err(e))
                }
            }
        })();
        let result = match outcome {
            Ok(r) => r,
            Err(e) => {
                let _ = w.end_batch();
                drop(w);
                self.batch_done.notify_all();
                return Err(e.into());
            }
        };
        let Some(batch) = w.batch.as_mut() else {
            return result;
        };
        if result.is_ok() {
            batch.requests += 1;
        }
        let mine = batch.id;
        let full = batch.requests >= BATCH_REQUESTS || batch.opened.elapsed() >= BATCH_OPEN;
        if self.queued.load(Ordering::SeqCst) == 0 || full {
            let committed = w.end_batch();
            drop(w);
            self.batch_done.notify_all();
            result?;
            return committed.map_err(StoreError::Other);
        }
        // Someone is queued behind us and will commit (or hand on to the next); wait for
        // the batch to end. Bounded: past the deadline, end it ourselves.
        let deadline = Instant::now() + BATCH_OPEN * 20;
        loop {
            if w.done >= mine {
                let outcome = w.outcome(mine);
                drop(w);
                result?;
                return outcome.map_err(StoreError::Other);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let outcome = if w.batch.as_ref().map(|b| b.id) == Some(mine) {
                    w.end_batch()
                } else {
                    w.outcome(mine)
                };
                drop(w);
                self.batch_done.notify_all();
                result?;
                return outcome.map_err(StoreError::Other);
            }
            w = self
                .batch_done
                .wait_timeout(w, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn course_rows(&self, course_id: &str) -> StoreResult<Option<CourseRows>> {
        let conn = self.reader();
        // One read transaction: the four reads see one state, whatever commits meanwhile.
        let tx = conn.unchecked_transaction()?;
        Ok(sync_core::projection::course_rows(&tx, course_id)?)
    }

    fn courses(&self) -> StoreResult<Vec<CourseListRow>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT c.id, c.unit, c.title,
               (SELECT COUNT(*) FROM p_sessions s WHERE s.course_id = c.id),
               (SELECT COUNT(*) FROM p_enrolments e WHERE e.course_id = c.id),
               (SELECT COUNT(*) FROM p_marks m WHERE m.course_id = c.id),
               (SELECT COUNT(*) FROM p_marks m WHERE m.course_id = c.id AND m.conflict IS NOT NULL)
             FROM p_courses c ORDER BY c.unit, c.title",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(CourseListRow {
                    id: r.get(0)?,
                    unit: r.get(1)?,
                    title: r.get(2)?,
                    sessions: r.get(3)?,
                    trainees: r.get(4)?,
                    marks: r.get(5)?,
                    conflicts: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn refusals(&self) -> StoreResult<Vec<RefusalRow>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT id, device_id, doc_id, reason, at FROM refusals ORDER BY id DESC LIMIT 500")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RefusalRow {
                    id: r.get(0)?,
                    device_id: r.get(1)?,
                    doc_id: r.get(2)?,
                    reason: r.get(3)?,
                    at: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let conn = self.reader();
        let mut out = Vec::new();
        for (name, sql) in [
            ("devices", "SELECT COUNT(*) FROM devices"),
            ("cadres", "SELECT COUNT(*) FROM p_cadres"),
            ("courses", "SELECT COUNT(*) FROM p_courses"),
            ("marks", "SELECT COUNT(*) FROM p_marks"),
            ("conflicts", "SELECT COUNT(*) FROM p_marks WHERE conflict IS NOT NULL"),
            ("changes", "SELECT COUNT(*) FROM changes"),
        ] {
            out.push((name.to_string(), conn.query_row(sql, [], |r| r.get(0))?));
        }
        Ok(out)
    }

    fn put_account(&self, name: &str, unit: &str, password_hash: &str, now: i64, replace: bool) -> StoreResult<bool> {
        let conn = self.conn();
        let n = if replace {
            conn.execute(
                "INSERT INTO accounts (name, unit, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET unit = excluded.unit, password_hash = excluded.password_hash",
                params![name, unit, password_hash, now],
            )?
        } else {
            conn.execute(
                "INSERT OR IGNORE INTO accounts (name, unit, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, unit, password_hash, now],
            )?
        };
        if replace {
            // A new password ends every session of the old one.
            conn.execute("DELETE FROM web_sessions WHERE account = ?1", [name])?;
        }
        Ok(n > 0)
    }

    fn account(&self, name: &str) -> StoreResult<Option<AccountRow>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT name, unit, password_hash FROM accounts WHERE name = ?1",
                [name],
                account_row,
            )
            .optional()?)
    }

    fn create_web_session(&self, token_hash: &str, account: &str, now: i64, expires_at: i64) -> StoreResult<()> {
        let conn = self.conn();
        conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?1", [now])?;
        conn.execute(
            "INSERT INTO web_sessions (token_hash, account, expires_at) VALUES (?1, ?2, ?3)",
            params![token_hash, account, expires_at],
        )?;
        Ok(())
    }

    fn web_session(&self, token_hash: &str, now: i64) -> StoreResult<Option<AccountRow>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT a.name, a.unit, a.password_hash FROM web_sessions s JOIN accounts a ON a.name = s.account
                 WHERE s.token_hash = ?1 AND s.expires_at > ?2",
                params![token_hash, now],
                account_row,
            )
            .optional()?)
    }

    fn delete_web_session(&self, token_hash: &str) -> StoreResult<()> {
        self.conn()
            .execute("DELETE FROM web_sessions WHERE token_hash = ?1", [token_hash])?;
        Ok(())
    }
    fn period_courses(&self, from: &str, to: &str) -> StoreResult<Vec<PeriodCourse>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT c.id, c.unit, c.title, c.min_ratio, c.excused_counts, c.programme, COUNT(*),
               SUM(CASE WHEN s.date >= ?1 AND s.date <= ?2 THEN 1 ELSE 0 END), MIN(s.date), MAX(s.date)
             FROM p_courses c JOIN p_sessions s ON s.course_id = c.id
             WHERE c.id IN (SELECT DISTINCT course_id FROM p_sessions WHERE date >= ?1 AND date <= ?2)
             GROUP BY c.id, c.unit, c.title, c.min_ratio, c.excused_counts, c.programme
             ORDER BY c.unit, c.id",
        )?;
        let rows = stmt
            .query_map(params![from, to], |r| {
                Ok(PeriodCourse {
                    id: r.get(0)?,
                    unit: r.get(1)?,
                    title: r.get(2)?,
                    min_ratio: r.get(3)?,
                    excused_counts: r.get(4)?,
                    programme: r.get(5)?,
                    sessions: r.get(6)?,
                    sessions_in_period: r.get(7)?,
                    first_date: r.get(8)?,
                    last_date: r.get(9)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn period_trainees(&self, courses: &[PeriodCourse], from: &str, to: &str) -> StoreResult<Vec<PeriodTrainee>> {
        let conn = self.reader();
        let mut enrolled = conn.prepare_cached(
            "SELECT e.cadre_id, c.id IS NOT NULL, c.gender, c.birth_year, c.ethnicity, c.category, c.qualification,
               c.theory_level
             FROM p_enrolments e LEFT JOIN p_cadres c ON c.id = e.cadre_id WHERE e.course_id = ?1 ORDER BY e.cadre_id",
        )?;
        // Read from the (course_id, cadre_id, status) index alone.
        let mut all_marks = conn.prepare_cached(
            "SELECT cadre_id, status, COUNT(*) FROM p_marks WHERE course_id = ?1 GROUP BY cadre_id, status",
        )?;
        // Only for a course that has sessions outside the period.
        let mut period_marks = conn.prepare_cached(
            "SELECT m.cadre_id, m.status, COUNT(*) FROM p_marks m
               JOIN p_sessions s ON s.course_id = m.course_id AND s.id = m.session_id
             WHERE m.course_id = ?1 AND s.date >= ?2 AND s.date <= ?3 GROUP BY m.cadre_id, m.status",
        )?;
        // The primary key's range: completion needs every evaluation slot passed.
        let mut evaluations = conn.prepare_cached(
            "SELECT cadre_id, slot, pass FROM p_evaluations WHERE course_id = ?1 ORDER BY cadre_id, slot",
        )?;
        let mut out = Vec::new();
        for course in courses {
            let mut index = std::collections::HashMap::new();
            let rows = enrolled.query_map([&course.id], |r| {
                let known: bool = r.get(1)?;
                Ok((
                    r.get::<_, String>(0)?,
                    known,
                    (
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ),
                ))
            })?;
            for row in rows {
                let (cadre_id, known, (gender, birth_year, ethnicity, category, qualification, theory_level)) = row?;
                index.insert(cadre_id.clone(), out.len());
                out.push(PeriodTrainee {
                    course_id: course.id.clone(),
                    cadre_id,
                    cadre: known.then_some(CadreFacts {
                        gender,
                        birth_year,
                        ethnicity,
                        category,
                        qualification,
                        theory_level,
                    }),
                    marks: MarkCounts::default(),
                    evaluations: Vec::new(),
                });
            }
            let mut rows = evaluations.query([&course.id])?;
            while let Some(r) = rows.next()? {
                let cadre = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
                if let Some(&i) = index.get(cadre) {
                    out[i].evaluations.push((r.get(1)?, r.get(2)?));
                }
            }
            drop(rows);
            let whole = course.sessions_in_period == course.sessions;
            let mut count = |stmt: &mut rusqlite::CachedStatement<'_>,
                             args: &[&dyn rusqlite::ToSql],
                             in_period: bool,
                             total: bool|
             -> StoreResult<()> {
                let mut rows = stmt.query(args)?;
                while let Some(r) = rows.next()? {
                    let cadre = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
                    let status = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
                    let n: i64 = r.get(2)?;
                    if let Some(&i) = index.get(cadre) {
                        out[i].marks.add(status, n, total, in_period);
                    }
                }
                Ok(())
            };
            count(&mut all_marks, &[&course.id], whole, true)?;
            if !whole {
                count(&mut period_marks, &[&course.id, &from, &to], true, false)?;
            }
        }
        Ok(out)
    }

    fn changes_until(&self, until: i64) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT doc_id, data FROM changes WHERE received_at <= ?1 ORDER BY seq")?;
        let rows = stmt
            .query_map([until], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

/// An `accounts` row read as `SELECT name, unit, password_hash`.
fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        name: r.get(0)?,
        unit: r.get(1)?,
        password_hash: r.get(2)?,
    })
}

// ---------------------------------------------------------------------------------------
// Online backup (`diemdanh-server backup`) and the check of a file to restore.

/// The store's file in its folder.
pub const FILE: &str = "diemdanh.sqlite";

/// The schema version this build migrates a store to (`PRAGMA user_version`).
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// What a backup file holds, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub bytes: u64,
    pub schema_version: i64,
}

/// Copies the store of `dir` to `out` with SQLite's online backup API while a server may
/// be writing to it, then checks the copy (`PRAGMA integrity_check`, a diemdanh schema)
/// before it appears under `out` (written to `out.partial`, synced, renamed).
///
/// The whole copy is one backup step: one read transaction, so the copy is the store as
/// of one commit. In WAL mode the server's writers go on meanwhile; a step-by-step copy
/// would restart at every write of another connection and might never finish on a busy
/// server. The copy is in rollback-journal mode: one self-contained file.
pub fn backup(dir: &Path, out: &Path) -> StoreResult<BackupInfo> {
    let src_path = dir.join(FILE);
    if !src_path.is_file() {
        return Err(StoreError::Other(format!(
            "no store in {}: {} does not exist",
            dir.display(),
            src_path.display()
        )));
    }
    let src = Connection::open_with_flags(
        &src_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(std::time::Duration::from_secs(30))?;
    check_schema(&src, &src_path)?;
    let partial = partial_path(out);
    let _ = std::fs::remove_file(&partial);
    let copied = (|| -> StoreResult<BackupInfo> {
        let mut dst = Connection::open(&partial)?;
        {
            let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
            // Busy or locked: another connection holds a lock for a moment. Bounded.
            let mut waits = 0;
            loop {
                match backup.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => {}
                    _ if waits < 300 => {
                        waits += 1;
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    _ => return Err(StoreError::Other("the store stayed locked for 30 s; try again".into())),
                }
            }
        }
        dst.pragma_update(None, "journal_mode", "DELETE")?;
        let info = check_connection(&dst, &partial)?;
        dst.close().map_err(|(_, e)| e)?;
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io_error(&partial))?;
        Ok(info)
    })();
    let info = match copied {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out).map_err(io_error(out))?;
    sync_parent(out);
    let bytes = std::fs::metadata(out).map_err(io_error(out))?.len();
    Ok(BackupInfo { bytes, ..info })
}

/// Checks that the SQLite file at `path` is a whole diemdanh store this build can open:
/// an SQLite database, `PRAGMA integrity_check` ok, the diemdanh tables, and a schema
/// version this build knows. The error says which, for a person. Opens the file
/// read-write (a WAL-mode file needs it): check a copy, not a file you must keep as is.
pub fn check_store_file(path: &Path) -> StoreResult<BackupInfo> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let info = check_connection(&conn, path)?;
    let bytes = std::fs::metadata(path).map_err(io_error(path))?.len();
    Ok(BackupInfo { bytes, ..info })
}

fn check_connection(conn: &Connection, path: &Path) -> StoreResult<BackupInfo> {
    let version = check_schema(conn, path)?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if problems != ["ok"] {
        return Err(StoreError::Other(format!(
            "{} is damaged (PRAGMA integrity_check): {}",
            path.display(),
            problems.into_iter().take(5).collect::<Vec<_>>().join("; ")
        )));
    }
    Ok(BackupInfo {
        bytes: 0,
        schema_version: version,
    })
}

/// The schema version of a diemdanh store, or why the file is not one.
fn check_schema(conn: &Connection, path: &Path) -> StoreResult<i64> {
    let not_a_store = |why: &str| StoreError::Other(format!("{} is not a diemdanh store: {why}", path.display()));
    let version: i64 = match conn.pragma_query_value(None, "user_version", |r| r.get(0)) {
        Ok(v) => v,
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::NotADatabase => {
            return Err(not_a_store("it is not an SQLite database"))
        }
        Err(e) => return Err(e.into()),
    };
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('devices', 'docs', 'changes')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                not_a_store("it is not an SQLite database")
            }
            e => e.into(),
        })?;
    if version < 1 || tables != 3 {
        return Err(not_a_store("an SQLite database without diemdanh's tables"));
    }
    if version > schema_version() {
        return Err(StoreError::Other(format!(
            "{} has schema version {version}, newer than this diemdanh-server knows ({}): use a newer server",
            path.display(),
            schema_version()
        )));
    }
    Ok(version)
}

/// `FILE.partial` beside `FILE`.
pub fn partial_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Other(format!("{}: {e}", path.display()))
}

/// Makes a rename in `path`'s folder durable (best effort: not every file system can).
pub fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn queued_requests_share_commits_and_keep_their_own_outcome() {
        const THREADS: usize = 12;
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.write(&mut |tx| {
                        tx.refuse(&format!("dev-{i}"), "doc", "why", b"x")?;
                        // Long enough that the others queue behind this request.
                        std::thread::sleep(Duration::from_millis(5));
                        if i == 5 {
                            return Err(StoreError::Other("this request fails".into()));
                        }
                        Ok(())
                    })
                })
            })
            .collect();
        let outcomes: Vec<bool> = threads.into_iter().map(|t| t.join().expect("thread").is_ok()).collect();
        for (i, ok) in outcomes.iter().enumerate() {
            assert_eq!(*ok, i != 5, "request {i}");
        }
        // Read through a second handle: what was answered Ok is committed.
        let other = SqliteStore::open(dir.path()).expect("open again");
        let mut devices: Vec<String> = other
            .refusals()
            .expect("rows")
            .into_iter()
            .map(|r| r.device_id)
            .collect();
        devices.sort();
        let mut expected: Vec<String> = (0..THREADS).filter(|i| *i != 5).map(|i| format!("dev-{i}")).collect();
        expected.sort();
        assert_eq!(devices, expected, "the failed request rolled back alone");
        let stats = store.write_stats();
        assert_eq!(stats.requests, THREADS as u64 - 1);
        assert!(
            stats.commits < stats.requests,
            "queued requests shared commits: {stats:?}"
        );
    }

    #[test]
    fn a_store_of_a_newer_schema_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().expect("tmp");
        drop(SqliteStore::open(dir.path()).expect("open"));
        let conn = Connection::open(dir.path().join(FILE)).expect("raw");
        conn.pragma_update(None, "user_version", 99).expect("set");
        drop(conn);
        let err = SqliteStore::open(dir.path()).expect_err("newer store");
        assert!(err.to_string().contains("schema version 99, newer"), "{err}");
        let conn = Connection::open(dir.path().join(FILE)).expect("raw");
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("read");
        assert_eq!(v, 99, "nothing was written to it");
    }

    #[test]
    fn a_write_outside_the_sync_path_commits_an_open_batch_first() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(dir.path()).expect("open");
        store
            .write(&mut |tx| tx.refuse("dev-1", "doc", "why", b"x"))
            .expect("write");
        // An admin write right after: its own transaction works, and both are there.
        store.revoke_device("nobody", 1).expect("revoke");
        store.create_enroll_code("2025:03434", "h", 10).expect("code");
        assert_eq!(store.refusals().expect("rows").len(), 1);
    }
}
