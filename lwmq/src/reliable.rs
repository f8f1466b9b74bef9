//! Reliable request/reply: the counters of REQ resend and REP de-duplication, and the
//! reply cache behind which a REP remembers what it answered (the checkpointing seam).
//!
//! How it works (the state machines are in the REQ/REP patterns):
//!
//! - A REQ with a resend interval ([`crate::Socket::set_req_resend_interval`]) puts a
//!   4-byte request id frame before the empty delimiter of every request (libzmq's
//!   REQ_CORRELATE wire format) and announces a stable random routing id unless one
//!   was set. A request without a reply within the interval is sent again, with the
//!   same id, to the next connected peer in turn; it is sent again at once when the
//!   connection that carried it goes away.
//! - A REP that receives a request whose envelope ends with such an id frame looks the
//!   requester (its routing id, or the envelope a ROUTER in between added) and the id
//!   up in its [`ReplyCache`]: a request it already answered is answered again from the
//!   cache and never reaches the application. Requests without an id (libzmq's plain
//!   REQ) are handled exactly as libzmq's REP does.
//!
//! Threads: the counters are written by the socket's user thread only and read by any
//! thread (`Socket::reqrep_stats`, the introspection thread for `lwmq ls`).

use std::fmt;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashTable};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::Message;
use crate::message::FrameVec;

/// Default number of answered requests a REP remembers
/// ([`crate::Socket::set_rep_cache_size`]).
pub const DEFAULT_REP_CACHE_SIZE: usize = 1024;
/// Default time a REP remembers an answered request
/// ([`crate::Socket::set_rep_cache_age`]).
pub const DEFAULT_REP_CACHE_AGE: Duration = Duration::from_secs(60);
/// Default number of reply bytes a REP remembers at most
/// ([`crate::Socket::set_rep_cache_bytes`]).
pub const DEFAULT_REP_CACHE_BYTES: usize = 64 << 20;
/// Default number of times a REQ with resend sends one request, the first time
/// included ([`crate::Socket::set_req_resend_attempts`]).
pub const DEFAULT_REQ_RESEND_ATTEMPTS: u32 = 3;

/// What REQ resend and REP de-duplication did on one socket, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReqRepStats {
    /// REQ: requests sent again (after the interval, or because their connection went away).
    #[serde(default)]
    pub resends: u64,
    /// REQ: resends that went to another connection than the attempt before.
    #[serde(default)]
    pub failovers: u64,
    /// REQ: replies dropped because they answer no current request (another request's
    /// id, or a second reply to one already answered).
    #[serde(default)]
    pub stale_replies_dropped: u64,
    /// REQ: replies dropped because their envelope is malformed (no 4-byte request id
    /// frame or no empty delimiter where one must be). REP: requests without an empty
    /// delimiter.
    #[serde(default)]
    pub malformed_dropped: u64,
    /// REP: copies of a request dropped because the same request was being handled.
    #[serde(default)]
    pub duplicates_dropped: u64,
    /// REP: copies of an answered request answered from the reply cache (the
    /// application did not see them).
    #[serde(default)]
    pub replies_from_cache: u64,
    /// REQ: exchanges given up (attempts used up, or the receive timeout passed).
    #[serde(default)]
    pub given_up: u64,
}

/// The live counters behind [`ReqRepStats`] (see the module docs for the threads).
#[derive(Debug, Default)]
pub(crate) struct ReqRepCounters {
    resends: AtomicU64,
    failovers: AtomicU64,
    stale_replies_dropped: AtomicU64,
    malformed_dropped: AtomicU64,
    duplicates_dropped: AtomicU64,
    replies_from_cache: AtomicU64,
    given_up: AtomicU64,
}

/// Which counter to add to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Resend,
    Failover,
    StaleReply,
    Malformed,
    Duplicate,
    FromCache,
    GivenUp,
}

