//! Doorbells: how a receiving socket sleeps until any of its shared-memory peers (or
//! anything else that holds its doorbell) has something for it.
//!
//! A doorbell is one page of its own memory file, mapped by the socket that owns it and
//! by every peer the socket has given it to (in the rendezvous hello). One doorbell per
//! receiving socket, shared by all of its peers, is what lets `recv` wait on many peers
//! at once.
//!
//! # Layout of the page
//!
//! | offset | field | written by | read by |
//! |---|---|---|---|
//! | 0 | `magic: u64` = `"LWMQBELL"` | creator, once | anyone mapping it (checked) |
//! | 64 | `epoch: u32` (the futex word) | notifiers (`fetch_add`, SeqCst), only when `waiters != 0` | the owner (futex compare) |
//! | 68 | `waiters: u32` | the owner's threads, `+1` before parking, `-1` after | notifiers (after a SeqCst fence) |
//!
//! # The protocol, and why no wake-up is lost
//!
//! A notifier has just published something (a ring's `tail` or `head`, with Release).
//! It then runs a SeqCst fence and reads `waiters`; only if it is non-zero does it bump
//! `epoch` and call FUTEX_WAKE. So when nobody is parked, notifying costs a fence and a
//! read of a line that stays shared in every cache: no syscall, no cache-line bounce.
//!
//! A waiter ([`Doorbell::prepare_wait`]) increments `waiters`, runs a SeqCst fence,
//! reads `epoch` into `e`, and only then re-checks its condition (the rings). If the
//! condition is still false it parks with FUTEX_WAIT(`epoch`, `e`), which returns at once
//! if `epoch` is no longer `e`. The two fences order the two store-then-load sequences:
//! either the notifier's fence comes first, and the waiter's re-check sees the published
//! data; or the waiter's comes first, the notifier sees `waiters != 0` and bumps `epoch`,
//! which either happened before the waiter read `e` (then the bump happened-before the
//! re-check, which sees the data) or after (then the futex value differs, or the sleeper
//! is woken).
//!
//! The protocol's atomic steps are `protocol`'s functions, generic over the word type
//! (`BellWord`): the doorbell runs them on std atomics over its page, and a loom model
//! (`loom_tests`, run by `scripts/concurrency`) runs the same functions on loom atomics,
//! with FUTEX_WAIT/FUTEX_WAKE emulated by a compare-and-sleep under a loom mutex, and
//! checks that no interleaving leaves a waiter asleep while its condition holds.
//!
//! # Trust
//!
//! Every peer can write the page. A hostile one can cause spurious wake-ups (harmless:
//! waiters re-check), or zero `waiters` so that other peers skip their wake-ups; to bound
//! that damage a parked waiter never sleeps longer than [`max_park`] (by default
//! [`MAX_PARK`]) before re-checking.
//! Nothing read from the page is used as an index or a length.
//!
//! # Testing the protocol
//!
//! That bound also hides a lost wake-up: the waiter just wakes 100 ms late. A test that
//! wants to see one runs in a process of its own with the environment variable
//! [`MAX_PARK_ENV`] set to a park much longer than the test ([`max_park`]), and waits
//! with a deadline: a lost ring then shows as a wait that ends at its deadline instead
//! of a short delay. (The process-wide [`park_timeouts`] counter is a diagnostic, not a
//! test oracle: every thread of the process adds to it.)

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::sync::shared::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use super::region::Region;
use super::sys;
use crate::Result;

/// The atomic operations the doorbell protocol does on its two words, so that its steps
/// ([`protocol`]) are written once: for the real page, whose words are std atomics over
/// the mapping, and for the loom model, whose words are loom's (see `crate::sync`).
pub(crate) trait BellWord {
    fn load(&self, order: Ordering) -> u32;
    fn fetch_add(&self, v: u32, order: Ordering) -> u32;
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32;
    /// A fence of the memory model these words live in.
    fn fence(order: Ordering);
}

impl BellWord for AtomicU32 {
    #[inline(always)]
    fn load(&self, order: Ordering) -> u32 {
        AtomicU32::load(self, order)
    }
    #[inline(always)]
    fn fetch_add(&self, v: u32, order: Ordering) -> u32 {
        AtomicU32::fetch_add(self, v, order)
    }
    #[inline(always)]
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32 {
        AtomicU32::fetch_sub(self, v, order)
    }
    #[inline(always)]
    fn fence(order: Ordering) {
        fence(order);
    }
}

