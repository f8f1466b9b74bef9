//! A bounded lock-free single-producer single-consumer queue with batched publication:
//! the stream pipe between a socket's application thread and the background thread
//! (through [`super::spsc_pipe`]).
//!
//! # The algorithm
//!
//! Lamport's bounded SPSC ring (as in crossbeam's array channel, the positions only grow,
//! wrapping at `usize::MAX`, and are reduced modulo the capacity when used), with
//! libzmq's ypipe idea on top: the producer writes items into slots without showing
//! them ([`Producer::push`]), then shows a whole batch with one Release store
//! ([`Producer::flush`]); the consumer likewise tells the producer about freed slots
//! once per batch, not once per item. Each side keeps a private copy of the other's
//! position and reloads it only when the copy says "full" or "empty", so a busy queue
//! moves each position's cache line between the two cores once per batch.
//!
//! On top of the queue sit two wake-up handshakes, so that neither side ever polls:
//!
//! - **Consumer idle.** A consumer that found the queue empty calls
//!   [`Consumer::announce_idle`] before it sleeps: it sets `consumer_idle`, runs a SeqCst
//!   fence, and looks at `tail` once more. [`Producer::flush`] stores `tail`, runs a
//!   SeqCst fence, and reads `consumer_idle`; if set, it clears it and returns `true`,
//!   and the caller wakes the consumer (once per batch, only when it sleeps).
//! - **Producer blocked.** A producer whose `push` found the queue full calls
//!   [`Producer::announce_blocked`] before it sleeps: it sets `producer_blocked`, runs a
//!   SeqCst fence, and looks at `head` once more. Whenever the consumer publishes `head`
//!   it runs a SeqCst fence and reads `producer_blocked`; if set, it clears it and
//!   remembers that the producer must be woken, which the caller learns from
//!   [`Consumer::take_producer_wake`].
//!
//! Both are the store-fence-load handshake (Dekker's): of the two SeqCst fences one
//! comes first in their total order, and the load after the later fence sees the store
//! before the earlier one. So either the side going to sleep sees the other's progress
//! and does not sleep (`announce_*` returns `false`), or the other side sees the flag
//! and wakes it. The flag is cleared by whoever acts on it (a compare-exchange), so one
//! announcement gives at most one wake-up. A stale flag (set by an announcement whose sleep ended for
//! another reason) costs one spurious wake-up at most; the side that set it clears it
//! when it next makes progress.
//!
//! Every write to a flag is a read-modify-write (`swap`, `compare_exchange`), never a
//! plain store. The handshakes need no more than a store, and on x86 a SeqCst store is an
//! `xchg` anyway; but with only read-modify-writes each flag's modification order is one
//! chain that every write reads the end of, which is what loom needs to check the
//! fences exactly (loom keeps modification order as a partial order; with a plain store
//! racing the other side's clear it reports a lost wake-up that the C11 model forbids).
//!
//! # How far the producer's view lags
//!
//! The consumer publishes `head` after every `batch = capacity / 2` pops (at least 1),
//! whenever a pop finds the queue empty, in [`announce_idle`](Consumer::announce_idle),
//! and in [`close`](Consumer::close). So [`Producer::push`] may report "full" while up to
//! `batch - 1` items have already been taken; but a consumer that keeps popping
//! publishes within `batch` pops (a full queue holds `capacity >= batch` items), so the
//! queue never reports full forever, and a blocked producer is woken with at least
//! `batch` free slots (or an emptied queue) waiting for it.
//!
//! # Fields
//!
//! Shared (in `Shared`, each group on a cache-line pair of its own):
//!
//! | field | written by | read by | ordering |
//! |---|---|---|---|
//! | `tail` — end of the published items | producer (`flush`, `close`) | consumer, when its copy says empty | store Release / load Acquire: the slots before it are written |
//! | `head` — end of the consumed items, as last published | consumer (per batch, on empty, idle, close) | producer, when its copy says full | store Release / load Acquire: the slots before it are read |
//! | `consumer_idle` | consumer sets (`swap`, SeqCst, then a fence) and clears; producer clears (`compare_exchange`) | producer after each flush, after a SeqCst fence | SeqCst |
//! | `producer_blocked` | producer sets (`swap`, SeqCst, then a fence) and clears; consumer clears (`compare_exchange`) | consumer after each `head` store, after a SeqCst fence | SeqCst |
//! | `producer_closed` | producer, once, after its last `tail` store | consumer (`announce_idle`, `is_closed`) | Release / Acquire: `tail` is final once it is seen |
//! | `consumer_closed` | consumer, once, after its last `head` store | producer (`announce_blocked`, `is_closed`) | Release / Acquire |
//! | `slots[pos % capacity]` | producer, for `head <= pos < head + capacity` not yet published | consumer, for `head <= pos < tail` | ordered by `tail` and `head` as above |
//!
//! `tail` is written on every flush and `head` on every batch, so each has a line pair
//! of its own (`#[repr(align(128))]`: x86's spatial prefetcher pulls cache lines in
//! pairs, the shared-memory ring pads the same way). The four flags are written only on
//! state changes and read once per batch by the other side; they share a third line
//! pair, which stays shared in both caches while the queue flows.
//!
//! Private, in `Producer`: `write` (the next position to fill; items in
//! `published..write` are pushed but not shown), `published` (the last `tail` stored),
//! `head_cache` (the last `head` loaded), `blocked` (we set `producer_blocked`),
//! `closed`. In `Consumer`: `read` (the next position to take), `tail_cache`,
//! `head_published` (the last `head` stored), `idle` (we set `consumer_idle`),
//! `wake_producer` (a wake-up owed to the producer, until taken), `closed`.
//!
//! # Closing and dropping
//!
//! [`Producer::close`] (also run by `Drop`) publishes every pushed item and then sets
//! `producer_closed`: the consumer drains what is left, then [`Consumer::is_closed`].
//! [`Consumer::close`] (also run by `Drop`) publishes `head` and sets `consumer_closed`:
//! [`Producer::is_closed`], and later pushes are dropped with the queue. Each `close`
//! returns whether the other side had announced it sleeps (the caller wakes it, so that
//! it sees the close); `Drop` cannot wake anyone, so a side whose peer may sleep calls
//! `close` first. When both halves are gone, the items in `head..tail` (those never
//! popped) are dropped, each exactly once. Only `channel` allocates: one slot array.

