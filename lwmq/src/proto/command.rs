//! ZMTP commands (the bodies of command frames) and metadata properties.
//!
//! ```text
//!  command  = name-size(1) name body
//!  READY / INITIATE body = *property
//!  property = name-size(1) name value-size(4, BE) value      name: 1..255 bytes
//!  ERROR    = reason-size(1) reason
//!  HELLO    = username-size(1) username password-size(1) password   (PLAIN)
//!  WELCOME  = (empty)                                               (PLAIN)
//!  SUBSCRIBE / CANCEL = topic (the rest of the frame)                (ZMTP 3.1)
//!  PING     = ttl(2, BE, deciseconds) context(0..16)                 (ZMTP 3.1)
//!  PONG     = context(0..16)
//! ```
//!
//! Property names compare case-insensitively. Parsing rejects trailing garbage and
//! lengths that overrun the frame.

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtoError;

/// Longest PING context; longer contexts are cut to this, as libzmq does.
pub const MAX_PING_CONTEXT: usize = 16;

/// A set of properties, in the order they were sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(pub Vec<(String, Bytes)>);

impl Metadata {
    /// The first value of property `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Adds a property.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.0.push((name.into(), value.into()));
    }

    /// Appends the properties, encoded, to `out`.
    pub(crate) fn encode_into(&self, out: &mut BytesMut) {
        for (name, value) in &self.0 {
            // Names were validated (Config::validate) to be 1..=255 bytes; values to fit u32.
            out.put_u8(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.put_u32(value.len() as u32);
            out.extend_from_slice(value);
        }
    }

    /// Parses a metadata block that spans all of `body`.
    pub fn parse(body: &Bytes) -> Result<Metadata, ProtoError> {
        let mut r = Reader::new(body.clone());
        let mut props = Vec::new();
        while !r.is_empty() {
            let n = r.u8("property name size")? as usize;
            let name = r.take(n, "property name")?;
            check_property_name(&name).map_err(ProtoError::Malformed)?;
            // check_property_name ensured ASCII.
            let name = String::from_utf8_lossy(&name).into_owned();
            let len = r.u32("property value size")? as usize;
            let value = r.take(len, "property value")?;
            props.push((name, value));
        }
        Ok(Metadata(props))
    }
}

/// Checks a property name: 1..=255 bytes of `A-Z a-z 0-9 - _ . +` (RFC 37).
pub fn check_property_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!(
            "property name is {} bytes; it must be 1 to 255",
            name.len()
        ));
    }
    if let Some(b) = name
        .iter()
        .find(|b| !(b.is_ascii_alphanumeric() || b"-_.+".contains(b)))
    {
        return Err(format!(
            "property name {:?} contains {:?}; only letters, digits and - _ . + are allowed",
            String::from_utf8_lossy(name),
            char::from(*b)
        ));
    }
    Ok(())
}

/// A ZMTP command.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// READY: the sender's metadata (NULL; PLAIN server's last step).
    Ready(Metadata),
    /// ERROR: the sender gives up, for this reason.
    Error(String),
    /// SUBSCRIBE (3.1): a topic prefix.
    Subscribe(Bytes),
    /// CANCEL (3.1): a topic prefix.
    Cancel(Bytes),
    /// PING: time-to-live in deciseconds, and a context to echo.
    Ping {
        /// TTL in tenths of a second; 0 = none.
        ttl: u16,
        /// Context, at most 16 bytes.
        context: Bytes,
    },
    /// PONG: the context of the PING it answers.
    Pong(Bytes),
    /// PLAIN HELLO: the client's credentials.
    Hello {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// PLAIN WELCOME.
    Welcome,
    /// PLAIN INITIATE: the client's metadata.
    Initiate(Metadata),
    /// Any other command (ignored after the handshake).
    Unknown {
        /// Its name.
        name: Bytes,
        /// Its body.
        body: Bytes,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Ready(m) => f.debug_tuple("Ready").field(m).finish(),
            Command::Error(r) => f.debug_tuple("Error").field(r).finish(),
            Command::Subscribe(t) => f.debug_tuple("Subscribe").field(t).finish(),
            Command::Cancel(t) => f.debug_tuple("Cancel").field(t).finish(),
            Command::Ping { ttl, context } => f
                .debug_struct("Ping")
                .field("ttl", ttl)
                .field("context", context)
                .finish(),
            Command::Pong(c) => f.debug_tuple("Pong").field(c).finish(),
            Command::Hello { username, .. } => f
                .debug_struct("Hello")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Command::Welcome => f.write_str("Welcome"),
            Command::Initiate(m) => f.debug_tuple("Initiate").field(m).finish(),
            Command::Unknown { name, body } => f
                .debug_struct("Unknown")
                .field("name", name)
                .field("body_len", &body.len())
                .finish(),
        }
    }
}

