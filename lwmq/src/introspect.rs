//! Introspection: how `lwmq ls` finds every lwmq socket on the host without a daemon.
//!
//! Each [`Context`](crate) that has introspection enabled listens on its own Unix socket
//! in the Linux abstract namespace, named `lwmq-introspect/<pid>/<n>` (`n` counts the
//! process's contexts). The kernel is the directory: such names appear in
//! `/proc/net/unix` (as `@lwmq-introspect/...`) for as long as the process lives and
//! vanish with it, so nothing is left behind by a crash and nothing needs cleaning up.
//!
//! # Wire format (version 1)
//!
//! One request, one reply, then both sides close:
//!
//! ```text
//! client -> server   LWMQ-INTROSPECT/1\n
//! server -> client   {"version":1,"pid":1234,"sockets":[...]}      (JSON, then EOF)
//! ```
//!
//! The reply is a [`Reply`]: the pid as the server sees it and a [`Snapshot`] of its
//! sockets, for example:
//!
//! ```text
//! {"version":1,"pid":6944,"sockets":[{"id":1,"socket_type":"PULL",
//!   "bound":["tcp://127.0.0.1:35123"],"connected":[],
//!   "connections":[{"endpoint":"tcp://127.0.0.1:35123","direction":"accepted",
//!     "local_address":"127.0.0.1:35123","peer_address":"127.0.0.1:51860",
//!     "peer_pid":null,"peer_socket_type":"PUSH"}]}]}
//! ```
//!
//! Each reply also carries the context's domain (`"domain":"default"`): `lwmq ls` shows
//! the processes of its own domain unless asked for every one.
//!
//! `lwmq ls --json` prints a list of [`ProcessInfo`], which adds the program name and
//! command line and the peer pids found by [`resolve_peers`]. Unknown fields are ignored and missing optional fields default, so newer
//! and older versions can read each other. A request that is not exactly the line above
//! is answered by closing the connection. Replies are capped at [`MAX_REPLY_BYTES`].
//!
//! # Threads
//!
//! [`IntrospectServer::start`] spawns one thread, `lwmq-introspect`, owned by the
//! returned [`IntrospectServer`] (which the Context owns). That thread alone owns the
//! listening socket and every accepted connection; it serves clients one at a time,
//! each bounded by [`REQUEST_TIMEOUT`] and [`IO_TIMEOUT`], and calls the snapshot closure once per request, on
//! itself. The closure must therefore be `Send + 'static` and must not block for long
//! (it should copy the socket table under a short lock). It should hold the Context
//! weakly (a `Weak`), so that the server does not keep its own Context alive. Dropping
//! the server sets a stop flag, wakes the thread by connecting to its own address, and
//! joins it, unless the drop happens on that thread itself (the closure held the last
//! reference to the Context), which then just ends after the current request.
//!
//! # Turning it off
//!
//! Setting the environment variable `LWMQ_INTROSPECT=0` (or `false`, `off`, `no`)
//! disables it for every context of the process ([`enabled_by_env`]); a Context builder
//! option disables it for one context.
//!
//! # Who may ask
//!
//! Abstract sockets have no file permissions: any local user can connect and read the
//! socket table (types, endpoints, peer addresses: what `ss -xtp` shows to the same
//! user). No message content is ever exposed.
//!
//! # The client
//!
//! [`query_all`] scans `/proc/net/unix`, asks every server and returns one
//! [`ProcessInfo`] per context, with program name and command line read from `/proc`;
//! [`resolve_peers`] then fills in which process is at the other end of each connection
//! where the transports did not know it.

use std::collections::HashSet;
use std::io::{self, BufRead, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The first part of every introspection socket's abstract name.
pub const NAME_PREFIX: &str = "lwmq-introspect/";
/// The request line a client sends.
pub const REQUEST: &[u8] = b"LWMQ-INTROSPECT/1\n";
/// The wire-format version in replies.
pub const VERSION: u32 = 1;
/// Largest reply a client accepts, in bytes.
pub const MAX_REPLY_BYTES: u64 = 16 << 20;
/// How long a client may take for a whole query, and a server to write a reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a server waits for the request line after accepting. Kept well under
/// [`IO_TIMEOUT`] so that a client that connects and stays silent delays the
/// others less than their own timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(250);
/// The environment variable that turns introspection off when set to `0`.
pub const ENV_VAR: &str = "LWMQ_INTROSPECT";

/// The current description of one context's sockets, produced by the Context on demand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The context's domain (`LWMQ_DOMAIN` or its builder option; `default` when
    /// neither is set). Replies of older versions have none and read as `default`.
    #[serde(default = "default_domain_name")]
    pub domain: String,
    /// Every open socket of the context.
    #[serde(default)]
    pub sockets: Vec<SocketInfo>,
}

