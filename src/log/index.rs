//! Memory-mapped sparse indexes of a segment.
//!
//! * The offset index maps a relative offset to the file position of the
//!   batch that starts at that offset: 8-byte entries `(u32 rel, u32 pos)`.
//! * The time index maps a timestamp to a relative offset: 12-byte entries
//!   `(i64 max_ts, u32 rel)`, meaning "every record with an offset below
//!   `base + rel` has a timestamp ≤ `max_ts`".
//!
//! Both files are preallocated to `segment.index.bytes`, memory-mapped, filled
//! from the front, and trimmed to their used length when the segment is
//! sealed. The used length of an untrimmed file is the longest prefix of
//! entries that strictly increase in both fields (an unused slot is zeros,
//! which never increases). See storage-format.md.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

pub const OFFSET_ENTRY: usize = 8;
pub const TIME_ENTRY: usize = 12;

/// A fixed-size-entry file, mapped read-write.
struct MappedEntries {
    path: PathBuf,
    entry_size: usize,
    mmap: Option<MmapMut>,
    entries: usize,
}

impl MappedEntries {
    fn capacity(&self) -> usize {
        self.mmap.as_ref().map_or(0, |m| m.len() / self.entry_size)
    }

    fn entry(&self, i: usize) -> &[u8] {
        let m = self.mmap.as_ref().expect("entry() on an index with entries has a mapping");
        &m[i * self.entry_size..(i + 1) * self.entry_size]
    }

    /// Opens or creates the file with `len` bytes (rounded down to whole
    /// entries) and maps it. `len` 0 leaves it unmapped.
    fn map(path: &Path, entry_size: usize, len: u64) -> io::Result<MmapMut> {
        let file = open_rw(path)?;
        let len = len - len % entry_size as u64;
        if file.metadata()?.len() < len {
            file.set_len(len)?;
        }
        // SAFETY: the index files are private to this process (the data
        // directory is locked at start-up) and never truncated while mapped.
        let mmap = unsafe { memmap2::MmapOptions::new().len(len as usize).map_mut(&file)? };
        // Lookups touch a few pages at random; without this, the first touch
        // of a preallocated (sparse, zero) index reads megabytes ahead, which
        // made opening 10,000 partitions fill the page cache with zeros.
        mmap.advise(memmap2::Advice::Random)?;
        Ok(mmap)
    }

    fn open(path: &Path, entry_size: usize, preallocate: Option<u64>, valid_prefix: impl Fn(&[u8]) -> usize) -> io::Result<Self> {
        let existing = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let len = preallocate.map_or(existing, |p| p.max(existing));
        let mmap = if len >= entry_size as u64 { Some(Self::map(path, entry_size, len)?) } else { None };
        let entries = mmap.as_ref().map_or(0, |m| valid_prefix(m));
        if mmap.is_none() && preallocate.is_some() {
            // Creates the (empty) file so the segment's file set is complete.
            open_rw(path)?;
        }
        Ok(MappedEntries { path: path.to_path_buf(), entry_size, mmap, entries })
    }

    fn push(&mut self, bytes: &[u8]) -> bool {
        if self.entries >= self.capacity() {
            return false;
        }
        let at = self.entries * self.entry_size;
        let m = self.mmap.as_mut().expect("capacity > 0 implies a mapping");
        m[at..at + self.entry_size].copy_from_slice(bytes);
        self.entries += 1;
        true
    }

    fn flush(&self) -> io::Result<()> {
        match &self.mmap {
            Some(m) => m.flush(),
            None => Ok(()),
        }
    }

    /// Drops entries from `keep` on, zeroing them so an untrimmed file still
    /// reads back with the right used length.
    fn truncate_entries(&mut self, keep: usize) {
        if keep >= self.entries {
            return;
        }
        let (from, to) = (keep * self.entry_size, self.entries * self.entry_size);
        if let Some(m) = self.mmap.as_mut() {
            m[from..to].fill(0);
        }
        self.entries = keep;
    }

    /// Shrinks the file to its used length (sealing) or grows it back to
    /// `len` bytes (reopening as active).
    fn resize(&mut self, len: u64) -> io::Result<()> {
        self.flush()?;
        self.mmap = None;
        let file = open_rw(&self.path)?;
        file.set_len(len)?;
        file.sync_all()?;
        if len >= self.entry_size as u64 {
            self.mmap = Some(Self::map(&self.path, self.entry_size, len)?);
        }
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        (self.entries * self.entry_size) as u64
    }

