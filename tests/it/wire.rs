//! Hand-built requests for the edges clients do not send: unknown versions,
//! truncated, oversized and garbage frames, corrupt batches. Each gets the
//! right error or a closed connection, and the broker keeps serving others.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::broker_support::TestBroker;
use crate::wire_support::{call, closed, read_frame, request_bytes};
use crate::log_support::{batch, Rec};

fn connect(b: &TestBroker) -> TcpStream {
    let s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}





/// The broker still answers a fresh connection.
fn still_serving(b: &TestBroker) {
    let mut s = connect(b);
    let r: ApiVersionsResponse = call(&mut s, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
}

#[test]
fn api_versions_lists_what_is_served_and_answers_unknown_versions() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    for v in 0..=4 {
        let r: ApiVersionsResponse = if v == 3 || v == 4 {
            // v3+ requests are flexible, but the response header stays v0.
            s.write_all(&request_bytes(ApiKey::ApiVersions, v, 42, &ApiVersionsRequest::default())).unwrap();
            let mut f = read_frame(&mut s).unwrap();
            assert_eq!(f.get_i32(), 42);
            ApiVersionsResponse::decode(&mut f, v).unwrap()
        } else {
            call(&mut s, ApiKey::ApiVersions, v, &ApiVersionsRequest::default())
        };
        assert_eq!(r.error_code, 0, "v{v}");
        let produce = r.api_keys.iter().find(|k| k.api_key == 0).unwrap();
        assert_eq!((produce.min_version, produce.max_version), (0, 13));
        assert!(r.api_keys.iter().any(|k| k.api_key == 22 && k.max_version == 6), "InitProducerId (idempotent producers)");
        let txn = r.api_keys.iter().find(|k| k.api_key == 26).unwrap();
        assert_eq!(txn.max_version, 4, "EndTxn v5 belongs to transactions v2, which is not finalized");
        assert_eq!(r.finalized_features.len(), 0, "no features (transaction.version) finalized");
    }
    // A version from the future: UNSUPPORTED_VERSION, with the list, as v0.
    s.write_all(&request_bytes(ApiKey::ApiVersions, 3, 7, &ApiVersionsRequest::default()).into_iter().enumerate().map(|(i, x)| if i == 7 { 99 } else { x }).collect::<Vec<u8>>()).unwrap();
    let mut f = read_frame(&mut s).unwrap();
    assert_eq!(f.get_i32(), 7);
    let r = ApiVersionsResponse::decode(&mut f, 0).unwrap();
    assert_eq!(r.error_code, 35);
    assert!(r.api_keys.iter().any(|k| k.api_key == 18 && k.max_version == 4));
}

#[test]
fn an_unsupported_version_of_another_api_closes_only_that_connection() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    // ListOffsets v0 (Kafka 4.0 dropped it too) is not served.
    let mut bytes = request_bytes(ApiKey::Metadata, 1, 1, &MetadataRequest::default());
    bytes[4..6].copy_from_slice(&2i16.to_be_bytes()); // api key 2 = ListOffsets
    bytes[6..8].copy_from_slice(&0i16.to_be_bytes()); // version 0
    s.write_all(&bytes).unwrap();
    assert!(closed(&mut s));
    let mut s = connect(&b);
    s.write_all(&request_bytes(ApiKey::Metadata, 1, 1, &MetadataRequest::default()).iter().enumerate().map(|(i, &x)| if i == 7 { 77 } else { x }).collect::<Vec<u8>>()).unwrap();
    assert!(closed(&mut s));
    still_serving(&b);
}

#[test]
fn oversized_truncated_and_garbage_frames_close_the_connection() {
    let b = TestBroker::start();
    for len in [i32::MAX, 104_857_601, -5] {
        let mut s = connect(&b);
        s.write_all(&len.to_be_bytes()).unwrap();
        let _ = s.write_all(&[0u8; 64]);
        assert!(closed(&mut s), "frame length {len}");
    }
    // A frame that ends early: the client gives up mid-request.
    let mut s = connect(&b);
    s.write_all(&1000i32.to_be_bytes()).unwrap();
    s.write_all(&[0u8; 10]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed(&mut s));
    // A known API with a body that does not decode.
    let mut s = connect(&b);
    let mut bytes = request_bytes(ApiKey::Metadata, 12, 1, &MetadataRequest::default());
    bytes.truncate(bytes.len() - 2);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 0x01]);
    let len = (bytes.len() - 4) as i32;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&bytes).unwrap();
    assert!(closed(&mut s));
    // An unknown API key.
    let mut s = connect(&b);
    let mut bytes = request_bytes(ApiKey::Metadata, 1, 1, &MetadataRequest::default());
    bytes[4..6].copy_from_slice(&999i16.to_be_bytes());
    s.write_all(&bytes).unwrap();
    assert!(closed(&mut s));
    still_serving(&b);
}

