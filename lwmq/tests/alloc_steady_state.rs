//! Heap allocations per message in steady state, counted with a counting global
//! allocator: 64-byte PUSH -> PULL over tcp (with and without CURVE), inproc and ipc, and 64 KiB and 1 MiB
//! messages over ipc (in the ring, and in pieces through a ring too small for them),
//! both ends and the background thread in this process. After a warm-up, sending and
//! receiving a message allocates nothing of its own. What remains is amortized: a
//! received frame is a slice of the connection's 64 KiB receive buffer (no copy), so a
//! new buffer is allocated each time one is used up, about once per 900 messages of 64
//! bytes (with their 2-byte frame headers; about once per 600 under CURVE, whose
//! MESSAGE adds 33 bytes, sealed in the output buffer and opened in the receive
//! buffer); over ipc small frames are cut from a 16 KiB
//! arena the same way, and a large one lands in the last large message's buffer once
//! that is dropped. The test allows less than one allocation per hundred messages (per
//! ten for messages in pieces, see the case).
//!
//! And 64-byte REQ/REP round trips over inproc with REQ resend on (request ids, the
//! kept request, the REP's de-duplication and reply cache) against the same without:
//! the bookkeeping allocates nothing per request, once the reply cache is full (its
//! places are reused). Not over tcp: a plain REQ/REP round trip there allocates about
//! three times of its own today, by a count that varies from run to run by more than
//! the test could tell apart.
//!
//! One test function only, so that no other test's threads allocate while we count.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lwmq::{Context, CurveKeyPair, Message, SocketType};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; we only count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MEASURED: usize = 100_000;

/// Allocations while `measured` messages of `size` bytes go from `push` to `pull`,
/// after a warm-up of a fifth as many; ipc rings of `ring` bytes; with `curve`, PULL
/// is a CURVE server and PUSH its client.
fn allocations(endpoint: &str, size: usize, measured: usize, ring: usize, curve: bool) -> u64 {
    let ctx = Context::builder().introspect(false).build();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_recv_timeout(Some(Duration::from_secs(20)));
    let push = ctx.socket(SocketType::Push).unwrap();
    push.set_send_timeout(Some(Duration::from_secs(20)));
    for s in [&pull, &push] {
        s.set_ipc_domain(&format!("alloc-{}", std::process::id()));
        s.set_ipc_ring_size(ring);
    }
    if curve {
        let (server, client) = (CurveKeyPair::generate(), CurveKeyPair::generate());
        pull.set_curve_server(true);
        pull.set_curve_secret_key(&server.secret);
        push.set_curve_secret_key(&client.secret);
        push.set_curve_server_key(&server.public);
    }
    let ep = pull.bind(endpoint).unwrap();
    push.connect(&ep).unwrap();
    // One message, cloned: a clone shares the payload (no allocation of its own).
    let msg = Message::from(vec![7u8; size]);
    let run = |n: usize| {
        let sender = std::thread::scope(|s| {
            let t = s.spawn(|| {
                for _ in 0..n {
                    push.send(msg.clone()).unwrap();
                }
            });
            for _ in 0..n {
                let m = pull.recv().unwrap();
                assert_eq!(m.frames()[0].len(), size);
            }
            t.join()
        });
        sender.unwrap();
    };
    counted(run, measured / 5, measured)
}

/// Allocations during `run(measured)`, after `run(warm_up)`.
fn counted(run: impl Fn(usize), warm_up: usize, measured: usize) -> u64 {
    run(warm_up);
    let before = ALLOCS.load(Ordering::Relaxed);
    run(measured);
    ALLOCS.load(Ordering::Relaxed) - before
}

/// Round trips in the REQ/REP tests: the warm-up fills the REP's reply cache (1024
/// entries by default) more than once.
const RT_WARM_UP: usize = 5_000;
const RT_MEASURED: usize = 20_000;