use std::fmt;
use std::mem::MaybeUninit;

use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use crate::sync::{Arc, UnsafeCell};

/// Keeps what it holds on a cache-line pair of its own.
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The flags both sides read once per batch and write on state changes only.
struct Flags {
    consumer_idle: AtomicBool,
    producer_blocked: AtomicBool,
    producer_closed: AtomicBool,
    consumer_closed: AtomicBool,
}

/// What both halves share (see the module docs for who writes what).
struct Shared<T> {
    tail: CachePadded<AtomicUsize>,
    head: CachePadded<AtomicUsize>,
    flags: CachePadded<Flags>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// `capacity - 1`; the capacity is a power of two.
    mask: usize,
}

// SAFETY: the slots are only touched as the protocol in the module docs allows: a slot
// is written by the producer alone while it is free and read (moved out) by the
// consumer alone while it is published, with `tail`/`head` (Release/Acquire) ordering
// the two; items cross threads, hence `T: Send`. Everything else is atomic.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; dropping `Shared` on any thread drops `T`s, which `T: Send` allows.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both halves are gone, and closing published their final positions; the last
        // `Arc` drop synchronizes with both, so Relaxed loads see them.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut pos = head;
        while pos != tail {
            self.slots[pos & self.mask].with_mut(|p| {
                // SAFETY: `head..tail` are the published, never popped items: each of
                // their slots holds an initialized `T` that nobody else can reach any
                // more (we are the last owner), dropped here once.
                unsafe { p.cast::<T>().drop_in_place() }
            });
            pos = pos.wrapping_add(1);
        }
    }
}

/// Creates a queue of `capacity` items (rounded up to a power of two, at least 2).
pub(crate) fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity
        .max(2)
        .checked_next_power_of_two()
        .unwrap_or_else(|| {
            // Not reachable by any sensible caller: the allocation would fail first.
            panic!("spsc capacity {capacity} is too large")
        });
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        tail: CachePadded(AtomicUsize::new(0)),
        head: CachePadded(AtomicUsize::new(0)),
        flags: CachePadded(Flags {
            consumer_idle: AtomicBool::new(false),
            producer_blocked: AtomicBool::new(false),
            producer_closed: AtomicBool::new(false),
            consumer_closed: AtomicBool::new(false),
        }),
        slots,
        mask: capacity - 1,
    });
    let producer = Producer {
        shared: shared.clone(),
        write: 0,
        published: 0,
        head_cache: 0,
        blocked: false,
        closed: false,
    };
    let consumer = Consumer {
        shared,
        read: 0,
        tail_cache: 0,
        head_published: 0,
        batch: (capacity / 2).max(1),
        idle: false,
        wake_producer: false,
        closed: false,
    };
    (producer, consumer)
}

/// The sending half, owned by one thread (`&mut self`).
pub(crate) struct Producer<T> {
    shared: Arc<Shared<T>>,
    write: usize,
    published: usize,
    head_cache: usize,
    blocked: bool,
    closed: bool,
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("write", &self.write)
            .field("published", &self.published)
            .field("closed", &self.closed)
            .finish()
    }
}

