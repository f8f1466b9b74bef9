//! REQ and REP: the strict request/reply state machines over a DEALER-like and a
//! ROUTER-like core, with REQ resend and REP de-duplication.
//!
//! Wire format, as libzmq: a REQ prefixes each request with an empty delimiter frame;
//! with REQ_CORRELATE it puts a 4-byte request id frame (the id's bytes in host order,
//! as libzmq copies its `uint32_t`) before the delimiter and drops any reply whose id
//! differs. A REP strips everything up to and including the first empty frame (the
//! envelope, which a ROUTER in between may have extended), and puts it back in front of
//! the reply.
//!
//! **Resend** (a REQ with `req_resend`): request ids are on. An exchange runs in
//! rounds of one resend interval, at most `req_resend_attempts` of them: each round
//! sends the request (same id) to the next pipe that takes it, round robin; a round
//! whose pipe goes away ends at once (the next one starts) while rounds remain. A reply
//! with the current id is accepted from any pipe, once; any other reply is dropped and
//! counted. After the last round, or when the receive timeout passes, the exchange is
//! given up ([`Error::RequestTimeout`]) and the REQ may send again. The pattern keeps
//! no clock: the socket passes `now` to [`Pattern::tick`] and wakes at
//! [`Pattern::timer`].
//!
//! **De-duplication** (every REP): a request whose envelope ends with a 4-byte frame
//! before the delimiter carries a request id. Its [`RequestKey`] (the requester's
//! routing id or the hops a ROUTER added, the id, a hash of the body) is looked up in
//! the reply cache: an answered one is answered from the cache, not handed to the
//! application. When the application replies, copies of that request queued on the
//! same pipe right behind it (they came while it was being handled) are dropped. A request without
//! an id is handled exactly as libzmq's REP does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};

use super::{Pattern, PatternOptions, PipeId, Pipes, check_not_empty, split_envelope};
use crate::message::FrameVec;
use crate::monitor::EventKind;
use crate::reliable::{Count, KeptFrames, MemoryReplyCache, ReplyCache, RequestKey, fingerprint};
use crate::transport::{Pipe, SocketHandle, WriteError};
use crate::{Error, Message, Result, SendError};

#[derive(Debug, Clone, Copy)]
enum ReqState {
    /// May send a request.
    Ready,
    /// Waiting for the reply to the request sent on `pipe` with `id`.
    Waiting { pipe: PipeId, id: u32 },
    /// With resend: waiting for the reply to the exchange's request ([`Req::ex`]).
    Resending,
}

/// One request of a REQ with resend, until its reply or until it is given up. The REQ
/// keeps one and reuses it from request to request (nothing allocated per request).
#[derive(Debug, Default)]
struct Exchange {
    id: u32,
    /// The request's body, for the resends (which put the id and delimiter back).
    body: KeptFrames,
    /// Rounds started (the first send starts the first).
    rounds: u32,
    /// Times the request was written to a pipe.
    sent: u32,
    /// The distinct pipes it was written to.
    peers: Vec<PipeId>,
    /// The pipe of the current round's send (`None`: not sent in this round yet).
    carrier: Option<PipeId>,
    /// The pipe of the send before (a resend elsewhere is a failover).
    last: Option<PipeId>,
    /// The current round wants its send (no pipe took it yet).
    want_send: bool,
    /// When the current round ends (set by the first tick after it began).
    due: Option<Instant>,
}

/// REQ: send, receive, send, receive...
#[derive(Debug)]
pub(crate) struct Req {
    pipes: Pipes,
    state: ReqState,
    next_id: u32,
    correlate: bool,
    relaxed: bool,
    resend: Option<Duration>,
    attempts: u32,
    reporter: Reporter,
    /// With resend: the current exchange (live while the state is `Resending`).
    ex: Exchange,
    /// Where the next request's body is kept, swapped into `ex` once the request went
    /// (a send that fails leaves the current exchange as it is).
    next_body: KeptFrames,
    /// The buffer request id frames are cut from (see [`Req::id_frame`]).
    ids: BytesMut,
    /// A pipe came or went (or the socket's clock ticked) since the exchange's carrier
    /// was last looked at: the receive looks again. The wait's spinning loop calls the
    /// receive over and over, and looks at the carrier only then.
    pipes_changed: bool,
}

/// Bytes of request id frames cut from one buffer: 256 ids, then the buffer is reused
/// if every frame cut from it is gone (the replies to them came), else a new one made.
const ID_BUFFER: usize = 1024;

impl Default for Req {
    fn default() -> Self {
        Req::new(Reporter::default())
    }
}

/// Where REQ and REP count what resend and de-duplication did, and report it to the
/// socket's monitors.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    handle: Arc<SocketHandle>,
}

impl Reporter {
    pub(crate) fn new(handle: Arc<SocketHandle>) -> Reporter {
        Reporter { handle }
    }

    /// Counts `c` and emits its monitor event (these are rare: a resend, a copy, a
    /// drop), with the endpoint of `pipe` if known.
    fn report(
        &self,
        c: Count,
        pipes: &Pipes,
        pipe: Option<PipeId>,
        detail: impl FnOnce() -> String,
    ) {
        self.handle.reqrep.add(c);
        let kind = match c {
            Count::Resend => EventKind::RequestResent,
            Count::Failover => return,
            Count::StaleReply => EventKind::StaleReplyDropped,
            Count::Malformed => EventKind::MalformedDropped,
            Count::Duplicate => EventKind::DuplicateDropped,
            Count::FromCache => EventKind::ReplyFromCache,
            Count::GivenUp => EventKind::RequestGivenUp,
        };
        if self.handle.monitors.is_empty() {
            return;
        }
        let endpoint = pipe
            .and_then(|p| pipes.meta(p))
            .map(|m| m.endpoint.clone())
            .unwrap_or_default();
        self.handle.monitors.emit(kind, &endpoint, detail());
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::new(Arc::new(SocketHandle::new(crate::SocketType::Req)))
    }
}

