//! Compaction (cleanup.policy=compact) at the storage layer: a model test of
//! random keyed writes, tombstones, rolls, restarts and forced cleans; the
//! codecs and producer fields of rewritten batches; transactions; and a
//! kill -9 of a real child process in the middle of cleaning.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy::log::batch::{BatchHeader, HEADER_LEN};
use eddy::log::cleaner::{CleanContext, CleanStats, OffsetMap, Throttle};
use eddy::log::records::{build_batch, read_records, NewRecord};
use eddy::log::{compression, Log, LogConfig, LogManager};

use crate::log_support::{crc_ok, scratch_dir, split_batches, Rng};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        segment_index_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: -1,
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

/// The batch with its body compressed with `codec` (as a client would send it).
fn with_codec(b: &Bytes, codec: u8) -> Bytes {
    if codec == 0 {
        return b.clone();
    }
    let body = compression::compress(codec, &b[HEADER_LEN..]).unwrap();
    let mut v = b[..HEADER_LEN].to_vec();
    v[8..12].copy_from_slice(&((HEADER_LEN - 12 + body.len()) as i32).to_be_bytes());
    let attrs = i16::from_be_bytes([v[21], v[22]]) | codec as i16;
    v[21..23].copy_from_slice(&attrs.to_be_bytes());
    v.extend_from_slice(&body);
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

/// Sets producer fields (epoch 0, and the transactional flag if asked).
fn with_producer(b: &Bytes, pid: i64, seq: i32, txn: bool) -> Bytes {
    eddy::log::records::with_producer(b, pid, 0, seq, txn)
}

fn clean(log: &Log, now: i64, map_bytes: u64) -> CleanStats {
    let stop = AtomicBool::new(false);
    let mut map = OffsetMap::new(map_bytes);
    let mut throttle = Throttle::new(0.0);
    log.compact(&mut CleanContext { map: &mut map, throttle: &mut throttle, stop: &stop, now }).unwrap()
}

/// Every record of the log from its start: (offset, key, value), and the
/// headers of every batch read.
type Records = Vec<(u64, Option<Bytes>, Option<Bytes>)>;

fn read_all(log: &Log) -> (Records, Vec<BatchHeader>) {
    let mut out = Vec::new();
    let mut headers = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 64 * 1024, u64::MAX).unwrap();
        assert!(!r.records.is_empty(), "nothing read at {offset} below the log end {}", log.log_end_offset());
        for (_, last, bytes) in split_batches(&r.records) {
            assert!(crc_ok(&bytes));
            headers.push(BatchHeader::parse(&bytes).unwrap());
            for rec in read_records(&bytes).unwrap() {
                out.push((rec.offset as u64, rec.key, rec.value));
            }
            offset = last + 1;
        }
    }
    (out, headers)
}


/// What was written, by offset.
type History = BTreeMap<u64, (Bytes, Option<Bytes>)>;

/// Returns how many keys whose latest write is a tombstone are gone.
fn check(log: &Log, history: &History, round: &str) -> usize {
    let (records, _) = read_all(log);
    let mut last = None;
    for (offset, key, value) in &records {
        assert!(last.is_none_or(|l| *offset > l), "{round}: offsets must strictly increase ({last:?} then {offset})");
        last = Some(*offset);
        let (k, v) = history.get(offset).unwrap_or_else(|| panic!("{round}: offset {offset} was never written"));
        assert_eq!((key.as_ref(), value), (Some(k), v), "{round}: record {offset} changed");
    }
    // Records from the first dirty offset on are untouched.
    let dirty = log.first_dirty_offset();
    let present: HashMap<u64, ()> = records.iter().map(|r| (r.0, ())).collect();
    for (&offset, _) in history.range(dirty..) {
        assert!(present.contains_key(&offset), "{round}: record {offset} at or after the first dirty offset {dirty} was removed");
    }
    // Below it, a key appears at most once.
    let mut seen = HashMap::new();
    for (offset, key, _) in records.iter().filter(|r| r.0 < dirty) {
        if let Some(prev) = seen.insert(key.clone().unwrap(), *offset) {
            panic!("{round}: key {key:?} kept twice in the cleaned part ({prev} and {offset})");
        }
    }
    // For every key, its latest write is the last record (or, for a
    // tombstone, that or nothing at all once it expired).
    let mut latest: HashMap<Bytes, (u64, bool)> = HashMap::new();
    for (&o, (k, v)) in history {
        latest.insert(k.clone(), (o, v.is_none()));
    }
    let mut last_in_log: HashMap<Bytes, u64> = HashMap::new();
    for (o, k, _) in &records {
        last_in_log.insert(k.clone().unwrap(), *o);
    }
    let mut gone = 0;
    for (k, (o, tombstone)) in &latest {
        match last_in_log.get(k) {
            Some(found) => assert_eq!(found, o, "{round}: key {k:?}: latest write at {o}, log ends with {found}"),
            None => {
                assert!(*tombstone, "{round}: key {k:?} vanished though its latest write {o} is a value");
                gone += 1;
            }
        }
    }
    gone
}

