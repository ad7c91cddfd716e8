//! A SASL_PLAINTEXT listener driven by librdkafka (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512) and by raw sockets: good credentials produce and consume,
//! bad ones fail with an authentication error, nothing but ApiVersions and
//! SASL passes before authentication, users made with
//! AlterUserScramCredentials log in at once, sessions re-authenticate.

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{ScramCredentialDeletion, ScramCredentialUpsertion};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse, MetadataRequest, MetadataResponse, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker_support::TestBroker;
use crate::wire_support::{call, closed, request_bytes};

pub(crate) const ADMIN: &str = "admin";
pub(crate) const ADMIN_PASSWORD: &str = "admin-secret";
const ALL: &str = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512";

/// A broker whose one listener is SASL_PLAINTEXT with `mechanisms`, and
/// the bootstrap user admin.
fn sasl_broker(mechanisms: &str, reauth_ms: u64) -> TestBroker {
    let tmp = tempfile::tempdir().unwrap();
    let mechanisms = mechanisms.to_string();
    let mut b = TestBroker::start_in(tmp.path(), move |c| {
        c.broker.listeners = Some("SASL_PLAINTEXT://127.0.0.1:0".into());
        c.broker.sasl_enabled_mechanisms = mechanisms;
        c.broker.connections_max_reauth_ms = reauth_ms;
        c.broker.sasl_bootstrap_user = Some(ADMIN.into());
        c.broker.sasl_bootstrap_password = Some(ADMIN_PASSWORD.into());
    });
    b.keep_dir(tmp);
    b
}

/// Client errors as librdkafka reports them (its error callback).
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}
impl ConsumerContext for Errors {}

pub(crate) fn sasl_config(b: &TestBroker, mechanism: &str, user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap())
        .set("broker.address.family", "v4")
        .set("log_level", "3")
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", mechanism)
        .set("sasl.username", user)
        .set("sasl.password", password);
    c
}

/// Produces `n` records to `topic` (acks=all) and reads them back.
fn produce_and_consume(b: &TestBroker, mechanism: &str, user: &str, password: &str, topic: &str, n: usize) {
    produce_and_consume_with(&|| sasl_config(b, mechanism, user, password), mechanism, topic, n);
}

/// Produces `n` records to `topic` (acks=all) with clients configured by
/// `config`, and reads them back; `label` names the case in failures.
pub(crate) fn produce_and_consume_with(config: &dyn Fn() -> ClientConfig, label: &str, topic: &str, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let producer: FutureProducer = config().set("acks", "all").set("message.timeout.ms", "20000").create().unwrap();
    rt.block_on(async {
        for i in 0..n {
            let value = format!("{label}-{i}");
            producer.send(FutureRecord::<str, str>::to(topic).payload(&value), Duration::from_secs(20)).await.map_err(|(e, _)| e).unwrap_or_else(|e| panic!("{label}: produce failed: {e}"));
        }
    });
    let consumer: BaseConsumer = config().set("group.id", "security-tests").set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "{label}: consumed {} of {n}", got.len());
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap()),
            Some(Err(e)) => panic!("{label}: consume failed: {e}"),
            None => {}
        }
    }
    assert_eq!(got, (0..n).map(|i| format!("{label}-{i}")).collect::<Vec<_>>());
}

/// Waits (bounded) for librdkafka to report an authentication failure,
/// returning its text.
fn authentication_error(b: &TestBroker, mechanism: &str, user: &str, password: &str) -> String {
    client_error(sasl_config(b, mechanism, user, password), mechanism, "Authentication")
}

/// Waits (bounded) for a client configured by `config` to report an error
/// containing `wanted` (and never to get a message), returning its text.
pub(crate) fn client_error(config: ClientConfig, label: &str, wanted: &str) -> String {
    let errors = Errors::default();
    let consumer: BaseConsumer<Errors> = config.clone().set("group.id", "g").create_with_context(errors.clone()).unwrap();
    consumer.subscribe(&["t"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(e) = errors.0.lock().unwrap().iter().find(|e| e.contains(wanted)) {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "{label}: no {wanted:?} error within 20 s; errors: {:?}", errors.0.lock().unwrap());
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            panic!("{label}: a message at offset {} despite the expected error", m.offset());
        }
    }
}

