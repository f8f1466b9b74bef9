//! Transports, and the **pipe contract** every one of them implements.
//!
//! A *pipe* connects one socket to one peer. From the socket's side it has two halves:
//! a [`PipeWriter`] (messages to the peer) and a [`PipeReader`] (messages from the peer).
//! The pattern code (`crate::pattern`) only ever sees these two traits, so a transport
//! is added by implementing them; nothing in the patterns changes. Today there are:
//!
//! - in-memory queues (`queue_pair`): used for `inproc://` (socket to socket) and for
//!   stream transports (socket to the I/O thread, which speaks ZMTP to the network);
//! - shared-memory rings (`transport/shm`, written separately), where the application
//!   thread writes straight into the ring.
//!
//! # The contract
//!
//! Writer:
//! - [`PipeWriter::try_write`] queues a whole message (all frames) or hands it back:
//!   [`WriteError::Full`] when the pipe holds its high-water mark of messages (the caller
//!   drops or waits, depending on the socket type), [`WriteError::Closed`] when the peer
//!   is gone for good (the caller writes to the pipe no more, and reads what its reader
//!   still holds before it drops it).
//! - [`PipeWriter::write_control`] queues a control message (a subscription) ignoring
//!   the high-water mark: subscriptions are never dropped.
//! - [`PipeWriter::is_writable`]: whether `try_write` would succeed now (used by poll).
//!
//! Reader:
//! - [`PipeReader::try_read`] returns `Ok(Some(msg))`, `Ok(None)` when nothing is queued
//!   now, or `Err(PipeClosed)` once the peer closed *and* every queued message was read.
//!
//! Wake-ups: every socket owns exactly one [`Signal`]. A pipe must ring the reading
//! socket's signal (through [`Notify::notify`]) when a message arrives in an empty pipe
//! and when the pipe closes, and ring the writing socket's signal when a full pipe drops
//! below its high-water mark and when the pipe closes. A socket waits with
//! [`Signal::wait_until`]:
//!
//! ```text
//! signal.wait_until(spin, deadline, || try_everything())
//!   // try; spin trying for `spin`; then: announce "parking", try once more, park
//! ```
//!
//! Because the waiter announces itself before its last look at the pipes, and a
//! notifier publishes before it checks for announced waiters, a wake-up that happens in
//! between is never lost. The signal is a futex word in shared memory
//! ([`shm::Doorbell`]), so shared-memory peers in other processes ring the very same
//! signal: `recv` waits on all of a socket's peers, whatever their transport, at once.

//! Threads: a pipe half is owned by one thread at a time (the socket's user or the
//! background thread). The queue between the halves is protected by a mutex; the
//! signals are `Sync`.
//!
//! # The control contract
//!
//! A transport is one module reached through [`TABLE`], keyed by the endpoint's URI
//! scheme. The socket never matches on the scheme: it looks its endpoint up in the
//! table and calls [`Transport::bind`] or [`Transport::connect`] with a [`Request`],
//! which carries everything a transport may know of the socket: its [`SocketHandle`]
//! (id, type, signal, mailbox, monitors, limits), a copy of its options, and the
//! context's [`Hub`] (the one background thread, the inproc names, the shared TCP
//! ports). The answer is an [`Attachment`]: the endpoint actually used, the pipes to
//! attach now, and an [`Attached`] handle that undoes it ([`Attached::detach`]: unbind
//! or disconnect). Closing a socket, with its linger, is one call on the hub
//! ([`Hub::close_socket`]), which every transport's state hears.
//!
//! Adding a transport is one module that implements [`Transport`], one line in
//! [`TABLE`], and its URI in `crate::endpoint`. No transport names `crate::socket` or
//! `crate::context`; those two are above this layer.

pub(crate) mod dns;
pub mod fd;
pub(crate) mod hub;
pub(crate) mod inproc;
pub(crate) mod ipc;
pub(crate) mod ipc_engine;
pub(crate) mod reactor;
pub(crate) mod reconnect;
pub mod shm;
pub(crate) mod spsc;
pub(crate) mod spsc_pipe;
pub(crate) mod stream;
pub(crate) mod stream_engine;
pub(crate) mod tcp;
pub(crate) mod waiter;
pub(crate) mod wakers;

