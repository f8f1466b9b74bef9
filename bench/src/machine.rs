//! What is recorded with every result: the machine, the compiler, the commit and the
//! contenders' versions.

use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// UTC, ISO 8601.
    pub date: String,
    pub cpu: String,
    /// Logical CPUs available to us.
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    /// `git rev-parse HEAD` of the repository, with `-dirty` if the tree has changes.
    pub commit: String,
    pub profile: String,
    pub contenders: Vec<(String, String)>,
    /// The 1-minute load average when the run started: others' work skews results.
    pub loadavg_at_start: String,
}

fn first_line_of(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    if !o.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()?
            .trim()
            .to_owned(),
    )
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let Some(head) = first_line_of("git", &["-C", dir, "rev-parse", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = Command::new("git")
        .args(["-C", dir, "status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty { format!("{head}-dirty") } else { head }
}

pub fn collect(contenders: Vec<(String, String)>) -> Meta {
    Meta {
        date: first_line_of("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
        cpu: cpu_model(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        rustc: env!("BENCH_RUSTC_VERSION").to_owned(),
        commit: commit(),
        profile: if cfg!(debug_assertions) {
            "debug (numbers are not representative)".into()
        } else {
            "release".into()
        },
        contenders,
        loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default(),
    }
}
