//! A picture of the system: the processes that [`crate::introspect::query_all`]
//! found, their sockets and the live connections between them, as a [`Graph`] that
//! renders as Graphviz DOT ([`Graph::to_dot`]) or as SVG ([`Graph::to_svg`]) without
//! Graphviz. `lwmq ls --graph` and `--graph-svg` print these.
//!
//! Nodes are sockets, grouped by process (a DOT cluster, an SVG box per process
//! context); a peer that is not an lwmq process (a libzmq program, say) is a node of
//! its own, named by its address. Edges are connections, from the side that connected
//! to the side that accepted, labelled by transport (`tcp`, `ipc`, `unix`, `inproc`).
//! Each connection is drawn once: the connecting side's record of it is used, and an
//! accepted connection only when no listed process connected it.
//!
//! # The SVG layout
//!
//! Deliberately simple, so that it needs no layout engine and is the same every time
//! for the same input: process boxes on a grid of about √n columns, in the order of
//! the listing (by pid), each box listing its sockets one per row; edges are curves
//! from the connecting socket's row to the accepting one's, bent to one side so that
//! the two directions between two sockets do not overlap, with the transport written
//! at their middle. Graphviz (`--graph | dot -Tsvg`) draws big systems better; this is
//! for a quick look where Graphviz is not installed. Every node is a
//! `<g class="node" id="...">` and every edge a
//! `<g class="edge" data-from="..." data-to="..." data-transport="...">`, so tools
//! (and the tests) can read the picture back.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::introspect::{Direction, ProcessInfo, endpoints_match};

/// Processes, sockets and connections (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// One per process context, in the order given.
    pub processes: Vec<ProcessNode>,
    /// Peers that are not among the processes (by address).
    pub external: Vec<ExternalNode>,
    /// One per live connection.
    pub edges: Vec<Edge>,
}

/// One context of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessNode {
    /// Its id in the graph: `p<pid>_<context>`.
    pub id: String,
    /// Process id.
    pub pid: u32,
    /// Program name.
    pub program: String,
    /// The context's domain.
    pub domain: String,
    /// Its sockets.
    pub sockets: Vec<SocketNode>,
}

/// One socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketNode {
    /// Its id in the graph: `p<pid>_<context>_s<socket id>`.
    pub id: String,
    /// `"PULL #1"`.
    pub label: String,
    /// Bound endpoints.
    pub bound: Vec<String>,
}

/// A peer that is not one of the listed processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalNode {
    /// Its id in the graph: `x<n>`.
    pub id: String,
    /// Its address or endpoint.
    pub label: String,
}

/// One connection, from the side that connected to the side that accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edge {
    /// The connecting socket's (or external peer's) id.
    pub from: String,
    /// The accepting socket's (or external peer's, or process's when its socket is not
    /// known) id.
    pub to: String,
    /// The transport: the endpoint's scheme.
    pub transport: String,
    /// The endpoint.
    pub endpoint: String,
}

fn context_number(address: &str) -> &str {
    address.rsplit('/').next().unwrap_or("0")
}

fn scheme(endpoint: &str) -> String {
    endpoint
        .split_once("://")
        .map_or("?", |(s, _)| s)
        .to_owned()
}

impl Graph {
    /// The graph of `processes` (best after [`crate::introspect::resolve_peers`],
    /// which fills in the peers' pids).
    pub fn new(processes: &[ProcessInfo]) -> Graph {
        let mut g = Graph::default();
        let pids: std::collections::HashSet<u32> = processes.iter().map(|p| p.pid).collect();
        for p in processes {
            let id = format!("p{}_{}", p.pid, context_number(&p.address));
            let sockets = p
                .sockets
                .iter()
                .map(|s| SocketNode {
                    id: format!("{id}_s{}", s.id),
                    label: format!("{} #{}", s.socket_type, s.id),
                    bound: s.bound.clone(),
                })
                .collect();
            g.processes.push(ProcessNode {
                id,
                pid: p.pid,
                program: p.program.clone(),
                domain: p.domain.clone(),
                sockets,
            });
        }
        let mut external: HashMap<String, String> = HashMap::new();
        let mut external_id = |label: &str, g: &mut Graph| -> String {
            if let Some(id) = external.get(label) {
                return id.clone();
            }
            let id = format!("x{}", external.len());
            external.insert(label.to_owned(), id.clone());
            g.external.push(ExternalNode {
                id: id.clone(),
                label: label.to_owned(),
            });
            id
        };
        for (pi, p) in processes.iter().enumerate() {
            for (si, s) in p.sockets.iter().enumerate() {
                let me = g.processes[pi].sockets[si].id.clone();
                for c in &s.connections {
                    let transport = scheme(&c.endpoint);
                    match c.direction {
                        Direction::Connected => {
                            let to = match c.peer_pid {
                                Some(q) if pids.contains(&q) => {
                                    accepting_socket(processes, &g, p.pid, c, q).unwrap_or_else(
                                        || {
                                            // The process is known, its socket is not.
                                            processes
                                                .iter()
                                                .position(|x| x.pid == q)
                                                .map(|i| g.processes[i].id.clone())
                                                .unwrap_or_default()
                                        },
                                    )
                                }
                                _ => {
                                    let label = c.peer_address.as_deref().unwrap_or(&c.endpoint);
                                    external_id(label, &mut g)
                                }
                            };
                            g.edges.push(Edge {
                                from: me.clone(),
                                to,
                                transport,
                                endpoint: c.endpoint.clone(),
                            });
                        }
                        Direction::Accepted => {
                            // Drawn from the connecting side when that side is listed.
                            if c.peer_pid.is_some_and(|q| pids.contains(&q)) {
                                continue;
                            }
                            let label = c.peer_address.as_deref().unwrap_or("unknown peer");
                            let from = external_id(label, &mut g);
                            g.edges.push(Edge {
                                from,
                                to: me.clone(),
                                transport,
                                endpoint: c.endpoint.clone(),
                            });
                        }
                    }
                }
            }
        }
        g
    }

