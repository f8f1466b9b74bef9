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
    // A direction is blocked while its destination cannot take a message now (a
    // DEALER whose peers are all gone): its source is then not read (its messages wait
    // there, under its high-water mark), and the proxy waits for the destination to be
    // writable, while the other direction goes on. (Sending anyway would block the
    // proxy in `send`, and with it the other direction: the reply a REP sent just
    // before it went away would never be forwarded.)
    let (mut to_back_blocked, mut to_front_blocked) = (false, false);
    loop {
        let mut items = [
            PollItem::new(frontend, !to_back_blocked, to_front_blocked),
            PollItem::new(backend, !to_front_blocked, to_back_blocked),
        ];
        poll(&mut items, None)?;
        let (front_in, front_out) = (items[0].is_readable(), items[0].is_writable());
        let (back_in, back_out) = (items[1].is_readable(), items[1].is_writable());
        if (to_back_blocked && back_out) || (!to_back_blocked && front_in) {
            to_back_blocked = forward(frontend, backend, capture)?;
        }
        if (to_front_blocked && front_out) || (!to_front_blocked && back_in) {
            to_front_blocked = forward(backend, frontend, capture)?;
        }
    }
}

/// How many messages one side forwards before the proxy polls again (so a busy side
/// does not starve the other, and a poll is not paid per message).
const BATCH: usize = 256;

/// Forwards what `from` has ready now, up to [`BATCH`] messages, each only once `to`
/// can take it. Returns whether `to` could not (the direction is blocked).
fn forward(from: &Socket, to: &Socket, capture: Option<&Socket>) -> Result<bool> {
    for _ in 0..BATCH {
        if !to.poll_writable() {
            return Ok(true);
        }
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
    Ok(false)
}
