//! A processor's engine split by key over worker threads, so one processor
//! uses several cores. Each key belongs to one shard (xxh3 of the key), and
//! a record reaches its shard together with the watermark it was judged
//! under, so every key sees exactly the sequence of watermarks and records
//! it would see in a single engine: the output per key is the same, only
//! the interleaving of different keys' output changes. The reading thread
//! parses records, routes them, and collects output and late records at the
//! end of each round (one writer keeps the output's order and sequences).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::aggregate::Input;
use super::config::ProcessorSpec;
use super::engine::{Emission, Engine, EngineDelta, EngineState, Key, Win};

/// A record for a worker: key, event time, inputs, the watermark it is
/// judged under, and its tag.
type Routed<T> = (Key, i64, Vec<Input>, Option<i64>, T);

/// Requests to a worker.
enum Req<T> {
    /// Records in order (sent in batches: one channel operation per batch).
    Records(Vec<Routed<T>>),
    Advance(i64),
    Flush,
    /// Reply with the output and late records gathered so far.
    Collect,
    /// Reply with the engine's whole state (a base checkpoint).
    Snapshot,
    /// Reply with what changed since the last snapshot or changes (a delta).
    Changes,
    /// Reply with a key's windows overlapping [from, to].
    Windows(Key, i64, i64),
}

enum Reply<T> {
    Collected(Vec<Emission>, Vec<T>),
    State(Box<EngineState>),
    Changes(Box<EngineDelta>),
    Windows(Vec<(i64, i64, Win)>),
}

/// One worker thread and its channels.
pub struct Worker<T> {
    to: SyncSender<Req<T>>,
    from: Receiver<Reply<T>>,
    thread: Option<JoinHandle<()>>,
}

/// Batches queued per worker before the reader waits (backpressure).
const QUEUE: usize = 64;
/// Records gathered for a worker before they are sent.
const BATCH: usize = 512;

/// One engine in this thread, or one per worker thread.
pub enum Engines<T: Send + 'static> {
    One { engine: Box<Engine>, out: Vec<Emission>, late: Vec<T> },
    /// `watermark`: the last one sent to every worker; `pending`: records
    /// gathered per worker, not sent yet.
    Many { workers: Vec<Worker<T>>, watermark: Option<i64>, pending: Vec<Vec<Routed<T>>> },
}

fn shard_of(key: &str, n: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % n as u64) as usize
}

/// Adds one routed record to an engine: first the watermark it is judged
/// under, then the record; a late record's tag goes to `late`.
fn feed<T>(engine: &mut Engine, out: &mut Vec<Emission>, late: &mut Vec<T>, (key, time, inputs, watermark, tag): Routed<T>) {
    if let Some(w) = watermark {
        engine.advance(w, out);
    }
    if !engine.process(key, time, inputs) {
        late.push(tag);
    }
}

fn work<T: Send + 'static>(mut engine: Engine, rx: Receiver<Req<T>>, tx: std::sync::mpsc::Sender<Reply<T>>) {
    let mut out = Vec::new();
    let mut late = Vec::new();
    while let Ok(req) = rx.recv() {
        match req {
            Req::Records(batch) => {
                for r in batch {
                    feed(&mut engine, &mut out, &mut late, r);
                }
            }
            Req::Advance(w) => engine.advance(w, &mut out),
            Req::Flush => engine.flush(&mut out),
            Req::Collect => {
                if tx.send(Reply::Collected(std::mem::take(&mut out), std::mem::take(&mut late))).is_err() {
                    return;
                }
            }
            Req::Snapshot => {
                if tx.send(Reply::State(Box::new(engine.snapshot()))).is_err() {
                    return;
                }
            }
            Req::Changes => {
                if tx.send(Reply::Changes(Box::new(engine.changes()))).is_err() {
                    return;
                }
            }
            Req::Windows(key, from, to) => {
                let found = engine.windows_of(&key, from, to).into_iter().map(|(s, e, w)| (s, e, w.clone())).collect();
                if tx.send(Reply::Windows(found)).is_err() {
                    return;
                }
            }
        }
    }
}

