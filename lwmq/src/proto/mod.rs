//! ZMTP 3.1 (RFC 37) with downgrade to 3.0 (RFC 23), as a sans-IO state machine.
//!
//! This module turns a byte stream into ZMTP events and messages into bytes, and nothing
//! else: it owns no socket, reads no clock and spawns nothing. The owner (the I/O thread
//! of a stream transport, or a test) moves bytes and time in and out of a [`Connection`].
//! It is the shape of `quinn-proto`: `handle_*` feeds input, `poll_*` drains output.
//!
//! # Driving a connection
//!
//! ```text
//!   Connection::new(config, now)          // our greeting (signature + major) is queued
//!   loop {
//!       1. handle_input(bytes, now)       // whatever the stream gave, any split
//!          handle_timeout(now)            // when poll_timeout() has passed
//!          send(msg) / authenticate(ok)   // the owner's own actions
//!       2. while let Some(b) = poll_transmit()  { write all of b to the stream }
//!       3. while let Some(e) = poll_event()     { act on e }
//!       4. sleep until readable / writable / poll_timeout()
//!   }
//! ```
//!
//! Poll transmit before events: [`Event::Closed`] is only handed out once every final
//! byte (an ERROR command telling the peer why) has been taken by `poll_transmit`, so an
//! owner that closes the stream on `Closed` never cuts the explanation off (after a
//! heartbeat timeout the queue is dropped instead: the peer is presumed dead). After a
//! fatal error [`Connection::is_closed`] is true at once; input is then ignored.
//!
//! There is no handshake timeout here: an owner that wants one closes the stream when
//! [`Connection::is_ready`] has not turned true in time.
//!
//! # States
//!
//! ```text
//!            new()
//!              │  queue signature + major version (11 bytes)
//!              ▼
//!        ┌──────────┐  peer's byte 10 (major) seen: queue the rest of our greeting
//!        │ Greeting │  peer's 64 bytes seen: versions + mechanism checked
//!        └────┬─────┘
//!             │ mechanism::start()  (NULL: send READY; PLAIN or CURVE client: send HELLO)
//!             ▼
//!        ┌───────────┐  one state object per step, consumed by each command:
//!        │ Handshake │   NULL:         ExpectReady
//!        └────┬──────┘   PLAIN client: ExpectWelcome → ExpectReady
//!             │          PLAIN server: ExpectHello → (AuthRequest) AwaitAuth → ExpectInitiate
//!             │          CURVE client: ExpectWelcome → ExpectReady
//!             │          CURVE server: ExpectHello → ExpectInitiate → (AuthRequest) AwaitAuth
//!             │ peer metadata checked (socket types) → HandshakeSucceeded
//!             ▼
//!        ┌─────────┐  messages, SUBSCRIBE/CANCEL, PING/PONG, heartbeat timers
//!        │  Ready  │  (CURVE: every frame in and out goes through the cipher)
//!        └────┬────┘
//!             ▼   any fatal error, from any state (sticks; Closed(error) is the last event)
//!        ┌─────────┐
//!        │ Closed  │
//!        └─────────┘
//! ```
//!
//! Messages given to [`Connection::send`] (and subscriptions) before the handshake has
//! finished are held and written, in order, as soon as it has.
//!
//! # Compatibility notes (libzmq 4.3 is the reference)
//!
//! - The greeting goes out in stages as libzmq does: signature and major version at once,
//!   the rest once the peer's major version is known. We never wait for the peer's 64
//!   bytes before sending ours. Peers older than ZMTP 3.0 are refused.
//! - With a ZMTP 3.0 peer, subscriptions travel as data frames prefixed 0x01 (subscribe)
//!   or 0x00 (cancel); with 3.1 as SUBSCRIBE/CANCEL commands. Both forms are accepted.
//! - The maximum message size applies per frame, as libzmq's `ZMQ_MAXMSGSIZE` does, and
//!   is checked from the frame header, before any byte of the body is buffered. It counts
//!   the payload of a CURVE MESSAGE, not the box around it; handshake commands may be up
//!   to 64 KiB whatever the limit (libzmq applies its limit to them too, so a libzmq CURVE
//!   socket with a limit under 257 bytes cannot finish a handshake).
//! - PLAIN rejection sends ERROR with reason `"400"` (libzmq's ZAP status code). libzmq
//!   spells the name of its PLAIN ERROR `^RROR` (0x5E "RROR", a C escape slip in its
//!   source); we accept that spelling but send the RFC's, so a libzmq 4.3 client reports
//!   our rejection as a protocol failure instead of an authentication failure (it
//!   disconnects all the same).
//! - libzmq never sets the greeting's as-server bit, so PLAIN roles are not checked from
//!   the greeting (except two servers that both set it).
//! - A command (a PING from libzmq's heartbeat timer, say) between the frames of a
//!   multipart message is accepted.
//! - libzmq attaches a bound socket's new connection (and sends a SUB's subscriptions on
//!   it) only when its application thread next calls into the socket.
//!
//! # CURVE
//!
//! Mechanisms are `Handshake` state objects (private module `mechanism`) that the
//! connection drives with commands; CURVE (RFC 26) is a third set of states, configured
//! with [`MechanismConfig::CurveClient`] or [`MechanismConfig::CurveServer`] and keys
//! made with [`CurveKeyPair`] (written in [`z85`]). Its last handshake step hands the
//! connection a frame cipher: from then on every frame, data or command (PING, PONG,
//! SUBSCRIBE...), travels encrypted in a MESSAGE command, with short nonces that only
//! ever go up. The server asks its owner about the client's long-term key with the same
//! [`Event::AuthRequest`] as PLAIN (its `curve_public_key` set), answered with
//! [`Connection::authenticate`] or [`Connection::accept_as`]. A box that does not open, a
//! replayed nonce or a command out of order is a fatal [`ProtoError`].

