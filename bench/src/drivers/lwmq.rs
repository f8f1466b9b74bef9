//! lwmq itself, through its public `Socket` API. Transports: `ipc-spin` and `ipc-park`
//! (shared memory, `ipc://name`, with the receiver spinning or parking on its futex
//! while it waits), `tcp`, `tcp-curve` (tcp with CURVE: the binding side the server,
//! fixed benchmark keys), `unix` (ZMTP over a Unix socket in the abstract namespace)
//! and `inproc`; `tcp-resend`, `ipc-spin-resend` and `inproc-resend` are those with REQ
//! resend on (round trip only: what the bookkeeping costs); and, with the `lwmq-shm-raw` feature, `ipc-raw-spin`/`ipc-raw-park`:
//! the shared-memory transport without the socket layer (`lwmq_shm.rs`).
//!
//! `async-tcp`, `async-ipc-spin` and `async-ipc-park` are `tcp`, `ipc-spin` and
//! `ipc-park` through the async API (`lwmq::aio`) on tokio, measured the way the
//! zeromq.rs driver measures its async sockets: each send and receive is
//! `Runtime::block_on` of the socket's future on a multi-thread runtime with tokio's
//! default number of workers. `async-ipc-spin` sets the socket's async spin
//! (`Socket::set_async_spin`) for as long as it waits, as `ipc-spin` does for the
//! blocking calls; `async-ipc-park` returns `Pending` at once and is woken through the
//! context's doorbell watcher.
//!
//! One `lwmq::Context` per process. Sends copy the buffer into a new `Message` (one
//! allocation and one copy, like `zmq_send`); receives take the message the socket
//! hands out.
//!
//! `ipc-loan` is `ipc-spin` through the in-place API, as iceoryx2 is measured with its
//! loaned samples: `Socket::send_with` copies the buffer straight into the peer's ring
//! (one copy, no allocation) and `Socket::recv_with` reads the message in the ring
//! (only the scenario's head bytes are copied). The in-place path is PAIR, PUSH/PULL
//! and DEALER's, so its round trip runs between two PAIR sockets.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use lwmq::{Bytes, Context, SocketType};

use super::{Driver, Kind, Peer, copy_head};

pub struct Lwmq {
    ctx: Context,
    /// The runtime of the `async-*` transports, started on first use.
    rt: std::sync::OnceLock<Arc<tokio::runtime::Runtime>>,
}

impl Lwmq {
    pub fn new() -> Result<Lwmq> {
        Ok(Lwmq {
            ctx: Context::new(),
            rt: std::sync::OnceLock::new(),
        })
    }