fn run_model(seed: u64, ops: usize) -> (CleanStats, usize, u64) {
    let dir = scratch_dir();
    let mut rng = Rng(seed | 1);
    let mut cfg = config();
    cfg.delete_retention_ms = if seed % 2 == 0 { 0 } else { 3_000 };
    let mut log = Log::open(dir.path(), cfg.clone(), true).unwrap();
    let mut history: History = BTreeMap::new();
    let mut now = eddy::log::now_ms();
    let mut stats = CleanStats::default();
    let mut cleans = 2;
    for op in 0..ops {
        now += 1_000;
        match rng.below(100) {
            0..=69 => {
                let n = 1 + rng.below(5) as usize;
                let keys: Vec<String> = (0..n).map(|_| format!("key-{}", rng.below(24))).collect();
                let values: Vec<Option<String>> = (0..n).map(|i| (rng.below(100) >= 15).then(|| format!("v{op}-{i}-{}", "x".repeat(rng.below(60) as usize)))).collect();
                let recs: Vec<NewRecord> = (0..n)
                    .map(|i| NewRecord { key: Some(keys[i].as_bytes()), value: values[i].as_deref().map(str::as_bytes), timestamp: now, headers: &[] })
                    .collect();
                let b = with_codec(&build_batch(&recs), rng.below(5) as u8);
                let info = log.append(&b).unwrap();
                for i in 0..n {
                    history.insert(info.base_offset + i as u64, (Bytes::from(keys[i].clone()), values[i].clone().map(Bytes::from)));
                }
            }
            70..=77 => log.roll().unwrap(),
            78..=91 => {
                // A small map forces several passes now and then.
                let map_bytes = if rng.below(3) == 0 { 1 } else { 1 << 20 };
                stats.add(&clean(&log, now, map_bytes));
                cleans += 1;
                check(&log, &history, &format!("seed {seed} op {op} after a clean"));
            }
            92..=95 => {
                log.close().unwrap();
                drop(log);
                log = Log::open(dir.path(), cfg.clone(), true).unwrap();
            }
            _ => {
                // An unclean stop: no close, recovery from the checkpoint.
                drop(log);
                log = Log::open(dir.path(), cfg.clone(), false).unwrap();
            }
        }
    }
    log.roll().unwrap();
    stats.add(&clean(&log, now + 1_000, 1 << 20));
    stats.add(&clean(&log, now + 10_000, 1 << 20));
    let gone = check(&log, &history, &format!("seed {seed} at the end"));
    (stats, gone, cleans)
}

#[test]
fn model_random_keyed_writes_tombstones_restarts_and_cleans() {
    let seeds: u64 = std::env::var("EDDY_COMPACTION_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(24);
    let mut total = CleanStats::default();
    let mut tombstones_gone = 0;
    let mut total_cleans = 0;
    for seed in 0..seeds {
        let (stats, gone, cleans) = run_model(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x1000_0000_01b3), 400);
        total.add(&stats);
        tombstones_gone += gone;
        total_cleans += cleans;
    }
    eprintln!("compaction model: {total:?}, {tombstones_gone} expired tombstones gone");
    // The runs must have exercised what they claim to.
    assert!(total.passes > total_cleans, "a full offset map means more passes: {total:?}, {total_cleans} cleans");
    assert!(total.segments_after < total.segments_before, "small cleaned segments are merged: {total:?}");
    assert!(total.records_removed > 1000, "{total:?}");
    assert!(tombstones_gone > 0, "no tombstone ever expired");
}