    /// Every node id: processes' sockets, external peers, and processes that are the
    /// end of an edge (their socket unknown).
    pub fn node_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .processes
            .iter()
            .flat_map(|p| p.sockets.iter().map(|s| s.id.clone()))
            .chain(self.external.iter().map(|x| x.id.clone()))
            .collect();
        for p in &self.processes {
            if p.sockets.is_empty() || self.edges.iter().any(|e| e.to == p.id) {
                v.push(p.id.clone());
            }
        }
        v
    }

    /// The graph in Graphviz's DOT language.
    pub fn to_dot(&self) -> String {
        let mut s = String::from(
            "digraph lwmq {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"monospace\"];\n  edge [fontname=\"monospace\"];\n",
        );
        for p in &self.processes {
            let _ = writeln!(s, "  subgraph \"cluster_{}\" {{", p.id);
            let _ = writeln!(
                s,
                "    label=\"{}\";",
                dot_escape(&format!("{} {} [{}]", p.pid, p.program, p.domain))
            );
            if p.sockets.is_empty() || self.edges.iter().any(|e| e.to == p.id) {
                let _ = writeln!(
                    s,
                    "    \"{}\" [label=\"{}\", shape=plaintext];",
                    p.id,
                    dot_escape(&format!("pid {}", p.pid))
                );
            }
            for k in &p.sockets {
                let mut label = k.label.clone();
                for b in &k.bound {
                    label.push('\n');
                    label.push_str(b);
                }
                let _ = writeln!(s, "    \"{}\" [label=\"{}\"];", k.id, dot_escape(&label));
            }
            s.push_str("  }\n");
        }
        for x in &self.external {
            let _ = writeln!(
                s,
                "  \"{}\" [label=\"{}\", shape=ellipse, style=dashed];",
                x.id,
                dot_escape(&x.label)
            );
        }
        for e in &self.edges {
            let _ = writeln!(
                s,
                "  \"{}\" -> \"{}\" [label=\"{}\", tooltip=\"{}\"];",
                e.from,
                e.to,
                dot_escape(&e.transport),
                dot_escape(&e.endpoint)
            );
        }
        s.push_str("}\n");
        s
    }

    /// The graph as an SVG picture, laid out as the module docs say.
    pub fn to_svg(&self) -> String {
        const BOX_W: f64 = 300.0;
        const HEAD: f64 = 34.0;
        const ROW: f64 = 26.0;
        const GAP: f64 = 120.0;
        const MARGIN: f64 = 40.0;
        // (x, y) of the centre-left of each node's row, and the node's width.
        let mut at: HashMap<&str, (f64, f64, f64)> = HashMap::new();
        let n = self.processes.len() + self.external.len();
        let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
        let heights: Vec<f64> = self
            .processes
            .iter()
            .map(|p| HEAD + ROW * (p.sockets.len().max(1) as f64) + 10.0)
            .chain(self.external.iter().map(|_| HEAD))
            .collect();
        let rows = n.div_ceil(cols);
        let row_h: Vec<f64> = (0..rows)
            .map(|r| {
                heights[r * cols..((r + 1) * cols).min(n)]
                    .iter()
                    .copied()
                    .fold(0.0, f64::max)
            })
            .collect();
        let origin = |i: usize| {
            let (r, c) = (i / cols, i % cols);
            let y = MARGIN + row_h[..r].iter().sum::<f64>() + GAP * r as f64;
            (MARGIN + (BOX_W + GAP) * c as f64, y)
        };
        let width = MARGIN * 2.0 + (BOX_W + GAP) * cols as f64 - GAP;
        let height = MARGIN * 2.0 + row_h.iter().sum::<f64>() + GAP * rows.saturating_sub(1) as f64;
        let mut body = String::new();
        for (i, p) in self.processes.iter().enumerate() {
            let (x, y) = origin(i);
            let h = heights[i];
            let _ = writeln!(
                body,
                "<g class=\"process\" id=\"{}\"><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{h}\" rx=\"8\" fill=\"#f4f6fb\" stroke=\"#556\"/>\
                 <text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}</text></g>",
                xml_escape(&p.id),
                x + 10.0,
                y + 22.0,
                xml_escape(&format!("{} {} [{}]", p.pid, p.program, p.domain))
            );
            at.insert(&p.id, (x, y + HEAD / 2.0, BOX_W));
            for (k, s) in p.sockets.iter().enumerate() {
                let sy = y + HEAD + ROW * k as f64;
                let mut label = s.label.clone();
                if let Some(b) = s.bound.first() {
                    label.push_str("  ");
                    label.push_str(b);
                }
                let _ = writeln!(
                    body,
                    "<g class=\"node\" id=\"{}\"><title>{}</title><rect x=\"{}\" y=\"{sy}\" width=\"{}\" height=\"{}\" rx=\"4\" fill=\"#fff\" stroke=\"#889\"/>\
                     <text x=\"{}\" y=\"{}\">{}</text></g>",
                    xml_escape(&s.id),
                    xml_escape(&s.id),
                    x + 8.0,
                    BOX_W - 16.0,
                    ROW - 4.0,
                    x + 14.0,
                    sy + 16.0,
                    xml_escape(&truncate(&label, 40))
                );
                at.insert(&s.id, (x + 8.0, sy + (ROW - 4.0) / 2.0, BOX_W - 16.0));
            }
            if p.sockets.is_empty() || self.edges.iter().any(|e| e.to == p.id) {
                let _ = writeln!(
                    body,
                    "<g class=\"node\" id=\"{0}\"><title>{0}</title></g>",
                    xml_escape(&p.id)
                );
            }
        }
        for (j, e) in self.external.iter().enumerate() {
            let (x, y) = origin(self.processes.len() + j);
            let _ = writeln!(
                body,
                "<g class=\"node\" id=\"{}\"><title>{}</title><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{HEAD}\" rx=\"17\" fill=\"#fff\" stroke=\"#889\" stroke-dasharray=\"4 3\"/>\
                 <text x=\"{}\" y=\"{}\">{}</text></g>",
                xml_escape(&e.id),
                xml_escape(&e.id),
                x + 14.0,
                y + 22.0,
                xml_escape(&truncate(&e.label, 40))
            );
            at.insert(&e.id, (x, y + HEAD / 2.0, BOX_W));
        }
        for e in &self.edges {
            let (Some(&(fx, fy, fw)), Some(&(tx, ty, tw))) =
                (at.get(e.from.as_str()), at.get(e.to.as_str()))
            else {
                continue;
            };
            // Leave from the side facing the target, arrive on the side facing the source.
            let (x1, x2) = if fx + fw / 2.0 <= tx + tw / 2.0 {
                (fx + fw, tx)
            } else {
                (fx, tx + tw)
            };
            let (y1, y2) = (fy, ty);
            // Bend to the left of the direction of travel.
            let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
            let (dx, dy) = (x2 - x1, y2 - y1);
            let len = (dx * dx + dy * dy).sqrt().max(1.0);
            let bend = 30.0_f64.min(len / 3.0).max(12.0);
            let (cx, cy) = (mx - dy / len * bend, my + dx / len * bend);
            let (lx, ly) = ((mx + cx) / 2.0, (my + cy) / 2.0);
            let _ = writeln!(
                body,
                "<g class=\"edge\" data-from=\"{}\" data-to=\"{}\" data-transport=\"{}\"><title>{}</title>\
                 <path d=\"M{x1:.1},{y1:.1} Q{cx:.1},{cy:.1} {x2:.1},{y2:.1}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" marker-end=\"url(#arrow)\"/>\
                 <text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\" fill=\"{}\">{}</text></g>",
                xml_escape(&e.from),
                xml_escape(&e.to),
                xml_escape(&e.transport),
                xml_escape(&e.endpoint),
                colour(&e.transport),
                colour(&e.transport),
                xml_escape(&e.transport)
            );
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"monospace\" font-size=\"12\">\n\
             <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#445\"/></marker></defs>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n{body}</svg>\n"
        )
    }
}

