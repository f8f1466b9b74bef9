//! The checker can fail: a run whose producers misbehave on purpose (`inject`: a
//! duplicated, a reordered, a corrupted message, a leaked descriptor) must be reported
//! with a violation that names the process and the message, and exit with status 1;
//! the well-behaved producer of the same run must not be named at all.
//!
//! It runs the real harness (network namespaces: needs root, as CI has).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const SCENARIO: &str = r#"
name = "inject"
description = "Producers that misbehave on purpose, one that does not."
duration = "8s"
short_duration = "8s"

[check]
warmup = "1s"

[[process]]
name = "sink"
role = "pull"
bind = ["ipc://inject/sink"]
loss = "never"

[[process]]
name = "dup"
role = "push"
connect = ["ipc://inject/sink"]
rate = 200
inject = "duplicate"

[[process]]
name = "swap"
role = "push"
connect = ["ipc://inject/sink"]
rate = 200
inject = "reorder"

[[process]]
name = "flip"
role = "push"
connect = ["ipc://inject/sink"]
rate = 200
inject = "corrupt"

[[process]]
name = "leaker"
role = "push"
connect = ["ipc://inject/sink"]
rate = 200
inject = "leak-fd"

[[process]]
name = "honest"
role = "push"
connect = ["ipc://inject/sink"]
rate = 200
"#;

fn dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("inject-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test dir");
    d
}

#[test]
fn injected_faults_are_reported_naming_process_and_message() {
    let d = dir();
    let file = d.join("inject.toml");
    std::fs::write(&file, SCENARIO).expect("write scenario");
    let out = d.join("report");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lwmq-burn"))
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .spawn()
        .expect("start lwmq-burn");
    // Watchdog (not a speed assertion): a hung harness fails the test instead of hanging it.
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("lwmq-burn did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1), "violations make the run fail");
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    let reports: Value = serde_json::from_str(&text).expect("json");
    let violations = reports[0]["violations"]
        .as_array()
        .expect("violations")
        .clone();
    let show = serde_json::to_string_pretty(&violations).unwrap_or_default();
    let find = |kind: &str, process: &str, message: Option<&str>| {
        violations.iter().any(|v| {
            v["kind"] == kind
                && v["process"] == process
                && message.is_none_or(|m| v["message"] == m)
        })
    };
    assert!(find("duplicate", "sink#0", Some("dup#0 seq 50")), "{show}");
    assert!(find("reorder", "sink#0", Some("swap#0 seq 50")), "{show}");
    assert!(find("corrupt", "sink#0", Some("flip#0 seq 50")), "{show}");
    assert!(
        violations.iter().any(|v| v["kind"] == "leak"
            && v["process"] == "leaker#0"
            && v["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("descriptors"))),
        "{show}"
    );
    // The corrupted message never arrived intact: that is a loss, of that message.
    assert!(find("loss", "sink#0", Some("flip#0 seq 50")), "{show}");
    for v in &violations {
        let named = format!("{} {}", v["process"], v["message"]);
        assert!(
            !named.contains("honest"),
            "a violation blames the honest producer: {show}"
        );
    }
    // Nothing is left behind, even by a failed run.
    let ns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    let own = format!("lwb-{}-", child.id());
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains(&own),
        "namespaces of the run are still there"
    );
    let _ = std::fs::remove_dir_all(&d);
}
