//! [`poll`]: wait until one of several sockets can receive or send, like `zmq_poll`.
//!
//! The poller makes a [`Signal`] of its own and adds it as an observer of each socket's
//! signal for the duration of the call, so any ring on any of the sockets wakes it.
//! It reads its epoch before looking at the sockets, as the pipe contract requires.

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
    let result = (|| loop {
        let seen = signal.epoch();
        let mut ready = 0;
        for item in items.iter_mut() {
            item.readable = item.want_readable && item.socket.poll_readable();
            item.writable = item.want_writable && item.socket.poll_writable();
            if item.readable || item.writable {
                ready += 1;
            }
        }
        if ready > 0 {
            return Ok(ready);
        }
        for item in items.iter() {
            item.socket.check_alive()?;
        }
        if !signal.wait(seen, deadline) {
            return Ok(0);
        }
    })();
    for item in items.iter() {
        item.socket.shared().signal.unobserve(key);
    }
    result
}
