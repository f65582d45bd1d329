//! The server store, behind a trait so a PostgreSQL backend can stand beside the
//! embedded SQLite one. The sync logic (`sync.rs`) is written once against
//! [`DocTx`]; each backend supplies transactions.

use automerge::{Automerge, Change};
use serde::Serialize;
use sync_core::docs::{Contents, DocId, MarkEntry};
use sync_core::report::CourseRows;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("document: {0}")]
    Doc(#[from] automerge::AutomergeError),
    #[error("{0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Serialize)]
pub struct DeviceRow {
    pub id: String,
    pub unit: String,
    pub actor: String,
    pub app_version: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_sync_at: Option<i64>,
    pub pending_reported: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub last_cursor: i64,
}

#[derive(Debug)]
pub enum RedeemError {
    /// Unknown, used or expired: one answer for all three, so a guesser learns nothing.
    BadCode,
    DeviceExists,
}

/// A document as the server stores it.
#[derive(Debug)]
pub struct StoredDoc {
    pub doc: Automerge,
    /// Bytes that load into `doc`: the last saved snapshot, followed by the change
    /// chunks logged after it (the store saves a snapshot only every few changes).
    pub snapshot: Vec<u8>,
    pub created_seq: i64,
    pub updated_seq: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefusalRow {
    pub id: i64,
    pub device_id: String,
    pub doc_id: String,
    pub reason: String,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CourseListRow {
    pub id: String,
    pub unit: String,
    pub title: String,
    pub sessions: i64,
    pub trainees: i64,
    pub marks: i64,
    pub conflicts: i64,
}

/// A certificate in the register: the number is `{unit code}/{year}/{seq:05}`, `seq`
/// sequential per (unit, year) and never reused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificateRow {
    pub number: String,
    pub course_id: String,
    pub cadre_id: String,
    pub unit: String,
    pub year: i64,
    pub seq: i64,
    pub issued_at: i64,
}

/// A web account: its view is the subtree of `unit`.
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub name: String,
    pub unit: String,
    /// An argon2 PHC string.
    pub password_hash: String,
}

fn no_accounts<T>() -> StoreResult<T> {
    Err(StoreError::Other("this store backend has no web accounts yet".into()))
}

fn no_reports<T>() -> StoreResult<T> {
    Err(StoreError::Other(
        "this store backend has no unit or annual reports yet".into(),
    ))
}

/// A course with at least one session in a report's period, as the unit and annual
/// reports read it (`reports/`).
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodCourse {
    pub id: String,
    pub unit: String,
    pub title: String,
    pub min_ratio: f64,
    pub excused_counts: bool,
    /// The programme type as stored (`Programme::as_str`), None when the course names none.
    pub programme: Option<String>,
    pub sessions: i64,
    pub sessions_in_period: i64,
    pub first_date: String,
    pub last_date: String,
}

/// Marks of one trainee in one course, counted by status, in the whole course and in the
/// report's period. Index: `MarkStatus::ALL` order (present, late, left early, excused, absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarkCounts {
    pub total: [u32; 5],
    pub in_period: [u32; 5],
}

impl MarkCounts {
    /// Adds `n` marks of a stored `status` to the whole-course counts, the period's, or
    /// both; an unknown status counts nowhere. The one counting rule of both backends.
    pub fn add(&mut self, status: &str, n: i64, total: bool, in_period: bool) {
        let Some(k) = sync_core::model::MarkStatus::ALL
            .iter()
            .position(|s| s.as_str() == status)
        else {
            return;
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if total {
            self.total[k] = self.total[k].saturating_add(n);
        }
        if in_period {
            self.in_period[k] = self.in_period[k].saturating_add(n);
        }
    }
}

/// The attributes of a cadre that reports break figures down by. Sensitive: ethnicity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CadreFacts {
    pub gender: Option<String>,
    pub birth_year: Option<i64>,
    pub ethnicity: Option<String>,
    pub category: Option<String>,
    pub qualification: Option<String>,
    pub theory_level: Option<String>,
}

/// One enrolment of a [`PeriodCourse`]; `cadre` is None when the trainee's roster is not
/// on the server.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodTrainee {
    pub course_id: String,
    pub cadre_id: String,
    pub cadre: Option<CadreFacts>,
    pub marks: MarkCounts,
    /// The trainee's evaluations in this course: (slot, counts as passed), by slot.
    pub evaluations: Vec<(String, bool)>,
}

