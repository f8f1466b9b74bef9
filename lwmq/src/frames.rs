//! [`Frames`]: a received message seen in place, for [`crate::Socket::recv_with`].
//!
//! From a shared-memory (`ipc://`) peer the frames are slices of the ring itself: no
//! copy, no allocation, and the ring space is released when the callback returns. From
//! any other transport they borrow an ordinary [`Message`].

use crate::Message;
use crate::transport::shm::ReadGuard;

/// The frames of one received message, borrowed for the duration of a callback.
///
/// Trust: slices that point into shared memory are always in bounds and stay mapped,
/// but a hostile peer process could change their bytes while you read them. Copy what
/// you must validate before you validate it.
pub struct Frames<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    Ring(&'a ReadGuard<'a>),
    Message(&'a Message),
}

impl std::fmt::Debug for Frames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(<[u8]>::len))
            .finish()
    }
}

impl<'a> Frames<'a> {
    pub(crate) fn ring(g: &'a ReadGuard<'a>) -> Frames<'a> {
        Frames {
            inner: Inner::Ring(g),
        }
    }

    pub(crate) fn message(m: &'a Message) -> Frames<'a> {
        Frames {
            inner: Inner::Message(m),
        }
    }

    /// Number of frames.
    #[inline]
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Ring(g) => g.len(),
            Inner::Message(m) => m.len(),
        }
    }

    /// Whether there are no frames.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frame `i`, if there is one.
    #[inline]
    pub fn frame(&self, i: usize) -> Option<&[u8]> {
        match &self.inner {
            Inner::Ring(g) => g.frame(i),
            Inner::Message(m) => m.frames().get(i).map(|b| &b[..]),
        }
    }

    /// The frames in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).filter_map(|i| self.frame(i))
    }

    /// Total payload bytes.
    pub fn size(&self) -> usize {
        self.iter().map(<[u8]>::len).sum()
    }

    /// An ordinary message: the ring's bytes copied out, or (not read in place) the
    /// message itself, shared without copying.
    pub fn to_message(&self) -> Message {
        match self.inner {
            Inner::Ring(g) => g.to_message(),
            Inner::Message(m) => m.clone(),
        }
    }
}