#[cfg(lwmq_loom)]
impl BellWord for crate::sync::atomic::AtomicU32 {
    fn load(&self, order: Ordering) -> u32 {
        crate::sync::atomic::AtomicU32::load(self, order)
    }
    fn fetch_add(&self, v: u32, order: Ordering) -> u32 {
        crate::sync::atomic::AtomicU32::fetch_add(self, v, order)
    }
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32 {
        crate::sync::atomic::AtomicU32::fetch_sub(self, v, order)
    }
    fn fence(order: Ordering) {
        crate::sync::atomic::fence(order);
    }
}

/// The protocol's atomic steps (see the module docs); the futex calls around them are
/// the caller's.
pub(crate) mod protocol {
    use super::{BellWord, Ordering};

    /// The notifier's step, after it published (Release) what the owner waits for:
    /// SeqCst fence, read `waiters`, and bump `epoch` if non-zero. Returns whether it
    /// bumped, that is whether the caller must FUTEX_WAKE `epoch`.
    #[inline(always)]
    pub(crate) fn ring<W: BellWord>(epoch: &W, waiters: &W) -> bool {
        W::fence(Ordering::SeqCst);
        if waiters.load(Ordering::Relaxed) != 0 {
            epoch.fetch_add(1, Ordering::SeqCst);
            true
        } else {
            false
        }
    }

    /// The waiter's announcement: `waiters += 1`, SeqCst fence, read `epoch`. The
    /// caller re-checks its condition next and, if still false, parks with
    /// FUTEX_WAIT(`epoch`, the value returned).
    #[inline(always)]
    pub(crate) fn announce<W: BellWord>(epoch: &W, waiters: &W) -> u32 {
        waiters.fetch_add(1, Ordering::SeqCst);
        W::fence(Ordering::SeqCst);
        epoch.load(Ordering::SeqCst)
    }