impl Exchange {
    /// Begins the exchange of request `id`, just sent on `pipe` (its body is in `body`).
    fn start(&mut self, id: u32, pipe: PipeId) {
        self.id = id;
        self.rounds = 1;
        self.sent = 1;
        self.peers.clear();
        self.peers.push(pipe);
        self.carrier = Some(pipe);
        self.last = Some(pipe);
        self.want_send = false;
        self.due = None;
    }

    /// The request as it goes on the wire again: id frame, delimiter, body (a new
    /// message: resends are rare).
    fn wire(&self) -> Message {
        let mut m = Message::from(self.body.frames());
        m.push_front(Bytes::new());
        m.push_front(Bytes::copy_from_slice(&self.id.to_ne_bytes()));
        m
    }
}

/// Writes the exchange's request to the next pipe that takes it. `Err` only for a
/// request no pipe can ever take (larger than a ring).
fn send_round(pipes: &mut Pipes, ex: &mut Exchange, reporter: &Reporter) -> Result<()> {
    match pipes.write_balanced(ex.wire()) {
        Ok(p) => {
            ex.sent += 1;
            let elsewhere = ex.last != Some(p);
            if elsewhere {
                reporter.handle.reqrep.add(Count::Failover);
            }
            reporter.report(Count::Resend, pipes, Some(p), || {
                format!(
                    "request {:#x}, attempt {}{}",
                    ex.id,
                    ex.sent,
                    if elsewhere { ", to another peer" } else { "" }
                )
            });
            tracing::debug!("REQ resends request {:#x} (attempt {})", ex.id, ex.sent);
            ex.last = Some(p);
            ex.carrier = Some(p);
            ex.want_send = false;
            if !ex.peers.contains(&p) {
                ex.peers.push(p);
            }
            Ok(())
        }
        // No pipe can take it now: sent as soon as one can.
        Err(SendError {
            error: Error::WouldBlock,
            ..
        }) => Ok(()),
        Err(e) => Err(e.error),
    }
}

/// A random routing id for a REQ with resend: 16 bytes, the first not zero (RFC 23
/// keeps ids starting with a zero byte for ROUTERs to make up).
pub(crate) fn random_routing_id() -> Bytes {
    use std::hash::{BuildHasher, Hasher};
    let mut out = BytesMut::with_capacity(16);
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        h.write_u64(i);
        h.write_u64(u64::from(super::simple::seed()));
        out.put_u64(h.finish());
    }
    if out[0] == 0 {
        out[0] = 1;
    }
    out.freeze()
}

/// Takes the request id and the delimiter off a reply.
fn parse_reply(mut msg: Message) -> Option<(u32, Message)> {
    let id = msg.pop_front()?;
    let id = u32::from_ne_bytes(id.as_ref().try_into().ok()?);
    match msg.pop_front() {
        Some(f) if f.is_empty() => Some((id, msg)),
        _ => None,
    }
}

impl Req {
    pub(crate) fn new(reporter: Reporter) -> Req {
        Req {
            pipes: Pipes::default(),
            state: ReqState::Ready,
            next_id: super::simple::seed(),
            correlate: false,
            relaxed: false,
            resend: None,
            attempts: crate::reliable::DEFAULT_REQ_RESEND_ATTEMPTS,
            reporter,
            ex: Exchange::default(),
            next_body: KeptFrames::default(),
            ids: BytesMut::new(),
            pipes_changed: false,
        }
    }

    /// A 4-byte frame with request id `id`, cut from the shared buffer `ids`: no
    /// allocation of its own (one per [`ID_BUFFER`] bytes at most, none in steady
    /// state, when the buffer is reclaimed).
    ///
    /// The buffer is filled with the ids of the next requests all at once (`id`,
    /// `id + 1`, ...), and a frame is cut from its front for each request. So the peer
    /// that reads the ids (a REP on another core) takes one cache line from this core
    /// per 16 requests, not one per request: the line an id is written into right
    /// before it goes is still this core's, and reading it there costs a transfer
    /// between the cores (measured: about 100 ns of an inproc round trip).
    fn id_frame(&mut self, id: u32) -> Bytes {
        let want = id.to_ne_bytes();
        if self.ids.len() < 4 || self.ids[..4] != want {
            // Used up, or the ids ahead are not this request's (a send that did not
            // go, or a first request): fill again from `id`.
            self.ids.clear();
            self.ids.reserve(ID_BUFFER);
            let mut next = id;
            while self.ids.len() + 4 <= ID_BUFFER {
                self.ids.put_slice(&next.to_ne_bytes());
                next = next.wrapping_add(1);
            }
        }
        self.ids.split_to(4).freeze()
    }

    /// Ends the current exchange: the error the caller returns.
    fn give_up(&mut self) -> Error {
        if !matches!(
            std::mem::replace(&mut self.state, ReqState::Ready),
            ReqState::Resending
        ) {
            return Error::Timeout;
        }
        let ex = &self.ex;
        self.reporter
            .report(Count::GivenUp, &self.pipes, ex.last, || {
                format!(
                    "request {:#x}: no reply after {} attempts to {} peers",
                    ex.id,
                    ex.sent,
                    ex.peers.len()
                )
            });
        Error::RequestTimeout {
            attempts: ex.sent,
            peers: u32::try_from(ex.peers.len()).unwrap_or(u32::MAX),
        }
    }

