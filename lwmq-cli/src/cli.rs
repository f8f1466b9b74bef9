//! The command line, as clap definitions: every subcommand, option and help text.
//!
//! Nothing here does any work; `command/` does, one file per subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes, as documented in `--help`.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any error (bad endpoint, peer rejected, I/O...).
    pub const ERROR: i32 = 1;
    /// Bad usage: unknown option, missing argument, contradictory options.
    pub const USAGE: i32 = 2;
    /// A `--timeout` expired before the operation completed.
    pub const TIMEOUT: i32 = 3;
}

const AFTER_HELP: &str = "\
Endpoints: tcp://host:port[/resource], ipc://name[:port] (shared memory),
unix:///path or unix://@abstract, inproc://name, fd://N (an inherited descriptor:
--bind takes a listening socket, connect a connected one), systemd://NAME or
systemd://N (socket activation, by FileDescriptorName= or index; with Accept=yes the
connection itself, with --bind).
Every socket command connects to its ENDPOINT; --bind binds instead (and prints the
bound address, e.g. the port picked for tcp://127.0.0.1:0, on stderr, before it reads
anything from stdin). --notify then tells systemd the service is ready.

Frames: each FRAME argument is one frame of the message: text by default, or hex
(--hex), base64 (--base64), or a JSON value sent as MessagePack (--json). @FILE takes
the argument from a file (@@x is the literal text @x). A lone - reads messages from
stdin, one per line.

Examples:
  lwmq rep --bind tcp://127.0.0.1:5555 --exec 'tr a-z A-Z'   # any command as a service
  lwmq req tcp://127.0.0.1:5555 hello                          # prints HELLO
  lwmq recv --bind ipc://jobs -n 1                             # waits for one message
  lwmq send ipc://jobs --json '{\"id\": 7, \"tags\": [\"a\"]}'
  lwmq sub tcp://127.0.0.1:6000 --topic weather -o json
  seq 10 | lwmq push unix:///tmp/work.sock -
  lwmq ls --watch
  lwmq bench ipc://bench --size 64

Exit codes: 0 success, 1 error, 2 usage error, 3 timeout.";

/// lwmq: send, receive, inspect and benchmark lwmq and ZeroMQ sockets.
#[derive(Debug, Parser)]
#[command(name = "lwmq", version, propagate_version = true, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send messages (a PUSH socket unless --type says otherwise).
    #[command(after_help = "Example:\n  lwmq send tcp://127.0.0.1:5555 frame1 frame2")]
    Send(SendArgs),
    /// Receive and print messages (a PULL socket unless --type says otherwise).
    #[command(after_help = "Example:\n  lwmq recv --bind tcp://127.0.0.1:5555 -n 1 -t 5s")]
    Recv(RecvArgs),
    /// Send requests (REQ) and print each reply.
    #[command(after_help = "Example:\n  lwmq req tcp://127.0.0.1:5555 hello")]
    Req(ReqArgs),
    /// Answer requests (REP): echo them, reply with fixed frames, or run a command.
    #[command(
        after_help = "With --exec, the command runs once per request (via sh -c) with the\n\
request on its stdin (frames separated by newlines) and its stdout, minus one\n\
trailing newline, as the reply.\n\n\
Example:\n  lwmq rep --bind tcp://127.0.0.1:5555 --exec 'wc -c'"
    )]
    Rep(RepArgs),
    /// Publish messages (PUB); --topic puts a topic frame first.
    #[command(
        after_help = "A PUB socket drops what no subscriber has asked for yet, and subscriptions\n\
take a moment to arrive after connecting: publish repeatedly (-n 0 --interval) or\n\
wait first (--delay).\n\n\
Example:\n  lwmq pub --bind tcp://127.0.0.1:6000 --topic weather sunny -n 0 --interval 1s"
    )]
    Pub(PubArgs),
    /// Subscribe (SUB) and print what arrives; --topic filters by prefix.
    #[command(after_help = "Example:\n  lwmq sub tcp://127.0.0.1:6000 --topic weather")]
    Sub(SubArgs),
    /// Send messages on a PUSH socket.
    Push(SendArgs),
    /// Receive messages on a PULL socket.
    Pull(RecvArgs),
    /// Send messages on a DEALER socket, then print what comes back.
    Dealer(DealerArgs),
    /// Receive on a ROUTER socket (the routing id is the first frame shown), and
    /// answer each message with FRAMEs if given.
    Router(RouterArgs),
    /// List every lwmq process on this host, its sockets, endpoints and connections.
    #[command(
        after_help = "Processes are found through their introspection sockets (no daemon);\n\
LWMQ_INTROSPECT=0 in a process's environment hides it. Only the processes of\n\
this domain (LWMQ_DOMAIN, else \"default\") are shown unless --all-domains.\n\nExamples:\n  lwmq ls --watch\n  lwmq ls --all-domains --graph | dot -Tpng > system.png\n  lwmq ls --graph-svg > system.svg"
    )]
    Ls(LsArgs),
    /// Connect a socket to ENDPOINT and print its events as they happen.
    #[command(after_help = "Example:\n  lwmq monitor tcp://127.0.0.1:5555 --type req")]
    Monitor(MonitorArgs),
    /// Forward messages between two sockets (ROUTER/DEALER by default).
    #[command(
        after_help = "Endpoints are bound unless written >ENDPOINT (connect).\n\n\
Example:\n  lwmq proxy tcp://*:5559 tcp://*:5560\n  lwmq proxy --pattern forwarder tcp://*:6000 '>tcp://upstream:6001'"
    )]
    Proxy(ProxyArgs),
    /// Measure latency and throughput between two processes on any transport.
    #[command(after_help = "Runs a second copy of itself as the peer.\n\n\
