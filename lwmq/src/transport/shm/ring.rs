//! The single-producer single-consumer byte ring that carries one direction of a
//! shared-memory connection.
//!
//! One process writes ([`RingWriter`]), the other reads ([`RingReader`]); each side is
//! used by one thread at a time (`&mut self`). The algorithm is the classic bounded SPSC
//! queue (Lamport; as in crossbeam's array channel, the positions only grow and are
//! reduced modulo the size when used), over variable-length records instead of slots.
//!
//! # Control block (384 bytes, in the segment header page; see `segment`)
//!
//! | offset | field | written by | read by | ordering |
//! |---|---|---|---|---|
//! | 0 | `tail: u64` — end of the last complete message | writer | reader | store Release / load Acquire |
//! | 128 | `head: u64` — end of the last consumed message | reader | writer | store Release / load Acquire |
//! | 136 | `released: u64` — messages consumed (the receive HWM's count) | reader, with `head` | writer | store Release / load Acquire |
//! | 256 | `writer_waiting: u32` — the writer waits for space (or the HWM's count) | writer sets 1, reader swaps to 0 | reader, after a SeqCst fence | SeqCst |
//!
//! Each field has a cache line pair (128 bytes) of its own (`released` shares `head`'s:
//! the reader stores both at once), so the writer's and the reader's stores never
//! share a line. Both positions count bytes since the ring was
//! created (they never wrap in practice: 2^64 bytes); the offset in the data area is
//! `pos & (N - 1)` where `N`, the data size, is a power of two. `tail - head` is the
//! number of bytes in use, at most `N`. Each side keeps a private copy of the other's
//! position (`head_cache`, `tail_cache`) and reloads it only when the copy says "full"
//! or "empty", so a busy ring moves a control line between the caches once per batch,
//! not once per message; the hot path makes no system call. The reader publishes its
//! `head` per batch too (see `RingReader::release`).
//!
//! # The receive high-water mark (messages)
//!
//! The reader's socket has a receive HWM (RCVHWM, a number of messages; 0 = none),
//! which it announces in its rendezvous hello. The writer counts the messages it
//! started (`written`; a message in pieces counts at its first piece) and compares
//! them with `released`, which the reader stores next to `head` each time it publishes:
//! while `written - released >= hwm` a new message is `Full`, exactly like a ring
//! without room, so the sending socket blocks or (PUB) drops. The reader publishes
//! per batch here too: when half its HWM was consumed since it last published (libzmq's
//! low-water mark), besides the byte rule, and always on reaching the tail it knows of.
//! A writer waiting for the count arms `writer_waiting` and is woken by the same
//! handshake as for room: the reader stores `released` and `head`, then fences and
//! looks at `writer_waiting`.
//!
//! The reader never trusts the writer for this: it knows its own HWM and what it
//! published. Every message up to a `tail` it loads was written before that load,
//! when the writer could not have seen more than the `released` published by then,
//! so a message that starts at or beyond that `released + hwm` (messages counted
//! since the connection began) is a protocol error: the connection ends. An honest
//! writer never trips it; one that ignores the HWM is caught within the first tail
//! the reader loads that shows more than its HWM of unreleased messages, so the
//! reader never holds more than its HWM unread (and, as ever, one ring of bytes).
//! The writer checks every `released` it loads (`cache <= released <= written`).
//!
//! # Records (in the data area, `N` bytes)
//!
//! Every record starts on an 8-byte boundary with an 8-byte header word, read and
//! written as one atomic `u64`:
//!
//! ```text
//!  bits 0..32   len     payload bytes
//!  bits 32..48  flags   MORE  = 1  (another frame / piece of the same message follows)
//!                       PAD   = 2  (filler to the end of the data area; no payload)
//!                       PIECE = 4  (a piece of a message too large for the ring)
//!                       FIRST = 8  (pieces: the message's first piece)
//!                       FRAME = 16 (pieces: the piece starts a frame)
//!  bits 48..64  marker  0x4C57 ("LW"), catches most garbage early
//! ```
//!
//! followed by `len` payload bytes, padded to a multiple of 8. A record never wraps:
//! when it does not fit before the end of the data area, the writer fills the rest
//! with a PAD record (its `len` is exactly the space left minus 8) and puts the record
//! at offset 0.
//!
//! A message is **in the ring** or **in pieces**. In the ring: one frame record per
//! frame, all but the last with MORE; the writer publishes `tail` only at the end of a
//! message, so the reader never sees half a message. Because at most one PAD can fall
//! inside a message and a PAD is shorter than the record that caused it, a message
//! whose records take `R` bytes with largest record `r` always fits an empty ring when
//! `R + r <= N` (about half the ring for a single frame), so such a send never waits
//! for space that will never come.
//!
//! A message that fails that rule goes **in pieces**: PIECE records of at most `N / 4`
//! bytes each, each carrying bytes of one frame, published one by one and released by
//! the reader as soon as it has copied them into the message it puts together. The
//! first piece has FIRST and FRAME and its payload starts with `total: u64le` (payload
//! bytes of the message) and `count: u64le` (frames); a piece with FRAME starts a frame
//! with `frame_len: u64le`; the rest is frame bytes (a piece without FRAME carries at
//! least one); the last piece has no MORE. Nothing else is written between the pieces
//! of a message: [`RingWriter::try_send`] accepts the message once its first piece is
//! written, [`RingWriter::continue_pieces`] writes the others as room appears, and
//! every later send or reservation waits (`Full`) until the last one is written.
//! The reader checks every announcement against what follows and bounds what it
//! allocates by them, by what arrived and by its maximum frame size
//! ([`RingReader::set_max_frame`], MAXMSGSIZE): see `docs/shm-layout.md`.
//!
//! # Trust
//!
//! The peer can write anything anywhere in the segment at any time. The reader copies
//! `tail` and each header word once, validates the copy (alignment, `tail - head <= N`,
//! marker, flags, the record inside the data area and before `tail`), and uses only the
//! copy; payload bytes are copied out in one pass (`rep movsb` on x86-64, atomic word
//! loads elsewhere and under Miri) and only to where the validated bounds say. A
//! message in pieces is
//! refused as soon as a piece contradicts what was announced (a frame longer than its
//! length or the total, more frames than the count, an end short of them, a frame
//! above the maximum size); what the reader allocates for it grows with what arrived,
//! never beyond the announcements. The writer validates every
//! `head` it loads (`head_cache <= head <= tail`). A violation is a protocol error that
//! sticks: the connection is finished. Every loop is bounded by `N / 8` records.
//! The zero-copy paths ([`ReadGuard`], [`WriteGrant`]) hand out slices of the shared
//! memory itself: the protocol forbids the peer to touch those bytes until they are
//! released, but a hostile peer may; its only power is to change the bytes you see.

use crate::sync::shared::{AtomicU32, AtomicU64, Ordering, fence};
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::region::Region;
use super::wait::Doorbell;
use crate::{Error, Message};

/// The atomic operations of the space hand-off between a ring's reader and a writer
/// waiting for room or for the receive HWM's count, so that its steps ([`space`]) are
/// written once: for the ring, whose words are std atomics over the mapping, and for
/// the loom model, whose words are loom's (see `crate::sync`).
pub(crate) trait SpaceWord {
    type Value: Copy + PartialEq + From<u8>;
    fn load(&self, order: Ordering) -> Self::Value;
    fn store(&self, v: Self::Value, order: Ordering);
    fn swap(&self, v: Self::Value, order: Ordering) -> Self::Value;
    /// A fence of the memory model these words live in.
    fn fence(order: Ordering);
}

macro_rules! space_word {
    ($atomic:ty, $value:ty, $fence:path) => {
        impl SpaceWord for $atomic {
            type Value = $value;
            #[inline(always)]
            fn load(&self, order: Ordering) -> $value {
                <$atomic>::load(self, order)
            }
            #[inline(always)]
            fn store(&self, v: $value, order: Ordering) {
                <$atomic>::store(self, v, order)
            }
            #[inline(always)]
            fn swap(&self, v: $value, order: Ordering) -> $value {
                <$atomic>::swap(self, v, order)
            }
            #[inline(always)]
            fn fence(order: Ordering) {
                $fence(order);
            }
        }
    };
}

space_word!(AtomicU32, u32, fence);
space_word!(AtomicU64, u64, fence);
#[cfg(lwmq_loom)]
space_word!(
    crate::sync::atomic::AtomicU32,
    u32,
    crate::sync::atomic::fence
);
#[cfg(lwmq_loom)]
space_word!(
    crate::sync::atomic::AtomicU64,
    u64,
    crate::sync::atomic::fence
);

/// The space hand-off's steps (see the module docs): the same announce-then-look
/// protocol as the doorbell's. Either the writer's second look sees what the reader
/// published, or the reader sees `writer_waiting` and rings the writer's doorbell.
pub(crate) mod space {
    use super::{Ordering, SpaceWord};

    /// The reader's step: publish the message count and the head (Release), SeqCst
    /// fence, then look at `writer_waiting` and clear it. Returns whether the writer
    /// waits, that is whether the caller must ring its doorbell.
    #[inline(always)]
    pub(crate) fn publish<P: SpaceWord<Value = u64>, F: SpaceWord<Value = u32>>(
        released: &P,
        head: &P,
        writer_waiting: &F,
        count: u64,
        end: u64,
    ) -> bool {
        released.store(count, Ordering::Release);
        head.store(end, Ordering::Release);
        F::fence(Ordering::SeqCst);
        writer_waiting.load(Ordering::Relaxed) != 0 && writer_waiting.swap(0, Ordering::SeqCst) != 0
    }

    /// The writer's announcement, after a send found no room or the HWM's count
    /// reached: set `writer_waiting`, SeqCst fence. The caller then looks once more
    /// (reloading head and count) before it parks.
    #[inline(always)]
    pub(crate) fn arm<F: SpaceWord<Value = u32>>(writer_waiting: &F) {
        writer_waiting.store(1, Ordering::SeqCst);
        F::fence(Ordering::SeqCst);
    }
}

/// Size of a ring's control block.
pub const CONTROL_SIZE: usize = 384;
/// Offset of `tail` in the control block.
pub const TAIL_OFFSET: usize = 0;
/// Offset of `head` in the control block.
pub const HEAD_OFFSET: usize = 128;
/// Offset of `released` (messages the reader consumed) in the control block.
pub const RELEASED_OFFSET: usize = 136;
/// Offset of `writer_waiting` in the control block.
pub const WRITER_WAITING_OFFSET: usize = 256;
/// Size of a record header.
pub const RECORD_HEADER: usize = 8;
/// How far past its head a reader starts loading newly published lines at once
/// ([`RingReader::touch_ahead`]).
const TOUCH_AHEAD: u64 = 128;
/// Flag: another frame of the same message follows.
pub const FLAG_MORE: u64 = 1;
/// Flag: padding to the end of the data area.
pub const FLAG_PAD: u64 = 2;
/// Flag: the record is a piece of a message too large for the ring (see the module
/// docs); combined with `MORE` (another piece follows), `FIRST` and `FRAME`.
pub const FLAG_PIECE: u64 = 4;
/// Flag (pieces only): the first piece of a message; its payload starts with the
/// message's total payload bytes and frame count (`u64` each, little-endian).
pub const FLAG_FIRST: u64 = 8;
/// Flag (pieces only): the piece starts a frame; its payload (after the `FIRST` words)
/// starts with the frame's length (`u64`, little-endian).
pub const FLAG_FRAME: u64 = 16;
/// Every flag a record header may carry.
const KNOWN_FLAGS: u64 = FLAG_MORE | FLAG_PAD | FLAG_PIECE | FLAG_FIRST | FLAG_FRAME;
/// How far ahead of the bytes that arrived a reader assembling a frame from pieces
/// allocates (at most; it also never allocates more than the frame's announced length
/// nor, beyond this, more than what arrived).
pub const ASSEMBLY_AHEAD: usize = 8 << 20;
/// The marker in bits 48..64 of every record header.
pub const RECORD_MARKER: u64 = 0x4C57;
/// Size of the buffers [`RingReader::try_recv`] copies small frames into (each frame
/// is a slice of one; a buffer is reused once all of its frames are dropped).
pub const ARENA_SIZE: usize = 16 * 1024;
/// Frames of at least this many bytes are copied into a buffer of their own.
pub const ARENA_MAX_FRAME: usize = 2 * 1024;

