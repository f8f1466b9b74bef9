//! CURVE MESSAGE decoding after a real handshake: a client and a server handshake
//! (fixed keys), then the fuzzer sends messages of any size both ways (short frames
//! take the portable Salsa20, long ones salsabox's SIMD one) and tampers with the
//! encrypted streams: flips a bit, drops or repeats bytes, or injects MESSAGE frames of
//! its own (any nonce, flags, length and box). Never a panic; what arrives over an
//! untouched stream is what was sent, in order; over a touched one, every frame that
//! arrives is a frame that was sent, in order, none twice (a forged, altered or
//! replayed box never opens). A whole MESSAGE dropped from the stream is not noticed:
//! short nonces may skip, as libzmq allows, so the frames that arrive are a
//! subsequence of those sent, and a multipart message may lose frames.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use lwmq::proto::{Config, Connection, CurveKeyPair, CurveSecretKey, Event, MechanismConfig};
use lwmq::{Bytes, Message, SocketType};

fn keys(seed: u8) -> CurveKeyPair {
    CurveKeyPair::from_secret(CurveSecretKey::from_bytes([seed; 32]))
}

/// A handshaken pair: (client, server).
fn handshaken(now: Instant) -> (Connection, Connection) {
    let (ck, sk) = (keys(1), keys(2));
    let mut cc = Config::new(SocketType::Pair);
    cc.mechanism = MechanismConfig::CurveClient {
        public: ck.public,
        secret: ck.secret,
        server_public: sk.public,
    };
    let mut sc = Config::new(SocketType::Pair);
    sc.mechanism = MechanismConfig::CurveServer {
        public: sk.public,
        secret: sk.secret,
    };
    let (mut a, mut b) = (Connection::new(cc, now), Connection::new(sc, now));
    for _ in 0..20 {
        while let Some(t) = a.poll_transmit() {
            b.handle_input(&t, now);
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_input(&t, now);
        }
        while let Some(e) = b.poll_event() {
            if matches!(e, Event::AuthRequest { .. }) {
                b.authenticate(true);
            }
        }
        while a.poll_event().is_some() {}
        if a.is_ready() && b.is_ready() {
            return (a, b);
        }
    }
    panic!("the CURVE handshake did not finish");
}

/// One direction: what was sent, what arrived, whether its stream was touched.
#[derive(Default)]
struct Way {
    sent: Vec<Message>,
    got: Vec<Message>,
    touched: bool,
    closed: bool,
}

impl Way {
    fn deliver(&mut self, to: &mut Connection, bytes: &[u8], cut: usize, now: Instant) {
        let cut = cut % (bytes.len() + 1);
        to.handle_input(&bytes[..cut], now);
        to.handle_input(&bytes[cut..], now);
        while let Some(e) = to.poll_event() {
            assert!(!self.closed, "an event after Closed");
            match e {
                Event::Message(m) => self.got.push(m),
                Event::Closed(_) => {
                    assert!(to.is_closed());
                    self.closed = true;
                }
                _ => {}
            }
        }
        if !self.touched {
            // Exactly what was sent, in order.
            assert!(
                self.got.len() <= self.sent.len(),
                "more messages than were sent"
            );
            for (got, sent) in self.got.iter().zip(&self.sent) {
                assert_eq!(got, sent, "a message changed on the way");
            }
            if !to.is_closed() {
                assert_eq!(
                    self.got.len(),
                    self.sent.len(),
                    "an untouched stream lost a message"
                );
            }
        } else {
            // Every frame that arrived was sent, in order, once.
            let mut sent = self.sent.iter().flat_map(|m| m.frames().iter());
            for f in self.got.iter().flat_map(|m| m.frames().iter()) {
                assert!(
                    sent.any(|s| s == f),
                    "a frame that was not sent, or out of order: {f:?}"
                );
            }
        }
    }
}

/// `n` bytes cycled from `seed` (at least one byte of seed, or zeros).
fn body(seed: &[u8], n: usize) -> Bytes {
    if seed.is_empty() {
        return Bytes::from(vec![0; n]);
    }
    seed.iter()
        .copied()
        .cycle()
        .take(n)
        .collect::<Vec<u8>>()
        .into()
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let (mut a, mut b) = handshaken(now);
    let (mut ab, mut ba) = (Way::default(), Way::default());
    let mut input = data;
    // Each step: a control byte, a size byte, an argument byte, then bytes to use.
    while let [ctl, size, arg, rest @ ..] = input {
        input = rest;
        let take = usize::from(*arg & 0x1F).min(input.len());
        let (seed, tail) = input.split_at(take);
        input = tail;
        let (from, to, way) = if ctl & 0x80 == 0 {
            (&mut a, &mut b, &mut ab)
        } else {
            (&mut b, &mut a, &mut ba)
        };
        // A message of one or two frames, from a few bytes up to about 64 KiB.
        if ctl & 0x08 != 0 && !from.is_closed() {
            let n = usize::from(*size) << (ctl & 0x07);
            let m = if arg & 0x20 != 0 {
                Message::from_frames([body(seed, n), body(seed, usize::from(*arg))])
            } else {
                Message::from(body(seed, n))
            };
            if from.send(m.clone()).is_ok() && !from.is_closed() {
                way.sent.push(m);
            }
        }
        let mut stream = Vec::new();
        while let Some(t) = from.poll_transmit() {
            stream.extend_from_slice(&t);
        }
        match (ctl >> 4) & 0x07 {
            // Flip one bit.
            1 if !stream.is_empty() => {
                let at = usize::from(*size) * 257 % stream.len();
                stream[at] ^= 1 << (arg & 7);
                way.touched = true;
            }
            // Drop a prefix.
            2 if !stream.is_empty() => {
                let n = usize::from(*arg).min(stream.len());
                stream.drain(..n);
                way.touched = true;
            }
            // Repeat it (a replay of every box in it).
            3 if !stream.is_empty() => {
                let again = stream.clone();
                stream.extend_from_slice(&again);
                way.touched = true;
            }
            // Inject a MESSAGE frame of our own in front: outer flags from `arg`, the
            // name, a nonce from `size`, and the seed as MAC, flags and payload.
            4 => {
                let mut body = b"\x07MESSAGE".to_vec();
                body.extend_from_slice(&u64::from(*size).to_be_bytes());
                body.extend_from_slice(seed);
                let mut f = vec![arg & 0x07, body.len() as u8];
                f.extend_from_slice(&body);
                f.extend_from_slice(&stream);
                stream = f;
                way.touched = true;
            }
            // Inject raw bytes in front.
            5 if !seed.is_empty() => {
                let mut f = seed.to_vec();
                f.extend_from_slice(&stream);
                stream = f;
                way.touched = true;
            }
            _ => {}
        }
        way.deliver(to, &stream, usize::from(*size) * 7, now);
    }
});
