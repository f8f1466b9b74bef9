//! `ipc://name[:port]`: the [`Transport`] entry of the shared-memory transport. Binding
//! claims the name on the caller's thread (a name in use fails here); the listener,
//! every connect and every connection's control socket then belong to the background
//! thread's ipc engine ([`super::ipc_engine`]), while messages go straight between the
//! sockets' threads through the rings.
//!
//! What the socket learns from here, through its [`super::Limits`]: waits spin first
//! (a shared-memory peer answers in well under a microsecond). Messages of any size
//! go: one the ring cannot hold at once travels in pieces (see `shm::ring`).

use std::sync::atomic::Ordering;

use super::ipc_engine::{Slot, hello, pipe_over};
use super::reactor::{Command, Listener, Target, ThreadBind, ThreadConnect};
use super::shm::ShmListener;
use super::{Attachment, PipeMeta, Request, Transport};
use crate::monitor::EventKind;
use crate::{Endpoint, Error, Result, SocketType};

/// The `ipc://` transport.
#[derive(Debug)]
pub(crate) struct Ipc;

fn name_port<'a>(req: &'a Request<'_>) -> Result<(&'a str, Option<u16>)> {
    match req.endpoint {
        Endpoint::Ipc { name, port } => Ok((name, *port)),
        _ => Err(Error::endpoint(req.uri, "not an ipc:// endpoint")),
    }
}

impl Transport for Ipc {
    fn bind(&self, req: &Request<'_>) -> Result<Attachment> {
        bind(req).inspect_err(|e| {
            req.socket
                .monitors
                .emit(EventKind::BindFailed, req.uri, e.to_string())
        })
    }

    /// Connects in the background. Unless the socket is a ROUTER or `immediate` is
    /// set, the pipe that queues messages until (and across) connections is attached
    /// now.
    fn connect(&self, req: &Request<'_>) -> Result<Attachment> {
        let (name, port) = name_port(req)?;
        let reactor = req.hub.reactor()?;
        let options = req.options;
        // Check the options now so that a bad one fails here, not in the thread.
        req.socket.signal.shared_doorbell()?;
        req.socket.limits.spin.store(true, Ordering::Relaxed);
        let id = super::next_pipe_id();
        let keeps_pipe = !options.immediate && options.socket_type != SocketType::Router;
        let slot = keeps_pipe.then(|| Slot::new(options.send_hwm, true));
        let pipe = slot.as_ref().map(|s| {
            (
                super::next_pipe_id(),
                pipe_over(
                    s,
                    PipeMeta {
                        routing_id: bytes::Bytes::new(),
                        endpoint: req.uri.to_owned(),
                    },
                    options.conflate,
                ),
            )
        });
        let pipe_id = pipe.as_ref().map(|(id, _)| *id);
        reactor.command(Command::Connect {
            id,
            socket: req.socket.clone(),
            options: options.clone(),
            uri: req.uri.to_owned(),
            target: Target::Ipc {
                name: name.to_owned(),
                port,
                slot,
            },
        });
        Ok(Attachment {
            endpoint: req.uri.to_owned(),
            pipes: pipe.into_iter().collect(),
            handle: Box::new(ThreadConnect { id, pipe: pipe_id }),
        })
    }
}

/// Claims the name and hands the listener to the background thread.
fn bind(req: &Request<'_>) -> Result<Attachment> {
    let (name, port) = name_port(req)?;
    let reactor = req.hub.reactor()?;
    let options = req.options;
    let listener = ShmListener::bind(
        name,
        port,
        &options.ipc,
        hello(options),
        req.socket.signal.shared_doorbell()?,
    )?;
    let endpoint = listener.endpoint().to_owned();
    let id = super::next_pipe_id();
    req.socket.limits.spin.store(true, Ordering::Relaxed);
    reactor.command(Command::Listen {
        id,
        socket: req.socket.clone(),
        options: options.clone(),
        listener: Listener::Ipc { listener },
    });
    req.socket
        .monitors
        .emit(EventKind::Listening, &endpoint, "");
    Ok(Attachment {
        endpoint,
        pipes: Vec::new(),
        handle: Box::new(ThreadBind { id }),
    })
}
