//! lwmq's shared-memory transport driven directly (`lwmq::shm`), without the
//! `Socket` layer: transports `ipc-raw-spin` and `ipc-raw-park`, round trip and
//! throughput only (the transport is point to point; fan-out is the socket's job).
//!
//! This is the floor under lwmq's `ipc://`: what the rings, the doorbell and the
//! rendezvous cost on their own. The `ipc-spin`/`ipc-park` variants measure the same
//! through `Socket`, once it offers the transport; the difference is the socket layer.
//!
//! Wait modes, through `ShmOptions::spin`: `ipc-raw-spin` spins for as long as it waits
//! (an hour: in practice for ever; the transport still checks every 100 ms that the
//! peer lives), `ipc-raw-park` parks on the futex at once. Each ring is sized so the
//! run's largest message fits (a message may take up to about half a ring).
//!
//! Threads: a peer is used by the thread that opened it, as everywhere in the bench.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use lwmq::shm::{self, Doorbell, Hello, ShmConnection, ShmListener, ShmOptions};
use lwmq::{Bytes, Message, SocketType};

use super::{Kind, Peer, copy_head};

fn options(transport: &str, max_size: usize) -> Result<ShmOptions> {
    let spin = match transport {
        "ipc-raw-spin" => Duration::from_secs(3600),
        "ipc-raw-park" => Duration::ZERO,
        other => bail!("lwmq's shm transport has no variant {other:?}"),
    };
    Ok(ShmOptions {
        ring_size: (max_size * 4).max(1 << 20),
        spin,
        ..ShmOptions::default()
    })
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

/// The binding side holds the listener until its one peer has connected.
#[allow(
    clippy::large_enum_variant,
    reason = "one per peer, made once; the connection is used in place"
)]
enum Conn {
    Listening(ShmListener),
    Connected(ShmConnection),
}

struct ShmPeer {
    conn: Conn,
}

impl ShmPeer {
    fn conn(&mut self) -> Result<&mut ShmConnection> {
        if let Conn::Listening(l) = &self.conn {
            let deadline = Instant::now() + Duration::from_secs(30);
            let c = loop {
                if let Some(c) = l.accept().map_err(|e| anyhow!("lwmq shm accept: {e}"))? {
                    break c;
                }
                if Instant::now() > deadline {
                    bail!("lwmq shm: no peer connected within 30 s");
                }
                std::thread::sleep(Duration::from_micros(50));
            };
            self.conn = Conn::Connected(c);
        }
        match &mut self.conn {
            Conn::Connected(c) => Ok(c),
            Conn::Listening(_) => bail!("lwmq shm: not connected"),
        }
    }
}

impl Peer for ShmPeer {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let m = Message::from(Bytes::copy_from_slice(msg));
        self.conn()?
            .send(&m, None)
            .map_err(|e| anyhow!("lwmq shm send: {e}"))
    }

    fn recv(&mut self, head: &mut [u8]) -> Result<usize> {
        let m = self
            .conn()?
            .recv(None)
            .map_err(|e| anyhow!("lwmq shm recv: {e}"))?;
        match m.frames() {
            [frame] => Ok(copy_head(frame, head)),
            frames => bail!(
                "expected a single-frame message, got {} frames",
                frames.len()
            ),
        }
    }
}

pub fn bind(
    kind: Kind,
    transport: &str,
    name: &str,
    max_size: usize,
) -> Result<(Box<dyn Peer>, String)> {
    let opts = options(transport, max_size)?;
    let bell = Doorbell::new().map_err(|e| anyhow!("lwmq shm doorbell: {e}"))?;
    let name = format!("lwmq-bench-{name}");
    let l = ShmListener::bind(&name, None, &opts, Hello::new(socket_type(kind)), &bell)
        .map_err(|e| anyhow!("lwmq shm bind {name}: {e}"))?;
    Ok((
        Box::new(ShmPeer {
            conn: Conn::Listening(l),
        }),
        name,
    ))
}

pub fn connect(kind: Kind, transport: &str, name: &str, max_size: usize) -> Result<Box<dyn Peer>> {
    let opts = options(transport, max_size)?;
    let bell = Doorbell::new().map_err(|e| anyhow!("lwmq shm doorbell: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match shm::connect(name, None, &opts, Hello::new(socket_type(kind)), &bell) {
            Ok(Some(c)) => {
                return Ok(Box::new(ShmPeer {
                    conn: Conn::Connected(c),
                }));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => bail!("lwmq shm: nobody bound {name} within 30 s"),
            Err(e) => bail!("lwmq shm connect {name}: {e}"),
        }
    }
}
