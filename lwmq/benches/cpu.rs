//! CPU time of the per-message path, with both ends of an exchange in one thread:
//! `cargo bench -p lwmq --bench cpu [-- --quick]`.
//!
//! One thread sends a 64-byte request from one socket, receives it on the other,
//! sends the reply back and receives it, a million times, then prints nanoseconds per
//! exchange (two messages), median and minimum of seven runs. Nothing crosses between
//! cores, so unlike the round trips of `docs/benchmarks.md` the number does not move
//! with where a VM's vCPUs are placed (there, the same build's ipc round trip changes
//! 2-3x with the placement): this is how to compare two builds of the hot path. What
//! it does not show is the cost of cache lines moving between the two sides' cores.
//! `--quick` runs a smoke-sized version (numbers meaningless).

use std::time::{Duration, Instant};

use lwmq::{Context, Socket, SocketType};

/// How the two sockets exchange each message.
#[derive(Clone, Copy)]
enum Api {
    /// `send_with` / `recv_with`, in place where the transport allows.
    InPlace,
    /// `send` of a new message / `recv`.
    Copy,
}

struct Case {
    name: &'static str,
    scheme: &'static str,
    types: (SocketType, SocketType),
    api: Api,
    resend: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "ipc PAIR send_with/recv_with",
        scheme: "ipc",
        types: (SocketType::Pair, SocketType::Pair),
        api: Api::InPlace,
        resend: false,
    },
    Case {
        name: "ipc PAIR send/recv",
        scheme: "ipc",
        types: (SocketType::Pair, SocketType::Pair),
        api: Api::Copy,
        resend: false,
    },
    Case {
        name: "ipc REQ/REP",
        scheme: "ipc",
        types: (SocketType::Req, SocketType::Rep),
        api: Api::Copy,
        resend: false,
    },
    Case {
        name: "ipc REQ/REP, resend on",
        scheme: "ipc",
        types: (SocketType::Req, SocketType::Rep),
        api: Api::Copy,
        resend: true,
    },
    Case {
        name: "inproc PAIR send/recv",
        scheme: "inproc",
        types: (SocketType::Pair, SocketType::Pair),
        api: Api::Copy,
        resend: false,
    },
    Case {
        name: "inproc REQ/REP",
        scheme: "inproc",
        types: (SocketType::Req, SocketType::Rep),
        api: Api::Copy,
        resend: false,
    },
    Case {
        name: "inproc REQ/REP, resend on",
        scheme: "inproc",
        types: (SocketType::Req, SocketType::Rep),
        api: Api::Copy,
        resend: true,
    },
];

const PAYLOAD: [u8; 64] = [0x5a; 64];

fn pair(ctx: &Context, case: &Case, tag: usize) -> (Socket, Socket) {
    let a = ctx.socket(case.types.0).expect("socket");
    let b = ctx.socket(case.types.1).expect("socket");
    for s in [&a, &b] {
        // Never parks: the peer is this thread, so a wait would never end anyway.
        s.set_ipc_spin(Duration::from_secs(3600));
        s.set_recv_timeout(Some(Duration::from_secs(10)));
        s.set_send_timeout(Some(Duration::from_secs(10)));
    }
    if case.resend {
        // Never due within an exchange: what is measured is the bookkeeping.
        a.set_req_resend_interval(Some(Duration::from_secs(10)))
            .expect("resend interval");
    }
    let endpoint = format!(
        "{}://lwmq-cpu-bench-{}-{tag}",
        case.scheme,
        std::process::id()
    );
    b.bind(&endpoint).expect("bind");
    a.connect(&endpoint).expect("connect");
    (a, b)
}

/// One request and its reply.
fn exchange(a: &Socket, b: &Socket, api: Api) {
    match api {
        Api::InPlace => {
            a.send_with(PAYLOAD.len(), |buf| buf.copy_from_slice(&PAYLOAD))
                .expect("send_with");
            let n = b
                .recv_with(|f| f.frame(0).map_or(0, <[u8]>::len))
                .expect("recv_with");
            assert_eq!(n, PAYLOAD.len());
            b.send_with(PAYLOAD.len(), |buf| buf.copy_from_slice(&PAYLOAD))
                .expect("send_with");
            let n = a
                .recv_with(|f| f.frame(0).map_or(0, <[u8]>::len))
                .expect("recv_with");
            assert_eq!(n, PAYLOAD.len());
        }
        Api::Copy => {
            a.send(PAYLOAD.to_vec()).expect("send");
            let m = b.recv().expect("recv");
            b.send(m).expect("send");
            let m = a.recv().expect("recv");
            assert_eq!(m.frames().last().map(|f| f.len()), Some(PAYLOAD.len()));
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (warm, count, runs) = if quick {
        (100, 1_000, 3)
    } else {
        (10_000, 1_000_000, 7)
    };
    let ctx = Context::new();
    println!("| exchange of 64 B, one thread | median ns | min ns |\n|---|--:|--:|");
    for (i, case) in CASES.iter().enumerate() {
        let (a, b) = pair(&ctx, case, i);
        for _ in 0..warm {
            exchange(&a, &b, case.api);
        }
        let per: Vec<f64> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..count {
                    exchange(&a, &b, case.api);
                }
                start.elapsed().as_nanos() as f64 / count as f64
            })
            .collect();
        let min = per.iter().copied().fold(f64::INFINITY, f64::min);
        println!("| {} | {:.0} | {:.0} |", case.name, median(per), min);
    }
}
