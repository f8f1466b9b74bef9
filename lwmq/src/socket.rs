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

pub mod aio;

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
    /// What poll learnt instead: a REQ with resend gave its exchange up (the next
    /// receive returns it).
    prefetched_error: Option<Error>,
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
        let mut options = Options::new(socket_type);
        options.zap = hub.zap().clone();
        options.ipc.domain = hub.domain();
        let shared = Arc::new(SocketHandle::new(socket_type));
        hub.register(&shared);
        Socket {
            hub,
            core: Mutex::new(Core {
                pattern: pattern::new(socket_type, &options.pattern, &shared),
                options,
                prefetched: None,
                prefetched_error: None,
                endpoints: Vec::new(),
                last_endpoint: None,
            }),
            shared,
        }
    }

    #[inline]
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

    #[inline]
    fn check_open(&self) -> Result<()> {
        if self.hub.is_terminated() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    #[inline]
    fn absorb_mailbox(&self, core: &mut Core) {
        if self.shared.has_mail() {
            self.absorb_mail(core);
        }
    }

    #[cold]
    fn absorb_mail(&self, core: &mut Core) {
        for (id, pipe) in self.shared.take_mail() {
            core.pattern.attach(id, pipe);
        }
    }

    /// One look for a message (every receive, blocking or async): `None` when there
    /// is none now.
    #[inline]
    fn attempt_pattern_recv(&self, core: &mut Core) -> Option<Result<Message>> {
        if let Err(e) = self.check_open() {
            return Some(Err(e));
        }
        self.absorb_mailbox(core);
        match core.pattern.recv() {
            Ok(m) => Some(Ok(m)),
            Err(Error::WouldBlock) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// One try to send `held` (every send, blocking or async): `None` when it cannot
    /// go now, with the message put back into `held`.
    #[inline]
    fn attempt_send(
        &self,
        core: &mut Core,
        held: &mut Option<Message>,
    ) -> Option<Result<(), SendError>> {
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
                *held = Some(message);
                None
            }
            Err(e) => Some(Err(e)),
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
    ///
    /// # Names
    ///
    /// A `tcp://` host name (`tcp://db7.example.org:5555`) or DNS service name
    /// (`tcp://_orders._tcp.example.org`, no port: its SRV records give hosts and
    /// ports) is looked up in the background too, on the context's resolver thread,
    /// never on the I/O thread and never in `connect`: a name that does not resolve is
    /// a [`crate::EventKind::ResolveFailed`] monitor event followed by a retry with the
    /// reconnect back-off, not an error here. Where names are looked up:
    /// [`crate::ContextBuilder::dns_server`].
    ///
    /// What a service name connects to depends on the socket type:
    ///
    /// - **SUB, XSUB**: every target of the best priority at once (one connection
    ///   each; a subscriber wants every publisher of the feed). When every target of
    ///   that priority is down, the targets of the next priority; the better ones keep
    ///   being retried, and when one answers again the worse priority's connections
    ///   are dropped. Records are read again when their TTL ends.
    /// - **every other type** (REQ, DEALER, PUSH, PAIR, PUB, ROUTER, ...): **one**
    ///   connection at a time. The targets are tried in RFC 2782's order (lowest
    ///   priority first; within one priority a random order weighted by the records'
    ///   weights; each target's addresses in turn) until one takes the connection, so
    ///   when every target of the best priority is down the next priority answers. So
    ///   PUSH, DEALER and REQ clients spread over a service's targets as its weights
    ///   say (each client picks one), a REQ's request and a PAIR's peer stay with one
    ///   server, and messages queued before the connection wait in one pipe.
    ///
    /// The name is looked up again at each reconnect and, while connected, when its
    /// records' TTL ends; a connection to an address the records no longer give is
    /// closed and made again where they point now.
    pub fn connect(&self, uri: &str) -> Result<()> {
        self.attach_endpoint(uri, false).map(drop)
    }

    /// Binds or connects through the transport the URI's scheme names; returns the
    /// endpoint actually used.
    fn attach_endpoint(&self, uri: &str, bind: bool) -> Result<String> {
        self.check_open()?;
        let ep = Endpoint::parse(uri)?;
        let mut core = self.core();
        // A CURVE socket without its keys fails here, not in the background.
        core.options.mechanism_config()?;
        let t = transport::transport_for(uri, &ep)?;
        let options = core.options.for_transport();
        let req = Request {
            uri,
            endpoint: &ep,
            socket: &self.shared,
            options: &options,
            hub: &self.hub,
        };
        let a = if bind { t.bind(&req) } else { t.connect(&req) }?;
        drop(options);
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
        let mut attempt = || self.attempt_send(core, &mut held);
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
        if let Some(e) = core.prefetched_error.take() {
            return Err(e);
        }
        if core.pattern.timed() {
            return self.recv_timed(&mut core, timeout);
        }
        let spin = self.shared.spin(&core.options);
        let core = &mut *core;
        let mut attempt = || self.attempt_pattern_recv(core);
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

    /// The receive of a pattern that keeps time (a REQ with resend): between waits the
    /// pattern is told the time ([`Pattern::tick`]: resend, or give up), and a wait
    /// ends at the pattern's timer as well as at the deadline.
    fn recv_timed(&self, core: &mut Core, timeout: Option<Duration>) -> Result<Message> {
        let spin = self.shared.spin(&core.options);
        let attempt = |core: &mut Core| self.attempt_pattern_recv(core);
        // A zero timeout (try_recv) asks once, lets time pass once, and asks again: it
        // never gives the exchange up by itself.
        let poll_once = timeout == Some(Duration::ZERO);
        // One clock read per turn of the loop: the tick's, which also sets the
        // deadline (on the first turn) and starts the wait's spin.
        let mut deadline = None;
        let mut first = true;
        loop {
            if let Some(r) = attempt(core) {
                return r;
            }
            let now = Instant::now();
            if first {
                first = false;
                deadline = timeout.filter(|_| !poll_once).map(|t| now + t);
            }
            if deadline.is_some_and(|d| now >= d) {
                return Err(core.pattern.recv_timed_out());
            }
            core.pattern.tick(now)?;
            if poll_once {
                return match attempt(core) {
                    Some(r) => r,
                    None => Err(Error::WouldBlock),
                };
            }
            let wake = match (deadline, core.pattern.timer()) {
                (Some(d), Some(t)) => Some(d.min(t)),
                (d, t) => d.or(t),
            };
            // The wait asks first thing: no look of our own after the tick.
            let got = self
                .shared
                .signal
                .wait_from(now, spin, wake, || attempt(&mut *core));
            if let Some(r) = got {
                return r;
            }
        }
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
        if let Some(e) = core.prefetched_error.take() {
            return Err(e);
        }
        if core.pattern.timed() {
            let m = self.recv_timed(&mut core, timeout)?;
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
        if core.prefetched.is_some() || core.prefetched_error.is_some() {
            return true;
        }
        self.absorb_mailbox(&mut core);
        // A pattern that keeps time (a REQ with resend) resends or gives up here too;
        // poll wakes at its timer (`Socket::timer`).
        if core.pattern.timed() {
            match core.pattern.recv() {
                Ok(m) => {
                    core.prefetched = Some(m);
                    return true;
                }
                Err(Error::WouldBlock) => {}
                // No request out: nothing to read (as for any REQ).
                Err(Error::State(_)) => return false,
                Err(e) => {
                    core.prefetched_error = Some(e);
                    return true;
                }
            }
            if let Err(e) = core.pattern.tick(Instant::now()) {
                core.prefetched_error = Some(e);
                return true;
            }
        }
        match core.pattern.recv() {
            Ok(m) => {
                core.prefetched = Some(m);
                true
            }
            Err(_) => false,
        }
    }

    /// For poll: when the pattern needs time to pass (a REQ's next resend), if ever.
    pub(crate) fn timer(&self) -> Option<Instant> {
        let core = self.core();
        if core.pattern.timed() {
            core.pattern.timer()
        } else {
            None
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
    /// Act as a PLAIN server (`false`: back to NULL). Credentials are checked by the
    /// context's ZAP handler ([`crate::Context::set_zap_handler`]); without one every
    /// user is accepted, as by libzmq without a ZAP handler.
    pub fn set_plain_server(&self, on: bool) {
        self.set(|o| {
            o.mechanism = if on {
                Mechanism::PlainServer
            } else {
                Mechanism::Null
            }
        });
    }
    /// Act as a CURVE server (RFC 26; `false`: back to NULL). Needs the socket's secret
    /// key ([`Socket::set_curve_secret_key`]) by the time it binds or connects. Client
    /// keys are checked by the context's ZAP handler; without one every client that
    /// knows our public key is accepted (as by libzmq without a ZAP handler).
    pub fn set_curve_server(&self, on: bool) {
        self.set(|o| {
            if on {
                o.mechanism = Mechanism::CurveServer;
            } else if o.mechanism == Mechanism::CurveServer {
                o.mechanism = Mechanism::Null;
            }
        });
    }
    /// Our long-term CURVE secret key (server and client). Its public key is derived
    /// from it; see [`crate::CurveKeyPair`] to make one.
    pub fn set_curve_secret_key(&self, key: &crate::CurveSecretKey) {
        let key = key.clone();
        self.set(|o| o.curve.secret = Some(key));
    }
    /// Our long-term CURVE public key. Optional (it is derived from the secret key);
    /// when set, binding or connecting checks that it is the secret key's.
    pub fn set_curve_public_key(&self, key: &crate::CurvePublicKey) {
        let key = *key;
        self.set(|o| o.curve.public = Some(key));
    }
    /// Makes the socket a CURVE client of the server with this long-term public key
    /// (as libzmq's ZMQ_CURVE_SERVERKEY does). Needs our own secret key too
    /// ([`Socket::set_curve_secret_key`]).
    pub fn set_curve_server_key(&self, key: &crate::CurvePublicKey) {
        let key = *key;
        self.set(|o| {
            o.curve.server = Some(key);
            o.mechanism = Mechanism::CurveClient;
        });
    }
    /// The ZAP domain given to the context's ZAP handler with each request (libzmq's
    /// ZMQ_ZAP_DOMAIN; empty by default). At most 255 bytes. On a NULL socket, setting
    /// one makes the handler judge its peers by address, as libzmq does.
    pub fn set_zap_domain(&self, domain: &str) -> Result<()> {
        if domain.len() > 255 {
            return Err(Error::InvalidArgument(
                "a ZAP domain is at most 255 bytes".into(),
            ));
        }
        self.set(|o| o.zap_domain = domain.to_owned());
        Ok(())
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
    /// Async: how long a future of this socket (`recv_async`, `send_async`, its streams
    /// and sinks) keeps trying before it returns `Pending` and lets its task sleep.
    /// Default zero: never (a future that finds nothing to do registers its waker at
    /// once). A few microseconds make an `ipc://` round trip as fast as a blocking one,
    /// at the cost of the executor thread busy-waiting for that long each time. See
    /// [`crate::aio`].
    pub fn set_async_spin(&self, t: Duration) {
        self.set(|o| o.async_spin = t);
    }
    /// `ipc://`: which users' processes may connect to us or be connected to (checked
    /// with SO_PEERCRED), or which groups' members (the peer's effective gid or one of
    /// its supplementary groups, SO_PEERGROUPS: [`AllowedPeers::Listed`]). Default: the
    /// same user only. A refused peer is `handshake-failed-auth` on both sides.
    ///
    /// [`AllowedPeers::Listed`]: crate::shm::AllowedPeers::Listed
    pub fn set_ipc_allowed_peers(&self, peers: crate::transport::shm::AllowedPeers) {
        self.set(|o| o.ipc.allow_uids = peers);
    }
    /// `ipc://`: the namespace of names; sockets in different domains never meet.
    /// Default: the context's domain ([`crate::ContextBuilder::domain`], else
    /// `$LWMQ_DOMAIN`, else `"default"`). 1 to 48 characters of
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
    /// REQ: resend a request that has no reply after `interval` (`None`, the default:
    /// never, as libzmq). See [`Socket::set_req_resend_attempts`] for how it ends.
    ///
    /// With resend on, the REQ
    /// - puts a request id in every request (libzmq's REQ_CORRELATE wire format) and
    ///   drops replies to anything but the current request;
    /// - announces a stable random routing id unless [`Socket::set_routing_id`] set one,
    ///   so that a REP recognises it across reconnects and failover;
    /// - sends only to peers whose connection is complete ([`Socket::set_immediate`]),
    ///   so a request never waits in the queue of a peer that is down;
    /// - sends a request again, with the same id, to the next connected peer in turn
    ///   when `interval` passes without a reply, and at once when the connection that
    ///   carried it goes away; a reply to an earlier attempt of the current request is
    ///   accepted (once).
    ///
    /// Resends happen while the socket waits in [`Socket::recv`], is asked with
    /// [`Socket::try_recv`], or is polled for reading with [`crate::poll()`] (which
    /// then wakes for each resend, and reports the socket readable once the exchange
    /// is given up: the next receive returns the error); nothing runs in the background.
    ///
    /// Delivery is **at least once**: a REP that received a request and died before
    /// replying may have acted on it. An lwmq REP de-duplicates the copies it sees
    /// itself (see [`Socket::set_rep_cache_size`]); a libzmq REP does not, and hands
    /// every copy to its application. Changes apply to endpoints bound or connected
    /// afterwards (set it before connecting).
    pub fn set_req_resend_interval(&self, interval: Option<Duration>) -> Result<()> {
        self.check_req("the resend interval")?;
        if interval.is_some_and(|t| t.is_zero()) {
            return Err(Error::InvalidArgument(
                "the resend interval must be positive".into(),
            ));
        }
        self.set(|o| {
            o.pattern.req_resend = interval;
            if interval.is_some() && o.routing_id.is_empty() && o.socket_type == SocketType::Req {
                o.routing_id = pattern::reqrep::random_routing_id();
            }
        });
        Ok(())
    }
    /// REQ with resend: how many times one request is sent, the first included
    /// (default [`crate::DEFAULT_REQ_RESEND_ATTEMPTS`], 3). After the last attempt's
    /// interval without a reply, or when the receive timeout passes first,
    /// [`Socket::recv`] fails with [`Error::RequestTimeout`] (how many attempts went to
    /// how many peers) and the REQ may send a new request.
    pub fn set_req_resend_attempts(&self, attempts: u32) -> Result<()> {
        self.check_req("resend attempts")?;
        if attempts == 0 {
            return Err(Error::InvalidArgument(
                "a request is sent at least once: attempts must be at least 1".into(),
            ));
        }
        self.set(|o| o.pattern.req_resend_attempts = attempts);
        Ok(())
    }
    fn check_req(&self, what: &str) -> Result<()> {
        if self.socket_type() == SocketType::Req {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{what} applies to REQ sockets only, not {}",
                self.socket_type().as_str()
            )))
        }
    }
    /// REP: how many answered requests are remembered for de-duplication (default
    /// [`crate::DEFAULT_REP_CACHE_SIZE`]; 0 turns de-duplication off: every request
    /// reaches the application, as with libzmq's REP).
    ///
    /// A REP de-duplicates every request that carries a request id (a REQ with resend
    /// or REQ_CORRELATE, libzmq's included): copies of a request that queued up on its
    /// connection while the first was being handled are dropped when the application
    /// replies, and a copy that comes later
    /// is answered again from the reply cache (while the application waits in
    /// [`Socket::recv`]); neither reaches the application. A
    /// request is known by its requester's routing id (or the envelope a ROUTER in
    /// between added), its id and its body. Requests without an id (libzmq's plain REQ)
    /// are handled exactly as libzmq's REP does. Replacing the cache's bounds empties
    /// it; see [`Socket::set_reply_cache`] for a cache of your own.
    ///
    /// One case looks like a request id without being one: a plain (non-correlating)
    /// REQ with a 4-byte routing id behind a ROUTER/DEALER proxy. Its repeated
    /// identical requests would be answered from the cache; give such requesters
    /// longer (or no) routing ids, or turn de-duplication off with a size of 0.
    pub fn set_rep_cache_size(&self, entries: usize) {
        self.set(|o| o.pattern.rep_cache_size = entries);
    }
    /// REP: how long an answered request is remembered (default
    /// [`crate::DEFAULT_REP_CACHE_AGE`], 60 s). Keep it above the requesters' resend
    /// interval times their attempts.
    pub fn set_rep_cache_age(&self, age: Duration) {
        self.set(|o| o.pattern.rep_cache_age = age);
    }
    /// REP: how many bytes of replies the de-duplication cache keeps at most (default
    /// [`crate::DEFAULT_REP_CACHE_BYTES`], 64 MiB); the oldest go first, and a reply
    /// larger than this is not kept (a copy of its request is handled again).
    pub fn set_rep_cache_bytes(&self, bytes: usize) {
        self.set(|o| o.pattern.rep_cache_bytes = bytes);
    }
    /// REP: keep answered requests in `cache` instead of the default
    /// [`crate::MemoryReplyCache`] (for example somewhere durable, so that a restarted
    /// REP still answers copies of what it answered before). The cache bounds itself;
    /// the size, age and bytes options apply to the default cache only.
    pub fn set_reply_cache(&self, cache: Box<dyn crate::ReplyCache>) -> Result<()> {
        self.core().pattern.set_reply_cache(cache)
    }
    /// What REQ resend and REP de-duplication did on this socket so far (zeros for
    /// other socket types).
    pub fn reqrep_stats(&self) -> crate::ReqRepStats {
        self.shared.reqrep.snapshot()
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
