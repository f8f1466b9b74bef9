//! The scenarios, written once against [`Peer`], and the peer process that runs one
//! side of one of them.
//!
//! A peer process is started by the runner as `lwmq-bench peer ...`. It talks to the
//! runner with one JSON object per line on stdout (`ready` with the endpoint it bound,
//! `result` with what it measured) and listens on stdin (`go` on a line starts a
//! publisher's measured phase; end of input means "you may exit"). A side that does not
//! report keeps its socket open until end of input, so nothing it sent is lost by an
//! early exit.
//!
//! Messages carry a kind byte first: `D` data, `W` warm-up (publishers, ignored by
//! subscribers), `E` end of the measured phase; data messages carry a little-endian
//! sequence number in bytes 1..9.
//!
//! Threads: each side of a scenario runs on the thread that opened its peer; a peer
//! process has one more thread that only reads stdin and sets two flags.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::drivers::{self, Driver, Kind, Peer};

/// Data message.
pub const DATA: u8 = b'D';
/// Publisher's warm-up message, sent until every subscriber is ready.
pub const WARMUP: u8 = b'W';
/// End of the measured phase.
pub const END: u8 = b'E';
/// Bytes of a message the scenarios look at: the kind and a sequence number.
pub const HEAD: usize = 9;

/// Latency summary of one run, from a histogram of every measured round trip.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub round_trips: u64,
    pub min_ns: u64,
    pub median_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
}

/// What a receiver of a stream measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rate {
    /// Data messages received.
    pub received: u64,
    /// Time from the first data message to the last one (or to the end marker).
    pub seconds: f64,
    pub msgs_per_s: f64,
    pub gb_per_s: f64,
    /// Data messages whose sequence number was not the next expected one (drops).
    pub gaps: u64,
}

/// Page faults one side took over its measured messages (getrusage of its process:
/// every thread of it, the library's background threads included).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Faults {
    /// Minor and major page faults.
    pub minor: u64,
    pub major: u64,
    /// Messages (round trips, sends or receives) they were counted over.
    pub messages: u64,
}

impl Faults {
    /// Page faults per message, or `None` if nothing was counted.
    pub fn per_message(&self) -> Option<f64> {
        (self.messages > 0).then(|| (self.minor + self.major) as f64 / self.messages as f64)
    }
}

/// This process's page faults so far: (minor, major).
fn faults_now() -> (u64, u64) {
    // SAFETY: `ru` is plain data owned by this frame; getrusage only writes into it.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return (0, 0);
        }
        (ru.ru_minflt as u64, ru.ru_majflt as u64)
    }
}

/// Counts page faults from the first message after a warm-up (a tenth of the run, so
/// buffers that grow at the start are not counted: steady state) to the end.
struct FaultCount {
    since: Instant,
    warmup: Duration,
    start: Option<(u64, u64)>,
    ticks: u64,
    messages: u64,
}

impl FaultCount {
    fn after(warmup: Duration) -> FaultCount {
        FaultCount {
            since: Instant::now(),
            warmup,
            start: None,
            ticks: 0,
            messages: 0,
        }
    }

    /// Counting from now on.
    fn now() -> FaultCount {
        let mut c = FaultCount::after(Duration::ZERO);
        c.start = Some(faults_now());
        c
    }

    /// One message went by (after the first thousand, the clock is read every 64
    /// messages only: cheap for small messages, soon enough for large ones).
    fn tick(&mut self) {
        if self.start.is_some() {
            self.messages += 1;
            return;
        }
        self.ticks += 1;
        if (self.ticks < 1024 || self.ticks.is_multiple_of(64))
            && self.since.elapsed() >= self.warmup
        {
            self.start = Some(faults_now());
        }
    }

    fn done(&self) -> Faults {
        let (minor, major) = match self.start {
            Some((a, b)) => {
                let (c, d) = faults_now();
                (c.saturating_sub(a), d.saturating_sub(b))
            }
            None => (0, 0),
        };
        Faults {
            minor,
            major,
            messages: self.messages,
        }
    }
}

/// One line from a peer process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report {
    Ready {
        endpoint: String,
    },
    Latency(Latency),
    Rate(Rate),
    Sent {
        sent: u64,
    },
    /// A side's page faults over its measured messages (after its other reports).
    Faults(Faults),
}

/// Arguments of one peer process (or, for inproc, of both sides in one process).
#[derive(Debug, Clone)]
pub struct PeerArgs {
    pub contender: String,
    pub transport: String,
    pub role: String,
    pub size: usize,
    pub duration: Duration,
    pub warmup: u64,
    pub endpoint: Option<String>,
    pub name: String,
    /// Cores to pin to: one for a process, two (one per thread) for an inproc pair.
    pub cores: Vec<usize>,
}

