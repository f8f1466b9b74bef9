//! Streams, `tcp://` and `unix://`, at the level of the operating system: binding
//! listeners, starting non-blocking connects, resolving addresses, and one type over
//! both kinds of stream so the background thread drives them the same way. The
//! transport entry is [`super::tcp`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::linux::net::SocketAddrExt;
use std::path::PathBuf;

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::endpoint::{Host, UnixAddr};
use crate::{Endpoint, Error, Result};

/// A listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A connected (or connecting) stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// Accepts one connection; returns the stream and the peer's address for humans.
    pub(crate) fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), addr.to_string()))
            }
            Listener::Unix(l) => {
                let (s, addr) = l.accept()?;
                Ok((Stream::Unix(s), format!("{addr:?}")))
            }
        }
    }

    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l) => l,
        }
    }
}

impl Stream {
    /// Our address and the peer's, for humans (`127.0.0.1:5555`, a Unix path, or
    /// `@name` for an abstract Unix address); `None` where there is none (the
    /// unnamed side of a Unix connection).
    pub(crate) fn addresses(&self) -> (Option<String>, Option<String>) {
        fn unix(a: std::io::Result<std::os::unix::net::SocketAddr>) -> Option<String> {
            use std::os::linux::net::SocketAddrExt as _;
            let a = a.ok()?;
            if let Some(p) = a.as_pathname() {
                return Some(p.display().to_string());
            }
            a.as_abstract_name()
                .map(|n| format!("@{}", String::from_utf8_lossy(n)))
        }
        match self {
            Stream::Tcp(s) => (
                s.local_addr().ok().map(|a| a.to_string()),
                s.peer_addr().ok().map(|a| a.to_string()),
            ),
            Stream::Unix(s) => (unix(s.local_addr()), unix(s.peer_addr())),
        }
    }

