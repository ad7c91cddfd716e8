//! The pre-4.0 request versions that clients which do not negotiate still
//! send (Sarama 1.22, kafka-go 0.2), built byte by byte as those clients
//! build them, since the `kafka-protocol` crate cannot encode them.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker_support::TestBroker;
use crate::wire_support::{call, read_frame};

fn connect(b: &TestBroker) -> TcpStream {
    let s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A request body written field by field (big-endian, non-flexible).
#[derive(Default)]
struct Body(Vec<u8>);

impl Body {
    fn i8(mut self, v: i8) -> Self {
        self.0.push(v as u8);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(self, s: &str) -> Self {
        let mut b = self.i16(s.len() as i16);
        b.0.extend_from_slice(s.as_bytes());
        b
    }
    fn bytes(self, v: &[u8]) -> Self {
        let mut b = self.i32(v.len() as i32);
        b.0.extend_from_slice(v);
        b
    }
}

/// Sends `body` as (api, version) with a v1 request header and returns the
/// response body after its correlation id; None if the broker closed the
/// connection instead.
fn send(s: &mut TcpStream, api: ApiKey, version: i16, body: &Body) -> Option<Bytes> {
    let header = Body::default().i16(api as i16).i16(version).i32(77).str("legacy-test");
    let mut frame = ((header.0.len() + body.0.len()) as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&header.0);
    frame.extend_from_slice(&body.0);
    s.write_all(&frame).unwrap();
    let mut r = read_frame(s)?;
    assert_eq!(r.get_i32(), 77, "correlation id");
    Some(r)
}

/// Reads a response field by field; panics on a short response.
struct Resp(Bytes);

impl Resp {
    fn i8(&mut self) -> i8 {
        self.0.get_i8()
    }
    fn i16(&mut self) -> i16 {
        self.0.get_i16()
    }
    fn i32(&mut self) -> i32 {
        self.0.get_i32()
    }
    fn i64(&mut self) -> i64 {
        self.0.get_i64()
    }
    fn nullable_bytes(&mut self) -> Option<Bytes> {
        let n = self.i32();
        (n >= 0).then(|| self.0.split_to(n as usize))
    }
    fn nullable_str(&mut self) -> Option<String> {
        let n = self.i16();
        (n >= 0).then(|| String::from_utf8(self.0.split_to(n as usize).to_vec()).unwrap())
    }
    fn str(&mut self) -> String {
        self.nullable_str().expect("a string")
    }
    fn bool(&mut self) -> bool {
        self.i8() != 0
    }
    fn done(&self) {
        assert!(self.0.is_empty(), "{} bytes after the last field", self.0.len());
    }
}

/// Makes `topic` through Metadata auto-creation.
fn auto_create(s: &mut TcpStream, topic: &'static str) {
    let mut md = MetadataRequest::default();
    let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str(topic)));
    md.topics = Some(vec![t]);
    md.allow_auto_topic_creation = true;
    let r: MetadataResponse = call(s, ApiKey::Metadata, 12, &md);
    assert_eq!(r.topics[0].error_code, 0);
}

fn advertised(s: &mut TcpStream, api: ApiKey) -> (i16, i16) {
    let r: ApiVersionsResponse = call(s, ApiKey::ApiVersions, 2, &ApiVersionsRequest::default());
    let k = r.api_keys.iter().find(|k| k.api_key == api as i16).expect("advertised");
    (k.min_version, k.max_version)
}

/// OffsetCommit v0/v1 answer: topics of (partition, error).
fn commit_errors(mut r: Resp) -> Vec<(String, i32, i16)> {
    let mut out = Vec::new();
    for _ in 0..r.i32() {
        let t = r.str();
        for _ in 0..r.i32() {
            out.push((t.clone(), r.i32(), r.i16()));
        }
    }
    r.done();
    out
}

