//! TLS listeners and several listeners at once, driven by librdkafka (its
//! OpenSSL) and raw sockets: SSL with CA verification, SASL_SSL with
//! SCRAM, mutual TLS, per-listener advertised addresses, a client that
//! never handshakes, and the start-up errors of bad settings and files.
//! Certificates are made by each test with rcgen (a CA, a server
//! certificate for 127.0.0.1 and localhost, a client certificate); nothing
//! is checked in.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, DescribeClusterRequest, DescribeClusterResponse, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;
use rustls_pki_types::pem::PemObject;
use rcgen::{CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::broker_support::TestBroker;
use crate::security::{client_error, produce_and_consume_with};
use crate::wire_support::{call, read_frame, request_bytes};

/// A CA, the broker's keystore signed by it, a client certificate signed
/// by it, and a second CA that signed nothing the broker uses.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("Eddy test CA");
        let other = ca_pem("Another CA");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca.pem());
        write("other-ca.pem", &other);

        let mut server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        server.distinguished_name = dn(&[(DnType::CommonName, "localhost")]);
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&key, &ca).unwrap();
        // Kafka's PEM keystore: the key and the chain in one file.
        write("broker.pem", &format!("{}{}{}", key.serialize_pem(), cert.pem(), ca.pem()));
        write("broker-cert-only.pem", &cert.pem());

        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name = dn(&[(DnType::OrganizationName, "Acme"), (DnType::OrganizationalUnitName, "eng"), (DnType::CommonName, "client")]);
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = client.signed_by(&key, &ca).unwrap();
        write("client.pem", &cert.pem());
        write("client.key", &key.serialize_pem());
        std::fs::write(dir.path().join("client.der"), cert.der()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn location(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

fn dn(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for (kind, value) in parts {
        name.push(kind.clone(), *value);
    }
    name
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = dn(&[(DnType::CommonName, name)]);
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn ca_pem(name: &str) -> String {
    ca(name).pem()
}

/// A broker with `listeners` and the test keystore, adjusted by `tweak`.
fn tls_broker(pki: &Pki, listeners: &str, tweak: impl FnOnce(&mut eddy::config::Config)) -> TestBroker {
    let tmp = tempfile::tempdir().unwrap();
    let keystore = pki.path("broker.pem");
    let listeners = listeners.to_string();
    let mut b = TestBroker::start_in(tmp.path(), move |c| {
        c.broker.listeners = Some(listeners);
        c.broker.ssl_keystore_location = Some(keystore);
        tweak(c);
    });
    b.keep_dir(tmp);
    b
}

/// A librdkafka client of the listener at `addr` over TLS, trusting `ca`.
fn ssl_config(addr: SocketAddr, protocol: &str, pki: &Pki, ca: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr.to_string()).set("broker.address.family", "v4").set("log_level", "3").set("security.protocol", protocol).set("ssl.ca.location", pki.location(ca));
    c
}

fn with_client_certificate(mut c: ClientConfig, pki: &Pki) -> ClientConfig {
    c.set("ssl.certificate.location", pki.location("client.pem")).set("ssl.key.location", pki.location("client.key"));
    c
}

/// The broker's host and port as librdkafka's Metadata reports them.
fn metadata_broker(config: ClientConfig) -> (String, i32) {
    let client: BaseConsumer = config.create().unwrap();
    let m = client.fetch_metadata(None, Duration::from_secs(20)).expect("metadata");
    assert_eq!(m.brokers().len(), 1);
    (m.brokers()[0].host().to_string(), m.brokers()[0].port())
}

fn metadata_port(config: ClientConfig) -> i32 {
    metadata_broker(config).1
}

#[test]
fn ssl_client_produces_and_consumes_with_ca_verification() {
    let pki = Pki::new();
    let b = tls_broker(&pki, "SSL://127.0.0.1:0", |_| {});
    produce_and_consume_with(&|| ssl_config(b.addr, "SSL", &pki, "ca.pem"), "SSL", "over-tls", 20);
    // A client that trusts another CA refuses the broker's certificate.
    let e = client_error(ssl_config(b.addr, "SSL", &pki, "other-ca.pem"), "other CA", "SSL handshake failed");
    assert!(e.contains("certificate verify failed"), "{e}");
    // And a plaintext client gets nothing from a TLS listener.
    let mut plain = ClientConfig::new();
    plain.set("bootstrap.servers", b.bootstrap()).set("broker.address.family", "v4").set("log_level", "0").set("socket.timeout.ms", "3000");
    let client: BaseConsumer = plain.create().unwrap();
    assert!(client.fetch_metadata(None, Duration::from_secs(3)).is_err(), "a plaintext client got metadata from an SSL listener");
}

/// A rustls client trusting the test CA.
fn rustls_client(pki: &Pki) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider())).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots).with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
}

