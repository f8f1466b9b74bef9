//! An lwmq socket connecting to an incompatible libzmq (pyzmq) peer. libzmq closes the
//! connection without an ERROR, usually before its READY reaches us; lwmq must not
//! reconnect in a loop. The pyzmq peer (`tests/py/accept_counter.py`) counts the
//! connections it accepted: the tests assert counts, never times.
mod common;

use std::io::Write;
use std::time::Duration;

use lwmq::{Context, EventKind, MonitorEvent, SocketType};

use common::peer::Peer;

/// A pyzmq socket of `kind` bound on a fresh TCP port, counting its connections.
struct Counter {
    peer: Peer,
    endpoint: String,
}

impl Counter {
    fn start(kind: &str, plain: bool) -> Counter {
        let mut cmd = std::process::Command::new(common::python());
        cmd.arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/accept_counter.py"),
        )
        .arg(kind)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
        if plain {
            cmd.arg("plain");
        }
        let mut peer = Peer::from_child(cmd.spawn().expect("start accept_counter.py"));
        let endpoint = peer.expect("ENDPOINT");
        Counter { peer, endpoint }
    }

    /// Connections accepted so far.
    fn accepted(&mut self) -> u32 {
        let stdin = self.peer.child.0.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "COUNT").expect("ask the peer");
        stdin.flush().expect("ask the peer");
        self.peer.expect("ACCEPTED").parse().expect("a count")
    }
}

/// Every event that arrives within `window`.
fn events_for(mon: &lwmq::Monitor, window: Duration) -> Vec<MonitorEvent> {
    let end = std::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        match mon.recv(Some(left)) {
            Some(e) => out.push(e),
            None => break,
        }
    }
    out
}

fn count(events: &[MonitorEvent], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

#[test]
fn an_incompatible_libzmq_peer_fails_once_naming_both_types() {
    let _w = common::watchdog(Duration::from_secs(120));
    for (ours, theirs) in [(SocketType::Push, "PUB"), (SocketType::Sub, "REP")] {
        let mut py = Counter::start(theirs, false);
        let ctx = Context::new();
        let s = ctx.socket(ours).unwrap();
        let mon = s.monitor();
        s.connect(&py.endpoint).unwrap();
        // Everything that happens in 3 s (at 10 Hz retries that was 30 connections).
        let events = events_for(&mon, Duration::from_secs(3));
        let failed: Vec<&MonitorEvent> = events
            .iter()
            .filter(|e| e.kind == EventKind::HandshakeFailedProtocol)
            .collect();
        assert_eq!(failed.len(), 1, "{ours} -> {theirs}: {events:#?}");
        assert_eq!(
            failed[0].detail,
            format!("socket type {ours} cannot talk to {theirs}; not reconnecting"),
            "the error names both types"
        );
        // At most one attempt before the judged one (libzmq may hang up on our READY
        // before its own is out; the next attempt waits for theirs).
        let connected = count(&events, EventKind::Connected);
        assert!(
            (1..=2).contains(&connected),
            "{ours} -> {theirs}: {events:#?}"
        );
        let accepted = py.accepted();
        assert_eq!(
            accepted as usize, connected,
            "the peer saw the same attempts"
        );
        // And nothing after the failure.
        let later = events_for(&mon, Duration::from_secs(1));
        assert_eq!(count(&later, EventKind::Connected), 0, "{later:#?}");
        assert_eq!(py.accepted(), accepted, "no reconnect after the failure");
    }
}

/// Intervals announced by `connect-retried` events, in ms ("retry in N ms (...)").
fn retry_intervals(events: &[MonitorEvent]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::ConnectRetried)
        .map(|e| {
            e.detail
                .strip_prefix("retry in ")
                .and_then(|d| d.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected detail {:?}", e.detail))
        })
        .collect()
}

#[test]
fn a_libzmq_peer_hanging_up_during_the_handshake_is_retried_with_backoff() {
    // PLAIN: the client's metadata (INITIATE) goes before the server's READY, so a
    // libzmq PLAIN server that cannot talk to us hangs up before we learn its type.
    let _w = common::watchdog(Duration::from_secs(120));
    for max in [None, Some(Duration::from_millis(300))] {
        let mut py = Counter::start("PUB", true);
        let ctx = Context::new();
        let s = ctx.socket(SocketType::Push).unwrap();
        s.set_plain_client("admin", "secret").unwrap();
        s.set_reconnect_interval_max(max);
        let mon = s.monitor();
        s.connect(&py.endpoint).unwrap();
        let events = events_for(&mon, Duration::from_secs(3));
        let hung_up = events
            .iter()
            .filter(|e| e.kind == EventKind::Disconnected)
            .inspect(|e| {
                assert!(
                    e.detail.contains("during the handshake without a reason")
                        && e.detail.contains("PUSH"),
                    "{e}"
                )
            })
            .count();
        assert!(hung_up >= 3, "{events:#?}");
        let intervals = retry_intervals(&events);
        // Doubling from 100 ms up to the maximum; with none set, up to our default cap
        // for this case (10 s), not libzmq's fixed interval.
        let cap = max.map_or(10_000, |m| m.as_millis() as u64);
        let want: Vec<u64> = (0..intervals.len() as u32)
            .map(|i| (100u64 << i.min(20)).min(cap))
            .collect();
        assert!(intervals.len() >= 2, "{events:#?}");
        assert_eq!(intervals, want);
        // Far fewer than the 30 connections of 10 Hz retries in 3 s.
        let accepted = py.accepted() as usize;
        assert!(accepted <= intervals.len() + 2, "{accepted} connections");
        if max.is_none() {
            assert!(accepted <= 8, "{accepted} connections in 3 s");
        }
    }
}

#[test]
fn a_compatible_libzmq_peer_is_reached_on_the_first_attempt() {
    // The waiting for the peer's READY only starts after a hang-up: a compatible peer
    // is reached on the first attempt, and messages flow.
    let _w = common::watchdog(Duration::from_secs(120));
    let mut py = Counter::start("PULL", false);
    let ctx = Context::new();
    let s = ctx.socket(SocketType::Push).unwrap();
    let mon = s.monitor();
    s.connect(&py.endpoint).unwrap();
    let ok = mon
        .wait_for(EventKind::HandshakeSucceeded, Duration::from_secs(60))
        .expect("handshake with a libzmq PULL");
    assert_eq!(ok.detail, "peer PULL");
    assert_eq!(py.accepted(), 1);
}
