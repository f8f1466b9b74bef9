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
#![deny(unsafe_op_in_unsafe_fn)]

mod context;
mod error;
mod io_thread;
mod message;
mod monitor;
mod options;
mod pattern;
mod poll;
mod proxy;
mod socket;
mod socket_type;

pub mod transport;

pub mod endpoint;
pub mod proto;

pub use bytes::Bytes;
pub use context::Context;
pub use endpoint::Endpoint;
pub use error::{Error, Result, SendError};
pub use message::Message;
pub use monitor::{EventKind, Monitor, MonitorEvent};
pub use options::{DEFAULT_HWM, DEFAULT_LINGER, DEFAULT_RECONNECT_INTERVAL};
pub use poll::{PollItem, poll};
pub use proxy::proxy;
pub use socket::Socket;
pub use socket_type::SocketType;
