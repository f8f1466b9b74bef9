//! The [`Hub`]: what the transports of one context share. It is the transport-side
//! half of a [`crate::Context`] (which is a handle to it): the one background thread
//! (started on first use), the inproc names, the TCP ports this context listens on,
//! the sockets made from it (for `lwmq ls` and `terminate`), and the introspection
//! server.
//!
//! Threads: shared by every socket of the context (an `Arc`). The background thread
//! holds no reference to the hub, only to the sockets' handles, so the last handle to
//! drop (a `Context` or a `Socket`) shuts it down and joins it, after it flushed what
//! sockets left behind within their linger time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::dns::DnsConfig;
use super::inproc::Registry;
use super::reactor::{self, Command, Reactor, ReactorShared};
use super::tcp::Ports;
use super::{Notify, SocketHandle, lock};
use crate::{Error, Result};

/// What the transports of one context share (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Hub {
    reactor: Mutex<Option<Reactor>>,
    inproc: Mutex<Registry>,
    ports: Mutex<Ports>,
    terminated: AtomicBool,
    sockets: Mutex<Vec<Weak<SocketHandle>>>,
    /// Answers `lwmq ls` (see [`crate::introspect`]); its thread holds a `Weak` to us.
    introspect: Mutex<Option<crate::introspect::IntrospectServer>>,
    /// The ZAP handler, shared with every socket's options.
    zap: crate::auth::ZapSlot,
    /// Where connects look names up; set before the background thread starts.
    dns: Mutex<Option<DnsConfig>>,
    /// The context's domain (see [`Hub::domain`]); `None`: `LWMQ_DOMAIN` or `default`.
    domain: Mutex<Option<String>>,
    /// The doorbell watcher of the sockets' futures (see [`super::waiter`]), started
    /// on first use.
    waiter: Mutex<Option<crate::worker::Worker<super::waiter::WaiterShared>>>,
    /// How long the background thread keeps looking for work before it sleeps (see
    /// [`reactor::IoSpin`]); `None`: `LWMQ_IO_SPIN_US` or the default. Set before the
    /// background thread starts.
    io_spin: Mutex<Option<Duration>>,
}

impl Hub {
    /// Starts answering `lwmq ls` for this hub.
    pub(crate) fn start_introspection(self: &Arc<Hub>) {
        let weak = Arc::downgrade(self);
        // The hub is held only while its parts are copied: the slow part (asking the
        // background thread) runs without it, so the hub is never dropped on this
        // thread because the last socket went away during a query.
        let server = crate::introspect::IntrospectServer::start(move || {
            let parts = weak
                .upgrade()
                .map(|hub| (hub.snapshot_parts(), hub.domain()));
            match parts {
                Some(((sockets, reactor), domain)) => crate::introspect::Snapshot {
                    domain,
                    ..Hub::snapshot(sockets, reactor)
                },
                None => crate::introspect::Snapshot::default(),
            }
        });
        match server {
            Ok(server) => *lock(&self.introspect) = Some(server),
            Err(e) => tracing::warn!("lwmq ls will not see this context: {e}"),
        }
    }

    /// What a snapshot needs, copied out.
    fn snapshot_parts(&self) -> (Vec<Weak<SocketHandle>>, Option<Arc<ReactorShared>>) {
        let sockets = lock(&self.sockets).clone();
        let reactor = lock(&self.reactor).as_ref().map(|t| t.shared().clone());
        (sockets, reactor)
    }

    /// The sockets and their endpoints and connections, for `lwmq ls`. Runs on the
    /// introspection thread; asks the background thread and waits for it briefly.
    fn snapshot(
        sockets: Vec<Weak<SocketHandle>>,
        reactor: Option<Arc<ReactorShared>>,
    ) -> crate::introspect::Snapshot {
        let mut infos = HashMap::new();
        if let Some(r) = reactor {
            let (tx, rx) = std::sync::mpsc::channel();
            r.command(Command::Introspect { reply: tx });
            infos = rx
                .recv_timeout(Duration::from_millis(500))
                .unwrap_or_default();
        }
        let mut out = crate::introspect::Snapshot::default();
        for s in sockets.iter().filter_map(Weak::upgrade) {
            let mut info = infos
                .remove(&s.id)
                .unwrap_or_else(|| crate::introspect::SocketInfo {
                    id: s.id,
                    socket_type: s.socket_type.as_str().to_owned(),
                    ..Default::default()
                });
            if matches!(
                s.socket_type,
                crate::SocketType::Req | crate::SocketType::Rep
            ) {
                info.reqrep = Some(s.reqrep.snapshot());
            }
            out.sockets.push(info);
        }
        // Closed sockets whose connections still linger.
        out.sockets.extend(infos.into_values());
        out.sockets.sort_by_key(|s| s.id);
        out
    }

