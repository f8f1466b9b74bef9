//! End to end: `lwmq ls` sees other lwmq processes, their sockets on every transport
//! and the connections between them, and forgets a process once it exits.

mod common;

use std::time::Duration;

use common::{Proc, TempDir, run, unique, watchdog};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn ls_json() -> Vec<Value> {
    let out = run(&["ls", "--json"], b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("ls --json prints a JSON array")
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn process(listing: &[Value], pid: u32) -> Option<&Value> {
    listing.iter().find(|p| p["pid"] == pid)
}

/// What one proxy of the ring should look like: its PULL bound at `bound` and
/// connected to from `from`, its PUSH connected to `to` at `to_pid`.
struct Expect<'a> {
    pid: u32,
    bound: &'a str,
    from: u32,
    to: &'a str,
    to_pid: u32,
}

/// Why `listing` does not (yet) match `e`, or `None` if it does.
fn mismatch(listing: &[Value], e: &Expect<'_>) -> Option<String> {
    let Some(p) = process(listing, e.pid) else {
        return Some(format!("pid {} not listed", e.pid));
    };
    if p["program"] != "lwmq" {
        return Some(format!("pid {}: program {}", e.pid, p["program"]));
    }
    let sockets = items(&p["sockets"]);
    let of_type = |t: &str| sockets.iter().find(|s| s["socket_type"] == t);
    let Some(pull) = of_type("PULL") else {
        return Some(format!("pid {}: no PULL socket", e.pid));
    };
    let Some(push) = of_type("PUSH") else {
        return Some(format!("pid {}: no PUSH socket", e.pid));
    };
    if !items(&pull["bound"]).iter().any(|b| b == e.bound) {
        return Some(format!(
            "pid {}: PULL bound {} not {}",
            e.pid, pull["bound"], e.bound
        ));
    }
    if !items(&push["connected"]).iter().any(|c| c == e.to) {
        return Some(format!(
            "pid {}: PUSH connected {} not {}",
            e.pid, push["connected"], e.to
        ));
    }
    let accepted = items(&pull["connections"])
        .iter()
        .any(|c| c["direction"] == "accepted" && c["peer_pid"] == e.from);
    if !accepted {
        return Some(format!(
            "pid {}: no connection accepted from pid {}: {}",
            e.pid, e.from, pull["connections"]
        ));
    }
    let connected = items(&push["connections"])
        .iter()
        .any(|c| c["direction"] == "connected" && c["peer_pid"] == e.to_pid);
    if !connected {
        return Some(format!(
            "pid {}: no connection to pid {}: {}",
            e.pid, e.to_pid, push["connections"]
        ));
    }
    None
}

#[test]
fn ls_shows_three_processes_on_tcp_unix_ipc_and_forgets_an_exited_one() {
    let dir = TempDir::new("ls");
    let unix = format!("unix://{}", dir.path("p2.sock").display());
    ring(&unix, &format!("ipc://{}", unique("ls")));
}

/// The same without the shared-memory transport (an abstract Unix socket instead).
#[test]
fn ls_shows_three_processes_on_tcp_unix_abstract_unix() {
    let dir = TempDir::new("ls");
    let unix = format!("unix://{}", dir.path("p2.sock").display());
    ring(&unix, &format!("unix://@{}", unique("ls")));
}

/// A ring of three streamer proxies (PULL in, PUSH out), each binding one transport
/// and connecting over another: p1 --third--> p3 --unix--> p2 --tcp--> p1. `ls` must
/// show the three, their sockets, endpoints and connections with the peers' pids, and
/// forget p2 once it exits.
fn ring(unix: &str, third: &str) {
    let _w = watchdog(LIMIT);
    let p1 = Proc::lwmq(&[
        "proxy",
        "--pattern",
        "streamer",
        "tcp://127.0.0.1:0",
        &format!(">{third}"),
    ]);
    let tcp = p1.bound_endpoint();
    let p2 = Proc::lwmq(&["proxy", "--pattern", "streamer", unix, &format!(">{tcp}")]);
    assert_eq!(p2.bound_endpoint(), unix);
    let p3 = Proc::lwmq(&["proxy", "--pattern", "streamer", third, &format!(">{unix}")]);
    assert_eq!(p3.bound_endpoint(), third);
    let (a, b, c) = (p1.pid(), p2.pid(), p3.pid());
    let expected = [
        Expect {
            pid: a,
            bound: &tcp,
            from: b,
            to: third,
            to_pid: c,
        },
        Expect {
            pid: b,
            bound: unix,
            from: c,
            to: &tcp,
            to_pid: a,
        },
        Expect {
            pid: c,
            bound: third,
            from: a,
            to: unix,
            to_pid: b,
        },
    ];
    // Connections take a moment to come up: look again until everything is there
    // (the watchdog ends a test that never gets there; the last mismatch is printed).
    let mut last = String::new();
    loop {
        let listing = ls_json();
        let problems: Vec<String> = expected
            .iter()
            .filter_map(|e| mismatch(&listing, e))
            .collect();
        if problems.is_empty() {
            break;
        }
        let now = problems.join("; ");
        if now != last {
            eprintln!("ls: not yet: {now}");
            last = now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The text form names the processes, their sockets and endpoints.
    let out = run(&["ls"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    for (pid, ep) in [(a, tcp.as_str()), (b, unix), (c, third)] {
        assert!(text.contains(&format!("{pid} lwmq")), "{text}");
        assert!(text.contains(&format!("bound      {ep}")), "{text}");
    }

    // p2 exits: it is gone from the listing at once (its name died with it).
    drop(p2);
    let listing = ls_json();
    assert!(process(&listing, b).is_none(), "pid {b} still listed");
    assert!(process(&listing, a).is_some() && process(&listing, c).is_some());
}

#[test]
fn lwmq_introspect_0_hides_a_process() {
    let _w = watchdog(LIMIT);
    let shown = Proc::lwmq(&["pull", "--bind", "tcp://127.0.0.1:0"]);
    shown.bound_endpoint();
    let mut cmd = common::lwmq();
    cmd.args(["pull", "--bind", "tcp://127.0.0.1:0"])
        .env("LWMQ_INTROSPECT", "0");
    let hidden = Proc::spawn(cmd);
    hidden.bound_endpoint();
    let listing = ls_json();
    let p = process(&listing, shown.pid()).expect("the process without the variable is listed");
    assert_eq!(p["sockets"][0]["socket_type"], "PULL");
    assert!(process(&listing, hidden.pid()).is_none());
}
