//! The [`Context`]: what a group of sockets shares. It owns the background I/O thread
//! (started when the first `tcp://` or `unix://` endpoint is used), the ipc thread
//! (started by the first `ipc://` endpoint: it makes and watches shared-memory
//! connections, see `transport::ipc`) and the `inproc://` name registry.
//!
//! Threads: the context is shared by every socket made from it (an `Arc`). The I/O
//! thread holds no reference to the context, only to the sockets' shared parts, so
//! the last handle to drop (a `Context` or a `Socket`) shuts the I/O thread down and
//! joins it, after it flushed what sockets left behind within their linger time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::io_thread::{Command, IoThread};
use crate::socket::{Socket, SocketShared};
use crate::transport::Notify;
use crate::transport::inproc::Registry;
use crate::{Error, Result, SocketType};

/// A group of sockets sharing one I/O thread and one inproc namespace. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Context {
    inner: Arc<Inner>,
}

/// A TCP port this context listens on, and the binds it serves (several when shared
/// by `tcp://host:port/resource` binds).
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

#[derive(Debug, Default)]
struct Inner {
    io: Mutex<Option<IoThread>>,
    ipc: Mutex<Option<crate::transport::ipc::IpcThread>>,
    inproc: Mutex<Registry>,
    ports: Mutex<HashMap<SocketAddr, Port>>,
    terminated: AtomicBool,
    sockets: Mutex<Vec<Weak<SocketShared>>>,
    /// Answers `lwmq ls` (see [`crate::introspect`]); its thread holds a `Weak` to us.
    introspect: Mutex<Option<crate::introspect::IntrospectServer>>,
}

/// Builds a [`Context`] with non-default settings.
#[derive(Debug, Clone)]
pub struct ContextBuilder {
    introspect: bool,
}

impl ContextBuilder {
    /// Whether `lwmq ls` can see this context's sockets (default: yes, unless the
    /// environment says `LWMQ_INTROSPECT=0`). See [`crate::introspect`].
    pub fn introspect(mut self, on: bool) -> ContextBuilder {
        self.introspect = on;
        self
    }

    /// The context.
    pub fn build(self) -> Context {
        let ctx = Context::default();
        if self.introspect && crate::introspect::enabled_by_env() {
            let weak = Arc::downgrade(&ctx.inner);
            let server = crate::introspect::IntrospectServer::start(move || match weak.upgrade() {
                Some(inner) => Context { inner }.snapshot(),
                None => crate::introspect::Snapshot::default(),
            });
            match server {
                Ok(server) => *lock(&ctx.inner.introspect) = Some(server),
                Err(e) => tracing::warn!("lwmq ls will not see this context: {e}"),
            }
        }
        ctx
    }
}

use crate::transport::lock;

impl Context {
    /// A new context. No I/O thread is started until a socket uses a stream
    /// transport; a small thread answers `lwmq ls` (see [`Context::builder`]).
    pub fn new() -> Context {
        Context::builder().build()
    }

    /// A builder for a context with non-default settings.
    pub fn builder() -> ContextBuilder {
        ContextBuilder { introspect: true }
    }

