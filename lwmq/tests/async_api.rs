//! The async API (`lwmq::aio`): every pattern over every transport on three executors
//! (tokio's multi-thread and current-thread runtimes, futures-lite's `block_on`);
//! cancellation under load (futures dropped at random points, every message counted);
//! async monitor events; 1,000 sockets awaited on a 2-worker runtime without a thread
//! per socket.
mod common;

use std::future::Future;
use std::os::fd::IntoRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use lwmq::{Context, EventKind, Message, Socket, SocketType};

/// The longest any test here may run before its watchdog aborts the process.
const LIMIT: Duration = Duration::from_secs(120);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    format!(
        "lwmq-async-{}-{tag}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Binds `a` and connects `b` to it over `transport`.
fn link(transport: &str, a: &Socket, b: &Socket) {
    match transport {
        "tcp" => {
            let ep = a.bind("tcp://127.0.0.1:0").unwrap();
            b.connect(&ep).unwrap();
        }
        "unix" => {
            let ep = format!("unix://@{}", unique("u"));
            a.bind(&ep).unwrap();
            b.connect(&ep).unwrap();
        }
        "ipc" => {
            let ep = format!("ipc://{}", unique("i"));
            a.bind(&ep).unwrap();
            b.connect(&ep).unwrap();
        }
        "inproc" => {
            let ep = format!("inproc://{}", unique("p"));
            a.bind(&ep).unwrap();
            b.connect(&ep).unwrap();
        }
        "fd" => {
            // Both sides adopted: a listener made here, and a stream connected to it.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            a.bind(&format!("fd://{}", l.into_raw_fd())).unwrap();
            let s = std::net::TcpStream::connect(addr).unwrap();
            b.connect(&format!("fd://{}", s.into_raw_fd())).unwrap();
        }
        other => panic!("no transport {other}"),
    }
}

/// Runs `f` on the executor named `exec`.
fn run<F: Future<Output = ()>>(exec: &str, f: F) {
    match exec {
        "tokio_multi" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f),
        "tokio_current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f),
        "block_on" => futures_lite::future::block_on(f),
        other => panic!("no executor {other}"),
    }
}

const N: usize = 1000;

fn num(i: usize) -> Message {
    Message::from((i as u64).to_le_bytes().to_vec())
}

fn get(m: &Message, frame: usize) -> usize {
    let f = &m.frames()[frame];
    u64::from_le_bytes(f[..8].try_into().expect("8 bytes")) as usize
}

/// PAIR both ways: `N` one way through a sink and a stream, one back.
async fn pair(transport: String) {
    let ctx = Context::new();
    let a = ctx.socket(SocketType::Pair).unwrap();
    let b = ctx.socket(SocketType::Pair).unwrap();
    link(&transport, &a, &b);
    let send = async {
        let mut sink = a.sink();
        for i in 0..N {
            sink.send(num(i)).await.unwrap();
        }
        sink.close().await.unwrap();
    };
    let recv = async {
        let got: Vec<usize> = b
            .stream()
            .take(N)
            .map(|m| get(&m.unwrap(), 0))
            .collect()
            .await;
        assert_eq!(got, (0..N).collect::<Vec<_>>());
    };
    futures_util::future::join(send, recv).await;
    b.send_async("back").await.unwrap();
    assert_eq!(a.recv_async().await.unwrap().frames()[0], "back");
}

/// PUSH to PULL, `N` messages, with the zero-copy calls.
async fn push_pull(transport: String) {
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    link(&transport, &pull, &push);
    let send = async {
        for i in 0..N {
            push.send_with_async(8, |buf| buf.copy_from_slice(&(i as u64).to_le_bytes()))
                .await
                .unwrap();
        }
    };
    let recv = async {
        for i in 0..N {
            let got = pull
                .recv_with_async(|f| {
                    u64::from_le_bytes(f.frame(0).unwrap()[..8].try_into().unwrap())
                })
                .await
                .unwrap();
            assert_eq!(got as usize, i);
        }
    };
    futures_util::future::join(send, recv).await;
}

