//! `inproc://`: sockets of one context connected by in-memory queues, with no
//! serialization and no background thread.
//!
//! The registry lives in the context, behind a mutex. Either side may come first: a
//! connect to a name nobody bound yet creates the pipe at once (so the connecting
//! socket can queue messages) and parks the other half in the registry until a socket
//! binds the name.
//!
//! Re-binding: the registry remembers every live connect. When a name is bound again
//! (the old binder closed or unbound), each connecter gets a new pipe to the new binder,
//! which is what a reconnect is for the stream transports.
//!
//! HWM of an inproc queue: the writer's send HWM plus the reader's receive HWM (zero,
//! meaning unlimited, if either is zero), as libzmq does.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{
    Attached, Attachment, Hub, Notify, Pipe, PipeId, PipeMeta, QueueConfig, Request, SocketHandle,
    Transport, pipe_halves,
};
use crate::options::Options;
use crate::{Endpoint, Error, Result, SocketType};

/// The `inproc://` transport. Both sides spin before they park (the peer is a thread
/// of this process that may answer in well under a microsecond).
#[derive(Debug)]
pub(crate) struct Inproc;

fn name<'a>(req: &'a Request<'_>) -> Result<&'a str> {
    match req.endpoint {
        Endpoint::Inproc(name) => Ok(name),
        _ => Err(Error::endpoint(req.uri, "not an inproc:// endpoint")),
    }
}

fn side(req: &Request<'_>) -> Side {
    req.socket.limits.spin.store(true, Ordering::Relaxed);
    Side {
        socket: req.socket.clone(),
        options: req.options.clone(),
    }
}

impl Transport for Inproc {
    fn bind(&self, req: &Request<'_>) -> Result<Attachment> {
        let name = name(req)?;
        let pipes = req.hub.inproc().bind(req.uri, name, side(req))?;
        Ok(Attachment {
            endpoint: req.uri.to_owned(),
            pipes,
            handle: Box::new(InprocBind(name.to_owned())),
        })
    }

    fn connect(&self, req: &Request<'_>) -> Result<Attachment> {
        let name = name(req)?;
        let pipe = req.hub.inproc().connect(req.uri, name, side(req))?;
        Ok(Attachment {
            endpoint: req.uri.to_owned(),
            pipes: vec![pipe],
            handle: Box::new(InprocConnect(name.to_owned())),
        })
    }
}

#[derive(Debug)]
struct InprocBind(String);

impl Attached for InprocBind {
    fn detach(self: Box<Self>, hub: &Hub, socket: &Arc<SocketHandle>) -> Vec<PipeId> {
        hub.inproc().unbind(&self.0, socket.id);
        Vec::new()
    }
}

#[derive(Debug)]
struct InprocConnect(String);

impl Attached for InprocConnect {
    /// The connecter's current pipe to the name is detached.
    fn detach(self: Box<Self>, hub: &Hub, socket: &Arc<SocketHandle>) -> Vec<PipeId> {
        hub.inproc()
            .disconnect(&self.0, socket.id)
            .into_iter()
            .collect()
    }
}

/// What the registry remembers of a socket: who it is and the options that shape its
/// queues.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    pub socket: Arc<SocketHandle>,
    pub options: Options,
}

#[derive(Debug)]
struct Pending {
    connecter: Side,
    /// The half for the binder.
    pipe: Pipe,
    pipe_id: PipeId,
    /// What the pipe rings for the binder's side: pointed at the binder's signal when
    /// it binds.
    binder: Arc<LateNotify>,
}

/// A notifier whose target is set later: the signal of a socket not bound yet. Rings
/// before that go nowhere (nobody can be waiting on a pipe it does not have).
#[derive(Default)]
struct LateNotify(std::sync::OnceLock<Arc<dyn Notify>>);

impl std::fmt::Debug for LateNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LateNotify")
            .field(&self.0.get().is_some())
            .finish()
    }
}

