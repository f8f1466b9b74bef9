//! The stream engine: the part of the context's one background thread
//! ([`super::reactor`]) that drives every stream connection (`tcp://`, `unix://`),
//! speaking ZMTP through one [`proto::Connection`] per stream, and moves messages
//! between the connections and the sockets' pipes.
//!
//! # Ownership
//!
//! The thread owns every listener, stream, `proto::Connection`, connecter (the state of
//! a `connect()`: connecting, connected, or waiting to retry) and the thread's halves
//! of the pipes. Other threads reach it only through the reactor's commands and
//! [`Shared`], the list of pipes that need attention, each followed by a ring of the
//! reactor's waker.
//!
//! # A connection's life
//!
//! 1. `connect`: a `tcp://` name (host or DNS service) is first looked up by the
//!    resolver thread ([`super::dns`]); this thread never waits for DNS. The answer
//!    (a list of addresses, in RFC 2782's order for a service) comes back through
//!    [`Shared`]; a name that does not resolve is a `resolve-failed` event and a retry
//!    like any failed connect. The stream connects in the background, to each address
//!    of the list in turn until one takes it; when none does, a retry is scheduled after
//!    the reconnect interval, which doubles up to the maximum (`connect-retried`), and
//!    the retry looks the name up again (hickory's cache answers until the records'
//!    TTL ends). While connected, the name is looked up again when the answer's TTL
//!    ends (at least [`MIN_REFRESH`] apart); if the records no longer give the
//!    connection's address, the connection is closed (`disconnected`, saying so) and
//!    the reconnect goes to the new addresses: a service that moved is followed.
//!    A SUB or XSUB connecting to a DNS service name fans out instead ([`fans_out`],
//!    `Fan`): its connecter is a manager that only reads the records (again when their
//!    TTL ends) and keeps one child connecter per target of every priority up to the
//!    one in use, each connecting to its target's address with its own back-off and
//!    making its own pipe at the handshake. The priority in use is the best one with a
//!    live connection; when every child of it has failed and none is up, the next
//!    one. A child of a better priority that connects again brings the manager back
//!    to it, and the worse priorities' children are dropped.
//!    `bind`: the listener accepts (`accepted`).
//! 2. The handshake runs in `proto`. A PLAIN or CURVE server's `Event::AuthRequest`
//!    goes to the context's ZAP handler ([`crate::auth`]; none: accept, as libzmq),
//!    called here, in process; a NULL socket with a ZAP domain has its peers judged by
//!    address (accepted ones before a byte is sent, connected ones when the handshake
//!    completes). On success (`handshake-succeeded`) a pipe is made
//!    and delivered to the socket's mailbox, unless the connecter made one beforehand
//!    (then messages queued while the peer was away go out now); messages from a peer
//!    that was authenticated carry the connection's properties (the user id).
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
//!    is not one that is restarting, and 10 Hz retries would be a storm). A CURVE
//!    handshake that fails on keys (a box that does not open; on a client, a server
//!    that hangs up, which is what libzmq does to a HELLO made for another server key)
//!    is reported as `handshake-failed-auth` and retried the same growing way.
//! 5. When its socket closes, a connection lingers until its queued messages are
//!    written or the linger time passes.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Interest, Registry, Token};

use super::dns::{self, Candidate, DnsConfig, Query};
use super::reconnect::Backoff;
use super::stream::{self, Adopted, Bound, Listener, Stream};
use super::{PipeId, SocketHandle, control, parse_control};
use crate::auth::{Credentials, ZapReply, ZapRequest};
use crate::endpoint::Host;
use crate::message::PeerProperties;
use crate::monitor::EventKind;
use crate::options::{Mechanism, Options};
use crate::proto::{self, Connection, Event, ProtoError};
use crate::transport::{
    Notify, Pipe, PipeClosed, PipeMeta, PipeReader, PipeWriter, QueueConfig, WriteError,
    pipe_halves,
};
use crate::{Endpoint, Message, SocketType};

/// How far the retry interval grows after repeated hang-ups during the handshake when
/// `reconnect_interval_max` is not set (see the module docs).
pub(crate) const HANDSHAKE_HANGUP_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Stop taking messages from a socket while this many bytes wait to be written.
pub(crate) const MAX_PENDING_TRANSMIT: usize = 256 * 1024;
const READ_BUF: usize = 64 * 1024;
/// Most chunks gathered into one `writev`.
const MAX_IOV: usize = 64;
/// Rounds of read/deliver/write one connection gets before the others have a turn
/// (each round moves up to 256 messages or 256 KiB). Small, so that a PUB serving
/// several subscribers keeps taking from each in turn: with 64 rounds one connection
/// could take 16,000 messages while the others' queues filled to their HWM and
/// dropped (PUB to 4 SUB processes over tcp, 64 B: slowest subscriber 0.46-0.97 of the
/// mean across runs, median about 0.75; with 2, 0.95, and the mean up from 0.84x to
/// 1.01x libzmq's; one busy connection is driven again at once, at the same speed).
const MAX_TURNS: usize = 2;

use crate::transport::lock;

/// The soonest a live connection's name is looked up again after the last time.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// When to try again after a refresh that failed (the connection stays).
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// When to refresh records whose TTL ends at `valid_until` (never for answers of the
/// system resolver, which has no TTL to tell).
fn next_refresh(valid_until: Option<Instant>) -> Option<Instant> {
    valid_until.map(|t| t.max(Instant::now() + MIN_REFRESH))
}

/// Whether a connect of a `socket_type` socket to `endpoint` connects to every target
/// of the best priority of a DNS service (SUB and XSUB: hear every publisher), rather
/// than to one (see the module docs).
pub(crate) fn fans_out(endpoint: &Endpoint, socket_type: SocketType) -> bool {
    matches!(
        endpoint,
        Endpoint::Tcp {
            host: Host::Service(_),
            ..
        }
    ) && matches!(socket_type, SocketType::Sub | SocketType::XSub)
}

/// What a connect to `endpoint` must look up first, if anything.
fn query_of(endpoint: &Endpoint) -> Option<Query> {
    match endpoint {
        Endpoint::Tcp {
            host: Host::Name(name),
            port,
            ..
        } => Some(Query::Host {
            name: name.clone(),
            port: *port,
        }),
        Endpoint::Tcp {
            host: Host::Service(name),
            ..
        } => Some(Query::Service { name: name.clone() }),
        _ => None,
    }
}

/// What other threads leave for the stream engine: pipes (by id) that have data or
/// room since the thread last looked, each followed by a ring of the thread's waker.
pub(crate) struct Shared {
    dirty: Mutex<Vec<PipeId>>,
    /// Answers of the resolver thread: connecter id, lookup number, answer.
    resolved: Mutex<Vec<(u64, u64, dns::Answer)>>,
    waker: Arc<mio::Waker>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("stream_engine::Shared")
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(waker: Arc<mio::Waker>) -> Shared {
        Shared {
            dirty: Mutex::new(Vec::new()),
            resolved: Mutex::new(Vec::new()),
            waker,
        }
    }
}

/// Rings the I/O thread for one pipe.
struct IoWake {
    key: PipeId,
    shared: Weak<Shared>,
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
    to_socket: Box<dyn PipeWriter>,
    from_socket: Box<dyn PipeReader>,
    /// SUB/XSUB: the topics subscribed through this pipe, replayed to the new peer
    /// when a kept pipe gets a new connection (the socket sent them only once).
    subscriptions: std::collections::BTreeSet<Bytes>,
}

