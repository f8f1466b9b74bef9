//! `fd://N`: adopted listening and connected descriptors, across real processes.
//!
//! Tests that need a peer process re-run this binary for the same test with
//! `LWMQ_FD_ROLE` set (and the descriptor's number in `LWMQ_FD`); tests that look at
//! this process's descriptors run in a process of their own
//! (`common::in_own_process`), so other tests' descriptors cannot disturb them.
mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use lwmq::{Context, Error, EventKind, Message, SocketType};

const ROLE: &str = "LWMQ_FD_ROLE";
const FD: &str = "LWMQ_FD";

/// This test binary, re-run for test `test` as a peer with `role` (and `env`).
fn peer(test: &str, role: &str, env: &[(&str, String)]) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary"));
    c.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Held while a child process is started, and from making a worker pair until our
/// copy of its child end is closed: under plain `cargo test` the tests of this binary
/// run on threads of one process, and a child started meanwhile would inherit another
/// test's inheritable descriptor (keeping its peer from ever seeing the close).
static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn spawn_lock() -> std::sync::MutexGuard<'static, ()> {
    SPAWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts this binary as `role` for `test` with the child end of a fresh worker pair;
/// returns the child and the endpoint of our end.
fn spawn_worker(test: &str, role: &str) -> (common::KillOnDrop, String) {
    let _g = spawn_lock();
    let pair = lwmq::fd::worker_pair().unwrap();
    let child = peer(test, role, &[(FD, pair.child.as_raw_fd().to_string())])
        .spawn()
        .unwrap();
    drop(pair.child);
    (common::KillOnDrop(child), lwmq::fd::endpoint(pair.keep))
}

/// `common::in_own_process`, started under the spawn lock.
fn own_process(test: &str, body: impl FnOnce()) {
    if std::env::var_os("LWMQ_TEST_OWN_PROCESS").is_some() {
        return body();
    }
    let _g = spawn_lock();
    common::in_own_process(test, &[], body);
}

fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

fn fd_from_env() -> RawFd {
    std::env::var(FD)
        .expect("LWMQ_FD")
        .parse()
        .expect("a number")
}

/// Whether `fd` is open in this process.
fn is_open(fd: RawFd) -> bool {
    std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists()
}

/// What `fd` is, as /proc says (`socket:[123]`, `/tmp/x`, `pipe:[9]`).
fn fd_target(fd: RawFd) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|p| p.display().to_string())
}

/// A TCP listener on 127.0.0.1 with SO_REUSEPORT set, at `port` (0: any).
fn reuseport_listener(port: u16) -> std::net::TcpListener {
    // SAFETY: plain integer arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_REUSEPORT: {}", std::io::Error::last_os_error());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a live sockaddr_in and its size is passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    // SAFETY: plain integer arguments.
    assert_eq!(unsafe { libc::listen(fd, 128) }, 0);
    std::net::TcpListener::from(owned)
}

/// Lines of a child's stdout, read on a thread.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

// ------------------------------------------------------------------------------------

