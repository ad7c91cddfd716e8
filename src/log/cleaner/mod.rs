//! The log cleaner: compaction for topics with `cleanup.policy=compact`.
//!
//! One background thread picks the compacted log with the highest dirty
//! ratio (or one whose dirty records are older than `max.compaction.lag.ms`)
//! and cleans it (`Log::compact`, in `partition/compaction.rs`). Its memory
//! is bounded by the offset map's budget, its I/O by a byte-rate throttle,
//! and it stops within one read chunk of a shutdown.

pub mod rewrite;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::manager::PartitionKey;
use super::{now_ms, Log};

/// Broker-level cleaner settings (Kafka's `log.cleaner.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`. Default true.
    pub enabled: bool,
    /// `log.cleaner.dedupe.buffer.size`: memory for the key → offset map. Default 128 MiB.
    pub dedupe_buffer_bytes: u64,
    /// `log.cleaner.io.max.bytes.per.second`: read + write rate cap; 0 or less means none. Default none.
    pub io_max_bytes_per_second: f64,
    /// `log.cleaner.backoff.ms`: sleep when no log needs cleaning. Default 15000.
    pub backoff_ms: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig { enabled: true, dedupe_buffer_bytes: 128 * 1024 * 1024, io_max_bytes_per_second: f64::MAX, backoff_ms: 15_000 }
    }
}

/// A hasher for keys that are already uniformly distributed hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// Bytes per slot of the map's table: a 16-byte key hash, an 8-byte offset
/// and one control byte.
const SLOT_BYTES: u64 = 16 + 8 + 1;

/// Key → latest offset, keyed by a 128-bit hash of the key (collisions are
/// negligible at 2^-64 for billions of keys; Kafka uses a 128-bit MD5 the
/// same way). Its table never grows past the memory budget: `capacity()` is
/// how many keys fit, and the cleaner stops filling it there.
pub struct OffsetMap {
    map: HashMap<(u64, u64), u64, BuildHasherDefault<PreHashed>>,
    capacity: usize,
}

impl OffsetMap {
    pub fn new(budget_bytes: u64) -> OffsetMap {
        // The table has a power-of-two number of slots, at most 7/8 full.
        let mut slots = 8u64;
        while slots * 2 * SLOT_BYTES <= budget_bytes {
            slots *= 2;
        }
        OffsetMap { map: HashMap::default(), capacity: (slots / 8 * 7) as usize }
    }

    /// How many keys the map can hold within its budget.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.map.len() >= self.capacity
    }

    /// Empties the map, keeping room for `expected` keys (within the budget).
    pub fn clear(&mut self, expected: u64) {
        self.map.clear();
        let want = expected.min(self.capacity as u64) as usize;
        if want > self.map.capacity() {
            self.map.reserve(want);
        }
    }

    fn hash(key: &[u8]) -> (u64, u64) {
        let h = xxhash_rust::xxh3::xxh3_128(key);
        (h as u64, (h >> 64) as u64)
    }

    pub fn put(&mut self, key: &[u8], offset: u64) {
        self.map.insert(Self::hash(key), offset);
    }

    pub fn get(&self, key: &[u8]) -> Option<u64> {
        self.map.get(&Self::hash(key)).copied()
    }

    /// Bytes the table holds now.
    pub fn allocated_bytes(&self) -> u64 {
        // hashbrown: buckets = capacity * 8 / 7 rounded up to a power of two.
        let cap = self.map.capacity() as u64;
        if cap == 0 {
            0
        } else {
            (cap * 8 / 7).next_power_of_two() * SLOT_BYTES
        }
    }
}

/// Caps the cleaner's I/O at a byte rate by sleeping.
pub struct Throttle {
    rate: f64,
    window_start: Instant,
    window_bytes: f64,
}

impl Throttle {
    /// `bytes_per_second` ≤ 0 or infinite means no limit.
    pub fn new(bytes_per_second: f64) -> Throttle {
        let rate = if bytes_per_second.is_finite() && bytes_per_second > 0.0 { bytes_per_second } else { f64::INFINITY };
        Throttle { rate, window_start: Instant::now(), window_bytes: 0.0 }
    }