    fn recv_resending(&mut self) -> Result<Message> {
        while let Some((from, msg)) = self.pipes.read_fair() {
            match parse_reply(msg) {
                Some((id, body)) if id == self.ex.id => {
                    self.state = ReqState::Ready;
                    return Ok(body);
                }
                Some((id, _)) => {
                    self.reporter
                        .report(Count::StaleReply, &self.pipes, Some(from), || {
                            format!("a reply to request {id:#x}, not the current one")
                        });
                }
                None => {
                    tracing::debug!("REQ drops a malformed reply (no request id or delimiter)");
                    self.reporter
                        .report(Count::Malformed, &self.pipes, Some(from), || {
                            "a reply without a 4-byte request id and an empty delimiter".into()
                        });
                }
            }
        }
        // The connection that carried the request went away: the round ends now. Looked
        // at only when a pipe came or went, or the clock ticked (once per receive call,
        // and when a round ends), not on every spin of a wait. (`gone` is not needed
        // otherwise: the carrier is looked up in the live pipes.) A carrier whose peer
        // is gone drains: a reply it still holds was read above, and one that is read
        // later is still the reply (its id matches) even after the resend went.
        if self.pipes_changed || !self.pipes.gone.is_empty() {
            self.pipes_changed = false;
            self.pipes.prune_closed();
            self.pipes.gone.clear();
            let ex = &mut self.ex;
            if ex.carrier.is_some_and(|p| !self.pipes.is_live(p)) {
                ex.carrier = None;
                if ex.rounds < self.attempts {
                    ex.rounds += 1;
                    ex.want_send = true;
                    ex.due = None;
                }
            }
        }
        if self.ex.want_send {
            if let Err(e) = send_round(&mut self.pipes, &mut self.ex, &self.reporter) {
                self.state = ReqState::Ready;
                self.reporter.handle.reqrep.add(Count::GivenUp);
                return Err(e);
            }
        }
        Err(Error::WouldBlock)
    }
}

impl Pattern for Req {
    fn attach(&mut self, id: PipeId, pipe: Pipe) {
        self.pipes.add(id, pipe);
        self.pipes_changed = true;
    }
    fn detach(&mut self, id: PipeId) {
        self.pipes.remove(id);
        self.pipes_changed = true;
    }
    fn configure(&mut self, opts: &PatternOptions) {
        self.correlate = opts.req_correlate;
        self.relaxed = opts.req_relaxed;
        self.resend = opts.req_resend;
        self.attempts = opts.req_resend_attempts.max(1);
    }
    fn send(&mut self, msg: Message) -> Result<(), SendError> {
        if !matches!(self.state, ReqState::Ready) && !self.relaxed {
            return Err(SendError {
                error: Error::State(
                    "a REQ socket must receive the reply before sending again (or set req_relaxed)"
                        .into(),
                ),
                message: msg,
            });
        }
        let msg = check_not_empty(msg)?;
        let id = self.next_id.wrapping_add(1);
        let resend = self.resend.is_some();
        let correlate = self.correlate || resend;
        // With resend the body is kept for the next rounds (copied when small).
        if resend {
            self.next_body.keep(msg.frames());
        }
        let mut wire = msg;
        wire.push_front(Bytes::new());
        if correlate {
            let frame = self.id_frame(id);
            wire.push_front(frame);
        }
        match self.pipes.write_balanced(wire) {
            Ok(pipe) => {
                self.next_id = id;
                self.state = if resend {
                    std::mem::swap(&mut self.ex.body, &mut self.next_body);
                    self.ex.start(id, pipe);
                    ReqState::Resending
                } else {
                    ReqState::Waiting { pipe, id }
                };
                Ok(())
            }
            Err(mut back) => {
                back.message.pop_front();
                if correlate {
                    back.message.pop_front();
                }
                Err(back)
            }
        }
    }
    fn recv(&mut self) -> Result<Message> {
        let (pipe, id) = match self.state {
            ReqState::Ready => {
                return Err(Error::State(
                    "a REQ socket must send a request before receiving".into(),
                ));
            }
            ReqState::Resending => return self.recv_resending(),
            ReqState::Waiting { pipe, id } => (pipe, id),
        };
        self.pipes.gone.clear();
        loop {
            let Some((from, msg)) = self.pipes.read_fair() else {
                return Err(Error::WouldBlock);
            };
            if from != pipe {
                tracing::trace!("REQ drops a message from a pipe it did not ask");
                self.reporter
                    .report(Count::StaleReply, &self.pipes, Some(from), || {
                        "a reply from a peer that was not asked".into()
                    });
                continue;
            }
            // The envelope comes off in place; the body frames are not copied.
            let mut msg = msg;
            if self.correlate {
                match msg.pop_front() {
                    Some(f) if f.as_ref() == id.to_ne_bytes() => {}
                    Some(f) if f.len() == 4 => {
                        tracing::trace!("REQ drops a reply with a wrong request id");
                        self.reporter
                            .report(Count::StaleReply, &self.pipes, Some(from), || {
                                "a reply to another request".into()
                            });
                        continue;
                    }
                    _ => {
                        tracing::trace!("REQ drops a reply without a request id");
                        self.reporter
                            .report(Count::Malformed, &self.pipes, Some(from), || {
                                "a reply without a 4-byte request id".into()
                            });
                        continue;
                    }
                }
            }
            match msg.pop_front() {
                Some(f) if f.is_empty() => {}
                _ => {
                    tracing::trace!("REQ drops a reply without an empty delimiter");
                    self.reporter
                        .report(Count::Malformed, &self.pipes, Some(from), || {
                            "a reply without an empty delimiter".into()
                        });
                    continue;
                }
            }
            self.state = ReqState::Ready;
            return Ok(msg);
        }
    }
    fn can_send(&mut self) -> bool {
        (matches!(self.state, ReqState::Ready) || self.relaxed) && self.pipes.any_writable()
    }
    fn timed(&self) -> bool {
        self.resend.is_some() || matches!(self.state, ReqState::Resending)
    }
    fn timer(&self) -> Option<Instant> {
        match self.state {
            ReqState::Resending => self.ex.due,
            _ => None,
        }
    }
    fn tick(&mut self, now: Instant) -> Result<()> {
        let Some(interval) = self.resend else {
            return Ok(());
        };
        if !matches!(self.state, ReqState::Resending) {
            return Ok(());
        }
        // The receive looks at the carrier again after a tick (see `pipes_changed`).
        self.pipes_changed = true;
        let ex = &mut self.ex;
        let due = *ex
            .due
            .get_or_insert_with(|| now.checked_add(interval).unwrap_or(now));
        if now < due {
            return Ok(());
        }
        if ex.rounds >= self.attempts {
            return Err(self.give_up());
        }
        ex.rounds += 1;
        ex.want_send = true;
        ex.due = now.checked_add(interval);
        if let Err(e) = send_round(&mut self.pipes, ex, &self.reporter) {
            self.state = ReqState::Ready;
            self.reporter.handle.reqrep.add(Count::GivenUp);
            return Err(e);
        }
        Ok(())
    }
    fn recv_timed_out(&mut self) -> Error {
        match self.state {
            ReqState::Resending => self.give_up(),
            _ => Error::Timeout,
        }
    }
}

