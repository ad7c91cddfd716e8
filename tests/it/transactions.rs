//! Transactions with librdkafka's transactional producer: commits and aborts
//! interleaved across partitions; read_committed readers see exactly the
//! committed records, read_uncommitted readers see everything; a
//! consume-transform-produce loop that crashes mid-transaction still yields
//! each input exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker_support::TestBroker;

fn create(b: &TestBroker, name: &str, partitions: i32) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let a: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().unwrap();
    let t = rdkafka::admin::NewTopic::new(name, partitions, rdkafka::admin::TopicReplication::Fixed(1));
    assert!(rt.block_on(a.create_topics(&[t], &rdkafka::admin::AdminOptions::new())).unwrap()[0].is_ok());
}

fn txn_producer(b: &TestBroker, id: &str) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "10000")
        .set("linger.ms", "1")
        .set("log_level", "3")
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p
}

/// Everything readable in `topic` at `isolation`, per partition, read until
/// the consumer has been idle for a while.
fn read_all(b: &TestBroker, topic: &str, partitions: i32, isolation: &str) -> BTreeMap<i32, Vec<String>> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).set("group.id", format!("reader-{isolation}")).set("isolation.level", isolation).set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            out.entry(m.partition()).or_default().push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
            idle_since = Instant::now();
        }
    }
    out
}

