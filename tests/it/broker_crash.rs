//! Nothing acknowledged is lost: a librdkafka producer with acks=all (or
//! acks=1) writes to the real `eddy` binary, which is killed with SIGKILL
//! mid-stream; after a restart every acknowledged record is there, at its
//! acknowledged offset, with its value.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The `eddy` child process, killed if a failing test drops it still running.
struct Eddy(Child);

impl std::ops::Deref for Eddy {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Eddy {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Eddy {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A port free when asked (bound and released again).
fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

fn start(dir: &std::path::Path, addr: &mut String) -> Eddy {
    start_with(dir, addr, None)
}

/// Starts eddy listening on `addr` and waits until it is the one listening
/// there. While a killed eddy was down its port was free for any process to
/// take (a restarted eddy then cannot bind it, and the clients would talk to
/// whatever holds it, e.g. another test's broker without these topics); then
/// eddy starts again on a fresh port, written back to `addr`.
fn start_with(dir: &std::path::Path, addr: &mut String, config: Option<&std::path::Path>) -> Eddy {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut child = spawn_eddy(dir, addr, config);
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        loop {
            match listens(child.id(), port) {
                Some(true) => return Eddy(child),
                // Without /proc, whoever answers on the port is taken for it.
                None if std::net::TcpStream::connect(addr.as_str()).is_ok() => return Eddy(child),
                _ => {}
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "eddy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // It exited: because the port is taken, or for a reason of its own.
        assert!(std::net::TcpStream::connect(addr.as_str()).is_ok(), "eddy exited");
        let taken = std::mem::replace(addr, free_addr());
        eprintln!("another process listens on {taken}: eddy starts again on {addr}");
    }
}

fn spawn_eddy(dir: &std::path::Path, addr: &str, config: Option<&std::path::Path>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(["serve", "--listen", addr, "--http-listen", "127.0.0.1:0", "--data-dir"]).arg(dir);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    // The broker's log is dropped unless EDDY_IT_BROKER_LOG names a file to
    // append it to (at EDDY_IT_RUST_LOG, default warn): a failure found by
    // running these tests in a loop can then be matched with what the
    // broker said.
    let stderr = match std::env::var("EDDY_IT_BROKER_LOG") {
        Ok(f) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(f).unwrap()),
        Err(_) => Stdio::null(),
    };
    cmd.env("RUST_LOG", std::env::var("EDDY_IT_RUST_LOG").unwrap_or("warn".into())).stdout(Stdio::null()).stderr(stderr).spawn().unwrap()
}

/// Whether process `pid` holds a TCP socket listening on `port` (from
/// /proc: the listening sockets' inodes, then the process's descriptors);
/// None without /proc.
fn listens(pid: u32, port: u16) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1].ends_with(&local) && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Some(false) };
    Some(fds.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).any(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str())))
}

const PARTITIONS: i32 = 3;

#[test]
fn acks_all_records_survive_kill_9_of_the_broker() {
    acknowledged_records_survive_kill_9("all");
}

/// acks=1 is answered once the records are written to the file (not
/// fsynced): a process kill, unlike a machine crash, must not lose them.
#[test]
fn acks_1_records_survive_kill_9_of_the_broker() {
    acknowledged_records_survive_kill_9("1");
}

