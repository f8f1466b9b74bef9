//! PUB/XPUB and SUB/XSUB.
//!
//! Subscriptions travel inside pipes as one-frame control messages, as in libzmq:
//! `0x01 topic` subscribes, `0x00 topic` cancels. The I/O thread turns them into ZMTP
//! SUBSCRIBE/CANCEL commands and back, so the patterns see the same thing on every
//! transport.
//!
//! - A SUB counts its subscriptions in a [`Trie`], sends a subscribe upstream each time
//!   the user subscribes and a cancel when a topic's count drops to zero; it sends every
//!   topic to each new pipe, and filters what it receives (the publisher may not).
//! - A PUB keeps a trie per subscriber pipe and sends a message (a copy of its frames'
//!   handles, not of the bytes) to every pipe whose trie matches the first frame;
//!   a pipe at its high-water mark drops the message.
//! - An XPUB also hands the user a subscription message when a topic gains its first
//!   subscriber or loses its last one (over all pipes), as libzmq does without
//!   XPUB_VERBOSE.
//! - An XSUB sends whatever the user gives it; `0x01`/`0x00` messages also update its
//!   own filter.

use std::collections::{HashMap, VecDeque};

use super::trie::Trie;
use super::{Pattern, PipeId, Pipes, check_not_empty, not_supported};
use crate::transport::Pipe;
use crate::{Error, Message, Result, SendError};

pub(crate) use crate::transport::{control, parse_control};

/// PUB, or XPUB when `xpub`.
#[derive(Debug)]
pub(crate) struct Pub {
    pipes: Pipes,
    subs: HashMap<PipeId, Trie>,
    /// Per topic: how many pipes subscribe to it.
    all: Trie,
    /// XPUB: messages for the user (subscriptions and upstream data).
    pending: VecDeque<Message>,
    xpub: bool,
}

impl Pub {
    pub(crate) fn new(xpub: bool) -> Pub {
        Pub {
            pipes: Pipes::default(),
            subs: HashMap::new(),
            all: Trie::default(),
            pending: VecDeque::new(),
            xpub,
        }
    }

    fn forget_gone(&mut self) {
        for (id, _) in std::mem::take(&mut self.pipes.gone) {
            if let Some(trie) = self.subs.remove(&id) {
                for topic in trie.topics() {
                    if self.all.remove(&topic) && self.xpub {
                        self.pending.push_back(control(false, &topic));
                    }
                }
            }
        }
    }

    /// Reads every subscription the subscribers sent since last time.
    fn process_inbound(&mut self) {
        let (subs, all, pending, xpub) =
            (&mut self.subs, &mut self.all, &mut self.pending, self.xpub);
        self.pipes.drain(|id, msg| {
            let Some(trie) = subs.get_mut(&id) else {
                return;
            };
            match parse_control(&msg) {
                Some((true, topic)) => {
                    if !trie.contains(&topic) {
                        trie.add(&topic);
                        if all.add(&topic) && xpub {
                            pending.push_back(msg);
                        }
                    }
                }
                Some((false, topic)) => {
                    if trie.remove_all(&topic) && all.remove(&topic) && xpub {
                        pending.push_back(msg);
                    }
                }
                None => {
                    if xpub {
                        pending.push_back(msg);
                    }
                }
            }
        });
        self.forget_gone();
    }
}

impl Pattern for Pub {
    fn attach(&mut self, id: PipeId, pipe: Pipe) {
        self.pipes.add(id, pipe);
        self.subs.insert(id, Trie::default());
    }
    fn detach(&mut self, id: PipeId) {
        if let Some(pipe) = self.pipes.remove(id) {
            self.pipes.gone.push((id, pipe.meta));
            self.forget_gone();
        }
    }
    fn send(&mut self, msg: Message) -> Result<(), SendError> {
        let msg = check_not_empty(msg)?;
        self.process_inbound();
        let first = msg.frames()[0].clone();
        let subs = &self.subs;
        self.pipes
            .distribute(&msg, |id| subs.get(&id).is_some_and(|t| t.matches(&first)));
        self.forget_gone();
        Ok(())
    }
    fn recv(&mut self) -> Result<Message> {
        if !self.xpub {
            return Err(not_supported("receiving"));
        }
        self.process_inbound();
        self.pending.pop_front().ok_or(Error::WouldBlock)
    }
    fn can_send(&mut self) -> bool {
        true
    }
}

/// SUB, or XSUB when `xsub`.
#[derive(Debug)]
pub(crate) struct Sub {
    pipes: Pipes,
    topics: Trie,
    xsub: bool,
}

impl Sub {
    pub(crate) fn new(xsub: bool) -> Sub {
        Sub {
            pipes: Pipes::default(),
            topics: Trie::default(),
            xsub,
        }
    }

    fn update(&mut self, on: bool, topic: &[u8]) {
        if on {
            self.topics.add(topic);
            self.pipes.write_control(None, &control(true, topic));
        } else if self.topics.remove(topic) {
            self.pipes.write_control(None, &control(false, topic));
        }
    }
}

