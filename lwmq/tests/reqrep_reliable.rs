//! Reliable request/reply across real processes: REQ resend and failover, REP
//! de-duplication, REPs killed with `kill -9` and restarted.
//!
//! The REPs are this test binary re-run as a peer (`peer_process_entry`). A peer REP
//! answers `body` with `body|pid|n`, where `n` counts how many times its application
//! saw that body, and appends every body its application handles to a file of its own
//! (`exec-<pid>` in the test's directory): those files are the oracle for "executed
//! once", per process.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::peer::{Peer, PeerEnv, say};
use common::watchdog;
use lwmq::{Context, Error, Message, Socket, SocketType};

const ROLE: &str = "LWMQ_RR_ROLE";
const PEER: PeerEnv = PeerEnv {
    role: ROLE,
    domain: "LWMQ_RR_DIR",
};
/// Deadlock guard for a whole test (not a speed assertion).
const GUARD: Duration = Duration::from_secs(120);

/// A fresh directory for one test's execution files.
fn test_dir(test: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "lwmq-rr-{}-{}-{test}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test dir");
    d
}

/// A TCP port free now (the REPs bind it, and a restarted one binds it again).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn text(m: &Message) -> String {
    m.frames()
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect::<Vec<_>>()
        .join("+")
}

/// A reply `body|pid|n` split up.
fn parse(reply: &Message) -> (String, u32, u32) {
    let t = text(reply);
    let mut it = t.split('|');
    let body = it.next().unwrap_or_default().to_owned();
    let pid = it
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid in reply");
    let n = it
        .next()
        .and_then(|p| p.parse().ok())
        .expect("count in reply");
    (body, pid, n)
}

