//! End to end: the built `lwmq` binary, in separate processes, talking to itself.

mod common;

use std::time::Duration;

use common::{Proc, TempDir, run, watchdog};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn stdout_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn send_recv_on(endpoint: &str) {
    let _w = watchdog(LIMIT);
    let recv = Proc::lwmq(&["recv", "--bind", endpoint, "-n", "1"]);
    let bound = recv.bound_endpoint();
    let out = run(&["send", &bound, "hello", "two words"], b"");
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    let (code, lines, _) = recv.finish();
    assert_eq!(code, Some(0));
    assert_eq!(lines, ["hello\ttwo words"]);
}

#[test]
fn send_to_recv_over_tcp() {
    send_recv_on("tcp://127.0.0.1:0");
}

#[test]
fn send_to_recv_over_unix() {
    let dir = TempDir::new("unix");
    send_recv_on(&format!("unix://{}", dir.path("s").display()));
}

#[test]
fn send_to_recv_over_ipc() {
    send_recv_on(&format!("ipc://{}", common::unique("sendrecv")));
}

#[test]
fn req_to_rep_with_fixed_reply_and_with_a_command() {
    let _w = watchdog(LIMIT);
    // Fixed reply frames; the REP prints the request it got.
    let rep = Proc::lwmq(&["rep", "--bind", "tcp://127.0.0.1:0", "-n", "1", "pong"]);
    let ep = rep.bound_endpoint();
    let out = run(&["req", &ep, "ping"], b"");
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert_eq!(stdout_text(&out), "pong\n");
    let (code, lines, _) = rep.finish();
    assert_eq!((code, lines), (Some(0), vec!["ping".to_owned()]));

    // A command answers each request: two requests from stdin, two replies.
    let rep = Proc::lwmq(&[
        "rep",
        "--bind",
        "tcp://127.0.0.1:0",
        "-q",
        "--exec",
        "tr a-z A-Z; printf '!'",
    ]);
    let ep = rep.bound_endpoint();
    let out = run(&["req", &ep, "-"], b"hello\nworld\n");
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert_eq!(stdout_text(&out), "HELLO!\nWORLD!\n");
}

#[test]
fn pub_to_sub_filters_by_topic() {
    let _w = watchdog(LIMIT);
    let sub = Proc::lwmq(&[
        "sub",
        "--bind",
        "tcp://127.0.0.1:0",
        "--topic",
        "weather",
        "-n",
        "3",
        "-o",
        "json",
    ]);
    let ep = sub.bound_endpoint();
    // Two publishers repeat their message until killed: subscriptions take a moment
    // to arrive, and PUB drops what nobody subscribed to yet.
    let _sports = Proc::lwmq(&[
        "pub",
        &ep,
        "--topic",
        "sports",
        "goal",
        "-n",
        "0",
        "--interval",
        "20ms",
    ]);
    let _weather = Proc::lwmq(&[
        "pub",
        &ep,
        "--topic",
        "weather",
        "sunny",
        "-n",
        "0",
        "--interval",
        "20ms",
    ]);
    let (code, lines, err) = sub.finish();
    assert_eq!(code, Some(0), "{err:?}");
    assert_eq!(lines.len(), 3);
    for line in lines {
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["socket"], "SUB");
        assert_eq!(v["topic"]["text"], "weather", "{line}");
        assert_eq!(v["frames"], json!([{"size": 5, "text": "sunny"}]), "{line}");
    }
}

#[test]
fn json_values_round_trip_as_msgpack() {
    let _w = watchdog(LIMIT);
    let value = json!({
        "name": "sensor-7",
        "readings": [1, -2, 3.5, [true, null, {"deep": {"er": ["x"]}}]],
        "meta": {"ok": false, "count": 18446744073709551615u64}
    });
    let recv = Proc::lwmq(&[
        "recv",
        "--bind",
        "tcp://127.0.0.1:0",
        "-n",
        "2",
        "--json",
        "-o",
        "json",
    ]);
    let ep = recv.bound_endpoint();
    let out = run(&["send", &ep, "--json", &value.to_string(), "42"], b"");
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    let out = run(&["send", &ep, "--json", "[1,\"a\"]"], b"");
    assert_eq!(out.status.code(), Some(0));
    let (code, lines, err) = recv.finish();
    assert_eq!(code, Some(0), "{err:?}");
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["frames"][0]["value"], value);
    assert_eq!(first["frames"][1], json!({"size": 1, "value": 42}));
    let second: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["frames"][0]["value"], json!([1, "a"]));

    // On the wire it is MessagePack: a plain recv shows the bytes.
    let recv = Proc::lwmq(&[
        "recv",
        "--bind",
        "tcp://127.0.0.1:0",
        "-n",
        "1",
        "-o",
        "hex",
    ]);
    let ep = recv.bound_endpoint();
    assert_eq!(
        run(&["send", &ep, "--json", "[1,\"a\"]"], b"")
            .status
            .code(),
        Some(0)
    );
    let (_, lines, _) = recv.finish();
    assert_eq!(lines, ["9201a161"]);
}