/// REQ/REP: 200 requests, each answered.
async fn req_rep(transport: String) {
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).unwrap();
    let req = ctx.socket(SocketType::Req).unwrap();
    link(&transport, &rep, &req);
    const R: usize = 200;
    let client = async {
        for i in 0..R {
            req.send_async(num(i)).await.unwrap();
            assert_eq!(get(&req.recv_async().await.unwrap(), 0), i + 1);
        }
    };
    let server = async {
        for _ in 0..R {
            let m = rep.recv_async().await.unwrap();
            rep.send_async(num(get(&m, 0) + 1)).await.unwrap();
        }
    };
    futures_util::future::join(client, server).await;
}

/// DEALER to ROUTER and back, `N` messages, the router replying by routing id.
async fn dealer_router(transport: String) {
    let ctx = Context::new();
    let router = ctx.socket(SocketType::Router).unwrap();
    let dealer = ctx.socket(SocketType::Dealer).unwrap();
    link(&transport, &router, &dealer);
    let send = async {
        for i in 0..N {
            dealer.send_async(num(i)).await.unwrap();
        }
    };
    let route = async {
        for i in 0..N {
            let m = router.recv_async().await.unwrap();
            assert_eq!(m.frames().len(), 2, "routing id and body");
            assert_eq!(get(&m, 1), i);
            router.send_async(m).await.unwrap();
        }
    };
    let recv = async {
        for i in 0..N {
            assert_eq!(get(&dealer.recv_async().await.unwrap(), 0), i);
        }
    };
    futures_util::future::join3(send, route, recv).await;
}

/// PUB to SUB with a prefix subscription: once a greeting got through, `N` matching
/// and `N` other messages; exactly the matching ones arrive, in order.
async fn pub_sub(transport: String) {
    let ctx = Context::new();
    let publ = ctx.socket(SocketType::Pub).unwrap();
    let sub = ctx.socket(SocketType::Sub).unwrap();
    publ.set_send_hwm(0);
    sub.set_recv_hwm(0);
    sub.subscribe(b"t").unwrap();
    link(&transport, &publ, &sub);
    let heard = std::sync::atomic::AtomicBool::new(false);
    let send = async {
        while !heard.load(Ordering::Acquire) {
            publ.send_async("t-hello").await.unwrap();
            futures_lite::future::yield_now().await;
        }
        for i in 0..N {
            publ.send_async(Message::from(vec![
                lwmq::Bytes::from_static(b"x"),
                lwmq::Bytes::copy_from_slice(&(i as u64).to_le_bytes()),
            ]))
            .await
            .unwrap();
            publ.send_async(Message::from(vec![
                lwmq::Bytes::from_static(b"t"),
                lwmq::Bytes::copy_from_slice(&(i as u64).to_le_bytes()),
            ]))
            .await
            .unwrap();
        }
    };
    let recv = async {
        let mut next = 0;
        while next < N {
            let m = sub.recv_async().await.unwrap();
            if m.frames()[0] == "t-hello" {
                heard.store(true, Ordering::Release);
                continue;
            }
            assert_eq!(m.frames()[0], "t", "filtered by prefix");
            assert_eq!(get(&m, 1), next);
            next += 1;
        }
    };
    futures_util::future::join(send, recv).await;
}

/// XPUB to XSUB: the XSUB's subscription reaches the XPUB as a message (its
/// `recv_async`), and from then on exactly the matching messages reach the XSUB, in
/// order.
async fn xpub_xsub(transport: String) {
    let ctx = Context::new();
    let xpub = ctx.socket(SocketType::XPub).unwrap();
    let xsub = ctx.socket(SocketType::XSub).unwrap();
    xpub.set_send_hwm(0);
    xsub.set_recv_hwm(0);
    link(&transport, &xpub, &xsub);
    xsub.send_async(Message::from(vec![1u8, b't']))
        .await
        .unwrap();
    let subscription = xpub.recv_async().await.unwrap();
    assert_eq!(subscription.frames()[0], [1u8, b't'][..]);
    let send = async {
        for i in 0..N {
            for topic in [&b"x"[..], &b"t"[..]] {
                xpub.send_async(Message::from(vec![
                    lwmq::Bytes::copy_from_slice(topic),
                    lwmq::Bytes::copy_from_slice(&(i as u64).to_le_bytes()),
                ]))
                .await
                .unwrap();
            }
        }
    };
    let recv = async {
        for next in 0..N {
            let m = xsub.recv_async().await.unwrap();
            assert_eq!(m.frames()[0], "t", "filtered by the subscription");
            assert_eq!(get(&m, 1), next);
        }
    };
    futures_util::future::join(send, recv).await;
}