#[test]
fn a_clean_keeps_the_latest_per_key_drops_expired_tombstones_and_keeps_offsets() {
    let dir = scratch_dir();
    let cfg = LogConfig { delete_retention_ms: 60_000, ..config() };
    let log = Log::open(dir.path(), cfg, true).unwrap();
    let rec = |k: &'static str, v: Option<&'static str>| NewRecord { key: Some(k.as_bytes()), value: v.map(str::as_bytes), timestamp: 1000, headers: &[] };
    for round in 0..50 {
        let b = build_batch(&[rec("a", Some("a-old")), rec("b", Some("b-old")), rec("c", Some("c"))]);
        log.append(&with_codec(&b, (round % 5) as u8)).unwrap();
    }
    log.append(&build_batch(&[rec("a", Some("a-new")), rec("b", None)])).unwrap();
    log.roll().unwrap();
    log.append(&build_batch(&[rec("d", Some("active"))])).unwrap();
    let end = log.log_end_offset();
    let before = log.size_bytes();

    let now = eddy::log::now_ms();
    let stats = clean(&log, now, 1 << 20);
    assert_eq!(log.log_end_offset(), end, "offsets never change");
    assert!(stats.records_removed >= 147, "{stats:?}");
    let (records, headers) = read_all(&log);
    type Got<'a> = Vec<(u64, &'a [u8], Option<&'a [u8]>)>;
    let got: Got = records.iter().map(|(o, k, v)| (*o, &k.as_ref().unwrap()[..], v.as_deref())).collect();
    assert_eq!(got, vec![(149, &b"c"[..], Some(&b"c"[..])), (150, b"a", Some(b"a-new")), (151, b"b", None), (152, b"d", Some(b"active"))]);
    assert!(log.size_bytes() < before / 5, "{} vs {before}", log.size_bytes());
    assert!(headers.iter().all(|h| h.magic == 2));
    assert_eq!(log.first_dirty_offset(), 152, "the active segment stays dirty");

    // Within delete.retention.ms the tombstone stays; after it, it goes.
    clean(&log, now + 30_000, 1 << 20);
    assert_eq!(read_all(&log).0.len(), 4, "the tombstone is kept for delete.retention.ms");
    log.roll().unwrap();
    log.append(&build_batch(&[rec("e", Some("e"))])).unwrap();
    clean(&log, now + 61_000, 1 << 20);
    let keys: Vec<Vec<u8>> = read_all(&log).0.into_iter().map(|r| r.1.unwrap().to_vec()).collect();
    assert_eq!(keys, vec![b"c".to_vec(), b"a".to_vec(), b"d".to_vec(), b"e".to_vec()]);

    // Reopened (clean and unclean), the log reads the same.
    let before = read_all(&log).0;
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config(), true).unwrap();
    assert_eq!(read_all(&log).0, before);
    drop(log);
    let log = Log::open(dir.path(), config(), false).unwrap();
    assert_eq!(read_all(&log).0, before);
    assert_eq!(log.log_end_offset(), end + 1);
}

#[test]
fn rewritten_batches_keep_their_codec_and_producer_fields() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), config(), true).unwrap();
    let mut seq = 0;
    for codec in 0..=4u8 {
        // The first record is superseded by the second; the others stay.
        let keys = [format!("a{codec}"), format!("a{codec}"), format!("b{codec}"), format!("c{codec}")];
        let recs: Vec<NewRecord> = keys.iter().map(|k| NewRecord { key: Some(k.as_bytes()), value: Some(b"value"), timestamp: 5, headers: &[] }).collect();
        log.append(&with_producer(&with_codec(&build_batch(&recs), codec), 42, seq, false)).unwrap();
        seq += 4;
    }
    log.roll().unwrap();
    clean(&log, eddy::log::now_ms(), 1 << 20);
    let (records, headers) = read_all(&log);
    assert_eq!(records.len(), 5 * 3, "one of two records per codec is superseded");
    for (codec, h) in headers.iter().enumerate() {
        assert_eq!(h.compression(), codec as u8);
        assert_eq!((h.producer_id, h.base_sequence, h.last_offset_delta, h.records_count), (42, codec as i32 * 4, 3, 3));
    }
    // The producer's sequence continues after a restart without snapshots.
    log.close().unwrap();
    drop(log);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "snapshot") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let log = Log::open(dir.path(), config(), true).unwrap();
    let dup = with_producer(&build_batch(&[NewRecord { key: Some(b"x"), value: Some(b"y"), timestamp: 5, headers: &[] }]), 42, 16, false);
    let retry = log.append(&dup);
    assert!(retry.is_err(), "sequence 16 retries a batch of the middle of the last one: refused");
    let next = with_producer(&build_batch(&[NewRecord { key: Some(b"x"), value: Some(b"y"), timestamp: 5, headers: &[] }]), 42, 20, false);
    assert!(!log.append(&next).unwrap().duplicate);
}

