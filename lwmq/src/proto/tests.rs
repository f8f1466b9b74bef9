//! Tests of the whole machine: in-memory pairs (two connections wired to each other,
//! quinn-style) and byte vectors fed to a single connection.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::command::{Command, Metadata};
use super::frame;
use super::greeting;
use super::*;
use crate::SocketType::{self, *};

mod curve;

/// Two connections and a clock; `drive` moves bytes both ways until nothing moves.
struct Pair {
    a: Connection,
    b: Connection,
    now: Instant,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
    /// Deliver bytes from b to a (false: they are dropped, a silent peer).
    b_to_a: bool,
}

impl Pair {
    fn new(a: Config, b: Config) -> Pair {
        let now = Instant::now();
        Pair {
            a: Connection::new(a, now),
            b: Connection::new(b, now),
            now,
            a_events: Vec::new(),
            b_events: Vec::new(),
            b_to_a: true,
        }
    }

    fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                self.b.handle_input(&t, self.now);
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                if self.b_to_a {
                    self.a.handle_input(&t, self.now);
                }
            }
            while let Some(e) = self.a.poll_event() {
                moved = true;
                self.a_events.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                moved = true;
                self.b_events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("pair did not settle");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.drive();
    }
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

fn sample_message() -> Message {
    Message::from_frames([
        Bytes::from_static(b"\x05head"),
        Bytes::new(),
        Bytes::from(vec![0xAB; 100_000]),
        Bytes::from_static(b"tail"),
    ])
}

#[test]
fn every_valid_pair_handshakes_and_exchanges_messages() {
    let mut checked = 0;
    for ta in SocketType::ALL {
        for tb in SocketType::ALL {
            if !ta.is_compatible_with(tb) {
                continue;
            }
            checked += 1;
            let mut p = Pair::new(Config::new(ta), Config::new(tb));
            // Queued before the handshake: held, then written.
            p.a.send(sample_message()).unwrap();
            p.drive();
            assert!(p.a.is_ready() && p.b.is_ready(), "{ta}-{tb}");
            assert_eq!(p.a.peer().unwrap().socket_type, tb);
            assert_eq!(p.b.peer().unwrap().socket_type, ta);
            assert_eq!(p.a.peer().unwrap().minor_version, 1);
            assert!(matches!(p.a_events[0], Event::HandshakeSucceeded(_)));
            assert!(matches!(p.b_events[0], Event::HandshakeSucceeded(_)));
            p.b.send(sample_message()).unwrap();
            p.drive();
            assert_eq!(messages(&p.b_events), vec![sample_message()], "{ta}-{tb}");
            assert_eq!(messages(&p.a_events), vec![sample_message()], "{ta}-{tb}");
            assert_eq!(p.a.pending_transmit_bytes(), 0);
        }
    }
    assert_eq!(checked, 21);
}

#[test]
fn every_invalid_pair_is_refused_by_both_sides_with_both_names() {
    for ta in SocketType::ALL {
        for tb in SocketType::ALL {
            if ta.is_compatible_with(tb) {
                continue;
            }
            let mut p = Pair::new(Config::new(ta), Config::new(tb));
            p.drive();
            assert_eq!(
                closed_with(&p.a_events),
                Some(&ProtoError::IncompatibleSocketType {
                    ours: ta,
                    theirs: tb
                }),
                "{ta}-{tb}"
            );
            assert_eq!(
                closed_with(&p.b_events),
                Some(&ProtoError::IncompatibleSocketType {
                    ours: tb,
                    theirs: ta
                })
            );
            assert!(
                !p.a_events
                    .iter()
                    .any(|e| matches!(e, Event::HandshakeSucceeded(_)))
            );
            assert!(p.a.send(Message::from("x")).is_err());
        }
    }
}

/// A fake peer: its greeting, then its commands, as bytes.
fn peer_greeting(major: u8, minor: u8, mechanism: &str, as_server: bool) -> Vec<u8> {
    let mut g = greeting::encode_first().to_vec();
    g[10] = major;
    let mut rest = greeting::encode_rest(mechanism, as_server);
    rest[0] = minor;
    g.extend_from_slice(&rest);
    g
}

fn command_frame(cmd: &Command) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame::encode(&mut out, false, true, &cmd.encode());
    out.to_vec()
}

fn ready_of(t: SocketType) -> Command {
    let mut md = Metadata::default();
    md.push("Socket-Type", t.as_str());
    Command::Ready(md)
}

