//! Behaviour of the storage layer, one rule per test: durability policies,
//! retention, log start offset, timestamps, rejection of bad input, and the
//! data-directory manager.

use std::sync::Arc;

use eddy::log::{Log, LogConfig, LogError, LogManager, TimestampType};

use crate::log_support::{batch, crc_ok, scratch_dir, simple_batch, split_batches, Rec};

fn small() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 256, segment_index_bytes: 4096, retention_ms: -1, ..LogConfig::default() }
}

#[test]
fn one_fsync_covers_every_append_before_it() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), small(), false).unwrap();
    let a = log.append(&simple_batch(1, 10, 1)).unwrap();
    let b = log.append(&simple_batch(1, 10, 1)).unwrap();
    log.sync_to(b.last_offset + 1).unwrap();
    let after_first = log.fsync_count();
    assert_eq!(after_first, 1);
    log.sync_to(a.last_offset + 1).unwrap();
    log.sync_to(b.last_offset + 1).unwrap();
    assert_eq!(log.fsync_count(), after_first, "already-durable offsets needed another fsync");
}

#[test]
fn concurrent_durable_appends_share_fsyncs() {
    // Real disk: fsync takes long enough here for writers to queue behind it.
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogConfig::default(), false).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for _ in 0..40 {
                    let info = log.append(&simple_batch(4, 256, 7)).unwrap();
                    log.sync_to(info.last_offset + 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.log_end_offset(), 8 * 40 * 4);
    let fsyncs = log.fsync_count();
    assert!(fsyncs < 8 * 40, "{fsyncs} fsyncs for 320 durable appends: no group commit");
}

#[test]
fn flush_messages_and_flush_ms_policies() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), LogConfig { flush_messages: Some(5), ..small() }, false).unwrap();
    log.append(&simple_batch(2, 10, 1)).unwrap();
    log.append(&simple_batch(2, 10, 1)).unwrap();
    assert_eq!(log.fsync_count(), 0);
    log.append(&simple_batch(1, 10, 1)).unwrap();
    assert_eq!(log.fsync_count(), 1, "5 unflushed records must trigger an fsync");

    let dir = scratch_dir();
    let log = Log::open(dir.path(), LogConfig { flush_ms: Some(1000), ..small() }, false).unwrap();
    let now = eddy::log::now_ms();
    log.flush_if_due(now + 5000).unwrap();
    assert_eq!(log.fsync_count(), 0, "nothing to flush");
    log.append(&simple_batch(1, 10, 1)).unwrap();
    log.flush_if_due(now).unwrap();
    assert_eq!(log.fsync_count(), 0, "not due yet");
    log.flush_if_due(now + 5000).unwrap();
    assert_eq!(log.fsync_count(), 1, "due after flush.ms");
}

#[test]
fn retention_ms_deletes_old_segments_and_rolls_a_wholly_expired_log() {
    let dir = scratch_dir();
    let cfg = LogConfig { retention_ms: 1000, ..small() };
    let log = Log::open(dir.path(), cfg.clone(), false).unwrap();
    for i in 0..60 {
        log.append(&simple_batch(2, 100, 10_000 + i / 2)).unwrap();
    }
    let bases = log.segment_bases();
    assert!(bases.len() > 3);
    // At 10_000 + 1000 + 15 only segments whose newest record is older than
    // 10_015 go.
    let deleted = log.apply_retention(11_015).unwrap();
    assert!(deleted > 0 && deleted < bases.len());
    let lso = log.log_start_offset();
    assert_eq!(lso, log.segment_bases()[0]);
    assert!(matches!(log.read(0, 100, u64::MAX), Err(LogError::OffsetOutOfRange { .. })));
    assert!(!log.read(lso, 100, u64::MAX).unwrap().records.is_empty());
    // Everything expired: the active segment is rolled and deleted too.
    let end = log.log_end_offset();
    log.apply_retention(1_000_000).unwrap();
    assert_eq!(log.log_start_offset(), end);
    assert_eq!(log.segment_bases(), vec![end]);
    log.append(&simple_batch(1, 10, 1)).unwrap();
    // The start offset survives an unclean reopen.
    drop(log);
    let log = Log::open(dir.path(), cfg, false).unwrap();
    assert_eq!(log.log_start_offset(), end);
    assert_eq!(log.log_end_offset(), end + 1);
}