pub mod command;
pub mod frame;
pub mod greeting;
mod mechanism;
pub mod z85;

mod connection;
mod heartbeat;
pub mod resource;
mod transmit;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::{Message, SocketType};

pub use connection::Connection;
pub use mechanism::curve::{COOKIE_LIFETIME, CurveKeyPair, CurvePublicKey, CurveSecretKey};

/// How a [`Connection`] presents itself and what it accepts.
#[derive(Clone)]
pub struct Config {
    /// Our socket type, sent as `Socket-Type` and checked against the peer's.
    pub socket_type: SocketType,
    /// The routing id to announce (`Identity`); empty means none. At most 255 bytes.
    pub identity: Bytes,
    /// Sent as `Resource` in READY when `Some` (the connecting side names the socket it
    /// wants on a shared port).
    pub resource: Option<String>,
    /// Extra application properties (names should start with `X-`), sent in READY.
    pub properties: Vec<(String, Bytes)>,
    /// The security mechanism and our role in it.
    pub mechanism: MechanismConfig,
    /// Largest frame accepted from the peer, in bytes; `None` is unlimited.
    pub max_msg_size: Option<u64>,
    /// Send a PING this often once the handshake is done; `None` sends none.
    pub heartbeat_interval: Option<Duration>,
    /// The time-to-live advertised in our PINGs (the peer may drop us after that long
    /// without traffic). Sent in deciseconds; longer values are capped at 6553.5 s.
    pub heartbeat_ttl: Option<Duration>,
    /// After a PING of ours, how long to wait for any traffic before giving up on the
    /// peer. Defaults to the interval.
    pub heartbeat_timeout: Option<Duration>,
    /// Our greeting was already written by someone else (a
    /// [`resource::ResourcePeek`] on a shared port): the connection starts by reading
    /// the peer's and sends none of its own.
    pub greeting_sent: bool,
    /// NULL mechanism: send our READY only once the peer's READY has arrived and its
    /// Socket-Type was found compatible (default: send it at once, as libzmq does).
    ///
    /// A libzmq peer that finds our type incompatible closes the connection without an
    /// ERROR, usually before its own READY is out, so we never learn its type. Waiting
    /// for its READY first lets us judge it and name both types. Set it on one side of a
    /// connection only (the connecting one): if both sides wait, neither ever sends.
    pub await_peer_ready: bool,
}

