//! The ZMTP frame codec: a flags byte, a 1- or 8-byte size, the body.
//!
//! ```text
//!  flags: bit 0 MORE, bit 1 LONG (8-byte size), bit 2 COMMAND, bits 3..7 reserved (0)
//!  short frame: flags  size(1)        body
//!  long frame:  flags  size(8, BE)    body
//! ```
//!
//! [`decode`] tells "need more bytes" (`Ok(None)`) apart from "malformed" (`Err`). It
//! reads the header first and rejects reserved bits, MORE on a command and a size above
//! the limit before a single byte of the body is waited for or buffered, so a peer that
//! announces a 2^63-byte frame costs nothing. Bodies are split off the input buffer
//! without copying.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtoError;

/// The MORE flag: another frame of the same message follows.
pub const FLAG_MORE: u8 = 0x01;
/// The LONG flag: the size is 8 bytes.
pub const FLAG_LONG: u8 = 0x02;
/// The COMMAND flag: the frame is a command, not message data.
pub const FLAG_COMMAND: u8 = 0x04;
const RESERVED: u8 = !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND);

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Another frame of the same message follows.
    pub more: bool,
    /// This is a command frame.
    pub command: bool,
    /// The body.
    pub body: Bytes,
}

/// The parsed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// MORE flag.
    pub more: bool,
    /// COMMAND flag.
    pub command: bool,
    /// Body size.
    pub size: u64,
    /// Header length in bytes (2 or 9).
    pub len: usize,
}

/// Parses a frame header from the start of `buf`. `Ok(None)`: more bytes needed.
pub fn decode_header(buf: &[u8], max_size: Option<u64>) -> Result<Option<Header>, ProtoError> {
    let Some(&flags) = buf.first() else {
        return Ok(None);
    };
    if flags & RESERVED != 0 {
        return Err(ProtoError::Malformed(format!(
            "frame flags {flags:#04x} have reserved bits set"
        )));
    }
    let more = flags & FLAG_MORE != 0;
    let command = flags & FLAG_COMMAND != 0;
    if more && command {
        return Err(ProtoError::Malformed(
            "command frame with the MORE flag".into(),
        ));
    }
    let (size, len) = if flags & FLAG_LONG != 0 {
        let Some(s) = buf.get(1..9) else {
            return Ok(None);
        };
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        (u64::from_be_bytes(a), 9)
    } else {
        let Some(&s) = buf.get(1) else {
            return Ok(None);
        };
        (u64::from(s), 2)
    };
    if let Some(limit) = max_size {
        if size > limit {
            return Err(ProtoError::MessageTooLarge { size, limit });
        }
    }
    // On 32-bit targets a size beyond the address space can never be buffered.
    if usize::try_from(size).is_err() {
        return Err(ProtoError::MessageTooLarge {
            size,
            limit: usize::MAX as u64,
        });
    }
    Ok(Some(Header {
        more,
        command,
        size,
        len,
    }))
}

/// Takes one complete frame off the front of `buf`. `Ok(None)` means more bytes are
/// needed (and `buf` is untouched); `Err` means the stream is broken for good.
pub fn decode(buf: &mut BytesMut, max_size: Option<u64>) -> Result<Option<Frame>, ProtoError> {
    Ok(decode_mut(buf, max_size)?.map(|(h, body)| Frame {
        more: h.more,
        command: h.command,
        body: body.freeze(),
    }))
}

/// [`decode`], with the body still mutable (CURVE decrypts it in place). The body is
/// split off `buf` without copying.
pub fn decode_mut(
    buf: &mut BytesMut,
    max_size: Option<u64>,
) -> Result<Option<(Header, BytesMut)>, ProtoError> {
    let Some(h) = decode_header(buf, max_size)? else {
        return Ok(None);
    };
    // decode_header checked that the size fits in usize.
    let size = h.size as usize;
    if buf.len() - h.len < size {
        return Ok(None);
    }
    buf.advance(h.len);
    Ok(Some((h, buf.split_to(size))))
}