fn header_word(len: usize, flags: u64) -> u64 {
    len as u64 | (flags << 32) | (RECORD_MARKER << 48)
}

/// Bytes a frame of `len` bytes takes in the ring (`None` if absurdly large).
pub(crate) fn record_len(len: usize) -> Option<u64> {
    let padded = u64::try_from(len).ok()?.checked_add(7)? & !7;
    padded.checked_add(RECORD_HEADER as u64)
}

/// A ring's memory: its control block and data area inside a [`Region`] that it keeps
/// alive.
pub(crate) struct RingMem {
    _region: Arc<Region>,
    ctrl: *mut u8,
    data: *mut u8,
    size: usize,
}

// SAFETY: RingMem is raw pointers into a Region it keeps alive; the ring protocol (one
// writer, one reader, atomics for everything shared) defines all access.
unsafe impl Send for RingMem {}

impl fmt::Debug for RingMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingMem").field("size", &self.size).finish()
    }
}

impl RingMem {
    /// # Safety
    ///
    /// The caller must ensure:
    /// - `ctrl_offset` is 128-aligned and `ctrl_offset + CONTROL_SIZE <= region.size()`;
    /// - `size` is a power of two of at least 64, `data_offset` is 8-aligned and
    ///   `data_offset + size <= region.size()`;
    /// - the control block and data area overlap nothing else used by this process
    ///   except the ring's one writer and one reader.
    pub(crate) unsafe fn new(
        region: Arc<Region>,
        ctrl_offset: usize,
        data_offset: usize,
        size: usize,
    ) -> RingMem {
        debug_assert!(size.is_power_of_two() && size >= 64);
        debug_assert!(ctrl_offset + CONTROL_SIZE <= region.size());
        debug_assert!(data_offset + size <= region.size());
        let base = region.as_ptr();
        // SAFETY: both offsets are inside the region (caller's contract).
        let (ctrl, data) = unsafe { (base.add(ctrl_offset), base.add(data_offset)) };
        RingMem {
            _region: region,
            ctrl,
            data,
            size,
        }
    }

    pub(crate) fn tail(&self) -> &AtomicU64 {
        // SAFETY: inside the control block, 8-aligned (128-aligned block), alive while
        // `self` is; every access to it is atomic.
        unsafe { AtomicU64::from_ptr(self.ctrl.add(TAIL_OFFSET).cast()) }
    }

    fn head(&self) -> &AtomicU64 {
        // SAFETY: as in `tail`.
        unsafe { AtomicU64::from_ptr(self.ctrl.add(HEAD_OFFSET).cast()) }
    }

    fn released(&self) -> &AtomicU64 {
        // SAFETY: as in `tail` (136 is 8-aligned, inside the block).
        unsafe { AtomicU64::from_ptr(self.ctrl.add(RELEASED_OFFSET).cast()) }
    }

    fn writer_waiting(&self) -> &AtomicU32 {
        // SAFETY: as in `tail`, 4-aligned.
        unsafe { AtomicU32::from_ptr(self.ctrl.add(WRITER_WAITING_OFFSET).cast()) }
    }

    fn mask(&self) -> u64 {
        self.size as u64 - 1
    }

    /// The 8-byte word at data offset `off`. Callers pass validated, aligned offsets
    /// inside the data area; the offset is masked anyway, so that no caller bug can
    /// make this touch memory outside the ring.
    pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= self.size);
        let off = off & (self.size - 1) & !7;
        // SAFETY: after masking, `off` is 8-aligned and `off + 8 <= size` (size is a
        // power of two >= 64), so the word is inside the data area, which lives as long
        // as `self`; every access to ring memory through a word is atomic.
        unsafe { AtomicU64::from_ptr(self.data.add(off).cast()) }
    }
}

/// Why a frame or message could not be put into the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShmSendError {
    /// Not enough free space now; retry when the reader has caught up.
    Full,
    /// The message can never fit this ring.
    TooLarge {
        /// Payload bytes of the message.
        size: usize,
        /// The largest payload the ring takes as a single frame
        /// ([`RingWriter::max_message_size`]); each frame also costs up to 16 bytes.
        limit: usize,
    },
    /// A message must have at least one frame.
    Empty,
    /// The peer corrupted the ring; the connection is finished.
    Protocol(String),
    /// The peer is gone.
    Closed,
}

impl fmt::Display for ShmSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShmSendError::Full => f.write_str("the shared-memory ring is full"),
            ShmSendError::TooLarge { size, limit } => write!(
                f,
                "message of {size} bytes does not fit the shared-memory ring (at most {limit} bytes; raise ShmOptions::ring_size)"
            ),
            ShmSendError::Empty => f.write_str("a message needs at least one frame"),
            ShmSendError::Protocol(why) => write!(f, "shared-memory protocol error: {why}"),
            ShmSendError::Closed => f.write_str("the peer is gone"),
        }
    }
}

impl std::error::Error for ShmSendError {}

impl From<ShmSendError> for Error {
    fn from(e: ShmSendError) -> Error {
        match e {
            ShmSendError::Full => Error::WouldBlock,
            ShmSendError::TooLarge { size, limit } => Error::MessageTooLarge {
                size: size as u64,
                limit: limit as u64,
            },
            ShmSendError::Empty => {
                Error::InvalidArgument("a message needs at least one frame".into())
            }
            ShmSendError::Protocol(why) => Error::Protocol(why),
            ShmSendError::Closed => Error::Closed,
        }
    }
}

/// The writing end of a ring. Owned by the sending thread (not `Sync`; `&mut self`).
#[derive(Debug)]
pub struct RingWriter {
    mem: RingMem,
    /// Where the next record goes (includes frames of an unfinished message).
    tail: u64,
    /// The `tail` the reader has been shown (end of the last complete message).
    published: u64,
    /// Our copy of the reader's `head`.
    head_cache: u64,
    /// The reading socket's doorbell, rung after publishing.
    peer_bell: Option<Doorbell>,
    /// A message going in pieces, not all of them written yet.
    large: Option<LargeSend>,
    /// The reader's receive HWM in messages (`u64::MAX`: none).
    hwm: u64,
    /// Messages started (published in the ring, or first piece written).
    written: u64,
    /// Our copy of the reader's `released`.
    released_cache: u64,
    failed: Option<String>,
}

/// Where a message sent in pieces stands (see [`RingWriter::try_send`]).
#[derive(Debug)]
struct LargeSend {
    /// The message (its frames are shared, not copied).
    msg: Message,
    /// The frame the next piece belongs to.
    frame: usize,
    /// Bytes of that frame already written.
    sent: usize,
    /// The first piece (with the message's announcement) is written.
    started: bool,
    /// The piece that starts `frame` (with its length) is written.
    frame_started: bool,
}

impl RingWriter {
    pub(crate) fn new(mem: RingMem, peer_bell: Option<Doorbell>) -> RingWriter {
        RingWriter {
            mem,
            tail: 0,
            published: 0,
            head_cache: 0,
            peer_bell,
            large: None,
            hwm: u64::MAX,
            written: 0,
            released_cache: 0,
            failed: None,
        }
    }

    /// Honours the reader's receive high-water mark: at most `hwm` messages unread
    /// (`0`: no limit, the default). Set before the first message, from the peer's
    /// hello.
    pub fn set_peer_hwm(&mut self, hwm: u64) {
        self.hwm = if hwm == 0 { u64::MAX } else { hwm };
    }

    /// `Full` while the reader holds its HWM of messages (reloads its count when our
    /// copy says so).
    fn check_hwm(&mut self) -> Result<(), ShmSendError> {
        if self.written - self.released_cache >= self.hwm {
            let released = self.mem.released().load(Ordering::Acquire);
            if released < self.released_cache || released > self.written {
                return Err(self.fail(format!(
                    "the reader's message count {released} is outside [{}, {}]",
                    self.released_cache, self.written
                )));
            }
            self.released_cache = released;
            if self.written - released >= self.hwm {
                return Err(ShmSendError::Full);
            }
        }
        Ok(())
    }

    /// The largest payload of one piece record (a quarter of the ring, header included):
    /// such a record always fits a ring that has drained, and up to four are in flight.
    fn piece_payload(&self) -> usize {
        self.mem.size / 4 - RECORD_HEADER
    }

    /// Whether a message sent in pieces still has pieces to write
    /// ([`continue_pieces`](Self::continue_pieces) writes them).
    pub fn has_unfinished(&self) -> bool {
        self.large.is_some()
    }

    /// Writes as many of the pending pieces as the ring has room for now, publishing
    /// each; `Ok(true)` once no piece is left (also when there was none), `Ok(false)` if
    /// the ring is full (retry when the reader has caught up, see
    /// [`arm_space_notification`](Self::arm_space_notification)).
    #[inline]
    pub fn continue_pieces(&mut self) -> Result<bool, ShmSendError> {
        self.check_failed()?;
        if self.large.is_none() {
            return Ok(true);
        }
        self.continue_large()
    }

    /// [`continue_pieces`](Self::continue_pieces) with a message in pieces under way.
    fn continue_large(&mut self) -> Result<bool, ShmSendError> {
        let Some(mut ls) = self.large.take() else {
            return Ok(true);
        };
        let r = self.write_pieces(&mut ls);
        if !matches!(r, Ok(true)) {
            self.large = Some(ls);
        }
        r
    }

