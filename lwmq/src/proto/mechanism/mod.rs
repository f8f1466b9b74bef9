//! Security mechanisms: the handshake between the greetings and the first message.
//!
//! A mechanism is a chain of states (rustls style): each state is a value implementing
//! [`Handshake`] that is *consumed* by the next command (or by the owner's answer to an
//! auth request) and returns the state that follows, or the peer's identity when the
//! handshake is done, or an error that ends the connection. States queue their own
//! commands (READY, HELLO, ERROR...) through the [`HandshakeCx`] they are given.
//!
//! CURVE's states are more of the same, chosen in [`start`]: they read the raw command
//! bodies ([`Handshake::handle_body`]; CURVE's HELLO is not PLAIN's), and their last step
//! ([`Step::Secure`]) hands the connection the [`curve::Cipher`] that encrypts every frame
//! from then on.

pub(crate) mod curve;
pub(crate) mod null;
pub(crate) mod plain;

use std::fmt;
use std::time::Instant;

use bytes::Bytes;

use super::command::{Command, Metadata};
use super::transmit::Transmit;
use super::{Config, Event, MechanismConfig, PeerInfo, ProtoError};
use crate::SocketType;

/// What a handshake state may touch: our configuration, the negotiated version, the
/// transmit queue, the event queue and the time.
pub(crate) struct HandshakeCx<'a> {
    pub config: &'a Config,
    pub minor: u8,
    /// The latest time the owner gave the connection.
    pub now: Instant,
    pub out: &'a mut Transmit,
    pub events: &'a mut std::collections::VecDeque<Event>,
}

impl HandshakeCx<'_> {
    /// Queues a command.
    pub fn send(&mut self, cmd: &Command) {
        self.out.command(cmd);
    }

    /// Queues a command frame with this body (name included), already encoded.
    pub fn send_body(&mut self, body: &[u8]) {
        self.out.command_body(body);
    }

    /// Our metadata for READY / INITIATE: Socket-Type, Identity (as libzmq: always for
    /// REQ, DEALER and ROUTER, otherwise when set), Resource, then application properties.
    pub fn our_metadata(&self) -> Metadata {
        let c = self.config;
        let mut md = Metadata::default();
        md.push("Socket-Type", c.socket_type.as_str());
        if !c.identity.is_empty()
            || matches!(
                c.socket_type,
                SocketType::Req | SocketType::Dealer | SocketType::Router
            )
        {
            md.push("Identity", c.identity.clone());
        }
        if let Some(r) = &c.resource {
            md.push("Resource", Bytes::copy_from_slice(r.as_bytes()));
        }
        for (n, v) in &c.properties {
            md.push(n.clone(), v.clone());
        }
        md
    }

    /// Checks the peer's metadata and builds its [`PeerInfo`]. On an incompatible or
    /// unknown socket type, queues an ERROR naming both types and returns the error.
    pub fn check_peer(
        &mut self,
        md: Metadata,
        user_id: Option<String>,
    ) -> Result<PeerInfo, ProtoError> {
        self.check_peer_inner(md, user_id, true)
    }

    /// [`check_peer`](Self::check_peer) without the ERROR (a CURVE client sends none).
    pub fn check_peer_quietly(
        &mut self,
        md: Metadata,
        user_id: Option<String>,
    ) -> Result<PeerInfo, ProtoError> {
        self.check_peer_inner(md, user_id, false)
    }

    fn check_peer_inner(
        &mut self,
        md: Metadata,
        user_id: Option<String>,
        tell: bool,
    ) -> Result<PeerInfo, ProtoError> {
        let ours = self.config.socket_type;
        let Some(name) = md.get("Socket-Type") else {
            return Err(self.fail_if(
                tell,
                ProtoError::Malformed("the peer's metadata has no Socket-Type".into()),
            ));
        };
        let Some(theirs) = SocketType::from_name(name) else {
            let name = String::from_utf8_lossy(name).into_owned();
            if tell {
                self.send(&Command::Error(format!(
                    "socket type {ours} cannot talk to {name}"
                )));
            }
            return Err(ProtoError::Malformed(format!(
                "the peer's socket type {name:?} is unknown (socket type {ours} cannot talk to it)"
            )));
        };
        if !ours.is_compatible_with(theirs) {
            return Err(self.fail_if(tell, ProtoError::IncompatibleSocketType { ours, theirs }));
        }
        let identity = md.get("Identity").cloned().unwrap_or_default();
        if identity.len() > 255 {
            return Err(self.fail_if(
                tell,
                ProtoError::Malformed(format!(
                    "the peer's Identity is {} bytes; at most 255 are allowed",
                    identity.len()
                )),
            ));
        }
        let resource = match md.get("Resource") {
            None => None,
            Some(r) => Some(String::from_utf8(r.to_vec()).map_err(|_| {
                self.fail_if(
                    tell,
                    ProtoError::Malformed("the peer's Resource is not valid UTF-8".into()),
                )
            })?),
        };
        let properties =
            md.0.into_iter()
                .filter(|(n, _)| {
                    !["Socket-Type", "Identity", "Resource"]
                        .iter()
                        .any(|k| k.eq_ignore_ascii_case(n))
                })
                .collect();
        Ok(PeerInfo {
            socket_type: theirs,
            identity,
            resource,
            properties,
            minor_version: self.minor,
            user_id,
            curve_public_key: None,
        })
    }

    /// Queues an ERROR carrying the error's text, and returns the error.
    pub fn fail(&mut self, e: ProtoError) -> ProtoError {
        self.send(&Command::Error(e.to_string()));
        e
    }

    fn fail_if(&mut self, tell: bool, e: ProtoError) -> ProtoError {
        if tell { self.fail(e) } else { e }
    }
}