#[test]
fn offset_commit_v0_and_v1_commit_what_offset_fetch_returns() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    assert_eq!(advertised(&mut s, ApiKey::OffsetCommit).0, 0);
    auto_create(&mut s, "old-commits");
    // v1 as Sarama 1.22 sends it from outside a generation: generation −1,
    // no member id, a commit timestamp of −1 ("now").
    let v1 = Body::default().str("old-g").i32(-1).str("").i32(1).str("old-commits").i32(1).i32(0).i64(42).i64(-1).str("meta-1");
    let r = send(&mut s, ApiKey::OffsetCommit, 1, &v1).expect("a v1 response");
    assert_eq!(commit_errors(Resp(r)), vec![("old-commits".to_string(), 0, 0)]);
    // v0 has no generation, member or timestamp; an unknown partition is
    // answered per partition.
    let v0 = Body::default().str("old-g").i32(1).str("old-commits").i32(2).i32(0).i64(43).str("meta-0").i32(9).i64(1).i16(-1);
    let r = send(&mut s, ApiKey::OffsetCommit, 0, &v0).expect("a v0 response");
    assert_eq!(commit_errors(Resp(r)), vec![("old-commits".to_string(), 0, 0), ("old-commits".to_string(), 9, 3)]);

    let mut req = OffsetFetchRequest::default();
    req.group_id = kafka_protocol::messages::GroupId(StrBytes::from_static_str("old-g"));
    let mut t = kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default();
    t.name = TopicName(StrBytes::from_static_str("old-commits"));
    t.partition_indexes = vec![0];
    req.topics = Some(vec![t]);
    let r: OffsetFetchResponse = call(&mut s, ApiKey::OffsetFetch, 1, &req);
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.committed_offset, p.metadata.as_ref().map(|m| m.as_str())), (0, 43, Some("meta-0")));
    assert_eq!(b.broker_committed("old-g").get(&("old-commits".to_string(), 0)), Some(&43));
}

#[test]
fn a_legacy_request_that_does_not_fit_its_frame_closes_the_connection() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    // 2^31 − 1 topics declared in a few bytes.
    assert!(send(&mut s, ApiKey::OffsetCommit, 1, &Body::default().str("g").i32(-1).str("").i32(i32::MAX)).is_none());
    let mut s = connect(&b);
    assert!(send(&mut s, ApiKey::DescribeConfigs, 0, &Body::default().i32(1).i8(2).i16(300)).is_none());
    let mut s = connect(&b);
    assert_eq!(advertised(&mut s, ApiKey::DescribeConfigs).0, 0, "the broker serves on");
}

#[test]
fn describe_configs_v0_returns_every_config_with_is_default() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    assert_eq!(advertised(&mut s, ApiKey::DescribeConfigs), (0, 4));
    auto_create(&mut s, "old-configs");
    let mut alter = kafka_protocol::messages::IncrementalAlterConfigsRequest::default();
    let mut res = kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_static_str("old-configs");
    let mut c = kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig::default();
    c.name = StrBytes::from_static_str("segment.ms");
    c.value = Some(StrBytes::from_static_str("60000"));
    res.configs = vec![c];
    alter.resources = vec![res];
    let r: kafka_protocol::messages::IncrementalAlterConfigsResponse = call(&mut s, ApiKey::IncrementalAlterConfigs, 1, &alter);
    assert_eq!(r.responses[0].error_code, 0);

    // As Sarama's ClusterAdmin.ListTopics asks: every config of each topic
    // (null keys), then two named ones of the broker.
    let req = Body::default().i32(2).i8(2).str("old-configs").i32(-1).i8(4).str("").i32(2).str("log.dirs").str("broker.id");
    let mut r = Resp(send(&mut s, ApiKey::DescribeConfigs, 0, &req).expect("a v0 response"));
    assert_eq!(r.i32(), 0, "throttle time");
    assert_eq!(r.i32(), 2);
    let mut topic = Vec::new();
    for want_type in [2, 4] {
        assert_eq!(r.i16(), 0, "error code");
        r.nullable_str();
        assert_eq!(r.i8(), want_type);
        r.str();
        for _ in 0..r.i32() {
            let (name, value, read_only, is_default, sensitive) = (r.str(), r.nullable_str(), r.bool(), r.bool(), r.bool());
            assert!(!sensitive);
            if want_type == 2 {
                assert!(!read_only);
                topic.push((name, value, is_default));
            } else {
                assert!(read_only && !is_default, "{name}: the broker's settings are set, not defaults");
            }
        }
    }
    r.done();
    let find = |n: &str| topic.iter().find(|c| c.0 == n).cloned().unwrap_or_else(|| panic!("{n} is listed"));
    assert_eq!(find("segment.ms"), ("segment.ms".to_string(), Some("60000".to_string()), false), "a topic override is not a default");
    assert!(find("cleanup.policy").2 && find("retention.ms").2, "configs the topic does not set are defaults");
    assert!(topic.len() > 10, "every config: {}", topic.len());
}

