//! The role programs: small lwmq programs (`lwmq-burn role KIND ...`) that move stamped
//! messages, check what they receive, and report to the harness (see [`crate::proto`]).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use lwmq::{Context, Error, Message, Socket, SocketType};

use crate::check::{ExecLog, Seen, SeqTracker};
use crate::proto::{Report, Stats};
use crate::wire::{self, BadStamp, MsgId, now_ms};

/// The kinds of role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// PUSH: sends stamped messages at a rate.
    Push,
    /// PULL: receives and checks them.
    Pull,
    /// PUB: publishes stamped messages at a rate.
    Pub,
    /// SUB: subscribes to everything, checks.
    Sub,
    /// REQ with resend: one request at a time, checks each reply.
    Req,
    /// REP: executes requests (at most once each while it lives) and replies.
    Rep,
    /// A proxy between two sockets (`lwmq::proxy`).
    Proxy,
}

impl Kind {
    /// Roles that originate messages (stopped first at the end of a run).
    pub fn is_sender(self) -> bool {
        matches!(self, Kind::Push | Kind::Pub | Kind::Req)
    }
}

/// A deliberately broken behaviour, for the test that shows the checker fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Inject {
    /// Send message 50 twice.
    Duplicate,
    /// Send message 51 before 50.
    Reorder,
    /// Flip a payload byte of message 50 after its checksum was computed.
    Corrupt,
    /// Open /dev/null every 20 messages and never close it.
    LeakFd,
}

/// The sequence number the injections hit.
pub const INJECT_AT: u64 = 50;

/// Options of every role.
#[derive(Debug, Clone, Args)]
pub struct RoleArgs {
    /// Role kind.
    #[arg(value_enum)]
    pub kind: Kind,
    /// This process's index in the scenario (the `src` of its stamps).
    #[arg(long)]
    pub id: u32,
    /// Incarnation (0, then +1 per restart).
    #[arg(long, default_value_t = 0)]
    pub inc: u32,
    /// Endpoints to bind (the frontend's, for a proxy).
    #[arg(long)]
    pub bind: Vec<String>,
    /// Endpoints to connect to (the frontend's, for a proxy).
    #[arg(long)]
    pub connect: Vec<String>,
    /// Proxy: backend endpoints to bind.
    #[arg(long)]
    pub back_bind: Vec<String>,
    /// Proxy: backend endpoints to connect to.
    #[arg(long)]
    pub back_connect: Vec<String>,
    /// Proxy: frontend socket type.
    #[arg(long, default_value = "pull")]
    pub front_type: String,
    /// Proxy: backend socket type.
    #[arg(long, default_value = "push")]
    pub back_type: String,
    /// Messages (requests) per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Smallest payload, bytes.
    #[arg(long, default_value_t = 16)]
    pub min_size: usize,
    /// Largest payload, bytes.
    #[arg(long, default_value_t = 1024)]
    pub max_size: usize,
    /// Receivers: time spent per message (a slow consumer), µs; REP: per request.
    #[arg(long, default_value_t = 0)]
    pub slow_us: u64,
    /// High-water mark of the sockets (send and receive).
    #[arg(long, default_value_t = 1000)]
    pub hwm: usize,
    /// REQ: resend interval, ms.
    #[arg(long, default_value_t = 300)]
    pub resend_ms: u64,
    /// REQ: attempts per request.
    #[arg(long, default_value_t = 20)]
    pub attempts: u32,
    /// ipc:// spin before parking, µs (0 parks at once: kind to a shared machine).
    #[arg(long, default_value_t = 0)]
    pub spin_us: u64,
    /// ipc:// ring size, bytes (0: lwmq's default); messages over about half of it go
    /// through the ring in pieces.
    #[arg(long, default_value_t = 0)]
    pub ipc_ring: usize,
    /// TCP heartbeat interval, ms (0: none).
    #[arg(long, default_value_t = 0)]
    pub heartbeat_ms: u64,
    /// Report interval, ms.
    #[arg(long, default_value_t = 500)]
    pub report_ms: u64,
    /// A deliberate fault (the checker's own test only).
    #[arg(long, value_enum)]
    pub inject: Option<Inject>,
}

