//! ACLs end to end: a SASL_PLAINTEXT broker with the authorizer on and
//! `super.users = User:admin`; librdkafka clients of a user without rights
//! get Kafka's authorization errors (produce, consume, group join, topic
//! creation, transactional id, Metadata hides topics), grants made with
//! CreateAcls work at once, DeleteAcls takes them back, ACLs survive a
//! restart. The ACL requests are hand-built (the rdkafka crate does not
//! wrap them) and sent over a SASL-authenticated socket.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest, DescribeAclsResponse, InitProducerIdRequest,
    InitProducerIdResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker_support::TestBroker;
use crate::security::{connect, plain_login, sasl_config, upsertion, ADMIN, ADMIN_PASSWORD};
use crate::wire_support::call;

pub(crate) const ALICE: &str = "alice";
pub(crate) const ALICE_PASSWORD: &str = "alice-secret";
pub(crate) const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";

// Kafka's codes: resource types, pattern types, operations, permissions.
pub(crate) const TOPIC: i8 = 2;
pub(crate) const GROUP: i8 = 3;
const CLUSTER: i8 = 4;
const TRANSACTIONAL_ID: i8 = 5;
const ANY: i8 = 1;
pub(crate) const ALL: i8 = 2;
const MATCH: i8 = 2;
pub(crate) const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const READ: i8 = 3;
const WRITE: i8 = 4;
const CREATE: i8 = 5;
const DESCRIBE: i8 = 8;
pub(crate) const ALLOW: i8 = 3;

/// A broker on `dir` with a SASL_PLAINTEXT listener, the authorizer on and
/// admin as its super user.
pub(crate) fn acl_broker(dir: &Path) -> TestBroker {
    TestBroker::start_in(dir, |c| {
        c.broker.listeners = Some("SASL_PLAINTEXT://127.0.0.1:0".into());
        c.broker.sasl_enabled_mechanisms = "PLAIN,SCRAM-SHA-512".into();
        c.broker.sasl_bootstrap_user = Some(ADMIN.into());
        c.broker.sasl_bootstrap_password = Some(ADMIN_PASSWORD.into());
        c.broker.authorizer_class_name = Some(STANDARD_AUTHORIZER.into());
        c.broker.super_users = format!("User:{ADMIN}");
        c.groups.initial_rebalance_delay_ms = 0;
    })
}

/// A raw connection logged in as `user` with SASL/PLAIN.
pub(crate) fn session(b: &TestBroker, user: &str, password: &str) -> TcpStream {
    let mut s = connect(b);
    assert_eq!(plain_login(&mut s, user, password).error_code, 0, "{user} logs in");
    s
}

/// Makes alice (SCRAM-SHA-512), as admin.
pub(crate) fn create_alice(admin: &mut TcpStream) {
    let mut alter = AlterUserScramCredentialsRequest::default();
    alter.upsertions = vec![upsertion(ALICE, 2, ALICE_PASSWORD)];
    let r: AlterUserScramCredentialsResponse = call(admin, ApiKey::AlterUserScramCredentials, 0, &alter);
    assert_eq!(r.results[0].error_code, 0);
}

/// (resource type, name, pattern type, principal, operation, permission), any host.
pub(crate) type Spec<'a> = (i8, &'a str, i8, &'a str, i8, i8);

pub(crate) fn create_acls(s: &mut TcpStream, specs: &[Spec]) -> Vec<i16> {
    let mut req = CreateAclsRequest::default();
    req.creations = specs
        .iter()
        .map(|&(rt, name, pattern, principal, op, perm)| {
            let mut c = AclCreation::default();
            c.resource_type = rt;
            c.resource_name = StrBytes::from_string(name.into());
            c.resource_pattern_type = pattern;
            c.principal = StrBytes::from_string(principal.into());
            c.host = StrBytes::from_static_str("*");
            c.operation = op;
            c.permission_type = perm;
            c
        })
        .collect();
    let r: CreateAclsResponse = call(s, ApiKey::CreateAcls, 3, &req);
    r.results.iter().map(|x| x.error_code).collect()
}

