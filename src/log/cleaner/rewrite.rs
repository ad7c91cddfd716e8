//! Rewriting one stored batch with some of its records removed.
//!
//! Retained records are copied byte for byte: their offset and timestamp
//! deltas stay relative to the batch's unchanged base offset and base
//! timestamp. The batch keeps its codec, producer id, epoch, base sequence,
//! attributes and last offset delta (so a producer's sequence range and the
//! segment's offsets are what they were); its record count, length, max
//! timestamp and CRC are recomputed.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::log::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use crate::log::{compression, LogError};

/// What the cleaner sees of one record.
pub struct RecordView<'a> {
    pub offset: u64,
    pub key: Option<&'a [u8]>,
    /// A tombstone: the key's value is null.
    pub tombstone: bool,
}

/// The outcome of filtering a batch.
pub enum Filtered {
    /// Every record stays: write the stored bytes unchanged.
    Unchanged,
    /// No record stays and no header is needed: drop the batch.
    Dropped,
    /// Some records stay (or none, and an empty header keeps the batch's
    /// offsets and producer state): write these bytes instead.
    Rewritten(Bytes),
}

struct RawRecord {
    offset_delta: i64,
    timestamp_delta: i64,
    key: Option<Range<usize>>,
    tombstone: bool,
    /// The record's bytes, its length prefix included.
    span: Range<usize>,
}

fn malformed() -> LogError {
    LogError::CorruptBatch("record inside the batch is malformed".into())
}

fn raw_records(body: &[u8], count: i32) -> Result<Vec<RawRecord>, LogError> {
    let mut out = Vec::with_capacity(count.clamp(0, 1 << 16) as usize);
    let mut pos = 0usize;
    for _ in 0..count.max(0) {
        let start = pos;
        let len = batch::read_varlong(body, &mut pos).ok_or_else(malformed)?;
        let end = usize::try_from(len).ok().and_then(|l| pos.checked_add(l)).filter(|&e| e <= body.len()).ok_or_else(malformed)?;
        let mut p = pos + 1; // attributes
        let timestamp_delta = batch::read_varlong(body, &mut p).ok_or_else(malformed)?;
        let offset_delta = batch::read_varlong(body, &mut p).ok_or_else(malformed)?;
        let key_len = batch::read_varlong(body, &mut p).ok_or_else(malformed)?;
        let key = if key_len < 0 {
            None
        } else {
            let k = p..p.checked_add(key_len as usize).filter(|&e| e <= end).ok_or_else(malformed)?;
            p = k.end;
            Some(k)
        };
        let value_len = batch::read_varlong(body, &mut p).ok_or_else(malformed)?;
        if p > end || offset_delta < 0 {
            return Err(malformed());
        }
        out.push(RawRecord { offset_delta, timestamp_delta, key, tombstone: value_len < 0, span: start..end });
        pos = end;
    }
    Ok(out)
}

