//! Broker benchmark, side by side: librdkafka against the real `eddy` binary
//! and, when one is on the machine, a peer Kafka-compatible broker (Tansu,
//! with its in-memory and its SQLite storage engines), over loopback.
//!
//! `cargo bench --bench broker [-- OPTIONS]`
//!
//! Every round starts each broker afresh (empty data directory) and runs the
//! same workload against it; rounds alternate which broker goes first. Per
//! broker and scenario it prints the median over rounds, and Eddy's ratio to
//! each peer. Scenarios:
//! * produce of 1 KiB and 100-byte records to 1 and 8 partitions with acks=1
//!   and acks=all: MB/s, records/s, broker CPU ms per MB produced (the
//!   broker's threads' time on CPU from /proc/<pid>/task/*/schedstat, or
//!   clock ticks from /proc/<pid>/stat when a thread exited meanwhile), the
//!   producer's own CPU;
//! * produce latency (send → delivery report, acks=all, linger.ms 0) at a
//!   fixed offered rate: p50 / p99 / p99.9;
//! * consume of the 1 KiB, 8-partition topic from the start with client
//!   defaults: MB/s and broker CPU ms per MB; then the same records read by
//!   hand-built Fetch requests that do nothing with them (the broker's side
//!   of the consume ceiling); each reader starts with the topic's files out
//!   of the page cache;
//! * end-to-end latency (send → a consumer receives it) at a modest rate;
//! * the broker's peak RSS over the round (VmHWM).
//!
//! It also measures the machine's raw limits in the same run: loopback TCP
//! throughput, sequential file writes with fdatasync, and (with the latency
//! scenario) the latency of a direct write and fdatasync per 1 ms step at
//! the offered rate, the floor under the broker's acks=all latency.
//!
//! Options: `--mb N` (MB per produce scenario, default 256), `--rate-mb R`
//! (offered MB/s for the latency scenario, default 100), `--secs S` (its
//! length, default 5), `--rounds N` (default 2), `--dir PATH` (data, default
//! target/tmp), `--tansu PATH` (default: `tansu` on PATH or in
//! $TANSU; no peer when absent), `--only eddy|tansu-memory|tansu-sqlite`
//! (repeatable), `--scenario produce|consume|latency|e2e` (repeatable; default
//! all; consume reads what produce wrote). Prints results; never fails on a
//! number.

// Request framing shared with the integration tests' hand-built requests.
#[path = "../tests/it/wire_support.rs"]
mod wire_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, ThreadedProducer};

struct Args {
    mb: u64,
    rate_mb: u64,
    secs: u64,
    rounds: usize,
    dir: PathBuf,
    tansu: Option<PathBuf>,
    only: Vec<String>,
    /// Scenarios to run (empty: all): produce, consume, latency, e2e.
    scenarios: Vec<String>,
    /// Produce cells to run, as size/partitions/acks (empty: all).
    cells: Vec<String>,
}

impl Args {
    /// Whether scenario `s` runs (all do when none was named).
    fn runs(&self, s: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|x| x == s)
    }

    /// Whether the produce cell of `size`-byte records on `partitions`
    /// partitions with `acks` runs (all do when no --cell was named).
    fn runs_cell(&self, size: usize, partitions: i32, acks: &str) -> bool {
        self.cells.is_empty() || self.cells.contains(&format!("{size}/{partitions}/{acks}"))
    }
}