    fn runtime(&self) -> Result<Arc<tokio::runtime::Runtime>> {
        if let Some(rt) = self.rt.get() {
            return Ok(rt.clone());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("start the tokio runtime")?;
        Ok(self.rt.get_or_init(|| Arc::new(rt)).clone())
    }

    /// The peer over `socket`: blocking, or for an `async-*` transport its futures.
    fn peer(&self, socket: lwmq::Socket, transport: &str, loan: bool) -> Result<Box<dyn Peer>> {
        if transport.starts_with("async-") {
            Ok(Box::new(AsyncPeer {
                socket,
                rt: self.runtime()?,
            }))
        } else {
            Ok(Box::new(LwmqPeer { socket, loan }))
        }
    }

    fn socket(&self, kind: Kind, transport: &str, max_size: usize) -> Result<lwmq::Socket> {
        let loan = transport == "ipc-loan";
        let t = match kind {
            Kind::Req | Kind::Rep if loan => SocketType::Pair,
            Kind::Req => SocketType::Req,
            Kind::Rep => SocketType::Rep,
            Kind::Push => SocketType::Push,
            Kind::Pull => SocketType::Pull,
            Kind::Pub => SocketType::Pub,
            Kind::Sub => SocketType::Sub,
        };
        let s = self
            .ctx
            .socket(t)
            .map_err(|e| anyhow!("lwmq socket {t}: {e}"))?;
        let transport = match transport.strip_prefix("async-") {
            Some(t) => {
                if t == "ipc-spin" {
                    s.set_async_spin(SPIN_FOREVER);
                }
                t
            }
            None => transport,
        };
        // On close, give what is queued (a round-trip client's final end marker) a
        // moment to leave, but never hold up the exit for long.
        s.set_linger(Some(Duration::from_secs(1)));
        let (transport, resend) = split_resend(transport);
        if resend && kind == Kind::Req {
            // Never due within a round trip: what is measured is the bookkeeping (ids,
            // the kept request, the REP's reply cache), not resends.
            s.set_req_resend_interval(Some(Duration::from_secs(10)))
                .map_err(|e| anyhow!("lwmq req_resend_interval: {e}"))?;
        }
        configure_transport(&s, transport, max_size)?;
        if kind == Kind::Sub {
            s.subscribe(b"")
                .map_err(|e| anyhow!("lwmq subscribe: {e}"))?;
        }
        Ok(s)
    }
}

/// Why lwmq cannot run `transport` in this build, if it cannot: a transport that lwmq's
/// `Socket` does not offer (yet) is reported here rather than as a failure. Every
/// variant runs today.
pub fn unsupported(_transport: &str) -> Option<String> {
    None
}

/// The benchmark's CURVE keys (`tcp-curve`): fixed secrets, not secrets; each side
/// derives the public keys, so the endpoint carries nothing but the address.
const CURVE_SERVER_SECRET: [u8; 32] = [0x53; 32];
const CURVE_CLIENT_SECRET: [u8; 32] = [0x43; 32];

/// `tcp-curve`: the binding side is the CURVE server, the connecting side the client.
fn configure_curve(s: &lwmq::Socket, server: bool) {
    let server_secret = lwmq::CurveSecretKey::from_bytes(CURVE_SERVER_SECRET);
    if server {
        s.set_curve_secret_key(&server_secret);
        s.set_curve_server(true);
    } else {
        s.set_curve_secret_key(&lwmq::CurveSecretKey::from_bytes(CURVE_CLIENT_SECRET));
        s.set_curve_server_key(&server_secret.public_key());
    }
}

/// `T-resend` is transport `T` with REQ resend on (the REP de-duplicates then).
fn split_resend(transport: &str) -> (&str, bool) {
    match transport.strip_suffix("-resend") {
        Some(t) => (t, true),
        None => (transport, false),
    }
}

/// How long an `ipc-spin` socket spins: for as long as it waits, in practice.
const SPIN_FOREVER: Duration = Duration::from_secs(3600);

/// Transport-specific options: the shared-memory wait mode, and a ring large enough
/// for the run's largest message (a message may take up to about half a ring).
fn configure_transport(s: &lwmq::Socket, transport: &str, max_size: usize) -> Result<()> {
    if let Some(why) = unsupported(transport) {
        bail!("{why}");
    }
    let spin = match transport {
        "ipc-spin" | "ipc-loan" => SPIN_FOREVER,
        "ipc-park" => Duration::ZERO,
        _ => return Ok(()),
    };
    s.set_ipc_spin(spin);
    s.set_ipc_ring_size((max_size * 4).max(1 << 20));
    Ok(())
}

#[cfg(feature = "lwmq-shm-raw")]
use super::lwmq_shm::{bind as raw_bind, connect as raw_connect};

#[cfg(not(feature = "lwmq-shm-raw"))]
fn raw_bind(_: Kind, t: &str, _: &str, _: usize) -> Result<(Box<dyn Peer>, String)> {
    bail!("{t} needs the lwmq-shm-raw feature of the bench crate")
}

#[cfg(not(feature = "lwmq-shm-raw"))]
fn raw_connect(_: Kind, t: &str, _: &str, _: usize) -> Result<Box<dyn Peer>> {
    bail!("{t} needs the lwmq-shm-raw feature of the bench crate")
}

pub fn version() -> String {
    format!("lwmq {} (this repository)", env!("BENCH_LWMQ_VERSION"))
}

struct LwmqPeer {
    socket: lwmq::Socket,
    /// `ipc-loan`: `send_with`/`recv_with`.
    loan: bool,
}

impl Peer for LwmqPeer {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if self.loan {
            return self
                .socket
                .send_with(msg.len(), |buf| buf.copy_from_slice(msg))
                .map_err(|e| anyhow!("lwmq send_with: {e}"));
        }
        self.socket
            .send(Bytes::copy_from_slice(msg))
            .map_err(|e| anyhow!("lwmq send: {e}"))
    }

