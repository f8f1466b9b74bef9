//! 1,000 cycles of create/connect/send/close must leave no file descriptor and no
//! thread behind (counted in /proc/self/fd and /proc/self/task).
//!
//! One test function only, so that no other test's threads or descriptors come and
//! go while we count.
//!
//! The counts are of the whole process, and any process on the host can open a
//! connection to it: `lwmq ls` (and the `cli_ls` tests of any other run on the machine)
//! connects to every context's introspection socket, and a context whose snapshot is
//! being taken when its last handle drops is dropped by the introspection thread, later.
//! So a baseline is only taken while every live context of the test has introspection
//! off (nobody outside can reach the process then); the contexts made and dropped in the
//! cycles have it on, so 1,000 introspection servers must leave nothing behind too. The
//! test makes the outside interference certain instead of occasional: a child process
//! (this test binary re-run with [`ASKER`] set) asks this process's introspection
//! servers questions in a loop for the whole test.
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

/// Set in the child that asks the parent's introspection servers: the parent's pid.
const ASKER: &str = "LWMQ_FD_LEAK_ASKER";

/// A context no process outside can reach (no introspection server).
fn unreachable_context() -> Context {
    Context::builder().introspect(false).build()
}

/// In the child: queries every introspection server of process `pid`, over and over,
/// until the parent closes our stdin (or exits).
fn ask_forever(pid: u32) {
    use std::io::Read;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read(&mut [0u8; 1]);
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    common::peer::say("READY", pid);
    let mut asked = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
        for name in lwmq::introspect::parse_proc_net_unix(&text) {
            if lwmq::introspect::pid_from_name(&name) == Some(pid)
                && lwmq::introspect::query(&name).is_ok()
            {
                asked += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    common::peer::say("ASKED", asked);
}

fn cycles(bind: &str, fresh_context: bool) {
    let server = unreachable_context();
    let pull = server.socket(SocketType::Pull).unwrap();
    let mon = pull.monitor();
    let ep = pull.bind(bind).unwrap();
    // inproc names live in one context.
    let shared = if bind.starts_with("inproc") {
        server.clone()
    } else {
        unreachable_context()
    };
    let cycle = |i: u32| {
        // The warm-up's context is dropped before the baseline: it must not be one an
        // outside snapshot could keep alive past its drop.
        let ctx = if fresh_context && i > 0 {
            Context::new()
        } else if fresh_context {
            unreachable_context()
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
    if let Ok(pid) = std::env::var(ASKER) {
        ask_forever(pid.parse().expect("the parent's pid"));
        return;
    }
    let _w = common::watchdog(Duration::from_secs(600));
    // Somebody running `lwmq ls` on this host all along.
    let mut asker = common::peer::Peer::from_child(
        std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "thousand_cycles_leave_nothing_behind",
                "--nocapture",
            ])
            .args(["--test-threads=1", "-q"])
            .env(ASKER, std::process::id().to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the asking process"),
    );
    asker.expect("READY");
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
    drop(asker.child.0.stdin.take());
    let asked: u64 = asker.expect("ASKED").parse().expect("a count");
    assert!(
        asked > 0,
        "the asking process reached this process's contexts"
    );
}
