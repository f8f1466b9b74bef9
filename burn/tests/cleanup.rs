//! The harness cleans up after itself: on Ctrl-C it kills its processes and removes its
//! namespaces; when it is killed itself, its processes exit on their own (their stdin
//! closes) and the next run removes the namespaces it left.
//!
//! Runs the real harness (network namespaces: needs root, as CI has).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Deadlock guard for each wait (not a speed assertion).
const GUARD: Duration = Duration::from_secs(120);

fn scenario(marker: &str, duration: &str) -> String {
    format!(
        r#"
name = "cleanup"
description = "A producer and a sink, to be interrupted."
duration = "{duration}"
short_duration = "{duration}"

[[process]]
name = "sink"
role = "pull"
bind = ["ipc://{marker}/sink"]

[[process]]
name = "producer"
role = "push"
connect = ["ipc://{marker}/sink"]
rate = 100
"#
    )
}

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test dir");
    d
}

fn start(d: &Path, marker: &str, duration: &str) -> Child {
    let file = d.join(format!("{marker}.toml"));
    std::fs::write(&file, scenario(marker, duration)).expect("write scenario");
    Command::new(env!("CARGO_BIN_EXE_lwmq-burn"))
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(d.join(format!("{marker}-report")))
        .spawn()
        .expect("start lwmq-burn")
}

fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("lwb-{pid}-")))
        .map(str::to_owned)
        .collect()
}

/// Pids of processes whose command line mentions `marker` (the roles of one run).
fn roles_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(marker)
            && String::from_utf8_lossy(&cmd).contains("role")
        {
            out.push(pid);
        }
    }
    out
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < GUARD, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(c: &mut Child) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = c.try_wait().expect("wait") {
            return s;
        }
        if t0.elapsed() > GUARD {
            let _ = c.kill();
            panic!("lwmq-burn did not exit");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ctrl_c_kills_the_processes_and_removes_the_namespaces() {
    let d = dir("ctrl-c");
    let marker = format!("cc{}", std::process::id());
    let mut c = start(&d, &marker, "5m");
    let pid = c.id();
    wait_for("the run's processes", || {
        !namespaces_of(pid).is_empty() && roles_with(&marker).len() == 2
    });
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).expect("SIGINT");
    let status = wait_exit(&mut c);
    assert_eq!(
        status.code(),
        Some(1),
        "an interrupted run is not a passed one"
    );
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
    assert_eq!(roles_with(&marker), Vec::<u32>::new());
    let report = std::fs::read_to_string(d.join(format!("{marker}-report/report.json")))
        .expect("report.json");
    assert!(report.contains("\"interrupted\": true"), "{report}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_killed_harness_leaves_namespaces_the_next_run_removes() {
    let d = dir("kill-9");
    let marker = format!("k9{}", std::process::id());
    let mut c = start(&d, &marker, "5m");
    let pid = c.id();
    wait_for("the run's processes", || {
        !namespaces_of(pid).is_empty() && roles_with(&marker).len() == 2
    });
    c.kill().expect("kill -9 the harness");
    let _ = c.wait();
    // Looked at at once (another test's run starting now would remove them already).
    let stale = namespaces_of(pid);
    assert!(
        !stale.is_empty(),
        "kill -9 gave the harness no chance to clean up"
    );
    // Its processes notice their stdin closed and exit.
    wait_for("the roles to exit", || roles_with(&marker).is_empty());
    // The next run, whatever it runs, removes them.
    let next_marker = format!("k9n{}", std::process::id());
    let mut next = start(&d, &next_marker, "1s");
    let status = wait_exit(&mut next);
    assert!(status.success(), "the next run: {status}");
    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "stale: {stale:?}");
    assert_eq!(namespaces_of(next.id()), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&d);
}