/// (resource type, name, pattern type, principal, operation, permission) with ANY = 1 and None for null.
type FilterSpec<'a> = (i8, Option<&'a str>, i8, Option<&'a str>, i8, i8);

/// A DescribeAclsRequest or DeleteAclsFilter (the same fields) from a spec,
/// any host.
macro_rules! acl_filter {
    ($ty:ty, $spec:expr) => {{
        let (rt, name, pattern, principal, op, perm): FilterSpec = $spec;
        let mut f = <$ty>::default();
        f.resource_type_filter = rt;
        f.resource_name_filter = name.map(|n| StrBytes::from_string(n.into()));
        f.pattern_type_filter = pattern;
        f.principal_filter = principal.map(|p| StrBytes::from_string(p.into()));
        f.host_filter = None;
        f.operation = op;
        f.permission_type = perm;
        f
    }};
}

fn describe_acls(s: &mut TcpStream, spec: FilterSpec) -> DescribeAclsResponse {
    call(s, ApiKey::DescribeAcls, 3, &acl_filter!(DescribeAclsRequest, spec))
}

fn delete_acls(s: &mut TcpStream, filters: &[FilterSpec]) -> DeleteAclsResponse {
    let mut req = DeleteAclsRequest::default();
    req.filters = filters.iter().map(|spec| acl_filter!(DeleteAclsFilter, *spec)).collect();
    call(s, ApiKey::DeleteAcls, 3, &req)
}

/// The number of bindings in a DescribeAcls answer.
fn count(r: &DescribeAclsResponse) -> usize {
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    r.resources.iter().map(|x| x.acls.len()).sum()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Produces `n` records as `user` (SCRAM-SHA-512) with a fresh producer.
fn produce(b: &TestBroker, user: &str, password: &str, topic: &str, n: usize) -> Result<(), KafkaError> {
    let producer: FutureProducer = sasl_config(b, "SCRAM-SHA-512", user, password).set("message.timeout.ms", "10000").create().unwrap();
    rt().block_on(async {
        for i in 0..n {
            let v = format!("{user}-{i}");
            producer.send(FutureRecord::<str, str>::to(topic).payload(&v), Duration::from_secs(15)).await.map_err(|(e, _)| e)?;
        }
        Ok(())
    })
}

fn code_of(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

/// Polls `consumer` until it reports an error with `code` (bounded); panics
/// if it gets a record instead.
fn consumer_error(consumer: &BaseConsumer, code: RDKafkaErrorCode) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Err(e)) if code_of(&e) == Some(code) => return,
            Some(Err(e)) => seen.push(e.to_string()),
            Some(Ok(m)) => panic!("a record at offset {} without the right", rdkafka::message::Message::offset(&m)),
            None => {}
        }
    }
    panic!("no {code:?} within 20 s; other errors: {seen:?}");
}

/// Reads records as alice in group `group` until `n` arrived (bounded).
fn consume_in_group(b: &TestBroker, group: &str, topic: &str, n: usize) {
    let consumer: BaseConsumer = sasl_config(b, "SCRAM-SHA-512", ALICE, ALICE_PASSWORD).set("group.id", group).set("auto.offset.reset", "earliest").create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    while got < n {
        assert!(Instant::now() < deadline, "consumed {got} of {n} in group {group}");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => panic!("consuming in group {group}: {e}"),
            None => {}
        }
    }
    consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync).unwrap();
}

fn create_topic_as_alice(b: &TestBroker, name: &str) -> Result<String, (String, RDKafkaErrorCode)> {
    let admin: AdminClient<DefaultClientContext> = sasl_config(b, "SCRAM-SHA-512", ALICE, ALICE_PASSWORD).create().unwrap();
    let t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    rt().block_on(admin.create_topics(&[t], &opts)).expect("CreateTopics answered").remove(0)
}

