//! `ipc://` for sockets: the shared-memory transport ([`super::shm`]) behind the pipe
//! contract, and the engine of the background thread that makes, watches and remakes
//! its connections.
//!
//! # The data path: no hop
//!
//! A pipe to an `ipc://` peer is an [`IpcWriter`] and an [`IpcReader`] over the two rings
//! of one shared-memory connection. The socket's user thread writes straight into the
//! peer's ring and reads straight from ours: no other thread touches a message, no lock
//! is taken and no system call is made while the connection is up (a writer rings the
//! peer's doorbell only when the peer announced it is parking).
//!
//! # The control path: the ipc engine of the background thread
//!
//! The context's one background thread ([`super::reactor`]) owns, through this engine,
//! every [`ShmListener`], every connect in progress ([`ShmConnecting`]) and the control
//! socket ([`ShmLink`]) of every connection, in its one `mio` poll:
//!
//! - a listener's readiness: `accept` until `Ok(None)`; each connection becomes a new
//!   pipe in the socket's mailbox (`accepted`, `handshake-succeeded`); a refused or
//!   malformed peer is reported (`handshake-failed-auth`/`-protocol`) and costs nothing
//!   else;
//! - a connect: `connect_start` now and every reconnect interval while nobody is bound
//!   (`connect-retried`); a refusal (another user, an incompatible socket type) stops the
//!   retries (`handshake-failed-auth`/`-protocol`, detail says so);
//! - a control socket's hang-up: the peer is gone. The connection is marked dead, the
//!   socket is woken, the monitor says `peer-crashed` (only if the peer hung up without
//!   the goodbye a side sends when it ends a connection on purpose (see
//!   `shm/rendezvous.rs`): its process died, was killed or
//!   exited without closing) and then `disconnected` (always), both with the peer's pid
//!   (SO_PEERCRED at connect time) as detail (`pid 1234`).
//!   A connecting socket reconnects after the reconnect interval (`connect-retried`).
//!
//! # Who owns what (threads)
//!
//! A [`Slot`] is shared by a pipe's two halves and the background thread. The thread puts a new
//! connection's rings into it (and bumps `version`), marks connections dead
//! (`ConnState::alive`), and flushes the messages queued while no connection existed (`pending`, bounded by the
//! send high-water mark) into a new connection's ring *before* handing the ring to the
//! writer, so order is kept. The halves look at the slot only when `version` changed (one
//! atomic load per call otherwise). A pipe made by `connect` (except for ROUTER and
//! `immediate`) lives as long as the connect and outlives its connections, like a stream
//! connecter's pipe: messages sent while the peer is away queue in it. A pipe made for
//! one accepted connection closes with it, after the reader drained what the peer wrote.
//!
//! # Semantics next to the stream transports
//!
//! - High-water marks: while no connection exists, a connect's pipe queues up to the
//!   send HWM (messages). Once connected, the peer's ring is its receive queue: it
//!   holds at most the peer's receive HWM of messages (announced in its hello, 0 = no
//!   limit; see `shm::ring`) and at most a ring of bytes
//!   ([`shm::ShmOptions::ring_size`]). At either bound a send finds the pipe full:
//!   PUSH/DEALER/REQ/PAIR block, PUB/XPUB/ROUTER drop, as at a full SNDHWM; what a
//!   connection holds is therefore about SNDHWM (while queued before it) + RCVHWM, as
//!   in libzmq. The HWMs are read when the endpoint is bound or connected: a change
//!   applies to later endpoints (libzmq copies options the same way).
//! - Message size: any. A message the ring cannot hold at once goes in pieces
//!   (`shm::ring`): the sending thread writes them while the reader makes room, for up
//!   to 2 ms ([`PIECES_SPIN`]); if pieces are left then (the reader is slow, or is the
//!   sending thread itself), the writer hands the ring to the background thread, which
//!   writes the rest and then the messages queued behind it (in the slot's `pending`,
//!   up to the send HWM), every millisecond ([`FLUSH_RETRY`]), and hands the ring back.
//!   The send returns once the first piece is in the ring; a socket closed meanwhile
//!   lingers until the last piece is written (or the linger time passes), on either
//!   side. MAXMSGSIZE (per frame) bounds what the reader accepts from the peer: a
//!   larger frame, in the ring or announced in pieces, is a protocol error.
//! - Subscriptions travel as ordinary ring messages, ZMTP 3.0 style (first byte 1 =
//!   subscribe, 0 = cancel), which is what PUB/XPUB read from their pipes; a connect's
//!   pipe replays the subscriptions in force to every new connection after the first.
//! - Routing ids come from the rendezvous hello (the socket's routing id option).
//! - CONFLATE on a reader returns the newest message in the ring.
//! - Linger: what is in a ring when the socket closes stays readable by the peer (the
//!   memory lives until both sides unmap it). A connect with messages still queued
//!   (no connection yet, or a full ring) keeps connecting after the socket closed,
//!   until the queue is in a ring or the linger time passes (zero: dropped at once);
//!   the context's background thread exits only when nothing lingers.
//! - Zero copy: [`IpcReader`] reads in place for `Socket::recv_with` and [`IpcWriter`]
//!   reserves in place for `Socket::send_with`.
//!
//! # Errors
//!
//! Anything wrong in what a peer wrote into shared memory (the rings validate every
//! index and length) costs only that connection: the reader reports it, the background thread
//! emits `protocol-error` with the reason and closes the control socket (the peer sees
//! HUP), and a connecting socket reconnects after the interval.
//!
//! Nothing is lost silently. A message queued before its connection existed that can
//! never be written (an empty one) is dropped when the ipc thread flushes the queue,
//! and the monitor says `message-dropped` with what was dropped and why.
//! A message in pieces that the peer announces and never completes, or completes with
//! more or fewer bytes or frames than announced, is a protocol error (or, if the peer
//! just stops, costs what it sent until the connection ends); see `docs/shm-layout.md`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::SocketHandle;
use super::reconnect::Backoff;
use super::shm::{
    self, Hello, PeerHello, RingReader, RingWriter, ShmConnecting, ShmConnection, ShmLink,
    ShmListener, ShmSendError,
};
use super::{InPlace, Notify, Pipe, PipeClosed, PipeMeta, PipeReader, PipeWriter, WriteError};
use crate::monitor::EventKind;
use crate::options::Options;
use crate::{Error, Message};

/// Failed accepts in a row after which a listener is looked at again later.
const MAX_ACCEPT_ERRORS: usize = 64;
/// When a listener is looked at again after that.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);
/// How often the thread retries flushing queued messages into a full ring.
const FLUSH_RETRY: Duration = Duration::from_millis(1);
/// How long a sending thread keeps writing the pieces of a message larger than the
/// ring while the reader makes room, before it hands the rest to the background thread.
const PIECES_SPIN: Duration = Duration::from_millis(2);