#[test]
fn aborted_records_go_and_markers_stay_until_they_are_safe_to_drop() {
    let dir = scratch_dir();
    let cfg = LogConfig { delete_retention_ms: 1_000, ..config() };
    let log = Log::open(dir.path(), cfg.clone(), true).unwrap();
    let rec = |k: &'static str, v: &'static str| NewRecord { key: Some(k.as_bytes()), value: Some(v.as_bytes()), timestamp: 7, headers: &[] };
    log.append(&with_producer(&build_batch(&[rec("t", "aborted"), rec("u", "aborted")]), 9, 0, true)).unwrap();
    log.append(&build_batch(&[rec("plain", "1")])).unwrap();
    log.append_marker(9, 0, false, 0).unwrap();
    log.append(&with_producer(&build_batch(&[rec("t", "committed")]), 9, 2, true)).unwrap();
    log.append_marker(9, 0, true, 0).unwrap();
    log.append(&build_batch(&[rec("tail", "1")])).unwrap();
    log.roll().unwrap();
    log.append(&build_batch(&[rec("active", "1")])).unwrap();
    assert_eq!(log.last_stable_offset(), log.log_end_offset());

    let now = eddy::log::now_ms();
    clean(&log, now, 1 << 20);
    let (records, headers) = read_all(&log);
    let values: Vec<&[u8]> = records.iter().map(|r| &r.2.as_ref().unwrap()[..]).collect();
    assert!(!values.contains(&&b"aborted"[..]), "aborted records are removed: {values:?}");
    assert_eq!(headers.iter().filter(|h| h.is_control()).count(), 2, "markers are kept while their segment is newly cleaned");
    // Later, past delete.retention.ms: the abort marker has no data left
    // and goes; the commit marker still guards its committed record.
    clean(&log, now + 5_000, 1 << 20);
    log.roll().unwrap();
    log.append(&build_batch(&[rec("more", "1")])).unwrap();
    clean(&log, now + 10_000, 1 << 20);
    let (_, headers) = read_all(&log);
    assert_eq!(headers.iter().filter(|h| h.is_control()).count(), 1, "{headers:?}");
    // With its abort marker gone, the aborted transaction is no longer
    // listed (a read_committed reader would skip the producer's later,
    // committed records until an abort marker that never comes).
    assert!(log.aborted_transactions(0, u64::MAX).is_empty(), "{:?}", log.aborted_transactions(0, u64::MAX));
    // Reopened, no transaction looks open and none is listed as aborted.
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), cfg, false).unwrap();
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
    assert!(log.aborted_transactions(0, u64::MAX).is_empty());
}

#[test]
fn keyless_records_are_refused_by_a_compacted_log() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), config(), true).unwrap();
    let b = build_batch(&[NewRecord { key: Some(b"k"), value: Some(b"v"), timestamp: 1, headers: &[] }, NewRecord { key: None, value: Some(b"v"), timestamp: 1, headers: &[] }]);
    for codec in 0..=4 {
        let e = log.append(&with_codec(&b, codec)).unwrap_err();
        assert_eq!(e.kafka_code(), 87, "INVALID_RECORD: {e}");
    }
    // A record claiming an offset past its batch (the cleaner would take it
    // for the newest write of its key) is refused too.
    let two = build_batch(&[NewRecord { key: Some(b"a"), value: Some(b"1"), timestamp: 1, headers: &[] }, NewRecord { key: Some(b"b"), value: Some(b"2"), timestamp: 1, headers: &[] }]);
    let mut v = two.to_vec();
    let second = HEADER_LEN + 1 + v[HEADER_LEN] as usize / 2; // after the first record (its length is a one-byte zigzag varint)
    assert_eq!(v[second + 3], 2, "the second record's offset delta, zigzag(1)");
    v[second + 3] = 100; // zigzag(50): offset delta 50 in a batch whose last delta is 1
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    let e = log.append(&Bytes::from(v)).unwrap_err();
    assert_eq!(e.kafka_code(), 2, "CORRUPT_MESSAGE: {e}");
    assert_eq!(log.log_end_offset(), 0);
}

// --- kill -9 in the middle of cleaning -------------------------------------

