//! The NULL mechanism (RFC 23): each side sends READY with its metadata and checks the
//! peer's. No roles, no secrets.

use super::{Handshake, HandshakeCx, Step, unexpected};
use crate::proto::ProtoError;
use crate::proto::command::Command;

/// Queues our READY and waits for the peer's.
pub(crate) fn start(cx: &mut HandshakeCx<'_>) -> Step {
    let md = cx.our_metadata();
    cx.send(&Command::Ready(md));
    Step::Continue(Box::new(ExpectReady))
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
