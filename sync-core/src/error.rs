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
    #[error("local storage failed: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("a stored document could not be read: {0}")]
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
