//! End to end against libzmq: the built `lwmq` binary talking to pyzmq peers
//! (`lwmq/tests/py/cli_peer.py`, in the venv made by `scripts/setup-test-env.sh`).

mod common;

use std::time::Duration;

use common::{Proc, run, watchdog};

const LIMIT: Duration = Duration::from_secs(120);

fn endpoint_of(peer: &Proc) -> String {
    let line = peer.stdout_line();
    line.strip_prefix("ENDPOINT ")
        .unwrap_or_else(|| panic!("the python peer said {line:?}"))
        .to_owned()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn lwmq_send_to_pyzmq_pull() {
    let _w = watchdog(LIMIT);
    let peer = Proc::python("cli_peer.py", &["pull", "1"]);
    let ep = endpoint_of(&peer);
    let out = run(&["send", &ep, "from", "lwmq"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(peer.stdout_line(), "from\tlwmq");
}

#[test]
fn pyzmq_push_to_lwmq_recv() {
    let _w = watchdog(LIMIT);
    let peer = Proc::python("cli_peer.py", &["push", "from", "pyzmq"]);
    let ep = endpoint_of(&peer);
    let out = run(&["recv", &ep, "-n", "1", "-t", "30s"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from\tpyzmq\n");
}

#[test]
fn lwmq_req_to_pyzmq_rep() {
    let _w = watchdog(LIMIT);
    let peer = Proc::python("cli_peer.py", &["rep", "1", "answer"]);
    let ep = endpoint_of(&peer);
    let out = run(&["req", &ep, "question", "-t", "30s"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "answer\n");
    assert_eq!(peer.stdout_line(), "question");
}

#[test]
fn pyzmq_req_to_lwmq_rep_exec() {
    let _w = watchdog(LIMIT);
    // The pyzmq REQ binds and lwmq rep connects to it (either side may bind).
    let peer = Proc::python("cli_peer.py", &["req", "shout"]);
    let ep = endpoint_of(&peer);
    let rep = Proc::lwmq(&["rep", &ep, "-n", "1", "-q", "--exec", "tr a-z A-Z"]);
    assert_eq!(peer.stdout_line(), "SHOUT");
    let (code, _, err) = rep.finish();
    assert_eq!(code, Some(0), "{err:?}");
}

#[test]
fn pyzmq_pub_to_lwmq_sub_with_topic() {
    let _w = watchdog(LIMIT);
    let weather = Proc::python("cli_peer.py", &["pub", "weather", "rain"]);
    let ep = endpoint_of(&weather);
    let out = run(
        &["sub", &ep, "--topic", "weather", "-n", "2", "-t", "30s"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "weather\train\nweather\train\n"
    );
    // A topic nobody publishes: nothing arrives, and the timeout says so.
    let out = run(
        &["sub", &ep, "--topic", "sport", "-n", "1", "-t", "500ms"],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
}

#[test]
fn lwmq_dealer_to_pyzmq_router() {
    let _w = watchdog(LIMIT);
    let peer = Proc::python("cli_peer.py", &["router", "1"]);
    let ep = endpoint_of(&peer);
    let out = run(
        &[
            "dealer",
            &ep,
            "--routing-id",
            "me",
            "hi",
            "-n",
            "1",
            "-t",
            "30s",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert_eq!(peer.stdout_line(), "6d65\thi");
}
