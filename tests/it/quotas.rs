//! Client quotas: Describe/AlterClientQuotas as Kafka answers them, kept
//! across a restart; a client over its produce or fetch byte rate is told to
//! back off (throttle_time_ms) and its connection is muted that long, while
//! other clients are not held up.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, DescribeClientQuotasRequest, DescribeClientQuotasResponse, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::broker_support::TestBroker;
use crate::log_support::{batch, Rec};
use crate::wire_support::{read_frame, request_bytes_from};

/// One request from `client_id` on `s`, and its decoded response.
fn call_as<R: Decodable>(s: &mut TcpStream, client_id: &'static str, api: ApiKey, version: i16, body: &impl Encodable) -> R {
    let frame = request_bytes_from(client_id, api, version, 9, body);
    s.write_all(&frame).unwrap();
    let mut r = read_frame(s).expect("a response");
    let header = ResponseHeader::decode(&mut r, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 9);
    R::decode(&mut r, version).unwrap()
}

fn connect(b: &TestBroker) -> TcpStream {
    let s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn entity(parts: &[(&'static str, Option<&'static str>)]) -> Vec<EntityData> {
    parts
        .iter()
        .map(|(t, n)| {
            let mut e = EntityData::default();
            e.entity_type = StrBytes::from_static_str(t);
            e.entity_name = n.map(StrBytes::from_static_str);
            e
        })
        .collect()
}

fn entry(parts: &[(&'static str, Option<&'static str>)], ops: &[(&'static str, f64, bool)]) -> EntryData {
    let mut e = EntryData::default();
    e.entity = entity(parts);
    e.ops = ops
        .iter()
        .map(|(k, v, remove)| {
            let mut o = OpData::default();
            o.key = StrBytes::from_static_str(k);
            o.value = *v;
            o.remove = *remove;
            o
        })
        .collect();
    e
}

fn alter(s: &mut TcpStream, entries: Vec<EntryData>, validate_only: bool) -> Vec<i16> {
    let mut req = AlterClientQuotasRequest::default();
    req.entries = entries;
    req.validate_only = validate_only;
    let r: AlterClientQuotasResponse = call_as(s, "admin", ApiKey::AlterClientQuotas, 1, &req);
    r.entries.iter().map(|e| e.error_code).collect()
}

/// An entry described: its entity as "type=name" strings, and its values.
type Described = (Vec<String>, Vec<(String, f64)>);

/// Each entry the filter matches, or the request's error code.
fn describe(s: &mut TcpStream, filter: &[(&'static str, i8, Option<&'static str>)], strict: bool) -> Result<Vec<Described>, i16> {
    let mut req = DescribeClientQuotasRequest::default();
    req.strict = strict;
    req.components = filter
        .iter()
        .map(|(t, how, name)| {
            let mut c = ComponentData::default();
            c.entity_type = StrBytes::from_static_str(t);
            c.match_type = *how;
            c._match = name.map(StrBytes::from_static_str);
            c
        })
        .collect();
    let r: DescribeClientQuotasResponse = call_as(s, "admin", ApiKey::DescribeClientQuotas, 1, &req);
    if r.error_code != 0 {
        return Err(r.error_code);
    }
    let mut out: Vec<_> = r
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let names: Vec<String> = e.entity.iter().map(|d| format!("{}={}", d.entity_type.as_str(), d.entity_name.as_deref().unwrap_or("<default>"))).collect();
            let values: Vec<(String, f64)> = e.values.iter().map(|v| (v.key.to_string(), v.value)).collect();
            (names, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[test]
fn client_quotas_are_altered_described_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let mut s = connect(&b);
    let errors = alter(
        &mut s,
        vec![
            entry(&[("user", None)], &[("producer_byte_rate", 1024.0, false)]),
            entry(&[("client-id", Some("app"))], &[("consumer_byte_rate", 2048.0, false), ("request_percentage", 12.5, false)]),
            entry(&[("user", Some("alice")), ("client-id", None)], &[("producer_byte_rate", 4096.0, false)]),
            // Each bad entry is refused on its own.
            entry(&[("user", Some("bob"))], &[("no_such_quota", 1.0, false)]),
            entry(&[("ip", Some("127.0.0.1"))], &[("connection_creation_rate", 5.0, false)]),
            entry(&[("user", Some("bob"))], &[("producer_byte_rate", -3.0, false)]),
            entry(&[("user", Some("bob")), ("user", Some("eve"))], &[("producer_byte_rate", 3.0, false)]),
        ],
        false,
    );
    assert_eq!(errors, vec![0, 0, 0, 42, 42, 42, 42]);
    // validate_only changes nothing.
    assert_eq!(alter(&mut s, vec![entry(&[("user", Some("carol"))], &[("producer_byte_rate", 1.0, false)])], true), vec![0]);

    let all = describe(&mut s, &[], false).unwrap();
    let names: Vec<Vec<String>> = all.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, vec![vec!["client-id=app".to_string()], vec!["user=<default>".to_string()], vec!["user=alice".to_string(), "client-id=<default>".to_string()]]);
    let app = describe(&mut s, &[("client-id", 0, Some("app"))], false).unwrap();
    assert_eq!(app, vec![(vec!["client-id=app".to_string()], vec![("consumer_byte_rate".to_string(), 2048.0), ("request_percentage".to_string(), 12.5)])]);
    // Default user: strict leaves out alice's entity (it also has a client-id)...
    assert_eq!(describe(&mut s, &[("user", 1, None)], true).unwrap().len(), 1);
    // ...a specified user name matches alice, not the default.
    let named = describe(&mut s, &[("user", 2, None)], false).unwrap();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].0[0], "user=alice");
    assert_eq!(describe(&mut s, &[("user", 2, None)], true).unwrap().len(), 0);
    assert_eq!(describe(&mut s, &[("ip", 2, None)], false), Err(42));
    assert_eq!(describe(&mut s, &[("user", 0, None)], false), Err(42));

    // Kept across a restart; removing the last quota removes the entity.
    drop(s);
    b.stop();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let mut s = connect(&b);
    assert_eq!(describe(&mut s, &[], false).unwrap(), all);
    assert_eq!(alter(&mut s, vec![entry(&[("user", None)], &[("producer_byte_rate", 0.0, true)])], false), vec![0]);
    assert_eq!(describe(&mut s, &[], false).unwrap().len(), 2);
}

fn create_topic(admin: &mut TcpStream, name: &'static str) {
    let mut t = CreatableTopic::default();
    t.name = TopicName(StrBytes::from_static_str(name));
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let r: kafka_protocol::messages::CreateTopicsResponse = call_as(admin, "admin", ApiKey::CreateTopics, 5, &req);
    assert_eq!(r.topics[0].error_code, 0);
}

fn produce(s: &mut TcpStream, client_id: &'static str, topic: &str, bytes: usize) -> ProduceResponse {
    let records: Vec<Rec> = (0..bytes / 1000).map(|i| Rec { key: None, value: vec![b'x'; 1000], timestamp: i as i64 }).collect();
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(batch(&records));
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.to_string()));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = 1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![td];
    let r: ProduceResponse = call_as(s, client_id, ApiKey::Produce, 9, &req);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    r
}

