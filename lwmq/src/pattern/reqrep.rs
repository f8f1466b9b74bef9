//! REQ and REP: the strict request/reply state machines over a DEALER-like and a
//! ROUTER-like core.
//!
//! Wire format, as libzmq: a REQ prefixes each request with an empty delimiter frame;
//! with REQ_CORRELATE it puts a 4-byte request id frame (the id's bytes in host order,
//! as libzmq copies its `uint32_t`) before the delimiter and drops any reply whose id
//! differs. A REP strips everything up to and including the first empty frame (the
//! envelope, which a ROUTER in between may have extended), and puts it back in front of
//! the reply.

use bytes::Bytes;

use super::{Pattern, PatternOptions, PipeId, Pipes, check_not_empty, split_envelope};
use crate::message::FrameVec;
use crate::transport::{Pipe, WriteError};
use crate::{Error, Message, Result, SendError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqState {
    /// May send a request.
    Ready,
    /// Waiting for the reply to the request sent on `pipe` with `id`.
    Waiting { pipe: PipeId, id: u32 },
}

/// REQ: send, receive, send, receive...
#[derive(Debug)]
pub(crate) struct Req {
    pipes: Pipes,
    state: ReqState,
    next_id: u32,
    correlate: bool,
    relaxed: bool,
}

impl Default for Req {
    fn default() -> Self {
        Req {
            pipes: Pipes::default(),
            state: ReqState::Ready,
            next_id: super::simple::seed(),
            correlate: false,
            relaxed: false,
        }
    }
}

impl Pattern for Req {
    fn attach(&mut self, id: PipeId, pipe: Pipe) {
        self.pipes.add(id, pipe);
    }
    fn detach(&mut self, id: PipeId) {
        self.pipes.remove(id);
    }
    fn configure(&mut self, opts: &PatternOptions) {
        self.correlate = opts.req_correlate;
        self.relaxed = opts.req_relaxed;
    }
    fn send(&mut self, msg: Message) -> Result<(), SendError> {
        if matches!(self.state, ReqState::Waiting { .. }) && !self.relaxed {
            return Err(SendError {
                error: Error::State(
                    "a REQ socket must receive the reply before sending again (or set req_relaxed)"
                        .into(),
                ),
                message: msg,
            });
        }
        let msg = check_not_empty(msg)?;
        let id = self.next_id.wrapping_add(1);
        let mut wire = msg;
        wire.push_front(Bytes::new());
        if self.correlate {
            wire.push_front(Bytes::copy_from_slice(&id.to_ne_bytes()));
        }
        match self.pipes.write_balanced(wire) {
            Ok(pipe) => {
                self.next_id = id;
                self.state = ReqState::Waiting { pipe, id };
                Ok(())
            }
            Err(mut back) => {
                back.message.pop_front();
                if self.correlate {
                    back.message.pop_front();
                }
                Err(back)
            }
        }
    }
    fn recv(&mut self) -> Result<Message> {
        let ReqState::Waiting { pipe, id } = self.state else {
            return Err(Error::State(
                "a REQ socket must send a request before receiving".into(),
            ));
        };
        loop {
            let Some((from, msg)) = self.pipes.read_fair() else {
                return Err(Error::WouldBlock);
            };
            if from != pipe {
                tracing::trace!("REQ drops a message from a pipe it did not ask");
                continue;
            }
            // The envelope comes off in place; the body frames are not copied.
            let mut msg = msg;
            if self.correlate {
                match msg.pop_front() {
                    Some(f) if f.as_ref() == id.to_ne_bytes() => {}
                    _ => {
                        tracing::trace!("REQ drops a reply with a wrong request id");
                        continue;
                    }
                }
            }
            match msg.pop_front() {
                Some(f) if f.is_empty() => {}
                _ => {
                    tracing::trace!("REQ drops a reply without an empty delimiter");
                    continue;
                }
            }
            self.state = ReqState::Ready;
            return Ok(msg);
        }
    }
    fn can_send(&mut self) -> bool {
        (self.state == ReqState::Ready || self.relaxed) && self.pipes.any_writable()
    }
}

/// REP: receive, send, receive...
#[derive(Debug, Default)]
pub(crate) struct Rep {
    pipes: Pipes,
    /// The pipe and envelope of the request being answered.
    replying: Option<(PipeId, FrameVec)>,
}

impl Pattern for Rep {
    fn attach(&mut self, id: PipeId, pipe: Pipe) {
        self.pipes.add(id, pipe);
    }
    fn detach(&mut self, id: PipeId) {
        self.pipes.remove(id);
    }
    fn send(&mut self, msg: Message) -> Result<(), SendError> {
        let Some((pipe, envelope)) = self.replying.take() else {
            return Err(SendError {
                error: Error::State("a REP socket must receive a request before replying".into()),
                message: msg,
            });
        };
        let envelope_len = envelope.len();
        let mut frames = envelope;
        frames.extend(msg);
        match self.pipes.write_to(pipe, Message::from(frames)) {
            Ok(()) => {}
            // As libzmq: a reply to a peer that is gone or not reading is dropped.
            Err(WriteError::Full(_)) | Err(WriteError::Closed(_)) => {
                tracing::debug!("REP drops a reply: the requester is gone or full");
            }
            // A reply that can never go: the send fails, and the reply may be sent
            // again (smaller).
            Err(WriteError::Unsendable(mut m, error)) => {
                let mut envelope = FrameVec::with_capacity(envelope_len);
                for _ in 0..envelope_len {
                    envelope.extend(m.pop_front());
                }
                self.replying = Some((pipe, envelope));
                return Err(SendError { error, message: m });
            }
        }
        Ok(())
    }
    fn recv(&mut self) -> Result<Message> {
        if self.replying.is_some() {
            return Err(Error::State(
                "a REP socket must send the reply before receiving again".into(),
            ));
        }
        loop {
            let Some((pipe, msg)) = self.pipes.read_fair() else {
                return Err(Error::WouldBlock);
            };
            match split_envelope(msg) {
                Some((envelope, body)) => {
                    self.replying = Some((pipe, envelope));
                    return Ok(body);
                }
                None => tracing::trace!("REP drops a request without an empty delimiter"),
            }
        }
    }
    fn can_send(&mut self) -> bool {
        self.replying.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn req_envelope_state_and_correlation() {
        let mut r = Req::default();
        let (p, mut rep) = pipe(0, b"");
        r.attach(1, p);
        assert!(matches!(r.recv(), Err(Error::State(_))));
        r.send(msg(&[b"q"])).unwrap();
        assert_eq!(rep.read().unwrap(), msg(&[b"", b"q"]));
        let e = r.send(msg(&[b"again"])).unwrap_err();
        assert!(matches!(e.error, Error::State(_)));
        assert_eq!(e.message, msg(&[b"again"]));
        rep.write(msg(&[b"no delimiter"]));
        rep.write(msg(&[b"", b"a", b""]));
        assert_eq!(r.recv().unwrap(), msg(&[b"a", b""]));

        r.configure(&PatternOptions {
            req_correlate: true,
            req_relaxed: true,
            ..Default::default()
        });
        r.send(msg(&[b"1"])).unwrap();
        let first = rep.read().unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(first.frames()[0].len(), 4, "a 4-byte request id frame");
        assert!(first.frames()[1].is_empty());
        r.send(msg(&[b"2"])).unwrap(); // relaxed: a new request replaces the old one
        let second = rep.read().unwrap();
        assert_ne!(first.frames()[0], second.frames()[0]);
        // The stale reply is dropped; the current one comes through.
        rep.write(Message::from(vec![
            first.frames()[0].clone(),
            Bytes::new(),
            Bytes::from("old"),
        ]));
        rep.write(Message::from(vec![
            second.frames()[0].clone(),
            Bytes::new(),
            Bytes::from("new"),
        ]));
        assert_eq!(r.recv().unwrap(), msg(&[b"new"]));
    }

    #[test]
    fn req_without_peer_would_block_and_returns_message() {
        let mut r = Req::default();
        let e = r.send(msg(&[b"q", b"r"])).unwrap_err();
        assert!(matches!(e.error, Error::WouldBlock));
        assert_eq!(e.message, msg(&[b"q", b"r"]));
        r.send(msg(&[b"q"])).unwrap_err();
        let (p, _rep) = pipe(0, b"");
        r.attach(1, p);
        r.send(msg(&[b"q"])).unwrap();
    }

    #[test]
    fn rep_keeps_the_envelope_and_answers_the_right_pipe() {
        let mut r = Rep::default();
        let (p1, mut a) = pipe(0, b"");
        let (p2, mut b) = pipe(0, b"");
        r.attach(1, p1);
        r.attach(2, p2);
        assert!(matches!(
            r.send(msg(&[b"x"])).unwrap_err().error,
            Error::State(_)
        ));
        a.write(msg(&[b"hop2", b"hop1", b"", b"req-a"]));
        b.write(msg(&[b"", b"req-b"]));
        assert_eq!(r.recv().unwrap(), msg(&[b"req-a"]));
        assert!(matches!(r.recv(), Err(Error::State(_))));
        r.send(msg(&[b"rep-a"])).unwrap();
        assert_eq!(r.recv().unwrap(), msg(&[b"req-b"]));
        r.send(msg(&[b"rep-b", b"2"])).unwrap();
        assert_eq!(a.read().unwrap(), msg(&[b"hop2", b"hop1", b"", b"rep-a"]));
        assert_eq!(b.read().unwrap(), msg(&[b"", b"rep-b", b"2"]));
    }
}
