//! Rendezvous: the abstract Unix socket where a binder waits, the hello exchanged on
//! it, and the connection that results.
//!
//! # Names
//!
//! `ipc://` names may be 119 characters of UTF-8 (up to 476 bytes) while an abstract
//! socket name has at most 107 bytes, so the socket is named
//! `lwmq/<domain>/<first 128 bits of SHA-256("<name>:<port>"), hex>` and the full name
//! travels in the hello, where the binder compares it with its own: a collision, however
//! unlikely, is refused with an error, never a crossed connection.
//!
//! # Hello packets (SOCK_SEQPACKET, one packet each)
//!
//! ```text
//!  "LWMQ" version:u8=2 kind:u8
//!  kind 1, hello:  type_len:u8 type  name_len:u16le name  port:u16le (0 = none)
//!                  identity_len:u8 identity  recv_hwm:u32le (0 = none)
//!                  connector's packet carries 2 descriptors: segment, doorbell
//!                  binder's packet carries 1 descriptor: doorbell
//!  kind 2, reject: reason_len:u16le reason (UTF-8), no descriptor
//!  kind 3, goodbye: nothing more, no descriptor
//! ```
//!
//! `recv_hwm` is the sender's receive high-water mark in messages: the peer's writer
//! keeps at most that many messages unread in the ring it writes to us (see
//! `shm::ring`). Version 1 (before the HWM) is refused with an error naming both
//! versions, rather than met by a writer that would not honour our HWM.
//!
//! The connector sends first (right after `connect`, so the packet is usually waiting
//! when the binder accepts); the binder answers with a hello or a reject. Both sides
//! check the peer's uid (SO_PEERCRED) and refuse with a reject that the other reports.
//!
//! After the handshake the socket stays open as the connection's control socket, and
//! carries at most one more packet: a side that ends the connection on purpose (drops
//! its [`ShmLink`]) sends a goodbye right before closing. So a hang-up after a goodbye
//! is a deliberate close, and a hang-up without one means the peer's process died (was
//! killed, crashed, or exited without closing): the kernel closed the socket for it.
//! This is decided by what the peer did, not by when we look at its process (which may
//! still be running while the kernel closes its descriptors, or already be a zombie
//! after a clean close).

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::ring::{RingReader, RingWriter, ShmSendError};
use super::segment::Segment;
use super::sys::{self, PeerCred};
use super::wait::Doorbell;
use super::{Hello, ShmOptions, endpoint_string};
use crate::{Error, Message, Result, SocketType};

const MAGIC: &[u8; 4] = b"LWMQ";
const VERSION: u8 = 2;
const KIND_HELLO: u8 = 1;
const KIND_REJECT: u8 = 2;
const KIND_GOODBYE: u8 = 3;
/// The goodbye packet (see the module docs).
const GOODBYE: [u8; 6] = [b'L', b'W', b'M', b'Q', VERSION, KIND_GOODBYE];
const MAX_PACKET: usize = 2048;

/// The abstract socket name (without the leading NUL) for `name[:port]` in `domain`.
pub fn abstract_name(domain: &str, name: &str, port: Option<u16>) -> String {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b":");
    if let Some(p) = port {
        h.update(p.to_string().as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("lwmq/{domain}/{hex}")
}

/// What the peer told us, and what the kernel says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    /// The peer's process id (SO_PEERCRED).
    pub pid: u32,
    /// The peer's effective uid (SO_PEERCRED).
    pub uid: u32,
    /// The peer's effective gid (SO_PEERCRED).
    pub gid: u32,
    /// The peer's socket type.
    pub socket_type: SocketType,
    /// The peer's routing identity (may be empty).
    pub identity: Bytes,
    /// The peer's receive high-water mark in messages (0: none), which our writer
    /// honours.
    pub recv_hwm: u32,
}

enum Packet {
    Hello {
        socket_type: SocketType,
        name: String,
        port: Option<u16>,
        identity: Bytes,
        recv_hwm: u32,
    },
    Reject(String),
}

fn encode_hello(hello: &Hello, name: &str, port: Option<u16>) -> Vec<u8> {
    let t = hello.socket_type.as_str().as_bytes();
    let mut v = Vec::with_capacity(16 + name.len() + hello.identity.len());
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&[VERSION, KIND_HELLO, t.len() as u8]);
    v.extend_from_slice(t);
    v.extend_from_slice(&(name.len() as u16).to_le_bytes());
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&port.unwrap_or(0).to_le_bytes());
    v.push(hello.identity.len() as u8);
    v.extend_from_slice(&hello.identity);
    v.extend_from_slice(&hello.recv_hwm.to_le_bytes());
    v
}

