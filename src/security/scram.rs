//! SCRAM (RFC 5802, with the SHA-2 variants of RFC 7677), server side: the
//! salted credential a user is stored as, and the two-round exchange that
//! proves a client knows the password without it crossing the wire.
//!
//! Only `n,,` and `n,a=USER,` GS2 headers are accepted: there is no TLS,
//! so no channel binding. Every client message is parsed without panicking;
//! anything unexpected is an `Err` with a reason for the server log (the
//! client only ever learns "authentication failed").

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Mac, SimpleHmac};
use sha2::{Digest, Sha256, Sha512};

use super::Mechanism;

/// Fewest and most PBKDF2 iterations a credential may have (Kafka's bounds).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

/// What a SCRAM user is stored as: never the password, only what the
/// server needs to check a proof and to prove itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

/// HMAC with the mechanism's hash.
pub(crate) fn hmac(m: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match m {
        Mechanism::ScramSha256 => {
            let mut mac = <SimpleHmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut mac = <SimpleHmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(m: Mechanism, data: &[u8]) -> Vec<u8> {
    match m {
        Mechanism::ScramSha256 => Sha256::digest(data).to_vec(),
        _ => Sha512::digest(data).to_vec(),
    }
}

/// Hi(password, salt, i) of RFC 5802: PBKDF2 with the mechanism's HMAC.
pub fn salted_password(m: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    match m {
        Mechanism::ScramSha256 => pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec(),
        _ => pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec(),
    }
}

/// Equal contents, compared in time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ScramCredential {
    /// The credential for a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted(m: Mechanism, salt: Vec<u8>, iterations: u32, salted: &[u8]) -> ScramCredential {
        let client_key = hmac(m, salted, b"Client Key");
        ScramCredential { salt, iterations, stored_key: hash(m, &client_key), server_key: hmac(m, salted, b"Server Key") }
    }

    /// A new credential for a password, with a fresh random salt.
    pub fn new(m: Mechanism, password: &str, iterations: u32) -> std::io::Result<ScramCredential> {
        let salt = super::random_bytes(32)?;
        let salted = salted_password(m, password.as_bytes(), &salt, iterations);
        Ok(ScramCredential::from_salted(m, salt, iterations, &salted))
    }

    /// Whether `password` is this credential's password (SASL/PLAIN).
    pub fn matches_password(&self, m: Mechanism, password: &str) -> bool {
        let salted = salted_password(m, password.as_bytes(), &self.salt, self.iterations);
        same(&ScramCredential::from_salted(m, Vec::new(), 0, &salted).stored_key, &self.stored_key)
    }
}

/// The server's side of one SCRAM exchange.
pub enum ScramServer {
    /// Waiting for the client-first message.
    Start { mechanism: Mechanism, server_nonce: String },
    /// Sent server-first; waiting for client-final.
    Challenged { mechanism: Mechanism, user: String, credential: Option<ScramCredential>, gs2_header: String, nonce: String, first_bare: String, server_first: String },
    Done,
}

/// The result of one step.
pub enum Step {
    /// Send these bytes and expect another client message.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send these bytes (server-final) too.
    Success { user: String, reply: Vec<u8> },
}

/// Why an exchange failed; logged by the server, never sent.
pub type Failure = String;

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> std::io::Result<ScramServer> {
        Ok(ScramServer::Start { mechanism, server_nonce: B64.encode(super::random_bytes(24)?) })
    }

    /// Takes the next client message. `lookup` finds a user's credential,
    /// or gives the salt to show for an unknown user: the exchange goes on
    /// to the end with it and fails exactly like a wrong password (RFC 5802
    /// §9), so that the answers do not tell which users exist.
    pub fn step(&mut self, msg: &[u8], lookup: impl FnOnce(&str) -> Result<ScramCredential, Vec<u8>>) -> Result<Step, Failure> {
        let text = std::str::from_utf8(msg).map_err(|_| "a SCRAM message that is not UTF-8".to_string())?;
        match std::mem::replace(self, ScramServer::Done) {
            ScramServer::Start { mechanism, server_nonce } => {
                let (gs2_header, first_bare, user, client_nonce) = parse_client_first(text)?;
                let (credential, salt, iterations) = match lookup(&user) {
                    Ok(c) => (Some(c.clone()), c.salt, c.iterations),
                    Err(mock_salt) => (None, mock_salt, MIN_ITERATIONS),
                };
                let nonce = format!("{client_nonce}{server_nonce}");
                let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
                let reply = server_first.clone().into_bytes();
                *self = ScramServer::Challenged { mechanism, user, credential, gs2_header, nonce, first_bare, server_first };
                Ok(Step::Continue(reply))
            }
            ScramServer::Challenged { mechanism, user, credential, gs2_header, nonce, first_bare, server_first } => {
                let final_msg = parse_client_final(text)?;
                if final_msg.channel_binding != gs2_header.as_bytes() {
                    return Err("the client-final channel binding does not repeat the GS2 header".into());
                }
                if final_msg.nonce != nonce {
                    return Err("the client-final nonce is not the one the server sent".into());
                }
                let auth_message = format!("{first_bare},{server_first},{}", final_msg.without_proof);
                let Some(credential) = credential else {
                    return Err(format!("unknown user {user:?}"));
                };
                let signature = hmac(mechanism, &credential.stored_key, auth_message.as_bytes());
                if final_msg.proof.len() != signature.len() {
                    return Err("a client proof of the wrong length".into());
                }
                let client_key: Vec<u8> = final_msg.proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
                if !same(&hash(mechanism, &client_key), &credential.stored_key) {
                    return Err(format!("wrong password for user {user:?}"));
                }
                let server_signature = hmac(mechanism, &credential.server_key, auth_message.as_bytes());
                Ok(Step::Success { user, reply: format!("v={}", B64.encode(server_signature)).into_bytes() })
            }
            ScramServer::Done => Err("a SCRAM message after the exchange ended".into()),
        }
    }
}