    fn recv(&mut self, head: &mut [u8]) -> Result<usize> {
        if self.loan {
            let got = self
                .socket
                .recv_with(|frames| match frames.len() {
                    1 => Ok(frames.frame(0).map_or(0, |f| copy_head(f, head))),
                    n => Err(n),
                })
                .map_err(|e| anyhow!("lwmq recv_with: {e}"))?;
            return got.map_err(|n| anyhow!("expected a single-frame message, got {n} frames"));
        }
        let m = self.socket.recv().map_err(|e| anyhow!("lwmq recv: {e}"))?;
        match m.frames() {
            [frame] => Ok(copy_head(frame, head)),
            frames => bail!(
                "expected a single-frame message, got {} frames",
                frames.len()
            ),
        }
    }
}

/// A peer of an `async-*` transport: each call is `block_on` of the socket's future.
struct AsyncPeer {
    socket: lwmq::Socket,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Peer for AsyncPeer {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.rt
            .block_on(self.socket.send_async(Bytes::copy_from_slice(msg)))
            .map_err(|e| anyhow!("lwmq send_async: {e}"))
    }

    fn recv(&mut self, head: &mut [u8]) -> Result<usize> {
        let m = self
            .rt
            .block_on(self.socket.recv_async())
            .map_err(|e| anyhow!("lwmq recv_async: {e}"))?;
        match m.frames() {
            [frame] => Ok(copy_head(frame, head)),
            frames => bail!(
                "expected a single-frame message, got {} frames",
                frames.len()
            ),
        }
    }
}

impl Driver for Lwmq {
    fn bind(
        &self,
        kind: Kind,
        transport: &str,
        name: &str,
        max_size: usize,
    ) -> Result<(Box<dyn Peer>, String)> {
        if transport.starts_with("ipc-raw-") {
            return raw_bind(kind, transport, name, max_size);
        }
        let base = transport.strip_prefix("async-").unwrap_or(transport);
        let addr = match split_resend(base).0 {
            "tcp" | "tcp-curve" => "tcp://127.0.0.1:0".to_owned(),
            "unix" => format!("unix://@lwmq-bench/{name}"),
            "ipc-spin" | "ipc-park" | "ipc-loan" => format!("ipc://lwmq-bench-{name}"),
            "inproc" => format!("inproc://{name}"),
            other => bail!("lwmq has no transport {other:?} here"),
        };
        let socket = self.socket(kind, transport, max_size)?;
        if transport == "tcp-curve" {
            configure_curve(&socket, true);
        }
        let endpoint = socket
            .bind(&addr)
            .map_err(|e| anyhow!("lwmq bind {addr}: {e}"))?;
        let loan = transport == "ipc-loan";
        self.peer(socket, transport, loan).map(|p| (p, endpoint))
    }

    fn connect(
        &self,
        kind: Kind,
        transport: &str,
        endpoint: &str,
        max_size: usize,
    ) -> Result<Box<dyn Peer>> {
        if transport.starts_with("ipc-raw-") {
            return raw_connect(kind, transport, endpoint, max_size);
        }
        let socket = self.socket(kind, transport, max_size)?;
        if transport == "tcp-curve" {
            configure_curve(&socket, false);
        }
        socket
            .connect(endpoint)
            .map_err(|e| anyhow!("lwmq connect {endpoint}: {e}"))
            .context("lwmq driver")?;
        let loan = transport == "ipc-loan";
        self.peer(socket, transport, loan)
    }
}
