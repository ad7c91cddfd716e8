//! Storage benchmark: the partition log against a plain file doing the same
//! I/O with the same fsync cadence, in one run. What each scenario does, the
//! command and the measured numbers are in `bench/README.md`.
//!
//! `cargo bench --bench log -- [all|append|append-durable|read|lookup|partitions|compact]...
//!  [--mb N] [--durable-mb N] [--dir PATH] [--runs N] [--threads N] [--partitions N] [--partition-runs N] [--secs S]
//!  [--compact-records N] [--compact-keys N] [--map-mb N]`

/// The allocator the `eddy` binary uses.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy::log::batch::BatchHeader;
use eddy::log::{now_ms, Log, LogConfig, LogManager};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const MIB: u64 = 1024 * 1024;
const RECORDS_PER_BATCH: usize = 16;
const VALUE_LEN: usize = 1024;
const READ_CHUNK: usize = 1 << 20;

struct Opts {
    /// Scenarios to run; empty means all.
    scenarios: Vec<String>,
    mb: u64,
    durable_mb: u64,
    dir: Option<PathBuf>,
    runs: usize,
    threads: usize,
    partitions: u32,
    partition_runs: usize,
    secs: f64,
    compact_records: u64,
    compact_keys: u64,
    /// The small offset map of the second compaction variant (forces passes).
    map_mb: u64,
}

