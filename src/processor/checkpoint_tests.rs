//! Base + delta checkpoints: they rebuild the engine's state exactly, a
//! torn tail (or a bad record anywhere) rolls back to the records before
//! it, a failed append is undone, damage is reported, a stale delta is never applied
//! to a newer base, and a few changes in a large state make a small record.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::processor::aggregate::Input;
use crate::processor::config::ProcessorSpec;
use crate::processor::engine::Engine;
use crate::processor::shards::Engines;

pub(crate) fn spec(window: &str, emit: &str, retention: &str) -> Arc<ProcessorSpec> {
    let text = format!(
        r#"
        [source]
        topics = ["in"]
        [key]
        fields = ["k"]
        [time]
        field = "t"
        [window]
        {window}
        grace = "20ms"
        retention = "{retention}"
        [aggregates]
        n = {{ fn = "count" }}
        total = {{ fn = "sum", field = "v" }}
        last = {{ fn = "last", field = "v" }}
        [output]
        topic = "out"
        emit = "{emit}"
        "#
    );
    Arc::new(crate::processor::config::parse("ckpt", &toml::from_str::<toml::Value>(&text).unwrap()).unwrap())
}

pub(crate) fn inputs(v: i64) -> Vec<Input> {
    vec![Input::None, Input::Value(json!(v)), Input::Value(json!(v))]
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The sets of a state in one order (engines on several threads join
/// theirs in thread order).
fn normalized(mut s: EngineState) -> EngineState {
    s.windows.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    s.records.sort_by(|a, b| a.0.cmp(&b.0));
    s.dirty.sort();
    s.superseded.sort();
    s
}

fn txn(n: u64) -> Option<TxnCheckpoint> {
    Some(TxnCheckpoint { producer_id: 7, epoch: 0, committing: vec![(false, 0, n)] })
}

/// Checkpoints as `Task::commit` does: a delta record if it fits, else a
/// new base. Returns whether it was a delta.
fn commit(w: &mut Writer, engine: &mut Engine, n: u64) -> bool {
    let sources = vec![("in".to_string(), 0, n, Some(n as i64))];
    if w.has_base() && w.append(&Delta { sources: sources.clone(), engine: engine.changes(), txn: txn(n) }).unwrap() {
        return true;
    }
    w.write_base(&Checkpoint { fingerprint: "f".into(), sources, engine: engine.snapshot(), txn: txn(n) }).unwrap();
    false
}

fn usable(path: &Path) -> Checkpoint {
    match load(path).0 {
        Loaded::Usable(c) => c,
        other => panic!("not usable: {}", kind(&other)),
    }
}

/// What was loaded, briefly (a state's dump would drown the message).
fn kind(l: &Loaded) -> String {
    match l {
        Loaded::None => "none".into(),
        Loaded::Usable(c) => format!("usable, positions {:?}", c.sources),
        Loaded::Damaged { reason, txn } => format!("damaged ({reason}), txn {txn:?}"),
    }
}

/// Feeds `n` records of a random, partly out-of-order stream over `keys`
/// keys, advancing the watermark (which finalizes and expires windows) and
/// flushing (emit = changes) now and then.
fn feed(engine: &mut Engine, rng: &mut Rng, clock: &mut i64, n: usize, keys: u64) {
    let mut out = Vec::new();
    for _ in 0..n {
        *clock += rng.below(7) as i64;
        let t = *clock - rng.below(40) as i64;
        engine.process(json!(format!("k{}", rng.below(keys))).to_string(), t, inputs(rng.below(100) as i64));
        if rng.below(10) == 0 {
            engine.advance(*clock - 10, &mut out);
        }
        if rng.below(25) == 0 {
            engine.flush(&mut out);
        }
    }
}

const WINDOWS: [&str; 4] = [
    r#"type = "tumbling"
        size = "50ms""#,
    r#"type = "hopping"
        size = "60ms"
        advance = "20ms""#,
    r#"type = "session"
        gap = "15ms""#,
    r#"type = "sliding"
        advance = "30ms""#,
];

#[test]
fn a_base_and_its_delta_records_rebuild_the_engine_state() {
    for window in WINDOWS {
        for emit in ["changes", "final"] {
            // Short retention: windows expire, so records drop them.
            let spec = spec(window, emit, "150ms");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p.checkpoint");
            let mut w = Writer::new(path.clone(), 0);
            let mut engine = Engine::new(Arc::clone(&spec));
            let (mut rng, mut clock) = (Rng(0x9e37_79b9_7f4a_7c15), 1_000_000);
            feed(&mut engine, &mut rng, &mut clock, 400, 30);
            let (mut deltas, mut bases) = (0, 0);
            for round in 0..60u64 {
                // Mostly a few records, now and then many: both deltas and
                // rollovers to a new base happen.
                let n = if round % 13 == 12 { 600 } else { 1 + rng.below(15) as usize };
                feed(&mut engine, &mut rng, &mut clock, n, 30);
                if commit(&mut w, &mut engine, round) {
                    deltas += 1;
                } else {
                    bases += 1;
                }
                let c = usable(&path);
                assert_eq!(c.engine, engine.state(), "{window} / {emit}, round {round}");
                assert_eq!((c.sources[0].2, c.txn.clone()), (round, txn(round)));
            }
            assert!(deltas >= 30 && bases >= 2, "{window} / {emit}: {deltas} deltas, {bases} bases");
            // Restored, the engine carries on as the original.
            let mut restored = Engine::from_state(Arc::clone(&spec), usable(&path).engine);
            let (mut r2, mut c2) = (Rng(5), clock);
            feed(&mut engine, &mut Rng(5), &mut clock, 300, 30);
            feed(&mut restored, &mut r2, &mut c2, 300, 30);
            assert_eq!(restored.state(), engine.state(), "{window} / {emit} after a restore");
        }
    }
}

#[test]
fn engines_on_several_threads_checkpoint_their_joined_changes() {
    for window in WINDOWS {
        let spec = spec(window, "changes", "150ms");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.checkpoint");
        let mut w = Writer::new(path.clone(), 0);
        let mut engines: Engines<()> = Engines::new(&spec, None, 3);
        let mut rng = Rng(77);
        let mut clock = 1_000_000i64;
        let (mut out, mut late) = (Vec::new(), Vec::new());
        let mut deltas = 0;
        for round in 0..30u64 {
            for _ in 0..(1 + rng.below(40)) {
                clock += rng.below(7) as i64;
                let t = clock - rng.below(40) as i64;
                engines.process(json!(format!("k{}", rng.below(25))).to_string(), t, inputs(rng.below(100) as i64), Some(clock - 30), ());
            }
            if round % 4 == 0 {
                engines.flush();
            }
            engines.collect(&mut out, &mut late).unwrap();
            let sources = vec![("in".to_string(), 0, round, None)];
            let d = Delta { sources: sources.clone(), engine: engines.changes().unwrap(), txn: None };
            if w.has_base() && w.append(&d).unwrap() {
                deltas += 1;
            } else {
                w.write_base(&Checkpoint { fingerprint: "f".into(), sources, engine: engines.snapshot().unwrap(), txn: None }).unwrap();
            }
            // Nothing changed since the checkpoint: a snapshot now is its state.
            assert_eq!(normalized(usable(&path).engine), normalized(engines.snapshot().unwrap()), "{window}, round {round}");
        }
        assert!(deltas >= 10, "{window}: {deltas} deltas");
        // A restart with another thread count splits the loaded state anew.
        let mut two: Engines<()> = Engines::new(&spec, Some(usable(&path).engine), 2);
        assert_eq!(normalized(two.snapshot().unwrap()), normalized(engines.snapshot().unwrap()));
    }
}

/// A base and three delta records; the delta file's length and the engine
/// state after each checkpoint.
fn three_deltas(path: &Path) -> (Vec<u64>, Vec<EngineState>) {
    let spec = spec(WINDOWS[1], "changes", "1000d");
    let mut w = Writer::new(path.to_path_buf(), 0);
    let mut engine = Engine::new(spec);
    let (mut rng, mut clock) = (Rng(3), 1_000_000);
    feed(&mut engine, &mut rng, &mut clock, 500, 40);
    assert!(!commit(&mut w, &mut engine, 0));
    let mut lens = vec![std::fs::metadata(delta_path(path)).unwrap().len()];
    let mut states = vec![engine.state()];
    for round in 1..=3 {
        feed(&mut engine, &mut rng, &mut clock, 5, 40);
        assert!(commit(&mut w, &mut engine, round), "a delta");
        lens.push(std::fs::metadata(delta_path(path)).unwrap().len());
        states.push(engine.state());
    }
    (lens, states)
}

fn set_len(path: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

#[test]
fn a_torn_tail_record_is_ignored_and_everything_before_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.checkpoint");
    let (lens, states) = three_deltas(&path);
    let delta = delta_path(&path);
    let whole = std::fs::read(&delta).unwrap();
    // Cut anywhere inside the last record (its frame header included).
    for cut in (lens[2]..lens[3]).filter(|c| c - lens[2] < 12 || c % 23 == 0) {
        std::fs::write(&delta, &whole[..cut as usize]).unwrap();
        let c = usable(&path);
        assert_eq!((c.engine, c.txn, c.sources[0].2), (states[2].clone(), txn(2), 2), "cut at {cut}");
    }
    // Cut inside the second: the first record stands.
    std::fs::write(&delta, &whole[..lens[1] as usize + 5]).unwrap();
    assert_eq!(usable(&path).engine, states[1]);
    // The file extended with zeros by a crash (the length reached the disk,
    // the data did not).
    let mut zeros = whole.clone();
    zeros.resize(whole.len() + 300, 0);
    std::fs::write(&delta, &zeros).unwrap();
    assert_eq!(usable(&path).engine, states[3]);
    // The last record's frame complete, its body damaged: torn, ignored.
    let mut bad = whole.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x40;
    std::fs::write(&delta, &bad).unwrap();
    assert_eq!(usable(&path).engine, states[2]);
    set_len(&delta, lens[0]);
    assert_eq!(usable(&path).engine, states[0], "the base alone");
}

#[test]
fn a_damaged_middle_record_rolls_the_checkpoint_back_to_the_record_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.checkpoint");
    let (lens, states) = three_deltas(&path);
    let delta = delta_path(&path);
    let mut b = std::fs::read(&delta).unwrap();
    // A byte inside the second record's body: taken for a torn append, so
    // the first record is the checkpoint (positions, state and txn alike).
    b[lens[1] as usize + FRAME_HEADER + 10] ^= 0x01;
    std::fs::write(&delta, &b).unwrap();
    let c = usable(&path);
    assert_eq!((c.engine, c.txn, c.sources[0].2), (states[1].clone(), txn(1), 1));
    // A damaged base: no record readable at all.
    let mut base = std::fs::read(&path).unwrap();
    base[20] ^= 0x01;
    std::fs::write(&path, &base).unwrap();
    assert!(matches!(load(&path).0, Loaded::Damaged { txn: None, .. }));
}

#[test]
fn an_append_whose_start_never_reached_the_disk_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.checkpoint");
    let (lens, states) = three_deltas(&path);
    let delta = delta_path(&path);
    let whole = std::fs::read(&delta).unwrap();
    // The last record's tail written, its first page (here: its first 8,
    // 20 or all but 3 bytes, frame header included) not.
    for lost in [8, 20, (lens[3] - lens[2] - 3) as usize] {
        let mut b = whole.clone();
        b[lens[2] as usize..lens[2] as usize + lost].fill(0);
        std::fs::write(&delta, &b).unwrap();
        let c = usable(&path);
        assert_eq!((c.engine, c.txn, c.sources[0].2), (states[2].clone(), txn(2), 2), "{lost} bytes lost");
    }
}