impl Notify for LateNotify {
    fn notify(&self) {
        if let Some(n) = self.0.get() {
            n.notify();
        }
    }
}

#[derive(Debug)]
struct Connect {
    side: Side,
    uri: String,
    /// The connecter's current pipe for this connect.
    pipe_id: PipeId,
}

/// The names bound in one context, connects waiting for a bind, and every live connect.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    bound: HashMap<String, Side>,
    pending: HashMap<String, Vec<Pending>>,
    connects: HashMap<String, Vec<Connect>>,
}

fn sum_hwm(a: usize, b: usize) -> usize {
    if a == 0 || b == 0 { 0 } else { a + b }
}

/// Builds the two halves between `a` (connecting) and `b` (bound), each side rung
/// through its socket's signal.
fn make_pipe(endpoint: &str, a: &Side, b: &Side) -> (Pipe, Pipe) {
    make_pipe_notifying(endpoint, a, b, b.socket.signal.clone())
}

/// As [`make_pipe`], with `b_notify` rung for `b`'s side.
fn make_pipe_notifying(
    endpoint: &str,
    a: &Side,
    b: &Side,
    b_notify: Arc<dyn Notify>,
) -> (Pipe, Pipe) {
    let a_to_b = QueueConfig {
        hwm: sum_hwm(a.options.send_hwm, b.options.recv_hwm),
        conflate: a.options.conflate || b.options.conflate,
    };
    let b_to_a = QueueConfig {
        hwm: sum_hwm(b.options.send_hwm, a.options.recv_hwm),
        conflate: a.options.conflate || b.options.conflate,
    };
    // Lock-free unless a direction carries subscriptions (a SUB or XSUB writes them).
    let subs = |s: &Side| matches!(s.socket.socket_type, SocketType::Sub | SocketType::XSub);
    let a_notify: Arc<dyn Notify> = a.socket.signal.clone();
    let ends = |s: &Side| super::spsc_pipe::Ends::SocketToSocket(s.socket.recv_calls.clone());
    let (aw, br) = pipe_halves(
        a_to_b,
        !subs(a),
        ends(a),
        b_notify.clone(),
        a_notify.clone(),
    );
    let (bw, ar) = pipe_halves(b_to_a, !subs(b), ends(b), a_notify, b_notify);
    let meta = |peer: &Side| PipeMeta {
        routing_id: peer.options.routing_id.clone(),
        endpoint: endpoint.to_owned(),
    };
    (
        Pipe {
            writer: aw,
            reader: ar,
            meta: meta(b),
        },
        Pipe {
            writer: bw,
            reader: br,
            meta: meta(a),
        },
    )
}

fn incompatible(uri: &str, ours: &Side, theirs: &Side) -> Error {
    Error::PeerRejected(format!(
        "{uri}: a {} socket cannot talk to a {} socket",
        ours.socket.socket_type, theirs.socket.socket_type
    ))
}

impl Registry {
    /// Binds `name` for `side`. Returns the halves of connects that were waiting.
    pub(crate) fn bind(
        &mut self,
        uri: &str,
        name: &str,
        side: Side,
    ) -> Result<Vec<(PipeId, Pipe)>> {
        if self.bound.contains_key(name) {
            return Err(Error::AddressInUse {
                endpoint: uri.to_owned(),
            });
        }
        let mut attach = Vec::new();
        let pending = self.pending.remove(name).unwrap_or_default();
        for c in self.connects.get_mut(name).into_iter().flatten() {
            if pending
                .iter()
                .any(|p| p.connecter.socket.id == c.side.socket.id)
            {
                continue;
            }
            if !side
                .socket
                .socket_type
                .is_compatible_with(c.side.socket.socket_type)
            {
                tracing::warn!("{}", incompatible(uri, &side, &c.side));
                continue;
            }
            // A connecter of an earlier binder: connect it to this one.
            let (theirs, mine) = make_pipe(&c.uri, &c.side, &side);
            let their_id = crate::transport::next_pipe_id();
            c.pipe_id = their_id;
            c.side.socket.deliver(their_id, theirs);
            attach.push((crate::transport::next_pipe_id(), mine));
        }
        for p in pending {
            if side
                .socket
                .socket_type
                .is_compatible_with(p.connecter.socket.socket_type)
            {
                let _ = p.binder.0.set(side.socket.signal.clone());
                attach.push((p.pipe_id, p.pipe));
            } else {
                // Dropping the half closes the pipe; the connecter sees it closed.
                tracing::warn!("{}", incompatible(uri, &side, &p.connecter));
            }
        }
        self.bound.insert(name.to_owned(), side);
        Ok(attach)
    }

