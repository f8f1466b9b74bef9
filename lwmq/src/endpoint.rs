//! Endpoint URIs: every transport's address syntax is parsed here, and only here.
//!
//! | URI | transport |
//! |---|---|
//! | `tcp://host:port[/resource]` | ZMTP 3.1 over TCP; `*` binds every interface; port `0` or `*` picks one |
//! | `tcp://_service._tcp.domain[/resource]` | connect only: a DNS service name; its SRV records give hosts and ports (RFC 2782) |
//! | `ipc://name[:port]` | lwmq's shared-memory transport |
//! | `unix:///path` or `unix://@abstract` | ZMTP over Unix stream sockets (libzmq's `ipc://`) |
//! | `inproc://name` | within one process |
//! | `fd://N` | adopt descriptor N: a listening TCP or Unix stream socket (bind) or a connected one (connect) |
//! | `systemd://NAME` or `systemd://N` | a socket passed by systemd socket activation, by `FileDescriptorName=` or index |

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Longest `ipc://` name, in characters (the port does not count).
pub const MAX_IPC_NAME_CHARS: usize = 119;
/// Longest `unix://` path in bytes (`sun_path` holds 108 with the terminating NUL).
pub const MAX_UNIX_PATH_BYTES: usize = 107;
/// Longest `tcp://` resource, in bytes.
pub const MAX_RESOURCE_BYTES: usize = 255;

/// The host part of a TCP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// `*`: every interface (bind only).
    Any,
    /// A literal IP address.
    Ip(std::net::IpAddr),
    /// A host name to resolve (A/AAAA records, or `/etc/hosts`).
    Name(String),
    /// A DNS service name, `_service._tcp.domain` (connect only; the port is 0): its
    /// SRV records name the hosts and ports to connect to, tried in RFC 2782's order.
    Service(String),
}

/// A parsed endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `tcp://host:port[/resource]`
    Tcp {
        /// Interface or peer host.
        host: Host,
        /// Port; `0` asks the kernel for one (bind only).
        port: u16,
        /// ZMTP Resource, for sharing one port among many sockets.
        resource: Option<String>,
    },
    /// `ipc://name[:port]`: shared memory.
    Ipc {
        /// Channel name, 1 to 119 characters, no `:`.
        name: String,
        /// Optional channel number 1..=65535.
        port: Option<u16>,
    },
    /// `unix:///path` or `unix://@name`.
    Unix(UnixAddr),
    /// `inproc://name`.
    Inproc(String),
    /// `fd://N`.
    Fd(i32),
    /// `systemd://name`: a descriptor from systemd socket activation, by its
    /// `FileDescriptorName=` or by its index.
    Systemd(String),
}

/// A Unix-domain socket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A path in the file system.
    Path(std::path::PathBuf),
    /// A name in the abstract namespace (Linux), without the leading `@`.
    Abstract(String),
}

impl Endpoint {
    /// Parses an endpoint URI, with an error that names the URI and says what is wrong.
    pub fn parse(uri: &str) -> Result<Endpoint> {
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Err(Error::endpoint(
                uri,
                "expected scheme://address (tcp, ipc, unix, inproc, fd or systemd)",
            ));
        };
        match scheme {
            "tcp" => parse_tcp(uri, rest),
            "ipc" => parse_ipc(uri, rest),
            "unix" => parse_unix(uri, rest),
            "inproc" => {
                if rest.is_empty() {
                    Err(Error::endpoint(uri, "inproc name is empty"))
                } else {
                    Ok(Endpoint::Inproc(rest.to_owned()))
                }
            }
            "fd" => rest
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Endpoint::Fd)
                .ok_or_else(|| {
                    Error::endpoint(uri, "fd:// takes a non-negative descriptor number")
                }),
            "systemd" => {
                if rest.is_empty() {
                    Err(Error::endpoint(
                        uri,
                        "systemd:// takes a socket name (FileDescriptorName=) or index",
                    ))
                } else if rest.contains(':') || rest.chars().any(char::is_control) {
                    Err(Error::endpoint(
                        uri,
                        "a FileDescriptorName= has no ':' and no control characters",
                    ))
                } else {
                    Ok(Endpoint::Systemd(rest.to_owned()))
                }
            }
            other => Err(Error::endpoint(
                uri,
                format!(
                    "unknown transport {other:?} (expected tcp, ipc, unix, inproc, fd or systemd)"
                ),
            )),
        }
    }

    /// The transport's scheme: `"tcp"`, `"ipc"`, ...
    pub fn scheme(&self) -> &'static str {
        match self {
            Endpoint::Tcp { .. } => "tcp",
            Endpoint::Ipc { .. } => "ipc",
            Endpoint::Unix(_) => "unix",
            Endpoint::Inproc(_) => "inproc",
            Endpoint::Fd(_) => "fd",
            Endpoint::Systemd(_) => "systemd",
        }
    }
}