fn parse_args() -> Res<Opts> {
    let mut o = Opts {
        scenarios: vec![],
        mb: 1024,
        durable_mb: 256,
        dir: None,
        runs: 2,
        threads: 4,
        partitions: 10_000,
        partition_runs: 1,
        secs: 20.0,
        compact_records: 10_000_000,
        compact_keys: 1_000_000,
        map_mb: 16,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--mb" => o.mb = value()?.parse()?,
            "--durable-mb" => o.durable_mb = value()?.parse()?,
            "--dir" => o.dir = Some(PathBuf::from(value()?)),
            "--runs" => o.runs = value()?.parse::<usize>()?.max(1),
            "--threads" => o.threads = value()?.parse::<usize>()?.max(1),
            "--partitions" => o.partitions = value()?.parse()?,
            "--partition-runs" => o.partition_runs = value()?.parse::<usize>()?.max(1),
            "--secs" => o.secs = value()?.parse()?,
            "--compact-records" => o.compact_records = value()?.parse()?,
            "--compact-keys" => o.compact_keys = value()?.parse::<u64>()?.max(1),
            "--map-mb" => o.map_mb = value()?.parse::<u64>()?.max(1),
            s if !s.starts_with('-') => o.scenarios.push(s.to_string()),
            s => return Err(format!("unknown option {s}").into()),
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------- batches

/// An uncompressed RecordBatch v2 as a client sends it (base offset 0, no
/// producer id): `n` records with key `k<i>`, `value_len` bytes of value, all
/// stamped `ts` (the library's own batch builder).
fn client_batch(n: usize, value_len: usize, ts: i64) -> Vec<u8> {
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let value = vec![b'x'; value_len];
    let records: Vec<eddy::log::records::NewRecord<'_>> = keys.iter().map(|k| eddy::log::records::NewRecord { key: Some(k.as_bytes()), value: Some(&value), timestamp: ts, headers: &[] }).collect();
    eddy::log::records::build_batch(&records).to_vec()
}

/// Sets the base and max timestamp of a batch whose records all have
/// timestamp delta 0, and recomputes the CRC-32C.
fn restamp(b: &mut [u8], ts: i64) {
    b[27..35].copy_from_slice(&ts.to_be_bytes());
    b[35..43].copy_from_slice(&ts.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// The offset after the last batch in a read result.
fn next_offset_after(records: &[u8]) -> u64 {
    let mut pos = 0;
    let mut next = 0;
    while let Some(h) = records.get(pos..).and_then(BatchHeader::parse) {
        next = h.next_offset() as u64;
        pos += h.total_len();
    }
    next
}

// ---------------------------------------------------------------- measuring

struct Sample {
    bytes: u64,
    elapsed: Duration,
    /// Per-append latencies (append + sync), nanoseconds.
    lat: Vec<u64>,
    /// fdatasyncs of the data file (the log's from `Log::fsync_count`).
    fsyncs: Option<u64>,
    /// Flush requests the block device completed during the run.
    dev_flushes: Option<u64>,
}

impl Sample {
    fn mibps(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.elapsed.as_secs_f64()
    }
}

/// Percentile of sorted nanosecond latencies, in microseconds.
fn pct_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn timed<T>(f: impl FnOnce() -> Res<T>) -> Res<(T, Duration)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

/// The block device's `/sys/dev/block/M:m/stat`, for flush counts.
fn device_stat(dir: &Path) -> Option<PathBuf> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    let p = PathBuf::from(format!("/sys/dev/block/{}:{}/stat", libc::major(dev), libc::minor(dev)));
    p.exists().then_some(p)
}

/// Completed flush requests (field 16 of the block stat file, Linux ≥ 5.5).
fn dev_flushes(stat: &Option<PathBuf>) -> Option<u64> {
    let s = std::fs::read_to_string(stat.as_ref()?).ok()?;
    s.split_whitespace().nth(15)?.parse().ok()
}

/// A `kB` field of /proc/self/status (or /proc/meminfo), in MiB.
fn kb_field(text: &str, field: &str) -> f64 {
    let v = text.lines().find_map(|l| l.strip_prefix(field)).unwrap_or("").trim();
    v.trim_end_matches(" kB").parse::<f64>().map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (RSS, anonymous RSS, file-backed RSS) of this process, and the system's
/// page cache, in MiB.
fn memory() -> [f64; 4] {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    [kb_field(&status, "VmRSS:"), kb_field(&status, "RssAnon:"), kb_field(&status, "RssFile:"), kb_field(&meminfo, "Cached:")]
}

fn soft_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills a struct on our stack.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count())
}

/// Result rows, one value per run; printed as a table at the end.
#[derive(Default)]
struct Table {
    rows: Vec<(String, String, Vec<f64>)>,
}

impl Table {
    fn add(&mut self, scenario: &str, metric: &str, v: f64) {
        println!("  {scenario:<15} {metric:<40} {v:>12.2}");
        match self.rows.iter_mut().find(|r| r.0 == scenario && r.1 == metric) {
            Some(r) => r.2.push(v),
            None => self.rows.push((scenario.into(), metric.into(), vec![v])),
        }
    }

    fn print(&self) {
        let runs = self.rows.iter().map(|r| r.2.len()).max().unwrap_or(0);
        let mut head = format!("| {:<15} | {:<40} |", "scenario", "metric");
        for i in 1..=runs {
            head += &format!(" {:>10} |", format!("run {i}"));
        }
        println!("\n{head} {:>10} |", "median");
        println!("|{}|{}|{}-----------:|", "-".repeat(17), "-".repeat(42), "-----------:|".repeat(runs));
        for (s, m, v) in &self.rows {
            let mut line = format!("| {s:<15} | {m:<40} |");
            for i in 0..runs {
                line += &v.get(i).map_or(format!(" {:>10} |", ""), |x| format!(" {x:>10.2} |"));
            }
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
            println!("{line} {median:>10.2} |");
        }
    }
}

// ---------------------------------------------------------------- append

/// Stages `count` batches, then writes them out and fsyncs once; the
/// write-out and fsync are inside the time.
fn append_log(dir: &Path, batch: &Bytes, count: u64, config: LogConfig) -> Res<(Log, Sample)> {
    let log = Log::open(dir, config, false)?;
    let (_, elapsed) = timed(|| {
        for _ in 0..count {
            log.append_staged(batch)?;
        }
        log.sync_to(log.log_end_offset())?;
        Ok(())
    })?;
    Ok((log, Sample { bytes: count * batch.len() as u64, elapsed, lat: vec![], fsyncs: None, dev_flushes: None }))
}

/// The same bytes with one write() per batch, then one fdatasync.
fn append_raw(path: &Path, batch: &[u8], count: u64) -> Res<Sample> {
    let mut f = File::create(path)?;
    let (_, elapsed) = timed(|| {
        for _ in 0..count {
            f.write_all(batch)?;
        }
        f.sync_data()?;
        Ok(())
    })?;
    Ok(Sample { bytes: count * batch.len() as u64, elapsed, lat: vec![], fsyncs: Some(1), dev_flushes: None })
}

fn scenario_append(o: &Opts, base: &Path, t: &mut Table) -> Res<(Log, PathBuf)> {
    let batch = Bytes::from(client_batch(RECORDS_PER_BATCH, VALUE_LEN, now_ms()));
    let count = o.mb * MIB / batch.len() as u64;
    println!("append: {count} batches of {} bytes, no fsync until the end", batch.len());
    let mut kept = None;
    for run in 0..o.runs {
        let (dir, raw) = (base.join(format!("append-log-{run}")), base.join(format!("append-raw-{run}")));
        // Alternate which side goes first so neither always meets a busier disk.
        let (log, ls, rs) = if run % 2 == 0 {
            let (log, ls) = append_log(&dir, &batch, count, LogConfig::default())?;
            (log, ls, append_raw(&raw, &batch, count)?)
        } else {
            let rs = append_raw(&raw, &batch, count)?;
            let (log, ls) = append_log(&dir, &batch, count, LogConfig::default())?;
            (log, ls, rs)
        };
        t.add("append", "log MiB/s", ls.mibps());
        t.add("append", "raw file MiB/s", rs.mibps());
        t.add("append", "log / raw", ls.mibps() / rs.mibps());
        // Keep the last run's files for the read scenario.
        if let Some((old, old_raw)) = kept.replace((log, raw)) {
            let old_dir = old.dir().to_path_buf();
            drop::<Log>(old);
            remove(&old_dir);
            remove(&old_raw);
        }
    }
    Ok(kept.expect("at least one run"))
}

fn remove(p: &Path) {
    let _ = if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
}

// ---------------------------------------------------------------- durable

/// Runs `op` (one append made durable) on `threads` threads until
/// `max_bytes` worth of batches or the time limit; returns the sorted
/// per-op latencies (ns), the elapsed time and the device flushes.
fn writers(threads: usize, batch_len: u64, max_bytes: u64, limit: Duration, stat: &Option<PathBuf>, op: impl Fn() -> Res<()> + Sync) -> Res<Sample> {
    let issued = AtomicU64::new(0);
    let flushes0 = dev_flushes(stat);
    let start = Instant::now();
    let lats: Vec<Res<Vec<u64>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::new();
                    while issued.fetch_add(batch_len, Ordering::Relaxed) < max_bytes && start.elapsed() < limit {
                        let t = Instant::now();
                        op()?;
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    Ok(lat)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("writer panicked")).collect()
    });
    let elapsed = start.elapsed();
    let dev_flushes = dev_flushes(stat).zip(flushes0).map(|(a, b)| a - b);
    let mut lat = Vec::new();
    for l in lats {
        lat.extend(l?);
    }
    lat.sort_unstable();
    Ok(Sample { bytes: lat.len() as u64 * batch_len, elapsed, lat, fsyncs: None, dev_flushes })
}

