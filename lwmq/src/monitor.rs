//! Socket monitoring: events about connections, with libzmq's names.
//!
//! [`crate::Socket::monitor`] returns a [`Monitor`]; each monitor gets every event the
//! socket emits after it was created. Events come from the socket's user thread (bind)
//! and from the I/O thread (connections); a monitor nobody reads only costs memory,
//! and a dropped monitor is forgotten at the next event.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
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

/// Receives a socket's events: blocking ([`Monitor::recv`]), or async
/// ([`Monitor::recv_async`], and `futures_core::Stream` with the `async` feature).
#[derive(Debug)]
pub struct Monitor {
    /// Behind a lock only so that a `Monitor` is `Sync`: a task holding a
    /// [`NextEvent`] across an `.await` may then move between threads.
    rx: Mutex<Receiver<MonitorEvent>>,
    /// The waker of the task awaiting the next event, woken after each event is queued
    /// and when the socket goes.
    waker: Arc<Mutex<Option<Waker>>>,
}

/// The future of [`Monitor::recv_async`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct NextEvent<'a> {
    monitor: &'a Monitor,
}

impl Future for NextEvent<'_> {
    type Output = Option<MonitorEvent>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.monitor.poll_event(cx)
    }
}

#[cfg(feature = "async")]
impl futures_core::Stream for Monitor {
    type Item = MonitorEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<MonitorEvent>> {
        self.poll_event(cx)
    }
}

impl Monitor {
    /// The next event, waiting up to `timeout` (`None`: until one comes or the socket
    /// is gone). Returns `None` on timeout or when the socket is gone.
    pub fn recv(&self, timeout: Option<Duration>) -> Option<MonitorEvent> {
        let rx = self.rx();
        match timeout {
            None => rx.recv().ok(),
            Some(t) => rx.recv_timeout(t).ok(),
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<MonitorEvent> {
        self.rx().try_recv().ok()
    }

    fn rx(&self) -> std::sync::MutexGuard<'_, Receiver<MonitorEvent>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next event, asynchronously (`None` once the socket is gone). Cancellation
    /// safe: a dropped future took no event.
    pub fn recv_async(&self) -> NextEvent<'_> {
        NextEvent { monitor: self }
    }

    /// Polls for the next event: look, register the waker, look again (the emitter
    /// queues, then takes the waker under its lock, so one of the looks sees it).
    pub fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<MonitorEvent>> {
        let look = || match self.rx().try_recv() {
            Ok(e) => Some(Some(e)),
            Err(TryRecvError::Disconnected) => Some(None),
            Err(TryRecvError::Empty) => None,
        };
        if let Some(r) = look() {
            return Poll::Ready(r);
        }
        {
            let mut w = self.waker.lock().unwrap_or_else(|p| p.into_inner());
            match w.as_mut() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        match look() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
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

/// One monitor, from the emitting side: its queue and its waker.
type Subscriber = (Sender<MonitorEvent>, Arc<Mutex<Option<Waker>>>);

/// Wakes the task waiting on a monitor, if any.
fn wake(w: &Mutex<Option<Waker>>) {
    let taken = w.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(w) = taken {
        w.wake();
    }
}

/// The monitors of one socket (shared with the I/O thread).
#[derive(Debug, Default)]
pub(crate) struct Monitors {
    senders: Mutex<Vec<Subscriber>>,
}

impl Drop for Monitors {
    fn drop(&mut self) {
        // The queues disconnect now: wake their tasks to see it.
        let subs = std::mem::take(self.senders.get_mut().unwrap_or_else(|p| p.into_inner()));
        for (tx, w) in subs {
            drop(tx);
            wake(&w);
        }
    }
}

impl Monitors {
    pub(crate) fn add(&self) -> Monitor {
        let (tx, rx) = mpsc::channel();
        let waker = Arc::new(Mutex::new(None));
        self.senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tx, waker.clone()));
        Monitor {
            rx: Mutex::new(rx),
            waker,
        }
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
        senders.retain(|(tx, w)| {
            let open = tx.send(event.clone()).is_ok();
            wake(w);
            open
        });
    }
}
