//! The connection segment: one sealed memory file per connection holding a header and
//! the two rings (one per direction). See `docs/shm-layout.md`.
//!
//! ```text
//!  offset                     content                              written by
//!  0                          magic u64 "LWMQSEG1"                 connector, before sending
//!  8                          version u32 (1)                      connector, before sending
//!  12                         ring_log2 u32 (N = 1 << ring_log2)   connector, before sending
//!  128 .. 512                 control of ring 0 (connector→binder) see `ring`
//!  512 .. 896                 control of ring 1 (binder→connector) see `ring`
//!  896 .. 4096                reserved (zero; never read)
//!  4096 .. 4096+N             data of ring 0
//!  4096+N .. 4096+2N          data of ring 1
//! ```
//!
//! The connector creates the file, writes the header, seals it and sends it with
//! SCM_RIGHTS. The binder derives `N` from the file's size (checked, sealed), maps it,
//! and checks that the header agrees; after that neither side reads the header again.
//! Nothing in the segment is trusted: the rings validate every index they read.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::region::Region;
use super::ring::{CONTROL_SIZE, RingMem, RingReader};
use super::sys;

/// Size of the header page.
pub const HEADER_SIZE: usize = 4096;
/// Offset of the magic number.
pub const MAGIC_OFFSET: usize = 0;
/// Offset of the version.
pub const VERSION_OFFSET: usize = 8;
/// Offset of `ring_log2`.
pub const RING_LOG2_OFFSET: usize = 12;
/// Offsets of the two ring control blocks (ring 0: connector→binder, ring 1:
/// binder→connector).
pub const CONTROL_OFFSET: [usize; 2] = [128, 128 + CONTROL_SIZE];
/// The segment's magic number.
pub const SEGMENT_MAGIC: u64 = u64::from_ne_bytes(*b"LWMQSEG1");
/// The layout version.
pub const SEGMENT_VERSION: u32 = 1;
/// Smallest ring (bytes of data per direction).
pub const MIN_RING_SIZE: usize = 4096;
/// Largest ring (bytes of data per direction).
pub const MAX_RING_SIZE: usize = 1 << 30;

/// Offset of the data of ring `dir` in a segment whose rings are `ring_size` bytes.
pub fn data_offset(dir: usize, ring_size: usize) -> usize {
    HEADER_SIZE + dir * ring_size
}

/// Total size of a segment with rings of `ring_size` bytes.
pub fn segment_size(ring_size: usize) -> usize {
    HEADER_SIZE + 2 * ring_size
}

/// A mapped connection segment.
#[derive(Debug)]
pub struct Segment {
    region: Arc<Region>,
    ring_size: usize,
}

impl Segment {
    /// Creates the segment of a new connection (the connector's side), with rings of
    /// `ring_size` bytes (a power of two between [`MIN_RING_SIZE`] and [`MAX_RING_SIZE`]).
    pub(crate) fn create(ring_size: usize) -> io::Result<Segment> {
        debug_assert!(ring_size.is_power_of_two());
        debug_assert!((MIN_RING_SIZE..=MAX_RING_SIZE).contains(&ring_size));
        let region = Region::memfd(c"lwmq-segment", segment_size(ring_size))?;
        let seg = Segment {
            region: Arc::new(region),
            ring_size,
        };
        seg.write_header();
        Ok(seg)
    }

    /// A segment in heap memory (tests).
    pub(crate) fn on_heap(ring_size: usize) -> Segment {
        let seg = Segment {
            region: Arc::new(Region::heap(segment_size(ring_size))),
            ring_size,
        };
        seg.write_header();
        seg
    }

    fn write_header(&self) {
        let base = self.region.as_ptr();
        // SAFETY: the header words are inside the region (HEADER_SIZE bytes at least),
        // aligned, and only ever accessed atomically.
        unsafe {
            AtomicU64::from_ptr(base.add(MAGIC_OFFSET).cast())
                .store(SEGMENT_MAGIC, Ordering::Relaxed);
            AtomicU32::from_ptr(base.add(VERSION_OFFSET).cast())
                .store(SEGMENT_VERSION, Ordering::Relaxed);
            AtomicU32::from_ptr(base.add(RING_LOG2_OFFSET).cast())
                .store(self.ring_size.trailing_zeros(), Ordering::Relaxed);
        }
    }

    /// Maps a segment a connector sent us, after checking its seals, its size (rings of
    /// at most `max_ring_size` bytes) and its header. Errors are human-readable
    /// reasons (for a rejection message).
    pub(crate) fn open(fd: OwnedFd, max_ring_size: usize) -> Result<Segment, String> {
        let size = sys::sealed_memfd_size(&fd)?;
        if size > segment_size(max_ring_size.min(MAX_RING_SIZE)) as u64 {
            return Err(format!(
                "the peer's segment of {size} bytes is larger than we accept \
                 (rings of at most {max_ring_size} bytes; see ShmOptions::max_peer_ring_size)"
            ));
        }
        let ring_size = size
            .checked_sub(HEADER_SIZE as u64)
            .map(|d| d / 2)
            .filter(|r| {
                r.is_power_of_two()
                    && (MIN_RING_SIZE as u64..=MAX_RING_SIZE as u64).contains(r)
                    && segment_size(*r as usize) as u64 == size
            })
            .ok_or_else(|| format!("the peer's segment has an invalid size of {size} bytes"))?
            as usize;
        let mut region = Region::map(fd, segment_size(ring_size))
            .map_err(|e| format!("mapping the peer's segment failed: {e}"))?;
        region.close_fd();
        let base = region.as_ptr();
        // SAFETY: the header words are inside the mapping, aligned, and read atomically
        // (copies; the peer may change them, we never read them again).
        let (magic, version, log2) = unsafe {
            (
                AtomicU64::from_ptr(base.add(MAGIC_OFFSET).cast()).load(Ordering::Relaxed),
                AtomicU32::from_ptr(base.add(VERSION_OFFSET).cast()).load(Ordering::Relaxed),
                AtomicU32::from_ptr(base.add(RING_LOG2_OFFSET).cast()).load(Ordering::Relaxed),
            )
        };
        if magic != SEGMENT_MAGIC {
            return Err("the peer's segment has a bad magic number".into());
        }
        if version != SEGMENT_VERSION {
            return Err(format!(
                "the peer's segment has layout version {version}, we speak {SEGMENT_VERSION}"
            ));
        }
        if log2 != ring_size.trailing_zeros() {
            return Err("the peer's segment header disagrees with its size".into());
        }
        Ok(Segment {
            region: Arc::new(region),
            ring_size,
        })
    }

