//! Name resolution for `tcp://` connects, off the background thread.
//!
//! A connect to `tcp://host:port` or to a DNS service name `tcp://_service._tcp.domain`
//! needs addresses before it can start. Looking them up may take seconds (a slow or
//! absent name server), and the background thread ([`super::reactor`]) serves every
//! connection of the context, so it never waits for DNS: it hands a [`Query`] to the
//! [`Resolver`] and goes on; the answer comes back through a callback that queues it
//! for the thread and rings its waker (see `stream_engine::Shared`).
//!
//! # Threads
//!
//! The resolver is one thread, `lwmq-dns`, started by the background thread the first
//! time a connect needs a name, and owned by it (the stream engine). It runs a
//! single-threaded tokio runtime for `hickory-resolver`; every query is a task of its
//! own, so a slow answer delays only the connect that asked. Host names are looked up
//! with the system resolver (`getaddrinfo`: `/etc/hosts`, nsswitch) on that runtime's
//! blocking pool, unless a name server is configured ([`DnsConfig::server`]), which
//! then answers every name. Service names always go to DNS: hickory reads
//! `/etc/resolv.conf` (or uses the configured server). Dropping the [`Resolver`] closes
//! its queue; the thread then ends and unfinished queries are dropped.
//!
//! # Service names (RFC 2782)
//!
//! An SRV query answers targets with priority, weight and port. [`order_srv`] puts
//! them in the order RFC 2782 says a client tries them: lowest priority first; within
//! one priority a weighted random order (a target of weight 0 has a small chance to go
//! first). Each target's addresses follow in turn. The answer is that list of
//! candidates; the connect tries them one after another until one takes the
//! connection. A target of `.` means the service is decidedly not available.
//!
//! Records are not cached here: hickory's cache keeps each answer until its TTL ends,
//! and every new round of connect attempts asks again. An answer says when its TTL
//! ends ([`Resolved::valid_until`]); the stream engine looks the name up again then
//! while connected, and leaves an address the records no longer name. So a connect
//! follows a record that changed within about one TTL of the change, whether or not
//! the old server stops.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    NameServerConfigGroup, ResolverConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::name_server::TokioConnectionProvider;

/// The environment variable naming the DNS server to use (`ip:port`).
pub const DNS_SERVER_ENV: &str = "LWMQ_DNS_SERVER";

/// Where names are looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DnsConfig {
    /// A name server for every name (host and service names); `None`: the system's
    /// (getaddrinfo for host names, `/etc/resolv.conf` for service names).
    pub server: Option<SocketAddr>,
    /// Why the configured server cannot be used (a bad `LWMQ_DNS_SERVER`): every
    /// lookup fails with this, so the monitor says it.
    pub invalid: Option<String>,
}

impl DnsConfig {
    /// The configuration the environment asks for: `LWMQ_DNS_SERVER=ip:port`.
    pub(crate) fn from_env() -> DnsConfig {
        match std::env::var(DNS_SERVER_ENV) {
            Ok(v) if !v.trim().is_empty() => match parse_server(v.trim()) {
                Ok(server) => DnsConfig {
                    server: Some(server),
                    invalid: None,
                },
                Err(e) => {
                    tracing::warn!("{e}");
                    DnsConfig {
                        server: None,
                        invalid: Some(e),
                    }
                }
            },
            _ => DnsConfig::default(),
        }
    }
}

/// Parses `ip:port` (`[v6]:port` for IPv6), or a bare IP for port 53.
pub(crate) fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!(
        "{DNS_SERVER_ENV}={s:?} is not a DNS server address (expected ip:port, e.g. 127.0.0.1:5353)"
    ))
}

/// What to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// A host name's addresses, for this port.
    Host { name: String, port: u16 },
    /// A service name's SRV records, then their targets' addresses.
    Service { name: String },
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::Host { name, port } => write!(f, "{name}:{port}"),
            Query::Service { name } => write!(f, "{name} (SRV)"),
        }
    }
}

/// One address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub addr: SocketAddr,
    /// Where it came from: `target:port` of an SRV record, or `host:port`.
    pub origin: String,
    /// The SRV record's priority (0 for a host name).
    pub priority: u16,
}

/// What a query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The addresses in the order to try them.
    pub candidates: Vec<Candidate>,
    /// When the records' TTL ends (the earliest of all records used), where known
    /// (DNS answers; `None` for the system resolver, which does not say).
    pub valid_until: Option<Instant>,
}

