//! The windowing engine of one processor: records in (key, event time,
//! aggregate inputs), the watermark advanced from outside, output records
//! out. Pure and synchronous: no I/O, no clock (the runtime drives it), so
//! tests feed it directly.
//!
//! Windows are keyed by (key, start, end). A time window is open while its
//! exclusive end is above `W − grace` and final once it is not: for
//! tumbling and hopping windows `[start, end)` that is `end > W − grace`;
//! sliding windows `[start, end]` include their end, so they are open while
//! `end + 1 > W − grace` (otherwise a record's own window, which ends at its
//! time, would close the moment it arrives with no grace). A session window
//! `[start, end]` (inclusive) is final once `end < W − grace − gap`; a record
//! is late for sessions when the session it would make ends before
//! `W − grace` (Kafka Streams' rule, which keeps a final session from ever
//! being extended). State of a window goes when `W ≥ end + retention`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::aggregate::{AggState, Input};
use super::config::{Emit, KeyFormat, ProcessorSpec, WindowKind};

/// A key: the JSON text of the key value (a string, a number, or an array
/// for composite keys).
pub type Key = String;
type WinId = (Key, i64, i64);
/// A window with its id, as checkpointed: (key, start, end, window).
pub type WindowEntry = (Key, i64, i64, Win);
/// A sliding-window record kept for recomputing windows: (event time, sequence, inputs).
pub type KeptRecord = (i64, u64, Vec<Input>);

/// One window's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Win {
    pub aggs: Vec<AggState>,
    /// The largest event time among its records (the output timestamp).
    pub max_ts: i64,
    /// A value was written to the output for it (so removing it needs a tombstone).
    pub emitted: bool,
    /// Its final value was written (emit = final).
    pub finalized: bool,
}

/// A record the engine emits for the output topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emission {
    pub key: Vec<u8>,
    /// None: a tombstone.
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    /// The bytes the output partition is chosen by: the inner key.
    pub partition_key: Vec<u8>,
}

/// Everything the engine knows, as checkpointed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub watermark: Option<i64>,
    pub seq: u64,
    pub windows: Vec<WindowEntry>,
    /// Sliding windows: each key's records still inside an open window.
    pub records: Vec<(Key, Vec<KeptRecord>)>,
    pub dirty: Vec<WinId>,
    pub superseded: Vec<(Key, i64, i64, i64)>,
    pub late: u64,
}

/// What changed in an engine since its previous checkpoint (a delta
/// checkpoint record, storage-format.md §14).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineDelta {
    /// Windows of the previous checkpoint dropped since (applied before
    /// `changed`: a window dropped and made again is in both).
    pub removed: Vec<WinId>,
    /// The windows changed or made since, the sliding-window records of
    /// each key whose records changed (the whole list; empty: none left),
    /// and the other parts whole.
    pub changed: EngineState,
}

impl EngineDelta {
    /// Joins deltas of engines with disjoint key sets.
    pub fn merge(parts: Vec<EngineDelta>) -> EngineDelta {
        let mut removed = Vec::new();
        let mut changed = Vec::with_capacity(parts.len());
        for p in parts {
            removed.extend(p.removed);
            changed.push(p.changed);
        }
        EngineDelta { removed, changed: EngineState::merge(changed) }
    }
}

/// A window's change tracking.
#[derive(Clone, Copy)]
struct Track {
    /// Changed since the previous checkpoint (its key is listed in
    /// `Windows::changed_keys`).
    changed: bool,
    /// Made since the previous checkpoint (not in it: dropping it records nothing).
    fresh: bool,
}

/// A window and its change tracking.
struct Slot {
    win: Win,
    track: Track,
}

/// A key's windows by (start, end) (ordered: sessions look at a key's
/// neighbours).
#[derive(Default)]
struct KeyWindows {
    windows: BTreeMap<(i64, i64), Slot>,
    /// The key is in `Windows::changed_keys`. A listed key's entry stays
    /// while empty, until the checkpoint takes the changes.
    listed: bool,
}