/// A listening TCP socket and a listening Unix socket made by the program are adopted
/// by bind; bind returns the address peers connect to.
#[test]
fn listening_sockets_are_adopted_on_bind() {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let mon = rep.monitor();
    let uri = format!("fd://{}", tcp.into_raw_fd());
    let got = rep.bind(&uri).unwrap();
    assert_eq!(got, format!("tcp://127.0.0.1:{port}"));
    let e = mon
        .wait_for(EventKind::Listening, Duration::from_secs(5))
        .unwrap();
    assert_eq!(e.endpoint, uri);
    assert!(e.detail.contains("tcp listener"), "{e}");

    let name = format!("lwmq-fd-test-{}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            &name,
        )
        .unwrap();
    let unix = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let got_unix = rep.bind(&format!("fd://{}", unix.into_raw_fd())).unwrap();
    assert_eq!(got_unix, format!("unix://@{name}"));

    let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
    let v6_port = v6.local_addr().unwrap().port();
    let got_v6 = rep.bind(&format!("fd://{}", v6.into_raw_fd())).unwrap();
    assert_eq!(got_v6, format!("tcp://[::1]:{v6_port}"));

    let path = std::env::temp_dir().join(format!("lwmq-fd-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let at_path = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let got_path = rep
        .bind(&format!("fd://{}", at_path.into_raw_fd()))
        .unwrap();
    assert_eq!(got_path, format!("unix://{}", path.display()));

    for ep in [got, got_unix, got_v6, got_path] {
        let req = ctx.socket(SocketType::Req).unwrap();
        req.connect(&ep).unwrap();
        req.send(ep.clone().into_bytes()).unwrap();
        let m = rep.recv().unwrap();
        rep.send(m).unwrap();
        assert_eq!(req.recv().unwrap(), Message::from(ep.into_bytes()));
    }
    // Unbinding by the name given works, and frees the port.
    rep.unbind(&uri).unwrap();
    let mut freed = false;
    for _ in 0..200 {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            freed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(freed, "the adopted listener was closed on unbind");
    // The socket file is the program's: lwmq, which did not make it, leaves it.
    drop(rep);
    assert!(path.exists());
    let _ = std::fs::remove_file(&path);
}

/// A dispatcher (ROUTER) and worker processes (DEALER), each over its own socketpair
/// descriptor: requests go parent -> worker, answers worker -> parent, and each worker
/// also speaks first (worker -> parent -> worker).
#[test]
fn parent_and_workers_over_socketpairs_both_directions() {
    const TEST: &str = "parent_and_workers_over_socketpairs_both_directions";
    if role().as_deref() == Some("worker") {
        let ctx = Context::new();
        let dealer = ctx.socket(SocketType::Dealer).unwrap();
        dealer
            .set_routing_id(format!("w{}", std::process::id()))
            .unwrap();
        dealer.set_recv_timeout(Some(Duration::from_secs(30)));
        dealer.connect(&format!("fd://{}", fd_from_env())).unwrap();
        // Worker speaks first.
        dealer
            .send(format!("hello {}", std::process::id()).into_bytes())
            .unwrap();
        assert_eq!(dealer.recv().unwrap(), Message::from("welcome"));
        // Then serves requests until "bye".
        loop {
            let m = dealer.recv().unwrap();
            let t = String::from_utf8_lossy(&m.frames()[0]).into_owned();
            if t == "bye" {
                break;
            }
            dealer
                .send(format!("{t} done by {}", std::process::id()).into_bytes())
                .unwrap();
        }
        println!("WORKER-OK");
        return;
    }
    let _w = common::watchdog(Duration::from_secs(120));
    let ctx = Context::new();
    let router = ctx.socket(SocketType::Router).unwrap();
    router.set_recv_timeout(Some(Duration::from_secs(30)));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (child, ep) = spawn_worker(TEST, "worker");
        router.connect(&ep).unwrap();
        workers.push(child);
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let m = router.recv().unwrap();
        let (id, body) = (m.frames()[0].clone(), m.frames()[1].clone());
        let pid: u32 = String::from_utf8_lossy(&body)
            .strip_prefix("hello ")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(id, format!("w{pid}").as_bytes());
        ids.push((id, pid));
        router
            .send(Message::from_frames([
                ids.last().unwrap().0.clone(),
                "welcome".into(),
            ]))
            .unwrap();
    }
    for (id, pid) in &ids {
        router
            .send(Message::from_frames([id.clone(), lwmq::Bytes::from("job")]))
            .unwrap();
        let m = router.recv().unwrap();
        assert_eq!(m.frames()[0], id);
        assert_eq!(m.frames()[1], format!("job done by {pid}").as_bytes());
    }
    for (id, _) in &ids {
        router
            .send(Message::from_frames([id.clone(), lwmq::Bytes::from("bye")]))
            .unwrap();
    }
    for w in &mut workers {
        let status = w.0.wait().unwrap();
        assert!(status.success(), "worker failed: {status}");
    }
}

/// The peer process of an adopted connection exits: the monitor says `disconnected`
/// (not reconnecting), and no reconnect is ever tried.
#[test]
fn a_closed_peer_is_not_reconnected() {
    const TEST: &str = "a_closed_peer_is_not_reconnected";
    if role().as_deref() == Some("echo-once") {
        let ctx = Context::new();
        let rep = ctx.socket(SocketType::Rep).unwrap();
        rep.set_recv_timeout(Some(Duration::from_secs(30)));
        rep.connect(&format!("fd://{}", fd_from_env())).unwrap();
        let m = rep.recv().unwrap();
        rep.send(m).unwrap();
        // Linger (the default) delivers the answer before the process exits.
        return;
    }
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let req = ctx.socket(SocketType::Req).unwrap();
    req.set_recv_timeout(Some(Duration::from_secs(30)));
    let mon = req.monitor();
    let (mut child, uri) = spawn_worker(TEST, "echo-once");
    req.connect(&uri).unwrap();
    req.send("ping").unwrap();
    assert_eq!(req.recv().unwrap(), Message::from("ping"));
    assert!(child.0.wait().unwrap().success());
    let e = mon
        .wait_for(EventKind::Disconnected, Duration::from_secs(30))
        .expect("the peer's close is reported");
    assert_eq!(e.endpoint, uri);
    assert!(e.detail.contains("not reconnecting"), "{e}");
    // Nothing tries to reconnect.
    while let Some(e) = mon.recv(Some(Duration::from_millis(500))) {
        assert!(
            !matches!(
                e.kind,
                EventKind::ConnectRetried | EventKind::ConnectDelayed | EventKind::Connected
            ),
            "no reconnect attempt after the adopted peer closed: {e}"
        );
    }
    // The endpoint is gone: a request has nowhere to go.
    req.set_send_timeout(Some(Duration::from_millis(200)));
    let _ = req.send("again");
    req.set_recv_timeout(Some(Duration::from_millis(200)));
    assert!(req.recv().is_err(), "no peer answers any more");
}

/// Bytes the peer wrote before the descriptor was adopted (with nothing after them)
/// are read: registration is edge-triggered, so the engine's first read must not wait
/// for an edge.
#[test]
fn data_pending_before_adoption_is_read() {
    let _w = common::watchdog(Duration::from_secs(60));
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    // A ZMTP 3.1 PUSH peer, written in full before lwmq sees the other end: greeting,
    // READY, one message. It never writes again.
    let mut greeting = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3, 1];
    greeting.extend_from_slice(b"NULL");
    greeting.resize(32, 0);
    greeting.push(0); // as-server
    greeting.resize(64, 0);
    let mut ready = vec![5u8];
    ready.extend_from_slice(b"READY");
    ready.push(11);
    ready.extend_from_slice(b"Socket-Type");
    ready.extend_from_slice(&4u32.to_be_bytes());
    ready.extend_from_slice(b"PUSH");
    let mut bytes = greeting;
    bytes.push(0x04);
    bytes.push(ready.len() as u8);
    bytes.extend_from_slice(&ready);
    bytes.extend_from_slice(&[0x00, 5]);
    bytes.extend_from_slice(b"early");
    theirs.write_all(&bytes).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let ctx = Context::new();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_recv_timeout(Some(Duration::from_secs(20)));
    pull.connect(&format!("fd://{}", ours.into_raw_fd()))
        .unwrap();
    assert_eq!(pull.recv().unwrap(), Message::from("early"));
    drop(theirs);
}

/// What cannot be adopted is a clear error naming the descriptor and what it is; the
/// descriptor is left as it was.
#[test]
fn bad_descriptors_are_clear_errors() {
    own_process("bad_descriptors_are_clear_errors", || {
        let ctx = Context::new();
        let s = ctx.socket(SocketType::Dealer).unwrap();
        let err = |r: lwmq::Result<()>| -> String {
            match r {
                Err(e @ Error::Endpoint { .. }) => e.to_string(),
                Err(e) => panic!("not an endpoint error: {e}"),
                Ok(()) => panic!("adopted what it should not"),
            }
        };
        let mut p = [0; 2];
        // SAFETY: `p` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        let e = err(s.connect(&format!("fd://{}", p[0])));
        assert!(
            e.contains(&format!("descriptor {}", p[0])) && e.contains("pipe"),
            "{e}"
        );
        assert!(is_open(p[0]), "a refused descriptor stays open");
        let e = err(s.bind(&format!("fd://{}", p[1])).map(drop));
        assert!(e.contains("pipe"), "{e}");

        let path = std::env::temp_dir().join(format!("lwmq-fd-file-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let e = err(s.connect(&format!("fd://{}", file.as_raw_fd())));
        assert!(e.contains("regular file, not a socket"), "{e}");
        let _ = std::fs::remove_file(&path);

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = err(s.connect(&format!("fd://{}", udp.as_raw_fd())));
        assert!(
            e.contains("UDP") && e.contains("not a stream socket"),
            "{e}"
        );
        let e = err(s.bind(&format!("fd://{}", udp.as_raw_fd())).map(drop));
        assert!(e.contains("UDP"), "{e}");

        let closed = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        // SAFETY: `closed` is ours, closed once here.
        unsafe { libc::close(closed) };
        let e = err(s.connect(&format!("fd://{closed}")));
        assert!(e.contains("not open"), "{e}");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = err(s.connect(&format!("fd://{}", listener.as_raw_fd())));
        assert!(
            e.contains("listening TCP socket") && e.contains("connect adopts a connected"),
            "{e}"
        );
        assert!(is_open(listener.as_raw_fd()));

        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = err(s.bind(&format!("fd://{}", a.as_raw_fd())).map(drop));
        assert!(
            e.contains("connected Unix stream socket that is not listening"),
            "{e}"
        );
        let e = err(s.connect(&format!("fd://{}", std::io::stdin().as_raw_fd())));
        assert!(e.contains("descriptor 0"), "{e}");
        // Never a panic, whatever the number.
        let e = err(s.connect("fd://2147483647"));
        assert!(e.contains("not open"), "{e}");
    });
}

/// Every adopted descriptor is closed once, when its bind or connect ends, and never
/// again: a descriptor that later gets the same number is left alone. One descriptor
/// is never adopted twice.
#[test]
fn each_adopted_descriptor_is_closed_exactly_once() {
    own_process("each_adopted_descriptor_is_closed_exactly_once", || {
        let _w = common::watchdog(Duration::from_secs(60));
        let ctx = Context::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .into_raw_fd();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (a, b) = (a.into_raw_fd(), b.into_raw_fd());
        let rep = ctx.socket(SocketType::Rep).unwrap();
        let ep = rep.bind(&format!("fd://{listener}")).unwrap();
        let again = rep.bind(&format!("fd://{listener}"));
        assert!(
            matches!(&again, Err(e) if e.to_string().contains("adopted already")),
            "{again:?}"
        );
        let req = ctx.socket(SocketType::Req).unwrap();
        req.connect(&ep).unwrap();
        let pair_a = ctx.socket(SocketType::Pair).unwrap();
        let pair_b = ctx.socket(SocketType::Pair).unwrap();
        pair_a.connect(&format!("fd://{a}")).unwrap();
        pair_b.connect(&format!("fd://{b}")).unwrap();
        pair_a.send("x").unwrap();
        assert_eq!(pair_b.recv().unwrap(), Message::from("x"));
        req.send("y").unwrap();
        assert_eq!(rep.recv().unwrap(), Message::from("y"));
        for fd in [listener, a, b] {
            assert!(is_open(fd), "fd {fd} is open while in use");
        }
        drop(rep);
        drop(pair_a);
        drop(pair_b);
        // Closing (with linger) is done by the background thread; wait for it.
        let mut closed = false;
        for _ in 0..500 {
            if ![listener, a, b].iter().any(|&fd| is_open(fd)) {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            closed,
            "adopted descriptors are closed when their sockets close"
        );
        // Put files at those numbers: lwmq must not close them a second time.
        let path = std::env::temp_dir().join(format!("lwmq-fd-once-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        for fd in [listener, a, b] {
            // SAFETY: plain integer arguments; `fd` is free (checked above).
            assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), fd) }, fd);
        }
        drop(req);
        std::thread::sleep(Duration::from_millis(300));
        ctx.terminate();
        for fd in [listener, a, b] {
            assert_eq!(
                fd_target(fd).as_deref(),
                Some(path.to_str().unwrap()),
                "fd {fd} was closed a second time"
            );
        }
        let _ = std::fs::remove_file(&path);
    });
}

/// Two processes, each with its own SO_REUSEPORT listener on one port adopted with
/// `fd://`: both serve.
#[test]
fn so_reuseport_two_processes_serve_one_port() {
    const TEST: &str = "so_reuseport_two_processes_serve_one_port";
    if role().as_deref() == Some("server") {
        let port: u16 = std::env::var("LWMQ_PORT").unwrap().parse().unwrap();
        let l = reuseport_listener(port);
        let ctx = Context::new();
        let rep = ctx.socket(SocketType::Rep).unwrap();
        let ep = rep.bind(&format!("fd://{}", l.into_raw_fd())).unwrap();
        println!("\nSERVING {ep}");
        loop {
            let m = rep.recv().unwrap();
            if m == Message::from("stop") {
                rep.send("stopped").unwrap();
            } else {
                rep.send(std::process::id().to_string().into_bytes())
                    .unwrap();
            }
        }
    }
    let _w = common::watchdog(Duration::from_secs(120));
    let port = {
        let probe = reuseport_listener(0);
        probe.local_addr().unwrap().port()
    };
    let mut servers = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..2 {
        let mut c = {
            let _g = spawn_lock();
            peer(TEST, "server", &[("LWMQ_PORT", port.to_string())])
                .spawn()
                .unwrap()
        };
        let lines = stdout_lines(&mut c);
        loop {
            let l = lines.recv().expect("the server started");
            if let Some((_, ep)) = l.split_once("SERVING ") {
                assert_eq!(ep, format!("tcp://127.0.0.1:{port}"));
                break;
            }
        }
        pids.push(c.id());
        servers.push(common::KillOnDrop(c));
    }
    let ctx = Context::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let req = ctx.socket(SocketType::Req).unwrap();
        req.set_recv_timeout(Some(Duration::from_secs(30)));
        req.set_linger(Some(Duration::ZERO));
        req.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
        req.send("who").unwrap();
        let pid: u32 = String::from_utf8_lossy(&req.recv().unwrap().frames()[0])
            .parse()
            .unwrap();
        assert!(pids.contains(&pid), "answered by {pid}, not a server");
        seen.insert(pid);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both processes served the port: {seen:?}");
}
