//! Transactions as one partition's log sees them: which producers have an
//! open transaction here (and from which offset), the last stable offset
//! that `read_committed` readers stop at, and the aborted transactions they
//! must skip. Rebuilt on open from batch headers and the control records of
//! commit/abort markers.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::{self, BatchHeader};
use super::records::{self, NewRecord};

/// An aborted transaction: its producer, first offset and marker offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    pub last_offset: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnState {
    /// Producer id → first offset of its open transaction in this log.
    pub ongoing: BTreeMap<i64, u64>,
    pub aborted: Vec<AbortedTxn>,
}

impl TxnState {
    /// Notes a batch written at `base_offset`; `marker` is Some(commit?) for
    /// a control batch.
    pub fn observe(&mut self, h: &BatchHeader, base_offset: u64, marker: Option<bool>) {
        // An empty batch is a header the cleaner kept for its offsets and
        // producer state; it holds no data of any transaction.
        if !h.is_transactional() || h.producer_id < 0 || (marker.is_none() && h.records_count == 0) {
            return;
        }
        match marker {
            None => {
                self.ongoing.entry(h.producer_id).or_insert(base_offset);
            }
            Some(commit) => {
                if let Some(first) = self.ongoing.remove(&h.producer_id) {
                    if !commit {
                        self.aborted.push(AbortedTxn { producer_id: h.producer_id, first_offset: first, last_offset: base_offset });
                    }
                }
            }
        }
    }

    /// The last stable offset: the first offset of the oldest open
    /// transaction, or the log end.
    pub fn last_stable_offset(&self, log_end: u64) -> u64 {
        self.ongoing.values().copied().min().map_or(log_end, |first| first.min(log_end))
    }

    /// Aborted transactions overlapping offsets [from, to).
    pub fn aborted_between(&self, from: u64, to: u64) -> Vec<AbortedTxn> {
        // In marker order, so by last offset: those ending before `from` are skipped by a search.
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..].iter().filter(|a| a.first_offset < to).copied().collect()
    }

    /// Forgets aborted transactions wholly below the log start offset.
    pub fn trim(&mut self, log_start: u64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }
}

/// A commit or abort marker: a control batch of one record (Kafka's layout:
/// key = i16 version 0, i16 type (0 abort, 1 commit); value = i16 version 0,
/// i32 coordinator epoch).
pub fn control_batch(producer_id: i64, epoch: i16, commit: bool, coordinator_epoch: i32, timestamp: i64) -> Bytes {
    let mut key = BytesMut::new();
    key.put_i16(0);
    key.put_i16(if commit { 1 } else { 0 });
    let mut value = BytesMut::new();
    value.put_i16(0);
    value.put_i32(coordinator_epoch);
    let b = records::build_batch(&[NewRecord { key: Some(&key), value: Some(&value), timestamp, headers: &[] }]);
    let mut v = b.to_vec();
    v[21..23].copy_from_slice(&(0x10i16 | 0x20).to_be_bytes()); // transactional | control
    v[43..51].copy_from_slice(&producer_id.to_be_bytes());
    v[51..53].copy_from_slice(&epoch.to_be_bytes());
    v[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = batch::compute_crc(&v);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

/// Reads a control batch's marker type: Some(true) commit, Some(false) abort.
pub fn marker_type(batch_bytes: &[u8]) -> Option<bool> {
    let recs = records::read_records(batch_bytes).ok()?;
    let key = recs.first()?.key.clone()?;
    if key.len() < 4 {
        return None;
    }
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_open_and_close_transactions() {
        let m = control_batch(5, 2, false, 0, 100);
        let h = BatchHeader::parse(&m).unwrap();
        assert!(h.is_control() && h.is_transactional());
        assert_eq!(batch::check_stored(&m).map(|_| ()), Ok(()));
        assert_eq!(marker_type(&m), Some(false));
        assert_eq!(marker_type(&control_batch(5, 2, true, 0, 1)), Some(true));

        let mut t = TxnState::default();
        let data = BatchHeader { attributes: 0x10, producer_id: 5, ..h };
        t.observe(&data, 10, None);
        t.observe(&data, 12, None);
        assert_eq!(t.last_stable_offset(20), 10);
        t.observe(&h, 15, Some(false));
        assert_eq!(t.last_stable_offset(20), 20);
        assert_eq!(t.aborted_between(0, 20), vec![AbortedTxn { producer_id: 5, first_offset: 10, last_offset: 15 }]);
        assert!(t.aborted_between(16, 20).is_empty());
        t.trim(16);
        assert!(t.aborted.is_empty());
    }
}
