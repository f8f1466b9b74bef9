//! End to end: `lwmq ls` by domain (`LWMQ_DOMAIN`, `--all-domains`), and
//! `lwmq ls --graph` / `--graph-svg` on three processes connected over ipc, tcp and
//! unix: the DOT and the SVG are parsed and must show the same nodes and edges, which
//! must be the connections the processes really have.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Proc, TempDir, unique, watchdog};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// `lwmq args...` with `LWMQ_DOMAIN=domain`.
fn lwmq_in(domain: &str, args: &[&str]) -> Command {
    let mut c = common::lwmq();
    c.args(args).env("LWMQ_DOMAIN", domain);
    c
}

fn output(mut c: Command) -> Output {
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run lwmq");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn pids(listing: &Value) -> BTreeSet<u64> {
    listing
        .as_array()
        .expect("an array")
        .iter()
        .map(|p| p["pid"].as_u64().expect("a pid"))
        .collect()
}

#[test]
fn ls_shows_its_own_domain_by_default_and_every_domain_with_all_domains() {
    let _w = watchdog(LIMIT);
    let (da, db) = (unique("da"), unique("db"));
    let a = Proc::spawn(lwmq_in(&da, &["pull", "--bind", "tcp://127.0.0.1:0"]));
    a.bound_endpoint();
    let b = Proc::spawn(lwmq_in(&db, &["pull", "--bind", "tcp://127.0.0.1:0"]));
    b.bound_endpoint();
    let (pa, pb) = (u64::from(a.pid()), u64::from(b.pid()));
    let json = |domain: &str, extra: &[&str]| -> Value {
        let mut args = vec!["ls", "--json"];
        args.extend_from_slice(extra);
        serde_json::from_slice(&output(lwmq_in(domain, &args)).stdout).expect("JSON")
    };

    let only_a = pids(&json(&da, &[]));
    assert!(only_a.contains(&pa) && !only_a.contains(&pb), "{only_a:?}");
    let only_b = pids(&json(&da, &["--domain", &db]));
    assert!(only_b.contains(&pb) && !only_b.contains(&pa), "{only_b:?}");
    let all = json(&da, &["--all-domains"]);
    assert!(pids(&all).is_superset(&BTreeSet::from([pa, pb])));
    for p in all.as_array().unwrap() {
        if p["pid"] == pa {
            assert_eq!(p["domain"], da.as_str());
        }
        if p["pid"] == pb {
            assert_eq!(p["domain"], db.as_str());
        }
    }
    // The listing names each process's domain.
    let text = String::from_utf8(output(lwmq_in(&da, &["ls", "--all-domains"])).stdout).unwrap();
    assert!(text.contains(&format!("{pa} lwmq [{da}]")), "{text}");
    assert!(text.contains(&format!("{pb} lwmq [{db}]")), "{text}");
    // A domain with nobody in it says so.
    let none = String::from_utf8(output(lwmq_in(&unique("empty"), &["ls"])).stdout).unwrap();
    assert!(none.contains("no lwmq processes found in domain"), "{none}");
}

/// Nodes and edges (from, to, transport) of a DOT graph as `Graph::to_dot` writes it.
fn parse_dot(dot: &str) -> (BTreeSet<String>, BTreeSet<(String, String, String)>) {
    assert!(
        dot.starts_with("digraph lwmq {") && dot.trim_end().ends_with('}'),
        "{dot}"
    );
    let quoted = |s: &str| -> Vec<String> {
        s.split('"')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s.to_owned())
            .collect()
    };
    let mut nodes = BTreeSet::new();
    let mut edges = BTreeSet::new();
    for line in dot.lines().map(str::trim) {
        if line.starts_with("subgraph") || !line.starts_with('"') {
            continue;
        }
        let q = quoted(line);
        if line.contains("\" -> \"") {
            let label = line
                .split("label=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("an edge label");
            edges.insert((q[0].clone(), q[1].clone(), label.to_owned()));
        } else {
            nodes.insert(q[0].clone());
        }
    }
    (nodes, edges)
}

