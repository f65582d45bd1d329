//! The server store, behind a trait so a PostgreSQL backend can stand beside the
//! embedded SQLite one. The sync logic (`sync.rs`) is written once against
//! [`DocTx`]; each backend supplies transactions.

use automerge::{Automerge, Change};
use serde::Serialize;
use sync_core::docs::{Contents, DocId};
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
    /// sequence number and rewrites the document's projection rows.
    fn store(
        &mut self,
        id: &DocId,
        doc: &Automerge,
        new_changes: &[Change],
        contents: &Contents,
        device: &str,
    ) -> StoreResult<()>;
    fn refuse(&mut self, device: &str, doc: &str, reason: &str, data: &[u8]) -> StoreResult<()>;
    /// Documents of these units changed after `cursor`: (doc id, created seq, updated seq),
    /// oldest update first.
    fn changed_since(&mut self, units: &[String], cursor: i64) -> StoreResult<Vec<(String, i64, i64)>>;
    /// The raw changes of a document logged after `cursor`, in order.
    fn changes_since(&mut self, id: &str, cursor: i64) -> StoreResult<Vec<u8>>;
    fn max_seq(&mut self) -> StoreResult<i64>;
}

pub trait Store: Send + Sync + 'static {
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
    fn devices(&self) -> StoreResult<Vec<DeviceRow>>;
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
}