/// A `saslname` of RFC 5802: `=2C` is a comma, `=3D` an equals sign, and no
/// other `=` may appear.
fn unescape_name(s: &str) -> Result<String, Failure> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(format!("a user name with a bad escape: {s:?}")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `gs2-header client-first-message-bare` → (the GS2 header, the bare
/// message, the user, the client nonce).
fn parse_client_first(text: &str) -> Result<(String, String, String, String), Failure> {
    let mut parts = text.splitn(3, ',');
    let (Some(cb), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("a client-first message without a GS2 header".into());
    };
    match cb {
        "n" | "y" => {}
        _ if cb.starts_with("p=") => return Err("channel binding requested, but there is no TLS".into()),
        _ => return Err(format!("a GS2 header with a bad channel-binding flag {cb:?}")),
    }
    let authzid_raw = authzid;
    let authzid = match authzid_raw {
        "" => None,
        a => Some(unescape_name(a.strip_prefix("a=").ok_or_else(|| format!("a bad GS2 authzid {a:?}"))?)?),
    };
    let mut attrs = bare.split(',');
    let user = match attrs.next() {
        Some(a) if a.starts_with("m=") => return Err("a mandatory SCRAM extension the server does not know".into()),
        Some(a) => unescape_name(a.strip_prefix("n=").ok_or("a client-first message that does not start with n=")?)?,
        None => return Err("a client-first message without a user name".into()),
    };
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or("a client-first message without r= after n=")?;
    if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("a client nonce that is empty or not printable".into());
    }
    // Kafka's only extension is for delegation tokens, which Eddy does not have.
    if attrs.any(|a| a.starts_with("tokenauth=")) {
        return Err("delegation tokens are not supported".into());
    }
    if user.is_empty() {
        return Err("an empty user name".into());
    }
    if authzid.as_ref().is_some_and(|a| *a != user) {
        return Err(format!("authorization id {authzid:?} is not the user {user:?}"));
    }
    let header_len = cb.len() + 1 + authzid_raw.len() + 1;
    Ok((text[..header_len].to_string(), bare.to_string(), user, nonce.to_string()))
}

struct ClientFinal {
    channel_binding: Vec<u8>,
    nonce: String,
    without_proof: String,
    proof: Vec<u8>,
}

/// `c=...,r=...[,extensions],p=...`.
fn parse_client_final(text: &str) -> Result<ClientFinal, Failure> {
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or("a client-final message without a proof")?;
    let proof = B64.decode(proof).map_err(|_| "a client proof that is not base64")?;
    let mut attrs = without_proof.split(',');
    let cb = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or("a client-final message without c=")?;
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or("a client-final message without r=")?;
    let channel_binding = B64.decode(cb).map_err(|_| "a channel binding that is not base64")?;
    Ok(ClientFinal { channel_binding, nonce: nonce.to_string(), without_proof: without_proof.to_string(), proof })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil", the client nonce,
    /// salt and iteration count of the example, and the server nonce that
    /// completes it; the server's answers must be byte for byte the RFC's.
    #[test]
    fn rfc7677_sha256_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password(Mechanism::ScramSha256, b"pencil", &salt, 4096);
        let cred = ScramCredential::from_salted(Mechanism::ScramSha256, salt, 4096, &salted);
        let mut server = ScramServer::Start { mechanism: Mechanism::ScramSha256, server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into() };
        let Ok(Step::Continue(first)) = server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |u| if u == "user" { Ok(cred.clone()) } else { Err(vec![0; 16]) }) else { panic!("first step failed") };
        assert_eq!(first, b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let client_final = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        match server.step(client_final, |_| Err(Vec::new())) {
            Ok(Step::Success { user, reply }) => {
                assert_eq!(user, "user");
                assert_eq!(reply, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
            }
            _ => panic!("the RFC's proof was refused"),
        }
        assert!(cred.matches_password(Mechanism::ScramSha256, "pencil"));
        assert!(!cred.matches_password(Mechanism::ScramSha256, "pencil2"));
    }

    #[test]
    fn wrong_proof_and_garbage_fail_without_panicking() {
        let cred = ScramCredential::new(Mechanism::ScramSha512, "secret", 4096).unwrap();
        let mut server = ScramServer::new(Mechanism::ScramSha512).unwrap();
        let Ok(Step::Continue(first)) = server.step(b"n,,n=alice,r=abc", |_| Ok(cred.clone())) else { panic!() };
        let nonce = std::str::from_utf8(&first).unwrap().split(',').next().unwrap().to_string();
        let bad = format!("c=biws,{nonce},p={}", B64.encode([0u8; 64]));
        match server.step(bad.as_bytes(), |_| Err(Vec::new())) {
            Err(reason) => assert_eq!(reason, "wrong password for user \"alice\""),
            Ok(_) => panic!("a wrong proof was accepted"),
        }
        for garbage in [&b""[..], b"\xff\xfe", b"n", b"n,,", b"x,,n=a,r=b", b"n,a=bob,n=alice,r=x", b"n,,n=a=,r=x", b"p=tls,,n=a,r=b", b"n,,r=x,n=a", b"n,,n=,r=x"] {
            let mut s = ScramServer::new(Mechanism::ScramSha256).unwrap();
            assert!(s.step(garbage, |_| Ok(cred.clone())).is_err(), "{garbage:?} was accepted");
        }
        // A final message that is not one.
        for garbage in [&b"c=biws"[..], b"p=", b"c=biws,r=x,p=!!", b",p=AAAA"] {
            let mut s = ScramServer::new(Mechanism::ScramSha256).unwrap();
            assert!(s.step(b"n,,n=alice,r=abc", |_| Ok(cred.clone())).is_ok());
            assert!(s.step(garbage, |_| Ok(cred.clone())).is_err(), "{garbage:?} was accepted");
        }
    }

    proptest::proptest! {
        /// Any bytes, as either message, are an answer or an error, never a panic.
        #[test]
        fn arbitrary_messages_never_panic(first in proptest::collection::vec(proptest::num::u8::ANY, 0..64), second in "[a-z=,/+0-9]{0,80}") {
            let cred = ScramCredential::from_salted(Mechanism::ScramSha256, vec![1; 16], 4096, &[7; 32]);
            let mut s = ScramServer::new(Mechanism::ScramSha256).unwrap();
            let _ = s.step(&first, |_| Ok(cred.clone()));
            let mut s = ScramServer::new(Mechanism::ScramSha256).unwrap();
            if s.step(b"n,,n=u,r=abc", |_| Ok(cred.clone())).is_ok() {
                let _ = s.step(second.as_bytes(), |_| Ok(cred.clone()));
            }
        }
    }

    #[test]
    fn gs2_header_with_authzid_is_kept_for_the_channel_binding_check() {
        let (header, bare, user, nonce) = parse_client_first("n,a=alice,n=alice,r=xyz").unwrap();
        assert_eq!((header.as_str(), bare.as_str(), user.as_str(), nonce.as_str()), ("n,a=alice,", "n=alice,r=xyz", "alice", "xyz"));
        assert_eq!(unescape_name("a=2Cb=3Dc").unwrap(), "a,b=c");
    }
}