/// What the harness said on stdin.
#[derive(Debug, Default)]
struct Control {
    stop: AtomicBool,
    slow_us: AtomicU64,
}

fn control(initial_slow: u64) -> Arc<Control> {
    let c = Arc::new(Control {
        stop: AtomicBool::new(false),
        slow_us: AtomicU64::new(initial_slow),
    });
    let c2 = Arc::clone(&c);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let mut w = line.split_whitespace();
            match (w.next(), w.next()) {
                (Some("stop"), _) => c2.stop.store(true, Ordering::SeqCst),
                (Some("slow"), Some(us)) => {
                    c2.slow_us.store(us.parse().unwrap_or(0), Ordering::SeqCst)
                }
                _ => eprintln!("role: unknown command {line:?}"),
            }
        }
        // The harness is gone (or closed our stdin): nobody listens any more.
        std::process::exit(4);
    });
    c
}

fn emit(r: &Report) {
    let mut out = std::io::stdout().lock();
    // A harness that stopped reading is gone: the stdin thread ends us.
    let _ = serde_json::to_writer(&mut out, r);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn bad(kind: &str, message: Option<MsgId>, detail: String) {
    bad_via(kind, message, &[], detail);
}

fn bad_via(kind: &str, message: Option<MsgId>, via: &[(u32, u32)], detail: String) {
    emit(&Report::Bad {
        at_ms: now_ms(),
        kind: kind.into(),
        message,
        detail,
        via: via.to_vec(),
    });
}

fn socket(
    ctx: &Context,
    ty: SocketType,
    a: &RoleArgs,
    bind: &[String],
    connect: &[String],
) -> Result<Socket> {
    let s = ctx.socket(ty)?;
    s.set_send_hwm(a.hwm);
    s.set_recv_hwm(a.hwm);
    s.set_ipc_spin(Duration::from_micros(a.spin_us));
    if a.ipc_ring > 0 {
        s.set_ipc_ring_size(a.ipc_ring);
    }
    s.set_linger(Some(Duration::from_secs(5)));
    s.set_reconnect_interval(Duration::from_millis(100))?;
    s.set_reconnect_interval_max(Some(Duration::from_millis(500)));
    if a.heartbeat_ms > 0 {
        let hb = Duration::from_millis(a.heartbeat_ms);
        s.set_heartbeat_interval(Some(hb));
        s.set_heartbeat_timeout(Some(hb * 3));
        s.set_heartbeat_ttl(Some(hb * 3));
    }
    if ty == SocketType::Req {
        s.set_req_resend_interval(Some(Duration::from_millis(a.resend_ms)))?;
        s.set_req_resend_attempts(a.attempts)?;
    }
    if ty == SocketType::Sub {
        s.subscribe(b"")?;
    }
    for ep in bind {
        // A restarted process may find its predecessor's TCP port still closing.
        let mut tries = 0;
        loop {
            match s.bind(ep) {
                Ok(_) => break,
                Err(e) if tries < 100 => {
                    tries += 1;
                    if tries == 1 {
                        eprintln!("bind {ep}: {e}; retrying");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).with_context(|| format!("bind {ep}")),
            }
        }
    }
    for ep in connect {
        s.connect(ep).with_context(|| format!("connect {ep}"))?;
    }
    Ok(s)
}

/// Runs a role until the harness says `stop`.
pub fn run(a: RoleArgs) -> Result<()> {
    let ctl = control(a.slow_us);
    let ctx = Context::new();
    match a.kind {
        Kind::Push => sender(&ctx, &a, &ctl, SocketType::Push),
        Kind::Pub => sender(&ctx, &a, &ctl, SocketType::Pub),
        Kind::Pull => receiver(&ctx, &a, &ctl, SocketType::Pull),
        Kind::Sub => receiver(&ctx, &a, &ctl, SocketType::Sub),
        Kind::Req => requester(&ctx, &a, &ctl),
        Kind::Rep => replier(&ctx, &a, &ctl),
        Kind::Proxy => proxy(&ctx, &a, &ctl),
    }
}

/// Paces a loop at `rate` per second.
struct Pace {
    t0: Instant,
    n: u64,
    rate: f64,
}

impl Pace {
    fn new(rate: f64) -> Pace {
        Pace {
            t0: Instant::now(),
            n: 0,
            rate: rate.max(0.1),
        }
    }
    /// Waits for the next slot (at most 50 ms, to look at the controls); true when due.
    fn wait(&mut self) -> bool {
        let due = self.t0 + Duration::from_secs_f64(self.n as f64 / self.rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            return Instant::now() >= due;
        }
        // Far behind (blocked, or paused): do not burst to catch up.
        if now - due > Duration::from_secs(1) {
            self.t0 = now - Duration::from_secs_f64(self.n as f64 / self.rate);
        }
        true
    }
    fn done(&mut self) {
        self.n += 1;
    }
}

impl RoleArgs {
    /// This process's message number `seq`, stamped, of a size between the bounds.
    fn message(&self, seq: u64) -> (MsgId, Vec<u8>) {
        let id = MsgId {
            src: self.id,
            inc: self.inc,
            seq,
        };
        let span = self.max_size.saturating_sub(self.min_size) as u64 + 1;
        let len = self.min_size + (seq.wrapping_mul(7919) % span) as usize;
        (id, wire::encode(id, len))
    }
}

/// Leaks a descriptor every 20 calls when asked to.
fn maybe_leak(a: &RoleArgs, n: u64) {
    if a.inject == Some(Inject::LeakFd)
        && n % 20 == 0
        && let Ok(f) = std::fs::File::open("/dev/null")
    {
        std::mem::forget(f);
    }
}

/// Sends until `stop`; a timed-out send is retried (PUSH blocks at its HWM).
fn send_retrying(s: &Socket, mut m: Message, ctl: &Control) -> bool {
    loop {
        match s.send(m) {
            Ok(()) => return true,
            Err(e) if e.error.is_timeout() || matches!(e.error, Error::WouldBlock) => {
                if ctl.stop.load(Ordering::SeqCst) {
                    return false;
                }
                m = e.message;
            }
            Err(e) => {
                eprintln!("send: {}", e.error);
                return false;
            }
        }
    }
}

fn sender(ctx: &Context, a: &RoleArgs, ctl: &Control, ty: SocketType) -> Result<()> {
    let s = socket(ctx, ty, a, &a.bind, &a.connect)?;
    s.set_send_timeout(Some(Duration::from_millis(100)));
    emit(&Report::Hello {
        pid: std::process::id(),
    });
    let mut st = Stats::default();
    let mut pace = Pace::new(a.rate);
    let mut seq = 0u64;
    let mut next_report = Instant::now();
    let mut held: Option<Vec<u8>> = None;
    while !ctl.stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_report {
            st.at_ms = now_ms();
            emit(&Report::Stats(st.clone()));
            next_report += Duration::from_millis(a.report_ms);
        }
        if !pace.wait() {
            continue;
        }
        let (_, mut body) = a.message(seq);
        let mut copies = 1;
        match a.inject {
            Some(Inject::Duplicate) if seq == INJECT_AT => copies = 2,
            Some(Inject::Corrupt) if seq == INJECT_AT => {
                let at = body.len() - 5;
                body[at] ^= 0x40;
            }
            Some(Inject::Reorder) if seq == INJECT_AT => {
                held = Some(body);
                seq += 1;
                pace.done();
                continue;
            }
            _ => {}
        }
        // A duplicate sent on purpose is one message sent (twice).
        let mut ok = false;
        for _ in 0..copies {
            ok = send_retrying(&s, Message::from_frames([body.clone()]), ctl);
            if !ok {
                break;
            }
        }
        if ok {
            st.sent += 1;
        }
        if let Some(h) = held.take()
            && send_retrying(&s, Message::from_frames([h]), ctl)
        {
            st.sent += 1;
        }
        maybe_leak(a, seq);
        seq += 1;
        pace.done();
    }
    st.at_ms = now_ms();
    emit(&Report::Final(st));
    drop(s); // linger: what is queued goes out
    Ok(())
}

/// Per-sender silences of more than a second, for the reconnect times.
#[derive(Default)]
struct Silences {
    last: HashMap<u32, u64>,
    found: Vec<(u32, u64, u64)>,
}

impl Silences {
    fn saw(&mut self, src: u32, now: u64) {
        if let Some(prev) = self.last.insert(src, now)
            && now - prev > 1000
        {
            self.found.push((src, prev, now));
        }
    }
}

fn receiver(ctx: &Context, a: &RoleArgs, ctl: &Control, ty: SocketType) -> Result<()> {
    let s = socket(ctx, ty, a, &a.bind, &a.connect)?;
    s.set_recv_timeout(Some(Duration::from_millis(100)));
    emit(&Report::Hello {
        pid: std::process::id(),
    });
    let mut st = Stats::default();
    let mut tracker = SeqTracker::new();
    let mut per_source: BTreeMap<(u32, u32), (u64, u64)> = BTreeMap::new();
    let mut silences = Silences::default();
    let mut next_report = Instant::now();
    let mut n = 0u64;
    let report = |st: &mut Stats,
                  per_source: &BTreeMap<(u32, u32), (u64, u64)>,
                  silences: &mut Silences,
                  tracker: &mut SeqTracker,
                  last: bool| {
        let now = now_ms();
        for g in tracker.take_due_gaps(now, if last { 0 } else { 1500 }) {
            emit(&Report::Gap(g));
        }
        st.at_ms = now;
        st.per_source = per_source
            .iter()
            .map(|(&(s, i), &(c, _))| (s, i, c))
            .collect();
        st.highest = per_source
            .iter()
            .map(|(&(s, i), &(_, h))| (s, i, h))
            .collect();
        st.outages = std::mem::take(&mut silences.found);
        st.late_across_pipes = tracker.late_across_pipes;
        emit(&if last {
            Report::Final(st.clone())
        } else {
            Report::Stats(st.clone())
        });
        st.joined.clear();
    };
    while !ctl.stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_report {
            report(&mut st, &per_source, &mut silences, &mut tracker, false);
            next_report += Duration::from_millis(a.report_ms);
        }
        let m = match s.recv() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => continue,
            Err(e) => bail!("recv: {e}"),
        };
        let now = now_ms();
        let Some(body) = m.frames().first() else {
            bad("corrupt", None, "a message without frames".into());
            continue;
        };
        let via = match wire::decode_via(&m.frames()[1..]) {
            Ok(v) => v,
            Err(why) => {
                bad("corrupt", wire::decode(body).ok().map(|s| s.id), why);
                continue;
            }
        };
        match wire::decode(body) {
            Ok(stamp) => {
                let id = stamp.id;
                silences.saw(id.src, now);
                let seen = tracker.observe(id, &via, now);
                if seen == Seen::First {
                    st.joined.push((id.src, id.inc, now));
                }
                st.first_at_ms.get_or_insert(now);
                if seen != Seen::Duplicate {
                    // A late message did arrive (out of order): it counts as received.
                    st.received += 1;
                    let e = per_source.entry((id.src, id.inc)).or_default();
                    e.0 += 1;
                    e.1 = e.1.max(id.seq);
                }
                match seen {
                    Seen::First | Seen::InOrder | Seen::Gap { .. } => {}
                    Seen::Duplicate => bad_via(
                        "duplicate",
                        Some(id),
                        &via,
                        "received a second time (sequence numbers go up by one per message)".into(),
                    ),
                    Seen::Late => bad_via(
                        "reorder",
                        Some(id),
                        &via,
                        "arrived after a later message of the same sender on the same pipe".into(),
                    ),
                }
            }
            Err(BadStamp::Checksum(id)) => bad(
                "corrupt",
                Some(id),
                format!("checksum mismatch ({} bytes)", body.len()),
            ),
            Err(BadStamp::Malformed(why)) => bad("corrupt", None, why),
        }
        n += 1;
        maybe_leak(a, n);
        let slow = ctl.slow_us.load(Ordering::Relaxed);
        if slow > 0 {
            std::thread::sleep(Duration::from_micros(slow));
        }
    }
    report(&mut st, &per_source, &mut silences, &mut tracker, true);
    Ok(())
}