/// Windows by key (hashed: one lookup per record), then by (start, end).
#[derive(Default)]
struct Windows {
    by_key: HashMap<Key, KeyWindows, xxhash_rust::xxh3::Xxh3Builder>,
    len: usize,
    /// Keys with windows changed since the previous checkpoint, each listed
    /// when its `listed` flag is set (so a record updating windows costs a
    /// flag test per window, and a key copy once per key per checkpoint).
    changed_keys: Vec<Key>,
    /// Windows of the previous checkpoint dropped since.
    removed: Vec<WinId>,
}

impl Windows {
    /// A window to change: marked changed since the checkpoint.
    fn get_mut(&mut self, key: &str, start: i64, end: i64) -> Option<&mut Win> {
        let m = self.by_key.get_mut(key)?;
        let slot = m.windows.get_mut(&(start, end))?;
        if !slot.track.changed {
            slot.track.changed = true;
            if !m.listed {
                m.listed = true;
                self.changed_keys.push(key.to_string());
            }
        }
        Some(&mut slot.win)
    }

    /// Puts a window under its id, marked changed: a new one (`was` None),
    /// or one taken out with `take_out` under the same id, whose tracking
    /// carries over (so a session absorbing a record, taken out and put
    /// back, is never recorded as dropped).
    fn put(&mut self, key: &str, start: i64, end: i64, win: Win, was: Option<Track>) {
        let track = Track { changed: true, fresh: was.is_none_or(|t| t.fresh) };
        // One lookup when the key has an entry (no key copy made to find it).
        let m = match self.by_key.get_mut(key) {
            Some(m) => m,
            None => self.by_key.entry(key.to_string()).or_default(),
        };
        match m.windows.insert((start, end), Slot { win, track }) {
            None => self.len += 1,
            // Replaced in place: the old one's tracking carries over too.
            Some(old) => m.windows.get_mut(&(start, end)).expect("just inserted").track.fresh &= old.track.fresh,
        }
        if !m.listed {
            m.listed = true;
            self.changed_keys.push(key.to_string());
        }
    }

    fn insert(&mut self, key: &str, start: i64, end: i64, win: Win) {
        self.put(key, start, end, win, None);
    }

    /// Adds a window of the checkpoint being restored (unchanged since).
    fn restore(&mut self, key: &str, start: i64, end: i64, win: Win) {
        let m = self.by_key.entry(key.to_string()).or_default();
        if m.windows.insert((start, end), Slot { win, track: Track { changed: false, fresh: false } }).is_none() {
            self.len += 1;
        }
    }

    /// Takes a window out to put it back under the same id (`put`), with
    /// its tracking: no drop is recorded. The key's entry stays, even if
    /// empty, for the `put`.
    fn take_out(&mut self, key: &str, start: i64, end: i64) -> Option<(Win, Track)> {
        let slot = self.by_key.get_mut(key)?.windows.remove(&(start, end))?;
        self.len -= 1;
        Some((slot.win, slot.track))
    }

    /// Drops a window (recorded if the checkpoint has it).
    fn remove(&mut self, key: &str, start: i64, end: i64) -> Option<Win> {
        let (win, track) = self.take_out(key, start, end)?;
        if !track.fresh {
            self.removed.push((key.to_string(), start, end));
        }
        if self.by_key.get(key).is_some_and(|m| m.windows.is_empty() && !m.listed) {
            self.by_key.remove(key);
        }
        Some(win)
    }

    /// A key's windows, by (start, end).
    fn of_key(&self, key: &str) -> impl Iterator<Item = (&(i64, i64), &Win)> {
        self.by_key.get(key).into_iter().flat_map(|m| m.windows.iter().map(|(se, s)| (se, &s.win)))
    }

    /// Every window, keys in order (for checkpoints).
    fn sorted(&self) -> Vec<(&Key, &(i64, i64), &Win)> {
        let mut keys: Vec<&Key> = self.by_key.keys().collect();
        keys.sort();
        keys.into_iter().flat_map(|k| self.by_key[k].windows.iter().map(move |(se, s)| (k, se, &s.win))).collect()
    }

