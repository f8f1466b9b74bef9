//! Printing received messages: text, hex, or JSON lines with metadata.
//!
//! Some frames are an envelope rather than payload and are printed as such: a ROUTER's
//! first frame is the sender's routing id (shown in hex), and a SUB's first frame of a
//! multi-frame message is the topic (shown as text, never decoded as MessagePack).

use std::fmt::Write as _;
use std::io::Write;

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use lwmq::{Message, SocketType};
use serde_json::{Map, Value as Json, json};

use crate::cli::OutputFormat;

/// What the first frame of each message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// Every frame is payload.
    None,
    /// The first frame is a routing id (ROUTER).
    RoutingId,
    /// The first frame is a topic, if there are two or more (SUB, XSUB).
    Topic,
}

impl Envelope {
    /// The envelope a socket of this type receives.
    pub fn of(t: SocketType) -> Envelope {
        match t {
            SocketType::Router => Envelope::RoutingId,
            SocketType::Sub | SocketType::XSub => Envelope::Topic,
            _ => Envelope::None,
        }
    }
}

/// Formats messages, one line each.
#[derive(Debug, Clone)]
pub struct Printer {
    /// The format.
    pub format: OutputFormat,
    /// Decode payload frames as MessagePack into JSON.
    pub typed: bool,
    /// What the first frame is.
    pub envelope: Envelope,
    /// Socket type and endpoint, for JSON metadata.
    pub socket: String,
    /// The endpoint, for JSON metadata.
    pub endpoint: String,
    index: u64,
}

impl Printer {
    /// A printer for messages received on a socket of type `t` at `endpoint`.
    pub fn new(format: OutputFormat, typed: bool, t: SocketType, endpoint: &str) -> Printer {
        Printer {
            format,
            typed,
            envelope: Envelope::of(t),
            socket: t.as_str().to_owned(),
            endpoint: endpoint.to_owned(),
            index: 0,
        }
    }

    /// Prints one message to stdout (and warnings about undecodable frames to stderr).
    pub fn print(&mut self, msg: &Message) -> Result<()> {
        let (line, warnings) = self.format(msg);
        for w in warnings {
            eprintln!("lwmq: warning: {w}");
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    }

    /// Formats one message: the line, and warnings for frames that were meant to be
    /// MessagePack and were not (they are shown as text or base64 instead).
    pub fn format(&mut self, msg: &Message) -> (String, Vec<String>) {
        let index = self.index;
        self.index += 1;
        let frames = msg.frames();
        let envelope_len = match self.envelope {
            Envelope::RoutingId if !frames.is_empty() => 1,
            Envelope::Topic if frames.len() >= 2 => 1,
            _ => 0,
        };
        let mut warnings = Vec::new();
        let mut decoded = Vec::new();
        for (i, f) in frames.iter().enumerate().skip(envelope_len) {
            let value = if self.typed {
                match crate::typed::msgpack_to_json(f) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        warnings.push(format!("message {} frame {}: {e:#}", index + 1, i + 1));
                        None
                    }
                }
            } else {
                None
            };
            decoded.push((f, value));
        }
        let line = match self.format {
            OutputFormat::Text => {
                let mut parts = Vec::with_capacity(frames.len());
                if envelope_len == 1 {
                    parts.push(match self.envelope {
                        Envelope::RoutingId => hex(&frames[0]),
                        _ => escape(&frames[0]),
                    });
                }
                for (f, v) in &decoded {
                    parts.push(match v {
                        Some(v) => v.to_string(),
                        None => escape(f),
                    });
                }
                parts.join("\t")
            }
            OutputFormat::Hex => frames.iter().map(|f| hex(f)).collect::<Vec<_>>().join(" "),
            OutputFormat::Json => {
                let mut obj = Map::new();
                obj.insert("index".into(), json!(index));
                obj.insert("socket".into(), json!(self.socket));
                obj.insert("endpoint".into(), json!(self.endpoint));
                obj.insert("size".into(), json!(msg.size()));
                if envelope_len == 1 {
                    match self.envelope {
                        Envelope::RoutingId => {
                            obj.insert("routing_id".into(), json!(hex(&frames[0])));
                        }
                        _ => {
                            obj.insert("topic".into(), frame_json(&frames[0], None));
                        }
                    }
                }
                let fr: Vec<Json> = decoded
                    .iter()
                    .map(|(f, v)| frame_json(f, v.clone()))
                    .collect();
                obj.insert("frames".into(), Json::Array(fr));
                Json::Object(obj).to_string()
            }
        };
        (line, warnings)
    }
}