impl Command {
    /// The command's name as sent on the wire.
    pub fn name(&self) -> &[u8] {
        match self {
            Command::Ready(_) => b"READY",
            Command::Error(_) => b"ERROR",
            Command::Subscribe(_) => b"SUBSCRIBE",
            Command::Cancel(_) => b"CANCEL",
            Command::Ping { .. } => b"PING",
            Command::Pong(_) => b"PONG",
            Command::Hello { .. } => b"HELLO",
            Command::Welcome => b"WELCOME",
            Command::Initiate(_) => b"INITIATE",
            Command::Unknown { name, .. } => name,
        }
    }

    /// Encodes the command body (name included), without the frame header.
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::new();
        let name = self.name();
        out.put_u8(name.len() as u8);
        out.extend_from_slice(name);
        match self {
            Command::Ready(m) | Command::Initiate(m) => m.encode_into(&mut out),
            Command::Error(reason) => {
                let r = truncate_utf8(reason, 255);
                out.put_u8(r.len() as u8);
                out.extend_from_slice(r.as_bytes());
            }
            Command::Subscribe(t) | Command::Cancel(t) => out.extend_from_slice(t),
            Command::Ping { ttl, context } => {
                out.put_u16(*ttl);
                out.extend_from_slice(&context[..context.len().min(MAX_PING_CONTEXT)]);
            }
            Command::Pong(c) => out.extend_from_slice(&c[..c.len().min(MAX_PING_CONTEXT)]),
            Command::Hello { username, password } => {
                // Config::validate limits both to 255 bytes.
                out.put_u8(username.len() as u8);
                out.extend_from_slice(username.as_bytes());
                out.put_u8(password.len() as u8);
                out.extend_from_slice(password.as_bytes());
            }
            Command::Welcome => {}
            Command::Unknown { body, .. } => out.extend_from_slice(body),
        }
        out
    }

    /// Parses the body of a command frame.
    pub fn parse(body: Bytes) -> Result<Command, ProtoError> {
        if let Some(rest) = body.strip_prefix(LIBZMQ_PLAIN_ERROR) {
            // libzmq's PLAIN mechanism writes its ERROR name as the C string "\x05ERROR",
            // which C reads as 0x5E "RROR": accept that spelling too.
            return parse_error_body(body.slice_ref(rest));
        }
        let mut r = Reader::new(body);
        let n = r.u8("command name size")? as usize;
        if n == 0 {
            return Err(ProtoError::Malformed("command with an empty name".into()));
        }
        let name = r.take(n, "command name")?;
        let rest = r.rest();
        let cmd = match &name[..] {
            b"READY" => Command::Ready(Metadata::parse(&rest)?),
            b"INITIATE" => Command::Initiate(Metadata::parse(&rest)?),
            b"ERROR" => parse_error_body(rest)?,
            b"SUBSCRIBE" => Command::Subscribe(rest),
            b"CANCEL" => Command::Cancel(rest),
            b"PING" => {
                let mut r = Reader::new(rest);
                let ttl = r.u16("PING ttl")?;
                let mut context = r.rest();
                context.truncate(MAX_PING_CONTEXT);
                Command::Ping { ttl, context }
            }
            b"PONG" => {
                let mut c = rest;
                c.truncate(MAX_PING_CONTEXT);
                Command::Pong(c)
            }
            b"HELLO" => {
                let mut r = Reader::new(rest);
                let n = r.u8("HELLO username size")? as usize;
                let username = r.take(n, "HELLO username")?;
                let n = r.u8("HELLO password size")? as usize;
                let password = r.take(n, "HELLO password")?;
                r.finish("HELLO")?;
                let text = |b: Bytes, what: &str| {
                    String::from_utf8(b.to_vec()).map_err(|_| {
                        ProtoError::Malformed(format!("HELLO {what} is not valid UTF-8"))
                    })
                };
                Command::Hello {
                    username: text(username, "username")?,
                    password: text(password, "password")?,
                }
            }
            b"WELCOME" => {
                if !rest.is_empty() {
                    return Err(ProtoError::Malformed(format!(
                        "WELCOME with {} unexpected trailing bytes",
                        rest.len()
                    )));
                }
                Command::Welcome
            }
            _ => Command::Unknown { name, body: rest },
        };
        Ok(cmd)
    }
}

