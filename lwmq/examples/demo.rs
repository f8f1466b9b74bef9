//! A two-process tour of lwmq: publish/subscribe and request/reply between this
//! process and a copy of itself.
//!
//! ```sh
//! cargo run --release --example demo
//! ```
//!
//! The first process (the "server") binds a PUB socket on TCP and a REP socket on a
//! Unix socket, then starts this same program again as the "client". The client
//! subscribes to weather reports only (the server also publishes sports results, which
//! never reach it), asks the server a few questions, then bounces 64-byte messages off
//! the server over shared memory (`ipc://`) and reports the round-trip times, and says
//! goodbye.

use std::process::Command;
use std::time::{Duration, Instant};

use lwmq::{Context, EventKind, Message, PollItem, SocketType, poll};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn say(who: &str, what: impl std::fmt::Display) {
    println!("[{who} {:>6}] {what}", std::process::id());
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("client") if args.len() == 5 => client(&args[2], &args[3], &args[4]),
        _ => server(),
    }
}

fn server() -> Result<()> {
    let ctx = Context::new();
    let publisher = ctx.socket(SocketType::Pub)?;
    let replier = ctx.socket(SocketType::Rep)?;
    let events = replier.monitor();
    let pub_ep = publisher.bind("tcp://127.0.0.1:0")?;
    let rep_ep = replier.bind(&format!("unix://@lwmq-demo-{}", std::process::id()))?;
    say("server", format!("publishing on {pub_ep}"));
    say("server", format!("answering questions on {rep_ep}"));

    // An echo over shared memory, on a thread of its own: whatever arrives goes back.
    let echo = ctx.socket(SocketType::Pair)?;
    let ipc_ep = echo.bind(&format!("ipc://lwmq-demo/{}", std::process::id()))?;
    say("server", format!("echoing on {ipc_ep} (shared memory)"));
    let echo_thread = std::thread::spawn(move || -> lwmq::Result<()> {
        loop {
            let m = echo.recv()?;
            let stop = m.frames()[0].is_empty();
            echo.send(m)?;
            if stop {
                return Ok(());
            }
        }
    });

    let exe = std::env::current_exe()?;
    say("server", "starting a second process as the client...");
    let mut child = Command::new(exe)
        .args(["client", &pub_ep, &rep_ep, &ipc_ep])
        .spawn()?;

    let mut tick = 0u32;
    loop {
        // Publish a little of everything, then answer any question that came in.
        tick += 1;
        let weather = format!("{}°C, wind {} km/h", 12 + tick % 7, 5 + tick % 11);
        let sports = format!("home {} - {} away", tick % 4, tick % 3);
        publisher.send(Message::from_frames(["weather/paris".to_owned(), weather]))?;
        publisher.send(Message::from_frames(["sports/rugby".to_owned(), sports]))?;

        let mut items = [PollItem::readable(&replier)];
        let ready = poll(&mut items, Some(Duration::from_millis(100)))?;
        while let Some(e) = events.try_recv() {
            if e.kind == EventKind::HandshakeSucceeded {
                say("server", format!("monitor: {e}"));
            }
        }
        if ready == 0 {
            continue;
        }
        let question = replier.recv()?;
        let text = String::from_utf8_lossy(&question.frames()[0]).into_owned();
        say("server", format!("got a question: {text:?}"));
        let answer = match text.as_str() {
            "bye" => "goodbye!".to_owned(),
            "what is 6 x 7?" => "42".to_owned(),
            "what time is it?" => format!("tick {tick}"),
            _ => "I do not know".to_owned(),
        };
        replier.send(answer.clone().into_bytes())?;
        if text == "bye" {
            break;
        }
    }
    echo_thread
        .join()
        .map_err(|_| "the echo thread panicked")??;
    let status = child.wait()?;
    say("server", format!("the client exited ({status}); done"));
    Ok(())
}

fn client(pub_ep: &str, rep_ep: &str, ipc_ep: &str) -> Result<()> {
    let ctx = Context::new();
    let subscriber = ctx.socket(SocketType::Sub)?;
    subscriber.connect(pub_ep)?;
    subscriber.subscribe(b"weather/")?;
    say("client", format!("subscribed to \"weather/\" on {pub_ep}"));
    for _ in 0..3 {
        let m = subscriber.recv()?;
        let topic = String::from_utf8_lossy(&m.frames()[0]).into_owned();
        let body = String::from_utf8_lossy(&m.frames()[1]).into_owned();
        say("client", format!("received {topic}: {body}"));
    }

    let requester = ctx.socket(SocketType::Req)?;
    requester.set_recv_timeout(Some(Duration::from_secs(10)));
    requester.connect(rep_ep)?;
    for q in ["what is 6 x 7?", "what time is it?"] {
        say("client", format!("asking {q:?}"));
        requester.send(q)?;
        let a = requester.recv()?;
        say(
            "client",
            format!("answer: {:?}", String::from_utf8_lossy(&a.frames()[0])),
        );
    }

    // Round trips of 64 bytes over shared memory, each one timed.
    let pair = ctx.socket(SocketType::Pair)?;
    pair.set_recv_timeout(Some(Duration::from_secs(10)));
    pair.connect(ipc_ep)?;
    say(
        "client",
        format!("bouncing 64-byte messages off {ipc_ep}..."),
    );
    let payload = lwmq::Bytes::from(vec![7u8; 64]);
    let mut times = Vec::with_capacity(200_000);
    for i in 0..220_000 {
        let start = Instant::now();
        pair.send(payload.clone())?;
        let back = pair.recv()?;
        if i >= 20_000 {
            times.push(start.elapsed());
        }
        assert_eq!(back.frames()[0].len(), 64);
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    say(
        "client",
        format!(
            "{} round trips over ipc://: median {:.2} µs, p99 {:.2} µs (libzmq's ipc:// takes ~90 µs on our 2-core VMs)",
            times.len(),
            pct(0.5).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6
        ),
    );
    pair.send(lwmq::Bytes::new())?; // tells the echo to stop
    pair.recv()?;

    say("client", "asking \"bye\"");
    requester.send("bye")?;
    let a = requester.recv()?;
    say(
        "client",
        format!("answer: {:?}", String::from_utf8_lossy(&a.frames()[0])),
    );
    Ok(())
}