    /// The windows changed and dropped since the previous checkpoint, which
    /// this call makes the current one: (removed, changed).
    fn take_changes(&mut self, copy: bool) -> (Vec<WinId>, Vec<WindowEntry>) {
        let mut windows = Vec::new();
        for k in std::mem::take(&mut self.changed_keys) {
            let Some(m) = self.by_key.get_mut(&k) else { continue };
            m.listed = false;
            for ((s, e), slot) in m.windows.iter_mut().filter(|(_, slot)| slot.track.changed) {
                slot.track = Track { changed: false, fresh: false };
                if copy {
                    windows.push((k.clone(), *s, *e, slot.win.clone()));
                }
            }
            if m.windows.is_empty() {
                self.by_key.remove(&k);
            }
        }
        (std::mem::take(&mut self.removed), windows)
    }
}

impl EngineState {
    /// Splits the state into `n` parts by key (`shard` of each key).
    pub fn split(self, n: usize, shard: impl Fn(&str) -> usize) -> Vec<EngineState> {
        let mut parts = vec![EngineState { watermark: self.watermark, seq: self.seq, ..Default::default() }; n];
        parts[0].late = self.late;
        for w in self.windows {
            parts[shard(&w.0)].windows.push(w);
        }
        for r in self.records {
            parts[shard(&r.0)].records.push(r);
        }
        for d in self.dirty {
            parts[shard(&d.0)].dirty.push(d);
        }
        for s in self.superseded {
            parts[shard(&s.0)].superseded.push(s);
        }
        parts
    }

    /// The state after `deltas`, in order (recovery: a base checkpoint and
    /// the delta records after it).
    pub fn apply(self, deltas: impl IntoIterator<Item = EngineDelta>) -> EngineState {
        let mut windows: BTreeMap<WinId, Win> = self.windows.into_iter().map(|(k, s, e, w)| ((k, s, e), w)).collect();
        let mut records: BTreeMap<Key, Vec<KeptRecord>> = self.records.into_iter().collect();
        let (mut watermark, mut seq, mut late, mut dirty, mut superseded) = (self.watermark, self.seq, self.late, self.dirty, self.superseded);
        for EngineDelta { removed, changed: d } in deltas {
            for id in &removed {
                windows.remove(id);
            }
            windows.extend(d.windows.into_iter().map(|(k, s, e, w)| ((k, s, e), w)));
            for (k, r) in d.records {
                if r.is_empty() {
                    records.remove(&k);
                } else {
                    records.insert(k, r);
                }
            }
            (watermark, seq, late, dirty, superseded) = (d.watermark, d.seq, d.late, d.dirty, d.superseded);
        }
        EngineState {
            watermark,
            seq,
            windows: windows.into_iter().map(|((k, s, e), w)| (k, s, e, w)).collect(),
            records: records.into_iter().collect(),
            dirty,
            superseded,
            late,
        }
    }

    /// Joins states of disjoint key sets.
    pub fn merge(parts: Vec<EngineState>) -> EngineState {
        let mut all = EngineState::default();
        for p in parts {
            all.watermark = all.watermark.max(p.watermark);
            all.seq = all.seq.max(p.seq);
            all.late += p.late;
            all.windows.extend(p.windows);
            all.records.extend(p.records);
            all.dirty.extend(p.dirty);
            all.superseded.extend(p.superseded);
        }
        all.windows.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
        all
    }
}

/// Sliding windows: a key's records still inside an open window.
#[derive(Default)]
struct Kept {
    recs: BTreeMap<(i64, u64), Vec<Input>>,
    /// Changed since the previous checkpoint (the key is in `records_changed`).
    changed: bool,
}

pub struct Engine {
    spec: Arc<ProcessorSpec>,
    watermark: Option<i64>,
    seq: u64,
    windows: Windows,
    /// (watermark at which it is final, window), emit = final only.
    pending_final: BTreeSet<(i64, WinId)>,
    /// (watermark at which its state goes, window).
    expiry: BTreeSet<(i64, WinId)>,
    records: BTreeMap<Key, Kept>,
    /// Keys whose `records` changed since the previous checkpoint, each
    /// listed when its `changed` flag is set.
    records_changed: Vec<Key>,
    /// Windows changed since the last flush (emit = changes).
    dirty: BTreeSet<WinId>,
    /// Sessions merged away since the last flush, with their timestamp: tombstones.
    superseded: BTreeSet<(Key, i64, i64, i64)>,
    /// Records that fell in no open window.
    pub late: u64,
}

fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

impl Engine {
    pub fn new(spec: Arc<ProcessorSpec>) -> Engine {
        Engine {
            spec,
            watermark: None,
            seq: 0,
            windows: Windows::default(),
            pending_final: BTreeSet::new(),
            expiry: BTreeSet::new(),
            records: BTreeMap::new(),
            records_changed: Vec::new(),
            dirty: BTreeSet::new(),
            superseded: BTreeSet::new(),
            late: 0,
        }
    }

    pub fn from_state(spec: Arc<ProcessorSpec>, s: EngineState) -> Engine {
        let mut e = Engine::new(spec);
        e.watermark = s.watermark;
        e.seq = s.seq;
        e.late = s.late;
        for (k, start, end, w) in s.windows {
            e.index((k.clone(), start, end), &w);
            e.windows.restore(&k, start, end, w);
        }
        for (k, recs) in s.records {
            e.records.insert(k, Kept { recs: recs.into_iter().map(|(t, seq, i)| ((t, seq), i)).collect(), changed: false });
        }
        e.dirty = s.dirty.into_iter().collect();
        e.superseded = s.superseded.into_iter().collect();
        e
    }

    pub fn state(&self) -> EngineState {
        EngineState {
            watermark: self.watermark,
            seq: self.seq,
            windows: self.windows.sorted().into_iter().map(|(k, (s, e), w)| (k.clone(), *s, *e, w.clone())).collect(),
            records: self.records.iter().map(|(k, r)| (k.clone(), Self::kept(r))).collect(),
            dirty: self.dirty.iter().cloned().collect(),
            superseded: self.superseded.iter().cloned().collect(),
            late: self.late,
        }
    }

    fn kept(r: &Kept) -> Vec<KeptRecord> {
        r.recs.iter().map(|((t, s), i)| (*t, *s, i.clone())).collect()
    }

    /// The whole state, for a base checkpoint: what changes from here on
    /// goes into the next `changes`.
    pub fn snapshot(&mut self) -> EngineState {
        let s = self.state();
        self.take_records_changes(false);
        self.windows.take_changes(false);
        s
    }

    /// What changed since the previous `snapshot` or `changes`, for a delta
    /// checkpoint record.
    pub fn changes(&mut self) -> EngineDelta {
        let records = self.take_records_changes(true);
        let (removed, windows) = self.windows.take_changes(true);
        EngineDelta {
            removed,
            changed: EngineState {
                watermark: self.watermark,
                seq: self.seq,
                windows,
                records,
                dirty: self.dirty.iter().cloned().collect(),
                superseded: self.superseded.iter().cloned().collect(),
                late: self.late,
            },
        }
    }

    fn take_records_changes(&mut self, copy: bool) -> Vec<(Key, Vec<KeptRecord>)> {
        let mut out = Vec::new();
        for k in std::mem::take(&mut self.records_changed) {
            match self.records.get_mut(&k) {
                Some(r) if r.changed => {
                    r.changed = false;
                    if copy {
                        let list = Self::kept(r);
                        out.push((k, list));
                    }
                }
                // Listed again after being dropped and made anew: once is enough.
                Some(_) => {}
                None if copy => out.push((k, Vec::new())),
                None => {}
            }
        }
        out
    }

    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    pub fn window_count(&self) -> usize {
        self.windows.len
    }

    /// The current windows of `key` overlapping [from, to]: (start, end, window).
    pub fn windows_of(&self, key: &str, from: i64, to: i64) -> Vec<(i64, i64, &Win)> {
        self.windows.of_key(key).filter(|((s, e), _)| *e >= from && *s <= to).map(|((s, e), w)| (*s, *e, w)).collect()
    }

    fn grace(&self) -> i64 {
        self.spec.grace_ms
    }

    /// `W − grace`: time windows with `end` above it are open.
    fn close_time(&self) -> i64 {
        self.watermark.map_or(i64::MIN, |w| w.saturating_sub(self.grace()))
    }

