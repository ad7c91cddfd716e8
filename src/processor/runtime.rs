//! Running a processor inside the broker: one thread per processor reads its
//! source partitions straight from the logs (committed records only), drives
//! the engine, appends the output through the same path as Produce (so
//! fetches long-polling the output wake up), dead-letters bad and late
//! records, and checkpoints engine state, source positions and watermark
//! together every `commit_interval` (storage-format.md §14).
//!
//! A failure (an I/O error, a missing source topic) is logged; the processor
//! drops its in-memory state, waits, and starts again from its last
//! checkpoint. The broker keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use super::checkpoint::{self, Checkpoint, Delta, Loaded, TxnCheckpoint};
use super::config::{BadAction, Emit, Guarantee, ProcessorSpec, Start};
use super::engine::{Emission, EngineState};
use super::shards::Engines;
use super::parse;
use crate::broker::{Broker, Partition};
use crate::log::records::{self, NewRecord};
use crate::log::{now_ms, LogError};

/// Bytes read from a source partition at a time.
const READ_BYTES: usize = 512 * 1024;
/// Records per output batch.
const OUTPUT_BATCH: usize = 500;
/// Reads of one source partition handed to the parse pool at a time.
const READS_AHEAD: usize = 2;
/// Pause when every source is caught up.
const IDLE_SLEEP: Duration = Duration::from_millis(10);
/// Pause before restarting a failed processor.
const RETRY_SLEEP: Duration = Duration::from_secs(1);

impl Stats {
    /// Bad records of every kind.
    pub fn bad_total(&self) -> u64 {
        self.bad.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

/// Counters of one processor, readable while it runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub late: AtomicU64,
    /// Bad records by kind (`extract::Bad::KINDS`).
    pub bad: [AtomicU64; super::extract::Bad::KINDS.len()],
    pub dead_lettered: AtomicU64,
    pub checkpoints: AtomicU64,
    pub restarts: AtomicU64,
    /// The watermark (i64::MIN before the first record).
    pub watermark: std::sync::atomic::AtomicI64,
    /// Committed source records not yet processed.
    pub lag: AtomicU64,
    /// Wall time of the last checkpoint (0: none yet).
    pub last_checkpoint_ms: std::sync::atomic::AtomicI64,
    /// Wall time of the last output flush (emit = changes) or write.
    pub last_flush_ms: std::sync::atomic::AtomicI64,
    /// Running, or failed and waiting to restart (with the error).
    pub failure: Mutex<Option<String>>,
}

/// An interactive query: the current windows of the key (each candidate
/// is a key's JSON text) overlapping [from, to].
pub struct Query {
    pub keys: Vec<String>,
    pub from: i64,
    pub to: i64,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<WindowView>, String>>,
}

/// One window of a query's answer.
#[derive(Debug, Clone, Serialize)]
pub struct WindowView {
    /// The key's JSON text.
    pub key: String,
    pub window_start: i64,
    pub window_end: i64,
    /// The value the output topic gets for the window.
    pub value: serde_json::Value,
    /// Largest event time in the window (the output record's timestamp).
    pub max_event_time: i64,
    /// emit = final: its final value was written.
    pub finalized: bool,
}

/// A running processor.
pub struct Running {
    pub spec: Arc<ProcessorSpec>,
    pub stats: Arc<Stats>,
    /// Interactive queries, answered by the processor's thread between rounds.
    pub queries: std::sync::mpsc::Sender<Query>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Running {
    /// Stops the processor after a last checkpoint and waits for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// Starts every configured processor.
pub fn start_all(broker: &Arc<Broker>) -> Vec<Running> {
    broker
        .config
        .processors
        .values()
        .map(|spec| {
            let spec = Arc::new(spec.clone());
            let stats = Arc::new(Stats { watermark: std::sync::atomic::AtomicI64::new(i64::MIN), ..Default::default() });
            let stop = Arc::new(AtomicBool::new(false));
            let (queries, asked) = std::sync::mpsc::channel();
            let (b, s, st, sp) = (Arc::downgrade(broker), Arc::clone(&stop), Arc::clone(&stats), Arc::clone(&spec));
            let thread = std::thread::Builder::new().name(format!("processor-{}", spec.name)).spawn(move || supervise(b, sp, s, st, asked)).expect("spawn a processor thread");
            Running { spec, stats, queries, stop, thread: Mutex::new(Some(thread)) }
        })
        .collect()
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until && !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the processor, restarting it from its checkpoint after a failure.
fn supervise(broker: Weak<Broker>, spec: Arc<ProcessorSpec>, stop: Arc<AtomicBool>, stats: Arc<Stats>, queries: std::sync::mpsc::Receiver<Query>) {
    let mut last_error = String::new();
    while !stop.load(Ordering::Acquire) {
        let Some(b) = broker.upgrade() else { return };
        // A panic (a bug) is a failure like any other: logged, then a
        // restart from the checkpoint; it never takes the broker down.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Task::open(&b, &spec, &stats).and_then(|mut t| {
                drop(b);
                *stats.failure.lock() = None;
                t.run(&broker, &stop, &queries)
            })
        }))
        .unwrap_or_else(|p| {
            let what = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            Err(TaskError::Setup(format!("the processor panicked: {what}")))
        });
        match result {
            Ok(()) => return,
            Err(e) => {
                let msg = e.to_string();
                *stats.failure.lock() = Some(msg.clone());
                if msg != last_error {
                    tracing::error!(processor = spec.name, error = %msg, "processor failed; restarting from its last checkpoint");
                    last_error = msg;
                }
                // Queries asked meanwhile get an answer rather than a wait.
                while let Ok(q) = queries.try_recv() {
                    let _ = q.reply.send(Err(format!("the processor is restarting after a failure: {last_error}")));
                }
                stats.restarts.fetch_add(1, Ordering::Relaxed);
            }
        }
        sleep_unless_stopped(RETRY_SLEEP, &stop);
    }
}

