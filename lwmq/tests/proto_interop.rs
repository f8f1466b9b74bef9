//! `lwmq::proto` against real libzmq (pyzmq's wheel, libzmq 4.3.5): the sans-IO state
//! machine driven over a plain blocking `TcpStream`, a python peer (`tests/py/proto_peer.py`)
//! on the other end, both connection directions.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use lwmq::proto::{Config, Connection, Event, MechanismConfig, ProtoError};
use lwmq::{Bytes, Message, SocketType};

/// Waits never fail on time (each test's watchdog ends a hang); every this long, a wait
/// says on stderr what it is still waiting for, so a hang is easy to read.
const NOTE_EVERY: Duration = Duration::from_secs(10);

/// Notes on stderr, every [`NOTE_EVERY`], that a wait begun at `*since` goes on.
fn still_waiting(since: &mut Instant, what: impl std::fmt::Display) {
    if since.elapsed() >= NOTE_EVERY {
        eprintln!("still waiting for {what}");
        *since = Instant::now();
    }
}

/// The python peer process and its command pipe.
struct Peer {
    _child: common::KillOnDrop,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The port it bound, in bind mode.
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
        if connect_to.is_none() {
            let port = first
                .strip_prefix("port ")
                .unwrap_or_else(|| panic!("peer said {first:?}"));
            peer.port = Some(port.trim().parse().expect("a port number"));
        } else {
            assert_eq!(first, "ready");
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
        let line = format!("send {}", enc(msg));
        assert_eq!(self.request(&line), "ok");
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

/// A `Connection` on a blocking `TcpStream`: the owner loop of the module docs.
struct Wire {
    stream: TcpStream,
    conn: Connection,
    events: VecDeque<Event>,
    eof: bool,
    buf: Vec<u8>,
    /// When set: (bytes still allowed out, bytes withheld until the connection closes).
    withheld: Option<(usize, Vec<u8>)>,
    /// When set: bytes still fed to the connection; the rest of the input is dropped.
    deaf_after: Option<usize>,
    /// PING commands written (a command's name travels as length 4 + "PING").
    pings: usize,
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
            withheld: None,
            deaf_after: None,
            pings: 0,
        }
    }

    /// Writes what the connection queued, except what is withheld (see `withhold_after`).
    fn flush(&mut self) {
        while let Some(b) = self.conn.poll_transmit() {
            match &mut self.withheld {
                Some((budget, held)) if *budget < b.len() => {
                    let n = *budget;
                    *budget = 0;
                    held.extend_from_slice(&b[n..]);
                    self.write(&b[..n]);
                }
                Some((budget, _)) => {
                    *budget -= b.len();
                    self.write(&b);
                }
                None => self.write(&b),
            }
        }
        if self.conn.is_closed() {
            if let Some((_, held)) = self.withheld.take() {
                self.write(&held);
            }
        }
    }

    fn write(&mut self, b: &[u8]) {
        self.pings += b.windows(5).filter(|w| *w == b"\x04PING").count();
        if self.stream.write_all(b).is_err() {
            // The peer is gone; what it did shows in its events and our EOF.
            self.eof = true;
        }
    }

    /// One round: write what is queued, read what arrived, run timers, collect events.
    fn pump(&mut self) {
        self.flush();
        if !self.eof {
            match self.stream.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    let n = match &mut self.deaf_after {
                        Some(budget) => {
                            let k = n.min(*budget);
                            *budget -= k;
                            k
                        }
                        None => n,
                    };
                    self.conn.handle_input(&self.buf[..n], Instant::now());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.eof = true,
            }
        } else {
            std::thread::sleep(Duration::from_millis(10));
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

    /// Pumps until `f` picks an event (earlier events are dropped) and returns its value.
    fn until<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let mut start = Instant::now();
        loop {
            while let Some(e) = self.events.pop_front() {
                if let Some(t) = f(&e) {
                    return t;
                }
                if let Event::Closed(err) = &e {
                    panic!("closed while waiting for {what}: {err}");
                }
            }
            still_waiting(&mut start, what);
            assert!(!self.eof, "the peer hung up while we waited for {what}");
            self.pump();
        }
    }

