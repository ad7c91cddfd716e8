//! Compaction of one log: keep the latest record of every key.
//!
//! A pass builds the offset map (key → latest offset) from the dirty part of
//! the log, from the cleaner checkpoint (the first dirty offset) up to the
//! first uncleanable offset (the active segment, the last stable offset and
//! `min.compaction.lag.ms` bound it) or until the map is full; then it
//! recopies every segment from the log start through the last one the map
//! covered, in groups merged up to `segment.bytes`, keeping a record unless
//! the map holds a later offset for its key, it is a tombstone (or a
//! transaction marker with no data left) whose segment was first cleaned
//! more than `delete.retention.ms` ago, it has no key, or it belongs to an
//! aborted transaction. Offsets never change: a batch keeps its base offset
//! and last offset delta (an emptied batch stays as a header when it ends its
//! segment or is its producer's latest), so every segment still ends where
//! the next begins.
//!
//! The new segment is written as `<base>.*.cleaned`, made durable, renamed to
//! `.swap` (the commit point), then replaces the old ones; see
//! `storage-format.md` §13 for the files and what recovery does with them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::super::batch::{BatchHeader, HEADER_LEN};
use super::super::checkpoint::sync_dir;
use super::super::cleaner::rewrite::{self, Filtered};
use super::super::cleaner::{CleanContext, CleanStats, Throttle};
use super::super::segment::{self, PreparedBatch, Segment};
use super::super::txn::{self, AbortedTxn};
use super::super::txn_index;
use super::super::LogError;
use super::Log;

/// The file holding a log's first dirty offset.
pub const CLEANER_CHECKPOINT: &str = "cleaner.checkpoint";
const CLEANER_MAGIC: &[u8; 4] = b"EDCL";
const CLEANER_VERSION: u16 = 1;
const CLEANER_LEN: usize = 20;
/// Bytes read from a segment at a time.
const CHUNK: usize = 1 << 20;
/// Bytes of cleaned batches gathered before one write.
const WRITE_BATCH: usize = 1 << 20;

/// How much of a compacted log is waiting to be cleaned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cleanable {
    /// Dirty bytes / (clean + dirty bytes) of the cleanable part.
    pub dirty_ratio: f64,
    pub dirty_bytes: u64,
    /// The oldest dirty record is older than `max.compaction.lag.ms`.
    pub lag_exceeded: bool,
}

/// Reads the first dirty offset; 0 when missing or damaged (everything is
/// then treated as dirty, which only costs work and delays tombstone
/// removal).
pub(super) fn read_cleaner_checkpoint(dir: &Path) -> u64 {
    let Ok(b) = fs::read(dir.join(CLEANER_CHECKPOINT)) else { return 0 };
    if b.len() != CLEANER_LEN || &b[0..4] != CLEANER_MAGIC || u16::from_be_bytes([b[4], b[5]]) != CLEANER_VERSION || crc32fast::hash(&b[..16]).to_be_bytes() != b[16..20] {
        tracing::warn!(dir = %dir.display(), "cleaner checkpoint is damaged; the whole log counts as dirty");
        return 0;
    }
    u64::from_be_bytes(b[8..16].try_into().expect("8 bytes"))
}

pub(super) fn write_cleaner_checkpoint(dir: &Path, first_dirty: u64) -> io::Result<()> {
    let mut b = [0u8; CLEANER_LEN];
    b[0..4].copy_from_slice(CLEANER_MAGIC);
    b[4..6].copy_from_slice(&CLEANER_VERSION.to_be_bytes());
    b[8..16].copy_from_slice(&first_dirty.to_be_bytes());
    let crc = crc32fast::hash(&b[..16]);
    b[16..20].copy_from_slice(&crc.to_be_bytes());
    crate::log::checkpoint::write_atomically(&dir.join(CLEANER_CHECKPOINT), &b)
}

/// Parses `<20 digits><ext>` into the base offset.
fn base_of(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok()).flatten()
}

