//! A processor's checkpoint files (storage-format.md §14): a base with the
//! whole state, `<name>.checkpoint`, and a delta file,
//! `<name>.checkpoint.delta`, of CRC-framed records appended after it, each
//! holding what changed since the record (or base) before it. So a
//! checkpoint costs what changed, not the size of the state; once the delta
//! file would outgrow the base, the next checkpoint is a new base.
//!
//! Both files carry a generation: a new base takes the next one and is
//! durable before the empty delta file of that generation replaces the old
//! one, so a delta of an older generation (a crash between the two) is
//! stale and ignored, never applied to a newer base.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::engine::{EngineDelta, EngineState};

const BASE_MAGIC: &[u8; 4] = b"EDPC";
/// Version 1 (no generation) is still read, as generation 0 with no delta.
const BASE_VERSION: u16 = 2;
const DELTA_MAGIC: &[u8; 4] = b"EDPD";
const DELTA_VERSION: u16 = 1;
/// Magic, version, generation, CRC-32.
const DELTA_HEADER: usize = 18;
/// Body length, CRC-32 (of length and body).
const FRAME_HEADER: usize = 8;

/// A source partition's position: (topic, partition, next offset, highest
/// event time).
pub type Position = (String, i32, u64, Option<i64>);

/// A base checkpoint (JSON inside the envelope).
#[derive(Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub fingerprint: String,
    pub sources: Vec<Position>,
    pub engine: EngineState,
    /// guarantee = exactly_once: the transaction this checkpoint commits.
    #[serde(default)]
    pub txn: Option<TxnCheckpoint>,
}

/// A delta record: what changed since the previous record or base, with
/// the positions and transaction of this checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delta {
    pub sources: Vec<Position>,
    pub engine: EngineDelta,
    #[serde(default)]
    pub txn: Option<TxnCheckpoint>,
}

/// The producer a processor writes its output with (exactly_once), and the
/// partitions whose transaction the checkpoint commits: after the checkpoint
/// is durable, commit markers are written to them (again, after a crash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnCheckpoint {
    pub producer_id: i64,
    pub epoch: i16,
    /// (dead-letter topic?, partition, log end after the transaction's
    /// data was fsynced): an open transaction of the producer that starts
    /// below that end is the one this checkpoint commits; one starting at
    /// or after it was written later, and is aborted.
    pub committing: Vec<(bool, usize, u64)>,
}

/// What a processor finds on start.
#[derive(Debug)]
pub enum Loaded {
    /// No checkpoint (no base file).
    None,
    /// The newest checkpoint: the base with its delta records applied.
    Usable(Checkpoint),
    /// A checkpoint that cannot be used, and the `txn` member of its newest
    /// readable record (None: no record could be read).
    Damaged { reason: String, txn: Option<Option<TxnCheckpoint>> },
}

pub fn delta_path(path: &Path) -> PathBuf {
    crate::log::segment::with_suffix(path.to_path_buf(), ".delta")
}

