//! `tcp://host:port[/resource]` and `unix://`: the [`Transport`] entry of the stream
//! transports.
//!
//! Binding happens on the caller's thread (so that errors such as an address in use
//! are returned by `bind`); the listener is then handed to the background thread's
//! stream engine ([`super::stream_engine`]), which owns every listener and stream from
//! then on. A bind on a TCP port this context already listens on adds a route to that
//! listener, chosen by the peer's ZMTP `Resource` ([`Ports`]).
//!
//! A connect never resolves anything here: names (host names and DNS service names)
//! are looked up by the background thread through the resolver thread
//! ([`super::dns`]), so `connect` returns at once and cannot fail on DNS. A bind
//! resolves its host name here, on the caller's thread (a bind must say at once
//! whether it worked).

use std::collections::HashMap;
use std::net::SocketAddr;

use super::reactor::{Command, Listener, Target, ThreadBind, ThreadConnect};
use super::stream::{bind, resolve};
use super::{Attachment, Request, Transport, stream_engine};
use crate::endpoint::Host;
use crate::monitor::EventKind;
use crate::options::Mechanism;
use crate::{Endpoint, Error, Result, SocketType};

/// The TCP ports a context listens on, and the binds each serves (several when shared
/// by `tcp://host:port/resource` binds).
#[derive(Debug, Default)]
pub(crate) struct Ports(HashMap<SocketAddr, Port>);

/// A TCP port this context listens on.
#[derive(Debug)]
pub(crate) struct Port {
    /// The id of the bind that made the listener.
    pub listener: u64,
    pub routes: Vec<PortRoute>,
}

/// One bind on a shared port.
#[derive(Debug)]
pub(crate) struct PortRoute {
    pub id: u64,
    pub resource: Option<String>,
    pub socket_id: u64,
    /// Whether the socket uses the NULL mechanism (required to share a port).
    pub null: bool,
}

impl Ports {
    /// Forgets the binds `which` selects (a port with none left is forgotten; the
    /// background thread closes its listener).
    pub(crate) fn forget(&mut self, which: impl Fn(&PortRoute) -> bool) {
        for p in self.0.values_mut() {
            p.routes.retain(|r| !which(r));
        }
        self.0.retain(|_, p| !p.routes.is_empty());
    }
}

/// `tcp://` and `unix://`.
#[derive(Debug)]
pub(crate) struct StreamTransport;

impl Transport for StreamTransport {
    fn bind(&self, req: &Request<'_>) -> Result<Attachment> {
        let null = req.options.mechanism == Mechanism::Null;
        let r = match bind_shared_port(req, null) {
            Ok(Some(a)) => Ok(a),
            Ok(None) => bind_new(req, null),
            Err(e) => Err(e),
        };
        r.inspect_err(|e| {
            req.socket
                .monitors
                .emit(EventKind::BindFailed, req.uri, e.to_string())
        })
    }

    /// A connect pipe that exists before the connection lets messages queue while the
    /// peer is away. ROUTER learns its peer's routing id in the handshake, so its
    /// pipes are made then (and so are those of `immediate` sockets).
    fn connect(&self, req: &Request<'_>) -> Result<Attachment> {
        match req.endpoint {
            Endpoint::Tcp {
                host: Host::Any, ..
            } => {
                return Err(Error::endpoint(
                    req.uri,
                    "cannot connect to '*': name a host",
                ));
            }
            Endpoint::Tcp {
                host: Host::Ip(_) | Host::Name(_),
                port: 0,
                ..
            } => {
                return Err(Error::endpoint(req.uri, "cannot connect to port 0"));
            }
            Endpoint::Tcp { .. } | Endpoint::Unix(_) => {}
            _ => return Err(Error::endpoint(req.uri, "not a stream transport")),
        }
        let reactor = req.hub.reactor()?;
        let id = super::next_pipe_id();
        let mut pipes = Vec::new();
        // A SUB or XSUB connecting to a DNS service name connects to every target of
        // the best priority (see `stream_engine`): a pipe per connection, made at the
        // handshake, like ROUTER's.
        let fans_out = stream_engine::fans_out(req.endpoint, req.socket.socket_type);
        let pipe = if !req.options.immediate
            && req.socket.socket_type != SocketType::Router
            && !fans_out
        {
            let (mine, theirs) =
                stream_engine::stream_pipe(&reactor.stream, req.socket, req.options, req.uri);
            pipes.push(mine);
            Some(theirs)
        } else {
            None
        };
        reactor.command(Command::Connect {
            id,
            socket: req.socket.clone(),
            options: req.options.clone(),
            uri: req.uri.to_owned(),
            target: Target::Stream {
                endpoint: req.endpoint.clone(),
                pipe,
            },
        });
        Ok(Attachment {
            endpoint: req.uri.to_owned(),
            pipes,
            handle: Box::new(ThreadConnect { id, pipe: None }),
        })
    }
}

/// A new listener.
fn bind_new(req: &Request<'_>, null: bool) -> Result<Attachment> {
    let bound = bind(req.uri, req.endpoint)?;
    let reactor = req.hub.reactor()?;
    let id = super::next_pipe_id();
    let endpoint = bound.endpoint.clone();
    if let (Some(addr), Endpoint::Tcp { resource, .. }) = (bound.local, req.endpoint) {
        req.hub.ports().0.insert(
            addr,
            Port {
                listener: id,
                routes: vec![PortRoute {
                    id,
                    resource: resource.clone(),
                    socket_id: req.socket.id,
                    null,
                }],
            },
        );
    }
    req.socket
        .monitors
        .emit(EventKind::Listening, &endpoint, "");
    reactor.command(Command::Listen {
        id,
        socket: req.socket.clone(),
        options: req.options.clone(),
        listener: Listener::Stream(bound),
    });
    Ok(Attachment {
        endpoint,
        pipes: Vec::new(),
        handle: Box::new(ThreadBind { id }),
    })
}

/// `tcp://host:port[/resource]` on a port this context already listens on: one more
/// route on that listener, chosen by the peer's Resource. `None`: not such a port.
fn bind_shared_port(req: &Request<'_>, null: bool) -> Result<Option<Attachment>> {
    let uri = req.uri;
    let Endpoint::Tcp {
        host,
        port,
        resource,
    } = req.endpoint
    else {
        return Ok(None);
    };
    if *port == 0 {
        return Ok(None);
    }
    let Some(addr) = resolve(uri, host, *port, true)?.first().copied() else {
        return Ok(None);
    };
    let mut ports = req.hub.ports();
    let Some(p) = ports.0.get_mut(&addr) else {
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
    let id = super::next_pipe_id();
    let mut endpoint = format!("tcp://{addr}");
    if let Some(r) = resource {
        endpoint.push('/');
        endpoint.push_str(r);
    }
    p.routes.push(PortRoute {
        id,
        resource: resource.clone(),
        socket_id: req.socket.id,
        null,
    });
    let listener = p.listener;
    drop(ports);
    req.socket
        .monitors
        .emit(EventKind::Listening, &endpoint, "");
    req.hub.reactor()?.command(Command::AddRoute {
        listener,
        id,
        resource: resource.clone(),
        socket: req.socket.clone(),
        options: req.options.clone(),
        endpoint: endpoint.clone(),
    });
    Ok(Some(Attachment {
        endpoint,
        pipes: Vec::new(),
        handle: Box::new(ThreadBind { id }),
    }))
}