/// A fetch response larger than the socket can take at once arrives whole
/// at a client that reads slowly: what TLS keeps back when the socket is
/// full must be flushed, not left waiting for a next response that a
/// client waiting for this one never asks for.
#[test]
fn a_large_fetch_over_tls_reaches_a_slow_reader_whole() {
    let pki = Pki::new();
    let b = tls_broker(&pki, "SSL://127.0.0.1:0", |_| {});
    let value = vec![b'v'; 900 * 1024];
    let producer: rdkafka::producer::FutureProducer = ssl_config(b.addr, "SSL", &pki, "ca.pem").create().unwrap();
    produce_big(&producer, &(0..12).map(|_| value.clone()).collect::<Vec<_>>());
    let records = fetch_slowly(b.addr, Some(&pki));
    assert!(records.len() > 12 * value.len(), "{} bytes of records", records.len());
}

/// Batches read from segment files (after a restart) are sent from the
/// file, by `sendfile` over plain TCP and read and encrypted over TLS, to
/// slow readers whose sockets fill up again and again: both get exactly the
/// bytes a fetch got from memory before the restart.
#[test]
fn batches_sent_from_segment_files_reach_slow_readers_exact_over_plaintext_and_tls() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let keystore = pki.path("broker.pem");
    let config = move |c: &mut eddy::config::Config| {
        c.broker.listeners = Some("PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0".into());
        c.broker.ssl_keystore_location = Some(keystore.clone());
    };
    let b = TestBroker::start_in(tmp.path(), config.clone());
    // 12 distinct values of 900 KiB, 10 MB: more than the sockets take at once.
    let values: Vec<Vec<u8>> = (0..12u32).map(|i| (0..900 * 1024u32).map(|j| (j.wrapping_mul(31) ^ i.wrapping_mul(7919)) as u8).collect()).collect();
    let mut plain = ClientConfig::new();
    plain.set("bootstrap.servers", b.listener("PLAINTEXT").to_string()).set("broker.address.family", "v4").set("log_level", "0").set("acks", "all");
    produce_big(&plain.create().unwrap(), &values);
    let from_memory = fetch_slowly(b.listener("PLAINTEXT"), None);
    assert!(from_memory.len() > 12 * 900 * 1024, "{} bytes of records", from_memory.len());
    // The last record ends with its value and an empty header count.
    let n = from_memory.len();
    assert_eq!(&from_memory[n - 1 - values[11].len()..n - 1], &values[11][..], "the last value ends the records");
    b.stop();
    let b = TestBroker::start_in(tmp.path(), config);
    assert_eq!(fetch_slowly(b.listener("PLAINTEXT"), None), from_memory, "plaintext, from the file");
    assert_eq!(fetch_slowly(b.listener("SSL"), Some(&pki)), from_memory, "TLS, from the file");
}

/// Produces each value to partition 0 of topic "big" (auto-created).
fn produce_big(producer: &rdkafka::producer::FutureProducer, values: &[Vec<u8>]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for v in values {
            producer.send(rdkafka::producer::FutureRecord::<str, [u8]>::to("big").partition(0).payload(v), Duration::from_secs(20)).await.map_err(|(e, _)| e).unwrap();
        }
    });
}

