//! `lwmq::proto`'s CURVE against real libzmq (pyzmq's wheel, libzmq 4.3.5): the sans-IO
//! state machine over a blocking `TcpStream`, a python peer (`tests/py/proto_peer.py`)
//! on the other end, both roles and both connection directions; right keys, a wrong
//! server key and a refused client key; 0-byte, 1 MiB and multipart messages; encrypted
//! SUBSCRIBE and heartbeats.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use lwmq::proto::{Config, Connection, CurveKeyPair, Event, MechanismConfig, ProtoError};
use lwmq::{Bytes, Message, SocketType};

/// Every this long a wait says on stderr what it is still waiting for (the watchdog
/// ends a real hang).
const NOTE_EVERY: Duration = Duration::from_secs(10);

/// The python peer process and its command pipe (one line per command, one answer).
struct Peer {
    _child: common::KillOnDrop,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: Option<u16>,
}

impl Peer {
    fn spawn(kind: SocketType, connect_to: Option<u16>, extra: &[&str]) -> Peer {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/proto_peer.py");
        let mut cmd = Command::new(common::python());
        cmd.arg(script).arg(kind.as_str());
        match connect_to {
            Some(p) => cmd.arg("connect").arg(p.to_string()),
            None => cmd.arg("bind"),
        };
        let mut child = cmd
            .args(extra)
            .arg("--monitor")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the python peer");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut peer = Peer {
            _child: common::KillOnDrop(child),
            stdin,
            stdout,
            port: None,
        };
        let first = peer.line();
        match connect_to {
            None => {
                let port = first
                    .strip_prefix("port ")
                    .unwrap_or_else(|| panic!("peer said {first:?}"));
                peer.port = Some(port.trim().parse().expect("a port number"));
            }
            Some(_) => assert_eq!(first, "ready"),
        }
        peer
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).expect("read from the peer");
        assert!(!s.is_empty(), "the python peer exited");
        s.trim_end().to_owned()
    }

    fn request(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to the peer");
        self.stdin.flush().expect("flush to the peer");
        self.line()
    }

    fn send(&mut self, msg: &Message) {
        assert_eq!(self.request(&format!("send {}", enc(msg))), "ok");
    }

    fn recv(&mut self) -> Message {
        let r = self.request("recv");
        let Some(frames) = r.strip_prefix("frames") else {
            panic!("peer: {r}")
        };
        dec(frames)
    }

    fn start_repeat(&mut self, msg: &Message) {
        writeln!(self.stdin, "repeat {}", enc(msg)).expect("write to the peer");
        self.stdin.flush().expect("flush to the peer");
    }

    fn stop_repeat(&mut self) {
        let r = self.request("stop");
        assert!(r.starts_with("ok"), "{r}");
    }

    fn events(&mut self) -> Vec<String> {
        let r = self.request("events");
        r.split_whitespace().skip(1).map(str::to_owned).collect()
    }

    /// Polls libzmq's monitor until `f` holds on its events; returns them.
    fn events_until(&mut self, what: &str, f: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut since = Instant::now();
        loop {
            let ev = self.events();
            if f(&ev) {
                return ev;
            }
            if since.elapsed() >= NOTE_EVERY {
                eprintln!("still waiting for libzmq: {what}; events {ev:?}");
                since = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn enc(msg: &Message) -> String {
    msg.frames()
        .iter()
        .map(|f| {
            if f.is_empty() {
                "-".to_owned()
            } else {
                f.iter().map(|b| format!("{b:02x}")).collect()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn dec(words: &str) -> Message {
    Message::from_frames(words.split_whitespace().map(|w| {
        if w == "-" {
            Bytes::new()
        } else {
            Bytes::from(
                (0..w.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&w[i..i + 2], 16).expect("hex from the peer"))
                    .collect::<Vec<u8>>(),
            )
        }
    }))
}

/// A `Connection` on a blocking `TcpStream`: the owner loop of `lwmq::proto`'s docs.
struct Wire {
    stream: TcpStream,
    conn: Connection,
    events: VecDeque<Event>,
    eof: bool,
    buf: Vec<u8>,
}

impl Wire {
    fn new(stream: TcpStream, config: Config) -> Wire {
        stream
            .set_read_timeout(Some(Duration::from_millis(10)))
            .expect("set a read timeout");
        stream.set_nodelay(true).expect("nodelay");
        Wire {
            stream,
            conn: Connection::new(config, Instant::now()),
            events: VecDeque::new(),
            eof: false,
            buf: vec![0; 256 * 1024],
        }
    }

    fn flush(&mut self) {
        while let Some(b) = self.conn.poll_transmit() {
            if self.stream.write_all(&b).is_err() {
                self.eof = true;
            }
        }
    }

    fn pump(&mut self) {
        self.flush();
        if self.eof {
            std::thread::sleep(Duration::from_millis(10));
        } else {
            match self.stream.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.conn.handle_input(&self.buf[..n], Instant::now()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.eof = true,
            }
        }
        if self
            .conn
            .poll_timeout()
            .is_some_and(|t| t <= Instant::now())
        {
            self.conn.handle_timeout(Instant::now());
        }
        self.flush();
        while let Some(e) = self.conn.poll_event() {
            self.events.push_back(e);
        }
    }

    /// Pumps until `f` picks an event (earlier ones are dropped). Fails if the
    /// connection closes or the peer hangs up first.
    fn until<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let mut since = Instant::now();
        loop {
            while let Some(e) = self.events.pop_front() {
                if let Some(t) = f(&e) {
                    return t;
                }
                if let Event::Closed(err) = &e {
                    panic!("closed while waiting for {what}: {err}");
                }
            }
            assert!(!self.eof, "the peer hung up while we waited for {what}");
            if since.elapsed() >= NOTE_EVERY {
                eprintln!("still waiting for {what}");
                since = Instant::now();
            }
            self.pump();
        }
    }

    /// Pumps until our connection closes (its error) or the peer hangs up (`None`),
    /// failing if the handshake succeeds on the way.
    fn until_failed(&mut self) -> Option<ProtoError> {
        let mut since = Instant::now();
        loop {
            while let Some(e) = self.events.pop_front() {
                match e {
                    Event::Closed(err) => return Some(err),
                    Event::HandshakeSucceeded(p) => panic!("handshake succeeded with {p:?}"),
                    _ => {}
                }
            }
            if self.eof {
                return None;
            }
            if since.elapsed() >= NOTE_EVERY {
                eprintln!("still waiting for the handshake to fail");
                since = Instant::now();
            }
            self.pump();
        }
    }

    fn handshake(&mut self) -> lwmq::proto::PeerInfo {
        self.until("HandshakeSucceeded", |e| match e {
            Event::HandshakeSucceeded(p) => Some(p.clone()),
            _ => None,
        })
    }

    fn recv(&mut self) -> Message {
        self.until("a message", |e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
    }

    fn send(&mut self, msg: Message) {
        self.conn.send(msg).expect("send on a live connection");
        self.pump();
    }

    fn keep_alive_for(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            self.pump();
            assert!(!self.conn.is_closed(), "{:?}", self.conn.error());
            assert!(!self.eof, "the peer hung up");
        }
    }
}

/// Connects the two sides: `we_connect` picks who dials.
fn connect(ours: Config, theirs: SocketType, we_connect: bool, extra: &[&str]) -> (Wire, Peer) {
    if we_connect {
        let peer = Peer::spawn(theirs, None, extra);
        let port = peer.port.expect("bind mode reports a port");
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the peer");
        (Wire::new(s, ours), peer)
    } else {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local address").port();
        let peer = Peer::spawn(theirs, Some(port), extra);
        let (s, _) = l.accept().expect("accept the peer");
        (Wire::new(s, ours), peer)
    }
}

fn curve_client(t: SocketType, me: &CurveKeyPair, server: &CurveKeyPair) -> Config {
    let mut c = Config::new(t);
    c.mechanism = MechanismConfig::CurveClient {
        public: me.public,
        secret: me.secret.clone(),
        server_public: server.public,
    };
    c
}

fn curve_server(t: SocketType, me: &CurveKeyPair) -> Config {
    let mut c = Config::new(t);
    c.mechanism = MechanismConfig::CurveServer {
        public: me.public,
        secret: me.secret.clone(),
    };
    c
}

/// Multipart, with an empty frame and a 1 MiB one.
fn payload(tag: &str) -> Message {
    Message::from_frames([
        Bytes::copy_from_slice(tag.as_bytes()),
        Bytes::new(),
        Bytes::from((0..1 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    ])
}

fn with_front(front: Bytes, msg: &Message) -> Message {
    Message::from_frames(std::iter::once(front).chain(msg.frames().iter().cloned()))
}

/// Messages both ways between our DEALER and libzmq's ROUTER, whoever is the server.
fn dealer_router_exchange(w: &mut Wire, peer: &mut Peer) {
    for msg in [payload("to-libzmq"), Message::from_frames([Bytes::new()])] {
        w.send(msg.clone());
        let got = peer.recv();
        let id = got.frames()[0].clone();
        assert_eq!(Message::from_frames(got.frames()[1..].iter().cloned()), msg);
        let back = payload("to-lwmq");
        peer.send(&with_front(id, &back));
        assert_eq!(w.recv(), back);
    }
}

#[test]
fn curve_we_are_client_of_a_libzmq_server() {
    let _wd = common::watchdog(Duration::from_secs(120));
    let server = CurveKeyPair::generate();
    let me = CurveKeyPair::generate();
    for we_connect in [true, false] {
        // Right keys, with libzmq's ZAP authenticator admitting exactly our key.
        let (mut w, mut peer) = connect(
            curve_client(SocketType::Dealer, &me, &server),
            SocketType::Router,
            we_connect,
            &[
                "--curve-server",
                &server.secret.to_z85(),
                "--curve-allow",
                &me.public.to_z85(),
            ],
        );
        let info = w.handshake();
        assert_eq!(info.socket_type, SocketType::Router);
        assert_eq!(info.curve_public_key, Some(server.public));
        dealer_router_exchange(&mut w, &mut peer);
        let ev = peer.events();
        assert!(ev.iter().any(|e| e == "HANDSHAKE_SUCCEEDED"), "{ev:?}");

        // A key the authenticator refuses: libzmq sends ERROR "400".
        let stranger = CurveKeyPair::generate();
        let (mut w, mut peer) = connect(
            curve_client(SocketType::Dealer, &stranger, &server),
            SocketType::Router,
            we_connect,
            &[
                "--curve-server",
                &server.secret.to_z85(),
                "--curve-allow",
                &me.public.to_z85(),
            ],
        );
        let err = w.until_failed();
        assert!(
            matches!(&err, Some(ProtoError::AuthFailed(m)) if m.contains("400")),
            "{err:?}"
        );
        let ev = peer.events_until("the refusal", |ev| {
            ev.iter().any(|e| e == "HANDSHAKE_FAILED_AUTH")
        });
        assert!(!ev.iter().any(|e| e == "HANDSHAKE_SUCCEEDED"), "{ev:?}");

        // A wrong server key: libzmq cannot open our HELLO and hangs up without a word.
        let wrong = CurveKeyPair::generate();
        let (mut w, mut peer) = connect(
            curve_client(SocketType::Dealer, &me, &wrong),
            SocketType::Router,
            we_connect,
            &["--curve-server", &server.secret.to_z85()],
        );
        assert_eq!(
            w.until_failed(),
            None,
            "we hear nothing, the stream just ends"
        );
        let ev = peer.events_until("the failed handshake", |ev| {
            ev.iter().any(|e| e == "HANDSHAKE_FAILED_PROTOCOL")
        });
        assert!(!ev.iter().any(|e| e == "HANDSHAKE_SUCCEEDED"), "{ev:?}");
    }
}

#[test]
fn curve_we_are_server_of_a_libzmq_client() {
    let _wd = common::watchdog(Duration::from_secs(120));
    let me = CurveKeyPair::generate();
    let client = CurveKeyPair::generate();
    for we_connect in [true, false] {
        for accept in [true, false] {
            let (mut w, mut peer) = connect(
                curve_server(SocketType::Router, &me),
                SocketType::Dealer,
                we_connect,
                &[
                    "--curve-client",
                    &me.public.to_z85(),
                    "--curve-secret",
                    &client.secret.to_z85(),
                ],
            );
            let key = w.until("an auth request", |e| match e {
                Event::AuthRequest {
                    curve_public_key, ..
                } => Some(*curve_public_key),
                _ => None,
            });
            assert_eq!(key, Some(client.public));
            w.conn.authenticate(accept);
            if accept {
                let info = w.handshake();
                assert_eq!(info.socket_type, SocketType::Dealer);
                assert_eq!(info.curve_public_key, Some(client.public));
                assert_eq!(info.user_id, Some(client.public.to_z85()));
                for msg in [payload("to-lwmq"), Message::from_frames([Bytes::new()])] {
                    peer.send(&msg);
                    let got = w.recv();
                    assert_eq!(got, msg);
                    let back = payload("to-libzmq");
                    w.send(back.clone());
                    assert_eq!(peer.recv(), back);
                }
                let ev = peer.events();
                assert!(ev.iter().any(|e| e == "HANDSHAKE_SUCCEEDED"), "{ev:?}");
            } else {
                let err = w.until_failed();
                assert!(matches!(err, Some(ProtoError::AuthFailed(_))), "{err:?}");
                // libzmq reads our ERROR "400" as an authentication failure.
                let ev = peer.events_until("the refusal", |ev| {
                    ev.iter().any(|e| e == "HANDSHAKE_FAILED_AUTH")
                });
                assert!(!ev.iter().any(|e| e == "HANDSHAKE_SUCCEEDED"), "{ev:?}");
            }
        }

        // A libzmq client with a wrong server key: its HELLO does not open here.
        let wrong = CurveKeyPair::generate();
        let (mut w, mut peer) = connect(
            curve_server(SocketType::Router, &me),
            SocketType::Dealer,
            we_connect,
            &[
                "--curve-client",
                &wrong.public.to_z85(),
                "--curve-secret",
                &client.secret.to_z85(),
            ],
        );
        let err = w.until_failed();
        assert!(
            matches!(&err, Some(ProtoError::Crypto(m)) if m.contains("HELLO")),
            "{err:?}"
        );
        drop(w); // we hang up, as an owner does on Closed
        let ev = peer.events_until("the disconnection", |ev| {
            ev.iter().any(|e| e == "DISCONNECTED")
        });
        assert!(!ev.iter().any(|e| e == "HANDSHAKE_SUCCEEDED"), "{ev:?}");
    }
}

#[test]
fn curve_subscriptions_and_heartbeats_with_libzmq() {
    let _wd = common::watchdog(Duration::from_secs(120));
    let server = CurveKeyPair::generate();
    let me = CurveKeyPair::generate();
    // Our SUB (CURVE client) subscribes at libzmq's PUB (CURVE server): the SUBSCRIBE
    // command travels encrypted and libzmq must read it to send us anything.
    let (mut w, mut peer) = connect(
        curve_client(SocketType::Sub, &me, &server),
        SocketType::Pub,
        true,
        &["--curve-server", &server.secret.to_z85()],
    );
    w.handshake();
    w.conn.send_subscribe(Bytes::from_static(b"news"));
    w.pump();
    peer.start_repeat(&Message::from_frames([Bytes::from_static(b"weather")]));
    std::thread::sleep(Duration::from_millis(200));
    peer.stop_repeat();
    peer.start_repeat(&Message::from_frames([
        Bytes::from_static(b"news"),
        Bytes::from_static(b"today"),
    ]));
    let got = w.recv();
    peer.stop_repeat();
    assert_eq!(
        got,
        Message::from_frames([Bytes::from_static(b"news"), Bytes::from_static(b"today")])
    );

    // Heartbeats both ways under CURVE: libzmq PINGs every 200 ms and drops us if no
    // PONG comes within 600 ms; we PING too and drop it if it does not answer.
    for we_connect in [true, false] {
        let mut cfg = curve_server(SocketType::Pair, &server);
        cfg.heartbeat_interval = Some(Duration::from_millis(200));
        cfg.heartbeat_timeout = Some(Duration::from_millis(800));
        let (mut w, mut peer) = connect(
            cfg,
            SocketType::Pair,
            we_connect,
            &[
                "--curve-client",
                &server.public.to_z85(),
                "--curve-secret",
                &me.secret.to_z85(),
                "--hb",
                "200,1000,600",
            ],
        );
        w.until("an auth request", |e| {
            matches!(e, Event::AuthRequest { .. }).then_some(())
        });
        w.conn.authenticate(true);
        w.handshake();
        w.keep_alive_for(Duration::from_secs(3));
        w.send(Message::from("still here"));
        assert_eq!(peer.recv(), Message::from("still here"));
        peer.send(&Message::from("me too"));
        assert_eq!(w.recv(), Message::from("me too"));
        let ev = peer.events();
        assert_eq!(
            ev.iter().filter(|e| *e == "HANDSHAKE_SUCCEEDED").count(),
            1,
            "{ev:?}"
        );
        assert!(
            !ev.iter()
                .any(|e| e == "DISCONNECTED" || e.starts_with("HANDSHAKE_FAILED")),
            "{ev:?}"
        );
    }
}