impl<T> Producer<T> {
    /// Number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    fn has_room(&self) -> bool {
        self.write.wrapping_sub(self.head_cache) < self.capacity()
    }

    /// Writes `v` into the next slot without showing it to the consumer (see
    /// [`flush`](Self::flush)). Hands `v` back if the queue is full (possibly only in
    /// our lagging view of it: see the module docs) or this half is closed. Does not look
    /// at whether the consumer closed: see [`is_closed`](Self::is_closed).
    pub(crate) fn push(&mut self, v: T) -> Result<(), T> {
        self.push_with(v, |v| v)
    }

    /// As [`push`](Self::push), for an item made from `u` by `make` only once there is
    /// room (an item that is costly to make, or to turn back into `u`).
    pub(crate) fn push_with<U>(&mut self, u: U, make: impl FnOnce(U) -> T) -> Result<(), U> {
        if self.closed {
            return Err(u);
        }
        if !self.has_room() {
            // Acquire: the consumer's reads of the slots before `head` happened before
            // we overwrite them.
            self.head_cache = self.shared.head.load(Ordering::Acquire);
            if !self.has_room() {
                return Err(u);
            }
        }
        let v = make(u);
        if self.blocked {
            // We are making progress again: withdraw a stale announcement (the consumer
            // may have taken it already; then this store changes nothing).
            self.blocked = false;
            self.shared
                .flags
                .producer_blocked
                .swap(false, Ordering::Relaxed);
        }
        self.shared.slots[self.write & self.shared.mask].with_mut(|p| {
            // SAFETY: `write - head_cache < capacity`, and `head_cache` was published by
            // the consumer after it had moved every item before it out (Acquire above or
            // earlier), so this slot is free: it holds no live `T` and the consumer does
            // not touch it until we publish a `tail` past it.
            unsafe { p.cast::<T>().write(v) }
        });
        self.write = self.write.wrapping_add(1);
        Ok(())
    }

    /// Shows every pushed item to the consumer, with one Release store. Returns `true`
    /// if the consumer had announced it sleeps ([`Consumer::announce_idle`]): the
    /// caller must then wake it. Returns `false` without touching shared memory when
    /// nothing was pushed since the last flush.
    pub(crate) fn flush(&mut self) -> bool {
        if self.write == self.published {
            return false;
        }
        self.published = self.write;
        // Release: the slot writes before it are visible to a consumer that loads it.
        self.shared.tail.store(self.write, Ordering::Release);
        self.take_consumer_idle()
    }

    /// As [`flush`](Self::flush), for a consumer that never announces it sleeps (it is
    /// woken some other way after every publish): the Release store only, without the
    /// idle handshake's fence.
    /// Returns whether there was anything to publish.
    pub(crate) fn flush_unannounced(&mut self) -> bool {
        if self.write == self.published {
            return false;
        }
        self.published = self.write;
        // Release: as in `flush`.
        self.shared.tail.store(self.write, Ordering::Release);
        true
    }

    /// The producer's half of the idle handshake, after a store the consumer waits for.
    fn take_consumer_idle(&self) -> bool {
        // SeqCst fence: orders our store above before the load of the flag (see the
        // module docs); the consumer has the matching fence in `announce_idle`.
        fence(Ordering::SeqCst);
        let idle = &self.shared.flags.consumer_idle;
        idle.load(Ordering::Relaxed)
            && idle
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
    }

    /// Items pushed and not yet known to be popped (pushed but unflushed ones count;
    /// popped ones the consumer has not published yet do too). A hint: the consumer
    /// moves on meanwhile.
    #[cfg(any(test, lwmq_loom))]
    pub(crate) fn len_hint(&self) -> usize {
        self.write
            .wrapping_sub(self.shared.head.load(Ordering::Relaxed))
    }

    /// Whether [`push`](Self::push) would hand its item back now.
    #[cfg(any(test, lwmq_loom))]
    pub(crate) fn is_full(&mut self) -> bool {
        if self.closed {
            return true;
        }
        if !self.has_room() {
            self.head_cache = self.shared.head.load(Ordering::Acquire);
        }
        !self.has_room()
    }

    /// Announces that this thread sleeps until the consumer frees room. Call after
    /// `push` handed an item back and after [`flush`](Self::flush) (a full queue that
    /// is not flushed would wait for a consumer that cannot see it). Returns `true` if
    /// the caller may sleep: the consumer will report a wake-up through
    /// [`Consumer::take_producer_wake`] (or its `close`) once it frees room. Returns
    /// `false` if there is room already (push again), the consumer closed (see
    /// [`is_closed`](Self::is_closed)), or items are still unflushed.
    pub(crate) fn announce_blocked(&mut self) -> bool {
        debug_assert_eq!(self.write, self.published, "announce_blocked before flush");
        if self.closed || self.write != self.published || self.has_room() {
            return false;
        }
        let flags = &self.shared.flags;
        flags.producer_blocked.swap(true, Ordering::SeqCst);
        // SeqCst fence: orders the flag store before the look at `head` (the consumer
        // has the matching fence after each `head` store).
        fence(Ordering::SeqCst);
        self.head_cache = self.shared.head.load(Ordering::Acquire);
        if self.has_room() || flags.consumer_closed.load(Ordering::Acquire) {
            flags.producer_blocked.swap(false, Ordering::Relaxed);
            self.blocked = false;
            return false;
        }
        self.blocked = true;
        true
    }

    /// Whether the consumer closed (or was dropped): nothing pushed will be popped.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.flags.consumer_closed.load(Ordering::Acquire)
    }

    /// Publishes every pushed item and closes: the consumer drains them, then sees the
    /// queue closed. Later pushes hand their item back. Returns `true` if the consumer
    /// had announced it sleeps: the caller must wake it (so that it sees the close).
    /// Idempotent (a second call returns `false`).
    pub(crate) fn close(&mut self) -> bool {
        if self.closed {
            return false;
        }
        self.closed = true;
        self.published = self.write;
        self.shared.tail.store(self.write, Ordering::Release);
        // Release: a consumer that sees the flag sees the final `tail` too.
        self.shared
            .flags
            .producer_closed
            .store(true, Ordering::Release);
        self.take_consumer_idle()
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Nobody to wake from here: a caller whose consumer may sleep calls `close`.
        self.close();
    }
}

