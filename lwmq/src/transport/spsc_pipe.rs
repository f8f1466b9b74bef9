//! Pipe halves over the lock-free queue ([`super::spsc`]): the stream pipe between a
//! socket and the background thread when its high-water mark is set and nothing
//! needs more than the queue gives (no CONFLATE, no subscriptions written into it).
//!
//! # Wake-ups
//!
//! The writer pushes and publishes each message (one Release store). When the
//! background thread reads, the writer rings it only when it announced it sleeps
//! (`spsc`'s idle handshake): while the background thread is busy, a socket sending
//! message after message makes no system call; the thread announces itself idle when
//! it finds the pipe empty. When a socket reads ([`Ends::BackgroundToSocket`]), the writer rings
//! its signal after every publish instead: that costs a fence and a load when the
//! socket is not parked, and a socket spinning on `try_read` must not write a shared
//! flag on every look. A writer that finds the queue full
//! announces itself blocked before it says "full", so the reader's next batch of pops
//! rings it. Neither side ever polls.
//!
//! # Spent frames
//!
//! When the background thread reads (a stream engine), it copies small frames into its
//! output and is done with them; freeing them there would make every message a
//! cross-thread free (the allocator's slow path on both threads). It hands them back
//! through a second, small queue instead ([`PipeReader::recycle`]) and the writer drops
//! them on its own thread, every few writes. Only frames up to [`RECYCLE_MAX`] bytes
//! travel back, and only as many as the queue holds (the rest are freed where they
//! are), so a writer that stops writing keeps at most [`SPENT_CAPACITY`] small frames
//! alive until its next write or its close.
//!
//! # The arena of a socket-to-socket pipe
//!
//! Between two sockets of the process (inproc), the reader frees what the writer's
//! user allocated. When one socket streams to another, that is every message a
//! cross-thread free, and the writer's allocator never gets its memory back. So while
//! the writing socket sends message after message (no receive call in between), the
//! writer copies each frame of up to [`ARENA_FRAME_MAX`] bytes into chunks of its own
//! ([`ARENA_CHUNK`] bytes, shared by the frames cut from them, freed when the last goes)
//! and frees the caller's buffer at once, on the caller's thread. In an exchange
//! (request, reply) frames pass through: there each side frees what the other
//! allocated, which the allocator's caches handle well, and the arena would only add
//! a counter that both threads write. A reader that keeps one small message keeps its
//! chunk alive, as a message received over tcp keeps its 64 KiB receive chunk.
//!
//! A streamed one-frame message of up to [`INLINE_MAX`] bytes does not even take a
//! frame of the writer's arena: its bytes travel in the queue's slot itself
//! ([`Slot::Inline`]), and the reader copies them into an arena of its own. An arena
//! frame's count is written by both threads (up by the writer as it cuts the frame,
//! down by the reader's user as it drops it), a cache line that moved between the two
//! cores with every message (a third of all samples of a 64 B inproc stream); inline,
//! each thread writes only counts of its own.
//!
//! # Threads
//!
//! Each half is owned by one thread at a time (the socket's user thread or the
//! background thread); `notify` is what the half rings for the other side (the
//! socket's signal, or the background thread's per-pipe waker).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

use super::spsc::{Consumer, Producer};
use super::{Notify, PipeClosed, PipeReader, PipeWriter, WriteError};
use crate::Message;

/// What the queue carries: a message, or the bytes of a small one-frame message that a
/// streaming socket wrote (see the module docs).
enum Slot {
    Message(Message),
    Inline(Inline),
}

/// A one-frame message of up to [`INLINE_MAX`] bytes, in the slot itself.
struct Inline {
    len: u8,
    bytes: [u8; INLINE_MAX],
}

/// The largest one-frame message a streaming socket-to-socket writer puts in the
/// queue's slot itself (a slot is about as large as a [`Message`] anyway).
const INLINE_MAX: usize = 96;

