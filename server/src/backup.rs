//! Backup and restore of the embedded SQLite store (`diemdanh-server backup` and
//! `restore`), and the lock by which a restore knows a server is running.
//!
//! `serve` holds a shared lock on `DATA/diemdanh.lock` for as long as it runs (shared:
//! the lock says "in use", it does not stop a second process the store itself can
//! serialise). `restore` takes it exclusively, so it refuses while a server runs and a
//! server does not start in the middle of a restore. The operating system drops the lock
//! when the process ends, however it ends: no stale lock after a crash.
//!
//! Restore writes the file beside the store, checks that copy (an SQLite database,
//! `PRAGMA integrity_check`, diemdanh's tables, a schema version this build knows), syncs
//! it, and renames it over the store. The store it replaces is renamed aside with its
//! write-ahead log (`diemdanh.sqlite.replaced-TIME` and `...-wal`), never deleted; a stale
//! `-shm` is removed (it is only an index of the old WAL).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::sqlite::{self, BackupInfo, FILE};

/// The lock file in the data folder.
pub const LOCK_FILE: &str = "diemdanh.lock";

/// A running server's hold on its data folder; released when dropped.
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
}

fn open_lock(dir: &Path) -> Result<File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(|e| format!("cannot open {}: {e}", dir.join(LOCK_FILE).display()))
}

/// Taken by `serve` on its data folder. A file system without locks only costs the
/// protection: a warning, and the server starts.
pub fn lock_for_serve(dir: &Path) -> Result<Option<ServeLock>, String> {
    let file = open_lock(dir)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(ServeLock { _file: file })),
        Err(TryLockError::WouldBlock) => Err(format!(
            "a restore is running on {}: wait for it to finish, then start the server",
            dir.display()
        )),
        Err(TryLockError::Error(e)) => {
            tracing::warn!(error = %e, "cannot lock the data folder; restore cannot tell that this server runs");
            Ok(None)
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub store: PathBuf,
    pub bytes: u64,
    pub schema_version: i64,
    /// Where the store that was replaced now is (`--force` on a folder that held one).
    pub replaced: Option<PathBuf>,
}

/// Replaces the store in `dir` by the backup `from` (see the module's comment).
pub fn restore(dir: &Path, from: &Path, force: bool, now: i64) -> Result<Restored, String> {
    let meta = std::fs::metadata(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", from.display()));
    }
    let lock = open_lock(dir)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(format!(
                "a diemdanh-server is running on {}: stop it first (systemctl stop diemdanh-server), then restore",
                dir.display()
            ))
        }
        Err(TryLockError::Error(e)) => {
            return Err(format!(
                "cannot lock {} to make sure no server runs on it: {e}",
                dir.join(LOCK_FILE).display()
            ))
        }
    }
    let mut held: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK_FILE)
        .collect();
    held.sort();
    if !held.is_empty() && !force {
        return Err(format!(
            "{} is not empty (it holds {}): restore into an empty folder, or pass --force to replace its store (the replaced files are kept beside it)",
            dir.display(),
            held.join(", ")
        ));
    }
    let store = dir.join(FILE);
    let partial = dir.join(format!("{FILE}.restore-partial"));
    let _ = std::fs::remove_file(&partial);
    let checked = (|| -> Result<BackupInfo, String> {
        std::fs::copy(from, &partial)
            .map_err(|e| format!("cannot copy {} into {}: {e}", from.display(), dir.display()))?;
        // The copy is checked, not `from`: these are the bytes that become the store.
        let info = sqlite::check_store_file(&partial).map_err(|e| {
            e.to_string()
                .replace(&partial.display().to_string(), &from.display().to_string())
        })?;
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", partial.display()))?;
        Ok(info)
    })();
    let info = match checked {
        Ok(info) => info,
        Err(e) => {
            for p in [partial.clone(), side(&partial, "-wal"), side(&partial, "-shm")] {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    let mut replaced = None;
    if store.exists() {
        let aside = dir.join(format!("{FILE}.replaced-{now}"));
        rename(&store, &aside)?;
        if side(&store, "-wal").exists() {
            rename(&side(&store, "-wal"), &side(&aside, "-wal"))?;
        }
        replaced = Some(aside);
    }
    for stale in [side(&store, "-shm"), side(&store, "-journal")] {
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|e| format!("cannot remove {}: {e}", stale.display()))?;
        }
    }
    rename(&partial, &store)?;
    sqlite::sync_parent(&store);
    drop(lock);
    Ok(Restored {
        store,
        bytes: info.bytes,
        schema_version: info.schema_version,
        replaced,
    })
}

