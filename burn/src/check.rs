//! The checker: the invariants, as pure functions and small state machines that the role
//! programs (per-message checks, in the receiving process) and the harness (judging
//! gaps against the faults, totals, resources) run. No I/O here, so it is unit-tested.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::wire::MsgId;

/// What one received message was, for its sender's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The first message seen from this sender incarnation (any number: a receiver
    /// that starts late, or restarts, joins the stream where it is).
    First,
    /// The next number expected.
    InOrder,
    /// Numbers `from..=to` were skipped (held back as a pending gap: a late arrival
    /// turns part of it into a reordering instead).
    Gap {
        /// First skipped number.
        from: u64,
        /// Last skipped number.
        to: u64,
    },
    /// Seen before: a duplicate.
    Duplicate,
    /// A number that had been skipped arrives late: reordered.
    Late,
}

/// A gap in one sender's sequence, as a receiver reports it to the harness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapEvent {
    /// Sender index in the scenario.
    pub src: u32,
    /// Sender incarnation.
    pub inc: u32,
    /// The proxy lives the messages came through, `(proxy index, incarnation)`, first
    /// hop first (empty: straight from the sender).
    #[serde(default)]
    pub via: Vec<(u32, u32)>,
    /// First missing number.
    pub from: u64,
    /// Last missing number.
    pub to: u64,
    /// When the message before the gap was received (ms since the epoch).
    pub prev_at_ms: u64,
    /// When the message after the gap was received.
    pub at_ms: u64,
}

#[derive(Debug)]
struct Stream {
    next: u64,
    last_at_ms: u64,
}

/// The proxy lives a message came through, `(proxy index, incarnation)`.
type Via = Vec<(u32, u32)>;
/// A pipe: sender index, its incarnation, the proxy lives on the way.
type PipeKey = (u32, u32, Via);

/// Per-pipe sequence checking on one receiver (one per receiving socket). A pipe is
/// one sender life through one chain of proxy lives (`via`): that is what order is
/// promised for. When a proxy on the way restarts, the sender's messages take a new
/// pipe, and what the old one still held may arrive later than what the new one carries
/// (a killed proxy's TCP data is still sent by the kernel when the link comes back);
/// the new pipe starts afresh (`First`), and what was lost at the switch is the
/// end-of-run ledger's to count.
#[derive(Debug, Default)]
pub struct SeqTracker {
    streams: HashMap<PipeKey, Stream>,
    /// Newest incarnation seen per sender (older ones are dropped from `streams`).
    newest: HashMap<u32, u32>,
    /// Gaps not reported yet (a late message may still fill them).
    pending: Vec<GapEvent>,
    /// Gaps already reported, kept a while to tell "late" from "duplicate".
    reported: VecDeque<GapEvent>,
    /// The highest number seen per sender life over all its pipes, and the pipe.
    highest: HashMap<(u32, u32), (u64, Via)>,
    /// Messages that came after a higher-numbered one of the same sender life on
    /// another pipe (an older proxy life's connection delivering late): allowed, but
    /// counted so that the report shows it happens.
    pub late_across_pipes: u64,
}

/// How many reported gaps a tracker remembers.
const REMEMBERED_GAPS: usize = 256;
/// How many pipes (proxy paths) of one sender life a tracker follows.
const MAX_PIPES_PER_SENDER: usize = 8;

