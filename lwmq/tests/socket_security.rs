//! CURVE, PLAIN and ZAP between lwmq sockets: the options, the context's ZAP handler
//! (`auth::Authenticator`), the user id on received messages, and what a failed
//! authentication reports and how it is retried. Interop with libzmq is in
//! `interop_security.rs`.
mod common;

use std::time::Duration;

use lwmq::auth::{Authenticator, Credentials, ZapReply, ZapRequest};
use lwmq::{Context, CurveKeyPair, Error, EventKind, Message, MonitorEvent, SocketType};

const GUARD: Duration = Duration::from_secs(30);

/// Every event that arrives within `window`.
fn events_for(mon: &lwmq::Monitor, window: Duration) -> Vec<MonitorEvent> {
    let end = std::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        match mon.recv(Some(left)) {
            Some(e) => out.push(e),
            None => break,
        }
    }
    out
}

/// The intervals `connect-retried` announced, in ms.
fn retry_intervals(events: &[MonitorEvent]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::ConnectRetried)
        .filter_map(|e| {
            e.detail
                .strip_prefix("retry in ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn curve_with_an_authenticator_lets_the_allowed_key_in_and_names_it() {
    let _w = common::watchdog(Duration::from_secs(120));
    let server_keys = CurveKeyPair::generate();
    let good = CurveKeyPair::generate();
    let bad = CurveKeyPair::generate();
    let auth = Authenticator::new();
    auth.allow_curve_keys("*", [good.public]);
    let ctx = Context::new();
    ctx.set_zap_handler(auth);

    let server = ctx.socket(SocketType::Router).unwrap();
    server.set_curve_server(true);
    server.set_curve_secret_key(&server_keys.secret);
    server.set_curve_public_key(&server_keys.public);
    server.set_recv_timeout(Some(GUARD));
    let smon = server.monitor();
    let ep = server.bind("tcp://127.0.0.1:0").unwrap();

    let client = ctx.socket(SocketType::Dealer).unwrap();
    client.set_curve_secret_key(&good.secret);
    client.set_curve_server_key(&server_keys.public);
    client.set_recv_timeout(Some(GUARD));
    client.connect(&ep).unwrap();
    let big = lwmq::Bytes::from(vec![7u8; 1 << 20]);
    for m in [
        Message::from(Vec::<u8>::new()),
        Message::from(big.clone()),
        Message::from_frames([
            lwmq::Bytes::from_static(b"a"),
            lwmq::Bytes::new(),
            big.clone(),
        ]),
    ] {
        client.send(m.clone()).unwrap();
        let mut got = server.recv().unwrap();
        assert_eq!(got.user_id(), Some(good.public.to_z85().as_str()));
        assert_eq!(
            got.property("socket-type").map(|v| &v[..]),
            Some(&b"DEALER"[..])
        );
        assert_eq!(
            got.property("Peer-Address").map(|v| &v[..]),
            Some(&b"127.0.0.1"[..])
        );
        let id = got.pop_front().unwrap();
        assert_eq!(got, m, "the message arrives intact");
        got.push_front(id);
        server.send(got).unwrap();
        let back = client.recv().unwrap();
        assert_eq!(back, m, "and comes back intact");
        assert_eq!(back.user_id(), None, "a client authenticated nobody");
    }

    // A key the authenticator does not know: refused, with the reason, and not retried.
    let intruder = ctx.socket(SocketType::Dealer).unwrap();
    intruder.set_curve_secret_key(&bad.secret);
    intruder.set_curve_server_key(&server_keys.public);
    let imon = intruder.monitor();
    intruder.connect(&ep).unwrap();
    let theirs = imon
        .wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("the client learns it was refused");
    assert!(
        theirs.detail.contains("refused our key") && theirs.detail.contains("not reconnecting"),
        "{theirs}"
    );
    let ours = smon
        .wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("the server reports the refusal");
    assert!(
        ours.detail.contains(&bad.public.to_z85()) && ours.detail.contains("not allowed"),
        "{ours}"
    );
    let later = events_for(&imon, Duration::from_secs(1));
    assert!(
        later.iter().all(|e| e.kind != EventKind::Connected),
        "{later:#?}"
    );
}

#[test]
fn curve_without_a_zap_handler_accepts_any_client_key() {
    let _w = common::watchdog(Duration::from_secs(60));
    let server_keys = CurveKeyPair::generate();
    let client_keys = CurveKeyPair::generate();
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_curve_server(true);
    pull.set_curve_secret_key(&server_keys.secret);
    pull.set_recv_timeout(Some(GUARD));
    let ep = pull.bind("tcp://127.0.0.1:0").unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    push.set_curve_secret_key(&client_keys.secret);
    push.set_curve_server_key(&server_keys.public);
    push.connect(&ep).unwrap();
    push.send("hello").unwrap();
    let m = pull.recv().unwrap();
    assert_eq!(m, Message::from("hello"));
    // The mechanism's default user id: the client key in Z85 (as pyzmq shows it).
    assert_eq!(m.user_id(), Some(client_keys.public.to_z85().as_str()));
}

#[test]
fn a_wrong_server_key_fails_as_auth_and_is_retried_with_a_growing_interval() {
    let _w = common::watchdog(Duration::from_secs(120));
    let server_keys = CurveKeyPair::generate();
    let not_the_server = CurveKeyPair::generate();
    let client_keys = CurveKeyPair::generate();
    let ctx = Context::new();
    let server = ctx.socket(SocketType::Rep).unwrap();
    server.set_curve_server(true);
    server.set_curve_secret_key(&server_keys.secret);
    let smon = server.monitor();
    let ep = server.bind("tcp://127.0.0.1:0").unwrap();
    let client = ctx.socket(SocketType::Req).unwrap();
    client.set_curve_secret_key(&client_keys.secret);
    client.set_curve_server_key(&not_the_server.public);
    let cmon = client.monitor();
    client.connect(&ep).unwrap();
    // The server cannot open our HELLO and refuses it with ERROR "400"; the keys do not
    // match, which the client retries with a growing interval (the server may be
    // restarting with its key).
    let ours = cmon
        .wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("the client reports a failed authentication");
    assert!(
        ours.detail.contains("server key") && ours.detail.contains("growing interval"),
        "{ours}"
    );
    let theirs = smon
        .wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("the server reports it too");
    assert!(theirs.detail.contains("CURVE"), "{theirs}");
    // Each retry waits twice as long as the one before (100, 200, 400 ms...): no storm.
    let events = events_for(&cmon, Duration::from_secs(3));
    let ivls = retry_intervals(&events);
    assert!(ivls.len() >= 2, "{events:#?}");
    assert!(
        ivls.windows(2).all(|w| w[1] > w[0]),
        "the interval grows: {ivls:?}"
    );
    let connects = events
        .iter()
        .filter(|e| e.kind == EventKind::Connected)
        .count();
    assert!(connects <= 6, "{connects} connections in 3 s: {events:#?}");
}

#[test]
fn a_curve_socket_without_its_keys_cannot_bind_or_connect() {
    let ctx = Context::new();
    let s = ctx.socket(SocketType::Rep).unwrap();
    s.set_curve_server(true);
    let e = s.bind("tcp://127.0.0.1:0").unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(w) if w.contains("set_curve_secret_key")),
        "{e}"
    );
    let c = ctx.socket(SocketType::Req).unwrap();
    let keys = CurveKeyPair::generate();
    c.set_curve_server_key(&keys.public);
    let e = c.connect("tcp://127.0.0.1:5555").unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    // A public key that is not the secret key's.
    c.set_curve_secret_key(&keys.secret);
    c.set_curve_public_key(&CurveKeyPair::generate().public);
    let e = c.connect("tcp://127.0.0.1:5555").unwrap_err();
    assert!(e.to_string().contains("not the public key"), "{e}");
    assert!(s.set_zap_domain(&"d".repeat(256)).is_err());
}

