//! The background thread's spin (`ContextBuilder::io_spin`) stays within its rules:
//! it never spins for a stream in one direction, nor after a write that came after a
//! gap longer than its window, and an idle context costs no CPU; exchanges work with the
//! spin off, at its default and with a long window. One test in this file, so that
//! the process has one context and one `lwmq-io` thread to watch, whatever runs the
//! tests (`cargo test` runs the tests of one file in one process).
mod common;

use std::time::Duration;

use lwmq::{Context, Message, SocketType};

/// CPU time the thread named `lwmq-io` of this process has used
/// (`/proc/self/task/*/schedstat`, nanoseconds on a CPU).
fn io_thread_cpu() -> Duration {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim() == "lwmq-io" {
            let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap();
            let ns: u64 = stat.split_whitespace().next().unwrap().parse().unwrap();
            found.push(Duration::from_nanos(ns));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "expected one lwmq-io thread, found {found:?}"
    );
    found[0]
}

fn exchange(req: &lwmq::Socket, rep: &lwmq::Socket, i: u32) {
    req.send(Message::from(format!("q{i}").into_bytes()))
        .unwrap();
    let m = rep.recv().unwrap();
    assert_eq!(m.frames()[0], format!("q{i}").as_bytes());
    rep.send(Message::from(format!("a{i}").into_bytes()))
        .unwrap();
    let r = req.recv().unwrap();
    assert_eq!(r.frames()[0], format!("a{i}").as_bytes());
}

#[test]
fn spin_follows_its_rules() {
    let _w = common::watchdog(Duration::from_secs(120));
    // A long window, so that spinning where the rules say it must not would show as
    // far more CPU time than the work itself takes.
    let window = Duration::from_millis(20);
    let ctx = Context::builder().io_spin(window).build();

    // One direction: PUSH -> PULL, a message every 30 ms. The thread writes, but for
    // a socket that never receives, so it must not spin: 10 messages cost far less
    // than the 10 windows (200 ms) that spinning after each would.
    let pull = ctx.socket(SocketType::Pull).unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    let ep = pull.bind("tcp://127.0.0.1:0").unwrap();
    push.connect(&ep).unwrap();
    push.send(Message::from(b"warm-up".to_vec())).unwrap();
    assert_eq!(pull.recv().unwrap().frames()[0], b"warm-up"[..]);
    std::thread::sleep(Duration::from_millis(50));
    let before = io_thread_cpu();
    for i in 0..10u32 {
        push.send(Message::from(i.to_be_bytes().to_vec())).unwrap();
        assert_eq!(pull.recv().unwrap().frames()[0], i.to_be_bytes()[..]);
        std::thread::sleep(Duration::from_millis(30));
    }
    let one_way = io_thread_cpu() - before;
    assert!(
        one_way < Duration::from_millis(100),
        "the background thread used {one_way:?} for 10 one-way messages: it spun"
    );

    // A socket that also receives, writing now and then with no answer coming: a
    // DEALER sends to a ROUTER every 30 ms. Each write comes after a gap longer than
    // the window, so the thread sleeps after it (spinning after each would cost the
    // 10 windows, 200 ms).
    let router = ctx.socket(SocketType::Router).unwrap();
    let dealer = ctx.socket(SocketType::Dealer).unwrap();
    let ep = router.bind("tcp://127.0.0.1:0").unwrap();
    dealer.connect(&ep).unwrap();
    dealer.send(Message::from(b"warm-up".to_vec())).unwrap();
    assert_eq!(router.recv().unwrap().frames()[1], b"warm-up"[..]);
    std::thread::sleep(Duration::from_millis(50));
    let before = io_thread_cpu();
    for i in 0..10u32 {
        dealer
            .send(Message::from(i.to_be_bytes().to_vec()))
            .unwrap();
        assert_eq!(router.recv().unwrap().frames()[1], i.to_be_bytes()[..]);
        std::thread::sleep(Duration::from_millis(30));
    }
    let unanswered = io_thread_cpu() - before;
    assert!(
        unanswered < Duration::from_millis(100),
        "the background thread used {unanswered:?} for 10 sparse DEALER messages: it spun"
    );

    // Request/reply, an exchange every 100 ms (gaps longer than the window): at most
    // one window lost after each burst, never a spin through the whole gap.
    let rep = ctx.socket(SocketType::Rep).unwrap();
    let req = ctx.socket(SocketType::Req).unwrap();
    let ep = rep.bind("tcp://127.0.0.1:0").unwrap();
    req.connect(&ep).unwrap();
    exchange(&req, &rep, 0);
    std::thread::sleep(Duration::from_millis(100));
    let before = io_thread_cpu();
    for i in 1..=5u32 {
        exchange(&req, &rep, i);
        std::thread::sleep(Duration::from_millis(100));
    }
    let sparse = io_thread_cpu() - before;
    assert!(
        sparse < Duration::from_millis(300),
        "the background thread used {sparse:?} for 5 exchanges 100 ms apart: it spun \
         through the gaps (they would cost 500 ms)"
    );

    // Back to back: they all arrive, spinning or not.
    for i in 6..1000u32 {
        exchange(&req, &rep, i);
    }

    // Idle: nothing to do, nothing spent.
    std::thread::sleep(Duration::from_millis(100));
    let before = io_thread_cpu();
    std::thread::sleep(Duration::from_millis(400));
    let idle = io_thread_cpu() - before;
    assert!(
        idle < Duration::from_millis(50),
        "an idle background thread used {idle:?} in 400 ms"
    );
    drop((req, rep, dealer, router, push, pull, ctx));

    // Exchanges work with the spin off, at its default and with a long window (after
    // the measurements: these contexts have background threads of their own).
    for spin in [
        Duration::ZERO,
        Duration::from_micros(50),
        Duration::from_millis(5),
    ] {
        for ep in ["tcp://127.0.0.1:0", "unix://@lwmq-io-spin-test-%"] {
            let ctx = Context::builder().io_spin(spin).introspect(false).build();
            let rep = ctx.socket(SocketType::Rep).unwrap();
            let req = ctx.socket(SocketType::Req).unwrap();
            let ep = ep.replace('%', &format!("{}-{}", std::process::id(), spin.as_micros()));
            let ep = rep.bind(&ep).unwrap();
            req.connect(&ep).unwrap();
            for i in 0..300u32 {
                exchange(&req, &rep, i);
            }
        }
    }
}
