//! Helpers shared by the storage tests: building client-style batches.

#![allow(dead_code)]

use bytes::Bytes;

fn zigzag(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// One record for `batch`: key, value, timestamp.
#[derive(Clone, Debug)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: i64,
}

/// Encodes an uncompressed RecordBatch v2 as a client would send it (base
/// offset 0, no producer id), with a correct CRC-32C.
pub fn batch(records: &[Rec]) -> Bytes {
    let base_ts = records.first().map_or(0, |r| r.timestamp);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(-1);
    let mut body = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut rec = vec![0u8];
        zigzag(r.timestamp - base_ts, &mut rec);
        zigzag(i as i64, &mut rec);
        match &r.key {
            Some(k) => {
                zigzag(k.len() as i64, &mut rec);
                rec.extend_from_slice(k);
            }
            None => zigzag(-1, &mut rec),
        }
        zigzag(r.value.len() as i64, &mut rec);
        rec.extend_from_slice(&r.value);
        zigzag(0, &mut rec);
        zigzag(rec.len() as i64, &mut body);
        body.extend_from_slice(&rec);
    }
    let n = records.len() as i32;
    let mut b = Vec::with_capacity(61 + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(n - 1).to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// A batch of `n` records with values of `value_len` bytes, all stamped `ts`.
pub fn simple_batch(n: usize, value_len: usize, ts: i64) -> Bytes {
    let recs: Vec<Rec> = (0..n).map(|i| Rec { key: Some(format!("k{i}").into_bytes()), value: vec![b'x'; value_len], timestamp: ts }).collect();
    batch(&recs)
}

/// Splits a read result into batches: (base offset, last offset, bytes).
pub fn split_batches(b: &Bytes) -> Vec<(u64, u64, Bytes)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 61 <= b.len() {
        let base = i64::from_be_bytes(b[pos..pos + 8].try_into().unwrap()) as u64;
        let len = 12 + i32::from_be_bytes(b[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let delta = i32::from_be_bytes(b[pos + 23..pos + 27].try_into().unwrap()) as u64;
        out.push((base, base + delta, b.slice(pos..pos + len)));
        pos += len;
    }
    assert_eq!(pos, b.len(), "read returned a partial batch");
    out
}

/// True when the batch's CRC-32C matches.
pub fn crc_ok(b: &[u8]) -> bool {
    u32::from_be_bytes(b[17..21].try_into().unwrap()) == crc32c::crc32c(&b[21..])
}

/// A temporary directory on tmpfs when the machine has one: these tests
/// damage and reopen logs many times, and what they check does not depend
/// on fsync reaching a disk (the crash test uses the real disk).
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("eddy-test-").tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}

/// The batch with idempotent-producer fields set (and its CRC fixed).
pub fn with_producer(b: &Bytes, producer_id: i64, epoch: i16, base_sequence: i32) -> Bytes {
    eddy::log::records::with_producer(b, producer_id, epoch, base_sequence, false)
}

/// A small deterministic random generator (xorshift64) for tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