/// Finishes or rolls back cleaner swaps interrupted by a crash, before the
/// log's segments are listed. `.cleaned` files are an unfinished clean:
/// deleted. A `<base>.log.swap` is a committed clean: the live segments it
/// replaces (bases from `base` up to its end) are deleted and it is renamed
/// live; index `.swap` files without their log are leftovers. Returns the
/// bases of completed swaps, whose indexes must be rebuilt by a scan.
pub(super) fn finish_interrupted_swaps(dir: &Path) -> io::Result<Vec<u64>> {
    let mut swaps = Vec::new();
    let mut live = Vec::new();
    let mut stray = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cleaned") {
            stray.push(name);
        } else if let Some(b) = base_of(&name, ".log.swap") {
            swaps.push(b);
        } else if name.ends_with(".swap") {
            stray.push(name);
        } else if let Some(b) = base_of(&name, ".log") {
            live.push(b);
        }
    }
    for name in &stray {
        let swap_index_of_committed = name.ends_with(".swap") && swaps.iter().any(|b| name.starts_with(&segment::file_stem(*b)));
        if !swap_index_of_committed {
            segment::remove_if_exists(&dir.join(name))?;
        }
    }
    swaps.sort_unstable();
    for &base in &swaps {
        let swap = segment::with_suffix(segment::log_path(dir, base), ".swap");
        let end = scan_end(&swap, base)?;
        for &b in live.iter().filter(|&&b| b > base && b < end) {
            for p in segment::files(dir, b) {
                segment::remove_if_exists(&p)?;
            }
        }
        // The cleaned segment's transaction index is the one to keep: still
        // a `.swap`, or already renamed over the live one.
        let txn_swap = segment::with_suffix(txn_index::path(dir, base), ".swap");
        if txn_swap.exists() {
            fs::rename(&txn_swap, txn_index::path(dir, base))?;
        }
        for p in [segment::index_path(dir, base), segment::time_index_path(dir, base)] {
            segment::remove_if_exists(&segment::with_suffix(p.clone(), ".swap"))?;
            segment::remove_if_exists(&p)?;
        }
        fs::rename(&swap, segment::log_path(dir, base))?;
        tracing::warn!(dir = %dir.display(), base_offset = base, end_offset = end, "completed a cleaner swap interrupted by a crash");
    }
    if !stray.is_empty() || !swaps.is_empty() {
        sync_dir(dir)?;
    }
    Ok(swaps)
}

/// The offset after the last whole batch of a segment file (its base when
/// none is whole).
fn scan_end(path: &Path, base: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path)?;
    let size = f.metadata()?.len();
    let (mut pos, mut end) = (0u64, base);
    let mut head = [0u8; HEADER_LEN];
    while pos + HEADER_LEN as u64 <= size {
        f.read_exact_at(&mut head, pos)?;
        let h = BatchHeader::parse(&head).expect("HEADER_LEN bytes");
        if h.check_structure().is_err() || pos + h.total_len() as u64 > size {
            break;
        }
        end = h.next_offset() as u64;
        pos += h.total_len() as u64;
    }
    Ok(end)
}

/// Walks the whole batches of a segment from `pos`, a chunk at a time:
/// `f(header, bytes)` for each, stopping at `upper` (a base offset) or when
/// `f` says so. Returns the bytes read and whether it was stopped.
fn for_each_batch(seg: &Segment, mut pos: u64, upper: u64, throttle: &mut Throttle, stop: &AtomicBool, mut f: impl FnMut(&BatchHeader, Bytes) -> Result<bool, LogError>) -> Result<(u64, bool), LogError> {
    let mut read = 0u64;
    loop {
        let chunk = seg.read_batches(pos, CHUNK, upper)?;
        if chunk.is_empty() {
            return Ok((read, false));
        }
        read += chunk.len() as u64;
        let mut at = 0usize;
        while at + HEADER_LEN <= chunk.len() {
            let h = BatchHeader::parse(&chunk[at..]).expect("HEADER_LEN bytes");
            let len = h.total_len();
            if !f(&h, chunk.slice(at..at + len))? {
                return Ok((read, true));
            }
            at += len;
        }
        pos += chunk.len() as u64;
        if !throttle.consume(chunk.len() as u64, stop) {
            return Ok((read, true));
        }
    }
}