fn encode_reject(reason: &str) -> Vec<u8> {
    let mut r = reason.as_bytes();
    if r.len() > 1024 {
        r = &r[..1024];
    }
    let mut v = Vec::with_capacity(8 + r.len());
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&[VERSION, KIND_REJECT]);
    v.extend_from_slice(&(r.len() as u16).to_le_bytes());
    v.extend_from_slice(r);
    v
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated hello packet".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
}

fn decode(buf: &[u8]) -> std::result::Result<Packet, String> {
    let mut c = Cursor(buf);
    if c.take(4)? != MAGIC {
        return Err("the peer is not an lwmq shared-memory endpoint (bad magic)".into());
    }
    let version = c.u8()?;
    if version != VERSION {
        return Err(format!(
            "the peer speaks rendezvous version {version}, we speak {VERSION}"
        ));
    }
    let packet = match c.u8()? {
        KIND_HELLO => {
            let n = c.u8()? as usize;
            let t = c.take(n)?;
            let socket_type = SocketType::from_name(t)
                .ok_or_else(|| format!("unknown socket type {:?}", String::from_utf8_lossy(t)))?;
            let n = c.u16()? as usize;
            let name = std::str::from_utf8(c.take(n)?)
                .map_err(|_| "endpoint name is not UTF-8".to_string())?
                .to_owned();
            let port = match c.u16()? {
                0 => None,
                p => Some(p),
            };
            let n = c.u8()? as usize;
            let identity = Bytes::copy_from_slice(c.take(n)?);
            let b = c.take(4)?;
            let recv_hwm = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            Packet::Hello {
                socket_type,
                name,
                port,
                identity,
                recv_hwm,
            }
        }
        KIND_REJECT => {
            let n = c.u16()? as usize;
            Packet::Reject(String::from_utf8_lossy(c.take(n)?).into_owned())
        }
        k => return Err(format!("unknown packet kind {k}")),
    };
    if !c.0.is_empty() {
        return Err("trailing bytes after the hello".into());
    }
    Ok(packet)
}

/// What a non-blocking read of the handshake socket found.
enum Recv {
    Packet(Vec<u8>, Vec<OwnedFd>),
    WouldBlock,
    /// The peer closed the socket (or reset it, closing with our packet unread).
    Closed,
}

fn try_recv_packet(fd: &OwnedFd) -> Result<Recv> {
    let mut buf = vec![0u8; MAX_PACKET];
    match sys::recv_with_fds(fd, &mut buf) {
        Ok(p) if p.truncated => Err(Error::Protocol(
            "the peer's hello is larger than allowed or carries too many descriptors".into(),
        )),
        Ok(p) if p.len == 0 && p.fds.is_empty() => Ok(Recv::Closed),
        Ok(p) => {
            buf.truncate(p.len);
            Ok(Recv::Packet(buf, p.fds))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Recv::WouldBlock),
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => Ok(Recv::Closed),
        Err(e) => Err(e.into()),
    }
}

fn check_hello(hello: &Hello) -> Result<()> {
    if hello.identity.len() > 255 {
        return Err(Error::InvalidArgument(format!(
            "routing identity of {} bytes; the limit is 255",
            hello.identity.len()
        )));
    }
    Ok(())
}

fn check_name(name: &str, port: Option<u16>) -> Result<()> {
    let uri = endpoint_string(name, port);
    match crate::Endpoint::parse(&uri)? {
        crate::Endpoint::Ipc { name: n, port: p } if n == name && p == port => Ok(()),
        _ => Err(Error::endpoint(
            &uri,
            "not a valid ipc endpoint (the name may not contain ':'; the port is 1 to 65535)",
        )),
    }
}

