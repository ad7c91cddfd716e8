//! The files on disk follow `storage-format.md`: a log is written through the
//! crate, then read back with a small parser written here from the document
//! alone (no crate function touches the files after `close`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bytes::Bytes;
use eddy::log::{Log, LogConfig, LogManager, TimestampType, TopicMeta};

use crate::log_support::{batch, simple_batch, Rec};

const HEADER: usize = 61;
const OFFSET_ENTRY: usize = 8;
const TIME_ENTRY: usize = 12;
const INDEX_BYTES: u64 = 10 * 1024;
const INTERVAL: u64 = 1024;
const SEGMENT_BYTES: u64 = 64 * 1024;

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// A batch as the test wrote it.
struct Written {
    last: u64,
    timestamps: Vec<i64>,
    client_bytes: Bytes,
}

/// A batch as found in a `.log` file.
struct FileBatch {
    pos: u64,
    base: u64,
    last: u64,
    bytes: Vec<u8>,
}

/// Walks a `.log` file batch by batch: header fields, extent, CRC-32C.
fn parse_log(path: &Path) -> Vec<FileBatch> {
    let data = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let at = |what: &str| format!("{} at position {pos}: {what}", path.display());
        assert!(data.len() - pos >= HEADER, "{}", at("torn header"));
        let h = &data[pos..];
        let base = i64_at(h, 0);
        let batch_length = i32_at(h, 8);
        assert!(base >= 0, "{}", at("negative base offset"));
        assert!(batch_length >= (HEADER - 12) as i32, "{}", at("batch length below a header"));
        let total = 12 + batch_length as usize;
        assert!(pos + total <= data.len(), "{}", at("batch runs past the end of the file"));
        let b = &data[pos..pos + total];
        assert_eq!(b[16] as i8, 2, "{}", at("magic"));
        assert_eq!(crc32c::crc32c(&b[21..]), u32_at(b, 17), "{}", at("CRC-32C"));
        let delta = i32_at(b, 23);
        assert!(delta >= 0, "{}", at("negative last offset delta"));
        assert_eq!(i32_at(b, 57), delta + 1, "{}", at("records count = last offset delta + 1"));
        out.push(FileBatch { pos: pos as u64, base: base as u64, last: base as u64 + delta as u64, bytes: b.to_vec() });
        pos += total;
    }
    out
}

/// The documented used length of an index file: the longest prefix of entries
/// whose second field is nonzero and in which both fields strictly increase.
/// Returns the entries; asserts that everything after them is zeros.
fn parse_index(path: &Path, entry: usize, keys: impl Fn(&[u8]) -> (i64, u32)) -> (Vec<(i64, u32)>, u64) {
    let data = fs::read(path).unwrap();
    let mut entries: Vec<(i64, u32)> = Vec::new();
    for e in data.chunks_exact(entry) {
        let (a, b) = keys(e);
        if b == 0 || entries.last().is_some_and(|&(pa, pb)| a <= pa || b <= pb) {
            break;
        }
        entries.push((a, b));
    }
    let used = entries.len() * entry;
    assert!(data[used..].iter().all(|&x| x == 0), "{}: bytes after the {} used entries are not zeros", path.display(), entries.len());
    (entries, data.len() as u64)
}

/// checkpoint: "EDCK", u16 version 1, u16 0, u64 recovery point, u64 log
/// start offset, u32 CRC-32 (IEEE) of the first 24 bytes.
fn parse_checkpoint(dir: &Path) -> (u64, u64) {
    let c = fs::read(dir.join("checkpoint")).expect("every log has a checkpoint");
    assert_eq!(c.len(), 28);
    assert_eq!(&c[0..4], b"EDCK");
    assert_eq!(i16_at(&c, 4), 1);
    assert_eq!(i16_at(&c, 6), 0);
    assert_eq!(u32_at(&c, 24), crc32fast::hash(&c[..24]));
    (u64_at(&c, 8), u64_at(&c, 16))
}

fn stem(base: u64) -> String {
    format!("{base:020}")
}

