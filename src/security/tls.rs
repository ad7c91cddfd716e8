//! TLS for SSL and SASL_SSL listeners (rustls on ring): the server side
//! built from Kafka's PEM keystore and truststore settings, refused at
//! start-up with the key, the file and the reason when a file is wrong; the
//! handshake, bounded in time; and the client's principal from its
//! certificate (`x509.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::SecurityProtocol;
use crate::config::Config;

/// `ssl.client.auth`: whether SSL listeners ask clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates (Kafka's default).
    None,
    /// Asked for; a client without one connects as `User:ANONYMOUS`.
    Requested,
    /// Asked for and required: a client without one fails the handshake.
    Required,
}

impl ClientAuth {
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Requested => "requested",
            ClientAuth::Required => "required",
        }
    }
}

/// The longest a TLS handshake may take (less if `connections.max.idle.ms`
/// is shorter): a client that connects and says nothing holds a connection
/// slot no longer than this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A PEM file's sections (kind and DER bytes), and the file's bytes.
type Pem = (Vec<(SectionKind, Vec<u8>)>, Vec<u8>);

/// The sections of a PEM file, or why it cannot be read.
fn pem_sections(key: &str, path: &Path) -> Result<Pem, String> {
    let fail = |reason: String| format!("[broker] {key}: {}: {reason}", path.display());
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| fail(format!("not a valid PEM file: {e}")))?;
    Ok((sections, bytes))
}

