//! [`proxy`]: forward messages between two sockets, like `zmq_proxy`.

use crate::poll::{PollItem, poll};
use crate::{Result, Socket};

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

fn forward(from: &Socket, to: &Socket, capture: Option<&Socket>) -> Result<()> {
    let msg = from.recv()?;
    if let Some(c) = capture {
        let _ = c.try_send(msg.clone());
    }
    to.send(msg)?;
    Ok(())
}
