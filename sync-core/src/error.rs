//! Errors of the core. Two tiers, as in application-services: [`Error`] is detailed and
//! internal; callers at a boundary (CLI, HTTP, FFI) map it to what a person can act on.
//! No message carries personal data (names, ethnicity): only ids, keys and rule names.

use std::fmt;

/// Input a person gave that breaks a rule: shown to them as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput(pub String);

impl InvalidInput {
    pub fn new(msg: impl Into<String>) -> Self {
        InvalidInput(msg.into())
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

/// A document that breaks the schema, with the keys at fault when they are known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SchemaViolation {
    pub reason: String,
    pub keys: Vec<String>,
}

impl SchemaViolation {
    pub fn at(key: &str, reason: impl Into<String>) -> Self {
        SchemaViolation {
            reason: format!("{key}: {}", reason.into()),
            keys: vec![key.to_string()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(#[from] InvalidInput),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("this device is not enrolled yet: run `diemdanh enroll --server URL --code CODE` first")]
    NotEnrolled,
    #[error("this device is already enrolled (device {0})")]
    AlreadyEnrolled(String),
    /// Shown as a few plain words from SQLite's result code ([`storage_reason`]): the
    /// driver's own text can quote SQL and values and never reaches a person.
    #[error("local storage failed: {}; the step that failed was not saved, everything saved before it is kept", storage_reason(.0))]
    Storage(#[from] rusqlite::Error),
    /// The store file does not open with the key given (or none was given for an
    /// encrypted store, or it is not a database at all).
    #[error("{}", if *key_given {
        "the device database cannot be opened with this key (a wrong key, or the file is not an encrypted diemdanh store)"
    } else {
        "the device database is not readable: it is encrypted (give its key) or it is not a diemdanh store"
    })]
    WrongKey { key_given: bool },
    #[error("a document stored on this device could not be read")]
    Document(#[from] automerge::AutomergeError),
    #[error("wire format: {0}")]
    Wire(String),
    #[error("cannot reach the server: {0}")]
    Offline(String),
    #[error("the server refused this device: {0}")]
    Unauthorized(String),
    #[error("the server answered with an error: {0}")]
    Server(String),
    #[error("the sync was cancelled; what was exchanged so far is kept")]
    Cancelled,
    #[error("the sync did not finish within {0} exchanges; run sync again to continue")]
    TooManyRounds(usize),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(InvalidInput::new(msg))
    }
}

/// What went wrong with the device's SQLite store, in a few words, from its result code
/// only (the CLI and the app bindings both show this).
pub fn storage_reason(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DiskFull) => "the tablet's storage is full",
        Some(C::DatabaseBusy | C::DatabaseLocked) => "the database is busy; try again",
        Some(C::CannotOpen) => "the database file cannot be opened",
        Some(C::ReadOnly) => "the database is read-only",
        Some(C::PermissionDenied) => "no permission to use the database file",
        Some(C::DatabaseCorrupt | C::NotADatabase) => "the database file is damaged or is not a diemdanh database",
        Some(C::SystemIoFailure) => "the storage could not be read or written (it may be full or failing)",
        Some(C::OutOfMemory) => "the tablet ran out of memory",
        _ => "the local database failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_are_plain_words_without_the_driver_text() {
        let full = Error::Storage(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("INSERT INTO q_cadres VALUES ('Lò Thị Hoa')".into()),
        ));
        let text = full.to_string();
        assert!(text.contains("storage is full"), "{text}");
        assert!(text.contains("saved before it is kept"), "{text}");
        assert!(!text.contains("INSERT") && !text.contains("Hoa"), "{text}");
        let io = Error::Storage(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_WRITE),
            Some("disk I/O error".into()),
        ));
        assert!(io.to_string().contains("could not be read or written"), "{io}");
    }
}
