//! The sync wire format, the same code on both sides. Sans I/O: this module turns
//! messages into bytes and back; who carries the bytes is the caller's business
//! ([`Transport`] on the device, axum on the server). docs/PROTOCOL.md describes it.
//!
//! A body is a one-byte kind, a one-byte protocol version, then the message as postcard, compressed with zstd when that makes it smaller (an upper-case kind) or
//! plain (lower case): zstd's frame costs about 12 bytes, more than it saves on the
//! 10-300 byte exchanges of a sync of a few marks. The version is outside the
//! compressed part so a server can refuse an unknown version before spending anything
//! on the body.
//!
//! Version 2 (2026-12-01) took out of every exchange what the other side already knows:
//! the device id and a batch id (the token names the device), a push's heads (derived
//! from its base and changes, [`pushed_heads`]), the base hashes the changes already
//! name as dependencies, the document id and heads of an accepted result (results come
//! in the order of the pushes; empty heads mean "yours"). A one-mark exchange went from
//! 398 to 248 bytes of bodies (BENCHMARKS.md). The two-byte `"DD"` magic of version 1
//! went too (4 bytes an exchange): the kind byte (`Q`, `q`, `R`, `r`) and the version
//! already tell a sync body from anything else, and postcard and zstd refuse the rest.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const PROTOCOL_VERSION: u8 = 2;
pub const SYNC_PATH: &str = "/v1/sync";
/// The same exchange with compact bodies ([`SyncRequest::encode_compact`]): a server
/// that answers here speaks them too. Devices use it and fall back to [`SYNC_PATH`]
/// when a server answers 404 or 405 (built before 2026-12-02).
pub const COMPACT_SYNC_PATH: &str = "/";
pub const ENROLL_PATH: &str = "/v1/enroll";
pub const CONTENT_TYPE: &str = "application/x-diemdanh-sync";

/// Bytes before the message: kind and version.
const HEADER: usize = 2;
const KIND_REQUEST: u8 = b'Q';
const KIND_RESPONSE: u8 = b'R';
/// Added to a kind (upper to lower case) when the message is not compressed.
const PLAIN: u8 = 0x20;
/// A compact body leaves out at most this many trailing zero bytes of a plain message.
const MAX_ELIDED: usize = 4;
/// Refuse to inflate more than this: a 1 MiB body must not become 1 GiB in memory.
pub const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// Raw bytes of one change hash.
pub type Hash = [u8; 32];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The server's change sequence up to which this device holds everything.
    pub cursor: u64,
    pub docs: Vec<DocPush>,
    /// What the device reports about itself, for the server's device page.
    pub pending_changes: u64,
    /// Empty when the device told this server its version before (the server keeps
    /// the last one it was told).
    pub app_version: String,
    /// The most document data the device wants in one response (the server may send
    /// less); a device on a poor link asks for small responses so each finishes.
    /// 0: the server's default.
    pub max_response_bytes: u32,
}

/// The changes of one document the server is not known to have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocPush {
    pub doc: String,
    /// The server heads this push builds on, less those the changes in `data` name as
    /// dependencies (the server reads those from the changes); empty for a whole
    /// document.
    pub base: Vec<Hash>,
    /// Only in a probe: the device's heads. A push with data leaves it empty: the
    /// device's heads are those of `base` plus the changes ([`pushed_heads`]).
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

/// The server's answer for one pushed document; `results[i]` answers `docs[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocResult {
    pub outcome: Outcome,
    /// The server's heads for the document now; empty when accepted and they are the
    /// device's own once it has merged `data` (the common case: nothing to send).
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

fn encode<T: Serialize>(kind: u8, msg: &T, compact: bool) -> Vec<u8> {
    // postcard cannot fail on these types (no maps, no unsized sequences).
    let mut plain = postcard::to_stdvec(msg).unwrap_or_default();
    let packed = zstd::bulk::compress(&plain, 9).unwrap_or_default();
    let (kind, payload) = if !packed.is_empty() && packed.len() < plain.len() {
        (kind, packed)
    } else {
        if compact {
            // The trailing fields are most often zero (no more, no budget, no version):
            // a compact plain body leaves their zero bytes out; `decode` puts them back.
            let zeros = plain.iter().rev().take(MAX_ELIDED).take_while(|b| **b == 0).count();
            plain.truncate(plain.len() - zeros);
        }
        (kind | PLAIN, plain)
    };
    let mut out = Vec::with_capacity(payload.len() + HEADER);
    out.push(kind);
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(&payload);
    out
}