    /// The loop of [`continue_pieces`](Self::continue_pieces); `Ok(true)` when `ls` is
    /// all written.
    fn write_pieces(&mut self, ls: &mut LargeSend) -> Result<bool, ShmSendError> {
        let payload_max = self.piece_payload();
        let frames = ls.msg.frames();
        // Bounded: every turn writes one piece and moves through the message, which
        // ends after at most `size / (payload_max - 24) + frames` pieces.
        loop {
            let f = &frames[ls.frame];
            let sub = if !ls.started {
                24
            } else if !ls.frame_started {
                8
            } else {
                0
            };
            let data = (f.len() - ls.sent).min(payload_max - sub);
            let frame_done = ls.sent + data == f.len();
            let last = frame_done && ls.frame + 1 == frames.len();
            let mut flags = FLAG_PIECE;
            if !last {
                flags |= FLAG_MORE;
            }
            if !ls.started {
                flags |= FLAG_FIRST;
            }
            if !ls.frame_started {
                flags |= FLAG_FRAME;
            }
            let rec = record_len(sub + data).unwrap_or(u64::MAX); // at most a quarter ring
            let start = self.place(self.tail, rec);
            match self.ensure_room(start + rec) {
                Ok(()) => {}
                Err(ShmSendError::Full) => return Ok(false),
                Err(e) => return Err(e),
            }
            self.write_pad(self.tail, start);
            let off = (start & self.mem.mask()) as usize;
            let mut at = off + RECORD_HEADER;
            if !ls.started {
                let total = ls.msg.size() as u64;
                let count = frames.len() as u64;
                self.mem.word(at).store(total.to_le(), Ordering::Relaxed);
                self.mem
                    .word(at + 8)
                    .store(count.to_le(), Ordering::Relaxed);
                at += 16;
            }
            if !ls.frame_started {
                self.mem
                    .word(at)
                    .store((f.len() as u64).to_le(), Ordering::Relaxed);
                at += 8;
            }
            if data > 0 {
                // SAFETY: the record [off, off + rec) is inside the data area (`place`
                // never lets a record cross the end) and in free space (ensure_room),
                // which the reader does not read until we publish;
                // `at + data <= off + rec`, and `ls.sent + data <= f.len()`.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        f.as_ptr().add(ls.sent),
                        self.mem.data.add(at),
                        data,
                    );
                }
            }
            self.mem
                .word(off)
                .store(header_word(sub + data, flags), Ordering::Relaxed);
            self.tail = start + rec;
            self.publish();
            ls.started = true;
            ls.frame_started = true;
            ls.sent += data;
            if frame_done {
                ls.frame += 1;
                ls.sent = 0;
                ls.frame_started = false;
            }
            if last {
                return Ok(true);
            }
        }
    }

    /// Bytes of the data area.
    pub fn capacity(&self) -> usize {
        self.mem.size
    }

    /// The largest single-frame payload this ring accepts (about half its size).
    pub fn max_message_size(&self) -> usize {
        self.mem.size / 2 - RECORD_HEADER
    }

    fn fail(&mut self, why: String) -> ShmSendError {
        tracing::warn!("shm ring: {why}");
        self.failed = Some(why.clone());
        ShmSendError::Protocol(why)
    }

    #[inline]
    fn check_failed(&self) -> Result<(), ShmSendError> {
        match &self.failed {
            Some(why) => Err(ShmSendError::Protocol(why.clone())),
            None => Ok(()),
        }
    }

    /// Reloads the reader's `head` and validates it.
    fn refresh_head(&mut self) -> Result<(), ShmSendError> {
        let head = self.mem.head().load(Ordering::Acquire);
        if head < self.head_cache || head > self.published || head % 8 != 0 {
            return Err(self.fail(format!(
                "the reader's head {head} is outside [{}, {}] or misaligned",
                self.head_cache, self.published
            )));
        }
        self.head_cache = head;
        Ok(())
    }

    /// Where a record of `rec` bytes starting at `pos` really starts (after a PAD).
    fn place(&self, pos: u64, rec: u64) -> u64 {
        let off = pos & self.mem.mask();
        if off + rec > self.mem.size as u64 {
            pos + (self.mem.size as u64 - off)
        } else {
            pos
        }
    }

    /// Makes sure the ring has room up to position `end`.
    fn ensure_room(&mut self, end: u64) -> Result<(), ShmSendError> {
        let n = self.mem.size as u64;
        if end - self.head_cache > n {
            self.refresh_head()?;
            if end - self.head_cache > n {
                return Err(ShmSendError::Full);
            }
        }
        Ok(())
    }

    /// Writes a PAD record at `pos` up to `start`, if they differ.
    fn write_pad(&self, pos: u64, start: u64) {
        if start != pos {
            let off = (pos & self.mem.mask()) as usize;
            let len = (start - pos) as usize - RECORD_HEADER;
            self.mem
                .word(off)
                .store(header_word(len, FLAG_PAD), Ordering::Relaxed);
        }
    }

    fn publish(&mut self) {
        self.published = self.tail;
        self.mem.tail().store(self.tail, Ordering::Release);
        if let Some(bell) = &self.peer_bell {
            bell.notify();
        }
    }

    /// Starts sending `msg` in pieces: fails with `Full` (nothing written) unless the
    /// first piece fits now.
    fn start_pieces(&mut self, msg: &Message) -> Result<(), ShmSendError> {
        self.large = Some(LargeSend {
            msg: msg.clone(),
            frame: 0,
            sent: 0,
            started: false,
            frame_started: false,
        });
        let before = self.tail;
        let r = self.continue_pieces();
        if self.tail == before {
            // Not even the first piece went: as if never tried.
            self.large = None;
            r?;
            return Err(ShmSendError::Full);
        }
        self.written += 1;
        r.map(|_| ())
    }

    /// Copies a whole message into the ring and publishes it, or fails without writing
    /// anything visible. Never blocks; never makes a system call unless the reader is
    /// parked.
    ///
    /// A message the ring cannot hold at once (its records and its largest record
    /// together exceed the ring) goes in pieces of at most a quarter of the ring: the
    /// call succeeds once the first piece is written, and the rest follows as the
    /// reader makes room, written by [`continue_pieces`](Self::continue_pieces) (which
    /// every later `try_send` and `reserve` calls first: nothing overtakes a message
    /// in pieces). `Full` means nothing of `msg` was written.
    pub fn try_send(&mut self, msg: &Message) -> Result<(), ShmSendError> {
        self.check_failed()?;
        let frames = msg.frames();
        if frames.is_empty() {
            return Err(ShmSendError::Empty);
        }
        let n = self.mem.size as u64;
        // Built only when needed: the happy path makes no extra pass over the frames.
        let limit = self.max_message_size();
        let too_large = || ShmSendError::TooLarge {
            size: msg.size(),
            limit,
        };
        // Pieces of an earlier message go first.
        if !self.continue_pieces()? {
            return Err(ShmSendError::Full);
        }
        if self.tail == self.published {
            // A new message (not the end of one begun in place): the reader's HWM.
            self.check_hwm()?;
        }
        let mut total = self.tail - self.published;
        let mut largest = 0u64;
        for f in frames {
            let rec = record_len(f.len()).unwrap_or(u64::MAX);
            total = total.saturating_add(rec);
            largest = largest.max(rec);
        }
        if total.saturating_add(largest) > n {
            if self.tail != self.published {
                // Frames of an unfinished in-place message would precede the pieces.
                return Err(too_large());
            }
            return self.start_pieces(msg);
        }
        // Plan the positions, check the room, then write.
        let mut end = self.tail;
        for f in frames {
            let rec = record_len(f.len()).unwrap_or(0); // checked above: fits
            end = self.place(end, rec) + rec;
        }
        self.ensure_room(end)?;
        let mut pos = self.tail;
        let last = frames.len() - 1;
        for (i, f) in frames.iter().enumerate() {
            let rec = record_len(f.len()).unwrap_or(0); // checked above: fits
            let start = self.place(pos, rec);
            self.write_pad(pos, start);
            let off = (start & self.mem.mask()) as usize;
            // SAFETY: the record [off, off + rec) is inside the data area (`place`
            // never lets a record cross the end) and in free space (ensure_room), which
            // the reader does not read until we publish.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    f.as_ptr(),
                    self.mem.data.add(off + RECORD_HEADER),
                    f.len(),
                );
            }
            let flags = if i < last { FLAG_MORE } else { 0 };
            self.mem
                .word(off)
                .store(header_word(f.len(), flags), Ordering::Relaxed);
            pos = start + rec;
        }
        debug_assert_eq!(pos, end);
        self.tail = pos;
        self.written += 1;
        self.publish();
        Ok(())
    }

    /// Reserves room for one frame of `len` bytes, to be filled in place and committed
    /// with [`WriteGrant::commit`]. Frames committed with `more = true` stay invisible
    /// to the reader until the message's last frame is committed (or a
    /// [`try_send`](Self::try_send) completes the message).
    pub fn reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, ShmSendError> {
        self.check_failed()?;
        if !self.continue_pieces()? {
            return Err(ShmSendError::Full);
        }
        let too_large = ShmSendError::TooLarge {
            size: len,
            limit: self.max_message_size(),
        };
        let rec = record_len(len).ok_or_else(|| too_large.clone())?;
        let unfinished = self.tail - self.published;
        if unfinished == 0 {
            self.check_hwm()?;
        }
        if unfinished.saturating_add(rec.saturating_mul(2)) > self.mem.size as u64 {
            return Err(too_large);
        }
        let start = self.place(self.tail, rec);
        self.ensure_room(start + rec)?;
        self.write_pad(self.tail, start);
        Ok(WriteGrant {
            writer: self,
            start,
            len,
        })
    }

    /// Asks the reader to ring our doorbell when it frees space. Call when a send
    /// failed with [`ShmSendError::Full`], then retry the send once before parking
    /// (the retry closes the race with a reader that freed space just before).
    pub fn arm_space_notification(&self) {
        space::arm(self.mem.writer_waiting());
    }

    /// Bytes free right now (reloads the reader's position).
    pub fn free_space(&mut self) -> Result<usize, ShmSendError> {
        self.check_failed()?;
        self.refresh_head()?;
        Ok((self.mem.size as u64 - (self.tail - self.head_cache)) as usize)
    }
}

/// Room for one frame inside the ring, from [`RingWriter::reserve`]. Dropping it without
/// [`commit`](Self::commit) abandons the frame.
#[derive(Debug)]
pub struct WriteGrant<'a> {
    writer: &'a mut RingWriter,
    start: u64,
    len: usize,
}

impl WriteGrant<'_> {
    /// The frame's bytes, to fill in.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let off = (self.start & self.writer.mem.mask()) as usize + RECORD_HEADER;
        // SAFETY: [off, off + len) is inside the data area and in free space that the
        // reader does not read until we publish (see `reserve`); the grant borrows the
        // writer mutably, so no other slice of it exists.
        unsafe { std::slice::from_raw_parts_mut(self.writer.mem.data.add(off), self.len) }
    }

    /// Commits the frame; with `more = false` it ends the message and publishes it.
    pub fn commit(self, more: bool) {
        let w = self.writer;
        let rec = record_len(self.len).unwrap_or(0); // checked in reserve
        let off = (self.start & w.mem.mask()) as usize;
        let flags = if more { FLAG_MORE } else { 0 };
        w.mem
            .word(off)
            .store(header_word(self.len, flags), Ordering::Relaxed);
        w.tail = self.start + rec;
        if !more {
            w.written += 1;
            w.publish();
        }
    }
}

/// The reading end of a ring. Owned by the receiving thread (`&mut self`).
#[derive(Debug)]
pub struct RingReader {
    mem: RingMem,
    /// End of what we consumed.
    head: u64,
    /// The `head` the writer has been shown (published per batch, see `release`).
    published: u64,
    /// Our copy of the writer's `tail`, validated.
    tail_cache: u64,
    /// The writing socket's doorbell, rung when we free space it waits for.
    peer_bell: Option<Doorbell>,
    /// (offset, len) of the frames of the message being read; reused.
    frames: Vec<(usize, usize)>,
    /// Where `try_recv` copies small frames (see `copy_out`); always empty between
    /// calls, its capacity is the room left in the current buffer.
    arena: BytesMut,
    /// Where frames of [`ARENA_MAX_FRAME`] bytes or more go (see `large_buffer`):
    /// the buffer of the last large message, taken back once the application has
    /// dropped it, so a steady stream of large messages allocates nothing.
    big: BytesMut,
    /// The size of `big`'s whole allocation.
    big_cap: usize,
    /// A message arriving in pieces, not complete yet.
    assembly: Option<Assembly>,
    /// The largest frame accepted (MAXMSGSIZE; `None`: no limit).
    max_frame: Option<u64>,
    /// Our receive HWM in messages (`u64::MAX`: none); ours, never read from the peer.
    hwm: u64,
    /// Publish `released` once this many messages were consumed since the last time.
    count_batch: u64,
    /// Messages consumed.
    consumed: u64,
    /// The `released` the writer has been shown.
    published_count: u64,
    /// No message up to `tail_cache` may start at or beyond this count: it is
    /// `published_count + hwm` as of the moment `tail_cache` was loaded, and the writer
    /// wrote those messages before, when it could not have seen more released.
    count_limit: u64,
    failed: Option<String>,
}