/// Each writer appends a batch and waits until it is durable with
/// `Log::sync_to` on its own offset (the log's group commit).
fn durable_log(dir: &Path, batch: &Bytes, threads: usize, max_bytes: u64, limit: Duration, stat: &Option<PathBuf>) -> Res<Sample> {
    let log = Log::open(dir, LogConfig::default(), false)?;
    let mut sample = writers(threads, batch.len() as u64, max_bytes, limit, stat, || {
        let info = log.append_staged(batch)?;
        Ok(log.sync_to(info.last_offset + 1)?)
    })?;
    sample.fsyncs = Some(log.fsync_count());
    log.close()?;
    Ok(sample)
}

/// The raw peer: the writers write to one file under a mutex, then wait for
/// durability with the log's group-commit scheme (whoever holds the sync
/// lock fdatasyncs everything written so far; covered waiters return).
fn durable_raw(path: &Path, batch: &[u8], threads: usize, max_bytes: u64, limit: Duration, stat: &Option<PathBuf>) -> Res<Sample> {
    let file = File::create(path)?;
    let (end, durable, fsyncs) = (Mutex::new(0u64), Mutex::new(0u64), AtomicU64::new(0));
    let mut sample = writers(threads, batch.len() as u64, max_bytes, limit, stat, || {
        let mine = {
            let mut e = end.lock().expect("end lock");
            file.write_all_at(batch, *e)?;
            *e += batch.len() as u64;
            *e
        };
        let mut d = durable.lock().expect("sync lock");
        if *d < mine {
            let upto = *end.lock().expect("end lock");
            file.sync_data()?;
            fsyncs.fetch_add(1, Ordering::Relaxed);
            *d = upto;
        }
        Ok(())
    })?;
    sample.fsyncs = Some(fsyncs.into_inner());
    Ok(sample)
}

