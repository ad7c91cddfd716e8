//! Authentication: listener security protocols, SASL mechanisms (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512), SCRAM credentials kept in the data
//! directory, the per-connection SASL exchange (`sasl::Session`), TLS
//! (`tls.rs`) and the principal of a client certificate (`x509.rs`).
//! Authorization by ACLs (`acl`) when an authorizer is configured.

pub mod acl;
pub mod credentials;
pub mod quota;
pub mod sasl;
pub mod scram;
pub mod tls;
pub mod x509;

pub use credentials::Credentials;

/// A listener's security protocol, by Kafka's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    SaslPlaintext,
    Ssl,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [SecurityProtocol::Plaintext, SecurityProtocol::SaslPlaintext, SecurityProtocol::Ssl, SecurityProtocol::SaslSsl];

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Parses Kafka's name (upper case, as Kafka writes it).
    pub fn parse(s: &str) -> Result<SecurityProtocol, String> {
        SecurityProtocol::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| format!("unknown security protocol {s:?}: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"))
    }

    /// Clients authenticate with SASL first.
    pub fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }

    /// Connections are TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// A SASL mechanism Eddy serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn parse(s: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }

    /// A SCRAM mechanism by name (what credentials are stored under).
    pub fn scram(s: &str) -> Option<Mechanism> {
        Mechanism::parse(s).filter(|m| *m != Mechanism::Plain)
    }

    /// Kafka's `ScramMechanism` code in Describe/AlterUserScramCredentials.
    pub fn scram_code(self) -> i8 {
        match self {
            Mechanism::Plain => 0,
            Mechanism::ScramSha256 => 1,
            Mechanism::ScramSha512 => 2,
        }
    }

    pub fn from_scram_code(code: i8) -> Option<Mechanism> {
        match code {
            1 => Some(Mechanism::ScramSha256),
            2 => Some(Mechanism::ScramSha512),
            _ => None,
        }
    }

    /// Bytes of the mechanism's hash (SCRAM keys and salted passwords).
    pub fn hash_len(self) -> usize {
        match self {
            Mechanism::ScramSha256 => 32,
            _ => 64,
        }
    }
}

use crate::log::checkpoint::write_atomically;

/// An error about a file of the data directory, naming it.
pub fn bad_file(path: &std::path::Path, reason: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {reason}", path.display()))
}

/// Reads one of the data directory's small JSON files (ACLs, quotas, SCRAM
/// credentials): None when it does not exist yet; a file that cannot be
/// read or parsed is an error naming it.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| bad_file(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Replaces one of those files with `value`, pretty-printed, atomically.
pub fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    text.push(b'\n');
    write_atomically(path, &text)
}

/// Runs `f`, which blocks (fsyncs) or computes for long (PBKDF2), where it
/// does not hold up other connections: on a multi-thread runtime the worker
/// hands its other tasks over first.
pub fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Bytes from the operating system's random source (salts, nonces).
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(v)
}

/// Who sent a request (Kafka's `RequestContext`): the client's address, the
/// listener it came in on, and the principal it authenticated as
/// (`User:ANONYMOUS` until it does). Authorization and quotas key on these.
#[derive(Clone, Debug)]
pub struct Context {
    pub peer: std::net::SocketAddr,
    /// The listener's name, as in `listeners` (`PLAINTEXT`, `SASL_PLAINTEXT`...).
    pub listener: std::sync::Arc<str>,
    /// `User:<name>`, Kafka's principal form.
    pub principal: std::sync::Arc<str>,
}

/// The principal of a client that has not authenticated.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

impl Context {
    pub fn new(peer: std::net::SocketAddr, listener: &str) -> Context {
        Context { peer, listener: listener.into(), principal: ANONYMOUS.into() }
    }

    /// Records that the client authenticated as `user`.
    pub fn authenticated_as(&mut self, user: &str) {
        if self.principal.strip_prefix("User:") != Some(user) {
            self.principal = format!("User:{user}").into();
        }
    }
}