impl SeqTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> SeqTracker {
        SeqTracker::default()
    }

    /// Records message `id`, which came through the proxy lives `via`, received at
    /// `now_ms`.
    pub fn observe(&mut self, id: MsgId, via: &[(u32, u32)], now_ms: u64) -> Seen {
        let key = (id.src, id.inc, via.to_vec());
        match self.highest.get_mut(&(id.src, id.inc)) {
            Some((h, pipe)) if id.seq > *h => {
                *h = id.seq;
                if pipe.as_slice() != via {
                    *pipe = via.to_vec();
                }
            }
            Some((h, pipe)) if id.seq < *h && pipe.as_slice() != via => {
                self.late_across_pipes += 1;
            }
            Some(_) => {}
            None => {
                self.highest
                    .retain(|&(s, i), _| s != id.src || i + 2 >= id.inc);
                self.highest
                    .insert((id.src, id.inc), (id.seq, via.to_vec()));
            }
        }
        let newest = self.newest.entry(id.src).or_insert(id.inc);
        if id.inc > *newest {
            *newest = id.inc;
            let keep_from = id.inc.saturating_sub(2);
            self.streams
                .retain(|(s, i, _), _| *s != id.src || *i >= keep_from);
        }
        // A sender behind restarting proxies makes a pipe per proxy life: keep the
        // newest few of each sender life.
        if !self.streams.contains_key(&key) {
            let mut same: Vec<(u64, Vec<(u32, u32)>)> = self
                .streams
                .iter()
                .filter(|((s, i, _), _)| *s == id.src && *i == id.inc)
                .map(|((_, _, v), st)| (st.last_at_ms, v.clone()))
                .collect();
            if same.len() >= MAX_PIPES_PER_SENDER {
                same.sort();
                for (_, v) in &same[..same.len() + 1 - MAX_PIPES_PER_SENDER] {
                    self.streams.remove(&(id.src, id.inc, v.clone()));
                }
            }
        }
        let Some(st) = self.streams.get_mut(&key) else {
            self.streams.insert(
                key,
                Stream {
                    next: id.seq + 1,
                    last_at_ms: now_ms,
                },
            );
            return Seen::First;
        };
        let prev_at = st.last_at_ms;
        if id.seq == st.next {
            st.next += 1;
            st.last_at_ms = now_ms;
            return Seen::InOrder;
        }
        if id.seq > st.next {
            let (from, to) = (st.next, id.seq - 1);
            st.next = id.seq + 1;
            st.last_at_ms = now_ms;
            self.pending.push(GapEvent {
                src: id.src,
                inc: id.inc,
                via: via.to_vec(),
                from,
                to,
                prev_at_ms: prev_at,
                at_ms: now_ms,
            });
            return Seen::Gap { from, to };
        }
        // Below the next expected number: was it skipped (late) or seen (duplicate)?
        if let Some(i) = self.pending.iter().position(|g| covers(g, id, via)) {
            let g = self.pending.remove(i);
            // What is left of the gap around the late number stays pending.
            if g.from < id.seq {
                self.pending.push(GapEvent {
                    to: id.seq - 1,
                    ..g.clone()
                });
            }
            if id.seq < g.to {
                self.pending.push(GapEvent {
                    from: id.seq + 1,
                    ..g
                });
            }
            return Seen::Late;
        }
        if self.reported.iter().any(|g| covers(g, id, via)) {
            return Seen::Late;
        }
        Seen::Duplicate
    }

    /// The pending gaps detected at least `min_age_ms` before `now_ms`: from now on they
    /// are losses (or, if a skipped message still comes, reorderings too).
    pub fn take_due_gaps(&mut self, now_ms: u64, min_age_ms: u64) -> Vec<GapEvent> {
        let (due, keep): (Vec<_>, Vec<_>) = self
            .pending
            .drain(..)
            .partition(|g| g.at_ms + min_age_ms <= now_ms);
        self.pending = keep;
        for g in &due {
            if self.reported.len() == REMEMBERED_GAPS {
                self.reported.pop_front();
            }
            self.reported.push_back(g.clone());
        }
        due
    }
}

fn covers(g: &GapEvent, id: MsgId, via: &[(u32, u32)]) -> bool {
    g.src == id.src && g.inc == id.inc && g.via == via && g.from <= id.seq && id.seq <= g.to
}

/// Which requests one REP process executed, to catch one it executes twice. Requests of
/// one requester are numbered upwards; the last `window` numbers per requester are kept
/// (a duplicate of an older one than that cannot reach the application: the requester
/// has moved on, and the REP's reply cache is checked by the same test).
#[derive(Debug)]
pub struct ExecLog {
    window: usize,
    per_client: HashMap<(u32, u32), (HashSet<u64>, VecDeque<u64>)>,
}

