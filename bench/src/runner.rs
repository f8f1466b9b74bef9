//! The runner: the scenario list, the contenders' variants, and the loop that starts
//! the peer processes of every run, collects their reports, interleaves contenders and
//! repeats.
//!
//! Each run gets fresh processes (this binary, `peer` subcommand). The runner never
//! measures anything itself; it only orders, checks and records what the peers report.
//! A run that fails or times out is recorded with its error and the others go on.
//!
//! Threads: the runner's main thread owns the children; one thread per child reads its
//! stdout and forwards lines over a channel.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::scenario::{Faults, Latency, Rate, Report};

/// One way of running one contender: a transport and how it is pinned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Variant {
    pub contender: String,
    pub transport: String,
    /// Both sides in one process on two threads (inproc).
    pub in_process: bool,
    /// Pinned to the two cores under `--pin auto`: where nothing else (no background
    /// I/O thread) would have to share a pinned core.
    pub pin_auto: bool,
    /// Scenarios this variant takes part in.
    pub scenarios: Vec<String>,
    /// If set, only these cases of those scenarios (a variant measured at a few sizes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<Case>>,
}

impl Variant {
    /// Whether this variant takes part in `case`.
    pub fn runs(&self, case: &Case) -> bool {
        self.scenarios.contains(&case.scenario)
            && self.only.as_ref().is_none_or(|o| o.contains(case))
    }
}

fn variant(c: &str, t: &str, in_process: bool, pin_auto: bool, sc: &[&str]) -> Variant {
    Variant {
        contender: c.into(),
        transport: t.into(),
        in_process,
        pin_auto,
        scenarios: sc.iter().map(|s| s.to_string()).collect(),
        only: None,
    }
}

/// The CURVE cases: what encryption costs, at a small and a large size.
pub const CURVE_CASES: [(&str, usize); 3] = [("rtt", 64), ("thr", 64), ("thr", 65536)];

/// `tcp-curve`: tcp with the CURVE mechanism, for the CURVE cases only.
fn curve_variant(c: &str) -> Variant {
    let mut v = variant(c, "tcp-curve", false, false, &["rtt", "thr"]);
    v.only = Some(
        CURVE_CASES
            .iter()
            .map(|&(sc, size)| Case {
                scenario: sc.into(),
                size,
            })
            .collect(),
    );
    v
}

/// `T-resend`: lwmq's transport `T` with REQ resend on (and so the REP's
/// de-duplication), at the 64 B round trip only: what reliable request/reply costs.
fn resend_variant(t: &str, in_process: bool, pin_auto: bool) -> Variant {
    let mut v = variant(
        "lwmq",
        &format!("{t}-resend"),
        in_process,
        pin_auto,
        &["rtt"],
    );
    v.only = Some(vec![Case {
        scenario: "rtt".into(),
        size: 64,
    }]);
    v
}

/// `async-*`: a contender's async API on tokio, for the 64 B round trip and throughput.
fn async_variant(c: &str, t: &str, pin_auto: bool) -> Variant {
    let mut v = variant(c, t, false, pin_auto, &["rtt", "thr"]);
    v.only = Some(
        [("rtt", 64), ("thr", 64)]
            .iter()
            .map(|&(sc, size)| Case {
                scenario: sc.into(),
                size,
            })
            .collect(),
    );
    v
}