/// Set once this process has printed what it measured.
static REPORTED: AtomicBool = AtomicBool::new(false);

fn emit(r: &Report) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, r)?;
    out.write_all(b"\n")?;
    out.flush()?;
    if !matches!(r, Report::Ready { .. }) {
        REPORTED.store(true, Ordering::Release);
    }
    Ok(())
}

/// Flags set by the stdin reader: `go` seen, end of input seen.
struct Control {
    go: AtomicBool,
    eof: AtomicBool,
}

/// Starts the stdin reader. With `exit_on_eof`, end of input ends the process (after a
/// grace period for a normal exit; status 0 if it has reported, 3 if the runner gave up
/// before that): a side blocked
/// in `recv` whose peer has already gone (its last message discarded on close) must
/// not linger, and no peer may outlive a runner that died.
fn control(exit_on_eof: bool) -> Arc<Control> {
    let c = Arc::new(Control {
        go: AtomicBool::new(false),
        eof: AtomicBool::new(false),
    });
    let c2 = c.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "go" => c2.go.store(true, Ordering::Release),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        c2.eof.store(true, Ordering::Release);
        if exit_on_eof {
            // A side waiting for end of input returns now and closes its sockets (some
            // libraries leave files behind otherwise); one stuck in `recv` is ended.
            std::thread::sleep(Duration::from_secs(2));
            let _ = std::io::stdout().flush();
            let reported = REPORTED.load(Ordering::Acquire);
            std::process::exit(if reported { 0 } else { 3 });
        }
    });
    c
}

