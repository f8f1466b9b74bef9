//! systemd socket activation and readiness: the descriptors a service manager passes
//! (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, as in `sd_listen_fds(3)`), found by
//! name or index for `systemd://NAME` and `systemd://N`, and `sd_notify(3)` readiness
//! (`READY=1`, and `WATCHDOG=1` when `WATCHDOG_USEC` is set).
//!
//! Notifications and the watchdog interval go through the `sd-notify` crate. The
//! `LISTEN_*` variables are read here instead of with that crate's `listen_fds`,
//! because it answers a foreign `LISTEN_PID` (the variables were meant for another
//! process) and a missing activation alike with an empty list, while lwmq's error has
//! to say which of the two it is and list what was passed. The variables are left in
//! the environment (removing them is unsound once threads run); a child process sees a
//! `LISTEN_PID` that is not its own and so ignores them, as the protocol intends.

use std::os::fd::RawFd;
use std::time::Duration;

use crate::{Error, Result};

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// One descriptor passed by socket activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    /// The descriptor number (3, 4, ...).
    pub fd: RawFd,
    /// Its name (`FileDescriptorName=`; systemd says `connection` for an `Accept=yes`
    /// connection, `unknown` when no names were passed).
    pub name: String,
}

/// The descriptors passed to this process by socket activation.
///
/// Errors, naming what was found: no activation (`LISTEN_FDS` unset), an activation
/// meant for another process (`LISTEN_PID` not this process's id), or malformed
/// variables.
pub fn passed() -> Result<Vec<Passed>> {
    let var = |k: &str| std::env::var(k).ok();
    parse(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )
    .map_err(Error::InvalidArgument)
}

fn parse(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> std::result::Result<Vec<Passed>, String> {
    let Some(fds) = fds else {
        return Err(
            "no socket activation: LISTEN_FDS is not set (start the program from \
                    a systemd .socket unit, or with systemd-socket-activate)"
                .into(),
        );
    };
    let n: RawFd = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=4096).contains(n))
        .ok_or_else(|| format!("LISTEN_FDS={fds:?} is not a number of descriptors"))?;
    let names: Vec<String> = match names {
        Some(s) => s.split(':').map(str::to_owned).collect(),
        None => vec!["unknown".to_owned(); n as usize],
    };
    let listed = |names: &[String]| -> String {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{} = {name:?}", LISTEN_FDS_START + i as RawFd))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match pid.map(|p| p.trim().parse::<u32>()) {
        None => {
            return Err(format!(
                "LISTEN_PID is not set, so LISTEN_FDS={n} is not known to be meant for this \
                 process ({me})"
            ));
        }
        Some(Err(_)) => {
            return Err(format!(
                "LISTEN_PID={:?} is not a process id",
                pid.unwrap_or("")
            ));
        }
        Some(Ok(p)) if p != me => {
            return Err(format!(
                "the socket activation is meant for process {p}, not this one ({me}): \
                 LISTEN_FDS={n} ({})",
                listed(&names)
            ));
        }
        Some(Ok(_)) => {}
    }
    if names.len() != n as usize {
        return Err(format!(
            "LISTEN_FDNAMES has {} names for LISTEN_FDS={n} descriptors",
            names.len()
        ));
    }
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| Passed {
            fd: LISTEN_FDS_START + i as RawFd,
            name,
        })
        .collect())
}

/// The descriptor `systemd://NAME` or `systemd://N` names: by `FileDescriptorName=`
/// first, then by index (0 is the first passed). The error lists what was passed.
pub(crate) fn find(uri: &str, name: &str) -> Result<RawFd> {
    let passed = passed().map_err(|e| match e {
        Error::InvalidArgument(why) => Error::endpoint(uri, why),
        e => e,
    })?;
    if let Some(p) = passed.iter().find(|p| p.name == name) {
        return Ok(p.fd);
    }
    if let Ok(i) = name.parse::<usize>() {
        if let Some(p) = passed.get(i) {
            return Ok(p.fd);
        }
    }
    let list = if passed.is_empty() {
        "none was passed (LISTEN_FDS=0)".to_owned()
    } else {
        let l: Vec<String> = passed
            .iter()
            .enumerate()
            .map(|(i, p)| format!("#{i} fd {} {:?}", p.fd, p.name))
            .collect();
        format!("passed: {}", l.join(", "))
    };
    Err(Error::endpoint(
        uri,
        format!(
            "no socket named {name:?} (or with that index) was passed by socket activation; {list}"
        ),
    ))
}

/// What [`notify_ready`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Readiness {
    /// Whether `READY=1` was sent (`false`: `NOTIFY_SOCKET` is not set, no service
    /// manager listens).
    pub sent: bool,
    /// The watchdog interval (`WATCHDOG_USEC`), when one is set for this process: a
    /// thread then sends `WATCHDOG=1` every half interval for as long as the process
    /// lives.
    pub watchdog: Option<Duration>,
}

/// Tells the service manager the service is ready (`READY=1` to `NOTIFY_SOCKET`, for
/// `Type=notify` services) and, when `WATCHDOG_USEC` is set for this process, keeps the
/// watchdog fed from a background thread. Call it once every endpoint is bound. Without
/// `NOTIFY_SOCKET` it does nothing.
pub fn notify_ready() -> Result<Readiness> {
    let sent = std::env::var_os("NOTIFY_SOCKET").is_some();
    if sent {
        sd_notify::notify(&[sd_notify::NotifyState::Ready])?;
    }
    let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
    if let (true, Some(interval)) = (sent, watchdog) {
        notify_watchdog()?;
        std::thread::Builder::new()
            .name("lwmq-watchdog".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval / 2);
                    if let Err(e) = notify_watchdog() {
                        tracing::warn!("cannot feed the systemd watchdog: {e}");
                    }
                }
            })?;
    }
    Ok(Readiness { sent, watchdog })
}

/// Sends `WATCHDOG=1` once (for a program that feeds the watchdog itself).
pub fn notify_watchdog() -> Result<()> {
    sd_notify::notify(&[sd_notify::NotifyState::Watchdog])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_variables() {
        let ok = parse(Some("42"), Some("2"), Some("web:admin"), 42).unwrap();
        assert_eq!(
            ok,
            vec![
                Passed {
                    fd: 3,
                    name: "web".into()
                },
                Passed {
                    fd: 4,
                    name: "admin".into()
                }
            ]
        );
        let unnamed = parse(Some("42"), Some("1"), None, 42).unwrap();
        assert_eq!(unnamed[0].name, "unknown");
        let none = parse(None, None, None, 42).unwrap_err();
        assert!(none.contains("LISTEN_FDS is not set"), "{none}");
        let foreign = parse(Some("7"), Some("2"), Some("web:admin"), 42).unwrap_err();
        assert!(
            foreign.contains("process 7")
                && foreign.contains("(42)")
                && foreign.contains("\"admin\""),
            "{foreign}"
        );
        assert!(
            parse(Some("42"), Some("x"), None, 42)
                .unwrap_err()
                .contains("LISTEN_FDS")
        );
        assert!(
            parse(Some("42"), Some("2"), Some("a"), 42)
                .unwrap_err()
                .contains("1 names")
        );
        assert!(
            parse(Some("me"), Some("1"), None, 42)
                .unwrap_err()
                .contains("LISTEN_PID")
        );
    }
}
