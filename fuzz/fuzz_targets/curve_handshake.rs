//! CURVE from both sides, three ways, never a panic and the machine's promises kept
//! (the fatal error sticks, `Closed` is the last event and comes once, nothing is
//! transmitted after the final bytes):
//!
//! - mode 0/1: arbitrary bytes into a CURVE client or server, after a valid CURVE
//!   greeting, cut at arbitrary points, with owner actions and timers mixed in;
//! - mode 2: a real client and server wired together, the fuzzer flipping, dropping,
//!   replaying or injecting bytes in either stream (so MESSAGE decoding sees authentic
//!   and almost-authentic boxes), with messages, subscriptions, answers to the
//!   authentication request and timers.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lwmq::proto::{Config, Connection, CurveKeyPair, CurveSecretKey, Event, MechanismConfig};
use lwmq::{Bytes, Message, SocketType};

fn keys(seed: u8) -> CurveKeyPair {
    CurveKeyPair::from_secret(CurveSecretKey::from_bytes([seed; 32]))
}

fn client(t: SocketType, server: &CurveKeyPair) -> Config {
    let me = keys(1);
    let mut c = Config::new(t);
    c.mechanism = MechanismConfig::CurveClient {
        public: me.public,
        secret: me.secret,
        server_public: server.public,
    };
    c
}

fn server(t: SocketType, me: &CurveKeyPair) -> Config {
    let mut c = Config::new(t);
    c.mechanism = MechanismConfig::CurveServer {
        public: me.public,
        secret: me.secret.clone(),
    };
    c
}

/// Drains a connection and checks its promises.
#[derive(Default)]
struct Watch {
    closed_seen: bool,
    auth_requests: usize,
}

impl Watch {
    fn check(&mut self, conn: &mut Connection, out: &mut Vec<u8>) {
        let closed_before = self.closed_seen;
        while let Some(b) = conn.poll_transmit() {
            assert!(!closed_before, "bytes after Closed");
            out.extend_from_slice(&b);
        }
        if conn.is_closed() {
            assert_eq!(conn.pending_transmit_bytes(), 0);
        }
        while let Some(e) = conn.poll_event() {
            assert!(!self.closed_seen, "an event after Closed");
            match e {
                Event::Closed(_) => {
                    assert!(conn.is_closed());
                    self.closed_seen = true;
                }
                Event::AuthRequest {
                    curve_public_key, ..
                } => {
                    assert!(curve_public_key.is_some());
                    self.auth_requests += 1;
                }
                _ => {}
            }
        }
        if conn.is_closed() {
            assert!(self.closed_seen, "closed without a Closed event");
            assert!(!conn.is_ready());
        }
    }
}

fn action(conn: &mut Connection, ctl: u8, chunk: &[u8], now: &mut Instant) {
    match ctl >> 5 {
        1 => conn.authenticate(ctl & 1 == 0),
        2 => {
            *now += Duration::from_millis(u64::from(ctl) * 7);
            conn.handle_timeout(*now);
        }
        3 => {
            let _ = conn.send(Message::from_frames([
                Bytes::copy_from_slice(chunk),
                Bytes::new(),
            ]));
        }
        4 => conn.send_subscribe(Bytes::copy_from_slice(chunk)),
        5 => {
            if let Some(t) = conn.poll_timeout() {
                *now = (*now).max(t);
                conn.handle_timeout(*now);
            }
        }
        6 if ctl & 3 == 0 => conn.close("fuzz"),
        6 if ctl & 3 == 1 => conn.accept_as("fuzz-user"),
        _ => {}
    }
}

