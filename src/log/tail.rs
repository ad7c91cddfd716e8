//! The newest bytes of segments, held in memory.
//!
//! An append is copied into a block-aligned chunk of memory and reaches the
//! file by direct I/O (`O_DIRECT`) in whole 4 KiB blocks: the last block is
//! padded with zeros and written again, whole, by the next write-out. No
//! page cache pages are filled, dirtied and written back, which is most of
//! what buffered writes cost here (storage-format.md §8).
//!
//! Chunks stay in memory after they are written, so readers of the newest
//! data (tailing consumers) get it from memory, without a copy. Chunks an
//! appender has moved past are counted against one process-wide budget and
//! dropped oldest first once they are in the file and the budget is
//! exceeded; reads of what they held then go to the file.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;

/// The unit of direct I/O: file positions, lengths and memory addresses of
/// every write are multiples of it (it covers 512-byte and 4 KiB devices).
pub const BLOCK: usize = 4096;
/// Smallest and largest chunk. A segment's chunks start small (an idle
/// partition costs little) and double while appends keep coming.
pub const MIN_CHUNK: usize = 16 << 10;
pub const MAX_CHUNK: usize = 1 << 20;
/// Default process-wide budget for chunks appenders have moved past.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// Copies `src` to `dst`. Large copies into a chunk bypass the CPU cache
/// (non-temporal stores): the bytes go to the device, and to readers that
/// come later (a tailing consumer's fetch hands them to the socket), so
/// reading the destination lines into the cache first (what an ordinary
/// store does) is mostly wasted memory traffic; into cold memory on this
/// 2-core VM it made the copy ~1.5x as fast, and the copy was a quarter of
/// the broker's produce CPU. The stores are fenced before returning, so a
/// release store after this call publishes them.
///
/// # Safety
/// `dst` is valid for `src.len()` bytes of writes and does not overlap `src`.
unsafe fn copy_streaming(dst: *mut u8, src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if src.len() >= STREAMING_MIN && std::arch::is_x86_feature_detected!("avx2") {
        return copy_streaming_avx2(dst, src);
    }
    std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
}

/// Copies shorter than this use ordinary stores (they are likely read soon,
/// and the fence is not free).
const STREAMING_MIN: usize = 16 << 10;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_streaming_avx2(dst: *mut u8, src: &[u8]) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_stream_si256, _mm_sfence};
    const LANE: usize = 32;
    let (n, from) = (src.len(), src.as_ptr());
    // Ordinary stores up to the first 32-byte aligned destination address,
    // then 128 bytes per step, then the tail.
    let head = (dst.align_offset(LANE)).min(n);
    std::ptr::copy_nonoverlapping(from, dst, head);
    let mut i = head;
    while i + 4 * LANE <= n {
        // SAFETY: i + 128 <= n, so every load and store is inside src and
        // dst; dst + i is 32-byte aligned (head aligned it, steps keep it).
        let v = [0, 1, 2, 3].map(|k| _mm256_loadu_si256(from.add(i + k * LANE) as *const __m256i));
        for (k, v) in v.into_iter().enumerate() {
            _mm256_stream_si256(dst.add(i + k * LANE) as *mut __m256i, v);
        }
        i += 4 * LANE;
    }
    std::ptr::copy_nonoverlapping(from.add(i), dst.add(i), n - i);
    _mm_sfence();
}

pub fn floor(pos: u64) -> u64 {
    pos & !(BLOCK as u64 - 1)
}

pub fn ceil(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

/// Block-aligned memory, not initialised: bytes are written before they
/// are read (`Chunk`); a write-out sends the last, partial block from a
/// zeroed copy of its own (`Mem::fill_from`), never the bytes after the data.
pub struct Mem {
    ptr: NonNull<u8>,
    cap: usize,
}

/// Largest chunks' memory kept for reuse after their chunks are dropped:
/// fresh memory costs a page fault per 4 KiB on first touch.
const POOL_MAX: usize = 32;

struct Pooled(NonNull<u8>);

// SAFETY: a pooled allocation is owned by the pool alone.
unsafe impl Send for Pooled {}

static POOL: Mutex<Vec<Pooled>> = parking_lot::const_mutex(Vec::new());

// SAFETY: `Mem` owns its allocation; what may touch which bytes, and when,
// is the `Chunk` discipline below (one writer, above the published length
// only; readers below it).
unsafe impl Send for Mem {}
unsafe impl Sync for Mem {}

impl Mem {
    pub fn new(cap: usize) -> Mem {
        if cap == MAX_CHUNK {
            if let Some(Pooled(ptr)) = POOL.lock().pop() {
                return Mem { ptr, cap };
            }
        }
        let layout = Layout::from_size_align(cap, BLOCK).expect("a chunk layout");
        // SAFETY: `cap` is a non-zero multiple of BLOCK.
        let ptr = unsafe { alloc(layout) };
        Mem { ptr: NonNull::new(ptr).unwrap_or_else(|| handle_alloc_error(layout)), cap }
    }

    /// Zeroes the memory and copies `src` to its start.
    ///
    /// # Safety
    /// Nobody else may be reading or writing this memory.
    pub unsafe fn fill_from(&self, src: &[u8]) {
        assert!(src.len() <= self.cap);
        std::ptr::write_bytes(self.ptr.as_ptr(), 0, self.cap);
        std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr(), src.len());
    }

    /// The address of byte `off`, for a write to the file.
    pub fn ptr_at(&self, off: usize) -> *const u8 {
        assert!(off <= self.cap);
        // SAFETY: within the allocation (checked above).
        unsafe { self.ptr.as_ptr().add(off) }
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        if self.cap == MAX_CHUNK {
            let mut pool = POOL.lock();
            if pool.len() < POOL_MAX {
                pool.push(Pooled(self.ptr));
                return;
            }
        }
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), Layout::from_size_align_unchecked(self.cap, BLOCK)) }
    }
}

