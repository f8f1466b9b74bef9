//! Socket monitoring: events about connections, with libzmq's names.
//!
//! [`crate::Socket::monitor`] returns a [`Monitor`]; each monitor gets every event the
//! socket emits after it was created. Events come from the socket's user thread (bind)
//! and from the I/O thread (connections); a monitor nobody reads only costs memory,
//! and a dropped monitor is forgotten at the next event.

use std::fmt;
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A connection to the endpoint was established (before the handshake).
    Connected,
    /// A connect is in progress (non-blocking).
    ConnectDelayed,
    /// A reconnect was scheduled; `detail` gives the interval.
    ConnectRetried,
    /// A `tcp://` name (host or DNS service) did not resolve; `detail` says why. A
    /// retry follows (`connect-retried`), which looks the name up again.
    ResolveFailed,
    /// The socket listens on the endpoint.
    Listening,
    /// Binding failed.
    BindFailed,
    /// A connection was accepted.
    Accepted,
    /// A listener was closed.
    Closed,
    /// A connection was lost or closed.
    Disconnected,
    /// The ZMTP handshake with a peer succeeded.
    HandshakeSucceeded,
    /// The handshake failed for a protocol reason (incompatible socket type, version,
    /// malformed data).
    HandshakeFailedProtocol,
    /// The handshake failed because authentication was refused (by the ZAP handler, a
    /// PLAIN or CURVE server, or an `ipc://` peer's user or group check), or a CURVE
    /// handshake failed on its keys (a wrong server key).
    HandshakeFailedAuth,
    /// A peer asked for a `tcp://host:port/resource` nobody bound.
    ResourceUnknown,
    /// A shared-memory peer process died.
    PeerCrashed,
    /// A peer broke the protocol after the handshake (e.g. wrote garbage into a
    /// shared-memory ring); its connection was dropped.
    ProtocolError,
    /// A message queued before its connection existed could never go through it (e.g.
    /// larger than the shared-memory ring the connection got) and was dropped; the
    /// detail says what and why. (A message whose size is known to be too large when it
    /// is sent fails its send instead.)
    MessageDropped,
    /// A REQ with resend sent a request again; the detail says which attempt and
    /// whether it went to another peer.
    RequestResent,
    /// A REQ with resend gave a request up (no reply within its attempts or the
    /// receive timeout).
    RequestGivenUp,
    /// A REQ dropped a reply to a request that is not the current one.
    StaleReplyDropped,
    /// A REQ dropped a malformed reply, or a REP a malformed request (no request id or
    /// empty delimiter where one must be).
    MalformedDropped,
    /// A REP dropped a copy of a request that came while the request was handled.
    DuplicateDropped,
    /// A REP answered a copy of an answered request from its reply cache.
    ReplyFromCache,
}

impl EventKind {
    /// The event's name, as libzmq spells it (e.g. `"handshake-failed-protocol"`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Connected => "connected",
            EventKind::ConnectDelayed => "connect-delayed",
            EventKind::ConnectRetried => "connect-retried",
            EventKind::ResolveFailed => "resolve-failed",
            EventKind::Listening => "listening",
            EventKind::BindFailed => "bind-failed",
            EventKind::Accepted => "accepted",
            EventKind::Closed => "closed",
            EventKind::Disconnected => "disconnected",
            EventKind::HandshakeSucceeded => "handshake-succeeded",
            EventKind::HandshakeFailedProtocol => "handshake-failed-protocol",
            EventKind::HandshakeFailedAuth => "handshake-failed-auth",
            EventKind::ResourceUnknown => "resource-unknown",
            EventKind::PeerCrashed => "peer-crashed",
            EventKind::ProtocolError => "protocol-error",
            EventKind::MessageDropped => "message-dropped",
            EventKind::RequestResent => "request-resent",
            EventKind::RequestGivenUp => "request-given-up",
            EventKind::StaleReplyDropped => "stale-reply-dropped",
            EventKind::MalformedDropped => "malformed-dropped",
            EventKind::DuplicateDropped => "duplicate-dropped",
            EventKind::ReplyFromCache => "reply-from-cache",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorEvent {
    /// What happened.
    pub kind: EventKind,
    /// The endpoint it happened on.
    pub endpoint: String,
    /// More about it, for humans: the peer's address, an error, an interval.
    pub detail: String,
}

impl fmt::Display for MonitorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.endpoint)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// Receives a socket's events.
#[derive(Debug)]
pub struct Monitor {
    rx: Receiver<MonitorEvent>,
}

impl Monitor {
    /// The next event, waiting up to `timeout` (`None`: until one comes or the socket
    /// is gone). Returns `None` on timeout or when the socket is gone.
    pub fn recv(&self, timeout: Option<Duration>) -> Option<MonitorEvent> {
        match timeout {
            None => self.rx.recv().ok(),
            Some(t) => self.rx.recv_timeout(t).ok(),
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<MonitorEvent> {
        self.rx.try_recv().ok()
    }

    /// Waits up to `timeout` for an event of the given kind, skipping others.
    pub fn wait_for(&self, kind: EventKind, timeout: Duration) -> Option<MonitorEvent> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            let e = self.recv(Some(left))?;
            if e.kind == kind {
                return Some(e);
            }
        }
    }
}

/// The monitors of one socket (shared with the I/O thread).
#[derive(Debug, Default)]
pub(crate) struct Monitors {
    senders: Mutex<Vec<Sender<MonitorEvent>>>,
}

impl Monitors {
    pub(crate) fn add(&self) -> Monitor {
        let (tx, rx) = mpsc::channel();
        self.senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        Monitor { rx }
    }

    /// Whether no monitor is attached (a sender that went away counts until the next
    /// event).
    pub(crate) fn is_empty(&self) -> bool {
        self.senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    pub(crate) fn emit(&self, kind: EventKind, endpoint: &str, detail: impl Into<String>) {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if senders.is_empty() {
            return;
        }
        let event = MonitorEvent {
            kind,
            endpoint: endpoint.to_owned(),
            detail: detail.into(),
        };
        tracing::debug!("monitor: {event}");
        senders.retain(|s| s.send(event.clone()).is_ok());
    }
}