/// A frame as JSON: `{"size": n, "value": ...}` when decoded, else `"text"` if it is
/// UTF-8, else `"base64"`.
fn frame_json(f: &[u8], value: Option<Json>) -> Json {
    match (value, std::str::from_utf8(f)) {
        (Some(v), _) => json!({ "size": f.len(), "value": v }),
        (None, Ok(s)) => json!({ "size": f.len(), "text": s }),
        (None, Err(_)) => json!({ "size": f.len(), "base64": BASE64.encode(f) }),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Text with `\\`, `\t`, `\n`, `\r`, other control characters and bytes that are not
/// UTF-8 escaped, so that one message is one line and tabs separate frames.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '\t' => s.push_str("\\t"),
                '\n' => s.push_str("\\n"),
                '\r' => s.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(s, "\\u{{{:x}}}", c as u32);
                }
                c => s.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwmq::Bytes;

    fn msg(frames: &[&[u8]]) -> Message {
        Message::from_frames(frames.iter().map(|f| Bytes::copy_from_slice(f)))
    }

    #[test]
    fn text_escapes_and_separates_frames() {
        let mut p = Printer::new(OutputFormat::Text, false, SocketType::Pull, "tcp://h:1");
        let (line, w) = p.format(&msg(&[b"hello world", b"a\tb\nc\\", b"\xff\x00\xc3\xa9"]));
        assert_eq!(line, "hello world\ta\\tb\\nc\\\\\t\\xff\\u{0}é");
        assert!(w.is_empty());
    }

    #[test]
    fn router_and_sub_envelopes() {
        let mut r = Printer::new(OutputFormat::Text, false, SocketType::Router, "e");
        assert_eq!(r.format(&msg(&[b"\x00\x01", b"hi"])).0, "0001\thi");
        let mut s = Printer::new(OutputFormat::Text, true, SocketType::Sub, "e");
        // The topic "a" would decode as the integer 97; as an envelope it stays text.
        assert_eq!(s.format(&msg(&[b"a", &[0x92, 1, 2]])).0, "a\t[1,2]");
        // A one-frame message has no topic frame: the whole frame is payload.
        assert_eq!(s.format(&msg(&[&[0x01]])).0, "1");
    }

    #[test]
    fn hex_output() {
        let mut p = Printer::new(OutputFormat::Hex, true, SocketType::Pull, "e");
        assert_eq!(p.format(&msg(&[b"\x00\xab", b""])).0, "00ab ");
    }

    #[test]
    fn json_lines_with_metadata_and_bad_msgpack() {
        let mut p = Printer::new(OutputFormat::Json, true, SocketType::Router, "tcp://h:1");
        let (line, w) = p.format(&msg(&[b"\x07", &[0x81, 0xa1, b'k', 0xc3], b"\x92\x01"]));
        let v: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(v["index"], 0);
        assert_eq!(v["socket"], "ROUTER");
        assert_eq!(v["endpoint"], "tcp://h:1");
        assert_eq!(v["routing_id"], "07");
        assert_eq!(v["size"], 7);
        assert_eq!(v["frames"][0], json!({"size": 4, "value": {"k": true}}));
        assert_eq!(v["frames"][1], json!({"size": 2, "base64": "kgE="}));
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("message 1 frame 3") && w[0].contains("MessagePack"),
            "{w:?}"
        );
        let (line, _) = p.format(&msg(&[b"id", b"plain"]));
        let v: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(v["index"], 1);
    }
}
