//! The connection state machine: greeting, handshake, traffic, closing.
//!
//! A [`Connection`] is owned by one thread at a time (it is `Send`, not shared): the
//! owner calls its methods in the order described in the [module docs](super).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use super::command::Command;
use super::greeting::{self, GREETING_LEN, Greeting, MAJOR_POS};
use super::heartbeat::{self, Action, Heartbeat};
use super::mechanism::curve::{Cipher, MESSAGE_OVERHEAD};
use super::mechanism::{self, Handshake, HandshakeCx, Step};
use super::transmit::Transmit;
use super::{Config, Event, PeerInfo, ProtoError, frame};
use crate::{Message, SocketType};

/// The receive buffer is allocated in chunks of this many bytes (see
/// [`Connection::handle_input`]).
const INPUT_CHUNK: usize = 64 * 1024;

/// [`Connection::input_buffer`] starts a new chunk when less room than this is left.
const INPUT_MIN_SPARE: usize = 4 * 1024;

/// The most room [`Connection::input_buffer`] makes ahead of a large frame's bytes
/// (what a peer's frame header alone can make us allocate); beyond it the buffer grows
/// as the bytes come.
const INPUT_MAX_AHEAD: usize = 8 * 1024 * 1024;

/// The largest receive buffer [`Connection::input_buffer`] keeps for reuse after the
/// frame it held was handed out (larger ones go back to the allocator with the frame);
/// a connection keeps at most two.
const INPUT_KEEP_MAX: usize = 32 * 1024 * 1024;

/// Handshake command frames are accepted up to this size even when the maximum message
/// size is smaller.
const HANDSHAKE_FRAME_LIMIT: u64 = 64 * 1024;

/// Something given to us to send before the handshake finished.
#[derive(Debug)]
enum Held {
    Message(Message),
    Subscribe(Bytes),
    Cancel(Bytes),
}

#[derive(Debug)]
enum State {
    /// Reading the peer's 64-byte greeting.
    Greeting,
    /// The mechanism's handshake, in one of its states.
    Handshake(Box<dyn Handshake>),
    /// Messages flow.
    Ready,
    /// Over; `Connection::error` says why.
    Closed,
}

/// One ZMTP connection, without I/O. See the [module docs](super) for how to drive it.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    state: State,
    /// Received bytes not consumed yet.
    input: BytesMut,
    /// How large `input`'s allocation is (its capacity when it was made).
    input_alloc: usize,
    /// Earlier receive buffers of large frames, emptied, whose allocations serve later
    /// large frames once the application has dropped what was cut from them (see
    /// [`Connection::make_room`]).
    input_spares: [BytesMut; 2],
    /// Whether the second part of our greeting is queued.
    sent_greeting_rest: bool,
    /// The negotiated ZMTP minor version (valid once the greeting is parsed).
    minor: u8,
    out: Transmit,
    events: VecDeque<Event>,
    /// Sent before the handshake finished, written when it does.
    held: VecDeque<Held>,
    held_bytes: usize,
    /// Frames of an incoming multipart message so far.
    partial: crate::message::FrameVec,
    heartbeat: Heartbeat,
    /// CURVE: encrypts and decrypts every frame once the handshake is done.
    cipher: Option<Box<Cipher>>,
    peer: Option<PeerInfo>,
    /// The fatal error, once there is one (it sticks).
    error: Option<ProtoError>,
    /// `Event::Closed`, handed out once the transmit queue has drained.
    closed_event: Option<ProtoError>,
    /// The latest `now` we were given.
    now: Instant,
}

