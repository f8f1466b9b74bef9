//! The one error type of the crate.

use std::fmt;
use std::io;

use crate::Message;

/// Everything that can go wrong in lwmq, in categories a caller can act on.
///
/// `Display` is written for a human reading a log line: it says what failed and, where
/// it can, what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An endpoint URI could not be parsed or is not allowed here.
    Endpoint {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address is already bound, by this process or another.
    AddressInUse {
        /// The endpoint that could not be bound.
        endpoint: String,
    },
    /// An option value or argument is out of range or makes no sense.
    InvalidArgument(String),
    /// The operation is not allowed in the socket's current state (for example a REQ
    /// socket sending twice without receiving the reply).
    State(String),
    /// A message is larger than what the socket or transport accepts.
    MessageTooLarge {
        /// Its size in bytes.
        size: u64,
        /// The largest size allowed.
        limit: u64,
    },
    /// The peer broke the protocol (ZMTP, or the shared-memory ring).
    Protocol(String),
    /// The peer refused us, or we refused the peer (incompatible socket types,
    /// authentication failure, a peer running as another user).
    PeerRejected(String),
    /// No route to the given routing id (ROUTER_MANDATORY).
    HostUnreachable,
    /// The operation did not complete within its timeout.
    Timeout,
    /// A REQ with resend ([`crate::Socket::set_req_resend_interval`]) gave up on a
    /// request: no reply came within its attempts, or within the receive timeout. A
    /// timeout like [`Error::Timeout`] ([`Error::is_timeout`] says true); the socket may
    /// send a new request.
    RequestTimeout {
        /// How many times the request was sent.
        attempts: u32,
        /// To how many different connections.
        peers: u32,
    },
    /// The operation would block and was asked not to.
    WouldBlock,
    /// The socket or context is closed.
    Closed,
    /// A typed message could not be encoded, or a frame did not decode as the type
    /// asked for (`lwmq::typed`, feature `serde`).
    Codec(String),
    /// An error from the operating system.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Endpoint { uri, reason } => write!(f, "invalid endpoint {uri:?}: {reason}"),
            Error::AddressInUse { endpoint } => {
                write!(
                    f,
                    "address already in use: {endpoint} is bound by another socket"
                )
            }
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::State(what) => write!(f, "operation not allowed now: {what}"),
            Error::MessageTooLarge { size, limit } => write!(
                f,
                "message of {size} bytes is larger than the limit of {limit} bytes"
            ),
            Error::Protocol(what) => write!(f, "protocol error: {what}"),
            Error::PeerRejected(what) => write!(f, "peer rejected: {what}"),
            Error::HostUnreachable => f.write_str("no peer with that routing id"),
            Error::Timeout => f.write_str("operation timed out"),
            Error::RequestTimeout { attempts, peers } => write!(
                f,
                "request timed out: no reply after {attempts} attempt{} to {peers} peer{}",
                if *attempts == 1 { "" } else { "s" },
                if *peers == 1 { "" } else { "s" }
            ),
            Error::WouldBlock => f.write_str("operation would block"),
            Error::Closed => f.write_str("socket or context is closed"),
            Error::Codec(what) => write!(f, "message encoding: {what}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl Error {
    /// Whether this is a timeout: [`Error::Timeout`] or [`Error::RequestTimeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout | Error::RequestTimeout { .. })
    }

    /// Shorthand for an [`Error::Endpoint`].
    pub(crate) fn endpoint(uri: &str, reason: impl Into<String>) -> Error {
        Error::Endpoint {
            uri: uri.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A failed send: the error, and the message handed back to the caller.
#[derive(Debug)]
pub struct SendError {
    /// Why the send failed.
    pub error: Error,
    /// The message that was not sent.
    pub message: Message,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send failed: {}", self.error)
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Error {
        e.error
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
