//! The 64-byte ZMTP greeting: encoding in the two parts we send, and parsing of the
//! peer's as its bytes arrive.
//!
//! ```text
//!  0      1..9        9     10     11     12..32          32         33..64
//!  0xFF   padding     0x7F  major  minor  mechanism(20)   as-server  filler(31)
//!  └──────── signature ───┘
//! ```
//!
//! The padding is what libzmq sends (a big-endian length of 1, a relic of ZMTP 1.0's
//! identity frame); we only check byte 0 and the low bit of byte 9 as libzmq does, so an
//! unversioned (ZMTP 1.0) peer is recognised and refused.

use super::ProtoError;

/// Length of the whole greeting.
pub const GREETING_LEN: usize = 64;
/// Length of the signature.
pub const SIGNATURE_LEN: usize = 10;
/// Offset of the major version byte.
pub const MAJOR_POS: usize = 10;
/// The ZMTP major version we speak.
pub const MAJOR: u8 = 3;
/// The ZMTP minor version we speak.
pub const MINOR: u8 = 1;
/// Length of the mechanism field.
pub const MECHANISM_LEN: usize = 20;

/// Our first part: signature and major version, sent at once.
pub fn encode_first() -> [u8; SIGNATURE_LEN + 1] {
    [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, MAJOR]
}

/// Our second part: minor version, mechanism name, as-server flag and filler.
pub fn encode_rest(mechanism: &str, as_server: bool) -> [u8; GREETING_LEN - SIGNATURE_LEN - 1] {
    let mut out = [0u8; GREETING_LEN - SIGNATURE_LEN - 1];
    out[0] = MINOR;
    let name = mechanism.as_bytes();
    let n = name.len().min(MECHANISM_LEN);
    out[1..1 + n].copy_from_slice(&name[..n]);
    out[1 + MECHANISM_LEN] = u8::from(as_server);
    out
}

/// Checks as much of a peer's greeting as has arrived (`bytes` is its prefix, of any
/// length). An error as soon as the bytes prove the peer is not a ZMTP 3.x peer.
pub fn check_prefix(bytes: &[u8]) -> Result<(), ProtoError> {
    if let Some(&b) = bytes.first() {
        if b != 0xFF {
            // A ZMTP 1.0 peer starts with a frame length, never 0xFF in practice.
            return Err(ProtoError::UnsupportedVersion { major: 1, minor: 0 });
        }
    }
    if let Some(&b) = bytes.get(SIGNATURE_LEN - 1) {
        if b & 1 == 0 {
            // libzmq's test: the low bit clear means an unversioned ZMTP 1.0 peer.
            return Err(ProtoError::UnsupportedVersion { major: 1, minor: 0 });
        }
    }
    if let Some(&rev) = bytes.get(MAJOR_POS) {
        if rev < MAJOR {
            // ZMTP 2.0 sends revision 1 here, ZMTP 1.0 (versioned by libzmq 2.x) 0.
            let major = if rev == 0 { 1 } else { 2 };
            return Err(ProtoError::UnsupportedVersion { major, minor: 0 });
        }
    }
    Ok(())
}

/// A peer's complete greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Major version (3 or more).
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Mechanism name, without the NUL padding.
    pub mechanism: Vec<u8>,
    /// The as-server flag.
    pub as_server: bool,
}

impl Greeting {
    /// Parses the peer's full 64-byte greeting.
    pub fn parse(bytes: &[u8; GREETING_LEN]) -> Result<Greeting, ProtoError> {
        check_prefix(bytes)?;
        let mech = &bytes[12..12 + MECHANISM_LEN];
        let end = mech.iter().position(|&b| b == 0).unwrap_or(MECHANISM_LEN);
        if mech[end..].iter().any(|&b| b != 0) {
            return Err(ProtoError::Malformed(
                "greeting mechanism name is not NUL-padded".into(),
            ));
        }
        let as_server = match bytes[32] {
            0 => false,
            1 => true,
            b => {
                return Err(ProtoError::Malformed(format!(
                    "greeting as-server flag is {b}; must be 0 or 1"
                )));
            }
        };
        Ok(Greeting {
            major: bytes[MAJOR_POS],
            minor: bytes[MAJOR_POS + 1],
            mechanism: mech[..end].to_vec(),
            as_server,
        })
    }

