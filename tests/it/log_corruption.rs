//! Corruption tests: damage the files of a closed log at random, reopen it,
//! and check that what it serves is a gapless prefix of what was written,
//! every batch with a valid CRC, and that it still takes appends.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use eddy::log::{Log, LogConfig, LogError};

use crate::log_support::{crc_ok, scratch_dir, simple_batch, split_batches};

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn config() -> LogConfig {
    LogConfig { segment_bytes: 6000, segment_index_bytes: 1200, index_interval_bytes: 400, retention_ms: -1, ..LogConfig::default() }
}

/// Writes a log of several segments; returns every stored batch.
fn write_log(dir: &Path, rng: &mut Rng, clean_close: bool) -> Vec<(u64, u64, Bytes)> {
    let log = Log::open(dir, config(), false).unwrap();
    for i in 0..60 {
        let n = 1 + rng.below(4) as usize;
        let len = 20 + rng.below(200) as usize;
        log.append(&simple_batch(n, len, 1_000 + i)).unwrap();
        if rng.below(10) == 0 {
            log.sync_to(log.log_end_offset()).unwrap();
        }
    }
    let all = read_all(&log).0;
    if clean_close {
        log.close().unwrap();
    }
    all
}

/// Reads from the log start until the end or the first error.
fn read_all(log: &Log) -> (Vec<(u64, u64, Bytes)>, Option<LogError>) {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        match log.read(offset, 1500, u64::MAX) {
            Ok(r) if r.records.is_empty() => return (out, None),
            Ok(r) => {
                let batches = split_batches(&r.records);
                offset = batches.last().unwrap().1 + 1;
                out.extend(batches);
            }
            Err(e) => return (out, Some(e)),
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Positions of batch header bytes outside the CRC-covered region that the
/// format cannot protect (base offset and partition leader epoch): a flip
/// there that keeps offsets increasing is undetectable, in Kafka's format as
/// in ours, so random flips skip them.
fn unprotected(log_bytes: &[u8], at: usize) -> bool {
    let mut pos = 0usize;
    while pos + 12 <= log_bytes.len() {
        if at >= pos && at < pos + 16 {
            let rel = at - pos;
            return rel < 8 || (12..16).contains(&rel);
        }
        let len = i32::from_be_bytes(log_bytes[pos + 8..pos + 12].try_into().unwrap());
        if len <= 0 {
            return false;
        }
        pos += 12 + len as usize;
    }
    false
}

fn corrupt(dir: &Path, rng: &mut Rng) -> String {
    let candidates: Vec<PathBuf> = files(dir)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.ends_with(".log") || n.ends_with(".index") || n.ends_with(".timeindex") || n == "checkpoint"
        })
        .collect();
    let path = &candidates[rng.below(candidates.len() as u64) as usize];
    let mut bytes = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    if bytes.is_empty() {
        bytes.extend_from_slice(&[0xff; 13]);
        std::fs::write(path, &bytes).unwrap();
        return format!("{name}: wrote garbage into an empty file");
    }
    let what = match rng.below(4) {
        0 => {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes.truncate(at);
            format!("{name}: truncated to {at}")
        }
        1 => {
            // A torn append: garbage after the end.
            let n = 1 + rng.below(100) as usize;
            bytes.extend((0..n).map(|_| rng.next() as u8));
            format!("{name}: {n} garbage bytes appended")
        }
        _ => {
            let mut at = rng.below(bytes.len() as u64) as usize;
            let mut tries = 0;
            while name.ends_with(".log") && unprotected(&bytes, at) && tries < 100 {
                at = rng.below(bytes.len() as u64) as usize;
                tries += 1;
            }
            if name.ends_with(".log") && unprotected(&bytes, at) {
                return format!("{name}: left alone");
            }
            let mask = 1u8 << rng.below(8);
            bytes[at] ^= mask;
            format!("{name}: flipped bit {mask:#x} at {at}")
        }
    };
    std::fs::write(path, &bytes).unwrap();
    what
}

fn check_after_corruption(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let dir = scratch_dir();
    let clean = rng.below(2) == 0;
    let written = write_log(dir.path(), &mut rng, clean);
    let what = corrupt(dir.path(), &mut rng);
    let ctx = format!("seed {seed}, clean close {clean}, {what}");

    let log = Log::open(dir.path(), config(), clean).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    let (served, _err) = read_all(&log);
    // A gapless prefix of what was written, starting at the log start.
    let start = written.iter().position(|b| b.0 == served.first().map_or(u64::MAX, |s| s.0));
    if let Some(start) = start {
        assert_eq!(start, 0, "{ctx}: served data does not start at the first batch");
    }
    for (i, (base, last, bytes)) in served.iter().enumerate() {
        assert!(crc_ok(bytes), "{ctx}: served a batch with a bad CRC at {base}");
        let (wb, wl, wbytes) = &written[i];
        assert_eq!((base, last), (wb, wl), "{ctx}: batch {i} offsets");
        assert_eq!(&bytes[16..], &wbytes[16..], "{ctx}: batch {i} content");
    }
    assert!(log.log_end_offset() >= served.last().map_or(0, |b| b.1 + 1), "{ctx}: end offset below served data");

    // Still usable: an append lands at the end and reads back.
    let info = log.append(&simple_batch(2, 10, 5)).unwrap_or_else(|e| panic!("{ctx}: append after reopen: {e}"));
    let r = log.read(info.base_offset, 100, u64::MAX).unwrap();
    let got = split_batches(&r.records);
    assert_eq!(got[0].0, info.base_offset, "{ctx}");
    log.close().unwrap();
    drop(log);
    // And a further reopen agrees.
    let again = Log::open(dir.path(), config(), true).unwrap();
    assert_eq!(again.log_end_offset(), info.last_offset + 1, "{ctx}");
}