#[test]
fn plain_client_produces_and_consumes() {
    let b = sasl_broker(ALL, 0);
    produce_and_consume(&b, "PLAIN", ADMIN, ADMIN_PASSWORD, "plain", 20);
}

#[test]
fn scram_sha_256_client_produces_and_consumes() {
    let b = sasl_broker("SCRAM-SHA-256", 0);
    produce_and_consume(&b, "SCRAM-SHA-256", ADMIN, ADMIN_PASSWORD, "scram256", 20);
}

#[test]
fn scram_sha_512_client_produces_and_consumes() {
    let b = sasl_broker("SCRAM-SHA-512", 0);
    produce_and_consume(&b, "SCRAM-SHA-512", ADMIN, ADMIN_PASSWORD, "scram512", 20);
}

#[test]
fn wrong_password_and_unknown_user_fail_with_an_authentication_error() {
    let b = sasl_broker(ALL, 0);
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        for (user, password) in [(ADMIN, "not-the-password"), ("nobody", ADMIN_PASSWORD)] {
            let e = authentication_error(&b, mechanism, user, password);
            assert!(e.contains(&format!("Authentication failed: invalid credentials with SASL mechanism {mechanism}")), "{mechanism} {user}: {e}");
        }
    }
    // Nothing was written by the failed clients.
    assert!(b.broker.topic("t").is_none());
}

