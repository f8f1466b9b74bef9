//! Benchmark of the shared-memory transport between two processes:
//! `cargo bench -p lwmq --bench shm [-- --quick]`.
//!
//! The command starts this binary twice more, pinned with `taskset` (sched_setaffinity)
//! to cores 0 (the binder, which echoes or sinks) and 1 (the connector, which measures),
//! and prints one table: the two floors measured between the same two processes (a bare
//! cache-line ping-pong and a bare futex ping-pong on a word of the connection's
//! segment), the round trip of 64-byte messages spinning and parked, and one-way
//! throughput for 64 B, 4 KiB and 1 MiB messages. Then the same two processes measure
//! the socket level (`lwmq::Socket` over `ipc://`, the ordinary `send`/`recv` API): PAIR
//! round trips of 64 B spinning and parked, and one-way PUSH/PULL throughput (plus 64 B
//! through the zero-copy `send_with`/`recv_with`). Do not run
//! it on a busy machine: both processes spin. `--quick` runs a smoke-sized version
//! (numbers meaningless).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lwmq::shm::{self, Doorbell, Hello, ShmConnection, ShmListener, ShmOptions};
use lwmq::{Context, Message, Socket, SocketType};

const NAME: &str = "bench";

struct Sizes {
    rtt: usize,
    floor_futex: usize,
    tput: [(usize, usize); 3],
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            rtt: 2_000,
            floor_futex: 500,
            tput: [(64, 20_000), (4096, 2_000), (1 << 20, 20)],
        }
    } else {
        Sizes {
            rtt: 200_000,
            floor_futex: 20_000,
            tput: [(64, 10_000_000), (4096, 1_000_000), (1 << 20, 2_000)],
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let role = args
        .iter()
        .position(|a| a == "--role")
        .and_then(|i| args.get(i + 1));
    let domain = std::env::var("LWMQ_BENCH_DOMAIN").unwrap_or_default();
    match role.map(String::as_str) {
        Some("server") => server(&domain),
        Some("client") => client(&domain, quick),
        _ => parent(quick),
    }
}

fn options(domain: &str) -> ShmOptions {
    ShmOptions {
        domain: domain.to_owned(),
        ring_size: 4 << 20,
        spin: Duration::from_secs(3600),
        ..ShmOptions::default()
    }
}

fn spawn(role: &str, cpu: u32, domain: &str, quick: bool) -> std::process::Child {
    let exe = std::env::current_exe().expect("bench binary");
    let pinned = Command::new("taskset").arg("-V").output().is_ok();
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", &cpu.to_string()]).arg(exe);
        c
    } else {
        eprintln!("taskset not found: processes are not pinned");
        Command::new(exe)
    };
    cmd.args(["--role", role])
        .env("LWMQ_BENCH_DOMAIN", domain)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if quick {
        cmd.arg("--quick");
    }
    cmd.spawn().expect("start a bench process")
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn parent(quick: bool) {
    let domain = format!("bench-{}", std::process::id());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let rustc = first_line(
        &std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()),
        &["--version"],
    );
    let commit = first_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    println!(
        "lwmq shm benchmark{}",
        if quick {
            " (--quick: smoke only, numbers meaningless)"
        } else {
            ""
        }
    );
    println!("machine: {cpu}, {cores} cores, Linux {kernel}");
    println!("rustc:   {rustc}");
    println!("commit:  {commit}");
    println!("binder pinned to core 0, connector (measuring) to core 1; ring 4 MiB");
    println!(
        "RTT: one clock read per round trip (included); throughput: zero-copy on both ends \
         (reserve/commit, recv_in_place), the receiver does not read the payload"
    );
    println!();

    let mut server = spawn("server", 0, &domain, quick);
    let mut server_out = BufReader::new(server.stdout.take().expect("piped"));
    let mut line = String::new();
    server_out.read_line(&mut line).expect("server ready");
    let mut client = spawn("client", 1, &domain, quick);
    let out = BufReader::new(client.stdout.take().expect("piped"));
    let mut rows = Vec::new();
    for line in out.lines() {
        let line = line.expect("client output");
        if let Some(row) = line.strip_prefix("ROW\t") {
            rows.push(row.split('\t').map(str::to_owned).collect::<Vec<_>>());
        }
    }
    let _ = client.wait();
    let _ = server.kill();
    let _ = server.wait();

    println!(
        "| {:<44} | {:>14} | {:>14} |",
        "scenario", "median", "p99 / rate"
    );
    println!("|{:-<46}|{:->16}|{:->16}|", "", "", "");
    for r in &rows {
        if r.len() == 3 {
            println!("| {:<44} | {:>14} | {:>14} |", r[0], r[1], r[2]);
        }
    }
    let get = |name: &str| -> Option<f64> {
        rows.iter()
            .find(|r| r[0] == name)
            .and_then(|r| r[1].split_whitespace().next()?.parse().ok())
    };
    println!();
    if let (Some(spin), Some(parked), Some(futex), Some(tput)) = (
        get("shm RTT 64 B, spinning"),
        get("shm RTT 64 B, parked"),
        get("floor: futex ping-pong RTT"),
        get("throughput 64 B"),
    ) {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "targets: spinning RTT median < 0.5 µs: {} ({spin:.3} µs); parked within 1.2x of the futex floor: {} ({:.2}x); 64 B > 10 M msg/s: {} ({tput:.2} M msg/s)",
            verdict(spin < 0.5),
            verdict(parked <= 1.2 * futex),
            parked / futex,
            verdict(tput > 10.0)
        );
    }
    if let (Some(spin), Some(parked), Some(futex), Some(tput)) = (
        get("ipc:// PAIR RTT 64 B, spinning"),
        get("ipc:// PAIR RTT 64 B, parked"),
        get("floor: futex ping-pong RTT"),
        get("ipc:// PUSH/PULL 64 B"),
    ) {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let zc = get("ipc:// PUSH/PULL 64 B, send_with/recv_with").unwrap_or(0.0);
        println!(
            "socket targets (64 B zero-copy: {zc:.2} M msg/s): spinning RTT median < 0.5 µs: {} ({spin:.3} µs); parked within 1.2x of the futex floor: {} ({:.2}x); 64 B > 10 M msg/s: {} ({tput:.2} M msg/s)",
            verdict(spin < 0.5),
            verdict(parked <= 1.2 * futex),
            parked / futex,
            verdict(tput > 10.0)
        );
    }
}

