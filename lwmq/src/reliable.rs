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
}

/// The default [`ReplyCache`]: in memory, at most `max_entries` replies, each served
/// for at most `max_age` (the oldest go first; ages are measured on the kernel's coarse
/// clock, to a few milliseconds).
///
/// Made for the round trip's hot path: a lookup that finds nothing (every request's
/// first copy) reads no clock and allocates nothing; a put reads the coarse clock once
/// and, once the cache is full (or entries age out), writes over the place of the entry
/// that goes, reusing its key and its reply buffer: nothing is allocated either
/// (replies of up to 512 bytes are copied into that buffer, larger ones shared).
#[derive(Debug)]
pub struct MemoryReplyCache {
    max_entries: usize,
    max_age: Duration,
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
            ring: Vec::new(),
            mask: (max_entries as u64)
                .checked_next_power_of_two()
                .map_or(u64::MAX, |p| p - 1),
            first: 0,
            next: 0,
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            live: 0,
        }
    }

    /// How many replies it holds (some may be too old to be served: they go at the
    /// next put).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.live == 0
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
    /// as many as needed to make room for one more.
    fn expire(&mut self, now: Duration) {
        while self.first < self.next {
            let front = &self.ring[self.place(self.first)];
            let live = front.live;
            let go = !live
                || self.next - self.first >= self.max_entries as u64
                || now.saturating_sub(front.at) > self.max_age;
            if !go {
                break;
            }
            if live {
                self.forget(self.first);
            }
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

impl ReplyCache for MemoryReplyCache {
    fn get(&mut self, key: &RequestKey) -> Option<Message> {
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
        let now = crate::sys::coarse_now();
        self.expire(now);
        let seq = self.next;
        self.next += 1;
        let hash = self.hasher.hash_one(key);
        let (ring, mask) = (&mut self.ring, self.mask);
        // One look in the index: a reply put before to the same key is forgotten.
        match self.index.entry(
            hash,
            |&s| ring[place(s, mask)].key == *key,
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
        let i = place(seq, mask);
        if let Some(e) = ring.get_mut(i) {
            // The place of an entry that went: reused, with its buffers.
            e.key.request_id = key.request_id;
            e.key.fingerprint = key.fingerprint;
            // Most often the same requester's again: no count to take and drop.
            if e.key.requester.as_ptr() != key.requester.as_ptr()
                || e.key.requester.len() != key.requester.len()
            {
                e.key.requester = key.requester.clone();
            }
            e.hash = hash;
            e.at = now;
            e.reply.keep(reply.frames());
            e.live = true;
        } else {
            let mut kept = KeptFrames::default();
            kept.keep(reply.frames());
            ring.push(Entry {
                key: key.clone(),
                hash,
                at: now,
                reply: kept,
                live: true,
            });
        }
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
/// are the same in every process and version (a durable cache may compare them later).
/// Not a defence against a hostile requester: one that can forge a routing id can ask
/// for any reply anyway.
pub(crate) fn fingerprint(frames: &[Bytes]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    let mut mix = |w: u64| h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    for f in frames {
        mix(f.len() as u64);
        let mut words = f.chunks_exact(8);
        for c in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            mix(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            mix(u64::from_le_bytes(w));
        }
    }
    h
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
