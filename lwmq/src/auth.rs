//! Authentication of peers: the ZAP handler a [`crate::Context`] consults (RFC 27's
//! role, called in process), and [`Authenticator`], a ready-made one that allows or
//! denies by peer address, checks PLAIN user names and passwords, and CURVE client
//! keys (a list, or a directory of key files as czmq and pyzmq write them), per ZAP
//! domain.
//!
//! # Where it is called, and when
//!
//! The context's background thread asks the handler once per connection, during the
//! handshake, on the side that authenticates:
//!
//! - a PLAIN server, when the client's HELLO arrived (user name and password);
//! - a CURVE server, when the client's INITIATE opened (the client's long-term public
//!   key, which it has proved it holds);
//! - a NULL socket only when its ZAP domain is set ([`crate::Socket::set_zap_domain`]),
//!   as libzmq does, with the peer's address alone: for a connection it accepted, before
//!   any byte is sent (a refused peer sees a hang-up); for one it made, when the
//!   handshake completes.
//!
//! The handler runs on the background thread, which serves every connection of the
//! context: it must answer from memory (as [`Authenticator`] does: its key directory is
//! read when it is configured, not per connection), never wait on the network or a
//! disk. An answer of [`ZapReply::Allow`] carries the user id that received messages
//! then show ([`crate::Message::user_id`]); [`ZapReply::Deny`] ends the handshake with
//! an ERROR (ZAP status 400) to the peer and a `handshake-failed-auth` monitor event
//! carrying the reason.
//!
//! Without a handler, lwmq does what libzmq does without a ZAP handler: a PLAIN server
//! accepts every user name and password and a CURVE server every client key (a CURVE
//! client still checks the server's key, and the connection is still encrypted).
//!
//! ```
//! use lwmq::auth::Authenticator;
//! use lwmq::{Context, CurveKeyPair, SocketType};
//!
//! # fn main() -> lwmq::Result<()> {
//! let server_keys = CurveKeyPair::generate();
//! let client_keys = CurveKeyPair::generate();
//! let auth = Authenticator::new();
//! auth.allow_curve_keys("*", [client_keys.public]);
//! let ctx = Context::new();
//! ctx.set_zap_handler(auth.clone());
//!
//! let server = ctx.socket(SocketType::Rep)?;
//! server.set_curve_server(true);
//! server.set_curve_secret_key(&server_keys.secret);
//! let ep = server.bind("tcp://127.0.0.1:0")?;
//!
//! let client = ctx.socket(SocketType::Req)?;
//! client.set_curve_secret_key(&client_keys.secret);
//! client.set_curve_server_key(&server_keys.public);
//! client.connect(&ep)?;
//! client.send("hi")?;
//! let m = server.recv()?;
//! assert_eq!(m.user_id(), Some(client_keys.public.to_z85().as_str()));
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::proto::{CurvePublicKey, CurveSecretKey};
use crate::{Error, Result};

/// The domain that matches every ZAP domain in [`Authenticator`]'s rules (as pyzmq's
/// `domain='*'`).
pub const ANY_DOMAIN: &str = "*";

/// What a peer presented.
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials<'a> {
    /// NULL mechanism: nothing but the peer's address.
    Null,
    /// PLAIN: a user name and a password.
    Plain {
        /// The user name.
        username: &'a str,
        /// The password (in clear text on the wire).
        password: &'a str,
    },
    /// CURVE: the client's long-term public key, which it proved it holds.
    Curve {
        /// The key.
        public_key: &'a CurvePublicKey,
    },
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Null => f.write_str("Null"),
            Credentials::Plain { username, .. } => f
                .debug_struct("Plain")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Curve { public_key } => f
                .debug_struct("Curve")
                .field("public_key", public_key)
                .finish(),
        }
    }
}

/// One question to a [`ZapHandler`]: who connects, from where, to which domain.
#[derive(Debug, Clone, Copy)]
pub struct ZapRequest<'a> {
    /// The socket's ZAP domain ([`crate::Socket::set_zap_domain`]; empty by default).
    pub domain: &'a str,
    /// The peer's IP address (`None` over `unix://`).
    pub address: Option<IpAddr>,
    /// The endpoint of the connection (what was bound or connected).
    pub endpoint: &'a str,
    /// What the peer presented.
    pub credentials: Credentials<'a>,
}