#[test]
fn a_delta_file_that_cannot_be_read_leaves_the_bases_txn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.checkpoint");
    three_deltas(&path);
    let delta = delta_path(&path);
    std::fs::remove_file(&delta).unwrap();
    // Reading a directory fails (EISDIR).
    std::fs::create_dir(&delta).unwrap();
    match load(&path) {
        (Loaded::Damaged { reason, txn: t }, g) => {
            assert!(reason.starts_with("delta file"), "{reason}");
            assert_eq!((t, g), (Some(txn(0)), 1));
        }
        (other, _) => panic!("{}", kind(&other)),
    }
}

/// A base and a delta record, then a third checkpoint's append with the
/// next `fails` fsyncs failing. Returns the writer, the engine, the engine
/// state at the base and at the delta record, and the delta file's length
/// before the failed append.
fn a_failed_append(path: &Path, fails: u32) -> (Writer, Engine, [EngineState; 2], u64) {
    let mut w = Writer::new(path.to_path_buf(), 0);
    let mut engine = Engine::new(spec(WINDOWS[1], "changes", "1000d"));
    let (mut rng, mut clock) = (Rng(3), 1_000_000);
    feed(&mut engine, &mut rng, &mut clock, 500, 40);
    assert!(!commit(&mut w, &mut engine, 0));
    let base = engine.state();
    feed(&mut engine, &mut rng, &mut clock, 5, 40);
    assert!(commit(&mut w, &mut engine, 1));
    let (states, len) = ([base, engine.state()], std::fs::metadata(delta_path(path)).unwrap().len());
    feed(&mut engine, &mut rng, &mut clock, 5, 40);
    w.fail_syncs = fails;
    let d = Delta { sources: vec![("in".to_string(), 0, 2, None)], engine: engine.changes(), txn: txn(2) };
    assert!(w.append(&d).is_err());
    (w, engine, states, len)
}

