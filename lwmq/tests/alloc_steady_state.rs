//! Heap allocations per message in steady state, counted with a counting global
//! allocator: 64-byte PUSH -> PULL over tcp, inproc and ipc, and 64 KiB and 1 MiB
//! messages over ipc (in the ring, and in pieces through a ring too small for them),
//! both ends and the background thread in this process. After a warm-up, sending and
//! receiving a message allocates nothing of its own. What remains is amortized: a
//! received frame is a slice of the connection's 64 KiB receive buffer (no copy), so a
//! new buffer is allocated each time one is used up, about once per 900 messages of 64
//! bytes (with their 2-byte frame headers); over ipc small frames are cut from a 16 KiB
//! arena the same way, and a large one lands in the last large message's buffer once
//! that is dropped. The test allows less than one allocation per hundred messages (per
//! ten for messages in pieces, see the case).
//!
//! One test function only, so that no other test's threads allocate while we count.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lwmq::{Context, Message, SocketType};

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
/// after a warm-up of a fifth as many; ipc rings of `ring` bytes.
fn allocations(endpoint: &str, size: usize, measured: usize, ring: usize) -> u64 {
    let ctx = Context::builder().introspect(false).build();
    let pull = ctx.socket(SocketType::Pull).unwrap();
    pull.set_recv_timeout(Some(Duration::from_secs(20)));
    let push = ctx.socket(SocketType::Push).unwrap();
    push.set_send_timeout(Some(Duration::from_secs(20)));
    for s in [&pull, &push] {
        s.set_ipc_domain(&format!("alloc-{}", std::process::id()));
        s.set_ipc_ring_size(ring);
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
    run(measured / 5);
    let before = ALLOCS.load(Ordering::Relaxed);
    run(measured);
    let after = ALLOCS.load(Ordering::Relaxed);
    after - before
}

#[test]
fn sixty_four_byte_push_pull_allocates_nothing_per_message() {
    let _w = common::watchdog(Duration::from_secs(300));
    let ipc = "ipc://alloc-steady-state";
    // (endpoint, size, messages, ring, at most one allocation per this many messages)
    for (ep, size, measured, ring, per) in [
        ("tcp://127.0.0.1:0", 64, MEASURED, 1 << 20, 100),
        ("inproc://alloc-steady-state", 64, MEASURED, 1 << 20, 100),
        (ipc, 64, MEASURED, 1 << 20, 100),
        (ipc, 64 << 10, 5_000, 1 << 20, 100),
        (ipc, 1 << 20, 500, 4 << 20, 100),
        // In pieces: a 1 MiB message through a 256 KiB ring. When the reader falls
        // behind, the sender hands the ring to the background thread, whose turns
        // (every millisecond while it holds the ring) sometimes allocate: 4 to 13 in
        // all for 500 messages in runs on a loaded machine, never one per message.
        (ipc, 1 << 20, 500, 256 << 10, 10),
    ] {
        let n = allocations(ep, size, measured, ring);
        eprintln!("{ep}, {size} bytes, ring {ring}: {n} allocations for {measured} messages");
        assert!(
            n * per < measured as u64,
            "{ep}, {size} bytes, ring {ring}: {n} allocations for {measured} messages"
        );
    }
}
