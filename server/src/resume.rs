//! What the server keeps of exchanges a link cut, so the device goes on from the byte
//! where it stopped instead of from the start (docs/PROTOCOL.md, "Resumable exchanges").
//!
//! Per device one exchange: the body bytes that arrived (of a `POST /` cut in the middle,
//! or of the parts sent to `POST /p`), and once it was answered, the reply, which the
//! device fetches in windows. Kept in memory, bounded in bytes and time: a server that
//! restarted, or another node, answers "nothing held" and the device sends the exchange
//! again, which is safe (exchanges are idempotent), only longer. Nothing here is ever
//! the only copy of anything recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sync_core::protocol::{exchange_id, PartAnswerHead, PartHead};

/// Most bytes kept for all devices together; the entries touched longest ago go first.
pub const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;
/// How long an exchange in parts (or a cut one) is kept after its last part: a device on
/// a cutting link retries within seconds to minutes.
pub const PART_TTL: Duration = Duration::from_secs(600);
/// How long the reply of a plain `POST /` exchange is kept in case it was cut: long
/// enough for the device's retry, short enough that a busy node's memory is back soon.
pub const REPLY_TTL: Duration = Duration::from_secs(30);
/// Replies of plain exchanges smaller than this are not kept: a link that cut them
/// carries almost nothing, and most exchanges are this small.
pub const KEEP_REPLY_MIN: usize = 2048;
/// A cut `POST /` body shorter than this is not kept: repeating it costs little.
pub const KEEP_CUT_MIN: usize = 512;

#[derive(Debug)]
struct Entry {
    /// None: from a `POST /` cut in the middle, whose id is not known until the device
    /// names it; checked against the whole body once it is complete.
    id: Option<[u8; 8]>,
    total: u64,
    body: Vec<u8>,
    /// The answer once the exchange ran.
    reply: Option<Arc<Vec<u8>>>,
    /// The assembled body is being run now (a second part for it waits for the reply).
    running: bool,
    touched: Instant,
    ttl: Duration,
}

impl Entry {
    fn new(id: Option<[u8; 8]>, total: u64, body: Vec<u8>, reply: Option<Arc<Vec<u8>>>, ttl: Duration) -> Entry {
        Entry {
            id,
            total,
            body,
            reply,
            running: false,
            touched: Instant::now(),
            ttl,
        }
    }

    fn bytes(&self) -> usize {
        self.body.capacity() + self.reply.as_ref().map_or(0, |r| r.len())
    }
}

/// What to do with a part.
#[derive(Debug)]
pub enum Step {
    /// Answer this (what is held, or a window of the reply).
    Answer(Vec<u8>),
    /// The body is complete: run it as an exchange, then [`Resume::answered`].
    Run(Vec<u8>),
}

#[derive(Debug, Default)]
pub struct Resume {
    inner: Mutex<HashMap<String, Entry>>,
}

