//! `tcp://` names against a real DNS server (dnsmasq on a loopback port of each test's
//! own): DNS service names (SRV records, RFC 2782 priorities), a record that moves, a
//! name that does not resolve, and a slow name server that must not hold up the
//! context's other connections.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dns::Dnsmasq;
use common::watchdog;
use lwmq::{Context, EventKind, Socket, SocketType};

const LIMIT: Duration = Duration::from_secs(120);
/// Bounds a wait that must end (not a claim about speed).
const PATIENCE: Duration = Duration::from_secs(30);

fn context(dns: SocketAddr) -> Context {
    Context::builder().dns_server(dns).introspect(false).build()
}

/// A REP on 127.0.0.1 (see [`serve`]); returns it and its port.
fn rep(ctx: &Context) -> (Socket, u16) {
    let rep = ctx.socket(SocketType::Rep).unwrap();
    let ep = rep.bind("tcp://127.0.0.1:0").unwrap();
    let port = ep.rsplit(':').next().unwrap().parse().unwrap();
    rep.set_recv_timeout(Some(Duration::from_millis(50)));
    (rep, port)
}

/// Serves `rep` on a thread until `stop`: answers each request with `name`.
fn serve(rep: Socket, name: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if rep.recv().is_ok() {
                let _ = rep.send(name);
            }
        }
    })
}

fn ask(req: &Socket) -> String {
    req.send("who?").expect("send the request");
    let reply = req.recv().expect("a reply");
    String::from_utf8(reply.frames()[0].to_vec()).unwrap()
}