impl Inline {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The sending half.
pub(crate) struct SpscWriter {
    tx: Producer<Slot>,
    /// Rings the reading side.
    notify: Arc<dyn Notify>,
    /// The reader announces when it sleeps: ring only then (else after every publish).
    reader_announces: bool,
    /// Deferred writes since the last publish.
    deferred: usize,
    /// Frames the reader is done with (see the module docs), and writes since the
    /// last time they were dropped.
    spent: Option<Consumer<Bytes>>,
    writes: u32,
    /// Where small frames are copied (socket-to-socket pipes only).
    arena: Option<Arena>,
}

/// A socket-to-socket writer's arena (see the module docs).
struct Arena {
    buf: BytesMut,
    /// The writing socket's receive calls, and their count at the last write.
    recv_calls: Arc<AtomicU64>,
    seen: u64,
}

/// The largest frame copied into a socket-to-socket pipe's arena.
const ARENA_FRAME_MAX: usize = 1024;
/// The size of each arena chunk.
const ARENA_CHUNK: usize = 32 * 1024;

/// The largest frame handed back to the writer to free.
const RECYCLE_MAX: usize = 1024;
/// How many spent frames the queue back holds.
const SPENT_CAPACITY: usize = 256;
/// The writer drops spent frames every this many writes.
const DRAIN_EVERY: u32 = 16;

/// Deferred writes are published at least this often, so that a reader sees the
/// first messages of a long batch while the writer is still on the rest.
const MAX_DEFERRED: usize = 64;

/// The receiving half.
pub(crate) struct SpscReader {
    rx: Consumer<Slot>,
    /// Rings the writing side.
    notify: Arc<dyn Notify>,
    reader_announces: bool,
    /// Where inline messages are copied to (see the module docs).
    arena: BytesMut,
    /// Where spent frames go back to the writer (background readers only).
    spent: Option<Producer<Bytes>>,
}

/// Who writes and who reads a pipe, which decides how the writer wakes the reader and
/// where small frames are freed.
#[derive(Debug, Clone)]
pub(crate) enum Ends {
    /// A socket to a socket (inproc). While the writing socket sends message after
    /// message, small frames are copied into the writer's arena (see the module
    /// docs); the counter is the writing socket's [`SocketHandle::recv_calls`].
    ///
    /// [`SocketHandle::recv_calls`]: super::SocketHandle::recv_calls
    SocketToSocket(Arc<AtomicU64>),
    /// A socket to the background thread. Spent small frames come back to the writer.
    SocketToBackground,
    /// The background thread to a socket.
    BackgroundToSocket,
}

impl Ends {
    /// Whether the reader is the background thread. A ring of it costs a system call
    /// (its waker), so it announces when it is done with the pipe and the writer rings
    /// only then. A socket reader waits on its `Signal`, whose ring costs a fence and a
    /// load when nobody is parked, and it may spin calling `try_read` many times; so it
    /// does not announce itself, and the writer rings after every publish.
    fn background_reader(&self) -> bool {
        matches!(self, Ends::SocketToBackground)
    }
}

/// A queue of `capacity` messages (rounded up to a power of two): the writer rings
/// `reader_notify`, the reader rings `writer_notify`.
pub(crate) fn spsc_pipe(
    capacity: usize,
    ends: Ends,
    reader_notify: Arc<dyn Notify>,
    writer_notify: Arc<dyn Notify>,
) -> (SpscWriter, SpscReader) {
    let (tx, rx) = super::spsc::channel(capacity);
    let reader_announces = ends.background_reader();
    let (spent_tx, spent_rx) = if matches!(ends, Ends::SocketToBackground) {
        let (p, c) = super::spsc::channel(SPENT_CAPACITY);
        (Some(p), Some(c))
    } else {
        (None, None)
    };
    (
        SpscWriter {
            tx,
            notify: reader_notify,
            reader_announces,
            deferred: 0,
            spent: spent_rx,
            writes: 0,
            arena: match ends {
                Ends::SocketToSocket(recv_calls) => Some(Arena {
                    buf: BytesMut::new(),
                    recv_calls,
                    seen: u64::MAX,
                }),
                _ => None,
            },
        },
        SpscReader {
            rx,
            notify: writer_notify,
            reader_announces,
            arena: BytesMut::new(),
            spent: spent_tx,
        },
    )
}

impl fmt::Debug for SpscWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpscWriter").field("tx", &self.tx).finish()
    }
}

impl fmt::Debug for SpscReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpscReader").field("rx", &self.rx).finish()
    }
}

impl SpscWriter {
    fn publish(&mut self) {
        self.deferred = 0;
        if self.reader_announces {
            if self.tx.flush() {
                self.notify.notify();
            }
        } else if self.tx.flush_unannounced() {
            // The reader never announces: no handshake, its signal after every publish.
            self.notify.notify();
        }
    }
}