    /// Pumps until the connection is closed; returns the error.
    fn until_closed(&mut self) -> ProtoError {
        self.until("the connection to close", |e| match e {
            Event::Closed(err) => Some(err.clone()),
            _ => None,
        })
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

    /// Pumps for `d`, failing if the connection closes.
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

fn payload(tag: &str) -> Message {
    Message::from_frames([
        Bytes::new(),
        Bytes::copy_from_slice(tag.as_bytes()),
        Bytes::from((0..1 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
        Bytes::new(),
    ])
}

fn with_front(front: &[Bytes], msg: &Message) -> Message {
    Message::from_frames(front.iter().cloned().chain(msg.frames().iter().cloned()))
}

/// The handshake and, where the pattern lets messages flow, a message each way.
fn exchange(ours: SocketType, theirs: SocketType, we_connect: bool) {
    use SocketType::*;
    let (mut w, mut peer) = connect(Config::new(ours), theirs, we_connect, &[]);
    let info = w.handshake();
    assert_eq!(info.socket_type, theirs, "{ours}-{theirs}");
    assert_eq!(info.minor_version, 1);
    let empty = Bytes::new();
    let to_them = payload("to-libzmq");
    let to_us = payload("to-lwmq");
    match theirs {
        Sub | XSub => {
            // We are PUB/XPUB: wait for their subscription, then publish.
            let topic = w.until("a subscription", |e| match e {
                Event::Subscribe(t) => Some(t.clone()),
                _ => None,
            });
            assert_eq!(topic, "");
            w.send(to_them.clone());
            assert_eq!(peer.recv(), to_them);
        }
        Pub | XPub => {
            w.conn.send_subscribe(Bytes::new());
            w.pump();
            if theirs == XPub {
                assert_eq!(peer.recv(), Message::from(&b"\x01"[..]));
            }
            peer.start_repeat(&to_us);
            assert_eq!(w.recv(), to_us);
            peer.stop_repeat();
        }
        Pull => {
            w.send(to_them.clone());
            assert_eq!(peer.recv(), to_them);
        }
        Push => {
            peer.send(&to_us);
            assert_eq!(w.recv(), to_us);
        }
        Pair | Dealer => {
            w.send(to_them.clone());
            assert_eq!(peer.recv(), to_them);
            peer.send(&to_us);
            assert_eq!(w.recv(), to_us);
        }
        Rep => {
            w.send(with_front(std::slice::from_ref(&empty), &to_them));
            assert_eq!(peer.recv(), to_them);
            peer.send(&to_us);
            assert_eq!(w.recv(), with_front(std::slice::from_ref(&empty), &to_us));
        }
        Router => {
            let envelope: &[Bytes] = if ours == Req {
                std::slice::from_ref(&empty)
            } else {
                &[]
            };
            let sent = with_front(envelope, &to_them);
            w.send(sent.clone());
            let got = peer.recv();
            let id = got.frames()[0].clone();
            assert_eq!(
                Message::from_frames(got.frames()[1..].iter().cloned()),
                sent
            );
            let reply = with_front(envelope, &to_us);
            peer.send(&with_front(&[id], &reply));
            assert_eq!(w.recv(), reply);
        }
        Req => {
            peer.send(&to_us);
            assert_eq!(w.recv(), with_front(std::slice::from_ref(&empty), &to_us));
            w.send(with_front(std::slice::from_ref(&empty), &to_them));
            assert_eq!(peer.recv(), to_them);
        }
    }
    assert!(!w.conn.is_closed());
}

fn every_valid_pair(we_connect: bool) {
    let _wd = common::watchdog(Duration::from_secs(300));
    let mut n = 0;
    for ours in SocketType::ALL {
        for theirs in SocketType::ALL {
            if ours.is_compatible_with(theirs) {
                exchange(ours, theirs, we_connect);
                n += 1;
            }
        }
    }
    assert_eq!(n, 21);
}

#[test]
fn null_every_valid_pair_we_connect() {
    every_valid_pair(true);
}

#[test]
fn null_every_valid_pair_they_connect() {
    every_valid_pair(false);
}

fn plain_client(t: SocketType, user: &str, pw: &str) -> Config {
    let mut c = Config::new(t);
    c.mechanism = MechanismConfig::PlainClient {
        username: user.into(),
        password: pw.into(),
    };
    c
}

#[test]
fn plain_we_are_client_of_a_zap_authenticated_libzmq_server() {
    let _wd = common::watchdog(Duration::from_secs(60));
    for we_connect in [true, false] {
        let (mut w, mut peer) = connect(
            plain_client(SocketType::Dealer, "admin", "secret"),
            SocketType::Dealer,
            we_connect,
            &["--plain-server", "admin:secret", "--monitor"],
        );
        w.handshake();
        w.send(Message::from("hi"));
        assert_eq!(peer.recv(), Message::from("hi"));
        peer.send(&Message::from("back"));
        assert_eq!(w.recv(), Message::from("back"));

        let (mut w, mut peer) = connect(
            plain_client(SocketType::Dealer, "admin", "wrong"),
            SocketType::Dealer,
            we_connect,
            &["--plain-server", "admin:secret", "--monitor"],
        );
        let err = w.until_closed();
        assert!(matches!(err, ProtoError::AuthFailed(_)), "{err}");
        assert!(
            !peer.events().iter().any(|e| e == "HANDSHAKE_SUCCEEDED"),
            "libzmq accepted a wrong password"
        );
    }
}

#[test]
fn plain_we_are_server_of_a_libzmq_client() {
    let _wd = common::watchdog(Duration::from_secs(60));
    for we_connect in [true, false] {
        for (pw, accept) in [("secret", true), ("wrong", false)] {
            let mut cfg = Config::new(SocketType::Dealer);
            cfg.mechanism = MechanismConfig::PlainServer;
            let creds = format!("admin:{pw}");
            let (mut w, mut peer) = connect(
                cfg,
                SocketType::Dealer,
                we_connect,
                &["--plain-client", &creds, "--monitor"],
            );
            let (user, got_pw) = w.until("an auth request", |e| match e {
                Event::AuthRequest {
                    username, password, ..
                } => Some((username.clone(), password.clone())),
                _ => None,
            });
            assert_eq!(user, "admin");
            assert_eq!(got_pw, pw);
            let ok = user == "admin" && got_pw == "secret";
            assert_eq!(ok, accept);
            w.conn.authenticate(ok);
            if accept {
                let info = w.handshake();
                assert_eq!(info.user_id.as_deref(), Some("admin"));
                w.send(Message::from("hi"));
                assert_eq!(peer.recv(), Message::from("hi"));
            } else {
                let err = w.until_closed();
                assert!(matches!(err, ProtoError::AuthFailed(_)), "{err}");
                // libzmq failed the handshake and hung up. (It reports our RFC-spelled
                // ERROR as an unexpected command: its PLAIN client only knows the
                // "^RROR" spelling of its own source; see proto::command.)
                let mut start = Instant::now();
                loop {
                    let ev = peer.events();
                    if ev.iter().any(|e| e == "DISCONNECTED") {
                        assert!(
                            ev.iter().any(|e| e.starts_with("HANDSHAKE_FAILED")),
                            "{ev:?}"
                        );
                        assert!(!ev.iter().any(|e| e == "HANDSHAKE_SUCCEEDED"), "{ev:?}");
                        break;
                    }
                    still_waiting(&mut start, format!("libzmq to disconnect; events {ev:?}"));
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

#[test]
fn heartbeating_libzmq_peer_stays_connected() {
    let _wd = common::watchdog(Duration::from_secs(60));
    // (we connect, we heartbeat too)
    for (we_connect, ours_too) in [(true, false), (false, true)] {
        let mut cfg = Config::new(SocketType::Pair);
        let peer_args: &[&str] = if ours_too {
            // We PING and libzmq (no heartbeats of its own) sends nothing else: it must
            // answer our PINGs, or we time out.
            cfg.heartbeat_interval = Some(Duration::from_millis(200));
            cfg.heartbeat_timeout = Some(Duration::from_millis(800));
            cfg.heartbeat_ttl = Some(Duration::from_millis(1500));
            &["--monitor"]
        } else {
            // libzmq PINGs every 200 ms with a TTL of 1 s, and drops us if nothing comes
            // back within 600 ms of a PING: our PONGs are all it receives from us.
            &["--hb", "200,1000,600", "--monitor"]
        };
        let (mut w, mut peer) = connect(cfg, SocketType::Pair, we_connect, peer_args);
        w.handshake();
        w.keep_alive_for(Duration::from_secs(5));
        if ours_too {
            assert!(w.pings >= 10, "only {} PINGs sent in 5 s", w.pings);
        }
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

#[test]
fn libzmq_drops_a_peer_that_never_answers_its_pings() {
    // The control for the test above: a peer that stops reading (so never PONGs) is
    // dropped by libzmq, which shows its heartbeat timeout is really armed.
    let _wd = common::watchdog(Duration::from_secs(60));
    let (mut w, mut peer) = connect(
        Config::new(SocketType::Pair),
        SocketType::Pair,
        true,
        &["--hb", "200,1000,600", "--monitor"],
    );
    w.handshake();
    let mut start = Instant::now();
    loop {
        // Deaf and mute: no pump at all.
        std::thread::sleep(Duration::from_millis(100));
        let ev = peer.events();
        if ev.iter().any(|e| e == "DISCONNECTED") {
            break;
        }
        still_waiting(&mut start, format!("libzmq to drop us; events {ev:?}"));
    }
}

#[test]
fn incompatible_libzmq_peer_is_refused_by_us() {
    let _wd = common::watchdog(Duration::from_secs(60));
    for we_connect in [true, false] {
        let (mut w, _peer) = connect(
            Config::new(SocketType::Req),
            SocketType::Pub,
            we_connect,
            &[],
        );
        // Send only our greeting until we have judged their READY: otherwise libzmq,
        // judging ours first, may hang up before its READY reaches us.
        w.withheld = Some((64, Vec::new()));
        let err = w.until_closed();
        assert_eq!(
            err,
            ProtoError::IncompatibleSocketType {
                ours: SocketType::Req,
                theirs: SocketType::Pub
            }
        );
        assert_eq!(err.to_string(), "socket type REQ cannot talk to PUB");
    }
}

#[test]
fn libzmq_refuses_our_incompatible_type() {
    let _wd = common::watchdog(Duration::from_secs(60));
    for we_connect in [true, false] {
        let (mut w, mut peer) = connect(
            Config::new(SocketType::Push),
            SocketType::Push,
            we_connect,
            &["--monitor"],
        );
        // We take in their greeting only, so we send our READY but never judge theirs
        // (and send no ERROR): whatever happens next is libzmq's own decision.
        w.deaf_after = Some(64);
        // libzmq, seeing our type, fails the handshake and closes the TCP connection.
        let mut start = Instant::now();
        while !w.eof {
            w.pump();
            still_waiting(&mut start, "libzmq to close the connection");
        }
        assert!(
            !w.events
                .iter()
                .any(|e| matches!(e, Event::HandshakeSucceeded(_))),
            "{:?}",
            w.events
        );
        let mut start = Instant::now();
        loop {
            let ev = peer.events();
            // libzmq 4.3.5 reports a metadata mismatch as a plain disconnect.
            if ev
                .iter()
                .any(|e| e == "DISCONNECTED" || e == "HANDSHAKE_FAILED_PROTOCOL")
            {
                assert!(!ev.iter().any(|e| e == "HANDSHAKE_SUCCEEDED"), "{ev:?}");
                break;
            }
            still_waiting(&mut start, format!("libzmq to disconnect; events {ev:?}"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn routing_ids_cross_in_both_directions() {
    let _wd = common::watchdog(Duration::from_secs(60));
    for we_connect in [true, false] {
        // Ours reaches a libzmq ROUTER, which uses it as the envelope.
        let mut cfg = Config::new(SocketType::Dealer);
        cfg.identity = Bytes::from_static(b"lwmq-dealer");
        let (mut w, mut peer) = connect(cfg, SocketType::Router, we_connect, &[]);
        w.handshake();
        w.send(Message::from("x"));
        assert_eq!(peer.recv(), Message::from_frames(["lwmq-dealer", "x"]));
        peer.send(&Message::from_frames(["lwmq-dealer", "y"]));
        assert_eq!(w.recv(), Message::from("y"));

        // Theirs reaches us in PeerInfo.
        let (mut w, _peer) = connect(
            Config::new(SocketType::Router),
            SocketType::Dealer,
            we_connect,
            &["--identity", "zmq-dealer"],
        );
        assert_eq!(w.handshake().identity, "zmq-dealer");
    }
}
