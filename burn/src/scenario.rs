//! Scenario files (TOML, `burn/scenarios/`): hosts, processes, faults, checks.
//! `docs/reliability.md` documents every key.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Deserializer};

use crate::check::LossPolicy;
use crate::role::{Inject, Kind};

/// A duration written `500ms`, `10s`, `5m`, `1h` (or a mix: `1m30s`).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if s.is_empty() {
        bail!("an empty duration");
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num
            .parse()
            .with_context(|| format!("duration {s:?}: a number before {unit:?}"))?;
        num.clear();
        total += v * match unit.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => bail!("duration {s:?}: unit {unit:?} is not one of ms, s, m, h"),
        };
    }
    if !num.is_empty() {
        bail!("duration {s:?}: a unit (ms, s, m, h) after {num}");
    }
    Ok(Duration::from_secs_f64(total))
}

fn de_dur<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_dur<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

fn de_range<'de, D: Deserializer<'de>>(d: D) -> Result<(Duration, Duration), D::Error> {
    let v = <[String; 2]>::deserialize(d)?;
    let a = parse_duration(&v[0]).map_err(serde::de::Error::custom)?;
    let b = parse_duration(&v[1]).map_err(serde::de::Error::custom)?;
    if b < a {
        return Err(serde::de::Error::custom(
            "a range [low, high] with low > high",
        ));
    }
    Ok((a, b))
}

fn zero() -> Duration {
    Duration::ZERO
}

fn default_hosts() -> Vec<String> {
    vec!["a".into()]
}

fn default_host() -> String {
    "a".into()
}

fn yes() -> bool {
    true
}

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (file names of the report).
    pub name: String,
    /// What it exercises, one paragraph.
    pub description: String,
    /// Host names; each is a network namespace with its own address.
    #[serde(default = "default_hosts")]
    pub hosts: Vec<String>,
    /// Length of a long run (unless `--duration`).
    #[serde(deserialize_with = "de_dur")]
    pub duration: Duration,
    /// Length of the `--short` run.
    #[serde(deserialize_with = "de_dur")]
    pub short_duration: Duration,
    /// Seed of the random faults (mixed with `--seed`).
    #[serde(default)]
    pub seed: u64,
    /// The processes.
    #[serde(rename = "process")]
    pub processes: Vec<ProcSpec>,
    /// Faults on a schedule.
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultSpec>,
    /// Faults at random times.
    #[serde(default, rename = "random_fault")]
    pub random_faults: Vec<RandomFaultSpec>,
    /// Check settings.
    #[serde(default)]
    pub check: CheckSpec,
}

/// One process (or `count` alike, named `NAME-1`...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcSpec {
    /// Name (with `count`, the prefix).
    pub name: String,
    /// What it runs.
    pub role: Kind,
    /// Host it runs on.
    #[serde(default = "default_host")]
    pub host: String,
    /// How many alike.
    #[serde(default)]
    pub count: Option<u32>,
    /// Endpoints to bind; `{host}` is replaced by that host's address.
    #[serde(default)]
    pub bind: Vec<String>,
    /// Endpoints to connect to.
    #[serde(default)]
    pub connect: Vec<String>,
    /// Proxy backend binds.
    #[serde(default)]
    pub back_bind: Vec<String>,
    /// Proxy backend connects.
    #[serde(default)]
    pub back_connect: Vec<String>,
    /// Proxy socket types.
    #[serde(default)]
    pub front_type: Option<String>,
    /// Proxy socket types.
    #[serde(default)]
    pub back_type: Option<String>,
    /// Start this long after the run starts.
    #[serde(default = "zero", deserialize_with = "de_dur")]
    pub start_after: Duration,
    /// Messages (requests) per second.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Payload sizes `[min, max]`.
    #[serde(default)]
    pub size: Option<[usize; 2]>,
    /// Time per message received (a slow consumer), µs.
    #[serde(default)]
    pub slow_us: u64,
    /// High-water mark.
    #[serde(default)]
    pub hwm: Option<usize>,
    /// ipc:// ring size in bytes (messages over about half of it go in pieces).
    #[serde(default)]
    pub ipc_ring: Option<usize>,
    /// REQ: resend interval.
    #[serde(default, deserialize_with = "de_opt_dur")]
    pub resend: Option<Duration>,
    /// REQ: attempts.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// TCP heartbeats.
    #[serde(default, deserialize_with = "de_opt_dur")]
    pub heartbeat: Option<Duration>,
    /// A deliberate fault (the checker's own test only).
    #[serde(default)]
    pub inject: Option<Inject>,
    /// Receivers: when gaps in a sender's sequence are allowed.
    #[serde(default)]
    pub loss: LossPolicy,
    /// Senders (PUSH): check at the end that its receivers got exactly what it sent
    /// (short only if a process was killed meanwhile).
    #[serde(default = "yes")]
    pub ledger: bool,
}

