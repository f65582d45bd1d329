//! sync-core: diemdanh's domain model as automerge documents, the device's SQLite store
//! and the sync protocol as messages over bytes.
//!
//! **Invariant: this crate does no I/O beyond the device's SQLite file and cannot be
//! reached by a network.** A transport is a trait ([`protocol::Transport`]) the caller
//! implements; the server uses the same message types and document rules.

pub mod bundle;
pub mod device;
pub mod docs;
pub mod error;
pub mod export;
pub mod failpoint;
#[doc(hidden)]
pub mod fuzz;
pub mod model;
pub mod projection;
pub mod protocol;
pub mod report;
pub mod roster;
pub mod store;
pub mod text;
pub mod units;

pub use device::Device;
pub use docs::{DocId, DocKind};
pub use error::{Error, InvalidInput, Result, SchemaViolation};
pub use model::{Cadre, CourseMeta, Mark, MarkStatus};
pub use units::{UnitKey, UnitTree};