/// A request frame with a hand-written body after a real header.
fn raw_request(api: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
    let mut h = RequestHeader::default();
    h.request_api_key = api as i16;
    h.request_api_version = version;
    h.correlation_id = 7;
    h.client_id = Some(StrBytes::from_static_str("wire-test"));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    h.encode(&mut frame, api.request_header_version(version)).unwrap();
    frame.extend_from_slice(body);
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame.to_vec()
}

/// Requests of a few bytes that declare arrays of billions of elements, or
/// strings and bytes of gigabytes: before kafka-protocol's decoding was
/// patched (vendor/kafka-protocol/EDDY-PATCH.md) the first of these made the
/// broker ask for ~100 GiB and abort, taking this test process with it. Each
/// must close only its own connection.
#[test]
fn huge_declared_lengths_are_refused_without_allocating() {
    let b = TestBroker::start();
    const HUGE_VARINT: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 0x0f]; // u32::MAX
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Metadata v0: topics array of i32::MAX names.
        ("Metadata v0 array", raw_request(ApiKey::Metadata, 0, &[&i32::MAX.to_be_bytes()[..], &[0, 1, b'a']].concat())),
        // Metadata v12 (flexible): compact topics array of 2^32 - 2.
        ("Metadata v12 compact array", raw_request(ApiKey::Metadata, 12, &[&HUGE_VARINT[..], &[0; 8]].concat())),
        // CreateTopics v5: a compact array of 2^32 - 2 topics (each ~200 bytes decoded).
        ("CreateTopics v5 compact array", raw_request(ApiKey::CreateTopics, 5, &[&HUGE_VARINT[..], &[1, 2, 3]].concat())),
        // DeleteTopics v1: i32::MAX topic names.
        ("DeleteTopics v1 array", raw_request(ApiKey::DeleteTopics, 1, &[&i32::MAX.to_be_bytes()[..], &[0; 6]].concat())),
        // Produce v3: a transactional id declaring 32767 bytes, 3 sent.
        ("Produce v3 string", raw_request(ApiKey::Produce, 3, &[&i16::MAX.to_be_bytes()[..], b"abc"].concat())),
        // SaslAuthenticate v2: compact auth bytes declaring 4 GiB.
        ("SaslAuthenticate v2 compact bytes", raw_request(ApiKey::SaslAuthenticate, 2, &[&HUGE_VARINT[..], b"xy"].concat())),
    ];
    for (what, frame) in cases {
        let mut s = connect(&b);
        s.write_all(&frame).unwrap();
        assert!(closed(&mut s), "{what}: the connection is closed");
        still_serving(&b);
    }
}

fn produce(s: &mut TcpStream, topic: &str, records: Bytes) -> (i16, i64) {
    produce_at(s, topic, records, 9)
}

