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
//! it finds the pipe empty. When a socket reads ([`Reader::Socket`]), the writer rings
//! its signal after every publish instead: that costs a fence and a load when the
//! socket is not parked, and a socket spinning on `try_read` must not write a shared
//! flag on every look. A writer that finds the queue full
//! announces itself blocked before it says "full", so the reader's next batch of pops
//! rings it. Neither side ever polls.
//!
//! # Threads
//!
//! Each half is owned by one thread at a time (the socket's user thread or the
//! background thread); `notify` is what the half rings for the other side (the
//! socket's signal, or the background thread's per-pipe waker).

use std::fmt;
use std::sync::Arc;

use super::spsc::{Consumer, Producer};
use super::{Notify, PipeClosed, PipeReader, PipeWriter, WriteError};
use crate::Message;

/// The sending half.
pub(crate) struct SpscWriter {
    tx: Producer<Message>,
    /// Rings the reading side.
    notify: Arc<dyn Notify>,
    /// The reader announces when it sleeps: ring only then (else after every publish).
    reader_announces: bool,
}

/// The receiving half.
pub(crate) struct SpscReader {
    rx: Consumer<Message>,
    /// Rings the writing side.
    notify: Arc<dyn Notify>,
    reader_announces: bool,
}

/// Who reads a pipe, which decides how its writer wakes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    /// A socket: it waits on its `Signal`, whose ring costs a fence and a load when
    /// nobody is parked, and it may spin calling `try_read` many times; so it does
    /// not announce itself, and the writer rings after every publish.
    Socket,
    /// The background thread: a ring costs a system call (its waker), so the reader
    /// announces when it is done with the pipe and the writer rings only then.
    Background,
}

/// A queue of `capacity` messages (rounded up to a power of two): the writer rings
/// `reader_notify`, the reader rings `writer_notify`.
pub(crate) fn spsc_pipe(
    capacity: usize,
    reader: Reader,
    reader_notify: Arc<dyn Notify>,
    writer_notify: Arc<dyn Notify>,
) -> (SpscWriter, SpscReader) {
    let (tx, rx) = super::spsc::channel(capacity);
    let reader_announces = reader == Reader::Background;
    (
        SpscWriter {
            tx,
            notify: reader_notify,
            reader_announces,
        },
        SpscReader {
            rx,
            notify: writer_notify,
            reader_announces,
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
        if self.reader_announces {
            if self.tx.flush() {
                self.notify.notify();
            }
        } else {
            // The reader never announces: no handshake, its signal after every publish.
            self.tx.flush_unannounced();
            self.notify.notify();
        }
    }
}

impl PipeWriter for SpscWriter {
    fn try_write(&mut self, msg: Message) -> Result<(), WriteError> {
        if self.tx.is_closed() {
            return Err(WriteError::Closed(msg));
        }
        let msg = match self.tx.push(msg) {
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
            if let Err(m) = self.tx.push(msg) {
                return Err(WriteError::Full(m));
            }
            self.publish();
            return Ok(());
        }
        Err(WriteError::Full(msg))
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
            if let Some(m) = m {
                return Ok(Some(m));
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
        let (mut tx, mut rx) = spsc_pipe(2, Reader::Background, r.clone(), w.clone());
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
        let (mut tx, mut rx) = spsc_pipe(4, Reader::Socket, r.clone(), w.clone());
        assert_eq!(rx.try_read().unwrap(), None);
        tx.try_write("a".into()).unwrap();
        tx.try_write("b".into()).unwrap();
        assert_eq!(r.0.load(Ordering::SeqCst), 2);
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("a")));
        assert_eq!(rx.try_read().unwrap(), Some(Message::from("b")));
        assert_eq!(rx.try_read().unwrap(), None);
    }

    #[test]
    fn a_closed_reader_hands_writes_back() {
        let n = Arc::new(Counter::default());
        let (mut tx, mut rx) = spsc_pipe(4, Reader::Socket, n.clone(), n.clone());
        rx.close();
        assert!(tx.is_closed());
        assert!(matches!(
            tx.try_write("x".into()),
            Err(WriteError::Closed(_))
        ));
    }
}
