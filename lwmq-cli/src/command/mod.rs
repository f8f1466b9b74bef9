//! The subcommands, one file each, and what they share: opening a socket the way the
//! command line says, sending what the arguments or stdin give, and printing.

mod bench;
mod completions;
mod dealer;
mod keygen;
mod ls;
mod monitor;
mod proxy;
mod recv;
mod rep;
mod req;
mod router;
mod security;
mod send;

use std::time::Duration;

use anyhow::{Context as _, Result};
use lwmq::{Context, Endpoint, EventKind, Message, Socket, SocketType};

use crate::cli::{Command, SocketOpts};
use crate::input::{self, Encoding, Input};

/// Runs one subcommand.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Send(a) => send::run(a, SocketType::Push, None),
        Command::Push(a) => send::run(a, SocketType::Push, None),
        Command::Pub(a) => send::run(a.send, SocketType::Pub, a.topic),
        Command::Recv(a) => recv::run(a, SocketType::Pull, &[]),
        Command::Pull(a) => recv::run(a, SocketType::Pull, &[]),
        Command::Sub(a) => recv::run(a.recv, SocketType::Sub, &a.topic),
        Command::Req(a) => req::run(a),
        Command::Rep(a) => rep::run(a),
        Command::Dealer(a) => dealer::run(a),
        Command::Router(a) => router::run(a),
        Command::Ls(a) => ls::run(a),
        Command::Monitor(a) => monitor::run(a),
        Command::Proxy(a) => proxy::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchPeer(a) => bench::run_peer(a),
        Command::Completions(a) => completions::run(a),
        Command::Keygen(a) => keygen::run(a),
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

/// A socket opened as the command line says.
pub struct Opened {
    /// The socket.
    pub socket: Socket,
    /// The endpoint: as bound (port resolved) or as connected.
    pub endpoint: String,
}

/// Creates a socket of type `t`, applies `--timeout` (to sends, receives and the
/// linger on exit; without it they wait as long as it takes), lets `configure` set
/// options that must precede connecting, then binds or connects. A bound endpoint is
/// announced on stderr (`lwmq: bound tcp://127.0.0.1:41234`), so that port 0 is usable.
///
/// When connecting, a peer that refuses the handshake (an incompatible socket type,
/// failed authentication) ends the command at once with exit code 1 and the reason,
/// rather than leaving it waiting for a peer that will never take its messages.
pub fn open(
    ctx: &Context,
    t: SocketType,
    opts: &SocketOpts,
    configure: impl FnOnce(&Socket) -> Result<()>,
) -> Result<Opened> {
    open_with(ctx, t, opts, true, configure)
}

/// [`open`], choosing whether a refused handshake ends the command.
pub fn open_with(
    ctx: &Context,
    t: SocketType,
    opts: &SocketOpts,
    fail_on_rejection: bool,
    configure: impl FnOnce(&Socket) -> Result<()>,
) -> Result<Opened> {
    // Parse first: a bad endpoint is reported before anything else happens.
    Endpoint::parse(&opts.endpoint)?;
    let socket = ctx.socket(t)?;
    socket.set_send_timeout(opts.timeout);
    socket.set_recv_timeout(opts.timeout);
    socket.set_linger(opts.timeout);
    // Queue only to peers whose connection is up: a send then waits for a peer (or
    // times out) instead of queueing into a connection that may never come, whose
    // messages would be dropped when this short-lived process closes the socket.
    socket.set_immediate(true);
    security::apply(ctx, &socket, &opts.security)?;
    configure(&socket)?;
    let endpoint = if opts.bind {
        let bound = socket
            .bind(&opts.endpoint)
            .map_err(|e| endpoint_error(e, "bind", &opts.endpoint))?;
        eprintln!("lwmq: bound {bound}");
        bound
    } else {
        if fail_on_rejection {
            exit_on_rejection(socket.monitor());
        }
        socket
            .connect(&opts.endpoint)
            .map_err(|e| endpoint_error(e, "connect to", &opts.endpoint))?;
        opts.endpoint.clone()
    };
    if opts.notify {
        notify_ready()?;
    }
    Ok(Opened { socket, endpoint })
}

/// `--notify`: tells systemd the service is ready (and feeds its watchdog).
pub fn notify_ready() -> Result<()> {
    let r = lwmq::systemd::notify_ready().context("cannot notify systemd (NOTIFY_SOCKET)")?;
    if !r.sent {
        eprintln!("lwmq: --notify: NOTIFY_SOCKET is not set; no service manager to tell");
    }
    Ok(())
}

/// Watches a socket's events on a thread of its own and ends the process (exit code
/// 1, one line on stderr) when a peer refuses the handshake. The thread ends when the
/// socket's monitor channel closes.
fn exit_on_rejection(monitor: lwmq::Monitor) {
    std::thread::spawn(move || {
        while let Some(ev) = monitor.recv(None) {
            if matches!(
                ev.kind,
                EventKind::HandshakeFailedProtocol | EventKind::HandshakeFailedAuth
            ) {
                let detail = ev
                    .detail
                    .trim_end_matches("; not reconnecting")
                    .trim_end_matches("; retrying with a growing interval");
                eprintln!("lwmq: peer at {} rejected: {detail}", ev.endpoint);
                std::process::exit(crate::cli::exit::ERROR);
            }
        }
    });
}

/// An endpoint error already names the endpoint; others get it as context.
fn endpoint_error(e: lwmq::Error, verb: &str, endpoint: &str) -> anyhow::Error {
    match e {
        lwmq::Error::Endpoint { .. } | lwmq::Error::AddressInUse { .. } => e.into(),
        other => anyhow::Error::new(other).context(format!("cannot {verb} {endpoint}")),
    }
}

/// The messages to send, from the frame arguments or stdin.
pub fn messages(
    frames: &[String],
    enc: Encoding,
    count: u64,
) -> Result<Box<dyn Iterator<Item = Result<Message>>>> {
    Ok(match input::from_args(frames, enc)? {
        Input::Nothing => Box::new(std::iter::empty()),
        Input::Message(m) => {
            if count == 0 {
                Box::new(std::iter::repeat(m).map(Ok))
            } else {
                Box::new(
                    std::iter::repeat_n(m, usize::try_from(count).unwrap_or(usize::MAX)).map(Ok),
                )
            }
        }
        Input::StdinLines => Box::new(input::lines(std::io::stdin().lock(), enc)),
    })
}

/// Sends a message, with the error saying which message failed.
pub fn send(socket: &Socket, msg: Message, index: u64) -> Result<()> {
    socket
        .send(msg)
        .map_err(|e| anyhow::Error::new(e.error))
        .with_context(|| format!("sending message {}", index + 1))
}

/// Receives a message; a timeout says what was awaited.
pub fn recv(socket: &Socket, what: &str) -> Result<Message> {
    socket.recv().with_context(|| format!("waiting for {what}"))
}

/// Sleeps if `d` is given.
pub fn pause(d: Option<Duration>) {
    if let Some(d) = d {
        std::thread::sleep(d);
    }
}

/// Whether `done` messages reach the `count` limit (0: no limit).
pub fn reached(done: u64, count: u64) -> bool {
    count != 0 && done >= count
}