/// The same from an SVG as `Graph::to_svg` writes it (parsed as XML).
fn parse_svg(svg: &str) -> (BTreeSet<String>, BTreeSet<(String, String, String)>) {
    let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let mut nodes = BTreeSet::new();
    let mut edges = BTreeSet::new();
    for g in doc.descendants().filter(|n| n.has_tag_name("g")) {
        match g.attribute("class") {
            Some("node") => {
                nodes.insert(g.attribute("id").expect("a node id").to_owned());
            }
            Some("edge") => {
                let label = g
                    .descendants()
                    .find(|n| n.has_tag_name("text"))
                    .and_then(|t| t.text())
                    .expect("an edge label");
                assert_eq!(Some(label), g.attribute("data-transport"));
                edges.insert((
                    g.attribute("data-from").expect("from").to_owned(),
                    g.attribute("data-to").expect("to").to_owned(),
                    label.to_owned(),
                ));
            }
            _ => {}
        }
    }
    (nodes, edges)
}

/// The socket id of the socket of type `t` of process `pid` in a `ls --json` listing.
fn socket_node(listing: &Value, pid: u32, t: &str) -> Option<String> {
    let p = listing.as_array()?.iter().find(|p| p["pid"] == pid)?;
    let ctx = p["address"].as_str()?.rsplit('/').next()?.to_owned();
    let s = p["sockets"]
        .as_array()?
        .iter()
        .find(|s| s["socket_type"] == t)?;
    Some(format!("p{pid}_{ctx}_s{}", s["id"]))
}

#[test]
fn ls_graph_draws_three_processes_over_ipc_tcp_and_unix_as_dot_and_svg() {
    let _w = watchdog(LIMIT);
    let domain = unique("graph");
    let dir = TempDir::new("graph");
    let unix = format!("unix://{}", dir.path("g.sock").display());
    let ipc = format!("ipc://{}", unique("graph"));
    // A ring of streamers: p1 --ipc--> p3 --unix--> p2 --tcp--> p1.
    let proxy = |bind: &str, to: &str| {
        Proc::spawn(lwmq_in(
            &domain,
            &["proxy", "--pattern", "streamer", bind, &format!(">{to}")],
        ))
    };
    let p1 = proxy("tcp://127.0.0.1:0", &ipc);
    let tcp = p1.bound_endpoint();
    let p2 = proxy(&unix, &tcp);
    p2.bound_endpoint();
    let p3 = proxy(&ipc, &unix);
    p3.bound_endpoint();
    let (a, b, c) = (p1.pid(), p2.pid(), p3.pid());

    // Connections take a moment: look until the graph has all three (the watchdog
    // ends a test that never gets there).
    let (dot, expected) = loop {
        let listing: Value =
            serde_json::from_slice(&output(lwmq_in(&domain, &["ls", "--json"])).stdout).unwrap();
        let node = |pid, t| socket_node(&listing, pid, t);
        let want = [
            (node(a, "PUSH"), node(c, "PULL"), "ipc"),
            (node(c, "PUSH"), node(b, "PULL"), "unix"),
            (node(b, "PUSH"), node(a, "PULL"), "tcp"),
        ];
        let dot = String::from_utf8(output(lwmq_in(&domain, &["ls", "--graph"])).stdout).unwrap();
        let (_, edges) = parse_dot(&dot);
        let want: Option<BTreeSet<(String, String, String)>> = want
            .into_iter()
            .map(|(f, t, tr)| Some((f?, t?, tr.to_owned())))
            .collect();
        if let Some(want) = want {
            if edges == want {
                break (dot, want);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (dot_nodes, dot_edges) = parse_dot(&dot);
    assert_eq!(dot_edges, expected);
    // Six sockets, two per process, and nothing else (the three are alone in their
    // domain).
    assert_eq!(dot_nodes.len(), 6, "{dot}");
    for pid in [a, b, c] {
        assert!(
            dot.contains(&format!("subgraph \"cluster_p{pid}_")),
            "{dot}"
        );
        assert!(
            dot.contains(&format!("label=\"{pid} lwmq [{domain}]\"")),
            "{dot}"
        );
    }

    let svg = String::from_utf8(output(lwmq_in(&domain, &["ls", "--graph-svg"])).stdout).unwrap();
    let (svg_nodes, svg_edges) = parse_svg(&svg);
    assert_eq!(svg_nodes, dot_nodes, "the SVG's nodes are the DOT's");
    assert_eq!(svg_edges, dot_edges, "the SVG's edges are the DOT's");
    let svg2 =
        String::from_utf8(output(lwmq_in(&domain, &["ls", "--format", "svg"])).stdout).unwrap();
    assert_eq!(parse_svg(&svg2), (svg_nodes, svg_edges));
}