/// Why the peer on `fd` may not use `endpoint`, if it may not: its uid, and (when the
/// policy lists groups) its effective and supplementary groups, against
/// [`ShmOptions::allow_uids`].
fn peer_refusal(
    endpoint: &str,
    fd: &OwnedFd,
    cred: &PeerCred,
    opts: &ShmOptions,
) -> Option<String> {
    let policy = &opts.allow_uids;
    if policy.allows(cred.uid) {
        return None;
    }
    let mut groups = vec![cred.gid];
    if policy.looks_at_groups() {
        match sys::peer_groups(fd) {
            Ok(g) => groups.extend(g),
            // Judged by its uid and effective gid alone.
            Err(e) => tracing::debug!("SO_PEERGROUPS on {endpoint}: {e}"),
        }
        if policy.allows_peer(cred.uid, &groups) {
            return None;
        }
    }
    Some(format!(
        "peer uid {} (pid {}, groups {groups:?}) is not allowed on {endpoint}; only uid {} may \
         connect unless ShmOptions::allow_uids (Socket::set_ipc_allowed_peers) says otherwise",
        cred.uid,
        cred.pid,
        sys::effective_uid()
    ))
}

/// Most half-open handshakes a listener keeps; beyond this the oldest is dropped.
const MAX_PENDING_HANDSHAKES: usize = 64;

/// A connection accepted whose hello has not arrived yet.
#[derive(Debug)]
struct PendingHandshake {
    fd: OwnedFd,
    cred: PeerCred,
    since: Instant,
}

/// A bound `ipc://` endpoint, waiting for connections. Never blocks: register
/// [`AsRawFd::as_raw_fd`] for readability with an event loop (it is an epoll descriptor
/// covering the listening socket and the handshakes in progress) and, when it fires,
/// call [`accept`](Self::accept) until it returns `Ok(None)`. The name is released when
/// this is dropped (or the process dies).
///
/// `accept` takes `&self` and may be called from any thread (the handshakes in progress
/// are behind a mutex); the socket layer normally calls it from its I/O thread.
pub struct ShmListener {
    listen: OwnedFd,
    epoll: OwnedFd,
    pending: Mutex<Vec<PendingHandshake>>,
    name: String,
    port: Option<u16>,
    endpoint: String,
    opts: ShmOptions,
    hello: Hello,
    bell: Doorbell,
}

impl fmt::Debug for ShmListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmListener")
            .field("endpoint", &self.endpoint)
            .field("fd", &self.listen.as_raw_fd())
            .finish()
    }
}

impl AsRawFd for ShmListener {
    /// The descriptor to poll for readability: an epoll instance that is readable when
    /// a connection or a hello is waiting.
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

impl ShmListener {
    /// Binds `ipc://name[:port]` in `opts.domain`. Peers that connect ring `bell` when
    /// they send us something (give every connection of one socket the same bell).
    pub fn bind(
        name: &str,
        port: Option<u16>,
        opts: &ShmOptions,
        hello: Hello,
        bell: &Doorbell,
    ) -> Result<ShmListener> {
        check_name(name, port)?;
        opts.check_domain()?;
        check_hello(&hello)?;
        if bell.memfd().is_none() {
            return Err(Error::InvalidArgument(
                "a listener needs a shared doorbell (Doorbell::new)".into(),
            ));
        }
        let endpoint = endpoint_string(name, port);
        let listen = sys::seqpacket_socket()?;
        let abs = abstract_name(&opts.domain, name, port);
        match sys::bind_listen_abstract(&listen, abs.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                return Err(Error::AddressInUse { endpoint });
            }
            Err(e) => return Err(e.into()),
        }
        let epoll = sys::epoll()?;
        sys::epoll_add(&epoll, listen.as_raw_fd())?;
        tracing::debug!(%endpoint, socket = %abs, "shm listener bound");
        Ok(ShmListener {
            listen,
            epoll,
            pending: Mutex::new(Vec::new()),
            name: name.to_owned(),
            port,
            endpoint,
            opts: opts.clone(),
            hello,
            bell: bell.clone(),
        })
    }

