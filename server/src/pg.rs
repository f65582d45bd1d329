//! The PostgreSQL backend, for several stateless `diemdanh-server` nodes on one
//! database (`serve --database postgres://...`). Same tables and columns as the embedded
//! store (`sqlite.rs`), its own migrations and DDL.
//!
//! Driver: the synchronous `postgres` crate behind an `r2d2` pool. The store traits are
//! synchronous and the API already calls them inside `spawn_blocking`, so a blocking
//! client fits with no change to the traits, the sync logic or the admin commands; an
//! async driver would need a runtime bridge on every call for nothing gained. Each pooled
//! client owns a small current-thread runtime: never drop the last handle of a
//! [`PgStore`] inside an async context (`cli::serve` keeps one outside).
//!
//! Concurrency (docs/adr/0001-postgres-backend.md):
//! - A pushed document is loaded under a transaction-scoped advisory lock on its id
//!   ([`DocTx::load_for_update`]), so two nodes merging into one document take turns and
//!   neither overwrites the other's snapshot. The lock exists before the row does, which
//!   a `SELECT ... FOR UPDATE` could not give for a document's first push.
//! - The global change sequence (the devices' cursor) is commit-ordered: it is a counter
//!   row, not a PostgreSQL sequence, taken with `UPDATE ... RETURNING` as late as possible
//!   (when the transaction first reads what changed, or just before commit) and held until
//!   commit. So no sequence number becomes visible before every lower one is, and a
//!   cursor never skips a change committed late. A rolled-back transaction gives its
//!   numbers back: the sequence has no gaps either.
//! - Deadlocks and serialization failures roll back and run the whole closure again.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use automerge::{Automerge, Change};
use postgres::error::SqlState;
use postgres::{NoTls, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use sha2::{Digest, Sha256};
use sync_core::docs::{Contents, DocId, MarkEntry};
use sync_core::report::{CourseRows, EvaluationRow, MarkInput, SessionRow, TraineeRow};

use crate::store::{
    AccountRow, CadreFacts, CertificateRow, Contact, CourseListRow, DeviceRow, DocTx, MarkCounts, PeriodCourse,
    PeriodTrainee, Projection, RedeemError, RefusalRow, Store, StoreError, StoreResult, StoredDoc,
};

type Pool = r2d2::Pool<Manager>;

/// Prepared statements of one connection, by their text.
type StatementCache = std::collections::HashMap<&'static str, postgres::Statement>;

/// A pooled connection with the statements prepared on it (they live as long as it).
pub struct PgConn {
    client: postgres::Client,
    stmts: StatementCache,
}

impl std::ops::Deref for PgConn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

/// `sql` from the connection's cache, prepared on it (through `client`, the connection or
/// a transaction on it) the first time.
fn prepared(
    stmts: &mut StatementCache,
    client: &mut impl postgres::GenericClient,
    sql: &'static str,
) -> StoreResult<postgres::Statement> {
    if let Some(st) = stmts.get(sql) {
        return Ok(st.clone());
    }
    let st = client.prepare(sql)?;
    stmts.insert(sql, st.clone());
    Ok(st)
}

/// The lookup every sync starts with.
static DEVICE_BY_TOKEN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {DEVICE_COLS} FROM devices WHERE token_hash = $1"));

/// r2d2_postgres's manager, with a statement cache per connection.
struct Manager(PostgresConnectionManager<NoTls>);

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.0.connect()?,
            stmts: StatementCache::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

/// Migrations, in order; shipped ones are never edited. Version 1 is the SQLite store's
/// migrations 1 and 2 together, in PostgreSQL types, plus the sequence counter.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE devices (
        id TEXT PRIMARY KEY, unit TEXT NOT NULL, actor TEXT NOT NULL UNIQUE, token_hash TEXT NOT NULL UNIQUE,
        app_version TEXT NOT NULL, created_at BIGINT NOT NULL, revoked_at BIGINT, last_sync_at BIGINT,
        pending_reported BIGINT NOT NULL DEFAULT 0, bytes_up BIGINT NOT NULL DEFAULT 0,
        bytes_down BIGINT NOT NULL DEFAULT 0, last_cursor BIGINT NOT NULL DEFAULT 0
     );
     CREATE TABLE enroll_codes (
        code_hash TEXT PRIMARY KEY, unit TEXT NOT NULL, expires_at BIGINT NOT NULL, used_at BIGINT, device_id TEXT
     );
     CREATE TABLE docs (
        doc_id TEXT PRIMARY KEY, kind TEXT NOT NULL, unit TEXT NOT NULL, course_id TEXT,
        snapshot BYTEA NOT NULL, created_seq BIGINT NOT NULL, updated_seq BIGINT NOT NULL
     );
     CREATE INDEX docs_unit_seq ON docs(unit, updated_seq);
     CREATE TABLE changes (
        seq BIGINT PRIMARY KEY, doc_id TEXT NOT NULL, hash BYTEA NOT NULL, actor TEXT NOT NULL,
        device_id TEXT NOT NULL, time BIGINT NOT NULL, received_at BIGINT NOT NULL, data BYTEA NOT NULL,
        UNIQUE (doc_id, hash)
     );
     CREATE INDEX changes_doc_seq ON changes(doc_id, seq);
     -- The last change sequence number handed out, in one row: taking it locks the row
     -- until commit, which orders the numbers by commit (see the module doc).
     CREATE TABLE seq_counter (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), value BIGINT NOT NULL);
     INSERT INTO seq_counter (one, value) VALUES (TRUE, 0);
     CREATE TABLE refusals (
        id BIGSERIAL PRIMARY KEY, device_id TEXT NOT NULL, doc_id TEXT NOT NULL, reason TEXT NOT NULL,
        at BIGINT NOT NULL, data BYTEA NOT NULL
     );
     CREATE TABLE p_cadres (
        id TEXT PRIMARY KEY, unit TEXT NOT NULL, name TEXT NOT NULL, gender TEXT NOT NULL, birth_year INTEGER NOT NULL,
        ethnicity TEXT, category TEXT, position TEXT, qualification TEXT, theory_level TEXT, doc_id TEXT NOT NULL
     );
     CREATE INDEX p_cadres_doc ON p_cadres(doc_id);
     CREATE INDEX p_cadres_unit ON p_cadres(unit);
     CREATE TABLE p_courses (
        id TEXT PRIMARY KEY, unit TEXT NOT NULL, title TEXT NOT NULL, min_ratio DOUBLE PRECISION NOT NULL,
        excused_counts BOOLEAN NOT NULL, planned INTEGER NOT NULL, start_date TEXT, end_date TEXT, doc_id TEXT NOT NULL
     );
     CREATE TABLE p_sessions (
        course_id TEXT NOT NULL, id TEXT NOT NULL, date TEXT NOT NULL, half_day TEXT, periods INTEGER, topic TEXT,
        part INTEGER NOT NULL, PRIMARY KEY (course_id, id)
     );
     CREATE TABLE p_enrolments (course_id TEXT NOT NULL, cadre_id TEXT NOT NULL, PRIMARY KEY (course_id, cadre_id));
     CREATE TABLE p_marks (
        course_id TEXT NOT NULL, session_id TEXT NOT NULL, cadre_id TEXT NOT NULL, status TEXT NOT NULL, note TEXT,
        conflict TEXT, device_id TEXT NOT NULL, recorded_at BIGINT NOT NULL, doc_id TEXT NOT NULL,
        PRIMARY KEY (course_id, session_id, cadre_id)
     );
     CREATE INDEX p_marks_doc ON p_marks(doc_id);",
    // 2: evaluations (the SQLite store's migration 3, `projection::TABLES_V2`).
    "CREATE TABLE p_evaluations (
        course_id TEXT NOT NULL, cadre_id TEXT NOT NULL, slot TEXT NOT NULL, kind TEXT NOT NULL, period TEXT,
        score DOUBLE PRECISION, passed BOOLEAN, pass BOOLEAN NOT NULL, PRIMARY KEY (course_id, cadre_id, slot)
     );",
    // 3: reports (the SQLite store's migration 5): the course's programme type and the
    // indexes the unit and annual reports read through.
    "ALTER TABLE p_courses ADD COLUMN programme TEXT;
     CREATE INDEX p_marks_report ON p_marks(course_id, cadre_id, status);
     CREATE INDEX p_sessions_date ON p_sessions(date, course_id);",
    // 4: web accounts and their sign-in sessions (the SQLite store's migration 4), and
    // the certificate register (its migration 3): one counter per (unit, year) that only
    // goes up, so a number is never given twice.
    "CREATE TABLE accounts (
        name TEXT PRIMARY KEY, unit TEXT NOT NULL, password_hash TEXT NOT NULL, created_at BIGINT NOT NULL
     );
     CREATE TABLE web_sessions (
        token_hash TEXT PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(name), expires_at BIGINT NOT NULL
     );
     CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
     CREATE TABLE cert_register (unit TEXT NOT NULL, year BIGINT NOT NULL, last BIGINT NOT NULL,
        PRIMARY KEY (unit, year));
     CREATE TABLE certificates (
        course_id TEXT NOT NULL, cadre_id TEXT NOT NULL, unit TEXT NOT NULL, year BIGINT NOT NULL,
        seq BIGINT NOT NULL, number TEXT NOT NULL UNIQUE, issued_at BIGINT NOT NULL,
        PRIMARY KEY (course_id, cadre_id)
     );",
    // 5: snapshots every few changes (the SQLite store's migration 6).
    "ALTER TABLE docs ADD COLUMN snapshot_seq BIGINT NOT NULL DEFAULT 0,
       ADD COLUMN tail_changes BIGINT NOT NULL DEFAULT 0, ADD COLUMN tail_bytes BIGINT NOT NULL DEFAULT 0;
     UPDATE docs SET snapshot_seq = updated_seq;",
];