Example:\n  lwmq bench ipc://bench --size 1024\n  lwmq bench tcp://127.0.0.1:0 --mode latency")]
    Bench(BenchArgs),
    /// Make a CURVE key pair (Z85), for --curve-server, --curve-client and --allow-keys.
    #[command(
        after_help = "Example:\n  lwmq keygen --out server       # server (secret, 0600) and server.pub\n  \
lwmq rep --bind tcp://*:5555 --curve-server server\n  \
lwmq req tcp://host:5555 --curve-client server.pub hello"
    )]
    Keygen(KeygenArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  lwmq completions bash > ~/.local/share/bash-completion/completions/lwmq"
    )]
    Completions(CompletionsArgs),
    /// The peer side of `lwmq bench` (started by it).
    #[command(hide = true)]
    BenchPeer(BenchPeerArgs),
}

/// How to open the socket.
#[derive(Debug, Clone, Args)]
pub struct SocketOpts {
    /// The endpoint to connect to (or bind, with --bind).
    pub endpoint: String,
    /// Bind to ENDPOINT instead of connecting.
    #[arg(short, long)]
    pub bind: bool,
    /// Give up when a send, or a wait for a message, a reply or a peer, takes longer
    /// than this (e.g. 500ms, 5s, 1m; a bare number is seconds): exit code 3.
    #[arg(short, long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Once bound or connected, tell systemd the service is ready (sd_notify READY=1
    /// to NOTIFY_SOCKET, for Type=notify units), and feed its watchdog when
    /// WATCHDOG_USEC is set.
    #[arg(long)]
    pub notify: bool,
    #[command(flatten)]
    pub security: SecurityOpts,
}

/// CURVE and PLAIN security of the socket.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Security")]
pub struct SecurityOpts {
    /// Be a CURVE server with this secret key: 40 characters of Z85, or a file holding
    /// it (from `lwmq keygen --out`, or a czmq/pyzmq secret certificate). Without
    /// --allow-keys every client key is accepted.
    // A Z85 key may begin with '-': taken as the value, not as an option.
    #[arg(long, value_name = "SECRET_KEY_OR_FILE", allow_hyphen_values = true, conflicts_with_all = ["curve_client", "plain", "plain_server"])]
    pub curve_server: Option<String>,
    /// Be a CURVE client of the server with this public key (Z85, or a file holding it).
    #[arg(long, value_name = "SERVER_PUBLIC_KEY", allow_hyphen_values = true, conflicts_with_all = ["plain", "plain_server"])]
    pub curve_client: Option<String>,
    /// With --curve-client: our key pair, from a file holding our secret key (`lwmq
    /// keygen --out`); without it a new pair is made for this run.
    #[arg(long, value_name = "FILE", requires = "curve_client")]
    pub curve_keys: Option<PathBuf>,
    /// With --curve-server: accept only the client public keys in the files of DIR
    /// (czmq/pyzmq certificates, or files holding a key alone).
    #[arg(long, value_name = "DIR", requires = "curve_server")]
    pub allow_keys: Option<PathBuf>,
    /// Be a PLAIN client with this user name and password.
    #[arg(long, value_name = "USER:PASSWORD", conflicts_with = "plain_server")]
    pub plain: Option<String>,
    /// Be a PLAIN server accepting this user name and password (repeatable).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub plain_server: Vec<String>,
}

