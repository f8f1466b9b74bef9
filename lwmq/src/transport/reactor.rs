//! The one background thread of a context. It owns the control path of every
//! transport that needs one: for streams (`tcp://`, `unix://`, and the descriptors
//! `fd://` and `systemd://` adopt) listening, connecting, the ZMTP connections
//! themselves ([`super::stream_engine`]); for shared memory
//! (`ipc://`) listening, connecting and watching each connection's control socket for
//! the peer's death ([`super::ipc_engine`]). The data path of `ipc://` and `inproc://`
//! never goes through it.
//!
//! # How it runs
//!
//! One `mio` poll. Token 0 is the waker; the stream engine's tokens are even, the ipc
//! engine's odd, so an event goes to its engine without a lookup. Every turn: wait for
//! events (or the earliest deadline of either engine), hand them out, run the queued
//! [`Command`]s (one command set for every transport), let each engine do the work its
//! pipes asked for, then run due timers. After [`Command::Shutdown`] the thread exits
//! once neither engine has anything left to deliver within its linger.
//!
//! # What is shared by both engines
//!
//! - the command set and its acknowledgements ([`Ack`]);
//! - reconnecting: [`super::reconnect::Backoff`], libzmq's RECONNECT_IVL /
//!   RECONNECT_IVL_MAX for every transport, with one `connect-retried` detail;
//! - introspection: both fill one table per socket.
//!
//! # Ownership
//!
//! The thread owns every listener, stream, connecter and connection, and the
//! resolver thread ([`super::dns`], started by the stream engine on the first connect
//! to a name): DNS lookups run there, their answers come back through the stream
//! engine's work list and the waker, so this thread never waits for a name server.
//! Other threads
//! reach it only through [`ReactorShared`]: the command queue and the engines' work
//! lists (pipes with data or room, connections a pipe half ended), each followed by a
//! ring of the `mio::Waker`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::ipc_engine::{self, Slot};
use super::shm::ShmListener;
use super::stream::{Adopted, Bound, Stream};
use super::stream_engine::{self, AdoptedAs, IoHalf};
use super::{Attached, Hub, PipeId, SocketHandle, lock};
use crate::options::Options;
use crate::{Endpoint, Result};

const WAKER: Token = Token(0);

/// What sockets ask of the background thread: one command set for every transport.
pub(crate) enum Command {
    /// Own and serve a bound listener.
    Listen {
        id: u64,
        socket: Arc<SocketHandle>,
        options: Options,
        listener: Listener,
    },
    /// Serve one more resource on a TCP listener this context already has
    /// (`tcp://host:port/resource`).
    AddRoute {
        listener: u64,
        id: u64,
        resource: Option<String>,
        socket: Arc<SocketHandle>,
        options: Options,
        endpoint: String,
    },
    /// Connect, and keep reconnecting, to an endpoint.
    Connect {
        id: u64,
        socket: Arc<SocketHandle>,
        options: Options,
        uri: String,
        target: Target,
    },
    /// Stop serving a bind (connections already made stay). Its name is free once
    /// `ack` is dropped.
    Unbind { id: u64, ack: Ack },
    /// Stop connecting and close the connection.
    Disconnect { id: u64 },
    /// A socket was closed: close its listeners, stop its connects, let its connections
    /// deliver what is queued for up to `linger` (done when `ack` is dropped).
    CloseSocket {
        socket_id: u64,
        linger: Option<Duration>,
        ack: Ack,
    },
    /// Describe every listener, connect and live connection, by socket id, for
    /// `lwmq ls` (see `crate::introspect`).
    Introspect {
        reply: std::sync::mpsc::Sender<HashMap<u64, crate::introspect::SocketInfo>>,
    },
    /// Flush (within linger) and exit.
    Shutdown,
}

/// A listener handed to the thread.
pub(crate) enum Listener {
    Stream(Bound),
    Ipc { listener: ShmListener },
}

/// What a connect connects to.
pub(crate) enum Target {
    Stream {
        endpoint: Endpoint,
        /// The thread's half of a pipe made at connect time, if any.
        pipe: Option<IoHalf>,
    },
    Ipc {
        name: String,
        port: Option<u16>,
        /// The pipe's shared state, when the pipe is made at connect time.
        slot: Option<Arc<Slot>>,
    },
    /// A stream that is connected already (an adopted descriptor, `fd://`,
    /// `systemd://`): served once, never reconnected.
    Adopted {
        endpoint: Endpoint,
        stream: Stream,
        adopted: Adopted,
        how: AdoptedAs,
        /// The thread's half of a pipe made at connect time, if any.
        pipe: Option<IoHalf>,
    },
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Listen { id, .. } => write!(f, "Listen({id})"),
            Command::AddRoute { id, endpoint, .. } => write!(f, "AddRoute({id}, {endpoint})"),
            Command::Connect { id, uri, .. } => write!(f, "Connect({id}, {uri})"),
            Command::Unbind { id, .. } => write!(f, "Unbind({id})"),
            Command::Disconnect { id } => write!(f, "Disconnect({id})"),
            Command::CloseSocket { socket_id, .. } => write!(f, "CloseSocket({socket_id})"),
            Command::Introspect { .. } => f.write_str("Introspect"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// Dropped by the thread once it carried out a command; see
/// [`ReactorShared::command_and_wait`].
#[derive(Debug)]
pub(crate) struct Ack(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

/// The part of the thread other threads may touch.
pub(crate) struct ReactorShared {
    commands: Mutex<Vec<Command>>,
    waker: Arc<Waker>,
    /// The stream engine's work list (pipes with data or room).
    pub(crate) stream: Arc<stream_engine::Shared>,
    /// The ipc engine's work lists (connections a half ended, rings handed back).
    pub(crate) ipc: Arc<ipc_engine::Shared>,
}

impl fmt::Debug for ReactorShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorShared").finish_non_exhaustive()
    }
}

impl ReactorShared {
    /// Queues a command and wakes the thread.
    pub(crate) fn command(&self, c: Command) {
        lock(&self.commands).push(c);
        self.wake();
    }