use crate::transport::lock;

/// Why a connection ended on our side.
#[derive(Debug)]
enum Failure {
    /// The peer wrote something invalid.
    Protocol(String),
    /// The socket closed the pipe.
    Released,
}

/// One connection, as seen by the pipe halves and the background thread.
struct ConnState {
    /// Cleared by the background thread when the peer is gone, or by a half that found the
    /// connection broken. Release/Acquire: everything the peer wrote before is visible.
    alive: AtomicBool,
    key: Token,
    failure: Mutex<Option<Failure>>,
    io: Weak<Shared>,
}

impl fmt::Debug for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnState")
            .field("alive", &self.alive.load(Ordering::Relaxed))
            .finish()
    }
}

impl ConnState {
    fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Asks the background thread to end the connection.
    fn end(&self, why: Failure) {
        {
            let mut f = lock(&self.failure);
            if f.is_none() {
                *f = Some(why);
            }
        }
        self.alive.store(false, Ordering::Release);
        if let Some(io) = self.io.upgrade() {
            lock(&io.ended).push(self.key);
            io.wake();
        }
    }
}

#[derive(Debug, Default)]
struct SlotInner {
    /// A connection's writer for the writer half to take.
    tx: Option<(RingWriter, Arc<ConnState>)>,
    /// A connection's reader for the reader half to take.
    rx: Option<(RingReader, Arc<ConnState>)>,
    /// The current connection (to end it when the socket closes the pipe).
    current: Option<Arc<ConnState>>,
    /// Messages written while no connection could take them, oldest first.
    pending: VecDeque<Message>,
    /// Most messages in `pending` (0: no limit).
    hwm: usize,
    /// The subscriptions in force (control messages written through this pipe, a
    /// cancel removing its subscribe): replayed first to each new connection after
    /// the first, so a restarted PUB learns them again.
    subs: Vec<Message>,
    /// A connection was installed before.
    connected_before: bool,
    /// The socket closed with messages still queued here: the background thread keeps
    /// connecting until they are in a ring (or the linger time is over).
    lingering: bool,
    /// No connection will come any more.
    closed: bool,
    writer_closed: bool,
    reader_closed: bool,
}

/// What a pipe's two halves and the background thread share (see the module docs).
#[derive(Debug)]
pub(crate) struct Slot {
    /// Bumped (Release) after every change of `inner` the halves must look at.
    version: AtomicU64,
    /// Outlives its connections (a connect's pipe). Otherwise the pipe has exactly one
    /// connection, installed before the pipe is handed to the socket, and once it is
    /// gone writes fail as closed (queued messages would never leave).
    persistent: bool,
    inner: Mutex<SlotInner>,
}

impl Slot {
    pub(crate) fn new(hwm: usize, persistent: bool) -> Arc<Slot> {
        Arc::new(Slot {
            version: AtomicU64::new(1),
            persistent,
            inner: Mutex::new(SlotInner {
                hwm,
                ..SlotInner::default()
            }),
        })
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Both halves closed: end the current connection (unless it lingers: then the
    /// ipc thread ends it once the queue is flushed).
    fn release_if_unused(inner: &mut SlotInner) {
        if inner.writer_closed && inner.reader_closed && !inner.lingering {
            if let Some(c) = inner.current.take() {
                c.end(Failure::Released);
            }
            inner.pending.clear();
        }
    }
}

/// The writing half of an ipc pipe: the peer's ring, written by the socket's thread.
pub(crate) struct IpcWriter {
    slot: Arc<Slot>,
    version: u64,
    tx: Option<(RingWriter, Arc<ConnState>)>,
}

impl fmt::Debug for IpcWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcWriter")
            .field("connected", &self.tx.is_some())
            .finish()
    }
}

impl IpcWriter {
    #[inline]
    fn refresh(&mut self) {
        if self.tx.as_ref().is_some_and(|(_, c)| !c.alive()) {
            self.tx = None;
        }
        let g = self.slot.version.load(Ordering::Acquire);
        if g != self.version {
            self.version = g;
            if let Some(t) = lock(&self.slot.inner).tx.take() {
                self.tx = Some(t);
            }
        }
    }

    fn write(&mut self, msg: Message, control: bool) -> Result<(), WriteError> {
        self.refresh();
        if let Some((tx, conn)) = &mut self.tx {
            let mut r = tx.try_send(&msg);
            if r == Err(ShmSendError::Full) {
                // Ask the reader to ring our doorbell when it frees space, then look
                // once more (it may have freed space before it saw the request).
                tx.arm_space_notification();
                r = tx.try_send(&msg);
            }
            match r {
                Ok(()) => {
                    if tx.has_unfinished() {
                        self.drive();
                    }
                    return Ok(());
                }
                Err(ShmSendError::Full) => return Err(WriteError::Full(msg)),
                Err(e @ (ShmSendError::TooLarge { .. } | ShmSendError::Empty)) => {
                    // Socket::send checks sizes first, against the rings it knew of;
                    // this ring came since, or the message is empty. It can never go:
                    // the send fails (a subscription is reported by the ipc thread, see
                    // `write_control`).
                    return Err(WriteError::Unsendable(msg, Error::from(e)));
                }
                Err(e @ (ShmSendError::Protocol(_) | ShmSendError::Closed)) => {
                    conn.end(Failure::Protocol(e.to_string()));
                    self.tx = None;
                }
            }
        }
        // No connection: queue until one comes (the background thread flushes in order).
        let mut inner = lock(&self.slot.inner);
        // A pipe with one connection: once that is dead, nothing queued would leave.
        let gone = !self.slot.persistent && !inner.current.as_ref().is_some_and(|c| c.alive());
        if inner.closed || inner.writer_closed || gone {
            return Err(WriteError::Closed(msg));
        }
        if let Some(t) = inner.tx.take() {
            // A connection arrived since `refresh` (its queue is flushed): use it.
            drop(inner);
            self.tx = Some(t);
            return self.write(msg, control);
        }
        if !control && inner.hwm != 0 && inner.pending.len() >= inner.hwm {
            return Err(WriteError::Full(msg));
        }
        inner.pending.push_back(msg);
        Ok(())
    }
}