impl ExecLog {
    /// A log keeping `window` requests per requester incarnation.
    pub fn new(window: usize) -> ExecLog {
        ExecLog {
            window,
            per_client: HashMap::new(),
        }
    }

    /// Records the execution of request `id`; false if it was executed before.
    pub fn execute(&mut self, id: MsgId) -> bool {
        let (set, order) = self.per_client.entry((id.src, id.inc)).or_default();
        if !set.insert(id.seq) {
            return false;
        }
        order.push_back(id.seq);
        if order.len() > self.window
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }
}

/// When a receiver may miss messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossPolicy {
    /// Never (a gap is a violation).
    #[default]
    Never,
    /// Only messages in flight at a `kill -9` of some process of the scenario.
    Kill,
    /// Around any fault (a PUB's pipe at its high-water mark while the link is down or
    /// the subscriber is stopped or slow).
    Fault,
    /// Any time (a PUB at its high-water mark because this subscriber is slow).
    Always,
}

/// One fault as the harness injected it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// `kill`, `stop`, `link` or `slow`.
    pub kind: String,
    /// A process name or, for `link`, a host name.
    pub target: String,
    /// When it started (ms since the epoch).
    pub start_ms: u64,
    /// When it ended (restart, SIGCONT, link up, normal speed); `None` while it lasts.
    pub end_ms: Option<u64>,
}

/// How long before the message preceding a gap a fault may have started and still
/// explain it (the sender's or a proxy's queue holds messages sent before).
pub const FAULT_SLACK_MS: u64 = 2000;

/// The fault that allows `gap` under `policy`, if any (for `Always`, `Some(None)`).
pub fn gap_excuse<'a>(
    policy: LossPolicy,
    faults: &'a [FaultRecord],
    gap: &GapEvent,
) -> Option<Option<&'a FaultRecord>> {
    let window_start = gap.prev_at_ms.saturating_sub(FAULT_SLACK_MS);
    let in_window = |f: &FaultRecord| {
        f.start_ms <= gap.at_ms && f.end_ms.is_none_or(|e| e + FAULT_SLACK_MS >= window_start)
    };
    match policy {
        LossPolicy::Never => None,
        LossPolicy::Always => Some(None),
        LossPolicy::Kill => faults
            .iter()
            .find(|f| f.kind == "kill" && in_window(f))
            .map(Some),
        LossPolicy::Fault => faults.iter().find(|f| in_window(f)).map(Some),
    }
}

/// One /proc sample of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Open descriptors (`/proc/PID/fd`).
    pub fds: u64,
    /// Threads (`Threads:` in `/proc/PID/status`).
    pub threads: u64,
    /// Resident memory in KiB (`VmRSS:`).
    pub rss_kb: u64,
}

/// How much a process may grow between the first and the last third of its life after
/// warm-up before it counts as a leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slack {
    /// Descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
    /// Resident memory, KiB (plus a quarter of the early peak).
    pub rss_kb: u64,
}

impl Default for Slack {
    fn default() -> Slack {
        Slack {
            fds: 6,
            threads: 2,
            rss_kb: 16 * 1024,
        }
    }
}

