//! Helpers for the end-to-end tests: run the built `lwmq` binary in child processes,
//! read what they print, kill them when a test ends, and a watchdog for anything that
//! could hang. The pyzmq environment comes from `scripts/setup-test-env.sh`, as in the
//! library's tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};

/// The `lwmq` binary under test.
pub fn lwmq() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lwmq"));
    c.stdin(Stdio::null());
    c
}

/// Runs `lwmq args...` to completion with `stdin` as input.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = lwmq()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lwmq");
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for lwmq");
    feeder.join().expect("stdin feeder");
    out
}

// The pyzmq environment, the repository root and the watchdog are the library tests'
// own helpers, shared rather than copied.
#[path = "../../../lwmq/tests/common/mod.rs"]
mod lib_common;
#[allow(unused_imports)] // each test binary uses a different part
pub use lib_common::{dns, python, repo_root, watchdog};

/// A child process with its stdout and stderr read line by line on background
/// threads; killed and reaped when dropped.
pub struct Proc {
    pub child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

fn lines<R: Read + Send + 'static>(r: R) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    rx
}

impl Proc {
    /// Starts `cmd` with stdout and stderr piped (stdin as `cmd` says).
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start child process");
        let stdout = lines(child.stdout.take().expect("piped"));
        let stderr = lines(child.stderr.take().expect("piped"));
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    /// Starts `lwmq args...`.
    pub fn lwmq(args: &[&str]) -> Proc {
        let mut c = lwmq();
        c.args(args);
        Proc::spawn(c)
    }

    /// Starts `lwmq/tests/py/<script>` with the pyzmq python.
    pub fn python(script: &str, args: &[&str]) -> Proc {
        let path = repo_root().join("lwmq/tests/py").join(script);
        let mut c = Command::new(python());
        c.arg(path).args(args).stdin(Stdio::null());
        Proc::spawn(c)
    }

    /// The next stdout line (blocks; the test's watchdog bounds it).
    pub fn stdout_line(&self) -> String {
        self.stdout
            .recv()
            .expect("the process closed its stdout before printing the line")
    }

    /// The next stderr line (blocks; the test's watchdog bounds it).
    pub fn stderr_line(&self) -> String {
        self.stderr
            .recv()
            .expect("the process closed its stderr before printing the line")
    }

    /// The endpoint from `lwmq: bound <endpoint>` (or `lwmq: <TYPE> bound <endpoint>`)
    /// on stderr.
    pub fn bound_endpoint(&self) -> String {
        loop {
            let line = self.stderr_line();
            if let Some((_, ep)) = line.split_once("bound ") {
                return ep.trim().to_owned();
            }
            eprintln!("(child stderr) {line}");
        }
    }

    /// Waits for the process to exit and returns its code and the rest of its stdout
    /// and stderr.
    pub fn finish(mut self) -> (Option<i32>, Vec<String>, Vec<String>) {
        let status = self.child.wait().expect("wait");
        let out: Vec<String> = self.stdout.iter().collect();
        let err: Vec<String> = self.stderr.iter().collect();
        (status.code(), out, err)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory for Unix socket files and the like, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("lwmq-cli-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A name unique to this test process, for ipc:// and abstract unix:// endpoints.
pub fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("lwmq-cli-{tag}-{}-{n}", std::process::id())
}

/// Keeps a child's stdout readable as a stream (for processes whose stdout we parse
/// ourselves).
pub fn take_stdout(child: &mut Child) -> BufReader<ChildStdout> {
    BufReader::new(child.stdout.take().expect("piped stdout"))
}