/// One message of a magic 0 or 1 message set, as kafka-go 0.2 writes it:
/// its CRC-32 (IEEE) over magic..value.
fn message(offset: i64, magic: i8, attributes: i8, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<u8> {
    let mut m = vec![magic as u8, attributes as u8];
    if magic == 1 {
        m.extend_from_slice(&timestamp.to_be_bytes());
    }
    for f in [key, value] {
        match f {
            Some(b) => {
                m.extend_from_slice(&(b.len() as i32).to_be_bytes());
                m.extend_from_slice(b);
            }
            None => m.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let mut out = offset.to_be_bytes().to_vec();
    out.extend_from_slice(&((m.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
    out.extend_from_slice(&m);
    out
}

/// A message as read back from a fetch's message set.
#[derive(Debug, PartialEq)]
struct Msg {
    offset: i64,
    magic: i8,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// Parses a whole message set, checking every message's CRC-32 and that
/// it is uncompressed.
fn messages(set: Bytes) -> Vec<Msg> {
    let mut r = Resp(set);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let offset = r.i64();
        let size = r.i32() as usize;
        let mut m = Resp(r.0.split_to(size));
        let crc = m.i32() as u32;
        assert_eq!(crc32fast::hash(&m.0), crc, "CRC-32 of the message at offset {offset}");
        let magic = m.i8();
        assert_eq!(m.i8(), 0, "attributes: uncompressed, CreateTime");
        let timestamp = (magic == 1).then(|| m.i64());
        let key = m.nullable_bytes().map(|b| b.to_vec());
        let value = m.nullable_bytes().map(|b| b.to_vec());
        m.done();
        out.push(Msg { offset, magic, timestamp, key, value });
    }
    out
}

/// Produce v0–2 of one partition's message set; returns (error, base offset).
fn produce_old(s: &mut TcpStream, version: i16, topic: &str, set: &[u8]) -> (i16, i64) {
    let body = Body::default().i16(-1).i32(10_000).i32(1).str(topic).i32(1).i32(0).bytes(set);
    let mut r = Resp(send(s, ApiKey::Produce, version, &body).expect("a produce response"));
    assert_eq!((r.i32(), r.str().as_str(), r.i32(), r.i32()), (1, topic, 1, 0));
    let (error, base) = (r.i16(), r.i64());
    if version >= 2 {
        assert_eq!(r.i64(), -1, "log append time: the topic uses CreateTime");
    }
    if version >= 1 {
        assert_eq!(r.i32(), 0, "throttle time");
    }
    r.done();
    (error, base)
}

fn consumer(b: &TestBroker, topic: &str) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::Consumer;
    let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("broker.address.family", "v4")
        .set("group.id", "legacy-tests")
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    c
}

#[test]
fn produce_v0_to_v2_message_sets_become_v2_batches_that_rdkafka_reads() {
    use rdkafka::message::Message;
    let b = TestBroker::start();
    let mut s = connect(&b);
    auto_create(&mut s, "old-produce");
    let t0 = 1_700_000_000_000i64;
    // Produce v2 with a magic 1 set, as kafka-go 0.2's Writer sends it.
    let mut set = message(0, 1, 0, t0, Some(b"k1"), Some(b"v1"));
    set.extend(message(1, 1, 0, t0 - 5, None, Some(b"v2")));
    set.extend(message(2, 1, 0, t0 + 7, Some(b"k3"), None));
    assert_eq!(produce_old(&mut s, 2, "old-produce", &set), (0, 0));
    // Produce v1 with a gzip wrapper around two messages (relative offsets).
    let mut inner = message(0, 1, 0, t0 + 10, Some(b"g1"), Some(b"gzipped one"));
    inner.extend(message(1, 1, 0, t0 + 11, Some(b"g2"), Some(b"gzipped two")));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &inner).unwrap();
    let wrapper = message(1, 1, 1, t0 + 11, None, Some(&gz.finish().unwrap()));
    assert_eq!(produce_old(&mut s, 1, "old-produce", &wrapper), (0, 3));
    // Produce v0 with a magic 0 message: no timestamp.
    assert_eq!(produce_old(&mut s, 0, "old-produce", &message(0, 0, 0, 0, Some(b"k0"), Some(b"magic zero"))), (0, 5));
    // A damaged message is CORRUPT_MESSAGE, and the connection serves on.
    let mut bad = message(0, 1, 0, t0, Some(b"k"), Some(b"v"));
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(produce_old(&mut s, 2, "old-produce", &bad).0, 2);
    // A magic 1 timestamp below -1 is INVALID_TIMESTAMP, as Kafka answers.
    assert_eq!(produce_old(&mut s, 2, "old-produce", &message(0, 1, 0, -5, Some(b"k"), Some(b"v"))).0, 32);

    // The log holds v2 batches only, one per request, the gzip one compressed.
    let log = &b.broker.partition("old-produce", 0).unwrap().log;
    let read = log.read(0, 1 << 20, 100).unwrap().records;
    let batches: Vec<_> = eddy::log::batch::whole_batches(&read).map(|(h, _)| (h.magic, h.base_offset, h.records_count, h.compression())).collect();
    assert_eq!(batches, vec![(2, 0, 3, 0), (2, 3, 2, 1), (2, 5, 1, 0)]);

    let c = consumer(&b, "old-produce");
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 6 {
        assert!(std::time::Instant::now() < deadline, "read {} of 6", got.len());
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            got.push((m.offset(), m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec), m.timestamp().to_millis(), m.headers().is_none()));
        }
    }
    let v = |x: &[u8]| Some(x.to_vec());
    assert_eq!(
        got,
        vec![
            (0, v(b"k1"), v(b"v1"), Some(t0), true),
            (1, None, v(b"v2"), Some(t0 - 5), true),
            (2, v(b"k3"), None, Some(t0 + 7), true),
            (3, v(b"g1"), v(b"gzipped one"), Some(t0 + 10), true),
            (4, v(b"g2"), v(b"gzipped two"), Some(t0 + 11), true),
            (5, v(b"k0"), v(b"magic zero"), None, true),
        ]
    );
}

/// Fetch v0–3 of one partition; returns (error, high watermark, message set).
fn fetch_old(s: &mut TcpStream, version: i16, topic: &str, offset: i64, max_bytes: i32) -> (i16, i64, Bytes) {
    let mut body = Body::default().i32(-1).i32(100).i32(1);
    if version >= 3 {
        body = body.i32(max_bytes);
    }
    let body = body.i32(1).str(topic).i32(1).i32(0).i64(offset).i32(max_bytes);
    let mut r = Resp(send(s, ApiKey::Fetch, version, &body).expect("a fetch response"));
    if version >= 1 {
        assert_eq!(r.i32(), 0, "throttle time");
    }
    assert_eq!((r.i32(), r.str().as_str(), r.i32(), r.i32()), (1, topic, 1, 0));
    let (error, hw, set) = (r.i16(), r.i64(), r.nullable_bytes().expect("a message set, maybe empty"));
    r.done();
    (error, hw, set)
}

#[test]
fn fetch_v0_to_v3_down_convert_rdkafka_batches_to_message_sets() {
    use rdkafka::message::{Header, OwnedHeaders};
    let b = TestBroker::start();
    let mut s = connect(&b);
    auto_create(&mut s, "old-fetch");
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("broker.address.family", "v4")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("log_level", "3")
        .create()
        .unwrap();
    let t0 = 1_700_000_000_000i64;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let key = format!("key-{i}");
            let value = format!("value-{i}");
            let headers = OwnedHeaders::new().insert(Header { key: "dropped", value: Some("by down-conversion") });
            let mut rec = rdkafka::producer::FutureRecord::to("old-fetch").partition(0).key(&key).timestamp(t0 + i).headers(headers);
            if i != 7 {
                rec = rec.payload(&value);
            }
            producer.send_result(rec).unwrap()
        })
        .collect();
    for f in sends {
        rt.block_on(f).unwrap().unwrap();
    }
    let want = |i: i64, magic: i8| Msg {
        offset: i,
        magic,
        timestamp: (magic == 1).then_some(t0 + i),
        key: Some(format!("key-{i}").into_bytes()),
        value: (i != 7).then(|| format!("value-{i}").into_bytes()),
    };

    // Fetch v2 (kafka-go 0.2): magic 1, every record, offsets absolute.
    let (error, hw, set) = fetch_old(&mut s, 2, "old-fetch", 0, 1 << 20);
    assert_eq!((error, hw), (0, 20));
    assert_eq!(messages(set), (0..20).map(|i| want(i, 1)).collect::<Vec<_>>());
    // Fetch v0 from the middle of a batch: magic 0, from that offset on.
    let (_, _, set) = fetch_old(&mut s, 0, "old-fetch", 13, 1 << 20);
    assert_eq!(messages(set), (13..20).map(|i| want(i, 0)).collect::<Vec<_>>());
    // Fetch v3 with a limit below one message still gets one.
    let (_, _, set) = fetch_old(&mut s, 3, "old-fetch", 5, 10);
    assert_eq!(messages(set), vec![want(5, 1)]);
    // At the end: an empty set, not an error.
    let (error, _, set) = fetch_old(&mut s, 1, "old-fetch", 20, 1 << 20);
    assert_eq!((error, set.len()), (0, 0));
    assert_eq!(fetch_old(&mut s, 2, "old-fetch", 21, 1 << 20).0, 1, "OFFSET_OUT_OF_RANGE");
}

