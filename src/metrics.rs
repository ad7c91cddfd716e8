//! The broker's counters and histograms, updated where the work happens
//! (per request and per batch, never per record), and the Prometheus
//! exposition of them plus gauges read at scrape time (offsets, sizes,
//! group lag, cleaner and processor state).
//!
//! Label cardinality is bounded: APIs are the served ones, error labels are
//! Kafka error codes, topics are the broker's own (a deleted topic's series
//! go with it). Nothing is labelled by client id or connection.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ResponseKind};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::broker::Broker;
use crate::protocol;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    api: &'static str,
    code: i16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Per-topic traffic counters.
#[derive(Clone)]
pub struct TopicCounters {
    pub bytes_in: Counter,
    pub records_in: Counter,
    pub bytes_out: Counter,
    pub records_out: Counter,
}

pub struct Metrics {
    /// By API key number: the request counter and latency histogram.
    per_api: Vec<Option<(Counter, Histogram)>>,
    requests: Family<ApiLabel, Counter>,
    latency: Family<ApiLabel, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    bytes_in: Family<TopicLabel, Counter>,
    records_in: Family<TopicLabel, Counter>,
    bytes_out: Family<TopicLabel, Counter>,
    records_out: Family<TopicLabel, Counter>,
    /// Cached per-topic handles (one map lookup per request and topic).
    topics: Mutex<HashMap<String, TopicCounters>>,
    /// Frames that could not be decoded (the connection is closed).
    pub malformed: Counter,
    pub connections: Gauge,
    pub connections_accepted: Counter,
    /// Segment fsyncs of topic partitions (acks=all, `flush.ms`, checkpoints), seconds.
    pub fsync: Histogram,
    /// When the broker opened.
    pub started: std::time::Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let requests = Family::<ApiLabel, Counter>::default();
        let latency = Family::<ApiLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let mut per_api = vec![None; protocol::SUPPORTED.iter().map(|(k, _, _)| *k as usize + 1).max().unwrap_or(0)];
        for (k, _, _) in protocol::SUPPORTED {
            let l = ApiLabel { api: protocol::api_name(*k) };
            per_api[*k as usize] = Some((requests.get_or_create(&l).clone(), latency.get_or_create(&l).clone()));
        }
        Metrics {
            per_api,
            requests,
            latency,
            errors: Family::default(),
            bytes_in: Family::default(),
            records_in: Family::default(),
            bytes_out: Family::default(),
            records_out: Family::default(),
            topics: Mutex::new(HashMap::new()),
            malformed: Counter::default(),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            fsync: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            started: std::time::Instant::now(),
        }
    }

    /// Counts a request answered after `elapsed`, with the error codes its
    /// response carries.
    pub fn request(&self, api: ApiKey, elapsed: Duration, response: Option<&ResponseKind>) {
        let Some((count, hist)) = self.per_api.get(api as usize).and_then(Option::as_ref) else { return };
        count.inc();
        hist.observe(elapsed.as_secs_f64());
        if let Some(r) = response {
            protocol::error_codes(r, |code| {
                if code != 0 {
                    self.errors.get_or_create(&ErrorLabels { api: protocol::api_name(api), code }).inc();
                }
            });
        }
    }

    /// The traffic counters of a topic.
    pub fn topic(&self, name: &str) -> TopicCounters {
        if let Some(t) = self.topics.lock().get(name) {
            return t.clone();
        }
        let l = TopicLabel { topic: name.to_string() };
        let t = TopicCounters {
            bytes_in: self.bytes_in.get_or_create(&l).clone(),
            records_in: self.records_in.get_or_create(&l).clone(),
            bytes_out: self.bytes_out.get_or_create(&l).clone(),
            records_out: self.records_out.get_or_create(&l).clone(),
        };
        self.topics.lock().insert(name.to_string(), t.clone());
        t
    }

    /// Traffic over every topic: (bytes in, records in, bytes out, records out).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        self.topics.lock().values().fold((0, 0, 0, 0), |(a, b, c, d), t| (a + t.bytes_in.get(), b + t.records_in.get(), c + t.bytes_out.get(), d + t.records_out.get()))
    }

    /// Drops a deleted topic's series.
    pub fn forget_topic(&self, name: &str) {
        self.topics.lock().remove(name);
        let l = TopicLabel { topic: name.to_string() };
        self.bytes_in.remove(&l);
        self.records_in.remove(&l);
        self.bytes_out.remove(&l);
        self.records_out.remove(&l);
    }

    /// A registry with every metric of `broker`, for one scrape or for good.
    pub fn registry(broker: &Arc<Broker>) -> Registry {
        let m = &broker.metrics;
        let mut r = Registry::with_prefix("eddy");
        r.register("requests", "Kafka requests answered, by API", m.requests.clone());
        r.register("request_errors", "Non-zero error codes in responses, by API and Kafka error code", m.errors.clone());
        r.register("request_duration_seconds", "Time from a request's decoding to its response being ready, by API", m.latency.clone());
        r.register("malformed_requests", "Frames that could not be decoded (their connections were closed)", m.malformed.clone());
        r.register("connections", "Open client connections", m.connections.clone());
        r.register("connections_accepted", "Client connections accepted", m.connections_accepted.clone());
        r.register("fsync_duration_seconds", "fsyncs of topic partition segments (acks=all, flush.ms, periodic checkpoints)", m.fsync.clone());
        r.register("topic_bytes_in", "Record batch bytes appended by Produce, by topic", m.bytes_in.clone());
        r.register("topic_records_in", "Records appended by Produce, by topic", m.records_in.clone());
        r.register("topic_bytes_out", "Record batch bytes returned by Fetch, by topic", m.bytes_out.clone());
        r.register("topic_records_out", "Records returned by Fetch (whole batches), by topic", m.records_out.clone());
        r.register_collector(Box::new(State(Arc::downgrade(broker))));
        r
    }

    /// The Prometheus text exposition (OpenMetrics) of a broker's metrics.
    pub fn render(broker: &Arc<Broker>) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &Metrics::registry(broker)).expect("writing to a String");
        out
    }
}

