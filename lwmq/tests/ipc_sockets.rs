//! `ipc://` (shared memory) at the socket level, across real processes: start orders,
//! queueing before the peer exists, `kill -9` of either side, a hostile peer, another
//! user, errors, every pattern, and the receive high-water mark.
//!
//! Peers are this test binary run again (`--exact peer_process_entry`) with
//! `LWMQ_IPC_ROLE` naming what the child does and `LWMQ_DOMAIN` a domain of the test's
//! own; children print `KEY value` lines on stdout and exit when their stdin closes (the
//! parent died) or they are killed.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::peer::{PeerEnv, PrivateCopy, assert_clean, fd_count, say, shm_map_count};
use common::watchdog;
use lwmq::shm::{self, AllowedPeers, Doorbell, Hello, ShmOptions};
use lwmq::{Context, Error, EventKind, Message, PollItem, Socket, SocketType, poll};

const ROLE: &str = "LWMQ_IPC_ROLE";
const PEER: PeerEnv = PeerEnv {
    role: ROLE,
    domain: "LWMQ_DOMAIN",
};
const EP: &str = "ipc://service:7";
/// Deadlock guard for single waits (not a speed assertion).
const GUARD: Duration = Duration::from_secs(30);
/// Where the parent tells a publishing child to start (the receive HWM's tests).
const CTL: &str = "ipc://control:8";
/// How long a child's send waits before it counts as blocked: long against the time
/// the receiver would need to make room if it read (it does not read).
const BLOCKED: Duration = Duration::from_millis(500);

fn unique_domain(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut d = format!(
        "i{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        test
    );
    d.truncate(48);
    d
}

/// A socket in `domain` whose receives give up after GUARD.
fn socket(ctx: &Context, ty: SocketType, domain: &str) -> Socket {
    let s = ctx.socket(ty).expect("socket");
    s.set_ipc_domain(domain);
    s.set_recv_timeout(Some(GUARD));
    s.set_send_timeout(Some(GUARD));
    s
}

fn num(i: u64) -> Message {
    Message::from(i.to_le_bytes().to_vec())
}

fn num_of(m: &Message) -> u64 {
    u64::from_le_bytes(m.frames()[0][..8].try_into().expect("8-byte frame"))
}

fn text(m: &Message, i: usize) -> String {
    String::from_utf8_lossy(&m.frames()[i]).into_owned()
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).expect(name).parse().expect("a number")
}

// ---------------------------------------------------------------------------------------
// Child processes