/// Bytes of a chunk handed to a reader: keeps the memory alive.
struct View {
    mem: Arc<Mem>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `off + len` lies below the chunk's published length when
        // the view is made (checked by `Chunk::slice`), and its segment's
        // readers only ask for bytes below the segment's published size,
        // which are never written again.
        unsafe { std::slice::from_raw_parts(self.mem.ptr.as_ptr().add(self.off), self.len) }
    }
}

/// A run of a segment file's bytes in memory, from `base` (a multiple of
/// BLOCK). Its single writer (the segment's appender) adds bytes at the
/// published length and then publishes the new length; bytes below it
/// never change, so readers may hold slices of them.
pub struct Chunk {
    pub base: u64,
    pub cap: usize,
    len: AtomicUsize,
    /// None once the cache dropped it (only when it is all in the file).
    mem: Mutex<Option<Arc<Mem>>>,
    /// Every byte of it is in the file and it takes no more appends.
    written: AtomicBool,
    /// Counted in the cache budget.
    cached: AtomicBool,
    /// Leading bytes that came from the file (the block an opened segment
    /// ends in): unlike appended bytes, they were never checked.
    loaded: AtomicUsize,
}

impl Chunk {
    pub fn new(base: u64, cap: usize) -> (Arc<Chunk>, Arc<Mem>) {
        debug_assert!(base % BLOCK as u64 == 0 && cap % BLOCK == 0);
        let mem = Arc::new(Mem::new(cap));
        let c = Chunk { base, cap, len: AtomicUsize::new(0), mem: Mutex::new(Some(Arc::clone(&mem))), written: AtomicBool::new(false), cached: AtomicBool::new(false), loaded: AtomicUsize::new(0) };
        (Arc::new(c), mem)
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// How many leading bytes came from the file.
    pub fn loaded(&self) -> usize {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn set_loaded(&self, n: usize) {
        self.loaded.store(n, Ordering::Release);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn end(&self) -> u64 {
        self.base + self.len() as u64
    }

    pub fn mem(&self) -> Option<Arc<Mem>> {
        self.mem.lock().clone()
    }

    /// Copies `src` to `off` (at or above the published length, within the
    /// capacity) and publishes the new length.
    ///
    /// # Safety
    /// `mem` is this chunk's memory (from `new`), and the caller is the
    /// chunk's one appender: nobody else writes it, and readers only read
    /// below the published length.
    pub unsafe fn append(&self, mem: &Mem, off: usize, src: &[u8]) {
        assert!(off >= self.len() && off + src.len() <= self.cap && mem.cap == self.cap);
        copy_streaming(mem.ptr.as_ptr().add(off), src);
        self.len.store(off + src.len(), Ordering::Release);
    }

    /// Takes back the bytes from `off` on: bytes of an append that failed,
    /// above the segment's published size, so never read. Appender only.
    pub fn rewind(&self, off: usize) {
        if off < self.len() {
            self.len.store(off, Ordering::Release);
        }
    }

    /// `len` bytes from `off` (below the published length) of this chunk's
    /// memory `mem`, without a copy.
    pub fn slice(&self, mem: &Arc<Mem>, off: usize, len: usize) -> Bytes {
        assert!(off + len <= self.len() && mem.cap == self.cap, "a chunk slice past its published bytes");
        Bytes::from_owner(View { mem: Arc::clone(mem), off, len })
    }

    /// Drops the memory (readers holding slices keep theirs): only for a
    /// chunk wholly in the file.
    pub fn evict(&self) {
        debug_assert!(self.is_written());
        if self.mem.lock().take().is_some() && self.cached.load(Ordering::Acquire) {
            CACHE.used.fetch_sub(self.cap, Ordering::AcqRel);
        }
    }

    pub fn set_written(&self) {
        self.written.store(true, Ordering::Release);
    }

    pub fn is_written(&self) -> bool {
        self.written.load(Ordering::Acquire)
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if self.cached.load(Ordering::Acquire) && self.mem.get_mut().is_some() {
            CACHE.used.fetch_sub(self.cap, Ordering::AcqRel);
        }
    }
}

struct Cache {
    budget: AtomicUsize,
    used: AtomicUsize,
    /// Chunks in the order they were retired, oldest first.
    fifo: Mutex<VecDeque<Weak<Chunk>>>,
}

static CACHE: Cache = Cache { budget: AtomicUsize::new(DEFAULT_CACHE_BYTES), used: AtomicUsize::new(0), fifo: parking_lot::const_mutex(VecDeque::new()) };

/// Sets the process-wide budget for chunks appenders have moved past
/// (`log.cache.bytes`); takes effect at the next retirement.
pub fn set_cache_budget(bytes: usize) {
    CACHE.budget.store(bytes, Ordering::Release);
}

/// Bytes of retired chunks still in memory.
pub fn cache_used() -> usize {
    CACHE.used.load(Ordering::Acquire)
}

/// Counts a chunk its appender has moved past against the budget, and
/// drops the oldest written chunks while the budget is exceeded.
pub fn retire(chunk: &Arc<Chunk>) {
    if chunk.cached.swap(true, Ordering::AcqRel) || chunk.mem.lock().is_none() {
        return;
    }
    CACHE.used.fetch_add(chunk.cap, Ordering::AcqRel);
    let mut fifo = CACHE.fifo.lock();
    fifo.push_back(Arc::downgrade(chunk));
    evict(&mut fifo);
}

fn evict(fifo: &mut VecDeque<Weak<Chunk>>) {
    let budget = CACHE.budget.load(Ordering::Acquire);
    // Chunks not yet in the file go to the back; each entry is looked at
    // once per call at most.
    let mut rounds = fifo.len();
    while CACHE.used.load(Ordering::Acquire) > budget && rounds > 0 {
        rounds -= 1;
        let Some(weak) = fifo.pop_front() else { break };
        let Some(c) = weak.upgrade() else { continue };
        if !c.is_written() {
            fifo.push_back(weak);
            continue;
        }
        c.evict();
    }
    // Entries of dropped segments' chunks are cleared now and then.
    if fifo.len() > 4096 && fifo.len() > 2 * (CACHE.used.load(Ordering::Acquire) / MIN_CHUNK + 1) {
        fifo.retain(|w| w.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_copies_are_exact_at_every_alignment() {
        let src: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        for len in [0, 1, 31, 4096, STREAMING_MIN - 1, STREAMING_MIN, STREAMING_MIN + 1, 65_571, 150_000] {
            for (skew_src, skew_dst) in [(0, 0), (1, 0), (0, 1), (5, 31), (17, 33)] {
                let mut dst = vec![0xAAu8; len + 128];
                // SAFETY: dst holds skew_dst + len bytes (skew_dst < 64).
                unsafe { copy_streaming(dst.as_mut_ptr().add(skew_dst), &src[skew_src..skew_src + len]) };
                assert_eq!(&dst[skew_dst..skew_dst + len], &src[skew_src..skew_src + len], "length {len}, skews {skew_src}/{skew_dst}");
                assert!(dst[..skew_dst].iter().chain(&dst[skew_dst + len..]).all(|&b| b == 0xAA), "wrote outside: length {len}");
            }
        }
    }

    #[test]
    fn slices_outlive_the_chunk_and_eviction_waits_for_the_file() {
        let (c, mem) = Chunk::new(8192, MIN_CHUNK);
        // SAFETY: this test is the chunk's one appender.
        unsafe {
            c.append(&mem, 0, b"hello ");
            c.append(&mem, 6, b"world");
        }
        let s = c.slice(&mem, 0, c.len());
        drop(mem);
        assert_eq!(&s[..], b"hello world");
        assert_eq!(c.end(), 8192 + 11);
        // With no budget at all, a chunk not yet in the file stays; once it
        // is written the next retirement drops it. (Other tests sharing the
        // cache only see their own chunks dropped early, which is correct
        // behaviour for them too.)
        set_cache_budget(0);
        retire(&c);
        assert!(c.mem().is_some());
        c.set_written();
        let (other, _) = Chunk::new(0, MIN_CHUNK);
        retire(&other);
        assert!(c.mem().is_none());
        set_cache_budget(DEFAULT_CACHE_BYTES);
        // The slice still holds the memory.
        assert_eq!(&s[..], b"hello world");
        assert_eq!(floor(8191), 4096);
        assert_eq!(ceil(4097), 8192);
    }
}
