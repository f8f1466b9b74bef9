//! `lwmq-bench`: lwmq side by side with libzmq, zeromq.rs, omq.rs and iceoryx2.
//!
//! ```text
//! lwmq-bench [--smoke | --quick | --full] [options]   run the benchmarks (default --quick)
//! lwmq-bench render RESULTS.json [--out DIR]          rewrite the table and plot from JSON
//! lwmq-bench peer ...                                 one side of one run (the runner's)
//! ```
//!
//! Layout (after crossbeam-channel's benchmarks): `drivers/` holds one small driver
//! per contender behind one interface, `scenario.rs` the scenarios written once against
//! it and the peer process, `runner.rs` the scenario list and the loop that spawns,
//! interleaves, repeats and checks, `report.rs` the table, JSON and plot, and
//! `machine.rs` what is recorded about the machine.

mod drivers;
mod machine;
mod report;
mod runner;
mod scenario;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "\
usage: lwmq-bench [--smoke | --quick | --full] [options]
       lwmq-bench render RESULTS.json [--out DIR]

modes:
  --smoke            tiny runs of the smallest sizes (checks the harness works)
  --quick            every case, short runs, one repetition (the default)
  --full             every case, longer runs, three repetitions

options:
  --contenders LIST  comma-separated: lwmq,libzmq,zeromq-rs,omq,iceoryx2 (default: all compiled)
  --transports LIST  only these transports (e.g. tcp,ipc-spin,tcp-curve)
  --scenarios LIST   rtt,thr,pubsub
  --sizes LIST       only these message sizes in bytes
  --reps N           repetitions
  --duration-ms N    measured time of each run
  --subs N           subscriber processes in pubsub
  --pin auto|always|never
                     pin the two sides to cores 0 and 1 (auto: where no background
                     I/O thread would share a pinned core)
  --out DIR          where results.{json,md,svg} go (default: bench/results)
  --docs FILE        also put the table into FILE, between its results markers
  --strict           exit with status 1 if any run failed
  --list             print the plan and exit
";

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn default_out() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")
}

fn write_outputs(res: &report::Results, out: &std::path::Path) -> Result<String> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let md = report::markdown(res);
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(res)?)?;
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(out.join("results.svg"), report::svg(res))?;
    Ok(md)
}

/// Replaces what lies between the results markers of a Markdown document.
fn update_docs(doc: &std::path::Path, md: &str) -> Result<()> {
    const BEGIN: &str = "<!-- results:begin -->";
    const END: &str = "<!-- results:end -->";
    let text = std::fs::read_to_string(doc).with_context(|| format!("read {}", doc.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} ... {END} markers", doc.display());
    };
    if e < b {
        bail!("{}: the results markers are out of order", doc.display());
    }
    let new = format!("{}{BEGIN}\n{md}{}", &text[..b], &text[e..]);
    std::fs::write(doc, new).with_context(|| format!("write {}", doc.display()))?;
    Ok(())
}

fn peer_main(args: &[String]) -> Result<()> {
    let mut a = scenario::PeerArgs {
        contender: String::new(),
        transport: String::new(),
        role: String::new(),
        size: 64,
        duration: Duration::from_millis(100),
        warmup: 0,
        endpoint: None,
        name: format!("{}", std::process::id()),
        cores: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--contender" => a.contender = v.clone(),
            "--transport" => a.transport = v.clone(),
            "--role" => a.role = v.clone(),
            "--size" => a.size = v.parse().context("--size")?,
            "--duration-ms" => {
                a.duration = Duration::from_millis(v.parse().context("--duration-ms")?)
            }
            "--warmup" => a.warmup = v.parse().context("--warmup")?,
            "--endpoint" => a.endpoint = Some(v.clone()),
            "--name" => a.name = v.clone(),
            "--cores" => {
                a.cores = list(v)
                    .iter()
                    .map(|c| c.parse().context("--cores"))
                    .collect::<Result<_>>()?
            }
            other => bail!("peer: unknown option {other}"),
        }
    }
    if a.size < scenario::HEAD {
        bail!("--size must be at least {} bytes", scenario::HEAD);
    }
    scenario::run_peer(&a)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("peer") => peer_main(&args[1..]),
        Some("render") => render_main(&args[1..]),
        _ => bench_main(&args),
    };
    if let Err(e) = r {
        eprintln!("lwmq-bench: error: {e:#}");
        std::process::exit(2);
    }
}