impl ReqRepCounters {
    /// Adds one. Only the socket's user thread writes: a load and a store suffice.
    pub(crate) fn add(&self, c: Count) {
        let a = match c {
            Count::Resend => &self.resends,
            Count::Failover => &self.failovers,
            Count::StaleReply => &self.stale_replies_dropped,
            Count::Malformed => &self.malformed_dropped,
            Count::Duplicate => &self.duplicates_dropped,
            Count::FromCache => &self.replies_from_cache,
            Count::GivenUp => &self.given_up,
        };
        a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> ReqRepStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReqRepStats {
            resends: r(&self.resends),
            failovers: r(&self.failovers),
            stale_replies_dropped: r(&self.stale_replies_dropped),
            malformed_dropped: r(&self.malformed_dropped),
            duplicates_dropped: r(&self.duplicates_dropped),
            replies_from_cache: r(&self.replies_from_cache),
            given_up: r(&self.given_up),
        }
    }
}

/// Identifies one request as a REP sees it: who sent it and which request it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// The requester: its routing id, and the envelope frames that ROUTERs in between
    /// added (each length-prefixed). Stable across reconnects when the requester has a
    /// routing id (a REQ with resend always has one).
    pub requester: Bytes,
    /// The request id the requester put in the envelope.
    pub request_id: u32,
    /// A hash of the request's body: a request id that comes again with another body
    /// is a new request (a requester that restarted, or a routing id taken for a
    /// request id), not a copy.
    pub fingerprint: u64,
}

/// Where a REP keeps the replies it sent, so that a copy of an answered request is
/// answered again without the application. The default is [`MemoryReplyCache`]; a user
/// can keep replies somewhere durable (so that a restarted REP still knows them) with
/// [`crate::Socket::set_reply_cache`].
///
/// Called on the socket's user thread only. A cache may forget entries whenever it
/// likes (it bounds its own size and age): a forgotten request is handled again.
pub trait ReplyCache: Send + fmt::Debug {
    /// The reply sent to `key`, if the cache still has it.
    fn get(&mut self, key: &RequestKey) -> Option<Message>;
    /// Remembers `reply` as the one sent to `key` (copying or sharing what it keeps).
    /// Called just before the reply is written. A reply that can never be sent (the
    /// send fails with it) is followed by the application's next reply to the same
    /// request, put under the same key: the later one counts.
    fn put(&mut self, key: &RequestKey, reply: &Message);
    /// Called when the REP has no request to hand over (its receive would block, or
    /// it is about to wait): a cache may finish here work it put off in
    /// [`ReplyCache::put`], out of the round trip's way. The default does nothing.
    fn idle(&mut self) {}
}

/// The default [`ReplyCache`]: in memory, at most `max_entries` replies and
/// [`DEFAULT_REP_CACHE_BYTES`] bytes of them (see [`MemoryReplyCache::with_max_bytes`]),
/// each served for at most `max_age` (the oldest go first; ages are measured on the
/// kernel's coarse clock, to a few milliseconds). A reply larger than the byte bound is
/// not kept.
///
/// Made for the round trip's hot path: a lookup that finds nothing (every request's
/// first copy) reads no clock and allocates nothing. A put reads the coarse clock once
/// and copies the reply into the ring's next place, reusing that place's key and reply
/// buffer (replies of up to 512 bytes are copied into that buffer, larger ones shared):
/// nothing is allocated.
/// The rest of the put (the index, letting the oldest entries go) is done when the REP
/// next has nothing to do ([`ReplyCache::idle`]), or at the next lookup or put if that
/// comes first.
#[derive(Debug)]
pub struct MemoryReplyCache {
    max_entries: usize,
    max_age: Duration,
    max_bytes: usize,
    /// The reply bytes of the entries from `first` to `next`.
    bytes: usize,
    /// The entries, a ring: entry `s` (a sequence number) is at `ring[s & mask]`; those
    /// from `first` to `next` (at most `max_entries`) are in it, live or forgotten. It
    /// grows as entries come, up to `mask + 1` places at most, then its places are
    /// reused.
    ring: Vec<Entry>,
    /// `max_entries` rounded up to a power of two, minus one (a mask, not a division,
    /// on the hot path).
    mask: u64,
    first: u64,
    next: u64,
    /// The sequence numbers of the live entries, by the hash of their key.
    index: HashTable<u64>,
    hasher: DefaultHashBuilder,
    /// How many entries are live.
    live: usize,
    /// The entry last put (at `next - 1`) is in the ring but not yet in the index, nor
    /// has the cache been trimmed since (see [`MemoryReplyCache::settle`]).
    pending: bool,
}

