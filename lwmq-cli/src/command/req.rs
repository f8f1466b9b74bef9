//! `lwmq req`: send each request on a REQ socket and print its reply; with `--resend`,
//! resend and fail over until a reply comes (the library's REQ resend).

use anyhow::{Context as _, Result};
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
    let opened = open(&ctx, SocketType::Req, &args.socket, |s| {
        if args.resend.is_some() {
            s.set_req_resend_interval(args.resend)?;
        }
        if let Some(n) = args.attempts {
            s.set_req_resend_attempts(n)?;
        }
        Ok(())
    })?;
    for ep in &args.also {
        opened
            .socket
            .connect(ep)
            .with_context(|| format!("cannot connect to {ep}"))?;
    }
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
    let st = opened.socket.reqrep_stats();
    if st.resends > 0 {
        eprintln!(
            "lwmq: {} resends ({} to another REP), {} stale replies dropped",
            st.resends, st.failovers, st.stale_replies_dropped
        );
    }
    Ok(())
}