/// A [`ZapHandler`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZapReply {
    /// Let the peer in; its messages carry this user id ([`crate::Message::user_id`]).
    Allow {
        /// The user id (ZAP's User-Id; may be empty).
        user_id: String,
    },
    /// Refuse the peer, for this reason (reported in the `handshake-failed-auth`
    /// monitor event; the peer gets ZAP status 400).
    Deny {
        /// Why, for the log and the monitor.
        reason: String,
    },
}

impl ZapReply {
    /// A refusal for this reason.
    pub fn deny(reason: impl Into<String>) -> ZapReply {
        ZapReply::Deny {
            reason: reason.into(),
        }
    }

    /// An admission with this user id.
    pub fn allow(user_id: impl Into<String>) -> ZapReply {
        ZapReply::Allow {
            user_id: user_id.into(),
        }
    }
}

/// Decides who may connect: what libzmq reaches over `inproc://zeromq.zap.01`, called
/// here in process. Install one with [`crate::Context::set_zap_handler`]; see the
/// [module docs](self) for when it is called and why it must answer quickly. A closure
/// `Fn(&ZapRequest) -> ZapReply` is one.
pub trait ZapHandler: Send + Sync {
    /// Answers one request. Runs on the context's background thread: answer from
    /// memory, without blocking.
    fn authenticate(&self, request: &ZapRequest<'_>) -> ZapReply;
}

impl<F> ZapHandler for F
where
    F: Fn(&ZapRequest<'_>) -> ZapReply + Send + Sync,
{
    fn authenticate(&self, request: &ZapRequest<'_>) -> ZapReply {
        self(request)
    }
}

/// The context's ZAP handler, if any, shared with every socket's options (so that a
/// handler installed or removed later applies to connections made afterwards).
#[derive(Clone, Default)]
pub(crate) struct ZapSlot(Arc<RwLock<Option<Arc<dyn ZapHandler>>>>);

impl fmt::Debug for ZapSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.current().is_some();
        f.debug_tuple("ZapSlot")
            .field(&if set { "handler" } else { "none" })
            .finish()
    }
}

impl ZapSlot {
    pub(crate) fn set(&self, handler: Option<Arc<dyn ZapHandler>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = handler;
    }

    pub(crate) fn current(&self) -> Option<Arc<dyn ZapHandler>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How CURVE clients of one domain are checked.
#[derive(Debug, Clone)]
enum CurvePolicy {
    /// Every client key (the connection is still encrypted and the server proved).
    Any,
    /// Only these keys.
    Keys(HashSet<CurvePublicKey>),
}

#[derive(Debug, Default)]
struct Rules {
    allow: HashSet<IpAddr>,
    deny: HashSet<IpAddr>,
    plain: HashMap<String, HashMap<String, String>>,
    curve: HashMap<String, CurvePolicy>,
}

impl Rules {
    fn for_domain<'a, T>(map: &'a HashMap<String, T>, domain: &str) -> Option<&'a T> {
        map.get(domain).or_else(|| map.get(ANY_DOMAIN))
    }
}

/// A ready-made [`ZapHandler`], in the manner of pyzmq's `ThreadAuthenticator` and
/// czmq's `zauth`, without their thread.
///
/// - **Addresses**: with any address allowed ([`Authenticator::allow`]), only those may
///   connect (a peer without an IP address, over `unix://`, then may not); a denied
///   address ([`Authenticator::deny`]) may not. This applies to every mechanism.
/// - **PLAIN**: the user names and passwords of the socket's ZAP domain
///   ([`Authenticator::add_plain_user`]); the user id is the user name. A domain
///   without any is refused.
/// - **CURVE**: the client keys allowed for the domain ([`Authenticator::allow_curve_keys`],
///   [`Authenticator::load_curve_keys`]), or any key
///   ([`Authenticator::allow_any_curve_key`]); the user id is the client key in Z85. A
///   domain without a CURVE rule is refused.
/// - **NULL** (asked only for sockets with a ZAP domain): the address rules alone; the
///   user id is empty.
///
/// Rules for the domain [`ANY_DOMAIN`] (`"*"`) apply to domains without rules of their
/// own. Cloning gives another handle to the same rules, so rules can change while the
/// authenticator is installed; they apply to connections authenticated afterwards.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    rules: Arc<RwLock<Rules>>,
}

impl Authenticator {
    /// An authenticator with no rules: every PLAIN and CURVE client is refused until a
    /// rule allows it; NULL peers are allowed.
    pub fn new() -> Authenticator {
        Authenticator::default()
    }

