//! lwmq: brokerless messaging in the family of ZeroMQ.
//!
//! Sockets with ZeroMQ's patterns (PAIR, PUB/SUB, XPUB/XSUB, PUSH/PULL, REQ/REP,
//! DEALER/ROUTER), speaking ZMTP 3.1 on TCP so that libzmq programs talk to them, plus a
//! shared-memory `ipc://` transport.
//!
//! ```text
//!  app thread                                   peer process
//!  Socket::send ──> pattern (pick pipe) ──> pipe ──┬─ shm ring ──────────────> Socket::recv
//!                                                  └─ I/O thread ─> proto (ZMTP) ─> tcp/unix
//! ```
//!
//! # Example
//!
//! ```
//! use lwmq::{Context, Message, SocketType};
//!
//! # fn main() -> lwmq::Result<()> {
//! let ctx = Context::new();
//! let rep = ctx.socket(SocketType::Rep)?;
//! let endpoint = rep.bind("tcp://127.0.0.1:0")?; // the port the system picked
//! let req = ctx.socket(SocketType::Req)?;
//! req.connect(&endpoint)?; // returns at once; connects in the background
//! req.send(Message::from_frames(["hello", "world"]))?;
//! let request = rep.recv()?;
//! rep.send(request)?; // echo both frames back
//! assert_eq!(req.recv()?, Message::from_frames(["hello", "world"]));
//! # Ok(())
//! # }
//! ```
//!
//! A [`Context`] owns one background I/O thread (started on first use of `tcp://` or
//! `unix://`) and the `inproc://` names. A [`Socket`] is used from one thread at a time;
//! it can bind and connect any number of endpoints; [`poll()`] waits on several sockets
//! and [`proxy()`] forwards between two. Failed sends hand the message back in a
//! [`SendError`]; timeouts, high-water marks, linger and the other options follow
//! libzmq (see the setters on [`Socket`]). [`Socket::monitor`] reports connection
//! events with libzmq's names.
//!
//! Security: PLAIN and CURVE ([`Socket::set_curve_server`],
//! [`Socket::set_curve_server_key`], keys made with [`CurveKeyPair`] and written in
//! [`z85`]), checked by the ZAP handler of the context ([`Context::set_zap_handler`],
//! [`auth::Authenticator`]); the user id it gives is on each received message
//! ([`Message::user_id`]). `ipc://` peers are allowed by user or group
//! ([`Socket::set_ipc_allowed_peers`]).
//!
//! Across machines, `tcp://` takes host names and DNS service names
//! (`tcp://_orders._tcp.example.org`: SRV records, priorities and fail-over), looked up
//! on a resolver thread of the context (see [`Socket::connect`]). A context's domain
//! ([`ContextBuilder::domain`], `LWMQ_DOMAIN`) groups its `ipc://` names and what
//! `lwmq ls` shows; [`graph`] draws what [`introspect`] finds. With the `serde` feature,
//! `typed` sends and receives serde values as MessagePack, the encoding of the `lwmq`
//! tool's `--json`.
//!
//! # Async
//!
//! Every socket also sends and receives asynchronously, on any executor (tokio, smol,
//! your own): lwmq spawns no runtime and no thread per socket; a future registers its
//! task's waker on the socket's one wake-up signal. Receives and sends are
//! cancellation-safe, sockets are `futures` streams and sinks (feature `async`, on by
//! default), and monitors have [`Monitor::recv_async`]. See [`aio`].
//!
//! ```no_run
//! # async fn run() -> lwmq::Result<()> {
//! let ctx = lwmq::Context::new();
//! let rep = ctx.socket(lwmq::SocketType::Rep)?;
//! rep.bind("tcp://127.0.0.1:5555")?;
//! loop {
//!     let request = rep.recv_async().await?; // the task sleeps; no thread waits
//!     rep.send_async(request).await?;
//! }
//! # }
//! ```
//!
//! # Reliable request/reply
//!
//! A REQ can resend and fail over by itself ([`Socket::set_req_resend_interval`]), and
//! every REP de-duplicates requests that carry a request id, answering copies from a
//! [`ReplyCache`] ([`Socket::set_rep_cache_size`]). Against a libzmq REP a resending
//! REQ is *at least once*: libzmq's REP hands every copy to its application.
//!
//! ```
//! use std::time::Duration;
//! use lwmq::{Context, SocketType};
//!
//! # fn main() -> lwmq::Result<()> {
//! let ctx = Context::new();
//! let rep = ctx.socket(SocketType::Rep)?;
//! let endpoint = rep.bind("tcp://127.0.0.1:0")?;
//! let req = ctx.socket(SocketType::Req)?;
//! req.set_req_resend_interval(Some(Duration::from_millis(50)))?;
//! req.set_req_resend_attempts(10)?;
//! req.connect(&endpoint)?;
//! let server = std::thread::spawn(move || -> lwmq::Result<lwmq::ReqRepStats> {
//!     let request = rep.recv()?;
//!     std::thread::sleep(Duration::from_millis(200)); // slow: the REQ resends meanwhile
//!     rep.send(request)?;
//!     Ok(rep.reqrep_stats())
//! });
//! req.send("work")?;
//! assert_eq!(&req.recv()?.frames()[0][..], b"work");
//! // The copies never reached the application; the REQ got one reply.
//! assert!(req.reqrep_stats().resends >= 1);
//! assert!(server.join().unwrap()?.duplicates_dropped >= 1);
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

mod context;
mod error;
mod frames;
mod message;
mod monitor;
mod options;
mod pattern;
mod poll;
mod proxy;
mod reliable;
mod socket;
mod socket_type;
mod sync;
mod sys;
mod worker;

pub(crate) mod transport;

/// The shared-memory transport behind `ipc://`, usable on its own (see its docs).
pub use transport::shm;

pub mod auth;
/// Adopted descriptors (`fd://N`): a dispatcher's pairs for its workers.
pub use transport::fd;
/// Socket activation (`systemd://NAME`) and `sd_notify` readiness.
pub use transport::fd::systemd;

pub mod endpoint;
pub mod graph;
pub mod introspect;
pub mod proto;
#[cfg(feature = "serde")]
pub mod typed;

pub use bytes::Bytes;
pub use context::{Context, ContextBuilder};
pub use endpoint::Endpoint;
pub use error::{Error, Result, SendError};
pub use frames::Frames;
pub use message::{Message, PeerProperties};
pub use monitor::{EventKind, Monitor, MonitorEvent, NextEvent};
pub use options::{DEFAULT_HWM, DEFAULT_LINGER, DEFAULT_RECONNECT_INTERVAL};
pub use poll::{PollItem, poll};
pub use proto::z85;
pub use proto::{CurveKeyPair, CurvePublicKey, CurveSecretKey};
pub use proxy::proxy;
pub use reliable::{
    DEFAULT_REP_CACHE_AGE, DEFAULT_REP_CACHE_BYTES, DEFAULT_REP_CACHE_SIZE,
    DEFAULT_REQ_RESEND_ATTEMPTS, MemoryReplyCache, ReplyCache, ReqRepStats, RequestKey,
};
pub use socket::Socket;
pub use socket::aio;
pub use socket_type::SocketType;
