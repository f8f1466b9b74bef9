//! omq.rs (the `omq-tokio` crate): ZeroMQ in Rust on tokio, through its blocking socket
//! API. Transports: `tcp`, `tcp-curve` (tcp with the CURVE mechanism), `ipc` (ZMTP over
//! a Unix-domain socket in the abstract namespace, `ipc://@name`, as libzmq's ipc),
//! `inproc`, and omq's shared-memory transport (the `omq-shm` crate, which omq-tokio
//! brings in on Linux as `shm://@name` endpoints): `shm` with omq's defaults (a
//! waiting receive parks at once) and `shm-spin` (`Options::recv_spin` set to
//! `Duration::MAX`: a waiting receive polls for as long as it waits).
//!
//! One `omq_tokio::Context` per process: `Context::new()`, one I/O thread running a
//! tokio `current_thread` runtime, the libzmq-like default. Unlike zeromq.rs, omq has a
//! blocking API of its own (`Context::blocking_socket`), what a program with a plain
//! `fn main` uses: `send` and `recv` wait on the calling thread, the I/O thread moves
//! the bytes. Sends copy the buffer into a new message (`Message::from_slice`: one
//! copy; bodies up to 55 bytes stay inline, without an allocation); receives take the
//! message the socket hands out. Every other option is omq's default, except linger
//! (the others' one second instead of omq's zero).
//!
//! One default matters on two cores: REQ and REP take omq's latency workload profile,
//! whose `ipc` and `shm` I/O drivers keep polling for a while after traffic, so the
//! four threads of a round trip (two per process) compete for the two cores. A quick
//! run on the shared 2-core machine: 64 B `shm` round trip about 130 µs with the
//! default, about 28 µs with `WorkloadProfile::Throughput`. The default is kept.
//!
//! `async-tcp`, `async-ipc`, `async-shm` and `async-shm-spin` are those transports
//! through omq's async API on tokio: a multi-thread runtime with tokio's default
//! number of workers, the sockets made on `Context::current()` (omq borrows that
//! runtime: no I/O thread of its own), each send and receive `Runtime::block_on` of
//! the socket's future, as the zeromq.rs and lwmq async drivers do.
//!
//! CURVE: the binding side is the server, the connecting side the client; both derive
//! their long-term keypairs from fixed secrets (benchmark keys, not secrets), so the
//! endpoint string needs to carry nothing more than the address.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use omq_tokio::{
    Context, CurveKeypair, CurvePublicKey, CurveSecretKey, Message, Options, SocketType, blocking,
};

use super::{Driver, Kind, Peer, copy_head};

pub struct Omq {
    ctx: Context,
    /// The runtime (and the context borrowing it) of the `async-*` transports.
    rt: std::sync::OnceLock<(Arc<tokio::runtime::Runtime>, Context)>,
}

impl Omq {
    pub fn new() -> Omq {
        Omq {
            ctx: Context::new(),
            rt: std::sync::OnceLock::new(),
        }
    }

    fn runtime(&self) -> Result<(Arc<tokio::runtime::Runtime>, Context)> {
        if let Some(r) = self.rt.get() {
            return Ok(r.clone());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("start the tokio runtime")?;
        let ctx = {
            let _in = rt.enter();
            Context::current()
        };
        Ok(self.rt.get_or_init(|| (Arc::new(rt), ctx)).clone())
    }

    /// An async socket on the borrowed runtime, and that runtime.
    fn async_socket(
        &self,
        kind: Kind,
        transport: &str,
        server: bool,
    ) -> Result<(omq_tokio::Socket, Arc<tokio::runtime::Runtime>)> {
        let (rt, ctx) = self.runtime()?;
        let _in = rt.enter();
        let s = ctx.socket(socket_type(kind), options(transport, server));
        if kind == Kind::Sub {
            rt.block_on(s.subscribe(&b""[..]))
                .map_err(|e| anyhow!("omq subscribe: {e}"))?;
        }
        Ok((s, rt))
    }

    fn socket(&self, kind: Kind, transport: &str, server: bool) -> Result<blocking::Socket> {
        let s = self
            .ctx
            .blocking_socket(socket_type(kind), options(transport, server));
        if kind == Kind::Sub {
            s.subscribe(&b""[..])
                .map_err(|e| anyhow!("omq subscribe: {e}"))?;
        }
        Ok(s)
    }
}

fn socket_type(kind: Kind) -> SocketType {
    match kind {
        Kind::Req => SocketType::Req,
        Kind::Rep => SocketType::Rep,
        Kind::Push => SocketType::Push,
        Kind::Pull => SocketType::Pull,
        Kind::Pub => SocketType::Pub,
        Kind::Sub => SocketType::Sub,
    }
}

/// The options of a socket on `transport` (an `async-` prefix changes nothing here).
fn options(transport: &str, server: bool) -> Options {
    // On close, give what is queued (a round-trip client's final end marker) a
    // moment to leave, but never hold up the exit for long.
    let opts = Options::default().linger(Duration::from_secs(1));
    match transport.strip_prefix("async-").unwrap_or(transport) {
        "tcp-curve" if server => opts.curve_server(keypair(SERVER_SECRET)),
        "tcp-curve" => opts.curve_client(keypair(CLIENT_SECRET), keypair(SERVER_SECRET).public),
        "shm-spin" => opts.recv_spin(Duration::MAX),
        _ => opts,
    }
}

/// The benchmark's CURVE keys: fixed secrets, each side deriving the public keys.
const SERVER_SECRET: [u8; 32] = [0x53; 32];
const CLIENT_SECRET: [u8; 32] = [0x43; 32];

fn keypair(secret: [u8; 32]) -> CurveKeypair {
    let secret = CurveSecretKey::from_bytes(secret);
    let public: CurvePublicKey = secret.derive_public();
    CurveKeypair { public, secret }
}

pub fn version() -> String {
    format!(
        "omq-tokio {} (omq-shm {}, omq-proto {}; blocking API, 1 I/O thread)",
        env!("BENCH_DEP_OMQ"),
        env!("BENCH_DEP_OMQ_SHM"),
        env!("BENCH_DEP_OMQ_PROTO")
    )
}

struct OmqPeer {
    /// Always `Some` until dropped (closed then, with its linger).
    sock: Option<blocking::Socket>,
}

impl OmqPeer {
    fn sock(&self) -> Result<&blocking::Socket> {
        self.sock.as_ref().context("omq socket already closed")
    }
}

impl Peer for OmqPeer {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.sock()?
            .send(Message::from_slice(msg))
            .map_err(|e| anyhow!("omq send: {e}"))
    }

