//! Reliable request/reply against libzmq (pyzmq 4.3.5 peers, `tests/py/reqrep_peer.py`):
//! lwmq REQ with resend against libzmq REPs (at least once, with failover), libzmq
//! requesters against an lwmq REP (plain REQ as libzmq's REP; request ids
//! de-duplicated), and both through a libzmq ROUTER/DEALER proxy.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::peer::Peer;
use common::{spawn_py, watchdog};
use lwmq::{Context, Message, Socket, SocketType};

const GUARD: Duration = Duration::from_secs(120);

fn py(args: &[&str]) -> Peer {
    Peer::from_child(spawn_py("reqrep_peer.py", args))
}

fn text(m: &Message) -> String {
    m.frames()
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect::<Vec<_>>()
        .join("+")
}

fn resending_req(ctx: &Context, interval_ms: u64) -> Socket {
    let req = ctx.socket(SocketType::Req).expect("socket");
    req.set_req_resend_interval(Some(Duration::from_millis(interval_ms)))
        .expect("resend");
    req.set_req_resend_attempts(20).expect("attempts");
    req.set_recv_timeout(Some(Duration::from_secs(60)));
    req.set_send_timeout(Some(Duration::from_secs(60)));
    req
}

/// An lwmq REP on a thread: answers `body` with `body|n` (n: how many times its
/// application saw that body), taking `delay` per request, until `stop` is set (so
/// that copies still coming are answered from the cache); returns the socket's stats
/// and the bodies its application handled.
fn lwmq_rep(
    rep: Socket,
    delay: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(lwmq::ReqRepStats, Vec<String>)> {
    std::thread::spawn(move || {
        rep.set_recv_timeout(Some(Duration::from_millis(50)));
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let Ok(m) = rep.recv() else { continue };
            let body = text(&m);
            seen.push(body.clone());
            let n = seen.iter().filter(|b| **b == body).count();
            std::thread::sleep(delay);
            rep.send(format!("{body}|{n}").into_bytes()).expect("reply");
        }
        (rep.reqrep_stats(), seen)
    })
}

#[test]
fn lwmq_req_with_resend_against_libzmq_reps_fails_over() {
    let _w = watchdog(GUARD);
    let mut hang = py(&["rep-hang", "tcp://127.0.0.1:0"]);
    let hang_ep = hang.expect("ENDPOINT");
    let ctx = Context::new();
    let req = resending_req(&ctx, 200);
    req.connect(&hang_ep).expect("connect");
    // Only the hanging libzmq REP is up: it gets the request and never answers.
    req.send("job").expect("send");
    assert!(hang.expect("GOT").ends_with("job"));
    let mut echo = py(&["rep", "tcp://127.0.0.1:0"]);
    let echo_ep = echo.expect("ENDPOINT");
    req.connect(&echo_ep).expect("connect");
    // libzmq's REP echoes the request id frame in its envelope: the reply is matched.
    assert_eq!(text(&req.recv().expect("reply")), "job+|py");
    let s = req.reqrep_stats();
    assert!(s.resends >= 1 && s.failovers >= 1, "{s:?}");
    // With the hanging REP gone, exchanges go on with the other.
    hang.kill9();
    for i in 0..50 {
        let body = format!("r{i}");
        req.send(body.clone().into_bytes()).expect("send");
        assert_eq!(text(&req.recv().expect("reply")), format!("{body}+|py"));
    }
}

#[test]
fn libzmq_plain_req_gets_libzmq_rep_behaviour() {
    let _w = watchdog(GUARD);
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).expect("socket");
    let ep = rep.bind("tcp://127.0.0.1:0").expect("bind");
    // Echo: the plain REQ expects its body back unchanged.
    let echo = std::thread::spawn(move || {
        rep.set_recv_timeout(Some(Duration::from_secs(60)));
        for _ in 0..5 {
            let m = rep.recv().expect("request");
            rep.send(m).expect("reply");
        }
        rep.reqrep_stats()
    });
    let mut client = py(&["req-plain", &ep, "5"]);
    assert_eq!(client.expect("OK"), "");
    // Five identical requests without ids: all five reached the application.
    let s = echo.join().expect("rep");
    assert_eq!((s.replies_from_cache, s.duplicates_dropped), (0, 0));
}

#[test]
fn libzmq_correlating_requesters_are_deduplicated() {
    let _w = watchdog(GUARD);
    let ctx = Context::new();
    // REQ_CORRELATE: request ids, each request once.
    let rep = ctx.socket(SocketType::Rep).expect("socket");
    let ep = rep.bind("tcp://127.0.0.1:0").expect("bind");
    let echo = std::thread::spawn(move || {
        rep.set_recv_timeout(Some(Duration::from_secs(60)));
        for _ in 0..10 {
            let m = rep.recv().expect("request");
            rep.send(m).expect("reply");
        }
    });
    let mut client = py(&["req-correlate", &ep, "10"]);
    assert_eq!(client.expect("OK"), "");
    echo.join().expect("rep");

    // A libzmq DEALER sends one request with an id twice: the second copy is answered
    // from the cache, the application saw it once.
    let rep = ctx.socket(SocketType::Rep).expect("socket");
    let ep = rep.bind("tcp://127.0.0.1:0").expect("bind");
    let stop = Arc::new(AtomicBool::new(false));
    let app = lwmq_rep(rep, Duration::ZERO, stop.clone());
    let mut dealer = py(&["dealer-dup", &ep]);
    assert_eq!(dealer.expect("OK"), "dup|1");
    stop.store(true, Ordering::Relaxed);
    let (stats, seen) = app.join().expect("rep");
    assert_eq!(seen, vec!["dup"]);
    assert_eq!(stats.replies_from_cache, 1, "{stats:?}");
}

#[test]
fn through_a_libzmq_proxy_a_slow_rep_handles_each_request_once() {
    let _w = watchdog(GUARD);
    let mut proxy = py(&["proxy", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0"]);
    let front = proxy.expect("FRONT");
    let back = proxy.expect("BACK");
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).expect("socket");
    rep.connect(&back).expect("connect");
    // Three resend intervals per request: copies come through the proxy meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let app = lwmq_rep(rep, Duration::from_millis(600), stop.clone());
    let req = resending_req(&ctx, 200);
    req.connect(&front).expect("connect");
    for i in 0..3 {
        let body = format!("p{i}");
        req.send(body.clone().into_bytes()).expect("send");
        assert_eq!(text(&req.recv().expect("reply")), format!("{body}|1"));
    }
    stop.store(true, Ordering::Relaxed);
    let (stats, seen) = app.join().expect("rep");
    assert_eq!(
        seen,
        vec!["p0", "p1", "p2"],
        "each request reached the application once"
    );
    assert!(
        stats.duplicates_dropped + stats.replies_from_cache >= 3,
        "the copies were recognised through the proxy's envelope: {stats:?}"
    );
    assert!(req.reqrep_stats().resends >= 3);
}
