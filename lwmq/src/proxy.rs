//! [`proxy`]: forward messages between two sockets, like `zmq_proxy`.

use crate::poll::{PollItem, poll};
use crate::{Error, Result, Socket};

/// Forwards every message from `frontend` to `backend` and back, copying each one to
/// `capture` if given (a capture that cannot take a message now drops that copy).
/// Runs until a socket fails (for example when the context is terminated), and returns
/// that error.
///
/// Typical uses: ROUTER/DEALER (a shared queue), XSUB/XPUB (a forwarder: subscriptions
/// flow back from the XPUB to the XSUB), PULL/PUSH (a streamer).
pub fn proxy(frontend: &Socket, backend: &Socket, capture: Option<&Socket>) -> Result<()> {
    loop {
        let mut items = [PollItem::readable(frontend), PollItem::readable(backend)];
        poll(&mut items, None)?;
        let (front, back) = (items[0].is_readable(), items[1].is_readable());
        if front {
            forward(frontend, backend, capture)?;
        }
        if back {
            forward(backend, frontend, capture)?;
        }
    }
}

/// How many messages one side forwards before the proxy polls again (so a busy side
/// does not starve the other, and a poll is not paid per message).
const BATCH: usize = 256;

/// Forwards what `from` has ready now, up to [`BATCH`] messages (at least one: the
/// poll said it is readable).
fn forward(from: &Socket, to: &Socket, capture: Option<&Socket>) -> Result<()> {
    for _ in 0..BATCH {
        let msg = match from.try_recv() {
            Ok(m) => m,
            Err(Error::WouldBlock) => break,
            Err(e) => return Err(e),
        };
        if let Some(c) = capture {
            let _ = c.try_send(msg.clone());
        }
        to.send(msg)?;
    }
    Ok(())
}
