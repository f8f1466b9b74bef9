//! The `lwmq` command-line tool: send, receive, inspect and benchmark sockets.
//!
//! `cli` holds the clap definitions, `command/` one file per subcommand; every
//! command is a thin layer over library calls a user could make. Errors are printed on
//! stderr in one line and mapped to the documented exit codes (`cli::exit`).

mod cli;
mod command;
mod error;
mod input;
mod output;
mod typed;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with code 0; a mistake is one line on
            // stderr with code 2 (bare `lwmq` shows the help, also with code 2).
            match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                }
                _ => eprintln!("lwmq: {} (try --help)", error::clap_one_line(&e)),
            }
            return code(e.exit_code());
        }
    };
    match command::run(cli.command) {
        Ok(()) => code(cli::exit::OK),
        Err(e) if command::is_broken_pipe(&e) => code(cli::exit::OK),
        Err(e) => {
            eprintln!("lwmq: {}", error::one_line(&e));
            code(error::exit_code(&e))
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}