    /// Accounts for `bytes` of I/O, sleeping as needed to stay under the
    /// rate. Returns false (early) when `stop` is set.
    pub fn consume(&mut self, bytes: u64, stop: &AtomicBool) -> bool {
        if self.rate.is_infinite() {
            return !stop.load(Ordering::Relaxed);
        }
        self.window_bytes += bytes as f64;
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let elapsed = self.window_start.elapsed().as_secs_f64();
            let due = self.window_bytes / self.rate;
            if due <= elapsed {
                break;
            }
            std::thread::sleep(Duration::from_secs_f64((due - elapsed).min(0.1)));
        }
        // Start a new window every few seconds so an idle spell is not
        // credited to a later burst.
        if self.window_start.elapsed() > Duration::from_secs(2) {
            self.window_start = Instant::now();
            self.window_bytes = 0.0;
        }
        true
    }
}

/// What cleaning a log did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub passes: u64,
    /// Bytes of segments read (map building and copying).
    pub bytes_read: u64,
    /// Bytes of cleaned segments written.
    pub bytes_written: u64,
    /// Bytes of the segments that were recopied, before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub segments_before: u64,
    pub segments_after: u64,
    /// The clean stopped early (shutdown).
    pub stopped: bool,
}

impl CleanStats {
    pub fn add(&mut self, o: &CleanStats) {
        self.passes += o.passes;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.bytes_before += o.bytes_before;
        self.bytes_after += o.bytes_after;
        self.records_removed += o.records_removed;
        self.segments_before += o.segments_before;
        self.segments_after += o.segments_after;
        self.stopped |= o.stopped;
    }
}

/// Everything one clean needs from the cleaner.
pub struct CleanContext<'a> {
    pub map: &'a mut OffsetMap,
    pub throttle: &'a mut Throttle,
    pub stop: &'a AtomicBool,
    pub now: i64,
}

/// Totals since start, for metrics and tests.
#[derive(Default)]
pub struct CleanerTotals {
    pub cleans: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub records_removed: AtomicU64,
    pub failures: AtomicU64,
}

pub type SharedLogs = Arc<RwLock<HashMap<PartitionKey, Arc<Log>>>>;

/// The running cleaner thread.
pub struct Cleaner {
    stop: Arc<AtomicBool>,
    wake: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub totals: Arc<CleanerTotals>,
}

/// How long a log whose clean failed is left alone.
const FAILED_BACKOFF_MS: i64 = 5 * 60 * 1000;

impl Cleaner {
    pub fn start(logs: SharedLogs, config: CleanerConfig) -> std::io::Result<Cleaner> {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new((Mutex::new(false), Condvar::new()));
        let totals = Arc::new(CleanerTotals::default());
        let (s, w, t) = (Arc::clone(&stop), Arc::clone(&wake), Arc::clone(&totals));
        let thread = std::thread::Builder::new().name("log-cleaner".into()).spawn(move || run(logs, config, s, w, t))?;
        Ok(Cleaner { stop, wake, thread: Mutex::new(Some(thread)), totals })
    }

    /// Looks for work now instead of at the end of the backoff.
    pub fn wake(&self) {
        let (lock, cv) = &*self.wake;
        *lock.lock() = true;
        cv.notify_one();
    }