#[test]
fn old_fetches_skip_aborted_and_open_transactions_and_markers() {
    use eddy::log::records::{build_batch, with_producer, NewRecord};
    let b = TestBroker::start();
    let mut s = connect(&b);
    auto_create(&mut s, "old-txn");
    let p = b.broker.partition("old-txn", 0).unwrap();
    let one = |v: &'static [u8]| build_batch(&[NewRecord { key: Some(b"k"), value: Some(v), timestamp: 1, headers: &[] }]);
    p.append_internal(&one(b"plain-0")).unwrap(); // 0
    p.append_internal(&with_producer(&one(b"aborted"), 9, 0, 0, true)).unwrap(); // 1
    p.append_marker_internal(9, 0, false).unwrap(); // 2: abort marker
    p.append_internal(&with_producer(&one(b"committed"), 10, 0, 0, true)).unwrap(); // 3
    p.append_marker_internal(10, 0, true).unwrap(); // 4: commit marker
    p.append_internal(&one(b"plain-5")).unwrap(); // 5
    p.append_internal(&with_producer(&one(b"open"), 11, 0, 0, true)).unwrap(); // 6, never ended
    p.append_internal(&one(b"plain-7")).unwrap(); // 7, above the last stable offset
    // As an old consumer reads: from the offset after the last message,
    // until a fetch comes back empty (the records' 1970 timestamps put the
    // markers in new segments, so this takes several reads).
    let (mut got, mut next) = (Vec::new(), 0);
    loop {
        let (error, hw, set) = fetch_old(&mut s, 2, "old-txn", next, 1 << 20);
        assert_eq!((error, hw), (0, 8));
        let msgs = messages(set);
        let Some(last) = msgs.last() else { break };
        next = last.offset + 1;
        got.extend(msgs.into_iter().map(|m| (m.offset, m.value.unwrap())));
    }
    assert_eq!(got, vec![(0, b"plain-0".to_vec()), (3, b"committed".to_vec()), (5, b"plain-5".to_vec())]);
    // A fetch at the aborted record moves past it and the markers.
    let (_, _, set) = fetch_old(&mut s, 1, "old-txn", 1, 1 << 20);
    assert_eq!(messages(set).first().map(|m| m.offset), Some(3));
}