/// How many messages already queued on a pipe a REP looks at when it replies, to drop
/// copies of the request it just answered.
const LOOKAHEAD: usize = 64;

/// The request a REP is answering.
#[derive(Debug)]
struct Replying {
    pipe: PipeId,
    envelope: FrameVec,
    /// Set when the request carried an id.
    key: Option<RequestKey>,
    /// Read in turn (not read ahead): its reply may look ahead.
    in_turn: bool,
}

/// REP: receive, send, receive...
#[derive(Debug)]
pub(crate) struct Rep {
    pipes: Pipes,
    replying: Option<Replying>,
    /// A request read ahead of the application (see [`Rep::drop_queued_copies`]).
    ahead: VecDeque<(PipeId, Message)>,
    cache: Box<dyn ReplyCache>,
    /// The size, age and bytes the default cache was made with (`None`: the user's
    /// cache).
    cache_bounds: Option<(usize, Duration, usize)>,
    reporter: Reporter,
    /// The requester of each pipe's direct requests (see [`request_key`]).
    requesters: Requesters,
}

/// The requester part of the [`RequestKey`] of requests that come straight from a pipe's
/// peer (no ROUTER in between), made once per pipe: such a request's key costs no
/// allocation. (One that came through ROUTERs has its hops in its key, made for it.)
#[derive(Debug, Default)]
struct Requesters(Vec<Known>);

/// What a REP knows of the requester at the other end of one pipe.
#[derive(Debug)]
struct Known {
    pipe: PipeId,
    requester: Bytes,
    /// The id of the last request read from this pipe.
    last: Option<u32>,
    /// No other pipe of this REP has had the same requester (routing id). Then a
    /// request whose id is `last + 1` is new: one pipe carries a requester's requests
    /// in the order it sent them, and a requester's ids go up by one per request, so
    /// no copy of it can have come before. Such a request is not looked up in the
    /// cache.
    alone: bool,
}

impl Requesters {
    /// Forgets the pipes the REP no longer has.
    fn forget(&mut self, gone: impl IntoIterator<Item = PipeId>) {
        for id in gone {
            self.0.retain(|k| k.pipe != id);
        }
    }
}

impl Default for Rep {
    fn default() -> Self {
        Rep::new(Reporter::default())
    }
}

/// The key of a request with an id (see the module docs), or `None` for a request
/// without one (libzmq's plain REQ); with it, whether the request is known to be new
/// (see [`Known::alone`]: then no copy of it can be in the cache).
fn request_key(
    pipes: &Pipes,
    known: &mut Requesters,
    pipe: PipeId,
    envelope: &[Bytes],
    body: &Message,
) -> Option<(RequestKey, bool)> {
    let n = envelope.len();
    if n < 2 {
        return None;
    }
    let request_id = u32::from_ne_bytes(envelope[n - 2].as_ref().try_into().ok()?);
    let hops = &envelope[..n - 2];
    let (requester, new) = if !hops.is_empty() {
        (requester(pipes, pipe, hops), false)
    } else if let Some(k) = known.0.iter_mut().find(|k| k.pipe == pipe) {
        let new = k.alone && k.last.is_some_and(|l| l.wrapping_add(1) == request_id);
        k.last = Some(request_id);
        (k.requester.clone(), new)
    } else {
        let r = requester(pipes, pipe, hops);
        // Only for a pipe the REP has (a request read ahead may outlive its pipe).
        if pipes.contains(pipe) {
            let mut alone = true;
            for other in known.0.iter_mut().filter(|k| k.requester == r) {
                other.alone = false;
                alone = false;
            }
            known.0.push(Known {
                pipe,
                requester: r.clone(),
                last: Some(request_id),
                alone,
            });
        }
        (r, false)
    };
    let key = RequestKey {
        requester,
        request_id,
        fingerprint: fingerprint(body.frames()),
    };
    Some((key, new))
}

/// The requester of a request that came on `pipe` through `hops` (see [`RequestKey`]).
fn requester(pipes: &Pipes, pipe: PipeId, hops: &[Bytes]) -> Bytes {
    let mut r = BytesMut::new();
    let rid = pipes
        .meta(pipe)
        .map(|m| m.routing_id.clone())
        .unwrap_or_default();
    if !rid.is_empty() {
        r.put_u8(b'r');
        r.put_u32(rid.len() as u32);
        r.put_slice(&rid);
    } else if hops.is_empty() {
        // A requester without a routing id is known by its connection only.
        r.put_u8(b'p');
        r.put_u64(pipe);
    }
    for h in hops {
        r.put_u8(b'h');
        r.put_u32(h.len() as u32);
        r.put_slice(h);
    }
    r.freeze()
}

/// The default reply cache with the bounds of `o`.
fn default_cache(o: &PatternOptions) -> MemoryReplyCache {
    MemoryReplyCache::new(o.rep_cache_size, o.rep_cache_age).with_max_bytes(o.rep_cache_bytes)
}

impl Rep {
    pub(crate) fn new(reporter: Reporter) -> Rep {
        let o = PatternOptions::default();
        Rep {
            pipes: Pipes::default(),
            replying: None,
            ahead: VecDeque::new(),
            cache: Box::new(default_cache(&o)),
            cache_bounds: Some((o.rep_cache_size, o.rep_cache_age, o.rep_cache_bytes)),
            reporter,
            requesters: Requesters::default(),
        }
    }

    /// Whether requests with ids are de-duplicated (a default cache of size 0: no).
    fn dedup(&self) -> bool {
        self.cache_bounds.is_none_or(|(size, _, _)| size > 0)
    }