const DIR_VAR: &str = "EDDY_CLEAN_CRASH_DIR";
const KEYS: u64 = 300;

fn crash_config() -> LogConfig {
    LogConfig { segment_bytes: 32 * 1024, ..config() }
}

fn key_of(seq: u64) -> String {
    format!("key-{}", seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) % KEYS)
}

#[test]
#[ignore = "the child process of kill_9_while_cleaning_loses_nothing_compaction_may_keep; does nothing alone"]
fn clean_crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let mut seq: u64 = std::env::var("EDDY_CLEAN_CRASH_SEQ").unwrap().parse().unwrap();
    let mgr = LogManager::open(Path::new(&dir), crash_config()).unwrap();
    let log = mgr.get_or_create("compacted", 0, crash_config()).unwrap();
    let stop = AtomicBool::new(false);
    let mut map = OffsetMap::new(1 << 20);
    // Slow enough that kills land in the middle of cleans.
    let mut throttle = Throttle::new(256.0 * 1024.0);
    loop {
        for _ in 0..40 {
            let recs: Vec<(String, String)> = (0..10).map(|i| (key_of(seq + i), format!("{}:{}", seq + i, "v".repeat(((seq + i) % 50) as usize)))).collect();
            let nr: Vec<NewRecord> = recs.iter().map(|(k, v)| NewRecord { key: Some(k.as_bytes()), value: Some(v.as_bytes()), timestamp: 1, headers: &[] }).collect();
            let info = log.append(&build_batch(&nr)).unwrap();
            log.sync_to(info.last_offset + 1).unwrap();
            seq += 10;
            let mut out = std::io::stdout().lock();
            writeln!(out, "ACK {seq}").unwrap();
            out.flush().unwrap();
        }
        log.roll().unwrap();
        log.compact(&mut CleanContext { map: &mut map, throttle: &mut throttle, stop: &stop, now: eddy::log::now_ms() }).unwrap();
    }
}