#[test]
fn committed_and_aborted_transactions_across_partitions() {
    let b = TestBroker::start();
    create(&b, "tx", 2);
    let p = txn_producer(&b, "tx-1");
    let mut committed: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut all: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for round in 0..6 {
        p.begin_transaction().unwrap();
        for i in 0..10 {
            let v = format!("r{round}-{i}");
            let part = i % 2;
            p.send(BaseRecord::<str, str>::to("tx").partition(part).key(&v).payload(&v)).unwrap();
            all.entry(part).or_default().push(v.clone());
            if round % 2 == 0 {
                committed.entry(part).or_default().push(v);
            }
        }
        if round % 2 == 0 {
            p.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            p.flush(Duration::from_secs(30)).unwrap();
            p.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
    assert_eq!(read_all(&b, "tx", 2, "read_committed"), committed, "read_committed sees exactly the committed records, in order");
    assert_eq!(read_all(&b, "tx", 2, "read_uncommitted"), all, "read_uncommitted sees every record");

    // An open transaction holds read_committed readers back at its start.
    p.begin_transaction().unwrap();
    p.send(BaseRecord::<str, str>::to("tx").partition(0).key("open").payload("open")).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(read_all(&b, "tx", 2, "read_committed"), committed, "nothing of the open transaction");
    // ListOffsets honours the isolation level: latest is the last stable
    // offset for read_committed, the high watermark otherwise.
    let watermark = |isolation: &str| {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).set("isolation.level", isolation).create().unwrap();
        c.fetch_watermarks("tx", 0, Duration::from_secs(10)).unwrap().1
    };
    let (stable, high) = (watermark("read_committed"), watermark("read_uncommitted"));
    assert!(stable < high, "the open transaction holds the last stable offset back: {stable} vs {high}");
    p.commit_transaction(Duration::from_secs(30)).unwrap();
    assert_eq!(watermark("read_committed"), watermark("read_uncommitted"), "committed: stable again");
    assert_eq!(read_all(&b, "tx", 2, "read_committed")[&0].last().map(String::as_str), Some("open"));
}

#[test]
fn consume_transform_produce_survives_a_crash_mid_transaction() {
    let b = TestBroker::start();
    create(&b, "in", 1);
    create(&b, "out", 1);
    {
        let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().unwrap();
        for i in 0..40 {
            let v = format!("{i}");
            p.send(BaseRecord::<str, str>::to("in").key(&v).payload(&v)).unwrap();
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }
    // One processing step: read up to `n` inputs, write them transformed and
    // the consumer's position in one transaction; `crash` stops before the
    // commit, as a dying application would.
    let step = |n: usize, crash: bool| -> usize {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", b.bootstrap())
            .set("group.id", "ctp")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        c.subscribe(&["in"]).unwrap();
        let p = txn_producer(&b, "ctp-app");
        p.begin_transaction().unwrap();
        let mut done = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while done < n && Instant::now() < deadline {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                let v = format!("out-{}", String::from_utf8_lossy(m.payload().unwrap()));
                p.send(BaseRecord::<str, str>::to("out").key(&v).payload(&v)).unwrap();
                done += 1;
            }
        }
        if crash {
            p.flush(Duration::from_secs(30)).unwrap();
            return done; // dropped without committing
        }
        let positions = c.position().unwrap();
        p.send_offsets_to_transaction(&positions, &c.group_metadata().unwrap(), Duration::from_secs(30)).unwrap();
        p.commit_transaction(Duration::from_secs(30)).unwrap();
        done
    };
    assert_eq!(step(15, false), 15);
    step(10, true); // crash: its outputs must never be seen
    assert_eq!(step(25, false), 25);
    let out = read_all(&b, "out", 1, "read_committed");
    let got: Vec<&str> = out[&0].iter().map(String::as_str).collect();
    let want: Vec<String> = (0..40).map(|i| format!("out-{i}")).collect();
    assert_eq!(got, want, "each input exactly once, in order");
}

#[test]
fn transaction_timeouts_are_enforced() {
    let b = TestBroker::start_in(&tempfile::tempdir().unwrap().keep(), |c| c.broker.transaction_max_timeout_ms = 5000);
    create(&b, "late", 1);
    // Above the broker's maximum: refused.
    let too_long: BaseProducer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).set("transactional.id", "greedy").set("transaction.timeout.ms", "60000").create().unwrap();
    let err = too_long.init_transactions(Duration::from_secs(30)).unwrap_err();
    assert_eq!(err.rdkafka_error_code(), Some(rdkafka::error::RDKafkaErrorCode::InvalidTransactionTimeout), "{err}");

    // An open transaction past its timeout is aborted by the broker, so it
    // no longer holds read_committed readers back, and its producer is fenced.
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).set("transactional.id", "slow").set("transaction.timeout.ms", "1500").create().unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p.begin_transaction().unwrap();
    p.send(BaseRecord::<str, str>::to("late").key("k").payload("never")).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(p.commit_transaction(Duration::from_secs(10)).is_err(), "the timed-out transaction cannot commit");
    let plain: BaseProducer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().unwrap();
    plain.send(BaseRecord::<str, str>::to("late").key("k").payload("after")).unwrap();
    plain.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(read_all(&b, "late", 1, "read_committed")[&0], vec!["after".to_string()]);
}

#[test]
fn open_transactions_survive_broker_crashes_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    create(&b, "rt", 1);
    let p1 = txn_producer(&b, "restart-app");
    p1.begin_transaction().unwrap();
    for i in 0..5 {
        p1.send(BaseRecord::<str, str>::to("rt").key("k").payload(&format!("lost-{i}"))).unwrap();
    }
    p1.flush(Duration::from_secs(30)).unwrap();
    // A second transactional id with a short timeout, also left open.
    let p2: BaseProducer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).set("transactional.id", "short").set("transaction.timeout.ms", "2000").create().unwrap();
    p2.init_transactions(Duration::from_secs(30)).unwrap();
    p2.begin_transaction().unwrap();
    p2.send(BaseRecord::<str, str>::to("rt").key("k").payload("timed-out")).unwrap();
    p2.flush(Duration::from_secs(30)).unwrap();
    drop(p1);
    drop(p2);
    b.crash();

    // After the crash: the restored coordinator fences the old instance when
    // a new one starts, and still times the other transaction out.
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let p = txn_producer(&b, "restart-app");
    p.begin_transaction().unwrap();
    p.send(BaseRecord::<str, str>::to("rt").key("k").payload("kept")).unwrap();
    p.commit_transaction(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(read_all(&b, "rt", 1, "read_committed")[&0], vec!["kept".to_string()], "aborted before the crash's restart, committed after");
    b.stop();
    // And after a clean restart the same view.
    let b = TestBroker::start_in(tmp.path(), |_| {});
    assert_eq!(read_all(&b, "rt", 1, "read_committed")[&0], vec!["kept".to_string()]);
    assert_eq!(read_all(&b, "rt", 1, "read_uncommitted")[&0].len(), 7, "every record is still stored");
}

