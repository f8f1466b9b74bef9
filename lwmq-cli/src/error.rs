//! Errors and exit codes: which failure gets which code, and the one-line message.

use std::fmt;

use crate::cli::exit;

/// A usage mistake that clap could not catch (contradictory arguments): exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for a [`UsageError`] as an `anyhow::Error`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Whether an error is (caused by) a usage mistake.
#[cfg(test)]
pub fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<UsageError>())
}

/// The exit code for an error: 3 for a timeout, 2 for a usage mistake, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(err) = cause.downcast_ref::<lwmq::Error>() {
            if err.is_timeout() {
                return exit::TIMEOUT;
            }
        } else if let Some(err) = cause.downcast_ref::<lwmq::SendError>() {
            if err.error.is_timeout() {
                return exit::TIMEOUT;
            }
        } else if cause.is::<UsageError>() {
            return exit::USAGE;
        }
    }
    exit::ERROR
}

/// The error as one line: its causes joined by `": "`, line breaks replaced by spaces.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut s = format!("{e:#}");
    if s.contains(['\n', '\r']) {
        s = s
            .split(['\n', '\r'])
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
    }
    s
}

/// A clap error's first line, without clap's `error: ` prefix.
pub fn clap_one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("bad usage");
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn codes() {
        let timeout = anyhow::Error::new(lwmq::Error::Timeout).context("waiting for a reply");
        assert_eq!(exit_code(&timeout), exit::TIMEOUT);
        let send_timeout = anyhow::Error::new(lwmq::SendError {
            error: lwmq::Error::Timeout,
            message: lwmq::Message::from("x"),
        });
        assert_eq!(exit_code(&send_timeout), exit::TIMEOUT);
        assert_eq!(exit_code(&usage("no").context("parsing")), exit::USAGE);
        let endpoint = anyhow::Error::new(lwmq::Endpoint::parse("tcp://x").unwrap_err());
        assert_eq!(exit_code(&endpoint), exit::ERROR);
        let r: Result<(), std::io::Error> = Err(std::io::Error::other("boom"));
        assert_eq!(exit_code(&r.context("x").unwrap_err()), exit::ERROR);
    }

    #[test]
    fn clap_errors_are_one_line() {
        use clap::Parser as _;
        let e = crate::cli::Cli::try_parse_from(["lwmq", "send", "--foo"]).unwrap_err();
        assert_eq!(clap_one_line(&e), "unexpected argument '--foo' found");
        let e = crate::cli::Cli::try_parse_from(["lwmq", "recv", "tcp://h:1", "-t", "soon"])
            .unwrap_err();
        let line = clap_one_line(&e);
        assert!(line.contains("\"soon\" is not a duration"), "{line}");
    }

    #[test]
    fn messages_are_one_line() {
        let e = anyhow::anyhow!("line one\nline two").context("doing it");
        assert_eq!(one_line(&e), "doing it: line one line two");
    }
}