/// The projection rows a stored change rewrites.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, one per stored document
pub enum Projection {
    /// Every row of the document, from its whole contents (rosters and courses: small).
    Whole(Contents),
    /// Only what a push touched in an attendance document: the marks written (every
    /// concurrent value, for conflicts) and the (session, trainee) keys deleted. The
    /// rest of the part was checked and projected when it arrived.
    Marks {
        entries: Vec<MarkEntry>,
        removed: Vec<(String, String)>,
    },
}

/// What a device reported and moved in one sync, for the devices page.
#[derive(Debug, Clone)]
pub struct Contact<'a> {
    pub device_id: &'a str,
    pub now: i64,
    pub pending: i64,
    pub app_version: &'a str,
    pub bytes_up: i64,
    pub bytes_down: i64,
    /// The cursor the device was answered with (what a server bundle starts from).
    pub cursor: i64,
}

/// One transaction of a sync exchange.
pub trait DocTx {
    fn load(&mut self, id: &DocId) -> StoreResult<Option<StoredDoc>>;
    /// Loads a document this transaction may then `store`: a backend with concurrent
    /// writers (PostgreSQL) locks the document until commit, so two nodes merging into one
    /// document never overwrite each other. The embedded backend has one writer already.
    fn load_for_update(&mut self, id: &DocId) -> StoreResult<Option<StoredDoc>> {
        self.load(id)
    }
    /// Stores the document after `new_changes` were applied, logs each change with a new
    /// sequence number and rewrites the document's projection rows as `projection` says.
    fn store(
        &mut self,
        id: &DocId,
        doc: &Automerge,
        new_changes: &[Change],
        projection: &Projection,
        device: &str,
    ) -> StoreResult<()>;
    /// Hands back a document this transaction loaded and then stored, as it is now: a
    /// backend may keep it in memory for the next push once the transaction commits, so a
    /// roll call does not reload its whole part. Others drop it.
    fn keep(&mut self, id: &DocId, doc: Automerge) {
        let _ = (id, doc);
    }
    /// The outline of course `course` as its projection rows hold them in this
    /// transaction: sessions (id, date, part; nothing else filled) and enrolled trainees,
    /// what a mark is checked against. None when the backend has no rows for that course
    /// document: read the document instead.
    fn course_outline(&mut self, course: &DocId) -> StoreResult<Option<sync_core::docs::CourseDoc>> {
        let _ = course;
        Ok(None)
    }
    /// Records a device's contact in this same transaction (one commit per sync).
    fn record_contact(&mut self, contact: &Contact<'_>) -> StoreResult<()>;
    fn refuse(&mut self, device: &str, doc: &str, reason: &str, data: &[u8]) -> StoreResult<()>;
    /// Documents of these units changed after `cursor`: (doc id, created seq, updated seq),
    /// oldest update first.
    fn changed_since(&mut self, units: &[String], cursor: i64) -> StoreResult<Vec<(String, i64, i64)>>;
    /// The raw changes of a document logged after `cursor`, in order.
    fn changes_since(&mut self, id: &str, cursor: i64) -> StoreResult<Vec<u8>>;
    fn max_seq(&mut self) -> StoreResult<i64>;
    /// The changes of the documents of these units logged after `after` and up to `upto`:
    /// (sequence, doc id, hash), in sequence order. Where a response may cut a document
    /// too large for it (`sync::updates_since`).
    fn change_log(&mut self, units: &[String], after: i64, upto: i64) -> StoreResult<Vec<(i64, String, [u8; 32])>>;
    /// The sequence number of a document's first logged change.
    fn first_change_seq(&mut self, doc: &str) -> StoreResult<Option<i64>>;
}

pub trait Store: Send + Sync + 'static {
    /// Housekeeping `serve` runs every few seconds: a backend drops what it holds in
    /// memory and no longer needs (the embedded store's idle cached documents).
    fn maintain(&self) {}
    fn create_enroll_code(&self, unit: &str, code_hash: &str, expires_at: i64) -> StoreResult<()>;
    fn redeem_enroll_code(
        &self,
        code_hash: &str,
        device_id: &str,
        actor: &str,
        app_version: &str,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Result<String, RedeemError>>;
    fn device_by_token(&self, token_hash: &str) -> StoreResult<Option<DeviceRow>>;
    /// The device and its token hash (the key of its bundles).
    fn device_by_id(&self, device_id: &str) -> StoreResult<Option<(DeviceRow, String)>>;
    /// The cursor the device was last answered with (what a server bundle starts from).
    fn set_device_cursor(&self, device_id: &str, cursor: i64) -> StoreResult<()>;
    fn revoke_device(&self, device_id: &str, now: i64) -> StoreResult<bool>;
    /// Moves a device to another unit (the 2025 reform re-scopes legacy devices).
    /// Returns false when no such device exists.
    fn set_device_unit(&self, device_id: &str, unit: &str) -> StoreResult<bool> {
        let _ = (device_id, unit);
        Err(StoreError::Other(
            "re-scoping devices is not supported by this backend".into(),
        ))
    }
    fn devices(&self) -> StoreResult<Vec<DeviceRow>>;
    /// Gives each of `cadres` a certificate for `course` from the register of
    /// (`unit`, `year`), in the order given, in one transaction; a cadre who has one for
    /// this course keeps it. Returns each cadre's certificate and whether it is new.
    fn issue_certificates(
        &self,
        course_id: &str,
        unit: &str,
        year: i64,
        cadres: &[String],
        now: i64,
    ) -> StoreResult<Vec<(CertificateRow, bool)>> {
        let _ = (course_id, unit, year, cadres, now);
        Err(StoreError::Other(
            "certificates are not supported by this backend".into(),
        ))
    }
    /// The certificates issued for a course, in number order.
    fn certificates(&self, course_id: &str) -> StoreResult<Vec<CertificateRow>> {
        let _ = course_id;
        Err(StoreError::Other(
            "certificates are not supported by this backend".into(),
        ))
    }
    fn record_contact(
        &self,
        device_id: &str,
        now: i64,
        pending: i64,
        app_version: &str,
        bytes_up: i64,
        bytes_down: i64,
    ) -> StoreResult<()>;
    /// Runs `f` in one write transaction; commits when it returns Ok.
    fn write(&self, f: &mut dyn FnMut(&mut dyn DocTx) -> StoreResult<()>) -> StoreResult<()>;
    fn course_rows(&self, course_id: &str) -> StoreResult<Option<CourseRows>>;
    fn courses(&self) -> StoreResult<Vec<CourseListRow>>;
    fn refusals(&self) -> StoreResult<Vec<RefusalRow>>;
    fn counts(&self) -> StoreResult<Vec<(String, i64)>>;

    // Reports (`reports/`). Dates are `YYYY-MM-DD` text, compared as text. Defaults
    // refuse, so a backend without them still serves devices.

    /// Courses with a session dated in [from, to], every unit.
    fn period_courses(&self, _from: &str, _to: &str) -> StoreResult<Vec<PeriodCourse>> {
        no_reports()
    }
    /// The enrolments of `courses` with their cadres' attributes, mark counts and
    /// evaluations, course by course (each a range of the report indexes).
    fn period_trainees(&self, _courses: &[PeriodCourse], _from: &str, _to: &str) -> StoreResult<Vec<PeriodTrainee>> {
        no_reports()
    }
    /// Every change the server received at or before `until` (Unix seconds), as
    /// (document id, raw change bytes), in the order they were logged: what the
    /// documents were at that time (`reports::asof`).
    fn changes_until(&self, _until: i64) -> StoreResult<Vec<(String, Vec<u8>)>> {
        no_reports()
    }

    // Web accounts and their sign-in sessions (web.rs). Defaults refuse, so a backend
    // without them still serves devices.
    /// Creates the account, or with `replace` sets its unit and password; false when it
    /// exists and `replace` is not set.
    fn put_account(
        &self,
        _name: &str,
        _unit: &str,
        _password_hash: &str,
        _now: i64,
        _replace: bool,
    ) -> StoreResult<bool> {
        no_accounts()
    }
    fn account(&self, _name: &str) -> StoreResult<Option<AccountRow>> {
        no_accounts()
    }
    /// Stores a session by its token's hash; expired sessions are deleted on the way.
    fn create_web_session(&self, _token_hash: &str, _account: &str, _now: i64, _expires_at: i64) -> StoreResult<()> {
        no_accounts()
    }
    /// The account of an unexpired session.
    fn web_session(&self, _token_hash: &str, _now: i64) -> StoreResult<Option<AccountRow>> {
        no_accounts()
    }
    fn delete_web_session(&self, _token_hash: &str) -> StoreResult<()> {
        no_accounts()
    }
}
