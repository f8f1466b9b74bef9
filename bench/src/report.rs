//! The outputs: medians across repetitions, the Markdown table with the ratios of lwmq
//! to each contender, the JSON file and the SVG plot (written by hand: no plotting
//! dependency).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::machine::Meta;
use crate::runner::{Plan, Run};

/// Everything a benchmark run produced; this is the JSON file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub plan: Plan,
    pub summary: Vec<Summary>,
    pub runs: Vec<Run>,
}

/// One case of one variant, over its repetitions: the median of each metric across the
/// repetitions that succeeded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub size: usize,
    pub contender: String,
    pub transport: String,
    pub reps_ok: usize,
    pub reps: usize,
    pub errors: Vec<String>,
    /// Why it was not run, if it was not.
    #[serde(default)]
    pub skipped: Option<String>,
    pub median_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub p999_ns: Option<f64>,
    pub max_ns: Option<f64>,
    /// thr: the receiver's rate; pubsub: the mean of the subscribers' rates.
    pub msgs_per_s: Option<f64>,
    pub gb_per_s: Option<f64>,
    /// pubsub: the slowest subscriber's rate.
    pub slowest_sub_msgs_per_s: Option<f64>,
    /// pubsub: received / sent, averaged over subscribers (PUB drops at the HWM).
    pub delivered: Option<f64>,
    /// Page faults per message in steady state, all sides together.
    #[serde(default)]
    pub faults_per_msg: Option<f64>,
    /// The machine's core-to-core round trip around the successful repetitions
    /// (median of the measurements before and after each).
    #[serde(default)]
    pub floor_ns: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn summarize(plan: &Plan, runs: &[Run]) -> Vec<Summary> {
    let mut out = Vec::new();
    for case in &plan.cases {
        for v in &plan.variants {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| {
                    r.scenario == case.scenario
                        && r.size == case.size
                        && r.contender == v.contender
                        && r.transport == v.transport
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            let ok: Vec<&Run> = mine.iter().copied().filter(|r| r.ok).collect();
            let errors: BTreeSet<String> = mine.iter().filter_map(|r| r.error.clone()).collect();
            let lat = |f: fn(&crate::scenario::Latency) -> f64| {
                median(
                    ok.iter()
                        .filter_map(|r| r.latency.as_ref().map(f))
                        .collect(),
                )
            };
            let (mut rate, mut gb, mut slowest, mut delivered) = (None, None, None, None);
            if case.scenario == "thr" {
                rate = median(
                    ok.iter()
                        .filter_map(|r| r.rate.as_ref().map(|x| x.msgs_per_s))
                        .collect(),
                );
                gb = median(
                    ok.iter()
                        .filter_map(|r| r.rate.as_ref().map(|x| x.gb_per_s))
                        .collect(),
                );
            } else if case.scenario == "pubsub" {
                let mean = |r: &Run, f: fn(&crate::scenario::Rate) -> f64| {
                    if r.subs.is_empty() {
                        None
                    } else {
                        Some(r.subs.iter().map(f).sum::<f64>() / r.subs.len() as f64)
                    }
                };
                rate = median(
                    ok.iter()
                        .filter_map(|r| mean(r, |x| x.msgs_per_s))
                        .collect(),
                );
                gb = median(ok.iter().filter_map(|r| mean(r, |x| x.gb_per_s)).collect());
                slowest = median(
                    ok.iter()
                        .filter_map(|r| r.subs.iter().map(|x| x.msgs_per_s).reduce(f64::min))
                        .collect(),
                );
                delivered = median(
                    ok.iter()
                        .filter_map(|r| {
                            let sent = r.sent? as f64;
                            let got = mean(r, |x| x.received as f64)?;
                            (sent > 0.0).then(|| got / sent)
                        })
                        .collect(),
                );
            }
            out.push(Summary {
                scenario: case.scenario.clone(),
                size: case.size,
                contender: v.contender.clone(),
                transport: v.transport.clone(),
                reps_ok: ok.len(),
                reps: mine.len(),
                errors: errors.into_iter().collect(),
                skipped: mine.iter().find_map(|r| r.skipped.clone()),
                median_ns: lat(|l| l.median_ns as f64),
                p99_ns: lat(|l| l.p99_ns as f64),
                p999_ns: lat(|l| l.p999_ns as f64),
                max_ns: lat(|l| l.max_ns as f64),
                msgs_per_s: rate,
                gb_per_s: gb,
                slowest_sub_msgs_per_s: slowest,
                delivered,
                faults_per_msg: median(ok.iter().filter_map(|r| r.faults_per_msg).collect()),
                floor_ns: median(ok.iter().flat_map(|r| r.floor_ns.iter().copied()).collect()),
            });
        }
    }
    out
}

/// The lwmq transport a contender's transport is compared with "like for like": the
/// same URI scheme a user would type (libzmq's `ipc://` is a Unix socket, lwmq's is
/// shared memory), and shared memory for iceoryx2 and omq's `shm://`; tcp with CURVE
/// only with lwmq's tcp with CURVE.
pub fn counterpart(transport: &str) -> &'static str {
    match transport {
        "tcp" | "tcp-resend" => "tcp",
        "tcp-curve" => "tcp-curve",
        "inproc" | "inproc-resend" => "inproc",
        "async-tcp" => "async-tcp",
        t if t.starts_with("async-") => "async-ipc-spin",
        _ => "ipc-spin",
    }
}

pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1024 && s % 1024 == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn us(ns: Option<f64>) -> String {
    match ns {
        Some(v) if v < 10_000.0 => format!("{:.2}", v / 1000.0),
        Some(v) => format!("{:.1}", v / 1000.0),
        None => "—".into(),
    }
}

fn si(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 1e9 => format!("{:.2} G", x / 1e9),
        Some(x) if x >= 1e6 => format!("{:.2} M", x / 1e6),
        Some(x) if x >= 1e3 => format!("{:.1} k", x / 1e3),
        Some(x) => format!("{x:.0}"),
        None => "—".into(),
    }
}

/// Page faults per message: `0` when none at all, otherwise three significant digits.
fn faults(f: Option<f64>) -> String {
    match f {
        None => "—".into(),
        Some(0.0) => "0".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn ratio(r: Option<f64>) -> String {
    match r {
        Some(x) if x >= 10.0 => format!("{x:.0}×"),
        Some(x) => format!("{x:.2}×"),
        None => "—".into(),
    }
}

/// The metric a case is ranked by, and whether lower is better.
fn key(s: &Summary) -> (Option<f64>, bool) {
    match s.scenario.as_str() {
        "rtt" => (s.median_ns, true),
        _ => (s.msgs_per_s, false),
    }
}

/// How many times better lwmq's value is than `other`'s (> 1: lwmq is better).
fn advantage(lwmq: Option<f64>, other: Option<f64>, lower_better: bool) -> Option<f64> {
    let (l, o) = (lwmq?, other?);
    if l <= 0.0 || o <= 0.0 {
        return None;
    }
    Some(if lower_better { o / l } else { l / o })
}

pub fn markdown(res: &Results) -> String {
    let m = &res.meta;
    let p = &res.plan;
    let mut s = String::new();
    if p.mode != "full" {
        let _ = writeln!(
            s,
            "> **A {} run, not results**: runs too short and too few to quote; they only \
             show that every contender and scenario runs. `scripts/bench` (full mode) \
             measures.\n",
            p.mode
        );
    }
    if m.profile != "release" {
        let _ = writeln!(
            s,
            "> **Debug build**: these numbers are not representative.\n"
        );
    }
    let _ = writeln!(
        s,
        "Mode **{}**: {} repetition(s), {} ms measured per run, {} subscribers; contenders \
         interleaved (order rotated each repetition); each value is the median across \
         the repetitions that succeeded.\n",
        p.mode, p.reps, p.duration_ms, p.subs
    );
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| date | {} |", m.date);
    let _ = writeln!(s, "| CPU | {} ({} logical CPUs) |", m.cpu, m.cores);
    let _ = writeln!(s, "| kernel | {} |", m.kernel);
    let _ = writeln!(s, "| rustc | {} ({}) |", m.rustc, m.profile);
    let _ = writeln!(s, "| commit | {} |", m.commit);
    let _ = writeln!(s, "| load average at start | {} |", m.loadavg_at_start);
    for (c, v) in &m.contenders {
        let _ = writeln!(s, "| {c} | {v} |");
    }
    let _ = writeln!(
        s,
        "\n**×** columns: how many times better lwmq is than the row (> 1: lwmq wins; \
         latency: their median ÷ lwmq's; rates: lwmq's ÷ theirs). *same scheme* compares \
         with lwmq on the URI scheme the row's user would type (tcp↔tcp, inproc↔inproc, \
         ipc/shm↔lwmq ipc-spin, tcp-curve↔tcp-curve); *best* with lwmq's best transport \
         in that table through its `Socket` (the transport-only `ipc-raw-*` rows are not \
         compared). *faults/msg*: page faults (minor + major, getrusage) per message in \
         steady state, every side's process together (after the warm-up round trips, or \
         the first tenth of a stream). *core↔core*: the machine's floor around those \
         runs, the round trip of one counter between two threads pinned to cores 0 and 1 \
         (median of the measurements just before and just after each repetition); on a \
         VM it moves with where the hypervisor puts the vCPUs, and every shared-memory \
         and inproc round trip moves with it.\n"
    );
    let sizes = |sc: &str| -> Vec<usize> {
        p.cases
            .iter()
            .filter(|c| c.scenario == sc)
            .map(|c| c.size)
            .collect()
    };
    for (sc, title) in [
        ("rtt", "Round trip (REQ/REP), microseconds"),
        ("thr", "One-way throughput (PUSH->PULL)"),
        ("pubsub", "PUB to SUB processes, rate at each subscriber"),
    ] {
        let sz = sizes(sc);
        if sz.is_empty() {
            continue;
        }
        let _ = writeln!(s, "## {title}\n");
        for size in sz {
            let rows: Vec<&Summary> = res
                .summary
                .iter()
                .filter(|x| x.scenario == sc && x.size == size && x.skipped.is_none())
                .collect();
            let lw = |t: &str| {
                rows.iter()
                    .find(|x| x.contender == "lwmq" && x.transport == t)
                    .and_then(|x| key(x).0)
            };
            let lower = sc == "rtt";
            let best = rows
                .iter()
                .filter(|x| x.contender == "lwmq" && !x.transport.starts_with("ipc-raw"))
                .filter_map(|x| key(x).0)
                .reduce(|a, b| if (a < b) == lower { a } else { b });
            let _ = writeln!(s, "### {}\n", size_label(size));
            match sc {
                "rtt" => {
                    let _ = writeln!(
                        s,
                        "| contender | transport | median | p99 | p99.9 | max | × same scheme | × best | faults/msg | core↔core | ok |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
                    );
                }
                "thr" => {
                    let _ = writeln!(
                        s,
                        "| contender | transport | msgs/s | GB/s | × same scheme | × best | faults/msg | core↔core | ok |\n|---|---|--:|--:|--:|--:|--:|--:|--:|"
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "| contender | transport | msgs/s per sub (mean) | slowest sub | delivered | × same scheme | × best | faults/msg | ok |\n|---|---|--:|--:|--:|--:|--:|--:|--:|"
                    );
                }
            }
            for x in rows.iter().copied() {
                let (v, _) = key(x);
                let (same, vs_best) = if x.contender == "lwmq" {
                    ("—".to_owned(), "—".to_owned())
                } else {
                    (
                        ratio(advantage(lw(counterpart(&x.transport)), v, lower)),
                        ratio(advantage(best, v, lower)),
                    )
                };
                let ok = format!("{}/{}", x.reps_ok, x.reps);
                let pf = faults(x.faults_per_msg);
                let floor = x.floor_ns.map_or("—".into(), |f| format!("{f:.0} ns"));
                let name = if x.contender == "lwmq" {
                    format!("**{}**", x.contender)
                } else {
                    x.contender.clone()
                };
                match sc {
                    "rtt" => {
                        let _ = writeln!(
                            s,
                            "| {name} | {} | {} | {} | {} | {} | {same} | {vs_best} | {pf} | {floor} | {ok} |",
                            x.transport,
                            us(x.median_ns),
                            us(x.p99_ns),
                            us(x.p999_ns),
                            us(x.max_ns)
                        );
                    }
                    "thr" => {
                        let _ = writeln!(
                            s,
                            "| {name} | {} | {} | {} | {same} | {vs_best} | {pf} | {floor} | {ok} |",
                            x.transport,
                            si(x.msgs_per_s),
                            x.gb_per_s.map_or("—".into(), |g| format!("{g:.3}"))
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            s,
                            "| {name} | {} | {} | {} | {} | {same} | {vs_best} | {pf} | {ok} |",
                            x.transport,
                            si(x.msgs_per_s),
                            si(x.slowest_sub_msgs_per_s),
                            x.delivered
                                .map_or("—".into(), |d| format!("{:.1} %", d * 100.0))
                        );
                    }
                }
            }
            let _ = writeln!(s);
        }
    }
    let mut not_run: Vec<(String, String)> = Vec::new();
    for x in &res.summary {
        if let Some(why) = &x.skipped {
            let who = format!("{} {}", x.contender, x.transport);
            if !not_run.iter().any(|(w, _)| *w == who) {
                not_run.push((who, why.clone()));
            }
        }
    }
    if !not_run.is_empty() {
        let _ = writeln!(s, "## Not run in this build\n");
        for (who, why) in not_run {
            let _ = writeln!(s, "- {who}: {why}");
        }
        let _ = writeln!(s);
    }
    let failed: Vec<&Summary> = res
        .summary
        .iter()
        .filter(|x| !x.errors.is_empty())
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "## Runs that failed\n");
        for x in failed {
            for e in &x.errors {
                let _ = writeln!(
                    s,
                    "- {} {} {} {}: {}",
                    x.scenario,
                    size_label(x.size),
                    x.contender,
                    x.transport,
                    e.replace('\n', " ")
                );
            }
        }
        let _ = writeln!(s);
    }
    s
}