#[derive(Debug, thiserror::Error)]
enum TaskError {
    #[error("{0}")]
    Log(#[from] LogError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// Per source partition: the log, the next offset to read, and the
/// watermark inputs.
struct Source {
    topic: Arc<str>,
    index: i32,
    part: Arc<Partition>,
    /// The next offset to process (what a checkpoint records).
    next: u64,
    /// The next offset to read: ahead of `next` while reads are being
    /// parsed by the pool.
    read_at: u64,
    /// Reads handed to the parse pool and not yet applied.
    in_flight: usize,
    /// Largest event time seen (None before any record).
    high: Option<i64>,
    /// Wall time of its last record (or of the task start).
    last_seen_ms: i64,
}

/// guarantee = exactly_once: output is written in transactions, one per
/// commit interval, committed with the checkpoint.
struct TxnWriter {
    producer_id: i64,
    epoch: i16,
    /// Next sequence per partition written.
    seqs: HashMap<(bool, usize), i32>,
}

struct Task {
    spec: Arc<ProcessorSpec>,
    stats: Arc<Stats>,
    /// Late records come back tagged with their dead letter (when the
    /// processor dead-letters late records).
    engines: Engines<Option<DeadLetter>>,
    sources: Vec<Source>,
    output: Vec<Arc<Partition>>,
    dead_letter: Option<Vec<Arc<Partition>>>,
    /// Output partitions written since the last checkpoint (to fsync):
    /// (dead-letter topic?, partition).
    written: std::collections::BTreeSet<(bool, usize)>,
    checkpoints: checkpoint::Writer,
    started_ms: i64,
    watermark: Option<i64>,
    txn: Option<TxnWriter>,
}

/// What a checkpoint's state depends on: the configuration, except what
/// does not shape it: the thread count (state is split and joined by key),
/// the commit and flush intervals (when state is saved and output
/// written), and where a processor without state starts reading. A change
/// to any other setting starts the processor over from its sources.
fn fingerprint(spec: &ProcessorSpec) -> String {
    hash_spec(&ProcessorSpec { threads: 0, commit_interval_ms: 0, flush_interval_ms: 0, start: Start::Earliest, ..spec.clone() })
}

/// The fingerprint checkpoints were written with before it left out more
/// than the thread count: a checkpoint that matches it is this
/// configuration's too (its next checkpoint carries `fingerprint`).
fn old_fingerprint(spec: &ProcessorSpec) -> String {
    hash_spec(&ProcessorSpec { threads: 0, ..spec.clone() })
}

/// xxh3-64 of the parsed configuration's debug form, in hex.
fn hash_spec(s: &ProcessorSpec) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(format!("{s:?}").as_bytes()))
}