    fn edit(&self, f: impl FnOnce(&mut Rules)) {
        f(&mut self.rules.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// Allows connections from this address (once any address is allowed, only allowed
    /// addresses may connect).
    pub fn allow(&self, address: IpAddr) {
        self.edit(|r| {
            r.allow.insert(address);
        });
    }

    /// Refuses connections from this address.
    pub fn deny(&self, address: IpAddr) {
        self.edit(|r| {
            r.deny.insert(address);
        });
    }

    /// Adds (or replaces the password of) a PLAIN user in `domain` (`"*"`: every domain
    /// without users of its own).
    pub fn add_plain_user(&self, domain: &str, username: &str, password: &str) {
        self.edit(|r| {
            r.plain
                .entry(domain.to_owned())
                .or_default()
                .insert(username.to_owned(), password.to_owned());
        });
    }

    /// Allows these CURVE client keys in `domain` (added to those already allowed).
    pub fn allow_curve_keys(&self, domain: &str, keys: impl IntoIterator<Item = CurvePublicKey>) {
        self.edit(|r| {
            let entry = r
                .curve
                .entry(domain.to_owned())
                .or_insert_with(|| CurvePolicy::Keys(HashSet::new()));
            match entry {
                CurvePolicy::Keys(set) => set.extend(keys),
                CurvePolicy::Any => {}
            }
        });
    }

    /// Allows every CURVE client key in `domain` (pyzmq's `CURVE_ALLOW_ANY`): the client
    /// must still know the server's key, and the connection is encrypted.
    pub fn allow_any_curve_key(&self, domain: &str) {
        self.edit(|r| {
            r.curve.insert(domain.to_owned(), CurvePolicy::Any);
        });
    }

    /// Allows the CURVE client keys in the files of directory `dir` in `domain`, and
    /// returns how many it read. It replaces the keys of `domain` allowed before (as
    /// pyzmq's `configure_curve(location=...)`), so calling it again re-reads the
    /// directory. A file is either a czmq/pyzmq certificate (a line
    /// `public-key = "<40 characters of Z85>"`; a `.key_secret` file is read for its
    /// public key) or holds just the Z85 key. Files with neither are skipped; a file
    /// whose key does not decode is an error naming it.
    pub fn load_curve_keys(&self, domain: &str, dir: impl AsRef<Path>) -> Result<usize> {
        let keys = read_key_dir(dir.as_ref())?;
        let n = keys.len();
        self.edit(|r| {
            r.curve.insert(domain.to_owned(), CurvePolicy::Keys(keys));
        });
        Ok(n)
    }

    fn check_address(r: &Rules, address: Option<IpAddr>) -> Option<String> {
        match address {
            Some(a) if r.deny.contains(&a) => Some(format!("address {a} is denied")),
            Some(a) if !r.allow.is_empty() && !r.allow.contains(&a) => {
                Some(format!("address {a} is not among the allowed addresses"))
            }
            None if !r.allow.is_empty() => {
                Some("the peer has no IP address and only listed addresses may connect".into())
            }
            _ => None,
        }
    }
}

impl ZapHandler for Authenticator {
    fn authenticate(&self, req: &ZapRequest<'_>) -> ZapReply {
        let r = self.rules.read().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = Authenticator::check_address(&r, req.address) {
            return ZapReply::deny(why);
        }
        let domain = req.domain;
        match req.credentials {
            Credentials::Null => ZapReply::allow(""),
            Credentials::Plain { username, password } => {
                let Some(users) = Rules::for_domain(&r.plain, domain) else {
                    return ZapReply::deny(format!(
                        "no PLAIN users are configured for ZAP domain {domain:?}"
                    ));
                };
                match users.get(username) {
                    Some(p) if p == password => ZapReply::allow(username),
                    Some(_) => {
                        ZapReply::deny(format!("wrong password for PLAIN user {username:?}"))
                    }
                    None => ZapReply::deny(format!(
                        "unknown PLAIN user {username:?} in ZAP domain {domain:?}"
                    )),
                }
            }
            Credentials::Curve { public_key } => match Rules::for_domain(&r.curve, domain) {
                Some(CurvePolicy::Any) => ZapReply::allow(public_key.to_z85()),
                Some(CurvePolicy::Keys(keys)) if keys.contains(public_key) => {
                    ZapReply::allow(public_key.to_z85())
                }
                Some(CurvePolicy::Keys(_)) => ZapReply::deny(format!(
                    "CURVE client key {public_key} is not allowed in ZAP domain {domain:?}"
                )),
                None => ZapReply::deny(format!(
                    "no CURVE client keys are configured for ZAP domain {domain:?}"
                )),
            },
        }
    }
}

/// Reads a CURVE public key from a file: a czmq/pyzmq certificate (its
/// `public-key = "..."` line), a file written by `lwmq keygen`, or a file holding only
/// the 40 characters of Z85. The error names the file and what is wrong.
pub fn read_public_key(path: impl AsRef<Path>) -> Result<CurvePublicKey> {
    let path = path.as_ref();
    let text = read_text(path)?;
    key_in_file(path, &text)?.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: no CURVE public key in it (expected a line public-key = \"<Z85>\" or the \
             40-character key alone)",
            path.display()
        ))
    })
}