    /// Removes a bound name if `socket_id` owns it.
    pub(crate) fn unbind(&mut self, name: &str, socket_id: u64) -> bool {
        if self
            .bound
            .get(name)
            .is_some_and(|s| s.socket.id == socket_id)
        {
            self.bound.remove(name);
            true
        } else {
            false
        }
    }

    /// Connects `side` to `name`; returns the connecter's half. The bound socket (if
    /// any) gets its half through its mailbox.
    pub(crate) fn connect(&mut self, uri: &str, name: &str, side: Side) -> Result<(PipeId, Pipe)> {
        let my_id = crate::transport::next_pipe_id();
        let their_id = crate::transport::next_pipe_id();
        match self.bound.get(name) {
            Some(peer) => {
                if !side
                    .socket
                    .socket_type
                    .is_compatible_with(peer.socket.socket_type)
                {
                    return Err(incompatible(uri, &side, peer));
                }
                let (mine, theirs) = make_pipe(uri, &side, peer);
                peer.socket.deliver(their_id, theirs);
                self.remember(name, uri, side, my_id);
                Ok((my_id, mine))
            }
            None => {
                // The binder's options are unknown yet: assume the defaults.
                let placeholder = Side {
                    socket: side.socket.clone(),
                    options: Options::new(side.socket.socket_type),
                };
                let binder = Arc::new(LateNotify::default());
                let (mine, theirs) = make_pipe_notifying(uri, &side, &placeholder, binder.clone());
                self.pending
                    .entry(name.to_owned())
                    .or_default()
                    .push(Pending {
                        connecter: side.clone(),
                        pipe: theirs,
                        pipe_id: their_id,
                        binder,
                    });
                self.remember(name, uri, side, my_id);
                Ok((my_id, mine))
            }
        }
    }

    fn remember(&mut self, name: &str, uri: &str, side: Side, pipe_id: PipeId) {
        self.connects
            .entry(name.to_owned())
            .or_default()
            .push(Connect {
                side,
                uri: uri.to_owned(),
                pipe_id,
            });
    }

    /// Forgets a connect; returns the connecter's current pipe for it.
    pub(crate) fn disconnect(&mut self, name: &str, socket_id: u64) -> Option<PipeId> {
        let list = self.connects.get_mut(name)?;
        let i = list.iter().position(|c| c.side.socket.id == socket_id)?;
        let c = list.remove(i);
        if let Some(p) = self.pending.get_mut(name) {
            p.retain(|p| p.connecter.socket.id != socket_id);
        }
        Some(c.pipe_id)
    }

    /// Forgets everything of a closing socket.
    pub(crate) fn remove_socket(&mut self, socket_id: u64) {
        self.bound.retain(|_, s| s.socket.id != socket_id);
        for list in self.pending.values_mut() {
            list.retain(|p| p.connecter.socket.id != socket_id);
        }
        self.pending.retain(|_, l| !l.is_empty());
        for list in self.connects.values_mut() {
            list.retain(|c| c.side.socket.id != socket_id);
        }
        self.connects.retain(|_, l| !l.is_empty());
    }
}