/// Gauges read from the broker at scrape time.
#[derive(Debug)]
struct State(Weak<Broker>);

type Labels<'a> = Vec<(&'static str, String)>;

/// One metric family of gauges (or counters) and its series.
fn family<'a>(enc: &mut DescriptorEncoder<'a>, name: &str, help: &str, counter: bool, series: Vec<(Labels<'_>, f64)>) -> std::fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let kind = if counter { ConstCounter::new(0.0).metric_type() } else { ConstGauge::new(0.0).metric_type() };
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in series {
        let e = m.encode_family(&labels)?;
        if counter {
            ConstCounter::new(v).encode(e)?;
        } else {
            ConstGauge::new(v).encode(e)?;
        }
    }
    Ok(())
}

impl Collector for State {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Some(b) = self.0.upgrade() else { return Ok(()) };
        let tp = |t: &str, p: i32| -> Labels<'static> { vec![("topic", t.to_string()), ("partition", p.to_string())] };

        let (mut leo, mut lso, mut size) = (Vec::new(), Vec::new(), Vec::new());
        let mut ends: HashMap<(String, i32), u64> = HashMap::new();
        for t in b.topics() {
            for p in &t.partitions {
                leo.push((tp(&t.name, p.index), p.log.log_end_offset() as f64));
                lso.push((tp(&t.name, p.index), p.log.log_start_offset() as f64));
                size.push((tp(&t.name, p.index), p.log.size_bytes() as f64));
                ends.insert((t.name.clone(), p.index), p.log.log_end_offset());
            }
        }
        family(&mut enc, "log_end_offset", "Log end offset, by partition", false, leo)?;
        family(&mut enc, "log_start_offset", "Log start offset, by partition", false, lso)?;
        family(&mut enc, "log_size_bytes", "Bytes of segment files, by partition", false, size)?;