/// Segment base offsets named by the files in `dir`; asserts that the other
/// file is the checkpoint (no `.tmp` left), and that each segment has all
/// three files.
fn list_segments(dir: &Path) -> Vec<u64> {
    let mut bases = Vec::new();
    let mut others = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let segment = name.split_once('.').filter(|(s, ext)| {
            s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit()) && ["log", "index", "timeindex"].contains(ext)
        });
        match segment {
            Some((s, "log")) => bases.push(s.parse::<u64>().unwrap()),
            Some(_) => {}
            None if name.ends_with(".snapshot") => check_producer_snapshot(&dir.join(&name)),
            None => others.push(name),
        }
    }
    others.sort();
    assert_eq!(others, ["checkpoint"], "files other than segments and snapshots in {}", dir.display());
    bases.sort_unstable();
    for &b in &bases {
        for ext in ["index", "timeindex"] {
            assert!(dir.join(format!("{}.{ext}", stem(b))).exists(), "segment {b} has no .{ext}");
        }
    }
    bases
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn files_follow_the_documented_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("orders-0");
    let config = LogConfig {
        segment_bytes: SEGMENT_BYTES,
        index_interval_bytes: INTERVAL,
        segment_index_bytes: INDEX_BYTES,
        segment_ms: i64::MAX,
        retention_ms: -1,
        ..Default::default()
    };
    let log = Log::open(&dir, config.clone(), false).unwrap();

    // A few hundred batches of 1..=4 records, 20..520-byte values, and
    // timestamps that mostly grow but jump back and forth by up to a second.
    let mut rng = Lcg(7);
    let mut written: BTreeMap<u64, Written> = BTreeMap::new();
    for i in 0..320i64 {
        let n = 1 + rng.next(4) as usize;
        let recs: Vec<Rec> = (0..n)
            .map(|j| Rec {
                key: Some(format!("key-{i}-{j}").into_bytes()),
                value: vec![b'a' + (i % 26) as u8; 20 + rng.next(500) as usize],
                timestamp: 1_700_000_000_000 + i * 100 + rng.next(2001) as i64 - 1000,
            })
            .collect();
        let bytes = batch(&recs);
        let info = log.append(&bytes).unwrap();
        assert_eq!(info.last_offset - info.base_offset + 1, n as u64);
        written.insert(info.base_offset, Written { last: info.last_offset, timestamps: recs.iter().map(|r| r.timestamp).collect(), client_bytes: bytes });
        if i == 100 || i == 200 {
            log.roll().unwrap();
        }
        if i == 150 {
            log.sync_to(log.log_end_offset()).unwrap();
        }
    }
    let log_end_offset = log.log_end_offset();
    let bases_before = log.segment_bases();
    assert!(bases_before.len() >= 4, "expected several segments, got {bases_before:?}");
    // DeleteRecords into the second segment: the first one goes away and the
    // checkpoint carries the new log start offset.
    let cut = bases_before[1] + 3;
    assert!(cut < bases_before[2]);
    assert_eq!(log.delete_records(cut).unwrap(), cut);
    log.close().unwrap();
    drop(log);
    check_partition_dir(&dir, &written, bases_before[1], cut, log_end_offset);

    // The files a reopen leaves behind follow the same layout: after a clean
    // stop (everything trusted), and after a crash-like open (the active
    // segment is rescanned and its indexes rebuilt).
    for clean in [true, false] {
        let log = Log::open(&dir, config.clone(), clean).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (cut, log_end_offset));
        log.close().unwrap();
        drop(log);
        check_partition_dir(&dir, &written, bases_before[1], cut, log_end_offset);
    }
}