/// The receiving half, owned by one thread (`&mut self`).
pub(crate) struct Consumer<T> {
    shared: Arc<Shared<T>>,
    read: usize,
    tail_cache: usize,
    head_published: usize,
    batch: usize,
    idle: bool,
    wake_producer: bool,
    closed: bool,
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &(self.shared.mask + 1))
            .field("read", &self.read)
            .field("tail_cache", &self.tail_cache)
            .field("head_published", &self.head_published)
            .field("closed", &self.closed)
            .finish()
    }
}

impl<T> Consumer<T> {
    /// Takes the next published item, or `None` if there is none (then check
    /// [`is_closed`](Self::is_closed), or [`announce_idle`](Self::announce_idle) and
    /// sleep). After a batch of pops, call [`take_producer_wake`](Self::take_producer_wake).
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.closed {
            return None;
        }
        if self.read == self.tail_cache {
            // Acquire: the producer's slot writes before `tail` are visible to us.
            self.tail_cache = self.shared.tail.load(Ordering::Acquire);
            if self.read == self.tail_cache {
                // Ran dry: let the producer see all the room there is.
                self.publish_head();
                return None;
            }
            if self.idle {
                // Awake and busy: withdraw a stale announcement.
                self.idle = false;
                self.shared
                    .flags
                    .consumer_idle
                    .swap(false, Ordering::Relaxed);
            }
        }
        let v = self.shared.slots[self.read & self.shared.mask].with(|p| {
            // SAFETY: `read < tail_cache`, a `tail` the producer published (Release,
            // loaded Acquire) after writing this slot; the producer does not write it
            // again until we publish a `head` past it. Moving the value out leaves the
            // slot logically uninitialized, which advancing `read` records.
            unsafe { p.cast::<T>().read() }
        });
        self.read = self.read.wrapping_add(1);
        if self.read.wrapping_sub(self.head_published) >= self.batch {
            self.publish_head();
        }
        Some(v)
    }

    /// Shows the producer the slots we freed, and learns whether it waits for them.
    fn publish_head(&mut self) {
        if self.head_published == self.read {
            return;
        }
        self.head_published = self.read;
        // Release: our reads of the slots before it happen before the producer reuses
        // them.
        self.shared.head.store(self.read, Ordering::Release);
        if self.take_producer_blocked() {
            self.wake_producer = true;
        }
    }

    /// The consumer's half of the blocked handshake, after a store the producer waits
    /// for.
    fn take_producer_blocked(&self) -> bool {
        // SeqCst fence: orders our store above before the load of the flag; the
        // producer has the matching fence in `announce_blocked`.
        fence(Ordering::SeqCst);
        let blocked = &self.shared.flags.producer_blocked;
        blocked.load(Ordering::Relaxed)
            && blocked
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the producer announced it sleeps on a full queue and we have since freed
    /// room for it: the caller must wake it. True once per announcement; call after
    /// each batch of pops (checking costs no shared-memory access).
    pub(crate) fn take_producer_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake_producer)
    }

    /// Announces that this thread sleeps until the producer flushes: sets the idle flag,
    /// then looks once more. Returns `true` if the caller may sleep: the next
    /// [`Producer::flush`] (or `close`) returns `true` and its caller wakes us. Returns
    /// `false` (flag withdrawn) if an item is there or the producer closed: pop instead.
    pub(crate) fn announce_idle(&mut self) -> bool {
        if self.closed {
            return false;
        }
        // A consumer about to sleep must not leave the producer a stale "full".
        self.publish_head();
        if self.read != self.tail_cache {
            return false;
        }
        let flags = &self.shared.flags;
        flags.consumer_idle.swap(true, Ordering::SeqCst);
        // SeqCst fence: orders the flag store before the look at `tail` (the producer
        // has the matching fence after each `tail` store).
        fence(Ordering::SeqCst);
        self.tail_cache = self.shared.tail.load(Ordering::Acquire);
        if self.read != self.tail_cache || flags.producer_closed.load(Ordering::Acquire) {
            flags.consumer_idle.swap(false, Ordering::Relaxed);
            self.idle = false;
            return false;
        }
        self.idle = true;
        true
    }

    /// Whether no item will ever come: the producer closed (or was dropped) and every
    /// item it published has been popped, or this half is closed.
    pub(crate) fn is_closed(&self) -> bool {
        if self.closed {
            return true;
        }
        // Acquire: once the flag is seen, the `tail` stored before it is final.
        self.shared.flags.producer_closed.load(Ordering::Acquire)
            && self.read == self.shared.tail.load(Ordering::Acquire)
    }

    /// Whether nothing published is waiting (the producer may still push more).
    pub(crate) fn is_empty(&mut self) -> bool {
        if self.read != self.tail_cache {
            return false;
        }
        self.tail_cache = self.shared.tail.load(Ordering::Acquire);
        self.read == self.tail_cache
    }

    /// Stops consuming: the producer sees [`Producer::is_closed`]; items not popped are
    /// dropped with the queue. Returns `true` if the producer sleeps waiting for room
    /// (or is owed a wake-up not yet taken): the caller must wake it. Idempotent.
    pub(crate) fn close(&mut self) -> bool {
        if self.closed {
            return false;
        }
        self.closed = true;
        self.head_published = self.read;
        // Release: the queue's drop must see which items we took.
        self.shared.head.store(self.read, Ordering::Release);
        self.shared
            .flags
            .consumer_closed
            .store(true, Ordering::Release);
        let blocked = self.take_producer_blocked();
        blocked | std::mem::take(&mut self.wake_producer)
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Nobody to wake from here: a caller whose producer may sleep calls `close`.
        self.close();
    }
}

