//! A dispatcher and its worker processes over socketpair descriptors (`fd://N`).
//!
//! The parent makes one connected pair of descriptors per worker
//! ([`lwmq::fd::worker_pair`]), starts the worker (this same program, with `worker N`
//! on its command line, N being the worker's end of the pair), and connects a ROUTER to
//! its own end of every pair. Each worker connects a DEALER to `fd://N`, says hello,
//! and answers jobs until told to stop. No address, port or file is involved, and a
//! worker's descriptor is never reconnected: when a worker exits, the monitor says
//! `disconnected` and that endpoint is gone.
//!
//! ```text
//! cargo run -p lwmq --example dispatcher -- 3
//! ```

use std::os::fd::AsRawFd;
use std::time::Duration;

use lwmq::{Bytes, Context, Message, SocketType};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let fd = args.get(2).ok_or("worker FD")?;
        return worker(fd);
    }
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    dispatcher(n)
}

/// The parent: one ROUTER connected to every worker's descriptor.
fn dispatcher(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new();
    let router = ctx.socket(SocketType::Router)?;
    router.set_recv_timeout(Some(Duration::from_secs(30)));
    let mut children = Vec::new();
    for _ in 0..n {
        let pair = lwmq::fd::worker_pair()?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["worker", &pair.child.as_raw_fd().to_string()])
            .spawn()?;
        // The worker has its copy now; ours would keep the pair open if it died.
        drop(pair.child);
        router.connect(&lwmq::fd::endpoint(pair.keep))?;
        children.push(child);
    }
    // Each worker says hello first: that is how the ROUTER learns its routing id.
    let mut workers = Vec::new();
    for _ in 0..n {
        let hello = router.recv()?;
        println!(
            "dispatcher: {} says {}",
            String::from_utf8_lossy(&hello.frames()[0]),
            String::from_utf8_lossy(&hello.frames()[1])
        );
        workers.push(hello.frames()[0].clone());
    }
    for job in 0..(3 * n) {
        let id = &workers[job % n];
        router.send(Message::from_frames([
            id.clone(),
            Bytes::from(format!("job {job}")),
        ]))?;
    }
    for _ in 0..(3 * n) {
        let done = router.recv()?;
        println!("dispatcher: {}", String::from_utf8_lossy(&done.frames()[1]));
    }
    for id in &workers {
        router.send(Message::from_frames([id.clone(), Bytes::from("stop")]))?;
    }
    for mut c in children {
        c.wait()?;
    }
    Ok(())
}

/// A worker: a DEALER on the descriptor it inherited.
fn worker(fd: &str) -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new();
    let dealer = ctx.socket(SocketType::Dealer)?;
    let me = format!("worker-{}", std::process::id());
    dealer.set_routing_id(me.clone())?;
    dealer.connect(&format!("fd://{fd}"))?;
    dealer.send("hello")?;
    loop {
        let m = dealer.recv()?;
        let text = String::from_utf8_lossy(&m.frames()[0]).into_owned();
        if text == "stop" {
            return Ok(());
        }
        dealer.send(format!("{text} done by {me}").into_bytes())?;
    }
}
