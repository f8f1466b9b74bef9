//! The public [`Socket`]: bind, connect, send, receive, options, monitor.
//!
//! Threads: a socket is used by one thread at a time (it is `Send`; its methods take
//! `&self` and serialize on an internal mutex, so a second thread calling it waits).
//! That thread owns the pattern and the socket's halves of its pipes. Other threads
//! reach the socket only through its [`SocketHandle`]: the background thread and
//! inproc peers push new pipes into its mailbox and ring its signal; monitors get
//! events from both.
//!
//! The socket names no transport: bind and connect look the endpoint's scheme up in
//! the transport table ([`crate::transport::TABLE`]) and keep the handle they get back
//! for unbind and disconnect; closing is one call on the context's [`Hub`].
//!
//! Every blocking call follows the pipe contract's wait (see [`crate::transport`]):
//! try, spin trying, announce, try once more, park.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::monitor::Monitor;
use crate::options::{Mechanism, Options};
use crate::pattern::{self, Pattern};
use crate::transport::{self, Attached, Hub, Request, SocketHandle, lock};
use crate::{Endpoint, Error, Message, Result, SendError, SocketType};

/// One bind or connect of a socket.
#[derive(Debug)]
struct EndpointEntry {
    /// The names it answers to in unbind/disconnect: the URI given and, for a bind,
    /// the endpoint actually bound (`tcp://*:0` -> the port picked).
    names: Vec<String>,
    bind: bool,
    handle: Box<dyn Attached>,
}

#[derive(Debug)]
struct Core {
    pattern: Box<dyn Pattern>,
    options: Options,
    /// A message read by poll to learn that the socket is readable.
    prefetched: Option<Message>,
    endpoints: Vec<EndpointEntry>,
    last_endpoint: Option<String>,
}

/// A socket of one of ZeroMQ's types, with any number of endpoints.
///
/// Dropping it closes it: pending outgoing messages keep going out for up to the
/// linger time ([`Socket::set_linger`]), in the background.
#[derive(Debug)]
pub struct Socket {
    hub: Arc<Hub>,
    shared: Arc<SocketHandle>,
    core: Mutex<Core>,
}

/// When a wait for `timeout` ends. Computed only once the first attempt failed: a
/// call that succeeds at once reads no clock (a clock read costs about as much as a
/// whole shared-memory send).
fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

impl Socket {
    pub(crate) fn new(hub: Arc<Hub>, socket_type: SocketType) -> Socket {
        let options = Options::new(socket_type);
        let shared = Arc::new(SocketHandle::new(socket_type));
        hub.register(&shared);
        Socket {
            hub,
            core: Mutex::new(Core {
                pattern: pattern::new(socket_type, &options.pattern),
                options,
                prefetched: None,
                endpoints: Vec::new(),
                last_endpoint: None,
            }),
            shared,
        }
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }

    /// The socket's type.
    pub fn socket_type(&self) -> SocketType {
        self.shared.socket_type
    }

    pub(crate) fn shared(&self) -> &Arc<SocketHandle> {
        &self.shared
    }

    /// For poll: fails once the context is terminated.
    pub(crate) fn check_alive(&self) -> Result<()> {
        self.check_open()
    }

