//! Client quotas as Kafka has them: produce and fetch byte rates and a share
//! of request-handling time, per user and client id, set at runtime with
//! AlterClientQuotas and kept in `<data_dir>/client-quotas.json`
//! (storage-format.md, "Client quotas").
//!
//! A quota belongs to an entity — a user, a client id, or both, each named or
//! `<default>`. A request is held to the most specific entity that sets the
//! quota in question, in Kafka's order (user+client, user+default client,
//! user, default user+client, default user+default client, default user,
//! client, default client). Clients that resolve to the same entity share one
//! rate (a `<default>` entity gives each user or client id a rate of its own).
//!
//! Rates are measured as Kafka does: 11 samples of one second, the rate over
//! at least 10 of them. A client over its quota is told how long to back off
//! (`throttle_time_ms`) and its connection reads nothing more for that long.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

pub const FILE: &str = "client-quotas.json";

/// Samples kept per rate (Kafka's `quota.window.num`) and their span
/// (`quota.window.size.seconds`).
const SAMPLES: usize = 11;
const SAMPLE: Duration = Duration::from_secs(1);
/// A request-time quota never holds a client back longer than one sample,
/// as Kafka bounds it; byte-rate throttles are not bounded.
const MAX_REQUEST_THROTTLE: Duration = SAMPLE;

/// What a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `producer_byte_rate`: bytes of Produce requests per second.
    Produce,
    /// `consumer_byte_rate`: bytes of Fetch responses per second.
    Fetch,
    /// `request_percentage`: percent of one thread's time spent on the
    /// client's requests.
    Request,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Produce, Kind::Fetch, Kind::Request];

    pub fn key(self) -> &'static str {
        match self {
            Kind::Produce => "producer_byte_rate",
            Kind::Fetch => "consumer_byte_rate",
            Kind::Request => "request_percentage",
        }
    }

    pub fn from_key(key: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.key() == key)
    }
}

/// One component of an entity: a name, or `<default>` (null on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Default,
    Name(String),
}

/// A quota entity: a user, a client id, or both.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<Part>,
    #[serde(rename = "client-id", skip_serializing_if = "Option::is_none", default)]
    pub client: Option<Part>,
}

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";

type Limits = BTreeMap<Entity, BTreeMap<Kind, f64>>;

/// One change of AlterClientQuotas: set or remove one quota of an entity.
pub struct Change {
    pub entity: Entity,
    pub kind: Kind,
    /// None removes the quota.
    pub value: Option<f64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    quotas: Vec<StoredQuota>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredQuota {
    entity: Entity,
    values: BTreeMap<String, f64>,
}

/// A rate over the last `SAMPLES` seconds (Kafka's `Rate` of a sampled stat).
struct Rate {
    /// (start of the sample, total recorded in it), oldest first.
    samples: std::collections::VecDeque<(Instant, f64)>,
    last_used: Instant,
}

impl Rate {
    fn new(now: Instant) -> Rate {
        Rate { samples: std::collections::VecDeque::with_capacity(SAMPLES), last_used: now }
    }

    fn record(&mut self, value: f64, now: Instant) {
        self.last_used = now;
        match self.samples.back_mut() {
            Some((start, total)) if now.duration_since(*start) < SAMPLE => *total += value,
            _ => {
                if self.samples.len() == SAMPLES {
                    self.samples.pop_front();
                }
                self.samples.push_back((now, value));
            }
        }
    }