fn req_to(ctx: &Context, uri: &str) -> Socket {
    let req = ctx.socket(SocketType::Req).unwrap();
    req.set_recv_timeout(Some(PATIENCE));
    req.set_send_timeout(Some(PATIENCE));
    req.set_reconnect_interval(Duration::from_millis(50))
        .unwrap();
    req.connect(uri)
        .expect("connect to a service name returns at once");
    req
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn req_reaches_the_rep_named_by_the_srv_record() {
    let _w = watchdog(LIMIT);
    let server_ctx = Context::builder().introspect(false).build();
    let (rep, port) = rep(&server_ctx);
    let stop = Arc::new(AtomicBool::new(false));
    let t = serve(rep, "echo", stop.clone());
    let dns = Dnsmasq::start(
        "srv",
        &format!(
            "srv-host=_echo._tcp.lwmq.test,echo-host.lwmq.test,{port},0,1\n\
             host-record=echo-host.lwmq.test,127.0.0.1"
        ),
    );
    let ctx = context(dns.addr());
    let req = req_to(&ctx, "tcp://_echo._tcp.lwmq.test");
    assert_eq!(ask(&req), "echo");
    assert_eq!(ask(&req), "echo");
    // A plain host name goes to the same server.
    let req2 = req_to(&ctx, &format!("tcp://echo-host.lwmq.test:{port}"));
    assert_eq!(ask(&req2), "echo");
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn the_second_priority_answers_when_the_first_is_down() {
    let _w = watchdog(LIMIT);
    let server_ctx = Context::builder().introspect(false).build();
    let (rep, port) = rep(&server_ctx);
    let stop = Arc::new(AtomicBool::new(false));
    let t = serve(rep, "backup", stop.clone());
    let down = dead_port();
    let dns = Dnsmasq::start(
        "prio",
        &format!(
            "srv-host=_echo._tcp.lwmq.test,primary.lwmq.test,{down},10,5\n\
             srv-host=_echo._tcp.lwmq.test,backup.lwmq.test,{port},20,5\n\
             host-record=primary.lwmq.test,127.0.0.1\n\
             host-record=backup.lwmq.test,127.0.0.1"
        ),
    );
    let ctx = context(dns.addr());
    let req = req_to(&ctx, "tcp://_echo._tcp.lwmq.test");
    let monitor = req.monitor();
    assert_eq!(ask(&req), "backup");
    // The one connection made is to the backup's port.
    let mut connected = None;
    while let Some(e) = monitor.try_recv() {
        if e.kind == EventKind::HandshakeSucceeded {
            connected = Some(e);
        }
    }
    assert!(connected.is_some(), "the REQ completed a handshake");
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn the_client_follows_a_record_that_moved() {
    let _w = watchdog(LIMIT);
    let server_ctx = Context::builder().introspect(false).build();
    let (old, old_port) = rep(&server_ctx);
    let (new, new_port) = rep(&server_ctx);
    let stop_old = Arc::new(AtomicBool::new(false));
    let stop_new = Arc::new(AtomicBool::new(false));
    let t_old = serve(old, "old", stop_old.clone());
    let t_new = serve(new, "new", stop_new.clone());
    let record = |port: u16| {
        format!(
            "srv-host=_echo._tcp.lwmq.test,svc.lwmq.test,{port},0,1\n\
             host-record=svc.lwmq.test,127.0.0.1"
        )
    };
    let mut dns = Dnsmasq::start("move", &record(old_port));
    let ctx = context(dns.addr());
    let req = req_to(&ctx, "tcp://_echo._tcp.lwmq.test");
    let monitor = req.monitor();
    assert_eq!(ask(&req), "old");
    // The service moves: the record changes, then the old server stops.
    dns.restart(&record(new_port));
    stop_old.store(true, Ordering::Relaxed);
    t_old.join().unwrap(); // drops the old REP: its connection closes
    // (A request written to the old connection before it closed would be lost, as
    // with libzmq: ask once the client saw it go.)
    monitor
        .wait_for(EventKind::Disconnected, PATIENCE)
        .expect("the old server's connection closes");
    assert_eq!(ask(&req), "new", "the reconnect followed the new record");
    stop_new.store(true, Ordering::Relaxed);
    t_new.join().unwrap();
}

#[test]
fn a_live_connection_follows_the_record_when_its_ttl_ends() {
    let _w = watchdog(LIMIT);
    let server_ctx = Context::builder().introspect(false).build();
    let (old, old_port) = rep(&server_ctx);
    let (new, new_port) = rep(&server_ctx);
    let stop = Arc::new(AtomicBool::new(false));
    let t_old = serve(old, "old", stop.clone());
    let t_new = serve(new, "new", stop.clone());
    let record = |port: u16| {
        format!(
            "srv-host=_echo._tcp.lwmq.test,svc.lwmq.test,{port},0,1\n\
             host-record=svc.lwmq.test,127.0.0.1"
        )
    };
    let mut dns = Dnsmasq::start("ttl", &record(old_port));
    let ctx = context(dns.addr());
    let req = req_to(&ctx, "tcp://_echo._tcp.lwmq.test");
    let monitor = req.monitor();
    assert_eq!(ask(&req), "old");
    // The record moves; the old server keeps running. Once the record's TTL (1 s)
    // ends, the client looks again and leaves the old server.
    dns.restart(&record(new_port));
    loop {
        let e = monitor
            .wait_for(EventKind::Disconnected, PATIENCE)
            .expect("the client leaves the old server");
        if e.detail.contains("no longer give") {
            break;
        }
    }
    assert_eq!(ask(&req), "new");
    assert_eq!(ask(&req), "new");
    stop.store(true, Ordering::Relaxed);
    t_old.join().unwrap();
    t_new.join().unwrap();
}

/// A PUB (or XPUB) on 127.0.0.1 publishing `name` every few milliseconds until
/// `stop`; returns its port.
fn publisher(
    ctx: &Context,
    t: SocketType,
    name: &'static str,
    port: u16,
    stop: Arc<AtomicBool>,
) -> (u16, std::thread::JoinHandle<Socket>) {
    let s = ctx.socket(t).unwrap();
    let ep = s.bind(&format!("tcp://127.0.0.1:{port}")).unwrap();
    let port = ep.rsplit(':').next().unwrap().parse().unwrap();
    let h = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = s.try_send(name);
            std::thread::sleep(Duration::from_millis(5));
        }
        s
    });
    (port, h)
}

/// Receives until every name in `want` came (and returns what else came).
fn hear(sub: &Socket, want: &[&str]) -> BTreeSet<String> {
    let mut heard = BTreeSet::new();
    while !want.iter().all(|w| heard.contains(*w)) {
        let m = sub.recv().expect("publishers keep publishing");
        heard.insert(String::from_utf8(m.frames()[0].to_vec()).unwrap());
    }
    heard
}