fn acknowledged_records_survive_kill_9(acks: &'static str) {
    let dir = tempfile::tempdir().unwrap(); // a real disk: fsync matters here
    let mut addr = free_addr();
    let acked: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::default();
    let mut seq = 0u64;
    for round in 0..3 {
        let mut broker = start(dir.path(), &mut addr);
        if round == 0 {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let a: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &addr).create().unwrap();
            let t = rdkafka::admin::NewTopic::new("durable", PARTITIONS, rdkafka::admin::TopicReplication::Fixed(1));
            assert!(rt.block_on(a.create_topics(&[t], &rdkafka::admin::AdminOptions::new())).unwrap()[0].is_ok());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let (addr, acked, stop) = (addr.clone(), Arc::clone(&acked), Arc::clone(&stop));
            let first = seq;
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let p: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", &addr)
                    .set("acks", acks)
                    .set("linger.ms", "2")
                    .set("message.timeout.ms", "3000")
                    .set("enable.idempotence", "false")
                    .set("log_level", "0")
                    .create()
                    .unwrap();
                rt.block_on(async {
                    let mut i = first;
                    let mut inflight = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let v = format!("value-{i}");
                        let part = (i % PARTITIONS as u64) as i32;
                        if let Ok(f) = p.send_result(FutureRecord::to("durable").partition(part).key(&v).payload(&v)) {
                            inflight.push((v, f));
                        }
                        i += 1;
                        if inflight.len() >= 200 {
                            for (v, f) in inflight.drain(..) {
                                if let Ok(Ok(d)) = f.await {
                                    acked.lock().unwrap().push((d.partition, d.offset, v));
                                }
                            }
                        }
                    }
                    for (v, f) in inflight {
                        if let Ok(Ok(d)) = f.await {
                            acked.lock().unwrap().push((d.partition, d.offset, v));
                        }
                    }
                    i
                })
            })
        };
        std::thread::sleep(Duration::from_millis(600 + 300 * round));
        broker.kill().unwrap(); // SIGKILL
        broker.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        seq = producer.join().unwrap();

        // Restart and read everything back.
        let mut broker = start(dir.path(), &mut addr);
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &addr).set("group.id", "verify").set("enable.auto.commit", "false").set("log_level", "0").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset("durable", p, Offset::Beginning).unwrap();
            ends.insert(p, c.fetch_watermarks("durable", p, Duration::from_secs(10)).unwrap().1);
        }
        c.assign(&tpl).unwrap();
        let total: i64 = ends.values().sum();
        let mut stored: HashMap<(i32, i64), String> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (stored.len() as i64) < total {
            assert!(Instant::now() < deadline, "round {round}: read {} of {total}", stored.len());
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.unwrap_or_else(|e| panic!("round {round}: consumer error reading back: {e:?}"));
                stored.insert((m.partition(), m.offset()), String::from_utf8_lossy(m.payload().unwrap()).into_owned());
            }
        }
        let acked = acked.lock().unwrap();
        assert!(!acked.is_empty(), "round {round}: nothing was acknowledged before the kill");
        for (p, o, v) in acked.iter() {
            assert_eq!(stored.get(&(*p, *o)), Some(v), "round {round}: acknowledged record at {p}/{o} lost or changed");
        }
        eprintln!("acks={acks} round {round}: {} acknowledged records all present after kill -9 ({} stored)", acked.len(), stored.len());
        drop(c);
        // SAFETY: signalling our own child for a clean stop.
        unsafe { libc::kill(broker.id() as i32, libc::SIGTERM) };
        broker.wait().unwrap();
    }
}

/// Everything readable at `isolation` in partition 0 of `topic`, read until
/// the consumer has been idle for a while.
fn read_isolated(addr: &str, topic: &str, isolation: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", format!("verify-{isolation}"))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("log_level", "0")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap_or_else(|e| panic!("consumer error reading {topic} at {isolation}: {e:?}"));
            out.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
            idle_since = Instant::now();
        }
    }
    out
}

fn txn_producer(addr: &str, id: &str, timeout_ms: u32) -> rdkafka::producer::BaseProducer {
    use rdkafka::producer::Producer;
    let p: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("log_level", "0")
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();
    p
}

#[test]
fn open_transactions_survive_kill_9_of_the_broker() {
    use rdkafka::producer::{BaseRecord, Producer};
    let dir = tempfile::tempdir().unwrap();
    let mut addr = free_addr();
    let mut broker = start(dir.path(), &mut addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let a: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &addr).create().unwrap();
    let t = rdkafka::admin::NewTopic::new("txn-kill", 1, rdkafka::admin::TopicReplication::Fixed(1));
    assert!(rt.block_on(a.create_topics(&[t], &rdkafka::admin::AdminOptions::new())).unwrap()[0].is_ok());

    // One committed transaction, then two left open: a long one that a new
    // instance of its producer must fence, and a short one the restarted
    // broker must time out by itself.
    let long = txn_producer(&addr, "kill-long", 60_000);
    long.begin_transaction().unwrap();
    long.send(BaseRecord::<str, str>::to("txn-kill").key("k").payload("committed")).unwrap();
    long.commit_transaction(Duration::from_secs(30)).unwrap();
    long.begin_transaction().unwrap();
    for i in 0..5 {
        long.send(BaseRecord::<str, str>::to("txn-kill").key("k").payload(&format!("open-long-{i}"))).unwrap();
    }
    long.flush(Duration::from_secs(30)).unwrap();
    let short = txn_producer(&addr, "kill-short", 3_000);
    short.begin_transaction().unwrap();
    short.send(BaseRecord::<str, str>::to("txn-kill").key("k").payload("open-short")).unwrap();
    short.flush(Duration::from_secs(30)).unwrap();
    broker.kill().unwrap(); // SIGKILL
    broker.wait().unwrap();
    drop(long);
    drop(short);

    let mut broker = start(dir.path(), &mut addr);
    // Both transactions are still open: read_committed sees only the commit.
    assert_eq!(read_isolated(&addr, "txn-kill", "read_committed"), vec!["committed"]);
    // The short one is aborted by the restarted broker's timeout...
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = describe_txn(&addr, "kill-short");
        if state == "CompleteAbort" || state == "Empty" {
            break;
        }
        assert!(Instant::now() < deadline, "the restored short transaction was never timed out (state {state})");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(describe_txn(&addr, "kill-long"), "Ongoing", "the long one is still open");
    // ...and the long one is fenced and aborted when its producer comes back.
    let again = txn_producer(&addr, "kill-long", 60_000);
    again.begin_transaction().unwrap();
    again.send(BaseRecord::<str, str>::to("txn-kill").key("k").payload("after")).unwrap();
    again.commit_transaction(Duration::from_secs(30)).unwrap();
    assert_eq!(read_isolated(&addr, "txn-kill", "read_committed"), vec!["committed", "after"]);
    assert_eq!(read_isolated(&addr, "txn-kill", "read_uncommitted").len(), 8, "every record is stored");
    // SAFETY: signalling our own child for a clean stop.
    unsafe { libc::kill(broker.id() as i32, libc::SIGTERM) };
    assert!(broker.wait().unwrap().success());
}