/// The answer to a query, or why there is none (for the monitor).
pub(crate) type Answer = Result<Resolved, String>;

/// Called on the resolver thread with the answer.
pub(crate) type Reply = Box<dyn FnOnce(Answer) + Send>;

struct Job {
    query: Query,
    reply: Reply,
}

/// The resolver thread (see the module docs).
pub(crate) struct Resolver {
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// Starts the thread.
    pub(crate) fn start(config: DnsConfig) -> std::io::Result<Resolver> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("lwmq-dns-blocking")
            .max_blocking_threads(4)
            .build()?;
        let thread = std::thread::Builder::new()
            .name("lwmq-dns".into())
            .spawn(move || {
                rt.block_on(async move {
                    // Built on this thread: reading /etc/resolv.conf is file I/O.
                    let dns = Arc::new(build_resolver(&config));
                    while let Some(job) = rx.recv().await {
                        let dns = dns.clone();
                        let config = config.clone();
                        tokio::spawn(async move {
                            let answer = lookup(&dns, &config, &job.query).await;
                            (job.reply)(answer);
                        });
                    }
                });
                // Unfinished queries are dropped; a getaddrinfo still running on the
                // blocking pool finishes on its own without being waited for.
                rt.shutdown_background();
            })?;
        Ok(Resolver {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Looks `query` up; `reply` is called (on the resolver thread) with the answer.
    pub(crate) fn lookup(&self, query: Query, reply: Reply) {
        let job = Job { query, reply };
        let sent = self.jobs.as_ref().map(|tx| tx.send(job));
        if let Some(Err(tokio::sync::mpsc::error::SendError(job))) = sent {
            (job.reply)(Err("the resolver thread is gone".into()));
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            // The thread ends as soon as it sees the closed queue.
            let _ = t.join();
        }
    }
}

fn build_resolver(config: &DnsConfig) -> Result<TokioResolver, String> {
    if let Some(e) = &config.invalid {
        return Err(e.clone());
    }
    let provider = TokioConnectionProvider::default();
    let mut builder = match config.server {
        Some(server) => {
            let group = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), group),
                provider,
            )
        }
        None => TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    if config.server.is_some() {
        // Names given with a server are absolute: no search domains.
        opts.ndots = 0;
        // UDP first, TCP only when UDP fails (the server is listed once per
        // protocol; asking both at once would keep a TCP connection open to it).
        opts.num_concurrent_reqs = 1;
        opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
    }
    Ok(builder.build())
}

async fn lookup(dns: &Result<TokioResolver, String>, config: &DnsConfig, q: &Query) -> Answer {
    match q {
        Query::Host { name, port } if config.server.is_none() && config.invalid.is_none() => {
            system_lookup(name.clone(), *port).await
        }
        Query::Host { name, port } => {
            let dns = dns.as_ref().map_err(Clone::clone)?;
            host_lookup(dns, name, *port, name).await
        }
        Query::Service { name } => {
            let dns = dns.as_ref().map_err(Clone::clone)?;
            service_lookup(dns, name).await
        }
    }
}

/// `getaddrinfo`, on the runtime's blocking pool.
async fn system_lookup(name: String, port: u16) -> Answer {
    let n = name.clone();
    let found = tokio::task::spawn_blocking(move || {
        (n.as_str(), port)
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>())
    })
    .await
    .map_err(|e| format!("cannot resolve {name:?}: {e}"))?
    .map_err(|e| format!("cannot resolve {name:?}: {e}"))?;
    if found.is_empty() {
        return Err(format!("{name:?} has no address"));
    }
    Ok(Resolved {
        candidates: found
            .into_iter()
            .map(|addr| Candidate {
                addr,
                origin: format!("{name}:{port}"),
                priority: 0,
            })
            .collect(),
        valid_until: None,
    })
}

async fn host_lookup(dns: &TokioResolver, name: &str, port: u16, what: &str) -> Answer {
    let ips = dns
        .lookup_ip(name)
        .await
        .map_err(|e| format!("cannot resolve {what:?}: {}", describe(&e)))?;
    let out: Vec<Candidate> = ips
        .iter()
        .map(|ip| Candidate {
            addr: SocketAddr::new(ip, port),
            origin: format!("{name}:{port}"),
            priority: 0,
        })
        .collect();
    if out.is_empty() {
        Err(format!("{what:?} has no address"))
    } else {
        Ok(Resolved {
            candidates: out,
            valid_until: Some(ips.valid_until()),
        })
    }
}

