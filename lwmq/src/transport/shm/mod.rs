//! The shared-memory `ipc://name[:port]` transport: two processes on one machine
//! exchange messages through a pair of rings in a memory file they both map.
//!
//! # Pieces
//!
//! - [`ShmListener::bind`] claims the name: an abstract-namespace Unix socket
//!   `\0lwmq/<domain>/<hash of name:port>` (no file anywhere; the kernel drops the name
//!   when the process dies). Binding a name already bound is [`Error::AddressInUse`].
//! - [`connect`] reaches a listener; `Ok(None)` means nobody is bound yet (the socket
//!   layer retries every reconnect interval and queues messages meanwhile). The
//!   connector creates the connection's segment (a sealed `memfd`, see [`segment`]) and
//!   sends it, with its doorbell, over the Unix socket (SCM_RIGHTS) in a hello; the
//!   binder checks the peer's uid (SO_PEERCRED), the full endpoint name, the socket
//!   types and the memory, and answers with its own hello and doorbell. Either side
//!   refuses with a reason that the other side reports.
//! - [`ShmConnection`]: a [`RingWriter`] (`tx`) and a [`RingReader`] (`rx`), the peer's
//!   identity, and the Unix socket, which stays open for the connection's life: when the
//!   peer process dies, even by `kill -9`, the kernel closes it and
//!   [`ShmConnection::control_fd`] becomes readable with HUP at once.
//! - [`Doorbell`]: one futex word per receiving socket, in its own sealed page, given
//!   to every peer; writers ring it only when the socket announced it is parking.
//!
//! # How a socket drives it
//!
//! ```text
//!  bind:    bell = Doorbell::new()                  (one per socket, shared by all its peers)
//!           l = ShmListener::bind(name, port, &opts, hello, &bell)
//!           register l.as_raw_fd() (readable) with the I/O loop; on readiness call
//!           l.accept() until Ok(None); Err = that one peer failed (log, monitor)
//!  connect: connect_start(..) -> Ok(None): nobody bound, retry every reconnect interval
//!           (queue messages up to the HWM meanwhile); Ok(Some(pending)): poll
//!           pending.as_raw_fd(), then try_finish(); PeerRejected: do not retry in a loop
//!  each connection: register control_fd() for readability/HUP; HUP = peer gone
//!           (peer-crashed, with peer.pid): drain rx, drop the connection, reconnect
//!  send:    conn.tx.try_send(&msg) from the sending thread; Full -> arm_space_notification,
//!           retry, then bell.wait_until(spin, deadline, ..) like ShmConnection::send
//!  recv:    bell.wait_until(spin, deadline, || poll every pipe's rx.try_recv()); the I/O
//!           thread rings the same bell (notify) when a stream transport delivers
//! ```
//!
//! # Threads
//!
//! Nothing here spawns a thread. A [`ShmConnection`] is `Send`, not `Sync`: its `tx`
//! belongs to the one thread sending on the socket, its `rx` to the one receiving (they
//! may be different threads if the connection is split by moving the fields). The
//! listener's `accept` and [`connect_start`]/[`ShmConnecting::try_finish`] never block
//! and run wherever the socket layer does its I/O; [`connect`] is the blocking
//! convenience (at most [`ShmOptions::handshake_timeout`]).

mod region;
pub mod ring;
pub mod segment;
mod sys;
pub mod wait;

mod rendezvous;

use std::time::Duration;

use bytes::Bytes;

pub use rendezvous::{
    PeerHello, ShmConnecting, ShmConnection, ShmLink, ShmListener, abstract_name, connect,
    connect_start,
};
pub use ring::{ReadGuard, RingReader, RingWriter, ShmSendError, WriteGrant};
pub use wait::{Doorbell, WaitTicket};

#[doc(hidden)]
pub use sys::{futex_wait, futex_wake_all};

use crate::{Error, Result, SocketType};

/// Which users may connect to us, or be connected to (checked with SO_PEERCRED on both
/// sides: abstract sockets have no file permissions; groups with SO_PEERGROUPS).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedPeers {
    /// Only processes running as our own effective uid (the default).
    #[default]
    SameUser,
    /// Any user.
    Any,
    /// Our own uid and these.
    Uids(Vec<u32>),
    /// Our own uid, these uids, and processes in any of these groups: the peer's
    /// effective gid or one of its supplementary groups (as the kernel recorded them when
    /// it connected or listened).
    Listed {
        /// Users allowed besides our own.
        uids: Vec<u32>,
        /// Groups whose members are allowed.
        gids: Vec<u32>,
    },
}