fn requester(ctx: &Context, a: &RoleArgs, ctl: &Control) -> Result<()> {
    let s = socket(ctx, SocketType::Req, a, &a.bind, &a.connect)?;
    emit(&Report::Hello {
        pid: std::process::id(),
    });
    let mut st = Stats::default();
    // 1 µs .. 1 h, 2 significant digits (bounds fixed: new_with_bounds only fails on bad bounds).
    let mut rtt = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2)
        .context("histogram")?;
    let mut pace = Pace::new(a.rate);
    let mut next_report = Instant::now();
    let mut seq = 0u64;
    while !ctl.stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_report {
            stats_req(&s, &mut st, &rtt, false);
            next_report += Duration::from_millis(a.report_ms);
        }
        if !pace.wait() {
            continue;
        }
        let (id, body) = a.message(seq);
        let t = Instant::now();
        let sent_ms = now_ms();
        if let Err(e) = s.send(Message::from_frames([body.clone()])) {
            bail!("send request: {}", e.error);
        }
        st.sent += 1;
        match s.recv() {
            Ok(reply) => {
                st.first_at_ms.get_or_insert_with(now_ms);
                let us = t.elapsed().as_micros() as u64;
                let _ = rtt.record(us.max(1));
                if us > 1_000_000 {
                    st.outages.push((u32::MAX, sent_ms, now_ms()));
                }
                match reply.frames().first() {
                    Some(f) if f[..] == body[..] => st.received += 1,
                    Some(f) => bad(
                        "wrong-reply",
                        Some(id),
                        format!(
                            "the reply does not carry the request ({} bytes, {})",
                            f.len(),
                            match wire::decode(f) {
                                Ok(s) => format!("stamped {:?}", s.id),
                                Err(e) => format!("{e:?}"),
                            }
                        ),
                    ),
                    None => bad("wrong-reply", Some(id), "an empty reply".into()),
                }
            }
            Err(e @ Error::RequestTimeout { .. }) => {
                st.given_up += 1;
                bad("unanswered", Some(id), e.to_string());
            }
            Err(e) => bail!("recv reply: {e}"),
        }
        maybe_leak(a, seq);
        seq += 1;
        pace.done();
    }
    stats_req(&s, &mut st, &rtt, true);
    Ok(())
}

