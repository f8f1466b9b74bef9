//! The stamp every burn message carries: who sent it (process id in the scenario and
//! incarnation), its sequence number on that sender, when it was sent, a payload, and a
//! CRC-32 over all of it.
//!
//! Layout (little-endian): `magic u32 | src u32 | inc u32 | seq u64 | sent_us u64 |
//! len u32 | payload[len] | crc32 u32`, the CRC covering everything before it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const MAGIC: u32 = 0x4e52_5542; // "BURN"
const HEADER: usize = 32;

/// The identity of one message: sender, sender's incarnation, sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MsgId {
    /// The sending process's index in the scenario.
    pub src: u32,
    /// The sender's incarnation (0 at first start, +1 at every restart).
    pub inc: u32,
    /// Sequence number on that incarnation, from 0.
    pub seq: u64,
}

/// A stamp read back from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Who sent it and its number.
    pub id: MsgId,
    /// Wall-clock send time, microseconds since the Unix epoch.
    pub sent_us: u64,
}

/// Why a message is not a valid stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadStamp {
    /// Shorter than a header, wrong magic, or a length that does not fit.
    Malformed(String),
    /// The header parses but the CRC does not match: the message was corrupted. The
    /// header's id is given (it may itself be the corrupted part).
    Checksum(MsgId),
}

/// Microseconds since the Unix epoch (the clock all processes of a run share).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Builds the message `id` with a payload of `len` bytes derived from the id.
pub fn encode(id: MsgId, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + len + 4);
    v.extend_from_slice(&MAGIC.to_le_bytes());
    v.extend_from_slice(&id.src.to_le_bytes());
    v.extend_from_slice(&id.inc.to_le_bytes());
    v.extend_from_slice(&id.seq.to_le_bytes());
    v.extend_from_slice(&now_us().to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    let mut x = id.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(id.src);
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads and verifies a stamp.
pub fn decode(b: &[u8]) -> Result<Stamp, BadStamp> {
    if b.len() < HEADER + 4 {
        return Err(BadStamp::Malformed(format!(
            "{} bytes, shorter than a stamp",
            b.len()
        )));
    }
    if u32_at(b, 0) != MAGIC {
        return Err(BadStamp::Malformed("wrong magic".into()));
    }
    let id = MsgId {
        src: u32_at(b, 4),
        inc: u32_at(b, 8),
        seq: u64_at(b, 12),
    };
    let len = u32_at(b, 28) as usize;
    if b.len() != HEADER + len + 4 {
        return Err(BadStamp::Malformed(format!(
            "length field {len} but {} bytes",
            b.len()
        )));
    }
    let crc = u32_at(b, HEADER + len);
    if crc32fast::hash(&b[..HEADER + len]) != crc {
        return Err(BadStamp::Checksum(id));
    }
    Ok(Stamp {
        id,
        sent_us: u64_at(b, 20),
    })
}

/// The frame a proxy life appends to every message it forwards: its index in the
/// scenario and its incarnation (`u32` each, little-endian).
pub fn via_frame(id: u32, inc: u32) -> [u8; 8] {
    let mut f = [0u8; 8];
    f[..4].copy_from_slice(&id.to_le_bytes());
    f[4..].copy_from_slice(&inc.to_le_bytes());
    f
}

/// Reads the proxy frames after a message's stamp, first hop first.
pub fn decode_via(frames: &[impl AsRef<[u8]>]) -> Result<Vec<(u32, u32)>, String> {
    frames
        .iter()
        .map(|f| {
            let f = f.as_ref();
            if f.len() == 8 {
                Ok((u32_at(f, 0), u32_at(f, 4)))
            } else {
                Err(format!("a proxy frame of {} bytes instead of 8", f.len()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let id = MsgId {
            src: 3,
            inc: 1,
            seq: 77,
        };
        let mut m = encode(id, 100);
        assert_eq!(decode(&m).map(|s| s.id), Ok(id));
        m[40] ^= 1;
        assert_eq!(decode(&m), Err(BadStamp::Checksum(id)));
        assert!(matches!(decode(&m[..10]), Err(BadStamp::Malformed(_))));
        let mut short = encode(id, 0);
        short.push(0);
        assert!(matches!(decode(&short), Err(BadStamp::Malformed(_))));
    }

    #[test]
    fn via_frames() {
        let frames = vec![via_frame(3, 1).to_vec(), via_frame(9, 0).to_vec()];
        assert_eq!(decode_via(&frames), Ok(vec![(3, 1), (9, 0)]));
        assert!(decode_via(&[vec![1u8, 2, 3]]).is_err());
        assert_eq!(decode_via(&[] as &[Vec<u8>]), Ok(vec![]));
    }
}