impl Config {
    /// A configuration for a socket of type `socket_type`: mechanism NULL, no identity,
    /// no resource, no size limit, no heartbeats.
    pub fn new(socket_type: SocketType) -> Config {
        Config {
            socket_type,
            identity: Bytes::new(),
            resource: None,
            properties: Vec::new(),
            mechanism: MechanismConfig::Null,
            max_msg_size: None,
            heartbeat_interval: None,
            heartbeat_ttl: None,
            heartbeat_timeout: None,
            greeting_sent: false,
            await_peer_ready: false,
        }
    }

    /// Checks what we would send: property names (1..=255 bytes of `A-Za-z0-9-_.+`),
    /// identity (at most 255 bytes), resource, PLAIN credentials (at most 255 bytes each),
    /// CURVE keys (the public key must be the secret key's).
    pub fn validate(&self) -> Result<(), ProtoError> {
        let bad = |what: String| Err(ProtoError::InvalidArgument(what));
        if self.identity.len() > 255 {
            return bad(format!(
                "identity is {} bytes; at most 255 are allowed",
                self.identity.len()
            ));
        }
        if let Some(r) = &self.resource {
            if r.len() > 255 {
                return bad(format!(
                    "resource is {} bytes; at most 255 are allowed",
                    r.len()
                ));
            }
        }
        for (name, value) in &self.properties {
            command::check_property_name(name.as_bytes())
                .map_err(|e| ProtoError::InvalidArgument(format!("property {name:?}: {e}")))?;
            if value.len() > u32::MAX as usize {
                return bad(format!("property {name:?}: value longer than 2^32-1 bytes"));
            }
            if ["socket-type", "identity", "resource", "user-id"]
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name))
            {
                return bad(format!(
                    "property {name:?} is reserved; set it through its own field"
                ));
            }
        }
        if let MechanismConfig::PlainClient { username, password } = &self.mechanism {
            if username.len() > 255 || password.len() > 255 {
                return bad("PLAIN username and password are limited to 255 bytes each".into());
            }
        }
        if let MechanismConfig::CurveClient { public, secret, .. }
        | MechanismConfig::CurveServer { public, secret } = &self.mechanism
        {
            if secret.public_key() != *public {
                return bad(format!(
                    "the CURVE public key {public} is not the public key of the secret key given (that is {})",
                    secret.public_key()
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("socket_type", &self.socket_type)
            .field("identity", &self.identity)
            .field("resource", &self.resource)
            .field("properties", &self.properties)
            .field("mechanism", &self.mechanism)
            .field("max_msg_size", &self.max_msg_size)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_ttl", &self.heartbeat_ttl)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("await_peer_ready", &self.await_peer_ready)
            .finish()
    }
}

/// The security mechanism of a connection, and our role in it.
#[derive(Clone, PartialEq, Eq)]
pub enum MechanismConfig {
    /// No security (RFC 23).
    Null,
    /// PLAIN (RFC 24), client side: sends these credentials in HELLO.
    PlainClient {
        /// The user name.
        username: String,
        /// The password, sent in clear text.
        password: String,
    },
    /// PLAIN, server side: every HELLO becomes an [`Event::AuthRequest`] that the owner
    /// answers with [`Connection::authenticate`].
    PlainServer,
    /// CURVE (RFC 26), client side: our long-term key pair, and the server's public key,
    /// which must be known in advance.
    CurveClient {
        /// Our long-term public key (must be `secret`'s).
        public: CurvePublicKey,
        /// Our long-term secret key.
        secret: CurveSecretKey,
        /// The server's long-term public key.
        server_public: CurvePublicKey,
    },
    /// CURVE, server side: our long-term key pair. Every client that proves it holds a
    /// key pair becomes an [`Event::AuthRequest`] with that public key, answered with
    /// [`Connection::authenticate`] or [`Connection::accept_as`].
    CurveServer {
        /// Our long-term public key (must be `secret`'s).
        public: CurvePublicKey,
        /// Our long-term secret key.
        secret: CurveSecretKey,
    },
}

impl MechanismConfig {
    /// The mechanism name as it appears in the greeting.
    pub fn name(&self) -> &'static str {
        match self {
            MechanismConfig::Null => "NULL",
            MechanismConfig::PlainClient { .. } | MechanismConfig::PlainServer => "PLAIN",
            MechanismConfig::CurveClient { .. } | MechanismConfig::CurveServer { .. } => "CURVE",
        }
    }

    /// Whether we are the server of the mechanism (the greeting's `as-server` bit).
    pub fn as_server(&self) -> bool {
        matches!(
            self,
            MechanismConfig::PlainServer | MechanismConfig::CurveServer { .. }
        )
    }
}

impl fmt::Debug for MechanismConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MechanismConfig::Null => f.write_str("Null"),
            MechanismConfig::PlainClient { username, .. } => f
                .debug_struct("PlainClient")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            MechanismConfig::PlainServer => f.write_str("PlainServer"),
            MechanismConfig::CurveClient {
                public,
                server_public,
                ..
            } => f
                .debug_struct("CurveClient")
                .field("public", public)
                .field("secret", &"<redacted>")
                .field("server_public", server_public)
                .finish(),
            MechanismConfig::CurveServer { public, .. } => f
                .debug_struct("CurveServer")
                .field("public", public)
                .field("secret", &"<redacted>")
                .finish(),
        }
    }
}