fn drain(c: &mut Connection) -> Vec<u8> {
    let mut v = Vec::new();
    while let Some(b) = c.poll_transmit() {
        v.extend_from_slice(&b);
    }
    v
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// A NULL connection of type `ours`, handshaken with a fake 3.`minor` peer of type `theirs`.
fn ready_against(ours: SocketType, theirs: SocketType, minor: u8) -> (Connection, Instant) {
    let now = Instant::now();
    let mut c = Connection::new(Config::new(ours), now);
    drain(&mut c);
    c.handle_input(&peer_greeting(3, minor, "NULL", false), now);
    c.handle_input(&command_frame(&ready_of(theirs)), now);
    assert!(c.is_ready(), "{:?}", events(&mut c));
    drain(&mut c);
    events(&mut c);
    (c, now)
}

#[test]
fn greeting_is_sent_in_two_stages_without_waiting_for_the_peer() {
    let now = Instant::now();
    let mut c = Connection::new(Config::new(Dealer), now);
    assert_eq!(drain(&mut c), greeting::encode_first());
    // The peer's signature alone does not release the rest.
    let g = peer_greeting(3, 1, "NULL", false);
    c.handle_input(&g[..10], now);
    assert!(drain(&mut c).is_empty());
    // Its major version does: all of the rest of ours, before the peer's 64 bytes.
    c.handle_input(&g[10..11], now);
    let rest = drain(&mut c);
    assert_eq!(rest, greeting::encode_rest("NULL", false));
    assert_eq!(&rest[1..5], b"NULL");
    // The rest of the peer's greeting: our READY goes out.
    c.handle_input(&g[11..], now);
    let ready = drain(&mut c);
    let mut buf = BytesMut::from(&ready[..]);
    let f = frame::decode(&mut buf, None).unwrap().unwrap();
    assert!(f.command);
    let Command::Ready(md) = Command::parse(f.body).unwrap() else {
        panic!("expected READY")
    };
    assert_eq!(md.get("socket-type").unwrap(), "DEALER");
    // libzmq sends an (empty) Identity for DEALER; so do we.
    assert_eq!(md.get("Identity").unwrap(), "");
    assert!(!c.is_ready());
}

#[test]
fn old_peers_are_refused_with_a_clear_error() {
    for (major, want) in [(1u8, 2u8), (0, 1)] {
        let now = Instant::now();
        let mut c = Connection::new(Config::new(Pair), now);
        drain(&mut c);
        c.handle_input(&peer_greeting(major, 0, "NULL", false)[..11], now);
        assert!(c.is_closed());
        let ev = events(&mut c);
        let Some(Event::Closed(e)) = ev.last() else {
            panic!("{ev:?}")
        };
        assert_eq!(
            *e,
            ProtoError::UnsupportedVersion {
                major: want,
                minor: 0
            }
        );
        assert!(e.to_string().contains("3.0 or later"), "{e}");
        // Nothing of the rest of our greeting was sent to it.
        assert!(drain(&mut c).is_empty());
    }
}

#[test]
fn zmtp_3_0_peer_gets_subscriptions_as_data_frames() {
    let (mut c, now) = ready_against(Sub, Pub, 0);
    assert_eq!(c.peer().unwrap().minor_version, 0);
    c.send_subscribe(Bytes::from_static(b"news"));
    c.send_cancel(Bytes::from_static(b"news"));
    assert_eq!(drain(&mut c), b"\x00\x05\x01news\x00\x05\x00news");
    let _ = now;
}

#[test]
fn zmtp_3_1_peer_gets_subscribe_commands() {
    let (mut c, _) = ready_against(XSub, XPub, 1);
    c.send_subscribe(Bytes::from_static(b"news"));
    c.send_cancel(Bytes::new());
    assert_eq!(
        drain(&mut c),
        b"\x04\x0e\x09SUBSCRIBEnews\x04\x07\x06CANCEL"
    );
}

#[test]
fn subscriptions_held_until_the_handshake_use_the_negotiated_form() {
    let now = Instant::now();
    let mut c = Connection::new(Config::new(Sub), now);
    c.send_subscribe(Bytes::from_static(b"a"));
    drain(&mut c);
    c.handle_input(&peer_greeting(3, 0, "NULL", false), now);
    drain(&mut c); // our greeting rest and READY
    c.handle_input(&command_frame(&ready_of(Pub)), now);
    assert_eq!(drain(&mut c), b"\x00\x02\x01a");
}

#[test]
fn publisher_accepts_both_subscription_forms() {
    let (mut c, now) = ready_against(XPub, XSub, 1);
    let mut wire = command_frame(&Command::Subscribe(Bytes::from_static(b"cmd")));
    wire.extend_from_slice(b"\x00\x05\x01data");
    wire.extend_from_slice(&command_frame(&Command::Cancel(Bytes::from_static(b"cmd"))));
    wire.extend_from_slice(b"\x00\x05\x00data");
    // A multipart message starting with 0x01 is data, not a subscription.
    wire.extend_from_slice(b"\x01\x02\x01x\x00\x00");
    c.handle_input(&wire, now);
    assert_eq!(
        events(&mut c),
        vec![
            Event::Subscribe(Bytes::from_static(b"cmd")),
            Event::Subscribe(Bytes::from_static(b"data")),
            Event::Cancel(Bytes::from_static(b"cmd")),
            Event::Cancel(Bytes::from_static(b"data")),
            Event::Message(Message::from_frames([&b"\x01x"[..], &b""[..]])),
        ]
    );
}

#[test]
fn non_publishers_see_0x01_frames_as_data_and_ignore_subscribe_commands() {
    let (mut c, now) = ready_against(Pull, Push, 1);
    let mut wire = command_frame(&Command::Subscribe(Bytes::from_static(b"x")));
    wire.extend_from_slice(b"\x00\x02\x01a");
    c.handle_input(&wire, now);
    assert_eq!(
        events(&mut c),
        vec![Event::Message(Message::from(&b"\x01a"[..]))]
    );
}

#[test]
fn in_memory_pair_subscriptions() {
    let mut p = Pair::new(Config::new(Sub), Config::new(Pub));
    p.a.send_subscribe(Bytes::from_static(b"t"));
    p.drive();
    p.a.send_cancel(Bytes::from_static(b"t"));
    p.drive();
    assert_eq!(
        &p.b_events[1..],
        &[
            Event::Subscribe(Bytes::from_static(b"t")),
            Event::Cancel(Bytes::from_static(b"t"))
        ]
    );
}

#[test]
fn mechanism_mismatch_is_fatal_without_error_command() {
    let now = Instant::now();
    let mut c = Connection::new(Config::new(Pair), now);
    drain(&mut c);
    c.handle_input(&peer_greeting(3, 1, "PLAIN", true), now);
    let rest = drain(&mut c);
    assert_eq!(rest.len(), 53, "only our greeting's rest, no ERROR");
    assert!(matches!(
        events(&mut c).last(),
        Some(Event::Closed(ProtoError::Mechanism(m))) if m.contains("NULL") && m.contains("PLAIN")
    ));

    // Two PLAIN servers.
    let mut s = Config::new(Pair);
    s.mechanism = MechanismConfig::PlainServer;
    let mut c = Connection::new(s, now);
    c.handle_input(&peer_greeting(3, 1, "PLAIN", true), now);
    assert_eq!(c.poll_event(), None, "Closed waits for the transmit queue");
    drain(&mut c);
    assert!(matches!(
        events(&mut c).last(),
        Some(Event::Closed(ProtoError::Mechanism(_)))
    ));
}

fn plain_client(t: SocketType, user: &str, pw: &str) -> Config {
    let mut c = Config::new(t);
    c.mechanism = MechanismConfig::PlainClient {
        username: user.into(),
        password: pw.into(),
    };
    c
}

fn plain_server(t: SocketType) -> Config {
    let mut c = Config::new(t);
    c.mechanism = MechanismConfig::PlainServer;
    c
}

#[test]
fn plain_pair_accepts_the_right_password() {
    let mut p = Pair::new(
        plain_client(Dealer, "admin", "secret"),
        plain_server(Router),
    );
    p.a.send(Message::from("early")).unwrap();
    p.drive();
    assert!(!p.a.is_ready() && !p.b.is_ready());
    let [
        Event::AuthRequest {
            username,
            password,
            curve_public_key: None,
        },
    ] = &p.b_events[..]
    else {
        panic!("{:?}", p.b_events)
    };
    assert_eq!((username.as_str(), password.as_str()), ("admin", "secret"));
    p.b.authenticate(true);
    p.drive();
    assert!(p.a.is_ready() && p.b.is_ready());
    assert_eq!(p.b.peer().unwrap().user_id.as_deref(), Some("admin"));
    assert_eq!(p.a.peer().unwrap().user_id, None);
    assert_eq!(messages(&p.b_events), vec![Message::from("early")]);
    // A second answer is ignored.
    p.b.authenticate(false);
    assert!(p.b.is_ready());
}

#[test]
fn plain_rejection_sends_error_400_and_fails_both_sides() {
    let mut p = Pair::new(plain_client(Req, "admin", "wrong"), plain_server(Rep));
    p.drive();
    p.b.authenticate(false);
    // The ERROR is queued; Closed only comes once it has been taken.
    assert!(p.b.is_closed());
    assert_eq!(p.b.poll_event(), None);
    let bytes = drain(&mut p.b);
    assert_eq!(bytes, command_frame(&Command::Error("400".into())));
    assert!(matches!(
        p.b.poll_event(),
        Some(Event::Closed(ProtoError::AuthFailed(_)))
    ));
    p.a.handle_input(&bytes, p.now);
    assert!(matches!(
        events(&mut p.a).last(),
        Some(Event::Closed(ProtoError::AuthFailed(m))) if m.contains("rejected")
    ));
}

#[test]
fn plain_byte_vectors_client_side() {
    let now = Instant::now();
    let mut c = Connection::new(plain_client(Dealer, "u", "p"), now);
    drain(&mut c);
    c.handle_input(&peer_greeting(3, 1, "PLAIN", true), now);
    let out = drain(&mut c);
    assert_eq!(&out[..53], &greeting::encode_rest("PLAIN", false));
    assert_eq!(&out[53..], b"\x04\x0a\x05HELLO\x01u\x01p");
    c.handle_input(b"\x04\x08\x07WELCOME", now);
    let out = drain(&mut c);
    let mut buf = BytesMut::from(&out[..]);
    let f = frame::decode(&mut buf, None).unwrap().unwrap();
    let Command::Initiate(md) = Command::parse(f.body).unwrap() else {
        panic!()
    };
    assert_eq!(md.get("Socket-Type").unwrap(), "DEALER");
    assert!(!c.is_ready());
    c.handle_input(&command_frame(&ready_of(Router)), now);
    assert!(c.is_ready());
}

#[test]
fn plain_server_refuses_out_of_order_commands() {
    let now = Instant::now();
    // INITIATE before HELLO.
    let mut c = Connection::new(plain_server(Rep), now);
    c.handle_input(&peer_greeting(3, 1, "PLAIN", false), now);
    c.handle_input(&command_frame(&Command::Initiate(Metadata::default())), now);
    assert!(matches!(c.error(), Some(ProtoError::Malformed(_))));
    // A command while the owner decides.
    let mut c = Connection::new(plain_server(Rep), now);
    c.handle_input(&peer_greeting(3, 1, "PLAIN", false), now);
    c.handle_input(
        &command_frame(&Command::Hello {
            username: "a".into(),
            password: "b".into(),
        }),
        now,
    );
    assert!(!c.is_closed());
    c.handle_input(&command_frame(&ready_of(Req)), now);
    assert!(matches!(c.error(), Some(ProtoError::Malformed(_))));
}

#[test]
fn plain_incompatible_types_after_auth() {
    let mut p = Pair::new(plain_client(Req, "u", "p"), plain_server(Pub));
    p.drive();
    p.b.authenticate(true);
    p.drive();
    assert_eq!(
        closed_with(&p.b_events),
        Some(&ProtoError::IncompatibleSocketType {
            ours: Pub,
            theirs: Req
        })
    );
    // The client sees the server's ERROR naming both types.
    match closed_with(&p.a_events) {
        Some(ProtoError::PeerError(r)) => assert_eq!(r, "socket type PUB cannot talk to REQ"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn incompatible_peer_gets_an_error_naming_both_types() {
    let now = Instant::now();
    let mut c = Connection::new(Config::new(Req), now);
    c.handle_input(&peer_greeting(3, 1, "NULL", false), now);
    drain(&mut c);
    c.handle_input(&command_frame(&ready_of(Pub)), now);
    assert_eq!(
        drain(&mut c),
        command_frame(&Command::Error("socket type REQ cannot talk to PUB".into()))
    );
    let e = c.error().unwrap().clone();
    assert_eq!(e.to_string(), "socket type REQ cannot talk to PUB");
    assert!(matches!(
        crate::Error::from(e),
        crate::Error::PeerRejected(_)
    ));
}

#[test]
fn ready_metadata_is_checked() {
    let now = Instant::now();
    type Props<'a> = Vec<(&'a str, &'a [u8])>;
    let cases: Vec<(Props<'_>, bool)> = vec![
        (vec![("socket-type", b"dealer")], true), // any case, name and value
        (vec![("Identity", b"x")], false),        // no Socket-Type
        (vec![("Socket-Type", b"STREAM")], false), // unknown type
        (
            vec![("Socket-Type", b"DEALER"), ("Resource", b"\xff")],
            false,
        ),
        (
            vec![("Socket-Type", b"DEALER"), ("Identity", &[1u8; 256])],
            false,
        ),
    ];
    for (props, ok) in cases {
        let mut c = Connection::new(Config::new(Router), now);
        c.handle_input(&peer_greeting(3, 1, "NULL", false), now);
        let mut md = Metadata::default();
        for (n, v) in &props {
            md.push(*n, Bytes::copy_from_slice(v));
        }
        c.handle_input(&command_frame(&Command::Ready(md)), now);
        assert_eq!(c.is_ready(), ok, "{props:?}: {:?}", c.error());
    }
}

#[test]
fn identity_resource_and_properties_reach_the_peer() {
    let mut a = Config::new(Dealer);
    a.identity = Bytes::from_static(b"me");
    a.resource = Some("orders".into());
    a.properties = vec![("X-Color".into(), Bytes::from_static(b"blue"))];
    let mut p = Pair::new(a, Config::new(Router));
    p.drive();
    let peer = p.b.peer().unwrap();
    assert_eq!(peer.identity, "me");
    assert_eq!(peer.resource.as_deref(), Some("orders"));
    assert_eq!(peer.property("x-color").unwrap(), "blue");
    assert_eq!(peer.properties.len(), 1);
    // PAIR with no identity sends no Identity.
    let mut p = Pair::new(Config::new(Pair), Config::new(Pair));
    p.drive();
    assert!(p.b.peer().unwrap().identity.is_empty());
}

#[test]
fn invalid_config_closes_at_once() {
    let bad = [
        ("", Bytes::new()),
        ("X-a b", Bytes::new()),
        ("Socket-Type", Bytes::from_static(b"PUB")),
    ];
    for prop in bad {
        let mut c = Config::new(Pair);
        c.properties = vec![(prop.0.to_owned(), prop.1)];
        let mut conn = Connection::new(c, Instant::now());
        assert!(conn.is_closed());
        assert!(matches!(
            conn.poll_event(),
            Some(Event::Closed(ProtoError::InvalidArgument(_)))
        ));
        assert!(conn.poll_transmit().is_none());
    }
    let mut c = Config::new(Dealer);
    c.identity = Bytes::from(vec![1; 256]);
    assert!(Connection::new(c, Instant::now()).is_closed());
}

#[test]
fn frame_errors_close_the_connection() {
    type Check = fn(&ProtoError) -> bool;
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (vec![0x08, 0], |e| matches!(e, ProtoError::Malformed(_))),
        (vec![0x05, 0], |e| matches!(e, ProtoError::Malformed(_))),
        (
            {
                let mut v = vec![0x02];
                v.extend_from_slice(&(1u64 << 63).to_be_bytes());
                v
            },
            |e| {
                matches!(
                    e,
                    ProtoError::MessageTooLarge {
                        size: 0x8000_0000_0000_0000,
                        limit: 1024
                    }
                )
            },
        ),
        // Oversize applies per frame: two 600-byte frames of one message are fine, a
        // 1025-byte frame is not.
        (
            {
                let mut v = vec![0x03, 0, 0, 0, 0, 0, 0, 2, 0x58];
                v.extend(std::iter::repeat_n(0u8, 600));
                v.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 0, 4, 1]);
                v
            },
            |e| matches!(e, ProtoError::MessageTooLarge { size: 1025, .. }),
        ),
        (
            command_frame(&ready_of(Pair)),
            |e| matches!(e, ProtoError::Malformed(m) if m.contains("READY")),
        ),
    ];
    for (wire, check) in cases {
        let now = Instant::now();
        let mut cfg = Config::new(Pair);
        cfg.max_msg_size = Some(1024);
        let mut c = Connection::new(cfg, now);
        c.handle_input(&peer_greeting(3, 1, "NULL", false), now);
        c.handle_input(&command_frame(&ready_of(Pair)), now);
        assert!(c.is_ready());
        c.handle_input(&wire, now);
        let e = c.error().cloned();
        assert!(e.as_ref().is_some_and(check), "{wire:?}: {e:?}");
        // Input after the fatal error is ignored and the error sticks.
        c.handle_input(b"\x00\x01x", now);
        assert_eq!(c.error().cloned(), e);
    }
}

#[test]
fn data_before_handshake_is_malformed() {
    let now = Instant::now();
    let mut c = Connection::new(Config::new(Pair), now);
    c.handle_input(&peer_greeting(3, 1, "NULL", false), now);
    c.handle_input(b"\x00\x02hi", now);
    assert!(matches!(c.error(), Some(ProtoError::Malformed(_))));
}

#[test]
fn any_split_of_the_stream_gives_the_same_result() {
    // Record the bytes a peer sends for a handshake and a message...
    let mut p = Pair::new(Config::new(Push), Config::new(Pull));
    let mut wire = Vec::new();
    wire.extend(drain(&mut p.a));
    p.a.handle_input(&peer_greeting(3, 1, "NULL", false), p.now);
    p.a.handle_input(&command_frame(&ready_of(Pull)), p.now);
    p.a.send(sample_message()).unwrap();
    wire.extend(drain(&mut p.a));
    // ...then feed them to a fresh PULL one byte at a time, and in uneven chunks.
    for chunk in [1usize, 7, 300, wire.len()] {
        let now = Instant::now();
        let mut c = Connection::new(Config::new(Pull), now);
        for piece in wire.chunks(chunk) {
            c.handle_input(piece, now);
        }
        let ev = events(&mut c);
        assert!(matches!(ev[0], Event::HandshakeSucceeded(_)), "{chunk}");
        assert_eq!(ev[1], Event::Message(sample_message()), "{chunk}");
    }
}

#[test]
fn large_frames_are_transmitted_without_copy() {
    let (mut c, _) = ready_against(Push, Pull, 1);
    let big = Bytes::from(vec![7u8; 64 * 1024]);
    let ptr = big.as_ptr();
    c.send(Message::from_frames([
        Bytes::from_static(b"a"),
        big,
        Bytes::from_static(b"b"),
    ]))
    .unwrap();
    assert_eq!(c.pending_transmit_bytes(), 3 + 9 + 65536 + 3);
    let chunks: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit()).collect();
    assert_eq!(chunks.len(), 3);
    assert_eq!(
        &chunks[0][..],
        b"\x01\x01a\x03\x00\x00\x00\x00\x00\x01\x00\x00"
    );
    assert_eq!(chunks[1].as_ptr(), ptr);
    assert_eq!(&chunks[2][..], b"\x00\x01b");
    assert_eq!(c.pending_transmit_bytes(), 0);
}

