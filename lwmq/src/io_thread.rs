//! The background I/O thread of a context: it drives every stream connection (`tcp://`,
//! `unix://`) with `mio`, speaking ZMTP through one [`proto::Connection`] per stream,
//! and moves messages between the connections and the sockets' pipes.
//!
//! # Ownership
//!
//! The thread owns every listener, stream, `proto::Connection`, connecter (the state of
//! a `connect()`: connecting, connected, or waiting to retry) and the I/O halves of
//! the pipes. Other threads talk to it only through [`IoShared`]: a command queue and a
//! list of pipes that need attention, each followed by a ring of the `mio::Waker`.
//!
//! # A connection's life
//!
//! 1. `connect`: the stream connects in the background; a failure schedules a retry after
//!    the reconnect interval, which doubles up to the maximum (`connect-retried`).
//!    `bind`: the listener accepts (`accepted`).
//! 2. The handshake runs in `proto`. On success (`handshake-succeeded`) a pipe is made
//!    and delivered to the socket's mailbox, unless the connecter made one beforehand
//!    (then messages queued while the peer was away go out now).
//! 3. Messages flow. Back-pressure both ways: the thread stops taking messages from the
//!    socket while `proto` holds more than [`MAX_PENDING_TRANSMIT`] bytes, and stops
//!    reading the stream while the socket's inbound pipe is at its high-water mark.
//! 4. On loss (`disconnected`), a connecter's pipe stays with the connecter (if it made
//!    one) and a reconnect is scheduled. After a **handshake failure** that retrying
//!    cannot fix (incompatible socket type, unsupported version, security mechanism
//!    mismatch, authentication refused, or the peer's ERROR during the handshake) the
//!    connecter **stops reconnecting** to that endpoint: the monitor event's detail says
//!    so. This is what prevents a reconnect storm against an incompatible peer.
//!    A libzmq peer that finds our socket type incompatible says nothing: it closes the
//!    connection during the handshake, usually before its READY is out. So after a peer
//!    **hung up during the handshake** without a reason, the next attempt sends our
//!    READY only once the peer's has arrived and was judged compatible
//!    ([`proto::Config::await_peer_ready`]): an incompatible libzmq peer then fails the
//!    handshake once, with both types named, and is not retried. Where that cannot help
//!    (PLAIN, where the client's metadata goes first, or a peer that hangs up for other
//!    reasons), the retry interval doubles after each such hang-up, up to
//!    `reconnect_interval_max`, or [`HANDSHAKE_HANGUP_BACKOFF_MAX`] when none is set
//!    (libzmq keeps a fixed interval then; a peer that takes the connection and drops it
//!    is not one that is restarting, and 10 Hz retries would be a storm).
//! 5. When its socket closes, a connection lingers until its queued messages are
//!    written or the linger time passes.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::monitor::EventKind;
use crate::options::{Mechanism, Options};
use crate::pattern::PipeId;
use crate::pattern::pubsub::{control, parse_control};
use crate::proto::{self, Connection, Event, MechanismConfig, ProtoError};
use crate::socket::SocketShared;
use crate::transport::stream::{self, Bound, Listener, Stream};
use crate::transport::{
    Notify, Pipe, PipeClosed, PipeMeta, PipeReader, PipeWriter, QueueConfig, QueueReader,
    QueueWriter, WriteError, queue_pair,
};
use crate::{Endpoint, Message, Result, SocketType};

/// How far the retry interval grows after repeated hang-ups during the handshake when
/// `reconnect_interval_max` is not set (see the module docs).
pub(crate) const HANDSHAKE_HANGUP_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Stop taking messages from a socket while this many bytes wait to be written.
pub(crate) const MAX_PENDING_TRANSMIT: usize = 256 * 1024;
const READ_BUF: usize = 64 * 1024;
/// Rounds of read/deliver/write one connection gets before the others have a turn.
const MAX_TURNS: usize = 64;
const WAKER: Token = Token(0);

use crate::transport::lock;

/// What the application threads send the I/O thread.
pub(crate) enum Command {
    /// Own and serve a bound listener.
    Listen {
        id: u64,
        socket: Arc<SocketShared>,
        bound: Bound,
        options: Options,
    },
    /// Serve one more resource on a listener this context already has
    /// (`tcp://host:port/resource`).
    AddRoute {
        listener: u64,
        id: u64,
        resource: Option<String>,
        socket: Arc<SocketShared>,
        options: Options,
        endpoint: String,
    },
    /// Connect (and keep reconnecting) to an endpoint.
    Connect {
        id: u64,
        socket: Arc<SocketShared>,
        uri: String,
        endpoint: Endpoint,
        options: Options,
        /// The I/O half of a pipe made at connect time, if any.
        pipe: Option<IoHalf>,
    },
    /// Stop serving a bind (a route; the listener closes with its last route).
    Unbind { id: u64 },
    /// Stop connecting and close the connection.
    Disconnect { id: u64 },
    /// A socket was closed: close its listeners, stop its connecters, let its
    /// connections flush for up to `linger`.
    CloseSocket {
        socket_id: u64,
        linger: Option<Duration>,
    },
    /// Flush (within linger) and exit.
    Shutdown,
    /// Describe every listener, connecter and live connection, by socket id, for
    /// `lwmq ls` (see `crate::introspect`).
    Introspect {
        reply: std::sync::mpsc::Sender<HashMap<u64, crate::introspect::SocketInfo>>,
    },
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Listen { id, bound, .. } => write!(f, "Listen({id}, {})", bound.endpoint),
            Command::AddRoute { id, endpoint, .. } => write!(f, "AddRoute({id}, {endpoint})"),
            Command::Connect { id, uri, .. } => write!(f, "Connect({id}, {uri})"),
            Command::Unbind { id } => write!(f, "Unbind({id})"),
            Command::Disconnect { id } => write!(f, "Disconnect({id})"),
            Command::CloseSocket { socket_id, .. } => write!(f, "CloseSocket({socket_id})"),
            Command::Shutdown => f.write_str("Shutdown"),
            Command::Introspect { .. } => f.write_str("Introspect"),
        }
    }
}

