//! Processors inside the broker, driven by librdkafka: JSON records in,
//! windowed aggregates out on a compacted topic any client reads, bad and
//! late records dead-lettered with their headers, state resumed across
//! restarts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::broker_support::TestBroker;

pub(crate) fn client(b: &TestBroker) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap()).set("broker.address.family", "v4").set("log_level", "3");
    c
}

pub(crate) fn create(b: &TestBroker, name: &str, partitions: i32) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin: AdminClient<DefaultClientContext> = client(b).create().unwrap();
    let r = rt.block_on(admin.create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
}

pub(crate) fn produce(b: &TestBroker, topic: &str, records: &[(Option<&str>, String)]) {
    let p: BaseProducer = client(b).set("linger.ms", "5").create().unwrap();
    for (k, v) in records {
        let mut r = BaseRecord::<str, str>::to(topic).payload(v);
        if let Some(k) = k {
            r = r.key(k);
        }
        p.send(r).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// A consumed record: key, value (None for a tombstone), headers.
pub(crate) type Got = (Vec<u8>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// Reads `topic` from the beginning until `enough` says so (or 30 s pass).
pub(crate) fn consume_until(b: &TestBroker, topic: &str, mut enough: impl FnMut(&[Got]) -> bool) -> Vec<Got> {
    let c: BaseConsumer = client(b).set("group.id", format!("read-{topic}")).set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The output topic appears once the processor has started.
    loop {
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
        let parts = md.topics()[0].partitions().len();
        if parts > 0 {
            for p in 0..parts as i32 {
                tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
            }
            break;
        }
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while !enough(&out) {
        assert!(Instant::now() < deadline, "{topic}: only {} records within 30 s", out.len());
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let headers = m.headers().map(|h| h.iter().map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec())).collect()).unwrap_or_default();
            out.push((m.key().map(<[u8]>::to_vec).unwrap_or_default(), m.payload().map(<[u8]>::to_vec), headers));
        }
    }
    out
}

pub(crate) fn processor(config: &mut eddy::config::Config, name: &str, toml_text: &str) {
    let table: toml::Value = toml::from_str(toml_text).unwrap();
    config.processors.insert(name.to_string(), eddy::processor::config::parse(name, &table).unwrap());
}

const CLICKS: &str = r#"
    commit_interval = "100ms"
    [source]
    topics = ["clicks"]
    [key]
    fields = ["user"]
    on_missing = "dead_letter"
    [time]
    field = "ts"
    [window]
    type = "tumbling"
    size = "1s"
    grace = "0s"
    [aggregates]
    clicks = { fn = "count" }
    spent = { fn = "sum", field = "amount" }
    [output]
    topic = "clicks-per-second"
    emit = "final"
    [late]
    action = "dead_letter"
    topic = "clicks-dead"
"#;

fn click(user: &str, ts: i64, amount: i64) -> String {
    json!({ "user": user, "ts": ts, "amount": amount }).to_string()
}

/// Final windows as (user, start) → (clicks, spent), from the output records.
fn windows(got: &[Got]) -> BTreeMap<(String, i64), (i64, i64)> {
    let mut m = BTreeMap::new();
    for (k, v, _) in got {
        let k: Value = serde_json::from_slice(k).unwrap();
        let v: Value = serde_json::from_slice(v.as_ref().unwrap()).unwrap();
        assert_eq!(v["window_start"], k["start"]);
        assert_eq!(v["window_end"].as_i64().unwrap() - v["window_start"].as_i64().unwrap(), 1000);
        let id = (k["key"].as_str().unwrap().to_string(), k["start"].as_i64().unwrap());
        assert!(m.insert(id.clone(), (v["clicks"].as_i64().unwrap(), v["spent"].as_i64().unwrap())).is_none(), "window {id:?} emitted twice");
    }
    m
}

#[test]
fn a_tumbling_processor_materializes_final_windows_and_dead_letters_bad_and_late_records() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "clicks", CLICKS));
    b.keep_dir(tmp);
    create(&b, "clicks", 1);
    let mut records: Vec<(Option<&str>, String)> = vec![
        (None, click("ann", 1_000, 5)),
        (None, click("bob", 1_200, 7)),
        (None, click("ann", 1_999, 1)),
        (None, click("ann", 2_000, 10)), // the next window
        (None, click("bob", 3_500, 2)),
        (None, click("ann", 1_500, 100)), // late: W is 3500 and its window ended at 2000
        (None, r#"{"ts": 2100, "amount": 3}"#.to_string()), // no user: dead-lettered
        (None, "not json".to_string()),
    ];
    records.push((None, click("cid", 5_000, 0))); // closes everything before 5000
    produce(&b, "clicks", &records);
    let got = consume_until(&b, "clicks-per-second", |g| g.len() >= 4);
    let expected: BTreeMap<(String, i64), (i64, i64)> =
        [(("ann".into(), 1000), (2, 6)), (("bob".into(), 1000), (1, 7)), (("ann".into(), 2000), (1, 10)), (("bob".into(), 3000), (1, 2))].into();
    assert_eq!(windows(&got), expected);

    let dead = consume_until(&b, "clicks-dead", |g| g.len() >= 3);
    let reasons: Vec<String> = dead.iter().map(|(_, _, h)| String::from_utf8(h.iter().find(|x| x.0 == "reason").unwrap().1.clone()).unwrap()).collect();
    // In source order, though the late record is found after the bad ones
    // are (the engine reports it when the round's output is collected).
    assert_eq!(reasons, vec!["late", "missing_key", "unparseable"]);
    let late = &dead[0].2;
    let header = |name: &str| String::from_utf8(late.iter().find(|x| x.0 == name).unwrap_or_else(|| panic!("{name} header")).1.clone()).unwrap();
    assert_eq!((header("source.topic").as_str(), header("source.partition").as_str(), header("source.offset").as_str()), ("clicks", "0", "5"));
    assert_eq!((header("event.time").as_str(), header("watermark").as_str()), ("1500", "3500"));
    assert_eq!(dead[0].1.as_deref(), Some(click("ann", 1_500, 100).as_bytes()), "the original value");

    let (_, stats) = b.broker.processor_stats().into_iter().next().unwrap();
    assert_eq!(stats.late.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(stats.bad_total(), 2);
    let text = crate::http::http(b.http_addr, "GET", "/metrics").1;
    for (reason, n) in [("missing_key", 1.0), ("unparseable", 1.0), ("bad_time", 0.0)] {
        assert_eq!(crate::http::sample(&text, "eddy_processor_records_bad_total", &[("processor", "clicks"), ("reason", reason)]), Some(n), "{reason}");
    }

    // A restart resumes from the checkpoint: no window is emitted twice, and
    // the open window of cid continues.
    let tmp = b.stop().unwrap();
    b = TestBroker::start_in(tmp.path(), |c| processor(c, "clicks", CLICKS));
    b.keep_dir(tmp);
    produce(&b, "clicks", &[(None, click("cid", 5_100, 4)), (None, click("dan", 7_000, 1))]);
    let got = consume_until(&b, "clicks-per-second", |g| g.len() >= 5);
    std::thread::sleep(Duration::from_millis(500));
    let got_more = consume_until(&b, "clicks-per-second", |g| g.len() >= got.len());
    let w = windows(&got_more);
    assert_eq!(w.len(), 5, "{w:?}");
    assert_eq!(w[&("cid".to_string(), 5000)], (2, 4), "the window open at the restart kept its first record");

    // Settings that do not shape the state (commit and flush intervals,
    // threads, where a fresh start begins) keep the checkpoint: nothing is
    // read again, so no window is emitted twice.
    let tmp = b.stop().unwrap();
    let changed = CLICKS.replace(r#"commit_interval = "100ms""#, "commit_interval = \"250ms\"\n    threads = 2").replace(r#"emit = "final""#, "emit = \"final\"\n    flush_interval = \"50ms\"");
    assert_ne!(changed, CLICKS);
    b = TestBroker::start_in(tmp.path(), |c| processor(c, "clicks", &changed));
    b.keep_dir(tmp);
    produce(&b, "clicks", &[(None, click("eve", 9_000, 1))]);
    let got = consume_until(&b, "clicks-per-second", |g| g.len() >= 6);
    std::thread::sleep(Duration::from_millis(500));
    let got_more = consume_until(&b, "clicks-per-second", |g| g.len() >= got.len());
    let w = windows(&got_more);
    assert_eq!(w.len(), 6, "{w:?}");
    assert_eq!(w[&("dan".to_string(), 7000)], (1, 1));
}

const IDLE: &str = r#"
    commit_interval = "100ms"
    [source]
    topics = ["two"]
    [key]
    fields = ["user"]
    [time]
    field = "ts"
    idle_timeout = "IDLE"
    idle_advance = ADVANCE
    [window]
    type = "tumbling"
    size = "1s"
    grace = "0s"
    [aggregates]
    clicks = { fn = "count" }
    spent = { fn = "sum", field = "amount" }
    [output]
    topic = "OUT"
    emit = "final"
"#;

/// Produces to one partition of a two-partition topic.
fn produce_to(b: &TestBroker, topic: &str, partition: i32, values: &[String]) {
    let p: BaseProducer = client(b).create().unwrap();
    for v in values {
        p.send(BaseRecord::<str, str>::to(topic).partition(partition).payload(v)).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn an_idle_partition_stops_holding_the_watermark_back() {
    let text = IDLE.replace("IDLE", "1s").replace("ADVANCE", "false").replace("OUT", "idle-out");
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "idle", &text));
    b.keep_dir(tmp);
    create(&b, "two", 2);
    // Partition 1 never gets a record: for its first second it holds the
    // watermark back (nothing final), then it is idle and partition 0 alone
    // sets it.
    let started = Instant::now();
    produce_to(&b, "two", 0, &[click("ann", 1_000, 1), click("ann", 2_500, 2)]);
    let got = consume_until(&b, "idle-out", |g| !g.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900), "a window was final before the idle timeout: {:?}", started.elapsed());
    assert_eq!(windows(&got), [(("ann".to_string(), 1000), (1, 1))].into());
}

#[test]
fn idle_advance_lets_the_wall_clock_close_windows() {
    let text = IDLE.replace("IDLE", "300ms").replace("ADVANCE", "true").replace("OUT", "advance-out");
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "advance", &text));
    b.keep_dir(tmp);
    create(&b, "two", 2);
    // One record stamped now, then silence: without idle_advance its window
    // would never close; with it, the watermark follows the clock.
    let now = eddy::log::now_ms();
    produce_to(&b, "two", 0, &[click("bob", now, 5)]);
    let got = consume_until(&b, "advance-out", |g| !g.is_empty());
    let w = windows(&got);
    assert_eq!(w.len(), 1);
    assert_eq!(w.values().next(), Some(&(1, 5)));
}

