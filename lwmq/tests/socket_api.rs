//! The Socket API itself: poll, proxy, monitor events, errors a user acts on,
//! endpoints (many per socket, unbind, disconnect), and context termination.
mod common;

use std::time::Duration;

use lwmq::{Context, Error, EventKind, Message, PollItem, SocketType, poll, proxy};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn poll_reports_which_socket_is_ready() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let a = ctx.socket(SocketType::Pull).unwrap();
    let b = ctx.socket(SocketType::Pull).unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    a.bind("inproc://poll-a").unwrap();
    let ep = b.bind("tcp://127.0.0.1:0").unwrap();
    let mut items = [PollItem::readable(&a), PollItem::readable(&b)];
    assert_eq!(poll(&mut items, Some(Duration::ZERO)).unwrap(), 0);
    assert_eq!(
        poll(&mut items, Some(Duration::from_millis(20))).unwrap(),
        0,
        "nothing to read: the timeout passes"
    );
    // Not writable without a peer; writable once connected.
    let mut w = [PollItem::writable(&push)];
    assert_eq!(poll(&mut w, Some(Duration::ZERO)).unwrap(), 0);
    push.connect(&ep).unwrap();
    assert_eq!(poll(&mut w, Some(LONG)).unwrap(), 1);
    assert!(w[0].is_writable());
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            push.send("to b").unwrap();
        });
        let mut items = [PollItem::readable(&a), PollItem::readable(&b)];
        assert_eq!(poll(&mut items, None).unwrap(), 1);
        assert!(!items[0].is_readable());
        assert!(items[1].is_readable());
    });
    // The message poll saw is the one recv returns.
    assert_eq!(b.try_recv().unwrap(), Message::from("to b"));
    // REQ: writable before a request, not after.
    let rep = ctx.socket(SocketType::Rep).unwrap();
    let req = ctx.socket(SocketType::Req).unwrap();
    rep.bind("inproc://poll-req").unwrap();
    req.connect("inproc://poll-req").unwrap();
    let mut r = [PollItem::new(&req, true, true)];
    assert_eq!(poll(&mut r, Some(Duration::ZERO)).unwrap(), 1);
    assert!(r[0].is_writable() && !r[0].is_readable());
    req.send("q").unwrap();
    assert_eq!(poll(&mut r, Some(Duration::ZERO)).unwrap(), 0);
    rep.send(rep.recv().unwrap()).unwrap();
    assert_eq!(poll(&mut r, Some(LONG)).unwrap(), 1);
    assert!(r[0].is_readable());
}

#[test]
fn proxy_forwards_both_ways_with_capture_and_stops_on_terminate() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let front = ctx.socket(SocketType::Router).unwrap();
    let back = ctx.socket(SocketType::Dealer).unwrap();
    let capture = ctx.socket(SocketType::Push).unwrap();
    let tap = ctx.socket(SocketType::Pull).unwrap();
    let front_ep = front.bind("tcp://127.0.0.1:0").unwrap();
    back.bind("inproc://proxy-back").unwrap();
    tap.bind("inproc://proxy-tap").unwrap();
    capture.connect("inproc://proxy-tap").unwrap();
    let worker = ctx.socket(SocketType::Rep).unwrap();
    worker.connect("inproc://proxy-back").unwrap();
    let client = ctx.socket(SocketType::Req).unwrap();
    client.connect(&front_ep).unwrap();
    let stopper = ctx.clone();
    std::thread::scope(|s| {
        let p = s.spawn(|| proxy(&front, &back, Some(&capture)));
        s.spawn(|| {
            for _ in 0..10 {
                let m = worker.recv().unwrap();
                let mut reply = m.clone();
                reply.push(&b"!"[..]);
                worker.send(reply).unwrap();
            }
        });
        for i in 0..10 {
            client.send(format!("job {i}").into_bytes()).unwrap();
            let r = client.recv().unwrap();
            assert_eq!(r.frames()[0], format!("job {i}").as_bytes());
            assert_eq!(r.frames()[1], &b"!"[..]);
        }
        // Twenty messages went through, each copied to the capture socket.
        for _ in 0..20 {
            tap.recv().unwrap();
        }
        stopper.terminate();
        let r = p.join().unwrap();
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    });
}