    /// The watermark at which a window becomes final.
    fn final_at(&self, end: i64) -> i64 {
        match self.spec.window {
            WindowKind::Session { gap } => end.saturating_add(self.grace()).saturating_add(gap).saturating_add(1),
            WindowKind::Sliding { .. } => end.saturating_add(1).saturating_add(self.grace()),
            WindowKind::Hopping { .. } => end.saturating_add(self.grace()),
        }
    }

    /// The watermark at which a window's state is dropped: `end +
    /// retention`, but never before it is final (a session's retention
    /// may be as short as gap + grace, one less than its `final_at`).
    fn expires_at(&self, end: i64) -> i64 {
        end.saturating_add(self.spec.retention_ms).max(self.final_at(end))
    }

    fn index(&mut self, id: WinId, w: &Win) {
        if self.spec.emit == Emit::Final && !w.finalized {
            self.pending_final.insert((self.final_at(id.2), id.clone()));
        }
        self.expiry.insert((self.expires_at(id.2), id));
    }

    fn unindex(&mut self, id: &WinId) {
        self.pending_final.remove(&(self.final_at(id.2), id.clone()));
        self.expiry.remove(&(self.expires_at(id.2), id.clone()));
        self.dirty.remove(id);
    }

    fn new_win(&self) -> Win {
        Win { aggs: self.spec.aggregates.iter().map(|a| AggState::new(&a.func)).collect(), max_ts: i64::MIN, emitted: false, finalized: false }
    }

    fn add_to(spec: &ProcessorSpec, w: &mut Win, t: i64, seq: u64, inputs: &[Input]) {
        for ((agg, spec), input) in w.aggs.iter_mut().zip(&spec.aggregates).zip(inputs) {
            if AggState::accepts(&spec.func, input) {
                agg.update(input, t, seq);
            }
        }
        w.max_ts = w.max_ts.max(t);
    }

    /// Adds a record. `inputs` has one entry per aggregate, in the spec's
    /// order. Returns false when the record was late (it changed nothing).
    pub fn process(&mut self, key: Key, t: i64, inputs: Vec<Input>) -> bool {
        self.seq += 1;
        let seq = self.seq;
        let close = self.close_time();
        let accepted = match self.spec.window {
            WindowKind::Hopping { size, advance } => {
                let mut any = false;
                let kmin = floor_div(t.saturating_sub(size), advance) + 1;
                let kmax = floor_div(t, advance);
                for k in kmin..=kmax {
                    let start = k * advance;
                    let end = start + size;
                    if end <= close {
                        continue;
                    }
                    any = true;
                    self.update_window(&key, start, end, t, seq, &inputs);
                }
                any
            }
            WindowKind::Session { gap } => self.process_session(key, t, seq, inputs, gap, close),
            WindowKind::Sliding { difference } => self.process_sliding(key, t, seq, inputs, difference, close),
        };
        if !accepted {
            self.late += 1;
        }
        accepted
    }

    fn update_window(&mut self, key: &Key, start: i64, end: i64, t: i64, seq: u64, inputs: &[Input]) {
        let spec = Arc::clone(&self.spec);
        match self.windows.get_mut(key, start, end) {
            Some(w) => Self::add_to(&spec, w, t, seq, inputs),
            None => {
                let mut w = self.new_win();
                Self::add_to(&spec, &mut w, t, seq, inputs);
                self.index((key.clone(), start, end), &w);
                self.windows.insert(key, start, end, w);
            }
        }
        if spec.emit == Emit::Changes {
            self.dirty.insert((key.clone(), start, end));
        }
    }