/// Reads a CURVE secret key from a file: a czmq/pyzmq secret certificate (its
/// `secret-key = "..."` line, as in `*.key_secret`), a file written by `lwmq keygen`,
/// or a file holding only the 40 characters of Z85. The error names the file.
pub fn read_secret_key(path: impl AsRef<Path>) -> Result<CurveSecretKey> {
    let path = path.as_ref();
    let text = read_text(path)?;
    let bad = |e: crate::proto::z85::Z85Error| {
        Error::InvalidArgument(format!("{}: not a CURVE secret key: {e}", path.display()))
    };
    if let Some(value) = field(&text, "secret-key") {
        return CurveSecretKey::from_z85(value).map_err(bad);
    }
    let whole = text.trim();
    if whole.len() == 40 && !whole.contains(char::is_whitespace) {
        return CurveSecretKey::from_z85(whole).map_err(bad);
    }
    Err(Error::InvalidArgument(format!(
        "{}: no CURVE secret key in it (expected a line secret-key = \"<Z85>\" or the \
         40-character key alone)",
        path.display()
    )))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", path.display())))
}

/// The value of a `name = "value"` line (czmq's certificate format), quotes removed.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(name)?;
        let value = rest.trim_start().strip_prefix('=')?;
        Some(value.trim().trim_matches('"'))
    })
}

/// The public key a key file holds, if any: a czmq/pyzmq certificate's `public-key`
/// line, or a file that is only the Z85 key.
fn key_in_file(path: &Path, text: &str) -> Result<Option<CurvePublicKey>> {
    let bad = |e: crate::proto::z85::Z85Error| {
        Error::InvalidArgument(format!("{}: not a CURVE public key: {e}", path.display()))
    };
    if let Some(value) = field(text, "public-key") {
        return CurvePublicKey::from_z85(value).map(Some).map_err(bad);
    }
    let whole = text.trim();
    if whole.len() == 40 && !whole.contains(char::is_whitespace) {
        return CurvePublicKey::from_z85(whole).map(Some).map_err(bad);
    }
    Ok(None)
}

