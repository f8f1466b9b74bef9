//! The report of a run: JSON (everything), Markdown (the summary a person reads) and an
//! SVG plot of each process's rate over time with the faults marked. The SVG is written
//! by hand: a few polylines and rectangles, where a plotting crate would bring a font
//! stack for the same picture.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::check::{FaultRecord, Sample, Violation};

/// One process over the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcReport {
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Host.
    pub host: String,
    /// Lives (1 + restarts).
    pub incarnations: u32,
    /// Messages or requests sent (all lives).
    pub sent: u64,
    /// Messages or replies received.
    pub received: u64,
    /// REP: requests executed.
    pub executed: u64,
    /// REQ: resends.
    pub resends: u64,
    /// REQ: failovers.
    pub failovers: u64,
    /// REQ: exchanges given up.
    pub given_up: u64,
    /// REP: copies answered from the reply cache.
    pub replies_from_cache: u64,
    /// Receivers: how far its last life was behind when the run stopped: messages
    /// sent after the highest number it got from each sender life that stopped cleanly
    /// (still queued for it, or dropped for it at a PUB's high-water mark and not
    /// noticed yet because nothing after them arrived): a slow subscriber's lag.
    #[serde(default)]
    pub behind: u64,
    /// Receivers: messages that came after a higher-numbered one of the same sender
    /// life through another proxy life (allowed: order is per pipe).
    #[serde(default)]
    pub late_across_pipes: u64,
    /// REQ: round trip `[p50, p99, max]` µs (of its life with the worst maximum).
    pub rtt_us: Option<[u64; 3]>,
    /// First /proc sample of the first life.
    pub first_sample: Option<Sample>,
    /// Last /proc sample of the last life.
    pub last_sample: Option<Sample>,
}

/// How long traffic took to come back after a fault ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovery {
    /// Fault kind.
    pub kind: String,
    /// Target.
    pub target: String,
    /// Start, seconds into the run.
    pub at_s: f64,
    /// How long the fault lasted, ms.
    pub lasted_ms: u64,
    /// ms from the fault's end until traffic was back: for a `kill`, until the
    /// restarted process's first message got through (a sender's: reached a receiver;
    /// anyone else's: the first it received, executed or had answered); for the other
    /// faults, until the last silence of more than a second it caused ended. `None`:
    /// no such event (a restarted process that moved nothing, a fault nobody noticed).
    pub recovered_ms: Option<u64>,
}

/// A rate over time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    /// Process.
    pub name: String,
    /// `(seconds into the run, messages per second)`.
    pub points: Vec<(f64, f64)>,
}

/// One scenario's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Stopped by Ctrl-C / SIGTERM (nothing was judged at the end).
    pub interrupted: bool,
    /// The `--seed`.
    pub seed: u64,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// End.
    pub ended_ms: u64,
    /// Hosts and addresses.
    pub hosts: Vec<(String, String)>,
    /// Processes.
    pub processes: Vec<ProcReport>,
    /// Faults injected.
    pub faults: Vec<FaultRecord>,
    /// Recovery after each fault.
    pub recoveries: Vec<Recovery>,
    /// Messages missing where the semantics allow it (in flight at a kill, PUB at HWM).
    pub allowed_loss: u64,
    /// Broken promises.
    pub violations: Vec<Violation>,
    /// Times the whole run was paused from outside `(from_ms, to_ms)` (a gap in the
    /// harness's own 100 ms loop of more than 3 s).
    pub pauses: Vec<(u64, u64)>,
    /// Rates.
    pub series: Vec<Series>,
}

impl ScenarioReport {
    /// Wall-clock seconds.
    pub fn wall_s(&self) -> f64 {
        (self.ended_ms - self.started_ms) as f64 / 1000.0
    }

    /// Seconds spent paused.
    pub fn paused_s(&self) -> f64 {
        self.pauses.iter().map(|(a, b)| b - a).sum::<u64>() as f64 / 1000.0
    }

    /// Messages moved: what every receiver got, plus REP executions.
    pub fn moved(&self) -> u64 {
        self.processes
            .iter()
            .map(|p| match p.role.as_str() {
                "pull" | "sub" | "req" => p.received,
                "rep" => p.executed,
                _ => 0,
            })
            .sum()
    }