fn one_side(as_server: bool, t: SocketType, mut input: &[u8]) {
    let sk = keys(2);
    let config = if as_server {
        server(t, &sk)
    } else {
        client(t, &sk)
    };
    let mut now = Instant::now();
    let mut conn = Connection::new(config, now);
    let mut g = [0u8; 64];
    g[..11].copy_from_slice(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3]);
    g[11] = 1;
    g[12..17].copy_from_slice(b"CURVE");
    g[32] = u8::from(!as_server);
    conn.handle_input(&g, now);
    let mut w = Watch::default();
    let mut sink = Vec::new();
    while let Some((&ctl, rest)) = input.split_first() {
        let n = (usize::from(ctl & 0x1F) * 8 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        input = tail;
        let was_closed = conn.is_closed();
        let err_before = conn.error().cloned();
        conn.handle_input(chunk, now);
        action(&mut conn, ctl, chunk, &mut now);
        if was_closed {
            assert_eq!(conn.error().cloned(), err_before);
            assert!(conn.poll_transmit().is_none());
        }
        sink.clear();
        w.check(&mut conn, &mut sink);
    }
}

fn pair(t: (SocketType, SocketType), mut input: &[u8]) {
    let sk = keys(2);
    let mut now = Instant::now();
    let mut a = Connection::new(client(t.0, &sk), now);
    let mut b = Connection::new(server(t.1, &sk), now);
    let (mut wa, mut wb) = (Watch::default(), Watch::default());
    let (mut a_out, mut b_out) = (Vec::new(), Vec::new());
    let mut answered = 0;
    // Each step: a control byte (what to do to which stream), an argument byte, then
    // owner actions on both ends.
    while let [ctl, arg, rest @ ..] = input {
        input = rest;
        wa.check(&mut a, &mut a_out);
        wb.check(&mut b, &mut b_out);
        let (from, to) = if ctl & 0x80 == 0 {
            (&mut a_out, &mut b)
        } else {
            (&mut b_out, &mut a)
        };
        let mut chunk = std::mem::take(from);
        match (ctl >> 4) & 0x7 {
            // Flip one bit somewhere in what is about to be delivered.
            1 if !chunk.is_empty() => {
                let at = usize::from(*arg) * 31 % chunk.len();
                chunk[at] ^= 1 << (ctl & 7);
            }
            // Deliver it twice (a replay).
            2 => {
                let again = chunk.clone();
                chunk.extend_from_slice(&again);
            }
            // Hold it back for later (reordering against what follows).
            3 => {
                *from = chunk;
                chunk = Vec::new();
            }
            // Drop a prefix.
            4 => {
                let n = usize::from(*arg).min(chunk.len());
                chunk.drain(..n);
            }
            // Inject the next bytes of input in front of it.
            5 => {
                let n = usize::from(*arg & 0x3F).min(input.len());
                let (inj, tail) = input.split_at(n);
                input = tail;
                let mut c = inj.to_vec();
                c.extend_from_slice(&chunk);
                chunk = c;
            }
            _ => {}
        }
        // Deliver in two cuts, at an arbitrary point.
        let cut = usize::from(*arg) % (chunk.len() + 1);
        to.handle_input(&chunk[..cut], now);
        to.handle_input(&chunk[cut..], now);
        let payload = &input[..usize::from(*arg & 0x0F).min(input.len())];
        action(&mut a, *arg, payload, &mut now);
        action(&mut b, ctl.rotate_left(3), payload, &mut now);
        // Answer each authentication request as it comes: mostly yes.
        if wb.auth_requests > answered {
            answered = wb.auth_requests;
            b.authenticate(ctl & 0x0F != 0x0F);
        }
    }
    wa.check(&mut a, &mut a_out);
    wb.check(&mut b, &mut b_out);
}

fuzz_target!(|data: &[u8]| {
    let [mode, ty, input @ ..] = data else {
        return;
    };
    let all = SocketType::ALL;
    let t = all[usize::from(*ty) % all.len()];
    match mode % 3 {
        0 => one_side(false, t, input),
        1 => one_side(true, t, input),
        _ => {
            // A compatible pair most of the time, so the handshake can finish.
            let peer = all
                .iter()
                .copied()
                .filter(|p| t.is_compatible_with(*p))
                .nth(usize::from(*ty >> 4))
                .unwrap_or(t);
            pair((t, peer), input)
        }
    }
});