/// A message being put together from pieces (see the module docs). What it holds is
/// bounded by what the peer wrote (plus at most [`ASSEMBLY_AHEAD`] per frame), by the
/// totals the first piece announced and by the reader's `max_frame`.
#[derive(Debug)]
struct Assembly {
    /// Announced payload bytes of the whole message.
    total: u64,
    /// Announced frames.
    count: u64,
    /// Sum of the lengths of the frames started so far.
    announced: u64,
    /// The frames complete so far.
    done: Message,
    /// The frame being filled, and its announced length.
    cur: BytesMut,
    cur_len: usize,
}

/// What [`RingReader::next`] found.
enum Next {
    /// A message in the ring, its frames in `RingReader::frames`, ending at this
    /// position.
    InRing(u64),
    /// A message put together from pieces (the pieces are released already).
    Assembled(Message),
}

/// What [`RingReader::parse`] found at the head.
enum Parsed {
    /// A message in the ring (frames in `RingReader::frames`), ending here.
    Message(u64),
    /// A piece: its header word, payload offset, and the record's end.
    Piece(u64, usize, u64),
}

impl RingReader {
    pub(crate) fn new(mem: RingMem, peer_bell: Option<Doorbell>) -> RingReader {
        RingReader {
            mem,
            head: 0,
            published: 0,
            tail_cache: 0,
            peer_bell,
            frames: Vec::new(),
            arena: BytesMut::new(),
            big: BytesMut::new(),
            big_cap: 0,
            assembly: None,
            max_frame: None,
            hwm: u64::MAX,
            count_batch: u64::MAX,
            consumed: 0,
            published_count: 0,
            count_limit: u64::MAX,
            failed: None,
        }
    }

    /// Our receive high-water mark: at most `hwm` messages unread in the ring (`0`: no
    /// limit, the default). The writer learns it from our hello and must honour it; a
    /// message beyond it is a protocol error. Set before the first message.
    pub fn set_hwm(&mut self, hwm: u64) {
        if hwm == 0 {
            (self.hwm, self.count_batch) = (u64::MAX, u64::MAX);
        } else {
            (self.hwm, self.count_batch) = (hwm, hwm.div_ceil(2));
        }
        self.count_limit = self.published_count.saturating_add(self.hwm);
    }

    /// Refuses frames longer than `max` bytes (MAXMSGSIZE, per frame as in libzmq): a
    /// peer announcing or writing one is a protocol error. `None` (the default): no
    /// limit.
    pub fn set_max_frame(&mut self, max: Option<u64>) {
        self.max_frame = max;
    }

    #[doc(hidden)]
    pub fn set_position_for_fuzzing(&mut self, head: u64) {
        self.head = head & !7;
        self.published = self.head;
        self.tail_cache = self.head;
    }

    fn fail(&mut self, why: String) -> Error {
        tracing::warn!("shm ring: {why}");
        self.failed = Some(why.clone());
        Error::Protocol(why)
    }

    fn refresh_tail(&mut self) -> Result<(), Error> {
        let tail = self.mem.tail().load(Ordering::Acquire);
        if tail < self.tail_cache || tail - self.head > self.mem.size as u64 || tail % 8 != 0 {
            return Err(self.fail(format!(
                "the writer's tail {tail} is invalid (head {}, ring of {} bytes)",
                self.head, self.mem.size
            )));
        }
        if tail > self.tail_cache {
            self.touch_ahead(tail);
        }
        self.tail_cache = tail;
        self.count_limit = self.published_count.saturating_add(self.hwm);
        Ok(())
    }

    /// Starts loading the cache lines of what the writer just published, up to
    /// [`TOUCH_AHEAD`] bytes past the head, all at once: they are still in the writer's
    /// core, and parsing then copying a message would otherwise fetch them one after
    /// the other (the first line's headers must be read before the copy begins).
    #[inline]
    fn touch_ahead(&self, tail: u64) {
        let end = tail.min(self.head + TOUCH_AHEAD);
        // The first line is loaded by the parse right away; the next ones start here.
        let mut at = (self.head & !63) + 64;
        while at < end {
            let off = (at & self.mem.mask()) as usize;
            std::hint::black_box(self.mem.word(off).load(Ordering::Relaxed));
            at += 64;
        }
    }

    /// Whether a message is waiting (reloads the writer's position when needed).
    #[inline]
    pub fn has_data(&mut self) -> Result<bool, Error> {
        if let Some(why) = &self.failed {
            return Err(Error::Protocol(why.clone()));
        }
        if self.head == self.tail_cache {
            self.refresh_tail()?;
        }
        Ok(self.head != self.tail_cache)
    }

    /// Parses and validates the next record (after padding) or in-ring message: a
    /// message's frames go into `self.frames`.
    fn parse(&mut self) -> Result<Option<Parsed>, Error> {
        if !self.has_data()? {
            return Ok(None);
        }
        self.frames.clear();
        if self.assembly.is_none() && self.consumed >= self.count_limit {
            let why = format!(
                "the writer wrote more than our receive HWM of {} messages ahead of what we had released",
                self.hwm
            );
            return Err(self.fail(why));
        }
        let n = self.mem.size as u64;
        let mut pos = self.head;
        // Bounded: every step advances `pos` by at least 8 and `pos` never passes
        // `tail_cache <= head + n`.
        loop {
            if pos >= self.tail_cache {
                return Err(self.fail(format!(
                    "message at {} is not terminated before the tail {}",
                    self.head, self.tail_cache
                )));
            }
            let off = (pos & self.mem.mask()) as usize;
            let room = n - off as u64;
            let word = self.mem.word(off).load(Ordering::Relaxed);
            let len = word & 0xffff_ffff;
            let flags = (word >> 32) & 0xffff;
            if word >> 48 != RECORD_MARKER || flags & !KNOWN_FLAGS != 0 {
                return Err(self.fail(format!("bad record header {word:#018x} at {pos}")));
            }
            if flags & FLAG_PAD != 0 {
                if flags != FLAG_PAD
                    || len + RECORD_HEADER as u64 != room
                    || pos.saturating_add(room) > self.tail_cache
                {
                    return Err(self.fail(format!("bad padding record {word:#018x} at {pos}")));
                }
                pos += room;
                continue;
            }
            let piece = flags & FLAG_PIECE != 0;
            if !piece && flags & (FLAG_FIRST | FLAG_FRAME) != 0 {
                return Err(self.fail(format!("bad record header {word:#018x} at {pos}")));
            }
            // A message is either frames in the ring or pieces, never both.
            if piece != self.assembly.is_some() && !(piece && flags & FLAG_FIRST != 0)
                || piece && !self.frames.is_empty()
            {
                return Err(self.fail(format!(
                    "record {word:#018x} at {pos} breaks the message in progress"
                )));
            }
            let rec = ((len + 7) & !7) + RECORD_HEADER as u64;
            if rec > room || pos.saturating_add(rec) > self.tail_cache {
                return Err(self.fail(format!(
                    "frame of {len} bytes at {pos} runs past the ring's end or the tail {}",
                    self.tail_cache
                )));
            }
            if piece {
                return Ok(Some(Parsed::Piece(word, off + RECORD_HEADER, pos + rec)));
            }
            if self.max_frame.is_some_and(|m| len > m) {
                return Err(self.fail(format!(
                    "frame of {len} bytes at {pos} is larger than the maximum message size"
                )));
            }
            self.frames.push((off + RECORD_HEADER, len as usize));
            pos += rec;
            if flags & FLAG_MORE == 0 {
                return Ok(Some(Parsed::Message(pos)));
            }
        }
    }

    /// Reads little-endian word `i` of a piece's payload at `off`.
    fn piece_word(&self, off: usize, i: usize) -> u64 {
        u64::from_le(self.mem.word(off + 8 * i).load(Ordering::Relaxed))
    }