pub fn checkpoint_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("processors").join(format!("{name}.checkpoint"))
}

/// Kafka's default partitioner hash (murmur2 of the key bytes).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate().rev() {
            h ^= (byte as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a key.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % partitions.max(1)
}

impl Task {
    fn open(broker: &Arc<Broker>, spec: &Arc<ProcessorSpec>, stats: &Arc<Stats>) -> Result<Task, TaskError> {
        let mut sources = Vec::new();
        for t in &spec.topics {
            let topic = broker.topic(t).ok_or_else(|| TaskError::Setup(format!("source topic {t:?} does not exist")))?;
            for p in &topic.partitions {
                sources.push(Source { topic: t.as_str().into(), index: p.index, part: Arc::clone(p), next: 0, read_at: 0, in_flight: 0, high: None, last_seen_ms: now_ms() });
            }
        }
        let partitions = sources.iter().map(|s| s.index + 1).max().unwrap_or(1);
        let compacted: BTreeMap<String, String> = [("cleanup.policy".to_string(), "compact".to_string())].into();
        let output = broker.ensure_topic(&spec.output_topic, partitions, compacted).map_err(|e| TaskError::Setup(format!("output topic {:?}: {}", spec.output_topic, e.message)))?;
        if output.partitions.first().is_some_and(|p| !p.log.config().compact) {
            tracing::warn!(processor = spec.name, topic = spec.output_topic, "the output topic exists without cleanup.policy=compact: it keeps every update, not only the latest per key");
        }
        let dead_letter = match &spec.dead_letter_topic {
            Some(t) => Some(broker.ensure_topic(t, 1, BTreeMap::new()).map_err(|e| TaskError::Setup(format!("dead-letter topic {t:?}: {}", e.message)))?.partitions.clone()),
            None => None,
        };
        let path = checkpoint_path(&broker.config.broker.data_dir, &spec.name);
        let fp = fingerprint(spec);
        let mut engine_state: Option<EngineState> = None;
        let mut previous_txn = None;
        // Without a usable transaction record, every open transaction on the
        // output is aborted (the processor is its only writer).
        let mut abort_all = false;
        let (loaded, generation) = checkpoint::load(&path);
        let restored = match loaded {
            Loaded::Usable(c) if c.fingerprint == fp || c.fingerprint == old_fingerprint(spec) => {
                previous_txn = c.txn.clone();
                Some(c)
            }
            Loaded::Usable(c) => {
                tracing::warn!(processor = spec.name, "the processor's configuration changed since its checkpoint; starting over from its sources");
                previous_txn = c.txn;
                None
            }
            Loaded::None => None,
            Loaded::Damaged { reason, txn } => {
                tracing::warn!(processor = spec.name, reason, "processor checkpoint is damaged; starting over from its sources");
                match txn {
                    Some(t) => previous_txn = t,
                    None => abort_all = true,
                }
                None
            }
        };
        match restored {
            Some(c) => {
                let positions: HashMap<(String, i32), (u64, Option<i64>)> = c.sources.into_iter().map(|(t, p, o, h)| ((t, p), (o, h))).collect();
                for s in &mut sources {
                    if let Some(&(o, h)) = positions.get(&(s.topic.to_string(), s.index)) {
                        s.next = o;
                        s.high = h;
                    } else {
                        s.next = initial_offset(spec, &s.part);
                    }
                }
                engine_state = Some(c.engine);
            }
            None => {
                for s in &mut sources {
                    s.next = initial_offset(spec, &s.part);
                }
            }
        }
        let watermark = engine_state.as_ref().and_then(|s| s.watermark);
        let engines = Engines::new(spec, engine_state, spec.threads);
        let txn = match spec.guarantee {
            Guarantee::ExactlyOnce => Some(TxnWriter { producer_id: broker.producer_ids.next()?, epoch: 0, seqs: HashMap::new() }),
            Guarantee::AtLeastOnce => None,
        };
        let task = Task {
            spec: Arc::clone(spec),
            stats: Arc::clone(stats),
            engines,
            sources,
            output: output.partitions.clone(),
            dead_letter,
            written: std::collections::BTreeSet::new(),
            checkpoints: checkpoint::Writer::new(path, generation),
            started_ms: now_ms(),
            watermark,
            txn,
        };
        task.settle_previous_output(previous_txn.as_ref(), abort_all)?;
        Ok(task)
    }

