//! Messages: one or more frames, each a [`Bytes`].

use bytes::Bytes;

/// A message of one or more frames. Frames are [`Bytes`], so cloning a message or
/// handing a frame to the transport does not copy its contents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    frames: Vec<Bytes>,
}

impl Message {
    /// An empty message (no frames). Sending it is an error; add frames first.
    pub fn new() -> Message {
        Message { frames: Vec::new() }
    }

    /// A message of the given frames.
    pub fn from_frames<I, F>(frames: I) -> Message
    where
        I: IntoIterator<Item = F>,
        F: Into<Bytes>,
    {
        Message {
            frames: frames.into_iter().map(Into::into).collect(),
        }
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[Bytes] {
        &self.frames
    }

    /// The frames, mutably.
    pub fn frames_mut(&mut self) -> &mut Vec<Bytes> {
        &mut self.frames
    }

    /// Consumes the message and returns its frames.
    pub fn into_frames(self) -> Vec<Bytes> {
        self.frames
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
        Message {
            frames: vec![frame],
        }
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
        Message { frames }
    }
}

impl IntoIterator for Message {
    type Item = Bytes;
    type IntoIter = std::vec::IntoIter<Bytes>;
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
}
