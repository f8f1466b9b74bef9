//! libzmq (C++), through the `zmq` crate, whose `zmq-sys` builds the bundled libzmq
//! from source. Transports: `tcp`, `ipc` (libzmq's ipc is a Unix-domain stream socket;
//! we use the abstract namespace, `ipc://@name`) and `inproc`.
//!
//! One `zmq::Context` per process, with libzmq's default of one I/O thread. Sends copy
//! the buffer into a new message (`zmq_send`); receives reuse one `zmq::Message`.

use anyhow::{Context as _, Result, bail};

use super::{Driver, Kind, Peer, copy_head};

pub struct Libzmq {
    ctx: zmq::Context,
}

impl Libzmq {
    pub fn new() -> Libzmq {
        Libzmq {
            ctx: zmq::Context::new(),
        }
    }

    fn socket(&self, kind: Kind) -> Result<zmq::Socket> {
        let t = match kind {
            Kind::Req => zmq::REQ,
            Kind::Rep => zmq::REP,
            Kind::Push => zmq::PUSH,
            Kind::Pull => zmq::PULL,
            Kind::Pub => zmq::PUB,
            Kind::Sub => zmq::SUB,
        };
        let s = self.ctx.socket(t).context("zmq_socket")?;
        // On close, give what is queued (a round-trip client's final end marker) a
        // moment to leave, but never hold up the exit for long.
        s.set_linger(1000)?;
        if kind == Kind::Sub {
            s.set_subscribe(b"")?;
        }
        Ok(s)
    }
}

/// Why libzmq cannot run `transport` in this build, if it cannot: `tcp-curve` needs a
/// libzmq with CURVE, and the one zmq-sys 0.12 bundles is built without it (its build
/// script passes no libsodium to zeromq-src and offers no feature to add one; libzmq's
/// own tweetnacl fallback is not compiled in either).
pub fn unsupported(transport: &str) -> Option<String> {
    match transport {
        "tcp-curve" if zmq::has("curve") != Some(true) => Some(
            "this build's libzmq has no CURVE (zmq_has(\"curve\") is false: zmq-sys 0.12 \
             builds its bundled libzmq without libsodium)"
                .into(),
        ),
        "tcp-curve" => Some("the libzmq driver does not configure CURVE".into()),
        _ => None,
    }
}

pub fn version() -> String {
    let (a, b, c) = zmq::version();
    format!("libzmq {a}.{b}.{c} (zmq crate, built from source)")
}

struct ZmqPeer {
    socket: zmq::Socket,
    msg: zmq::Message,
}

impl Peer for ZmqPeer {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.socket.send(msg, 0).context("zmq_send")?;
        Ok(())
    }

    fn recv(&mut self, head: &mut [u8]) -> Result<usize> {
        self.socket.recv(&mut self.msg, 0).context("zmq_msg_recv")?;
        Ok(copy_head(&self.msg, head))
    }
}

impl Driver for Libzmq {
    fn bind(
        &self,
        kind: Kind,
        transport: &str,
        name: &str,
        _max_size: usize,
    ) -> Result<(Box<dyn Peer>, String)> {
        let addr = match transport {
            "tcp" => "tcp://127.0.0.1:*".to_owned(),
            "ipc" => format!("ipc://@lwmq-bench/{name}"),
            "inproc" => format!("inproc://{name}"),
            other => bail!("libzmq has no transport {other:?} here (tcp, ipc, inproc)"),
        };
        let socket = self.socket(kind)?;
        socket
            .bind(&addr)
            .with_context(|| format!("zmq_bind {addr}"))?;
        let endpoint = match socket.get_last_endpoint()? {
            Ok(e) => e,
            Err(_) => addr,
        };
        let peer = ZmqPeer {
            socket,
            msg: zmq::Message::new(),
        };
        Ok((Box::new(peer), endpoint))
    }

    fn connect(
        &self,
        kind: Kind,
        _transport: &str,
        endpoint: &str,
        _max_size: usize,
    ) -> Result<Box<dyn Peer>> {
        let socket = self.socket(kind)?;
        socket
            .connect(endpoint)
            .with_context(|| format!("zmq_connect {endpoint}"))?;
        Ok(Box::new(ZmqPeer {
            socket,
            msg: zmq::Message::new(),
        }))
    }
}
