//! Async sends and receives, over the same sockets and the same core as the blocking
//! calls, for any executor (tokio, smol, `futures-lite`'s `block_on`, one of your own).
//!
//! ```no_run
//! # async fn service() -> lwmq::Result<()> {
//! let ctx = lwmq::Context::new();
//! let rep = ctx.socket(lwmq::SocketType::Rep)?;
//! rep.bind("ipc://echo")?;
//! let req = ctx.socket(lwmq::SocketType::Req)?;
//! req.connect("ipc://echo")?;
//! req.send_async("ping").await?;
//! let request = rep.recv_async().await?;
//! rep.send_async(request).await?;
//! assert_eq!(req.recv_async().await?.frames()[0], "ping");
//! # Ok(()) }
//! ```
//!
//! # How a future waits
//!
//! lwmq spawns no runtime and no thread per socket. A future tries its operation
//! (optionally spinning for [`Socket::set_async_spin`]); if it cannot complete, it
//! registers its task's waker on the socket's one wake-up signal, looks once more, and
//! returns `Pending`. Whatever rings the signal (the context's background thread for
//! tcp, unix and fd peers, an inproc peer's thread, the context closing) wakes the
//! task. Shared-memory (`ipc://`) peers ring only the socket's futex doorbell; a future
//! of a socket that uses `ipc://` hands its announcement on that doorbell to the
//! context's one doorbell-watcher thread (`lwmq-async`, started by the first such
//! future), which parks on the doorbells of every waiting socket at once and wakes
//! their tasks. The same thread wakes a REQ with resend when its next resend is due.
//!
//! Without spinning, an `ipc://` message that finds its receiver's task asleep goes
//! through that thread (a futex wake-up and a task wake-up); with
//! `set_async_spin(Duration::from_micros(20))` a busy exchange never sleeps, and an
//! `ipc://` round trip costs what a blocking one does.
//!
//! # Cancellation
//!
//! Every future here is cancellation-safe, so `select!` and timeouts may drop it at any
//! `.await`:
//!
//! - A receive future ([`Socket::recv_async`], [`Socket::recv_with_async`], the
//!   [`RecvStream`]) takes a message off the socket only in the poll that returns it.
//!   Dropped before, it took nothing: the message is received by the next receive.
//! - A send future ([`Socket::send_async`], [`Socket::send_with_async`]) either sent
//!   its message (it completed, in the poll that returned `Ready`) or handed nothing
//!   over: a send future dropped while pending drops its message, and the socket never
//!   saw it. [`SendFuture::into_message`] takes the message back out of a pending one.
//! - The [`SendSink`] buffers one message between `start_send` and the next
//!   `poll_ready`/`poll_flush`, as sinks do: flush (or close) it before dropping it, or
//!   the buffered message is dropped (logged as a warning).
//!
//! # Timeouts
//!
//! Futures ignore the send and receive timeouts of the blocking calls
//! ([`Socket::set_send_timeout`], [`Socket::set_recv_timeout`]): use your runtime's
//! (`tokio::time::timeout`), which drops the future, which is safe (see above).
//!
//! # Several sockets at once
//!
//! There is no async [`crate::poll()`]: `select!` over the sockets' futures does the
//! same, and dropping the futures that lost loses nothing:
//!
//! ```no_run
//! # async fn two(a: &lwmq::Socket, b: &lwmq::Socket) -> lwmq::Result<()> {
//! use futures_util::FutureExt as _;
//! futures_util::select! {
//!     m = a.recv_async().fuse() => println!("from a: {:?}", m?),
//!     m = b.recv_async().fuse() => println!("from b: {:?}", m?),
//! }
//! # Ok(()) }
//! ```
//!
//! (`tokio::select!` works the same way, without `fuse`.) Monitor events have their
//! future too: [`crate::Monitor::recv_async`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use super::{Core, Socket};
use crate::transport::waiter::Watch;
use crate::transport::wakers;
use crate::{Error, Frames, Message, Result, SendError};

