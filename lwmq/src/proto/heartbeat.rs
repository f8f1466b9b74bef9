//! Heartbeat timers (ZMTP 3.1 PING/PONG), as plain deadlines computed from the `now`
//! values the owner passes in.
//!
//! - With an interval set, a PING goes out every interval once the handshake is done.
//! - After a PING of ours, if nothing at all arrives within the timeout (default: the
//!   interval) the peer is declared dead. This is libzmq's `ZMQ_HEARTBEAT_TIMEOUT`.
//! - When the peer's PINGs carry a TTL, nothing received for that long is fatal too
//!   (libzmq's `ZMQ_HEARTBEAT_TTL`, enforced on the receiving side).
//! - Any received byte counts as a sign of life.

use std::time::{Duration, Instant};

/// What the owner of the timers must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing.
    None,
    /// Send a PING.
    Ping,
    /// The peer is silent past a deadline.
    Expired,
}

#[derive(Debug)]
pub(crate) struct Heartbeat {
    interval: Option<Duration>,
    timeout: Option<Duration>,
    /// When the next PING is due (only once running).
    next_ping: Option<Instant>,
    /// A PING was sent at this time and nothing has been received since.
    awaiting_since: Option<Instant>,
    /// The TTL from the peer's last PING, if any.
    peer_ttl: Option<Duration>,
    /// When we last received anything.
    last_recv: Instant,
}

impl Heartbeat {
    pub fn new(interval: Option<Duration>, timeout: Option<Duration>, now: Instant) -> Heartbeat {
        let interval = interval.filter(|d| !d.is_zero());
        Heartbeat {
            interval,
            timeout: timeout.filter(|d| !d.is_zero()).or(interval),
            next_ping: None,
            awaiting_since: None,
            peer_ttl: None,
            last_recv: now,
        }
    }

    /// The handshake is done: start the PING timer.
    pub fn start(&mut self, now: Instant) {
        self.next_ping = self.interval.map(|i| now + i);
    }

    /// Something arrived from the peer.
    pub fn received(&mut self, now: Instant) {
        self.last_recv = now;
        self.awaiting_since = None;
    }

    /// The peer's PING carried this TTL (in deciseconds; 0 = none).
    pub fn peer_ttl(&mut self, deciseconds: u16) {
        self.peer_ttl =
            (deciseconds > 0).then(|| Duration::from_millis(u64::from(deciseconds) * 100));
    }

    /// The earliest deadline.
    pub fn deadline(&self) -> Option<Instant> {
        let timeout = self
            .awaiting_since
            .zip(self.timeout)
            .map(|(since, t)| since + t);
        let ttl = self.peer_ttl.map(|t| self.last_recv + t);
        [self.next_ping, timeout, ttl].into_iter().flatten().min()
    }

    /// Advances the timers to `now`.
    pub fn poll(&mut self, now: Instant) -> Action {
        if let (Some(since), Some(t)) = (self.awaiting_since, self.timeout) {
            if now >= since + t {
                return Action::Expired;
            }
        }
        if let Some(ttl) = self.peer_ttl {
            if now >= self.last_recv + ttl {
                return Action::Expired;
            }
        }
        if let (Some(due), Some(interval)) = (self.next_ping, self.interval) {
            if now >= due {
                self.next_ping = Some(now + interval);
                if self.awaiting_since.is_none() {
                    self.awaiting_since = Some(now);
                }
                return Action::Ping;
            }
        }
        Action::None
    }
}

/// Converts a TTL to the PING's deciseconds, capped at the field's maximum.
pub(crate) fn ttl_deciseconds(ttl: Option<Duration>) -> u16 {
    ttl.map_or(0, |t| {
        u16::try_from(t.as_millis() / 100).unwrap_or(u16::MAX)
    })
}