    /// The context's ZAP handler slot.
    pub(crate) fn zap(&self) -> &crate::auth::ZapSlot {
        &self.zap
    }

    /// Sets the DNS server every connect of this context uses (instead of
    /// `LWMQ_DNS_SERVER` or the system's). Takes effect for a background thread not
    /// started yet.
    pub(crate) fn set_dns_server(&self, server: std::net::SocketAddr) {
        *lock(&self.dns) = Some(DnsConfig {
            server: Some(server),
            invalid: None,
        });
    }

    /// Sets how long the background thread looks for more work before it sleeps.
    /// Takes effect for a background thread not started yet.
    pub(crate) fn set_io_spin(&self, spin: Duration) {
        *lock(&self.io_spin) = Some(spin);
    }

    /// Sets the context's domain.
    pub(crate) fn set_domain(&self, domain: String) {
        *lock(&self.domain) = Some(domain);
    }

    /// The context's domain: what it was set to, else `LWMQ_DOMAIN`, else `default`.
    /// It names the namespace of `ipc://` names of the context's sockets and is what
    /// `lwmq ls` groups processes by.
    pub(crate) fn domain(&self) -> String {
        lock(&self.domain)
            .clone()
            .unwrap_or_else(super::shm::default_domain)
    }

    /// Whether [`Hub::terminate`] ran.
    #[inline]
    pub(crate) fn is_terminated(&self) -> bool {
        self.terminated.load(Ordering::SeqCst)
    }

    /// Every blocking call of the context's sockets returns `Closed` from now on; the
    /// background thread flushes (within each socket's linger) and is joined.
    pub(crate) fn terminate(&self) {
        self.terminated.store(true, Ordering::SeqCst);
        let sockets: Vec<_> = lock(&self.sockets)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for s in sockets {
            s.signal.notify();
        }
        let r = lock(&self.reactor).take();
        if let Some(mut r) = r {
            r.shutdown();
        }
    }

    /// Remembers a new socket of this context.
    pub(crate) fn register(&self, s: &Arc<SocketHandle>) {
        let mut v = lock(&self.sockets);
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(s));
    }

    pub(crate) fn inproc(&self) -> MutexGuard<'_, Registry> {
        lock(&self.inproc)
    }

    pub(crate) fn ports(&self) -> MutexGuard<'_, Ports> {
        lock(&self.ports)
    }

    /// The doorbell watcher of the sockets' futures, started on first use.
    pub(crate) fn waiter(&self) -> Result<Arc<super::waiter::WaiterShared>> {
        let mut w = lock(&self.waiter);
        if w.is_none() {
            *w = Some(super::waiter::start()?);
        }
        match w.as_ref() {
            Some(w) => Ok(w.shared().clone()),
            None => Err(Error::Closed),
        }
    }

    /// The background thread, started on first use.
    pub(crate) fn reactor(&self) -> Result<Arc<ReactorShared>> {
        if self.is_terminated() {
            return Err(Error::Closed);
        }
        let mut r = lock(&self.reactor);
        if r.is_none() {
            let dns = lock(&self.dns).clone().unwrap_or_else(DnsConfig::from_env);
            let spin = lock(&self.io_spin).unwrap_or_else(reactor::IoSpin::from_env);
            *r = Some(reactor::start(dns, spin)?);
        }
        match r.as_ref() {
            Some(t) => Ok(t.shared().clone()),
            None => Err(Error::Closed),
        }
    }

    /// A socket closed: every transport forgets it, and its connections linger for up
    /// to `linger` in the background. Returns once its names are free (an `ipc://`
    /// name can be bound again at once).
    pub(crate) fn close_socket(&self, s: &Arc<SocketHandle>, linger: Option<Duration>) {
        self.inproc().remove_socket(s.id);
        self.ports().forget(|r| r.socket_id == s.id);
        let shared = lock(&self.reactor).as_ref().map(|t| t.shared().clone());
        if let Some(r) = shared {
            r.command_and_wait(|ack| Command::CloseSocket {
                socket_id: s.id,
                linger,
                ack,
            });
        }
    }
}
