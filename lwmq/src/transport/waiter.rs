//! The doorbell watcher: the one thread of a context that parks on doorbells for the
//! futures of its sockets, and keeps the time of their patterns.
//!
//! A future never parks a thread. Notifiers of this process wake its waker through
//! the socket's [`Signal`] ([`super::wakers`]), but shared-memory ring writers (peers in
//! other processes, and `ipc://` peers in this one) only ring the socket's doorbell,
//! a futex word, and only when someone announced they park on it. So a future of a
//! socket that uses `ipc://` announces itself on the doorbell
//! ([`Doorbell::announce`](super::shm::Doorbell::announce)) before its last look at the
//! pipes, and hands the announcement to this thread ([`WaiterShared::watch`]), which
//! parks on every such doorbell at once (FUTEX_WAITV, up to 127 of them; beyond that
//! it looks every millisecond) and wakes the socket's wakers when one is rung. The
//! same entry can carry a deadline: a REQ with resend needs time to pass to resend or
//! give up, and no runtime's timer is at hand, so the watcher wakes it then.
//!
//! Started by the first future that needs it, stopped and joined with the context. A
//! context whose futures only wait on inproc, tcp, unix or fd peers never starts it.
//! An entry is dropped (its announcement withdrawn) once its doorbell rang or its
//! deadline passed (the wakers are woken), or once no waker waits on its socket any
//! more (its future was woken another way, completed, or was dropped; a future still
//! pending hands a new entry at its next poll).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::shm::Doorbell;
use super::shm::wait::{OwnedTicket, max_park, park_any};
use super::{Signal, lock};
use crate::worker::Worker;

/// What a pending future hands the watcher.
#[derive(Debug)]
pub(crate) struct Watch {
    /// The socket whose wakers to wake.
    pub signal: Arc<Signal>,
    /// An announcement on the socket's shared-memory doorbell, taken before the
    /// future's last look at its pipes.
    pub ticket: Option<OwnedTicket>,
    /// When to wake the wakers anyway (a pattern's timer).
    pub deadline: Option<Instant>,
}

/// What the futures share with the watcher thread.
#[derive(Debug)]
pub(crate) struct WaiterShared {
    queue: Mutex<Vec<Watch>>,
    /// Rung when `queue` grows or the thread should stop.
    ctl: Doorbell,
    stop: AtomicBool,
}

impl WaiterShared {
    /// Hands `w` to the thread.
    pub(crate) fn watch(&self, w: Watch) {
        lock(&self.queue).push(w);
        self.ctl.notify();
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.ctl.notify();
    }
}

/// Starts the watcher thread.
pub(crate) fn start() -> std::io::Result<Worker<WaiterShared>> {
    let shared = Arc::new(WaiterShared {
        queue: Mutex::new(Vec::new()),
        ctl: Doorbell::on_heap(),
        stop: AtomicBool::new(false),
    });
    let s = shared.clone();
    Worker::spawn("lwmq-async", shared, WaiterShared::stop, move || run(&s))
}

fn run(shared: &WaiterShared) {
    let mut watched: Vec<Watch> = Vec::new();
    loop {
        // Announce on `ctl` before looking at the queue: a `watch` after this look
        // rings it, and the park below returns at once.
        let ctl = shared.ctl.announce();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let new = std::mem::take(&mut *lock(&shared.queue));
        for w in new {
            // One entry per socket: the newer announcement replaces the older one (a
            // ring between the two is seen by the newer one's future, which looked at
            // its pipes after taking it).
            match watched
                .iter_mut()
                .find(|o| Arc::ptr_eq(&o.signal, &w.signal))
            {
                Some(old) => {
                    if old.ticket.as_ref().is_some_and(OwnedTicket::rung) {
                        old.signal.wakers.wake_all();
                    }
                    *old = w;
                }
                None => watched.push(w),
            }
        }
        let now = Instant::now();
        watched.retain(|w| {
            let rung = w.ticket.as_ref().is_some_and(OwnedTicket::rung);
            if rung || w.deadline.is_some_and(|d| d <= now) {
                w.signal.wakers.wake_all();
                return false;
            }
            w.signal.wakers.any()
        });
        let next = watched.iter().filter_map(|w| w.deadline).min();
        let timeout = next.map_or(max_park(), |d| (d - now).min(max_park()));
        let tickets: Vec<&OwnedTicket> = std::iter::once(&ctl)
            .chain(watched.iter().filter_map(|w| w.ticket.as_ref()))
            .collect();
        park_any(&tickets, timeout);
    }
}