fn args() -> Args {
    let mut a = Args { mb: 256, rate_mb: 100, secs: 5, rounds: 2, dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp"), tansu: None, only: Vec::new(), scenarios: Vec::new(), cells: Vec::new() };
    let v: Vec<String> = std::env::args().skip(1).filter(|x| x != "--bench").collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--mb" => a.mb = val.parse().expect("--mb N"),
            "--rate-mb" => a.rate_mb = val.parse().expect("--rate-mb R"),
            "--secs" => a.secs = val.parse().expect("--secs S"),
            "--rounds" => a.rounds = val.parse().expect("--rounds N"),
            "--dir" => a.dir = val.into(),
            "--tansu" => a.tansu = Some(val.into()),
            "--only" => a.only.push(val),
            "--scenario" => match val.as_str() {
                "produce" | "consume" | "latency" | "e2e" => a.scenarios.push(val),
                other => panic!("--scenario {other}: one of produce, consume (needs produce), latency, e2e"),
            },
            "--cell" => match val.split('/').collect::<Vec<_>>()[..] {
                ["1024" | "100", "1" | "8", "1" | "all"] => a.cells.push(val),
                _ => panic!("--cell {val}: SIZE/PARTITIONS/ACKS with SIZE 1024 or 100, PARTITIONS 1 or 8, ACKS 1 or all"),
            },
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    a.tansu = a.tansu.or_else(|| std::env::var_os("TANSU").map(PathBuf::from)).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("tansu")).find(|p| p.is_file()))
    });
    a
}

/// CPU seconds (user + system) of a process, in clock ticks.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A process's CPU time at one moment: its clock-tick count (10 ms steps,
/// threads that exited included) and each live thread's nanoseconds on CPU
/// (`/proc/<pid>/task/<tid>/schedstat`).
struct CpuClock {
    pid: u32,
    ticks: f64,
    threads: std::collections::HashMap<String, u64>,
}

impl CpuClock {
    fn now(pid: u32) -> CpuClock {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
        let threads = tasks
            .filter_map(|t| {
                let ns = std::fs::read_to_string(t.path().join("schedstat")).ok()?.split_whitespace().next()?.parse().ok()?;
                Some((t.file_name().to_string_lossy().into_owned(), ns))
            })
            .collect();
        CpuClock { pid, ticks: cpu_seconds(pid), threads }
    }

    /// CPU seconds since `self`: to the nanosecond when no thread exited in
    /// between (a thread's time is lost with it), else in clock ticks.
    fn elapsed(&self) -> f64 {
        let later = CpuClock::now(self.pid);
        if self.threads.keys().all(|t| later.threads.contains_key(t)) {
            later.threads.iter().map(|(t, ns)| ns - self.threads.get(t).copied().unwrap_or(0).min(*ns)).sum::<u64>() as f64 / 1e9
        } else {
            later.ticks - self.ticks
        }
    }

    /// The CPU seconds since `self` of the process's busiest thread (of
    /// those alive now; one that started since counts from zero).
    fn busiest(&self) -> f64 {
        let later = CpuClock::now(self.pid);
        later.threads.iter().map(|(t, ns)| ns - self.threads.get(t).copied().unwrap_or(0).min(*ns)).max().unwrap_or(0) as f64 / 1e9
    }
}

/// The bench process's own CPU clock.
fn own_cpu() -> CpuClock {
    CpuClock::now(std::process::id())
}

/// Peak resident set of a process in MB (VmHWM).
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).map_or(0.0, |kb| kb / 1024.0)
}

/// The brokers a run can compare.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Eddy,
    TansuMemory,
    TansuSqlite,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Eddy => "eddy",
            Kind::TansuMemory => "tansu-memory",
            Kind::TansuSqlite => "tansu-sqlite",
        }
    }
}

struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start(kind: Kind, tansu: Option<&Path>, dir: &Path) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = match kind {
            Kind::Eddy => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_eddy"));
                c.args(["serve", "--listen", &addr, "--http-listen", "off", "--data-dir"]).arg(dir);
                c
            }
            Kind::TansuMemory | Kind::TansuSqlite => {
                let mut c = Command::new(tansu.expect("a tansu binary"));
                let url = format!("tcp://{addr}");
                // Tansu 0.6 reads a sqlite:// path relative to its working directory.
                let storage = if kind == Kind::TansuMemory { "memory://tansu/" } else { "sqlite://tansu.db" };
                c.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", storage]).current_dir(dir);
                c
            }
        };
        let child = cmd.env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("starting {}: {e}", kind.name()));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "{} did not start", kind.name());
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
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

