//! One driver per contender, behind one small interface.
//!
//! A driver turns "a PUSH socket bound on tcp" into a [`Peer`] that can send a byte
//! buffer and receive one. The scenarios (`crate::scenario`) are written once against
//! [`Peer`], so every contender runs exactly the same loop; a driver only maps a
//! [`Kind`] and a transport onto its library's own sockets and does what that library
//! naturally does to send a byte slice (copying it into a message, or into a loaned
//! shared-memory sample).
//!
//! Threads: a driver is shared (`Send + Sync`) so that an inproc pair can open its two
//! peers on two threads; a [`Peer`] is used only by the thread that opened it.

use anyhow::{Result, bail};

#[cfg(feature = "iceoryx2")]
mod iceoryx2;
#[cfg(feature = "libzmq")]
mod libzmq;
#[cfg(feature = "lwmq")]
mod lwmq;
#[cfg(feature = "lwmq-shm-raw")]
mod lwmq_shm;
#[cfg(feature = "omq")]
mod omq;
#[cfg(feature = "zeromq-rs")]
mod zeromq_rs;

/// The role a peer plays in a scenario: its socket type, in ZeroMQ's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sends a request, waits for the reply (round-trip client).
    Req,
    /// Answers each request (round-trip server; the side that binds).
    Rep,
    /// Sends a stream of messages (throughput sender).
    Push,
    /// Receives the stream (throughput receiver; the side that binds).
    Pull,
    /// Publishes to every subscriber (the side that binds).
    Pub,
    /// Subscribes to everything.
    Sub,
}

/// One end of a connection, as a scenario sees it.
pub trait Peer {
    /// Sends `msg` as one single-frame message, blocking while the transport is full.
    fn send(&mut self, msg: &[u8]) -> Result<()>;
    /// Receives one message, blocking until there is one. Copies its first bytes into
    /// `head` (as many as fit) and returns the message's full length.
    fn recv(&mut self, head: &mut [u8]) -> Result<usize>;
}

/// A contender's library, opened once per process.
pub trait Driver: Send + Sync {
    /// Binds a peer of `kind` on `transport`; `name` is unique to this run and may be
    /// used to build the address; no message will be larger than `max_size` bytes.
    /// Returns the peer and the endpoint to connect to.
    fn bind(
        &self,
        kind: Kind,
        transport: &str,
        name: &str,
        max_size: usize,
    ) -> Result<(Box<dyn Peer>, String)>;
    /// Connects a peer of `kind` on `transport` to `endpoint` (what `bind` returned).
    fn connect(
        &self,
        kind: Kind,
        transport: &str,
        endpoint: &str,
        max_size: usize,
    ) -> Result<Box<dyn Peer>>;
}

/// Copies the start of `msg` into `head`; a helper for [`Peer::recv`] implementations.
pub fn copy_head(msg: &[u8], head: &mut [u8]) -> usize {
    let n = msg.len().min(head.len());
    head[..n].copy_from_slice(&msg[..n]);
    msg.len()
}

/// The contenders compiled into this binary (each is a cargo feature).
pub fn compiled() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "lwmq") {
        v.push("lwmq");
    }
    if cfg!(feature = "libzmq") {
        v.push("libzmq");
    }
    if cfg!(feature = "zeromq-rs") {
        v.push("zeromq-rs");
    }
    if cfg!(feature = "omq") {
        v.push("omq");
    }
    if cfg!(feature = "iceoryx2") {
        v.push("iceoryx2");
    }
    v
}

/// Opens the driver of `contender`.
pub fn open(contender: &str) -> Result<Box<dyn Driver>> {
    match contender {
        #[cfg(feature = "lwmq")]
        "lwmq" => Ok(Box::new(lwmq::Lwmq::new()?)),
        #[cfg(feature = "libzmq")]
        "libzmq" => Ok(Box::new(libzmq::Libzmq::new())),
        #[cfg(feature = "zeromq-rs")]
        "zeromq-rs" => Ok(Box::new(zeromq_rs::ZeromqRs::new()?)),
        #[cfg(feature = "omq")]
        "omq" => Ok(Box::new(omq::Omq::new())),
        #[cfg(feature = "iceoryx2")]
        "iceoryx2" => Ok(Box::new(iceoryx2::Iceoryx2)),
        other => bail!(
            "contender {other:?} is not compiled into this binary (compiled: {})",
            compiled().join(", ")
        ),
    }
}

/// Why `contender` cannot run `transport` in this build, if it cannot: such runs are
/// recorded as not run (with this reason), not as failures.
pub fn unsupported(contender: &str, transport: &str) -> Option<String> {
    // Unused in a build with neither lwmq nor libzmq.
    let _ = transport;
    match contender {
        #[cfg(feature = "lwmq")]
        "lwmq" => lwmq::unsupported(transport),
        #[cfg(feature = "libzmq")]
        "libzmq" => libzmq::unsupported(transport),
        _ => None,
    }
}

/// Removes whatever run `name` may have left behind (files of killed peers).
pub fn cleanup(name: &str) {
    #[cfg(feature = "zeromq-rs")]
    zeromq_rs::cleanup(name);
    let _ = name;
}

/// The version of each compiled contender's library, for the record.
// Which pushes there are depends on the features: no single `vec![]` fits every build.
#[allow(clippy::vec_init_then_push)]
pub fn versions() -> Vec<(String, String)> {
    let mut v = Vec::new();
    #[cfg(feature = "lwmq")]
    v.push(("lwmq".into(), lwmq::version()));
    #[cfg(feature = "libzmq")]
    v.push(("libzmq".into(), libzmq::version()));
    #[cfg(feature = "zeromq-rs")]
    v.push((
        "zeromq-rs".into(),
        format!("zeromq {}", env!("BENCH_DEP_ZEROMQ")),
    ));
    #[cfg(feature = "omq")]
    v.push(("omq".into(), omq::version()));
    #[cfg(feature = "iceoryx2")]
    v.push((
        "iceoryx2".into(),
        format!("iceoryx2 {}", env!("BENCH_DEP_ICEORYX2")),
    ));
    v
}