/// Not a test: the entry point of the child processes (does nothing without
/// `LWMQ_IPC_ROLE`).
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
    let domain = std::env::var("LWMQ_DOMAIN").expect("domain");
    let ctx = Context::new();
    let forever = Duration::from_secs(3600);
    let mk = |ty| {
        let s = socket(&ctx, ty, &domain);
        if std::env::var("LWMQ_IPC_ALLOW").as_deref() == Ok("any") {
            s.set_ipc_allowed_peers(AllowedPeers::Any);
        }
        s
    };
    match role.as_str() {
        "echo" => {
            let ty = match std::env::var("LWMQ_IPC_TYPE").as_deref() {
                Ok("rep") => SocketType::Rep,
                _ => SocketType::Pair,
            };
            let s = mk(ty);
            s.set_recv_timeout(None);
            s.bind(EP).expect("bind");
            say("READY", std::process::id());
            loop {
                let m = s.recv().expect("recv");
                s.send(m).expect("send");
            }
        }
        "pull-1000" => {
            let s = mk(SocketType::Pull);
            s.bind(EP).expect("bind");
            say("READY", std::process::id());
            let mut in_order = true;
            for i in 0..1000u64 {
                let m = s.recv().expect("recv");
                in_order &= num_of(&m) == i;
            }
            say(
                "GOT",
                if in_order {
                    "1000 in-order"
                } else {
                    "1000 OUT-OF-ORDER"
                },
            );
            std::thread::sleep(forever);
        }
        "streamer" => {
            let s = mk(SocketType::Push);
            s.bind(EP).expect("bind");
            say("READY", std::process::id());
            s.set_send_timeout(Some(Duration::from_millis(100)));
            let mut i = 0u64;
            loop {
                match s.send(num(i)) {
                    Ok(()) => i += 1,
                    Err(e) if matches!(e.error, Error::Timeout) => {}
                    Err(e) => panic!("streamer: {}", e.error),
                }
            }
        }
        "leak-binder" => {
            let s = mk(SocketType::Pair);
            let mon = s.monitor();
            s.bind(EP).expect("bind");
            let (fds0, maps0) = (fd_count(), shm_map_count());
            say("READY", std::process::id());
            assert_eq!(s.recv().expect("hello"), Message::from("hello"));
            let (fds1, maps1) = (fd_count(), shm_map_count());
            say("RECEIVED", "");
            let ev = mon
                .wait_for(EventKind::PeerCrashed, GUARD)
                .expect("peer-crashed");
            // The socket notices the closed pipe when it next looks at its pipes.
            assert!(matches!(s.try_recv(), Err(Error::WouldBlock)));
            let (fds2, maps2) = (fd_count(), shm_map_count());
            say(
                "COUNTS",
                format!("{fds0} {fds1} {fds2} {maps0} {maps1} {maps2} {}", ev.detail),
            );
            std::thread::sleep(forever);
        }
        "hello-client" => {
            let s = mk(SocketType::Pair);
            s.connect(EP).expect("connect");
            s.send("hello").expect("send");
            say("CONNECTED", std::process::id());
            std::thread::sleep(forever);
        }
        "good-pusher" => {
            let s = mk(SocketType::Push);
            s.connect(EP).expect("connect");
            say("CONNECTED", std::process::id());
            for i in 0.. {
                s.send(Message::from(format!("good {i}").into_bytes()))
                    .expect("send");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        "hostile" => hostile_peer(&domain),
        "good-puller" => {
            let s = mk(SocketType::Pull);
            s.set_recv_timeout(None);
            s.connect(EP).expect("connect");
            say("CONNECTED", std::process::id());
            for n in 1u64.. {
                s.recv().expect("recv");
                if n % 100 == 0 {
                    say("GOT", n);
                }
            }
        }
        "report" => {
            let s = mk(SocketType::Pair);
            let mon = s.monitor();
            s.set_recv_timeout(Some(Duration::from_millis(100)));
            s.connect(EP).expect("connect");
            s.send("ping").expect("send");
            let mut events = Vec::new();
            let start = Instant::now();
            let result = loop {
                match s.recv() {
                    Ok(m) => break format!("OK {}", text(&m, 0)),
                    Err(e) => {
                        let mut refused = false;
                        while let Some(ev) = mon.try_recv() {
                            refused |= matches!(
                                ev.kind,
                                EventKind::HandshakeFailedAuth | EventKind::HandshakeFailedProtocol
                            );
                            events.push(ev.to_string());
                        }
                        if refused || start.elapsed() > GUARD {
                            break format!("ERR {e}: {}", events.join(" | "));
                        }
                    }
                }
            };
            say("RESULT", result);
            std::thread::sleep(forever);
        }
        "xpub" => {
            let s = mk(SocketType::XPub);
            s.bind(EP).expect("bind");
            say("READY", std::process::id());
            let sub = s.recv().expect("a subscription");
            let f = &sub.frames()[0];
            say(
                "SUB",
                format!("{} {}", f[0], String::from_utf8_lossy(&f[1..])),
            );
            for i in 0u64.. {
                s.send(Message::from(format!("a {i}").into_bytes()))
                    .expect("send");
                s.send(Message::from(format!("b {i}").into_bytes()))
                    .expect("send");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        "dealer" => {
            let s = mk(SocketType::Dealer);
            s.set_routing_id(&b"dealer-1"[..]).expect("routing id");
            s.connect(EP).expect("connect");
            s.send("hi").expect("send");
            let m = s.recv().expect("reply");
            say("RESULT", text(&m, 0));
            std::thread::sleep(forever);
        }
        "holder" => {
            let s = mk(SocketType::Pair);
            s.bind(EP).expect("bind");
            say("READY", std::process::id());
            std::thread::sleep(forever);
        }
        "hello-pusher" => {
            let s = mk(SocketType::Push);
            s.connect(EP).expect("connect");
            s.send("hello").expect("send");
            say("CONNECTED", std::process::id());
            std::thread::sleep(forever);
        }
        "clean-exit" => {
            // Connects, says hello, closes its socket and context on purpose (the
            // linger delivers the hello) and exits 0 at once.
            let s = mk(SocketType::Push);
            s.connect(EP).expect("connect");
            s.send("hello").expect("send");
            drop(s);
            drop(ctx);
            say("CLOSED", std::process::id());
            std::process::exit(0);
        }
        "small-ring-puller" => {
            // Connects with a 4 KiB ring (the connecting side's size is the
            // connection's) and reports what it receives.
            let s = mk(SocketType::Pull);
            s.set_ipc_ring_size(4096);
            s.set_recv_timeout(None);
            s.connect(EP).expect("connect");
            say("CONNECTED", std::process::id());
            loop {
                let m = s.recv().expect("recv");
                let f = &m.frames()[0];
                let sum: u64 = f
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| u64::from(b) * (i as u64 % 7 + 1))
                    .sum();
                say("GOT", format!("{} bytes, sum {sum}", f.len()));
            }
        }
        "small-ring-pub" => {
            // Connects with a 4 KiB ring and publishes "ok", a message for a topic
            // of 2100 'x', and one for another topic, until killed.
            let s = mk(SocketType::Pub);
            s.set_ipc_ring_size(4096);
            s.connect(EP).expect("connect");
            say("CONNECTED", std::process::id());
            let mut big = vec![b'x'; 2100];
            big.push(b'!');
            let mut other = vec![b'x'; 2099];
            other.push(b'y');
            loop {
                let _ = s.send("ok");
                let _ = s.send(big.clone());
                let _ = s.send(other.clone());
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Connects a PUSH (SNDHWM from the environment), sends numbered messages until
        // one send waits BLOCKED (says SENT n), then the rest of TOTAL with blocking
        // sends (says DONE).
        "push" => {
            let s = socket(&ctx, SocketType::Push, &domain);
            s.set_send_hwm(env_u64("LWMQ_IPC_SNDHWM") as usize);
            let mon = s.monitor();
            s.connect(EP).expect("connect");
            mon.wait_for(EventKind::HandshakeSucceeded, GUARD)
                .expect("connected");
            let total = env_u64("LWMQ_IPC_TOTAL");
            s.set_send_timeout(Some(BLOCKED));
            let mut i = 0;
            while i < total {
                match s.send(num(i)) {
                    Ok(()) => i += 1,
                    Err(e) if matches!(e.error, Error::Timeout) => break,
                    Err(e) => panic!("push: {}", e.error),
                }
            }
            say("SENT", i);
            s.set_send_timeout(Some(GUARD));
            while i < total {
                s.send(num(i))
                    .expect("a blocked send wakes when the reader reads");
                i += 1;
            }
            say("DONE", total);
            std::thread::sleep(Duration::from_secs(3600));
        }
        // Connects a PUB; sends "w" every 10 ms until the parent says go on CTL, then
        // TOTAL numbered messages as fast as it can (says DONE).
        "pub" => {
            let ctl = socket(&ctx, SocketType::Pull, &domain);
            ctl.bind(CTL).expect("bind control");
            let s = socket(&ctx, SocketType::Pub, &domain);
            s.connect(EP).expect("connect");
            say("READY", std::process::id());
            ctl.set_recv_timeout(Some(Duration::from_millis(10)));
            loop {
                s.send("w").expect("pub never blocks");
                match ctl.recv() {
                    Ok(_) => break,
                    Err(Error::Timeout) => {}
                    Err(e) => panic!("pub: {e}"),
                }
            }
            let total = env_u64("LWMQ_IPC_TOTAL");
            for i in 0..total {
                s.send(num(i)).expect("pub never blocks");
            }
            say("DONE", total);
            std::thread::sleep(Duration::from_secs(3600));
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// Connects to a PULL socket with the raw transport as a PUSH peer, sends one good
/// message, corrupts the ring to the victim as `LWMQ_IPC_MODE` says, and reports when
/// the victim hangs up on it.
fn hostile_peer(domain: &str) -> ! {
    let mode = std::env::var("LWMQ_IPC_MODE").expect("mode");
    let o = ShmOptions {
        domain: domain.to_owned(),
        ring_size: 4096,
        ..ShmOptions::default()
    };
    let bell = Doorbell::new().expect("doorbell");
    let start = Instant::now();
    // "head" attacks the victim's ring to us, so we pose as a PULL; else as a PUSH.
    let ty = if mode == "head" {
        SocketType::Pull
    } else {
        SocketType::Push
    };
    let mut c = loop {
        if let Some(c) =
            shm::connect("service", Some(7), &o, Hello::new(ty), &bell).expect("connect")
        {
            break c;
        }
        assert!(start.elapsed() < GUARD, "nobody bound");
        std::thread::sleep(Duration::from_millis(10));
    };
    if ty == SocketType::Push {
        c.send(&Message::from("ok"), Some(GUARD)).expect("send");
    }
    let seg = c.segment_for_testing();
    let size = seg.ring_size();
    let ctrl0 = shm::segment::CONTROL_OFFSET[0];
    let ctrl1 = shm::segment::CONTROL_OFFSET[1];
    let data0 = shm::segment::data_offset(0, size);
    let hdr = |len: u64, flags: u64| (len | flags << 32 | 0x4C57u64 << 48).to_ne_bytes();
    match mode.as_str() {
        // A second message whose length runs far past the ring.
        "length" => {
            assert!(seg.debug_write(data0 + 16, &hdr(1 << 30, 0)));
            assert!(seg.debug_write(ctrl0, &32u64.to_ne_bytes()));
        }
        // Random garbage over the whole ring, and a tail claiming it is all data.
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
        // A message in pieces announcing 1 TiB in one frame (the victim's
        // MAXMSGSIZE is 1 MiB), with its first 8 bytes.
        "pieces-huge" => {
            let (piece, first, frame, more) = (4, 8, 16, 1);
            let mut rec = hdr(32, piece | first | frame | more).to_vec();
            for w in [1u64 << 40, 1, 1 << 40, 0x0102_0304] {
                rec.extend_from_slice(&w.to_le_bytes());
            }
            assert!(seg.debug_write(data0 + 16, &rec));
            assert!(seg.debug_write(ctrl0, &(16 + 40u64).to_ne_bytes()));
        }
        // A message in pieces announcing 16 bytes, then sending 8 + 16.
        "pieces-lie" => {
            let (piece, first, frame, more) = (4, 8, 16, 1);
            let mut rec = hdr(32, piece | first | frame | more).to_vec();
            for w in [16u64, 1, 16, 1] {
                rec.extend_from_slice(&w.to_le_bytes());
            }
            rec.extend_from_slice(&hdr(16, piece));
            rec.extend_from_slice(&[7u8; 16]);
            assert!(seg.debug_write(data0 + 16, &rec));
            assert!(seg.debug_write(ctrl0, &(16 + 40 + 24u64).to_ne_bytes()));
        }
        // Our "consumed" position in the victim's ring to us, far ahead of its tail.
        "head" => {
            assert!(seg.debug_write(ctrl1 + shm::ring::HEAD_OFFSET, &(1u64 << 40).to_ne_bytes()))
        }
        other => panic!("unknown mode {other}"),
    }
    say("CORRUPTED", &mode);
    while c.peer_alive() {
        std::thread::sleep(Duration::from_millis(5));
    }
    say("DROPPED", "");
    std::thread::sleep(Duration::from_secs(3600));
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------
// Leftovers

/// Nothing of ours in /dev/shm or /tmp, and no abstract socket of `domain` left.
fn exchange(s: &Socket, n: u64) {
    for i in 0..n {
        s.send(num(i)).expect("send");
        let back = s.recv().expect("echo");
        assert_eq!(num_of(&back), i);
    }
}

// ---------------------------------------------------------------------------------------
// Start orders

#[test]
fn server_first_then_client() {
    let _w = watchdog(Duration::from_secs(90));
    let domain = unique_domain("server-first");
    let mut server = PEER.spawn("echo", &domain, &[("LWMQ_IPC_TYPE", "rep")]);
    server.expect("READY");
    {
        let ctx = Context::new();
        let req = socket(&ctx, SocketType::Req, &domain);
        let mon = req.monitor();
        req.connect(EP).unwrap();
        exchange(&req, 200);
        let ev = mon
            .wait_for(EventKind::HandshakeSucceeded, GUARD)
            .expect("handshake event");
        assert_eq!(ev.detail, format!("pid {}", server.pid()));
    }
    server.kill9();
    assert_clean(&domain);
}

#[test]
fn client_first_then_server() {
    let _w = watchdog(Duration::from_secs(90));
    let domain = unique_domain("client-first");
    {
        let ctx = Context::new();
        let req = socket(&ctx, SocketType::Req, &domain);
        let mon = req.monitor();
        req.connect(EP).unwrap();
        // The request queues while nobody is bound.
        req.send(num(41)).unwrap();
        let retried = mon
            .wait_for(EventKind::ConnectRetried, GUARD)
            .expect("retries while nobody is bound");
        assert!(retried.detail.contains("nobody is bound"), "{retried}");
        let mut server = PEER.spawn("echo", &domain, &[("LWMQ_IPC_TYPE", "rep")]);
        server.expect("READY");
        assert_eq!(num_of(&req.recv().unwrap()), 41);
        exchange(&req, 100);
        drop(req);
        server.kill9();
    }
    assert_clean(&domain);
}

#[test]
fn client_queues_1000_before_the_server_exists() {
    let _w = watchdog(Duration::from_secs(90));
    let domain = unique_domain("queue-1000");
    {
        let ctx = Context::new();
        let push = socket(&ctx, SocketType::Push, &domain);
        push.connect(EP).unwrap();
        for i in 0..1000u64 {
            // Never blocks: 1000 is the default high-water mark.
            push.try_send(num(i)).expect("queued below the HWM");
        }
        assert!(
            matches!(
                push.try_send(num(1000)).map_err(|e| e.error),
                Err(Error::WouldBlock)
            ),
            "the 1001st is over the HWM"
        );
        // Nobody touches `push` from here on: the queue goes out by itself.
        let mut server = PEER.spawn("pull-1000", &domain, &[]);
        server.expect("READY");
        assert_eq!(server.expect("GOT"), "1000 in-order");
        drop(push);
        server.kill9();
    }
    assert_clean(&domain);
}

// ---------------------------------------------------------------------------------------
// Crashes

#[test]
fn kill9_of_the_binder_is_reported_with_its_pid_and_a_restart_is_reconnected() {
    let _w = watchdog(Duration::from_secs(120));
    let domain = unique_domain("kill-binder");
    {
        let ctx = Context::new();
        let pull = socket(&ctx, SocketType::Pull, &domain);
        let mon = pull.monitor();
        pull.connect(EP).unwrap();
        let mut server = PEER.spawn("streamer", &domain, &[]);
        server.expect("READY");
        for i in 0..2000u64 {
            assert_eq!(num_of(&pull.recv().unwrap()), i, "in order");
        }
        let pid = server.pid();
        let killed = Instant::now();
        server.kill9();
        let ev = mon
            .wait_for(EventKind::PeerCrashed, GUARD)
            .expect("peer-crashed");
        eprintln!(
            "peer-crashed seen {:?} after kill -9 returned: {ev}",
            killed.elapsed()
        );
        assert_eq!(ev.endpoint, EP);
        assert_eq!(ev.detail, format!("pid {pid}"));
        mon.wait_for(EventKind::ConnectRetried, GUARD)
            .expect("reconnect scheduled");
        // A new binder: reconnected automatically; what the old one wrote comes first
        // (drained), then the new stream from 0, in order.
        let mut server = PEER.spawn("streamer", &domain, &[]);
        server.expect("READY");
        let ev = mon
            .wait_for(EventKind::HandshakeSucceeded, GUARD)
            .expect("reconnected");
        assert_eq!(ev.detail, format!("pid {}", server.pid()));
        let mut old = 0;
        loop {
            let n = num_of(&pull.recv().unwrap());
            if n == 0 {
                break;
            }
            assert_eq!(n, 2000 + old, "the dead binder's stream drains in order");
            old += 1;
        }
        eprintln!("{old} messages of the dead binder drained after its death");
        for i in 1..1000u64 {
            assert_eq!(num_of(&pull.recv().unwrap()), i, "new stream in order");
        }
        drop(pull);
        server.kill9();
    }
    assert_clean(&domain);
}

#[test]
fn kill9_of_the_connector_frees_its_memory_and_descriptors() {
    let _w = watchdog(Duration::from_secs(90));
    let domain = unique_domain("kill-connector");
    // The binder counts its descriptors and maps in a process of its own (tests in
    // this process open and close descriptors in parallel).
    let mut binder = PEER.spawn("leak-binder", &domain, &[]);
    binder.expect("READY");
    let mut client = PEER.spawn("hello-client", &domain, &[]);
    client.expect("CONNECTED");
    let pid = client.pid();
    binder.expect("RECEIVED");
    client.kill9();
    let counts = binder.expect("COUNTS");
    eprintln!("fds before, during, after; lwmq maps before, during, after: {counts}");
    let v: Vec<&str> = counts.split_whitespace().collect();
    let n = |i: usize| v[i].parse::<usize>().expect("a count");
    let (fds0, fds1, fds2, maps0, maps1, maps2) = (n(0), n(1), n(2), n(3), n(4), n(5));
    assert_eq!(
        v[6..].join(" "),
        format!("pid {pid}"),
        "peer-crashed names the pid"
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

/// The events up to this peer's `disconnected`: whether `peer-crashed` with its pid
/// came before it.
fn crashed_before_disconnect(mon: &lwmq::Monitor, pid: u32) -> bool {
    let detail = format!("pid {pid}");
    let mut crashed = false;
    loop {
        let ev = mon.recv(Some(GUARD)).expect("disconnected comes");
        match ev.kind {
            EventKind::PeerCrashed if ev.detail == detail => crashed = true,
            EventKind::PeerCrashed => panic!("peer-crashed with the wrong pid: {ev}"),
            EventKind::Disconnected if ev.detail == detail => return crashed,
            _ => {}
        }
    }
}

#[test]
fn every_one_of_50_kill9s_is_reported_as_peer_crashed_with_its_pid() {
    let _w = watchdog(Duration::from_secs(600));
    let domain = unique_domain("kill-50");
    {
        let ctx = Context::new();
        let pull = socket(&ctx, SocketType::Pull, &domain);
        let mon = pull.monitor();
        pull.bind(EP).unwrap();
        let mut only_disconnected = Vec::new();
        for i in 0..50 {
            let mut peer = PEER.spawn("hello-pusher", &domain, &[]);
            peer.expect("CONNECTED");
            let pid = peer.pid();
            assert_eq!(pull.recv().unwrap(), Message::from("hello"));
            peer.kill9();
            if !crashed_before_disconnect(&mon, pid) {
                only_disconnected.push(i);
            }
        }
        eprintln!(
            "50 kill -9s: {} reported as peer-crashed with the right pid",
            50 - only_disconnected.len()
        );
        assert!(
            only_disconnected.is_empty(),
            "{} of 50 kill -9s were reported only as disconnected (kills {only_disconnected:?})",
            only_disconnected.len()
        );
    }
    assert_clean(&domain);
}

#[test]
fn a_peer_that_closes_on_purpose_and_exits_0_is_not_reported_as_crashed() {
    let _w = watchdog(Duration::from_secs(300));
    let domain = unique_domain("clean-exit");
    {
        let ctx = Context::new();
        let pull = socket(&ctx, SocketType::Pull, &domain);
        let mon = pull.monitor();
        pull.bind(EP).unwrap();
        let mut crashed = Vec::new();
        for i in 0..20 {
            let mut peer = PEER.spawn("clean-exit", &domain, &[]);
            let pid = peer.pid();
            assert_eq!(pull.recv().unwrap(), Message::from("hello"));
            peer.expect("CLOSED");
            // (Child::wait would close the peer's stdin first: that makes it exit 3.)
            let _stdin = peer.child.0.stdin.take();
            let status = peer.child.0.wait().expect("the peer exits");
            assert_eq!(status.code(), Some(0), "the peer exited cleanly");
            if crashed_before_disconnect(&mon, pid) {
                crashed.push(i);
            }
        }
        assert!(
            crashed.is_empty(),
            "clean exits reported as peer-crashed: {crashed:?}"
        );
    }
    assert_clean(&domain);
}

// ---------------------------------------------------------------------------------------
// Messages larger than the peer's ring: in pieces

#[test]
fn a_message_larger_than_the_peers_ring_goes_in_pieces() {
    let _w = watchdog(Duration::from_secs(120));
    let domain = unique_domain("too-large");
    {
        let ctx = Context::new();
        let push = socket(&ctx, SocketType::Push, &domain);
        let mon = push.monitor();
        push.bind(EP).unwrap();
        let mut peer = PEER.spawn("small-ring-puller", &domain, &[]);
        peer.expect("CONNECTED");
        mon.wait_for(EventKind::HandshakeSucceeded, GUARD)
            .expect("the peer connects");
        // The peer's ring is 4 KiB: these go in pieces of 1 KiB, in another process.
        for len in [3000usize, 1 << 20, 2000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            push.send(body).unwrap();
            assert_eq!(
                peer.expect("GOT"),
                format!("{len} bytes, sum {}", checksum(len)),
                "arrives whole"
            );
        }
        peer.kill9();
    }
    assert_clean(&domain);
}

/// What the small-ring peers report for `(0..len).map(|i| i % 251)`.
fn checksum(len: usize) -> u64 {
    (0..len)
        .map(|i| (i % 251) as u64 * (i as u64 % 7 + 1))
        .sum()
}

#[test]
fn messages_of_1_16_and_256_mib_go_to_another_process_and_back() {
    // Default options (1 MiB rings): PAIR to an echoing peer process; each message
    // goes there in pieces, is put together, and comes back in pieces. At most two
    // copies of the largest are alive here (sent, received), one in the peer.
    let _w = watchdog(Duration::from_secs(900));
    let domain = unique_domain("big-echo");
    {
        let ctx = Context::new();
        let s = socket(&ctx, SocketType::Pair, &domain);
        s.set_recv_timeout(Some(Duration::from_secs(600)));
        s.connect(EP).unwrap();
        let mut server = PEER.spawn("echo", &domain, &[]);
        server.expect("READY");
        for (k, size) in [1usize << 20, 16 << 20, 256 << 20].into_iter().enumerate() {
            for (j, m) in common::big::shapes(size, k as u64).into_iter().enumerate() {
                s.send(m.clone()).unwrap();
                let back = s.recv().unwrap();
                common::big::check(&back, &m, &format!("{size} bytes, shape {j}"));
            }
        }
        exchange(&s, 10);
        drop(s);
        server.kill9();
    }
    assert_clean(&domain);
}

#[test]
fn a_queued_subscription_larger_than_the_peers_ring_goes_in_pieces() {
    // A bound SUB subscribes before any peer exists; the PUB that connects chose a
    // 4 KiB ring. The big subscription goes in pieces when the connection comes, and
    // the PUB sends what matches it. (2,100 bytes: a topic much longer overflows the
    // test thread's stack when the subscription trie is dropped, a separate problem
    // of pattern/trie.rs.)
    let _w = watchdog(Duration::from_secs(120));
    let domain = unique_domain("sub-too-large");
    {
        let ctx = Context::new();
        let sub = socket(&ctx, SocketType::Sub, &domain);
        let mon = sub.monitor();
        sub.bind(EP).unwrap();
        sub.subscribe(&[b'x'; 2100]).unwrap();
        sub.subscribe(b"ok").unwrap();
        let mut peer = PEER.spawn("small-ring-pub", &domain, &[]);
        peer.expect("CONNECTED");
        let (mut ok, mut big) = (false, false);
        while !(ok && big) {
            let m = sub.recv().unwrap();
            let f = &m.frames()[0];
            if f[..] == b"ok"[..] {
                ok = true;
            } else {
                assert_eq!(f.len(), 2101, "only what we subscribed to");
                assert!(f[..2100].iter().all(|&b| b == b'x') && f[2100] == b'!');
                big = true;
            }
        }
        let dropped =
            std::iter::from_fn(|| mon.try_recv()).find(|e| e.kind == EventKind::MessageDropped);
        assert!(dropped.is_none(), "{dropped:?}");
        peer.kill9();
    }
    assert_clean(&domain);
}

// ---------------------------------------------------------------------------------------
// A hostile peer

fn hostile(mode: &str) {
    let _w = watchdog(Duration::from_secs(90));
    let domain = unique_domain(&format!("hostile-{mode}"));
    {
        let ctx = Context::new();
        let pull = socket(&ctx, SocketType::Pull, &domain);
        pull.set_max_msg_size(Some(1 << 20));
        let mon = pull.monitor();
        pull.bind(EP).unwrap();
        let mut good = PEER.spawn("good-pusher", &domain, &[]);
        good.expect("CONNECTED");
        let mut evil = PEER.spawn("hostile", &domain, &[("LWMQ_IPC_MODE", mode)]);
        evil.expect("CORRUPTED");
        // Keep receiving: the good peer's messages and the hostile one's "ok" arrive;
        // the corruption is found, reported and costs only that connection.
        let ev = loop {
            let m = pull.recv().expect("the good peer keeps sending");
            let t = text(&m, 0);
            assert!(t == "ok" || t.starts_with("good "), "{t:?}");
            if let Some(ev) =
                std::iter::from_fn(|| mon.try_recv()).find(|e| e.kind == EventKind::ProtocolError)
            {
                break ev;
            }
        };
        eprintln!("hostile {mode}: {ev}");
        assert!(ev.detail.contains(&format!("pid {}", evil.pid())), "{ev}");
        evil.expect("DROPPED");
        // The other connection of the same socket still works.
        for _ in 0..20 {
            let m = pull.recv().expect("the good peer is still heard");
            assert!(text(&m, 0).starts_with("good "));
        }
        drop(pull);
        good.kill9();
        evil.kill9();
    }
    assert_clean(&domain);
}

#[test]
fn hostile_peer_bad_length() {
    hostile("length");
}

#[test]
fn hostile_peer_garbage() {
    hostile("garbage");
}

#[test]
fn hostile_peer_announcing_a_huge_message_in_pieces() {
    hostile("pieces-huge");
}

#[test]
fn hostile_peer_lying_about_a_message_in_pieces() {
    hostile("pieces-lie");
}

// ---------------------------------------------------------------------------------------
// Another user

#[test]
fn another_user_is_refused_by_default_and_accepted_when_allowed() {
    let _w = watchdog(Duration::from_secs(120));
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
    {
        let ctx = Context::new();
        // 1. By default we refuse nobody (who allows anyone); both sides say why.
        let pair = socket(&ctx, SocketType::Pair, &domain);
        let mon = pair.monitor();
        pair.bind(EP).unwrap();
        let mut peer = PEER.spawn_cmd(
            copy.as_nobody(),
            "report",
            &domain,
            &[("LWMQ_IPC_ALLOW", "any")],
        );
        let ev = mon
            .wait_for(EventKind::HandshakeFailedAuth, GUARD)
            .expect("refusal reported");
        eprintln!("binder: {ev}");
        assert!(ev.detail.contains("peer uid 65534"), "{ev}");
        let theirs = peer.expect("RESULT");
        eprintln!("connector: {theirs}");
        assert!(
            theirs.contains("handshake-failed-auth")
                && theirs.contains("refused us")
                && theirs.contains("not reconnecting"),
            "{theirs}"
        );
        peer.kill9();
        drop(pair);

        // 2. Allowed by option: messages flow.
        let pair = socket(&ctx, SocketType::Pair, &domain);
        pair.set_ipc_allowed_peers(AllowedPeers::Uids(vec![65534]));
        let mon = pair.monitor();
        pair.bind(EP).unwrap();
        let mut peer = PEER.spawn_cmd(
            copy.as_nobody(),
            "report",
            &domain,
            &[("LWMQ_IPC_ALLOW", "any")],
        );
        assert_eq!(pair.recv().unwrap(), Message::from("ping"));
        pair.send("pong").unwrap();
        assert_eq!(peer.expect("RESULT"), "OK pong");
        let ev = mon
            .wait_for(EventKind::HandshakeSucceeded, GUARD)
            .expect("handshake event");
        assert_eq!(ev.detail, format!("pid {}", peer.pid()));
        drop(pair);
        peer.kill9();
    }
    drop(copy);
    assert_clean(&domain);
}

/// A user of its own (uid 64123, effective gid 64123, supplementary group 64124) is
/// let in by either of its groups, on both sides of a connection, and refused by a
/// group it is not in.
#[test]
fn a_peer_in_an_allowed_group_is_accepted_by_its_effective_or_supplementary_group() {
    let _w = watchdog(Duration::from_secs(180));
    const UID: u32 = 64123;
    const GID: u32 = 64123;
    const SUPPLEMENTARY: u32 = 64124;
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")),
        "this test runs a peer as another user and group (setpriv) and needs root"
    );
    let domain = unique_domain("groups");
    let copy = PrivateCopy::new(&domain);
    let listed = |gids: Vec<u32>| AllowedPeers::Listed {
        uids: Vec::new(),
        gids,
    };
    {
        let ctx = Context::new();
        // 1. Not in the group we list: refused, and the reason names its groups.
        let pair = socket(&ctx, SocketType::Pair, &domain);
        pair.set_ipc_allowed_peers(listed(vec![64999]));
        let mon = pair.monitor();
        pair.bind(EP).unwrap();
        let mut peer = PEER.spawn_cmd(
            copy.as_user(UID, GID, &[SUPPLEMENTARY]),
            "report",
            &domain,
            &[("LWMQ_IPC_ALLOW", "any")],
        );
        let ev = mon
            .wait_for(EventKind::HandshakeFailedAuth, GUARD)
            .expect("refusal reported");
        assert!(
            ev.detail.contains("peer uid 64123") && ev.detail.contains("64124"),
            "{ev}"
        );
        assert!(peer.expect("RESULT").contains("refused us"));
        peer.kill9();
        drop(pair);

        // 2. Let in by its supplementary group, then by its effective group.
        for gid in [SUPPLEMENTARY, GID] {
            let pair = socket(&ctx, SocketType::Pair, &domain);
            pair.set_ipc_allowed_peers(listed(vec![gid]));
            pair.bind(EP).unwrap();
            let mut peer = PEER.spawn_cmd(
                copy.as_user(UID, GID, &[SUPPLEMENTARY]),
                "report",
                &domain,
                &[("LWMQ_IPC_ALLOW", "any")],
            );
            assert_eq!(pair.recv().unwrap(), Message::from("ping"), "group {gid}");
            pair.send("pong").unwrap();
            assert_eq!(peer.expect("RESULT"), "OK pong");
            drop(pair);
            peer.kill9();
        }

        // 3. The other way round: we connect to a binder of that user, allowed by its
        // supplementary group; refused without it.
        let mut binder = PEER.spawn_cmd(
            copy.as_user(UID, GID, &[SUPPLEMENTARY]),
            "echo",
            &domain,
            &[("LWMQ_IPC_ALLOW", "any")],
        );
        binder.expect("READY");
        let refused = socket(&ctx, SocketType::Pair, &domain);
        let mon = refused.monitor();
        refused.connect(EP).unwrap();
        let ev = mon
            .wait_for(EventKind::HandshakeFailedAuth, GUARD)
            .expect("the binder's user is refused");
        assert!(ev.detail.contains("peer uid 64123"), "{ev}");
        drop(refused);
        let pair = socket(&ctx, SocketType::Pair, &domain);
        pair.set_ipc_allowed_peers(listed(vec![SUPPLEMENTARY]));
        pair.connect(EP).unwrap();
        pair.send("hello").unwrap();
        assert_eq!(pair.recv().unwrap(), Message::from("hello"));
        drop(pair);
        binder.kill9();
    }
    drop(copy);
    assert_clean(&domain);
}

// ---------------------------------------------------------------------------------------
// Errors

#[test]
fn binding_a_bound_name_fails_naming_the_endpoint() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("in-use");
    let mut holder = PEER.spawn("holder", &domain, &[]);
    holder.expect("READY");
    {
        let ctx = Context::new();
        let s = socket(&ctx, SocketType::Pair, &domain);
        let mon = s.monitor();
        let err = s.bind(EP).unwrap_err();
        assert!(
            matches!(&err, Error::AddressInUse { endpoint } if endpoint == EP),
            "{err}"
        );
        assert!(err.to_string().contains(EP), "{err}");
        let ev = mon
            .wait_for(EventKind::BindFailed, GUARD)
            .expect("bind-failed");
        assert_eq!(ev.endpoint, EP);
        // Another port is another name.
        assert_eq!(s.bind("ipc://service:8").unwrap(), "ipc://service:8");
        holder.kill9();
        // Once the holder is gone, the name is free.
        let again = socket(&ctx, SocketType::Pair, &domain);
        assert_eq!(again.bind(EP).unwrap(), EP);
    }
    assert_clean(&domain);
}

#[test]
fn a_message_larger_than_the_ring_queued_before_the_peer_exists_goes_in_pieces() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("too-large");
    {
        let ctx = Context::new();
        let s = socket(&ctx, SocketType::Pair, &domain);
        s.set_ipc_ring_size(64 * 1024);
        s.connect(EP).unwrap();
        let limit = 32 * 1024 - 8;
        // Queued before a peer exists: at the limit (one record), one byte over and
        // 3 MiB in three frames (pieces), then echoed back (pieces both ways).
        let at = Message::from(vec![9u8; limit]);
        let over = Message::from(vec![8u8; limit + 1]);
        let multi = Message::from_frames([vec![1u8; 1 << 20], vec![], vec![2u8; 2 << 20]]);
        for m in [&at, &over, &multi] {
            s.send(m.clone()).unwrap();
        }
        let mut server = PEER.spawn("echo", &domain, &[]);
        server.expect("READY");
        for m in [&at, &over, &multi] {
            assert_eq!(&s.recv().unwrap(), m);
        }
        exchange(&s, 10);
        drop(s);
        server.kill9();
    }
    assert_clean(&domain);
}

// ---------------------------------------------------------------------------------------
// Patterns

#[test]
fn pair_over_ipc() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("pair");
    let mut server = PEER.spawn("echo", &domain, &[]);
    server.expect("READY");
    {
        let ctx = Context::new();
        let s = socket(&ctx, SocketType::Pair, &domain);
        s.connect(EP).unwrap();
        // Multi-frame messages keep their frames.
        let m = Message::from_frames([b"a".to_vec(), vec![], vec![7u8; 5000]]);
        s.send(m.clone()).unwrap();
        assert_eq!(s.recv().unwrap(), m);
        exchange(&s, 100);
    }
    server.kill9();
    assert_clean(&domain);
}

#[test]
fn pub_sub_subscriptions_travel_over_the_ring_and_survive_a_restart() {
    let _w = watchdog(Duration::from_secs(90));
    let domain = unique_domain("pubsub");
    {
        let ctx = Context::new();
        let sub = socket(&ctx, SocketType::Sub, &domain);
        sub.subscribe(b"a").unwrap();
        sub.connect(EP).unwrap();
        for round in 0..2 {
            let mut publisher = PEER.spawn("xpub", &domain, &[]);
            publisher.expect("READY");
            // The XPUB saw our subscription (1 = subscribe), sent through the ring.
            assert_eq!(publisher.expect("SUB"), "1 a", "round {round}");
            for _ in 0..50 {
                let m = sub.recv().unwrap();
                assert!(text(&m, 0).starts_with("a "), "only 'a': {:?}", text(&m, 0));
            }
            // kill -9; the second round checks the restarted publisher learns the
            // subscription again from the reconnect.
            publisher.kill9();
        }
    }
    assert_clean(&domain);
}

#[test]
fn dealer_router_routing_ids_come_from_the_hello() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("router");
    {
        let ctx = Context::new();
        let router = socket(&ctx, SocketType::Router, &domain);
        router.bind(EP).unwrap();
        let mut dealer = PEER.spawn("dealer", &domain, &[]);
        let m = router.recv().unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(text(&m, 0), "dealer-1");
        assert_eq!(text(&m, 1), "hi");
        router
            .send(Message::from_frames([b"dealer-1".to_vec(), b"yo".to_vec()]))
            .unwrap();
        assert_eq!(dealer.expect("RESULT"), "yo");
        dealer.kill9();
    }
    assert_clean(&domain);
}

// ---------------------------------------------------------------------------------------
// poll

#[test]
fn poll_wakes_on_messages_from_shared_memory_peers() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("poll");
    {
        let ctx = Context::new();
        let a = socket(&ctx, SocketType::Pull, &domain);
        a.bind(EP).unwrap();
        let b = socket(&ctx, SocketType::Pull, &domain);
        b.bind("ipc://poll-b").unwrap();
        let mut pusher = PEER.spawn("good-pusher", &domain, &[]);
        pusher.expect("CONNECTED");
        // One socket: poll parks on its own doorbell, which the peer process rings.
        let mut items = [PollItem::readable(&a)];
        assert_eq!(poll(&mut items, Some(GUARD)).unwrap(), 1);
        assert!(items[0].is_readable());
        assert!(text(&a.recv().unwrap(), 0).starts_with("good "));
        // Nothing for `b`: a short poll times out with nothing ready.
        let mut items = [PollItem::readable(&b)];
        assert_eq!(
            poll(&mut items, Some(Duration::from_millis(50))).unwrap(),
            0
        );
        // Two sockets, the ready one second in the list.
        let mut items = [PollItem::readable(&b), PollItem::readable(&a)];
        assert_eq!(poll(&mut items, Some(GUARD)).unwrap(), 1);
        assert!(!items[0].is_readable() && items[1].is_readable());
        pusher.kill9();
    }
    assert_clean(&domain);
}

// ---------------------------------------------------------------------------------------
// Zero copy

#[test]
fn send_with_and_recv_with_work_in_place_at_any_size() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("zero-copy");
    {
        let ctx = Context::new();
        let s = socket(&ctx, SocketType::Pair, &domain);
        s.set_ipc_ring_size(64 * 1024);
        s.connect(EP).unwrap();
        // Before the peer exists it falls back to an ordinary queued message.
        s.send_with(5, |b| b.copy_from_slice(b"early")).unwrap();
        let mut server = PEER.spawn("echo", &domain, &[]);
        server.expect("READY");
        let got = s.recv_with(|f| f.to_message()).unwrap();
        assert_eq!(got, Message::from("early"));
        for i in 0..2000usize {
            let len = 1 + i % 300;
            let mut ran = 0;
            s.send_with(len, |b| {
                ran += 1;
                b.fill(i as u8);
            })
            .unwrap();
            assert_eq!(ran, 1, "fill runs once");
            let ok = s
                .recv_with(|f| {
                    f.len() == 1
                        && f.frame(0)
                            .is_some_and(|d| d.len() == len && d.iter().all(|&x| x == i as u8))
                })
                .unwrap();
            assert!(ok, "message {i} came back intact");
        }
        // Too large for the ring in place: an ordinary message, in pieces.
        let mut ran = false;
        s.send_with(40 * 1024, |b| {
            ran = true;
            b.fill(3);
        })
        .unwrap();
        assert!(ran);
        let back = s.recv().unwrap();
        assert_eq!(back, Message::from(vec![3u8; 40 * 1024]));
        drop(s);
        server.kill9();
    }
    assert_clean(&domain);
}

// ---------------------------------------------------------------------------------------
// unbind, disconnect, close

#[test]
fn unbind_and_close_free_the_name_at_once_and_disconnect_stops_the_connection() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("unbind");
    {
        let ctx = Context::new();
        let a = socket(&ctx, SocketType::Pull, &domain);
        let b = socket(&ctx, SocketType::Pull, &domain);
        a.bind(EP).unwrap();
        assert!(matches!(b.bind(EP), Err(Error::AddressInUse { .. })));
        a.unbind(EP).unwrap();
        assert_eq!(b.bind(EP).unwrap(), EP, "free right after unbind");
        assert!(a.unbind(EP).is_err(), "not bound any more");
        drop(b);
        let c = socket(&ctx, SocketType::Pull, &domain);
        assert_eq!(c.bind(EP).unwrap(), EP, "free right after close");

        // A connection, then disconnect: the binder sees it go, nothing else arrives.
        let mon = c.monitor();
        let push = socket(&ctx, SocketType::Push, &domain);
        push.connect(EP).unwrap();
        push.send("one").unwrap();
        assert_eq!(c.recv().unwrap(), Message::from("one"));
        push.disconnect(EP).unwrap();
        let ev = mon
            .wait_for(EventKind::Disconnected, GUARD)
            .expect("the binder sees the connection end");
        assert_eq!(ev.detail, format!("pid {}", std::process::id()));
        assert!(push.disconnect(EP).is_err(), "not connected any more");
        c.set_recv_timeout(Some(Duration::from_millis(200)));
        assert!(matches!(c.recv(), Err(Error::Timeout)));
    }
    assert_clean(&domain);
}

/// The hostile peer corrupts the ring the victim *writes*: the victim's send finds it,
/// reports it and drops that connection; its other peer keeps receiving.
#[test]
fn hostile_peer_bad_head_costs_only_its_connection() {
    let _w = watchdog(Duration::from_secs(90));
    let domain = unique_domain("hostile-head");
    {
        let ctx = Context::new();
        let push = socket(&ctx, SocketType::Push, &domain);
        let mon = push.monitor();
        push.bind(EP).unwrap();
        let mut good = PEER.spawn("good-puller", &domain, &[]);
        good.expect("CONNECTED");
        let mut evil = PEER.spawn("hostile", &domain, &[("LWMQ_IPC_MODE", "head")]);
        evil.expect("CORRUPTED");
        for _ in 0..2 {
            mon.wait_for(EventKind::HandshakeSucceeded, GUARD)
                .expect("both peers connected");
        }
        let start = Instant::now();
        let ev = loop {
            push.send(vec![7u8; 64]).expect("send");
            if let Some(ev) =
                std::iter::from_fn(|| mon.try_recv()).find(|e| e.kind == EventKind::ProtocolError)
            {
                break ev;
            }
            assert!(start.elapsed() < GUARD, "the corruption was never noticed");
        };
        eprintln!("hostile head: {ev}");
        assert!(ev.detail.contains(&format!("pid {}", evil.pid())), "{ev}");
        evil.expect("DROPPED");
        // Every later message goes to the good peer.
        for _ in 0..300 {
            push.send(vec![8u8; 64]).expect("send");
        }
        loop {
            let n: u64 = good.expect("GOT").parse().expect("a count");
            if n >= 300 {
                break;
            }
        }
        drop(push);
        good.kill9();
        evil.kill9();
    }
    assert_clean(&domain);
}

#[test]
fn send_with_runs_fill_only_for_messages_that_go() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("zero-copy-full");
    {
        let ctx = Context::new();
        let pull = socket(&ctx, SocketType::Pull, &domain);
        pull.bind(EP).unwrap();
        let push = socket(&ctx, SocketType::Push, &domain);
        let mon = push.monitor();
        push.set_ipc_ring_size(4096);
        push.set_send_timeout(Some(Duration::ZERO));
        push.connect(EP).unwrap();
        // Once the sender's side is connected every send goes in place (before, it
        // would build a message: see Socket::send_with).
        mon.wait_for(EventKind::HandshakeSucceeded, GUARD)
            .expect("connected");
        // Nobody reads: the 4 KiB ring fills; every refused send leaves `fill` unrun.
        let (mut fills, mut sent) = (0, 0);
        loop {
            match push.send_with(100, |b| {
                fills += 1;
                b.fill(sent as u8);
            }) {
                Ok(()) => sent += 1,
                Err(Error::WouldBlock) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(sent > 10, "{sent} messages fit");
        assert_eq!(
            fills, sent,
            "fill ran once per message sent, never for a refusal"
        );
        for i in 0..sent {
            let ok = pull
                .recv_with(|f| {
                    f.frame(0)
                        .is_some_and(|d| d.len() == 100 && d[0] == i as u8)
                })
                .unwrap();
            assert!(ok, "message {i}");
        }
        // A socket type that routes (REQ) takes the ordinary path, same result.
        let rep = socket(&ctx, SocketType::Rep, &domain);
        rep.bind("ipc://zc-rep").unwrap();
        let req = socket(&ctx, SocketType::Req, &domain);
        req.connect("ipc://zc-rep").unwrap();
        req.send_with(3, |b| b.copy_from_slice(b"abc")).unwrap();
        let m = rep.recv().unwrap();
        assert_eq!(m, Message::from("abc"));
        rep.send_with(2, |b| b.copy_from_slice(b"ok")).unwrap();
        assert_eq!(
            req.recv_with(|f| f.to_message()).unwrap(),
            Message::from("ok")
        );
    }
    assert_clean(&domain);
}

#[test]
fn linger_delivers_what_was_queued_before_the_peer_existed() {
    let _w = watchdog(Duration::from_secs(60));
    let domain = unique_domain("linger");
    {
        let ctx = Context::new();
        {
            let push = socket(&ctx, SocketType::Push, &domain);
            push.set_linger(Some(Duration::from_secs(30)));
            push.connect(EP).unwrap();
            for i in 0..10u64 {
                push.send(num(i)).unwrap();
            }
            // Closed with ten messages queued and nobody bound.
        }
        // Bind only after the default linger would have given up: the 30 s set above
        // is what keeps the messages.
        std::thread::sleep(lwmq::DEFAULT_LINGER + Duration::from_secs(1));
        let pull = socket(&ctx, SocketType::Pull, &domain);
        pull.bind(EP).unwrap();
        for i in 0..10u64 {
            assert_eq!(num_of(&pull.recv().unwrap()), i);
        }
        // Linger zero: queued messages are dropped at close.
        {
            let push = socket(&ctx, SocketType::Push, &domain);
            push.set_linger(Some(Duration::ZERO));
            push.connect("ipc://nobody-here").unwrap();
            push.send(num(99)).unwrap();
        }
        let late = socket(&ctx, SocketType::Pull, &domain);
        late.bind("ipc://nobody-here").unwrap();
        late.set_recv_timeout(Some(Duration::from_millis(300)));
        assert!(matches!(late.recv(), Err(Error::Timeout)));
    }
    assert_clean(&domain);
}

// ---------------------------------------------------------------------------------------
// The receive high-water mark

/// A PULL with RCVHWM `hwm` bound at EP, and a child PUSH with SNDHWM `sndhwm` sending
/// `total`: returns what the child sent before a send blocked, after checking that
/// every message arrives in order once the PULL reads (which must wake the child).
fn push_until_blocked(test: &str, hwm: usize, sndhwm: u64, total: u64) -> u64 {
    let domain = unique_domain(test);
    let ctx = Context::new();
    let pull = socket(&ctx, SocketType::Pull, &domain);
    pull.set_recv_hwm(hwm);
    pull.bind(EP).expect("bind");
    let mut child = PEER.spawn(
        "push",
        &domain,
        &[
            ("LWMQ_IPC_SNDHWM", &sndhwm.to_string()),
            ("LWMQ_IPC_TOTAL", &total.to_string()),
        ],
    );
    let sent: u64 = child.expect("SENT").parse().expect("a count");
    assert!(sent < total, "the child never blocked ({sent} of {total})");
    // The child is blocked in a send now; reading must wake it, and everything comes
    // in order.
    for i in 0..total {
        let m = pull.recv().expect("every message arrives");
        assert_eq!(num_of(&m), i);
    }
    assert_eq!(child.expect("DONE"), total.to_string());
    child.kill9();
    sent
}

#[test]
fn push_to_a_pull_that_does_not_read_blocks_at_its_receive_hwm_and_wakes_when_it_reads() {
    let _w = watchdog(Duration::from_secs(120));
    let (hwm, sndhwm) = (50, 10);
    let sent = push_until_blocked("push-hwm", hwm, sndhwm, 200);
    // Once connected the PUSH writes straight into the ring, which takes RCVHWM
    // messages; what went before the connection was installed queued in the pipe (at
    // most SNDHWM) and is flushed into the ring under the same count. So the count
    // is RCVHWM, plus at most SNDHWM still queued on the sender's side (libzmq's
    // SNDHWM + RCVHWM); the reader publishes its count on reaching the tail it knows
    // of, and this one never read, so no batching slack.
    assert!(
        (hwm as u64..=hwm as u64 + sndhwm).contains(&sent),
        "{sent} sent before blocking, RCVHWM {hwm}, SNDHWM {sndhwm}"
    );
}

#[test]
fn receive_hwm_0_leaves_only_the_ring_as_the_bound() {
    let _w = watchdog(Duration::from_secs(120));
    let sndhwm = 10;
    // 8-byte messages take 16 bytes of the default 1 MiB ring.
    let ring_holds = (1u64 << 20) / 16;
    let sent = push_until_blocked("push-hwm0", 0, sndhwm, ring_holds + 5_000);
    assert!(
        (ring_holds..=ring_holds + sndhwm).contains(&sent),
        "{sent} sent before blocking; the ring holds {ring_holds}"
    );
}

#[test]
fn pub_drops_beyond_a_subs_receive_hwm_and_the_sub_gets_the_first_ones_in_order() {
    let _w = watchdog(Duration::from_secs(120));
    let domain = unique_domain("pub-hwm");
    let hwm = 40u64;
    let total = 500u64;
    let ctx = Context::new();
    let sub = socket(&ctx, SocketType::Sub, &domain);
    sub.set_recv_hwm(hwm as usize);
    sub.subscribe(b"").expect("subscribe");
    sub.bind(EP).expect("bind");
    let mut child = PEER.spawn("pub", &domain, &[("LWMQ_IPC_TOTAL", &total.to_string())]);
    child.expect("READY");
    // The subscription has reached the PUB once a "w" arrives. Drain them (the
    // reader shows the writer everything it consumed on finding the ring empty),
    // then let the PUB go while we read nothing.
    assert_eq!(sub.recv().expect("a warm-up message"), Message::from("w"));
    while sub.try_recv().is_ok() {}
    let go = socket(&ctx, SocketType::Push, &domain);
    go.connect(CTL).expect("connect control");
    go.send("go").expect("go");
    assert_eq!(child.expect("DONE"), total.to_string());
    // Warm-ups sent after the drain, then numbered messages: the first ones only, in
    // order, no gap; together exactly RCVHWM, since the PUB dropped every message that
    // found the receiver holding RCVHWM.
    sub.set_recv_timeout(Some(Duration::from_millis(200)));
    let (mut warm, mut numbered) = (0u64, 0u64);
    loop {
        match sub.recv() {
            Ok(m) if m == Message::from("w") => {
                assert_eq!(numbered, 0, "a warm-up after numbered messages");
                warm += 1;
            }
            Ok(m) => {
                assert_eq!(num_of(&m), numbered, "in order, without a gap");
                numbered += 1;
            }
            Err(Error::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(numbered > 0, "nothing of the numbered messages arrived");
    assert_eq!(
        warm + numbered,
        hwm,
        "{warm} warm-ups and {numbered} numbered messages held by a SUB with RCVHWM {hwm}"
    );
    child.kill9();
}
