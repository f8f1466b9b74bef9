//! [`Transmit`]: the bytes a connection has to write, in order, shared by the
//! connection and the mechanisms (which queue their handshake commands into it).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::command::Command;
use super::frame;

/// Data frames at least this long are handed to the owner as their own `Bytes`, not
/// copied into the coalescing buffer.
const ZERO_COPY_THRESHOLD: usize = 8 * 1024;

/// The queue of bytes to write, in order. Small writes are coalesced into `tail`; large
/// frame bodies are queued as they are.
#[derive(Debug, Default)]
pub(crate) struct Transmit {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    /// Bytes in `chunks` and `tail` together.
    pub(crate) len: usize,
}

/// The coalescing buffer grows in chunks of at least this size: each write hands out
/// what is in it (`split`), and a buffer that grew only by what each message needed
/// would allocate once per write, however few messages it held.
const TAIL_CHUNK: usize = 16 * 1024;

/// The longest frame header (flags and an 8-byte size).
const MAX_HEADER: usize = 9;

impl Transmit {
    /// Makes room for `n` more bytes in `tail`, a whole chunk at a time.
    fn room(&mut self, n: usize) {
        if self.tail.capacity() - self.tail.len() < n {
            self.tail.reserve(n.max(TAIL_CHUNK));
        }
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.room(bytes.len());
        self.tail.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    pub(crate) fn command(&mut self, cmd: &Command) {
        self.command_body(&cmd.encode());
    }

    /// A command frame with this body (name included).
    pub(crate) fn command_body(&mut self, body: &[u8]) {
        self.room(MAX_HEADER + body.len());
        let before = self.tail.len();
        frame::encode_header(&mut self.tail, false, true, body.len());
        self.tail.extend_from_slice(body);
        self.len += self.tail.len() - before;
    }

    /// Queues a data frame. Returns the body if it was copied (the caller no longer
    /// needs to keep it).
    pub(crate) fn data_frame(&mut self, more: bool, body: Bytes) -> Option<Bytes> {
        let inline = if body.len() >= ZERO_COPY_THRESHOLD {
            0
        } else {
            body.len()
        };
        self.room(MAX_HEADER + inline);
        let before = self.tail.len();
        frame::encode_header(&mut self.tail, more, false, body.len());
        self.len += self.tail.len() - before + body.len();
        if body.len() >= ZERO_COPY_THRESHOLD {
            if !self.tail.is_empty() {
                self.chunks.push_back(self.tail.split().freeze());
            }
            self.chunks.push_back(body);
            None
        } else {
            self.tail.extend_from_slice(&body);
            Some(body)
        }
    }

    /// Queues a data frame of `len` bytes that `build` appends to the coalescing buffer
    /// (and may change there: CURVE encrypts its MESSAGE in place), whatever its size:
    /// such a body has no buffer of its own to hand over. An error from `build` queues
    /// nothing.
    pub(crate) fn data_frame_built<E>(
        &mut self,
        more: bool,
        len: usize,
        build: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), E> {
        self.room(MAX_HEADER + len);
        let before = self.tail.len();
        frame::encode_header(&mut self.tail, more, false, len);
        let body_at = self.tail.len();
        if let Err(e) = build(&mut self.tail) {
            self.tail.truncate(before);
            return Err(e);
        }
        debug_assert_eq!(self.tail.len() - body_at, len);
        self.len += self.tail.len() - before;
        Ok(())
    }

    /// Drops everything queued.
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.tail.clear();
        self.len = 0;
    }

    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        let b = match self.chunks.pop_front() {
            Some(b) => b,
            None if !self.tail.is_empty() => self.tail.split().freeze(),
            None => return None,
        };
        self.len -= b.len();
        Some(b)
    }
}