    /// Count of faults of a kind.
    pub fn faults_of(&self, kind: &str) -> usize {
        self.faults.iter().filter(|f| f.kind == kind).count()
    }

    /// `kill median 120 / max 900 (n=30); link ...`: recovery times by fault kind.
    pub fn recovery_summary(&self) -> String {
        let mut parts = Vec::new();
        for kind in ["kill", "stop", "link", "slow"] {
            let mut r: Vec<u64> = self
                .recoveries
                .iter()
                .filter(|r| r.kind == kind)
                .filter_map(|r| r.recovered_ms)
                .collect();
            if r.is_empty() {
                continue;
            }
            r.sort_unstable();
            parts.push(format!(
                "{kind} median {} / max {} (n={})",
                r[r.len() / 2],
                r[r.len() - 1],
                r.len()
            ));
        }
        parts.join("; ")
    }

    /// Messages per role: `push ×4 sent 1000, pull ×1 received 990, ...`.
    pub fn per_role(&self) -> String {
        let mut parts = Vec::new();
        for (role, what) in [
            ("push", "sent"),
            ("pub", "sent"),
            ("pull", "received"),
            ("sub", "received"),
            ("req", "answered"),
            ("rep", "executed"),
        ] {
            let ps: Vec<&ProcReport> = self.processes.iter().filter(|p| p.role == role).collect();
            if ps.is_empty() {
                continue;
            }
            let n: u64 = ps
                .iter()
                .map(|p| match what {
                    "sent" => p.sent,
                    "executed" => p.executed,
                    _ => p.received,
                })
                .sum();
            parts.push(format!("{role} ×{} {what} {n}", ps.len()));
        }
        parts.join(", ")
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "## {}\n\n{}\n", self.name, self.description.trim());
        let _ = writeln!(
            m,
            "- wall time {:.0} s{}; hosts {}; seed {}",
            self.wall_s(),
            if self.pauses.is_empty() {
                String::new()
            } else {
                format!(
                    " (of which {:.0} s paused from outside, in {} pause(s))",
                    self.paused_s(),
                    self.pauses.len()
                )
            },
            self.hosts
                .iter()
                .map(|(h, a)| format!("{h} ({a})"))
                .collect::<Vec<_>>()
                .join(", "),
            self.seed
        );
        let _ = writeln!(
            m,
            "- messages moved {}; faults {} (kill {}, stop {}, link {}, slow {}); loss allowed by the semantics {}",
            self.moved(),
            self.faults.len(),
            self.faults_of("kill"),
            self.faults_of("stop"),
            self.faults_of("link"),
            self.faults_of("slow"),
            self.allowed_loss
        );
        let rec = self.recovery_summary();
        if !rec.is_empty() {
            let _ = writeln!(m, "- traffic back after a fault ended (ms): {rec}");
        }
        let late: u64 = self.processes.iter().map(|p| p.late_across_pipes).sum();
        if late > 0 {
            let _ = writeln!(
                m,
                "- {late} message(s) arrived after later ones of their sender through another proxy life (a killed proxy's connection delivering late; order is promised per pipe)"
            );
        }
        let roles = self.per_role();
        if !roles.is_empty() {
            let _ = writeln!(m, "- per role: {roles}");
        }
        let _ = writeln!(
            m,
            "- **violations: {}**{}\n",
            self.violations.len(),
            if self.interrupted {
                " (interrupted: end-of-run checks not made)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            m,
            "| process | role | host | lives | sent | received | behind | executed | resends | failovers | given up | from cache | rtt p50/p99/max µs | fds | threads | RSS MiB |"
        );
        let _ = writeln!(
            m,
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|---|---|"
        );
        for p in &self.processes {
            let res = |f: fn(&Sample) -> u64| match (p.first_sample, p.last_sample) {
                (Some(a), Some(b)) => format!("{}→{}", f(&a), f(&b)),
                _ => "-".into(),
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.name,
                p.role,
                p.host,
                p.incarnations,
                p.sent,
                p.received,
                p.behind,
                p.executed,
                p.resends,
                p.failovers,
                p.given_up,
                p.replies_from_cache,
                p.rtt_us
                    .map(|r| format!("{}/{}/{}", r[0], r[1], r[2]))
                    .unwrap_or_else(|| "-".into()),
                res(|s| s.fds),
                res(|s| s.threads),
                res(|s| s.rss_kb / 1024),
            );
        }
        if !self.violations.is_empty() {
            let _ = writeln!(
                m,
                "\n| t (s) | kind | process | message | detail | context |"
            );
            let _ = writeln!(m, "|--:|---|---|---|---|---|");
            for v in self.violations.iter().take(50) {
                let _ = writeln!(
                    m,
                    "| {:.1} | {} | {} | {} | {}{} | {} |",
                    v.at_ms.saturating_sub(self.started_ms) as f64 / 1000.0,
                    v.kind,
                    v.process,
                    v.message.as_deref().unwrap_or("-"),
                    v.detail.replace('|', "\\|"),
                    if v.during_pause {
                        " (during a pause)"
                    } else {
                        ""
                    },
                    v.context
                );
            }
            if self.violations.len() > 50 {
                let _ = writeln!(
                    m,
                    "\n... and {} more (report.json)",
                    self.violations.len() - 50
                );
            }
        }
        m
    }