/// One Fetch v11 of up to 16 MiB from partition 0 of "big", over TLS when
/// `pki` is given, read in small sips through a 4 KiB receive buffer after
/// the broker had time to fill the socket. Returns the records.
fn fetch_slowly(addr: SocketAddr, pki: Option<&Pki>) -> bytes::Bytes {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::Decodable;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    let mut fp = FetchPartition::default();
    fp.partition_max_bytes = 16 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_static_str("big"));
    ft.partitions = vec![fp];
    let mut fetch = FetchRequest::default();
    (fetch.replica_id, fetch.max_wait_ms, fetch.min_bytes, fetch.max_bytes) = (kafka_protocol::messages::BrokerId(-1), 0, 1, 16 << 20);
    fetch.topics = vec![ft];
    let request = request_bytes(ApiKey::Fetch, 11, 9, &fetch);

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &[u8]) -> Vec<u8> {
        s.write_all(request).await.unwrap();
        // Let the broker fill the socket, then read in small sips.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let read = async {
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await.unwrap();
            let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
            let mut at = 0;
            while at < frame.len() {
                let end = (at + 64 * 1024).min(frame.len());
                at += s.read(&mut frame[at..end]).await.unwrap();
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            frame
        };
        tokio::time::timeout(Duration::from_secs(20), read).await.expect("the fetch response stopped arriving")
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let frame = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        match pki {
            Some(pki) => exchange(rustls_client(pki).connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap(), &request).await,
            None => exchange(tcp, &request).await,
        }
    });
    let mut frame = bytes::Bytes::from(frame);
    let header = ResponseHeader::decode(&mut frame, ApiKey::Fetch.response_header_version(11)).unwrap();
    assert_eq!(header.correlation_id, 9);
    let r = FetchResponse::decode(&mut frame, 11).unwrap();
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.records.clone().unwrap_or_default()
}

#[test]
fn sasl_ssl_with_scram_sha_512() {
    let pki = Pki::new();
    let b = tls_broker(&pki, "SASL_SSL://127.0.0.1:0", |c| {
        c.broker.sasl_enabled_mechanisms = "SCRAM-SHA-512".into();
        c.broker.sasl_bootstrap_user = Some("admin".into());
        c.broker.sasl_bootstrap_password = Some("admin-secret".into());
    });
    let config = |password: &str| {
        let mut c = ssl_config(b.addr, "SASL_SSL", &pki, "ca.pem");
        c.set("sasl.mechanisms", "SCRAM-SHA-512").set("sasl.username", "admin").set("sasl.password", password);
        c
    };
    produce_and_consume_with(&|| config("admin-secret"), "SASL_SSL", "sasl-over-tls", 10);
    let e = client_error(config("wrong"), "bad password", "Authentication");
    assert!(e.contains("Authentication failed: invalid credentials with SASL mechanism SCRAM-SHA-512"), "{e}");
}

/// An SSL listener asking for client certificates signed by the test CA.
fn client_auth_broker(pki: &Pki, auth: eddy::config::ClientAuth) -> TestBroker {
    let truststore = pki.path("ca.pem");
    tls_broker(pki, "SSL://127.0.0.1:0", move |c| {
        c.broker.ssl_truststore_location = Some(truststore);
        c.broker.ssl_client_auth = auth;
    })
}

#[test]
fn mutual_tls_requires_a_client_certificate() {
    let pki = Pki::new();
    let b = client_auth_broker(&pki, eddy::config::ClientAuth::Required);
    // Without a certificate the handshake fails and nothing is served.
    let e = client_error(ssl_config(b.addr, "SSL", &pki, "ca.pem"), "no certificate", "SSL");
    assert!(e.contains("certificate required"), "{e}");
    assert!(b.broker.topic("t").is_none());
    // With one signed by the truststore's CA, clients work.
    produce_and_consume_with(&|| with_client_certificate(ssl_config(b.addr, "SSL", &pki, "ca.pem"), &pki), "mTLS", "mtls", 10);
    // The principal the broker gives it (the handshake path to it is
    // checked in security::tls's unit tests, its use by ACLs in
    // acls_apply_to_the_client_certificate_principal).
    let der = std::fs::read(pki.path("client.der")).unwrap();
    assert_eq!(eddy::security::x509::principal(&der).unwrap(), "User:CN=client,OU=eng,O=Acme");
}