    /// After answering `key` on `pipe`: reads what that pipe has queued and drops the
    /// copies of `key` at its head (at most [`LOOKAHEAD`]); the first other message is
    /// kept in `ahead`, to be received next. (A REQ's copies queue up back to back: it
    /// has one request out. Copies behind other requests, through a proxy, are
    /// answered from the cache instead.) Only after a request read in turn, so that a
    /// busy pipe cannot keep the others waiting.
    fn drop_queued_copies(&mut self, pipe: PipeId, key: &RequestKey) {
        let mut read = 0;
        while read < LOOKAHEAD && self.ahead.is_empty() {
            let Some(i) = self.pipes.list.iter().position(|(p, _)| *p == pipe) else {
                return;
            };
            // Nothing queued (the common case): done, without a read's bookkeeping.
            if self.pipes.list[i].1.reader.is_empty() {
                return;
            }
            let Ok(Some(msg)) = self.pipes.list[i].1.reader.try_read() else {
                return;
            };
            read += 1;
            let copy = split_envelope(msg.clone())
                .and_then(|(env, body)| {
                    request_key(&self.pipes, &mut self.requesters, pipe, &env, &body)
                })
                .is_some_and(|(k, _)| &k == key);
            if copy {
                self.reporter
                    .report(Count::Duplicate, &self.pipes, Some(pipe), || {
                        format!(
                            "a copy of request {:#x}, which came while it was handled",
                            key.request_id
                        )
                    });
            } else {
                self.ahead.push_back((pipe, msg));
            }
        }
    }
}