/// What the peer told us about itself during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's socket type (already checked compatible with ours).
    pub socket_type: SocketType,
    /// The peer's routing id (`Identity`); empty if it sent none.
    pub identity: Bytes,
    /// The resource the peer asked for (`Resource`), if any.
    pub resource: Option<String>,
    /// Every other property, as sent (names keep the peer's spelling).
    pub properties: Vec<(String, Bytes)>,
    /// The ZMTP minor version spoken on this connection: 0 (3.0) or 1 (3.1).
    pub minor_version: u8,
    /// Server side: the user id the owner gave ([`Connection::accept_as`]), or else the
    /// PLAIN user name, or the Z85 text of the CURVE client key (pyzmq's default).
    pub user_id: Option<String>,
    /// CURVE: the peer's long-term public key (server side: the key the client proved it
    /// holds; client side: the server key we were given, which the server proved).
    pub curve_public_key: Option<CurvePublicKey>,
}

impl PeerInfo {
    /// The value of property `name` (case-insensitive), among the extra properties.
    pub fn property(&self, name: &str) -> Option<&Bytes> {
        self.properties
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Something the owner of a [`Connection`] must know about or act on.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake is done; messages may flow.
    HandshakeSucceeded(PeerInfo),
    /// A complete multipart message from the peer.
    Message(Message),
    /// The peer subscribed to a topic prefix (a SUBSCRIBE command, or a 0x01 data frame).
    /// Only surfaced when we are PUB or XPUB; for other types a 0x01 frame is data.
    Subscribe(Bytes),
    /// The peer cancelled a subscription (a CANCEL command, or a 0x00 data frame).
    Cancel(Bytes),
    /// PLAIN or CURVE server: a client presented these credentials; answer with
    /// [`Connection::authenticate`] (or [`Connection::accept_as`] to record a user id).
    AuthRequest {
        /// PLAIN: the user name. CURVE: the client's public key in Z85 (40 characters).
        username: String,
        /// PLAIN: the password. CURVE: empty.
        password: String,
        /// CURVE: the client's long-term public key, which it has proved it holds (the
        /// credential a ZAP handler checks). `None` for PLAIN.
        curve_public_key: Option<CurvePublicKey>,
    },
    /// The connection is over, for this reason. It is the last event.
    Closed(ProtoError),
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::HandshakeSucceeded(p) => f.debug_tuple("HandshakeSucceeded").field(p).finish(),
            Event::Message(m) => f.debug_tuple("Message").field(m).finish(),
            Event::Subscribe(t) => f.debug_tuple("Subscribe").field(t).finish(),
            Event::Cancel(t) => f.debug_tuple("Cancel").field(t).finish(),
            Event::AuthRequest {
                username,
                curve_public_key,
                ..
            } => f
                .debug_struct("AuthRequest")
                .field("username", username)
                .field("password", &"<redacted>")
                .field("curve_public_key", curve_public_key)
                .finish(),
            Event::Closed(e) => f.debug_tuple("Closed").field(e).finish(),
        }
    }
}