/// One answered request of a [`MemoryReplyCache`].
#[derive(Debug)]
struct Entry {
    key: RequestKey,
    /// The hash of `key` (to find its index slot again without hashing).
    hash: u64,
    /// When it was put, on [`crate::sys::coarse_now`]'s clock.
    at: Duration,
    reply: KeptFrames,
    /// The reply's bytes (counted in `MemoryReplyCache::bytes` while in the ring).
    size: usize,
    /// Still in the index (not replaced by a newer reply to the same key, nor found
    /// too old).
    live: bool,
}

impl MemoryReplyCache {
    /// A cache of at most `max_entries` replies, each kept at most `max_age`.
    pub fn new(max_entries: usize, max_age: Duration) -> MemoryReplyCache {
        MemoryReplyCache {
            max_entries,
            max_age,
            max_bytes: DEFAULT_REP_CACHE_BYTES,
            bytes: 0,
            ring: Vec::new(),
            // One place more than the bound: a put writes its place before the oldest
            // entry goes (see `settle`).
            mask: (max_entries as u64)
                .saturating_add(1)
                .checked_next_power_of_two()
                .map_or(u64::MAX, |p| p - 1),
            first: 0,
            next: 0,
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            live: 0,
            pending: false,
        }
    }

    /// The same cache, bounded to `max_bytes` bytes of replies instead of
    /// [`DEFAULT_REP_CACHE_BYTES`].
    pub fn with_max_bytes(mut self, max_bytes: usize) -> MemoryReplyCache {
        self.max_bytes = max_bytes;
        self
    }

    /// How many replies it holds (some may be too old to be served: they go at the
    /// next put). Finishes the last put first (hence `&mut`).
    pub fn len(&mut self) -> usize {
        self.settle();
        self.live
    }

    /// Whether it holds none.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// The place of entry `seq` in the ring.
    fn place(&self, seq: u64) -> usize {
        place(seq, self.mask)
    }

    /// Takes entry `seq` out of the index (it stays in the ring until its turn).
    fn forget(&mut self, seq: u64) {
        let i = self.place(seq);
        let e = &mut self.ring[i];
        if let Ok(slot) = self.index.find_entry(e.hash, |&s| s == seq) {
            slot.remove();
        }
        e.live = false;
        self.live -= 1;
    }

    /// Lets entries go from the front: forgotten ones, ones older than `max_age`, and
    /// as many as needed to keep at most `max_entries`.
    fn expire(&mut self, now: Duration) {
        while self.first < self.next {
            let front = &self.ring[self.place(self.first)];
            let live = front.live;
            let go = !live
                || self.next - self.first > self.max_entries as u64
                || self.bytes > self.max_bytes
                || now.saturating_sub(front.at) > self.max_age;
            if !go {
                break;
            }
            if live {
                self.forget(self.first);
            }
            let i = self.place(self.first);
            let front = &mut self.ring[i];
            self.bytes -= front.size;
            front.size = 0;
            // Shared frames are let go now, not when the place is next used.
            front.reply.release_shared();
            self.first += 1;
        }
    }
}

/// The place of entry `seq` in a ring of `mask + 1` places.
fn place(seq: u64, mask: u64) -> usize {
    // Below the ring's length (a usize) or the next place to push.
    (seq & mask) as usize
}

impl Default for MemoryReplyCache {
    fn default() -> Self {
        MemoryReplyCache::new(DEFAULT_REP_CACHE_SIZE, DEFAULT_REP_CACHE_AGE)
    }
}