/// Why a body could not be decoded; the server maps each to a 4xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is not a diemdanh sync message")]
    NotSync,
    #[error(
        "protocol version {0} is not supported (this side speaks {PROTOCOL_VERSION}): update the app or the server"
    )]
    Version(u8),
    #[error("the body is truncated or corrupt")]
    Corrupt,
}

fn decode<T: for<'de> Deserialize<'de>>(kind: u8, body: &[u8], compact: bool) -> Result<T, DecodeError> {
    // A version-1 body starts with "DD": its version is at byte 3.
    if body.len() >= 4 && &body[..2] == b"DD" {
        return Err(DecodeError::Version(body[3]));
    }
    if body.len() < HEADER || (body[0] | PLAIN) != (kind | PLAIN) {
        return Err(DecodeError::NotSync);
    }
    if body[1] != PROTOCOL_VERSION {
        return Err(DecodeError::Version(body[1]));
    }
    let message = &body[HEADER..];
    if body[0] == kind | PLAIN {
        if message.len() > MAX_DECODED_BYTES {
            return Err(DecodeError::Corrupt);
        }
        if let Ok(msg) = postcard::from_bytes(message) {
            return Ok(msg);
        }
        if !compact {
            return Err(DecodeError::Corrupt);
        }
        // A compact body: trailing zero bytes were left out. Fewer zeros than were left
        // out leave the last fields missing (postcard fails), so the first that decodes
        // is exact.
        let mut padded = message.to_vec();
        for extra in 1..=MAX_ELIDED {
            padded.resize(message.len() + extra, 0);
            if let Ok(msg) = postcard::from_bytes(&padded) {
                return Ok(msg);
            }
        }
        return Err(DecodeError::Corrupt);
    }
    let plain = zstd::bulk::decompress(message, MAX_DECODED_BYTES).map_err(|_| DecodeError::Corrupt)?;
    postcard::from_bytes(&plain).map_err(|_| DecodeError::Corrupt)
}

impl SyncRequest {
    pub fn encode(&self) -> Vec<u8> {
        encode(KIND_REQUEST, self, false)
    }
    /// For [`COMPACT_SYNC_PATH`]: a plain body without its trailing zero bytes.
    pub fn encode_compact(&self) -> Vec<u8> {
        encode(KIND_REQUEST, self, true)
    }
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        decode(KIND_REQUEST, body, false)
    }
    /// Decodes a body received on [`COMPACT_SYNC_PATH`] (full bodies too). Its length
    /// comes from the HTTP framing: a body cut short by up to four bytes may decode.
    pub fn decode_compact(body: &[u8]) -> Result<Self, DecodeError> {
        decode(KIND_REQUEST, body, true)
    }
}

impl SyncResponse {
    pub fn encode(&self) -> Vec<u8> {
        encode(KIND_RESPONSE, self, false)
    }
    /// The answer on [`COMPACT_SYNC_PATH`]: a plain body without its trailing zero bytes.
    pub fn encode_compact(&self) -> Vec<u8> {
        encode(KIND_RESPONSE, self, true)
    }
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        decode(KIND_RESPONSE, body, false)
    }
    /// Decodes the answer to a request sent to [`COMPACT_SYNC_PATH`].
    pub fn decode_compact(body: &[u8]) -> Result<Self, DecodeError> {
        decode(KIND_RESPONSE, body, true)
    }
}

pub fn hashes_to_wire(heads: &[automerge::ChangeHash]) -> Vec<Hash> {
    heads.iter().map(|h| h.0).collect()
}

pub fn hashes_from_wire(heads: &[Hash]) -> Vec<automerge::ChangeHash> {
    heads.iter().map(|h| automerge::ChangeHash(*h)).collect()
}