fn stats_req(s: &Socket, st: &mut Stats, rtt: &hdrhistogram::Histogram<u64>, last: bool) {
    let r = s.reqrep_stats();
    st.resends = r.resends;
    st.failovers = r.failovers;
    st.at_ms = now_ms();
    if !rtt.is_empty() {
        st.rtt_us = Some([
            rtt.value_at_quantile(0.5),
            rtt.value_at_quantile(0.99),
            rtt.max(),
        ]);
    }
    let out = if last {
        Report::Final(st.clone())
    } else {
        Report::Stats(st.clone())
    };
    st.outages.clear();
    emit(&out);
}

fn replier(ctx: &Context, a: &RoleArgs, ctl: &Control) -> Result<()> {
    let s = socket(ctx, SocketType::Rep, a, &a.bind, &a.connect)?;
    s.set_recv_timeout(Some(Duration::from_millis(100)));
    emit(&Report::Hello {
        pid: std::process::id(),
    });
    let mut st = Stats::default();
    let mut log = ExecLog::new(4096);
    let mut per_source: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut next_report = Instant::now();
    let report = |st: &mut Stats, per_source: &BTreeMap<(u32, u32), u64>, last: bool| {
        let r = s.reqrep_stats();
        st.replies_from_cache = r.replies_from_cache;
        st.duplicates_dropped = r.duplicates_dropped;
        st.at_ms = now_ms();
        st.per_source = per_source.iter().map(|(&(s, i), &c)| (s, i, c)).collect();
        emit(&if last {
            Report::Final(st.clone())
        } else {
            Report::Stats(st.clone())
        });
    };
    while !ctl.stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_report {
            report(&mut st, &per_source, false);
            next_report += Duration::from_millis(a.report_ms);
        }
        let m = match s.recv() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => continue,
            Err(e) => bail!("recv request: {e}"),
        };
        let body = m.frames().first().cloned().unwrap_or_default();
        match wire::decode(&body) {
            Ok(stamp) => {
                st.received += 1;
                if !log.execute(stamp.id) {
                    bad(
                        "executed-twice",
                        Some(stamp.id),
                        "this REP (alive all along) handed the same request to its application again"
                            .into(),
                    );
                } else {
                    st.executed += 1;
                    st.first_at_ms.get_or_insert_with(now_ms);
                    *per_source.entry((stamp.id.src, stamp.id.inc)).or_default() += 1;
                }
            }
            Err(BadStamp::Checksum(id)) => {
                bad("corrupt", Some(id), "request checksum mismatch".into())
            }
            Err(BadStamp::Malformed(why)) => bad("corrupt", None, format!("request: {why}")),
        }
        let slow = ctl.slow_us.load(Ordering::Relaxed);
        if slow > 0 {
            std::thread::sleep(Duration::from_micros(slow));
        }
        let who = format!("{}#{}", a.id, a.inc);
        if let Err(e) = s.send(Message::from_frames([body.to_vec(), who.into_bytes()])) {
            bail!("send reply: {}", e.error);
        }
        st.sent += 1;
        maybe_leak(a, st.received);
    }
    report(&mut st, &per_source, true);
    Ok(())
}