#[test]
fn monitor_reports_the_life_of_a_connection() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let server = ctx.socket(SocketType::Pull).unwrap();
    let client = ctx.socket(SocketType::Push).unwrap();
    let sm = server.monitor();
    let cm = client.monitor();
    let ep = server.bind("tcp://127.0.0.1:0").unwrap();
    assert_eq!(sm.recv(Some(LONG)).unwrap().kind, EventKind::Listening);
    client.connect(&ep).unwrap();
    for kind in [
        EventKind::ConnectDelayed,
        EventKind::Connected,
        EventKind::HandshakeSucceeded,
    ] {
        let e = cm.wait_for(kind, LONG).unwrap_or_else(|| panic!("{kind}"));
        assert_eq!(e.endpoint, ep);
    }
    sm.wait_for(EventKind::Accepted, LONG).expect("accepted");
    sm.wait_for(EventKind::HandshakeSucceeded, LONG)
        .expect("handshake on the server");
    drop(server);
    let e = cm
        .wait_for(EventKind::Disconnected, LONG)
        .expect("disconnected");
    assert_eq!(e.endpoint, ep);
    let e = cm
        .wait_for(EventKind::ConnectRetried, LONG)
        .expect("retried");
    assert!(e.detail.contains("retry in"), "{}", e.detail);
    assert_eq!(sm.wait_for(EventKind::Closed, LONG).unwrap().endpoint, ep);
    assert_eq!(
        EventKind::HandshakeFailedProtocol.as_str(),
        "handshake-failed-protocol"
    );
}

#[test]
fn reconnect_interval_backs_off_to_the_maximum() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let s = ctx.socket(SocketType::Dealer).unwrap();
    s.set_reconnect_interval(Duration::from_millis(10)).unwrap();
    s.set_reconnect_interval_max(Some(Duration::from_millis(40)));
    let m = s.monitor();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    s.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
    let intervals: Vec<String> = (0..4)
        .map(|_| m.wait_for(EventKind::ConnectRetried, LONG).unwrap().detail)
        .map(|d| d.split_whitespace().nth(2).unwrap().to_owned())
        .collect();
    assert_eq!(intervals, ["10", "20", "40", "40"]);
    assert!(s.set_reconnect_interval(Duration::ZERO).is_err());
}

#[test]
fn errors_a_user_can_act_on() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let a = ctx.socket(SocketType::Pull).unwrap();
    let b = ctx.socket(SocketType::Pull).unwrap();
    let ma = a.monitor();
    let mb = b.monitor();
    let ep = a.bind("tcp://127.0.0.1:0").unwrap();
    match b.bind(&ep) {
        Err(Error::AddressInUse { endpoint }) => assert_eq!(endpoint, ep),
        other => panic!("{other:?}"),
    }
    assert_eq!(mb.recv(Some(LONG)).unwrap().kind, EventKind::BindFailed);
    let path = std::env::temp_dir().join(format!("lwmq-api-{}.sock", std::process::id()));
    let unix = format!("unix://{}", path.display());
    a.bind(&unix).unwrap();
    assert!(matches!(b.bind(&unix), Err(Error::AddressInUse { .. })));
    a.bind("inproc://in-use").unwrap();
    assert!(matches!(
        b.bind("inproc://in-use"),
        Err(Error::AddressInUse { .. })
    ));
    match b.connect("tcp://nowhere") {
        Err(e @ Error::Endpoint { .. }) => assert!(e.to_string().contains("tcp://nowhere")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        b.connect("tcp://*:5"),
        Err(Error::Endpoint { .. })
    ));
    match b.bind("ipc://x:0") {
        Err(e @ Error::Endpoint { .. }) => assert!(e.to_string().contains("ipc://x:0"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        b.unbind("tcp://127.0.0.1:1"),
        Err(Error::Endpoint { .. })
    ));
    // REQ/REP out of turn.
    let req = ctx.socket(SocketType::Req).unwrap();
    let rep = ctx.socket(SocketType::Rep).unwrap();
    assert!(matches!(req.recv(), Err(Error::State(_))));
    assert!(matches!(rep.send("x").unwrap_err().error, Error::State(_)));
    // Options that can fail.
    assert!(req.set_routing_id(vec![0u8, 1]).is_err());
    assert!(req.set_routing_id(Vec::new()).is_err());
    assert!(req.subscribe(b"x").is_err());
    assert!(matches!(a.send("x").unwrap_err().error, Error::State(_)));
    drop(a);
    // Closing is asynchronous: the I/O thread closes the listeners, then says so.
    while ma
        .wait_for(EventKind::Closed, LONG)
        .expect("closed")
        .endpoint
        != unix
    {}
    assert!(!path.exists(), "closing removes the socket file");
}