/// A wake-up primitive for the tests, standing in for the socket's doorbell: a waiter
/// takes a ticket before it announces, then sleeps until a wake-up after the ticket
/// (wake-ups before it are not banked, like a futex epoch). Built from `crate::sync`,
/// so the loom models use it too.
#[cfg(test)]
#[derive(Debug, Default)]
struct Event {
    epoch: crate::sync::Mutex<u64>,
    woken: crate::sync::Condvar,
}

#[cfg(test)]
impl Event {
    fn ticket(&self) -> u64 {
        *self.epoch.lock().unwrap()
    }

    fn wait(&self, ticket: u64) {
        let mut epoch = self.epoch.lock().unwrap();
        while *epoch == ticket {
            epoch = self.woken.wait(epoch).unwrap();
        }
    }

    fn wake(&self) {
        *self.epoch.lock().unwrap() += 1;
        self.woken.notify_all();
    }
}

/// The blocking send and receive loops a pipe would run, over [`Event`]s (used by the
/// stress test and the loom models).
#[cfg(test)]
fn send_blocking<T>(p: &mut Producer<T>, mut v: T, consumer_ev: &Event, producer_ev: &Event) {
    loop {
        match p.push(v) {
            Ok(()) => {
                if p.flush() {
                    consumer_ev.wake();
                }
                return;
            }
            Err(back) => v = back,
        }
        if p.flush() {
            consumer_ev.wake();
        }
        if p.is_closed() {
            return;
        }
        let t = producer_ev.ticket();
        if p.announce_blocked() {
            producer_ev.wait(t);
        }
    }
}

#[cfg(test)]
fn recv_blocking<T>(c: &mut Consumer<T>, consumer_ev: &Event, producer_ev: &Event) -> Option<T> {
    loop {
        let v = c.pop();
        if c.take_producer_wake() {
            producer_ev.wake();
        }
        if v.is_some() {
            return v;
        }
        if c.is_closed() {
            return None;
        }
        let t = consumer_ev.ticket();
        if c.announce_idle() {
            consumer_ev.wait(t);
        }
    }
}