    /// Stops the thread (an interrupted clean leaves only `.cleaned` files,
    /// removed on the next open) and waits for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Cleaner {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(logs: SharedLogs, config: CleanerConfig, stop: Arc<AtomicBool>, wake: Arc<(Mutex<bool>, Condvar)>, totals: Arc<CleanerTotals>) {
    let mut map = OffsetMap::new(config.dedupe_buffer_bytes);
    let mut throttle = Throttle::new(config.io_max_bytes_per_second);
    let mut failed: HashMap<PartitionKey, i64> = HashMap::new();
    // Logs whose last clean found nothing to do, left alone for a backoff.
    let mut idle: HashMap<PartitionKey, i64> = HashMap::new();
    while !stop.load(Ordering::Acquire) {
        let now = now_ms();
        failed.retain(|_, at| now - *at < FAILED_BACKOFF_MS);
        idle.retain(|_, at| now - *at < config.backoff_ms as i64);
        let candidates: Vec<(PartitionKey, Arc<Log>)> = logs.read().iter().filter(|(k, _)| !failed.contains_key(*k) && !idle.contains_key(*k)).map(|(k, l)| (k.clone(), Arc::clone(l))).collect();
        let mut best: Option<((bool, f64), PartitionKey, Arc<Log>)> = None;
        for (key, log) in candidates {
            let Some(c) = log.cleanable(now) else { continue };
            if !(c.lag_exceeded || c.dirty_ratio >= log.config().min_cleanable_dirty_ratio) || c.dirty_bytes == 0 {
                continue;
            }
            let rank = (c.lag_exceeded, c.dirty_ratio);
            if best.as_ref().is_none_or(|(r, _, _)| rank.0.cmp(&r.0).then(rank.1.total_cmp(&r.1)).is_gt()) {
                best = Some((rank, key, log));
            }
        }
        if let Some((_, (topic, partition), log)) = best {
            let started = Instant::now();
            let mut ctx = CleanContext { map: &mut map, throttle: &mut throttle, stop: &stop, now };
            match log.compact(&mut ctx) {
                Ok(s) if s.passes == 0 => {
                    idle.insert((topic, partition), now);
                }
                Ok(s) => {
                    totals.cleans.fetch_add(1, Ordering::Relaxed);
                    totals.bytes_read.fetch_add(s.bytes_read, Ordering::Relaxed);
                    totals.bytes_written.fetch_add(s.bytes_written, Ordering::Relaxed);
                    totals.records_removed.fetch_add(s.records_removed, Ordering::Relaxed);
                    tracing::info!(
                        topic, partition, passes = s.passes, bytes_before = s.bytes_before, bytes_after = s.bytes_after,
                        segments_before = s.segments_before, segments_after = s.segments_after, records_removed = s.records_removed,
                        ms = started.elapsed().as_millis() as u64, stopped = s.stopped, "cleaned a log"
                    );
                }
                Err(super::LogError::Closed) => {
                    tracing::debug!(topic, partition, "a log closed (deleted?) while it was being cleaned");
                }
                Err(e) => {
                    totals.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(topic, partition, error = %e, "cleaning failed; the log is left alone for a while");
                    failed.insert((topic, partition), now);
                }
            }
            continue;
        }
        let (lock, cv) = &*wake;
        let mut woken = lock.lock();
        if !*woken && !stop.load(Ordering::Acquire) {
            cv.wait_for(&mut woken, Duration::from_millis(config.backoff_ms));
        }
        *woken = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_map_stays_within_its_budget() {
        let mut m = OffsetMap::new(1 << 20);
        assert!(m.capacity() > 25_000 && (m.capacity() as u64 * 8 / 7).next_power_of_two() * SLOT_BYTES <= 1 << 20, "{}", m.capacity());
        m.clear(10_000_000);
        for i in 0..m.capacity() as u64 {
            m.put(&i.to_be_bytes(), i);
        }
        assert!(m.is_full());
        assert!(m.allocated_bytes() <= 1 << 20, "{}", m.allocated_bytes());
        m.put(&5u64.to_be_bytes(), 99);
        assert_eq!(m.get(&5u64.to_be_bytes()), Some(99));
        assert_eq!(m.get(b"absent"), None);
    }

    #[test]
    fn the_throttle_holds_the_rate_and_stops() {
        let stop = AtomicBool::new(false);
        let mut t = Throttle::new(1_000_000.0);
        let start = Instant::now();
        for _ in 0..10 {
            assert!(t.consume(30_000, &stop));
        }
        assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
        stop.store(true, Ordering::Relaxed);
        assert!(!t.consume(10_000_000, &stop), "a stop ends the wait");
        assert!(Throttle::new(0.0).consume(u64::MAX / 2, &AtomicBool::new(false)));
    }
}