#[test]
fn send_rules() {
    let (mut c, _) = ready_against(Pair, Pair, 1);
    assert!(matches!(
        c.send(Message::new()),
        Err(ProtoError::InvalidArgument(_))
    ));
    c.close("bye");
    assert_eq!(drain(&mut c), command_frame(&Command::Error("bye".into())));
    assert_eq!(
        c.poll_event(),
        Some(Event::Closed(ProtoError::Closed("bye".into())))
    );
    assert_eq!(c.poll_event(), None);
    assert_eq!(
        c.send(Message::from("x")),
        Err(ProtoError::Closed("bye".into()))
    );
    assert!(matches!(
        crate::Error::from(ProtoError::Closed("bye".into())),
        crate::Error::Closed
    ));
}

#[test]
fn close_during_greeting_sends_no_error() {
    let mut c = Connection::new(Config::new(Pair), Instant::now());
    drain(&mut c);
    c.close("nope");
    assert!(drain(&mut c).is_empty());
    assert!(c.is_closed());
}

#[test]
fn peer_error_after_handshake() {
    let mut p = Pair::new(Config::new(Dealer), Config::new(Dealer));
    p.drive();
    p.a.close("shutting down");
    p.drive();
    assert_eq!(
        closed_with(&p.b_events),
        Some(&ProtoError::PeerError("shutting down".into()))
    );
    assert!(matches!(
        crate::Error::from(ProtoError::PeerError("x".into())),
        crate::Error::PeerRejected(_)
    ));
}