/// Reads every record of a topic partition a read_committed consumer sees
/// (until idle).
fn read_committed_values(b: &TestBroker, topic: &str, partitions: i32) -> Vec<Vec<u8>> {
    let c: BaseConsumer = client(b).set("group.id", "committed-reader").set("isolation.level", "read_committed").set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            out.push(m.unwrap().payload().unwrap_or_default().to_vec());
            idle_since = Instant::now();
        }
    }
    out
}

#[test]
fn exactly_once_restart_aborts_output_written_after_the_checkpoint() {
    // Commits only at start and stop: the stop's checkpoint commits the
    // output written before it.
    let text = CLICKS.replace("commit_interval = \"100ms\"", "commit_interval = \"1h\"\n    guarantee = \"exactly_once\"");
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "clicks", &text));
    b.keep_dir(tmp);
    create(&b, "clicks", 1);
    produce(&b, "clicks", &[(None, click("ann", 1_000, 5)), (None, click("bob", 2_500, 7))]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.broker.processor_stats().first().is_none_or(|(_, s)| s.records_out.load(std::sync::atomic::Ordering::Relaxed) < 1) {
        assert!(Instant::now() < deadline, "no output");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tmp = b.stop().unwrap();
    // The stop's checkpoint commits the last output; now write what a run
    // killed after that checkpoint would have left: an open transaction of
    // the same producer on the same output partition.
    // The newest checkpoint record: the stop's delta record after the base.
    let (loaded, _) = eddy::processor::checkpoint::load(&tmp.path().join("processors/clicks.checkpoint"));
    let eddy::processor::checkpoint::Loaded::Usable(ck) = loaded else { panic!("{loaded:?}") };
    let txn = ck.txn.expect("an exactly-once checkpoint has a txn");
    let pid = txn.producer_id;
    assert_eq!(txn.committing.len(), 1, "the stop committed the output partition: {txn:?}");
    append_ghost_transaction(tmp.path(), pid);
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "clicks", &text));
    b.keep_dir(tmp);
    let seen = read_committed_values(&b, "clicks-per-second", 1);
    assert!(seen.iter().all(|v| v != GHOST), "the transaction written after the checkpoint was committed");
    assert_eq!(seen.len(), 1, "ann's window, once");
}

