//! Turning what was read from a source partition into records the engine
//! can take: batches decoded (skipping control batches and aborted
//! transactions), each record's key, event time and inputs extracted. This
//! is most of a processor's work, and it is independent per source
//! partition, so with `threads > 1` a pool of parse workers does it for
//! several partitions at once while the task thread applies the results in
//! each partition's order.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;

use super::config::ProcessorSpec;
use super::extract::{self, Bad, Extracted};
use crate::log::batch::whole_batches;
use crate::log::records;
use crate::log::txn::AbortedTxn;
use crate::log::LogError;

/// One source record, parsed.
pub struct Parsed {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub result: Result<Extracted, Bad>,
}

/// Whole batches read from one source partition, and what to parse.
pub struct Read {
    pub source: usize,
    /// The first offset wanted (the first batch may start below it).
    pub from: u64,
    pub bytes: Bytes,
    /// Aborted transactions overlapping the read (their data is skipped).
    pub aborted: Vec<AbortedTxn>,
}

/// A parsed read.
pub struct Chunk {
    pub source: usize,
    pub records: Vec<Parsed>,
    /// The offset after the chunk's last batch.
    pub next: u64,
}

/// The offset after the last whole batch in `bytes` (`from` if none).
pub fn end_of(bytes: &[u8], from: u64) -> u64 {
    whole_batches(bytes).last().map_or(from, |(h, _)| h.next_offset() as u64)
}

pub fn parse(spec: &ProcessorSpec, read: Read) -> Result<Chunk, LogError> {
    let Read { source, from, bytes, aborted } = read;
    let mut out = Vec::new();
    let mut next = from;
    for (h, range) in whole_batches(&bytes) {
        let batch = bytes.slice(range);
        let base = h.base_offset as u64;
        let skip = h.is_control() || (h.is_transactional() && aborted.iter().any(|a| a.producer_id == h.producer_id && a.first_offset <= base && base <= a.last_offset));
        if !skip {
            out.reserve(h.records_count.clamp(0, 100_000) as usize);
            for rec in records::read_records_shared(&batch)? {
                let offset = rec.offset as u64;
                if offset < from {
                    continue;
                }
                let result = extract::extract(spec, rec.key.as_deref(), rec.value.as_deref(), rec.timestamp);
                out.push(Parsed { offset, timestamp: rec.timestamp, key: rec.key, value: rec.value, result });
            }
        }
        next = h.next_offset() as u64;
    }
    Ok(Chunk { source, records: out, next })
}

/// Parse workers. Reads of one source partition always go to the same
/// worker, and each worker answers in the order it was asked, so chunks of
/// a partition come back in order.
pub struct Pool {
    jobs: Vec<Sender<Read>>,
    replies: Receiver<Result<Chunk, String>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    pub fn new(spec: &Arc<ProcessorSpec>, threads: usize) -> Pool {
        let (reply_tx, replies) = channel();
        let mut jobs = Vec::with_capacity(threads);
        let mut workers = Vec::with_capacity(threads);
        for n in 0..threads {
            let (tx, rx) = channel::<Read>();
            let (spec, reply) = (Arc::clone(spec), reply_tx.clone());
            let worker = std::thread::Builder::new()
                .name(format!("proc-{}-parse{n}", spec.name))
                .spawn(move || {
                    while let Ok(read) = rx.recv() {
                        // A panic (a bug) comes back as an error, so the task
                        // fails and restarts instead of waiting forever.
                        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&spec, read)));
                        let answer = match parsed {
                            Ok(r) => r.map_err(|e| e.to_string()),
                            Err(_) => Err("a parse worker panicked".to_string()),
                        };
                        if reply.send(answer).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawn a parse worker");
            jobs.push(tx);
            workers.push(worker);
        }
        Pool { jobs, replies, workers }
    }

    pub fn submit(&self, read: Read) {
        let n = read.source % self.jobs.len();
        // A worker only stops when the pool is dropped.
        let _ = self.jobs[n].send(read);
    }

    /// A parsed chunk, waiting up to `wait` for one.
    pub fn next(&self, wait: std::time::Duration) -> Option<Result<Chunk, String>> {
        if wait.is_zero() {
            self.replies.try_recv().ok()
        } else {
            self.replies.recv_timeout(wait).ok()
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::records::{build_batch, with_producer, NewRecord};

    fn spec() -> ProcessorSpec {
        let t: toml::Value = toml::from_str(
            r#"
            source = { topics = ["in"] }
            key = { fields = ["k"] }
            window = { type = "tumbling", size = "1s", grace = "0s" }
            aggregates = { n = { fn = "count" } }
            output = { topic = "out" }
            "#,
        )
        .unwrap();
        super::super::config::parse("p", &t).unwrap()
    }

    /// A batch of records `{"k":"<name>"}` whose first offset is `base`.
    fn batch(base: i64, names: &[&str]) -> Vec<u8> {
        let values: Vec<String> = names.iter().map(|n| format!(r#"{{"k":"{n}"}}"#)).collect();
        let recs: Vec<NewRecord> = values.iter().map(|v| NewRecord { key: None, value: Some(v.as_bytes()), timestamp: 5, headers: &[] }).collect();
        let mut b = build_batch(&recs).to_vec();
        b[..8].copy_from_slice(&base.to_be_bytes());
        b
    }

    #[test]
    fn parse_skips_aborted_data_and_offsets_below_the_start() {
        let mut bytes = batch(10, &["a", "b", "c"]);
        let aborted = with_producer(&Bytes::from(batch(13, &["x", "y"])), 7, 0, 0, true);
        bytes.extend_from_slice(&aborted);
        bytes.extend_from_slice(&batch(15, &["d"]));
        let bytes = Bytes::from(bytes);
        assert_eq!(end_of(&bytes, 11), 16);
        assert_eq!(end_of(&bytes[..bytes.len() - 1], 11), 15, "a cut batch is not counted");
        let read = Read { source: 3, from: 11, bytes, aborted: vec![AbortedTxn { producer_id: 7, first_offset: 13, last_offset: 20 }] };
        let chunk = parse(&spec(), read).unwrap();
        assert_eq!(chunk.source, 3);
        assert_eq!(chunk.next, 16);
        let got: Vec<(u64, String)> = chunk.records.iter().map(|p| (p.offset, p.result.as_ref().unwrap().key.clone())).collect();
        assert_eq!(got, vec![(11, "\"b\"".to_string()), (12, "\"c\"".to_string()), (15, "\"d\"".to_string())]);
    }

    #[test]
    fn the_pool_returns_each_partitions_chunks_in_order() {
        let spec = Arc::new(spec());
        let pool = Pool::new(&spec, 2);
        for round in 0..20u64 {
            for source in 0..3 {
                let base = (round * 2) as i64;
                pool.submit(Read { source, from: base as u64, bytes: Bytes::from(batch(base, &["a", "b"])), aborted: Vec::new() });
            }
        }
        let mut next = [0u64; 3];
        for _ in 0..60 {
            let c = pool.next(std::time::Duration::from_secs(10)).expect("a chunk").unwrap();
            assert_eq!(c.records[0].offset, next[c.source], "source {} out of order", c.source);
            next[c.source] = c.next;
        }
        assert_eq!(next, [40; 3]);
        assert!(pool.next(std::time::Duration::ZERO).is_none());
    }
}