/// Changes logged after a document's snapshot before it is saved again (and at most as
/// many bytes as the snapshot, or [`TAIL_MIN_BYTES`]); the SQLite store's bounds.
const TAIL_CHANGES: i64 = 48;
const TAIL_MIN_BYTES: i64 = 16 * 1024;

/// Advisory lock key of the migrations: two nodes starting at once migrate once.
const MIGRATION_LOCK: i64 = 0x6469_656d_6461_6e68; // "diemdanh"

/// How often a transaction that lost a deadlock or a serialization race runs again.
const ATTEMPTS: u32 = 8;

pub struct PgStore {
    pool: Pool,
    /// Documents kept between pushes, shared by the pool's connections; each entry is
    /// used only when the row read under the document's lock has its sequence, so a
    /// write by another node is never hidden (`doc_cache.rs`).
    cache: std::sync::Mutex<crate::doc_cache::DocCache>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

/// Whether `url` names a PostgreSQL database rather than a folder.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl PgStore {
    /// Connects (a pool of `max_connections`) and runs the migrations that are missing.
    /// The error never contains the URL, which may hold a password.
    pub fn open(url: &str, max_connections: u32) -> StoreResult<PgStore> {
        let config = postgres::Config::from_str(url)
            .map_err(|e| StoreError::Other(format!("the database URL is not valid: {e}")))?;
        let manager = Manager(PostgresConnectionManager::new(config, NoTls));
        let pool = r2d2::Pool::builder()
            .max_size(max_connections.max(1))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| StoreError::Other(format!("cannot connect to PostgreSQL: {e}")))?;
        let store = PgStore {
            pool,
            cache: std::sync::Mutex::new(crate::doc_cache::DocCache::default()),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> StoreResult<()> {
        let mut client = self.pool.get()?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let current: i32 = match tx.query_opt("SELECT version FROM schema_version", &[])? {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])?;
                0
            }
        };
        if current as usize > MIGRATIONS.len() {
            return Err(StoreError::Other(format!(
                "the database has schema version {current}, newer than this server ({}): upgrade the server",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
            tx.batch_execute(sql)?;
            tx.execute("UPDATE schema_version SET version = $1", &[&((i + 1) as i32)])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The schema version now in the database.
    pub fn schema_version(&self) -> StoreResult<i32> {
        Ok(self
            .pool
            .get()?
            .query_one("SELECT version FROM schema_version", &[])?
            .get(0))
    }

    /// Bytes the whole database takes on the PostgreSQL server (`/metrics`).
    pub fn database_size(&self) -> StoreResult<i64> {
        Ok(self
            .client()?
            .query_one("SELECT pg_database_size(current_database())", &[])?
            .get(0))
    }

    fn client(&self) -> StoreResult<r2d2::PooledConnection<Manager>> {
        Ok(self.pool.get()?)
    }
}

/// Whether running the transaction again can succeed.
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(e) => matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        ),
        _ => false,
    }
}