    /// Withdraws an announcement (after the park, or instead of it).
    #[inline(always)]
    pub(crate) fn withdraw<W: BellWord>(waiters: &W) {
        waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Size of a doorbell's memory file.
pub const BELL_SIZE: usize = 4096;
const BELL_MAGIC: u64 = u64::from_ne_bytes(*b"LWMQBELL");
const MAGIC_OFFSET: usize = 0;
const EPOCH_OFFSET: usize = 64;
const WAITERS_OFFSET: usize = 68;

/// The longest a parked waiter sleeps before re-checking on its own (a bound on what a
/// hostile peer that clears `waiters` can cost the other peers).
pub const MAX_PARK: Duration = Duration::from_millis(100);

/// The environment variable that overrides [`MAX_PARK`] for the whole process, in
/// milliseconds (read once; for tests, see the module docs).
pub const MAX_PARK_ENV: &str = "LWMQ_MAX_PARK_MS";

/// The longest a parked waiter sleeps before re-checking on its own: [`MAX_PARK`], or
/// what [`MAX_PARK_ENV`] says (at least 1 ms).
pub fn max_park() -> Duration {
    static PARK: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *PARK.get_or_init(|| {
        std::env::var(MAX_PARK_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(MAX_PARK, |ms| Duration::from_millis(ms.max(1)))
    })
}

/// How many parks ran a full [`max_park`] without a wake-up, process-wide (a
/// diagnostic: with well-behaved peers that keep sending, it stays 0).
static PARK_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// The number of parks that ran a full [`max_park`] without being woken, by any thread
/// of the process (a diagnostic; see the module docs for how tests see a lost wake-up).
pub fn park_timeouts() -> u64 {
    PARK_TIMEOUTS.load(Ordering::Relaxed)
}

/// A futex word in shared memory that peers ring to wake the socket that owns it.
/// Cloning is cheap (the mapping is reference counted).
#[derive(Clone)]
pub struct Doorbell {
    region: Arc<Region>,
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbell")
            .field("epoch", &self.epoch())
            .field("waiters", &self.waiters().load(Ordering::Relaxed))
            .finish()
    }
}

impl Doorbell {
    /// Creates a doorbell in a new sealed memory file (one per receiving socket).
    pub fn new() -> Result<Doorbell> {
        let region = Region::memfd(c"lwmq-doorbell", BELL_SIZE)?;
        let bell = Doorbell {
            region: Arc::new(region),
        };
        bell.word64(MAGIC_OFFSET)
            .store(BELL_MAGIC, Ordering::Relaxed);
        Ok(bell)
    }

    /// A doorbell in private heap memory: for tests of the ring logic, for signals no
    /// other process needs to ring (a poll's), and as the fallback when no memory file
    /// can be made.
    pub(crate) fn on_heap() -> Doorbell {
        let bell = Doorbell {
            region: Arc::new(Region::heap(BELL_SIZE)),
        };
        bell.word64(MAGIC_OFFSET)
            .store(BELL_MAGIC, Ordering::Relaxed);
        bell
    }

    /// Maps a doorbell a peer sent us, after checking its seals, size and magic.
    pub(crate) fn from_peer(fd: OwnedFd) -> std::result::Result<Doorbell, String> {
        let size = sys::sealed_memfd_size(&fd)?;
        if size != BELL_SIZE as u64 {
            return Err(format!(
                "the peer's doorbell is {size} bytes, expected {BELL_SIZE}"
            ));
        }
        let region = Region::map(fd, BELL_SIZE)
            .map_err(|e| format!("mapping the peer's doorbell failed: {e}"))?;
        let bell = Doorbell {
            region: Arc::new(region),
        };
        if bell.word64(MAGIC_OFFSET).load(Ordering::Relaxed) != BELL_MAGIC {
            return Err("the peer's doorbell has a bad magic number".into());
        }
        Ok(bell)
    }

    /// The memory file, to hand to a peer (`None` for a heap doorbell).
    pub fn memfd(&self) -> Option<BorrowedFd<'_>> {
        self.region.fd().map(|fd| fd.as_fd())
    }

    fn word32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset % 4 == 0 && offset + 4 <= BELL_SIZE);
        // SAFETY: the region is BELL_SIZE bytes, page aligned, alive as long as `self`;
        // `offset` is a 4-aligned constant inside it; every access to the word (ours and,
        // by protocol, the peers') is atomic.
        unsafe { AtomicU32::from_ptr(self.region.as_ptr().add(offset).cast()) }
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= BELL_SIZE);
        // SAFETY: as in `word32`, with an 8-aligned offset.
        unsafe { AtomicU64::from_ptr(self.region.as_ptr().add(offset).cast()) }
    }

    fn epoch_word(&self) -> &AtomicU32 {
        self.word32(EPOCH_OFFSET)
    }

    fn waiters(&self) -> &AtomicU32 {
        self.word32(WAITERS_OFFSET)
    }

    /// Wakes the owner if (and only if) one of its threads announced it is parking.
    /// Call after publishing (Release) whatever the owner waits for. No syscall when
    /// nobody is parked.
    pub fn notify(&self) {
        if protocol::ring(self.epoch_word(), self.waiters()) {
            sys::futex_wake_all(self.epoch_word(), self.is_private());
        }
    }

    /// Whether the doorbell is in this process's own memory (its futex calls are
    /// private: no other process can wait on or ring it).
    fn is_private(&self) -> bool {
        self.region.is_private()
    }

    /// The current epoch (bumped by every notify that found a parked waiter).
    pub fn epoch(&self) -> u32 {
        self.epoch_word().load(Ordering::SeqCst)
    }

    /// Announces that this thread is about to park. Re-check the condition after this
    /// call and before [`WaitTicket::park`]; dropping the ticket withdraws the
    /// announcement.
    pub fn prepare_wait(&self) -> WaitTicket<'_> {
        let epoch = protocol::announce(self.epoch_word(), self.waiters());
        WaitTicket { bell: self, epoch }
    }

    /// Polls `ready` until it returns `Some`: first spinning for `spin`, then parking on
    /// the futex (re-checking at least every [`max_park`]). Returns `None` once
    /// `deadline` passes. `ready` must be cheap and must not block.
    pub fn wait_until<T>(
        &self,
        spin: Duration,
        deadline: Option<Instant>,
        ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        self.wait_from(Instant::now(), spin, deadline, ready)
    }

    /// As [`Doorbell::wait_until`], for a caller that has just read the clock: the
    /// spin counts from `start` (one clock read less on the way to a wait).
    pub fn wait_from<T>(
        &self,
        start: Instant,
        spin: Duration,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let mut i = 0u32;
        // No spin asked: straight to the announce-recheck-park loop below.
        while !spin.is_zero() {
            if let Some(v) = ready() {
                return Some(v);
            }
            i = i.wrapping_add(1);
            if i % 32 == 0 {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return None;
                }
                if now.duration_since(start) >= spin {
                    break;
                }
            }
            std::hint::spin_loop();
        }
        loop {
            let ticket = self.prepare_wait();
            if let Some(v) = ready() {
                return Some(v);
            }
            let now = Instant::now();
            let max = max_park();
            let slice = match deadline {
                Some(d) if d <= now => return None,
                Some(d) => (d - now).min(max),
                None => max,
            };
            if !ticket.park(slice) && slice == max {
                // Nobody woke us for a whole max_park: either nothing happened, or a
                // peer did not ring (a hostile peer, or a bug). Counted for tests.
                PARK_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Polls `ready` until it returns `Some`, parking on *all* of `bells` at once between
/// looks (FUTEX_WAITV): whichever of them is rung wakes the caller. Used by `poll` over
/// several sockets. Spins for `spin` first; returns `None` once `deadline` passes.
/// Without FUTEX_WAITV (Linux < 5.16) or with more than 128 bells it parks on the first
/// bell in slices of at most 1 ms.
pub(crate) fn wait_any<T>(
    bells: &[&Doorbell],
    spin: Duration,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> Option<T>,
) -> Option<T> {
    let Some(first) = bells.first() else {
        return ready();
    };
    if bells.len() == 1 {
        return first.wait_until(spin, deadline, ready);
    }
    let start = Instant::now();
    while start.elapsed() < spin {
        if let Some(v) = ready() {
            return Some(v);
        }
        std::hint::spin_loop();
    }
    let mut waitv = bells.len() <= sys::FUTEX_WAITV_MAX;
    loop {
        let tickets: Vec<WaitTicket<'_>> = bells.iter().map(|b| b.prepare_wait()).collect();
        if let Some(v) = ready() {
            return Some(v);
        }
        let now = Instant::now();
        let cap = if waitv {
            max_park()
        } else {
            Duration::from_millis(1)
        };
        let slice = match deadline {
            Some(d) if d <= now => return None,
            Some(d) => (d - now).min(cap),
            None => cap,
        };
        if waitv {
            let words: Vec<(&AtomicU32, u32, bool)> = tickets
                .iter()
                .map(|t| (t.bell.epoch_word(), t.epoch, t.bell.is_private()))
                .collect();
            match sys::futex_waitv(&words, Some(slice)) {
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!("FUTEX_WAITV unavailable ({e}); polling in 1 ms slices");
                    waitv = false;
                }
            }
        }
        let mut tickets = tickets;
        let t = tickets.swap_remove(0);
        drop(tickets);
        t.park(slice);
    }
}

/// An announcement on a [`Doorbell`] that owns (a clone of) it: what a future hands
/// the context's doorbell watcher (`transport::waiter`), which parks on the doorbell in
/// the future's place. Dropping it withdraws the announcement.
#[derive(Debug)]
pub(crate) struct OwnedTicket {
    bell: Doorbell,
    epoch: u32,
}

impl Doorbell {
    /// As [`Doorbell::prepare_wait`], with a ticket that owns the doorbell.
    pub(crate) fn announce(&self) -> OwnedTicket {
        let epoch = protocol::announce(self.epoch_word(), self.waiters());
        OwnedTicket {
            bell: self.clone(),
            epoch,
        }
    }
}

impl OwnedTicket {
    /// Whether the doorbell was rung since the ticket was taken.
    pub(crate) fn rung(&self) -> bool {
        self.bell.epoch() != self.epoch
    }
}

impl Drop for OwnedTicket {
    fn drop(&mut self) {
        protocol::withdraw(self.bell.waiters());
    }
}

/// Parks until the doorbell of any of `tickets` is rung after its ticket was taken, or
/// `timeout` passes (spurious returns are possible: callers look at
/// [`OwnedTicket::rung`]). Parks on all of them at once with FUTEX_WAITV; with more
/// than [`sys::FUTEX_WAITV_MAX`] tickets, or without FUTEX_WAITV, it sleeps at most
/// 1 ms instead, and the caller looks again.
pub(crate) fn park_any(tickets: &[&OwnedTicket], timeout: Duration) {
    if tickets.is_empty() {
        std::thread::sleep(timeout);
        return;
    }
    if tickets.len() <= sys::FUTEX_WAITV_MAX {
        let words: Vec<(&AtomicU32, u32, bool)> = tickets
            .iter()
            .map(|t| (t.bell.epoch_word(), t.epoch, t.bell.is_private()))
            .collect();
        match sys::futex_waitv(&words, Some(timeout)) {
            Ok(_) => return,
            Err(e) => tracing::debug!("FUTEX_WAITV unavailable ({e}); polling in 1 ms slices"),
        }
    }
    if !tickets.iter().any(|t| t.rung()) {
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
    }
}

/// A thread's announcement that it is parking on a [`Doorbell`]; see
/// [`Doorbell::prepare_wait`].
#[derive(Debug)]
pub struct WaitTicket<'a> {
    bell: &'a Doorbell,
    epoch: u32,
}

