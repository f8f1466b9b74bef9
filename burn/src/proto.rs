//! What a role program tells the harness: one JSON object per line on its stdout.
//! The harness tells a role what to do with one word per line on its stdin (`stop`,
//! `slow MICROS`); the end of stdin means the harness is gone and the role exits.

use serde::{Deserialize, Serialize};

use crate::check::GapEvent;
use crate::wire::MsgId;

/// One line from a role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Report {
    /// Started: its sockets are bound or connected.
    Hello {
        /// Its process id (the harness signals this one).
        pid: u32,
    },
    /// Counters so far (cumulative), every report interval.
    Stats(Stats),
    /// A gap in a sender's sequence, for the harness to judge against the faults.
    Gap(GapEvent),
    /// A violation the role saw itself (duplicate, reordering, corruption, a request
    /// unanswered or executed twice, a wrong reply).
    Bad {
        /// When (ms since the epoch).
        at_ms: u64,
        /// What kind of violation (the names of [`crate::check::Violation::kind`]).
        kind: String,
        /// The message concerned.
        message: Option<MsgId>,
        /// The rest.
        detail: String,
        /// The proxy lives the message came through, `(index, incarnation)`.
        #[serde(default)]
        via: Vec<(u32, u32)>,
    },
    /// The last counters, after `stop`.
    Final(Stats),
}

/// A role's cumulative counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Messages (or requests) sent.
    pub sent: u64,
    /// Messages (or replies) received and valid.
    pub received: u64,
    /// REP: requests its application executed.
    pub executed: u64,
    /// Received per sender incarnation: `(src, inc, count)`.
    pub per_source: Vec<(u32, u32, u64)>,
    /// Receivers: the highest sequence number received per sender incarnation,
    /// `(src, inc, seq)`.
    #[serde(default)]
    pub highest: Vec<(u32, u32, u64)>,
    /// REQ: resends, failovers, given up; REP: answered from the cache, copies dropped
    /// (lwmq's `ReqRepStats`).
    pub resends: u64,
    /// See `resends`.
    pub failovers: u64,
    /// See `resends`.
    pub given_up: u64,
    /// See `resends`.
    pub replies_from_cache: u64,
    /// See `resends`.
    pub duplicates_dropped: u64,
    /// REQ: round trips in µs, `[p50, p99, max]`.
    pub rtt_us: Option<[u64; 3]>,
    /// Receivers: the first message of each sender incarnation since the last report,
    /// `(src, inc, at_ms)` (when a restarted sender got through again).
    pub joined: Vec<(u32, u32, u64)>,
    /// When this life first moved a message (received one; REP: executed one).
    pub first_at_ms: Option<u64>,
    /// Receivers: messages that came after a higher-numbered one of the same sender
    /// life on another pipe (through an older proxy life).
    #[serde(default)]
    pub late_across_pipes: u64,
    /// Silences of more than a second since the last report, `(sender, from_ms, to_ms)`
    /// (the sender is `u32::MAX` for a REQ waiting on its reply).
    pub outages: Vec<(u32, u64, u64)>,
}