#[test]
fn ping_is_answered_with_pong_echoing_the_context() {
    let (mut c, now) = ready_against(Pair, Pair, 1);
    c.handle_input(b"\x04\x09\x04PING\x00\x00ab", now);
    assert_eq!(drain(&mut c), b"\x04\x07\x04PONGab");
    // A PING between two frames of a message (libzmq may do that) is fine.
    c.handle_input(b"\x01\x01x\x04\x07\x04PING\x00\x00\x00\x01y", now);
    assert_eq!(drain(&mut c), b"\x04\x05\x04PONG");
    assert_eq!(
        events(&mut c),
        vec![Event::Message(Message::from_frames(["x", "y"]))]
    );
    // A PING too short for its TTL is malformed.
    c.handle_input(b"\x04\x06\x04PING\x00", now);
    assert!(matches!(c.error(), Some(ProtoError::Malformed(_))));
}

fn heartbeat_config(t: SocketType, ivl: u64, timeout: Option<u64>, ttl: Option<u64>) -> Config {
    let mut c = Config::new(t);
    c.heartbeat_interval = Some(Duration::from_millis(ivl));
    c.heartbeat_timeout = timeout.map(Duration::from_millis);
    c.heartbeat_ttl = ttl.map(Duration::from_millis);
    c
}