#[cfg(all(test, not(lwmq_loom)))]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Aborts the test process if the guard is not dropped within `limit` (a deadlock
    /// guard, not a time limit: the limit is far above any normal run).
    struct Watchdog {
        done: Option<mpsc::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    fn watchdog(what: &'static str, limit: Duration) -> Watchdog {
        let (done, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("watchdog: {what} still running after {limit:?}; aborting");
                std::process::abort();
            }
        });
        Watchdog {
            done: Some(done),
            thread: Some(thread),
        }
    }

    impl Drop for Watchdog {
        fn drop(&mut self) {
            drop(self.done.take());
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    #[test]
    fn capacity_is_a_power_of_two_of_at_least_two() {
        for (asked, got) in [(0, 2), (1, 2), (2, 2), (3, 4), (5, 8), (1000, 1024)] {
            assert_eq!(channel::<u8>(asked).0.capacity(), got, "asked {asked}");
        }
    }

    #[test]
    fn items_come_out_in_order_across_wraparound() {
        let (mut p, mut c) = channel(4);
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        for round in 0..50 {
            while p.push(next_in).is_ok() {
                next_in += 1;
            }
            p.flush();
            // Take a varying number, so the positions wrap at every offset.
            for _ in 0..=(round % 4) {
                match c.pop() {
                    Some(v) => {
                        assert_eq!(v, next_out);
                        next_out += 1;
                    }
                    None => break,
                }
            }
        }
        while let Some(v) = c.pop() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_in, next_out);
        assert!(next_in > 100);
    }

    #[test]
    fn a_full_queue_hands_the_item_back() {
        let (mut p, mut c) = channel(2);
        p.push(String::from("a")).unwrap();
        p.push(String::from("b")).unwrap();
        assert!(p.is_full());
        assert_eq!(p.push(String::from("c")), Err(String::from("c")));
        p.flush();
        assert_eq!(c.pop().as_deref(), Some("a"));
        assert_eq!(c.pop().as_deref(), Some("b"));
        assert!(!p.is_full());
        p.push(String::from("c")).unwrap();
    }

    #[test]
    fn pushed_items_are_invisible_until_flushed() {
        let (mut p, mut c) = channel(8);
        p.push(1).unwrap();
        p.push(2).unwrap();
        assert_eq!(c.pop(), None, "pushed, not flushed");
        assert_eq!(p.len_hint(), 2);
        assert!(!p.flush(), "the consumer did not announce idle");
        assert!(!p.flush(), "nothing new to flush");
        assert_eq!(c.pop(), Some(1));
        assert_eq!(c.pop(), Some(2));
        assert_eq!(c.pop(), None);
        assert_eq!(p.len_hint(), 0, "running dry published head");
    }

    #[test]
    fn head_is_published_once_per_batch_or_when_dry() {
        let (mut p, mut c) = channel(8); // batch = 4
        for i in 0..8 {
            p.push(i).unwrap();
        }
        p.flush();
        for i in 0..3 {
            assert_eq!(c.pop(), Some(i));
        }
        // Three popped but not yet shown: the producer's view still says full.
        assert!(p.is_full());
        assert_eq!(p.push(99), Err(99));
        assert_eq!(p.len_hint(), 8);
        assert_eq!(c.pop(), Some(3)); // fourth pop: a batch, published
        assert!(!p.is_full());
        assert_eq!(p.len_hint(), 4);
        for i in 8..12 {
            p.push(i).unwrap();
        }
        assert!(p.is_full());
        p.flush();
        for i in 4..12 {
            assert_eq!(c.pop(), Some(i));
        }
        assert_eq!(c.pop(), None);
        assert_eq!(p.len_hint(), 0);
        for i in 0..8 {
            p.push(i).unwrap();
        }
    }

    #[test]
    fn flush_reports_an_idle_consumer_once() {
        let (mut p, mut c) = channel(4);
        assert!(c.announce_idle(), "empty: may sleep");
        p.push(1).unwrap();
        assert!(p.flush(), "the consumer sleeps: wake it");
        p.push(2).unwrap();
        assert!(!p.flush(), "one wake-up per announcement");
        assert_eq!(c.pop(), Some(1));
        assert!(!c.announce_idle(), "an item is there");
        assert_eq!(c.pop(), Some(2));
        assert!(c.announce_idle());
        // A wake-up for another reason, then progress: the stale flag is withdrawn.
        p.push(3).unwrap();
        p.shared.tail.store(p.write, Ordering::Release); // published, flag untouched
        p.published = p.write;
        assert_eq!(c.pop(), Some(3));
        assert!(!c.shared.flags.consumer_idle.load(Ordering::Relaxed));
        p.push(4).unwrap();
        assert!(!p.flush(), "no announcement outstanding");
        // An item pushed but unflushed is not something to pop: announce still sleeps.
        assert_eq!(c.pop(), Some(4));
        p.push(5).unwrap();
        assert!(c.announce_idle());
        assert!(p.flush());
    }

    #[test]
    fn a_blocked_producer_is_woken_once_room_appears() {
        let (mut p, mut c) = channel(4); // batch = 2
        for i in 0..4 {
            p.push(i).unwrap();
        }
        p.flush();
        assert!(p.announce_blocked(), "full: may sleep");
        assert_eq!(c.pop(), Some(0));
        assert!(!c.take_producer_wake(), "one pop is not a batch yet");
        assert_eq!(c.pop(), Some(1));
        assert!(c.take_producer_wake(), "a batch freed: wake the producer");
        assert!(!c.take_producer_wake(), "once");
        p.push(4).unwrap();
        p.push(5).unwrap();
        p.flush();
        assert!(p.announce_blocked());
        // Room appears before the producer sleeps: it must not sleep.
        assert_eq!(c.pop(), Some(2));
        assert_eq!(c.pop(), Some(3));
        assert!(c.take_producer_wake());
        assert!(!p.announce_blocked(), "room already there");
        p.push(6).unwrap();
        p.flush();
        for i in 4..7 {
            assert_eq!(c.pop(), Some(i));
        }
        assert_eq!(c.pop(), None);
        assert!(
            !c.take_producer_wake(),
            "the producer never announced again"
        );
    }

    #[test]
    fn producer_close_lets_the_consumer_drain_first() {
        let (mut p, mut c) = channel(4);
        p.push(1).unwrap();
        p.flush();
        p.push(2).unwrap(); // unflushed: close publishes it
        assert!(!p.close(), "the consumer was not idle");
        assert!(!p.close(), "idempotent");
        assert_eq!(p.push(3), Err(3), "closed");
        assert!(!c.is_closed(), "two items left");
        assert_eq!(c.pop(), Some(1));
        assert_eq!(c.pop(), Some(2));
        assert!(c.is_closed());
        assert_eq!(c.pop(), None);
        assert!(!c.announce_idle(), "never sleep on a closed queue");
        assert!(!p.is_closed(), "the consumer did not close");
    }

    #[test]
    fn producer_close_wakes_an_idle_consumer() {
        let (mut p, mut c) = channel::<u8>(4);
        assert!(c.announce_idle());
        assert!(p.close());
        assert!(c.is_closed());
        let (p, mut c) = channel::<u8>(4);
        assert!(c.announce_idle());
        drop(p); // Drop closes (but cannot wake)
        assert!(c.is_closed());
    }

    #[test]
    fn consumer_close_is_seen_by_the_producer() {
        let (mut p, mut c) = channel(2);
        p.push(1).unwrap();
        p.push(2).unwrap();
        p.flush();
        assert!(p.announce_blocked());
        assert!(c.close(), "the producer sleeps: wake it");
        assert!(c.is_closed());
        assert_eq!(c.pop(), None, "closed");
        assert!(p.is_closed());
        assert!(!p.announce_blocked(), "never sleep on a closed queue");
        let (p, c) = channel::<u8>(2);
        drop(c);
        assert!(p.is_closed());
    }

    #[test]
    fn undelivered_items_are_dropped_exactly_once() {
        let item = Arc::new(());
        for popped in 0..=4 {
            for consumer_first in [false, true] {
                let (mut p, mut c) = channel(4);
                for _ in 0..4 {
                    p.push(item.clone()).unwrap();
                }
                p.flush();
                p.push(item.clone()).unwrap_err();
                let got: Vec<_> = (0..popped).map(|_| c.pop().unwrap()).collect();
                assert_eq!(Arc::strong_count(&item), 5);
                if consumer_first {
                    drop(c);
                    // Pushed after the consumer left: dropped with the queue.
                    for _ in 0..popped {
                        p.push(item.clone()).unwrap();
                    }
                    drop(p);
                } else {
                    p.push(item.clone()).unwrap_or(()); // maybe full: handed back, dropped
                    drop(p);
                    drop(c);
                }
                assert_eq!(Arc::strong_count(&item), 1 + got.len());
                drop(got);
                assert_eq!(Arc::strong_count(&item), 1);
            }
        }
    }

    #[test]
    fn two_threads_stream_a_million_items() {
        let n: u64 = if cfg!(miri) { 2_000 } else { 1_000_000 };
        let _guard = watchdog("spsc stress", Duration::from_secs(600));
        let (mut p, mut c) = channel::<u64>(64);
        let consumer_ev = Arc::new(Event::default());
        let producer_ev = Arc::new(Event::default());
        let (cev, pev) = (consumer_ev.clone(), producer_ev.clone());
        let producer = std::thread::spawn(move || {
            for i in 0..n {
                // Flush in batches of up to 7: the pipe flushes once per send call.
                match p.push(i) {
                    Ok(()) if i % 7 != 6 => continue,
                    Ok(()) => {
                        if p.flush() {
                            cev.wake();
                        }
                    }
                    Err(v) => send_blocking(&mut p, v, &cev, &pev),
                }
            }
            if p.close() {
                cev.wake();
            }
        });
        let mut next = 0u64;
        let mut sum = 0u64;
        while let Some(v) = recv_blocking(&mut c, &consumer_ev, &producer_ev) {
            assert_eq!(v, next);
            sum = sum.wrapping_add(v);
            next += 1;
        }
        producer.join().unwrap();
        assert_eq!(next, n);
        assert_eq!(sum, n * (n - 1) / 2);
    }
}

