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
        let ivl = self.next;
        self.next = options.next_reconnect_interval(ivl);
        socket.monitors.emit(
            EventKind::ConnectRetried,
            uri,
            format!("retry in {} ms ({why})", ivl.as_millis()),
        );
        Instant::now() + ivl
    }
}
