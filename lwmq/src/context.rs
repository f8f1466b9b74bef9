//! The [`Context`]: what a group of sockets shares. A context is a handle to the
//! transports' [`Hub`]: the one background thread (started when the first endpoint
//! that needs it is used), the `inproc://` names, the TCP ports it listens on and the
//! introspection server that answers `lwmq ls`.
//!
//! Threads: the context is shared by every socket made from it (each holds the hub).
//! The background thread holds no reference to the hub, only to the sockets' handles,
//! so the last handle to drop (a `Context` or a `Socket`) shuts the thread down and
//! joins it, after it flushed what sockets left behind within their linger time.

use std::sync::Arc;

use crate::auth::ZapHandler;
use crate::socket::Socket;
use crate::transport::Hub;
use crate::{Error, Result, SocketType};

/// A group of sockets sharing one background thread and one inproc namespace. Cheap
/// to clone.
#[derive(Debug, Clone, Default)]
pub struct Context {
    hub: Arc<Hub>,
}

/// Builds a [`Context`] with non-default settings.
#[derive(Debug, Clone)]
pub struct ContextBuilder {
    introspect: bool,
    dns_server: Option<std::net::SocketAddr>,
    domain: Option<String>,
    io_spin: Option<std::time::Duration>,
}

impl ContextBuilder {
    /// Whether `lwmq ls` can see this context's sockets (default: yes, unless the
    /// environment says `LWMQ_INTROSPECT=0`). See [`crate::introspect`].
    pub fn introspect(mut self, on: bool) -> ContextBuilder {
        self.introspect = on;
        self
    }

    /// The DNS server that resolves this context's `tcp://` names, host names and
    /// service names (`_service._tcp.domain`) alike, instead of the system's
    /// resolver. Default: `LWMQ_DNS_SERVER=ip:port` when set, else the system's
    /// (`getaddrinfo` for host names, `/etc/resolv.conf` for service names).
    /// Lookups run on a resolver thread of their own, never on the background I/O
    /// thread.
    pub fn dns_server(mut self, server: std::net::SocketAddr) -> ContextBuilder {
        self.dns_server = Some(server);
        self
    }

    /// The context's domain: the namespace of its sockets' `ipc://` names (sockets in
    /// different domains never meet) and the group `lwmq ls` shows it in by default.
    /// Default: `LWMQ_DOMAIN`, else `"default"`. 1 to 48 characters of
    /// `A-Z a-z 0-9 . _ -`; a domain outside that is an error at the first `ipc://`
    /// bind or connect.
    pub fn domain(mut self, domain: &str) -> ContextBuilder {
        self.domain = Some(domain.to_owned());
        self
    }

    /// How long the background I/O thread keeps looking for more work (polling its
    /// streams without sleeping, and yielding the CPU to any other thread that wants
    /// it) after it did some, before it sleeps. It does so only while the gaps between
    /// its work have been shorter than this, so a thread whose work comes further apart
    /// sleeps at once and costs nothing. Spinning saves a `tcp://` or `unix://` message
    /// the wake-up of a sleeping thread at each end (on a virtual machine that is often
    /// most of a round trip). Default: 50 us, or `LWMQ_IO_SPIN_US` (microseconds) when
    /// set; zero turns it off. Takes effect for the background thread, which starts with
    /// the context's first stream socket.
    pub fn io_spin(mut self, spin: std::time::Duration) -> ContextBuilder {
        self.io_spin = Some(spin);
        self
    }

    /// The context.
    pub fn build(self) -> Context {
        let ctx = Context::default();
        if let Some(server) = self.dns_server {
            ctx.hub.set_dns_server(server);
        }
        if let Some(d) = self.domain {
            ctx.hub.set_domain(d);
        }
        if let Some(spin) = self.io_spin {
            ctx.hub.set_io_spin(spin);
        }
        if self.introspect && crate::introspect::enabled_by_env() {
            ctx.hub.start_introspection();
        }
        ctx
    }
}

impl Context {
    /// A new context. No background thread is started until a socket needs it; a
    /// small thread answers `lwmq ls` (see [`Context::builder`]).
    pub fn new() -> Context {
        Context::builder().build()
    }

    /// A builder for a context with non-default settings.
    pub fn builder() -> ContextBuilder {
        ContextBuilder {
            introspect: true,
            dns_server: None,
            domain: None,
            io_spin: None,
        }
    }

    /// A new socket of the given type.
    pub fn socket(&self, socket_type: SocketType) -> Result<Socket> {
        if self.hub.is_terminated() {
            return Err(Error::Closed);
        }
        Ok(Socket::new(self.hub.clone(), socket_type))
    }

    /// Installs the handler that authenticates this context's PLAIN and CURVE servers
    /// (and NULL sockets with a ZAP domain), replacing any before; it applies to
    /// connections whose handshake starts afterwards. An [`Authenticator`] is a
    /// ready-made one. See [`crate::auth`] for when it is called.
    ///
    /// [`Authenticator`]: crate::auth::Authenticator
    pub fn set_zap_handler(&self, handler: impl ZapHandler + 'static) {
        self.hub.zap().set(Some(Arc::new(handler)));
    }

    /// Removes the ZAP handler: PLAIN and CURVE servers accept every client again, as
    /// libzmq does without one.
    pub fn clear_zap_handler(&self) {
        self.hub.zap().set(None);
    }

    /// The context's domain (see [`ContextBuilder::domain`]).
    pub fn domain(&self) -> String {
        self.hub.domain()
    }

    /// Terminates the context: every blocking call on its sockets returns
    /// [`Error::Closed`], and the background thread stops after flushing (within each
    /// socket's linger) and is joined.
    pub fn terminate(self) {
        self.hub.terminate();
    }
}