/// Allocations while `RT_MEASURED` requests go from a REQ (with resend on if `resend`)
/// to a REP and their replies back, after a warm-up.
fn round_trip_allocations(endpoint: &str, resend: bool) -> u64 {
    let ctx = Context::builder().introspect(false).build();
    let rep = ctx.socket(SocketType::Rep).unwrap();
    rep.set_recv_timeout(Some(Duration::from_secs(20)));
    let ep = rep.bind(endpoint).unwrap();
    let req = ctx.socket(SocketType::Req).unwrap();
    req.set_recv_timeout(Some(Duration::from_secs(20)));
    // Never due in a round trip: what is counted is the bookkeeping, not resends.
    if resend {
        req.set_req_resend_interval(Some(Duration::from_secs(60)))
            .unwrap();
    }
    req.connect(&ep).unwrap();
    let request = Message::from(vec![7u8; 64]);
    let reply = Message::from(vec![8u8; 64]);
    let run = |n: usize| {
        let server = std::thread::scope(|s| {
            let t = s.spawn(|| {
                for _ in 0..n {
                    let m = rep.recv().unwrap();
                    assert_eq!(m.frames()[0].len(), 64);
                    rep.send(reply.clone()).unwrap();
                }
            });
            for _ in 0..n {
                req.send(request.clone()).unwrap();
                let m = req.recv().unwrap();
                assert_eq!(m, reply);
            }
            t.join()
        });
        server.unwrap();
    };
    let n = counted(run, RT_WARM_UP, RT_MEASURED);
    // Every request was handled once and none answered from the cache.
    let s = rep.reqrep_stats();
    assert_eq!((s.replies_from_cache, s.duplicates_dropped), (0, 0));
    n
}

#[test]
fn sixty_four_byte_push_pull_allocates_nothing_per_message() {
    let _w = common::watchdog(Duration::from_secs(300));
    let ipc = "ipc://alloc-steady-state";
    // (endpoint, size, messages, ring, at most one allocation per this many messages,
    // CURVE)
    for (ep, size, measured, ring, per, curve) in [
        ("tcp://127.0.0.1:0", 64, MEASURED, 1 << 20, 100, false),
        ("tcp://127.0.0.1:0", 64, MEASURED, 1 << 20, 100, true),
        (
            "inproc://alloc-steady-state",
            64,
            MEASURED,
            1 << 20,
            100,
            false,
        ),
        (ipc, 64, MEASURED, 1 << 20, 100, false),
        (ipc, 64 << 10, 5_000, 1 << 20, 100, false),
        // Each run spawns the sending thread, which costs a few allocations of its own
        // (6 in all here, at every size): enough messages that those stay under the
        // bound, which is about what each message costs.
        (ipc, 1 << 20, 2_000, 4 << 20, 100, false),
        // In pieces: a 1 MiB message through a 256 KiB ring. When the reader falls
        // behind, the sender hands the ring to the background thread, whose turns
        // (every millisecond while it holds the ring) sometimes allocate: 4 to 13 in
        // all for 500 messages in runs on a loaded machine, never one per message.
        (ipc, 1 << 20, 500, 256 << 10, 10, false),
    ] {
        let n = allocations(ep, size, measured, ring, curve);
        let ep = if curve {
            format!("{ep} (CURVE)")
        } else {
            ep.to_owned()
        };
        eprintln!("{ep}, {size} bytes, ring {ring}: {n} allocations for {measured} messages");
        assert!(
            n * per < measured as u64,
            "{ep}, {size} bytes, ring {ring}: {n} allocations for {measured} messages"
        );
    }
    {
        let ep = "inproc://alloc-steady-state-reqrep";
        let plain = round_trip_allocations(ep, false);
        let resend = round_trip_allocations(ep, true);
        eprintln!("{ep}: {plain} allocations for {RT_MEASURED} round trips, {resend} with resend");
        assert!(
            resend * 100 < (plain * 100).saturating_add(RT_MEASURED as u64),
            "{ep}: {resend} allocations for {RT_MEASURED} round trips with resend on, \
             {plain} without: the bookkeeping allocates per request"
        );
    }
}
