//! A device: the local store plus the operations of a class officer, and the device
//! half of the sync protocol. Every recording operation is one SQLite transaction
//! (automerge commit, chunk, query rows) committed with `synchronous=FULL` before it
//! returns, so "saved" means on disk.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ChangeHash, ReadDoc, ROOT};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::bundle;
use crate::docs::{self, Contents, DocId, DocKind};
use crate::error::{Error, Result};
use crate::model::{
    check_date, check_id, new_id, Cadre, CourseMeta, Enrolment, EvalKind, Evaluation, HalfDay, Mark, MarkStatus,
    Session,
};
use crate::projection;
use crate::protocol::{
    self, error_from_reply, hashes_from_wire, hashes_to_wire, DocPush, EnrollRequest, EnrollResponse, Outcome,
    SyncRequest, SyncResponse, Transport,
};
use crate::report::CourseReport;
use crate::roster;
use crate::store::{self, heads_from_blob, heads_to_blob};
use crate::units::{UnitKey, UnitTree};

pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Raw bytes of document data per sync request before a new request is started: on
/// EDGE (about 25 KB/s up) a full batch uploads in about 10 s.
pub const BATCH_BYTES: usize = 256 * 1024;
/// Document data the device asks for per response by default.
pub const RESPONSE_BYTES: u32 = 512 * 1024;
/// A sync that needs more exchanges than this stops and says so (bounded loop).
pub const MAX_ROUNDS: usize = 10_000;
/// The least a link's byte budget falls to after cuts (see [`Device::link_budget`]).
pub const LINK_FLOOR: usize = 1024;
/// Bytes of an exchange that are not document data: HTTP headers, framing, the other
/// fields. A budget of N bytes carries N less this of document data.
const EXCHANGE_OVERHEAD: usize = 256;
/// Document data per exchange never falls below this, whatever the budget.
const MIN_DATA: usize = 512;

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A session to create.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub date: String,
    pub half_day: Option<HalfDay>,
    pub periods: Option<u16>,
    pub topic: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreatedSession {
    pub id: String,
    pub date: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreatedCourse {
    pub id: String,
    pub sessions: Vec<CreatedSession>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConflictEntry {
    pub course: String,
    pub session: String,
    pub cadre: String,
    pub values: Vec<MarkStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefusedEntry {
    pub doc: String,
    pub reason: String,
    pub keys: Vec<String>,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub device_id: String,
    pub unit: Option<String>,
    pub server: Option<String>,
    pub pending_changes: u64,
    pub last_sync: Option<String>,
    pub refused: Vec<RefusedEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CourseSummary {
    pub id: String,
    pub unit: String,
    pub title: String,
    pub sessions: u32,
    pub trainees: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CadreRow {
    pub id: String,
    pub unit: String,
    pub name: String,
    pub gender: String,
    pub birth_year: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theory_level: Option<String>,
}

/// What one sync moved.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncStats {
    pub requests: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub docs_sent: u32,
    pub docs_received: u32,
    pub changes_sent: u64,
    /// Exchanges repeated after getting no answer.
    pub retries: u32,
    pub refused: Vec<RefusedEntry>,
    pub seconds: f64,
}

/// What a bundle export or import carried.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BundleSummary {
    pub docs: u32,
    pub changes: u64,
    pub bytes: u64,
    /// The sealed bytes (export only).
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// Reported after every exchange of a sync.
#[derive(Debug, Clone, Default)]
pub struct SyncProgress {
    pub round: usize,
    pub stats: SyncStats,
    pub docs_left: u64,
}

pub struct Device {
    conn: Connection,
    home: PathBuf,
    device_id: String,
    actor: ActorId,
    batch_bytes: usize,
    response_bytes: u32,
    retry: RetryPolicy,
    clock: Clock,
}

/// The device's wall clock in milliseconds since 1970. Tablets in the field are often
/// days off and jump when they find a network; nothing orders by this time (automerge
/// orders by causality), it is only recorded. Tests pass a skewed one.
pub type Clock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

/// How a sync retries an exchange that got no answer: capped exponential backoff with
/// full jitter, so a hall of tablets that lose the same cell do not retry in step.
/// Every exchange is idempotent, so repeating one is safe.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: fail at once).
    pub retries: u32,
    pub base: std::time::Duration,
    pub cap: std::time::Duration,
    /// How to wait; tests pass one that records instead of sleeping.
    pub sleep: std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync>,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("retries", &self.retries)
            .field("base", &self.base)
            .field("cap", &self.cap)
            .finish()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            base: std::time::Duration::from_millis(500),
            cap: std::time::Duration::from_secs(30),
            sleep: std::sync::Arc::new(std::thread::sleep),
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        RetryPolicy {
            retries: 0,
            ..Default::default()
        }
    }

    /// The wait before retry `attempt` (1-based): uniform in [0, min(cap, base * 2^(attempt-1))].
    pub fn delay(&self, attempt: u32) -> std::time::Duration {
        use rand::Rng;
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.cap);
        let ms = ceiling.as_millis() as u64;
        std::time::Duration::from_millis(if ms == 0 { 0 } else { rand::rng().random_range(0..=ms) })
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("home", &self.home)
            .field("device_id", &self.device_id)
            .finish()
    }
}

impl Device {
    /// Opens (creating on first use) the device store in `home`. The first open makes
    /// the device's id and its automerge actor: one actor per install, never copied.
    pub fn open(home: &Path) -> Result<Device> {
        Device::open_with_key(home, None)
    }

    /// `open`, with the store encrypted at rest under `key` (SQLCipher, feature
    /// `sqlcipher`). The same key must be given at every open; a wrong one is
    /// [`Error::WrongKey`] and changes nothing on disk.
    pub fn open_with_key(home: &Path, key: Option<&str>) -> Result<Device> {
        std::fs::create_dir_all(home)
            .map_err(|e| Error::invalid(format!("cannot create home folder {}: {e}", home.display())))?;
        let mut conn = store::open_connection_with_key(&home.join("device.sqlite"), key)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let device_id = match store::get_meta(&tx, "device_id")? {
            Some(id) => id,
            None => {
                let id = new_id();
                store::set_meta(&tx, "device_id", &id)?;
                store::set_meta(&tx, "actor", &ActorId::random().to_hex_string())?;
                store::set_meta(&tx, "cursor", "0")?;
                id
            }
        };
        let actor_hex = store::get_meta(&tx, "actor")?.ok_or_else(|| Error::NotFound("actor".into()))?;
        tx.commit()?;
        let actor = ActorId::from(hex::decode(actor_hex).map_err(|_| Error::NotFound("actor".into()))?);
        Ok(Device {
            conn,
            home: home.to_path_buf(),
            device_id,
            actor,
            batch_bytes: BATCH_BYTES,
            response_bytes: RESPONSE_BYTES,
            retry: RetryPolicy::default(),
            clock: std::sync::Arc::new(now_millis),
        })
    }

    /// Replaces the wall clock the device records times with (see [`Clock`]).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// The device's clock in seconds (see [`Clock`]).
    pub fn now_secs(&self) -> i64 {
        self.now_s()
    }

    /// The store's connection, for read-only views elsewhere in the crate.
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sets how much document data goes in one request and comes in one response; a
    /// device on a poor link uses smaller batches so each exchange finishes.
    pub fn set_batch_limits(&mut self, request_bytes: usize, response_bytes: u32) {
        self.batch_bytes = request_bytes.max(1);
        self.response_bytes = response_bytes.max(1);
    }

    /// Sets how a sync retries an exchange that got no answer.
    pub fn set_retry(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        store::get_meta(&self.conn, key)
    }

    /// The unit this device is enrolled for.
    pub fn unit(&self) -> Result<UnitKey> {
        let unit = self.meta("unit")?.ok_or(Error::NotEnrolled)?;
        Ok(unit.parse()?)
    }

    fn check_scope(&self, unit: &UnitKey) -> Result<()> {
        let mine = self.unit()?;
        if !UnitTree::reference().is_within(unit, &mine) {
            return Err(Error::invalid(format!(
                "unit {unit} is outside this device's unit {mine}"
            )));
        }
        Ok(())
    }

    /// Trades a one-time code for this device's credentials.
    pub fn enroll(&mut self, transport: &mut dyn Transport, server: &str, code: &str) -> Result<EnrollResponse> {
        self.enroll_trusting(transport, server, code, None)
    }

    /// `enroll`, remembering in the same transaction the PEM of the private CA the
    /// server's certificate comes from (district servers), which every later sync trusts.
    /// The caller checks the PEM and builds `transport` with it.
    pub fn enroll_trusting(
        &mut self,
        transport: &mut dyn Transport,
        server: &str,
        code: &str,
        ca_pem: Option<&str>,
    ) -> Result<EnrollResponse> {
        if self.meta("token")?.is_some() {
            return Err(Error::AlreadyEnrolled(self.device_id.clone()));
        }
        let req = EnrollRequest {
            code: code.trim().to_string(),
            device_id: self.device_id.clone(),
            actor: self.actor.to_hex_string(),
            app_version: APP_VERSION.to_string(),
        };
        let body = serde_json::to_vec(&req).map_err(|e| Error::Wire(e.to_string()))?;
        let reply = transport
            .post(protocol::ENROLL_PATH, "application/json", None, body)
            .map_err(Error::Offline)?;
        if reply.status != 200 {
            return Err(error_from_reply(&reply));
        }
        let resp: EnrollResponse = serde_json::from_slice(&reply.body).map_err(|e| Error::Wire(e.to_string()))?;
        let unit: UnitKey = resp.unit.parse()?;
        let tx = self.conn.transaction()?;
        store::set_meta(&tx, "token", &resp.token)?;
        store::set_meta(&tx, "unit", &unit.to_string())?;
        store::set_meta(&tx, "server", server)?;
        if let Some(pem) = ca_pem {
            store::set_meta(&tx, "ca_cert", pem)?;
        }
        tx.commit()?;
        Ok(resp)
    }

    pub fn server_url(&self) -> Result<String> {
        self.meta("server")?.ok_or(Error::NotEnrolled)
    }

    /// The private CA (PEM) this device trusts for its server, if enrolment named one.
    pub fn ca_cert(&self) -> Result<Option<String>> {
        self.meta("ca_cert")
    }

    /// Loads `id`, lets `edit` write into one automerge transaction, commits it with a
    /// time and a message, stores the change and lets `project` update the query rows,
    /// all in one SQLite transaction.
    fn commit_doc<T>(
        &mut self,
        id: &DocId,
        message: &str,
        edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<T>,
        project: impl FnOnce(&Transaction<'_>, &Automerge) -> Result<()>,
    ) -> Result<T> {
        let now_ms = self.now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut doc = store::load_doc(&tx, id)?.unwrap_or_default();
        doc.set_actor(self.actor.clone());
        let before = doc.get_heads();
        let mut atx = doc.transaction();
        let out = match edit(&mut atx) {
            Ok(out) => out,
            Err(e) => {
                atx.rollback();
                return Err(e);
            }
        };
        let (hash, _) = atx.commit_with(CommitOptions::default().with_message(message).with_time(now_ms));
        // Writing a value the key already holds makes no change: nothing to store or send.
        if hash.is_some() {
            let bytes = doc.save_after(&before);
            store::append_chunk(&tx, id, &doc, &bytes)?;
            tx.execute(
                "UPDATE docs SET dirty = 1, pending = pending + 1 WHERE doc_id = ?1",
                [id.to_string()],
            )?;
        }
        project(&tx, &doc)?;
        crate::failpoint::hit("device.before_commit");
        tx.commit()?;
        crate::failpoint::hit("device.after_commit");
        Ok(out)
    }

    pub fn add_cadre(&mut self, unit: &str, cadre: Cadre) -> Result<String> {
        let unit = UnitTree::reference().resolve(unit)?.key.clone();
        self.check_scope(&unit)?;
        let mut cadre = cadre;
        cadre.name = crate::text::normalize_name(&cadre.name);
        cadre.check()?;
        let id = new_id();
        let doc_id = DocId::roster(&unit);
        let value = docs::encode(&cadre);
        self.commit_doc(
            &doc_id,
            "add cadre",
            |t| Ok(t.put(ROOT, docs::cadre_key(&id), value)?),
            |tx, doc| project_doc(tx, &doc_id, doc),
        )?;
        Ok(id)
    }

    /// The cadres of a roster document as this device holds it.
    fn roster_contents(&self, unit: &UnitKey) -> Result<BTreeMap<String, Cadre>> {
        let id = DocId::roster(unit);
        let Some(doc) = store::load_doc(&self.conn, &id)? else {
            return Ok(BTreeMap::new());
        };
        match docs::read(&id, &doc, None) {
            Ok(Contents::Roster(c)) => Ok(c),
            Ok(_) => Ok(BTreeMap::new()),
            Err(e) => Err(Error::invalid(e.reason)),
        }
    }

    /// Imports a roster sheet (XLSX, XLS or CSV bytes, see [`crate::roster`]) into the
    /// roster of `unit`, in one transaction. With any bad row nothing is written unless
    /// `skip_invalid`; importing the same sheet again writes nothing.
    pub fn import_roster(&mut self, unit: &str, bytes: &[u8], skip_invalid: bool) -> Result<roster::ImportReport> {
        let unit = UnitTree::reference().resolve(unit)?.key.clone();
        self.check_scope(&unit)?;
        let parsed = roster::parse(bytes)?;
        let mut report = roster::ImportReport::new(&unit, &parsed);
        if !parsed.errors.is_empty() && !skip_invalid {
            return Ok(report);
        }
        report.skipped = parsed.errors.len() as u32;
        let plan = roster::plan(&unit, &self.roster_contents(&unit)?, &parsed.rows);
        for (_, c) in &plan.puts {
            c.check()?;
        }
        let doc_id = DocId::roster(&unit);
        if !plan.puts.is_empty() {
            let entries: Vec<(String, String)> = plan
                .puts
                .iter()
                .map(|(id, c)| (docs::cadre_key(id), docs::encode(c)))
                .collect();
            self.commit_doc(
                &doc_id,
                "import roster",
                |t| {
                    for (k, v) in entries {
                        t.put(ROOT, k, v)?;
                    }
                    Ok(())
                },
                |tx, doc| project_doc(tx, &doc_id, doc),
            )?;
        }
        report.created = plan.created;
        report.updated = plan.updated;
        report.unchanged = plan.unchanged;
        report.applied = true;
        Ok(report)
    }

    /// The roster of `unit` as an XLSX workbook in the import template.
    pub fn export_roster(&self, unit: &str) -> Result<Vec<u8>> {
        let unit = UnitTree::reference().resolve(unit)?.key.clone();
        Ok(roster::export_xlsx(&self.roster_contents(&unit)?)?)
    }

    pub fn create_course(&mut self, unit: &str, meta: CourseMeta, sessions: Vec<NewSession>) -> Result<CreatedCourse> {
        let unit = UnitTree::reference().resolve(unit)?.key.clone();
        self.check_scope(&unit)?;
        let mut meta = meta;
        for s in &sessions {
            check_date(&s.date)?;
        }
        if meta.start_date.is_none() {
            meta.start_date = sessions.iter().map(|s| s.date.clone()).min();
        }
        if meta.end_date.is_none() {
            meta.end_date = sessions.iter().map(|s| s.date.clone()).max();
        }
        meta.check()?;
        let id = new_id();
        let doc_id = DocId::course(&unit, &id);
        let mut course = docs::CourseDoc {
            meta: Some(meta.clone()),
            ..Default::default()
        };
        let mut created = Vec::new();
        let mut entries = Vec::new();
        for s in sessions {
            let session = Session {
                date: s.date,
                half_day: s.half_day,
                periods: s.periods,
                topic: s.topic,
                part: docs::part_for_new_session(&course),
            };
            session.check()?;
            let sid = new_id();
            created.push(CreatedSession {
                id: sid.clone(),
                date: session.date.clone(),
            });
            entries.push((docs::session_key(&sid), docs::encode(&session)));
            course.sessions.insert(sid, session);
        }
        let meta_value = docs::encode(&meta);
        self.commit_doc(
            &doc_id,
            "create course",
            |t| {
                t.put(ROOT, docs::META_KEY, meta_value)?;
                for (k, v) in entries {
                    t.put(ROOT, k, v)?;
                }
                Ok(())
            },
            |tx, doc| project_doc(tx, &doc_id, doc),
        )?;
        Ok(CreatedCourse { id, sessions: created })
    }

    /// The course document id and its contents, from the local store.
    fn course(&self, course: &str) -> Result<(DocId, docs::CourseDoc)> {
        check_id("course", course)?;
        let doc_key: String = self
            .conn
            .query_row("SELECT doc_id FROM p_courses WHERE id = ?1", [course], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("course {course}")))?;
        let id: DocId = doc_key.parse()?;
        let doc = store::load_doc(&self.conn, &id)?.ok_or_else(|| Error::NotFound(format!("course {course}")))?;
        let contents = docs::read_course(&id, &doc).map_err(|e| Error::invalid(e.reason))?;
        Ok((id, contents))
    }

    pub fn add_session(&mut self, course: &str, s: NewSession) -> Result<CreatedSession> {
        let (doc_id, contents) = self.course(course)?;
        self.check_scope(&doc_id.unit)?;
        let session = Session {
            date: s.date,
            half_day: s.half_day,
            periods: s.periods,
            topic: s.topic,
            part: docs::part_for_new_session(&contents),
        };
        session.check()?;
        let sid = new_id();
        let value = docs::encode(&session);
        let key = docs::session_key(&sid);
        self.commit_doc(
            &doc_id,
            "add session",
            |t| Ok(t.put(ROOT, key, value)?),
            |tx, doc| project_doc(tx, &doc_id, doc),
        )?;
        Ok(CreatedSession {
            id: sid,
            date: session.date,
        })
    }

    pub fn enrol(&mut self, course: &str, cadre: &str) -> Result<()> {
        check_id("cadre", cadre)?;
        let (doc_id, contents) = self.course(course)?;
        self.check_scope(&doc_id.unit)?;
        let known: bool = self
            .conn
            .query_row("SELECT EXISTS(SELECT 1 FROM p_cadres WHERE id = ?1)", [cadre], |r| {
                r.get(0)
            })?;
        if !known {
            return Err(Error::NotFound(format!(
                "cadre {cadre} on any roster this device holds"
            )));
        }
        if contents.enrolments.contains_key(cadre) {
            return Ok(());
        }
        let value = docs::encode(&Enrolment { at: self.now_s() });
        let key = docs::enrolment_key(cadre);
        self.commit_doc(
            &doc_id,
            "enrol",
            |t| Ok(t.put(ROOT, key, value)?),
            |tx, doc| project_doc(tx, &doc_id, doc),
        )
    }

    /// Records an evaluation of an enrolled trainee: monthly (with its `YYYY-MM`) or
    /// final; a score out of 10 or passed yes/no. Recording the same slot again
    /// replaces it. Checked with the rules the server applies to the course document.
    pub fn evaluate(
        &mut self,
        course: &str,
        cadre: &str,
        kind: EvalKind,
        period: Option<String>,
        score: Option<f64>,
        passed: Option<bool>,
    ) -> Result<Evaluation> {
        check_id("cadre", cadre)?;
        let (doc_id, contents) = self.course(course)?;
        self.check_scope(&doc_id.unit)?;
        if !contents.enrolments.contains_key(cadre) {
            return Err(Error::invalid(format!(
                "trainee {cadre} is not enrolled in course {course}"
            )));
        }
        let evaluation = Evaluation {
            kind,
            period: period.map(|p| p.trim().to_string()),
            score,
            passed,
            device: self.device_id.clone(),
            at: self.now_s(),
        };
        evaluation.check()?;
        let key = docs::evaluation_key(cadre, &evaluation.slot());
        let value = docs::encode(&evaluation);
        self.commit_doc(
            &doc_id,
            "evaluate",
            |t| Ok(t.put(ROOT, key, value)?),
            |tx, doc| project_doc(tx, &doc_id, doc),
        )?;
        Ok(evaluation)
    }

    /// Finds a session by id, or by date when the course has exactly one session that day.
    pub fn resolve_session(&self, course: &str, session: &str) -> Result<(String, u32)> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, part FROM p_sessions WHERE course_id = ?1 AND (id = ?2 OR date = ?2)")?;
        let found: Vec<(String, u32)> = stmt
            .query_map(params![course, session], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if let Some(exact) = found.iter().find(|(id, _)| id == session) {
            return Ok(exact.clone());
        }
        match found.len() {
            1 => Ok(found[0].clone()),
            0 => Err(Error::NotFound(format!("session {session} in course {course}"))),
            n => Err(Error::invalid(format!(
                "course {course} has {n} sessions on {session}: give the session id"
            ))),
        }
    }

    fn course_unit(&self, course: &str) -> Result<UnitKey> {
        check_id("course", course)?;
        let unit: String = self
            .conn
            .query_row("SELECT unit FROM p_courses WHERE id = ?1", [course], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("course {course}")))?;
        Ok(unit.parse()?)
    }

    fn enrolled(&self, course: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT cadre_id FROM p_enrolments WHERE course_id = ?1 ORDER BY cadre_id")?;
        let rows = stmt.query_map([course], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Records one mark. The same rules the server applies are checked first, so in
    /// normal use the device never commits a change the server would refuse.
    pub fn mark(
        &mut self,
        course: &str,
        session: &str,
        cadre: &str,
        status: MarkStatus,
        note: Option<String>,
    ) -> Result<()> {
        check_id("cadre", cadre)?;
        let unit = self.course_unit(course)?;
        self.check_scope(&unit)?;
        let (sid, part) = self.resolve_session(course, session)?;
        if !self.enrolled(course)?.iter().any(|c| c == cadre) {
            return Err(Error::invalid(format!(
                "trainee {cadre} is not enrolled in course {course}"
            )));
        }
        let mark = Mark {
            status,
            note: note.filter(|n| !n.trim().is_empty()),
            periods: None,
            device: self.device_id.clone(),
            at: self.now_s(),
        };
        mark.check()?;
        self.write_marks(&unit, course, part, &sid, vec![(cadre.to_string(), mark)], "mark")
    }

    /// Marks every enrolled trainee: the usual start of a roll call. Returns how many.
    pub fn mark_all(&mut self, course: &str, session: &str, status: MarkStatus) -> Result<usize> {
        let unit = self.course_unit(course)?;
        self.check_scope(&unit)?;
        let (sid, part) = self.resolve_session(course, session)?;
        let at = self.now_s();
        let marks: Vec<(String, Mark)> = self
            .enrolled(course)?
            .into_iter()
            .map(|c| {
                (
                    c,
                    Mark {
                        status,
                        note: None,
                        periods: None,
                        device: self.device_id.clone(),
                        at,
                    },
                )
            })
            .collect();
        let n = marks.len();
        if n > 0 {
            self.write_marks(&unit, course, part, &sid, marks, "mark all")?;
        }
        Ok(n)
    }

    fn write_marks(
        &mut self,
        unit: &UnitKey,
        course: &str,
        part: u32,
        session: &str,
        marks: Vec<(String, Mark)>,
        message: &str,
    ) -> Result<()> {
        let doc_id = DocId::attendance(unit, course, part);
        let keys: Vec<(String, String, String)> = marks
            .iter()
            .map(|(c, m)| (c.clone(), docs::mark_key(session, c), docs::encode(m)))
            .collect();
        let course = course.to_string();
        let session = session.to_string();
        self.commit_doc(
            &doc_id,
            message,
            |t| {
                for (_, key, value) in &keys {
                    t.put(ROOT, key.as_str(), value.as_str())?;
                }
                Ok(())
            },
            |tx, _doc| {
                // A local write supersedes every value this device has seen for the key,
                // so the row's conflict is resolved here; no need to re-read the document.
                for (cadre, mark) in &marks {
                    projection::upsert_mark(tx, &course, &session, cadre, mark, None, &doc_id.to_string())?;
                }
                Ok(())
            },
        )
    }

    /// Resolves a conflict by writing a new value that supersedes every concurrent one.
    pub fn resolve(&mut self, course: &str, session: &str, cadre: &str, status: MarkStatus) -> Result<()> {
        self.mark(course, session, cadre, status, None)
    }

    /// Writes a raw value with no checks. For fault-injection tests only: it lets a
    /// test make a change the server must refuse.
    #[doc(hidden)]
    pub fn write_unchecked(&mut self, doc: &DocId, key: &str, value: &str) -> Result<()> {
        let id = doc.clone();
        self.commit_doc(
            &id,
            "unchecked",
            |t| Ok(t.put(ROOT, key, value)?),
            |tx, doc| project_doc_lenient(tx, &id, doc),
        )
    }

    pub fn show_course(&self, course: &str) -> Result<CourseReport> {
        check_id("course", course)?;
        let rows =
            projection::course_rows(&self.conn, course)?.ok_or_else(|| Error::NotFound(format!("course {course}")))?;
        Ok(CourseReport::assemble(rows))
    }

    pub fn list_courses(&self) -> Result<Vec<CourseSummary>> {
        let mut stmt = self.conn.prepare(
            "SELECT c.id, c.unit, c.title,
               (SELECT COUNT(*) FROM p_sessions s WHERE s.course_id = c.id),
               (SELECT COUNT(*) FROM p_enrolments e WHERE e.course_id = c.id)
             FROM p_courses c ORDER BY c.title, c.id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(CourseSummary {
                    id: r.get(0)?,
                    unit: r.get(1)?,
                    title: r.get(2)?,
                    sessions: r.get(3)?,
                    trainees: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn list_cadres(&self, unit: Option<&str>) -> Result<Vec<CadreRow>> {
        self.search_cadres(unit, None)
    }

    /// The cadres this device holds, of one unit or all, whose name contains `search`
    /// regardless of case and accents, in Vietnamese list order ([`crate::text::name_key`]).
    pub fn search_cadres(&self, unit: Option<&str>, search: Option<&str>) -> Result<Vec<CadreRow>> {
        if let Some(u) = unit {
            UnitTree::reference().resolve(u)?;
        }
        let mut stmt = self.conn.prepare(
            "SELECT id, unit, name, gender, birth_year, category, position, qualification, theory_level
             FROM p_cadres WHERE (?1 IS NULL OR unit = ?1)",
        )?;
        let mut rows: Vec<CadreRow> = stmt
            .query_map([unit], |r| {
                Ok(CadreRow {
                    id: r.get(0)?,
                    unit: r.get(1)?,
                    name: r.get(2)?,
                    gender: r.get(3)?,
                    birth_year: r.get(4)?,
                    category: r.get(5)?,
                    position: r.get(6)?,
                    qualification: r.get(7)?,
                    theory_level: r.get(8)?,
                })
            })?
            .collect::<std::result::Result<_, _>>()?;
        if let Some(q) = search.filter(|q| !q.trim().is_empty()) {
            rows.retain(|c| crate::text::matches_search(&c.name, q));
        }
        rows.sort_by_cached_key(|c| (crate::text::name_key(&c.name), c.id.clone()));
        Ok(rows)
    }

    pub fn conflicts(&self) -> Result<Vec<ConflictEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT course_id, session_id, cadre_id, conflict FROM p_marks WHERE conflict IS NOT NULL ORDER BY course_id, session_id, cadre_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ConflictEntry {
                    course: r.get(0)?,
                    session: r.get(1)?,
                    cadre: r.get(2)?,
                    values: parse_statuses(r.get::<_, Option<String>>(3)?.as_deref()),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn refused(&self) -> Result<Vec<RefusedEntry>> {
        let mut stmt = self
            .conn
            .prepare("SELECT doc_id, reason, keys, at FROM refused ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                let keys: String = r.get(2)?;
                Ok(RefusedEntry {
                    doc: r.get(0)?,
                    reason: r.get(1)?,
                    keys: keys.split(' ').filter(|k| !k.is_empty()).map(str::to_string).collect(),
                    at: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn status(&self) -> Result<Status> {
        let pending: i64 = self
            .conn
            .query_row("SELECT COALESCE(SUM(pending), 0) FROM docs", [], |r| r.get(0))?;
        Ok(Status {
            device_id: self.device_id.clone(),
            unit: self.meta("unit")?,
            server: self.meta("server")?,
            pending_changes: pending.max(0) as u64,
            last_sync: self.meta("last_sync")?,
            refused: self.refused()?,
        })
    }

    /// Pending changes: local changes the server has not acknowledged.
    pub fn pending_changes(&self) -> Result<u64> {
        Ok(self.status()?.pending_changes)
    }

    /// Exchanges everything with the server: pushes every document with local changes
    /// in batches of about [`BATCH_BYTES`] (or the link's budget, [`Device::link_budget`]),
    /// pulls what changed since the cursor, and repeats until both sides are even. An
    /// exchange that gets no answer shrinks the budget and is rebuilt within it. Each exchange is committed locally before the
    /// next starts, so a cut loses at most the exchange in flight. `progress` is called
    /// after every exchange; returning false cancels the sync there (the store stays
    /// consistent and the next sync goes on from that point).
    pub fn sync(
        &mut self,
        transport: &mut dyn Transport,
        progress: &mut dyn FnMut(&SyncProgress) -> bool,
    ) -> Result<SyncStats> {
        let started = Instant::now();
        let token = self.meta("token")?.ok_or(Error::NotEnrolled)?;
        let mut stats = SyncStats::default();
        let mut refused_now: HashSet<String> = HashSet::new();
        // Documents counted in the stats: a document in pieces counts once.
        let mut counted = Counted::default();
        let mut cut = false;
        // The largest exchange that went through, in bytes: the budget grows only when a
        // sync showed the link carries about that much.
        let mut largest = 0usize;
        // Failed exchanges in a row; a success starts the count again.
        let mut failures = 0u32;
        if self.link_budget()?.is_some() {
            transport.fresh_connections(true);
        }
        // The exchange going on in parts after a cut (docs/PROTOCOL.md, "Resumable
        // exchanges"); false once this server answered that it has no `POST /p`.
        let mut inflight: Option<Inflight> = None;
        let mut parts = true;
        let result = (|| {
            for round in 0..MAX_ROUNDS {
                // Compact bodies on `/` unless this server was found not to speak them.
                let path = self
                    .meta("sync_path")?
                    .unwrap_or_else(|| protocol::COMPACT_SYNC_PATH.to_string());
                let compact = path == protocol::COMPACT_SYNC_PATH;
                let in_parts = compact && parts && self.link_budget()?.is_some();
                let (req, resp, changes) = if let Some(mut ex) = inflight.take() {
                    // The next part of the exchange in flight, or the next window of its reply.
                    let budget = self.link_budget()?.unwrap_or(BATCH_BYTES);
                    let part = budget.saturating_sub(PART_OVERHEAD).max(MIN_DATA);
                    let window = budget.saturating_sub(WINDOW_OVERHEAD).max(MIN_DATA);
                    let total = ex.body.len() as u64;
                    if ex.body.len() <= part && ex.reply.len() < RESUME_REPLY_MIN {
                        // The whole exchange fits one part: send it again rather than ask
                        // what arrived, and take the reply whole (the server answers from
                        // the reply it holds, or runs the exchange).
                        ex.held = Some(0);
                        ex.reply.clear();
                    }
                    let (offset, bytes) = match ex.held {
                        // After a cut nobody knows what arrived: ask (no bytes).
                        None => (0, &[][..]),
                        Some(h) if h < total => {
                            let h = h as usize;
                            (h as u64, &ex.body[h..(h + part).min(ex.body.len())])
                        }
                        Some(_) => (total, &[][..]),
                    };
                    let head = protocol::PartHead {
                        id: protocol::exchange_id(&ex.body),
                        total,
                        offset,
                        from: ex.reply.len() as u64,
                        window: window as u64,
                    };
                    let carried = bytes.len();
                    let body = head.encode(bytes);
                    let sent = body.len();
                    stats.requests += 1;
                    stats.bytes_up += sent as u64;
                    let got = match transport.post(protocol::PART_PATH, protocol::CONTENT_TYPE, Some(&token), body) {
                        Ok(reply) => reply,
                        Err(e) => {
                            if !retry_left(&mut failures, self.retry.retries, &mut stats) {
                                return Err(Error::Offline(e));
                            }
                            cut = true;
                            let partial = transport.take_partial_reply();
                            stats.bytes_down += partial.len() as u64;
                            // A window cut in the middle: keep the reply bytes that came.
                            match protocol::PartAnswerHead::decode(&partial) {
                                Ok((answer, tail)) => ex.took(&answer, tail),
                                // The part may have arrived in full or in part: ask.
                                Err(_) if carried > 0 => ex.held = None,
                                Err(_) => {}
                            }
                            self.shrink_link_budget(sent, partial.len())?;
                            transport.fresh_connections(true);
                            inflight = Some(ex);
                            (self.retry.sleep)(self.retry.delay(failures));
                            continue;
                        }
                    };
                    stats.bytes_down += got.body.len() as u64;
                    largest = largest.max(sent).max(got.body.len());
                    if matches!(got.status, 404 | 405) {
                        // A server from before parts: the exchange again, whole, and
                        // pieces within the budget from now on in this sync.
                        parts = false;
                        continue;
                    }
                    if got.status == 429 {
                        // Parts of a large exchange on a link that turned fast can outrun
                        // the server's per-device rate: wait, then the same part again.
                        if !retry_left(&mut failures, self.retry.retries, &mut stats) {
                            return Err(error_from_reply(&got));
                        }
                        inflight = Some(ex);
                        (self.retry.sleep)(self.retry.delay(failures));
                        continue;
                    }
                    if got.status != 200 {
                        if got.status == 400 && !ex.restarted {
                            // The server could not put the parts together (it held an
                            // older exchange's): once more from the first byte.
                            ex.restarted = true;
                            ex.held = Some(0);
                            ex.reply.clear();
                            inflight = Some(ex);
                            continue;
                        }
                        return Err(error_from_reply(&got));
                    }
                    failures = 0;
                    let (answer, tail) =
                        protocol::PartAnswerHead::decode(&got.body).map_err(|e| Error::Wire(e.to_string()))?;
                    ex.took(&answer, tail);
                    crate::failpoint::hit("device.after_part");
                    if !ex.reply_complete() {
                        let go_on = progress(&SyncProgress {
                            round,
                            stats: stats.clone(),
                            docs_left: self.dirty_docs(&refused_now)?.len() as u64,
                        });
                        if !go_on {
                            return Err(Error::Cancelled);
                        }
                        inflight = Some(ex);
                        continue;
                    }
                    let resp = SyncResponse::decode_compact(&ex.reply).map_err(|e| Error::Wire(e.to_string()))?;
                    (ex.req, resp, ex.changes)
                } else {
                    let cursor: u64 = self.meta("cursor")?.and_then(|c| c.parse().ok()).unwrap_or(0);
                    let (request_bytes, response_bytes) = self.exchange_budgets(in_parts)?;
                    let pushes = self.pushes(&refused_now, request_bytes, true)?;
                    // The version goes once per server, the budget only when it is not the
                    // default: a one-mark exchange is counted in bytes (BENCHMARKS.md).
                    let told = self.meta("told_app_version")?;
                    let req = SyncRequest {
                        cursor,
                        docs: pushes.iter().map(|(p, _)| p.clone()).collect(),
                        pending_changes: self.pending_changes()?,
                        app_version: if told.as_deref() == Some(APP_VERSION) {
                            String::new()
                        } else {
                            APP_VERSION.to_string()
                        },
                        max_response_bytes: if response_bytes == RESPONSE_BYTES {
                            0
                        } else {
                            response_bytes
                        },
                    };
                    let body = if compact { req.encode_compact() } else { req.encode() };
                    if in_parts {
                        // On a link that cuts: the whole exchange, in parts.
                        inflight = Some(Inflight::new(req, body, Some(0), changes_of(&pushes)));
                        continue;
                    }
                    let sent = body.len();
                    stats.requests += 1;
                    stats.bytes_up += sent as u64;
                    let reply = match transport.post(&path, protocol::CONTENT_TYPE, Some(&token), body.clone()) {
                        Ok(reply) => reply,
                        Err(e) => {
                            // Nothing came back, or part of the reply: the link is down or
                            // cut this exchange. The server keeps what arrived of a cut
                            // body and a large reply: the exchange goes on in parts from
                            // there (or, with a server without parts, it is rebuilt within a
                            // smaller budget). Every exchange is idempotent.
                            if !retry_left(&mut failures, self.retry.retries, &mut stats) {
                                return Err(Error::Offline(e));
                            }
                            cut = true;
                            let partial = transport.take_partial_reply();
                            let got = transport.partial_reply_bytes().max(partial.len() as u64);
                            stats.bytes_down += got;
                            self.shrink_link_budget(sent.max(pushes_size(&pushes)), got as usize)?;
                            if compact && parts && self.link_budget()?.is_some() {
                                let held = if partial.is_empty() {
                                    None
                                } else {
                                    Some(body.len() as u64)
                                };
                                let mut ex = Inflight::new(req, body, held, changes_of(&pushes));
                                ex.reply = partial;
                                inflight = Some(ex);
                            }
                            transport.fresh_connections(true);
                            (self.retry.sleep)(self.retry.delay(failures));
                            continue;
                        }
                    };
                    failures = 0;
                    stats.bytes_down += reply.body.len() as u64;
                    largest = largest.max(sent).max(reply.body.len());
                    if compact && matches!(reply.status, 404 | 405) {
                        // A server from before compact bodies: the full path from now on
                        // (once: the next round reads it back).
                        store::set_meta(&self.conn, "sync_path", protocol::SYNC_PATH)?;
                        continue;
                    }
                    if reply.status != 200 {
                        return Err(error_from_reply(&reply));
                    }
                    let resp = if compact {
                        SyncResponse::decode_compact(&reply.body)
                    } else {
                        SyncResponse::decode(&reply.body)
                    };
                    (req, resp.map_err(|e| Error::Wire(e.to_string()))?, changes_of(&pushes))
                };
                stats.changes_sent += changes;
                crate::failpoint::hit("device.after_reply");
                let more = resp.more;
                self.apply_response(&req, resp, &mut stats, &mut refused_now, &mut counted)?;
                if !req.app_version.is_empty() {
                    store::set_meta(&self.conn, "told_app_version", &req.app_version)?;
                }
                let left = self.dirty_docs(&refused_now)?.len() as u64;
                let go_on = progress(&SyncProgress {
                    round,
                    stats: stats.clone(),
                    docs_left: left,
                });
                if !more && left == 0 {
                    return Ok(());
                }
                if !go_on {
                    return Err(Error::Cancelled);
                }
            }
            Err(Error::TooManyRounds(MAX_ROUNDS))
        })();
        stats.seconds = started.elapsed().as_secs_f64();
        let ok = result.is_ok();
        if ok && !cut {
            self.grow_link_budget(largest)?;
        }
        self.conn.execute(
            "INSERT INTO sync_log (at, ok, requests, bytes_up, bytes_down, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                self.now_s(),
                ok,
                stats.requests,
                stats.bytes_up as i64,
                stats.bytes_down as i64,
                result.as_ref().err().map(|e| e.to_string())
            ],
        )?;
        result?;
        store::set_meta(&self.conn, "last_sync", &format_time(self.now_s()))?;
        Ok(stats)
    }

    /// The byte budget of one exchange this device learnt for its link: `None` until a
    /// sync was cut (the defaults, [`BATCH_BYTES`] and [`RESPONSE_BYTES`], apply). Kept in
    /// the store (`meta.link_budget`), so a device that restarts on the same bad link
    /// does not learn it again.
    pub fn link_budget(&self) -> Result<Option<usize>> {
        Ok(self.meta("link_budget")?.and_then(|b| b.parse().ok()))
    }

    /// Sets (or, `None`, forgets) the link's byte budget: an app that knows the device
    /// moved to a better network, or a benchmark that starts from a learnt budget.
    pub fn set_link_budget(&mut self, budget: Option<usize>) -> Result<()> {
        match budget {
            Some(b) => store::set_meta(&self.conn, "link_budget", &b.max(LINK_FLOOR).to_string()),
            None => {
                self.conn.execute("DELETE FROM meta WHERE key = 'link_budget'", [])?;
                Ok(())
            }
        }
    }

    /// Document data for the next request and the next response. An exchange that goes
    /// in parts (`in_parts`) carries as much as on a link that does not cut: the parts
    /// and windows fit the link, and one exchange compresses better than pieces.
    fn exchange_budgets(&self, in_parts: bool) -> Result<(usize, u32)> {
        Ok(match self.link_budget()? {
            None => (self.batch_bytes, self.response_bytes),
            Some(_) if in_parts => (self.batch_bytes, self.response_bytes),
            Some(b) => {
                let data = b.saturating_sub(EXCHANGE_OVERHEAD).max(MIN_DATA);
                (
                    data.min(self.batch_bytes),
                    u32::try_from(data).unwrap_or(u32::MAX).min(self.response_bytes),
                )
            }
        })
    }

    /// After an exchange got no answer. A reply cut after `received` bytes measured the
    /// link: that much gets through, and the budget becomes 7/8 of it. A request that got
    /// no answer measured nothing: the budget becomes half of what it tried to send. Never
    /// more than the budget was, never under [`LINK_FLOOR`]; unchanged when the exchange
    /// was too small to have failed for its size (the link is down, not short).
    fn shrink_link_budget(&self, sent: usize, received: usize) -> Result<()> {
        let (request, response) = self.exchange_budgets(false)?;
        let learnt = self.link_budget()?;
        let current = learnt.unwrap_or(usize::MAX);
        let next = if received > 0 {
            (received / 8 * 7).min(current / 8 * 7)
        } else {
            let tried = sent.min(request.max(response as usize) + EXCHANGE_OVERHEAD);
            if learnt.is_none() && tried < 2 * LINK_FLOOR {
                return Ok(());
            }
            (tried / 2).min(current / 2)
        };
        let next = next.max(LINK_FLOOR);
        store::set_meta(&self.conn, "link_budget", &next.to_string())
    }

    /// After a sync that went through without a cut and moved an exchange of at least
    /// half the budget (`largest` bytes): twice the budget, and the defaults again once it
    /// reaches them. Small syncs (one more mark) prove nothing and leave it.
    fn grow_link_budget(&self, largest: usize) -> Result<()> {
        let Some(b) = self.link_budget()? else { return Ok(()) };
        if largest < b / 2 {
            return Ok(());
        }
        let next = b.saturating_mul(2);
        if next >= self.batch_bytes {
            self.conn.execute("DELETE FROM meta WHERE key = 'link_budget'", [])?;
        } else {
            store::set_meta(&self.conn, "link_budget", &next.to_string())?;
        }
        Ok(())
    }

    fn dirty_docs(&self, skip: &HashSet<String>) -> Result<Vec<DirtyDoc>> {
        // Course documents before their attendance documents: the server checks marks
        // against the course as it stands after the same request.
        let mut stmt = self.conn.prepare_cached(
            "SELECT doc_id, server_heads, bundled_heads FROM docs WHERE dirty = 1
             ORDER BY CASE kind WHEN 'roster' THEN 0 WHEN 'course' THEN 1 ELSE 2 END, doc_id",
        )?;
        let rows: Vec<DirtyDoc> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows.into_iter().filter(|(d, _, _)| !skip.contains(d)).collect())
    }

    /// Pushes for dirty documents, up to `budget` bytes of data. A document larger than
    /// what is left goes as a bundle of a causal prefix of its unsent changes (at least one
    /// change) and ends the request. With `probe`, a document unchanged since it went out
    /// in a bundle file is sent as a probe.
    fn pushes(&mut self, skip: &HashSet<String>, budget: usize, probe: bool) -> Result<Vec<(DocPush, usize)>> {
        let mut out = Vec::new();
        let mut size = 0usize;
        for (key, server_heads, bundled) in self.dirty_docs(skip)? {
            let id: DocId = key.parse()?;
            let Some(doc) = store::load_doc(&self.conn, &id)? else {
                continue;
            };
            let base = heads_from_blob(&server_heads);
            let heads = doc.get_heads();
            if sorted(&heads) == sorted(&base) {
                self.conn
                    .execute("UPDATE docs SET dirty = 0, pending = 0 WHERE doc_id = ?1", [&key])?;
                continue;
            }
            if probe && !bundled.is_empty() && sorted(&heads_from_blob(&bundled)) == sorted(&heads) {
                let push = DocPush {
                    doc: key,
                    base: Vec::new(),
                    heads: hashes_to_wire(&heads),
                    data: Vec::new(),
                };
                out.push((push, 0));
                continue;
            }
            let knows_base = base.iter().all(|h| doc.get_change_by_hash(h).is_some());
            let room = budget.saturating_sub(size);
            let (push_base, data, n) = if base.is_empty() || !knows_base {
                (Vec::new(), doc.save(), doc.get_changes(&[]).len())
            } else {
                let changes = doc.get_changes(&base);
                let data: Vec<u8> = changes.iter().flat_map(|c| c.raw_bytes().iter().copied()).collect();
                (less_deps(&base, &changes), data, changes.len())
            };
            if data.len() <= room {
                size += data.len();
                out.push((
                    DocPush {
                        doc: key,
                        base: hashes_to_wire(&push_base),
                        heads: Vec::new(),
                        data,
                    },
                    n,
                ));
                continue;
            }
            // Too large for what is left of this request. Half a request or less left:
            // the next request starts with it.
            if !out.is_empty() && room < budget / 2 {
                break;
            }
            // A causal prefix of what the server lacks, as one compact bundle within
            // the room; the server accepts it (its dependencies are the server's), and the
            // rest goes in the next requests. Later documents wait for this one: a course
            // is through before its attendance is sent.
            let from = if knows_base { base } else { Vec::new() };
            let changes = causal_order(doc.get_changes(&from));
            let hashes: Vec<ChangeHash> = changes.iter().map(|c| c.hash()).collect();
            let (n, data) = protocol::fitting_prefix(&doc, &hashes, room)
                .ok_or_else(|| Error::Wire(format!("document {key} cannot be bundled")))?;
            out.push((
                DocPush {
                    doc: key,
                    base: hashes_to_wire(&less_deps(&from, &changes[..n])),
                    heads: Vec::new(),
                    data,
                },
                n,
            ));
            break;
        }
        Ok(out)
    }

    fn token(&self) -> Result<String> {
        self.meta("token")?.ok_or(Error::NotEnrolled)
    }

    /// Writes everything the server has not acknowledged into a sealed bundle, for
    /// carrying to a place with a connection (`diemdanh-server bundle import`). The
    /// next sync asks whether it arrived instead of sending the same data again.
    pub fn export_bundle(&mut self) -> Result<BundleSummary> {
        let token = self.token()?;
        let pushes = self.pushes(&HashSet::new(), usize::MAX, false)?;
        let req = SyncRequest {
            cursor: self.meta("cursor")?.and_then(|c| c.parse().ok()).unwrap_or(0),
            docs: pushes.iter().map(|(p, _)| p.clone()).collect(),
            pending_changes: self.pending_changes()?,
            app_version: APP_VERSION.to_string(),
            max_response_bytes: 0,
        };
        let bytes = bundle::seal(
            bundle::DEVICE_TO_SERVER,
            &self.device_id,
            &bundle::key_from_token(&token),
            &req.encode(),
        );
        let tx = self.conn.transaction()?;
        for (p, _) in &pushes {
            let heads = protocol::pushed_heads(&p.base, &p.data)
                .ok_or_else(|| Error::Wire(format!("the changes of {} do not parse", p.doc)))?;
            let heads = heads_to_blob(&hashes_from_wire(&heads));
            tx.execute(
                "UPDATE docs SET bundled_heads = ?2 WHERE doc_id = ?1",
                params![p.doc, heads],
            )?;
        }
        tx.commit()?;
        Ok(BundleSummary {
            docs: pushes.len() as u32,
            changes: pushes.iter().map(|(_, n)| *n as u64).sum(),
            bytes: bytes.len() as u64,
            data: bytes,
        })
    }

    /// Applies a bundle the server made for this device (`diemdanh-server bundle
    /// export`): the same updates a sync would have brought.
    pub fn import_bundle(&mut self, bytes: &[u8]) -> Result<BundleSummary> {
        let token = self.token()?;
        let sealed = bundle::unseal(bundle::SERVER_TO_DEVICE, bytes).map_err(|e| Error::invalid(e.to_string()))?;
        if sealed.device_id != self.device_id {
            return Err(Error::invalid(format!(
                "this bundle was made for device {}, not this one ({})",
                sealed.device_id, self.device_id
            )));
        }
        sealed
            .verify(&bundle::key_from_token(&token))
            .map_err(|e| Error::invalid(e.to_string()))?;
        let resp = SyncResponse::decode(sealed.body).map_err(|e| Error::Wire(e.to_string()))?;
        let docs = resp.updates.len() as u32;
        let empty = SyncRequest {
            cursor: 0,
            docs: Vec::new(),
            pending_changes: 0,
            app_version: String::new(),
            max_response_bytes: 0,
        };
        let mut stats = SyncStats::default();
        self.apply_response(&empty, resp, &mut stats, &mut HashSet::new(), &mut Counted::default())?;
        Ok(BundleSummary {
            docs,
            changes: 0,
            bytes: bytes.len() as u64,
            data: Vec::new(),
        })
    }

    fn apply_response(
        &mut self,
        req: &SyncRequest,
        resp: SyncResponse,
        stats: &mut SyncStats,
        refused_now: &mut HashSet<String>,
        counted: &mut Counted,
    ) -> Result<()> {
        let actor = self.actor.clone();
        let now_ms = self.now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // One result per push, in the order of the pushes.
        if resp.results.len() != req.docs.len() {
            return Err(Error::Wire(format!(
                "the server answered {} documents for {} sent",
                resp.results.len(),
                req.docs.len()
            )));
        }
        for (push, result) in req.docs.iter().zip(resp.results) {
            let id: DocId = push.doc.parse()?;
            let server_heads = hashes_from_wire(&result.heads);
            match result.outcome {
                Outcome::Accepted => {
                    if counted.sent.insert(push.doc.clone()) {
                        stats.docs_sent += 1;
                    }
                    // Empty heads: the server has what was pushed and what it sent back
                    // (`data`, the changes after the pushed heads). Not "everything the
                    // device has": a push may be a prefix of the device's changes.
                    let heads = if server_heads.is_empty() {
                        let pushed = protocol::pushed_heads(&push.base, &push.data)
                            .ok_or_else(|| Error::Wire(format!("the changes of {} do not parse", push.doc)))?;
                        let after = protocol::pushed_heads(&pushed, &result.data)
                            .ok_or_else(|| Error::Wire(format!("the server's changes of {} do not parse", push.doc)))?;
                        hashes_from_wire(&after)
                    } else {
                        server_heads
                    };
                    merge_into(&tx, &id, &actor, &result.data, Some(&heads))?;
                }
                Outcome::Missing if push.data.is_empty() => {
                    // The bundle has not arrived: send the data in the next exchange.
                    tx.execute("UPDATE docs SET bundled_heads = x'' WHERE doc_id = ?1", [&push.doc])?;
                }
                Outcome::Missing => {
                    // The server lacks what this push built on (restored from an older
                    // backup): it named what it has. Send everything after that next, or
                    // the whole document when this device does not know all of it.
                    let doc = store::load_doc(&tx, &id)?.unwrap_or_default();
                    let known = if server_heads.iter().all(|h| doc.get_change_by_hash(h).is_some()) {
                        server_heads
                    } else {
                        Vec::new()
                    };
                    tx.execute(
                        "UPDATE docs SET server_heads = ?2, bundled_heads = x'', dirty = 1 WHERE doc_id = ?1",
                        rusqlite::params![push.doc, store::heads_to_blob(&known)],
                    )?;
                }
                Outcome::Refused { reason, keys } => {
                    let entry = rebuild_after_refusal(
                        &tx,
                        &id,
                        &actor,
                        push,
                        &result.data,
                        &server_heads,
                        &reason,
                        &keys,
                        now_ms,
                    )?;
                    refused_now.insert(push.doc.clone());
                    stats.refused.push(entry);
                }
            }
        }
        let mut updates = resp.updates;
        updates.sort_by_key(|u| u.doc.parse::<DocId>().map(|d| d.kind).unwrap_or(DocKind::Attendance));
        for update in updates {
            let id: DocId = update.doc.parse()?;
            if counted.received.insert(update.doc.clone()) {
                stats.docs_received += 1;
            }
            // Empty heads: a piece of the document (the rest comes in the next responses);
            // the server then has what the device knew it had plus the piece.
            let heads = if update.heads.is_empty() {
                let known: Option<Vec<u8>> = tx
                    .query_row("SELECT server_heads FROM docs WHERE doc_id = ?1", [&update.doc], |r| {
                        r.get(0)
                    })
                    .optional()?;
                let known = hashes_to_wire(&heads_from_blob(&known.unwrap_or_default()));
                let after = protocol::pushed_heads(&known, &update.data)
                    .ok_or_else(|| Error::Wire(format!("the server's piece of {} does not parse", update.doc)))?;
                hashes_from_wire(&after)
            } else {
                hashes_from_wire(&update.heads)
            };
            merge_into(&tx, &id, &actor, &update.data, Some(&heads))?;
        }
        // A bundle may be older than what the device already has: never move back.
        let current: u64 = store::get_meta(&tx, "cursor")?
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        store::set_meta(&tx, "cursor", &resp.cursor.max(current).to_string())?;
        crate::failpoint::hit("device.before_apply_commit");
        tx.commit()?;
        Ok(())
    }
}

/// The server heads a push builds on, less those its changes name as dependencies (the
/// server reads those from the changes).
fn less_deps(base: &[ChangeHash], changes: &[automerge::Change]) -> Vec<ChangeHash> {
    let deps: HashSet<ChangeHash> = changes.iter().flat_map(|c| c.deps().iter().copied()).collect();
    base.iter().filter(|h| !deps.contains(h)).copied().collect()
}

/// Counts one more failed exchange of a sync, unless its `retries` are spent (false).
fn retry_left(failures: &mut u32, retries: u32, stats: &mut SyncStats) -> bool {
    if *failures >= retries {
        return false;
    }
    *failures += 1;
    stats.retries += 1;
    true
}

/// Changes in a request's pushes.
fn changes_of(pushes: &[(DocPush, usize)]) -> u64 {
    pushes.iter().map(|(_, n)| *n as u64).sum()
}

/// Bytes of a part's request that are not the exchange's: HTTP request line and headers,
/// the part's head.
const PART_OVERHEAD: usize = 192;
/// Bytes of a part's answer that are not the reply's: status line, headers, the head.
const WINDOW_OVERHEAD: usize = 128;
/// Reply bytes below which a device takes a cut reply again whole rather than asking
/// for the rest (servers keep only larger replies of plain exchanges).
const RESUME_REPLY_MIN: usize = 2048;

/// One exchange going in parts (docs/PROTOCOL.md, "Resumable exchanges"): its request,
/// the body, how much of it the server holds, the reply bytes that came.
struct Inflight {
    req: SyncRequest,
    body: Vec<u8>,
    /// Body bytes the server holds; None after a cut (to be asked).
    held: Option<u64>,
    reply: Vec<u8>,
    /// The reply's length, once the server told it.
    reply_total: Option<u64>,
    changes: u64,
    /// Started again from the first byte once already.
    restarted: bool,
}

impl Inflight {
    fn new(req: SyncRequest, body: Vec<u8>, held: Option<u64>, changes: u64) -> Inflight {
        Inflight {
            req,
            body,
            held,
            reply: Vec::new(),
            reply_total: None,
            changes,
            restarted: false,
        }
    }

    /// What an answer (whole or cut) to the part `head` told: how much of the body the
    /// server holds, and reply bytes from `answer.from`.
    fn took(&mut self, answer: &protocol::PartAnswerHead, tail: &[u8]) {
        if self.held.is_some_and(|h| answer.have < h) || answer.have == 0 {
            // The server lost what it held (restarted, another node, expired): the reply
            // will be a new one.
            self.reply.clear();
            self.reply_total = None;
        }
        self.held = Some(answer.have.min(self.body.len() as u64));
        if answer.reply_total > 0 {
            // From 0: the exchange ran (again) and this is its reply from the start.
            if answer.from == 0 || self.reply_total.is_some_and(|t| t != answer.reply_total) {
                self.reply.clear();
            }
            self.reply_total = Some(answer.reply_total);
            if answer.from == self.reply.len() as u64 {
                let room = usize::try_from(answer.reply_total)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(self.reply.len());
                self.reply.extend_from_slice(&tail[..tail.len().min(room)]);
            }
        }
    }

    fn reply_complete(&self) -> bool {
        self.reply_total.is_some_and(|t| t > 0 && self.reply.len() as u64 >= t)
    }
}

/// Bytes of document data in a request's pushes.
fn pushes_size(pushes: &[(DocPush, usize)]) -> usize {
    pushes.iter().map(|(p, _)| p.data.len()).sum()
}

/// `changes` with every change after the changes of the set it depends on (automerge
/// returns them so already; a prefix is sent on its own, so this is made certain). Stable:
/// among changes that are ready, the original order.
fn causal_order(changes: Vec<automerge::Change>) -> Vec<automerge::Change> {
    let index: std::collections::HashMap<ChangeHash, usize> =
        changes.iter().enumerate().map(|(i, c)| (c.hash(), i)).collect();
    let mut waiting: Vec<usize> = changes
        .iter()
        .map(|c| c.deps().iter().filter(|d| index.contains_key(d)).count())
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
    for (i, c) in changes.iter().enumerate() {
        for d in c.deps() {
            if let Some(&j) = index.get(d) {
                dependents[j].push(i);
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..changes.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(changes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &k in &dependents[i] {
            waiting[k] -= 1;
            if waiting[k] == 0 {
                ready.insert(k);
            }
        }
    }
    let mut slots: Vec<Option<automerge::Change>> = changes.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// The documents one sync has counted as sent and received.
#[derive(Default)]
struct Counted {
    sent: HashSet<String>,
    received: HashSet<String>,
}

/// A document with unsent changes: (id, server heads, heads last put in a bundle).
type DirtyDoc = (String, Vec<u8>, Vec<u8>);

fn sorted(heads: &[ChangeHash]) -> Vec<ChangeHash> {
    let mut v = heads.to_vec();
    v.sort();
    v
}

fn parse_statuses(s: Option<&str>) -> Vec<MarkStatus> {
    s.map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

pub fn format_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Applies bytes from the server to a local document and records what the server has:
/// `server_heads`, or (`None`) everything the device has once `data` is merged.
fn merge_into(
    tx: &Transaction<'_>,
    id: &DocId,
    actor: &ActorId,
    data: &[u8],
    server_heads: Option<&[ChangeHash]>,
) -> Result<()> {
    let mut doc = store::load_doc(tx, id)?.unwrap_or_default();
    doc.set_actor(actor.clone());
    if !data.is_empty() {
        doc.load_incremental(data)?;
        if protocol::has_bundle(data) {
            // Bundles are automerge's experimental format: the store keeps documents
            // only in the stable saved form.
            store::replace_doc(tx, id, &doc)?;
        } else {
            store::append_chunk(tx, id, &doc, data)?;
        }
        project_doc_lenient(tx, id, &doc)?;
    } else {
        store::ensure_doc(tx, id)?;
    }
    let local = doc.get_heads();
    let server_heads = server_heads.unwrap_or(&local);
    let has_server = server_heads.iter().all(|h| doc.get_change_by_hash(h).is_some());
    let known = match server_heads {
        _ if !has_server => Vec::new(),
        // Derived heads may name a change and one of its ancestors (a piece that repeats
        // changes the device had): keep the frontier only.
        [_, _, ..] => doc.fork_at(server_heads)?.get_heads(),
        _ => server_heads.to_vec(),
    };
    let pending = doc.get_changes(&known).len() as i64;
    let dirty = sorted(&local) != sorted(&known);
    tx.execute(
        "UPDATE docs SET server_heads = ?2, dirty = ?3, pending = ?4 WHERE doc_id = ?1",
        params![
            id.to_string(),
            heads_to_blob(&known),
            dirty,
            if dirty { pending } else { 0 }
        ],
    )?;
    Ok(())
}

/// The server refused this document's push. Keep everything the device recorded: the
/// refused changes go to the `refused` table with the reason; the document is rebuilt
/// from the server's state, and local values the server did not name as faulty are
/// written again as new changes (so one bad entry does not block the rest).
#[allow(clippy::too_many_arguments)]
fn rebuild_after_refusal(
    tx: &Transaction<'_>,
    id: &DocId,
    actor: &ActorId,
    push: &DocPush,
    server_data: &[u8],
    server_heads: &[ChangeHash],
    reason: &str,
    keys: &[String],
    now_ms: i64,
) -> Result<RefusedEntry> {
    let local = store::load_doc(tx, id)?.unwrap_or_default();
    let at = now_ms.div_euclid(1000);
    // Everything the server was not known to have, not only what this push carried (a
    // push may be a prefix), as plain changes.
    let known: Option<Vec<u8>> = tx
        .query_row(
            "SELECT server_heads FROM docs WHERE doc_id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    let known = heads_from_blob(&known.unwrap_or_default());
    let unsent = if known.iter().all(|h| local.get_change_by_hash(h).is_some()) {
        local.save_after(&known)
    } else {
        local.save_after(&[])
    };
    let changes = if unsent.is_empty() {
        protocol::raw_changes(&push.data).unwrap_or_else(|| push.data.clone())
    } else {
        unsent
    };
    tx.execute(
        "INSERT INTO refused (doc_id, reason, at, changes, keys) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id.to_string(), reason, at, changes, keys.join(" ")],
    )?;
    let mut rebuilt = if server_data.is_empty() {
        Automerge::new()
    } else {
        Automerge::load(server_data)?
    };
    rebuilt.set_actor(actor.clone());
    let mut reapply = Vec::new();
    if !keys.is_empty() {
        for key in local.keys(ROOT) {
            if keys.contains(&key) {
                continue;
            }
            let mine = docs::values_at(&local, &key).into_iter().next().flatten();
            let theirs = docs::values_at(&rebuilt, &key);
            if let Some(v) = mine {
                if !theirs.contains(&Some(v.clone())) {
                    reapply.push((key, v));
                }
            }
        }
    }
    let reapplied = !reapply.is_empty();
    if reapplied {
        let mut t = rebuilt.transaction();
        for (k, v) in reapply {
            t.put(ROOT, k, v)?;
        }
        t.commit_with(
            CommitOptions::default()
                .with_message("re-applied after refusal")
                .with_time(now_ms),
        );
    }
    store::replace_doc(tx, id, &rebuilt)?;
    let has_server = server_heads.iter().all(|h| rebuilt.get_change_by_hash(h).is_some());
    let known = if has_server { server_heads.to_vec() } else { Vec::new() };
    let pending = rebuilt.get_changes(&known).len() as i64;
    tx.execute(
        "UPDATE docs SET server_heads = ?2, dirty = ?3, pending = ?4 WHERE doc_id = ?1",
        params![id.to_string(), heads_to_blob(&known), reapplied, pending],
    )?;
    project_doc_lenient(tx, id, &rebuilt)?;
    Ok(RefusedEntry {
        doc: id.to_string(),
        reason: reason.to_string(),
        keys: keys.to_vec(),
        at,
    })
}

/// Rewrites the query rows of one document from its contents.
pub fn project_doc(tx: &Transaction<'_>, id: &DocId, doc: &Automerge) -> Result<()> {
    let contents = docs::read(id, doc, None).map_err(|e| Error::invalid(e.reason))?;
    write_projection(tx, id, &contents)
}

/// Like [`project_doc`] but skips entries that do not parse (a refused or foreign
/// document must not make the device unusable).
fn project_doc_lenient(tx: &Transaction<'_>, id: &DocId, doc: &Automerge) -> Result<()> {
    match docs::read(id, doc, None) {
        Ok(contents) => write_projection(tx, id, &contents),
        Err(_) => Ok(()),
    }
}

fn write_projection(tx: &Transaction<'_>, id: &DocId, contents: &Contents) -> Result<()> {
    Ok(projection::write(tx, id, contents, false)?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RetryPolicy;

    /// SQLite's `max_page_count` makes a real SQLITE_FULL: the operation fails with the
    /// plain message, nothing of it is kept, what was saved before is, the store is
    /// clean, and recording works again once there is room.
    #[test]
    fn a_full_store_refuses_the_write_plainly_and_keeps_what_was_saved() {
        use crate::model::{Cadre, Gender};
        let dir = tempfile::tempdir().expect("tmp");
        let mut d = super::Device::open(dir.path()).expect("open");
        crate::store::set_meta(&d.conn, "unit", "2025:03434").expect("unit");
        let cadre = |i: usize| Cadre {
            name: format!("Lò Thị Hoa {i}"),
            gender: Gender::Female,
            birth_year: 1990,
            ethnicity: None,
            category: None,
            position: None,
            qualification: None,
            theory_level: None,
            state_management: None,
        };
        let first = d.add_cadre("2025:03434", cadre(0)).expect("room for one");
        let pages: i64 = d.conn.query_row("PRAGMA page_count", [], |r| r.get(0)).expect("pages");
        d.conn.pragma_update(None, "max_page_count", pages).expect("limit");
        let mut saved = vec![first];
        let mut failure = None;
        for i in 1..500 {
            match d.add_cadre("2025:03434", cadre(i)) {
                Ok(id) => saved.push(id),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let e = failure.expect("the store fills up");
        assert!(
            matches!(&e, crate::Error::Storage(s) if s.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)),
            "{e:?}"
        );
        assert!(e.to_string().contains("the tablet's storage is full"), "{e}");
        assert!(!e.to_string().contains("Hoa"), "{e}");
        let check: String = d
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(check, "ok");
        let listed: Vec<String> = d.list_cadres(None).expect("list").into_iter().map(|c| c.id).collect();
        assert_eq!(listed.len(), saved.len());
        assert!(saved.iter().all(|id| listed.contains(id)));
        drop(d);
        let mut d = super::Device::open(dir.path()).expect("reopens clean");
        assert_eq!(d.list_cadres(None).expect("list").len(), saved.len());
        d.add_cadre("2025:03434", cadre(999)).expect("room again");
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_up_to_the_cap() {
        let p = RetryPolicy {
            retries: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            ..Default::default()
        };
        for _ in 0..200 {
            assert!(p.delay(1) <= Duration::from_millis(100));
            assert!(p.delay(3) <= Duration::from_millis(400));
            assert!(p.delay(30) <= Duration::from_secs(1), "capped");
        }
        // Jitter: the waits are spread, not all equal.
        let waits: std::collections::BTreeSet<_> = (0..50).map(|_| p.delay(5)).collect();
        assert!(waits.len() > 10);
    }
}
