//! Message format v0 and v1 ("magic 0" and "magic 1" message sets, Kafka
//! before 0.11), for the Produce v0–2 and Fetch v0–3 that clients which do
//! not negotiate still send (kafka-go 0.2). The log only ever holds
//! RecordBatch v2: a produced message set is up-converted into one batch
//! before it is appended, and an old fetch gets the batches it reads
//! down-converted. Neither conversion is on the path of current clients.
//!
//! One message (big-endian):
//!
//! | field        | type | note                                            |
//! |--------------|------|-------------------------------------------------|
//! | offset       | i64  | on produce, ignored (the log assigns offsets)   |
//! | message size | i32  | bytes after this field                          |
//! | crc          | u32  | CRC-32 (IEEE, not Castagnoli) of magic..end     |
//! | magic        | i8   | 0 or 1                                          |
//! | attributes   | i8   | bits 0–2 codec, bit 3 LogAppendTime (magic 1)   |
//! | timestamp    | i64  | magic 1 only                                    |
//! | key          | i32 length + bytes, −1 for null                        |
//! | value        | i32 length + bytes, −1 for null                        |
//!
//! A compressed message (a "wrapper") carries, as its value, a whole message
//! set compressed with its codec; a magic 1 wrapper's inner messages have
//! offsets relative to the first (KIP-31), which up-conversion ignores.

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::{self, HEADER_LEN, LOG_OVERHEAD};
use super::records::{self, NewRecord};
use super::txn::AbortedTxn;
use super::{compression, LogError};

/// offset, message size, crc, magic, attributes.
const MESSAGE_HEAD: usize = 8 + 4 + 4 + 1 + 1;
const CODEC_MASK: i8 = 0x07;
const LOG_APPEND_TIME: i8 = 0x08;
/// What Kafka stores as the timestamp of a magic 0 message: none.
const NO_TIMESTAMP: i64 = -1;

/// One message as it was sent: its fields are slices of the set.
struct Message {
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A length-prefixed field of message `m` at `*pos`, within `end`.
fn field(m: &Bytes, pos: &mut usize, end: usize) -> Result<Option<Bytes>, LogError> {
    if *pos + 4 > end {
        return Err(LogError::CorruptBatch("a message ends inside a key or value length".into()));
    }
    let len = be_i32(m, *pos);
    *pos += 4;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| LogError::CorruptBatch(format!("a key or value length of {len}")))?;
    if len > end - *pos {
        return Err(LogError::CorruptBatch("a key or value runs past its message".into()));
    }
    let b = m.slice(*pos..*pos + len);
    *pos += len;
    Ok(Some(b))
}

/// The messages of `set`, each checked (size, CRC-32, magic, fields that
/// fill it exactly). A message cut short at the end is left out when
/// `cut_tail` allows it, as Kafka trims one from a produced set; any other
/// damage is an error.
fn parse(set: &Bytes, cut_tail: bool) -> Result<Vec<Message>, LogError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < set.len() {
        let rest = set.len() - pos;
        let cut = |what: &str| if cut_tail { Ok(()) } else { Err(LogError::CorruptBatch(format!("the last message of a compressed set is cut short ({what})"))) };
        if rest < 12 {
            cut("in its size")?;
            break;
        }
        // crc, magic, attributes, and the key and value lengths.
        let size = be_i32(set, pos + 8);
        if size < (MESSAGE_HEAD - 12 + 8) as i32 {
            return Err(LogError::CorruptBatch(format!("a message of {size} bytes is smaller than any message")));
        }
        if 12 + size as usize > rest {
            cut("in its body")?;
            break;
        }
        let start = pos + 12;
        let end = start + size as usize;
        let crc = u32::from_be_bytes([set[start], set[start + 1], set[start + 2], set[start + 3]]);
        if crc32fast::hash(&set[start + 4..end]) != crc {
            return Err(LogError::CorruptBatch("message CRC-32 mismatch".into()));
        }
        let (magic, attributes) = (set[start + 4] as i8, set[start + 5] as i8);
        let mut p = start + 6;
        let timestamp = match magic {
            0 => NO_TIMESTAMP,
            1 if end - p >= 8 + 8 => {
                p += 8;
                let t = i64::from_be_bytes(set[p - 8..p].try_into().expect("8 bytes"));
                if t < NO_TIMESTAMP {
                    return Err(LogError::InvalidTimestamp(format!("message timestamp {t}")));
                }
                t
            }
            1 => return Err(LogError::CorruptBatch("a magic 1 message too small for its timestamp".into())),
            m => return Err(LogError::CorruptBatch(format!("message magic {m}: only 0 and 1 come as message sets"))),
        };
        let key = field(set, &mut p, end)?;
        let value = field(set, &mut p, end)?;
        if p != end {
            return Err(LogError::CorruptBatch(format!("{} bytes after a message's value", end - p)));
        }
        out.push(Message { magic, attributes, timestamp, key, value });
        pos = end;
    }
    Ok(out)
}