    fn process_session(&mut self, key: Key, t: i64, seq: u64, inputs: Vec<Input>, gap: i64, close: i64) -> bool {
        let (lo, hi) = (t.saturating_sub(gap), t.saturating_add(gap));
        let merging: Vec<WinId> = self.windows.of_key(&key).filter(|((s, e), _)| *e >= lo && *s <= hi).map(|((s, e), _)| (key.clone(), *s, *e)).collect();
        let start = merging.iter().map(|id| id.1).min().unwrap_or(t).min(t);
        let end = merging.iter().map(|id| id.2).max().unwrap_or(t).max(t);
        if end < close {
            return false;
        }
        let mut merged = self.new_win();
        // The session keeping its bounds is put back under its id.
        let mut kept = None;
        for id in &merging {
            let old = if (id.1, id.2) == (start, end) {
                let (old, track) = self.windows.take_out(&id.0, id.1, id.2).expect("listed above");
                kept = Some(track);
                old
            } else {
                self.windows.remove(&id.0, id.1, id.2).expect("listed above")
            };
            self.unindex(id);
            for (a, b) in merged.aggs.iter_mut().zip(&old.aggs) {
                a.merge(b);
            }
            merged.max_ts = merged.max_ts.max(old.max_ts);
            if *id != (key.clone(), start, end) && (old.emitted || self.spec.emit == Emit::Changes) {
                self.superseded.insert((id.0.clone(), id.1, id.2, old.max_ts));
            }
            merged.emitted |= old.emitted && *id == (key.clone(), start, end);
        }
        Self::add_to(&self.spec, &mut merged, t, seq, &inputs);
        let id = (key, start, end);
        self.superseded.retain(|(k, s, e, _)| (k, *s, *e) != (&id.0, id.1, id.2));
        self.index(id.clone(), &merged);
        self.windows.put(&id.0, start, end, merged, kept);
        if self.spec.emit == Emit::Changes {
            self.dirty.insert(id);
        }
        true
    }

    fn process_sliding(&mut self, key: Key, t: i64, seq: u64, inputs: Vec<Input>, d: i64, close: i64) -> bool {
        let kept = self.records.entry(key.clone()).or_default();
        if !kept.changed {
            kept.changed = true;
            self.records_changed.push(key.clone());
        }
        let recs = &mut kept.recs;
        recs.insert((t, seq), inputs);
        // Windows whose records change or that come to exist: the new
        // record's own left window [t − d, t] and right window [t + 1,
        // t + 1 + d]; the left windows of records in [t, t + d] and the right
        // windows of records in [t − d − 1, t − 1], which now hold it.
        let mut candidates: BTreeSet<(i64, i64)> = BTreeSet::new();
        candidates.insert((t - d, t));
        for (&(rt, _), _) in recs.range((t, 0)..=(t.saturating_add(d), u64::MAX)) {
            candidates.insert((rt - d, rt));
        }
        for (&(rt, _), _) in recs.range((t.saturating_sub(d + 1), 0)..=(t - 1, u64::MAX)) {
            candidates.insert((rt + 1, rt + 1 + d));
        }
        let has_after = recs.range((t + 1, 0)..=(t.saturating_add(d + 1), u64::MAX)).next().is_some();
        if has_after {
            candidates.insert((t + 1, t + 1 + d));
        }
        let holds_t = |s: i64, e: i64| s <= t && t <= e;
        if !candidates.iter().any(|&(s, e)| holds_t(s, e) && e >= close) {
            recs.remove(&(t, seq));
            if recs.is_empty() {
                self.records.remove(&key);
            }
            return false;
        }
        for (s, e) in candidates {
            if e < close {
                continue;
            }
            let mut w = self.new_win();
            let recs = &self.records[&key].recs;
            let mut any = false;
            for (&(rt, rseq), inp) in recs.range((s, 0)..=(e, u64::MAX)) {
                Self::add_to(&self.spec, &mut w, rt, rseq, inp);
                any = true;
            }
            if !any {
                continue;
            }
            let id = (key.clone(), s, e);
            match self.windows.get_mut(&key, s, e) {
                Some(old) => {
                    old.aggs = w.aggs;
                    old.max_ts = w.max_ts;
                }
                None => {
                    self.index(id.clone(), &w);
                    self.windows.insert(&key, s, e, w);
                }
            }
            if self.spec.emit == Emit::Changes {
                self.dirty.insert(id);
            }
        }
        true
    }