/// What grew in one process's samples: after dropping those before `warmup_ms` from the
/// first, the lowest value of the last third is compared with the highest of the first
/// third (a leak raises even the lows; a peer reconnecting makes short peaks). Fewer
/// than six samples after warm-up: nothing is judged.
pub fn growth(samples: &[Sample], warmup_ms: u64, slack: Slack) -> Vec<String> {
    let Some(first) = samples.first() else {
        return Vec::new();
    };
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at_ms >= first.at_ms + warmup_ms)
        .collect();
    if after.len() < 6 {
        return Vec::new();
    }
    let third = after.len() / 3;
    let (early, late) = (&after[..third], &after[after.len() - third..]);
    let mut out = Vec::new();
    let mut judge = |what: &str, get: fn(&Sample) -> u64, allowed: u64| {
        let peak = early.iter().map(|s| get(s)).max().unwrap_or(0);
        let low = late.iter().map(|s| get(s)).min().unwrap_or(0);
        if low > peak + allowed {
            out.push(format!(
                "{what} grew from at most {peak} to at least {low} (allowed +{allowed})"
            ));
        }
    };
    judge("descriptors", |s| s.fds, slack.fds);
    judge("threads", |s| s.threads, slack.threads);
    let rss_peak = early.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    judge("RSS (KiB)", |s| s.rss_kb, slack.rss_kb + rss_peak / 4);
    out
}

/// A broken promise, with enough context to find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// When it was seen (ms since the epoch).
    pub at_ms: u64,
    /// `duplicate`, `reorder`, `corrupt`, `loss`, `unanswered`, `wrong-reply`,
    /// `executed-twice`, `leak`, `leftover`, `stall`, `exit`...
    pub kind: String,
    /// The process that saw it (or, for resources, the one that leaked).
    pub process: String,
    /// The message concerned, as `sender#incarnation seq N`, if one is.
    pub message: Option<String>,
    /// Everything else.
    pub detail: String,
    /// It happened while (or just after) the whole run was paused from outside.
    #[serde(default)]
    pub during_pause: bool,
    /// The fault nearest in time, if any (`kill of producer-3 0.4 s before`).
    #[serde(default)]
    pub context: String,
}

/// Describes the fault that started nearest to `at_ms` (within a minute).
pub fn nearest_fault(faults: &[FaultRecord], at_ms: u64) -> String {
    let Some(f) = faults
        .iter()
        .min_by_key(|f| f.start_ms.abs_diff(at_ms))
        .filter(|f| f.start_ms.abs_diff(at_ms) <= 60_000)
    else {
        return String::new();
    };
    let d = f.start_ms.abs_diff(at_ms) as f64 / 1000.0;
    let when = if f.start_ms <= at_ms {
        "before"
    } else {
        "after"
    };
    let lasted = f
        .end_ms
        .map(|e| format!(", lasting {:.1} s", (e - f.start_ms) as f64 / 1000.0))
        .unwrap_or_default();
    format!(
        "nearest fault: {} of {} {d:.1} s {when}{lasted}",
        f.kind, f.target
    )
}

/// `sender#incarnation seq N`, the way violations name a message.
pub fn name_message(names: &[String], id: MsgId) -> String {
    let who = names
        .get(id.src as usize)
        .cloned()
        .unwrap_or_else(|| format!("process {}", id.src));
    format!("{who}#{} seq {}", id.inc, id.seq)
}