/// Reads a closed partition directory with the parser above and checks it
/// against what was written: `first_base` is the first segment expected,
/// `log_start_offset` and `log_end_offset` the log's bounds.
fn check_partition_dir(dir: &Path, written: &BTreeMap<u64, Written>, first_base: u64, log_start_offset: u64, log_end_offset: u64) {
    let bases = list_segments(dir);
    assert_eq!(bases.first(), Some(&first_base), "the segment holding the log start offset comes first");
    let ts_of: BTreeMap<u64, i64> =
        written.iter().flat_map(|(&base, w)| w.timestamps.iter().enumerate().map(move |(k, &ts)| (base + k as u64, ts))).collect();
    let mut next = bases[0];
    for (k, &base) in bases.iter().enumerate() {
        let is_last = k + 1 == bases.len();
        let log_path = dir.join(format!("{}.log", stem(base)));
        let batches = parse_log(&log_path);
        let size = fs::metadata(&log_path).unwrap().len();

        // .log: batches back to back, offsets contiguous across segments, the
        // file named by the base offset of its first batch; only the base
        // offset differs from what the client sent.
        assert_eq!(base, next, "segment {base} does not start where the previous one ended");
        assert!(!batches.is_empty() || is_last, "only the active segment may be empty");
        assert!(size <= SEGMENT_BYTES, "segment {base} holds {size} bytes, over segment.bytes");
        for b in &batches {
            assert_eq!(b.base, next, "segment {base}: batch at {} does not continue the offsets", b.pos);
            let w = &written[&b.base];
            assert_eq!(b.last, w.last);
            assert_eq!(&b.bytes[8..], &w.client_bytes[8..], "batch {}: bytes after the base offset changed", b.base);
            next = b.last + 1;
        }
        let seg_next = next;

        // .index: sparse, one entry for a batch at position p > 0 when
        // p - (previous entry's position, or 0) >= index.interval.bytes.
        let (offset_entries, index_len) = parse_index(&dir.join(format!("{}.index", stem(base))), OFFSET_ENTRY, |e| (u32_at(e, 0) as i64, u32_at(e, 4)));
        let mut expected = Vec::new();
        let mut last_pos = 0u64;
        for b in &batches {
            if b.pos > 0 && b.pos - last_pos >= INTERVAL {
                expected.push(((b.base - base) as i64, b.pos as u32));
                last_pos = b.pos;
            }
        }
        assert_eq!(offset_entries, expected, "segment {base}: offset index entries");
        for &(rel, pos) in &offset_entries {
            let target = batches.iter().find(|b| b.pos == pos as u64).expect("an offset index entry points at a batch start");
            assert_eq!(target.base, base + rel as u64);
        }

        // .timeindex: (ts, rel) means every record of this segment with an
        // offset below base + rel has a timestamp <= ts.
        let (time_entries, time_len) = parse_index(&dir.join(format!("{}.timeindex", stem(base))), TIME_ENTRY, |e| (i64_at(e, 0), u32_at(e, 8)));
        for &(ts, rel) in &time_entries {
            let bound = base + rel as u64;
            assert!(bound == seg_next || batches.iter().any(|b| b.base == bound), "time entry bound {bound} is not a batch boundary");
            let max_below = ts_of.range(base..bound).map(|(_, &t)| t).max().expect("records below a time entry");
            assert!(max_below <= ts, "segment {base}: a record below {bound} has timestamp {max_below} > {ts}");
            // The entry is exact: the largest timestamp below its bound.
            assert_eq!(max_below, ts, "segment {base}: time entry ({ts}, {rel}) is not the max below it");
        }
        if !batches.is_empty() {
            // Sealed and closed segments end with an entry covering them all.
            let seg_max = ts_of.range(base..seg_next).map(|(_, &t)| t).max().unwrap();
            assert_eq!(time_entries.last().map(|e| e.0), Some(seg_max), "segment {base}: last time entry is not the segment max");
        }

        // Sealed segments' indexes are trimmed to the used length; the
        // active one's stay preallocated (rounded down to whole entries).
        if is_last {
            assert_eq!(index_len, INDEX_BYTES / 8 * 8);
            assert_eq!(time_len, INDEX_BYTES / 12 * 12);
        } else {
            assert_eq!(index_len, (offset_entries.len() * OFFSET_ENTRY) as u64, "sealed segment {base}: .index not trimmed");
            assert_eq!(time_len, (time_entries.len() * TIME_ENTRY) as u64, "sealed segment {base}: .timeindex not trimmed");
        }
    }
    assert_eq!(next, log_end_offset, "the last segment ends at the log end offset");

    let (recovery_point, checkpoint_start) = parse_checkpoint(dir);
    assert_eq!(checkpoint_start, log_start_offset);
    // Every segment that ends at or below the recovery point is sealed
    // (checked above for all but the active one), so it may be trusted.
    assert!(recovery_point <= log_end_offset);
}

#[test]
fn log_append_time_rewrites_only_attributes_max_timestamp_and_crc() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stamped-0");
    let config = LogConfig { timestamp_type: TimestampType::LogAppendTime, segment_index_bytes: INDEX_BYTES, ..Default::default() };
    let log = Log::open(&dir, config, false).unwrap();
    let before = eddy::log::now_ms();
    let mut sent = Vec::new();
    for i in 0..20 {
        let b = simple_batch(1 + i % 3, 40, 1_000 + i as i64);
        let info = log.append(&b).unwrap();
        sent.push((info.base_offset, info.log_append_time, b));
    }
    let after = eddy::log::now_ms();
    log.close().unwrap();
    drop(log);

    assert_eq!(list_segments(&dir), vec![0]);
    let batches = parse_log(&dir.join(format!("{}.log", stem(0))));
    assert_eq!(batches.len(), sent.len());
    for (b, (base, append_time, client)) in batches.iter().zip(&sent) {
        assert_eq!(b.base, *base);
        let stored = &b.bytes;
        assert_eq!(i16_at(stored, 21), i16_at(client, 21) | 0x08, "timestamp type bit");
        let max_ts = i64_at(stored, 35);
        assert_eq!(max_ts, *append_time);
        assert!((before..=after).contains(&max_ts));
        // Everything else after the base offset is as sent: length, leader
        // epoch, magic, last offset delta, base timestamp, producer fields,
        // records.
        assert_eq!(&stored[8..17], &client[8..17]);
        assert_eq!(&stored[23..35], &client[23..35]);
        assert_eq!(&stored[43..], &client[43..]);
    }
}