/// Which socket of process `q` accepted the connection `c` that process `pid` made.
fn accepting_socket(
    processes: &[ProcessInfo],
    g: &Graph,
    pid: u32,
    c: &crate::introspect::ConnectionInfo,
    q: u32,
) -> Option<String> {
    let mut by_bind = None;
    for (pi, p) in processes.iter().enumerate().filter(|(_, p)| p.pid == q) {
        for (si, s) in p.sockets.iter().enumerate() {
            let id = || g.processes[pi].sockets[si].id.clone();
            let exact = s.connections.iter().any(|a| {
                a.direction == Direction::Accepted
                    && a.local_address.is_some()
                    && a.local_address == c.peer_address
                    && a.peer_address == c.local_address
            });
            if exact {
                return Some(id());
            }
            let bound_here = s.bound.iter().any(|b| endpoints_match(&c.endpoint, b));
            let accepted_from_us = s
                .connections
                .iter()
                .any(|a| a.direction == Direction::Accepted && a.peer_pid == Some(pid));
            if bound_here && (accepted_from_us || by_bind.is_none()) {
                by_bind = Some(id());
            }
        }
    }
    by_bind
}

fn colour(transport: &str) -> &'static str {
    match transport {
        "tcp" => "#1f5fa8",
        "ipc" => "#2e8b3a",
        "unix" => "#a8641f",
        "inproc" => "#7a3fa8",
        _ => "#445",
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(n - 1).collect();
    t.push('…');
    t
}

fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::{ConnectionInfo, SocketInfo};

    fn proc(pid: u32, sockets: Vec<SocketInfo>) -> ProcessInfo {
        ProcessInfo {
            pid,
            program: "lwmq".into(),
            command_line: String::new(),
            address: format!("lwmq-introspect/{pid}/0"),
            domain: "default".into(),
            sockets,
        }
    }

    #[test]
    fn one_edge_per_connection_to_the_accepting_socket() {
        let server = proc(
            1,
            vec![SocketInfo {
                id: 1,
                socket_type: "REP".into(),
                bound: vec!["tcp://127.0.0.1:5555".into()],
                connections: vec![ConnectionInfo {
                    endpoint: "tcp://127.0.0.1:5555".into(),
                    direction: Direction::Accepted,
                    local_address: Some("127.0.0.1:5555".into()),
                    peer_address: Some("127.0.0.1:40000".into()),
                    peer_pid: Some(2),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        );
        let client = proc(
            2,
            vec![SocketInfo {
                id: 3,
                socket_type: "REQ".into(),
                connected: vec!["tcp://127.0.0.1:5555".into()],
                connections: vec![ConnectionInfo {
                    endpoint: "tcp://127.0.0.1:5555".into(),
                    direction: Direction::Connected,
                    local_address: Some("127.0.0.1:40000".into()),
                    peer_address: Some("127.0.0.1:5555".into()),
                    peer_pid: Some(1),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        );
        let g = Graph::new(&[server, client]);
        assert_eq!(
            g.edges,
            vec![Edge {
                from: "p2_0_s3".into(),
                to: "p1_0_s1".into(),
                transport: "tcp".into(),
                endpoint: "tcp://127.0.0.1:5555".into(),
            }]
        );
        let dot = g.to_dot();
        assert!(
            dot.contains("\"p2_0_s3\" -> \"p1_0_s1\" [label=\"tcp\""),
            "{dot}"
        );
        assert!(
            dot.contains("label=\"REP #1\\ntcp://127.0.0.1:5555\""),
            "{dot}"
        );
        let svg = g.to_svg();
        assert!(svg.contains("data-from=\"p2_0_s3\" data-to=\"p1_0_s1\" data-transport=\"tcp\""));
        assert_eq!(svg.matches("class=\"node\"").count(), 2);
    }

    #[test]
    fn unknown_peers_are_external_nodes_and_text_is_escaped() {
        let p = proc(
            5,
            vec![SocketInfo {
                id: 1,
                socket_type: "PULL".into(),
                bound: vec!["unix://@a\"<b>".into()],
                connections: vec![ConnectionInfo {
                    endpoint: "unix://@a\"<b>".into(),
                    direction: Direction::Accepted,
                    peer_address: Some("@peer".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        );
        let g = Graph::new(&[p]);
        assert_eq!(g.external.len(), 1);
        assert_eq!(g.edges[0].from, "x0");
        assert!(g.to_dot().contains("unix://@a\\\"<b>"));
        assert!(g.to_svg().contains("unix://@a&quot;&lt;b&gt;"));
    }
}
