//! The broker driven by an unmodified Kafka client: librdkafka (built from
//! source by the `rdkafka` crate) against a real Eddy server on loopback.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker_support::TestBroker;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn client_config(b: &TestBroker, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap()).set("broker.address.family", "v4").set("log_level", "3");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

fn admin(b: &TestBroker) -> AdminClient<DefaultClientContext> {
    client_config(b, &[]).create().unwrap()
}

fn producer(b: &TestBroker, extra: &[(&str, &str)]) -> FutureProducer {
    client_config(b, &[("linger.ms", "5"), ("message.timeout.ms", "30000")]).set_all(extra).create().unwrap()
}

trait SetAll {
    fn set_all(&mut self, kv: &[(&str, &str)]) -> &mut Self;
}
impl SetAll for ClientConfig {
    fn set_all(&mut self, kv: &[(&str, &str)]) -> &mut Self {
        for (k, v) in kv {
            self.set(*k, *v);
        }
        self
    }
}

fn create_topic(b: &TestBroker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let rt = runtime();
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = rt.block_on(admin(b).create_topics(&[t], &AdminOptions::new())).unwrap();
    assert!(res[0].is_ok(), "create {name}: {:?}", res[0]);
}

/// Reads `count` messages from every partition of `topic`, from the start.
fn consume(b: &TestBroker, topic: &str, partitions: i32, count: usize) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client_config(b, &[("group.id", "eddy-tests"), ("enable.auto.commit", "false"), ("enable.auto.offset.store", "false"), ("fetch.wait.max.ms", "100")]).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        assert!(Instant::now() < deadline, "consumed only {} of {count} from {topic}", out.len());
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => {}
        }
    }
    // Nothing more than expected arrives.
    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(300)) {
        panic!("unexpected extra message at {}:{}", m.partition(), m.offset());
    }
    out
}

#[test]
fn ten_thousand_keyed_records_with_headers_round_trip() {
    let b = TestBroker::start();
    create_topic(&b, "events", 4, &[]);
    let rt = runtime();
    let p = producer(&b, &[("acks", "all")]);
    let keys: Vec<String> = (0..10_000).map(|i| format!("key-{}", i % 97)).collect();
    let values: Vec<String> = (0..10_000).map(|i| format!("value-{i}-{}", "x".repeat(i % 50))).collect();
    let seqs: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    let records: Vec<FutureRecord<'_, str, str>> = (0..10_000)
        .map(|i| {
            let headers = OwnedHeaders::new().insert(Header { key: "seq", value: Some(&seqs[i]) }).insert(Header { key: "empty", value: None::<&[u8]> });
            FutureRecord::to("events").key(keys[i].as_str()).payload(values[i].as_str()).headers(headers)
        })
        .collect();
    let delivered = rt.block_on(send_all(&p, records));
    let msgs = consume(&b, "events", 4, 10_000);
    let mut seen = vec![false; 10_000];
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    for m in &msgs {
        let seq: usize = std::str::from_utf8(m.headers().unwrap().get(0).value.unwrap()).unwrap().parse().unwrap();
        assert!(!seen[seq], "record {seq} twice");
        seen[seq] = true;
        assert_eq!(m.key().unwrap(), format!("key-{}", seq % 97).as_bytes());
        assert_eq!(m.payload().unwrap(), format!("value-{seq}-{}", "x".repeat(seq % 50)).as_bytes());
        assert_eq!(m.headers().unwrap().get(1).value, None, "null header value");
        assert_eq!((m.partition(), m.offset()), delivered[seq], "record {seq} at its acknowledged place");
        let prev = last_offset.insert(m.partition(), m.offset());
        assert!(prev.is_none_or(|p| p < m.offset()), "order within partition {}", m.partition());
    }
    // Same key, same partition.
    let mut by_key: HashMap<usize, i32> = HashMap::new();
    for (i, (part, _)) in delivered.iter().enumerate() {
        assert_eq!(*by_key.entry(i % 97).or_insert(*part), *part);
    }
    assert!(last_offset.len() > 1, "records spread over partitions");
}