fn scenario_durable(o: &Opts, base: &Path, t: &mut Table) -> Res<()> {
    let batch = Bytes::from(client_batch(RECORDS_PER_BATCH, VALUE_LEN, now_ms()));
    let stat = device_stat(base);
    let limit = Duration::from_secs_f64(o.secs);
    for (name, threads) in [("durable-1", 1), ("durable-group", o.threads)] {
        println!("{name}: {threads} writer thread(s), fsync per append (group commit), up to {} MiB or {:.0} s", o.durable_mb, o.secs);
        for run in 0..o.runs {
            let (dir, raw) = (base.join(format!("{name}-log")), base.join(format!("{name}-raw")));
            let measure_log = || durable_log(&dir, &batch, threads, o.durable_mb * MIB, limit, &stat);
            let measure_raw = || durable_raw(&raw, &batch, threads, o.durable_mb * MIB, limit, &stat);
            let (ls, rs) = if run % 2 == 0 {
                let l = measure_log()?;
                (l, measure_raw()?)
            } else {
                let r = measure_raw()?;
                (measure_log()?, r)
            };
            remove(&dir);
            remove(&raw);
            t.add(name, "log MiB/s", ls.mibps());
            t.add(name, "raw file MiB/s", rs.mibps());
            t.add(name, "log / raw", ls.mibps() / rs.mibps());
            t.add(name, "log append+sync p50 µs", pct_us(&ls.lat, 0.5));
            t.add(name, "log append+sync p99 µs", pct_us(&ls.lat, 0.99));
            t.add(name, "raw write+sync p50 µs", pct_us(&rs.lat, 0.5));
            t.add(name, "raw write+sync p99 µs", pct_us(&rs.lat, 0.99));
            let per_batch = |s: &Sample, v: u64| v as f64 / s.lat.len().max(1) as f64;
            if let (Some(l), Some(r)) = (ls.fsyncs, rs.fsyncs) {
                t.add(name, "log fdatasyncs per batch", per_batch(&ls, l));
                t.add(name, "raw fdatasyncs per batch", per_batch(&rs, r));
            }
            if let (Some(l), Some(r)) = (ls.dev_flushes, rs.dev_flushes) {
                t.add(name, "log device flushes per batch", per_batch(&ls, l));
                t.add(name, "raw device flushes per batch", per_batch(&rs, r));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- read

fn read_log(log: &Log) -> Res<u64> {
    let (mut off, leo) = (log.log_start_offset(), log.log_end_offset());
    let mut bytes = 0u64;
    while off < leo {
        let r = log.read(off, READ_CHUNK, u64::MAX)?;
        if r.records.is_empty() {
            return Err(format!("read at {off} below the log end {leo} returned nothing").into());
        }
        bytes += r.records.len() as u64;
        off = next_offset_after(&r.records);
    }
    Ok(bytes)
}

fn read_raw(path: &Path) -> Res<u64> {
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let n = f.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
    }
    Ok(pos)
}

fn scenario_read(o: &Opts, fixture: &(Log, PathBuf), t: &mut Table) -> Res<()> {
    let (log, raw) = fixture;
    println!("read: {} MiB, 1 MiB reads, page cache warm (one untimed pass each first)", log.size_bytes() / MIB);
    read_log(log)?;
    read_raw(raw)?;
    for _ in 0..o.runs {
        let (lb, ld) = timed(|| read_log(log))?;
        let (rb, rd) = timed(|| read_raw(raw))?;
        if lb != rb {
            return Err(format!("the log returned {lb} bytes, the file has {rb}").into());
        }
        let (l, r) = (lb as f64 / MIB as f64 / ld.as_secs_f64(), rb as f64 / MIB as f64 / rd.as_secs_f64());
        t.add("read", "log MiB/s", l);
        t.add("read", "raw file MiB/s", r);
        t.add("read", "log / raw", l / r);
    }
    Ok(())
}

// ---------------------------------------------------------------- lookup

/// xorshift64*: reproducible random numbers without a dependency.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn scenario_lookup(o: &Opts, base: &Path, t: &mut Table) -> Res<()> {
    let dir = base.join("lookup-log");
    remove(&dir);
    let config = LogConfig { segment_bytes: 256 * MIB, ..LogConfig::default() };
    let log = Log::open(&dir, config, false)?;
    let t0 = now_ms();
    let mut template = client_batch(RECORDS_PER_BATCH, VALUE_LEN, t0);
    let count = o.mb * MIB / template.len() as u64;
    for i in 0..count {
        restamp(&mut template, t0 + i as i64);
        log.append(&Bytes::copy_from_slice(&template))?;
    }
    log.sync_to(log.log_end_offset())?;
    let leo = log.log_end_offset();
    println!("lookup: {} MiB in {} segments, {leo} records, one timestamp per batch, increasing", log.size_bytes() / MIB, log.segment_bases().len());
    t.add("lookup", "segments", log.segment_bases().len() as f64);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..o.runs {
        let mut lat = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let off = rng.below(leo);
            let s = Instant::now();
            let r = log.read(off, 1, u64::MAX)?;
            lat.push(s.elapsed().as_nanos() as u64);
            let h = BatchHeader::parse(&r.records).ok_or("read returned no batch")?;
            if !(h.base_offset as u64 <= off && off <= h.last_offset() as u64) {
                return Err(format!("read({off}) returned the batch {}..={}", h.base_offset, h.last_offset()).into());
            }
        }
        lat.sort_unstable();
        t.add("lookup", "read(offset, 1) p50 µs", pct_us(&lat, 0.5));
        t.add("lookup", "read(offset, 1) p99 µs", pct_us(&lat, 0.99));
        let mut lat = Vec::with_capacity(5_000);
        for _ in 0..5_000 {
            let i = rng.below(count);
            let s = Instant::now();
            let found = log.offset_for_timestamp(t0 + i as i64, u64::MAX)?;
            lat.push(s.elapsed().as_nanos() as u64);
            let want = (i * RECORDS_PER_BATCH as u64, t0 + i as i64);
            if found != Some(want) {
                return Err(format!("offset_for_timestamp({}) = {found:?}, expected {want:?}", want.1).into());
            }
        }
        lat.sort_unstable();
        t.add("lookup", "offset_for_timestamp p50 µs", pct_us(&lat, 0.5));
        t.add("lookup", "offset_for_timestamp p99 µs", pct_us(&lat, 0.99));
    }
    drop(log);
    remove(&dir);
    Ok(())
}

// ---------------------------------------------------------------- partitions

fn scenario_partitions(o: &Opts, base: &Path, t: &mut Table) -> Res<()> {
    let batch = Bytes::from(client_batch(RECORDS_PER_BATCH, VALUE_LEN, now_ms()));
    let (n, sc) = (o.partitions, "partitions");
    println!("partitions: {n} logs, default config (10 MiB preallocated sparse indexes), one batch each");
    let recovered = |m: &LogManager| m.partitions().iter().filter(|(tp, p)| m.get(tp, *p).is_some_and(|l| l.was_recovered())).count() as f64;
    for run in 0..o.partition_runs {
        let dir = base.join(format!("partitions-{run}"));
        let config = LogConfig::default();
        let (mem0, fds0, maps0) = (memory(), open_fds() as f64, mappings() as f64);
        let report = |t: &mut Table, when: &str| {
            let mem = memory();
            t.add(sc, &format!("{when}: RSS MiB (process total)"), mem[0]);
            t.add(sc, &format!("{when}: RSS growth, anonymous MiB"), mem[1] - mem0[1]);
            t.add(sc, &format!("{when}: RSS growth, file-backed MiB"), mem[2] - mem0[2]);
            t.add(sc, &format!("{when}: page cache growth MiB"), mem[3] - mem0[3]);
            t.add(sc, &format!("{when}: open fds growth"), open_fds() as f64 - fds0);
            t.add(sc, &format!("{when}: memory mappings growth"), mappings() as f64 - maps0);
        };
        let ((mgr, logs), create) = timed(|| {
            let mgr = LogManager::open(&dir, config.clone())?;
            let logs = (0..n).map(|p| mgr.get_or_create("bench", p, config.clone())).collect::<Result<Vec<_>, _>>()?;
            Ok((mgr, logs))
        })?;
        let (_, append) = timed(|| logs.iter().try_for_each(|l| l.append(&batch).map(drop).map_err(Into::into)))?;
        if run == 0 {
            let max_maps = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap_or_default();
            println!("  fd limit after LogManager::open: {}; vm.max_map_count: {}", soft_fd_limit(), max_maps.trim());
        }
        t.add(sc, "create s", create.as_secs_f64());
        t.add(sc, "append one batch to each s", append.as_secs_f64());
        report(t, "created");
        drop(logs);
        let (_, shutdown) = timed(|| Ok(mgr.shutdown()?))?;
        drop(mgr);
        t.add(sc, "clean shutdown s", shutdown.as_secs_f64());

        let (mgr, reopen) = timed(|| Ok(LogManager::open(&dir, config.clone())?))?;
        t.add(sc, "clean re-open s", reopen.as_secs_f64());
        t.add(sc, "clean re-open: partitions recovered", recovered(&mgr));
        report(t, "re-opened");
        // An unclean stop: the clean marker was removed at open; drop the
        // manager without shutdown() and open again.
        drop(mgr);
        let (mgr, reopen) = timed(|| Ok(LogManager::open(&dir, config.clone())?))?;
        t.add(sc, "unclean re-open s", reopen.as_secs_f64());
        t.add(sc, "unclean re-open: partitions recovered", recovered(&mgr));
        mgr.shutdown()?;
        drop(mgr);
        remove(&dir);
    }
    Ok(())
}

// ---------------------------------------------------------------- main

// ---------------------------------------------------------------- compact

const COMPACT_BATCH: u64 = 100;
const COMPACT_VALUE: usize = 100;

/// A compacted log of `records` keyed records (`COMPACT_VALUE`-byte values)
/// over `keys` keys chosen at random, in uncompressed batches of 100, rolled
/// so every record is cleanable, and fsynced.
fn compact_fixture(dir: &Path, records: u64, keys: u64, seed: u64) -> Res<Log> {
    let config = LogConfig { compact: true, delete: false, retention_ms: -1, segment_bytes: 256 * MIB, ..LogConfig::default() };
    let log = Log::open(dir, config, false)?;
    let mut rng = seed | 1;
    let value = vec![b'v'; COMPACT_VALUE];
    let mut written = 0;
    while written < records {
        let n = COMPACT_BATCH.min(records - written) as usize;
        let names: Vec<String> = (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                format!("key-{:09}", rng % keys)
            })
            .collect();
        let recs: Vec<eddy::log::records::NewRecord<'_>> = names.iter().map(|k| eddy::log::records::NewRecord { key: Some(k.as_bytes()), value: Some(&value), timestamp: now_ms(), headers: &[] }).collect();
        log.append(&eddy::log::records::build_batch(&recs))?;
        written += n as u64;
    }
    log.roll()?;
    log.sync_to(log.log_end_offset())?;
    Ok(log)
}