fn doc_lock_key(doc_id: &str) -> i64 {
    let h = Sha256::digest(format!("diemdanh-doc:{doc_id}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    i64::from_be_bytes(b)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Changes of one document stored in this transaction and not yet numbered.
struct Pending {
    doc_id: String,
    /// Whether this store saved a new snapshot (then it covers up to the last number).
    snapshot: bool,
    tail_bytes: i64,
    hashes: Vec<Vec<u8>>,
    actors: Vec<String>,
    times: Vec<i64>,
    data: Vec<Vec<u8>>,
    device: String,
}

struct PgTx<'a> {
    tx: Transaction<'a>,
    /// The connection's prepared statements (`PgConn`): a sync runs a dozen statements,
    /// each prepared once per connection instead of parsed and planned every time.
    stmts: &'a mut StatementCache,
    cache: &'a std::sync::Mutex<crate::doc_cache::DocCache>,
    /// The sequence of each document as loaded, then as numbered once stored.
    seqs: std::collections::HashMap<String, i64>,
    /// Documents handed back by `keep`: the cache's once the transaction commits.
    kept: Vec<(String, Automerge)>,
    locked: HashSet<String>,
    pending: Vec<Pending>,
    /// The counter as the first `changed_since` of a transaction that wrote nothing saw
    /// it, in the same statement as the documents: what `max_seq` answers.
    seen_max: Option<i64>,
}

type Params<'p> = [&'p (dyn postgres::types::ToSql + Sync)];

impl PgTx<'_> {
    fn statement(&mut self, sql: &'static str) -> StoreResult<postgres::Statement> {
        prepared(self.stmts, &mut self.tx, sql)
    }

    /// A statement that failed is prepared afresh next time: a table altered under a
    /// long-lived connection (a newer node migrated) fails a cached plan once, not forever.
    fn forget(&mut self, sql: &'static str, e: postgres::Error) -> StoreError {
        self.stmts.remove(sql);
        e.into()
    }

    fn query(&mut self, sql: &'static str, params: &Params<'_>) -> StoreResult<Vec<postgres::Row>> {
        let st = self.statement(sql)?;
        self.tx.query(&st, params).map_err(|e| self.forget(sql, e))
    }

    fn query_opt(&mut self, sql: &'static str, params: &Params<'_>) -> StoreResult<Option<postgres::Row>> {
        let st = self.statement(sql)?;
        self.tx.query_opt(&st, params).map_err(|e| self.forget(sql, e))
    }

    fn query_one(&mut self, sql: &'static str, params: &Params<'_>) -> StoreResult<postgres::Row> {
        let st = self.statement(sql)?;
        self.tx.query_one(&st, params).map_err(|e| self.forget(sql, e))
    }

    fn execute(&mut self, sql: &'static str, params: &Params<'_>) -> StoreResult<u64> {
        let st = self.statement(sql)?;
        self.tx.execute(&st, params).map_err(|e| self.forget(sql, e))
    }

    fn lock_doc(&mut self, doc_id: &str) -> StoreResult<()> {
        if self.locked.insert(doc_id.to_string()) {
            self.execute("SELECT pg_advisory_xact_lock($1)", &[&doc_lock_key(doc_id)])?;
        }
        Ok(())
    }

    /// Numbers the pending changes: takes the counter row (held until commit), then
    /// writes the change log and each document's sequence columns.
    fn number_pending(&mut self) -> StoreResult<()> {
        let n: i64 = self.pending.iter().map(|p| p.hashes.len() as i64).sum();
        if n == 0 {
            return Ok(());
        }
        let last: i64 = self
            .query_one("UPDATE seq_counter SET value = value + $1 RETURNING value", &[&n])?
            .get(0);
        let mut next = last - n + 1;
        let received = now();
        for p in std::mem::take(&mut self.pending) {
            let count = p.hashes.len() as i64;
            let seqs: Vec<i64> = (next..next + count).collect();
            next += count;
            let doc_ids = vec![p.doc_id.clone(); p.hashes.len()];
            let devices = vec![p.device.clone(); p.hashes.len()];
            let received = vec![received; p.hashes.len()];
            self.execute(
                "INSERT INTO changes (seq, doc_id, hash, actor, device_id, time, received_at, data)
                 SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BYTEA[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                                      $7::BIGINT[], $8::BYTEA[])",
                &[
                    &seqs, &doc_ids, &p.hashes, &p.actors, &devices, &p.times, &received, &p.data,
                ],
            )?;
            let seq = seqs.last().copied().unwrap_or(last);
            self.execute(
                "UPDATE docs SET updated_seq = $2, created_seq = CASE WHEN created_seq = 0 THEN $2 ELSE created_seq END,
                   snapshot_seq = CASE WHEN $3 THEN $2 ELSE snapshot_seq END,
                   tail_changes = CASE WHEN $3 THEN 0 ELSE tail_changes + $4 END,
                   tail_bytes = CASE WHEN $3 THEN 0 ELSE tail_bytes + $5 END
                 WHERE doc_id = $1",
                &[&p.doc_id, &seq, &p.snapshot, &count, &p.tail_bytes],
            )?;
            self.seqs.insert(p.doc_id.clone(), seq);
        }
        Ok(())
    }
}

impl PgTx<'_> {
    fn load_doc(&mut self, id: &DocId, for_update: bool) -> StoreResult<Option<StoredDoc>> {
        let key = id.to_string();
        let Some(row) = self.query_opt(
            "SELECT created_seq, updated_seq, snapshot_seq FROM docs WHERE doc_id = $1",
            &[&key],
        )?
        else {
            return Ok(None);
        };
        let (created_seq, updated_seq, snapshot_seq): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        // Changes this transaction stored and has not numbered yet are in no table but
        // `pending`; such a document is never taken from the cache.
        let unnumbered: Vec<&Vec<u8>> = self
            .pending
            .iter()
            .filter(|p| p.doc_id == key)
            .flat_map(|p| p.data.iter())
            .collect();
        let cached = if updated_seq > 0 && unnumbered.is_empty() {
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key, updated_seq, for_update)
        } else {
            None
        };
        let snapshot = if for_update && cached.is_some() {
            Vec::new()
        } else {
            let pending: Vec<u8> = unnumbered.into_iter().flatten().copied().collect();
            let mut bytes: Vec<u8> = self
                .query_one("SELECT snapshot FROM docs WHERE doc_id = $1", &[&key])?
                .get(0);
            if updated_seq == 0 || updated_seq > snapshot_seq {
                let floor = if updated_seq == 0 { -1 } else { snapshot_seq };
                for r in self.query(
                    "SELECT data FROM changes WHERE doc_id = $1 AND seq > $2 ORDER BY seq",
                    &[&key, &floor],
                )? {
                    bytes.extend_from_slice(r.get::<_, &[u8]>(0));
                }
            }
            bytes.extend_from_slice(&pending);
            bytes
        };
        let doc = match cached {
            Some(d) => d,
            None => Automerge::load(&snapshot)?,
        };
        if updated_seq > 0 {
            self.seqs.entry(key).or_insert(updated_seq);
        }
        Ok(Some(StoredDoc {
            doc,
            snapshot,
            created_seq,
            updated_seq,
        }))
    }
}

