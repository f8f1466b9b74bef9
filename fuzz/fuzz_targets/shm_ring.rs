//! Fuzzes the shared-memory ring reader over arbitrary memory: the input becomes the
//! reader's position, the writer's `tail` and the ring's data area, as a hostile peer
//! could leave them. The reader must return messages or a protocol error, never panic,
//! hang or read outside the ring.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lwmq::shm::segment::fuzz_reader(data);
});