#[test]
fn retention_bytes_keeps_at_least_the_limit() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), LogConfig { retention_bytes: 10_000, ..small() }, false).unwrap();
    for _ in 0..60 {
        log.append(&simple_batch(2, 100, 1)).unwrap();
    }
    let before = log.size_bytes();
    assert!(before > 10_000);
    log.apply_retention(0).unwrap();
    let after = log.size_bytes();
    assert!((10_000..10_000 + 4096 + 400).contains(&after), "size {after}");
}

#[test]
fn delete_records_is_durable_and_bounded() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), small(), false).unwrap();
    for _ in 0..50 {
        log.append(&simple_batch(3, 100, 1)).unwrap();
    }
    assert!(matches!(log.delete_records(151), Err(LogError::OffsetOutOfRange { .. })));
    assert_eq!(log.delete_records(70).unwrap(), 70);
    assert_eq!(log.delete_records(10).unwrap(), 70, "the start offset never moves back");
    // A read at the new start returns the whole batch holding it.
    let r = log.read(70, 1, u64::MAX).unwrap();
    let got = split_batches(&r.records);
    assert_eq!((got[0].0, got[0].1), (69, 71));
    assert!(log.segment_bases()[0] <= 69);
    drop(log);
    let log = Log::open(dir.path(), small(), false).unwrap();
    assert_eq!(log.log_start_offset(), 70);
    assert!(matches!(log.read(69, 1, u64::MAX), Err(LogError::OffsetOutOfRange { .. })));
}

#[test]
fn reads_respect_upper_bound_and_offset_range() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), small(), false).unwrap();
    for _ in 0..10 {
        log.append(&simple_batch(2, 20, 1)).unwrap();
    }
    assert!(log.read(20, 100, u64::MAX).unwrap().records.is_empty(), "read at the end is empty");
    assert!(matches!(log.read(21, 100, u64::MAX), Err(LogError::OffsetOutOfRange { offset: 21, log_start_offset: 0, log_end_offset: 20 })));
    let r = log.read(0, 1 << 20, 6).unwrap();
    let got = split_batches(&r.records);
    assert_eq!(got.last().unwrap().1, 5, "nothing at or past the upper bound");
    assert!(log.read(6, 1 << 20, 6).unwrap().records.is_empty());
}

#[test]
fn log_append_time_rewrites_timestamp_and_crc() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), LogConfig { timestamp_type: TimestampType::LogAppendTime, ..small() }, false).unwrap();
    let before = eddy::log::now_ms();
    let info = log.append(&batch(&[Rec { key: None, value: b"v".to_vec(), timestamp: 5 }])).unwrap();
    assert!(info.log_append_time >= before);
    let r = log.read(0, 1000, u64::MAX).unwrap();
    let b = &split_batches(&r.records)[0].2;
    assert!(crc_ok(b));
    assert_eq!(i16::from_be_bytes([b[21], b[22]]) & 0x08, 0x08, "timestamp type attribute");
    assert_eq!(i64::from_be_bytes(b[35..43].try_into().unwrap()), info.log_append_time);
    assert_eq!(log.offset_for_timestamp(info.log_append_time, u64::MAX).unwrap(), Some((0, info.log_append_time)));
    assert_eq!(log.offset_for_timestamp(info.log_append_time + 1, u64::MAX).unwrap(), None);
}

