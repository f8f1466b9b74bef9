//! `lwmq bench`: latency and throughput between two processes on any transport.
//!
//! The command starts a second copy of itself (`lwmq bench-peer`, hidden) that binds
//! the endpoint and prints `ENDPOINT <bound endpoint>`; this process connects to it.
//! Latency is measured here as round trips on REQ/REP; throughput is measured by the
//! peer as PUSH/PULL messages per second from its first message to its last, and
//! reported back as `RESULT <messages> <seconds>`. The peer is killed if we stop early.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lwmq::{Bytes, Context, Message, SocketType};

use crate::cli::{BenchArgs, BenchMode, BenchPeerArgs};

/// How long either side waits for the other before giving up.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Kills and reaps the peer when dropped.
struct Peer {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn start(endpoint: &str, mode: BenchMode, count: u64) -> Result<(Peer, String)> {
        let exe = std::env::current_exe().context("finding the lwmq executable")?;
        let mode = match mode {
            BenchMode::Latency => "latency",
            _ => "throughput",
        };
        let mut child = Command::new(exe)
            .args([
                "bench-peer",
                endpoint,
                "--mode",
                mode,
                "-n",
                &count.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Only its error line, if it fails: small enough for the pipe's buffer.
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the benchmark peer")?;
        let stdout = child.stdout.take().context("the peer's stdout")?;
        let mut peer = Peer {
            child,
            stdout: BufReader::new(stdout),
        };
        let line = peer.line()?;
        let Some(bound) = line.strip_prefix("ENDPOINT ") else {
            bail!("the benchmark peer said {line:?} instead of its endpoint");
        };
        Ok((peer, bound.to_owned()))
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let why = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let why = why.strip_prefix("lwmq: ").unwrap_or(why);
            bail!("the benchmark peer exited ({status}): {why}");
        }
        Ok(line.trim_end().to_owned())
    }
}

/// Round-trip statistics, in microseconds.
#[derive(Debug, Clone, PartialEq)]
struct Latency {
    round_trips: u64,
    mean: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

fn latency_stats(mut samples: Vec<Duration>) -> Option<Latency> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let n = samples.len();
    let pct = |p: f64| us(samples[((n as f64 * p).ceil() as usize).clamp(1, n) - 1]);
    Some(Latency {
        round_trips: n as u64,
        mean: samples.iter().map(|d| us(*d)).sum::<f64>() / n as f64,
        p50: pct(0.50),
        p99: pct(0.99),
        max: us(samples[n - 1]),
    })
}

fn progress(quiet: bool, len: u64, what: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    // Drawn on stderr, and hidden when stderr is not a terminal.
    let bar = ProgressBar::new(len).with_message(what);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Runs `lwmq bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    lwmq::Endpoint::parse(&args.endpoint)?;
    if args.count == 0 || args.round_trips == 0 {
        return Err(crate::error::usage(
            "--count and --round-trips must be at least 1",
        ));
    }
    let payload = Bytes::from(vec![0xa5u8; args.size]);
    let mut latency = None;
    let mut throughput = None;
    let mut shown_endpoint = args.endpoint.clone();
    if matches!(args.mode, BenchMode::Latency | BenchMode::Both) {
        let (_peer, endpoint) = Peer::start(&args.endpoint, BenchMode::Latency, args.round_trips)?;
        shown_endpoint = endpoint.clone();
        let ctx = Context::new();
        let s = ctx.socket(SocketType::Req)?;
        s.set_send_timeout(Some(PEER_TIMEOUT));
        s.set_recv_timeout(Some(PEER_TIMEOUT));
        s.connect(&endpoint)?;
        let bar = progress(args.quiet, args.round_trips, "latency");
        let mut samples = Vec::with_capacity(args.round_trips.min(10_000_000) as usize);
        for i in 0..args.round_trips {
            let start = Instant::now();
            s.send(Message::from(payload.clone()))
                .map_err(|e| anyhow::Error::new(e.error))
                .context("latency: sending")?;
            s.recv().context("latency: waiting for the echo")?;
            samples.push(start.elapsed());
            if i % 256 == 0 {
                bar.set_position(i);
            }
        }
        bar.finish_and_clear();
        latency = latency_stats(samples);
    }
    if matches!(args.mode, BenchMode::Throughput | BenchMode::Both) {
        let (mut peer, endpoint) = Peer::start(&args.endpoint, BenchMode::Throughput, args.count)?;
        shown_endpoint = endpoint.clone();
        let ctx = Context::new();
        let s = ctx.socket(SocketType::Push)?;
        s.set_send_timeout(Some(PEER_TIMEOUT));
        s.connect(&endpoint)?;
        let bar = progress(args.quiet, args.count, "throughput");
        for i in 0..args.count {
            s.send(Message::from(payload.clone()))
                .map_err(|e| anyhow::Error::new(e.error))
                .context("throughput: sending")?;
            if i % 1024 == 0 {
                bar.set_position(i);
            }
        }
        bar.finish_and_clear();
        let line = peer.line()?;
        let parts: Vec<&str> = line.split(' ').collect();
        let (n, secs) = match parts.as_slice() {
            ["RESULT", n, secs] => (n.parse::<u64>()?, secs.parse::<f64>()?),
            _ => bail!("the benchmark peer said {line:?} instead of its result"),
        };
        throughput = Some((n, secs));
    }
    print_results(&args, &shown_endpoint, latency.as_ref(), throughput)
}

fn print_results(
    args: &BenchArgs,
    endpoint: &str,
    latency: Option<&Latency>,
    throughput: Option<(u64, f64)>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let rate = throughput.map(|(n, secs)| {
        if secs > 0.0 {
            n as f64 / secs
        } else {
            f64::INFINITY
        }
    });
    if args.json {
        let mut v = serde_json::json!({ "endpoint": endpoint, "size": args.size });
        if let Some(l) = latency {
            v["latency_us"] = serde_json::json!({
                "round_trips": l.round_trips, "mean": l.mean, "p50": l.p50, "p99": l.p99, "max": l.max,
            });
        }
        if let (Some((n, secs)), Some(rate)) = (throughput, rate) {
            v["throughput"] = serde_json::json!({
                "messages": n, "seconds": secs, "msg_per_s": rate,
                "mb_per_s": rate * args.size as f64 / 1e6,
            });
        }
        writeln!(out, "{v}")?;
        return Ok(());
    }
    writeln!(out, "lwmq bench: {endpoint}, {}-byte messages", args.size)?;
    writeln!(out, "{:<12} {:>10}  result", "test", "count")?;
    if let Some(l) = latency {
        writeln!(
            out,
            "{:<12} {:>10}  round trip: mean {:.2} µs, p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs",
            "latency", l.round_trips, l.mean, l.p50, l.p99, l.max
        )?;
    }
    if let (Some((n, _)), Some(rate)) = (throughput, rate) {
        writeln!(
            out,
            "{:<12} {:>10}  {:.0} msg/s, {:.1} MB/s",
            "throughput",
            n,
            rate,
            rate * args.size as f64 / 1e6
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Runs the peer: bind, announce, then echo (latency) or count (throughput).
pub fn run_peer(args: BenchPeerArgs) -> Result<()> {
    let ctx = Context::new();
    let t = match args.mode {
        BenchMode::Latency => SocketType::Rep,
        _ => SocketType::Pull,
    };
    let s = ctx.socket(t)?;
    s.set_send_timeout(Some(PEER_TIMEOUT));
    s.set_recv_timeout(Some(PEER_TIMEOUT));
    let bound = s.bind(&args.endpoint)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ENDPOINT {bound}")?;
        out.flush()?;
    }
    match args.mode {
        BenchMode::Latency => {
            for _ in 0..args.count {
                let m = s.recv().context("bench peer: waiting for a request")?;
                s.send(m)
                    .map_err(|e| anyhow::Error::new(e.error))
                    .context("bench peer: echoing")?;
            }
        }
        _ => {
            s.recv()
                .context("bench peer: waiting for the first message")?;
            let start = Instant::now();
            for _ in 1..args.count {
                s.recv().context("bench peer: receiving")?;
            }
            let secs = start.elapsed().as_secs_f64();
            let mut out = std::io::stdout().lock();
            // The first message starts the clock: count the ones after it.
            writeln!(out, "RESULT {} {secs}", args.count.saturating_sub(1))?;
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = latency_stats(samples).unwrap();
        assert_eq!(l.round_trips, 100);
        assert!((l.mean - 50.5).abs() < 1e-9, "{l:?}");
        assert!((l.p50 - 50.0).abs() < 1e-9, "{l:?}");
        assert!((l.p99 - 99.0).abs() < 1e-9, "{l:?}");
        assert!((l.max - 100.0).abs() < 1e-9, "{l:?}");
        assert_eq!(latency_stats(Vec::new()), None);
        let one = latency_stats(vec![Duration::from_micros(7)]).unwrap();
        assert!((one.p50 - 7.0).abs() < 1e-9 && (one.p99 - 7.0).abs() < 1e-9);
    }
}