/// Why a connection failed. Every variant is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// The peer's socket type cannot talk to ours.
    IncompatibleSocketType {
        /// Our socket type.
        ours: SocketType,
        /// The peer's.
        theirs: SocketType,
    },
    /// The peer speaks a ZMTP version older than 3.0.
    UnsupportedVersion {
        /// The peer's major version (1 for the unversioned ZMTP 1.0).
        major: u8,
        /// The peer's minor version.
        minor: u8,
    },
    /// The security mechanisms do not match (names, or roles).
    Mechanism(String),
    /// PLAIN or CURVE authentication failed: we rejected the peer, or it rejected us
    /// (its reason is included).
    AuthFailed(String),
    /// CURVE: a box did not open (tampering, forgery, or a wrong key), a nonce was
    /// replayed or out of order, or a cookie expired.
    Crypto(String),
    /// The peer sent an ERROR command; its reason.
    PeerError(String),
    /// The peer announced a frame larger than our maximum message size.
    MessageTooLarge {
        /// The announced size.
        size: u64,
        /// Our limit.
        limit: u64,
    },
    /// The peer broke the protocol.
    Malformed(String),
    /// Nothing was received from the peer in time (heartbeat timeout or the peer's TTL).
    HeartbeatTimeout,
    /// Our [`Config`] cannot be sent (bad property name, identity too long...).
    InvalidArgument(String),
    /// We closed the connection ([`Connection::close`]); the reason given.
    Closed(String),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::IncompatibleSocketType { ours, theirs } => {
                write!(f, "socket type {ours} cannot talk to {theirs}")
            }
            ProtoError::UnsupportedVersion { major, minor } => write!(
                f,
                "peer speaks ZMTP {major}.{minor}; ZMTP 3.0 or later is required (libzmq 4.0 or newer)"
            ),
            ProtoError::Mechanism(what) => write!(f, "security mechanism mismatch: {what}"),
            ProtoError::AuthFailed(what) => write!(f, "authentication failed: {what}"),
            ProtoError::Crypto(what) => write!(f, "CURVE security failure: {what}"),
            ProtoError::PeerError(reason) => write!(f, "peer closed the connection: {reason}"),
            ProtoError::MessageTooLarge { size, limit } => write!(
                f,
                "peer sent a frame of {size} bytes; the maximum message size is {limit} bytes"
            ),
            ProtoError::Malformed(what) => write!(f, "malformed ZMTP from peer: {what}"),
            ProtoError::HeartbeatTimeout => {
                f.write_str("heartbeat timeout: nothing received from the peer in time")
            }
            ProtoError::InvalidArgument(what) => write!(f, "invalid connection settings: {what}"),
            ProtoError::Closed(reason) => write!(f, "connection closed: {reason}"),
        }
    }
}

impl std::error::Error for ProtoError {}

impl From<ProtoError> for crate::Error {
    fn from(e: ProtoError) -> crate::Error {
        match e {
            ProtoError::IncompatibleSocketType { .. }
            | ProtoError::AuthFailed(_)
            | ProtoError::Mechanism(_)
            | ProtoError::PeerError(_) => crate::Error::PeerRejected(e.to_string()),
            ProtoError::UnsupportedVersion { .. }
            | ProtoError::Malformed(_)
            | ProtoError::Crypto(_)
            | ProtoError::HeartbeatTimeout => crate::Error::Protocol(e.to_string()),
            ProtoError::MessageTooLarge { size, limit } => {
                crate::Error::MessageTooLarge { size, limit }
            }
            ProtoError::InvalidArgument(what) => crate::Error::InvalidArgument(what),
            ProtoError::Closed(_) => crate::Error::Closed,
        }
    }
}
