//! `ipc://name[:port]`: the [`Transport`] entry of the shared-memory transport. Binding
//! claims the name on the caller's thread (a name in use fails here); the listener,
//! every connect and every connection's control socket then belong to the background
//! thread's ipc engine ([`super::ipc_engine`]), while messages go straight between the
//! sockets' threads through the rings.
//!
//! What the socket learns from here, through its [`super::Limits`]: waits spin first
//! (a shared-memory peer answers in well under a microsecond), and the smallest ring of
//! its connections bounds the size of a message (checked at send).

use std::sync::atomic::Ordering;

use super::ipc_engine::{Slot, hello, pipe_over};
use super::reactor::{Command, Listener, Target, ThreadBind, ThreadConnect};
use super::shm::{self, ShmListener};
use super::{Attachment, PipeMeta, Request, Transport};
use crate::monitor::EventKind;
use crate::{Endpoint, Error, Result, SocketType};

/// The `ipc://` transport.
#[derive(Debug)]
pub(crate) struct Ipc;

fn name_port<'a>(req: &'a Request<'_>) -> Result<(&'a str, Option<u16>)> {
    match req.endpoint {
        Endpoint::Ipc { name, port } => Ok((name, *port)),
        _ => Err(Error::endpoint(req.uri, "not an ipc:// endpoint")),
    }
}

impl Transport for Ipc {
    fn bind(&self, req: &Request<'_>) -> Result<Attachment> {
        bind(req).inspect_err(|e| {
            req.socket
                .monitors
                .emit(EventKind::BindFailed, req.uri, e.to_string())
        })
    }

    /// Connects in the background. Unless the socket is a ROUTER or `immediate` is
    /// set, the pipe that queues messages until (and across) connections is attached
    /// now.
    fn connect(&self, req: &Request<'_>) -> Result<Attachment> {
        let (name, port) = name_port(req)?;
        let reactor = req.hub.reactor()?;
        let options = req.options;
        // Check the options now so that a bad one fails here, not in the thread.
        req.socket.signal.shared_doorbell()?;
        let ring = options.ipc.effective_ring_size();
        req.socket.limits.ring.fetch_min(ring, Ordering::Relaxed);
        req.socket.limits.spin.store(true, Ordering::Relaxed);
        let id = super::next_pipe_id();
        let keeps_pipe = !options.immediate && options.socket_type != SocketType::Router;
        let slot = keeps_pipe.then(|| Slot::new(options.send_hwm, true));
        let pipe = slot.as_ref().map(|s| {
            (
                super::next_pipe_id(),
                pipe_over(
                    s,
                    PipeMeta {
                        routing_id: bytes::Bytes::new(),
                        endpoint: req.uri.to_owned(),
                    },
                    options.conflate,
                ),
            )
        });
        let pipe_id = pipe.as_ref().map(|(id, _)| *id);
        reactor.command(Command::Connect {
            id,
            socket: req.socket.clone(),
            options: options.clone(),
            uri: req.uri.to_owned(),
            target: Target::Ipc {
                name: name.to_owned(),
                port,
                slot,
            },
        });
        Ok(Attachment {
            endpoint: req.uri.to_owned(),
            pipes: pipe.into_iter().collect(),
            handle: Box::new(ThreadConnect { id, pipe: pipe_id }),
        })
    }
}

/// Claims the name and hands the listener to the background thread.
fn bind(req: &Request<'_>) -> Result<Attachment> {
    let (name, port) = name_port(req)?;
    let reactor = req.hub.reactor()?;
    let options = req.options;
    let listener = ShmListener::bind(
        name,
        port,
        &options.ipc,
        hello(options),
        req.socket.signal.shared_doorbell()?,
    )?;
    let endpoint = listener.endpoint().to_owned();
    let id = super::next_pipe_id();
    req.socket.limits.spin.store(true, Ordering::Relaxed);
    reactor.command(Command::Listen {
        id,
        socket: req.socket.clone(),
        options: options.clone(),
        listener: Listener::Ipc { listener },
    });
    req.socket
        .monitors
        .emit(EventKind::Listening, &endpoint, "");
    Ok(Attachment {
        endpoint,
        pipes: Vec::new(),
        handle: Box::new(ThreadBind { id }),
    })
}

/// Bytes a message takes in a ring, by the ring's own accounting
/// ([`shm::ring::record_len`] per frame): the total and the largest record.
fn ring_bytes(frames: impl Iterator<Item = usize> + Clone) -> (usize, usize) {
    let rec = |len: usize| {
        shm::ring::record_len(len)
            .and_then(|r| usize::try_from(r).ok())
            .unwrap_or(usize::MAX)
    };
    let total = frames
        .clone()
        .fold(0usize, |a, len| a.saturating_add(rec(len)));
    let largest = frames.map(rec).max().unwrap_or(0);
    (total, largest)
}

/// The ring's rule: a message fits a ring of `ring` bytes when its records plus its
/// largest record (room for a wrap) fit; [`Error::MessageTooLarge`] otherwise
/// (`usize::MAX`: no ring, no limit).
pub(crate) fn check_frames(ring: usize, lens: impl Iterator<Item = usize> + Clone) -> Result<()> {
    if ring == usize::MAX {
        return Ok(());
    }
    let (total, largest) = ring_bytes(lens.clone());
    if total.saturating_add(largest) > ring {
        return Err(Error::MessageTooLarge {
            size: lens.fold(0u64, |a, l| a.saturating_add(l as u64)),
            limit: (ring / 2).saturating_sub(8) as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn lens(m: &Message) -> impl Iterator<Item = usize> + Clone + '_ {
        m.frames().iter().map(|f| f.len())
    }

    #[test]
    fn size_check_follows_the_ring_accounting() {
        let big = Message::from(vec![0u8; 1 << 20]);
        assert!(
            check_frames(usize::MAX, lens(&big)).is_ok(),
            "no ipc ring: no limit"
        );
        assert!(check_frames(4096, lens(&Message::from(vec![0u8; 2000]))).is_ok());
        // The exact boundary, as the ring itself draws it.
        let (mut ring, _) = shm::segment::heap_ring(4096);
        for (len, fits) in [(2040, true), (2041, false)] {
            let m = Message::from(vec![0u8; len]);
            assert_eq!(check_frames(4096, lens(&m)).is_ok(), fits, "{len}");
            assert_eq!(
                !matches!(ring.try_send(&m), Err(shm::ShmSendError::TooLarge { .. })),
                fits,
                "the ring agrees at {len}"
            );
        }
        match check_frames(4096, std::iter::once(4096)) {
            Err(Error::MessageTooLarge { size, limit }) => {
                assert_eq!((size, limit), (4096, 2040));
            }
            other => panic!("{other:?}"),
        }
    }
}