#[test]
fn describe_producers_and_transactions_and_list_transactions() {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    use crate::wire_support::call_once;
    let b = TestBroker::start();
    create(&b, "seen", 1);
    let p = txn_producer(&b, "visible");
    p.begin_transaction().unwrap();
    p.send(BaseRecord::<str, str>::to("seen").key("k").payload("v")).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();

    let mut d = DescribeTransactionsRequest::default();
    d.transactional_ids = vec![TransactionalId(StrBytes::from_static_str("visible")), TransactionalId(StrBytes::from_static_str("nobody"))];
    let r: DescribeTransactionsResponse = call_once(b.addr, ApiKey::DescribeTransactions, 0, &d);
    let t = &r.transaction_states[0];
    assert_eq!((t.error_code, t.transaction_state.as_str()), (0, "Ongoing"));
    assert_eq!(t.topics[0].topic.as_str(), "seen");
    assert_eq!(t.topics[0].partitions, vec![0]);
    assert_eq!(r.transaction_states[1].error_code, 105, "TRANSACTIONAL_ID_NOT_FOUND");

    let mut dp = DescribeProducersRequest::default();
    let mut tr = describe_producers_request::TopicRequest::default();
    tr.name = TopicName(StrBytes::from_static_str("seen"));
    tr.partition_indexes = vec![0];
    dp.topics = vec![tr];
    let r: DescribeProducersResponse = call_once(b.addr, ApiKey::DescribeProducers, 0, &dp);
    let prods = &r.topics[0].partitions[0].active_producers;
    assert_eq!(prods.len(), 1);
    assert_eq!(prods[0].producer_id.0, t.producer_id.0);
    assert_eq!(prods[0].current_txn_start_offset, 0, "the open transaction starts at offset 0");

    let mut l = ListTransactionsRequest::default();
    l.state_filters = vec![StrBytes::from_static_str("Ongoing"), StrBytes::from_static_str("Bogus")];
    let r: ListTransactionsResponse = call_once(b.addr, ApiKey::ListTransactions, 1, &l);
    assert_eq!(r.transaction_states.iter().map(|s| s.transactional_id.as_str()).collect::<Vec<_>>(), vec!["visible"]);
    assert_eq!(r.unknown_state_filters.iter().map(|s| s.as_str()).collect::<Vec<_>>(), vec!["Bogus"]);
    p.commit_transaction(Duration::from_secs(30)).unwrap();
    let r: ListTransactionsResponse = call_once(b.addr, ApiKey::ListTransactions, 1, &l);
    assert!(r.transaction_states.is_empty(), "no longer ongoing");
}