impl AllowedPeers {
    /// Whether a peer running as `uid` is allowed by its uid alone (for
    /// [`AllowedPeers::Listed`], its groups may still allow it: see
    /// [`AllowedPeers::allows_peer`]).
    pub fn allows(&self, uid: u32) -> bool {
        match self {
            AllowedPeers::Any => true,
            AllowedPeers::SameUser => uid == sys::effective_uid(),
            AllowedPeers::Uids(list) | AllowedPeers::Listed { uids: list, .. } => {
                uid == sys::effective_uid() || list.contains(&uid)
            }
        }
    }

    /// Whether a peer running as `uid` in groups `gids` (effective and supplementary)
    /// is allowed.
    pub fn allows_peer(&self, uid: u32, gids: &[u32]) -> bool {
        self.allows(uid)
            || matches!(self, AllowedPeers::Listed { gids: ours, .. }
                if gids.iter().any(|g| ours.contains(g)))
    }

    /// Whether the peer's groups matter (only then are they asked of the kernel).
    pub fn looks_at_groups(&self) -> bool {
        matches!(self, AllowedPeers::Listed { gids, .. } if !gids.is_empty())
    }
}

/// Options of the shared-memory transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmOptions {
    /// Bytes of each ring (one per direction), rounded up to a power of two between
    /// 4 KiB and 1 GiB. The connecting side's value is used for a connection. A
    /// message larger than about half of it ([`RingWriter::max_message_size`]) goes
    /// in pieces.
    /// Default 1 MiB.
    pub ring_size: usize,
    /// High-water mark in messages for the socket layer's queue (the ring itself is
    /// bounded by bytes). Default 1000.
    pub max_pending: usize,
    /// How long a waiting thread spins before parking on the futex. Default 50 µs.
    pub spin: Duration,
    /// Who may connect. Default: the same user.
    pub allow_uids: AllowedPeers,
    /// The namespace of names: sockets in different domains never meet. Default: the
    /// `LWMQ_DOMAIN` environment variable, or `"default"`. 1 to 48 bytes of
    /// `[A-Za-z0-9._-]`.
    pub domain: String,
    /// How long a peer may take to send its hello: the longest [`connect`] waits for
    /// the binder's answer, and how long a listener keeps a silent connection before
    /// dropping it. Default 2 s.
    pub handshake_timeout: Duration,
    /// The largest ring a connecting peer may make us map (the connector chooses the
    /// ring size; this bounds what a peer can cost our address space). Default 64 MiB.
    pub max_peer_ring_size: usize,
}

/// The environment variable naming the process's domain.
pub const DOMAIN_ENV: &str = "LWMQ_DOMAIN";

/// The domain when none is set: `LWMQ_DOMAIN`, or `"default"` when it is unset or empty.
pub fn default_domain() -> String {
    match std::env::var(DOMAIN_ENV) {
        Ok(d) if !d.is_empty() => d,
        _ => "default".into(),
    }
}

impl Default for ShmOptions {
    fn default() -> ShmOptions {
        ShmOptions {
            ring_size: 1 << 20,
            max_pending: 1000,
            spin: Duration::from_micros(50),
            allow_uids: AllowedPeers::SameUser,
            domain: default_domain(),
            handshake_timeout: Duration::from_secs(2),
            max_peer_ring_size: 64 << 20,
        }
    }
}

impl ShmOptions {
    /// The ring size actually used (power of two in range).
    pub fn effective_ring_size(&self) -> usize {
        self.ring_size
            .clamp(segment::MIN_RING_SIZE, segment::MAX_RING_SIZE)
            .next_power_of_two()
    }

    fn check_domain(&self) -> Result<()> {
        let d = &self.domain;
        let ok = !d.is_empty()
            && d.len() <= 48
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "shm domain {d:?} must be 1 to 48 characters of A-Z a-z 0-9 . _ -"
            )))
        }
    }
}

/// What we tell a peer about ourselves in the rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Our socket type; the peer checks it is compatible with its own.
    pub socket_type: SocketType,
    /// Our routing identity (ZMQ_ROUTING_ID), at most 255 bytes; may be empty.
    pub identity: Bytes,
    /// Our receive high-water mark in messages (RCVHWM; 0, the default here: none):
    /// the peer's writer keeps at most this many messages unread in our ring, and one
    /// that writes more is a protocol error. Read at connect/accept time: a change
    /// applies to later connections, as in libzmq.
    pub recv_hwm: u32,
}

impl Hello {
    /// A hello for a socket of type `socket_type` without identity.
    pub fn new(socket_type: SocketType) -> Hello {
        Hello {
            socket_type,
            identity: Bytes::new(),
            recv_hwm: 0,
        }
    }
}

/// `ipc://name` or `ipc://name:port`.
fn endpoint_string(name: &str, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("ipc://{name}:{p}"),
        None => format!("ipc://{name}"),
    }
}