    /// Per second, and the span it was measured over: from the oldest
    /// sample still in the window, and never less than `SAMPLES - 1` whole
    /// samples (so that one burst after a quiet spell is not read as a
    /// huge rate).
    fn measure(&mut self, now: Instant) -> (f64, Duration) {
        let span = SAMPLE * SAMPLES as u32;
        while self.samples.front().is_some_and(|(start, _)| now.duration_since(*start) >= span) {
            self.samples.pop_front();
        }
        let total: f64 = self.samples.iter().map(|(_, v)| v).sum();
        let mut elapsed = self.samples.front().map_or(Duration::ZERO, |(start, _)| now.duration_since(*start));
        let min = SAMPLE * (SAMPLES as u32 - 1);
        if elapsed < min {
            // Kafka tops up to the minimum in whole samples.
            let whole = (elapsed.as_millis() / SAMPLE.as_millis()) as u32;
            elapsed += SAMPLE * (SAMPLES as u32 - 1 - whole);
        }
        (total / elapsed.as_secs_f64(), elapsed)
    }
}

/// Who a rate belongs to: the kind, and the user and client id the matched
/// entity names (empty where the entity has no such component).
type RateKey = (Kind, String, String);

pub struct Quotas {
    path: PathBuf,
    limits: RwLock<Limits>,
    /// Any quota set at all: without one, requests skip quota work.
    any: AtomicBool,
    rates: Mutex<HashMap<RateKey, Rate>>,
    writing: Mutex<()>,
}

impl Quotas {
    /// Loads `<data_dir>/client-quotas.json` (none yet: no quotas).
    pub fn open(data_dir: &Path) -> std::io::Result<Quotas> {
        let path = data_dir.join(FILE);
        let limits = match super::read_json(&path)? {
            Some(file) => decode(&path, file)?,
            None => Limits::new(),
        };
        let any = AtomicBool::new(!limits.is_empty());
        Ok(Quotas { path, limits: RwLock::new(limits), any, rates: Mutex::default(), writing: Mutex::default() })
    }

    /// Whether any quota is set (else requests skip quota work).
    pub fn active(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Every entity with quotas, and its quotas.
    pub fn all(&self) -> Vec<(Entity, Vec<(Kind, f64)>)> {
        self.limits.read().iter().map(|(e, q)| (e.clone(), q.iter().map(|(k, v)| (*k, *v)).collect())).collect()
    }

    /// Applies changes all together: durably on disk, then in memory.
    /// The caller has validated them (`check_value`).
    pub fn apply(&self, changes: Vec<Change>) -> std::io::Result<()> {
        let _writing = self.writing.lock();
        let mut next = self.limits.read().clone();
        for c in changes {
            match c.value {
                Some(v) => {
                    next.entry(c.entity).or_default().insert(c.kind, v);
                }
                None => {
                    if let Some(q) = next.get_mut(&c.entity) {
                        q.remove(&c.kind);
                        if q.is_empty() {
                            next.remove(&c.entity);
                        }
                    }
                }
            }
        }
        let file = FileFormat { version: 1, quotas: next.iter().map(|(e, q)| StoredQuota { entity: e.clone(), values: q.iter().map(|(k, v)| (k.key().to_string(), *v)).collect() }).collect() };
        super::write_json(&self.path, &file)?;
        self.any.store(!next.is_empty(), Ordering::Release);
        *self.limits.write() = next;
        // Rates keyed by entities that no longer apply start afresh.
        self.rates.lock().clear();
        Ok(())
    }

    /// The quota of `kind` that holds `user`'s requests with `client_id`,
    /// and whose rate they count against.
    fn resolve(&self, kind: Kind, user: &str, client_id: &str) -> Option<(f64, RateKey)> {
        let limits = self.limits.read();
        let name = |s: &str| Some(Part::Name(s.to_string()));
        let candidates = [
            (name(user), name(client_id)),
            (name(user), Some(Part::Default)),
            (name(user), None),
            (Some(Part::Default), name(client_id)),
            (Some(Part::Default), Some(Part::Default)),
            (Some(Part::Default), None),
            (None, name(client_id)),
            (None, Some(Part::Default)),
        ];
        candidates.into_iter().find_map(|(u, c)| {
            let (by_user, by_client) = (u.is_some(), c.is_some());
            let limit = *limits.get(&Entity { user: u, client: c })?.get(&kind)?;
            Some((limit, (kind, if by_user { user.to_string() } else { String::new() }, if by_client { client_id.to_string() } else { String::new() })))
        })
    }

    /// Counts `value` (bytes, or nanoseconds of handling for `Request`)
    /// against the client's quota of `kind`; how long it must back off.
    pub fn record(&self, kind: Kind, principal: &str, client_id: &str, value: f64) -> Duration {
        if !self.any.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let Some((limit, key)) = self.resolve(kind, user_of(principal), client_id) else { return Duration::ZERO };
        let value = match kind {
            // Percent of one thread: nanoseconds per second / 10^7.
            Kind::Request => value / 1e7,
            _ => value,
        };
        let now = Instant::now();
        let mut rates = self.rates.lock();
        let rate = rates.entry(key).or_insert_with(|| Rate::new(now));
        rate.record(value, now);
        let (observed, window) = rate.measure(now);
        if observed <= limit {
            return Duration::ZERO;
        }
        // Long enough that the rate over the window comes back to the quota.
        let throttle = window.mul_f64(((observed - limit) / limit).min(1e6));
        match kind {
            Kind::Request => throttle.min(MAX_REQUEST_THROTTLE),
            _ => throttle,
        }
    }

    /// Takes back `value` recorded by `record` (a throttled fetch is
    /// answered without its records, which are then not counted).
    pub fn unrecord(&self, kind: Kind, principal: &str, client_id: &str, value: f64) {
        let Some((_, key)) = self.resolve(kind, user_of(principal), client_id) else { return };
        if let Some(rate) = self.rates.lock().get_mut(&key) {
            rate.record(-value, Instant::now());
        }
    }

    /// What `kind`'s quota lets the client move in one measuring window
    /// (Kafka caps a fetch's size at this), if it has such a quota.
    pub fn window_bytes(&self, kind: Kind, principal: &str, client_id: &str) -> Option<u64> {
        if !self.active() {
            return None;
        }
        let (limit, _) = self.resolve(kind, user_of(principal), client_id)?;
        Some((limit * (SAMPLE * (SAMPLES as u32 - 1)).as_secs_f64()) as u64)
    }

    /// Drops rates nobody has used for a whole window.
    pub fn expire(&self) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        self.rates.lock().retain(|_, r| now.duration_since(r.last_used) < SAMPLE * SAMPLES as u32);
    }
}

/// The user a principal's quotas are keyed by, as in Kafka: its name
/// (`User:alice` → `alice`).
fn user_of(principal: &str) -> &str {
    principal.split_once(':').map_or(principal, |(_, n)| n)
}

/// Why `value` is not acceptable for a quota of `kind`, if it is not.
pub fn check_value(kind: Kind, value: f64) -> Result<(), String> {
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("{} must be a positive number, not {value}", kind.key()));
    }
    if kind != Kind::Request && value.fract() != 0.0 {
        return Err(format!("{} must be a whole number of bytes per second, not {value}", kind.key()));
    }
    Ok(())
}

