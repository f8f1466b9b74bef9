//! PAIR, PUSH, PULL, DEALER and ROUTER: load balancing, fair queueing, and ROUTER's
//! table of routing ids.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::{InPlaceSend, Pattern, PatternOptions, PipeId, Pipes, not_supported};
use crate::transport::{Pipe, WriteError};
use crate::{Error, Message, Result, SendError};

/// PAIR: one peer; a second one is refused (its pipe is closed).
#[derive(Debug, Default)]
pub(crate) struct Pair {
    pipes: Pipes,
}

impl Pattern for Pair {
    fn attach(&mut self, id: PipeId, mut pipe: Pipe) {
        // A peer that went away does not count, even while what it sent is still read.
        self.pipes.prune_closed();
        if self.pipes.live() > 0 {
            tracing::debug!("PAIR already has a peer; refusing {}", pipe.meta.endpoint);
            pipe.writer.close();
            pipe.reader.close();
            return;
        }
        self.pipes.add(id, pipe);
    }
    fn detach(&mut self, id: PipeId) {
        self.pipes.remove(id);
    }
    fn send(&mut self, msg: Message) -> Result<(), SendError> {
        self.pipes.send_balanced(msg)
    }
    fn recv(&mut self) -> Result<Message> {
        self.pipes.recv_fair()
    }
    fn recv_with(&mut self, f: &mut dyn FnMut(&crate::Frames<'_>)) -> Result<()> {
        self.pipes.recv_fair_with(f)
    }
    fn send_in_place(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> InPlaceSend {
        self.pipes.write_balanced_with(len, fill)
    }
    fn can_send(&mut self) -> bool {
        self.pipes.any_writable()
    }
}

/// PUSH: load-balances; cannot receive.
#[derive(Debug, Default)]
pub(crate) struct Push {
    pipes: Pipes,
}

impl Pattern for Push {
    fn attach(&mut self, id: PipeId, pipe: Pipe) {
        self.pipes.add(id, pipe);
    }
    fn detach(&mut self, id: PipeId) {
        self.pipes.remove(id);
    }
    fn send(&mut self, msg: Message) -> Result<(), SendError> {
        self.pipes.send_balanced(msg)
    }
    fn recv(&mut self) -> Result<Message> {
        Err(not_supported("receiving"))
    }
    fn send_in_place(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> InPlaceSend {
        self.pipes.write_balanced_with(len, fill)
    }
    fn can_send(&mut self) -> bool {
        self.pipes.any_writable()
    }
}

/// PULL: fair-queues; cannot send.
#[derive(Debug, Default)]
pub(crate) struct Pull {
    pipes: Pipes,
}

impl Pattern for Pull {
    fn attach(&mut self, id: PipeId, pipe: Pipe) {
        self.pipes.add(id, pipe);
    }
    fn detach(&mut self, id: PipeId) {
        self.pipes.remove(id);
    }
    fn send(&mut self, msg: Message) -> Result<(), SendError> {
        Err(SendError {
            error: not_supported("sending"),
            message: msg,
        })
    }
    fn recv(&mut self) -> Result<Message> {
        self.pipes.recv_fair()
    }
    fn recv_with(&mut self, f: &mut dyn FnMut(&crate::Frames<'_>)) -> Result<()> {
        self.pipes.recv_fair_with(f)
    }
    fn can_send(&mut self) -> bool {
        false
    }
}

/// DEALER: load-balances out, fair-queues in.
#[derive(Debug, Default)]
pub(crate) struct Dealer {
    pipes: Pipes,
}

impl Pattern for Dealer {
    fn attach(&mut self, id: PipeId, pipe: Pipe) {
        self.pipes.add(id, pipe);
    }
    fn detach(&mut self, id: PipeId) {
        self.pipes.remove(id);
    }
    fn send(&mut self, msg: Message) -> Result<(), SendError> {
        self.pipes.send_balanced(msg)
    }
    fn recv(&mut self) -> Result<Message> {
        self.pipes.recv_fair()
    }
    fn recv_with(&mut self, f: &mut dyn FnMut(&crate::Frames<'_>)) -> Result<()> {
        self.pipes.recv_fair_with(f)
    }
    fn send_in_place(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> InPlaceSend {
        self.pipes.write_balanced_with(len, fill)
    }
    fn can_send(&mut self) -> bool {
        self.pipes.any_writable()
    }
}

/// ROUTER: prefixes each received message with the routing id of the pipe it came
/// from, and sends each message to the pipe named by its first frame.
///
/// A peer's routing id is the one it announced; a peer without one (or announcing one
/// already in use) gets a generated 5-byte id starting with a zero byte, as libzmq does.
#[derive(Debug)]
pub(crate) struct Router {
    pipes: Pipes,
    by_id: HashMap<Bytes, PipeId>,
    by_pipe: HashMap<PipeId, Bytes>,
    next_id: u32,
    mandatory: bool,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            pipes: Pipes::default(),
            by_id: HashMap::new(),
            by_pipe: HashMap::new(),
            next_id: seed(),
            mandatory: false,
        }
    }
}

/// A starting point for generated ids that differs between sockets and runs.
pub(crate) fn seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u32
}

impl Router {
    /// Forgets the pipes released since last time. A routing id a newer pipe took
    /// over (see [`Router::attach`]) stays with it.
    fn forget_gone(&mut self) {
        for (id, _) in std::mem::take(&mut self.pipes.gone) {
            if let Some(rid) = self.by_pipe.remove(&id) {
                if self.by_id.get(&rid) == Some(&id) {
                    self.by_id.remove(&rid);
                }
            }
        }
    }
}

impl Pattern for Router {
    fn attach(&mut self, id: PipeId, pipe: Pipe) {
        self.pipes.prune_closed();
        self.forget_gone();
        let announced = pipe.meta.routing_id.clone();
        // An id is in use while its pipe takes writes. A peer that comes back with the
        // id of a pipe that is still draining (what it sent before it went is not all
        // read yet) takes the id over: replies go to the new pipe, and what the old
        // one still holds is received with the id, as it came.
        let in_use = |rid: &Bytes| self.by_id.get(rid).is_some_and(|&p| self.pipes.is_live(p));
        let rid = if !announced.is_empty() && !in_use(&announced) {
            announced
        } else {
            loop {
                self.next_id = self.next_id.wrapping_add(1);
                let mut b = BytesMut::with_capacity(5);
                b.put_u8(0);
                b.put_u32(self.next_id);
                let b = b.freeze();
                // Not even the id of a draining pipe: its peer is not coming back.
                if !self.by_id.contains_key(&b) {
                    break b;
                }
            }
        };
        self.by_id.insert(rid.clone(), id);
        self.by_pipe.insert(id, rid);
        self.pipes.add(id, pipe);
    }
    fn detach(&mut self, id: PipeId) {
        self.pipes.remove(id);
        if let Some(rid) = self.by_pipe.remove(&id) {
            if self.by_id.get(&rid) == Some(&id) {
                self.by_id.remove(&rid);
            }
        }
    }
    fn configure(&mut self, opts: &PatternOptions) {
        self.mandatory = opts.router_mandatory;
    }
    fn send(&mut self, mut msg: Message) -> Result<(), SendError> {
        self.forget_gone();
        let Some(rid) = msg.pop_front() else {
            return Err(SendError {
                error: Error::InvalidArgument(
                    "a ROUTER message starts with the routing id frame".into(),
                ),
                message: msg,
            });
        };
        let restore = |mut m: Message, rid: Bytes, error: Error| {
            m.push_front(rid);
            SendError { error, message: m }
        };
        if msg.is_empty() {
            return Err(restore(
                msg,
                rid,
                Error::InvalidArgument(
                    "a ROUTER message needs a frame after the routing id".into(),
                ),
            ));
        }
        let Some(&pipe) = self.by_id.get(&rid) else {
            if self.mandatory {
                return Err(restore(msg, rid, Error::HostUnreachable));
            }
            tracing::trace!("ROUTER drops a message for unknown routing id {rid:?}");
            return Ok(());
        };
        match self.pipes.write_to(pipe, msg) {
            Ok(()) => Ok(()),
            Err(WriteError::Full(m)) => {
                if self.mandatory {
                    Err(restore(m, rid, Error::WouldBlock))
                } else {
                    Ok(())
                }
            }
            Err(WriteError::Closed(m)) => {
                self.forget_gone();
                if self.mandatory {
                    Err(restore(m, rid, Error::HostUnreachable))
                } else {
                    Ok(())
                }
            }
            // Can never go (too large for the peer's ring): fail, mandatory or not.
            Err(WriteError::Unsendable(m, error)) => Err(restore(m, rid, error)),
        }
    }
    fn recv(&mut self) -> Result<Message> {
        let got = self.pipes.read_fair();
        self.forget_gone();
        let (pipe, mut msg) = got.ok_or(Error::WouldBlock)?;
        match self.by_pipe.get(&pipe) {
            Some(rid) => {
                msg.push_front(rid.clone());
                Ok(msg)
            }
            // Every attached pipe has an id (inserted together in `attach`).
            None => Err(Error::WouldBlock),
        }
    }
    fn can_send(&mut self) -> bool {
        // libzmq: a ROUTER is always writable unless ROUTER_MANDATORY and nothing can take
        // a message.
        !self.mandatory || self.pipes.any_writable()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn router_routes_by_announced_or_generated_id() {
        let mut r = Router::default();
        let (p1, mut a) = pipe(0, b"alice");
        let (p2, mut b) = pipe(0, b"");
        r.attach(1, p1);
        r.attach(2, p2);
        a.write(msg(&[b"hi"]));
        let m = r.recv().unwrap();
        assert_eq!(m, msg(&[b"alice", b"hi"]));
        b.write(msg(&[b"yo", b""]));
        let m = r.recv().unwrap();
        let generated = m.frames()[0].clone();
        assert_eq!(generated.len(), 5);
        assert_eq!(generated[0], 0);
        assert_eq!(&m.frames()[1..], &[Bytes::from("yo"), Bytes::new()]);
        r.send(msg(&[&generated, b"back"])).unwrap();
        assert_eq!(b.read().unwrap(), msg(&[b"back"]));
        r.send(msg(&[b"alice", b"x", b"y"])).unwrap();
        assert_eq!(a.read().unwrap(), msg(&[b"x", b"y"]));
        // Unknown id: dropped silently, or HostUnreachable with ROUTER_MANDATORY.
        r.send(msg(&[b"bob", b"x"])).unwrap();
        r.configure(&PatternOptions {
            router_mandatory: true,
            ..Default::default()
        });
        let e = r.send(msg(&[b"bob", b"x"])).unwrap_err();
        assert!(matches!(e.error, Error::HostUnreachable));
        assert_eq!(
            e.message,
            msg(&[b"bob", b"x"]),
            "the message comes back whole"
        );
        // A duplicate announced id gets a generated one.
        let (p3, _c) = pipe(0, b"alice");
        r.attach(3, p3);
        r.send(msg(&[b"alice", b"still a"])).unwrap();
        assert_eq!(a.read().unwrap(), msg(&[b"still a"]));
        // A peer that went away is forgotten.
        drop(a);
        assert!(matches!(
            r.send(msg(&[b"alice", b"x"])).unwrap_err().error,
            Error::HostUnreachable
        ));
    }

    #[test]
    fn dealer_and_pair_receive_what_a_gone_peer_sent_after_a_write_found_it_closed() {
        for pair in [false, true] {
            let mut s: Box<dyn Pattern> = if pair {
                Box::new(Pair::default())
            } else {
                Box::new(Dealer::default())
            };
            let (p, mut peer) = pipe(0, b"");
            s.attach(1, p);
            for i in 0..10u8 {
                peer.write(msg(&[b"reply", &[i]]));
            }
            drop(peer);
            let back = s.send(msg(&[b"next"])).unwrap_err();
            assert!(matches!(back.error, Error::WouldBlock), "no peer takes it");
            assert!(!s.can_send());
            for i in 0..10u8 {
                assert_eq!(s.recv().unwrap(), msg(&[b"reply", &[i]]), "pair: {pair}");
            }
            assert!(matches!(s.recv(), Err(Error::WouldBlock)));
        }
    }

    #[test]
    fn router_reads_a_gone_peer_dry_and_a_peer_back_with_its_id_takes_it_over() {
        let mut r = Router::default();
        let (p1, mut old) = pipe(0, b"alice");
        r.attach(1, p1);
        old.write(msg(&[b"last 1"]));
        old.write(msg(&[b"last 2"]));
        drop(old);
        r.configure(&PatternOptions {
            router_mandatory: true,
            ..Default::default()
        });
        // The write finds the pipe closed: unreachable, but its messages stay.
        assert!(matches!(
            r.send(msg(&[b"alice", b"x"])).unwrap_err().error,
            Error::HostUnreachable
        ));
        // Alice comes back while the old pipe drains: the id is hers again.
        let (p2, mut new) = pipe(0, b"alice");
        r.attach(2, p2);
        r.send(msg(&[b"alice", b"to the new pipe"])).unwrap();
        assert_eq!(new.read().unwrap(), msg(&[b"to the new pipe"]));
        assert_eq!(r.recv().unwrap(), msg(&[b"alice", b"last 1"]));
        assert_eq!(r.recv().unwrap(), msg(&[b"alice", b"last 2"]));
        assert!(matches!(r.recv(), Err(Error::WouldBlock)));
        // The old pipe released, the id stays with the new one.
        assert_eq!(r.by_id.get(&Bytes::from("alice")), Some(&2));
        assert_eq!(r.by_pipe.len(), 1);
        r.send(msg(&[b"alice", b"still"])).unwrap();
        assert_eq!(new.read().unwrap(), msg(&[b"still"]));
    }

    #[test]
    fn router_mandatory_full_pipe_would_block_otherwise_drops() {
        let mut r = Router::default();
        let (p, mut peer) = pipe(1, b"p");
        r.attach(1, p);
        r.send(msg(&[b"p", b"1"])).unwrap();
        r.send(msg(&[b"p", b"2"])).unwrap(); // dropped
        r.configure(&PatternOptions {
            router_mandatory: true,
            ..Default::default()
        });
        assert!(!r.can_send());
        assert!(matches!(
            r.send(msg(&[b"p", b"3"])).unwrap_err().error,
            Error::WouldBlock
        ));
        assert_eq!(peer.read().unwrap(), msg(&[b"1"]));
        assert!(peer.read().is_none());
    }

    #[test]
    fn pair_refuses_second_peer_and_push_pull_directions() {
        let mut p = Pair::default();
        let (p1, mut a) = pipe(0, b"");
        let (p2, mut b) = pipe(0, b"");
        p.attach(1, p1);
        p.attach(2, p2);
        p.send(msg(&[b"x"])).unwrap();
        assert_eq!(a.read().unwrap(), msg(&[b"x"]));
        assert!(b.read().is_none());
        // A waiting message survives another refused peer; a gone peer makes room.
        a.write(msg(&[b"kept"]));
        let (p3, _c) = pipe(0, b"");
        p.attach(3, p3);
        assert_eq!(p.recv().unwrap(), msg(&[b"kept"]));
        drop(a);
        let (p4, mut d) = pipe(0, b"");
        p.attach(4, p4);
        p.send(msg(&[b"to d"])).unwrap();
        assert_eq!(d.read().unwrap(), msg(&[b"to d"]));
        assert!(matches!(
            p.send(Message::new()).unwrap_err().error,
            Error::InvalidArgument(_)
        ));
        let mut push = Push::default();
        assert!(matches!(push.recv(), Err(Error::State(_))));
        assert!(matches!(
            push.send(msg(&[b"x"])).unwrap_err().error,
            Error::WouldBlock
        ));
        let mut pull = Pull::default();
        assert!(pull.send(msg(&[b"x"])).is_err());
        assert!(matches!(pull.recv(), Err(Error::WouldBlock)));
    }
}
