//! The socket types of ZeroMQ and which of them may talk to which (RFC 23/37).

use std::fmt;
use std::str::FromStr;

/// The kind of a socket: its messaging pattern and its role in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketType {
    /// Exclusive pair: one peer, both directions.
    Pair,
    /// Publisher: sends to every subscriber whose subscription matches.
    Pub,
    /// Subscriber: receives what it subscribed to.
    Sub,
    /// Publisher that also sees (un)subscriptions as messages.
    XPub,
    /// Subscriber that sends (un)subscriptions as messages.
    XSub,
    /// Load-balances messages to its peers.
    Push,
    /// Fair-queues messages from its peers.
    Pull,
    /// Request side of request/reply: strictly send, receive, send...
    Req,
    /// Reply side of request/reply.
    Rep,
    /// Asynchronous request side: load-balances out, fair-queues in.
    Dealer,
    /// Asynchronous reply side: addresses peers by routing id.
    Router,
}

impl SocketType {
    /// Every socket type, in RFC order.
    pub const ALL: [SocketType; 11] = [
        SocketType::Pair,
        SocketType::Pub,
        SocketType::Sub,
        SocketType::XPub,
        SocketType::XSub,
        SocketType::Push,
        SocketType::Pull,
        SocketType::Req,
        SocketType::Rep,
        SocketType::Dealer,
        SocketType::Router,
    ];

    /// The name sent in the ZMTP `Socket-Type` property, e.g. `"DEALER"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketType::Pair => "PAIR",
            SocketType::Pub => "PUB",
            SocketType::Sub => "SUB",
            SocketType::XPub => "XPUB",
            SocketType::XSub => "XSUB",
            SocketType::Push => "PUSH",
            SocketType::Pull => "PULL",
            SocketType::Req => "REQ",
            SocketType::Rep => "REP",
            SocketType::Dealer => "DEALER",
            SocketType::Router => "ROUTER",
        }
    }

    /// Parses a ZMTP `Socket-Type` value. ZMTP requires upper case; we accept any case.
    pub fn from_name(name: &[u8]) -> Option<SocketType> {
        SocketType::ALL
            .into_iter()
            .find(|t| t.as_str().as_bytes().eq_ignore_ascii_case(name))
    }

    /// Whether a socket of this type may be connected to a peer of type `peer`
    /// (the table of RFC 37, which is libzmq's).
    pub fn is_compatible_with(self, peer: SocketType) -> bool {
        use SocketType::*;
        match self {
            Pair => peer == Pair,
            Pub | XPub => matches!(peer, Sub | XSub),
            Sub | XSub => matches!(peer, Pub | XPub),
            Push => peer == Pull,
            Pull => peer == Push,
            Req => matches!(peer, Rep | Router),
            Rep => matches!(peer, Req | Dealer),
            Dealer => matches!(peer, Rep | Dealer | Router),
            Router => matches!(peer, Req | Dealer | Router),
        }
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SocketType {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SocketType::from_name(s.as_bytes()).ok_or_else(|| {
            crate::Error::InvalidArgument(format!(
                "unknown socket type {s:?} (expected one of PAIR, PUB, SUB, XPUB, XSUB, PUSH, PULL, REQ, REP, DEALER, ROUTER)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for t in SocketType::ALL {
            assert_eq!(SocketType::from_name(t.as_str().as_bytes()), Some(t));
            let lower = t.as_str().to_ascii_lowercase();
            assert_eq!(lower.parse::<SocketType>().unwrap(), t);
        }
        assert_eq!(SocketType::from_name(b"STREAM"), None);
        assert!("nope".parse::<SocketType>().is_err());
    }

    #[test]
    fn compatibility_is_symmetric_and_matches_rfc() {
        for a in SocketType::ALL {
            for b in SocketType::ALL {
                assert_eq!(a.is_compatible_with(b), b.is_compatible_with(a), "{a} {b}");
            }
        }
        let valid = SocketType::ALL
            .iter()
            .flat_map(|a| SocketType::ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.is_compatible_with(*b))
            .count();
        // PAIR-PAIR; PUB/XPUB with SUB/XSUB both ways; PUSH-PULL both ways;
        // REQ: REP ROUTER; REP: REQ DEALER; DEALER: REP DEALER ROUTER; ROUTER: REQ DEALER ROUTER.
        assert_eq!(valid, 1 + 8 + 2 + 2 + 2 + 3 + 3);
        assert!(!SocketType::Req.is_compatible_with(SocketType::Req));
        assert!(!SocketType::Pub.is_compatible_with(SocketType::Pull));
    }
}