#[test]
fn random_damage_leaves_a_consistent_prefix() {
    for seed in 0..300 {
        check_after_corruption(seed);
    }
}

/// A log of `batches` batches of `records` records (values of `len`
/// bytes), still open: what it stored and its end offset.
fn appended_log(dir: &Path, batches: u64, records: usize, len: usize) -> (Log, Vec<(u64, u64, Bytes)>, u64) {
    let log = Log::open(dir, config(), false).unwrap();
    for i in 0..batches as i64 {
        log.append(&simple_batch(records, len, i)).unwrap();
    }
    let (written, end) = (read_all(&log).0, log.log_end_offset());
    (log, written, end)
}

/// The `.log` files of a partition directory, in offset order.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    files(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "log")).collect()
}

#[test]
fn torn_tail_after_crash_is_truncated_and_reported() {
    let dir = scratch_dir();
    let (log, _, end) = appended_log(dir.path(), 5, 3, 50);
    let logs = || log_files(dir.path());
    let last = logs().pop().unwrap();
    // Sealed segments are cut to their exact size; the active one's bytes
    // are the rest.
    let sealed: u64 = logs().iter().filter(|p| **p != last).map(|p| std::fs::metadata(p).unwrap().len()).sum();
    let data_end = log.size_bytes() - sealed;
    drop(log); // no close: an unclean stop
    let bytes = std::fs::read(&last).unwrap();
    // Direct writes pad the last block with zeros (storage-format.md §2).
    assert_eq!(bytes.len() as u64 % 4096, 0, "the active segment ends on a whole block");
    assert!(bytes[data_end as usize..].iter().all(|&b| b == 0), "the padding is zeros");
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(data_end - 7).unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    assert!(log.was_recovered());
    assert_eq!(log.log_end_offset(), end - 3, "the torn last batch is gone, the rest kept");
}

/// Power lost after a roll's write-out but before its cut to size reached
/// the disk: a sealed, non-last segment ends in zero padding. Recovery drops
/// the padding and keeps every later segment (a real torn tail there would
/// drop them).
#[test]
fn zero_padding_on_a_sealed_segment_keeps_the_later_segments() {
    let dir = scratch_dir();
    let (log, written, end) = appended_log(dir.path(), 120, 2, 100);
    assert!(log.segment_bases().len() > 2, "several segments");
    drop(log);
    let first = log_files(dir.path()).remove(0);
    let len = std::fs::metadata(&first).unwrap().len();
    let padded = if len % 4096 == 0 { len + 100 } else { len.div_ceil(4096) * 4096 };
    std::fs::OpenOptions::new().write(true).open(&first).unwrap().set_len(padded).unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    assert_eq!(log.log_end_offset(), end, "no segment dropped");
    assert_eq!(read_all(&log).0, written);
    assert_eq!(std::fs::metadata(&first).unwrap().len(), len, "the padding is cut off");
}

#[test]
fn zero_padding_after_an_unclean_stop_is_dropped_and_nothing_else() {
    let dir = scratch_dir();
    let (log, written, end) = appended_log(dir.path(), 5, 3, 50);
    drop(log); // no close: the active segment keeps its zero padding
    let last = log_files(dir.path()).pop().unwrap();
    let padded = std::fs::metadata(&last).unwrap().len();
    let log = Log::open(dir.path(), config(), false).unwrap();
    assert!(log.was_recovered());
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log).0, written);
    assert!(std::fs::metadata(&last).unwrap().len() < padded, "the padding is cut off");
    // Appends go on where the data ended, across the old padding.
    log.append(&simple_batch(2, 50, 9)).unwrap();
    assert_eq!(log.log_end_offset(), end + 2);
    drop(log);
    let log = Log::open(dir.path(), config(), false).unwrap();
    assert_eq!(log.log_end_offset(), end + 2);
    assert_eq!(read_all(&log).0.len(), written.len() + 1, "one more batch");
}

#[test]
fn damaged_index_is_rebuilt_not_trusted() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), config(), false).unwrap();
    for i in 0..40 {
        log.append(&simple_batch(2, 100, i)).unwrap();
    }
    let written = read_all(&log).0;
    log.close().unwrap();
    drop(log);
    // Point every index entry of every segment at the wrong place.
    for p in files(dir.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "index")) {
        let mut b = std::fs::read(&p).unwrap();
        for e in b.chunks_exact_mut(8) {
            let pos = u32::from_be_bytes(e[4..8].try_into().unwrap());
            if pos > 0 {
                e[4..8].copy_from_slice(&(pos - 1).to_be_bytes());
            }
        }
        std::fs::write(&p, b).unwrap();
    }
    let log = Log::open(dir.path(), config(), true).unwrap();
    for (base, last, bytes) in &written {
        for o in [*base, *last] {
            let r = log.read(o, 1, u64::MAX).unwrap();
            let got = split_batches(&r.records);
            assert_eq!(&got[0].2, bytes, "offset {o}");
        }
    }
}
