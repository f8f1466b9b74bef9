//! Typed messages (cargo feature `serde`): any serde value, sent and received as
//! MessagePack, one value per frame. This is the encoding of the `lwmq` tool's
//! `--json` (`lwmq send --json '{"x": 1}'`, `lwmq recv --json`), so a Rust service and
//! the command line speak the same messages.
//!
//! - [`encode`] / [`decode`]: one value to one frame and back. Structs become
//!   MessagePack maps with their field names (what JSON shows), not arrays.
//! - [`Socket::send_value`] / [`Socket::recv_value`]: a message of one such frame.
//! - [`Socket::send_typed`] / [`Socket::recv_typed`]: a message of two frames, the
//!   message's type (a MessagePack string) and its value, for services that dispatch
//!   on the type ([`Typed::kind`]) the way Cm's handlers did. On the command line that
//!   is `lwmq send ENDPOINT --json '"reading"' '{"x": 1}'`.
//!
//! Decoding trusts nothing: a frame must hold exactly one value (trailing bytes are an
//! error), nested no deeper than [`MAX_DEPTH`]; a frame that does not decode as the
//! type asked for is [`Error::Codec`], never a panic.
//!
//! ```
//! # fn main() -> lwmq::Result<()> {
//! use lwmq::{Context, SocketType};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Reading {
//!     sensor: String,
//!     values: Vec<f64>,
//! }
//!
//! let ctx = Context::new();
//! let pull = ctx.socket(SocketType::Pull)?;
//! let endpoint = pull.bind("tcp://127.0.0.1:0")?;
//! let push = ctx.socket(SocketType::Push)?;
//! push.connect(&endpoint)?;
//! let r = Reading { sensor: "t1".into(), values: vec![20.5, 21.0] };
//! push.send_typed("reading", &r)?;
//! let msg = pull.recv_typed()?;
//! assert_eq!(msg.kind, "reading");
//! assert_eq!(msg.value::<Reading>()?, r);
//! # Ok(())
//! # }
//! ```

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Message, Result, Socket};

/// Deepest nesting [`decode`] accepts (the `lwmq` tool's limit too).
pub const MAX_DEPTH: usize = 128;

/// Encodes a value as one frame of MessagePack (structs as maps with field names).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    rmp_serde::to_vec_named(value)
        .map(Bytes::from)
        .map_err(|e| Error::Codec(format!("cannot encode the value as MessagePack: {e}")))
}

/// Decodes one frame of MessagePack as a `T`: the whole frame must be one value.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T> {
    let mut rest = frame;
    let value = {
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        de.set_max_depth(MAX_DEPTH);
        T::deserialize(&mut de).map_err(|e| {
            Error::Codec(format!(
                "a {}-byte frame is not a MessagePack {}: {e}",
                frame.len(),
                std::any::type_name::<T>()
            ))
        })?
    };
    if !rest.is_empty() {
        return Err(Error::Codec(format!(
            "{} bytes after the MessagePack value in a {}-byte frame",
            rest.len(),
            frame.len()
        )));
    }
    Ok(value)
}

/// A two-frame message: its type, and its value (`[kind, value]`, each MessagePack).
pub fn message<T: Serialize + ?Sized>(kind: &str, value: &T) -> Result<Message> {
    Ok(Message::from_frames([encode(kind)?, encode(value)?]))
}

/// The prefix a SUB socket subscribes to for the messages of one type sent with
/// [`Socket::send_typed`] (the MessagePack encoding of `kind`).
pub fn topic(kind: &str) -> Result<Bytes> {
    encode(kind)
}

/// A message received with [`Socket::recv_typed`]: its type and its value, still
/// encoded, so the receiver picks the Rust type by the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed {
    /// The message's type (its first frame).
    pub kind: String,
    /// The value, MessagePack (its second frame).
    pub body: Bytes,
}

impl Typed {
    /// Reads a two-frame message as [`Socket::send_typed`] makes them.
    pub fn from_message(msg: &Message) -> Result<Typed> {
        let frames = msg.frames();
        if frames.len() != 2 {
            return Err(Error::Codec(format!(
                "a typed message has two frames (type, value), this one {}",
                frames.len()
            )));
        }
        Ok(Typed {
            kind: decode(&frames[0])?,
            body: frames[1].clone(),
        })
    }

    /// Decodes the value as a `T`.
    pub fn value<T: DeserializeOwned>(&self) -> Result<T> {
        decode(&self.body)
    }
}

/// Typed messages on any socket (feature `serde`; see [`crate::typed`]). A REP or REQ
/// socket handles its envelope itself; on a ROUTER or DEALER talking to one, use
/// [`encode`], [`decode`] and the envelope frames directly.
impl Socket {
    /// Sends `value` as a message of one MessagePack frame.
    pub fn send_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.send(encode(value)?)?;
        Ok(())
    }

    /// Receives a message of one frame and decodes it as a `T` (as the receive timeout
    /// says; a message of another shape is [`Error::Codec`] and is consumed).
    pub fn recv_value<T: DeserializeOwned>(&self) -> Result<T> {
        let msg = self.recv()?;
        match msg.frames() {
            [frame] => decode(frame),
            frames => Err(Error::Codec(format!(
                "expected a message of one frame, got {}",
                frames.len()
            ))),
        }
    }

    /// Sends `[kind, value]`, both MessagePack (see [`message`]).
    pub fn send_typed<T: Serialize + ?Sized>(&self, kind: &str, value: &T) -> Result<()> {
        self.send(message(kind, value)?)?;
        Ok(())
    }

    /// Receives a message sent with [`Socket::send_typed`] (as the receive timeout says).
    pub fn recv_typed(&self) -> Result<Typed> {
        Typed::from_message(&self.recv()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Inner {
        flags: Vec<bool>,
        map: BTreeMap<String, i64>,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Outer {
        name: String,
        n: u64,
        x: f64,
        inner: Option<Inner>,
        list: Vec<Vec<i32>>,
    }

    #[test]
    fn nested_values_round_trip_and_structs_are_maps() {
        let v = Outer {
            name: "a".into(),
            n: u64::MAX,
            x: -1.5,
            inner: Some(Inner {
                flags: vec![true, false],
                map: [("k".to_owned(), -3)].into(),
            }),
            list: vec![vec![1, 2], vec![]],
        };
        let f = encode(&v).unwrap();
        // fixmap of 5 entries: field names travel.
        assert_eq!(f[0], 0x85);
        assert_eq!(decode::<Outer>(&f).unwrap(), v);
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut f = encode(&1u8).unwrap().to_vec();
        f.push(0);
        assert!(matches!(decode::<u8>(&f), Err(Error::Codec(e)) if e.contains("after")));
        assert!(matches!(decode::<String>(&[0x01]), Err(Error::Codec(_))));
        assert!(decode::<u8>(&[]).is_err());
        // 200 nested arrays: over the limit, an error and no stack overflow.
        let nested = |n: usize| {
            let mut v = vec![0x91u8; n];
            v.push(0x01);
            v
        };
        let e = decode::<serde_json::Value>(&nested(200)).unwrap_err();
        assert!(e.to_string().contains("depth"), "{e}");
        assert!(decode::<serde_json::Value>(&nested(100)).is_ok());
        assert_eq!(
            decode::<serde_json::Value>(&nested(2)).unwrap(),
            serde_json::json!([[1]])
        );
        let m = Message::from_frames(["x"]);
        assert!(Typed::from_message(&m).is_err());
    }
}
