//! Broker benchmark: librdkafka against the real `eddy` binary over loopback.
//!
//! `cargo bench --bench broker [-- --mb N --rate R --secs S --dir PATH]`
//!
//! Starts `eddy serve` (release build) on a free loopback port with a fresh
//! data directory, then measures:
//! * produce throughput of 1 KiB records (1 and 8 partitions; acks=all and
//!   acks=1), with the broker's CPU seconds per GB ingested (from
//!   /proc/<pid>/stat) and the producer process's own CPU use;
//! * consume throughput of everything produced, from the start;
//! * produce latency (send → delivery report) at a fixed offered rate;
//! * the raw limit: the same bytes written to a file with one fdatasync.
//!
//! Prints results; never fails on a number. Results live in bench/README.md.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

struct Args {
    mb: u64,
    rate: u64,
    secs: u64,
    dir: std::path::PathBuf,
}

fn args() -> Args {
    let mut a = Args { mb: 1024, rate: 5000, secs: 10, dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp") };
    let v: Vec<String> = std::env::args().skip(1).filter(|x| x != "--bench").collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--mb" => a.mb = val.parse().expect("--mb N"),
            "--rate" => a.rate = val.parse().expect("--rate R"),
            "--secs" => a.secs = val.parse().expect("--secs S"),
            "--dir" => a.dir = val.into(),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    a
}

/// CPU seconds (user + system) of a process, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id())
}

struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start(dir: &std::path::Path) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["serve", "--listen", &addr, "--http-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting eddy");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "eddy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, addr }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn client(b: &Broker) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &b.addr).set("broker.address.family", "v4");
    c
}

#[derive(Default)]
struct Counting {
    ok: AtomicU64,
    failed: AtomicU64,
}
impl ClientContext for Counting {}
impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    let a: AdminClient<DefaultClientContext> = client(b).create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(a.create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())).unwrap();
    r[0].as_ref().expect("topic created");
}

/// Produces `count` 1 KiB records as fast as one librdkafka producer can.
/// Returns (MB/s, broker CPU s per GB, producer CPU share of one core).
fn produce(b: &Broker, topic: &str, count: u64, acks: &str) -> (f64, f64, f64) {
    let ctx = Counting::default();
    let p: BaseProducer<Counting> = client(b)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("compression.codec", "none")
        .set("queue.buffering.max.kbytes", "262144")
        .create_with_context(ctx)
        .unwrap();
    let value = vec![b'x'; 1024];
    let keys: Vec<String> = (0..1024).map(|i| format!("key-{i}")).collect();
    let (broker_cpu0, own_cpu0, t0) = (cpu_seconds(b.child.id()), own_cpu_seconds(), Instant::now());
    let mut sent = 0u64;
    while sent < count {
        let rec = BaseRecord::to(topic).key(keys[(sent % 1024) as usize].as_str()).payload(&value[..]);
        match p.send(rec) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                p.poll(Duration::from_millis(1));
            }
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
    p.flush(Duration::from_secs(120)).expect("flushed");
    let secs = t0.elapsed().as_secs_f64();
    let ctx = p.context();
    assert_eq!(ctx.failed.load(Ordering::Relaxed), 0, "deliveries failed");
    assert_eq!(ctx.ok.load(Ordering::Relaxed), count);
    let bytes = count as f64 * 1024.0;
    let broker_cpu = cpu_seconds(b.child.id()) - broker_cpu0;
    let own_cpu = own_cpu_seconds() - own_cpu0;
    (bytes / secs / 1e6, broker_cpu / (bytes / 1e9), own_cpu / secs)
}