fn produce_at(s: &mut TcpStream, topic: &str, records: Bytes, version: i16) -> (i16, i64) {
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(records);
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.to_string()));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![td];
    let r: ProduceResponse = call(s, ApiKey::Produce, version, &req);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn corrupt_batches_get_corrupt_message_and_invalid_record() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    // Auto-create the topic through Metadata.
    let mut md = MetadataRequest::default();
    let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str("wire")));
    md.topics = Some(vec![t]);
    md.allow_auto_topic_creation = true;
    let _: kafka_protocol::messages::MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &md);

    let good = batch(&[Rec { key: Some(b"k".to_vec()), value: b"v".to_vec(), timestamp: 1 }, Rec { key: None, value: b"w".to_vec(), timestamp: 2 }]);
    let mut bad_crc = good.to_vec();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 0x55;
    assert_eq!(produce(&mut s, "wire", Bytes::from(bad_crc)).0, 2, "CORRUPT_MESSAGE");

    let mut wrong_count = good.to_vec();
    wrong_count[57..61].copy_from_slice(&3i32.to_be_bytes());
    let crc = crc32c::crc32c(&wrong_count[21..]);
    wrong_count[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(produce(&mut s, "wire", Bytes::from(wrong_count)).0, 87, "INVALID_RECORD");

    // Kafka's ProduceRequest.validateRecords: v3+ carry v2 batches only
    // (INVALID_RECORD), and zstd only from v7 (UNSUPPORTED_COMPRESSION_TYPE).
    let mut old_magic = good.to_vec();
    old_magic[16] = 1;
    assert_eq!(produce(&mut s, "wire", Bytes::from(old_magic)).0, 87, "INVALID_RECORD");
    let mut zstd = good.to_vec();
    zstd[22] = (zstd[22] & !0x07) | 4;
    let crc = crc32c::crc32c(&zstd[21..]);
    zstd[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(produce_at(&mut s, "wire", Bytes::from(zstd), 6).0, 76, "UNSUPPORTED_COMPRESSION_TYPE");
    assert_eq!(produce_at(&mut s, "wire", good.clone(), 6).0, 0, "an uncompressed batch at v6 is fine");

    assert_eq!(produce(&mut s, "wire", good.clone()), (0, 2), "the connection is still usable");
    assert_eq!(produce(&mut s, "no-such-topic", good).0, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    still_serving(&b);
}

fn metadata_topic_id(s: &mut TcpStream, topic: &'static str) -> uuid::Uuid {
    let mut md = MetadataRequest::default();
    let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str(topic)));
    md.topics = Some(vec![t]);
    md.allow_auto_topic_creation = true;
    let r: kafka_protocol::messages::MetadataResponse = call(s, ApiKey::Metadata, 12, &md);
    assert_eq!(r.topics[0].error_code, 0);
    r.topics[0].topic_id
}

fn fetch_request(topic_id: uuid::Uuid, offset: i64, max_wait_ms: i32) -> kafka_protocol::messages::FetchRequest {
    let mut fp = kafka_protocol::messages::fetch_request::FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = kafka_protocol::messages::fetch_request::FetchTopic::default();
    ft.topic_id = topic_id;
    ft.partitions = vec![fp];
    let mut req = kafka_protocol::messages::FetchRequest::default();
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.topics = vec![ft];
    req
}

/// A client-built lz4 batch (Kafka's LZ4 frame format) is stored and served
/// byte for byte, and timestamp lookups see inside it.
#[test]
fn an_lz4_batch_is_stored_as_sent_and_searchable_by_time() {
    use std::io::Write as _;
    let b = TestBroker::start();
    let mut s = connect(&b);
    let id = metadata_topic_id(&mut s, "lz4");
    let plain = batch(&[
        Rec { key: Some(b"a".to_vec()), value: b"first".to_vec(), timestamp: 500 },
        Rec { key: Some(b"b".to_vec()), value: b"second".to_vec(), timestamp: 900 },
        Rec { key: Some(b"c".to_vec()), value: b"third".to_vec(), timestamp: 700 },
    ]);
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
    enc.write_all(&plain[61..]).unwrap();
    let body = enc.finish().unwrap();
    let mut lz4 = plain[..61].to_vec();
    lz4.extend_from_slice(&body);
    let len = (lz4.len() - 12) as i32;
    lz4[8..12].copy_from_slice(&len.to_be_bytes());
    lz4[21..23].copy_from_slice(&3i16.to_be_bytes()); // codec 3 = lz4
    let crc = crc32c::crc32c(&lz4[21..]);
    lz4[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(produce(&mut s, "lz4", Bytes::from(lz4.clone())), (0, 0));

    let r: kafka_protocol::messages::FetchResponse = call(&mut s, ApiKey::Fetch, 13, &fetch_request(id, 0, 0));
    let got = r.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(&got[8..], &lz4[8..], "served exactly as sent (base offset aside)");

    let list = |ts: i64| {
        let mut lp = kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default();
        lp.partition_index = 0;
        lp.timestamp = ts;
        let mut lt = kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default();
        lt.name = TopicName(StrBytes::from_static_str("lz4"));
        lt.partitions = vec![lp];
        let mut req = kafka_protocol::messages::ListOffsetsRequest::default();
        req.topics = vec![lt];
        req
    };
    let mut ask = |ts: i64| {
        let r: kafka_protocol::messages::ListOffsetsResponse = call(&mut s, ApiKey::ListOffsets, 8, &list(ts));
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp)
    };
    assert_eq!(ask(600), (0, 1, 900), "first record with timestamp ≥ 600 is inside the batch");
    assert_eq!(ask(-3), (0, 1, 900), "max timestamp");
    assert_eq!(ask(-2).1, 0, "earliest");
    assert_eq!(ask(-1).1, 3, "latest");
    assert_eq!(ask(1000).1, -1, "none that late");
}

