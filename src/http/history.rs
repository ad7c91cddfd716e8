//! What the console's charts show on first load: the broker samples its
//! throughput totals and every group's lag every few seconds, keeping the
//! last few minutes in memory (nothing on disk; a restart starts afresh).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::broker::Broker;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept: six minutes at `INTERVAL`.
pub const KEEP: usize = 180;
/// Groups whose lag one sample keeps: those lagging most. Bounds memory
/// when ad-hoc group ids pile up (at most `KEEP` × this many entries).
pub const MAX_GROUPS: usize = 500;

struct Sample {
    t_ms: i64,
    bytes_in: u64,
    records_in: u64,
    bytes_out: u64,
    records_out: u64,
    /// Total lag of each group, by group id.
    lag: Vec<(String, u64)>,
}

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Takes one sample of the broker now.
    pub fn record(&self, broker: &Broker) {
        let (bytes_in, records_in, bytes_out, records_out) = broker.metrics.totals();
        let mut lag: Vec<(String, u64)> = broker.groups.list().into_iter().map(|(id, ..)| {
            let lag = super::api::group_lag(broker, &id);
            (id, lag)
        }).collect();
        if lag.len() > MAX_GROUPS {
            lag.sort_by_key(|g| std::cmp::Reverse(g.1));
            lag.truncate(MAX_GROUPS);
        }
        let sample = Sample { t_ms: crate::log::now_ms(), bytes_in, records_in, bytes_out, records_out, lag };
        let mut samples = self.samples.lock();
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The throughput totals over time, oldest first.
    pub fn totals(&self) -> Value {
        let samples = self.samples.lock();
        Value::Array(
            samples
                .iter()
                .map(|s| json!({ "t": s.t_ms, "bytes_in": s.bytes_in, "records_in": s.records_in, "bytes_out": s.bytes_out, "records_out": s.records_out }))
                .collect(),
        )
    }

    /// One group's total lag over time, oldest first (only samples taken
    /// while the group existed).
    pub fn lag(&self, group: &str) -> Value {
        let samples = self.samples.lock();
        Value::Array(samples.iter().filter_map(|s| s.lag.iter().find(|(g, _)| g == group).map(|(_, lag)| json!({ "t": s.t_ms, "lag": lag }))).collect())
    }
}

/// Samples the broker every `INTERVAL` until dropped (the HTTP server aborts it).
pub async fn sample(history: Arc<History>, broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (h, b) = (Arc::clone(&history), Arc::clone(&broker));
        // Group lag reads log ends under locks: keep it off the reactor.
        if tokio::task::spawn_blocking(move || h.record(&b)).await.is_err() {
            tracing::warn!("sampling the console history failed");
        }
    }
}