impl MemoryReplyCache {
    /// Finishes the last put: puts its entry in the index (forgetting an earlier reply
    /// to the same key) and lets the entries go that are too old or too many.
    fn settle(&mut self) {
        if !self.pending {
            return;
        }
        self.pending = false;
        let seq = self.next - 1;
        let i = self.place(seq);
        let hash = self.hasher.hash_one(&self.ring[i].key);
        let (ring, mask) = (&mut self.ring, self.mask);
        // One look in the index: a reply put before to the same key is forgotten.
        match self.index.entry(
            hash,
            |&s| ring[place(s, mask)].key == ring[i].key,
            |&s| ring[place(s, mask)].hash,
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                let old = std::mem::replace(o.get_mut(), seq);
                ring[place(old, mask)].live = false;
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(seq);
                self.live += 1;
            }
        }
        let e = &mut ring[i];
        e.hash = hash;
        e.live = true;
        let now = e.at;
        self.expire(now);
    }
}

impl ReplyCache for MemoryReplyCache {
    fn get(&mut self, key: &RequestKey) -> Option<Message> {
        self.settle();
        let hash = self.hasher.hash_one(key);
        let (ring, mask) = (&self.ring, self.mask);
        let seq = *self
            .index
            .find(hash, |&s| ring[place(s, mask)].key == *key)?;
        // Found: only now is the clock read (a miss is the common case).
        let e = &self.ring[self.place(seq)];
        if crate::sys::coarse_now().saturating_sub(e.at) > self.max_age {
            self.forget(seq);
            return None;
        }
        Some(Message::from(e.reply.frames()))
    }

    fn put(&mut self, key: &RequestKey, reply: &Message) {
        if self.max_entries == 0 {
            return;
        }
        self.settle();
        let now = crate::sys::coarse_now();
        // The place of entry `next`: free, as the ring has a place more than
        // `max_entries` and the last settle left at most that many.
        let seq = self.next;
        self.next += 1;
        self.pending = true;
        let i = place(seq, self.mask);
        let size = reply.frames().iter().map(Bytes::len).sum();
        if let Some(e) = self.ring.get_mut(i) {
            // The place of an entry that went: reused, with its buffers.
            e.key.request_id = key.request_id;
            e.key.fingerprint = key.fingerprint;
            // Most often the same requester's again: no count to take and drop.
            if e.key.requester.as_ptr() != key.requester.as_ptr()
                || e.key.requester.len() != key.requester.len()
            {
                e.key.requester = key.requester.clone();
            }
            e.reply.keep(reply.frames());
            e.at = now;
            e.size = size;
            e.live = false;
        } else {
            let mut kept = KeptFrames::default();
            kept.keep(reply.frames());
            self.ring.push(Entry {
                key: key.clone(),
                hash: 0,
                at: now,
                reply: kept,
                size,
                live: false,
            });
        }
        self.bytes += size;
    }

    fn idle(&mut self) {
        self.settle();
    }
}

/// Frames kept to be sent again later (a REQ's request for its resends, a REP's reply
/// in its cache), without an allocation per message in steady state: frames of up to
/// [`KeptFrames::COPY_MAX`] bytes in all are copied into a buffer that is reused from
/// one message to the next (cheaper than sharing a frame, which allocates the shared
/// count of a frame made from a `Vec`); larger ones are shared (a count, no copy).
#[derive(Debug, Default, Clone)]
pub(crate) struct KeptFrames {
    /// The copied frames, back to back.
    bytes: Vec<u8>,
    /// The length of each copied frame.
    lens: SmallVec<[u32; 4]>,
    /// The shared frames (when not copied).
    shared: FrameVec,
}

impl KeptFrames {
    /// Messages up to this many bytes are copied, larger ones shared.
    pub(crate) const COPY_MAX: usize = 512;

    /// Keeps `frames` (forgetting what was kept before).
    pub(crate) fn keep(&mut self, frames: &[Bytes]) {
        self.bytes.clear();
        self.lens.clear();
        self.shared.clear();
        let total: usize = frames.iter().map(Bytes::len).sum();
        if total <= Self::COPY_MAX {
            for f in frames {
                self.bytes.extend_from_slice(f);
                // At most COPY_MAX: fits.
                self.lens.push(f.len() as u32);
            }
        } else {
            self.shared.extend(frames.iter().cloned());
        }
    }

    /// Lets shared frames go (copied ones stay: their buffer is reused).
    pub(crate) fn release_shared(&mut self) {
        self.shared.clear();
    }

