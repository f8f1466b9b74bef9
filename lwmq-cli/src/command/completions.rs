//! `lwmq completions SHELL`: prints a completion script generated from the clap
//! definitions, so it never drifts from the real options.

use std::io::Write as _;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs};

/// Runs `lwmq completions`.
pub fn run(args: CompletionsArgs) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "lwmq", &mut script);
    match args.out {
        Some(path) => std::fs::write(&path, &script)
            .with_context(|| format!("cannot write {}", path.display())),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&script)?;
            out.flush()?;
            Ok(())
        }
    }
}