impl WaitTicket<'_> {
    /// The epoch read when the ticket was taken.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Sleeps until a notify after the ticket was taken, or `timeout` (spurious
    /// returns are possible: re-check the condition). Returns `false` if the timeout
    /// expired.
    pub fn park(self, timeout: Duration) -> bool {
        sys::futex_wait(
            self.bell.epoch_word(),
            self.epoch,
            Some(timeout),
            self.bell.is_private(),
        )
    }
}

impl Drop for WaitTicket<'_> {
    fn drop(&mut self) {
        protocol::withdraw(self.bell.waiters());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Set in a test's own process (see [`in_own_process`]).
    const OWN_PROCESS: &str = "LWMQ_TEST_OWN_PROCESS";

    /// How long a test in its own process may run before its watchdog aborts it: far
    /// longer than any wake-up takes, far shorter than the park.
    const WAKE_WATCHDOG: Duration = Duration::from_secs(120);

    /// Runs `body` in a process of its own (this test binary re-run for `test` only)
    /// in which a park never times out by itself ([`MAX_PARK_ENV`] = one day): a waiter
    /// without a deadline then returns only when rung, so a lost wake-up is a hang,
    /// which a watchdog turns into an abort of that process (and a failure here).
    /// `test` is the test's path as libtest names it (`module_path!()` minus the crate).
    pub(crate) fn in_own_process(test: &str, body: impl FnOnce()) {
        if std::env::var_os(OWN_PROCESS).is_some() {
            assert_eq!(max_park(), Duration::from_secs(86_400));
            let done = Arc::new(AtomicBool::new(false));
            let flag = done.clone();
            let name = test.to_owned();
            std::thread::spawn(move || {
                let start = Instant::now();
                while !flag.load(Ordering::Acquire) {
                    if start.elapsed() > WAKE_WATCHDOG {
                        eprintln!("watchdog: {name} waited {WAKE_WATCHDOG:?}: a wake-up was lost");
                        std::process::abort();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            body();
            done.store(true, Ordering::Release);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(OWN_PROCESS, "1")
            .env(MAX_PARK_ENV, "86400000")
            .output()
            .expect("run the test in its own process");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{test} in its own process: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `module::path::name` as libtest names a test of this crate.
    pub(crate) fn test_name(module: &str, name: &str) -> String {
        let module = module.split_once("::").map_or("", |(_, rest)| rest);
        format!("{module}::{name}")
    }

    #[test]
    fn notify_without_waiters_does_not_bump_epoch() {
        let bell = Doorbell::new().unwrap();
        let e = bell.epoch();
        bell.notify();
        assert_eq!(bell.epoch(), e);
        let t = bell.prepare_wait();
        bell.notify();
        assert_eq!(bell.epoch(), e.wrapping_add(1));
        drop(t);
        assert_eq!(bell.waiters().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn parked_waiter_is_woken() {
        // A doorbell in a memory file (shared futex calls) and one on the heap
        // (private ones).
        for bell in [Doorbell::new().unwrap(), Doorbell::on_heap()] {
            parked_waiter_is_woken_on(bell);
        }
    }

    fn parked_waiter_is_woken_on(bell: Doorbell) {
        let flag = Arc::new(AtomicBool::new(false));
        let (b2, f2) = (bell.clone(), flag.clone());
        let waiter = std::thread::spawn(move || {
            b2.wait_until(Duration::ZERO, None, || {
                f2.load(Ordering::Acquire).then_some(7)
            })
        });
        std::thread::sleep(Duration::from_millis(20));
        flag.store(true, Ordering::Release);
        bell.notify();
        assert_eq!(waiter.join().unwrap(), Some(7));
    }

    #[test]
    fn parked_consumer_never_misses_a_wake_up() {
        // The consumer parks at once whenever the ring is empty; the producer only
        // rings the doorbell when the consumer announced it parks. In a process whose
        // parks never time out, a lost wake-up leaves the consumer asleep for good while
        // messages wait (and the watchdog fails the test).
        let name = test_name(module_path!(), "parked_consumer_never_misses_a_wake_up");
        in_own_process(&name, || {
            let seg = super::super::segment::Segment::on_heap(4096);
            let bell = Doorbell::new().unwrap();
            let mut w = super::super::ring::RingWriter::new(seg.ring(0), Some(bell.clone()));
            let mut r = super::super::ring::RingReader::new(seg.ring(0), None);
            const N: u64 = 20_000;
            let producer = std::thread::spawn(move || {
                for i in 0..N {
                    let m = crate::Message::from(i.to_le_bytes().to_vec());
                    while w.try_send(&m).is_err() {
                        std::thread::yield_now();
                    }
                    if i % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            });
            for i in 0..N {
                let m = bell
                    .wait_until(Duration::ZERO, None, || r.try_recv().unwrap())
                    .expect("no deadline");
                assert_eq!(m.frames()[0][..], i.to_le_bytes());
            }
            producer.join().unwrap();
        });
    }

    #[test]
    fn futex_waitv_times_out_and_sees_changed_values() {
        let a = Doorbell::new().unwrap();
        let b = Doorbell::new().unwrap();
        let h = Doorbell::on_heap();
        let words = [
            (a.epoch_word(), a.epoch(), false),
            (b.epoch_word(), b.epoch(), false),
            (h.epoch_word(), h.epoch(), true),
        ];
        assert!(
            !sys::futex_waitv(&words, Some(Duration::from_millis(5))).expect("FUTEX_WAITV"),
            "nothing rang: timed out"
        );
        let stale = [(a.epoch_word(), a.epoch().wrapping_add(1), false)];
        assert!(sys::futex_waitv(&stale, Some(Duration::from_secs(5))).expect("FUTEX_WAITV"));
    }

    #[test]
    fn wait_any_is_woken_by_any_bell() {
        // In a process whose parks never time out: returning at all means the ring of
        // the third bell woke the waiter.
        let name = test_name(module_path!(), "wait_any_is_woken_by_any_bell");
        in_own_process(&name, || {
            let bells: Vec<Doorbell> = (0..3).map(|_| Doorbell::new().unwrap()).collect();
            let flag = Arc::new(AtomicBool::new(false));
            let (ringer, f2) = (bells[2].clone(), flag.clone());
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                f2.store(true, Ordering::Release);
                ringer.notify();
            });
            let refs: Vec<&Doorbell> = bells.iter().collect();
            let got = wait_any(&refs, Duration::ZERO, None, || {
                flag.load(Ordering::Acquire).then_some(3)
            });
            t.join().unwrap();
            assert_eq!(got, Some(3), "woken by the ring");
            for b in &bells {
                assert_eq!(b.waiters().load(Ordering::Relaxed), 0, "tickets withdrawn");
            }
            let none: Option<()> = wait_any(
                &refs,
                Duration::ZERO,
                Some(Instant::now() + Duration::from_millis(10)),
                || None,
            );
            assert!(none.is_none());
        });
    }

    #[test]
    fn wait_until_times_out() {
        let bell = Doorbell::on_heap();
        let r: Option<()> = bell.wait_until(
            Duration::from_micros(10),
            Some(Instant::now() + Duration::from_millis(5)),
            || None,
        );
        assert!(r.is_none());
        assert_eq!(bell.waiters().load(Ordering::Relaxed), 0);
    }
}

/// Loom models of the wake-up protocol (`scripts/concurrency`). The futex is emulated
/// the way the kernel implements it: FUTEX_WAIT compares the word and goes to sleep
/// under one lock, FUTEX_WAKE takes that lock to wake the sleepers; there is no timeout,
/// so a lost wake-up is a deadlock, which loom reports.
#[cfg(all(test, lwmq_loom))]
mod loom_tests {
    use super::{BellWord, protocol};
    use crate::sync::atomic::{AtomicU32, Ordering};
    use crate::sync::{Arc, Condvar, Mutex, thread};

    /// A futex word's kernel side: compare-and-sleep, wake all.
    #[derive(Default)]
    struct Futex {
        bucket: Mutex<()>,
        sleepers: Condvar,
    }

    impl Futex {
        /// FUTEX_WAIT: sleeps unless `word` is no longer `expected` (may return early;
        /// callers re-check, as with the real one).
        fn wait<W: BellWord>(&self, word: &W, expected: u32) {
            let bucket = self.bucket.lock().unwrap();
            if word.load(Ordering::SeqCst) == expected {
                drop(self.sleepers.wait(bucket).unwrap());
            }
        }

        /// FUTEX_WAKE of every sleeper.
        fn wake_all(&self) {
            let _bucket = self.bucket.lock().unwrap();
            self.sleepers.notify_all();
        }
    }

    /// The doorbell's two words and its futex, over words of type `W`.
    #[derive(Default)]
    struct Bell<W> {
        epoch: W,
        waiters: W,
        futex: Futex,
    }

    impl<W: BellWord> Bell<W> {
        /// As `Doorbell::notify`.
        fn notify(&self) {
            if protocol::ring(&self.epoch, &self.waiters) {
                self.futex.wake_all();
            }
        }

        /// As `Doorbell::wait_until` with no spin and no deadline: announce, re-check,
        /// park, withdraw, until `ready` (the `MAX_PARK` bound is left out on purpose:
        /// it would hide a lost wake-up).
        fn wait_until(&self, ready: impl Fn() -> bool) {
            loop {
                if ready() {
                    return;
                }
                let epoch = protocol::announce(&self.epoch, &self.waiters);
                if ready() {
                    protocol::withdraw(&self.waiters);
                    return;
                }
                self.futex.wait(&self.epoch, epoch);
                protocol::withdraw(&self.waiters);
            }
        }
    }

    /// `notifiers` threads each publish one message (a counter, Release) and ring;
    /// `waiters` threads each wait until they saw all of them.
    fn model<W: BellWord + Default + Send + Sync + 'static>(notifiers: u32, waiters: u32) {
        crate::sync::model(move || {
            let bell = Arc::new(Bell::<W>::default());
            let sent = Arc::new(AtomicU32::new(0));
            let mut threads = Vec::new();
            for _ in 0..notifiers {
                let (bell, sent) = (bell.clone(), sent.clone());
                threads.push(thread::spawn(move || {
                    sent.fetch_add(1, Ordering::Release);
                    bell.notify();
                }));
            }
            for _ in 1..waiters {
                let (bell, sent) = (bell.clone(), sent.clone());
                threads.push(thread::spawn(move || {
                    bell.wait_until(|| sent.load(Ordering::Acquire) == notifiers);
                }));
            }
            bell.wait_until(|| sent.load(Ordering::Acquire) == notifiers);
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(bell.waiters.load(Ordering::Relaxed), 0, "tickets withdrawn");
        });
    }

    #[test]
    fn loom_doorbell_one_notifier_one_waiter() {
        model::<AtomicU32>(1, 1);
    }

    #[test]
    fn loom_doorbell_two_notifiers_one_waiter() {
        // The waiter may park twice; the epoch must be re-armed between the two.
        model::<AtomicU32>(2, 1);
    }

    #[test]
    fn loom_doorbell_one_notifier_two_waiters() {
        // Two of the owner's threads parked at once (`waiters` = 2).
        model::<AtomicU32>(1, 2);
    }

    /// The protocol with its two fences left out: loom must find the lost wake-up (this
    /// shows the model checks the fences, rather than passing whatever they are).
    #[derive(Default)]
    struct Unfenced(AtomicU32);

    impl BellWord for Unfenced {
        fn load(&self, order: Ordering) -> u32 {
            self.0.load(order)
        }
        fn fetch_add(&self, v: u32, order: Ordering) -> u32 {
            self.0.fetch_add(v, order)
        }
        fn fetch_sub(&self, v: u32, order: Ordering) -> u32 {
            self.0.fetch_sub(v, order)
        }
        fn fence(_: Ordering) {}
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn loom_doorbell_without_fences_loses_a_wake_up() {
        model::<Unfenced>(1, 1);
    }
}
