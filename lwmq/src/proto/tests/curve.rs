//! CURVE on an in-memory pair: handshakes, encryption of every frame, and the failures
//! (wrong keys, tampering, replay, commands out of order) that must close the connection
//! without a panic.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{peer_greeting, sample_message};
use crate::Message;
use crate::SocketType::{self, *};
use crate::proto::frame;
use crate::proto::*;

/// Two connections; every byte each has written is kept, so a test can tamper with,
/// withhold or replay any part of either stream.
struct Link {
    a: Connection,
    b: Connection,
    now: Instant,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
    /// Everything `a` (`b`) has transmitted, and how much of it was delivered.
    a_out: Vec<u8>,
    b_out: Vec<u8>,
    a_sent: usize,
    b_sent: usize,
    /// Stream offsets whose byte is flipped on delivery.
    tamper_a: Vec<usize>,
    tamper_b: Vec<usize>,
    /// Stop delivering `a`'s stream at this offset.
    hold_a_at: Option<usize>,
    /// AuthRequests at `b` answered so far.
    answered: usize,
}

impl Link {
    fn new(a: Config, b: Config) -> Link {
        let now = Instant::now();
        Link {
            a: Connection::new(a, now),
            b: Connection::new(b, now),
            now,
            a_events: Vec::new(),
            b_events: Vec::new(),
            a_out: Vec::new(),
            b_out: Vec::new(),
            a_sent: 0,
            b_sent: 0,
            tamper_a: Vec::new(),
            tamper_b: Vec::new(),
            hold_a_at: None,
            answered: 0,
        }
    }

    fn pull(&mut self) {
        while let Some(t) = self.a.poll_transmit() {
            self.a_out.extend_from_slice(&t);
        }
        while let Some(t) = self.b.poll_transmit() {
            self.b_out.extend_from_slice(&t);
        }
    }