    /// The kept frames, as a new frame list (copied ones in one new buffer).
    pub(crate) fn frames(&self) -> FrameVec {
        if !self.shared.is_empty() {
            return self.shared.clone();
        }
        let all = Bytes::copy_from_slice(&self.bytes);
        let mut out = FrameVec::with_capacity(self.lens.len());
        let mut at = 0;
        for &len in &self.lens {
            let end = at + len as usize;
            out.push(all.slice(at..end));
            at = end;
        }
        out
    }
}

/// A 64-bit hash of a message's frames (for [`RequestKey::fingerprint`]): eight bytes
/// at a time, with the multiply-rotate step of FxHash. Our own function, so its values
/// are the same in every process (a durable cache may compare them later).
///
/// A frame of up to [`FINGERPRINT_WHOLE`] bytes is hashed whole; of a larger one, its
/// length and its first and last `FINGERPRINT_WHOLE / 2` bytes: the fingerprint tells a
/// new request that reuses an id from a copy (which has the same bytes), and the cost of
/// a request stays the same at every size (hashing all of a 1 MiB body took about 200 us
/// here, longer than carrying it). Not a defence against a hostile requester: one that
/// can forge a routing id can ask for any reply anyway.
pub(crate) fn fingerprint(frames: &[Bytes]) -> u64 {
    let mut h = Fingerprint(0x243f_6a88_85a3_08d3);
    for f in frames {
        h.mix(f.len() as u64);
        if f.len() <= FINGERPRINT_WHOLE {
            h.mix_bytes(f);
        } else {
            h.mix_bytes(&f[..FINGERPRINT_WHOLE / 2]);
            h.mix_bytes(&f[f.len() - FINGERPRINT_WHOLE / 2..]);
        }
    }
    h.0
}

/// Frames up to this many bytes are hashed whole by [`fingerprint`].
pub(crate) const FINGERPRINT_WHOLE: usize = 512;

/// The state of a [`fingerprint`].
struct Fingerprint(u64);

