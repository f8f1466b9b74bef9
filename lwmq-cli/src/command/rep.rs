//! `lwmq rep`: answer requests on a REP socket, by echoing them, with fixed frames, or
//! by running a command per request (`--exec`), which turns any script into a service.
//!
//! With `--exec CMD`, `sh -c CMD` runs once per request: the request's frames,
//! separated by newlines, on its stdin (with `--json`, each frame as one line of JSON),
//! and its stdout, minus one trailing newline, is the one-frame reply (with `--json`,
//! parsed as JSON and sent as MessagePack). A command that fails still answers, with
//! what it printed, and a warning goes to stderr: a REP socket must reply to go on.
//!
//! Requests that carry a request id (from `lwmq req --resend`, or any REQ_CORRELATE
//! requester) are de-duplicated by the library: a copy of a request already answered
//! gets the same reply again without the command running twice.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use lwmq::{Bytes, Context, Message, SocketType};

use super::{open, reached, recv, send};
use crate::cli::RepArgs;
use crate::error::usage;
use crate::input::{self, Encoding, Input};
use crate::output::{Printer, escape};

/// Runs `lwmq rep`.
pub fn run(args: RepArgs) -> Result<()> {
    let enc = Encoding::from(&args.input);
    let fixed = match input::from_args(&args.frames, enc)? {
        Input::Nothing => None,
        Input::Message(m) => Some(m),
        Input::StdinLines => return Err(usage("lwmq rep takes its reply from arguments, not -")),
    };
    let ctx = Context::new();
    let opened = open(&ctx, SocketType::Rep, &args.socket, |_| Ok(()))?;
    let mut printer = Printer::new(
        args.output.output,
        args.input.json,
        SocketType::Rep,
        &opened.endpoint,
    );
    let mut done = 0;
    while !reached(done, args.count) {
        let request = recv(&opened.socket, "a request")?;
        if !args.quiet {
            printer.print(&request)?;
        }
        let reply = match (&args.exec, &fixed) {
            (Some(cmd), _) => run_command(cmd, &request, args.input.json)?,
            (None, Some(m)) => m.clone(),
            (None, None) => request,
        };
        send(&opened.socket, reply, done)?;
        done += 1;
    }
    let st = opened.socket.reqrep_stats();
    if st.duplicates_dropped + st.replies_from_cache > 0 {
        eprintln!(
            "lwmq: {} copies of requests dropped while handled, {} answered from the reply cache",
            st.duplicates_dropped, st.replies_from_cache
        );
    }
    Ok(())
}

/// Runs `cmd` for one request and returns the reply.
fn run_command(cmd: &str, request: &Message, typed: bool) -> Result<Message> {
    let mut stdin = Vec::new();
    for (i, f) in request.frames().iter().enumerate() {
        if i > 0 {
            stdin.push(b'\n');
        }
        if typed {
            match crate::typed::msgpack_to_json(f) {
                Ok(v) => stdin.extend_from_slice(v.to_string().as_bytes()),
                Err(e) => {
                    eprintln!("lwmq: warning: request frame {}: {e:#}", i + 1);
                    stdin.extend_from_slice(escape(f).as_bytes());
                }
            }
        } else {
            stdin.extend_from_slice(f);
        }
    }
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run sh -c {cmd:?}"))?;
    // Feed stdin from another thread, so that a command writing much before reading
    // all its input cannot deadlock with us.
    let mut child_in = child.stdin.take().context("the command's stdin")?;
    let feeder = std::thread::spawn(move || {
        // A command that does not read its input closes the pipe: not our error.
        let _ = child_in.write_all(&stdin);
    });
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .context("the command's stdout")?
        .read_to_end(&mut out)
        .context("reading the command's output")?;
    let status = child.wait().context("waiting for the command")?;
    let _ = feeder.join();
    if !status.success() {
        eprintln!("lwmq: warning: {cmd:?} failed ({status}); replying with its output");
    }
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    if typed {
        let text = String::from_utf8_lossy(&out);
        match crate::typed::json_text_to_msgpack(&text) {
            Ok(bytes) => Ok(Message::from(bytes)),
            Err(e) => {
                let msg = format!("{e:#}");
                eprintln!(
                    "lwmq: warning: the command's output: {msg}; replying with an error object"
                );
                let err = serde_json::json!({ "error": msg }).to_string();
                Ok(Message::from(crate::typed::json_text_to_msgpack(&err)?))
            }
        }
    } else {
        Ok(Message::from(Bytes::from(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_gets_the_request_and_gives_the_reply() {
        let req = Message::from_frames(["hello", "world"]);
        let reply = run_command("tr a-z A-Z", &req, false).unwrap();
        assert_eq!(reply.frames(), ["HELLO\nWORLD"]);
        // A failing command still answers, with what it printed.
        let reply = run_command("echo partial; exit 3", &req, false).unwrap();
        assert_eq!(reply.frames(), ["partial"]);
        // A command that ignores its input does not block us.
        let big = Message::from(vec![b'x'; 1 << 20]);
        assert_eq!(
            run_command("echo ok", &big, false).unwrap().frames(),
            ["ok"]
        );
    }

    #[test]
    fn typed_command_sees_json_and_answers_json() {
        let req = Message::from(crate::typed::json_text_to_msgpack("{\"n\": 2}").unwrap());
        // The command receives the JSON text and answers with JSON.
        let reply = run_command("cat; echo", &req, true).unwrap();
        let v = crate::typed::msgpack_to_json(&reply.frames()[0]).unwrap();
        assert_eq!(v, serde_json::json!({"n": 2}));
        let reply = run_command("echo not-json", &req, true).unwrap();
        let v = crate::typed::msgpack_to_json(&reply.frames()[0]).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("not valid JSON"),
            "{v}"
        );
    }
}