#[test]
fn frames_from_a_file_and_messages_from_stdin() {
    let _w = watchdog(LIMIT);
    let dir = TempDir::new("files");
    let file = dir.path("payload.bin");
    std::fs::write(&file, b"\x00\x01bin\xff").unwrap();
    let recv = Proc::lwmq(&[
        "recv",
        "--bind",
        "tcp://127.0.0.1:0",
        "-n",
        "4",
        "-o",
        "hex",
    ]);
    let ep = recv.bound_endpoint();
    let arg = format!("@{}", file.display());
    let out = run(&["send", &ep, &arg, "@@literal"], b"");
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    let out = run(&["push", &ep, "--hex", "-"], b"0a0b\r\n\nff\n");
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    let (code, lines, _) = recv.finish();
    assert_eq!(code, Some(0));
    assert_eq!(
        lines,
        [
            format!("000162696eff {}", hex(b"@literal")),
            "0a0b".to_owned(),
            "".to_owned(),
            "ff".to_owned(),
        ]
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn timeouts_exit_with_code_3() {
    let _w = watchdog(LIMIT);
    let out = run(
        &[
            "recv",
            "--bind",
            "tcp://127.0.0.1:0",
            "-n",
            "1",
            "-t",
            "200ms",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(3));
    let err = stderr_lines(&out);
    let last = err.last().unwrap();
    assert!(
        last.starts_with("lwmq: ") && last.contains("timed out"),
        "{err:?}"
    );

    // A REQ with nobody answering.
    let rep = Proc::lwmq(&["pull", "--bind", "tcp://127.0.0.1:0"]);
    let ep = rep.bound_endpoint();
    drop(rep);
    let out = run(&["req", &ep, "anyone?", "-t", "300ms"], b"");
    assert_eq!(out.status.code(), Some(3), "{:?}", stderr_lines(&out));
}

#[test]
fn bad_endpoints_and_usage_errors() {
    let _w = watchdog(LIMIT);
    let out = run(&["send", "tcp://127.0.0.1", "x"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_lines(&out);
    assert_eq!(err.len(), 1, "one line: {err:?}");
    assert_eq!(
        err[0],
        "lwmq: invalid endpoint \"tcp://127.0.0.1\": expected host:port"
    );
    let out = run(&["recv", "bogus://x"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_lines(&out)[0].contains("unknown transport \"bogus\""));

    // Usage errors: exit code 2, one line.
    let out = run(&["send", "tcp://h:1", "--foo"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr_lines(&out),
        ["lwmq: unexpected argument '--foo' found (try --help)"]
    );
    assert_eq!(run(&["send"], b"").status.code(), Some(2));
    assert_eq!(
        run(&["send", "tcp://h:1", "--hex", "--json", "x"], b"")
            .status
            .code(),
        Some(2)
    );
    let out = run(&["send", "tcp://127.0.0.1:1"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_lines(&out)[0].contains("nothing to send"));
    let out = run(&["send", "tcp://127.0.0.1:1", "--type", "pull", "x"], b"");
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["send", "tcp://127.0.0.1:1", "--hex", "abc"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_lines(&out)[0].contains("odd number of digits"));
}

#[test]
fn help_documents_exit_codes_and_completions_are_generated() {
    let out = run(&["--help"], b"");
    assert_eq!(out.status.code(), Some(0));
    let help = stdout_text(&out);
    assert!(help.contains("Exit codes: 0 success, 1 error, 2 usage error, 3 timeout"));
    assert!(help.contains("Examples:"));
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell], b"");
        assert_eq!(out.status.code(), Some(0));
        let script = stdout_text(&out);
        assert!(script.contains("lwmq"), "{shell}");
        assert!(script.contains("--topic"), "{shell} completes options");
    }
}

#[test]
fn monitor_prints_connection_events() {
    let _w = watchdog(LIMIT);
    let rep = Proc::lwmq(&["rep", "--bind", "tcp://127.0.0.1:0"]);
    let ep = rep.bound_endpoint();
    // However many events a connection makes, they stop after the handshake: wait
    // for up to 20 and let the timeout end the wait (exit code 3).
    let out = run(
        &[
            "monitor", &ep, "--type", "req", "-n", "20", "-t", "1s", "--json",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{:?}", stderr_lines(&out));
    let events: Vec<Value> = stdout_text(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().all(|e| e["endpoint"] == ep.as_str()),
        "{events:?}"
    );
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let ok = names.iter().position(|n| *n == "handshake-succeeded");
    let connected = names.iter().position(|n| *n == "connected");
    assert!(connected.is_some() && ok > connected, "{names:?}");
    let ok = &events[ok.unwrap()];
    assert!(ok["detail"].as_str().unwrap().contains("REP"), "{events:?}");

    // An incompatible socket type is reported, by name.
    let out = run(
        &["monitor", &ep, "--type", "pull", "-n", "20", "-t", "1s"],
        b"",
    );
    let text = stdout_text(&out);
    assert!(text.contains("handshake-failed-protocol"), "{text}");
    assert!(text.contains("PULL") && text.contains("REP"), "{text}");
    // Waiting for more events than come: timeout, exit code 3.
    let out = run(&["monitor", &ep, "-n", "100", "-t", "300ms"], b"");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn proxy_relays_requests_to_a_worker() {
    let _w = watchdog(LIMIT);
    let proxy = Proc::lwmq(&["proxy", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0"]);
    let frontend = proxy.bound_endpoint();
    let backend = proxy.bound_endpoint();
    let _worker = Proc::lwmq(&["rep", &backend, "-q", "--exec", "rev"]);
    let out = run(&["req", &frontend, "-"], b"hello\nproxy\n");
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert_eq!(stdout_text(&out), "olleh\nyxorp\n");
}

#[test]
fn bench_prints_a_table_for_both_measurements() {
    let _w = watchdog(LIMIT);
    // Tiny counts: this checks that the two processes cooperate, not the speed.
    let out = run(
        &[
            "bench",
            "--round-trips",
            "50",
            "-n",
            "500",
            "--size",
            "16",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["size"], 16);
    assert_eq!(v["latency_us"]["round_trips"], 50);
    assert!(v["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    assert_eq!(v["throughput"]["messages"], 499);
    assert!(v["throughput"]["msg_per_s"].as_f64().unwrap() > 0.0);
    let out = run(
        &["bench", "--mode", "latency", "--round-trips", "20", "-q"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    let table = stdout_text(&out);
    assert!(
        table.contains("latency") && table.contains("round trip"),
        "{table}"
    );
    assert!(!table.contains("throughput"), "{table}");
}

#[test]
fn an_incompatible_peer_is_a_clear_error() {
    let _w = watchdog(LIMIT);
    let rep = Proc::lwmq(&["rep", "--bind", "tcp://127.0.0.1:0"]);
    let ep = rep.bound_endpoint();
    for (cmd, ours) in [("send", "PUSH"), ("sub", "SUB")] {
        let args: Vec<&str> = if cmd == "send" {
            vec![cmd, &ep, "x"]
        } else {
            vec![cmd, &ep]
        };
        let out = run(&args, b"");
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = stderr_lines(&out);
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with(&format!("lwmq: peer at {ep} rejected")),
            "{err:?}"
        );
        assert!(err[0].contains(ours) && err[0].contains("REP"), "{err:?}");
    }
}

#[test]
fn router_answers_req_and_dealer_peers() {
    let _w = watchdog(LIMIT);
    let router = Proc::lwmq(&["router", "--bind", "tcp://127.0.0.1:0", "-n", "2", "ok"]);
    let ep = router.bound_endpoint();
    // A REQ puts an empty delimiter before its request; the answer must keep it.
    let out = run(&["req", &ep, "from-req"], b"");
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert_eq!(stdout_text(&out), "ok\n");
    let out = run(
        &[
            "dealer",
            &ep,
            "--routing-id",
            "D1",
            "from-dealer",
            "-n",
            "1",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert_eq!(stdout_text(&out), "ok\n");
    let (code, lines, _) = router.finish();
    assert_eq!(code, Some(0));
    // Routing id in hex, then the frames.
    assert!(lines[0].ends_with("\t\tfrom-req"), "{lines:?}");
    assert_eq!(lines[1], "4431\tfrom-dealer");
}

/// A command that reads stdin binds and prints its address first: a new user who runs
/// `lwmq pub --bind tcp://127.0.0.1:0 -` sees where to connect before typing anything.
#[test]
fn commands_reading_stdin_bind_and_print_before_the_first_line() {
    let _w = common::watchdog(std::time::Duration::from_secs(120));
    for cmd in ["pub", "push", "send"] {
        let mut c = common::lwmq();
        c.args([cmd, "--bind", "tcp://127.0.0.1:0", "-"])
            .stdin(std::process::Stdio::piped());
        let mut p = common::Proc::spawn(c);
        // stdin stays open and empty: the address must come anyway.
        let ep = p.bound_endpoint();
        assert!(ep.starts_with("tcp://127.0.0.1:"), "{cmd}: {ep}");
        if cmd == "push" {
            let pull = common::Proc::lwmq(&["pull", &ep, "-n", "1", "-t", "60s"]);
            let mut stdin = p.child.stdin.take().unwrap();
            std::io::Write::write_all(&mut stdin, b"typed later\n").unwrap();
            drop(stdin);
            assert_eq!(pull.stdout_line(), "typed later");
        }
    }
}