#[test]
fn requested_client_authentication_lets_clients_without_a_certificate_in() {
    let pki = Pki::new();
    let b = client_auth_broker(&pki, eddy::config::ClientAuth::Requested);
    assert_eq!(metadata_port(ssl_config(b.addr, "SSL", &pki, "ca.pem")), b.addr.port() as i32);
    assert_eq!(metadata_port(with_client_certificate(ssl_config(b.addr, "SSL", &pki, "ca.pem"), &pki)), b.addr.port() as i32);
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn each_listener_advertises_its_own_address() {
    let pki = Pki::new();
    let b = tls_broker(&pki, "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0", |c| {
        c.broker.advertised_listeners = Some("SASL_PLAINTEXT://broker1.example:19092".into());
        c.broker.sasl_bootstrap_user = Some("admin".into());
        c.broker.sasl_bootstrap_password = Some("admin-secret".into());
    });
    let (plain, ssl) = (b.listener("PLAINTEXT"), b.listener("SSL"));
    assert_ne!(plain.port(), ssl.port());
    // Over PLAINTEXT: Metadata, FindCoordinator and DescribeCluster name the PLAINTEXT port.
    let mut s = connect(plain);
    let m: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!((m.brokers[0].host.as_str(), m.brokers[0].port), ("127.0.0.1", plain.port() as i32));
    let mut find = FindCoordinatorRequest::default();
    find.coordinator_keys = vec![StrBytes::from_static_str("g")];
    let f: FindCoordinatorResponse = call(&mut s, ApiKey::FindCoordinator, 4, &find);
    assert_eq!(f.coordinators[0].port, plain.port() as i32);
    let mut old = FindCoordinatorRequest::default();
    old.key = StrBytes::from_static_str("g");
    let f: FindCoordinatorResponse = call(&mut s, ApiKey::FindCoordinator, 3, &old);
    assert_eq!(f.port, plain.port() as i32);
    let d: DescribeClusterResponse = call(&mut s, ApiKey::DescribeCluster, 1, &DescribeClusterRequest::default());
    assert_eq!(d.brokers[0].port, plain.port() as i32);
    // Over SSL: librdkafka sees the SSL port, and its consumer group (which
    // connects to the coordinator it is told) works.
    assert_eq!(metadata_port(ssl_config(ssl, "SSL", &pki, "ca.pem")), ssl.port() as i32);
    produce_and_consume_with(&|| ssl_config(ssl, "SSL", &pki, "ca.pem"), "two-listeners", "both", 5);
    let mut group = ssl_config(ssl, "SSL", &pki, "ca.pem");
    group.set("group.id", "ssl-group").set("auto.offset.reset", "earliest").set("enable.auto.commit", "false");
    let consumer: BaseConsumer = group.create().unwrap();
    consumer.subscribe(&["both"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    while got < 5 {
        assert!(Instant::now() < deadline, "the SSL group consumer read {got} of 5");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => panic!("group consume over SSL: {e}"),
            None => {}
        }
    }
    consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync).expect("a commit through the coordinator the SSL listener advertised");
    // Over SASL_PLAINTEXT, after authentication: advertised.listeners' address.
    let mut sasl = ClientConfig::new();
    sasl.set("bootstrap.servers", b.listener("SASL_PLAINTEXT").to_string()).set("broker.address.family", "v4").set("log_level", "0");
    sasl.set("security.protocol", "SASL_PLAINTEXT").set("sasl.mechanisms", "SCRAM-SHA-256").set("sasl.username", "admin").set("sasl.password", "admin-secret");
    assert_eq!(metadata_broker(sasl), ("broker1.example".to_string(), 19092));
}

/// The broker closed `s` (within its 10 s read timeout): reads reach end
/// of stream or a reset. Returns what came before (a TLS alert, say).
fn closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            Err(_) => return Some(got),
        }
    }
}