macro_rules! every {
    ($($transport:ident),*) => {
        $(
            mod $transport {
                use super::*;
                every!(@patterns $transport, pair, push_pull, req_rep, dealer_router, pub_sub, xpub_xsub);
            }
        )*
    };
    (@patterns $transport:ident, $($pattern:ident),*) => {
        $(
            mod $pattern {
                use super::*;
                every!(@execs $transport, $pattern, tokio_multi, tokio_current, block_on);
            }
        )*
    };
    (@execs $transport:ident, $pattern:ident, $($exec:ident),*) => {
        $(
            #[test]
            fn $exec() {
                let _w = common::watchdog(LIMIT);
                run(stringify!($exec), super::super::$pattern(stringify!($transport).to_owned()));
            }
        )*
    };
}

every!(tcp, unix, ipc, inproc, fd);

/// A tiny pseudo-random sequence (xorshift), seeded per test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Polls `f` up to `polls` times with a waker that does nothing, yielding to the
/// executor in between; returns its output if it completed, dropping it otherwise.
async fn poll_a_few<F: Future + Unpin>(mut f: F, polls: u64) -> Option<F::Output> {
    for _ in 0..polls {
        let ready =
            std::future::poll_fn(|cx: &mut TaskContext<'_>| Poll::Ready(Pin::new(&mut f).poll(cx)))
                .await;
        if let Poll::Ready(v) = ready {
            return Some(v);
        }
        futures_lite::future::yield_now().await;
    }
    None
}

/// Receive futures dropped at random points (after 0 to 3 polls, or by a timeout of
/// 0 to 30 µs) while a thread pushes `M` messages as fast as it can: every message
/// arrives once, in order.
fn cancelled_receives(transport: &str, seed: u64) {
    let _w = common::watchdog(LIMIT);
    const M: usize = 20_000;
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    link(transport, &pull, &push);
    let sender = std::thread::spawn(move || {
        for i in 0..M {
            push.send(num(i)).unwrap();
        }
        push
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (got, dropped) = rt.block_on(async {
        let mut rng = Rng(seed);
        let (mut got, mut dropped) = (Vec::with_capacity(M), 0usize);
        while got.len() < M {
            let m = match rng.below(3) {
                0 => poll_a_few(pull.recv_async(), rng.below(4)).await,
                1 => tokio::time::timeout(Duration::from_micros(rng.below(30)), pull.recv_async())
                    .await
                    .ok(),
                _ => Some(pull.recv_async().await),
            };
            match m {
                Some(m) => got.push(get(&m.unwrap(), 0)),
                None => dropped += 1,
            }
        }
        (got, dropped)
    });
    drop(sender.join().unwrap());
    assert!(dropped > 0, "some futures were dropped before completing");
    assert_eq!(
        got,
        (0..M).collect::<Vec<_>>(),
        "none lost, none duplicated"
    );
    assert!(pull.try_recv().is_err(), "nothing more");
}

/// Send futures dropped at random points against a small high-water mark (so sends
/// really wait): a dropped one sent nothing, and sending that number again is what a
/// caller does; the receiver sees every number once, in order.
fn cancelled_sends(transport: &str, seed: u64) {
    let _w = common::watchdog(LIMIT);
    const M: usize = 5_000;
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    pull.set_recv_hwm(4);
    push.set_send_hwm(4);
    push.set_ipc_ring_size(4096);
    link(transport, &pull, &push);
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(M);
        for k in 0..M {
            got.push(get(&pull.recv().unwrap(), 0));
            if k % 64 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        (got, pull)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dropped = rt.block_on(async {
        let mut rng = Rng(seed);
        let mut dropped = 0usize;
        let mut i = 0;
        while i < M {
            let sent = match rng.below(3) {
                0 => poll_a_few(push.send_async(num(i)), rng.below(4)).await,
                1 => tokio::time::timeout(
                    Duration::from_micros(rng.below(50)),
                    push.send_async(num(i)),
                )
                .await
                .ok(),
                _ => Some(push.send_async(num(i)).await),
            };
            match sent {
                Some(r) => {
                    r.unwrap();
                    i += 1;
                }
                None => dropped += 1,
            }
        }
        dropped
    });
    let (got, pull) = receiver.join().unwrap();
    assert!(dropped > 0, "some futures were dropped before completing");
    assert_eq!(
        got,
        (0..M).collect::<Vec<_>>(),
        "none lost, none duplicated"
    );
    assert!(pull.try_recv().is_err(), "nothing more");
}

mod cancellation {
    use super::*;

    #[test]
    fn receives_over_tcp() {
        cancelled_receives("tcp", 0x9e37_79b9_7f4a_7c15);
    }

    #[test]
    fn receives_over_ipc() {
        cancelled_receives("ipc", 0x2545_f491_4f6c_dd1d);
    }

    #[test]
    fn receives_over_inproc() {
        cancelled_receives("inproc", 0x1234_5678_9abc_def1);
    }

    #[test]
    fn sends_over_tcp() {
        cancelled_sends("tcp", 0x5851_f42d_4c95_7f2d);
    }

    #[test]
    fn sends_over_ipc() {
        cancelled_sends("ipc", 0x1405_7b7e_f767_814f);
    }

    #[test]
    fn sends_over_inproc() {
        cancelled_sends("inproc", 0x6c62_272e_07bb_0142);
    }

    /// A `select!` that drops the losing receive every time: the messages of both
    /// sockets all arrive, once each.
    #[test]
    fn select_between_two_sockets_loses_nothing() {
        let _w = common::watchdog(LIMIT);
        const M: usize = 2_000;
        let ctx = Context::new();
        let (a, b) = (
            ctx.socket(SocketType::Pull).unwrap(),
            ctx.socket(SocketType::Pull).unwrap(),
        );
        let (pa, pb) = (
            ctx.socket(SocketType::Push).unwrap(),
            ctx.socket(SocketType::Push).unwrap(),
        );
        link("tcp", &a, &pa);
        link("ipc", &b, &pb);
        let senders: Vec<_> = [pa, pb]
            .into_iter()
            .map(|p| {
                std::thread::spawn(move || {
                    for i in 0..M {
                        p.send(num(i)).unwrap();
                    }
                    p
                })
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (ga, gb) = rt.block_on(async {
            let (mut ga, mut gb) = (Vec::new(), Vec::new());
            while ga.len() < M || gb.len() < M {
                tokio::select! {
                    m = a.recv_async(), if ga.len() < M => ga.push(get(&m.unwrap(), 0)),
                    m = b.recv_async(), if gb.len() < M => gb.push(get(&m.unwrap(), 0)),
                }
            }
            (ga, gb)
        });
        for s in senders {
            drop(s.join().unwrap());
        }
        assert_eq!(ga, (0..M).collect::<Vec<_>>());
        assert_eq!(gb, (0..M).collect::<Vec<_>>());
    }
}

/// Monitor events, awaited: `listening` on bind, `accepted` and
/// `handshake-succeeded` once a peer connects; the stream ends when the socket goes.
#[test]
fn monitor_events_async() {
    let _w = common::watchdog(LIMIT);
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).unwrap();
    let mut mon = rep.monitor();
    run("tokio_current", async move {
        let ep = rep.bind("tcp://127.0.0.1:0").unwrap();
        assert_eq!(mon.recv_async().await.unwrap().kind, EventKind::Listening);
        let ctx2 = Context::new();
        let req = ctx2.socket(SocketType::Req).unwrap();
        req.connect(&ep).unwrap();
        let mut kinds = Vec::new();
        while !kinds.contains(&EventKind::HandshakeSucceeded) {
            kinds.push(mon.next().await.expect("an event").kind);
        }
        assert!(kinds.contains(&EventKind::Accepted), "{kinds:?}");
        drop(rep);
        drop(ctx);
        // Everything queued before the socket went, then the end.
        while mon.next().await.is_some() {}
    });
}

/// A REQ with resend, awaited: its resend is due while the future sleeps (the
/// context's watcher wakes it: nothing else rings the socket), and the reply to the
/// resent request completes it.
#[test]
fn req_resend_wakes_the_future() {
    let _w = common::watchdog(LIMIT);
    let ctx = Context::new();
    // A ROUTER that plays a REP losing its first reply: it answers the second copy.
    let rep = ctx.socket(SocketType::Router).unwrap();
    let req = ctx.socket(SocketType::Req).unwrap();
    req.set_req_resend_interval(Some(Duration::from_millis(50)))
        .unwrap();
    req.set_req_resend_attempts(20).unwrap();
    link("tcp", &rep, &req);
    let server = std::thread::spawn(move || {
        let first = rep.recv().unwrap();
        let again = rep.recv().unwrap();
        assert_eq!(first.frames(), again.frames(), "the same request, resent");
        rep.send(again).unwrap();
        rep
    });
    run("tokio_current", async move {
        req.send_async("once").await.unwrap();
        assert_eq!(req.recv_async().await.unwrap().frames()[0], "once");
        assert!(req.reqrep_stats().resends >= 1);
    });
    drop(server.join().unwrap());
}

/// Closing the context wakes a future that waits, with `Closed`, and ends a stream.
#[test]
fn terminate_wakes_waiting_futures() {
    let _w = common::watchdog(LIMIT);
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    link("ipc", &pull, &ctx.socket(SocketType::Push).unwrap());
    let c2 = ctx.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        c2.terminate();
    });
    run("block_on", async move {
        assert!(matches!(pull.recv_async().await, Err(lwmq::Error::Closed)));
        assert!(pull.stream().next().await.is_none());
    });
    t.join().unwrap();
}

/// How many threads this process has now.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// 1,000 sockets (200 tcp pairs, 200 inproc pairs, 100 ipc pairs), every one with a
/// receive pending on a 2-worker tokio runtime, then all answered: the process gains
/// a handful of threads (workers, the context's background and watcher threads), not
/// one per socket. In a process of its own, so other tests' threads do not count.
#[test]
fn thousand_sockets_without_a_thread_each() {
    common::in_own_process(
        "thousand_sockets_without_a_thread_each",
        &[("LWMQ_INTROSPECT", "0")],
        || {
            let _w = common::watchdog(LIMIT);
            let before = threads();
            let ctx = Context::new();
            let mut pairs = Vec::new();
            for (transport, n) in [("tcp", 200), ("inproc", 200), ("ipc", 100)] {
                for _ in 0..n {
                    let a = ctx.socket(SocketType::Pair).unwrap();
                    let b = ctx.socket(SocketType::Pair).unwrap();
                    a.set_ipc_ring_size(4096);
                    b.set_ipc_ring_size(4096);
                    link(transport, &a, &b);
                    pairs.push((std::sync::Arc::new(a), std::sync::Arc::new(b)));
                }
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let pending = std::sync::Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for (a, b) in &pairs {
                for s in [a.clone(), b.clone()] {
                    let pending = pending.clone();
                    tasks.push(rt.spawn(async move {
                        let mut f = std::pin::pin!(s.recv_async());
                        // Polled once (pending), counted, then awaited.
                        let first =
                            std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await;
                        assert!(first.is_pending(), "nothing was sent yet");
                        pending.fetch_add(1, Ordering::SeqCst);
                        f.await.unwrap()
                    }));
                }
            }
            while pending.load(Ordering::SeqCst) < 1000 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let during = threads();
            for (a, b) in &pairs {
                a.send("to b").unwrap();
                b.send("to a").unwrap();
            }
            rt.block_on(async {
                for t in tasks {
                    let m = t.await.unwrap();
                    assert!(m.frames()[0] == "to a" || m.frames()[0] == "to b");
                }
            });
            assert!(
                during - before < 16,
                "1,000 pending receives: {before} threads before, {during} during"
            );
        },
    );
}

/// The futures, streams and sinks can move between a multi-thread runtime's workers
/// (a compile-time check: `tokio::spawn` needs `Send`).
#[test]
fn futures_are_send() {
    fn send<T: Send>(_: T) {}
    let ctx = Context::new();
    let s = ctx.socket(SocketType::Pair).unwrap();
    let mon = s.monitor();
    send(s.recv_async());
    send(s.send_async("x"));
    send(s.recv_with_async(|f| f.len()));
    send(s.send_with_async(1, |b| b[0] = 1));
    send(s.stream());
    send(s.sink());
    send(mon.recv_async());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _w = common::watchdog(LIMIT);
    // A monitor awaited inside a spawned task sees the socket's bind.
    let task = rt.spawn(async move { mon.recv_async().await.map(|e| e.kind) });
    s.bind("tcp://127.0.0.1:0").unwrap();
    assert_eq!(rt.block_on(task).unwrap(), Some(EventKind::Listening));
}