/// Every body each REP process's application handled, by pid.
fn executions(dir: &Path) -> HashMap<u32, Vec<String>> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(pid) = name.strip_prefix("exec-").and_then(|p| p.parse().ok()) {
            let s = std::fs::read_to_string(&p).unwrap_or_default();
            out.insert(pid, s.lines().map(str::to_owned).collect());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Child processes

/// Not a test: the entry point of the peer processes (does nothing without
/// `LWMQ_RR_ROLE`).
///
/// Role `rep`: binds `LWMQ_RR_EP` (retrying while a dead predecessor's port is not
/// free yet), says `READY pid`, then for each request says `GOT body`, records it,
/// waits `LWMQ_RR_DELAY_MS` (default 0), and replies. With `LWMQ_RR_HANG=1` it never
/// replies (it is killed while handling the request). With `LWMQ_RR_CONNECT=1` it
/// connects instead of binding (behind a proxy).
#[test]
fn peer_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    std::thread::spawn(|| {
        let mut buf = String::new();
        let _ = std::io::stdin().read_line(&mut buf);
        std::process::exit(3);
    });
    assert_eq!(role, "rep", "unknown role");
    let dir = PathBuf::from(std::env::var("LWMQ_RR_DIR").expect("dir"));
    let ep = std::env::var("LWMQ_RR_EP").expect("endpoint");
    let delay = std::env::var("LWMQ_RR_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or_default();
    let hang = std::env::var("LWMQ_RR_HANG").as_deref() == Ok("1");
    let connect = std::env::var("LWMQ_RR_CONNECT").as_deref() == Ok("1");
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).expect("socket");
    if connect {
        rep.connect(&ep).expect("connect");
    } else {
        let mut tries = 0;
        while let Err(e) = rep.bind(&ep) {
            tries += 1;
            assert!(tries < 200, "bind {ep}: {e}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    let pid = std::process::id();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("exec-{pid}")))
        .expect("execution file");
    say("READY", pid);
    let mut seen: HashMap<String, u32> = HashMap::new();
    loop {
        let req = rep.recv().expect("recv");
        let body = text(&req);
        if body == "stats" {
            let s = rep.reqrep_stats();
            let reply = format!(
                "stats|{pid}|0|{}|{}",
                s.duplicates_dropped, s.replies_from_cache
            );
            rep.send(reply.into_bytes()).expect("reply");
            continue;
        }
        writeln!(log, "{body}").expect("record");
        say("GOT", &body);
        let n = seen.entry(body.clone()).or_insert(0);
        *n += 1;
        let n = *n;
        if hang {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        std::thread::sleep(delay);
        rep.send(format!("{body}|{pid}|{n}").into_bytes())
            .expect("reply");
    }
}

fn spawn_rep(dir: &Path, ep: &str, env: &[(&str, &str)]) -> (Peer, u32) {
    let mut all = vec![("LWMQ_RR_EP", ep)];
    all.extend_from_slice(env);
    let mut p = PEER.spawn("rep", dir.to_str().expect("utf-8 dir"), &all);
    let pid = p.expect("READY").parse().expect("pid");
    (p, pid)
}

fn resending_req(ctx: &Context, interval_ms: u64, attempts: u32) -> Socket {
    let req = ctx.socket(SocketType::Req).expect("socket");
    req.set_req_resend_interval(Some(Duration::from_millis(interval_ms)))
        .expect("resend");
    req.set_req_resend_attempts(attempts).expect("attempts");
    req.set_recv_timeout(Some(Duration::from_secs(60)));
    req.set_send_timeout(Some(Duration::from_secs(60)));
    req
}

/// The `stats` answer of a REP: (duplicates dropped, replies from cache).
fn rep_stats(req: &Socket) -> (u64, u64) {
    req.send("stats").expect("send stats");
    let t = text(&req.recv().expect("stats reply"));
    let f: Vec<&str> = t.split('|').collect();
    (f[3].parse().expect("dups"), f[4].parse().expect("cache"))
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn rep_killed_before_replying_the_second_rep_answers() {
    let _w = watchdog(GUARD);
    let dir = test_dir("failover");
    let (ep_a, ep_b) = (
        format!("tcp://127.0.0.1:{}", free_port()),
        format!("tcp://127.0.0.1:{}", free_port()),
    );
    let (mut a, _pid_a) = spawn_rep(&dir, &ep_a, &[("LWMQ_RR_HANG", "1")]);
    let ctx = Context::new();
    let req = resending_req(&ctx, 300, 10);
    req.connect(&ep_a).expect("connect a");
    req.connect(&ep_b).expect("connect b");
    // Only A is up: the request goes there (resend sends to connected peers only).
    req.send("job-1").expect("send");
    assert_eq!(a.expect("GOT"), "job-1");
    let (_b, pid_b) = spawn_rep(&dir, &ep_b, &[]);
    a.kill9();
    let reply = req.recv().expect("the second REP answers");
    assert_eq!(parse(&reply), ("job-1".to_owned(), pid_b, 1));
    let s = req.reqrep_stats();
    assert!(s.resends >= 1 && s.failovers >= 1, "{s:?}");
    // The REQ goes on with new requests.
    req.send("job-2").expect("send");
    assert_eq!(parse(&req.recv().expect("reply")).0, "job-2");
}

#[test]
fn single_rep_restarted_answers_after_kill() {
    let _w = watchdog(GUARD);
    let dir = test_dir("restart");
    let ep = format!("tcp://127.0.0.1:{}", free_port());
    let (mut a, _) = spawn_rep(&dir, &ep, &[("LWMQ_RR_HANG", "1")]);
    let ctx = Context::new();
    let req = resending_req(&ctx, 300, 20);
    req.connect(&ep).expect("connect");
    req.send("job").expect("send");
    assert_eq!(a.expect("GOT"), "job");
    a.kill9();
    let (_a2, pid2) = spawn_rep(&dir, &ep, &[]);
    let reply = req.recv().expect("the restarted REP answers");
    assert_eq!(parse(&reply), ("job".to_owned(), pid2, 1));
}

#[test]
fn slow_rep_handles_the_request_once_and_the_req_gets_one_reply() {
    let _w = watchdog(GUARD);
    let dir = test_dir("slow");
    let ep = format!("tcp://127.0.0.1:{}", free_port());
    // The REP takes three resend intervals to answer.
    let (_rep, pid) = spawn_rep(&dir, &ep, &[("LWMQ_RR_DELAY_MS", "600")]);
    let ctx = Context::new();
    let req = resending_req(&ctx, 200, 10);
    req.connect(&ep).expect("connect");
    req.send("slow-job").expect("send");
    let reply = req.recv().expect("reply");
    assert_eq!(parse(&reply), ("slow-job".to_owned(), pid, 1));
    let s = req.reqrep_stats();
    assert!(s.resends >= 2, "it resent while the REP worked: {s:?}");
    // Exactly one reply reached the application: the next exchange gets its own.
    req.send("next").expect("send");
    assert_eq!(parse(&req.recv().expect("reply")).0, "next");
    let (dups, _cache) = rep_stats(&req);
    assert!(
        dups >= 2,
        "the copies that came meanwhile were dropped: {dups}"
    );
    let ex = executions(&dir);
    assert_eq!(ex[&pid], vec!["slow-job", "next"], "each handled once");
}

#[test]
fn lost_reply_is_answered_from_the_cache() {
    let _w = watchdog(GUARD);
    let dir = test_dir("lost");
    let ctx = Context::new();
    // A middleman the test controls: ROUTER in front, DEALER behind; drops the first reply.
    let front = ctx.socket(SocketType::Router).expect("router");
    let front_ep = front.bind("tcp://127.0.0.1:0").expect("bind front");
    let back = ctx.socket(SocketType::Dealer).expect("dealer");
    let back_ep = back.bind("tcp://127.0.0.1:0").expect("bind back");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let middle = std::thread::spawn(move || {
        front.set_recv_timeout(Some(Duration::from_millis(20)));
        back.set_recv_timeout(Some(Duration::from_millis(20)));
        let mut dropped = 0;
        while !stop2.load(Ordering::Relaxed) {
            if let Ok(m) = front.recv() {
                back.send(m).expect("forward request");
            }
            if let Ok(m) = back.recv() {
                if dropped == 0 {
                    dropped += 1;
                    continue;
                }
                front.send(m).expect("forward reply");
            }
        }
        dropped
    });
    let (_rep, pid) = spawn_rep(&dir, &back_ep, &[("LWMQ_RR_CONNECT", "1")]);
    let req = resending_req(&ctx, 200, 10);
    req.connect(&front_ep).expect("connect");
    req.send("job").expect("send");
    let reply = req.recv().expect("reply from the cache");
    assert_eq!(parse(&reply), ("job".to_owned(), pid, 1));
    assert!(req.reqrep_stats().resends >= 1);
    let (_dups, cache) = rep_stats(&req);
    assert!(cache >= 1, "answered from the cache: {cache}");
    assert_eq!(
        executions(&dir)[&pid],
        vec!["job"],
        "the application ran once"
    );
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        middle.join().expect("middleman"),
        1,
        "one reply was dropped"
    );
}

#[test]
fn three_reqs_two_reps_killed_and_restarted() {
    let _w = watchdog(Duration::from_secs(600));
    let dir = test_dir("churn");
    let eps = [
        format!("tcp://127.0.0.1:{}", free_port()),
        format!("tcp://127.0.0.1:{}", free_port()),
    ];
    // Each request takes its REP a few ms, so that the run spans many kills.
    let slow: &[(&str, &str)] = &[("LWMQ_RR_DELAY_MS", "5")];
    let reps: Vec<_> = eps.iter().map(|ep| spawn_rep(&dir, ep, slow).0).collect();
    let reps = Arc::new(std::sync::Mutex::new(reps));
    let done = Arc::new(AtomicBool::new(false));
    // Kill one REP and restart it, the other, and so on, every few hundred ms.
    let killer = {
        let (reps, done, dir, eps) = (reps.clone(), done.clone(), dir.clone(), eps.clone());
        std::thread::spawn(move || {
            let mut kills = 0;
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let mut r = reps.lock().unwrap_or_else(|p| p.into_inner());
                r[i].kill9();
                kills += 1;
                r[i] = spawn_rep(&dir, &eps[i], &[("LWMQ_RR_DELAY_MS", "5")]).0;
                i = 1 - i;
            }
            kills
        })
    };
    let per_req = [334usize, 333, 333];
    let clients: Vec<_> = per_req
        .iter()
        .enumerate()
        .map(|(c, &n)| {
            let eps = eps.clone();
            std::thread::spawn(move || {
                let ctx = Context::new();
                let req = resending_req(&ctx, 200, 100);
                req.set_recv_timeout(Some(Duration::from_secs(120)));
                for ep in &eps {
                    req.connect(ep).expect("connect");
                }
                for k in 0..n {
                    let body = format!("c{c}-r{k}");
                    req.send(body.clone().into_bytes()).expect("send");
                    let reply = req.recv().unwrap_or_else(|e| panic!("{body}: {e}"));
                    let (got, _pid, _n) = parse(&reply);
                    assert_eq!(got, body, "the reply matches its request");
                }
                req.reqrep_stats()
            })
        })
        .collect();
    let stats: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    done.store(true, Ordering::Relaxed);
    let kills = killer.join().expect("killer");
    assert!(kills >= 3, "the REPs were killed and restarted: {kills}");
    // Every request was handled by some REP, and no REP process handled one twice.
    let ex = executions(&dir);
    let mut handled = HashSet::new();
    for (pid, bodies) in &ex {
        let mut mine = HashSet::new();
        for b in bodies {
            assert!(mine.insert(b.clone()), "REP {pid} handled {b} twice");
            handled.insert(b.clone());
        }
    }
    assert_eq!(handled.len(), 1000, "every request reached an application");
    let resends: u64 = stats.iter().map(|s| s.resends).sum();
    eprintln!(
        "churn: {kills} kills, {resends} resends, {} REP processes",
        ex.len()
    );
}

#[test]
fn gives_up_with_a_timeout_that_counts_attempts_and_peers() {
    let _w = watchdog(GUARD);
    let dir = test_dir("giveup");
    let (ep_a, ep_b) = (
        format!("tcp://127.0.0.1:{}", free_port()),
        format!("tcp://127.0.0.1:{}", free_port()),
    );
    let (mut a, _) = spawn_rep(&dir, &ep_a, &[("LWMQ_RR_HANG", "1")]);
    let (mut b, _) = spawn_rep(&dir, &ep_b, &[("LWMQ_RR_HANG", "1")]);
    let ctx = Context::new();
    let req = resending_req(&ctx, 100, 3);
    // Connected to both before the first send: the three attempts alternate.
    let mon = req.monitor();
    req.connect(&ep_a).expect("connect");
    req.connect(&ep_b).expect("connect");
    for _ in 0..2 {
        mon.wait_for(lwmq::EventKind::HandshakeSucceeded, Duration::from_secs(30))
            .expect("connected");
    }
    // The pipes reach the socket just after the event.
    std::thread::sleep(Duration::from_millis(100));
    req.send("never").expect("send");
    let e = req.recv().unwrap_err();
    assert!(
        matches!(
            e,
            Error::RequestTimeout {
                attempts: 3,
                peers: 2
            }
        ),
        "{e}"
    );
    assert!(e.is_timeout());
    let _ = (a.expect("GOT"), b.expect("GOT"));
    assert_eq!(req.reqrep_stats().given_up, 1);
    // A new request may go: the REQ is ready again.
    req.send("again").expect("a new request after giving up");
}

#[test]
fn try_recv_drives_resends_and_never_gives_up_by_itself() {
    let _w = watchdog(GUARD);
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).expect("socket");
    rep.set_recv_timeout(Some(Duration::from_secs(60)));
    let ep = rep.bind("tcp://127.0.0.1:0").expect("bind");
    let rep_events = rep.monitor();
    let req = resending_req(&ctx, 50, 1000);
    let req_events = req.monitor();
    req.connect(&ep).expect("connect");
    req.send("job").expect("send");
    let request = rep.recv().expect("request");
    // Polling: each try_recv lets time pass once; the request is resent meanwhile.
    while req.reqrep_stats().resends < 3 {
        assert!(matches!(req.try_recv(), Err(Error::WouldBlock)));
        std::thread::sleep(Duration::from_millis(20));
    }
    rep.send(request).expect("reply");
    let reply = loop {
        match req.try_recv() {
            Ok(m) => break m,
            Err(Error::WouldBlock) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(text(&reply), "job");
    assert!(rep.reqrep_stats().duplicates_dropped >= 3);
    // The monitors saw it happen.
    let resent = req_events
        .wait_for(lwmq::EventKind::RequestResent, Duration::from_secs(10))
        .expect("request-resent");
    assert!(resent.detail.contains("attempt 2"), "{resent}");
    let dropped = rep_events
        .wait_for(lwmq::EventKind::DuplicateDropped, Duration::from_secs(10))
        .expect("duplicate-dropped");
    assert!(
        dropped.to_string().starts_with("duplicate-dropped"),
        "{dropped}"
    );
}

/// A REP on a thread that takes `delay` per request; returns the bodies it handled.
fn slow_rep(rep: Socket, delay: Duration, n: usize) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        rep.set_recv_timeout(Some(Duration::from_secs(60)));
        let mut seen = Vec::new();
        while seen.len() < n {
            let m = rep.recv().expect("request");
            seen.push(text(&m));
            std::thread::sleep(delay);
            rep.send(m).expect("reply");
        }
        seen
    })
}

#[test]
fn resend_and_de_duplication_on_inproc_unix_and_ipc() {
    let _w = watchdog(GUARD);
    let ctx = Context::new();
    let domain = format!("rr{}", std::process::id());
    for ep in [
        format!("inproc://rr-{}", std::process::id()),
        format!("unix://@lwmq-rr-{}", std::process::id()),
        "ipc://rr-slow".to_owned(),
    ] {
        let rep = ctx.socket(SocketType::Rep).expect("socket");
        rep.set_ipc_domain(&domain);
        rep.bind(&ep).expect("bind");
        let app = slow_rep(rep, Duration::from_millis(150), 3);
        let req = resending_req(&ctx, 40, 50);
        req.set_ipc_domain(&domain);
        req.connect(&ep).expect("connect");
        for i in 0..3 {
            let body = format!("{ep} {i}");
            req.send(body.clone().into_bytes()).expect("send");
            assert_eq!(text(&req.recv().expect("reply")), body);
        }
        let seen = app.join().expect("rep");
        let want: Vec<String> = (0..3).map(|i| format!("{ep} {i}")).collect();
        assert_eq!(seen, want, "{ep}: each request handled once");
        assert!(req.reqrep_stats().resends >= 3, "{ep}");
    }
}

/// A reply cache kept outside the socket (shared by two REPs here, as a durable one
/// would be by a REP and its restarted successor).
#[derive(Debug, Clone, Default)]
struct SharedCache(Arc<std::sync::Mutex<HashMap<lwmq::RequestKey, Message>>>);

impl lwmq::ReplyCache for SharedCache {
    fn get(&mut self, key: &lwmq::RequestKey) -> Option<Message> {
        self.0.lock().ok()?.get(key).cloned()
    }
    fn put(&mut self, key: &lwmq::RequestKey, reply: &Message) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.clone(), reply.clone());
        }
    }
}

