//! A small service speaking typed messages (feature `serde`): a REP socket that
//! dispatches on each request's type frame, the way Cm's message handlers did, and
//! waits with a receive timeout so it can do other work (here: report that it is idle,
//! and stop after a while without requests).
//!
//! ```text
//! cargo run -p lwmq --features serde --example typed_service -- tcp://127.0.0.1:5555 30
//! lwmq req tcp://127.0.0.1:5555 --json '"add"' '{"a": 2, "b": 40}'        # "sum" {"value":42}
//! lwmq req tcp://127.0.0.1:5555 --json '"greet"' '{"name": "Ada", "times": 2}'
//! lwmq req tcp://127.0.0.1:5555 --json '"stats"' null
//! ```
//!
//! Arguments: the endpoint to bind (default `tcp://127.0.0.1:5555`) and how many
//! seconds without a request to stop after (default: never). Every reply is a typed
//! message too: `"sum"`, `"greeting"`, `"stats"` or `"error"`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lwmq::typed::Typed;
use lwmq::{Context, Error, SocketType};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
struct Add {
    a: f64,
    b: f64,
}

#[derive(Debug, Serialize)]
struct Sum {
    value: f64,
}

#[derive(Debug, Deserialize)]
struct Greet {
    name: String,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Serialize)]
struct Stats<'a> {
    requests: u64,
    by_type: &'a BTreeMap<String, u64>,
    uptime_s: f64,
}

#[derive(Debug, Serialize)]
struct Failure {
    message: String,
}

/// One request to (reply type, reply value as MessagePack).
fn handle(
    req: &Typed,
    counts: &BTreeMap<String, u64>,
    total: u64,
    started: Instant,
) -> lwmq::Result<(&'static str, lwmq::Bytes)> {
    let reply = match req.kind.as_str() {
        "add" => {
            let Add { a, b } = req.value()?;
            ("sum", lwmq::typed::encode(&Sum { value: a + b })?)
        }
        "greet" => {
            let g: Greet = req.value()?;
            let words: Vec<String> = (0..g.times.min(10))
                .map(|_| format!("hello, {}", g.name))
                .collect();
            ("greeting", lwmq::typed::encode(&words)?)
        }
        "stats" => (
            "stats",
            lwmq::typed::encode(&Stats {
                requests: total,
                by_type: counts,
                uptime_s: started.elapsed().as_secs_f64(),
            })?,
        ),
        other => (
            "error",
            lwmq::typed::encode(&Failure {
                message: format!("unknown request type {other:?} (add, greet, stats)"),
            })?,
        ),
    };
    Ok(reply)
}

fn main() -> lwmq::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "tcp://127.0.0.1:5555".into());
    let idle_limit = match args.next() {
        Some(s) => Some(Duration::from_secs(s.parse().map_err(|_| {
            Error::InvalidArgument(format!("{s:?} is not a number of seconds"))
        })?)),
        None => None,
    };
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep)?;
    let bound = rep.bind(&endpoint)?;
    eprintln!("typed_service: bound {bound}");
    rep.set_recv_timeout(Some(Duration::from_secs(1)));

    let started = Instant::now();
    let mut last_request = Instant::now();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    loop {
        match rep.recv_typed() {
            Ok(req) => {
                last_request = Instant::now();
                total += 1;
                *counts.entry(req.kind.clone()).or_default() += 1;
                let (kind, body) = match handle(&req, &counts, total, started) {
                    Ok(r) => r,
                    // A request whose value does not fit its type gets an error reply.
                    Err(e) => (
                        "error",
                        lwmq::typed::encode(&Failure {
                            message: e.to_string(),
                        })?,
                    ),
                };
                rep.send(lwmq::Message::from_frames([
                    lwmq::typed::encode(kind)?,
                    body,
                ]))?;
            }
            Err(Error::Timeout) => {
                // The receive timeout: time for other work.
                if idle_limit.is_some_and(|l| last_request.elapsed() >= l) {
                    eprintln!("typed_service: idle, {total} requests served; stopping");
                    return Ok(());
                }
            }
            // Not a typed message: the REP must still answer before the next request.
            Err(Error::Codec(why)) => {
                rep.send_typed("error", &Failure { message: why })?;
            }
            Err(e) => return Err(e),
        }
    }
}