impl IpcWriter {
    /// Writes the rest of a message going in pieces (accepted by the ring, first piece
    /// written) while the reader makes room, for up to [`PIECES_SPIN`]; then, if pieces
    /// are left (the reader is busy, or is this very thread), hands the ring to the
    /// background thread, which writes them and the messages queued meanwhile, in
    /// order, and gives the ring back. Either way the writer keeps no unfinished
    /// message: closing it never cuts one.
    fn drive(&mut self) {
        let Some((mut tx, conn)) = self.tx.take() else {
            return;
        };
        let start = Instant::now();
        let mut turns = 0u32;
        loop {
            match tx.continue_pieces() {
                Ok(true) => {
                    self.tx = Some((tx, conn));
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    conn.end(Failure::Protocol(e.to_string()));
                    return;
                }
            }
            if !conn.alive() {
                return;
            }
            turns += 1;
            if turns % 64 == 0 {
                if start.elapsed() >= PIECES_SPIN {
                    break;
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        tx.arm_space_notification();
        match conn.io.upgrade() {
            Some(io) => {
                lock(&io.reflush).push((Arc::downgrade(&self.slot), tx, conn));
                io.wake();
            }
            // No background thread (unit tests): keep the ring; the next write
            // continues the pieces first.
            None => self.tx = Some((tx, conn)),
        }
    }
}

impl PipeWriter for IpcWriter {
    fn try_write(&mut self, msg: Message) -> Result<(), WriteError> {
        self.write(msg, false)
    }
    fn write_control(&mut self, msg: Message) -> Result<(), WriteError> {
        {
            let mut inner = lock(&self.slot.inner);
            let first = msg.frames().first();
            let cancel = first.is_some_and(|f| f.first() == Some(&0));
            let undone = if !cancel {
                None
            } else {
                inner.subs.iter().position(|m| {
                    let f = m.frames().first();
                    f.zip(first)
                        .is_some_and(|(a, b)| a.first() == Some(&1) && a[1..] == b[1..])
                })
            };
            match undone {
                Some(i) => {
                    inner.subs.remove(i);
                }
                None if !cancel => inner.subs.push(msg.clone()),
                None => {}
            }
        }
        // A subscription travels as an ordinary message (ZMTP 3.0 style: first byte
        // 1 = subscribe, 0 = cancel); a full ring queues it instead of dropping it, and
        // one that can never fit goes to the ipc thread too, which reports it when it
        // drops it (`flush`): nobody calls to hear an error.
        match self.write(msg, true) {
            Err(WriteError::Full(m) | WriteError::Unsendable(m, _)) => {
                let mut inner = lock(&self.slot.inner);
                if inner.closed {
                    return Err(WriteError::Closed(m));
                }
                inner.pending.push_back(m);
                drop(inner);
                // Only the background thread flushes `pending` while a writer holds the
                // ring; hand the ring back so it can (keeping order).
                if let Some((tx, conn)) = self.tx.take() {
                    if let Some(io) = conn.io.upgrade() {
                        lock(&io.reflush).push((Arc::downgrade(&self.slot), tx, conn));
                        io.wake();
                    }
                }
                Ok(())
            }
            other => other,
        }
    }
    fn write_in_place(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<InPlace, PipeClosed> {
        self.refresh();
        let Some((tx, conn)) = &mut self.tx else {
            // No ring (yet): the caller queues an ordinary message.
            return Ok(InPlace::Unsupported);
        };
        for attempt in 0..2 {
            match tx.reserve(len) {
                Ok(mut grant) => {
                    fill(grant.as_mut_slice());
                    grant.commit(false);
                    return Ok(InPlace::Written);
                }
                Err(ShmSendError::Full) if attempt == 0 => {
                    // Ask the reader to ring our doorbell when it frees space; look once
                    // more (it may have freed space before it saw the request).
                    tx.arm_space_notification();
                }
                Err(ShmSendError::Full) => return Ok(InPlace::Full),
                // Too large (Socket::send_with checks first) or empty: an ordinary
                // message gets the ordinary error handling.
                Err(ShmSendError::TooLarge { .. } | ShmSendError::Empty) => {
                    return Ok(InPlace::Unsupported);
                }
                Err(e @ (ShmSendError::Protocol(_) | ShmSendError::Closed)) => {
                    conn.end(Failure::Protocol(e.to_string()));
                    break;
                }
            }
        }
        self.tx = None;
        Ok(InPlace::Unsupported)
    }
    fn is_writable(&self) -> bool {
        // With a live connection the ring's free space cannot be read through `&self`:
        // report writable (a send may still find the ring full and wait).
        if self.tx.as_ref().is_some_and(|(_, c)| c.alive()) {
            return true;
        }
        let inner = lock(&self.slot.inner);
        !inner.closed
            && !inner.writer_closed
            && (inner.tx.is_some() || inner.hwm == 0 || inner.pending.len() < inner.hwm)
    }
    fn is_closed(&self) -> bool {
        self.tx.is_none() && lock(&self.slot.inner).closed
    }
    fn close(&mut self) {
        self.tx = None;
        let mut inner = lock(&self.slot.inner);
        inner.writer_closed = true;
        inner.tx = None;
        Slot::release_if_unused(&mut inner);
    }
}

impl Drop for IpcWriter {
    fn drop(&mut self) {
        self.close();
    }
}

/// The reading half of an ipc pipe: our ring, read in place by the socket's thread.
pub(crate) struct IpcReader {
    slot: Arc<Slot>,
    version: u64,
    rx: Option<(RingReader, Arc<ConnState>)>,
    closed: bool,
    /// CONFLATE: return only the newest message waiting in the ring.
    conflate: bool,
}

impl fmt::Debug for IpcReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcReader")
            .field("connected", &self.rx.is_some())
            .finish()
    }
}

impl PipeReader for IpcReader {
    fn try_read(&mut self) -> Result<Option<Message>, PipeClosed> {
        loop {
            if let Some((rx, conn)) = &mut self.rx {
                match rx.try_recv() {
                    Ok(Some(mut m)) => {
                        if self.conflate {
                            while let Ok(Some(newer)) = rx.try_recv() {
                                m = newer;
                            }
                        }
                        return Ok(Some(m));
                    }
                    Ok(None) if conn.alive() => return Ok(None),
                    Ok(None) => {
                        // Dead: what it wrote before dying is visible now; drain it.
                        match rx.try_recv() {
                            Ok(Some(m)) => return Ok(Some(m)),
                            Ok(None) => {}
                            Err(e) => conn.end(Failure::Protocol(e.to_string())),
                        }
                        self.rx = None;
                    }
                    Err(e) => {
                        conn.end(Failure::Protocol(e.to_string()));
                        self.rx = None;
                    }
                }
            }
            if self.closed {
                return Err(PipeClosed);
            }
            let g = self.slot.version.load(Ordering::Acquire);
            if g == self.version {
                return Ok(None);
            }
            self.version = g;
            let mut inner = lock(&self.slot.inner);
            if let Some(r) = inner.rx.take() {
                self.rx = Some(r);
                continue;
            }
            if inner.closed {
                self.closed = true;
                return Err(PipeClosed);
            }
            return Ok(None);
        }
    }
    fn is_empty(&mut self) -> bool {
        match &mut self.rx {
            Some((rx, _)) => matches!(rx.has_data(), Ok(false)),
            None => true,
        }
    }
    fn is_finished(&mut self) -> bool {
        if self.closed {
            return true;
        }
        if let Some((rx, conn)) = &mut self.rx {
            // Alive, or still holding what the dead peer wrote (or broken: `try_read`
            // reports that): not finished.
            if conn.alive() || !matches!(rx.has_data(), Ok(false)) {
                return false;
            }
        }
        let inner = lock(&self.slot.inner);
        inner.closed && inner.rx.is_none()
    }
    fn read_with(&mut self, f: &mut dyn FnMut(&crate::Frames<'_>)) -> Result<bool, PipeClosed> {
        // The fast path: a live ring with a message in it, read in place.
        if !self.conflate {
            if let Some((rx, conn)) = &mut self.rx {
                match rx.recv_in_place() {
                    Ok(Some(g)) => {
                        f(&crate::Frames::ring(&g));
                        return Ok(true);
                    }
                    Ok(None) if conn.alive() => return Ok(false),
                    // Dead, or broken: the general path drains, reports and switches.
                    Ok(None) | Err(_) => {}
                }
            }
        }
        match self.try_read()? {
            Some(m) => {
                f(&crate::Frames::message(&m));
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn close(&mut self) {
        self.rx = None;
        self.closed = true;
        let mut inner = lock(&self.slot.inner);
        inner.reader_closed = true;
        inner.rx = None;
        Slot::release_if_unused(&mut inner);
    }
}

impl Drop for IpcReader {
    fn drop(&mut self) {
        self.close();
    }
}

pub(crate) fn pipe_over(slot: &Arc<Slot>, meta: PipeMeta, conflate: bool) -> Pipe {
    Pipe {
        writer: Box::new(IpcWriter {
            slot: slot.clone(),
            version: 0,
            tx: None,
        }),
        reader: Box::new(IpcReader {
            slot: slot.clone(),
            version: 0,
            rx: None,
            closed: false,
            conflate,
        }),
        meta,
    }
}

pub(crate) fn hello(options: &Options) -> Hello {
    Hello {
        socket_type: options.socket_type,
        identity: options.routing_id.clone(),
        // Above u32::MAX is no limit in effect: a ring holds at most 2^27 messages.
        recv_hwm: u32::try_from(options.recv_hwm).unwrap_or(u32::MAX),
    }
}

// ---------------------------------------------------------------------------------
// The ipc thread.

/// What other threads leave for the ipc engine, each followed by a ring of the
/// thread's waker.
pub(crate) struct Shared {
    /// Connections a pipe half found broken or released.
    ended: Mutex<Vec<Token>>,
    /// Rings handed back by writers for the thread to flush `pending` into.
    #[allow(clippy::type_complexity)]
    reflush: Mutex<Vec<(Weak<Slot>, RingWriter, Arc<ConnState>)>>,
    waker: Arc<mio::Waker>,
}

impl Shared {
    pub(crate) fn new(waker: Arc<mio::Waker>) -> Shared {
        Shared {
            ended: Mutex::new(Vec::new()),
            reflush: Mutex::new(Vec::new()),
            waker,
        }
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::error!("cannot wake the background thread: {e}");
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ipc_engine::Shared").finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Owner {
    Listener(u64),
    Connecting(u64),
    Conn,
}

struct ListenerEntry {
    listener: ShmListener,
    token: Token,
    socket: Arc<SocketHandle>,
    options: Options,
}

enum ConnectState {
    Waiting(Instant),
    Connecting(Token, Box<ShmConnecting>, Instant),
    Connected(Token),
    Stopped,
}

struct Connecter {
    socket: Arc<SocketHandle>,
    uri: String,
    name: String,
    port: Option<u16>,
    options: Options,
    slot: Option<Arc<Slot>>,
    state: ConnectState,
    /// The next retry interval (grows while attempts fail).
    backoff: Backoff,
    /// The socket closed and this connect lingers until its queue is in a ring, or
    /// until this time (`Some(None)`: no limit).
    closing: Option<Option<Instant>>,
}

struct Conn {
    link: ShmLink,
    state: Arc<ConnState>,
    slot: Arc<Slot>,
    socket: Arc<SocketHandle>,
    peer: PeerHello,
    endpoint: String,
    /// The connect that made it, if any.
    connecter: Option<u64>,
    /// A ring not handed to the writer yet because queued messages (or the pieces of
    /// one) are still being flushed into it.
    held_tx: Option<RingWriter>,
    /// The socket closed while `held_tx` still had something to write: the connection
    /// lingers until it is written, or until this time (`Some(None)`: no limit). Only
    /// for accepted connections; a connect's linger is its `Connecter::closing`.
    closing: Option<Option<Instant>>,
}

/// Where a new connection goes.
struct Target<'a> {
    slot: &'a Arc<Slot>,
    socket: &'a Arc<SocketHandle>,
    endpoint: &'a str,
    /// The connect that made it, if any.
    connecter: Option<u64>,
    /// MAXMSGSIZE of the socket (per frame): what the peer may send us.
    max_msg_size: Option<u64>,
}

/// The ipc half of the background thread (see the module docs).
pub(crate) struct Engine {
    registry: Registry,
    shared: Arc<Shared>,
    tokens: HashMap<Token, Owner>,
    listeners: HashMap<u64, ListenerEntry>,
    connecters: HashMap<u64, Connecter>,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    /// Listeners to accept on again after [`ACCEPT_RETRY`].
    accept_later: Vec<u64>,
    /// What `handle_reflush` swaps with the shared list (kept, so that a ring handed
    /// back for every large message allocates nothing).
    #[allow(clippy::type_complexity)]
    reflush_spare: Vec<(Weak<Slot>, RingWriter, Arc<ConnState>)>,
    /// Shutdown asked: exit once no connect lingers.
    shutting_down: bool,
}

fn refusal_kind(e: &Error) -> EventKind {
    match e {
        Error::PeerRejected(why) if why.contains("uid") || why.contains("user") => {
            EventKind::HandshakeFailedAuth
        }
        _ => EventKind::HandshakeFailedProtocol,
    }
}

impl Engine {
    /// Bound and connected `ipc://` endpoints and live connections, per socket id.
    pub(crate) fn introspect(&self, infos: &mut HashMap<u64, crate::introspect::SocketInfo>) {
        use crate::introspect::{ConnectionInfo, Direction};
        let get = SocketHandle::info_entry;
        for l in self.listeners.values() {
            get(infos, &l.socket)
                .bound
                .push(l.listener.endpoint().to_owned());
        }
        for c in self.connecters.values() {
            get(infos, &c.socket).connected.push(c.uri.clone());
        }
        for c in self.conns.values() {
            if !c.state.alive() {
                continue;
            }
            get(infos, &c.socket).connections.push(ConnectionInfo {
                endpoint: c.endpoint.clone(),
                direction: if c.connecter.is_some() {
                    Direction::Connected
                } else {
                    Direction::Accepted
                },
                local_address: None,
                peer_address: None,
                peer_pid: Some(c.peer.pid),
                peer_socket_type: Some(c.peer.socket_type.as_str().to_owned()),
            });
        }
    }

    /// A new engine registering its sources with `registry`.
    pub(crate) fn new(registry: Registry, shared: Arc<Shared>) -> Engine {
        Engine {
            registry,
            shared,
            tokens: HashMap::new(),
            listeners: HashMap::new(),
            connecters: HashMap::new(),
            conns: HashMap::new(),
            next_token: 1,
            accept_later: Vec::new(),
            reflush_spare: Vec::new(),
            shutting_down: false,
        }
    }

    /// The ipc engine's tokens are odd (see `reactor`).
    fn token(&mut self) -> Token {
        self.next_token += 2;
        Token(self.next_token)
    }

    /// A readiness event for one of our tokens.
    pub(crate) fn ready(&mut self, t: Token) {
        match self.tokens.get(&t).copied() {
            Some(Owner::Listener(id)) => self.accept(id),
            Some(Owner::Connecting(id)) => self.finish_connect(id),
            Some(Owner::Conn) => self.check_conn(t),
            None => {}
        }
    }

    /// What pipe halves asked for since the last turn.
    pub(crate) fn work(&mut self) {
        self.handle_ended();
        self.handle_reflush();
    }

    /// Due retries, flushes and lingers.
    pub(crate) fn timers(&mut self) {
        self.tick();
        self.end_lingering();
    }

    /// The context shuts down: drop every listener and connection, and finish once
    /// nothing lingers.
    pub(crate) fn shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// After shutdown: whether no connect lingers any more.
    pub(crate) fn finished(&self) -> bool {
        self.shutting_down
            && !self.connecters.values().any(|c| c.closing.is_some())
            && !self.conns.values().any(|c| c.closing.is_some())
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        for c in self.connecters.values() {
            match &c.state {
                ConnectState::Waiting(t) => at(*t),
                ConnectState::Connecting(_, _, since) => {
                    at(*since + c.options.ipc.handshake_timeout);
                    // Check now and then as well: a silent binder may never wake us.
                    at(now + c.options.reconnect_interval);
                }
                _ => {}
            }
        }
        if self.conns.values().any(|c| c.held_tx.is_some()) {
            at(now + FLUSH_RETRY);
        }
        for c in self.conns.values() {
            if let Some(Some(d)) = c.closing {
                at(d);
            }
        }
        if !self.accept_later.is_empty() {
            at(now + ACCEPT_RETRY);
        }
        for c in self.connecters.values() {
            if let Some(closing) = c.closing {
                // Check the queue now and then; end at the deadline.
                at(now + FLUSH_RETRY);
                if let Some(d) = closing {
                    at(d);
                }
            }
        }
        d
    }

    /// Owns and serves a bound listener.
    pub(crate) fn listen(
        &mut self,
        id: u64,
        listener: ShmListener,
        socket: Arc<SocketHandle>,
        options: Options,
    ) {
        let token = self.token();
        let fd = listener.as_raw_fd();
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            socket
                .monitors
                .emit(EventKind::BindFailed, listener.endpoint(), e.to_string());
            return;
        }
        self.tokens.insert(token, Owner::Listener(id));
        self.listeners.insert(
            id,
            ListenerEntry {
                listener,
                token,
                socket,
                options,
            },
        );
        // Peers may have connected between bind and registration.
        self.accept(id);
    }

    /// Connects (and keeps reconnecting) to `ipc://name[:port]`; the first attempt runs
    /// with the timers of this turn.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn connect(
        &mut self,
        id: u64,
        socket: Arc<SocketHandle>,
        uri: String,
        name: String,
        port: Option<u16>,
        options: Options,
        slot: Option<Arc<Slot>>,
    ) {
        self.connecters.insert(
            id,
            Connecter {
                socket,
                uri,
                name,
                port,
                slot,
                backoff: Backoff::new(&options),
                closing: None,
                options,
                state: ConnectState::Waiting(Instant::now()),
            },
        );
    }

    /// Stops listening (connections already made stay).
    pub(crate) fn unbind(&mut self, id: u64) {
        self.drop_listener(id);
    }

    /// Stops connecting and ends the connection.
    pub(crate) fn disconnect(&mut self, id: u64) {
        self.drop_connecter(id);
    }

    /// A socket closed: drop its listeners, connects and connections. Connects with
    /// messages queued for a connection not made yet linger: they go on until the
    /// queue is in a ring or `linger` passes.
    pub(crate) fn close_socket(&mut self, socket_id: u64, linger: Option<Duration>) {
        // Rings a writer handed back (with a message still going in pieces) count as
        // queued: take them in first.
        self.handle_reflush();
        let ls: Vec<u64> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.socket.id == socket_id)
            .map(|(id, _)| *id)
            .collect();
        for id in ls {
            self.drop_listener(id);
        }
        let cs: Vec<u64> = self
            .connecters
            .iter()
            .filter(|(_, c)| c.socket.id == socket_id)
            .map(|(id, _)| *id)
            .collect();
        for id in cs {
            if !self.linger(id, linger) {
                self.drop_connecter(id);
            }
        }
        let conns: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.socket.id == socket_id && !self.lingers(c))
            .map(|(t, _)| *t)
            .collect();
        for t in conns {
            // An accepted connection with something still to write lingers too.
            if let Some(c) = self.conns.get_mut(&t) {
                if c.connecter.is_none() && c.held_tx.is_some() && linger != Some(Duration::ZERO) {
                    c.closing = Some(linger.map(|l| Instant::now() + l));
                    lock(&c.slot.inner).lingering = true;
                    continue;
                }
            }
            self.drop_conn(t, None);
        }
    }

    /// Starts the linger of a closing socket's connect if it has queued messages and
    /// the linger time is not zero. Returns whether it lingers.
    fn linger(&mut self, id: u64, linger: Option<Duration>) -> bool {
        if linger == Some(Duration::ZERO) {
            return false;
        }
        let held = self.connecters.get(&id).is_some_and(|c| {
            matches!(c.state, ConnectState::Connected(t)
                if self.conns.get(&t).is_some_and(|conn| conn.held_tx.is_some()))
        });
        let Some(c) = self.connecters.get_mut(&id) else {
            return false;
        };
        let Some(slot) = &c.slot else {
            return false;
        };
        let mut inner = lock(&slot.inner);
        if inner.pending.is_empty() && !held {
            return false;
        }
        inner.lingering = true;
        drop(inner);
        c.closing = Some(linger.map(|l| Instant::now() + l));
        if matches!(c.state, ConnectState::Stopped) {
            c.state = ConnectState::Waiting(Instant::now());
        }
        true
    }

    /// Whether a connection belongs to a lingering connect.
    fn lingers(&self, c: &Conn) -> bool {
        c.closing.is_some()
            || c.connecter
                .and_then(|id| self.connecters.get(&id))
                .is_some_and(|k| k.closing.is_some())
    }

    /// Ends the lingering connects whose queue is in a ring, or whose time is over.
    fn end_lingering(&mut self) {
        let now = Instant::now();
        let done: Vec<u64> = self
            .connecters
            .iter()
            .filter(|(_, c)| {
                let Some(deadline) = c.closing else {
                    return false;
                };
                let queued = c
                    .slot
                    .as_ref()
                    .is_some_and(|s| !lock(&s.inner).pending.is_empty());
                let held = matches!(c.state, ConnectState::Connected(t)
                    if self.conns.get(&t).is_some_and(|conn| conn.held_tx.is_some()));
                !(queued || held) || deadline.is_some_and(|d| now >= d)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.drop_connecter(id);
        }
        let done: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.closing.is_some_and(|deadline| {
                    c.held_tx.is_none() || deadline.is_some_and(|d| now >= d)
                })
            })
            .map(|(t, _)| *t)
            .collect();
        for t in done {
            self.drop_conn(t, None);
        }
    }

    fn drop_listener(&mut self, id: u64) {
        if let Some(l) = self.listeners.remove(&id) {
            let fd = l.listener.as_raw_fd();
            let _ = self.registry.deregister(&mut SourceFd(&fd));
            self.tokens.remove(&l.token);
            l.socket
                .monitors
                .emit(EventKind::Closed, l.listener.endpoint(), "");
        }
    }

    fn drop_connecter(&mut self, id: u64) {
        let Some(c) = self.connecters.remove(&id) else {
            return;
        };
        match c.state {
            ConnectState::Connecting(t, pending, _) => {
                let fd = pending.as_raw_fd();
                let _ = self.registry.deregister(&mut SourceFd(&fd));
                self.tokens.remove(&t);
            }
            ConnectState::Connected(t) => self.drop_conn(t, None),
            _ => {}
        }
        if let Some(slot) = c.slot {
            let mut inner = lock(&slot.inner);
            inner.closed = true;
            inner.lingering = false;
            inner.pending.clear();
            drop(inner);
            slot.changed();
            c.socket.signal.notify();
        }
    }

    fn accept(&mut self, id: u64) {
        let mut errors = 0;
        loop {
            let Some(l) = self.listeners.get(&id) else {
                return;
            };
            match l.listener.accept() {
                Ok(None) => return,
                Ok(Some(conn)) => {
                    let (socket, endpoint, hwm, conflate, max_msg_size) = (
                        l.socket.clone(),
                        l.listener.endpoint().to_owned(),
                        l.options.send_hwm,
                        l.options.conflate,
                        l.options.max_msg_size,
                    );
                    socket.monitors.emit(
                        EventKind::Accepted,
                        &endpoint,
                        format!("pid {}", conn.peer.pid),
                    );
                    let slot = Slot::new(hwm, false);
                    let meta = PipeMeta {
                        routing_id: conn.peer.identity.clone(),
                        endpoint: endpoint.clone(),
                    };
                    let pipe = pipe_over(&slot, meta, conflate);
                    let to = Target {
                        slot: &slot,
                        socket: &socket,
                        endpoint: &endpoint,
                        connecter: None,
                        max_msg_size,
                    };
                    self.install(conn, to, Some(pipe));
                }
                Err(e) => {
                    let kind = refusal_kind(&e);
                    l.socket
                        .monitors
                        .emit(kind, l.listener.endpoint(), e.to_string());
                    tracing::debug!("ipc accept on {}: {e}", l.listener.endpoint());
                    errors += 1;
                    if errors >= MAX_ACCEPT_ERRORS {
                        // Something lasting (out of descriptors?): look again shortly
                        // instead of spinning here.
                        self.accept_later.push(id);
                        return;
                    }
                }
            }
        }
    }

    /// Starts watching a new connection and puts its rings into `slot`; returns its
    /// token, or `None` if the connection could not be watched (then it is dropped).
    fn install(
        &mut self,
        conn: ShmConnection,
        to: Target<'_>,
        deliver: Option<Pipe>,
    ) -> Option<Token> {
        let Target {
            slot,
            socket,
            endpoint,
            connecter,
            max_msg_size,
        } = to;
        let (mut tx, mut rx, peer, link) = conn.into_parts();
        rx.set_max_frame(max_msg_size);
        let token = self.token();
        let fd = link.control_fd();
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            tracing::error!("ipc: cannot watch the connection to {endpoint}: {e}");
            return None;
        }
        let state = Arc::new(ConnState {
            alive: AtomicBool::new(true),
            key: token,
            failure: Mutex::new(None),
            io: Arc::downgrade(&self.shared),
        });
        let held_tx = {
            let mut inner = lock(&slot.inner);
            inner.rx = Some((rx, state.clone()));
            inner.current = Some(state.clone());
            if inner.connected_before {
                let subs = inner.subs.clone();
                for m in subs.into_iter().rev() {
                    inner.pending.push_front(m);
                }
            }
            inner.connected_before = true;
            let flushed = flush(&mut tx, &mut inner.pending, socket, endpoint);
            let held = if flushed {
                inner.tx = Some((tx, state.clone()));
                None
            } else {
                Some(tx)
            };
            drop(inner);
            slot.changed();
            held
        };
        if let Some(p) = deliver {
            // Before the event: whoever waits for it finds the pipe attached.
            socket.deliver(super::next_pipe_id(), p);
        }
        socket.signal.notify();
        self.tokens.insert(token, Owner::Conn);
        socket.monitors.emit(
            EventKind::HandshakeSucceeded,
            endpoint,
            format!("pid {}", peer.pid),
        );
        self.conns.insert(
            token,
            Conn {
                link,
                state,
                slot: slot.clone(),
                socket: socket.clone(),
                peer,
                endpoint: endpoint.to_owned(),
                connecter,
                held_tx,
                closing: None,
            },
        );
        // The peer may have died before we registered.
        self.check_conn(token);
        Some(token)
    }