impl Pattern for Sub {
    fn attach(&mut self, id: PipeId, pipe: Pipe) {
        self.pipes.add(id, pipe);
        for topic in self.topics.topics() {
            self.pipes.write_control(Some(id), &control(true, &topic));
        }
    }
    fn detach(&mut self, id: PipeId) {
        self.pipes.remove(id);
    }
    fn subscribe(&mut self, topic: &[u8], on: bool) -> Result<()> {
        self.update(on, topic);
        Ok(())
    }
    fn send(&mut self, msg: Message) -> Result<(), SendError> {
        if !self.xsub {
            return Err(SendError {
                error: not_supported("sending (use subscribe)"),
                message: msg,
            });
        }
        let msg = check_not_empty(msg)?;
        match parse_control(&msg) {
            Some((on, topic)) => self.update(on, &topic),
            None => self.pipes.distribute(&msg, |_| true),
        }
        Ok(())
    }
    fn recv(&mut self) -> Result<Message> {
        while let Some((_, msg)) = self.pipes.read_fair() {
            let first = msg.frames().first().cloned().unwrap_or_default();
            if self.topics.matches(&first) {
                return Ok(msg);
            }
        }
        Err(Error::WouldBlock)
    }
    fn can_send(&mut self) -> bool {
        self.xsub
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn pub_filters_by_prefix_per_subscriber_and_drops_when_full() {
        let mut p = Pub::new(false);
        let (p1, mut a) = pipe(2, b"");
        let (p2, mut b) = pipe(2, b"");
        p.attach(1, p1);
        p.attach(2, p2);
        a.write(control(true, b"wea"));
        b.write(control(true, b""));
        p.send(msg(&[b"weather", b"sunny"])).unwrap();
        p.send(msg(&[b"news"])).unwrap();
        p.send(msg(&[b"weak"])).unwrap();
        p.send(msg(&[b"weal"])).unwrap(); // a's pipe is full now: dropped for a
        assert_eq!(a.read().unwrap(), msg(&[b"weather", b"sunny"]));
        assert_eq!(a.read().unwrap(), msg(&[b"weak"]));
        assert_eq!(a.read(), None, "news does not match, weal was dropped");
        assert_eq!(b.read().unwrap(), msg(&[b"weather", b"sunny"]));
        assert_eq!(b.read().unwrap(), msg(&[b"news"]));
        assert_eq!(b.read(), None, "b's pipe was full after two");
        a.write(control(false, b"wea"));
        p.send(msg(&[b"weather"])).unwrap();
        assert_eq!(a.read(), None);
        assert!(matches!(p.recv(), Err(Error::State(_))));
    }

    #[test]
    fn xpub_reports_first_subscribe_and_last_cancel() {
        let mut p = Pub::new(true);
        let (p1, mut a) = pipe(0, b"");
        let (p2, mut b) = pipe(0, b"");
        p.attach(1, p1);
        p.attach(2, p2);
        a.write(control(true, b"t"));
        b.write(control(true, b"t"));
        assert_eq!(p.recv().unwrap(), control(true, b"t"));
        assert!(
            matches!(p.recv(), Err(Error::WouldBlock)),
            "second subscriber is silent"
        );
        a.write(control(false, b"t"));
        assert!(matches!(p.recv(), Err(Error::WouldBlock)));
        drop(b); // the last subscriber goes away: its topics are cancelled
        p.send(msg(&[b"x"])).unwrap();
        assert_eq!(p.recv().unwrap(), control(false, b"t"));
    }

    #[test]
    fn sub_sends_subscriptions_to_new_pipes_and_filters() {
        let mut s = Sub::new(false);
        s.subscribe(b"a", true).unwrap();
        s.subscribe(b"a", true).unwrap();
        let (p1, mut up) = pipe(0, b"");
        s.attach(1, p1);
        assert_eq!(up.read().unwrap(), control(true, b"a"));
        assert_eq!(up.read(), None, "a topic is sent once to a new pipe");
        up.write(msg(&[b"b"]));
        up.write(msg(&[b"ab", b"more"]));
        assert_eq!(s.recv().unwrap(), msg(&[b"ab", b"more"]));
        s.subscribe(b"a", false).unwrap();
        assert_eq!(up.read(), None, "still subscribed once");
        s.subscribe(b"a", false).unwrap();
        assert_eq!(up.read().unwrap(), control(false, b"a"));
        assert!(s.send(msg(&[b"x"])).is_err());
        assert!(!s.can_send());
    }

    #[test]
    fn xsub_forwards_subscriptions_and_data() {
        let mut s = Sub::new(true);
        let (p1, mut up) = pipe(0, b"");
        s.attach(1, p1);
        s.send(control(true, b"k")).unwrap();
        s.send(msg(&[b"\x02data"])).unwrap();
        assert_eq!(up.read().unwrap(), control(true, b"k"));
        assert_eq!(up.read().unwrap(), msg(&[b"\x02data"]));
        up.write(msg(&[b"kk"]));
        assert_eq!(s.recv().unwrap(), msg(&[b"kk"]));
    }
}
