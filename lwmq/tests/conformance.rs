//! Conformance: every behaviour below is written once and run on every transport.
//!
//! To add a transport, add one line to the `conformance!` invocation at the bottom:
//! a module name, a function giving a fresh bind endpoint, and whether the transport
//! reaches other processes. `fd://` (adopted descriptors, over TCP and Unix) also says
//! how to connect (a descriptor connected to what the peer bound), what a peer process
//! binds, and that it never reconnects: after a peer's restart, the tests check that
//! nothing is retried and connect a new descriptor.
//!
//! Tests that need a peer in another process re-run this test binary with
//! `LWMQ_CONFORMANCE_PEER=<endpoint>` and the test's exact name; the same test body
//! then acts as the peer.
mod common;

use std::os::fd::IntoRawFd;
use std::os::linux::net::SocketAddrExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lwmq::{Context, Error, EventKind, Message, Socket, SocketType};

/// How a transport is named in endpoints.
#[derive(Debug)]
pub struct Transport {
    /// The full test name (`tcp::linger_flushes`), to re-run this test as a peer.
    pub test: &'static str,
    /// A fresh endpoint to bind (tcp: port 0).
    pub bind: fn(&str) -> String,
    /// A fresh endpoint that a peer process can bind at a fixed address.
    pub fixed: fn(&str) -> String,
    /// Whether the transport reaches other processes.
    pub cross_process: bool,
    /// What a socket connects to, given what a peer bound (`fd://`: a descriptor
    /// connected to it; the others: the endpoint itself).
    pub connect: fn(&str) -> String,
    /// What a peer process binds to serve a `fixed` endpoint (`fd://`: a listener it
    /// made there; the others: the endpoint itself).
    pub peer_bind: fn(&str) -> String,
    /// Whether a lost connection is remade (not for an adopted descriptor).
    pub reconnects: bool,
}

/// After a peer's restart: a transport that reconnects goes on with `uri`; one that
/// never does (`fd://`) tries nothing by itself, and a new connect reaches the new
/// peer. Returns the endpoint now connected.
fn reconnect_or_not(
    t: &Transport,
    mon: &lwmq::Monitor,
    ep: &str,
    uri: String,
    connect: impl FnOnce(&str),
) -> String {
    if t.reconnects {
        return uri;
    }
    while let Some(e) = mon.recv(Some(Duration::from_millis(300))) {
        assert!(
            !matches!(
                e.kind,
                EventKind::ConnectRetried | EventKind::ConnectDelayed
            ),
            "an adopted descriptor is never reconnected: {e}"
        );
    }
    let uri = (t.connect)(ep);
    connect(&uri);
    uri
}

fn same(ep: &str) -> String {
    ep.to_owned()
}

/// `fd://` over TCP: a listener made here, adopted.
fn fd_tcp_bind(_: &str) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    format!("fd://{}", l.into_raw_fd())
}

/// `fd://` over Unix (abstract): a listener made here, adopted.
fn fd_unix_bind(tag: &str) -> String {
    fd_peer_bind(&format!("unix://@{}", unique(tag)))
}