#[test]
fn rejected_batches_leave_the_log_untouched() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), LogConfig { max_message_bytes: 2000, ..small() }, false).unwrap();
    log.append(&simple_batch(1, 10, 1)).unwrap();
    let size = log.size_bytes();
    let good = simple_batch(2, 10, 1);
    let mut bad_crc = good.to_vec();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    let mut two = good.to_vec();
    two.extend_from_slice(&bad_crc); // a good batch followed by a bad one
    let mut control = good.to_vec();
    control[22] |= 0x20;
    let crc = crc32c::crc32c(&control[21..]);
    control[17..21].copy_from_slice(&crc.to_be_bytes());
    let cases: Vec<(Vec<u8>, i16)> = vec![
        (bad_crc, 2),
        (two, 2),
        (good[..40].to_vec(), 2),
        (vec![], 87),
        (simple_batch(1, 3000, 1).to_vec(), 10),
        (control, 87),
    ];
    for (bytes, code) in cases {
        let err = log.append(&bytes::Bytes::from(bytes)).unwrap_err();
        assert_eq!(err.kafka_code(), code, "{err}");
        assert_eq!(log.log_end_offset(), 1);
        assert_eq!(log.size_bytes(), size);
    }
}

#[test]
fn segment_ms_rolls_by_the_first_batch_timestamp() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), LogConfig { segment_ms: 60_000, segment_bytes: 1 << 30, ..small() }, false).unwrap();
    let now = eddy::log::now_ms();
    log.append(&simple_batch(1, 10, now)).unwrap();
    log.append(&simple_batch(1, 10, now)).unwrap();
    assert_eq!(log.segment_bases().len(), 1);
    let dir2 = scratch_dir();
    let old = Log::open(dir2.path(), LogConfig { segment_ms: 60_000, segment_bytes: 1 << 30, ..small() }, false).unwrap();
    old.append(&simple_batch(1, 10, now - 120_000)).unwrap();
    old.append(&simple_batch(1, 10, now)).unwrap();
    assert_eq!(old.segment_bases(), vec![0, 1]);
}

#[test]
fn manager_locks_marks_clean_shutdown_and_deletes_partitions() {
    let dir = scratch_dir();
    let mgr = LogManager::open(dir.path(), small()).unwrap();
    assert!(LogManager::open(dir.path(), small()).is_err(), "a second opener must be refused");
    for p in 0..3 {
        let log = mgr.get_or_create("orders", p, small()).unwrap();
        log.append(&simple_batch(3, 50, 1)).unwrap();
    }
    mgr.shutdown().unwrap();
    drop(mgr);
    let mgr = LogManager::open(dir.path(), small()).unwrap();
    assert_eq!(mgr.partitions().len(), 3);
    assert!(mgr.partitions().iter().all(|(t, p)| !mgr.get(t, *p).unwrap().was_recovered()), "a clean stop needs no recovery");
    assert!(mgr.delete("orders", 1).unwrap());
    assert!(!dir.path().join("orders-1").exists());
    drop(mgr); // unclean
    let mgr = LogManager::open(dir.path(), small()).unwrap();
    assert_eq!(mgr.partitions(), vec![("orders".to_string(), 0), ("orders".to_string(), 2)]);
    assert!(mgr.get("orders", 0).unwrap().was_recovered(), "an unclean stop rescans the active segment");
    assert_eq!(mgr.get("orders", 2).unwrap().log_end_offset(), 3);
}

