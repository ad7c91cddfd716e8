//! Processor benchmark: records per second per core of a processor running
//! inside the broker (read from the log, JSON parsed, windows updated,
//! output appended, checkpoints every second), for tumbling count+sum,
//! hopping windows (size/advance = 5) and session windows.
//!
//! `cargo bench --bench processor -- [--records N] [--keys N] [--dir PATH] [--runs N] [--threads N] [--partitions N]`
//!
//! The source topic is filled first (appended straight to the log, not
//! timed); then the processor starts and the clock and the process CPU time
//! run until it has read every record. Results go in `bench/README.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator the `eddy` binary uses.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use eddy::broker::Broker;
use eddy::config::Config;
use eddy::log::records::{build_batch, NewRecord};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Opts {
    records: u64,
    keys: u64,
    dir: Option<PathBuf>,
    runs: usize,
    /// The processor's `threads` setting (parse workers and engine shards).
    threads: usize,
    /// Partitions of the source topic (records spread round-robin, 500 at a time).
    partitions: usize,
}

fn parse_args() -> Res<Opts> {
    let mut o = Opts { records: 2_000_000, keys: 1_000, dir: None, runs: 2, threads: 1, partitions: 1 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--bench" => {}
            "--records" => o.records = value()?.parse()?,
            "--keys" => o.keys = value()?.parse::<u64>()?.max(1),
            "--dir" => o.dir = Some(PathBuf::from(value()?)),
            "--runs" => o.runs = value()?.parse::<usize>()?.max(1),
            "--threads" => o.threads = value()?.parse::<usize>()?.max(1),
            "--partitions" => o.partitions = value()?.parse::<usize>()?.max(1),
            s => return Err(format!("unknown option {s}").into()),
        }
    }
    Ok(o)
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills a struct on our stack.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

const SCENARIOS: &[(&str, &str)] = &[
    ("tumbling count+sum", "type = \"tumbling\"\nsize = \"1s\"\ngrace = \"0s\""),
    ("hopping 5s/1s count+sum", "type = \"hopping\"\nsize = \"5s\"\nadvance = \"1s\"\ngrace = \"0s\""),
    ("session 2s gap count+sum", "type = \"session\"\ngap = \"2s\"\ngrace = \"0s\""),
];

fn processor_toml(window: &str, threads: usize) -> String {
    format!(
        r#"
[processors.bench]
threads = {threads}
commit_interval = "1s"
[processors.bench.source]
topics = ["events"]
[processors.bench.key]
fields = ["user"]
[processors.bench.time]
field = "ts"
[processors.bench.window]
{window}
retention = "20s"
[processors.bench.aggregates]
n = {{ fn = "count" }}
total = {{ fn = "sum", field = "amount" }}
[processors.bench.output]
topic = "events-out"
emit = "final"
"#
    )
}

/// A ~200-byte JSON event.
fn event(i: u64, keys: u64, ts: i64) -> String {
    let user = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) % keys;
    format!(
        r#"{{"user":"user-{user:06}","ts":{ts},"amount":{}.{:02},"page":"/catalog/item/{:08}","agent":"Mozilla/5.0 (X11; Linux x86_64)","ref":"https://example.com/q?i={i:010}"}}"#,
        i % 500,
        i % 100,
        i % 99_991
    )
}

fn run_one(o: &Opts, base: &std::path::Path, name: &str, window: &str) -> Res<(f64, f64, u64, u64)> {
    let dir = tempfile::Builder::new().prefix("eddy-proc-bench-").tempdir_in(base)?;
    let mut config = Config::from_toml(&processor_toml(window, o.threads), "<bench>")?;
    config.broker.data_dir = dir.path().to_path_buf();
    config.broker.log_cleaner_enable = false;
    let broker = Arc::new(Broker::open(config)?);
    let topic = broker.ensure_topic("events", o.partitions as i32, BTreeMap::new()).map_err(|e| e.message)?;
    // 20 records per ms of event time: 2 M records span 100 s, and each key
    // has about 20 records in each second.
    let start_ts = 1_700_000_000_000i64;
    let mut i = 0;
    while i < o.records {
        let n = 500.min(o.records - i);
        let values: Vec<String> = (i..i + n).map(|j| event(j, o.keys, start_ts + (j / 20) as i64)).collect();
        let recs: Vec<NewRecord> = values.iter().map(|v| NewRecord { key: None, value: Some(v.as_bytes()), timestamp: start_ts, headers: &[] }).collect();
        topic.partitions[(i / 500) as usize % o.partitions].append_internal(&build_batch(&recs))?;
        i += n;
    }
    let input_bytes: u64 = topic.partitions.iter().map(|p| p.log.size_bytes()).sum();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    broker.start_processors();
    let stats = broker.processor_stats().into_iter().next().expect("one processor").1;
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.records_in.load(Ordering::Relaxed) < o.records {
        if Instant::now() > deadline {
            return Err(format!("{name}: only {} records in 600 s", stats.records_in.load(Ordering::Relaxed)).into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let out = stats.records_out.load(Ordering::Relaxed);
    let checkpoints = stats.checkpoints.load(Ordering::Relaxed);
    broker.shutdown()?;
    println!(
        "  {name:<26} {:>10.0} records/s wall, {:>10.0} records/s per CPU-second ({:.2} s CPU over {:.2} s), {out} windows out, {checkpoints} checkpoints, input {:.0} MiB",
        o.records as f64 / wall,
        o.records as f64 / cpu,
        cpu,
        wall,
        input_bytes as f64 / 1048576.0
    );
    Ok((o.records as f64 / wall, o.records as f64 / cpu, out, checkpoints))
}

fn main() -> Res<()> {
    let o = parse_args()?;
    let base = o.dir.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base)?;
    println!("processor benchmark: {} records (~200-byte JSON) over {} keys, checkpoints every 1 s, {} source partition(s), threads = {}, {} run(s)", o.records, o.keys, o.partitions, o.threads, o.runs);
    let mut table: Vec<(&str, Vec<(f64, f64)>)> = SCENARIOS.iter().map(|(n, _)| (*n, Vec::new())).collect();
    for _ in 0..o.runs {
        for (k, (name, window)) in SCENARIOS.iter().enumerate() {
            let (wall, per_cpu, _, _) = run_one(&o, &base, name, window)?;
            table[k].1.push((wall, per_cpu));
        }
    }
    println!("\n| scenario | records/s (wall) | records/s per core (CPU) |\n|---|---:|---:|");
    for (name, v) in &table {
        let med = |f: fn(&(f64, f64)) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(f64::total_cmp);
            let n = x.len();
            if n % 2 == 1 { x[n / 2] } else { (x[n / 2 - 1] + x[n / 2]) / 2.0 }
        };
        println!("| {name} | {:.0} | {:.0} |", med(|p| p.0), med(|p| p.1));
    }
    Ok(())
}