/// How long the next request on `s` waits for its answer.
fn next_answer_after(s: &mut TcpStream, client_id: &'static str) -> Duration {
    let started = Instant::now();
    let r: ApiVersionsResponse = call_as(s, client_id, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
    started.elapsed()
}

#[test]
fn clients_over_their_byte_rates_are_throttled_and_muted() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let mut admin = connect(&b);
    create_topic(&mut admin, "q");
    // 100 KB/s for the "slow" producer and the "reader" consumer. Rates are
    // measured over at least 10 s, so ~0.91 MB at once (records of 1 KB and
    // their framing) is within the quota, and another ~0.2 MB puts it ~11 %
    // over: about a second of backing off.
    assert_eq!(alter(&mut admin, vec![entry(&[("client-id", Some("slow"))], &[("producer_byte_rate", 100_000.0, false)]), entry(&[("client-id", Some("reader"))], &[("consumer_byte_rate", 100_000.0, false)])], false), vec![0, 0]);

    let mut slow = connect(&b);
    let first = produce(&mut slow, "slow", "q", 900_000);
    assert_eq!(first.throttle_time_ms, 0, "within the quota");
    let second = produce(&mut slow, "slow", "q", 200_000);
    assert!((700..=1500).contains(&second.throttle_time_ms), "about a second over: {}", second.throttle_time_ms);
    // The connection reads nothing more until the throttle has passed.
    let waited = next_answer_after(&mut slow, "slow");
    assert!(waited >= Duration::from_millis(second.throttle_time_ms as u64 * 8 / 10), "muted for {waited:?}, throttle {} ms", second.throttle_time_ms);
    // Another client id is not held to it.
    let mut other = connect(&b);
    let free = produce(&mut other, "free", "q", 500_000);
    assert_eq!(free.throttle_time_ms, 0);
    assert!(next_answer_after(&mut other, "free") < Duration::from_millis(500));

    // Fetch, after a restart (so the batches are sent from the segment
    // file): the bytes answered count against consumer_byte_rate, and a
    // fetch asks for no more than one window of it (1 MB here), as Kafka.
    drop((admin, slow, other));
    b.stop();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let mut reader = connect(&b);
    let r = fetch(&mut reader, "reader", 0, 50 << 20, 0);
    let first = &r.responses[0].partitions[0];
    let got = first.records.as_ref().map_or(0, |b| b.len());
    assert!(got > 500_000 && got <= 1_000_000, "the first fetch, capped at 1 MB, returned {got} bytes");
    assert_eq!(r.throttle_time_ms, 0, "within the quota");
    // The next batches put it over: answered empty and throttled, and the
    // connection muted.
    // (Asking for 250 KB gets the next 0.2 MB batch alone: ~11 % over.)
    let next = batch_offsets_after(first.records.as_ref().unwrap());
    let r = fetch(&mut reader, "reader", next, 250_000, 0);
    assert!(r.responses.is_empty(), "a throttled fetch is answered without records");
    assert!((300..=3000).contains(&r.throttle_time_ms), "throttled {} ms", r.throttle_time_ms);
    let waited = next_answer_after(&mut reader, "reader");
    assert!(waited >= Duration::from_millis(r.throttle_time_ms as u64 * 8 / 10), "muted for {waited:?}, throttle {} ms", r.throttle_time_ms);
}