pub(crate) use hub::Hub;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::monitor::Monitors;
use crate::options::Options;
use crate::{Endpoint, Error, Message, Result, SocketType};

/// Identifies a pipe; unique within the process (also the background thread's key).
pub(crate) type PipeId = u64;

/// A process-wide unique id (pipes, binds, connects).
pub(crate) fn next_pipe_id() -> PipeId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------
// The control contract.

/// One transport's control path (see the module docs).
pub(crate) trait Transport: Sync {
    /// Binds `req.endpoint`. Errors name the URI.
    fn bind(&self, req: &Request<'_>) -> Result<Attachment>;
    /// Connects to `req.endpoint`; returns at once, the connection is made (and
    /// remade) in the background.
    fn connect(&self, req: &Request<'_>) -> Result<Attachment>;
}

/// The transports, by URI scheme.
pub(crate) static TABLE: &[(&str, &dyn Transport)] = &[
    ("inproc", &inproc::Inproc),
    ("tcp", &tcp::StreamTransport),
    ("unix", &tcp::StreamTransport),
    ("ipc", &ipc::Ipc),
    ("fd", &fd::FdTransport),
    ("systemd", &fd::FdTransport),
];

/// The transport serving `ep`, or an error naming the URI.
pub(crate) fn transport_for(uri: &str, ep: &Endpoint) -> Result<&'static dyn Transport> {
    let scheme = ep.scheme();
    TABLE
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            Error::endpoint(uri, format!("the {scheme} transport is not available here"))
        })
}

/// What a bind or connect is asked with.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// The URI as the user wrote it.
    pub uri: &'a str,
    pub endpoint: &'a Endpoint,
    pub socket: &'a Arc<SocketHandle>,
    /// The socket's options now (a copy is kept by whatever needs them later).
    pub options: &'a Options,
    pub hub: &'a Hub,
}

/// The result of a bind or connect.
#[derive(Debug)]
pub(crate) struct Attachment {
    /// The endpoint actually bound (`tcp://*:0` -> the port picked) or connected.
    pub endpoint: String,
    /// Pipes for the socket to attach now.
    pub pipes: Vec<(PipeId, Pipe)>,
    /// Undoes the bind or connect.
    pub handle: Box<dyn Attached>,
}

/// A live bind or connect, held by the socket.
pub(crate) trait Attached: Send + fmt::Debug {
    /// Unbinds or disconnects. Returns the pipes the socket must detach (a connect's
    /// own pipe); pipes of the background thread close by themselves.
    fn detach(self: Box<Self>, hub: &Hub, socket: &Arc<SocketHandle>) -> Vec<PipeId>;
}

/// What a transport may touch of a socket: shared by the socket's user thread, the
/// background thread and inproc peers.
#[derive(Debug)]
pub(crate) struct SocketHandle {
    /// Unique within the process.
    pub id: u64,
    pub socket_type: SocketType,
    /// Rung by every source of work for this socket.
    pub signal: Arc<Signal>,
    /// Pipes delivered by the background thread or inproc peers, for the user thread to
    /// attach. `None` once the socket is closed: pipes delivered then are dropped
    /// (closed) at once.
    mailbox: Mutex<Option<Vec<(PipeId, Pipe)>>>,
    /// Set after a pipe is put in the mailbox, so the hot path skips its lock.
    has_mail: AtomicBool,
    pub monitors: Monitors,
    /// Limits that transports put on what the socket sends.
    pub limits: Limits,
    /// How many times the socket was asked to receive (by its one user thread): a
    /// pipe it writes compares it between writes to tell a stream of sends from a
    /// request/reply exchange ([`spsc_pipe`]'s arena).
    pub recv_calls: Arc<AtomicU64>,
    /// REQ resend and REP de-duplication counters (written by the pattern, read by
    /// `Socket::reqrep_stats` and introspection).
    pub reqrep: Arc<crate::reliable::ReqRepCounters>,
}

/// What transports tell the socket about sending and waiting, without the socket
/// knowing which transport said it.
#[derive(Debug)]
pub(crate) struct Limits {
    /// Whether a waiting call should spin before it parks (a shared-memory or inproc
    /// peer may answer in well under a microsecond).
    pub spin: AtomicBool,
}