fn server(domain: &str) {
    let bell = Doorbell::new().expect("doorbell");
    let l = ShmListener::bind(
        NAME,
        None,
        &options(domain),
        Hello::new(SocketType::Pair),
        &bell,
    )
    .expect("bind");
    println!("READY");
    let mut c = loop {
        if let Some(c) = l.accept().expect("accept") {
            break c;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    loop {
        let Ok(cmd) = c.recv(None) else {
            return;
        };
        let text = String::from_utf8_lossy(&cmd.frames()[0]).into_owned();
        let mut parts = text.split(' ');
        let what = parts.next().unwrap_or("");
        let n: usize = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match what {
            "floor-spin" => {
                let w = c.segment_for_testing().scratch_word(0);
                for i in 0..n as u32 {
                    while w.load(Ordering::Acquire) != 2 * i + 1 {
                        std::hint::spin_loop();
                    }
                    w.store(2 * i + 2, Ordering::Release);
                }
            }
            "floor-futex" => {
                let w = c.segment_for_testing().scratch_word(1);
                for i in 0..n as u32 {
                    loop {
                        let v = w.load(Ordering::Acquire);
                        if v == 2 * i + 1 {
                            break;
                        }
                        shm::futex_wait(w, v, Some(Duration::from_millis(100)), false);
                    }
                    w.store(2 * i + 2, Ordering::Release);
                    shm::futex_wake_all(w, false);
                }
            }
            "echo-spin" | "echo-park" => {
                c.set_spin(if what == "echo-spin" {
                    Duration::from_secs(3600)
                } else {
                    Duration::ZERO
                });
                for _ in 0..n {
                    let m = c.recv(None).expect("recv");
                    c.send(&m, None).expect("send");
                }
            }
            "sink" => {
                c.set_spin(Duration::from_secs(3600));
                let mut bytes = 0usize;
                for _ in 0..n {
                    let g = loop {
                        if let Some(g) = c.rx.recv_in_place().expect("recv") {
                            break g;
                        }
                        std::hint::spin_loop();
                    };
                    bytes += g.frames().map(<[u8]>::len).sum::<usize>();
                }
                c.send(&Message::from(bytes.to_string().into_bytes()), None)
                    .expect("done");
            }
            "quit" => break,
            _ => return,
        }
    }
    socket_server(domain);
}

/// A socket of the benchmark's domain, spinning "forever" while waiting.
fn bench_socket(ctx: &Context, ty: SocketType, domain: &str) -> Socket {
    let s = ctx.socket(ty).expect("socket");
    s.set_ipc_domain(domain);
    s.set_ipc_ring_size(4 << 20);
    s.set_ipc_spin(Duration::from_secs(3600));
    s
}

/// The socket-level half of the server: commands arrive on the PAIR socket.
fn socket_server(domain: &str) {
    let ctx = Context::new();
    let pair = bench_socket(&ctx, SocketType::Pair, domain);
    pair.bind("ipc://bench-pair").expect("bind pair");
    let pull = bench_socket(&ctx, SocketType::Pull, domain);
    pull.bind("ipc://bench-pull").expect("bind pull");
    loop {
        let Ok(cmd) = pair.recv() else { return };
        let text = String::from_utf8_lossy(&cmd.frames()[0]).into_owned();
        let mut parts = text.split(' ');
        let what = parts.next().unwrap_or("");
        let n: usize = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match what {
            "echo-spin" | "echo-park" => {
                pair.set_ipc_spin(if what == "echo-spin" {
                    Duration::from_secs(3600)
                } else {
                    Duration::ZERO
                });
                for _ in 0..n {
                    let m = pair.recv().expect("recv");
                    pair.send(m).expect("send");
                }
                pair.set_ipc_spin(Duration::from_secs(3600));
            }
            "sink" => {
                let mut bytes = 0usize;
                for _ in 0..n {
                    bytes += pull.recv().expect("recv").size();
                }
                pair.send(bytes.to_string().into_bytes()).expect("done");
            }
            "sink-in-place" => {
                let mut bytes = 0usize;
                for _ in 0..n {
                    bytes += pull.recv_with(|f| f.size()).expect("recv");
                }
                pair.send(bytes.to_string().into_bytes()).expect("done");
            }
            _ => return,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn row(name: &str, median: String, other: String) {
    println!("ROW\t{name}\t{median}\t{other}");
}

fn rtt_row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    row(
        name,
        format!("{:.3} µs", percentile(&samples, 0.5).as_secs_f64() * 1e6),
        format!("{:.3} µs", percentile(&samples, 0.99).as_secs_f64() * 1e6),
    );
}

fn command(c: &mut ShmConnection, cmd: &str) {
    c.send(&Message::from(cmd.as_bytes().to_vec()), None)
        .expect("send a command");
}

/// Times each of `n` round trips (one clock read per round trip).
fn time_each(n: usize, mut one: impl FnMut(usize)) -> Vec<Duration> {
    let warm = n / 10;
    for i in 0..warm {
        one(i);
    }
    let mut samples = Vec::with_capacity(n);
    let mut prev = Instant::now();
    for i in warm..warm + n {
        one(i);
        let now = Instant::now();
        samples.push(now - prev);
        prev = now;
    }
    samples
}

fn client(domain: &str, quick: bool) {
    let s = sizes(quick);
    let bell = Doorbell::new().expect("doorbell");
    let o = options(domain);
    let mut c = loop {
        if let Some(c) =
            shm::connect(NAME, None, &o, Hello::new(SocketType::Pair), &bell).expect("connect")
        {
            break c;
        }
        std::thread::sleep(Duration::from_millis(1));
    };

    // Floor 1: a bare cache line bouncing between the two processes.
    let warm = s.rtt / 10;
    command(&mut c, &format!("floor-spin {}", s.rtt + warm));
    let w: &AtomicU32 = c.segment_for_testing().scratch_word(0);
    let samples = time_each(s.rtt, |i| {
        let i = i as u32;
        w.store(2 * i + 1, Ordering::Release);
        while w.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    });
    rtt_row("floor: cache-line ping-pong RTT", samples);

    // Floor 2: a bare futex ping-pong (every hop is a kernel wake-up).
    let warm = s.floor_futex / 10;
    command(&mut c, &format!("floor-futex {}", s.floor_futex + warm));
    let w: &AtomicU32 = c.segment_for_testing().scratch_word(1);
    let samples = time_each(s.floor_futex, |i| {
        let i = i as u32;
        w.store(2 * i + 1, Ordering::Release);
        shm::futex_wake_all(w, false);
        loop {
            let v = w.load(Ordering::Acquire);
            if v == 2 * i + 2 {
                break;
            }
            shm::futex_wait(w, v, Some(Duration::from_millis(100)), false);
        }
    });
    rtt_row("floor: futex ping-pong RTT", samples);

    // Round trips through the transport.
    let msg = Message::from(vec![0u8; 64]);
    for (name, cmd, spin) in [
        (
            "shm RTT 64 B, spinning",
            "echo-spin",
            Duration::from_secs(3600),
        ),
        ("shm RTT 64 B, parked", "echo-park", Duration::ZERO),
    ] {
        let n = if spin.is_zero() { s.floor_futex } else { s.rtt };
        command(&mut c, &format!("{cmd} {}", n + n / 10));
        c.set_spin(spin);
        let samples = time_each(n, |_| {
            c.send(&msg, None).expect("send");
            c.recv(None).expect("recv");
        });
        c.set_spin(Duration::from_secs(3600));
        rtt_row(name, samples);
    }

    // One-way throughput.
    for (size, n) in s.tput {
        command(&mut c, &format!("sink {n}"));
        let frame = vec![0x5au8; size];
        let start = Instant::now();
        for _ in 0..n {
            loop {
                match c.tx.reserve(size) {
                    Ok(mut g) => {
                        g.as_mut_slice().copy_from_slice(&frame);
                        g.commit(false);
                        break;
                    }
                    Err(shm::ShmSendError::Full) => std::hint::spin_loop(),
                    Err(e) => panic!("send: {e}"),
                }
            }
        }
        let done = c.recv(None).expect("done");
        let secs = start.elapsed().as_secs_f64();
        let bytes: f64 = String::from_utf8_lossy(&done.frames()[0])
            .parse()
            .unwrap_or(0.0);
        let label = match size {
            64 => "64 B".to_string(),
            4096 => "4 KiB".to_string(),
            _ => "1 MiB".to_string(),
        };
        row(
            &format!("throughput {label}"),
            format!("{:.2} M msg/s", n as f64 / secs / 1e6),
            format!("{:.2} GB/s", bytes / secs / 1e9),
        );
    }
    command(&mut c, "quit");
    socket_client(domain, &s);
}

/// The socket level: the ordinary `Socket::send`/`recv` over `ipc://`.
fn socket_client(domain: &str, s: &Sizes) {
    let ctx = Context::new();
    let pair = bench_socket(&ctx, SocketType::Pair, domain);
    pair.connect("ipc://bench-pair").expect("connect pair");
    let push = bench_socket(&ctx, SocketType::Push, domain);
    push.connect("ipc://bench-pull").expect("connect push");
    let cmd = |c: String| pair.send(c.into_bytes()).expect("send a command");

    let msg = Message::from(vec![0u8; 64]);
    for (name, what, spin) in [
        (
            "ipc:// PAIR RTT 64 B, spinning",
            "echo-spin",
            Duration::from_secs(3600),
        ),
        ("ipc:// PAIR RTT 64 B, parked", "echo-park", Duration::ZERO),
    ] {
        let n = if spin.is_zero() { s.floor_futex } else { s.rtt };
        cmd(format!("{what} {}", n + n / 10));
        pair.set_ipc_spin(spin);
        let samples = time_each(n, |_| {
            pair.send(msg.clone()).expect("send");
            pair.recv().expect("recv");
        });
        pair.set_ipc_spin(Duration::from_secs(3600));
        rtt_row(name, samples);
    }

    for (size, n, in_place) in
        s.tput
            .iter()
            .map(|&(size, n)| (size, n, false))
            .chain([(64, s.tput[0].1, true)])
    {
        cmd(format!(
            "{} {n}",
            if in_place { "sink-in-place" } else { "sink" }
        ));
        let m = Message::from(vec![0x5au8; size]);
        let frame = vec![0x5au8; size];
        let start = Instant::now();
        for _ in 0..n {
            if in_place {
                push.send_with(size, |b| b.copy_from_slice(&frame))
                    .expect("send");
            } else {
                push.send(m.clone()).expect("send");
            }
        }
        let done = pair.recv().expect("done");
        let secs = start.elapsed().as_secs_f64();
        let bytes: f64 = String::from_utf8_lossy(&done.frames()[0])
            .parse()
            .unwrap_or(0.0);
        let label = match size {
            64 => "64 B".to_string(),
            4096 => "4 KiB".to_string(),
            _ => "1 MiB".to_string(),
        };
        let api = if in_place {
            ", send_with/recv_with"
        } else {
            ""
        };
        row(
            &format!("ipc:// PUSH/PULL {label}{api}"),
            format!("{:.2} M msg/s", n as f64 / secs / 1e6),
            format!("{:.2} GB/s", bytes / secs / 1e9),
        );
    }
    cmd("quit".into());
}