#[test]
fn create_topics_v0_and_v1_create_and_validate() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    assert_eq!(advertised(&mut s, ApiKey::CreateTopics), (0, 7));
    let topic = |body: Body, name: &str, partitions: i32| body.str(name).i32(partitions).i16(1).i32(0).i32(1).str("retention.ms").str("3600000");
    // v0, as kafka-go 0.2's Conn.CreateTopics sends it.
    let req = topic(Body::default().i32(1), "made-by-v0", 3).i32(5000);
    let mut r = Resp(send(&mut s, ApiKey::CreateTopics, 0, &req).unwrap());
    assert_eq!((r.i32(), r.str().as_str(), r.i16()), (1, "made-by-v0", 0));
    r.done();
    assert_eq!(b.broker.topic("made-by-v0").unwrap().partitions.len(), 3);
    assert_eq!(b.broker.topic("made-by-v0").unwrap().configs.get("retention.ms").map(String::as_str), Some("3600000"));
    // v1: validate only, and an existing topic with its message.
    let req = topic(topic(Body::default().i32(2), "only-checked", 2), "made-by-v0", 1).i32(5000).i8(1);
    let mut r = Resp(send(&mut s, ApiKey::CreateTopics, 1, &req).unwrap());
    assert_eq!(r.i32(), 2);
    assert_eq!((r.str().as_str(), r.i16(), r.nullable_str().unwrap_or_default()), ("only-checked", 0, String::new()));
    let (name, error, message) = (r.str(), r.i16(), r.nullable_str());
    assert_eq!((name.as_str(), error), ("made-by-v0", 36), "TOPIC_ALREADY_EXISTS");
    assert!(message.unwrap().contains("already exists"));
    r.done();
    assert!(b.broker.topic("only-checked").is_none());
}