/// A fault on a schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// `kill` (-9, then restart), `stop` (SIGSTOP, then SIGCONT), `link` (down, then
    /// up), `slow` (the receiver sleeps `slow_us` per message).
    pub kind: FaultKind,
    /// Process name (`prefix*` picks one of those at random each time) or host name.
    pub target: String,
    /// First time.
    #[serde(deserialize_with = "de_dur")]
    pub at: Duration,
    /// Repeat period.
    #[serde(default, deserialize_with = "de_opt_dur")]
    pub every: Option<Duration>,
    /// How long the fault lasts.
    #[serde(deserialize_with = "de_dur")]
    pub duration: Duration,
    /// `slow`: µs per message.
    #[serde(default)]
    pub slow_us: Option<u64>,
}

/// Faults at random times (from the seed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomFaultSpec {
    /// Kinds to pick from.
    pub kinds: Vec<FaultKind>,
    /// Targets to pick from (names, `prefix*`, hosts for `link`).
    pub targets: Vec<String>,
    /// Time between two faults, `[min, max]`.
    #[serde(deserialize_with = "de_range")]
    pub interval: (Duration, Duration),
    /// How long one lasts, `[min, max]`.
    #[serde(deserialize_with = "de_range")]
    pub duration: (Duration, Duration),
    /// No fault before this.
    #[serde(default = "zero", deserialize_with = "de_dur")]
    pub start: Duration,
    /// `slow`: µs per message.
    #[serde(default)]
    pub slow_us: Option<u64>,
}

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// `kill -9`, restart after the duration.
    Kill,
    /// SIGSTOP, SIGCONT after the duration.
    Stop,
    /// The host's link down, up after the duration.
    Link,
    /// A receiver slowed down for the duration.
    Slow,
}

impl FaultKind {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
            FaultKind::Link => "link",
            FaultKind::Slow => "slow",
        }
    }
}

/// Check settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Resource samples before this are warm-up.
    #[serde(default = "default_warmup", deserialize_with = "de_dur")]
    pub warmup: Duration,
    /// Allowed growth of descriptors after warm-up.
    #[serde(default = "default_fd_slack")]
    pub fd_slack: u64,
    /// Allowed growth of threads.
    #[serde(default = "default_thread_slack")]
    pub thread_slack: u64,
    /// Allowed growth of RSS, MiB (plus a quarter).
    #[serde(default = "default_rss_slack")]
    pub rss_slack_mb: u64,
    /// A live process that moves nothing for this long has stalled.
    #[serde(default = "default_stall", deserialize_with = "de_dur")]
    pub stall: Duration,
}

fn default_warmup() -> Duration {
    Duration::from_secs(3)
}
fn default_fd_slack() -> u64 {
    6
}
fn default_thread_slack() -> u64 {
    2
}
fn default_rss_slack() -> u64 {
    16
}
fn default_stall() -> Duration {
    Duration::from_secs(30)
}

impl Default for CheckSpec {
    fn default() -> CheckSpec {
        CheckSpec {
            warmup: default_warmup(),
            fd_slack: default_fd_slack(),
            thread_slack: default_thread_slack(),
            rss_slack_mb: default_rss_slack(),
            stall: default_stall(),
        }
    }
}

