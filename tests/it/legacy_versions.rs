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