#[test]
fn a_transaction_left_prepared_by_a_crash_is_completed_on_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    create(&b, "prep", 1);
    let p = txn_producer(&b, "prepared");
    p.begin_transaction().unwrap();
    for i in 0..3 {
        p.send(BaseRecord::<str, str>::to("prep").key("k").payload(&format!("p{i}"))).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    // The coordinator decided to commit and recorded it, then the broker died
    // before writing the markers: append that decision, then crash.
    let mut meta = b.broker.txns.get("prepared").expect("known to the coordinator");
    assert_eq!(meta.status, eddy::txn::Status::Ongoing);
    meta.status = eddy::txn::Status::PrepareCommit;
    let state_log = std::sync::Arc::clone(&b.broker.partition(eddy::txn::TOPIC, 0).unwrap().log);
    let rec = eddy::log::records::build_batch(&[eddy::log::records::NewRecord { key: Some(&eddy::txn::key("prepared")), value: Some(&eddy::txn::value(&meta)), timestamp: 1, headers: &[] }]);
    let info = state_log.append(&rec).unwrap();
    state_log.sync_to(info.last_offset + 1).unwrap();
    drop(state_log);
    drop(p);
    b.crash();

    let b = TestBroker::start_in(tmp.path(), |_| {});
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = read_all(&b, "prep", 1, "read_committed");
        if seen.get(&0).is_some_and(|v| v.len() == 3) {
            assert_eq!(seen[&0], vec!["p0", "p1", "p2"]);
            break;
        }
        assert!(Instant::now() < deadline, "the prepared commit was not completed: {seen:?}");
    }
    assert_eq!(b.broker.txns.get("prepared").unwrap().status, eddy::txn::Status::CompleteCommit);
}

#[test]
fn init_producer_id_bumps_the_epoch_of_the_producer_it_was_given_kip_360() {
    use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId, TransactionalId};
    use kafka_protocol::protocol::StrBytes;

    use crate::wire_support::call_once;
    let b = TestBroker::start();
    let init = |version: i16, pid: i64, epoch: i16| -> InitProducerIdResponse {
        let mut r = InitProducerIdRequest::default();
        r.transactional_id = Some(TransactionalId(StrBytes::from_static_str("kip360")));
        r.transaction_timeout_ms = 10_000;
        r.producer_id = ProducerId(pid);
        r.producer_epoch = epoch;
        call_once(b.addr, ApiKey::InitProducerId, version, &r)
    };
    let first = init(4, -1, -1);
    assert_eq!((first.error_code, first.producer_epoch), (0, 0));
    let pid = first.producer_id.0;
    let bumped = init(4, pid, 0);
    assert_eq!((bumped.error_code, bumped.producer_id.0, bumped.producer_epoch), (0, pid, 1), "the epoch is bumped");
    let retried = init(4, pid, 0);
    assert_eq!((retried.error_code, retried.producer_id.0, retried.producer_epoch), (0, pid, 1), "a retried bump gets the same answer");
    assert_eq!(init(4, pid, 5).error_code, 90, "PRODUCER_FENCED: not the current epoch");
    assert_eq!(init(4, pid + 1, 1).error_code, 90, "PRODUCER_FENCED: another producer id");
    assert_eq!(init(3, pid, 7).error_code, 47, "INVALID_PRODUCER_EPOCH before v4");
    let fresh = init(4, -1, -1);
    assert_eq!((fresh.error_code, fresh.producer_id.0, fresh.producer_epoch), (0, pid, 2), "without an id, a new instance fences the old");
}

/// A connection to a fresh broker with `topic` made, and the producer id
/// and epoch of transactional id `id` (InitProducerId).
fn wire_transaction(b: &TestBroker, topic: &str, partitions: i32, id: &'static str) -> (std::net::TcpStream, kafka_protocol::messages::ProducerId, i16) {
    use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, TransactionalId};
    create(b, topic, partitions);
    let mut s = std::net::TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = Some(TransactionalId(kafka_protocol::protocol::StrBytes::from_static_str(id)));
    init.transaction_timeout_ms = 60_000;
    let r: InitProducerIdResponse = crate::wire_support::call(&mut s, ApiKey::InitProducerId, 4, &init);
    assert_eq!(r.error_code, 0);
    (s, r.producer_id, r.producer_epoch)
}

/// Commits transactional id `id`'s transaction (EndTxn v3).
fn commit_transaction(s: &mut std::net::TcpStream, id: &'static str, producer_id: kafka_protocol::messages::ProducerId, epoch: i16) {
    use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse, TransactionalId};
    let mut end = EndTxnRequest::default();
    end.transactional_id = TransactionalId(kafka_protocol::protocol::StrBytes::from_static_str(id));
    end.producer_id = producer_id;
    end.producer_epoch = epoch;
    end.committed = true;
    let r: EndTxnResponse = crate::wire_support::call(s, ApiKey::EndTxn, 3, &end);
    assert_eq!(r.error_code, 0);
}

