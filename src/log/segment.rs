//! One segment: a `.log` file of record batches and its two indexes.
//!
//! A segment is written only by its log's appender (one at a time) and read
//! by any number of readers: readers see bytes up to the published `size`,
//! which moves only after an append is complete in memory. Appends are
//! staged in memory chunks (`tail`) and reach the file by `write_out`, in
//! whole blocks by direct I/O; the newest bytes are read from the chunks,
//! older ones from the file.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};

use super::batch::{self, BatchHeader, HEADER_LEN};
use super::file_records::{self, FileRecords, Records};
use super::index::{OffsetIndex, TimeIndex, OFFSET_ENTRY, TIME_ENTRY};
use super::tail::{self, Chunk, Mem};
use super::LogError;

/// Bytes of a header needed to walk from batch to batch.
const WALK_LEN: usize = 27;

pub fn file_stem(base_offset: u64) -> String {
    format!("{base_offset:020}")
}

pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.log", file_stem(base)))
}
pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.index", file_stem(base)))
}
pub fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.timeindex", file_stem(base)))
}

/// Every live file a segment may have: log, both indexes, transaction index.
pub fn files(dir: &Path, base: u64) -> [PathBuf; 4] {
    [log_path(dir, base), index_path(dir, base), time_index_path(dir, base), super::txn_index::path(dir, base)]
}

/// One batch ready to be written: its new base offset (the first 8 bytes,
/// written in place of the client's) and the rest of its bytes.
pub struct PreparedBatch {
    pub header: BatchHeader,
    pub base_offset_bytes: [u8; 8],
    pub rest: Bytes,
}