/// The state of a transactional id, by DescribeTransactions.
fn describe_txn(addr: &str, id: &str) -> String {
    use kafka_protocol::messages::{ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, TransactionalId};
    use kafka_protocol::protocol::StrBytes;
    let mut d = DescribeTransactionsRequest::default();
    d.transactional_ids = vec![TransactionalId(StrBytes::from_string(id.to_string()))];
    let r: DescribeTransactionsResponse = crate::wire_support::call_once(addr.parse().unwrap(), ApiKey::DescribeTransactions, 0, &d);
    r.transaction_states[0].transaction_state.to_string()
}

const WINDOWED: &str = r#"
[processors.per_key]
guarantee = "GUARANTEE"
commit_interval = "INTERVAL"
threads = 2
[processors.per_key.source]
topics = ["events"]
[processors.per_key.key]
fields = ["k"]
[processors.per_key.time]
field = "t"
idle_timeout = "1h"
[processors.per_key.window]
type = "tumbling"
size = "100ms"
grace = "0ms"
[processors.per_key.aggregates]
n = { fn = "count" }
total = { fn = "sum", field = "v" }
[processors.per_key.output]
topic = "per-key"
emit = "final"
"#;

#[test]
fn a_processor_killed_at_random_points_materializes_the_reference() {
    let (duplicates, _) = processor_crash_run("at_least_once", "2s", 10..200);
    // Windows emitted after the last checkpoint are emitted again after the
    // restart: the table is right, the log has repeats (what exactly_once
    // removes for read_committed readers; this shows the kills land there).
    assert!(duplicates > 0, "no window was written twice: the kills never fell between output and checkpoint");
}

#[test]
fn an_exactly_once_processor_killed_at_random_points_writes_each_window_once() {
    let (duplicates, _) = processor_crash_run("exactly_once", "2s", 10..200);
    assert_eq!(duplicates, 0, "a read_committed reader saw windows written twice");
}

#[test]
fn an_exactly_once_processor_checkpointing_deltas_often_killed_at_random_points_writes_each_window_once() {
    // Most checkpoints are delta records, some new bases. Every 20 ms, with
    // kills within 30 ms of a chunk: the kills land among many appends and
    // rollovers; every 100 ms, with kills within 200 ms: more of them leave
    // an open transaction after a delta record.
    for (interval, kill_after) in [("20ms", 0..30), ("100ms", 0..200)] {
        let (duplicates, delta_records) = processor_crash_run("exactly_once", interval, kill_after);
        assert_eq!(duplicates, 0, "every {interval}: a read_committed reader saw windows written twice");
        assert!(delta_records > 0, "every {interval}: no kill found delta records to recover from");
    }
}