#[test]
fn a_transactional_batch_goes_only_to_partitions_of_its_open_transaction() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProduceRequest, ProduceResponse, ProducerId, TopicName, TransactionalId};
    use kafka_protocol::protocol::StrBytes;

    use crate::log_support::simple_batch;
    use crate::wire_support::call;
    let b = TestBroker::start();
    let (mut s, producer_id, epoch) = wire_transaction(&b, "verified", 2, "verified-txn");
    let pid = producer_id.0;
    let id = || TransactionalId(StrBytes::from_static_str("verified-txn"));
    let batch = |epoch: i16, seq: i32| eddy::log::records::with_producer(&simple_batch(2, 10, 1), pid, epoch, seq, true);
    let produce = |s: &mut std::net::TcpStream, txn: Option<TransactionalId>, partition: i32, records: bytes::Bytes| -> i16 {
        let mut pd = PartitionProduceData::default();
        pd.index = partition;
        pd.records = Some(records);
        let mut td = TopicProduceData::default();
        td.name = TopicName(StrBytes::from_static_str("verified"));
        td.partition_data = vec![pd];
        let mut req = ProduceRequest::default();
        req.transactional_id = txn;
        req.acks = -1;
        req.timeout_ms = 10_000;
        req.topic_data = vec![td];
        let r: ProduceResponse = call(s, ApiKey::Produce, 9, &req);
        r.responses[0].partition_responses[0].error_code
    };
    // Not yet added to the transaction: refused, so no transaction opens
    // in the partition that no marker would ever end.
    assert_eq!(produce(&mut s, Some(id()), 0, batch(epoch, 0)), 48, "INVALID_TXN_STATE");
    assert_eq!(produce(&mut s, None, 0, batch(epoch, 0)), 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED without a transactional id");

    let mut t = AddPartitionsToTxnTopic::default();
    t.name = TopicName(StrBytes::from_static_str("verified"));
    t.partitions = vec![0];
    let mut add = AddPartitionsToTxnRequest::default();
    add.v3_and_below_transactional_id = id();
    add.v3_and_below_producer_id = ProducerId(pid);
    add.v3_and_below_producer_epoch = epoch;
    add.v3_and_below_topics = vec![t];
    let r: AddPartitionsToTxnResponse = call(&mut s, ApiKey::AddPartitionsToTxn, 3, &add);
    assert_eq!(r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0);

    assert_eq!(produce(&mut s, Some(id()), 0, batch(epoch, 0)), 0);
    assert_eq!(produce(&mut s, Some(id()), 0, batch(epoch, 0)), 0, "a retry of the same batch while the transaction is open (a duplicate)");
    assert_eq!(produce(&mut s, Some(id()), 1, batch(epoch, 0)), 48, "partition 1 is not in the transaction");
    // Idempotent batches outside transactions are not checked.
    let idempotent = eddy::log::records::with_producer(&simple_batch(2, 10, 1), pid + 1000, 0, 0, false);
    assert_eq!(produce(&mut s, None, 1, idempotent), 0, "an idempotent, non-transactional batch");
    assert_eq!(produce(&mut s, Some(id()), 0, batch(epoch - 1, 0)), 47, "INVALID_PRODUCER_EPOCH for another epoch");
    commit_transaction(&mut s, "verified-txn", producer_id, epoch);
    assert_eq!(produce(&mut s, Some(id()), 0, batch(epoch, 2)), 48, "the transaction ended");

    // Nothing is left open: read_committed readers see both partitions to
    // their ends (the committed batch's two records, and the idempotent two).
    let committed = read_all(&b, "verified", 2, "read_committed");
    assert_eq!(committed.values().map(Vec::len).sum::<usize>(), 4, "{committed:?}");
    for p in 0..2 {
        let log = &b.broker.partition("verified", p).unwrap().log;
        assert_eq!(log.last_stable_offset(), log.log_end_offset(), "partition {p} has an open transaction");
    }
}

