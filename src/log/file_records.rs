//! Record batches a fetch sends straight from a segment file (`sendfile`
//! on plaintext connections) instead of reading them into memory first.
//!
//! A response is still built and encoded as `kafka-protocol` messages,
//! whose record sets are `Bytes`: such a set holds a *stand-in*, a slice of
//! the right length of one read-only mapping of zero pages that is never
//! written or read (no memory behind it). The encoder recognises stand-ins
//! by address and puts the file region in their place.

use std::fs::File;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// Longest region sent from a file; longer reads are read into memory.
pub const MAX_LEN: usize = 1 << 30;

/// Shortest region sent from a file; shorter ones are read into memory.
pub const MIN_FILE_LEN: usize = 4096;

/// Whole batches: `file_len` bytes of `file` from `pos`, bytes a direct
/// write never rewrites (below the segment's in-memory tail), which stay
/// readable while the region is held, even if the segment is deleted; then
/// `tail`, the bytes after them still in memory.
#[derive(Clone)]
pub struct FileRecords {
    pub file: Arc<File>,
    pub pos: u64,
    pub file_len: usize,
    pub tail: Bytes,
    /// Records in the batches (their headers' counts).
    pub records: u64,
    /// The offset after the last batch.
    pub next_offset: u64,
}

impl std::fmt::Debug for FileRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRecords").field("pos", &self.pos).field("file_len", &self.file_len).field("tail", &self.tail.len()).field("records", &self.records).finish()
    }
}

impl FileRecords {
    /// Bytes of batches, from the file and the tail.
    pub fn len(&self) -> usize {
        self.file_len + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records' bytes, read from the file then the tail (tests).
    #[cfg(test)]
    pub fn read_all(&self) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut b = vec![0u8; self.file_len];
        self.file.read_exact_at(&mut b, self.pos).expect("the region is in the file");
        b.extend_from_slice(&self.tail);
        b
    }

    /// The stand-in for these records in a message: as many bytes, which
    /// are not the records (see `is_stand_in`).
    pub fn stand_in(&self) -> Option<Bytes> {
        hole().map(|h| Bytes::from_static(&h[..self.len()]))
    }
}

/// Whether stand-ins can be made (the address space for them was mapped).
pub fn available() -> bool {
    hole().is_some()
}

/// Whether `b` is a stand-in for a file region (rather than record bytes).
pub fn is_stand_in(b: &[u8]) -> bool {
    !b.is_empty() && hole().is_some_and(|h| std::ptr::eq(b.as_ptr(), h.as_ptr()))
}

/// `MAX_LEN` bytes of address space mapped to zero pages, read-only and
/// without reserve: stand-ins point into it. None when the mapping fails
/// (then regions are read into memory instead).
fn hole() -> Option<&'static [u8]> {
    static HOLE: OnceLock<Option<usize>> = OnceLock::new();
    let addr = *HOLE.get_or_init(|| {
        // SAFETY: a fresh anonymous mapping that is never unmapped; with
        // PROT_READ nothing can write it, so a shared 'static slice over it
        // is sound.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), MAX_LEN, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0) };
        if p == libc::MAP_FAILED {
            tracing::warn!(error = %std::io::Error::last_os_error(), "no address space for fetch stand-ins; fetches read records into memory");
            None
        } else {
            // Nothing in it is worth a core dump's space.
            // SAFETY: advice on the mapping just made.
            unsafe { libc::madvise(p, MAX_LEN, libc::MADV_DONTDUMP) };
            Some(p as usize)
        }
    });
    // SAFETY: see above; the mapping lives for the whole process.
    addr.map(|a| unsafe { std::slice::from_raw_parts(a as *const u8, MAX_LEN) })
}

/// What a read for sending found: bytes in memory, or a file region.
#[derive(Debug, Clone)]
pub enum Records {
    Bytes(Bytes),
    File(FileRecords),
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Bytes(b) => b.len(),
            Records::File(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset after the last whole batch, if any.
    pub fn next_offset(&self) -> Option<u64> {
        match self {
            Records::Bytes(b) => super::batch::whole_batches(b).last().map(|(h, _)| h.next_offset().max(0) as u64),
            Records::File(f) => Some(f.next_offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_are_recognised_and_nothing_else_is() {
        let file = Arc::new(tempfile_in_target());
        let r = FileRecords { file, pos: 0, file_len: 4000, tail: Bytes::from(vec![1u8; 1000]), records: 3, next_offset: 3 };
        let s = r.stand_in().expect("a stand-in");
        assert_eq!(s.len(), 5000);
        assert!(is_stand_in(&s));
        assert!(!is_stand_in(&s[1..]), "only a stand-in's own start is one");
        assert!(!is_stand_in(&vec![0u8; 5000]));
        assert!(!is_stand_in(&[]));
    }

    fn tempfile_in_target() -> File {
        let dir = std::env::temp_dir().join(format!("eddy-file-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = File::create(dir.join("f")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        f
    }
}