impl SocketHandle {
    /// A new handle for a socket of `socket_type`.
    pub(crate) fn new(socket_type: SocketType) -> SocketHandle {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SocketHandle {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            socket_type,
            signal: Arc::new(Signal::new()),
            mailbox: Mutex::new(Some(Vec::new())),
            has_mail: AtomicBool::new(false),
            monitors: Monitors::default(),
            limits: Limits {
                spin: AtomicBool::new(false),
            },
            recv_calls: Arc::new(AtomicU64::new(0)),
            reqrep: Arc::default(),
        }
    }

    /// Records a receive call (see [`SocketHandle::recv_calls`]). Only the socket's
    /// user thread calls this, under the socket's lock: a load and a store suffice.
    #[inline]
    pub(crate) fn note_recv_call(&self) {
        let n = self.recv_calls.load(Ordering::Relaxed);
        self.recv_calls.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// This socket's entry in an introspection table (for `lwmq ls`), made on first use.
    pub(crate) fn info_entry<'a>(
        infos: &'a mut std::collections::HashMap<u64, crate::introspect::SocketInfo>,
        s: &SocketHandle,
    ) -> &'a mut crate::introspect::SocketInfo {
        infos
            .entry(s.id)
            .or_insert_with(|| crate::introspect::SocketInfo {
                id: s.id,
                socket_type: s.socket_type.as_str().to_owned(),
                ..Default::default()
            })
    }

    /// Hands a new pipe to the socket and wakes it.
    pub(crate) fn deliver(&self, id: PipeId, pipe: Pipe) {
        match lock(&self.mailbox).as_mut() {
            Some(m) => m.push((id, pipe)),
            // Closed: dropping the pipe closes it, and its peer sees that.
            None => return,
        }
        self.has_mail.store(true, Ordering::Release);
        self.signal.notify();
    }

    /// Whether pipes may be waiting in the mailbox (one plain load, for the hot path:
    /// [`take_mail`](Self::take_mail) takes them).
    #[inline]
    pub(crate) fn has_mail(&self) -> bool {
        self.has_mail.load(Ordering::Relaxed)
    }

    /// The pipes delivered since the last call (the socket's user thread only). A
    /// plain load first: the hot path does no read-modify-write.
    pub(crate) fn take_mail(&self) -> Vec<(PipeId, Pipe)> {
        if !self.has_mail() || !self.has_mail.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        lock(&self.mailbox)
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Closes the mailbox: pipes delivered from now on are closed at once. Returns
    /// those waiting in it (the caller drops them, which closes them).
    pub(crate) fn close_mailbox(&self) -> Option<Vec<(PipeId, Pipe)>> {
        lock(&self.mailbox).take()
    }

    /// How long a waiting call of this socket spins before it parks.
    #[inline]
    pub(crate) fn spin(&self, options: &Options) -> Duration {
        if self.limits.spin.load(Ordering::Relaxed) {
            options.ipc.spin
        } else {
            Duration::ZERO
        }
    }
}

/// Something that can be told "look at your pipes again". Implemented by [`Signal`]
/// (a socket's wake-up) and by the I/O thread's per-pipe waker.
pub trait Notify: Send + Sync {
    /// Rings. Must not block for long and must be safe to call from any thread.
    fn notify(&self);
}

/// The one wake-up object of a socket: a [`shm::Doorbell`] (a futex word) that every
/// source of work rings: the I/O thread, inproc peers, and, once the socket uses
/// `ipc://`, shared-memory peers in other processes, which map the same page. Waiting
/// spins for a while, then parks on the futex (see [`Signal::wait_until`]).
///
/// A socket starts with a doorbell in private memory; its first `ipc://` bind or
/// connect makes the shared one ([`Signal::shared_doorbell`], a sealed memory file),
/// which waiters use from then on. Notifiers of this process ring both, so a waiter on
/// either never misses them. (A socket's own waits hold its lock, as do bind and
/// connect, so they never straddle the switch; a poller re-reads the doorbell it parks
/// on at least every [`shm::wait::MAX_PARK`].) Sockets that never use `ipc://` cost no
/// descriptor.
///
/// Observers (used by [`crate::poll()`]) are rung along with the signal by notifiers of
/// this process (shared-memory peers only ring the doorbell), and so are the wakers of
/// the futures that wait on the socket ([`wakers`]; for shared-memory peers the
/// context's doorbell watcher, [`waiter`], parks on the doorbell in their place).
pub struct Signal {
    local: shm::Doorbell,
    shared: std::sync::OnceLock<shm::Doorbell>,
    observers: Mutex<Vec<(u64, Arc<dyn Notify>)>>,
    /// `observers.len()`, readable without the lock (the hot path only reads this).
    observed: AtomicUsize,
    /// The wakers of the futures waiting on this signal.
    pub(crate) wakers: wakers::Wakers,
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal").field("bell", self.bell()).finish()
    }
}

