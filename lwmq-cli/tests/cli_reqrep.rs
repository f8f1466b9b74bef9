//! End to end: `lwmq req --resend` failing over between `lwmq rep` processes, and
//! `lwmq rep` de-duplicating the copies.

mod common;

use std::time::Duration;

use common::{Proc, TempDir, run, watchdog};

const LIMIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn req_resend_fails_over_from_a_rep_killed_while_handling() {
    let _w = watchdog(LIMIT);
    let a_ep = format!("tcp://127.0.0.1:{}", free_port());
    let b_ep = format!("tcp://127.0.0.1:{}", free_port());
    // A prints the request it got, then its command never ends.
    let mut a = Proc::lwmq(&["rep", "--bind", &a_ep, "--exec", "sleep 60"]);
    a.bound_endpoint();
    let req = Proc::lwmq(&[
        "req",
        &a_ep,
        "--also",
        &b_ep,
        "--resend",
        "300ms",
        "--attempts",
        "20",
        "-t",
        "50s",
        "job",
    ]);
    assert_eq!(a.stdout_line(), "job");
    let b = Proc::lwmq(&["rep", "--bind", &b_ep, "-q", "--exec", "echo answered by B"]);
    b.bound_endpoint();
    let _ = a.child.kill();
    let (code, out, err) = req.finish();
    assert_eq!(code, Some(0), "{err:?}");
    assert_eq!(out, vec!["answered by B".to_owned()]);
    assert!(err.iter().any(|l| l.contains("resends")), "{err:?}");
}

#[test]
fn rep_runs_a_slow_command_once_for_all_copies() {
    let _w = watchdog(LIMIT);
    let dir = TempDir::new("dedup");
    let log = dir.path("runs");
    let cmd = format!("echo run >> {}; sleep 1; echo done", log.display());
    let rep = Proc::lwmq(&[
        "rep",
        "--bind",
        "tcp://127.0.0.1:0",
        "-q",
        "-n",
        "1",
        "--exec",
        &cmd,
    ]);
    let ep = rep.bound_endpoint();
    let out = run(
        &["req", &ep, "--resend", "200ms", "--attempts", "20", "job"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let (code, _, err) = rep.finish();
    assert_eq!(code, Some(0), "{err:?}");
    assert!(
        err.iter().any(|l| l.contains("copies of requests dropped")),
        "{err:?}"
    );
    let runs = std::fs::read_to_string(&log).expect("the command ran");
    assert_eq!(runs, "run\n", "the command ran once");
}

#[test]
fn req_resend_gives_up_with_exit_code_3() {
    let _w = watchdog(LIMIT);
    let rep = Proc::lwmq(&[
        "rep",
        "--bind",
        "tcp://127.0.0.1:0",
        "-q",
        "--exec",
        "sleep 60",
    ]);
    let ep = rep.bound_endpoint();
    let out = run(
        &["req", &ep, "--resend", "100ms", "--attempts", "2", "job"],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no reply after 2 attempts to 1 peer"), "{err}");
}

#[test]
fn ls_shows_the_rep_de_duplication_counters() {
    let _w = watchdog(LIMIT);
    let rep = Proc::lwmq(&[
        "rep",
        "--bind",
        "tcp://127.0.0.1:0",
        "-q",
        "--exec",
        "sleep 0.6; echo ok",
    ]);
    let ep = rep.bound_endpoint();
    let out = run(
        &["req", &ep, "--resend", "100ms", "--attempts", "50", "job"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run(&["ls", "--json"], b"");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listing: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("ls --json prints a JSON array");
    let me = listing
        .iter()
        .find(|p| p["pid"] == rep.pid())
        .expect("the REP process is listed");
    let sock = &me["sockets"][0];
    assert_eq!(sock["socket_type"], "REP");
    let dropped = sock["reqrep"]["duplicates_dropped"]
        .as_u64()
        .expect("counter");
    assert!(dropped >= 1, "{sock}");
    // And the text listing shows them.
    let out = run(&["ls"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("duplicates-dropped"), "{text}");
}