impl DocTx for PgTx<'_> {
    fn load(&mut self, id: &DocId) -> StoreResult<Option<StoredDoc>> {
        self.load_doc(id, false)
    }

    /// `snapshot` is empty when the document came from memory: the caller changes it
    /// and never sends those bytes.
    fn load_for_update(&mut self, id: &DocId) -> StoreResult<Option<StoredDoc>> {
        self.lock_doc(&id.to_string())?;
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
        // Whoever stores without having loaded for update still takes the lock.
        self.lock_doc(&key)?;
        let hashes: Vec<Vec<u8>> = new_changes.iter().map(|c| c.hash().0.to_vec()).collect();
        let mut known: HashSet<Vec<u8>> = self
            .query(
                "SELECT hash FROM changes WHERE doc_id = $1 AND hash = ANY($2)",
                &[&key, &hashes],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for p in self.pending.iter().filter(|p| p.doc_id == key) {
            known.extend(p.hashes.iter().cloned());
        }
        let mut pending = Pending {
            doc_id: key.clone(),
            snapshot: false,
            tail_bytes: 0,
            hashes: Vec::new(),
            actors: Vec::new(),
            times: Vec::new(),
            data: Vec::new(),
            device: device.to_string(),
        };
        for c in new_changes {
            let hash = c.hash().0.to_vec();
            if known.insert(hash.clone()) {
                pending.hashes.push(hash);
                pending.actors.push(c.actor_id().to_hex_string());
                pending.times.push(c.timestamp());
                pending.data.push(c.raw_bytes().to_vec());
            }
        }
        if pending.hashes.is_empty() {
            return Ok(());
        }
        pending.tail_bytes = pending.data.iter().map(|d| d.len() as i64).sum();
        let tail: Option<(i64, i64, i32)> = self
            .query_opt(
                "SELECT tail_changes, tail_bytes, length(snapshot) FROM docs WHERE doc_id = $1",
                &[&key],
            )?
            .map(|r| (r.get(0), r.get(1), r.get(2)));
        let earlier: i64 = self
            .pending
            .iter()
            .filter(|p| p.doc_id == key)
            .map(|p| p.hashes.len() as i64)
            .sum();
        pending.snapshot = match tail {
            Some((changes, bytes, snapshot)) => {
                changes + earlier + pending.hashes.len() as i64 > TAIL_CHANGES
                    || bytes + pending.tail_bytes > i64::from(snapshot).max(TAIL_MIN_BYTES)
            }
            None => true,
        };
        if pending.snapshot {
            // Sequence columns are 0 until the changes are numbered (before any read of
            // what changed and before commit): only this transaction sees the row meanwhile.
            self.execute(
                "INSERT INTO docs (doc_id, kind, unit, course_id, snapshot, created_seq, updated_seq)
                 VALUES ($1, $2, $3, $4, $5, 0, 0)
                 ON CONFLICT (doc_id) DO UPDATE SET snapshot = excluded.snapshot",
                &[&key, &id.kind.as_str(), &id.unit.to_string(), &id.course, &doc.save()],
            )?;
        }
        match projection {
            Projection::Whole(contents) => write_projection(&mut self.tx, id, contents)?,
            Projection::Marks { entries, removed } => {
                let Some(cid) = &id.course else { return Ok(()) };
                upsert_marks(|sql, params| self.execute(sql, params), cid, &key, entries)?;
                for (session, cadre) in removed {
                    self.execute(
                        "DELETE FROM p_marks WHERE course_id = $1 AND session_id = $2 AND cadre_id = $3",
                        &[cid, session, cadre],
                    )?;
                }
            }
        }
        self.pending.push(pending);
        Ok(())
    }

    fn keep(&mut self, id: &DocId, doc: Automerge) {
        self.kept.push((id.to_string(), doc));
    }

    fn record_contact(&mut self, c: &Contact<'_>) -> StoreResult<()> {
        self.execute(
            "UPDATE devices SET last_sync_at = $2, pending_reported = $3, app_version = $4,
               bytes_up = bytes_up + $5, bytes_down = bytes_down + $6, last_cursor = GREATEST(last_cursor, $7)
             WHERE id = $1",
            &[
                &c.device_id,
                &c.now,
                &c.pending,
                &c.app_version,
                &c.bytes_up,
                &c.bytes_down,
                &c.cursor,
            ],
        )?;
        Ok(())
    }

    fn refuse(&mut self, device: &str, doc: &str, reason: &str, data: &[u8]) -> StoreResult<()> {
        self.execute(
            "INSERT INTO refusals (device_id, doc_id, reason, at, data) VALUES ($1, $2, $3, $4, $5)",
            &[&device, &doc, &reason, &now(), &data],
        )?;
        Ok(())
    }

    fn changed_since(&mut self, units: &[String], cursor: i64) -> StoreResult<Vec<(String, i64, i64)>> {
        self.number_pending()?;
        // One statement, one snapshot: the counter it reads covers exactly the documents
        // it returns (every number up to it is committed and visible, none above is).
        let rows = self.query(
            "SELECT c.value, d.doc_id, d.created_seq, d.updated_seq
             FROM seq_counter c LEFT JOIN docs d ON d.unit = ANY($1) AND d.updated_seq > $2
             ORDER BY d.updated_seq",
            &[&units, &cursor],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            self.seen_max.get_or_insert(row.get(0));
            if let Some(doc) = row.get::<_, Option<String>>(1) {
                out.push((doc, row.get(2), row.get(3)));
            }
        }
        Ok(out)
    }

    fn changes_since(&mut self, id: &str, cursor: i64) -> StoreResult<Vec<u8>> {
        let rows = self.query(
            "SELECT data FROM changes WHERE doc_id = $1 AND seq > $2 ORDER BY seq",
            &[&id, &cursor],
        )?;
        let mut out = Vec::new();
        for row in &rows {
            out.extend_from_slice(row.get::<_, &[u8]>(0));
        }
        Ok(out)
    }

    fn max_seq(&mut self) -> StoreResult<i64> {
        if let Some(seen) = self.seen_max {
            return Ok(seen);
        }
        self.number_pending()?;
        Ok(self.query_one("SELECT value FROM seq_counter", &[])?.get(0))
    }

    fn change_log(&mut self, units: &[String], after: i64, upto: i64) -> StoreResult<Vec<(i64, String, [u8; 32])>> {
        let rows = self.query(
            "SELECT c.seq, c.doc_id, c.hash FROM docs d JOIN changes c ON c.doc_id = d.doc_id
             WHERE d.unit = ANY($1) AND d.updated_seq > $2 AND c.seq > $2 AND c.seq <= $3
             ORDER BY c.seq",
            &[&units, &after, &upto],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.get(0);
            let hash: [u8; 32] = row
                .get::<_, &[u8]>(2)
                .try_into()
                .map_err(|_| StoreError::Other(format!("change {seq} has a hash that is not 32 bytes")))?;
            out.push((seq, row.get(1), hash));
        }
        Ok(out)
    }

    fn first_change_seq(&mut self, doc: &str) -> StoreResult<Option<i64>> {
        Ok(self
            .query_one("SELECT MIN(seq) FROM changes WHERE doc_id = $1", &[&doc])?
            .get(0))
    }
}

