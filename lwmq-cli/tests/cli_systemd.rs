//! End to end under the real `systemd-socket-activate` (Debian's `systemd` package,
//! installed by `scripts/setup-test-env.sh` when missing): `systemd://NAME` and
//! `systemd://N` with `Accept=no` and `Accept=yes`, `fd://N` on inherited
//! descriptors, errors for a missing or foreign activation, `--notify` readiness, and
//! `lwmq ls` showing adopted endpoints as such. The libzmq peers are pyzmq
//! (`lwmq/tests/py/socket_peer.py`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Proc, lwmq, python, run, watchdog};

const LIMIT: Duration = Duration::from_secs(120);

/// `systemd-socket-activate`, after the test set-up made sure it is installed.
fn activate(args: &[&str]) -> Proc {
    // The set-up script installs systemd-socket-activate along with the pyzmq venv.
    let _ = python();
    let mut c = Command::new("systemd-socket-activate");
    c.args(args).stdin(std::process::Stdio::null());
    for k in [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
    ] {
        c.env_remove(k);
    }
    Proc::spawn(c)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Reads the activator's stderr until it listens on `n` sockets.
fn wait_listening(p: &Proc, n: usize) {
    let mut seen = 0;
    while seen < n {
        let l = p.stderr_line();
        if l.starts_with("Listening on") {
            seen += 1;
        } else {
            eprintln!("(activator) {l}");
        }
    }
}

/// Reads stderr until a line containing `what`; returns it.
fn stderr_until(p: &Proc, what: &str) -> String {
    loop {
        let l = p.stderr_line();
        if l.contains(what) {
            return l;
        }
        eprintln!("(stderr) {l}");
    }
}

/// A pyzmq REQ that connects to `ep`, sends `n` requests and checks the echoes.
fn pyzmq_client(ep: &str, n: u32) -> Proc {
    Proc::python(
        "socket_peer.py",
        &["REQ", "connect", ep, "client", &n.to_string()],
    )
}

/// Waits for a pyzmq peer to finish and checks it verified what it got.
fn expect_ok(peer: Proc) {
    let (code, out, err) = peer.finish();
    assert!(
        code == Some(0) && out.iter().any(|l| l == "OK"),
        "the pyzmq peer failed ({code:?}): {out:?} {err:?}"
    );
}

fn lwmq_bin() -> String {
    lwmq().get_program().to_string_lossy().into_owned()
}

#[test]
fn accept_no_rep_bound_to_systemd_name_answers_a_pyzmq_req() {
    let _w = watchdog(LIMIT);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let act = activate(&[
        "-l",
        &listen,
        "--fdname=web",
        &lwmq_bin(),
        "rep",
        "--bind",
        "systemd://web",
        "-q",
    ]);
    wait_listening(&act, 1);
    // The first connection starts lwmq; it answers this one and the next.
    let ep = format!("tcp://{listen}");
    expect_ok(pyzmq_client(&ep, 5));
    let bound = stderr_until(&act, "lwmq: bound");
    assert_eq!(bound, format!("lwmq: bound tcp://{listen}"));
    expect_ok(pyzmq_client(&ep, 3));
}

/// Two named sockets: `web` is the proxy's frontend (ROUTER), `admin` its backend
/// (DEALER). A pyzmq REQ on the web port reaches a pyzmq REP on the admin port only
/// if each name went to the right socket, and `lwmq ls` shows both as adopted.
#[test]
fn two_named_sockets_go_to_the_right_sockets() {
    let _w = watchdog(LIMIT);
    let (web, admin) = (free_port(), free_port());
    let (lw, la) = (format!("127.0.0.1:{web}"), format!("127.0.0.1:{admin}"));
    let act = activate(&[
        "-l",
        &lw,
        "-l",
        &la,
        "--fdname=web:admin",
        &lwmq_bin(),
        "proxy",
        "systemd://web",
        "systemd://admin",
    ]);
    wait_listening(&act, 2);
    let rep = Proc::python(
        "socket_peer.py",
        &["REP", "connect", &format!("tcp://{la}"), "echo", "4"],
    );
    stderr_until(&act, "DEALER bound");
    expect_ok(pyzmq_client(&format!("tcp://{lw}"), 4));
    // The echoing REP ends after its four requests.
    let (code, _, err) = rep.finish();
    assert_eq!(code, Some(0), "{err:?}");
    // lwmq ls: the proxy's two sockets, bound to the names, shown as adopted.
    let out = run(&["ls", "--json"], b"");
    let listing: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let me = listing
        .iter()
        .find(|p| p["pid"] == act.pid())
        .unwrap_or_else(|| panic!("the proxy (pid {}) is listed: {listing:?}", act.pid()));
    let bound: Vec<(String, String)> = me["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let t = s["socket_type"].as_str().unwrap().to_owned();
            s["bound"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |b| (t.clone(), b.as_str().unwrap().to_owned()))
        })
        .collect();
    assert!(
        bound.contains(&(
            "ROUTER".into(),
            format!("systemd://web (adopted tcp listener {lw})")
        )),
        "{bound:?}"
    );
    assert!(
        bound.contains(&(
            "DEALER".into(),
            format!("systemd://admin (adopted tcp listener {la})")
        )),
        "{bound:?}"
    );
}

