//! One connection's SASL state on a SASL listener, as Kafka's broker keeps
//! it: before authentication only ApiVersions, SaslHandshake (v1) and
//! SaslAuthenticate pass; anything else closes the connection. A failed
//! exchange is answered (SASL_AUTHENTICATION_FAILED with a message) and
//! the connection closes. With `connections.max.reauth.ms` the session
//! has a lifetime (KIP-368): the client re-authenticates on the same
//! connection, as the same user with the same mechanism, before it ends;
//! a request after the end closes the connection.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;

use super::scram::{ScramServer, Step};
use super::{Credentials, Mechanism};
use crate::protocol::{code, Request};

/// What the connection does with a request.
#[allow(clippy::large_enum_variant)] // made once per request and moved straight on
pub enum Gate {
    /// Serve it as usual.
    Pass(Request),
    /// Send this answer; if `close` (a failure), after the listener's
    /// failure delay, and then close the connection.
    Reply { body: ResponseKind, close: bool },
    /// Close the connection without answering (the reason is logged).
    Close(String),
}

enum State {
    /// Waiting for SaslHandshake.
    Handshake,
    /// Handshake done; SaslAuthenticate rounds of `mechanism`.
    Exchange { mechanism: Mechanism, scram: Option<Box<ScramServer>> },
    /// Authenticated and not re-authenticating.
    Done,
}

/// A SASL listener's settings, shared by its connections.
pub struct SaslListener {
    pub mechanisms: Vec<Mechanism>,
    /// `connections.max.reauth.ms`; 0: sessions do not end.
    pub reauth_ms: u64,
    /// `sasl.server.max.receive.size`: largest frame before authentication.
    pub max_receive: usize,
    /// `connection.failed.authentication.delay.ms`: how long a failure's
    /// answer (and the close after it) waits.
    pub failure_delay: Duration,
}

impl SaslListener {
    /// The settings of SASL listeners (SASL_PLAINTEXT, SASL_SSL).
    pub fn from_config(config: &crate::config::Config) -> Result<SaslListener, String> {
        let b = &config.broker;
        Ok(SaslListener { mechanisms: config.sasl_mechanisms()?, reauth_ms: b.connections_max_reauth_ms, max_receive: b.sasl_server_max_receive_size as usize, failure_delay: Duration::from_millis(b.connection_failed_authentication_delay_ms) })
    }
}

pub struct Session {
    enabled: Vec<Mechanism>,
    reauth: Option<Duration>,
    state: State,
    /// The authenticated user and mechanism, kept while re-authenticating.
    principal: Option<(String, Mechanism)>,
    /// When the session ends (re-authentication due), if it does.
    expires: Option<Instant>,
}

impl Session {
    pub fn new(listener: &SaslListener) -> Session {
        let reauth = (listener.reauth_ms > 0).then(|| Duration::from_millis(listener.reauth_ms));
        Session { enabled: listener.mechanisms.clone(), reauth, state: State::Handshake, principal: None, expires: None }
    }

    /// Authenticated, and not past the session's end.
    pub fn authenticated(&self) -> bool {
        self.principal.is_some() && self.expires.is_none_or(|e| Instant::now() < e)
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        self.principal.as_ref().map(|(u, _)| u.as_str())
    }

    /// Decides what becomes of `req`, answering the SASL requests itself.
    pub fn admit(&mut self, req: Request, credentials: &Credentials) -> Gate {
        match req.body {
            RequestKind::SaslHandshake(r) => self.handshake(r.mechanism.as_str()),
            RequestKind::SaslAuthenticate(r) => self.authenticate(&r.auth_bytes, req.version, credentials),
            _ if req.api_key == ApiKey::ApiVersions || self.authenticated() => Gate::Pass(req),
            _ if self.principal.is_some() => Gate::Close(format!("{:?} after the SASL session ended (connections.max.reauth.ms) without re-authentication", req.api_key)),
            _ => Gate::Close(format!("{:?} before SASL authentication", req.api_key)),
        }
    }

    fn handshake(&mut self, name: &str) -> Gate {
        let mut r = SaslHandshakeResponse::default();
        r.mechanisms = self.enabled.iter().map(|m| StrBytes::from_static_str(m.name())).collect();
        let wanted = Mechanism::parse(name).filter(|m| self.enabled.contains(m));
        let close = match (&self.state, wanted) {
            (State::Exchange { .. }, _) => {
                r.error_code = code::ILLEGAL_SASL_STATE;
                true
            }
            (_, None) => {
                tracing::warn!(mechanism = name, "SASL handshake with a mechanism that is not enabled; closing the connection");
                r.error_code = code::UNSUPPORTED_SASL_MECHANISM;
                true
            }
            // Re-authentication keeps the mechanism (KIP-368).
            (_, Some(m)) if self.principal.as_ref().is_some_and(|(_, was)| *was != m) => {
                r.error_code = code::ILLEGAL_SASL_STATE;
                true
            }
            (_, Some(mechanism)) => {
                let scram = match mechanism {
                    Mechanism::Plain => None,
                    m => match ScramServer::new(m) {
                        Ok(s) => Some(Box::new(s)),
                        Err(e) => return Gate::Close(format!("no randomness for a SCRAM nonce: {e}")),
                    },
                };
                self.state = State::Exchange { mechanism, scram };
                false
            }
        };
        Gate::Reply { body: ResponseKind::SaslHandshake(r), close }
    }