/// Visits every record of a batch that has a key: `(key, offset)`.
fn for_each_key(bytes: &[u8], mut f: impl FnMut(&[u8], u64)) -> Result<(), LogError> {
    // Filtering with a predicate that keeps everything visits each record
    // once and never rewrites anything.
    rewrite::filter_batch(bytes, false, |r| {
        if let Some(k) = r.key {
            f(k, r.offset);
        }
        true
    })
    .map(|_| ())
}

fn is_aborted(aborted: &[AbortedTxn], h: &BatchHeader) -> bool {
    let o = h.base_offset as u64;
    h.is_transactional() && aborted.iter().any(|a| a.producer_id == h.producer_id && a.first_offset <= o && o <= a.last_offset)
}

/// What one pass learns before recopying.
struct PassPlan {
    /// The map covers dirty records from here on.
    dirty_start: u64,
    aborted: Vec<AbortedTxn>,
    /// Last offsets of each producer's latest batch: kept as headers.
    producer_last: HashSet<u64>,
}

impl Log {
    /// The first offset not yet covered by a completed clean.
    pub fn first_dirty_offset(&self) -> u64 {
        self.cleaner_checkpoint.load(Ordering::Acquire).max(self.log_start_offset()).min(self.log_end_offset())
    }

    /// Offsets from here on are never cleaned now: the active segment, the
    /// first open transaction, and segments younger than
    /// `min.compaction.lag.ms`.
    fn first_uncleanable_offset(&self, segs: &[Arc<Segment>], now: i64) -> u64 {
        let config = self.config();
        let active = segs.last().map_or(0, |s| s.base_offset);
        let mut bound = active.min(self.last_stable_offset());
        if config.min_compaction_lag_ms > 0 {
            for seg in &segs[..segs.len().saturating_sub(1)] {
                let newest = if seg.max_timestamp() >= 0 { seg.max_timestamp() } else { seg.last_modified_ms() };
                if now.saturating_sub(newest) < config.min_compaction_lag_ms {
                    bound = bound.min(seg.base_offset);
                    break;
                }
            }
        }
        bound
    }

    /// How dirty the log is, if it is compacted and has anything to clean.
    pub fn cleanable(&self, now: i64) -> Option<Cleanable> {
        let config = self.config();
        if !config.compact {
            return None;
        }
        let segs = self.segment_list();
        let start = self.log_start_offset();
        let dirty_start = self.first_dirty_offset();
        let uncleanable = self.first_uncleanable_offset(&segs, now);
        if dirty_start >= uncleanable {
            return Some(Cleanable { dirty_ratio: 0.0, dirty_bytes: 0, lag_exceeded: false });
        }
        let (mut clean, mut dirty) = (0u64, 0u64);
        let mut first_dirty_ts = None;
        for seg in &segs {
            if seg.next_offset() <= start || seg.base_offset >= uncleanable {
                continue;
            }
            if seg.next_offset() <= dirty_start {
                clean += seg.size();
            } else {
                dirty += seg.size();
                if first_dirty_ts.is_none() {
                    first_dirty_ts = Some(seg.first_batch_timestamp().filter(|&t| t >= 0).unwrap_or_else(|| seg.last_modified_ms()));
                }
            }
        }
        if dirty == 0 {
            return Some(Cleanable { dirty_ratio: 0.0, dirty_bytes: 0, lag_exceeded: false });
        }
        let lag_exceeded = first_dirty_ts.is_some_and(|t| now.saturating_sub(t) > config.max_compaction_lag_ms);
        Some(Cleanable { dirty_ratio: dirty as f64 / (clean + dirty) as f64, dirty_bytes: dirty, lag_exceeded })
    }

    /// Cleans the log: passes until the dirty part is all covered (several
    /// when the offset map fills), or the cleaner is stopped.
    pub fn compact(&self, ctx: &mut CleanContext<'_>) -> Result<CleanStats, LogError> {
        let mut total = CleanStats::default();
        while let Some(stats) = self.clean_pass(ctx)? {
            total.add(&stats);
            if stats.stopped {
                break;
            }
        }
        Ok(total)
    }