fn default_domain_name() -> String {
    "default".into()
}

/// One socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// A number identifying the socket within its context.
    #[serde(default)]
    pub id: u64,
    /// Its type as in ZMTP (`"REP"`, `"PUB"`, ...).
    pub socket_type: String,
    /// Endpoints it is bound to, resolved (`tcp://127.0.0.1:41234`, not `tcp://*:0`).
    #[serde(default)]
    pub bound: Vec<String>,
    /// Endpoints it connects to, as given to `connect`.
    #[serde(default)]
    pub connected: Vec<String>,
    /// Live connections (after the handshake, or shared-memory pipes).
    #[serde(default)]
    pub connections: Vec<ConnectionInfo>,
    /// REQ and REP: what resend and de-duplication did (absent for other types and
    /// from older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reqrep: Option<crate::ReqRepStats>,
}

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// We accepted it on a bound endpoint.
    #[default]
    Accepted,
    /// We opened it to a connected endpoint.
    Connected,
}

/// One live connection of a socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// The socket's endpoint this connection belongs to (one of `bound` or `connected`).
    pub endpoint: String,
    /// Whether we accepted or opened it.
    #[serde(default)]
    pub direction: Direction,
    /// Our address on it, where the transport has one (`127.0.0.1:5555` for TCP).
    #[serde(default)]
    pub local_address: Option<String>,
    /// The peer's address, where the transport has one (`127.0.0.1:41234` for TCP).
    #[serde(default)]
    pub peer_address: Option<String>,
    /// The peer's process id, where known (SO_PEERCRED on Unix sockets and
    /// shared memory, or found by [`resolve_peers`]).
    #[serde(default)]
    pub peer_pid: Option<u32>,
    /// The peer's socket type from its handshake.
    #[serde(default)]
    pub peer_socket_type: Option<String>,
}

/// The reply to an introspection request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Wire-format version, [`VERSION`].
    pub version: u32,
    /// The process id, as the serving process sees it.
    pub pid: u32,
    /// The context's sockets.
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

/// One context of one process, as found by [`query_all`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id (from the socket name, in the caller's pid namespace when possible).
    pub pid: u32,
    /// Program name from `/proc/<pid>/comm` (empty if unreadable).
    pub program: String,
    /// Command line from `/proc/<pid>/cmdline`, arguments separated by spaces.
    pub command_line: String,
    /// The introspection socket's abstract name (without the leading NUL).
    pub address: String,
    /// The context's domain.
    #[serde(default = "default_domain_name")]
    pub domain: String,
    /// The context's sockets.
    pub sockets: Vec<SocketInfo>,
}

/// Whether the environment allows introspection: false when `LWMQ_INTROSPECT` is
/// `0`, `false`, `off` or `no` (any case), true otherwise.
pub fn enabled_by_env() -> bool {
    enabled_by_value(std::env::var(ENV_VAR).ok().as_deref())
}

fn enabled_by_value(value: Option<&str>) -> bool {
    value.is_none_or(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "off" | "no"
        )
    })
}

/// A running introspection server; dropping it stops the thread and removes the name.
#[derive(Debug)]
pub struct IntrospectServer {
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl IntrospectServer {
    /// Listens on a fresh `lwmq-introspect/<pid>/<n>` name and answers every request
    /// with `snapshot()`, on a background thread owned by the returned value.
    ///
    /// This does not look at [`enabled_by_env`]; the caller (the Context) does.
    pub fn start<F>(snapshot: F) -> io::Result<IntrospectServer>
    where
        F: Fn() -> Snapshot + Send + 'static,
    {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        // A name can be taken if a pid is reused by a process that inherited nothing
        // from us, or by another process faking our name: try a few numbers.
        let mut last_err = None;
        for _ in 0..16 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("{NAME_PREFIX}{pid}/{n}");
            let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
            match UnixListener::bind_addr(&addr) {
                Ok(listener) => return Self::run(name, listener, snapshot),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free introspection name")))
    }

    fn run<F>(name: String, listener: UnixListener, snapshot: F) -> io::Result<IntrospectServer>
    where
        F: Fn() -> Snapshot + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lwmq-introspect".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    match conn {
                        Ok(stream) => {
                            if let Err(e) = serve_one(stream, &snapshot) {
                                tracing::debug!("introspection request failed: {e}");
                            }
                        }
                        Err(e) => {
                            tracing::debug!("introspection accept failed: {e}");
                            // Out of descriptors and the like: do not spin.
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })?;
        Ok(IntrospectServer {
            name,
            stop,
            thread: Some(thread),
        })
    }

