//! Named crash points for the crash tests: `DIEMDANH_FAILPOINT=NAME` (or `NAME@N` for
//! the Nth time the point is reached) makes the process call `std::process::abort()`
//! there, as a `kill -9` at that exact step would. The variable is read once; with it
//! unset a point costs one relaxed atomic load. Aborting (no unwinding, no destructors,
//! no SQLite close) is the point: what survives is what was on disk.
//!
//! The points (docs/RELIABILITY.md lists which test covers each):
//! - `device.before_commit`: a recording operation has written everything into its
//!   SQLite transaction but not committed it;
//! - `device.after_commit`: committed, before the command reports it saved;
//! - `device.after_send`: a sync request went out and the server's answer is coming
//!   back, before the device reads it (client-ffi's transport);
//! - `device.after_reply`: the answer is read, before the device applies it;
//! - `device.before_apply_commit`: the answer is applied in the transaction, not committed;
//! - `server.before_commit`: the server processed a sync in its transaction, not committed;
//! - `server.after_commit`: the server committed, before it replies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub const ENV: &str = "DIEMDANH_FAILPOINT";

struct Armed {
    name: String,
    nth: u32,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let (name, nth) = match spec.split_once('@') {
                Some((name, n)) => (name.to_string(), n.trim().parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed {
                name: name.trim().to_string(),
                nth: nth.max(1),
            })
        })
        .as_ref()
}

/// Aborts the process if `name` is the armed point and this is its Nth hit.
pub fn hit(name: &str) {
    static HITS: AtomicU32 = AtomicU32::new(0);
    let Some(armed) = armed() else {
        return;
    };
    if armed.name == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == armed.nth {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}
