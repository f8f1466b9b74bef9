//! Reconnecting, the same way for every transport: libzmq's RECONNECT_IVL and
//! RECONNECT_IVL_MAX, one `connect-retried` event with one kind of detail.

use std::time::{Duration, Instant};

use super::SocketHandle;
use crate::monitor::EventKind;
use crate::options::Options;

/// The reconnect interval of one connect: libzmq's RECONNECT_IVL and
/// RECONNECT_IVL_MAX, the same for every transport. It grows after each failed attempt
/// (when a maximum is set) and starts over after a connection was made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(options: &Options) -> Backoff {
        Backoff {
            next: options.reconnect_interval,
        }
    }

    /// A connection was made: the next failure waits the base interval again.
    pub(crate) fn reset(&mut self, options: &Options) {
        self.next = options.reconnect_interval;
    }

    /// The next attempt after a failure: when it is due. Reports `connect-retried`
    /// with why and how long.
    pub(crate) fn retry(
        &mut self,
        options: &Options,
        socket: &SocketHandle,
        uri: &str,
        why: &str,
    ) -> Instant {
        let next = options.next_reconnect_interval(self.next);
        self.schedule(next, socket, uri, why)
    }

    /// As [`Backoff::retry`], but the interval doubles even when no maximum is set, up
    /// to `cap` then (after a peer hung up during the handshake: a peer that takes the
    /// connection and drops it is not one that is restarting).
    pub(crate) fn retry_growing(
        &mut self,
        options: &Options,
        socket: &SocketHandle,
        uri: &str,
        why: &str,
        cap: Duration,
    ) -> Instant {
        let base = options.reconnect_interval;
        let max = options.reconnect_interval_max.unwrap_or(cap).max(base);
        let next = (self.next * 2).clamp(base, max);
        self.schedule(next, socket, uri, why)
    }

    fn schedule(&mut self, next: Duration, socket: &SocketHandle, uri: &str, why: &str) -> Instant {
        let ivl = std::mem::replace(&mut self.next, next);
        socket.monitors.emit(
            EventKind::ConnectRetried,
            uri,
            format!("retry in {} ms ({why})", ivl.as_millis()),
        );
        Instant::now() + ivl
    }
}
