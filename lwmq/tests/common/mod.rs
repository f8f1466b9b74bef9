//! Shared helpers for the integration tests: the pyzmq environment, peer processes,
//! and a watchdog for tests that could deadlock.
#![allow(dead_code)]

pub mod dns;
pub mod peer;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in a workspace")
        .to_path_buf()
}

/// The python of a virtual environment holding pyzmq, created on first use by
/// `scripts/setup-test-env.sh` (which serializes concurrent callers with a lock).
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/setup-test-env.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/setup-test-env.sh");
        assert!(
            out.status.success(),
            "setting up the pyzmq environment failed"
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8 path");
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("the script prints the python path")
                .trim(),
        )
    })
}

/// Starts `lwmq/tests/py/<script>` with the pyzmq python; stdout is piped.
pub fn spawn_py(script: &str, args: &[&str]) -> Child {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    Command::new(python())
        .arg(path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the python peer")
}

/// Kills a child process when dropped, so a failing test leaves no stray peer behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Aborts the whole test process if the guard is still alive after `limit`: a test
/// that deadlocks fails loudly instead of hanging CI. Drop the guard to disarm it.
pub struct Watchdog {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

pub fn watchdog(limit: Duration) -> Watchdog {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let name = std::thread::current().name().unwrap_or("test").to_owned();
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(50));
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
        }
        eprintln!("watchdog: {name} still running after {limit:?}; aborting");
        std::process::abort();
    });
    Watchdog { done }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Set in a test's own process (see [`in_own_process`]).
const OWN_PROCESS: &str = "LWMQ_TEST_OWN_PROCESS";

/// Runs `body` in a process of its own: this test binary re-run for the test `test`
/// only (its name as libtest prints it), with `env` set. Use it when the test measures
/// something of the whole process, or changes a process-wide setting. Fails if that
/// process fails or did not run exactly that one test.
pub fn in_own_process(test: &str, env: &[(&str, &str)], body: impl FnOnce()) {
    if std::env::var_os(OWN_PROCESS).is_some() {
        body();
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(OWN_PROCESS, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the test in its own process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in its own process: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The environment for [`in_own_process`] in which a parked waiter never wakes up by
/// itself (a park lasts a day): a lost wake-up is then a hang (give the test a
/// [`watchdog`]), not a 100 ms delay.
pub const PARK_FOREVER: (&str, &str) = (lwmq::shm::wait::MAX_PARK_ENV, "86400000");

/// Large messages for the tests of messages larger than a shared-memory ring.
pub mod big {
    use lwmq::Bytes;
    use lwmq::Message;

    /// `len` pseudo-random bytes (xorshift over `seed`): a shifted, dropped or
    /// duplicated piece never compares equal.
    pub fn pattern(len: usize, seed: u64) -> Bytes {
        let mut v = vec![0u8; len];
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for c in v.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        v.into()
    }

    /// Two messages of `size` payload bytes over one buffer (no copy of it): one frame,
    /// and five frames (half, empty, a quarter, a quarter less 3, 3 bytes).
    pub fn shapes(size: usize, seed: u64) -> [Message; 2] {
        let b = pattern(size, seed);
        let (h, q) = (size / 2, size / 4);
        let multi = Message::from_frames([
            b.slice(..h),
            Bytes::new(),
            b.slice(h..h + q),
            b.slice(h + q..size - 3),
            b.slice(size - 3..),
        ]);
        [Message::from(b), multi]
    }

    /// Whether `got` is `want`, frame for frame (without printing megabytes).
    pub fn check(got: &Message, want: &Message, what: &str) {
        let lens = |m: &Message| m.frames().iter().map(|f| f.len()).collect::<Vec<_>>();
        assert_eq!(lens(got), lens(want), "{what}: frame lengths");
        for (i, (g, w)) in got.frames().iter().zip(want.frames()).enumerate() {
            assert!(g == w, "{what}: frame {i} differs");
        }
    }
}
