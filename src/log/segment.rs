//! One segment: a `.log` file of record batches and its two indexes.
//!
//! A segment is written only by its log's appender (one at a time) and read
//! by any number of readers without locks on the file: readers see bytes up
//! to the published `size`, which moves only after a write completes.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};

use super::batch::{self, BatchHeader, HEADER_LEN};
use super::index::{OffsetIndex, TimeIndex, OFFSET_ENTRY, TIME_ENTRY};
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

/// Appended bytes after which writeback is started (see `start_writeback`).
const WRITEBACK_CHUNK: u64 = 1 << 20;

pub struct Segment {
    pub base_offset: u64,
    dir: PathBuf,
    file: File,
    size: AtomicU64,
    /// Position up to which writeback of appended bytes has been started.
    written_back: AtomicU64,
    indexes: RwLock<Indexes>,
    tail: Mutex<Tail>,
    index_interval: u64,
    /// Wall time this segment object was made; `segment.ms` counts from it
    /// when batches carry no timestamps (as Kafka does).
    created_ms: i64,
    /// Appended to the file names while the segment is not live: `.cleaned`
    /// or `.swap` for a segment the cleaner is building (storage-format.md).
    suffix: Mutex<&'static str>,
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
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            file,
            size: AtomicU64::new(0),
            written_back: AtomicU64::new(0),
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
        })
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
        let seg = Segment {
            base_offset,
            dir: dir.to_path_buf(),
            file,
            size: AtomicU64::new(size),
            written_back: AtomicU64::new(size),
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
            suffix: Mutex::new(""),
        };
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
        let seg = Segment {
            base_offset,
            dir: dir.to_path_buf(),
            file,
            size: AtomicU64::new(0),
            written_back: AtomicU64::new(0),
            indexes: RwLock::new(Indexes {
                offset: OffsetIndex::open(&index_path(dir, base_offset), Some(index_bytes))?,
                time: TimeIndex::open(&time_index_path(dir, base_offset), Some(index_bytes))?,
            }),
            tail: Mutex::new(Tail {
                next_offset: base_offset,
                max_timestamp: -1,
                max_timestamp_batch: None,
                first_batch_timestamp: None,
                bytes_since_index: 0,
            }),
            index_interval,
            created_ms: super::now_ms(),
            suffix: Mutex::new(""),
        };
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
        if pos < file_size {
            seg.file.set_len(pos)?;
            seg.file.sync_all()?;
        }
        seg.size.store(pos, Ordering::Release);
        seg.tail.lock().next_offset = next.max(base_offset);
        let report = RecoveryReport { valid_bytes: pos, truncated_bytes: file_size - pos, reason };
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

    /// Writes the batches at the end of the file and indexes them. On an
    /// I/O error the file is cut back to its previous size.
    pub fn append(&self, batches: &[PreparedBatch]) -> io::Result<()> {
        let start = self.size();
        let total: usize = batches.iter().map(|b| b.len()).sum();
        let mut slices = Vec::with_capacity(batches.len() * 2);
        for b in batches {
            slices.push(IoSlice::new(&b.base_offset_bytes));
            slices.push(IoSlice::new(&b.rest));
        }
        if let Err(e) = write_all_vectored(&self.file, start, &mut slices, total) {
            let _ = self.file.set_len(start);
            return Err(e);
        }
        let mut pos = start;
        for b in batches {
            self.index_batch(&b.header, pos, b.len() as u64);
            pos += b.len() as u64;
        }
        self.size.store(pos, Ordering::Release);
        self.start_writeback(pos);
        Ok(())
    }

    /// Starts the kernel writing appended bytes out once `WRITEBACK_CHUNK`
    /// of them are dirty (`sync_file_range`, asynchronous), so dirty page
    /// cache never piles up: the kernel would otherwise stall appends for
    /// tens of milliseconds to throttle it, and every fsync would have more
    /// to do. Durability still comes only from fsync.
    fn start_writeback(&self, end: u64) {
        let from = self.written_back.load(Ordering::Acquire);
        if end < from + WRITEBACK_CHUNK {
            return;
        }
        self.written_back.store(end, Ordering::Release);
        // SAFETY: a plain syscall on a descriptor this segment owns; a
        // failure only means writeback starts later (fsync reports errors).
        unsafe {
            libc::sync_file_range(std::os::fd::AsRawFd::as_raw_fd(&self.file), from as libc::off64_t, (end - from) as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE);
        }
    }

    /// Reads the 61-byte header at `pos`, or None past the end.
    pub fn header_at(&self, pos: u64) -> io::Result<Option<BatchHeader>> {
        if pos + HEADER_LEN as u64 > self.size() {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut head, pos)?;
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
            self.file.read_exact_at(&mut walk, pos)?;
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
    /// Every batch is CRC-checked; a corrupt batch ends the read (or fails it
    /// when it is the first).
    pub fn read_batches(&self, pos: u64, max_bytes: usize, upper_bound: u64) -> Result<Bytes, LogError> {
        let size = self.size();
        let corrupt = |position: u64, reason: String| LogError::CorruptLog { path: self.log_file(), position, reason };
        let first = match self.header_at(pos)? {
            Some(h) => h,
            None => return Ok(Bytes::new()),
        };
        if first.base_offset as u64 >= upper_bound {
            return Ok(Bytes::new());
        }
        let first_len = first.total_len() as u64;
        if pos + first_len > size {
            return Err(corrupt(pos, "batch runs past the end of the segment".into()));
        }
        let want = (max_bytes as u64).max(first_len).min(size - pos) as usize;
        let mut buf = read_uninit(&self.file, want, pos)?;
        let mut end = 0usize;
        let mut expected_min = first.base_offset;
        while end + HEADER_LEN <= buf.len() {
            let h = BatchHeader::parse(&buf[end..]).expect("HEADER_LEN bytes");
            if end > 0 && h.base_offset >= 0 && h.base_offset as u64 >= upper_bound {
                break;
            }
            if h.base_offset < expected_min {
                tracing::warn!(position = pos + end as u64, "read stops before a batch whose base offset goes backwards");
                break;
            }
            expected_min = h.next_offset();
            let len = h.total_len();
            if h.check_structure().is_err() || end + len > buf.len() {
                if end == 0 {
                    return Err(corrupt(pos, "invalid batch header".into()));
                }
                break;
            }
            if let Err(reason) = batch::check_stored(&buf[end..end + len]) {
                if end == 0 {
                    return Err(corrupt(pos, reason.into()));
                }
                tracing::warn!(position = pos + end as u64, reason, "read stops before a corrupt batch");
                break;
            }
            end += len;
        }
        buf.truncate(end);
        Ok(buf.freeze())
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

    /// fsync of the log file, metadata included.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// fdatasync of the log file.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Seals the segment: records its final time index entry, writes the
    /// indexes to disk and trims them to their used length.
    pub fn seal(&self) -> io::Result<()> {
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

/// Positional vectored write of all of `slices` at `at` (pwritev, looping
/// over short writes): one syscall per append in the common case, and no
/// shared file cursor.
fn write_all_vectored(file: &File, at: u64, slices: &mut [IoSlice<'_>], total: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut written = 0usize;
    let mut bufs = slices;
    while written < total {
        let count = bufs.len().min(1024) as libc::c_int; // IOV_MAX on Linux
        // SAFETY: IoSlice is ABI-compatible with iovec on Unix (documented by
        // std); the slices outlive the call.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), bufs.as_ptr() as *const libc::iovec, count, (at + written as u64) as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwritev wrote nothing"));
        }
        written += n as usize;
        IoSlice::advance_slices(&mut bufs, n as usize);
    }
    Ok(())
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
