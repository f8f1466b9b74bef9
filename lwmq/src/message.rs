//! Messages: one or more frames, each a [`Bytes`].
//!
//! The frames live inline in the message up to [`INLINE_FRAMES`] of them (a vector on
//! the heap beyond that), so making, cloning and dropping the common messages of one to
//! three frames allocates nothing for the frame list. Three: a body with a REQ's
//! envelope (request id and delimiter, with resend or REQ_CORRELATE), or as a ROUTER
//! hands a DEALER's or REQ's message over (routing id, delimiter, body).

use std::sync::Arc;

use bytes::Bytes;
use smallvec::SmallVec;

/// How many frames a [`Message`] holds without allocating its frame list.
pub const INLINE_FRAMES: usize = 3;

/// The frame list of a [`Message`] ([`Message::frames_mut`]): a vector that keeps up to
/// [`INLINE_FRAMES`] frames inline. It has the `Vec` methods a message needs (`push`,
/// `insert`, `remove`, `truncate`, `drain`, indexing...).
pub type FrameVec = SmallVec<[Bytes; INLINE_FRAMES]>;

/// A message of one or more frames. Frames are [`Bytes`], so cloning a message or
/// handing a frame to the transport does not copy its contents.
///
/// A received message may carry the properties of the connection it came on
/// ([`Message::property`], [`Message::user_id`]), as libzmq's `zmq_msg_gets`: lwmq
/// attaches them to messages from peers that were authenticated (PLAIN or CURVE
/// servers, and NULL sockets with a ZAP domain). Equality compares the frames only.
#[derive(Debug, Default)]
pub struct Message {
    frames: FrameVec,
    peer: Option<Arc<PeerProperties>>,
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.frames == other.frames
    }
}

impl Eq for Message {}

impl Clone for Message {
    fn clone(&self) -> Message {
        // Pushing each frame is cheaper than `SmallVec::clone` (a general `extend`) for
        // the messages of one to three frames that are most of the traffic.
        let mut frames = FrameVec::with_capacity(self.frames.len());
        for f in &self.frames {
            frames.push(f.clone());
        }
        Message {
            frames,
            peer: self.peer.clone(),
        }
    }
}

/// The properties of the connection a message came on: `User-Id` (from the ZAP
/// handler, or the mechanism's default), `Peer-Address`, `Socket-Type`, `Identity`,
/// and the peer's own application properties. Shared by every message of the
/// connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerProperties {
    list: Vec<(String, Bytes)>,
}

impl PeerProperties {
    /// Properties with these names and values (names are matched without regard to
    /// case).
    pub fn new(list: Vec<(String, Bytes)>) -> PeerProperties {
        PeerProperties { list }
    }

    /// The value of property `name`, compared without regard to case.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.list
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every property, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.list.iter().map(|(n, v)| (n.as_str(), v))
    }
}

impl Message {
    /// An empty message (no frames). Sending it is an error; add frames first.
    pub fn new() -> Message {
        Message {
            frames: FrameVec::new(),
            peer: None,
        }
    }

    /// A message of the given frames.
    pub fn from_frames<I, F>(frames: I) -> Message
    where
        I: IntoIterator<Item = F>,
        F: Into<Bytes>,
    {
        Message {
            frames: frames.into_iter().map(Into::into).collect(),
            peer: None,
        }
    }

    /// The property `name` of the connection this message came on (`"User-Id"`,
    /// `"Peer-Address"`, `"Socket-Type"`, `"Identity"`, or one the peer sent), if the
    /// message carries its connection's properties (see the type's docs).
    pub fn property(&self, name: &str) -> Option<&Bytes> {
        self.peer.as_ref()?.get(name)
    }

    /// The user id the peer was authenticated as (`User-Id`): what the ZAP handler
    /// returned, or without one the PLAIN user name or the CURVE client key in Z85.
    pub fn user_id(&self) -> Option<&str> {
        std::str::from_utf8(self.property("User-Id")?).ok()
    }

    /// Every property of the connection this message came on, if it carries them.
    pub fn peer_properties(&self) -> Option<&Arc<PeerProperties>> {
        self.peer.as_ref()
    }

