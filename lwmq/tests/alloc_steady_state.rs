//! Heap allocations per message in steady state, counted with a counting global
//! allocator: 64-byte PUSH -> PULL over tcp (with and without CURVE) and inproc, both
//! ends and the background thread in this process. After a warm-up, sending and receiving a message allocates
//! nothing of its own. What remains is amortized: a received frame is a slice of the
//! connection's 64 KiB receive buffer (no copy), so a new buffer is allocated each time
//! one is used up, about once per 900 messages of 64 bytes (with their 2-byte frame
//! headers; about once per 600 under CURVE, whose MESSAGE adds 33 bytes, sealed in the
//! output buffer and opened in the receive buffer). The test allows less than one
//! allocation per hundred messages.
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

const WARM_UP: usize = 20_000;
const MEASURED: usize = 100_000;

/// Allocations while `MEASURED` messages go from `push` to `pull`, after a warm-up;
/// with `curve`, PULL is a CURVE server and PUSH its client.
fn allocations(endpoint: &str, curve: bool) -> u64 {
    let ctx = Context::builder().introspect(false).build();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_recv_timeout(Some(Duration::from_secs(20)));
    let push = ctx.socket(SocketType::Push).unwrap();
    push.set_send_timeout(Some(Duration::from_secs(20)));
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
    let msg = Message::from(vec![7u8; 64]);
    let run = |n: usize| {
        let sender = std::thread::scope(|s| {
            let t = s.spawn(|| {
                for _ in 0..n {
                    push.send(msg.clone()).unwrap();
                }
            });
            for _ in 0..n {
                let m = pull.recv().unwrap();
                assert_eq!(m.frames()[0].len(), 64);
            }
            t.join()
        });
        sender.unwrap();
    };
    run(WARM_UP);
    let before = ALLOCS.load(Ordering::Relaxed);
    run(MEASURED);
    let after = ALLOCS.load(Ordering::Relaxed);
    after - before
}

#[test]
fn sixty_four_byte_push_pull_allocates_nothing_per_message() {
    let _w = common::watchdog(Duration::from_secs(300));
    for (ep, curve) in [
        ("tcp://127.0.0.1:0", false),
        ("tcp://127.0.0.1:0", true),
        ("inproc://alloc-steady-state", false),
    ] {
        let n = allocations(ep, curve);
        let ep = if curve {
            format!("{ep} (CURVE)")
        } else {
            ep.to_owned()
        };
        eprintln!("{ep}: {n} allocations for {MEASURED} messages");
        assert!(
            n * 100 < MEASURED as u64,
            "{ep}: {n} allocations for {MEASURED} messages: one per message or so"
        );
    }
}