#[test]
fn a_sub_hears_every_target_of_the_best_priority_and_fails_over() {
    let _w = watchdog(LIMIT);
    let server_ctx = Context::builder().introspect(false).build();
    let stop_ab = Arc::new(AtomicBool::new(false));
    let (pa, ta) = publisher(&server_ctx, SocketType::Pub, "a", 0, stop_ab.clone());
    let (pb, tb) = publisher(&server_ctx, SocketType::Pub, "b", 0, stop_ab.clone());
    // The backup is an XPUB: it sees a subscription the moment a SUB connects to it.
    let backup = server_ctx.socket(SocketType::XPub).unwrap();
    let ep = backup.bind("tcp://127.0.0.1:0").unwrap();
    let pc: u16 = ep.rsplit(':').next().unwrap().parse().unwrap();
    let dns = Dnsmasq::start(
        "fan",
        &format!(
            "srv-host=_feed._tcp.lwmq.test,a.lwmq.test,{pa},10,1\n\
             srv-host=_feed._tcp.lwmq.test,b.lwmq.test,{pb},10,1\n\
             srv-host=_feed._tcp.lwmq.test,c.lwmq.test,{pc},20,1\n\
             host-record=a.lwmq.test,127.0.0.1\n\
             host-record=b.lwmq.test,127.0.0.1\n\
             host-record=c.lwmq.test,127.0.0.1"
        ),
    );
    let ctx = context(dns.addr());
    let sub = ctx.socket(SocketType::Sub).unwrap();
    sub.set_recv_timeout(Some(PATIENCE));
    sub.set_reconnect_interval(Duration::from_millis(50))
        .unwrap();
    sub.subscribe(b"").unwrap();
    sub.connect("tcp://_feed._tcp.lwmq.test").unwrap();

    // Both targets of priority 10, at once: one connect, two publishers heard.
    let heard = hear(&sub, &["a", "b"]);
    assert_eq!(heard, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
    // (Pipes reach the socket as it is used: keep receiving a while.)
    for _ in 0..40 {
        sub.recv().unwrap();
    }
    assert!(
        backup.try_recv().is_err(),
        "the priority-20 backup is not connected while priority 10 is up"
    );

    // Both priority-10 publishers stop: the SUB fails over to the backup, which sees
    // the subscription and is heard.
    stop_ab.store(true, Ordering::Relaxed);
    drop((ta.join().unwrap(), tb.join().unwrap()));
    sub.set_recv_timeout(Some(Duration::from_millis(20)));
    let mut subscribed = false;
    loop {
        if let Ok(m) = backup.try_recv() {
            subscribed |= m.frames()[0].as_ref() == b"\x01";
        }
        let _ = backup.try_send("c");
        if sub.recv().is_ok_and(|m| m.frames()[0].as_ref() == b"c") {
            break;
        }
    }
    if let Ok(m) = backup.try_recv() {
        subscribed |= m.frames()[0].as_ref() == b"\x01";
    }
    assert!(subscribed, "the backup saw the SUB subscribe");

    // One priority-10 publisher is back on its port: the SUB goes back to it.
    let stop_a2 = Arc::new(AtomicBool::new(false));
    let (_, ta2) = publisher(&server_ctx, SocketType::Pub, "a2", pa, stop_a2.clone());
    loop {
        let _ = backup.try_send("c");
        if sub.recv().is_ok_and(|m| m.frames()[0].as_ref() == b"a2") {
            break;
        }
    }
    // ...and leaves the backup: while it goes on sending, only a2 is heard.
    let mut run = 0;
    while run < 30 {
        let _ = backup.try_send("c");
        match sub.recv() {
            Ok(m) if m.frames()[0].as_ref() == b"a2" => run += 1,
            Ok(_) => run = 0,
            Err(_) => {}
        }
    }
    stop_a2.store(true, Ordering::Relaxed);
    ta2.join().unwrap();
}

#[test]
fn an_unknown_name_is_a_monitor_event_and_retried_not_a_connect_error() {
    let _w = watchdog(LIMIT);
    let dns = Dnsmasq::start("unknown", "host-record=known.lwmq.test,127.0.0.1");
    let ctx = context(dns.addr());
    for uri in [
        "tcp://_nothing._tcp.lwmq.test",
        "tcp://nothing.lwmq.test:5555",
    ] {
        let s = ctx.socket(SocketType::Push).unwrap();
        s.set_reconnect_interval(Duration::from_millis(20)).unwrap();
        let m = s.monitor();
        s.connect(uri).expect("connect does not resolve");
        let mut failures = 0;
        let mut retries = 0;
        while failures < 2 || retries < 2 {
            let e = m.recv(Some(PATIENCE)).expect("monitor events keep coming");
            assert_eq!(e.endpoint, uri);
            match e.kind {
                EventKind::ResolveFailed => {
                    assert!(
                        e.detail.contains("nothing") && e.detail.contains("lwmq.test"),
                        "{e}"
                    );
                    failures += 1;
                }
                EventKind::ConnectRetried => retries += 1,
                other => panic!("unexpected {other} for {uri}: {e}"),
            }
        }
    }
}

/// A DNS "server" between lwmq and dnsmasq that holds every query until released,
/// then forwards it and relays the answer.
struct SlowDns {
    addr: SocketAddr,
    release: Arc<(Mutex<bool>, std::sync::Condvar)>,
    queries: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

impl SlowDns {
    fn start(upstream: SocketAddr) -> SlowDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let queries = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (r, q, a) = (release.clone(), queries.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                q.fetch_add(1, Ordering::SeqCst);
                let query = buf[..n].to_vec();
                let (sock, r, a) = (sock.try_clone().unwrap(), r.clone(), a.clone());
                std::thread::spawn(move || {
                    let (lock, cv) = &*r;
                    let mut go = lock.lock().unwrap();
                    while !*go {
                        go = cv.wait(go).unwrap();
                    }
                    drop(go);
                    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
                    up.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    up.send_to(&query, upstream).unwrap();
                    let mut b = [0u8; 1500];
                    if let Ok(n) = up.recv(&mut b) {
                        let _ = sock.send_to(&b[..n], from);
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        SlowDns {
            addr,
            release,
            queries,
            answered,
        }
    }

    fn release(&self) {
        let (lock, cv) = &*self.release;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
}

#[test]
fn a_slow_lookup_does_not_hold_up_the_other_connections() {
    let _w = watchdog(LIMIT);
    let server_ctx = Context::builder().introspect(false).build();
    let (rep, port) = rep(&server_ctx);
    let stop = Arc::new(AtomicBool::new(false));
    let t = serve(rep, "slow", stop.clone());
    let dns = Dnsmasq::start(
        "slow",
        &format!(
            "srv-host=_echo._tcp.lwmq.test,svc.lwmq.test,{port},0,1\n\
             host-record=svc.lwmq.test,127.0.0.1"
        ),
    );
    let slow = SlowDns::start(dns.addr());
    let ctx = context(slow.addr);
    let req = req_to(&ctx, "tcp://_echo._tcp.lwmq.test");
    // The lookup is in flight (the slow server holds it)...
    while slow.queries.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // ...while the same context's background thread makes and serves other
    // connections: a new listener, a new connect, and messages both ways.
    let pull = ctx.socket(SocketType::Pull).unwrap();
    let ep = pull.bind("tcp://127.0.0.1:0").unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    push.connect(&ep).unwrap();
    pull.set_recv_timeout(Some(PATIENCE));
    for i in 0..200u32 {
        push.send(i.to_be_bytes().to_vec()).unwrap();
        let m = pull.recv().expect("messages flow while the lookup waits");
        assert_eq!(m.frames()[0].as_ref(), i.to_be_bytes());
    }
    assert_eq!(
        slow.answered.load(Ordering::SeqCst),
        0,
        "all of that happened before any DNS answer came back"
    );
    slow.release();
    assert_eq!(ask(&req), "slow", "the held lookup completes the connect");
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}
