//! Messages larger than a shared-memory ring over `ipc://`, with default options
//! (1 MiB rings): one-frame and five-frame messages of 1 MiB, 16 MiB and 256 MiB arrive
//! intact, both directions, for every pattern that carries them. They travel in pieces
//! through the ring (`shm::ring`); the sender writes from its own thread, the receiver
//! reads on another.
//!
//! Memory: each size's buffer is made once and shared by both shapes and the sender;
//! the receiver holds one message at a time, so at most about three copies of the
//! largest (768 MiB) are alive per test.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::big::{check, shapes};
use common::watchdog;
use lwmq::{Context, Message, Socket, SocketType};

const SIZES: [usize; 3] = [1 << 20, 16 << 20, 256 << 20];
/// Deadlock guard for single waits (not a speed assertion).
const GUARD: Duration = Duration::from_secs(600);
/// For the whole test.
const WATCHDOG: Duration = Duration::from_secs(1200);

fn unique(test: &str) -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut d = format!(
        "L{}-{}-{test}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    d.truncate(48);
    (d, format!("ipc://large-{test}"))
}

fn socket(ctx: &Context, ty: SocketType, domain: &str) -> Socket {
    let s = ctx.socket(ty).expect("socket");
    s.set_ipc_domain(domain);
    s.set_recv_timeout(Some(GUARD));
    s.set_send_timeout(Some(GUARD));
    s
}

/// Every message of every size, in order, as (what, message).
fn each_message(mut f: impl FnMut(&str, Message)) {
    for (k, size) in SIZES.into_iter().enumerate() {
        for (j, m) in shapes(size, k as u64 + 100).into_iter().enumerate() {
            f(&format!("{size} bytes, shape {j}"), m);
        }
    }
}

/// Sends every message from `tx` (on its own thread, back to back) and receives them
/// on `rx` (this thread), through `recv`, which returns a message's payload frames.
/// The sender is closed once everything arrived (closing it right after its last
/// send is `closing_right_after_sending_still_delivers`).
fn one_way(tx: Socket, rx: &Socket, recv: impl Fn(&Socket) -> Message) {
    let (to_check, expected) = mpsc::sync_channel::<(String, Message)>(1);
    let tx = std::thread::scope(|s| {
        let sender = s.spawn(move || {
            each_message(|what, m| {
                tx.send(m.clone()).expect("send");
                // Bounded (one message ahead): the receiver checks against it.
                to_check.send((what.to_owned(), m)).expect("receiver alive");
            });
            tx
        });
        while let Ok((what, want)) = expected.recv() {
            let got = recv(rx);
            check(&got, &want, &what);
        }
        sender.join().expect("sender")
    });
    drop(tx);
}

#[test]
fn push_pull_both_directions() {
    let _w = watchdog(WATCHDOG);
    let (domain, ep) = unique("push-pull");
    let ctx = Context::new();
    // Connecting PUSH -> bound PULL.
    let pull = socket(&ctx, SocketType::Pull, &domain);
    pull.bind(&ep).unwrap();
    let push = socket(&ctx, SocketType::Push, &domain);
    push.connect(&ep).unwrap();
    one_way(push, &pull, |s| s.recv().expect("recv"));
    drop(pull);
    // Bound PUSH -> connecting PULL.
    let ep2 = format!("{ep}:2");
    let push = socket(&ctx, SocketType::Push, &domain);
    push.bind(&ep2).unwrap();
    let pull = socket(&ctx, SocketType::Pull, &domain);
    pull.connect(&ep2).unwrap();
    one_way(push, &pull, |s| s.recv().expect("recv"));
}

#[test]
fn closing_right_after_sending_still_delivers() {
    // The sender closes while its message is still going in pieces: the rest is
    // written during the linger (default 2 s), from the bound side and from the
    // connecting side.
    let _w = watchdog(WATCHDOG);
    let (domain, ep) = unique("linger");
    let ctx = Context::new();
    for (i, push_binds) in [true, false].into_iter().enumerate() {
        let ep = format!("{ep}:{}", i + 1);
        let pull = socket(&ctx, SocketType::Pull, &domain);
        let push = socket(&ctx, SocketType::Push, &domain);
        if push_binds {
            push.bind(&ep).unwrap();
            pull.connect(&ep).unwrap();
            // Wait for the connection: a bound PUSH with no peer has nobody to send to.
            push.send("hello").unwrap();
            assert_eq!(pull.recv().unwrap(), Message::from("hello"));
        } else {
            pull.bind(&ep).unwrap();
            push.connect(&ep).unwrap();
        }
        let [one, multi] = shapes(16 << 20, 7 + i as u64);
        let sender = std::thread::spawn(move || {
            push.send(one.clone()).unwrap();
            push.send(multi.clone()).unwrap();
            drop(push);
            [one, multi]
        });
        let got = [pull.recv().unwrap(), pull.recv().unwrap()];
        let want = sender.join().unwrap();
        check(&got[0], &want[0], "one frame");
        check(&got[1], &want[1], "five frames");
    }
}

#[test]
fn pair_both_directions() {
    let _w = watchdog(WATCHDOG);
    let (domain, ep) = unique("pair");
    let ctx = Context::new();
    let a = socket(&ctx, SocketType::Pair, &domain);
    a.bind(&ep).unwrap();
    let b = socket(&ctx, SocketType::Pair, &domain);
    b.connect(&ep).unwrap();
    // b -> a on b's thread, then a -> b on a's.
    std::thread::scope(|s| {
        let a = &a;
        s.spawn(move || {
            one_way(b, a, |s| s.recv().expect("recv"));
        });
    });
    let b = socket(&ctx, SocketType::Pair, &domain);
    let ep2 = format!("{ep}:2");
    b.bind(&ep2).unwrap();
    a.connect(&ep2).unwrap();
    one_way(a, &b, |s| s.recv().expect("recv"));
}

