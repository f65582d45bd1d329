//! The cargo-fuzz targets (`sync_core::fuzz`, run by `fuzz/` on nightly) on the stable
//! toolchain: a bounded property-test run in every `cargo test`, plus a replay of every
//! kept input under `tests/fixtures/fuzz/TARGET/` (seeds and every input that once
//! broke a target).
//!
//! The run is seeded by proptest (a failure prints the seed and the shrunk input, and
//! proptest keeps it in `proptest-regressions/`); make it longer with
//! `PROPTEST_CASES=100000 cargo test -p sync-core --test fuzz_targets`.

use std::path::PathBuf;

use proptest::prelude::*;
use sync_core::fuzz::{seeds, TARGETS};

fn config() -> ProptestConfig {
    ProptestConfig {
        // Bounded: a few seconds per target on 2 shared cores (debug build).
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(4000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn target(name: &str) -> fn(&[u8]) {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// A seed of `name`, mutated: bytes overwritten, a range removed, bytes inserted, cut short.
fn mutated(name: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let pool: Vec<Vec<u8>> = seeds()
        .into_iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .collect();
    assert!(!pool.is_empty(), "no seed for {name}");
    (
        0..pool.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        prop::option::of((any::<prop::sample::Index>(), 0usize..64)),
        prop::option::of((any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..16))),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(move |(i, writes, remove, insert, cut)| {
            let mut b = pool[i].clone();
            for (at, byte) in writes {
                if !b.is_empty() {
                    let at = at.index(b.len());
                    b[at] = byte;
                }
            }
            if let Some((at, n)) = remove {
                if !b.is_empty() {
                    let at = at.index(b.len());
                    let end = (at + n).min(b.len());
                    b.drain(at..end);
                }
            }
            if let Some((at, bytes)) = insert {
                let at = at.index(b.len() + 1);
                b.splice(at..at, bytes);
            }
            if let Some(cut) = cut {
                let len = cut.index(b.len() + 1);
                b.truncate(len);
            }
            b
        })
}

macro_rules! fuzz_target_tests {
    ($($name:ident),+) => { $(
        mod $name {
            use super::*;
            proptest! {
                #![proptest_config(config())]
                #[test]
                fn random_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
                    target(stringify!($name))(&data);
                }
                #[test]
                fn mutated_valid_inputs(data in mutated(stringify!($name))) {
                    target(stringify!($name))(&data);
                }
            }
        }
    )+ };
}

fuzz_target_tests!(sync_request, sync_response, bundle, document, enroll_json, part);

#[test]
fn the_seeds_are_valid_inputs_of_their_target() {
    use sync_core::protocol::{SyncRequest, SyncResponse};
    for (name, seed) in seeds() {
        let ok = match name {
            "sync_request" => SyncRequest::decode(&seed).is_ok(),
            "sync_response" => SyncResponse::decode(&seed).is_ok(),
            "bundle" => sync_core::bundle::unseal(&seed[..4].try_into().expect("magic"), &seed).is_ok(),
            // Changes after a head decode alone (and wait for their dependencies).
            "document" => automerge::Automerge::new().load_incremental(&seed).is_ok(),
            "enroll_json" => serde_json::from_slice::<sync_core::protocol::EnrollRequest>(&seed).is_ok(),
            "part" => {
                sync_core::protocol::PartHead::decode(&seed).is_ok()
                    || sync_core::protocol::PartAnswerHead::decode(&seed).is_ok()
            }
            _ => false,
        };
        assert!(ok, "seed of {name} does not decode");
    }
}

/// Every file kept under `tests/fixtures/fuzz/TARGET/` runs through its target.
#[test]
fn every_kept_fuzz_input_replays_without_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut replayed = 0;
    for (name, f) in TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("fixture entry").path();
            let data = std::fs::read(&path).expect("read fixture");
            f(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no fixture under {}", root.display());
}