    fn authenticate(&mut self, token: &[u8], version: i16, credentials: &Credentials) -> Gate {
        let State::Exchange { mechanism, scram } = &mut self.state else {
            return failed(code::ILLEGAL_SASL_STATE, "SaslAuthenticate without a SaslHandshake before it".into());
        };
        let mechanism = *mechanism;
        let step = match scram {
            None => plain(token, credentials).map(|user| Step::Success { user, reply: Vec::new() }),
            Some(s) => s.step(token, |user| credentials.scram_lookup(user, mechanism)),
        };
        let (user, reply) = match step {
            Ok(Step::Continue(reply)) => return Gate::Reply { body: ResponseKind::SaslAuthenticate(answer(reply, 0)), close: false },
            Ok(Step::Success { user, reply }) => (user, reply),
            Err(reason) => {
                tracing::warn!(mechanism = mechanism.name(), reason, "SASL authentication failed; closing the connection");
                return failed(code::SASL_AUTHENTICATION_FAILED, format!("Authentication failed: invalid credentials with SASL mechanism {}", mechanism.name()));
            }
        };
        if let Some((was, _)) = &self.principal {
            if *was != user {
                tracing::warn!(was, user, "re-authentication as another user; closing the connection");
                return failed(code::SASL_AUTHENTICATION_FAILED, "Authentication failed: re-authentication must keep the same user".into());
            }
        }
        tracing::debug!(user, mechanism = mechanism.name(), "SASL authentication succeeded");
        // Session lifetimes reach only clients that can re-authenticate
        // (v1+); older ones are still cut off when the session ends.
        let lifetime_ms = self.reauth.map_or(0, |d| d.as_millis() as i64);
        self.expires = self.reauth.map(|d| Instant::now() + d);
        self.principal = Some((user, mechanism));
        self.state = State::Done;
        let mut r = answer(reply, 0);
        if version >= 1 {
            r.session_lifetime_ms = lifetime_ms;
        }
        Gate::Reply { body: ResponseKind::SaslAuthenticate(r), close: false }
    }
}

fn answer(reply: Vec<u8>, error_code: i16) -> SaslAuthenticateResponse {
    let mut r = SaslAuthenticateResponse::default();
    r.error_code = error_code;
    r.auth_bytes = Bytes::from(reply);
    r
}

/// An error answer after which the connection closes.
fn failed(error_code: i16, message: String) -> Gate {
    let mut r = answer(Vec::new(), error_code);
    r.error_message = Some(StrBytes::from_string(message));
    Gate::Reply { body: ResponseKind::SaslAuthenticate(r), close: true }
}

/// SASL/PLAIN (RFC 4616): `[authzid] NUL authcid NUL password`, checked
/// against the user's stored SCRAM credential (SHA-512 if it has one).
fn plain(token: &[u8], credentials: &Credentials) -> Result<String, String> {
    let text = std::str::from_utf8(token).map_err(|_| "a PLAIN token that is not UTF-8".to_string())?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("a PLAIN token that is not authzid NUL user NUL password".into());
    };
    if user.is_empty() || password.is_empty() {
        return Err("a PLAIN token with an empty user or password".into());
    }
    if !authzid.is_empty() && authzid != user {
        return Err(format!("authorization id {authzid:?} is not the user {user:?}"));
    }
    let found = [Mechanism::ScramSha512, Mechanism::ScramSha256].into_iter().find_map(|m| credentials.get(user, m).map(|c| (m, c)));
    // PBKDF2 (thousands of HMACs) off the runtime's worker; an unknown user
    // costs the same work, so the time taken does not tell who exists.
    let matches = super::off_runtime(|| match &found {
        Some((m, c)) => c.matches_password(*m, password),
        None => {
            let salt = credentials.scram_lookup(user, Mechanism::ScramSha512).err().unwrap_or_default();
            let _ = crate::security::scram::salted_password(Mechanism::ScramSha512, password.as_bytes(), &salt, crate::security::scram::MIN_ITERATIONS);
            false
        }
    });
    match found {
        Some(_) if matches => Ok(user.to_string()),
        Some(_) => Err(format!("wrong password for user {user:?}")),
        None => Err(format!("unknown user {user:?}")),
    }
}


/// SaslHandshake on a listener without SASL (or after authentication
/// there): Kafka's ILLEGAL_SASL_STATE.
pub fn handshake_not_expected() -> SaslHandshakeResponse {
    let mut r = SaslHandshakeResponse::default();
    r.error_code = code::ILLEGAL_SASL_STATE;
    r
}

