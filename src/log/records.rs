//! Records inside a batch: building batches the broker writes itself
//! (internal topics, later processor output) and reading records back where
//! the broker must look inside (replaying internal topics, later compaction
//! and processors). Never used on the produce/fetch path, except to convert
//! the message sets of pre-0.11 request versions (`message_set`).

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use super::compression;
use super::LogError;

/// One record to write.
#[derive(Clone, Debug, Default)]
pub struct NewRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

/// One record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

fn put_varlong(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn put_bytes(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

/// Builds an uncompressed RecordBatch v2 (base offset 0, no producer id) with
/// a correct CRC-32C, ready for `Log::append`.
pub fn build_batch(records: &[NewRecord<'_>]) -> Bytes {
    let base_ts = records.first().map_or(0, |r| r.timestamp);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(-1);
    let mut body = BytesMut::new();
    let mut rec = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.put_u8(0); // attributes
        put_varlong(&mut rec, r.timestamp - base_ts);
        put_varlong(&mut rec, i as i64);
        put_bytes(&mut rec, r.key);
        put_bytes(&mut rec, r.value);
        put_varlong(&mut rec, r.headers.len() as i64);
        for (k, v) in r.headers {
            put_bytes(&mut rec, Some(k.as_bytes()));
            put_bytes(&mut rec, *v);
        }
        put_varlong(&mut body, rec.len() as i64);
        body.put_slice(&rec);
    }
    let n = records.len() as i32;
    let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
    b.put_i64(0);
    b.put_i32((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32);
    b.put_i32(-1); // partition leader epoch
    b.put_i8(batch::MAGIC);
    b.put_u32(0); // CRC, below
    b.put_i16(0); // attributes: no codec, CreateTime
    b.put_i32(n - 1);
    b.put_i64(base_ts);
    b.put_i64(max_ts);
    b.put_i64(-1); // producer id
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(n);
    b.put_slice(&body);
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// The batch written by producer `producer_id` (epoch, base sequence), as a
/// transactional batch if asked, with its CRC recomputed.
pub fn with_producer(batch: &Bytes, producer_id: i64, epoch: i16, base_sequence: i32, transactional: bool) -> Bytes {
    let mut v = batch.to_vec();
    if transactional {
        let attrs = i16::from_be_bytes([v[21], v[22]]) | 0x10;
        v[21..23].copy_from_slice(&attrs.to_be_bytes());
    }
    v[43..51].copy_from_slice(&producer_id.to_be_bytes());
    v[51..53].copy_from_slice(&epoch.to_be_bytes());
    v[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = batch::compute_crc(&v);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

fn read_bytes(body: &Bytes, pos: &mut usize) -> Option<Option<Bytes>> {
    let len = batch::read_varlong(body, pos)?;
    if len < 0 {
        return Some(None);
    }
    let end = pos.checked_add(len as usize)?;
    if end > body.len() {
        return None;
    }
    let b = body.slice(*pos..end);
    *pos = end;
    Some(Some(b))
}

/// Calls `f` with every record of `log`, from its start offset to its end,
/// in order (the replay of the broker's internal topics at start-up).
pub fn for_each_record(log: &super::Log, mut f: impl FnMut(Record)) -> Result<(), LogError> {
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let r = log.read(offset, 1 << 20, end)?;
        if r.records.is_empty() {
            break;
        }
        let (records, next) = records_in(&r.records, offset, end)?;
        records.into_iter().for_each(&mut f);
        if next == offset {
            break;
        }
        offset = next;
    }
    Ok(())
}

/// The data records with offsets in [from, to) of the whole batches in
/// `bytes` (control batches skipped), and the offset after the last batch.
pub fn records_in(bytes: &[u8], from: u64, to: u64) -> Result<(Vec<Record>, u64), LogError> {
    let mut out = Vec::new();
    let mut next = from;
    for (h, range) in super::batch::whole_batches(bytes) {
        if !h.is_control() {
            out.extend(read_records(&bytes[range])?.into_iter().filter(|r| (from..to).contains(&(r.offset as u64))));
        }
        next = next.max(h.next_offset() as u64);
    }
    Ok((out, next))
}

/// Reads every record of one stored batch (decompressing if needed).
pub fn read_records(batch_bytes: &[u8]) -> Result<Vec<Record>, LogError> {
    read_records_shared(&Bytes::copy_from_slice(batch_bytes))
}

/// `read_records` of a batch held in shared bytes: the keys and values of
/// an uncompressed batch are slices of it, not copies.
pub fn read_records_shared(batch_bytes: &Bytes) -> Result<Vec<Record>, LogError> {
    let h = BatchHeader::parse(batch_bytes).ok_or_else(|| LogError::CorruptBatch("batch shorter than its header".into()))?;
    let body = if h.compression() == 0 { batch_bytes.slice(HEADER_LEN..) } else { Bytes::from(compression::decompress(h.compression(), &batch_bytes[HEADER_LEN..])?) };
    let bad = || LogError::CorruptBatch("record inside the batch is malformed".into());
    let mut out = Vec::with_capacity(h.records_count.clamp(0, 4096) as usize);
    let mut pos = 0usize;
    for _ in 0..h.records_count.max(0) {
        let len = batch::read_varlong(&body, &mut pos).ok_or_else(bad)?;
        let end = pos.checked_add(usize::try_from(len).map_err(|_| bad())?).filter(|&e| e <= body.len()).ok_or_else(bad)?;
        let mut p = pos + 1; // attributes
        let ts_delta = batch::read_varlong(&body, &mut p).ok_or_else(bad)?;
        let off_delta = batch::read_varlong(&body, &mut p).ok_or_else(bad)?;
        let key = read_bytes(&body, &mut p).ok_or_else(bad)?;
        let value = read_bytes(&body, &mut p).ok_or_else(bad)?;
        let nh = batch::read_varlong(&body, &mut p).ok_or_else(bad)?;
        let mut headers = Vec::new();
        for _ in 0..nh.max(0) {
            let k = read_bytes(&body, &mut p).ok_or_else(bad)?.ok_or_else(bad)?;
            let v = read_bytes(&body, &mut p).ok_or_else(bad)?;
            headers.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        if p > end {
            return Err(bad());
        }
        let timestamp = if h.is_log_append_time() { h.max_timestamp } else { h.base_timestamp + ts_delta };
        out.push(Record { offset: h.base_offset + off_delta, timestamp, key, value, headers });
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_read_round_trips() {
        let recs = [
            NewRecord { key: Some(b"k1"), value: Some(b"v1"), timestamp: 10, headers: &[("h", Some(b"x")), ("n", None)] },
            NewRecord { key: None, value: None, timestamp: 7, headers: &[] },
        ];
        let b = build_batch(&recs);
        let v = batch::validate_producer_records(&b).unwrap();
        assert_eq!(v[0].header.records_count, 2);
        let back = read_records(&b).unwrap();
        assert_eq!(back[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(back[0].headers, vec![("h".to_string(), Some(Bytes::from_static(b"x"))), ("n".to_string(), None)]);
        assert_eq!((back[1].offset, back[1].timestamp, back[1].value.clone()), (1, 7, None));
    }

    #[test]
    fn damaged_records_are_errors() {
        let b = build_batch(&[NewRecord { key: Some(b"key"), value: Some(b"value"), timestamp: 1, headers: &[] }]);
        for cut in 62..b.len() {
            let _ = read_records(&b[..cut]); // must not panic
        }
    }
}