/// Consumes everything in `topic` from the start. Returns MB/s.
fn consume(b: &Broker, topic: &str, partitions: i32, count: u64) -> f64 {
    let c: BaseConsumer = client(b).set("group.id", "bench").set("enable.auto.commit", "false").set("fetch.max.bytes", "52428800").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let t0 = Instant::now();
    let (mut n, mut bytes) = (0u64, 0u64);
    while n < count {
        if let Some(m) = c.poll(Duration::from_secs(10)) {
            let m = m.expect("consume");
            bytes += m.payload().map_or(0, |p| p.len()) as u64;
            n += 1;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "consume too slow");
    }
    bytes as f64 / t0.elapsed().as_secs_f64() / 1e6
}

/// Offered load of `rate` records/s for `secs`; per-record latency from
/// send to delivery report, acks=all. Returns (p50, p99, p999) in ms.
fn latency(b: &Broker, topic: &str, rate: u64, secs: u64) -> (f64, f64, f64) {
    let p: FutureProducer = client(b).set("acks", "all").set("linger.ms", "0").create().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let value = vec![b'y'; 1024];
    let lat = Arc::new(parking_lot::Mutex::new(Vec::with_capacity((rate * secs) as usize)));
    rt.block_on(async {
        let start = Instant::now();
        let mut handles = Vec::new();
        for i in 0..rate * secs {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            let sent = Instant::now();
            let fut = p.send_result(FutureRecord::to(topic).key("k").payload(&value[..])).map_err(|(e, _)| e).expect("enqueued");
            let lat = Arc::clone(&lat);
            handles.push(tokio::spawn(async move {
                fut.await.expect("report").map_err(|(e, _)| e).expect("delivered");
                lat.lock().push(sent.elapsed().as_secs_f64() * 1000.0);
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    let mut l = lat.lock().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |f: f64| l[((l.len() as f64 * f) as usize).min(l.len() - 1)];
    (q(0.5), q(0.99), q(0.999))
}

/// The raw limit: the same bytes written to a plain file in 1 MiB writes,
/// then one fdatasync. MB/s.
fn raw_disk(dir: &std::path::Path, mb: u64) -> f64 {
    let path = dir.join("raw.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let t0 = Instant::now();
    for _ in 0..mb {
        f.write_all(&chunk).unwrap();
    }
    f.sync_data().unwrap();
    let r = (mb << 20) as f64 / t0.elapsed().as_secs_f64() / 1e6;
    drop(f);
    let _ = std::fs::remove_file(path);
    r
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).unwrap();
    let tmp = tempfile::Builder::new().prefix("eddy-broker-bench-").tempdir_in(&a.dir).unwrap();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())).unwrap_or_default();
    println!("machine: {cpu}, {} cores; data in {}", std::thread::available_parallelism().map_or(0, |n| n.get()), tmp.path().display());
    let count = a.mb * 1024; // 1 KiB records
    println!("raw file write + one fdatasync: {:.0} MB/s", raw_disk(tmp.path(), a.mb));
    let b = Broker::start(&tmp.path().join("data"));
    println!("| scenario | MB/s | broker CPU s/GB | producer CPU (cores) |");
    println!("|---|---:|---:|---:|");
    for (partitions, acks) in [(1, "all"), (8, "all"), (1, "1"), (8, "1")] {
        let topic = format!("p{partitions}-acks{acks}");
        create_topic(&b, &topic, partitions);
        let (mbs, cpu_gb, prod) = produce(&b, &topic, count, acks);
        println!("| produce {partitions} partition(s), acks={acks}, {} MB | {mbs:.1} | {cpu_gb:.3} | {prod:.2} |", count / 1024);
    }
    for partitions in [1, 8] {
        let topic = format!("p{partitions}-acksall");
        let mbs = consume(&b, &topic, partitions, count);
        println!("| consume {partitions} partition(s) from the start | {mbs:.1} | | |");
    }
    create_topic(&b, "latency", 1);
    let (p50, p99, p999) = latency(&b, "latency", a.rate, a.secs);
    println!("produce latency, acks=all, {} records/s of 1 KiB for {} s: p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms", a.rate, a.secs);
    drop(b);
}