/// Rewrites the projection rows of one document: `sync_core::projection::write` for
/// PostgreSQL, with ethnicity (the server keeps it; it is never logged). Rows go in one
/// statement per table (`UNNEST`), since an attendance part holds thousands of marks.
fn write_projection(tx: &mut Transaction<'_>, id: &DocId, contents: &Contents) -> StoreResult<()> {
    let key = id.to_string();
    let unit = id.unit.to_string();
    match contents {
        Contents::Roster(cadres) => {
            tx.execute("DELETE FROM p_cadres WHERE doc_id = $1", &[&key])?;
            let ids: Vec<&str> = cadres.keys().map(String::as_str).collect();
            let names: Vec<&str> = cadres.values().map(|c| c.name.as_str()).collect();
            let genders: Vec<&str> = cadres.values().map(|c| c.gender.as_str()).collect();
            let years: Vec<i32> = cadres.values().map(|c| i32::from(c.birth_year)).collect();
            let ethnicity: Vec<Option<&str>> = cadres.values().map(|c| c.ethnicity.as_deref()).collect();
            let category: Vec<Option<&str>> = cadres.values().map(|c| c.category.map(|x| x.as_str())).collect();
            let position: Vec<Option<&str>> = cadres.values().map(|c| c.position.as_deref()).collect();
            let qualification: Vec<Option<&str>> = cadres.values().map(|c| c.qualification.as_deref()).collect();
            let theory: Vec<Option<&str>> = cadres.values().map(|c| c.theory_level.map(|x| x.as_str())).collect();
            tx.execute(
                "INSERT INTO p_cadres
                   (id, unit, name, gender, birth_year, ethnicity, category, position, qualification, theory_level, doc_id)
                 SELECT i, $2::TEXT, n, g, y, e, c, p, q, t, $1::TEXT
                 FROM UNNEST($3::TEXT[], $4::TEXT[], $5::TEXT[], $6::INTEGER[], $7::TEXT[], $8::TEXT[], $9::TEXT[],
                             $10::TEXT[], $11::TEXT[]) AS u(i, n, g, y, e, c, p, q, t)
                 ON CONFLICT (id) DO UPDATE SET unit = excluded.unit, name = excluded.name, gender = excluded.gender,
                   birth_year = excluded.birth_year, ethnicity = excluded.ethnicity, category = excluded.category,
                   position = excluded.position, qualification = excluded.qualification,
                   theory_level = excluded.theory_level, doc_id = excluded.doc_id",
                &[
                    &key,
                    &unit,
                    &ids,
                    &names,
                    &genders,
                    &years,
                    &ethnicity,
                    &category,
                    &position,
                    &qualification,
                    &theory,
                ],
            )?;
        }
        Contents::Course(course) => {
            let Some(cid) = &id.course else { return Ok(()) };
            if let Some(m) = &course.meta {
                tx.execute(
                    "INSERT INTO p_courses
                       (id, unit, title, min_ratio, excused_counts, planned, start_date, end_date, doc_id, programme)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (id) DO UPDATE SET unit = excluded.unit, title = excluded.title,
                       min_ratio = excluded.min_ratio, excused_counts = excluded.excused_counts,
                       planned = excluded.planned, start_date = excluded.start_date, end_date = excluded.end_date,
                       doc_id = excluded.doc_id, programme = excluded.programme",
                    &[
                        cid,
                        &unit,
                        &m.title,
                        &m.min_ratio,
                        &m.excused_counts,
                        &(m.planned_trainees.min(i32::MAX as u32) as i32),
                        &m.start_date,
                        &m.end_date,
                        &key,
                        &m.programme.map(|p| p.as_str()),
                    ],
                )?;
            }
            tx.execute("DELETE FROM p_sessions WHERE course_id = $1", &[cid])?;
            tx.execute("DELETE FROM p_enrolments WHERE course_id = $1", &[cid])?;
            let ids: Vec<&str> = course.sessions.keys().map(String::as_str).collect();
            let dates: Vec<&str> = course.sessions.values().map(|s| s.date.as_str()).collect();
            let half: Vec<Option<&str>> = course
                .sessions
                .values()
                .map(|s| s.half_day.map(|h| h.as_str()))
                .collect();
            let periods: Vec<Option<i32>> = course.sessions.values().map(|s| s.periods.map(i32::from)).collect();
            let topics: Vec<Option<&str>> = course.sessions.values().map(|s| s.topic.as_deref()).collect();
            let parts: Vec<i32> = course
                .sessions
                .values()
                .map(|s| i32::try_from(s.part).unwrap_or(i32::MAX))
                .collect();
            tx.execute(
                "INSERT INTO p_sessions (course_id, id, date, half_day, periods, topic, part)
                 SELECT $1::TEXT, i, d, h, p, t, n
                 FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::INTEGER[], $6::TEXT[], $7::INTEGER[])
                   AS u(i, d, h, p, t, n)",
                &[cid, &ids, &dates, &half, &periods, &topics, &parts],
            )?;
            let cadres: Vec<&str> = course.enrolments.keys().map(String::as_str).collect();
            tx.execute(
                "INSERT INTO p_enrolments (course_id, cadre_id) SELECT $1::TEXT, c FROM UNNEST($2::TEXT[]) AS u(c)",
                &[cid, &cadres],
            )?;
            tx.execute("DELETE FROM p_evaluations WHERE course_id = $1", &[cid])?;
            for ((cadre, slot), v) in &course.evaluations {
                tx.execute(
                    "INSERT INTO p_evaluations (course_id, cadre_id, slot, kind, period, score, passed, pass)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        cid,
                        cadre,
                        slot,
                        &v.kind.as_str(),
                        &v.period,
                        &v.score,
                        &v.passed,
                        &v.is_pass(),
                    ],
                )?;
            }
        }
        Contents::Attendance(marks) => {
            let Some(cid) = &id.course else { return Ok(()) };
            tx.execute("DELETE FROM p_marks WHERE doc_id = $1", &[&key])?;
            upsert_marks(|sql, params| Ok(tx.execute(sql, params)?), cid, &key, marks)?;
        }
    }
    Ok(())
}