/// AddOffsetsToTxn (v3) of `group` to transactional id `id`'s transaction.
fn add_offsets(s: &mut std::net::TcpStream, id: &'static str, producer_id: kafka_protocol::messages::ProducerId, epoch: i16, group: &'static str) -> i16 {
    use kafka_protocol::messages::*;
    let mut add = AddOffsetsToTxnRequest::default();
    add.transactional_id = TransactionalId(kafka_protocol::protocol::StrBytes::from_static_str(id));
    add.producer_id = producer_id;
    add.producer_epoch = epoch;
    add.group_id = GroupId(kafka_protocol::protocol::StrBytes::from_static_str(group));
    let r: AddOffsetsToTxnResponse = crate::wire_support::call(s, ApiKey::AddOffsetsToTxn, 3, &add);
    r.error_code
}

/// TxnOffsetCommit (v3, no generation) of `offset` for `topic` partition 0.
fn txn_commit_offset(s: &mut std::net::TcpStream, id: &'static str, producer_id: kafka_protocol::messages::ProducerId, epoch: i16, group: &'static str, topic: &'static str, offset: i64) -> i16 {
    txn_commit_as(s, id, producer_id, epoch, group, topic, offset, -1, "")
}

/// TxnOffsetCommit (v3) naming a generation and member (KIP-447).
#[allow(clippy::too_many_arguments)]
fn txn_commit_as(s: &mut std::net::TcpStream, id: &'static str, producer_id: kafka_protocol::messages::ProducerId, epoch: i16, group: &'static str, topic: &'static str, offset: i64, generation: i32, member: &str) -> i16 {
    use kafka_protocol::messages::txn_offset_commit_request::{TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let mut tp = TxnOffsetCommitRequestPartition::default();
    tp.partition_index = 0;
    tp.committed_offset = offset;
    let mut tt = TxnOffsetCommitRequestTopic::default();
    tt.name = TopicName(StrBytes::from_static_str(topic));
    tt.partitions = vec![tp];
    let mut tc = TxnOffsetCommitRequest::default();
    tc.transactional_id = TransactionalId(StrBytes::from_static_str(id));
    tc.group_id = GroupId(StrBytes::from_static_str(group));
    tc.producer_id = producer_id;
    tc.producer_epoch = epoch;
    tc.generation_id = generation;
    tc.member_id = StrBytes::from_string(member.to_string());
    tc.topics = vec![tt];
    let r: TxnOffsetCommitResponse = crate::wire_support::call(s, ApiKey::TxnOffsetCommit, 3, &tc);
    r.topics[0].partitions[0].error_code
}

/// OffsetFetch (v7) of `topic` partition 0 for `group`: (error, offset).
fn fetch_offset(s: &mut std::net::TcpStream, group: &'static str, topic: &'static str, require_stable: bool) -> (i16, i64) {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
    t.name = TopicName(StrBytes::from_static_str(topic));
    t.partition_indexes = vec![0];
    let mut f = OffsetFetchRequest::default();
    f.group_id = GroupId(StrBytes::from_static_str(group));
    f.topics = Some(vec![t]);
    f.require_stable = require_stable;
    let r: OffsetFetchResponse = crate::wire_support::call(s, ApiKey::OffsetFetch, 7, &f);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.committed_offset)
}

