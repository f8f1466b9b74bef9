//! The receive high-water mark over `ipc://` (shared memory), across real processes: a
//! receiver that does not read holds at most RCVHWM messages; beyond it a PUSH blocks
//! (and wakes when the receiver reads) and a PUB drops; RCVHWM = 0 leaves only the
//! ring's bytes as the bound.
//!
//! Peers are this test binary run again (`--exact peer_process_entry`) with
//! `LWMQ_HWM_ROLE` naming what the child does and `LWMQ_DOMAIN` a domain of the test's
//! own; children print `KEY value` lines on stdout and exit when their stdin closes.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::peer::{PeerEnv, say};
use common::watchdog;
use lwmq::{Context, Error, EventKind, Message, Socket, SocketType};

const ROLE: &str = "LWMQ_HWM_ROLE";
const PEER: PeerEnv = PeerEnv {
    role: ROLE,
    domain: "LWMQ_DOMAIN",
};
const EP: &str = "ipc://service:7";
/// Where the parent tells a publishing child to start (see `pub_drops_beyond_...`).
const CTL: &str = "ipc://control:8";
/// Deadlock guard for single waits (not a speed assertion).
const GUARD: Duration = Duration::from_secs(30);
/// How long a child's send waits before it counts as blocked: long against the time
/// the receiver would need to make room if it read (it does not read).
const BLOCKED: Duration = Duration::from_millis(500);

fn unique_domain(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut d = format!(
        "h{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        test
    );
    d.truncate(48);
    d
}

fn socket(ctx: &Context, ty: SocketType, domain: &str) -> Socket {
    let s = ctx.socket(ty).expect("socket");
    s.set_ipc_domain(domain);
    s.set_recv_timeout(Some(GUARD));
    s.set_send_timeout(Some(GUARD));
    s
}

fn num(i: u64) -> Message {
    Message::from(i.to_le_bytes().to_vec())
}

fn num_of(m: &Message) -> u64 {
    u64::from_le_bytes(m.frames()[0][..8].try_into().expect("8-byte frame"))
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).expect(name).parse().expect("a number")
}

/// Not a test: the entry point of the child processes (does nothing without
/// `LWMQ_HWM_ROLE`).
#[test]
fn peer_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    std::thread::spawn(|| {
        let mut buf = String::new();
        let _ = std::io::stdin().read_line(&mut buf);
        std::process::exit(3);
    });
    let domain = std::env::var("LWMQ_DOMAIN").expect("domain");
    let ctx = Context::new();
    match role.as_str() {
        // Connects a PUSH (SNDHWM from the environment), sends numbered messages until
        // one send waits BLOCKED (says SENT n), then the rest of TOTAL with blocking
        // sends (says DONE).
        "push" => {
            let s = socket(&ctx, SocketType::Push, &domain);
            s.set_send_hwm(env_u64("LWMQ_HWM_SNDHWM") as usize);
            let mon = s.monitor();
            s.connect(EP).expect("connect");
            mon.wait_for(EventKind::HandshakeSucceeded, GUARD)
                .expect("connected");
            let total = env_u64("LWMQ_HWM_TOTAL");
            s.set_send_timeout(Some(BLOCKED));
            let mut i = 0;
            while i < total {
                match s.send(num(i)) {
                    Ok(()) => i += 1,
                    Err(e) if matches!(e.error, Error::Timeout) => break,
                    Err(e) => panic!("push: {}", e.error),
                }
            }
            say("SENT", i);
            s.set_send_timeout(Some(GUARD));
            while i < total {
                s.send(num(i))
                    .expect("a blocked send wakes when the reader reads");
                i += 1;
            }
            say("DONE", total);
            std::thread::sleep(Duration::from_secs(3600));
        }
        // Connects a PUB; sends "w" every 10 ms until the parent says go on CTL, then
        // TOTAL numbered messages as fast as it can (says DONE).
        "pub" => {
            let ctl = socket(&ctx, SocketType::Pull, &domain);
            ctl.bind(CTL).expect("bind control");
            let s = socket(&ctx, SocketType::Pub, &domain);
            s.connect(EP).expect("connect");
            say("READY", std::process::id());
            ctl.set_recv_timeout(Some(Duration::from_millis(10)));
            loop {
                s.send("w").expect("pub never blocks");
                match ctl.recv() {
                    Ok(_) => break,
                    Err(Error::Timeout) => {}
                    Err(e) => panic!("pub: {e}"),
                }
            }
            let total = env_u64("LWMQ_HWM_TOTAL");
            for i in 0..total {
                s.send(num(i)).expect("pub never blocks");
            }
            say("DONE", total);
            std::thread::sleep(Duration::from_secs(3600));
        }
        other => panic!("unknown role {other}"),
    }
}

