//! End to end: the `lwmq` tool with DNS service names, the name server given by
//! `LWMQ_DNS_SERVER` (a dnsmasq of the test's own on a loopback port).

mod common;

use std::time::Duration;

use common::dns::Dnsmasq;
use common::{Proc, watchdog};

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn lwmq_req_reaches_the_rep_named_by_an_srv_record() {
    let _w = watchdog(LIMIT);
    let rep = Proc::lwmq(&["rep", "--bind", "tcp://127.0.0.1:0", "--exec", "tr a-z A-Z"]);
    let ep = rep.bound_endpoint();
    let port = ep.rsplit(':').next().unwrap();
    let dns = Dnsmasq::start(
        "cli",
        &format!(
            "srv-host=_echo._tcp.lwmq.test,echo.lwmq.test,{port},0,1\n\
             host-record=echo.lwmq.test,127.0.0.1"
        ),
    );
    let mut req = common::lwmq();
    req.args(["req", "tcp://_echo._tcp.lwmq.test", "hello", "-t", "30"])
        .env("LWMQ_DNS_SERVER", dns.addr().to_string());
    let (code, out, err) = Proc::spawn(req).finish();
    assert_eq!(code, Some(0), "{err:?}");
    assert_eq!(out, ["HELLO"]);
}

#[test]
fn lwmq_monitor_shows_an_unknown_name_failing_and_retried() {
    let _w = watchdog(LIMIT);
    let dns = Dnsmasq::start("cli-unknown", "host-record=known.lwmq.test,127.0.0.1");
    let mut mon = common::lwmq();
    mon.args(["monitor", "tcp://_nothing._tcp.lwmq.test", "-n", "4"])
        .env("LWMQ_DNS_SERVER", dns.addr().to_string());
    let (code, out, err) = Proc::spawn(mon).finish();
    assert_eq!(code, Some(0), "{err:?}");
    assert!(
        out[0].starts_with("resolve-failed tcp://_nothing._tcp.lwmq.test"),
        "{out:?}"
    );
    assert!(out[0].contains("NXDOMAIN"), "{out:?}");
    assert!(out[1].starts_with("connect-retried"), "{out:?}");
    assert!(out[2].starts_with("resolve-failed"), "{out:?}");

    // A bad LWMQ_DNS_SERVER is said plainly, per lookup.
    let mut bad = common::lwmq();
    bad.args(["monitor", "tcp://_nothing._tcp.lwmq.test", "-n", "1"])
        .env("LWMQ_DNS_SERVER", "not-an-address");
    let (code, out, err) = Proc::spawn(bad).finish();
    assert_eq!(code, Some(0), "{err:?}");
    assert!(
        out[0].contains("LWMQ_DNS_SERVER") && out[0].contains("ip:port"),
        "{out:?}"
    );
}
