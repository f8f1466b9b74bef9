//! `tokio::select!` over a SUB socket and a timer: print what is published, and a
//! heartbeat line whenever nothing came for 200 ms. Dropping the receive future that
//! lost the race loses no message (lwmq's futures are cancellation-safe).
//!
//! ```text
//! cargo run -p lwmq --example async_select
//! ```

use std::time::Duration;

use lwmq::{Context, SocketType};

#[tokio::main(flavor = "current_thread")]
async fn main() -> lwmq::Result<()> {
    let ctx = Context::new();
    let publisher = ctx.socket(SocketType::Pub)?;
    let endpoint = publisher.bind("tcp://127.0.0.1:0")?;
    let sub = ctx.socket(SocketType::Sub)?;
    sub.subscribe(b"prices")?;
    sub.connect(&endpoint)?;

    // A publisher on a thread of its own: a burst, a pause, a burst, the end.
    let feeder = std::thread::spawn(move || -> lwmq::Result<()> {
        std::thread::sleep(Duration::from_millis(100)); // the subscription travels
        for burst in 0..2 {
            for i in 0..3 {
                publisher.send(format!("prices {burst}.{i}").into_bytes())?;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        publisher.send(&b"prices end"[..])?;
        Ok(())
    });

    let mut heartbeat = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            m = sub.recv_async() => {
                let m = m?;
                let text = String::from_utf8_lossy(&m.frames()[0]).into_owned();
                println!("got {text}");
                if text == "prices end" {
                    break;
                }
                heartbeat.reset();
            }
            _ = heartbeat.tick() => println!("(nothing for 200 ms)"),
        }
    }
    feeder.join().expect("feeder thread")?;
    Ok(())
}