    fn free_slots(&self) -> usize {
        self.capacity().saturating_sub(self.entries)
    }

    /// Index of the last entry whose key is ≤ `target` (or `<` when
    /// `strict`), by binary search over the used entries.
    fn floor(&self, target: i128, strict: bool, key: impl Fn(&[u8]) -> i128) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let k = key(self.entry(mid));
            let below = if strict { k < target } else { k <= target };
            if below {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Counts the prefix of entries whose (a, b) keys strictly increase, with
/// `b` > 0 (no entry ever points at a segment's first batch).
fn increasing_prefix(m: &[u8], entry: usize, keys: impl Fn(&[u8]) -> (i64, u32)) -> usize {
    let mut prev: Option<(i64, u32)> = None;
    let mut n = 0;
    for e in m.chunks_exact(entry) {
        let (a, b) = keys(e);
        if b == 0 {
            break;
        }
        if let Some((pa, pb)) = prev {
            if a <= pa || b <= pb {
                break;
            }
        }
        prev = Some((a, b));
        n += 1;
    }
    n
}

/// The sparse offset index of one segment.
pub struct OffsetIndex(MappedEntries);

impl OffsetIndex {
    /// Opens (or creates) the index. With `preallocate`, the file is grown
    /// to that many bytes for appending.
    pub fn open(path: &Path, preallocate: Option<u64>) -> io::Result<OffsetIndex> {
        let inner = MappedEntries::open(path, OFFSET_ENTRY, preallocate, |m| {
            increasing_prefix(m, OFFSET_ENTRY, |e| (u32_at(e, 0) as i64, u32_at(e, 4)))
        })?;
        Ok(OffsetIndex(inner))
    }

    pub fn len(&self) -> usize {
        self.0.entries
    }

    pub fn is_empty(&self) -> bool {
        self.0.entries == 0
    }

    pub fn is_full(&self) -> bool {
        self.0.entries >= self.0.capacity()
    }

    pub fn entry(&self, i: usize) -> (u32, u32) {
        let e = self.0.entry(i);
        (u32_at(e, 0), u32_at(e, 4))
    }

    pub fn last(&self) -> Option<(u32, u32)> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends an entry; false when the index is full. Callers only append
    /// strictly increasing entries.
    pub fn append(&mut self, rel: u32, pos: u32) -> bool {
        let mut e = [0u8; OFFSET_ENTRY];
        e[..4].copy_from_slice(&rel.to_be_bytes());
        e[4..].copy_from_slice(&pos.to_be_bytes());
        self.0.push(&e)
    }

    /// The entry with the largest relative offset ≤ `rel`; `(0, 0)` (the
    /// segment start) when there is none.
    pub fn lookup(&self, rel: u32) -> (u32, u32) {
        self.0
            .floor(rel as i128, false, |e| u32_at(e, 0) as i128)
            .map_or((0, 0), |i| self.entry(i))
    }

    /// Drops every entry that points at or past `pos` in the log file.
    pub fn truncate_to_position(&mut self, pos: u32) {
        let keep = self.0.floor(pos as i128, true, |e| u32_at(e, 4) as i128).map_or(0, |i| i + 1);
        self.0.truncate_entries(keep);
    }

    pub fn truncate_entries(&mut self, keep: usize) {
        self.0.truncate_entries(keep);
    }

    pub fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }

    pub fn resize(&mut self, len: u64) -> io::Result<()> {
        self.0.resize(len)
    }

    pub fn used_bytes(&self) -> u64 {
        self.0.used_bytes()
    }

    pub fn free_slots(&self) -> usize {
        self.0.free_slots()
    }
}

/// The sparse time index of one segment.
pub struct TimeIndex(MappedEntries);

impl TimeIndex {
    pub fn open(path: &Path, preallocate: Option<u64>) -> io::Result<TimeIndex> {
        let inner = MappedEntries::open(path, TIME_ENTRY, preallocate, |m| {
            increasing_prefix(m, TIME_ENTRY, |e| (i64_at(e, 0), u32_at(e, 8)))
        })?;
        Ok(TimeIndex(inner))
    }

