//! The transaction coordinator: `transactional.id` → producer id and epoch,
//! the partitions and group offsets of the open transaction, and the
//! two-phase end (prepare, write commit/abort markers to every partition,
//! complete). State is kept in `__transaction_state` (layout in
//! storage-format.md) and restored on start; a transaction left prepared by
//! a crash is completed then, and open ones still time out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;

use crate::group::store::{get_str, put_str, Committed};
use crate::log::records::{self, NewRecord};
use crate::log::{now_ms, Log, LogError};
use crate::protocol::code;

pub const TOPIC: &str = "__transaction_state";

/// Kafka's TransactionState numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
}

impl Status {
    fn from_i8(x: i8) -> Option<Status> {
        Some(match x {
            0 => Status::Empty,
            1 => Status::Ongoing,
            2 => Status::PrepareCommit,
            3 => Status::PrepareAbort,
            4 => Status::CompleteCommit,
            5 => Status::CompleteAbort,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Empty => "Empty",
            Status::Ongoing => "Ongoing",
            Status::PrepareCommit => "PrepareCommit",
            Status::PrepareAbort => "PrepareAbort",
            Status::CompleteCommit => "CompleteCommit",
            Status::CompleteAbort => "CompleteAbort",
        }
    }
}

/// A pending offset commit: (group, topic, partition, value).
pub type PendingOffset = (String, String, i32, Committed);

#[derive(Clone, Debug, PartialEq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub status: Status,
    pub partitions: BTreeSet<(String, i32)>,
    pub pending_offsets: Vec<PendingOffset>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// What ending a transaction touches outside the coordinator: partition
/// logs (for markers) and the group coordinator (for offsets).
pub struct Effects<'a> {
    pub log: &'a dyn Fn(&str, i32) -> Option<Arc<Log>>,
    pub wake: &'a dyn Fn(&str, i32),
    pub commit_offsets: &'a dyn Fn(&[PendingOffset]) -> Result<(), LogError>,
}

pub struct TxnCoordinator {
    log: Arc<Log>,
    txns: Mutex<HashMap<String, TxnMeta>>,
    /// `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
}

fn get<T>(b: &mut Bytes, n: usize, f: impl FnOnce(&mut Bytes) -> T) -> Option<T> {
    (b.remaining() >= n).then(|| f(b))
}

/// Key: i16 version 0, string transactional id (Kafka's TransactionLogKey).
pub fn key(id: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_str(&mut b, id);
    b.freeze()
}

/// Value: Kafka's TransactionLogValue v0 (producer id, epoch, timeout,
/// status, partitions by topic, last update and start timestamps), then
/// Eddy's pending group offsets.
pub fn value(m: &TxnMeta) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.status as i8);
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &m.partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    b.put_i32(by_topic.len() as i32);
    for (t, ps) in by_topic {
        put_str(&mut b, t);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(p);
        }
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    b.put_i32(m.pending_offsets.len() as i32);
    for (g, t, p, c) in &m.pending_offsets {
        put_str(&mut b, g);
        put_str(&mut b, t);
        b.put_i32(*p);
        b.put_i64(c.offset);
        b.put_i32(c.leader_epoch);
        put_str(&mut b, &c.metadata);
    }
    b.freeze()
}

