//! `lwmq monitor ENDPOINT`: connect (or bind) a socket and print its events as they
//! happen: connected, handshake-succeeded, disconnected, connect-retried...

use std::io::Write as _;

use anyhow::Result;
use lwmq::Context;

use super::{open_with, reached};
use crate::cli::{MonitorArgs, SocketOpts};

/// Runs `lwmq monitor`.
pub fn run(args: MonitorArgs) -> Result<()> {
    let ctx = Context::new();
    // The monitor must exist before the socket connects, or the first events are
    // missed; `open` lets us get it between creation and connection.
    let mut monitor = None;
    let opts = SocketOpts {
        // Timeouts apply to waiting for events, not to the socket.
        timeout: None,
        ..args.socket.clone()
    };
    // Here a refused handshake is an event to print, not the end of the command.
    let _opened = open_with(&ctx, args.socket_type, &opts, false, |s| {
        monitor = Some(s.monitor());
        Ok(())
    })?;
    let Some(monitor) = monitor else {
        anyhow::bail!("internal error: the monitor was not created");
    };
    let mut done = 0;
    while !reached(done, args.count) {
        let Some(event) = monitor.recv(args.socket.timeout) else {
            return Err(anyhow::Error::new(lwmq::Error::Timeout).context("waiting for an event"));
        };
        let line = if args.json {
            serde_json::json!({
                "event": event.kind.as_str(),
                "endpoint": event.endpoint,
                "detail": event.detail,
            })
            .to_string()
        } else {
            event.to_string()
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        done += 1;
    }
    Ok(())
}