#[test]
fn heartbeats_keep_a_live_pair_up() {
    let mut p = Pair::new(
        heartbeat_config(Pair, 1000, None, Some(3000)),
        Config::new(Pair),
    );
    p.drive();
    assert!(p.a.is_ready());
    assert!(
        p.b.poll_timeout().is_none(),
        "no heartbeats configured on b yet"
    );
    assert_eq!(p.a.poll_timeout(), Some(p.now + Duration::from_secs(1)));
    for _ in 0..50 {
        p.advance(Duration::from_millis(500));
    }
    assert!(p.a.is_ready() && p.b.is_ready());
    // b learnt a's TTL from its PINGs and now has a deadline.
    assert!(p.b.poll_timeout().is_some());
}

#[test]
fn ping_on_the_wire_carries_the_ttl() {
    let mut cfg = heartbeat_config(Pair, 100, None, Some(2500));
    cfg.socket_type = Pair;
    let now = Instant::now();
    let mut c = Connection::new(cfg, now);
    c.handle_input(&peer_greeting(3, 1, "NULL", false), now);
    c.handle_input(&command_frame(&ready_of(Pair)), now);
    drain(&mut c);
    c.handle_timeout(now + Duration::from_millis(99));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(now + Duration::from_millis(100));
    assert_eq!(drain(&mut c), b"\x04\x07\x04PING\x00\x19");
}

