//! `lwmq req`: send each request on a REQ socket and print its reply.

use anyhow::Result;
use lwmq::{Context, SocketType};

use super::{messages, open, recv, send};
use crate::cli::ReqArgs;
use crate::input::Encoding;
use crate::output::Printer;

/// Runs `lwmq req`.
pub fn run(args: ReqArgs) -> Result<()> {
    let enc = Encoding::from(&args.input);
    let msgs = messages(&args.frames, enc, args.count.max(1))?;
    let ctx = Context::new();
    let opened = open(&ctx, SocketType::Req, &args.socket, |_| Ok(()))?;
    let mut printer = Printer::new(
        args.output.output,
        args.input.json,
        SocketType::Req,
        &opened.endpoint,
    );
    for (i, msg) in msgs.enumerate() {
        send(&opened.socket, msg?, i as u64)?;
        let reply = recv(&opened.socket, "the reply")?;
        printer.print(&reply)?;
    }
    Ok(())
}