/// The heads a device has once the server holds `base` and `data` (a push's fields):
/// the hashes among `base` and the changes in `data` that no change in `data` depends
/// on. `data` is either one saved document or concatenated change chunks (automerge's
/// storage format: magic, checksum, type, LEB128 length, body). `None`: it does not
/// parse.
pub fn pushed_heads(base: &[Hash], data: &[u8]) -> Option<Vec<Hash>> {
    if data.len() > 8 && data[8] == CHUNK_DOCUMENT {
        let doc = automerge::Automerge::load(data).ok()?;
        let mut heads = hashes_to_wire(&doc.get_heads());
        heads.extend(base.iter().filter(|h| !heads.contains(h)).copied().collect::<Vec<_>>());
        return Some(heads);
    }
    let changes = changes_in(data)?;
    let deps: std::collections::HashSet<Hash> = changes.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    let mut heads: Vec<Hash> = base
        .iter()
        .chain(changes.iter().map(|(h, _)| h))
        .filter(|h| !deps.contains(*h))
        .copied()
        .collect();
    heads.sort();
    heads.dedup();
    Some(heads)
}

/// The hash and dependencies of every change in `data`: concatenated change chunks and
/// bundles (automerge's compact encoding of a set of changes, [`bundle_of`]). `None`:
/// something does not parse.
pub fn changes_in(data: &[u8]) -> Option<Vec<(Hash, Vec<Hash>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    // Bounded: every turn consumes at least a chunk header.
    while !rest.is_empty() {
        let len = chunk_len(rest)?;
        let chunk = &rest[..len];
        if chunk[8] == CHUNK_BUNDLE {
            let bundle = automerge::Bundle::try_from(chunk).ok()?;
            for c in bundle.to_changes().ok()? {
                out.push((c.hash().0, c.deps().iter().map(|h| h.0).collect()));
            }
        } else {
            let change = automerge::Change::try_from(chunk).ok()?;
            out.push((change.hash().0, change.deps().iter().map(|h| h.0).collect()));
        }
        rest = &rest[len..];
    }
    Some(out)
}

/// `data` with every bundle in it expanded into plain change chunks (the stable storage
/// form), for keeping; `None`: it does not parse.
pub fn raw_changes(data: &[u8]) -> Option<Vec<u8>> {
    if !has_bundle(data) {
        return Some(data.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let len = chunk_len(rest)?;
        let chunk = &rest[..len];
        if chunk[8] == CHUNK_BUNDLE {
            for c in automerge::Bundle::try_from(chunk).ok()?.to_changes().ok()? {
                out.extend_from_slice(c.raw_bytes());
            }
        } else {
            out.extend_from_slice(chunk);
        }
        rest = &rest[len..];
    }
    Some(out)
}

/// Whether `data` holds a bundle chunk (a piece of a document split across exchanges).
pub fn has_bundle(data: &[u8]) -> bool {
    let mut rest = data;
    while let Some(len) = (rest.len() > 8).then(|| chunk_len(rest)).flatten() {
        if rest[8] == CHUNK_BUNDLE {
            return true;
        }
        rest = &rest[len..];
    }
    false
}

/// The changes `hashes` of `doc` as one automerge bundle: as compact as a saved document
/// (columnar, compressed), but any subset of the history, loaded with
/// `load_incremental` by a peer that has their dependencies. A document too large for
/// one exchange travels as bundles of causal prefixes (docs/PROTOCOL.md, "Pieces").
pub fn bundle_of(doc: &automerge::Automerge, hashes: &[automerge::ChangeHash]) -> Option<Vec<u8>> {
    doc.bundle(hashes.iter().copied()).ok().map(|b| b.bytes().to_vec())
}

/// The longest prefix of `hashes` (at least one) whose bundle is at most `budget` bytes:
/// (its length, its bytes). `hashes` must be in causal order (each change after its
/// dependencies), so every prefix is loadable by a peer that has what precedes it.
pub fn fitting_prefix(
    doc: &automerge::Automerge,
    hashes: &[automerge::ChangeHash],
    budget: usize,
) -> Option<(usize, Vec<u8>)> {
    if hashes.is_empty() {
        return None;
    }
    let whole = bundle_of(doc, hashes)?;
    if whole.len() <= budget {
        return Some((hashes.len(), whole));
    }
    // Bisection: a bundle grows with the changes it holds. At most log2(n) bundles.
    let mut best = (1, bundle_of(doc, &hashes[..1])?);
    let (mut lo, mut hi) = (2, hashes.len() - 1);
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let bytes = bundle_of(doc, &hashes[..mid])?;
        if bytes.len() <= budget {
            best = (mid, bytes);
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    Some(best)
}

/// The chunk type byte of a saved document in automerge's storage format.
const CHUNK_DOCUMENT: u8 = 0;
/// The chunk type byte of a bundle (a set of changes in the compact form).
const CHUNK_BUNDLE: u8 = 3;

/// The length of the automerge chunk at the start of `bytes`, header included.
fn chunk_len(bytes: &[u8]) -> Option<usize> {
    // magic (4) | checksum (4) | type (1) | body length (unsigned LEB128) | body
    let mut len: u64 = 0;
    let mut at = 9;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(at)?;
        at += 1;
        len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let total = at.checked_add(usize::try_from(len).ok()?)?;
            return (total <= bytes.len()).then_some(total);
        }
    }
    None
}