/// Every variant the harness knows, in table order.
pub fn all_variants() -> Vec<Variant> {
    let all = ["rtt", "thr", "pubsub"];
    let pair = ["rtt", "thr"];
    let mut v = vec![
        variant("lwmq", "ipc-spin", false, true, &all),
        variant("lwmq", "ipc-park", false, true, &all),
        // send_with/recv_with: round trip between PAIRs, PUSH/PULL (see drivers/lwmq.rs).
        variant("lwmq", "ipc-loan", false, true, &pair),
        variant("lwmq", "tcp", false, false, &all),
        curve_variant("lwmq"),
        variant("lwmq", "unix", false, false, &all),
        variant("lwmq", "inproc", true, true, &pair),
        resend_variant("ipc-spin", false, true),
        resend_variant("tcp", false, false),
        resend_variant("inproc", true, true),
        variant("libzmq", "ipc", false, false, &all),
        variant("libzmq", "tcp", false, false, &all),
        curve_variant("libzmq"),
        variant("libzmq", "inproc", true, true, &pair),
        variant("zeromq-rs", "ipc", false, false, &all),
        variant("zeromq-rs", "tcp", false, false, &all),
        // omq moves the bytes of every transport here on its I/O thread, inproc's REP
        // receives too (its socket actor): left to the scheduler under --pin auto.
        variant("omq", "shm", false, false, &all),
        variant("omq", "shm-spin", false, false, &all),
        variant("omq", "ipc", false, false, &all),
        variant("omq", "tcp", false, false, &all),
        curve_variant("omq"),
        variant("omq", "inproc", true, false, &pair),
        variant("iceoryx2", "shm", false, true, &["rtt"]),
        // The async APIs on tokio (each call `block_on` of the socket's future), at the
        // round trip and the 64 B throughput.
        async_variant("lwmq", "async-ipc-spin", true),
        async_variant("lwmq", "async-ipc-park", false),
        async_variant("lwmq", "async-tcp", false),
        async_variant("zeromq-rs", "async-ipc", false),
        async_variant("zeromq-rs", "async-tcp", false),
        async_variant("omq", "async-shm-spin", false),
        async_variant("omq", "async-shm", false),
        async_variant("omq", "async-ipc", false),
        async_variant("omq", "async-tcp", false),
    ];
    if cfg!(feature = "lwmq-shm-raw") {
        v.insert(2, variant("lwmq", "ipc-raw-spin", false, true, &pair));
        v.insert(3, variant("lwmq", "ipc-raw-park", false, true, &pair));
    }
    v
}

/// One entry of the scenario list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Case {
    /// `rtt` (round trip, REQ/REP), `thr` (one-way PUSH->PULL) or `pubsub` (PUB to
    /// `subs` SUB processes).
    pub scenario: String,
    pub size: usize,
}

/// How much to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub mode: String,
    pub reps: usize,
    /// Measured time of each run (round trips, or the sender's stream).
    pub duration_ms: u64,
    /// Unmeasured round trips before the measured ones.
    pub warmup: u64,
    pub subs: usize,
    /// `auto`, `always` or `never`.
    pub pin: String,
    pub cases: Vec<Case>,
    pub variants: Vec<Variant>,
}

pub const RTT_SIZES: [usize; 3] = [64, 1024, 65536];
pub const THR_SIZES: [usize; 4] = [64, 1024, 65536, 1 << 20];
pub const PUBSUB_SIZES: [usize; 1] = [64];

impl Plan {
    /// The plan of a mode: `smoke` (tiny, to check the harness works), `quick` (every
    /// case, short runs, one repetition) or `full`.
    pub fn for_mode(mode: &str) -> Result<Plan> {
        let (reps, duration_ms, warmup, subs, small) = match mode {
            "smoke" => (1, 50, 50, 2, true),
            "quick" => (1, 250, 1000, 4, false),
            "full" => (3, 2000, 10_000, 4, false),
            other => bail!("unknown mode {other:?} (smoke, quick, full)"),
        };
        let mut cases = Vec::new();
        let take = |sizes: &[usize]| -> Vec<usize> {
            if small {
                sizes[..1].to_vec()
            } else {
                sizes.to_vec()
            }
        };
        for s in take(&RTT_SIZES) {
            cases.push(Case {
                scenario: "rtt".into(),
                size: s,
            });
        }
        for s in take(&THR_SIZES) {
            cases.push(Case {
                scenario: "thr".into(),
                size: s,
            });
        }
        for s in take(&PUBSUB_SIZES) {
            cases.push(Case {
                scenario: "pubsub".into(),
                size: s,
            });
        }
        Ok(Plan {
            mode: mode.into(),
            reps,
            duration_ms,
            warmup,
            subs,
            pin: "auto".into(),
            cases,
            variants: all_variants(),
        })
    }

    fn pinned(&self, v: &Variant) -> bool {
        match self.pin.as_str() {
            "always" => true,
            "never" => false,
            _ => v.pin_auto,
        }
    }
}

/// The record of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub scenario: String,
    pub size: usize,
    pub contender: String,
    pub transport: String,
    pub rep: usize,
    pub pinned: bool,
    pub ok: bool,
    pub error: Option<String>,
    /// Why the run was not attempted (the contender cannot do this in this build).
    #[serde(default)]
    pub skipped: Option<String>,
    pub wall_s: f64,
    pub latency: Option<Latency>,
    /// The receiver's rate (thr).
    pub rate: Option<Rate>,
    /// Data messages the sender sent (thr, pubsub).
    pub sent: Option<u64>,
    /// Each subscriber's rate (pubsub).
    pub subs: Vec<Rate>,
    /// Page faults (minor + major) per message in steady state, all sides together
    /// (each side's count over its measured messages; see `scenario::Faults`).
    #[serde(default)]
    pub faults_per_msg: Option<f64>,
    /// The machine's core-to-core round trip (`machine::core_to_core_ns`), measured
    /// just before and just after the run: what any cross-core hand-off cost then.
    #[serde(default)]
    pub floor_ns: Vec<f64>,
}

