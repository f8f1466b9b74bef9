//! Peer processes for multi-process tests: the test binary re-runs itself with
//! `--exact peer_process_entry`, the role in an environment variable, and talks to the
//! parent in `KEY value` lines on stdout. A peer exits when its stdin closes.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdout, Command, Stdio};

use super::KillOnDrop;

/// Which environment variables carry a test file's peer role and shm domain.
#[derive(Debug, Clone, Copy)]
pub struct PeerEnv {
    /// The variable naming the role (its absence means "not a peer").
    pub role: &'static str,
    /// The variable carrying the test's domain.
    pub domain: &'static str,
}

impl PeerEnv {
    /// Starts the test binary itself as a peer in `role`.
    pub fn spawn(self, role: &str, domain: &str, env: &[(&str, &str)]) -> Peer {
        self.spawn_cmd(
            Command::new(std::env::current_exe().expect("test binary")),
            role,
            domain,
            env,
        )
    }

    /// Starts `cmd` (the test binary, possibly wrapped, e.g. by setpriv) as a peer.
    pub fn spawn_cmd(
        self,
        mut cmd: Command,
        role: &str,
        domain: &str,
        env: &[(&str, &str)],
    ) -> Peer {
        cmd.args([
            "--exact",
            "peer_process_entry",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(self.role, role)
        .env(self.domain, domain)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Peer::from_child(cmd.spawn().expect("spawn the peer process"))
    }
}

/// A running peer process, killed on drop.
pub struct Peer {
    pub child: KillOnDrop,
    out: BufReader<ChildStdout>,
}

impl Peer {
    /// Wraps a child started with a piped stdout (any program speaking `KEY value` lines).
    pub fn from_child(mut child: std::process::Child) -> Peer {
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        Peer {
            child: KillOnDrop(child),
            out,
        }
    }

    /// The value after `KEY ` on the next line starting with it (other lines skipped).
    pub fn expect(&mut self, key: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .out
                .read_line(&mut line)
                .expect("read the peer's stdout");
            assert!(n > 0, "the peer exited before saying {key}");
            if let Some(rest) = line.trim_end().strip_prefix(key) {
                return rest.trim().to_owned();
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn kill9(&mut self) {
        self.child.0.kill().expect("kill -9 the peer");
        self.child.0.wait().expect("reap the peer");
    }
}

/// In a peer: tells the parent `KEY value`.
pub fn say(key: &str, value: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{key} {value}").expect("write to the parent");
    out.flush().expect("flush to the parent");
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// lwmq shared-memory mappings of this process.
pub fn shm_map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("memfd:lwmq"))
        .count()
}

/// Nothing of the shm domain `domain` is left: no segment or doorbell file in /dev/shm
/// or /tmp (they are memfds and must never appear there), nothing named after the
/// domain, and no abstract rendezvous name in /proc/net/unix.
pub fn assert_clean(domain: &str) {
    for dir in ["/dev/shm", "/tmp"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !(n.contains(domain)
                        || n.starts_with("lwmq-segment")
                        || n.starts_with("lwmq-doorbell")),
                    "left behind: {dir}/{n}"
                );
            }
        }
    }
    // The background thread closes a listener after the context is dropped, and a
    // child process that another test of the same process (plain `cargo test`) forks
    // at that moment holds a copy until its exec: look again for a while before
    // calling the name left behind. A name that stays is still a failure.
    let ours = format!("@lwmq/{domain}/");
    let bound = || {
        std::fs::read_to_string("/proc/net/unix")
            .expect("/proc/net/unix")
            .lines()
            .any(|l| l.contains(&ours))
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while bound() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!bound(), "abstract socket of {domain} still bound");
}

/// The test binary, copied where `nobody` can run it; removed on drop.
pub struct PrivateCopy(PathBuf);

impl PrivateCopy {
    pub fn new(tag: &str) -> PrivateCopy {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lwmq-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let bin = dir.join("peer");
        std::fs::copy(std::env::current_exe().expect("test binary"), &bin).expect("copy");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod bin");
        PrivateCopy(dir)
    }

    /// A command running the copy as `nobody`.
    pub fn as_nobody(&self) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(self.0.join("peer"))
            .current_dir(&self.0);
        cmd
    }
}

impl PrivateCopy {
    /// A command running the copy as user `uid` with effective group `gid` and the
    /// supplementary groups `groups` (numeric ids need no entry in /etc/passwd or
    /// /etc/group: the kernel checks numbers). Needs root.
    pub fn as_user(&self, uid: u32, gid: u32, groups: &[u32]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"));
        if groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            let list: Vec<String> = groups.iter().map(u32::to_string).collect();
            cmd.arg(format!("--groups={}", list.join(",")));
        }
        cmd.arg(self.0.join("peer")).current_dir(&self.0);
        cmd
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