#[test]
fn a_client_that_never_handshakes_is_dropped_and_blocks_nobody() {
    let pki = Pki::new();
    // The handshake bound is min(10 s, connections.max.idle.ms).
    let b = tls_broker(&pki, "SSL://127.0.0.1:0", |c| c.broker.connections_max_idle_ms = 3000);
    let opened = Instant::now();
    let mut silent = connect(b.addr);
    // Meanwhile a real client is served at once.
    let served = Instant::now();
    assert_eq!(metadata_port(ssl_config(b.addr, "SSL", &pki, "ca.pem")), b.addr.port() as i32);
    assert!(served.elapsed() < Duration::from_millis(3000), "a TLS client waited {:?} behind a silent one", served.elapsed());
    // The silent one is closed after the bound, not before, and not much later.
    assert_eq!(closed(&mut silent), Some(Vec::new()), "the silent connection was not closed, or got bytes");
    let after = opened.elapsed();
    assert!(after >= Duration::from_millis(2900) && after < Duration::from_secs(9), "closed after {after:?}");
    // Plaintext bytes on a TLS listener end the connection too.
    let mut confused = connect(b.addr);
    confused.write_all(&request_bytes(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default())).unwrap();
    let answer = closed(&mut confused).expect("a plaintext request on the SSL listener was not refused");
    // At most a TLS alert record (content type 21), never a Kafka response.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
}

fn api_versions_answered(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(&request_bytes(ApiKey::ApiVersions, 3, 2, &ApiVersionsRequest::default())).unwrap();
    read_frame(s).is_some()
}

#[test]
fn connection_limits_count_across_listeners() {
    let pki = Pki::new();
    // max.connections: a listener waiting for clients holds no slot (two
    // PLAINTEXT clients get both while the SSL listener is idle), and a
    // slot freed on one listener serves a client waiting on another.
    let b = tls_broker(&pki, "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", |c| c.broker.max_connections = 2);
    let mut first = connect(b.listener("PLAINTEXT"));
    let mut second = connect(b.listener("PLAINTEXT"));
    assert!(api_versions_answered(&mut first, Duration::from_secs(10)));
    assert!(api_versions_answered(&mut second, Duration::from_secs(10)), "the second slot was held by the idle SSL listener");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(b.listener("SSL")).await.unwrap();
        let mut handshake = Box::pin(rustls_client(&pki).connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp));
        assert!(tokio::time::timeout(Duration::from_millis(700), handshake.as_mut()).await.is_err(), "a TLS client was served past max.connections = 2");
        drop(second);
        let done = tokio::time::timeout(Duration::from_secs(10), handshake).await;
        assert!(matches!(done, Ok(Ok(_))), "the waiting TLS client was not served once a PLAINTEXT slot freed: {done:?}");
    });
    drop(b);

    // max.connections.per.ip likewise.
    let b = tls_broker(&pki, "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", |c| c.broker.max_connections_per_ip = 2);
    let mut first = connect(b.listener("PLAINTEXT"));
    assert!(api_versions_answered(&mut first, Duration::from_secs(10)));
    let _second = connect(b.listener("SSL"));
    std::thread::sleep(Duration::from_millis(200));
    let mut third = connect(b.listener("PLAINTEXT"));
    third.write_all(&request_bytes(ApiKey::ApiVersions, 3, 2, &ApiVersionsRequest::default())).unwrap();
    assert_eq!(closed(&mut third), Some(Vec::new()), "a third connection from 127.0.0.1, on another listener, was not closed at once");
}