#[test]
fn a_failed_append_leaves_the_delta_file_at_its_previous_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.checkpoint");
    // The record is written, its fsync fails: it is cut off again.
    let (mut w, mut engine, [_, state], len) = a_failed_append(&path, 1);
    assert_eq!(std::fs::metadata(delta_path(&path)).unwrap().len(), len);
    let c = usable(&path);
    assert_eq!((c.engine, c.txn), (state, txn(1)));
    // The next checkpoint is a new base.
    assert!(!w.has_base());
    assert!(!commit(&mut w, &mut engine, 3));
    assert_eq!(usable(&path).engine, engine.state());
}

#[test]
fn when_a_failed_append_cannot_be_cut_off_the_delta_file_goes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.checkpoint");
    // Both the record's fsync and the one after cutting it off fail.
    let (_, _, [base, _], _) = a_failed_append(&path, 2);
    assert!(!delta_path(&path).exists());
    let c = usable(&path);
    assert_eq!((c.engine, c.txn), (base, txn(0)), "the base alone");
}

#[test]
fn a_record_that_is_sound_but_unreadable_leaves_the_newest_txn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.checkpoint");
    three_deltas(&path);
    // A CRC-sound record with a txn but no engine part (as from a newer
    // format): the state is unusable, the txn is read from it.
    let body = serde_json::to_vec(&json!({"txn": txn(9)})).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&frame_crc(&frame[..4], &body).to_be_bytes());
    frame.extend_from_slice(&body);
    let mut f = std::fs::OpenOptions::new().append(true).open(delta_path(&path)).unwrap();
    f.write_all(&frame).unwrap();
    match load(&path).0 {
        Loaded::Damaged { txn: t, .. } => assert_eq!(t, Some(txn(9))),
        other => panic!("{}", kind(&other)),
    }
}