    /// The peer's IP address (`None` for a Unix stream).
    pub(crate) fn peer_ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok().map(|a| a.ip()),
            Stream::Unix(_) => None,
        }
    }

    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    /// The peer's address, for humans.
    pub(crate) fn peer_description(&self) -> Option<String> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok().map(|a| a.to_string()),
            Stream::Unix(s) => s.peer_addr().ok().map(|a| format!("{a:?}")),
        }
    }

    /// After a writable event on a connecting stream: `Ok(true)` when connected,
    /// `Ok(false)` when still in progress, `Err` when the connect failed.
    pub(crate) fn finish_connect(&self) -> io::Result<bool> {
        match self {
            Stream::Tcp(s) => {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                match s.peer_addr() {
                    Ok(_) => {
                        let _ = s.set_nodelay(true);
                        Ok(true)
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Stream::Unix(s) => {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                match s.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn unix_addr(a: &UnixAddr) -> io::Result<std::os::unix::net::SocketAddr> {
    match a {
        UnixAddr::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p),
        UnixAddr::Abstract(n) => std::os::unix::net::SocketAddr::from_abstract_name(n),
    }
}

/// Resolves a TCP host and port for a bind, on the caller's thread (names through the
/// system resolver). Connects never come here: the background thread has their names
/// looked up by [`super::dns`] and connects to each address with [`connect_tcp`].
pub(crate) fn resolve(uri: &str, host: &Host, port: u16, bind: bool) -> Result<Vec<SocketAddr>> {
    match host {
        Host::Any if bind => Ok(vec![SocketAddr::from(([0, 0, 0, 0], port))]),
        Host::Any => Err(Error::endpoint(uri, "cannot connect to '*': name a host")),
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Service(_) => Err(Error::endpoint(
            uri,
            "a DNS service name can only be connected to; bind to host:port",
        )),
        Host::Name(name) => {
            let addrs: Vec<SocketAddr> = (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| Error::endpoint(uri, format!("cannot resolve {name:?}: {e}")))?
                .collect();
            if addrs.is_empty() {
                Err(Error::endpoint(uri, format!("{name:?} has no address")))
            } else {
                Ok(addrs)
            }
        }
    }
}

/// A bound listener: the listener, the endpoint it really got (port filled in), and a
/// file to remove when it is closed.
#[derive(Debug)]
pub(crate) struct Bound {
    pub listener: Listener,
    pub endpoint: String,
    pub unlink: Option<PathBuf>,
    /// The TCP address bound (for sharing the port among resources).
    pub local: Option<SocketAddr>,
    /// Set when the listener is a descriptor lwmq adopted (`fd://`, `systemd://`).
    pub adopted: Option<Adopted>,
}

/// What is kept with a descriptor lwmq adopted (`fd://`, `systemd://`, see
/// `super::fd`): what it is, for `lwmq ls`, and the descriptor's claim, which its owner
/// declares *after* the listener or stream so that it is released only once the
/// descriptor is closed.
#[derive(Debug)]
pub(crate) struct Adopted {
    /// What the descriptor is, for humans (`tcp 127.0.0.1:5555`).
    pub what: String,
    /// Released when dropped (held only for that).
    #[allow(dead_code)]
    pub claim: Box<dyn Send + std::fmt::Debug>,
}

/// Binds a `tcp://` or `unix://` endpoint.
pub(crate) fn bind(uri: &str, ep: &Endpoint) -> Result<Bound> {
    let in_use = |e: io::Error| {
        if e.kind() == io::ErrorKind::AddrInUse {
            Error::AddressInUse {
                endpoint: uri.to_owned(),
            }
        } else {
            Error::Io(e)
        }
    };
    match ep {
        Endpoint::Tcp {
            host,
            port,
            resource,
        } => {
            let addrs = resolve(uri, host, *port, true)?;
            let mut last = None;
            for addr in addrs {
                match TcpListener::bind(addr) {
                    Ok(l) => {
                        let local = l.local_addr()?;
                        let mut endpoint = format!("tcp://{local}");
                        if let Some(r) = resource {
                            endpoint.push('/');
                            endpoint.push_str(r);
                        }
                        return Ok(Bound {
                            listener: Listener::Tcp(l),
                            endpoint,
                            unlink: None,
                            local: Some(local),
                            adopted: None,
                        });
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(in_use(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to bind")
            })))
        }
        Endpoint::Unix(a) => {
            let addr = unix_addr(a).map_err(|e| Error::endpoint(uri, e.to_string()))?;
            let mut unlink = None;
            if let UnixAddr::Path(p) = a {
                if p.exists() {
                    // A file left behind by a process that died is reused, as libzmq
                    // does; one with a live listener behind it is an address in use.
                    if std::os::unix::net::UnixStream::connect(p).is_ok() {
                        return Err(Error::AddressInUse {
                            endpoint: uri.to_owned(),
                        });
                    }
                    let _ = std::fs::remove_file(p);
                }
                unlink = Some(p.clone());
            }
            let l = UnixListener::bind_addr(&addr).map_err(in_use)?;
            Ok(Bound {
                listener: Listener::Unix(l),
                endpoint: Endpoint::Unix(a.clone()).to_string(),
                unlink,
                local: None,
                adopted: None,
            })
        }
        _ => Err(Error::endpoint(uri, "not a stream transport")),
    }
}

/// Starts a non-blocking connect to one TCP address.
pub(crate) fn connect_tcp(addr: SocketAddr) -> Result<Stream> {
    Ok(Stream::Tcp(TcpStream::connect(addr)?))
}

/// Starts a non-blocking connect to a `tcp://` endpoint with an IP address or to a
/// `unix://` endpoint. (A `tcp://` name is looked up first: [`super::dns`].)
pub(crate) fn connect(uri: &str, ep: &Endpoint) -> Result<Stream> {
    match ep {
        Endpoint::Tcp {
            host: Host::Ip(ip),
            port,
            ..
        } => connect_tcp(SocketAddr::new(*ip, *port)),
        Endpoint::Tcp { .. } => Err(Error::endpoint(uri, "the name is not resolved yet")),
        Endpoint::Unix(a) => {
            let addr = unix_addr(a).map_err(|e| Error::endpoint(uri, e.to_string()))?;
            Ok(Stream::Unix(UnixStream::connect_addr(&addr)?))
        }
        _ => Err(Error::endpoint(uri, "not a stream transport")),
    }
}