/// Records each delivery's time since its send (the opaque), in ms.
#[derive(Default)]
struct Timing {
    ms: Mutex<Vec<f64>>,
    failed: AtomicU64,
}
impl ClientContext for Timing {}
impl ProducerContext for Timing {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Instant>) {
        match r {
            Ok(_) => self.ms.lock().push(sent.elapsed().as_secs_f64() * 1000.0),
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    let a: AdminClient<DefaultClientContext> = client(b).create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(a.create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())).unwrap();
    r[0].as_ref().expect("topic created");
}

struct Produced {
    mb_s: f64,
    records_s: f64,
    broker_ms_per_mb: f64,
    producer_cores: f64,
}

/// Produces `count` records of `size` bytes as fast as one librdkafka
/// producer can.
fn produce(b: &Broker, topic: &str, count: u64, size: usize, acks: &str) -> Produced {
    // Delivery reports are served by the client's polling thread; a full
    // queue makes the sender sleep (`BaseProducer::poll` would spin through
    // its wait, see `latency`).
    let p: ThreadedProducer<Counting> = client(b)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("compression.codec", "none")
        .set("queue.buffering.max.kbytes", "262144")
        .create_with_context(Counting::default())
        .unwrap();
    let value = vec![b'x'; size];
    let keys: Vec<String> = (0..1024).map(|i| format!("key-{i}")).collect();
    let (broker_cpu0, own_cpu0, t0) = (CpuClock::now(b.pid()), own_cpu(), Instant::now());
    let mut sent = 0u64;
    while sent < count {
        let rec = BaseRecord::to(topic).key(keys[(sent % 1024) as usize].as_str()).payload(&value[..]);
        match p.send(rec) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => std::thread::sleep(Duration::from_millis(1)),
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
    // Timed to the last delivery report. Not by `flush`: rdkafka 0.39's
    // flush polls in 100 ms steps that each last their whole 100 ms, so it
    // returns up to 100 ms after the last report (a tenth or more of a cell).
    let ctx = p.context();
    while ctx.ok.load(Ordering::Relaxed) + ctx.failed.load(Ordering::Relaxed) < count {
        std::thread::sleep(Duration::from_millis(1));
        assert!(t0.elapsed() < Duration::from_secs(300), "deliveries outstanding after 300 s");
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(ctx.failed.load(Ordering::Relaxed), 0, "deliveries failed");
    assert_eq!(ctx.ok.load(Ordering::Relaxed), count);
    let mb = count as f64 * size as f64 / 1e6;
    Produced {
        mb_s: mb / secs,
        records_s: count as f64 / secs,
        broker_ms_per_mb: broker_cpu0.elapsed() * 1000.0 / mb,
        producer_cores: own_cpu0.elapsed() / secs,
    }
}

/// Consumes `count` records of `topic` from the start, with the client's
/// defaults (a group member). Returns (MB/s, broker CPU ms per MB, the
/// consumer process's CPU in cores, and its busiest thread's: near 1
/// means that librdkafka thread is the bottleneck, not the broker).
fn consume(b: &Broker, topic: &str, count: u64) -> (f64, f64, f64, f64) {
    let c: BaseConsumer = client(b).set("group.id", format!("bench-{topic}")).set("auto.offset.reset", "earliest").create().unwrap();
    c.subscribe(&[topic]).unwrap();
    // Timed from the first record: the group join (and the broker's initial
    // rebalance delay, 3 s by default as in Kafka) is not reading.
    let started = Instant::now();
    let (mut cpu0, mut own0, mut t0) = (CpuClock::now(b.pid()), own_cpu(), started);
    let (mut n, mut bytes) = (0u64, 0u64);
    while n < count {
        if let Some(m) = c.poll(Duration::from_secs(10)) {
            let m = m.expect("consume");
            if n == 0 {
                (cpu0, own0, t0) = (CpuClock::now(b.pid()), own_cpu(), Instant::now());
            }
            bytes += m.payload().map_or(0, |p| p.len()) as u64;
            n += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "consume too slow");
    }
    let (mb, secs) = (bytes as f64 / 1e6, t0.elapsed().as_secs_f64());
    (mb / secs, cpu0.elapsed() * 1000.0 / mb, own0.elapsed() / secs, own0.busiest() / secs)
}

/// Reads `count` records of `topic` (its `partitions`, from offset 0) with
/// hand-built Fetch requests (v11), one in flight at a time and with
/// librdkafka's default sizes (1 MiB per partition, 50 MiB per response,
/// read_committed), doing nothing with the records but walk their batch
/// headers for the next offsets. What a client that spends nothing on
/// records could get: the broker's side of the consume ceiling. Returns
/// (MB/s of 1 KiB values, as `consume` counts them, and broker CPU ms per MB).
fn raw_fetch(b: &Broker, topic: &str, partitions: i32, count: u64, size: usize) -> (f64, f64) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    const VERSION: i16 = 11;
    let mut s = std::net::TcpStream::connect(&b.addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut next = vec![0i64; partitions as usize];
    let (mut n, mut correlation) = (0u64, 0i32);
    let mut frame = Vec::new();
    let (cpu0, t0) = (CpuClock::now(b.pid()), Instant::now());
    while n < count {
        let mut ft = FetchTopic::default();
        ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
        ft.partitions = next
            .iter()
            .enumerate()
            .map(|(i, &at)| {
                let mut fp = FetchPartition::default();
                (fp.partition, fp.fetch_offset, fp.partition_max_bytes) = (i as i32, at, 1 << 20);
                fp
            })
            .collect();
        let mut req = FetchRequest::default();
        (req.replica_id, req.max_wait_ms, req.min_bytes, req.max_bytes, req.isolation_level) = (BrokerId(-1), 500, 1, 52_428_800, 1);
        req.topics = vec![ft];
        s.write_all(&wire_support::request_bytes_from("raw-fetch", ApiKey::Fetch, VERSION, correlation, &req)).unwrap();
        correlation += 1;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        // Into the same buffer every time, neither zeroed nor copied again.
        frame.clear();
        let want = i32::from_be_bytes(len) as u64;
        assert_eq!((&mut s).take(want).read_to_end(&mut frame).unwrap() as u64, want, "a short fetch response");
        // SAFETY: `body` and everything decoded from it (`resp`) are dropped
        // at the end of this iteration, before `frame` changes again.
        let mut body = bytes::Bytes::from_static(unsafe { std::mem::transmute::<&[u8], &'static [u8]>(&frame[..]) });
        ResponseHeader::decode(&mut body, ApiKey::Fetch.response_header_version(VERSION)).unwrap();
        let resp = FetchResponse::decode(&mut body, VERSION).unwrap();
        for p in resp.responses.iter().flat_map(|t| &t.partitions) {
            assert_eq!(p.error_code, 0, "raw fetch of partition {}: error {}", p.partition_index, p.error_code);
            // Whole batches only: the last one may be cut at the size limit.
            for (h, _) in eddy::log::batch::whole_batches(p.records.as_deref().unwrap_or_default()) {
                next[p.partition_index as usize] = h.next_offset();
                n += h.last_offset_delta as u64 + 1;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "raw fetch too slow");
    }
    let mb = (n * size as u64) as f64 / 1e6;
    (mb / t0.elapsed().as_secs_f64(), cpu0.elapsed() * 1000.0 / mb)
}

/// Evicts every file under `dir` from the page cache (`posix_fadvise`
/// DONTNEED: clean, unmapped pages only; the log's data is written
/// directly, so its pages are clean), so that each reader
/// of the consume scenario starts from the same state: what is not in the
/// broker's own memory comes from the disk. Nothing happens to files a
/// broker keeps elsewhere, or to data it holds in memory.
fn evict_page_cache(dir: &Path) {
    use std::os::fd::AsRawFd;
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => evict_page_cache(&path),
            Ok(t) if t.is_file() => {
                if let Ok(f) = std::fs::File::open(&path) {
                    // SAFETY: a valid descriptor; advice only, no memory involved.
                    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                }
            }
            _ => {}
        }
    }
}

fn quantiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |f: f64| v[((v.len() as f64 * f) as usize).min(v.len() - 1)];
    (q(0.5), q(0.99), q(0.999))
}

/// Offers `rate_mb` MB/s of 1 KiB records for `secs` (acks=all, linger.ms
/// 0), paced in 1 ms steps. Returns (p50, p99, p99.9) of send → delivery in
/// ms and the rate actually achieved in MB/s.
///
/// Delivery reports are served by the client's own polling thread, which
/// waits in librdkafka for them. The sending thread sleeps between steps.
/// (This loop used to call `BaseProducer::poll` with 200 µs: rdkafka 0.39
/// spins through any wait under a millisecond, since librdkafka's timeout
/// is whole milliseconds, so the client kept a core busy beside the broker
/// on a 2-core machine.)
fn latency(b: &Broker, topic: &str, rate_mb: u64, secs: u64) -> ((f64, f64, f64), f64) {
    let p: ThreadedProducer<Timing> =
        client(b).set("acks", "all").set("linger.ms", "0").set("queue.buffering.max.kbytes", "1048576").set("queue.buffering.max.messages", "1000000").create_with_context(Timing::default()).unwrap();
    let value = vec![b'y'; 1024];
    // Connected, with the topic's metadata, before the first timed send:
    // else the first records wait for the client's bootstrap (tens of ms)
    // and that wait is counted as the broker's.
    p.send(BaseRecord::with_opaque_to(topic, Box::new(Instant::now())).key("k").payload(&value[..])).map_err(|(e, _)| e).expect("warm-up sent");
    p.flush(Duration::from_secs(30)).expect("warm-up flushed");
    p.context().ms.lock().clear();
    let per_sec = rate_mb as f64 * 1e6 / 1024.0;
    let total = (per_sec * secs as f64) as u64;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * per_sec) as u64).min(total);
        while sent < due {
            match p.send(BaseRecord::with_opaque_to(topic, Box::new(Instant::now())).key("k").payload(&value[..])) {
                Ok(()) => sent += 1,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
        if start.elapsed() > Duration::from_secs(secs * 4 + 30) {
            break;
        }
    }
    // To the last delivery report (see `produce` on flush).
    while (p.context().ms.lock().len() as u64) + p.context().failed.load(Ordering::Relaxed) < sent {
        std::thread::sleep(Duration::from_millis(1));
        assert!(start.elapsed() < Duration::from_secs(secs * 4 + 150), "deliveries outstanding");
    }
    let achieved = sent as f64 * 1024.0 / 1e6 / start.elapsed().as_secs_f64();
    assert_eq!(p.context().failed.load(Ordering::Relaxed), 0, "deliveries failed");
    let ms = std::mem::take(&mut *p.context().ms.lock());
    (quantiles(ms), achieved)
}

/// Sends 1 000 records/s for `secs`, each carrying its send time, while a
/// consumer (client defaults) reads them. Returns (p50, p99, p99.9) in ms.
fn end_to_end(b: &Broker, topic: &str, secs: u64) -> (f64, f64, f64) {
    // The topic is fresh: reading from the start misses nothing.
    let c: BaseConsumer = client(b).set("group.id", "bench-e2e").set("auto.offset.reset", "earliest").create().unwrap();
    c.subscribe(&[topic]).unwrap();
    // Joined, positioned and fetching before the first timed send: a
    // warm-up record must come back first (else the group join and offset
    // lookups would be counted as the first records' latency).
    let warm: BaseProducer = client(b).set("linger.ms", "0").create().unwrap();
    warm.send(BaseRecord::<str, str>::to(topic).key("k").payload("warm-up")).map_err(|(e, _)| e).expect("warm-up sent");
    warm.flush(Duration::from_secs(30)).expect("warm-up flushed");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            if m.payload() == Some(b"warm-up".as_slice()) {
                break;
            }
        }
    }
    let base = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (p, stop): (BaseProducer, _) = (client(b).set("acks", "1").set("linger.ms", "0").create().unwrap(), Arc::clone(&stop));
        let topic = topic.to_string();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < secs * 1000 {
                let due = base + Duration::from_millis(n);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
                let at = base.elapsed().as_nanos() as u64;
                let _ = p.send(BaseRecord::<str, [u8]>::to(&topic).key("k").payload(&at.to_le_bytes()));
                p.poll(Duration::ZERO);
                n += 1;
            }
            p.flush(Duration::from_secs(30)).ok();
            n
        })
    };
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs + 30);
    let mut last = Instant::now();
    loop {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            if let Some(p) = m.payload().filter(|p| p.len() == 8) {
                let at = u64::from_le_bytes(p.try_into().unwrap());
                lat.push((base.elapsed().as_nanos() as u64 - at) as f64 / 1e6);
                last = Instant::now();
            }
        }
        let drained = producer.is_finished() && (lat.len() as u64 >= secs * 1000 || last.elapsed() > Duration::from_secs(3));
        if drained || Instant::now() > deadline {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    quantiles(lat)
}