#[test]
fn a_crash_at_any_point_of_a_rollover_leaves_a_correct_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.checkpoint");
    let (_, states) = three_deltas(&path);
    let (_, generation) = load(&path);
    assert_eq!(generation, 1);
    let delta = delta_path(&path);
    let new = Checkpoint { fingerprint: "f".into(), sources: vec![("in".into(), 0, 99, None)], engine: EngineState { seq: 12_345, ..Default::default() }, txn: txn(99) };
    let w = Writer::new(path.clone(), generation);
    // Crash before the new base's rename: its `.tmp` is never read.
    std::fs::write(crate::log::segment::with_suffix(path.clone(), ".tmp"), b"EDPC half a base").unwrap();
    assert_eq!(usable(&path).engine, states[3]);
    // Crash after the rename, before the new delta file: the old delta (of
    // generation 1) is stale, not applied to the base of generation 2.
    w.write_base_file(generation + 1, &new).unwrap();
    let (loaded, g) = load(&path);
    let Loaded::Usable(c) = loaded else { panic!("{}", kind(&loaded)) };
    assert_eq!((c.engine.seq, c.sources[0].2, c.txn, g), (12_345, 99, txn(99), 2));
    // The run after that crash takes the next generation for its base.
    let mut after = Writer::new(path.clone(), g);
    after.write_base(&new).unwrap();
    assert_eq!(load(&path).1, 3);
    assert_eq!(usable(&path).engine.seq, 12_345);
    // A delta newer than its base cannot come from any crash: damage.
    std::fs::write(&delta, delta_header(4)).unwrap();
    assert!(matches!(load(&path), (Loaded::Damaged { txn: Some(_), .. }, 4)));
    // No base: no checkpoint, but the delta file's generation counts.
    let base = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(load(&path), (Loaded::None, 4)));
    std::fs::write(&path, base).unwrap();
    // No delta file at all: the base alone.
    std::fs::remove_file(&delta).unwrap();
    assert_eq!(usable(&path).engine.seq, 12_345);
}

