//! `lwmq recv`, `lwmq pull`, `lwmq sub`: receive messages and print them.
//!
//! `recv` and `pull` use a PULL socket, `sub` a SUB socket subscribed to each
//! `--topic` (or to everything); `--type` picks another receiving type.

use anyhow::Result;
use lwmq::{Context, SocketType};

use super::{open, reached, recv};
use crate::cli::RecvArgs;
use crate::error::usage;
use crate::output::Printer;

/// Runs `recv`/`pull` (default PULL) or `sub` (default SUB, subscribed to `topics`).
pub fn run(args: RecvArgs, default: SocketType, topics: &[String]) -> Result<()> {
    let t = args.socket_type.unwrap_or(default);
    if !matches!(
        t,
        SocketType::Pull
            | SocketType::Sub
            | SocketType::XSub
            | SocketType::Dealer
            | SocketType::Router
            | SocketType::Pair
    ) {
        return Err(usage(format!(
            "a {t} socket cannot just receive: use PULL, SUB, XSUB, DEALER, ROUTER or PAIR (or lwmq req/rep)"
        )));
    }
    if !topics.is_empty() && t != SocketType::Sub {
        return Err(usage("--topic needs a SUB socket"));
    }
    let ctx = Context::new();
    let opened = open(&ctx, t, &args.socket, |s| {
        if t == SocketType::Sub {
            if topics.is_empty() {
                s.subscribe(b"")?;
            }
            for topic in topics {
                s.subscribe(topic.as_bytes())?;
            }
        }
        Ok(())
    })?;
    let mut printer = Printer::new(args.output.output, args.json, t, &opened.endpoint);
    let mut done = 0;
    while !reached(done, args.count) {
        let msg = recv(&opened.socket, "a message")?;
        printer.print(&msg)?;
        done += 1;
    }
    Ok(())
}
