//! [`poll`]: wait until one of several sockets can receive or send, like `zmq_poll`.
//!
//! The poller makes a [`Signal`] of its own and adds it as an observer of each socket's
//! signal for the duration of the call, so any ring on any of the sockets wakes it.
//! It waits as the pipe contract says ([`Signal::wait_until`]). Polling a single socket
//! waits on that socket's own signal, which its shared-memory peers ring too.

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
    let signal = Arc::new(Signal::private());
    for item in items.iter() {
        item.socket.shared().signal.observe(key, signal.clone());
    }
    // Shared-memory peers in other processes ring only their socket's doorbell, not
    // our observers. With one socket we wait on its own doorbell; with several, one of
    // which has ipc peers, we re-check every IPC_RECHECK while parked.
    const IPC_RECHECK: Duration = Duration::from_millis(1);
    let single = (items.len() == 1).then(|| items[0].socket.shared().signal.clone());
    let recheck = single.is_none() && items.iter().any(|i| i.socket.uses_ipc());
    let wait_on = single.unwrap_or_else(|| signal.clone());
    let spin = Duration::ZERO;
    let result = (|| loop {
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
        let until = match (recheck, deadline) {
            (false, d) => d,
            (true, None) => Some(Instant::now() + IPC_RECHECK),
            (true, Some(d)) => Some(d.min(Instant::now() + IPC_RECHECK)),
        };
        if let Some(r) = wait_on.wait_until(spin, until, &mut attempt) {
            return r;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(0);
        }
    })();
    for item in items.iter() {
        item.socket.shared().signal.unobserve(key);
    }
    result
}