    /// Every partition the processor writes: (dead-letter topic?, partition).
    fn targets(&self) -> Vec<(bool, usize)> {
        let dead = self.dead_letter.as_ref().map_or(0, Vec::len);
        (0..self.output.len()).map(|p| (false, p)).chain((0..dead).map(|p| (true, p))).collect()
    }

    /// Before writing with its new producer id: commits the transaction the
    /// last checkpoint covers (its markers may be missing after a crash) and
    /// aborts what the previous run wrote after it; with no usable record
    /// of that run's producer (`abort_all`), aborts every open transaction
    /// on the output (the processor is its only writer).
    fn settle_previous_output(&self, previous: Option<&TxnCheckpoint>, abort_all: bool) -> Result<(), TaskError> {
        let mark = |part: &Partition, pid: i64, epoch: i16, commit: bool| -> Result<(), TaskError> {
            part.append_marker_internal(pid, epoch, commit)?;
            part.log.sync_to(part.log.log_end_offset())?;
            Ok(())
        };
        if let Some(t) = previous {
            for &(dead, p, end) in &t.committing {
                let Some(part) = self.target((dead, p)) else { continue };
                if part.log.open_transaction(t.producer_id).is_some_and(|first| first < end) {
                    mark(part, t.producer_id, t.epoch, true)?;
                }
            }
            for w in self.targets() {
                let part = self.partition(w);
                if part.log.open_transaction(t.producer_id).is_some() {
                    mark(part, t.producer_id, t.epoch, false)?;
                    tracing::info!(processor = self.spec.name, partition = w.1, "aborted output written after the last checkpoint");
                }
            }
        }
        if abort_all {
            for w in self.targets() {
                let part = self.partition(w);
                for (pid, epoch, _, _, first) in part.log.producers() {
                    if first >= 0 {
                        mark(part, pid, epoch, false)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A partition the processor writes, if it exists (a checkpoint may
    /// name one of an earlier configuration).
    fn target(&self, (dead, p): (bool, usize)) -> Option<&Arc<Partition>> {
        if dead {
            self.dead_letter.as_ref()?.get(p)
        } else {
            self.output.get(p)
        }
    }

    fn partition(&self, w: (bool, usize)) -> &Arc<Partition> {
        self.target(w).expect("a partition this task writes")
    }

    /// Appends one batch of output: plain (at_least_once) or in this
    /// interval's transaction (exactly_once).
    fn append(&mut self, target: (bool, usize), batch: bytes::Bytes, records: usize) -> Result<(), TaskError> {
        let batch = match &mut self.txn {
            None => batch,
            Some(t) => {
                let seq = t.seqs.entry(target).or_insert(0);
                let b = records::with_producer(&batch, t.producer_id, t.epoch, *seq, true);
                *seq = seq.wrapping_add(records as i32) & i32::MAX;
                b
            }
        };
        self.partition(target).append_internal(&batch)?;
        self.written.insert(target);
        Ok(())
    }

    fn run(&mut self, broker: &Weak<Broker>, stop: &AtomicBool, queries: &std::sync::mpsc::Receiver<Query>) -> Result<(), TaskError> {
        // Record the producer id before any output uses it: a crash from
        // here on leaves transactions the next start knows to abort.
        self.commit()?;
        let mut last_commit = now_ms();
        let mut last_flush = now_ms();
        let mut out: Vec<Emission> = Vec::new();
        let mut dead: Vec<DeadLetter> = Vec::new();
        let parsers = self.spec.threads.min(self.sources.len());
        let pool = (parsers > 1).then(|| parse::Pool::new(&self.spec, parsers));
        loop {
            if stop.load(Ordering::Acquire) {
                self.flush_and_commit(&mut out, &mut dead)?;
                return Ok(());
            }
            if broker.strong_count() == 0 {
                // The broker is gone without stopping us (dropped, as after a
                // crash in tests): write nothing more to its logs.
                return Ok(());
            }
            let (progressed, waiting) = self.poll(pool.as_ref(), &mut dead)?;
            let now = now_ms();
            let w = self.compute_watermark(now);
            if let Some(w) = w {
                self.engines.advance(w);
            }
            if self.spec.emit == Emit::Changes && now - last_flush >= self.spec.flush_interval_ms {
                self.engines.flush();
                last_flush = now;
                self.stats.last_flush_ms.store(now, Ordering::Relaxed);
            }
            self.collect(&mut out, &mut dead)?;
            self.write(&mut out, &mut dead)?;
            if now - last_commit >= self.spec.commit_interval_ms {
                self.check_sources(broker)?;
                self.commit()?;
                last_commit = now;
            }
            self.stats.watermark.store(self.engines.watermark().unwrap_or(i64::MIN), Ordering::Relaxed);
            self.stats.lag.store(self.sources.iter().map(|s| s.part.log.last_stable_offset().saturating_sub(s.next)).sum(), Ordering::Relaxed);
            while let Ok(q) = queries.try_recv() {
                let answer = self.answer(&q);
                let _ = q.reply.send(answer);
            }
            if !progressed {
                self.check_sources(broker)?;
                if !waiting {
                    std::thread::sleep(IDLE_SLEEP);
                }
            }
        }
    }

    /// Fails when a source partition is no longer the broker's (its topic
    /// was deleted, or deleted and made again): the restart picks up the
    /// current one.
    fn check_sources(&self, broker: &Weak<Broker>) -> Result<(), TaskError> {
        let Some(b) = broker.upgrade() else { return Ok(()) };
        for s in &self.sources {
            if !b.partition(&s.topic, s.index).is_some_and(|p| Arc::ptr_eq(&p, &s.part)) {
                return Err(TaskError::Setup(format!("source topic {:?} was deleted or recreated", s.topic)));
            }
        }
        Ok(())
    }

    /// Reads and processes what is new in the sources: parsed here, or by
    /// the pool (a few reads ahead per partition) and applied as they come
    /// back. Returns (something was read or applied, reads are in flight:
    /// the call already waited for them).
    fn poll(&mut self, pool: Option<&parse::Pool>, dead: &mut Vec<DeadLetter>) -> Result<(bool, bool), TaskError> {
        let mut progressed = false;
        let Some(pool) = pool else {
            for i in 0..self.sources.len() {
                if let Some(read) = self.read_source(i)? {
                    let chunk = parse::parse(&self.spec, read)?;
                    self.apply(chunk, dead);
                    progressed = true;
                }
            }
            return Ok((progressed, false));
        };
        for i in 0..self.sources.len() {
            while self.sources[i].in_flight < READS_AHEAD {
                let Some(read) = self.read_source(i)? else { break };
                self.sources[i].in_flight += 1;
                pool.submit(read);
                progressed = true;
            }
        }
        let waiting = self.sources.iter().any(|s| s.in_flight > 0);
        let mut wait = if progressed || !waiting { Duration::ZERO } else { IDLE_SLEEP };
        while let Some(chunk) = pool.next(wait) {
            let chunk = chunk.map_err(TaskError::Setup)?;
            self.sources[chunk.source].in_flight -= 1;
            self.apply(chunk, dead);
            progressed = true;
            wait = Duration::ZERO;
        }
        Ok((progressed, waiting))
    }

    /// The next whole batches of one source partition, if any are committed.
    fn read_source(&mut self, i: usize) -> Result<Option<parse::Read>, TaskError> {
        let spec = Arc::clone(&self.spec);
        let s = &mut self.sources[i];
        let log = Arc::clone(&s.part.log);
        if s.in_flight == 0 {
            let start = log.log_start_offset();
            if s.next < start {
                tracing::warn!(processor = spec.name, topic = &*s.topic, partition = s.index, from = s.next, to = start, "source records were deleted before they were processed; skipping ahead");
                s.next = start;
            }
            if s.next > log.log_end_offset() {
                // Past the end: the topic was deleted and made again. Start over
                // in it as `source.start` says (Kafka's auto.offset.reset).
                let to = initial_offset(&spec, &s.part);
                tracing::warn!(processor = spec.name, topic = &*s.topic, partition = s.index, from = s.next, to, "source position is past the end of the partition (the topic was recreated?); starting over in it");
                s.next = to;
            }
            s.read_at = s.next;
        }
        let upper = log.last_stable_offset();
        let from = s.read_at;
        if from >= upper {
            return Ok(None);
        }
        let read = log.read(from, READ_BYTES, upper)?;
        if read.records.is_empty() {
            return Ok(None);
        }
        s.read_at = parse::end_of(&read.records, from);
        let aborted = log.aborted_transactions(from, upper);
        Ok(Some(parse::Read { source: i, from, bytes: read.records, aborted }))
    }

    /// Feeds a parsed read to the engines, in offset order.
    fn apply(&mut self, chunk: parse::Chunk, dead: &mut Vec<DeadLetter>) {
        let i = chunk.source;
        let now = now_ms();
        self.stats.records_in.fetch_add(chunk.records.len() as u64, Ordering::Relaxed);
        for p in chunk.records {
            self.handle(i, p, now, dead);
        }
        self.sources[i].next = chunk.next;
    }

    fn handle(&mut self, i: usize, p: parse::Parsed, now: i64, dead: &mut Vec<DeadLetter>) {
        let dl = |s: &Source, reason: String, event_time: Option<i64>, watermark: Option<i64>| DeadLetter {
            key: p.key.clone(),
            value: p.value.clone(),
            timestamp: p.timestamp,
            reason,
            topic: Arc::clone(&s.topic),
            partition: s.index,
            offset: p.offset,
            event_time,
            watermark,
        };
        match p.result {
            Err(bad) => {
                self.stats.bad[bad.kind()].fetch_add(1, Ordering::Relaxed);
                if self.spec.on_missing == BadAction::DeadLetter {
                    dead.push(dl(&self.sources[i], bad.reason(), None, self.watermark));
                }
            }
            Ok(x) => {
                let s = &mut self.sources[i];
                s.high = Some(s.high.map_or(x.time, |h| h.max(x.time)));
                s.last_seen_ms = now;
                let w = self.compute_watermark(now);
                let tag = (self.spec.late_action == BadAction::DeadLetter).then(|| dl(&self.sources[i], "late".into(), Some(x.time), w));
                self.engines.process(x.key, x.time, x.inputs, w, tag);
            }
        }
    }

    /// Gathers the engines' output and their late records.
    fn collect(&mut self, out: &mut Vec<Emission>, dead: &mut Vec<DeadLetter>) -> Result<(), TaskError> {
        let mut late: Vec<Option<DeadLetter>> = Vec::new();
        self.engines.collect(out, &mut late).map_err(TaskError::Setup)?;
        self.stats.late.fetch_add(late.len() as u64, Ordering::Relaxed);
        dead.extend(late.into_iter().flatten());
        Ok(())
    }

    /// `W = min over active partitions of their high event time −
    /// max_out_of_orderness`; a partition idle for `idle_timeout` does not
    /// hold it back (one that never had a record, from the task start); when
    /// all are idle, the highest one counts, or the wall clock with
    /// `idle_advance`. Never lower than before.
    fn compute_watermark(&mut self, now: i64) -> Option<i64> {
        let idle = self.spec.idle_timeout_ms;
        let mut active_min: Option<i64> = None;
        let mut any_active = false;
        let mut highest: Option<i64> = None;
        for s in &self.sources {
            let seen = if s.high.is_some() { s.last_seen_ms } else { self.started_ms };
            let is_active = now - seen < idle;
            if let Some(h) = s.high {
                highest = Some(highest.map_or(h, |x| x.max(h)));
            }
            if is_active {
                any_active = true;
                match s.high {
                    Some(h) => active_min = Some(active_min.map_or(h, |m| m.min(h))),
                    // An active partition with nothing yet holds W back entirely.
                    None => return self.watermark,
                }
            }
        }
        let candidate = if any_active {
            active_min
        } else if self.spec.idle_advance {
            Some(now)
        } else {
            highest
        };
        let candidate = candidate.map(|c| c.saturating_sub(self.spec.max_out_of_orderness_ms));
        if let Some(c) = candidate {
            if self.watermark.is_none_or(|w| c > w) {
                self.watermark = Some(c);
            }
        }
        self.watermark
    }

    /// Appends pending output and dead letters.
    fn write(&mut self, out: &mut Vec<Emission>, dead: &mut Vec<DeadLetter>) -> Result<(), TaskError> {
        if !out.is_empty() {
            let n = self.output.len();
            let mut by_part: BTreeMap<usize, Vec<Emission>> = BTreeMap::new();
            for e in out.drain(..) {
                by_part.entry(partition_for(&e.partition_key, n)).or_default().push(e);
            }
            for (p, es) in by_part {
                for chunk in es.chunks(OUTPUT_BATCH) {
                    let recs: Vec<NewRecord> = chunk.iter().map(|e| NewRecord { key: Some(&e.key), value: e.value.as_deref(), timestamp: e.timestamp, headers: &[] }).collect();
                    let batch = records::build_batch(&recs);
                    self.append((false, p), batch, chunk.len())?;
                    self.stats.records_out.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
        }
        if !dead.is_empty() {
            if self.dead_letter.is_some() {
                // Bad records are found as they are parsed, late ones when the
                // engines' output is collected: put them back in source order.
                dead.sort_unstable_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
                for chunk in dead.chunks(OUTPUT_BATCH) {
                    let headers: Vec<Vec<(String, Vec<u8>)>> = chunk.iter().map(DeadLetter::headers).collect();
                    type Header<'a> = (&'a str, Option<&'a [u8]>);
                    let hrefs: Vec<Vec<Header>> = headers.iter().map(|h| h.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice()))).collect()).collect();
                    let recs: Vec<NewRecord> = chunk.iter().zip(&hrefs).map(|(d, h)| NewRecord { key: d.key.as_deref(), value: d.value.as_deref(), timestamp: d.timestamp, headers: h }).collect();
                    let batch = records::build_batch(&recs);
                    self.append((true, 0), batch, chunk.len())?;
                }
                self.stats.dead_lettered.fetch_add(dead.len() as u64, Ordering::Relaxed);
            }
            dead.clear();
        }
        Ok(())
    }

    /// Makes the outputs written so far durable, then checkpoints; with
    /// exactly_once, then commits the interval's transaction (the markers
    /// are made durable before the next checkpoint can forget them).
    fn commit(&mut self) -> Result<(), TaskError> {
        let written: Vec<(bool, usize)> = std::mem::take(&mut self.written).into_iter().collect();
        let mut committing = Vec::with_capacity(written.len());
        for &w in &written {
            let part = self.partition(w);
            let end = part.log.log_end_offset();
            part.log.sync_to(end)?;
            committing.push((w.0, w.1, end));
        }
        let sources: Vec<checkpoint::Position> = self.sources.iter().map(|s| (s.topic.to_string(), s.index, s.next, s.high)).collect();
        let txn = self.txn.as_ref().map(|t| TxnCheckpoint { producer_id: t.producer_id, epoch: t.epoch, committing });
        // What changed since the previous checkpoint, appended to the delta
        // file; or, first after a start and once the delta file would
        // outgrow the base, the whole state as a new base.
        let mut appended = false;
        if self.checkpoints.has_base() {
            let d = Delta { sources: sources.clone(), engine: self.engines.changes().map_err(TaskError::Setup)?, txn: txn.clone() };
            appended = self.checkpoints.append(&d)?;
        }
        if !appended {
            let c = Checkpoint { fingerprint: fingerprint(&self.spec), sources, engine: self.engines.snapshot().map_err(TaskError::Setup)?, txn };
            self.checkpoints.write_base(&c)?;
        }
        if let Some(t) = &self.txn {
            let (pid, epoch) = (t.producer_id, t.epoch);
            for &w in &written {
                let part = self.partition(w);
                part.append_marker_internal(pid, epoch, true)?;
                part.log.sync_to(part.log.log_end_offset())?;
            }
        }
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.stats.last_checkpoint_ms.store(now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// An interactive query, from the engines' current state.
    fn answer(&mut self, q: &Query) -> Result<Vec<WindowView>, String> {
        let mut out = Vec::new();
        for key in &q.keys {
            for (start, end, w) in self.engines.windows(key, q.from, q.to)? {
                let value = super::engine::window_value(&self.spec, start, end, &w);
                out.push(WindowView { key: key.clone(), window_start: start, window_end: end, value, max_event_time: w.max_ts, finalized: w.finalized });
            }
        }
        out.sort_by(|a, b| (a.window_start, a.window_end, &a.key).cmp(&(b.window_start, b.window_end, &b.key)));
        Ok(out)
    }

    fn flush_and_commit(&mut self, out: &mut Vec<Emission>, dead: &mut Vec<DeadLetter>) -> Result<(), TaskError> {
        if self.spec.emit == Emit::Changes {
            self.engines.flush();
        }
        self.collect(out, dead)?;
        self.write(out, dead)?;
        self.commit()
    }
}

fn initial_offset(spec: &ProcessorSpec, part: &Partition) -> u64 {
    match spec.start {
        Start::Earliest => part.log.log_start_offset(),
        Start::Latest => part.log.log_end_offset(),
    }
}

/// A record for the dead-letter topic: the original record with headers
/// saying why and where from.
struct DeadLetter {
    key: Option<bytes::Bytes>,
    value: Option<bytes::Bytes>,
    timestamp: i64,
    reason: String,
    topic: Arc<str>,
    partition: i32,
    offset: u64,
    event_time: Option<i64>,
    watermark: Option<i64>,
}

impl DeadLetter {
    fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut h = vec![
            ("reason".to_string(), self.reason.clone().into_bytes()),
            ("source.topic".to_string(), self.topic.as_bytes().to_vec()),
            ("source.partition".to_string(), self.partition.to_string().into_bytes()),
            ("source.offset".to_string(), self.offset.to_string().into_bytes()),
        ];
        if let Some(t) = self.event_time {
            h.push(("event.time".to_string(), t.to_string().into_bytes()));
        }
        if let Some(w) = self.watermark {
            h.push(("watermark".to_string(), w.to_string().into_bytes()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58_897_971);
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }
}
