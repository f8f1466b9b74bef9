//! `lwmq ls`: every lwmq process on this host (of one domain, or all), its sockets,
//! endpoints and connections, as a listing, JSON, or a graph.
//!
//! A thin layer over [`lwmq::introspect::query_all`],
//! [`lwmq::introspect::resolve_peers`] and [`lwmq::graph::Graph`]; this file only
//! filters by domain and renders the listing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};

use anyhow::Result;
use lwmq::introspect::{self, Direction, ProcessInfo};

use crate::cli::{LsArgs, LsFormat};

/// Runs `lwmq ls`.
pub fn run(args: LsArgs) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    let format = args.output_format();
    let domain = if args.all_domains {
        None
    } else {
        Some(
            args.domain
                .clone()
                .unwrap_or_else(lwmq::shm::default_domain),
        )
    };
    loop {
        let mut processes = introspect::query_all();
        // Peers are found among every domain's processes (a connection may cross
        // domains over tcp://), then the listing keeps the domain asked for.
        introspect::resolve_peers(&mut processes);
        if let Some(d) = &domain {
            processes.retain(|p| &p.domain == d);
        }
        let text = match format {
            LsFormat::Json => {
                let mut s = serde_json::to_string(&processes)?;
                s.push('\n');
                s
            }
            LsFormat::Text => render(&processes, domain.as_deref()),
            LsFormat::Dot => lwmq::graph::Graph::new(&processes).to_dot(),
            LsFormat::Svg => lwmq::graph::Graph::new(&processes).to_svg(),
        };
        let mut out = std::io::stdout().lock();
        if args.watch.is_some() && tty && format == LsFormat::Text {
            // Clear the screen and go home, like watch(1).
            out.write_all(b"\x1b[2J\x1b[H")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        drop(out);
        match args.watch {
            Some(every) => std::thread::sleep(every),
            None => return Ok(()),
        }
    }
}

/// Renders the listing as an indented tree, one block per process. `domain`: the one
/// shown (`None`: every domain), for the message when there is nothing to show.
pub fn render(processes: &[ProcessInfo], domain: Option<&str>) -> String {
    if processes.is_empty() {
        return match domain {
            Some(d) => {
                format!("no lwmq processes found in domain {d:?} (--all-domains for every one)\n")
            }
            None => "no lwmq processes found\n".into(),
        };
    }
    let names: HashMap<u32, &str> = processes
        .iter()
        .map(|p| (p.pid, p.program.as_str()))
        .collect();
    let mut s = String::new();
    let mut last = None;
    for p in processes {
        if last != Some((p.pid, &p.domain)) {
            if last.is_some() {
                s.push('\n');
            }
            let _ = writeln!(
                s,
                "{} {} [{}]  ({})",
                p.pid, p.program, p.domain, p.command_line
            );
            last = Some((p.pid, &p.domain));
        }
        if p.sockets.is_empty() {
            let _ = writeln!(s, "  (no sockets)");
        }
        for sock in &p.sockets {
            let _ = writeln!(s, "  {} #{}", sock.socket_type, sock.id);
            if let Some(line) = sock.reqrep.as_ref().and_then(reqrep_line) {
                let _ = writeln!(s, "    reqrep     {line}");
            }
            for b in &sock.bound {
                let _ = writeln!(s, "    bound      {b}");
            }
            for c in &sock.connected {
                let _ = writeln!(s, "    connect    {c}");
            }
            for c in &sock.connections {
                let (verb, arrow) = match c.direction {
                    Direction::Accepted => ("accepted ", "<-"),
                    Direction::Connected => ("connected", "->"),
                };
                let _ = write!(s, "    {verb}  {} {arrow}", c.endpoint);
                // The peer's address, unless the endpoint already says it.
                let in_endpoint = c.endpoint.split_once("://").map(|(_, a)| a);
                if let Some(a) = c
                    .peer_address
                    .as_deref()
                    .filter(|a| Some(*a) != in_endpoint)
                {
                    let _ = write!(s, " {a}");
                }
                if let Some(t) = &c.peer_socket_type {
                    let _ = write!(s, " {t}");
                }
                match c.peer_pid {
                    Some(pid) => {
                        let _ = write!(s, " pid {pid}");
                        if let Some(name) = names.get(&pid) {
                            let _ = write!(s, " ({name})");
                        }
                    }
                    None => s.push_str(" pid ?"),
                }
                s.push('\n');
            }
        }
    }
    s
}