/// A fetch with nothing to read waits, and an append wakes it long before
/// its max wait.
#[test]
fn a_long_poll_fetch_is_woken_by_an_append() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    let id = metadata_topic_id(&mut s, "poll");
    let addr = b.addr;
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let good = batch(&[Rec { key: None, value: b"wake".to_vec(), timestamp: 1 }]);
        produce(&mut w, "poll", good)
    });
    let t0 = std::time::Instant::now();
    let r: kafka_protocol::messages::FetchResponse = call(&mut s, ApiKey::Fetch, 16, &fetch_request(id, 0, 10_000));
    let waited = t0.elapsed();
    assert_eq!(writer.join().unwrap(), (0, 0));
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 1));
    assert!(!p.records.as_ref().unwrap().is_empty(), "the fetch returned the new record");
    assert!(waited >= Duration::from_millis(250), "it waited for data ({waited:?})");
    assert!(waited < Duration::from_secs(5), "an append woke it, not the 10 s timer ({waited:?})");

    // Nothing arrives: the fetch returns empty after max_wait_ms.
    let t0 = std::time::Instant::now();
    let r: kafka_protocol::messages::FetchResponse = call(&mut s, ApiKey::Fetch, 16, &fetch_request(id, 1, 400));
    assert!(r.responses[0].partitions[0].records.as_ref().is_none_or(|x| x.is_empty()));
    assert!(t0.elapsed() >= Duration::from_millis(350));
    // Out of range and unknown topic ids are per-partition errors.
    let r: kafka_protocol::messages::FetchResponse = call(&mut s, ApiKey::Fetch, 16, &fetch_request(id, 99, 0));
    assert_eq!(r.responses[0].partitions[0].error_code, 1, "OFFSET_OUT_OF_RANGE");
    let r: kafka_protocol::messages::FetchResponse = call(&mut s, ApiKey::Fetch, 16, &fetch_request(uuid::Uuid::new_v4(), 0, 0));
    assert_eq!(r.responses[0].partitions[0].error_code, 100, "UNKNOWN_TOPIC_ID");
}

#[test]
fn topic_ids_persist_and_delete_topics_works_by_id() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let mut s = connect(&b);
    let id = metadata_topic_id(&mut s, "keep-id");
    let other = metadata_topic_id(&mut s, "delete-by-id");
    assert_ne!(id, other);
    drop(s);
    b.stop();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let mut s = connect(&b);
    assert_eq!(metadata_topic_id(&mut s, "keep-id"), id, "the topic id survives a restart");
    assert_eq!(metadata_topic_id(&mut s, "delete-by-id"), other);

    let mut t = kafka_protocol::messages::delete_topics_request::DeleteTopicState::default();
    t.topic_id = other;
    let mut req = kafka_protocol::messages::DeleteTopicsRequest::default();
    req.topics = vec![t];
    let r: kafka_protocol::messages::DeleteTopicsResponse = call(&mut s, ApiKey::DeleteTopics, 6, &req);
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(r.responses[0].name.as_ref().map(|n| n.as_str()), Some("delete-by-id"));
    let r: kafka_protocol::messages::DeleteTopicsResponse = call(&mut s, ApiKey::DeleteTopics, 6, &req);
    assert_eq!(r.responses[0].error_code, 100, "UNKNOWN_TOPIC_ID the second time");
    assert!(!tmp.path().join("delete-by-id-0").exists());
    assert!(!tmp.path().join("delete-by-id.topic").exists());
}