/// Enqueues every record at once (librdkafka batches them), then waits for
/// each delivery report in order.
async fn send_all(p: &FutureProducer, records: Vec<FutureRecord<'_, str, str>>) -> Vec<(i32, i64)> {
    let futures: Vec<_> = records.into_iter().map(|r| p.send_result(r).map_err(|(e, _)| e).expect("enqueued")).collect();
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        let d = f.await.expect("delivery report").map_err(|(e, _)| e).expect("delivered");
        out.push((d.partition, d.offset));
    }
    out
}

#[test]
fn every_codec_is_stored_as_sent_and_reads_back() {
    let b = TestBroker::start();
    let rt = runtime();
    for (codec, id) in [("none", 0u8), ("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
        let topic = format!("codec-{codec}");
        create_topic(&b, &topic, 1, &[]);
        let p = producer(&b, &[("compression.codec", codec), ("linger.ms", "50")]);
        let values: Vec<String> = (0..500).map(|i| format!("{codec} record {i} {}", "abc".repeat(20))).collect();
        let records = values.iter().map(|v| FutureRecord::to(&topic).key("k").payload(v.as_str())).collect();
        rt.block_on(send_all(&p, records));
        let msgs = consume(&b, &topic, 1, 500);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.payload().unwrap(), format!("{codec} record {i} {}", "abc".repeat(20)).as_bytes());
        }
        // The segment holds the producer's own batches: compressed with its
        // codec (librdkafka sends a batch uncompressed when compressing does
        // not make it smaller, so not necessarily every one).
        let seg = std::fs::read(b.data_dir.join(format!("{topic}-0")).join("00000000000000000000.log")).unwrap();
        let mut codecs = Vec::new();
        let mut pos = 0;
        while pos + 61 <= seg.len() {
            codecs.push((i16::from_be_bytes([seg[pos + 21], seg[pos + 22]]) & 7) as u8);
            pos += 12 + i32::from_be_bytes(seg[pos + 8..pos + 12].try_into().unwrap()) as usize;
        }
        // librdkafka uses LZ4 only with brokers that advertise FindCoordinator
        // (its proxy for Kafka ≥ 0.10, rdkafka_feature.c); until consumer
        // groups exist it falls back to uncompressed batches.
        let lz4_possible = eddy::protocol::served_range(kafka_protocol::messages::ApiKey::FindCoordinator).is_some();
        if codec != "lz4" || lz4_possible {
            assert!(codecs.contains(&id), "{codec}: stored codecs {codecs:?}");
        }
        assert!(codecs.iter().all(|&c| c == id || c == 0), "{codec}: stored codecs {codecs:?}");
    }
}

