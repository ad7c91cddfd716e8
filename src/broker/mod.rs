//! Kafka semantics: broker state and one file per API (state + request →
//! response). Nothing here knows about sockets.

mod acls;
mod api_versions;
mod client_quotas;
mod cluster;
mod configs;
mod fetch;
mod groups;
mod list_offsets;
mod metadata;
mod partitions;
mod produce;
mod producer_ids;
mod scram_credentials;
mod transactions;
mod topics;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use kafka_protocol::messages::{RequestKind, ResponseKind};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::Config;
use crate::log::{Log, LogError, LogManager, TopicMeta};
use crate::protocol::{Reply, Request};
use crate::topic_config;

/// One partition as the broker sees it: its log and the fetches waiting for
/// it to grow.
pub struct Partition {
    pub index: i32,
    pub log: Arc<Log>,
    waiters: Mutex<Vec<Weak<Notify>>>,
    /// Offsets below this are in the file (acks=1: a process kill loses
    /// nothing acknowledged).
    written: Stage,
    /// Offsets below this are on disk (acks=all: fsynced).
    durable: Stage,
}

/// How far the log is known to have reached one level of safety, and
/// whether some task is working on it right now.
struct Stage {
    reached: tokio::sync::watch::Sender<u64>,
    running: std::sync::atomic::AtomicBool,
}

impl Stage {
    fn new(at: u64) -> Stage {
        Stage { reached: tokio::sync::watch::Sender::new(at), running: std::sync::atomic::AtomicBool::new(false) }
    }
}

/// What brings a log to a stage: a write-out, or a write-out and an fsync.
#[derive(Clone, Copy)]
enum Level {
    Written,
    Durable,
}

impl Partition {
    fn new(index: i32, log: Arc<Log>, metrics: &crate::metrics::Metrics) -> Partition {
        let end = log.log_end_offset();
        let fsync_seconds = metrics.fsync.clone();
        log.observe_fsyncs(move |took| fsync_seconds.observe(took.as_secs_f64()));
        Partition { index, log, waiters: Mutex::new(Vec::new()), written: Stage::new(end), durable: Stage::new(end) }
    }

    /// Waits until every offset below `end` is on disk (acks=all).
    pub async fn wait_durable(&self, end: u64) -> Result<(), String> {
        self.wait_for(Level::Durable, end).await
    }

    /// Waits until every offset below `end` is in the file (acks=1).
    pub async fn wait_written(&self, end: u64) -> Result<(), String> {
        self.wait_for(Level::Written, end).await
    }