impl SpscWriter {
    /// Drops the frames the reader gave back, every [`DRAIN_EVERY`] writes.
    fn drop_spent(&mut self) {
        let Some(spent) = self.spent.as_mut() else {
            return;
        };
        self.writes += 1;
        if self.writes < DRAIN_EVERY {
            return;
        }
        self.writes = 0;
        while let Some(frame) = spent.pop() {
            drop(frame);
        }
    }
}

/// What goes in the queue for `msg`: on a socket-to-socket pipe (with an `arena`) while
/// the socket streams, a small one-frame message inline, or the message with its small
/// frames copied into the arena (the caller's buffers are freed here, on the thread that
/// most likely allocated them); else the message as it is. Made only once the queue has
/// room for it (a message handed back is the caller's, untouched).
fn slot(arena: &mut Option<Arena>, mut msg: Message) -> Slot {
    let Some(arena) = arena.as_mut() else {
        return Slot::Message(msg);
    };
    // A socket that received since its last write is in an exchange (each side
    // frees what the other allocated, and the allocator's caches balance): pass
    // the frames through, as the arena would only add a shared counter to it.
    let calls = arena.recv_calls.load(Ordering::Relaxed);
    let streaming = calls == arena.seen;
    arena.seen = calls;
    if !streaming {
        return Slot::Message(msg);
    }
    if let [f] = msg.frames() {
        if f.len() <= INLINE_MAX {
            let mut i = Inline {
                // At most INLINE_MAX (96): fits.
                len: f.len() as u8,
                bytes: [0; INLINE_MAX],
            };
            i.bytes[..f.len()].copy_from_slice(f);
            return Slot::Inline(i);
        }
    }
    for f in msg.frames_mut().iter_mut() {
        if f.is_empty() || f.len() > ARENA_FRAME_MAX {
            continue;
        }
        if arena.buf.capacity() - arena.buf.len() < f.len() {
            arena.buf = BytesMut::with_capacity(ARENA_CHUNK);
        }
        arena.buf.extend_from_slice(f);
        *f = arena.buf.split().freeze();
    }
    Slot::Message(msg)
}

impl PipeWriter for SpscWriter {
    fn try_write(&mut self, msg: Message) -> Result<(), WriteError> {
        self.drop_spent();
        if self.tx.is_closed() {
            return Err(WriteError::Closed(msg));
        }
        let arena = &mut self.arena;
        let msg = match self.tx.push_with(msg, |m| slot(arena, m)) {
            Ok(()) => {
                self.publish();
                return Ok(());
            }
            Err(m) => m,
        };
        // Full: announce that we wait for room, then look once more (the reader may
        // have freed room before it could see the announcement).
        if !self.tx.announce_blocked() {
            if self.tx.is_closed() {
                return Err(WriteError::Closed(msg));
            }
            let arena = &mut self.arena;
            if let Err(m) = self.tx.push_with(msg, |m| slot(arena, m)) {
                return Err(WriteError::Full(m));
            }
            self.publish();
            return Ok(());
        }
        Err(WriteError::Full(msg))
    }

    fn write_deferred(&mut self, msg: Message) -> Result<(), WriteError> {
        if self.tx.is_closed() {
            return Err(WriteError::Closed(msg));
        }
        match self.tx.push_with(msg, Slot::Message) {
            Ok(()) => {
                self.deferred += 1;
                if self.deferred >= MAX_DEFERRED {
                    self.publish();
                }
                Ok(())
            }
            // Full: what is deferred goes out first, then the ordinary path (which
            // announces the writer blocked).
            Err(m) => {
                self.publish();
                self.try_write(m)
            }
        }
    }

    fn flush(&mut self) {
        self.publish();
    }

    /// Only directions that carry no subscriptions use this pipe (see the module
    /// docs): a control message is an ordinary one here.
    fn write_control(&mut self, msg: Message) -> Result<(), WriteError> {
        self.try_write(msg)
    }

    /// The queue's fill level is not known exactly without a look at the reader's
    /// position: report writable (a send may still find it full, and then waits).
    fn is_writable(&self) -> bool {
        !self.tx.is_closed()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn close(&mut self) {
        if self.tx.close() {
            self.notify.notify();
        }
    }
}

impl Drop for SpscWriter {
    fn drop(&mut self) {
        self.close();
    }
}

impl PipeReader for SpscReader {
    fn try_read(&mut self) -> Result<Option<Message>, PipeClosed> {
        loop {
            let m = self.rx.pop();
            if self.rx.take_producer_wake() {
                self.notify.notify();
            }
            if let Some(s) = m {
                return Ok(Some(self.message(s)));
            }
            if self.rx.is_closed() {
                return Err(PipeClosed);
            }
            // Nothing now. A reader that announces: say that we sleep, so the writer's
            // next publish rings us; if something came meanwhile, take it.
            if !self.reader_announces || self.rx.announce_idle() {
                return Ok(None);
            }
        }
    }