    /// Takes a validated piece record (header `word`, payload at `off`) into the
    /// assembly; returns the message if it was the last piece. Everything the peer
    /// announced is checked against what it sends and against `max_frame`.
    fn absorb(&mut self, word: u64, off: usize) -> Result<Option<Message>, Error> {
        let len = (word & 0xffff_ffff) as usize;
        let flags = (word >> 32) & 0xffff;
        let first = flags & FLAG_FIRST != 0;
        let frame = flags & FLAG_FRAME != 0;
        let sub = if first { 16 } else { 0 } + if frame { 8 } else { 0 };
        if first && (!frame || self.assembly.is_some()) || len < sub || !frame && len == sub {
            return Err(self.fail(format!("bad piece record {word:#018x}")));
        }
        let mut at = off;
        if first {
            let (total, count) = (self.piece_word(at, 0), self.piece_word(at, 1));
            at += 16;
            if count == 0 {
                return Err(self.fail("a message in pieces announced no frame".into()));
            }
            self.assembly = Some(Assembly {
                total,
                count,
                announced: 0,
                done: Message::new(),
                cur: BytesMut::new(),
                cur_len: 0,
            });
        }
        if frame {
            let flen = self.piece_word(at, 0);
            at += 8;
            let max = self.max_frame;
            let Some(a) = self.assembly.as_mut() else {
                return Err(self.fail("a piece outside a message".into()));
            };
            let why = if !first && a.cur.len() != a.cur_len {
                Some(format!(
                    "a frame started after {} of the previous frame's {} bytes",
                    a.cur.len(),
                    a.cur_len
                ))
            } else if a.done.len() as u64 + u64::from(!first) >= a.count {
                Some(format!("more frames than the {} announced", a.count))
            } else if a.announced.saturating_add(flen) > a.total {
                Some(format!(
                    "frames of more than the {} bytes announced",
                    a.total
                ))
            } else if max.is_some_and(|m| flen > m) {
                Some(format!(
                    "a frame of {flen} bytes is larger than the maximum message size"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(self.fail(format!("message in pieces: {why}")));
            }
            let prev = (!first).then(|| std::mem::take(&mut a.cur));
            a.announced += flen;
            // `flen <= total`, which fits a usize unless this is a 32-bit target and a
            // hostile total: then the capacity is capped all the same.
            a.cur_len = usize::try_from(flen).unwrap_or(usize::MAX);
            let cur_len = a.cur_len;
            if let Some(prev) = prev {
                let f = self.finish_frame(prev);
                if let Some(a) = self.assembly.as_mut() {
                    a.done.push(f);
                }
            }
            // The last large message's buffer if it is free and of the right size (it
            // is ours already: a liar gains nothing), a new one of at most
            // ASSEMBLY_AHEAD otherwise.
            let cur = self
                .reuse_large(cur_len)
                .unwrap_or_else(|| BytesMut::with_capacity(cur_len.min(ASSEMBLY_AHEAD)));
            if let Some(a) = self.assembly.as_mut() {
                a.cur = cur;
            }
        }
        let data = len - sub;
        let Some(a) = self.assembly.as_mut() else {
            return Err(self.fail("a piece outside a message".into()));
        };
        if data > a.cur_len - a.cur.len() {
            let why = format!(
                "message in pieces: {data} more bytes for a frame of {} with {} already",
                a.cur_len,
                a.cur.len()
            );
            return Err(self.fail(why));
        }
        let room = a.cur.capacity() - a.cur.len();
        if data > room {
            // Grow at most to the announced length, and by at most as much as arrived
            // so far (or ASSEMBLY_AHEAD): a liar costs at most twice what it sent.
            let want = (a.cur_len - a.cur.len()).min(a.cur.len().max(ASSEMBLY_AHEAD));
            a.cur.reserve(want.max(data));
        }
        copy_words(&self.mem, &mut a.cur, at, data);
        if flags & FLAG_MORE != 0 {
            return Ok(None);
        }
        // The last piece: everything announced must be there.
        let complete = a.cur.len() == a.cur_len
            && a.done.len() as u64 + 1 == a.count
            && a.announced == a.total;
        if !complete {
            let why = format!(
                "message in pieces ended short of what it announced ({} frames, {} bytes)",
                a.count, a.total
            );
            return Err(self.fail(why));
        }
        let Some(mut a) = self.assembly.take() else {
            return Err(self.fail("a piece outside a message".into()));
        };
        let f = self.finish_frame(std::mem::take(&mut a.cur));
        a.done.push(f);
        Ok(Some(a.done))
    }

    /// The next message: in the ring, or assembled from the pieces there (released as
    /// they are read). `Ok(None)`: nothing complete yet.
    fn next(&mut self) -> Result<Option<Next>, Error> {
        // Bounded: every turn consumes a record the writer published; a message in
        // pieces ends (or fails) after at most its announced bytes and frames.
        loop {
            match self.parse()? {
                None => return Ok(None),
                Some(Parsed::Message(end)) => return Ok(Some(Next::InRing(end))),
                Some(Parsed::Piece(word, off, end)) => {
                    let done = self.absorb(word, off)?;
                    self.consumed += u64::from(done.is_some());
                    self.release(end);
                    if let Some(m) = done {
                        return Ok(Some(Next::Assembled(m)));
                    }
                }
            }
        }
    }

    /// Copies `len` bytes at data offset `off` (8-aligned; the record's padding makes
    /// whole words readable) out with atomic word loads.
    ///
    /// Small frames are copied into the arena ([`ARENA_SIZE`]) and handed out as slices
    /// of it: one allocation serves many frames, and the arena's memory is reused once
    /// every frame cut from it has been dropped. A frame of [`ARENA_MAX_FRAME`] bytes or
    /// more gets a buffer of its own, so one small message kept by the application never
    /// holds more than an arena's worth of memory, and a large one none extra.
    fn copy_out(&mut self, off: usize, len: usize) -> Bytes {
        if len == 0 {
            return Bytes::new();
        }
        if len >= ARENA_MAX_FRAME {
            // `try_recv` made room for all the message's large frames in `big`.
            copy_words(&self.mem, &mut self.big, off, len);
            return self.big.split().freeze();
        }
        // The arena holds nothing between calls (every copy is split off), so its
        // capacity is the room left; `reserve` takes the buffer back when no frame of
        // it is alive any more, and allocates a new one otherwise.
        if self.arena.capacity() < len {
            self.arena.reserve(ARENA_SIZE);
        }
        copy_words(&self.mem, &mut self.arena, off, len);
        self.arena.split().freeze()
    }

    /// The buffer of the last large message with room for `len` bytes, if the
    /// application has dropped everything cut from it and it is at most four times
    /// `len` (so a message never keeps a much larger buffer alive); the reader keeps
    /// a handle, to take it back again next time.
    fn reuse_large(&mut self, len: usize) -> Option<BytesMut> {
        if len > self.big_cap || len.saturating_mul(4) < self.big_cap {
            return None;
        }
        // `try_reclaim` takes the whole allocation back, without allocating, if
        // nothing cut from it is alive any more.
        if self.big.capacity() < len && !self.big.try_reclaim(len) {
            return None;
        }
        Some(self.big.split_off(0))
    }

    /// Freezes a frame put together from pieces, keeping a handle on its buffer (see
    /// `reuse_large`).
    fn finish_frame(&mut self, mut cur: BytesMut) -> Bytes {
        if cur.len() >= ARENA_MAX_FRAME {
            self.big_cap = cur.capacity();
            self.big = cur.split_off(cur.len());
        }
        cur.freeze()
    }

    /// Makes room in `big` for `total` bytes of large frames: the last large message's
    /// buffer if it can be reused (see `reuse_large`), a new one otherwise.
    fn large_buffer(&mut self, total: usize) {
        if self.big.capacity() >= total && total.saturating_mul(4) >= self.big_cap {
            return;
        }
        match self.reuse_large(total) {
            Some(b) => self.big = b,
            None => {
                self.big = BytesMut::with_capacity(total);
                self.big_cap = total;
            }
        }
    }

    /// Publishes our progress and, if the writer waits for space, rings its doorbell.
    ///
    /// Per batch: while we are behind the writer (the tail we know of is further on)
    /// and have consumed less than an eighth of the ring and less than half our HWM of
    /// messages since we last published, the writer is not shown our progress yet: one release store, fence and look at
    /// `writer_waiting` per batch instead of per message. We always publish on
    /// reaching the tail we know of, which comes before `has_data` can find the ring
    /// empty, so a reader never waits (or parks) with progress the writer has not seen.
    fn release(&mut self, end: u64) {
        self.head = end;
        if end != self.tail_cache
            && end - self.published < self.mem.size as u64 / 8
            && self.consumed - self.published_count < self.count_batch
        {
            return;
        }
        self.published = end;
        self.published_count = self.consumed;
        let m = &self.mem;
        if space::publish(
            m.released(),
            m.head(),
            m.writer_waiting(),
            self.consumed,
            end,
        ) {
            if let Some(bell) = &self.peer_bell {
                bell.notify();
            }
        }
    }

    /// Takes the next message out of the ring (copying it), or `Ok(None)` if there is
    /// none. A corrupt ring is [`Error::Protocol`], and stays so.
    pub fn try_recv(&mut self) -> Result<Option<Message>, Error> {
        let end = match self.next()? {
            None => return Ok(None),
            Some(Next::Assembled(m)) => return Ok(Some(m)),
            Some(Next::InRing(end)) => end,
        };
        let large: usize = (self.frames.iter())
            .map(|&(_, len)| if len >= ARENA_MAX_FRAME { len } else { 0 })
            .sum();
        if large > 0 {
            self.large_buffer(large);
        }
        let mut msg = Message::new();
        for i in 0..self.frames.len() {
            let (off, len) = self.frames[i];
            msg.push(self.copy_out(off, len));
        }
        self.consumed += 1;
        self.release(end);
        Ok(Some(msg))
    }

    /// Borrows the next message in place (no copy); the space is released when the
    /// guard is dropped.
    pub fn recv_in_place(&mut self) -> Result<Option<ReadGuard<'_>>, Error> {
        match self.next()? {
            None => Ok(None),
            Some(Next::InRing(end)) => Ok(Some(ReadGuard {
                reader: self,
                end,
                assembled: None,
            })),
            Some(Next::Assembled(m)) => {
                let end = self.head;
                Ok(Some(ReadGuard {
                    reader: self,
                    end,
                    assembled: Some(m),
                }))
            }
        }
    }
}

/// Appends the `len` bytes at data offset `off` of `mem` to `out` (`off` is 8-aligned,
/// `[off, off + len)` is inside the data area and validated by the caller, and the
/// record's padding makes whole words readable). The bytes go straight into `out`'s
/// spare capacity (nothing is zeroed first), in one pass.
fn copy_words(mem: &RingMem, out: &mut BytesMut, off: usize, len: usize) {
    debug_assert!(off % 8 == 0 && off + len <= mem.size);
    if len == 0 {
        return;
    }
    out.reserve(len);
    let at = out.len();
    let dst = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
    copy_raw(mem, dst, off, len);
    // SAFETY: `copy_raw` initialized the `len` bytes after `at`, inside the capacity
    // reserved above.
    unsafe { out.set_len(at + len) };
}

/// Copies `[off, off + len)` of the data area (validated by the caller) to `dst`,
/// which has room for `len` bytes, with the CPU's string copy (`rep movsb`): as fast
/// as `memcpy` (a word loop costs about 7 % more at 64 KiB, measured). The peer's
/// memory is read by the instruction, once, as the hardware reads it: a hostile peer
/// writing it meanwhile changes only the bytes we get (any byte is a valid `u8`),
/// never where they go.
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn copy_raw(mem: &RingMem, dst: *mut u8, off: usize, len: usize) {
    let off = off & (mem.size - 1);
    let len = len.min(mem.size - off);
    // SAFETY: after the clamps `[off, off + len)` is inside the data area, which lives
    // as long as `mem`; `dst` has room for `len` bytes (caller) and does not overlap
    // the ring (it is our own memory). `rep movsb` reads and writes only those ranges;
    // the direction flag is clear on entry to inline assembly (Rust's rules), so it
    // copies forwards; it touches no stack.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rsi") mem.data.add(off).cast_const() => _,
            inout("rdi") dst => _,
            options(nostack, preserves_flags),
        );
    }
}

/// Copies `[off, off + len)` of the data area to `dst` one atomic word load at a time
/// (the portable path, and the one Miri checks).
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
fn copy_raw(mem: &RingMem, dst: *mut u8, off: usize, len: usize) {
    let mut done = 0;
    while done < len {
        let w = mem.word(off + done).load(Ordering::Relaxed).to_ne_bytes();
        let k = (len - done).min(8);
        // SAFETY: `dst` has room for `len` bytes and `done + k <= len`; `w` is a local.
        unsafe { std::ptr::copy_nonoverlapping(w.as_ptr(), dst.add(done), k) };
        done += k;
    }
}

/// A message read in place, from [`RingReader::recv_in_place`]. Its frames are slices
/// of the ring; the writer may reuse the space once the guard is dropped. (A message
/// that came in pieces was put together in memory of the reader's: its frames are
/// slices of that.)
#[derive(Debug)]
pub struct ReadGuard<'a> {
    reader: &'a mut RingReader,
    end: u64,
    assembled: Option<Message>,
}

impl ReadGuard<'_> {
    /// Number of frames.
    #[inline]
    pub fn len(&self) -> usize {
        match &self.assembled {
            Some(m) => m.frames().len(),
            None => self.reader.frames.len(),
        }
    }

    /// Whether the message has no frames (never true: a message has at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frame `i`.
    #[inline]
    pub fn frame(&self, i: usize) -> Option<&[u8]> {
        if let Some(m) = &self.assembled {
            return m.frames().get(i).map(|f| &f[..]);
        }
        let &(off, len) = self.reader.frames.get(i)?;
        // SAFETY: (off, len) was validated in `parse`: inside the data area and before
        // the tail, so the writer does not write it until we release it (a hostile one
        // can only change the bytes). The region lives as long as the reader we borrow.
        Some(unsafe { std::slice::from_raw_parts(self.reader.mem.data.add(off), len) })
    }

    /// The frames, in order.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).filter_map(|i| self.frame(i))
    }

    /// Copies the message out (a message that came in pieces is not copied again).
    pub fn to_message(&self) -> Message {
        if let Some(m) = &self.assembled {
            return m.clone();
        }
        Message::from_frames(self.frames().map(Bytes::copy_from_slice))
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if self.assembled.is_none() {
            // A message in pieces was counted when its last piece came.
            self.reader.consumed += 1;
        }
        self.reader.release(self.end);
    }
}

#[cfg(test)]
mod tests {
    use super::super::segment::{fuzz_reader, heap_ring};
    use super::*;