#[test]
fn silent_peer_times_out_after_a_ping() {
    let mut p = Pair::new(
        heartbeat_config(Pair, 1000, Some(300), None),
        Config::new(Pair),
    );
    p.drive();
    p.b_to_a = false;
    p.advance(Duration::from_millis(1000)); // PING sent
    assert!(p.a.is_ready());
    assert_eq!(p.a.poll_timeout(), Some(p.now + Duration::from_millis(300)));
    p.advance(Duration::from_millis(299));
    assert!(p.a.is_ready());
    // Data queued for the dead peer does not hold the Closed event back.
    p.a.send(Message::from("never read")).unwrap();
    p.now += Duration::from_millis(1);
    p.a.handle_timeout(p.now);
    assert_eq!(p.a.pending_transmit_bytes(), 0);
    assert_eq!(
        p.a.poll_event(),
        Some(Event::Closed(ProtoError::HeartbeatTimeout))
    );
    assert!(matches!(
        crate::Error::from(ProtoError::HeartbeatTimeout),
        crate::Error::Protocol(_)
    ));
}

#[test]
fn any_traffic_counts_as_alive() {
    let now = Instant::now();
    let mut c = Connection::new(heartbeat_config(Pair, 1000, Some(500), None), now);
    c.handle_input(&peer_greeting(3, 1, "NULL", false), now);
    c.handle_input(&command_frame(&ready_of(Pair)), now);
    let t = |ms| now + Duration::from_millis(ms);
    c.handle_timeout(t(1000)); // PING
    c.handle_input(b"\x00\x01x", t(1400)); // a message, no PONG
    c.handle_timeout(t(1600));
    assert!(c.is_ready(), "{:?}", c.error());
    c.handle_timeout(t(2000)); // PING
    c.handle_timeout(t(2500));
    assert_eq!(c.error(), Some(&ProtoError::HeartbeatTimeout));
}

