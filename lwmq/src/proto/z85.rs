//! Z85 (ZeroMQ RFC 32): binary as printable text, the form CURVE keys are written in.
//!
//! Every 4 bytes (a big-endian 32-bit number) become 5 characters of an 85-character
//! alphabet, most significant digit first, so a 32-byte CURVE key is 40 characters. The
//! binary length must be a multiple of 4 and the text length a multiple of 5 (RFC 32
//! has no padding); anything else, a character outside the alphabet, or a 5-character
//! group worth more than `0xFFFF_FFFF` is a [`Z85Error`].
//!
//! ```
//! use lwmq::proto::z85;
//! let bytes = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
//! assert_eq!(z85::encode(&bytes).unwrap(), "HelloWorld");
//! assert_eq!(z85::decode("HelloWorld").unwrap(), bytes);
//! ```

use std::fmt;

/// The 85 characters, in digit order.
const ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Character code (offset by 32) to digit value; 0xFF is not in the alphabet.
const DIGITS: [u8; 96] = {
    let mut t = [0xFFu8; 96];
    let mut i = 0;
    while i < 85 {
        t[(ALPHABET[i] - 32) as usize] = i as u8;
        i += 1;
    }
    t
};

/// Why Z85 encoding or decoding failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Z85Error {
    /// The input length is not a multiple of the group size (4 bytes to encode, 5
    /// characters to decode).
    Length {
        /// The length given.
        len: usize,
        /// The multiple it must be.
        multiple: usize,
    },
    /// A character outside the Z85 alphabet.
    Character {
        /// Byte offset of the character in the text.
        position: usize,
        /// The offending character.
        found: char,
    },
    /// A 5-character group encodes a value above `0xFFFF_FFFF`.
    Overflow {
        /// Byte offset of the group in the text.
        position: usize,
    },
    /// The decoded value has the wrong size for what it is meant to be (a CURVE key
    /// is 32 bytes, 40 characters).
    KeySize {
        /// The length of the text given.
        len: usize,
    },
}

impl fmt::Display for Z85Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Z85Error::Length { len, multiple: 4 } => write!(
                f,
                "Z85 encodes whole groups of 4 bytes; {len} bytes is not a multiple of 4"
            ),
            Z85Error::Length { len, multiple } => write!(
                f,
                "Z85 text comes in groups of {multiple} characters; {len} is not a multiple of {multiple}"
            ),
            Z85Error::Character { position, found } => {
                write!(f, "{found:?} at offset {position} is not a Z85 character")
            }
            Z85Error::Overflow { position } => write!(
                f,
                "the Z85 group at offset {position} is worth more than 32 bits"
            ),
            Z85Error::KeySize { len } => {
                write!(f, "a CURVE key in Z85 is 40 characters; this one is {len}")
            }
        }
    }
}

impl std::error::Error for Z85Error {}

impl From<Z85Error> for crate::Error {
    fn from(e: Z85Error) -> crate::Error {
        crate::Error::InvalidArgument(e.to_string())
    }
}

/// Encodes `data` (a multiple of 4 bytes long) as Z85 text.
pub fn encode(data: &[u8]) -> Result<String, Z85Error> {
    if data.len() % 4 != 0 {
        return Err(Z85Error::Length {
            len: data.len(),
            multiple: 4,
        });
    }
    let mut out = String::with_capacity(data.len() / 4 * 5);
    for group in data.chunks_exact(4) {
        let mut value = u32::from_be_bytes([group[0], group[1], group[2], group[3]]);
        let mut digits = [0u8; 5];
        for d in digits.iter_mut().rev() {
            *d = ALPHABET[(value % 85) as usize];
            value /= 85;
        }
        // Every alphabet byte is ASCII.
        out.extend(digits.iter().map(|&b| char::from(b)));
    }
    Ok(out)
}

/// Decodes Z85 `text` (a multiple of 5 characters long).
pub fn decode(text: &str) -> Result<Vec<u8>, Z85Error> {
    let bytes = text.as_bytes();
    if bytes.len() % 5 != 0 {
        return Err(Z85Error::Length {
            len: bytes.len(),
            multiple: 5,
        });
    }
    let mut out = Vec::with_capacity(bytes.len() / 5 * 4);
    for (g, group) in bytes.chunks_exact(5).enumerate() {
        let mut value: u64 = 0;
        for (i, &b) in group.iter().enumerate() {
            let digit = b
                .checked_sub(32)
                .and_then(|i| DIGITS.get(usize::from(i)))
                .copied()
                .filter(|&d| d != 0xFF);
            let Some(digit) = digit else {
                let position = g * 5 + i;
                // A non-ASCII byte starts a multi-byte char: report the whole char.
                let found = text[position..].chars().next().unwrap_or('\u{FFFD}');
                return Err(Z85Error::Character { position, found });
            };
            value = value * 85 + u64::from(digit);
        }
        let Ok(value) = u32::try_from(value) else {
            return Err(Z85Error::Overflow { position: g * 5 });
        };
        out.extend_from_slice(&value.to_be_bytes());
    }
    Ok(out)
}