/// Loom models (`scripts/concurrency`): every interleaving of a few pushes and pops,
/// with the threads really sleeping on [`Event`]s, so a lost wake-up is a deadlock that
/// loom reports.
#[cfg(all(test, lwmq_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::atomic::AtomicUsize;
    use crate::sync::thread;

    /// An item that counts its drops.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn events() -> (Arc<Event>, Arc<Event>) {
        (Arc::new(Event::default()), Arc::new(Event::default()))
    }

    /// `n` items through a queue of `capacity`, both sides sleeping whenever they must.
    fn stream(capacity: usize, n: usize) {
        crate::sync::model(move || {
            let (mut p, mut c) = channel::<usize>(capacity);
            let (cev, pev) = events();
            let (cev2, pev2) = (cev.clone(), pev.clone());
            let producer = thread::spawn(move || {
                for i in 0..n {
                    send_blocking(&mut p, i, &cev2, &pev2);
                }
            });
            for i in 0..n {
                assert_eq!(recv_blocking(&mut c, &cev, &pev), Some(i));
            }
            producer.join().unwrap();
        });
    }

    #[test]
    fn loom_idle_consumer_is_always_woken() {
        // Never full: only the consumer-idle handshake is at work.
        stream(4, 2);
    }

    #[test]
    fn loom_blocked_producer_is_always_woken() {
        // Capacity 2 (batch 1) and three items: the producer fills the queue and
        // sleeps, the consumer sleeps when it runs dry.
        stream(2, 3);
    }

    #[test]
    fn loom_blocked_producer_is_woken_after_a_batch() {
        // Capacity 4 (batch 2), five items: `head` is published every second pop.
        stream(4, 5);
    }

    #[test]
    fn loom_producer_close_reaches_a_sleeping_consumer() {
        crate::sync::model(|| {
            let (mut p, mut c) = channel::<usize>(2);
            let (cev, pev) = events();
            let (cev2, pev2) = (cev.clone(), pev.clone());
            let producer = thread::spawn(move || {
                send_blocking(&mut p, 7, &cev2, &pev2);
                if p.close() {
                    cev2.wake();
                }
            });
            assert_eq!(recv_blocking(&mut c, &cev, &pev), Some(7));
            assert_eq!(recv_blocking(&mut c, &cev, &pev), None);
            assert!(c.is_closed());
            producer.join().unwrap();
        });
    }

    #[test]
    fn loom_consumer_close_reaches_a_blocked_producer_and_drops_once() {
        crate::sync::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let (mut p, mut c) = channel::<Counted>(2);
            let (cev, pev) = events();
            let (cev2, pev2, d2) = (cev.clone(), pev.clone(), drops.clone());
            let producer = thread::spawn(move || {
                // At most three fit (two slots, one popped): the fourth send finds
                // the queue full and returns (dropping the item) once the consumer
                // has closed.
                for _ in 0..4 {
                    send_blocking(&mut p, Counted(d2.clone()), &cev2, &pev2);
                }
                assert!(p.is_closed());
            });
            let first = recv_blocking(&mut c, &cev, &pev);
            assert!(first.is_some());
            if c.close() {
                pev.wake();
            }
            drop(first);
            producer.join().unwrap();
            drop(c);
            assert_eq!(drops.load(Ordering::Relaxed), 4);
        });
    }

    #[test]
    fn loom_both_halves_dropped_concurrently_drop_each_item_once() {
        crate::sync::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let (mut p, mut c) = channel::<Counted>(2);
            let d2 = drops.clone();
            let producer = thread::spawn(move || {
                p.push(Counted(d2.clone()))
                    .unwrap_or_else(|_| unreachable!());
                p.flush();
                p.push(Counted(d2)).unwrap_or_else(|_| unreachable!());
                // Dropped with one item unflushed: Drop publishes it.
            });
            let popped = c.pop();
            drop(c);
            drop(popped);
            producer.join().unwrap();
            assert_eq!(drops.load(Ordering::Relaxed), 2);
        });
    }
}
