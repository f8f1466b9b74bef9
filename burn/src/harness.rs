//! The harness: runs one scenario. Creates the hosts, starts the processes in order,
//! injects the faults, reads what the processes report and judges it as it comes,
//! samples /proc, drains and stops everything at the end, checks what is left behind,
//! and tears the hosts down (also on an error, a panic or Ctrl-C: [`Net`] and
//! [`Children`] clean up when dropped).
//!
//! One thread (the caller's) owns all the state; one reader thread per process
//! incarnation forwards its stdout lines over a channel.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{self, FaultRecord, LossPolicy, Sample, Slack, Violation, name_message};
use crate::net::Net;
use crate::proto::{Report, Stats};
use crate::report::{ProcReport, Recovery, ScenarioReport, Series};
use crate::role::Kind;
use crate::scenario::{FaultKind, Proc, Scenario};
use crate::wire::{MsgId, now_ms};

/// How a run is asked for.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// The scenario's short duration.
    pub short: bool,
    /// Overrides the duration.
    pub duration: Option<Duration>,
    /// Mixed into each scenario's seed.
    pub seed: u64,
    /// Report directory of this scenario.
    pub out: PathBuf,
    /// The lwmq-burn binary (the roles run it).
    pub exe: PathBuf,
    /// Unique tag of this scenario's namespaces within the harness.
    pub tag: String,
}

/// A fault planned for a time.
#[derive(Debug, Clone)]
struct Planned {
    at: Duration,
    kind: FaultKind,
    target: String,
    duration: Duration,
    slow_us: u64,
}

/// A fault going on.
#[derive(Debug)]
struct Active {
    kind: FaultKind,
    target: String,
    ends: Instant,
    record: usize,
}

/// One life of a process.
#[derive(Debug, Default)]
struct Life {
    inc: u32,
    started_ms: u64,
    ended_ms: Option<u64>,
    ended_how: String,
    last: Stats,
    fin: Option<Stats>,
    samples: Vec<Sample>,
    stalled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    NotStarted,
    Running,
    Stopped,
    Killed,
    Done,
}

#[derive(Debug)]
struct P {
    name: String,
    proc_: Proc,
    status: Status,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pid: Option<u32>,
    lives: Vec<Life>,
    series: Vec<(u64, u64)>,
    last_move: (u64, Instant),
    seen_paths: HashSet<String>,
    crashes: u32,
}

/// A process that exits by itself is restarted this many times.
const MAX_CRASHES: u32 = 5;

impl P {
    fn kind(&self) -> Kind {
        self.proc_.spec.role
    }
    fn moved(s: &Stats, kind: Kind) -> u64 {
        match kind {
            Kind::Push | Kind::Pub => s.sent,
            Kind::Pull | Kind::Sub | Kind::Req => s.received,
            Kind::Rep => s.executed,
            Kind::Proxy => s.sent,
        }
    }
    fn total_moved(&self) -> u64 {
        self.lives
            .iter()
            .map(|l| P::moved(&l.last, self.kind()))
            .sum()
    }
    fn life(&mut self) -> Option<&mut Life> {
        self.lives.last_mut()
    }
}

/// The children, killed when dropped (an error or a panic in the harness).
struct Children<'a>(&'a mut Vec<P>);

impl Drop for Children<'_> {
    fn drop(&mut self) {
        for p in self.0.iter_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

enum Event {
    Line(usize, u32, Box<Report>),
    Junk(usize, String),
    Eof(usize, u32),
}

struct Run<'a> {
    sc: &'a Scenario,
    opts: &'a RunOpts,
    net: Net,
    tx: mpsc::Sender<Event>,
    names: Vec<String>,
    faults: Vec<FaultRecord>,
    violations: Vec<Violation>,
    pauses: Vec<(u64, u64)>,
    outages: Vec<(usize, u32, u64, u64)>,
    /// `(receiver, src, inc, at_ms)`: a sender incarnation's first message arrived.
    joined: Vec<(usize, u32, u32, u64)>,
    allowed_loss: u64,
    tmpdir: PathBuf,
    logdir: PathBuf,
    started: Instant,
}

fn violation(
    kind: &str,
    process: &str,
    message: Option<String>,
    detail: impl Into<String>,
) -> Violation {
    Violation {
        at_ms: now_ms(),
        kind: kind.into(),
        process: process.into(),
        message,
        detail: detail.into(),
        during_pause: false,
        context: String::new(),
    }
}