    /// One waiter at a time runs the write-out (and fsync), on a blocking
    /// thread, covering everything appended so far; the others wait for
    /// its result: group commit without a blocked thread per waiting
    /// request.
    async fn wait_for(&self, level: Level, end: u64) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        let stage = match level {
            Level::Written => &self.written,
            Level::Durable => &self.durable,
        };
        let mut seen = stage.reached.subscribe();
        loop {
            if *seen.borrow_and_update() >= end {
                return Ok(());
            }
            if !stage.running.swap(true, Ordering::AcqRel) {
                // Clears the flag and wakes the waiters even if this future
                // is dropped mid-write (its connection closed), so one of
                // them runs the next round: nobody waits on a write nobody
                // runs.
                struct Syncing<'a>(&'a Stage, bool);
                impl Drop for Syncing<'_> {
                    fn drop(&mut self) {
                        self.0.running.store(false, Ordering::Release);
                        if !self.1 {
                            self.0.reached.send_modify(|_| {});
                        }
                    }
                }
                let mut guard = Syncing(stage, false);
                let log = Arc::clone(&self.log);
                let target = log.log_end_offset();
                let done = tokio::task::spawn_blocking(move || match level {
                    Level::Written => log.write_out(),
                    Level::Durable => log.sync_to(target),
                })
                .await;
                // Finished: the outcome is published below.
                guard.1 = true;
                drop(guard);
                match done {
                    Ok(Ok(())) => {
                        stage.reached.send_modify(|v| *v = (*v).max(target));
                        if let Level::Durable = level {
                            self.written.reached.send_modify(|v| *v = (*v).max(target));
                        }
                        continue;
                    }
                    Ok(Err(e)) => {
                        // Let a waiting request try (and report) the next round.
                        stage.reached.send_modify(|_| {});
                        return Err(e.to_string());
                    }
                    Err(e) => {
                        stage.reached.send_modify(|_| {});
                        return Err(format!("write task failed: {e}"));
                    }
                }
            }
            if seen.changed().await.is_err() {
                return Err("partition closed".into());
            }
        }
    }

    /// Appends records the broker itself writes (processor output), waking
    /// fetches waiting on the partition as Produce does.
    pub fn append_internal(&self, records: &bytes::Bytes) -> Result<crate::log::AppendInfo, LogError> {
        let info = self.log.append(records)?;
        self.appended();
        Ok(info)
    }

    /// Writes a transaction marker the broker decided itself (a processor's
    /// commit or abort), waking fetches.
    pub fn append_marker_internal(&self, producer_id: i64, epoch: i16, commit: bool) -> Result<u64, LogError> {
        let offset = self.log.append_marker(producer_id, epoch, commit, 0)?;
        self.appended();
        Ok(offset)
    }

    /// Registers a waiting fetch; it is woken by the next append.
    fn watch(&self, waker: &Arc<Notify>) {
        let mut w = self.waiters.lock();
        w.retain(|x| x.strong_count() > 0);
        w.push(Arc::downgrade(waker));
    }

    /// Wakes every fetch waiting on this partition.
    fn appended(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for w in waiters {
            if let Some(n) = w.upgrade() {
                n.notify_one();
            }
        }
    }

    /// With a single replica, everything appended is replicated: the high
    /// watermark is the log end offset (and, without transactions, so is the
    /// last stable offset).
    pub fn high_watermark(&self) -> i64 {
        self.log.log_end_offset() as i64
    }
}

pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<Arc<Partition>>,
    /// Topic-level config overrides, by Kafka name.
    pub configs: BTreeMap<String, String>,
}

pub struct Broker {
    pub config: Config,
    pub logs: LogManager,
    pub groups: crate::group::Coordinator,
    pub producer_ids: producer_ids::ProducerIds,
    pub txns: crate::txn::TxnCoordinator,
    pub cluster_id: String,
    /// SCRAM users (SASL listeners; Describe/AlterUserScramCredentials).
    pub credentials: crate::security::Credentials,
    /// Produce, fetch and request-time quotas (Describe/AlterClientQuotas).
    pub quotas: crate::security::quota::Quotas,
    /// The ACLs, when `authorizer.class.name` is set; None: everything is allowed.
    pub authorizer: Option<crate::security::acl::Authorizer>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serializes topic creation and deletion.
    admin: tokio::sync::Mutex<()>,
    /// Running processors (started by `start_processors`).
    processors: parking_lot::Mutex<Vec<crate::processor::runtime::Running>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The Kafka listeners are accepting (set by `server::run`).
    pub ready: std::sync::atomic::AtomicBool,
    /// Each listener's advertised address (set by `server::run`).
    endpoints: parking_lot::RwLock<Vec<Endpoint>>,
}

/// A listener as clients see it: Metadata, FindCoordinator and
/// DescribeCluster answer a client with the endpoint of the listener its
/// request came in on.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub listener: String,
    pub protocol: crate::security::SecurityProtocol,
    /// The bound address.
    pub bound: std::net::SocketAddr,
    /// What clients are told to connect to.
    pub host: String,
    pub port: i32,
}

/// Runs `f` and measures the CPU time its polls took on their threads
/// (what a request-time quota counts; time spent waiting is free).
async fn cpu_timed<F: std::future::Future>(f: F) -> (F::Output, std::time::Duration) {
    fn thread_cpu() -> std::time::Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec to fill; this clock always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
    let mut f = std::pin::pin!(f);
    let mut spent = std::time::Duration::ZERO;
    let out = std::future::poll_fn(|cx| {
        let started = thread_cpu();
        let r = f.as_mut().poll(cx);
        spent += thread_cpu().saturating_sub(started);
        r
    })
    .await;
    (out, spent)
}

/// A dispatched request: its outcome, and how long its client must wait
/// before the next (client quotas; zero when within them).
pub struct Dispatched {
    pub handled: Handled,
    pub throttle: std::time::Duration,
}