/// One Fetch v11 of partition q-0 from `offset` as `client_id`.
fn fetch(s: &mut TcpStream, client_id: &'static str, offset: i64, max_bytes: i32, max_wait_ms: i32) -> FetchResponse {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = 10 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_static_str("q"));
    ft.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = max_bytes;
    req.topics = vec![ft];
    call_as(s, client_id, ApiKey::Fetch, 11, &req)
}

/// The offset after the last whole batch in `records`.
fn batch_offsets_after(records: &[u8]) -> i64 {
    let (mut pos, mut next) = (0usize, 0i64);
    while pos + 12 <= records.len() {
        let base = i64::from_be_bytes(records[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().unwrap()) as usize;
        if pos + 12 + len > records.len() {
            break;
        }
        let last_delta = i32::from_be_bytes(records[pos + 23..pos + 27].try_into().unwrap()) as i64;
        next = base + last_delta + 1;
        pos += 12 + len;
    }
    next
}

/// request_percentage counts the CPU a request takes, not the time it waits:
/// empty long polls of half a second each stay far within 5 %.
#[test]
fn long_polls_are_not_charged_as_request_time() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let mut admin = connect(&b);
    create_topic(&mut admin, "q");
    assert_eq!(alter(&mut admin, vec![entry(&[("client-id", Some("poller"))], &[("request_percentage", 5.0, false)])], false), vec![0]);
    let mut poller = connect(&b);
    for _ in 0..3 {
        let started = Instant::now();
        let r = fetch(&mut poller, "poller", 0, 1 << 20, 500);
        assert!(started.elapsed() >= Duration::from_millis(400), "the fetch waited for data");
        assert_eq!(r.throttle_time_ms, 0, "waiting is not request time");
    }
    // A client that does spend CPU is held to it: 0.00001 % of a thread (1 µs
    // per 10 s) is exceeded by any request; the throttle is bounded to 1 s.
    assert_eq!(alter(&mut admin, vec![entry(&[("client-id", Some("poller"))], &[("request_percentage", 0.00001, false)])], false), vec![0]);
    let r = fetch(&mut poller, "poller", 0, 1 << 20, 0);
    assert!((1..=1000).contains(&r.throttle_time_ms), "throttled {} ms", r.throttle_time_ms);
}

/// A connection muted for a long throttle still notices its client leave:
/// with max.connections.per.ip = 1 the client's next connection is served
/// at once, not after the throttle (~90 s here).
#[test]
fn a_muted_client_that_leaves_frees_its_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |c| c.broker.max_connections_per_ip = 1);
    let serve_again_within = |limit: Duration| -> TcpStream {
        let deadline = Instant::now() + limit;
        loop {
            let mut s = connect(&b);
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let frame = request_bytes_from("admin", ApiKey::ApiVersions, 3, 9, &ApiVersionsRequest::default());
            if s.write_all(&frame).is_ok() && read_frame(&mut s).is_some() {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                return s;
            }
            assert!(Instant::now() < deadline, "no connection served within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut admin = serve_again_within(Duration::from_secs(10));
    create_topic(&mut admin, "q");
    assert_eq!(alter(&mut admin, vec![entry(&[("client-id", Some("slow"))], &[("producer_byte_rate", 1000.0, false)])], false), vec![0]);
    drop(admin);
    let mut slow = serve_again_within(Duration::from_secs(10));
    let r = produce(&mut slow, "slow", "q", 100_000);
    assert!(r.throttle_time_ms > 60_000, "throttled {} ms", r.throttle_time_ms);
    drop(slow);
    // The muted connection sees the close and gives its place back.
    serve_again_within(Duration::from_secs(5));
}