    /// One pass; None when there was nothing to clean.
    fn clean_pass(&self, ctx: &mut CleanContext<'_>) -> Result<Option<CleanStats>, LogError> {
        let config = self.config();
        if !config.compact || self.closed.load(Ordering::Acquire) {
            return Ok(None);
        }
        let segs = self.segment_list();
        let dirty_start = self.first_dirty_offset();
        let uncleanable = self.first_uncleanable_offset(&segs, ctx.now);
        if dirty_start >= uncleanable {
            return Ok(None);
        }
        let mut stats = CleanStats { passes: 1, ..Default::default() };
        let (aborted, producer_last) = {
            let app = self.appender.lock();
            let last: HashSet<u64> = app.producers.producers.values().filter_map(|e| e.batches.back().map(|b| b.last_offset)).collect();
            (app.txns.aborted.clone(), last)
        };

        // Build the map over [dirty_start, end).
        ctx.map.clear(uncleanable - dirty_start);
        let mut end = dirty_start;
        for seg in segs.iter().filter(|s| s.next_offset() > dirty_start && s.base_offset < uncleanable) {
            let pos = match seg.locate(dirty_start)? {
                Some((pos, _)) => pos,
                None => continue,
            };
            let map = &mut *ctx.map;
            let mut full = false;
            let (read, stopped) = for_each_batch(seg, pos, uncleanable, ctx.throttle, ctx.stop, |h, bytes| {
                if !h.is_control() && h.records_count > 0 && !is_aborted(&aborted, h) {
                    if !map.is_empty() && map.len() + h.records_count as usize > map.capacity() {
                        full = true;
                        return Ok(false);
                    }
                    for_each_key(&bytes, |k, o| map.put(k, o))?;
                }
                end = h.next_offset() as u64;
                Ok(true)
            })?;
            stats.bytes_read += read;
            if stopped && !full {
                stats.stopped = true;
                return Ok(Some(stats));
            }
            if full {
                break;
            }
        }
        if end == dirty_start {
            return Ok(None);
        }
        let plan = PassPlan { dirty_start, aborted, producer_last };

        // Recopy the segments from the log start through the last one the
        // map covers, in groups.
        let start = self.log_start_offset();
        let targets: Vec<Arc<Segment>> = segs.iter().filter(|s| s.next_offset() > start && s.base_offset < end).cloned().collect();
        let mut txn_data: HashMap<i64, bool> = HashMap::new();
        // Already-clean segments are never merged with dirty ones: a merged
        // segment's mtime restarts its tombstones' clock, which must not
        // happen to tombstones that are already counting down.
        let split = targets.iter().position(|s| s.next_offset() > dirty_start).unwrap_or(targets.len());
        let (clean_part, dirty_part) = targets.split_at(split);
        for group in group_segments(clean_part, &config).into_iter().chain(group_segments(dirty_part, &config)) {
            let done = self.clean_group(group, &plan, ctx, &mut txn_data, &mut stats)?;
            if !done {
                stats.stopped = true;
                return Ok(Some(stats));
            }
        }
        write_cleaner_checkpoint(&self.dir, end)?;
        self.cleaner_checkpoint.fetch_max(end, Ordering::AcqRel);
        Ok(Some(stats))
    }