/// Peak RSS (VmHWM) of this process in MiB; `reset` first restarts it from
/// the current RSS (Linux: `5` to `/proc/self/clear_refs`).
fn peak_rss(reset: bool) -> f64 {
    if reset {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    kb_field(&std::fs::read_to_string("/proc/self/status").unwrap_or_default(), "VmHWM:")
}

/// The raw limit of a clean: read `input` bytes of the log's files in 1 MiB
/// chunks and write `output` bytes to a new file, then fdatasync.
fn copy_raw(log: &Log, output: u64, out_path: &Path) -> Res<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    for base in log.segment_bases() {
        let f = File::open(log.dir().join(format!("{base:020}.log")))?;
        let mut pos = 0;
        loop {
            let n = f.read_at(&mut buf, pos)?;
            if n == 0 {
                break;
            }
            pos += n as u64;
        }
    }
    let mut out = File::create(out_path)?;
    let mut left = output;
    while left > 0 {
        let n = left.min(READ_CHUNK as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.sync_data()?;
    Ok(())
}

fn scenario_compact(o: &Opts, base: &Path, t: &mut Table) -> Res<()> {
    use eddy::log::cleaner::{CleanContext, OffsetMap, Throttle};
    println!("compact: {} records over {} keys, {COMPACT_VALUE}-byte values, batches of {COMPACT_BATCH}", o.compact_records, o.compact_keys);
    for run in 0..o.runs {
        for (variant, map_mb) in [("compact", 128u64), ("compact-small-map", o.map_mb)] {
            let dir = base.join(format!("{variant}-{run}"));
            let (log, build) = timed(|| compact_fixture(&dir, o.compact_records, o.compact_keys, 0x2545_f491_4f6c_dd1d + run as u64))?;
            let input = log.size_bytes();
            let rss_before = peak_rss(true);
            let stop = std::sync::atomic::AtomicBool::new(false);
            let mut map = OffsetMap::new(map_mb * MIB);
            let mut throttle = Throttle::new(0.0);
            let (stats, elapsed) = timed(|| Ok(log.compact(&mut CleanContext { map: &mut map, throttle: &mut throttle, stop: &stop, now: now_ms() })?))?;
            let peak = peak_rss(false) - rss_before;
            let output = log.size_bytes();
            // What is left: one record per key that was written.
            let mut left = 0u64;
            let mut offset = log.log_start_offset();
            while offset < log.log_end_offset() {
                let r = log.read(offset, READ_CHUNK, u64::MAX)?;
                let mut pos = 0;
                while let Some(h) = r.records.get(pos..).and_then(BatchHeader::parse) {
                    left += h.records_count as u64;
                    offset = h.next_offset() as u64;
                    pos += h.total_len();
                }
            }
            let (_, raw) = timed(|| copy_raw(&log, output, &base.join("raw-copy")))?;
            let _ = std::fs::remove_file(base.join("raw-copy"));
            let log_mibps = input as f64 / MIB as f64 / elapsed.as_secs_f64();
            let raw_mibps = input as f64 / MIB as f64 / raw.as_secs_f64();
            println!("  ({variant}: fixture built in {:.1} s; map capacity {} keys)", build.as_secs_f64(), map.capacity());
            t.add(variant, "input MiB", input as f64 / MIB as f64);
            t.add(variant, "output MiB", output as f64 / MIB as f64);
            t.add(variant, "records left (= distinct keys)", left as f64);
            t.add(variant, "passes", stats.passes as f64);
            t.add(variant, "clean s", elapsed.as_secs_f64());
            t.add(variant, "log MiB cleaned/s", log_mibps);
            t.add(variant, "raw read+write MiB/s", raw_mibps);
            t.add(variant, "log/raw", log_mibps / raw_mibps);
            t.add(variant, "peak RSS growth MiB", peak);
            t.add(variant, "offset map MiB", map.allocated_bytes() as f64 / MIB as f64);
            drop(log);
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}

fn machine(dir: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu.lines().find_map(|l| l.strip_prefix("model name")).map_or("?", |m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = mem.lines().next().unwrap_or("").trim_start_matches("MemTotal:").trim().to_string();
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let fs = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && canon.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {} ({})", f[2], f[1], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map_or("?".into(), |(_, s)| s);
    format!("cpu: {model}, {cores} cores; kernel {}; memory {mem}; data dir {} on {fs}", kernel.trim(), canon.display())
}

fn main() -> Res<()> {
    let o = parse_args()?;
    let known = ["all", "append", "append-durable", "read", "lookup", "partitions", "compact"];
    if let Some(s) = o.scenarios.iter().find(|s| !known.contains(&s.as_str())) {
        return Err(format!("unknown scenario {s}; one of {known:?}").into());
    }
    let parent = o.dir.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&parent)?;
    let tmp = tempfile::Builder::new().prefix("eddy-log-bench-").tempdir_in(&parent)?;
    let base = tmp.path();
    println!("{}", machine(base));
    println!("batches: {RECORDS_PER_BATCH} records × {VALUE_LEN}-byte values = {} bytes; {} run(s) each", client_batch(RECORDS_PER_BATCH, VALUE_LEN, 0).len(), o.runs);
    let want = |name: &str| o.scenarios.is_empty() || o.scenarios.iter().any(|s| s == name || s == "all");
    let mut t = Table::default();
    let started = Instant::now();
    let mut fixture = None;
    if want("append") || want("read") {
        fixture = Some(scenario_append(&o, base, &mut t)?);
    }
    if want("read") {
        scenario_read(&o, fixture.as_ref().expect("written by append"), &mut t)?;
    }
    drop(fixture);
    if want("append-durable") {
        scenario_durable(&o, base, &mut t)?;
    }
    if want("lookup") {
        scenario_lookup(&o, base, &mut t)?;
    }
    if want("partitions") {
        scenario_partitions(&o, base, &mut t)?;
    }
    if want("compact") {
        scenario_compact(&o, base, &mut t)?;
    }
    t.print();
    println!("\ntotal {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