    /// `n`, or `small` under Miri (which runs these tests some thousand times slower;
    /// `scripts/concurrency`).
    fn iterations(n: usize, small: usize) -> usize {
        if cfg!(miri) { small } else { n }
    }

    fn msg(frames: &[&[u8]]) -> Message {
        Message::from_frames(frames.iter().map(|f| Bytes::copy_from_slice(f)))
    }

    #[test]
    fn round_trip_single_and_multi_frame() {
        let (mut w, mut r) = heap_ring(4096);
        assert!(r.try_recv().unwrap().is_none());
        w.try_send(&msg(&[b"hello"])).unwrap();
        w.try_send(&msg(&[b"", b"a", b"0123456789abcdef0"]))
            .unwrap();
        assert_eq!(r.try_recv().unwrap().unwrap(), msg(&[b"hello"]));
        assert_eq!(
            r.try_recv().unwrap().unwrap(),
            msg(&[b"", b"a", b"0123456789abcdef0"])
        );
        assert!(r.try_recv().unwrap().is_none());
    }

    #[test]
    fn fills_up_then_drains_across_wraparound() {
        let (mut w, mut r) = heap_ring(4096);
        let mut sent = 0u32;
        let mut recvd = 0u32;
        // Odd sizes make records land everywhere, forcing PAD records at the end.
        let rounds = iterations(200, 30);
        for round in 0..rounds {
            loop {
                let len = 1 + (sent as usize * 37) % 700;
                let body = vec![(sent % 251) as u8; len];
                let mut m = Message::from(body);
                m.push(Bytes::copy_from_slice(&sent.to_le_bytes()));
                match w.try_send(&m) {
                    Ok(()) => sent += 1,
                    Err(ShmSendError::Full) => break,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            let take = if round % 3 == 0 { usize::MAX } else { 2 };
            let mut k = 0;
            while k < take {
                let Some(m) = r.try_recv().unwrap() else {
                    break;
                };
                let len = 1 + (recvd as usize * 37) % 700;
                assert_eq!(m.frames()[0].len(), len);
                assert!(m.frames()[0].iter().all(|b| *b == (recvd % 251) as u8));
                assert_eq!(m.frames()[1][..], recvd.to_le_bytes());
                recvd += 1;
                k += 1;
            }
        }
        while r.try_recv().unwrap().is_some() {
            recvd += 1;
        }
        assert_eq!(sent, recvd);
        assert!(
            sent as usize > 2 * rounds,
            "the ring wrapped many times: {sent}"
        );
    }

    #[test]
    fn received_frames_outlive_ring_and_arena_reuse() {
        // Frames handed out by `try_recv` are slices of shared arena buffers: keeping
        // some while the ring wraps and the arena is refilled (and reused once its
        // frames are gone) must never change what a kept frame holds.
        // Every 50th message has a frame above ARENA_MAX_FRAME (a buffer of its own).
        let (mut w, mut r) = heap_ring(8192);
        let body = |i: u32| -> Vec<u8> {
            let len = (i as usize * 13) % 300 + usize::from(i % 50 == 0) * 2500;
            (0..len).map(|k| (i as usize + k) as u8).collect()
        };
        let n = iterations(20_000, 1_100) as u32;
        let mut kept = Vec::new();
        let (mut sent, mut got) = (0u32, 0u32);
        while got < n {
            while sent < n {
                let m = Message::from_frames([body(sent), sent.to_le_bytes().to_vec()]);
                match w.try_send(&m) {
                    Ok(()) => sent += 1,
                    Err(ShmSendError::Full) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            while let Some(m) = r.try_recv().unwrap() {
                assert_eq!(m.frames()[0], body(got));
                assert_eq!(m.frames()[1][..], got.to_le_bytes());
                // Keep some in even thousands only: in odd ones every buffer's frames
                // are dropped at once, so the arena takes its buffer back.
                if got % 7 == 0 && (got / 1000) % 2 == 0 {
                    kept.push((got, m));
                }
                got += 1;
            }
        }
        assert_eq!(
            kept.len(),
            (0..n).filter(|i| i % 7 == 0 && (i / 1000) % 2 == 0).count()
        );
        for (i, m) in &kept {
            assert_eq!(m.frames()[0], body(*i), "message {i} changed");
            assert_eq!(m.frames()[1][..], i.to_le_bytes());
        }
    }

    #[test]
    fn large_frames_reuse_the_last_buffer_once_it_is_dropped() {
        // In the ring (ring of 16 KiB: 5000 bytes fit) and in pieces (20000 do not).
        for (len, ring) in [(5000usize, 16 * 1024), (20_000, 16 * 1024)] {
            let (mut w, mut r) = heap_ring(ring);
            let body = |seed: u8| -> Vec<u8> { (0..len).map(|k| k as u8 ^ seed).collect() };
            let recv = |w: &mut RingWriter, r: &mut RingReader, seed: u8| -> Message {
                w.try_send(&Message::from(body(seed))).unwrap();
                loop {
                    if let Some(m) = r.try_recv().unwrap() {
                        assert_eq!(m.frames()[0], body(seed), "{len} bytes, seed {seed}");
                        return m;
                    }
                    assert!(!w.continue_pieces().unwrap() || r.has_data().unwrap());
                }
            };
            let first = recv(&mut w, &mut r, 1);
            let at = first.frames()[0].as_ptr();
            drop(first);
            // Dropped: the next message lands in the same memory, no new buffer.
            let second = recv(&mut w, &mut r, 2);
            assert_eq!(second.frames()[0].as_ptr(), at, "{len} bytes: not reused");
            // Kept: the next one gets a buffer of its own and the kept one is intact.
            let third = recv(&mut w, &mut r, 3);
            let kept = third.frames()[0].as_ptr();
            assert_ne!(kept, at, "{len} bytes: reused while alive");
            assert_eq!(second.frames()[0], body(2));
            // A much smaller large frame does not keep the big buffer busy: it is not
            // cut from the buffer the reader keeps now (the third's; the first one's
            // went back to the allocator with `second`, which may hand it out again).
            drop((second, third));
            w.try_send(&Message::from(vec![9u8; ARENA_MAX_FRAME]))
                .unwrap();
            let small = r.try_recv().unwrap().unwrap();
            assert_eq!(small.frames()[0][..], [9u8; ARENA_MAX_FRAME][..]);
            if len >= 4 * ARENA_MAX_FRAME {
                assert!(
                    small.frames()[0].as_ptr() != kept,
                    "{len}: a small frame pins it"
                );
            }
        }
    }

    #[test]
    fn head_is_published_per_batch_and_always_once_drained() {
        let ring = 8192u64;
        let (mut w, mut r) = heap_ring(ring as usize);
        let m = Message::from(vec![3u8; 56]); // 64-byte records
        let mut sent = 0u64;
        while w.try_send(&m).is_ok() {
            sent += 1;
        }
        assert_eq!(sent, ring / 64);
        assert_eq!(w.free_space().unwrap(), 0);
        // Behind the writer: progress is shown an eighth of the ring at a time.
        let mut got = 0u64;
        while got * 64 < ring / 2 {
            assert!(r.try_recv().unwrap().is_some());
            got += 1;
            let free = w.free_space().unwrap() as u64;
            if got == 1 {
                assert_eq!(free, 0, "published per message while behind");
            }
            assert!(free <= got * 64, "more space than consumed: {free}");
            assert!(
                got * 64 - free < ring / 8,
                "{} consumed, {free} shown",
                got * 64
            );
        }
        // Drained: everything is shown before the reader can find the ring empty.
        while r.try_recv().unwrap().is_some() {
            got += 1;
        }
        assert_eq!(got, sent);
        assert_eq!(w.free_space().unwrap() as u64, ring);
        // Caught up with each message (a ping-pong): each one is shown at once.
        for _ in 0..3 {
            w.try_send(&m).unwrap();
            assert!(r.try_recv().unwrap().is_some());
            assert_eq!(w.free_space().unwrap() as u64, ring);
        }
    }

    #[test]
    fn too_large_is_an_error_not_a_hang() {
        let (mut w, mut r) = heap_ring(4096);
        let limit = w.max_message_size();
        assert_eq!(limit, 2040);
        // A message at the limit fits even after the ring has been used at an odd offset.
        w.try_send(&msg(&[&[1u8; 24]])).unwrap();
        r.try_recv().unwrap().unwrap();
        w.try_send(&Message::from(vec![7u8; limit])).unwrap();
        assert_eq!(r.try_recv().unwrap().unwrap().size(), limit);
        // One byte more goes in pieces (see `messages_in_pieces_*`).
        w.try_send(&Message::from(vec![9u8; limit + 1])).unwrap();
        let mut got = None;
        while got.is_none() {
            got = r.try_recv().unwrap();
            w.continue_pieces().unwrap();
        }
        assert_eq!(got.unwrap(), Message::from(vec![9u8; limit + 1]));
        assert!(!w.has_unfinished());
        assert!(matches!(
            w.reserve(limit + 1),
            Err(ShmSendError::TooLarge { .. })
        ));
        assert_eq!(w.try_send(&Message::new()), Err(ShmSendError::Empty));
        // Every position in the ring: a maximal message always fits once drained.
        for i in 0..iterations(600, 100) {
            w.try_send(&Message::from(vec![0u8; i % 40])).unwrap();
            r.try_recv().unwrap().unwrap();
            w.try_send(&Message::from(vec![3u8; limit])).unwrap();
            r.try_recv().unwrap().unwrap();
        }
    }

    /// A message of `sizes.len()` frames, frame `i` of `sizes[i]` bytes, each byte a
    /// function of the frame and its index.
    fn patterned(sizes: &[usize], seed: u8) -> Message {
        Message::from_frames(sizes.iter().enumerate().map(|(i, &n)| {
            (0..n)
                .map(|k| (k as u8).wrapping_mul(31) ^ (i as u8) ^ seed)
                .collect::<Vec<u8>>()
        }))
    }

    /// Sends every message of `msgs` through a ring of `ring` bytes, the writer and the
    /// reader taking turns (`in_place` every other message), and checks what arrives.
    fn through_pieces(ring: usize, msgs: &[Message]) {
        let (mut w, mut r) = heap_ring(ring);
        let (mut sent, mut got) = (0, 0);
        let mut turns = 0usize;
        while got < msgs.len() {
            turns += 1;
            assert!(turns < 1_000_000, "no progress");
            w.continue_pieces().unwrap();
            if sent < msgs.len() {
                match w.try_send(&msgs[sent]) {
                    Ok(()) => sent += 1,
                    Err(ShmSendError::Full) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            let m = if got % 2 == 0 {
                r.try_recv().unwrap()
            } else {
                r.recv_in_place().unwrap().map(|g| g.to_message())
            };
            if let Some(m) = m {
                assert_eq!(m, msgs[got], "message {got}");
                got += 1;
            }
        }
        assert!(!w.has_unfinished());
        assert!(r.try_recv().unwrap().is_none());
        assert_eq!(w.free_space().unwrap(), ring);
    }

    #[test]
    fn messages_in_pieces_arrive_whole_and_in_order() {
        // 4 KiB ring: pieces of at most 1016 bytes, across many wrap-arounds, with
        // small messages before and after, empty frames, and a frame that fills a
        // piece exactly.
        let big = iterations(100_000, 9_000);
        through_pieces(
            4096,
            &[
                msg(&[b"before"]),
                patterned(&[big], 1),
                msg(&[b"between"]),
                patterned(&[0, 3000, 0, 1016 - 24, 1016 - 8, 5, big / 3], 2),
                patterned(&[2041], 3),
                patterned(&[0; 300], 4),
                msg(&[b"after", b"x"]),
            ],
        );
    }

    #[test]
    fn nothing_overtakes_a_message_in_pieces() {
        let (mut w, mut r) = heap_ring(4096);
        let big = patterned(&[20_000], 7);
        w.try_send(&big).unwrap();
        assert!(w.has_unfinished());
        // The ring is full of pieces: small messages and grants wait their turn.
        assert_eq!(w.try_send(&msg(&[b"small"])), Err(ShmSendError::Full));
        assert!(matches!(w.reserve(5), Err(ShmSendError::Full)));
        let mut got = None;
        while got.is_none() {
            got = r.try_recv().unwrap();
            if w.has_unfinished() {
                w.continue_pieces().unwrap();
            }
        }
        assert_eq!(got.unwrap(), big);
        w.try_send(&msg(&[b"small"])).unwrap();
        assert_eq!(r.try_recv().unwrap().unwrap(), msg(&[b"small"]));
        // A ring with no room for the first piece: Full, nothing written.
        w.try_send(&Message::from(vec![0u8; 2040])).unwrap();
        w.try_send(&Message::from(vec![0u8; 1500])).unwrap();
        let free = w.free_space().unwrap();
        assert_eq!(w.try_send(&big), Err(ShmSendError::Full));
        assert!(!w.has_unfinished());
        assert_eq!(w.free_space().unwrap(), free);
    }

    /// Writes records into ring 0 of a 4 KiB heap segment as a hostile peer would:
    /// each is (flags, payload words); then publishes them all and reads with a
    /// maximum frame size of `max`. Returns what the reader said at the end.
    fn hostile(records: &[(u64, Vec<u64>)], max: Option<u64>) -> Result<Option<Message>, Error> {
        let seg = super::super::segment::Segment::on_heap(4096);
        let mem = seg.ring(0);
        let mut at = 0usize;
        for (flags, words) in records {
            mem.word(at)
                .store(header_word(words.len() * 8, *flags), Ordering::Relaxed);
            for (i, v) in words.iter().enumerate() {
                mem.word(at + 8 + 8 * i).store(v.to_le(), Ordering::Relaxed);
            }
            at += 8 + 8 * words.len();
        }
        mem.tail().store(at as u64, Ordering::Relaxed);
        let mut r = RingReader::new(seg.ring(0), None);
        r.set_max_frame(max);
        let out = r.try_recv();
        if out.is_err() {
            assert!(matches!(r.try_recv(), Err(Error::Protocol(_))), "sticks");
        }
        out
    }

    #[test]
    fn lying_pieces_are_protocol_errors() {
        const P: u64 = FLAG_PIECE;
        const F: u64 = FLAG_FIRST | FLAG_FRAME;
        const M: u64 = FLAG_MORE;
        const FR: u64 = FLAG_FRAME;
        // A well-formed message of two frames (8 and 16 bytes) for reference.
        let good = vec![
            (P | F | M, vec![24, 2, 8, 1]),
            (P | FR | M, vec![16, 2]),
            (P, vec![3]),
        ];
        let m = hostile(&good, None).unwrap().unwrap();
        assert_eq!(m.frames().len(), 2);
        assert_eq!(m.size(), 24);
        // The same message with a limit below its largest frame.
        assert!(matches!(hostile(&good, Some(15)), Err(Error::Protocol(_))));
        assert!(hostile(&good, Some(16)).unwrap().is_some());
        let u = u64::MAX;
        for (what, records) in [
            (
                "a huge announcement, then nothing more",
                vec![(P | F | M, vec![u, u, u - 1, 7])],
            ),
            (
                "a frame longer than the total",
                vec![(P | F | M, vec![8, 1, 16, 1])],
            ),
            (
                "more bytes than the frame's length",
                vec![(P | F, vec![8, 1, 8, 1, 2])],
            ),
            ("ends short of the frame", vec![(P | F, vec![16, 1, 16, 1])]),
            ("ends short of the frames", vec![(P | F, vec![8, 2, 8, 1])]),
            ("ends short of the total", vec![(P | F, vec![16, 1, 8, 1])]),
            (
                "more frames than announced",
                vec![(P | F | M, vec![16, 1, 8, 1]), (P | FR, vec![8, 1])],
            ),
            (
                "a frame before the last is complete",
                vec![(P | F | M, vec![16, 2, 8]), (P | FR, vec![8, 1])],
            ),
            ("no frame announced", vec![(P | F, vec![0, 0, 0])]),
            (
                "FIRST without FRAME",
                vec![(P | FLAG_FIRST, vec![8, 1, 8, 1])],
            ),
            ("too short for its announcement", vec![(P | F, vec![8, 1])]),
            ("a piece without a first piece", vec![(P, vec![1])]),
            (
                "a continuation carrying nothing",
                vec![(P | F | M, vec![8, 1, 8]), (P | M, vec![])],
            ),
            (
                "a first piece in the middle",
                vec![(P | F | M, vec![8, 1, 8]), (P | F, vec![8, 1, 8, 1])],
            ),
            (
                "an in-ring frame in the middle",
                vec![(P | F | M, vec![8, 1, 8]), (0, vec![1])],
            ),
            (
                "a piece after an in-ring frame with MORE",
                vec![(M, vec![1]), (P | F, vec![8, 1, 8, 1])],
            ),
            ("FRAME without PIECE", vec![(FR, vec![1])]),
            ("a piece with PAD", vec![(P | FLAG_PAD, vec![1])]),
        ] {
            match hostile(&records, None) {
                Err(Error::Protocol(_)) => {}
                // An unfinished message that lies in its next piece only: it waits,
                // holding no more than what the peer sent (checked below).
                Ok(None) if what.starts_with("a huge") => {}
                other => panic!("{what}: {other:?}"),
            }
        }
        // What a huge announcement costs: the assembly's buffer is capped.
        let seg = super::super::segment::Segment::on_heap(4096);
        let mem = seg.ring(0);
        mem.word(0)
            .store(header_word(32, P | F | M), Ordering::Relaxed);
        for (i, v) in [u, 1, u - 8, 5].into_iter().enumerate() {
            mem.word(8 + 8 * i).store(v.to_le(), Ordering::Relaxed);
        }
        mem.tail().store(40, Ordering::Relaxed);
        let mut r = RingReader::new(seg.ring(0), None);
        assert!(r.try_recv().unwrap().is_none());
        let a = r.assembly.as_ref().unwrap();
        assert!(
            a.cur.capacity() <= ASSEMBLY_AHEAD + 64,
            "{}",
            a.cur.capacity()
        );
        // With a maximum size, the announcement alone is refused.
        let mut r = RingReader::new(seg.ring(0), None);
        r.set_max_frame(Some(1 << 30));
        assert!(matches!(r.try_recv(), Err(Error::Protocol(_))));
    }

    #[test]
    fn zero_copy_write_and_read() {
        let (mut w, mut r) = heap_ring(4096);
        let mut g = w.reserve(5).unwrap();
        g.as_mut_slice().copy_from_slice(b"first");
        g.commit(true);
        assert!(!r.has_data().unwrap(), "an unfinished message is invisible");
        let mut g = w.reserve(3).unwrap();
        g.as_mut_slice().copy_from_slice(b"end");
        g.commit(false);
        {
            let guard = r.recv_in_place().unwrap().unwrap();
            assert_eq!(guard.len(), 2);
            assert_eq!(guard.frame(0).unwrap(), b"first");
            assert_eq!(guard.frame(1).unwrap(), b"end");
            assert_eq!(guard.to_message(), msg(&[b"first", b"end"]));
        }
        assert!(r.try_recv().unwrap().is_none());
        assert_eq!(w.free_space().unwrap(), 4096);
    }

    #[test]
    fn abandoned_grant_leaves_nothing() {
        let (mut w, mut r) = heap_ring(4096);
        let grant = w.reserve(100).unwrap();
        let _ = grant; // abandoned without commit
        w.try_send(&msg(&[b"x"])).unwrap();
        assert_eq!(r.try_recv().unwrap().unwrap(), msg(&[b"x"]));
    }

    /// A hostile peer's write into the ring just written: the tail, or a data word.
    /// (Aligned atomic words, as the ring accesses its memory: Miri does not support
    /// mixed-size atomics, so these tests do not use the segment's byte-wise writes.)
    #[derive(Debug, Clone, Copy)]
    enum Poke {
        Tail(u64),
        Data(usize, u64),
    }

    fn corrupt(poke: Poke) -> Error {
        let seg = super::super::segment::Segment::on_heap(4096);
        let mut w = RingWriter::new(seg.ring(0), None);
        let mut r = RingReader::new(seg.ring(0), None);
        w.try_send(&msg(&[b"hello", b"world"])).unwrap();
        let mem = seg.ring(0);
        match poke {
            Poke::Tail(v) => mem.tail().store(v, Ordering::Relaxed),
            Poke::Data(off, v) => mem.word(off).store(v, Ordering::Relaxed),
        }
        let e = r.try_recv().unwrap_err();
        // The error sticks.
        assert!(matches!(r.try_recv(), Err(Error::Protocol(_))));
        e
    }

    #[test]
    fn corrupt_rings_are_protocol_errors() {
        use Poke::{Data, Tail};
        for poke in [
            Tail(1_000_000),                        // tail beyond the ring
            Tail(12),                               // misaligned
            Data(0, u64::MAX),                      // garbage header
            Data(0, header_word(5000, 0)),          // huge length
            Data(0, header_word(5, FLAG_MORE | 4)), // unknown flag
            Data(0, header_word(5, FLAG_PAD)),      // bad pad
            Data(0, header_word(40, 0)),            // past the tail
            Data(16, header_word(5, FLAG_MORE)),    // unterminated
        ] {
            let e = corrupt(poke);
            assert!(matches!(e, Error::Protocol(_)), "{poke:?} {e}");
        }
    }

    /// Sends `m` until the writer says `Full`; how many went.
    fn fill(w: &mut RingWriter, m: &Message) -> usize {
        let mut n = 0;
        loop {
            match w.try_send(m) {
                Ok(()) => n += 1,
                Err(ShmSendError::Full) => return n,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn receive_hwm_bounds_unread_messages_and_frees_half_at_a_time() {
        let (mut w, mut r) = heap_ring(8192);
        w.set_peer_hwm(4);
        r.set_hwm(4);
        let m = msg(&[b"0123456789"]); // 24-byte records: bytes allow 341
        assert_eq!(fill(&mut w, &m), 4, "the HWM, not the bytes, is the bound");
        // A reader behind the writer shows its count per half HWM: one message read
        // frees nothing yet, two free two.
        assert!(r.try_recv().unwrap().is_some());
        assert_eq!(fill(&mut w, &m), 0);
        assert!(r.try_recv().unwrap().is_some());
        assert_eq!(fill(&mut w, &m), 2);
        // In place, and in pieces: each message counts once.
        assert!(r.recv_in_place().unwrap().is_some());
        while r.try_recv().unwrap().is_some() {}
        assert_eq!(fill(&mut w, &msg(&[b"x"])), 4);
        assert!(r.try_recv().unwrap().is_some());
        assert!(r.try_recv().unwrap().is_some()); // 2 unread, 2 free
        let big = patterned(&[5000, 3000], 7); // larger than the ring holds at once
        w.try_send(&big).unwrap();
        assert!(w.has_unfinished());
        let (mut got, mut turns) = (Vec::new(), 0);
        while got.len() < 3 {
            turns += 1;
            assert!(turns < 10_000, "no progress");
            w.continue_pieces().unwrap();
            if let Some(x) = r.try_recv().unwrap() {
                got.push(x);
            }
        }
        assert_eq!(got[2], big);
        assert!(!w.has_unfinished());
        assert_eq!(fill(&mut w, &m), 4);
        // A zero-copy reservation is a message too.
        while r.try_recv().unwrap().is_some() {}
        for _ in 0..4 {
            let mut g = w.reserve(3).unwrap();
            g.as_mut_slice().copy_from_slice(b"abc");
            g.commit(false);
        }
        assert!(matches!(w.reserve(3), Err(ShmSendError::Full)));
        assert!(matches!(w.try_send(&m), Err(ShmSendError::Full)));
    }

    #[test]
    fn receive_hwm_zero_means_the_bytes_only() {
        let (mut w, mut r) = heap_ring(8192);
        w.set_peer_hwm(0);
        r.set_hwm(0);
        let m = msg(&[b"0123456789"]);
        assert_eq!(fill(&mut w, &m), 8192 / 24);
        let mut got = 0;
        while r.try_recv().unwrap().is_some() {
            got += 1;
        }
        assert_eq!(got, 8192 / 24);
    }

    #[test]
    fn a_writer_past_the_receive_hwm_is_a_protocol_error() {
        // The writer ignores the reader's HWM of 3 and writes 5 at once: the reader
        // takes the 3 it allows and refuses the 4th.
        let (mut w, mut r) = heap_ring(8192);
        r.set_hwm(3);
        for i in 0..5u8 {
            w.try_send(&msg(&[&[i]])).unwrap();
        }
        for i in 0..3u8 {
            assert_eq!(r.try_recv().unwrap().unwrap(), msg(&[&[i]]));
        }
        let e = r.try_recv().unwrap_err();
        assert!(
            matches!(&e, Error::Protocol(why) if why.contains("receive HWM of 3")),
            "{e}"
        );
        assert!(matches!(r.try_recv(), Err(Error::Protocol(_))), "it sticks");
        // An honest writer, the same reader's rules: never an error, whatever the
        // interleaving of reads and writes.
        let (mut w, mut r) = heap_ring(8192);
        w.set_peer_hwm(3);
        r.set_hwm(3);
        let (mut sent, mut got) = (0u32, 0u32);
        let rounds = iterations(2_000, 100) as u32;
        for round in 0..rounds {
            for _ in 0..round % 5 {
                if w.try_send(&msg(&[&sent.to_le_bytes()])).is_ok() {
                    sent += 1;
                }
            }
            for _ in 0..round % 3 {
                if let Some(x) = r.try_recv().unwrap() {
                    assert_eq!(x, msg(&[&got.to_le_bytes()]));
                    got += 1;
                }
                assert!(sent - got <= 3, "{sent} sent, {got} read");
            }
        }
        assert!(got > rounds / 2, "{got} in {rounds} rounds");
    }

    #[test]
    fn writer_rejects_a_corrupt_message_count() {
        let seg = super::super::segment::Segment::on_heap(4096);
        let mut w = RingWriter::new(seg.ring(0), None);
        w.set_peer_hwm(1);
        w.try_send(&msg(&[b"x"])).unwrap();
        seg.ring(0).released().store(7, Ordering::Relaxed); // more than was written
        assert!(matches!(
            w.try_send(&msg(&[b"y"])),
            Err(ShmSendError::Protocol(_))
        ));
    }

    #[test]
    fn writer_rejects_a_corrupt_head() {
        let seg = super::super::segment::Segment::on_heap(4096);
        let mut w = RingWriter::new(seg.ring(0), None);
        w.try_send(&msg(&[b"x"])).unwrap();
        seg.ring(0).head().store(999_999, Ordering::Relaxed);
        assert!(matches!(w.free_space(), Err(ShmSendError::Protocol(_))));
        assert!(matches!(
            w.try_send(&msg(&[b"y"])),
            Err(ShmSendError::Protocol(_))
        ));
    }

    #[test]
    fn fuzz_entry_survives_garbage() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..iterations(2000, 20) {
            let mut buf = Vec::new();
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.extend_from_slice(&x.to_ne_bytes());
            }
            buf[8..16].copy_from_slice(&(x % 5000).to_ne_bytes());
            fuzz_reader(&buf);
        }
        // And a well-formed ring is read completely.
        let mut input = vec![0u8; 16];
        input[8..16].copy_from_slice(&16u64.to_ne_bytes());
        input.extend_from_slice(&header_word(3, 0).to_ne_bytes());
        input.extend_from_slice(b"abc\0\0\0\0\0");
        assert_eq!(fuzz_reader(&input), 3);
        // Three messages for a reader whose HWM is 1 (top bits of `head`): it takes
        // the first and refuses the second.
        let mut input = vec![0u8; 16];
        input[..8].copy_from_slice(&(1u64 << 62).to_ne_bytes());
        input[8..16].copy_from_slice(&48u64.to_ne_bytes());
        for _ in 0..3 {
            input.extend_from_slice(&header_word(3, 0).to_ne_bytes());
            input.extend_from_slice(b"abc\0\0\0\0\0");
        }
        assert_eq!(fuzz_reader(&input), 3);
        input[..8].fill(0); // no HWM: all three
        assert_eq!(fuzz_reader(&input), 9);
    }

    #[test]
    fn fuzz_entry_survives_plausible_pieces() {
        // Records with a valid marker and flags drawn from the piece kinds, small
        // lengths and small announcement words: inputs that get deep into the
        // assembly, where random garbage does not.
        let mut x = 0x0bad_5eed_1234_5678u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let kinds = [
            FLAG_PIECE | FLAG_FIRST | FLAG_FRAME | FLAG_MORE,
            FLAG_PIECE | FLAG_FIRST | FLAG_FRAME,
            FLAG_PIECE | FLAG_FRAME | FLAG_MORE,
            FLAG_PIECE | FLAG_FRAME,
            FLAG_PIECE | FLAG_MORE,
            FLAG_PIECE,
            FLAG_MORE,
            0,
        ];
        let mut complete = 0;
        for _ in 0..iterations(3000, 30) {
            let mut data = Vec::new();
            let records = 1 + next() % 12;
            for _ in 0..records {
                let words = (next() % 6) as usize;
                let flags = kinds[(next() % kinds.len() as u64) as usize];
                data.extend_from_slice(&header_word(words * 8, flags).to_ne_bytes());
                for _ in 0..words {
                    data.extend_from_slice(&(next() % 40).to_le_bytes());
                }
            }
            let mut input = Vec::new();
            // head 0 (low bits: a maximum frame size or none), tail = all of it.
            input.extend_from_slice(&(next() % 8).to_ne_bytes());
            input.extend_from_slice(&(data.len() as u64).to_ne_bytes());
            input.extend_from_slice(&data);
            complete += usize::from(fuzz_reader(&input) > 0);
        }
        assert!(
            cfg!(miri) || complete > 0,
            "some inputs were whole messages"
        );
    }

    #[test]
    fn threads_stream_in_order() {
        let (mut w, mut r) = heap_ring(4096);
        let n = iterations(100_000, 500) as u32;
        let t = std::thread::spawn(move || {
            let mut i = 0u32;
            while i < n {
                match w.try_send(&Message::from(i.to_le_bytes().to_vec())) {
                    Ok(()) => i += 1,
                    Err(ShmSendError::Full) => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let mut next = 0u32;
        while next < n {
            if let Some(m) = r.try_recv().unwrap() {
                assert_eq!(m.frames()[0][..], next.to_le_bytes());
                next += 1;
            }
        }
        t.join().unwrap();
    }
}

/// Loom models of the space hand-off ([`space`]): a writer that found the reader's
/// receive HWM reached (or no room) and a reader that frees it, over loom's atomics;
/// run by `scripts/concurrency` (`--cfg lwmq_loom`).
#[cfg(all(test, lwmq_loom))]
mod loom_tests {
    use super::{SpaceWord, space};
    use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    use crate::sync::{Arc, Condvar, Mutex, thread};

    /// The writer's doorbell as a sticky flag under a lock (its own protocol has
    /// models of its own in `shm::wait`): a ring before the park is not lost.
    #[derive(Default)]
    struct Bell {
        rung: Mutex<bool>,
        cv: Condvar,
    }

    impl Bell {
        fn ring(&self) {
            *self.rung.lock().unwrap() = true;
            self.cv.notify_all();
        }
        fn park(&self) {
            let mut rung = self.rung.lock().unwrap();
            while !*rung {
                rung = self.cv.wait(rung).unwrap();
            }
            *rung = false;
        }
    }

    struct Ctrl<F> {
        head: AtomicU64,
        released: AtomicU64,
        writer_waiting: F,
        bell: Bell,
    }

    /// The writer has written `written` messages of 8 bytes into a ring of
    /// `ring` bytes for a reader with receive HWM `hwm`; the reader consumes `reads`
    /// of them, publishing after each one (`space::publish`), while the writer waits,
    /// as `IpcWriter::write` and the socket's wait do, until both the count and the
    /// room let one more message in. Loom reports a deadlock if a wake-up is lost.
    fn model<F: SpaceWord<Value = u32> + Default + Send + Sync + 'static>(
        written: u64,
        ring: u64,
        hwm: u64,
        reads: u64,
    ) {
        crate::sync::model(move || {
            let c = Arc::new(Ctrl {
                head: AtomicU64::new(0),
                released: AtomicU64::new(0),
                writer_waiting: F::default(),
                bell: Bell::default(),
            });
            let reader = {
                let c = c.clone();
                thread::spawn(move || {
                    for k in 1..=reads {
                        if space::publish(&c.released, &c.head, &c.writer_waiting, k, 8 * k) {
                            c.bell.ring();
                        }
                    }
                })
            };
            // As RingWriter::check_hwm and ensure_room, for one more message.
            let fits = || {
                let released = c.released.load(Ordering::Acquire);
                let head = c.head.load(Ordering::Acquire);
                written - released < hwm && 8 * (written + 1) - head <= ring
            };
            loop {
                if fits() {
                    break;
                }
                space::arm(&c.writer_waiting);
                if fits() {
                    break;
                }
                c.bell.park();
            }
            reader.join().unwrap();
        });
    }

    #[test]
    fn loom_writer_at_the_receive_hwm_is_woken_by_the_reader() {
        model::<AtomicU32>(1, 1 << 20, 1, 1);
    }

    #[test]
    fn loom_writer_at_the_receive_hwm_is_woken_after_two_releases() {
        // The writer may see the first release and still find the count reached.
        model::<AtomicU32>(2, 1 << 20, 1, 2);
    }

    #[test]
    fn loom_writer_without_room_is_woken_by_the_reader() {
        model::<AtomicU32>(1, 8, u64::MAX, 1); // no HWM: only the room counts
    }

    /// The hand-off with its fences left out: loom must find the lost wake-up (this
    /// shows the model checks the fences, rather than passing whatever they are).
    #[derive(Default)]
    struct Unfenced(AtomicU32);

    impl SpaceWord for Unfenced {
        type Value = u32;
        fn load(&self, order: Ordering) -> u32 {
            self.0.load(order)
        }
        fn store(&self, v: u32, order: Ordering) {
            self.0.store(v, order)
        }
        fn swap(&self, v: u32, order: Ordering) -> u32 {
            self.0.swap(v, order)
        }
        fn fence(_: Ordering) {}
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn loom_space_hand_off_without_fences_loses_a_wake_up() {
        model::<Unfenced>(1, 1 << 20, 1, 1);
    }
}