/// A resolver error for humans.
fn describe(e: &hickory_resolver::ResolveError) -> String {
    if e.is_nx_domain() {
        "no such name (NXDOMAIN)".into()
    } else if e.is_no_records_found() {
        "no records of that type".into()
    } else {
        e.to_string()
    }
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

async fn service_lookup(dns: &TokioResolver, name: &str) -> Answer {
    let srv = dns
        .srv_lookup(name)
        .await
        .map_err(|e| format!("cannot resolve service {name:?}: {}", describe(&e)))?;
    let records: Vec<SrvRecord> = srv
        .iter()
        .map(|r| SrvRecord {
            priority: r.priority(),
            weight: r.weight(),
            port: r.port(),
            target: r.target().to_utf8(),
        })
        .collect();
    if records.is_empty() {
        return Err(format!("service {name:?} has no SRV records"));
    }
    if records.len() == 1 && (records[0].target == "." || records[0].target.is_empty()) {
        return Err(format!(
            "service {name:?} is decidedly not available here (SRV target \".\")"
        ));
    }
    let mut out = Vec::new();
    let mut failures = Vec::new();
    let mut valid_until = srv.as_lookup().valid_until();
    for r in order_srv(records, &mut random_u64) {
        if r.target == "." || r.target.is_empty() {
            continue;
        }
        let host = r.target.trim_end_matches('.');
        match host_lookup(dns, host, r.port, host).await {
            Ok(found) => {
                out.extend(found.candidates.into_iter().map(|c| Candidate {
                    priority: r.priority,
                    ..c
                }));
                if let Some(t) = found.valid_until {
                    valid_until = valid_until.min(t);
                }
            }
            Err(e) => failures.push(e),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no target of service {name:?} has an address: {}",
            failures.join("; ")
        ));
    }
    Ok(Resolved {
        candidates: out,
        valid_until: Some(valid_until),
    })
}

/// A random number (std's per-instance random hash keys; good enough to spread load).
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// Puts SRV records in the order RFC 2782 says to try them: by priority, lowest
/// first; within a priority by weighted random selection (weight-0 records placed
/// first so they keep a small chance of going first).
pub(crate) fn order_srv(
    mut records: Vec<SrvRecord>,
    random: &mut dyn FnMut() -> u64,
) -> Vec<SrvRecord> {
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    let mut i = 0;
    while i < records.len() {
        let prio = records[i].priority;
        let end = records[i..]
            .iter()
            .position(|r| r.priority != prio)
            .map_or(records.len(), |n| i + n);
        let mut group: Vec<SrvRecord> = records[i..end].to_vec();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                // A number in 0..=total; the first record whose running sum reaches
                // it is chosen.
                let n = random() % (total + 1);
                let mut sum = 0;
                group
                    .iter()
                    .position(|r| {
                        sum += u64::from(r.weight);
                        sum >= n
                    })
                    .unwrap_or(0)
            };
            out.push(group.remove(pick));
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 1,
            target: target.into(),
        }
    }

    #[test]
    fn priorities_first_then_weights() {
        let records = vec![rec(20, 0, "c"), rec(10, 1, "a"), rec(10, 99, "b")];
        let mut counts = [0u32; 2];
        let mut seed = 1u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 11
        };
        for _ in 0..1000 {
            let o = order_srv(records.clone(), &mut rnd);
            assert_eq!(o.len(), 3);
            assert_eq!(o[2].target, "c", "the higher priority number goes last");
            counts[usize::from(o[0].target == "b")] += 1;
        }
        // Weight 99 against 1: b goes first nearly always, a sometimes.
        assert!(counts[1] > 900, "{counts:?}");
        assert!(counts[0] > 0, "{counts:?}");
    }

    #[test]
    fn zero_weights_keep_every_record() {
        let records = vec![rec(1, 0, "a"), rec(1, 0, "b"), rec(0, 0, "z")];
        let o = order_srv(records, &mut || 7);
        let names: Vec<_> = o.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(names, ["z", "a", "b"]);
    }

    #[test]
    fn server_addresses() {
        assert_eq!(
            parse_server("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(parse_server("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert!(
            parse_server("localhost:53")
                .unwrap_err()
                .contains("ip:port")
        );
    }
}