    pub fn len(&self) -> usize {
        self.0.entries
    }

    pub fn is_empty(&self) -> bool {
        self.0.entries == 0
    }

    pub fn is_full(&self) -> bool {
        self.0.entries >= self.0.capacity()
    }

    pub fn entry(&self, i: usize) -> (i64, u32) {
        let e = self.0.entry(i);
        (i64_at(e, 0), u32_at(e, 8))
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends `(max_ts, rel)` if it increases both keys over the last
    /// entry; returns false only when the index is full.
    pub fn maybe_append(&mut self, max_ts: i64, rel: u32) -> bool {
        if rel == 0 {
            return true;
        }
        if let Some((ts, r)) = self.last() {
            if max_ts <= ts || rel <= r {
                return true;
            }
        }
        let mut e = [0u8; TIME_ENTRY];
        e[..8].copy_from_slice(&max_ts.to_be_bytes());
        e[8..].copy_from_slice(&rel.to_be_bytes());
        self.0.push(&e)
    }

    /// The relative offset from which a scan for the first record with a
    /// timestamp ≥ `ts` must start: the last entry whose max timestamp is
    /// below `ts` (every record before it is older), else the segment start.
    pub fn scan_start(&self, ts: i64) -> u32 {
        self.0.floor(ts as i128, true, |e| i64_at(e, 0) as i128).map_or(0, |i| self.entry(i).1)
    }

    /// Drops every entry whose relative offset is above `rel`.
    pub fn truncate_to_rel(&mut self, rel: u32) {
        let keep = self.0.floor(rel as i128, false, |e| u32_at(e, 8) as i128).map_or(0, |i| i + 1);
        self.0.truncate_entries(keep);
    }

    pub fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }

    pub fn resize(&mut self, len: u64) -> io::Result<()> {
        self.0.resize(len)
    }

    pub fn used_bytes(&self) -> u64 {
        self.0.used_bytes()
    }

    pub fn free_slots(&self) -> usize {
        self.0.free_slots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_persist_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.index");
        let mut idx = OffsetIndex::open(&p, Some(80)).unwrap();
        assert_eq!(idx.lookup(5), (0, 0));
        for i in 1..=10u32 {
            assert!(idx.append(i * 10, i * 4096));
        }
        assert!(idx.is_full());
        assert!(!idx.append(200, 99999));
        assert_eq!(idx.lookup(9), (0, 0));
        assert_eq!(idx.lookup(10), (10, 4096));
        assert_eq!(idx.lookup(55), (50, 5 * 4096));
        assert_eq!(idx.lookup(1000), (100, 10 * 4096));
        idx.truncate_to_position(5 * 4096);
        assert_eq!(idx.len(), 4);
        idx.flush().unwrap();
        drop(idx);
        // An untrimmed file reopens with only the increasing prefix.
        let idx = OffsetIndex::open(&p, Some(80)).unwrap();
        assert_eq!(idx.len(), 4);
        let mut idx = idx;
        idx.resize(idx.used_bytes()).unwrap();
        drop(idx);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 32);
        assert_eq!(OffsetIndex::open(&p, None).unwrap().len(), 4);
    }

    #[test]
    fn time_index_scan_start_is_strictly_below_target() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TimeIndex::open(&dir.path().join("x.timeindex"), Some(120)).unwrap();
        assert!(t.maybe_append(100, 5));
        assert!(t.maybe_append(100, 9)); // not increasing: skipped
        assert!(t.maybe_append(200, 10));
        assert_eq!(t.len(), 2);
        assert_eq!(t.scan_start(50), 0);
        assert_eq!(t.scan_start(100), 0);
        assert_eq!(t.scan_start(101), 5);
        assert_eq!(t.scan_start(1000), 10);
        t.truncate_to_rel(7);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn garbage_after_entries_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.index");
        let mut bytes = Vec::new();
        for (r, pos) in [(5u32, 100u32), (9, 300), (7, 400), (20, 900)] {
            bytes.extend_from_slice(&r.to_be_bytes());
            bytes.extend_from_slice(&pos.to_be_bytes());
        }
        bytes.extend_from_slice(&[1, 2, 3]); // torn tail
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(OffsetIndex::open(&p, None).unwrap().len(), 2);
    }
}
