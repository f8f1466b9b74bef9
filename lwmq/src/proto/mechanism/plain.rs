//! The PLAIN mechanism (RFC 24): user name and password in clear text.
//!
//! ```text
//!  client                         server
//!  HELLO(username, password)  ──>        ExpectHello: emits Event::AuthRequest
//!                                        AwaitAuth: owner calls authenticate(accept)
//!                             <──  WELCOME                 (or ERROR "400" and fail)
//!  INITIATE(metadata)         ──>        ExpectInitiate: checks socket types
//!                             <──  READY(metadata)         (or ERROR naming both types)
//! ```
//!
//! The server's rejection reason is libzmq's ZAP status code `"400"`. We send ERROR as
//! RFC 23 spells it; libzmq (4.3.5 and master) spells the PLAIN ERROR name `^RROR` (a C
//! escape slip, see `command::LIBZMQ_PLAIN_ERROR`), so a libzmq client reports our
//! rejection as a protocol failure (unexpected command) rather than an authentication
//! failure, and disconnects all the same. We accept both spellings.
//!
//! libzmq never sets the greeting's as-server bit, so roles are not checked there; two
//! clients are caught when one receives the other's HELLO.

use super::{Handshake, HandshakeCx, Step, unexpected};
use crate::proto::command::Command;
use crate::proto::{Event, ProtoError};

/// The ERROR reason sent when credentials are rejected (ZAP status code, as libzmq).
pub(crate) const REJECTED: &str = "400";

/// Client: queues HELLO, waits for WELCOME.
pub(crate) fn start_client(username: String, password: String, cx: &mut HandshakeCx<'_>) -> Step {
    cx.send(&Command::Hello { username, password });
    Step::Continue(Box::new(ExpectWelcome))
}

/// Server: waits for HELLO.
pub(crate) fn start_server() -> Step {
    Step::Continue(Box::new(ExpectHello))
}

/// Client: HELLO sent.
#[derive(Debug)]
struct ExpectWelcome;

impl Handshake for ExpectWelcome {
    fn handle_command(
        self: Box<Self>,
        cmd: Command,
        cx: &mut HandshakeCx<'_>,
    ) -> Result<Step, ProtoError> {
        match cmd {
            Command::Welcome => {
                let md = cx.our_metadata();
                cx.send(&Command::Initiate(md));
                Ok(Step::Continue(Box::new(ExpectReady)))
            }
            Command::Error(reason) => Err(ProtoError::AuthFailed(if reason == REJECTED {
                "the server rejected our PLAIN credentials (status 400)".into()
            } else {
                format!("the server refused our PLAIN HELLO: {reason}")
            })),
            Command::Hello { .. } => Err(ProtoError::Mechanism(
                "both sides are PLAIN clients; one must be the PLAIN server".into(),
            )),
            other => Err(unexpected(&other, "WELCOME")),
        }
    }
}

/// Client: INITIATE sent.
#[derive(Debug)]
struct ExpectReady;

impl Handshake for ExpectReady {
    fn handle_command(
        self: Box<Self>,
        cmd: Command,
        cx: &mut HandshakeCx<'_>,
    ) -> Result<Step, ProtoError> {
        match cmd {
            Command::Ready(md) => Ok(Step::Done(cx.check_peer(md, None)?)),
            other => Err(unexpected(&other, "READY")),
        }
    }
}

/// Server: waiting for the client's credentials.
#[derive(Debug)]
struct ExpectHello;

impl Handshake for ExpectHello {
    fn handle_command(
        self: Box<Self>,
        cmd: Command,
        cx: &mut HandshakeCx<'_>,
    ) -> Result<Step, ProtoError> {
        match cmd {
            Command::Hello { username, password } => {
                cx.events.push_back(Event::AuthRequest {
                    username: username.clone(),
                    password,
                    curve_public_key: None,
                });
                Ok(Step::Continue(Box::new(AwaitAuth { username })))
            }
            other => Err(unexpected(&other, "HELLO")),
        }
    }
}

/// Server: the owner has an AuthRequest to answer; the client waits for WELCOME.
struct AwaitAuth {
    username: String,
}

impl std::fmt::Debug for AwaitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwaitAuth")
            .field("username", &self.username)
            .finish()
    }
}

impl Handshake for AwaitAuth {
    fn handle_command(
        self: Box<Self>,
        cmd: Command,
        _cx: &mut HandshakeCx<'_>,
    ) -> Result<Step, ProtoError> {
        Err(unexpected(&cmd, "nothing until WELCOME"))
    }

    fn awaits_auth(&self) -> bool {
        true
    }

    fn authenticate(
        self: Box<Self>,
        accept: bool,
        user_id: Option<String>,
        cx: &mut HandshakeCx<'_>,
    ) -> Result<Step, ProtoError> {
        if accept {
            cx.send(&Command::Welcome);
            Ok(Step::Continue(Box::new(ExpectInitiate {
                user_id: user_id.unwrap_or(self.username),
            })))
        } else {
            cx.send(&Command::Error(REJECTED.into()));
            Err(ProtoError::AuthFailed(format!(
                "PLAIN credentials of user {:?} rejected",
                self.username
            )))
        }
    }
}

/// Server: WELCOME sent, the client's metadata is due.
#[derive(Debug)]
struct ExpectInitiate {
    /// The user id to record: the owner's, or else the PLAIN user name.
    user_id: String,
}

impl Handshake for ExpectInitiate {
    fn handle_command(
        self: Box<Self>,
        cmd: Command,
        cx: &mut HandshakeCx<'_>,
    ) -> Result<Step, ProtoError> {
        match cmd {
            Command::Initiate(md) => {
                let peer = cx.check_peer(md, Some(self.user_id))?;
                let ours = cx.our_metadata();
                cx.send(&Command::Ready(ours));
                Ok(Step::Done(peer))
            }
            other => Err(unexpected(&other, "INITIATE")),
        }
    }
}
