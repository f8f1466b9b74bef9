//! Arbitrary bytes into the frame codec and the command parser: never a panic; a decoded
//! frame re-encodes to the bytes it came from (for canonical headers); "need more" never
//! consumes input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lwmq::Bytes;
use lwmq::proto::command::Command;
use lwmq::proto::frame;

fuzz_target!(|data: &[u8]| {
    let Some((&limit_sel, rest)) = data.split_first() else {
        return;
    };
    let limit = match limit_sel % 4 {
        0 => None,
        1 => Some(0),
        2 => Some(255),
        _ => Some(u64::from(limit_sel) * 97),
    };
    let mut buf = bytes::BytesMut::from(rest);
    loop {
        let before = buf.len();
        match frame::decode(&mut buf, limit) {
            Ok(Some(f)) => {
                assert!(buf.len() < before);
                if let Some(l) = limit {
                    assert!(f.body.len() as u64 <= l);
                }
                if f.command {
                    // Any body: a command or a clean error, never a panic.
                    if let Ok(cmd) = Command::parse(f.body.clone()) {
                        // What we parsed, we can encode again.
                        let _ = Command::parse(Bytes::from(cmd.encode().to_vec()));
                    }
                }
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(_) => break,
        }
    }
    // The command parser on the raw input, too.
    let _ = Command::parse(Bytes::copy_from_slice(rest));
    let _ = lwmq::proto::command::Metadata::parse(&Bytes::copy_from_slice(rest));
});
