//! The public [`Socket`]: bind, connect, send, receive, options, monitor.
//!
//! Threads: a socket is used by one thread at a time (it is `Send`; its methods take
//! `&self` and serialize on an internal mutex, so a second thread calling it waits).
//! That thread owns the pattern and the socket's halves of its pipes. Other threads
//! reach the socket only through [`SocketShared`]: the I/O thread and inproc peers push
//! new pipes into its mailbox and ring its [`Signal`]; monitors get events from both.
//!
//! Every blocking call follows the pipe contract's wait (see [`crate::transport`]):
//! read the signal's epoch, try, and sleep only if nothing rang since.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::context::{Context, Port, PortRoute};
use crate::io_thread::Command;
use crate::monitor::{EventKind, Monitor, Monitors};
use crate::options::{Mechanism, Options};
use crate::pattern::{self, Pattern, PipeId};
use crate::transport::inproc::Side;
use crate::transport::{Notify, Pipe, Signal, stream};
use crate::{Endpoint, Error, Message, Result, SendError, SocketType};

/// What other threads may touch of a socket.
#[derive(Debug)]
pub(crate) struct SocketShared {
    /// Unique within the process.
    pub id: u64,
    pub socket_type: SocketType,
    /// Rung by every source of work for this socket.
    pub signal: Arc<Signal>,
    /// Pipes delivered by the I/O thread or inproc peers, for the user thread to attach.
    /// `None` once the socket is closed: pipes delivered then are dropped (closed) at once.
    mailbox: Mutex<Option<Vec<(PipeId, Pipe)>>>,
    /// Set after a pipe is put in the mailbox, so the hot path skips its lock.
    has_mail: std::sync::atomic::AtomicBool,
    pub monitors: Monitors,
}

impl SocketShared {
    /// This socket's entry in an introspection table (for `lwmq ls`), made on first use.
    pub(crate) fn info_entry<'a>(
        infos: &'a mut std::collections::HashMap<u64, crate::introspect::SocketInfo>,
        s: &SocketShared,
    ) -> &'a mut crate::introspect::SocketInfo {
        infos
            .entry(s.id)
            .or_insert_with(|| crate::introspect::SocketInfo {
                id: s.id,
                socket_type: s.socket_type.as_str().to_owned(),
                ..Default::default()
            })
    }

    /// Hands a new pipe to the socket and wakes it.
    pub(crate) fn deliver(&self, id: PipeId, pipe: Pipe) {
        match lock(&self.mailbox).as_mut() {
            Some(m) => m.push((id, pipe)),
            // Closed: dropping the pipe closes it, and its peer sees that.
            None => return,
        }
        self.has_mail
            .store(true, std::sync::atomic::Ordering::Release);
        self.signal.notify();
    }
}

use crate::transport::lock;

#[derive(Debug)]
enum Attached {
    InprocBind(String),
    InprocConnect(String),
    StreamBind(u64),
    StreamConnect(u64),
    IpcBind(u64),
    /// The connect's id and the pipe made at connect time, if any.
    IpcConnect(u64, Option<PipeId>),
}

#[derive(Debug)]
struct Core {
    pattern: Box<dyn Pattern>,
    options: Options,
    /// A message read by poll to learn that the socket is readable.
    prefetched: Option<Message>,
    endpoints: Vec<(String, Attached)>,
    last_endpoint: Option<String>,
    ipc: crate::transport::ipc::SocketIpc,
}

/// A socket of one of ZeroMQ's types, with any number of endpoints.
///
/// Dropping it closes it: pending outgoing messages keep going out for up to the
/// linger time ([`Socket::set_linger`]), in the background.
#[derive(Debug)]
pub struct Socket {
    ctx: Context,
    shared: Arc<SocketShared>,
    core: Mutex<Core>,
}

/// When a wait for `timeout` ends. Computed only once the first attempt failed: a
/// call that succeeds at once reads no clock (a clock read costs about as much as a
/// whole shared-memory send).
fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