/// Runs one scenario to its end (or until `interrupted`) and returns its report.
pub fn run(sc: &Scenario, opts: &RunOpts, interrupted: &AtomicBool) -> Result<ScenarioReport> {
    let duration = opts.duration.unwrap_or(if opts.short {
        sc.short_duration
    } else {
        sc.duration
    });
    std::fs::create_dir_all(&opts.out)?;
    let logdir = opts.out.join("logs");
    std::fs::create_dir_all(&logdir)?;
    let tmpdir = opts.out.join("tmp");
    std::fs::create_dir_all(&tmpdir)?;
    let shm_before = list_dir("/dev/shm");
    let net = Net::create(&opts.tag, &sc.hosts)?;
    let (tx, rx) = mpsc::channel();
    let mut procs: Vec<P> = sc
        .procs()
        .into_iter()
        .map(|p| P {
            name: p.name.clone(),
            proc_: p,
            status: Status::NotStarted,
            child: None,
            stdin: None,
            pid: None,
            lives: Vec::new(),
            series: Vec::new(),
            last_move: (0, Instant::now()),
            seen_paths: HashSet::new(),
            crashes: 0,
        })
        .collect();
    let names: Vec<String> = procs.iter().map(|p| p.name.clone()).collect();
    let plan = plan_faults(sc, opts.seed, duration);
    let mut run = Run {
        sc,
        opts,
        net,
        tx,
        names,
        faults: Vec::new(),
        violations: Vec::new(),
        pauses: Vec::new(),
        outages: Vec::new(),
        joined: Vec::new(),
        allowed_loss: 0,
        tmpdir,
        logdir,
        started: Instant::now(),
    };
    let started_ms = now_ms();
    let children = Children(&mut procs);
    let interrupted_run = run.main_loop(children.0, &rx, &plan, duration, interrupted)?;
    if !interrupted_run {
        run.drain(children.0, &rx)?;
    }
    // Everything still running goes now.
    for p in children.0.iter_mut() {
        if let Some(mut c) = p.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if !interrupted_run {
                run.violations.push(violation(
                    "exit",
                    &p.name,
                    None,
                    "did not exit within 10 s of `stop` (killed)",
                ));
            }
        }
    }
    while let Ok(ev) = rx.try_recv() {
        run.event(children.0, ev);
    }
    let ended_ms = now_ms();
    if !interrupted_run {
        run.leftovers(children.0, &shm_before);
        run.ledger(children.0);
        run.resources(children.0);
    }
    let hosts = run
        .net
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.addr.clone()))
        .collect();
    run.net.teardown();
    for v in &mut run.violations {
        v.during_pause = run
            .pauses
            .iter()
            .any(|&(a, b)| v.at_ms + 1000 >= a && v.at_ms <= b + 10_000);
        v.context = check::nearest_fault(&run.faults, v.at_ms);
    }
    let report = run.report(children.0, started_ms, ended_ms, hosts, interrupted_run);
    drop(children);
    Ok(report)
}

fn list_dir(dir: &str) -> HashSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn plan_faults(sc: &Scenario, seed: u64, duration: Duration) -> Vec<Planned> {
    let mut rng = ChaCha8Rng::seed_from_u64(sc.seed ^ seed.rotate_left(17));
    // Faults end a couple of seconds before the drain starts.
    let last_end = duration.saturating_sub(Duration::from_secs(2));
    let mut out = Vec::new();
    let pick = |rng: &mut ChaCha8Rng, kind: FaultKind, t: &str| -> Option<String> {
        if kind == FaultKind::Link {
            return Some(t.to_owned());
        }
        let m = sc.matching(t);
        if m.is_empty() {
            None
        } else {
            Some(m[rng.random_range(0..m.len())].clone())
        }
    };
    for f in &sc.faults {
        let mut at = f.at;
        while at + f.duration <= last_end {
            if let Some(target) = pick(&mut rng, f.kind, &f.target) {
                out.push(Planned {
                    at,
                    kind: f.kind,
                    target,
                    duration: f.duration,
                    slow_us: f.slow_us.unwrap_or(5000),
                });
            }
            match f.every {
                Some(e) => at += e,
                None => break,
            }
        }
    }
    for r in &sc.random_faults {
        let mut at = r.start;
        loop {
            at += rng.random_range(r.interval.0..=r.interval.1);
            let d = rng.random_range(r.duration.0..=r.duration.1);
            if at + d > last_end {
                break;
            }
            let kind = r.kinds[rng.random_range(0..r.kinds.len())];
            // A target that fits the kind (hosts for links, processes otherwise).
            let fits: Vec<&String> = r
                .targets
                .iter()
                .filter(|t| (kind == FaultKind::Link) == sc.hosts.contains(t))
                .collect();
            if fits.is_empty() {
                continue;
            }
            let t = fits[rng.random_range(0..fits.len())];
            if let Some(target) = pick(&mut rng, kind, t) {
                out.push(Planned {
                    at,
                    kind,
                    target,
                    duration: d,
                    slow_us: r.slow_us.unwrap_or(5000),
                });
            }
        }
    }
    out.sort_by_key(|p| p.at);
    out
}