/// Decodes a 40-character Z85 CURVE key into its 32 bytes.
pub fn decode_key(text: &str) -> Result<[u8; 32], Z85Error> {
    if text.len() != 40 {
        return Err(Z85Error::KeySize { len: text.len() });
    }
    let v = decode(text)?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&v);
    Ok(key)
}

/// Encodes a 32-byte CURVE key as 40 characters of Z85.
pub fn encode_key(key: &[u8; 32]) -> String {
    // 32 is a multiple of 4.
    encode(key).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_32_test_vector() {
        let bytes = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        assert_eq!(encode(&bytes).unwrap(), "HelloWorld");
        assert_eq!(decode("HelloWorld").unwrap(), bytes);
    }

    #[test]
    fn libzmq_vectors() {
        // libzmq's tests/test_base85.cpp: the extremes round trip.
        assert_eq!(encode(&[0, 0, 0, 0]).unwrap(), "00000");
        assert_eq!(encode(&[0xFF; 4]).unwrap(), "%nSc0");
        assert_eq!(decode("%nSc0").unwrap(), [0xFF; 4]);
        // ...a regular key decodes and encodes back unchanged...
        let key = "r^/rM9M=rMToK)63O8dCvd9D<PY<7iGlC+{BiSnG";
        assert_eq!(encode(&decode(key).unwrap()).unwrap(), key);
        // ...and these are refused.
        assert_eq!(
            decode("01234567"),
            Err(Z85Error::Length {
                len: 8,
                multiple: 5
            })
        );
        assert!(matches!(decode("0"), Err(Z85Error::Length { .. })));
        assert_eq!(decode("#####"), Err(Z85Error::Overflow { position: 0 }));
        assert_eq!(decode("%nSc1"), Err(Z85Error::Overflow { position: 0 }));
        assert_eq!(
            decode("####\x04"),
            Err(Z85Error::Character {
                position: 4,
                found: '\x04'
            })
        );
        assert!(matches!(decode("####\u{80}"), Err(Z85Error::Length { .. })));
        assert_eq!(
            decode("0000\u{7f}"),
            Err(Z85Error::Character {
                position: 4,
                found: '\u{7f}'
            })
        );
        assert_eq!(
            decode("000é"),
            Err(Z85Error::Character {
                position: 3,
                found: 'é'
            })
        );
        assert_eq!(
            decode("000 0"),
            Err(Z85Error::Character {
                position: 3,
                found: ' '
            })
        );
        assert!(matches!(
            encode(&[1]),
            Err(Z85Error::Length {
                len: 1,
                multiple: 4
            })
        ));
        assert!(matches!(encode(&[0; 42]), Err(Z85Error::Length { .. })));
        assert_eq!(encode(&[]).unwrap(), "");
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn every_character_and_every_digit_position() {
        for (i, &c) in ALPHABET.iter().enumerate() {
            for pos in 0..5 {
                let mut text = *b"00000";
                text[pos] = c;
                let text = std::str::from_utf8(&text).unwrap();
                let want = i as u64 * 85u64.pow(4 - pos as u32);
                if want > u64::from(u32::MAX) {
                    assert_eq!(decode(text), Err(Z85Error::Overflow { position: 0 }));
                    continue;
                }
                let v = decode(text).unwrap();
                let n = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                assert_eq!(u64::from(n), want);
                assert_eq!(encode(&v).unwrap(), text);
            }
        }
    }

    #[test]
    fn keys() {
        let text = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
        let key = decode_key(text).unwrap();
        assert_eq!(encode_key(&key), text);
        assert_eq!(decode_key("HelloWorld"), Err(Z85Error::KeySize { len: 10 }));
        // Errors read as sentences.
        assert_eq!(
            decode_key("HelloWorld").unwrap_err().to_string(),
            "a CURVE key in Z85 is 40 characters; this one is 10"
        );
        assert_eq!(
            decode("000 0").unwrap_err().to_string(),
            "' ' at offset 3 is not a Z85 character"
        );
    }
}
