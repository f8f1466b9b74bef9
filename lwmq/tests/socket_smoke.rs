//! A few end-to-end checks of the Socket API on every transport.
mod common;

use std::time::Duration;

use lwmq::{Context, Message, SocketType};

fn req_rep(bind: &str) {
    let _w = common::watchdog(Duration::from_secs(60));
    let ctx = Context::new();
    let rep = ctx.socket(SocketType::Rep).unwrap();
    let req = ctx.socket(SocketType::Req).unwrap();
    let ep = rep.bind(bind).unwrap();
    req.connect(&ep).unwrap();
    for i in 0..100u32 {
        req.send(Message::from_frames([
            format!("q{i}").into_bytes(),
            vec![],
            vec![7; 3],
        ]))
        .unwrap();
        let m = rep.recv().unwrap();
        assert_eq!(m.frames()[0], format!("q{i}").as_bytes());
        assert_eq!(m.len(), 3);
        rep.send(m).unwrap();
        let r = req.recv().unwrap();
        assert_eq!(r.frames()[0], format!("q{i}").as_bytes());
    }
}

#[test]
fn req_rep_inproc() {
    req_rep("inproc://smoke");
}

#[test]
fn req_rep_tcp() {
    req_rep("tcp://127.0.0.1:0");
}

#[test]
fn req_rep_unix() {
    req_rep(&format!("unix://@lwmq-smoke-{}", std::process::id()));
}