impl Connection {
    /// A new connection; the first part of our greeting is queued at once. An invalid
    /// `config` (see [`Config::validate`]) gives a connection that is already closed.
    pub fn new(config: Config, now: Instant) -> Connection {
        let heartbeat = Heartbeat::new(config.heartbeat_interval, config.heartbeat_timeout, now);
        let invalid = config.validate().err();
        let greeting_sent = config.greeting_sent;
        let mut c = Connection {
            config,
            state: State::Greeting,
            input: BytesMut::new(),
            input_alloc: 0,
            input_spares: [BytesMut::new(), BytesMut::new()],
            sent_greeting_rest: greeting_sent,
            minor: greeting::MINOR,
            out: Transmit::default(),
            events: VecDeque::new(),
            held: VecDeque::new(),
            held_bytes: 0,
            partial: crate::message::FrameVec::new(),
            heartbeat,
            cipher: None,
            peer: None,
            error: None,
            closed_event: None,
            now,
        };
        match invalid {
            Some(e) => c.fail(e),
            None if greeting_sent => {}
            None => c.out.raw(&greeting::encode_first()),
        }
        c
    }

    /// Feeds bytes received from the peer (any split of the stream). A caller that
    /// reads a stream can read straight into [`input_buffer`](Self::input_buffer)
    /// instead, which saves this copy.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        if self.error.is_some() || data.is_empty() {
            self.now = now;
            return;
        }
        self.input_buffer().extend_from_slice(data);
        self.input_received(now);
    }

    /// The receive buffer, with room for the next read after its bytes: append what
    /// the stream gives (into its spare capacity; anything appended is taken as
    /// received), then call [`input_received`](Self::input_received).
    ///
    /// Frames are split off this buffer without copying and live on in the messages.
    /// The room is at least a few KiB, a new chunk of 64 KiB when less is left (so
    /// receiving allocates once per chunk, not once per read), and, when the bytes of a
    /// large frame are arriving, all that frame still needs (up to 8 MiB ahead): its
    /// body then lands where it stays, with no copy and no growing.
    pub fn input_buffer(&mut self) -> &mut BytesMut {
        let mut want = INPUT_MIN_SPARE;
        if matches!(self.state, State::Ready)
            && let Ok(Some(h)) = frame::decode_header(&self.input, None)
        {
            let total = h
                .len
                .saturating_add(usize::try_from(h.size).unwrap_or(usize::MAX));
            want = want.max(total.saturating_sub(self.input.len()).min(INPUT_MAX_AHEAD));
        }
        let spare = self.input.capacity() - self.input.len();
        if spare < want {
            self.make_room(want.max(INPUT_CHUNK));
        }
        &mut self.input
    }

    /// Room for `need` more bytes in the receive buffer. The frames cut from a buffer
    /// keep its allocation alive while the application holds them, so a new buffer is
    /// needed while the last large message is still in use; the ones before are
    /// usually free again by then. So a large buffer being replaced is kept (emptied,
    /// up to two of them) and taken back for a later large frame once nothing cut from
    /// it is alive: large messages in a row land in memory already touched, with no
    /// allocation and no page faults each.
    fn make_room(&mut self, need: usize) {
        // Nothing cut from the current buffer alive: it takes the bytes in place.
        if self.input.try_reclaim(need) {
            return;
        }
        let len = self.input.len();
        let mut next = BytesMut::new();
        if need > INPUT_CHUNK {
            for spare in &mut self.input_spares {
                if spare.try_reclaim(len + need) {
                    next = std::mem::take(spare);
                    break;
                }
            }
        }
        if next.capacity() < len + need {
            next = BytesMut::with_capacity(len + need);
        }
        next.extend_from_slice(&self.input);
        let mut old = std::mem::replace(&mut self.input, next);
        let old_alloc = std::mem::replace(&mut self.input_alloc, self.input.capacity());
        if old_alloc > INPUT_CHUNK && old_alloc <= INPUT_KEEP_MAX {
            old.clear();
            // In place of the one kept longest.
            self.input_spares.rotate_left(1);
            let last = self.input_spares.len() - 1;
            self.input_spares[last] = old;
        }
    }

    /// Whether the bytes of a frame of more than 256 KiB are arriving: then reading
    /// into [`input_buffer`](Self::input_buffer) saves copying them (for smaller
    /// frames, a read into a scratch buffer and [`handle_input`](Self::handle_input)
    /// does as well, in larger reads).
    pub fn large_frame_arriving(&self) -> bool {
        const LARGE: usize = 256 * 1024;
        matches!(self.state, State::Ready)
            && matches!(
                frame::decode_header(&self.input, None),
                Ok(Some(h)) if h.size > LARGE as u64 && (h.size as usize) > self.input.len().saturating_sub(h.len) + LARGE / 2
            )
    }

    /// Processes what was appended to [`input_buffer`](Self::input_buffer).
    pub fn input_received(&mut self, now: Instant) {
        self.now = now;
        if self.error.is_some() {
            self.input.clear();
            return;
        }
        if self.input.is_empty() {
            return;
        }
        self.heartbeat.received(now);
        self.process();
    }

    /// The next chunk of bytes to write to the stream; write all of it before asking
    /// for the next. Large message frames come back as their own `Bytes`, uncopied.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.pop()
    }

    /// The next event. [`Event::Closed`] comes last, and only once `poll_transmit` has
    /// returned every final byte (after a heartbeat timeout nothing more is transmitted:
    /// the queue is dropped). [`is_closed`](Self::is_closed) turns true at once.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if self.out.len == 0 {
            return self.closed_event.take().map(Event::Closed);
        }
        None
    }

    /// Queues a message. Before the handshake has finished it is held, then written.
    /// Fails if the connection is closed (with its error) or the message has no frames.
    pub fn send(&mut self, msg: Message) -> Result<(), ProtoError> {
        self.send_recycling(msg, &mut drop)
    }

    /// As [`send`](Self::send), handing every frame body that was copied into the
    /// output (and is no longer needed) to `spent`: an owner can drop them on the
    /// thread that made them, where freeing is cheapest.
    pub fn send_recycling(
        &mut self,
        msg: Message,
        spent: &mut dyn FnMut(Bytes),
    ) -> Result<(), ProtoError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if msg.is_empty() {
            return Err(ProtoError::InvalidArgument(
                "a message needs at least one frame".into(),
            ));
        }
        if matches!(self.state, State::Ready) {
            self.write_message(msg, spent);
        } else {
            self.held_bytes += msg.size();
            self.held.push_back(Held::Message(msg));
        }
        Ok(())
    }

    /// Subscribes to `topic` at the peer (SUBSCRIBE with ZMTP 3.1, a 0x01 frame with 3.0).
    pub fn send_subscribe(&mut self, topic: Bytes) {
        self.subscription(Held::Subscribe(topic));
    }

    /// Cancels a subscription at the peer (CANCEL with ZMTP 3.1, a 0x00 frame with 3.0).
    pub fn send_cancel(&mut self, topic: Bytes) {
        self.subscription(Held::Cancel(topic));
    }

    /// Answers an [`Event::AuthRequest`] (PLAIN or CURVE server). Accepting goes on with
    /// the handshake (PLAIN: WELCOME; CURVE: READY), the peer's user id being the PLAIN
    /// user name or the CURVE key in Z85; rejecting sends ERROR `"400"` and closes.
    /// Ignored when no request is pending.
    pub fn authenticate(&mut self, accept: bool) {
        self.answer_auth(accept, None);
    }

    /// Accepts the pending [`Event::AuthRequest`], recording `user_id` as the peer's
    /// [`PeerInfo::user_id`] (what a ZAP handler returns). Ignored when no request is
    /// pending.
    pub fn accept_as(&mut self, user_id: impl Into<String>) {
        self.answer_auth(true, Some(user_id.into()));
    }

    fn answer_auth(&mut self, accept: bool, user_id: Option<String>) {
        if !matches!(&self.state, State::Handshake(hs) if hs.awaits_auth()) {
            tracing::warn!("authenticate() called with no authentication request pending; ignored");
            return;
        }
        let r = self.step(|hs, cx| hs.authenticate(accept, user_id, cx));
        match r {
            Ok(()) => self.process(),
            Err(e) => self.fail(e),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Ready => self.heartbeat.deadline(),
            _ => None,
        }
    }

    /// Advances the timers: sends a due PING, or fails on a heartbeat timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !matches!(self.state, State::Ready) {
            return;
        }
        self.now = now;
        loop {
            match self.heartbeat.poll(now) {
                Action::None => return,
                Action::Ping => self.emit_command(&Command::Ping {
                    ttl: heartbeat::ttl_deciseconds(self.config.heartbeat_ttl),
                    context: Bytes::new(),
                }),
                Action::Expired => {
                    self.fail(ProtoError::HeartbeatTimeout);
                    return;
                }
            }
        }
    }

    /// Ends the connection: queues ERROR with `reason` (when a mechanism is agreed, so
    /// the peer can read it), then [`Event::Closed`] with [`ProtoError::Closed`].
    pub fn close(&mut self, reason: &str) {
        if self.error.is_some() {
            return;
        }
        if matches!(self.state, State::Handshake(_) | State::Ready) {
            // After a CURVE handshake the ERROR is encrypted like every other command.
            self.emit_command(&Command::Error(reason.to_owned()));
        }
        self.fail(ProtoError::Closed(reason.to_owned()));
    }

    /// Whether the handshake is done and the connection not closed.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    /// Whether the connection is over (a fatal error, or [`close`](Self::close)).
    pub fn is_closed(&self) -> bool {
        self.error.is_some()
    }

    /// The fatal error, once the connection is closed.
    pub fn error(&self) -> Option<&ProtoError> {
        self.error.as_ref()
    }

    /// The peer, once the handshake is done.
    pub fn peer(&self) -> Option<&PeerInfo> {
        self.peer.as_ref()
    }

    /// Bytes waiting to be written (queued for `poll_transmit`, plus messages held until
    /// the handshake finishes), so the owner can apply back-pressure.
    pub fn pending_transmit_bytes(&self) -> usize {
        self.out.len + self.held_bytes
    }

    /// Consumes as much buffered input as the current state allows.
    fn process(&mut self) {
        if let Err(e) = self.process_inner() {
            self.fail(e);
        }
    }

    fn process_inner(&mut self) -> Result<(), ProtoError> {
        loop {
            match self.state {
                State::Closed => return Ok(()),
                State::Greeting => {
                    if !self.process_greeting()? {
                        return Ok(());
                    }
                }
                State::Handshake(_) => {
                    // Handshake commands are the mechanism's, not messages: a small
                    // message limit must not refuse CURVE's 200-byte HELLO.
                    let max = self
                        .config
                        .max_msg_size
                        .map(|m| m.max(HANDSHAKE_FRAME_LIMIT));
                    let Some(f) = frame::decode(&mut self.input, max)? else {
                        return Ok(());
                    };
                    if !f.command {
                        return Err(ProtoError::Malformed(
                            "message frame received before the handshake finished".into(),
                        ));
                    }
                    self.step(|hs, cx| hs.handle_body(f.body, cx))?;
                }
                State::Ready if self.cipher.is_some() => {
                    let max = self
                        .config
                        .max_msg_size
                        .map(|m| m.saturating_add(MESSAGE_OVERHEAD as u64));
                    let Some((h, body)) = frame::decode_mut(&mut self.input, max)? else {
                        return Ok(());
                    };
                    if h.more {
                        return Err(ProtoError::Malformed(
                            "a CURVE MESSAGE frame with the MORE flag (MORE travels inside the box)"
                                .into(),
                        ));
                    }
                    let Some(cipher) = self.cipher.as_mut() else {
                        return Ok(());
                    };
                    let f = cipher.open(body)?;
                    self.handle_frame(f)?;
                }
                State::Ready => {
                    let Some(f) = frame::decode(&mut self.input, self.config.max_msg_size)? else {
                        return Ok(());
                    };
                    self.handle_frame(f)?;
                }
            }
        }
    }

    /// Reads the peer's greeting; `Ok(true)` once it is complete and the mechanism runs.
    fn process_greeting(&mut self) -> Result<bool, ProtoError> {
        let n = self.input.len().min(GREETING_LEN);
        greeting::check_prefix(&self.input[..n])?;
        if n > MAJOR_POS && !self.sent_greeting_rest {
            // The peer is a ZMTP 3.x peer: send the rest of ours.
            self.sent_greeting_rest = true;
            let m = &self.config.mechanism;
            self.out
                .raw(&greeting::encode_rest(m.name(), m.as_server()));
        }
        if n < GREETING_LEN {
            return Ok(false);
        }
        let mut bytes = [0u8; GREETING_LEN];
        bytes.copy_from_slice(&self.input[..GREETING_LEN]);
        self.input.advance(GREETING_LEN);
        let g = Greeting::parse(&bytes)?;
        self.minor = g.negotiated_minor();
        tracing::debug!(major = g.major, minor = g.minor, "peer greeting");
        let mut cx = HandshakeCx {
            config: &self.config,
            minor: self.minor,
            now: self.now,
            out: &mut self.out,
            events: &mut self.events,
        };
        let step = mechanism::start(&g.mechanism, g.as_server, &mut cx)?;
        self.apply(step);
        Ok(true)
    }

    /// Runs one handshake step on the current state.
    fn step(
        &mut self,
        f: impl FnOnce(Box<dyn Handshake>, &mut HandshakeCx<'_>) -> Result<Step, ProtoError>,
    ) -> Result<(), ProtoError> {
        let State::Handshake(hs) = std::mem::replace(&mut self.state, State::Closed) else {
            // Callers check the state first; staying Closed is the safe outcome anyway.
            return Err(ProtoError::Malformed(
                "internal: no handshake in progress".into(),
            ));
        };
        let mut cx = HandshakeCx {
            config: &self.config,
            minor: self.minor,
            now: self.now,
            out: &mut self.out,
            events: &mut self.events,
        };
        let step = f(hs, &mut cx)?;
        self.apply(step);
        Ok(())
    }

    fn apply(&mut self, step: Step) {
        let peer = match step {
            Step::Continue(hs) => {
                self.state = State::Handshake(hs);
                return;
            }
            Step::Done(peer) => peer,
            Step::Secure(peer, cipher) => {
                self.cipher = Some(cipher);
                peer
            }
        };
        tracing::debug!(peer = ?peer.socket_type, minor = peer.minor_version, "handshake succeeded");
        self.state = State::Ready;
        self.events
            .push_back(Event::HandshakeSucceeded(peer.clone()));
        self.peer = Some(peer);
        self.heartbeat.start(self.now);
        for h in std::mem::take(&mut self.held) {
            match h {
                Held::Message(m) => self.write_message(m, &mut drop),
                Held::Subscribe(t) => self.write_subscription(true, t),
                Held::Cancel(t) => self.write_subscription(false, t),
            }
        }
        self.held_bytes = 0;
    }

    fn handle_frame(&mut self, f: frame::Frame) -> Result<(), ProtoError> {
        if f.command {
            // libzmq may put a PING between the frames of a multipart message: allowed.
            return match Command::parse(f.body)? {
                Command::Ping { ttl, context } => {
                    self.heartbeat.peer_ttl(ttl);
                    self.emit_command(&Command::Pong(context));
                    Ok(())
                }
                Command::Pong(_) => Ok(()),
                Command::Subscribe(t) => {
                    self.surface_subscription(true, t);
                    Ok(())
                }
                Command::Cancel(t) => {
                    self.surface_subscription(false, t);
                    Ok(())
                }
                Command::Error(reason) => Err(ProtoError::PeerError(reason)),
                Command::Unknown { name, .. } => {
                    tracing::debug!(name = ?name, "ignoring unknown command");
                    Ok(())
                }
                other => Err(ProtoError::Malformed(format!(
                    "{} after the handshake",
                    String::from_utf8_lossy(other.name())
                ))),
            };
        }
        self.partial.push(f.body);
        if f.more {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.partial);
        if self.is_publisher() && frames.len() == 1 {
            let body = &frames[0];
            if let Some(&kind @ (0 | 1)) = body.first() {
                self.surface_subscription(kind == 1, body.slice(1..));
                return Ok(());
            }
        }
        self.events.push_back(Event::Message(Message::from(frames)));
        Ok(())
    }

    fn is_publisher(&self) -> bool {
        matches!(self.config.socket_type, SocketType::Pub | SocketType::XPub)
    }

    fn surface_subscription(&mut self, subscribe: bool, topic: Bytes) {
        if !self.is_publisher() {
            tracing::debug!("ignoring a subscription sent to a non-publisher");
            return;
        }
        self.events.push_back(if subscribe {
            Event::Subscribe(topic)
        } else {
            Event::Cancel(topic)
        });
    }

    fn subscription(&mut self, h: Held) {
        if self.error.is_some() {
            return;
        }
        match (h, matches!(self.state, State::Ready)) {
            (Held::Subscribe(t), true) => self.write_subscription(true, t),
            (Held::Cancel(t), true) => self.write_subscription(false, t),
            (h, _) => self.held.push_back(h),
        }
    }

    fn write_subscription(&mut self, subscribe: bool, topic: Bytes) {
        if self.minor >= 1 {
            self.emit_command(&if subscribe {
                Command::Subscribe(topic)
            } else {
                Command::Cancel(topic)
            });
        } else {
            let mut body = BytesMut::with_capacity(topic.len() + 1);
            body.extend_from_slice(&[u8::from(subscribe)]);
            body.extend_from_slice(&topic);
            self.emit_data(false, body.freeze());
        }
    }

    fn write_message(&mut self, msg: Message, spent: &mut dyn FnMut(Bytes)) {
        let last = msg.len().saturating_sub(1);
        for (i, f) in msg.into_iter().enumerate() {
            if let Some(f) = self.emit_data(i < last, f) {
                spent(f);
            }
        }
    }

    /// Queues a command after the handshake: as it is, or encrypted (CURVE).
    fn emit_command(&mut self, cmd: &Command) {
        if self.error.is_some() {
            return;
        }
        match self.cipher.as_mut() {
            None => self.out.command(cmd),
            Some(c) => {
                let body = cmd.encode();
                if let Err(e) = seal(&mut self.out, c, false, true, &body) {
                    self.fail(e);
                }
            }
        }
    }

    /// Queues a data frame: as it is, or encrypted into a MESSAGE (CURVE). libzmq sends
    /// MESSAGE as a data frame without flags; MORE travels inside the box.
    /// Returns the body when it is no longer needed (copied or sealed).
    fn emit_data(&mut self, more: bool, body: Bytes) -> Option<Bytes> {
        if self.error.is_some() {
            return Some(body);
        }
        match self.cipher.as_mut() {
            None => self.out.data_frame(more, body),
            Some(c) => {
                if let Err(e) = seal(&mut self.out, c, more, false, &body) {
                    self.fail(e);
                }
                Some(body)
            }
        }
    }

    /// Ends the connection with `e` (sticky). Queued ERROR bytes stay queued.
    fn fail(&mut self, e: ProtoError) {
        if self.error.is_some() {
            return;
        }
        tracing::debug!(error = %e, "ZMTP connection failed");
        if e == ProtoError::HeartbeatTimeout {
            // The peer is presumed dead: nothing queued will be read, and waiting for it
            // to drain would hold back the Closed event for ever.
            self.out.clear();
        }
        self.state = State::Closed;
        self.error = Some(e.clone());
        self.closed_event = Some(e);
        self.held.clear();
        self.held_bytes = 0;
        self.partial.clear();
        self.input.clear();
    }
}

/// Queues one frame sealed into a MESSAGE, written and encrypted in `out`'s buffer.
/// libzmq sends MESSAGE as a data frame without flags; MORE travels inside the box.
fn seal(
    out: &mut Transmit,
    cipher: &mut Cipher,
    more: bool,
    command: bool,
    body: &[u8],
) -> Result<(), ProtoError> {
    out.data_frame_built(false, Cipher::sealed_len(body.len()), |buf| {
        cipher.seal_into(more, command, body, buf)
    })
}
