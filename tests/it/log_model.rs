//! Model test: random sequences of log operations agree with a plain
//! in-memory list of batches.

use std::path::Path;

use bytes::Bytes;
use eddy::log::{Log, LogConfig, LogError};
use proptest::prelude::*;

use crate::log_support::{batch, scratch_dir, split_batches, Rec};

#[derive(Clone, Debug)]
enum Op {
    /// Records with these timestamps and value length.
    Append(Vec<i64>, usize),
    /// A read at a fraction of the offset range, with this byte budget.
    Read(f64, usize),
    Roll,
    /// Retention by size: keep about this fraction of the bytes.
    RetainBytes(f64),
    /// Retention by time: everything older than this timestamp expires.
    RetainTime(i64),
    DeleteRecords(f64),
    TimeLookup(i64),
    MaxTimestamp,
    CloseReopen,
    CrashReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec(0i64..1000, 1..6), 1usize..300).prop_map(|(ts, n)| Op::Append(ts, n)),
        4 => (0.0f64..1.1, 1usize..3000).prop_map(|(f, m)| Op::Read(f, m)),
        1 => Just(Op::Roll),
        1 => (0.0f64..1.0).prop_map(Op::RetainBytes),
        1 => (0i64..1000).prop_map(Op::RetainTime),
        1 => (0.0f64..1.0).prop_map(Op::DeleteRecords),
        2 => (0i64..1100).prop_map(Op::TimeLookup),
        1 => Just(Op::MaxTimestamp),
        1 => Just(Op::CloseReopen),
        1 => Just(Op::CrashReopen),
    ]
}

/// One batch as the model knows it.
#[derive(Clone, Debug)]
struct MBatch {
    base: u64,
    last: u64,
    timestamps: Vec<i64>,
    /// The batch bytes after the base offset field.
    rest: Bytes,
}

struct Model {
    batches: Vec<MBatch>,
    start: u64,
    end: u64,
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        segment_index_bytes: 64, // 8 offset entries: index-full rolls happen too
        index_interval_bytes: 300,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, cfg: &LogConfig, clean: bool) -> Log {
    Log::open(dir, cfg.clone(), clean).expect("open")
}

fn check_read(model: &Model, log: &Log, offset: u64, max_bytes: usize) {
    match log.read(offset, max_bytes, u64::MAX) {
        Err(LogError::OffsetOutOfRange { .. }) => {
            assert!(offset < model.start || offset > model.end, "offset {offset} in [{}, {}] reported out of range", model.start, model.end)
        }
        Err(e) => panic!("read {offset}: {e}"),
        Ok(r) => {
            assert!(offset >= model.start && offset <= model.end, "read {offset} outside [{}, {}] succeeded", model.start, model.end);
            assert_eq!(r.log_end_offset, model.end);
            let got = split_batches(&r.records);
            let first = model.batches.iter().position(|b| b.last >= offset);
            match first {
                None => assert!(got.is_empty(), "read at the end returned data"),
                Some(i) => {
                    assert!(!got.is_empty(), "read {offset} returned nothing, model has batch {}", model.batches[i].base);
                    if got.len() > 1 {
                        assert!(r.records.len() <= max_bytes, "{} bytes returned for max {max_bytes}", r.records.len());
                    }
                    for (j, (base, last, bytes)) in got.iter().enumerate() {
                        let m = &model.batches[i + j];
                        assert_eq!((*base, *last), (m.base, m.last));
                        assert_eq!(bytes.slice(8..), m.rest, "content of batch {base}");
                    }
                }
            }
        }
    }
}