    /// Queues a command and waits (at most a few seconds, in case the thread is gone)
    /// until the thread carried it out.
    pub(crate) fn command_and_wait(&self, make: impl FnOnce(Ack) -> Command) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.command(make(Ack(tx)));
        // Err(Disconnected) is the answer: the thread dropped the Ack.
        let _ = rx.recv_timeout(Duration::from_secs(5));
    }

    /// Wakes the thread.
    pub(crate) fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::error!("cannot wake the background thread: {e}");
        }
    }
}

/// The thread and its shared part.
pub(crate) type Reactor = crate::worker::Worker<ReactorShared>;

/// Starts the background thread of a context; `dns` says where its connects look
/// names up (on the resolver thread, [`super::dns`]).
pub(crate) fn start(dns: super::dns::DnsConfig, spin: Duration) -> Result<Reactor> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let shared = Arc::new(ReactorShared {
        commands: Mutex::new(Vec::new()),
        waker: waker.clone(),
        stream: Arc::new(stream_engine::Shared::new(waker.clone())),
        ipc: Arc::new(ipc_engine::Shared::new(waker)),
    });
    let stream =
        stream_engine::Engine::new(poll.registry().try_clone()?, shared.stream.clone(), dns);
    let ipc = ipc_engine::Engine::new(poll.registry().try_clone()?, shared.ipc.clone());
    let mut run = Run {
        poll,
        shared: shared.clone(),
        stream,
        ipc,
        shutting_down: false,
        spin: IoSpin::new(spin),
    };
    let worker = crate::worker::Worker::spawn(
        "lwmq-io",
        shared,
        |s| s.command(Command::Shutdown),
        move || run.run(),
    )?;
    Ok(worker)
}

struct Run {
    poll: Poll,
    shared: Arc<ReactorShared>,
    stream: stream_engine::Engine,
    ipc: ipc_engine::Engine,
    shutting_down: bool,
    spin: IoSpin,
}

/// How the background thread waits for work: it first keeps polling without sleeping
/// (yielding the CPU between polls to any other thread that wants it) for up to a
/// window (`ContextBuilder::io_spin`), then sleeps in the poll. It spins only when,
/// since it last slept, it wrote to a stream of a socket that also receives (PAIR,
/// REQ, REP, DEALER, ROUTER: an answer may be on its way), and the last gap between
/// its work was shorter than the window. Work that comes further apart sends it to
/// sleep at once, so a quiet context costs nothing; streams in one direction (PUB to
/// SUB, PUSH to PULL) never spin, leaving the CPU to the threads that produce and
/// consume them and the batching of their writes as it was; a request/reply exchange
/// saves the wake-up of a sleeping thread at both ends of each hop that comes within
/// the window.
#[derive(Debug)]
pub(crate) struct IoSpin {
    window: Duration,
    /// Whether the last gap between work was shorter than the window.
    keen: bool,
    /// Whether a stream was written since the thread last slept.
    wrote: bool,
}

impl IoSpin {
    /// The window when neither the context nor `LWMQ_IO_SPIN_US` says otherwise.
    pub(crate) const DEFAULT: Duration = Duration::from_micros(50);

    fn new(window: Duration) -> IoSpin {
        IoSpin {
            window,
            keen: false,
            wrote: false,
        }
    }

    /// The window `LWMQ_IO_SPIN_US` asks for (microseconds), else [`IoSpin::DEFAULT`].
    pub(crate) fn from_env() -> Duration {
        match std::env::var("LWMQ_IO_SPIN_US") {
            Err(_) => IoSpin::DEFAULT,
            Ok(v) => match v.trim().parse::<u64>() {
                Ok(us) => Duration::from_micros(us),
                Err(_) => {
                    tracing::warn!(
                        "LWMQ_IO_SPIN_US={v:?} is not a number of microseconds; using {} us",
                        IoSpin::DEFAULT.as_micros()
                    );
                    IoSpin::DEFAULT
                }
            },
        }
    }