    fn check_open(&self) -> Result<()> {
        if self.hub.is_terminated() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn absorb_mailbox(&self, core: &mut Core) {
        for (id, pipe) in self.shared.take_mail() {
            core.pattern.attach(id, pipe);
        }
    }

    /// Binds to an endpoint and returns the endpoint actually bound (for
    /// `tcp://*:0`, the port the system picked). A socket may bind many endpoints.
    pub fn bind(&self, uri: &str) -> Result<String> {
        self.attach_endpoint(uri, true)
    }

    /// Connects to an endpoint. Returns at once; the connection is made (and remade
    /// after failures, every reconnect interval) in the background, and messages queue
    /// up to the high-water mark meanwhile (unless [`Socket::set_immediate`]).
    pub fn connect(&self, uri: &str) -> Result<()> {
        self.attach_endpoint(uri, false).map(drop)
    }

    /// Binds or connects through the transport the URI's scheme names; returns the
    /// endpoint actually used.
    fn attach_endpoint(&self, uri: &str, bind: bool) -> Result<String> {
        self.check_open()?;
        let ep = Endpoint::parse(uri)?;
        let mut core = self.core();
        let t = transport::transport_for(uri, &ep)?;
        let req = Request {
            uri,
            endpoint: &ep,
            socket: &self.shared,
            options: &core.options,
            hub: &self.hub,
        };
        let a = if bind { t.bind(&req) } else { t.connect(&req) }?;
        for (id, pipe) in a.pipes {
            core.pattern.attach(id, pipe);
        }
        let mut names = vec![uri.to_owned()];
        if a.endpoint != uri {
            names.push(a.endpoint.clone());
        }
        core.endpoints.push(EndpointEntry {
            names,
            bind,
            handle: a.handle,
        });
        core.last_endpoint = Some(a.endpoint.clone());
        Ok(a.endpoint)
    }

    /// Stops listening on an endpoint given to (or returned by) [`Socket::bind`].
    /// Connections already accepted stay.
    pub fn unbind(&self, uri: &str) -> Result<()> {
        self.detach_endpoint(uri, true)
    }

    /// Stops connecting to an endpoint given to [`Socket::connect`] and closes the
    /// connection to it.
    pub fn disconnect(&self, uri: &str) -> Result<()> {
        self.detach_endpoint(uri, false)
    }

    fn detach_endpoint(&self, uri: &str, bind: bool) -> Result<()> {
        let mut core = self.core();
        let Some(pos) = core
            .endpoints
            .iter()
            .position(|e| e.bind == bind && e.names.iter().any(|n| n == uri))
        else {
            return Err(Error::endpoint(
                uri,
                if bind {
                    "this socket is not bound to it"
                } else {
                    "this socket is not connected to it"
                },
            ));
        };
        let entry = core.endpoints.remove(pos);
        let pipes = entry.handle.detach(&self.hub, &self.shared);
        // A pipe may still wait in the mailbox.
        self.absorb_mailbox(&mut core);
        for p in pipes {
            core.pattern.detach(p);
        }
        Ok(())
    }

    /// Sends a message, blocking as the send timeout says ([`Socket::set_send_timeout`]).
    /// On failure the message is handed back inside the [`SendError`].
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.send_until(msg.into(), None)
    }