/// The generation and JSON body of a base file.
fn base_body(b: &[u8]) -> Result<(u64, &[u8]), String> {
    if b.len() < 10 || &b[..4] != BASE_MAGIC {
        return Err("not a processor checkpoint".into());
    }
    let version = u16::from_be_bytes([b[4], b[5]]);
    let (generation, body_at) = match version {
        1 => (0, 6),
        BASE_VERSION if b.len() >= 18 => (u64::from_be_bytes(b[6..14].try_into().expect("8 bytes")), 14),
        _ => return Err("unknown checkpoint version".into()),
    };
    let (head, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(head).to_be_bytes() != crc {
        return Err("checksum mismatch".into());
    }
    Ok((generation, &head[body_at..]))
}

fn delta_generation(b: &[u8]) -> Result<u64, String> {
    if b.len() < DELTA_HEADER || &b[..4] != DELTA_MAGIC || u16::from_be_bytes([b[4], b[5]]) != DELTA_VERSION {
        return Err("the delta file has no valid header".into());
    }
    if crc32fast::hash(&b[..14]).to_be_bytes() != b[14..18] {
        return Err("the delta file's header fails its checksum".into());
    }
    Ok(u64::from_be_bytes(b[6..14].try_into().expect("8 bytes")))
}

fn delta_header(generation: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(DELTA_HEADER);
    b.extend_from_slice(DELTA_MAGIC);
    b.extend_from_slice(&DELTA_VERSION.to_be_bytes());
    b.extend_from_slice(&generation.to_be_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

fn frame_crc(len: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(body);
    h.finalize()
}

/// The bodies of a delta file's records after its header, in order. A bad
/// record (short, reaching past the end, or failing its CRC) ends them: it
/// is taken for a torn tail, and the records before it apply. Only the last
/// append can be unsynced, and a multi-page append can reach the disk out of
/// order (its tail written, its first page not), so a bad record followed
/// by nonzero bytes is torn too; the second member then says so (for a
/// warning). Were it real damage in the middle, the records before it are
/// still an earlier checkpoint, consistent in itself.
fn delta_bodies(b: &[u8]) -> (Vec<&[u8]>, Option<String>) {
    let mut bodies = Vec::new();
    let mut at = DELTA_HEADER;
    while at < b.len() {
        let rest = &b[at..];
        let frame = (rest.len() >= FRAME_HEADER).then(|| {
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            (len, FRAME_HEADER.saturating_add(len))
        });
        match frame {
            Some((len, end)) if end <= rest.len() && frame_crc(&rest[..4], &rest[FRAME_HEADER..end]).to_be_bytes() == rest[4..8] => {
                bodies.push(&rest[FRAME_HEADER..FRAME_HEADER + len]);
                at += end;
            }
            // Torn: the crash came mid-append.
            Some((_, end)) if end < rest.len() && rest[end..].iter().any(|&x| x != 0) => {
                let n = bodies.len();
                return (bodies, Some(format!("the delta record at byte {at} is bad and nonzero bytes follow it; taken for a torn append, the checkpoint rolls back to the {n} records before it")));
            }
            _ => break,
        }
    }
    (bodies, None)
}

/// Reads a processor's checkpoint: the base at `path` and the records of a
/// delta file of the same generation. Also returns the highest generation
/// found in either file's header, which the next base must exceed.
pub fn load(path: &Path) -> (Loaded, u64) {
    let base = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Loaded::None, delta_file_generation(path)),
        Err(e) => return (Loaded::Damaged { reason: e.to_string(), txn: None }, delta_file_generation(path)),
    };
    let base = base_body(&base);
    let delta = match std::fs::read(delta_path(path)) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            let (generation, txn) = base.map_or((0, None), |(g, body)| (g, newest_txn(&[body])));
            return (Loaded::Damaged { reason: format!("delta file: {e}"), txn }, generation);
        }
    };
    let header = delta.as_deref().map(delta_generation);
    let delta_gen = header.as_ref().and_then(|h| h.as_ref().ok().copied()).unwrap_or(0);
    let (generation, body) = match base {
        Ok(x) => x,
        Err(reason) => return (Loaded::Damaged { reason, txn: None }, delta_gen),
    };
    // The base's body, then the bodies of the delta records that apply to it.
    let mut records = vec![body];
    let mut damage = Ok(());
    if let (Some(d), Some(header)) = (&delta, header) {
        match header {
            // Generation 0 is a version-1 base's, which has no deltas.
            Ok(g) if g == generation && g > 0 => {
                let (bodies, torn) = delta_bodies(d);
                if let Some(warning) = torn {
                    tracing::warn!(path = %path.display(), "{warning}");
                }
                records.extend(bodies);
            }
            // Left by a crash between a new base and its empty delta file.
            Ok(g) if g <= generation => {}
            Ok(g) => damage = Err(format!("the delta file's generation {g} is newer than the base's {generation}")),
            Err(reason) => damage = Err(reason),
        }
    }
    let top = generation.max(delta_gen);
    let loaded = damage.and_then(|()| assemble(&records)).unwrap_or_else(|reason| Loaded::Damaged { reason, txn: newest_txn(&records) });
    (loaded, top)
}

/// The generation in the delta file's header (0: none readable).
fn delta_file_generation(path: &Path) -> u64 {
    let mut header = [0; DELTA_HEADER];
    let read = File::open(delta_path(path)).and_then(|mut f| f.read_exact(&mut header));
    read.ok().and_then(|()| delta_generation(&header).ok()).unwrap_or(0)
}

/// The checkpoint of a base body and the delta bodies after it.
fn assemble(records: &[&[u8]]) -> Result<Loaded, String> {
    let mut c: Checkpoint = serde_json::from_slice(records[0]).map_err(|e| e.to_string())?;
    let mut deltas = Vec::with_capacity(records.len() - 1);
    for (i, r) in records[1..].iter().enumerate() {
        let d: Delta = serde_json::from_slice(r).map_err(|e| format!("delta record {i}: {e}"))?;
        c.sources = d.sources;
        c.txn = d.txn;
        deltas.push(d.engine);
    }
    c.engine = std::mem::take(&mut c.engine).apply(deltas);
    Ok(Loaded::Usable(c))
}

/// The `txn` member of the newest record whose JSON has one (sound even if
/// the rest of it cannot be read).
fn newest_txn(records: &[&[u8]]) -> Option<Option<TxnCheckpoint>> {
    #[derive(Deserialize)]
    struct TxnOnly {
        #[serde(default)]
        txn: Option<TxnCheckpoint>,
    }
    records.iter().rev().find_map(|r| serde_json::from_slice::<TxnOnly>(r).ok()).map(|t| t.txn)
}