#[test]
fn kill_9_while_cleaning_loses_nothing_compaction_may_keep() {
    let dir = tempfile::tempdir().unwrap();
    let exe = if Path::new("/proc/self/exe").exists() { "/proc/self/exe".into() } else { std::env::current_exe().unwrap() };
    let mut acked_seq = 0u64;
    let mut interrupted = 0;
    let mut rng = Rng(0x5151_7777_0000_1234);
    let deadline = Instant::now() + Duration::from_secs(120);
    for round in 0..8 {
        let mut child = Command::new(&exe)
            .args(["log_compaction::clean_crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .env("EDDY_CLEAN_CRASH_SEQ", acked_seq.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ACK ").and_then(|n| n.parse().ok()) {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60)).expect("the child acknowledged nothing within 60 s");
        std::thread::sleep(Duration::from_millis(200 + rng.below(1500)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let partition_dir = dir.path().join("compacted-0");
        let in_flight = std::fs::read_dir(&partition_dir).unwrap().filter(|e| {
            let n = e.as_ref().unwrap().file_name().to_string_lossy().into_owned();
            n.ends_with(".cleaned") || n.ends_with(".swap")
        });
        interrupted += (in_flight.count() > 0) as u32;
        let last = rx.try_iter().last();
        if let Some(n) = last {
            acked_seq = acked_seq.max(n);
        }
        // Every key's latest acknowledged write must be there (or a newer one).
        let mgr = LogManager::open(dir.path(), crash_config()).unwrap();
        let log = mgr.get("compacted", 0).unwrap();
        let leftovers: Vec<String> = std::fs::read_dir(log.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?} left after recovery");
        let (records, _) = read_all(&log);
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut prev = None;
        for (o, k, v) in &records {
            assert!(prev.is_none_or(|p| *o > p), "round {round}: offsets go backwards at {o}");
            prev = Some(*o);
            let v = String::from_utf8(v.as_ref().unwrap().to_vec()).unwrap();
            let s: u64 = v.split(':').next().unwrap().parse().unwrap();
            assert_eq!(k.as_deref().unwrap(), key_of(s).as_bytes(), "round {round}: record {o} has the wrong key");
            let e = latest.entry(k.as_ref().unwrap().to_vec()).or_insert(s);
            *e = (*e).max(s);
        }
        let mut expected: HashMap<Vec<u8>, u64> = HashMap::new();
        for s in 0..acked_seq {
            expected.insert(key_of(s).into_bytes(), s);
        }
        for (k, s) in &expected {
            let found = latest.get(k).copied();
            assert!(found.is_some_and(|f| f >= *s), "round {round}: key {} lost its write {s} (found {found:?})", String::from_utf8_lossy(k));
        }
        if round % 2 == 0 {
            mgr.shutdown().unwrap();
        }
        drop(log);
        drop(mgr);
        // Next child continues the sequence after everything written.
        acked_seq = acked_seq.max(records.iter().map(|r| String::from_utf8_lossy(r.2.as_ref().unwrap()).split(':').next().unwrap().parse::<u64>().unwrap() + 1).max().unwrap_or(0));
        acked_seq = acked_seq.div_ceil(10) * 10;
        assert!(Instant::now() < deadline, "the crash test took too long");
    }
    eprintln!("clean crash test: {acked_seq} records written, {interrupted} of 8 kills landed in a clean");
    assert!(acked_seq > 1000, "too little written ({acked_seq}) to mean anything");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn log_bases(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_string_lossy().strip_suffix(".log").and_then(|s| s.parse().ok()))
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn recovery_completes_a_committed_swap_and_rolls_back_an_uncommitted_one() {
    let root = scratch_dir();
    let (live, before) = (root.path().join("live"), root.path().join("before"));
    let log = Log::open(&live, config(), true).unwrap();
    for i in 0..400u32 {
        let k = format!("k{}", i % 7);
        let v = format!("value-{i}");
        log.append(&build_batch(&[NewRecord { key: Some(k.as_bytes()), value: Some(v.as_bytes()), timestamp: 1, headers: &[] }])).unwrap();
    }
    log.roll().unwrap();
    // A first clean leaves small segments, which the next clean merges.
    clean(&log, eddy::log::now_ms(), 1 << 20);
    for i in 0..20u32 {
        let k = format!("k{}", i % 3);
        log.append(&build_batch(&[NewRecord { key: Some(k.as_bytes()), value: Some(b"again"), timestamp: 1, headers: &[] }])).unwrap();
    }
    log.roll().unwrap();
    log.close().unwrap();
    let original = read_all(&log).0;
    drop(log);
    copy_dir(&live, &before);
    let old_bases = log_bases(&before);

    let log = Log::open(&live, config(), true).unwrap();
    clean(&log, eddy::log::now_ms(), 1 << 20);
    let cleaned = read_all(&log).0;
    log.close().unwrap();
    drop(log);
    let new_bases = log_bases(&live);
    assert!(new_bases.len() < old_bases.len() && new_bases[0] == 0, "{new_bases:?}");
    let first_end = new_bases[1];
    assert!(old_bases.iter().filter(|&&b| b > 0 && b < first_end).count() > 1, "the first cleaned segment merged several");

    // Committed: the cleaned first segment sits there as a swap file, next to
    // the segments it replaces (one of them already deleted).
    let committed = root.path().join("committed");
    copy_dir(&before, &committed);
    let seg = |base: u64, ext: &str| format!("{base:020}.{ext}");
    std::fs::copy(live.join(seg(0, "log")), committed.join(seg(0, "log.swap"))).unwrap();
    std::fs::copy(live.join(seg(0, "index")), committed.join(seg(0, "index.swap"))).unwrap();
    std::fs::remove_file(committed.join(seg(old_bases[1], "log"))).unwrap();
    let log = Log::open(&committed, config(), false).unwrap();
    let got = read_all(&log).0;
    let expected: Vec<_> = cleaned.iter().filter(|r| r.0 < first_end).chain(original.iter().filter(|r| r.0 >= first_end)).cloned().collect();
    assert_eq!(got, expected, "the swap is completed");
    let names: Vec<String> = std::fs::read_dir(&committed).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".swap")), "{names:?}");
    drop(log);
    let log = Log::open(&committed, config(), true).unwrap();
    assert_eq!(read_all(&log).0, expected, "and stays completed");
    drop(log);

    // Uncommitted: `.cleaned` files (and an index renamed to `.swap` ahead
    // of its log) are discarded; the log is as before the clean.
    let rolled_back = root.path().join("rolled-back");
    copy_dir(&before, &rolled_back);
    std::fs::copy(live.join(seg(0, "log")), rolled_back.join(seg(0, "log.cleaned"))).unwrap();
    std::fs::copy(live.join(seg(0, "timeindex")), rolled_back.join(seg(0, "timeindex.cleaned"))).unwrap();
    std::fs::copy(live.join(seg(0, "index")), rolled_back.join(seg(0, "index.swap"))).unwrap();
    let log = Log::open(&rolled_back, config(), false).unwrap();
    assert_eq!(read_all(&log).0, original, "the clean is rolled back");
    assert_eq!(log_bases(&rolled_back), old_bases);
    let names: Vec<String> = std::fs::read_dir(&rolled_back).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".swap") || n.ends_with(".cleaned")), "{names:?}");
}

