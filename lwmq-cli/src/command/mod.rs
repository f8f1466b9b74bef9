//! The subcommands, one file each, and what they share: opening a socket the way the
//! command line says, and reading what to send.

mod completions;
mod ls;

use anyhow::Result;

use crate::cli::Command;

/// Runs one subcommand.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Ls(a) => ls::run(a),
        Command::Completions(a) => completions::run(a),
        other => anyhow::bail!("{other:?}: not wired to sockets yet"),
    }
}

/// Whether the error is a write to a closed pipe (`lwmq recv | head -1`), which ends
/// the command quietly.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