/// Blocks until the runner closes our stdin (or a generous limit passes).
fn wait_eof(c: &Control) {
    let start = Instant::now();
    while !c.eof.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Pins the calling thread (and threads it starts later) to `core`.
pub fn pin(core: usize) -> Result<()> {
    // SAFETY: `set` is a plain-data bitmask owned by this frame; CPU_ZERO and CPU_SET
    // only write inside it, and `core` is bounds-checked against CPU_SETSIZE first.
    unsafe {
        ensure!(
            core < libc::CPU_SETSIZE as usize,
            "core {core} is out of range"
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
        // SAFETY: pid 0 is the calling thread; the pointer and size describe `set`.
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        if rc != 0 {
            bail!(
                "sched_setaffinity to core {core}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

fn message(size: usize, kind: u8) -> Vec<u8> {
    let mut m = vec![0x5au8; size.max(HEAD)];
    m[0] = kind;
    m
}

/// Round-trip server: echoes every data message until the end marker.
/// Returns the page faults over the requests after the client's `warmup` ones.
pub fn rtt_server(peer: &mut dyn Peer, size: usize, warmup: u64) -> Result<Faults> {
    let reply = message(size, DATA);
    let mut head = [0u8; HEAD];
    let mut served = 0u64;
    let mut faults = FaultCount::now();
    loop {
        let n = peer.recv(&mut head)?;
        match head[0] {
            END => return Ok(faults.done()),
            DATA => {
                served += 1;
                if served == warmup {
                    faults = FaultCount::now();
                } else {
                    faults.tick();
                }
                ensure!(
                    n == size,
                    "round trip: request of {n} bytes, expected {size}"
                );
                peer.send(&reply)?;
            }
            other => bail!("round trip: unexpected message kind {other:#x}"),
        }
    }
}

/// Round-trip client: `warmup` unmeasured round trips, then measured ones for
/// `duration`, each one into the histogram; then the end marker.
pub fn rtt_client(
    peer: &mut dyn Peer,
    size: usize,
    duration: Duration,
    warmup: u64,
) -> Result<(Latency, Faults)> {
    let req = message(size, DATA);
    let mut head = [0u8; HEAD];
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).context("histogram bounds")?;
    let mut one = |peer: &mut dyn Peer| -> Result<()> {
        peer.send(&req)?;
        let n = peer.recv(&mut head)?;
        ensure!(
            n == size && head[0] == DATA,
            "round trip: reply of {n} bytes kind {:#x}, expected {size} bytes of data",
            head[0]
        );
        Ok(())
    };
    for _ in 0..warmup {
        one(peer)?;
    }
    let start = Instant::now();
    let mut faults = FaultCount::now();
    loop {
        let t0 = Instant::now();
        one(peer)?;
        faults.tick();
        let t1 = Instant::now();
        hist.saturating_record((t1 - t0).as_nanos().max(1) as u64);
        if t1 - start >= duration {
            break;
        }
    }
    let faults = faults.done();
    peer.send(&message(HEAD, END))?;
    Ok((
        Latency {
            round_trips: hist.len(),
            min_ns: hist.min(),
            median_ns: hist.value_at_quantile(0.5),
            p99_ns: hist.value_at_quantile(0.99),
            p999_ns: hist.value_at_quantile(0.999),
            max_ns: hist.max(),
            mean_ns: hist.mean(),
        },
        faults,
    ))
}

/// Stream sender: data messages for `duration`, then the end marker. Returns the
/// number of data messages sent and the page faults after the first tenth of the run.
pub fn stream_send(peer: &mut dyn Peer, size: usize, duration: Duration) -> Result<(u64, Faults)> {
    let mut msg = message(size, DATA);
    let start = Instant::now();
    let mut seq: u64 = 0;
    let mut faults = FaultCount::after(duration / 10);
    loop {
        msg[1..9].copy_from_slice(&seq.to_le_bytes());
        peer.send(&msg)?;
        faults.tick();
        seq += 1;
        // Look at the clock every 64 messages: cheap next to a send, fine-grained
        // enough for a duration of a tenth of a second or more.
        if seq.is_multiple_of(64) && start.elapsed() >= duration {
            break;
        }
    }
    let faults = faults.done();
    peer.send(&message(HEAD, END))?;
    Ok((seq, faults))
}

/// Stream receiver: counts data messages from the first one to the end marker; page
/// faults from a tenth of `duration` after the first one.
pub fn stream_recv(
    peer: &mut dyn Peer,
    size: usize,
    duration: Duration,
    stamp_each: bool,
) -> Result<(Rate, Faults)> {
    let mut faults = FaultCount::after(duration / 10);
    let mut head = [0u8; HEAD];
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut received: u64 = 0;
    let mut gaps: u64 = 0;
    let mut expect: u64 = 0;
    loop {
        let n = peer.recv(&mut head)?;
        match head[0] {
            DATA => {
                ensure!(n == size, "stream: message of {n} bytes, expected {size}");
                // Invariant: head is HEAD = 9 bytes long, so [1..9] is exactly 8 bytes.
                let seq = u64::from_le_bytes(head[1..9].try_into().expect("8 bytes"));
                if first.is_none() {
                    first = Some(Instant::now());
                    faults = FaultCount::after(duration / 10);
                } else if seq != expect {
                    gaps += 1;
                }
                expect = seq + 1;
                received += 1;
                faults.tick();
                if stamp_each {
                    last = Instant::now();
                }
            }
            WARMUP => {}
            END => {
                if !stamp_each {
                    last = Instant::now();
                }
                break;
            }
            other => bail!("stream: unexpected message kind {other:#x}"),
        }
    }
    let Some(first) = first else {
        bail!("stream: the end marker came before any data message");
    };
    let seconds = (last - first).as_secs_f64();
    // Rates count the intervals between the first and the last message.
    let intervals = received.saturating_sub(1) as f64;
    let msgs_per_s = if seconds > 0.0 {
        intervals / seconds
    } else {
        0.0
    };
    Ok((
        Rate {
            received,
            seconds,
            msgs_per_s,
            gb_per_s: msgs_per_s * size as f64 / 1e9,
            gaps,
        },
        faults.done(),
    ))
}

/// Subscriber: waits for the publisher's warm-up, says ready, then measures.
fn subscriber(peer: &mut dyn Peer, size: usize, duration: Duration) -> Result<(Rate, Faults)> {
    let mut head = [0u8; HEAD];
    loop {
        peer.recv(&mut head)?;
        if head[0] == WARMUP {
            break;
        }
    }
    emit(&Report::Ready {
        endpoint: String::new(),
    })?;
    // Each message is stamped: the end marker is repeated by the publisher every few
    // milliseconds and may be dropped, so its arrival is not the end of the data.
    stream_recv(peer, size, duration, true)
}

/// Publisher: warm-up messages until the runner says `go` (every subscriber has seen
/// one), the measured stream, then end markers until the runner closes stdin.
fn publisher(
    peer: &mut dyn Peer,
    size: usize,
    duration: Duration,
    c: &Control,
) -> Result<(u64, Faults)> {
    let warm = message(HEAD, WARMUP);
    let start = Instant::now();
    while !c.go.load(Ordering::Acquire) {
        peer.send(&warm)?;
        std::thread::sleep(Duration::from_millis(1));
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "publisher: no go from the runner within 60 s"
        );
    }
    let (sent, faults) = stream_send(peer, size, duration)?;
    let end = message(HEAD, END);
    let start = Instant::now();
    while !c.eof.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(60) {
        peer.send(&end)?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((sent, faults))
}

/// Runs one peer process (`lwmq-bench peer ...`).
pub fn run_peer(a: &PeerArgs) -> Result<()> {
    if a.role.ends_with("-pair") {
        return run_pair(a);
    }
    if let Some(&core) = a.cores.first() {
        pin(core)?;
    }
    // The publisher answers end of input itself (it reports how much it sent then).
    let c = control(a.role != "pub");
    let driver = drivers::open(&a.contender)?;
    let (t, size) = (a.transport.as_str(), a.size);
    let bind = |kind| -> Result<Box<dyn Peer>> {
        let (peer, endpoint) = driver.bind(kind, t, &a.name, size)?;
        emit(&Report::Ready { endpoint })?;
        Ok(peer)
    };
    let connect = |kind| -> Result<Box<dyn Peer>> {
        let ep = a.endpoint.as_deref().context("--endpoint is required")?;
        driver.connect(kind, t, ep, size)
    };
    match a.role.as_str() {
        "rtt-server" => {
            // It reports nothing: once the client has reported, end of input is the
            // normal end, even if the end marker was discarded when the client closed.
            REPORTED.store(true, Ordering::Release);
            let mut p = bind(Kind::Rep)?;
            let f = rtt_server(p.as_mut(), size, a.warmup)?;
            emit(&Report::Faults(f))?;
            wait_eof(&c);
        }
        "rtt-client" => {
            let mut p = connect(Kind::Req)?;
            let (l, f) = rtt_client(p.as_mut(), size, a.duration, a.warmup)?;
            emit(&Report::Faults(f))?;
            emit(&Report::Latency(l))?;
        }
        "thr-pull" => {
            let mut p = bind(Kind::Pull)?;
            let (r, f) = stream_recv(p.as_mut(), size, a.duration, false)?;
            emit(&Report::Faults(f))?;
            emit(&Report::Rate(r))?;
        }
        "thr-push" => {
            let mut p = connect(Kind::Push)?;
            let (sent, f) = stream_send(p.as_mut(), size, a.duration)?;
            emit(&Report::Faults(f))?;
            emit(&Report::Sent { sent })?;
            wait_eof(&c);
        }
        "pub" => {
            let mut p = bind(Kind::Pub)?;
            let (sent, f) = publisher(p.as_mut(), size, a.duration, &c)?;
            emit(&Report::Faults(f))?;
            emit(&Report::Sent { sent })?;
        }
        "sub" => {
            let mut p = connect(Kind::Sub)?;
            let (r, f) = subscriber(p.as_mut(), size, a.duration)?;
            emit(&Report::Faults(f))?;
            emit(&Report::Rate(r))?;
        }
        other => bail!("unknown role {other:?}"),
    }
    Ok(())
}

/// Both sides in one process, on two threads (inproc): `rtt-pair` or `thr-pair`.
fn run_pair(a: &PeerArgs) -> Result<()> {
    let _c = control(true);
    let driver: Arc<dyn Driver> = Arc::from(drivers::open(&a.contender)?);
    let (bind_kind, connect_kind) = match a.role.as_str() {
        "rtt-pair" => (Kind::Rep, Kind::Req),
        "thr-pair" => (Kind::Pull, Kind::Push),
        other => bail!("unknown role {other:?}"),
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let (d, args) = (driver.clone(), a.clone());
    let binder = std::thread::spawn(move || -> Result<Option<Report>> {
        if let Some(&core) = args.cores.first() {
            pin(core)?;
        }
        let (mut p, ep) = d.bind(bind_kind, &args.transport, &args.name, args.size)?;
        // The other side waits for this; if it has gone, its own error is reported.
        let _ = tx.send(ep);
        match bind_kind {
            // Its faults are not reported: the other side's count is the process's.
            Kind::Rep => {
                rtt_server(p.as_mut(), args.size, args.warmup)?;
                Ok(None)
            }
            _ => Ok(Some(Report::Rate(
                stream_recv(p.as_mut(), args.size, args.duration, false)?.0,
            ))),
        }
    });
    if let Some(&core) = a.cores.get(1) {
        pin(core)?;
    }
    let ep = rx
        .recv_timeout(Duration::from_secs(30))
        .context("the binding thread did not bind")?;
    let mut p = driver.connect(connect_kind, &a.transport, &ep, a.size)?;
    // This side's page faults are those of the whole process: both sides.
    let mine = match connect_kind {
        Kind::Req => {
            let (l, f) = rtt_client(p.as_mut(), a.size, a.duration, a.warmup)?;
            emit(&Report::Faults(f))?;
            Some(Report::Latency(l))
        }
        _ => {
            let (sent, f) = stream_send(p.as_mut(), a.size, a.duration)?;
            emit(&Report::Faults(f))?;
            emit(&Report::Sent { sent })?;
            None
        }
    };
    let theirs = binder
        .join()
        .map_err(|_| anyhow::anyhow!("the binding thread panicked"))??;
    drop(p);
    for r in [mine, theirs].into_iter().flatten() {
        emit(&r)?;
    }
    Ok(())
}
