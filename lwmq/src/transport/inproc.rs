//! `inproc://`: sockets of one context connected by in-memory queues, with no
//! serialization and no I/O thread.
//!
//! The registry lives in the context, behind a mutex. Either side may come first: a
//! connect to a name nobody bound yet creates the pipe at once (so the connecting
//! socket can queue messages) and parks the other half in the registry until a socket
//! binds the name.
//!
//! HWM of an inproc queue: the writer's send HWM plus the reader's receive HWM (zero,
//! meaning unlimited, if either is zero), as libzmq does.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Pipe, PipeMeta, QueueConfig, queue_pair};
use crate::options::Options;
use crate::pattern::PipeId;
use crate::socket::SocketShared;
use crate::{Error, Result};

/// What the registry remembers of a socket: who it is and the options that shape its
/// queues.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    pub socket: Arc<SocketShared>,
    pub options: Options,
}

#[derive(Debug)]
struct Pending {
    connecter: Side,
    /// The half for the binder.
    pipe: Pipe,
    pipe_id: PipeId,
}

/// The names bound in one context, and connects waiting for a bind.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    bound: HashMap<String, Side>,
    pending: HashMap<String, Vec<Pending>>,
}

fn sum_hwm(a: usize, b: usize) -> usize {
    if a == 0 || b == 0 { 0 } else { a + b }
}

/// Builds the two halves between `a` (connecting) and `b` (bound).
fn make_pipe(endpoint: &str, a: &Side, b: &Side) -> (Pipe, Pipe) {
    let a_to_b = QueueConfig {
        hwm: sum_hwm(a.options.send_hwm, b.options.recv_hwm),
        conflate: a.options.conflate || b.options.conflate,
    };
    let b_to_a = QueueConfig {
        hwm: sum_hwm(b.options.send_hwm, a.options.recv_hwm),
        conflate: a.options.conflate || b.options.conflate,
    };
    let (aw, ar, bw, br) = queue_pair(
        a_to_b,
        b_to_a,
        a.socket.signal.clone(),
        b.socket.signal.clone(),
    );
    let meta = |peer: &Side| PipeMeta {
        peer_type: peer.socket.socket_type,
        routing_id: peer.options.routing_id.clone(),
        endpoint: endpoint.to_owned(),
    };
    (
        Pipe {
            writer: Box::new(aw),
            reader: Box::new(ar),
            meta: meta(b),
        },
        Pipe {
            writer: Box::new(bw),
            reader: Box::new(br),
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
        for p in self.pending.remove(name).unwrap_or_default() {
            if side
                .socket
                .socket_type
                .is_compatible_with(p.connecter.socket.socket_type)
            {
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
                Ok((my_id, mine))
            }
            None => {
                // The binder's options are unknown yet: assume the defaults.
                let placeholder = Side {
                    socket: side.socket.clone(),
                    options: Options::new(side.socket.socket_type),
                };
                let (mine, mut theirs) = make_pipe(uri, &side, &placeholder);
                theirs.meta.routing_id = side.options.routing_id.clone();
                theirs.meta.peer_type = side.socket.socket_type;
                self.pending
                    .entry(name.to_owned())
                    .or_default()
                    .push(Pending {
                        connecter: side,
                        pipe: theirs,
                        pipe_id: their_id,
                    });
                Ok((my_id, mine))
            }
        }
    }

    /// Forgets everything of a closing socket.
    pub(crate) fn remove_socket(&mut self, socket_id: u64) {
        self.bound.retain(|_, s| s.socket.id != socket_id);
        for list in self.pending.values_mut() {
            list.retain(|p| p.connecter.socket.id != socket_id);
        }
        self.pending.retain(|_, l| !l.is_empty());
    }
}