impl Default for Signal {
    fn default() -> Self {
        Signal::new()
    }
}

/// Locks `m`, ignoring poison. Every lock in the crate guards data that is consistent
/// after each statement of its critical sections (counters, queues, tables), so a panic
/// elsewhere while one was held leaves nothing half-done: a poisoned lock is still usable.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Signal {
    /// A new signal (private memory until [`Signal::shared_doorbell`] is called).
    pub fn new() -> Signal {
        Signal {
            local: shm::Doorbell::on_heap(),
            shared: std::sync::OnceLock::new(),
            observers: Mutex::new(Vec::new()),
            observed: AtomicUsize::new(0),
            wakers: wakers::Wakers::default(),
        }
    }

    /// The shared-memory doorbell, once the socket uses `ipc://` (what peers in other
    /// processes, and ring writers of this one, ring instead of calling
    /// [`Notify::notify`]).
    pub(crate) fn shared_bell(&self) -> Option<&shm::Doorbell> {
        self.shared.get()
    }

    /// The doorbell waiters park on now.
    fn bell(&self) -> &shm::Doorbell {
        self.shared.get().unwrap_or(&self.local)
    }

    /// The doorbell to give to shared-memory peers, made (a sealed memory file) on
    /// first use. Call with the socket's lock held (see the type's docs).
    pub fn shared_doorbell(&self) -> crate::Result<&shm::Doorbell> {
        if let Some(b) = self.shared.get() {
            return Ok(b);
        }
        let bell = shm::Doorbell::new()?;
        Ok(self.shared.get_or_init(|| bell))
    }

    /// Calls `ready` until it returns `Some` (spinning for `spin`, then parking until
    /// rung) or `deadline` passes (`None`). No ring is lost: a waiter announces itself
    /// and calls `ready` once more before it parks (see [`shm::wait`]).
    pub fn wait_until<T>(
        &self,
        spin: Duration,
        deadline: Option<Instant>,
        ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        self.bell().wait_until(spin, deadline, ready)
    }

    /// As [`Signal::wait_until`], for a caller that has just read the clock (`now`).
    pub(crate) fn wait_from<T>(
        &self,
        now: Instant,
        spin: Duration,
        deadline: Option<Instant>,
        ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        self.bell().wait_from(now, spin, deadline, ready)
    }

    /// As [`Signal::wait_until`], parked on several signals at once (any ring wakes).
    pub(crate) fn wait_any<T>(
        signals: &[&Signal],
        spin: Duration,
        deadline: Option<Instant>,
        ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let bells: Vec<&shm::Doorbell> = signals.iter().map(|s| s.bell()).collect();
        shm::wait::wait_any(&bells, spin, deadline, ready)
    }

    /// Adds an observer rung with this signal; returns a key for [`Signal::unobserve`].
    pub(crate) fn observe(&self, key: u64, n: Arc<dyn Notify>) {
        let mut o = lock(&self.observers);
        o.push((key, n));
        self.observed.store(o.len(), Ordering::SeqCst);
    }

    /// Removes the observers added with `key`.
    pub(crate) fn unobserve(&self, key: u64) {
        let mut o = lock(&self.observers);
        o.retain(|(k, _)| *k != key);
        self.observed.store(o.len(), Ordering::SeqCst);
    }
}