/// Shades per contender: lwmq in blues, libzmq in oranges, zeromq.rs in greens,
/// omq in reds, iceoryx2 in purples, anything else in greys.
fn color(contender: &str, idx: usize) -> &'static str {
    const LWMQ: &[&str] = &[
        "#08306b", "#08519c", "#2171b5", "#4292c6", "#6baed6", "#9ecae1", "#c6dbef", "#deebf7",
    ];
    const LIBZMQ: &[&str] = &["#7f2704", "#d94801", "#fd8d3c", "#fdae6b"];
    const ZEROMQ_RS: &[&str] = &["#00441b", "#238b45", "#74c476", "#a1d99b"];
    const OMQ: &[&str] = &[
        "#67000d", "#a50f15", "#ef3b2c", "#fb6a4a", "#fc9272", "#fcbba1",
    ];
    const ICEORYX2: &[&str] = &["#54278f", "#9e9ac8"];
    const OTHER: &[&str] = &["#252525", "#636363", "#969696", "#bdbdbd"];
    let shades = match contender {
        "lwmq" => LWMQ,
        "libzmq" => LIBZMQ,
        "zeromq-rs" => ZEROMQ_RS,
        "omq" => OMQ,
        "iceoryx2" => ICEORYX2,
        _ => OTHER,
    };
    shades[idx.min(shades.len() - 1)]
}

