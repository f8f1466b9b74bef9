//! Heartbeats against libzmq: a peer that stops answering (its process is frozen with
//! SIGSTOP, so the kernel keeps the TCP connection open) is detected by our PINGs going
//! unanswered, and the connection is dropped and reported.
mod common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use lwmq::{Context, EventKind, Message, SocketType};

#[test]
fn frozen_libzmq_peer_is_detected_by_heartbeat() {
    let _w = common::watchdog(Duration::from_secs(120));
    let mut py = common::KillOnDrop(common::spawn_py(
        "socket_peer.py",
        &["REP", "bind", "tcp://127.0.0.1:*", "echo", "1000"],
    ));
    let out = py.0.stdout.take().expect("piped");
    let mut lines = BufReader::new(out).lines();
    let endpoint = loop {
        let l = lines.next().expect("the peer prints its endpoint").unwrap();
        if let Some(ep) = l.strip_prefix("ENDPOINT ") {
            break ep.to_owned();
        }
    };
    let ctx = Context::new();
    let req = ctx.socket(SocketType::Req).unwrap();
    req.set_heartbeat_interval(Some(Duration::from_millis(50)));
    req.set_heartbeat_timeout(Some(Duration::from_millis(300)));
    req.set_recv_timeout(Some(Duration::from_secs(30)));
    let mon = req.monitor();
    req.connect(&endpoint).unwrap();
    req.send("ping?").unwrap();
    assert_eq!(req.recv().unwrap(), Message::from("ping?"));
    // Idle for a while: heartbeats keep the connection up.
    assert!(
        mon.wait_for(EventKind::Disconnected, Duration::from_millis(500))
            .is_none(),
        "a live peer answers our PINGs"
    );
    let stopped = Command::new("kill")
        .args(["-STOP", &py.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let e = mon
        .wait_for(EventKind::Disconnected, Duration::from_secs(30))
        .expect("the frozen peer is detected");
    assert!(e.detail.contains("heartbeat"), "{}", e.detail);
}
