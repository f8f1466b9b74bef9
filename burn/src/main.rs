//! `lwmq-burn`: burn tests for lwmq. `lwmq-burn run SCENARIO.toml...` runs scenarios
//! (hosts as network namespaces, role processes, faults, invariants checked as it
//! goes) and writes a report; `lwmq-burn role KIND ...` is one of the role programs the
//! harness starts (see `docs/reliability.md`).

mod check;
mod harness;
mod net;
mod proto;
mod report;
mod role;
mod scenario;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lwmq-burn", about = "Burn tests for lwmq", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run scenarios and write their report (needs root: it makes network namespaces).
    Run(RunArgs),
    /// A role program (started by `run`).
    Role(role::RoleArgs),
    /// Render the Markdown and the plots of a run again from its `report.json`.
    Report {
        /// The run's report directory (`--out` of `run`).
        dir: PathBuf,
        /// The first line of the summary (the run's command, for example).
        #[arg(long, default_value = "rendered again from report.json")]
        title: String,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenario files.
    #[arg(required = true)]
    scenarios: Vec<PathBuf>,
    /// Each scenario's short duration (the CI run).
    #[arg(long)]
    short: bool,
    /// Run every scenario this long instead (`90s`, `1h`).
    #[arg(long, value_parser = scenario::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Seed of the random faults (mixed with each scenario's own).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Report directory.
    #[arg(long, default_value = "target/burn")]
    out: PathBuf,
    /// Run the scenarios at the same time (each in its own namespaces).
    #[arg(long)]
    parallel: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Role(a) => role::run(a).map(|()| true),
        Cmd::Run(a) => run(a),
        Cmd::Report { dir, title } => rerender(&dir, &title).map(|()| true),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("lwmq-burn: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the scenarios; false if any broke a promise.
fn run(a: RunArgs) -> Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("lwmq-burn run makes network namespaces: run it as root (CI does)");
    }
    let scenarios = a
        .scenarios
        .iter()
        .map(|p| scenario::Scenario::load(p))
        .collect::<Result<Vec<_>>>()?;
    for ns in net::clean_stale() {
        eprintln!("burn: removed {ns}, left by a run that is gone");
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let i = Arc::clone(&interrupted);
        ctrlc::set_handler(move || i.store(true, Ordering::SeqCst))
            .context("install the Ctrl-C handler")?;
    }
    let exe = std::env::current_exe().context("own executable")?;
    std::fs::create_dir_all(&a.out)?;
    let opts = |i: usize, sc: &scenario::Scenario| harness::RunOpts {
        short: a.short,
        duration: a.duration,
        seed: a.seed,
        out: a.out.join(&sc.name),
        exe: exe.clone(),
        tag: i.to_string(),
    };
    let t0 = std::time::Instant::now();
    let results: Vec<Result<report::ScenarioReport>> = if a.parallel {
        std::thread::scope(|s| {
            let handles: Vec<_> = scenarios
                .iter()
                .enumerate()
                .map(|(i, sc)| {
                    let o = opts(i, sc);
                    let int = &interrupted;
                    s.spawn(move || harness::run(sc, &o, int))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the scenario's harness panicked")))
                })
                .collect()
        })
    } else {
        let mut v = Vec::new();
        for (i, sc) in scenarios.iter().enumerate() {
            if interrupted.load(Ordering::SeqCst) {
                break;
            }
            eprintln!("burn: {} ...", sc.name);
            v.push(harness::run(sc, &opts(i, sc), &interrupted));
        }
        v
    };
    let mut ok = true;
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for (sc, r) in scenarios.iter().zip(results) {
        match r {
            Ok(r) => {
                eprintln!(
                    "burn: {}: {} messages moved, {} faults, {} violations ({})",
                    r.name,
                    r.moved(),
                    r.faults.len(),
                    r.violations.len(),
                    a.out.join(&r.name).join("report.md").display()
                );
                for v in r.violations.iter().take(10) {
                    eprintln!(
                        "burn:   {} {} {} {}",
                        v.kind,
                        v.process,
                        v.message.as_deref().unwrap_or("-"),
                        v.detail
                    );
                }
                ok &= r.violations.is_empty() && !r.interrupted;
                reports.push(r);
            }
            Err(e) => {
                ok = false;
                eprintln!("burn: {}: {e:#}", sc.name);
                failed.push((sc.name.clone(), format!("{e:#}")));
            }
        }
    }
    let title = format!(
        "`lwmq-burn run{}{} --seed {}{}` ({} scenarios, {:.0} s wall time)",
        if a.short { " --short" } else { "" },
        a.duration
            .map(|d| format!(" --duration {}s", d.as_secs()))
            .unwrap_or_default(),
        a.seed,
        if a.parallel { " --parallel" } else { "" },
        scenarios.len(),
        t0.elapsed().as_secs_f64()
    );
    write_reports(&a.out, &reports, &failed, &title)?;
    eprintln!("burn: report in {}", a.out.join("report.md").display());
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("burn: interrupted");
    }
    Ok(ok)
}

/// Writes each scenario's report.json, report.md and rates.svg, and the run's
/// report.md and report.json.
fn write_reports(
    out: &std::path::Path,
    reports: &[report::ScenarioReport],
    failed: &[(String, String)],
    title: &str,
) -> Result<()> {
    for r in reports {
        let dir = out.join(&r.name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(r)?)?;
        std::fs::write(dir.join("report.md"), r.markdown())?;
        std::fs::write(dir.join("rates.svg"), r.svg())?;
    }
    std::fs::write(
        out.join("report.md"),
        report::summary(reports, failed, title),
    )?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(reports)?,
    )?;
    Ok(())
}

fn rerender(dir: &std::path::Path, title: &str) -> Result<()> {
    let path = dir.join("report.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let reports: Vec<report::ScenarioReport> =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    write_reports(dir, &reports, &[], title)?;
    eprintln!("burn: report in {}", dir.join("report.md").display());
    Ok(())
}
