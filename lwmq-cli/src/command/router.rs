//! `lwmq router`: receive on a ROUTER socket and print each message with its sender's
//! routing id; with FRAMEs, answer each message with them.
//!
//! The answer goes back with the message's envelope: the routing id and, if the sender
//! is a REQ (or anything that sends an empty delimiter frame), every frame up to and
//! including the first empty one, so REQ peers accept the reply.

use anyhow::Result;
use lwmq::{Context, Message, SocketType};

use super::{open, reached, recv, send};
use crate::cli::RouterArgs;
use crate::error::usage;
use crate::input::{self, Encoding, Input};
use crate::output::Printer;

/// Runs `lwmq router`.
pub fn run(args: RouterArgs) -> Result<()> {
    let enc = Encoding::from(&args.input);
    let answer = match input::from_args(&args.frames, enc)? {
        Input::Nothing => None,
        Input::Message(m) => Some(m),
        Input::StdinLines => {
            return Err(usage("lwmq router takes its answer from arguments, not -"));
        }
    };
    let ctx = Context::new();
    let opened = open(&ctx, SocketType::Router, &args.socket, |_| Ok(()))?;
    let mut printer = Printer::new(
        args.output.output,
        args.input.json,
        SocketType::Router,
        &opened.endpoint,
    );
    let mut done = 0;
    while !reached(done, args.count) {
        let msg = recv(&opened.socket, "a message")?;
        printer.print(&msg)?;
        if let Some(answer) = &answer {
            send(&opened.socket, reply_to(&msg, answer), done)?;
        }
        done += 1;
    }
    Ok(())
}

/// `answer` behind `msg`'s envelope: the routing id, and the frames up to and including
/// the first empty frame, if there is one after the id.
fn reply_to(msg: &Message, answer: &Message) -> Message {
    let frames = msg.frames();
    let envelope_len = match frames.iter().skip(1).position(|f| f.is_empty()) {
        Some(p) => p + 2,
        None => frames.len().min(1),
    };
    let mut reply = Message::from_frames(frames[..envelope_len].iter().cloned());
    for f in answer.frames() {
        reply.push(f.clone());
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_keep_the_envelope() {
        let answer = Message::from_frames(["ok"]);
        let from_req = Message::from_frames(["id", "", "hi"]);
        assert_eq!(reply_to(&from_req, &answer).frames(), ["id", "", "ok"]);
        let from_dealer = Message::from_frames(["id", "hi"]);
        assert_eq!(reply_to(&from_dealer, &answer).frames(), ["id", "ok"]);
        let relayed = Message::from_frames(["id", "id2", "", "hi"]);
        assert_eq!(
            reply_to(&relayed, &answer).frames(),
            ["id", "id2", "", "ok"]
        );
    }
}