/// The part of the I/O thread other threads may touch.
pub(crate) struct IoShared {
    commands: Mutex<Vec<Command>>,
    /// Pipes (by id) that have data or room since the thread last looked.
    dirty: Mutex<Vec<PipeId>>,
    waker: Waker,
}

impl fmt::Debug for IoShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoShared").finish_non_exhaustive()
    }
}

impl IoShared {
    /// Queues a command and wakes the thread.
    pub(crate) fn command(&self, c: Command) {
        lock(&self.commands).push(c);
        if let Err(e) = self.waker.wake() {
            tracing::error!("cannot wake the I/O thread: {e}");
        }
    }
}

/// Rings the I/O thread for one pipe.
struct IoWake {
    key: PipeId,
    shared: Weak<IoShared>,
}

impl Notify for IoWake {
    fn notify(&self) {
        if let Some(s) = self.shared.upgrade() {
            lock(&s.dirty).push(self.key);
            let _ = s.waker.wake();
        }
    }
}

/// The I/O thread's half of a pipe.
#[derive(Debug)]
pub(crate) struct IoHalf {
    id: PipeId,
    to_socket: QueueWriter,
    from_socket: QueueReader,
    /// SUB/XSUB: the topics subscribed through this pipe, replayed to the new peer
    /// when a kept pipe gets a new connection (the socket sent them only once).
    subscriptions: std::collections::BTreeSet<Bytes>,
}

/// Makes a pipe between a socket and the I/O thread: the socket's half (to attach) and
/// the I/O thread's half.
pub(crate) fn stream_pipe(
    io: &Arc<IoShared>,
    socket: &Arc<SocketShared>,
    options: &Options,
    endpoint: &str,
) -> ((PipeId, Pipe), IoHalf) {
    stream_pipe_with(io, socket, options, endpoint, None)
}

fn stream_pipe_with(
    io: &Arc<IoShared>,
    socket: &Arc<SocketShared>,
    options: &Options,
    endpoint: &str,
    peer: Option<&proto::PeerInfo>,
) -> ((PipeId, Pipe), IoHalf) {
    let id = crate::transport::next_pipe_id();
    let wake: Arc<dyn Notify> = Arc::new(IoWake {
        key: id,
        shared: Arc::downgrade(io),
    });
    let out = QueueConfig {
        hwm: options.send_hwm,
        conflate: options.conflate,
    };
    let inbound = QueueConfig {
        hwm: options.recv_hwm,
        conflate: options.conflate,
    };
    let (sw, sr, iw, ir) = queue_pair(out, inbound, socket.signal.clone(), wake);
    let meta = PipeMeta {
        routing_id: peer.map(|p| p.identity.clone()).unwrap_or_default(),
        endpoint: endpoint.to_owned(),
    };
    (
        (
            id,
            Pipe {
                writer: Box::new(sw),
                reader: Box::new(sr),
                meta,
            },
        ),
        IoHalf {
            id,
            to_socket: iw,
            from_socket: ir,
            subscriptions: Default::default(),
        },
    )
}

/// The thread and its shared part.
pub(crate) type IoThread = crate::worker::Worker<IoShared>;

impl IoThread {
    pub(crate) fn start() -> Result<IoThread> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(IoShared {
            commands: Mutex::new(Vec::new()),
            dirty: Mutex::new(Vec::new()),
            waker,
        });
        let mut reactor = Reactor {
            poll,
            shared: shared.clone(),
            listeners: HashMap::new(),
            conns: HashMap::new(),
            connecters: HashMap::new(),
            pipe_to_conn: HashMap::new(),
            next_token: 1,
            shutting_down: false,
            buf: vec![0; READ_BUF],
            again: Vec::new(),
        };
        // Shutdown: flush and exit.
        let worker = crate::worker::Worker::spawn(
            "lwmq-io",
            shared,
            |s| s.command(Command::Shutdown),
            move || reactor.run(),
        )?;
        Ok(worker)
    }
}

/// One bind served by a listener. A listener has one route, or (a TCP port shared by
/// `tcp://host:port/resource` binds) one per resource.
struct Route {
    id: u64,
    resource: Option<String>,
    socket: Arc<SocketShared>,
    options: Options,
    endpoint: String,
}

struct ListenerEntry {
    /// The id of the bind that made it.
    id: u64,
    listener: Listener,
    routes: Vec<Route>,
    endpoint: String,
    unlink: Option<PathBuf>,
}

impl ListenerEntry {
    /// Whether accepted connections must be routed by the peer's Resource.
    fn routes_by_resource(&self) -> bool {
        self.routes.len() > 1 || self.routes.iter().any(|r| r.resource.is_some())
    }
}

/// An accepted connection on a shared port, before we know which socket it is for:
/// our greeting is sent, the peer's greeting and first command are being collected.
struct Sniff {
    buf: bytes::BytesMut,
    listener: Token,
}

/// Largest greeting + READY we collect to find a Resource.
const MAX_SNIFF: usize = 64 * 1024;

enum ConnecterState {
    /// A connection (connecting or connected) exists.
    Active(Token),
    /// Waiting to retry at this time.
    Waiting(Instant),
    /// Gave up (handshake failure) or disconnected.
    Stopped,
}

