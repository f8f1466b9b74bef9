//! A tokio REQ/REP service over `ipc://` and `tcp://` with lwmq's async API.
//!
//! One REP socket serves both endpoints from one task; two client tasks, one per
//! transport, send requests and await the replies. No thread per socket: the sockets'
//! futures are woken by lwmq's background thread (tcp) and doorbell watcher (ipc).
//!
//! ```text
//! cargo run -p lwmq --example async_reqrep
//! ```

use std::sync::Arc;

use lwmq::{Context, Message, SocketType};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> lwmq::Result<()> {
    let ctx = Context::new();
    let rep = Arc::new(ctx.socket(SocketType::Rep)?);
    let ipc = format!("ipc://lwmq-example-async-{}", std::process::id());
    rep.bind(&ipc)?;
    let tcp = rep.bind("tcp://127.0.0.1:0")?;

    // The service: upper-cases every request, until both clients said "bye".
    let server = tokio::spawn({
        let rep = rep.clone();
        async move {
            let mut byes = 0;
            while byes < 2 {
                let req = rep.recv_async().await?;
                let body = req.frames()[0].to_ascii_uppercase();
                if body == b"BYE" {
                    byes += 1;
                }
                rep.send_async(Message::from(body)).await?;
            }
            Ok::<(), lwmq::Error>(())
        }
    });

    let mut clients = Vec::new();
    for endpoint in [ipc, tcp] {
        let req = ctx.socket(SocketType::Req)?;
        req.connect(&endpoint)?;
        clients.push(tokio::spawn(async move {
            for word in ["hello", "async", "world", "bye"] {
                req.send_async(word).await?;
                let reply = req.recv_async().await?;
                println!(
                    "{endpoint}: {word} -> {}",
                    String::from_utf8_lossy(&reply.frames()[0])
                );
            }
            Ok::<(), lwmq::Error>(())
        }));
    }
    for c in clients {
        c.await.expect("client task")?;
    }
    server.await.expect("server task")?;
    Ok(())
}