/// The certificate chain and private key of `ssl.keystore.location`.
fn keystore(path: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    const KEY: &str = "ssl.keystore.location";
    let fail = |reason: &str| format!("[broker] {KEY}: {}: {reason}", path.display());
    let (sections, bytes) = pem_sections(KEY, path)?;
    let mut chain = Vec::new();
    let mut keys = Vec::new();
    for (kind, der) in sections {
        match kind {
            SectionKind::Certificate => chain.push(CertificateDer::from(der)),
            SectionKind::PrivateKey => keys.push(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))),
            SectionKind::RsaPrivateKey => keys.push(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der))),
            SectionKind::EcPrivateKey => keys.push(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der))),
            _ => {}
        }
    }
    if chain.is_empty() {
        return Err(fail("no certificate in the file (it must hold the private key and the certificate chain, server certificate first)"));
    }
    match keys.len() {
        1 => Ok((chain, keys.remove(0))),
        0 if contains(&bytes, b"ENCRYPTED") => Err(fail("the private key is encrypted; Eddy reads unencrypted PEM keys only (ssl.key.password is not supported)")),
        0 => Err(fail("no private key in the file (PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")")),
        n => Err(fail(&format!("{n} private keys in the file; give one"))),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The CA certificates of `ssl.truststore.location`.
fn truststore(path: &Path) -> Result<RootCertStore, String> {
    const KEY: &str = "ssl.truststore.location";
    let fail = |reason: String| format!("[broker] {KEY}: {}: {reason}", path.display());
    let (sections, _) = pem_sections(KEY, path)?;
    let mut roots = RootCertStore::empty();
    for (i, der) in sections.into_iter().filter(|(k, _)| *k == SectionKind::Certificate).map(|(_, d)| d).enumerate() {
        roots.add(CertificateDer::from(der)).map_err(|e| fail(format!("certificate {} is not a usable CA certificate: {e}", i + 1)))?;
    }
    if roots.is_empty() {
        return Err(fail("no certificate in the file".into()));
    }
    Ok(roots)
}

/// The TLS acceptor of listeners with `protocol` (SSL or SASL_SSL), from
/// the keystore and, for SSL listeners with `ssl.client.auth`, the
/// truststore. SASL_SSL listeners never ask for client certificates
/// (Kafka applies `ssl.client.auth` to them only with a listener prefix).
pub fn acceptor(config: &Config, protocol: SecurityProtocol) -> Result<TlsAcceptor, String> {
    let b = &config.broker;
    let keystore_path = b.ssl_keystore_location.as_deref().ok_or_else(|| format!("[broker] ssl.keystore.location: needed by the {} listener", protocol.name()))?;
    let (chain, key) = keystore(keystore_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_auth = if protocol == SecurityProtocol::Ssl { b.ssl_client_auth } else { ClientAuth::None };
    let verifier = match client_auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        wanted => {
            let path = b.ssl_truststore_location.as_deref().ok_or_else(|| format!("[broker] ssl.truststore.location: needed by ssl.client.auth = {:?}", wanted.name()))?;
            let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(truststore(path)?), Arc::clone(&provider));
            let builder = if wanted == ClientAuth::Requested { builder.allow_unauthenticated() } else { builder };
            builder.build().map_err(|e| format!("[broker] ssl.truststore.location: {}: {e}", path.display()))?
        }
    };
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("[broker] ssl.keystore.location: {}: the key and certificate cannot be used: {e}", keystore_path.display()))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The server side of a TLS handshake on `stream`, for at most `bound`.
/// Returns the TLS stream and the principal of the client's certificate
/// (`User:<subject DN>`), if it sent one.
pub async fn accept(acceptor: &TlsAcceptor, stream: TcpStream, bound: Duration) -> Result<(TlsStream<TcpStream>, Option<String>), String> {
    let tls = match tokio::time::timeout(bound, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        Err(_) => return Err(format!("no TLS handshake within {} ms", bound.as_millis())),
    };
    let principal = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => Some(super::x509::principal(cert).map_err(|e| format!("client certificate: {e}"))?),
        None => None,
    };
    Ok((tls, principal))
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use rustls_pki_types::ServerName;
    use tokio::net::TcpListener;

    use super::*;

    /// A CA, a broker keystore and a client certificate and key, as files
    /// and DER.
    struct Files {
        dir: tempfile::TempDir,
        ca: CertificateDer<'static>,
        client: (CertificateDer<'static>, PrivateKeyDer<'static>),
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server = server.signed_by(&server_key, &ca).unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in [(DnType::OrganizationName, "Acme"), (DnType::OrganizationalUnitName, "eng"), (DnType::CommonName, "client")] {
            client.distinguished_name.push(kind, value);
        }
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client = client.signed_by(&client_key, &ca).unwrap();
        std::fs::write(dir.path().join("broker.pem"), format!("{}{}", server.pem(), server_key.serialize_pem())).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.serialize_der()));
        Files { ca: ca.der().clone(), client: (client.der().clone(), key), dir }
    }

    fn ssl_acceptor(f: &Files, auth: ClientAuth) -> TlsAcceptor {
        let mut c = Config::default();
        c.broker.ssl_keystore_location = Some(f.dir.path().join("broker.pem"));
        c.broker.ssl_truststore_location = Some(f.dir.path().join("ca.pem"));
        c.broker.ssl_client_auth = auth;
        acceptor(&c, SecurityProtocol::Ssl).unwrap()
    }

    /// One handshake with a rustls client (with the client certificate if
    /// `with_cert`); what the server side made of it.
    async fn handshake(f: &Files, auth: ClientAuth, with_cert: bool) -> Result<Option<String>, String> {
        let acceptor = ssl_acceptor(f, auth);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(&acceptor, tcp, Duration::from_secs(5)).await.map(|(_, principal)| principal)
        });
        let mut roots = RootCertStore::empty();
        roots.add(f.ca.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider())).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots);
        let client = match with_cert {
            true => builder.with_client_auth_cert(vec![f.client.0.clone()], f.client.1.clone_key()).unwrap(),
            false => builder.with_no_client_auth(),
        };
        let tcp = TcpStream::connect(addr).await.unwrap();
        // Held until the server is done: TLS 1.3 clients finish first.
        let _client = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(ServerName::try_from("localhost").unwrap(), tcp).await;
        server.await.unwrap()
    }

    #[tokio::test]
    async fn a_client_certificate_becomes_the_principal() {
        let f = files();
        assert_eq!(handshake(&f, ClientAuth::Required, true).await.unwrap().as_deref(), Some("User:CN=client,OU=eng,O=Acme"));
        let e = handshake(&f, ClientAuth::Required, false).await.unwrap_err();
        assert!(e.contains("TLS handshake failed"), "{e}");
        assert_eq!(handshake(&f, ClientAuth::Requested, false).await.unwrap(), None);
        assert_eq!(handshake(&f, ClientAuth::Requested, true).await.unwrap().as_deref(), Some("User:CN=client,OU=eng,O=Acme"));
        // Not asked for: no principal even from a client that has a certificate.
        assert_eq!(handshake(&f, ClientAuth::None, true).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_silent_client_fails_the_handshake_after_the_bound() {
        let f = files();
        let acceptor = ssl_acceptor(&f, ClientAuth::None);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _silent = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let started = std::time::Instant::now();
        let Err(e) = accept(&acceptor, tcp, Duration::from_millis(200)).await else { panic!("a handshake without a client") };
        assert!(e.contains("no TLS handshake within 200 ms") && started.elapsed() >= Duration::from_millis(200), "{e}");
    }
}
