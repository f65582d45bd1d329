//! The device store encrypted at rest (SQLCipher, feature `sqlcipher`):
//! `cargo test -p sync-core --features sqlcipher --test encrypted_store`.
//! Without the feature, a key is refused plainly instead of being ignored.

use std::path::Path;

use sync_core::device::Device;
use sync_core::model::{Cadre, Gender};
use sync_core::Error;

const NAME: &str = "Lò Thị Hoa";

#[cfg_attr(not(feature = "sqlcipher"), allow(dead_code))]
fn cadre() -> Cadre {
    Cadre {
        name: NAME.into(),
        gender: Gender::Female,
        birth_year: 1994,
        ethnicity: Some("03".into()),
        category: None,
        position: None,
        qualification: None,
        theory_level: None,
        state_management: None,
    }
}

/// Every file of the store (main file, WAL, shared memory) as bytes.
fn store_bytes(home: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(home)
        .expect("home")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("device.sqlite"))
        })
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("read store file")))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(feature = "sqlcipher")]
#[test]
fn the_store_is_unreadable_without_its_key_and_a_wrong_key_is_a_clear_error() {
    for key in [
        "a passphrase, as DIEMDANH_DB_KEY gives it",
        // 32 random bytes in hex, as an app keeps it: SQLCipher's raw key.
        "2dd29ca851e7b56e4697b0e1f08507293d761a05ce4d1b628663f411a8086d99",
    ] {
        one_store(key);
    }
}

#[cfg(feature = "sqlcipher")]
fn one_store(key: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let home = dir.path().join("tablet");
    let device_id = Device::open_with_key(&home, Some(key))
        .expect("create encrypted")
        .device_id()
        .to_string();
    {
        // The rows an enrolment writes, through the encrypted store itself: recording
        // needs the device's unit.
        let path = home.join("device.sqlite");
        let conn = sync_core::store::open_connection_with_key(&path, Some(key)).expect("open");
        sync_core::store::set_meta(&conn, "unit", "2025:03434").expect("unit");
        sync_core::store::set_meta(&conn, "token", "t").expect("token");
    }
    let cadre_id = Device::open_with_key(&home, Some(key))
        .expect("reopen")
        .add_cadre("2025:03434", cadre())
        .expect("record a cadre with her ethnicity");

    // On disk: no SQLite header, no name, no ethnicity code next to a key, in any file.
    let files = store_bytes(&home);
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        assert!(!bytes.starts_with(b"SQLite format 3"), "{path} is plain SQLite");
        assert!(
            !contains(bytes, NAME.as_bytes()),
            "{path} holds the cadre's name in clear"
        );
        assert!(
            !contains(bytes, b"\"ethnicity\""),
            "{path} holds a cadre field in clear"
        );
        assert!(
            !contains(bytes, device_id.as_bytes()),
            "{path} holds the device id in clear"
        );
    }

    // A wrong key, and no key, are clear errors that change nothing.
    match Device::open_with_key(&home, Some("not the key")) {
        Err(e @ Error::WrongKey { key_given: true }) => {
            assert!(e.to_string().contains("cannot be opened with this key"))
        }
        other => panic!("expected WrongKey, got {other:?}"),
    }
    match Device::open(&home) {
        Err(e @ Error::WrongKey { key_given: false }) => assert!(e.to_string().contains("encrypted")),
        other => panic!("expected WrongKey, got {other:?}"),
    }
    assert_eq!(store_bytes(&home), files, "a failed open wrote nothing");

    // The right key opens everything as it was.
    let d = Device::open_with_key(&home, Some(key)).expect("reopen");
    assert_eq!(d.device_id(), device_id);
    let cadres = d.list_cadres(None).expect("list");
    assert_eq!(cadres.len(), 1);
    assert_eq!(
        (cadres[0].id.as_str(), cadres[0].name.as_str()),
        (cadre_id.as_str(), NAME)
    );
}

#[cfg(not(feature = "sqlcipher"))]
#[test]
fn a_key_without_the_sqlcipher_feature_is_refused_not_ignored() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = dir.path().join("tablet");
    match Device::open_with_key(&home, Some("key")) {
        Err(e @ Error::Invalid(_)) => assert!(e.to_string().contains("no encryption"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nothing was created under that name: the next open without a key is a fresh store.
    let d = Device::open(&home).expect("plain open");
    d.list_cadres(None).expect("list");
    let files = store_bytes(&home);
    assert!(files.iter().any(|(_, b)| b.starts_with(b"SQLite format 3")));
    assert!(!files.iter().any(|(_, b)| contains(b, NAME.as_bytes())));
}
