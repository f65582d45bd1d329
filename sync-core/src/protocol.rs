//! The sync wire format, the same code on both sides. Sans I/O: this module turns
//! messages into bytes and back; who carries the bytes is the caller's business
//! ([`Transport`] on the device, axum on the server). docs/PROTOCOL.md describes it.
//!
//! A body is `b"DD"`, a one-byte kind, a one-byte protocol version, then the message
//! as postcard, compressed with zstd. The version is outside the compressed part so a
//! server can refuse an unknown version before spending anything on the body.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const PROTOCOL_VERSION: u8 = 1;
pub const SYNC_PATH: &str = "/v1/sync";
pub const ENROLL_PATH: &str = "/v1/enroll";
pub const CONTENT_TYPE: &str = "application/x-diemdanh-sync";

const MAGIC: &[u8; 2] = b"DD";
const KIND_REQUEST: u8 = b'Q';
const KIND_RESPONSE: u8 = b'R';
/// Refuse to inflate more than this: a 1 MiB body must not become 1 GiB in memory.
pub const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// Raw bytes of one change hash.
pub type Hash = [u8; 32];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub device_id: String,
    /// The server's change sequence up to which this device holds everything.
    pub cursor: u64,
    pub docs: Vec<DocPush>,
    /// What the device reports about itself, for the server's device page.
    pub pending_changes: u64,
    pub app_version: String,
    /// Unique per batch; the server logs it so a replay is recognisable.
    pub batch_id: String,
    /// The most document data the device wants in one response (the server may send
    /// less); a device on a poor link asks for small responses so each finishes.
    pub max_response_bytes: u32,
}

/// The changes of one document the server is not known to have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocPush {
    pub doc: String,
    /// The server heads this push builds on; empty when the server has none known.
    pub base: Vec<Hash>,
    /// The device's heads once these changes are applied.
    pub heads: Vec<Hash>,
    /// A whole saved document when `base` is empty (automerge's compact columnar form),
    /// else the changes after `base`. Empty for a probe: "do you have `heads`?", sent
    /// for a document carried in a bundle since the last sync.
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Accepted,
    /// Nothing of this document's push was applied. `keys` names the entries at fault
    /// when the server knows them (empty: the whole document, e.g. out of scope).
    Refused {
        reason: String,
        keys: Vec<String>,
    },
    /// The push was a probe (no data, sent after a bundle) and the server lacks some of
    /// its heads: the bundle has not arrived, send the data.
    Missing,
}

/// The server's answer for one pushed document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocResult {
    pub doc: String,
    pub outcome: Outcome,
    /// The server's heads for the document now.
    pub heads: Vec<Hash>,
    /// What the device lacks: changes after the device's heads when accepted, the
    /// server's whole document when refused (to rebuild from).
    pub data: Vec<u8>,
}

/// A document that changed on the server since the device's cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocUpdate {
    pub doc: String,
    pub heads: Vec<Hash>,
    /// Changes or a whole document; both load with `load_incremental`.
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub results: Vec<DocResult>,
    pub updates: Vec<DocUpdate>,
    pub cursor: u64,
    /// More updates wait past the response size bound: ask again.
    pub more: bool,
}

/// Enrolment is JSON: it happens once per device and people debug it with curl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub code: String,
    pub device_id: String,
    /// The device's automerge actor id, hex.
    pub actor: String,
    pub app_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub device_id: String,
    pub unit: String,
    pub token: String,
}

/// The JSON body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

fn encode<T: Serialize>(kind: u8, msg: &T) -> Vec<u8> {
    // postcard cannot fail on these types (no maps, no unsized sequences).
    let plain = postcard::to_stdvec(msg).unwrap_or_default();
    let packed = zstd::bulk::compress(&plain, 9).unwrap_or_default();
    let mut out = Vec::with_capacity(packed.len() + 4);
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(&packed);
    out
}

/// Why a body could not be decoded; the server maps each to a 4xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is not a diemdanh sync message")]
    NotSync,
    #[error("protocol version {0} is not supported (this side speaks {PROTOCOL_VERSION})")]
    Version(u8),
    #[error("the body is truncated or corrupt")]
    Corrupt,
}

fn decode<T: for<'de> Deserialize<'de>>(kind: u8, body: &[u8]) -> Result<T, DecodeError> {
    if body.len() < 4 || &body[..2] != MAGIC || body[2] != kind {
        return Err(DecodeError::NotSync);
    }
    if body[3] != PROTOCOL_VERSION {
        return Err(DecodeError::Version(body[3]));
    }
    let plain = zstd::bulk::decompress(&body[4..], MAX_DECODED_BYTES).map_err(|_| DecodeError::Corrupt)?;
    postcard::from_bytes(&plain).map_err(|_| DecodeError::Corrupt)
}

impl SyncRequest {
    pub fn encode(&self) -> Vec<u8> {
        encode(KIND_REQUEST, self)
    }
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        decode(KIND_REQUEST, body)
    }
}

impl SyncResponse {
    pub fn encode(&self) -> Vec<u8> {
        encode(KIND_RESPONSE, self)
    }
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        decode(KIND_RESPONSE, body)
    }
}

pub fn hashes_to_wire(heads: &[automerge::ChangeHash]) -> Vec<Hash> {
    heads.iter().map(|h| h.0).collect()
}

pub fn hashes_from_wire(heads: &[Hash]) -> Vec<automerge::ChangeHash> {
    heads.iter().map(|h| automerge::ChangeHash(*h)).collect()
}

/// A reply from the server as the transport saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Carries bytes to the server. Implemented by the HTTP client in `client-ffi`, and by
/// in-process transports in tests. An `Err` means nothing came back (offline, cut).
pub trait Transport {
    fn post(
        &mut self,
        path: &str,
        content_type: &str,
        bearer: Option<&str>,
        body: Vec<u8>,
    ) -> std::result::Result<Reply, String>;
}

/// Maps a non-2xx reply to the error a person can act on.
pub fn error_from_reply(reply: &Reply) -> Error {
    let body: Option<ErrorBody> = serde_json::from_slice(&reply.body).ok();
    let message = body
        .as_ref()
        .map(|b| b.message.clone())
        .unwrap_or_else(|| format!("HTTP status {}", reply.status));
    match reply.status {
        401 | 403 => Error::Unauthorized(message),
        _ => Error::Server(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_rejects_bad_bodies() {
        let req = SyncRequest {
            device_id: "dev".into(),
            cursor: 7,
            docs: vec![DocPush {
                doc: "roster:2025:03434".into(),
                base: vec![[1; 32]],
                heads: vec![[2; 32]],
                data: vec![9; 100],
            }],
            pending_changes: 3,
            app_version: "0.1.0".into(),
            batch_id: "b1".into(),
            max_response_bytes: 1000,
        };
        let bytes = req.encode();
        assert_eq!(SyncRequest::decode(&bytes), Ok(req));
        assert_eq!(SyncRequest::decode(b"{}"), Err(DecodeError::NotSync));
        let mut v2 = bytes.clone();
        v2[3] = 2;
        assert_eq!(SyncRequest::decode(&v2), Err(DecodeError::Version(2)));
        assert_eq!(
            SyncRequest::decode(&bytes[..bytes.len() - 3]),
            Err(DecodeError::Corrupt)
        );
        assert_eq!(SyncResponse::decode(&bytes), Err(DecodeError::NotSync));
    }
}