fn side(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::rename(from, to).map_err(|e| format!("cannot rename {} to {}: {e}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store_with_a_code(dir: &Path) {
        let s = crate::SqliteStore::open(dir).expect("store");
        s.create_enroll_code("2025:03434", "hash-1", 1).expect("code");
    }

    #[test]
    fn a_backup_restores_into_an_empty_folder_and_a_full_one_only_with_force() {
        let tmp = tempfile::tempdir().expect("tmp");
        let live = tmp.path().join("live");
        store_with_a_code(&live);
        let out = tmp.path().join("copy.sqlite");
        let info = sqlite::backup(&live, &out).expect("backup");
        assert_eq!(info.schema_version, sqlite::schema_version());
        assert!(info.bytes > 0);
        assert!(!sqlite::partial_path(&out).exists());

        let fresh = tmp.path().join("fresh");
        let r = restore(&fresh, &out, false, 100).expect("restore");
        assert!(r.replaced.is_none());
        let codes: i64 = rusqlite::Connection::open(fresh.join(FILE))
            .expect("open")
            .query_row("SELECT COUNT(*) FROM enroll_codes", [], |r| r.get(0))
            .expect("count");
        assert_eq!(codes, 1);

        let err = restore(&live, &out, false, 100).expect_err("not empty");
        assert!(err.contains("not empty") && err.contains("--force"), "{err}");
        let r = restore(&live, &out, true, 100).expect("forced");
        let aside = r.replaced.expect("kept aside");
        assert!(aside.exists(), "the replaced store is kept");
        crate::SqliteStore::open(&live).expect("the restored store opens");
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_with_the_reason() {
        let tmp = tempfile::tempdir().expect("tmp");
        let text = tmp.path().join("notes.txt");
        std::fs::write(&text, "not a database at all, just some text ".repeat(200)).expect("write");
        let err = restore(&tmp.path().join("a"), &text, false, 1).expect_err("text");
        assert!(
            err.contains("not a diemdanh store") && err.contains("not an SQLite database"),
            "{err}"
        );
        assert!(err.contains("notes.txt"), "{err}");
        assert_eq!(
            std::fs::read_dir(tmp.path().join("a")).expect("dir").count(),
            1,
            "only the lock file is left"
        );

        let other = tmp.path().join("other.sqlite");
        rusqlite::Connection::open(&other)
            .expect("open")
            .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 3;")
            .expect("other db");
        let err = restore(&tmp.path().join("b"), &other, false, 1).expect_err("other db");
        assert!(err.contains("without diemdanh's tables"), "{err}");

        let newer = tmp.path().join("newer.sqlite");
        let live = tmp.path().join("live");
        store_with_a_code(&live);
        sqlite::backup(&live, &newer).expect("backup");
        rusqlite::Connection::open(&newer)
            .expect("open")
            .pragma_update(None, "user_version", sqlite::schema_version() + 1)
            .expect("bump");
        let err = restore(&tmp.path().join("c"), &newer, false, 1).expect_err("newer");
        assert!(err.contains("newer than this diemdanh-server"), "{err}");
    }

    #[test]
    fn restore_refuses_while_a_server_holds_the_folder() {
        let tmp = tempfile::tempdir().expect("tmp");
        let live = tmp.path().join("live");
        store_with_a_code(&live);
        let out = tmp.path().join("copy.sqlite");
        sqlite::backup(&live, &out).expect("backup");
        let held = lock_for_serve(&live).expect("lock").expect("locks work here");
        let err = restore(&live, &out, true, 1).expect_err("running");
        assert!(err.contains("is running"), "{err}");
        drop(held);
        restore(&live, &out, true, 1).expect("after the server stopped");
    }
}