/// The peer processes of one run and the channel their stdout lines arrive on.
struct Group {
    exe: std::path::PathBuf,
    children: Vec<(String, Child)>,
    stdins: Vec<Option<ChildStdin>>,
    /// The last error line each child printed on stderr (passed through to ours).
    errors: Vec<Arc<Mutex<Option<String>>>>,
    tx: mpsc::Sender<(usize, Option<String>)>,
    rx: mpsc::Receiver<(usize, Option<String>)>,
    deadline: Instant,
    /// The page-fault counts the peers reported so far.
    faults: Vec<Faults>,
    /// Which children's stdout has ended.
    ended: Vec<bool>,
}

impl Group {
    fn new(timeout: Duration) -> Result<Group> {
        let (tx, rx) = mpsc::channel();
        Ok(Group {
            exe: std::env::current_exe().context("find our own executable")?,
            children: Vec::new(),
            stdins: Vec::new(),
            errors: Vec::new(),
            tx,
            rx,
            deadline: Instant::now() + timeout,
            faults: Vec::new(),
            ended: Vec::new(),
        })
    }

    /// Starts a peer process; returns its index.
    fn spawn(&mut self, label: &str, args: &[String]) -> Result<usize> {
        let mut child = Command::new(&self.exe)
            .arg("peer")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {label}"))?;
        let idx = self.children.len();
        let out = child.stdout.take().context("child stdout")?;
        let err = child.stderr.take().context("child stderr")?;
        let last_error = Arc::new(Mutex::new(None));
        self.errors.push(last_error.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                eprintln!("  | {line}");
                if let Some(e) = line.strip_prefix("lwmq-bench: error: ")
                    && let Ok(mut slot) = last_error.lock()
                {
                    *slot = Some(e.to_owned());
                }
            }
        });
        self.stdins.push(child.stdin.take());
        self.ended.push(false);
        self.children.push((label.to_owned(), child));
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send((idx, Some(l))).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send((idx, None));
        });
        Ok(idx)
    }

    /// The next report from any peer. A peer that exits with a failure, a line that is
    /// not a report, or the deadline passing is an error.
    fn next(&mut self) -> Result<(usize, Report)> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let (idx, line) = match self.rx.recv_timeout(left) {
                Ok(v) => v,
                Err(_) => bail!("timed out waiting for the peers"),
            };
            let label = self.children[idx].0.clone();
            match line {
                Some(l) => {
                    let r: Report = serde_json::from_str(&l)
                        .with_context(|| format!("{label} printed something else: {l:?}"))?;
                    match r {
                        Report::Faults(f) => self.faults.push(f),
                        r => return Ok((idx, r)),
                    }
                }
                None => {
                    self.ended[idx] = true;
                    let status = self.children[idx].1.wait()?;
                    if !status.success() {
                        bail!("{label} failed ({status}){}", self.why(idx));
                    }
                }
            }
        }
    }

    /// After `reap`: the page-fault reports still in the peers' output, for up to
    /// `grace`.
    fn drain(&mut self, grace: Duration) {
        let until = Instant::now() + grace;
        while self.ended.iter().any(|e| !e) {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((idx, None)) => self.ended[idx] = true,
                Ok((_, Some(l))) => {
                    if let Ok(Report::Faults(f)) = serde_json::from_str(&l) {
                        self.faults.push(f);
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// `": <its error>"` if child `idx` printed one (it may take a moment to arrive).
    fn why(&self, idx: usize) -> String {
        for _ in 0..50 {
            if let Ok(slot) = self.errors[idx].lock()
                && let Some(e) = slot.as_ref()
            {
                return format!(": {e}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        String::new()
    }

    fn say(&mut self, idx: usize, line: &str) -> Result<()> {
        let s = self.stdins[idx].as_mut().context("stdin already closed")?;
        s.write_all(line.as_bytes())?;
        s.write_all(b"\n")?;
        s.flush()?;
        Ok(())
    }

    /// Closes every peer's stdin ("you may exit").
    fn close(&mut self) {
        self.stdins.iter_mut().for_each(|s| drop(s.take()));
    }

    /// Waits for every peer to exit; kills those still there after `grace`.
    fn reap(&mut self, grace: Duration) -> Vec<String> {
        self.close();
        let until = Instant::now() + grace;
        let mut failures = Vec::new();
        for idx in 0..self.children.len() {
            loop {
                let (label, child) = &mut self.children[idx];
                match child.try_wait() {
                    Ok(Some(st)) => {
                        if !st.success() {
                            let label = label.clone();
                            failures.push(format!("{label} exited with {st}{}", self.why(idx)));
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        failures.push(format!("{label} did not exit; killed"));
                        break;
                    }
                }
            }
        }
        failures
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

struct Outcome {
    latency: Option<Latency>,
    rate: Option<Rate>,
    sent: Option<u64>,
    subs: Vec<Rate>,
    faults_per_msg: Option<f64>,
}

fn common_args(plan: &Plan, v: &Variant, case: &Case, name: &str) -> Vec<String> {
    [
        "--contender",
        &v.contender,
        "--transport",
        &v.transport,
        "--size",
        &case.size.to_string(),
        "--duration-ms",
        &plan.duration_ms.to_string(),
        "--warmup",
        &plan.warmup.to_string(),
        "--name",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with(mut base: Vec<String>, more: &[&str]) -> Vec<String> {
    base.extend(more.iter().map(|s| s.to_string()));
    base
}

fn ready_endpoint(g: &mut Group, idx: usize) -> Result<String> {
    match g.next()? {
        (i, Report::Ready { endpoint }) if i == idx => Ok(endpoint),
        (i, r) => bail!("expected {} to be ready, got {r:?}", g.children[i].0),
    }
}

fn run_one(plan: &Plan, v: &Variant, case: &Case, name: &str, pinned: bool) -> Result<Outcome> {
    let base = common_args(plan, v, case, name);
    let run_time = Duration::from_millis(plan.duration_ms);
    let mut g = Group::new(run_time * 4 + Duration::from_secs(30))?;
    let mut out = Outcome {
        latency: None,
        rate: None,
        sent: None,
        subs: Vec::new(),
        faults_per_msg: None,
    };
    // Sides that report page faults: the one process of an in-process pair (its
    // count covers both threads), each process otherwise.
    let sides = if v.in_process {
        1
    } else if case.scenario == "pubsub" {
        1 + plan.subs
    } else {
        2
    };
    let cores =
        |c: &'static str| -> Vec<&'static str> { if pinned { vec!["--cores", c] } else { vec![] } };
    if v.in_process {
        let role = match case.scenario.as_str() {
            "rtt" => "rtt-pair",
            "thr" => "thr-pair",
            other => bail!("{other} is not run in one process"),
        };
        let mut args = with(base, &["--role", role]);
        args.extend(cores("0,1").into_iter().map(String::from));
        g.spawn("pair", &args)?;
        let want = if role == "rtt-pair" { 1 } else { 2 };
        for _ in 0..want {
            match g.next()?.1 {
                Report::Latency(l) => out.latency = Some(l),
                Report::Rate(r) => out.rate = Some(r),
                Report::Sent { sent } => out.sent = Some(sent),
                r => bail!("unexpected report {r:?}"),
            }
        }
    } else {
        let (bind_role, conn_role) = match case.scenario.as_str() {
            "rtt" => ("rtt-server", "rtt-client"),
            "thr" => ("thr-pull", "thr-push"),
            "pubsub" => ("pub", "sub"),
            other => bail!("unknown scenario {other}"),
        };
        let mut a = with(base.clone(), &["--role", bind_role]);
        a.extend(cores("0").into_iter().map(String::from));
        let b = g.spawn(bind_role, &a)?;
        let ep = ready_endpoint(&mut g, b)?;
        let n_conn = if case.scenario == "pubsub" {
            plan.subs
        } else {
            1
        };
        for i in 0..n_conn {
            let mut a = with(base.clone(), &["--role", conn_role, "--endpoint", &ep]);
            a.extend(cores("1").into_iter().map(String::from));
            g.spawn(&format!("{conn_role}{i}"), &a)?;
        }
        match case.scenario.as_str() {
            "rtt" => match g.next()?.1 {
                Report::Latency(l) => out.latency = Some(l),
                r => bail!("unexpected report {r:?}"),
            },
            "thr" => {
                while out.rate.is_none() || out.sent.is_none() {
                    match g.next()?.1 {
                        Report::Rate(r) => out.rate = Some(r),
                        Report::Sent { sent } => out.sent = Some(sent),
                        r => bail!("unexpected report {r:?}"),
                    }
                }
            }
            _ => {
                let mut ready = 0;
                while ready < n_conn {
                    match g.next()? {
                        (i, Report::Ready { .. }) if i != b => ready += 1,
                        (_, r) => bail!("unexpected report {r:?} while subscribers join"),
                    }
                }
                g.say(b, "go")?;
                while out.subs.len() < n_conn {
                    match g.next()?.1 {
                        Report::Rate(r) => out.subs.push(r),
                        r => bail!("unexpected report {r:?}"),
                    }
                }
                g.close();
                match g.next()?.1 {
                    Report::Sent { sent } => out.sent = Some(sent),
                    r => bail!("unexpected report {r:?}"),
                }
            }
        }
    }
    let failures = g.reap(Duration::from_secs(10));
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    g.drain(Duration::from_secs(2));
    // Per message of the run: the sum of each side's faults per message it counted
    // (unknown if a side did not report, e.g. its end marker was lost).
    if g.faults.len() == sides {
        out.faults_per_msg = g
            .faults
            .iter()
            .map(Faults::per_message)
            .sum::<Option<f64>>();
    }
    check(case, &out)?;
    Ok(out)
}

/// What must hold of a correct run, whatever its speed.
fn check(case: &Case, o: &Outcome) -> Result<()> {
    match case.scenario.as_str() {
        "rtt" => {
            let l = o.latency.as_ref().ok_or_else(|| anyhow!("no latency"))?;
            if l.round_trips == 0 {
                bail!("no round trip was measured");
            }
        }
        "thr" => {
            let r = o.rate.as_ref().ok_or_else(|| anyhow!("no rate"))?;
            let sent = o.sent.ok_or_else(|| anyhow!("no sent count"))?;
            if r.received != sent || r.gaps != 0 {
                bail!(
                    "PUSH->PULL lost messages: sent {sent}, received {} with {} gaps",
                    r.received,
                    r.gaps
                );
            }
        }
        _ => {
            let sent = o.sent.ok_or_else(|| anyhow!("no sent count"))?;
            for s in &o.subs {
                if s.received > sent {
                    bail!("a subscriber received {} of {sent} sent", s.received);
                }
            }
        }
    }
    Ok(())
}

/// Runs the whole plan: for each repetition, each case, each variant in an order
/// rotated by the repetition (so no contender is always first or last).
pub fn run(plan: &Plan, mut progress: impl FnMut(&Run)) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut counter = 0u64;
    for rep in 0..plan.reps {
        for case in &plan.cases {
            let mut vs: Vec<&Variant> = plan.variants.iter().filter(|v| v.runs(case)).collect();
            if !vs.is_empty() {
                let k = rep % vs.len();
                vs.rotate_left(k);
            }
            for v in vs {
                counter += 1;
                let name = format!("{}-{counter}", std::process::id());
                // Five processes on two cores: pub/sub is left to the scheduler.
                let pinned = plan.pinned(v) && case.scenario != "pubsub";
                let start = Instant::now();
                let skipped = crate::drivers::unsupported(&v.contender, &v.transport);
                let mut floor_ns = Vec::new();
                let res = match &skipped {
                    Some(why) => Err(anyhow!("not run: {why}")),
                    None => {
                        floor_ns.extend(crate::machine::core_to_core_ns());
                        let res = run_one(plan, v, case, &name, pinned);
                        floor_ns.extend(crate::machine::core_to_core_ns());
                        res
                    }
                };
                crate::drivers::cleanup(&name);
                let wall_s = start.elapsed().as_secs_f64();
                let mut r = Run {
                    scenario: case.scenario.clone(),
                    size: case.size,
                    contender: v.contender.clone(),
                    transport: v.transport.clone(),
                    rep,
                    pinned,
                    ok: res.is_ok(),
                    error: None,
                    skipped: skipped.clone(),
                    wall_s,
                    latency: None,
                    rate: None,
                    sent: None,
                    subs: Vec::new(),
                    faults_per_msg: None,
                    floor_ns,
                };
                match res {
                    Ok(o) => {
                        r.faults_per_msg = o.faults_per_msg;
                        r.latency = o.latency;
                        r.rate = o.rate;
                        r.sent = o.sent;
                        r.subs = o.subs;
                    }
                    Err(_) if skipped.is_some() => {}
                    Err(e) => r.error = Some(format!("{e:#}")),
                }
                progress(&r);
                runs.push(r);
            }
        }
    }
    runs
}