impl Notify for Signal {
    fn notify(&self) {
        self.local.notify();
        if let Some(shared) = self.shared.get() {
            shared.notify();
        }
        // `local.notify()` ran a SeqCst fence after whatever the caller published:
        // the wakers' handshake needs no fence of its own (see `wakers`).
        self.wakers.wake_after_fence();
        // SeqCst pairs with the store in `observe`: a poller that registered before
        // looking at this socket is seen here.
        if self.observed.load(Ordering::SeqCst) == 0 {
            return;
        }
        let observers: Vec<Arc<dyn Notify>> = lock(&self.observers)
            .iter()
            .map(|(_, n)| n.clone())
            .collect();
        for o in observers {
            o.notify();
        }
    }
}

// ---------------------------------------------------------------------------------
// Subscriptions inside the process.

/// A subscription control message: `0x01 topic` or `0x00 topic`.
pub(crate) fn control(subscribe: bool, topic: &[u8]) -> Message {
    use bytes::BufMut as _;
    let mut b = bytes::BytesMut::with_capacity(topic.len() + 1);
    b.put_u8(u8::from(subscribe));
    b.put_slice(topic);
    Message::from(b.freeze())
}

/// Parses a subscription control message.
pub(crate) fn parse_control(msg: &Message) -> Option<(bool, Bytes)> {
    let first = msg.frames().first()?;
    match first.first() {
        Some(1) => Some((true, first.slice(1..))),
        Some(0) => Some((false, first.slice(1..))),
        _ => None,
    }
}

/// Why a write did not happen; the message is handed back.
#[derive(Debug)]
pub enum WriteError {
    /// The pipe holds its high-water mark of messages.
    Full(Message),
    /// The peer is gone; the pipe will never take a message again.
    Closed(Message),
    /// This pipe can never take this message (larger than its shared-memory ring, or
    /// empty); the error says why. The caller fails the send with it.
    Unsendable(Message, crate::Error),
}

/// The pipe is closed and empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeClosed;

/// The sending half of a pipe (see the module docs for the contract).
pub trait PipeWriter: Send + fmt::Debug {
    /// Queues a message or hands it back.
    fn try_write(&mut self, msg: Message) -> Result<(), WriteError>;
    /// Queues a control message (a subscription) regardless of the high-water mark.
    fn write_control(&mut self, msg: Message) -> Result<(), WriteError>;
    /// As [`try_write`](PipeWriter::try_write), but the reader may not see the message
    /// (nor be woken for it) until [`flush`](PipeWriter::flush): a writer with many
    /// messages at hand (an engine that decoded a whole read) pays the publish and the
    /// wake-up once per batch. The default writes at once.
    fn write_deferred(&mut self, msg: Message) -> Result<(), WriteError> {
        self.try_write(msg)
    }
    /// Makes every deferred write visible and wakes the reader for them. A writer that
    /// used [`write_deferred`](PipeWriter::write_deferred) calls it before it waits or
    /// turns to other work.
    fn flush(&mut self) {}
    /// Whether `try_write` would succeed now.
    fn is_writable(&self) -> bool;
    /// Whether the peer is gone.
    fn is_closed(&self) -> bool;
    /// Closes this direction; messages already queued are still delivered.
    fn close(&mut self);
    /// Writes a one-frame message of `len` bytes that `fill` writes in place (the
    /// zero-copy send of shared-memory rings). Transports without it answer
    /// [`InPlace::Unsupported`] (the caller then builds a message).
    fn write_in_place(
        &mut self,
        _len: usize,
        _fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<InPlace, PipeClosed> {
        Ok(InPlace::Unsupported)
    }
}

/// The outcome of [`PipeWriter::write_in_place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlace {
    /// Written (the fill function ran once).
    Written,
    /// No room now (the fill function did not run).
    Full,
    /// This pipe cannot write in place now (the fill function did not run).
    Unsupported,
}

