//! The async half of a socket's [`Signal`](super::Signal): the wakers of the futures
//! that wait on it.
//!
//! A future that finds nothing to do registers its task's waker here, then looks at its
//! pipes once more, and only then returns `Pending`. A notifier publishes (Release)
//! what the socket waits for, runs a SeqCst fence (the doorbell ring it does anyway) and
//! reads [`Wakers`]'s count of registered wakers; only if it is non-zero does it take
//! the lock and wake them. So a socket nobody awaits costs its notifiers one more load
//! of a word that stays shared in every cache, after the fence they already run.
//!
//! # Why no wake-up is lost
//!
//! The same store-then-load handshake as the doorbell's (`shm::wait`), with the count
//! in the place of `waiters`: the registering side increments the count (under the
//! lock, with the waker stored beside it), runs a SeqCst fence, then re-checks the
//! pipes; the notifier publishes, runs a SeqCst fence, then reads the count. Either the
//! registrar's fence comes first in the single order of SeqCst fences, and the notifier
//! reads the increment (or a later value: a reset by another notifier that took, and
//! woke, the same waker), or the notifier's comes first, and the re-check sees the
//! publication. The waker itself is handed over under the lock. The loom model below
//! (`loom_wakers_*`) runs these steps under every interleaving, with loom's
//! `block_on`, whose waker unparks the thread: a lost wake-up is a deadlock there.
//!
//! Wakers are taken when they are woken (a future that is still not ready registers
//! again when it is polled), and a future that completes or is dropped removes its own
//! (by its key), so the count is zero again once nobody awaits.

use std::task::Waker;

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicUsize, Ordering, fence};

/// The registered wakers of one signal (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    /// How many wakers are in `slots` (written under its lock, read without it).
    armed: AtomicUsize,
    slots: Mutex<Vec<(u64, Waker)>>,
}

fn lock<T>(m: &Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A key no other registration of this process uses.
pub(crate) fn new_key() -> u64 {
    // std's atomic in every build: a counter, no handshake (loom has no const atomics).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Wakers {
    /// Registers (or refreshes) the waker of registration `key`, then runs a SeqCst
    /// fence. The caller re-checks its condition next and returns `Pending` only if it
    /// still does not hold.
    pub(crate) fn register(&self, key: u64, waker: &Waker) {
        let mut slots = lock(&self.slots);
        match slots.iter_mut().find(|(k, _)| *k == key) {
            Some((_, w)) => {
                if !w.will_wake(waker) {
                    w.clone_from(waker);
                }
            }
            None => {
                slots.push((key, waker.clone()));
                self.armed.store(slots.len(), Ordering::Relaxed);
            }
        }
        drop(slots);
        fence(Ordering::SeqCst);
    }

    /// Removes registration `key` (its future completed or was dropped).
    pub(crate) fn remove(&self, key: u64) {
        let mut slots = lock(&self.slots);
        if let Some(pos) = slots.iter().position(|(k, _)| *k == key) {
            slots.swap_remove(pos);
            self.armed.store(slots.len(), Ordering::Relaxed);
        }
    }

    /// Whether any waker is registered.
    pub(crate) fn any(&self) -> bool {
        self.armed.load(Ordering::Relaxed) != 0
    }

    /// The notifier's step. Call after publishing (Release) what the futures wait for
    /// *and* a SeqCst fence (see the module docs): wakes every registered waker, if any.
    #[inline(always)]
    pub(crate) fn wake_after_fence(&self) {
        if self.armed.load(Ordering::Relaxed) != 0 {
            self.wake_all();
        }
    }

    /// Takes every registered waker and wakes it (outside the lock: a waker may poll
    /// its future at once, which registers again).
    #[cold]
    pub(crate) fn wake_all(&self) {
        let taken = {
            let mut slots = lock(&self.slots);
            self.armed.store(0, Ordering::Relaxed);
            std::mem::take(&mut *slots)
        };
        for (_, w) in taken {
            w.wake();
        }
    }
}

#[cfg(all(test, not(lwmq_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize as StdUsize;
    use std::task::Wake;

    struct Count(StdUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn registered_wakers_are_woken_once_and_removed() {
        let w = Wakers::default();
        let c = Arc::new(Count(StdUsize::new(0)));
        let waker = Waker::from(c.clone());
        assert!(!w.any());
        w.wake_after_fence();
        w.register(1, &waker);
        w.register(1, &waker);
        w.register(2, &waker);
        assert!(w.any());
        w.remove(2);
        w.wake_after_fence();
        assert_eq!(c.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!w.any(), "woken wakers are taken");
        w.wake_after_fence();
        assert_eq!(c.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

/// Loom models of the registration handshake (`scripts/concurrency`): a future on
/// loom's `block_on` waits for messages that notifier threads publish and ring for;
/// a lost wake-up leaves it parked for good, which loom reports as a deadlock.
#[cfg(all(test, lwmq_loom))]
mod loom_tests {
    use super::{Wakers, new_key};
    use crate::sync::atomic::{AtomicU32, Ordering, fence};
    use crate::sync::{Arc, thread};
    use std::future::poll_fn;
    use std::task::Poll;

    /// `notifiers` threads each publish one message and ring; one future waits until
    /// it saw all of them, registering as the socket's futures do.
    fn model(notifiers: u32, fenced: bool) {
        crate::sync::model(move || {
            let wakers = Arc::new(Wakers::default());
            let sent = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..notifiers)
                .map(|_| {
                    let (wakers, sent) = (wakers.clone(), sent.clone());
                    thread::spawn(move || {
                        sent.fetch_add(1, Ordering::Release);
                        // The doorbell's ring runs this fence in `Signal::notify`.
                        if fenced {
                            fence(Ordering::SeqCst);
                        }
                        wakers.wake_after_fence();
                    })
                })
                .collect();
            let key = new_key();
            loom::future::block_on(poll_fn(|cx| {
                if sent.load(Ordering::Acquire) == notifiers {
                    return Poll::Ready(());
                }
                wakers.register(key, cx.waker());
                if sent.load(Ordering::Acquire) == notifiers {
                    wakers.remove(key);
                    return Poll::Ready(());
                }
                Poll::Pending
            }));
            for t in threads {
                t.join().unwrap();
            }
        });
    }

    #[test]
    fn loom_wakers_one_notifier() {
        model(1, true);
    }

    #[test]
    fn loom_wakers_two_notifiers() {
        // The future may be woken, register again, and be woken by the second ring.
        model(2, true);
    }

    /// Without the notifier's fence, loom must find the lost wake-up.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn loom_wakers_without_the_notifier_fence_loses_a_wake_up() {
        model(1, false);
    }
}