fn init_transactions_as_alice(b: &TestBroker, id: &str) -> Result<FutureProducer, KafkaError> {
    let p: FutureProducer = sasl_config(b, "SCRAM-SHA-512", ALICE, ALICE_PASSWORD).set("transactional.id", id).set("message.timeout.ms", "10000").create().unwrap();
    p.init_transactions(Duration::from_secs(15))?;
    Ok(p)
}

/// Topics in alice's all-topics Metadata, and the error for `named`.
fn alice_metadata(b: &TestBroker, named: &str) -> (Vec<String>, Option<rdkafka::types::RDKafkaRespErr>) {
    let c: BaseConsumer = sasl_config(b, "SCRAM-SHA-512", ALICE, ALICE_PASSWORD).set("allow.auto.create.topics", "false").create().unwrap();
    let all = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let names = all.topics().iter().map(|t| t.name().to_string()).collect();
    let one = c.fetch_metadata(Some(named), Duration::from_secs(10)).unwrap();
    (names, one.topics()[0].error())
}

fn idempotent_init(s: &mut TcpStream) -> i16 {
    let mut req = InitProducerIdRequest::default();
    req.transaction_timeout_ms = -1;
    req.producer_id = kafka_protocol::messages::ProducerId(-1);
    req.producer_epoch = -1;
    let r: InitProducerIdResponse = call(s, ApiKey::InitProducerId, 4, &req);
    r.error_code
}