fn run(ops: Vec<Op>) {
    let dir = scratch_dir();
    let cfg = config();
    let mut log = open(dir.path(), &cfg, false);
    let mut model = Model { batches: Vec::new(), start: 0, end: 0 };
    let mut seq = 0u64;
    for op in ops {
        match op {
            Op::Append(ts, len) => {
                seq += 1;
                let recs: Vec<Rec> = ts
                    .iter()
                    .map(|&t| Rec { key: Some(seq.to_be_bytes().to_vec()), value: vec![(seq % 251) as u8; len], timestamp: t })
                    .collect();
                let b = batch(&recs);
                let info = log.append(&b).unwrap();
                assert_eq!(info.base_offset, model.end);
                assert_eq!(info.last_offset, model.end + ts.len() as u64 - 1);
                model.batches.push(MBatch { base: info.base_offset, last: info.last_offset, timestamps: ts, rest: b.slice(8..) });
                model.end = info.last_offset + 1;
            }
            Op::Read(f, max) => {
                let offset = (model.start as f64 + f * (model.end - model.start + 1) as f64) as u64;
                check_read(&model, &log, offset, max);
                check_read(&model, &log, model.start.saturating_sub(1), max);
            }
            Op::Roll => log.roll().unwrap(),
            Op::RetainBytes(f) => {
                let size = log.size_bytes();
                let mut c = cfg.clone();
                c.retention_bytes = (size as f64 * f) as i64;
                log.set_config(c);
                log.apply_retention(0).unwrap();
                log.set_config(cfg.clone());
                let lso = log.log_start_offset();
                assert!(lso >= model.start && lso <= model.end);
                assert!(lso == model.start || lso == model.end || model.batches.iter().any(|b| b.base == lso), "log start {lso} is not a batch boundary");
                // Kafka's rule: a segment goes only if the log stays at or
                // above retention.bytes without it.
                if lso > model.start {
                    assert!(log.size_bytes() as f64 >= (size as f64 * f).floor(), "deleted below retention.bytes");
                }
                model.start = lso;
            }
            Op::RetainTime(t) => {
                let mut c = cfg.clone();
                c.retention_ms = 0;
                log.set_config(c);
                // With retention.ms = 0 and now = t, segments whose max timestamp < t expire.
                log.apply_retention(t).unwrap();
                log.set_config(cfg.clone());
                let lso = log.log_start_offset();
                for b in model.batches.iter().filter(|b| b.last < lso) {
                    assert!(b.timestamps.iter().all(|&x| x < t), "batch {} with timestamps {:?} deleted at {t}", b.base, b.timestamps);
                }
                model.start = model.start.max(lso);
            }
            Op::DeleteRecords(f) => {
                let offset = model.start + (f * (model.end - model.start) as f64) as u64;
                let lso = log.delete_records(offset).unwrap();
                assert_eq!(lso, offset.max(model.start));
                model.start = lso;
            }
            Op::TimeLookup(t) => {
                let want = model
                    .batches
                    .iter()
                    .flat_map(|b| b.timestamps.iter().enumerate().map(move |(i, &ts)| (b.base + i as u64, ts)))
                    .find(|&(o, ts)| o >= model.start && ts >= t);
                assert_eq!(log.offset_for_timestamp(t, u64::MAX).unwrap(), want, "lookup {t}");
            }
            Op::MaxTimestamp => {
                let mut want: Option<(u64, i64)> = None;
                for b in &model.batches {
                    for (i, &ts) in b.timestamps.iter().enumerate() {
                        let o = b.base + i as u64;
                        if o >= model.start && want.is_none_or(|(_, w)| ts > w) {
                            want = Some((o, ts));
                        }
                    }
                }
                let got = log.offset_of_max_timestamp(u64::MAX).unwrap();
                assert_eq!(got.map(|g| g.1), want.map(|w| w.1), "max timestamp");
                // The first record holding the max, in a log that may still
                // hold records below the start offset in its first batch.
                assert_eq!(got, want);
            }
            Op::CloseReopen => {
                log.close().unwrap();
                drop(log);
                log = open(dir.path(), &cfg, true);
            }
            Op::CrashReopen => {
                drop(log);
                log = open(dir.path(), &cfg, false);
            }
        }
        assert_eq!(log.log_end_offset(), model.end);
        assert_eq!(log.log_start_offset(), model.start);
        model.batches.retain(|b| b.last >= model.start || b.base >= model.start);
    }
    // Everything still in the model reads back, in order, from the start.
    let mut offset = model.start;
    while offset < model.end {
        check_read(&model, &log, offset, 1 << 20);
        let r = log.read(offset, 1 << 20, u64::MAX).unwrap();
        offset = split_batches(&r.records).last().unwrap().1 + 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn log_agrees_with_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

#[test]
fn model_smoke_many_segments() {
    let mut ops = Vec::new();
    for i in 0..200 {
        ops.push(Op::Append(vec![i, i + 3, i - 1], 50));
        if i % 37 == 0 {
            ops.push(Op::CrashReopen);
        }
        if i % 53 == 0 {
            ops.push(Op::CloseReopen);
        }
    }
    ops.push(Op::TimeLookup(150));
    ops.push(Op::MaxTimestamp);
    ops.push(Op::DeleteRecords(0.5));
    ops.push(Op::RetainBytes(0.3));
    ops.push(Op::Read(0.5, 10));
    run(ops);
}