fn parse_port(uri: &str, s: &str, what: &str, allow_zero: bool) -> Result<u16> {
    if s.is_empty() {
        return Err(Error::endpoint(uri, format!("{what} is missing")));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::endpoint(
            uri,
            format!("{what} {s:?} is not a number"),
        ));
    }
    match s.parse::<u32>() {
        Ok(0) if !allow_zero => Err(Error::endpoint(
            uri,
            format!("{what} must be between 1 and 65535, not 0"),
        )),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(Error::endpoint(
            uri,
            format!("{what} {s} is out of range (1 to 65535)"),
        )),
    }
}

fn parse_tcp(uri: &str, rest: &str) -> Result<Endpoint> {
    let (authority, resource) = match rest.split_once('/') {
        Some((a, r)) => (a, Some(r)),
        None => (rest, None),
    };
    let resource = match resource {
        None => None,
        Some("") => return Err(Error::endpoint(uri, "resource after '/' is empty")),
        Some(r) if r.len() > MAX_RESOURCE_BYTES => {
            return Err(Error::endpoint(
                uri,
                format!("resource is longer than {MAX_RESOURCE_BYTES} bytes"),
            ));
        }
        Some(r) if r.chars().any(|c| c.is_control() || c.is_whitespace()) => {
            return Err(Error::endpoint(
                uri,
                "resource contains white space or control characters",
            ));
        }
        Some(r) => Some(r.to_owned()),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, port)) = v6.split_once("]:") else {
            return Err(Error::endpoint(uri, "expected [ipv6-address]:port"));
        };
        let ip = addr
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| Error::endpoint(uri, format!("{addr:?} is not an IPv6 address")))?;
        (Host::Ip(ip.into()), port)
    } else {
        let Some((host, port)) = authority.rsplit_once(':') else {
            if is_service_name(authority) {
                return Ok(Endpoint::Tcp {
                    host: Host::Service(authority.to_ascii_lowercase()),
                    port: 0,
                    resource,
                });
            }
            return Err(Error::endpoint(
                uri,
                if authority.starts_with('_') {
                    "expected host:port, or a DNS service name without a port (_service._tcp.domain)"
                } else {
                    "expected host:port"
                },
            ));
        };
        let host = if host == "*" {
            Host::Any
        } else if host.is_empty() {
            return Err(Error::endpoint(
                uri,
                "host is empty (use * to bind every interface)",
            ));
        } else if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            Host::Ip(ip.into())
        } else if host.contains(':') {
            return Err(Error::endpoint(
                uri,
                "IPv6 addresses go in brackets: [::1]:port",
            ));
        } else if host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            Host::Name(host.to_owned())
        } else {
            return Err(Error::endpoint(
                uri,
                format!("{host:?} is not a valid host name"),
            ));
        };
        (host, port)
    };
    let port = if port == "*" {
        0
    } else {
        parse_port(uri, port, "port", true)?
    };
    Ok(Endpoint::Tcp {
        host,
        port,
        resource,
    })
}

/// `_service._tcp.domain`: a first label that starts with `_`, then `_tcp`, then at
/// least one label of letters, digits, `-` and `_` (a trailing `.` is allowed).
fn is_service_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    let labels: Vec<&str> = s.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    labels.len() >= 3
        && s.len() <= 253
        && labels.iter().all(label_ok)
        && labels[0].len() > 1
        && labels[0].starts_with('_')
        && labels[1].eq_ignore_ascii_case("_tcp")
}