    fn tick(&mut self) {
        for id in std::mem::take(&mut self.accept_later) {
            self.accept(id);
        }
        let now = Instant::now();
        let due: Vec<u64> = self
            .connecters
            .iter()
            .filter(|(_, c)| match &c.state {
                ConnectState::Waiting(t) => *t <= now,
                ConnectState::Connecting(..) => true,
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let waiting = matches!(
                self.connecters.get(&id).map(|c| &c.state),
                Some(ConnectState::Waiting(_))
            );
            if waiting {
                self.start_connect(id);
            } else {
                self.finish_connect(id);
            }
        }
        // Flush queued messages into rings that were full.
        // (No list of them first: this runs every FLUSH_RETRY while a ring is held,
        // and allocated each time.)
        for c in self.conns.values_mut() {
            if let Some(mut tx) = c.held_tx.take() {
                let mut inner = lock(&c.slot.inner);
                if flush(&mut tx, &mut inner.pending, &c.socket, &c.endpoint) {
                    inner.tx = Some((tx, c.state.clone()));
                    drop(inner);
                    c.slot.changed();
                    c.socket.signal.notify();
                } else {
                    drop(inner);
                    c.held_tx = Some(tx);
                }
            }
        }
    }

    fn start_connect(&mut self, id: u64) {
        let Some(c) = self.connecters.get(&id) else {
            return;
        };
        // Made by `connect` already; this only fails if that failed.
        let r = match c.socket.signal.shared_doorbell() {
            Ok(bell) => {
                shm::connect_start(&c.name, c.port, &c.options.ipc, hello(&c.options), bell)
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(None) => self.retry_later(id, "nobody is bound yet".into()),
            Ok(Some(pending)) => {
                let token = self.token();
                let fd = pending.as_raw_fd();
                if let Err(e) =
                    self.registry
                        .register(&mut SourceFd(&fd), token, Interest::READABLE)
                {
                    self.retry_later(id, e.to_string());
                    return;
                }
                self.tokens.insert(token, Owner::Connecting(id));
                if let Some(c) = self.connecters.get_mut(&id) {
                    c.state = ConnectState::Connecting(token, Box::new(pending), Instant::now());
                }
                self.finish_connect(id);
            }
            Err(e) => self.connect_failed(id, e),
        }
    }

    fn retry_later(&mut self, id: u64, why: String) {
        if let Some(c) = self.connecters.get_mut(&id) {
            // Failed attempts back off up to the maximum interval, if one is set.
            let at = c.backoff.retry(&c.options, &c.socket, &c.uri, &why);
            c.state = ConnectState::Waiting(at);
        }
    }

    fn connect_failed(&mut self, id: u64, e: Error) {
        match e {
            Error::PeerRejected(_) | Error::InvalidArgument(_) | Error::Endpoint { .. } => {
                if let Some(c) = self.connecters.get_mut(&id) {
                    c.state = ConnectState::Stopped;
                    c.socket.monitors.emit(
                        refusal_kind(&e),
                        &c.uri,
                        format!("{e}; not reconnecting"),
                    );
                }
            }
            other => self.retry_later(id, other.to_string()),
        }
    }

    fn finish_connect(&mut self, id: u64) {
        let Some(c) = self.connecters.get_mut(&id) else {
            return;
        };
        let ConnectState::Connecting(token, pending, since) = &mut c.state else {
            return;
        };
        let (token, since) = (*token, *since);
        // The descriptor becomes the connection's control socket: take its number
        // before `try_finish` consumes it.
        let fd = pending.as_raw_fd();
        let r = pending.try_finish();
        let timed_out = matches!(r, Ok(None)) && since.elapsed() >= c.options.ipc.handshake_timeout;
        if matches!(r, Ok(None)) && !timed_out {
            return;
        }
        // Spent: stop watching its descriptor (a connection re-registers it).
        if fd >= 0 {
            let _ = self.registry.deregister(&mut SourceFd(&fd));
        }
        self.tokens.remove(&token);
        match r {
            Ok(Some(conn)) => {
                let socket = c.socket.clone();
                let uri = c.uri.clone();
                let (slot, deliver) = match &c.slot {
                    Some(s) => (s.clone(), None),
                    None => {
                        let s = Slot::new(c.options.send_hwm, false);
                        let meta = PipeMeta {
                            routing_id: conn.peer.identity.clone(),
                            endpoint: uri.clone(),
                        };
                        (s.clone(), Some(pipe_over(&s, meta, c.options.conflate)))
                    }
                };
                socket
                    .monitors
                    .emit(EventKind::Connected, &uri, format!("pid {}", conn.peer.pid));
                c.state = ConnectState::Stopped;
                let to = Target {
                    slot: &slot,
                    socket: &socket,
                    endpoint: &uri,
                    connecter: Some(id),
                    max_msg_size: c.options.max_msg_size,
                };
                if let Some(t) = self.install(conn, to, deliver) {
                    if let Some(c) = self.connecters.get_mut(&id) {
                        c.state = ConnectState::Connected(t);
                        c.backoff.reset(&c.options);
                    }
                    // `install` may already have seen the peer die.
                    if !self.conns.contains_key(&t) {
                        if let Some(c) = self.connecters.get_mut(&id) {
                            if matches!(c.state, ConnectState::Connected(_)) {
                                c.state = ConnectState::Waiting(
                                    Instant::now() + c.options.reconnect_interval,
                                );
                            }
                        }
                    }
                } else {
                    self.retry_later(id, "cannot watch the connection".into());
                }
            }
            Ok(None) => self.retry_later(id, "the binder did not answer in time".into()),
            Err(e) => self.connect_failed(id, e),
        }
    }

    /// The control socket of a connection is readable: the peer is gone (or sent
    /// something it should not have; both end the connection).
    fn check_conn(&mut self, t: Token) {
        let Some(c) = self.conns.get(&t) else {
            return;
        };
        if c.link.peer_alive() {
            return;
        }
        self.drop_conn(t, Some(()));
    }

    /// Connections a pipe half ended.
    fn handle_ended(&mut self) {
        let ended = std::mem::take(&mut *lock(&self.shared.ended));
        for t in ended {
            self.drop_conn(t, None);
        }
    }

    /// Rings writers handed back so that queued control messages go first.
    fn handle_reflush(&mut self) {
        let mut back = std::mem::take(&mut self.reflush_spare);
        std::mem::swap(&mut back, &mut *lock(&self.shared.reflush));
        for (slot, tx, state) in back.drain(..) {
            let Some(slot) = slot.upgrade() else { continue };
            if let Some(c) = self.conns.get_mut(&state.key) {
                if Arc::ptr_eq(&c.state, &state) && Arc::ptr_eq(&c.slot, &slot) {
                    c.held_tx = Some(tx);
                }
            }
        }
        self.reflush_spare = back;
    }

    /// Ends a connection: `peer_gone` when its control socket hung up.
    fn drop_conn(&mut self, t: Token, peer_gone: Option<()>) {
        let Some(c) = self.conns.remove(&t) else {
            return;
        };
        self.tokens.remove(&t);
        let fd = c.link.control_fd();
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        c.state.alive.store(false, Ordering::Release);
        let failure = lock(&c.state.failure).take();
        let pid = c.peer.pid;
        // Read before our own goodbye and close (dropping the link below).
        let crashed = peer_gone.is_some() && !c.link.peer_said_goodbye();
        let (event, reconnect) = match (failure, peer_gone) {
            (Some(Failure::Protocol(why)), _) => (
                Some((
                    EventKind::ProtocolError,
                    format!("pid {pid}: {why}; connection dropped"),
                )),
                true,
            ),
            (Some(Failure::Released), _) | (None, None) => (None, false),
            (None, Some(())) => (Some((EventKind::Disconnected, format!("pid {pid}"))), true),
        };
        {
            let mut inner = lock(&c.slot.inner);
            inner.current = None;
            if let Some((_, s)) = &inner.tx {
                if Arc::ptr_eq(s, &c.state) {
                    inner.tx = None;
                }
            }
            if c.connecter.is_none() || !self.keeps_pipe(c.connecter) {
                inner.closed = true;
            }
        }
        c.slot.changed();
        drop(c.link);
        drop(c.held_tx);
        // Reported after the descriptors are closed (what a watcher counts is final).
        if let Some((kind, detail)) = event {
            if kind == EventKind::Disconnected && crashed {
                c.socket
                    .monitors
                    .emit(EventKind::PeerCrashed, &c.endpoint, format!("pid {pid}"));
            }
            c.socket.monitors.emit(kind, &c.endpoint, detail);
        }
        c.socket.signal.notify();
        if let Some(id) = c.connecter {
            if reconnect {
                if let Some(k) = self.connecters.get_mut(&id) {
                    if matches!(k.state, ConnectState::Connected(x) if x == t) {
                        let at = k
                            .backoff
                            .retry(&k.options, &k.socket, &k.uri, "connection lost");
                        k.state = ConnectState::Waiting(at);
                    }
                }
            } else if let Some(k) = self.connecters.get_mut(&id) {
                if matches!(k.state, ConnectState::Connected(x) if x == t) {
                    k.state = ConnectState::Stopped;
                }
            }
        }
    }

    fn keeps_pipe(&self, connecter: Option<u64>) -> bool {
        connecter
            .and_then(|id| self.connecters.get(&id))
            .is_some_and(|c| c.slot.is_some())
    }
}

/// Writes queued messages into a ring, oldest first (after the pieces of one going in
/// pieces); true once none is left, nor any piece. A message that can never fit the ring is dropped and reported on `socket`'s monitors
/// (`message-dropped`, see the module docs).
fn flush(
    tx: &mut RingWriter,
    pending: &mut VecDeque<Message>,
    socket: &SocketHandle,
    endpoint: &str,
) -> bool {
    // Bounded: every turn takes a message off the queue or returns.
    loop {
        let Some(m) = pending.front() else {
            // The last message may still be going in pieces.
            return match tx.continue_pieces() {
                Ok(true) => true,
                Ok(false) => {
                    tx.arm_space_notification();
                    false
                }
                Err(e) => {
                    tracing::warn!("ipc: the ring failed while flushing: {e}");
                    false
                }
            };
        };
        match tx.try_send(m) {
            Ok(()) => {}
            Err(ShmSendError::Full) => {
                tx.arm_space_notification();
                return false;
            }
            Err(e @ (ShmSendError::TooLarge { .. } | ShmSendError::Empty)) => {
                let size: usize = m.frames().iter().map(|f| f.len()).sum();
                let what = if matches!(e, ShmSendError::Empty) {
                    "an empty message: a message needs at least one frame".to_owned()
                } else {
                    format!(
                        "{size} bytes in {} frame(s): larger than the peer's ring of {} bytes \
                         (at most {} bytes per message)",
                        m.frames().len(),
                        tx.capacity(),
                        tx.max_message_size()
                    )
                };
                tracing::warn!("ipc: dropping a queued message for {endpoint}: {what}");
                socket.monitors.emit(
                    EventKind::MessageDropped,
                    endpoint,
                    format!("queued message dropped, {what}"),
                );
            }
            Err(e) => {
                tracing::warn!("ipc: the ring failed while flushing: {e}");
                return false;
            }
        }
        pending.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_larger_than_the_ring_goes_in_pieces_and_nothing_overtakes_it() {
        // A writer over a 4 KiB ring, no background thread: the writer drives the
        // pieces while a reader thread drains the ring.
        let slot = Slot::new(10, true);
        let (tx, mut rx) = shm::segment::heap_ring(4096);
        let state = Arc::new(ConnState {
            alive: AtomicBool::new(true),
            key: Token(1),
            failure: Mutex::new(None),
            io: Weak::new(),
        });
        lock(&slot.inner).tx = Some((tx, state));
        slot.changed();
        let mut w = IpcWriter {
            slot: slot.clone(),
            version: 0,
            tx: None,
        };
        let big = Message::from_frames([
            (0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>(),
            vec![],
            vec![5u8; 9000],
        ]);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while got.len() < 3 && Instant::now() < deadline {
                match rx.try_recv().unwrap() {
                    Some(m) => got.push(m),
                    None => std::thread::yield_now(),
                }
            }
            got
        });
        w.try_write(Message::from("first")).unwrap();
        w.try_write(big.clone()).unwrap();
        // Whatever the writer did not finish within its spin, the next write finishes
        // first (here, without a background thread, it keeps the ring).
        loop {
            match w.try_write(Message::from("last")) {
                Ok(()) => break,
                Err(WriteError::Full(_)) => std::thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 3, "watchdog: the reader gave up");
        assert_eq!(got[0], Message::from("first"));
        assert_eq!(got[1], big);
        assert_eq!(got[2], Message::from("last"));
        match w.try_write(Message::new()) {
            Err(WriteError::Unsendable(m, Error::InvalidArgument(_))) => assert!(m.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