#[test]
fn topic_metadata_persists_and_damage_stops_start_up() {
    use eddy::log::TopicMeta;
    let dir = scratch_dir();
    let mgr = LogManager::open(dir.path(), small()).unwrap();
    let meta = TopicMeta { name: "events".into(), id: [9; 16], partitions: 2, configs: [("retention.ms".to_string(), "60000".to_string())].into() };
    mgr.put_topic(meta.clone()).unwrap();
    for p in 0..2 {
        mgr.get_or_create("events", p, small()).unwrap();
    }
    drop(mgr);
    let mgr = LogManager::open(dir.path(), small()).unwrap();
    assert_eq!(mgr.topic("events"), Some(meta));
    assert!(mgr.delete_topic("events").unwrap());
    assert!(mgr.topics().is_empty() && mgr.partitions().is_empty());
    mgr.put_topic(TopicMeta { name: "x".into(), id: [1; 16], partitions: 1, configs: Default::default() }).unwrap();
    drop(mgr);
    let f = dir.path().join("x.topic");
    let text = std::fs::read_to_string(&f).unwrap().replace("partitions=1", "partitions=9");
    std::fs::write(&f, text).unwrap();
    let err = LogManager::open(dir.path(), small()).err().expect("damaged metadata must stop start-up");
    assert!(err.to_string().contains("x.topic") && err.to_string().contains("checksum"), "{err}");
}

#[test]
fn a_multi_batch_append_never_overflows_the_time_index() {
    // Tiny indexes (4 time entries): a 6-batch append must keep a slot rather
    // than lose the entry that records the segment's newest timestamp.
    let dir = scratch_dir();
    let cfg = LogConfig { segment_index_bytes: 48, index_interval_bytes: 100, retention_ms: 7 * 24 * 3600 * 1000, segment_ms: i64::MAX, ..small() };
    let log = Log::open(dir.path(), cfg.clone(), false).unwrap();
    let now = eddy::log::now_ms();
    log.append(&simple_batch(1, 120, 1000)).unwrap();
    let mut set = Vec::new();
    for ts in [1001, 1002, 1003, 1004, now, 1005] {
        set.extend_from_slice(&batch(&[Rec { key: None, value: vec![b'x'; 120], timestamp: ts }]));
    }
    log.append(&bytes::Bytes::from(set)).unwrap();
    log.roll().unwrap();
    log.append(&simple_batch(1, 10, now)).unwrap();
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), cfg, true).unwrap();
    let end = log.log_end_offset();
    log.apply_retention(now).unwrap();
    // Segments holding only old records may go; the one with `now` stays.
    let (found, ts) = log.offset_for_timestamp(now, u64::MAX).unwrap().unwrap();
    assert_eq!(ts, now);
    assert!(found < end - 1, "the record stamped now was deleted by retention");
}

#[test]
fn idempotent_producer_state_survives_close_crash_and_rolls() {
    use crate::log_support::with_producer;
    let dir = scratch_dir();
    let cfg = LogConfig { segment_bytes: 2000, ..small() };
    let log = Log::open(dir.path(), cfg.clone(), false).unwrap();
    let mut seq = 0;
    let mut sent = Vec::new();
    for i in 0..30 {
        let b = with_producer(&simple_batch(3, 40, 1000 + i), 42, 0, seq);
        let info = log.append(&b).unwrap();
        assert!(!info.duplicate);
        sent.push((b, info.base_offset));
        seq += 3;
    }
    assert!(log.segment_bases().len() > 2, "rolled (snapshots written)");
    // A retry of the last batch is answered with its original offset.
    let (last, last_offset) = sent.last().unwrap().clone();
    let end = log.log_end_offset();
    let again = log.append(&last).unwrap();
    assert!(again.duplicate);
    assert_eq!((again.base_offset, log.log_end_offset()), (last_offset, end));
    // Gaps, old epochs and unknown producers are refused.
    assert_eq!(log.append(&with_producer(&simple_batch(1, 5, 1), 42, 0, seq + 1)).unwrap_err().kafka_code(), 45);
    assert!(!log.append(&with_producer(&simple_batch(1, 5, 1), 77, 0, 9)).unwrap().duplicate, "an unknown producer is taken at its word");
    log.append(&with_producer(&simple_batch(1, 5, 1), 42, 1, 0)).unwrap();
    assert_eq!(log.append(&with_producer(&simple_batch(1, 5, 1), 42, 0, seq)).unwrap_err().kafka_code(), 47);
    let retry = with_producer(&simple_batch(2, 5, 1), 42, 1, 1);
    let first = log.append(&retry).unwrap();

    // Clean close and reopen: the state comes from the snapshot.
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), cfg.clone(), true).unwrap();
    let dup = log.append(&retry).unwrap();
    assert!(dup.duplicate && dup.base_offset == first.base_offset, "after a clean restart");
    // Crash (no close) and reopen: rebuilt from snapshot + log.
    let next = with_producer(&simple_batch(1, 5, 1), 42, 1, 3);
    let n = log.append(&next).unwrap();
    drop(log);
    let log = Log::open(dir.path(), cfg.clone(), false).unwrap();
    let dup = log.append(&next).unwrap();
    assert!(dup.duplicate && dup.base_offset == n.base_offset, "after a crash");
    // Without any snapshot the state is rebuilt from the batches alone.
    drop(log);
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "snapshot") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let log = Log::open(dir.path(), cfg, false).unwrap();
    assert!(log.append(&next).unwrap().duplicate, "rebuilt from the segments");
}