/// Appends a frame header for a body of `size` bytes (short form when it fits, as libzmq).
pub fn encode_header(out: &mut BytesMut, more: bool, command: bool, size: usize) {
    let mut flags = 0;
    if more {
        flags |= FLAG_MORE;
    }
    if command {
        flags |= FLAG_COMMAND;
    }
    if size > 255 {
        out.put_u8(flags | FLAG_LONG);
        out.put_u64(size as u64);
    } else {
        out.put_u8(flags);
        out.put_u8(size as u8);
    }
}

/// Appends a whole frame (header and body).
pub fn encode(out: &mut BytesMut, more: bool, command: bool, body: &[u8]) {
    encode_header(out, more, command, body.len());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], max: Option<u64>) -> Result<Option<Frame>, ProtoError> {
        decode(&mut BytesMut::from(bytes), max)
    }

    #[test]
    fn short_and_long_frames_round_trip() {
        for (more, command, len) in [
            (false, false, 0),
            (true, false, 1),
            (false, true, 255),
            (true, false, 256),
            (false, false, 70_000),
        ] {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = BytesMut::new();
            encode(&mut out, more, command, &body);
            let hdr = if len > 255 { 9 } else { 2 };
            assert_eq!(out.len(), hdr + len);
            assert_eq!(out[0] & FLAG_LONG != 0, len > 255);
            // Every strict prefix needs more bytes and leaves the buffer as it was.
            for cut in [0, 1, hdr - 1, hdr, out.len() - 1] {
                if cut >= out.len() {
                    continue;
                }
                let mut part = BytesMut::from(&out[..cut]);
                assert_eq!(decode(&mut part, None).unwrap(), None, "cut {cut}");
                assert_eq!(part.len(), cut);
            }
            out.extend_from_slice(b"next");
            let f = decode(&mut out, None).unwrap().unwrap();
            assert_eq!(f.more, more);
            assert_eq!(f.command, command);
            assert_eq!(&f.body[..], &body[..]);
            assert_eq!(&out[..], b"next");
        }
    }

    #[test]
    fn byte_vectors() {
        // A short final data frame "hi".
        assert_eq!(
            dec(&[0x00, 2, b'h', b'i'], None).unwrap().unwrap(),
            Frame {
                more: false,
                command: false,
                body: Bytes::from_static(b"hi")
            }
        );
        // A long frame with MORE whose size (3) would fit a short one: accepted, as libzmq.
        let f = dec(&[0x03, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3], None)
            .unwrap()
            .unwrap();
        assert!(f.more && !f.command);
        assert_eq!(&f.body[..], &[1, 2, 3]);
        // A command frame.
        let f = dec(&[0x04, 1, 9], None).unwrap().unwrap();
        assert!(f.command && !f.more);
    }

    #[test]
    fn reserved_bits_and_more_on_command_are_malformed() {
        for flags in [0x08u8, 0x10, 0x20, 0x40, 0x80, 0xFF] {
            assert!(
                matches!(dec(&[flags], None), Err(ProtoError::Malformed(_))),
                "{flags:#x}"
            );
        }
        assert!(matches!(
            dec(&[FLAG_COMMAND | FLAG_MORE], None),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        // 2^63 announced, no body at all: refused at once.
        let mut hdr = vec![FLAG_LONG];
        hdr.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(
            dec(&hdr, Some(1 << 20)),
            Err(ProtoError::MessageTooLarge {
                size: 1 << 63,
                limit: 1 << 20
            })
        );
        // Without a limit it just needs more bytes (and allocated nothing for them).
        let mut buf = BytesMut::from(&hdr[..]);
        let cap = buf.capacity();
        assert_eq!(decode(&mut buf, None).unwrap(), None);
        assert_eq!(buf.capacity(), cap);
        // The limit is inclusive, per frame.
        assert!(dec(&[0, 4, 1, 2, 3, 4], Some(4)).unwrap().is_some());
        assert_eq!(
            dec(&[0, 5], Some(4)),
            Err(ProtoError::MessageTooLarge { size: 5, limit: 4 })
        );
    }
}