/// The result of one handshake step.
pub(crate) enum Step {
    /// Wait for the next command (or authentication answer) in this state.
    Continue(Box<dyn Handshake>),
    /// The handshake is done; this is the peer.
    Done(PeerInfo),
    /// The handshake is done and every frame from now on goes through this cipher.
    Secure(PeerInfo, Box<curve::Cipher>),
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Continue(s) => f.debug_tuple("Continue").field(s).finish(),
            Step::Done(p) => f.debug_tuple("Done").field(p).finish(),
            Step::Secure(p, c) => f.debug_tuple("Secure").field(p).field(c).finish(),
        }
    }
}

/// One state of a mechanism's handshake.
pub(crate) trait Handshake: fmt::Debug + Send {
    /// A command frame arrived from the peer: its body, name included. By default it is
    /// parsed as a ZMTP command and given to [`handle_command`](Handshake::handle_command);
    /// mechanisms with commands of their own (CURVE) read the body themselves.
    fn handle_body(
        self: Box<Self>,
        body: Bytes,
        cx: &mut HandshakeCx<'_>,
    ) -> Result<Step, ProtoError> {
        let cmd = Command::parse(body)?;
        tracing::trace!(?cmd, "handshake command");
        self.handle_command(cmd, cx)
    }

    /// A command arrived from the peer (through the default
    /// [`handle_body`](Handshake::handle_body)).
    fn handle_command(
        self: Box<Self>,
        cmd: Command,
        _cx: &mut HandshakeCx<'_>,
    ) -> Result<Step, ProtoError> {
        Err(unexpected(&cmd, "a command of this mechanism"))
    }

    /// Whether this state waits for the owner's answer to an [`Event::AuthRequest`].
    fn awaits_auth(&self) -> bool {
        false
    }

    /// The owner answered the [`Event::AuthRequest`], with the user id to record when it
    /// gave one. Only called when [`awaits_auth`](Handshake::awaits_auth) is true.
    fn authenticate(
        self: Box<Self>,
        _accept: bool,
        _user_id: Option<String>,
        _cx: &mut HandshakeCx<'_>,
    ) -> Result<Step, ProtoError> {
        Err(ProtoError::InvalidArgument(
            "internal: authenticate() in a state that asked nothing".into(),
        ))
    }
}

/// Starts the mechanism once both greetings are known: checks that the peer's mechanism
/// and role fit ours, queues our first command, and returns the first state.
pub(crate) fn start(
    peer_mechanism: &[u8],
    peer_as_server: bool,
    cx: &mut HandshakeCx<'_>,
) -> Result<Step, ProtoError> {
    let ours = cx.config.mechanism.name();
    if peer_mechanism != ours.as_bytes() {
        // No ERROR: without an agreed mechanism the peer cannot parse one (libzmq closes).
        return Err(ProtoError::Mechanism(format!(
            "we use {ours}, the peer uses {}",
            String::from_utf8_lossy(peer_mechanism)
        )));
    }
    match &cx.config.mechanism {
        MechanismConfig::Null => Ok(null::start(cx)),
        // libzmq never sets the greeting's as-server bit, so only a peer that sets it can
        // be caught as a second server here; two clients meet at HELLO (see plain.rs).
        MechanismConfig::PlainClient { username, password } => {
            Ok(plain::start_client(username.clone(), password.clone(), cx))
        }
        MechanismConfig::PlainServer => {
            if peer_as_server {
                return Err(ProtoError::Mechanism(
                    "both sides are PLAIN servers; one must be the PLAIN client".into(),
                ));
            }
            Ok(plain::start_server())
        }
        MechanismConfig::CurveClient {
            public,
            secret,
            server_public,
        } => curve::start_client(public, secret, server_public, cx),
        MechanismConfig::CurveServer { public, secret } => {
            if peer_as_server {
                return Err(ProtoError::Mechanism(
                    "both sides are CURVE servers; one must be the CURVE client".into(),
                ));
            }
            Ok(curve::start_server(public, secret))
        }
    }
}

/// The error for a command that has no place in the current handshake step.
pub(crate) fn unexpected(cmd: &Command, expected: &str) -> ProtoError {
    match cmd {
        Command::Error(reason) => ProtoError::PeerError(reason.clone()),
        other => ProtoError::Malformed(format!(
            "expected {expected}, got {}",
            String::from_utf8_lossy(other.name())
        )),
    }
}
