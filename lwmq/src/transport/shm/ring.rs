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
//! | 256 | `writer_waiting: u32` — the writer waits for space | writer sets 1, reader swaps to 0 | reader, after a SeqCst fence | SeqCst |
//!
//! Each field has a cache line pair (128 bytes) of its own, so the writer's and the
//! reader's stores never share a line. Both positions count bytes since the ring was
//! created (they never wrap in practice: 2^64 bytes); the offset in the data area is
//! `pos & (N - 1)` where `N`, the data size, is a power of two. `tail - head` is the
//! number of bytes in use, at most `N`. Each side keeps a private copy of the other's
//! position (`head_cache`, `tail_cache`) and reloads it only when the copy says "full"
//! or "empty", so a busy ring moves a control line between the caches once per batch,
//! not once per message; the hot path makes no system call.
//!
//! # Records (in the data area, `N` bytes)
//!
//! Every record starts on an 8-byte boundary with an 8-byte header word, read and
//! written as one atomic `u64`:
//!
//! ```text
//!  bits 0..32   len     payload bytes
//!  bits 32..48  flags   MORE = 1 (another frame of the same message follows)
//!                       PAD  = 2 (filler to the end of the data area; no payload)
//!  bits 48..64  marker  0x4C57 ("LW"), catches most garbage early
//! ```
//!
//! followed by `len` payload bytes, padded to a multiple of 8. A record never wraps:
//! when a frame does not fit before the end of the data area, the writer fills the rest
//! with a PAD record (its `len` is exactly the space left minus 8) and puts the frame
//! at offset 0. A message is one or more frame records, all but the last with MORE;
//! the writer publishes `tail` only at the end of a message, so the reader never sees
//! half a message. Because at most one PAD can fall inside a message and a PAD is
//! shorter than the record that caused it, a message whose records take `R` bytes with
//! largest record `r` always fits an empty ring when `R + r <= N`; that is the size
//! limit checked at send time (about half the ring for a single frame), so a send can
//! never wait for space that will never come.
//!
//! # Trust
//!
//! The peer can write anything anywhere in the segment at any time. The reader copies
//! `tail` and each header word once, validates the copy (alignment, `tail - head <= N`,
//! marker, flags, the record inside the data area and before `tail`), and uses only the
//! copy; payload bytes are copied out with atomic word loads. The writer validates every
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

/// Size of a ring's control block.
pub const CONTROL_SIZE: usize = 384;
/// Offset of `tail` in the control block.
pub const TAIL_OFFSET: usize = 0;
/// Offset of `head` in the control block.
pub const HEAD_OFFSET: usize = 128;
/// Offset of `writer_waiting` in the control block.
pub const WRITER_WAITING_OFFSET: usize = 256;
/// Size of a record header.
pub const RECORD_HEADER: usize = 8;
/// Flag: another frame of the same message follows.
pub const FLAG_MORE: u64 = 1;
/// Flag: padding to the end of the data area.
pub const FLAG_PAD: u64 = 2;
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
    failed: Option<String>,
}

impl RingWriter {
    pub(crate) fn new(mem: RingMem, peer_bell: Option<Doorbell>) -> RingWriter {
        RingWriter {
            mem,
            tail: 0,
            published: 0,
            head_cache: 0,
            peer_bell,
            failed: None,
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

    /// Copies a whole message into the ring and publishes it, or fails without writing
    /// anything visible. Never blocks; never makes a system call unless the reader is
    /// parked.
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
        let mut total = self.tail - self.published;
        let mut largest = 0u64;
        for f in frames {
            let rec = record_len(f.len()).ok_or_else(too_large)?;
            total = total.saturating_add(rec);
            largest = largest.max(rec);
        }
        if total.saturating_add(largest) > n {
            return Err(too_large());
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
        self.publish();
        Ok(())
    }

    /// Reserves room for one frame of `len` bytes, to be filled in place and committed
    /// with [`WriteGrant::commit`]. Frames committed with `more = true` stay invisible
    /// to the reader until the message's last frame is committed (or a
    /// [`try_send`](Self::try_send) completes the message).
    pub fn reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, ShmSendError> {
        self.check_failed()?;
        let too_large = ShmSendError::TooLarge {
            size: len,
            limit: self.max_message_size(),
        };
        let rec = record_len(len).ok_or_else(|| too_large.clone())?;
        let unfinished = self.tail - self.published;
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
        self.mem.writer_waiting().store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
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
            w.publish();
        }
    }
}

/// The reading end of a ring. Owned by the receiving thread (`&mut self`).
#[derive(Debug)]
pub struct RingReader {
    mem: RingMem,
    /// End of what we consumed (published to the writer as `head`).
    head: u64,
    /// Our copy of the writer's `tail`, validated.
    tail_cache: u64,
    /// The writing socket's doorbell, rung when we free space it waits for.
    peer_bell: Option<Doorbell>,
    /// (offset, len) of the frames of the message being read; reused.
    frames: Vec<(usize, usize)>,
    /// Where `try_recv` copies small frames (see `copy_out`); always empty between
    /// calls, its capacity is the room left in the current buffer.
    arena: BytesMut,
    failed: Option<String>,
}

impl RingReader {
    pub(crate) fn new(mem: RingMem, peer_bell: Option<Doorbell>) -> RingReader {
        RingReader {
            mem,
            head: 0,
            tail_cache: 0,
            peer_bell,
            frames: Vec::new(),
            arena: BytesMut::new(),
            failed: None,
        }
    }

