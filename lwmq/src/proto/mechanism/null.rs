//! The NULL mechanism (RFC 23): each side sends READY with its metadata and checks the
//! peer's. No roles, no secrets.

use super::{Handshake, HandshakeCx, Step, unexpected};
use crate::proto::ProtoError;
use crate::proto::command::Command;

/// Queues our READY and waits for the peer's; or, with
/// [`Config::await_peer_ready`](crate::proto::Config::await_peer_ready), waits for the
/// peer's first and answers a compatible one with ours.
pub(crate) fn start(cx: &mut HandshakeCx<'_>) -> Step {
    if cx.config.await_peer_ready {
        return Step::Continue(Box::new(ReadyFirst));
    }
    let md = cx.our_metadata();
    cx.send(&Command::Ready(md));
    Step::Continue(Box::new(ExpectReady))
}

/// Nothing sent yet: the peer's READY is judged before we send ours (so an incompatible
/// peer hears only our ERROR, and we learn its type even if it would hang up on ours).
#[derive(Debug)]
struct ReadyFirst;

impl Handshake for ReadyFirst {
    fn handle_command(
        self: Box<Self>,
        cmd: Command,
        cx: &mut HandshakeCx<'_>,
    ) -> Result<Step, ProtoError> {
        match cmd {
            Command::Ready(md) => {
                let peer = cx.check_peer(md, None)?;
                let ours = cx.our_metadata();
                cx.send(&Command::Ready(ours));
                Ok(Step::Done(peer))
            }
            other => Err(unexpected(&other, "READY")),
        }
    }
}

/// Our READY is sent; the peer's is due.
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