/// The raw loopback limit: `mb` MB through one TCP connection in 1 MiB
/// writes, read by another thread. MB/s.
fn raw_loopback(mb: u64) -> f64 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k as u64,
            }
        }
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let t0 = Instant::now();
    for _ in 0..mb {
        s.write_all(&chunk).unwrap();
    }
    drop(s);
    let n = reader.join().unwrap();
    n as f64 / t0.elapsed().as_secs_f64() / 1e6
}

/// The raw disk limit: `mb` MB written to a plain file in 1 MiB writes,
/// with an fdatasync after every `sync_every` MiB. MB/s.
fn raw_disk(dir: &Path, mb: u64, sync_every: u64) -> f64 {
    let path = dir.join("raw.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let t0 = Instant::now();
    for i in 1..=mb {
        f.write_all(&chunk).unwrap();
        if i % sync_every == 0 || i == mb {
            f.sync_data().unwrap();
        }
    }
    let r = (mb << 20) as f64 / t0.elapsed().as_secs_f64() / 1e6;
    drop(f);
    let _ = std::fs::remove_file(path);
    r
}

/// The raw disk's latency floor under the latency scenario: every 1 ms
/// step writes that step's share of `rate_mb` MB/s (rounded up to 4 KiB)
/// at the end of a growing file, by direct I/O, then fdatasyncs: the group
/// commit an ideal broker would do, without the network or any request
/// handling. Returns (p50, p99, p99.9) in ms, each from the step's due time
/// (an overrunning step delays the next, as it would a broker's).
fn raw_disk_latency(dir: &Path, rate_mb: u64, secs: u64) -> Option<(f64, f64, f64)> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let path = dir.join("raw-latency.bin");
    // None where the file system refuses direct I/O (tmpfs, some overlays).
    let f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).custom_flags(libc::O_DIRECT).open(&path).ok()?;
    let step = ((rate_mb * 1_000_000 / 1000) as usize).div_ceil(4096).max(1) * 4096;
    // Direct I/O wants 4 KiB-aligned memory: the aligned part of a larger buffer.
    let backing = vec![b'r'; step + 4096];
    let at = backing.as_ptr().align_offset(4096);
    let buf = &backing[at..at + step];
    let start = Instant::now();
    let mut lat = Vec::new();
    for i in 0..secs * 1000 {
        let due = start + Duration::from_millis(i);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        f.write_all_at(buf, i * step as u64).expect("direct write");
        f.sync_data().expect("fdatasync");
        lat.push(due.elapsed().as_secs_f64() * 1000.0);
    }
    drop(f);
    let _ = std::fs::remove_file(path);
    Some(quantiles(lat))
}