fn decode(path: &Path, file: FileFormat) -> std::io::Result<Limits> {
    let bad = super::bad_file;
    if file.version != 1 {
        return Err(bad(path, format!("unknown version {}", file.version)));
    }
    let mut limits = Limits::new();
    for q in file.quotas {
        if q.entity.user.is_none() && q.entity.client.is_none() {
            return Err(bad(path, "a quota entity with neither user nor client-id".into()));
        }
        let mut values = BTreeMap::new();
        for (key, value) in q.values {
            let kind = Kind::from_key(&key).ok_or_else(|| bad(path, format!("{:?}: unknown quota {key:?}", q.entity)))?;
            check_value(kind, value).map_err(|m| bad(path, format!("{:?}: {m}", q.entity)))?;
            values.insert(kind, value);
        }
        limits.insert(q.entity, values);
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(user: Option<&str>, client: Option<&str>) -> Entity {
        let part = |s: &str| if s == "<default>" { Part::Default } else { Part::Name(s.to_string()) };
        Entity { user: user.map(part), client: client.map(part) }
    }

    fn set(q: &Quotas, e: Entity, kind: Kind, v: f64) {
        q.apply(vec![Change { entity: e, kind, value: Some(v) }]).unwrap();
    }

    #[test]
    fn the_most_specific_entity_with_the_quota_wins() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quotas::open(dir.path()).unwrap();
        assert_eq!(q.resolve(Kind::Produce, "alice", "app"), None);
        set(&q, entity(None, Some("<default>")), Kind::Produce, 1.0);
        assert_eq!(q.resolve(Kind::Produce, "alice", "app"), Some((1.0, (Kind::Produce, String::new(), "app".into()))));
        set(&q, entity(Some("<default>"), None), Kind::Produce, 2.0);
        assert_eq!(q.resolve(Kind::Produce, "alice", "app").unwrap().0, 2.0);
        set(&q, entity(Some("alice"), None), Kind::Produce, 3.0);
        assert_eq!(q.resolve(Kind::Produce, "alice", "app"), Some((3.0, (Kind::Produce, "alice".into(), String::new()))));
        assert_eq!(q.resolve(Kind::Produce, "bob", "app").unwrap().0, 2.0);
        set(&q, entity(Some("alice"), Some("app")), Kind::Produce, 4.0);
        assert_eq!(q.resolve(Kind::Produce, "alice", "app").unwrap().0, 4.0);
        assert_eq!(q.resolve(Kind::Produce, "alice", "other").unwrap().0, 3.0);
        // Another kind is resolved on its own: the user+client entity does not set it.
        set(&q, entity(Some("<default>"), Some("<default>")), Kind::Fetch, 5.0);
        assert_eq!(q.resolve(Kind::Fetch, "alice", "app"), Some((5.0, (Kind::Fetch, "alice".into(), "app".into()))));
        assert_eq!(q.resolve(Kind::Request, "alice", "app"), None);
        // Kept across a reopen; a removal takes the entity away once empty.
        drop(q);
        let q = Quotas::open(dir.path()).unwrap();
        assert_eq!(q.resolve(Kind::Produce, "alice", "app").unwrap().0, 4.0);
        q.apply(vec![Change { entity: entity(Some("alice"), Some("app")), kind: Kind::Produce, value: None }]).unwrap();
        assert_eq!(q.resolve(Kind::Produce, "alice", "app").unwrap().0, 3.0);
        assert_eq!(q.all().len(), 4);
        // A damaged file stops the start naming what is wrong.
        std::fs::write(dir.path().join(FILE), r#"{"version":1,"quotas":[{"entity":{"user":"default"},"values":{"producer_byte_rate":-1}}]}"#).unwrap();
        let e = Quotas::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("producer_byte_rate must be a positive number"), "{e}");
    }

    #[test]
    fn a_client_over_its_rate_is_told_to_back_off_in_proportion() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quotas::open(dir.path()).unwrap();
        assert_eq!(q.record(Kind::Produce, "User:alice", "app", 1e9), Duration::ZERO, "no quota, no throttle");
        set(&q, entity(Some("alice"), None), Kind::Produce, 1000.0);
        // 10 KB at once against 1000 B/s measured over at least 10 s: at the
        // quota, nothing to wait.
        assert_eq!(q.record(Kind::Produce, "User:alice", "app", 10_000.0), Duration::ZERO);
        // Another 10 KB: 2000 B/s over ~10 s, so ~10 s of backing off.
        let t = q.record(Kind::Produce, "User:alice", "app", 10_000.0);
        assert!(t > Duration::from_secs(9) && t <= Duration::from_secs(11), "{t:?}");
        // Bob shares nothing with alice.
        assert_eq!(q.record(Kind::Produce, "User:bob", "app", 10_000.0), Duration::ZERO);
        // Request time is bounded to one sample.
        set(&q, entity(Some("alice"), None), Kind::Request, 1.0);
        let t = q.record(Kind::Request, "User:alice", "app", 5e9);
        assert_eq!(t, MAX_REQUEST_THROTTLE);
    }

    #[test]
    fn values_are_checked() {
        assert!(check_value(Kind::Produce, 1024.0).is_ok());
        assert!(check_value(Kind::Produce, 0.0).is_err());
        assert!(check_value(Kind::Fetch, 10.5).is_err());
        assert!(check_value(Kind::Request, 12.5).is_ok());
        assert!(check_value(Kind::Request, f64::NAN).is_err());
    }
}
