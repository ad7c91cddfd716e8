//! A zero-copy view of Kafka RecordBatch v2 headers, batch validation, and the
//! record walk used by timestamp lookups.
//!
//! Layout of the 61-byte header (all integers big-endian):
//!
//! | offset | field                 | type  |
//! |--------|-----------------------|-------|
//! | 0      | base offset           | i64   |
//! | 8      | batch length          | i32   | bytes after this field
//! | 12     | partition leader epoch| i32   |
//! | 16     | magic                 | i8    | always 2
//! | 17     | crc                   | u32   | CRC-32C of bytes 21..end
//! | 21     | attributes            | i16   |
//! | 23     | last offset delta     | i32   |
//! | 27     | base timestamp        | i64   |
//! | 35     | max timestamp         | i64   |
//! | 43     | producer id           | i64   |
//! | 51     | producer epoch        | i16   |
//! | 53     | base sequence         | i32   |
//! | 57     | records count         | i32   |
//! | 61     | records...            |       |

use bytes::Bytes;

use super::compression;
use super::LogError;

pub const HEADER_LEN: usize = 61;
/// Bytes of the header that precede the batch length field's coverage.
pub const LOG_OVERHEAD: usize = 12;
pub const CRC_START: usize = 21;
pub const MAGIC: i8 = 2;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// A view of one batch header. Holds only the header bytes' decoded fields, so
/// it can be built from a 61-byte read without the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

/// The whole batches at the start of `bytes` (as a read or a fetch returns
/// them): each header with the batch's byte range. Stops at a cut batch.
pub fn whole_batches(bytes: &[u8]) -> impl Iterator<Item = (BatchHeader, std::ops::Range<usize>)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(bytes.get(pos..)?)?;
        let range = pos..pos + h.total_len();
        if range.end > bytes.len() {
            return None;
        }
        pos = range.end;
        Some((h, range))
    })
}

impl BatchHeader {
    /// Decodes the header fields. `b` must hold at least `HEADER_LEN` bytes;
    /// nothing is validated here.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < HEADER_LEN {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(b, 0),
            batch_length: be_i32(b, 8),
            partition_leader_epoch: be_i32(b, 12),
            magic: b[16] as i8,
            crc: u32::from_be_bytes([b[17], b[18], b[19], b[20]]),
            attributes: be_i16(b, 21),
            last_offset_delta: be_i32(b, 23),
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            records_count: be_i32(b, 57),
        })
    }

    /// Whole size of the batch on disk, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Saturating, so a damaged header read from disk cannot overflow.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(self.last_offset_delta as i64)
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    pub fn compression(&self) -> u8 {
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// The structural checks that need only the header: magic, a length that
    /// can hold a header, an offset delta that fits, a known codec.
    pub fn check_structure(&self) -> Result<(), &'static str> {
        if self.magic != MAGIC {
            return Err("magic byte is not 2 (only record batch v2 is stored)");
        }
        if (self.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err("batch length is shorter than a batch header");
        }
        if self.last_offset_delta < 0 {
            return Err("last offset delta is negative");
        }
        if self.compression() > 4 {
            return Err("unknown compression codec");
        }
        Ok(())
    }
}

/// CRC-32C (Castagnoli) of a whole batch's covered region.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &batch[CRC_START..]) as u32
}

/// Checks a batch that is already known to span exactly `batch.len()` bytes:
/// the structure and the CRC. Used on the read and recovery paths.
pub fn check_stored(batch: &[u8]) -> Result<BatchHeader, &'static str> {
    let h = BatchHeader::parse(batch).ok_or("batch shorter than its header")?;
    h.check_structure()?;
    if h.total_len() != batch.len() {
        return Err("batch length does not match its extent");
    }
    if compute_crc(batch) != h.crc {
        return Err("CRC-32C mismatch");
    }
    Ok(h)
}

/// One validated batch inside a producer's buffer.
#[derive(Clone, Debug)]
pub struct ValidBatch {
    pub header: BatchHeader,
    pub bytes: Bytes,
}

/// Splits a client's record set into batches and validates every one before
/// anything is written: structure, CRC-32C, and records count = last offset
/// delta + 1. Returns the batches or the first problem found.
pub fn validate_producer_records(records: &Bytes) -> Result<Vec<ValidBatch>, LogError> {
    let mut out = Vec::with_capacity(1);
    let mut pos = 0usize;
    if records.is_empty() {
        return Err(LogError::InvalidRecord("empty record set".into()));
    }
    while pos < records.len() {
        let rest = &records[pos..];
        let header = BatchHeader::parse(rest).ok_or_else(|| {
            LogError::CorruptBatch(format!("{} trailing bytes do not hold a batch header", rest.len()))
        })?;
        header.check_structure().map_err(|r| LogError::CorruptBatch(r.into()))?;
        let len = header.total_len();
        if len > rest.len() {
            return Err(LogError::CorruptBatch(format!(
                "batch declares {len} bytes but only {} remain",
                rest.len()
            )));
        }
        let bytes = records.slice(pos..pos + len);
        if compute_crc(&bytes) != header.crc {
            return Err(LogError::CorruptBatch("CRC-32C mismatch".into()));
        }
        if header.records_count as i64 != header.last_offset_delta as i64 + 1 {
            return Err(LogError::InvalidRecord(format!(
                "records count {} does not match last offset delta {} + 1",
                header.records_count, header.last_offset_delta
            )));
        }
        out.push(ValidBatch { header, bytes });
        pos += len;
    }
    Ok(out)
}