/// One broker, one round: every scenario's (name, value), in the order run.
fn round(kind: Kind, a: &Args, dir: &Path) -> Vec<(String, f64)> {
    let mut out = Results::default();
    let b = Broker::start(kind, a.tansu.as_deref(), dir);
    let runs = |s: &str| a.runs(s);
    for size in [1024usize, 100].into_iter().filter(|_| runs("produce")) {
        for partitions in [1, 8] {
            for acks in ["1", "all"].into_iter().filter(|acks| a.runs_cell(size, partitions, acks)) {
                let topic = format!("p{partitions}-s{size}-acks{acks}");
                create_topic(&b, &topic, partitions);
                let count = a.mb * 1_000_000 / size as u64;
                let r = produce(&b, &topic, count, size, acks);
                let name = format!("produce {size} B, {partitions} partition(s), acks={acks}");
                out.insert(format!("{name}: MB/s"), r.mb_s);
                out.insert(format!("{name}: records/s"), r.records_s);
                out.insert(format!("{name}: broker CPU ms/MB"), r.broker_ms_per_mb);
                out.insert(format!("{name}: producer cores"), r.producer_cores);
            }
        }
    }
    if runs("consume") {
        assert!(runs("produce") && a.runs_cell(1024, 8, "1"), "--scenario consume reads what the produce cell 1024/8/1 wrote: add --scenario produce (and --cell 1024/8/1 when cells are named)");
        evict_page_cache(dir);
        let count = a.mb * 1_000_000 / 1024;
        let (mb_s, ms_mb, cores, busiest) = consume(&b, "p8-s1024-acks1", count);
        out.insert("consume 1 KiB, 8 partitions, client defaults: MB/s".into(), mb_s);
        out.insert("consume 1 KiB, 8 partitions, client defaults: broker CPU ms/MB".into(), ms_mb);
        out.insert("consume 1 KiB, 8 partitions, client defaults: consumer cores".into(), cores);
        out.insert("consume 1 KiB, 8 partitions, client defaults: consumer's busiest thread (cores)".into(), busiest);
        evict_page_cache(dir);
        let (raw_mb_s, raw_ms_mb) = raw_fetch(&b, "p8-s1024-acks1", 8, count, 1024);
        out.insert("consume 1 KiB, 8 partitions, raw Fetch reader (no client): MB/s".into(), raw_mb_s);
        out.insert("consume 1 KiB, 8 partitions, raw Fetch reader (no client): broker CPU ms/MB".into(), raw_ms_mb);
    }
    if runs("latency") {
        create_topic(&b, "latency", 1);
        let ((p50, p99, p999), achieved) = latency(&b, "latency", a.rate_mb, a.secs);
        let name = format!("produce latency at {} MB/s offered, acks=all", a.rate_mb);
        out.insert(format!("{name}: achieved MB/s"), achieved);
        out.insert(format!("{name}: p50 ms"), p50);
        out.insert(format!("{name}: p99 ms"), p99);
        out.insert(format!("{name}: p99.9 ms"), p999);
    }
    if runs("e2e") {
        create_topic(&b, "e2e", 1);
        let (p50, p99, p999) = end_to_end(&b, "e2e", a.secs);
        out.insert("end-to-end latency, 1 000 records/s: p50 ms".into(), p50);
        out.insert("end-to-end latency, 1 000 records/s: p99 ms".into(), p99);
        out.insert("end-to-end latency, 1 000 records/s: p99.9 ms".into(), p999);
    }
    out.insert("broker peak RSS MB".into(), peak_rss_mb(b.pid()));
    drop(b);
    let _ = std::fs::remove_dir_all(dir);
    out.0
}