#[test]
fn req_rep_requests_and_replies() {
    let _w = watchdog(WATCHDOG);
    let (domain, ep) = unique("req-rep");
    let ctx = Context::new();
    let rep = socket(&ctx, SocketType::Rep, &domain);
    rep.bind(&ep).unwrap();
    let req = socket(&ctx, SocketType::Req, &domain);
    req.connect(&ep).unwrap();
    let rep = std::thread::scope(|s| {
        let server = s.spawn(move || {
            // Each request is answered with the next message (the last with the first).
            let mut all = Vec::new();
            each_message(|what, m| all.push((what.to_owned(), m)));
            for i in 0..all.len() {
                let got = rep.recv().expect("request");
                check(&got, &all[i].1, &all[i].0);
                let (what, reply) = &all[(i + 1) % all.len()];
                rep.send(reply.clone())
                    .unwrap_or_else(|e| panic!("reply {what}: {e:?}"));
            }
            rep
        });
        let mut all = Vec::new();
        each_message(|what, m| all.push((what.to_owned(), m)));
        for i in 0..all.len() {
            req.send(all[i].1.clone()).expect("request");
            let (what, want) = &all[(i + 1) % all.len()];
            let got = req.recv().expect("reply");
            check(&got, want, &format!("reply {what}"));
        }
        server.join().expect("server")
    });
    drop(rep);
}

#[test]
fn dealer_router_both_directions() {
    let _w = watchdog(WATCHDOG);
    let (domain, ep) = unique("dealer-router");
    let ctx = Context::new();
    let router = socket(&ctx, SocketType::Router, &domain);
    router.bind(&ep).unwrap();
    let dealer = socket(&ctx, SocketType::Dealer, &domain);
    dealer.set_routing_id("dealer-1").unwrap();
    dealer.connect(&ep).unwrap();
    // Dealer -> router: the router sees the dealer's id first.
    let strip = |s: &Socket| {
        let m = s.recv().expect("recv");
        assert_eq!(&m.frames()[0][..], b"dealer-1", "the routing id");
        Message::from_frames(m.frames()[1..].iter().cloned())
    };
    one_way(dealer, &router, strip);
    // Router -> dealer (the first dealer was moved into `one_way` and is closed now:
    // another one connects).
    let dealer = socket(&ctx, SocketType::Dealer, &domain);
    dealer.set_routing_id("dealer-2").unwrap();
    dealer.connect(&ep).unwrap();
    // The router learns of the new peer when it hears from it.
    dealer.send("hello").unwrap();
    let hello = router.recv().unwrap();
    assert_eq!(&hello.frames()[0][..], b"dealer-2");
    let (to_check, expected) = mpsc::sync_channel::<(String, Message)>(1);
    let router = std::thread::scope(|s| {
        let sender = s.spawn(move || {
            each_message(|what, m| {
                let mut routed = m.clone();
                routed.push_front(lwmq::Bytes::from_static(b"dealer-2"));
                router.send(routed).expect("send");
                to_check.send((what.to_owned(), m)).expect("receiver alive");
            });
            router
        });
        while let Ok((what, want)) = expected.recv() {
            let got = dealer.recv().expect("recv");
            check(&got, &want, &what);
        }
        sender.join().expect("sender")
    });
    drop(router);
}

/// Waits until `sub` hears `publish` (subscriptions travel to the PUB first).
fn joined(publish: &Socket, sub: &Socket) {
    sub.set_recv_timeout(Some(Duration::from_millis(20)));
    for _ in 0..3000 {
        publish.send("probe").unwrap();
        if sub.recv().is_ok() {
            sub.set_recv_timeout(Some(GUARD));
            return;
        }
    }
    panic!("the subscriber never heard the publisher");
}

/// Receives the next message that is not a probe.
fn not_probe(sub: &Socket) -> Message {
    loop {
        let m = sub.recv().expect("recv");
        if m.frames().len() != 1 || m.frames()[0][..] != b"probe"[..] {
            return m;
        }
    }
}

#[test]
fn pub_sub_both_directions() {
    let _w = watchdog(WATCHDOG);
    let (domain, ep) = unique("pub-sub");
    let ctx = Context::new();
    // Bound PUB -> connecting SUB, then connecting PUB -> bound SUB. A PUB drops what
    // its peer's ring has no room for (as libzmq's PUB drops at the HWM), so the
    // sender waits for each message to arrive before the next (`one_way`'s channel
    // holds one).
    for (i, pub_binds) in [true, false].into_iter().enumerate() {
        let ep = format!("{ep}:{}", i + 1);
        let publish = socket(&ctx, SocketType::Pub, &domain);
        let sub = socket(&ctx, SocketType::Sub, &domain);
        sub.subscribe(b"").unwrap();
        if pub_binds {
            publish.bind(&ep).unwrap();
            sub.connect(&ep).unwrap();
        } else {
            sub.bind(&ep).unwrap();
            publish.connect(&ep).unwrap();
        }
        joined(&publish, &sub);
        let (to_check, expected) = mpsc::sync_channel::<(String, Message)>(0);
        let (ack, acked) = mpsc::sync_channel::<()>(0);
        std::thread::scope(|s| {
            s.spawn(move || {
                each_message(|what, m| {
                    publish.send(m.clone()).expect("send");
                    to_check.send((what.to_owned(), m)).expect("receiver alive");
                    acked.recv().expect("receiver alive");
                });
                // Closed only after the last one arrived (the ack).
                drop(publish);
            });
            while let Ok((what, want)) = expected.recv() {
                let got = not_probe(&sub);
                check(&got, &want, &what);
                ack.send(()).expect("sender alive");
            }
        });
    }
}