/// Reads a zigzag varint (Kafka's `varint`/`varlong`) from `b` at `*pos`.
pub fn read_varlong(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*pos)?;
        *pos += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((value >> 1) as i64) ^ -((value & 1) as i64))
}

/// Timestamp and offset of one record, as needed by time lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordStamp {
    pub offset: i64,
    pub timestamp: i64,
}

/// Walks the records of a batch and returns each one's offset and timestamp
/// (LogAppendTime batches report the batch max timestamp for every record, as
/// Kafka does). Compressed batches are decompressed first.
pub fn record_stamps(batch: &[u8]) -> Result<Vec<RecordStamp>, LogError> {
    let h = BatchHeader::parse(batch)
        .ok_or_else(|| LogError::CorruptBatch("batch shorter than its header".into()))?;
    let count = h.records_count.max(0) as usize;
    if h.is_log_append_time() {
        // Every record carries the broker's append time; offsets are still
        // needed for the compacted case where deltas have gaps.
    }
    let body = compression::batch_body(batch)?;
    let body: &[u8] = &body;
    let bad = || LogError::CorruptBatch("record inside the batch is malformed".into());
    let mut out = Vec::with_capacity(count.min(4096));
    let mut pos = 0usize;
    for _ in 0..count {
        let len = read_varlong(body, &mut pos).ok_or_else(bad)?;
        if len < 0 || pos + len as usize > body.len() {
            return Err(bad());
        }
        let end = pos + len as usize;
        let mut p = pos + 1; // attributes
        let ts_delta = read_varlong(body, &mut p).ok_or_else(bad)?;
        let off_delta = read_varlong(body, &mut p).ok_or_else(bad)?;
        if p > end {
            return Err(bad());
        }
        let timestamp = if h.is_log_append_time() { h.max_timestamp } else { h.base_timestamp + ts_delta };
        out.push(RecordStamp { offset: h.base_offset + off_delta, timestamp });
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The batch CRC agrees with an independent CRC-32C (the crc32c crate)
    /// at every length and alignment the SIMD folding treats differently.
    #[test]
    fn batch_crc_is_crc32c() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in (0..600).chain([1023, 1024, 1025, 4096, 16_411, 65_536, 69_000]) {
            for skew in [0, 1, 7, 13] {
                let b = &data[skew..skew + CRC_START + len];
                assert_eq!(compute_crc(b), crc32c::crc32c(&b[CRC_START..]), "length {len}, offset {skew}");
            }
        }
        // The catalogue's check value of CRC-32/ISCSI.
        let check = [&[0u8; CRC_START][..], b"123456789"].concat();
        assert_eq!(compute_crc(&check), 0xE306_9283);
    }

    fn zigzag(v: i64, out: &mut Vec<u8>) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                break;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    /// Builds an uncompressed batch the way a client would: base offset 0,
    /// one record per value, timestamps given per record.
    pub fn build_batch(timestamps: &[i64], value_len: usize) -> Vec<u8> {
        let base_ts = timestamps.first().copied().unwrap_or(0);
        let max_ts = timestamps.iter().copied().max().unwrap_or(0);
        let mut records = Vec::new();
        for (i, ts) in timestamps.iter().enumerate() {
            let mut body = vec![0u8]; // attributes
            zigzag(ts - base_ts, &mut body);
            zigzag(i as i64, &mut body);
            zigzag(-1, &mut body); // null key
            zigzag(value_len as i64, &mut body);
            body.extend(std::iter::repeat_n(b'v', value_len));
            zigzag(0, &mut body); // no headers
            zigzag(body.len() as i64, &mut records);
            records.extend_from_slice(&body);
        }
        let n = timestamps.len() as i32;
        let mut b = Vec::with_capacity(HEADER_LEN + records.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(n - 1).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&max_ts.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(&records);
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn valid_batch_passes_and_reports_fields() {
        let b = Bytes::from(build_batch(&[10, 30, 20], 5));
        let v = validate_producer_records(&b).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].header.records_count, 3);
        assert_eq!(v[0].header.max_timestamp, 30);
        let stamps = record_stamps(&b).unwrap();
        assert_eq!(stamps.iter().map(|s| s.timestamp).collect::<Vec<_>>(), vec![10, 30, 20]);
        assert_eq!(stamps.iter().map(|s| s.offset).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn every_single_bit_flip_in_covered_region_is_rejected() {
        let b = build_batch(&[1, 2], 3);
        for i in CRC_START..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(validate_producer_records(&Bytes::from(c)).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn bad_magic_count_and_truncation_are_rejected() {
        let b = build_batch(&[1, 2], 3);
        let mut m = b.clone();
        m[16] = 1;
        assert!(matches!(validate_producer_records(&Bytes::from(m)), Err(LogError::CorruptBatch(_))));
        let mut c = b.clone();
        c[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&c);
        c[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate_producer_records(&Bytes::from(c)), Err(LogError::InvalidRecord(_))));
        let t = Bytes::from(b[..b.len() - 1].to_vec());
        assert!(validate_producer_records(&t).is_err());
        let short = Bytes::from(b[..30].to_vec());
        assert!(validate_producer_records(&short).is_err());
    }

    #[test]
    fn two_batches_back_to_back_validate() {
        let mut b = build_batch(&[1], 3);
        b.extend(build_batch(&[2, 3], 3));
        assert_eq!(validate_producer_records(&Bytes::from(b)).unwrap().len(), 2);
    }
}