#[test]
fn a_throttled_clean_stops_on_request_and_leaves_no_files() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), LogConfig { segment_bytes: 64 * 1024, ..config() }, true).unwrap();
    let value = vec![b'v'; 500];
    for i in 0..4000u32 {
        let k = format!("k{}", i % 100);
        log.append(&build_batch(&[NewRecord { key: Some(k.as_bytes()), value: Some(&value), timestamp: 1, headers: &[] }])).unwrap();
    }
    log.roll().unwrap();
    let before = read_all(&log).0;
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let stats = std::thread::scope(|s| {
        let cleaner = s.spawn(|| {
            let mut map = OffsetMap::new(1 << 20);
            // 100 KiB/s: a whole clean would take over 20 s.
            let mut throttle = Throttle::new(100.0 * 1024.0);
            log.compact(&mut CleanContext { map: &mut map, throttle: &mut throttle, stop: &stop, now: eddy::log::now_ms() }).unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Release);
        cleaner.join().unwrap()
    });
    assert!(stats.stopped, "{stats:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "the clean ran on for {:?} after the stop", started.elapsed());
    let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")), "{names:?}");
    // Whatever was swapped in before the stop is a valid clean; the latest
    // value of every key is still there.
    let after = read_all(&log).0;
    let latest = |rs: &Records| rs.iter().map(|r| (r.1.clone(), r.0)).collect::<HashMap<_, _>>();
    assert_eq!(latest(&after), latest(&before));
}

fn lag_log(dir: &Path, cfg: LogConfig, now: i64) -> Log {
    let log = Log::open(dir, cfg, true).unwrap();
    for round in 0..3 {
        for i in 0..20u32 {
            let v = format!("round-{round}");
            let k = format!("k{}", i % 4);
            log.append(&build_batch(&[NewRecord { key: Some(k.as_bytes()), value: Some(v.as_bytes()), timestamp: now, headers: &[] }])).unwrap();
        }
        log.roll().unwrap();
    }
    log
}

#[test]
fn min_and_max_compaction_lag_are_honoured() {
    let now = eddy::log::now_ms();
    // Records younger than min.compaction.lag.ms are not cleaned.
    let dir = scratch_dir();
    let log = lag_log(dir.path(), LogConfig { min_compaction_lag_ms: 60_000, ..config() }, now);
    let before = read_all(&log).0.len();
    let stats = clean(&log, now + 1_000, 1 << 20);
    assert_eq!((stats.passes, read_all(&log).0.len(), log.first_dirty_offset()), (0, before, 0), "{stats:?}");
    clean(&log, now + 120_000, 1 << 20);
    assert_eq!(read_all(&log).0.len(), 4, "once old enough: one record per key");

    // A dirty ratio below min.cleanable.dirty.ratio is no reason to clean,
    // but dirty records older than max.compaction.lag.ms are.
    let dir = scratch_dir();
    let log = lag_log(dir.path(), LogConfig { max_compaction_lag_ms: 5_000, min_cleanable_dirty_ratio: 0.99, ..config() }, now);
    clean(&log, now, 1 << 20);
    log.append(&build_batch(&[NewRecord { key: Some(b"k0"), value: Some(b"late"), timestamp: now, headers: &[] }])).unwrap();
    log.roll().unwrap();
    let c = log.cleanable(now + 1_000).unwrap();
    assert!(!c.lag_exceeded && c.dirty_bytes > 0 && c.dirty_ratio < 0.99, "{c:?}");
    assert!(log.cleanable(now + 10_000).unwrap().lag_exceeded, "the dirty record is older than max.compaction.lag.ms");

    // Kafka refuses a minimum lag above the maximum.
    let bad = [("min.compaction.lag.ms".to_string(), "10".to_string()), ("max.compaction.lag.ms".to_string(), "5".to_string())];
    assert!(LogConfig::default().with_overrides(bad.iter().map(|(k, v)| (k, v))).is_err());
}