    /// The endpoint, `ipc://name[:port]`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Takes in waiting connections and completes the binder's side of every handshake
    /// whose hello has arrived; returns the first connection established. Never blocks.
    ///
    /// `Ok(None)`: nothing (more) to do now. An error concerns one incoming connection
    /// (a refused peer, a bad hello) and the listener stays usable: keep calling until
    /// `Ok(None)`. A peer that connects and stays silent for
    /// [`ShmOptions::handshake_timeout`] is dropped.
    pub fn accept(&self) -> Result<Option<ShmConnection>> {
        // A poisoned lock only means another thread panicked mid-accept; the list of
        // descriptors is still consistent.
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(fd) = sys::accept(&self.listen)? {
            let cred = sys::peer_cred(&fd)?;
            if pending.len() >= MAX_PENDING_HANDSHAKES {
                let old = pending.remove(0);
                tracing::info!(endpoint = %self.endpoint, pid = old.cred.pid, "too many handshakes in progress; dropping the oldest");
            }
            sys::epoll_add(&self.epoll, fd.as_raw_fd())?;
            pending.push(PendingHandshake {
                fd,
                cred,
                since: Instant::now(),
            });
        }
        let mut i = 0;
        while i < pending.len() {
            match try_recv_packet(&pending[i].fd) {
                Ok(Recv::WouldBlock) => {
                    if pending[i].since.elapsed() > self.opts.handshake_timeout {
                        let p = pending.swap_remove(i);
                        tracing::info!(endpoint = %self.endpoint, pid = p.cred.pid, "no hello in time; dropping the connection");
                    } else {
                        i += 1;
                    }
                }
                Ok(Recv::Closed) => {
                    pending.swap_remove(i);
                }
                Ok(Recv::Packet(buf, fds)) => {
                    let p = pending.swap_remove(i);
                    drop(pending);
                    let _ = sys::epoll_del(&self.epoll, p.fd.as_raw_fd());
                    return self.finish(p.fd, p.cred, &buf, fds).map(Some);
                }
                Err(e) => {
                    let p = pending.swap_remove(i);
                    let _ = sys::send_with_fds(&p.fd, &encode_reject(&e.to_string()), &[]);
                    return Err(e);
                }
            }
        }
        Ok(None)
    }

    /// The binder's side of the handshake, once the connector's packet is in.
    fn finish(
        &self,
        fd: OwnedFd,
        cred: PeerCred,
        buf: &[u8],
        mut fds: Vec<OwnedFd>,
    ) -> Result<ShmConnection> {
        let refuse = |reason: String, err: fn(String) -> Error| -> Error {
            let _ = sys::send_with_fds(&fd, &encode_reject(&reason), &[]);
            tracing::info!(endpoint = %self.endpoint, pid = cred.pid, "refused: {reason}");
            err(reason)
        };
        let hello = match decode(buf) {
            Ok(Packet::Reject(why)) => {
                return Err(Error::PeerRejected(format!(
                    "the process connecting to {} (pid {}) refused us: {why}",
                    self.endpoint, cred.pid
                )));
            }
            Ok(Packet::Hello {
                socket_type,
                name,
                port,
                identity,
                recv_hwm,
            }) => Ok((socket_type, name, port, identity, recv_hwm)),
            Err(why) => Err(why),
        };
        // The uid is checked after reading the packet, even for a peer we refuse:
        // closing a Unix socket with unread data resets it, and the peer would get
        // ECONNRESET instead of our reason. A refused peer's descriptors are closed
        // without being mapped.
        if let Some(reason) = peer_refusal(&self.endpoint, &fd, &cred, &self.opts) {
            return Err(refuse(reason, Error::PeerRejected));
        }
        let (socket_type, name, port, identity, recv_hwm) = match hello {
            Ok(h) => h,
            Err(why) => return Err(refuse(why, Error::Protocol)),
        };
        if name != self.name || port != self.port {
            let why = format!(
                "{} is bound here, not {} (name hash collision?)",
                self.endpoint,
                endpoint_string(&name, port)
            );
            return Err(refuse(why, Error::PeerRejected));
        }
        if !self.hello.socket_type.is_compatible_with(socket_type) {
            let why = format!(
                "socket type {socket_type} cannot connect to {} (a {} socket)",
                self.endpoint, self.hello.socket_type
            );
            return Err(refuse(why, Error::PeerRejected));
        }
        if fds.len() != 2 {
            let why = format!("the hello carried {} descriptors, expected 2", fds.len());
            return Err(refuse(why, Error::Protocol));
        }
        let (Some(bell_fd), Some(seg_fd)) = (fds.pop(), fds.pop()) else {
            return Err(refuse("descriptors missing".into(), Error::Protocol));
        };
        let segment = match Segment::open(seg_fd, self.opts.max_peer_ring_size) {
            Ok(s) => s,
            Err(why) => return Err(refuse(why, Error::Protocol)),
        };
        let peer_bell = match Doorbell::from_peer(bell_fd) {
            Ok(b) => b,
            Err(why) => return Err(refuse(why, Error::Protocol)),
        };
        let Some(our_bell) = self.bell.memfd() else {
            return Err(Error::InvalidArgument(
                "the listener's doorbell has no memfd".into(),
            ));
        };
        sys::send_with_fds(
            &fd,
            &encode_hello(&self.hello, &self.name, self.port),
            &[our_bell.as_raw_fd()],
        )?;
        let peer = PeerHello {
            pid: cred.pid,
            uid: cred.uid,
            gid: cred.gid,
            socket_type,
            identity,
            recv_hwm,
        };
        tracing::debug!(endpoint = %self.endpoint, pid = peer.pid, "shm connection accepted");
        Ok(ShmConnection::new(
            fd,
            segment,
            1,
            0,
            peer_bell,
            self.bell.clone(),
            peer,
            self.endpoint.clone(),
            self.opts.spin,
            self.hello.recv_hwm,
        ))
    }
}