    /// Attaches (or with `None` removes) the connection properties. They are local to
    /// this process: sending a message never transmits them.
    pub fn set_peer_properties(&mut self, peer: Option<Arc<PeerProperties>>) {
        self.peer = peer;
    }

    /// Takes the connection properties out of the message.
    pub(crate) fn take_peer_properties(&mut self) -> Option<Arc<PeerProperties>> {
        self.peer.take()
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[Bytes] {
        &self.frames
    }

    /// The frames, mutably.
    pub fn frames_mut(&mut self) -> &mut FrameVec {
        &mut self.frames
    }

    /// Consumes the message and returns its frames as a `Vec` (this allocates when the
    /// frames were inline; iterate the message itself to avoid that).
    pub fn into_frames(self) -> Vec<Bytes> {
        self.frames.into_vec()
    }

    /// Appends a frame.
    pub fn push(&mut self, frame: impl Into<Bytes>) {
        self.frames.push(frame.into());
    }

    /// Inserts a frame at the front (an envelope part, a routing id).
    pub fn push_front(&mut self, frame: impl Into<Bytes>) {
        self.frames.insert(0, frame.into());
    }

    /// Removes and returns the first frame.
    pub fn pop_front(&mut self) -> Option<Bytes> {
        if self.frames.is_empty() {
            None
        } else {
            Some(self.frames.remove(0))
        }
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the message has no frames.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Total payload size over all frames, in bytes.
    pub fn size(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }
}

impl From<Bytes> for Message {
    fn from(frame: Bytes) -> Message {
        let mut frames = FrameVec::new();
        frames.push(frame);
        Message { frames, peer: None }
    }
}

impl From<Vec<u8>> for Message {
    fn from(frame: Vec<u8>) -> Message {
        Message::from(Bytes::from(frame))
    }
}

impl From<&'static str> for Message {
    fn from(frame: &'static str) -> Message {
        Message::from(Bytes::from_static(frame.as_bytes()))
    }
}

impl From<&'static [u8]> for Message {
    fn from(frame: &'static [u8]) -> Message {
        Message::from(Bytes::from_static(frame))
    }
}

impl From<Vec<Bytes>> for Message {
    fn from(frames: Vec<Bytes>) -> Message {
        Message {
            frames: FrameVec::from_vec(frames),
            peer: None,
        }
    }
}

impl From<FrameVec> for Message {
    fn from(frames: FrameVec) -> Message {
        Message { frames, peer: None }
    }
}

impl IntoIterator for Message {
    type Item = Bytes;
    type IntoIter = smallvec::IntoIter<[Bytes; INLINE_FRAMES]>;
    fn into_iter(self) -> Self::IntoIter {
        self.frames.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_operations() {
        let mut m = Message::from_frames(["a", "bc"]);
        m.push_front(Bytes::new());
        m.push_front("id");
        assert_eq!(m.len(), 4);
        assert_eq!(m.size(), 5);
        assert_eq!(m.pop_front().unwrap(), "id");
        assert_eq!(m.pop_front().unwrap(), "");
        assert_eq!(m.frames(), &[Bytes::from("a"), Bytes::from("bc")]);
        assert!(Message::new().pop_front().is_none());
    }

    #[test]
    fn inline_and_spilled_frame_lists_behave_alike() {
        for n in 0..6 {
            let frames: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; i])).collect();
            let a = Message::from(frames.clone());
            let b = Message::from_frames(frames.clone());
            let mut c = Message::new();
            for f in &frames {
                c.push(f.clone());
            }
            assert_eq!(a, b);
            assert_eq!(a, c);
            assert_eq!(a.frames(), &frames[..]);
            assert_eq!(a.clone().into_frames(), frames);
            assert_eq!(a.clone().into_iter().collect::<Vec<_>>(), frames);
            assert_eq!(a.frames().len() > INLINE_FRAMES, a.frames.spilled());
            c.frames_mut().truncate(n.min(1));
            assert_eq!(c.frames(), &frames[..n.min(1)]);
        }
    }
}
