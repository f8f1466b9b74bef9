//! Socket options: the values a [`crate::Socket`]'s setters change, with libzmq's
//! defaults.
//!
//! The socket's user thread owns the live [`Options`]; bind and connect hand a copy to
//! the I/O thread or the inproc peer, so a change applies to endpoints bound or
//! connected after it (as in libzmq).

use std::time::Duration;

use bytes::Bytes;

use crate::SocketType;

/// Default high-water mark, in messages, per pipe and direction.
pub const DEFAULT_HWM: usize = 1000;
/// Default reconnect interval.
pub const DEFAULT_RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// Default linger: how long closing a socket (or dropping its context) waits for queued
/// messages to go out. libzmq's default is infinite; ours is bounded so that a peer
/// that never comes cannot hang a process at exit.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// Options the patterns look at.
#[derive(Debug, Clone)]
pub(crate) struct PatternOptions {
    /// ROUTER: an unroutable message is an error instead of being dropped.
    pub router_mandatory: bool,
    /// REQ: add a request id frame and check it on replies.
    pub req_correlate: bool,
    /// REQ: allow a new request before the reply to the previous one.
    pub req_relaxed: bool,
    /// REQ: resend a request without a reply this often (and turn on request ids).
    pub req_resend: Option<Duration>,
    /// REQ with resend: sends of one request, the first included.
    pub req_resend_attempts: u32,
    /// REP: most answered requests remembered for de-duplication.
    pub rep_cache_size: usize,
    /// REP: how long an answered request is remembered.
    pub rep_cache_age: Duration,
    /// REP: most reply bytes remembered.
    pub rep_cache_bytes: usize,
}

impl Default for PatternOptions {
    fn default() -> Self {
        PatternOptions {
            router_mandatory: false,
            req_correlate: false,
            req_relaxed: false,
            req_resend: None,
            req_resend_attempts: crate::reliable::DEFAULT_REQ_RESEND_ATTEMPTS,
            rep_cache_size: crate::reliable::DEFAULT_REP_CACHE_SIZE,
            rep_cache_age: crate::reliable::DEFAULT_REP_CACHE_AGE,
            rep_cache_bytes: crate::reliable::DEFAULT_REP_CACHE_BYTES,
        }
    }
}

/// Security mechanism settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Mechanism {
    /// No security (ZMTP NULL).
    #[default]
    Null,
    /// PLAIN client with these credentials.
    PlainClient { username: String, password: String },
    /// PLAIN server: credentials go to the context's ZAP handler (without one, every
    /// user name and password is accepted, as by libzmq without a ZAP handler).
    PlainServer,
    /// CURVE server (needs `curve.secret`).
    CurveServer,
    /// CURVE client (needs `curve.secret` and `curve.server`).
    CurveClient,
}

/// CURVE keys of a socket (`curve_public_key`, `curve_secret_key`, `curve_server_key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CurveKeys {
    pub public: Option<crate::proto::CurvePublicKey>,
    pub secret: Option<crate::proto::CurveSecretKey>,
    pub server: Option<crate::proto::CurvePublicKey>,
}

/// Every option of a socket.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub socket_type: SocketType,
    pub send_hwm: usize,
    pub recv_hwm: usize,
    pub send_timeout: Option<Duration>,
    pub recv_timeout: Option<Duration>,
    pub linger: Option<Duration>,
    pub immediate: bool,
    pub reconnect_interval: Duration,
    pub reconnect_interval_max: Option<Duration>,
    pub routing_id: Bytes,
    pub conflate: bool,
    pub heartbeat_interval: Option<Duration>,
    pub heartbeat_ttl: Option<Duration>,
    pub heartbeat_timeout: Option<Duration>,
    pub max_msg_size: Option<u64>,
    pub mechanism: Mechanism,
    pub curve: CurveKeys,
    /// The ZAP domain handed to the authenticator (libzmq's ZMQ_ZAP_DOMAIN).
    pub zap_domain: String,
    /// The context's ZAP handler (shared: installing one later applies to it).
    pub zap: crate::auth::ZapSlot,
    pub pattern: PatternOptions,
    /// `ipc://` (shared memory): ring size, spin, allowed users, domain.
    pub ipc: crate::transport::shm::ShmOptions,
    /// How long a future of this socket tries again before it returns `Pending`
    /// (zero, the default: not at all).
    pub async_spin: Duration,
}