/// A future's registration on its socket's signal: removed when the future completes
/// or is dropped.
#[derive(Debug)]
struct Registration {
    key: u64,
    registered: bool,
}

impl Registration {
    fn new() -> Registration {
        Registration {
            key: wakers::new_key(),
            registered: false,
        }
    }

    fn clear(&mut self, socket: &Socket) {
        if self.registered {
            socket.shared.signal.wakers.remove(self.key);
            self.registered = false;
        }
    }
}

impl Socket {
    /// One poll of an async operation: `attempt`, spin trying for the socket's async
    /// spin, register the task's waker (and, for a socket on `ipc://`, announce on its
    /// doorbell for the watcher), `attempt` once more, and `Pending`.
    fn poll_async<T>(
        &self,
        cx: &mut Context<'_>,
        reg: &mut Registration,
        mut attempt: impl FnMut(&Socket, &mut Core) -> Option<T>,
    ) -> Poll<T> {
        let mut guard = self.core();
        let core = &mut *guard;
        if let Some(v) = attempt(self, core) {
            reg.clear(self);
            return Poll::Ready(v);
        }
        let spin = core.options.async_spin;
        if !spin.is_zero() {
            let start = Instant::now();
            let mut i = 0u32;
            loop {
                std::hint::spin_loop();
                if let Some(v) = attempt(self, core) {
                    reg.clear(self);
                    return Poll::Ready(v);
                }
                i = i.wrapping_add(1);
                if i % 32 == 0 && start.elapsed() >= spin {
                    break;
                }
            }
        }
        let signal = &self.shared.signal;
        signal.wakers.register(reg.key, cx.waker());
        reg.registered = true;
        // Taken after the registration and before the last look, as a blocking waiter's
        // ticket is (see `transport::waiter`).
        let ticket = signal.shared_bell().map(|b| b.announce());
        if let Some(v) = attempt(self, core) {
            reg.clear(self);
            return Poll::Ready(v);
        }
        let deadline = if core.pattern.timed() {
            core.pattern.timer()
        } else {
            None
        };
        if ticket.is_some() || deadline.is_some() {
            match self.hub.waiter() {
                Ok(w) => w.watch(Watch {
                    signal: signal.clone(),
                    ticket,
                    deadline,
                }),
                Err(e) => {
                    // No thread to park for us: have the executor poll again.
                    tracing::warn!("the async doorbell watcher did not start ({e}); polling");
                    cx.waker().wake_by_ref();
                }
            }
        }
        Poll::Pending
    }

    /// The receive step of a future: what poll read ahead, else the pattern (told the
    /// time first when it keeps time).
    fn attempt_recv(&self, core: &mut Core) -> Option<Result<Message>> {
        if let Some(m) = core.prefetched.take() {
            return Some(Ok(m));
        }
        if let Some(e) = core.prefetched_error.take() {
            return Some(Err(e));
        }
        if let Some(r) = self.attempt_pattern_recv(core) {
            return Some(r);
        }
        if !core.pattern.timed() {
            return None;
        }
        if let Err(e) = core.pattern.tick(Instant::now()) {
            return Some(Err(e));
        }
        self.attempt_pattern_recv(core)
    }

