//! The shared-memory transport across real processes: start orders, `kill -9` of either
//! side, a hostile peer, another user, and the errors a user can hit.
//!
//! Peers are this test binary run again (`--exact peer_process_entry`) with
//! `LWMQ_SHM_ROLE` naming what the child does; children print `KEY value` lines on
//! stdout and exit when their stdin closes (the parent died) or they are killed. Every
//! test uses a domain of its own (`t<pid>-<test>`), so tests run in parallel.

mod common;

use std::collections::VecDeque;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::peer::{Peer, PeerEnv, PrivateCopy, assert_clean, fd_count, say, shm_map_count};
use common::watchdog;
use lwmq::shm::{self, AllowedPeers, Doorbell, Hello, ShmConnection, ShmListener, ShmOptions};
use lwmq::{Error, Message, SocketType};

const ROLE: &str = "LWMQ_SHM_ROLE";
const PEER: PeerEnv = PeerEnv {
    role: ROLE,
    domain: "LWMQ_SHM_DOMAIN",
};

/// Deadlock guards, not speed assertions: a wait that should take microseconds fails
/// with a clear error (instead of the watchdog's abort) if it has not ended after this.
const GUARD_SPAN: Duration = Duration::from_secs(30);
const GUARD: Option<Duration> = Some(GUARD_SPAN);

fn opts(domain: &str) -> ShmOptions {
    ShmOptions {
        domain: domain.to_owned(),
        ..ShmOptions::default()
    }
}

fn unique_domain(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut d = format!(
        "t{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        test
    );
    d.truncate(48);
    d
}