    fn recv(&mut self, head: &mut [u8]) -> Result<usize> {
        let m = self.sock()?.recv().map_err(|e| anyhow!("omq recv: {e}"))?;
        match m.get(0) {
            Some(frame) if m.len() == 1 => Ok(copy_head(frame, head)),
            _ => bail!("expected a single-frame message, got {} frames", m.len()),
        }
    }
}

impl Drop for OmqPeer {
    fn drop(&mut self) {
        if let Some(s) = self.sock.take() {
            let _ = s.close();
        }
    }
}

/// A peer of an `async-*` transport: each call is `block_on` of the socket's future.
struct OmqAsyncPeer {
    /// Always `Some` until dropped (closed then, inside the runtime).
    sock: Option<omq_tokio::Socket>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl OmqAsyncPeer {
    fn sock(&self) -> Result<&omq_tokio::Socket> {
        self.sock.as_ref().context("omq socket already closed")
    }
}

impl Peer for OmqAsyncPeer {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let s = self.sock()?;
        self.rt
            .block_on(s.send(Message::from_slice(msg)))
            .map_err(|e| anyhow!("omq send: {e}"))
    }

    fn recv(&mut self, head: &mut [u8]) -> Result<usize> {
        let s = self.sock()?;
        let m = self
            .rt
            .block_on(s.recv())
            .map_err(|e| anyhow!("omq recv: {e}"))?;
        match m.get(0) {
            Some(frame) if m.len() == 1 => Ok(copy_head(frame, head)),
            _ => bail!("expected a single-frame message, got {} frames", m.len()),
        }
    }
}

impl Drop for OmqAsyncPeer {
    fn drop(&mut self) {
        if let Some(s) = self.sock.take() {
            let _ = self.rt.block_on(s.close());
        }
    }
}

impl Driver for Omq {
    fn bind(
        &self,
        kind: Kind,
        transport: &str,
        name: &str,
        _max_size: usize,
    ) -> Result<(Box<dyn Peer>, String)> {
        let base = transport.strip_prefix("async-").unwrap_or(transport);
        let addr = match base {
            "tcp" | "tcp-curve" => "tcp://127.0.0.1:0".to_owned(),
            "ipc" => format!("ipc://@lwmq-bench/{name}"),
            "shm" | "shm-spin" => format!("shm://@lwmq-bench/{name}"),
            "inproc" => format!("inproc://{name}"),
            other => bail!(
                "omq has no transport {other:?} here (tcp, tcp-curve, ipc, shm, shm-spin, inproc)"
            ),
        };
        if base != transport {
            let (sock, rt) = self.async_socket(kind, transport, true)?;
            let endpoint = rt
                .block_on(sock.bind(addr.as_str()))
                .map_err(|e| anyhow!("omq bind {addr}: {e}"))?;
            let peer = OmqAsyncPeer {
                sock: Some(sock),
                rt,
            };
            return Ok((Box::new(peer), endpoint.to_string()));
        }
        let sock = self.socket(kind, transport, true)?;
        let endpoint = sock
            .bind(addr.as_str())
            .map_err(|e| anyhow!("omq bind {addr}: {e}"))?;
        let peer = OmqPeer { sock: Some(sock) };
        Ok((Box::new(peer), endpoint.to_string()))
    }

    fn connect(
        &self,
        kind: Kind,
        transport: &str,
        endpoint: &str,
        _max_size: usize,
    ) -> Result<Box<dyn Peer>> {
        if transport.starts_with("async-") {
            let (sock, rt) = self.async_socket(kind, transport, false)?;
            rt.block_on(sock.connect(endpoint))
                .map_err(|e| anyhow!("omq connect {endpoint}: {e}"))?;
            return Ok(Box::new(OmqAsyncPeer {
                sock: Some(sock),
                rt,
            }));
        }
        let sock = self.socket(kind, transport, false)?;
        sock.connect(endpoint)
            .map_err(|e| anyhow!("omq connect {endpoint}: {e}"))?;
        Ok(Box::new(OmqPeer { sock: Some(sock) }))
    }
}
