//! The per-segment aborted-transaction index (`.txnindex`): written when an
//! abort marker is appended, read on open instead of walking the log, and
//! rebuilt when it is missing or damaged.

use std::path::Path;

use bytes::Bytes;
use eddy::log::records::{build_batch, NewRecord};
use eddy::log::txn::AbortedTxn;
use eddy::log::{Log, LogConfig};

use crate::log_support::scratch_dir;

fn config() -> LogConfig {
    LogConfig { segment_bytes: 4096, retention_ms: -1, ..LogConfig::default() }
}

/// A transactional batch of `n` records from producer `pid`.
fn txn_batch(pid: i64, seq: i32, n: usize) -> Bytes {
    // Current timestamps: markers carry the wall clock, and a segment rolls
    // when event time jumps by more than segment.ms.
    let now = eddy::log::now_ms();
    let recs: Vec<NewRecord> = (0..n).map(|_| NewRecord { key: Some(b"k"), value: Some(b"v"), timestamp: now, headers: &[] }).collect();
    eddy::log::records::with_producer(&build_batch(&recs), pid, 0, seq, true)
}

/// The entries of a `.txnindex` file, parsed from the bytes as
/// storage-format.md §11c lays them out: (producer id, first, last, LSO).
fn entries(path: &Path) -> Vec<(i64, u64, u64, u64)> {
    let b = std::fs::read(path).unwrap_or_default();
    assert_eq!(b.len() % 34, 0);
    b.chunks(34)
        .map(|e| {
            assert_eq!(&e[0..2], &[0, 0], "version 0");
            let at = |i: usize| u64::from_be_bytes(e[i..i + 8].try_into().unwrap());
            (at(2) as i64, at(10), at(18), at(26))
        })
        .collect()
}

fn txn_path(dir: &Path, base: u64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.txnindex"))
}

#[test]
fn aborts_are_indexed_per_segment_and_read_back_on_open() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), config(), true).unwrap();
    log.append(&txn_batch(1, 0, 2)).unwrap(); // 0-1
    log.append_marker(1, 0, false, 0).unwrap(); // 2: abort
    log.append(&txn_batch(2, 0, 1)).unwrap(); // 3
    log.append_marker(2, 0, true, 0).unwrap(); // 4: commit
    log.append(&txn_batch(3, 0, 1)).unwrap(); // 5: stays open across the roll
    log.roll().unwrap();
    let second = log.log_end_offset();
    log.append(&txn_batch(4, 0, 1)).unwrap(); // 6
    log.append_marker(3, 0, false, 0).unwrap(); // 7: abort of the transaction from 5
    log.append_marker(4, 0, false, 0).unwrap(); // 8: abort
    let expected = vec![
        AbortedTxn { producer_id: 1, first_offset: 0, last_offset: 2 },
        AbortedTxn { producer_id: 3, first_offset: 5, last_offset: 7 },
        AbortedTxn { producer_id: 4, first_offset: 6, last_offset: 8 },
    ];
    assert_eq!(log.aborted_transactions(0, 100), expected);
    assert_eq!(entries(&txn_path(dir.path(), 0)), vec![(1, 0, 2, 3)]);
    assert_eq!(entries(&txn_path(dir.path(), second)), vec![(3, 5, 7, 6), (4, 6, 8, 9)]);
    log.close().unwrap();
    drop(log);

    // Read back from the indexes: a fake entry planted in the sealed first
    // segment's index shows up, which a walk of the log would not produce.
    let mut planted = std::fs::read(txn_path(dir.path(), 0)).unwrap();
    let mut fake = planted[..34].to_vec();
    fake[2..10].copy_from_slice(&99i64.to_be_bytes());
    planted.extend_from_slice(&fake);
    std::fs::write(txn_path(dir.path(), 0), &planted).unwrap();
    let log = Log::open(dir.path(), config(), true).unwrap();
    let got = log.aborted_transactions(0, 100);
    assert!(got.iter().any(|a| a.producer_id == 99), "the index is what open reads: {got:?}");
    log.close().unwrap();
    drop(log);

    // A damaged index: every index is rebuilt from the log.
    planted.truncate(planted.len() - 1);
    std::fs::write(txn_path(dir.path(), 0), &planted).unwrap();
    let log = Log::open(dir.path(), config(), true).unwrap();
    assert_eq!(log.aborted_transactions(0, 100), expected);
    assert_eq!(entries(&txn_path(dir.path(), 0)), vec![(1, 0, 2, 3)], "rewritten");

    // After a crash, an entry appended since the last snapshot (at the
    // previous close) and lost with the page cache is found again.
    log.append(&txn_batch(5, 0, 1)).unwrap(); // 9
    log.append_marker(5, 0, false, 0).unwrap(); // 10
    drop(log);
    let active = txn_path(dir.path(), second);
    let kept = std::fs::read(&active).unwrap();
    std::fs::write(&active, &kept[..kept.len() - 34]).unwrap();
    let log = Log::open(dir.path(), config(), false).unwrap();
    let mut all = expected.clone();
    all.push(AbortedTxn { producer_id: 5, first_offset: 9, last_offset: 10 });
    assert_eq!(log.aborted_transactions(0, 100), all);
    assert_eq!(entries(&txn_path(dir.path(), second)), vec![(3, 5, 7, 6), (4, 6, 8, 9), (5, 9, 10, 11)]);
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
}

#[test]
fn an_open_transaction_survives_a_restart_through_the_snapshot() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), config(), true).unwrap();
    log.append(&build_batch(&[NewRecord { key: Some(b"k"), value: Some(b"plain"), timestamp: eddy::log::now_ms(), headers: &[] }])).unwrap();
    log.append(&txn_batch(7, 0, 3)).unwrap(); // 1-3, open
    log.roll().unwrap();
    log.append(&txn_batch(8, 0, 1)).unwrap(); // 4, open
    assert_eq!(log.last_stable_offset(), 1);
    for clean in [true, false] {
        if clean {
            log.close().unwrap();
        }
    }
    drop(log);
    for clean in [true, false] {
        let log = Log::open(dir.path(), config(), clean).unwrap();
        assert_eq!(log.last_stable_offset(), 1, "clean = {clean}");
        let open: Vec<(i64, i64)> = log.producers().iter().map(|p| (p.0, p.4)).collect();
        assert_eq!(open, vec![(7, 1), (8, 4)], "clean = {clean}");
        drop(log);
    }
    let log = Log::open(dir.path(), config(), true).unwrap();
    log.append_marker(7, 0, false, 0).unwrap();
    log.append_marker(8, 0, true, 0).unwrap();
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
    assert_eq!(log.aborted_transactions(0, 100), vec![AbortedTxn { producer_id: 7, first_offset: 1, last_offset: 5 }]);
}