/// How arguments and stdin lines become frames.
#[derive(Debug, Clone, Default, Args)]
pub struct InputOpts {
    /// Frames are hexadecimal.
    #[arg(long, conflicts_with_all = ["base64", "json"])]
    pub hex: bool,
    /// Frames are base64.
    #[arg(long, conflicts_with = "json")]
    pub base64: bool,
    /// Frames are JSON values, sent as MessagePack; received MessagePack is shown as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How received messages are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One line per message, frames separated by tabs, control characters escaped.
    #[default]
    Text,
    /// One line per message, each frame in hex, separated by spaces.
    Hex,
    /// One JSON object per line, with frames and metadata.
    Json,
}

/// Printing options.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct OutputOpts {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `lwmq send`, `lwmq push`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub socket: SocketOpts,
    /// The message's frames; - alone reads one message per stdin line.
    pub frames: Vec<String>,
    #[command(flatten)]
    pub input: InputOpts,
    /// Socket type (send: PUSH; also DEALER, PUB, XPUB, PAIR, ROUTER).
    #[arg(long = "type", value_parser = parse_socket_type)]
    pub socket_type: Option<lwmq::SocketType>,
    /// Send the message this many times (0: until interrupted). Ignored with -.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: u64,
    /// Wait this long between messages.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Wait this long before the first message (lets subscribers connect).
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,
}

/// `lwmq pub`.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    #[command(flatten)]
    pub send: SendArgs,
    /// A topic frame sent before the message's frames.
    #[arg(long)]
    pub topic: Option<String>,
}

/// `lwmq recv`, `lwmq pull`.
#[derive(Debug, Clone, Args)]
pub struct RecvArgs {
    #[command(flatten)]
    pub socket: SocketOpts,
    /// Frames are MessagePack: show them as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub output: OutputOpts,
    /// Socket type (recv: PULL; also SUB, DEALER, ROUTER, PAIR, XSUB).
    #[arg(long = "type", value_parser = parse_socket_type)]
    pub socket_type: Option<lwmq::SocketType>,
    /// Stop after this many messages (0: until interrupted).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub count: u64,
}

/// `lwmq sub`.
#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    #[command(flatten)]
    pub recv: RecvArgs,
    /// Subscribe to messages whose first frame starts with this (repeatable; default: all).
    #[arg(long)]
    pub topic: Vec<String>,
}

/// `lwmq req`.
#[derive(Debug, Clone, Args)]
pub struct ReqArgs {
    #[command(flatten)]
    pub socket: SocketOpts,
    /// The request's frames; - alone sends one request per stdin line.
    #[arg(required = true)]
    pub frames: Vec<String>,
    #[command(flatten)]
    pub input: InputOpts,
    #[command(flatten)]
    pub output: OutputOpts,
    /// Send the request this many times. Ignored with -.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: u64,
    /// Send a request again when no reply came after INTERVAL (e.g. 500ms), with the
    /// same request id, to the next connected REP in turn, and at once when its
    /// connection is lost. An lwmq REP answers copies from its reply cache.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub resend: Option<Duration>,
    /// With --resend: send one request at most N times, the first included (default 3);
    /// then give up (exit code 3).
    #[arg(long, value_name = "N", requires = "resend", value_parser = clap::value_parser!(u32).range(1..))]
    pub attempts: Option<u32>,
    /// Also connect to ENDPOINT (repeatable): requests go to each in turn, and with
    /// --resend fail over between them.
    #[arg(long = "also", value_name = "ENDPOINT")]
    pub also: Vec<String>,
}