fn proxy(ctx: &Context, a: &RoleArgs, ctl: &Control) -> Result<()> {
    let fty = SocketType::from_str(&a.front_type)
        .map_err(|e| anyhow::anyhow!("front type {}: {e}", a.front_type))?;
    let bty = SocketType::from_str(&a.back_type)
        .map_err(|e| anyhow::anyhow!("back type {}: {e}", a.back_type))?;
    let front = socket(ctx, fty, a, &a.bind, &a.connect)?;
    let back = socket(ctx, bty, a, &a.back_bind, &a.back_connect)?;
    if fty == SocketType::Pull && bty == SocketType::Push {
        return streamer(a, ctl, &front, &back);
    }
    std::thread::spawn(move || {
        let e = lwmq::proxy(&front, &back, None);
        // A proxy that stops forwarding is a failure the harness must see.
        eprintln!("proxy ended: {e:?}");
        std::process::exit(1);
    });
    emit(&Report::Hello {
        pid: std::process::id(),
    });
    while !ctl.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(a.report_ms.min(200)));
        emit(&Report::Stats(Stats {
            at_ms: now_ms(),
            ..Stats::default()
        }));
    }
    emit(&Report::Final(Stats {
        at_ms: now_ms(),
        ..Stats::default()
    }));
    // The proxy thread holds the sockets: leave without waiting for it.
    std::process::exit(0);
}