/// Connects to `ipc://name[:port]` in `opts.domain` and waits (at most
/// [`ShmOptions::handshake_timeout`]) for the binder's answer. `Ok(None)`: nobody is
/// bound there (yet), or the binder went away during the handshake — retry later. Our
/// peer rings `bell` when it sends us something. [`connect_start`] is the non-blocking
/// form.
pub fn connect(
    name: &str,
    port: Option<u16>,
    opts: &ShmOptions,
    hello: Hello,
    bell: &Doorbell,
) -> Result<Option<ShmConnection>> {
    let Some(mut c) = connect_start(name, port, opts, hello, bell)? else {
        return Ok(None);
    };
    let deadline = Instant::now() + opts.handshake_timeout;
    loop {
        match c.try_finish() {
            Ok(Some(conn)) => return Ok(Some(conn)),
            Ok(None) => {}
            Err(Error::Closed) => {
                tracing::debug!(endpoint = %c.endpoint, "listener closed during the handshake");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        sys::poll_one(c.as_raw_fd(), libc::POLLIN, ms)?;
    }
}

/// Starts connecting to `ipc://name[:port]`: connects the Unix socket, checks the
/// binder's uid, creates the segment and sends our hello, without waiting for the
/// answer. `Ok(None)`: nobody is bound there (yet). Poll
/// [`ShmConnecting::as_raw_fd`] for readability and call
/// [`ShmConnecting::try_finish`].
pub fn connect_start(
    name: &str,
    port: Option<u16>,
    opts: &ShmOptions,
    hello: Hello,
    bell: &Doorbell,
) -> Result<Option<ShmConnecting>> {
    check_name(name, port)?;
    opts.check_domain()?;
    check_hello(&hello)?;
    let Some(our_bell) = bell.memfd() else {
        return Err(Error::InvalidArgument(
            "a connection needs a shared doorbell (Doorbell::new)".into(),
        ));
    };
    let endpoint = endpoint_string(name, port);
    let fd = sys::seqpacket_socket()?;
    let abs = abstract_name(&opts.domain, name, port);
    match sys::connect_abstract(&fd, abs.as_bytes()) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ECONNREFUSED | libc::ENOENT | libc::EAGAIN)
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    let cred = sys::peer_cred(&fd)?;
    if let Some(reason) = peer_refusal(&endpoint, &fd, &cred, opts) {
        let _ = sys::send_with_fds(&fd, &encode_reject(&reason), &[]);
        return Err(Error::PeerRejected(reason));
    }
    let segment = Segment::create(opts.effective_ring_size())?;
    let Some(seg_fd) = segment.fd() else {
        return Err(Error::Io(std::io::Error::other(
            "a new segment has no memfd",
        )));
    };
    sys::send_with_fds(
        &fd,
        &encode_hello(&hello, name, port),
        &[seg_fd.as_raw_fd(), our_bell.as_fd().as_raw_fd()],
    )?;
    Ok(Some(ShmConnecting {
        fd: Some(fd),
        segment: Some(segment),
        cred,
        name: name.to_owned(),
        port,
        endpoint,
        hello,
        bell: bell.clone(),
        spin: opts.spin,
    }))
}

/// A connection whose hello is sent and whose answer is awaited; from
/// [`connect_start`].
#[derive(Debug)]
pub struct ShmConnecting {
    fd: Option<OwnedFd>,
    segment: Option<Segment>,
    cred: PeerCred,
    name: String,
    port: Option<u16>,
    endpoint: String,
    hello: Hello,
    bell: Doorbell,
    spin: Duration,
}

impl AsRawFd for ShmConnecting {
    /// The socket to poll for readability (the binder's answer, or its hang-up).
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }
}