/// A raw connection to the SASL listener.
pub(crate) fn connect(b: &TestBroker) -> TcpStream {
    let s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn handshake(s: &mut TcpStream, mechanism: &str) -> SaslHandshakeResponse {
    let mut r = SaslHandshakeRequest::default();
    r.mechanism = StrBytes::from_string(mechanism.into());
    call(s, ApiKey::SaslHandshake, 1, &r)
}

fn authenticate(s: &mut TcpStream, token: &[u8]) -> SaslAuthenticateResponse {
    let mut r = SaslAuthenticateRequest::default();
    r.auth_bytes = Bytes::copy_from_slice(token);
    call(s, ApiKey::SaslAuthenticate, 2, &r)
}

/// Logs in with SASL/PLAIN on a raw connection.
pub(crate) fn plain_login(s: &mut TcpStream, user: &str, password: &str) -> SaslAuthenticateResponse {
    assert_eq!(handshake(s, "PLAIN").error_code, 0);
    authenticate(s, format!("\0{user}\0{password}").as_bytes())
}

#[test]
fn only_api_versions_and_sasl_pass_before_authentication() {
    let b = sasl_broker("SCRAM-SHA-256", 0);
    // Metadata first: the connection is closed without an answer.
    let mut s = connect(&b);
    s.write_all(&request_bytes(ApiKey::Metadata, 12, 1, &MetadataRequest::default())).unwrap();
    assert!(closed(&mut s), "Metadata before authentication was answered");

    // ApiVersions is answered and lists the SASL APIs; then Metadata still closes.
    let mut s = connect(&b);
    let v: ApiVersionsResponse = call(&mut s, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let range = |k: ApiKey| v.api_keys.iter().find(|a| a.api_key == k as i16).map(|a| (a.min_version, a.max_version));
    assert_eq!(range(ApiKey::SaslHandshake), Some((1, 1)));
    assert_eq!(range(ApiKey::SaslAuthenticate), Some((0, 2)));
    s.write_all(&request_bytes(ApiKey::Metadata, 12, 2, &MetadataRequest::default())).unwrap();
    assert!(closed(&mut s));

    // A mechanism that is not enabled: UNSUPPORTED_SASL_MECHANISM with the list, then closed.
    let mut s = connect(&b);
    let h = handshake(&mut s, "PLAIN");
    assert_eq!(h.error_code, 33);
    assert_eq!(h.mechanisms.iter().map(|m| m.as_str()).collect::<Vec<_>>(), ["SCRAM-SHA-256"]);
    assert!(closed(&mut s));

    // Garbage SCRAM: SASL_AUTHENTICATION_FAILED with a message, no sooner than
    // connection.failed.authentication.delay.ms (100), then closed.
    let mut s = connect(&b);
    assert_eq!(handshake(&mut s, "SCRAM-SHA-256").error_code, 0);
    let sent = Instant::now();
    let a = authenticate(&mut s, b"\xff\x00garbage,,,");
    assert!(sent.elapsed() >= Duration::from_millis(100), "a failure answered after {:?}", sent.elapsed());
    assert_eq!(a.error_code, 58);
    assert!(a.error_message.as_deref().is_some_and(|m| m.contains("Authentication failed")), "{:?}", a.error_message);
    assert!(closed(&mut s));

    // A frame over sasl.server.max.receive.size (8192) before authentication closes.
    let mut s = connect(&b);
    let mut big = SaslAuthenticateRequest::default();
    big.auth_bytes = Bytes::from(vec![b'x'; 9000]);
    assert_eq!(handshake(&mut s, "SCRAM-SHA-256").error_code, 0);
    s.write_all(&request_bytes(ApiKey::SaslAuthenticate, 2, 3, &big)).unwrap();
    assert!(closed(&mut s));

    // SaslAuthenticate without a handshake: ILLEGAL_SASL_STATE, closed.
    let mut s = connect(&b);
    assert_eq!(authenticate(&mut s, b"n,,n=admin,r=abc").error_code, 34);
    assert!(closed(&mut s));
}

#[test]
fn plaintext_listener_answers_sasl_requests_with_illegal_sasl_state() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    assert_eq!(handshake(&mut s, "PLAIN").error_code, 34);
    assert_eq!(authenticate(&mut s, b"\0a\0b").error_code, 34);
    let m: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!(m.brokers.len(), 1);
}

pub(crate) fn upsertion(user: &str, mechanism: i8, password: &str) -> ScramCredentialUpsertion {
    let m = if mechanism == 1 { eddy::security::Mechanism::ScramSha256 } else { eddy::security::Mechanism::ScramSha512 };
    let salt = b"0123456789abcdef".to_vec();
    let mut u = ScramCredentialUpsertion::default();
    u.name = StrBytes::from_string(user.into());
    u.mechanism = mechanism;
    u.iterations = 8192;
    u.salted_password = Bytes::from(eddy::security::scram::salted_password(m, password.as_bytes(), &salt, 8192));
    u.salt = Bytes::from(salt);
    u
}

#[test]
fn a_user_created_with_alter_user_scram_credentials_logs_in_without_restart() {
    let b = sasl_broker(ALL, 0);
    let mut s = connect(&b);
    assert_eq!(plain_login(&mut s, ADMIN, ADMIN_PASSWORD).error_code, 0);

    let mut alter = AlterUserScramCredentialsRequest::default();
    alter.upsertions = vec![upsertion("bob", 2, "bob-secret"), upsertion("carol", 1, "c"), upsertion("carol", 1, "again")];
    let mut bad = upsertion("dave", 1, "d");
    bad.iterations = 100;
    alter.upsertions.push(bad);
    let mut delete = ScramCredentialDeletion::default();
    delete.name = StrBytes::from_static_str("erin");
    delete.mechanism = 1;
    alter.deletions = vec![delete];
    let r: AlterUserScramCredentialsResponse = call(&mut s, ApiKey::AlterUserScramCredentials, 0, &alter);
    let codes: Vec<(String, i16)> = r.results.iter().map(|u| (u.user.to_string(), u.error_code)).collect();
    // bob is made; carol twice is DUPLICATE_RESOURCE, dave's 100 iterations
    // UNACCEPTABLE_CREDENTIAL, erin has nothing to delete: RESOURCE_NOT_FOUND.
    assert_eq!(codes, [("erin".to_string(), 91), ("bob".to_string(), 0), ("carol".to_string(), 92), ("dave".to_string(), 93)]);

    let mut describe = DescribeUserScramCredentialsRequest::default();
    describe.users = Some(vec![UserName::default().with_name(StrBytes::from_static_str("bob")), UserName::default().with_name(StrBytes::from_static_str("carol"))]);
    let d: DescribeUserScramCredentialsResponse = call(&mut s, ApiKey::DescribeUserScramCredentials, 0, &describe);
    assert_eq!(d.results[0].error_code, 0);
    assert_eq!(d.results[0].credential_infos.iter().map(|c| (c.mechanism, c.iterations)).collect::<Vec<_>>(), [(2, 8192)]);
    assert_eq!(d.results[1].error_code, 91, "carol was not made");
    let all: DescribeUserScramCredentialsResponse = call(&mut s, ApiKey::DescribeUserScramCredentials, 0, &DescribeUserScramCredentialsRequest::default());
    assert_eq!(all.results.iter().map(|u| u.user.to_string()).collect::<Vec<_>>(), ["admin", "bob"]);

    // bob logs in with a real client at once, with SCRAM-SHA-512 and PLAIN.
    produce_and_consume(&b, "SCRAM-SHA-512", "bob", "bob-secret", "bobs", 5);
    let mut s2 = connect(&b);
    assert_eq!(plain_login(&mut s2, "bob", "bob-secret").error_code, 0);
    // Not with the mechanism he has no credential for.
    let e = authentication_error(&b, "SCRAM-SHA-256", "bob", "bob-secret");
    assert!(e.contains("Authentication failed"), "{e}");

    // Deleted, he cannot log in any more; the change survives a restart.
    let mut delete = ScramCredentialDeletion::default();
    delete.name = StrBytes::from_static_str("bob");
    delete.mechanism = 2;
    let mut alter = AlterUserScramCredentialsRequest::default();
    alter.deletions = vec![delete];
    let r: AlterUserScramCredentialsResponse = call(&mut s, ApiKey::AlterUserScramCredentials, 0, &alter);
    assert_eq!(r.results[0].error_code, 0);
    let mut s3 = connect(&b);
    assert_eq!(plain_login(&mut s3, "bob", "bob-secret").error_code, 58);
    let text = std::fs::read_to_string(b.data_dir.join("scram-credentials.json")).unwrap();
    assert!(!text.contains("bob") && !text.contains(ADMIN_PASSWORD), "{text}");
}

#[test]
fn sessions_end_after_connections_max_reauth_ms_unless_renewed() {
    let b = sasl_broker(ALL, 1500);
    // The session lifetime is announced (SaslAuthenticate v1+).
    let mut s = connect(&b);
    let a = plain_login(&mut s, ADMIN, ADMIN_PASSWORD);
    assert_eq!((a.error_code, a.session_lifetime_ms), (0, 1500));
    // Re-authenticating on the same connection renews the session.
    let mut renewed = connect(&b);
    assert_eq!(plain_login(&mut renewed, ADMIN, ADMIN_PASSWORD).error_code, 0);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(plain_login(&mut renewed, ADMIN, ADMIN_PASSWORD).error_code, 0);
    std::thread::sleep(Duration::from_millis(800));
    let m: MetadataResponse = call(&mut renewed, ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!(m.brokers.len(), 1, "the renewed session still serves");
    // The first session has ended: its next request closes the connection.
    s.write_all(&request_bytes(ApiKey::Metadata, 12, 7, &MetadataRequest::default())).unwrap();
    assert!(closed(&mut s), "a request after the session ended was answered");

    // librdkafka re-authenticates on its connections: a producer keeps
    // working over several session lifetimes without reconnecting.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let producer: FutureProducer = sasl_config(&b, "SCRAM-SHA-512", ADMIN, ADMIN_PASSWORD).set("acks", "all").set("message.timeout.ms", "20000").create().unwrap();
    let send = |i: usize| {
        let v = i.to_string();
        rt.block_on(producer.send(FutureRecord::<str, str>::to("reauth").payload(&v), Duration::from_secs(20))).map_err(|(e, _)| e).unwrap();
    };
    send(0);
    std::thread::sleep(Duration::from_millis(500));
    let accepted = b.broker.metrics.connections_accepted.get();
    for i in 1..=10 {
        std::thread::sleep(Duration::from_millis(500));
        send(i);
    }
    assert_eq!(b.broker.metrics.connections_accepted.get(), accepted, "the producer reconnected instead of re-authenticating");
    assert_eq!(b.log_end("reauth", 0), 11);
}

/// librdkafka's own AlterUserScramCredentials (what `kafka-configs` sends,
/// the salt and salted password computed by the client): the rdkafka crate
/// does not wrap it, so it is called through its C API. Returns each
/// user's (name, error code) as librdkafka reports them.
fn librdkafka_upsert(b: &TestBroker, user: &str, password: &str, iterations: i32) -> Vec<(String, i32)> {
    use rdkafka::bindings as rd;
    use std::ffi::{CStr, CString};
    let client: BaseConsumer = sasl_config(b, "SCRAM-SHA-512", ADMIN, ADMIN_PASSWORD).create().unwrap();
    let rk = client.client().native_ptr();
    let name = CString::new(user).unwrap();
    let mut out = Vec::new();
    // SAFETY: every pointer comes from librdkafka for this client and is
    // used and freed as its C API documents, before the client is dropped.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let options = rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS);
        // A null salt: librdkafka makes a random one.
        let mut alterations = [rd::rd_kafka_UserScramCredentialUpsertion_new(name.as_ptr(), rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256, iterations, password.as_ptr(), password.len(), std::ptr::null(), 0)];
        rd::rd_kafka_AlterUserScramCredentials(rk, alterations.as_mut_ptr(), alterations.len(), options, queue);
        rd::rd_kafka_UserScramCredentialAlteration_destroy_array(alterations.as_mut_ptr(), alterations.len());
        let event = rd::rd_kafka_queue_poll(queue, 20_000);
        assert!(!event.is_null(), "no AlterUserScramCredentials result within 20 s");
        assert_eq!(rd::rd_kafka_event_error(event) as i32, 0, "{:?}", CStr::from_ptr(rd::rd_kafka_event_error_string(event)));
        let result = rd::rd_kafka_event_AlterUserScramCredentials_result(event);
        let mut n = 0usize;
        let responses = rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut n);
        for i in 0..n {
            let r = *responses.add(i);
            let user = CStr::from_ptr(rd::rd_kafka_AlterUserScramCredentials_result_response_user(r)).to_string_lossy().into_owned();
            let error = rd::rd_kafka_AlterUserScramCredentials_result_response_error(r);
            out.push((user, if error.is_null() { 0 } else { rd::rd_kafka_error_code(error) as i32 }));
        }
        rd::rd_kafka_event_destroy(event);
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_queue_destroy(queue);
    }
    out
}

#[test]
fn librdkafka_admin_creates_a_scram_user_who_logs_in_at_once() {
    let b = sasl_broker("SCRAM-SHA-256,SCRAM-SHA-512", 0);
    assert_eq!(librdkafka_upsert(&b, "frank", "frank-secret", 4096), [("frank".to_string(), 0)]);
    produce_and_consume(&b, "SCRAM-SHA-256", "frank", "frank-secret", "franks", 3);
    // Iterations below Kafka's minimum: UNACCEPTABLE_CREDENTIAL (93), and no user.
    assert_eq!(librdkafka_upsert(&b, "grace", "grace-secret", 1000), [("grace".to_string(), 93)]);
    assert!(b.broker.credentials.describe("grace").is_none());
}