    /// The sockets and their endpoints and connections, for `lwmq ls`. Runs on the
    /// introspection thread; asks the I/O thread for its part and waits for it briefly.
    fn snapshot(&self) -> crate::introspect::Snapshot {
        let sockets: Vec<Arc<SocketShared>> = lock(&self.inner.sockets)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let io = lock(&self.inner.io).as_ref().map(|t| t.shared().clone());
        let mut from_io = std::collections::HashMap::new();
        if let Some(io) = io {
            let (tx, rx) = std::sync::mpsc::channel();
            io.command(Command::Introspect { reply: tx });
            from_io = rx
                .recv_timeout(Duration::from_millis(500))
                .unwrap_or_default();
        }
        let ipc = lock(&self.inner.ipc).as_ref().map(|t| t.shared().clone());
        if let Some(ipc) = ipc {
            let (tx, rx) = std::sync::mpsc::channel();
            ipc.command(crate::transport::ipc::Command::Introspect { reply: tx });
            let from_ipc: std::collections::HashMap<u64, crate::introspect::SocketInfo> = rx
                .recv_timeout(Duration::from_millis(500))
                .unwrap_or_default();
            for (id, info) in from_ipc {
                match from_io.entry(id) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(info);
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        let o = o.get_mut();
                        o.bound.extend(info.bound);
                        o.connected.extend(info.connected);
                        o.connections.extend(info.connections);
                    }
                }
            }
        }
        let mut out = crate::introspect::Snapshot::default();
        for s in sockets {
            out.sockets.push(from_io.remove(&s.id).unwrap_or_else(|| {
                crate::introspect::SocketInfo {
                    id: s.id,
                    socket_type: s.socket_type.as_str().to_owned(),
                    ..Default::default()
                }
            }));
        }
        // Closed sockets whose connections still linger.
        out.sockets.extend(from_io.into_values());
        out.sockets.sort_by_key(|s| s.id);
        out
    }

    /// A new socket of the given type.
    pub fn socket(&self, socket_type: SocketType) -> Result<Socket> {
        if self.is_terminated() {
            return Err(Error::Closed);
        }
        Ok(Socket::new(self.clone(), socket_type))
    }

    /// Terminates the context: every blocking call on its sockets returns
    /// [`Error::Closed`], and the I/O thread stops after flushing (within each socket's
    /// linger) and is joined.
    pub fn terminate(self) {
        self.inner.terminated.store(true, Ordering::SeqCst);
        let sockets: Vec<_> = lock(&self.inner.sockets)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for s in sockets {
            s.signal.notify();
        }
        let io = lock(&self.inner.io).take();
        if let Some(mut io) = io {
            io.shutdown();
        }
        let ipc = lock(&self.inner.ipc).take();
        if let Some(mut ipc) = ipc {
            ipc.shutdown();
        }
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.inner.terminated.load(Ordering::SeqCst)
    }

    pub(crate) fn register(&self, s: &Arc<SocketShared>) {
        let mut v = lock(&self.inner.sockets);
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(s));
    }

    pub(crate) fn inproc(&self) -> MutexGuard<'_, Registry> {
        lock(&self.inner.inproc)
    }

    pub(crate) fn ports(&self) -> MutexGuard<'_, HashMap<SocketAddr, Port>> {
        lock(&self.inner.ports)
    }

    /// Forgets the binds on TCP ports that `which` selects (a port with none left is
    /// forgotten; the I/O thread closes its listener).
    pub(crate) fn forget_routes(&self, which: impl Fn(&PortRoute) -> bool) {
        let mut ports = self.ports();
        for p in ports.values_mut() {
            p.routes.retain(|r| !which(r));
        }
        ports.retain(|_, p| !p.routes.is_empty());
    }

    /// The I/O thread, started on first use.
    pub(crate) fn io(&self) -> Result<Arc<crate::io_thread::IoShared>> {
        if self.is_terminated() {
            return Err(Error::Closed);
        }
        let mut io = lock(&self.inner.io);
        if io.is_none() {
            *io = Some(IoThread::start()?);
        }
        match io.as_ref() {
            Some(t) => Ok(t.shared().clone()),
            None => Err(Error::Closed),
        }
    }

    /// The ipc thread (shared-memory connections), started on first use.
    pub(crate) fn ipc(&self) -> Result<Arc<crate::transport::ipc::IpcShared>> {
        if self.is_terminated() {
            return Err(Error::Closed);
        }
        let mut ipc = lock(&self.inner.ipc);
        if ipc.is_none() {
            *ipc = Some(crate::transport::ipc::IpcThread::start()?);
        }
        match ipc.as_ref() {
            Some(t) => Ok(t.shared().clone()),
            None => Err(Error::Closed),
        }
    }

    pub(crate) fn close_socket(&self, s: &Arc<SocketShared>, linger: Option<Duration>) {
        let ipc = lock(&self.inner.ipc).as_ref().map(|t| t.shared().clone());
        if let Some(ipc) = ipc {
            ipc.command_and_wait(|ack| crate::transport::ipc::Command::CloseSocket {
                socket_id: s.id,
                linger,
                ack,
            });
        }
        if let Some(io) = lock(&self.inner.io).as_ref() {
            io.shared().command(Command::CloseSocket {
                socket_id: s.id,
                linger,
            });
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(mut io) = lock(&self.io).take() {
            io.shutdown();
        }
        if let Some(mut ipc) = lock(&self.ipc).take() {
            ipc.shutdown();
        }
    }
}
