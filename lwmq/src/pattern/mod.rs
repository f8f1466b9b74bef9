//! Routing per socket type, without I/O: which pipe a message goes to, which pipe the
//! next message is read from, and what envelope is added or removed on the way.
//!
//! A pattern owns the socket's pipes ([`crate::transport::Pipe`]) and is driven by the
//! socket's user thread only. It never blocks: when it cannot go on now it returns
//! [`Error::WouldBlock`] and the socket waits on its signal and calls again.
//!
//! The building blocks are those of libzmq: a load balancer (round robin over the pipes
//! that can take a message), a fair queue (round robin over the pipes that have one),
//! a distributor with a subscription [`trie`] per pipe (PUB), and small state machines
//! for REQ and REP.

pub(crate) mod pubsub;
pub(crate) mod reqrep;
pub(crate) mod simple;
pub(crate) mod trie;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::message::FrameVec;
use crate::transport::{Pipe, PipeClosed, PipeMeta, WriteError};
use crate::{Error, Message, Result, SendError, SocketType};

pub(crate) use crate::options::PatternOptions;
pub(crate) use crate::transport::PipeId;

/// A socket type's routing.
pub(crate) trait Pattern: Send + std::fmt::Debug {
    /// A new pipe to a peer.
    fn attach(&mut self, id: PipeId, pipe: Pipe);
    /// Removes a pipe (disconnect/unbind/close); its halves are closed.
    fn detach(&mut self, id: PipeId);
    /// Sends a message, or hands it back with [`Error::WouldBlock`] (wait and retry) or
    /// another error.
    fn send(&mut self, msg: Message) -> Result<(), SendError>;
    /// Receives a message, or [`Error::WouldBlock`].
    fn recv(&mut self) -> Result<Message>;
    /// Whether `send` could make progress now (for poll).
    fn can_send(&mut self) -> bool;
    /// Updates the options.
    fn configure(&mut self, _opts: &PatternOptions) {}
    /// Receives a message into `f`, in place where the pipe can; the default copies
    /// through [`Pattern::recv`]. Patterns that hand messages over unchanged (PAIR,
    /// PULL, DEALER) read in place.
    fn recv_with(&mut self, f: &mut dyn FnMut(&crate::Frames<'_>)) -> Result<()> {
        let m = self.recv()?;
        f(&crate::Frames::message(&m));
        Ok(())
    }
    /// Sends a one-frame message of `len` bytes written by `fill` straight into a
    /// pipe, where the pipes can (PAIR, PUSH, DEALER over shared memory). `fill` runs
    /// only for [`InPlaceSend::Sent`]. The default: [`InPlaceSend::NotInPlace`] (the
    /// socket builds a message and calls [`Pattern::send`]).
    fn send_in_place(&mut self, _len: usize, _fill: &mut dyn FnMut(&mut [u8])) -> InPlaceSend {
        InPlaceSend::NotInPlace
    }
    /// Whether the pattern keeps time (a REQ with resend): the socket's receive then
    /// calls [`Pattern::tick`] and wakes at [`Pattern::timer`].
    fn timed(&self) -> bool {
        false
    }
    /// When the socket must call [`Pattern::tick`] next (`None`: at its first wait).
    fn timer(&self) -> Option<Instant> {
        None
    }
    /// Time passed: a REQ resends or gives up (the error is the receive's result).
    fn tick(&mut self, _now: Instant) -> Result<()> {
        Ok(())
    }
    /// The receive timeout passed: the error the receive returns (a REQ with resend
    /// gives the exchange up).
    fn recv_timed_out(&mut self) -> Error {
        Error::Timeout
    }
    /// REP: where answered requests are remembered.
    fn set_reply_cache(&mut self, _cache: Box<dyn crate::ReplyCache>) -> Result<()> {
        Err(Error::InvalidArgument(
            "a reply cache applies to REP sockets only".into(),
        ))
    }
    /// Adds (`true`) or removes a subscription (SUB and XSUB only).
    fn subscribe(&mut self, _topic: &[u8], _on: bool) -> Result<()> {
        Err(Error::InvalidArgument(
            "subscribe/unsubscribe apply to SUB and XSUB sockets only".into(),
        ))
    }
}

/// The outcome of [`Pattern::send_in_place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InPlaceSend {
    /// Written into a pipe.
    Sent,
    /// Every pipe that could write in place is full: wait and retry.
    WouldBlock,
    /// Some pipe cannot write in place (or there is none): send a message instead.
    NotInPlace,
}