impl PreparedBatch {
    pub fn len(&self) -> usize {
        8 + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

struct Indexes {
    offset: OffsetIndex,
    time: TimeIndex,
}

/// State changed by appends, guarded together.
#[derive(Clone, Copy, Debug)]
struct Tail {
    next_offset: u64,
    max_timestamp: i64,
    /// Base offset of the batch holding `max_timestamp`, when known.
    max_timestamp_batch: Option<u64>,
    /// Max timestamp of the first batch; `segment.ms` counts from it.
    first_batch_timestamp: Option<i64>,
    bytes_since_index: u64,
}

/// Bytes of the file read at a time to walk batch headers (`read_for_send`).
const HEADER_WINDOW: usize = 8 << 10;

/// Staged bytes not yet in the file above which appenders write them out
/// themselves (`Log::append_staged` for acks=0, the cleaner).
pub const MAX_UNWRITTEN: u64 = 8 << 20;

/// The segment's bytes in memory (see `tail`).
struct Staged {
    /// Chunks the appender has moved past, oldest first; the cache may have
    /// dropped the memory of written ones.
    old: VecDeque<Arc<Chunk>>,
    /// The chunk taking appends, with its memory.
    cur: Option<(Arc<Chunk>, Arc<Mem>)>,
    /// The file holds every byte below this position.
    written: u64,
    /// Appends came since the last `retire_idle`.
    busy: bool,
}

impl Staged {
    fn new(written: u64) -> Staged {
        Staged { old: VecDeque::new(), cur: None, written, busy: false }
    }

    /// Chunks with their memory, newest first.
    fn in_memory(&self) -> impl Iterator<Item = (&Arc<Chunk>, Arc<Mem>)> {
        let cur = self.cur.iter().map(|(c, m)| (c, Arc::clone(m)));
        cur.chain(self.old.iter().rev().filter_map(|c| c.mem().map(|m| (c, m))))
    }

    /// The newest chunk holding the byte at `pos`.
    fn find(&self, pos: u64) -> Option<(&Arc<Chunk>, Arc<Mem>)> {
        if let Some((c, m)) = &self.cur {
            if c.base <= pos && pos < c.end() {
                return Some((c, Arc::clone(m)));
            }
        }
        // Chunks are in position order; a chunk's last block is also the
        // next one's first, so the one before may hold `pos` too.
        let i = self.old.partition_point(|c| c.base <= pos);
        self.old.range(i.saturating_sub(2)..i).rev().filter(|c| pos < c.end()).find_map(|c| c.mem().map(|m| (c, m)))
    }

    /// The lowest position from which memory holds every staged byte.
    fn memory_from(&self) -> u64 {
        let mut from = u64::MAX;
        for (c, _) in self.in_memory() {
            if from != u64::MAX && c.end() < from {
                break;
            }
            from = from.min(c.base);
        }
        from
    }

    /// Moves the appending chunk to `old` (and into the cache's count).
    fn retire_current(&mut self) {
        if let Some((c, _)) = self.cur.take() {
            if c.is_empty() {
                return;
            }
            if self.written >= c.end() {
                c.set_written();
            }
            tail::retire(&c);
            self.old.push_back(c);
        }
        self.prune();
    }

    /// Forgets the oldest chunks whose memory is gone.
    fn prune(&mut self) {
        while self.old.front().is_some_and(|c| c.mem().is_none()) {
            self.old.pop_front();
        }
    }
}

pub struct Segment {
    pub base_offset: u64,
    dir: PathBuf,
    /// Buffered: reads, truncation, fsync. Shared with the fetch responses
    /// that send a region of it (`read_for_send`).
    file: Arc<File>,
    /// Opened with O_DIRECT for writes; None where the file system refuses it.
    direct: Option<File>,
    /// Set when a direct write was refused (EINVAL): writes go through
    /// `file` from then on.
    direct_refused: AtomicBool,
    size: AtomicU64,
    staged: Mutex<Staged>,
    /// Held by the one write-out at a time, with the block it copies the
    /// last partial block into (made by the first write-out, dropped at seal).
    write_lock: Mutex<Option<Mem>>,
    indexes: RwLock<Indexes>,
    tail: Mutex<Tail>,
    index_interval: u64,
    /// Wall time this segment object was made; `segment.ms` counts from it
    /// when batches carry no timestamps (as Kafka does).
    created_ms: i64,
    /// Appended to the file names while the segment is not live: `.cleaned`
    /// or `.swap` for a segment the cleaner is building (storage-format.md).
    suffix: Mutex<&'static str>,
    /// Where each write-out began (tests check no region sent from the
    /// file is written again).
    #[cfg(test)]
    write_starts: Mutex<Vec<u64>>,
}

/// What a scan of a segment's batches found.
pub struct RecoveryReport {
    pub valid_bytes: u64,
    pub truncated_bytes: u64,
    pub reason: Option<String>,
}

impl Segment {
    /// Creates a new empty segment (replacing any stale files of that name).
    pub fn create(dir: &Path, base_offset: u64, index_bytes: u64, index_interval: u64) -> io::Result<Segment> {
        Segment::create_with_suffix(dir, base_offset, "", index_bytes, index_interval)
    }

    /// Creates a new empty segment whose files carry `suffix` after their
    /// usual names (the cleaner's `.cleaned` segments).
    pub fn create_with_suffix(dir: &Path, base_offset: u64, suffix: &'static str, index_bytes: u64, index_interval: u64) -> io::Result<Segment> {
        let named = |p: PathBuf| with_suffix(p, suffix);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(named(log_path(dir, base_offset)))?;
        for p in [index_path(dir, base_offset), time_index_path(dir, base_offset)] {
            remove_if_exists(&named(p))?;
        }
        let indexes = Indexes {
            offset: OffsetIndex::open(&named(index_path(dir, base_offset)), Some(index_bytes))?,
            time: TimeIndex::open(&named(time_index_path(dir, base_offset)), Some(index_bytes))?,
        };
        let direct = open_direct(&named(log_path(dir, base_offset)));
        Ok(Segment::assemble(dir, base_offset, file, direct, 0, indexes, index_interval, suffix))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(dir: &Path, base_offset: u64, file: File, direct: Option<File>, size: u64, indexes: Indexes, index_interval: u64, suffix: &'static str) -> Segment {
        Segment {
            base_offset,
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            direct,
            direct_refused: AtomicBool::new(false),
            size: AtomicU64::new(size),
            staged: Mutex::new(Staged::new(size)),
            write_lock: Mutex::new(None),
            indexes: RwLock::new(indexes),
            tail: Mutex::new(Tail {
                next_offset: base_offset,
                max_timestamp: -1,
                max_timestamp_batch: None,
                first_batch_timestamp: None,
                bytes_since_index: 0,
            }),
            index_interval,
            created_ms: super::now_ms(),
            suffix: Mutex::new(suffix),
            #[cfg(test)]
            write_starts: Mutex::new(Vec::new()),
        }
    }

    fn suffixed(&self, p: PathBuf) -> PathBuf {
        with_suffix(p, &self.suffix.lock())
    }

    pub fn log_file(&self) -> PathBuf {
        self.suffixed(log_path(&self.dir, self.base_offset))
    }

    fn index_file(&self) -> PathBuf {
        self.suffixed(index_path(&self.dir, self.base_offset))
    }

    fn time_index_file(&self) -> PathBuf {
        self.suffixed(time_index_path(&self.dir, self.base_offset))
    }

    /// The aborted-transaction index (`.txnindex`, which exists only once
    /// the segment holds an abort marker).
    pub fn txn_index_file(&self) -> PathBuf {
        self.suffixed(super::txn_index::path(&self.dir, self.base_offset))
    }

    /// Renames the segment's files to carry `suffix` instead of the current
    /// one: the indexes first (the `.txnindex` if there is one), the log last
    /// (the log file's name is what recovery goes by). The caller syncs the
    /// directory.
    pub fn rename_suffix(&self, suffix: &'static str) -> io::Result<()> {
        let mut current = self.suffix.lock();
        let txn = super::txn_index::path(&self.dir, self.base_offset);
        if with_suffix(txn.clone(), &current).exists() {
            std::fs::rename(with_suffix(txn.clone(), &current), with_suffix(txn, suffix))?;
        }
        for p in [index_path(&self.dir, self.base_offset), time_index_path(&self.dir, self.base_offset)] {
            std::fs::rename(with_suffix(p.clone(), &current), with_suffix(p, suffix))?;
        }
        // The index renames are durable before the log's, which recovery
        // takes as the sign that the others happened.
        super::checkpoint::sync_dir(&self.dir)?;
        let log = log_path(&self.dir, self.base_offset);
        std::fs::rename(with_suffix(log.clone(), &current), with_suffix(log, suffix))?;
        *current = suffix;
        Ok(())
    }

    /// Sets the log file's modification time (the cleaner keeps it as the
    /// time a segment was first cleaned; see storage-format.md).
    pub fn set_last_modified_ms(&self, ms: i64) -> io::Result<()> {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        self.file.set_modified(t)
    }

    /// Opens an existing segment, trusting its indexes only after checking
    /// them against the file: every entry must point inside the file, and
    /// the walk of batch headers from the last index entry to the end of the
    /// file must be structurally sound. Returns `Ok(None)` when the segment
    /// needs a full recovery scan instead.
    pub fn open_trusted(dir: &Path, base_offset: u64, index_bytes: Option<u64>, index_interval: u64) -> io::Result<Option<Segment>> {
        let file = OpenOptions::new().read(true).write(true).open(log_path(dir, base_offset))?;
        let size = file.metadata()?.len();
        let (ip, tp) = (index_path(dir, base_offset), time_index_path(dir, base_offset));
        if !ip.exists() || !tp.exists() {
            return Ok(None);
        }
        // A sealed index is trimmed to whole valid entries; anything else
        // there means it was damaged.
        if index_bytes.is_none() {
            let (il, tl) = (std::fs::metadata(&ip)?.len(), std::fs::metadata(&tp)?.len());
            let offset = OffsetIndex::open(&ip, None)?;
            let time = TimeIndex::open(&tp, None)?;
            if offset.used_bytes() != il || time.used_bytes() != tl || il % OFFSET_ENTRY as u64 != 0 || tl % TIME_ENTRY as u64 != 0 {
                return Ok(None);
            }
        }
        let indexes = Indexes {
            offset: OffsetIndex::open(&ip, index_bytes)?,
            time: TimeIndex::open(&tp, index_bytes)?,
        };
        let direct = open_direct(&log_path(dir, base_offset));
        let seg = Segment::assemble(dir, base_offset, file, direct, size, indexes, index_interval, "");
        match seg.load_tail()? {
            true => Ok(Some(seg)),
            false => Ok(None),
        }
    }

    /// Computes the tail state from the indexes and a walk of the headers
    /// after the last offset index entry. False when anything disagrees.
    fn load_tail(&self) -> io::Result<bool> {
        let size = self.size();
        let idx = self.indexes.read();
        let (rel, pos) = idx.offset.last().unwrap_or((0, 0));
        if pos as u64 >= size.max(1) && pos != 0 {
            return Ok(false);
        }
        if pos > 0 {
            match self.header_at(pos as u64)? {
                Some(h) if h.base_offset as u64 == self.base_offset + rel as u64 => {}
                _ => return Ok(false),
            }
        }
        let mut t = self.tail.lock();
        if let Some((ts, _)) = idx.time.last() {
            t.max_timestamp = ts;
        }
        if let Some(first) = self.header_at(0)? {
            t.first_batch_timestamp = Some(first.max_timestamp);
        }
        let mut p = pos as u64;
        let mut next = self.base_offset + rel as u64;
        while p < size {
            let h = match self.header_at(p)? {
                Some(h) => h,
                None => return Ok(false),
            };
            if h.check_structure().is_err() || p + h.total_len() as u64 > size || (h.base_offset as u64) < next {
                return Ok(false);
            }
            if h.max_timestamp > t.max_timestamp {
                t.max_timestamp = h.max_timestamp;
                t.max_timestamp_batch = Some(h.base_offset as u64);
            }
            next = h.next_offset() as u64;
            p += h.total_len() as u64;
            t.bytes_since_index = p - pos as u64;
        }
        if let Some((_, r)) = idx.time.last() {
            if self.base_offset + r as u64 > next.max(self.base_offset + 1) {
                return Ok(false);
            }
        }
        t.next_offset = next;
        Ok(true)
    }

    /// Opens a segment by scanning every batch: validates structure, offsets
    /// and CRC, rebuilds both indexes from scratch, and truncates the file at
    /// the first invalid batch.
    pub fn recover(dir: &Path, base_offset: u64, index_bytes: u64, index_interval: u64, min_offset: u64) -> io::Result<(Segment, RecoveryReport)> {
        let file = OpenOptions::new().read(true).write(true).open(log_path(dir, base_offset))?;
        let file_size = file.metadata()?.len();
        for p in [index_path(dir, base_offset), time_index_path(dir, base_offset)] {
            remove_if_exists(&p)?;
        }
        let indexes = Indexes {
            offset: OffsetIndex::open(&index_path(dir, base_offset), Some(index_bytes))?,
            time: TimeIndex::open(&time_index_path(dir, base_offset), Some(index_bytes))?,
        };
        let direct = open_direct(&log_path(dir, base_offset));
        let seg = Segment::assemble(dir, base_offset, file, direct, 0, indexes, index_interval, "");
        let mut pos = 0u64;
        let mut next = base_offset.max(min_offset);
        let mut buf = Vec::new();
        let mut reason = None;
        while pos < file_size {
            let remaining = file_size - pos;
            if remaining < HEADER_LEN as u64 {
                reason = Some(format!("{remaining} trailing bytes cannot hold a batch header"));
                break;
            }
            let mut head = [0u8; HEADER_LEN];
            seg.file.read_exact_at(&mut head, pos)?;
            let h = BatchHeader::parse(&head).expect("HEADER_LEN bytes");
            if let Err(r) = h.check_structure() {
                reason = Some(r.to_string());
                break;
            }
            let len = h.total_len() as u64;
            if len > remaining {
                reason = Some(format!("batch declares {len} bytes but {remaining} remain"));
                break;
            }
            if h.base_offset < 0 || (h.base_offset as u64) < next {
                reason = Some(format!("batch base offset {} is below the expected {next}", h.base_offset));
                break;
            }
            if h.last_offset() as u64 - base_offset > u32::MAX as u64 {
                reason = Some("batch offset does not fit the segment's relative offsets".into());
                break;
            }
            buf.resize(len as usize, 0);
            seg.file.read_exact_at(&mut buf, pos)?;
            if batch::compute_crc(&buf) != h.crc {
                reason = Some(format!("CRC-32C mismatch in the batch at offset {}", h.base_offset));
                break;
            }
            seg.index_batch(&h, pos, len);
            next = h.next_offset() as u64;
            pos += len;
        }
        // Zeros after the last batch, less than a block of them, are the
        // padding of a direct write (storage-format.md §2), not damage.
        let padding = file_size - pos < tail::BLOCK as u64 && {
            let mut rest = vec![0u8; (file_size - pos) as usize];
            seg.file.read_exact_at(&mut rest, pos)?;
            rest.iter().all(|&b| b == 0)
        };
        if pos < file_size {
            seg.file.set_len(pos)?;
            seg.file.sync_all()?;
        }
        seg.size.store(pos, Ordering::Release);
        seg.staged.lock().written = pos;
        seg.tail.lock().next_offset = next.max(base_offset);
        let (truncated_bytes, reason) = if padding { (0, None) } else { (file_size - pos, reason) };
        let report = RecoveryReport { valid_bytes: pos, truncated_bytes, reason };
        Ok((seg, report))
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> u64 {
        self.tail.lock().next_offset
    }

    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    pub fn max_timestamp(&self) -> i64 {
        self.tail.lock().max_timestamp
    }

    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    pub fn first_batch_timestamp(&self) -> Option<i64> {
        self.tail.lock().first_batch_timestamp
    }

    /// Seconds-resolution modification time in ms, for segments without
    /// timestamps (retention falls back to it, as Kafka does).
    pub fn last_modified_ms(&self) -> i64 {
        self.file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// True when both indexes have room for an entry per batch of the next
    /// append plus the entry written when the segment is sealed.
    pub fn has_index_room(&self, batches: usize) -> bool {
        let idx = self.indexes.read();
        idx.offset.free_slots() > batches && idx.time.free_slots() > batches
    }

    /// Records the index entries for a batch at `pos`, and the tail state.
    fn index_batch(&self, h: &BatchHeader, pos: u64, len: u64) {
        let mut t = self.tail.lock();
        if pos > 0 && t.bytes_since_index >= self.index_interval {
            let rel = (h.base_offset as u64 - self.base_offset) as u32;
            let mut idx = self.indexes.write();
            // The last time index slot is kept for the entry written at seal,
            // which records the segment's newest timestamp.
            if idx.time.free_slots() > 1 && idx.offset.append(rel, pos as u32) {
                idx.time.maybe_append(t.max_timestamp, rel);
            }
            t.bytes_since_index = 0;
        }
        t.bytes_since_index += len;
        if t.first_batch_timestamp.is_none() {
            t.first_batch_timestamp = Some(h.max_timestamp);
        }
        if h.max_timestamp > t.max_timestamp {
            t.max_timestamp = h.max_timestamp;
            t.max_timestamp_batch = Some(h.base_offset as u64);
        }
        t.next_offset = h.next_offset() as u64;
    }

    /// Stages the batches after the segment's last byte and indexes them.
    /// They reach the file at the next `write_out` (or `sync_*`, `seal`,
    /// `close_active`); readers see them at once.
    pub fn append(&self, batches: &[PreparedBatch]) -> io::Result<()> {
        let start = self.size();
        let mut pos = start;
        {
            let mut st = self.staged.lock();
            st.busy = true;
            if let Some((c, _)) = &st.cur {
                if c.end() > start {
                    // Bytes of an append that failed half-way: never
                    // published, as they lie above the segment's size.
                    c.rewind((start.max(c.base) - c.base) as usize);
                }
            }
            for b in batches {
                self.stage(&mut st, pos, &b.base_offset_bytes)?;
                self.stage(&mut st, pos + 8, &b.rest)?;
                pos += b.len() as u64;
            }
        }
        let mut at = start;
        for b in batches {
            self.index_batch(&b.header, at, b.len() as u64);
            at += b.len() as u64;
        }
        self.size.store(pos, Ordering::Release);
        Ok(())
    }

    /// Staged bytes not yet in the file.
    pub fn unwritten(&self) -> u64 {
        self.size().saturating_sub(self.staged.lock().written)
    }

    /// Copies `src` to position `pos` of the staged bytes, starting chunks
    /// as needed.
    fn stage(&self, st: &mut Staged, mut pos: u64, mut src: &[u8]) -> io::Result<()> {
        while !src.is_empty() {
            let fits = st.cur.as_ref().is_some_and(|(c, _)| c.end() == pos && pos < c.base + c.cap as u64);
            if !fits {
                self.start_chunk(st, pos, src.len())?;
            }
            let (c, mem) = st.cur.as_ref().expect("a chunk was just started");
            let off = (pos - c.base) as usize;
            let n = src.len().min(c.cap - off);
            // SAFETY: `mem` is this chunk's memory, and this segment's
            // appender (one at a time, under its log's appender lock) is the
            // only caller.
            unsafe { c.append(mem, off, &src[..n]) };
            pos += n as u64;
            src = &src[n..];
        }
        Ok(())
    }

    /// Starts the chunk that takes appends from `pos`: it begins at the
    /// block holding `pos`, with that block's earlier bytes copied in (from
    /// the previous chunk, or from the file). Chunks double in size while
    /// appends keep coming, up to `tail::MAX_CHUNK`.
    fn start_chunk(&self, st: &mut Staged, pos: u64, want: usize) -> io::Result<()> {
        let base = tail::floor(pos);
        let carry = (pos - base) as usize;
        let last_cap = st.cur.as_ref().map(|(c, _)| c.cap).or_else(|| st.old.back().map(|c| c.cap));
        let cap = match want {
            // Only the block holding `pos`, for an idle or just opened segment.
            0 => tail::BLOCK,
            _ => tail::ceil(carry + want).max(last_cap.map_or(0, |c| c * 2)).clamp(tail::MIN_CHUNK, tail::MAX_CHUNK),
        };
        let (chunk, mem) = Chunk::new(base, cap);
        if carry > 0 {
            let mut head = vec![0u8; carry];
            let loaded = match st.find(base) {
                Some((c, m)) if c.end() >= pos => {
                    let off = (base - c.base) as usize;
                    head.copy_from_slice(&c.slice(&m, off, carry));
                    c.loaded().saturating_sub(off).min(carry)
                }
                _ => {
                    self.file.read_exact_at(&mut head, base)?;
                    carry
                }
            };
            chunk.set_loaded(loaded);
            // SAFETY: a new chunk with its own memory, not yet shared.
            unsafe { chunk.append(&mem, 0, &head) };
        }
        st.retire_current();
        st.cur = Some((chunk, mem));
        Ok(())
    }

    /// Writes every staged byte not yet in the file, in whole blocks (the
    /// last one padded with zeros, and written again next time). One
    /// write-out runs at a time; one that waited for another writes what
    /// was appended meanwhile, so concurrent callers share writes.
    ///
    /// Whole blocks below the size come straight from the chunks (bytes
    /// there never change); the last, partial block is copied with its
    /// zero padding into a buffer of its own first, so the device never
    /// reads memory an appender is writing.
    pub fn write_out(&self) -> io::Result<()> {
        let mut tail_block = self.write_lock.lock();
        let end = self.size();
        let (from, jobs) = {
            let st = self.staged.lock();
            if st.written >= end {
                return Ok(());
            }
            let chunks = st.old.iter().chain(st.cur.iter().map(|(c, _)| c));
            let jobs: Vec<(Arc<Chunk>, Arc<Mem>)> = chunks
                .filter(|c| c.end() > st.written && c.base < end)
                .map(|c| (Arc::clone(c), c.mem().expect("chunks not yet in the file stay in memory")))
                .collect();
            (st.written, jobs)
        };
        let last_block = tail::floor(end);
        // The pieces lie end to end in the file: each chunk's whole blocks
        // (a later chunk starts at the block holding this one's end and
        // writes that block itself), then the last partial block from a
        // zero-padded copy. One vectored write sends them all.
        let mut pieces: Vec<(*const u8, usize)> = Vec::with_capacity(jobs.len() + 1);
        let mut first = None;
        for (i, (c, mem)) in jobs.iter().enumerate() {
            let start = tail::floor(from.max(c.base));
            let stop = jobs.get(i + 1).map_or(last_block, |(next, _)| next.base);
            if stop > start {
                first.get_or_insert(start);
                pieces.push((mem.ptr_at((start - c.base) as usize), (stop - start) as usize));
            }
            if i + 1 == jobs.len() && end > last_block {
                let block = tail_block.get_or_insert_with(|| Mem::new(tail::BLOCK));
                // SAFETY: `block` is held under the write lock; the bytes copied
                // lie below the published size, which never change.
                unsafe { block.fill_from(&c.slice(mem, (last_block - c.base) as usize, (end - last_block) as usize)) };
                first.get_or_insert(last_block);
                pieces.push((block.ptr_at(0), tail::BLOCK));
            }
        }
        if let Some(at) = first {
            #[cfg(test)]
            self.write_starts.lock().push(at);
            self.write_blocks(&mut pieces, at)?;
        }
        let mut st = self.staged.lock();
        st.written = st.written.max(end);
        for c in &st.old {
            if c.end() <= st.written {
                c.set_written();
            }
        }
        Ok(())
    }

    /// Positional vectored write of `pieces` (block-aligned memory that
    /// outlives the call, end to end in the file) from `at`, looping over
    /// short writes; through the direct descriptor unless it refused.
    fn write_blocks(&self, pieces: &mut [(*const u8, usize)], at: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut at = at;
        let mut rest: &mut [(*const u8, usize)] = pieces;
        while !rest.is_empty() {
            let direct = self.direct.as_ref().filter(|_| !self.direct_refused.load(Ordering::Acquire));
            let fd = direct.unwrap_or(&*self.file).as_raw_fd();
            let iov: Vec<libc::iovec> = rest.iter().take(1024).map(|&(p, l)| libc::iovec { iov_base: p as *mut libc::c_void, iov_len: l }).collect();
            // SAFETY: every piece is readable memory that outlives the call
            // (the callers' chunk or block memory); pwritev only reads it.
            let n = unsafe { libc::pwritev(fd, iov.as_ptr(), iov.len() as libc::c_int, at as libc::off_t) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EINVAL) if direct.is_some() => {
                        tracing::warn!(segment = %self.log_file().display(), position = at, "the file system refused a direct write; writing through the page cache from now on");
                        self.direct_refused.store(true, Ordering::Release);
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "pwritev wrote nothing"));
            }
            // Skip what was written: whole pieces, then part of one.
            let mut n = n as usize;
            at += n as u64;
            while let Some((p, l)) = rest.first_mut() {
                if n < *l {
                    // SAFETY: still inside the piece.
                    *p = unsafe { p.add(n) };
                    *l -= n;
                    break;
                }
                n -= *l;
                rest = &mut rest[1..];
            }
        }
        Ok(())
    }

    /// Hands the appending chunk to the cache when no append came since
    /// the last call and everything in it is in the file, keeping only a
    /// chunk of the last block: an idle partition holds one block of its
    /// own.
    pub fn retire_idle(&self) -> io::Result<()> {
        let mut st = self.staged.lock();
        let busy = std::mem::replace(&mut st.busy, false);
        if !busy && st.cur.as_ref().is_some_and(|(c, _)| c.end() <= st.written && c.cap > tail::BLOCK) {
            self.start_chunk(&mut st, self.size(), 0)?;
        }
        Ok(())
    }

    /// Drops the memory of every chunk already in the file except the
    /// appending one, as the cache does under pressure (tests and benches).
    pub fn drop_written_memory(&self) {
        let mut st = self.staged.lock();
        for c in &st.old {
            if c.is_written() {
                c.evict();
            }
        }
        st.prune();
    }

    /// Readies the segment to take appends after it was opened: its last
    /// block, when partly filled, is held in memory, because readers must
    /// never read through the page cache a block a direct write may
    /// rewrite (the kernel could then fail to invalidate the page, and
    /// report that as an error of the next fsync).
    pub fn prepare_appends(&self) -> io::Result<()> {
        let mut st = self.staged.lock();
        let size = self.size();
        if st.cur.is_none() && size % tail::BLOCK as u64 != 0 {
            self.start_chunk(&mut st, size, 0)?;
        }
        Ok(())
    }

    /// The `len` bytes at `pos` (all below `size()`): a slice of a chunk
    /// without a copy when one holds them all (then true if they were
    /// appended, not loaded from the file), else read from the file and
    /// the chunks (false).
    ///
    /// Never fewer bytes than asked for, to spare a copy: a fetch answered
    /// short at a chunk boundary can hold nothing a client can use (only
    /// batches a compaction emptied), and librdkafka takes a run of such
    /// answers for a message too large to fetch.
    fn read_bytes(&self, pos: u64, max: usize) -> io::Result<(Bytes, bool)> {
        let (memory_from, chunks) = {
            let st = self.staged.lock();
            if let Some((c, m)) = st.find(pos) {
                let off = (pos - c.base) as usize;
                if c.end() - pos >= max as u64 {
                    return Ok((c.slice(&m, off, max), off >= c.loaded()));
                }
            }
            let chunks: Vec<(Arc<Chunk>, u64, Arc<Mem>)> = st.in_memory().map(|(c, m)| (Arc::clone(c), c.end(), m)).collect();
            (st.memory_from(), chunks)
        };
        if pos + max as u64 <= memory_from {
            return Ok((read_uninit(&self.file, max, pos)?.freeze(), false));
        }
        // Across the file and chunks, or across chunks: copied.
        let mut buf = BytesMut::with_capacity(max);
        if pos < memory_from {
            buf.extend_from_slice(&read_uninit(&self.file, (memory_from - pos) as usize, pos)?);
        }
        while buf.len() < max {
            let p = pos + buf.len() as u64;
            let Some((c, end, m)) = chunks.iter().find(|(c, e, _)| c.base <= p && p < *e) else {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment bytes missing from memory"));
            };
            let n = ((end - p) as usize).min(max - buf.len());
            buf.extend_from_slice(&c.slice(m, (p - c.base) as usize, n));
        }
        Ok((buf.freeze(), false))
    }

    /// Fills `buf` with the bytes at `pos` (all below `size()`).
    fn read_into(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        {
            let st = self.staged.lock();
            match st.find(pos) {
                Some((c, m)) if c.end() >= pos + buf.len() as u64 => {
                    buf.copy_from_slice(&c.slice(&m, (pos - c.base) as usize, buf.len()));
                    return Ok(());
                }
                Some(_) => {}
                None if pos + buf.len() as u64 <= st.memory_from() => {
                    drop(st);
                    return self.file.read_exact_at(buf, pos);
                }
                None => {}
            }
        }
        buf.copy_from_slice(&self.read_bytes(pos, buf.len())?.0);
        Ok(())
    }

    /// Reads the 61-byte header at `pos`, or None past the end.
    pub fn header_at(&self, pos: u64) -> io::Result<Option<BatchHeader>> {
        if pos + HEADER_LEN as u64 > self.size() {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        self.read_into(&mut head, pos)?;
        Ok(BatchHeader::parse(&head))
    }

    /// Finds the batch that contains `offset`, or the first batch after it
    /// (offsets may have gaps), as `(position, header)`. `None` when the
    /// segment holds nothing at or after `offset`.
    pub fn locate(&self, offset: u64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let size = self.size();
        let rel = offset.saturating_sub(self.base_offset).min(u32::MAX as u64) as u32;
        let (irel, ipos) = self.indexes.read().offset.lookup(rel);
        let mut pos = ipos as u64;
        if pos > 0 {
            // Never trust an index blindly: the entry must point at the batch
            // it names.
            match self.header_at(pos)? {
                Some(h) if h.base_offset as u64 == self.base_offset + irel as u64 => {}
                _ => {
                    tracing::warn!(segment = %self.log_file().display(), "offset index entry does not match the log; scanning from the segment start");
                    pos = 0;
                }
            }
        }
        let mut walk = [0u8; WALK_LEN];
        let mut expected_min = if pos == 0 { self.base_offset as i64 } else { (self.base_offset + irel as u64) as i64 };
        while pos + WALK_LEN as u64 <= size {
            self.read_into(&mut walk, pos)?;
            let base = i64::from_be_bytes(walk[0..8].try_into().expect("8 bytes"));
            let len = i32::from_be_bytes(walk[8..12].try_into().expect("4 bytes"));
            let delta = i32::from_be_bytes(walk[23..27].try_into().expect("4 bytes"));
            // Base offsets only grow: a header that breaks that is damaged
            // (the base offset field lies outside the CRC).
            if len < (HEADER_LEN - batch::LOG_OVERHEAD) as i32 || delta < 0 || walk[16] as i8 != batch::MAGIC || base < expected_min {
                return Err(LogError::CorruptLog {
                    path: self.log_file(),
                    position: pos,
                    reason: "invalid batch header".into(),
                });
            }
            if (base + delta as i64) as u64 >= offset {
                let h = self.header_at(pos)?.ok_or_else(|| LogError::CorruptLog {
                    path: self.log_file(),
                    position: pos,
                    reason: "batch header runs past the end of the segment".into(),
                })?;
                return Ok(Some((pos, h)));
            }
            expected_min = base + delta as i64 + 1;
            pos += batch::LOG_OVERHEAD as u64 + len as u64;
        }
        Ok(None)
    }

    /// Reads whole batches starting at `pos`: at least the first batch, then
    /// more while they fit in `max_bytes` and start below `upper_bound`.
    /// Every batch read from the file is CRC-checked; a corrupt batch ends
    /// the read (or fails it when it is the first).
    pub fn read_batches(&self, pos: u64, max_bytes: usize, upper_bound: u64) -> Result<Bytes, LogError> {
        let Some(first) = self.header_at(pos)? else { return Ok(Bytes::new()) };
        let Some(want) = self.read_extent(pos, &first, max_bytes, upper_bound)? else { return Ok(Bytes::new()) };
        let (buf, in_memory) = self.read_bytes(pos, want as usize)?;
        let mut end = 0usize;
        let mut expected_min = first.base_offset;
        while end + HEADER_LEN <= buf.len() {
            let h = BatchHeader::parse(&buf[end..]).expect("HEADER_LEN bytes");
            let Some(len) = self.next_batch(pos, end as u64, &h, want, upper_bound, &mut expected_min)? else { break };
            // Bytes that never left memory were checked when appended; bytes
            // from the file are checked again (the disk may have damaged them).
            if let Err(reason) = if in_memory { Ok(h) } else { batch::check_stored(&buf[end..end + len as usize]) } {
                if end == 0 {
                    return Err(self.corrupt(pos, reason.into()));
                }
                tracing::warn!(position = pos + end as u64, reason, "read stops before a corrupt batch");
                break;
            }
            end += len as usize;
        }
        Ok(buf.slice(..end))
    }

    /// How many bytes a read of whole batches from `pos` looks at: at least
    /// the first batch (`first`), up to `max_bytes` and the segment's end.
    /// None when the first batch starts at or past `upper_bound`.
    fn read_extent(&self, pos: u64, first: &BatchHeader, max_bytes: usize, upper_bound: u64) -> Result<Option<u64>, LogError> {
        if first.base_offset as u64 >= upper_bound {
            return Ok(None);
        }
        let (size, first_len) = (self.size(), first.total_len() as u64);
        if pos + first_len > size {
            return Err(self.corrupt(pos, "batch runs past the end of the segment".into()));
        }
        Ok(Some((max_bytes as u64).max(first_len).min(size - pos)))
    }

    /// Whether a read of `want` bytes from `pos` takes the batch `h` found
    /// `end` bytes in: its length, or None to stop before it (it starts at
    /// or past `upper_bound`, its base offset goes backwards, it is
    /// malformed or does not fit). A malformed first batch fails the read.
    fn next_batch(&self, pos: u64, end: u64, h: &BatchHeader, want: u64, upper_bound: u64, expected_min: &mut i64) -> Result<Option<u64>, LogError> {
        if end > 0 && h.base_offset >= 0 && h.base_offset as u64 >= upper_bound {
            return Ok(None);
        }
        if h.base_offset < *expected_min {
            tracing::warn!(position = pos + end, "read stops before a batch whose base offset goes backwards");
            return Ok(None);
        }
        *expected_min = h.next_offset();
        let len = h.total_len() as u64;
        if h.check_structure().is_err() || end + len > want {
            if end == 0 {
                return Err(self.corrupt(pos, "invalid batch header".into()));
            }
            return Ok(None);
        }
        Ok(Some(len))
    }

    fn corrupt(&self, position: u64, reason: String) -> LogError {
        LogError::CorruptLog { path: self.log_file(), position, reason }
    }

    /// As `read_batches`, for a fetch to send, `first` being the header at
    /// `pos`. The batches are found by walking their headers; the bytes
    /// below the in-memory tail (which no direct write rewrites) are
    /// returned as a region of the file, neither read nor CRC-checked (the
    /// socket takes them from the page cache; clients check CRCs, as with
    /// Kafka's `sendfile`), the rest as the memory's bytes. A read that
    /// starts in memory, has less than `file_records::MIN_FILE_LEN` bytes in
    /// the file or more than `file_records::MAX_LEN` in all, or finds no
    /// stand-ins to be had, is `read_batches`'.
    pub fn read_for_send(&self, pos: u64, first: BatchHeader, max_bytes: usize, upper_bound: u64) -> Result<Records, LogError> {
        let size = self.size();
        // A position no chunk in memory holds lies below the in-memory tail
        // (memory holds every byte from there on), and only then is the
        // tail's start worth finding.
        let memory_from = {
            let st = self.staged.lock();
            if st.find(pos).is_some() {
                None
            } else {
                Some(st.memory_from())
            }
        };
        let read = || self.read_batches(pos, max_bytes, upper_bound).map(Records::Bytes);
        let Some(memory_from) = memory_from else { return read() };
        let Some(want) = self.read_extent(pos, &first, max_bytes, upper_bound)? else { return Ok(Records::Bytes(Bytes::new())) };
        if want > file_records::MAX_LEN as u64 || memory_from.min(pos + want) - pos < file_records::MIN_FILE_LEN as u64 || !file_records::available() {
            return read();
        }
        let (mut end, mut records, mut expected_min, mut next_offset) = (0u64, 0u64, first.base_offset, 0u64);
        // Headers below the tail come from a window of the file read a
        // few KiB at a time (small batches: one pread for dozens of them),
        // the others through `header_at`.
        let (mut window, mut window_at) = (Vec::new(), 0u64);
        while end + HEADER_LEN as u64 <= want {
            let at = pos + end;
            let h = if end == 0 {
                first
            } else if at + HEADER_LEN as u64 <= memory_from {
                if at + HEADER_LEN as u64 > window_at + window.len() as u64 {
                    window.resize((memory_from.min(size) - at).min(HEADER_WINDOW as u64) as usize, 0);
                    self.file.read_exact_at(&mut window, at)?;
                    window_at = at;
                }
                BatchHeader::parse(&window[(at - window_at) as usize..]).expect("HEADER_LEN bytes")
            } else {
                self.header_at(at)?.ok_or_else(|| self.corrupt(at, "batch header past the end of the segment".into()))?
            };
            let Some(len) = self.next_batch(pos, end, &h, want, upper_bound, &mut expected_min)? else { break };
            records += h.records_count.max(0) as u64;
            next_offset = h.next_offset().max(0) as u64;
            end += len;
        }
        if end == 0 {
            return Ok(Records::Bytes(Bytes::new()));
        }
        let file_end = (pos + end).min(memory_from);
        // A few KiB are cheaper copied into the response than sent by a
        // syscall of their own (and its own small packet).
        if file_end - pos < file_records::MIN_FILE_LEN as u64 {
            return read();
        }
        let tail = if pos + end > file_end { self.read_bytes(file_end, (pos + end - file_end) as usize)?.0 } else { Bytes::new() };
        Ok(Records::File(FileRecords { file: Arc::clone(&self.file), pos, file_len: (file_end - pos) as usize, tail, records, next_offset }))
    }

    /// Where a scan for the first record with timestamp ≥ `ts` starts.
    pub fn time_scan_start(&self, ts: i64) -> u64 {
        self.base_offset + self.indexes.read().time.scan_start(ts) as u64
    }

    /// The base offset of the batch holding this segment's max timestamp,
    /// when it is known without a scan.
    pub fn max_timestamp_batch(&self) -> Option<u64> {
        self.tail.lock().max_timestamp_batch
    }

    /// Write-out, then fsync of the log file, metadata included.
    pub fn sync_all(&self) -> io::Result<()> {
        self.write_out()?;
        self.file.sync_all()
    }

    /// Write-out, then fdatasync of the log file.
    pub fn sync_data(&self) -> io::Result<()> {
        self.write_out()?;
        self.file.sync_data()
    }

    /// Writes out the staged bytes and cuts the file to the segment's size
    /// (dropping the last block's zero padding).
    fn write_out_exact(&self) -> io::Result<()> {
        self.write_out()?;
        let size = self.size();
        if self.file.metadata()?.len() != size {
            self.file.set_len(size)?;
        }
        Ok(())
    }

    /// Seals the segment: writes out its bytes (the file cut to its exact
    /// size), records its final time index entry, writes the indexes to
    /// disk and trims them to their used length.
    pub fn seal(&self) -> io::Result<()> {
        // Not fsynced here (a roll holds the appender): the log's next
        // sync_to starts from this segment, its cut included (§8).
        self.write_out_exact()?;
        // No more write-outs: the block for the last partial one goes.
        *self.write_lock.lock() = None;
        {
            let mut st = self.staged.lock();
            if self.suffix.lock().is_empty() {
                st.retire_current();
            } else {
                // A cleaner's segment is not read soon: keep nothing.
                st.cur = None;
                st.old.clear();
            }
        }
        let t = *self.tail.lock();
        let mut idx = self.indexes.write();
        let end_rel = (t.next_offset - self.base_offset).min(u32::MAX as u64) as u32;
        idx.time.maybe_append(t.max_timestamp, end_rel);
        let (ol, tl) = (idx.offset.used_bytes(), idx.time.used_bytes());
        idx.offset.resize(ol)?;
        idx.time.resize(tl)?;
        sync_path(&self.index_file())?;
        sync_path(&self.time_index_file())?;
        super::txn_index::sync(&self.txn_index_file())
    }

    /// Prepares the still-active segment for a clean stop: the final time
    /// index entry and both indexes written to disk (left preallocated).
    pub fn close_active(&self) -> io::Result<()> {
        self.write_out_exact()?;
        let t = *self.tail.lock();
        let mut idx = self.indexes.write();
        let end_rel = (t.next_offset - self.base_offset).min(u32::MAX as u64) as u32;
        idx.time.maybe_append(t.max_timestamp, end_rel);
        idx.offset.flush()?;
        idx.time.flush()?;
        drop(idx);
        super::txn_index::sync(&self.txn_index_file())?;
        self.file.sync_all()
    }

    pub fn delete_files(&self) -> io::Result<()> {
        remove_if_exists(&self.log_file())?;
        remove_if_exists(&self.index_file())?;
        remove_if_exists(&self.time_index_file())?;
        remove_if_exists(&self.txn_index_file())
    }

    /// The rolling position for `segment.ms` and the `bytes_since_index`
    /// counter are derived state; this exposes the offset index length for
    /// tests and diagnostics.
    pub fn index_entries(&self) -> (usize, usize) {
        let idx = self.indexes.read();
        (idx.offset.len(), idx.time.len())
    }
}

/// Reads exactly `len` bytes at `pos` into a new buffer without zeroing it
/// first (pread straight into the spare capacity).
fn read_uninit(file: &File, len: usize, pos: u64) -> io::Result<BytesMut> {
    use std::os::fd::AsRawFd;
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let (filled, want) = (buf.len(), len - buf.len());
        let spare = buf.spare_capacity_mut();
        // SAFETY: pread writes at most `want` bytes into the spare capacity,
        // which holds at least that many; the length grows only by what was
        // written.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr() as *mut libc::c_void, want, (pos + filled as u64) as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment ended before the bytes it published"));
        }
        // SAFETY: the first `n` bytes of the spare capacity were just written.
        unsafe { buf.set_len(filled + n as usize) };
    }
    Ok(buf)
}

/// The log file opened again for direct writes, when the file system
/// allows it.
fn open_direct(path: &Path) -> Option<File> {
    match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no direct I/O for this file; writing through the page cache");
            None
        }
    }
}

