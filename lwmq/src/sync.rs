//! The synchronization primitives of lock-free code in this crate: std's in a normal
//! build, [loom]'s under `cfg(lwmq_loom)`.
//!
//! Lock-free code (the stream pipe's [`spsc`](crate::transport::spsc) queue, the
//! doorbell protocol's steps) takes its `Arc`, atomics, fences, `Mutex`, `thread` and
//! `UnsafeCell` from here instead of from `std`. A normal build gets exactly std's types
//! (re-exports; [`UnsafeCell`] is a zero-cost wrapper), so nothing changes at run time.
//! Built with `RUSTFLAGS="--cfg lwmq_loom"` (see `scripts/concurrency`) the same code runs on
//! loom's types, and a `loom::model` test explores every interleaving, and every value
//! the C11 memory model lets each load return, of a small scenario.
//!
//! Two rules for code that uses this module:
//!
//! - Loom's types only work inside `loom::model`. Tests of a module that uses them
//!   are `#[cfg(not(lwmq_loom))]` (std tests, run as usual and under Miri) or
//!   `#[cfg(lwmq_loom)]` (models, run by `scripts/concurrency`).
//! - Loom models SeqCst *fences* but treats SeqCst loads and stores as AcqRel, so a
//!   store-then-load handshake (announce a flag, then look at the other side's
//!   position) must put a `fence(SeqCst)` between the two, as every one in this crate
//!   does; a SeqCst store followed by a SeqCst load would be correct but unchecked.
//!
//! Atomics over memory this process does not allocate (the futex words and ring
//! positions in a shared-memory mapping, made with `from_ptr`) cannot be loom's: loom
//! models only atomics it creates. They come from [`shared`], which is std in every
//! build. Their protocols are written once, generic over the word type, so a loom test
//! runs the same steps over loom atomics (see `transport::shm::wait`).
//!
//! [loom]: https://docs.rs/loom

#![allow(
    dead_code,
    unused_imports,
    reason = "a toolbox: each build uses the part it needs"
)]

/// Atomics over shared memory mapped from a file: always std's (see the module docs).
pub(crate) mod shared {
    pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering, fence};
}

#[cfg(not(lwmq_loom))]
mod imp {
    pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    pub(crate) use std::thread;

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{
            AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
        };
    }

    /// A busy-wait hint to the CPU (`std::hint::spin_loop`).
    #[inline(always)]
    pub(crate) fn spin_loop() {
        std::hint::spin_loop();
    }

    /// `std::cell::UnsafeCell` behind loom's closure API, so that the same code can
    /// have loom check every access to the cell for data races.
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(v: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(v))
        }

        /// Runs `f` with a pointer for reading the contents.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a pointer for writing the contents.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(lwmq_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
    pub(crate) use loom::thread;

    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{
            AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
        };
    }

    /// Under loom a spin is a yield: it lets the model schedule the thread being
    /// waited for instead of exploring an endless spin.
    pub(crate) fn spin_loop() {
        loom::thread::yield_now();
    }
}

pub(crate) use imp::*;

/// Runs a loom model with a preemption bound of 3 (the number of times a thread may be
/// switched out while it could have gone on), unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise: bugs need few preemptions, and the unbounded state space of the queue's
/// models takes hours.
#[cfg(all(test, lwmq_loom))]
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(3);
    builder.check(f);
}