fn parse_ipc(uri: &str, rest: &str) -> Result<Endpoint> {
    let (name, port) = match rest.split_once(':') {
        Some((name, port)) => {
            if port.contains(':') {
                return Err(Error::endpoint(
                    uri,
                    "':' is reserved: an ipc name cannot contain it, and it may appear once, before the port",
                ));
            }
            (name, Some(parse_port(uri, port, "ipc port", false)?))
        }
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(Error::endpoint(uri, "ipc name is empty"));
    }
    let chars = name.chars().count();
    if chars > MAX_IPC_NAME_CHARS {
        return Err(Error::endpoint(
            uri,
            format!("ipc name is {chars} characters long; the limit is {MAX_IPC_NAME_CHARS}"),
        ));
    }
    if name.contains('\0') {
        return Err(Error::endpoint(uri, "ipc name contains a NUL character"));
    }
    Ok(Endpoint::Ipc {
        name: name.to_owned(),
        port,
    })
}

fn parse_unix(uri: &str, rest: &str) -> Result<Endpoint> {
    if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() {
            return Err(Error::endpoint(
                uri,
                "abstract socket name after '@' is empty",
            ));
        }
        if name.len() > MAX_UNIX_PATH_BYTES - 1 {
            return Err(Error::endpoint(
                uri,
                format!(
                    "abstract name is longer than {} bytes",
                    MAX_UNIX_PATH_BYTES - 1
                ),
            ));
        }
        return Ok(Endpoint::Unix(UnixAddr::Abstract(name.to_owned())));
    }
    if rest.is_empty() {
        return Err(Error::endpoint(uri, "unix socket path is empty"));
    }
    if rest.len() > MAX_UNIX_PATH_BYTES {
        return Err(Error::endpoint(
            uri,
            format!("unix socket path is longer than {MAX_UNIX_PATH_BYTES} bytes"),
        ));
    }
    if rest.contains('\0') {
        return Err(Error::endpoint(
            uri,
            "unix socket path contains a NUL character",
        ));
    }
    Ok(Endpoint::Unix(UnixAddr::Path(rest.into())))
}

impl FromStr for Endpoint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Endpoint> {
        Endpoint::parse(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp {
                host,
                port,
                resource,
            } => {
                match host {
                    Host::Any => write!(f, "tcp://*:{port}")?,
                    Host::Ip(std::net::IpAddr::V6(ip)) => write!(f, "tcp://[{ip}]:{port}")?,
                    Host::Ip(ip) => write!(f, "tcp://{ip}:{port}")?,
                    Host::Name(n) => write!(f, "tcp://{n}:{port}")?,
                    Host::Service(n) => write!(f, "tcp://{n}")?,
                }
                if let Some(r) = resource {
                    write!(f, "/{r}")?;
                }
                Ok(())
            }
            Endpoint::Ipc { name, port: None } => write!(f, "ipc://{name}"),
            Endpoint::Ipc {
                name,
                port: Some(p),
            } => write!(f, "ipc://{name}:{p}"),
            Endpoint::Unix(UnixAddr::Path(p)) => write!(f, "unix://{}", p.display()),
            Endpoint::Unix(UnixAddr::Abstract(n)) => write!(f, "unix://@{n}"),
            Endpoint::Inproc(n) => write!(f, "inproc://{n}"),
            Endpoint::Fd(n) => write!(f, "fd://{n}"),
            Endpoint::Systemd(n) => write!(f, "systemd://{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(uri: &str) -> String {
        match Endpoint::parse(uri) {
            Err(e) => e.to_string(),
            Ok(ep) => panic!("{uri} parsed as {ep:?}"),
        }
    }

    #[test]
    fn tcp_forms() {
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:5555").unwrap(),
            Endpoint::Tcp {
                host: Host::Ip([127, 0, 0, 1].into()),
                port: 5555,
                resource: None
            }
        );
        assert_eq!(
            Endpoint::parse("tcp://*:*").unwrap(),
            Endpoint::Tcp {
                host: Host::Any,
                port: 0,
                resource: None
            }
        );
        let ep = Endpoint::parse("tcp://[::1]:80/orders").unwrap();
        assert_eq!(ep.to_string(), "tcp://[::1]:80/orders");
        let ep = Endpoint::parse("tcp://localhost:1/a/b").unwrap();
        assert_eq!(
            ep,
            Endpoint::Tcp {
                host: Host::Name("localhost".into()),
                port: 1,
                resource: Some("a/b".into())
            }
        );
        assert!(err("tcp://host").contains("host:port"));
        assert!(err("tcp://_echo._udp.x").contains("service name"));
        assert!(err("tcp://_._tcp.x").contains("service name"));
        let ep = Endpoint::parse("tcp://_Echo._tcp.lwmq.test/orders").unwrap();
        assert_eq!(
            ep,
            Endpoint::Tcp {
                host: Host::Service("_echo._tcp.lwmq.test".into()),
                port: 0,
                resource: Some("orders".into())
            }
        );
        assert_eq!(ep.to_string(), "tcp://_echo._tcp.lwmq.test/orders");
        assert!(Endpoint::parse("tcp://_echo._tcp.lwmq.test.").is_ok());
        assert!(err("tcp://host:99999").contains("out of range"));
        assert!(err("tcp://host:x").contains("not a number"));
        assert!(err("tcp://:5").contains("host is empty"));
        assert!(err("tcp://h:5/").contains("resource"));
        assert!(err("tcp://::1:5").contains("brackets"));
        assert!(err("tcp://[zz]:5").contains("IPv6"));
        assert!(err("tcp://a b:5").contains("host name"));
    }