impl Run<'_> {
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn role_args(&self, idx: usize, p: &P) -> Vec<String> {
        let s = &p.proc_.spec;
        let subst = |e: &String| {
            let mut e = e.clone();
            for h in &self.net.hosts {
                e = e.replace(&format!("{{{}}}", h.name), &h.addr);
            }
            e
        };
        let kind = serde_json::to_value(s.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut a = vec![
            "role".to_owned(),
            kind,
            "--id".into(),
            idx.to_string(),
            "--inc".into(),
            p.lives.len().to_string(),
        ];
        let mut list = |flag: &str, v: &[String]| {
            for e in v {
                a.push(flag.into());
                a.push(subst(e));
            }
        };
        list("--bind", &s.bind);
        list("--connect", &s.connect);
        list("--back-bind", &s.back_bind);
        list("--back-connect", &s.back_connect);
        let mut opt = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(flag.into());
                a.push(v);
            }
        };
        opt("--front-type", s.front_type.clone());
        opt("--back-type", s.back_type.clone());
        opt("--rate", s.rate.map(|r| r.to_string()));
        opt("--min-size", s.size.map(|r| r[0].to_string()));
        opt("--max-size", s.size.map(|r| r[1].to_string()));
        opt("--slow-us", Some(s.slow_us.to_string()));
        opt("--hwm", s.hwm.map(|r| r.to_string()));
        opt("--ipc-ring", s.ipc_ring.map(|r| r.to_string()));
        opt("--resend-ms", s.resend.map(|r| r.as_millis().to_string()));
        opt("--attempts", s.attempts.map(|r| r.to_string()));
        opt(
            "--heartbeat-ms",
            s.heartbeat.map(|r| r.as_millis().to_string()),
        );
        opt(
            "--inject",
            s.inject.and_then(|i| {
                serde_json::to_value(i)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            }),
        );
        a
    }

    fn spawn(&mut self, procs: &mut [P], idx: usize) -> Result<()> {
        let args = self.role_args(idx, &procs[idx]);
        let p = &mut procs[idx];
        let host = self
            .net
            .host(&p.proc_.spec.host)
            .context("host of a process")?
            .clone();
        let inc = p.lives.len() as u32;
        let log_path = self.logdir.join(format!("{}.log", p.name));
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        writeln!(
            log,
            "--- {} incarnation {inc} at +{:.1}s: {}",
            p.name,
            self.elapsed().as_secs_f64(),
            args.join(" ")
        )?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns])
            .arg(&self.opts.exe)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .env("TMPDIR", &self.tmpdir)
            .env("RUST_BACKTRACE", "1")
            // Not in the terminal's process group: Ctrl-C reaches the harness only,
            // which then stops everything itself.
            .process_group(0);
        let mut child = cmd.spawn().with_context(|| format!("start {}", p.name))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let ev = match serde_json::from_str::<Report>(&line) {
                    Ok(r) => Event::Line(idx, inc, Box::new(r)),
                    Err(_) => Event::Junk(idx, line),
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Eof(idx, inc));
        });
        p.pid = Some(child.id());
        p.stdin = child.stdin.take();
        p.child = Some(child);
        p.status = Status::Running;
        p.last_move = (p.total_moved(), Instant::now());
        p.lives.push(Life {
            inc,
            started_ms: now_ms(),
            ..Life::default()
        });
        Ok(())
    }

    fn say(p: &mut P, line: &str) {
        if let Some(s) = p.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    fn signal(p: &P, sig: Signal) {
        if let Some(pid) = p.pid {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    fn kill9(p: &mut P, how: &str) {
        if let Some(mut c) = p.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        p.stdin = None;
        p.pid = None;
        if let Some(l) = p.life() {
            l.ended_ms = Some(now_ms());
            l.ended_how = how.into();
        }
    }

    fn event(&mut self, procs: &mut [P], ev: Event) {
        match ev {
            Event::Line(idx, inc, r) => self.report_line(procs, idx, inc, *r),
            Event::Junk(idx, line) => {
                eprintln!("burn: {}: not a report: {line}", procs[idx].name);
            }
            Event::Eof(idx, inc) => {
                let p = &mut procs[idx];
                if let Some(l) = p.lives.iter_mut().find(|l| l.inc == inc)
                    && l.ended_ms.is_none()
                {
                    l.ended_ms = Some(now_ms());
                    l.ended_how = "exited".into();
                }
            }
        }
    }

    fn report_line(&mut self, procs: &mut [P], idx: usize, inc: u32, r: Report) {
        let name = procs[idx].name.clone();
        let kind = procs[idx].kind();
        let policy = procs[idx].proc_.spec.loss;
        let is_final = matches!(r, Report::Final(_));
        let Some(life) = procs[idx].lives.iter_mut().find(|l| l.inc == inc) else {
            return;
        };
        match r {
            Report::Hello { pid } => procs[idx].pid = Some(pid),
            Report::Stats(s) | Report::Final(s) => {
                for &(src, a, b) in &s.outages {
                    self.outages.push((idx, src, a, b));
                }
                for &(src, i, at) in &s.joined {
                    self.joined.push((idx, src, i, at));
                }
                if is_final {
                    life.fin = Some(s.clone());
                }
                life.last = s;
            }
            Report::Gap(g) => {
                let n = g.to - g.from + 1;
                let id = MsgId {
                    src: g.src,
                    inc: g.inc,
                    seq: g.from,
                };
                match check::gap_excuse(policy, &self.faults, &g) {
                    Some(_) => self.allowed_loss += n,
                    None => self.violations.push(Violation {
                        at_ms: g.at_ms,
                        ..violation(
                            "loss",
                            &format!("{name}#{inc}"),
                            Some(name_message(&self.names, id)),
                            format!(
                                "{n} message(s) {}..={} of {}#{}{} never arrived at this {} (loss policy {:?}; no fault explains it)",
                                g.from,
                                g.to,
                                self.names.get(g.src as usize).map_or("?", |s| s.as_str()),
                                g.inc,
                                self.via_names(&g.via),
                                kind_name(kind),
                                policy
                            ),
                        )
                    }),
                }
            }
            Report::Bad {
                at_ms,
                kind: k,
                message,
                detail,
                via,
            } => {
                let detail = format!("{detail}{}", self.via_names(&via));
                self.violations.push(Violation {
                    at_ms,
                    ..violation(
                        &k,
                        &format!("{name}#{inc}"),
                        message.map(|m| name_message(&self.names, m)),
                        detail,
                    )
                })
            }
        }
    }

    /// ` (via head#0 > middle#3)`, or nothing for a message straight from its sender.
    fn via_names(&self, via: &[(u32, u32)]) -> String {
        if via.is_empty() {
            return String::new();
        }
        let hops: Vec<String> = via
            .iter()
            .map(|&(i, inc)| {
                let n = self.names.get(i as usize).map_or("?", |s| s.as_str());
                format!("{n}#{inc}")
            })
            .collect();
        format!(" (via {})", hops.join(" > "))
    }

    fn start_fault(
        &mut self,
        procs: &mut [P],
        f: &Planned,
        active: &mut Vec<Active>,
    ) -> Result<()> {
        if active.iter().any(|a| a.target == f.target) {
            return Ok(()); // one fault at a time per target
        }
        let idx = procs.iter().position(|p| p.name == f.target);
        match (f.kind, idx) {
            (FaultKind::Link, _) => self.net.link(&f.target, false)?,
            (_, None) => return Ok(()),
            (kind, Some(i)) => {
                let p = &mut procs[i];
                if p.status != Status::Running {
                    return Ok(());
                }
                match kind {
                    FaultKind::Kill => {
                        Run::kill9(p, "kill -9");
                        p.status = Status::Killed;
                    }
                    FaultKind::Stop => {
                        Run::signal(p, Signal::SIGSTOP);
                        p.status = Status::Stopped;
                    }
                    FaultKind::Slow => Run::say(p, &format!("slow {}", f.slow_us)),
                    FaultKind::Link => unreachable!("handled above"),
                }
            }
        }
        self.faults.push(FaultRecord {
            kind: f.kind.as_str().into(),
            target: f.target.clone(),
            start_ms: now_ms(),
            end_ms: None,
        });
        active.push(Active {
            kind: f.kind,
            target: f.target.clone(),
            ends: Instant::now() + f.duration,
            record: self.faults.len() - 1,
        });
        Ok(())
    }

    fn end_fault(&mut self, procs: &mut [P], a: &Active) -> Result<()> {
        let idx = procs.iter().position(|p| p.name == a.target);
        match (a.kind, idx) {
            (FaultKind::Link, _) => self.net.link(&a.target, true)?,
            (FaultKind::Kill, Some(i)) => {
                if procs[i].status == Status::Killed {
                    self.spawn(procs, i)?;
                }
            }
            (FaultKind::Stop, Some(i)) => {
                Run::signal(&procs[i], Signal::SIGCONT);
                if procs[i].status == Status::Stopped {
                    procs[i].status = Status::Running;
                }
                procs[i].last_move = (procs[i].total_moved(), Instant::now());
            }
            (FaultKind::Slow, Some(i)) => {
                let us = procs[i].proc_.spec.slow_us;
                Run::say(&mut procs[i], &format!("slow {us}"));
            }
            (_, None) => {}
        }
        self.faults[a.record].end_ms = Some(now_ms());
        Ok(())
    }

    /// Runs until the duration is over; true if interrupted.
    fn main_loop(
        &mut self,
        procs: &mut [P],
        rx: &mpsc::Receiver<Event>,
        plan: &[Planned],
        duration: Duration,
        interrupted: &AtomicBool,
    ) -> Result<bool> {
        let mut next_fault = 0;
        let mut plan_shift = Duration::ZERO;
        let mut active: Vec<Active> = Vec::new();
        let mut last_tick = Instant::now();
        let mut next_sample = Instant::now();
        loop {
            if interrupted.load(Ordering::SeqCst) {
                return Ok(true);
            }
            let now = Instant::now();
            let gap = now - last_tick;
            if gap > Duration::from_secs(3) {
                // Nobody ran for a while: the whole run was paused (SIGSTOP from
                // outside, or a machine this loaded that it amounts to it).
                let end = now_ms();
                self.pauses.push((end - gap.as_millis() as u64, end));
                // Faults not started yet keep their spacing: a fault due during the
                // pause would otherwise follow the one that overran it at once.
                plan_shift += gap;
                for p in procs.iter_mut() {
                    p.last_move = (p.total_moved(), now);
                }
            }
            last_tick = now;
            let t = self.elapsed();
            if t >= duration {
                // End the faults going on, restart what is down.
                for a in std::mem::take(&mut active) {
                    self.end_fault(procs, &a)?;
                }
                return Ok(false);
            }
            for i in 0..procs.len() {
                if procs[i].status == Status::NotStarted && t >= procs[i].proc_.spec.start_after {
                    self.spawn(procs, i)?;
                }
            }
            while next_fault < plan.len() && plan[next_fault].at + plan_shift <= t {
                let f = plan[next_fault].clone();
                self.start_fault(procs, &f, &mut active)?;
                next_fault += 1;
            }
            let (due, keep): (Vec<Active>, Vec<Active>) =
                active.into_iter().partition(|a| a.ends <= now);
            active = keep;
            for a in due {
                self.end_fault(procs, &a)?;
            }
            self.reap(procs)?;
            if now >= next_sample {
                self.sample(procs);
                next_sample = now + Duration::from_secs(1);
            }
            let wait_until = now + Duration::from_millis(100);
            while let Ok(ev) = rx.recv_timeout(wait_until.saturating_duration_since(Instant::now()))
            {
                self.event(procs, ev);
            }
        }
    }

    /// A process that exited by itself is a violation; it is restarted.
    fn reap(&mut self, procs: &mut [P]) -> Result<()> {
        for i in 0..procs.len() {
            if procs[i].status != Status::Running && procs[i].status != Status::Stopped {
                continue;
            }
            let Some(c) = procs[i].child.as_mut() else {
                continue;
            };
            if let Ok(Some(st)) = c.try_wait() {
                let name = procs[i].name.clone();
                let tail = log_tail(&self.logdir.join(format!("{name}.log")));
                self.violations.push(violation(
                    "exit",
                    &format!("{name}#{}", procs[i].lives.len().saturating_sub(1)),
                    None,
                    format!("exited by itself ({st}); its last words: {tail}"),
                ));
                procs[i].child = None;
                Run::kill9(&mut procs[i], "exited");
                procs[i].crashes += 1;
                if procs[i].crashes <= MAX_CRASHES {
                    self.spawn(procs, i)?;
                } else {
                    procs[i].status = Status::Done;
                    self.violations.push(violation(
                        "exit",
                        &name,
                        None,
                        format!("exited by itself {MAX_CRASHES} times: not restarted any more"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn sample(&mut self, procs: &mut [P]) {
        let now = now_ms();
        let stall = self.sc.check.stall;
        for p in procs.iter_mut() {
            let total = p.total_moved();
            p.series.push((now, total));
            if p.status == Status::Running && p.kind() != Kind::Proxy {
                if total != p.last_move.0 {
                    p.last_move = (total, Instant::now());
                } else if p.last_move.1.elapsed() > stall
                    && let Some(l) = p.lives.last_mut()
                    && !l.stalled
                {
                    l.stalled = true;
                    self.violations.push(violation(
                        "stall",
                        &format!("{}#{}", p.name, l.inc),
                        None,
                        format!(
                            "moved nothing for {} s while running and not faulted",
                            stall.as_secs()
                        ),
                    ));
                }
            }
            let Some(pid) = p.pid else { continue };
            if p.status == Status::Killed {
                continue;
            }
            let Some(s) = proc_sample(pid, now, &mut p.seen_paths) else {
                continue;
            };
            if let Some(l) = p.lives.last_mut() {
                l.samples.push(s);
            }
        }
    }

    fn drain(&mut self, procs: &mut [P], rx: &mpsc::Receiver<Event>) -> Result<()> {
        // Restarted processes get a moment to connect.
        let pump = |run: &mut Run<'_>, procs: &mut [P], d: Duration| {
            let until = Instant::now() + d;
            while let Ok(ev) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                run.event(procs, ev);
            }
        };
        pump(self, procs, Duration::from_millis(500));
        for p in procs.iter_mut().filter(|p| p.kind().is_sender()) {
            Run::say(p, "stop");
        }
        let mut t0 = Waited::new();
        while t0.elapsed(&mut self.pauses) < Duration::from_secs(20)
            && procs.iter().any(|p| {
                p.kind().is_sender()
                    && p.child.is_some()
                    && p.lives
                        .last()
                        .is_some_and(|l| l.fin.is_none() && l.ended_ms.is_none())
            })
        {
            pump(self, procs, Duration::from_millis(100));
        }
        // Receivers: until nothing moves for two seconds (at most 30 s). A receiver
        // allowed to lose anything (a slow subscriber) is not waited for.
        let moved = |procs: &[P]| -> u64 {
            procs
                .iter()
                .filter(|p| !p.kind().is_sender() && p.proc_.spec.loss != LossPolicy::Always)
                .map(P::total_moved)
                .sum()
        };
        let mut t0 = Waited::new();
        let mut last = (moved(procs), Instant::now());
        loop {
            let pauses = self.pauses.len();
            let waited = t0.elapsed(&mut self.pauses);
            if self.pauses.len() != pauses {
                // Everything was paused: the quiet time starts again.
                last.1 = Instant::now();
            }
            if waited >= Duration::from_secs(30) || last.1.elapsed() >= Duration::from_millis(1500)
            {
                break;
            }
            pump(self, procs, Duration::from_millis(200));
            let m = moved(procs);
            if m != last.0 {
                last = (m, Instant::now());
            }
        }
        for p in procs.iter_mut() {
            Run::say(p, "stop");
        }
        let mut t0 = Waited::new();
        while t0.elapsed(&mut self.pauses) < Duration::from_secs(10) {
            pump(self, procs, Duration::from_millis(100));
            let mut running = false;
            for p in procs.iter_mut() {
                if let Some(c) = p.child.as_mut() {
                    if matches!(c.try_wait(), Ok(Some(_))) {
                        p.child = None;
                        p.status = Status::Done;
                        p.stdin = None;
                    } else {
                        running = true;
                    }
                }
            }
            if !running {
                break;
            }
        }
        pump(self, procs, Duration::from_millis(300));
        Ok(())
    }

    fn leftovers(&mut self, procs: &[P], shm_before: &HashSet<String>) {
        // The kernel frees a dead process's sockets at once; give it a moment anyway.
        let mut names = Vec::new();
        for _ in 0..30 {
            names = self.net.abstract_names();
            if names.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (host, name) in names {
            self.violations.push(violation(
                "leftover",
                &format!("host {host}"),
                None,
                format!("abstract Unix name {name} still bound after every process exited"),
            ));
        }
        for e in list_dir(&self.tmpdir.to_string_lossy()) {
            self.violations.push(violation(
                "leftover",
                "TMPDIR",
                None,
                format!("{} left in the processes' TMPDIR", e),
            ));
        }
        for e in list_dir("/dev/shm").difference(shm_before) {
            if e.contains("lwmq") {
                self.violations.push(violation(
                    "leftover",
                    "/dev/shm",
                    None,
                    format!("/dev/shm/{e} appeared during the run and is still there"),
                ));
            }
        }
        for p in procs {
            for path in &p.seen_paths {
                // Its log file is the harness's own.
                if Path::new(path).exists() && !Path::new(path).starts_with(&self.logdir) {
                    self.violations.push(violation(
                        "leftover",
                        &p.name,
                        None,
                        format!("{path} was open in it and is still there"),
                    ));
                }
            }
        }
    }

    fn ledger(&mut self, procs: &[P]) {
        for (idx, p) in procs.iter().enumerate() {
            if p.kind() != Kind::Push || !p.proc_.spec.ledger {
                continue;
            }
            for l in &p.lives {
                let Some(fin) = &l.fin else { continue };
                let received: u64 = procs
                    .iter()
                    .filter(|r| matches!(r.kind(), Kind::Pull))
                    .flat_map(|r| r.lives.iter())
                    .flat_map(|rl| rl.last.per_source.iter())
                    .filter(|&&(s, i, _)| s as usize == idx && i == l.inc)
                    .map(|&(_, _, c)| c)
                    .sum();
                let end = l.ended_ms.unwrap_or(u64::MAX);
                let kill = self.faults.iter().any(|f| {
                    f.kind == "kill" && f.start_ms + 2000 >= l.started_ms && f.start_ms <= end
                });
                if let Some((kind, detail)) = check::ledger(fin.sent, received, kill) {
                    self.violations.push(violation(
                        kind,
                        &format!("{}#{}", p.name, l.inc),
                        None,
                        format!("at the end, over all receivers: {detail}"),
                    ));
                } else if received < fin.sent {
                    self.allowed_loss += fin.sent - received;
                }
            }
        }
    }

    fn resources(&mut self, procs: &[P]) {
        let c = &self.sc.check;
        let slack = Slack {
            fds: c.fd_slack,
            threads: c.thread_slack,
            rss_kb: c.rss_slack_mb * 1024,
        };
        let warmup = c.warmup.as_millis() as u64;
        for p in procs {
            for l in &p.lives {
                // Samples taken during a pause of the run are as good as any; only
                // growth across the life counts.
                for what in check::growth(&l.samples, warmup, slack) {
                    self.violations.push(violation(
                        "leak",
                        &format!("{}#{}", p.name, l.inc),
                        None,
                        what,
                    ));
                }
            }
        }
    }

    fn report(
        &self,
        procs: &[P],
        started_ms: u64,
        ended_ms: u64,
        hosts: Vec<(String, String)>,
        interrupted: bool,
    ) -> ScenarioReport {
        let mut processes = Vec::new();
        let mut series = Vec::new();
        for p in procs {
            let sum = |f: fn(&Stats) -> u64| p.lives.iter().map(|l| f(&l.last)).sum::<u64>();
            let first = p.lives.first().and_then(|l| l.samples.first().copied());
            let last = p.lives.last().and_then(|l| l.samples.last().copied());
            let behind = p.lives.last().map_or(0, |l| {
                l.last
                    .highest
                    .iter()
                    .filter_map(|&(src, inc, h)| {
                        let fin = procs
                            .get(src as usize)?
                            .lives
                            .iter()
                            .find(|sl| sl.inc == inc)?
                            .fin
                            .as_ref()?;
                        Some(fin.sent.saturating_sub(h + 1))
                    })
                    .sum()
            });
            processes.push(ProcReport {
                behind,
                late_across_pipes: sum(|s| s.late_across_pipes),
                name: p.name.clone(),
                role: kind_name(p.kind()).into(),
                host: p.proc_.spec.host.clone(),
                incarnations: p.lives.len() as u32,
                sent: sum(|s| s.sent),
                received: sum(|s| s.received),
                executed: sum(|s| s.executed),
                resends: sum(|s| s.resends),
                failovers: sum(|s| s.failovers),
                given_up: sum(|s| s.given_up),
                replies_from_cache: sum(|s| s.replies_from_cache),
                rtt_us: p
                    .lives
                    .iter()
                    .filter_map(|l| l.last.rtt_us)
                    .max_by_key(|r| r[2]),
                first_sample: first,
                last_sample: last,
            });
            if p.kind() != Kind::Proxy || p.lives.iter().any(|l| l.last.sent > 0) {
                let mut pts = Vec::new();
                for w in p.series.windows(2) {
                    let dt = (w[1].0 - w[0].0) as f64 / 1000.0;
                    if dt > 0.0 {
                        let t = (w[1].0.saturating_sub(started_ms)) as f64 / 1000.0;
                        pts.push((t, w[1].1.saturating_sub(w[0].1) as f64 / dt));
                    }
                }
                series.push(Series {
                    name: p.name.clone(),
                    points: pts,
                });
            }
        }
        let mut recoveries = Vec::new();
        for f in &self.faults {
            let Some(end) = f.end_ms else { continue };
            let target = self.names.iter().position(|n| *n == f.target);
            let recovered_ms = match (f.kind.as_str(), target) {
                ("kill", Some(i)) => {
                    // The life the restart began.
                    let p = &procs[i];
                    p.lives
                        .iter()
                        .rfind(|l| l.started_ms <= end + 100)
                        .and_then(|l| {
                            if matches!(p.kind(), Kind::Push | Kind::Pub) {
                                self.joined
                                    .iter()
                                    .filter(|j| j.1 as usize == i && j.2 == l.inc)
                                    .map(|j| j.3)
                                    .min()
                            } else {
                                l.last.first_at_ms
                            }
                        })
                        .map(|t| t.saturating_sub(end))
                }
                _ => self
                    .outages
                    .iter()
                    .filter(|&&(_, src, from, to)| {
                        from <= end + 500
                            && to >= end
                            && match (f.kind.as_str(), target) {
                                ("stop" | "slow", Some(i)) => src as usize == i || src == u32::MAX,
                                _ => true,
                            }
                    })
                    .map(|&(_, _, _, to)| to - end)
                    .max(),
            };
            recoveries.push(Recovery {
                kind: f.kind.clone(),
                target: f.target.clone(),
                at_s: (f.start_ms.saturating_sub(started_ms)) as f64 / 1000.0,
                lasted_ms: end - f.start_ms,
                recovered_ms,
            });
        }
        ScenarioReport {
            name: self.sc.name.clone(),
            description: self.sc.description.clone(),
            interrupted,
            seed: self.opts.seed,
            started_ms,
            ended_ms,
            hosts,
            processes,
            faults: self.faults.clone(),
            recoveries,
            allowed_loss: self.allowed_loss,
            violations: self.violations.clone(),
            pauses: self.pauses.clone(),
            series,
        }
    }
}

/// Time waited, without the time the whole run was paused from outside (a step of the
/// waiting loop that took more than 3 s; recorded in `pauses`), so that a long pause
/// during the drain does not look like processes that do not stop.
struct Waited {
    start: Instant,
    last: Instant,
    paused: Duration,
}

impl Waited {
    fn new() -> Waited {
        let now = Instant::now();
        Waited {
            start: now,
            last: now,
            paused: Duration::ZERO,
        }
    }

    fn elapsed(&mut self, pauses: &mut Vec<(u64, u64)>) -> Duration {
        let now = Instant::now();
        let step = now - self.last;
        if step > Duration::from_secs(3) {
            self.paused += step;
            let end = now_ms();
            pauses.push((end - step.as_millis() as u64, end));
        }
        self.last = now;
        (now - self.start).saturating_sub(self.paused)
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Push => "push",
        Kind::Pull => "pull",
        Kind::Pub => "pub",
        Kind::Sub => "sub",
        Kind::Req => "req",
        Kind::Rep => "rep",
        Kind::Proxy => "proxy",
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Descriptors, threads and RSS of `pid`; paths under /dev/shm or /tmp it has open go
/// into `paths`.
fn proc_sample(pid: u32, now: u64, paths: &mut HashSet<String>) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut fds = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        fds += 1;
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if t.starts_with("/dev/shm/") || t.starts_with("/tmp/") {
                paths.insert(t.trim_end_matches(" (deleted)").to_owned());
            }
        }
    }
    Some(Sample {
        at_ms: now,
        fds,
        threads: field("Threads:"),
        rss_kb: field("VmRSS:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_plans_are_reproducible_and_end_before_the_drain() {
        let sc: Scenario = toml::from_str(
            r#"
name = "x"
description = "x"
hosts = ["a", "b"]
duration = "60s"
short_duration = "10s"
seed = 7
[[process]]
name = "p"
role = "push"
count = 3
[[fault]]
kind = "kill"
target = "p-*"
at = "5s"
every = "10s"
duration = "1s"
[[random_fault]]
kinds = ["stop", "link"]
targets = ["p-1", "b"]
interval = ["1s", "3s"]
duration = ["100ms", "500ms"]
"#,
        )
        .expect("parse");
        let a = plan_faults(&sc, 1, Duration::from_secs(60));
        let b = plan_faults(&sc, 1, Duration::from_secs(60));
        let c = plan_faults(&sc, 2, Duration::from_secs(60));
        let key = |v: &[Planned]| {
            v.iter()
                .map(|p| (p.at, p.target.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b), "same seed, same plan");
        assert_ne!(key(&a), key(&c), "another seed, another plan");
        // 5 s, 15 s ... 55 s: the last ends at 56 s, before the drain at 58 s.
        assert_eq!(a.iter().filter(|p| p.kind == FaultKind::Kill).count(), 6);
        for p in &a {
            assert!(p.at + p.duration <= Duration::from_secs(58), "{p:?}");
            match p.kind {
                FaultKind::Link => assert_eq!(p.target, "b"),
                FaultKind::Stop => assert_eq!(p.target, "p-1"),
                FaultKind::Kill => assert!(p.target.starts_with("p-")),
                FaultKind::Slow => panic!("not asked for"),
            }
        }
    }
}