    /// Sends without blocking: [`Error::WouldBlock`] if the message cannot go now.
    pub fn try_send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.send_until(msg.into(), Some(Some(Duration::ZERO)))
    }

    /// `timeout`: `None` for the socket's send timeout (read under the same lock: one
    /// lock per call on the hot path).
    fn send_until(&self, msg: Message, timeout: Option<Option<Duration>>) -> Result<(), SendError> {
        let mut core = self.core();
        let timeout = timeout.unwrap_or(core.options.send_timeout);
        let spin = self.shared.spin(&core.options);
        let core = &mut *core;
        let mut held = Some(msg);
        let mut attempt = || -> Option<Result<(), SendError>> {
            let msg = held.take()?;
            if self.hub.is_terminated() {
                return Some(Err(SendError {
                    error: Error::Closed,
                    message: msg,
                }));
            }
            self.absorb_mailbox(core);
            match core.pattern.send(msg) {
                Ok(()) => Some(Ok(())),
                Err(SendError {
                    error: Error::WouldBlock,
                    message,
                }) => {
                    held = Some(message);
                    None
                }
                Err(e) => Some(Err(e)),
            }
        };
        if let Some(r) = attempt() {
            return r;
        }
        let error = if timeout == Some(Duration::ZERO) {
            Error::WouldBlock
        } else if let Some(r) = self
            .shared
            .signal
            .wait_until(spin, deadline(timeout), &mut attempt)
        {
            return r;
        } else {
            Error::Timeout
        };
        match held.take() {
            Some(message) => Err(SendError { error, message }),
            // `attempt` only returns None after putting the message back.
            None => Err(SendError {
                error,
                message: Message::new(),
            }),
        }
    }

    /// Receives a message, blocking as the receive timeout says
    /// ([`Socket::set_recv_timeout`]).
    pub fn recv(&self) -> Result<Message> {
        self.recv_until(None)
    }

    /// Receives without blocking: [`Error::WouldBlock`] if no message is waiting.
    pub fn try_recv(&self) -> Result<Message> {
        self.recv_until(Some(Some(Duration::ZERO)))
    }

    /// `timeout`: `None` for the socket's receive timeout (read under the same lock).
    fn recv_until(&self, timeout: Option<Option<Duration>>) -> Result<Message> {
        let mut core = self.core();
        self.shared.note_recv_call();
        let timeout = timeout.unwrap_or(core.options.recv_timeout);
        if let Some(m) = core.prefetched.take() {
            return Ok(m);
        }
        let spin = self.shared.spin(&core.options);
        let core = &mut *core;
        let mut attempt = || -> Option<Result<Message>> {
            if let Err(e) = self.check_open() {
                return Some(Err(e));
            }
            self.absorb_mailbox(core);
            match core.pattern.recv() {
                Ok(m) => Some(Ok(m)),
                Err(Error::WouldBlock) => None,
                Err(e) => Some(Err(e)),
            }
        };
        if let Some(r) = attempt() {
            return r;
        }
        if timeout == Some(Duration::ZERO) {
            return Err(Error::WouldBlock);
        }
        self.shared
            .signal
            .wait_until(spin, deadline(timeout), attempt)
            .unwrap_or(Err(Error::Timeout))
    }

    /// Receives a message and hands its frames to `f` without copying them when they
    /// come from a shared-memory (`ipc://`) peer: `f` reads the ring in place, and the
    /// space is released when it returns. Blocks as [`Socket::recv`] does. PAIR, PULL
    /// and DEALER read in place; other types (and other transports) pass a borrowed
    /// ordinary message. See [`Frames`](crate::Frames) for what a hostile peer can do.
    ///
    /// ```no_run
    /// # fn main() -> lwmq::Result<()> {
    /// let ctx = lwmq::Context::new();
    /// let pull = ctx.socket(lwmq::SocketType::Pull)?;
    /// pull.bind("ipc://prices")?;
    /// let total: u64 = pull.recv_with(|frames| frames.iter().map(|f| f.len() as u64).sum())?;
    /// # let _ = total; Ok(()) }
    /// ```
    pub fn recv_with<R>(&self, f: impl FnOnce(&crate::Frames<'_>) -> R) -> Result<R> {
        let mut core = self.core();
        self.shared.note_recv_call();
        let timeout = core.options.recv_timeout;
        if let Some(m) = core.prefetched.take() {
            return Ok(f(&crate::Frames::message(&m)));
        }
        let spin = self.shared.spin(&core.options);
        let core = &mut *core;
        let mut f = Some(f);
        let mut out = None;
        let mut cb = |frames: &crate::Frames<'_>| {
            if let Some(f) = f.take() {
                out = Some(f(frames));
            }
        };
        let mut attempt = || -> Option<Result<()>> {
            if let Err(e) = self.check_open() {
                return Some(Err(e));
            }
            self.absorb_mailbox(core);
            match core.pattern.recv_with(&mut cb) {
                Ok(()) => Some(Ok(())),
                Err(Error::WouldBlock) => None,
                Err(e) => Some(Err(e)),
            }
        };
        let r = match attempt() {
            Some(r) => r,
            None if timeout == Some(Duration::ZERO) => Err(Error::WouldBlock),
            None => self
                .shared
                .signal
                .wait_until(spin, deadline(timeout), &mut attempt)
                .unwrap_or(Err(Error::Timeout)),
        };
        r?;
        // `recv_with` returned Ok only after calling the callback once.
        out.ok_or_else(|| Error::State("the message was not delivered".into()))
    }

    /// Sends a one-frame message of `len` bytes that `fill` writes, straight into the
    /// shared-memory ring of an `ipc://` peer when the socket's next peer is one (no
    /// copy, no allocation); otherwise into a new message. Blocks as [`Socket::send`]
    /// does. PAIR, PUSH and DEALER write in place.
    ///
    /// `fill` runs at most once. In place, it runs only if the message goes (a full
    /// ring or a timeout leaves it unrun). When no pipe can take the message in place
    /// (other socket types or transports, a connection not made yet) the message is
    /// built first: then a send that fails has run `fill` too.
    ///
    /// ```no_run
    /// # fn main() -> lwmq::Result<()> {
    /// let ctx = lwmq::Context::new();
    /// let push = ctx.socket(lwmq::SocketType::Push)?;
    /// push.connect("ipc://prices")?;
    /// push.send_with(8, |buf| buf.copy_from_slice(&42u64.to_le_bytes()))?;
    /// # Ok(()) }
    /// ```
    pub fn send_with(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        let mut fill = Some(fill);
        {
            let mut core = self.core();
            let timeout = core.options.send_timeout;
            let spin = self.shared.spin(&core.options);
            let core = &mut *core;
            let mut cb = |buf: &mut [u8]| {
                if let Some(f) = fill.take() {
                    f(buf);
                }
            };
            let mut attempt = || -> Option<Result<bool>> {
                if self.hub.is_terminated() {
                    return Some(Err(Error::Closed));
                }
                self.absorb_mailbox(core);
                match core.pattern.send_in_place(len, &mut cb) {
                    crate::pattern::InPlaceSend::Sent => Some(Ok(true)),
                    crate::pattern::InPlaceSend::NotInPlace => Some(Ok(false)),
                    crate::pattern::InPlaceSend::WouldBlock => None,
                }
            };
            let sent = match attempt() {
                Some(r) => r,
                None if timeout == Some(Duration::ZERO) => Err(Error::WouldBlock),
                None => self
                    .shared
                    .signal
                    .wait_until(spin, deadline(timeout), &mut attempt)
                    .unwrap_or(Err(Error::Timeout)),
            }?;
            if sent {
                return Ok(());
            }
        }
        // Not in place: an ordinary message, sent the ordinary way (the lock is free).
        let mut buf = vec![0u8; len];
        if let Some(f) = fill.take() {
            f(&mut buf);
        }
        self.send(buf).map_err(|e| e.error)
    }

    /// For poll: whether a message can be received now (reading it ahead if needed).
    pub(crate) fn poll_readable(&self) -> bool {
        let mut core = self.core();
        if core.prefetched.is_some() {
            return true;
        }
        self.absorb_mailbox(&mut core);
        match core.pattern.recv() {
            Ok(m) => {
                core.prefetched = Some(m);
                true
            }
            Err(_) => false,
        }
    }

    /// For poll: whether a message can be sent now.
    pub(crate) fn poll_writable(&self) -> bool {
        let mut core = self.core();
        self.absorb_mailbox(&mut core);
        core.pattern.can_send()
    }

    /// The last endpoint bound or connected (for a bind, the actual one).
    pub fn last_endpoint(&self) -> Option<String> {
        self.core().last_endpoint.clone()
    }

    /// A new monitor receiving this socket's events from now on.
    pub fn monitor(&self) -> Monitor {
        self.shared.monitors.add()
    }

    fn set(&self, f: impl FnOnce(&mut Options)) {
        let mut core = self.core();
        f(&mut core.options);
        let po = core.options.pattern.clone();
        core.pattern.configure(&po);
    }

    /// Most messages queued per peer for sending (0: no limit). Default 1000. When a
    /// peer's queue is full, PUB/XPUB/ROUTER drop; PUSH/DEALER/REQ/PAIR block.
    /// Applies to endpoints bound or connected afterwards.
    pub fn set_send_hwm(&self, n: usize) {
        self.set(|o| o.send_hwm = n);
    }
    /// Most messages queued per peer for receiving (0: no limit). Default 1000.
    pub fn set_recv_hwm(&self, n: usize) {
        self.set(|o| o.recv_hwm = n);
    }
    /// How long `send` may wait: `None` blocks, zero never waits
    /// ([`Error::WouldBlock`]), else [`Error::Timeout`] after that long.
    pub fn set_send_timeout(&self, t: Option<Duration>) {
        self.set(|o| o.send_timeout = t);
    }
    /// How long `recv` may wait (as [`Socket::set_send_timeout`]).
    pub fn set_recv_timeout(&self, t: Option<Duration>) {
        self.set(|o| o.recv_timeout = t);
    }
    /// How long queued messages may still go out after the socket is closed (`None`:
    /// without limit). Default 2 s.
    pub fn set_linger(&self, t: Option<Duration>) {
        self.set(|o| o.linger = t);
    }
    /// Queue messages only to peers whose connection is complete (no queue before).
    pub fn set_immediate(&self, on: bool) {
        self.set(|o| o.immediate = on);
    }
    /// Time between reconnect attempts (default 100 ms).
    pub fn set_reconnect_interval(&self, t: Duration) -> Result<()> {
        if t.is_zero() {
            return Err(Error::InvalidArgument(
                "the reconnect interval must be positive".into(),
            ));
        }
        self.set(|o| o.reconnect_interval = t);
        Ok(())
    }
    /// Upper bound of the reconnect interval, which doubles after each failed attempt
    /// up to it (`None`: no backoff).
    pub fn set_reconnect_interval_max(&self, t: Option<Duration>) {
        self.set(|o| o.reconnect_interval_max = t);
    }
    /// The routing id announced to peers (1 to 255 bytes, not starting with a zero byte).
    pub fn set_routing_id(&self, id: impl Into<Bytes>) -> Result<()> {
        let id = id.into();
        if id.is_empty() || id.len() > 255 || id[0] == 0 {
            return Err(Error::InvalidArgument(
                "a routing id is 1 to 255 bytes and does not start with a zero byte".into(),
            ));
        }
        self.set(|o| o.routing_id = id);
        Ok(())
    }
    /// ROUTER: a message for an unknown peer fails with [`Error::HostUnreachable`]
    /// (instead of being dropped), and a full peer makes `send` block.
    pub fn set_router_mandatory(&self, on: bool) {
        self.set(|o| o.pattern.router_mandatory = on);
    }
    /// Keep only the newest message in each queue.
    pub fn set_conflate(&self, on: bool) {
        self.set(|o| o.conflate = on);
    }
    /// Send a ZMTP PING this often when idle.
    pub fn set_heartbeat_interval(&self, t: Option<Duration>) {
        self.set(|o| o.heartbeat_interval = t);
    }
    /// The time-to-live we ask the peer to apply to us.
    pub fn set_heartbeat_ttl(&self, t: Option<Duration>) {
        self.set(|o| o.heartbeat_ttl = t);
    }
    /// Close a connection that is silent this long after a PING.
    pub fn set_heartbeat_timeout(&self, t: Option<Duration>) {
        self.set(|o| o.heartbeat_timeout = t);
    }
    /// Largest message accepted from a peer, per frame as libzmq's MAXMSGSIZE (tcp,
    /// unix and `ipc://` peers); a larger one closes the connection as a protocol
    /// error. Applies to connections made afterwards. `None` (the default): no limit.
    pub fn set_max_msg_size(&self, n: Option<u64>) {
        self.set(|o| o.max_msg_size = n);
    }
    /// Subscribes to messages whose first frame starts with `topic` (SUB, XSUB).
    pub fn subscribe(&self, topic: &[u8]) -> Result<()> {
        let mut core = self.core();
        self.absorb_mailbox(&mut core);
        core.pattern.subscribe(topic, true)
    }
    /// Removes one subscription to `topic` (SUB, XSUB).
    pub fn unsubscribe(&self, topic: &[u8]) -> Result<()> {
        let mut core = self.core();
        self.absorb_mailbox(&mut core);
        core.pattern.subscribe(topic, false)
    }
    /// Authenticate as a PLAIN client.
    pub fn set_plain_client(&self, username: &str, password: &str) -> Result<()> {
        if username.len() > 255 || password.len() > 255 {
            return Err(Error::InvalidArgument(
                "PLAIN user names and passwords are at most 255 bytes".into(),
            ));
        }
        self.set(|o| {
            o.mechanism = Mechanism::PlainClient {
                username: username.to_owned(),
                password: password.to_owned(),
            }
        });
        Ok(())
    }
    /// Act as a PLAIN server (`false`: back to NULL). Every user is accepted, as by
    /// libzmq without a ZAP handler.
    pub fn set_plain_server(&self, on: bool) {
        self.set(|o| {
            o.mechanism = if on {
                Mechanism::PlainServer
            } else {
                Mechanism::Null
            }
        });
    }
    /// `ipc://`: bytes of each shared-memory ring (one per direction and connection),
    /// rounded up to a power of two between 4 KiB and 1 GiB; the connecting side's
    /// value is used. A message larger than about half of it goes through the ring in
    /// pieces (any size goes; see `docs/shm-layout.md`). Default 1 MiB.
    /// Applies to endpoints bound or connected afterwards.
    pub fn set_ipc_ring_size(&self, bytes: usize) {
        self.set(|o| o.ipc.ring_size = bytes);
    }
    /// `ipc://`: how long a blocked `send`/`recv` spins before it parks on the futex
    /// (spinning catches a busy peer's reply in well under a microsecond; parking costs
    /// a kernel wake-up). Default 50 µs.
    pub fn set_ipc_spin(&self, t: Duration) {
        self.set(|o| o.ipc.spin = t);
    }
    /// `ipc://`: which users' processes may connect to us or be connected to (checked
    /// with SO_PEERCRED). Default: the same user only.
    pub fn set_ipc_allowed_peers(&self, peers: crate::transport::shm::AllowedPeers) {
        self.set(|o| o.ipc.allow_uids = peers);
    }
    /// `ipc://`: the namespace of names; sockets in different domains never meet.
    /// Default: `$LWMQ_DOMAIN`, else `"default"`. 1 to 48 characters of
    /// `A-Z a-z 0-9 . _ -` (checked at bind/connect).
    pub fn set_ipc_domain(&self, domain: &str) {
        self.set(|o| o.ipc.domain = domain.to_owned());
    }
    /// REQ: add a request id to each request and drop replies with another one.
    pub fn set_req_correlate(&self, on: bool) {
        self.set(|o| o.pattern.req_correlate = on);
    }
    /// REQ: allow a new request before the previous reply came.
    pub fn set_req_relaxed(&self, on: bool) {
        self.set(|o| o.pattern.req_relaxed = on);
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // From now on pipes delivered to this socket are closed at once; those
        // waiting in the mailbox are closed here.
        drop(self.shared.close_mailbox());
        let linger = self.core().options.linger;
        self.hub.close_socket(&self.shared, linger);
        // The pattern's pipes close as they drop with `core`.
    }
}