#[test]
fn a_user_without_acls_is_refused_until_granted_and_deletes_take_rights_back() {
    let tmp = tempfile::tempdir().unwrap();
    let b = acl_broker(tmp.path());
    let mut admin = session(&b, ADMIN, ADMIN_PASSWORD);
    create_alice(&mut admin);
    // The super user may do anything without an ACL.
    produce(&b, ADMIN, ADMIN_PASSWORD, "orders", 3).expect("admin produces");

    // alice has no rights at all.
    let e = produce(&b, ALICE, ALICE_PASSWORD, "orders", 1).expect_err("alice produced without WRITE");
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
    let (names, error) = alice_metadata(&b, "orders");
    assert!(names.is_empty(), "Metadata showed alice {names:?}");
    assert_eq!(error, Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED));
    let (_, error) = alice_metadata(&b, "no-such-topic");
    assert_eq!(error, Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED), "existence is not disclosed");
    // Allowed to DESCRIBE the topic (so librdkafka finds its leader) and
    // to use a group of her own, not to READ the topic: the Fetch is refused.
    assert_eq!(create_acls(&mut admin, &[(TOPIC, "orders", LITERAL, "User:alice", DESCRIBE, ALLOW), (GROUP, "reader", LITERAL, "User:alice", READ, ALLOW)]), [0, 0]);
    let reader: BaseConsumer = sasl_config(&b, "SCRAM-SHA-512", ALICE, ALICE_PASSWORD).set("group.id", "reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("orders", 0, Offset::Beginning).unwrap();
    reader.assign(&tpl).unwrap();
    consumer_error(&reader, RDKafkaErrorCode::TopicAuthorizationFailed);
    let member: BaseConsumer = sasl_config(&b, "SCRAM-SHA-512", ALICE, ALICE_PASSWORD).set("group.id", "alice-group").create().unwrap();
    member.subscribe(&["orders"]).unwrap();
    consumer_error(&member, RDKafkaErrorCode::GroupAuthorizationFailed);
    drop((reader, member));
    assert_eq!(create_topic_as_alice(&b, "alice-new"), Err(("alice-new".to_string(), RDKafkaErrorCode::TopicAuthorizationFailed)));
    let e = init_transactions_as_alice(&b, "alice-tx").err().expect("alice initialized a transactional id without WRITE");
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed), "{e}");
    let mut alice = session(&b, ALICE, ALICE_PASSWORD);
    assert_eq!(idempotent_init(&mut alice), 31, "an idempotent producer needs IDEMPOTENT_WRITE or WRITE on a topic");
    // Nor may she touch the ACLs.
    assert_eq!(create_acls(&mut alice, &[(TOPIC, "orders", LITERAL, "User:alice", ALL, ALLOW)]), [31]);
    assert_eq!(describe_acls(&mut alice, (ANY, None, ANY, None, ANY, ANY)).error_code, 31);
    assert_eq!(delete_acls(&mut alice, &[(ANY, None, ANY, None, ANY, ANY)]).filter_results[0].error_code, 31);

    // Grants take effect at once, on alice's open session too.
    let grants: [Spec; 6] = [
        (TOPIC, "orders", LITERAL, "User:alice", WRITE, ALLOW),
        (TOPIC, "orders", LITERAL, "User:alice", READ, ALLOW),
        (GROUP, "alice-", PREFIXED, "User:alice", READ, ALLOW),
        (TOPIC, "alice-", PREFIXED, "User:alice", CREATE, ALLOW),
        (TRANSACTIONAL_ID, "alice-tx", LITERAL, "User:alice", WRITE, ALLOW),
        (TOPIC, "orders", LITERAL, "User:alice", WRITE, ALLOW), // again: nothing new
    ];
    assert_eq!(create_acls(&mut admin, &grants), [0; 6]);
    // An invalid binding fails alone.
    assert_eq!(create_acls(&mut admin, &[(TOPIC, "x", MATCH, "User:alice", READ, ALLOW), (TOPIC, "x", LITERAL, "alice", READ, ALLOW), (CLUSTER, "kafka-cluster", LITERAL, "User:carol", DESCRIBE, ALLOW)]), [42, 42, 0]);
    assert_eq!(idempotent_init(&mut alice), 0);
    produce(&b, ALICE, ALICE_PASSWORD, "orders", 2).expect("alice produces once granted WRITE");
    let (names, error) = alice_metadata(&b, "orders");
    assert_eq!(names, ["orders"], "DESCRIBE is implied by READ and WRITE; nothing else is shown");
    assert_eq!(error, None);
    consume_in_group(&b, "alice-group", "orders", 5);
    assert_eq!(b.broker_committed("alice-group").get(&("orders".to_string(), 0)), Some(&5));
    assert_eq!(create_topic_as_alice(&b, "alice-new"), Ok("alice-new".to_string()));
    assert_eq!(create_topic_as_alice(&b, "bobs-topic"), Err(("bobs-topic".to_string(), RDKafkaErrorCode::TopicAuthorizationFailed)), "CREATE covers the prefix only");
    let tx = init_transactions_as_alice(&b, "alice-tx").expect("alice initializes her transactional id");
    tx.begin_transaction().unwrap();
    rt().block_on(tx.send(FutureRecord::<str, str>::to("orders").payload("in-a-transaction"), Duration::from_secs(15))).map_err(|(e, _)| e).unwrap();
    tx.commit_transaction(Duration::from_secs(15)).unwrap();
    assert_eq!(b.log_end("orders", 0), 3 + 2 + 2, "the transactional record and its commit marker");

    // DescribeAcls filters.
    assert_eq!(count(&describe_acls(&mut admin, (ANY, None, ANY, None, ANY, ANY))), 8);
    assert_eq!(count(&describe_acls(&mut admin, (TOPIC, Some("orders"), LITERAL, None, ANY, ANY))), 3);
    assert_eq!(count(&describe_acls(&mut admin, (TOPIC, Some("alice-x"), MATCH, None, ANY, ANY))), 1, "the prefixed CREATE");
    assert_eq!(count(&describe_acls(&mut admin, (ANY, None, PREFIXED, None, ANY, ANY))), 2);
    assert_eq!(count(&describe_acls(&mut admin, (ANY, None, ANY, Some("User:carol"), ANY, ANY))), 1);
    assert_eq!(count(&describe_acls(&mut admin, (ANY, None, ANY, None, WRITE, ANY))), 2);
    let grouped = describe_acls(&mut admin, (TOPIC, Some("orders"), ANY, None, ANY, ANY));
    assert_eq!(grouped.resources.len(), 1, "one resource with all of its bindings");
    assert_eq!(grouped.resources[0].acls.len(), 3);
    assert_eq!((grouped.resources[0].resource_type, grouped.resources[0].resource_name.as_str(), grouped.resources[0].pattern_type), (TOPIC, "orders", LITERAL));
    assert_eq!(describe_acls(&mut admin, (0, None, ANY, None, ANY, ANY)).error_code, 42, "UNKNOWN is not a filter");

    // DeleteAcls takes WRITE back: alice's next producer is refused again.
    let deleted = delete_acls(&mut admin, &[(TOPIC, Some("orders"), LITERAL, Some("User:alice"), WRITE, ANY), (GROUP, Some("nothing"), LITERAL, None, ANY, ANY)]);
    assert_eq!(deleted.filter_results.iter().map(|f| (f.error_code, f.matching_acls.len())).collect::<Vec<_>>(), [(0, 1), (0, 0)]);
    assert_eq!(deleted.filter_results[0].matching_acls[0].operation, WRITE);
    let e = produce(&b, ALICE, ALICE_PASSWORD, "orders", 1).expect_err("alice produced after WRITE was deleted");
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
    assert_eq!(count(&describe_acls(&mut admin, (ANY, None, ANY, None, ANY, ANY))), 7);
}