    /// Receives a message, asynchronously: completes when one is there. Cancellation
    /// safe (see [`crate::aio`]). Fails with [`Error::Closed`] once the context is
    /// terminated.
    pub fn recv_async(&self) -> RecvFuture<'_> {
        RecvFuture {
            socket: self,
            reg: Registration::new(),
            counted: false,
        }
    }

    /// Sends a message, asynchronously: completes when the socket took it (where
    /// [`Socket::send`] would have returned). Dropped before, it sent nothing (see
    /// [`crate::aio`]). On failure the message comes back in the [`SendError`].
    pub fn send_async(&self, msg: impl Into<Message>) -> SendFuture<'_> {
        SendFuture {
            socket: self,
            reg: Registration::new(),
            msg: Some(msg.into()),
        }
    }

    /// As [`Socket::recv_with`], asynchronously: `f` reads the frames in place (from
    /// the shared-memory ring of an `ipc://` peer for PAIR, PULL and DEALER) and its
    /// result is the future's. `f` runs once, in the poll that completes the future.
    pub fn recv_with_async<R, F: FnOnce(&Frames<'_>) -> R + Unpin>(
        &self,
        f: F,
    ) -> RecvWithFuture<'_, F> {
        RecvWithFuture {
            socket: self,
            reg: Registration::new(),
            f: Some(f),
            counted: false,
        }
    }

    /// As [`Socket::send_with`], asynchronously: `fill` writes a one-frame message of
    /// `len` bytes straight into an `ipc://` peer's ring when it can (PAIR, PUSH,
    /// DEALER), and runs only when the message goes. Otherwise the message is built
    /// first and sent as [`Socket::send_async`] does (then a future dropped while
    /// pending has run `fill` but sent nothing).
    pub fn send_with_async<F: FnOnce(&mut [u8]) + Unpin>(
        &self,
        len: usize,
        fill: F,
    ) -> SendWithFuture<'_, F> {
        SendWithFuture {
            socket: self,
            reg: Registration::new(),
            len,
            fill: Some(fill),
            built: None,
        }
    }

    /// The messages this socket receives, as a stream (`futures_core::Stream`, with the
    /// `async` feature): each item is what [`Socket::recv_async`] would return; the
    /// stream ends once the context is terminated.
    pub fn stream(&self) -> RecvStream<'_> {
        RecvStream {
            socket: self,
            reg: Registration::new(),
        }
    }

    /// A sink (`futures_sink::Sink`, with the `async` feature) that sends what it is
    /// given; see [`SendSink`] for its one buffered message.
    pub fn sink(&self) -> SendSink<'_> {
        SendSink {
            socket: self,
            reg: Registration::new(),
            slot: None,
        }
    }
}

/// The future of [`Socket::recv_async`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct RecvFuture<'a> {
    socket: &'a Socket,
    reg: Registration,
    counted: bool,
}

impl Future for RecvFuture<'_> {
    type Output = Result<Message>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let counted = &mut this.counted;
        this.socket.poll_async(cx, &mut this.reg, |s, core| {
            if !*counted {
                s.shared.note_recv_call();
                *counted = true;
            }
            s.attempt_recv(core)
        })
    }
}

impl Drop for RecvFuture<'_> {
    fn drop(&mut self) {
        self.reg.clear(self.socket);
    }
}

/// The future of [`Socket::send_async`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct SendFuture<'a> {
    socket: &'a Socket,
    reg: Registration,
    msg: Option<Message>,
}

impl SendFuture<'_> {
    /// The message, if it was not sent (yet): cancels the send.
    pub fn into_message(mut self) -> Option<Message> {
        self.msg.take()
    }
}

impl Future for SendFuture<'_> {
    type Output = Result<(), SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.msg.is_none() {
            return Poll::Ready(Err(SendError {
                error: Error::State("the send future was polled after it completed".into()),
                message: Message::new(),
            }));
        }
        let held = &mut this.msg;
        this.socket
            .poll_async(cx, &mut this.reg, |s, core| s.attempt_send(core, held))
    }
}

impl Drop for SendFuture<'_> {
    fn drop(&mut self) {
        self.reg.clear(self.socket);
    }
}

/// The future of [`Socket::recv_with_async`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct RecvWithFuture<'a, F> {
    socket: &'a Socket,
    reg: Registration,
    f: Option<F>,
    counted: bool,
}

impl<R, F: FnOnce(&Frames<'_>) -> R + Unpin> Future for RecvWithFuture<'_, F> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.f.is_none() {
            return Poll::Ready(Err(Error::State(
                "the receive future was polled after it completed".into(),
            )));
        }
        let (f, counted) = (&mut this.f, &mut this.counted);
        this.socket.poll_async(cx, &mut this.reg, |s, core| {
            if !*counted {
                s.shared.note_recv_call();
                *counted = true;
            }
            recv_with_step(s, core, f)
        })
    }
}