/// The receiving half of a pipe (see the module docs for the contract).
pub trait PipeReader: Send + fmt::Debug {
    /// The next message, `Ok(None)` if none is queued now, `Err` once closed and drained.
    fn try_read(&mut self) -> Result<Option<Message>, PipeClosed>;
    /// Closes this direction; queued messages are discarded and the writer sees Closed.
    fn close(&mut self);
    /// Whether the pipe is closed and drained: [`try_read`](PipeReader::try_read)
    /// would only say [`PipeClosed`]. Lets a socket drop dead pipes it has no reason to
    /// read (the default: `false`, they are found when read).
    fn is_finished(&mut self) -> bool {
        false
    }
    /// Whether no message is waiting now (the writer may still write more).
    fn is_empty(&mut self) -> bool;
    /// Gives back a frame of a message read from this pipe that the reader is done
    /// with, so that the writer's thread can free it (a thread that frees what it
    /// allocated hits its allocator's cache; one that frees another's does not). The
    /// default drops it here.
    fn recycle(&mut self, frame: bytes::Bytes) {
        drop(frame);
    }
    /// Passes the next message to `f` if there is one (`Ok(true)`), in place where
    /// the transport can (shared-memory rings); the default borrows [`try_read`]'s
    /// message.
    ///
    /// [`try_read`]: PipeReader::try_read
    fn read_with(&mut self, f: &mut dyn FnMut(&crate::Frames<'_>)) -> Result<bool, PipeClosed> {
        match self.try_read()? {
            Some(m) => {
                f(&crate::Frames::message(&m));
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// What a socket knows about the peer at the other end of a pipe.
#[derive(Debug, Clone)]
pub struct PipeMeta {
    /// The routing id the peer announced (empty if none).
    pub routing_id: Bytes,
    /// The endpoint the pipe belongs to (for disconnect/unbind and logs).
    pub endpoint: String,
}

/// A pipe as a socket holds it: both halves and what is known about the peer.
#[derive(Debug)]
pub struct Pipe {
    /// Messages to the peer.
    pub writer: Box<dyn PipeWriter>,
    /// Messages from the peer.
    pub reader: Box<dyn PipeReader>,
    /// The peer.
    pub meta: PipeMeta,
}

// ---------------------------------------------------------------------------------
// In-memory queue pipes.

/// How a queue behaves when written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueConfig {
    /// Most messages held (0: unlimited).
    pub hwm: usize,
    /// Keep only the newest message.
    pub conflate: bool,
}

struct QueueState {
    buf: VecDeque<Message>,
    writer_closed: bool,
    reader_closed: bool,
}

/// One direction of an in-memory pipe. `reader_notify` is rung when data arrives in an
/// empty queue or the writer closes; `writer_notify` when room appears below the HWM or
/// the reader closes.
struct Queue {
    state: Mutex<QueueState>,
    config: QueueConfig,
    reader_notify: Arc<dyn Notify>,
    writer_notify: Arc<dyn Notify>,
}

impl Queue {
    fn full(&self, st: &QueueState) -> bool {
        !self.config.conflate && self.config.hwm != 0 && st.buf.len() >= self.config.hwm
    }

    fn write(&self, msg: Message, control: bool) -> Result<(), WriteError> {
        let was_empty;
        {
            let mut st = lock(&self.state);
            if st.reader_closed || st.writer_closed {
                return Err(WriteError::Closed(msg));
            }
            if !control && self.full(&st) {
                return Err(WriteError::Full(msg));
            }
            if self.config.conflate && !control {
                st.buf.retain(|_| false);
            }
            was_empty = st.buf.is_empty();
            st.buf.push_back(msg);
        }
        if was_empty || self.config.conflate {
            self.reader_notify.notify();
        }
        Ok(())
    }
}

/// The writing half of an in-memory queue.
pub(crate) struct QueueWriter(Arc<Queue>);
/// The reading half of an in-memory queue.
pub(crate) struct QueueReader(Arc<Queue>);

impl fmt::Debug for QueueWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueWriter")
            .field("config", &self.0.config)
            .finish()
    }
}
impl fmt::Debug for QueueReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueReader")
            .field("config", &self.0.config)
            .finish()
    }
}

impl PipeWriter for QueueWriter {
    fn try_write(&mut self, msg: Message) -> Result<(), WriteError> {
        self.0.write(msg, false)
    }
    fn write_control(&mut self, msg: Message) -> Result<(), WriteError> {
        self.0.write(msg, true)
    }
    fn is_writable(&self) -> bool {
        let st = lock(&self.0.state);
        !st.reader_closed && !st.writer_closed && !self.0.full(&st)
    }
    fn is_closed(&self) -> bool {
        lock(&self.0.state).reader_closed
    }
    fn close(&mut self) {
        {
            let mut st = lock(&self.0.state);
            if st.writer_closed {
                return;
            }
            st.writer_closed = true;
        }
        self.0.reader_notify.notify();
    }
}