/// End-of-run totals of one sender incarnation that stopped cleanly: what its receivers
/// got against what it sent. `loss_allowed` says whether a fault during its life allows
/// a shortfall.
pub fn ledger(sent: u64, received: u64, loss_allowed: bool) -> Option<(&'static str, String)> {
    if received > sent {
        Some((
            "duplicate",
            format!(
                "sent {sent}, received {received}: {} extra",
                received - sent
            ),
        ))
    } else if received < sent && !loss_allowed {
        Some((
            "loss",
            format!(
                "sent {sent}, received {received}: {} lost with no fault to explain it",
                sent - received
            ),
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> MsgId {
        MsgId {
            src: 1,
            inc: 0,
            seq,
        }
    }

    impl SeqTracker {
        fn observe_direct(&mut self, id: MsgId, now_ms: u64) -> Seen {
            self.observe(id, &[], now_ms)
        }
    }

    #[test]
    fn each_proxy_life_is_a_pipe_of_its_own() {
        let mut t = SeqTracker::new();
        let old = [(7, 0)];
        let new = [(7, 1)];
        assert_eq!(t.observe(id(0), &old, 0), Seen::First);
        assert_eq!(t.observe(id(1), &old, 1), Seen::InOrder);
        // The proxy restarted: the new pipe starts where it starts...
        assert_eq!(t.observe(id(5), &new, 2), Seen::First);
        // ...and the old one's last messages may still come, after the new ones.
        assert_eq!(t.observe(id(2), &old, 3), Seen::InOrder);
        assert_eq!(t.late_across_pipes, 1);
        assert_eq!(t.observe(id(6), &new, 4), Seen::InOrder);
        // Within a pipe, order still holds.
        assert_eq!(t.observe(id(1), &old, 5), Seen::Duplicate);
        assert_eq!(t.observe(id(9), &new, 6), Seen::Gap { from: 7, to: 8 });
        assert_eq!(t.observe(id(8), &new, 7), Seen::Late);
        // Old pipes are forgotten after a few restarts of the proxy.
        for inc in 2..20 {
            assert_eq!(
                t.observe(id(100 + u64::from(inc)), &[(7, inc)], 10 + u64::from(inc)),
                Seen::First
            );
        }
        assert!(
            t.streams.len() <= MAX_PIPES_PER_SENDER,
            "{}",
            t.streams.len()
        );
    }

    #[test]
    fn in_order_gap_duplicate_and_late() {
        let mut t = SeqTracker::new();
        assert_eq!(t.observe_direct(id(5), 10), Seen::First);
        assert_eq!(t.observe_direct(id(6), 11), Seen::InOrder);
        assert_eq!(t.observe_direct(id(6), 12), Seen::Duplicate);
        assert_eq!(t.observe_direct(id(9), 13), Seen::Gap { from: 7, to: 8 });
        // 8 comes late: 7 is still missing.
        assert_eq!(t.observe_direct(id(8), 14), Seen::Late);
        assert_eq!(t.observe_direct(id(8), 15), Seen::Duplicate);
        assert!(t.take_due_gaps(100, 1000).is_empty(), "too young to report");
        let due = t.take_due_gaps(2000, 1000);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].from, due[0].to, due[0].prev_at_ms), (7, 7, 11));
        // A reported gap filled later is still a reordering, not a duplicate.
        assert_eq!(t.observe_direct(id(7), 2001), Seen::Late);
        assert_eq!(t.observe_direct(id(10), 2002), Seen::InOrder);
    }

    #[test]
    fn senders_and_incarnations_are_separate() {
        let mut t = SeqTracker::new();
        assert_eq!(t.observe_direct(id(0), 0), Seen::First);
        let other = MsgId {
            src: 2,
            inc: 0,
            seq: 0,
        };
        assert_eq!(t.observe_direct(other, 0), Seen::First);
        let restarted = MsgId {
            src: 1,
            inc: 1,
            seq: 0,
        };
        assert_eq!(t.observe_direct(restarted, 0), Seen::First);
        assert_eq!(t.observe_direct(id(1), 0), Seen::InOrder);
    }

    #[test]
    fn gap_in_the_middle_of_a_pending_gap_splits_it() {
        let mut t = SeqTracker::new();
        t.observe_direct(id(0), 0);
        assert_eq!(t.observe_direct(id(10), 1), Seen::Gap { from: 1, to: 9 });
        assert_eq!(t.observe_direct(id(5), 2), Seen::Late);
        let mut due = t.take_due_gaps(10_000, 0);
        due.sort_by_key(|g| g.from);
        let ranges: Vec<_> = due.iter().map(|g| (g.from, g.to)).collect();
        assert_eq!(ranges, vec![(1, 4), (6, 9)]);
    }

    #[test]
    fn exec_log_catches_a_second_execution_within_its_window() {
        let mut l = ExecLog::new(3);
        assert!(l.execute(id(1)));
        assert!(l.execute(id(2)));
        assert!(!l.execute(id(1)));
        assert!(l.execute(MsgId {
            src: 9,
            inc: 0,
            seq: 1
        }));
        assert!(l.execute(id(3)));
        assert!(l.execute(id(4)));
        // 1 fell out of the window of 3.
        assert!(l.execute(id(1)));
    }

    fn fault(kind: &str, start: u64, end: Option<u64>) -> FaultRecord {
        FaultRecord {
            kind: kind.into(),
            target: "x".into(),
            start_ms: start,
            end_ms: end,
        }
    }

    fn gap(prev: u64, at: u64) -> GapEvent {
        GapEvent {
            src: 1,
            inc: 0,
            via: Vec::new(),
            from: 1,
            to: 2,
            prev_at_ms: prev,
            at_ms: at,
        }
    }

    #[test]
    fn gaps_are_judged_against_the_faults() {
        let faults = vec![
            fault("kill", 10_000, Some(11_000)),
            fault("link", 50_000, Some(52_000)),
        ];
        let g = gap(10_500, 12_000);
        assert!(gap_excuse(LossPolicy::Never, &faults, &g).is_none());
        assert_eq!(
            gap_excuse(LossPolicy::Kill, &faults, &g),
            Some(Some(&faults[0]))
        );
        // Far from any fault: only Always allows it.
        let far = gap(30_000, 30_100);
        assert!(gap_excuse(LossPolicy::Kill, &faults, &far).is_none());
        assert!(gap_excuse(LossPolicy::Fault, &faults, &far).is_none());
        assert_eq!(gap_excuse(LossPolicy::Always, &faults, &far), Some(None));
        // A link fault allows a gap under Fault but not under Kill.
        let near_link = gap(51_000, 53_000);
        assert!(gap_excuse(LossPolicy::Kill, &faults, &near_link).is_none());
        assert_eq!(
            gap_excuse(LossPolicy::Fault, &faults, &near_link),
            Some(Some(&faults[1]))
        );
        // A fault that is still going on counts.
        let open = vec![fault("stop", 70_000, None)];
        assert!(gap_excuse(LossPolicy::Fault, &open, &gap(90_000, 91_000)).is_some());
    }

    fn samples(fds: impl Fn(u64) -> u64) -> Vec<Sample> {
        (0..30)
            .map(|i| Sample {
                at_ms: i * 1000,
                fds: fds(i),
                threads: 4,
                rss_kb: 10_000,
            })
            .collect()
    }

    #[test]
    fn growth_sees_a_leak_and_not_a_peak() {
        let slack = Slack::default();
        assert!(growth(&samples(|_| 20), 5000, slack).is_empty());
        // Reconnections: short peaks late in life are not a leak.
        assert!(growth(&samples(|i| if i % 7 == 0 { 40 } else { 20 }), 5000, slack).is_empty());
        let leak = growth(&samples(|i| 20 + i), 5000, slack);
        assert_eq!(leak.len(), 1, "{leak:?}");
        assert!(leak[0].starts_with("descriptors"), "{leak:?}");
        // Too short to judge.
        assert!(growth(&samples(|i| 20 + i)[..8], 5000, slack).is_empty());
    }

    #[test]
    fn the_nearest_fault_is_named() {
        let faults = vec![
            fault("kill", 10_000, Some(11_000)),
            fault("link", 50_000, Some(52_000)),
        ];
        assert_eq!(
            nearest_fault(&faults, 10_400),
            "nearest fault: kill of x 0.4 s before, lasting 1.0 s"
        );
        assert!(nearest_fault(&faults, 49_000).contains("link of x 1.0 s after"));
        assert_eq!(nearest_fault(&faults, 500_000), "");
    }

    #[test]
    fn ledger_counts() {
        assert_eq!(ledger(10, 10, false), None);
        assert_eq!(ledger(10, 11, true).map(|v| v.0), Some("duplicate"));
        assert_eq!(ledger(10, 9, false).map(|v| v.0), Some("loss"));
        assert_eq!(ledger(10, 9, true), None);
    }

    #[test]
    fn messages_are_named_by_process() {
        let names = vec!["a".to_owned(), "producer-2".to_owned()];
        assert_eq!(name_message(&names, id(50)), "producer-2#0 seq 50");
    }
}