/// A listener at `ep` (`tcp://127.0.0.1:port` or `unix://@name`), adopted; retried
/// while a previous peer's address is not free yet.
fn fd_peer_bind(ep: &str) -> String {
    for _ in 0..500 {
        let made = if let Some(a) = ep.strip_prefix("tcp://") {
            std::net::TcpListener::bind(a).map(|l| l.into_raw_fd())
        } else if let Some(n) = ep.strip_prefix("unix://@") {
            std::os::unix::net::SocketAddr::from_abstract_name(n)
                .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a))
                .map(|l| l.into_raw_fd())
        } else {
            panic!("no listener for {ep}");
        };
        if let Ok(fd) = made {
            return format!("fd://{fd}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("cannot listen at {ep}");
}

/// A descriptor connected to `ep`, adopted. Where nobody listens, one end of a
/// socketpair whose other end is kept open and never answers.
fn fd_connect(ep: &str) -> String {
    let made = if let Some(a) = ep.strip_prefix("tcp://") {
        std::net::TcpStream::connect(a).map(|s| s.into_raw_fd())
    } else if let Some(n) = ep.strip_prefix("unix://@") {
        std::os::unix::net::SocketAddr::from_abstract_name(n)
            .and_then(|a| std::os::unix::net::UnixStream::connect_addr(&a))
            .map(|s| s.into_raw_fd())
    } else {
        panic!("cannot connect to {ep}");
    };
    let fd = made.unwrap_or_else(|_| {
        let (ours, silent) = std::os::unix::net::UnixStream::pair().expect("a socketpair");
        std::mem::forget(silent);
        ours.into_raw_fd()
    });
    format!("fd://{fd}")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    format!(
        "lwmq-conf-{}-{tag}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Transport {
    fn is_inproc(&self) -> bool {
        !self.cross_process
    }
}

/// Whether connections to `ep` are made in the background (so tests wait for them).
fn is_stream(ep: &str) -> bool {
    ep.starts_with("tcp://")
        || ep.starts_with("unix://")
        || ep.starts_with("ipc://")
        || ep.starts_with("fd://")
}

/// Waits until the socket behind `monitor` has `n` more peers (a no-op for inproc,
/// where connecting is immediate).
fn wait_handshakes(ep: &str, monitor: &lwmq::Monitor, n: usize) {
    if !is_stream(ep) {
        return;
    }
    for i in 0..n {
        monitor
            .wait_for(EventKind::HandshakeSucceeded, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("handshake {} of {n} never came", i + 1));
    }
}

fn ctx_pair(t: SocketType, u: SocketType) -> (Context, Socket, Socket) {
    let ctx = Context::new();
    let a = ctx.socket(t).unwrap();
    let b = ctx.socket(u).unwrap();
    (ctx, a, b)
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.frames()[0]).into_owned()
}

// ------------------------------------------------------------------------------------
// Bodies.

/// PUB drops what a slow subscriber cannot take, and never blocks.
fn hwm_drops_on_pub(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(120));
    let (_ctx, publ, sub) = ctx_pair(SocketType::Pub, SocketType::Sub);
    publ.set_send_hwm(10);
    sub.set_recv_hwm(10);
    let mon = publ.monitor();
    let ep = publ.bind(&(t.bind)("hwm-drop")).unwrap();
    sub.subscribe(b"").unwrap();
    sub.connect(&(t.connect)(&ep)).unwrap();
    wait_handshakes(&ep, &mon, 1);
    // Wait for the subscription to reach the publisher.
    sub.set_recv_timeout(Some(Duration::from_millis(20)));
    loop {
        publ.try_send("probe").unwrap();
        if sub.recv().is_ok() {
            break;
        }
    }
    while sub.try_recv().is_ok() {}
    let sent = 100_000;
    let payload = lwmq::Bytes::from(vec![b'x'; 1000]);
    for i in 0..sent {
        // Zero timeout: a PUB must never block, whatever the subscriber does.
        publ.try_send(Message::from_frames([
            lwmq::Bytes::from(format!("{i}")),
            payload.clone(),
        ]))
        .expect("PUB never blocks");
    }
    publ.send("end").unwrap();
    sub.set_recv_timeout(Some(Duration::from_millis(500)));
    let mut got = 0;
    let mut last = -1i64;
    while let Ok(m) = sub.recv() {
        if text(&m) == "end" {
            break;
        }
        let i: i64 = text(&m).parse().unwrap();
        assert!(i > last, "messages stay in order");
        last = i;
        got += 1;
    }
    assert!(
        got < sent,
        "a subscriber that does not read loses messages ({got} of {sent})"
    );
}