impl Drop for QueueWriter {
    fn drop(&mut self) {
        self.close();
    }
}

impl PipeReader for QueueReader {
    fn try_read(&mut self) -> Result<Option<Message>, PipeClosed> {
        let (msg, wake_writer) = {
            let mut st = lock(&self.0.state);
            let was_full = self.0.full(&st);
            match st.buf.pop_front() {
                Some(m) => (m, was_full),
                None if st.writer_closed || st.reader_closed => return Err(PipeClosed),
                None => return Ok(None),
            }
        };
        if wake_writer {
            self.0.writer_notify.notify();
        }
        Ok(Some(msg))
    }
    fn is_finished(&mut self) -> bool {
        self.finished()
    }
    fn is_empty(&mut self) -> bool {
        self.len() == 0
    }
    fn close(&mut self) {
        {
            let mut st = lock(&self.0.state);
            if st.reader_closed {
                return;
            }
            st.reader_closed = true;
            st.buf.clear();
        }
        self.0.writer_notify.notify();
    }
}

impl QueueReader {
    fn finished(&self) -> bool {
        let st = lock(&self.0.state);
        st.buf.is_empty() && (st.writer_closed || st.reader_closed)
    }
}

impl Drop for QueueReader {
    fn drop(&mut self) {
        self.close();
    }
}

impl QueueReader {
    /// Number of queued messages.
    pub(crate) fn len(&self) -> usize {
        lock(&self.0.state).buf.len()
    }
}

/// One in-memory queue: returns its writer and reader.
pub(crate) fn queue(
    config: QueueConfig,
    reader_notify: Arc<dyn Notify>,
    writer_notify: Arc<dyn Notify>,
) -> (QueueWriter, QueueReader) {
    let q = Arc::new(Queue {
        state: Mutex::new(QueueState {
            buf: VecDeque::new(),
            writer_closed: false,
            reader_closed: false,
        }),
        config,
        reader_notify,
        writer_notify,
    });
    (QueueWriter(q.clone()), QueueReader(q))
}

/// One direction of a pipe between two threads of this process: over the lock-free
/// [`spsc_pipe::spsc_pipe`] when `lock_free` (the direction carries no subscriptions,
/// whose writes must ignore the high-water mark) and the config has a bound and no
/// CONFLATE; over the locked [`queue`] otherwise.
pub(crate) fn pipe_halves(
    config: QueueConfig,
    lock_free: bool,
    ends: spsc_pipe::Ends,
    reader_notify: Arc<dyn Notify>,
    writer_notify: Arc<dyn Notify>,
) -> (Box<dyn PipeWriter>, Box<dyn PipeReader>) {
    if lock_free && config.hwm > 0 && !config.conflate {
        let (w, r) = spsc_pipe::spsc_pipe(config.hwm, ends, reader_notify, writer_notify);
        (Box::new(w), Box::new(r))
    } else {
        let (w, r) = queue(config, reader_notify, writer_notify);
        (Box::new(w), Box::new(r))
    }
}

