//! End to end: typed messages (the library's `serde` feature) and the tool's `--json`
//! are one encoding. Nested values go from the library to `lwmq recv --json`, and from
//! `lwmq send --json` to the library, and come out equal.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Proc, run, watchdog};
use lwmq::{Context, SocketType};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Mode {
    Idle,
    Busy { jobs: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Channel {
    id: i64,
    gains: Vec<f64>,
    label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Status {
    host: String,
    uptime: u64,
    ok: bool,
    channels: Vec<Channel>,
    modes: BTreeMap<String, Mode>,
    matrix: Vec<Vec<i32>>,
}

fn sample() -> Status {
    Status {
        host: "détecteur-7".into(),
        uptime: u64::MAX,
        ok: true,
        channels: vec![
            Channel {
                id: -3,
                gains: vec![0.5, -1.25, 1e300],
                label: Some("east".into()),
            },
            Channel {
                id: 4,
                gains: vec![],
                label: None,
            },
        ],
        modes: [
            ("a".to_owned(), Mode::Idle),
            ("b".to_owned(), Mode::Busy { jobs: 9 }),
        ]
        .into(),
        matrix: vec![vec![1, 2, 3], vec![], vec![-7]],
    }
}

#[test]
fn library_to_lwmq_recv_json() {
    let _w = watchdog(LIMIT);
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
    let ctx = Context::builder().introspect(false).build();
    let push = ctx.socket(SocketType::Push).unwrap();
    push.connect(&ep).unwrap();
    let status = sample();
    push.send_typed("status", &status).unwrap();
    push.send_value(&vec![Some(1u8), None]).unwrap();
    let (code, lines, err) = recv.finish();
    assert_eq!(code, Some(0), "{err:?}");
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["frames"][0]["value"], "status");
    // What the tool shows is the value as JSON: serde's own JSON form of it.
    assert_eq!(
        first["frames"][1]["value"],
        serde_json::to_value(&status).unwrap()
    );
    assert_eq!(
        first["frames"][1]["value"]["modes"]["b"],
        json!({"Busy": {"jobs": 9}})
    );
    let second: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["frames"][0]["value"], json!([1, null]));
}

#[test]
fn lwmq_send_json_to_library() {
    let _w = watchdog(LIMIT);
    let ctx = Context::builder().introspect(false).build();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_recv_timeout(Some(Duration::from_secs(30)));
    let ep = pull.bind("tcp://127.0.0.1:0").unwrap();
    let status = sample();
    let text = serde_json::to_string(&status).unwrap();
    let out = run(&["send", &ep, "--json", "\"status\"", &text], b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = pull.recv_typed().expect("a typed message");
    assert_eq!(msg.kind, "status");
    assert_eq!(msg.value::<Status>().unwrap(), status);

    // A value that does not fit the type asked for is an error, not a panic.
    let out = run(&["send", &ep, "--json", r#"{"host": 5}"#], b"");
    assert_eq!(out.status.code(), Some(0));
    let e = pull.recv_value::<Status>().unwrap_err();
    assert!(matches!(e, lwmq::Error::Codec(_)), "{e}");
}