/// Before v3 a fetch has no response-wide limit: each partition returns its
/// next message even when it is larger than the partition's limit, after
/// another partition already returned data (else it would never be read).
#[test]
fn fetch_v2_returns_an_oversized_message_of_every_partition() {
    let b = TestBroker::start();
    crate::processors::create(&b, "old-big", 2);
    let mut s = connect(&b);
    let big = vec![b'x'; 4000];
    assert_eq!(produce_old_to(&mut s, "old-big", 0, &message(0, 1, 0, 1, Some(b"a"), Some(b"small"))), 0);
    assert_eq!(produce_old_to(&mut s, "old-big", 1, &message(0, 1, 0, 2, Some(b"b"), Some(&big))), 0);
    // Both partitions in one request, 1 000 bytes each.
    let mut body = Body::default().i32(-1).i32(100).i32(1).i32(1).str("old-big").i32(2);
    for p in 0..2 {
        body = body.i32(p).i64(0).i32(1000);
    }
    let mut r = Resp(send(&mut s, ApiKey::Fetch, 2, &body).expect("a fetch response"));
    assert_eq!(r.i32(), 0, "throttle time");
    assert_eq!((r.i32(), r.str().as_str(), r.i32()), (1, "old-big".to_string().as_str(), 2));
    let mut values = Vec::new();
    for p in 0..2 {
        assert_eq!((r.i32(), r.i16()), (p, 0));
        r.i64();
        let set = messages(r.nullable_bytes().expect("a message set"));
        values.push(set.into_iter().map(|m| m.value.unwrap().len()).collect::<Vec<_>>());
    }
    r.done();
    assert_eq!(values, vec![vec![5], vec![4000]]);
}

/// Produce v2 of a message set to one partition; returns the error code.
fn produce_old_to(s: &mut TcpStream, topic: &str, partition: i32, set: &[u8]) -> i16 {
    let body = Body::default().i16(-1).i32(10_000).i32(1).str(topic).i32(1).i32(partition).bytes(set);
    let mut r = Resp(send(s, ApiKey::Produce, 2, &body).expect("a produce response"));
    assert_eq!((r.i32(), r.str().as_str(), r.i32(), r.i32()), (1, topic, 1, partition));
    let error = r.i16();
    r.i64();
    r.i64();
    r.i32();
    r.done();
    error
}