/// Makes a pipe between a socket and the I/O thread: the socket's half (to attach) and
/// the I/O thread's half.
pub(crate) fn stream_pipe(
    io: &Arc<Shared>,
    socket: &Arc<SocketHandle>,
    options: &Options,
    endpoint: &str,
) -> ((PipeId, Pipe), IoHalf) {
    stream_pipe_with(io, socket, options, endpoint, None)
}

fn stream_pipe_with(
    io: &Arc<Shared>,
    socket: &Arc<SocketHandle>,
    options: &Options,
    endpoint: &str,
    peer: Option<&proto::PeerInfo>,
) -> ((PipeId, Pipe), IoHalf) {
    let id = crate::transport::next_pipe_id();
    let wake: Arc<dyn Notify> = Arc::new(IoWake {
        key: id,
        shared: Arc::downgrade(io),
    });
    let signal: Arc<dyn Notify> = socket.signal.clone();
    // The lock-free queue where it gives all the direction needs (a bound, no
    // CONFLATE, no subscriptions written into it); the locked queue otherwise.
    let sends_subscriptions = matches!(options.socket_type, SocketType::Sub | SocketType::XSub);
    let (sw, ir) = pipe_halves(
        QueueConfig {
            hwm: options.send_hwm,
            conflate: options.conflate,
        },
        !sends_subscriptions,
        super::spsc_pipe::Ends::SocketToBackground,
        wake.clone(),
        signal.clone(),
    );
    let (iw, sr) = pipe_halves(
        QueueConfig {
            hwm: options.recv_hwm,
            conflate: options.conflate,
        },
        true,
        super::spsc_pipe::Ends::BackgroundToSocket,
        signal,
        wake,
    );
    let meta = PipeMeta {
        routing_id: peer.map(|p| p.identity.clone()).unwrap_or_default(),
        endpoint: endpoint.to_owned(),
    };
    (
        (
            id,
            Pipe {
                writer: sw,
                reader: sr,
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

/// One bind served by a listener. A listener has one route, or (a TCP port shared by
/// `tcp://host:port/resource` binds) one per resource.
struct Route {
    id: u64,
    resource: Option<String>,
    socket: Arc<SocketHandle>,
    options: Options,
    endpoint: String,
}

struct ListenerEntry {
    /// The id of the bind that made it.
    id: u64,
    listener: Listener,
    /// An adopted descriptor's claim: after `listener`, so dropped after it is closed.
    adopted: Option<Adopted>,
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
/// our greeting is sent, `proto` collects the peer's greeting and first command.
struct Sniff {
    peek: proto::resource::ResourcePeek,
    listener: Token,
}

enum ConnecterState {
    /// A connection (connecting or connected) exists.
    Active(Token),
    /// Waiting to retry at this time.
    Waiting(Instant),
    /// Waiting for the resolver thread's answer.
    Resolving,
    /// A fan-out connect ([`fans_out`]): its children make the connections.
    Managing,
    /// Gave up (handshake failure) or disconnected.
    Stopped,
}

struct Connecter {
    socket: Arc<SocketHandle>,
    uri: String,
    endpoint: Endpoint,
    options: Options,
    /// The pipe made at connect time, while no connection holds it.
    pipe: Option<IoHalf>,
    /// Whether the pipe is made at connect time (kept across reconnects).
    keeps_pipe: bool,
    state: ConnecterState,
    backoff: Backoff,
    /// The socket closed: keep trying only to deliver what is queued, until then.
    closing: Option<Option<Instant>>,
    /// The last connection's peer hung up during the handshake without a reason: the
    /// next one awaits the peer's READY before sending ours (see the module docs).
    hung_up_in_handshake: bool,
    /// A name's addresses not tried yet in this round (empty: look the name up again).
    candidates: VecDeque<Candidate>,
    /// The lookup in flight: its number, and whether it refreshes the records of a
    /// live connection (rather than finding addresses to connect to).
    lookup: Option<(u64, bool)>,
    /// The address of the connection (being) made, when it came from a name.
    current: Option<std::net::SocketAddr>,
    /// When the TTL of the records behind `candidates`/`current` ends.
    valid_until: Option<Instant>,
    /// When to look the name up again while connected (see the module docs).
    refresh_at: Option<Instant>,
    /// A fan-out connect's part in it, if it has one.
    fan: Fan,
    /// An adopted connected descriptor (`fd://`, `systemd://`): one connection, made
    /// by someone else, never remade; the connecter ends with it.
    adopted: Option<AdoptedAs>,
}

/// The parts of a fan-out connect ([`fans_out`]): a manager that looks the service up
/// and keeps one child connecter per target of the priority in use; each child
/// connects to its target's address like a connect to an IP address.
enum Fan {
    None,
    Manager {
        /// The last answer: (priority, target, address), one per target, in order.
        targets: Vec<(u16, String, std::net::SocketAddr)>,
        /// The priority in use (an index into the answer's distinct priorities).
        level: usize,
        /// Target -> child connecter id.
        children: HashMap<String, u64>,
    },
    Child {
        parent: u64,
        /// It has a connection whose handshake is done.
        up: bool,
        /// A connect or connection of it failed (since it was made).
        tried: bool,
        /// Its target's priority.
        priority: u16,
    },
}

/// How an adopted connected descriptor was given to the socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum AdoptedAs {
    /// To `connect`.
    Connected,
    /// To `bind` (an `Accept=yes` connection of socket activation).
    Accepted,
}

impl Connecter {
    /// Whether a closing connecter has nothing left to deliver.
    /// While the context shuts down, a live socket's empty pipe counts as drained.
    fn drained(&mut self, shutting_down: bool) -> bool {
        self.pipe.as_mut().is_none_or(|p| {
            p.from_socket.is_finished() || (shutting_down && p.from_socket.is_empty())
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
    /// An adopted descriptor's claim: after `stream`, so dropped after it is closed.
    adopted: Option<Adopted>,
    proto: Connection,
    socket: Arc<SocketHandle>,
    options: Options,
    endpoint: String,
    origin: Origin,
    /// The TCP/Unix connect is still in progress.
    connecting: bool,
    pipe: Option<IoHalf>,
    /// Bytes of the current chunk not written yet.
    /// Chunks to write, in order (proto's output, or the greeting and a refusal of a
    /// shared port), written with one `writev` each turn.
    out: VecDeque<Bytes>,
    /// A message the socket's full inbound pipe did not take yet.
    stalled: Option<Message>,
    /// The socket closed: close once everything is written, or at the deadline.
    closing: Option<Option<Instant>>,
    /// The error that ended the connection, once known.
    error: Option<ProtoError>,
    handshake_done: bool,
    /// The stream reached end of file or failed.
    eof: bool,
    /// The stream may have bytes to read: set by a readable event, cleared by a read
    /// that found it drained (so a turn started by the socket makes no empty read).
    readable: bool,
    /// An event said the peer closed its end. Then a short read does not clear
    /// `readable`: the end of file is behind the bytes just read, and its edge came
    /// with theirs (a peer that writes its last message and closes, as a process
    /// exiting does), so no later event would make us read it.
    read_closed: bool,
    /// Shared port: still finding out which socket this connection is for.
    sniff: Option<Sniff>,
    /// Refused (unknown resource): no pipe, close after the ERROR.
    rejected: bool,
    /// The user id the ZAP handler gave a NULL peer (PLAIN and CURVE keep theirs in
    /// the peer's `PeerInfo`).
    zap_user: Option<String>,
    /// The connection's properties, attached to every message received on it (only for
    /// authenticated peers: see [`crate::Message::property`]).
    properties: Option<Arc<PeerProperties>>,
    /// Why the ZAP handler refused the peer, once it did.
    auth_refusal: Option<String>,
}

/// The stream half of the background thread (see the module docs).
pub(crate) struct Engine {
    registry: Registry,
    shared: Arc<Shared>,
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
    /// Spare lists swapped with `again` and the shared dirty list each turn, so that
    /// taking them allocates nothing.
    spare_tokens: Vec<Token>,
    spare_pipes: Vec<PipeId>,
    /// Where names are looked up, and the resolver thread (started on first use).
    dns_config: DnsConfig,
    dns: Option<dns::Resolver>,
    /// Numbers lookups, so that an answer to an older one is recognized.
    next_lookup: u64,
    /// Whether a connection wrote since the background thread last took this (for its
    /// spin: [`super::reactor::IoSpin`]).
    wrote: bool,
}

/// Whether a socket of this type both sends and receives messages, so that what it
/// writes may well be answered soon (request/reply, pairs): the background thread
/// spins for such answers ([`super::reactor::IoSpin`]). A PUB or PUSH only writes: its
/// thread sleeps, and the messages its socket queues meanwhile go out in bigger writes.
fn expects_answers(t: SocketType) -> bool {
    matches!(
        t,
        SocketType::Pair
            | SocketType::Req
            | SocketType::Rep
            | SocketType::Dealer
            | SocketType::Router
    )
}

/// `proto`'s configuration for a connection of a socket with these options. Fails only
/// for a CURVE socket without its keys, which bind and connect already refused.
fn proto_config(options: &Options, resource: Option<String>) -> crate::Result<proto::Config> {
    let mut c = proto::Config::new(options.socket_type);
    c.identity = options.routing_id.clone();
    c.resource = resource;
    c.mechanism = options.mechanism_config()?;
    c.max_msg_size = options.max_msg_size;
    c.heartbeat_interval = options.heartbeat_interval;
    c.heartbeat_ttl = options.heartbeat_ttl;
    c.heartbeat_timeout = options.heartbeat_timeout;
    Ok(c)
}

/// Asks the ZAP handler of the socket's context about the peer on `stream`; `None` when
/// no handler is installed. A handler that panics refuses the peer.
fn ask_zap(
    options: &Options,
    stream: &Stream,
    endpoint: &str,
    credentials: Credentials<'_>,
) -> Option<ZapReply> {
    let handler = options.zap.current()?;
    let request = ZapRequest {
        domain: &options.zap_domain,
        address: stream.peer_ip(),
        endpoint,
        credentials,
    };
    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler.authenticate(&request)
    }))
    .unwrap_or_else(|_| ZapReply::deny("the ZAP handler panicked"));
    tracing::debug!(?request, ?reply, "ZAP");
    Some(reply)
}

/// Whether the ZAP handler judges this socket's NULL peers (libzmq's rule: when the
/// socket has a ZAP domain).
fn zap_judges_null(options: &Options) -> bool {
    options.mechanism == Mechanism::Null && !options.zap_domain.is_empty()
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

impl Engine {
    /// A new engine registering its sources with `registry`.
    pub(crate) fn new(registry: Registry, shared: Arc<Shared>, dns_config: DnsConfig) -> Engine {
        Engine {
            registry,
            shared,
            listeners: HashMap::new(),
            conns: HashMap::new(),
            connecters: HashMap::new(),
            pipe_to_conn: HashMap::new(),
            next_token: 0,
            shutting_down: false,
            buf: vec![0; READ_BUF],
            again: Vec::new(),
            spare_tokens: Vec::new(),
            spare_pipes: Vec::new(),
            dns_config,
            dns: None,
            next_lookup: 0,
            wrote: false,
        }
    }

    /// The stream engine's tokens are even (see `reactor`).
    fn token(&mut self) -> Token {
        self.next_token += 2;
        Token(self.next_token)
    }

    /// A readiness event for one of our tokens.
    /// `closed`: the event says the peer's end is closed (or failed).
    pub(crate) fn ready(&mut self, t: Token, readable: bool, closed: bool) {
        if self.listeners.contains_key(&t) {
            self.accept(t);
        } else if let Some(c) = self.conns.get_mut(&t) {
            c.readable |= readable;
            c.read_closed |= closed;
            self.drive(t);
        }
    }

    /// What pipes asked for since the last turn, and connections whose turn was over.
    pub(crate) fn work(&mut self) {
        let answers = std::mem::take(&mut *lock(&self.shared.resolved));
        for (id, seq, answer) in answers {
            self.resolved(id, seq, answer);
        }
        let mut dirty = std::mem::take(&mut self.spare_pipes);
        std::mem::swap(&mut dirty, &mut *lock(&self.shared.dirty));
        for key in dirty.drain(..) {
            if let Some(&t) = self.pipe_to_conn.get(&key) {
                self.drive(t);
            }
        }
        self.spare_pipes = dirty;
        let mut again = std::mem::take(&mut self.spare_tokens);
        std::mem::swap(&mut again, &mut self.again);
        for t in again.drain(..) {
            self.drive(t);
        }
        self.spare_tokens = again;
    }

    /// Whether a connection wrote since the last call.
    pub(crate) fn take_wrote(&mut self) -> bool {
        std::mem::take(&mut self.wrote)
    }

    /// Whether connections stopped only because their turn was over (edge-triggered
    /// readiness will not remind us of them: the thread must come back at once).
    pub(crate) fn has_more_turns(&self) -> bool {
        !self.again.is_empty()
    }

    /// After shutdown: whether nothing is left to deliver. Then the connecters are
    /// dropped, which closes the engine's halves of their pipes.
    pub(crate) fn finished(&mut self) -> bool {
        let sd = self.shutting_down;
        let done = sd
            && self.conns.is_empty()
            && self
                .connecters
                .values_mut()
                .all(|c| c.closing.is_none() || c.drained(sd));
        if done {
            self.connecters.clear();
        }
        done
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut consider = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        for c in self.connecters.values() {
            if let ConnecterState::Waiting(t) = c.state {
                consider(t);
            }
            if let (Some(t), ConnecterState::Active(_) | ConnecterState::Managing) =
                (c.refresh_at, &c.state)
            {
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

    pub(crate) fn timers(&mut self) {
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
        let refresh: Vec<(u64, Query)> = self
            .connecters
            .iter_mut()
            .filter(|(_, c)| {
                c.refresh_at.is_some_and(|t| t <= now)
                    && c.lookup.is_none()
                    && matches!(
                        c.state,
                        ConnecterState::Active(_) | ConnecterState::Managing
                    )
            })
            .filter_map(|(id, c)| {
                c.refresh_at = None;
                query_of(&c.endpoint).map(|q| (*id, q))
            })
            .collect();
        for (id, q) in refresh {
            self.resolve(id, q, true);
        }
        let sd = self.shutting_down;
        let expired: Vec<u64> = self
            .connecters
            .iter_mut()
            .filter_map(|(id, c)| {
                let over = c.closing.is_some_and(|d| d.is_some_and(|d| d <= now))
                    || (c.closing.is_some()
                        && !matches!(c.state, ConnecterState::Active(_))
                        && c.drained(sd));
                over.then_some(*id)
            })
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

    /// Owns and serves a bound listener.
    pub(crate) fn listen(
        &mut self,
        id: u64,
        socket: Arc<SocketHandle>,
        mut bound: Bound,
        options: Options,
    ) {
        let t = self.token();
        if let Err(e) = self
            .registry
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
                adopted: bound.adopted,
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

    /// Connects (and keeps reconnecting) to an endpoint.
    pub(crate) fn connect(
        &mut self,
        id: u64,
        socket: Arc<SocketHandle>,
        uri: String,
        endpoint: Endpoint,
        options: Options,
        pipe: Option<IoHalf>,
    ) {
        let keeps_pipe = pipe.is_some();
        let fan = fans_out(&endpoint, options.socket_type) && pipe.is_none();
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
                backoff: Backoff::new(&options),
                options,
                pipe,
                keeps_pipe,
                state: ConnecterState::Waiting(Instant::now()),
                closing: None,
                hung_up_in_handshake: false,
                candidates: VecDeque::new(),
                lookup: None,
                current: None,
                valid_until: None,
                refresh_at: None,
                fan: if fan {
                    Fan::Manager {
                        targets: Vec::new(),
                        level: 0,
                        children: HashMap::new(),
                    }
                } else {
                    Fan::None
                },
                adopted: None,
            },
        );
        self.start_connect(id);
    }

    /// Serves a connected stream someone else made (an adopted descriptor): one
    /// connection that is never remade. When it ends (`disconnected`), so does the
    /// endpoint. `pipe`: the pipe made at connect time, if any.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn adopt(
        &mut self,
        id: u64,
        socket: Arc<SocketHandle>,
        uri: String,
        endpoint: Endpoint,
        options: Options,
        pipe: Option<IoHalf>,
        stream: Stream,
        adopted: Adopted,
        how: AdoptedAs,
    ) {
        let keeps_pipe = pipe.is_some();
        self.connecters.insert(
            id,
            Connecter {
                socket: socket.clone(),
                uri: uri.clone(),
                endpoint,
                backoff: Backoff::new(&options),
                options: options.clone(),
                pipe: None,
                keeps_pipe,
                state: ConnecterState::Stopped,
                closing: None,
                hung_up_in_handshake: false,
                candidates: VecDeque::new(),
                lookup: None,
                current: None,
                valid_until: None,
                refresh_at: None,
                fan: Fan::None,
                adopted: Some(how),
            },
        );
        let (kind, peer) = match how {
            AdoptedAs::Connected => (EventKind::Connected, String::new()),
            AdoptedAs::Accepted => (
                EventKind::Accepted,
                stream.peer_description().unwrap_or_default(),
            ),
        };
        socket.monitors.emit(kind, &uri, peer);
        // Not connecting: the stream is connected already, and it is read at once
        // (`readable` starts set), so bytes that arrived before it was registered
        // (edge-triggered) are not left waiting for an edge that never comes.
        match self.add_conn(
            stream,
            socket.clone(),
            options,
            uri.clone(),
            Origin::Connecter(id),
            false,
            pipe,
            None,
        ) {
            Some(t) => match self.conns.get_mut(&t) {
                Some(c) => {
                    c.adopted = Some(adopted);
                    if let Some(k) = self.connecters.get_mut(&id) {
                        k.state = ConnecterState::Active(t);
                    }
                }
                // Already over (the peer had closed): the descriptor is closed.
                None => drop(adopted),
            },
            None => {
                self.connecters.remove(&id);
                socket.monitors.emit(
                    EventKind::Disconnected,
                    &uri,
                    "cannot register the adopted descriptor; not reconnecting",
                );
            }
        }
    }

    /// Serves one more resource on a listener this context already has.
    pub(crate) fn add_route(
        &mut self,
        listener: u64,
        id: u64,
        resource: Option<String>,
        socket: Arc<SocketHandle>,
        options: Options,
        endpoint: String,
    ) {
        match self.listeners.values_mut().find(|l| l.id == listener) {
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
        }
    }

    /// Stops serving a bind (a route; the listener closes with its last route).
    pub(crate) fn unbind(&mut self, id: u64) {
        self.remove_routes(|r| r.id == id);
    }

    /// Stops connecting and closes the connection.
    pub(crate) fn disconnect(&mut self, id: u64) {
        if let Some(c) = self.connecters.remove(&id) {
            if let ConnecterState::Active(t) = c.state {
                self.close_conn(t);
            }
            if let Fan::Manager { children, .. } = c.fan {
                for child in children.into_values() {
                    self.disconnect(child);
                }
            }
        }
    }

    /// The context shuts down: every socket closes with its linger.
    pub(crate) fn shutdown(&mut self) {
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

    /// What `lwmq ls` shows of this thread's part of each socket: bound and connected
    /// endpoints, and connections whose handshake is done.
    pub(crate) fn introspect(&self, infos: &mut HashMap<u64, crate::introspect::SocketInfo>) {
        use crate::introspect::{ConnectionInfo, Direction};
        let get = SocketHandle::info_entry;
        for l in self.listeners.values() {
            for r in &l.routes {
                let shown = match &l.adopted {
                    Some(a) => format!("{} (adopted {})", r.endpoint, a.what),
                    None => r.endpoint.clone(),
                };
                get(infos, &r.socket).bound.push(shown);
            }
        }
        for c in self.connecters.values() {
            // A fan-out's children are its connections, not connects of their own.
            if !matches!(c.fan, Fan::Child { .. }) {
                let info = get(infos, &c.socket);
                match c.adopted {
                    None => info.connected.push(c.uri.clone()),
                    Some(AdoptedAs::Connected) => {
                        info.connected.push(format!("{} (adopted)", c.uri))
                    }
                    Some(AdoptedAs::Accepted) => info.bound.push(format!("{} (adopted)", c.uri)),
                }
            }
        }
        for c in self.conns.values() {
            if !c.handshake_done || c.closing.is_some() {
                continue;
            }
            let (local_address, peer_address) = c.stream.addresses();
            get(infos, &c.socket).connections.push(ConnectionInfo {
                endpoint: c.endpoint.clone(),
                direction: match c.origin {
                    Origin::Listener(_) => Direction::Accepted,
                    Origin::Connecter(id)
                        if self
                            .connecters
                            .get(&id)
                            .is_some_and(|k| k.adopted == Some(AdoptedAs::Accepted)) =>
                    {
                        Direction::Accepted
                    }
                    Origin::Connecter(_) => Direction::Connected,
                },
                local_address,
                peer_address,
                peer_pid: None,
                peer_socket_type: c.proto.peer().map(|p| p.socket_type.as_str().to_owned()),
            });
        }
    }

    fn close_listener(&mut self, t: Token) {
        if let Some(mut l) = self.listeners.remove(&t) {
            let _ = self.registry.deregister(l.listener.source());
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

    /// A socket closed: close its listeners, stop its connecters, let its connections
    /// flush for up to `linger`.
    pub(crate) fn close_socket(&mut self, socket_id: u64, linger: Option<Duration>) {
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
        socket: Arc<SocketHandle>,
        options: Options,
        endpoint: String,
        origin: Origin,
        connecting: bool,
        pipe: Option<IoHalf>,
        resource: Option<String>,
    ) -> Option<Token> {
        let mut config = match proto_config(&options, resource) {
            Ok(c) => c,
            Err(e) => {
                // Bind and connect checked the options, so this is not reached.
                tracing::warn!("connection to {endpoint} not started: {e}");
                return None;
            }
        };
        // An accepted NULL peer of a socket with a ZAP domain is judged by its address
        // before a byte is sent: refused, it sees a hang-up (no READY, no ERROR), as a
        // libzmq NULL server with ZAP does.
        let mut zap_user = None;
        if matches!(origin, Origin::Listener(_)) && zap_judges_null(&options) {
            match ask_zap(&options, &stream, &endpoint, Credentials::Null) {
                None => {}
                Some(ZapReply::Allow { user_id }) => zap_user = Some(user_id),
                Some(ZapReply::Deny { reason }) => {
                    socket.monitors.emit(
                        EventKind::HandshakeFailedAuth,
                        &endpoint,
                        format!("the ZAP handler refused the peer: {reason}"),
                    );
                    return None;
                }
            }
        }
        let t = self.token();
        if let Err(e) =
            self.registry
                .register(stream.source(), t, Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!("cannot register a connection to {endpoint}: {e}");
            return None;
        }
        if let Some(p) = &pipe {
            self.pipe_to_conn.insert(p.id, t);
        }
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
                adopted: None,
                proto,
                socket,
                options,
                endpoint,
                origin,
                connecting,
                pipe,
                out: VecDeque::new(),
                stalled: None,
                closing: None,
                error: None,
                handshake_done: false,
                eof: false,
                readable: true,
                read_closed: false,
                sniff: None,
                rejected: false,
                zap_user,
                properties: None,
                auth_refusal: None,
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
        socket: Arc<SocketHandle>,
        options: Options,
        endpoint: String,
        origin: Origin,
        listener: Token,
    ) {
        let config = match proto_config(&options, None) {
            Ok(c) => c,
            Err(e) => {
                // Shared ports take NULL sockets only, so this is not reached.
                tracing::warn!("connection to {endpoint} not started: {e}");
                return;
            }
        };
        let t = self.token();
        if let Err(e) =
            self.registry
                .register(stream.source(), t, Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!("cannot register a connection to {endpoint}: {e}");
            return;
        }
        let proto = Connection::new(config, Instant::now());
        self.conns.insert(
            t,
            Conn {
                stream,
                adopted: None,
                proto,
                socket,
                options,
                endpoint,
                origin,
                connecting: false,
                pipe: None,
                out: VecDeque::from([proto::resource::ResourcePeek::greeting()]),
                stalled: None,
                closing: None,
                error: None,
                handshake_done: false,
                eof: false,
                readable: true,
                read_closed: false,
                sniff: Some(Sniff {
                    peek: proto::resource::ResourcePeek::new(),
                    listener,
                }),
                rejected: false,
                zap_user: None,
                properties: None,
                auth_refusal: None,
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
        let mut routed = None;
        while !c.eof && routed.is_none() {
            match c.stream.read(&mut self.buf) {
                Ok(0) => c.eof = true,
                Ok(n) => {
                    if let proto::resource::Peek::Routed { resource, input } =
                        sn.peek.handle_input(&self.buf[..n])
                    {
                        routed = Some((resource, input));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => c.eof = true,
            }
        }
        if c.eof {
            self.close_conn(t);
            return false;
        }
        let Some((resource, input)) = routed else {
            return false;
        };
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
        let mut config = match proto_config(&c.options, None) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("connection to {} not started: {e}", c.endpoint);
                self.close_conn(t);
                return false;
            }
        };
        config.greeting_sent = true;
        c.proto = Connection::new(config, Instant::now());
        if known {
            c.proto.handle_input(&input, Instant::now());
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
            // Only an ERROR after our greeting: the peer's handshake fails, so it knows
            // not to retry. The connection is over once that is written.
            let refusal =
                proto::resource::ResourcePeek::refusal(&format!("resource-unknown: {what}"));
            // After whatever part of the greeting is not written yet.
            c.out.push_back(refusal);
            c.proto.close("resource unknown");
        }
        true
    }

    /// Asks the resolver thread for a connecter's addresses (see the module docs).
    /// `refresh`: for a live connection, whose records' TTL ended.
    fn resolve(&mut self, id: u64, query: Query, refresh: bool) {
        if self.dns.is_none() {
            match dns::Resolver::start(self.dns_config.clone()) {
                Ok(r) => self.dns = Some(r),
                Err(e) => {
                    if !refresh {
                        self.resolve_failed(id, format!("cannot start the resolver thread: {e}"));
                    }
                    return;
                }
            }
        }
        let Some(c) = self.connecters.get_mut(&id) else {
            return;
        };
        self.next_lookup += 1;
        let seq = self.next_lookup;
        c.lookup = Some((seq, refresh));
        if !refresh {
            c.state = ConnecterState::Resolving;
        }
        let shared = Arc::downgrade(&self.shared);
        let reply: dns::Reply = Box::new(move |answer| {
            if let Some(s) = shared.upgrade() {
                lock(&s.resolved).push((id, seq, answer));
                let _ = s.waker.wake();
            }
        });
        if let Some(r) = &self.dns {
            r.lookup(query, reply);
        }
    }

    /// The resolver thread answered lookup `seq` of connecter `id`.
    fn resolved(&mut self, id: u64, seq: u64, answer: dns::Answer) {
        let Some(c) = self.connecters.get_mut(&id) else {
            return;
        };
        let refresh = match c.lookup {
            Some((s, refresh)) if s == seq => refresh,
            // An answer nobody waits for any more.
            _ => return,
        };
        c.lookup = None;
        let answer = match answer {
            Ok(r) if r.candidates.is_empty() => Err("the name has no address".to_owned()),
            other => other,
        };
        tracing::debug!(
            "{}: {}",
            c.uri,
            match &answer {
                Ok(r) => r
                    .candidates
                    .iter()
                    .map(|c| format!("{} ({})", c.addr, c.origin))
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => e.clone(),
            }
        );
        if refresh {
            self.refreshed(id, answer);
            return;
        }
        if !matches!(c.state, ConnecterState::Resolving) {
            return;
        }
        match answer {
            Ok(r) if matches!(c.fan, Fan::Manager { .. }) => {
                c.valid_until = r.valid_until;
                c.refresh_at = next_refresh(r.valid_until);
                c.state = ConnecterState::Managing;
                self.manage(id, Some(r.candidates));
            }
            Ok(r) => {
                c.candidates = r.candidates.into();
                c.valid_until = r.valid_until;
                c.state = ConnecterState::Waiting(Instant::now());
                self.start_connect(id);
            }
            Err(e) => self.resolve_failed(id, e),
        }
    }

    /// A fan-out manager (see the module docs): takes a new answer (if any), picks
    /// the priority in use and keeps one child per target of every priority up to it.
    ///
    /// The priority in use is the best one with a live connection; when none has one,
    /// it moves one priority further each time every child of the one in use failed.
    /// Children of better priorities stay and keep retrying (with their back-off), so
    /// when one of them connects again, the worse priorities' children are dropped.
    fn manage(&mut self, id: u64, answer: Option<Vec<Candidate>>) {
        let (targets, mut level) = {
            let Some(Connecter {
                fan: Fan::Manager { targets, level, .. },
                ..
            }) = self.connecters.get_mut(&id)
            else {
                return;
            };
            if let Some(list) = answer {
                let mut fresh: Vec<(u16, String, std::net::SocketAddr)> = Vec::new();
                for c in list {
                    if !fresh.iter().any(|(_, t, _)| *t == c.origin) {
                        fresh.push((c.priority, c.origin, c.addr));
                    }
                }
                *targets = fresh;
            }
            (targets.clone(), *level)
        };
        let mut levels: Vec<u16> = targets.iter().map(|t| t.0).collect();
        levels.sort_unstable();
        levels.dedup();
        if levels.is_empty() {
            return;
        }
        level = level.min(levels.len() - 1);
        // (up, every child failed) per priority, from the children.
        let mut up = vec![false; levels.len()];
        let mut all_failed = vec![true; levels.len()];
        let mut any = vec![false; levels.len()];
        for k in self.connecters.values() {
            if let Fan::Child {
                parent,
                up: is_up,
                tried,
                priority,
            } = k.fan
            {
                if parent != id {
                    continue;
                }
                let Some(l) = levels.iter().position(|p| *p == priority) else {
                    continue;
                };
                any[l] = true;
                up[l] |= is_up;
                all_failed[l] &= tried && !is_up;
            }
        }
        if let Some(best_up) = up.iter().position(|u| *u) {
            level = best_up;
        } else if any[level] && all_failed[level] && level + 1 < levels.len() {
            level += 1;
            tracing::debug!(
                "every target of priority {} is down: trying priority {}",
                levels[level - 1],
                levels[level]
            );
        }
        let children = {
            let Some(Connecter {
                fan: Fan::Manager {
                    level: l, children, ..
                },
                ..
            }) = self.connecters.get_mut(&id)
            else {
                return;
            };
            *l = level;
            std::mem::take(children)
        };
        self.reconcile(id, &targets, levels[level], children);
    }

    /// Makes manager `id`'s children exactly one per target of priority `max` or
    /// better.
    fn reconcile(
        &mut self,
        id: u64,
        targets: &[(u16, String, std::net::SocketAddr)],
        max: u16,
        mut children: HashMap<String, u64>,
    ) {
        let want: Vec<&(u16, String, std::net::SocketAddr)> =
            targets.iter().filter(|t| t.0 <= max).collect();
        let gone: Vec<String> = children
            .iter()
            .filter(|(name, kid)| {
                let addr = self.connecters.get(kid).and_then(|k| k.current);
                !want.iter().any(|t| &t.1 == *name && Some(t.2) == addr)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(kid) = children.remove(&name) {
                self.disconnect(kid);
            }
        }
        let Some(m) = self.connecters.get(&id) else {
            return;
        };
        let (socket, uri, options, resource, closing) = (
            m.socket.clone(),
            m.uri.clone(),
            m.options.clone(),
            match &m.endpoint {
                Endpoint::Tcp { resource, .. } => resource.clone(),
                _ => None,
            },
            m.closing,
        );
        let mut new = Vec::new();
        for (priority, name, addr) in want {
            if children.contains_key(name) {
                continue;
            }
            let kid = super::next_pipe_id();
            children.insert(name.clone(), kid);
            self.connecters.insert(
                kid,
                Connecter {
                    socket: socket.clone(),
                    uri: uri.clone(),
                    endpoint: Endpoint::Tcp {
                        host: Host::Ip(addr.ip()),
                        port: addr.port(),
                        resource: resource.clone(),
                    },
                    backoff: Backoff::new(&options),
                    options: options.clone(),
                    pipe: None,
                    keeps_pipe: false,
                    state: ConnecterState::Waiting(Instant::now()),
                    closing,
                    hung_up_in_handshake: false,
                    candidates: VecDeque::new(),
                    lookup: None,
                    current: Some(*addr),
                    valid_until: None,
                    refresh_at: None,
                    fan: Fan::Child {
                        parent: id,
                        up: false,
                        tried: false,
                        priority: *priority,
                    },
                    adopted: None,
                },
            );
            new.push(kid);
        }
        if let Some(Connecter {
            fan: Fan::Manager { children: c, .. },
            ..
        }) = self.connecters.get_mut(&id)
        {
            *c = children;
        }
        for kid in new {
            self.start_connect(kid);
        }
    }

    /// A fan-out child failed to connect or lost its connection (`failed`), or made
    /// one (`!failed`): its manager may change the priority in use.
    fn child_changed(&mut self, id: u64, failed: bool) {
        let Some(c) = self.connecters.get_mut(&id) else {
            return;
        };
        let Fan::Child {
            parent, up, tried, ..
        } = &mut c.fan
        else {
            return;
        };
        *up = !failed;
        *tried |= failed;
        let parent = *parent;
        self.manage(parent, None);
    }

    /// The answer to a refresh: a live connection to an address the name's records no
    /// longer give is closed, and the reconnect goes where they say now.
    fn refreshed(&mut self, id: u64, answer: dns::Answer) {
        let Some(c) = self.connecters.get_mut(&id) else {
            return;
        };
        if matches!(c.fan, Fan::Manager { .. }) {
            match answer {
                Ok(r) => {
                    c.valid_until = r.valid_until;
                    c.refresh_at = next_refresh(r.valid_until);
                    self.manage(id, Some(r.candidates));
                }
                Err(e) => {
                    tracing::debug!("refreshing {} failed: {e}", c.uri);
                    c.refresh_at = Some(Instant::now() + REFRESH_RETRY);
                }
            }
            return;
        }
        let ConnecterState::Active(t) = c.state else {
            // Not connected now: the reconnect looks the name up itself.
            return;
        };
        match answer {
            Ok(r) => {
                c.valid_until = r.valid_until;
                match c.current {
                    Some(cur) if !r.candidates.iter().any(|x| x.addr == cur) => {
                        c.candidates = r.candidates.into();
                        c.refresh_at = None;
                        let why = format!(
                            "the name's records no longer give {cur}: reconnecting where they say now"
                        );
                        self.close_conn_with(t, Some(why));
                    }
                    _ => c.refresh_at = next_refresh(c.valid_until),
                }
            }
            Err(e) => {
                // Keep the connection; try again later.
                tracing::debug!("refreshing {} failed: {e}", c.uri);
                c.refresh_at = Some(Instant::now() + REFRESH_RETRY);
            }
        }
    }

    fn resolve_failed(&mut self, id: u64, why: String) {
        if let Some(c) = self.connecters.get(&id) {
            c.socket
                .monitors
                .emit(EventKind::ResolveFailed, &c.uri, why.clone());
        }
        self.schedule_retry(id, &why);
    }

    fn start_connect(&mut self, id: u64) {
        let Some(c) = self.connecters.get_mut(&id) else {
            return;
        };
        if self.shutting_down && c.closing.is_none() {
            return;
        }
        if let Fan::Manager { .. } = c.fan {
            // It never connects itself: it (re)reads the records, its children connect.
            if let Some(q) = query_of(&c.endpoint) {
                self.resolve(id, q, false);
            }
            return;
        }
        let attempt = match query_of(&c.endpoint) {
            Some(query) => match c.candidates.pop_front() {
                Some(next) => {
                    c.current = Some(next.addr);
                    stream::connect_tcp(next.addr)
                }
                None => {
                    self.resolve(id, query, false);
                    return;
                }
            },
            None => stream::connect(&c.uri, &c.endpoint),
        };
        match attempt {
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
            Err(e) => match self.connecters.get_mut(&id) {
                Some(c) if !c.candidates.is_empty() => {
                    tracing::debug!("connect for {} failed: {e}; trying the next address", c.uri);
                    c.state = ConnecterState::Waiting(Instant::now());
                }
                _ => {
                    self.schedule_retry(id, &e.to_string());
                    self.child_changed(id, true);
                }
            },
        }
    }

    fn schedule_retry(&mut self, id: u64, why: &str) {
        self.schedule_retry_capped(id, why, None);
    }

    /// `cap`: the interval grows up to it even without a maximum set.
    fn schedule_retry_capped(&mut self, id: u64, why: &str, cap: Option<Duration>) {
        let Some(c) = self.connecters.get_mut(&id) else {
            return;
        };
        if self.shutting_down && c.closing.is_none() {
            c.state = ConnecterState::Stopped;
            return;
        }
        let at = match cap {
            Some(cap) => c
                .backoff
                .retry_growing(&c.options, &c.socket, &c.uri, why, cap),
            None => c.backoff.retry(&c.options, &c.socket, &c.uri, why),
        };
        c.state = ConnecterState::Waiting(at);
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
            // 2. Read the stream, unless the socket is not keeping up or the stream
            // has nothing (a short read drained it; the next arrival is a new edge).
            if c.readable && c.stalled.is_none() && !c.eof && !c.proto.is_closed() {
                // The body of a large frame goes straight into proto's receive buffer,
                // where it stays; anything else into the scratch buffer, in large reads,
                // and is copied.
                let read = if c.proto.large_frame_arriving() {
                    let input = c.proto.input_buffer();
                    let room = input.capacity() - input.len();
                    crate::sys::read_into(c.stream.as_fd(), input).map(|n| (n, n == room, None))
                } else {
                    let n = self.buf.len();
                    c.stream.read(&mut self.buf).map(|r| (r, r == n, Some(r)))
                };
                match read {
                    Ok((0, ..)) => {
                        c.eof = true;
                        progress = true;
                    }
                    Ok((_, full, scratch)) => {
                        c.readable = full || c.read_closed;
                        match scratch {
                            Some(n) => c.proto.handle_input(&self.buf[..n], Instant::now()),
                            None => c.proto.input_received(Instant::now()),
                        }
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
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
                                    let spent = &mut |f| p.from_socket.recycle(f);
                                    if let Err(e) = c.proto.send_recycling(msg, spent) {
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
                Ok(wrote) => {
                    progress |= wrote;
                    self.wrote |= wrote && expects_answers(c.socket.socket_type);
                }
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
        let flushed = c.out.is_empty() && c.proto.pending_transmit_bytes() == 0;
        let shutting_down = self.shutting_down;
        let over = c.eof
            || (c.proto.is_closed() && flushed && c.error.is_some())
            || (c.closing.is_some()
                && flushed
                && c.pipe.as_mut().is_none_or(|p| {
                    p.from_socket.is_finished() || (shutting_down && p.from_socket.is_empty())
                }));
        if over {
            self.close_conn(t);
        }
    }

    /// Hands proto's events to the socket. Returns false if the inbound pipe is full.
    fn deliver_events(c: &mut Conn, new_pipe: &mut Option<proto::PeerInfo>) -> bool {
        let done = Self::deliver_events_deferred(c, new_pipe);
        // The messages of this batch become visible to the socket, with one wake-up.
        if let Some(p) = c.pipe.as_mut() {
            p.to_socket.flush();
        }
        done
    }

    /// [`deliver_events`](Self::deliver_events) without the final flush.
    fn deliver_events_deferred(c: &mut Conn, new_pipe: &mut Option<proto::PeerInfo>) -> bool {
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
            let subscribe = matches!(ev, Event::Subscribe(_));
            match ev {
                Event::HandshakeSucceeded(_) if c.rejected => {}
                Event::HandshakeSucceeded(peer) => {
                    // NULL with a ZAP domain: the handler judges the peer's address.
                    if zap_judges_null(&c.options) && c.zap_user.is_none() {
                        match Self::ask_zap(c, Credentials::Null) {
                            None => {}
                            Some(ZapReply::Allow { user_id }) => c.zap_user = Some(user_id),
                            Some(ZapReply::Deny { reason }) => {
                                c.auth_refusal = Some(reason);
                                c.proto.close("400");
                                continue;
                            }
                        }
                    }
                    c.handshake_done = true;
                    *new_pipe = Some(peer);
                }
                Event::Message(mut m) => match c.pipe.as_mut() {
                    Some(p) => match p.to_socket.write_deferred({
                        if let Some(props) = &c.properties {
                            m.set_peer_properties(Some(props.clone()));
                        }
                        m
                    }) {
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
                Event::Subscribe(topic) | Event::Cancel(topic) => {
                    if let Some(p) = c.pipe.as_mut() {
                        // Never dropped: a full lock-free queue holds it back like a
                        // message, and reading waits.
                        if let Err(WriteError::Full(m)) =
                            p.to_socket.write_control(control(subscribe, &topic))
                        {
                            c.stalled = Some(m);
                            return false;
                        }
                    }
                }
                Event::AuthRequest {
                    username,
                    password,
                    curve_public_key,
                } => {
                    let credentials = match &curve_public_key {
                        Some(public_key) => Credentials::Curve { public_key },
                        None => Credentials::Plain {
                            username: &username,
                            password: &password,
                        },
                    };
                    match Self::ask_zap(c, credentials) {
                        // No handler: everyone is accepted, as libzmq does.
                        None => c.proto.authenticate(true),
                        Some(ZapReply::Allow { user_id }) => c.proto.accept_as(user_id),
                        Some(ZapReply::Deny { reason }) => {
                            c.auth_refusal = Some(reason);
                            c.proto.authenticate(false);
                        }
                    }
                }
                Event::Closed(e) => {
                    c.error = Some(e);
                }
            }
        }
        true
    }

    /// Asks the context's ZAP handler about this connection's peer (see [`ask_zap`]).
    fn ask_zap(c: &Conn, credentials: Credentials<'_>) -> Option<ZapReply> {
        ask_zap(&c.options, &c.stream, &c.endpoint, credentials)
    }

    /// The properties received messages carry: only for a peer that was authenticated
    /// (a PLAIN or CURVE client we served, or a NULL peer the ZAP handler admitted).
    fn properties(c: &Conn, peer: &proto::PeerInfo) -> Option<Arc<PeerProperties>> {
        let user_id = peer.user_id.clone().or_else(|| c.zap_user.clone())?;
        let mut list = vec![("User-Id".to_owned(), Bytes::from(user_id))];
        if let (_, Some(addr)) = c.stream.addresses() {
            let addr = match c.stream.peer_ip() {
                Some(ip) => ip.to_string(),
                None => addr,
            };
            list.push(("Peer-Address".to_owned(), Bytes::from(addr)));
        }
        list.push((
            "Socket-Type".to_owned(),
            Bytes::from_static(peer.socket_type.as_str().as_bytes()),
        ));
        if !peer.identity.is_empty() {
            list.push(("Identity".to_owned(), peer.identity.clone()));
        }
        list.extend(peer.properties.iter().cloned());
        Some(Arc::new(PeerProperties::new(list)))
    }

    /// Writes what is queued: everything proto has (up to [`MAX_IOV`] chunks, and
    /// never more than [`MAX_PENDING_TRANSMIT`] bytes gathered) in one `writev`, again
    /// until the stream would block or nothing is left. Returns whether it wrote.
    fn flush(c: &mut Conn) -> io::Result<bool> {
        let mut wrote = false;
        loop {
            if c.sniff.is_none() {
                while c.out.len() < MAX_IOV {
                    match c.proto.poll_transmit() {
                        Some(b) => c.out.push_back(b),
                        None => break,
                    }
                }
            }
            if c.out.is_empty() || c.connecting {
                return Ok(wrote);
            }
            let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
            let n = c.out.len().min(MAX_IOV);
            for (slot, chunk) in iov.iter_mut().zip(c.out.iter()) {
                *slot = io::IoSlice::new(chunk);
            }
            match c.stream.write_vectored(&iov[..n]) {
                Ok(mut written) => {
                    wrote = true;
                    while written > 0 {
                        let Some(front) = c.out.front_mut() else {
                            break;
                        };
                        if written >= front.len() {
                            written -= front.len();
                            c.out.pop_front();
                        } else {
                            bytes::Buf::advance(front, written);
                            written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(wrote),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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
        c.properties = Self::properties(c, &peer);
        if let Origin::Connecter(id) = c.origin {
            if let Some(k) = self.connecters.get_mut(&id) {
                k.backoff.reset(&k.options);
                k.hung_up_in_handshake = false;
                // The next reconnect looks the name up again; while connected, the
                // name is looked up again when its records' TTL ends.
                k.candidates.clear();
                k.refresh_at = next_refresh(k.valid_until);
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
        if let Origin::Connecter(k) = c.origin {
            // A fan-out child is up: its manager may go back to its priority.
            self.child_changed(k, false);
        }
    }

    fn close_conn(&mut self, t: Token) {
        self.close_conn_with(t, None);
    }

    fn close_conn_with(&mut self, t: Token, io_error: Option<String>) {
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        let _ = self.registry.deregister(c.stream.source());
        // Drain the last events (a Closed with the reason).
        while let Some(ev) = c.proto.poll_event() {
            if let Event::Closed(e) = ev {
                c.error = Some(e);
            }
        }
        // Our ZAP handler refused the peer: that, with its reason, is why it ended.
        if let Some(reason) = c.auth_refusal.take() {
            c.error = Some(ProtoError::AuthFailed(format!(
                "the ZAP handler refused the peer: {reason}"
            )));
        }
        let permanent = c
            .error
            .as_ref()
            .is_some_and(|e| is_permanent(e, c.handshake_done));
        // The peer took the connection and dropped it during the handshake, without
        // a reason (what libzmq does to a socket type it cannot talk to, and what a
        // libzmq CURVE server does to a client whose HELLO does not open: a wrong
        // server key).
        let hung_up_in_handshake = !c.connecting
            && !c.handshake_done
            && c.error.is_none()
            && c.closing.is_none()
            && c.sniff.is_none();
        let curve_client = c.options.mechanism == Mechanism::CurveClient;
        // A CURVE handshake that fails on a box that does not open, or that the server
        // ends without a word, is a failed authentication (wrong keys), retried with a
        // growing interval: the server may be restarting with its key, or not.
        let curve_auth = !c.handshake_done
            && matches!(
                c.options.mechanism,
                Mechanism::CurveClient | Mechanism::CurveServer
            )
            && (matches!(c.error, Some(ProtoError::Crypto(_)))
                || (curve_client && hung_up_in_handshake));
        let detail = match (&c.error, &io_error) {
            (Some(e), _) => e.to_string(),
            (None, Some(e)) => e.clone(),
            (None, None) if c.closing.is_some() => "socket closed".to_owned(),
            (None, None) if hung_up_in_handshake && curve_client => "the CURVE server closed \
                 the connection during the handshake without a reason (a libzmq server does \
                 this when our HELLO does not open: is the server key right?)"
                .to_owned(),
            (None, None) if hung_up_in_handshake => format!(
                "the peer closed the connection during the handshake without a reason \
                 (a libzmq peer does this to a socket type it cannot talk to; we are {})",
                c.options.socket_type
            ),
            (None, None) => "connection closed by peer".to_owned(),
        };
        let adopted = match c.origin {
            Origin::Connecter(id) => self
                .connecters
                .get(&id)
                .is_some_and(|k| k.adopted.is_some()),
            Origin::Listener(_) => false,
        };
        let retry_note = if adopted {
            "; an adopted descriptor: not reconnecting, the endpoint is gone"
        } else if permanent && matches!(c.origin, Origin::Connecter(_)) {
            "; not reconnecting"
        } else {
            ""
        };
        let mut events = Vec::new();
        if curve_auth {
            let note = if matches!(c.origin, Origin::Connecter(_)) {
                "; retrying with a growing interval"
            } else {
                ""
            };
            events.push((EventKind::HandshakeFailedAuth, format!("{detail}{note}")));
        } else if let Some(e) = &c.error {
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
            let detail = if adopted {
                format!("{detail}{retry_note}")
            } else {
                detail.clone()
            };
            events.push((EventKind::Disconnected, detail));
        }
        if let Some(p) = &c.pipe {
            self.pipe_to_conn.remove(&p.id);
        }
        let origin = c.origin;
        let connect_failed = c.connecting;
        let kept = match origin {
            Origin::Connecter(id) => self
                .connecters
                .get(&id)
                .is_some_and(|k| k.keeps_pipe && !permanent && k.adopted.is_none()),
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
                k.refresh_at = None;
                if kept {
                    k.pipe = pipe;
                }
                if k.adopted.is_some() {
                    // Never remade: the endpoint is gone with its connection.
                    self.connecters.remove(&id);
                } else if permanent {
                    k.state = ConnecterState::Stopped;
                    k.pipe = None;
                } else if k.closing.is_some() && k.drained(self.shutting_down) {
                    self.connecters.remove(&id);
                } else if connect_failed && !k.candidates.is_empty() {
                    // The next address of the name, at once (RFC 2782's order).
                    k.state = ConnecterState::Waiting(Instant::now());
                } else {
                    k.state = ConnecterState::Waiting(Instant::now());
                    // After a hang-up in the handshake, back off even without a
                    // maximum set (see the module docs).
                    k.hung_up_in_handshake |= hung_up_in_handshake && !curve_client;
                    let cap = (hung_up_in_handshake || curve_auth)
                        .then_some(HANDSHAKE_HANGUP_BACKOFF_MAX);
                    self.schedule_retry_capped(id, &detail, cap);
                }
            }
            self.child_changed(id, true);
        }
    }
}