/// `p` with `suffix` appended to its file name.
pub fn with_suffix(p: PathBuf, suffix: &str) -> PathBuf {
    let mut s = p.into_os_string();
    s.push(suffix);
    s.into()
}

pub fn remove_if_exists(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub fn sync_path(p: &Path) -> io::Result<()> {
    File::open(p)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::tests::build_batch;

    fn prepared(base: u64, b: &[u8]) -> PreparedBatch {
        let header = BatchHeader { base_offset: base as i64, ..BatchHeader::parse(b).unwrap() };
        PreparedBatch { header, base_offset_bytes: (base as i64).to_be_bytes(), rest: Bytes::copy_from_slice(&b[8..]) }
    }

    /// A batch of `records` records with values of `value_len` bytes, at
    /// `offset`.
    fn batch_at(offset: u64, records: usize, value_len: usize, ts: i64) -> PreparedBatch {
        prepared(offset, &build_batch(&vec![ts; records], value_len))
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Appends of many sizes (chunks fill, grow and are retired; batches
    /// span chunks), write-outs at random moments, and reads from every
    /// batch position: from chunks, across chunk boundaries, and from the
    /// file once chunks are dropped; then the file itself, and a reopen.
    #[test]
    fn reads_see_exactly_what_was_appended_from_memory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 0, 1 << 20, 4096).unwrap();
        let (mut expected, mut positions, mut offset, mut rng) = (Vec::new(), Vec::new(), 0u64, 0x9e37_79b9_7f4a_7c15u64);
        for i in 0..300 {
            let value_len = match xorshift(&mut rng) % 10 {
                0 => 200_000 + (xorshift(&mut rng) % 100_000) as usize,
                1..=3 => (xorshift(&mut rng) % 20_000) as usize,
                _ => (xorshift(&mut rng) % 500) as usize,
            };
            let records = 1 + (xorshift(&mut rng) % 3) as usize;
            let b = batch_at(offset, records, value_len, i);
            positions.push((expected.len() as u64, b.len()));
            expected.extend_from_slice(&b.base_offset_bytes);
            expected.extend_from_slice(&b.rest);
            seg.append(&[b]).unwrap();
            offset += records as u64;
            match xorshift(&mut rng) % 50 {
                0..=11 => seg.write_out().unwrap(),
                12 => seg.drop_written_memory(),
                _ => {}
            }
        }
        // Returns how many reads for sending came back as file regions, and
        // how many of those had a tail in memory.
        let check = |seg: &Segment, rng: &mut u64| {
            let (mut regions, mut tails) = (0, 0);
            for &(pos, len) in &positions {
                let max = [0, 50_000, 1 << 20][(xorshift(rng) % 3) as usize];
                let got = seg.read_batches(pos, max, u64::MAX).unwrap();
                assert!(got.len() >= len, "at least the batch at {pos}");
                assert_eq!(&got[..], &expected[pos as usize..pos as usize + got.len()], "bytes at {pos}");
                let (at, h) = seg.locate(h_offset(&got)).unwrap().unwrap();
                assert_eq!((at, h.base_offset), (pos, h_offset(&got) as i64));
                // A read for sending returns the same batches, from the file
                // or memory, and stops at the same upper bound.
                let upper = if xorshift(rng) % 2 == 0 { u64::MAX } else { h_offset(&got) + 1 + xorshift(rng) % 20 };
                let want = seg.read_batches(pos, max, upper).unwrap();
                match seg.read_for_send(pos, seg.header_at(pos).unwrap().unwrap(), max, upper).unwrap() {
                    Records::Bytes(b) => assert_eq!(b, want, "bytes for sending at {pos}"),
                    Records::File(f) => {
                        regions += 1;
                        assert_eq!((f.pos, &f.read_all()[..]), (pos, &want[..]), "file region and tail at {pos}");
                        let count: u64 = batch::whole_batches(&want).map(|(h, _)| h.records_count as u64).sum();
                        assert_eq!(f.records, count);
                        assert!(f.pos + f.file_len as u64 <= seg.staged.lock().memory_from(), "a region only below the in-memory tail");
                        tails += usize::from(!f.tail.is_empty());
                    }
                }
            }
            (regions, tails)
        };
        check(&seg, &mut rng);
        seg.write_out().unwrap();
        seg.drop_written_memory();
        let (regions, tails) = check(&seg, &mut rng);
        assert!(regions > 0 && tails > 0, "written bytes out of memory are sent from the file ({regions} regions, {tails} with a tail)");
        seg.close_active().unwrap();
        assert_eq!(std::fs::read(log_path(dir.path(), 0)).unwrap(), expected, "the file holds the bytes, without padding");
        drop(seg);
        let reopened = Segment::open_trusted(dir.path(), 0, Some(1 << 20), 4096).unwrap().expect("a clean segment");
        assert!(check(&reopened, &mut rng).0 > positions.len() / 2, "a reopened segment is sent from its file");
    }

    /// A file region handed to a fetch is never written again, and stays
    /// exactly its bytes, while appends, write-outs, idle retirements and
    /// cache evictions go on: no direct write rewrites a block below the
    /// in-memory tail.
    #[test]
    fn file_regions_stay_exact_while_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 0, 1 << 20, 4096).unwrap();
        let (mut expected, mut offset, mut rng) = (Vec::new(), 0u64, 0x2545_f491_4f6c_dd1du64);
        let append = |seg: &Segment, expected: &mut Vec<u8>, offset: &mut u64, rng: &mut u64, i: usize| {
            let b = batch_at(*offset, 1, (xorshift(rng) % 3000) as usize, i as i64);
            let at = expected.len() as u64;
            expected.extend_from_slice(&b.base_offset_bytes);
            expected.extend_from_slice(&b.rest);
            seg.append(&[b]).unwrap();
            *offset += 1;
            at
        };
        let mut positions = Vec::new();
        let (mut held, mut taken): (Vec<(FileRecords, Vec<u8>)>, usize) = (Vec::new(), 0);
        for i in 0..400 {
            positions.push(append(&seg, &mut expected, &mut offset, &mut rng, i));
            match xorshift(&mut rng) % 10 {
                0..=2 => seg.write_out().unwrap(),
                3 => seg.retire_idle().unwrap(),
                4..=6 => {
                    seg.write_out().unwrap();
                    seg.drop_written_memory();
                }
                _ => {}
            }
            // No write-out since a region was taken began inside it (a
            // direct write to a block whose page a socket still holds could
            // fail to invalidate it), and its bytes are what they were.
            let starts = std::mem::take(&mut *seg.write_starts.lock());
            for (f, want) in &held {
                for &at in &starts {
                    assert!(at >= f.pos + f.file_len as u64, "a write-out from {at} into the region {}..{}", f.pos, f.pos + f.file_len as u64);
                }
                assert!(f.read_all() == *want, "the region at {} changed after append {i}", f.pos);
            }
            // Take a region from one of the last batches (those reach the
            // block the next write-out starts in), holding the last 30.
            let pos = positions[positions.len() - 1 - (xorshift(&mut rng) % 20).min(positions.len() as u64 - 1) as usize];
            if let Records::File(f) = seg.read_for_send(pos, seg.header_at(pos).unwrap().unwrap(), 1 << 20, u64::MAX).unwrap() {
                let want = seg.read_batches(pos, 1 << 20, u64::MAX).unwrap().to_vec();
                held.push((f, want));
                taken += 1;
                if held.len() > 30 {
                    held.remove(0);
                }
            }
        }
        assert!(taken > 15, "regions taken: {taken}");
        assert!(held.iter().any(|(f, _)| !f.tail.is_empty()), "some regions end in memory");
    }

    fn h_offset(batch: &[u8]) -> u64 {
        BatchHeader::parse(batch).unwrap().base_offset as u64
    }

    /// Readers reading while the appender appends, switches chunks and
    /// writes out: every read returns exactly the bytes appended there.
    #[test]
    fn concurrent_readers_see_whole_published_batches() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Arc::new(Segment::create(dir.path(), 0, 1 << 20, 4096).unwrap());
        // (position, bytes) of every batch appended so far.
        type Published = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;
        let published: Published = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (seg, published, done) = (Arc::clone(&seg), Arc::clone(&published), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut rng = 77 + r;
                    let mut reads = 0u64;
                    while !done.load(Ordering::Acquire) || reads == 0 {
                        let pick = {
                            let p = published.lock();
                            if p.is_empty() {
                                continue;
                            }
                            let i = (xorshift(&mut rng) as usize) % p.len();
                            p[i].clone()
                        };
                        let got = seg.read_batches(pick.0, 0, u64::MAX).unwrap();
                        assert_eq!(&got[..], &pick.1[..], "the batch at {}", pick.0);
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let (mut pos, mut offset, mut rng) = (0u64, 0u64, 5u64);
        for i in 0..3000 {
            let b = batch_at(offset, 1, (xorshift(&mut rng) % 3000) as usize, i);
            let mut bytes = b.base_offset_bytes.to_vec();
            bytes.extend_from_slice(&b.rest);
            let len = b.len() as u64;
            seg.append(&[b]).unwrap();
            published.lock().push((pos, bytes));
            pos += len;
            offset += 1;
            if i % 3 == 0 {
                seg.write_out().unwrap();
            }
            if i % 500 == 0 {
                seg.drop_written_memory();
            }
        }
        done.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }

    #[test]
    fn a_reader_holding_a_deleted_segment_still_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 0, 4096, 4096).unwrap();
        let b = build_batch(&[1, 2, 3], 10);
        seg.append(&[prepared(0, &b)]).unwrap();
        seg.delete_files().unwrap();
        assert!(!log_path(dir.path(), 0).exists());
        let (pos, h) = seg.locate(1).unwrap().unwrap();
        assert_eq!((pos, h.base_offset), (0, 0));
        let read = seg.read_batches(pos, 1 << 20, u64::MAX).unwrap();
        assert_eq!(&read[8..], &b[8..]);
    }
}