impl<T: Send + 'static> Engines<T> {
    /// `threads` engines (one: in this thread), restored from `state`.
    pub fn new(spec: &Arc<ProcessorSpec>, state: Option<EngineState>, threads: usize) -> Engines<T> {
        if threads <= 1 {
            let engine = match state {
                Some(s) => Engine::from_state(Arc::clone(spec), s),
                None => Engine::new(Arc::clone(spec)),
            };
            return Engines::One { engine: Box::new(engine), out: Vec::new(), late: Vec::new() };
        }
        let watermark = state.as_ref().and_then(|s| s.watermark);
        let parts = match state {
            Some(s) => s.split(threads, |k| shard_of(k, threads)),
            None => vec![EngineState::default(); threads],
        };
        let workers = parts
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let (to, rx) = sync_channel(QUEUE);
                let (tx, from) = std::sync::mpsc::channel();
                let engine = Engine::from_state(Arc::clone(spec), s);
                let thread = std::thread::Builder::new().name(format!("processor-{}-{i}", spec.name)).spawn(move || work(engine, rx, tx)).expect("spawn a processor worker");
                Worker { to, from, thread: Some(thread) }
            })
            .collect();
        Engines::Many { pending: (0..threads).map(|_| Vec::new()).collect(), workers, watermark }
    }

    /// Sends the records gathered for each worker.
    fn send_pending(&mut self) {
        if let Engines::Many { workers, pending, .. } = self {
            for (wk, p) in workers.iter().zip(pending.iter_mut()) {
                if !p.is_empty() {
                    let _ = wk.to.send(Req::Records(std::mem::take(p)));
                }
            }
        }
    }

    /// Adds a record, judged under `watermark` (the current one when None).
    /// `tag` comes back from `collect` if the record was late.
    pub fn process(&mut self, key: Key, time: i64, inputs: Vec<Input>, watermark: Option<i64>, tag: T) {
        match self {
            Engines::One { engine, out, late } => feed(engine, out, late, (key, time, inputs, watermark, tag)),
            Engines::Many { workers, pending, .. } => {
                let i = shard_of(&key, workers.len());
                pending[i].push((key, time, inputs, watermark, tag));
                if pending[i].len() >= BATCH {
                    let _ = workers[i].to.send(Req::Records(std::mem::take(&mut pending[i])));
                }
            }
        }
    }

    pub fn advance(&mut self, w: i64) {
        self.send_pending();
        match self {
            Engines::One { engine, out, .. } => engine.advance(w, out),
            Engines::Many { workers, watermark, .. } => {
                if watermark.is_none_or(|c| w > c) {
                    *watermark = Some(w);
                    for wk in workers.iter() {
                        let _ = wk.to.send(Req::Advance(w));
                    }
                }
            }
        }
    }

    /// emit = changes: every changed window, at the next `collect`.
    pub fn flush(&mut self) {
        self.send_pending();
        match self {
            Engines::One { engine, out, .. } => engine.flush(out),
            Engines::Many { workers, .. } => {
                for wk in workers.iter() {
                    let _ = wk.to.send(Req::Flush);
                }
            }
        }
    }

    /// Output and late records so far (waits for every worker to catch up).
    pub fn collect(&mut self, into: &mut Vec<Emission>, late_into: &mut Vec<T>) -> Result<(), String> {
        self.send_pending();
        match self {
            Engines::One { out, late, .. } => {
                into.append(out);
                late_into.append(late);
                Ok(())
            }
            Engines::Many { workers, .. } => {
                for wk in workers.iter() {
                    wk.to.send(Req::Collect).map_err(|_| "a processor worker stopped".to_string())?;
                }
                for wk in workers.iter() {
                    match wk.from.recv() {
                        Ok(Reply::Collected(mut o, mut l)) => {
                            into.append(&mut o);
                            late_into.append(&mut l);
                        }
                        _ => return Err("a processor worker stopped".into()),
                    }
                }
                Ok(())
            }
        }
    }

    /// The whole state (after a `collect`, for a base checkpoint); what
    /// changes from here on goes into the next `changes`.
    pub fn snapshot(&mut self) -> Result<EngineState, String> {
        let parts = self.ask_all(|| Req::Snapshot, Engine::snapshot, |r| match r {
            Reply::State(s) => Some(*s),
            _ => None,
        })?;
        Ok(EngineState::merge(parts))
    }

    /// What changed since the previous `snapshot` or `changes` (after a
    /// `collect`, for a delta checkpoint record).
    pub fn changes(&mut self) -> Result<EngineDelta, String> {
        let parts = self.ask_all(|| Req::Changes, Engine::changes, |r| match r {
            Reply::Changes(d) => Some(*d),
            _ => None,
        })?;
        Ok(EngineDelta::merge(parts))
    }

    /// One answer per engine: `local` of the engine in this thread, or each
    /// worker's reply to `req`.
    fn ask_all<R>(&mut self, req: fn() -> Req<T>, local: fn(&mut Engine) -> R, reply: fn(Reply<T>) -> Option<R>) -> Result<Vec<R>, String> {
        self.send_pending();
        match self {
            Engines::One { engine, .. } => Ok(vec![local(engine)]),
            Engines::Many { workers, .. } => {
                for wk in workers.iter() {
                    wk.to.send(req()).map_err(|_| "a processor worker stopped".to_string())?;
                }
                let mut parts = Vec::with_capacity(workers.len());
                for wk in workers.iter() {
                    match wk.from.recv().ok().and_then(reply) {
                        Some(r) => parts.push(r),
                        None => return Err("a processor worker stopped".into()),
                    }
                }
                Ok(parts)
            }
        }
    }

    /// A key's current windows overlapping [from, to], with every record
    /// handed over so far applied (interactive queries).
    pub fn windows(&mut self, key: &str, from: i64, to: i64) -> Result<Vec<(i64, i64, Win)>, String> {
        self.send_pending();
        match self {
            Engines::One { engine, .. } => Ok(engine.windows_of(key, from, to).into_iter().map(|(s, e, w)| (s, e, w.clone())).collect()),
            Engines::Many { workers, .. } => {
                let wk = &workers[shard_of(key, workers.len())];
                wk.to.send(Req::Windows(key.to_string(), from, to)).map_err(|_| "a processor worker stopped".to_string())?;
                match wk.from.recv() {
                    Ok(Reply::Windows(w)) => Ok(w),
                    _ => Err("a processor worker stopped".into()),
                }
            }
        }
    }

    pub fn watermark(&self) -> Option<i64> {
        match self {
            Engines::One { engine, .. } => engine.watermark(),
            Engines::Many { watermark, .. } => *watermark,
        }
    }
}

impl<T: Send + 'static> Drop for Engines<T> {
    fn drop(&mut self) {
        if let Engines::Many { workers, .. } = self {
            for wk in workers.iter_mut() {
                // Dropping the sender ends the worker's loop.
                let (dead, _) = sync_channel(0);
                drop(std::mem::replace(&mut wk.to, dead));
                if let Some(t) = wk.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}