/// Writes the rows of `marks` (current value, conflict) in one statement.
/// `execute` runs the statement: on the transaction, or through the connection's cache.
fn upsert_marks(
    execute: impl FnOnce(&'static str, &Params<'_>) -> StoreResult<u64>,
    cid: &str,
    key: &str,
    marks: &[MarkEntry],
) -> StoreResult<()> {
    let mut sessions = Vec::new();
    let mut cadres = Vec::new();
    let mut statuses = Vec::new();
    let mut notes = Vec::new();
    let mut conflicts = Vec::new();
    let mut devices = Vec::new();
    let mut times = Vec::new();
    for m in marks {
        let Some(cur) = m.current() else { continue };
        let conflict = m.conflict_statuses();
        sessions.push(m.session.as_str());
        cadres.push(m.cadre.as_str());
        statuses.push(cur.status.as_str());
        notes.push(cur.note.as_deref());
        conflicts
            .push((!conflict.is_empty()).then(|| conflict.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")));
        devices.push(cur.device.as_str());
        times.push(cur.at);
    }
    if sessions.is_empty() {
        return Ok(());
    }
    execute(
        "INSERT INTO p_marks (course_id, session_id, cadre_id, status, note, conflict, device_id, recorded_at, doc_id)
         SELECT $1::TEXT, s, c, st, n, cf, d, t, $2::TEXT
         FROM UNNEST($3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::BIGINT[])
           AS u(s, c, st, n, cf, d, t)
         ON CONFLICT (course_id, session_id, cadre_id) DO UPDATE SET status = excluded.status,
           note = excluded.note, conflict = excluded.conflict, device_id = excluded.device_id,
           recorded_at = excluded.recorded_at, doc_id = excluded.doc_id",
        &[
            &cid, &key, &sessions, &cadres, &statuses, &notes, &conflicts, &devices, &times,
        ],
    )?;
    Ok(())
}

fn device_row(r: &postgres::Row) -> DeviceRow {
    DeviceRow {
        id: r.get(0),
        unit: r.get(1),
        actor: r.get(2),
        app_version: r.get(3),
        created_at: r.get(4),
        revoked_at: r.get(5),
        last_sync_at: r.get(6),
        pending_reported: r.get(7),
        bytes_up: r.get(8),
        bytes_down: r.get(9),
        last_cursor: r.get(10),
    }
}

const DEVICE_COLS: &str =
    "id, unit, actor, app_version, created_at, revoked_at, last_sync_at, pending_reported, bytes_up, bytes_down, last_cursor";

fn cert_row(r: &postgres::Row) -> CertificateRow {
    CertificateRow {
        number: r.get(0),
        course_id: r.get(1),
        cadre_id: r.get(2),
        unit: r.get(3),
        year: r.get(4),
        seq: r.get(5),
        issued_at: r.get(6),
    }
}

/// An `accounts` row read as `SELECT name, unit, password_hash`.
fn account_row(r: &postgres::Row) -> AccountRow {
    AccountRow {
        name: r.get(0),
        unit: r.get(1),
        password_hash: r.get(2),
    }
}

const CERT_COLS: &str = "number, course_id, cadre_id, unit, year, seq, issued_at";

impl PgStore {
    /// One attempt of [`Store::issue_certificates`], in one transaction. The register's
    /// row is locked first (an upsert that changes nothing takes the row lock, also for a
    /// register's first number), so a second node issuing from the same register waits
    /// here until this one commits, and then (read committed: every statement sees what
    /// was committed before it) finds these certificates and the counter past them.
    fn issue_once(
        &self,
        course_id: &str,
        unit: &str,
        year: i64,
        cadres: &[String],
        now: i64,
    ) -> StoreResult<Vec<(CertificateRow, bool)>> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let mut last: i64 = tx
            .query_one(
                "INSERT INTO cert_register (unit, year, last) VALUES ($1, $2, 0)
                 ON CONFLICT (unit, year) DO UPDATE SET last = cert_register.last RETURNING last",
                &[&unit, &year],
            )?
            .get(0);
        let start = last;
        let code = unit.rsplit(':').next().unwrap_or(unit);
        let mut out = Vec::with_capacity(cadres.len());
        for cadre in cadres {
            if let Some(r) = tx.query_opt(
                &format!("SELECT {CERT_COLS} FROM certificates WHERE course_id = $1 AND cadre_id = $2"),
                &[&course_id, cadre],
            )? {
                out.push((cert_row(&r), false));
                continue;
            }
            last += 1;
            let row = CertificateRow {
                number: format!("{code}/{year}/{last:05}"),
                course_id: course_id.to_string(),
                cadre_id: cadre.clone(),
                unit: unit.to_string(),
                year,
                seq: last,
                issued_at: now,
            };
            tx.execute(
                "INSERT INTO certificates (course_id, cadre_id, unit, year, seq, number, issued_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &row.course_id,
                    &row.cadre_id,
                    &row.unit,
                    &row.year,
                    &row.seq,
                    &row.number,
                    &row.issued_at,
                ],
            )?;
            out.push((row, true));
        }
        if last != start {
            tx.execute(
                "UPDATE cert_register SET last = $3 WHERE unit = $1 AND year = $2",
                &[&unit, &year, &last],
            )?;
        }
        tx.commit()?;
        Ok(out)
    }
}

impl Store for PgStore {
    fn create_enroll_code(&self, unit: &str, code_hash: &str, expires_at: i64) -> StoreResult<()> {
        self.client()?.execute(
            "INSERT INTO enroll_codes (code_hash, unit, expires_at) VALUES ($1, $2, $3)",
            &[&code_hash, &unit, &expires_at],
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
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        // The row lock makes a code one-time across nodes: a second redeemer waits, then
        // sees it used.
        let Some(row) = tx.query_opt(
            "SELECT unit FROM enroll_codes WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 FOR UPDATE",
            &[&code_hash, &now],
        )?
        else {
            return Ok(Err(RedeemError::BadCode));
        };
        let unit: String = row.get(0);
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS(SELECT 1 FROM devices WHERE id = $1 OR actor = $2)",
                &[&device_id, &actor],
            )?
            .get(0);
        if exists {
            return Ok(Err(RedeemError::DeviceExists));
        }
        let inserted = tx.execute(
            "INSERT INTO devices (id, unit, actor, token_hash, app_version, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&device_id, &unit, &actor, &token_hash, &app_version, &now],
        );
        match inserted {
            Ok(_) => {}
            // Another node enrolled the same device id or actor with another code just now.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => return Ok(Err(RedeemError::DeviceExists)),
            Err(e) => return Err(e.into()),
        }
        tx.execute(
            "UPDATE enroll_codes SET used_at = $2, device_id = $3 WHERE code_hash = $1",
            &[&code_hash, &now, &device_id],
        )?;
        tx.commit()?;
        Ok(Ok(unit))
    }

    fn device_by_token(&self, token_hash: &str) -> StoreResult<Option<DeviceRow>> {
        let mut conn = self.client()?;
        let sql = DEVICE_BY_TOKEN.as_str();
        let PgConn { client, stmts } = &mut *conn;
        let st = prepared(stmts, client, sql)?;
        match client.query_opt(&st, &[&token_hash]) {
            Ok(row) => Ok(row.map(|r| device_row(&r))),
            Err(e) => {
                stmts.remove(sql);
                Err(e.into())
            }
        }
    }

    fn device_by_id(&self, device_id: &str) -> StoreResult<Option<(DeviceRow, String)>> {
        Ok(self
            .client()?
            .query_opt(
                &format!("SELECT {DEVICE_COLS}, token_hash FROM devices WHERE id = $1"),
                &[&device_id],
            )?
            .map(|r| (device_row(&r), r.get(11))))
    }

    fn set_device_cursor(&self, device_id: &str, cursor: i64) -> StoreResult<()> {
        self.client()?.execute(
            "UPDATE devices SET last_cursor = GREATEST(last_cursor, $2) WHERE id = $1",
            &[&device_id, &cursor],
        )?;
        Ok(())
    }

