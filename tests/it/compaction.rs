//! Compacted topics through the broker: the cleaner thread runs while
//! librdkafka produces and reads; keyless records are refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker_support::TestBroker;

const KEYS: u64 = 200;

fn client(b: &TestBroker) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap()).set("broker.address.family", "v4").set("log_level", "3");
    c
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn create_compacted(b: &TestBroker, name: &str) {
    let admin: AdminClient<DefaultClientContext> = client(b).create().unwrap();
    let t = NewTopic::new(name, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "16384")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", "0");
    let r = rt().block_on(admin.create_topics(&[t], &AdminOptions::new())).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
}

/// Reads the partition from the beginning until it has passed `end` and
/// caught up with the log end: (offset, key, value). Records below `end`
/// may have been compacted away meanwhile, so reading stops at an end of
/// partition, not at `end` itself.
fn read_to(b: &TestBroker, topic: &str, end: i64) -> Vec<(i64, String, Option<String>)> {
    let consumer: BaseConsumer = client(b)
        .set("group.id", "compaction-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = 0i64;
    loop {
        assert!(Instant::now() < deadline, "read stalled at offset {next} (end {end})");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = match m {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(_)) if next >= end => break,
            Err(KafkaError::PartitionEOF(_)) => continue,
            Err(e) => panic!("read failed: {e}"),
        };
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        let value = m.payload().map(|p| String::from_utf8(p.to_vec()).unwrap());
        out.push((m.offset(), key, value));
        next = m.offset() + 1;
    }
    out
}

#[test]
fn a_compacted_topic_is_cleaned_while_a_client_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| c.broker.log_cleaner_backoff_ms = 50);
    b.keep_dir(tmp);
    create_compacted(&b, "table");
    let producer: FutureProducer = client(&b).set("linger.ms", "5").create().unwrap();
    let round = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // The writer: round after round of every key, the last round's value
    // recorded once the whole round is acknowledged.
    let writer = {
        let (round, done) = (Arc::clone(&round), Arc::clone(&done));
        std::thread::spawn(move || {
            let rt = rt();
            let mut r = 1;
            while !done.load(Ordering::Acquire) && r <= 300 {
                let value = format!("round-{r}-{}", "x".repeat(100));
                let sends: Vec<_> = (0..KEYS)
                    .map(|k| {
                        let key = format!("key-{k}");
                        producer.send_result(FutureRecord::to("table").key(&key).payload(&value)).unwrap()
                    })
                    .collect();
                for s in sends {
                    rt.block_on(s).unwrap().unwrap();
                }
                round.store(r, Ordering::Release);
                r += 1;
            }
        })
    };
    let started = Instant::now();
    let mut passes = 0;
    loop {
        let complete = round.load(Ordering::Acquire);
        let end = b.log_end("table", 0);
        let records = read_to(&b, "table", end);
        // Offsets strictly increase and every key ends with a value at least
        // as new as the last round acknowledged before this read began.
        let mut latest: HashMap<String, u64> = HashMap::new();
        let mut prev = -1;
        for (o, k, v) in &records {
            assert!(*o > prev, "offsets go backwards: {prev} then {o}");
            prev = *o;
            let r: u64 = v.as_ref().unwrap().split('-').nth(1).unwrap().parse().unwrap();
            latest.insert(k.clone(), r);
        }
        if complete > 0 {
            for k in 0..KEYS {
                let got = latest.get(&format!("key-{k}")).copied();
                assert!(got.is_some_and(|r| r >= complete), "key-{k}: read {got:?}, round {complete} was acknowledged");
            }
        }
        passes += 1;
        let cleans = b.broker.logs.cleaner_totals().unwrap().cleans.load(Ordering::Relaxed);
        if (cleans >= 3 && passes >= 3) || started.elapsed() > Duration::from_secs(150) {
            done.store(true, Ordering::Release);
            break;
        }
    }
    writer.join().unwrap();
    let totals = b.broker.logs.cleaner_totals().unwrap();
    let cleans = totals.cleans.load(Ordering::Relaxed);
    assert!(cleans >= 3, "the cleaner ran {cleans} times");
    assert!(totals.records_removed.load(Ordering::Relaxed) > KEYS, "superseded records were removed");

    // Once the writer stopped and the cleaner caught up, a full read holds
    // each key once, with the last round's value.
    let log = b.broker.partition("table", 0).unwrap().log.clone();
    log.roll().unwrap();
    let last = round.load(Ordering::Acquire);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = totals.cleans.load(Ordering::Relaxed);
        b.broker.logs.wake_cleaner();
        while totals.cleans.load(Ordering::Relaxed) == before {
            assert!(Instant::now() < deadline, "no clean after the roll");
            std::thread::sleep(Duration::from_millis(20));
        }
        let records = read_to(&b, "table", b.log_end("table", 0));
        if records.len() as u64 == KEYS {
            assert!(records.iter().all(|(_, _, v)| v.as_ref().unwrap().starts_with(&format!("round-{last}-"))), "every key holds the last round");
            break;
        }
        assert!(Instant::now() < deadline, "{} records left after the final cleans, not one per key", records.len());
    }
}

#[test]
fn keyless_records_to_a_compacted_topic_are_invalid() {
    let b = TestBroker::start();
    create_compacted(&b, "keyed-only");
    let producer: FutureProducer = client(&b).set("message.timeout.ms", "5000").set("retries", "0").create().unwrap();
    let rt = rt();
    let r = rt.block_on(producer.send(FutureRecord::<str, str>::to("keyed-only").payload("no key"), Duration::from_secs(10)));
    match r {
        Err((KafkaError::MessageProduction(code), _)) => assert_eq!(code, RDKafkaErrorCode::InvalidRecord),
        other => panic!("expected INVALID_RECORD, got {other:?}"),
    }
    let ok = rt.block_on(producer.send(FutureRecord::to("keyed-only").key("k").payload("v"), Duration::from_secs(10)));
    assert!(ok.is_ok(), "{ok:?}");
}