#[test]
fn plain_with_an_authenticator_checks_the_password() {
    let _w = common::watchdog(Duration::from_secs(60));
    let auth = Authenticator::new();
    auth.add_plain_user("orders", "admin", "secret");
    let ctx = Context::new();
    ctx.set_zap_handler(auth.clone());
    let server = ctx.socket(SocketType::Rep).unwrap();
    server.set_plain_server(true);
    server.set_zap_domain("orders").unwrap();
    server.set_recv_timeout(Some(GUARD));
    let smon = server.monitor();
    let ep = server.bind("tcp://127.0.0.1:0").unwrap();

    let wrong = ctx.socket(SocketType::Req).unwrap();
    wrong.set_plain_client("admin", "guess").unwrap();
    let wmon = wrong.monitor();
    wrong.connect(&ep).unwrap();
    wmon.wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("the wrong password is refused");
    let e = smon
        .wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("the server says why");
    assert!(e.detail.contains("wrong password"), "{e}");

    let right = ctx.socket(SocketType::Req).unwrap();
    right.set_plain_client("admin", "secret").unwrap();
    right.set_recv_timeout(Some(GUARD));
    right.connect(&ep).unwrap();
    right.send("hi").unwrap();
    let m = server.recv().unwrap();
    assert_eq!(m.user_id(), Some("admin"));
    server.send(m).unwrap();
    assert_eq!(right.recv().unwrap(), Message::from("hi"));
}

