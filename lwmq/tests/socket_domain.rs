//! Domains: a context's domain (`ContextBuilder::domain`, else `LWMQ_DOMAIN`) is the
//! namespace of its sockets' `ipc://` names: the same name in two domains is two
//! channels, and each sender reaches only its own domain's receiver.

mod common;

use std::time::Duration;

use common::watchdog;
use lwmq::{Context, SocketType};

#[test]
fn the_same_ipc_name_in_two_domains_is_two_channels() {
    let _w = watchdog(Duration::from_secs(60));
    let tag = format!("dom-{}", std::process::id());
    let (da, db) = (format!("{tag}-a"), format!("{tag}-b"));
    let a = Context::builder().domain(&da).introspect(false).build();
    let b = Context::builder().domain(&db).introspect(false).build();
    assert_eq!(a.domain(), da);
    assert_eq!(b.domain(), db);
    let name = format!("ipc://{tag}/chan");
    let pull_a = a.socket(SocketType::Pull).unwrap();
    let pull_b = b.socket(SocketType::Pull).unwrap();
    pull_a.bind(&name).unwrap();
    // Not "address in use": another domain, another namespace.
    pull_b.bind(&name).unwrap();
    let push_a = a.socket(SocketType::Push).unwrap();
    let push_b = b.socket(SocketType::Push).unwrap();
    push_a.connect(&name).unwrap();
    push_b.connect(&name).unwrap();
    for p in [&pull_a, &pull_b] {
        p.set_recv_timeout(Some(Duration::from_secs(20)));
    }
    for i in 0..10u8 {
        push_a.send(vec![b'a', i]).unwrap();
        push_b.send(vec![b'b', i]).unwrap();
    }
    for i in 0..10u8 {
        assert_eq!(pull_a.recv().unwrap().frames()[0].as_ref(), [b'a', i]);
        assert_eq!(pull_b.recv().unwrap().frames()[0].as_ref(), [b'b', i]);
    }
    // A socket may still choose another domain for itself.
    let push_x = a.socket(SocketType::Push).unwrap();
    push_x.set_ipc_domain(&db);
    push_x.connect(&name).unwrap();
    push_x.send("x").unwrap();
    assert_eq!(pull_b.recv().unwrap().frames()[0].as_ref(), b"x");
}