fn render_main(args: &[String]) -> Result<()> {
    let path = args.first().context("render needs a results.json")?;
    let mut out = default_out();
    if let [_, flag, dir] = args {
        if flag != "--out" {
            bail!("render: unknown option {flag}");
        }
        out = PathBuf::from(dir);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let res: report::Results = serde_json::from_str(&text).context("parse the results")?;
    print!("{}", write_outputs(&res, &out)?);
    Ok(())
}

fn bench_main(args: &[String]) -> Result<()> {
    let mut mode = "quick".to_owned();
    let (mut contenders, mut transports, mut scenarios, mut sizes) = (None, None, None, None);
    let (mut reps, mut duration, mut subs, mut pin) = (None, None, None, None);
    let (mut out, mut strict, mut list_only) = (default_out(), false, false);
    let mut docs: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let mut val = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--smoke" => mode = "smoke".into(),
            "--quick" => mode = "quick".into(),
            "--full" => mode = "full".into(),
            "--contenders" => contenders = Some(list(val()?)),
            "--transports" => transports = Some(list(val()?)),
            "--scenarios" => scenarios = Some(list(val()?)),
            "--sizes" => {
                sizes = Some(
                    list(val()?)
                        .iter()
                        .map(|s| s.parse::<usize>().context("--sizes"))
                        .collect::<Result<Vec<_>>>()?,
                )
            }
            "--reps" => reps = Some(val()?.parse::<usize>().context("--reps")?),
            "--duration-ms" => duration = Some(val()?.parse::<u64>().context("--duration-ms")?),
            "--subs" => subs = Some(val()?.parse::<usize>().context("--subs")?),
            "--pin" => pin = Some(val()?.clone()),
            "--out" => out = PathBuf::from(val()?),
            "--docs" => docs = Some(PathBuf::from(val()?)),
            "--strict" => strict = true,
            "--list" => list_only = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    let mut plan = runner::Plan::for_mode(&mode)?;
    let compiled = drivers::compiled();
    let wanted: Vec<String> = match contenders {
        Some(c) => {
            for x in &c {
                if !compiled.contains(&x.as_str()) {
                    bail!(
                        "contender {x:?} is not compiled in (compiled: {}); enable its cargo feature",
                        compiled.join(", ")
                    );
                }
            }
            c
        }
        None => compiled.iter().map(|s| s.to_string()).collect(),
    };
    plan.variants.retain(|v| wanted.contains(&v.contender));
    if let Some(t) = transports {
        plan.variants.retain(|v| t.contains(&v.transport));
    }
    if let Some(s) = scenarios {
        plan.cases.retain(|c| s.contains(&c.scenario));
    }
    if let Some(z) = sizes {
        plan.cases.retain(|c| z.contains(&c.size));
    }
    if let Some(r) = reps {
        plan.reps = r.max(1);
    }
    if let Some(d) = duration {
        plan.duration_ms = d.max(1);
    }
    if let Some(n) = subs {
        plan.subs = n.max(1);
    }
    if let Some(p) = pin {
        if !["auto", "always", "never"].contains(&p.as_str()) {
            bail!("--pin takes auto, always or never");
        }
        plan.pin = p;
    }
    if plan.variants.is_empty() || plan.cases.is_empty() {
        bail!("nothing to run: the filters left no variant or no case");
    }
    let total: usize = plan
        .cases
        .iter()
        .map(|c| plan.variants.iter().filter(|v| v.runs(c)).count())
        .sum::<usize>()
        * plan.reps;
    eprintln!(
        "lwmq-bench: {mode} mode, {} cases x {} variants, {} reps: {total} runs of {} ms",
        plan.cases.len(),
        plan.variants.len(),
        plan.reps,
        plan.duration_ms
    );
    if list_only {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let meta = machine::collect(drivers::versions());
    let start = Instant::now();
    let mut done = 0;
    let runs = runner::run(&plan, |r| {
        done += 1;
        let what = match (&r.latency, &r.rate, r.subs.is_empty()) {
            _ if r.skipped.is_some() => "not run in this build".to_owned(),
            _ if !r.ok => format!("FAILED: {}", r.error.as_deref().unwrap_or("?")),
            (Some(l), _, _) => format!(
                "median {:.2} us, p99 {:.2} us ({} round trips)",
                l.median_ns as f64 / 1e3,
                l.p99_ns as f64 / 1e3,
                l.round_trips
            ),
            (_, Some(x), _) => format!("{:.0} msgs/s, {:.3} GB/s", x.msgs_per_s, x.gb_per_s),
            (_, _, false) => format!(
                "{} subs, mean {:.0} msgs/s",
                r.subs.len(),
                r.subs.iter().map(|s| s.msgs_per_s).sum::<f64>() / r.subs.len() as f64
            ),
            _ => String::new(),
        };
        eprintln!(
            "[{done}/{total} {:.0}s] rep {} {} {} {}/{}: {what}",
            start.elapsed().as_secs_f64(),
            r.rep,
            r.scenario,
            report::size_label(r.size),
            r.contender,
            r.transport
        );
    });
    let failed = runs.iter().filter(|r| !r.ok && r.skipped.is_none()).count();
    let summary = report::summarize(&plan, &runs);
    let res = report::Results {
        meta,
        plan,
        summary,
        runs,
    };
    let md = write_outputs(&res, &out)?;
    print!("{md}");
    if let Some(doc) = docs {
        update_docs(&doc, &md)?;
        eprintln!("lwmq-bench: updated {}", doc.display());
    }
    eprintln!(
        "lwmq-bench: {} runs in {:.0} s, {failed} failed; wrote {}/results.{{json,md,svg}}",
        res.runs.len(),
        start.elapsed().as_secs_f64(),
        out.display()
    );
    if strict && failed > 0 {
        bail!("{failed} run(s) failed");
    }
    Ok(())
}
