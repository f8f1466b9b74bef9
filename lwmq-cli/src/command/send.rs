//! `lwmq send`, `lwmq push`, `lwmq pub`: send messages from the arguments or stdin.
//!
//! `send` and `push` use a PUSH socket, `pub` a PUB socket; `--type` picks another
//! sending type (DEALER, PUB, XPUB, PAIR, ROUTER). The process waits on exit until
//! its messages are out (the socket's linger), or `--timeout`.

use anyhow::Result;
use lwmq::{Bytes, Context, SocketType};

use super::{messages, open, pause, send};
use crate::cli::SendArgs;
use crate::error::usage;
use crate::input::Encoding;

/// Runs `send`/`push` (default PUSH) or `pub` (default PUB, with an optional topic
/// frame before each message).
pub fn run(args: SendArgs, default: SocketType, topic: Option<String>) -> Result<()> {
    let t = args.socket_type.unwrap_or(default);
    if !matches!(
        t,
        SocketType::Push
            | SocketType::Dealer
            | SocketType::Pub
            | SocketType::XPub
            | SocketType::Pair
            | SocketType::Router
    ) {
        return Err(usage(format!(
            "a {t} socket cannot just send: use PUSH, DEALER, PUB, XPUB, PAIR or ROUTER (or lwmq req/rep)"
        )));
    }
    let enc = Encoding::from(&args.input);
    let reads_stdin = args.frames.iter().any(|f| f == "-");
    let mut msgs = messages(&args.frames, enc, args.count)?.peekable();
    // Never peek at stdin here: the socket is bound (and its address printed) before
    // the first line is read.
    if !reads_stdin && msgs.peek().is_none() {
        return Err(usage(
            "nothing to send: give FRAME arguments, or - to read stdin",
        ));
    }
    let ctx = Context::new();
    let opened = open(&ctx, t, &args.socket, |_| Ok(()))?;
    pause(args.delay);
    for (i, msg) in msgs.enumerate() {
        let mut msg = msg?;
        if let Some(topic) = &topic {
            msg.push_front(Bytes::from(topic.clone().into_bytes()));
        }
        if i > 0 {
            pause(args.interval);
        }
        send(&opened.socket, msg, i as u64)?;
    }
    Ok(())
}