    /// Recopies one group of consecutive segments into one new segment and
    /// swaps it in. False when stopped.
    fn clean_group(&self, group: &[Arc<Segment>], plan: &PassPlan, ctx: &mut CleanContext<'_>, txn_data: &mut HashMap<i64, bool>, stats: &mut CleanStats) -> Result<bool, LogError> {
        let config = self.config();
        let base = group[0].base_offset;
        let new = Segment::create_with_suffix(&self.dir, base, ".cleaned", config.segment_index_bytes, config.index_interval_bytes)?;
        let mut changed = group.len() > 1;
        let mut pending: Vec<PreparedBatch> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut written = 0u64;
        let any_dirty = group.iter().any(|s| s.next_offset() > plan.dirty_start);
        let mut newest_clean_mtime = 0i64;
        // Abort markers dropped here: their aborted-transaction entries go
        // too (a reader that meets an entry skips the producer until it
        // sees the abort marker).
        let mut dropped_aborts: Vec<(i64, u64)> = Vec::new();
        let abandon = |new: &Segment| {
            if let Err(e) = new.delete_files() {
                tracing::warn!(error = %e, "could not remove an abandoned cleaned segment");
            }
        };
        for (i, seg) in group.iter().enumerate() {
            let is_last_seg = i + 1 == group.len();
            let seg_end = seg.size();
            let was_clean = seg.next_offset() <= plan.dirty_start;
            let mtime = seg.last_modified_ms();
            if was_clean {
                newest_clean_mtime = newest_clean_mtime.max(mtime);
            }
            // Tombstones and markers may go once their segment has been
            // clean for delete.retention.ms.
            let expired = was_clean && ctx.now.saturating_sub(mtime) > config.delete_retention_ms;
            let map = &*ctx.map;
            let mut pos = 0u64;
            let mut error = None;
            let (read, stopped) = for_each_batch(seg, 0, u64::MAX, ctx.throttle, ctx.stop, |h, bytes| {
                let len = bytes.len();
                let last_of_group = is_last_seg && pos + len as u64 == seg_end;
                pos += len as u64;
                let keep_empty = last_of_group || plan.producer_last.contains(&(h.last_offset() as u64));
                let outcome = if h.is_control() {
                    let has_data = txn_data.remove(&h.producer_id).unwrap_or(false);
                    if expired && !has_data {
                        if h.records_count > 0 && txn::marker_type(&bytes) == Some(false) {
                            dropped_aborts.push((h.producer_id, h.base_offset as u64));
                        }
                        stats.records_removed += h.records_count.max(0) as u64;
                        if last_of_group { Filtered::Rewritten(rewrite::empty_batch(h)) } else { Filtered::Dropped }
                    } else {
                        Filtered::Unchanged
                    }
                } else if h.records_count == 0 {
                    if keep_empty { Filtered::Unchanged } else { Filtered::Dropped }
                } else {
                    let aborted = is_aborted(&plan.aborted, h);
                    let mut kept = 0u64;
                    let f = rewrite::filter_batch(&bytes, keep_empty, |r| {
                        let keep = !aborted
                            && r.key.is_some_and(|k| map.get(k).is_none_or(|latest| r.offset >= latest))
                            && !(r.tombstone && expired);
                        kept += keep as u64;
                        keep
                    });
                    let f = match f {
                        Ok(f) => f,
                        Err(e) => {
                            error = Some(e);
                            return Ok(false);
                        }
                    };
                    stats.records_removed += h.records_count as u64 - kept;
                    if h.is_transactional() && kept > 0 {
                        txn_data.insert(h.producer_id, true);
                    }
                    f
                };
                let out = match outcome {
                    Filtered::Unchanged => bytes,
                    Filtered::Dropped => {
                        changed = true;
                        return Ok(true);
                    }
                    Filtered::Rewritten(b) => {
                        changed = true;
                        b
                    }
                };
                let header = BatchHeader::parse(&out).expect("a whole batch");
                pending_bytes += out.len();
                pending.push(PreparedBatch { header, base_offset_bytes: out[0..8].try_into().expect("8 bytes"), rest: out.slice(8..) });
                if pending_bytes >= WRITE_BATCH {
                    new.append(&pending)?;
                    if new.unwritten() > segment::MAX_UNWRITTEN {
                        new.write_out()?;
                    }
                    written += pending_bytes as u64;
                    pending.clear();
                    pending_bytes = 0;
                }
                Ok(true)
            })
            .inspect_err(|_| abandon(&new))?;
            stats.bytes_read += read;
            if let Some(e) = error {
                abandon(&new);
                return Err(e);
            }
            if stopped {
                abandon(&new);
                return Ok(false);
            }
        }
        if !pending.is_empty() {
            new.append(&pending).inspect_err(|_| abandon(&new))?;
            written += pending_bytes as u64;
        }
        let before: u64 = group.iter().map(|s| s.size()).sum();
        stats.bytes_before += before;
        stats.segments_before += group.len() as u64;
        if !changed {
            // Nothing to remove: keep the segment, but note when it was
            // first cleaned (its tombstones' clock starts now).
            abandon(&new);
            if any_dirty {
                group[0].set_last_modified_ms(ctx.now)?;
            }
            stats.bytes_after += before;
            stats.segments_after += 1;
            return Ok(true);
        }
        let ready = (|| -> io::Result<()> {
            // The members' aborted transactions, but those whose abort marker
            // was dropped. Written even when empty, so that the swap replaces
            // the first member's index whatever it held.
            let mut entries = Vec::new();
            for s in group {
                entries.extend(txn_index::read(&s.txn_index_file())?.map_err(io::Error::other)?);
            }
            entries.retain(|e| !dropped_aborts.contains(&(e.txn.producer_id, e.txn.last_offset)));
            txn_index::write(&new.txn_index_file(), &entries)?;
            new.seal()?;
            new.set_last_modified_ms(if any_dirty { ctx.now } else { newest_clean_mtime })?;
            new.sync_all()
        })();
        if let Err(e) = ready {
            abandon(&new);
            return Err(e.into());
        }
        stats.bytes_written += written;
        stats.bytes_after += new.size();
        stats.segments_after += 1;
        if !ctx.throttle.consume(written, ctx.stop) {
            abandon(&new);
            return Ok(false);
        }
        if self.swap_in(group, new)? && !dropped_aborts.is_empty() {
            self.appender.lock().txns.aborted.retain(|a| !dropped_aborts.contains(&(a.producer_id, a.last_offset)));
        }
        Ok(true)
    }

