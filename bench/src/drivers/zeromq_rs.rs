//! zeromq.rs (the `zeromq` crate): ZeroMQ in pure Rust on tokio. Transports: `tcp` and
//! `ipc` (a Unix-domain socket at a path under the temporary directory).
//!
//! Its API is async only, so its `tcp` and `ipc` are also its `async-tcp` and
//! `async-ipc` (the same runs, under the names the async comparison uses).
//!
//! Its API is async; the benchmark loop is blocking, so each call is `block_on` on a
//! tokio multi-thread runtime with tokio's default number of workers — what a program
//! with `#[tokio::main]` gets. The runtime's workers drive the socket's background
//! tasks (accepting, reading, writing); the thread that opened a peer blocks on it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use super::{Driver, Kind, Peer, copy_head};

pub struct ZeromqRs {
    rt: Arc<tokio::runtime::Runtime>,
}

impl ZeromqRs {
    pub fn new() -> Result<ZeromqRs> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("start the tokio runtime")?;
        Ok(ZeromqRs { rt: Arc::new(rt) })
    }
}

enum Sock {
    Req(zeromq::ReqSocket),
    Rep(zeromq::RepSocket),
    Push(zeromq::PushSocket),
    Pull(zeromq::PullSocket),
    Pub(zeromq::PubSocket),
    Sub(zeromq::SubSocket),
}

impl Sock {
    fn new(kind: Kind) -> Sock {
        match kind {
            Kind::Req => Sock::Req(zeromq::ReqSocket::new()),
            Kind::Rep => Sock::Rep(zeromq::RepSocket::new()),
            Kind::Push => Sock::Push(zeromq::PushSocket::new()),
            Kind::Pull => Sock::Pull(zeromq::PullSocket::new()),
            Kind::Pub => Sock::Pub(zeromq::PubSocket::new()),
            Kind::Sub => Sock::Sub(zeromq::SubSocket::new()),
        }
    }

    async fn bind(&mut self, addr: &str) -> zeromq::ZmqResult<zeromq::Endpoint> {
        match self {
            Sock::Req(s) => s.bind(addr).await,
            Sock::Rep(s) => s.bind(addr).await,
            Sock::Push(s) => s.bind(addr).await,
            Sock::Pull(s) => s.bind(addr).await,
            Sock::Pub(s) => s.bind(addr).await,
            Sock::Sub(s) => s.bind(addr).await,
        }
    }

    async fn connect(&mut self, addr: &str) -> zeromq::ZmqResult<()> {
        match self {
            Sock::Req(s) => s.connect(addr).await,
            Sock::Rep(s) => s.connect(addr).await,
            Sock::Push(s) => s.connect(addr).await,
            Sock::Pull(s) => s.connect(addr).await,
            Sock::Pub(s) => s.connect(addr).await,
            Sock::Sub(s) => {
                s.connect(addr).await?;
                s.subscribe("").await
            }
        }
    }

    async fn send(&mut self, m: ZmqMessage) -> zeromq::ZmqResult<()> {
        match self {
            Sock::Req(s) => s.send(m).await,
            Sock::Rep(s) => s.send(m).await,
            Sock::Push(s) => s.send(m).await,
            Sock::Pub(s) => s.send(m).await,
            Sock::Pull(_) | Sock::Sub(_) => {
                Err(zeromq::ZmqError::Other("this socket type cannot send"))
            }
        }
    }

    async fn recv(&mut self) -> zeromq::ZmqResult<ZmqMessage> {
        match self {
            Sock::Req(s) => s.recv().await,
            Sock::Rep(s) => s.recv().await,
            Sock::Pull(s) => s.recv().await,
            Sock::Sub(s) => s.recv().await,
            Sock::Push(_) | Sock::Pub(_) => {
                Err(zeromq::ZmqError::Other("this socket type cannot receive"))
            }
        }
    }
}

/// The socket file of run `name`'s ipc endpoint.
fn ipc_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lwmq-bench-{name}.sock"))
}

/// Removes what run `name` may have left behind (a peer that was killed).
pub fn cleanup(name: &str) {
    let _ = std::fs::remove_file(ipc_path(name));
}

struct ZPeer {
    rt: Arc<tokio::runtime::Runtime>,
    /// Always `Some` until dropped (inside the runtime, which its `Drop` may need).
    sock: Option<Sock>,
    /// The ipc socket file we bound, removed when the peer is dropped.
    path: Option<PathBuf>,
}

impl ZPeer {
    fn sock(&mut self) -> Result<&mut Sock> {
        self.sock.as_mut().context("zeromq socket already closed")
    }
}

impl Peer for ZPeer {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let m = ZmqMessage::from(msg.to_vec());
        let rt = self.rt.clone();
        rt.block_on(self.sock()?.send(m)).context("zeromq send")?;
        Ok(())
    }

    fn recv(&mut self, head: &mut [u8]) -> Result<usize> {
        let rt = self.rt.clone();
        let m = rt.block_on(self.sock()?.recv()).context("zeromq recv")?;
        match m.get(0) {
            Some(frame) if m.len() == 1 => Ok(copy_head(frame, head)),
            _ => bail!("expected a single-frame message, got {} frames", m.len()),
        }
    }
}

impl Drop for ZPeer {
    fn drop(&mut self) {
        let _in_runtime = self.rt.enter();
        drop(self.sock.take());
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Driver for ZeromqRs {
    fn bind(
        &self,
        kind: Kind,
        transport: &str,
        name: &str,
        _max_size: usize,
    ) -> Result<(Box<dyn Peer>, String)> {
        let mut path = None;
        let addr = match transport.strip_prefix("async-").unwrap_or(transport) {
            "tcp" => "tcp://127.0.0.1:0".to_owned(),
            "ipc" => {
                let p = ipc_path(name);
                let _ = std::fs::remove_file(&p);
                let a = format!("ipc://{}", p.display());
                path = Some(p);
                a
            }
            other => bail!("zeromq.rs has no transport {other:?} here (tcp, ipc)"),
        };
        // Creating a socket spawns its tasks: it must happen inside the runtime.
        let _in_runtime = self.rt.enter();
        let mut sock = Sock::new(kind);
        let endpoint = self
            .rt
            .block_on(sock.bind(&addr))
            .with_context(|| format!("zeromq bind {addr}"))?;
        let peer = ZPeer {
            rt: self.rt.clone(),
            sock: Some(sock),
            path,
        };
        Ok((Box::new(peer), endpoint.to_string()))
    }

    fn connect(
        &self,
        kind: Kind,
        _transport: &str,
        endpoint: &str,
        _max_size: usize,
    ) -> Result<Box<dyn Peer>> {
        let _in_runtime = self.rt.enter();
        let mut sock = Sock::new(kind);
        self.rt
            .block_on(sock.connect(endpoint))
            .with_context(|| format!("zeromq connect {endpoint}"))?;
        Ok(Box::new(ZPeer {
            rt: self.rt.clone(),
            sock: Some(sock),
            path: None,
        }))
    }
}