/// The pattern for a socket type.
pub(crate) fn new(
    t: SocketType,
    opts: &PatternOptions,
    handle: &Arc<crate::transport::SocketHandle>,
) -> Box<dyn Pattern> {
    let mut p: Box<dyn Pattern> = match t {
        SocketType::Pair => Box::new(simple::Pair::default()),
        SocketType::Push => Box::new(simple::Push::default()),
        SocketType::Pull => Box::new(simple::Pull::default()),
        SocketType::Dealer => Box::new(simple::Dealer::default()),
        SocketType::Router => Box::new(simple::Router::default()),
        SocketType::Pub => Box::new(pubsub::Pub::new(false)),
        SocketType::XPub => Box::new(pubsub::Pub::new(true)),
        SocketType::Sub => Box::new(pubsub::Sub::new(false)),
        SocketType::XSub => Box::new(pubsub::Sub::new(true)),
        SocketType::Req => Box::new(reqrep::Req::new(reqrep::Reporter::new(handle.clone()))),
        SocketType::Rep => Box::new(reqrep::Rep::new(reqrep::Reporter::new(handle.clone()))),
    };
    p.configure(opts);
    p
}

/// Refuses a message without frames (every socket type needs at least one).
pub(crate) fn check_not_empty(msg: Message) -> Result<Message, SendError> {
    if msg.is_empty() {
        return Err(SendError {
            error: Error::InvalidArgument("a message needs at least one frame".into()),
            message: msg,
        });
    }
    Ok(msg)
}

pub(crate) fn would_block(message: Message) -> SendError {
    SendError {
        error: Error::WouldBlock,
        message,
    }
}

pub(crate) fn not_supported(what: &str) -> Error {
    Error::State(format!("{what} is not supported by this socket type"))
}

/// The pipes of a socket, with the round-robin cursors of a fair queue (in) and a load
/// balancer (out).
///
/// A pipe whose peer is gone (its writer says closed) stops taking writes but is not
/// dropped while its reader still holds what the peer sent before it went: it is
/// *draining*. The load balancer and every other write skip it; the fair queue still
/// reads it, and once its reader says [`PipeClosed`] (closed and read dry) it is
/// released and reported in `gone`. (libzmq ends a pipe with a delimiter that its
/// reader reaches after every message before it; this is the same promise.) Only
/// [`Pipes::remove`], the user's disconnect, unbind or close, drops a pipe with
/// whatever it still holds.
///
/// `list` holds the live pipes first (`..live`), then the draining ones: the write
/// paths loop over `..live`, the read paths over the whole list, so neither hot loop
/// tests a state per pipe.
#[derive(Debug, Default)]
pub(crate) struct Pipes {
    list: Vec<(PipeId, Pipe)>,
    /// How many pipes at the front of `list` take writes.
    live: usize,
    next_in: usize,
    next_out: usize,
    /// Pipes released because the peer closed them and everything it sent was read
    /// (or there was nothing to read), for the pattern to forget.
    pub(crate) gone: Vec<(PipeId, PipeMeta)>,
}

impl Pipes {
    pub(crate) fn add(&mut self, id: PipeId, pipe: Pipe) {
        // Drop pipes whose peer is gone and that hold nothing more: a round robin that
        // always finds the newest pipe first would otherwise never visit them, and
        // each keeps its peer's queues (and, for ipc://, shared memory) alive.
        let mut i = 0;
        while i < self.list.len() {
            if self.list[i].1.reader.is_finished() {
                self.release(i);
            } else {
                i += 1;
            }
        }
        self.list.insert(self.live, (id, pipe));
        self.live += 1;
    }