#[test]
fn a_delete_cut_short_leaves_no_gap_that_costs_live_segments() {
    let dir = scratch_dir();
    let (bases, end) = {
        let log = Log::open(dir.path(), small(), false).unwrap();
        for _ in 0..30 {
            log.append(&simple_batch(4, 200, 1)).unwrap();
        }
        let bases = log.segment_bases();
        assert!(bases.len() >= 6, "{} segments", bases.len());
        let end = log.log_end_offset();
        log.sync_to(end).unwrap();
        // DeleteRecords up to the fifth segment's base unlinks the first
        // four; the first and the third are copied back afterwards, as if
        // their unlinks had not reached the disk before a crash.
        let keep: Vec<(std::path::PathBuf, Vec<u8>)> = [bases[0], bases[2]]
            .iter()
            .flat_map(|&b| eddy::log::segment::files(dir.path(), b))
            .filter_map(|p| std::fs::read(&p).ok().map(|bytes| (p, bytes)))
            .collect();
        assert_eq!(log.delete_records(bases[4]).unwrap(), bases[4]);
        assert!(!eddy::log::segment::log_path(dir.path(), bases[0]).exists());
        drop(log);
        for (p, bytes) in keep {
            std::fs::write(p, bytes).unwrap();
        }
        (bases, end)
    };
    let log = Log::open(dir.path(), small(), false).unwrap();
    assert_eq!(log.log_start_offset(), bases[4]);
    assert_eq!(log.log_end_offset(), end, "live segments were dropped");
    assert_eq!(log.segment_bases(), bases[4..].to_vec());
    for b in [bases[0], bases[2]] {
        assert!(!eddy::log::segment::log_path(dir.path(), b).exists(), "the leftover segment at {b} is still there");
    }
    let r = log.read(bases[4], 1 << 20, u64::MAX).unwrap();
    assert!(!r.records.is_empty());
}

#[test]
fn a_sync_after_a_roll_syncs_the_sealed_segment_once_more() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), small(), false).unwrap();
    let first = log.append(&simple_batch(4, 600, 1)).unwrap();
    log.sync_to(first.last_offset + 1).unwrap();
    let before = log.fsync_count();
    // Appends until the segment rolls at the flushed offset: the sealed
    // segment's cut (its padding dropped) is synced with the new one.
    while log.segment_bases().len() < 2 {
        log.append(&simple_batch(4, 600, 1)).unwrap();
    }
    assert_eq!(log.segment_bases()[1], first.last_offset + 1, "rolled at the flushed offset");
    let end = log.log_end_offset();
    log.sync_to(end).unwrap();
    assert_eq!(log.fsync_count() - before, 2, "the sealed segment and the new one");
    log.sync_to(end).unwrap();
    let again = log.append(&simple_batch(1, 10, 1)).unwrap();
    log.sync_to(again.last_offset + 1).unwrap();
    assert_eq!(log.fsync_count() - before, 3, "later syncs start at the active segment");
}