#[test]
fn a_reply_cache_of_ones_own_survives_the_rep() {
    let _w = watchdog(GUARD);
    let ctx = Context::new();
    let cache = SharedCache::default();
    let ep = format!("tcp://127.0.0.1:{}", free_port());
    // A requester with a stable routing id sending one request with an id (the wire
    // form of a REQ with resend).
    let dealer = ctx.socket(SocketType::Dealer).expect("socket");
    dealer.set_routing_id("client-7").expect("routing id");
    dealer.set_recv_timeout(Some(Duration::from_secs(30)));
    let events = dealer.monitor();
    dealer.connect(&ep).expect("connect");
    let request = Message::from_frames([&b"\x07\x00\x00\x00"[..], b"", b"pay 5"]);

    let first = ctx.socket(SocketType::Rep).expect("socket");
    first
        .set_reply_cache(Box::new(cache.clone()))
        .expect("cache");
    first.bind(&ep).expect("bind");
    dealer.send(request.clone()).expect("send");
    let got = first.recv().expect("request");
    first.send("paid").expect("reply");
    assert_eq!(text(&got), "pay 5");
    assert_eq!(text(&dealer.recv().expect("reply")), "\u{7}\0\0\0++paid");
    drop(first);

    // The successor knows the request: the copy is answered without its application.
    let second = ctx.socket(SocketType::Rep).expect("socket");
    second
        .set_reply_cache(Box::new(cache.clone()))
        .expect("cache");
    let mut tries = 0;
    while second.bind(&ep).is_err() {
        tries += 1;
        assert!(tries < 400, "rebind {ep}");
        std::thread::sleep(Duration::from_millis(25));
    }
    // Resend options are for REQ sockets only.
    assert!(matches!(
        second.set_req_resend_interval(Some(Duration::from_secs(1))),
        Err(Error::InvalidArgument(_))
    ));
    // Copies are answered while the application waits for a request.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        second.set_recv_timeout(Some(Duration::from_millis(100)));
        let mut handed_over = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            if let Ok(m) = second.recv() {
                handed_over.push(text(&m));
                second.send("again").expect("reply");
            }
        }
        (handed_over, second.reqrep_stats())
    });
    // A DEALER's message into a connection that is going away is lost: send the copy
    // once the DEALER is connected to the successor (its second handshake).
    let mut handshakes = 0;
    while handshakes < 2 {
        let e = events.recv(None).expect("an event");
        if e.kind == lwmq::EventKind::HandshakeSucceeded {
            handshakes += 1;
        }
    }
    dealer.send(request).expect("send the copy");
    let reply = dealer.recv().expect("reply");
    stop.store(true, Ordering::Relaxed);
    let (handed_over, stats) = server.join().expect("server");
    assert_eq!(
        text(&reply),
        "\u{7}\0\0\0++paid",
        "the first reply, from the cache"
    );
    assert!(handed_over.is_empty(), "{handed_over:?}");
    assert_eq!(stats.replies_from_cache, 1);
}