#[derive(Default)]
struct Results(Vec<(String, f64)>);

impl Results {
    fn insert(&mut self, name: String, v: f64) {
        self.0.push((name, v));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).unwrap();
    let tmp = tempfile::Builder::new().prefix("eddy-broker-bench-").tempdir_in(&a.dir).unwrap();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())).unwrap_or_default();
    println!("machine: {cpu}, {} cores; data in {}", std::thread::available_parallelism().map_or(0, |n| n.get()), tmp.path().display());
    let mut kinds = vec![Kind::Eddy];
    match &a.tansu {
        Some(t) => {
            println!("peer: {}", t.display());
            kinds.extend([Kind::TansuMemory, Kind::TansuSqlite]);
        }
        None => println!("peer: none (no tansu on PATH, in $TANSU or given with --tansu): Eddy alone"),
    }
    kinds.retain(|k| a.only.is_empty() || a.only.iter().any(|o| o == k.name()));
    assert!(!kinds.is_empty(), "--only {:?} names no broker of this run (eddy, tansu-memory, tansu-sqlite; tansu needs its binary)", a.only);

    let raw_mb = a.mb.max(256);
    println!("raw limits: loopback TCP {:.0} MB/s; file writes of 1 MiB: {:.0} MB/s with one fdatasync at the end, {:.0} MB/s with an fdatasync per MiB", raw_loopback(raw_mb * 4), raw_disk(tmp.path(), raw_mb, raw_mb), raw_disk(tmp.path(), raw_mb.min(256), 1));

    if a.runs("latency") {
        match raw_disk_latency(tmp.path(), a.rate_mb, a.secs) {
            Some((p50, p99, p999)) => println!("raw disk latency at {} MB/s (1 ms steps: a direct write and an fdatasync each): p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms", a.rate_mb),
            None => println!("raw disk latency: n/a ({} refuses O_DIRECT)", tmp.path().display()),
        }
    }

    let mut results: Vec<BTreeMap<String, Vec<f64>>> = vec![BTreeMap::new(); kinds.len()];
    let mut names: Vec<String> = Vec::new();
    for r in 0..a.rounds {
        // Alternate who goes first.
        let order: Vec<usize> = if r % 2 == 0 { (0..kinds.len()).collect() } else { (0..kinds.len()).rev().collect() };
        for i in order {
            let t0 = Instant::now();
            // A broker that fails a scenario loses that round, not the run.
            let dir = tmp.path().join(format!("{}-{r}", kinds[i].name()));
            let got = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| round(kinds[i], &a, &dir))) {
                Ok(got) => got,
                Err(_) => {
                    println!("round {} {}: FAILED (see the panic above)", r + 1, kinds[i].name());
                    continue;
                }
            };
            println!("round {} {}: {:.0} s", r + 1, kinds[i].name(), t0.elapsed().as_secs_f64());
            for (k, v) in got {
                if !names.contains(&k) {
                    names.push(k.clone());
                }
                results[i].entry(k).or_default().push(v);
            }
        }
    }

    // Ratios are Eddy's value over each peer's, when Eddy ran.
    let peers = if kinds.first() == Some(&Kind::Eddy) { &kinds[1..] } else { &kinds[..0] };
    let mut header = "| scenario (median of rounds) |".to_string();
    for k in &kinds {
        header.push_str(&format!(" {} |", k.name()));
    }
    for k in peers {
        header.push_str(&format!(" eddy / {} |", k.name()));
    }
    println!("\n{header}");
    println!("|---|{}", "---:|".repeat(kinds.len() + peers.len()));
    for name in names {
        let med: Vec<f64> = results.iter().map(|r| r.get(&name).map_or(f64::NAN, |v| median(v.clone()))).collect();
        let mut line = format!("| {name} |");
        for m in &med {
            line.push_str(&format!(" {} |", fmt(*m)));
        }
        for m in &med[med.len() - peers.len()..] {
            line.push_str(&format!(" {:.2} |", med[0] / m));
        }
        println!("{line}");
    }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}