    /// Bytes of data per ring.
    pub fn ring_size(&self) -> usize {
        self.ring_size
    }

    /// The memory file (connector side, until handed over).
    pub(crate) fn fd(&self) -> Option<&OwnedFd> {
        self.region.fd()
    }

    /// Closes our copy of the memory file once it has been handed to the peer (the
    /// mapping stays). Only possible before any ring borrows the region.
    pub(crate) fn close_fd(&mut self) {
        if let Some(r) = Arc::get_mut(&mut self.region) {
            r.close_fd();
        }
    }

    /// Ring `dir` (0: connector→binder, 1: binder→connector).
    pub(crate) fn ring(&self, dir: usize) -> RingMem {
        assert!(dir < 2, "internal: a segment has two rings");
        // SAFETY: the control block and the data area are inside the region (see the
        // layout above; `segment_size` covers both rings), aligned (128 and 4096), and
        // the RingMem keeps the region alive.
        unsafe {
            RingMem::new(
                self.region.clone(),
                CONTROL_OFFSET[dir],
                data_offset(dir, self.ring_size),
                self.ring_size,
            )
        }
    }

    /// A word in the reserved part of the header page (offset `2048 + 128 * i`, `i < 8`),
    /// which the benchmark borrows to measure the bare cache-line and futex floors
    /// between the same two processes. The transport never uses it.
    #[doc(hidden)]
    pub fn scratch_word(&self, i: usize) -> &AtomicU32 {
        let i = i.min(7);
        // SAFETY: 2048 + 128 * 7 + 4 <= HEADER_SIZE, inside the region, 4-aligned; the
        // word is only accessed atomically and the region lives as long as `self`.
        unsafe { AtomicU32::from_ptr(self.region.as_ptr().add(2048 + 128 * i).cast()) }
    }

    /// Writes `bytes` at `offset` into the segment (bounds checked). For tests that
    /// play a hostile peer; harmless to us since nothing in the segment is trusted.
    #[doc(hidden)]
    pub fn debug_write(&self, offset: usize, bytes: &[u8]) -> bool {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.region.size())
        {
            return false;
        }
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: offset + i is inside the region (checked above); a byte-sized
            // atomic store has no alignment requirement.
            unsafe {
                std::sync::atomic::AtomicU8::from_ptr(self.region.as_ptr().add(offset + i))
                    .store(*b, Ordering::Relaxed);
            }
        }
        true
    }
}

/// A writer and a reader over one ring of `ring_size` bytes in private heap memory, for
/// tests of the ring logic.
#[cfg(test)]
pub(crate) fn heap_ring(ring_size: usize) -> (super::ring::RingWriter, RingReader) {
    let seg = Segment::on_heap(ring_size);
    (
        super::ring::RingWriter::new(seg.ring(0), None),
        RingReader::new(seg.ring(0), None),
    )
}

/// Runs a ring reader over arbitrary memory: `input` is `head (u64) ++ tail (u64) ++
/// data` (`head`'s low 3 bits pick a maximum frame size, its top 2 a receive HWM). Used by the fuzz target; must never panic, hang or read out of bounds.
#[doc(hidden)]
pub fn fuzz_reader(input: &[u8]) -> usize {
    const SIZE: usize = 4096;
    let seg = Segment::on_heap(SIZE);
    let word = |i: usize| {
        input
            .get(i * 8..i * 8 + 8)
            .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let (head, tail) = (word(0), word(1));
    // Written as the ring itself accesses its memory, in aligned atomic words (Miri,
    // which runs this through the tests, does not support mixed-size atomics).
    let mem = seg.ring(0);
    mem.tail().store(tail, Ordering::Relaxed);
    let data = input.get(16..).unwrap_or(&[]);
    for (i, chunk) in data[..data.len().min(SIZE)].chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        mem.word(i * 8)
            .store(u64::from_ne_bytes(w), Ordering::Relaxed);
    }
    let mut reader = RingReader::new(seg.ring(0), None);
    // The low bits of `head` (unused as a position) pick a maximum frame size, the top
    // two a receive HWM (a writer that ignores it must be refused, never obeyed).
    reader.set_hwm(match head >> 62 {
        0 => 0,
        1 => 1,
        2 => 3,
        _ => 16,
    });
    reader.set_position_for_fuzzing(head & (u64::MAX >> 2));
    reader.set_max_frame(match head & 7 {
        0 => None,
        k => Some(1 << (2 * k)),
    });
    let mut got = 0;
    for i in 0..SIZE {
        let r = if i % 2 == 0 {
            reader.try_recv().map(|m| m.map(|m| m.size()))
        } else {
            reader
                .recv_in_place()
                .map(|g| g.map(|g| g.frames().map(<[u8]>::len).sum()))
        };
        match r {
            Ok(Some(n)) => got += n,
            Ok(None) | Err(_) => break,
        }
    }
    got
}