    /// The rates plot: messages per second per process (averaged over buckets of
    /// 1/600 of the run, so that an hour's plot stays small), pauses of the whole run
    /// as grey bands, and above it one strip per fault kind (kill red, stop orange,
    /// link blue, slow green) marking when each fault lasted.
    pub fn svg(&self) -> String {
        const KINDS: [(&str, &str); 4] = [
            ("kill", "red"),
            ("stop", "orange"),
            ("link", "blue"),
            ("slow", "green"),
        ];
        let (w, left, right, strip) = (900.0, 60.0, 160.0, 9.0);
        let top = 28.0 + strip * KINDS.len() as f64 + 6.0;
        let (ph, bottom) = (240.0, 40.0);
        let h = top + ph + bottom;
        let pw = w - left - right;
        let t_max = self.wall_s().max(1.0);
        let series: Vec<(String, Vec<(f64, f64)>)> = self
            .series
            .iter()
            .map(|s| (s.name.clone(), bucket(&s.points, t_max / 600.0)))
            .collect();
        let r_max = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(1.0f64, f64::max)
            * 1.1;
        let x = |t: f64| left + t / t_max * pw;
        let y = |r: f64| top + ph - r / r_max * ph;
        let secs = |ms: u64| ms.saturating_sub(self.started_ms) as f64 / 1000.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{left}" y="16" font-size="13">{}: messages/s per process, faults above (grey: paused)</text>"#,
            xml(&self.name)
        );
        for (row, (kind, colour)) in KINDS.iter().enumerate() {
            let ry = 26.0 + strip * row as f64;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="9">{kind}</text>"#,
                left - 4.0,
                ry + strip - 1.0
            );
            let mut spans: Vec<(f64, f64)> = self
                .faults
                .iter()
                .filter(|f| f.kind == *kind)
                .map(|f| {
                    let a = x(secs(f.start_ms));
                    let b = x(secs(f.end_ms.unwrap_or(self.ended_ms)));
                    (a, b.max(a + 1.0))
                })
                .collect();
            spans.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (a, b) in merge(spans, 0.5) {
                let _ = writeln!(
                    s,
                    r#"<rect x="{a:.1}" y="{ry:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/>"#,
                    b - a,
                    strip - 2.0
                );
            }
        }
        for &(a, b) in &self.pauses {
            let (a, b) = (x(secs(a)), x(secs(b)));
            let _ = writeln!(
                s,
                r#"<rect x="{a:.1}" y="{top}" width="{:.1}" height="{ph}" fill="grey" opacity="0.3"/>"#,
                (b - a).max(1.0)
            );
        }
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        for i in 0..=4 {
            let r = r_max * f64::from(i) / 4.0;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}</text>"#,
                left - 4.0,
                y(r) + 4.0,
                r
            );
            let t = t_max * f64::from(i) / 4.0;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0} s</text>"#,
                x(t),
                top + ph + 16.0,
                t
            );
        }
        const COLOURS: [&str; 8] = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
        ];
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            let pts: Vec<String> = pts
                .iter()
                .map(|&(t, r)| format!("{:.1},{:.1}", x(t), y(r)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="1.2" points="{}"/>"#,
                pts.join(" ")
            );
            let ly = top + 12.0 + 14.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                left + pw + 8.0,
                left + pw + 24.0,
                left + pw + 28.0,
                ly + 4.0,
                xml(name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Averages `(t, rate)` points over buckets `width` seconds wide (points as they are
/// when they are already that sparse).
fn bucket(points: &[(f64, f64)], width: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut acc: Option<(f64, f64, f64)> = None; // bucket index, sum, count
    for &(t, r) in points {
        let b = (t / width).floor();
        match acc {
            Some((cur, sum, n)) if cur == b => acc = Some((cur, sum + r, n + 1.0)),
            _ => {
                if let Some((cur, sum, n)) = acc {
                    out.push(((cur + 0.5) * width, sum / n));
                }
                acc = Some((b, r, 1.0));
            }
        }
    }
    if let Some((cur, sum, n)) = acc {
        out.push(((cur + 0.5) * width, sum / n));
    }
    out
}

/// Joins spans (sorted by start) that overlap or are closer than `gap`.
fn merge(spans: Vec<(f64, f64)>, gap: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 + gap => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The run's Markdown: a table of the scenarios, then each one's section and plot.
pub fn summary(reports: &[ScenarioReport], failed: &[(String, String)], title: &str) -> String {
    let mut md = format!("# Burn run\n\n{title}\n\n");
    md.push_str("| scenario | wall s | paused s | moved | kills | stops | link flaps | slow | allowed loss | violations |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in reports {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.wall_s(),
            r.paused_s(),
            r.moved(),
            r.faults_of("kill"),
            r.faults_of("stop"),
            r.faults_of("link"),
            r.faults_of("slow"),
            r.allowed_loss,
            r.violations.len()
        );
    }
    for (name, e) in failed {
        let _ = writeln!(md, "| {name} | failed to run: {} |", e.replace('|', "\\|"));
    }
    for r in reports {
        let _ = write!(md, "\n{}\n![rates]({}/rates.svg)\n", r.markdown(), r.name);
    }
    md
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_svg_show_what_happened() {
        let r = ScenarioReport {
            name: "demo".into(),
            description: "d".into(),
            interrupted: false,
            seed: 1,
            started_ms: 1000,
            ended_ms: 11_000,
            hosts: vec![("a".into(), "10.77.0.1".into())],
            processes: vec![ProcReport {
                name: "sink".into(),
                role: "pull".into(),
                host: "a".into(),
                incarnations: 2,
                sent: 0,
                received: 1234,
                executed: 0,
                resends: 0,
                failovers: 0,
                given_up: 0,
                replies_from_cache: 0,
                behind: 0,
                late_across_pipes: 0,
                rtt_us: None,
                first_sample: None,
                last_sample: None,
            }],
            faults: vec![FaultRecord {
                kind: "kill".into(),
                target: "sink".into(),
                start_ms: 3000,
                end_ms: Some(4000),
            }],
            recoveries: vec![],
            allowed_loss: 3,
            violations: vec![Violation {
                at_ms: 5000,
                kind: "duplicate".into(),
                process: "sink#1".into(),
                message: Some("src#0 seq 50".into()),
                detail: "x".into(),
                during_pause: false,
                context: String::new(),
            }],
            pauses: vec![(6000, 9000)],
            series: vec![Series {
                name: "sink".into(),
                points: vec![(1.0, 100.0), (2.0, 120.0)],
            }],
        };
        let md = r.markdown();
        assert!(md.contains("messages moved 1234"), "{md}");
        assert!(
            md.contains("| 4.0 | duplicate | sink#1 | src#0 seq 50 |"),
            "{md}"
        );
        assert!(md.contains("3 s paused"), "{md}");
        let svg = r.svg();
        assert!(svg.contains(r#"fill="red""#) && svg.contains(r#"fill="grey""#));
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn long_runs_are_bucketed_and_fault_spans_merged() {
        let pts: Vec<(f64, f64)> = (0..3600)
            .map(|i| (f64::from(i), f64::from(i % 2) * 10.0))
            .collect();
        let b = bucket(&pts, 6.0);
        assert_eq!(b.len(), 600);
        assert!(
            b.iter().all(|p| (p.1 - 5.0).abs() < 1e-9),
            "averaged: {:?}",
            &b[..3]
        );
        assert_eq!(bucket(&pts[..3], 6.0).len(), 1);
        assert_eq!(
            merge(vec![(0.0, 1.0), (1.2, 2.0), (5.0, 6.0)], 0.5),
            vec![(0.0, 2.0), (5.0, 6.0)]
        );
    }
}