pub fn decode(k: &Bytes, v: Option<&Bytes>) -> Option<(String, Option<TxnMeta>)> {
    let mut k = k.clone();
    if get(&mut k, 2, |b| b.get_i16())? != 0 {
        return None;
    }
    let id = get_str(&mut k)?;
    let Some(v) = v else { return Some((id, None)) };
    let mut v = v.clone();
    if get(&mut v, 2, |b| b.get_i16())? != 0 {
        return None;
    }
    let producer_id = get(&mut v, 8, |b| b.get_i64())?;
    let epoch = get(&mut v, 2, |b| b.get_i16())?;
    let timeout_ms = get(&mut v, 4, |b| b.get_i32())?;
    let status = Status::from_i8(get(&mut v, 1, |b| b.get_i8())?)?;
    let mut partitions = BTreeSet::new();
    for _ in 0..get(&mut v, 4, |b| b.get_i32())?.max(0) {
        let t = get_str(&mut v)?;
        for _ in 0..get(&mut v, 4, |b| b.get_i32())?.max(0) {
            partitions.insert((t.clone(), get(&mut v, 4, |b| b.get_i32())?));
        }
    }
    let last_update_ms = get(&mut v, 8, |b| b.get_i64())?;
    let start_ms = get(&mut v, 8, |b| b.get_i64())?;
    let mut pending_offsets = Vec::new();
    for _ in 0..get(&mut v, 4, |b| b.get_i32())?.max(0) {
        let g = get_str(&mut v)?;
        let t = get_str(&mut v)?;
        let p = get(&mut v, 4, |b| b.get_i32())?;
        let offset = get(&mut v, 8, |b| b.get_i64())?;
        let leader_epoch = get(&mut v, 4, |b| b.get_i32())?;
        let metadata = get_str(&mut v)?;
        pending_offsets.push((g, t, p, Committed { offset, leader_epoch, metadata, timestamp: last_update_ms }));
    }
    Some((id, Some(TxnMeta { producer_id, epoch, timeout_ms, status, partitions, pending_offsets, start_ms, last_update_ms })))
}

impl TxnCoordinator {
    pub fn open(log: Arc<Log>, max_timeout_ms: i32) -> Result<TxnCoordinator, LogError> {
        let mut txns = HashMap::new();
        records::for_each_record(&log, |rec| {
            if let Some(k) = &rec.key {
                match decode(k, rec.value.as_ref()) {
                    Some((id, Some(m))) => {
                        txns.insert(id, m);
                    }
                    Some((id, None)) => {
                        txns.remove(&id);
                    }
                    None => tracing::warn!(offset = rec.offset, "skipping a record of __transaction_state that does not decode"),
                }
            }
        })?;
        tracing::info!(transactional_ids = txns.len(), "restored transaction state");
        Ok(TxnCoordinator { log, txns: Mutex::new(txns), max_timeout_ms })
    }

    fn persist(&self, id: &str, m: &TxnMeta) -> Result<(), LogError> {
        let batch = records::build_batch(&[NewRecord { key: Some(&key(id)), value: Some(&value(m)), timestamp: now_ms(), headers: &[] }]);
        let info = self.log.append(&batch)?;
        self.log.sync_to(info.last_offset + 1)
    }

    pub fn get(&self, id: &str) -> Option<TxnMeta> {
        self.txns.lock().get(id).cloned()
    }