/// One receive-in-place step: `f` runs (once) only when a message is there.
fn recv_with_step<R, F: FnOnce(&Frames<'_>) -> R>(
    s: &Socket,
    core: &mut Core,
    f: &mut Option<F>,
) -> Option<Result<R>> {
    let read_ahead = core.prefetched.is_some() || core.prefetched_error.is_some();
    if read_ahead || core.pattern.timed() {
        // A message already out of its pipe (or a pattern that keeps time): an
        // ordinary receive, handed to `f` borrowed.
        let r = s.attempt_recv(core)?;
        return Some(r.and_then(|m| delivered(f.take().map(|f| f(&Frames::message(&m))))));
    }
    if let Err(e) = s.check_open() {
        return Some(Err(e));
    }
    s.absorb_mailbox(core);
    let mut out = None;
    let mut cb = |frames: &Frames<'_>| {
        if let Some(f) = f.take() {
            out = Some(f(frames));
        }
    };
    match core.pattern.recv_with(&mut cb) {
        Ok(()) => Some(delivered(out)),
        Err(Error::WouldBlock) => None,
        Err(e) => Some(Err(e)),
    }
}

/// `recv_with` returned Ok only after calling the callback once.
fn delivered<R>(out: Option<R>) -> Result<R> {
    out.ok_or_else(|| Error::State("the message was not delivered".into()))
}

impl<F> Drop for RecvWithFuture<'_, F> {
    fn drop(&mut self) {
        self.reg.clear(self.socket);
    }
}

/// The future of [`Socket::send_with_async`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct SendWithFuture<'a, F> {
    socket: &'a Socket,
    reg: Registration,
    len: usize,
    fill: Option<F>,
    /// The message built because it could not go in place.
    built: Option<Message>,
}

impl<F: FnOnce(&mut [u8]) + Unpin> Future for SendWithFuture<'_, F> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let len = this.len;
        let (fill, built) = (&mut this.fill, &mut this.built);
        if fill.is_none() && built.is_none() {
            return Poll::Ready(Err(Error::State(
                "the send future was polled after it completed".into(),
            )));
        }
        this.socket.poll_async(cx, &mut this.reg, |s, core| {
            if built.is_none() {
                if s.hub.is_terminated() {
                    return Some(Err(Error::Closed));
                }
                s.absorb_mailbox(core);
                let mut cb = |buf: &mut [u8]| {
                    if let Some(f) = fill.take() {
                        f(buf);
                    }
                };
                match core.pattern.send_in_place(len, &mut cb) {
                    crate::pattern::InPlaceSend::Sent => return Some(Ok(())),
                    crate::pattern::InPlaceSend::WouldBlock => return None,
                    crate::pattern::InPlaceSend::NotInPlace => {
                        let mut buf = vec![0u8; len];
                        if let Some(f) = fill.take() {
                            f(&mut buf);
                        }
                        *built = Some(Message::from(buf));
                    }
                }
            }
            s.attempt_send(core, built).map(|r| r.map_err(|e| e.error))
        })
    }
}

impl<F> Drop for SendWithFuture<'_, F> {
    fn drop(&mut self) {
        self.reg.clear(self.socket);
    }
}

/// The stream of [`Socket::stream`]: `futures_core::Stream<Item = Result<Message>>`
/// (with the `async` feature), and [`RecvStream::next_message`] without it.
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct RecvStream<'a> {
    socket: &'a Socket,
    reg: Registration,
}

impl RecvStream<'_> {
    /// The next message (`None` once the context is terminated).
    pub fn poll_next_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        let mut counted = false;
        self.socket.poll_async(cx, &mut self.reg, |s, core| {
            if !counted {
                s.shared.note_recv_call();
                counted = true;
            }
            match s.attempt_recv(core)? {
                Err(Error::Closed) => Some(None),
                r => Some(Some(r)),
            }
        })
    }

    /// The next message, as a future (`None` once the context is terminated).
    pub async fn next_message(&mut self) -> Option<Result<Message>> {
        std::future::poll_fn(|cx| self.poll_next_message(cx)).await
    }
}