    #[test]
    fn ipc_forms() {
        assert_eq!(
            Endpoint::parse("ipc://mycompany/myproduct/chan:1234").unwrap(),
            Endpoint::Ipc {
                name: "mycompany/myproduct/chan".into(),
                port: Some(1234)
            }
        );
        assert_eq!(
            Endpoint::parse("ipc://ünïcødé").unwrap().to_string(),
            "ipc://ünïcødé"
        );
        let long: String = "é".repeat(119);
        assert!(Endpoint::parse(&format!("ipc://{long}:65535")).is_ok());
        let e = err(&format!("ipc://{long}x"));
        assert!(e.contains("120 characters") && e.contains("ipc://"), "{e}");
        assert!(err("ipc://").contains("empty"));
        assert!(err("ipc://:5").contains("empty"));
        assert!(err("ipc://a:0").contains("not 0"));
        assert!(err("ipc://a:65536").contains("out of range"));
        assert!(err("ipc://a:b:1").contains("reserved"));
        assert!(err("ipc://a:").contains("missing"));
    }

    #[test]
    fn other_transports() {
        assert_eq!(
            Endpoint::parse("unix:///tmp/x.sock").unwrap(),
            Endpoint::Unix(UnixAddr::Path("/tmp/x.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("unix://@lwmq-test").unwrap(),
            Endpoint::Unix(UnixAddr::Abstract("lwmq-test".into()))
        );
        assert_eq!(Endpoint::parse("inproc://x").unwrap().scheme(), "inproc");
        assert_eq!(Endpoint::parse("fd://3").unwrap(), Endpoint::Fd(3));
        assert!(err("fd://-1").contains("non-negative"));
        assert!(err("unix://@").contains("empty"));
        assert!(err(&format!("unix:///{}", "a".repeat(200))).contains("longer"));
        assert!(err("inproc://").contains("empty"));
        assert!(err("systemd://").contains("systemd"));
        assert_eq!(
            Endpoint::parse("systemd://web").unwrap(),
            Endpoint::Systemd("web".into())
        );
        assert_eq!(
            Endpoint::parse("systemd://0").unwrap().to_string(),
            "systemd://0"
        );
        assert!(err("systemd://a:b").contains("':'"));
        assert!(err("fd://").contains("non-negative"));
        assert!(err("fd://3x").contains("non-negative"));
        assert!(err("fd://99999999999").contains("non-negative"));
        assert!(err("http://x").contains("unknown transport"));
        assert!(err("nothing").contains("scheme://"));
    }
}