/// A request's outcome: answered, or answered later (acks=all produce).
#[allow(clippy::large_enum_variant)] // made once per request and moved straight on
pub enum Handled {
    Now(Option<Reply>),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Option<Reply>> + Send>>),
}

/// Why a topic could not be made.
#[derive(Debug)]
pub struct TopicError {
    pub code: i16,
    pub message: String,
}

impl TopicError {
    /// An authorization error with Kafka's message for it.
    pub fn denied(code: i16) -> TopicError {
        TopicError { code, message: crate::protocol::code::denied(code).into() }
    }
}

impl Broker {
    /// Opens the data directory (recovering it if needed) and loads topics.
    pub fn open(config: Config) -> Result<Broker, LogError> {
        let data_dir = config.broker.data_dir.clone();
        let default_log = topic_config::log_config(&config.topic_defaults, &BTreeMap::new()).map_err(|reason| LogError::BadTopicMeta { path: data_dir.clone(), reason })?;
        let logs = LogManager::open(&data_dir, default_log)?;
        let cluster_id = match &config.broker.cluster_id {
            Some(id) => id.clone(),
            None => stored_cluster_id(&data_dir)?,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut topics = HashMap::new();
        for meta in logs.topics() {
            let log_config = topic_config::log_config(&config.topic_defaults, &meta.configs)
                .map_err(|reason| LogError::BadTopicMeta { path: crate::log::topic::path(&data_dir, &meta.name), reason })?;
            let mut partitions = Vec::new();
            for p in 0..meta.partitions {
                // A partition missing after a crash mid-create comes back empty.
                let log = logs.get_or_create(&meta.name, p, log_config.clone())?;
                partitions.push(Arc::new(Partition::new(p as i32, log, &metrics)));
            }
            let topic = Topic { name: meta.name.clone(), id: Uuid::from_bytes(meta.id), partitions, configs: meta.configs.clone() };
            topics.insert(meta.name, Arc::new(topic));
        }
        // The internal offsets topic: one partition, never deleted by retention.
        let offsets_topic = crate::group::store::TOPIC;
        if !topics.contains_key(offsets_topic) {
            let configs: BTreeMap<String, String> = [("cleanup.policy", "compact"), ("retention.ms", "-1"), ("segment.bytes", "104857600")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let t = make_topic(&logs, &config, &metrics, offsets_topic, 1, configs).map_err(|e| LogError::BadTopicMeta { path: data_dir.clone(), reason: e.message })?;
            topics.insert(offsets_topic.to_string(), Arc::new(t));
        }
        let txn_topic = crate::txn::TOPIC;
        if !topics.contains_key(txn_topic) {
            let configs: BTreeMap<String, String> = [("cleanup.policy", "compact"), ("retention.ms", "-1"), ("segment.bytes", "104857600")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let t = make_topic(&logs, &config, &metrics, txn_topic, 1, configs).map_err(|e| LogError::BadTopicMeta { path: data_dir.clone(), reason: e.message })?;
            topics.insert(txn_topic.to_string(), Arc::new(t));
        }
        let txns = crate::txn::TxnCoordinator::open(Arc::clone(&topics[txn_topic].partitions[0].log), config.broker.transaction_max_timeout_ms)?;
        let offsets_log = Arc::clone(&topics[offsets_topic].partitions[0].log);
        let groups = crate::group::Coordinator::open(config.groups.clone(), offsets_log)?;
        let producer_ids = producer_ids::ProducerIds::open(&data_dir)?;
        let credentials = crate::security::Credentials::open(&data_dir, config.sasl_bootstrap())?;
        let quotas = crate::security::quota::Quotas::open(&data_dir)?;
        let authorizer = match config.authorizer() {
            Some((super_users, allow_if_no_acl)) => Some(crate::security::acl::Authorizer::open(&data_dir, super_users, allow_if_no_acl)?),
            None => None,
        };
        logs.start_cleaner(config.cleaner())?;
        Ok(Broker {
            config,
            logs,
            groups,
            producer_ids,
            txns,
            cluster_id,
            credentials,
            quotas,
            authorizer,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            processors: parking_lot::Mutex::new(Vec::new()),
            metrics,
            ready: std::sync::atomic::AtomicBool::new(false),
            endpoints: parking_lot::RwLock::new(Vec::new()),
        })
    }

    /// Internal topics (`__consumer_offsets`) are written only by the broker.
    pub fn is_internal(name: &str) -> bool {
        name == crate::group::store::TOPIC || name == crate::txn::TOPIC
    }

    /// The effects of ending transactions: markers in partition logs (and
    /// waking their fetches), offsets in the group coordinator.
    pub fn txn_tick(&self) {
        self.with_txn_effects(|fx| self.txns.tick(fx));
    }

    pub(crate) fn with_txn_effects<R>(&self, f: impl FnOnce(&crate::txn::Effects<'_>) -> R) -> R {
        let log = |t: &str, p: i32| self.partition(t, p).map(|part| Arc::clone(&part.log));
        let wake = |t: &str, p: i32| {
            if let Some(part) = self.partition(t, p) {
                part.appended();
            }
        };
        let commit_offsets = |offsets: &[crate::txn::PendingOffset]| self.groups.commit_now(offsets);
        f(&crate::txn::Effects { log: &log, wake: &wake, commit_offsets: &commit_offsets })
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn topic_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.topics.read().keys().cloned().collect();
        v.sort();
        v
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.topic(topic).and_then(|t| t.partitions.get(usize::try_from(index).ok()?).cloned())
    }

    /// Checks a topic creation (name, partitions, replication, configs)
    /// without making anything; returns the normalized configs.
    pub fn check_new_topic(&self, name: &str, partitions: i32, replication: i16, configs: &[(String, Option<String>)]) -> Result<BTreeMap<String, String>, TopicError> {
        let err = |code, message: String| Err(TopicError { code, message });
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name == "." || name == ".." || name.len() > 249 || !name.chars().all(legal) {
            return err(crate::protocol::code::INVALID_TOPIC_EXCEPTION, format!("topic name {name:?} is illegal: use 1 to 249 of [a-zA-Z0-9._-], not '.' or '..'"));
        }
        if self.topic(name).is_some() {
            return err(crate::protocol::code::TOPIC_ALREADY_EXISTS, format!("topic {name:?} already exists"));
        }
        if partitions < 1 {
            return err(crate::protocol::code::INVALID_PARTITIONS, format!("number of partitions must be at least 1, got {partitions}"));
        }
        if replication != 1 {
            return err(crate::protocol::code::INVALID_REPLICATION_FACTOR, format!("replication factor {replication} is impossible: Eddy is a single node"));
        }
        let mut out = BTreeMap::new();
        for (k, v) in configs {
            let Some(v) = v else {
                return err(crate::protocol::code::INVALID_CONFIG, format!("config {k} has a null value"));
            };
            match topic_config::validate(k, v) {
                Ok(v) => {
                    out.insert(k.clone(), v);
                }
                Err(e) => return err(crate::protocol::code::INVALID_CONFIG, e),
            }
        }
        topic_config::log_config(&self.config.topic_defaults, &out).map_err(|e| TopicError { code: crate::protocol::code::INVALID_CONFIG, message: e })?;
        Ok(out)
    }

    /// Creates a topic: metadata first (durably), then its partition logs.
    pub async fn create_topic(&self, name: &str, partitions: i32, configs: BTreeMap<String, String>) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock().await;
        self.check_new_topic(name, partitions, 1, &[])?;
        let topic = Arc::new(make_topic(&self.logs, &self.config, &self.metrics, name, partitions, configs)?);
        self.topics.write().insert(name.to_string(), Arc::clone(&topic));
        Ok(topic)
    }

    /// The topic, created with `partitions` and `configs` if it does not
    /// exist (processors' output and dead-letter topics). For threads outside
    /// the async runtime.
    pub fn ensure_topic(&self, name: &str, partitions: i32, configs: BTreeMap<String, String>) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let _admin = self.admin.blocking_lock();
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        self.check_new_topic(name, partitions, 1, &[])?;
        let topic = Arc::new(make_topic(&self.logs, &self.config, &self.metrics, name, partitions, configs)?);
        self.topics.write().insert(name.to_string(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Starts the configured processors (once).
    pub fn start_processors(self: &Arc<Self>) {
        let mut running = self.processors.lock();
        if running.is_empty() {
            *running = crate::processor::runtime::start_all(self);
        }
    }

    /// Running processors' specs and counters.
    /// Where interactive queries to a running processor go.
    pub fn processor_queries(&self, name: &str) -> Option<std::sync::mpsc::Sender<crate::processor::runtime::Query>> {
        self.processors.lock().iter().find(|r| r.spec.name == name).map(|r| r.queries.clone())
    }

    pub fn processor_stats(&self) -> Vec<(Arc<crate::processor::ProcessorSpec>, Arc<crate::processor::runtime::Stats>)> {
        self.processors.lock().iter().map(|r| (Arc::clone(&r.spec), Arc::clone(&r.stats))).collect()
    }

    /// Replaces a topic's config overrides (already validated): durably in
    /// its metadata, then in every partition's log.
    pub async fn set_topic_configs(&self, name: &str, configs: BTreeMap<String, String>) -> Result<(), TopicError> {
        let _admin = self.admin.lock().await;
        let Some(old) = self.topic(name) else {
            return Err(TopicError { code: crate::protocol::code::UNKNOWN_TOPIC_OR_PARTITION, message: format!("unknown topic {name:?}") });
        };
        let log_config = topic_config::log_config(&self.config.topic_defaults, &configs).map_err(|e| TopicError { code: crate::protocol::code::INVALID_CONFIG, message: e })?;
        let meta = TopicMeta { name: name.to_string(), id: *old.id.as_bytes(), partitions: old.partitions.len() as u32, configs: configs.clone() };
        self.logs.put_topic(meta).map_err(|e| TopicError { code: e.kafka_code(), message: e.to_string() })?;
        for p in &old.partitions {
            p.log.set_config(log_config.clone());
        }
        let topic = Topic { name: old.name.clone(), id: old.id, partitions: old.partitions.clone(), configs };
        self.topics.write().insert(name.to_string(), Arc::new(topic));
        tracing::info!(topic = name, "changed topic configs");
        Ok(())
    }

    /// Grows a topic to `count` partitions (CreatePartitions).
    pub async fn add_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), TopicError> {
        let _admin = self.admin.lock().await;
        let err = |code, message: String| Err(TopicError { code, message });
        let Some(old) = self.topic(name) else {
            return err(crate::protocol::code::UNKNOWN_TOPIC_OR_PARTITION, format!("unknown topic {name:?}"));
        };
        let have = old.partitions.len() as i32;
        if count <= have {
            return err(crate::protocol::code::INVALID_PARTITIONS, format!("topic {name:?} has {have} partitions; the new count must be larger, not {count}"));
        }
        if validate_only {
            return Ok(());
        }
        let storage = |e: LogError| TopicError { code: e.kafka_code(), message: e.to_string() };
        let log_config = topic_config::log_config(&self.config.topic_defaults, &old.configs).map_err(|e| TopicError { code: crate::protocol::code::INVALID_CONFIG, message: e })?;
        let meta = TopicMeta { name: name.to_string(), id: *old.id.as_bytes(), partitions: count as u32, configs: old.configs.clone() };
        self.logs.put_topic(meta).map_err(storage)?;
        let mut partitions = old.partitions.clone();
        for p in have..count {
            let log = self.logs.get_or_create(name, p as u32, log_config.clone()).map_err(storage)?;
            partitions.push(Arc::new(Partition::new(p, log, &self.metrics)));
        }
        let topic = Topic { name: old.name.clone(), id: old.id, partitions, configs: old.configs.clone() };
        self.topics.write().insert(name.to_string(), Arc::new(topic));
        tracing::info!(topic = name, from = have, to = count, "added partitions");
        Ok(())
    }

    /// Deletes a topic and all its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        let _admin = self.admin.lock().await;
        let Some(topic) = self.topics.write().remove(name) else { return Ok(()) };
        for p in &topic.partitions {
            p.appended(); // wake fetches so they see the topic gone
        }
        self.logs.delete_topic(name)?;
        self.metrics.forget_topic(name);
        tracing::info!(topic = name, "deleted a topic");
        Ok(())
    }

    /// Starts a request: a produce that must wait for writes comes back as
    /// a future that owns what it needs, so its connection can read on;
    /// everything else is answered here.
    /// Client quotas: with `throttle` set, the response says how long to
    /// back off and the connection reads nothing more for that long.
    pub async fn dispatch(&self, req: Request, ctx: &crate::security::Context) -> Dispatched {
        if !self.quotas.active() {
            return Dispatched { handled: self.run(req, ctx).await, throttle: std::time::Duration::ZERO };
        }
        let mut req = req;
        let client_id = req.header.client_id.clone().unwrap_or_default();
        // As Kafka: a fetch asks for no more than the client's byte rate
        // allows in one measuring window.
        if let RequestKind::Fetch(f) = &mut req.body {
            if let Some(cap) = self.quotas.window_bytes(crate::security::quota::Kind::Fetch, &ctx.principal, &client_id) {
                f.max_bytes = f.max_bytes.min(cap.clamp(1, i32::MAX as u64) as i32);
                f.min_bytes = f.min_bytes.min(f.max_bytes);
            }
        }
        let (api_key, size) = (req.api_key, req.size);
        // Request time is the CPU spent on the request, not its waits (long
        // polls, rebalances).
        let (handled, cpu) = cpu_timed(self.run(req, ctx)).await;
        self.throttle(handled, api_key, size, cpu, ctx, &client_id)
    }

    /// Runs a request to its outcome (`dispatch` without quotas).
    async fn run(&self, req: Request, ctx: &crate::security::Context) -> Handled {
        let Request { api_key, version, header, body, size } = req;
        match body {
            RequestKind::Produce(r) => {
                let appended = produce::append(self, ctx, r, version);
                if appended.is_waiting() {
                    Handled::Later(Box::pin(async move { appended.finish().await.map(|r| ResponseKind::Produce(r).into()) }))
                } else {
                    Handled::Now(appended.finish().await.map(|r| ResponseKind::Produce(r).into()))
                }
            }
            body => Handled::Now(self.handle(Request { api_key, version, header, body, size }, ctx).await),
        }
    }

    /// Counts a request against its client's quotas (produce bytes, fetch
    /// bytes, handling time) and sets the longest throttle in its response.
    fn throttle(&self, handled: Handled, api: kafka_protocol::messages::ApiKey, size: usize, took: std::time::Duration, ctx: &crate::security::Context, client_id: &str) -> Dispatched {
        use crate::security::quota::Kind;
        use kafka_protocol::messages::ApiKey;
        let q = &self.quotas;
        let mut throttle = std::time::Duration::ZERO;
        if !matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
            throttle = q.record(Kind::Request, &ctx.principal, client_id, took.as_nanos() as f64);
        }
        if api == ApiKey::Produce {
            throttle = throttle.max(q.record(Kind::Produce, &ctx.principal, client_id, size as f64));
        }
        let handled = match handled {
            Handled::Now(Some(Reply { mut body, mut files })) => {
                if let ResponseKind::Fetch(f) = &mut body {
                    let bytes: usize = f.responses.iter().flat_map(|t| &t.partitions).map(|p| p.records.as_ref().map_or(0, |r| r.len())).sum();
                    throttle = throttle.max(q.record(Kind::Fetch, &ctx.principal, client_id, bytes as f64));
                    if !throttle.is_zero() {
                        // As Kafka: a throttled fetch is answered empty and
                        // its bytes are not counted; the client fetches them
                        // again once the throttle has passed.
                        q.unrecord(Kind::Fetch, &ctx.principal, client_id, bytes as f64);
                        f.responses.clear();
                        files.clear();
                    }
                }
                crate::protocol::set_throttle(&mut body, throttle);
                Handled::Now(Some(Reply { body, files }))
            }
            Handled::Later(fut) if !throttle.is_zero() => Handled::Later(Box::pin(async move {
                fut.await.map(|mut r| {
                    crate::protocol::set_throttle(&mut r.body, throttle);
                    r
                })
            })),
            other => other,
        };
        Dispatched { handled, throttle }
    }

    /// Answers one request; `None` means no response is sent (acks=0).
    /// `ctx` says who asks (its address names group members' hosts).
    pub async fn handle(&self, req: Request, ctx: &crate::security::Context) -> Option<Reply> {
        let v = req.version;
        let client = || crate::group::ClientInfo { client_id: req.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(), host: format!("/{}", ctx.peer.ip()) };
        Some(match req.body {
            RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(&r, v)),
            RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(self, ctx, r, v).await),
            RequestKind::Produce(r) => return produce::append(self, ctx, r, v).finish().await.map(|r| ResponseKind::Produce(r).into()),
            RequestKind::Fetch(r) => return Some(fetch::handle(self, ctx, r, v).await),
            RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets::handle(self, ctx, r, v)),
            RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(topics::create(self, ctx, r, v).await),
            RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(topics::delete(self, ctx, r, v).await),
            RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(partitions::create(self, ctx, r, v).await),
            RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(partitions::delete_records(self, ctx, r, v).await),
            RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(configs::describe(self, ctx, r, v)),
            RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(configs::alter(self, ctx, r, v).await),
            RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(self, ctx, r, v).await),
            RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(cluster::describe_cluster(self, ctx, r, v)),
            RequestKind::DescribeLogDirs(r) => ResponseKind::DescribeLogDirs(cluster::describe_log_dirs(self, ctx, r, v)),
            RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(groups::find_coordinator(self, ctx, r, v)),
            RequestKind::JoinGroup(r) => {
                let c = client();
                ResponseKind::JoinGroup(groups::join(self, ctx, r, v, c).await)
            }
            RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync(self, ctx, r, v).await),
            RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(self, ctx, r, v)),
            RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave(self, ctx, r, v)),
            RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(groups::offset_commit(self, ctx, r, v).await),
            RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(groups::offset_fetch(self, ctx, r, v)),
            RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(groups::describe_groups(self, ctx, r, v)),
            RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list_groups(self, ctx, r, v)),
            RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(groups::delete_groups(self, ctx, r, v)),
            RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(groups::offset_delete(self, ctx, r, v)),
            RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(groups::consumer_heartbeat(self, ctx, r, v, client())),
            RequestKind::ConsumerGroupDescribe(r) => ResponseKind::ConsumerGroupDescribe(groups::consumer_describe(self, ctx, r, v)),
            RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(producer_ids::init_producer_id(self, ctx, r, v)),
            RequestKind::AddPartitionsToTxn(r) => ResponseKind::AddPartitionsToTxn(transactions::add_partitions(self, ctx, r, v)),
            RequestKind::AddOffsetsToTxn(r) => ResponseKind::AddOffsetsToTxn(transactions::add_offsets(self, ctx, r, v)),
            RequestKind::DescribeProducers(r) => ResponseKind::DescribeProducers(transactions::describe_producers(self, ctx, r, v)),
            RequestKind::DescribeTransactions(r) => ResponseKind::DescribeTransactions(transactions::describe_transactions(self, ctx, r, v)),
            RequestKind::ListTransactions(r) => ResponseKind::ListTransactions(transactions::list_transactions(self, ctx, r, v)),
            RequestKind::TxnOffsetCommit(r) => ResponseKind::TxnOffsetCommit(transactions::txn_offset_commit(self, ctx, r, v)),
            RequestKind::DescribeAcls(r) => ResponseKind::DescribeAcls(acls::describe(self, ctx, r, v)),
            RequestKind::CreateAcls(r) => ResponseKind::CreateAcls(acls::create(self, ctx, r, v)),
            RequestKind::DeleteAcls(r) => ResponseKind::DeleteAcls(acls::delete(self, ctx, r, v)),
            RequestKind::DescribeUserScramCredentials(r) => ResponseKind::DescribeUserScramCredentials(scram_credentials::describe(self, ctx, r, v)),
            RequestKind::AlterUserScramCredentials(r) => ResponseKind::AlterUserScramCredentials(scram_credentials::alter(self, ctx, r, v)),
            RequestKind::DescribeClientQuotas(r) => ResponseKind::DescribeClientQuotas(client_quotas::describe(self, ctx, r, v)),
            RequestKind::AlterClientQuotas(r) => ResponseKind::AlterClientQuotas(client_quotas::alter(self, ctx, r, v)),
            // A SASL listener's connection answers these itself (security::sasl).
            RequestKind::SaslHandshake(_) => ResponseKind::SaslHandshake(crate::security::sasl::handshake_not_expected()),
            RequestKind::SaslAuthenticate(_) => ResponseKind::SaslAuthenticate(crate::security::sasl::authenticate_not_expected()),
            RequestKind::EndTxn(r) => {
                let b = self;
                ResponseKind::EndTxn(transactions::end_txn(b, ctx, r, v).await)
            }
            other => {
                // decode_request only lets through what SUPPORTED lists.
                tracing::error!(request = ?std::mem::discriminant(&other), "no handler for a decoded request");
                return None;
            }
        }
        .into())
    }

    /// Records the listeners being served (`server::run`).
    pub fn set_endpoints(&self, endpoints: Vec<Endpoint>) {
        *self.endpoints.write() = endpoints;
    }

    /// Every listener's endpoint, in `listeners` order. Before `server::run`
    /// (a broker driven without a server), the configured ones.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let served = self.endpoints.read();
        if !served.is_empty() {
            return served.clone();
        }
        let specs = self.config.listeners().unwrap_or_default();
        specs
            .into_iter()
            .map(|s| {
                let (host, port) = s.advertised.clone().unwrap_or_else(|| (s.addr.ip().to_string(), s.addr.port()));
                Endpoint { listener: s.name, protocol: s.protocol, bound: s.addr, host, port: port as i32 }
            })
            .collect()
    }

    /// The advertised `host:port` of `listener` (the one a request came in
    /// on); the first listener's for an unknown name.
    pub fn advertised(&self, listener: &str) -> (String, i32) {
        let pick = |all: &[Endpoint]| all.iter().find(|e| e.listener == listener).or(all.first()).map(|e| (e.host.clone(), e.port));
        let served = pick(&self.endpoints.read());
        served.or_else(|| pick(&self.endpoints())).unwrap_or_else(|| ("127.0.0.1".into(), 9092))
    }

    /// Group sessions, join deadlines and offset retention (every 100 ms).
    pub fn group_tick(&self) {
        self.groups.tick();
    }

    /// Periodic upkeep of the logs (flush.ms, retention, checkpoints).
    pub fn maintain(&self) {
        self.txn_tick();
        self.quotas.expire();
        self.logs.maintain(crate::log::now_ms());
    }

    /// Flushes and closes every log and records the clean shutdown.
    pub fn shutdown(&self) -> Result<(), LogError> {
        for p in std::mem::take(&mut *self.processors.lock()) {
            p.stop();
        }
        self.logs.shutdown()
    }
}

