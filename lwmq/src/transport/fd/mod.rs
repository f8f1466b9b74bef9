//! `fd://N` and `systemd://NAME`: sockets whose descriptor someone else made, adopted
//! by lwmq. The transport entry (`TABLE`) of both schemes.
//!
//! - **bind** adopts a *listening* stream socket, TCP (IPv4 or IPv6) or Unix (path or
//!   abstract): it becomes a listener of the background thread's stream engine, like
//!   one `tcp://` or `unix://` made. `bind` returns the address it listens on (what
//!   peers connect to). Under socket activation with `Accept=yes` the descriptor is a
//!   *connected* socket instead, which `systemd://` also takes on bind: it is served as
//!   an accepted connection.
//! - **connect** adopts a *connected* stream socket (a `socketpair` end from a
//!   dispatcher, a connection accepted by an inetd-style program...) and speaks ZMTP
//!   over it. It is never remade: when the peer closes, the monitor says
//!   `disconnected` ("not reconnecting, the endpoint is gone") and so it is.
//!
//! What a descriptor is, is checked first (`SO_ACCEPTCONN`, `SO_DOMAIN`, `SO_TYPE`,
//! `SO_PROTOCOL`, in `sys`); a descriptor that is not open, not a socket, not a TCP or
//! Unix stream socket, or not in the state the call needs is an error that names it
//! and says what it is, and is left untouched. Once the checks pass, lwmq owns it: it
//! is made non-blocking and close-on-exec, and closed exactly once, when the bind or
//! connect ends (unbind, disconnect, the socket's close, or the peer's). A process-wide
//! claim table refuses a descriptor lwmq already owns (`fd://5` bound twice would
//! otherwise be closed twice).
//!
//! For a dispatcher and its workers, [`worker_pair`] makes the connected pair of
//! descriptors (the child's end inheritable, ours not) and [`endpoint`] hands one over
//! as `fd://N`. Socket activation and `sd_notify` readiness are in [`systemd`].

mod sys;
pub mod systemd;

use std::collections::BTreeSet;
use std::fmt;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::sync::Mutex;

use super::reactor::{Command, Target, ThreadBind, ThreadConnect};
use super::stream::{self, Adopted, Bound, Listener};
use super::stream_engine::{self, AdoptedAs};
use super::{Attachment, Request, Transport, lock};
use crate::monitor::EventKind;
use crate::{Endpoint, Error, Result, SocketType};

/// `fd://` and `systemd://`.
#[derive(Debug)]
pub(crate) struct FdTransport;

impl Transport for FdTransport {
    fn bind(&self, req: &Request<'_>) -> Result<Attachment> {
        bind(req).inspect_err(|e| {
            req.socket
                .monitors
                .emit(EventKind::BindFailed, req.uri, e.to_string())
        })
    }

    fn connect(&self, req: &Request<'_>) -> Result<Attachment> {
        let (fd, claim) = descriptor(req)?;
        let socket = inspect(req.uri, fd)?;
        if socket.listening {
            return Err(Error::endpoint(
                req.uri,
                format!(
                    "descriptor {fd} is a listening {} socket: connect adopts a connected \
                     socket (bind adopts a listening one)",
                    socket.family
                ),
            ));
        }
        adopt_connection(req, fd, claim, socket, AdoptedAs::Connected)
    }
}

fn bind(req: &Request<'_>) -> Result<Attachment> {
    let (fd, claim) = descriptor(req)?;
    let socket = inspect(req.uri, fd)?;
    if !socket.listening {
        // Socket activation with Accept=yes passes the connection itself.
        if matches!(req.endpoint, Endpoint::Systemd(_)) {
            return adopt_connection(req, fd, claim, socket, AdoptedAs::Accepted);
        }
        return Err(Error::endpoint(
            req.uri,
            format!(
                "descriptor {fd} is a {} {} socket that is not listening: bind adopts a \
                 listening socket (connect adopts a connected one)",
                if is_connected(fd) {
                    "connected"
                } else {
                    "unconnected"
                },
                socket.family
            ),
        ));
    }
    let reactor = req.hub.reactor()?;
    // SAFETY: `fd` is open (just inspected); the user handed it over by naming it in
    // the endpoint, and `claim` makes lwmq its only owner in this process.
    let owned = unsafe { sys::take(fd) };
    let (listener, address, what) = match socket.family {
        Family::Tcp => {
            let l = std::net::TcpListener::from(owned);
            l.set_nonblocking(true)?;
            let addr = l.local_addr()?;
            (
                Listener::Tcp(mio::net::TcpListener::from_std(l)),
                format!("tcp://{addr}"),
                format!("tcp listener {addr}"),
            )
        }
        Family::Unix => {
            let l = std::os::unix::net::UnixListener::from(owned);
            l.set_nonblocking(true)?;
            let (address, shown) = match l.local_addr().ok().and_then(|a| unix_name(&a)) {
                Some((ep, shown)) => (ep, shown),
                None => (req.uri.to_owned(), "unnamed".to_owned()),
            };
            (
                Listener::Unix(mio::net::UnixListener::from_std(l)),
                address,
                format!("unix listener {shown}"),
            )
        }
    };
    sys::set_cloexec(fd, true)?;
    let id = super::next_pipe_id();
    req.socket
        .monitors
        .emit(EventKind::Listening, req.uri, &what);
    reactor.command(Command::Listen {
        id,
        socket: req.socket.clone(),
        options: req.options.clone(),
        listener: super::reactor::Listener::Stream(Bound {
            listener,
            endpoint: req.uri.to_owned(),
            unlink: None,
            local: None,
            adopted: Some(Adopted {
                what,
                claim: Box::new(claim),
            }),
        }),
    });
    Ok(Attachment {
        endpoint: address,
        pipes: Vec::new(),
        handle: Box::new(ThreadBind { id }),
    })
}