const GHOST: &[u8] = b"{\"ghost\":true}";

/// The producer's state on the output partition, the broker stopped:
/// (epoch, last sequence, first offset of its open transaction or -1).
fn output_producer(dir: &std::path::Path, producer_id: i64) -> (i16, i32, i64) {
    let mgr = eddy::log::LogManager::open(dir, eddy::log::LogConfig::default()).unwrap();
    let log = mgr.get("clicks-per-second", 0).unwrap();
    let (_, epoch, last_seq, _, open) = log.producers().into_iter().find(|p| p.0 == producer_id).expect("the processor's producer");
    (epoch, last_seq, open)
}

/// What a run killed after its last checkpoint would leave, written with
/// the broker stopped: an open transaction of the processor's producer on
/// the output partition.
fn append_ghost_transaction(dir: &std::path::Path, producer_id: i64) {
    let (epoch, last_seq, open) = output_producer(dir, producer_id);
    assert_eq!(open, -1, "nothing open after a clean stop");
    let mgr = eddy::log::LogManager::open(dir, eddy::log::LogConfig::default()).unwrap();
    let log = mgr.get("clicks-per-second", 0).unwrap();
    let rec = [eddy::log::records::NewRecord { key: Some(b"{\"key\":\"ghost\",\"start\":0,\"end\":1000}"), value: Some(GHOST), timestamp: 1, headers: &[] }];
    let batch = eddy::log::records::with_producer(&eddy::log::records::build_batch(&rec), producer_id, epoch, last_seq + 1, true);
    log.append(&batch).unwrap();
    log.sync_to(log.log_end_offset()).unwrap();
    // Dropped without a shutdown: as after a crash.
}