/// One concrete process of a scenario (after `count` is expanded).
#[derive(Debug, Clone)]
pub struct Proc {
    /// Its unique name.
    pub name: String,
    /// Its spec.
    pub spec: ProcSpec,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let s: Scenario =
            toml::from_str(&text).with_context(|| format!("scenario {}", path.display()))?;
        s.validate()
            .with_context(|| format!("scenario {}", path.display()))?;
        Ok(s)
    }

    /// The processes, `count` expanded, in file order.
    pub fn procs(&self) -> Vec<Proc> {
        let mut out = Vec::new();
        for p in &self.processes {
            match p.count {
                None => out.push(Proc {
                    name: p.name.clone(),
                    spec: p.clone(),
                }),
                Some(n) => {
                    for i in 1..=n {
                        out.push(Proc {
                            name: format!("{}-{i}", p.name),
                            spec: p.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// The processes a target names (`prefix*` or a name).
    pub fn matching(&self, target: &str) -> Vec<String> {
        let procs = self.procs();
        match target.strip_suffix('*') {
            Some(prefix) => procs
                .into_iter()
                .filter(|p| p.name.starts_with(prefix))
                .map(|p| p.name)
                .collect(),
            None => procs
                .into_iter()
                .filter(|p| p.name == target)
                .map(|p| p.name)
                .collect(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.hosts.is_empty() || self.hosts.len() > 200 {
            bail!("1 to 200 hosts");
        }
        for h in &self.hosts {
            if h.is_empty() || h.len() > 8 || !h.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!("host name {h:?}: 1 to 8 letters or digits");
            }
        }
        let procs = self.procs();
        let mut names = std::collections::HashSet::new();
        for p in &procs {
            if !names.insert(p.name.clone()) {
                bail!("two processes named {}", p.name);
            }
            if !self.hosts.contains(&p.spec.host) {
                bail!("process {}: no host {:?}", p.name, p.spec.host);
            }
        }
        let check_target = |kind: FaultKind, t: &str| -> Result<()> {
            if kind == FaultKind::Link {
                if !self.hosts.iter().any(|h| h == t) {
                    bail!("link fault: no host {t:?}");
                }
            } else if self.matching(t).is_empty() {
                bail!("{} fault: no process matches {t:?}", kind.as_str());
            }
            Ok(())
        };
        for f in &self.faults {
            check_target(f.kind, &f.target)?;
            if f.every.is_some_and(|e| e <= f.duration) {
                bail!(
                    "fault on {}: `every` must be longer than `duration`",
                    f.target
                );
            }
        }
        for r in &self.random_faults {
            if r.kinds.is_empty() || r.targets.is_empty() {
                bail!("random_fault: kinds and targets must not be empty");
            }
            if r.interval.0.is_zero() {
                bail!("random_fault: interval must be positive");
            }
            for t in &r.targets {
                // A target fits at least one of the kinds.
                if !r.kinds.iter().any(|&k| check_target(k, t).is_ok()) {
                    bail!("random_fault: target {t:?} fits none of the kinds");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("1m30s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h").ok(), Some(Duration::from_secs(3600)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn every_shipped_scenario_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("scenarios dir") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "toml") {
                let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                assert!(s.short_duration <= s.duration, "{}", p.display());
                n += 1;
            }
        }
        assert!(
            n >= 5,
            "the issue asks for five scenarios at least, found {n}"
        );
    }

    #[test]
    fn bad_scenarios_are_refused_with_a_reason() {
        let base = r#"
name = "x"
description = "x"
duration = "10s"
short_duration = "5s"
[[process]]
name = "p"
role = "push"
"#;
        let parse = |extra: &str| -> Result<Scenario> {
            let s: Scenario = toml::from_str(&format!("{base}{extra}"))?;
            s.validate()?;
            Ok(s)
        };
        assert!(parse("").is_ok());
        let e =
            parse("[[fault]]\nkind = \"kill\"\ntarget = \"q\"\nat = \"1s\"\nduration = \"1s\"\n")
                .expect_err("no such process");
        assert!(format!("{e:#}").contains("no process matches"), "{e:#}");
        let e =
            parse("[[fault]]\nkind = \"link\"\ntarget = \"zz\"\nat = \"1s\"\nduration = \"1s\"\n")
                .expect_err("no such host");
        assert!(format!("{e:#}").contains("no host"), "{e:#}");
        assert!(parse("colour = 3\n").is_err(), "unknown keys are refused");
    }
}