/// `eddy check --config FILE`: its exit status and what it printed.
fn check(config: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eddy")).arg("check").arg("--config").arg(config).stdin(std::process::Stdio::null()).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn bad_listener_settings_and_tls_files_stop_start_up_with_clear_messages() {
    let pki = Pki::new();
    let config = pki.path("eddy.toml");
    let write = |broker: &str| std::fs::write(&config, format!("[broker]\n{broker}\n")).unwrap();
    let keystore = |name: &str| format!("listeners = \"SSL://127.0.0.1:0\"\n\"ssl.keystore.location\" = {:?}", pki.location(name));
    let missing = pki.location("missing.pem");
    let cases: Vec<(String, Vec<String>)> = vec![
        (keystore("missing.pem"), vec!["ssl.keystore.location".into(), missing.clone(), "cannot read".into()]),
        ("listeners = \"SSL://127.0.0.1:0\"".into(), vec!["ssl.keystore.location".into(), "SSL listener SSL needs a keystore".into()]),
        ("listeners = \"TLS://127.0.0.1:0\"".into(), vec!["listeners".into(), "unknown security protocol \"TLS\"".into()]),
        (keystore("broker-cert-only.pem"), vec!["ssl.keystore.location".into(), "no private key".into()]),
        (keystore("client.key"), vec!["ssl.keystore.location".into(), "no certificate".into()]),
        (keystore("eddy.toml"), vec!["ssl.keystore.location".into(), "no certificate".into()]),
        (
            format!("{}\n\"ssl.client.auth\" = \"required\"\n\"ssl.truststore.location\" = {:?}", keystore("broker.pem"), pki.location("client.key")),
            vec!["ssl.truststore.location".into(), "client.key".into(), "no certificate".into()],
        ),
    ];
    for (broker, needles) in cases {
        write(&broker);
        let (ok, text) = check(&config);
        assert!(!ok, "{broker}: accepted");
        for n in &needles {
            assert!(text.contains(n.as_str()), "{broker}: {n:?} missing from {text}");
        }
    }
    // serve stops at once too, before opening the data directory.
    write(&keystore("missing.pem"));
    let data = pki.path("data");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["serve", "--http-listen", "off", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("eddy serve with a missing keystore kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("ssl.keystore.location") && err.contains(&missing) && err.contains("cannot read"), "{err}");
    assert!(!data.exists(), "the data directory was made before the listeners were checked");
    // A good one passes, and lists the listeners.
    write(&format!("{}\n\"ssl.client.auth\" = \"required\"\n\"ssl.truststore.location\" = {:?}", keystore("broker.pem"), pki.location("ca.pem")));
    let (ok, text) = check(&config);
    assert!(ok && text.contains("listeners = \"SSL://127.0.0.1:0\""), "{text}");
    // A key that does not match the certificate.
    let mixed = pki.path("mixed.pem");
    let text = std::fs::read_to_string(pki.path("broker-cert-only.pem")).unwrap() + &std::fs::read_to_string(pki.path("client.key")).unwrap();
    std::fs::write(&mixed, text).unwrap();
    let mut c = eddy::config::Config::default();
    c.broker.listeners = Some("SSL://127.0.0.1:0".into());
    c.broker.ssl_keystore_location = Some(mixed);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let e = rt.block_on(eddy::server::bind(&c)).err().expect("a mismatched key was accepted").to_string();
    assert!(e.contains("ssl.keystore.location") && e.contains("mixed.pem") && e.contains("cannot be used"), "{e}");
}

/// The principal of a client certificate is what ACLs apply to: over mTLS
/// the client `User:CN=client,OU=eng,O=Acme` is refused a topic until ACLs
/// name that principal (the topic, and the consumer's group), given over a second (PLAINTEXT) listener by
/// an administrator (`User:ANONYMOUS` as the super user, for the test).
#[test]
fn acls_apply_to_the_client_certificate_principal() {
    use crate::acl::{create_acls, ALL, ALLOW, GROUP, LITERAL, STANDARD_AUTHORIZER, TOPIC};
    let pki = Pki::new();
    let truststore = pki.path("ca.pem");
    let b = tls_broker(&pki, "SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0", move |c| {
        c.broker.ssl_truststore_location = Some(truststore);
        c.broker.ssl_client_auth = eddy::config::ClientAuth::Required;
        c.broker.authorizer_class_name = Some(STANDARD_AUTHORIZER.into());
        c.broker.super_users = "User:ANONYMOUS".into();
    });
    let ssl = b.listener("SSL");
    let mtls = || with_client_certificate(ssl_config(ssl, "SSL", &pki, "ca.pem"), &pki);
    // Without an ACL: Metadata hides everything and producing is refused.
    let producer: rdkafka::producer::FutureProducer = mtls().set("message.timeout.ms", "5000").create().unwrap();
    let refused = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(producer.send(rdkafka::producer::FutureRecord::<str, str>::to("mtls").payload("x"), Duration::from_secs(10)));
    let e = refused.expect_err("a produce without rights").0;
    assert_eq!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
    // An ACL for exactly the certificate's principal lets it in.
    let mut admin = connect(b.listener("PLAINTEXT"));
    let principal = "User:CN=client,OU=eng,O=Acme";
    assert_eq!(create_acls(&mut admin, &[(TOPIC, "mtls", LITERAL, principal, ALL, ALLOW), (GROUP, "security-tests", LITERAL, principal, ALL, ALLOW)]), vec![0, 0]);
    produce_and_consume_with(&mtls, "mTLS with an ACL", "mtls", 5);
}
