//! The library the tablet apps call, through uniffi (Kotlin, Swift, Python): one
//! exported object, [`FieldClient`], with the operations of the field command line.
//!
//! **Invariants.** Every exported call
//! - runs against the inner [`Device`] behind one mutex, so calls from several threads
//!   are safe (they take turns; a sync holds the device until it ends or is cancelled);
//! - blocks until done: apps call it off the main thread (Kotlin: `Dispatchers.IO`);
//! - returns a [`FieldError`] for every failure, a panic included: none crosses the
//!   boundary. A panic rolls back the SQLite transaction it was in, so the store stays as
//!   it was before the call.
//!
//! The HTTP transport is the one the command line uses ([`HttpTransport`]).

mod error;
mod records;

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sync_core::device::{self as dev, Device};
use sync_core::protocol::Transport;
use sync_core::Error;

pub use error::{FieldError, FieldResult};
pub use records::*;

use crate::transport::HttpTransport;

/// Told after every exchange of a sync; implemented by the app (a Kotlin `object`, a
/// Python subclass). It runs on the thread that called `sync`, while the client is busy:
/// post to the UI from here, and call no method of the client but `cancel_sync` (any
/// other would wait for the sync that is calling it).
#[uniffi::export(with_foreign)]
pub trait SyncListener: Send + Sync {
    /// Returns false to cancel the sync after this exchange (`FieldError::Cancelled`).
    /// If it throws, the sync stops there too and throws `FieldError::Internal` (also when
    /// that exchange was the last).
    fn on_progress(&self, progress: SyncProgress) -> FieldResult<bool>;
}

/// One device: its store in a home folder, enrolled with one server.
#[derive(uniffi::Object)]
pub struct FieldClient {
    device: Mutex<Device>,
    device_id: String,
    /// Set by `cancel_sync` from any thread without waiting for the device.
    cancel: AtomicBool,
}

impl std::fmt::Debug for FieldClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldClient")
            .field("device_id", &self.device_id)
            .finish()
    }
}

impl FieldClient {
    /// The device, even after a panic poisoned the lock: the panic's SQLite transaction
    /// was rolled back as it unwound, and the device holds no other state a panic could
    /// leave half-changed.
    fn lock(&self) -> MutexGuard<'_, Device> {
        self.device.lock().unwrap_or_else(|poisoned| {
            self.device.clear_poison();
            poisoned.into_inner()
        })
    }

    /// Runs `f` on the device; maps its error and catches its panic.
    fn with_device<T>(&self, f: impl FnOnce(&mut Device) -> sync_core::Result<T>) -> FieldResult<T> {
        let mut device = self.lock();
        match panic::catch_unwind(AssertUnwindSafe(|| f(&mut device))) {
            Ok(result) => result.map_err(FieldError::from),
            Err(_) => Err(FieldError::panicked()),
        }
    }

    /// `enroll` over any transport (the tests use one with no network).
    fn enroll_with(
        &self,
        transport: &mut dyn Transport,
        server_url: &str,
        code: &str,
        ca_cert_pem: Option<&str>,
    ) -> FieldResult<Enrollment> {
        self.with_device(|d| {
            let resp = d.enroll_trusting(transport, server_url, code, ca_cert_pem)?;
            Ok(Enrollment {
                device_id: resp.device_id,
                unit: resp.unit,
            })
        })
    }

    /// `sync` over the transport `connect` makes for the enrolled server's URL and the
    /// private CA trusted at enrolment (the tests use one with no network).
    fn sync_with(
        &self,
        listener: Option<Arc<dyn SyncListener>>,
        connect: impl FnOnce(&str, Option<&str>) -> sync_core::Result<Box<dyn Transport>>,
    ) -> FieldResult<SyncReport> {
        let mut listener_failed = None;
        let result = self.with_device(|d| {
            self.cancel.store(false, Ordering::SeqCst);
            let mut transport = connect(&d.server_url()?, d.ca_cert()?.as_deref())?;
            let cancel = &self.cancel;
            let mut progress = |p: &dev::SyncProgress| {
                let go_on = match listener.as_ref().map(|l| l.on_progress(p.into())) {
                    None | Some(Ok(true)) => true,
                    Some(Ok(false)) => false,
                    Some(Err(e)) => {
                        listener_failed = Some(e);
                        false
                    }
                };
                go_on && !cancel.load(Ordering::SeqCst)
            };
            Ok(d.sync(transport.as_mut(), &mut progress)?.into())
        });
        match (result, listener_failed) {
            // The listener threw: say so, rather than `Cancelled` (the sync stopped there)
            // or success (that was the last exchange), so the app's bug is not hidden.
            (Ok(_) | Err(FieldError::Cancelled), Some(e)) => Err(e),
            (result, _) => result,
        }
    }
}

fn catch<T>(f: impl FnOnce() -> FieldResult<T>) -> FieldResult<T> {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(FieldError::panicked()))
}