/// PUSH blocks when its peer is full: try_send says WouldBlock and hands the message
/// back, a send timeout says Timeout; nothing is lost.
fn hwm_blocks_on_push_and_send_timeout(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(120));
    let (_ctx, push, pull) = ctx_pair(SocketType::Push, SocketType::Pull);
    push.set_send_hwm(5);
    pull.set_recv_hwm(5);
    let mon = pull.monitor();
    let ep = pull.bind(&(t.bind)("hwm-block")).unwrap();
    push.connect(&(t.connect)(&ep)).unwrap();
    wait_handshakes(&ep, &mon, 1);
    let big = lwmq::Bytes::from(vec![7u8; 64 * 1024]);
    let mut sent = 0u32;
    loop {
        let m = Message::from_frames([lwmq::Bytes::from(sent.to_be_bytes().to_vec()), big.clone()]);
        match push.try_send(m) {
            Ok(()) => sent += 1,
            Err(e) => {
                assert!(matches!(e.error, Error::WouldBlock), "{}", e.error);
                assert_eq!(e.message.frames()[0], sent.to_be_bytes().as_slice());
                assert_eq!(e.message.frames()[1].len(), big.len(), "handed back whole");
                break;
            }
        }
        assert!(sent < 100_000, "PUSH never blocked");
    }
    // Once blocked, a send with a timeout times out (and hands the message back).
    push.set_send_timeout(Some(Duration::from_millis(50)));
    // The I/O thread may free a little room at first; it fills again quickly.
    let mut timed_out = false;
    for _ in 0..1000 {
        let m = Message::from_frames([lwmq::Bytes::from(sent.to_be_bytes().to_vec()), big.clone()]);
        match push.send(m) {
            Ok(()) => sent += 1,
            Err(e) => {
                assert!(matches!(e.error, Error::Timeout), "{}", e.error);
                timed_out = true;
                break;
            }
        }
    }
    assert!(timed_out, "a full PUSH times out");
    // Receiving drains everything, in order, nothing lost.
    for i in 0..sent {
        let m = pull.recv().unwrap();
        assert_eq!(m.frames()[0], i.to_be_bytes().as_slice());
    }
    pull.set_recv_timeout(Some(Duration::from_millis(100)));
    assert!(matches!(pull.recv(), Err(Error::Timeout)));
}

/// Receive timeouts: zero is WouldBlock, a duration is Timeout; `None` blocks until a
/// message comes.
fn recv_timeouts(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let (_ctx, push, pull) = ctx_pair(SocketType::Push, SocketType::Pull);
    let ep = pull.bind(&(t.bind)("recv-timeout")).unwrap();
    push.connect(&(t.connect)(&ep)).unwrap();
    assert!(matches!(pull.try_recv(), Err(Error::WouldBlock)));
    pull.set_recv_timeout(Some(Duration::from_millis(30)));
    assert!(matches!(pull.recv(), Err(Error::Timeout)));
    pull.set_recv_timeout(None);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            push.send("late").unwrap();
        });
        assert_eq!(pull.recv().unwrap(), Message::from("late"));
    });
}

/// Messages queued before close are delivered within the linger time.
fn linger_flushes_on_close(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    let ep = pull.bind(&(t.bind)("linger")).unwrap();
    {
        let push = ctx.socket(SocketType::Push).unwrap();
        push.set_linger(Some(Duration::from_secs(30)));
        push.connect(&(t.connect)(&ep)).unwrap();
        for i in 0..500u32 {
            push.send(Message::from_frames([
                i.to_be_bytes().to_vec(),
                vec![1; 1000],
            ]))
            .unwrap();
        }
        // Dropped here, with messages most likely still queued.
    }
    for i in 0..500u32 {
        let m = pull.recv().unwrap();
        assert_eq!(m.frames()[0], i.to_be_bytes().as_slice());
    }
}