    /// The abstract name this server listens on (without the leading NUL).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for IntrospectServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the thread blocked in accept; it sees the flag and exits, which closes
        // the listener and frees the name.
        let woke = SocketAddr::from_abstract_name(self.name.as_bytes())
            .and_then(|addr| UnixStream::connect_addr(&addr))
            .is_ok();
        if let Some(thread) = self.thread.take() {
            // Not when the server thread drops its own server (the snapshot closure
            // held the last reference to the Context), nor when we could not connect
            // (descriptor limit): then the thread exits at its next wake-up.
            if woke && thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// Reads the request, checks it, writes the reply.
fn serve_one<F: Fn() -> Snapshot>(stream: UnixStream, snapshot: &F) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = Vec::with_capacity(REQUEST.len());
    io::BufReader::new((&stream).take(REQUEST.len() as u64)).read_until(b'\n', &mut line)?;
    if line != REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an introspection request",
        ));
    }
    let reply = Reply {
        version: VERSION,
        pid: std::process::id(),
        snapshot: snapshot(),
    };
    let bytes = serde_json::to_vec(&reply).map_err(io::Error::other)?;
    write_all_by(&stream, &bytes, Instant::now() + IO_TIMEOUT)
}

/// Writes everything before `deadline`, however slowly the peer reads.
fn write_all_by(stream: &UnixStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match (&*stream).write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads to end of file, at most `limit` bytes (one more means "too long"), before
/// `deadline`, however slowly the peer writes.
fn read_to_end_by(stream: &UnixStream, limit: u64, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match (&*stream).read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&chunk[..n]);
                if out.len() as u64 > limit {
                    return Ok(out);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Asks one introspection server (by abstract name, without the leading NUL).
pub fn query(name: &str) -> io::Result<Reply> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let stream = UnixStream::connect_addr(&addr)?;
    let deadline = Instant::now() + IO_TIMEOUT;
    write_all_by(&stream, REQUEST, deadline)?;
    let buf = read_to_end_by(&stream, MAX_REPLY_BYTES, deadline)?;
    if buf.len() as u64 > MAX_REPLY_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("introspection reply from {name} is larger than {MAX_REPLY_BYTES} bytes"),
        ));
    }
    parse_reply(&buf).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad introspection reply from {name}: {e}"),
        )
    })
}

/// Parses a reply, rejecting versions newer than ours.
pub fn parse_reply(bytes: &[u8]) -> Result<Reply, String> {
    let reply: Reply = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if reply.version == 0 || reply.version > VERSION {
        return Err(format!(
            "unsupported version {} (this lwmq speaks {VERSION})",
            reply.version
        ));
    }
    Ok(reply)
}

/// The abstract names of listening introspection sockets in a `/proc/net/unix` text,
/// without the leading `@`, in order of appearance and without duplicates.
pub fn parse_proc_net_unix(text: &str) -> Vec<String> {
    // Columns: Num RefCount Protocol Flags Type St Inode [Path]. A listening socket
    // has __SO_ACCEPTCON (0x10000) in Flags; accepted connections repeat the path.
    const ACCEPTCON: u32 = 0x10000;
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 {
            continue;
        }
        let Ok(flags) = u32::from_str_radix(cols[3], 16) else {
            continue;
        };
        if flags & ACCEPTCON == 0 {
            continue;
        }
        // The path is the rest of the line (it may hold spaces; ours do not).
        let path = cols[7..].join(" ");
        if let Some(name) = path.strip_prefix('@')
            && name.starts_with(NAME_PREFIX)
            && seen.insert(name.to_owned())
        {
            names.push(name.to_owned());
        }
    }
    names
}