    fn revoke_device(&self, device_id: &str, now: i64) -> StoreResult<bool> {
        let n = self.client()?.execute(
            "UPDATE devices SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
            &[&device_id, &now],
        )?;
        Ok(n > 0)
    }

    fn set_device_unit(&self, device_id: &str, unit: &str) -> StoreResult<bool> {
        let n = self
            .client()?
            .execute("UPDATE devices SET unit = $2 WHERE id = $1", &[&device_id, &unit])?;
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.issue_once(course_id, unit, year, cadres, now) {
                // Another node issued for this course and one of these cadres from another
                // register at the same moment: run again, it then keeps that certificate.
                Err(StoreError::Postgres(e)) if attempt < ATTEMPTS && e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    tracing::debug!(attempt, "certificate issue raced another node; running it again");
                }
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {}
                other => return other,
            }
        }
    }

    fn certificates(&self, course_id: &str) -> StoreResult<Vec<CertificateRow>> {
        Ok(self
            .client()?
            .query(
                "SELECT number, course_id, cadre_id, unit, year, seq, issued_at FROM certificates
                 WHERE course_id = $1 ORDER BY unit, year, seq",
                &[&course_id],
            )?
            .iter()
            .map(cert_row)
            .collect())
    }

    fn devices(&self) -> StoreResult<Vec<DeviceRow>> {
        Ok(self
            .client()?
            .query(&format!("SELECT {DEVICE_COLS} FROM devices ORDER BY unit, id"), &[])?
            .iter()
            .map(device_row)
            .collect())
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
        self.client()?.execute(
            "UPDATE devices SET last_sync_at = $2, pending_reported = $3, app_version = $4,
               bytes_up = bytes_up + $5, bytes_down = bytes_down + $6 WHERE id = $1",
            &[&device_id, &now, &pending, &app_version, &bytes_up, &bytes_down],
        )?;
        Ok(())
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn DocTx) -> StoreResult<()>) -> StoreResult<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.client()?;
            let result = (|| -> StoreResult<()> {
                let PgConn { client, stmts } = &mut *conn;
                let tx = client.transaction()?;
                let mut t = PgTx {
                    tx,
                    stmts,
                    cache: &self.cache,
                    seqs: std::collections::HashMap::new(),
                    kept: Vec::new(),
                    locked: HashSet::new(),
                    pending: Vec::new(),
                    seen_max: None,
                };
                // On an error, what this transaction took out of the cache is simply gone.
                f(&mut t)?;
                t.number_pending()?;
                let (seqs, kept) = (std::mem::take(&mut t.seqs), std::mem::take(&mut t.kept));
                t.tx.commit()?;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                for (key, doc) in kept {
                    if let Some(seq) = seqs.get(&key) {
                        cache.put(key, *seq, doc);
                    }
                }
                Ok(())
            })();
            match result {
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(attempt, "store transaction lost a lock race; running it again");
                    std::thread::sleep(Duration::from_millis(rand::random_range(1..=10 * u64::from(attempt))));
                }
                other => return other,
            }
        }
    }

    fn course_rows(&self, course_id: &str) -> StoreResult<Option<CourseRows>> {
        let mut client = self.client()?;
        // One snapshot for the four reads, as a report must not mix two states.
        let mut tx = client
            .build_transaction()
            .read_only(true)
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .start()?;
        let Some(head) = tx.query_opt(
            "SELECT unit, title, min_ratio, excused_counts FROM p_courses WHERE id = $1",
            &[&course_id],
        )?
        else {
            return Ok(None);
        };
        let sessions = tx
            .query(
                "SELECT id, date, half_day, periods, topic FROM p_sessions WHERE course_id = $1",
                &[&course_id],
            )?
            .iter()
            .map(|r| SessionRow {
                id: r.get(0),
                date: r.get(1),
                half_day: r.get(2),
                periods: r.get::<_, Option<i32>>(3).and_then(|p| u16::try_from(p).ok()),
                topic: r.get(4),
            })
            .collect();
        let trainees = tx
            .query(
                "SELECT e.cadre_id, c.name FROM p_enrolments e LEFT JOIN p_cadres c ON c.id = e.cadre_id
                 WHERE e.course_id = $1",
                &[&course_id],
            )?
            .iter()
            .map(|r| TraineeRow {
                id: r.get(0),
                name: r.get(1),
            })
            .collect();
        let marks = tx
            .query(
                "SELECT session_id, cadre_id, status, note, conflict FROM p_marks WHERE course_id = $1",
                &[&course_id],
            )?
            .iter()
            .filter_map(|r| {
                MarkInput::from_row(
                    r.get(0),
                    r.get(1),
                    r.get::<_, &str>(2),
                    r.get(3),
                    r.get::<_, Option<&str>>(4),
                )
            })
            .collect();
        let evaluations = tx
            .query(
                "SELECT cadre_id, slot, kind, period, score, passed, pass FROM p_evaluations WHERE course_id = $1",
                &[&course_id],
            )?
            .iter()
            .map(|r| EvaluationRow {
                cadre: r.get(0),
                slot: r.get(1),
                kind: r.get(2),
                period: r.get(3),
                score: r.get(4),
                passed: r.get(5),
                pass: r.get(6),
            })
            .collect();
        tx.commit()?;
        Ok(Some(CourseRows {
            evaluations,
            id: course_id.to_string(),
            unit: head.get(0),
            title: head.get(1),
            min_ratio: head.get(2),
            excused_counts: head.get(3),
            sessions,
            trainees,
            marks,
        }))
    }

    fn courses(&self) -> StoreResult<Vec<CourseListRow>> {
        Ok(self
            .client()?
            .query(
                "SELECT c.id, c.unit, c.title,
                   (SELECT COUNT(*) FROM p_sessions s WHERE s.course_id = c.id),
                   (SELECT COUNT(*) FROM p_enrolments e WHERE e.course_id = c.id),
                   (SELECT COUNT(*) FROM p_marks m WHERE m.course_id = c.id),
                   (SELECT COUNT(*) FROM p_marks m WHERE m.course_id = c.id AND m.conflict IS NOT NULL)
                 FROM p_courses c ORDER BY c.unit, c.title",
                &[],
            )?
            .iter()
            .map(|r| CourseListRow {
                id: r.get(0),
                unit: r.get(1),
                title: r.get(2),
                sessions: r.get(3),
                trainees: r.get(4),
                marks: r.get(5),
                conflicts: r.get(6),
            })
            .collect())
    }

    fn refusals(&self) -> StoreResult<Vec<RefusalRow>> {
        Ok(self
            .client()?
            .query(
                "SELECT id, device_id, doc_id, reason, at FROM refusals ORDER BY id DESC LIMIT 500",
                &[],
            )?
            .iter()
            .map(|r| RefusalRow {
                id: r.get(0),
                device_id: r.get(1),
                doc_id: r.get(2),
                reason: r.get(3),
                at: r.get(4),
            })
            .collect())
    }

    fn counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let mut client = self.client()?;
        let mut out = Vec::new();
        for (name, sql) in [
            ("devices", "SELECT COUNT(*) FROM devices"),
            ("cadres", "SELECT COUNT(*) FROM p_cadres"),
            ("courses", "SELECT COUNT(*) FROM p_courses"),
            ("marks", "SELECT COUNT(*) FROM p_marks"),
            ("conflicts", "SELECT COUNT(*) FROM p_marks WHERE conflict IS NOT NULL"),
            ("changes", "SELECT COUNT(*) FROM changes"),
        ] {
            out.push((name.to_string(), client.query_one(sql, &[])?.get(0)));
        }
        Ok(out)
    }

    fn period_courses(&self, from: &str, to: &str) -> StoreResult<Vec<PeriodCourse>> {
        let mut client = self.client()?;
        let rows = client.query(
            "SELECT c.id, c.unit, c.title, c.min_ratio, c.excused_counts, c.programme, COUNT(*),
               SUM(CASE WHEN s.date >= $1 AND s.date <= $2 THEN 1 ELSE 0 END), MIN(s.date), MAX(s.date)
             FROM p_courses c JOIN p_sessions s ON s.course_id = c.id
             WHERE c.id IN (SELECT DISTINCT course_id FROM p_sessions WHERE date >= $1 AND date <= $2)
             GROUP BY c.id, c.unit, c.title, c.min_ratio, c.excused_counts, c.programme
             ORDER BY c.unit, c.id",
            &[&from, &to],
        )?;
        Ok(rows
            .iter()
            .map(|r| PeriodCourse {
                id: r.get(0),
                unit: r.get(1),
                title: r.get(2),
                min_ratio: r.get(3),
                excused_counts: r.get(4),
                programme: r.get(5),
                sessions: r.get(6),
                sessions_in_period: r.get(7),
                first_date: r.get(8),
                last_date: r.get(9),
            })
            .collect())
    }

    fn period_trainees(&self, courses: &[PeriodCourse], from: &str, to: &str) -> StoreResult<Vec<PeriodTrainee>> {
        let mut client = self.client()?;
        // One snapshot for every course of the report.
        let mut tx = client
            .build_transaction()
            .read_only(true)
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .start()?;
        let mut out = Vec::new();
        for course in courses {
            let mut index = std::collections::HashMap::new();
            for r in tx.query(
                "SELECT e.cadre_id, c.id IS NOT NULL, c.gender, c.birth_year, c.ethnicity, c.category,
                   c.qualification, c.theory_level
                 FROM p_enrolments e LEFT JOIN p_cadres c ON c.id = e.cadre_id WHERE e.course_id = $1
                 ORDER BY e.cadre_id",
                &[&course.id],
            )? {
                let cadre_id: String = r.get(0);
                let known: bool = r.get(1);
                index.insert(cadre_id.clone(), out.len());
                out.push(PeriodTrainee {
                    course_id: course.id.clone(),
                    cadre_id,
                    cadre: known.then(|| CadreFacts {
                        gender: r.get(2),
                        birth_year: r.get::<_, Option<i32>>(3).map(i64::from),
                        ethnicity: r.get(4),
                        category: r.get(5),
                        qualification: r.get(6),
                        theory_level: r.get(7),
                    }),
                    marks: MarkCounts::default(),
                    evaluations: Vec::new(),
                });
            }
            for r in tx.query(
                "SELECT cadre_id, slot, pass FROM p_evaluations WHERE course_id = $1 ORDER BY cadre_id, slot",
                &[&course.id],
            )? {
                let cadre: &str = r.get(0);
                if let Some(&i) = index.get(cadre) {
                    out[i].evaluations.push((r.get(1), r.get(2)));
                }
            }
            let whole = course.sessions_in_period == course.sessions;
            let mut count = |rows: Vec<postgres::Row>, in_period: bool, total: bool| {
                for r in rows {
                    let cadre: &str = r.get(0);
                    let status: &str = r.get(1);
                    let n: i64 = r.get(2);
                    if let Some(&i) = index.get(cadre) {
                        out[i].marks.add(status, n, total, in_period);
                    }
                }
            };
            let all = tx.query(
                "SELECT cadre_id, status, COUNT(*) FROM p_marks WHERE course_id = $1 GROUP BY cadre_id, status",
                &[&course.id],
            )?;
            count(all, whole, true);
            if !whole {
                let in_period = tx.query(
                    "SELECT m.cadre_id, m.status, COUNT(*) FROM p_marks m
                       JOIN p_sessions s ON s.course_id = m.course_id AND s.id = m.session_id
                     WHERE m.course_id = $1 AND s.date >= $2 AND s.date <= $3 GROUP BY m.cadre_id, m.status",
                    &[&course.id, &from, &to],
                )?;
                count(in_period, true, false);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn put_account(&self, name: &str, unit: &str, password_hash: &str, now: i64, replace: bool) -> StoreResult<bool> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let n = if replace {
            tx.execute(
                "INSERT INTO accounts (name, unit, password_hash, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET unit = EXCLUDED.unit, password_hash = EXCLUDED.password_hash",
                &[&name, &unit, &password_hash, &now],
            )?
        } else {
            tx.execute(
                "INSERT INTO accounts (name, unit, password_hash, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &unit, &password_hash, &now],
            )?
        };
        if replace {
            // A new password ends every session of the old one, on every node.
            tx.execute("DELETE FROM web_sessions WHERE account = $1", &[&name])?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    fn account(&self, name: &str) -> StoreResult<Option<AccountRow>> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT name, unit, password_hash FROM accounts WHERE name = $1",
                &[&name],
            )?
            .map(|r| account_row(&r)))
    }

    fn create_web_session(&self, token_hash: &str, account: &str, now: i64, expires_at: i64) -> StoreResult<()> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        tx.execute("DELETE FROM web_sessions WHERE expires_at <= $1", &[&now])?;
        tx.execute(
            "INSERT INTO web_sessions (token_hash, account, expires_at) VALUES ($1, $2, $3)",
            &[&token_hash, &account, &expires_at],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn web_session(&self, token_hash: &str, now: i64) -> StoreResult<Option<AccountRow>> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT a.name, a.unit, a.password_hash FROM web_sessions s JOIN accounts a ON a.name = s.account
                 WHERE s.token_hash = $1 AND s.expires_at > $2",
                &[&token_hash, &now],
            )?
            .map(|r| account_row(&r)))
    }

    fn delete_web_session(&self, token_hash: &str) -> StoreResult<()> {
        self.client()?
            .execute("DELETE FROM web_sessions WHERE token_hash = $1", &[&token_hash])?;
        Ok(())
    }

    fn changes_until(&self, until: i64) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let mut client = self.client()?;
        Ok(client
            .query(
                "SELECT doc_id, data FROM changes WHERE received_at <= $1 ORDER BY seq",
                &[&until],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}