    /// The ZMTP minor version we speak with this peer: 3.0 peers get 3.0, 3.1 and later
    /// (including any major version above 3) get 3.1.
    pub fn negotiated_minor(&self) -> u8 {
        if self.major > MAJOR {
            MINOR
        } else {
            self.minor.min(MINOR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(mechanism: &str, as_server: bool) -> [u8; GREETING_LEN] {
        let mut g = [0u8; GREETING_LEN];
        g[..11].copy_from_slice(&encode_first());
        g[11..].copy_from_slice(&encode_rest(mechanism, as_server));
        g
    }

    #[test]
    fn our_greeting_matches_the_rfc_layout() {
        let g = full("PLAIN", true);
        assert_eq!(g[0], 0xFF);
        assert_eq!(g[9], 0x7F);
        assert_eq!(&g[10..12], &[3, 1]);
        assert_eq!(&g[12..17], b"PLAIN");
        assert!(g[17..32].iter().all(|&b| b == 0));
        assert_eq!(g[32], 1);
        assert!(g[33..].iter().all(|&b| b == 0));
        let parsed = Greeting::parse(&g).unwrap();
        assert_eq!(
            parsed,
            Greeting {
                major: 3,
                minor: 1,
                mechanism: b"PLAIN".to_vec(),
                as_server: true
            }
        );
    }

    #[test]
    fn version_negotiation() {
        let mut g = full("NULL", false);
        assert_eq!(Greeting::parse(&g).unwrap().negotiated_minor(), 1);
        g[11] = 0;
        assert_eq!(Greeting::parse(&g).unwrap().negotiated_minor(), 0);
        g[11] = 7;
        assert_eq!(Greeting::parse(&g).unwrap().negotiated_minor(), 1);
        g[10] = 4;
        g[11] = 0;
        assert_eq!(Greeting::parse(&g).unwrap().negotiated_minor(), 1);
    }

    #[test]
    fn old_peers_are_refused_as_early_as_possible() {
        // ZMTP 2.0: revision 1 at byte 10.
        let mut g = full("NULL", false);
        g[10] = 1;
        assert_eq!(
            check_prefix(&g[..11]),
            Err(ProtoError::UnsupportedVersion { major: 2, minor: 0 })
        );
        g[10] = 0;
        assert_eq!(
            check_prefix(&g[..11]),
            Err(ProtoError::UnsupportedVersion { major: 1, minor: 0 })
        );
        // ZMTP 1.0: a short frame (length 5, flags 0) instead of 0xFF.
        assert_eq!(
            check_prefix(&[5, 0, b'h']),
            Err(ProtoError::UnsupportedVersion { major: 1, minor: 0 })
        );
        // 0xFF then an 8-byte length and flags with the low bit clear: unversioned.
        assert!(check_prefix(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x00]).is_err());
        // Prefixes of a good greeting are fine.
        let good = full("NULL", false);
        for n in 0..=GREETING_LEN {
            assert_eq!(check_prefix(&good[..n]), Ok(()), "prefix {n}");
        }
    }

    #[test]
    fn bad_mechanism_padding_and_as_server_flag() {
        let mut g = full("NULL", false);
        g[20] = b'X';
        assert!(matches!(Greeting::parse(&g), Err(ProtoError::Malformed(_))));
        let mut g = full("NULL", false);
        g[32] = 2;
        assert!(matches!(Greeting::parse(&g), Err(ProtoError::Malformed(_))));
    }
}