/// The pid part of an introspection name, `lwmq-introspect/<pid>/<n>`.
pub fn pid_from_name(name: &str) -> Option<u32> {
    name.strip_prefix(NAME_PREFIX)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Every lwmq context on this host that answers, sorted by pid and name.
///
/// Contexts that do not answer within [`IO_TIMEOUT`], or answer nonsense, are left out
/// (and logged with `tracing` at debug level): a process may exit while we scan.
pub fn query_all() -> Vec<ProcessInfo> {
    let text = match std::fs::read_to_string("/proc/net/unix") {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!("cannot read /proc/net/unix: {e}");
            return Vec::new();
        }
    };
    let mut all = Vec::new();
    for name in parse_proc_net_unix(&text) {
        match query(&name) {
            Ok(reply) => {
                // The name's pid is from the server's pid namespace, like the reply's;
                // both are right when we share it, which is the case `ls` is for.
                let pid = pid_from_name(&name).unwrap_or(reply.pid);
                let (program, command_line) = process_names(pid);
                all.push(ProcessInfo {
                    pid,
                    program,
                    command_line,
                    address: name,
                    domain: reply.snapshot.domain,
                    sockets: reply.snapshot.sockets,
                });
            }
            Err(e) => tracing::debug!("introspection of {name} failed: {e}"),
        }
    }
    all.sort_by(|a, b| (a.pid, &a.address).cmp(&(b.pid, &b.address)));
    all
}

/// `/proc/<pid>/comm` and `/proc/<pid>/cmdline` (NULs as spaces), empty if unreadable.
fn process_names(pid: u32) -> (String, String) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            let s = String::from_utf8_lossy(&b);
            s.trim_end_matches('\0').replace('\0', " ")
        })
        .unwrap_or_default();
    (comm, cmdline)
}

/// Normalizes an endpoint for matching a connect to a bind: `localhost` and `*` become
/// addresses, `tcp://*:5555` matches any local address.
fn endpoint_key(endpoint: &str) -> String {
    endpoint
        .replace("://localhost:", "://127.0.0.1:")
        .replace("://[::1]:", "://127.0.0.1:")
        .replace("://0.0.0.0:", "://*:")
        .replace("://[::]:", "://*:")
}

pub(crate) fn endpoints_match(connected: &str, bound: &str) -> bool {
    let c = endpoint_key(connected);
    let b = endpoint_key(bound);
    if c == b {
        return true;
    }
    // tcp://*:P (bound on every interface) accepts tcp://<anything local>:P.
    if let (Some(brest), Some(crest)) = (b.strip_prefix("tcp://*:"), c.strip_prefix("tcp://")) {
        return crest
            .rsplit_once(':')
            .is_some_and(|(_, cport_res)| cport_res == brest);
    }
    false
}