/// Filters the records of one stored, CRC-checked batch through `retain`.
/// `keep_empty`: when nothing is retained, keep an empty batch (header only,
/// as Kafka's cleaner writes it) instead of dropping the batch.
pub fn filter_batch(bytes: &[u8], keep_empty: bool, mut retain: impl FnMut(&RecordView<'_>) -> bool) -> Result<Filtered, LogError> {
    let body = compression::batch_body(bytes)?;
    let body: &[u8] = &body;
    let h = BatchHeader::parse(bytes).expect("checked by batch_body");
    let records = raw_records(body, h.records_count)?;
    // Offsets beyond the batch's own range would make a record look newer
    // than later writes of its key.
    let mut prev = -1i64;
    for r in &records {
        if r.offset_delta <= prev || r.offset_delta > h.last_offset_delta as i64 {
            return Err(LogError::CorruptBatch(format!("record offset delta {} is outside the batch's range 0..={} or out of order", r.offset_delta, h.last_offset_delta)));
        }
        prev = r.offset_delta;
    }
    let mut kept: Vec<&RawRecord> = Vec::with_capacity(records.len());
    for r in &records {
        let view = RecordView {
            offset: (h.base_offset + r.offset_delta) as u64,
            key: r.key.clone().map(|k| &body[k]),
            tombstone: r.tombstone,
        };
        if retain(&view) {
            kept.push(r);
        }
    }
    if kept.len() == records.len() {
        return Ok(Filtered::Unchanged);
    }
    if kept.is_empty() {
        return Ok(if keep_empty { Filtered::Rewritten(empty_batch(&h)) } else { Filtered::Dropped });
    }
    let mut new_body = Vec::with_capacity(kept.iter().map(|r| r.span.len()).sum());
    for r in &kept {
        new_body.extend_from_slice(&body[r.span.clone()]);
    }
    let new_body = if h.compression() == 0 { new_body } else { compression::compress(h.compression(), &new_body)? };
    let max_timestamp = if h.is_log_append_time() {
        h.max_timestamp
    } else {
        kept.iter().map(|r| h.base_timestamp + r.timestamp_delta).max().expect("at least one record")
    };
    let mut out = BytesMut::with_capacity(HEADER_LEN + new_body.len());
    out.put_slice(&bytes[..HEADER_LEN]);
    out[8..12].copy_from_slice(&((HEADER_LEN - LOG_OVERHEAD + new_body.len()) as i32).to_be_bytes());
    out[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    out.put_slice(&new_body);
    let crc = batch::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Filtered::Rewritten(out.freeze()))
}

/// A batch with no records that keeps `h`'s offsets, producer id, epoch,
/// sequence and transactional/control flags: uncompressed, both timestamps
/// set to the original max timestamp (Kafka's empty-batch layout).
pub fn empty_batch(h: &BatchHeader) -> Bytes {
    let attributes = h.attributes & !0x07;
    let mut b = BytesMut::with_capacity(HEADER_LEN);
    b.put_i64(h.base_offset);
    b.put_i32((HEADER_LEN - LOG_OVERHEAD) as i32);
    b.put_i32(h.partition_leader_epoch);
    b.put_i8(batch::MAGIC);
    b.put_u32(0);
    b.put_i16(attributes);
    b.put_i32(h.last_offset_delta);
    b.put_i64(h.max_timestamp);
    b.put_i64(h.max_timestamp);
    b.put_i64(h.producer_id);
    b.put_i16(h.producer_epoch);
    b.put_i32(h.base_sequence);
    b.put_i32(0);
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::records::{build_batch, read_records, NewRecord};

    fn compressed(codec: u8, b: &Bytes) -> Bytes {
        let h = BatchHeader::parse(b).unwrap();
        let body = compression::compress(codec, &b[HEADER_LEN..]).unwrap();
        let mut v = b[..HEADER_LEN].to_vec();
        v[8..12].copy_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
        v[21..23].copy_from_slice(&(h.attributes | codec as i16).to_be_bytes());
        v.extend_from_slice(&body);
        let crc = batch::compute_crc(&v);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(v)
    }

    #[test]
    fn kept_records_keep_offsets_and_codec() {
        let recs: Vec<NewRecord> = (0..10)
            .map(|i| NewRecord { key: Some(if i % 2 == 0 { b"even" } else { b"odd!" }), value: if i == 9 { None } else { Some(b"v") }, timestamp: 100 + i, headers: &[] })
            .collect();
        let plain = build_batch(&recs);
        for codec in 0..=4u8 {
            let b = if codec == 0 { plain.clone() } else { compressed(codec, &plain) };
            let Filtered::Rewritten(out) = filter_batch(&b, false, |r| r.offset >= 7).unwrap() else { panic!("codec {codec}") };
            let h = BatchHeader::parse(&out).unwrap();
            assert_eq!(batch::check_stored(&out).map(|_| ()), Ok(()), "codec {codec}");
            assert_eq!((h.compression(), h.records_count, h.last_offset_delta, h.max_timestamp), (codec, 3, 9, 109), "codec {codec}");
            let back = read_records(&out).unwrap();
            assert_eq!(back.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![7, 8, 9]);
            assert_eq!(back.iter().map(|r| r.timestamp).collect::<Vec<_>>(), vec![107, 108, 109]);
            assert!(back[2].value.is_none());
        }
        assert!(matches!(filter_batch(&plain, false, |_| true).unwrap(), Filtered::Unchanged));
        assert!(matches!(filter_batch(&plain, false, |_| false).unwrap(), Filtered::Dropped));
        let Filtered::Rewritten(e) = filter_batch(&plain, true, |_| false).unwrap() else { panic!() };
        let h = BatchHeader::parse(&e).unwrap();
        assert_eq!((h.records_count, h.last_offset_delta, e.len()), (0, 9, HEADER_LEN));
        assert_eq!(batch::check_stored(&e).map(|_| ()), Ok(()));
    }

    #[test]
    fn tombstones_and_keys_are_seen() {
        let b = build_batch(&[
            NewRecord { key: None, value: Some(b"x"), timestamp: 1, headers: &[] },
            NewRecord { key: Some(b"k"), value: None, timestamp: 2, headers: &[("h", Some(b"1"))] },
        ]);
        let mut seen = Vec::new();
        filter_batch(&b, false, |r| {
            seen.push((r.offset, r.key.map(<[u8]>::to_vec), r.tombstone));
            true
        })
        .unwrap();
        assert_eq!(seen, vec![(0, None, false), (1, Some(b"k".to_vec()), true)]);
        for cut in HEADER_LEN..b.len() {
            let _ = filter_batch(&b[..cut], false, |_| false); // never panics
        }
    }
}
