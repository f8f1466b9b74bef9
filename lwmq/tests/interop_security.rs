//! CURVE and PLAIN against libzmq (pyzmq 26.2.0, libzmq 4.3.5), both roles: lwmq
//! servers with an `auth::Authenticator` and pyzmq clients, pyzmq servers (with its
//! `ThreadAuthenticator`) and lwmq clients; right and wrong keys and passwords; 0 B,
//! 1 MiB and multipart messages; heartbeats under CURVE. The pyzmq peer is
//! `tests/py/secure_peer.py`; it counts its connections, and the tests assert counts,
//! never times. The pattern matrix over CURVE is in `interop_patterns.rs`.
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use lwmq::auth::Authenticator;
use lwmq::{Bytes, Context, CurveKeyPair, EventKind, Message, MonitorEvent, SocketType};

use common::peer::Peer;

const GUARD: Duration = Duration::from_secs(60);

/// The samples `secure_peer.py` sends and expects: 0 B, 1 MiB, and multipart.
fn samples() -> Vec<Message> {
    let big: Bytes = (0..1usize << 20)
        .map(|k| (k % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    vec![
        Message::from(Bytes::new()),
        Message::from(big.clone()),
        Message::from_frames([
            Bytes::from_static(b"first"),
            Bytes::new(),
            Bytes::from(vec![b'x'; 100]),
            big,
        ]),
    ]
}

/// A running `secure_peer.py`.
struct Py {
    peer: Peer,
    endpoint: String,
}

impl Py {
    fn start(ty: &str, mode: &str, endpoint: &str, role: &str, opts: &[&str]) -> Py {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/secure_peer.py");
        let child = Command::new(common::python())
            .arg(script)
            .args([ty, mode, endpoint, role])
            .args(opts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start secure_peer.py");
        let mut peer = Peer::from_child(child);
        let endpoint = peer.expect("ENDPOINT");
        Py { peer, endpoint }
    }

    /// The peer's monitor counts so far (`serve` role).
    fn events(&mut self) -> std::collections::HashMap<String, u32> {
        let stdin = self.peer.child.0.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "COUNT").expect("ask the peer");
        stdin.flush().expect("ask the peer");
        self.counts()
    }

    /// The next EVENTS line the peer prints (after `try`, or asked for in `serve`).
    fn counts(&mut self) -> std::collections::HashMap<String, u32> {
        self.peer
            .expect("EVENTS")
            .split(' ')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    /// Waits for the peer to exit, successfully.
    fn finish(mut self) {
        drop(self.peer.child.0.stdin.take());
        let status = self.peer.child.0.wait().expect("wait for the peer");
        assert!(status.success(), "secure_peer.py failed: {status}");
    }
}

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

fn count(events: &[MonitorEvent], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

/// Serves `n` requests on a REP socket, checking each is the next sample and carries
/// `user_id`, and echoes it.
fn echo_samples(rep: &lwmq::Socket, user_id: Option<&str>) {
    for (i, want) in samples().iter().enumerate() {
        let m = rep.recv().expect("a sample from the pyzmq client");
        assert_eq!(&m, want, "sample {i} intact");
        assert_eq!(m.user_id(), user_id, "sample {i}'s user id");
        rep.send(m).unwrap();
    }
}

/// Sends every sample on a REQ socket and checks the echo.
fn send_samples(req: &lwmq::Socket) {
    for (i, m) in samples().into_iter().enumerate() {
        req.send(m.clone()).unwrap();
        assert_eq!(req.recv().expect("the echo"), m, "sample {i} intact");
    }
}

#[test]
fn lwmq_curve_server_and_pyzmq_clients_with_the_right_and_a_wrong_server_key() {
    let _w = common::watchdog(Duration::from_secs(180));
    let server_keys = CurveKeyPair::generate();
    let client_keys = CurveKeyPair::generate();
    let auth = Authenticator::new();
    auth.allow_curve_keys("*", [client_keys.public]);
    let ctx = Context::new();
    ctx.set_zap_handler(auth);
    let rep = ctx.socket(SocketType::Rep).unwrap();
    rep.set_curve_server(true);
    rep.set_curve_secret_key(&server_keys.secret);
    rep.set_recv_timeout(Some(GUARD));
    let mon = rep.monitor();
    let ep = rep.bind("tcp://127.0.0.1:0").unwrap();

    // The right server key: every sample both ways, and the client's key as user id.
    let mut py = Py::start(
        "REQ",
        "connect",
        &ep,
        "client",
        &[
            "--curve-client",
            &server_keys.public.to_z85(),
            &client_keys.secret.to_z85(),
        ],
    );
    echo_samples(&rep, Some(&client_keys.public.to_z85()));
    py.peer.expect("OK");
    py.finish();

    // A wrong server key: our side cannot open its HELLO, says so, and answers ERROR
    // "400", which ends libzmq's connect. Closing without a word (what RFC 26 asks and
    // libzmq's server does) had libzmq reconnect every 100 ms: about 30 handshakes in
    // the 3 s the client waits for its reply.
    let wrong = CurveKeyPair::generate();
    let mut py = Py::start(
        "REQ",
        "connect",
        &ep,
        "try",
        &[
            "--curve-client",
            &wrong.public.to_z85(),
            &client_keys.secret.to_z85(),
        ],
    );
    let e = mon
        .wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("handshake-failed-auth on our side");
    assert!(e.detail.contains("CURVE"), "{e}");
    assert_eq!(py.peer.expect("NOREPLY"), "", "nothing got through");
    let theirs = py.counts();
    py.finish();
    let attempts = 1 + count(
        &events_for(&mon, Duration::from_millis(500)),
        EventKind::HandshakeFailedAuth,
    );
    eprintln!(
        "libzmq client with a wrong server key: {attempts} handshakes at our side; its events {theirs:?}"
    );
    assert!(attempts <= 3, "{attempts} handshakes in 3 s: a retry storm");
    assert!(
        theirs["auth"] >= 1,
        "libzmq saw no handshake-failed-auth: {theirs:?}"
    );
    assert!(theirs["connected"] <= 3, "{theirs:?}");
    assert_eq!(theirs["succeeded"], 0, "{theirs:?}");
}

#[test]
fn lwmq_curve_client_with_a_wrong_server_key_backs_off_against_libzmq() {
    let _w = common::watchdog(Duration::from_secs(120));
    let server_keys = CurveKeyPair::generate();
    let client_keys = CurveKeyPair::generate();
    let mut py = Py::start(
        "REP",
        "bind",
        "tcp://127.0.0.1:*",
        "serve",
        &["--curve-server", &server_keys.secret.to_z85()],
    );
    let ctx = Context::new();
    let req = ctx.socket(SocketType::Req).unwrap();
    req.set_curve_secret_key(&client_keys.secret);
    req.set_curve_server_key(&CurveKeyPair::generate().public);
    let mon = req.monitor();
    req.connect(&py.endpoint).unwrap();
    let events = events_for(&mon, Duration::from_secs(3));
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::HandshakeFailedAuth)
        .collect();
    assert!(!failed.is_empty(), "{events:#?}");
    assert!(failed[0].detail.contains("server key"), "{}", failed[0]);
    // At 10 Hz that would have been 30 connections; the interval doubles instead.
    let connected = count(&events, EventKind::Connected);
    assert!((1..=6).contains(&connected), "{events:#?}");
    let theirs = py.events();
    assert!(
        theirs["accepted"] as usize <= connected + 1,
        "libzmq saw {theirs:?}, we made {connected}"
    );
    assert_eq!(theirs["succeeded"], 0, "{theirs:?}");
    py.finish();
}

#[test]
fn pyzmq_curve_server_with_its_thread_authenticator_and_lwmq_clients() {
    let _w = common::watchdog(Duration::from_secs(180));
    let server_keys = CurveKeyPair::generate();
    let allowed = CurveKeyPair::generate();
    let refused = CurveKeyPair::generate();
    let mut py = Py::start(
        "REP",
        "bind",
        "tcp://127.0.0.1:*",
        "serve",
        &[
            "--curve-server",
            &server_keys.secret.to_z85(),
            "--allow-key",
            &allowed.public.to_z85(),
        ],
    );
    let ctx = Context::new();
    let good = ctx.socket(SocketType::Req).unwrap();
    good.set_curve_secret_key(&allowed.secret);
    good.set_curve_server_key(&server_keys.public);
    good.set_recv_timeout(Some(GUARD));
    good.connect(&py.endpoint).unwrap();
    send_samples(&good);

    let bad = ctx.socket(SocketType::Req).unwrap();
    bad.set_curve_secret_key(&refused.secret);
    bad.set_curve_server_key(&server_keys.public);
    let mon = bad.monitor();
    bad.connect(&py.endpoint).unwrap();
    let e = mon
        .wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("the refused key is reported");
    assert!(
        e.detail.contains("refused our key") && e.detail.contains("not reconnecting"),
        "{e}"
    );
    let later = events_for(&mon, Duration::from_secs(1));
    assert_eq!(count(&later, EventKind::Connected), 0, "{later:#?}");
    let theirs = py.events();
    assert_eq!(
        theirs["accepted"], 2,
        "one connection per client: {theirs:?}"
    );
    assert_eq!(theirs["succeeded"], 1, "{theirs:?}");
    // The allowed client still talks.
    send_samples(&good);
    py.finish();
}

#[test]
fn heartbeats_under_curve_keep_a_quiet_connection_for_five_seconds() {
    let _w = common::watchdog(Duration::from_secs(120));
    let server_keys = CurveKeyPair::generate();
    let client_keys = CurveKeyPair::generate();
    // libzmq PINGs us every 100 ms and drops us after 500 ms without traffic.
    let mut py = Py::start(
        "REP",
        "bind",
        "tcp://127.0.0.1:*",
        "serve",
        &[
            "--curve-server",
            &server_keys.secret.to_z85(),
            "--heartbeat",
            "100",
        ],
    );
    let ctx = Context::new();
    let req = ctx.socket(SocketType::Req).unwrap();
    req.set_curve_secret_key(&client_keys.secret);
    req.set_curve_server_key(&server_keys.public);
    req.set_heartbeat_interval(Some(Duration::from_millis(100)));
    req.set_heartbeat_timeout(Some(Duration::from_millis(500)));
    req.set_recv_timeout(Some(GUARD));
    let mon = req.monitor();
    req.connect(&py.endpoint).unwrap();
    req.send("before").unwrap();
    assert_eq!(req.recv().unwrap(), Message::from("before"));
    let quiet = events_for(&mon, Duration::from_secs(5));
    assert_eq!(count(&quiet, EventKind::Disconnected), 0, "{quiet:#?}");
    let theirs = py.events();
    assert_eq!(
        (theirs["disconnected"], theirs["accepted"]),
        (0, 1),
        "{theirs:?}"
    );
    req.send("after").unwrap();
    assert_eq!(req.recv().unwrap(), Message::from("after"));
    py.finish();
}

/// An lwmq PLAIN server with an authenticator, and pyzmq clients with the right and a
/// wrong password; `lwmq_binds` says who binds.
fn plain_server_against_pyzmq(lwmq_binds: bool) {
    let _w = common::watchdog(Duration::from_secs(180));
    let auth = Authenticator::new();
    auth.add_plain_user("*", "admin", "secret");
    let ctx = Context::new();
    ctx.set_zap_handler(auth);
    let rep = ctx.socket(SocketType::Rep).unwrap();
    rep.set_plain_server(true);
    rep.set_recv_timeout(Some(GUARD));
    let mon = rep.monitor();
    let start = |role: &str, creds: &str| -> Py {
        if lwmq_binds {
            let ep = rep.last_endpoint().expect("bound");
            Py::start("REQ", "connect", &ep, role, &["--plain-client", creds])
        } else {
            let py = Py::start(
                "REQ",
                "bind",
                "tcp://127.0.0.1:*",
                role,
                &["--plain-client", creds],
            );
            rep.connect(&py.endpoint).unwrap();
            py
        }
    };
    if lwmq_binds {
        rep.bind("tcp://127.0.0.1:0").unwrap();
    }
    let mut py = start("client", "admin:secret");
    echo_samples(&rep, Some("admin"));
    py.peer.expect("OK");
    py.finish();

    let mut py = start("try", "admin:guess");
    let e = mon
        .wait_for(EventKind::HandshakeFailedAuth, GUARD)
        .expect("the wrong password is refused");
    assert!(e.detail.contains("wrong password"), "{e}");
    assert_eq!(py.peer.expect("NOREPLY"), "");
    py.finish();
}

#[test]
fn plain_lwmq_server_with_an_authenticator_binding() {
    plain_server_against_pyzmq(true);
}

#[test]
fn plain_lwmq_server_with_an_authenticator_connecting() {
    plain_server_against_pyzmq(false);
}

/// Certificates made by pyzmq (`zmq.auth.create_certificates`, czmq's format: `NAME.key`
/// with the public key, `NAME.key_secret` with both) are read by
/// `Authenticator::load_curve_keys` and `auth::read_secret_key`, and work for a
/// connection between lwmq sockets.
#[test]
fn pyzmq_certificates_are_read_as_a_key_directory_and_as_key_files() {
    let _w = common::watchdog(Duration::from_secs(120));
    let dir = std::env::temp_dir().join(format!("lwmq-pyzmq-certs-{}", std::process::id()));
    let secrets = dir.join("secrets");
    let public = dir.join("public");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::create_dir_all(&public).unwrap();
    let status = Command::new(common::python())
        .args([
            "-c",
            "import sys, zmq.auth\n\
             for name in ('server', 'client'):\n\
             \x20   zmq.auth.create_certificates(sys.argv[1], name)\n",
        ])
        .arg(&secrets)
        .status()
        .expect("run pyzmq");
    assert!(status.success());
    std::fs::rename(secrets.join("client.key"), public.join("client.key")).unwrap();
    let server_secret = lwmq::auth::read_secret_key(secrets.join("server.key_secret")).unwrap();
    let client_secret = lwmq::auth::read_secret_key(secrets.join("client.key_secret")).unwrap();
    let client_public = lwmq::auth::read_public_key(public.join("client.key")).unwrap();
    assert_eq!(client_secret.public_key(), client_public);

    let auth = Authenticator::new();
    assert_eq!(auth.load_curve_keys("*", &public).unwrap(), 1);
    let ctx = Context::new();
    ctx.set_zap_handler(auth);
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_curve_server(true);
    pull.set_curve_secret_key(&server_secret);
    pull.set_recv_timeout(Some(GUARD));
    let ep = pull.bind("tcp://127.0.0.1:0").unwrap();
    let push = ctx.socket(SocketType::Push).unwrap();
    push.set_curve_secret_key(&client_secret);
    push.set_curve_server_key(&lwmq::auth::read_public_key(secrets.join("server.key")).unwrap());
    push.connect(&ep).unwrap();
    push.send("certified").unwrap();
    let m = pull.recv().unwrap();
    assert_eq!(m, Message::from("certified"));
    assert_eq!(m.user_id(), Some(client_public.to_z85().as_str()));
    std::fs::remove_dir_all(&dir).unwrap();
}