/// Writes a processor's checkpoints: the first one after a start is a new
/// base; after that, delta records while the delta file stays within the
/// base's size.
pub struct Writer {
    path: PathBuf,
    /// The generation of the base last written (or found on start).
    generation: u64,
    /// The delta file of the current base, open for appends, and its length.
    delta: Option<(File, u64)>,
    base_len: u64,
    /// Tests: how many of the next fsyncs of the delta file fail.
    #[cfg(test)]
    fail_syncs: u32,
}

impl Writer {
    /// `generation`: the highest one found on start (`load`).
    pub fn new(path: PathBuf, generation: u64) -> Writer {
        Writer {
            path,
            generation,
            delta: None,
            base_len: 0,
            #[cfg(test)]
            fail_syncs: 0,
        }
    }

    /// Whether a delta record can be appended: this writer wrote a base,
    /// and no write failed since (after a failure the next checkpoint must
    /// be a new base).
    pub fn has_base(&self) -> bool {
        self.delta.is_some()
    }

    /// fdatasync of the delta file.
    fn sync(&mut self, file: &File) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail_syncs > 0 {
            self.fail_syncs -= 1;
            return Err(std::io::Error::other("an injected fsync failure"));
        }
        file.sync_data()
    }

    /// Appends `d` to the delta file and fsyncs it. Ok(false), writing
    /// nothing, when there is no base yet or the delta file would grow past
    /// the base: the checkpoint must be a new base.
    pub fn append(&mut self, d: &Delta) -> std::io::Result<bool> {
        let Some((_, len)) = &self.delta else { return Ok(false) };
        let mut b = vec![0; FRAME_HEADER];
        serde_json::to_writer(&mut b, d).map_err(std::io::Error::other)?;
        let body_len = u32::try_from(b.len() - FRAME_HEADER).map_err(|_| std::io::Error::other("a delta record over 4 GiB"))?;
        if len + b.len() as u64 > self.base_len {
            return Ok(false);
        }
        b[..4].copy_from_slice(&body_len.to_be_bytes());
        let crc = frame_crc(&b[..4], &b[FRAME_HEADER..]);
        b[4..8].copy_from_slice(&crc.to_be_bytes());
        let (mut file, len) = self.delta.take().expect("checked above");
        if let Err(e) = file.write_all(&b).and_then(|()| self.sync(&file)) {
            // Part or all of the record may be in the page cache, where a
            // restart in this process would read it (and commit its
            // transaction) though a power loss could still take it away.
            // Cut it off, durably; failing that, remove the delta file, which
            // rolls the checkpoint back to the base. Append no more.
            let rolled_back = file.set_len(len).and_then(|()| self.sync(&file));
            if let Err(cut) = rolled_back {
                let path = delta_path(&self.path);
                tracing::warn!(path = %path.display(), error = %cut, "cannot cut a failed checkpoint append off; removing the delta file");
                drop(file);
                let dir = self.path.parent().expect("a processors directory");
                if let Err(rm) = std::fs::remove_file(&path).and_then(|()| crate::log::checkpoint::sync_dir(dir)) {
                    tracing::error!(path = %path.display(), error = %rm, "cannot remove the delta file after a failed checkpoint append");
                }
            }
            return Err(e);
        }
        self.delta = Some((file, len + b.len() as u64));
        Ok(true)
    }

    /// Writes a new base of the next generation, durably, then replaces the
    /// delta file with an empty one of that generation.
    pub fn write_base(&mut self, c: &Checkpoint) -> std::io::Result<()> {
        self.delta = None;
        let generation = self.generation + 1;
        self.base_len = self.write_base_file(generation, c)?;
        self.generation = generation;
        self.start_delta()
    }

    /// The first step of `write_base`: the base file, durable.
    fn write_base_file(&self, generation: u64, c: &Checkpoint) -> std::io::Result<u64> {
        std::fs::create_dir_all(self.path.parent().expect("a processors directory"))?;
        let mut b = Vec::with_capacity(4096);
        b.extend_from_slice(BASE_MAGIC);
        b.extend_from_slice(&BASE_VERSION.to_be_bytes());
        b.extend_from_slice(&generation.to_be_bytes());
        serde_json::to_writer(&mut b, c).map_err(std::io::Error::other)?;
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        crate::log::checkpoint::write_atomically(&self.path, &b)?;
        Ok(b.len() as u64)
    }

    /// The second step: an empty delta file of the base's generation, open
    /// for appends.
    fn start_delta(&mut self) -> std::io::Result<()> {
        let path = delta_path(&self.path);
        let header = delta_header(self.generation);
        crate::log::checkpoint::write_atomically(&path, &header)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        self.delta = Some((file, header.len() as u64));
        Ok(())
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
pub(crate) mod tests;