impl ShmConnecting {
    /// The endpoint, `ipc://name[:port]`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Completes the handshake if the binder's answer is in. `Ok(None)`: not yet.
    /// [`Error::Closed`]: the binder went away (retry later); [`Error::PeerRejected`]:
    /// it refused us, with its reason (do not retry in a loop). After `Ok(Some)` or an
    /// error, this object is spent (further calls return [`Error::Closed`]).
    pub fn try_finish(&mut self) -> Result<Option<ShmConnection>> {
        let Some(fd) = self.fd.as_ref() else {
            return Err(Error::Closed);
        };
        let (buf, mut fds) = match try_recv_packet(fd) {
            Ok(Recv::WouldBlock) => return Ok(None),
            Ok(Recv::Closed) => {
                self.fd = None;
                return Err(Error::Closed);
            }
            Ok(Recv::Packet(buf, fds)) => (buf, fds),
            Err(e) => {
                self.fd = None;
                return Err(e);
            }
        };
        let (Some(fd), Some(segment)) = (self.fd.take(), self.segment.take()) else {
            return Err(Error::Closed);
        };
        let endpoint = &self.endpoint;
        let (socket_type, identity, recv_hwm) = match decode(&buf).map_err(Error::Protocol)? {
            Packet::Reject(why) => {
                return Err(Error::PeerRejected(format!(
                    "{endpoint} (pid {}) refused us: {why}",
                    self.cred.pid
                )));
            }
            Packet::Hello {
                socket_type,
                name: their_name,
                port: their_port,
                identity,
                recv_hwm,
            } => {
                if their_name != self.name || their_port != self.port {
                    return Err(Error::Protocol(format!(
                        "reached {} instead of {endpoint} (name hash collision?)",
                        endpoint_string(&their_name, their_port)
                    )));
                }
                if !self.hello.socket_type.is_compatible_with(socket_type) {
                    return Err(Error::PeerRejected(format!(
                        "{endpoint} is a {socket_type} socket, which a {} socket cannot talk to",
                        self.hello.socket_type
                    )));
                }
                (socket_type, identity, recv_hwm)
            }
        };
        let count = fds.len();
        let (1, Some(bell_fd)) = (count, fds.pop()) else {
            return Err(Error::Protocol(format!(
                "the listener's hello carried {count} descriptors, expected 1"
            )));
        };
        let peer_bell = Doorbell::from_peer(bell_fd).map_err(Error::Protocol)?;
        let peer = PeerHello {
            pid: self.cred.pid,
            uid: self.cred.uid,
            gid: self.cred.gid,
            socket_type,
            identity,
            recv_hwm,
        };
        tracing::debug!(%endpoint, pid = peer.pid, "shm connection established");
        Ok(Some(ShmConnection::new(
            fd,
            segment,
            0,
            1,
            peer_bell,
            self.bell.clone(),
            peer,
            self.endpoint.clone(),
            self.spin,
            self.hello.recv_hwm,
        )))
    }
}

/// One shared-memory connection: a ring each way, the peer, and the control socket that
/// tells when the peer is gone.
///
/// `tx` and `rx` can be driven directly (non-blocking, by the socket layer), or through
/// the blocking helpers [`send`](Self::send) and [`recv`](Self::recv). Dropping the
/// connection unmaps the segment and closes every descriptor; the peer sees HUP.
#[derive(Debug)]
pub struct ShmConnection {
    /// Our ring to the peer.
    pub tx: RingWriter,
    /// The peer's ring to us.
    pub rx: RingReader,
    /// Who the peer is.
    pub peer: PeerHello,
    link: ShmLink,
    bell: Doorbell,
    spin: Duration,
}

/// What is left of a connection besides its rings (see [`ShmConnection::into_parts`]):
/// the control socket, which tells when the peer is gone, and the segment mapping.
/// Dropping it closes the control socket: the peer sees HUP.
#[derive(Debug)]
pub struct ShmLink {
    control: OwnedFd,
    endpoint: String,
    segment: Segment,
}

impl ShmLink {
    /// The control socket: readable with HUP (or EOF) when the peer is gone. Register it
    /// with the event loop.
    pub fn control_fd(&self) -> RawFd {
        self.control.as_raw_fd()
    }

