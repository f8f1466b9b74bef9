//! Hosts as network namespaces: one per host (its own loopback, its own abstract Unix
//! namespace, so `ipc://` stays on its host as it does between machines), joined by
//! veth pairs to a bridge in a "switch" namespace of their own. Nothing is created in
//! the caller's namespace, so runs never collide on interface names; namespace names
//! carry the harness's pid (`lwb-PID-RUN-HOST`), so parallel runs never collide and
//! those of a crashed run are recognised and removed by the next one
//! ([`clean_stale`]).
//!
//! Driven with iproute2's `ip` (what an operator would type; the kernel's netlink API
//! by hand is not what lwmq is about).

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// The namespace names of one run start with this.
pub const PREFIX: &str = "lwb-";

fn ip(args: &[&str]) -> Result<()> {
    ip_out(args).map(drop)
}

fn ip_out(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One host.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its name in the scenario.
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its address on the shared link (empty with a single host: loopback only).
    pub addr: String,
}

/// The hosts of one run; torn down when dropped.
#[derive(Debug)]
pub struct Net {
    /// The hosts.
    pub hosts: Vec<Host>,
    switch: Option<String>,
    torn_down: bool,
}

impl Net {
    /// Creates the namespaces `lwb-PID-TAG-HOST` (and a switch if more than one host).
    pub fn create(tag: &str, names: &[String]) -> Result<Net> {
        let base = format!("{PREFIX}{}-{tag}", std::process::id());
        let mut net = Net {
            hosts: Vec::new(),
            switch: None,
            torn_down: false,
        };
        // From here on, a failure tears down what exists (Drop).
        if names.len() > 1 {
            let sw = format!("{base}-sw");
            ip(&["netns", "add", &sw])?;
            net.switch = Some(sw.clone());
            ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        }
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{base}-{name}");
            ip(&["netns", "add", &ns])?;
            net.hosts.push(Host {
                name: name.clone(),
                ns: ns.clone(),
                addr: "127.0.0.1".into(),
            });
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            if let Some(sw) = &net.switch {
                let port = format!("p-{name}");
                ip(&[
                    "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ])?;
                ip(&["-n", sw, "link", "set", &port, "master", "br0", "up"])?;
                let addr = format!("10.77.0.{}", i + 1);
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "eth0",
                ])?;
                ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
                if let Some(h) = net.hosts.last_mut() {
                    h.addr = addr;
                }
            }
        }
        Ok(net)
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Puts host `name`'s link to the others down or up (a partition: packets are lost,
    /// connections are not told).
    pub fn link(&self, name: &str, up: bool) -> Result<()> {
        let Some(sw) = &self.switch else {
            bail!("a link fault needs two hosts or more");
        };
        let port = format!("p-{name}");
        ip(&[
            "-n",
            sw,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ])
    }

    /// Abstract Unix socket names bound in each host (what `/proc/net/unix` shows there).
    pub fn abstract_names(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for h in &self.hosts {
            let Ok(text) = ip_out(&["netns", "exec", &h.ns, "cat", "/proc/net/unix"]) else {
                continue;
            };
            for line in text.lines().skip(1) {
                if let Some(path) = line.split_whitespace().nth(7)
                    && path.starts_with('@')
                {
                    out.push((h.name.clone(), path.to_owned()));
                }
            }
        }
        out
    }

    /// Kills whatever still runs in the namespaces and deletes them (idempotent).
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let mut all: Vec<String> = self.hosts.iter().map(|h| h.ns.clone()).collect();
        all.extend(self.switch.clone());
        for ns in &all {
            remove_ns(ns);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn remove_ns(ns: &str) {
    if let Ok(pids) = ip_out(&["netns", "pids", ns]) {
        for p in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    if let Err(e) = ip(&["netns", "del", ns]) {
        eprintln!("burn: {e}");
    }
}

/// Removes the namespaces of runs whose harness is gone (pid not alive, or alive as
/// something else than lwmq-burn); returns their names.
pub fn clean_stale() -> Vec<String> {
    let Ok(list) = ip_out(&["netns", "list"]) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for line in list.lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "lwmq-burn");
        if !alive {
            remove_ns(ns);
            removed.push(ns.to_owned());
        }
    }
    removed
}