    /// Removes a pipe at the user's request (disconnect, unbind, close): both halves
    /// are closed, and what its reader still holds is discarded.
    pub(crate) fn remove(&mut self, id: PipeId) -> Option<Pipe> {
        let i = self.list.iter().position(|(p, _)| *p == id)?;
        let (_, mut pipe) = self.take(i);
        pipe.writer.close();
        pipe.reader.close();
        Some(pipe)
    }

    /// Takes pipe `i` out of the list, keeping `live` right.
    fn take(&mut self, i: usize) -> (PipeId, Pipe) {
        if i < self.live {
            self.live -= 1;
        }
        self.list.remove(i)
    }

    /// Drops pipe `i` for good and reports it in `gone`.
    fn release(&mut self, i: usize) {
        let (id, mut pipe) = self.take(i);
        pipe.writer.close();
        pipe.reader.close();
        self.gone.push((id, pipe.meta));
    }

    /// Live pipe `i` was found closed (its peer is gone): released now if its reader
    /// holds nothing more, else moved to the draining pipes, read until it is empty.
    /// The pipe that was after `i` takes its place (the load balancer's cursor then
    /// points at the next pipe to try, as after a removal).
    #[cold]
    fn retire(&mut self, i: usize) {
        debug_assert!(i < self.live);
        if self.list[i].1.reader.is_finished() {
            self.release(i);
            return;
        }
        self.live -= 1;
        self.list[i..=self.live].rotate_left(1);
    }

    /// Moves the live pipes whose peer is gone to the draining ones (or releases them
    /// when they hold nothing), and releases draining pipes read dry (reported in
    /// `gone`).
    pub(crate) fn prune_closed(&mut self) {
        let mut i = 0;
        while i < self.live {
            if self.list[i].1.writer.is_closed() {
                self.retire(i);
            } else {
                i += 1;
            }
        }
        while i < self.list.len() {
            if self.list[i].1.reader.is_finished() {
                self.release(i);
            } else {
                i += 1;
            }
        }
    }

    /// How many pipes take writes (a draining pipe does not count).
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Whether pipe `id` is attached and takes writes (not draining).
    pub(crate) fn is_live(&self, id: PipeId) -> bool {
        self.list[..self.live].iter().any(|(p, _)| *p == id)
    }

    /// Every attached pipe, draining ones too.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether a pipe is attached (live or draining).
    pub(crate) fn contains(&self, id: PipeId) -> bool {
        self.list.iter().any(|(p, _)| *p == id)
    }

    /// What is known about the peer of a pipe.
    pub(crate) fn meta(&self, id: PipeId) -> Option<&PipeMeta> {
        self.list
            .iter()
            .find(|(p, _)| *p == id)
            .map(|(_, p)| &p.meta)
    }

    #[cfg(test)]
    pub(crate) fn ids(&self) -> Vec<PipeId> {
        self.list.iter().map(|(id, _)| *id).collect()
    }

    /// Load-balanced send of a whole message (PAIR, PUSH, DEALER): an empty message is
    /// refused; when no pipe takes it, it is handed back with [`Error::WouldBlock`].
    pub(crate) fn send_balanced(&mut self, msg: Message) -> Result<(), SendError> {
        let msg = check_not_empty(msg)?;
        self.write_balanced(msg).map(|_| ())
    }

    /// Fair-queued receive (PAIR, PULL, DEALER): [`Error::WouldBlock`] when nothing waits.
    pub(crate) fn recv_fair(&mut self) -> Result<Message> {
        // A match, not `ok_or`: the error is built (and dropped) only when it is used.
        match self.read_fair() {
            Some((_, m)) => Ok(m),
            None => Err(Error::WouldBlock),
        }
    }