/// A sender that closes right after a burst far larger than the receiver's HWM loses
/// nothing: what is in flight waits for the receiver to make room.
fn close_after_burst_loses_nothing(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(120));
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_recv_hwm(10);
    let ep = pull.bind(&(t.bind)("burst")).unwrap();
    let n = 5000u32;
    std::thread::scope(|s| {
        s.spawn(|| {
            let push = ctx.socket(SocketType::Push).unwrap();
            push.set_send_hwm(10);
            push.set_linger(Some(Duration::from_secs(60)));
            push.connect(&(t.connect)(&ep)).unwrap();
            for i in 0..n {
                push.send(Message::from_frames([
                    i.to_be_bytes().to_vec(),
                    vec![5; 100],
                ]))
                .unwrap();
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        for i in 0..n {
            let m = pull.recv().unwrap();
            assert_eq!(m.frames()[0], i.to_be_bytes().as_slice());
        }
    });
}

/// A context for a peer that goes away: its own (as another process would be), or
/// for inproc the same one (inproc peers share a context).
fn peer_context(t: &Transport, ctx: &Context) -> Context {
    if t.is_inproc() {
        ctx.clone()
    } else {
        Context::new()
    }
}

/// Waits until the socket behind `monitor` noticed its peer went (inproc: at once).
fn wait_gone(ep: &str, monitor: &lwmq::Monitor) {
    if is_stream(ep) {
        monitor
            .wait_for(EventKind::Disconnected, Duration::from_secs(30))
            .expect("the peer's going is noticed");
    }
}

/// A REP answers and goes away before the answer is read; the DEALER's next write
/// comes first and finds the pipe closed; the socket is still readable and the answer
/// is still received (a pipe whose peer is gone is read dry before it is dropped).
fn last_reply_of_a_gone_peer_is_received(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let dealer = ctx.socket(SocketType::Dealer).unwrap();
    dealer.set_recv_timeout(Some(Duration::from_secs(30)));
    let mon = dealer.monitor();
    let ep = dealer.bind(&(t.bind)("last-reply")).unwrap();
    {
        let peer_ctx = peer_context(t, &ctx);
        let rep = peer_ctx.socket(SocketType::Rep).unwrap();
        rep.set_linger(Some(Duration::from_secs(30)));
        rep.set_recv_timeout(Some(Duration::from_secs(30)));
        rep.connect(&(t.connect)(&ep)).unwrap();
        wait_handshakes(&ep, &mon, 1);
        dealer
            .send(Message::from_frames([&b""[..], b"question"]))
            .unwrap();
        assert_eq!(rep.recv().unwrap(), Message::from("question"));
        rep.send("the last answer").unwrap();
        // The REP goes away (its context too, unless inproc).
    }
    wait_gone(&ep, &mon);
    dealer.set_send_timeout(Some(Duration::ZERO));
    let back = dealer
        .send(Message::from_frames([&b""[..], b"next question"]))
        .unwrap_err();
    assert!(
        matches!(back.error, Error::WouldBlock),
        "no peer takes it: {}",
        back.error
    );
    // What the gone peer sent makes the socket readable.
    let mut items = [lwmq::PollItem::readable(&dealer)];
    assert_eq!(
        lwmq::poll(&mut items, Some(Duration::from_secs(30))).expect("poll"),
        1
    );
    assert!(items[0].is_readable());
    let m = dealer.recv().expect("the answer sent before the peer went");
    assert_eq!(m, Message::from_frames([&b""[..], b"the last answer"]));
}

/// A DEALER sends its last messages and goes away; the ROUTER's write to it comes
/// first and finds it gone (ROUTER_MANDATORY: unreachable); the messages are still
/// received, with the peer's routing id, in order.
fn router_receives_what_a_gone_peer_sent(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let router = ctx.socket(SocketType::Router).unwrap();
    router.set_router_mandatory(true);
    router.set_recv_timeout(Some(Duration::from_secs(30)));
    let mon = router.monitor();
    let ep = router.bind(&(t.bind)("router-gone")).unwrap();
    {
        let peer_ctx = peer_context(t, &ctx);
        let dealer = peer_ctx.socket(SocketType::Dealer).unwrap();
        dealer.set_routing_id(&b"leaving"[..]).unwrap();
        dealer.set_linger(Some(Duration::from_secs(30)));
        dealer.connect(&(t.connect)(&ep)).unwrap();
        wait_handshakes(&ep, &mon, 1);
        dealer.send("hello").unwrap();
        assert_eq!(
            router.recv().unwrap(),
            Message::from_frames([&b"leaving"[..], b"hello"])
        );
        for i in 0..3u8 {
            dealer
                .send(Message::from_frames([b"last".to_vec(), vec![i]]))
                .unwrap();
        }
    }
    wait_gone(&ep, &mon);
    let back = router
        .send(Message::from_frames([&b"leaving"[..], b"too late"]))
        .unwrap_err();
    assert!(
        matches!(back.error, Error::HostUnreachable),
        "the peer is gone: {}",
        back.error
    );
    for i in 0..3u8 {
        let m = router.recv().expect("what the peer sent before it went");
        assert_eq!(
            m,
            Message::from_frames([b"leaving".to_vec(), b"last".to_vec(), vec![i]])
        );
    }
}

/// Linger zero: a socket that can never deliver does not hold up its context.
fn linger_zero_discards(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let push = ctx.socket(SocketType::Push).unwrap();
    push.set_linger(Some(Duration::ZERO));
    // Nobody is bound here.
    push.connect(&(t.connect)(&(t.fixed)("linger-zero")))
        .unwrap();
    for _ in 0..10 {
        push.send("lost").unwrap();
    }
    drop(push);
    ctx.terminate(); // returns (the watchdog would catch a hang)
}

/// A peer process dies and a new one starts at the same address: the connecting
/// socket reconnects and carries on.
fn reconnect_after_peer_restart(t: &Transport) {
    if let Ok(ep) = std::env::var("LWMQ_CONFORMANCE_PEER") {
        echo_peer(&Context::new(), &(t.peer_bind)(&ep), None);
        return;
    }
    let _w = common::watchdog(Duration::from_secs(120));
    let ep = (t.fixed)("restart");
    let ctx = Context::new();
    let req = ctx.socket(SocketType::Req).unwrap();
    req.set_recv_timeout(Some(Duration::from_secs(30)));
    let mon = req.monitor();
    let mut peer = start_peer(t, &ctx, &ep, echo_peer);
    let uri = (t.connect)(&ep);
    req.connect(&uri).unwrap();
    req.send("one").unwrap();
    assert_eq!(req.recv().unwrap(), Message::from("one"));
    peer.stop();
    if is_stream(&ep) {
        mon.wait_for(EventKind::Disconnected, Duration::from_secs(30))
            .expect("the loss of the peer is noticed");
    }
    let _peer2 = start_peer(t, &ctx, &ep, echo_peer);
    let uri = reconnect_or_not(t, &mon, &ep, uri, |u| req.connect(u).unwrap());
    req.send("two").unwrap();
    assert_eq!(req.recv().unwrap(), Message::from("two"));
    if is_stream(&ep) {
        let e = mon
            .wait_for(EventKind::HandshakeSucceeded, Duration::from_secs(30))
            .expect("a second handshake");
        assert_eq!(e.endpoint, uri);
    }
    drop(_peer2);
    remove_stale(&ep);
}

/// Binds `ep`, retrying while the previous peer's address is not free yet, and says
/// it is ready.
fn bind_peer(s: &Socket, ep: &str) {
    let mut tries = 0;
    while let Err(e) = s.bind(ep) {
        tries += 1;
        assert!(tries < 500, "cannot bind {ep}: {e}");
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("\nLWMQ-PEER-READY");
}

/// A REP that echoes until `stop` is set (or forever).
fn echo_peer(ctx: &Context, ep: &str, stop: Option<&std::sync::atomic::AtomicBool>) {
    let rep = ctx.socket(SocketType::Rep).unwrap();
    rep.set_recv_timeout(Some(Duration::from_millis(20)));
    bind_peer(&rep, ep);
    loop {
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            return;
        }
        match rep.recv() {
            Ok(m) => rep.send(m).unwrap(),
            Err(Error::Timeout) => {}
            Err(e) => panic!("echo peer: {e}"),
        }
    }
}

enum Peer {
    Process(common::KillOnDrop),
    Thread(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        Option<std::thread::JoinHandle<()>>,
    ),
}

impl Peer {
    fn stop(&mut self) {
        match self {
            Peer::Process(c) => {
                c.0.kill().unwrap();
                c.0.wait().unwrap();
            }
            Peer::Thread(flag, h) => {
                flag.store(true, Ordering::SeqCst);
                if let Some(h) = h.take() {
                    h.join().unwrap();
                }
            }
        }
    }
}

/// Removes the socket file a killed peer process left behind.
fn remove_stale(ep: &str) {
    if let Some(path) = ep.strip_prefix("unix://").filter(|p| p.starts_with('/')) {
        let _ = std::fs::remove_file(path);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Peer::Thread(..) = self {
            self.stop();
        }
    }
}

/// What a peer does: bind `ep` in `ctx`, print the ready marker, serve until `stop`.
type PeerRole = fn(&Context, &str, Option<&std::sync::atomic::AtomicBool>);

fn start_peer(t: &Transport, ctx: &Context, ep: &str, role: PeerRole) -> Peer {
    if t.is_inproc() {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (f, c, e) = (flag.clone(), ctx.clone(), ep.to_owned());
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let _ = tx.send(());
            role(&c, &e, Some(&f));
        });
        rx.recv().unwrap();
        // Bound as soon as echo_peer's bind returned; give it that moment.
        std::thread::sleep(Duration::from_millis(20));
        return Peer::Thread(flag, Some(h));
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", t.test, "--nocapture", "--test-threads=1"])
        .env("LWMQ_CONFORMANCE_PEER", ep)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the peer process");
    // Wait for "ready" so the peer is bound before we go on.
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("LWMQ-PEER-READY") => break,
            Some(Ok(_)) => {}
            _ => panic!("the peer process exited before binding"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Peer::Process(common::KillOnDrop(child))
}

/// A PUB that publishes a matching and a non-matching message every few ms.
fn publisher_peer(ctx: &Context, ep: &str, stop: Option<&std::sync::atomic::AtomicBool>) {
    let publ = ctx.socket(SocketType::Pub).unwrap();
    bind_peer(&publ, ep);
    let pid = std::process::id();
    while !stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
        publ.send(format!("weather {pid}").into_bytes()).unwrap();
        publ.send("sports").unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A SUB keeps its subscriptions across a publisher's restart: the new publisher
/// process is told them again.
fn subscriptions_survive_peer_restart(t: &Transport) {
    if let Ok(ep) = std::env::var("LWMQ_CONFORMANCE_PEER") {
        publisher_peer(&Context::new(), &(t.peer_bind)(&ep), None);
        return;
    }
    let _w = common::watchdog(Duration::from_secs(120));
    let ep = (t.fixed)("resubscribe");
    let ctx = Context::new();
    let sub = ctx.socket(SocketType::Sub).unwrap();
    sub.set_recv_timeout(Some(Duration::from_secs(30)));
    let mon = sub.monitor();
    sub.subscribe(b"weather").unwrap();
    let mut peer = start_peer(t, &ctx, &ep, publisher_peer);
    let uri = (t.connect)(&ep);
    sub.connect(&uri).unwrap();
    let first = text(&sub.recv().unwrap());
    assert!(first.starts_with("weather"), "{first}");
    peer.stop();
    if is_stream(&ep) {
        mon.wait_for(EventKind::Disconnected, Duration::from_secs(30))
            .expect("the loss of the publisher is noticed");
    }
    while sub.try_recv().is_ok() {}
    let _peer2 = start_peer(t, &ctx, &ep, publisher_peer);
    reconnect_or_not(t, &mon, &ep, uri, |u| sub.connect(u).unwrap());
    let second = text(&sub.recv().unwrap());
    assert!(second.starts_with("weather"), "{second}");
    if t.cross_process {
        assert_ne!(
            first, second,
            "the second message comes from the new process"
        );
    }
    drop(_peer2);
    remove_stale(&ep);
}

/// SUB receives exactly what matches one of its prefixes.
fn prefix_subscription_filtering(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let (_ctx, publ, sub) = ctx_pair(SocketType::Pub, SocketType::Sub);
    let ep = publ.bind(&(t.bind)("prefix")).unwrap();
    sub.connect(&(t.connect)(&ep)).unwrap();
    sub.subscribe(b"ab").unwrap();
    sub.subscribe(b"zz").unwrap();
    sub.set_recv_timeout(Some(Duration::from_millis(20)));
    loop {
        publ.send("ab-probe").unwrap();
        if sub.recv().is_ok() {
            break;
        }
    }
    sub.set_recv_timeout(Some(Duration::from_millis(300)));
    while sub.recv().is_ok() {}
    sub.unsubscribe(b"zz").unwrap();
    // Let the cancel travel: a message on a dropped topic after a round of probes.
    for topic in ["a", "abc", "b", "ab", "xab", "zz", "", "ab\0"] {
        publ.send(Message::from_frames([
            topic.as_bytes().to_vec(),
            b"body".to_vec(),
        ]))
        .unwrap();
    }
    publ.send("ab-end").unwrap();
    sub.set_recv_timeout(Some(Duration::from_secs(10)));
    let mut got = Vec::new();
    loop {
        let m = sub.recv().unwrap();
        if text(&m) == "ab-end" {
            break;
        }
        if text(&m) != "ab-probe" {
            got.push(text(&m));
        }
    }
    // "zz" may still pass if the cancel is slower than the data; everything else is exact.
    got.retain(|t| t != "zz");
    assert_eq!(got, vec!["abc", "ab", "ab\0"]);
}

/// ROUTER_MANDATORY: an unknown routing id is an error that hands the message back.
fn router_mandatory_error(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let (_ctx, router, dealer) = ctx_pair(SocketType::Router, SocketType::Dealer);
    router.set_router_mandatory(true);
    dealer.set_routing_id("d1").unwrap();
    let ep = router.bind(&(t.bind)("mandatory")).unwrap();
    let e = router
        .send(Message::from_frames(["nobody", "x"]))
        .unwrap_err();
    assert!(matches!(e.error, Error::HostUnreachable), "{}", e.error);
    assert_eq!(e.message, Message::from_frames(["nobody", "x"]));
    dealer.connect(&(t.connect)(&ep)).unwrap();
    dealer.send("hello").unwrap();
    assert_eq!(
        router.recv().unwrap(),
        Message::from_frames(["d1", "hello"])
    );
    router.send(Message::from_frames(["d1", "back"])).unwrap();
    assert_eq!(dealer.recv().unwrap(), Message::from("back"));
    // Without the option the same message is silently dropped.
    router.set_router_mandatory(false);
    router.send(Message::from_frames(["nobody", "x"])).unwrap();
}

/// CONFLATE keeps only the newest message.
fn conflate_keeps_newest(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let (_ctx, push, pull) = ctx_pair(SocketType::Push, SocketType::Pull);
    pull.set_conflate(true);
    let mon = pull.monitor();
    let ep = pull.bind(&(t.bind)("conflate")).unwrap();
    push.connect(&(t.connect)(&ep)).unwrap();
    wait_handshakes(&ep, &mon, 1);
    for i in 0..100 {
        push.send(format!("m{i}").into_bytes()).unwrap();
    }
    push.send("last").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    loop {
        let m = pull.recv().unwrap();
        got.push(text(&m));
        if text(&m) == "last" {
            break;
        }
    }
    assert!(
        got.len() < 101,
        "conflate dropped older messages: got {}",
        got.len()
    );
}

/// PUSH spreads messages evenly over three PULL peers.
fn load_balancing_across_three(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let push = ctx.socket(SocketType::Push).unwrap();
    let mon = push.monitor();
    let ep = push.bind(&(t.bind)("lb")).unwrap();
    let pulls: Vec<Socket> = (0..3)
        .map(|_| {
            let p = ctx.socket(SocketType::Pull).unwrap();
            p.connect(&(t.connect)(&ep)).unwrap();
            p
        })
        .collect();
    wait_handshakes(&ep, &mon, 3);
    for i in 0..30u32 {
        push.send(i.to_be_bytes().to_vec()).unwrap();
    }
    for p in &pulls {
        p.set_recv_timeout(Some(Duration::from_secs(10)));
        let mut prev = None;
        for _ in 0..10 {
            let m = p.recv().unwrap();
            let i = u32::from_be_bytes(m.frames()[0][..4].try_into().unwrap());
            if let Some(prev) = prev {
                assert_eq!(i, prev + 3, "round robin: every third message");
            }
            prev = Some(i);
        }
        p.set_recv_timeout(Some(Duration::from_millis(50)));
        assert!(p.recv().is_err(), "exactly ten each");
    }
}

/// PULL takes turns between three PUSH peers that all have messages waiting.
fn fair_queueing_from_three(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    let mon = pull.monitor();
    let ep = pull.bind(&(t.bind)("fq")).unwrap();
    let pushes: Vec<Socket> = (0..3)
        .map(|_| {
            let p = ctx.socket(SocketType::Push).unwrap();
            p.connect(&(t.connect)(&ep)).unwrap();
            p
        })
        .collect();
    wait_handshakes(&ep, &mon, 3);
    for (k, p) in pushes.iter().enumerate() {
        for i in 0..10u8 {
            p.send(vec![k as u8, i]).unwrap();
        }
    }
    // Let every message reach the PULL's queues before reading (a generous pause: a
    // message still in flight would make the turn order look unfair).
    std::thread::sleep(Duration::from_secs(1));
    let got: Vec<(u8, u8)> = (0..30)
        .map(|_| {
            let m = pull.recv().unwrap();
            (m.frames()[0][0], m.frames()[0][1])
        })
        .collect();
    for window in got.chunks(3) {
        let mut senders: Vec<u8> = window.iter().map(|(k, _)| *k).collect();
        senders.sort();
        assert_eq!(
            senders,
            vec![0, 1, 2],
            "each round takes one from each: {got:?}"
        );
    }
    for k in 0..3u8 {
        let seq: Vec<u8> = got
            .iter()
            .filter(|(s, _)| *s == k)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(seq, (0..10).collect::<Vec<u8>>(), "per-sender order");
    }
}

/// An incompatible peer is refused; over streams the monitor says so and the
/// connecting side stops retrying.
fn incompatible_peer_is_refused(t: &Transport) {
    let _w = common::watchdog(Duration::from_secs(60));
    let (_ctx, rep, publ) = ctx_pair(SocketType::Rep, SocketType::Pub);
    let ep = rep.bind(&(t.bind)("incompatible")).unwrap();
    let mon = publ.monitor();
    match publ.connect(&(t.connect)(&ep)) {
        Err(Error::PeerRejected(why)) => {
            assert!(!is_stream(&ep));
            assert!(why.contains("PUB") && why.contains("REP"), "{why}");
        }
        Ok(()) => {
            assert!(is_stream(&ep), "inproc refuses at connect time");
            let e = mon
                .wait_for(EventKind::HandshakeFailedProtocol, Duration::from_secs(30))
                .expect("handshake-failed-protocol");
            assert!(e.detail.contains("not reconnecting"), "{}", e.detail);
            // No reconnect storm: no retry is scheduled afterwards.
            assert!(
                mon.wait_for(EventKind::ConnectRetried, Duration::from_millis(500))
                    .is_none()
            );
        }
        Err(e) => panic!("{e}"),
    }
}

// ------------------------------------------------------------------------------------
// The matrix.

macro_rules! tests_for {
    ($transport:ident, $bind:expr, $fixed:expr, $cross:expr, $connect:expr, $peer_bind:expr, $reconnects:expr, [$($test:ident),* $(,)?]) => {
        mod $transport {
            use super::*;
            $(
                #[test]
                fn $test() {
                    super::$test(&super::Transport {
                        test: concat!(stringify!($transport), "::", stringify!($test)),
                        bind: $bind,
                        fixed: $fixed,
                        cross_process: $cross,
                        connect: $connect,
                        peer_bind: $peer_bind,
                        reconnects: $reconnects,
                    });
                }
            )*
        }
    };
}

macro_rules! conformance {
    (@or $x:expr, $default:expr) => { $x };
    (@or , $default:expr) => { $default };
    ($($transport:ident: bind $bind:expr, fixed $fixed:expr, cross_process $cross:expr
       $(, connect $connect:expr, peer_bind $peer_bind:expr, reconnects $reconnects:expr)?;)*) => {
        $(
            tests_for!($transport, $bind, $fixed, $cross,
                conformance!(@or $($connect)?, same), conformance!(@or $($peer_bind)?, same),
                conformance!(@or $($reconnects)?, true), [
                hwm_drops_on_pub,
                hwm_blocks_on_push_and_send_timeout,
                recv_timeouts,
                linger_flushes_on_close,
                close_after_burst_loses_nothing,
                last_reply_of_a_gone_peer_is_received,
                router_receives_what_a_gone_peer_sent,
                linger_zero_discards,
                reconnect_after_peer_restart,
                subscriptions_survive_peer_restart,
                prefix_subscription_filtering,
                router_mandatory_error,
                conflate_keeps_newest,
                load_balancing_across_three,
                fair_queueing_from_three,
                incompatible_peer_is_refused,
            ]);
        )*
    };
}

conformance! {
    tcp: bind |_| "tcp://127.0.0.1:0".into(),
         fixed |_| format!("tcp://127.0.0.1:{}", free_tcp_port()),
         cross_process true;
    unix: bind |tag| format!("unix://@{}", unique(tag)),
          fixed |tag| format!("unix://@{}", unique(tag)),
          cross_process true;
    unix_path: bind |tag| format!("unix://{}/{}.sock", std::env::temp_dir().display(), unique(tag)),
               fixed |tag| format!("unix://{}/{}.sock", std::env::temp_dir().display(), unique(tag)),
               cross_process true;
    ipc: bind |tag| format!("ipc://{}", unique(tag)),
         fixed |tag| format!("ipc://{}", unique(tag)),
         cross_process true;
    inproc: bind |tag| format!("inproc://{}", unique(tag)),
            fixed |tag| format!("inproc://{}", unique(tag)),
            cross_process false;
    fd_tcp: bind fd_tcp_bind,
            fixed |_| format!("tcp://127.0.0.1:{}", free_tcp_port()),
            cross_process true,
            connect fd_connect, peer_bind fd_peer_bind, reconnects false;
    fd_unix: bind fd_unix_bind,
             fixed |tag| format!("unix://@{}", unique(tag)),
             cross_process true,
             connect fd_connect, peer_bind fd_peer_bind, reconnects false;
}