    #[doc(hidden)]
    pub fn set_position_for_fuzzing(&mut self, head: u64) {
        self.head = head & !7;
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
        self.tail_cache = tail;
        Ok(())
    }

    /// Whether a message is waiting (reloads the writer's position when needed).
    pub fn has_data(&mut self) -> Result<bool, Error> {
        if let Some(why) = &self.failed {
            return Err(Error::Protocol(why.clone()));
        }
        if self.head == self.tail_cache {
            self.refresh_tail()?;
        }
        Ok(self.head != self.tail_cache)
    }

    /// Parses and validates the next message into `self.frames`; returns its end.
    fn parse(&mut self) -> Result<Option<u64>, Error> {
        if !self.has_data()? {
            return Ok(None);
        }
        self.frames.clear();
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
            if word >> 48 != RECORD_MARKER || flags & !(FLAG_MORE | FLAG_PAD) != 0 {
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
            let rec = ((len + 7) & !7) + RECORD_HEADER as u64;
            if rec > room || pos.saturating_add(rec) > self.tail_cache {
                return Err(self.fail(format!(
                    "frame of {len} bytes at {pos} runs past the ring's end or the tail {}",
                    self.tail_cache
                )));
            }
            self.frames.push((off + RECORD_HEADER, len as usize));
            pos += rec;
            if flags & FLAG_MORE == 0 {
                return Ok(Some(pos));
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
            let mut own = BytesMut::with_capacity(len);
            copy_words(&self.mem, &mut own, off, len);
            return own.freeze();
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

    /// Publishes our progress and, if the writer waits for space, rings its doorbell.
    fn release(&mut self, end: u64) {
        self.head = end;
        self.mem.head().store(end, Ordering::Release);
        fence(Ordering::SeqCst);
        let waiting = self.mem.writer_waiting();
        if waiting.load(Ordering::Relaxed) != 0 && waiting.swap(0, Ordering::SeqCst) != 0 {
            if let Some(bell) = &self.peer_bell {
                bell.notify();
            }
        }
    }

    /// Takes the next message out of the ring (copying it), or `Ok(None)` if there is
    /// none. A corrupt ring is [`Error::Protocol`], and stays so.
    pub fn try_recv(&mut self) -> Result<Option<Message>, Error> {
        let Some(end) = self.parse()? else {
            return Ok(None);
        };
        let mut msg = Message::new();
        for i in 0..self.frames.len() {
            let (off, len) = self.frames[i];
            msg.push(self.copy_out(off, len));
        }
        self.release(end);
        Ok(Some(msg))
    }

    /// Borrows the next message in place (no copy); the space is released when the
    /// guard is dropped.
    pub fn recv_in_place(&mut self) -> Result<Option<ReadGuard<'_>>, Error> {
        let Some(end) = self.parse()? else {
            return Ok(None);
        };
        Ok(Some(ReadGuard { reader: self, end }))
    }
}

/// Appends the `len` bytes at data offset `off` of `mem` to `out`, one atomic word load
/// at a time (`off` is 8-aligned and the record's padding makes whole words readable).
fn copy_words(mem: &RingMem, out: &mut BytesMut, off: usize, len: usize) {
    let at = out.len();
    out.resize(at + len, 0);
    let mut chunks = out[at..].chunks_exact_mut(8);
    let mut word = off;
    for chunk in &mut chunks {
        let w = mem.word(word).load(Ordering::Relaxed);
        chunk.copy_from_slice(&w.to_ne_bytes());
        word += 8;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let w = mem.word(word).load(Ordering::Relaxed);
        let k = rest.len();
        rest.copy_from_slice(&w.to_ne_bytes()[..k]);
    }
}

/// A message read in place, from [`RingReader::recv_in_place`]. Its frames are slices
/// of the ring; the writer may reuse the space once the guard is dropped.
#[derive(Debug)]
pub struct ReadGuard<'a> {
    reader: &'a mut RingReader,
    end: u64,
}

impl ReadGuard<'_> {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.reader.frames.len()
    }

    /// Whether the message has no frames (never true: a message has at least one).
    pub fn is_empty(&self) -> bool {
        self.reader.frames.is_empty()
    }

    /// Frame `i`.
    pub fn frame(&self, i: usize) -> Option<&[u8]> {
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

    /// Copies the message out.
    pub fn to_message(&self) -> Message {
        Message::from_frames(self.frames().map(Bytes::copy_from_slice))
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
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
    fn too_large_is_an_error_not_a_hang() {
        let (mut w, mut r) = heap_ring(4096);
        let limit = w.max_message_size();
        assert_eq!(limit, 2040);
        // A message at the limit fits even after the ring has been used at an odd offset.
        w.try_send(&msg(&[&[1u8; 24]])).unwrap();
        r.try_recv().unwrap().unwrap();
        w.try_send(&Message::from(vec![7u8; limit])).unwrap();
        assert_eq!(r.try_recv().unwrap().unwrap().size(), limit);
        let err = w
            .try_send(&Message::from(vec![0u8; limit + 1]))
            .unwrap_err();
        assert_eq!(
            err,
            ShmSendError::TooLarge {
                size: limit + 1,
                limit
            }
        );
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