/// Serves a connected descriptor as one connection that is never remade.
fn adopt_connection(
    req: &Request<'_>,
    fd: RawFd,
    claim: Claim,
    socket: SocketKind,
    how: AdoptedAs,
) -> Result<Attachment> {
    if !is_connected(fd) {
        return Err(Error::endpoint(
            req.uri,
            format!(
                "descriptor {fd} is a {} socket that is not connected (nor listening)",
                socket.family
            ),
        ));
    }
    let reactor = req.hub.reactor()?;
    // SAFETY: as in `bind`: open, handed over by the user, claimed by us alone.
    let owned = unsafe { sys::take(fd) };
    let (stream, what) = match socket.family {
        Family::Tcp => {
            let s = std::net::TcpStream::from(owned);
            s.set_nonblocking(true)?;
            let _ = s.set_nodelay(true);
            (
                stream::Stream::Tcp(mio::net::TcpStream::from_std(s)),
                "tcp connection",
            )
        }
        Family::Unix => {
            let s = std::os::unix::net::UnixStream::from(owned);
            s.set_nonblocking(true)?;
            (
                stream::Stream::Unix(mio::net::UnixStream::from_std(s)),
                "unix connection",
            )
        }
    };
    sys::set_cloexec(fd, true)?;
    let id = super::next_pipe_id();
    let mut pipes = Vec::new();
    // As for tcp://: a pipe that exists before the handshake, except for ROUTER (it
    // learns the peer's routing id in the handshake) and immediate sockets.
    let pipe = if how == AdoptedAs::Connected
        && !req.options.immediate
        && req.socket.socket_type != SocketType::Router
    {
        let (mine, theirs) =
            stream_engine::stream_pipe(&reactor.stream, req.socket, req.options, req.uri);
        pipes.push(mine);
        Some(theirs)
    } else {
        None
    };
    reactor.command(Command::Connect {
        id,
        socket: req.socket.clone(),
        options: req.options.clone(),
        uri: req.uri.to_owned(),
        target: Target::Adopted {
            endpoint: req.endpoint.clone(),
            stream,
            adopted: Adopted {
                what: what.to_owned(),
                claim: Box::new(claim),
            },
            how,
            pipe,
        },
    });
    Ok(Attachment {
        endpoint: req.uri.to_owned(),
        pipes,
        handle: Box::new(ThreadConnect { id, pipe: None }),
    })
}

/// The descriptor an endpoint names, claimed.
fn descriptor(req: &Request<'_>) -> Result<(RawFd, Claim)> {
    let fd = match req.endpoint {
        Endpoint::Fd(n) => *n,
        Endpoint::Systemd(name) => systemd::find(req.uri, name)?,
        _ => {
            return Err(Error::endpoint(
                req.uri,
                "not an fd:// or systemd:// endpoint",
            ));
        }
    };
    let claim = Claim::new(fd).ok_or_else(|| {
        Error::endpoint(
            req.uri,
            format!("descriptor {fd} is adopted already (by this or another lwmq socket)"),
        )
    })?;
    Ok((fd, claim))
}

/// The kinds of socket lwmq adopts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Tcp,
    Unix,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Tcp => "TCP",
            Family::Unix => "Unix stream",
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct SocketKind {
    family: Family,
    listening: bool,
}

