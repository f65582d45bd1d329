//! The decoders of untrusted bytes, each wrapped as one fuzz target: a function that
//! takes any bytes and panics only on a bug. The same functions run under cargo-fuzz
//! (`fuzz/`, nightly, libFuzzer) and as bounded property tests on stable
//! (`tests/fuzz_targets.rs`, in every `cargo test`), and every input that once broke one
//! is replayed from `tests/fixtures/fuzz/TARGET/` (see docs/RELIABILITY.md).
//!
//! What each target asserts beyond "no panic": a decoder either refuses the input with
//! one of its documented errors, or returns a value that encodes back to something it
//! decodes to the same value (so the server never acts on a half-read message).

use automerge::Automerge;

use crate::bundle::{self, BundleError};
use crate::docs::{self, DocId};
use crate::protocol::{DecodeError, EnrollRequest, PartAnswerHead, PartHead, SyncRequest, SyncResponse};

/// A sync request body, as `POST /v1/sync` reads it before anything else, and as
/// `POST /` reads a compact one.
pub fn sync_request(data: &[u8]) {
    match SyncRequest::decode(data) {
        Ok(req) => assert_eq!(SyncRequest::decode(&req.encode()).as_ref(), Ok(&req)),
        Err(e) => assert_documented(&e),
    }
    match SyncRequest::decode_compact(data) {
        Ok(req) => assert_eq!(SyncRequest::decode_compact(&req.encode_compact()).as_ref(), Ok(&req)),
        Err(e) => assert_documented(&e),
    }
}

/// A sync response body, as a device reads it (full and compact).
pub fn sync_response(data: &[u8]) {
    match SyncResponse::decode(data) {
        Ok(resp) => assert_eq!(SyncResponse::decode(&resp.encode()).as_ref(), Ok(&resp)),
        Err(e) => assert_documented(&e),
    }
    match SyncResponse::decode_compact(data) {
        Ok(resp) => assert_eq!(SyncResponse::decode_compact(&resp.encode_compact()).as_ref(), Ok(&resp)),
        Err(e) => assert_documented(&e),
    }
}

/// A part of an exchange (`POST /p`) as the server reads it, and a part's answer as a
/// device reads it; whole or cut after any byte.
pub fn part(data: &[u8]) {
    // The same value back (a varint may be written longer than needed, so not always
    // the same bytes), and the bytes after the head untouched.
    match PartHead::decode(data) {
        Ok((head, bytes)) => assert_eq!(PartHead::decode(&head.encode(bytes)), Ok((head, bytes))),
        Err(e) => assert_documented(&e),
    }
    match PartAnswerHead::decode(data) {
        Ok((head, bytes)) => assert_eq!(PartAnswerHead::decode(&head.encode(bytes)), Ok((head, bytes))),
        Err(e) => assert_documented(&e),
    }
}

fn assert_documented(e: &DecodeError) {
    // Every refusal says what is wrong in words a 400 body can carry.
    assert!(!e.to_string().is_empty());
}

/// The key the bundle targets verify with: a wrong seal must be refused, never applied.
const BUNDLE_KEY: [u8; 32] = [7; 32];

/// A bundle file of either direction: unsealed, verified, and its body decoded.
pub fn bundle(data: &[u8]) {
    for magic in [bundle::DEVICE_TO_SERVER, bundle::SERVER_TO_DEVICE] {
        match bundle::unseal(magic, data) {
            Ok(u) => {
                // Whatever the unsealed parts, sealing them again gives the same bytes
                // only when the MAC is right: a forged seal never verifies.
                let resealed = bundle::seal(magic, &u.device_id, &BUNDLE_KEY, u.body);
                assert_eq!(u.verify(&BUNDLE_KEY).is_ok(), resealed == data);
                if magic == bundle::DEVICE_TO_SERVER {
                    sync_request(u.body);
                } else {
                    sync_response(u.body);
                }
            }
            Err(BundleError::NotBundle | BundleError::Corrupt | BundleError::BadSeal) => {}
        }
    }
}