#[test]
fn through_lwmq_proxy_a_slow_rep_handles_each_request_once() {
    let _w = watchdog(GUARD);
    let proxy_ctx = Context::new();
    let front = proxy_ctx.socket(SocketType::Router).expect("router");
    let back = proxy_ctx.socket(SocketType::Dealer).expect("dealer");
    let front_ep = front.bind("tcp://127.0.0.1:0").expect("bind");
    let back_ep = back.bind("tcp://127.0.0.1:0").expect("bind");
    let stopper = proxy_ctx.clone();
    let proxy = std::thread::spawn(move || lwmq::proxy(&front, &back, None));
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).expect("socket");
    rep.connect(&back_ep).expect("connect");
    // Three resend intervals per request.
    let app = slow_rep(rep, Duration::from_millis(300), 3);
    let req = resending_req(&ctx, 100, 20);
    req.connect(&front_ep).expect("connect");
    for i in 0..3 {
        let body = format!("via proxy {i}");
        req.send(body.clone().into_bytes()).expect("send");
        assert_eq!(text(&req.recv().expect("reply")), body);
    }
    let seen = app.join().expect("rep");
    assert_eq!(
        seen,
        ["via proxy 0", "via proxy 1", "via proxy 2"],
        "each handled once"
    );
    assert!(req.reqrep_stats().resends >= 3);
    stopper.terminate();
    assert!(matches!(proxy.join().expect("proxy"), Err(Error::Closed)));
}

#[test]
fn poll_drives_resends_and_reports_giving_up_as_readable() {
    let _w = watchdog(GUARD);
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).expect("socket");
    rep.set_recv_timeout(Some(Duration::from_secs(60)));
    let ep = rep.bind("tcp://127.0.0.1:0").expect("bind");
    let req = resending_req(&ctx, 50, 4);
    req.connect(&ep).expect("connect");
    // Not readable before a request, as any REQ.
    let mut items = [lwmq::PollItem::readable(&req)];
    assert_eq!(
        lwmq::poll(&mut items, Some(Duration::ZERO)).expect("poll"),
        0
    );
    req.send("job").expect("send");
    let _held = rep.recv().expect("request"); // never answered
    // The Lazy Pirate loop, without the resending: poll until readable.
    let mut items = [lwmq::PollItem::readable(&req)];
    assert_eq!(lwmq::poll(&mut items, None).expect("poll"), 1);
    let e = req.recv().unwrap_err();
    assert!(
        matches!(
            e,
            Error::RequestTimeout {
                attempts: 4,
                peers: 1
            }
        ),
        "{e}"
    );
    assert_eq!(req.reqrep_stats().resends, 3);
    req.send("again").expect("a new request");
}
