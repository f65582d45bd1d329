//! The embedded store: one SQLite file under `--data`, WAL mode so the admin commands
//! (`report`, `enroll-code`, `device revoke`) can read and write while `serve` runs.
//! One connection behind a mutex: SQLite has one writer anyway, and a province's
//! load fits (see BENCHMARKS.md).

use std::path::Path;
use std::sync::Mutex;

use automerge::{Automerge, Change};
use rusqlite::{params, Connection, OptionalExtension};
use sync_core::docs::{Contents, DocId};
use sync_core::report::CourseRows;

use crate::store::{
    AccountRow, CadreFacts, CertificateRow, CourseListRow, DeviceRow, DocTx, MarkCounts, PeriodCourse, PeriodTrainee,
    RedeemError, RefusalRow, Store, StoreError, StoreResult, StoredDoc,
};

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
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

impl SqliteStore {
    pub fn open(dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Other(format!("cannot create {}: {e}", dir.display())))?;
        let mut conn = Connection::open(dir.join("diemdanh.sqlite"))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, batches) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
            for sql in *batches {
                tx.execute_batch(sql)?;
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    /// A scratch store in memory, with the same schema: what `reports::asof` rebuilds
    /// the documents of a past date into.
    pub fn open_in_memory() -> StoreResult<SqliteStore> {
        let mut conn = Connection::open_in_memory()?;
        let tx = conn.transaction()?;
        for batches in MIGRATIONS {
            for sql in *batches {
                tx.execute_batch(sql)?;
            }
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
        tx.commit()?;
        Ok(SqliteStore { conn: Mutex::new(conn) })
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

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (the transaction is
        // rolled back on drop), so a poisoned lock is safe to take over.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
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
    tx: rusqlite::Transaction<'a>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl DocTx for SqliteTx<'_> {
    fn load(&mut self, id: &DocId) -> StoreResult<Option<StoredDoc>> {
        let row: Option<(Vec<u8>, i64, i64)> = self
            .tx
            .query_row(
                "SELECT snapshot, created_seq, updated_seq FROM docs WHERE doc_id = ?1",
                [id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((snapshot, created_seq, updated_seq)) = row else {
            return Ok(None);
        };
        let doc = Automerge::load(&snapshot)?;
        Ok(Some(StoredDoc {
            doc,
            snapshot,
            created_seq,
            updated_seq,
        }))
    }

    fn store(
        &mut self,
        id: &DocId,
        doc: &Automerge,
        new_changes: &[Change],
        contents: &Contents,
        device: &str,
    ) -> StoreResult<()> {
        let key = id.to_string();
        let received = now();
        let mut last_seq = None;
        {
            let mut stmt = self.tx.prepare_cached(
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
                    last_seq = Some(self.tx.last_insert_rowid());
                }
            }
        }
        let Some(seq) = last_seq else { return Ok(()) };
        self.tx.execute(
            "INSERT INTO docs (doc_id, kind, unit, course_id, snapshot, created_seq, updated_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT(doc_id) DO UPDATE SET snapshot = excluded.snapshot, updated_seq = excluded.updated_seq",
            params![key, id.kind.as_str(), id.unit.to_string(), id.course, doc.save(), seq],
        )?;
        sync_core::projection::write(&self.tx, id, contents, true)?;
        Ok(())
    }

    fn refuse(&mut self, device: &str, doc: &str, reason: &str, data: &[u8]) -> StoreResult<()> {
        self.tx.execute(
            "INSERT INTO refusals (device_id, doc_id, reason, at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![device, doc, reason, now(), data],
        )?;
        Ok(())
    }

    fn changed_since(&mut self, units: &[String], cursor: i64) -> StoreResult<Vec<(String, i64, i64)>> {
        let mut out = Vec::new();
        let mut stmt = self
            .tx
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
            .tx
            .prepare_cached("SELECT data FROM changes WHERE doc_id = ?1 AND seq > ?2 ORDER BY seq")?;
        let mut out = Vec::new();
        for data in stmt.query_map(params![id, cursor], |r| r.get::<_, Vec<u8>>(0))? {
            out.extend_from_slice(&data?);
        }
        Ok(out)
    }

    fn max_seq(&mut self) -> StoreResult<i64> {
        Ok(self
            .tx
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| r.get(0))?)
    }

    fn change_log(&mut self, units: &[String], after: i64, upto: i64) -> StoreResult<Vec<(i64, String, [u8; 32])>> {
        let mut stmt = self.tx.prepare_cached(
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
            .tx
            .query_row("SELECT MIN(seq) FROM changes WHERE doc_id = ?1", [doc], |r| r.get(0))?)
    }
}

impl Store for SqliteStore {
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
            .conn()
            .query_row(
                &format!("SELECT {DEVICE_COLS} FROM devices WHERE token_hash = ?1"),
                [token_hash],
                device_row,
            )
            .optional()?)
    }

    fn device_by_id(&self, device_id: &str) -> StoreResult<Option<(DeviceRow, String)>> {
        Ok(self
            .conn()
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
        let conn = self.conn();
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
        let conn = self.conn();
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

    fn write(&self, f: &mut dyn FnMut(&mut dyn DocTx) -> StoreResult<()>) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut t = SqliteTx { tx };
        f(&mut t)?;
        t.tx.commit()?;
        Ok(())
    }

    fn course_rows(&self, course_id: &str) -> StoreResult<Option<CourseRows>> {
        Ok(sync_core::projection::course_rows(&self.conn(), course_id)?)
    }

    fn courses(&self) -> StoreResult<Vec<CourseListRow>> {
        let conn = self.conn();
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
        let conn = self.conn();
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
        let conn = self.conn();
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
            .conn()
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
            .conn()
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
        let conn = self.conn();
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
        let conn = self.conn();
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
                });
            }
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
        let conn = self.conn();
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