#[test]
fn data_directory_layout_and_clean_shutdown_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let config = LogConfig { segment_index_bytes: INDEX_BYTES, ..Default::default() };
    let manager = LogManager::open(data, config.clone()).unwrap();
    assert!(data.join(".lock").is_file());
    assert!(!data.join(".clean_shutdown").exists());
    for p in 0..2 {
        let log = manager.get_or_create("orders", p, config.clone()).unwrap();
        log.append(&simple_batch(3, 10, 5)).unwrap();
    }
    assert!(manager.delete("orders", 1).unwrap());
    assert!(!data.join("orders-1").exists() && !data.join("orders-1.delete").exists());
    // <topic>.topic: key=value lines, the last one a CRC-32 of all before it.
    let meta = TopicMeta {
        name: "orders".into(),
        id: [0xab; 16],
        partitions: 1,
        configs: [("retention.ms".to_string(), "1000".to_string()), ("cleanup.policy".to_string(), "delete".to_string())].into(),
    };
    manager.put_topic(meta.clone()).unwrap();
    let text = fs::read_to_string(data.join("orders.topic")).unwrap();
    let body = format!(
        "version=1\nname=orders\nid={}\npartitions=1\nconfig.cleanup.policy=delete\nconfig.retention.ms=1000\n",
        "ab".repeat(16)
    );
    assert_eq!(text, format!("{body}crc32={:08x}\n", crc32fast::hash(body.as_bytes())));
    manager.shutdown().unwrap();
    drop(manager);

    let marker = data.join(".clean_shutdown");
    assert_eq!(fs::metadata(&marker).expect("a clean shutdown leaves the marker").len(), 0);
    assert_eq!(list_segments(&data.join("orders-0")), vec![0]);
    // A new log writes its checkpoint when it is created.
    assert_eq!(parse_checkpoint(&data.join("orders-0")), (0, 0));
    let batches = parse_log(&data.join("orders-0").join(format!("{}.log", stem(0))));
    assert_eq!((batches.len(), batches[0].base, batches[0].last), (1, 0, 2));

    // A partition directory left half-deleted by a crash is removed at
    // start-up, and the marker is gone once the directory is in use again.
    fs::create_dir(data.join("orders-7.delete")).unwrap();
    fs::write(data.join("orders-7.delete").join(format!("{}.log", stem(0))), b"junk").unwrap();
    let manager = LogManager::open(data, config).unwrap();
    assert!(!marker.exists());
    assert!(!data.join("orders-7.delete").exists());
    assert_eq!(manager.partitions(), vec![("orders".to_string(), 0)]);
    assert_eq!(manager.topic("orders"), Some(meta));
    assert!(!manager.get("orders", 0).unwrap().was_recovered(), "a clean stop needs no recovery");
}

/// A producer snapshot, read with the layout in storage-format.md: "EDPS",
/// u16 version 2, u64 offset (= the file name), u32 producer count, the
/// producers, u32 open transaction count, the open transactions, then a
/// CRC-32 (IEEE) of everything before it.
fn check_producer_snapshot(path: &Path) {
    let b = fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let offset: u64 = name.strip_suffix(".snapshot").unwrap().parse().unwrap();
    assert_eq!(&b[..4], b"EDPS");
    assert_eq!(u16::from_be_bytes([b[4], b[5]]), 2);
    assert_eq!(u64::from_be_bytes(b[6..14].try_into().unwrap()), offset, "offset in the file = its name");
    let (body, crc) = b.split_at(b.len() - 4);
    assert_eq!(crc32fast::hash(body).to_be_bytes(), crc);
    let count = u32::from_be_bytes(b[14..18].try_into().unwrap());
    let mut pos = 18;
    for _ in 0..count {
        pos += 8 + 2 + 8; // producer id, epoch, last timestamp
        let n = body[pos] as usize;
        assert!(n <= 5, "at most five batches per producer");
        pos += 1 + n * (4 + 4 + 8 + 8);
    }
    let open = u32::from_be_bytes(body[pos..pos + 4].try_into().unwrap()) as usize;
    pos += 4 + open * (8 + 8); // producer id, first offset of its open transaction
    assert_eq!(pos, body.len(), "snapshot length matches its producers and open transactions");
}