fn read_key_dir(dir: &Path) -> Result<HashSet<CurvePublicKey>> {
    let io = |e: std::io::Error, what: &Path| {
        Error::InvalidArgument(format!(
            "cannot read CURVE keys from {}: {e}",
            what.display()
        ))
    };
    let mut keys = HashSet::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io(e, dir))?;
    for entry in entries {
        let path = entry.map_err(|e| io(e, dir))?.path();
        if !path.is_file() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            // Not text: not a key file.
            continue;
        };
        if let Some(k) = key_in_file(&path, &text)? {
            keys.insert(k);
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::CurveKeyPair;

    fn req<'a>(domain: &'a str, address: Option<IpAddr>, c: Credentials<'a>) -> ZapRequest<'a> {
        ZapRequest {
            domain,
            address,
            endpoint: "tcp://127.0.0.1:1",
            credentials: c,
        }
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn plain_users_per_domain_with_a_fallback() {
        let a = Authenticator::new();
        let plain = |u, p| Credentials::Plain {
            username: u,
            password: p,
        };
        assert!(matches!(
            a.authenticate(&req("", LOCAL, plain("admin", "secret"))),
            ZapReply::Deny { .. }
        ));
        a.add_plain_user("*", "admin", "secret");
        a.add_plain_user("special", "root", "toor");
        assert_eq!(
            a.authenticate(&req("", LOCAL, plain("admin", "secret"))),
            ZapReply::allow("admin")
        );
        let ZapReply::Deny { reason } = a.authenticate(&req("", LOCAL, plain("admin", "guess")))
        else {
            panic!("a wrong password is refused");
        };
        assert!(reason.contains("wrong password"), "{reason}");
        // A domain with users of its own does not fall back to "*".
        assert!(matches!(
            a.authenticate(&req("special", LOCAL, plain("admin", "secret"))),
            ZapReply::Deny { .. }
        ));
        assert_eq!(
            a.authenticate(&req("special", LOCAL, plain("root", "toor"))),
            ZapReply::allow("root")
        );
    }

    #[test]
    fn addresses_allow_and_deny_for_every_mechanism() {
        let a = Authenticator::new();
        let other: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            a.authenticate(&req("d", LOCAL, Credentials::Null)),
            ZapReply::allow("")
        );
        a.deny(other);
        assert!(matches!(
            a.authenticate(&req("d", Some(other), Credentials::Null)),
            ZapReply::Deny { .. }
        ));
        a.allow("127.0.0.1".parse().unwrap());
        assert_eq!(
            a.authenticate(&req("d", LOCAL, Credentials::Null)),
            ZapReply::allow("")
        );
        let ZapReply::Deny { reason } = a.authenticate(&req(
            "d",
            Some("10.9.9.9".parse().unwrap()),
            Credentials::Null,
        )) else {
            panic!("an address not allowed is refused");
        };
        assert!(reason.contains("10.9.9.9"), "{reason}");
        assert!(matches!(
            a.authenticate(&req("d", None, Credentials::Null)),
            ZapReply::Deny { .. }
        ));
    }

    #[test]
    fn curve_keys_from_a_list_a_directory_or_any() {
        let good = CurveKeyPair::generate();
        let other = CurveKeyPair::generate();
        let a = Authenticator::new();
        let curve = |k| Credentials::Curve { public_key: k };
        assert!(matches!(
            a.authenticate(&req("", LOCAL, curve(&good.public))),
            ZapReply::Deny { .. }
        ));
        a.allow_curve_keys("*", [good.public]);
        assert_eq!(
            a.authenticate(&req("", LOCAL, curve(&good.public))),
            ZapReply::allow(good.public.to_z85())
        );
        assert!(matches!(
            a.authenticate(&req("", LOCAL, curve(&other.public))),
            ZapReply::Deny { .. }
        ));

        let dir = std::env::temp_dir().join(format!("lwmq-auth-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("client.key"),
            format!(
                "#   ****  Generated by a test  ****\nmetadata\ncurve\n    public-key = \"{}\"\n",
                other.public
            ),
        )
        .unwrap();
        std::fs::write(dir.join("bare"), format!("{}\n", good.public)).unwrap();
        std::fs::write(dir.join("README"), "not a key\n").unwrap();
        assert_eq!(a.load_curve_keys("d", &dir).unwrap(), 2);
        assert_eq!(
            a.authenticate(&req("d", LOCAL, curve(&other.public))),
            ZapReply::allow(other.public.to_z85())
        );
        std::fs::write(dir.join("broken.key"), "public-key = \"tooshort\"\n").unwrap();
        let e = a.load_curve_keys("d", &dir).unwrap_err().to_string();
        assert!(e.contains("broken.key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(a.load_curve_keys("d", &dir).is_err());

        let pair = CurveKeyPair::generate();
        let file = std::env::temp_dir().join(format!("lwmq-auth-pair-{}", std::process::id()));
        std::fs::write(
            &file,
            format!(
                "public-key = \"{}\"\nsecret-key = \"{}\"\n",
                pair.public,
                pair.secret.to_z85()
            ),
        )
        .unwrap();
        assert_eq!(read_public_key(&file).unwrap(), pair.public);
        assert_eq!(read_secret_key(&file).unwrap(), pair.secret);
        std::fs::write(&file, "nothing here").unwrap();
        assert!(
            read_secret_key(&file)
                .unwrap_err()
                .to_string()
                .contains("no CURVE secret key")
        );
        std::fs::remove_file(&file).unwrap();

        a.allow_any_curve_key("open");
        assert_eq!(
            a.authenticate(&req("open", LOCAL, curve(&other.public))),
            ZapReply::allow(other.public.to_z85())
        );
    }
}