    fn drive(&mut self) {
        for _ in 0..10_000 {
            self.pull();
            let mut moved = false;
            let a_end = self.hold_a_at.unwrap_or(usize::MAX).min(self.a_out.len());
            if self.a_sent < a_end {
                let mut chunk = self.a_out[self.a_sent..a_end].to_vec();
                for &t in &self.tamper_a {
                    if (self.a_sent..a_end).contains(&t) {
                        chunk[t - self.a_sent] ^= 0x01;
                    }
                }
                self.a_sent = a_end;
                self.b.handle_input(&chunk, self.now);
                moved = true;
            }
            if self.b_sent < self.b_out.len() {
                let mut chunk = self.b_out[self.b_sent..].to_vec();
                for &t in &self.tamper_b {
                    if (self.b_sent..self.b_out.len()).contains(&t) {
                        chunk[t - self.b_sent] ^= 0x01;
                    }
                }
                self.b_sent = self.b_out.len();
                self.a.handle_input(&chunk, self.now);
                moved = true;
            }
            while let Some(e) = self.a.poll_event() {
                self.a_events.push(e);
                moved = true;
            }
            while let Some(e) = self.b.poll_event() {
                self.b_events.push(e);
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("link did not settle");
    }

    /// Drives, answering every AuthRequest at `b` with `accept`.
    fn drive_accepting(&mut self, accept: bool) {
        loop {
            self.drive();
            let pending = self
                .b_events
                .iter()
                .filter(|e| matches!(e, Event::AuthRequest { .. }))
                .count();
            if pending == self.answered {
                return;
            }
            self.answered = pending;
            self.b.authenticate(accept);
        }
    }
}

fn client(t: SocketType, me: &CurveKeyPair, server: &CurvePublicKey) -> Config {
    let mut c = Config::new(t);
    c.mechanism = MechanismConfig::CurveClient {
        public: me.public,
        secret: me.secret.clone(),
        server_public: *server,
    };
    c
}

fn server(t: SocketType, me: &CurveKeyPair) -> Config {
    let mut c = Config::new(t);
    c.mechanism = MechanismConfig::CurveServer {
        public: me.public,
        secret: me.secret.clone(),
    };
    c
}

fn closed_with(events: &[Event]) -> Option<&ProtoError> {
    match events.last() {
        Some(Event::Closed(e)) => Some(e),
        _ => None,
    }
}

fn messages(events: &[Event]) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn big() -> Message {
    Message::from_frames([
        Bytes::from_static(b"MARKER-big"),
        Bytes::new(),
        Bytes::from((0..1 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    ])
}

/// A handshaken CURVE pair (a: client, b: server).
fn secure_pair(ta: SocketType, tb: SocketType) -> (Link, CurveKeyPair, CurveKeyPair) {
    let ck = CurveKeyPair::generate();
    let sk = CurveKeyPair::generate();
    let mut l = Link::new(client(ta, &ck, &sk.public), server(tb, &sk));
    l.drive_accepting(true);
    assert!(
        l.a.is_ready() && l.b.is_ready(),
        "{:?} {:?}",
        l.a_events,
        l.b_events
    );
    (l, ck, sk)
}

#[test]
fn handshake_auth_request_and_messages_both_ways() {
    let ck = CurveKeyPair::generate();
    let sk = CurveKeyPair::generate();
    let mut l = Link::new(client(Dealer, &ck, &sk.public), server(Router, &sk));
    // Held until the handshake is done, then encrypted.
    l.a.send(sample_message()).unwrap();
    l.drive();
    assert!(!l.a.is_ready() && !l.b.is_ready());
    let [
        Event::AuthRequest {
            username,
            password,
            curve_public_key,
        },
    ] = &l.b_events[..]
    else {
        panic!("{:?}", l.b_events)
    };
    assert_eq!(*curve_public_key, Some(ck.public));
    assert_eq!(*username, ck.public.to_z85());
    assert!(password.is_empty());
    l.b.authenticate(true);
    l.drive();
    assert!(l.a.is_ready() && l.b.is_ready());
    let at_b = l.b.peer().unwrap();
    assert_eq!(at_b.socket_type, Dealer);
    assert_eq!(at_b.curve_public_key, Some(ck.public));
    assert_eq!(at_b.user_id.as_deref(), Some(ck.public.to_z85().as_str()));
    let at_a = l.a.peer().unwrap();
    assert_eq!(at_a.socket_type, Router);
    assert_eq!(at_a.curve_public_key, Some(sk.public));
    assert_eq!(at_a.user_id, None);
    assert_eq!(messages(&l.b_events), vec![sample_message()]);

    for _ in 0..3 {
        l.a.send(big()).unwrap();
        l.b.send(big()).unwrap();
        l.a.send(Message::from_frames([Bytes::new()])).unwrap();
    }
    l.drive();
    let mut want = Vec::new();
    for _ in 0..3 {
        want.push(big());
        want.push(Message::from_frames([Bytes::new()]));
    }
    assert_eq!(messages(&l.a_events), vec![big(), big(), big()]);
    assert_eq!(&messages(&l.b_events)[1..], &want[..]);
    assert!(!l.a.is_closed() && !l.b.is_closed());
}

#[test]
fn nothing_after_the_handshake_travels_in_clear() {
    let (mut l, _, _) = secure_pair(Pair, Pair);
    let a_from = l.a_out.len();
    let b_from = l.b_out.len();
    l.a.send(Message::from_frames([
        Bytes::from_static(b"MARKER-one"),
        Bytes::from_static(b"MARKER-two"),
    ]))
    .unwrap();
    l.b.send(big()).unwrap();
    l.drive();
    assert_eq!(messages(&l.b_events).len(), 1);
    assert_eq!(messages(&l.a_events), vec![big()]);
    for (out, frames) in [(&l.a_out[a_from..], 2), (&l.b_out[b_from..], 3)] {
        assert!(!out.windows(6).any(|w| w == b"MARKER"));
        // Each frame is a MESSAGE sent as libzmq sends it: a data frame without MORE.
        let mut buf = BytesMut::from(out);
        let mut n = 0;
        while let Some(f) = frame::decode(&mut buf, None).unwrap() {
            assert!(!f.more && !f.command, "{f:?}");
            assert_eq!(&f.body[..8], b"\x07MESSAGE");
            n += 1;
        }
        assert!(buf.is_empty());
        assert_eq!(n, frames);
    }
    // Short nonces go up by one per frame: the client's HELLO was 1 and INITIATE 2.
    let mut buf = BytesMut::from(&l.a_out[a_from..]);
    let nonces: Vec<u64> = std::iter::from_fn(|| frame::decode(&mut buf, None).unwrap())
        .map(|f| u64::from_be_bytes(f.body[8..16].try_into().unwrap()))
        .collect();
    assert_eq!(nonces, [3, 4]);
}

#[test]
fn commands_after_the_handshake_are_encrypted_too() {
    // PUB/SUB: SUBSCRIBE travels in a box, and the heartbeats' PING and PONG too.
    let ck = CurveKeyPair::generate();
    let sk = CurveKeyPair::generate();
    let mut cc = client(Sub, &ck, &sk.public);
    cc.heartbeat_interval = Some(Duration::from_millis(100));
    let mut l = Link::new(cc, server(Pub, &sk));
    l.a.send_subscribe(Bytes::from_static(b"MARKER-topic"));
    l.drive_accepting(true);
    assert!(
        l.b_events
            .contains(&Event::Subscribe(Bytes::from_static(b"MARKER-topic")))
    );
    let a_from = l.a_out.len();
    let b_from = l.b_out.len();
    for _ in 0..10 {
        l.now += Duration::from_millis(100);
        l.a.handle_timeout(l.now);
        l.b.handle_timeout(l.now);
        l.drive();
    }
    assert!(l.a.is_ready() && l.b.is_ready());
    // Ten PINGs went one way and ten PONGs the other, none of them readable.
    assert!(l.a_out.len() - a_from >= 10 * (2 + 33 + 4));
    assert!(l.b_out.len() - b_from >= 10 * (2 + 33 + 4));
    for out in [&l.a_out[..], &l.b_out[..]] {
        assert!(
            !out.windows(6)
                .any(|w| w == b"MARKER" || w == b"\x04PING\x00")
        );
        assert!(!out.windows(5).any(|w| w == b"\x04PONG"));
    }
    l.b.send(Message::from("MARKER-topic news")).unwrap();
    l.drive();
    assert_eq!(
        messages(&l.a_events),
        vec![Message::from("MARKER-topic news")]
    );
}

#[test]
fn accept_as_records_the_user_id() {
    let ck = CurveKeyPair::generate();
    let sk = CurveKeyPair::generate();
    let mut l = Link::new(client(Req, &ck, &sk.public), server(Rep, &sk));
    l.drive();
    l.b.accept_as("alice");
    l.drive();
    assert_eq!(l.b.peer().unwrap().user_id.as_deref(), Some("alice"));
}

#[test]
fn rejected_client_key_gets_error_400_and_both_sides_fail_as_auth() {
    let ck = CurveKeyPair::generate();
    let sk = CurveKeyPair::generate();
    let mut l = Link::new(client(Req, &ck, &sk.public), server(Rep, &sk));
    l.drive_accepting(false);
    assert!(matches!(
        closed_with(&l.b_events),
        Some(ProtoError::AuthFailed(_))
    ));
    let e = closed_with(&l.a_events).expect("client closed");
    assert!(
        matches!(e, ProtoError::AuthFailed(m) if m.contains("400")),
        "{e}"
    );
    assert!(
        !l.a_events
            .iter()
            .any(|e| matches!(e, Event::HandshakeSucceeded(_)))
    );
}

#[test]
fn wrong_server_key_fails_at_hello_with_error_400() {
    let ck = CurveKeyPair::generate();
    let sk = CurveKeyPair::generate();
    let other = CurveKeyPair::generate();
    let mut l = Link::new(client(Dealer, &ck, &other.public), server(Dealer, &sk));
    l.drive();
    let e = closed_with(&l.b_events).expect("server closed");
    assert!(
        matches!(e, ProtoError::Crypto(m) if m.contains("HELLO")),
        "{e}"
    );
    // The server sent its greeting and one ERROR "400" (no WELCOME), and asked nothing:
    // what makes libzmq's client stop reconnecting.
    let mut after = BytesMut::from(&l.b_out[greeting::GREETING_LEN..]);
    let f = frame::decode(&mut after, None).unwrap().expect("one frame");
    assert!(f.command);
    assert_eq!(&f.body[..], b"\x05ERROR\x03400");
    assert!(after.is_empty(), "nothing after the ERROR");
    assert!(
        !l.b_events
            .iter()
            .any(|e| matches!(e, Event::AuthRequest { .. }))
    );
    // The client fails on the keys (its owner retries that with a growing interval),
    // with a hint at the server key.
    let e = closed_with(&l.a_events).expect("client closed");
    assert!(
        matches!(e, ProtoError::Crypto(m) if m.contains("status 400") && m.contains("server key")),
        "{e}"
    );
}

#[test]
fn client_with_a_mismatched_key_pair_fails_at_the_vouch_or_up_front() {
    let ck = CurveKeyPair::generate();
    let sk = CurveKeyPair::generate();
    let mut c = client(Dealer, &ck, &sk.public);
    if let MechanismConfig::CurveClient { public, .. } = &mut c.mechanism {
        *public = CurveKeyPair::generate().public;
    }
    assert!(matches!(c.validate(), Err(ProtoError::InvalidArgument(m)) if m.contains("CURVE")));
    let conn = Connection::new(c, Instant::now());
    assert!(conn.is_closed());
}

/// Every byte of each handshake command, flipped in turn, makes the handshake fail at
/// the receiver (the boxes are authenticated; the plain fields are checked).
#[test]
fn tampered_handshake_bytes_fail() {
    let glen = greeting::GREETING_LEN;
    // Client to server: HELLO is the frame after the greeting (2-byte header, 200 bytes).
    // Server to client: WELCOME likewise (168 bytes), then READY.
    let hello = glen + 2..glen + 2 + 200;
    let welcome = glen + 2..glen + 2 + 168;
    // Sample each command: its name and version, every 11th byte, its last bytes (and,
    // below, HELLO's short nonce, which the 11-byte stride misses).
    let picks = |r: std::ops::Range<usize>| -> Vec<usize> {
        r.clone()
            .filter(|i| (i - r.start) % 11 == 0 || (i - r.start) < 12 || r.end - i <= 2)
            .collect()
    };
    for off in picks(hello.clone()).into_iter().chain([hello.start + 115]) {
        let ck = CurveKeyPair::generate();
        let sk = CurveKeyPair::generate();
        let mut l = Link::new(client(Dealer, &ck, &sk.public), server(Dealer, &sk));
        l.tamper_a.push(off);
        l.drive_accepting(true);
        assert!(
            l.b.is_closed(),
            "HELLO byte {} not checked",
            off - hello.start
        );
        assert!(!l.a.is_ready());
    }
    for off in picks(welcome.clone()) {
        let ck = CurveKeyPair::generate();
        let sk = CurveKeyPair::generate();
        let mut l = Link::new(client(Dealer, &ck, &sk.public), server(Dealer, &sk));
        l.tamper_b.push(off);
        l.drive_accepting(true);
        assert!(
            l.a.is_closed(),
            "WELCOME byte {} not checked",
            off - welcome.start
        );
        assert!(!l.b.is_ready());
    }
    // INITIATE and READY: their offsets depend on the metadata; find them first.
    let (clean, _, _) = secure_pair(Dealer, Dealer);
    let initiate_at = glen + 2 + 200;
    let mut buf = BytesMut::from(&clean.a_out[initiate_at..]);
    let initiate = frame::decode(&mut buf, None).unwrap().unwrap();
    let ilen = initiate.body.len();
    let ihdr = if ilen > 255 { 9 } else { 2 };
    let ready_at = glen + 2 + 168;
    let mut buf = BytesMut::from(&clean.b_out[ready_at..]);
    let rlen = frame::decode(&mut buf, None).unwrap().unwrap().body.len();
    for (i, off) in picks(initiate_at + ihdr..initiate_at + ihdr + ilen)
        .into_iter()
        .enumerate()
    {
        let ck = CurveKeyPair::generate();
        let sk = CurveKeyPair::generate();
        let mut l = Link::new(client(Dealer, &ck, &sk.public), server(Dealer, &sk));
        l.tamper_a.push(off);
        l.drive_accepting(true);
        assert!(l.b.is_closed(), "INITIATE byte {i} not checked");
        assert!(
            !l.b_events
                .iter()
                .any(|e| matches!(e, Event::AuthRequest { .. })),
            "asked about a tampered INITIATE"
        );
    }
    for off in picks(ready_at + 2..ready_at + 2 + rlen) {
        let ck = CurveKeyPair::generate();
        let sk = CurveKeyPair::generate();
        let mut l = Link::new(client(Dealer, &ck, &sk.public), server(Dealer, &sk));
        l.tamper_b.push(off);
        l.drive_accepting(true);
        assert!(
            l.a.is_closed(),
            "READY byte {} not checked",
            off - ready_at - 2
        );
        assert!(!l.a.is_ready());
    }
}

#[test]
fn tampered_message_fails() {
    for at in [0usize, 1, 2, 8, 10, 17, 25, 33, 40, 60] {
        let (mut l, _, _) = secure_pair(Pair, Pair);
        let from = l.a_out.len();
        l.tamper_a.push(from + at);
        l.a.send(Message::from(&[7u8; 40][..])).unwrap();
        l.drive();
        assert!(l.b.is_closed(), "MESSAGE byte {at} not checked");
        assert!(messages(&l.b_events).is_empty());
        assert!(matches!(
            closed_with(&l.b_events),
            Some(ProtoError::Crypto(_) | ProtoError::Malformed(_))
        ));
    }
}

#[test]
fn replayed_or_reordered_messages_fail() {
    // Replay: the same MESSAGE delivered twice.
    let (mut l, _, _) = secure_pair(Pair, Pair);
    l.a.send(Message::from("once")).unwrap();
    l.drive();
    let from = l.a_out.len();
    l.a.send(Message::from("twice?")).unwrap();
    l.drive();
    assert_eq!(messages(&l.b_events).len(), 2);
    let again = l.a_out[from..].to_vec();
    l.b.handle_input(&again, l.now);
    l.drive();
    let e = closed_with(&l.b_events).expect("closed");
    assert!(
        matches!(e, ProtoError::Crypto(m) if m.contains("nonce")),
        "{e}"
    );
    assert_eq!(messages(&l.b_events).len(), 2);
    // The error sticks: a good message later is not read.
    assert!(l.b.is_closed());

    // Reordering: the second MESSAGE before the first.
    let (mut l, _, _) = secure_pair(Pair, Pair);
    l.pull();
    let start = l.a_out.len();
    l.a.send(Message::from("first")).unwrap();
    l.pull();
    let mid = l.a_out.len();
    l.a.send(Message::from("second")).unwrap();
    l.pull();
    let first = l.a_out[start..mid].to_vec();
    let second = l.a_out[mid..].to_vec();
    l.a_sent = l.a_out.len();
    l.b.handle_input(&second, l.now);
    l.b.handle_input(&first, l.now);
    l.drive();
    assert_eq!(messages(&l.b_events), vec![Message::from("second")]);
    assert!(matches!(
        closed_with(&l.b_events),
        Some(ProtoError::Crypto(_))
    ));
}

#[test]
fn commands_out_of_order_or_malformed_fail_the_server() {
    let sk = CurveKeyPair::generate();
    let ck = CurveKeyPair::generate();
    // A real client's INITIATE, sent to a fresh server that never saw the HELLO.
    let mut l = Link::new(client(Dealer, &ck, &sk.public), server(Dealer, &sk));
    l.drive_accepting(true);
    let initiate = &l.a_out[greeting::GREETING_LEN + 2 + 200..];
    let hello = &l.a_out[greeting::GREETING_LEN..greeting::GREETING_LEN + 2 + 200];
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("INITIATE first", initiate.to_vec()),
        ("PLAIN HELLO", {
            let mut b = BytesMut::new();
            frame::encode(&mut b, false, true, b"\x05HELLO\x01a\x01b");
            b.to_vec()
        }),
        ("READY", {
            let mut b = BytesMut::new();
            frame::encode(
                &mut b,
                false,
                true,
                b"\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER",
            );
            b.to_vec()
        }),
        ("a data frame", vec![0, 1, b'x']),
    ];
    // HELLO with a wrong version, then with nonzero padding.
    for at in [2 + 6, 2 + 40] {
        let mut h = hello.to_vec();
        h[at] = 9;
        cases.push(("a bad HELLO", h));
    }
    // HELLO twice: the second arrives when INITIATE is expected.
    let mut twice = hello.to_vec();
    twice.extend_from_slice(hello);
    cases.push(("HELLO twice", twice));
    for (what, bytes) in cases {
        let now = Instant::now();
        let mut s = Connection::new(server(Dealer, &sk), now);
        s.handle_input(&peer_greeting(3, 1, "CURVE", false), now);
        s.handle_input(&bytes, now);
        assert!(s.is_closed(), "{what}");
        assert!(
            matches!(
                s.error(),
                Some(ProtoError::Malformed(_) | ProtoError::Crypto(_))
            ),
            "{what}: {:?}",
            s.error()
        );
    }
}

#[test]
fn commands_out_of_order_fail_the_client() {
    let sk = CurveKeyPair::generate();
    let ck = CurveKeyPair::generate();
    let mut l = Link::new(client(Dealer, &ck, &sk.public), server(Dealer, &sk));
    l.drive_accepting(true);
    let welcome_end = greeting::GREETING_LEN + 2 + 168;
    let ready = l.b_out[welcome_end..].to_vec();
    let welcome = l.b_out[greeting::GREETING_LEN..welcome_end].to_vec();
    let mut twice = welcome.clone();
    twice.extend_from_slice(&welcome);
    for (what, bytes) in [("READY first", ready), ("WELCOME twice", twice)] {
        let now = Instant::now();
        let mut c = Connection::new(client(Dealer, &ck, &sk.public), now);
        c.handle_input(&peer_greeting(3, 1, "CURVE", true), now);
        c.handle_input(&bytes, now);
        assert!(c.is_closed(), "{what}");
        // The client never sends ERROR (RFC 26): only greeting and HELLO went out.
        let mut out = Vec::new();
        while let Some(b) = c.poll_transmit() {
            out.extend_from_slice(&b);
        }
        assert_eq!(out.len(), greeting::GREETING_LEN + 2 + 200, "{what}");
    }
}

#[test]
fn two_clients_or_two_servers_are_a_mechanism_error() {
    let k1 = CurveKeyPair::generate();
    let k2 = CurveKeyPair::generate();
    let mut l = Link::new(client(Pair, &k1, &k2.public), client(Pair, &k2, &k1.public));
    l.drive();
    assert!(matches!(
        closed_with(&l.a_events),
        Some(ProtoError::Mechanism(_))
    ));
    let mut l = Link::new(server(Pair, &k1), server(Pair, &k2));
    l.drive();
    assert!(matches!(
        closed_with(&l.a_events),
        Some(ProtoError::Mechanism(_))
    ));
    // And CURVE against NULL or PLAIN is a mechanism mismatch.
    let mut l = Link::new(client(Pair, &k1, &k2.public), Config::new(Pair));
    l.drive();
    assert!(matches!(
        closed_with(&l.a_events),
        Some(ProtoError::Mechanism(_))
    ));
}

#[test]
fn incompatible_socket_types_fail_after_the_keys_check_out() {
    let ck = CurveKeyPair::generate();
    let sk = CurveKeyPair::generate();
    let mut l = Link::new(client(Pub, &ck, &sk.public), server(Push, &sk));
    l.drive_accepting(true);
    assert_eq!(
        closed_with(&l.b_events),
        Some(&ProtoError::IncompatibleSocketType {
            ours: Push,
            theirs: Pub
        })
    );
    // The server's ERROR names both types.
    let e = closed_with(&l.a_events).expect("client closed");
    assert!(
        matches!(e, ProtoError::PeerError(m) if m.contains("PUB")),
        "{e}"
    );
}

#[test]
fn an_expired_cookie_is_refused() {
    let ck = CurveKeyPair::generate();
    let sk = CurveKeyPair::generate();
    let mut l = Link::new(client(Dealer, &ck, &sk.public), server(Dealer, &sk));
    // Hold the client's stream after HELLO, so its INITIATE comes late.
    l.hold_a_at = Some(greeting::GREETING_LEN + 2 + 200);
    l.drive();
    assert!(!l.b.is_closed() && l.a_out.len() > greeting::GREETING_LEN + 2 + 200);
    l.now += COOKIE_LIFETIME + Duration::from_secs(1);
    l.hold_a_at = None;
    l.drive_accepting(true);
    let e = closed_with(&l.b_events).expect("server closed");
    assert!(
        matches!(e, ProtoError::Crypto(m) if m.contains("cookie")),
        "{e}"
    );
}

#[test]
fn close_after_the_handshake_sends_an_encrypted_error() {
    let (mut l, _, _) = secure_pair(Dealer, Router);
    l.a.close("MARKER bye");
    l.drive();
    assert!(!l.a_out.windows(6).any(|w| w == b"MARKER"));
    // The server reads it as the peer's ERROR.
    let e = closed_with(&l.b_events).expect("server closed");
    assert_eq!(e, &ProtoError::PeerError("MARKER bye".into()));
}

#[test]
fn max_msg_size_counts_the_payload_not_the_box() {
    let ck = CurveKeyPair::generate();
    let sk = CurveKeyPair::generate();
    let mut s = server(Pair, &sk);
    s.max_msg_size = Some(100);
    let mut l = Link::new(client(Pair, &ck, &sk.public), s);
    l.drive_accepting(true);
    assert!(l.b.is_ready());
    l.a.send(Message::from(&[1u8; 100][..])).unwrap();
    l.drive();
    assert_eq!(messages(&l.b_events).len(), 1);
    l.a.send(Message::from(&[1u8; 101][..])).unwrap();
    l.drive();
    assert!(matches!(
        closed_with(&l.b_events),
        Some(ProtoError::MessageTooLarge { .. })
    ));
}

#[test]
fn debug_output_redacts_curve_secrets() {
    let k = CurveKeyPair::generate();
    let c = client(Pair, &k, &k.public);
    let s = format!("{c:?}");
    assert!(!s.contains(&k.secret.to_z85()), "{s}");
    assert!(s.contains(&k.public.to_z85()), "{s}");
}

// ---------------------------------------------------------------------------------------
// RFC 26 byte vectors

/// Decodes the frames of a stream after its 64-byte greeting: (command flag, body).
fn frames_after_greeting(stream: &[u8]) -> Vec<(bool, Bytes)> {
    let mut b = BytesMut::from(&stream[greeting::GREETING_LEN..]);
    let mut out = Vec::new();
    while let Some(f) = frame::decode(&mut b, None).unwrap() {
        assert!(!f.more, "no CURVE frame has the outer MORE flag");
        out.push((f.command, f.body));
    }
    assert!(b.is_empty(), "a partial frame at the end");
    out
}

/// `Box[plain](from's secret -> to's public)` as NaCl lays it out (MAC, then
/// ciphertext), made by RustCrypto's `crypto_box`, independently of lwmq's code.
fn nacl_box(to: &[u8; 32], from: &[u8; 32], nonce: &[u8], plain: &[u8]) -> Vec<u8> {
    use crypto_box::aead::Aead;
    let b = crypto_box::SalsaBox::new(
        &crypto_box::PublicKey::from(*to),
        &crypto_box::SecretKey::from(*from),
    );
    b.encrypt(nonce.into(), plain).unwrap()
}

/// A long nonce and the box under it: `N16 + Box[plain](from -> to)`, nonce
/// `prefix` + `N16` (WELCOME's box and the vouch).
fn long_box(
    prefix: &[u8; 8],
    n: &[u8; 16],
    to: &[u8; 32],
    from: &[u8; 32],
    plain: &[u8],
) -> Vec<u8> {
    cat(&[n, &nacl_box(to, from, &cat(&[prefix, n]), plain)])
}

fn nacl_secretbox(key: &[u8; 32], nonce: &[u8], plain: &[u8]) -> Vec<u8> {
    use crypto_box::aead::{Aead, KeyInit};
    crypto_secretbox::XSalsa20Poly1305::new(key.into())
        .encrypt(nonce.into(), plain)
        .unwrap()
}

fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    *crypto_box::SecretKey::from(*secret).public_key().as_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// One ZMTP metadata property (RFC 23/37): name length, name, value length (u32 BE),
/// value.
fn property(name: &str, value: &[u8]) -> Vec<u8> {
    cat(&[
        &[name.len() as u8],
        name.as_bytes(),
        &(value.len() as u32).to_be_bytes(),
        value,
    ])
}

/// Every handshake command and the first MESSAGEs each way, byte for byte, against RFC
/// 26's layouts with libzmq's choices where the RFC leaves them open: short nonces from
/// 1 (client HELLO 1, INITIATE 2, first MESSAGE 3; server READY 1, first MESSAGE 2),
/// handshake commands as command frames, MESSAGE as a data frame without flags, MORE
/// and COMMAND in the flags byte inside the box. The boxes are built here with
/// `crypto_box` from the same keys and nonces (the test supplies the "random" ones).
#[test]
fn rfc26_commands_byte_for_byte() {
    use crate::proto::mechanism::curve::test_random;
    // Long-term keys: libzmq's documented test keys (doc/zmq_curve.adoc).
    let c = CurveKeyPair::from_secret(
        CurveSecretKey::from_z85("D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs").unwrap(),
    );
    let s = CurveKeyPair::from_secret(
        CurveSecretKey::from_z85("JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6").unwrap(),
    );
    let (c_sec, c_pub) = (*c.secret.as_bytes(), *c.public.as_bytes());
    let (s_sec, s_pub) = (*s.secret.as_bytes(), *s.public.as_bytes());
    // What the handshake draws, in order: c', s', the cookie key K, the cookie nonce,
    // the WELCOME nonce, the vouch nonce.
    let c_short_sec = [0x11u8; 32];
    let s_short_sec = [0x22u8; 32];
    let cookie_key = [0x33u8; 32];
    let cookie_nonce = [0x44u8; 16];
    let welcome_nonce = [0x55u8; 16];
    let vouch_nonce = [0x66u8; 16];
    let (c_short, s_short) = (public_of(&c_short_sec), public_of(&s_short_sec));
    test_random::supply([
        c_short_sec.to_vec(),
        s_short_sec.to_vec(),
        cookie_key.to_vec(),
        cookie_nonce.to_vec(),
        welcome_nonce.to_vec(),
        vouch_nonce.to_vec(),
    ]);

    let mut l = Link::new(client(Dealer, &c, &s.public), server(Dealer, &s));
    l.drive_accepting(true);
    assert!(
        l.a.is_ready() && l.b.is_ready(),
        "{:?} {:?}",
        l.a_events,
        l.b_events
    );
    assert_eq!(test_random::left(), 0, "every supplied draw was used");
    l.a.send(Message::from_frames([
        Bytes::from_static(b"one"),
        Bytes::from_static(b"two"),
    ]))
    .unwrap();
    l.b.send(Message::from(Bytes::from_static(b"back")))
        .unwrap();
    l.drive();

    let client_frames = frames_after_greeting(&l.a_out);
    let server_frames = frames_after_greeting(&l.b_out);
    assert_eq!(client_frames.len(), 4, "HELLO, INITIATE, two MESSAGEs");
    assert_eq!(server_frames.len(), 3, "WELCOME, READY, one MESSAGE");
    for (i, (command, _)) in client_frames.iter().chain(&server_frames).enumerate() {
        let handshake = i < 2 || (4..6).contains(&i);
        assert_eq!(*command, handshake, "frame {i}: command flag");
    }

    // HELLO (200 bytes): name, version 1.0, 72 bytes of padding, C', short nonce 1,
    // Box[64 zeros](C'->S) with nonce "CurveZMQHELLO---" + 1.
    let n1 = 1u64.to_be_bytes();
    let hello = cat(&[
        b"\x05HELLO",
        &[1, 0],
        &[0; 72],
        &c_short,
        &n1,
        &nacl_box(
            &s_pub,
            &c_short_sec,
            &cat(&[b"CurveZMQHELLO---", &n1]),
            &[0; 64],
        ),
    ]);
    assert_eq!(hello.len(), 200);
    assert_eq!(&client_frames[0].1[..], &hello[..], "HELLO");

    // WELCOME (168 bytes): name, a 16-byte nonce, Box[S' + cookie](S->C') with nonce
    // "WELCOME-" + it; cookie = nonce + SecretBox[C' + s'](K), nonce "COOKIE--" + it.
    let cookie = cat(&[
        &cookie_nonce,
        &nacl_secretbox(
            &cookie_key,
            &cat(&[b"COOKIE--", &cookie_nonce]),
            &cat(&[&c_short, &s_short_sec]),
        ),
    ]);
    assert_eq!(cookie.len(), 96);
    let welcome = cat(&[
        b"\x07WELCOME",
        &long_box(
            b"WELCOME-",
            &welcome_nonce,
            &c_short,
            &s_sec,
            &cat(&[&s_short, &cookie]),
        ),
    ]);
    assert_eq!(welcome.len(), 168);
    assert_eq!(&server_frames[0].1[..], &welcome[..], "WELCOME");

    // INITIATE: name, the cookie, short nonce 2, Box[C + vouch + metadata](C'->S') with
    // nonce "CurveZMQINITIATE" + 2; vouch = nonce + Box[C' + S](C->S'), "VOUCH---".
    let n2 = 2u64.to_be_bytes();
    let vouch = long_box(
        b"VOUCH---",
        &vouch_nonce,
        &s_short,
        &c_sec,
        &cat(&[&c_short, &s_pub]),
    );
    assert_eq!(vouch.len(), 96);
    // A DEALER's metadata, as libzmq's: Socket-Type, and Identity (empty).
    let client_md = cat(&[
        &property("Socket-Type", b"DEALER"),
        &property("Identity", b""),
    ]);
    let initiate = cat(&[
        b"\x08INITIATE",
        &cookie,
        &n2,
        &nacl_box(
            &s_short,
            &c_short_sec,
            &cat(&[b"CurveZMQINITIATE", &n2]),
            &cat(&[&c_pub, &vouch, &client_md]),
        ),
    ]);
    assert_eq!(initiate.len(), 9 + 96 + 8 + 16 + 32 + 96 + client_md.len());
    assert_eq!(&client_frames[1].1[..], &initiate[..], "INITIATE");

    // READY: name, short nonce 1, Box[metadata](S'->C') with nonce "CurveZMQREADY---" + 1.
    let server_md = cat(&[
        &property("Socket-Type", b"DEALER"),
        &property("Identity", b""),
    ]);
    let ready = cat(&[
        b"\x05READY",
        &n1,
        &nacl_box(
            &c_short,
            &s_short_sec,
            &cat(&[b"CurveZMQREADY---", &n1]),
            &server_md,
        ),
    ]);
    assert_eq!(&server_frames[1].1[..], &ready[..], "READY");

    // MESSAGE: name, short nonce, Box[flags + frame](C'->S') with nonce
    // "CurveZMQMESSAGEC" + n from the client (3, 4...), "CurveZMQMESSAGES" + n from the
    // server (2...); flags bit 0 is MORE.
    let message = |prefix: &[u8], n: u64, to: &[u8; 32], from: &[u8; 32], plain: &[u8]| {
        let nb = n.to_be_bytes();
        cat(&[
            b"\x07MESSAGE",
            &nb,
            &nacl_box(to, from, &cat(&[prefix, &nb]), plain),
        ])
    };
    let m1 = message(b"CurveZMQMESSAGEC", 3, &s_short, &c_short_sec, b"\x01one");
    let m2 = message(b"CurveZMQMESSAGEC", 4, &s_short, &c_short_sec, b"\x00two");
    let m3 = message(b"CurveZMQMESSAGES", 2, &c_short, &s_short_sec, b"\x00back");
    assert_eq!(
        &client_frames[2].1[..],
        &m1[..],
        "first MESSAGE from the client"
    );
    assert_eq!(
        &client_frames[3].1[..],
        &m2[..],
        "second MESSAGE from the client"
    );
    assert_eq!(
        &server_frames[2].1[..],
        &m3[..],
        "first MESSAGE from the server"
    );
    assert_eq!(m1.len(), 8 + 8 + 16 + 1 + 3);
}