#[test]
fn peer_ttl_is_enforced() {
    let (mut c, now) = ready_against(Pair, Pair, 1);
    // PING with TTL 2.0 s.
    c.handle_input(b"\x04\x07\x04PING\x00\x14", now);
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(2)));
    c.handle_input(b"\x00\x01x", now + Duration::from_secs(1));
    c.handle_timeout(now + Duration::from_millis(2500));
    assert!(c.is_ready());
    c.handle_timeout(now + Duration::from_secs(3));
    assert_eq!(c.error(), Some(&ProtoError::HeartbeatTimeout));
}

#[test]
fn events_debug_redacts_passwords() {
    let e = Event::AuthRequest {
        username: "u".into(),
        password: "hunter2".into(),
        curve_public_key: None,
    };
    assert!(!format!("{e:?}").contains("hunter2"));
    let c = plain_client(Pair, "u", "hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn two_plain_clients_are_a_mechanism_error() {
    let mut p = Pair::new(
        plain_client(Dealer, "a", "b"),
        plain_client(Dealer, "c", "d"),
    );
    p.drive();
    assert!(matches!(
        closed_with(&p.a_events),
        Some(ProtoError::Mechanism(m)) if m.contains("both sides are PLAIN clients")
    ));
}

#[test]
fn libzmq_plain_rejection_bytes_fail_our_client() {
    let now = Instant::now();
    let mut c = Connection::new(plain_client(Dealer, "admin", "x"), now);
    c.handle_input(&peer_greeting(3, 1, "PLAIN", false), now);
    drain(&mut c);
    // Exactly what libzmq 4.3.5's PLAIN server sent after its ZAP handler said no.
    c.handle_input(b"\x04\x09^RROR\x03400", now);
    assert!(matches!(c.error(), Some(ProtoError::AuthFailed(m)) if m.contains("400")));
}

#[test]
fn plain_byte_vectors_server_side() {
    let now = Instant::now();
    let mut c = Connection::new(plain_server(Router), now);
    assert_eq!(drain(&mut c), greeting::encode_first());
    c.handle_input(&peer_greeting(3, 1, "PLAIN", false), now);
    let rest = drain(&mut c);
    assert_eq!(rest, greeting::encode_rest("PLAIN", true));
    assert_eq!(rest[21], 1, "as-server set");
    c.handle_input(b"\x04\x0e\x05HELLO\x05admin\x01x", now);
    assert!(drain(&mut c).is_empty(), "nothing before the owner decides");
    assert_eq!(
        events(&mut c),
        vec![Event::AuthRequest {
            username: "admin".into(),
            password: "x".into(),
            curve_public_key: None,
        }]
    );
    c.authenticate(true);
    assert_eq!(drain(&mut c), b"\x04\x08\x07WELCOME");
    let mut md = Metadata::default();
    md.push("Socket-Type", "DEALER");
    md.push("Identity", "peer-1");
    c.handle_input(&command_frame(&Command::Initiate(md)), now);
    let out = drain(&mut c);
    let mut buf = BytesMut::from(&out[..]);
    let f = frame::decode(&mut buf, None).unwrap().unwrap();
    assert!(buf.is_empty());
    let Command::Ready(md) = Command::parse(f.body).unwrap() else {
        panic!("expected READY")
    };
    assert_eq!(md.get("Socket-Type").unwrap(), "ROUTER");
    assert!(c.is_ready());
    let peer = c.peer().unwrap();
    assert_eq!(peer.identity, "peer-1");
    assert_eq!(peer.user_id.as_deref(), Some("admin"));
}

#[test]
fn connection_can_move_to_the_io_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Connection>();
    assert_send::<Event>();
}

#[test]
fn plain_credentials_over_255_bytes_are_refused_up_front() {
    let long = "x".repeat(256);
    let cfg = plain_client(Dealer, &long, "pw");
    assert!(matches!(
        cfg.validate(),
        Err(ProtoError::InvalidArgument(_))
    ));
    assert!(
        plain_client(Dealer, "u", &"y".repeat(255))
            .validate()
            .is_ok()
    );
    let mut cfg = Config::new(Dealer);
    cfg.resource = Some("r".repeat(256));
    assert!(cfg.validate().is_err());
}

#[test]
fn awaiting_the_peers_ready_sends_ours_only_after_judging_it() {
    let now = Instant::now();
    let mut cfg = Config::new(Push);
    cfg.await_peer_ready = true;
    // Compatible: nothing after the greeting until the peer's READY, then our READY.
    let mut c = Connection::new(cfg.clone(), now);
    c.handle_input(&peer_greeting(3, 1, "NULL", false), now);
    assert_eq!(
        drain(&mut c).len(),
        greeting::GREETING_LEN,
        "only our greeting"
    );
    c.handle_input(&command_frame(&ready_of(Pull)), now);
    assert!(c.is_ready());
    let mut ours = Metadata::default();
    ours.push("Socket-Type", "PUSH");
    assert_eq!(drain(&mut c), command_frame(&Command::Ready(ours)));
    // Incompatible (what a libzmq PUB says before it would hang up on our READY): the
    // peer hears only our ERROR, and we know both types.
    let mut c = Connection::new(cfg, now);
    c.handle_input(&peer_greeting(3, 1, "NULL", false), now);
    drain(&mut c);
    c.handle_input(&command_frame(&ready_of(Pub)), now);
    assert_eq!(
        drain(&mut c),
        command_frame(&Command::Error(
            "socket type PUSH cannot talk to PUB".into()
        ))
    );
    assert_eq!(
        c.error(),
        Some(&ProtoError::IncompatibleSocketType {
            ours: Push,
            theirs: Pub
        })
    );
}