/// `Accept=yes`: each connection is passed to a process of its own, as a connected
/// descriptor (`systemd://0`, by index); each is served.
#[test]
fn accept_yes_each_connection_is_served() {
    let _w = watchdog(LIMIT);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let act = activate(&[
        "--accept",
        "-l",
        &listen,
        &lwmq_bin(),
        "rep",
        "--bind",
        "systemd://0",
        "-n",
        "1",
        "-q",
    ]);
    wait_listening(&act, 1);
    let ep = format!("tcp://{listen}");
    let mut pids = Vec::new();
    for _ in 0..2 {
        expect_ok(pyzmq_client(&ep, 1));
        let spawned = stderr_until(&act, "Spawned");
        pids.push(
            spawned
                .rsplit(' ')
                .next()
                .unwrap()
                .trim_end_matches('.')
                .to_owned(),
        );
    }
    assert_ne!(pids[0], pids[1], "each connection had its own process");
}

/// `fd://N` on descriptors a parent passed: a listening one to --bind, and a connected
/// one (inetd style, `--accept`) to connect.
#[test]
fn inherited_descriptors_with_fd_uris() {
    let _w = watchdog(LIMIT);
    let listen = format!("127.0.0.1:{}", free_port());
    let act = activate(&["-l", &listen, &lwmq_bin(), "rep", "--bind", "fd://3", "-q"]);
    wait_listening(&act, 1);
    expect_ok(pyzmq_client(&format!("tcp://{listen}"), 2));
    assert_eq!(
        stderr_until(&act, "lwmq: bound"),
        format!("lwmq: bound tcp://{listen}")
    );

    let listen = format!("127.0.0.1:{}", free_port());
    let act = activate(&[
        "--accept",
        "-l",
        &listen,
        &lwmq_bin(),
        "rep",
        "fd://3",
        "-n",
        "1",
        "-q",
    ]);
    wait_listening(&act, 1);
    expect_ok(pyzmq_client(&format!("tcp://{listen}"), 1));
}

/// No activation, a foreign `LISTEN_PID`, an unknown name: one clear line, exit code 1.
#[test]
fn missing_or_foreign_activation_is_a_clear_error() {
    let _w = watchdog(LIMIT);
    let _ = python();
    // No activation at all.
    let mut c = lwmq();
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        c.env_remove(k);
    }
    let out = c.args(["rep", "--bind", "systemd://web"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("systemd://web") && err.contains("LISTEN_FDS is not set"),
        "{err}"
    );

    // Foreign: the activation is for the shell, lwmq is its child.
    let listen = format!("127.0.0.1:{}", free_port());
    let script = format!("{} rep --bind systemd://web; exit $?", lwmq_bin());
    let act = activate(&["-l", &listen, "--fdname=web", "sh", "-c", &script]);
    wait_listening(&act, 1);
    let _conn = std::net::TcpStream::connect(&listen).unwrap();
    let line = stderr_until(&act, "lwmq:");
    assert!(
        line.contains("meant for process")
            && line.contains("not this one")
            && line.contains("\"web\""),
        "{line}"
    );
    let (code, _, _) = act.finish();
    assert_eq!(code, Some(1));

    // A name that was not passed: the error lists what was.
    let listen = format!("127.0.0.1:{}", free_port());
    let act = activate(&[
        "-l",
        &listen,
        "--fdname=web",
        &lwmq_bin(),
        "rep",
        "--bind",
        "systemd://admin",
    ]);
    wait_listening(&act, 1);
    let _conn = std::net::TcpStream::connect(&listen).unwrap();
    let line = stderr_until(&act, "lwmq:");
    assert!(
        line.contains("no socket named \"admin\"") && line.contains("fd 3 \"web\""),
        "{line}"
    );
    let (code, _, _) = act.finish();
    assert_eq!(code, Some(1));
}

/// `--notify`: READY=1 reaches the NOTIFY_SOCKET once lwmq is bound, and WATCHDOG=1
/// follows when WATCHDOG_USEC is set.
#[test]
fn notify_reaches_the_notify_socket() {
    let _w = watchdog(LIMIT);
    let dir = common::TempDir::new("notify");
    let path = dir.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let notify = format!("NOTIFY_SOCKET={}", path.display());
    let act = activate(&[
        "-l",
        &listen,
        "--fdname=web",
        "-E",
        &notify,
        "-E",
        "WATCHDOG_USEC=200000",
        &lwmq_bin(),
        "rep",
        "--bind",
        "systemd://web",
        "--notify",
        "-q",
    ]);
    wait_listening(&act, 1);
    let _conn = std::net::TcpStream::connect(&listen).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "READY=1\n");
    let bound = stderr_until(&act, "lwmq: bound");
    assert!(bound.ends_with(&listen), "{bound}");
    let n = sock.recv(&mut buf).expect("a watchdog notification");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "WATCHDOG=1\n");
}