    /// Whether the peer is still there (one non-blocking poll of the control socket;
    /// nothing but a goodbye is ever sent on it after the handshake, so readable means
    /// gone).
    pub fn peer_alive(&self) -> bool {
        match sys::poll_one(self.control.as_raw_fd(), libc::POLLIN | libc::POLLRDHUP, 0) {
            Ok(rev) => rev & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLIN) == 0,
            Err(_) => false,
        }
    }

    /// Once the peer is gone ([`ShmLink::peer_alive`] is false): whether it said
    /// goodbye, i.e. closed the connection on purpose. `false` means its process died
    /// (killed, crashed, or exited without closing) and the kernel closed the socket.
    /// Reads what the peer left on the control socket; call it once.
    pub fn peer_said_goodbye(&self) -> bool {
        let mut buf = [0u8; 16];
        // A reset (we had unread packets when the peer closed) is reported before the
        // packets queued for us: look again after one.
        for _ in 0..4 {
            match sys::recv_with_fds(&self.control, &mut buf) {
                Ok(p) if p.len == 0 => return false,
                Ok(p) => {
                    if !p.truncated && buf[..p.len] == GOODBYE {
                        return true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// The endpoint, `ipc://name[:port]`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for ShmLink {
    /// Ends the connection on purpose: a goodbye, then the close (the peer sees HUP).
    fn drop(&mut self) {
        // Never blocks (a non-blocking socket with nothing else queued); if the peer is
        // already gone there is nobody to tell.
        let _ = sys::send_with_fds(&self.control, &GOODBYE, &[]);
    }
}

impl ShmConnection {
    #[allow(clippy::too_many_arguments)]
    fn new(
        control: OwnedFd,
        mut segment: Segment,
        tx_dir: usize,
        rx_dir: usize,
        peer_bell: Doorbell,
        bell: Doorbell,
        peer: PeerHello,
        endpoint: String,
        spin: Duration,
        our_hwm: u32,
    ) -> ShmConnection {
        // Keep only the mapping: the descriptor was handed over (or never kept).
        segment.close_fd();
        let mut tx = RingWriter::new(segment.ring(tx_dir), Some(peer_bell.clone()));
        tx.set_peer_hwm(peer.recv_hwm.into());
        let mut rx = RingReader::new(segment.ring(rx_dir), Some(peer_bell));
        // Our own value, never the peer's idea of it: the reader enforces it.
        rx.set_hwm(our_hwm.into());
        ShmConnection {
            tx,
            rx,
            peer,
            link: ShmLink {
                control,
                endpoint,
                segment,
            },
            bell,
            spin,
        }
    }

    /// The control socket: readable with HUP (or EOF) when the peer is gone. Register it
    /// with the event loop.
    pub fn control_fd(&self) -> RawFd {
        self.link.control_fd()
    }

    /// Whether the peer is still there (one non-blocking poll of the control socket).
    pub fn peer_alive(&self) -> bool {
        self.link.peer_alive()
    }

    /// The endpoint, `ipc://name[:port]`.
    pub fn endpoint(&self) -> &str {
        self.link.endpoint()
    }

    /// Splits the connection for a socket layer that sends and receives on different
    /// threads: each ring keeps the shared memory mapped by itself, and the
    /// [`ShmLink`] keeps the control socket open.
    pub fn into_parts(self) -> (RingWriter, RingReader, PeerHello, ShmLink) {
        (self.tx, self.rx, self.peer, self.link)
    }

    /// How long [`send`](Self::send) and [`recv`](Self::recv) spin before parking
    /// (initially [`ShmOptions::spin`]).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// The doorbell our peer rings (shared by all of the socket's connections).
    pub fn doorbell(&self) -> &Doorbell {
        &self.bell
    }

    #[doc(hidden)]
    pub fn segment_for_testing(&self) -> &Segment {
        &self.link.segment
    }

    /// Sends a message, waiting (spin, then park on our doorbell) while the ring is full.
    /// `timeout: None` waits for ever; the peer's death ends the wait with
    /// [`Error::Closed`].
    ///
    /// A message larger than the ring goes in pieces ([`RingWriter::try_send`]): this
    /// waits until the last piece is written. If the timeout passes in between, the
    /// error is [`Error::Timeout`] although the message is on its way: its remaining
    /// pieces go first with the next send (or [`RingWriter::continue_pieces`]).
    pub fn send(&mut self, msg: &Message, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.send_step(deadline, &mut |tx| tx.try_send(msg))?;
        if self.tx.has_unfinished() {
            self.send_step(deadline, &mut |tx| match tx.continue_pieces() {
                Ok(true) => Ok(()),
                Ok(false) => Err(ShmSendError::Full),
                Err(e) => Err(e),
            })?;
        }
        Ok(())
    }

    /// Runs `step` until it is not `Full`, waiting for space in between.
    fn send_step(
        &mut self,
        deadline: Option<Instant>,
        step: &mut dyn FnMut(&mut RingWriter) -> std::result::Result<(), ShmSendError>,
    ) -> Result<()> {
        loop {
            match step(&mut self.tx) {
                Ok(()) => return Ok(()),
                Err(ShmSendError::Full) => {}
                Err(e) => return Err(e.into()),
            }
            let slice = slice_deadline(deadline);
            let tx = &mut self.tx;
            let r = self.bell.wait_until(self.spin, Some(slice), || {
                match step(tx) {
                    Err(ShmSendError::Full) => {}
                    r => return Some(r),
                }
                tx.arm_space_notification();
                match step(tx) {
                    Err(ShmSendError::Full) => None,
                    r => Some(r),
                }
            });
            match r {
                Some(r) => return r.map_err(Error::from),
                None if !self.peer_alive() => return Err(Error::Closed),
                None if deadline.is_some_and(|d| Instant::now() >= d) => {
                    return Err(Error::Timeout);
                }
                None => {}
            }
        }
    }

    /// Receives a message, waiting (spin, then park on our doorbell) while there is none.
    /// What the peer sent before dying is still delivered; after that,
    /// [`Error::Closed`].
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Message> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let slice = slice_deadline(deadline);
            let rx = &mut self.rx;
            let r = self
                .bell
                .wait_until(self.spin, Some(slice), || rx.try_recv().transpose());
            match r {
                Some(r) => return r,
                None if !self.peer_alive() => {
                    return match self.rx.try_recv()? {
                        Some(m) => Ok(m),
                        None => Err(Error::Closed),
                    };
                }
                None if deadline.is_some_and(|d| Instant::now() >= d) => {
                    return Err(Error::Timeout);
                }
                None => {}
            }
        }
    }
}

/// The end of one wait slice: the deadline, but at most 100 ms away, so that a waiter
/// also notices the peer's death.
fn slice_deadline(deadline: Option<Instant>) -> Instant {
    let slice = Instant::now() + Duration::from_millis(100);
    deadline.map_or(slice, |d| d.min(slice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_garbage_is_refused() {
        let hello = Hello {
            socket_type: SocketType::Dealer,
            identity: Bytes::from_static(b"id-1"),
            recv_hwm: 70_000,
        };
        let wire = encode_hello(&hello, "caf\u{e9}/orders", Some(9));
        match decode(&wire) {
            Ok(Packet::Hello {
                socket_type,
                name,
                port,
                identity,
                recv_hwm,
            }) => {
                assert_eq!(recv_hwm, 70_000);
                assert_eq!(socket_type, SocketType::Dealer);
                assert_eq!(name, "caf\u{e9}/orders");
                assert_eq!(port, Some(9));
                assert_eq!(identity, "id-1");
            }
            _ => panic!("hello did not decode"),
        }
        // Every truncation is an error, as is a trailing byte.
        for n in 0..wire.len() {
            assert!(decode(&wire[..n]).is_err(), "{n}");
        }
        let mut long = wire.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        let mut bad = wire.clone();
        bad[0] = b'X';
        assert!(decode(&bad).is_err());
        let mut bad = wire.clone();
        bad[5] = 9;
        assert!(decode(&bad).is_err());
        // A version 1 peer (no HWM in its hello) is refused, naming both versions.
        let mut old = wire;
        old[4] = 1;
        old.truncate(old.len() - 4);
        let why = decode(&old).err().unwrap_or_default();
        assert!(why.contains("version 1, we speak 2"), "{why}");
        match decode(&encode_reject("no")) {
            Ok(Packet::Reject(why)) => assert_eq!(why, "no"),
            _ => panic!("reject did not decode"),
        }
    }

    #[test]
    fn abstract_names_fit_and_differ() {
        let long = "\u{1d11e}".repeat(119);
        let a = abstract_name(&"d".repeat(48), &long, Some(65535));
        assert!(a.len() < 107, "{}", a.len());
        assert_ne!(
            abstract_name("d", "x", None),
            abstract_name("d", "x", Some(1))
        );
        assert_ne!(
            abstract_name("d", "x", Some(1)),
            abstract_name("d", "x", Some(2))
        );
        assert_ne!(abstract_name("d", "x", None), abstract_name("e", "x", None));
    }
}