#[test]
fn acks_zero_one_and_all() {
    let b = TestBroker::start();
    let rt = runtime();
    for acks in ["0", "1", "all"] {
        let topic = format!("acks-{acks}");
        create_topic(&b, &topic, 2, &[]);
        let p = producer(&b, &[("acks", acks)]);
        rt.block_on(async {
            for i in 0..200 {
                let v = format!("{acks}-{i}");
                let d = p.send(FutureRecord::to(&topic).key(&v).payload(&v), Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
                if acks != "0" {
                    assert!(d.offset >= 0);
                }
            }
        });
        assert_eq!(consume(&b, &topic, 2, 200).len(), 200);
    }
}

#[test]
fn records_up_to_max_message_bytes_and_one_past_it() {
    let b = TestBroker::start();
    create_topic(&b, "big", 1, &[("max.message.bytes", "200000")]);
    let rt = runtime();
    let p = producer(&b, &[("message.max.bytes", "5000000"), ("compression.codec", "none"), ("linger.ms", "0")]);
    let fits = vec![b'a'; 199_800];
    let too_big = vec![b'b'; 200_001];
    rt.block_on(async {
        p.send(FutureRecord::to("big").key("k").payload(&fits), Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        let err = p.send(FutureRecord::to("big").key("k").payload(&too_big), Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap_err();
        assert_eq!(err, KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), "{err}");
    });
    let msgs = consume(&b, "big", 1, 1);
    assert_eq!(msgs[0].payload().unwrap().len(), 199_800);
}

#[test]
fn list_offsets_by_time_looks_inside_batches() {
    let b = TestBroker::start();
    create_topic(&b, "timed", 1, &[]);
    let rt = runtime();
    let p = producer(&b, &[("linger.ms", "100")]);
    let records = [1_000i64, 3_000, 2_000, 5_000].iter().map(|&ts| FutureRecord::to("timed").key("k").payload("v").timestamp(ts)).collect();
    rt.block_on(send_all(&p, records));
    let consumer: BaseConsumer = client_config(&b, &[]).create().unwrap();
    assert_eq!(consumer.fetch_watermarks("timed", 0, Duration::from_secs(10)).unwrap(), (0, 4));
    let lookup = |ts: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("timed", 0, Offset::Offset(ts)).unwrap();
        let r = consumer.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
        r.find_partition("timed", 0).unwrap().offset()
    };
    assert_eq!(lookup(0), Offset::Offset(0));
    assert_eq!(lookup(2_500), Offset::Offset(1), "first record with timestamp ≥ 2500 is the 3000 one");
    assert_eq!(lookup(2_000), Offset::Offset(1));
    assert_eq!(lookup(4_000), Offset::Offset(3));
    assert_eq!(lookup(6_000), Offset::End, "no record that late");
}

#[test]
fn admin_create_validate_and_delete_topics() {
    let b = TestBroker::start();
    let rt = runtime();
    let a = admin(&b);
    let opts = AdminOptions::new();
    let res = rt
        .block_on(a.create_topics(
            &[
                NewTopic::new("good", 3, TopicReplication::Fixed(1)).set("retention.ms", "3600000"),
                NewTopic::new("bad name!", 1, TopicReplication::Fixed(1)),
                NewTopic::new("unknown-config", 1, TopicReplication::Fixed(1)).set("no.such.config", "1"),
                NewTopic::new("bad-value", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon"),
                NewTopic::new("three-replicas", 1, TopicReplication::Fixed(3)),
            ],
            &opts,
        ))
        .unwrap();
    assert!(res[0].is_ok(), "{:?}", res[0]);
    assert_eq!(res[1].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidTopic);
    assert_eq!(res[2].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidConfig);
    assert_eq!(res[3].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidConfig);
    assert_eq!(res[4].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidReplicationFactor);
    let again = rt.block_on(a.create_topics(&[NewTopic::new("good", 3, TopicReplication::Fixed(1))], &opts)).unwrap();
    assert_eq!(again[0].as_ref().unwrap_err().1, RDKafkaErrorCode::TopicAlreadyExists);

    let validate = AdminOptions::new().validate_only(true);
    let v = rt.block_on(a.create_topics(&[NewTopic::new("only-validated", 2, TopicReplication::Fixed(1))], &validate)).unwrap();
    assert!(v[0].is_ok());

    let consumer: BaseConsumer = client_config(&b, &[("allow.auto.create.topics", "false")]).create().unwrap();
    let md = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let names: Vec<&str> = md.topics().iter().map(|t| t.name()).filter(|n| !n.starts_with("__")).collect();
    assert_eq!(names, vec!["good"], "validate-only and failed creations leave nothing");
    assert_eq!(md.topics().iter().find(|t| t.name() == "good").unwrap().partitions().len(), 3);
    assert_eq!(md.brokers().len(), 1);

    let del = rt.block_on(a.delete_topics(&["good", "never-was"], &opts)).unwrap();
    assert!(del[0].is_ok());
    assert_eq!(del[1].as_ref().unwrap_err().1, RDKafkaErrorCode::UnknownTopicOrPartition);
    let md = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    assert!(md.topics().iter().all(|t| t.name().starts_with("__")), "only the internal offsets topic is left");
    assert!(!b.data_dir.join("good-0").exists(), "partition data removed");
}

#[test]
fn unknown_topics_are_created_on_first_use() {
    let b = TestBroker::start();
    let rt = runtime();
    let p = producer(&b, &[]);
    rt.block_on(async {
        p.send(FutureRecord::to("made-on-demand").key("k").payload("hello"), Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    });
    let msgs = consume(&b, "made-on-demand", 1, 1);
    assert_eq!(msgs[0].payload().unwrap(), b"hello");
}

#[test]
fn a_restarted_broker_serves_the_same_data() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    create_topic(&b, "durable", 2, &[("retention.ms", "-1")]);
    let rt = runtime();
    let p = producer(&b, &[("acks", "all")]);
    rt.block_on(async {
        for i in 0..1000 {
            let v = format!("r{i}");
            p.send(FutureRecord::to("durable").key(&v).payload(&v), Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        }
    });
    drop(p);
    b.stop();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let msgs = consume(&b, "durable", 2, 1000);
    let mut values: Vec<String> = msgs.iter().map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap()).collect();
    values.sort();
    let mut want: Vec<String> = (0..1000).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(values, want);
    // More can be written after the restart, after the old offsets.
    let p = producer(&b, &[]);
    let d = rt.block_on(p.send(FutureRecord::to("durable").key("r0").payload("after"), Duration::from_secs(30))).map_err(|(e, _)| e).unwrap();
    assert!(d.offset > 0);
}

/// Produces `n` records of 200 bytes to `topic` with acks=all and consumes
/// them all back; how long that took.
fn round_trip(b: &TestBroker, topic: &str, n: usize) -> Duration {
    let started = Instant::now();
    create_topic(b, topic, 2, &[]);
    let p = producer(b, &[("acks", "all")]);
    let value = "v".repeat(200);
    let records: Vec<FutureRecord<'_, str, str>> = (0..n).map(|_| FutureRecord::to(topic).payload(value.as_str())).collect();
    assert_eq!(runtime().block_on(send_all(&p, records)).len(), n);
    assert_eq!(consume(b, topic, 2, n).len(), n);
    started.elapsed()
}

/// Hostile raw sockets while a librdkafka client works: 64 slowloris
/// connections dribbling a frame a byte at a time, and two threads opening
/// connection after connection with oversized, truncated, garbage and
/// huge-array frames. The client's round trip must stay close to its speed
/// without them (a generous bound: this catches a stall, not a few percent).
#[test]
fn a_client_is_served_at_speed_while_raw_sockets_attack() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let b = TestBroker::start();
    let quiet = round_trip(&b, "quiet", 20_000);

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    let addr = b.addr;
    for _ in 0..64 {
        let stop = Arc::clone(&stop);
        attackers.push(std::thread::spawn(move || {
            let Ok(mut s) = std::net::TcpStream::connect(addr) else { return };
            let _ = s.write_all(&100_000i32.to_be_bytes());
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(&[0]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    let bad_frames: Vec<Vec<u8>> = vec![
        i32::MAX.to_be_bytes().to_vec(),
        [&200i32.to_be_bytes()[..], &[1, 2, 3]].concat(),
        (0..512u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(),
        // Metadata v0 declaring i32::MAX topics.
        [&17i32.to_be_bytes()[..], &[0, 3, 0, 0, 0, 0, 0, 1, 0, 1, b'x'], &i32::MAX.to_be_bytes(), &[0, 1]].concat(),
    ];
    for _ in 0..2 {
        let (stop, refused, frames) = (Arc::clone(&stop), Arc::clone(&refused), bad_frames.clone());
        attackers.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = std::net::TcpStream::connect(addr) else { continue };
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = s.write_all(&frames[i % frames.len()]);
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut sink = [0u8; 64];
                if matches!(s.read(&mut sink), Ok(0) | Err(_)) {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    let attacked = round_trip(&b, "attacked", 20_000);
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    assert!(refused.load(Ordering::Relaxed) > 50, "the bad frames were sent and refused ({} times)", refused.load(Ordering::Relaxed));
    assert!(attacked < quiet * 4 + Duration::from_secs(3), "20 000 records took {attacked:?} under attack, {quiet:?} without");
    eprintln!("round trip of 20 000 records: {quiet:?} quiet, {attacked:?} under attack");
}