#[uniffi::export]
impl FieldClient {
    /// Opens the device store in `home` (a folder in the app's private storage),
    /// creating it and this install's device id on first use. With `key`, the store is
    /// encrypted at rest (SQLCipher; a library built with the `sqlcipher` feature): the
    /// app keeps the key in the platform's key store and gives the same one at every
    /// open; a wrong key is `FieldError.Storage` and changes nothing.
    #[uniffi::constructor(default(key = None))]
    pub fn open(home: String, key: Option<String>) -> FieldResult<Arc<FieldClient>> {
        catch(|| {
            if home.trim().is_empty() {
                return Err(FieldError::invalid("the home folder must be given"));
            }
            let device = Device::open_with_key(&PathBuf::from(home), key.as_deref())?;
            Ok(Arc::new(FieldClient {
                device_id: device.device_id().to_string(),
                device: Mutex::new(device),
                cancel: AtomicBool::new(false),
            }))
        })
    }

    /// This install's device id (also before enrolment).
    pub fn device_id(&self) -> String {
        self.device_id.clone()
    }

    /// Trades a one-time code from the administrator for this device's credentials.
    /// `ca_cert_pem`: the PEM certificate of the private CA a district server's
    /// certificate comes from; remembered and trusted by every later sync (the public
    /// web roots when absent).
    #[uniffi::method(default(ca_cert_pem = None))]
    pub fn enroll(&self, server_url: String, code: String, ca_cert_pem: Option<String>) -> FieldResult<Enrollment> {
        let mut transport = HttpTransport::with_ca(&server_url, ca_cert_pem.as_deref()).map_err(FieldError::invalid)?;
        self.enroll_with(&mut transport, &server_url, &code, ca_cert_pem.as_deref())
    }

    /// Device id, unit, pending changes, last sync and refused batches.
    pub fn status(&self) -> FieldResult<DeviceStatus> {
        self.with_device(|d| Ok(d.status()?.into()))
    }

    /// Adds a cadre to the roster of `unit` (this device's unit or one inside it); returns the id.
    pub fn add_cadre(&self, unit: String, cadre: NewCadre) -> FieldResult<String> {
        self.with_device(|d| d.add_cadre(&unit, cadre.into()))
    }

    /// The cadres this device holds, of one unit or all.
    #[uniffi::method(default(unit = None))]
    pub fn list_cadres(&self, unit: Option<String>) -> FieldResult<Vec<Cadre>> {
        self.with_device(|d| Ok(d.list_cadres(unit.as_deref())?.into_iter().map(Into::into).collect()))
    }

    /// Creates a course with its sessions.
    pub fn create_course(
        &self,
        unit: String,
        course: NewCourse,
        sessions: Vec<NewSession>,
    ) -> FieldResult<CreatedCourse> {
        self.with_device(|d| {
            let sessions = sessions.into_iter().map(Into::into).collect();
            Ok(d.create_course(&unit, course.into(), sessions)?.into())
        })
    }

    pub fn add_session(&self, course_id: String, session: NewSession) -> FieldResult<CreatedSession> {
        self.with_device(|d| Ok(d.add_session(&course_id, session.into())?.into()))
    }

    pub fn list_courses(&self) -> FieldResult<Vec<CourseSummary>> {
        self.with_device(|d| Ok(d.list_courses()?.into_iter().map(Into::into).collect()))
    }

    /// Enrols trainees in a course (enrolling one twice is harmless).
    pub fn enrol_trainees(&self, course_id: String, cadre_ids: Vec<String>) -> FieldResult<()> {
        self.with_device(|d| {
            for cadre in &cadre_ids {
                d.enrol(&course_id, cadre)?;
            }
            Ok(())
        })
    }

    /// Records one mark. `session` is a session id, or its date when the course has one
    /// session that day. Saved on disk when this returns; no network is used.
    #[uniffi::method(default(note = None))]
    pub fn mark(
        &self,
        course_id: String,
        session: String,
        cadre_id: String,
        status: MarkStatus,
        note: Option<String>,
    ) -> FieldResult<()> {
        self.with_device(|d| d.mark(&course_id, &session, &cadre_id, status.into(), note))
    }