impl Resume {
    pub fn new() -> Arc<Resume> {
        Arc::new(Resume::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves at worst a stale entry: go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops what expired, then the oldest entries while more than [`MAX_HELD_BYTES`]
    /// are held. Called on every insert and by the server's housekeeping.
    pub fn trim(&self) {
        let mut map = self.lock();
        trim_map(&mut map, Instant::now());
    }

    /// Bytes held now (for tests and the idle-memory figures).
    pub fn held_bytes(&self) -> usize {
        self.lock().values().map(Entry::bytes).sum()
    }

    /// A `POST /` body that stopped after `prefix` of its `total` bytes.
    pub fn keep_cut(&self, device: &str, total: u64, prefix: Vec<u8>) {
        if prefix.len() < KEEP_CUT_MIN || prefix.len() as u64 >= total {
            return;
        }
        self.insert(device, Entry::new(None, total, prefix, None, PART_TTL));
    }

    /// The reply of a `POST /` exchange, kept a short while in case the link cuts it.
    pub fn keep_reply(&self, device: &str, body: &[u8], reply: &[u8]) {
        if reply.len() < KEEP_REPLY_MIN {
            return;
        }
        self.insert(
            device,
            Entry::new(
                Some(exchange_id(body)),
                body.len() as u64,
                Vec::new(),
                Some(Arc::new(reply.to_vec())),
                REPLY_TTL,
            ),
        );
    }

    fn insert(&self, device: &str, entry: Entry) {
        let mut map = self.lock();
        map.insert(device.to_string(), entry);
        trim_map(&mut map, Instant::now());
    }

    /// A part from `device`: its head and the bytes that arrived (all of them, or what
    /// came before a cut, `complete` false, when no answer can go back anyway).
    pub fn part(&self, device: &str, head: &PartHead, bytes: &[u8], complete: bool) -> Step {
        let now = Instant::now();
        let mut map = self.lock();
        let held = map.get(device).is_some_and(|e| {
            e.total == head.total && e.id.is_none_or(|id| id == head.id) && now.duration_since(e.touched) < e.ttl
        });
        if !held {
            if head.offset > 0 {
                // Not this exchange, or it expired: the device starts again from 0.
                map.remove(device);
                return Step::Answer(answer(0, None, 0, 0));
            }
            map.insert(
                device.to_string(),
                Entry::new(Some(head.id), head.total, Vec::new(), None, PART_TTL),
            );
        }
        let Some(entry) = map.get_mut(device) else {
            return Step::Answer(answer(0, None, 0, 0));
        };
        entry.id = Some(head.id);
        entry.touched = now;
        entry.ttl = PART_TTL;
        if let Some(reply) = &entry.reply {
            return Step::Answer(answer(head.total, Some(reply), head.from, head.window));
        }
        if entry.running {
            return Step::Answer(answer(entry.body.len() as u64, None, 0, 0));
        }
        // Append what goes past the bytes held: a part may repeat some of them.
        let have = entry.body.len() as u64;
        if head.offset <= have {
            let skip = usize::try_from(have - head.offset).unwrap_or(usize::MAX);
            if skip < bytes.len() {
                let room = usize::try_from(head.total - have).unwrap_or(usize::MAX);
                let new = &bytes[skip..];
                entry.body.extend_from_slice(&new[..new.len().min(room)]);
            }
        }
        let have = entry.body.len() as u64;
        if have < head.total || !complete {
            let out = answer(have, None, 0, 0);
            trim_map(&mut map, now);
            return Step::Answer(out);
        }
        entry.running = true;
        Step::Run(std::mem::take(&mut entry.body))
    }

    /// The exchange assembled from `head`'s parts was answered `reply`: keep it and
    /// answer the first window.
    pub fn answered(&self, device: &str, head: &PartHead, reply: &[u8]) -> Vec<u8> {
        let reply = Arc::new(reply.to_vec());
        // A reply of this run: from its first byte, whatever the device held of another.
        let out = answer(head.total, Some(&reply), 0, head.window);
        self.insert(
            device,
            Entry::new(Some(head.id), head.total, Vec::new(), Some(reply), PART_TTL),
        );
        out
    }

    /// The exchange assembled from the device's parts failed (its error is the answer):
    /// what was held of it goes.
    pub fn forget(&self, device: &str) {
        self.lock().remove(device);
    }
}

fn answer(have: u64, reply: Option<&Arc<Vec<u8>>>, from: u64, window: u64) -> Vec<u8> {
    let Some(reply) = reply else {
        return PartAnswerHead {
            have,
            reply_total: 0,
            from: 0,
        }
        .encode(&[]);
    };
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(reply.len());
    let window = match usize::try_from(window) {
        Ok(0) | Err(_) => reply.len(),
        Ok(w) => w,
    };
    let to = from.saturating_add(window).min(reply.len());
    PartAnswerHead {
        have,
        reply_total: reply.len() as u64,
        from: from as u64,
    }
    .encode(&reply[from..to])
}

fn trim_map(map: &mut HashMap<String, Entry>, now: Instant) {
    map.retain(|_, e| now.duration_since(e.touched) < e.ttl);
    let mut held: usize = map.values().map(Entry::bytes).sum();
    // Bounded: every turn removes an entry.
    while held > MAX_HELD_BYTES {
        let Some(oldest) = map
            .iter()
            .filter(|(_, e)| !e.running)
            .min_by_key(|(_, e)| e.touched)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        if let Some(e) = map.remove(&oldest) {
            held -= e.bytes();
        }
    }
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(body: &[u8], offset: u64, from: u64, window: u64) -> PartHead {
        PartHead {
            id: exchange_id(body),
            total: body.len() as u64,
            offset,
            from,
            window,
        }
    }

    fn held(out: &Step) -> (PartAnswerHead, Vec<u8>) {
        let Step::Answer(bytes) = out else {
            panic!("expected an answer, got {out:?}")
        };
        let (h, tail) = PartAnswerHead::decode(bytes).expect("answer decodes");
        (h, tail.to_vec())
    }

    #[test]
    fn parts_assemble_repeats_are_skipped_and_the_reply_comes_in_windows() {
        let r = Resume::default();
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let (h, _) = held(&r.part("d", &head(&body, 0, 0, 0), &body[..400], true));
        assert_eq!(h.have, 400);
        // A repeat overlapping what is held adds only what is new.
        let (h, _) = held(&r.part("d", &head(&body, 300, 0, 0), &body[300..700], true));
        assert_eq!(h.have, 700);
        // A gap is not filled: the answer says where to go on from.
        let (h, _) = held(&r.part("d", &head(&body, 800, 0, 0), &body[800..], true));
        assert_eq!(h.have, 700);
        let Step::Run(whole) = r.part("d", &head(&body, 700, 0, 0), &body[700..], true) else {
            panic!("complete body runs")
        };
        assert_eq!(whole, body);
        let reply: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
        let first = r.answered("d", &head(&body, 700, 0, 2000), &reply);
        let (h, tail) = PartAnswerHead::decode(&first).expect("decodes");
        assert_eq!((h.have, h.reply_total), (1000, 5000));
        assert_eq!(tail, &reply[..2000]);
        let (h, tail) = held(&r.part("d", &head(&body, 1000, 2000, 2000), &[], true));
        assert_eq!((h.have, h.reply_total), (1000, 5000));
        assert_eq!(tail, &reply[2000..4000]);
        let (_, tail) = held(&r.part("d", &head(&body, 1000, 4000, 0), &[], true));
        assert_eq!(tail, &reply[4000..]);
    }

    #[test]
    fn a_cut_body_is_adopted_by_the_exchange_that_names_it_and_another_starts_again() {
        let r = Resume::default();
        let body = vec![7u8; 3000];
        r.keep_cut("d", 3000, body[..1200].to_vec());
        let (h, _) = held(&r.part("d", &head(&body, 0, 0, 0), &[], true));
        assert_eq!(h.have, 1200, "the status query finds the cut prefix");
        // Another exchange (other id, same length) after that one adopted the prefix:
        // it starts from nothing.
        let other = vec![8u8; 3000];
        let (h, _) = held(&r.part("d", &head(&other, 1200, 0, 0), &other[1200..], true));
        assert_eq!(h.have, 0);
        // Another device holds nothing.
        let (h, _) = held(&r.part("e", &head(&body, 1200, 0, 0), &body[1200..], true));
        assert_eq!(h.have, 0);
    }

    #[test]
    fn a_part_cut_in_the_middle_keeps_its_bytes_but_does_not_run() {
        let r = Resume::default();
        let body = vec![1u8; 900];
        let (h, _) = held(&r.part("d", &head(&body, 0, 0, 0), &body[..900], false));
        assert_eq!(h.have, 900, "held, though the answer cannot go back");
        assert!(matches!(r.part("d", &head(&body, 900, 0, 0), &[], true), Step::Run(_)));
    }

    #[test]
    fn small_replies_are_not_kept_and_memory_is_bounded() {
        let r = Resume::default();
        r.keep_reply("d", b"req", &[0u8; 100]);
        assert_eq!(r.held_bytes(), 0);
        let big = vec![0u8; 8 * 1024 * 1024];
        for i in 0..10 {
            r.keep_reply(&format!("dev{i}"), b"req", &big);
        }
        assert!(r.held_bytes() <= MAX_HELD_BYTES, "{} held", r.held_bytes());
        assert!(r.held_bytes() >= MAX_HELD_BYTES / 2);
    }
}