/// `lwmq rep`.
#[derive(Debug, Clone, Args)]
pub struct RepArgs {
    #[command(flatten)]
    pub socket: SocketOpts,
    /// Reply frames; without them (and without --exec) each request is echoed back.
    pub frames: Vec<String>,
    #[command(flatten)]
    pub input: InputOpts,
    #[command(flatten)]
    pub output: OutputOpts,
    /// Answer each request by running this shell command (request on stdin, reply from stdout).
    #[arg(short, long, conflicts_with = "frames")]
    pub exec: Option<String>,
    /// Stop after answering this many requests (0: until interrupted).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub count: u64,
    /// Do not print the requests.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `lwmq dealer`.
#[derive(Debug, Clone, Args)]
pub struct DealerArgs {
    #[command(flatten)]
    pub socket: SocketOpts,
    /// Frames of a message to send first; - alone sends one per stdin line.
    pub frames: Vec<String>,
    #[command(flatten)]
    pub input: InputOpts,
    #[command(flatten)]
    pub output: OutputOpts,
    /// Stop after receiving this many messages (0: until interrupted).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub count: u64,
    /// Set the socket's routing id (text).
    #[arg(long)]
    pub routing_id: Option<String>,
}

/// `lwmq router`.
#[derive(Debug, Clone, Args)]
pub struct RouterArgs {
    #[command(flatten)]
    pub socket: SocketOpts,
    /// Frames to answer each message with (after the sender's routing id).
    pub frames: Vec<String>,
    #[command(flatten)]
    pub input: InputOpts,
    #[command(flatten)]
    pub output: OutputOpts,
    /// Stop after this many messages (0: until interrupted).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub count: u64,
}

/// `lwmq ls`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// Refresh every SECONDS (default 1) until interrupted.
    #[arg(short, long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1", value_parser = parse_duration)]
    pub watch: Option<Duration>,
    /// Print JSON (one array of processes; one per line with --watch). Same as
    /// `--format json`.
    #[arg(long, conflicts_with_all = ["graph", "graph_svg", "format"])]
    pub json: bool,
    /// Print the processes, their sockets and live connections as a Graphviz DOT
    /// graph (`| dot -Tpng > system.png`). Same as `--format dot`.
    #[arg(long, conflicts_with_all = ["graph_svg", "format"])]
    pub graph: bool,
    /// Print the same graph as SVG, laid out by lwmq itself (no Graphviz needed).
    /// Same as `--format svg`.
    #[arg(long, conflicts_with = "format")]
    pub graph_svg: bool,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Option<LsFormat>,
    /// Show the processes of this domain (default: $LWMQ_DOMAIN, else "default").
    #[arg(long, conflicts_with = "all_domains")]
    pub domain: Option<String>,
    /// Show the processes of every domain.
    #[arg(long)]
    pub all_domains: bool,
}

/// What `lwmq ls` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LsFormat {
    /// An indented listing.
    Text,
    /// JSON.
    Json,
    /// A Graphviz DOT graph.
    Dot,
    /// An SVG picture.
    Svg,
}

impl LsArgs {
    /// The format asked for, by `--format` or its shorthands.
    pub fn output_format(&self) -> LsFormat {
        match (self.format, self.json, self.graph, self.graph_svg) {
            (Some(f), ..) => f,
            (None, true, ..) => LsFormat::Json,
            (None, _, true, _) => LsFormat::Dot,
            (None, _, _, true) => LsFormat::Svg,
            _ => LsFormat::Text,
        }
    }
}

/// `lwmq monitor`.
#[derive(Debug, Clone, Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub socket: SocketOpts,
    /// Socket type to connect with (it must suit the peer: DEALER talks to REP, DEALER
    /// and ROUTER; use SUB for a PUB, PUSH for a PULL...).
    #[arg(long = "type", value_parser = parse_socket_type, default_value = "DEALER")]
    pub socket_type: lwmq::SocketType,
    /// Stop after this many events (0: until interrupted).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub count: u64,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Socket pairs for `lwmq proxy --pattern`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyPattern {
    /// ROUTER frontend, DEALER backend: shares requests among workers.
    Queue,
    /// XSUB frontend, XPUB backend: relays publications.
    Forwarder,
    /// PULL frontend, PUSH backend: relays a pipeline.
    Streamer,
}