impl Options {
    pub(crate) fn new(socket_type: SocketType) -> Options {
        Options {
            socket_type,
            send_hwm: DEFAULT_HWM,
            recv_hwm: DEFAULT_HWM,
            send_timeout: None,
            recv_timeout: None,
            linger: Some(DEFAULT_LINGER),
            immediate: false,
            reconnect_interval: DEFAULT_RECONNECT_INTERVAL,
            reconnect_interval_max: None,
            routing_id: Bytes::new(),
            conflate: false,
            heartbeat_interval: None,
            heartbeat_ttl: None,
            heartbeat_timeout: None,
            max_msg_size: None,
            mechanism: Mechanism::Null,
            curve: CurveKeys::default(),
            zap_domain: String::new(),
            zap: crate::auth::ZapSlot::default(),
            pattern: PatternOptions::default(),
            ipc: crate::transport::shm::ShmOptions::default(),
            async_spin: Duration::ZERO,
        }
    }

    /// The mechanism as `proto` takes it; an error names what is missing (a CURVE
    /// socket without its secret key, a public key that is not the secret key's).
    pub(crate) fn mechanism_config(&self) -> crate::Result<crate::proto::MechanismConfig> {
        use crate::proto::MechanismConfig;
        let keys = || -> crate::Result<_> {
            let Some(secret) = self.curve.secret.clone() else {
                return Err(crate::Error::InvalidArgument(
                    "a CURVE socket needs its secret key (set_curve_secret_key)".into(),
                ));
            };
            let public = secret.public_key();
            if let Some(p) = self.curve.public {
                if p != public {
                    return Err(crate::Error::InvalidArgument(format!(
                        "the CURVE public key {p} is not the public key of the secret key                          given (that is {public})"
                    )));
                }
            }
            Ok((public, secret))
        };
        Ok(match &self.mechanism {
            Mechanism::Null => MechanismConfig::Null,
            Mechanism::PlainClient { username, password } => MechanismConfig::PlainClient {
                username: username.clone(),
                password: password.clone(),
            },
            Mechanism::PlainServer => MechanismConfig::PlainServer,
            Mechanism::CurveServer => {
                let (public, secret) = keys()?;
                MechanismConfig::CurveServer { public, secret }
            }
            Mechanism::CurveClient => {
                let (public, secret) = keys()?;
                let Some(server_public) = self.curve.server else {
                    return Err(crate::Error::InvalidArgument(
                        "a CURVE client needs the server's public key (set_curve_server_key)"
                            .into(),
                    ));
                };
                MechanismConfig::CurveClient {
                    public,
                    secret,
                    server_public,
                }
            }
        })
    }

    /// The options a transport gets for a bind or connect. A REQ with resend sends only
    /// to peers whose connection is complete, and a lost connection takes its pipe with
    /// it (`immediate`), so that the pattern sees the loss and resends at once.
    pub(crate) fn for_transport(&self) -> std::borrow::Cow<'_, Options> {
        if self.socket_type == SocketType::Req
            && self.pattern.req_resend.is_some()
            && !self.immediate
        {
            let mut o = self.clone();
            o.immediate = true;
            std::borrow::Cow::Owned(o)
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    /// The next reconnect interval after `current`, with exponential backoff up to
    /// `reconnect_interval_max` (no maximum: no backoff, as libzmq).
    pub(crate) fn next_reconnect_interval(&self, current: Duration) -> Duration {
        match self.reconnect_interval_max {
            Some(max) if max > self.reconnect_interval => (current * 2).min(max),
            _ => self.reconnect_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut o = Options::new(SocketType::Dealer);
        let ivl = o.reconnect_interval;
        assert_eq!(
            o.next_reconnect_interval(ivl),
            ivl,
            "no maximum: no backoff"
        );
        o.reconnect_interval_max = Some(Duration::from_millis(350));
        let a = o.next_reconnect_interval(ivl);
        let b = o.next_reconnect_interval(a);
        let c = o.next_reconnect_interval(b);
        assert_eq!(
            (a, b, c),
            (
                Duration::from_millis(200),
                Duration::from_millis(350),
                Duration::from_millis(350)
            )
        );
    }
}