    fn close(&mut self) {
        if self.rx.close() {
            self.notify.notify();
        }
    }

    fn is_finished(&mut self) -> bool {
        self.rx.is_closed()
    }

    fn is_empty(&mut self) -> bool {
        self.rx.is_empty()
    }

    fn recycle(&mut self, frame: Bytes) {
        if frame.len() > RECYCLE_MAX {
            return;
        }
        if let Some(spent) = self.spent.as_mut() {
            // Full (the writer has not written for a while) or closed: freed here.
            if spent.push(frame).is_ok() {
                spent.flush_unannounced();
            }
        }
    }
}

impl SpscReader {
    /// The message in slot `s`: an inline one is copied into the reader's arena.
    fn message(&mut self, s: Slot) -> Message {
        match s {
            Slot::Message(m) => m,
            Slot::Inline(i) => {
                let bytes = i.as_slice();
                if self.arena.capacity() - self.arena.len() < bytes.len() {
                    self.arena = BytesMut::with_capacity(ARENA_CHUNK);
                }
                self.arena.extend_from_slice(bytes);
                Message::from(self.arena.split().freeze())
            }
        }
    }
}

impl Drop for SpscReader {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tests::Counter;
    use std::sync::atomic::Ordering;

    #[test]
    fn wakes_only_a_sleeping_reader_and_a_blocked_writer() {
        let r = Arc::new(Counter::default());
        let w = Arc::new(Counter::default());
        let (mut tx, mut rx) = spsc_pipe(2, Ends::SocketToBackground, r.clone(), w.clone());
        // The reader has not announced that it sleeps: no ring.
        tx.try_write("a".into()).unwrap();
        assert_eq!(r.0.load(Ordering::SeqCst), 0);
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("a")));
        // Empty: the reader announces itself; the next write rings it, once.
        assert_eq!(rx.try_read().unwrap(), None);
        tx.try_write("b".into()).unwrap();
        tx.try_write("c".into()).unwrap();
        assert_eq!(r.0.load(Ordering::SeqCst), 1);
        // Full: the writer announces itself blocked; the reader's pops ring it.
        match tx.try_write("d".into()) {
            Err(WriteError::Full(m)) => assert_eq!(m, Message::from("d")),
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("b")));
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("c")));
        assert_eq!(rx.try_read().unwrap(), None);
        assert!(
            w.0.load(Ordering::SeqCst) >= 1,
            "the blocked writer was rung"
        );
        tx.try_write("d".into()).unwrap();
        // Close: the reader drains, then sees the end.
        tx.close();
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("d")));
        assert_eq!(rx.try_read(), Err(PipeClosed));
        assert!(rx.is_finished());
    }

    #[test]
    fn a_socket_reader_is_rung_after_every_publish_and_never_announces() {
        let r = Arc::new(Counter::default());
        let w = Arc::new(Counter::default());
        let (mut tx, mut rx) = spsc_pipe(4, Ends::BackgroundToSocket, r.clone(), w.clone());
        assert_eq!(rx.try_read().unwrap(), None);
        tx.try_write("a".into()).unwrap();
        tx.try_write("b".into()).unwrap();
        assert_eq!(r.0.load(Ordering::SeqCst), 2);
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("a")));
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("b")));
        assert_eq!(rx.try_read().unwrap(), None);
    }

    #[test]
    fn deferred_writes_are_seen_and_rung_once_per_flush() {
        let r = Arc::new(Counter::default());
        let w = Arc::new(Counter::default());
        let (mut tx, mut rx) = spsc_pipe(256, Ends::BackgroundToSocket, r.clone(), w.clone());
        tx.write_deferred("a".into()).unwrap();
        tx.write_deferred("b".into()).unwrap();
        assert_eq!(rx.try_read().unwrap(), None, "not flushed yet");
        assert_eq!(r.0.load(Ordering::SeqCst), 0);
        tx.flush();
        assert_eq!(r.0.load(Ordering::SeqCst), 1, "one ring for the batch");
        tx.flush();
        assert_eq!(r.0.load(Ordering::SeqCst), 1, "nothing new: no ring");
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("a")));
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("b")));
        // A long batch is published every MAX_DEFERRED writes without a flush.
        for i in 0..MAX_DEFERRED {
            tx.write_deferred(Message::from(i.to_string().into_bytes()))
                .unwrap();
        }
        assert_eq!(r.0.load(Ordering::SeqCst), 2);
        for i in 0..MAX_DEFERRED {
            assert_eq!(
                rx.try_read().unwrap(),
                Some(Message::from(i.to_string().into_bytes()))
            );
        }
        assert_eq!(rx.try_read().unwrap(), None);
    }

    #[test]
    fn a_full_pipe_publishes_deferred_writes_before_it_says_full() {
        let r = Arc::new(Counter::default());
        let w = Arc::new(Counter::default());
        let (mut tx, mut rx) = spsc_pipe(2, Ends::BackgroundToSocket, r.clone(), w.clone());
        tx.write_deferred("a".into()).unwrap();
        tx.write_deferred("b".into()).unwrap();
        match tx.write_deferred("c".into()) {
            Err(WriteError::Full(m)) => assert_eq!(m, Message::from("c")),
            other => panic!("{other:?}"),
        }
        assert!(r.0.load(Ordering::SeqCst) >= 1, "the reader was rung");
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("a")));
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("b")));
        assert_eq!(rx.try_read().unwrap(), None);
        assert!(
            w.0.load(Ordering::SeqCst) >= 1,
            "the blocked writer was rung"
        );
        tx.write_deferred("c".into()).unwrap();
        tx.flush();
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("c")));
    }

    /// A frame body that records on which thread it was freed.
    struct Tracked(Vec<u8>, Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>);

    impl AsRef<[u8]> for Tracked {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(std::thread::current().id());
        }
    }

    #[test]
    fn recycled_frames_are_freed_on_the_writers_thread() {
        let r = Arc::new(Counter::default());
        let w = Arc::new(Counter::default());
        let (mut tx, mut rx) = spsc_pipe(1024, Ends::SocketToBackground, r, w);
        let freed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let big = vec![0u8; RECYCLE_MAX + 1];
        let frame = |body: Vec<u8>| Message::from(Bytes::from_owner(Tracked(body, freed.clone())));
        tx.try_write(frame(b"small".to_vec())).unwrap();
        tx.try_write(frame(big.clone())).unwrap();
        let reader = std::thread::spawn(move || {
            for _ in 0..2 {
                let m = rx.try_read().unwrap().expect("written before");
                for f in m {
                    rx.recycle(f);
                }
            }
            (std::thread::current().id(), rx)
        });
        let (reader_id, _rx) = reader.join().unwrap();
        // The large frame was freed by the reader; the small one waits for the writer.
        assert_eq!(*freed.lock().unwrap(), vec![reader_id]);
        for i in 0..DRAIN_EVERY {
            tx.try_write(Message::from(vec![i as u8])).unwrap();
        }
        assert_eq!(
            *freed.lock().unwrap(),
            vec![reader_id, std::thread::current().id()],
            "the small frame was freed by the writer within {DRAIN_EVERY} writes"
        );
    }

    #[test]
    fn spent_frames_are_freed_when_the_pipe_goes() {
        let n = Arc::new(Counter::default());
        let (mut tx, mut rx) = spsc_pipe(4, Ends::SocketToBackground, n.clone(), n);
        let freed = Arc::new(std::sync::Mutex::new(Vec::new()));
        tx.try_write(Message::from(Bytes::from_owner(Tracked(
            b"x".to_vec(),
            freed.clone(),
        ))))
        .unwrap();
        let m = rx.try_read().unwrap().unwrap();
        for f in m {
            rx.recycle(f);
        }
        assert!(freed.lock().unwrap().is_empty(), "held for the writer");
        drop(tx);
        drop(rx);
        assert_eq!(freed.lock().unwrap().len(), 1, "freed once, with the pipe");
    }

    #[test]
    fn a_streaming_socket_writes_small_frames_through_its_arena() {
        let n = Arc::new(Counter::default());
        let recv_calls = Arc::new(AtomicU64::new(0));
        let (mut tx, mut rx) =
            spsc_pipe(64, Ends::SocketToSocket(recv_calls.clone()), n.clone(), n);
        let freed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tracked = |body: &[u8]| Bytes::from_owner(Tracked(body.to_vec(), freed.clone()));
        let big = vec![7u8; ARENA_FRAME_MAX + 1];
        let ptr = |m: &Message, i: usize| m.frames()[i].as_ptr() as usize;
        // The first write, and any write after a receive call, passes the frames
        // through (an exchange).
        tx.try_write(Message::from(tracked(b"one"))).unwrap();
        let first = rx.try_read().unwrap().unwrap();
        assert_eq!(freed.lock().unwrap().len(), 0, "passed through, not copied");
        drop(first);
        assert_eq!(freed.lock().unwrap().len(), 1);
        // Writes in a row: small frames are copied (the caller's buffer is freed by
        // the writer, at once) and land next to each other; large ones pass through.
        for body in [&b"two"[..], b"three"] {
            tx.try_write(Message::from_frames([tracked(body), tracked(&big)]))
                .unwrap();
        }
        assert_eq!(
            freed.lock().unwrap().len(),
            3,
            "both small frames freed by the writer"
        );
        let (two, three) = (
            rx.try_read().unwrap().unwrap(),
            rx.try_read().unwrap().unwrap(),
        );
        assert_eq!(two.frames()[0], &b"two"[..]);
        assert_eq!(three.frames()[0], &b"three"[..]);
        assert_eq!(ptr(&three, 0), ptr(&two, 0) + 3, "one arena");
        assert_eq!(two.frames()[1], big[..]);
        drop((two, three));
        assert_eq!(
            freed.lock().unwrap().len(),
            5,
            "large frames freed by the reader"
        );
        // A receive call on the writing socket: an exchange again.
        recv_calls.fetch_add(1, Ordering::Relaxed);
        tx.try_write(Message::from(tracked(b"four"))).unwrap();
        let four = rx.try_read().unwrap().unwrap();
        assert_eq!(freed.lock().unwrap().len(), 5, "passed through");
        assert_eq!(four.frames()[0], &b"four"[..]);
    }

    #[test]
    fn a_streaming_socket_sends_small_one_frame_messages_inline() {
        let n = Arc::new(Counter::default());
        let recv_calls = Arc::new(AtomicU64::new(0));
        let (mut tx, mut rx) = spsc_pipe(2, Ends::SocketToSocket(recv_calls), n.clone(), n);
        let freed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tracked = |body: &[u8]| Bytes::from_owner(Tracked(body.to_vec(), freed.clone()));
        // The first write passes through; the next ones, in a row, go inline: the
        // caller's buffer is freed by the writer, at once.
        tx.try_write(Message::from(tracked(b"zero"))).unwrap();
        assert_eq!(rx.try_read().unwrap().unwrap(), Message::from("zero"));
        let largest = vec![9u8; INLINE_MAX];
        tx.try_write(Message::from(tracked(&largest))).unwrap();
        tx.try_write(Message::from(tracked(b"two"))).unwrap();
        assert_eq!(freed.lock().unwrap().len(), 3, "freed by the writer");
        // Full: the message comes back whole.
        match tx.try_write(Message::from(tracked(b"three"))) {
            Err(WriteError::Full(m)) => assert_eq!(m, Message::from("three")),
            other => panic!("{other:?}"),
        }
        let (one, two) = (
            rx.try_read().unwrap().unwrap(),
            rx.try_read().unwrap().unwrap(),
        );
        assert_eq!(one.frames()[0], largest[..]);
        assert_eq!(two, Message::from("two"));
        // Copied into the reader's arena, one after the other.
        assert_eq!(
            two.frames()[0].as_ptr() as usize,
            one.frames()[0].as_ptr() as usize + INLINE_MAX
        );
        // One byte more than fits inline: the writer's arena (copied, not inline).
        let over = vec![1u8; INLINE_MAX + 1];
        tx.try_write(Message::from(over.clone())).unwrap();
        assert_eq!(rx.try_read().unwrap().unwrap(), Message::from(over));
        // A slot is not much larger than a message.
        assert!(std::mem::size_of::<Slot>() <= std::mem::size_of::<Message>() + 8);
    }

    #[test]
    fn a_closed_reader_hands_writes_back() {
        let n = Arc::new(Counter::default());
        let (mut tx, mut rx) = spsc_pipe(4, Ends::BackgroundToSocket, n.clone(), n.clone());
        rx.close();
        assert!(tx.is_closed());
        assert!(matches!(
            tx.try_write("x".into()),
            Err(WriteError::Closed(_))
        ));
    }
}