fn fmt_axis(v: f64, unit: &str) -> String {
    if unit == "µs" {
        return format!(
            "{} µs",
            if v < 1.0 {
                format!("{v}")
            } else {
                format!("{v:.0}")
            }
        );
    }
    let (x, p) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    format!(
        "{}{p}{unit}",
        if x < 1.0 {
            format!("{x}")
        } else {
            format!("{x:.0}")
        }
    )
}

struct Panel<'a> {
    title: &'a str,
    unit: &'a str,
    groups: Vec<String>,
    /// (label, color, value per group)
    series: Vec<(String, &'static str, Vec<Option<f64>>)>,
}

fn panel(svg: &mut String, y0: f64, w: f64, h: f64, p: &Panel<'_>) {
    let (left, right, top, bottom) = (80.0, 20.0, 30.0, 30.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let vals: Vec<f64> = p
        .series
        .iter()
        .flat_map(|s| s.2.iter().flatten().copied())
        .filter(|v| *v > 0.0)
        .collect();
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        left,
        y0 + 18.0,
        p.title
    );
    if vals.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-size="13">no successful run</text>"#,
            left + 10.0,
            y0 + h / 2.0
        );
        return;
    }
    let min_log = vals.iter().copied().fold(f64::MAX, f64::min).log10();
    let mut lo = min_log.floor();
    if min_log - lo < 0.3 {
        // Keep the smallest bar visible: it would otherwise sit on the axis.
        lo -= 1.0;
    }
    let mut hi = vals.iter().copied().fold(0.0, f64::max).log10().ceil();
    if hi <= lo {
        hi = lo + 1.0;
    }
    let y_of = |v: f64| y0 + top + ph - (v.log10() - lo) / (hi - lo) * ph;
    let mut e = lo;
    while e <= hi + 1e-9 {
        let v = 10f64.powf(e);
        let y = y_of(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0,
            fmt_axis(v, p.unit)
        );
        e += 1.0;
    }
    let gw = pw / p.groups.len() as f64;
    let n = p.series.len().max(1) as f64;
    let bw = (gw * 0.8 / n).min(40.0);
    let pad = (gw - bw * n) / 2.0;
    for (gi, g) in p.groups.iter().enumerate() {
        let gx = left + gi as f64 * gw;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{g}</text>"#,
            gx + gw / 2.0,
            y0 + top + ph + 18.0
        );
        for (si, (label, fill, values)) in p.series.iter().enumerate() {
            let Some(v) = values.get(gi).copied().flatten() else {
                continue;
            };
            if v <= 0.0 {
                continue;
            }
            let x = gx + pad + si as f64 * bw;
            let y = y_of(v);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{label}: {}</title></rect>"#,
                (bw - 1.0).max(1.0),
                (y0 + top + ph - y).max(0.5),
                fill,
                fmt_axis(v, p.unit)
            );
        }
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        y0 + top + ph,
        left + pw,
        y0 + top + ph
    );
}

