//! `lwmq dealer`: send messages on a DEALER socket, then print what comes back.

use anyhow::Result;
use lwmq::{Bytes, Context, SocketType};

use super::{messages, open, reached, recv, send};
use crate::cli::DealerArgs;
use crate::input::Encoding;
use crate::output::Printer;

/// Runs `lwmq dealer`.
pub fn run(args: DealerArgs) -> Result<()> {
    let enc = Encoding::from(&args.input);
    let msgs = messages(&args.frames, enc, 1)?;
    let ctx = Context::new();
    let opened = open(&ctx, SocketType::Dealer, &args.socket, |s| {
        if let Some(id) = &args.routing_id {
            s.set_routing_id(Bytes::from(id.clone().into_bytes()))?;
        }
        Ok(())
    })?;
    for (i, msg) in msgs.enumerate() {
        send(&opened.socket, msg?, i as u64)?;
    }
    let mut printer = Printer::new(
        args.output.output,
        args.input.json,
        SocketType::Dealer,
        &opened.endpoint,
    );
    let mut done = 0;
    while !reached(done, args.count) {
        let msg = recv(&opened.socket, "a message")?;
        printer.print(&msg)?;
        done += 1;
    }
    Ok(())
}
