//! Files written for carrying on a USB stick or SD card.

use std::io::Write;
use std::path::Path;

/// Writes through a temporary file, fsync and rename: a stick pulled out mid-write
/// leaves no half-written file under the final name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
