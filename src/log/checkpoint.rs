//! The per-partition checkpoint file: recovery point and log start offset.
//!
//! 28 bytes: `"EDCK"`, u16 version (1), u16 reserved (0), u64 recovery point,
//! u64 log start offset, u32 CRC-32 (IEEE, `crc32fast`) of the first 24
//! bytes; all big-endian. Written to `checkpoint.tmp`, fsynced, renamed over
//! `checkpoint`, then the directory is fsynced.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

pub const FILE_NAME: &str = "checkpoint";
const MAGIC: &[u8; 4] = b"EDCK";
const VERSION: u16 = 1;
pub const LEN: usize = 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub recovery_point: u64,
    pub log_start_offset: u64,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_be_bytes());
        b[8..16].copy_from_slice(&self.recovery_point.to_be_bytes());
        b[16..24].copy_from_slice(&self.log_start_offset.to_be_bytes());
        let crc = crc32fast::hash(&b[..24]);
        b[24..28].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Checkpoint, &'static str> {
        if b.len() != LEN {
            return Err("wrong length");
        }
        if &b[0..4] != MAGIC {
            return Err("bad magic");
        }
        if u16::from_be_bytes([b[4], b[5]]) != VERSION {
            return Err("unknown version");
        }
        if crc32fast::hash(&b[..24]).to_be_bytes() != b[24..28] {
            return Err("checksum mismatch");
        }
        let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        Ok(Checkpoint { recovery_point: u64_at(8), log_start_offset: u64_at(16) })
    }

    /// Reads the checkpoint of a partition directory. A missing file is
    /// `Ok(None)`; a damaged one is reported as `Err(reason)` so the caller
    /// can log it and fall back to a full recovery.
    pub fn read(dir: &Path) -> io::Result<Result<Option<Checkpoint>, &'static str>> {
        match fs::read(dir.join(FILE_NAME)) {
            Ok(b) => Ok(Checkpoint::decode(&b).map(Some)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ok(None)),
            Err(e) => Err(e),
        }
    }

    /// Writes atomically and durably (`write_atomically`).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        write_atomically(&dir.join(FILE_NAME), &self.encode())
    }
}

/// fsync of a directory, so that creates, renames and deletes in it persist.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces a small file atomically and durably (the checkpoints, topic
/// metadata, the cluster id, the producer-id block, the security files):
/// `<path>.tmp` is written and fsynced, renamed over `path`, and the
/// directory fsynced. A crash leaves the old file or the new one; a
/// stale `.tmp` is never read.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_file(path, bytes)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// `write_atomically` without the directory's fsync, for callers that
/// change more in the directory and sync it once afterwards: `<path>.tmp`
/// written and fsynced, then renamed over `path`.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = super::segment::with_suffix(path.to_path_buf(), ".tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_detected() {
        let c = Checkpoint { recovery_point: 12345, log_start_offset: 77 };
        let b = c.encode();
        assert_eq!(Checkpoint::decode(&b), Ok(c));
        for i in 0..LEN {
            let mut d = b;
            d[i] ^= 1;
            assert!(Checkpoint::decode(&d).is_err(), "flip at {i}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), Ok(None));
        c.write(dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), Ok(Some(c)));
    }
}