#[test]
fn acls_survive_a_restart_and_a_damaged_file_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let b = acl_broker(tmp.path());
    let mut admin = session(&b, ADMIN, ADMIN_PASSWORD);
    create_alice(&mut admin);
    assert_eq!(create_acls(&mut admin, &[(TOPIC, "kept", LITERAL, "User:alice", WRITE, ALLOW), (TOPIC, "kept", LITERAL, "User:*", READ, ALLOW)]), [0, 0]);
    produce(&b, ALICE, ALICE_PASSWORD, "kept", 1).expect_err("no CREATE: the topic is not auto-created for alice");
    produce(&b, ADMIN, ADMIN_PASSWORD, "kept", 1).unwrap();
    drop(admin);
    b.stop();

    let b = acl_broker(tmp.path());
    produce(&b, ALICE, ALICE_PASSWORD, "kept", 2).expect("the grant survived the restart");
    assert_eq!(b.log_end("kept", 0), 3);
    // The HTTP JSON API has no authentication: with ACLs on it is off, so
    // it cannot read past them; health stays.
    for path in ["/api/topics", "/api/topics/kept/records", "/api/groups", "/processors/p/windows"] {
        let (status, body) = crate::http::http(b.http_addr, "GET", path);
        assert_eq!(status, 403, "GET {path}: {body}");
    }
    assert_eq!(crate::http::http(b.http_addr, "GET", "/health").0, 200);
    let mut admin = session(&b, ADMIN, ADMIN_PASSWORD);
    let all = describe_acls(&mut admin, (ANY, None, ANY, None, ANY, ANY));
    assert_eq!(count(&all), 2);
    let deleted = delete_acls(&mut admin, &[(TOPIC, Some("kept"), ANY, Some("User:alice"), ANY, ANY)]);
    assert_eq!(deleted.filter_results[0].matching_acls.len(), 1);
    drop(admin);
    b.stop();

    let b = acl_broker(tmp.path());
    let e = produce(&b, ALICE, ALICE_PASSWORD, "kept", 1).expect_err("the deletion survived the restart");
    assert_eq!(code_of(&e), Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{e}");
    b.stop();

    // A damaged file stops start-up, naming the file and the reason.
    std::fs::write(tmp.path().join("acls.json"), r#"{"version":1,"acls":[{"resource_type":"TOPIC","pattern_type":"LITERAL","name":"t","principal":"User:a","host":"*","operation":"READ","permission":"MAYBE"}]}"#).unwrap();
    let mut config = eddy::config::Config::default();
    config.broker.data_dir = tmp.path().to_path_buf();
    config.broker.authorizer_class_name = Some(STANDARD_AUTHORIZER.into());
    let e = eddy::broker::Broker::open(config).err().expect("a damaged acls.json was accepted").to_string();
    assert!(e.contains("acls.json") && e.contains("permission") && e.contains("MAYBE"), "{e}");
}

#[test]
fn without_an_authorizer_everything_is_allowed_and_the_acl_apis_are_disabled() {
    let b = TestBroker::start();
    let mut s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let v: ApiVersionsResponse = call(&mut s, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    for api in [ApiKey::DescribeAcls, ApiKey::CreateAcls, ApiKey::DeleteAcls] {
        let range = v.api_keys.iter().find(|a| a.api_key == api as i16).map(|a| (a.min_version, a.max_version));
        assert_eq!(range, Some((1, 3)), "{api:?}");
    }
    assert_eq!(create_acls(&mut s, &[(TOPIC, "t", LITERAL, "User:alice", READ, ALLOW)]), [54]);
    let d = describe_acls(&mut s, (ANY, None, ANY, None, ANY, ANY));
    assert_eq!(d.error_code, 54);
    assert_eq!(d.error_message.as_deref(), Some("No Authorizer is configured."));
    assert_eq!(delete_acls(&mut s, &[(ANY, None, ANY, None, ANY, ANY)]).filter_results[0].error_code, 54);
    assert!(!b.data_dir.join("acls.json").exists());
    // Every operation is authorized (READ 3 … IDEMPOTENT_WRITE 12 as bits).
    let mut m = MetadataRequest::default();
    m.include_cluster_authorized_operations = true;
    let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 10, &m);
    assert_eq!(r.cluster_authorized_operations, 1 << 5 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12);
}

#[test]
fn authorized_operations_and_hosts_follow_the_acls() {
    let tmp = tempfile::tempdir().unwrap();
    let b = acl_broker(tmp.path());
    let mut admin = session(&b, ADMIN, ADMIN_PASSWORD);
    create_alice(&mut admin);
    produce(&b, ADMIN, ADMIN_PASSWORD, "ops", 1).unwrap();
    produce(&b, ADMIN, ADMIN_PASSWORD, "elsewhere", 1).unwrap();
    let mut req = CreateAclsRequest::default();
    for (name, host) in [("ops", "127.0.0.1"), ("elsewhere", "10.9.8.7")] {
        let mut c = AclCreation::default();
        c.resource_type = TOPIC;
        c.resource_name = StrBytes::from_string(name.into());
        c.resource_pattern_type = LITERAL;
        c.principal = StrBytes::from_static_str("User:alice");
        c.host = StrBytes::from_string(host.into());
        c.operation = READ;
        c.permission_type = ALLOW;
        req.creations.push(c);
    }
    let r: CreateAclsResponse = call(&mut admin, ApiKey::CreateAcls, 1, &req);
    assert!(r.results.iter().all(|x| x.error_code == 0));
    assert_eq!(create_acls(&mut admin, &[(CLUSTER, "kafka-cluster", LITERAL, "User:alice", DESCRIBE, ALLOW)]), [0]);

    let mut alice = session(&b, ALICE, ALICE_PASSWORD);
    let mut m = MetadataRequest::default();
    m.topics = None;
    m.include_cluster_authorized_operations = true;
    m.include_topic_authorized_operations = true;
    let r: MetadataResponse = call(&mut alice, ApiKey::Metadata, 10, &m);
    let shown: Vec<(String, i16, i32)> = r.topics.iter().map(|t| (t.name.as_ref().unwrap().to_string(), t.error_code, t.topic_authorized_operations)).collect();
    // READ from 127.0.0.1 (and the DESCRIBE it implies); the other grant is for another host.
    assert_eq!(shown, [("ops".to_string(), 0, 1 << 3 | 1 << 8)]);
    assert_eq!(r.cluster_authorized_operations, 1 << 8);
    // The admin (a super user) may do everything.
    let r: MetadataResponse = call(&mut admin, ApiKey::Metadata, 10, &m);
    assert_eq!(r.cluster_authorized_operations, 1 << 5 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12);
    assert!(r.topics.iter().any(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "elsewhere") && t.topic_authorized_operations == 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11));
}