/// A PULL/PUSH proxy that marks what it forwards: each message gets a frame naming this
/// proxy life ([`wire::via_frame`]), so that receivers check order per pipe (a sender
/// behind a proxy that restarts has a pipe per proxy life; see [`SeqTracker`]).
fn streamer(a: &RoleArgs, ctl: &Control, front: &Socket, back: &Socket) -> Result<()> {
    front.set_recv_timeout(Some(Duration::from_millis(100)));
    back.set_send_timeout(Some(Duration::from_millis(100)));
    let tag = wire::via_frame(a.id, a.inc);
    emit(&Report::Hello {
        pid: std::process::id(),
    });
    let mut st = Stats::default();
    let mut next_report = Instant::now();
    while !ctl.stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_report {
            st.at_ms = now_ms();
            emit(&Report::Stats(st.clone()));
            next_report += Duration::from_millis(a.report_ms);
        }
        let mut m = match front.recv() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => continue,
            Err(e) => bail!("proxy recv: {e}"),
        };
        st.received += 1;
        st.first_at_ms.get_or_insert_with(now_ms);
        m.push(tag.to_vec());
        if send_retrying(back, m, ctl) {
            st.sent += 1;
        }
    }
    st.at_ms = now_ms();
    emit(&Report::Final(st));
    Ok(())
}