/// Both directions between side A and side B: returns (A's writer, A's reader,
/// B's writer, B's reader). `a_to_b` configures the queue A writes into.
#[cfg(test)]
pub(crate) fn queue_pair(
    a_to_b: QueueConfig,
    b_to_a: QueueConfig,
    a_notify: Arc<dyn Notify>,
    b_notify: Arc<dyn Notify>,
) -> (QueueWriter, QueueReader, QueueWriter, QueueReader) {
    let (aw, br) = queue(a_to_b, b_notify.clone(), a_notify.clone());
    let (bw, ar) = queue(b_to_a, a_notify, b_notify);
    (aw, ar, bw, br)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts rings.
    #[derive(Default)]
    pub(crate) struct Counter(pub AtomicUsize);
    impl Notify for Counter {
        fn notify(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn queue_respects_hwm_and_rings_both_sides() {
        let r = Arc::new(Counter::default());
        let w = Arc::new(Counter::default());
        let (mut tx, mut rx) = queue(
            QueueConfig {
                hwm: 2,
                conflate: false,
            },
            r.clone(),
            w.clone(),
        );
        tx.try_write("a".into()).unwrap();
        assert_eq!(r.0.load(Ordering::SeqCst), 1, "empty -> non-empty rings");
        tx.try_write("b".into()).unwrap();
        assert_eq!(r.0.load(Ordering::SeqCst), 1);
        assert!(!tx.is_writable());
        match tx.try_write("c".into()) {
            Err(WriteError::Full(m)) => assert_eq!(m, Message::from("c")),
            other => panic!("{other:?}"),
        }
        tx.write_control("sub".into()).unwrap();
        assert_eq!(rx.try_read().unwrap().unwrap(), Message::from("a"));
        assert_eq!(w.0.load(Ordering::SeqCst), 1, "full -> not full rings");
        tx.close();
        assert_eq!(rx.try_read().unwrap().unwrap(), Message::from("b"));
        assert_eq!(rx.try_read().unwrap().unwrap(), Message::from("sub"));
        assert_eq!(rx.try_read(), Err(PipeClosed));
    }

    #[test]
    fn conflate_keeps_newest_and_reader_close_rejects_writes() {
        let n = Arc::new(Counter::default());
        let (mut tx, mut rx) = queue(
            QueueConfig {
                hwm: 1,
                conflate: true,
            },
            n.clone(),
            n.clone(),
        );
        for i in 0..5u8 {
            tx.try_write(vec![i].into()).unwrap();
        }
        assert_eq!(rx.try_read().unwrap().unwrap(), Message::from(vec![4u8]));
        assert_eq!(rx.try_read(), Ok(None));
        rx.close();
        assert!(tx.is_closed());
        assert!(matches!(
            tx.try_write("x".into()),
            Err(WriteError::Closed(_))
        ));
    }

    #[test]
    fn after_the_switch_a_peer_ringing_the_shared_doorbell_wakes_the_waiter() {
        // In a process whose parks never time out: returning at all means the ring of
        // the shared doorbell woke the waiter.
        use shm::wait::tests::{in_own_process, test_name};
        use std::sync::atomic::AtomicBool;
        let name = test_name(
            module_path!(),
            "after_the_switch_a_peer_ringing_the_shared_doorbell_wakes_the_waiter",
        );
        in_own_process(&name, || {
            let s = Arc::new(Signal::new());
            assert!(s.local.memfd().is_none(), "no descriptor until ipc is used");
            let shared = s.shared_doorbell().unwrap().clone();
            assert!(shared.memfd().is_some());
            let flag = Arc::new(AtomicBool::new(false));
            let f2 = flag.clone();
            let t = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                f2.store(true, Ordering::Release);
                // What a shared-memory peer does: ring only the shared doorbell.
                shared.notify();
            });
            let got = s.wait_until(Duration::ZERO, None, || {
                flag.load(Ordering::Acquire).then_some(())
            });
            t.join().unwrap();
            assert_eq!(got, Some(()), "woken by the ring");
        });
    }

    #[test]
    fn signal_wakes_a_parked_waiter_and_its_observers() {
        use std::sync::atomic::AtomicBool;
        let s = Arc::new(Signal::new());
        let timed_out: Option<()> = s.wait_until(
            Duration::ZERO,
            Some(Instant::now() + Duration::from_millis(20)),
            || None,
        );
        assert!(timed_out.is_none());
        let observer = Arc::new(Counter::default());
        s.observe(7, observer.clone());
        let flag = Arc::new(AtomicBool::new(false));
        let (s2, f2) = (s.clone(), flag.clone());
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            f2.store(true, Ordering::Release);
            s2.notify();
        });
        let got = s.wait_until(Duration::ZERO, None, || {
            flag.load(Ordering::Acquire).then_some(1)
        });
        assert_eq!(got, Some(1));
        t.join().unwrap();
        assert_eq!(observer.0.load(Ordering::SeqCst), 1, "observer rung");
        s.unobserve(7);
        s.notify();
        assert_eq!(
            observer.0.load(Ordering::SeqCst),
            1,
            "removed observer not rung"
        );
    }
}