    /// Raises the watermark (never lowers it): emits final windows (emit =
    /// final), drops expired state (with tombstones if configured).
    pub fn advance(&mut self, w: i64, out: &mut Vec<Emission>) {
        if self.spec.emit == Emit::Final {
            // A late record can bridge a final session and an open one: the
            // final session's record is then replaced by the merged one.
            for (k, s, e, ts) in std::mem::take(&mut self.superseded) {
                out.push(self.emission(&(k, s, e), None, ts));
            }
        }
        if self.watermark.is_some_and(|cur| w <= cur) {
            return;
        }
        self.watermark = Some(w);
        while let Some((at, _)) = self.pending_final.first() {
            if *at > w {
                break;
            }
            let (_, id) = self.pending_final.pop_first().expect("just seen");
            if let Some(win) = self.windows.get_mut(&id.0, id.1, id.2) {
                win.finalized = true;
                win.emitted = true;
                let win = win.clone();
                out.push(self.emission(&id, Some(&win), win.max_ts));
            }
        }
        while let Some((at, _)) = self.expiry.first() {
            if *at > w {
                break;
            }
            let (_, id) = self.expiry.pop_first().expect("just seen");
            if let Some(win) = self.windows.remove(&id.0, id.1, id.2) {
                self.unindex(&id);
                if self.spec.tombstones_on_expire && win.emitted {
                    out.push(self.emission(&id, None, win.max_ts));
                }
            }
        }
        if let WindowKind::Sliding { difference } = self.spec.window {
            // An open window [s, e] has e + 1 > W − grace, so it holds only
            // records at or after W − grace − difference; a right window
            // [r + 1, r + 1 + difference] is open for r ≥ W − grace − difference − 1.
            let keep_from = w.saturating_sub(self.grace()).saturating_sub(difference).saturating_sub(1);
            let changed = &mut self.records_changed;
            self.records.retain(|k, kept| {
                let before = kept.recs.len();
                kept.recs = kept.recs.split_off(&(keep_from, 0));
                if kept.recs.len() != before && !kept.changed {
                    kept.changed = true;
                    changed.push(k.clone());
                }
                !kept.recs.is_empty()
            });
        }
    }

    /// Emits the current value of every window changed since the last flush,
    /// and tombstones for sessions merged away (emit = changes).
    pub fn flush(&mut self, out: &mut Vec<Emission>) {
        for (k, s, e, ts) in std::mem::take(&mut self.superseded) {
            out.push(self.emission(&(k, s, e), None, ts));
        }
        for id in std::mem::take(&mut self.dirty) {
            if let Some(win) = self.windows.get_mut(&id.0, id.1, id.2) {
                win.emitted = true;
                let win = win.clone();
                out.push(self.emission(&id, Some(&win), win.max_ts));
            }
        }
    }

    /// The output record of a window (or its tombstone).
    fn emission(&self, id: &WinId, win: Option<&Win>, timestamp: i64) -> Emission {
        let (key, start, end) = id;
        let inner = inner_key(key);
        let key_bytes = match self.spec.key_format {
            KeyFormat::Json => format!("{{\"key\":{key},\"start\":{start},\"end\":{end}}}").into_bytes(),
            KeyFormat::KafkaStreamsWindowed => {
                let mut b = inner.clone();
                if matches!(self.spec.window, WindowKind::Session { .. }) {
                    b.extend_from_slice(&end.to_be_bytes());
                }
                b.extend_from_slice(&start.to_be_bytes());
                b
            }
        };
        let value = win.map(|w| serde_json::to_vec(&window_value(&self.spec, *start, *end, w)).expect("JSON values serialize"));
        Emission { key: key_bytes, value, timestamp, partition_key: inner }
    }
}

/// A window's output value: its bounds and every aggregate's result.
pub fn window_value(spec: &ProcessorSpec, start: i64, end: i64, w: &Win) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("window_start".into(), Value::from(start));
    m.insert("window_end".into(), Value::from(end));
    for (spec, agg) in spec.aggregates.iter().zip(&w.aggs) {
        m.insert(spec.name.clone(), agg.result());
    }
    Value::Object(m)
}