#[test]
fn oversized_message_drops_the_connection_and_later_ones_arrive() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_max_msg_size(Some(1000));
    let m = pull.monitor();
    let ep = pull.bind("tcp://127.0.0.1:0").unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    let pm = push.monitor();
    push.connect(&ep).unwrap();
    push.send(vec![1u8; 10]).unwrap();
    assert_eq!(pull.recv().unwrap(), Message::from(vec![1u8; 10]));
    push.send(vec![2u8; 5000]).unwrap();
    let e = m.wait_for(EventKind::Disconnected, LONG).expect("dropped");
    assert!(
        e.detail.contains("5000") && e.detail.contains("1000"),
        "{}",
        e.detail
    );
    // Once the sender has seen the connection go too (a message sent before that may
    // be lost with the old connection, as with libzmq), it reconnects and delivers.
    pm.wait_for(EventKind::Disconnected, LONG)
        .expect("the sender notices");
    push.send(vec![3u8; 10]).unwrap();
    assert_eq!(pull.recv().unwrap(), Message::from(vec![3u8; 10]));
}

#[test]
fn many_endpoints_unbind_and_disconnect() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    let tcp = pull.bind("tcp://*:0").unwrap();
    assert!(
        tcp.starts_with("tcp://0.0.0.0:") && !tcp.ends_with(":0"),
        "{tcp}"
    );
    assert_eq!(pull.last_endpoint().as_deref(), Some(tcp.as_str()));
    let port = tcp.rsplit(':').next().unwrap();
    let unix = format!("unix://@lwmq-api-many-{}", std::process::id());
    pull.bind(&unix).unwrap();
    pull.bind("inproc://many").unwrap();
    let eps = [
        format!("tcp://127.0.0.1:{port}"),
        unix.clone(),
        "inproc://many".into(),
    ];
    let pushes: Vec<_> = eps
        .iter()
        .map(|ep| {
            let p = ctx.socket(SocketType::Push).unwrap();
            p.connect(ep).unwrap();
            p.send(ep.clone().into_bytes()).unwrap();
            p
        })
        .collect();
    let mut got: Vec<String> = (0..3)
        .map(|_| String::from_utf8(pull.recv().unwrap().frames()[0].to_vec()).unwrap())
        .collect();
    got.sort();
    let mut want = eps.to_vec();
    want.sort();
    assert_eq!(got, want);
    // Disconnect: the PUSH has no peer left, so sending would block.
    pushes[2].disconnect("inproc://many").unwrap();
    assert!(matches!(
        pushes[2].try_send("x").unwrap_err().error,
        Error::WouldBlock
    ));
    assert!(pushes[2].disconnect("inproc://many").is_err());
    // Unbind (by the name given to bind): new connections are refused.
    let m = pull.monitor();
    pull.unbind("tcp://*:0").unwrap();
    m.wait_for(EventKind::Closed, LONG)
        .expect("listener closed");
    let late = ctx.socket(SocketType::Push).unwrap();
    let lm = late.monitor();
    late.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
    lm.wait_for(EventKind::ConnectRetried, LONG)
        .expect("nobody listens any more");
}

#[test]
fn terminate_wakes_a_blocked_receiver() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.bind("tcp://127.0.0.1:0").unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| pull.recv());
        std::thread::sleep(Duration::from_millis(50));
        ctx.clone().terminate();
        assert!(matches!(h.join().unwrap(), Err(Error::Closed)));
    });
    assert!(matches!(ctx.socket(SocketType::Pull), Err(Error::Closed)));
}

#[test]
fn plain_mechanism_between_lwmq_sockets() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let server = ctx.socket(SocketType::Rep).unwrap();
    server.set_plain_server(true);
    let ep = server.bind("tcp://127.0.0.1:0").unwrap();
    let client = ctx.socket(SocketType::Req).unwrap();
    client.set_plain_client("admin", "secret").unwrap();
    client.connect(&ep).unwrap();
    client.send("hi").unwrap();
    server.send(server.recv().unwrap()).unwrap();
    assert_eq!(client.recv().unwrap(), Message::from("hi"));
    // A NULL client cannot talk to a PLAIN server: a protocol failure, no retry storm.
    let null = ctx.socket(SocketType::Req).unwrap();
    let m = null.monitor();
    null.connect(&ep).unwrap();
    let e = m
        .wait_for(EventKind::HandshakeFailedProtocol, LONG)
        .expect("mechanism mismatch");
    assert!(e.detail.contains("not reconnecting"), "{}", e.detail);
}

#[test]
fn sockets_and_contexts_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<lwmq::Socket>();
    send_sync::<Context>();
    send::<lwmq::Monitor>();
}