/// `lwmq proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Frontend endpoint (bound; >ENDPOINT connects).
    pub frontend: String,
    /// Backend endpoint (bound; >ENDPOINT connects).
    pub backend: String,
    /// Which socket types to use.
    #[arg(long, value_enum, default_value_t = ProxyPattern::Queue)]
    pub pattern: ProxyPattern,
    /// Also send a copy of every message to this endpoint (a PUB socket; bound unless >ENDPOINT).
    #[arg(long)]
    pub capture: Option<String>,
    /// Once every endpoint is bound or connected, tell systemd the service is ready
    /// (sd_notify READY=1), and feed its watchdog when WATCHDOG_USEC is set.
    #[arg(long)]
    pub notify: bool,
}

/// What `lwmq bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Round trips (REQ/REP).
    Latency,
    /// One-way messages per second (PUSH/PULL).
    Throughput,
    /// Both.
    Both,
}

/// `lwmq bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Endpoint the peer binds (port 0 picks a free TCP port).
    #[arg(default_value = "tcp://127.0.0.1:0")]
    pub endpoint: String,
    /// Message size in bytes.
    #[arg(short, long, default_value_t = 64)]
    pub size: usize,
    /// Messages for the throughput test.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    pub count: u64,
    /// Round trips for the latency test.
    #[arg(long, default_value_t = 10_000)]
    pub round_trips: u64,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = BenchMode::Both)]
    pub mode: BenchMode,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `lwmq bench-peer` (hidden).
#[derive(Debug, Clone, Args)]
pub struct BenchPeerArgs {
    /// Endpoint to bind.
    pub endpoint: String,
    /// latency or throughput.
    #[arg(long, value_enum)]
    pub mode: BenchMode,
    /// Messages (throughput) or round trips (latency) to expect.
    #[arg(short = 'n', long)]
    pub count: u64,
}

/// `lwmq keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Print JSON: {"public": "...", "secret": "..."}.
    #[arg(long)]
    pub json: bool,
    /// Write the pair to FILE (readable by its owner only) and the public key to
    /// FILE.pub, instead of printing the secret key.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Shells for `lwmq completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Parses `500ms`, `5s`, `1.5`, `2m`, `1h`, `100us` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 5s, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use ns, us, ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{s:?} is out of range"))
}

/// Parses a socket type name, any case.
pub fn parse_socket_type(s: &str) -> Result<lwmq::SocketType, String> {
    s.parse().map_err(|e: lwmq::Error| match e {
        lwmq::Error::InvalidArgument(why) => why,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e400").is_err());
    }

    #[test]
    fn parses_a_typical_command_line() {
        let cli = Cli::try_parse_from([
            "lwmq",
            "sub",
            "tcp://h:1",
            "--topic",
            "a",
            "--topic",
            "b",
            "-o",
            "json",
            "-t",
            "2s",
            "-n",
            "3",
        ])
        .unwrap();
        let Command::Sub(sub) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(sub.topic, ["a", "b"]);
        assert_eq!(sub.recv.output.output, OutputFormat::Json);
        assert_eq!(sub.recv.socket.timeout, Some(Duration::from_secs(2)));
        assert_eq!(sub.recv.count, 3);
        let err =
            Cli::try_parse_from(["lwmq", "send", "tcp://h:1", "--hex", "--json", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
        let err = Cli::try_parse_from(["lwmq", "send", "tcp://h:1", "--type", "nope"]).unwrap_err();
        assert!(err.to_string().contains("unknown socket type"), "{err}");
    }

    #[test]
    fn a_z85_key_may_begin_with_a_hyphen() {
        // '-' is a Z85 digit: about one key in 85 begins with it.
        let key = "-Nu5OCbbwEk{Uvfn6OIL^AS>vNyGm//NB].DsOM*";
        let cli =
            Cli::try_parse_from(["lwmq", "req", "tcp://h:1", "--curve-client", key, "x"]).unwrap();
        let Command::Req(req) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(req.socket.security.curve_client.as_deref(), Some(key));
        let cli =
            Cli::try_parse_from(["lwmq", "rep", "--bind", "tcp://h:1", "--curve-server", key])
                .unwrap();
        let Command::Rep(rep) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(rep.socket.security.curve_server.as_deref(), Some(key));
    }
}