#[cfg(feature = "async")]
impl futures_core::Stream for RecvStream<'_> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_message(cx)
    }
}

impl Drop for RecvStream<'_> {
    fn drop(&mut self) {
        self.reg.clear(self.socket);
    }
}

/// The sink of [`Socket::sink`]: `futures_sink::Sink<Message>` (with the `async`
/// feature), with [`SendError`] as its error (the message that
/// failed comes back in it).
///
/// As sinks do, it holds one message between `start_send` and the next `poll_ready`
/// or `poll_flush` that sends it; `poll_flush` completes when the socket took it (as
/// [`Socket::send`] returns). Dropping the sink with a message still held drops that
/// message (and logs a warning): flush or close it first.
#[derive(Debug)]
#[must_use = "sinks do nothing unless polled"]
pub struct SendSink<'a> {
    socket: &'a Socket,
    reg: Registration,
    slot: Option<Message>,
}

impl SendSink<'_> {
    /// Sends the held message, if any; `Ready(Ok)` once nothing is held.
    pub fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        if self.slot.is_none() {
            return Poll::Ready(Ok(()));
        }
        let slot = &mut self.slot;
        self.socket
            .poll_async(cx, &mut self.reg, |s, core| s.attempt_send(core, slot))
    }

    /// Holds `msg` for the next [`SendSink::poll_send_held`]. Fails (handing `msg`
    /// back) if a message is held already.
    pub fn hold(&mut self, msg: Message) -> Result<(), SendError> {
        if self.slot.is_some() {
            return Err(SendError {
                error: Error::State("the sink holds a message: poll it ready first".into()),
                message: msg,
            });
        }
        self.slot = Some(msg);
        Ok(())
    }
}

#[cfg(feature = "async")]
impl futures_sink::Sink<Message> for SendSink<'_> {
    type Error = SendError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().poll_send_held(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), SendError> {
        self.get_mut().hold(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().poll_send_held(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().poll_send_held(cx)
    }
}

impl Drop for SendSink<'_> {
    fn drop(&mut self) {
        self.reg.clear(self.socket);
        if self.slot.is_some() {
            tracing::warn!("a SendSink was dropped holding a message it never sent");
        }
    }
}

/// The longest a test of this module waits for anything.
#[cfg(test)]
const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context as Ctx, SocketType};

    /// A minimal executor: polls on the calling thread, parking between polls until
    /// woken (a waker that unparks it), with a watchdog.
    fn block_on<F: Future>(f: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        let start = Instant::now();
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            assert!(
                start.elapsed() < WATCHDOG,
                "watchdog: a future never completed"
            );
            std::thread::park_timeout(std::time::Duration::from_secs(1));
        }
    }

    #[test]
    fn inproc_round_trip_on_a_hand_written_executor() {
        let ctx = Ctx::new();
        let a = ctx.socket(SocketType::Pair).unwrap();
        let b = ctx.socket(SocketType::Pair).unwrap();
        a.bind("inproc://aio-unit").unwrap();
        b.connect("inproc://aio-unit").unwrap();
        let t = std::thread::spawn(move || {
            let m = b.recv().unwrap();
            b.send(m).unwrap();
        });
        block_on(async {
            a.send_async("x").await.unwrap();
            assert_eq!(a.recv_async().await.unwrap().frames()[0], "x");
        });
        t.join().unwrap();
        assert!(!a.shared.signal.wakers.any(), "registrations removed");
    }

    #[test]
    fn a_dropped_pending_send_hands_its_message_back() {
        let ctx = Ctx::new();
        let push = ctx.socket(SocketType::Push).unwrap();
        let mut f = push.send_async("kept");
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        // No peer at all: the send cannot go.
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert!(push.shared.signal.wakers.any());
        let m = f.into_message().expect("not sent");
        assert_eq!(m.frames()[0], "kept");
        assert!(
            !push.shared.signal.wakers.any(),
            "registration removed on drop"
        );
    }
}
