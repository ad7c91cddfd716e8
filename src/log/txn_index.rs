//! `<base>.txnindex`: the aborted transactions whose abort marker lies in a
//! segment, so opening a log needs no walk of its batches to know what a
//! `read_committed` reader must skip (see storage-format.md §11c).
//!
//! Kafka's layout: 34-byte entries, each an i16 version (0), i64 producer id,
//! i64 first offset, i64 last offset (the marker's) and i64 last stable
//! offset when the transaction ended; big-endian, appended in marker order.
//! The file exists only once a segment holds an abort marker.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::txn::AbortedTxn;

pub const ENTRY: usize = 34;

pub fn path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.txnindex", super::segment::file_stem(base)))
}

/// One entry: the aborted transaction and the last stable offset just
/// after it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub txn: AbortedTxn,
    pub last_stable_offset: u64,
}

pub fn encode(e: &Entry) -> [u8; ENTRY] {
    let mut b = [0u8; ENTRY];
    b[2..10].copy_from_slice(&e.txn.producer_id.to_be_bytes());
    b[10..18].copy_from_slice(&e.txn.first_offset.to_be_bytes());
    b[18..26].copy_from_slice(&e.txn.last_offset.to_be_bytes());
    b[26..34].copy_from_slice(&e.last_stable_offset.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Result<Vec<Entry>, &'static str> {
    if b.len() % ENTRY != 0 {
        return Err("length is not a whole number of entries");
    }
    let u64_at = |e: &[u8], at: usize| u64::from_be_bytes(e[at..at + 8].try_into().expect("8 bytes"));
    b.chunks_exact(ENTRY)
        .map(|e| {
            if e[0..2] != [0, 0] {
                return Err("unknown entry version");
            }
            let txn = AbortedTxn { producer_id: u64_at(e, 2) as i64, first_offset: u64_at(e, 10), last_offset: u64_at(e, 18) };
            if txn.first_offset > txn.last_offset {
                return Err("entry ends before it starts");
            }
            Ok(Entry { txn, last_stable_offset: u64_at(e, 26) })
        })
        .collect()
}

/// The entries of a txnindex file: none when it does not exist; Err(reason)
/// when it is damaged.
pub fn read(path: &Path) -> io::Result<Result<Vec<Entry>, &'static str>> {
    match fs::read(path) {
        Ok(b) => Ok(decode(&b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ok(Vec::new())),
        Err(e) => Err(e),
    }
}

/// Appends one entry (made durable when its segment is sealed or closed).
pub fn append(path: &Path, e: &Entry) -> io::Result<()> {
    OpenOptions::new().create(true).append(true).open(path)?.write_all(&encode(e))
}

/// Replaces the file with exactly `entries` (an empty file for none),
/// durably: tmp, fsync, rename. The caller syncs the directory.
pub fn write(path: &Path, entries: &[Entry]) -> io::Result<()> {
    let bytes: Vec<u8> = entries.iter().flat_map(encode).collect();
    super::checkpoint::replace_file(path, &bytes)
}

/// fsync of the file, if it exists.
pub fn sync(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), 42);
        assert_eq!(read(&p).unwrap(), Ok(vec![]), "a missing file holds nothing");
        let e1 = Entry { txn: AbortedTxn { producer_id: 7, first_offset: 10, last_offset: 15 }, last_stable_offset: 16 };
        let e2 = Entry { txn: AbortedTxn { producer_id: -1i64 as u64 as i64 ^ 5, first_offset: 3, last_offset: 20 }, last_stable_offset: 21 };
        append(&p, &e1).unwrap();
        append(&p, &e2).unwrap();
        assert_eq!(read(&p).unwrap(), Ok(vec![e1, e2]));
        assert_eq!(fs::metadata(&p).unwrap().len(), 2 * ENTRY as u64);
        let mut b = fs::read(&p).unwrap();
        b.pop();
        fs::write(&p, &b).unwrap();
        assert!(read(&p).unwrap().is_err());
        b.push(0);
        b[0] = 1;
        fs::write(&p, &b).unwrap();
        assert!(read(&p).unwrap().is_err(), "an unknown version");
        write(&p, &[e2]).unwrap();
        assert_eq!(read(&p).unwrap(), Ok(vec![e2]));
        write(&p, &[]).unwrap();
        assert_eq!(read(&p).unwrap(), Ok(vec![]));
    }
}