/// Connects, retrying every 10 ms while nobody is bound, for at most `limit`.
fn connect_retry(
    name: &str,
    o: &ShmOptions,
    ty: SocketType,
    bell: &Doorbell,
    limit: Duration,
) -> lwmq::Result<ShmConnection> {
    let start = Instant::now();
    loop {
        if let Some(c) = shm::connect(name, Some(7), o, Hello::new(ty), bell)? {
            return Ok(c);
        }
        if start.elapsed() > limit {
            return Err(Error::Timeout);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Accepts one connection, polling the listener for at most `limit`.
fn accept_wait(l: &ShmListener, limit: Duration) -> lwmq::Result<ShmConnection> {
    let start = Instant::now();
    loop {
        if let Some(c) = l.accept()? {
            return Ok(c);
        }
        if start.elapsed() > limit {
            return Err(Error::Timeout);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn num(i: u64) -> Message {
    Message::from(i.to_le_bytes().to_vec())
}

fn num_of(m: &Message) -> u64 {
    u64::from_le_bytes(m.frames()[0][..8].try_into().expect("8-byte frame"))
}

/// Watches a connection's control socket with mio, as the socket layer's event loop
/// will.
struct HupWatch {
    poll: mio::Poll,
    events: mio::Events,
}

impl HupWatch {
    fn new(c: &ShmConnection) -> HupWatch {
        let poll = mio::Poll::new().expect("mio poll");
        let fd = c.control_fd();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(0),
                mio::Interest::READABLE,
            )
            .expect("register the control socket");
        HupWatch {
            poll,
            events: mio::Events::with_capacity(4),
        }
    }

    /// Waits until the peer hangs up (the test's watchdog bounds the wait).
    fn wait(&mut self) {
        loop {
            self.poll
                .poll(&mut self.events, Some(Duration::from_secs(1)))
                .expect("poll");
            if self
                .events
                .iter()
                .any(|e| e.is_read_closed() || e.is_error())
            {
                return;
            }
        }
    }
}

/// Waits for the peer's death; returns how long it took.
fn wait_hup(c: &ShmConnection) -> Duration {
    let start = Instant::now();
    HupWatch::new(c).wait();
    start.elapsed()
}

// ---------------------------------------------------------------------------------------
// Child processes

fn child_opts() -> ShmOptions {
    let mut o = opts(&std::env::var("LWMQ_SHM_DOMAIN").expect("domain"));
    if let Ok(r) = std::env::var("LWMQ_SHM_RING") {
        o.ring_size = r.parse().expect("ring size");
    }
    if std::env::var("LWMQ_SHM_ALLOW").as_deref() == Ok("any") {
        o.allow_uids = AllowedPeers::Any;
    }
    o
}

/// Not a test: the entry point of the child processes (does nothing without
/// `LWMQ_SHM_ROLE`).
#[test]
fn peer_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // Exit when the parent goes away (its end of our stdin closes).
    std::thread::spawn(|| {
        let mut buf = String::new();
        let _ = std::io::stdin().read_line(&mut buf);
        std::process::exit(3);
    });
    let o = child_opts();
    let bell = Doorbell::new().expect("doorbell");
    let name = "service";
    let forever = Duration::from_secs(3600);
    match role.as_str() {
        "echo-server" => {
            let l = ShmListener::bind(name, Some(7), &o, Hello::new(SocketType::Pair), &bell)
                .expect("bind");
            say("READY", std::process::id());
            let mut conns: Vec<ShmConnection> = Vec::new();
            loop {
                match l.accept() {
                    Ok(Some(c)) => {
                        say("ACCEPTED", c.peer.pid);
                        conns.push(c);
                    }
                    Ok(None) => {}
                    Err(e) => say("ACCEPT-ERROR", e),
                }
                conns.retain_mut(|c| {
                    loop {
                        match c.rx.try_recv() {
                            Ok(Some(m)) => {
                                if c.send(&m, Some(Duration::from_secs(5))).is_err() {
                                    return false;
                                }
                            }
                            Ok(None) => return c.peer_alive(),
                            Err(e) => {
                                say("PEER-ERROR", e);
                                return false;
                            }
                        }
                    }
                });
                // One doorbell for every peer: sleep until any of them sends (or 20 ms
                // pass, to look at the listener and at hang-ups).
                let _ = bell.wait_until(
                    Duration::from_micros(20),
                    Some(Instant::now() + Duration::from_millis(20)),
                    || {
                        conns
                            .iter_mut()
                            .any(|c| c.rx.has_data().unwrap_or(true))
                            .then_some(())
                    },
                );
            }
        }
        "streamer" => {
            let l = ShmListener::bind(name, Some(7), &o, Hello::new(SocketType::Push), &bell)
                .expect("bind");
            say("READY", std::process::id());
            let mut c = accept_wait(&l, forever).expect("accept");
            let mut i = 0u64;
            loop {
                match c.send(&num(i), Some(Duration::from_millis(100))) {
                    Ok(()) => i += 1,
                    Err(Error::Timeout) => {}
                    Err(_) => std::process::exit(0),
                }
            }
        }
        "queue-client" => {
            let mut queue: VecDeque<Message> = (0..1000u64).map(num).collect();
            let first = shm::connect(name, Some(7), &o, Hello::new(SocketType::Push), &bell)
                .expect("connect");
            assert!(first.is_none(), "nobody is bound yet");
            say("QUEUED", queue.len());
            let mut c = connect_retry(name, &o, SocketType::Push, &bell, forever).expect("connect");
            while let Some(m) = queue.pop_front() {
                c.send(&m, None).expect("send");
            }
            say("SENT", 1000);
            // Stay until the receiver hangs up, so nothing is lost with us.
            while c.peer_alive() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        "idle-client" => {
            let mut c = connect_retry(name, &o, SocketType::Pair, &bell, forever).expect("connect");
            c.send(&Message::from("hello"), None).expect("send");
            say("CONNECTED", std::process::id());
            std::thread::sleep(forever);
        }
        "leak-binder" => {
            let l = ShmListener::bind(name, Some(7), &o, Hello::new(SocketType::Pair), &bell)
                .expect("bind");
            let (fds0, maps0) = (fd_count(), shm_map_count());
            say("READY", std::process::id());
            let mut c = accept_wait(&l, forever).expect("accept");
            let m = c.recv(None).expect("the client's hello");
            assert_eq!(m, Message::from("hello"));
            let (fds1, maps1) = (fd_count(), shm_map_count());
            say("ACCEPTED", c.peer.pid);
            let took = wait_hup(&c);
            assert!(matches!(
                c.recv(Some(Duration::from_secs(1))),
                Err(Error::Closed)
            ));
            drop(c);
            let (fds2, maps2) = (fd_count(), shm_map_count());
            say(
                "COUNTS",
                format!(
                    "{fds0} {fds1} {fds2} {maps0} {maps1} {maps2} {}",
                    took.as_micros()
                ),
            );
            std::thread::sleep(forever);
        }
        "hostile" => {
            let mode = std::env::var("LWMQ_SHM_MODE").expect("mode");
            let mut c = connect_retry(name, &o, SocketType::Pair, &bell, forever).expect("connect");
            c.send(&Message::from("ok"), None).expect("send");
            let seg = c.segment_for_testing();
            let size = seg.ring_size();
            let ctrl0 = shm::segment::CONTROL_OFFSET[0];
            let ctrl1 = shm::segment::CONTROL_OFFSET[1];
            let data0 = shm::segment::data_offset(0, size);
            let hdr = |len: u64, flags: u64| (len | flags << 32 | 0x4C57u64 << 48).to_ne_bytes();
            match mode.as_str() {
                // The tail claims more than the ring holds.
                "tail" => assert!(
                    seg.debug_write(ctrl0 + shm::ring::TAIL_OFFSET, &u64::MAX.to_ne_bytes())
                ),
                // A second message whose length runs far past the ring.
                "length" => {
                    assert!(seg.debug_write(data0 + 16, &hdr(1 << 30, 0)));
                    assert!(seg.debug_write(ctrl0, &32u64.to_ne_bytes()));
                }
                // A second message with flags nobody defined.
                "flags" => {
                    assert!(seg.debug_write(data0 + 16, &hdr(3, 0x80)));
                    assert!(seg.debug_write(ctrl0, &32u64.to_ne_bytes()));
                }
                // Our "consumed" position for the victim's ring, far ahead of its tail.
                "head" => assert!(
                    seg.debug_write(ctrl1 + shm::ring::HEAD_OFFSET, &(1u64 << 40).to_ne_bytes())
                ),
                // Random garbage over the whole ring.
                "garbage" => {
                    let mut x = 0x9E37_79B9_7F4A_7C15u64;
                    let mut junk = Vec::with_capacity(size);
                    while junk.len() < size {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        junk.extend_from_slice(&x.to_ne_bytes());
                    }
                    assert!(seg.debug_write(data0, &junk));
                    assert!(seg.debug_write(ctrl0, &4096u64.to_ne_bytes()));
                }
                other => panic!("unknown mode {other}"),
            }
            say("CORRUPTED", &mode);
            std::thread::sleep(forever);
        }
        "report-client" => {
            let r =
                connect_retry(name, &o, SocketType::Pair, &bell, GUARD_SPAN).and_then(|mut c| {
                    c.send(&Message::from("ping"), GUARD)?;
                    c.recv(GUARD)
                });
            match r {
                Ok(m) => say(
                    "RESULT",
                    format!("OK {}", String::from_utf8_lossy(&m.frames()[0])),
                ),
                Err(e) => say("RESULT", format!("ERR {e}")),
            }
            std::thread::sleep(forever);
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------
// Leftovers

/// Nothing of ours in /dev/shm or /tmp, and no abstract socket of `domain` left.
fn exchange(c: &mut ShmConnection, n: u64) {
    for i in 0..n {
        c.send(&num(i), GUARD).expect("send");
        let back = c.recv(GUARD).expect("echo");
        assert_eq!(num_of(&back), i);
    }
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn server_first_then_client() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("server-first");
    let o = opts(&domain);
    let mut server = PEER.spawn("echo-server", &domain, &[]);
    server.expect("READY");
    let bell = Doorbell::new().unwrap();
    let mut c = connect_retry("service", &o, SocketType::Pair, &bell, GUARD_SPAN).unwrap();
    assert_eq!(c.peer.pid, server.pid());
    assert_eq!(c.peer.socket_type, SocketType::Pair);
    assert_eq!(c.endpoint(), "ipc://service:7");
    exchange(&mut c, 200);
    // Multi-frame messages keep their frames.
    let m = Message::from_frames(["a", "", "ccc"]);
    c.send(&m, None).unwrap();
    assert_eq!(c.recv(GUARD).unwrap(), m);
    drop(c);
    server.kill9();
    assert_clean(&domain);
}

#[test]
fn client_first_then_server() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("client-first");
    let o = opts(&domain);
    let bell = Doorbell::new().unwrap();
    // Nobody bound: connect returns at once with None.
    assert!(
        shm::connect("service", Some(7), &o, Hello::new(SocketType::Pair), &bell)
            .unwrap()
            .is_none()
    );
    let mut server = PEER.spawn("echo-server", &domain, &[]);
    let mut c = connect_retry("service", &o, SocketType::Pair, &bell, GUARD_SPAN).unwrap();
    assert_eq!(c.peer.pid, server.pid());
    server.expect("ACCEPTED");
    exchange(&mut c, 100);
    drop(c);
    server.kill9();
    assert_clean(&domain);
}

#[test]
fn client_queues_1000_before_the_server_exists() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("queue-1000");
    let o = opts(&domain);
    let mut client = PEER.spawn("queue-client", &domain, &[]);
    assert_eq!(client.expect("QUEUED"), "1000");
    let bell = Doorbell::new().unwrap();
    let l = ShmListener::bind("service", Some(7), &o, Hello::new(SocketType::Pull), &bell).unwrap();
    let mut c = accept_wait(&l, GUARD_SPAN).unwrap();
    assert_eq!(c.peer.socket_type, SocketType::Push);
    for i in 0..1000 {
        let m = c.recv(GUARD).unwrap();
        assert_eq!(num_of(&m), i, "in order");
    }
    client.expect("SENT");
    drop(c);
    drop(l);
    client.kill9();
    assert_clean(&domain);
}

#[test]
fn kill9_of_the_binder_is_seen_and_a_restarted_binder_is_reached() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("kill-binder");
    let o = opts(&domain);
    let bell = Doorbell::new().unwrap();
    let mut server = PEER.spawn("streamer", &domain, &[]);
    server.expect("READY");
    let mut c = connect_retry("service", &o, SocketType::Pull, &bell, GUARD_SPAN).unwrap();
    for i in 0..10_000 {
        assert_eq!(num_of(&c.recv(GUARD).unwrap()), i);
    }
    // kill -9 mid-stream; the control socket reports it.
    let mut watch = HupWatch::new(&c);
    assert!(c.peer_alive());
    let t0 = Instant::now();
    server.child.0.kill().expect("kill -9");
    watch.wait();
    let seen = t0.elapsed();
    eprintln!("kill -9 of the binder seen after {seen:?}");
    server.child.0.wait().expect("reap");
    assert!(!c.peer_alive());
    // What it wrote before dying can still be drained; then Closed.
    let mut next = 10_000;
    loop {
        match c.recv(Some(Duration::from_secs(5))) {
            Ok(m) => {
                assert_eq!(num_of(&m), next);
                next += 1;
            }
            Err(Error::Closed) => break,
            Err(e) => panic!("expected Closed after draining, got {e}"),
        }
    }
    drop(c);
    // A restarted binder is reached again and traffic resumes.
    let mut server = PEER.spawn("streamer", &domain, &[]);
    let mut c = connect_retry("service", &o, SocketType::Pull, &bell, GUARD_SPAN).unwrap();
    assert_eq!(c.peer.pid, server.pid());
    for i in 0..1000 {
        assert_eq!(num_of(&c.recv(GUARD).unwrap()), i);
    }
    drop(c);
    server.kill9();
    assert_clean(&domain);
}

#[test]
fn kill9_of_the_connector_frees_its_memory_and_descriptors() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("kill-connector");
    // The binder runs in a child of its own so that nothing else in its process opens
    // descriptors or maps memory while it counts.
    let mut binder = PEER.spawn("leak-binder", &domain, &[]);
    binder.expect("READY");
    let mut client = PEER.spawn("idle-client", &domain, &[]);
    client.expect("CONNECTED");
    assert_eq!(binder.expect("ACCEPTED"), client.pid().to_string());
    client.kill9();
    let counts: Vec<u64> = binder
        .expect("COUNTS")
        .split(' ')
        .map(|v| v.parse().expect("number"))
        .collect();
    let [fds0, fds1, fds2, maps0, maps1, maps2, micros] = counts[..] else {
        panic!("bad COUNTS line {counts:?}");
    };
    eprintln!(
        "kill -9 of the connector seen by the binder after {micros} µs; fds {fds0}/{fds1}/{fds2}, lwmq maps {maps0}/{maps1}/{maps2}"
    );
    assert!(
        fds1 > fds0 && maps1 > maps0,
        "the connection held descriptors and maps"
    );
    assert_eq!(fds2, fds0, "descriptors freed");
    assert_eq!(maps2, maps0, "shared memory unmapped");
    binder.kill9();
    assert_clean(&domain);
}

/// Runs a hostile connector in `mode` against a binder in this process; the binder
/// must get a protocol error and keep serving others.
fn hostile(mode: &str) {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain(&format!("hostile-{mode}"));
    let o = opts(&domain);
    let bell = Doorbell::new().unwrap();
    let l = ShmListener::bind("service", Some(7), &o, Hello::new(SocketType::Pair), &bell).unwrap();
    let mut evil = PEER.spawn(
        "hostile",
        &domain,
        &[("LWMQ_SHM_MODE", mode), ("LWMQ_SHM_RING", "4096")],
    );
    let mut c = accept_wait(&l, GUARD_SPAN).unwrap();
    evil.expect("CORRUPTED");
    let err = if mode == "head" {
        // Our side's ring to the peer: noticed when the writer next reloads the head.
        loop {
            match c.tx.try_send(&Message::from(vec![0u8; 100])) {
                Ok(()) => {}
                Err(e) => break Error::from(e),
            }
        }
    } else {
        // Whatever valid message precedes the corruption may arrive first.
        loop {
            match c.recv(GUARD) {
                Ok(m) => assert_eq!(m, Message::from("ok")),
                Err(e) => break e,
            }
        }
    };
    eprintln!("hostile {mode}: {err}");
    assert!(matches!(err, Error::Protocol(_)), "{mode}: {err}");
    // The error sticks; the connection is dropped.
    assert!(c.rx.try_recv().is_err() || mode == "head");
    drop(c);
    // The listener still serves a well-behaved peer.
    let mut good = PEER.spawn("report-client", &domain, &[]);
    let mut c = accept_wait(&l, GUARD_SPAN).unwrap();
    let m = c.recv(GUARD).unwrap();
    assert_eq!(m, Message::from("ping"));
    c.send(&Message::from("pong"), None).unwrap();
    assert_eq!(good.expect("RESULT"), "OK pong");
    drop(c);
    drop(l);
    good.kill9();
    evil.kill9();
    assert_clean(&domain);
}

#[test]
fn hostile_peer_bad_tail() {
    hostile("tail");
}

#[test]
fn hostile_peer_bad_length() {
    hostile("length");
}

#[test]
fn hostile_peer_bad_flags() {
    hostile("flags");
}

#[test]
fn hostile_peer_bad_head() {
    hostile("head");
}

#[test]
fn hostile_peer_garbage() {
    hostile("garbage");
}

#[test]
fn another_user_is_refused_by_default_and_accepted_when_allowed() {
    let _w = watchdog(Duration::from_secs(90));
    assert_eq!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap(),
        "0",
        "this test runs a peer as `nobody` and needs root"
    );
    let domain = unique_domain("other-user");
    let copy = PrivateCopy::new(&domain);
    let bell = Doorbell::new().unwrap();

    // 1. We (root) refuse nobody; nobody allows anyone. Both sides say why.
    let o = opts(&domain);
    let l = ShmListener::bind("service", Some(7), &o, Hello::new(SocketType::Pair), &bell).unwrap();
    let mut peer = PEER.spawn_cmd(
        copy.as_nobody(),
        "report-client",
        &domain,
        &[("LWMQ_SHM_ALLOW", "any")],
    );
    let err = loop {
        match l.accept() {
            Ok(Some(_)) => panic!("nobody must be refused"),
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break e,
        }
    };
    eprintln!("binder: {err}");
    assert!(matches!(err, Error::PeerRejected(_)), "{err}");
    assert!(err.to_string().contains("peer uid 65534"), "{err}");
    let theirs = peer.expect("RESULT");
    eprintln!("connector: {theirs}");
    assert!(theirs.starts_with("ERR peer rejected"), "{theirs}");
    assert!(
        theirs.contains("refused us") && theirs.contains("peer uid 65534"),
        "{theirs}"
    );
    peer.kill9();

    // 2. nobody (default options) refuses us, root; we learn why.
    let mut peer = PEER.spawn_cmd(copy.as_nobody(), "report-client", &domain, &[]);
    let err = loop {
        match l.accept() {
            Ok(Some(_)) => panic!("nobody refuses root by default"),
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break e,
        }
    };
    eprintln!("binder: {err}");
    assert!(
        err.to_string().contains("refused us") && err.to_string().contains("peer uid 0"),
        "{err}"
    );
    let theirs = peer.expect("RESULT");
    assert!(
        theirs.starts_with("ERR peer rejected") && theirs.contains("peer uid 0"),
        "{theirs}"
    );
    peer.kill9();
    drop(l);

    // 3. Both allow it: messages flow.
    let o = ShmOptions {
        allow_uids: AllowedPeers::Uids(vec![65534]),
        ..opts(&domain)
    };
    let l = ShmListener::bind("service", Some(7), &o, Hello::new(SocketType::Pair), &bell).unwrap();
    let mut peer = PEER.spawn_cmd(
        copy.as_nobody(),
        "report-client",
        &domain,
        &[("LWMQ_SHM_ALLOW", "any")],
    );
    let mut c = accept_wait(&l, GUARD_SPAN).unwrap();
    assert_eq!(c.peer.uid, 65534);
    assert_eq!(c.recv(GUARD).unwrap(), Message::from("ping"));
    c.send(&Message::from("pong"), None).unwrap();
    assert_eq!(peer.expect("RESULT"), "OK pong");
    drop(c);
    drop(l);
    peer.kill9();
    drop(copy);
    assert_clean(&domain);
}

#[test]
fn binding_a_bound_name_is_address_in_use() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("in-use");
    let o = opts(&domain);
    let bell = Doorbell::new().unwrap();
    let mut server = PEER.spawn("echo-server", &domain, &[]);
    server.expect("READY");
    let err =
        ShmListener::bind("service", Some(7), &o, Hello::new(SocketType::Pair), &bell).unwrap_err();
    assert!(
        matches!(&err, Error::AddressInUse { endpoint } if endpoint == "ipc://service:7"),
        "{err}"
    );
    assert!(err.to_string().contains("ipc://service:7"));
    // Another port of the same name, and the same name without a port, are other names.
    let a = ShmListener::bind("service", Some(8), &o, Hello::new(SocketType::Pair), &bell).unwrap();
    let b = ShmListener::bind("service", None, &o, Hello::new(SocketType::Pair), &bell).unwrap();
    let err =
        ShmListener::bind("service", None, &o, Hello::new(SocketType::Pair), &bell).unwrap_err();
    assert!(
        matches!(&err, Error::AddressInUse { endpoint } if endpoint == "ipc://service"),
        "{err}"
    );
    drop((a, b));
    server.kill9();
    // Once the binder is gone the name is free again.
    let again =
        ShmListener::bind("service", Some(7), &o, Hello::new(SocketType::Pair), &bell).unwrap();
    drop(again);
    assert_clean(&domain);
}

#[test]
fn messages_larger_than_the_ring_go_in_pieces() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("too-large");
    let o = ShmOptions {
        ring_size: 64 * 1024,
        ..opts(&domain)
    };
    let mut server = PEER.spawn("echo-server", &domain, &[]);
    server.expect("READY");
    let bell = Doorbell::new().unwrap();
    let mut c = connect_retry("service", &o, SocketType::Pair, &bell, GUARD_SPAN).unwrap();
    let limit = c.tx.max_message_size();
    assert_eq!(limit, 32 * 1024 - 8);
    // At the limit (one record), one byte over and 1 MiB in two frames (pieces),
    // echoed by another process (pieces both ways); the connection stays fine.
    let over = Message::from_frames([(0..limit + 1).map(|i| i as u8).collect::<Vec<_>>()]);
    let multi = Message::from_frames([vec![7u8; 1 << 20], b"tail".to_vec()]);
    for m in [Message::from(vec![9u8; limit]), over, multi] {
        c.send(&m, None).unwrap();
        assert_eq!(c.recv(GUARD).unwrap(), m);
    }
    exchange(&mut c, 10);
    drop(c);
    server.kill9();
    assert_clean(&domain);
}

#[test]
fn incompatible_socket_types_are_refused_on_both_sides() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("types");
    let o = opts(&domain);
    let bell = Doorbell::new().unwrap();
    let l = ShmListener::bind("service", Some(7), &o, Hello::new(SocketType::Push), &bell).unwrap();
    let accepter = std::thread::spawn(move || {
        let r = accept_wait(&l, GUARD_SPAN);
        r.map(|_| ()).unwrap_err().to_string()
    });
    let bell2 = Doorbell::new().unwrap();
    let err = connect_retry("service", &o, SocketType::Pub, &bell2, GUARD_SPAN).unwrap_err();
    assert!(matches!(err, Error::PeerRejected(_)), "{err}");
    assert!(
        err.to_string().contains("PUB") && err.to_string().contains("PUSH"),
        "{err}"
    );
    let theirs = accepter.join().unwrap();
    assert!(
        theirs.contains("PUB") && theirs.contains("PUSH"),
        "{theirs}"
    );
    assert_clean(&domain);
}