        let mut lag = Vec::new();
        for (group, _, _, _) in b.groups.list() {
            for (t, p, c) in b.groups.committed(&group) {
                if let Some(end) = ends.get(&(t.clone(), p)) {
                    let l = (*end as i64 - c.offset).max(0);
                    lag.push((vec![("group", group.clone()), ("topic", t), ("partition", p.to_string())], l as f64));
                }
            }
        }
        family(&mut enc, "consumer_group_lag", "Log end offset minus the group's committed offset, by group and partition", false, lag)?;

        if let Some(c) = b.logs.cleaner_totals() {
            let one = |v: u64| vec![(Labels::new(), v as f64)];
            family(&mut enc, "cleaner_cleans", "Log cleaner passes completed", true, one(c.cleans.load(Ordering::Relaxed)))?;
            family(&mut enc, "cleaner_bytes_read", "Bytes the log cleaner read", true, one(c.bytes_read.load(Ordering::Relaxed)))?;
            family(&mut enc, "cleaner_bytes_written", "Bytes the log cleaner wrote", true, one(c.bytes_written.load(Ordering::Relaxed)))?;
            family(&mut enc, "cleaner_records_removed", "Records the log cleaner removed", true, one(c.records_removed.load(Ordering::Relaxed)))?;
        }

        let procs = b.processor_stats();
        let now = crate::log::now_ms();
        let each = |f: &dyn Fn(&crate::processor::runtime::Stats) -> Option<f64>| -> Vec<(Labels<'static>, f64)> { procs.iter().filter_map(|(spec, s)| f(s).map(|v| (vec![("processor", spec.name.clone())], v))).collect() };
        let counter = |a: &std::sync::atomic::AtomicU64| Some(a.load(Ordering::Relaxed) as f64);
        family(&mut enc, "processor_records_in", "Source records a processor has read", true, each(&|s| counter(&s.records_in)))?;
        family(&mut enc, "processor_records_out", "Output records a processor has written", true, each(&|s| counter(&s.records_out)))?;
        family(&mut enc, "processor_records_late", "Records that arrived after their windows closed", true, each(&|s| counter(&s.late)))?;
        let by_kind = procs
            .iter()
            .flat_map(|(spec, s)| crate::processor::extract::Bad::KINDS.iter().zip(&s.bad).map(|(kind, n)| (vec![("processor", spec.name.clone()), ("reason", kind.to_string())], n.load(Ordering::Relaxed) as f64)))
            .collect();
        family(&mut enc, "processor_records_bad", "Records without a usable key, time or field, by reason", true, by_kind)?;
        family(&mut enc, "processor_records_dead_lettered", "Records written to the dead-letter topic", true, each(&|s| counter(&s.dead_lettered)))?;
        family(&mut enc, "processor_restarts", "Times a processor failed and restarted from its checkpoint", true, each(&|s| counter(&s.restarts)))?;
        family(&mut enc, "processor_checkpoints", "Checkpoints written", true, each(&|s| counter(&s.checkpoints)))?;
        family(&mut enc, "processor_watermark_ms", "The processor's watermark (event time, ms since the epoch)", false, each(&|s| Some(s.watermark.load(Ordering::Relaxed)).filter(|w| *w != i64::MIN).map(|w| w as f64)))?;
        family(&mut enc, "processor_lag_records", "Committed source records not yet processed", false, each(&|s| counter(&s.lag)))?;
        family(&mut enc, "processor_checkpoint_age_seconds", "Time since the last checkpoint", false, each(&|s| Some(s.last_checkpoint_ms.load(Ordering::Relaxed)).filter(|t| *t > 0).map(|t| (now - t).max(0) as f64 / 1000.0)))?;
        Ok(())
    }
}
