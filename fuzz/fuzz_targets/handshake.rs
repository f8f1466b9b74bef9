//! Arbitrary bytes into a `Connection` of any socket type and mechanism, as client and
//! as server, cut at arbitrary split points, with timers and owner actions mixed in:
//! never a panic, and the machine's promises hold (the fatal error sticks, `Closed` is
//! the last event and comes once, nothing is transmitted after the final bytes).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lwmq::proto::{Config, Connection, Event, MechanismConfig};
use lwmq::{Bytes, Message, SocketType};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, mut input) = data.split_at(4);
    let socket_type = SocketType::ALL[head[0] as usize % SocketType::ALL.len()];
    let mut config = Config::new(socket_type);
    config.mechanism = match head[1] % 3 {
        0 => MechanismConfig::Null,
        1 => MechanismConfig::PlainClient {
            username: "user".into(),
            password: "pw".into(),
        },
        _ => MechanismConfig::PlainServer,
    };
    if head[1] & 0x10 != 0 {
        config.max_msg_size = Some(u64::from(head[3]) * 16);
    }
    if head[1] & 0x20 != 0 {
        config.heartbeat_interval = Some(Duration::from_millis(100));
        config.heartbeat_ttl = Some(Duration::from_millis(500));
    }
    if head[1] & 0x40 != 0 {
        config.identity = Bytes::from_static(b"id");
        config.resource = Some("res".into());
    }
    let prefix_greeting = head[2] & 1 != 0;
    let mut now = Instant::now();
    let mut conn = Connection::new(config, now);
    if prefix_greeting {
        // A valid greeting first, so the fuzzer spends its time beyond it.
        let mech: &[u8] = if head[1] % 3 == 0 { b"NULL" } else { b"PLAIN" };
        let mut g = [0u8; 64];
        g[..11].copy_from_slice(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3]);
        g[11] = head[2] >> 7;
        g[12..12 + mech.len()].copy_from_slice(mech);
        conn.handle_input(&g, now);
    }
    let mut closed_seen = false;
    let check = |conn: &mut Connection, closed_seen: &mut bool| {
        while conn.poll_transmit().is_some() {}
        if conn.is_closed() {
            assert_eq!(conn.pending_transmit_bytes(), 0);
        }
        while let Some(e) = conn.poll_event() {
            assert!(!*closed_seen, "an event after Closed");
            match e {
                Event::Closed(_) => {
                    assert!(conn.is_closed());
                    *closed_seen = true;
                }
                _ => assert!(!conn.is_closed() || !*closed_seen),
            }
        }
        if conn.is_closed() {
            assert!(*closed_seen, "closed without a Closed event");
            assert!(!conn.is_ready());
        }
    };
    // Each chunk: one control byte (split length and action), then that many input bytes.
    while let Some((&ctl, rest)) = input.split_first() {
        let n = (usize::from(ctl & 0x1F) + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        input = tail;
        let was_closed = conn.is_closed();
        let err_before = conn.error().cloned();
        conn.handle_input(chunk, now);
        match ctl >> 5 {
            1 => conn.authenticate(ctl & 1 == 0),
            2 => {
                now += Duration::from_millis(u64::from(ctl) * 7);
                conn.handle_timeout(now);
            }
            3 => {
                let _ = conn.send(Message::from_frames([Bytes::copy_from_slice(chunk)]));
            }
            4 => conn.send_subscribe(Bytes::copy_from_slice(chunk)),
            5 => {
                if let Some(t) = conn.poll_timeout() {
                    now = now.max(t);
                    conn.handle_timeout(now);
                }
            }
            6 if ctl & 3 == 0 => conn.close("fuzz"),
            _ => {}
        }
        if was_closed {
            // A fatal error sticks, and nothing more is sent.
            assert_eq!(conn.error().cloned(), err_before);
            assert!(conn.poll_transmit().is_none());
        }
        check(&mut conn, &mut closed_seen);
    }
});