impl Pattern for Rep {
    fn attach(&mut self, id: PipeId, pipe: Pipe) {
        self.pipes.add(id, pipe);
    }
    fn detach(&mut self, id: PipeId) {
        self.pipes.remove(id);
        self.ahead.retain(|(p, _)| *p != id);
        self.requesters.forget([id]);
    }
    fn configure(&mut self, opts: &PatternOptions) {
        let bounds = (
            opts.rep_cache_size,
            opts.rep_cache_age,
            opts.rep_cache_bytes,
        );
        if self.cache_bounds.is_some_and(|b| b != bounds) {
            self.cache = Box::new(default_cache(opts));
            self.cache_bounds = Some(bounds);
        }
    }
    fn set_reply_cache(&mut self, cache: Box<dyn ReplyCache>) -> Result<()> {
        self.cache = cache;
        self.cache_bounds = None;
        Ok(())
    }
    fn send(&mut self, msg: Message) -> Result<(), SendError> {
        let Some(Replying {
            pipe,
            envelope,
            key,
            in_turn,
        }) = self.replying.take()
        else {
            return Err(SendError {
                error: Error::State("a REP socket must receive a request before replying".into()),
                message: msg,
            });
        };
        // Remembered before it goes: the write takes the message. (A reply that can
        // never go is followed by another one, put again under the same key.)
        if let Some(k) = key.as_ref().filter(|_| self.dedup()) {
            self.cache.put(k, &msg);
        }
        let envelope_len = envelope.len();
        let wire = if envelope_len == 1 {
            // The delimiter only (a REQ's request): in front of the reply in place.
            let mut wire = msg;
            wire.push_front(envelope.into_iter().next().unwrap_or_default());
            wire
        } else {
            let mut frames = envelope;
            frames.extend(msg);
            Message::from(frames)
        };
        match self.pipes.write_to(pipe, wire) {
            Ok(()) => {}
            // As libzmq: a reply to a peer that is gone or not reading is dropped.
            Err(WriteError::Full(_)) | Err(WriteError::Closed(_)) => {
                tracing::debug!("REP drops a reply: the requester is gone or full");
            }
            // A reply that can never go: the send fails, and the reply may be sent
            // again (smaller).
            Err(WriteError::Unsendable(mut m, error)) => {
                let mut envelope = FrameVec::with_capacity(envelope_len);
                for _ in 0..envelope_len {
                    envelope.extend(m.pop_front());
                }
                self.replying = Some(Replying {
                    pipe,
                    envelope,
                    key,
                    in_turn,
                });
                return Err(SendError { error, message: m });
            }
        }
        // Answered (even if the reply was dropped: a copy that comes again, by another
        // way, is answered from the cache).
        if let (Some(key), true, true) = (key, in_turn, self.dedup()) {
            self.drop_queued_copies(pipe, &key);
        }
        Ok(())
    }
    fn recv(&mut self) -> Result<Message> {
        if self.replying.is_some() {
            return Err(Error::State(
                "a REP socket must send the reply before receiving again".into(),
            ));
        }
        if !self.pipes.gone.is_empty() {
            let gone = self.pipes.gone.drain(..).map(|(id, _)| id);
            self.requesters.forget(gone);
        }
        loop {
            let (next, in_turn) = match self.ahead.pop_front() {
                Some(m) => (Some(m), false),
                None => (self.pipes.read_fair(), true),
            };
            let Some((pipe, msg)) = next else {
                // Nothing to do until a request comes: the cache finishes its last put
                // now, out of the next round trip's way.
                if self.dedup() {
                    self.cache.idle();
                }
                return Err(Error::WouldBlock);
            };
            let Some((envelope, body)) = split_envelope(msg) else {
                tracing::debug!("REP drops a request without an empty delimiter");
                self.reporter
                    .report(Count::Malformed, &self.pipes, Some(pipe), || {
                        "a request without an empty delimiter".into()
                    });
                continue;
            };
            let (key, new) = match self.dedup() {
                true => request_key(&self.pipes, &mut self.requesters, pipe, &envelope, &body)
                    .map_or((None, false), |(k, new)| (Some(k), new)),
                false => (None, false),
            };
            if let Some(k) = key.as_ref().filter(|_| !new) {
                if let Some(reply) = self.cache.get(k) {
                    self.reporter
                        .report(Count::FromCache, &self.pipes, Some(pipe), || {
                            format!("a copy of answered request {:#x}", k.request_id)
                        });
                    let mut frames = envelope;
                    frames.extend(reply);
                    if self.pipes.write_to(pipe, Message::from(frames)).is_err() {
                        tracing::debug!("REP drops a cached reply: the requester is gone or full");
                    }
                    continue;
                }
            }
            self.replying = Some(Replying {
                pipe,
                envelope,
                key,
                in_turn,
            });
            return Ok(body);
        }
    }
    fn can_send(&mut self) -> bool {
        self.replying.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn req_envelope_state_and_correlation() {
        let mut r = Req::default();
        let (p, mut rep) = pipe(0, b"");
        r.attach(1, p);
        assert!(matches!(r.recv(), Err(Error::State(_))));
        r.send(msg(&[b"q"])).unwrap();
        assert_eq!(rep.read().unwrap(), msg(&[b"", b"q"]));
        let e = r.send(msg(&[b"again"])).unwrap_err();
        assert!(matches!(e.error, Error::State(_)));
        assert_eq!(e.message, msg(&[b"again"]));
        rep.write(msg(&[b"no delimiter"]));
        rep.write(msg(&[b"", b"a", b""]));
        assert_eq!(r.recv().unwrap(), msg(&[b"a", b""]));

        r.configure(&PatternOptions {
            req_correlate: true,
            req_relaxed: true,
            ..Default::default()
        });
        r.send(msg(&[b"1"])).unwrap();
        let first = rep.read().unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(first.frames()[0].len(), 4, "a 4-byte request id frame");
        assert!(first.frames()[1].is_empty());
        r.send(msg(&[b"2"])).unwrap(); // relaxed: a new request replaces the old one
        let second = rep.read().unwrap();
        assert_ne!(first.frames()[0], second.frames()[0]);
        // The stale reply is dropped; the current one comes through.
        rep.write(Message::from(vec![
            first.frames()[0].clone(),
            Bytes::new(),
            Bytes::from("old"),
        ]));
        rep.write(Message::from(vec![
            second.frames()[0].clone(),
            Bytes::new(),
            Bytes::from("new"),
        ]));
        assert_eq!(r.recv().unwrap(), msg(&[b"new"]));
    }

    fn reporter() -> (Reporter, Arc<SocketHandle>) {
        let h = Arc::new(SocketHandle::new(crate::SocketType::Req));
        (Reporter::new(h.clone()), h)
    }

    fn resending(attempts: u32) -> (Req, Arc<SocketHandle>) {
        let (rep, c) = reporter();
        let mut r = Req::new(rep);
        r.configure(&PatternOptions {
            req_resend: Some(Duration::from_millis(100)),
            req_resend_attempts: attempts,
            ..Default::default()
        });
        (r, c)
    }

    fn reply_to(req: &Message, body: &'static [u8]) -> Message {
        Message::from(vec![
            req.frames()[0].clone(),
            Bytes::new(),
            Bytes::from_static(body),
        ])
    }

    #[test]
    fn req_resend_fails_over_and_accepts_a_late_reply_once() {
        let (mut r, c) = resending(3);
        let (p1, mut a) = pipe(0, b"");
        let (p2, mut b) = pipe(0, b"");
        r.attach(1, p1);
        r.attach(2, p2);
        r.send(msg(&[b"q"])).unwrap();
        let t0 = Instant::now();
        r.tick(t0).unwrap();
        assert!(r.timer().is_some_and(|t| t > t0));
        let first = a.read().or_else(|| b.read()).expect("sent once");
        assert_eq!(first.len(), 3, "request id, delimiter, body");
        assert!(a.read().is_none() && b.read().is_none());
        assert!(matches!(r.recv(), Err(Error::WouldBlock)));
        r.tick(t0 + Duration::from_millis(50)).unwrap();
        assert!(
            a.read().is_none() && b.read().is_none(),
            "not before the interval"
        );
        r.tick(t0 + Duration::from_millis(101)).unwrap();
        let second = a.read().or_else(|| b.read()).expect("resent");
        assert_eq!(second, first, "the same request id and body");
        let s = c.reqrep.snapshot();
        assert_eq!((s.resends, s.failovers), (1, 1), "to the other pipe");
        // Both peers answer; the first answer is taken, the second is stale.
        a.write(reply_to(&first, b"from a"));
        b.write(reply_to(&first, b"from b"));
        let got = r.recv().unwrap();
        assert!(got == msg(&[b"from a"]) || got == msg(&[b"from b"]));
        r.send(msg(&[b"next"])).unwrap();
        let next = a.read().or_else(|| b.read()).unwrap();
        assert_ne!(next.frames()[0], first.frames()[0], "a new request id");
        a.write(reply_to(&next, b"next reply"));
        assert_eq!(r.recv().unwrap(), msg(&[b"next reply"]));
        assert_eq!(c.reqrep.snapshot().stale_replies_dropped, 1);
    }

    #[test]
    fn req_resends_at_once_when_its_pipe_goes_and_again_when_one_comes() {
        let (mut r, c) = resending(3);
        let (p1, mut a) = pipe(0, b"");
        r.attach(1, p1);
        r.send(msg(&[b"q"])).unwrap();
        let sent = a.read().unwrap();
        drop(a);
        assert!(
            matches!(r.recv(), Err(Error::WouldBlock)),
            "no pipe to resend to"
        );
        let (p2, mut b) = pipe(0, b"");
        r.attach(2, p2);
        assert!(matches!(r.recv(), Err(Error::WouldBlock)));
        assert_eq!(
            b.read().unwrap(),
            sent,
            "resent to the new pipe without waiting"
        );
        assert_eq!(c.reqrep.snapshot().resends, 1);
        // Malformed replies are dropped and counted.
        b.write(msg(&[b"xx", b"", b"short id"]));
        b.write(msg(&[b"", b"no id"]));
        b.write(reply_to(&sent, b"ok"));
        assert_eq!(r.recv().unwrap(), msg(&[b"ok"]));
        assert_eq!(c.reqrep.snapshot().malformed_dropped, 2);
    }

    #[test]
    fn req_takes_a_reply_queued_on_its_carrier_before_the_peer_went() {
        let (mut r, c) = resending(3);
        let (p1, mut a) = pipe(0, b"");
        r.attach(1, p1);
        r.send(msg(&[b"q"])).unwrap();
        let sent = a.read().unwrap();
        // The REP answers and goes away before the REQ reads.
        a.write(reply_to(&sent, b"answer"));
        drop(a);
        assert_eq!(r.recv().unwrap(), msg(&[b"answer"]));
        assert_eq!(c.reqrep.snapshot().resends, 0, "answered: nothing resent");
        // The next REP goes away with only something else queued: the request is
        // resent, at once, to the next pipe that comes.
        let (p2, mut b) = pipe(0, b"");
        r.attach(2, p2);
        r.send(msg(&[b"q2"])).unwrap();
        let sent = b.read().unwrap();
        b.write(msg(&[b"not", b"", b"a reply"]));
        drop(b);
        assert!(matches!(r.recv(), Err(Error::WouldBlock)));
        let (p3, mut d) = pipe(0, b"");
        r.attach(3, p3);
        assert!(matches!(r.recv(), Err(Error::WouldBlock)));
        assert_eq!(d.read().unwrap(), sent, "resent at once to the new pipe");
        assert_eq!(c.reqrep.snapshot().resends, 1);
        d.write(reply_to(&sent, b"ok"));
        assert_eq!(r.recv().unwrap(), msg(&[b"ok"]));
    }

    #[test]
    fn req_gives_up_after_its_attempts_and_can_send_again() {
        let (mut r, c) = resending(2);
        let (p1, mut a) = pipe(0, b"");
        r.attach(1, p1);
        r.send(msg(&[b"q"])).unwrap();
        let t0 = Instant::now();
        r.tick(t0).unwrap();
        r.tick(t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(a.read().unwrap(), a.read().unwrap(), "sent twice");
        let e = r.tick(t0 + Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::RequestTimeout {
                    attempts: 2,
                    peers: 1
                }
            ),
            "{e}"
        );
        assert!(e.is_timeout());
        assert_eq!(
            e.to_string(),
            "request timed out: no reply after 2 attempts to 1 peer"
        );
        assert_eq!(c.reqrep.snapshot().given_up, 1);
        r.send(msg(&[b"again"])).unwrap();
        // The receive timeout gives up too.
        assert!(matches!(
            r.recv_timed_out(),
            Error::RequestTimeout { attempts: 1, .. }
        ));
        r.send(msg(&[b"once more"])).unwrap();
    }

    #[test]
    fn rep_answers_copies_from_its_cache_and_drops_those_queued_meanwhile() {
        let (rep, c) = reporter();
        let mut r = Rep::new(rep);
        let (p, mut req) = pipe(0, b"requester-1");
        r.attach(1, p);
        let id = Bytes::from_static(&[1, 2, 3, 4]);
        let request = Message::from(vec![id.clone(), Bytes::new(), Bytes::from("q")]);
        req.write(request.clone());
        assert_eq!(r.recv().unwrap(), msg(&[b"q"]));
        // Copies that come while it is handled, and another request behind them.
        req.write(request.clone());
        req.write(request.clone());
        req.write(Message::from(vec![
            Bytes::from_static(&[9, 9, 9, 9]),
            Bytes::new(),
            Bytes::from("other"),
        ]));
        r.send(msg(&[b"a"])).unwrap();
        assert_eq!(
            req.read().unwrap(),
            Message::from(vec![id.clone(), Bytes::new(), Bytes::from("a")])
        );
        assert_eq!(c.reqrep.snapshot().duplicates_dropped, 2);
        assert_eq!(
            r.recv().unwrap(),
            msg(&[b"other"]),
            "the next request is kept"
        );
        r.send(msg(&[b"b"])).unwrap();
        req.read().unwrap();
        // A copy after the answer: answered from the cache, not handed over.
        req.write(request.clone());
        assert!(matches!(r.recv(), Err(Error::WouldBlock)));
        assert_eq!(
            req.read().unwrap(),
            Message::from(vec![id.clone(), Bytes::new(), Bytes::from("a")])
        );
        assert_eq!(c.reqrep.snapshot().replies_from_cache, 1);
        // The same id with another body is another request.
        req.write(Message::from(vec![
            id.clone(),
            Bytes::new(),
            Bytes::from("new body"),
        ]));
        assert_eq!(r.recv().unwrap(), msg(&[b"new body"]));
        r.send(msg(&[b"c"])).unwrap();
        // Without an id (libzmq's plain REQ): every copy is the application's.
        req.write(msg(&[b"", b"plain"]));
        req.write(msg(&[b"", b"plain"]));
        for _ in 0..2 {
            assert_eq!(r.recv().unwrap(), msg(&[b"plain"]));
            r.send(msg(&[b"p"])).unwrap();
        }
        // Malformed: counted, dropped.
        req.write(msg(&[b"no delimiter"]));
        assert!(matches!(r.recv(), Err(Error::WouldBlock)));
        assert_eq!(c.reqrep.snapshot().malformed_dropped, 1);
    }

    #[test]
    fn rep_looking_ahead_keeps_the_fair_queue_fair() {
        let mut r = Rep::default();
        let (pa, mut a) = pipe(0, b"busy");
        let (pb, mut b) = pipe(0, b"other");
        r.attach(1, pa);
        r.attach(2, pb);
        for i in 0..6u8 {
            a.write(msg(&[&[i, 0, 0, 0], b"", b"a"]));
        }
        b.write(msg(&[&[9, 0, 0, 0], b"", b"b"]));
        let mut order = Vec::new();
        for _ in 0..7 {
            let m = r.recv().unwrap();
            order.push(m.frames()[0].clone());
            r.send(msg(&[b"ok"])).unwrap();
        }
        let first_b = order.iter().position(|f| f.as_ref() == b"b").unwrap();
        assert!(
            first_b <= 2,
            "the other pipe waited behind the busy one: {order:?}"
        );
    }

    #[test]
    fn rep_with_a_cache_of_size_zero_hands_every_copy_over() {
        let mut r = Rep::default();
        r.configure(&PatternOptions {
            rep_cache_size: 0,
            ..Default::default()
        });
        let (p, mut req) = pipe(0, b"requester");
        r.attach(1, p);
        let id: &[u8] = &[1, 1, 1, 1];
        for _ in 0..2 {
            req.write(msg(&[id, b"", b"q"]));
        }
        for _ in 0..2 {
            assert_eq!(r.recv().unwrap(), msg(&[b"q"]));
            r.send(msg(&[b"a"])).unwrap();
        }
        assert_eq!(req.read().unwrap(), msg(&[id, b"", b"a"]));
        assert_eq!(req.read().unwrap(), msg(&[id, b"", b"a"]));
    }

    #[test]
    fn rep_answers_from_its_cache_a_copy_on_another_pipe_of_the_same_requester() {
        let (rep, c) = reporter();
        let mut r = Rep::new(rep);
        // One requester (routing id "same") on two pipes, as a REQ connected twice.
        let (p1, mut a) = pipe(0, b"same");
        let (p2, mut b) = pipe(0, b"same");
        r.attach(1, p1);
        r.attach(2, p2);
        let mut handled = Vec::new();
        let mut exchange = |from: &mut Peer, to_app: bool, id: u8, r: &mut Rep| {
            from.write(msg(&[&[id, 0, 0, 0], b"", b"q"]));
            if to_app {
                assert_eq!(r.recv().unwrap(), msg(&[b"q"]));
                handled.push(id);
                r.send(msg(&[&[b'a', id]])).unwrap();
            } else {
                assert!(matches!(r.recv(), Err(Error::WouldBlock)));
            }
            assert_eq!(
                from.read().unwrap(),
                msg(&[&[id, 0, 0, 0], b"", &[b'a', id]])
            );
        };
        exchange(&mut a, true, 1, &mut r);
        exchange(&mut a, true, 2, &mut r);
        // The resend of 2 on the other pipe (a failover): from the cache.
        exchange(&mut b, false, 2, &mut r);
        exchange(&mut a, true, 3, &mut r);
        // 3 is the id after the last one seen on the second pipe, and still a copy.
        exchange(&mut b, false, 3, &mut r);
        assert_eq!(handled, [1, 2, 3], "each request handed over once");
        assert_eq!(c.reqrep.snapshot().replies_from_cache, 2);
    }

    #[test]
    fn req_request_id_frames_carry_their_ids_across_refills() {
        let mut q = Req::default();
        let mut id = u32::MAX - 300;
        let mut kept = Vec::new();
        for i in 0..700u32 {
            // Now and then an id out of turn (the id of a send that did not go).
            if i % 97 == 0 {
                assert_eq!(q.id_frame(id).as_ref(), id.to_ne_bytes());
            }
            let f = q.id_frame(id);
            assert_eq!(f.as_ref(), id.to_ne_bytes(), "request {i}");
            // Some frames stay alive (replies not back yet): the buffer is not reused.
            if i % 50 == 0 {
                kept.push((id, f));
            }
            id = id.wrapping_add(1);
        }
        for (id, f) in kept {
            assert_eq!(f.as_ref(), id.to_ne_bytes());
        }
    }

    #[test]
    fn rep_knows_requesters_apart_by_routing_id_and_hops() {
        let mut r = Rep::default();
        let (p1, mut x) = pipe(0, b"x");
        let (p2, mut y) = pipe(0, b"y");
        let (p3, mut proxy) = pipe(0, b"");
        r.attach(1, p1);
        r.attach(2, p2);
        r.attach(3, p3);
        let id: &[u8] = &[5, 5, 5, 5];
        // The same id and body from two requesters, and from two behind a proxy.
        x.write(msg(&[id, b"", b"q"]));
        y.write(msg(&[id, b"", b"q"]));
        proxy.write(msg(&[b"client-1", id, b"", b"q"]));
        proxy.write(msg(&[b"client-2", id, b"", b"q"]));
        for _ in 0..4 {
            assert_eq!(r.recv().unwrap(), msg(&[b"q"]));
            r.send(msg(&[b"a"])).unwrap();
        }
        assert_eq!(proxy.read().unwrap(), msg(&[b"client-1", id, b"", b"a"]));
        // client-1 again, through the proxy: from the cache, with its own envelope.
        proxy.write(msg(&[b"client-1", id, b"", b"q"]));
        assert!(matches!(r.recv(), Err(Error::WouldBlock)));
        proxy.read().unwrap();
        assert_eq!(proxy.read().unwrap(), msg(&[b"client-1", id, b"", b"a"]));
    }

    #[test]
    fn req_without_peer_would_block_and_returns_message() {
        let mut r = Req::default();
        let e = r.send(msg(&[b"q", b"r"])).unwrap_err();
        assert!(matches!(e.error, Error::WouldBlock));
        assert_eq!(e.message, msg(&[b"q", b"r"]));
        r.send(msg(&[b"q"])).unwrap_err();
        let (p, _rep) = pipe(0, b"");
        r.attach(1, p);
        r.send(msg(&[b"q"])).unwrap();
    }

    #[test]
    fn rep_keeps_the_envelope_and_answers_the_right_pipe() {
        let mut r = Rep::default();
        let (p1, mut a) = pipe(0, b"");
        let (p2, mut b) = pipe(0, b"");
        r.attach(1, p1);
        r.attach(2, p2);
        assert!(matches!(
            r.send(msg(&[b"x"])).unwrap_err().error,
            Error::State(_)
        ));
        a.write(msg(&[b"hop2", b"hop1", b"", b"req-a"]));
        b.write(msg(&[b"", b"req-b"]));
        assert_eq!(r.recv().unwrap(), msg(&[b"req-a"]));
        assert!(matches!(r.recv(), Err(Error::State(_))));
        r.send(msg(&[b"rep-a"])).unwrap();
        assert_eq!(r.recv().unwrap(), msg(&[b"req-b"]));
        r.send(msg(&[b"rep-b", b"2"])).unwrap();
        assert_eq!(a.read().unwrap(), msg(&[b"hop2", b"hop1", b"", b"rep-a"]));
        assert_eq!(b.read().unwrap(), msg(&[b"", b"rep-b", b"2"]));
    }
}