#[test]
fn long_utf8_names_and_bad_domains() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("long-name");
    let o = opts(&domain);
    let bell = Doorbell::new().unwrap();
    // 119 characters of 4 bytes each: far more than an abstract name can hold.
    let name: String = "𝄞".repeat(119);
    let other: String = "𝄞".repeat(118) + "x";
    let l = ShmListener::bind(&name, Some(65535), &o, Hello::new(SocketType::Pair), &bell).unwrap();
    let l2 =
        ShmListener::bind(&other, Some(65535), &o, Hello::new(SocketType::Pair), &bell).unwrap();
    let accepter = std::thread::spawn(move || {
        let mut c = accept_wait(&l, GUARD_SPAN).unwrap();
        let m = c.recv(GUARD).unwrap();
        c.send(&m, None).unwrap();
        drop(l2);
    });
    let start = Instant::now();
    let mut c = loop {
        if let Some(c) =
            shm::connect(&name, Some(65535), &o, Hello::new(SocketType::Pair), &bell).unwrap()
        {
            break c;
        }
        assert!(start.elapsed() < GUARD_SPAN);
    };
    c.send(&Message::from("x"), None).unwrap();
    assert_eq!(c.recv(GUARD).unwrap(), Message::from("x"));
    accepter.join().unwrap();
    let too_long: String = "a".repeat(120);
    assert!(matches!(
        ShmListener::bind(&too_long, None, &o, Hello::new(SocketType::Pair), &bell),
        Err(Error::Endpoint { .. })
    ));
    for (bad_name, port) in [("a:5", None), ("", None), ("x", Some(0))] {
        assert!(
            matches!(
                ShmListener::bind(bad_name, port, &o, Hello::new(SocketType::Pair), &bell),
                Err(Error::Endpoint { .. })
            ),
            "{bad_name:?} {port:?}"
        );
    }
    let bad = ShmOptions {
        domain: "no/slash".into(),
        ..opts(&domain)
    };
    assert!(matches!(
        ShmListener::bind("x", None, &bad, Hello::new(SocketType::Pair), &bell),
        Err(Error::InvalidArgument(_))
    ));
    drop(c);
    assert_clean(&domain);
}