/// Fills in [`ConnectionInfo::peer_pid`] where the transport could not, from what the
/// processes say about each other:
///
/// 1. a TCP connection whose peer address is another process's local address on a
///    connection back to ours is between those two;
/// 2. a connection we opened to an endpoint that exactly one other process has bound
///    goes to that process;
/// 3. a connection accepted on an endpoint goes to the one other process connected
///    to it, if there is exactly one.
///
/// Peer pids the transport already knew are kept.
pub fn resolve_peers(processes: &mut [ProcessInfo]) {
    // (pid, local, peer) of every connection with both addresses.
    let mut pairs = Vec::new();
    // (pid, bound endpoint)
    let mut binds = Vec::new();
    // (pid, connected endpoint) of live connections we opened.
    let mut connects = Vec::new();
    for p in processes.iter() {
        for s in &p.sockets {
            for b in &s.bound {
                binds.push((p.pid, b.clone()));
            }
            for c in &s.connections {
                if let (Some(l), Some(r)) = (&c.local_address, &c.peer_address) {
                    pairs.push((p.pid, l.clone(), r.clone()));
                }
                if c.direction == Direction::Connected {
                    connects.push((p.pid, c.endpoint.clone()));
                }
            }
        }
    }
    let unique = |mut pids: Vec<u32>| {
        pids.sort_unstable();
        pids.dedup();
        if pids.len() == 1 { Some(pids[0]) } else { None }
    };
    for p in processes.iter_mut() {
        let me = p.pid;
        for s in &mut p.sockets {
            for c in &mut s.connections {
                if c.peer_pid.is_some() {
                    continue;
                }
                if let (Some(l), Some(r)) = (&c.local_address, &c.peer_address) {
                    c.peer_pid = unique(
                        pairs
                            .iter()
                            .filter(|(pid, pl, pr)| *pid != me && pl == r && pr == l)
                            .map(|(pid, _, _)| *pid)
                            .collect(),
                    );
                    if c.peer_pid.is_some() {
                        continue;
                    }
                }
                c.peer_pid = match c.direction {
                    Direction::Connected => unique(
                        binds
                            .iter()
                            .filter(|(pid, b)| *pid != me && endpoints_match(&c.endpoint, b))
                            .map(|(pid, _)| *pid)
                            .collect(),
                    ),
                    Direction::Accepted => unique(
                        connects
                            .iter()
                            .filter(|(pid, e)| *pid != me && endpoints_match(e, &c.endpoint))
                            .map(|(pid, _)| *pid)
                            .collect(),
                    ),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(endpoint: &str, direction: Direction) -> ConnectionInfo {
        ConnectionInfo {
            endpoint: endpoint.into(),
            direction,
            ..ConnectionInfo::default()
        }
    }

    fn process(pid: u32, sockets: Vec<SocketInfo>) -> ProcessInfo {
        ProcessInfo {
            pid,
            program: format!("p{pid}"),
            command_line: String::new(),
            address: format!("{NAME_PREFIX}{pid}/0"),
            domain: "default".into(),
            sockets,
        }
    }

    #[test]
    fn server_answers_and_goes_away_on_drop() {
        let server = IntrospectServer::start(|| Snapshot {
            domain: "d1".into(),
            sockets: vec![SocketInfo {
                id: 7,
                socket_type: "REP".into(),
                bound: vec!["tcp://127.0.0.1:5555".into()],
                connected: vec![],
                connections: vec![ConnectionInfo {
                    endpoint: "tcp://127.0.0.1:5555".into(),
                    direction: Direction::Accepted,
                    local_address: Some("127.0.0.1:5555".into()),
                    peer_address: Some("127.0.0.1:40000".into()),
                    peer_pid: None,
                    peer_socket_type: Some("REQ".into()),
                }],
                reqrep: Some(crate::ReqRepStats {
                    replies_from_cache: 2,
                    ..Default::default()
                }),
            }],
        })
        .unwrap();
        let name = server.name().to_owned();
        assert_eq!(pid_from_name(&name), Some(std::process::id()));
        let reply = query(&name).unwrap();
        assert_eq!(reply.pid, std::process::id());
        assert_eq!(reply.snapshot.sockets[0].socket_type, "REP");
        assert_eq!(
            reply.snapshot.sockets[0].connections[0]
                .peer_socket_type
                .as_deref(),
            Some("REQ")
        );
        // The listening socket shows in /proc/net/unix and query_all finds it.
        let all = query_all();
        let me = all.iter().find(|p| p.address == name).expect("listed");
        assert_eq!(me.pid, std::process::id());
        assert!(!me.program.is_empty());
        assert_eq!(me.sockets[0].id, 7);
        drop(server);
        assert!(query(&name).is_err(), "the name is gone after drop");
        assert!(query_all().iter().all(|p| p.address != name));
    }

    #[test]
    fn server_survives_a_bad_request_and_serves_the_next() {
        let server = IntrospectServer::start(Snapshot::default).unwrap();
        let addr = SocketAddr::from_abstract_name(server.name().as_bytes()).unwrap();
        let mut bad = UnixStream::connect_addr(&addr).unwrap();
        bad.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut out = Vec::new();
        bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        bad.read_to_end(&mut out).unwrap();
        assert!(out.is_empty(), "a bad request gets no reply");
        // A client that connects and says nothing is dropped after REQUEST_TIMEOUT.
        let _silent = UnixStream::connect_addr(&addr).unwrap();
        let reply = query(server.name()).unwrap();
        assert!(reply.snapshot.sockets.is_empty());
    }

    #[test]
    fn a_trickling_server_cannot_stall_the_client() {
        let name = format!("lwmq-test-trickle/{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // One byte at a time, each well within a single read timeout, for far
            // longer than IO_TIMEOUT in total; stop when the client hangs up.
            for _ in 0..100 {
                if s.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(IO_TIMEOUT / 10);
            }
        });
        let e = query(&name).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{e}"
        );
        server.join().unwrap();
    }

    #[test]
    fn replies_are_checked() {
        assert!(parse_reply(b"{\"version\":1,\"pid\":3}").is_ok());
        let e = parse_reply(b"{\"version\":9,\"pid\":3}").unwrap_err();
        assert!(e.contains("unsupported version 9"), "{e}");
        assert!(parse_reply(b"not json").is_err());
        assert!(parse_reply(b"{\"version\":1}").unwrap_err().contains("pid"));
        // Unknown fields from a newer minor revision are ignored.
        let r = parse_reply(
            b"{\"version\":1,\"pid\":3,\"x\":1,\"sockets\":[{\"socket_type\":\"PUB\",\"new\":[]}]}",
        )
        .unwrap();
        assert_eq!(r.snapshot.sockets[0].socket_type, "PUB");
        assert!(r.snapshot.sockets[0].bound.is_empty());
    }

    #[test]
    fn proc_net_unix_lists_only_listening_lwmq_names() {
        let text = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 100 @lwmq-introspect/42/0
0000000000000000: 00000003 00000000 00000000 0001 03 101 @lwmq-introspect/42/0
0000000000000000: 00000002 00000000 00010000 0001 01 102 @lwmq-introspect/43/1
0000000000000000: 00000002 00000000 00010000 0001 01 103 @other/1
0000000000000000: 00000002 00000000 00010000 0001 01 104 /run/lwmq-introspect/1/1
0000000000000000: 00000002 00000000 00000000 0002 01 105
garbage line
";
        assert_eq!(
            parse_proc_net_unix(text),
            vec!["lwmq-introspect/42/0", "lwmq-introspect/43/1"]
        );
        assert_eq!(pid_from_name("lwmq-introspect/43/1"), Some(43));
        assert_eq!(pid_from_name("lwmq-introspect/x/1"), None);
        assert_eq!(pid_from_name("other/43/1"), None);
    }

    #[test]
    fn peers_are_resolved_from_addresses_and_endpoints() {
        let rep = SocketInfo {
            socket_type: "REP".into(),
            bound: vec!["tcp://0.0.0.0:5555".into(), "unix:///tmp/s".into()],
            connections: vec![
                ConnectionInfo {
                    local_address: Some("127.0.0.1:5555".into()),
                    peer_address: Some("127.0.0.1:40000".into()),
                    ..conn("tcp://0.0.0.0:5555", Direction::Accepted)
                },
                conn("unix:///tmp/s", Direction::Accepted),
                ConnectionInfo {
                    peer_pid: Some(99),
                    ..conn("unix:///tmp/s", Direction::Accepted)
                },
            ],
            ..SocketInfo::default()
        };
        let req = SocketInfo {
            socket_type: "REQ".into(),
            connected: vec!["tcp://localhost:5555".into()],
            connections: vec![ConnectionInfo {
                local_address: Some("127.0.0.1:40000".into()),
                peer_address: Some("127.0.0.1:5555".into()),
                ..conn("tcp://localhost:5555", Direction::Connected)
            }],
            ..SocketInfo::default()
        };
        let dealer = SocketInfo {
            socket_type: "DEALER".into(),
            connections: vec![
                conn("unix:///tmp/s", Direction::Connected),
                conn("tcp://127.0.0.1:5555", Direction::Connected),
                conn("tcp://127.0.0.1:6666", Direction::Connected),
            ],
            ..SocketInfo::default()
        };
        let mut ps = vec![
            process(1, vec![rep]),
            process(2, vec![req]),
            process(3, vec![dealer]),
        ];
        resolve_peers(&mut ps);
        let peers = |p: usize, s: usize| -> Vec<Option<u32>> {
            ps[p].sockets[s]
                .connections
                .iter()
                .map(|c| c.peer_pid)
                .collect()
        };
        // Rule 1 for the TCP pair; rule 3 for the unix connection (only pid 3 connects
        // there); a known pid is kept.
        assert_eq!(peers(0, 0), vec![Some(2), Some(3), Some(99)]);
        assert_eq!(peers(1, 0), vec![Some(1)]);
        // Rule 2: bound by pid 1 (tcp://* matches 127.0.0.1); nobody binds 6666.
        assert_eq!(peers(2, 0), vec![Some(1), Some(1), None]);
    }

    #[test]
    fn env_switch() {
        assert!(enabled_by_value(None));
        assert!(enabled_by_value(Some("1")));
        assert!(enabled_by_value(Some("")));
        for off in ["0", "false", " OFF ", "No"] {
            assert!(!enabled_by_value(Some(off)), "{off}");
        }
    }
}