/// The key's own bytes: a string's UTF-8, anything else its JSON text.
pub fn inner_key(key: &str) -> Vec<u8> {
    match serde_json::from_str::<Value>(key) {
        Ok(Value::String(s)) => s.into_bytes(),
        _ => key.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::checkpoint::tests::{inputs, spec};

    fn win(max_ts: i64) -> Win {
        Win { aggs: Vec::new(), max_ts, emitted: false, finalized: false }
    }

    #[test]
    fn windows_of_the_checkpoint_dropped_since_are_recorded_once_made_again_or_not() {
        let id = |s| ("k".to_string(), s, s + 1);
        let mut w = Windows::default();
        w.insert("k", 0, 1, win(0));
        w.insert("k", 5, 6, win(5));
        w.take_changes(false);
        // Replaced in place, then dropped.
        w.insert("k", 0, 1, win(1));
        w.remove("k", 0, 1);
        // Dropped, made again, changed, dropped, made again.
        w.remove("k", 5, 6);
        w.insert("k", 5, 6, win(6));
        w.get_mut("k", 5, 6).unwrap().max_ts = 7;
        w.remove("k", 5, 6);
        w.insert("k", 5, 6, win(8));
        // Made and dropped between two checkpoints: nothing to record.
        w.insert("k", 9, 10, win(9));
        w.remove("k", 9, 10);
        let (removed, changed) = w.take_changes(true);
        assert_eq!(removed, vec![id(0), id(5)]);
        assert_eq!(changed, vec![("k".to_string(), 5, 6, win(8))]);
        assert_eq!(w.take_changes(true), (vec![], vec![]), "all taken");
    }

    #[test]
    fn a_session_absorbing_records_is_listed_once_per_checkpoint_and_never_dropped() {
        let mut e = Engine::new(spec("type = \"session\"\n gap = \"1s\"", "changes", "1000d"));
        e.process("\"a\"".into(), 1_000, inputs(1));
        e.process("\"a\"".into(), 1_500, inputs(1));
        e.snapshot();
        // Inside the session's bounds: it keeps its id.
        for t in 1_000..1_500 {
            e.process("\"a\"".into(), t, inputs(2));
        }
        assert_eq!((e.windows.changed_keys.len(), e.windows.removed.len()), (1, 0));
        let d = e.changes();
        assert_eq!((d.changed.windows.len(), d.removed.len()), (1, 0));
        assert_eq!(d.changed.windows[0].3.max_ts, 1_500);
        // Extended: the old id is dropped (it is in the checkpoint) once.
        e.process("\"a\"".into(), 2_000, inputs(1));
        e.process("\"a\"".into(), 2_200, inputs(1));
        let d = e.changes();
        assert_eq!(d.removed, vec![("\"a\"".to_string(), 1_000, 1_500)]);
        assert_eq!(d.changed.windows.iter().map(|w| (w.1, w.2)).collect::<Vec<_>>(), vec![(1_000, 2_200)]);
    }

    #[test]
    fn records_extending_a_session_in_order_list_its_key_once() {
        let mut e = Engine::new(spec("type = \"session\"\n gap = \"1s\"", "changes", "1000d"));
        e.process("\"a\"".into(), 1_000, inputs(1));
        e.process("\"b\"".into(), 1_000, inputs(1));
        let base = e.snapshot();
        // Each record ends after the session: a new id (1_000, t) each time.
        for t in 1_001..1_501 {
            e.process("\"a\"".into(), t, inputs(t));
        }
        assert_eq!(e.windows.changed_keys, vec!["\"a\"".to_string()]);
        assert_eq!((e.windows.removed.len(), e.windows.by_key.len()), (1, 2));
        let d = e.changes();
        assert_eq!(d.removed, vec![("\"a\"".to_string(), 1_000, 1_000)]);
        assert_eq!(d.changed.windows.iter().map(|w| (w.1, w.2)).collect::<Vec<_>>(), vec![(1_000, 1_500)]);
        assert_eq!(base.apply([d]), e.state(), "base + delta = live state");
        assert!(e.windows.changed_keys.is_empty());
    }

    #[test]
    fn hopping_windows_list_their_key_once_per_checkpoint() {
        let mut e = Engine::new(spec("type = \"hopping\"\n size = \"60ms\"\n advance = \"20ms\"", "final", "1000d"));
        e.process("\"a\"".into(), 1_000, inputs(1));
        let base = e.snapshot();
        for t in 1_000..1_200 {
            e.process("\"a\"".into(), t, inputs(t));
        }
        assert_eq!(e.windows.changed_keys.len(), 1);
        let d = e.changes();
        assert_eq!(d.changed.windows.len(), e.window_count());
        assert_eq!(base.apply([d]), e.state());
    }
}