/// The REQ/REP counters that are not zero, or `None` if all are.
fn reqrep_line(st: &lwmq::ReqRepStats) -> Option<String> {
    let all = [
        ("resends", st.resends),
        ("failovers", st.failovers),
        ("given-up", st.given_up),
        ("stale-replies-dropped", st.stale_replies_dropped),
        ("duplicates-dropped", st.duplicates_dropped),
        ("replies-from-cache", st.replies_from_cache),
        ("malformed-dropped", st.malformed_dropped),
    ];
    let parts: Vec<String> = all
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwmq::introspect::{ConnectionInfo, SocketInfo};

    #[test]
    fn renders_processes_sockets_and_peers() {
        let ps = vec![
            ProcessInfo {
                pid: 10,
                program: "server".into(),
                command_line: "server --port 5555".into(),
                address: "lwmq-introspect/10/0".into(),
                domain: "default".into(),
                sockets: vec![SocketInfo {
                    id: 1,
                    socket_type: "REP".into(),
                    bound: vec!["tcp://127.0.0.1:5555".into()],
                    connected: vec![],
                    connections: vec![ConnectionInfo {
                        endpoint: "tcp://127.0.0.1:5555".into(),
                        direction: Direction::Accepted,
                        local_address: Some("127.0.0.1:5555".into()),
                        peer_address: Some("127.0.0.1:40000".into()),
                        peer_pid: Some(11),
                        peer_socket_type: Some("REQ".into()),
                    }],
                    reqrep: Some(lwmq::ReqRepStats {
                        duplicates_dropped: 1,
                        replies_from_cache: 3,
                        ..Default::default()
                    }),
                }],
            },
            ProcessInfo {
                pid: 11,
                program: "client".into(),
                command_line: "client".into(),
                address: "lwmq-introspect/11/0".into(),
                domain: "default".into(),
                sockets: vec![SocketInfo {
                    id: 1,
                    socket_type: "REQ".into(),
                    connected: vec!["tcp://127.0.0.1:5555".into()],
                    connections: vec![
                        ConnectionInfo {
                            endpoint: "tcp://127.0.0.1:5555".into(),
                            direction: Direction::Connected,
                            ..ConnectionInfo::default()
                        },
                        ConnectionInfo {
                            endpoint: "tcp://127.0.0.1:5555".into(),
                            direction: Direction::Connected,
                            peer_address: Some("127.0.0.1:5555".into()),
                            peer_socket_type: Some("REP".into()),
                            peer_pid: Some(10),
                            ..ConnectionInfo::default()
                        },
                    ],
                    reqrep: Some(lwmq::ReqRepStats::default()),
                    ..SocketInfo::default()
                }],
            },
        ];
        let text = render(&ps, Some("default"));
        assert_eq!(
            text,
            "\
10 server [default]  (server --port 5555)
  REP #1
    reqrep     duplicates-dropped 1, replies-from-cache 3
    bound      tcp://127.0.0.1:5555
    accepted   tcp://127.0.0.1:5555 <- 127.0.0.1:40000 REQ pid 11 (client)

11 client [default]  (client)
  REQ #1
    connect    tcp://127.0.0.1:5555
    connected  tcp://127.0.0.1:5555 -> pid ?
    connected  tcp://127.0.0.1:5555 -> REP pid 10 (server)
"
        );
        assert_eq!(render(&[], None), "no lwmq processes found\n");
        assert!(render(&[], Some("x")).contains("domain \"x\""));
    }
}