/// How libzmq's PLAIN mechanism (4.x, to this day) spells the start of an ERROR command:
/// its `"\x05ERROR"` literal is read by C as the escape `\x05E` (0x5E, `^`) then `RROR`.
pub const LIBZMQ_PLAIN_ERROR: &[u8] = b"^RROR";

fn parse_error_body(rest: Bytes) -> Result<Command, ProtoError> {
    let mut r = Reader::new(rest);
    let n = r.u8("ERROR reason size")? as usize;
    let reason = r.take(n, "ERROR reason")?;
    r.finish("ERROR")?;
    Ok(Command::Error(
        String::from_utf8_lossy(&reason).into_owned(),
    ))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Bounds-checked reading from a command body.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<Bytes, ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError::Malformed(format!(
                "{what}: {n} bytes announced, only {} left in the command",
                self.buf.len()
            )));
        }
        Ok(self.buf.split_to(n))
    }

    fn u8(&mut self, what: &str) -> Result<u8, ProtoError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, ProtoError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ProtoError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    fn finish(&self, what: &str) -> Result<(), ProtoError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Malformed(format!(
                "{what} with {} unexpected trailing bytes",
                self.buf.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: Command) {
        let bytes = c.encode().freeze();
        assert_eq!(Command::parse(bytes).unwrap(), c);
    }

    #[test]
    fn every_command_round_trips() {
        let mut md = Metadata::default();
        md.push("Socket-Type", "DEALER");
        md.push("Identity", Bytes::new());
        md.push("X-Big", vec![7u8; 300]);
        round_trip(Command::Ready(md.clone()));
        round_trip(Command::Initiate(md));
        round_trip(Command::Error("no".into()));
        round_trip(Command::Subscribe(Bytes::from_static(b"topic")));
        round_trip(Command::Cancel(Bytes::new()));
        round_trip(Command::Ping {
            ttl: 300,
            context: Bytes::from_static(b"ctx"),
        });
        round_trip(Command::Pong(Bytes::from_static(b"ctx")));
        round_trip(Command::Hello {
            username: "admin".into(),
            password: "secret".into(),
        });
        round_trip(Command::Welcome);
    }

    #[test]
    fn ready_byte_vector_from_libzmq() {
        // What a libzmq 4.3 DEALER with no routing id sends (NULL mechanism).
        let wire: &[u8] =
            b"\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER\x08Identity\x00\x00\x00\x00";
        let Command::Ready(md) = Command::parse(Bytes::from_static(wire)).unwrap() else {
            panic!("not READY");
        };
        assert_eq!(md.get("socket-type").unwrap(), "DEALER");
        assert_eq!(md.get("SOCKET-TYPE").unwrap(), "DEALER");
        assert_eq!(md.get("identity").unwrap(), "");
        assert!(md.get("resource").is_none());
        let mut again = Metadata::default();
        again.push("Socket-Type", "DEALER");
        again.push("Identity", Bytes::new());
        assert_eq!(&Command::Ready(again).encode()[..], wire);
    }

    #[test]
    fn ping_pong_byte_vectors() {
        let ping = Command::parse(Bytes::from_static(b"\x04PING\x00\x1eabc")).unwrap();
        assert_eq!(
            ping,
            Command::Ping {
                ttl: 30,
                context: Bytes::from_static(b"abc")
            }
        );
        // libzmq's PING without context.
        assert_eq!(
            Command::parse(Bytes::from_static(b"\x04PING\x00\x00")).unwrap(),
            Command::Ping {
                ttl: 0,
                context: Bytes::new()
            }
        );
        // A TTL cut short is malformed.
        assert!(matches!(
            Command::parse(Bytes::from_static(b"\x04PING\x00")),
            Err(ProtoError::Malformed(_))
        ));
        // Contexts beyond 16 bytes are cut (libzmq does the same).
        let long = Command::parse(Bytes::from_static(
            b"\x04PING\x00\x01abcdefghijklmnopqrstuvwxyz",
        ))
        .unwrap();
        assert_eq!(
            long,
            Command::Ping {
                ttl: 1,
                context: Bytes::from_static(b"abcdefghijklmnop")
            }
        );
        assert_eq!(
            &Command::Pong(Bytes::from_static(b"xy")).encode()[..],
            b"\x04PONGxy"
        );
    }

    #[test]
    fn plain_byte_vectors() {
        assert_eq!(
            &Command::Hello {
                username: "admin".into(),
                password: "pw".into()
            }
            .encode()[..],
            b"\x05HELLO\x05admin\x02pw"
        );
        assert_eq!(&Command::Welcome.encode()[..], b"\x07WELCOME");
        for bad in [
            &b"\x05HELLO\x05adm"[..],     // username overruns
            b"\x05HELLO\x05admin\x03pw",  // password overruns
            b"\x05HELLO\x05admin\x02pwX", // trailing garbage
            b"\x05HELLO\x02\xff\xfe\x00", // not UTF-8
            b"\x07WELCOMEx",              // WELCOME has no body
        ] {
            assert!(
                matches!(
                    Command::parse(Bytes::copy_from_slice(bad)),
                    Err(ProtoError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_and_subscribe_byte_vectors() {
        assert_eq!(
            Command::parse(Bytes::from_static(b"\x05ERROR\x03400")).unwrap(),
            Command::Error("400".into())
        );
        assert!(Command::parse(Bytes::from_static(b"\x05ERROR\x04400")).is_err());
        assert!(Command::parse(Bytes::from_static(b"\x05ERROR\x03400x")).is_err());
        assert_eq!(
            Command::parse(Bytes::from_static(b"\x09SUBSCRIBEnews")).unwrap(),
            Command::Subscribe(Bytes::from_static(b"news"))
        );
        assert_eq!(
            Command::parse(Bytes::from_static(b"\x06CANCEL")).unwrap(),
            Command::Cancel(Bytes::new())
        );
        // A reason longer than 255 bytes is cut on a char boundary when encoded.
        let long = "é".repeat(200);
        let enc = Command::Error(long).encode();
        assert_eq!(enc[6] as usize, 254);
        assert!(Command::parse(enc.freeze()).is_ok());
    }

    #[test]
    fn libzmq_plain_error_spelling_is_accepted() {
        // Captured from libzmq 4.3.5's PLAIN server rejecting a password.
        assert_eq!(
            Command::parse(Bytes::from_static(b"^RROR\x03400")).unwrap(),
            Command::Error("400".into())
        );
        assert!(Command::parse(Bytes::from_static(b"^RROR\x04400")).is_err());
    }

    #[test]
    fn metadata_limits() {
        // Empty name.
        assert!(Metadata::parse(&Bytes::from_static(b"\x00\x00\x00\x00\x00")).is_err());
        // Value length overruns the frame.
        assert!(Metadata::parse(&Bytes::from_static(b"\x01A\x00\x00\x00\x05abc")).is_err());
        // A 4 GiB value announced in a tiny frame: an error, no allocation.
        assert!(Metadata::parse(&Bytes::from_static(b"\x01A\xff\xff\xff\xff")).is_err());
        // Name size overruns.
        assert!(Metadata::parse(&Bytes::from_static(b"\x05AB")).is_err());
        // Bad characters in a name.
        assert!(Metadata::parse(&Bytes::from_static(b"\x02A \x00\x00\x00\x00")).is_err());
        // A truncated value size.
        assert!(Metadata::parse(&Bytes::from_static(b"\x01A\x00\x00")).is_err());
        // 255-byte names are fine, and empty metadata is fine.
        let mut wire = vec![255u8];
        wire.extend(std::iter::repeat_n(b'a', 255));
        wire.extend_from_slice(&[0, 0, 0, 1, b'v']);
        let md = Metadata::parse(&Bytes::from(wire)).unwrap();
        assert_eq!(md.get(&"A".repeat(255)).unwrap(), "v");
        assert_eq!(Metadata::parse(&Bytes::new()).unwrap(), Metadata::default());
        // Name checks used for our own config.
        assert!(check_property_name(b"X-Foo_1.2+3").is_ok());
        assert!(check_property_name(b"").is_err());
        assert!(check_property_name(&[b'a'; 256]).is_err());
        assert!(check_property_name(b"X:Foo").is_err());
    }

    #[test]
    fn malformed_commands() {
        assert!(Command::parse(Bytes::new()).is_err());
        assert!(Command::parse(Bytes::from_static(b"\x00")).is_err());
        assert!(Command::parse(Bytes::from_static(b"\x09READY")).is_err());
        assert!(
            Command::parse(Bytes::from_static(
                b"\x05READY\x0bSocket-Type\x00\x00\x00\x09DEALER"
            ))
            .is_err()
        );
        assert_eq!(
            Command::parse(Bytes::from_static(b"\x03FOOxyz")).unwrap(),
            Command::Unknown {
                name: Bytes::from_static(b"FOO"),
                body: Bytes::from_static(b"xyz")
            }
        );
    }
}