#[test]
fn one_side_awaiting_the_peers_ready_still_handshakes_every_valid_pair() {
    for ta in SocketType::ALL {
        for tb in SocketType::ALL {
            let mut a = Config::new(ta);
            a.await_peer_ready = true;
            let mut p = Pair::new(a, Config::new(tb));
            p.drive();
            if ta.is_compatible_with(tb) {
                assert!(p.a.is_ready() && p.b.is_ready(), "{ta}-{tb}");
            } else {
                assert_eq!(
                    closed_with(&p.a_events),
                    Some(&ProtoError::IncompatibleSocketType {
                        ours: ta,
                        theirs: tb
                    }),
                    "{ta}-{tb}"
                );
            }
        }
    }
}

#[test]
fn a_large_frame_read_in_place_is_not_copied() {
    let (mut c, now) = ready_against(Pull, Push, 1);
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = BytesMut::new();
    frame::encode_header(&mut wire, false, false, body.len());
    wire.extend_from_slice(&body);
    // Small frames, and the start of a large one before its header is complete, are
    // not "large".
    assert!(!c.large_frame_arriving());
    c.handle_input(&wire[..5], now);
    assert!(!c.large_frame_arriving(), "header incomplete");
    c.handle_input(&wire[5..40_000], now);
    assert!(c.large_frame_arriving());
    // Room for all the rest, so the body is read where it stays.
    let rest = wire.len() - 40_000;
    let input = c.input_buffer();
    assert!(
        input.capacity() - input.len() >= rest,
        "room for the whole frame"
    );
    let start = input.as_ptr() as usize;
    // The stream gives the rest in two reads.
    for part in [&wire[40_000..500_000], &wire[500_000..]] {
        c.input_buffer().extend_from_slice(part);
        c.input_received(now);
    }
    let got = messages(&events(&mut c));
    assert_eq!(got.len(), 1);
    let frame = &got[0].frames()[0];
    assert_eq!(&frame[..], &body[..]);
    let at = frame.as_ptr() as usize;
    assert!(
        at >= start && at < start + 64,
        "the body was split off the buffer it was read into, not copied"
    );
    assert!(!c.large_frame_arriving());
}

#[test]
fn a_huge_announced_frame_reserves_a_bounded_room() {
    let (mut c, now) = ready_against(Pull, Push, 1);
    let mut wire = BytesMut::new();
    frame::encode_header(&mut wire, false, false, 1 << 40);
    wire.extend_from_slice(b"only a little");
    c.handle_input(&wire, now);
    assert!(c.large_frame_arriving());
    let input = c.input_buffer();
    let room = input.capacity() - input.len();
    assert!(
        room <= 9 * 1024 * 1024,
        "a header alone does not allocate a terabyte ({room} bytes of room)"
    );
}

#[test]
fn large_frames_in_a_row_reuse_a_receive_buffer_once_dropped() {
    let (mut c, now) = ready_against(Pull, Push, 1);
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = BytesMut::new();
    frame::encode_header(&mut wire, false, false, body.len());
    wire.extend_from_slice(&body);
    // Reads the frame the way the stream engine does: header, then the rest straight
    // into the buffer. Returns the message and where its body lies.
    let receive = |c: &mut Connection| {
        c.handle_input(&wire[..40_000], now);
        assert!(c.large_frame_arriving());
        c.input_buffer().extend_from_slice(&wire[40_000..]);
        c.input_received(now);
        let mut got = messages(&events(c));
        assert_eq!(got.len(), 1);
        let m = got.remove(0);
        assert_eq!(&m.frames()[0][..], &body[..]);
        let at = m.frames()[0].as_ptr() as usize;
        (m, at)
    };
    // The application holds each message until the next one has arrived (as a
    // receiver that works on one while the next comes in), then drops it.
    let (first, at1) = receive(&mut c);
    let (second, at2) = receive(&mut c);
    assert_ne!(
        at1, at2,
        "the first is alive: the second needs its own buffer"
    );
    drop(first);
    let (third, at3) = receive(&mut c);
    assert!(
        at3.abs_diff(at1) < 64,
        "the first's buffer served the third"
    );
    drop(second);
    let (fourth, at4) = receive(&mut c);
    assert!(
        at4.abs_diff(at2) < 64,
        "the second's buffer served the fourth"
    );
    // A message still held is never written over.
    assert_eq!(&third.frames()[0][..], &body[..]);
    drop(third);
    drop(fourth);
}
