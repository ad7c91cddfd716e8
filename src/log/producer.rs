//! Idempotent producer state of one partition: for each producer id, its
//! epoch and the sequence ranges (with offsets) of its last five batches, so
//! a retried batch is recognised and answered with its original offset
//! instead of being written twice, and a gap in sequences is refused.
//!
//! The state is snapshotted next to the segments (`<offset>.snapshot`, see
//! storage-format.md) and rebuilt on open by reading batch headers after the
//! newest snapshot: producer id, epoch and sequences are in the header.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use super::batch::BatchHeader;
use super::checkpoint::sync_dir;
use super::LogError;

/// Batches remembered per producer (Kafka's max.in.flight bound).
pub const REMEMBERED: usize = 5;
/// Producers not heard from for this long are forgotten (Kafka's
/// `producer.id.expiration.ms` default, one day).
pub const EXPIRATION_MS: i64 = 24 * 3600 * 1000;
const MAGIC: &[u8; 4] = b"EDPS";
const VERSION: u16 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub last_timestamp: i64,
    pub batches: VecDeque<BatchRecord>,
}

/// What the state says about an incoming batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent (no producer id), or next in sequence: write it.
    Append,
    /// Already written: answer with this offset range, write nothing.
    Duplicate { base_offset: u64, last_offset: u64 },
}

