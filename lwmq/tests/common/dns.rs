//! A real DNS server for the tests: Debian's dnsmasq (installed by
//! `scripts/setup-test-env.sh dnsmasq` when missing), one instance per test on a
//! loopback port of its own, answering only from records the test gives it, killed
//! when dropped.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::repo_root;

/// The dnsmasq program, installed on first use.
pub fn dnsmasq_program() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/setup-test-env.sh"))
            .arg("dnsmasq")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/setup-test-env.sh dnsmasq");
        assert!(out.status.success(), "installing dnsmasq failed");
        let stdout = String::from_utf8(out.stdout).expect("utf-8 path");
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("the script prints dnsmasq's path")
                .trim(),
        )
    })
}

/// A port free for both UDP and TCP on 127.0.0.1 (as far as one can tell).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("udp addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A query for `name` of record type `qtype`, id 0x4c57.
pub fn query_bytes(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x4c, 0x57, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    q
}

/// One running dnsmasq.
pub struct Dnsmasq {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq answering `records` (dnsmasq configuration lines such as
    /// `srv-host=...` and `host-record=...`) for the domain `lwmq.test`, of which it
    /// is the authority (unknown names there are NXDOMAIN, nothing is forwarded).
    pub fn start(tag: &str, records: &str) -> Dnsmasq {
        let dir = std::env::temp_dir().join(format!(
            "lwmq-dns-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut d = Dnsmasq {
            child: None,
            port: 0,
            dir,
        };
        d.restart(records);
        d
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops the server (if running) and starts it again with `records`, on the same
    /// port once it has one.
    pub fn restart(&mut self, records: &str) {
        self.stop();
        let conf = self.dir.join("dnsmasq.conf");
        std::fs::write(
            &conf,
            format!("local=/lwmq.test/\nlocal-ttl=1\nneg-ttl=1\n{records}\n"),
        )
        .expect("write dnsmasq.conf");
        for _ in 0..20 {
            let port = if self.port == 0 {
                free_port()
            } else {
                self.port
            };
            let mut child = Command::new(dnsmasq_program())
                .arg(format!("--port={port}"))
                .args([
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--keep-in-foreground",
                    "--log-facility=-",
                ])
                .arg(format!("--conf-file={}", conf.display()))
                .arg(format!("--pid-file={}", self.dir.join("pid").display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group: dnsmasq forks a child per TCP client, and
                // stopping it stops those too.
                .process_group(0)
                .spawn()
                .expect("start dnsmasq");
            if wait_answering(port, &mut child) {
                self.port = port;
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dnsmasq did not start");
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole group (see `restart`).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether dnsmasq answers on `port` (within 10 s, while it runs).
fn wait_answering(port: u16, child: &mut Child) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let q = query_bytes("lwmq.test", 6);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        let _ = sock.send_to(&q, ("127.0.0.1", port));
        match sock.recv(&mut buf) {
            Ok(n) if n >= 12 && buf[..2] == q[..2] => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