    /// Marks every enrolled trainee (the start of a roll call); returns how many.
    pub fn mark_all(&self, course_id: String, session: String, status: MarkStatus) -> FieldResult<u32> {
        self.with_device(|d| {
            let n = d.mark_all(&course_id, &session, status.into())?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
    }

    /// A course: sessions, trainees, marks, conflicts, completion.
    pub fn evaluate(&self, course_id: String, cadre_id: String, evaluation: NewEvaluation) -> FieldResult<()> {
        self.with_device(|d| {
            d.evaluate(
                &course_id,
                &cadre_id,
                evaluation.kind.into(),
                evaluation.period,
                evaluation.score,
                evaluation.passed,
            )
            .map(|_| ())
        })
    }

    /// Imports a roster sheet (XLSX, XLS or CSV file in the README's template). With
    /// any bad row nothing is written unless `skip_invalid`; see `RosterImport.errors`.
    pub fn import_roster(&self, unit: String, path: String, skip_invalid: bool) -> FieldResult<RosterImport> {
        let bytes = std::fs::read(&path).map_err(|e| FieldError::invalid(format!("cannot read {path}: {e}")))?;
        self.with_device(|d| Ok(d.import_roster(&unit, &bytes, skip_invalid)?.into()))
    }

    /// The cadres whose name contains `search` ignoring case and accents, in
    /// Vietnamese order.
    #[uniffi::method(default(unit = None, search = None))]
    pub fn search_cadres(&self, unit: Option<String>, search: Option<String>) -> FieldResult<Vec<Cadre>> {
        self.with_device(|d| {
            Ok(d.search_cadres(unit.as_deref(), search.as_deref())?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    pub fn show_course(&self, course_id: String) -> FieldResult<CourseView> {
        self.with_device(|d| Ok(d.show_course(&course_id)?.into()))
    }

    /// Every mark recorded differently by two devices, on every course.
    pub fn conflicts(&self) -> FieldResult<Vec<Conflict>> {
        self.with_device(|d| Ok(d.conflicts()?.into_iter().map(Into::into).collect()))
    }

    /// Decides a conflict with a new mark that supersedes every concurrent value.
    pub fn resolve(&self, course_id: String, session: String, cadre_id: String, status: MarkStatus) -> FieldResult<()> {
        self.with_device(|d| d.resolve(&course_id, &session, &cadre_id, status.into()))
    }

    /// Exchanges everything with the server this device is enrolled with. `listener`
    /// hears after every exchange and can cancel; so can `cancel_sync` from another
    /// thread. Every exchange is saved before the next starts, so a cancel or a cut
    /// keeps what was exchanged and the next sync goes on from there. Documents the
    /// server refused are in the report (and in `status`), not an error.
    #[uniffi::method(default(listener = None))]
    pub fn sync(&self, listener: Option<Arc<dyn SyncListener>>) -> FieldResult<SyncReport> {
        self.sync_with(listener, |url, ca| {
            Ok(Box::new(HttpTransport::with_ca(url, ca).map_err(Error::invalid)?))
        })
    }

    /// With no network at all: writes everything the server has not acknowledged into a
    /// sealed file at `path` (e.g. on an SD card), for `diemdanh-server bundle import` at
    /// a place with a connection. The next sync asks whether it arrived instead of
    /// sending the same data again.
    pub fn export_bundle(&self, path: String) -> FieldResult<BundleReport> {
        let summary = self.with_device(|d| d.export_bundle())?;
        crate::files::write_atomically(std::path::Path::new(&path), &summary.data).map_err(FieldError::invalid)?;
        Ok(BundleReport {
            documents: summary.docs,
            changes: summary.changes,
            bytes: summary.bytes,
        })
    }

    /// For an administrator holding a lost or broken tablet: writes everything this
    /// device holds as JSON at `path` (what `diemdanh export` writes), with every value
    /// the server never acknowledged under `unsent`. Reads only the local store, so it
    /// works offline and after the device was revoked. Returns how many values are unsent.
    pub fn export_everything(&self, path: String) -> FieldResult<u32> {
        let export = self.with_device(|d| d.export_all())?;
        let bytes = serde_json::to_vec_pretty(&export)
            .map_err(|e| FieldError::invalid(format!("cannot write the export: {e}")))?;
        crate::files::write_atomically(std::path::Path::new(&path), &bytes).map_err(FieldError::invalid)?;
        Ok(export.unsent.len() as u32)
    }

    /// Applies a file made for this device by `diemdanh-server bundle export`: the
    /// updates a sync would have brought. A file for another device, or altered, is refused.
    pub fn import_bundle(&self, path: String) -> FieldResult<BundleReport> {
        let bytes = std::fs::read(&path).map_err(|e| FieldError::invalid(format!("cannot read {path}: {e}")))?;
        let summary = self.with_device(|d| d.import_bundle(&bytes))?;
        Ok(BundleReport {
            documents: summary.docs,
            changes: summary.changes,
            bytes: summary.bytes,
        })
    }

    /// Asks the sync in progress, if any, to stop after its current exchange. Returns at
    /// once; callable from any thread (a Cancel button on the main thread).
    pub fn cancel_sync(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// How many times a sync repeats an exchange that got no answer before it throws
    /// `Offline` (3 unless set), waiting a random, growing time between tries (at most 30 s).
    pub fn set_retries(&self, retries: u32) {
        let mut d = self.lock();
        d.set_retry(dev::RetryPolicy {
            retries,
            ..Default::default()
        });
    }

    /// How much document data goes in one request and comes back in one response; a
    /// device on a poor link uses smaller batches so each exchange finishes.
    pub fn set_batch_limits(&self, request_bytes: u32, response_bytes: u32) {
        let mut d = self.lock();
        d.set_batch_limits(request_bytes as usize, response_bytes);
    }
}

#[cfg(test)]
mod tests;