/// Exchanges in parts, for links that cut connections (docs/PROTOCOL.md, "Resumable
/// exchanges"): the device uploads the body of one exchange (a compact request) in
/// parts, the server keeps what arrived (even of a part cut in the middle) and answers
/// with what it holds, then with the reply in windows. A cut costs the bytes in flight,
/// not the exchange, and the whole exchange is compressed as one, however many parts
/// carry it.
pub const PART_PATH: &str = "/p";
const KIND_PART: u8 = b'P';
const KIND_PART_ANSWER: u8 = b'H';

/// The id of an exchange: the first 8 bytes of the SHA-256 of its body. The same state
/// builds the same body, so a device restarted mid-exchange finds its parts on the server.
pub fn exchange_id(body: &[u8]) -> [u8; 8] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// The head of a part; the part's bytes follow it to the end of the body, so a part cut
/// in the middle still says where its bytes belong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartHead {
    /// [`exchange_id`] of the whole body.
    pub id: [u8; 8],
    /// Length of the whole body.
    pub total: u64,
    /// Where this part's bytes start in the body.
    pub offset: u64,
    /// Bytes of the reply the device holds already: the window starts there.
    pub from: u64,
    /// Most reply bytes wanted in this answer (0: all of it).
    pub window: u64,
}

/// The head of a part's answer; reply bytes from the request's `from` follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartAnswerHead {
    /// Bytes of the body the server holds (all of it once answered; 0: start again).
    pub have: u64,
    /// Length of the whole reply; 0 while the body is not all there.
    pub reply_total: u64,
    /// Where the reply bytes that follow start in the reply: the part's `from`, or 0
    /// when the exchange ran just now (a reply of another run than the device's bytes).
    pub from: u64,
}

fn encode_head<T: Serialize>(kind: u8, head: &T, tail: &[u8]) -> Vec<u8> {
    // postcard cannot fail on these types (fixed fields).
    let head = postcard::to_stdvec(head).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + head.len() + tail.len());
    out.push(kind);
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(&head);
    out.extend_from_slice(tail);
    out
}

/// The head and the bytes that follow it; a body cut short after its head decodes too
/// (the bytes are what arrived).
fn decode_head<T: for<'de> Deserialize<'de>>(kind: u8, body: &[u8]) -> Result<(T, &[u8]), DecodeError> {
    if body.len() < HEADER || body[0] != kind {
        return Err(DecodeError::NotSync);
    }
    if body[1] != PROTOCOL_VERSION {
        return Err(DecodeError::Version(body[1]));
    }
    postcard::take_from_bytes(&body[HEADER..]).map_err(|_| DecodeError::Corrupt)
}

