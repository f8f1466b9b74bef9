//! 1,000 cycles of create/connect/send/close over `ipc://` leave no file descriptor, no
//! shared-memory mapping and no thread behind (counted in /proc/self/fd, /proc/self/maps
//! and /proc/self/task), and no name in /proc/net/unix.
//!
//! One test function only, so that no other test's threads or descriptors come and go
//! while we count.
mod common;

use std::time::{Duration, Instant};

use lwmq::{Context, EventKind, Message, SocketType};

use common::peer::{fd_count as fds, shm_map_count as maps, thread_count as threads};

fn counts() -> (usize, usize, usize) {
    (fds(), maps(), threads())
}

/// Waits for the counts to come back to the baseline (the binder's ipc thread sees each
/// client's hang-up asynchronously), then compares them.
fn settle(base: (usize, usize, usize), what: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    while counts() != base && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        counts(),
        base,
        "{what}: (descriptors, lwmq mappings, threads) leaked"
    );
}

fn cycles(domain: &str, fresh_context: bool) {
    let server = Context::new();
    let pull = server.socket(SocketType::Pull).unwrap();
    pull.set_ipc_domain(domain);
    pull.set_recv_timeout(Some(Duration::from_secs(30)));
    let mon = pull.monitor();
    let ep = pull.bind("ipc://leak").unwrap();
    let shared = Context::new();
    let cycle = |i: u32| {
        let ctx = if fresh_context {
            Context::new()
        } else {
            shared.clone()
        };
        let push = ctx.socket(SocketType::Push).unwrap();
        push.set_ipc_domain(domain);
        push.connect(&ep).unwrap();
        push.send(i.to_be_bytes().to_vec()).unwrap();
        assert_eq!(
            pull.recv().unwrap(),
            Message::from(i.to_be_bytes().to_vec())
        );
        drop(push);
        drop(ctx);
        mon.wait_for(EventKind::Disconnected, Duration::from_secs(30))
            .expect("the binder sees the client go");
    };
    // Warm up: the shared context's ipc thread starts on first use.
    cycle(0);
    // The binder lets go of a dead connection's pipe when it next looks at it.
    assert!(pull.try_recv().is_err());
    let base = counts();
    for i in 1..=1000 {
        cycle(i);
        // Dead pipes do not pile up even though the socket only ever reads the newest
        // one: each new connection sweeps the finished ones.
        let (f, m, _) = counts();
        assert!(
            f <= base.0 + 4 && m <= base.1 + 3,
            "cycle {i}: {f} descriptors and {m} mappings, baseline {base:?}"
        );
    }
    assert!(pull.try_recv().is_err());
    settle(base, &format!("fresh context: {fresh_context}"));
}

#[test]
fn thousand_ipc_cycles_leave_nothing_behind() {
    let _w = common::watchdog(Duration::from_secs(600));
    let domain = format!("leak-{}", std::process::id());
    let base = counts();
    cycles(&domain, false);
    cycles(&domain, true);
    settle(base, "after both servers closed");
    common::peer::assert_clean(&domain);
}