struct Connecter {
    socket: Arc<SocketShared>,
    uri: String,
    endpoint: Endpoint,
    options: Options,
    /// The pipe made at connect time, while no connection holds it.
    pipe: Option<IoHalf>,
    /// Whether the pipe is made at connect time (kept across reconnects).
    keeps_pipe: bool,
    state: ConnecterState,
    interval: Duration,
    /// The socket closed: keep trying only to deliver what is queued, until then.
    closing: Option<Option<Instant>>,
    /// The last connection's peer hung up during the handshake without a reason: the
    /// next one awaits the peer's READY before sending ours (see the module docs).
    hung_up_in_handshake: bool,
}

impl Connecter {
    /// Whether a closing connecter has nothing left to deliver.
    /// While the context shuts down, a live socket's empty pipe counts as drained.
    fn drained(&self, shutting_down: bool) -> bool {
        self.pipe.as_ref().is_none_or(|p| {
            (p.from_socket.writer_closed() || shutting_down) && p.from_socket.len() == 0
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Listener(u64),
    Connecter(u64),
}

struct Conn {
    stream: Stream,
    proto: Connection,
    socket: Arc<SocketShared>,
    options: Options,
    endpoint: String,
    origin: Origin,
    /// The TCP/Unix connect is still in progress.
    connecting: bool,
    pipe: Option<IoHalf>,
    /// Bytes of the current chunk not written yet.
    out_buf: Option<Bytes>,
    /// A message the socket's full inbound pipe did not take yet.
    stalled: Option<Message>,
    /// The socket closed: close once everything is written, or at the deadline.
    closing: Option<Option<Instant>>,
    /// The error that ended the connection, once known.
    error: Option<ProtoError>,
    handshake_done: bool,
    /// The stream reached end of file or failed.
    eof: bool,
    /// Shared port: still finding out which socket this connection is for.
    sniff: Option<Sniff>,
    /// Bytes of proto's output already sent by us (the greeting, while sniffing).
    skip: usize,
    /// Refused (unknown resource): no pipe, close after the ERROR.
    rejected: bool,
}

struct Reactor {
    poll: Poll,
    shared: Arc<IoShared>,
    listeners: HashMap<Token, ListenerEntry>,
    conns: HashMap<Token, Conn>,
    connecters: HashMap<u64, Connecter>,
    pipe_to_conn: HashMap<PipeId, Token>,
    next_token: usize,
    shutting_down: bool,
    buf: Vec<u8>,
    /// Connections that stopped only because their turn was over (edge-triggered
    /// readiness will not remind us of them).
    again: Vec<Token>,
}

fn proto_config(options: &Options, resource: Option<String>) -> proto::Config {
    let mut c = proto::Config::new(options.socket_type);
    c.identity = options.routing_id.clone();
    c.resource = resource;
    c.mechanism = match &options.mechanism {
        Mechanism::Null => MechanismConfig::Null,
        Mechanism::PlainClient { username, password } => MechanismConfig::PlainClient {
            username: username.clone(),
            password: password.clone(),
        },
        Mechanism::PlainServer => MechanismConfig::PlainServer,
    };
    c.max_msg_size = options.max_msg_size;
    c.heartbeat_interval = options.heartbeat_interval;
    c.heartbeat_ttl = options.heartbeat_ttl;
    c.heartbeat_timeout = options.heartbeat_timeout;
    c
}

/// Handshake failures that retrying cannot fix.
fn is_permanent(e: &ProtoError, handshake_done: bool) -> bool {
    match e {
        ProtoError::IncompatibleSocketType { .. }
        | ProtoError::UnsupportedVersion { .. }
        | ProtoError::Mechanism(_)
        | ProtoError::AuthFailed(_) => true,
        ProtoError::PeerError(_) => !handshake_done,
        _ => false,
    }
}

impl Reactor {
    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = if self.again.is_empty() {
                self.next_deadline().map(|d| {
                    d.saturating_duration_since(Instant::now()) + Duration::from_micros(100)
                })
            } else {
                // Connections that used up their turn go on right after a look around.
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("I/O thread poll failed: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                let t = ev.token();
                if t == WAKER {
                    continue;
                }
                if self.listeners.contains_key(&t) {
                    self.accept(t);
                } else if self.conns.contains_key(&t) {
                    self.drive(t);
                }
            }
            let commands = std::mem::take(&mut *lock(&self.shared.commands));
            for c in commands {
                self.handle_command(c);
            }
            let dirty = std::mem::take(&mut *lock(&self.shared.dirty));
            for key in dirty {
                if let Some(&t) = self.pipe_to_conn.get(&key) {
                    self.drive(t);
                }
            }
            for t in std::mem::take(&mut self.again) {
                self.drive(t);
            }
            self.timers();
            let sd = self.shutting_down;
            if sd
                && self.conns.is_empty()
                && self
                    .connecters
                    .values()
                    .all(|c| c.closing.is_none() || c.drained(sd))
            {
                // Closing what is left drops the I/O halves of the pipes.
                self.connecters.clear();
                return;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut consider = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        for c in self.connecters.values() {
            if let ConnecterState::Waiting(t) = c.state {
                consider(t);
            }
            if let Some(Some(t)) = c.closing {
                consider(t);
            }
        }
        for c in self.conns.values() {
            if let Some(t) = c.proto.poll_timeout() {
                consider(t);
            }
            if let Some(Some(t)) = c.closing {
                consider(t);
            }
        }
        d
    }

    fn timers(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .connecters
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnecterState::Waiting(t) if t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.start_connect(id);
        }
        let sd = self.shutting_down;
        let expired: Vec<u64> = self
            .connecters
            .iter()
            .filter(|(_, c)| {
                c.closing.is_some_and(|d| d.is_some_and(|d| d <= now))
                    || (c.closing.is_some()
                        && !matches!(c.state, ConnecterState::Active(_))
                        && c.drained(sd))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(c) = self.connecters.remove(&id) {
                if let ConnecterState::Active(t) = c.state {
                    self.close_conn(t);
                }
            }
        }
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            let Some(c) = self.conns.get_mut(&t) else {
                continue;
            };
            if c.closing.is_some_and(|d| d.is_some_and(|d| d <= now)) {
                self.close_conn(t);
                continue;
            }
            if c.proto.poll_timeout().is_some_and(|d| d <= now) {
                c.proto.handle_timeout(now);
                self.drive(t);
            }
        }
    }

    fn handle_command(&mut self, c: Command) {
        match c {
            Command::Listen {
                id,
                socket,
                mut bound,
                options,
            } => {
                let t = self.token();
                if let Err(e) =
                    self.poll
                        .registry()
                        .register(bound.listener.source(), t, Interest::READABLE)
                {
                    socket
                        .monitors
                        .emit(EventKind::BindFailed, &bound.endpoint, e.to_string());
                    return;
                }
                let resource = match Endpoint::parse(&bound.endpoint) {
                    Ok(Endpoint::Tcp { resource, .. }) => resource,
                    _ => None,
                };
                self.listeners.insert(
                    t,
                    ListenerEntry {
                        id,
                        listener: bound.listener,
                        routes: vec![Route {
                            id,
                            resource,
                            socket,
                            options,
                            endpoint: bound.endpoint.clone(),
                        }],
                        endpoint: bound.endpoint,
                        unlink: bound.unlink,
                    },
                );
                // Connections may have queued before registration (edge-triggered).
                self.accept(t);
            }
            Command::Connect {
                id,
                socket,
                uri,
                endpoint,
                options,
                pipe,
            } => {
                let keeps_pipe = pipe.is_some();
                if let Some(p) = &pipe {
                    // Dirty notifications for it are ignored until a connection has it.
                    self.pipe_to_conn.remove(&p.id);
                }
                self.connecters.insert(
                    id,
                    Connecter {
                        socket,
                        uri,
                        endpoint,
                        interval: options.reconnect_interval,
                        options,
                        pipe,
                        keeps_pipe,
                        state: ConnecterState::Waiting(Instant::now()),
                        closing: None,
                        hung_up_in_handshake: false,
                    },
                );
                self.start_connect(id);
            }
            Command::AddRoute {
                listener,
                id,
                resource,
                socket,
                options,
                endpoint,
            } => match self.listeners.values_mut().find(|l| l.id == listener) {
                Some(l) => l.routes.push(Route {
                    id,
                    resource,
                    socket,
                    options,
                    endpoint,
                }),
                None => socket.monitors.emit(
                    EventKind::BindFailed,
                    &endpoint,
                    "the shared listener is gone",
                ),
            },
            Command::Unbind { id } => self.remove_routes(|r| r.id == id),
            Command::Disconnect { id } => {
                if let Some(c) = self.connecters.remove(&id) {
                    if let ConnecterState::Active(t) = c.state {
                        self.close_conn(t);
                    }
                }
            }
            Command::CloseSocket { socket_id, linger } => self.close_socket(socket_id, linger),
            Command::Introspect { reply } => {
                // The asker may have given up waiting: nothing to do then.
                let _ = reply.send(self.introspect());
            }
            Command::Shutdown => {
                self.shutting_down = true;
                let sockets: Vec<u64> = self
                    .conns
                    .values()
                    .map(|c| c.socket.id)
                    .chain(
                        self.listeners
                            .values()
                            .flat_map(|l| l.routes.iter().map(|r| r.socket.id)),
                    )
                    .chain(self.connecters.values().map(|c| c.socket.id))
                    .collect();
                for s in sockets {
                    let linger = self
                        .conns
                        .values()
                        .filter(|c| c.socket.id == s)
                        .map(|c| c.options.linger)
                        .chain(
                            self.connecters
                                .values()
                                .filter(|c| c.socket.id == s)
                                .map(|c| c.options.linger),
                        )
                        .next()
                        .flatten();
                    self.close_socket(s, linger);
                }
            }
        }
    }

    /// What `lwmq ls` shows of this thread's part of each socket: bound and connected
    /// endpoints, and connections whose handshake is done.
    fn introspect(&self) -> HashMap<u64, crate::introspect::SocketInfo> {
        use crate::introspect::{ConnectionInfo, Direction, SocketInfo};
        let mut infos: HashMap<u64, SocketInfo> = HashMap::new();
        let get = SocketShared::info_entry;
        for r in self.listeners.values().flat_map(|l| &l.routes) {
            get(&mut infos, &r.socket).bound.push(r.endpoint.clone());
        }
        for c in self.connecters.values() {
            get(&mut infos, &c.socket).connected.push(c.uri.clone());
        }
        for c in self.conns.values() {
            if !c.handshake_done || c.closing.is_some() {
                continue;
            }
            let (local_address, peer_address) = c.stream.addresses();
            get(&mut infos, &c.socket).connections.push(ConnectionInfo {
                endpoint: c.endpoint.clone(),
                direction: match c.origin {
                    Origin::Listener(_) => Direction::Accepted,
                    Origin::Connecter(_) => Direction::Connected,
                },
                local_address,
                peer_address,
                peer_pid: None,
                peer_socket_type: c.proto.peer().map(|p| p.socket_type.as_str().to_owned()),
            });
        }
        infos
    }

    fn close_listener(&mut self, t: Token) {
        if let Some(mut l) = self.listeners.remove(&t) {
            let _ = self.poll.registry().deregister(l.listener.source());
            if let Some(p) = &l.unlink {
                let _ = std::fs::remove_file(p);
            }
            for r in &l.routes {
                r.socket.monitors.emit(EventKind::Closed, &r.endpoint, "");
            }
        }
    }

    /// Removes the routes `which` selects; a listener left without one closes.
    fn remove_routes(&mut self, which: impl Fn(&Route) -> bool) {
        let mut empty = Vec::new();
        for (t, l) in self.listeners.iter_mut() {
            let before = l.routes.len();
            let (gone, kept): (Vec<Route>, Vec<Route>) = std::mem::take(&mut l.routes)
                .into_iter()
                .partition(|r| which(r));
            l.routes = kept;
            if l.routes.is_empty() && before > 0 {
                l.routes = gone;
                empty.push(*t);
            } else {
                for r in gone {
                    r.socket.monitors.emit(EventKind::Closed, &r.endpoint, "");
                }
            }
        }
        for t in empty {
            self.close_listener(t);
        }
    }

    fn close_socket(&mut self, socket_id: u64, linger: Option<Duration>) {
        self.remove_routes(|r| r.socket.id == socket_id);
        let cs: Vec<u64> = self
            .connecters
            .iter()
            .filter(|(_, c)| c.socket.id == socket_id)
            .map(|(id, _)| *id)
            .collect();
        let deadline = linger.map(|l| Instant::now() + l);
        for id in cs {
            let Some(c) = self.connecters.get_mut(&id) else {
                continue;
            };
            let active = matches!(c.state, ConnecterState::Active(_));
            let sd = self.shutting_down;
            if linger == Some(Duration::ZERO) || (!active && c.drained(sd)) {
                self.connecters.remove(&id);
            } else {
                // Keep (re)connecting to deliver what is queued, within the linger.
                c.closing = Some(deadline);
            }
        }
        let conns: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.socket.id == socket_id)
            .map(|(t, _)| *t)
            .collect();
        for t in conns {
            let Some(c) = self.conns.get_mut(&t) else {
                continue;
            };
            if linger == Some(Duration::ZERO) || c.pipe.is_none() {
                self.close_conn(t);
            } else {
                c.closing = Some(deadline);
                self.drive(t);
            }
        }
    }

    fn accept(&mut self, t: Token) {
        loop {
            let Some(l) = self.listeners.get(&t) else {
                return;
            };
            let Some(first) = l.routes.first() else {
                return;
            };
            match l.listener.accept() {
                Ok((stream, peer)) => {
                    let socket = first.socket.clone();
                    let options = first.options.clone();
                    let endpoint = first.endpoint.clone();
                    let origin = Origin::Listener(l.id);
                    if l.routes_by_resource() {
                        self.add_sniffing_conn(stream, socket, options, endpoint, origin, t);
                    } else {
                        socket.monitors.emit(EventKind::Accepted, &endpoint, peer);
                        self.add_conn(stream, socket, options, endpoint, origin, false, None, None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("accept on {} failed: {e}", l.endpoint);
                    return;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_conn(
        &mut self,
        mut stream: Stream,
        socket: Arc<SocketShared>,
        options: Options,
        endpoint: String,
        origin: Origin,
        connecting: bool,
        pipe: Option<IoHalf>,
        resource: Option<String>,
    ) -> Option<Token> {
        let t = self.token();
        if let Err(e) = self.poll.registry().register(
            stream.source(),
            t,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("cannot register a connection to {endpoint}: {e}");
            return None;
        }
        if let Some(p) = &pipe {
            self.pipe_to_conn.insert(p.id, t);
        }
        let mut config = proto_config(&options, resource);
        if let Origin::Connecter(id) = origin {
            config.await_peer_ready = self
                .connecters
                .get(&id)
                .is_some_and(|k| k.hung_up_in_handshake);
        }
        let proto = Connection::new(config, Instant::now());
        self.conns.insert(
            t,
            Conn {
                stream,
                proto,
                socket,
                options,
                endpoint,
                origin,
                connecting,
                pipe,
                out_buf: None,
                stalled: None,
                closing: None,
                error: None,
                handshake_done: false,
                eof: false,
                sniff: None,
                skip: 0,
                rejected: false,
            },
        );
        self.drive(t);
        Some(t)
    }

    /// An accepted connection on a shared port: send our greeting (it does not depend
    /// on the socket), then collect the peer's greeting and READY to learn its Resource.
    fn add_sniffing_conn(
        &mut self,
        mut stream: Stream,
        socket: Arc<SocketShared>,
        options: Options,
        endpoint: String,
        origin: Origin,
        listener: Token,
    ) {
        let t = self.token();
        if let Err(e) = self.poll.registry().register(
            stream.source(),
            t,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("cannot register a connection to {endpoint}: {e}");
            return;
        }
        let mut greeting = Vec::with_capacity(proto::greeting::GREETING_LEN);
        greeting.extend_from_slice(&proto::greeting::encode_first());
        greeting.extend_from_slice(&proto::greeting::encode_rest("NULL", false));
        let proto = Connection::new(proto_config(&options, None), Instant::now());
        self.conns.insert(
            t,
            Conn {
                stream,
                proto,
                socket,
                options,
                endpoint,
                origin,
                connecting: false,
                pipe: None,
                out_buf: Some(Bytes::from(greeting)),
                stalled: None,
                closing: None,
                error: None,
                handshake_done: false,
                eof: false,
                sniff: Some(Sniff {
                    buf: bytes::BytesMut::new(),
                    listener,
                }),
                skip: 0,
                rejected: false,
            },
        );
        self.drive(t);
    }

    /// Reads a sniffing connection; once the peer's Resource is known, hands the
    /// connection to the socket bound at it (or refuses it). Returns true when done.
    fn sniff(&mut self, t: Token) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return false;
        };
        if c.sniff.is_none() {
            return true;
        }
        if let Err(e) = Self::flush(c) {
            tracing::debug!("write to {} failed: {e}", c.endpoint);
            c.eof = true;
        }
        let Some(sn) = c.sniff.as_mut() else {
            return true;
        };
        while !c.eof {
            match c.stream.read(&mut self.buf) {
                Ok(0) => c.eof = true,
                Ok(n) => sn.buf.extend_from_slice(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => c.eof = true,
            }
        }
        if c.eof {
            self.close_conn(t);
            return false;
        }
        let glen = proto::greeting::GREETING_LEN;
        if sn.buf.len() < glen {
            return false;
        }
        let mut rest = bytes::BytesMut::from(&sn.buf[glen..]);
        let resource = match proto::frame::decode(&mut rest, None) {
            Ok(None) if sn.buf.len() < MAX_SNIFF => return false,
            Ok(Some(f)) if f.command => match proto::command::Command::parse(f.body) {
                Ok(proto::command::Command::Ready(meta)) => meta
                    .get("Resource")
                    .map(|r| String::from_utf8_lossy(r).into_owned()),
                _ => None,
            },
            _ => None,
        };
        let input = sn.buf.split().freeze();
        let listener = sn.listener;
        let Some(l) = self.listeners.get(&listener) else {
            self.close_conn(t);
            return false;
        };
        let route = l.routes.iter().find(|r| r.resource == resource);
        let (socket, options, endpoint, known) = match route.or(l.routes.first()) {
            Some(r) => (
                r.socket.clone(),
                r.options.clone(),
                r.endpoint.clone(),
                route.is_some(),
            ),
            None => {
                self.close_conn(t);
                return false;
            }
        };
        let peer = c
            .stream
            .peer_description()
            .unwrap_or_else(|| "unknown peer".into());
        c.sniff = None;
        c.socket = socket;
        c.options = options;
        c.endpoint = endpoint;
        c.proto = Connection::new(proto_config(&c.options, None), Instant::now());
        c.skip = glen;
        c.proto.handle_input(&input, Instant::now());
        if known {
            c.socket
                .monitors
                .emit(EventKind::Accepted, &c.endpoint, peer);
        } else {
            let what = match &resource {
                Some(r) => format!("no socket is bound at resource {r:?}"),
                None => "the peer named no resource and no socket is bound without one".into(),
            };
            c.socket.monitors.emit(
                EventKind::ResourceUnknown,
                &l.endpoint,
                format!("{what} ({peer})"),
            );
            c.rejected = true;
            // Send only the ERROR (after the greeting already sent): the peer's
            // handshake fails, so it knows not to retry.
            c.skip = c.proto.pending_transmit_bytes();
            c.proto.close(&format!("resource-unknown: {what}"));
        }
        true
    }

    fn start_connect(&mut self, id: u64) {
        let Some(c) = self.connecters.get_mut(&id) else {
            return;
        };
        if self.shutting_down && c.closing.is_none() {
            return;
        }
        match stream::connect(&c.uri, &c.endpoint) {
            Ok(s) => {
                let socket = c.socket.clone();
                let options = c.options.clone();
                let uri = c.uri.clone();
                let pipe = c.pipe.take();
                let resource = match &c.endpoint {
                    Endpoint::Tcp { resource, .. } => resource.clone(),
                    _ => None,
                };
                socket.monitors.emit(EventKind::ConnectDelayed, &uri, "");
                match self.add_conn(
                    s,
                    socket,
                    options,
                    uri,
                    Origin::Connecter(id),
                    true,
                    pipe,
                    resource,
                ) {
                    Some(t) => {
                        // `add_conn` drives the connection once; if that already
                        // failed, a retry is scheduled and the state says so.
                        let alive = self.conns.contains_key(&t);
                        if let Some(c) = self.connecters.get_mut(&id) {
                            if alive {
                                c.state = ConnecterState::Active(t);
                            }
                            let closing = c.closing;
                            if let Some(conn) = self.conns.get_mut(&t) {
                                conn.closing = closing;
                            }
                        }
                    }
                    None => self.schedule_retry(id, "cannot register the stream"),
                }
            }
            Err(e) => self.schedule_retry(id, &e.to_string()),
        }
    }

    fn schedule_retry(&mut self, id: u64, why: &str) {
        let Some(c) = self.connecters.get_mut(&id) else {
            return;
        };
        if self.shutting_down && c.closing.is_none() {
            c.state = ConnecterState::Stopped;
            return;
        }
        let ivl = c.interval;
        c.interval = c.options.next_reconnect_interval(ivl);
        c.state = ConnecterState::Waiting(Instant::now() + ivl);
        c.socket.monitors.emit(
            EventKind::ConnectRetried,
            &c.uri,
            format!("retry in {} ms ({why})", ivl.as_millis()),
        );
    }

    /// Moves everything that can move on one connection: connect completion, input,
    /// events, output; closes it when it is over.
    fn drive(&mut self, t: Token) {
        if !self.sniff(t) {
            return;
        }
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if c.connecting {
            match c.stream.finish_connect() {
                Ok(true) => {
                    c.connecting = false;
                    c.socket
                        .monitors
                        .emit(EventKind::Connected, &c.endpoint, "");
                }
                Ok(false) => return,
                Err(e) => {
                    c.eof = true;
                    tracing::debug!("connect to {} failed: {e}", c.endpoint);
                    self.close_conn_with(t, Some(e.to_string()));
                    return;
                }
            }
        }
        let mut new_pipe = None;
        let mut turns = 0;
        loop {
            turns += 1;
            if turns > MAX_TURNS {
                // Fairness: let the other connections move too, then come back.
                self.again.push(t);
                break;
            }
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            let mut progress = false;
            // 1. Events from proto (and a stalled message) into the socket.
            // (false: the inbound pipe is full; reading waits for the socket.)
            Self::deliver_events(c, &mut new_pipe);
            if let Some(peer) = new_pipe.take() {
                self.attach_pipe(t, peer);
                continue;
            }
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            // 2. Read the stream, unless the socket is not keeping up.
            if c.stalled.is_none() && !c.eof && !c.proto.is_closed() {
                match c.stream.read(&mut self.buf) {
                    Ok(0) => {
                        c.eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        c.proto.handle_input(&self.buf[..n], Instant::now());
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(e) => {
                        tracing::debug!("read from {} failed: {e}", c.endpoint);
                        c.eof = true;
                        progress = true;
                    }
                }
            }
            // 3. Messages from the socket into proto.
            if c.proto.is_ready() {
                let mut taken = 0;
                while c.proto.pending_transmit_bytes() < MAX_PENDING_TRANSMIT && taken < 256 {
                    let Some(p) = c.pipe.as_mut() else { break };
                    match p.from_socket.try_read() {
                        Ok(Some(msg)) => {
                            taken += 1;
                            let sub_side =
                                matches!(c.options.socket_type, SocketType::Sub | SocketType::XSub);
                            match (sub_side && msg.len() == 1, parse_control(&msg)) {
                                (true, Some((true, topic))) => {
                                    p.subscriptions.insert(topic.clone());
                                    c.proto.send_subscribe(topic);
                                }
                                (true, Some((false, topic))) => {
                                    p.subscriptions.remove(&topic);
                                    c.proto.send_cancel(topic);
                                }
                                _ => {
                                    if let Err(e) = c.proto.send(msg) {
                                        tracing::debug!("send to {} failed: {e}", c.endpoint);
                                    }
                                }
                            }
                        }
                        Ok(None) | Err(PipeClosed) => break,
                    }
                }
                if taken > 0 {
                    progress = true;
                }
            }
            // 4. Write.
            match Self::flush(c) {
                Ok(wrote) => progress |= wrote,
                Err(e) => {
                    tracing::debug!("write to {} failed: {e}", c.endpoint);
                    c.eof = true;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        // 5. Is it over?
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        Self::deliver_events(c, &mut new_pipe);
        if let Some(peer) = new_pipe.take() {
            self.attach_pipe(t, peer);
        }
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let flushed = c.out_buf.is_none() && c.proto.pending_transmit_bytes() == 0;
        let shutting_down = self.shutting_down;
        let over = c.eof
            || (c.proto.is_closed() && flushed && c.error.is_some())
            || (c.closing.is_some()
                && flushed
                && c.pipe.as_ref().is_none_or(|p| {
                    (p.from_socket.writer_closed() || shutting_down) && p.from_socket.len() == 0
                }));
        if over {
            self.close_conn(t);
        }
    }

    /// Hands proto's events to the socket. Returns false if the inbound pipe is full.
    fn deliver_events(c: &mut Conn, new_pipe: &mut Option<proto::PeerInfo>) -> bool {
        if let Some(m) = c.stalled.take() {
            if let Some(Err(WriteError::Full(m))) =
                c.pipe.as_mut().map(|p| p.to_socket.try_write(m))
            {
                c.stalled = Some(m);
                return false;
            }
        }
        while new_pipe.is_none() {
            let Some(ev) = c.proto.poll_event() else {
                return true;
            };
            match ev {
                Event::HandshakeSucceeded(_) if c.rejected => {}
                Event::HandshakeSucceeded(peer) => {
                    c.handshake_done = true;
                    *new_pipe = Some(peer);
                }
                Event::Message(m) => match c.pipe.as_mut() {
                    Some(p) => match p.to_socket.try_write(m) {
                        Ok(()) => {}
                        Err(WriteError::Full(m)) => {
                            c.stalled = Some(m);
                            return false;
                        }
                        Err(WriteError::Closed(_) | WriteError::Unsendable(..)) => {}
                    },
                    None => tracing::debug!("message before a pipe exists; dropped"),
                },
                Event::Subscribe(topic) | Event::Cancel(topic) if c.pipe.is_none() => {
                    tracing::debug!("subscription {topic:?} before a pipe exists; dropped");
                }
                Event::Subscribe(topic) => {
                    if let Some(p) = c.pipe.as_mut() {
                        let _ = p.to_socket.write_control(control(true, &topic));
                    }
                }
                Event::Cancel(topic) => {
                    if let Some(p) = c.pipe.as_mut() {
                        let _ = p.to_socket.write_control(control(false, &topic));
                    }
                }
                Event::AuthRequest { username, .. } => {
                    tracing::debug!("PLAIN user {username:?} accepted");
                    c.proto.authenticate(true);
                }
                Event::Closed(e) => {
                    c.error = Some(e);
                }
            }
        }
        true
    }

    fn flush(c: &mut Conn) -> io::Result<bool> {
        let mut wrote = false;
        loop {
            let chunk = match c.out_buf.take() {
                Some(b) => b,
                None if c.sniff.is_some() => return Ok(wrote),
                None => match c.proto.poll_transmit() {
                    Some(b) if c.skip >= b.len() => {
                        c.skip -= b.len();
                        continue;
                    }
                    Some(b) => {
                        let b = b.slice(c.skip..);
                        c.skip = 0;
                        b
                    }
                    None => return Ok(wrote),
                },
            };
            if c.connecting {
                c.out_buf = Some(chunk);
                return Ok(wrote);
            }
            match c.stream.write(&chunk) {
                Ok(n) => {
                    wrote = true;
                    if n < chunk.len() {
                        c.out_buf = Some(chunk.slice(n..));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.out_buf = Some(chunk);
                    return Ok(wrote);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => c.out_buf = Some(chunk),
                Err(e) => return Err(e),
            }
        }
    }

    /// After a handshake: gives the socket a pipe (unless the connecter made one), then
    /// reports the handshake, so a monitor that saw it knows the socket has the peer.
    fn attach_pipe(&mut self, t: Token, peer: proto::PeerInfo) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let detail = format!("peer {}", peer.socket_type);
        if let Origin::Connecter(id) = c.origin {
            if let Some(k) = self.connecters.get_mut(&id) {
                k.interval = k.options.reconnect_interval;
                k.hung_up_in_handshake = false;
            }
        }
        if let Some(p) = &c.pipe {
            // A kept pipe on a new connection: the new peer has not heard our
            // subscriptions yet.
            for topic in &p.subscriptions {
                c.proto.send_subscribe(topic.clone());
            }
            c.socket
                .monitors
                .emit(EventKind::HandshakeSucceeded, &c.endpoint, detail);
            return;
        }
        if c.closing.is_some() || self.shutting_down {
            c.proto.close("socket closed");
            return;
        }
        let ((id, pipe), half) = stream_pipe_with(
            &self.shared,
            &c.socket,
            &c.options,
            &c.endpoint,
            Some(&peer),
        );
        self.pipe_to_conn.insert(id, t);
        c.pipe = Some(half);
        c.socket.deliver(id, pipe);
        c.socket
            .monitors
            .emit(EventKind::HandshakeSucceeded, &c.endpoint, detail);
    }

    fn close_conn(&mut self, t: Token) {
        self.close_conn_with(t, None);
    }

    fn close_conn_with(&mut self, t: Token, io_error: Option<String>) {
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(c.stream.source());
        // Drain the last events (a Closed with the reason).
        while let Some(ev) = c.proto.poll_event() {
            if let Event::Closed(e) = ev {
                c.error = Some(e);
            }
        }
        let permanent = c
            .error
            .as_ref()
            .is_some_and(|e| is_permanent(e, c.handshake_done));
        // The peer took the connection and dropped it during the handshake, without
        // a reason (what libzmq does to a socket type it cannot talk to).
        let hung_up_in_handshake = !c.connecting
            && !c.handshake_done
            && c.error.is_none()
            && c.closing.is_none()
            && c.sniff.is_none();
        let detail = match (&c.error, &io_error) {
            (Some(e), _) => e.to_string(),
            (None, Some(e)) => e.clone(),
            (None, None) if c.closing.is_some() => "socket closed".to_owned(),
            (None, None) if hung_up_in_handshake => format!(
                "the peer closed the connection during the handshake without a reason \
                 (a libzmq peer does this to a socket type it cannot talk to; we are {})",
                c.options.socket_type
            ),
            (None, None) => "connection closed by peer".to_owned(),
        };
        let retry_note = if permanent && matches!(c.origin, Origin::Connecter(_)) {
            "; not reconnecting"
        } else {
            ""
        };
        let mut events = Vec::new();
        if let Some(e) = &c.error {
            if !c.handshake_done {
                let kind = match e {
                    ProtoError::AuthFailed(_) => Some(EventKind::HandshakeFailedAuth),
                    ProtoError::Closed(_) | ProtoError::HeartbeatTimeout => None,
                    _ => Some(EventKind::HandshakeFailedProtocol),
                };
                if let Some(kind) = kind {
                    events.push((kind, format!("{detail}{retry_note}")));
                }
            }
        }
        if !c.connecting {
            events.push((EventKind::Disconnected, detail.clone()));
        }
        if let Some(p) = &c.pipe {
            self.pipe_to_conn.remove(&p.id);
        }
        let origin = c.origin;
        let kept = match origin {
            Origin::Connecter(id) => self
                .connecters
                .get(&id)
                .is_some_and(|k| k.keeps_pipe && !permanent),
            Origin::Listener(_) => false,
        };
        let pipe = if kept { c.pipe.take() } else { None };
        let socket = c.socket.clone();
        let endpoint = std::mem::take(&mut c.endpoint);
        // Close the stream (and the I/O half of a pipe not kept) before telling anyone:
        // a monitor that saw "disconnected" finds the descriptor gone.
        drop(c);
        for (kind, detail) in events {
            socket.monitors.emit(kind, &endpoint, detail);
        }
        if let Origin::Connecter(id) = origin {
            if let Some(k) = self.connecters.get_mut(&id) {
                if kept {
                    k.pipe = pipe;
                }
                if permanent {
                    k.state = ConnecterState::Stopped;
                    k.pipe = None;
                } else if k.closing.is_some() && k.drained(self.shutting_down) {
                    self.connecters.remove(&id);
                } else {
                    k.state = ConnecterState::Waiting(Instant::now());
                    let ivl = k.interval;
                    if hung_up_in_handshake {
                        // Back off even without a maximum set (see the module docs).
                        k.hung_up_in_handshake = true;
                        let base = k.options.reconnect_interval;
                        let max = k
                            .options
                            .reconnect_interval_max
                            .unwrap_or(HANDSHAKE_HANGUP_BACKOFF_MAX)
                            .max(base);
                        self.schedule_retry(id, &detail);
                        if let Some(k) = self.connecters.get_mut(&id) {
                            k.interval = (ivl * 2).clamp(base, max);
                        }
                    } else {
                        self.schedule_retry(id, &detail);
                    }
                }
            }
        }
    }
}