/// Makes a topic's metadata (durably) and partition logs.
fn make_topic(logs: &LogManager, config: &Config, metrics: &crate::metrics::Metrics, name: &str, partitions: i32, configs: BTreeMap<String, String>) -> Result<Topic, TopicError> {
    let storage = |e: LogError| TopicError { code: e.kafka_code(), message: e.to_string() };
    let log_config = topic_config::log_config(&config.topic_defaults, &configs).map_err(|e| TopicError { code: crate::protocol::code::INVALID_CONFIG, message: e })?;
    let id = Uuid::new_v4();
    let meta = TopicMeta { name: name.to_string(), id: *id.as_bytes(), partitions: partitions as u32, configs: configs.clone() };
    logs.put_topic(meta).map_err(storage)?;
    let mut parts = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let log = logs.get_or_create(name, p as u32, log_config.clone()).map_err(storage)?;
        parts.push(Arc::new(Partition::new(p, log, metrics)));
    }
    tracing::info!(topic = name, partitions, id = %id, "created a topic");
    Ok(Topic { name: name.to_string(), id, partitions: parts, configs })
}

/// The ApiVersions answer for a version Eddy does not know (sent as v0).
pub fn api_versions_unsupported() -> kafka_protocol::messages::ApiVersionsResponse {
    api_versions::unsupported()
}

/// The cluster id kept in `<data_dir>/cluster.id`, generated on first use.
fn stored_cluster_id(data_dir: &std::path::Path) -> Result<String, LogError> {
    let path = data_dir.join("cluster.id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    // Kafka's format: a UUID in URL-safe base64 without padding (22 chars).
    let id = base64_url(Uuid::new_v4().as_bytes());
    crate::log::checkpoint::write_atomically(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