/// Runs the processor crash scenario with a guarantee and commit interval,
/// killing the broker within `kill_after` ms of each chunk; returns how many
/// output records a read_committed reader saw beyond one per window, and
/// how many delta checkpoint records the restarts found.
fn processor_crash_run(guarantee: &str, commit_interval: &str, kill_after: std::ops::Range<u64>) -> (usize, usize) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("eddy.toml");
    std::fs::write(&config, WINDOWED.replace("GUARANTEE", guarantee).replace("INTERVAL", commit_interval)).unwrap();
    let data = dir.path().join("data");
    let mut addr = free_addr();
    let mut broker = start_with(&data, &mut addr, Some(&config));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let a: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &addr).create().unwrap();
    let t = rdkafka::admin::NewTopic::new("events", 2, rdkafka::admin::TopicReplication::Fixed(1));
    assert!(rt.block_on(a.create_topics(&[t], &rdkafka::admin::AdminOptions::new())).unwrap()[0].is_ok());

    // Event times rise within each partition, so no record is ever late and
    // the final windows are exactly the windows of all records.
    let mut reference: std::collections::BTreeMap<(String, i64), (i64, i64)> = std::collections::BTreeMap::new();
    let mut seq = 0i64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut delta_records = 0;
    let mut send_chunk = |addr: &str, n: usize, reference: &mut std::collections::BTreeMap<(String, i64), (i64, i64)>| {
        let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", addr).set("enable.idempotence", "true").set("linger.ms", "2").set("log_level", "0").create().unwrap();
        for _ in 0..n {
            seq += 1;
            let key = format!("k{}", seq % 7);
            let t = 1_000 + seq * 3;
            let v = seq % 10;
            let e = reference.entry((key.clone(), t - t.rem_euclid(100))).or_insert((0, 0));
            e.0 += 1;
            e.1 += v;
            let value = format!(r#"{{"k":"{key}","t":{t},"v":{v}}}"#);
            p.send(BaseRecord::<str, str>::to("events").partition((seq % 2) as i32).key(&key).payload(&value)).unwrap();
        }
        p.flush(Duration::from_secs(30)).unwrap();
    };
    for _ in 0..5 {
        send_chunk(&addr, 2_000, &mut reference);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Soon after the chunk: its windows are written, the next checkpoint
        // (every 2 s) has not happened yet.
        std::thread::sleep(Duration::from_millis(kill_after.start + rng % (kill_after.end - kill_after.start)));
        broker.kill().unwrap(); // SIGKILL, whatever the processor is doing
        broker.wait().unwrap();
        delta_records += delta_records_of(&data.join("processors/per_key.checkpoint"));
        broker = start_with(&data, &mut addr, Some(&config));
    }
    // Two records far ahead (one per partition) close every window.
    {
        let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", &addr).set("log_level", "0").create().unwrap();
        for part in 0..2 {
            p.send(BaseRecord::<str, str>::to("events").partition(part).key("end").payload(r#"{"k":"end","t":100000000,"v":0}"#)).unwrap();
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }
    // The compacted output, read as a table (the latest value per key), is the reference.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records_read;
    let table = loop {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &addr).set("group.id", "verify-table").set("enable.auto.commit", "false").set("log_level", "0").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..2 {
            tpl.add_partition_offset("per-key", p, Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut table: std::collections::BTreeMap<(String, i64), (i64, i64)> = std::collections::BTreeMap::new();
        records_read = 0;
        // Read until idle: with transactions the last offsets are markers,
        // which a reader never receives.
        let mut idle_since = Instant::now();
        while idle_since.elapsed() < Duration::from_millis(1500) {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                idle_since = Instant::now();
                let m = m.unwrap_or_else(|e| panic!("consumer error while verifying the output: {e:?}"));
                records_read += 1;
                let k: serde_json::Value = serde_json::from_slice(m.key().unwrap()).unwrap();
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                table.insert((k["key"].as_str().unwrap().to_string(), k["start"].as_i64().unwrap()), (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap()));
            }
        }
        if table == reference || Instant::now() > deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let missing = reference.keys().filter(|k| !table.contains_key(*k)).count();
    let wrong = reference.iter().filter(|(k, v)| table.get(*k).is_some_and(|t| t != *v)).count();
    assert_eq!(table.len(), reference.len(), "{missing} windows missing, {wrong} wrong");
    assert!(table == reference, "{wrong} windows differ from the reference");
    eprintln!("processor crash test ({guarantee}, commit every {commit_interval}): {} windows over {seq} records, 5 kills finding {delta_records} delta records, {records_read} records read", reference.len());
    // SAFETY: signalling our own child for a clean stop.
    unsafe { libc::kill(broker.id() as i32, libc::SIGTERM) };
    assert!(broker.wait().unwrap().success());
    (records_read - reference.len(), delta_records)
}

/// The records of a processor's delta checkpoint file that apply to its
/// base (storage-format.md §14): same generation, whole frames.
fn delta_records_of(base: &std::path::Path) -> usize {
    let (Ok(b), Ok(d)) = (std::fs::read(base), std::fs::read(eddy::processor::checkpoint::delta_path(base))) else { return 0 };
    if b.len() < 14 || d.len() < 18 || b[6..14] != d[6..14] {
        return 0;
    }
    let (mut at, mut n) = (18, 0);
    while at + 8 <= d.len() {
        at += 8 + u32::from_be_bytes(d[at..at + 4].try_into().unwrap()) as usize;
        n += usize::from(at <= d.len());
    }
    n
}