/// A decoded snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every batch below this offset is reflected.
    pub offset: u64,
    pub state: ProducerState,
    /// Transactions open at `offset`: producer id → first offset.
    pub open_txns: BTreeMap<i64, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerState {
    pub producers: BTreeMap<i64, ProducerEntry>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerState {
    /// Checks a batch against the state (Kafka's rules), without changing it.
    pub fn check(&self, h: &BatchHeader) -> Result<Check, LogError> {
        if h.producer_id < 0 {
            return Ok(Check::Append);
        }
        let first = h.base_sequence;
        let last = if first < 0 { first } else { ((first as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32 };
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // A producer we know nothing about (new, or forgotten after
            // expiry or retention) is taken at its word, as Kafka does.
            return Ok(Check::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch { producer_id: h.producer_id, epoch: h.producer_epoch, current: entry.epoch });
        }
        if h.producer_epoch > entry.epoch {
            // A new epoch starts its sequences over.
            if first != 0 {
                return Err(LogError::OutOfOrderSequence { producer_id: h.producer_id, expected: 0, got: first });
            }
            return Ok(Check::Append);
        }
        if let Some(b) = entry.batches.iter().find(|b| b.first_seq == first && b.last_seq == last) {
            return Ok(Check::Duplicate { base_offset: b.base_offset, last_offset: b.last_offset });
        }
        let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if first != expected {
            return Err(LogError::OutOfOrderSequence { producer_id: h.producer_id, expected, got: first });
        }
        Ok(Check::Append)
    }

    /// Records a batch as written at `base_offset` (header already carries
    /// the assigned offsets' delta).
    pub fn record(&mut self, h: &BatchHeader, base_offset: u64) {
        if h.producer_id < 0 {
            return;
        }
        let first = h.base_sequence;
        let last = if first < 0 { first } else { ((first as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32 };
        let entry = self.producers.entry(h.producer_id).or_insert_with(|| ProducerEntry { epoch: h.producer_epoch, last_timestamp: h.max_timestamp, batches: VecDeque::new() });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
        if h.is_control() || first < 0 {
            return; // transaction markers carry no sequence
        }
        entry.batches.push_back(BatchRecord { first_seq: first, last_seq: last, base_offset, last_offset: base_offset + h.last_offset_delta as u64 });
        while entry.batches.len() > REMEMBERED {
            entry.batches.pop_front();
        }
    }

    /// Forgets producers not heard from since `before` (producer.id.expiration.ms).
    pub fn expire(&mut self, before: i64) -> usize {
        let n = self.producers.len();
        self.producers.retain(|_, e| e.last_timestamp >= before);
        n - self.producers.len()
    }

    /// The snapshot bytes: this state and the transactions open in the log
    /// (producer id → first offset), as of `offset`.
    pub fn encode(&self, offset: u64, open_txns: &BTreeMap<i64, u64>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (pid, e) in &self.producers {
            b.extend_from_slice(&pid.to_be_bytes());
            b.extend_from_slice(&e.epoch.to_be_bytes());
            b.extend_from_slice(&e.last_timestamp.to_be_bytes());
            b.push(e.batches.len() as u8);
            for x in &e.batches {
                b.extend_from_slice(&x.first_seq.to_be_bytes());
                b.extend_from_slice(&x.last_seq.to_be_bytes());
                b.extend_from_slice(&x.base_offset.to_be_bytes());
                b.extend_from_slice(&x.last_offset.to_be_bytes());
            }
        }
        b.extend_from_slice(&(open_txns.len() as u32).to_be_bytes());
        for (pid, first) in open_txns {
            b.extend_from_slice(&pid.to_be_bytes());
            b.extend_from_slice(&first.to_be_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decodes a snapshot: (offset it covers up to, state, open transactions).
    pub fn decode(b: &[u8]) -> Result<Snapshot, &'static str> {
        if b.len() < 22 || &b[..4] != MAGIC {
            return Err("not a producer snapshot");
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body).to_be_bytes() != crc {
            return Err("checksum mismatch");
        }
        if u16::from_be_bytes([b[4], b[5]]) != VERSION {
            return Err("unknown version");
        }
        let mut pos = 6;
        let take = |pos: &mut usize, n: usize| -> Result<&[u8], &'static str> {
            let s = body.get(*pos..*pos + n).ok_or("truncated")?;
            *pos += n;
            Ok(s)
        };
        let offset = u64::from_be_bytes(take(&mut pos, 8)?.try_into().expect("8"));
        let count = u32::from_be_bytes(take(&mut pos, 4)?.try_into().expect("4"));
        let mut state = ProducerState::default();
        for _ in 0..count {
            let pid = i64::from_be_bytes(take(&mut pos, 8)?.try_into().expect("8"));
            let epoch = i16::from_be_bytes(take(&mut pos, 2)?.try_into().expect("2"));
            let last_timestamp = i64::from_be_bytes(take(&mut pos, 8)?.try_into().expect("8"));
            let n = take(&mut pos, 1)?[0];
            let mut batches = VecDeque::new();
            for _ in 0..n {
                batches.push_back(BatchRecord {
                    first_seq: i32::from_be_bytes(take(&mut pos, 4)?.try_into().expect("4")),
                    last_seq: i32::from_be_bytes(take(&mut pos, 4)?.try_into().expect("4")),
                    base_offset: u64::from_be_bytes(take(&mut pos, 8)?.try_into().expect("8")),
                    last_offset: u64::from_be_bytes(take(&mut pos, 8)?.try_into().expect("8")),
                });
            }
            state.producers.insert(pid, ProducerEntry { epoch, last_timestamp, batches });
        }
        let open = u32::from_be_bytes(take(&mut pos, 4)?.try_into().expect("4"));
        let mut open_txns = BTreeMap::new();
        for _ in 0..open {
            let pid = i64::from_be_bytes(take(&mut pos, 8)?.try_into().expect("8"));
            open_txns.insert(pid, u64::from_be_bytes(take(&mut pos, 8)?.try_into().expect("8")));
        }
        if pos != body.len() {
            return Err("trailing bytes");
        }
        Ok(Snapshot { offset, state, open_txns })
    }
}

pub fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Writes a snapshot of the state as of `offset` (tmp → fsync → rename →
/// fsync dir) and removes older snapshots.
pub fn write_snapshot(dir: &Path, offset: u64, state: &ProducerState, open_txns: &BTreeMap<i64, u64>) -> std::io::Result<()> {
    super::checkpoint::replace_file(&snapshot_path(dir, offset), &state.encode(offset, open_txns))?;
    for (o, p) in list_snapshots(dir)? {
        if o < offset {
            fs::remove_file(p)?;
        }
    }
    sync_dir(dir)
}

/// Snapshot files in `dir`, oldest first.
pub fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(o) = stem.parse() {
                    out.push((o, e.path()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest readable snapshot at or below `max_offset`; damaged or newer
/// ones are deleted (they cannot be trusted for this log).
pub fn load_snapshot(dir: &Path, max_offset: u64) -> std::io::Result<Option<Snapshot>> {
    let mut found = None;
    for (o, p) in list_snapshots(dir)?.into_iter().rev() {
        if found.is_some() {
            break;
        }
        if o > max_offset {
            fs::remove_file(&p)?;
            continue;
        }
        match ProducerState::decode(&fs::read(&p)?) {
            Ok(s) if s.offset == o => found = Some(s),
            _ => {
                tracing::warn!(snapshot = %p.display(), "producer snapshot is damaged; rebuilding from the log");
                fs::remove_file(&p)?;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, n: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 1,
            max_timestamp: 1,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    #[test]
    fn sequences_duplicates_epochs() {
        let mut s = ProducerState::default();
        assert_eq!(s.check(&header(7, 0, 5, 1)).unwrap(), Check::Append, "an unknown producer is taken at its word");
        assert_eq!(s.check(&header(7, 0, 0, 3)).unwrap(), Check::Append);
        s.record(&header(7, 0, 0, 3), 100);
        assert_eq!(s.check(&header(7, 0, 0, 3)).unwrap(), Check::Duplicate { base_offset: 100, last_offset: 102 });
        assert!(matches!(s.check(&header(7, 0, 4, 1)), Err(LogError::OutOfOrderSequence { expected: 3, got: 4, .. })));
        assert_eq!(s.check(&header(7, 0, 3, 2)).unwrap(), Check::Append);
        s.record(&header(7, 0, 3, 2), 103);
        for i in 0..5 {
            s.record(&header(7, 0, 5 + i, 1), 105 + i as u64);
        }
        assert_eq!(s.check(&header(7, 0, 0, 3)).unwrap_err().kafka_code(), 45, "only the last five batches are remembered");
        assert_eq!(s.check(&header(7, 0, 10, 1)).unwrap(), Check::Append);
        assert!(matches!(s.check(&header(7, 1, 3, 1)), Err(LogError::OutOfOrderSequence { expected: 0, .. })), "a new epoch starts at 0");
        s.record(&header(7, 1, 0, 1), 200);
        assert_eq!(s.check(&header(7, 0, 11, 1)).unwrap_err().kafka_code(), 47, "an old epoch is fenced");
        assert_eq!(s.check(&header(-1, -1, -1, 4)).unwrap(), Check::Append, "not idempotent");
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut s = ProducerState::default();
        s.record(&header(1, 0, 0, 2), 0);
        s.record(&header(2, 3, 0, 1), 2);
        let open: BTreeMap<i64, u64> = [(2, 1)].into();
        let b = s.encode(3, &open);
        assert_eq!(ProducerState::decode(&b), Ok(Snapshot { offset: 3, state: s.clone(), open_txns: open.clone() }));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(ProducerState::decode(&c).is_err(), "flip at {i}");
        }
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), 3, &s, &open).unwrap();
        write_snapshot(dir.path(), 9, &s, &open).unwrap();
        assert_eq!(list_snapshots(dir.path()).unwrap().len(), 1, "older snapshots are removed");
        assert_eq!(load_snapshot(dir.path(), 8).unwrap(), None, "a snapshot past the log end is dropped");
        assert!(list_snapshots(dir.path()).unwrap().is_empty());
    }
}
