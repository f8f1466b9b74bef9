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

/// One cache line of its own (two, against the adjacent-line prefetcher).
#[repr(align(128))]
struct Line(std::sync::atomic::AtomicU64);

/// The machine's floor for a hand-off between two cores: the round trip of a counter
/// bounced between two threads pinned to cores 0 and 1 (each waits for the other's
/// store, then stores; two cache lines move per round trip), median over 16 batches
/// of 200 round trips (fewer if 50 ms pass first: a busy machine that preempts
/// a spinning thread would otherwise stretch this to seconds). Every shared-memory or inproc round trip contains at least
/// this. On a VM it moves with where the hypervisor puts the two vCPUs (on the
/// machine of `docs/benchmarks.md`: about 60, 150 or 600 ns, changing within
/// seconds), so it is measured before and after every run and recorded with it.
/// `None` with fewer than two cores or where pinning fails.
pub fn core_to_core_ns() -> Option<f64> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    const BATCHES: usize = 16;
    const PER_BATCH: u64 = 200;
    const STOP: u64 = u64::MAX;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return None;
    }
    let lines = Arc::new([Line(0.into()), Line(0.into())]);
    // Both threads pin, count themselves, and go on only if both are pinned.
    let pinned = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(Barrier::new(2));
    let start = |core: usize| {
        let (pinned, ready) = (pinned.clone(), ready.clone());
        move || {
            if crate::scenario::pin(core).is_ok() {
                pinned.fetch_add(1, Ordering::SeqCst);
            }
            ready.wait();
            pinned.load(Ordering::SeqCst) == 2
        }
    };
    let echo = {
        let (lines, start) = (lines.clone(), start(1));
        std::thread::spawn(move || {
            if !start() {
                return;
            }
            let mut last = 0;
            loop {
                let i = lines[0].0.load(Ordering::Acquire);
                if i == STOP {
                    return;
                }
                if i != last {
                    lines[1].0.store(i, Ordering::Release);
                    last = i;
                }
                std::hint::spin_loop();
            }
        })
    };
    let timer = {
        let start = start(0);
        std::thread::spawn(move || {
            if !start() {
                return None;
            }
            use std::time::Duration;
            let mut per_rtt = Vec::with_capacity(BATCHES);
            let mut i = 0u64;
            let began = std::time::Instant::now();
            while per_rtt.len() < BATCHES && began.elapsed() < Duration::from_millis(50) {
                let t = std::time::Instant::now();
                for _ in 0..PER_BATCH {
                    i += 1;
                    lines[0].0.store(i, Ordering::Release);
                    while lines[1].0.load(Ordering::Acquire) != i {
                        std::hint::spin_loop();
                    }
                }
                per_rtt.push(t.elapsed().as_nanos() as f64 / PER_BATCH as f64);
            }
            lines[0].0.store(STOP, Ordering::Release);
            per_rtt.sort_by(f64::total_cmp);
            // Too few batches in the time: the threads were not both running.
            (per_rtt.len() >= 4).then(|| per_rtt[per_rtt.len() / 2])
        })
    };
    let floor = timer.join().ok().flatten();
    echo.join().ok()?;
    floor
}