/// Waits until the running processor has written `n` records.
fn wait_for_output(b: &TestBroker, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.broker.processor_stats().first().is_none_or(|(_, s)| s.records_out.load(std::sync::atomic::Ordering::Relaxed) < n) {
        assert!(Instant::now() < deadline, "fewer than {n} output records");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exactly_once_restart_settles_the_transaction_of_a_delta_checkpoint() {
    // A state of 301 windows, then a run that changes one: its stop's
    // checkpoint is a delta record after the start's base, and that record
    // must carry the transaction it commits.
    let text = CLICKS.replace("commit_interval = \"100ms\"", "commit_interval = \"1h\"\n    guarantee = \"exactly_once\"").replace("emit = \"final\"", "emit = \"changes\"\n    flush_interval = \"50ms\"");
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "clicks", &text));
    b.keep_dir(tmp);
    create(&b, "clicks", 1);
    let many: Vec<(Option<&str>, String)> = (0..300).map(|i| (None, click(&format!("user-{i}"), 1_000 + i, 1))).chain([(None, click("ann", 1_000, 5))]).collect();
    produce(&b, "clicks", &many);
    wait_for_output(&b, 301);
    let tmp = b.stop().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "clicks", &text));
    b.keep_dir(tmp);
    produce(&b, "clicks", &[(None, click("ann", 1_500, 7))]);
    wait_for_output(&b, 1);
    let tmp = b.stop().unwrap();
    let path = tmp.path().join("processors/clicks.checkpoint");
    assert!(std::fs::metadata(eddy::processor::checkpoint::delta_path(&path)).unwrap().len() > 18, "the stop's checkpoint is a delta record");
    let (loaded, _) = eddy::processor::checkpoint::load(&path);
    let eddy::processor::checkpoint::Loaded::Usable(ck) = loaded else { panic!("{loaded:?}") };
    let txn = ck.txn.expect("the delta record's transaction");
    assert_eq!(txn.committing.len(), 1, "{txn:?}");
    append_ghost_transaction(tmp.path(), txn.producer_id);
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "clicks", &text));
    b.keep_dir(tmp);
    let seen = read_committed_values(&b, "clicks-per-second", 1);
    assert!(seen.iter().all(|v| v != GHOST), "the transaction written after the checkpoint was committed");
    assert_eq!(seen.len(), 302, "301 windows, then ann's again");
    let last: Value = serde_json::from_slice(seen.last().unwrap()).unwrap();
    assert_eq!((last["clicks"].as_i64(), last["spent"].as_i64()), (Some(2), Some(12)), "{last}");
    // Aborted, not left open (which would hold back every later output).
    let tmp = b.stop().unwrap();
    assert_eq!(output_producer(tmp.path(), txn.producer_id).2, -1, "the ghost transaction is still open");
}