/// Checks that `fd` is a TCP or Unix stream socket; the error says what it is instead.
fn inspect(uri: &str, fd: RawFd) -> Result<SocketKind> {
    let kind = sys::kind(fd)
        .map_err(|e| Error::endpoint(uri, format!("cannot inspect descriptor {fd}: {e}")))?;
    let not = |what: String| {
        Error::endpoint(
            uri,
            format!(
                "descriptor {fd} is {what}; lwmq adopts TCP (IPv4, IPv6) and Unix stream sockets"
            ),
        )
    };
    match kind {
        sys::Kind::NotOpen => Err(Error::endpoint(
            uri,
            format!("descriptor {fd} is not open in this process"),
        )),
        sys::Kind::NotSocket(what) => Err(not(format!("{what}, not a socket"))),
        sys::Kind::Socket {
            domain,
            ty,
            protocol,
            listening,
        } => {
            let domain_name = match domain {
                libc::AF_INET => "IPv4",
                libc::AF_INET6 => "IPv6",
                libc::AF_UNIX => "Unix",
                libc::AF_NETLINK => "netlink",
                libc::AF_PACKET => "packet",
                _ => "other",
            };
            let family = match (domain, ty) {
                (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM)
                    if protocol == libc::IPPROTO_TCP =>
                {
                    Family::Tcp
                }
                (libc::AF_UNIX, libc::SOCK_STREAM) => Family::Unix,
                (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM) => {
                    return Err(not(format!(
                        "a UDP ({domain_name}) socket, not a stream socket"
                    )));
                }
                (_, libc::SOCK_DGRAM) => {
                    return Err(not(format!(
                        "a {domain_name} datagram socket, not a stream socket"
                    )));
                }
                (_, libc::SOCK_SEQPACKET) => {
                    return Err(not(format!(
                        "a {domain_name} SOCK_SEQPACKET socket, not a stream socket"
                    )));
                }
                (_, libc::SOCK_STREAM) => {
                    return Err(not(format!(
                        "a {domain_name} stream socket of protocol {protocol}, not TCP"
                    )));
                }
                _ => return Err(not(format!("a {domain_name} socket of type {ty}"))),
            };
            Ok(SocketKind { family, listening })
        }
    }
}

/// Whether a stream socket has a peer.
fn is_connected(fd: RawFd) -> bool {
    sys::has_peer(fd).unwrap_or(false)
}

/// A Unix address as an endpoint and as shown to humans.
fn unix_name(a: &std::os::unix::net::SocketAddr) -> Option<(String, String)> {
    if let Some(p) = a.as_pathname() {
        return Some((format!("unix://{}", p.display()), p.display().to_string()));
    }
    a.as_abstract_name().map(|n| {
        let n = String::from_utf8_lossy(n);
        (format!("unix://@{n}"), format!("@{n}"))
    })
}

/// The descriptors lwmq owns in this process (descriptor numbers are per process).
static CLAIMS: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

/// lwmq's ownership of one adopted descriptor: at most one per descriptor. Its owner
/// drops it after closing the descriptor.
#[derive(Debug)]
struct Claim(RawFd);

impl Claim {
    fn new(fd: RawFd) -> Option<Claim> {
        // Not `then_some(Claim(fd))`: that would make (and drop) a claim even when the
        // descriptor is taken, releasing the owner's claim.
        let fresh = lock(&CLAIMS).insert(fd);
        if fresh { Some(Claim(fd)) } else { None }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&CLAIMS).remove(&self.0);
    }
}

// ---------------------------------------------------------------------------------
// Dispatcher and workers.

/// A connected pair of Unix stream sockets for a dispatcher and one worker process it
/// starts: `keep` stays in this process (close-on-exec, so no other child inherits
/// it); `child` is inheritable (close-on-exec cleared on it alone) for the worker.
///
/// Give the worker `child`'s number (an argument or an environment variable), start
/// it, then drop `child` here; give `keep` to a socket with [`endpoint`]. In the
/// worker, connect a socket to `fd://N`. Both sides may bind or connect, any socket
/// types that fit (ROUTER in the dispatcher and DEALER in each worker, say): the
/// descriptor is connected already, ZMTP runs over it, and it is never reconnected.
/// A program that starts other processes from several threads at once should make
/// and hand over such pairs from one thread, since any child started meanwhile
/// inherits `child` too.
#[derive(Debug)]
pub struct WorkerPair {
    /// This process's end (close-on-exec).
    pub keep: OwnedFd,
    /// The worker's end (inherited across `exec`).
    pub child: OwnedFd,
}

/// Makes a [`WorkerPair`].
pub fn worker_pair() -> Result<WorkerPair> {
    // Both ends close-on-exec (std's default), then the child's flag cleared.
    let (keep, child) = std::os::unix::net::UnixStream::pair()?;
    let (keep, child) = (OwnedFd::from(keep), OwnedFd::from(child));
    sys::set_cloexec(child.as_raw_fd(), false)?;
    Ok(WorkerPair { keep, child })
}

/// The endpoint `fd://N` that adopts `fd`: whichever socket binds or connects it owns
/// the descriptor from then on. (An endpoint never used leaves the descriptor open.)
pub fn endpoint(fd: OwnedFd) -> String {
    format!("fd://{}", fd.into_raw_fd())
}