/// A raw client of the rendezvous socket, in Python (no lwmq), that connects and then
/// either stays silent or sends a malformed hello, and reports what it gets back.
const RAW_CLIENT: &str = r#"
import socket, sys
name, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect("\0" + name)
if mode == "garbage":
    s.send(b"LWMQ\x02\x01\xff")
print("CONNECTED", flush=True)
try:
    data = s.recv(4096)
except ConnectionResetError:
    data = b""
if data:
    print("GOT", data[:6].hex(), data[8:].decode(errors="replace"), flush=True)
else:
    print("GOT EOF", flush=True)
sys.stdin.readline()
"#;

fn raw_client(abstract_name: &str, mode: &str) -> Peer {
    let mut cmd = Command::new(common::python());
    cmd.args(["-c", RAW_CLIENT, abstract_name, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Peer::from_child(cmd.spawn().expect("start python"))
}

#[test]
fn silent_and_malformed_handshakes_never_block_the_listener() {
    let _w = watchdog(Duration::from_secs(300));
    let domain = unique_domain("raw-handshakes");
    let o = ShmOptions {
        handshake_timeout: Duration::from_millis(300),
        ..opts(&domain)
    };
    let bell = Doorbell::new().unwrap();
    let l = ShmListener::bind("service", Some(7), &o, Hello::new(SocketType::Pair), &bell).unwrap();
    let abs = shm::abstract_name(&domain, "service", Some(7));

    // A peer that connects and says nothing: accept returns at once with nothing.
    let mut silent = raw_client(&abs, "silent");
    silent.expect("CONNECTED");
    assert!(l.accept().unwrap().is_none());

    // A malformed hello: a protocol error for that connection, and a reject for the peer.
    let mut garbage = raw_client(&abs, "garbage");
    garbage.expect("CONNECTED");
    let err = loop {
        match l.accept() {
            Ok(Some(_)) => panic!("a malformed hello must not connect"),
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    let got = garbage.expect("GOT");
    assert!(got.starts_with("4c574d510202"), "a reject packet: {got}");
    assert!(got.contains("truncated"), "{got}");

    // A well-behaved peer is served while the silent one is still pending.
    let o2 = o.clone();
    let client = std::thread::spawn(move || {
        let bell = Doorbell::new().unwrap();
        let mut c = connect_retry("service", &o2, SocketType::Pair, &bell, GUARD_SPAN).unwrap();
        c.send(&Message::from("hi"), None).unwrap();
        c.recv(GUARD).unwrap()
    });
    let mut c = accept_wait(&l, GUARD_SPAN).unwrap();
    assert_eq!(c.recv(GUARD).unwrap(), Message::from("hi"));
    c.send(&Message::from("yo"), None).unwrap();
    assert_eq!(client.join().unwrap(), Message::from("yo"));

    // Past the handshake timeout the silent peer is dropped (it sees EOF).
    std::thread::sleep(Duration::from_millis(400));
    assert!(l.accept().unwrap().is_none());
    assert_eq!(silent.expect("GOT"), "EOF");
    drop(c);
    drop(l);
    assert_clean(&domain);
}

#[test]
fn non_blocking_connect_and_ring_size_limits() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("nonblocking");
    let o = ShmOptions {
        max_peer_ring_size: 64 * 1024,
        ..opts(&domain)
    };
    let bell = Doorbell::new().unwrap();
    let l = ShmListener::bind("service", Some(7), &o, Hello::new(SocketType::Pair), &bell).unwrap();

    // The handshake completes in steps, without blocking either side.
    let small = ShmOptions {
        ring_size: 5000, // rounded up to 8 KiB
        ..opts(&domain)
    };
    let mut pending = shm::connect_start(
        "service",
        Some(7),
        &small,
        Hello::new(SocketType::Pair),
        &bell,
    )
    .unwrap()
    .expect("bound");
    assert!(
        pending.try_finish().unwrap().is_none(),
        "no answer before accept"
    );
    let mut server = accept_wait(&l, GUARD_SPAN).unwrap();
    let mut client = loop {
        if let Some(c) = pending.try_finish().unwrap() {
            break c;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(matches!(pending.try_finish(), Err(Error::Closed)), "spent");
    assert_eq!(client.tx.capacity(), 8192);
    assert_eq!(server.tx.capacity(), 8192);
    client.send(&Message::from("a"), None).unwrap();
    assert_eq!(server.recv(GUARD).unwrap(), Message::from("a"));

    // A connector asking for rings larger than the binder accepts is refused, clearly.
    let big = ShmOptions {
        ring_size: 1 << 20,
        ..opts(&domain)
    };
    let mut pending = shm::connect_start(
        "service",
        Some(7),
        &big,
        Hello::new(SocketType::Pair),
        &bell,
    )
    .unwrap()
    .expect("bound");
    let err = accept_wait(&l, GUARD_SPAN).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("max_peer_ring_size"), "{err}");
    let theirs = loop {
        match pending.try_finish() {
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Ok(Some(_)) => panic!("must be refused"),
            Err(e) => break e,
        }
    };
    assert!(matches!(theirs, Error::PeerRejected(_)), "{theirs}");
    assert!(
        theirs.to_string().contains("max_peer_ring_size"),
        "{theirs}"
    );
    drop((client, server, l));
    assert_clean(&domain);
}

#[test]
fn one_doorbell_serves_many_parked_peers() {
    let _w = watchdog(Duration::from_secs(120));
    let domain = unique_domain("shared-bell");
    let mut server = PEER.spawn("echo-server", &domain, &[]);
    server.expect("READY");
    // Three connections of one "socket" share its doorbell; everyone parks at once
    // (no spinning), so every message needs a futex wake-up that must not be lost.
    let o = ShmOptions {
        spin: Duration::ZERO,
        ..opts(&domain)
    };
    let bell = Doorbell::new().unwrap();
    let mut conns: Vec<ShmConnection> = (0..3)
        .map(|_| connect_retry("service", &o, SocketType::Pair, &bell, GUARD_SPAN).unwrap())
        .collect();
    for round in 0..300u64 {
        for (k, c) in conns.iter_mut().enumerate() {
            c.send(&num(round * 10 + k as u64), None).unwrap();
        }
        // Wait on the shared doorbell for whichever answers first, then collect all.
        let mut got = [false; 3];
        while got.iter().any(|g| !g) {
            let (k, m) = bell
                .wait_until(Duration::ZERO, None, || {
                    conns
                        .iter_mut()
                        .enumerate()
                        .find_map(|(k, c)| c.rx.try_recv().unwrap().map(|m| (k, m)))
                })
                .expect("no deadline: the watchdog guards this wait");
            assert!(!got[k]);
            assert_eq!(num_of(&m), round * 10 + k as u64);
            got[k] = true;
        }
    }
    drop(conns);
    server.kill9();
    assert_clean(&domain);
}

#[test]
fn a_split_connection_sends_and_receives_on_two_threads() {
    let _w = watchdog(Duration::from_secs(120));
    let domain = unique_domain("split");
    let o = opts(&domain);
    let mut server = PEER.spawn("echo-server", &domain, &[]);
    server.expect("READY");
    let bell = Doorbell::new().unwrap();
    let c = connect_retry("service", &o, SocketType::Pair, &bell, GUARD_SPAN).unwrap();
    let (mut tx, mut rx, peer, link) = c.into_parts();
    assert_eq!(peer.pid, server.pid());
    const N: u64 = 5000;
    let sender_bell = bell.clone();
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            let m = num(i);
            // Wait for space on the shared doorbell, as a socket's send would.
            sender_bell
                .wait_until(Duration::from_micros(50), None, || match tx.try_send(&m) {
                    Err(shm::ShmSendError::Full) => {
                        tx.arm_space_notification();
                        match tx.try_send(&m) {
                            Err(shm::ShmSendError::Full) => None,
                            r => Some(r),
                        }
                    }
                    r => Some(r),
                })
                .expect("no deadline")
                .expect("send");
        }
    });
    for i in 0..N {
        let m = bell
            .wait_until(Duration::from_micros(50), None, || rx.try_recv().unwrap())
            .expect("no deadline");
        assert_eq!(num_of(&m), i);
    }
    sender.join().unwrap();
    assert!(link.peer_alive());
    drop(link);
    server.kill9();
    assert_clean(&domain);
}