pub fn svg(res: &Results) -> String {
    let w = 1000.0;
    let ph = 300.0;
    // A variant's color: its contender's hue, shaded by its rank among that
    // contender's variants in the plan, so it is the same in every panel.
    let variants: Vec<(String, String, &'static str)> = res
        .plan
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let rank = res.plan.variants[..i]
                .iter()
                .filter(|u| u.contender == v.contender)
                .count();
            (
                v.contender.clone(),
                v.transport.clone(),
                color(&v.contender, rank),
            )
        })
        .collect();
    let mk = |sc: &str,
              title: &'static str,
              unit: &'static str,
              f: fn(&Summary) -> Option<f64>|
     -> (Panel<'static>, bool) {
        let sizes: Vec<usize> = res
            .plan
            .cases
            .iter()
            .filter(|c| c.scenario == sc)
            .map(|c| c.size)
            .collect();
        let mut series = Vec::new();
        for (c, t, fill) in &variants {
            let vals: Vec<Option<f64>> = sizes
                .iter()
                .map(|&z| {
                    res.summary
                        .iter()
                        .find(|x| {
                            x.scenario == sc
                                && x.size == z
                                && &x.contender == c
                                && &x.transport == t
                        })
                        .and_then(f)
                })
                .collect();
            if vals.iter().any(Option::is_some) {
                series.push((format!("{c} {t}"), *fill, vals));
            }
        }
        (
            Panel {
                title,
                unit,
                groups: sizes.iter().map(|&z| size_label(z)).collect(),
                series,
            },
            !sizes.is_empty(),
        )
    };
    let panels: Vec<Panel<'_>> = [
        mk(
            "rtt",
            "Round trip, median (lower is better)",
            "µs",
            |x: &Summary| x.median_ns.map(|v| v / 1e3),
        ),
        mk(
            "thr",
            "PUSH->PULL throughput, messages/s (higher is better)",
            "",
            |x: &Summary| x.msgs_per_s,
        ),
        mk(
            "thr",
            "PUSH->PULL throughput, bytes/s (higher is better)",
            "B/s",
            |x: &Summary| x.gb_per_s.map(|g| g * 1e9),
        ),
        mk(
            "pubsub",
            "PUB to SUBs, messages/s at each subscriber (higher is better)",
            "",
            |x: &Summary| x.msgs_per_s,
        ),
    ]
    .into_iter()
    .filter(|(_, any)| *any)
    .map(|(p, _)| p)
    .collect();
    // Legend: every variant that appears anywhere.
    let mut legend: Vec<(String, &'static str)> = Vec::new();
    for p in &panels {
        for (label, fill, _) in &p.series {
            if !legend.iter().any(|(l, _)| l == label) {
                legend.push((label.clone(), fill));
            }
        }
    }
    let legend_rows = legend.len().div_ceil(4);
    let head = 60.0;
    let total_h = head + ph * panels.len() as f64 + 24.0 * legend_rows as f64 + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{total_h}" viewBox="0 0 {w} {total_h}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="#fff"/><text x="20" y="24" font-size="17" font-weight="bold">lwmq side-by-side ({} mode, {} rep.)</text><text x="20" y="44" font-size="12">{} · {} CPUs · Linux {} · {} · {} (log scales)</text>"##,
        res.plan.mode,
        res.plan.reps,
        res.meta.cpu,
        res.meta.cores,
        res.meta.kernel,
        res.meta.rustc,
        res.meta.commit.chars().take(12).collect::<String>()
    );
    for (i, p) in panels.iter().enumerate() {
        panel(&mut s, head + i as f64 * ph, w, ph, p);
    }
    let y_leg = head + ph * panels.len() as f64;
    for (i, (label, fill)) in legend.iter().enumerate() {
        let x = 20.0 + (i % 4) as f64 * 240.0;
        let y = y_leg + (i / 4) as f64 * 24.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{y}" width="14" height="14" fill="{fill}"/><text x="{}" y="{}" font-size="12">{label}</text>"#,
            x + 20.0,
            y + 12.0
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}
