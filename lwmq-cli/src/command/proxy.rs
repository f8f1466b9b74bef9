//! `lwmq proxy FRONTEND BACKEND`: forward messages both ways between two sockets
//! ([`lwmq::proxy`]), optionally copying each to a capture socket.
//!
//! Endpoints are bound unless written `>ENDPOINT` (connect); `@ENDPOINT` binds
//! explicitly (czmq's notation).

use anyhow::Result;
use lwmq::{Context, Socket, SocketType};

use crate::cli::{ProxyArgs, ProxyPattern};

/// Runs `lwmq proxy`.
pub fn run(args: ProxyArgs) -> Result<()> {
    let (ft, bt) = match args.pattern {
        ProxyPattern::Queue => (SocketType::Router, SocketType::Dealer),
        ProxyPattern::Forwarder => (SocketType::XSub, SocketType::XPub),
        ProxyPattern::Streamer => (SocketType::Pull, SocketType::Push),
    };
    let ctx = Context::new();
    let frontend = attach(&ctx, ft, &args.frontend)?;
    let backend = attach(&ctx, bt, &args.backend)?;
    let capture = match &args.capture {
        Some(e) => Some(attach(&ctx, SocketType::Pub, e)?),
        None => None,
    };
    if args.notify {
        super::notify_ready()?;
    }
    lwmq::proxy(&frontend, &backend, capture.as_ref())?;
    Ok(())
}

/// Opens a socket bound to (or, with `>`, connected to) `spec`.
fn attach(ctx: &Context, t: SocketType, spec: &str) -> Result<Socket> {
    let (bind, endpoint) = split_spec(spec);
    lwmq::Endpoint::parse(endpoint)?;
    let s = ctx.socket(t)?;
    if bind {
        let bound = s.bind(endpoint)?;
        eprintln!("lwmq: {t} bound {bound}");
    } else {
        s.connect(endpoint)?;
    }
    Ok(s)
}

/// `>e` connects to e; `@e` and `e` bind e.
fn split_spec(spec: &str) -> (bool, &str) {
    if let Some(e) = spec.strip_prefix('>') {
        (false, e)
    } else {
        (true, spec.strip_prefix('@').unwrap_or(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_prefixes() {
        assert_eq!(split_spec("tcp://*:1"), (true, "tcp://*:1"));
        assert_eq!(split_spec("@tcp://*:1"), (true, "tcp://*:1"));
        assert_eq!(split_spec(">tcp://h:1"), (false, "tcp://h:1"));
    }
}