    /// As [`Pipes::recv_fair`], passing the message to `f` in place.
    pub(crate) fn recv_fair_with(&mut self, f: &mut dyn FnMut(&crate::Frames<'_>)) -> Result<()> {
        if self.read_fair_with(f) {
            Ok(())
        } else {
            Err(Error::WouldBlock)
        }
    }

    /// Reads the next message, visiting pipes (draining ones too) in turn from where the
    /// last read stopped.
    pub(crate) fn read_fair(&mut self) -> Option<(PipeId, Message)> {
        let mut tried = 0;
        while tried < self.list.len() {
            if self.next_in >= self.list.len() {
                self.next_in = 0;
            }
            let i = self.next_in;
            match self.list[i].1.reader.try_read() {
                Ok(Some(m)) => {
                    let id = self.list[i].0;
                    self.next_in = i + 1;
                    return Some((id, m));
                }
                Ok(None) => {
                    self.next_in = i + 1;
                    tried += 1;
                }
                Err(PipeClosed) => self.release(i),
            }
        }
        None
    }

    /// As [`Pipes::read_fair`], passing the message to `f` in place.
    pub(crate) fn read_fair_with(&mut self, f: &mut dyn FnMut(&crate::Frames<'_>)) -> bool {
        let mut tried = 0;
        while tried < self.list.len() {
            if self.next_in >= self.list.len() {
                self.next_in = 0;
            }
            let i = self.next_in;
            match self.list[i].1.reader.read_with(f) {
                Ok(true) => {
                    self.next_in = i + 1;
                    return true;
                }
                Ok(false) => {
                    self.next_in = i + 1;
                    tried += 1;
                }
                Err(PipeClosed) => self.release(i),
            }
        }
        false
    }

    /// As [`Pipes::write_balanced`] for a one-frame message written in place by `fill`.
    pub(crate) fn write_balanced_with(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> InPlaceSend {
        let mut tried = 0;
        let mut unsupported = false;
        while tried < self.live {
            if self.next_out >= self.live {
                self.next_out = 0;
            }
            let i = self.next_out;
            match self.list[i].1.writer.write_in_place(len, fill) {
                Ok(crate::transport::InPlace::Written) => {
                    self.next_out = i + 1;
                    return InPlaceSend::Sent;
                }
                Ok(crate::transport::InPlace::Full) => {
                    self.next_out = i + 1;
                    tried += 1;
                }
                Ok(crate::transport::InPlace::Unsupported) => {
                    unsupported = true;
                    self.next_out = i + 1;
                    tried += 1;
                }
                Err(PipeClosed) => self.retire(i),
            }
        }
        if unsupported || self.live == 0 {
            InPlaceSend::NotInPlace
        } else {
            InPlaceSend::WouldBlock
        }
    }

    /// Reads every message every pipe (draining ones too) has ready now and hands each
    /// to `f` with its pipe; pipes found closed and read dry are released (reported in
    /// `gone`). One pass, in place.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(PipeId, Message)) {
        let mut i = 0;
        while i < self.list.len() {
            match self.list[i].1.reader.try_read() {
                Ok(Some(m)) => f(self.list[i].0, m),
                Ok(None) => i += 1,
                Err(PipeClosed) => self.release(i),
            }
        }
    }

    /// Writes to the next pipe that takes the message; hands it back with
    /// [`Error::WouldBlock`] if none does now, or with the error of a pipe that can
    /// never take it (too large for its ring).
    pub(crate) fn write_balanced(&mut self, mut msg: Message) -> Result<PipeId, SendError> {
        let mut tried = 0;
        while tried < self.live {
            if self.next_out >= self.live {
                self.next_out = 0;
            }
            let i = self.next_out;
            match self.list[i].1.writer.try_write(msg) {
                Ok(()) => {
                    self.next_out = i + 1;
                    return Ok(self.list[i].0);
                }
                Err(WriteError::Full(m)) => {
                    msg = m;
                    self.next_out = i + 1;
                    tried += 1;
                }
                Err(WriteError::Closed(m)) => {
                    msg = m;
                    self.retire(i);
                }
                Err(WriteError::Unsendable(message, error)) => {
                    self.next_out = i + 1;
                    return Err(SendError { error, message });
                }
            }
        }
        Err(would_block(msg))
    }

    /// Writes to one pipe. A pipe found closed stops taking writes (it drains) and is
    /// reported as closed, as is a pipe that drains or is not attached.
    pub(crate) fn write_to(&mut self, id: PipeId, msg: Message) -> Result<(), WriteError> {
        let Some(i) = self.list[..self.live].iter().position(|(p, _)| *p == id) else {
            return Err(WriteError::Closed(msg));
        };
        match self.list[i].1.writer.try_write(msg) {
            Err(WriteError::Closed(m)) => {
                self.retire(i);
                Err(WriteError::Closed(m))
            }
            other => other,
        }
    }

    /// Writes a control message (subscription) to one pipe, or to all if `id` is None.
    pub(crate) fn write_control(&mut self, id: Option<PipeId>, msg: &Message) {
        let mut i = 0;
        while i < self.live {
            if id.is_some_and(|id| id != self.list[i].0) {
                i += 1;
                continue;
            }
            match self.list[i].1.writer.write_control(msg.clone()) {
                Err(WriteError::Closed(_)) => self.retire(i),
                _ => i += 1,
            }
        }
    }

    /// Offers a copy of the message to every pipe `want` accepts; full pipes drop it.
    pub(crate) fn distribute(&mut self, msg: &Message, mut want: impl FnMut(PipeId) -> bool) {
        let mut i = 0;
        while i < self.live {
            if !want(self.list[i].0) {
                i += 1;
                continue;
            }
            match self.list[i].1.writer.try_write(msg.clone()) {
                Err(WriteError::Closed(_)) => self.retire(i),
                _ => i += 1,
            }
        }
    }

    pub(crate) fn any_writable(&self) -> bool {
        self.list[..self.live]
            .iter()
            .any(|(_, p)| p.writer.is_writable())
    }
}

/// Splits a message after its first empty frame: (envelope including the delimiter,
/// body). None if there is no empty frame.
/// Neither part allocates a frame list when it has at most two frames.
pub(crate) fn split_envelope(mut msg: Message) -> Option<(FrameVec, Message)> {
    // A request straight from a REQ (the delimiter first, the common case): the
    // delimiter comes off in place, the body stays in the message.
    if msg.frames().len() > 1 && msg.frames()[0].is_empty() {
        let mut envelope = FrameVec::new();
        envelope.extend(msg.pop_front());
        return Some((envelope, msg));
    }
    let peer = msg.take_peer_properties();
    let frames = msg.frames_mut();
    let pos = frames.iter().position(Bytes::is_empty)?;
    let body: FrameVec = frames.drain(pos + 1..).collect();
    let mut body = Message::from(body);
    body.set_peer_properties(peer);
    Some((std::mem::take(frames), body))
}

#[cfg(test)]
pub(crate) mod testutil {
    //! In-memory pipes for driving patterns in unit tests.
    use std::sync::Arc;

    use super::*;
    use crate::transport::{QueueConfig, QueueReader, QueueWriter, queue_pair, tests::Counter};

    /// The far end of a test pipe: what the peer writes and reads.
    pub(crate) struct Peer {
        pub(crate) tx: QueueWriter,
        pub(crate) rx: QueueReader,
    }

    impl Peer {
        pub(crate) fn read(&mut self) -> Option<Message> {
            use crate::transport::PipeReader;
            self.rx.try_read().ok().flatten()
        }
        pub(crate) fn write(&mut self, m: impl Into<Message>) {
            use crate::transport::PipeWriter;
            self.tx
                .try_write(m.into())
                .expect("test pipe takes the message");
        }
    }

    /// A pipe with the given HWM (socket to peer) and peer routing id.
    pub(crate) fn pipe(hwm: usize, routing_id: &[u8]) -> (Pipe, Peer) {
        let n = Arc::new(Counter::default());
        let cfg = QueueConfig {
            hwm,
            conflate: false,
        };
        let (aw, ar, bw, br) = queue_pair(cfg, cfg, n.clone(), n);
        (
            Pipe {
                writer: Box::new(aw),
                reader: Box::new(ar),
                meta: PipeMeta {
                    routing_id: Bytes::copy_from_slice(routing_id),
                    endpoint: "test://".into(),
                },
            },
            Peer { tx: bw, rx: br },
        )
    }

    pub(crate) fn msg(frames: &[&[u8]]) -> Message {
        Message::from_frames(frames.iter().map(|f| Bytes::copy_from_slice(f)))
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn envelope_split() {
        let (env, body) = split_envelope(msg(&[b"id", b"", b"a", b""])).unwrap();
        assert_eq!(env.as_slice(), &[Bytes::from("id"), Bytes::new()]);
        assert_eq!(body, msg(&[b"a", b""]));
        assert!(split_envelope(msg(&[b"x"])).is_none());
        // Straight from a REQ: the delimiter first.
        let (env, body) = split_envelope(msg(&[b"", b"a", b"b"])).unwrap();
        assert_eq!(env.as_slice(), &[Bytes::new()]);
        assert_eq!(body, msg(&[b"a", b"b"]));
        let (env, body) = split_envelope(msg(&[b""])).unwrap();
        assert_eq!(env.as_slice(), &[Bytes::new()]);
        assert!(body.is_empty());
    }

    #[test]
    fn load_balancer_skips_full_and_closed_pipes() {
        let mut pipes = Pipes::default();
        let (p1, mut peer1) = pipe(1, b"");
        let (p2, peer2) = pipe(1, b"");
        let (p3, mut peer3) = pipe(1, b"");
        pipes.add(1, p1);
        pipes.add(2, p2);
        pipes.add(3, p3);
        drop(peer2);
        assert_eq!(pipes.write_balanced(msg(&[b"a"])).unwrap(), 1);
        assert_eq!(pipes.write_balanced(msg(&[b"b"])).unwrap(), 3);
        assert_eq!(pipes.gone.len(), 1, "the closed pipe is reported");
        let back = pipes.write_balanced(msg(&[b"c"])).unwrap_err();
        assert_eq!(
            back.message,
            msg(&[b"c"]),
            "all full: the message comes back"
        );
        assert!(matches!(back.error, Error::WouldBlock));
        assert_eq!(peer1.read().unwrap(), msg(&[b"a"]));
        assert_eq!(pipes.write_balanced(msg(&[b"c"])).unwrap(), 1);
        assert_eq!(peer3.read().unwrap(), msg(&[b"b"]));
    }

    #[test]
    fn attaching_a_pipe_drops_finished_ones_the_round_robin_never_visits() {
        let mut pipes = Pipes::default();
        let mut ids = Vec::new();
        for id in 0..5u64 {
            let (p, mut peer) = pipe(0, b"");
            peer.write(vec![id as u8]);
            pipes.add(id, p);
            // The newest pipe is read first; the peer then goes away.
            assert_eq!(pipes.read_fair().map(|(i, _)| i), Some(id));
            drop(peer);
            ids.push(id);
        }
        // Without the sweep all five would still be attached (the cursor always lands
        // on the newest). Each attach dropped the finished ones before it.
        assert_eq!(
            pipes.len(),
            1,
            "only the newest (finished, not yet swept) remains"
        );
        assert_eq!(pipes.gone.len(), 4, "the swept pipes are reported");
        // A closed pipe that still holds a message is not finished: it stays.
        let (p, mut peer) = pipe(0, b"");
        peer.write("last words");
        drop(peer);
        pipes.add(10, p);
        let (p, _peer) = pipe(0, b"");
        pipes.add(11, p);
        assert_eq!(pipes.ids(), vec![10, 11]);
        assert_eq!(pipes.read_fair(), Some((10, msg(&[b"last words"]))));
    }

    #[test]
    fn a_pipe_whose_peer_went_is_read_dry_before_it_is_released() {
        let mut pipes = Pipes::default();
        let (p1, mut gone_peer) = pipe(0, b"");
        let (p2, mut other) = pipe(0, b"");
        pipes.add(1, p1);
        pipes.add(2, p2);
        for i in 0..5u8 {
            gone_peer.write(vec![i]);
        }
        drop(gone_peer); // its last messages are queued; then it goes away
        // The write finds pipe 1 closed and goes to pipe 2: pipe 1 drains.
        assert_eq!(pipes.write_balanced(msg(&[b"w"])).unwrap(), 2);
        assert_eq!(other.read().unwrap(), msg(&[b"w"]));
        assert!(
            pipes.gone.is_empty(),
            "not released while it holds messages"
        );
        assert_eq!((pipes.live(), pipes.len()), (1, 2));
        assert!(pipes.contains(1) && !pipes.is_live(1));
        // No write goes to a draining pipe.
        assert_eq!(pipes.write_balanced(msg(&[b"x"])).unwrap(), 2);
        assert_eq!(pipes.write_balanced(msg(&[b"y"])).unwrap(), 2);
        assert!(matches!(
            pipes.write_to(1, msg(&[b"z"])),
            Err(WriteError::Closed(_))
        ));
        other.write("from 2");
        let mut got = Vec::new();
        while let Some((id, m)) = pipes.read_fair() {
            got.push((id, m));
        }
        let from_1: Vec<Message> = got
            .iter()
            .filter(|(id, _)| *id == 1)
            .map(|(_, m)| m.clone())
            .collect();
        assert_eq!(
            from_1,
            (0..5u8).map(|i| Message::from(vec![i])).collect::<Vec<_>>(),
            "every message the peer sent before it went, in order"
        );
        assert!(
            got.contains(&(2, msg(&[b"from 2"]))),
            "the fair queue still turns"
        );
        assert_eq!(pipes.gone.len(), 1, "released once read dry");
        assert_eq!(pipes.gone[0].0, 1);
        assert_eq!(pipes.ids(), vec![2]);
    }

    #[test]
    fn a_gone_pipe_with_nothing_queued_is_released_at_once_and_remove_discards() {
        let mut pipes = Pipes::default();
        let (p1, peer1) = pipe(0, b"");
        let (p2, mut peer2) = pipe(0, b"");
        let (p3, _peer3) = pipe(0, b"");
        pipes.add(1, p1);
        pipes.add(2, p2);
        pipes.add(3, p3);
        drop(peer1);
        peer2.write("unread");
        drop(peer2);
        pipes.prune_closed();
        assert_eq!(pipes.gone.len(), 1, "pipe 1 held nothing");
        assert_eq!(pipes.gone[0].0, 1);
        assert_eq!((pipes.live(), pipes.len()), (1, 2));
        // A new pipe goes among the live ones, before the draining one.
        let (p4, _peer4) = pipe(0, b"");
        pipes.add(4, p4);
        assert_eq!(pipes.ids(), vec![3, 4, 2]);
        assert!(pipes.is_live(4) && !pipes.is_live(2));
        // The user's detach drops a draining pipe with what it holds.
        assert!(pipes.remove(2).is_some());
        assert_eq!(pipes.ids(), vec![3, 4]);
        assert_eq!(pipes.live(), 2);
        assert!(pipes.read_fair().is_none());
    }

    #[test]
    fn a_draining_pipe_never_read_is_released_with_its_socket() {
        use crate::transport::{PipeReader as _, PipeWriter as _};
        let mut pipes = Pipes::default();
        let (p, mut peer) = pipe(0, b"");
        pipes.add(1, p);
        peer.write("never read");
        // The peer stops reading (its writer stays open): the write finds it closed.
        peer.rx.close();
        let back = pipes.write_balanced(msg(&[b"x"])).unwrap_err();
        assert!(matches!(back.error, Error::WouldBlock));
        assert_eq!((pipes.live(), pipes.len()), (0, 1), "it drains");
        assert!(!peer.tx.is_closed(), "its reader is still open");
        drop(pipes); // the socket closes
        assert!(
            peer.tx.is_closed(),
            "its reader is closed, the queue released"
        );
    }

    #[test]
    fn fair_queue_takes_turns() {
        let mut pipes = Pipes::default();
        let mut peers = Vec::new();
        for id in 0..3 {
            let (p, mut peer) = pipe(0, b"");
            for i in 0..3u8 {
                peer.write(vec![id as u8, i]);
            }
            pipes.add(id, p);
            peers.push(peer);
        }
        let order: Vec<u64> = std::iter::from_fn(|| pipes.read_fair().map(|(id, _)| id)).collect();
        assert_eq!(order, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }
}