/// Pipelined requests: acks=all produces wait for their fsync off the
/// connection's read loop, yet responses come back in request order.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    metadata_topic_id(&mut s, "pipe");
    let mut bytes = Vec::new();
    for corr in 0..20 {
        let mut pd = PartitionProduceData::default();
        pd.index = 0;
        pd.records = Some(batch(&[Rec { key: None, value: format!("v{corr}").into_bytes(), timestamp: 1 }]));
        let mut td = TopicProduceData::default();
        td.name = TopicName(StrBytes::from_static_str("pipe"));
        td.partition_data = vec![pd];
        let mut req = ProduceRequest::default();
        req.acks = if corr % 3 == 0 { 1 } else { -1 };
        req.timeout_ms = 10_000;
        req.topic_data = vec![td];
        if corr == 10 {
            bytes.extend(request_bytes(ApiKey::ApiVersions, 3, corr, &ApiVersionsRequest::default()));
        } else {
            bytes.extend(request_bytes(ApiKey::Produce, 9, corr, &req));
        }
    }
    s.write_all(&bytes).unwrap();
    let mut next_offset = 0;
    for corr in 0..20 {
        let mut f = read_frame(&mut s).expect("a response");
        if corr == 10 {
            assert_eq!(f.get_i32(), corr, "ApiVersions answered in its place");
            continue;
        }
        let h = ResponseHeader::decode(&mut f, ApiKey::Produce.response_header_version(9)).unwrap();
        assert_eq!(h.correlation_id, corr, "responses in request order");
        let r = ProduceResponse::decode(&mut f, 9).unwrap();
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, next_offset));
        next_offset += 1;
    }
}

/// Clients that ask for authorized operations get the operations (all of a
/// resource type's, without ACLs); the rest get "not requested". kafka-python's
/// admin client reads the bits and fails on i32::MIN's sign bit.
#[test]
fn authorized_operations_are_answered_when_asked_for() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    for asked in [false, true] {
        let mut m = MetadataRequest::default();
        let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
        t.name = Some(TopicName(StrBytes::from_static_str("ops")));
        m.topics = Some(vec![t]);
        m.allow_auto_topic_creation = true;
        m.include_cluster_authorized_operations = asked;
        m.include_topic_authorized_operations = asked;
        let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 8, &m);
        let cluster = if asked { (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) } else { i32::MIN };
        assert_eq!(r.cluster_authorized_operations, cluster, "Metadata v8, asked: {asked}");
        assert_eq!(r.topics.len(), 1);
        assert_eq!(r.topics[0].error_code, 0, "auto-created");
        assert_eq!(r.topics[0].topic_authorized_operations, if asked { 0b1101_1111_1000 } else { i32::MIN });

        let mut d = DescribeClusterRequest::default();
        d.include_cluster_authorized_operations = asked;
        let r: DescribeClusterResponse = call(&mut s, ApiKey::DescribeCluster, 0, &d);
        assert_eq!(r.cluster_authorized_operations, cluster, "DescribeCluster, asked: {asked}");

        let mut g = DescribeGroupsRequest::default();
        g.groups = vec![GroupId(StrBytes::from_static_str("nobody"))];
        g.include_authorized_operations = asked;
        let r: DescribeGroupsResponse = call(&mut s, ApiKey::DescribeGroups, 5, &g);
        assert_eq!(r.groups[0].authorized_operations, if asked { (1 << 3) | (1 << 6) | (1 << 8) } else { i32::MIN }, "DescribeGroups, asked: {asked}");
    }
}

/// connections.max.idle.ms: a connection that sends nothing, or stops in
/// the middle of a frame (slowloris), is closed; one that keeps talking is not.
#[test]
fn idle_and_stalled_connections_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |c| c.broker.connections_max_idle_ms = 400);
    let started = std::time::Instant::now();
    let mut silent = connect(&b);
    let mut stalled = connect(&b);
    stalled.write_all(&100i32.to_be_bytes()).unwrap();
    stalled.write_all(&[0, 18]).unwrap(); // two bytes of a 100-byte frame, then nothing
    let mut busy = connect(&b);
    while started.elapsed() < Duration::from_millis(1200) {
        let r: ApiVersionsResponse = call(&mut busy, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert_eq!(r.error_code, 0, "a connection in use stays open");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed(&mut silent), "the silent connection was closed");
    assert!(closed(&mut stalled), "the stalled frame's connection was closed");
    still_serving(&b);
}

/// max.connections.per.ip: the connection past the limit is closed at once;
/// the others keep working, and a freed place can be taken again.
#[test]
fn connections_past_the_per_ip_limit_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |c| c.broker.max_connections_per_ip = 2);
    let mut first = connect(&b);
    let mut second = connect(&b);
    for s in [&mut first, &mut second] {
        let r: ApiVersionsResponse = call(s, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert_eq!(r.error_code, 0);
    }
    let mut third = connect(&b);
    assert!(closed(&mut third), "a third connection from 127.0.0.1 is refused");
    let r: ApiVersionsResponse = call(&mut second, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0, "the others are unharmed");
    drop(first);
    // The freed place is given back when the broker sees the close.
    assert!(answered_within(&b, Duration::from_secs(10)), "the freed place was never given back");
}

