//! [`poll`]: wait until one of several sockets can receive or send, like `zmq_poll`.
//!
//! The poller makes a [`Signal`] of its own and adds it as an observer of each socket's
//! signal for the duration of the call, so any ring on any of the sockets wakes it.
//! It waits as the pipe contract says, parked on every socket's signal at once
//! ([`Signal::wait_any`], FUTEX_WAITV): shared-memory peers in other processes ring a
//! socket's own signal, not the poller's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::transport::Signal;
use crate::{Result, Socket};

/// One socket to poll, what to wait for, and (after [`poll`]) what is ready.
#[derive(Debug)]
pub struct PollItem<'a> {
    socket: &'a Socket,
    want_readable: bool,
    want_writable: bool,
    readable: bool,
    writable: bool,
}

impl<'a> PollItem<'a> {
    /// Waits for `socket` to become readable and/or writable.
    pub fn new(socket: &'a Socket, readable: bool, writable: bool) -> PollItem<'a> {
        PollItem {
            socket,
            want_readable: readable,
            want_writable: writable,
            readable: false,
            writable: false,
        }
    }
    /// Waits for a message to receive.
    pub fn readable(socket: &'a Socket) -> PollItem<'a> {
        PollItem::new(socket, true, false)
    }
    /// Waits until a message can be sent.
    pub fn writable(socket: &'a Socket) -> PollItem<'a> {
        PollItem::new(socket, false, true)
    }
    /// After [`poll`]: a message can be received without blocking.
    pub fn is_readable(&self) -> bool {
        self.readable
    }
    /// After [`poll`]: a message can be sent without blocking.
    pub fn is_writable(&self) -> bool {
        self.writable
    }
    /// The socket.
    pub fn socket(&self) -> &'a Socket {
        self.socket
    }
}

/// Waits until at least one item is ready or `timeout` passes (`None`: no limit;
/// zero: just look). Returns how many items are ready.
pub fn poll(items: &mut [PollItem<'_>], timeout: Option<Duration>) -> Result<usize> {
    static KEYS: AtomicU64 = AtomicU64::new(1);
    let key = KEYS.fetch_add(1, Ordering::Relaxed);
    let deadline = timeout.map(|t| Instant::now() + t);
    let signal = Arc::new(Signal::new());
    for item in items.iter() {
        item.socket.shared().signal.observe(key, signal.clone());
    }
    // Shared-memory peers in other processes ring only their socket's doorbell, not
    // our observers: we park on every socket's doorbell at once (FUTEX_WAITV), plus
    // our own signal, which in-process notifiers ring through the observers.
    let sockets: Vec<Arc<Signal>> = items
        .iter()
        .map(|i| i.socket.shared().signal.clone())
        .chain(std::iter::once(signal.clone()))
        .collect();
    let spin = Duration::ZERO;
    let readers: Vec<&Socket> = items
        .iter()
        .filter(|i| i.want_readable)
        .map(|i| i.socket)
        .collect();
    let result = (|| {
        let mut attempt = || -> Option<Result<usize>> {
            let mut ready = 0;
            for item in items.iter_mut() {
                item.readable = item.want_readable && item.socket.poll_readable();
                item.writable = item.want_writable && item.socket.poll_writable();
                if item.readable || item.writable {
                    ready += 1;
                }
            }
            if ready > 0 {
                return Some(Ok(ready));
            }
            for item in items.iter() {
                if let Err(e) = item.socket.check_alive() {
                    return Some(Err(e));
                }
            }
            None
        };
        if let Some(r) = attempt() {
            return r;
        }
        if timeout == Some(Duration::ZERO) {
            return Ok(0);
        }
        let signals: Vec<&Signal> = sockets.iter().map(|s| &**s).collect();
        loop {
            // A socket's first ipc:// endpoint changes the doorbell it is rung on:
            // look again at least every MAX_PARK.
            let slice = Instant::now() + crate::transport::shm::wait::MAX_PARK;
            let mut until = deadline.map_or(slice, |d| d.min(slice));
            // A REQ with resend needs to be asked again at its next resend.
            for s in &readers {
                if let Some(t) = s.timer() {
                    until = until.min(t);
                }
            }
            if let Some(r) = Signal::wait_any(&signals, spin, Some(until), &mut attempt) {
                return r;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(0);
            }
        }
    })();
    for item in items.iter() {
        item.socket.shared().signal.unobserve(key);
    }
    result
}