impl Fingerprint {
    fn mix(&mut self, w: u64) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
    }

    fn mix_bytes(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for c in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> RequestKey {
        RequestKey {
            requester: Bytes::from_static(b"r"),
            request_id: id,
            fingerprint: 7,
        }
    }

    #[test]
    fn cache_is_bounded_by_count_and_age() {
        let mut c = MemoryReplyCache::new(2, Duration::from_secs(60));
        for id in 0..3 {
            c.put(&key(id), &Message::from(vec![id as u8]));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&key(0)).is_none(), "the oldest went first");
        assert_eq!(c.get(&key(2)), Some(Message::from(vec![2u8])));
        // Put again: the newer entry lives.
        c.put(&key(1), &Message::from(vec![9u8]));
        assert_eq!(c.get(&key(1)), Some(Message::from(vec![9u8])));

        let mut c = MemoryReplyCache::new(10, Duration::from_millis(20));
        c.put(&key(1), &Message::from("a"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get(&key(1)).is_none(), "expired");
        assert!(c.is_empty());
    }

    #[test]
    fn cache_keeps_serving_while_it_reuses_its_entries() {
        // Six entries in a ring of eight places: bounded by the count, not the places.
        let mut c = MemoryReplyCache::new(6, Duration::from_secs(60));
        let big = Message::from(vec![Bytes::from(vec![1u8; 2000]), Bytes::from("tail")]);
        for id in 0..100u32 {
            let reply = if id % 3 == 0 {
                big.clone()
            } else {
                Message::from(vec![Bytes::from(id.to_string()), Bytes::new()])
            };
            c.put(&key(id), &reply);
            assert!(c.len() <= 6);
            assert_eq!(c.get(&key(id)), Some(reply), "request {id}");
            if id >= 6 {
                assert!(c.get(&key(id - 6)).is_none(), "request {} went", id - 6);
                assert!(c.get(&key(id - 5)).is_some(), "request {} stays", id - 5);
            }
        }
        assert_eq!(c.len(), 6);
        // The same request id from another requester, or with another body, is
        // another key.
        let mut other = key(99);
        other.requester = Bytes::from_static(b"s");
        assert!(c.get(&other).is_none());
        other = key(99);
        other.fingerprint = 8;
        assert!(c.get(&other).is_none());
        // A cache of size zero keeps nothing.
        let mut z = MemoryReplyCache::new(0, Duration::from_secs(60));
        z.put(&key(1), &Message::from("a"));
        assert!(z.get(&key(1)).is_none() && z.is_empty());
    }

    #[test]
    fn cache_is_bounded_by_bytes_and_lets_large_replies_go() {
        let big = |b: u8| Message::from(vec![b; 1000]);
        let mut c = MemoryReplyCache::new(100, Duration::from_secs(60)).with_max_bytes(2500);
        for id in 0..5 {
            c.put(&key(id), &big(id as u8));
        }
        // Two of 1000 bytes fit in 2500: the newest two stay.
        assert_eq!(c.len(), 2);
        assert!(c.get(&key(2)).is_none(), "the oldest went first");
        assert_eq!(c.get(&key(3)), Some(big(3)));
        assert_eq!(c.get(&key(4)), Some(big(4)));
        // The frames of those that went are not held any more.
        let held = Bytes::from(vec![7u8; 1000]);
        c.put(&key(10), &Message::from(held.clone()));
        for id in 11..14 {
            c.put(&key(id), &big(1));
        }
        assert!(held.is_unique(), "a reply that went is let go");
        // A reply larger than the bound is not kept.
        c.put(&key(20), &Message::from(vec![0u8; 3000]));
        assert!(c.get(&key(20)).is_none());
    }

    #[test]
    fn a_large_frame_is_fingerprinted_by_its_length_head_and_tail() {
        let mut a = vec![1u8; 100_000];
        let fa = fingerprint(&[Bytes::from(a.clone())]);
        a[50_000] = 2; // the middle: the same fingerprint
        assert_eq!(fa, fingerprint(&[Bytes::from(a.clone())]));
        a[10] = 2; // the head
        assert_ne!(fa, fingerprint(&[Bytes::from(a.clone())]));
        a[10] = 1;
        a[99_990] = 2; // the tail
        assert_ne!(fa, fingerprint(&[Bytes::from(a.clone())]));
        a[99_990] = 1;
        a.push(1); // the length
        assert_ne!(fa, fingerprint(&[Bytes::from(a)]));
        // A frame up to the limit counts whole.
        let mut b = vec![1u8; FINGERPRINT_WHOLE];
        let fb = fingerprint(&[Bytes::from(b.clone())]);
        b[FINGERPRINT_WHOLE / 2] = 2;
        assert_ne!(fb, fingerprint(&[Bytes::from(b)]));
    }

    #[test]
    fn kept_frames_copy_small_messages_and_share_large_ones() {
        let mut k = KeptFrames::default();
        let small = [Bytes::from("ab"), Bytes::new(), Bytes::from("c")];
        k.keep(&small);
        assert_eq!(k.frames().as_slice(), &small);
        assert!(k.shared.is_empty(), "copied");
        let large = [Bytes::from(vec![5u8; KeptFrames::COPY_MAX + 1])];
        k.keep(&large);
        assert_eq!(k.frames().as_slice(), &large);
        assert!(k.bytes.is_empty() && k.lens.is_empty(), "shared");
        k.keep(&small);
        assert_eq!(k.frames().as_slice(), &small, "and back");
    }

    #[test]
    fn fingerprint_tells_bodies_apart() {
        let a = fingerprint(&[Bytes::from("ab"), Bytes::from("c")]);
        let b = fingerprint(&[Bytes::from("a"), Bytes::from("bc")]);
        assert_ne!(a, b);
        assert_eq!(a, fingerprint(&[Bytes::from("ab"), Bytes::from("c")]));
    }

    #[test]
    fn counters_count() {
        let c = ReqRepCounters::default();
        c.add(Count::Resend);
        c.add(Count::Resend);
        c.add(Count::FromCache);
        let s = c.snapshot();
        assert_eq!((s.resends, s.replies_from_cache, s.failovers), (2, 1, 0));
    }
}
