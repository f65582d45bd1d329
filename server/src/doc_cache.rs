//! Documents kept in memory between pushes, so a roll call does not reload (and the
//! server does not re-save) its whole attendance part: loading a 2,520-mark part costs
//! milliseconds, applying a roll call to it a fraction of one.
//!
//! An entry is only ever used for the state it was taken at: each holds the document's
//! `updated_seq`, and the store compares it with the row it reads in the same
//! transaction, so a write by another process (an admin command on the same file) or a
//! rolled-back batch can never be served from here. Bounded by count and dropped after
//! a while without use, so an idle server gives its memory back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use automerge::Automerge;

/// Documents kept at most. A commune's pushes touch two or three documents; 256 covers
/// the documents of every device syncing within a few seconds on one node.
pub const CAPACITY: usize = 256;

/// Entries unused for this long are dropped by [`DocCache::trim`].
pub const IDLE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct DocCache {
    entries: HashMap<String, Entry>,
}

struct Entry {
    seq: i64,
    doc: Automerge,
    used: Instant,
}

impl std::fmt::Debug for DocCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocCache")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl DocCache {
    /// The document as of `seq`: taken out when the caller will change it, else a copy.
    /// An entry of another state is dropped.
    pub fn get(&mut self, key: &str, seq: i64, take: bool) -> Option<Automerge> {
        let entry = self.entries.get_mut(key)?;
        if entry.seq != seq {
            self.entries.remove(key);
            return None;
        }
        if take {
            return self.entries.remove(key).map(|e| e.doc);
        }
        entry.used = Instant::now();
        Some(entry.doc.clone())
    }

    pub fn put(&mut self, key: String, seq: i64, doc: Automerge) {
        if self.entries.len() >= CAPACITY && !self.entries.contains_key(&key) {
            if let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            key,
            Entry {
                seq,
                doc,
                used: Instant::now(),
            },
        );
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Drops entries unused for `idle`.
    pub fn trim(&mut self, idle: Duration) {
        let now = Instant::now();
        self.entries.retain(|_, e| now.duration_since(e.used) < idle);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    use super::*;

    fn doc(v: &str) -> Automerge {
        let mut d = Automerge::new();
        let mut tx = d.transaction();
        tx.put(ROOT, "k", v).expect("put");
        tx.commit();
        d
    }

    #[test]
    fn an_entry_serves_only_the_state_it_was_kept_at() {
        let mut c = DocCache::default();
        c.put("a".into(), 7, doc("x"));
        assert!(c.get("a", 8, false).is_none(), "another sequence is not served");
        assert!(c.get("a", 7, false).is_none(), "and the stale entry is gone");
        c.put("a".into(), 9, doc("y"));
        assert!(c.get("a", 9, false).is_some(), "a copy leaves it in place");
        assert!(c.get("a", 9, true).is_some());
        assert!(c.get("a", 9, true).is_none(), "a taken entry is gone until put back");
    }

    #[test]
    fn the_cache_is_bounded_and_trimmed() {
        let mut c = DocCache::default();
        for i in 0..CAPACITY + 10 {
            c.put(format!("d{i}"), 1, doc("x"));
        }
        assert_eq!(c.len(), CAPACITY);
        c.trim(Duration::ZERO);
        assert!(c.is_empty());
    }
}
