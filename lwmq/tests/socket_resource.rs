//! One TCP port shared by several sockets: `tcp://host:port/resource` (ZMTP 3.1's
//! Resource property). A peer without a Resource (every libzmq) gets the socket bound
//! without one; an unknown resource is refused with an ERROR and a monitor event.
mod common;

use std::time::Duration;

use lwmq::{Context, Error, EventKind, Message, Socket, SocketType};

const LONG: Duration = Duration::from_secs(30);

/// A REP that answers every request with its name (or, without one, echoes it), on a
/// thread of the scope.
fn serve<'s>(scope: &'s std::thread::Scope<'s, '_>, rep: &'s Socket, name: Option<&'static str>) {
    scope.spawn(move || {
        rep.set_recv_timeout(Some(Duration::from_millis(50)));
        loop {
            match rep.recv() {
                Ok(m) => rep.send(name.map_or(m, Message::from)).unwrap(),
                Err(Error::Timeout) => {}
                Err(_) => return,
            }
        }
    });
}

fn ask(ctx: &Context, ep: &str) -> Message {
    let req = ctx.socket(SocketType::Req).unwrap();
    req.set_recv_timeout(Some(LONG));
    req.connect(ep).unwrap();
    req.send("who are you?").unwrap();
    req.recv().unwrap()
}

#[test]
fn resources_share_one_port() {
    let _w = common::watchdog(Duration::from_secs(120));
    let server = Context::new();
    let alpha = server.socket(SocketType::Rep).unwrap();
    let beta = server.socket(SocketType::Rep).unwrap();
    let bare = server.socket(SocketType::Rep).unwrap();
    let alpha_ep = alpha.bind("tcp://127.0.0.1:0/alpha").unwrap();
    let port: u16 = alpha_ep
        .trim_end_matches("/alpha")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let beta_ep = beta.bind(&format!("tcp://127.0.0.1:{port}/beta")).unwrap();
    assert_eq!(beta_ep, format!("tcp://127.0.0.1:{port}/beta"));
    let bare_ep = bare.bind(&format!("tcp://127.0.0.1:{port}")).unwrap();
    // The same resource twice is an address in use.
    let again = server.socket(SocketType::Rep).unwrap();
    assert!(matches!(
        again.bind(&format!("tcp://127.0.0.1:{port}/beta")),
        Err(Error::AddressInUse { .. })
    ));
    let alpha_mon = alpha.monitor();
    let client = Context::new();
    std::thread::scope(|s| {
        serve(s, &alpha, Some("alpha"));
        serve(s, &beta, Some("beta"));
        serve(s, &bare, None);
        for _ in 0..3 {
            assert_eq!(ask(&client, &alpha_ep), Message::from("alpha"));
            assert_eq!(ask(&client, &beta_ep), Message::from("beta"));
            assert_eq!(ask(&client, &bare_ep), Message::from("who are you?"));
        }
        // libzmq sends no Resource: it gets the socket bound without one.
        let py = common::spawn_py(
            "socket_peer.py",
            &[
                "REQ",
                "connect",
                &format!("tcp://127.0.0.1:{port}"),
                "client",
                "3",
            ],
        );
        let out = py.wait_with_output().unwrap();
        assert!(out.status.success(), "the pyzmq client got its echoes");
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
        // An unknown resource is refused, and the client does not retry.
        let req = client.socket(SocketType::Req).unwrap();
        let m = req.monitor();
        req.connect(&format!("tcp://127.0.0.1:{port}/gamma"))
            .unwrap();
        let e = m
            .wait_for(EventKind::HandshakeFailedProtocol, LONG)
            .expect("the handshake fails");
        assert!(e.detail.contains("resource-unknown"), "{}", e.detail);
        assert!(e.detail.contains("not reconnecting"), "{}", e.detail);
        // Several reconnect intervals (100 ms) pass without an attempt.
        assert!(
            m.wait_for(EventKind::ConnectRetried, Duration::from_millis(500))
                .is_none(),
            "the client retried an endpoint that refused it"
        );
        let e = alpha_mon
            .wait_for(EventKind::ResourceUnknown, LONG)
            .expect("the server reports it");
        assert!(e.detail.contains("gamma"), "{}", e.detail);
        server.clone().terminate();
    });
}
