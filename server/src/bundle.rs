//! Bundles on the server: a device's sync carried on a USB stick or SD card, applied
//! with the same checks as a sync (`sync::process`), and the reverse, what a device
//! lacks, written for carrying back. See `sync_core::bundle` for the sealed format.

use serde::Serialize;
use sync_core::bundle::{self, BundleError};
use sync_core::protocol::{Outcome, SyncRequest, SyncResponse};
use sync_core::units::UnitKey;

use crate::api::now;
use crate::store::{Store, StoreError};
use crate::sync::{process, updates_since, Peer};

#[derive(Debug, thiserror::Error)]
pub enum BundleFailure {
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error("no device {0} is enrolled on this server")]
    UnknownDevice(String),
    #[error("device {0} has been revoked; its bundle is not applied (after reviewing the tablet's `diemdanh export`, `--accept-revoked` applies it)")]
    Revoked(String),
    #[error("the bundle's contents do not decode: {0}")]
    Body(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub device_id: String,
    pub accepted: Vec<String>,
    pub refused: Vec<(String, String)>,
}

fn peer_for(store: &dyn Store, device_id: &str, accept_revoked: bool) -> Result<(Peer, [u8; 32]), BundleFailure> {
    let (device, token_hash) = store
        .device_by_id(device_id)?
        .ok_or_else(|| BundleFailure::UnknownDevice(device_id.to_string()))?;
    if device.revoked_at.is_some() && !accept_revoked {
        return Err(BundleFailure::Revoked(device.id));
    }
    let key = bundle::key_from_token_hash(&token_hash).ok_or(BundleError::BadSeal)?;
    let unit: UnitKey = device
        .unit
        .parse()
        .map_err(|_| BundleFailure::Body("device unit".into()))?;
    let actor = automerge::ActorId::from(hex::decode(&device.actor).unwrap_or_default());
    Ok((
        Peer {
            device_id: device.id,
            unit,
            actor,
        },
        key,
    ))
}

/// Verifies and applies a device bundle.
pub fn import(store: &dyn Store, bytes: &[u8]) -> Result<ImportReport, BundleFailure> {
    import_with(store, bytes, false)
}

/// [`import`], and with `accept_revoked` also the bundle of a revoked device: how an
/// administrator takes in what a lost tablet never sent, once it is back in trusted
/// hands and its export was reviewed. The seal (under the revoked device's token hash),
/// scope, actor and schema checks still apply; the device stays revoked.
pub fn import_with(store: &dyn Store, bytes: &[u8], accept_revoked: bool) -> Result<ImportReport, BundleFailure> {
    let sealed = bundle::unseal(bundle::DEVICE_TO_SERVER, bytes)?;
    let (peer, key) = peer_for(store, &sealed.device_id, accept_revoked)?;
    sealed.verify(&key)?;
    let req = SyncRequest::decode(sealed.body).map_err(|e| BundleFailure::Body(e.to_string()))?;
    let mut response = None;
    store.write(&mut |tx| {
        response = Some(process(tx, &peer, &req)?);
        Ok(())
    })?;
    let response = response.ok_or_else(|| BundleFailure::Body("no response".into()))?;
    store.record_contact(
        &peer.device_id,
        now(),
        req.pending_changes as i64,
        &req.app_version,
        bytes.len() as i64,
        0,
    )?;
    let mut report = ImportReport {
        device_id: peer.device_id,
        accepted: Vec::new(),
        refused: Vec::new(),
    };
    // One result per push, in the order of the pushes.
    for (push, r) in req.docs.iter().zip(response.results) {
        match r.outcome {
            Outcome::Refused { reason, .. } => report.refused.push((push.doc.clone(), reason)),
            _ => report.accepted.push(push.doc.clone()),
        }
    }
    Ok(report)
}

/// What the device lacks since the cursor it was last answered with, sealed for it.
pub fn export(store: &dyn Store, device_id: &str) -> Result<(Vec<u8>, usize), BundleFailure> {
    let (peer, key) = peer_for(store, device_id, false)?;
    let (device, _) = store
        .device_by_id(device_id)?
        .ok_or_else(|| BundleFailure::UnknownDevice(device_id.into()))?;
    let mut response = None;
    store.write(&mut |tx| {
        let (updates, cursor, more) = updates_since(tx, &peer.unit, device.last_cursor, &[], usize::MAX)?;
        response = Some(SyncResponse {
            results: Vec::new(),
            updates,
            cursor,
            more,
        });
        Ok(())
    })?;
    let response = response.ok_or_else(|| BundleFailure::Body("no response".into()))?;
    let docs = response.updates.len();
    Ok((
        bundle::seal(bundle::SERVER_TO_DEVICE, &peer.device_id, &key, &response.encode()),
        docs,
    ))
}
