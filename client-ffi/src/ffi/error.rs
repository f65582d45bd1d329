//! The one error the apps see, and the one place where the core's detailed error is
//! turned into it (as in application-services' `ApiError`).
//!
//! Each variant is something an app acts on: wait for a signal (`Offline`), send the
//! officer to the administrator (`Unauthorized`), show the enrolment screen
//! (`NotEnrolled`), show the server's reason (`Refused`), say the sync stopped
//! (`Cancelled`), tell the officer the tablet's storage failed (`Storage`), ask for
//! other input (`InvalidInput`). `Internal` is a bug: a panic in this library caught at
//! the boundary, or an app's sync listener that threw. Texts carry ids, keys and rule names only: no name or ethnicity, and no
//! driver dump (SQLite's or the HTTP client's own messages stay inside).

use sync_core::error::storage_reason;
use sync_core::Error;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum FieldError {
    /// Nothing came back from the server: no signal, server down, or a cut mid-exchange.
    /// Everything recorded stays on the device; sync again later.
    #[error("cannot reach the server: {reason}")]
    Offline { reason: String },
    /// The server does not accept this device: revoked by an administrator, or a
    /// one-time code that is wrong, used or expired.
    #[error("the server refused this device: {reason}")]
    Unauthorized { reason: String },
    /// The device has not been enrolled with a server yet (see `enroll`).
    #[error("this device is not enrolled yet")]
    NotEnrolled,
    /// The server answered with an error other than an authorization failure.
    #[error("the server refused the request: {reason}")]
    Refused { reason: String },
    /// The sync was cancelled; everything exchanged before is kept.
    #[error("the sync was cancelled; what was exchanged so far is kept")]
    Cancelled,
    /// The device's own database failed (full, damaged, not readable).
    #[error("local storage failed: {reason}")]
    Storage { reason: String },
    /// The input breaks a rule, or names a record this device does not hold.
    #[error("{reason}")]
    InvalidInput { reason: String },
    /// A bug: a panic in this library caught at the boundary, or an exception thrown by
    /// the app's own `SyncListener`. Data saved before it is kept.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

/// The app's `SyncListener` threw something other than a `FieldError`. Its text (an app
/// exception, maybe a stack) is not passed on.
impl From<uniffi::UnexpectedUniFFICallbackError> for FieldError {
    fn from(_: uniffi::UnexpectedUniFFICallbackError) -> Self {
        FieldError::Internal {
            reason: "the app's sync listener failed; the sync stopped there, and every exchange before is kept".into(),
        }
    }
}

pub type FieldResult<T> = Result<T, FieldError>;

impl FieldError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        FieldError::InvalidInput { reason: reason.into() }
    }

    pub(crate) fn panicked() -> Self {
        FieldError::Internal {
            reason: "an unexpected failure inside the diemdanh library; data saved before it is kept".into(),
        }
    }
}

impl From<Error> for FieldError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(i) => FieldError::InvalidInput { reason: i.0 },
            Error::NotFound(what) => FieldError::invalid(format!("not found on this device: {what}")),
            Error::NotEnrolled => FieldError::NotEnrolled,
            Error::AlreadyEnrolled(device) => {
                FieldError::invalid(format!("this device is already enrolled (device {device})"))
            }
            Error::Storage(e) => FieldError::Storage {
                reason: storage_reason(&e).into(),
            },
            Error::WrongKey { .. } => FieldError::Storage { reason: e.to_string() },
            Error::Document(_) => FieldError::Storage {
                reason: "a document stored on this device could not be read".into(),
            },
            Error::Wire(_) => FieldError::Refused {
                reason: "the server's answer could not be read (does the app need an update?)".into(),
            },
            Error::Offline(reason) => FieldError::Offline { reason },
            Error::Unauthorized(reason) => FieldError::Unauthorized { reason },
            Error::Server(reason) => FieldError::Refused { reason },
            Error::Cancelled => FieldError::Cancelled,
            // What an app does is what it does when offline: keep the data, sync again.
            Error::TooManyRounds(n) => FieldError::Offline {
                reason: format!("the sync stopped after {n} exchanges; sync again to continue"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_text_never_reaches_the_app() {
        let driver = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("INSERT INTO q_cadres VALUES ('Lò Thị Hoa')".into()),
        );
        let e = FieldError::from(Error::Storage(driver));
        assert_eq!(
            e,
            FieldError::Storage {
                reason: "the tablet's storage is full".into()
            }
        );
        let other = FieldError::from(Error::Storage(rusqlite::Error::InvalidQuery));
        assert!(!format!("{other}").contains("Query"), "{other}");
        let wire = FieldError::from(Error::Wire("invalid type: string \"Lò Thị Hoa\"".into()));
        assert!(!format!("{wire}").contains("Hoa"), "{wire}");
    }

    #[test]
    fn each_core_error_maps_to_the_variant_an_app_acts_on() {
        assert_eq!(FieldError::from(Error::NotEnrolled), FieldError::NotEnrolled);
        assert_eq!(FieldError::from(Error::Cancelled), FieldError::Cancelled);
        assert!(matches!(
            FieldError::from(Error::Offline("x".into())),
            FieldError::Offline { .. }
        ));
        assert!(matches!(
            FieldError::from(Error::TooManyRounds(3)),
            FieldError::Offline { .. }
        ));
        assert!(matches!(
            FieldError::from(Error::Unauthorized("revoked".into())),
            FieldError::Unauthorized { reason } if reason == "revoked"
        ));
        assert!(matches!(
            FieldError::from(Error::Server("bad".into())),
            FieldError::Refused { .. }
        ));
        assert!(matches!(
            FieldError::from(Error::NotFound("course x".into())),
            FieldError::InvalidInput { .. }
        ));
        assert!(matches!(
            FieldError::from(Error::invalid("no")),
            FieldError::InvalidInput { .. }
        ));
    }
}