impl Socket {
    pub(crate) fn new(ctx: Context, socket_type: SocketType) -> Socket {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let options = Options::new(socket_type);
        let shared = Arc::new(SocketShared {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            socket_type,
            signal: Arc::new(Signal::new()),
            mailbox: Mutex::new(Some(Vec::new())),
            has_mail: std::sync::atomic::AtomicBool::new(false),
            monitors: Monitors::default(),
        });
        ctx.register(&shared);
        Socket {
            ctx,
            core: Mutex::new(Core {
                pattern: pattern::new(socket_type, &options.pattern),
                options,
                prefetched: None,
                endpoints: Vec::new(),
                last_endpoint: None,
                ipc: Default::default(),
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

    pub(crate) fn shared(&self) -> &Arc<SocketShared> {
        &self.shared
    }

    /// For poll: fails once the context is terminated.
    pub(crate) fn check_alive(&self) -> Result<()> {
        self.check_open()
    }

    fn check_open(&self) -> Result<()> {
        if self.ctx.is_terminated() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn absorb_mailbox(&self, core: &mut Core) {
        // A plain load first: the hot path does no read-modify-write.
        let mail = &self.shared.has_mail;
        if !mail.load(std::sync::atomic::Ordering::Relaxed)
            || !mail.swap(false, std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let new = lock(&self.shared.mailbox)
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for (id, pipe) in new {
            core.pattern.attach(id, pipe);
        }
    }

    /// Binds to an endpoint and returns the endpoint actually bound (for
    /// `tcp://*:0`, the port the system picked). A socket may bind many endpoints.
    pub fn bind(&self, uri: &str) -> Result<String> {
        self.check_open()?;
        let ep = Endpoint::parse(uri)?;
        let mut core = self.core();
        let (actual, attached) = match &ep {
            Endpoint::Inproc(name) => {
                let side = Side {
                    socket: self.shared.clone(),
                    options: core.options.clone(),
                };
                let waiting = self.ctx.inproc().bind(uri, name, side)?;
                for (id, pipe) in waiting {
                    core.pattern.attach(id, pipe);
                }
                (uri.to_owned(), Attached::InprocBind(name.clone()))
            }
            Endpoint::Tcp { .. } | Endpoint::Unix(_) => {
                let null = core.options.mechanism == Mechanism::Null;
                let shared = self
                    .bind_shared_port(uri, &ep, null, &core.options)
                    .inspect_err(|e| {
                        self.shared
                            .monitors
                            .emit(EventKind::BindFailed, uri, e.to_string())
                    })?;
                if let Some(shared) = shared {
                    shared
                } else {
                    let bound = match stream::bind(uri, &ep) {
                        Ok(b) => b,
                        Err(e) => {
                            self.shared
                                .monitors
                                .emit(EventKind::BindFailed, uri, e.to_string());
                            return Err(e);
                        }
                    };
                    let io = self.ctx.io()?;
                    let id = crate::transport::next_pipe_id();
                    let actual = bound.endpoint.clone();
                    if let (Some(addr), Endpoint::Tcp { resource, .. }) = (bound.local, &ep) {
                        self.ctx.ports().insert(
                            addr,
                            Port {
                                listener: id,
                                routes: vec![PortRoute {
                                    id,
                                    resource: resource.clone(),
                                    socket_id: self.shared.id,
                                    null,
                                }],
                            },
                        );
                    }
                    self.shared.monitors.emit(EventKind::Listening, &actual, "");
                    io.command(Command::Listen {
                        id,
                        socket: self.shared.clone(),
                        bound,
                        options: core.options.clone(),
                    });
                    (actual, Attached::StreamBind(id))
                }
            }
            Endpoint::Ipc { name, port } => {
                let ipc = self.ctx.ipc()?;
                let core = &mut *core;
                let r = crate::transport::ipc::bind(
                    &ipc,
                    &self.shared,
                    &core.options,
                    &core.ipc.ring_limit,
                    name,
                    *port,
                );
                let (id, actual) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        self.shared
                            .monitors
                            .emit(EventKind::BindFailed, uri, e.to_string());
                        return Err(e);
                    }
                };
                core.ipc.used = true;
                self.shared.monitors.emit(EventKind::Listening, &actual, "");
                (actual, Attached::IpcBind(id))
            }
            other => {
                return Err(Error::endpoint(
                    uri,
                    format!("the {} transport is not available here", other.scheme()),
                ));
            }
        };
        core.endpoints.push((actual.clone(), attached));
        if actual != uri {
            // Let unbind() find it by the name the user gave too.
            if let Some((_, a)) = core.endpoints.pop() {
                core.endpoints.push((uri.to_owned(), clone_attached(&a)));
                core.endpoints.push((actual.clone(), a));
            }
        }
        core.last_endpoint = Some(actual.clone());
        Ok(actual)
    }

    /// `tcp://host:port[/resource]` on a port this context already listens on: one
    /// more route on that listener, chosen by the peer's Resource.
    fn bind_shared_port(
        &self,
        uri: &str,
        ep: &Endpoint,
        null: bool,
        options: &Options,
    ) -> Result<Option<(String, Attached)>> {
        let Endpoint::Tcp {
            host,
            port,
            resource,
        } = ep
        else {
            return Ok(None);
        };
        if *port == 0 {
            return Ok(None);
        }
        let Some(addr) = stream::resolve(uri, host, *port, true)?.first().copied() else {
            return Ok(None);
        };
        let mut ports = self.ctx.ports();
        let Some(p) = ports.get_mut(&addr) else {
            return Ok(None);
        };
        if p.routes.iter().any(|r| r.resource == *resource) {
            return Err(Error::AddressInUse {
                endpoint: uri.to_owned(),
            });
        }
        if !null || p.routes.iter().any(|r| !r.null) {
            return Err(Error::InvalidArgument(format!(
                "{uri}: sharing a TCP port among resources needs the NULL mechanism on every socket"
            )));
        }
        let id = crate::transport::next_pipe_id();
        let mut endpoint = format!("tcp://{addr}");
        if let Some(r) = resource {
            endpoint.push('/');
            endpoint.push_str(r);
        }
        p.routes.push(PortRoute {
            id,
            resource: resource.clone(),
            socket_id: self.shared.id,
            null,
        });
        let listener = p.listener;
        drop(ports);
        self.shared
            .monitors
            .emit(EventKind::Listening, &endpoint, "");
        self.ctx.io()?.command(Command::AddRoute {
            listener,
            id,
            resource: resource.clone(),
            socket: self.shared.clone(),
            options: options.clone(),
            endpoint: endpoint.clone(),
        });
        Ok(Some((endpoint, Attached::StreamBind(id))))
    }

    /// Connects to an endpoint. Returns at once; the connection is made (and remade
    /// after failures, every reconnect interval) in the background, and messages queue
    /// up to the high-water mark meanwhile (unless [`Socket::set_immediate`]).
    pub fn connect(&self, uri: &str) -> Result<()> {
        self.check_open()?;
        let ep = Endpoint::parse(uri)?;
        let mut core = self.core();
        let attached = match &ep {
            Endpoint::Inproc(name) => {
                let side = Side {
                    socket: self.shared.clone(),
                    options: core.options.clone(),
                };
                let (id, pipe) = self.ctx.inproc().connect(uri, name, side)?;
                core.pattern.attach(id, pipe);
                Attached::InprocConnect(name.clone())
            }
            Endpoint::Tcp {
                host: crate::endpoint::Host::Any,
                ..
            } => {
                return Err(Error::endpoint(uri, "cannot connect to '*': name a host"));
            }
            Endpoint::Tcp { port: 0, .. } => {
                return Err(Error::endpoint(uri, "cannot connect to port 0"));
            }
            Endpoint::Tcp { .. } | Endpoint::Unix(_) => {
                let io = self.ctx.io()?;
                let id = crate::transport::next_pipe_id();
                // A connect pipe that exists before the connection lets messages queue
                // while the peer is away. ROUTER learns its peer's routing id in the
                // handshake, so its pipes are made then.
                let pipe = if !core.options.immediate && self.socket_type() != SocketType::Router {
                    let (mine, theirs) =
                        crate::io_thread::stream_pipe(&io, &self.shared, &core.options, uri);
                    core.pattern.attach(mine.0, mine.1);
                    Some(theirs)
                } else {
                    None
                };
                io.command(Command::Connect {
                    id,
                    socket: self.shared.clone(),
                    uri: uri.to_owned(),
                    endpoint: ep.clone(),
                    options: core.options.clone(),
                    pipe,
                });
                Attached::StreamConnect(id)
            }
            Endpoint::Ipc { name, port } => {
                let ipc = self.ctx.ipc()?;
                let core = &mut *core;
                let (id, pipe) = crate::transport::ipc::connect(
                    &ipc,
                    &self.shared,
                    &core.options,
                    &core.ipc.ring_limit,
                    uri,
                    name,
                    *port,
                )?;
                core.ipc.used = true;
                let pipe_id = pipe.as_ref().map(|(id, _)| *id);
                if let Some((pid, p)) = pipe {
                    core.pattern.attach(pid, p);
                }
                Attached::IpcConnect(id, pipe_id)
            }
            other => {
                return Err(Error::endpoint(
                    uri,
                    format!("the {} transport is not available here", other.scheme()),
                ));
            }
        };
        core.endpoints.push((uri.to_owned(), attached));
        core.last_endpoint = Some(uri.to_owned());
        Ok(())
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
        let matches = |a: &Attached| {
            matches!(
                (a, bind),
                (
                    Attached::InprocBind(_) | Attached::StreamBind(_) | Attached::IpcBind(_),
                    true
                ) | (
                    Attached::InprocConnect(_)
                        | Attached::StreamConnect(_)
                        | Attached::IpcConnect(..),
                    false
                )
            )
        };
        let Some(pos) = core
            .endpoints
            .iter()
            .position(|(u, a)| u == uri && matches(a))
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
        let (_, attached) = core.endpoints.remove(pos);
        // A bind is recorded under the given and the actual name: drop both.
        let same = |a: &Attached| match (a, &attached) {
            (Attached::StreamBind(x), Attached::StreamBind(y)) => x == y,
            (Attached::InprocBind(x), Attached::InprocBind(y)) => x == y,
            (Attached::IpcBind(x), Attached::IpcBind(y)) => x == y,
            _ => false,
        };
        core.endpoints.retain(|(_, a)| !same(a));
        match attached {
            Attached::InprocBind(name) => {
                self.ctx.inproc().unbind(&name, self.shared.id);
            }
            Attached::InprocConnect(name) => {
                let pipe = self.ctx.inproc().disconnect(&name, self.shared.id);
                self.absorb_mailbox(&mut core);
                if let Some(pipe) = pipe {
                    core.pattern.detach(pipe);
                }
            }
            Attached::StreamBind(id) => {
                self.ctx.forget_routes(|r| r.id == id);
                self.ctx.io()?.command(Command::Unbind { id });
            }
            Attached::StreamConnect(id) => self.ctx.io()?.command(Command::Disconnect { id }),
            Attached::IpcBind(id) => self
                .ctx
                .ipc()?
                .command_and_wait(|ack| crate::transport::ipc::Command::Unbind { id, ack }),
            Attached::IpcConnect(id, pipe) => {
                if let Some(p) = pipe {
                    core.pattern.detach(p);
                }
                self.ctx
                    .ipc()?
                    .command(crate::transport::ipc::Command::Disconnect { id });
            }
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
        if let Err(error) = core.ipc.check_size(&msg) {
            return Err(SendError {
                error,
                message: msg,
            });
        }
        let spin = core.ipc.spin(&core.options);
        let core = &mut *core;
        let mut held = Some(msg);
        let mut attempt = || -> Option<Result<(), SendError>> {
            let msg = held.take()?;
            if self.ctx.is_terminated() {
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
        let timeout = timeout.unwrap_or(core.options.recv_timeout);
        if let Some(m) = core.prefetched.take() {
            return Ok(m);
        }
        let spin = core.ipc.spin(&core.options);
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
        let timeout = core.options.recv_timeout;
        if let Some(m) = core.prefetched.take() {
            return Ok(f(&crate::Frames::message(&m)));
        }
        let spin = core.ipc.spin(&core.options);
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
            core.ipc.check_len(len)?;
            let timeout = core.options.send_timeout;
            let spin = core.ipc.spin(&core.options);
            let core = &mut *core;
            let mut cb = |buf: &mut [u8]| {
                if let Some(f) = fill.take() {
                    f(buf);
                }
            };
            let mut attempt = || -> Option<Result<bool>> {
                if self.ctx.is_terminated() {
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
    /// Largest message accepted from a peer; larger ones close the connection.
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
    /// value is used. The largest message is about half of it. Default 1 MiB.
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

fn clone_attached(a: &Attached) -> Attached {
    match a {
        Attached::InprocBind(n) => Attached::InprocBind(n.clone()),
        Attached::InprocConnect(n) => Attached::InprocConnect(n.clone()),
        Attached::StreamBind(i) => Attached::StreamBind(*i),
        Attached::StreamConnect(i) => Attached::StreamConnect(*i),
        Attached::IpcBind(i) => Attached::IpcBind(*i),
        Attached::IpcConnect(i, p) => Attached::IpcConnect(*i, *p),
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // From now on pipes delivered to this socket are closed at once; those
        // waiting in the mailbox are closed here.
        let waiting = lock(&self.shared.mailbox).take();
        drop(waiting);
        self.ctx.inproc().remove_socket(self.shared.id);
        let id = self.shared.id;
        self.ctx.forget_routes(|r| r.socket_id == id);
        let linger = self.core().options.linger;
        self.ctx.close_socket(&self.shared, linger);
        // The pattern's pipes close as they drop with `core`.
    }
}
