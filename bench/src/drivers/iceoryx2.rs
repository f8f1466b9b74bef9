//! iceoryx2: zero-copy shared-memory publish-subscribe. Only the round trip is
//! measured, as iceoryx2's own ping-pong benchmark does it: two publish-subscribe
//! services (`<name>/ping` and `<name>/pong`), each side publishing on one and
//! busy-polling its subscriber on the other — no wake-up, no syscall, both sides spin.
//!
//! Transport name: `shm`. Kinds: `Rep` (creates both services) and `Req` (opens them).
//! Sending loans a shared-memory sample and copies the buffer into it, which is the
//! same one copy the other contenders make.

use anyhow::{Result, anyhow, bail};
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use super::{Driver, Kind, Peer, copy_head};

pub struct Iceoryx2;

struct IoxPeer {
    publisher: Publisher<ipc::Service, [u8], ()>,
    subscriber: Subscriber<ipc::Service, [u8], ()>,
    // Kept alive for as long as the ports (declared after them: dropped last).
    _node: Node<ipc::Service>,
}

fn open(kind: Kind, name: &str, max_size: usize) -> Result<IoxPeer> {
    let (rx, tx) = match kind {
        Kind::Rep => ("ping", "pong"),
        Kind::Req => ("pong", "ping"),
        other => bail!("iceoryx2 is benchmarked for round trips only, not as {other:?}"),
    };
    // Running without a config file is intended here; keep real errors only.
    set_log_level(LogLevel::Error);
    let node = NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| anyhow!("iceoryx2 node: {e:?}"))?;
    let service = |suffix: &str| -> Result<_> {
        let svc_name: ServiceName = format!("lwmq-bench/{name}/{suffix}")
            .as_str()
            .try_into()
            .map_err(|e| anyhow!("iceoryx2 service name: {e:?}"))?;
        node.service_builder(&svc_name)
            .publish_subscribe::<[u8]>()
            .open_or_create()
            .map_err(|e| anyhow!("iceoryx2 service {suffix}: {e:?}"))
    };
    let rx_service = service(rx)?;
    let tx_service = service(tx)?;
    let subscriber = rx_service
        .subscriber_builder()
        .create()
        .map_err(|e| anyhow!("iceoryx2 subscriber: {e:?}"))?;
    let publisher = tx_service
        .publisher_builder()
        .initial_max_slice_len(max_size)
        .create()
        .map_err(|e| anyhow!("iceoryx2 publisher: {e:?}"))?;
    Ok(IoxPeer {
        publisher,
        subscriber,
        _node: node,
    })
}

impl Peer for IoxPeer {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let sample = self
            .publisher
            .loan_slice_uninit(msg.len())
            .map_err(|e| anyhow!("iceoryx2 loan: {e:?}"))?;
        let sample = sample.write_from_slice(msg);
        sample.send().map_err(|e| anyhow!("iceoryx2 send: {e:?}"))?;
        Ok(())
    }

    fn recv(&mut self, head: &mut [u8]) -> Result<usize> {
        loop {
            let got = self
                .subscriber
                .receive()
                .map_err(|e| anyhow!("iceoryx2 receive: {e:?}"))?;
            if let Some(sample) = got {
                return Ok(copy_head(sample.payload(), head));
            }
            std::hint::spin_loop();
        }
    }
}

impl Driver for Iceoryx2 {
    fn bind(
        &self,
        kind: Kind,
        transport: &str,
        name: &str,
        max_size: usize,
    ) -> Result<(Box<dyn Peer>, String)> {
        if transport != "shm" {
            bail!("iceoryx2 has one transport here: shm (not {transport:?})");
        }
        let peer = open(kind, name, max_size)?;
        Ok((Box::new(peer), name.to_owned()))
    }

    fn connect(
        &self,
        kind: Kind,
        _transport: &str,
        endpoint: &str,
        max_size: usize,
    ) -> Result<Box<dyn Peer>> {
        Ok(Box::new(open(kind, endpoint, max_size)?))
    }
}