#[test]
fn ipv6_and_host_names() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).unwrap();
    let req = ctx.socket(SocketType::Req).unwrap();
    req.set_recv_timeout(Some(LONG));
    let v4 = rep.bind("tcp://127.0.0.1:0").unwrap();
    let port = v4.rsplit(':').next().unwrap().to_owned();
    req.connect(&format!("tcp://localhost:{port}")).unwrap();
    req.send("by name").unwrap();
    rep.send(rep.recv().unwrap()).unwrap();
    assert_eq!(req.recv().unwrap(), Message::from("by name"));
    // IPv6 where the machine has it.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = rep.bind("tcp://[::1]:0").unwrap();
        assert!(v6.starts_with("tcp://[::1]:"), "{v6}");
        let req6 = ctx.socket(SocketType::Req).unwrap();
        req6.set_recv_timeout(Some(LONG));
        req6.connect(&v6).unwrap();
        req6.send("over v6").unwrap();
        rep.send(rep.recv().unwrap()).unwrap();
        assert_eq!(req6.recv().unwrap(), Message::from("over v6"));
    }
}

#[test]
fn xsub_xpub_forwarder_carries_subscriptions_and_data() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let xsub = ctx.socket(SocketType::XSub).unwrap();
    let xpub = ctx.socket(SocketType::XPub).unwrap();
    let publisher = ctx.socket(SocketType::Pub).unwrap();
    let subscriber = ctx.socket(SocketType::Sub).unwrap();
    let up = publisher.bind("tcp://127.0.0.1:0").unwrap();
    xsub.connect(&up).unwrap();
    let down = xpub.bind("tcp://127.0.0.1:0").unwrap();
    subscriber.connect(&down).unwrap();
    subscriber.subscribe(b"news").unwrap();
    subscriber.set_recv_timeout(Some(Duration::from_millis(20)));
    let stopper = ctx.clone();
    std::thread::scope(|s| {
        let p = s.spawn(|| proxy(&xsub, &xpub, None));
        // The subscription travels SUB -> XPUB -> proxy -> XSUB -> PUB.
        loop {
            publisher.send("sports: skipped").unwrap();
            publisher.send("news: probe").unwrap();
            if let Ok(m) = subscriber.recv() {
                assert!(m.frames()[0].starts_with(b"news"), "{m:?}");
                break;
            }
        }
        stopper.terminate();
        assert!(p.join().unwrap().is_err());
    });
}

#[test]
fn immediate_queues_nothing_before_a_connection() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("tcp://127.0.0.1:{port}");
    let queued = ctx.socket(SocketType::Push).unwrap();
    queued.connect(&ep).unwrap();
    queued.try_send("waits for the peer").unwrap();
    let strict = ctx.socket(SocketType::Push).unwrap();
    strict.set_immediate(true);
    strict.connect(&ep).unwrap();
    assert!(matches!(
        strict.try_send("no peer yet").unwrap_err().error,
        Error::WouldBlock
    ));
    // Once a peer is there, both deliver.
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.bind(&ep).unwrap();
    assert_eq!(pull.recv().unwrap(), Message::from("waits for the peer"));
    strict.set_send_timeout(Some(LONG));
    strict.send("now").unwrap();
    assert_eq!(pull.recv().unwrap(), Message::from("now"));
}

/// inproc, connect before bind: messages sent after the bind wake the bound socket at
/// once (its signal is rung), not only when its park times out. Runs in a process of
/// its own whose parks never time out: a binder that is never rung never wakes, and the
/// watchdog fails the test.
#[test]
fn inproc_connect_before_bind_wakes_the_binder() {
    common::in_own_process(
        "inproc_connect_before_bind_wakes_the_binder",
        &[common::PARK_FOREVER],
        || {
            assert_eq!(
                lwmq::shm::wait::max_park(),
                Duration::from_secs(86_400),
                "parks never time out in this process"
            );
            let _w = common::watchdog(Duration::from_secs(120));
            let ctx = Context::new();
            let push = ctx.socket(SocketType::Push).unwrap();
            push.connect("inproc://late-binder").unwrap();
            let pull = ctx.socket(SocketType::Pull).unwrap();
            pull.bind("inproc://late-binder").unwrap();
            std::thread::scope(|s| {
                let receiver = s.spawn(|| {
                    for i in 0..20u8 {
                        assert_eq!(pull.recv().unwrap(), Message::from(vec![i]));
                    }
                });
                for i in 0..20u8 {
                    // Let the receiver park before each message.
                    std::thread::sleep(Duration::from_millis(5));
                    push.send(vec![i]).unwrap();
                }
                receiver.join().unwrap();
            });
        },
    );
}
