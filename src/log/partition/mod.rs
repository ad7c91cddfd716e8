//! The log of one partition: an ordered set of segments, one of them active.
//!
//! Concurrency: one appender at a time (the `appender` mutex); readers never
//! take it. The segment map is behind a read-write lock held only to pick
//! segments, never during I/O. Durable acknowledgement is `sync_to`, a
//! group commit: whoever holds the sync lock fsyncs everything written so
//! far, and every waiter whose offset that covers returns without an fsync
//! of its own.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};

mod compaction;
mod retention;

pub use compaction::Cleanable;

use super::batch::{self, BatchHeader};
use super::checkpoint::{self, Checkpoint};
use super::producer::{self, Check, ProducerState};
use super::txn::{self, AbortedTxn, TxnState};
use super::txn_index;
use super::segment::{self, PreparedBatch, Segment};
use super::{now_ms, LogConfig, LogError, Records, TimestampType};

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// The broker time written into the batches, for `LogAppendTime` logs; -1 otherwise.
    pub log_append_time: i64,
    pub log_start_offset: u64,
    /// The batches were already written (an idempotent producer's retry):
    /// the offsets are the original ones and nothing new was appended.
    pub duplicate: bool,
}

/// What a read returned, with the log's bounds at the time of the read.
#[derive(Clone, Debug)]
pub struct ReadResult {
    pub records: Bytes,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

struct Appender {
    active: Arc<Segment>,
    next_offset: u64,
    closed: bool,
    /// Idempotent producers' recent batches (changed only with appends).
    producers: ProducerState,
    /// Open and aborted transactions in this log.
    txns: TxnState,
}

struct SyncState {
    flushed_offset: u64,
    /// The recovery point last written to the checkpoint file.
    persisted_recovery_point: u64,
}

pub struct Log {
    dir: PathBuf,
    config: RwLock<Arc<LogConfig>>,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    appender: Mutex<Appender>,
    sync: Mutex<SyncState>,
    log_end_offset: AtomicU64,
    /// First offset of the oldest open transaction, else the log end.
    last_stable_offset: AtomicU64,
    log_start_offset: AtomicU64,
    recovery_point: AtomicU64,
    /// Wall time of the oldest append not yet fsynced; 0 when none.
    first_unflushed_ms: AtomicI64,
    /// Serializes checkpoint writes (the log start offset and recovery point
    /// must not be written out of order).
    checkpoint_lock: Mutex<()>,
    dirty_open: AtomicBool,
    /// fsyncs of segment files done by `sync_to` (for metrics and tests).
    fsyncs: AtomicU64,
    /// Told how long each segment fsync took (the broker's latency metric).
    fsync_observer: std::sync::OnceLock<Box<dyn Fn(std::time::Duration) + Send + Sync>>,
    /// Set by a failed fsync: the kernel may have dropped the dirty pages, so
    /// nothing written since can be called durable again (a retry would
    /// "succeed"). The log refuses appends and syncs until reopened.
    failed: AtomicBool,
    /// Held while segments leave the log (retention, DeleteRecords) or are
    /// swapped for cleaned ones, so the two never act on the same segment.
    maintenance: Mutex<()>,
    /// The first offset not covered by a completed clean (`cleaner.checkpoint`).
    cleaner_checkpoint: AtomicU64,
    /// Set by `close`: the cleaner leaves the log alone from then on.
    closed: AtomicBool,
}

/// Parses a segment file name `<20 digits>.log`.
fn segment_base(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl Log {
    /// Opens the log in `dir`, creating it if missing. `clean_shutdown` says
    /// whether the previous process closed the data directory cleanly; if
    /// not, every segment from the recovery point on is rescanned.
    pub fn open(dir: &Path, config: LogConfig, clean_shutdown: bool) -> Result<Log, LogError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                checkpoint::sync_dir(parent)?;
            }
        }
        let rescan: Vec<u64> = compaction::finish_interrupted_swaps(dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = segment_base(&name) {
                bases.push(base);
            } else if name.ends_with(".tmp") {
                segment::remove_if_exists(&dir.join(&*name))?;
            }
        }
        bases.sort_unstable();
        // Index files whose log file is gone (an interrupted delete).
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy().into_owned();
            for ext in [".index", ".timeindex", ".txnindex"] {
                if let Some(stem) = name.strip_suffix(ext) {
                    if segment_base(&format!("{stem}.log")).is_some_and(|b| bases.binary_search(&b).is_err()) {
                        segment::remove_if_exists(&dir.join(&name))?;
                    }
                }
            }
        }

        let (mut checkpoint, mut dirty) = match Checkpoint::read(dir)? {
            Ok(Some(c)) => (c, false),
            Ok(None) => (Checkpoint { recovery_point: 0, log_start_offset: 0 }, !bases.is_empty()),
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), reason, "checkpoint is damaged; recovering every segment");
                (Checkpoint { recovery_point: 0, log_start_offset: 0 }, true)
            }
        };
        let clean = clean_shutdown && !dirty;

        // Segments the next one of which starts at or below the log start
        // offset hold nothing the log still has: a retention or
        // DeleteRecords whose unlinks were cut short (the checkpoint with
        // the new start offset is durable before them). Without this, one
        // such leftover after a missing one would be a gap, and the gap
        // rule below would drop the live segments after it.
        let below_start = bases.windows(2).take_while(|w| w[1] <= checkpoint.log_start_offset).count();
        if below_start > 0 {
            for &base in &bases[..below_start] {
                tracing::info!(segment = %segment::log_path(dir, base).display(), log_start_offset = checkpoint.log_start_offset, "deleted a segment below the log start offset (an interrupted delete)");
                for p in segment::files(dir, base) {
                    segment::remove_if_exists(&p)?;
                }
            }
            checkpoint::sync_dir(dir)?;
            bases.drain(..below_start);
        }

        // Each segment is opened trusting its indexes (after checks) when the
        // last stop was clean or it lies wholly below the recovery point;
        // otherwise, and from the first segment that fails a check on, it is
        // rescanned. The log must stay a gapless prefix: after a truncated
        // segment, a gap or an overlap, the later segments are dropped.
        struct Opened {
            seg: Segment,
            /// Indexes trimmed (opened as a sealed segment).
            sealed_form: bool,
        }
        let mut kept: Vec<Opened> = Vec::with_capacity(bases.len());
        let mut recovering = false;
        let mut prev_next = 0u64;
        let mut drop_from: Option<usize> = None;
        for (i, &base) in bases.iter().enumerate() {
            if i > 0 && base != prev_next {
                tracing::warn!(segment = %segment::log_path(dir, base).display(), expected_base = prev_next, "segment does not start where the previous one ends");
                drop_from = Some(i);
                break;
            }
            let is_last = i + 1 == bases.len();
            let below_recovery_point = bases.get(i + 1).is_some_and(|&next| next <= checkpoint.recovery_point);
            let swapped = rescan.contains(&base);
            let trusted = !recovering && (clean || below_recovery_point) && !swapped;
            let prealloc = if is_last { Some(config.segment_index_bytes) } else { None };
            let opened = if trusted { Segment::open_trusted(dir, base, prealloc, config.index_interval_bytes)? } else { None };
            let (seg, sealed_form, truncated) = match opened {
                Some(s) => (s, prealloc.is_none(), false),
                None => {
                    // A segment completed from a cleaner swap only needs its
                    // indexes rebuilt; the ones after it are as they were.
                    recovering |= !swapped;
                    dirty = true;
                    let (s, report) = Segment::recover(dir, base, config.segment_index_bytes, config.index_interval_bytes, prev_next)?;
                    if report.truncated_bytes > 0 {
                        tracing::warn!(
                            segment = %segment::log_path(dir, base).display(),
                            valid_bytes = report.valid_bytes,
                            truncated_bytes = report.truncated_bytes,
                            reason = report.reason.as_deref().unwrap_or(""),
                            "truncated a torn or corrupt segment tail"
                        );
                    }
                    s.sync_data()?;
                    (s, false, report.truncated_bytes > 0)
                }
            };
            if i > 0 && seg.is_empty() && !is_last {
                // Only the active segment may be empty.
                drop_from = Some(i);
                break;
            }
            prev_next = seg.next_offset();
            kept.push(Opened { seg, sealed_form });
            if truncated && !is_last {
                drop_from = Some(i + 1);
                break;
            }
        }
        if let Some(from) = drop_from {
            dirty = true;
            for &base in &bases[from..] {
                tracing::warn!(segment = %segment::log_path(dir, base).display(), "deleted a segment that no longer continues the log");
                for p in segment::files(dir, base) {
                    segment::remove_if_exists(&p)?;
                }
            }
            checkpoint::sync_dir(dir)?;
        }
        // Seal every kept segment but the last; the last one becomes the
        // active segment and needs preallocated indexes.
        let count = kept.len();
        let mut segments = BTreeMap::new();
        // Where the previous kept segment ends: a recovery of the last one
        // expects its batches from there (§10 step 3.4).
        let mut prev_end = 0u64;
        for (j, o) in kept.into_iter().enumerate() {
            let base = o.seg.base_offset;
            let seg = if j + 1 < count {
                if !o.sealed_form {
                    o.seg.seal()?;
                }
                o.seg
            } else if o.sealed_form {
                drop(o.seg);
                match Segment::open_trusted(dir, base, Some(config.segment_index_bytes), config.index_interval_bytes)? {
                    Some(s) => s,
                    None => {
                        dirty = true;
                        let (s, report) = Segment::recover(dir, base, config.segment_index_bytes, config.index_interval_bytes, prev_end)?;
                        if report.truncated_bytes > 0 {
                            tracing::warn!(segment = %segment::log_path(dir, base).display(), valid_bytes = report.valid_bytes, truncated_bytes = report.truncated_bytes, reason = report.reason.as_deref().unwrap_or(""), "truncated a torn or corrupt segment tail");
                        }
                        s.sync_data()?;
                        s
                    }
                }
            } else {
                o.seg
            };
            prev_end = seg.next_offset();
            segments.insert(base, Arc::new(seg));
        }
        // An empty log gets one segment at the log start offset.
        if segments.is_empty() {
            let base = checkpoint.log_start_offset;
            let seg = Segment::create(dir, base, config.segment_index_bytes, config.index_interval_bytes)?;
            checkpoint::sync_dir(dir)?;
            segments.insert(base, Arc::new(seg));
        }
        let active = Arc::clone(segments.values().next_back().expect("at least one segment"));
        active.prepare_appends()?;
        let log_end_offset = active.next_offset().max(active.base_offset);
        let first_base = *segments.keys().next().expect("at least one segment");
        let mut log_start_offset = checkpoint.log_start_offset.max(first_base);
        if log_start_offset > log_end_offset {
            tracing::warn!(dir = %dir.display(), log_start_offset, log_end_offset, "log start offset is past the recovered end; clamping");
            log_start_offset = log_end_offset;
        }
        // Everything present is now on disk (a clean close fsynced it, a
        // recovery fsynced what it kept), so the recovery point is the end.
        let recovery_point = if clean { log_end_offset } else { active.base_offset };
        let on_disk = checkpoint.recovery_point;
        checkpoint = Checkpoint { recovery_point, log_start_offset };
        let persisted_recovery_point = if dirty || bases.is_empty() { recovery_point } else { on_disk };
        if dirty {
            checkpoint.write(dir)?;
        }
        if bases.is_empty() {
            // A new log: its checkpoint exists from the start, so a missing
            // one later means damage.
            checkpoint.write(dir)?;
        }
        let (producers, txns) = rebuild_state(dir, &segments, log_start_offset, log_end_offset)?;
        // A cleaner checkpoint past the recovered end (the tail was lost)
        // would count new records as cleaned before they ever were.
        let mut cleaner_checkpoint = compaction::read_cleaner_checkpoint(dir);
        if cleaner_checkpoint > log_end_offset {
            compaction::write_cleaner_checkpoint(dir, log_end_offset)?;
            cleaner_checkpoint = log_end_offset;
        }
        let last_stable_offset = txns.last_stable_offset(log_end_offset);
        Ok(Log {
            dir: dir.to_path_buf(),
            config: RwLock::new(Arc::new(config)),
            segments: RwLock::new(segments),
            appender: Mutex::new(Appender { active, next_offset: log_end_offset, closed: false, producers, txns }),
            sync: Mutex::new(SyncState { flushed_offset: log_end_offset, persisted_recovery_point }),
            log_end_offset: AtomicU64::new(log_end_offset),
            last_stable_offset: AtomicU64::new(last_stable_offset),
            log_start_offset: AtomicU64::new(log_start_offset),
            recovery_point: AtomicU64::new(recovery_point),
            first_unflushed_ms: AtomicI64::new(0),
            checkpoint_lock: Mutex::new(()),
            dirty_open: AtomicBool::new(dirty),
            fsyncs: AtomicU64::new(0),
            fsync_observer: std::sync::OnceLock::new(),
            failed: AtomicBool::new(false),
            maintenance: Mutex::new(()),
            cleaner_checkpoint: AtomicU64::new(cleaner_checkpoint),
            closed: AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> Arc<LogConfig> {
        Arc::clone(&self.config.read())
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.write() = Arc::new(config);
    }

    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Active idempotent and transactional producers of this log:
    /// (producer id, epoch, last sequence, last timestamp, first offset of
    /// its open transaction or -1), for DescribeProducers.
    pub fn producers(&self) -> Vec<(i64, i16, i32, i64, i64)> {
        let app = self.appender.lock();
        app.producers
            .producers
            .iter()
            .map(|(pid, e)| (*pid, e.epoch, e.batches.back().map_or(-1, |b| b.last_seq), e.last_timestamp, app.txns.ongoing.get(pid).map_or(-1, |o| *o as i64)))
            .collect()
    }

    /// The first offset of `producer_id`'s open transaction in this log, if any.
    pub fn open_transaction(&self, producer_id: i64) -> Option<u64> {
        self.appender.lock().txns.ongoing.get(&producer_id).copied()
    }

    /// Where `read_committed` readers stop: the oldest open transaction's
    /// first offset, or the log end.
    pub fn last_stable_offset(&self) -> u64 {
        self.last_stable_offset.load(Ordering::Acquire)
    }

    /// Aborted transactions whose records lie in [from, to): what a
    /// `read_committed` fetch of that range must tell the client to skip.
    pub fn aborted_transactions(&self, from: u64, to: u64) -> Vec<AbortedTxn> {
        self.appender.lock().txns.aborted_between(from, to)
    }

    /// Writes a transaction marker (commit or abort) for `producer_id`, as
    /// the transaction coordinator does at the end of a transaction. Returns
    /// the marker's offset.
    pub fn append_marker(&self, producer_id: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> Result<u64, LogError> {
        let config = self.config();
        let now = now_ms();
        let bytes = txn::control_batch(producer_id, epoch, commit, coordinator_epoch, now);
        let mut app = self.appender.lock();
        if app.closed {
            return Err(LogError::Closed);
        }
        self.maybe_roll(&mut app, &config, 1, bytes.len() as u64, 1, now, now)?;
        let offset = app.next_offset;
        let mut header = batch::BatchHeader::parse(&bytes).expect("a built batch");
        header.base_offset = offset as i64;
        app.active.append(&[PreparedBatch { header, base_offset_bytes: (offset as i64).to_be_bytes(), rest: bytes.slice(8..) }])?;
        app.producers.record(&header, offset);
        let aborted_before = app.txns.aborted.len();
        app.txns.observe(&header, offset, Some(commit));
        app.next_offset = offset + 1;
        self.log_end_offset.store(offset + 1, Ordering::Release);
        self.last_stable_offset.store(app.txns.last_stable_offset(offset + 1), Ordering::Release);
        if app.txns.aborted.len() > aborted_before {
            // After the marker is published: a failure here leaves a
            // consistent log whose index entry the next open rebuilds.
            let txn = *app.txns.aborted.last().expect("just added");
            let entry = txn_index::Entry { txn, last_stable_offset: app.txns.last_stable_offset(offset + 1) };
            txn_index::append(&app.active.txn_index_file(), &entry)?;
        }
        drop(app);
        self.write_out()?;
        Ok(offset)
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// Offsets below this are durable and indexed on disk.
    pub fn recovery_point(&self) -> u64 {
        self.recovery_point.load(Ordering::Acquire)
    }

    /// Whether opening this log had to recover or repair anything.
    pub fn was_recovered(&self) -> bool {
        self.dirty_open.load(Ordering::Relaxed)
    }

    fn check_not_failed(&self) -> Result<(), LogError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(LogError::Io(std::io::Error::other("an earlier write or fsync of this log failed; restart to recover it")));
        }
        Ok(())
    }

    /// Sets what is told the duration of every segment fsync from now on,
    /// whatever asked for it (acks=all, `flush.ms`, checkpoints, shutdown).
    /// Only the first observer set is kept.
    pub fn observe_fsyncs(&self, observe: impl Fn(std::time::Duration) + Send + Sync + 'static) {
        let _ = self.fsync_observer.set(Box::new(observe));
    }

    /// How many segment fsyncs `sync_to` has done since open.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.read().values().map(|s| s.size()).sum()
    }

    pub fn segment_bases(&self) -> Vec<u64> {
        self.segments.read().keys().copied().collect()
    }

    fn segment_list(&self) -> Vec<Arc<Segment>> {
        self.segments.read().values().cloned().collect()
    }

    /// Validates and appends a client's record set (one or more batches),
    /// and writes it to the file: when this returns, a kill of the process
    /// loses none of it (an fsync, `sync_to`, covers a machine crash).
    /// Nothing is written unless every batch is valid.
    pub fn append(&self, records: &Bytes) -> Result<AppendInfo, LogError> {
        let info = self.append_staged(records)?;
        self.write_out()?;
        Ok(info)
    }

    /// `append` without the write to the file: the records are readable at
    /// once, and reach the file at the next `write_out` or `sync_to` (or
    /// when enough are staged), which callers share (the broker's group
    /// commit for acks=1 and acks=all).
    pub fn append_staged(&self, records: &Bytes) -> Result<AppendInfo, LogError> {
        let config = self.config();
        let batches = batch::validate_producer_records(records)?;
        for b in &batches {
            if b.bytes.len() > config.max_message_bytes {
                return Err(LogError::MessageTooLarge { size: b.bytes.len(), max: config.max_message_bytes });
            }
            if b.header.is_control() {
                return Err(LogError::InvalidRecord("clients may not write control batches".into()));
            }
            if config.compact {
                // The cleaner trusts keys and record offsets: decoding the
                // records checks that their offset deltas increase within the
                // batch's range (so, with count = last delta + 1, run 0, 1,
                // 2, ...), and every record needs a key.
                let mut keyless = false;
                super::cleaner::rewrite::filter_batch(&b.bytes, false, |r| {
                    keyless |= r.key.is_none();
                    true
                })?;
                if keyless {
                    return Err(LogError::InvalidRecord("a compacted topic (cleanup.policy=compact) accepts only records with a key".into()));
                }
            }
        }
        let now = now_ms();

        self.check_not_failed()?;
        let mut app = self.appender.lock();
        if app.closed {
            return Err(LogError::Closed);
        }
        // Idempotence: every batch is checked against the producers' state
        // (and the batches before it in this request) before anything is
        // written; retried batches are answered with their original offsets.
        let mut overlay = ProducerState::default();
        let mut duplicate: Option<(u64, u64)> = None;
        let mut fresh = Vec::with_capacity(batches.len());
        for b in batches {
            let pid = b.header.producer_id;
            if pid >= 0 && !overlay.producers.contains_key(&pid) {
                if let Some(e) = app.producers.producers.get(&pid) {
                    overlay.producers.insert(pid, e.clone());
                }
            }
            match overlay.check(&b.header)? {
                Check::Duplicate { base_offset, last_offset } => {
                    duplicate = Some((duplicate.map_or(base_offset, |d| d.0), last_offset));
                }
                Check::Append => {
                    // Offsets are assigned below; sequences are what matter here.
                    overlay.record(&b.header, 0);
                    fresh.push(b);
                }
            }
        }
        let batches = fresh;
        if batches.is_empty() {
            let (base_offset, last_offset) = duplicate.expect("every batch was a duplicate");
            return Ok(AppendInfo { base_offset, last_offset, log_append_time: -1, log_start_offset: self.log_start_offset(), duplicate: true });
        }
        let total: u64 = batches.iter().map(|b| b.bytes.len() as u64).sum();
        let records_total: u64 = batches.iter().map(|b| b.header.last_offset_delta as u64 + 1).sum();
        let incoming_max_ts = match config.timestamp_type {
            TimestampType::LogAppendTime => now,
            TimestampType::CreateTime => batches.iter().map(|b| b.header.max_timestamp).max().unwrap_or(-1),
        };
        self.maybe_roll(&mut app, &config, batches.len(), total, records_total, incoming_max_ts, now)?;
        let base_offset = app.next_offset;
        let mut next = base_offset;
        let mut prepared = Vec::with_capacity(batches.len());
        for b in batches {
            let mut header = b.header;
            header.base_offset = next as i64;
            let rest = if config.timestamp_type == TimestampType::LogAppendTime {
                set_log_append_time(&b.bytes, now)
            } else {
                b.bytes.slice(8..)
            };
            if config.timestamp_type == TimestampType::LogAppendTime {
                header.max_timestamp = now;
                header.attributes |= 0x08;
            }
            next += header.last_offset_delta as u64 + 1;
            prepared.push(PreparedBatch { header, base_offset_bytes: (header.base_offset).to_be_bytes(), rest });
        }
        app.active.append(&prepared)?;
        for b in &prepared {
            app.producers.record(&b.header, b.header.base_offset as u64);
            app.txns.observe(&b.header, b.header.base_offset as u64, None);
        }
        app.next_offset = next;
        self.log_end_offset.store(next, Ordering::Release);
        self.last_stable_offset.store(app.txns.last_stable_offset(next), Ordering::Release);
        let _ = self.first_unflushed_ms.compare_exchange(0, now.max(1), Ordering::AcqRel, Ordering::Relaxed);
        let unwritten = app.active.unwritten();
        drop(app);

        // Appends nobody writes out (acks=0) are written by the appender
        // once enough are staged; a failure here fails the log, after the
        // batches and their offsets were published consistently.
        if unwritten > segment::MAX_UNWRITTEN {
            self.write_out()?;
        }

        if let Some(n) = config.flush_messages {
            let flushed = self.sync.lock().flushed_offset;
            if next - flushed >= n {
                self.sync_to(next)?;
            }
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: if config.timestamp_type == TimestampType::LogAppendTime { now } else { -1 },
            log_start_offset: self.log_start_offset(),
            duplicate: false,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn maybe_roll(&self, app: &mut Appender, config: &LogConfig, batches: usize, bytes: u64, records: u64, incoming_max_ts: i64, now: i64) -> Result<(), LogError> {
        let active = &app.active;
        if active.is_empty() {
            return Ok(());
        }
        let by_size = active.size() + bytes > config.segment_bytes;
        // Kafka's rule: event time since the segment's first batch, or wall
        // time since the segment was opened when there are no timestamps.
        let by_time = match active.first_batch_timestamp() {
            Some(first) if first >= 0 => incoming_max_ts.saturating_sub(first) > config.segment_ms,
            _ => now.saturating_sub(active.created_ms()) > config.segment_ms,
        };
        let by_index = !active.has_index_room(batches);
        let by_offset = app.next_offset + records - active.base_offset > u32::MAX as u64;
        if by_size || by_time || by_index || by_offset {
            self.roll_locked(app, config)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end offset.
    fn roll_locked(&self, app: &mut Appender, config: &LogConfig) -> Result<(), LogError> {
        let base = app.next_offset;
        if app.active.base_offset == base {
            return Ok(());
        }
        app.active.seal()?;
        // The producers' state as of the new segment's start, so recovery
        // replays at most the active segment.
        producer::write_snapshot(&self.dir, base, &app.producers, &app.txns.ongoing)?;
        let seg = Arc::new(Segment::create(&self.dir, base, config.segment_index_bytes, config.index_interval_bytes)?);
        checkpoint::sync_dir(&self.dir)?;
        self.segments.write().insert(base, Arc::clone(&seg));
        tracing::debug!(dir = %self.dir.display(), base_offset = base, "rolled a new segment");
        app.active = seg;
        Ok(())
    }

    /// Rolls the active segment now (if it holds anything).
    pub fn roll(&self) -> Result<(), LogError> {
        let config = self.config();
        let mut app = self.appender.lock();
        if app.closed {
            return Err(LogError::Closed);
        }
        if app.active.is_empty() {
            return Ok(());
        }
        self.roll_locked(&mut app, &config)
    }

    /// Blocks until every offset below `offset` is on disk. Concurrent
    /// callers share fsyncs (group commit).
    pub fn sync_to(&self, offset: u64) -> Result<(), LogError> {
        let mut s = self.sync.lock();
        if s.flushed_offset >= offset {
            return Ok(());
        }
        self.check_not_failed()?;
        self.first_unflushed_ms.store(0, Ordering::Release);
        let leo = self.log_end_offset();
        let segs: Vec<Arc<Segment>> = {
            let map = self.segments.read();
            // From the segment holding the last flushed offset, the one
            // below `flushed_offset`: when a roll made that the old
            // segment's end, the old segment is synced once more, so that
            // its cut (the padding dropped at seal) is on disk before the
            // recovery point passes it.
            let from = map.range(..s.flushed_offset).next_back().map_or(0, |(&b, _)| b);
            map.range(from..).map(|(_, s)| Arc::clone(s)).collect()
        };
        for seg in &segs {
            let synced = seg.write_out().and_then(|()| {
                let started = std::time::Instant::now();
                let synced = seg.sync_data();
                if let Some(observe) = self.fsync_observer.get() {
                    observe(started.elapsed());
                }
                synced
            });
            if let Err(e) = synced {
                self.failed.store(true, Ordering::Release);
                tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed; the log refuses writes until the broker restarts and recovers it");
                return Err(e.into());
            }
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        s.flushed_offset = leo;
        // Every segment but the last one synced here is sealed with its
        // indexes already on disk: recovery may skip them.
        let last_base = segs.last().map_or(0, |s| s.base_offset);
        let rp = last_base.min(leo).max(self.recovery_point());
        self.recovery_point.store(rp, Ordering::Release);
        if rp > s.persisted_recovery_point && segs.len() > 1 {
            s.persisted_recovery_point = rp;
            drop(s);
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// Writes every appended byte to the file, without an fsync: after it a
    /// kill of the process loses nothing appended before the call (acks=1).
    /// Concurrent callers share writes.
    pub fn write_out(&self) -> Result<(), LogError> {
        // Segments before the active one were written out when sealed.
        self.write_out_of(&self.active())
    }

    fn active(&self) -> Arc<Segment> {
        Arc::clone(&self.appender.lock().active)
    }

    /// `write_out` of one segment; a failure fails the log.
    fn write_out_of(&self, active: &Segment) -> Result<(), LogError> {
        self.check_not_failed()?;
        if let Err(e) = active.write_out() {
            self.failed.store(true, Ordering::Release);
            tracing::error!(dir = %self.dir.display(), error = %e, "a write to the log failed; the log refuses writes until the broker restarts and recovers it");
            return Err(e.into());
        }
        Ok(())
    }

    /// Whether a failed write or fsync made the log refuse writes.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Periodic upkeep of the log's memory: writes out what appends left
    /// staged (acks=0), and hands an idle partition's appending chunk to
    /// the shared cache.
    pub fn tend_memory(&self) -> Result<(), LogError> {
        let active = self.active();
        self.write_out_of(&active)?;
        active.retire_idle()?;
        Ok(())
    }

    /// Applies `flush.ms`: fsyncs when the oldest unflushed append is older.
    pub fn flush_if_due(&self, now: i64) -> Result<(), LogError> {
        let Some(ms) = self.config().flush_ms else { return Ok(()) };
        let first = self.first_unflushed_ms.load(Ordering::Acquire);
        if first > 0 && now - first >= ms as i64 {
            self.sync_to(self.log_end_offset())?;
        }
        Ok(())
    }

    /// Makes everything written so far durable and persists the recovery
    /// point and log start offset (the periodic checkpoint).
    pub fn checkpoint(&self) -> Result<(), LogError> {
        self.sync_to(self.log_end_offset())?;
        let rp = self.recovery_point();
        let mut s = self.sync.lock();
        if rp > s.persisted_recovery_point {
            s.persisted_recovery_point = rp;
            drop(s);
            self.write_checkpoint()?;
        }
        Ok(())
    }

    fn write_checkpoint(&self) -> Result<(), LogError> {
        let _g = self.checkpoint_lock.lock();
        let c = Checkpoint { recovery_point: self.recovery_point(), log_start_offset: self.log_start_offset() };
        c.write(&self.dir)?;
        Ok(())
    }

    fn check_range(&self, offset: u64) -> Result<(u64, u64), LogError> {
        // Read the end first: the start only grows, and never past the end.
        let leo = self.log_end_offset();
        let lso = self.log_start_offset();
        if offset < lso || offset > leo {
            return Err(LogError::OffsetOutOfRange { offset, log_start_offset: lso, log_end_offset: leo });
        }
        Ok((lso, leo))
    }

    /// Finds the first segment, at or after the one holding `offset`, with a
    /// batch at or after `offset`: `(segment, position, header)`.
    fn locate(&self, offset: u64) -> Result<Option<(Arc<Segment>, u64, BatchHeader)>, LogError> {
        let mut seg = {
            let map = self.segments.read();
            map.range(..=offset).next_back().or_else(|| map.iter().next()).map(|(_, s)| Arc::clone(s))
        };
        while let Some(s) = seg {
            if let Some((pos, h)) = s.locate(offset)? {
                return Ok(Some((s, pos, h)));
            }
            seg = self.segments.read().range((Bound::Excluded(s.base_offset), Bound::Unbounded)).next().map(|(_, s)| Arc::clone(s));
        }
        Ok(None)
    }

    /// Reads whole batches from the one containing `offset`: at least one
    /// batch (even if larger than `max_bytes`), then more while they fit,
    /// never a batch at or past `upper_bound` (the high watermark or last
    /// stable offset; capped at the log end).
    pub fn read(&self, offset: u64, max_bytes: usize, upper_bound: u64) -> Result<ReadResult, LogError> {
        let (lso, leo, first) = self.first_to_read(offset, upper_bound)?;
        let records = match first {
            Some((seg, pos, _, upper)) => seg.read_batches(pos, max_bytes, upper)?,
            None => Bytes::new(),
        };
        Ok(ReadResult { records, log_start_offset: lso, log_end_offset: leo })
    }

    /// As `read`, for a fetch to send: the batches may come back as a
    /// region of a segment file (`Segment::read_for_send`).
    pub fn read_for_send(&self, offset: u64, max_bytes: usize, upper_bound: u64) -> Result<Records, LogError> {
        match self.first_to_read(offset, upper_bound)?.2 {
            Some((seg, pos, h, upper)) => seg.read_for_send(pos, h, max_bytes, upper),
            None => Ok(Records::Bytes(Bytes::new())),
        }
    }

    /// Where a read from `offset` starts: the log start and end offsets,
    /// and the segment, position and header of the first batch to read with
    /// the bound reads stop at (min(`upper_bound`, log end)), unless nothing
    /// lies below that bound.
    #[allow(clippy::type_complexity)]
    fn first_to_read(&self, offset: u64, upper_bound: u64) -> Result<(u64, u64, Option<(Arc<Segment>, u64, BatchHeader, u64)>), LogError> {
        let (lso, leo) = self.check_range(offset)?;
        let upper = upper_bound.min(leo);
        if offset < upper {
            if let Some((seg, pos, h)) = self.locate(offset)? {
                if (h.base_offset as u64) < upper {
                    return Ok((lso, leo, Some((seg, pos, h, upper))));
                }
            }
        }
        Ok((lso, leo, None))
    }

    /// The earliest record at or after the log start offset whose timestamp
    /// is ≥ `ts`, below `upper_bound`, as `(offset, timestamp)`. Looks inside
    /// batches: client timestamps need not increase.
    pub fn offset_for_timestamp(&self, ts: i64, upper_bound: u64) -> Result<Option<(u64, i64)>, LogError> {
        let lso = self.log_start_offset();
        for seg in self.segment_list() {
            if seg.max_timestamp() < ts || seg.next_offset() <= lso {
                continue;
            }
            let start = seg.time_scan_start(ts).max(lso);
            if let Some(found) = self.scan_segment_for_timestamp(&seg, start, ts, upper_bound)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The first record holding the log's largest timestamp, as
    /// `(offset, timestamp)` (ListOffsets with MAX_TIMESTAMP). Records below
    /// the log start offset do not count.
    pub fn offset_of_max_timestamp(&self, upper_bound: u64) -> Result<Option<(u64, i64)>, LogError> {
        let lso = self.log_start_offset();
        let mut exact: Option<(u64, i64)> = None;
        let mut best: Option<Arc<Segment>> = None;
        let best_ts = |exact: &Option<(u64, i64)>, best: &Option<Arc<Segment>>| match (exact, best) {
            (_, Some(s)) => Some(s.max_timestamp()),
            (Some((_, ts)), None) => Some(*ts),
            (None, None) => None,
        };
        for seg in self.segment_list() {
            if seg.is_empty() || seg.next_offset() <= lso || seg.base_offset >= upper_bound {
                continue;
            }
            if seg.base_offset < lso {
                // The segment holding the log start offset: its recorded max
                // may belong to a deleted record, so look at what remains.
                exact = self.max_record_from(&seg, lso, upper_bound)?;
                continue;
            }
            if best_ts(&exact, &best).is_none_or(|b| seg.max_timestamp() > b) {
                best = Some(seg);
            }
        }
        let Some(seg) = best else { return Ok(exact) };
        let max = seg.max_timestamp();
        let start = seg.max_timestamp_batch().unwrap_or_else(|| seg.time_scan_start(max));
        self.scan_segment_for_timestamp(&seg, start, max, upper_bound)
    }

    /// The first record with the largest timestamp among records at or after
    /// `from` in one segment.
    fn max_record_from(&self, seg: &Segment, from: u64, upper_bound: u64) -> Result<Option<(u64, i64)>, LogError> {
        let Some((mut pos, _)) = seg.locate(from)? else { return Ok(None) };
        let mut best: Option<(u64, i64)> = None;
        while let Some(h) = seg.header_at(pos)? {
            if h.base_offset as u64 >= upper_bound {
                break;
            }
            if best.is_none_or(|(_, ts)| h.max_timestamp > ts) {
                let bytes = seg.read_batches(pos, 0, u64::MAX)?;
                for r in batch::record_stamps(&bytes)? {
                    if r.offset as u64 >= from && best.is_none_or(|(_, ts)| r.timestamp > ts) {
                        best = Some((r.offset as u64, r.timestamp));
                    }
                }
            }
            pos += h.total_len() as u64;
        }
        Ok(best)
    }

    fn scan_segment_for_timestamp(&self, seg: &Segment, start: u64, ts: i64, upper_bound: u64) -> Result<Option<(u64, i64)>, LogError> {
        let Some((mut pos, _)) = seg.locate(start)? else { return Ok(None) };
        while let Some(h) = seg.header_at(pos)? {
            if h.base_offset as u64 >= upper_bound {
                return Ok(None);
            }
            if h.max_timestamp >= ts {
                let bytes = seg.read_batches(pos, 0, u64::MAX)?;
                for r in batch::record_stamps(&bytes)? {
                    if r.timestamp >= ts && r.offset as u64 >= start && (r.offset as u64) < upper_bound {
                        return Ok(Some((r.offset as u64, r.timestamp)));
                    }
                }
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Flushes everything and stops appends. The caller records the clean
    /// shutdown (see `LogManager`); a log closed without that is recovered
    /// from its recovery point on the next open.
    pub fn close(&self) -> Result<(), LogError> {
        // After a swap in progress, and before any other.
        let _m = self.maintenance.lock();
        self.closed.store(true, Ordering::Release);
        self.sync_to(self.log_end_offset())?;
        let mut app = self.appender.lock();
        if app.closed {
            return Ok(());
        }
        app.closed = true;
        app.active.close_active()?;
        producer::write_snapshot(&self.dir, app.next_offset, &app.producers, &app.txns.ongoing)?;
        Ok(())
    }
}

/// Rebuilds idempotent producers' state and the transactions' state on
/// open: the newest snapshot at or below the log end gives the producers and
/// the transactions open at its offset; the `.txnindex` files of the
/// segments below it give the aborted transactions; the batch headers from
/// the snapshot on (the active segment, usually) are replayed, markers read,
/// and the `.txnindex` files from there on rewritten to match. Without a
/// snapshot, or with a damaged `.txnindex`, everything is replayed from the
/// log start.
fn rebuild_state(dir: &Path, segments: &BTreeMap<u64, Arc<Segment>>, log_start: u64, log_end: u64) -> Result<(ProducerState, TxnState), LogError> {
    let (from, mut producers, open_txns) = match producer::load_snapshot(dir, log_end)? {
        Some(s) => (s.offset, s.state, s.open_txns),
        None => (log_start, ProducerState::default(), BTreeMap::new()),
    };
    let mut txns = TxnState { ongoing: open_txns, aborted: Vec::new() };
    let mut txn_from = from;
    for seg in segments.values() {
        if seg.base_offset >= from || seg.next_offset() <= log_start {
            continue;
        }
        match txn_index::read(&seg.txn_index_file())? {
            Ok(entries) => txns.aborted.extend(entries.iter().map(|e| e.txn).filter(|a| a.last_offset < from)),
            Err(reason) => {
                tracing::warn!(file = %seg.txn_index_file().display(), reason, "damaged transaction index; rebuilding every one from the log");
                txns = TxnState::default();
                txn_from = log_start;
                break;
            }
        }
    }
    let walk_from = txn_from.min(from);
    for seg in segments.values() {
        if seg.next_offset() <= walk_from {
            continue;
        }
        // Entries of this segment below the replay stay; the rest are found again.
        let mut entries: Vec<txn_index::Entry> = if seg.base_offset < walk_from {
            txn_index::read(&seg.txn_index_file())?.unwrap_or_default().into_iter().filter(|e| e.txn.last_offset < walk_from).collect()
        } else {
            Vec::new()
        };
        let Some((mut pos, _)) = seg.locate(walk_from)? else { continue };
        while let Some(h) = seg.header_at(pos)? {
            let offset = h.base_offset as u64;
            if offset >= from {
                producers.record(&h, offset);
            }
            if offset >= walk_from && h.is_transactional() {
                let marker = if h.is_control() { txn::marker_type(&seg.read_batches(pos, 0, u64::MAX)?) } else { None };
                if !h.is_control() || marker.is_some() {
                    let before = txns.aborted.len();
                    txns.observe(&h, offset, marker);
                    if txns.aborted.len() > before {
                        let txn = *txns.aborted.last().expect("just added");
                        entries.push(txn_index::Entry { txn, last_stable_offset: txns.last_stable_offset(offset + 1) });
                    }
                }
            }
            pos += h.total_len() as u64;
        }
        let path = seg.txn_index_file();
        if txn_index::read(&path)?.ok().as_deref() != Some(&entries[..]) {
            txn_index::write(&path, &entries)?;
            checkpoint::sync_dir(dir)?;
        }
    }
    txns.trim(log_start);
    Ok((producers, txns))
}

/// Copies a batch with `LogAppendTime` set: the timestamp-type attribute, the
/// max timestamp, and a recomputed CRC. Returns the bytes after the base
/// offset field.
fn set_log_append_time(bytes: &Bytes, now: i64) -> Bytes {
    let mut b = BytesMut::from(&bytes[..]);
    let attrs = i16::from_be_bytes([b[21], b[22]]) | 0x08;
    b[21..23].copy_from_slice(&attrs.to_be_bytes());
    b[35..43].copy_from_slice(&now.to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze().slice(8..)
}
