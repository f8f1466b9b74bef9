//! Routing an accepted connection on a shared TCP port by the ZMTP `Resource` the peer
//! names in its READY, without I/O (RFC 37 leaves the meaning of `Resource` to the
//! implementation; lwmq uses it for port multiplexing, `tcp://host:port/resource`).
//!
//! On a shared port the accepting side does not know yet which socket (and so which
//! socket type, mechanism and options) the connection is for. It sends a greeting that
//! does not depend on the socket (NULL, not as-server: sharing a port requires NULL on
//! every socket), then feeds what it reads to a [`ResourcePeek`] until the peer's
//! greeting and first command are in. The connection then goes on in a
//! [`Connection`](super::Connection) configured for the chosen socket with
//! [`Config::greeting_sent`](super::Config::greeting_sent) set (our greeting is already
//! out) and the bytes read so far as its first input; or, when nothing is bound at that
//! resource, the peer gets [`ResourcePeek::refusal`] (an ERROR command) and the stream
//! is closed.

use bytes::{Bytes, BytesMut};

use super::command::Command;
use super::frame;
use super::greeting::{self, GREETING_LEN};

/// Most bytes collected to find a `Resource` (a greeting and a READY are far smaller).
pub const MAX_PEEK: usize = 64 * 1024;

/// What [`ResourcePeek::handle_input`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// Not enough input yet.
    NeedMore,
    /// The peer's greeting and first command are in (or the input cannot be a greeting
    /// and READY: then `resource` is `None` and the connection that gets `input` fails
    /// with the real protocol error).
    Routed {
        /// The `Resource` of the peer's READY, if it named one.
        resource: Option<String>,
        /// Everything read so far, to be fed to the connection that takes over.
        input: Bytes,
    },
}

/// Collects an accepted connection's first bytes until its `Resource` is known.
#[derive(Debug, Default)]
pub struct ResourcePeek {
    buf: BytesMut,
    done: bool,
}

impl ResourcePeek {
    /// A new peek.
    pub fn new() -> ResourcePeek {
        ResourcePeek::default()
    }

    /// Our greeting on a shared port: the same for every socket bound there.
    pub fn greeting() -> Bytes {
        let mut g = Vec::with_capacity(GREETING_LEN);
        g.extend_from_slice(&greeting::encode_first());
        g.extend_from_slice(&greeting::encode_rest("NULL", false));
        Bytes::from(g)
    }

    /// The ERROR command that refuses a connection nothing is bound for, to be written
    /// after [`ResourcePeek::greeting`] (the peer's handshake then fails and a libzmq or
    /// lwmq peer does not retry).
    pub fn refusal(reason: &str) -> Bytes {
        let body = Command::Error(reason.to_owned()).encode();
        let mut b = BytesMut::with_capacity(body.len() + 9);
        frame::encode_header(&mut b, false, true, body.len());
        b.extend_from_slice(&body);
        b.freeze()
    }

    /// Feeds bytes read from the stream. Once it has answered [`Peek::Routed`] it
    /// answers `NeedMore` with nothing buffered (the input was handed over).
    pub fn handle_input(&mut self, data: &[u8]) -> Peek {
        if self.done {
            return Peek::NeedMore;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() < GREETING_LEN {
            return Peek::NeedMore;
        }
        let mut rest = BytesMut::from(&self.buf[GREETING_LEN..]);
        let resource = match frame::decode(&mut rest, None) {
            Ok(None) if self.buf.len() < MAX_PEEK => return Peek::NeedMore,
            Ok(Some(f)) if f.command => match Command::parse(f.body) {
                Ok(Command::Ready(meta)) => meta
                    .get("Resource")
                    .map(|r| String::from_utf8_lossy(r).into_owned()),
                _ => None,
            },
            _ => None,
        };
        self.done = true;
        Peek::Routed {
            resource,
            input: self.buf.split().freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SocketType;
    use crate::proto::{Config, Connection};
    use std::time::Instant;

    /// What a connecting peer writes: its greeting and READY, in one piece.
    fn client_bytes(resource: Option<&str>) -> Vec<u8> {
        let mut cfg = Config::new(SocketType::Req);
        cfg.resource = resource.map(str::to_owned);
        let now = Instant::now();
        let mut client = Connection::new(cfg, now);
        // The client's greeting needs ours to go on; give it the shared-port greeting.
        client.handle_input(&ResourcePeek::greeting(), now);
        let mut out = Vec::new();
        while let Some(b) = client.poll_transmit() {
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn finds_the_resource_in_any_split_and_hands_every_byte_over() {
        let bytes = client_bytes(Some("orders"));
        for split in [1, 10, GREETING_LEN, GREETING_LEN + 3, bytes.len()] {
            let mut p = ResourcePeek::new();
            let mut got = None;
            for chunk in bytes.chunks(split) {
                if let Peek::Routed { resource, input } = p.handle_input(chunk) {
                    got = Some((resource, input));
                    break;
                }
            }
            let (resource, input) = got.expect("routed");
            assert_eq!(resource.as_deref(), Some("orders"), "split {split}");
            assert_eq!(&input[..], &bytes[..input.len()]);
            assert_eq!(input.len(), bytes.len(), "split {split}");
        }
    }

    #[test]
    fn a_peer_without_resource_and_garbage_route_to_none() {
        let mut p = ResourcePeek::new();
        match p.handle_input(&client_bytes(None)) {
            Peek::Routed { resource, .. } => assert_eq!(resource, None),
            other => panic!("{other:?}"),
        }
        // Not ZMTP at all: routed to None once a greeting's worth is in, and the
        // connection that takes it over reports the real error.
        let mut p = ResourcePeek::new();
        let junk = vec![0xAB; GREETING_LEN + 16];
        match p.handle_input(&junk) {
            Peek::Routed { resource, input } => {
                assert_eq!(resource, None);
                let mut cfg = Config::new(SocketType::Rep);
                cfg.greeting_sent = true;
                let mut c = Connection::new(cfg, Instant::now());
                assert!(c.poll_transmit().is_none(), "no second greeting");
                c.handle_input(&input, Instant::now());
                assert!(c.is_closed());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.handle_input(b"more"),
            Peek::NeedMore,
            "done after routing"
        );
    }

    #[test]
    fn the_connection_taking_over_completes_the_handshake_without_a_second_greeting() {
        let bytes = client_bytes(Some("a"));
        let mut p = ResourcePeek::new();
        let Peek::Routed { input, .. } = p.handle_input(&bytes) else {
            panic!("not routed");
        };
        let mut cfg = Config::new(SocketType::Rep);
        cfg.greeting_sent = true;
        let now = Instant::now();
        let mut server = Connection::new(cfg, now);
        server.handle_input(&input, now);
        let mut events = Vec::new();
        while let Some(e) = server.poll_event() {
            events.push(e);
        }
        assert!(
            events
                .iter()
                .any(|e| matches!(e, crate::proto::Event::HandshakeSucceeded(p) if p.socket_type == SocketType::Req)),
            "{events:?}"
        );
        // What it sends starts with a command (READY), not a greeting.
        let first = server.poll_transmit().expect("READY");
        assert_ne!(first[0], 0xFF, "not a greeting signature");
    }

    #[test]
    fn refusal_is_one_error_command() {
        let b = ResourcePeek::refusal("resource-unknown: nothing at \"x\"");
        let mut buf = BytesMut::from(&b[..]);
        let f = frame::decode(&mut buf, None).unwrap().unwrap();
        assert!(f.command);
        assert!(matches!(Command::parse(f.body), Ok(Command::Error(r)) if r.contains("nothing")));
        assert!(buf.is_empty());
    }
}