    /// Waits for events for up to `timeout` (`None`: until one comes), spinning first
    /// when the last gap was short.
    fn wait(
        &mut self,
        poll: &mut Poll,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> std::io::Result<()> {
        if timeout == Some(Duration::ZERO) || self.window.is_zero() {
            return poll.poll(events, timeout);
        }
        let idle = Instant::now();
        if self.keen && self.wrote {
            let window = timeout.map_or(self.window, |t| t.min(self.window));
            loop {
                poll.poll(events, Some(Duration::ZERO))?;
                if !events.is_empty() || idle.elapsed() >= window {
                    break;
                }
                std::thread::yield_now();
            }
            if !events.is_empty() {
                return Ok(());
            }
        }
        let left = timeout.map(|t| t.saturating_sub(idle.elapsed()));
        let r = poll.poll(events, left);
        self.keen = idle.elapsed() < self.window;
        self.wrote = false;
        r
    }
}

impl Run {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = if self.stream.has_more_turns() {
                // Connections that used up their turn go on right after a look around.
                Some(Duration::ZERO)
            } else {
                let d = match (self.stream.next_deadline(), self.ipc.next_deadline()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                d.map(|d| d.saturating_duration_since(Instant::now()) + Duration::from_micros(100))
            };
            self.spin.wrote |= self.stream.take_wrote();
            if let Err(e) = self.spin.wait(&mut self.poll, &mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!("background thread poll failed: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    // Hang-ups and errors count as readable: the read finds them.
                    t if t.0 % 2 == 0 => self.stream.ready(
                        t,
                        ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                        ev.is_read_closed() || ev.is_error(),
                    ),
                    t => self.ipc.ready(t),
                }
            }
            let commands = std::mem::take(&mut *lock(&self.shared.commands));
            for c in commands {
                self.handle(c);
            }
            self.stream.work();
            self.ipc.work();
            self.stream.timers();
            self.ipc.timers();
            if self.shutting_down && self.stream.finished() && self.ipc.finished() {
                // Closing what is left drops the thread's halves of the pipes.
                return;
            }
        }
    }

    fn handle(&mut self, c: Command) {
        match c {
            Command::Listen {
                id,
                socket,
                options,
                listener,
            } => match listener {
                Listener::Stream(bound) => self.stream.listen(id, socket, bound, options),
                Listener::Ipc { listener } => self.ipc.listen(id, listener, socket, options),
            },
            Command::AddRoute {
                listener,
                id,
                resource,
                socket,
                options,
                endpoint,
            } => self
                .stream
                .add_route(listener, id, resource, socket, options, endpoint),
            Command::Connect {
                id,
                socket,
                options,
                uri,
                target,
            } => match target {
                Target::Stream { endpoint, pipe } => self
                    .stream
                    .connect(id, socket, uri, endpoint, options, pipe),
                Target::Ipc { name, port, slot } => {
                    self.ipc.connect(id, socket, uri, name, port, options, slot)
                }
                Target::Adopted {
                    endpoint,
                    stream,
                    adopted,
                    how,
                    pipe,
                } => self.stream.adopt(
                    id, socket, uri, endpoint, options, pipe, stream, adopted, how,
                ),
            },
            Command::Unbind { id, ack } => {
                self.stream.unbind(id);
                self.ipc.unbind(id);
                drop(ack);
            }
            Command::Disconnect { id } => {
                self.stream.disconnect(id);
                self.ipc.disconnect(id);
            }
            Command::CloseSocket {
                socket_id,
                linger,
                ack,
            } => {
                self.stream.close_socket(socket_id, linger);
                self.ipc.close_socket(socket_id, linger);
                drop(ack);
            }
            Command::Introspect { reply } => {
                let mut infos = HashMap::new();
                self.stream.introspect(&mut infos);
                self.ipc.introspect(&mut infos);
                // The asker may have given up waiting: nothing to do then.
                let _ = reply.send(infos);
            }
            Command::Shutdown => {
                self.shutting_down = true;
                self.stream.shutdown();
                self.ipc.shutdown();
            }
        }
    }
}

/// The handle a bind served by the background thread leaves with its socket (any
/// transport): unbinding forgets its TCP port route (if it has one) and waits until the
/// thread let go of the listener, so the name or port is free when it returns.
#[derive(Debug)]
pub(crate) struct ThreadBind {
    pub id: u64,
}

impl Attached for ThreadBind {
    fn detach(self: Box<Self>, hub: &Hub, _: &Arc<SocketHandle>) -> Vec<PipeId> {
        hub.ports().forget(|r| r.id == self.id);
        if let Ok(r) = hub.reactor() {
            r.command_and_wait(|ack| Command::Unbind { id: self.id, ack });
        }
        Vec::new()
    }
}

/// The handle a connect served by the background thread leaves with its socket (any
/// transport). `pipe`: the pipe the connect made at once, which the socket detaches;
/// other pipes close when the thread drops its halves.
#[derive(Debug)]
pub(crate) struct ThreadConnect {
    pub id: u64,
    pub pipe: Option<PipeId>,
}

impl Attached for ThreadConnect {
    fn detach(self: Box<Self>, hub: &Hub, _: &Arc<SocketHandle>) -> Vec<PipeId> {
        if let Ok(r) = hub.reactor() {
            r.command(Command::Disconnect { id: self.id });
        }
        self.pipe.into_iter().collect()
    }
}