    /// Replaces `group` by `new` on disk and in the segment map. Retention
    /// waits meanwhile; if it removed a member first, the clean is dropped
    /// (false).
    fn swap_in(&self, group: &[Arc<Segment>], new: Segment) -> Result<bool, LogError> {
        let _m = self.maintenance.lock();
        if self.closed.load(Ordering::Acquire) {
            new.delete_files()?;
            return Err(LogError::Closed);
        }
        let intact = {
            let map = self.segments.read();
            group.iter().all(|s| map.get(&s.base_offset).is_some_and(|m| Arc::ptr_eq(m, s)))
        };
        if !intact {
            new.delete_files()?;
            return Ok(false);
        }
        // The commit point: from here recovery completes the swap.
        new.rename_suffix(".swap")?;
        sync_dir(&self.dir)?;
        let new = Arc::new(new);
        {
            let mut map = self.segments.write();
            for s in group {
                map.remove(&s.base_offset);
            }
            map.insert(new.base_offset, Arc::clone(&new));
        }
        for s in &group[1..] {
            s.delete_files()?;
        }
        // Renaming over the first member's files replaces them; readers
        // holding the old segment keep reading its open descriptors.
        new.rename_suffix("")?;
        sync_dir(&self.dir)?;
        Ok(true)
    }
}

/// Splits consecutive segments into groups that fit one segment: total size
/// within `segment.bytes`, offsets within the 32-bit relative range, index
/// entries within the index size.
fn group_segments<'a>(segs: &'a [Arc<Segment>], config: &super::super::LogConfig) -> Vec<&'a [Arc<Segment>]> {
    let max_entries = (config.segment_index_bytes / 12).saturating_sub(2) as usize;
    let mut groups = Vec::new();
    let mut i = 0;
    while i < segs.len() {
        let mut j = i + 1;
        let (mut size, mut entries) = (segs[i].size(), segs[i].index_entries().0);
        while j < segs.len() {
            let s = &segs[j];
            let fits = size + s.size() <= config.segment_bytes
                && s.next_offset() - segs[i].base_offset <= u32::MAX as u64
                && entries + s.index_entries().0 < max_entries;
            if !fits {
                break;
            }
            size += s.size();
            entries += s.index_entries().0 + 1;
            j += 1;
        }
        groups.push(&segs[i..j]);
        i = j;
    }
    groups
}
