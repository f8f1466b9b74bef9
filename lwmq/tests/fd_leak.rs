//! 1,000 cycles of create/connect/send/close must leave no file descriptor and no
//! thread behind (counted in /proc/self/fd and /proc/self/task).
//!
//! One test function only, so that no other test's threads or descriptors come and
//! go while we count.
mod common;

use std::time::{Duration, Instant};

use lwmq::{Context, Message, SocketType};

use common::peer::{fd_count as fds, thread_count as threads};

/// Waits for the counts to come back to the baseline (connections are closed by the
/// peer's I/O thread after it sees the end of the stream), then compares them.
fn settle(fd0: usize, th0: usize, what: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    while (fds() != fd0 || threads() != th0) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    if fds() != fd0 {
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            eprintln!("{:?} -> {:?}", e.path(), std::fs::read_link(e.path()));
        }
    }
    assert_eq!(fds(), fd0, "{what}: file descriptors leaked");
    assert_eq!(threads(), th0, "{what}: threads leaked");
}

fn cycles(bind: &str, fresh_context: bool) {
    let server = Context::new();
    let pull = server.socket(SocketType::Pull).unwrap();
    let mon = pull.monitor();
    let ep = pull.bind(bind).unwrap();
    // inproc names live in one context.
    let shared = if bind.starts_with("inproc") {
        server.clone()
    } else {
        Context::new()
    };
    let cycle = |i: u32| {
        let ctx = if fresh_context {
            Context::new()
        } else {
            shared.clone()
        };
        let push = ctx.socket(SocketType::Push).unwrap();
        push.connect(&ep).unwrap();
        push.send(i.to_be_bytes().to_vec()).unwrap();
        assert_eq!(
            pull.recv().unwrap(),
            Message::from(i.to_be_bytes().to_vec())
        );
        drop(push);
        drop(ctx);
    };
    // Warm up: the shared context's I/O thread starts on first use.
    cycle(0);
    if !bind.starts_with("inproc") {
        // The baseline is taken once the server has closed its side too.
        mon.wait_for(lwmq::EventKind::Disconnected, Duration::from_secs(60))
            .expect("the server sees the first client go");
    }
    let (fd0, th0) = (fds(), threads());
    for i in 1..=1000 {
        cycle(i);
    }
    settle(fd0, th0, &format!("{bind}, fresh context: {fresh_context}"));
}

#[test]
fn thousand_cycles_leave_nothing_behind() {
    let _w = common::watchdog(Duration::from_secs(600));
    cycles("tcp://127.0.0.1:0", false);
    cycles("tcp://127.0.0.1:0", true);
    let path = std::env::temp_dir().join(format!("lwmq-fd-leak-{}.sock", std::process::id()));
    cycles(&format!("unix://{}", path.display()), true);
    cycles(&format!("inproc://fd-leak-{}", std::process::id()), false);
    // Everything closed: only the watchdog's thread and the test's own remain.
    let (fd0, th0) = (fds(), threads());
    {
        let ctx = Context::new();
        let s = ctx.socket(SocketType::Rep).unwrap();
        s.bind("tcp://127.0.0.1:0").unwrap();
    }
    settle(fd0, th0, "a context that bound and was dropped");
    assert!(!path.exists(), "the unix socket file is removed on close");
}