impl PartHead {
    pub fn encode(&self, bytes: &[u8]) -> Vec<u8> {
        encode_head(KIND_PART, self, bytes)
    }
    pub fn decode(body: &[u8]) -> Result<(PartHead, &[u8]), DecodeError> {
        decode_head(KIND_PART, body)
    }
}

impl PartAnswerHead {
    pub fn encode(&self, reply: &[u8]) -> Vec<u8> {
        encode_head(KIND_PART_ANSWER, self, reply)
    }
    pub fn decode(body: &[u8]) -> Result<(PartAnswerHead, &[u8]), DecodeError> {
        decode_head(KIND_PART_ANSWER, body)
    }
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

    /// Bytes of the reply body that arrived before the last `post` failed (0 when not
    /// known): how much a cut link let through, so the device's budget fits it at once.
    fn partial_reply_bytes(&self) -> u64 {
        0
    }

    /// The reply body bytes that arrived before the last `post` failed (empty when not
    /// kept): a device resumes a reply cut in the middle after them.
    fn take_partial_reply(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// `true`: open a connection for each exchange instead of reusing one. A device asks
    /// for this on a link that has cut its connections: a fresh connection costs a
    /// handshake but no payload bytes, and a link that drops connections after a number of
    /// bytes drops a long-lived one in the middle of an exchange.
    fn fresh_connections(&mut self, _fresh: bool) {}
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
            cursor: 7,
            docs: vec![DocPush {
                doc: "roster:2025:03434".into(),
                base: vec![[1; 32]],
                heads: vec![[2; 32]],
                data: vec![9; 100],
            }],
            pending_changes: 3,
            app_version: "0.1.0".into(),
            max_response_bytes: 1000,
        };
        let bytes = req.encode();
        // 100 equal bytes compress: this one is zstd, upper-case kind.
        assert_eq!(bytes[0], b'Q');
        assert_eq!(SyncRequest::decode(&bytes), Ok(req));
        assert_eq!(SyncRequest::decode(b"{}"), Err(DecodeError::NotSync));
        assert_eq!(SyncRequest::decode(b"Q"), Err(DecodeError::NotSync));
        // A version-1 body ("DD", kind, version) and a future version are told plainly.
        assert_eq!(SyncRequest::decode(b"DDQ\x01\x28\xb5"), Err(DecodeError::Version(1)));
        let mut v3 = bytes.clone();
        v3[1] = 3;
        assert_eq!(SyncRequest::decode(&v3), Err(DecodeError::Version(3)));
        assert!(DecodeError::Version(1).to_string().contains("update"));
        assert_eq!(
            SyncRequest::decode(&bytes[..bytes.len() - 3]),
            Err(DecodeError::Corrupt)
        );
        assert_eq!(SyncResponse::decode(&bytes), Err(DecodeError::NotSync));
    }

    #[test]
    fn small_messages_go_plain_and_decode() {
        let resp = SyncResponse {
            results: vec![DocResult {
                outcome: Outcome::Accepted,
                heads: vec![],
                data: vec![],
            }],
            updates: vec![],
            cursor: 300,
            more: false,
        };
        let bytes = resp.encode();
        assert_eq!(&bytes[..2], b"r\x02");
        assert_eq!(bytes.len(), 2 + postcard::to_stdvec(&resp).expect("postcard").len());
        assert_eq!(SyncResponse::decode(&bytes), Ok(resp));
        // A plain body is still checked: truncated is corrupt, not a panic.
        assert_eq!(SyncResponse::decode(&bytes[..3]), Err(DecodeError::Corrupt));
        assert_eq!(SyncRequest::decode(&bytes), Err(DecodeError::NotSync));
    }

    #[test]
    fn a_document_travels_as_bundles_of_causal_prefixes_and_loads_piece_by_piece() {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        for i in 0..40 {
            for j in 0..20 {
                doc.put(automerge::ROOT, format!("m/{i}/{j}"), format!("present {i} {j}"))
                    .expect("put");
            }
            doc.commit();
        }
        let doc = doc.document().clone();
        let hashes: Vec<_> = doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
        let budget = doc.save().len() / 4;
        let mut receiver = automerge::Automerge::new();
        let mut known: Vec<Hash> = Vec::new();
        let mut at = 0;
        let mut pieces = 0;
        while at < hashes.len() {
            let (n, bytes) = fitting_prefix(&doc, &hashes[at..], budget).expect("a piece");
            assert!(
                n >= 1 && (bytes.len() <= budget || n == 1),
                "piece of {n}: {} B",
                bytes.len()
            );
            assert!(has_bundle(&bytes));
            known = pushed_heads(&known, &bytes).expect("the piece parses");
            receiver.load_incremental(&bytes).expect("a prefix loads");
            assert!(automerge::ReadDoc::get_missing_deps(&receiver, &[]).is_empty());
            assert_eq!(known, {
                let mut h = hashes_to_wire(&receiver.get_heads());
                h.sort();
                h
            });
            at += n;
            pieces += 1;
        }
        assert!(pieces >= 4, "{pieces} pieces");
        assert_eq!(receiver.get_heads(), doc.get_heads());
        assert!(!has_bundle(&doc.save()));
    }

    #[test]
    fn compact_bodies_leave_out_trailing_zeros_and_decode_to_the_same_message() {
        let resp = SyncResponse {
            results: vec![DocResult {
                outcome: Outcome::Accepted,
                heads: vec![],
                data: vec![],
            }],
            updates: vec![],
            cursor: 300,
            more: false,
        };
        let full = resp.encode();
        let compact = resp.encode_compact();
        assert_eq!(compact.len() + 1, full.len(), "`more: false` left out");
        assert_eq!(SyncResponse::decode_compact(&compact), Ok(resp.clone()));
        assert_eq!(SyncResponse::decode_compact(&full), Ok(resp));
        // The full path stays strict: a compact body is not one of its messages.
        assert_eq!(SyncResponse::decode(&compact), Err(DecodeError::Corrupt));
        let req = SyncRequest {
            cursor: 0,
            docs: vec![],
            pending_changes: 0,
            app_version: String::new(),
            max_response_bytes: 0,
        };
        // Every field zero: four bytes left out of five, the cursor's stays.
        assert_eq!(req.encode_compact(), b"q\x02\x00".to_vec());
        assert_eq!(SyncRequest::decode_compact(&req.encode_compact()), Ok(req.clone()));
        let with_data = SyncRequest {
            docs: vec![DocPush {
                doc: "roster:2025:03434".into(),
                base: vec![],
                heads: vec![],
                data: vec![1, 0, 0],
            }],
            pending_changes: 1,
            ..req
        };
        assert_eq!(SyncRequest::decode_compact(&with_data.encode_compact()), Ok(with_data));
    }

    #[test]
    fn pushed_heads_are_the_changes_no_other_pushed_change_depends_on() {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "a", 1).expect("put");
        let base = doc.get_heads();
        doc.put(automerge::ROOT, "b", 2).expect("put");
        doc.put(automerge::ROOT, "c", 3).expect("put");
        let heads = doc.get_heads();
        let mut data = Vec::new();
        for c in doc.get_changes(&base) {
            data.extend_from_slice(c.raw_bytes());
        }
        // The base is a dependency of the first pushed change: it is not a head.
        assert_eq!(
            pushed_heads(&hashes_to_wire(&base), &data),
            Some(hashes_to_wire(&heads))
        );
        assert_eq!(pushed_heads(&[], &data), Some(hashes_to_wire(&heads)));
        // A base head the changes do not depend on stays a head.
        let other = [7u8; 32];
        let mut want = hashes_to_wire(&heads);
        want.push(other);
        want.sort();
        assert_eq!(pushed_heads(&[other], &data), Some(want));
        // A whole saved document: its heads.
        assert_eq!(pushed_heads(&[], &doc.save()), Some(hashes_to_wire(&heads)));
        // Garbage and a cut chunk do not parse.
        assert_eq!(pushed_heads(&[], &data[..data.len() - 1]), None);
        assert_eq!(pushed_heads(&[], b"not a change at all"), None);
    }
}