/// Waits (up to 10 s) until `group`'s committed offset of `topic` partition 0 is `want`.
fn wait_for_offset(s: &mut std::net::TcpStream, group: &'static str, topic: &'static str, want: i64) {
    let t0 = Instant::now();
    while fetch_offset(s, group, topic, true) != (0, want) {
        assert!(t0.elapsed() < Duration::from_secs(10), "the committed transaction's offset never became stable: {:?}", fetch_offset(s, group, topic, true));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn offsets_waiting_in_a_transaction_are_unstable_to_require_stable_fetches() {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    let b = TestBroker::start();
    let (mut s, pid, epoch) = wire_transaction(&b, "stable", 1, "stable-txn");
    // A plain commit first: offset 1.
    let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = 1;
    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = TopicName(StrBytes::from_static_str("stable"));
    t.partitions = vec![p];
    let mut c = OffsetCommitRequest::default();
    c.group_id = GroupId(StrBytes::from_static_str("stable-group"));
    c.generation_id_or_member_epoch = -1;
    c.topics = vec![t];
    let r: OffsetCommitResponse = crate::wire_support::call(&mut s, ApiKey::OffsetCommit, 8, &c);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    // Offset 5 waits in a transaction.
    assert_eq!(add_offsets(&mut s, "stable-txn", pid, epoch, "stable-group"), 0);
    assert_eq!(txn_commit_offset(&mut s, "stable-txn", pid, epoch, "stable-group", "stable", 5), 0);
    assert_eq!(fetch_offset(&mut s, "stable-group", "stable", true), (88, -1), "UNSTABLE_OFFSET_COMMIT while the transaction is open");
    assert_eq!(fetch_offset(&mut s, "stable-group", "stable", false), (0, 1), "without require_stable, the offset committed before");
    commit_transaction(&mut s, "stable-txn", pid, epoch);
    wait_for_offset(&mut s, "stable-group", "stable", 5);
}

#[test]
fn a_transaction_begun_by_add_offsets_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let (mut s, pid, epoch) = wire_transaction(&b, "offsets-only", 1, "offsets-txn");
    assert_eq!(add_offsets(&mut s, "offsets-txn", pid, epoch, "offsets-group"), 0);
    drop(s);
    b.crash();

    let b = TestBroker::start_in(tmp.path(), |_| {});
    let mut s = std::net::TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(txn_commit_offset(&mut s, "offsets-txn", pid, epoch, "offsets-group", "offsets-only", 7), 0, "the transaction AddOffsetsToTxn began was lost in the restart");
    commit_transaction(&mut s, "offsets-txn", pid, epoch);
    wait_for_offset(&mut s, "offsets-group", "offsets-only", 7);
}

#[test]
fn txn_offset_commits_check_the_member_generation_and_topic() {
    use kafka_protocol::messages::*;

    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| c.groups.initial_rebalance_delay_ms = 0);
    b.keep_dir(tmp);
    let (mut s, pid, epoch) = wire_transaction(&b, "checked", 1, "checked-txn");
    // A group with one member, generation 1.
    let join = |s: &mut std::net::TcpStream, member: &str| -> JoinGroupResponse { crate::wire_support::call(s, ApiKey::JoinGroup, 9, &crate::wire_support::join_request("checked-group", member)) };
    let first = join(&mut s, "");
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    let member = first.member_id.to_string();
    let joined = join(&mut s, &member);
    assert_eq!(joined.error_code, 0);
    let generation = joined.generation_id;

    assert_eq!(add_offsets(&mut s, "checked-txn", pid, epoch, "checked-group"), 0);
    let commit = |s: &mut std::net::TcpStream, topic: &'static str, generation: i32, member: &str| txn_commit_as(s, "checked-txn", pid, epoch, "checked-group", topic, 3, generation, member);
    assert_eq!(commit(&mut s, "checked", generation, "someone-else"), 25, "UNKNOWN_MEMBER_ID");
    assert_eq!(commit(&mut s, "checked", generation + 1, &member), 22, "ILLEGAL_GENERATION (a zombie of another generation)");
    assert_eq!(commit(&mut s, "no-such-topic", generation, &member), 3, "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!(commit(&mut s, "checked", generation, &member), 0, "the member of the current generation");
    assert_eq!(commit(&mut s, "checked", -1, ""), 0, "a producer naming only the group");
    commit_transaction(&mut s, "checked-txn", pid, epoch);
    wait_for_offset(&mut s, "checked-group", "checked", 3);
}