#[test]
fn a_version_1_checkpoint_loads_as_generation_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.checkpoint");
    let c = Checkpoint { fingerprint: "f".into(), sources: vec![], engine: EngineState { seq: 3, ..Default::default() }, txn: None };
    let mut b = b"EDPC".to_vec();
    b.extend_from_slice(&1u16.to_be_bytes());
    serde_json::to_writer(&mut b, &c).unwrap();
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    std::fs::write(&path, &b).unwrap();
    let (loaded, g) = load(&path);
    let Loaded::Usable(c) = loaded else { panic!("{}", kind(&loaded)) };
    assert_eq!((c.engine.seq, g), (3, 0));
    // A delta file of generation 0 beside it is ignored: only a base
    // written by version 2 has deltas.
    let body = serde_json::to_vec(&Delta { sources: vec![], engine: EngineDelta { changed: EngineState { seq: 4, ..Default::default() }, ..Default::default() }, txn: None }).unwrap();
    let mut d = delta_header(0);
    d.extend_from_slice(&(body.len() as u32).to_be_bytes());
    d.extend_from_slice(&frame_crc(&d[DELTA_HEADER..], &body).to_be_bytes());
    d.extend_from_slice(&body);
    std::fs::write(delta_path(&path), &d).unwrap();
    let (loaded, g) = load(&path);
    let Loaded::Usable(c) = loaded else { panic!("{}", kind(&loaded)) };
    assert_eq!((c.engine.seq, g), (3, 0));
}

#[test]
fn changing_a_few_windows_of_100_000_writes_a_small_delta() {
    let spec = spec(WINDOWS[0], "final", "1000d");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.checkpoint");
    let mut engine = Engine::new(Arc::clone(&spec));
    for k in 0..100_000 {
        engine.process(json!(format!("user-{k}")).to_string(), 1_000_000 + (k % 40), inputs(k));
    }
    assert_eq!(engine.window_count(), 100_000);
    let mut w = Writer::new(path.clone(), 0);
    assert!(!commit(&mut w, &mut engine, 1), "the first checkpoint is a base");
    let base = std::fs::metadata(&path).unwrap().len();
    let before = std::fs::metadata(delta_path(&path)).unwrap().len();
    for k in [5, 50, 500, 5_000, 50_000] {
        engine.process(json!(format!("user-{k}")).to_string(), 1_000_010, inputs(1));
    }
    let changes = engine.changes();
    assert_eq!((changes.changed.windows.len(), changes.removed.len()), (5, 0));
    assert!(w.append(&Delta { sources: vec![], engine: changes, txn: None }).unwrap());
    let written = std::fs::metadata(delta_path(&path)).unwrap().len() - before;
    assert!(base > 5_000_000 && written < 2_000, "base {base} bytes, delta record {written} bytes");
    assert_eq!(usable(&path).engine, engine.state());
}