/// A PULL with RCVHWM `hwm` bound at EP, and a child PUSH with SNDHWM `sndhwm` sending
/// `total`: returns what the child sent before a send blocked, after checking that
/// every message arrives in order once the PULL reads (which must wake the child).
fn push_until_blocked(test: &str, hwm: usize, sndhwm: u64, total: u64) -> u64 {
    let domain = unique_domain(test);
    let ctx = Context::new();
    let pull = socket(&ctx, SocketType::Pull, &domain);
    pull.set_recv_hwm(hwm);
    pull.bind(EP).expect("bind");
    let mut child = PEER.spawn(
        "push",
        &domain,
        &[
            ("LWMQ_HWM_SNDHWM", &sndhwm.to_string()),
            ("LWMQ_HWM_TOTAL", &total.to_string()),
        ],
    );
    let sent: u64 = child.expect("SENT").parse().expect("a count");
    assert!(sent < total, "the child never blocked ({sent} of {total})");
    // The child is blocked in a send now; reading must wake it, and everything comes
    // in order.
    for i in 0..total {
        let m = pull.recv().expect("every message arrives");
        assert_eq!(num_of(&m), i);
    }
    assert_eq!(child.expect("DONE"), total.to_string());
    child.kill9();
    sent
}

#[test]
fn push_to_a_pull_that_does_not_read_blocks_at_its_receive_hwm_and_wakes_when_it_reads() {
    let _w = watchdog(Duration::from_secs(120));
    let (hwm, sndhwm) = (50, 10);
    let sent = push_until_blocked("push-hwm", hwm, sndhwm, 200);
    // Once connected the PUSH writes straight into the ring, which takes RCVHWM
    // messages; what went before the connection was installed queued in the pipe (at
    // most SNDHWM) and is flushed into the ring under the same count. So the count
    // is RCVHWM, plus at most SNDHWM still queued on the sender's side (libzmq's
    // SNDHWM + RCVHWM); the reader publishes its count on reaching the tail it knows
    // of, and this one never read, so no batching slack.
    assert!(
        (hwm as u64..=hwm as u64 + sndhwm).contains(&sent),
        "{sent} sent before blocking, RCVHWM {hwm}, SNDHWM {sndhwm}"
    );
}

#[test]
fn receive_hwm_0_leaves_only_the_ring_as_the_bound() {
    let _w = watchdog(Duration::from_secs(120));
    let sndhwm = 10;
    // 8-byte messages take 16 bytes of the default 1 MiB ring.
    let ring_holds = (1u64 << 20) / 16;
    let sent = push_until_blocked("push-hwm0", 0, sndhwm, ring_holds + 5_000);
    assert!(
        (ring_holds..=ring_holds + sndhwm).contains(&sent),
        "{sent} sent before blocking; the ring holds {ring_holds}"
    );
}

#[test]
fn pub_drops_beyond_a_subs_receive_hwm_and_the_sub_gets_the_first_ones_in_order() {
    let _w = watchdog(Duration::from_secs(120));
    let domain = unique_domain("pub-hwm");
    let hwm = 40u64;
    let total = 500u64;
    let ctx = Context::new();
    let sub = socket(&ctx, SocketType::Sub, &domain);
    sub.set_recv_hwm(hwm as usize);
    sub.subscribe(b"").expect("subscribe");
    sub.bind(EP).expect("bind");
    let mut child = PEER.spawn("pub", &domain, &[("LWMQ_HWM_TOTAL", &total.to_string())]);
    child.expect("READY");
    // The subscription has reached the PUB once a "w" arrives. Drain them (the
    // reader shows the writer everything it consumed on finding the ring empty),
    // then let the PUB go while we read nothing.
    assert_eq!(sub.recv().expect("a warm-up message"), Message::from("w"));
    while sub.try_recv().is_ok() {}
    let go = socket(&ctx, SocketType::Push, &domain);
    go.connect(CTL).expect("connect control");
    go.send("go").expect("go");
    assert_eq!(child.expect("DONE"), total.to_string());
    // Warm-ups sent after the drain, then numbered messages: the first ones only, in
    // order, no gap; together exactly RCVHWM, since the PUB dropped every message that
    // found the receiver holding RCVHWM.
    sub.set_recv_timeout(Some(Duration::from_millis(200)));
    let (mut warm, mut numbered) = (0u64, 0u64);
    loop {
        match sub.recv() {
            Ok(m) if m == Message::from("w") => {
                assert_eq!(numbered, 0, "a warm-up after numbered messages");
                warm += 1;
            }
            Ok(m) => {
                assert_eq!(num_of(&m), numbered, "in order, without a gap");
                numbered += 1;
            }
            Err(Error::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(numbered > 0, "nothing of the numbered messages arrived");
    assert_eq!(
        warm + numbered,
        hwm,
        "{warm} warm-ups and {numbered} numbered messages held by a SUB with RCVHWM {hwm}"
    );
    child.kill9();
}