#[test]
fn a_closure_zap_handler_sees_the_request_and_names_the_user() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    ctx.set_zap_handler(|r: &ZapRequest<'_>| match r.credentials {
        Credentials::Plain { username, .. } if r.domain == "global" => {
            ZapReply::allow(format!("user:{username}"))
        }
        _ => ZapReply::deny("not in the global domain"),
    });
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_plain_server(true);
    pull.set_zap_domain("global").unwrap();
    pull.set_recv_timeout(Some(GUARD));
    let ep = pull.bind("tcp://127.0.0.1:0").unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    push.set_plain_client("ann", "x").unwrap();
    push.connect(&ep).unwrap();
    push.send("m").unwrap();
    assert_eq!(pull.recv().unwrap().user_id(), Some("user:ann"));
    // Removing the handler: back to libzmq's accept-all.
    ctx.clear_zap_handler();
    pull.set_zap_domain("elsewhere").unwrap();
    let ep2 = pull.bind("tcp://127.0.0.1:0").unwrap();
    let push2 = ctx.socket(SocketType::Push).unwrap();
    push2.set_plain_client("bob", "y").unwrap();
    push2.connect(&ep2).unwrap();
    push2.send("n").unwrap();
    let m = pull.recv().unwrap();
    assert_eq!((m.user_id(), &m), (Some("bob"), &Message::from("n")));
}

#[test]
fn a_null_socket_with_a_zap_domain_is_judged_by_address() {
    let _w = common::watchdog(Duration::from_secs(60));
    let auth = Authenticator::new();
    auth.deny("127.0.0.1".parse().unwrap());
    let ctx = Context::new();
    ctx.set_zap_handler(auth.clone());
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_zap_domain("local").unwrap();
    let mon = pull.monitor();
    let ep = pull.bind("tcp://127.0.0.1:0").unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    let pmon = push.monitor();
    push.connect(&ep).unwrap();
    let e = mon
        .wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("the denied address is refused");
    assert!(e.detail.contains("127.0.0.1 is denied"), "{e}");
    // Refused before a byte was sent: the peer sees a hang-up in the handshake (and
    // backs off), never a completed handshake.
    pmon.wait_for(EventKind::Disconnected, GUARD)
        .expect("the peer is hung up on");
    let later = events_for(&pmon, Duration::from_secs(1));
    assert!(
        later
            .iter()
            .all(|e| e.kind != EventKind::HandshakeSucceeded),
        "{later:#?}"
    );
    // Without a ZAP domain the handler is not asked for NULL (libzmq's rule).
    let open = ctx.socket(SocketType::Pull).unwrap();
    open.set_recv_timeout(Some(GUARD));
    let ep2 = open.bind("tcp://127.0.0.1:0").unwrap();
    let push2 = ctx.socket(SocketType::Push).unwrap();
    push2.connect(&ep2).unwrap();
    push2.send("through").unwrap();
    let m = open.recv().unwrap();
    assert_eq!((m.user_id(), &m), (None, &Message::from("through")));
}

#[test]
fn a_zap_handler_that_panics_refuses_the_peer_and_the_context_keeps_working() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    ctx.set_zap_handler(|r: &ZapRequest<'_>| match r.credentials {
        Credentials::Plain {
            username: "boom", ..
        } => {
            panic!("a bug in the handler")
        }
        _ => ZapReply::allow("ok"),
    });
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_plain_server(true);
    pull.set_recv_timeout(Some(GUARD));
    let mon = pull.monitor();
    let ep = pull.bind("tcp://127.0.0.1:0").unwrap();
    let bad = ctx.socket(SocketType::Push).unwrap();
    bad.set_plain_client("boom", "x").unwrap();
    bad.connect(&ep).unwrap();
    let e = mon
        .wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("refused");
    assert!(e.detail.contains("panicked"), "{e}");
    let good = ctx.socket(SocketType::Push).unwrap();
    good.set_plain_client("fine", "x").unwrap();
    good.connect(&ep).unwrap();
    good.send("still here").unwrap();
    let m = pull.recv().unwrap();
    assert_eq!(
        (m.user_id(), &m),
        (Some("ok"), &Message::from("still here"))
    );
}