/// Bytes a device or the server loads as a document: a stored snapshot, a stored chunk,
/// a pushed document or pushed changes (`load_incremental` onto an empty document, as
/// the server does for a first push). If they load, the schema check of every document
/// kind runs on them and answers, with a reason when it refuses.
pub fn document(data: &[u8]) {
    let mut doc = Automerge::new();
    if doc.load_incremental(data).is_err() {
        return;
    }
    // A full load of the same bytes must not panic either (snapshots are loaded so).
    let _ = Automerge::load(data);
    let unit = "2025:03434";
    let course_id: DocId = format!("course:{unit}:c1")
        .parse()
        .unwrap_or_else(|_| unreachable!("valid id"));
    for id in [
        format!("roster:{unit}"),
        format!("course:{unit}:c1"),
        format!("att:{unit}:c1:0"),
    ] {
        let id: DocId = id.parse().unwrap_or_else(|_| unreachable!("valid id"));
        let course = docs::read_course(&course_id, &doc).ok();
        if let Err(v) = docs::read(&id, &doc, course.as_ref()) {
            assert!(!v.reason.is_empty());
        }
    }
}

/// The enrolment body, JSON from anyone who can reach the server.
pub fn enroll_json(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<EnrollRequest>(data) {
        let again = serde_json::to_vec(&req).unwrap_or_default();
        assert_eq!(serde_json::from_slice::<EnrollRequest>(&again).ok(), Some(req));
    }
}

/// A fuzz target: any bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for the fixture replay and the property tests.
pub const TARGETS: &[(&str, Target)] = &[
    ("sync_request", sync_request),
    ("sync_response", sync_response),
    ("bundle", bundle),
    ("document", document),
    ("enroll_json", enroll_json),
    ("part", part),
];

/// Valid inputs for each target, for mutation-based runs to start from: a roster saved
/// whole and as changes, requests and responses carrying them, sealed bundles, an
/// enrolment body.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use automerge::transaction::Transactable;

    use crate::protocol::{DocPush, DocResult, DocUpdate, Outcome};

    let cadre = crate::model::Cadre {
        name: "Lò Thị Hoa".into(),
        gender: crate::model::Gender::Female,
        birth_year: 1994,
        ethnicity: Some("03".into()),
        category: None,
        position: None,
        qualification: None,
        theory_level: None,
        state_management: None,
    };
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    let _ = tx.put(automerge::ROOT, docs::cadre_key("c1"), docs::encode(&cadre));
    let _ = tx.commit();
    let first = doc.get_heads();
    let mut tx = doc.transaction();
    let _ = tx.put(automerge::ROOT, docs::cadre_key("c2"), docs::encode(&cadre));
    let _ = tx.commit();
    let saved = doc.save();
    let changes = doc.save_after(&first);
    let heads = crate::protocol::hashes_to_wire(&doc.get_heads());
    let request = SyncRequest {
        cursor: 3,
        docs: vec![DocPush {
            doc: "roster:2025:03434".into(),
            base: crate::protocol::hashes_to_wire(&first),
            heads: Vec::new(),
            data: changes.clone(),
        }],
        pending_changes: 1,
        app_version: "0.1.0".into(),
        max_response_bytes: 1 << 20,
    }
    .encode();
    let response = SyncResponse {
        results: vec![DocResult {
            outcome: Outcome::Refused {
                reason: "c/c2: unknown".into(),
                keys: vec!["c/c2".into()],
            },
            heads: heads.clone(),
            data: saved.clone(),
        }],
        updates: vec![DocUpdate {
            doc: "course:2025:03434:c1".into(),
            heads,
            data: changes.clone(),
        }],
        cursor: 9,
        more: false,
    }
    .encode();
    let enroll = br#"{"code":"ABCDE-FGHJK","device_id":"dev1","actor":"0a0b","app_version":"0.1.0"}"#.to_vec();
    vec![
        ("sync_request", request.clone()),
        ("sync_response", response.clone()),
        (
            "bundle",
            bundle::seal(bundle::DEVICE_TO_SERVER, "dev1", &BUNDLE_KEY, &request),
        ),
        (
            "bundle",
            bundle::seal(bundle::SERVER_TO_DEVICE, "dev1", &BUNDLE_KEY, &response),
        ),
        ("document", saved),
        ("document", changes),
        ("enroll_json", enroll),
        (
            "part",
            PartHead {
                id: crate::protocol::exchange_id(&request),
                total: request.len() as u64,
                offset: 2,
                from: 0,
                window: 4096,
            }
            .encode(&request[2..]),
        ),
        (
            "part",
            PartAnswerHead {
                have: request.len() as u64,
                reply_total: response.len() as u64,
                from: 0,
            }
            .encode(&response),
        ),
    ]
}