/// Whether a new connection gets an answer to ApiVersions within `limit`
/// (tried again every 50 ms while the broker refuses it).
fn answered_within(b: &TestBroker, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let frame = request_bytes(ApiKey::ApiVersions, 3, 7, &ApiVersionsRequest::default());
    while std::time::Instant::now() < deadline {
        let mut again = connect(b);
        if again.write_all(&frame).is_ok() && read_frame(&mut again).is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A client that sends requests and never reads the answers: once they fill
/// the socket buffers, the broker gives up after connections.max.idle.ms,
/// closes the connection and frees its place (max.connections.per.ip = 1),
/// where it used to keep it, and the responses it held, for ever.
#[test]
fn a_client_that_stops_reading_is_let_go_and_frees_its_place() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |c| {
        c.broker.connections_max_idle_ms = 500;
        c.broker.max_connections_per_ip = 1;
    });
    let mut deaf = connect(&b);
    deaf.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let many = request_bytes(ApiKey::ApiVersions, 3, 7, &ApiVersionsRequest::default()).repeat(2000);
    // Requests until the broker takes no more: its answers fill both socket
    // buffers and its queue of responses.
    let started = std::time::Instant::now();
    while deaf.write_all(&many).is_ok() {
        assert!(started.elapsed() < Duration::from_secs(60), "the broker kept reading a client that never reads");
    }
    assert!(answered_within(&b, Duration::from_secs(15)), "the place of a client that stopped reading was never given back");
    drop(deaf);
}

#[test]
fn only_the_brokers_own_topics_are_internal() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    // A user topic whose name merely starts with "__" is not internal (the
    // Java admin's listTopics() hides internal ones).
    metadata_topic_id(&mut s, "__events");
    let mut all = MetadataRequest::default();
    all.topics = None; // every topic
    let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &all);
    let internal = |name: &str| r.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name)).unwrap_or_else(|| panic!("{name} listed")).is_internal;
    assert!(!internal("__events"));
    assert!(internal("__consumer_offsets"));
    assert!(internal("__transaction_state"));
}

#[test]
fn read_committed_fetches_list_the_aborted_transactions_of_what_they_return() {
    let b = TestBroker::start();
    let mut s = connect(&b);
    let id = metadata_topic_id(&mut s, "aborts");
    let p = b.broker.partition("aborts", 0).unwrap();
    // Five aborted transactions, one after the other, of two batches each
    // (stamped now: a marker's time far past the first batch's would roll
    // the segment, by segment.ms, and reads stop at a segment's end).
    let now = eddy::log::now_ms();
    for pid in 1..=5i64 {
        for seq in [0, 2] {
            p.log.append(&eddy::log::records::with_producer(&crate::log_support::simple_batch(2, 500, now), pid, 0, seq, true)).unwrap();
        }
        p.log.append_marker(pid, 0, false, 0).unwrap();
    }
    assert_eq!(p.log.last_stable_offset(), p.log.log_end_offset());
    let aborted = |s: &mut TcpStream, offset: i64, partition_max_bytes: i32| -> Vec<(i64, i64)> {
        let mut req = fetch_request(id, offset, 0);
        req.isolation_level = 1;
        req.topics[0].partitions[0].partition_max_bytes = partition_max_bytes;
        let r: kafka_protocol::messages::FetchResponse = call(s, ApiKey::Fetch, 13, &req);
        let pd = &r.responses[0].partitions[0];
        assert_eq!(pd.error_code, 0);
        assert!(!pd.records.as_ref().unwrap().is_empty());
        pd.aborted_transactions.as_ref().unwrap().iter().map(|a| (a.producer_id.0, a.first_offset)).collect()
    };
    // One batch returned (the first is sent whatever the limit): only its transaction.
    assert_eq!(aborted(&mut s, 0, 1), vec![(1, 0)]);
    // From the third transaction on, everything: the last three.
    assert_eq!(aborted(&mut s, 10, 1 << 20), vec![(3, 10), (4, 15), (5, 20)]);
    // Everything from the start: all five.
    assert_eq!(aborted(&mut s, 0, 1 << 20).len(), 5);
}