/// SaslAuthenticate on a listener without SASL.
pub fn authenticate_not_expected() -> SaslAuthenticateResponse {
    let mut r = answer(Vec::new(), code::ILLEGAL_SASL_STATE);
    r.error_message = Some(StrBytes::from_static_str("SASL is not enabled on this listener"));
    r
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{MetadataRequest, RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest};

    use super::*;
    use crate::security::credentials::Change;
    use crate::security::scram::ScramCredential;

    fn request(api_key: ApiKey, version: i16, body: RequestKind) -> Request {
        Request { api_key, version, header: RequestHeader::default(), body, size: 0 }
    }

    fn handshake(s: &mut Session, c: &Credentials, mechanism: &'static str) -> (i16, bool) {
        let mut r = SaslHandshakeRequest::default();
        r.mechanism = StrBytes::from_static_str(mechanism);
        match s.admit(request(ApiKey::SaslHandshake, 1, RequestKind::SaslHandshake(r)), c) {
            Gate::Reply { body: ResponseKind::SaslHandshake(h), close } => (h.error_code, close),
            _ => panic!("no handshake answer"),
        }
    }

    fn authenticate(s: &mut Session, c: &Credentials, token: &str) -> (i16, i64, bool) {
        let mut r = SaslAuthenticateRequest::default();
        r.auth_bytes = Bytes::from(token.as_bytes().to_vec());
        match s.admit(request(ApiKey::SaslAuthenticate, 2, RequestKind::SaslAuthenticate(r)), c) {
            Gate::Reply { body: ResponseKind::SaslAuthenticate(a), close } => (a.error_code, a.session_lifetime_ms, close),
            _ => panic!("no authenticate answer"),
        }
    }

    fn metadata_passes(s: &mut Session, c: &Credentials) -> bool {
        matches!(s.admit(request(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default())), c), Gate::Pass(_))
    }

    fn setup(reauth_ms: u64) -> (tempfile::TempDir, Credentials, Session) {
        let dir = tempfile::tempdir().unwrap();
        let c = Credentials::open(dir.path(), Some(("alice", "a-pw"))).unwrap();
        let bob = ScramCredential::new(Mechanism::ScramSha256, "b-pw", 4096).unwrap();
        c.apply(vec![Change::Upsert { user: "bob".into(), mechanism: Mechanism::ScramSha256, credential: bob }]).unwrap();
        let listener = SaslListener { mechanisms: Mechanism::ALL.to_vec(), reauth_ms, max_receive: 8192, failure_delay: Duration::ZERO };
        (dir, c, Session::new(&listener))
    }

    #[test]
    fn reauthentication_keeps_user_and_mechanism() {
        let (_dir, c, mut s) = setup(60_000);
        assert!(!metadata_passes(&mut s, &c), "Metadata before authentication");
        assert_eq!(handshake(&mut s, &c, "PLAIN"), (0, false));
        assert_eq!(handshake(&mut s, &c, "PLAIN"), (code::ILLEGAL_SASL_STATE, true), "a second handshake mid-exchange");
        let (_dir, c, mut s) = setup(60_000);
        assert_eq!(handshake(&mut s, &c, "PLAIN"), (0, false));
        assert_eq!(authenticate(&mut s, &c, "\0alice\0a-pw"), (0, 60_000, false));
        assert_eq!(s.user(), Some("alice"));
        assert!(metadata_passes(&mut s, &c));
        // Re-authenticating: the same user again is fine, and requests pass meanwhile.
        assert_eq!(handshake(&mut s, &c, "PLAIN"), (0, false));
        assert!(metadata_passes(&mut s, &c));
        assert_eq!(authenticate(&mut s, &c, "alice\0alice\0a-pw"), (0, 60_000, false));
        // Another mechanism, or another user, is refused and closes.
        assert_eq!(handshake(&mut s, &c, "SCRAM-SHA-256"), (code::ILLEGAL_SASL_STATE, true));
        assert_eq!(handshake(&mut s, &c, "PLAIN"), (0, false));
        assert_eq!(authenticate(&mut s, &c, "\0bob\0b-pw"), (code::SASL_AUTHENTICATION_FAILED, 0, true));
    }

    #[test]
    fn a_session_ends_after_its_lifetime() {
        let (_dir, c, mut s) = setup(30);
        assert_eq!(handshake(&mut s, &c, "PLAIN"), (0, false));
        assert_eq!(authenticate(&mut s, &c, "\0bob\0b-pw"), (0, 30, false));
        assert!(metadata_passes(&mut s, &c));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!s.authenticated());
        assert!(matches!(s.admit(request(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default())), &c), Gate::Close(reason) if reason.contains("session ended")));
    }

    #[test]
    fn malformed_plain_tokens_fail() {
        let (_dir, c, _) = setup(0);
        for token in ["", "\0", "\0alice", "\0alice\0", "\0\0a-pw", "bob\0alice\0a-pw", "\0alice\0a-pw\0extra", "\0alice\0wrong", "\0nobody\0a-pw"] {
            assert!(plain(token.as_bytes(), &c).is_err(), "{token:?} was accepted");
        }
        assert!(plain(b"\xff\0alice\0a-pw", &c).is_err());
        assert_eq!(plain(b"\0alice\0a-pw", &c).unwrap(), "alice");
    }
}