/// Up-converts a produced message set (magic 0 or 1, compressed wrappers
/// included) into one RecordBatch v2 for `Log::append`, as Kafka before 4.0
/// did: keys, values and magic 1 timestamps kept (magic 0 has none: −1),
/// CreateTime, no headers, no producer id; compressed with the codec of the
/// set's (last) compressed message, uncompressed if it had none.
///
/// All the wrappers of one set together decompress to at most
/// `compression::MAX_DECOMPRESSED` bytes: a request of many small
/// compression bombs is refused before it costs more.
pub fn to_batch(set: &Bytes) -> Result<Bytes, LogError> {
    to_batch_within(set, compression::MAX_DECOMPRESSED)
}

/// `to_batch` with at most `budget` decompressed bytes for the whole set.
fn to_batch_within(set: &Bytes, mut budget: u64) -> Result<Bytes, LogError> {
    let mut codec = 0u8;
    let mut flat: Vec<Message> = Vec::new();
    for m in parse(set, true)? {
        let c = (m.attributes & CODEC_MASK) as u8;
        if c == 0 {
            flat.push(m);
            continue;
        }
        if c > 3 {
            return Err(LogError::InvalidRecord(format!("message magic {} cannot use codec {c} ({})", m.magic, compression::codec_name(c))));
        }
        codec = c;
        let inner = Bytes::from(compression::decompress_capped(c, m.value.as_deref().unwrap_or_default(), budget)?);
        budget -= inner.len() as u64;
        for i in parse(&inner, false)? {
            if i.magic != m.magic {
                return Err(LogError::InvalidRecord(format!("a magic {} message inside a magic {} wrapper", i.magic, m.magic)));
            }
            if i.attributes & CODEC_MASK != 0 {
                return Err(LogError::InvalidRecord("a compressed message inside a compressed message".into()));
            }
            // A wrapper stamped with LogAppendTime speaks for its messages.
            let timestamp = if m.magic == 1 && m.attributes & LOG_APPEND_TIME != 0 { m.timestamp } else { i.timestamp };
            flat.push(Message { timestamp, ..i });
        }
    }
    if flat.is_empty() {
        return Err(LogError::CorruptBatch("the message set holds no whole message".into()));
    }
    let news: Vec<NewRecord<'_>> = flat.iter().map(|m| NewRecord { key: m.key.as_deref(), value: m.value.as_deref(), timestamp: m.timestamp, headers: &[] }).collect();
    let plain = records::build_batch(&news);
    if codec == 0 {
        return Ok(plain);
    }
    let body = compression::compress(codec, &plain[HEADER_LEN..])?;
    let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
    b.put_slice(&plain[..HEADER_LEN]);
    b.put_slice(&body);
    let len = (b.len() - LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[21..23].copy_from_slice(&(codec as i16).to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(b.freeze())
}

/// Appends one uncompressed message.
fn put_message(out: &mut BytesMut, offset: i64, magic: i8, attributes: i8, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
    let start = out.len();
    out.put_i64(offset);
    out.put_i32(0); // message size, below
    out.put_u32(0); // crc, below
    out.put_i8(magic);
    out.put_i8(attributes);
    if magic == 1 {
        out.put_i64(timestamp);
    }
    for f in [key, value] {
        match f {
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
            None => out.put_i32(-1),
        }
    }
    let size = (out.len() - start - 12) as i32;
    out[start + 8..start + 12].copy_from_slice(&size.to_be_bytes());
    let crc = crc32fast::hash(&out[start + 16..]);
    out[start + 12..start + 16].copy_from_slice(&crc.to_be_bytes());
}

fn message_len(magic: i8, key: Option<&Bytes>, value: Option<&Bytes>) -> usize {
    MESSAGE_HEAD + if magic == 1 { 8 } else { 0 } + 8 + key.map_or(0, Bytes::len) + value.map_or(0, Bytes::len)
}

/// Down-converts whole v2 batches (a log read) into a message set of
/// `magic` 0 or 1 for an old fetch, as Kafka before 4.0 did, with three
/// differences that cost old clients nothing: the messages are always
/// uncompressed (Kafka recompressed, and refused zstd batches), records
/// below `from` are left out even from compressed batches (clients skip
/// them), and transactional data of `aborted` transactions is left out
/// too (an old client cannot tell it apart; the caller reads only up to
/// the last stable offset). Control batches and headers are dropped. The set
/// stops before the message that would take it past `limit` bytes, but
/// always holds the first one.
pub fn from_batches(batches: &Bytes, from: i64, magic: i8, aborted: &[AbortedTxn], limit: usize) -> Result<Bytes, LogError> {
    let mut out = BytesMut::with_capacity(batches.len().min(limit.max(64)));
    for (h, range) in batch::whole_batches(batches) {
        if h.is_control() || h.last_offset() < from {
            continue;
        }
        let base = h.base_offset as u64;
        if h.is_transactional() && aborted.iter().any(|a| a.producer_id == h.producer_id && (a.first_offset..=a.last_offset).contains(&base)) {
            continue;
        }
        let attributes = if magic == 1 && h.is_log_append_time() { LOG_APPEND_TIME } else { 0 };
        for r in records::read_records_shared(&batches.slice(range))? {
            if r.offset < from {
                continue;
            }
            if !out.is_empty() && out.len() + message_len(magic, r.key.as_ref(), r.value.as_ref()) > limit {
                return Ok(out.freeze());
            }
            put_message(&mut out, r.offset, magic, attributes, r.timestamp, r.key.as_deref(), r.value.as_deref());
        }
    }
    Ok(out.freeze())
}

/// The number of whole messages in a message set (the fetch metrics).
pub fn count(set: &[u8]) -> u64 {
    let (mut n, mut pos) = (0, 0usize);
    while pos + 12 <= set.len() {
        pos += 12 + be_i32(set, pos + 8).max(0) as usize;
        if pos > set.len() {
            break;
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key, value, timestamp.
    type Fields<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

    fn set(magic: i8, msgs: &[Fields<'_>], attributes: i8) -> Bytes {
        let mut out = BytesMut::new();
        for (i, (k, v, ts)) in msgs.iter().enumerate() {
            put_message(&mut out, i as i64, magic, attributes, *ts, *k, *v);
        }
        out.freeze()
    }

    /// Many gzip wrappers that each decompress within the per-message cap
    /// still share one budget for the whole set.
    #[test]
    fn compressed_wrappers_share_one_decompression_budget() {
        let inner = set(1, &[(None, Some(&[b'z'; 1000][..]), 1)], 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &inner).unwrap();
        let wrapped = gz.finish().unwrap();
        let mut out = BytesMut::new();
        for i in 0..10 {
            put_message(&mut out, i, 1, 1, 1, None, Some(&wrapped));
        }
        let ten = out.freeze();
        let per = inner.len() as u64;
        assert_eq!(records::read_records(&to_batch_within(&ten, 10 * per).unwrap()).unwrap().len(), 10);
        let err = to_batch_within(&ten, 10 * per - 1).unwrap_err();
        assert!(matches!(err, LogError::CorruptBatch(ref m) if m.contains("decompresses to more than")), "{err}");
    }

    #[test]
    fn a_magic_1_set_becomes_one_v2_batch_with_its_timestamps() {
        let s = set(1, &[(Some(b"k1"), Some(b"v1"), 1000), (None, Some(b"v2"), 900), (Some(b"k3"), None, 1100)], 0);
        let b = to_batch(&s).unwrap();
        let h = batch::validate_producer_records(&b).unwrap()[0].header;
        assert_eq!((h.records_count, h.max_timestamp, h.compression(), h.producer_id), (3, 1100, 0, -1));
        let rs = records::read_records(&b).unwrap();
        let got: Vec<_> = rs.iter().map(|r| (r.offset, r.key.as_deref().map(<[u8]>::to_vec), r.value.as_deref().map(<[u8]>::to_vec), r.timestamp)).collect();
        assert_eq!(got, vec![(0, Some(b"k1".to_vec()), Some(b"v1".to_vec()), 1000), (1, None, Some(b"v2".to_vec()), 900), (2, Some(b"k3".to_vec()), None, 1100)]);
    }

    #[test]
    fn magic_0_has_no_timestamps_and_a_cut_tail_is_trimmed() {
        let s = set(0, &[(Some(b"a"), Some(b"b"), 5), (Some(b"c"), Some(b"d"), 5)], 0);
        let cut = s.slice(..s.len() - 3);
        let rs = records::read_records(&to_batch(&cut).unwrap()).unwrap();
        assert_eq!(rs.len(), 1, "the cut second message is left out");
        assert_eq!(rs[0].timestamp, -1);
        assert!(to_batch(&s.slice(..10)).is_err(), "no whole message at all");
    }

    #[test]
    fn damage_is_corrupt_message_not_a_panic() {
        let s = set(1, &[(Some(b"key"), Some(b"value"), 7)], 0);
        let mut bad = s.to_vec();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(to_batch(&Bytes::from(bad)), Err(LogError::CorruptBatch(_))));
        for cut in 0..s.len() {
            let mut v = s.to_vec();
            v[8..12].copy_from_slice(&(cut as i32).to_be_bytes()); // every wrong size
            let _ = to_batch(&Bytes::from(v));
        }
        let mut magic2 = s.to_vec();
        magic2[16] = 2;
        let crc = crc32fast::hash(&magic2[16..]);
        magic2[12..16].copy_from_slice(&crc.to_be_bytes());
        assert!(to_batch(&Bytes::from(magic2)).is_err());
    }

    #[test]
    fn a_compressed_wrapper_is_unpacked_and_its_codec_kept() {
        for codec in 1..=3u8 {
            let inner = set(1, &[(Some(b"x"), Some(b"one"), 10), (Some(b"y"), Some(b"two"), 20)], 0);
            let packed = compression::compress(codec, &inner).unwrap();
            let wrapper = set(1, &[(None, Some(&packed), 20)], codec as i8);
            let b = to_batch(&wrapper).unwrap();
            let h = batch::validate_producer_records(&b).unwrap()[0].header;
            assert_eq!((h.compression(), h.records_count), (codec, 2), "codec {codec}");
            let rs = records::read_records(&b).unwrap();
            assert_eq!((rs[1].value.as_deref(), rs[1].timestamp), (Some(&b"two"[..]), 20));
        }
        let zstd = set(1, &[(None, Some(b"whatever"), 1)], 4);
        assert!(matches!(to_batch(&zstd), Err(LogError::InvalidRecord(_))));
    }

    #[test]
    fn batches_come_back_as_messages_from_the_fetch_offset() {
        let b1 = records::build_batch(&[
            NewRecord { key: Some(b"a"), value: Some(b"1"), timestamp: 100, headers: &[("h", Some(b"dropped"))] },
            NewRecord { key: None, value: Some(b"2"), timestamp: 200, headers: &[] },
            NewRecord { key: Some(b"c"), value: None, timestamp: 300, headers: &[] },
        ]);
        let mut stored = b1.to_vec();
        stored[..8].copy_from_slice(&10i64.to_be_bytes()); // base offset 10 (outside the CRC)
        let stored = Bytes::from(stored);
        for magic in [0i8, 1] {
            let set = from_batches(&stored, 11, magic, &[], 1 << 20).unwrap();
            assert_eq!(count(&set), 2);
            let msgs = parse(&set, false).unwrap();
            assert_eq!(msgs.iter().map(|m| m.magic).collect::<Vec<_>>(), vec![magic; 2]);
            assert_eq!(msgs[0].value.as_deref(), Some(&b"2"[..]));
            assert_eq!(msgs[1].key.as_deref(), Some(&b"c"[..]));
            assert!(msgs[1].value.is_none());
            assert_eq!(msgs[1].timestamp, if magic == 1 { 300 } else { -1 });
            assert_eq!(i64::from_be_bytes(set[..8].try_into().unwrap()), 11, "absolute offsets");
            // A limit smaller than one message still returns that one.
            assert_eq!(count(&from_batches(&stored, 10, magic, &[], 1).unwrap()), 1);
        }
    }
}