#[test]
fn a_processor_survives_its_source_topic_being_deleted_and_recreated() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "clicks", CLICKS));
    b.keep_dir(tmp);
    create(&b, "clicks", 1);
    let many: Vec<(Option<&str>, String)> = (0..50).map(|i| (None, click("ann", 1_000 + i, 1))).chain([(None, click("ann", 3_000, 1))]).collect();
    produce(&b, "clicks", &many);
    let first = consume_until(&b, "clicks-per-second", |g| !g.is_empty());
    assert_eq!(windows(&first)[&("ann".to_string(), 1000)], (50, 50));
    // The source goes away: the processor fails, logs it and keeps retrying;
    // the broker serves on. The topic comes back, shorter than the position
    // the processor had reached.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin: AdminClient<DefaultClientContext> = client(&b).create().unwrap();
    let r = rt.block_on(admin.delete_topics(&["clicks"], &AdminOptions::new())).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    std::thread::sleep(Duration::from_millis(300));
    create(&b, "clicks", 1);
    produce(&b, "clicks", &[(None, click("bob", 10_000, 7)), (None, click("bob", 12_000, 1))]);
    let got = consume_until(&b, "clicks-per-second", |g| windows(g).contains_key(&("bob".to_string(), 10_000)));
    assert_eq!(windows(&got)[&("bob".to_string(), 10_000)], (1, 7));
}

#[test]
fn a_processor_starting_at_latest_skips_what_its_sources_held_before() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    create(&b, "clicks", 1);
    produce(&b, "clicks", &[(None, click("ann", 1_000, 5)), (None, click("ann", 1_500, 5))]);
    b.stop();
    let latest = CLICKS.replace(r#"topics = ["clicks"]"#, "topics = [\"clicks\"]\n    start = \"latest\"");
    assert_ne!(latest, CLICKS);
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "clicks", &latest));
    b.keep_dir(tmp);
    // Produced once the processor has placed itself at the end (it has
    // read nothing yet, and reads what comes after).
    let t0 = Instant::now();
    while b.broker.processor_stats().into_iter().next().is_none_or(|(_, s)| s.last_checkpoint_ms.load(std::sync::atomic::Ordering::Relaxed) == 0) {
        assert!(t0.elapsed() < Duration::from_secs(20), "the processor never checkpointed its start");
        std::thread::sleep(Duration::from_millis(50));
    }
    produce(&b, "clicks", &[(None, click("ann", 2_000, 7)), (None, click("cid", 5_000, 1))]);
    let got = consume_until(&b, "clicks-per-second", |g| !g.is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let got = consume_until(&b, "clicks-per-second", |g| g.len() >= got.len());
    assert_eq!(windows(&got), [(("ann".to_string(), 2000), (1, 7))].into(), "only records produced after the start");
    let (_, stats) = b.broker.processor_stats().into_iter().next().unwrap();
    assert_eq!(stats.records_in.load(std::sync::atomic::Ordering::Relaxed), 2);
}