    pub fn list(&self) -> Vec<(String, TxnMeta)> {
        let mut v: Vec<_> = self.txns.lock().iter().map(|(k, m)| (k.clone(), m.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Checks producer id and epoch against the transactional id's.
    fn check(m: Option<&TxnMeta>, producer_id: i64, epoch: i16) -> Result<(), i16> {
        let Some(m) = m else { return Err(code::INVALID_PRODUCER_ID_MAPPING) };
        if m.producer_id != producer_id {
            return Err(code::INVALID_PRODUCER_ID_MAPPING);
        }
        if epoch != m.epoch {
            return Err(code::PRODUCER_FENCED);
        }
        Ok(())
    }

    /// InitProducerId for a transactional id: a new id, or the existing id
    /// with the next epoch after aborting whatever was open (fencing the
    /// previous producer instance). `expected` is the producer id and epoch
    /// a client that already had them sends to bump its epoch (KIP-360,
    /// InitProducerId v3+): they must be the current ones (else
    /// PRODUCER_FENCED), and a retry of a bump that already happened gets the
    /// same answer again.
    pub fn init_producer(&self, id: &str, timeout_ms: i32, expected: Option<(i64, i16)>, new_id: impl FnOnce() -> Result<i64, LogError>, parts: &Effects<'_>) -> Result<(i64, i16), i16> {
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(code::INVALID_TRANSACTION_TIMEOUT);
        }
        let current = self.get(id);
        if let (Some(m), Some((pid, epoch))) = (&current, expected) {
            let settled = matches!(m.status, Status::Empty | Status::CompleteCommit | Status::CompleteAbort);
            if pid == m.producer_id && epoch.checked_add(1) == Some(m.epoch) && settled {
                return Ok((m.producer_id, m.epoch));
            }
            if pid != m.producer_id || epoch != m.epoch {
                return Err(code::PRODUCER_FENCED);
            }
        }
        if let Some(m) = &current {
            match m.status {
                Status::PrepareCommit | Status::PrepareAbort => return Err(code::CONCURRENT_TRANSACTIONS),
                Status::Ongoing => self.finish(id, false, parts, true).map_err(|_| code::CONCURRENT_TRANSACTIONS)?,
                _ => {}
            }
        }
        let now = now_ms();
        let mut m = self.get(id).unwrap_or(TxnMeta {
            producer_id: -1,
            epoch: -1,
            timeout_ms,
            status: Status::Empty,
            partitions: BTreeSet::new(),
            pending_offsets: Vec::new(),
            start_ms: now,
            last_update_ms: now,
        });
        if m.producer_id < 0 || m.epoch >= i16::MAX - 1 {
            m.producer_id = new_id().map_err(|e| e.kafka_code())?;
            m.epoch = 0;
        } else {
            m.epoch += 1;
        }
        m.timeout_ms = timeout_ms;
        m.status = Status::Empty;
        m.partitions.clear();
        m.pending_offsets.clear();
        m.last_update_ms = now;
        self.persist(id, &m).map_err(|e| e.kafka_code())?;
        let out = (m.producer_id, m.epoch);
        self.txns.lock().insert(id.to_string(), m);
        Ok(out)
    }

    /// AddPartitionsToTxn: per partition, an error code.
    pub fn add_partitions(&self, id: &str, producer_id: i64, epoch: i16, wanted: &[(String, i32)], known: impl Fn(&str, i32) -> bool) -> Vec<i16> {
        let mut txns = self.txns.lock();
        let m = txns.get_mut(id);
        if let Err(e) = Self::check(m.as_deref(), producer_id, epoch) {
            return vec![e; wanted.len()];
        }
        let m = m.expect("checked");
        if matches!(m.status, Status::PrepareCommit | Status::PrepareAbort) {
            return vec![code::CONCURRENT_TRANSACTIONS; wanted.len()];
        }
        if wanted.iter().any(|(t, p)| !known(t, *p)) {
            // Kafka fails the whole request; the unknown ones get the reason.
            return wanted.iter().map(|(t, p)| if known(t, *p) { code::OPERATION_NOT_ATTEMPTED } else { code::UNKNOWN_TOPIC_OR_PARTITION }).collect();
        }
        let now = now_ms();
        if m.status != Status::Ongoing {
            m.status = Status::Ongoing;
            m.start_ms = now;
        }
        m.partitions.extend(wanted.iter().cloned());
        m.last_update_ms = now;
        let snapshot = m.clone();
        drop(txns);
        match self.persist(id, &snapshot) {
            Ok(()) => vec![code::NONE; wanted.len()],
            Err(e) => vec![e.kafka_code(); wanted.len()],
        }
    }

    /// Whether a transactional batch of `producer_id` at `epoch` may be
    /// appended to `topic`/`partition`: its transaction is open and holds
    /// that partition (AddPartitionsToTxn), as Kafka's
    /// `transaction.partition.verification.enable` checks. Else the batch
    /// would open a transaction in that partition that no marker ever ends,
    /// holding back `read_committed` readers for good. Errors: an id this
    /// coordinator does not map to that producer id INVALID_PRODUCER_ID_MAPPING,
    /// another epoch INVALID_PRODUCER_EPOCH (a fenced zombie), a partition
    /// not in the open transaction INVALID_TXN_STATE.
    pub fn verify_partition(&self, id: &str, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> Result<(), i16> {
        let txns = self.txns.lock();
        let m = txns.get(id);
        // A produce's fenced epoch is INVALID_PRODUCER_EPOCH, as the log's own check says it.
        Self::check(m, producer_id, epoch).map_err(|e| if e == code::PRODUCER_FENCED { code::INVALID_PRODUCER_EPOCH } else { e })?;
        let m = m.expect("checked");
        if m.status != Status::Ongoing || !m.partitions.iter().any(|(t, p)| t == topic && *p == partition) {
            return Err(code::INVALID_TXN_STATE);
        }
        Ok(())
    }

    /// The partitions of `group` with an offset commit waiting in a
    /// transaction not yet complete (TxnOffsetCommit before the end of its
    /// transaction): what OffsetFetch with `require_stable` answers with
    /// UNSTABLE_OFFSET_COMMIT (KIP-447).
    pub fn pending_offsets_of(&self, group: &str) -> BTreeSet<(String, i32)> {
        // Ending or fencing a transaction clears its pending offsets.
        let txns = self.txns.lock();
        txns.values().flat_map(|m| m.pending_offsets.iter()).filter(|(g, ..)| g == group).map(|(_, t, p, _)| (t.clone(), *p)).collect()
    }

    /// AddOffsetsToTxn: the transaction will carry a group's offsets.
    pub fn add_offsets(&self, id: &str, producer_id: i64, epoch: i16) -> i16 {
        let mut txns = self.txns.lock();
        let m = txns.get_mut(id);
        if let Err(e) = Self::check(m.as_deref(), producer_id, epoch) {
            return e;
        }
        let m = m.expect("checked");
        if matches!(m.status, Status::PrepareCommit | Status::PrepareAbort) {
            return code::CONCURRENT_TRANSACTIONS;
        }
        if m.status == Status::Ongoing {
            return code::NONE;
        }
        // The transaction starts here: recorded, so that a restart before
        // its TxnOffsetCommit still finds it open (and times it out).
        let now = now_ms();
        m.status = Status::Ongoing;
        m.start_ms = now;
        m.last_update_ms = now;
        let snapshot = m.clone();
        drop(txns);
        match self.persist(id, &snapshot) {
            Ok(()) => code::NONE,
            Err(e) => e.kafka_code(),
        }
    }

    /// TxnOffsetCommit: offsets held until the transaction commits.
    pub fn commit_offsets(&self, id: &str, producer_id: i64, epoch: i16, group: &str, offsets: Vec<(String, i32, Committed)>) -> i16 {
        let mut txns = self.txns.lock();
        let m = txns.get_mut(id);
        if let Err(e) = Self::check(m.as_deref(), producer_id, epoch) {
            return e;
        }
        let m = m.expect("checked");
        if m.status != Status::Ongoing {
            return code::INVALID_TXN_STATE;
        }
        for (t, p, c) in offsets {
            m.pending_offsets.retain(|(g, t2, p2, _)| !(g == group && *t2 == t && *p2 == p));
            m.pending_offsets.push((group.to_string(), t, p, c));
        }
        let snapshot = m.clone();
        drop(txns);
        match self.persist(id, &snapshot) {
            Ok(()) => code::NONE,
            Err(e) => e.kafka_code(),
        }
    }

    /// EndTxn from the producer.
    pub fn end(&self, id: &str, producer_id: i64, epoch: i16, commit: bool, parts: &Effects<'_>) -> i16 {
        {
            let txns = self.txns.lock();
            let m = txns.get(id);
            if let Err(e) = Self::check(m, producer_id, epoch) {
                return e;
            }
            match (m.expect("checked").status, commit) {
                (Status::Ongoing, _) => {}
                // A retried EndTxn after completion answers the same.
                (Status::CompleteCommit, true) | (Status::CompleteAbort, false) => return code::NONE,
                (Status::PrepareCommit | Status::PrepareAbort, _) => return code::CONCURRENT_TRANSACTIONS,
                _ => return code::INVALID_TXN_STATE,
            }
        }
        match self.finish(id, commit, parts, false) {
            Ok(()) => code::NONE,
            Err(e) => e,
        }
    }

    /// Two-phase end: record the decision, write a marker to every
    /// partition (and, for a commit, the group offsets), record completion.
    /// `fence` bumps the epoch too (timeouts, a new producer instance).
    fn finish(&self, id: &str, commit: bool, parts: &Effects<'_>, fence: bool) -> Result<(), i16> {
        let mut m = self.get(id).ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        m.status = if commit { Status::PrepareCommit } else { Status::PrepareAbort };
        if fence {
            m.epoch = m.epoch.saturating_add(1);
        }
        m.last_update_ms = now_ms();
        self.persist(id, &m).map_err(|e| e.kafka_code())?;
        self.txns.lock().insert(id.to_string(), m.clone());
        self.complete(id, m, parts)
    }

    /// Writes the markers of a prepared transaction and completes it.
    fn complete(&self, id: &str, mut m: TxnMeta, parts: &Effects<'_>) -> Result<(), i16> {
        let commit = m.status == Status::PrepareCommit;
        for (topic, partition) in &m.partitions {
            let Some(log) = (parts.log)(topic, *partition) else { continue };
            let offset = log.append_marker(m.producer_id, m.epoch, commit, 0).map_err(|e| e.kafka_code())?;
            log.sync_to(offset + 1).map_err(|e| e.kafka_code())?;
            (parts.wake)(topic, *partition);
        }
        if commit {
            (parts.commit_offsets)(&m.pending_offsets).map_err(|e| e.kafka_code())?;
        }
        m.status = if commit { Status::CompleteCommit } else { Status::CompleteAbort };
        m.partitions.clear();
        m.pending_offsets.clear();
        m.last_update_ms = now_ms();
        self.persist(id, &m).map_err(|e| e.kafka_code())?;
        tracing::info!(transactional_id = id, producer_id = m.producer_id, commit, "transaction ended");
        self.txns.lock().insert(id.to_string(), m);
        Ok(())
    }

    /// Completes transactions a crash left prepared, and aborts (fencing the
    /// producer) those open longer than their timeout.
    pub fn tick(&self, parts: &Effects<'_>) {
        let now = now_ms();
        let work: Vec<(String, TxnMeta)> = self
            .txns
            .lock()
            .iter()
            .filter(|(_, m)| matches!(m.status, Status::PrepareCommit | Status::PrepareAbort) || (m.status == Status::Ongoing && now - m.start_ms > m.timeout_ms as i64))
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect();
        for (id, m) in work {
            let result = if m.status == Status::Ongoing {
                tracing::info!(transactional_id = %id, "transaction timed out; aborting it");
                self.finish(&id, false, parts, true)
            } else {
                self.complete(&id, m, parts)
            };
            if let Err(code) = result {
                tracing::error!(transactional_id = %id, code, "could not end a transaction; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_records_round_trip() {
        let m = TxnMeta {
            producer_id: 7,
            epoch: 3,
            timeout_ms: 60000,
            status: Status::Ongoing,
            partitions: [("a".to_string(), 0), ("a".to_string(), 2), ("b".to_string(), 1)].into(),
            pending_offsets: vec![("g".into(), "a".into(), 0, Committed { offset: 5, leader_epoch: -1, metadata: "m".into(), timestamp: 9 })],
            start_ms: 1,
            last_update_ms: 9,
        };
        assert_eq!(decode(&key("tx"), Some(&value(&m))), Some(("tx".to_string(), Some(m.clone()))));
        assert_eq!(decode(&key("tx"), None), Some(("tx".to_string(), None)));
        let v = value(&m);
        assert_eq!(decode(&key("tx"), Some(&v.slice(..v.len() - 3))), None);
    }
}
