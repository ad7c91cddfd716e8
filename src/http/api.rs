//! The JSON API: topics, consumer groups, processors, and interactive
//! queries of processor state.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{error, Reply};
use crate::broker::{Broker, Topic};
use crate::processor::runtime::Query;

/// How long an interactive query waits for its processor's thread.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn topics(broker: &Broker) -> Value {
    Value::Array(broker.topics().iter().map(|t| topic(broker, t)).collect())
}

pub fn topic(broker: &Broker, t: &Topic) -> Value {
    let partitions: Vec<Value> = t
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.index,
                "log_start_offset": p.log.log_start_offset(),
                "log_end_offset": p.log.log_end_offset(),
                "high_watermark": p.high_watermark(),
                "last_stable_offset": p.log.last_stable_offset(),
                "size_bytes": p.log.size_bytes(),
            })
        })
        .collect();
    let configs: serde_json::Map<String, Value> = crate::topic_config::effective(&broker.config.topic_defaults, &t.configs)
        .into_iter()
        .map(|(def, value, source)| {
            let source = match source {
                crate::topic_config::Source::Topic => "topic",
                crate::topic_config::Source::Broker => "broker",
                crate::topic_config::Source::Default => "default",
            };
            (def.name.to_string(), json!({ "value": value, "source": source }))
        })
        .collect();
    json!({
        "name": t.name,
        "id": t.id.to_string(),
        "internal": Broker::is_internal(&t.name),
        "partitions": partitions,
        "size_bytes": t.partitions.iter().map(|p| p.log.size_bytes()).sum::<u64>(),
        "records": t.partitions.iter().map(|p| p.log.log_end_offset() - p.log.log_start_offset()).sum::<u64>(),
        "configs": configs,
    })
}

pub fn groups(broker: &Broker) -> Value {
    Value::Array(broker.groups.list().into_iter().filter_map(|(id, ..)| group(broker, &id)).collect())
}

/// The topic partitions of a classic consumer member's assignment.
fn assignment(bytes: &[u8]) -> Vec<Value> {
    crate::protocol::consumer_assignment(bytes).into_iter().map(|(topic, partitions)| json!({ "topic": topic, "partitions": partitions })).collect()
}

/// A KIP-848 member's partitions by topic name.
fn named(broker: &Broker, a: &crate::group::consumer::Assignment) -> Vec<Value> {
    a.iter()
        .map(|(id, ps)| json!({ "topic": broker.topic_by_id(*id).map(|t| t.name.clone()).unwrap_or_else(|| id.to_string()), "partitions": ps }))
        .collect()
}

pub fn group(broker: &Broker, id: &str) -> Option<Value> {
    let (_, state, protocol_type, group_type) = broker.groups.list().into_iter().find(|g| g.0 == id)?;
    let view = broker.groups.describe(id);
    // What every member shows; each protocol adds its assignment.
    let member = |member_id: &str, instance_id: &Option<String>, client_id: &str, host: &str, more: Value| {
        let mut v = json!({ "member_id": member_id, "instance_id": instance_id, "client_id": client_id, "host": host });
        if let (Some(v), Value::Object(more)) = (v.as_object_mut(), more) {
            v.extend(more);
        }
        v
    };
    let members: Vec<Value> = match broker.groups.describe_consumer(id).filter(|_| group_type == "consumer") {
        // KIP-848: the broker computed the assignment, so it knows it.
        Some(cv) => cv
            .members
            .iter()
            .map(|m| {
                let more = json!({
                    "member_epoch": m.epoch,
                    "subscribed": m.subscribed,
                    "assignment": named(broker, &m.assigned),
                    "target_assignment": named(broker, &m.target),
                });
                member(&m.member_id, &m.instance_id, &m.client_id, &m.client_host, more)
            })
            .collect(),
        None => view
            .as_ref()
            .map(|v| {
                let classic_consumer = v.protocol_type == "consumer";
                v.members
                    .iter()
                    .map(|m| {
                        let assigned = if classic_consumer { assignment(&m.assignment) } else { Vec::new() };
                        member(&m.member_id, &m.instance_id, &m.client_id, &m.client_host, json!({ "assignment": assigned }))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    let (offsets, total_lag) = committed_offsets(broker, id);
    Some(json!({
        "group_id": id,
        "state": view.as_ref().map_or(state, |v| v.state),
        "type": group_type,
        "protocol_type": protocol_type,
        "protocol": view.as_ref().map(|v| v.protocol.clone()).unwrap_or_default(),
        "members": members,
        "offsets": offsets,
        "lag": total_lag,
    }))
}

/// A group's committed offsets against the log ends, and their total lag.
fn committed_offsets(broker: &Broker, id: &str) -> (Vec<Value>, u64) {
    let mut committed = broker.groups.committed(id);
    committed.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut total_lag = 0u64;
    let offsets = committed
        .into_iter()
        .map(|(topic, p, c)| {
            let end = broker.partition(&topic, p).map(|part| part.log.log_end_offset());
            let lag = end.map(|e| lag_of(e, c.offset));
            total_lag += lag.unwrap_or(0);
            json!({ "topic": topic, "partition": p, "committed_offset": c.offset, "log_end_offset": end, "lag": lag, "metadata": c.metadata })
        })
        .collect();
    (offsets, total_lag)
}

/// Records between a committed offset and the log end.
fn lag_of(log_end: u64, committed: i64) -> u64 {
    (log_end as i64 - committed).max(0) as u64
}

/// A group's total lag: records between its committed offsets and the log ends.
pub fn group_lag(broker: &Broker, id: &str) -> u64 {
    broker.groups.committed(id).into_iter().filter_map(|(topic, p, c)| broker.partition(&topic, p).map(|part| lag_of(part.log.log_end_offset(), c.offset))).sum()
}

pub fn processors(broker: &Broker) -> Value {
    Value::Array(broker.processor_stats().iter().filter_map(|(spec, _)| processor(broker, &spec.name)).collect())
}

pub fn processor(broker: &Broker, name: &str) -> Option<Value> {
    let (spec, s) = broker.processor_stats().into_iter().find(|(spec, _)| spec.name == name)?;
    let ms = |a: &std::sync::atomic::AtomicI64| Some(a.load(Ordering::Relaxed)).filter(|t| *t > 0);
    let watermark = Some(s.watermark.load(Ordering::Relaxed)).filter(|w| *w != i64::MIN);
    let failure = s.failure.lock().clone();
    Some(json!({
        "name": spec.name,
        "status": if failure.is_some() { "restarting" } else { "running" },
        "error": failure,
        "sources": spec.topics,
        "output": spec.output_topic,
        "dead_letter": spec.dead_letter_topic,
        "window": crate::processor::config::describe_window(&spec),
        "aggregates": spec.aggregates.iter().map(|a| json!({ "name": a.name, "fn": a.func.name(), "field": a.field.as_ref().map(|p| p.join(".")) })).collect::<Vec<_>>(),
        "key": spec.key_fields.iter().map(|p| p.join(".")).collect::<Vec<_>>(),
        "emit": match spec.emit { crate::processor::config::Emit::Final => "final", crate::processor::config::Emit::Changes => "changes" },
        "guarantee": match spec.guarantee { crate::processor::config::Guarantee::ExactlyOnce => "exactly_once", crate::processor::config::Guarantee::AtLeastOnce => "at_least_once" },
        "threads": spec.threads,
        "watermark": watermark,
        "records_in": s.records_in.load(Ordering::Relaxed),
        "records_out": s.records_out.load(Ordering::Relaxed),
        "late": s.late.load(Ordering::Relaxed),
        "bad": s.bad_total(),
        "dead_lettered": s.dead_lettered.load(Ordering::Relaxed),
        "lag": s.lag.load(Ordering::Relaxed),
        "checkpoints": s.checkpoints.load(Ordering::Relaxed),
        "restarts": s.restarts.load(Ordering::Relaxed),
        "last_checkpoint_ms": ms(&s.last_checkpoint_ms),
        "last_flush_ms": ms(&s.last_flush_ms),
    }))
}

/// The key text(s) a query's `key` may mean: the value as a JSON string,
/// and, if it is itself JSON (a number, an array, a quoted string), that.
fn key_candidates(k: &str) -> Vec<String> {
    let mut v = vec![Value::String(k.to_string()).to_string()];
    if let Ok(parsed) = serde_json::from_str::<Value>(k) {
        let text = parsed.to_string();
        if !v.contains(&text) {
            v.push(text);
        }
    }
    v
}

fn time_param(query: &[(String, String)], name: &str, default: i64) -> Result<i64, String> {
    match query.iter().find(|(k, _)| k == name) {
        None => Ok(default),
        Some((_, v)) => v
            .parse::<i64>()
            .ok()
            .or_else(|| crate::processor::extract::parse_rfc3339(v))
            .ok_or_else(|| format!("{name}={v:?} is neither milliseconds since the epoch nor an RFC 3339 time")),
    }
}

/// `GET /processors/{name}/windows?key=K[&from=T1&to=T2]`.
pub async fn windows(broker: &Arc<Broker>, name: &str, query: &[(String, String)]) -> Reply {
    let Some(asker) = broker.processor_queries(name) else { return error(StatusCode::NOT_FOUND, &format!("no processor {name:?}")) };
    let Some((_, key)) = query.iter().find(|(k, _)| k == "key") else { return error(StatusCode::BAD_REQUEST, "the key parameter is required: ?key=K") };
    let (from, to) = match (time_param(query, "from", i64::MIN), time_param(query, "to", i64::MAX)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if asker.send(Query { keys: key_candidates(key), from, to, reply: tx }).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the processor is stopped");
    }
    let asked_ms = crate::log::now_ms();
    let found = match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
        Ok(Ok(Ok(w))) => w,
        Ok(Ok(Err(e))) => return error(StatusCode::SERVICE_UNAVAILABLE, &e),
        Ok(Err(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, "the processor stopped before answering"),
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the processor did not answer within 5 s"),
    };
    let Some(p) = processor(broker, name) else { return error(StatusCode::NOT_FOUND, &format!("no processor {name:?}")) };
    let windows: Vec<Value> = found
        .into_iter()
        .map(|w| {
            let mut v = w.value;
            if let Value::Object(m) = &mut v {
                m.insert("key".into(), serde_json::from_str(&w.key).unwrap_or(Value::Null));
                m.insert("max_event_time".into(), w.max_event_time.into());
                m.insert("final".into(), w.finalized.into());
            }
            v
        })
        .collect();
    let body = json!({
        "processor": name,
        "key": key,
        "from": (from != i64::MIN).then_some(from),
        "to": (to != i64::MAX).then_some(to),
        "windows": windows,
        "staleness": {
            "state_as_of_ms": asked_ms,
            "note": "read from the processor's live state: every record it has read is included; the output topic lags it by up to one flush (emit = changes) or until windows close (emit = final), and a restart resumes from the last checkpoint",
            "watermark": p["watermark"],
            "last_checkpoint_ms": p["last_checkpoint_ms"],
            "last_flush_ms": p["last_flush_ms"],
            "lag_records": p["lag"],
        },
    });
    super::json(StatusCode::OK, &body)
}

/// Bytes as JSON if they are JSON, else as (lossy) text; None as null.
pub fn shown(b: Option<&[u8]>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => serde_json::from_slice::<Value>(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
    }
}

/// The broker at a glance (the console's overview).
pub fn overview(broker: &Broker) -> Value {
    let topics = broker.topics();
    let user: Vec<_> = topics.iter().filter(|t| !Broker::is_internal(&t.name)).collect();
    let (bytes_in, records_in, bytes_out, records_out) = broker.metrics.totals();
    json!({
        "cluster_id": broker.cluster_id,
        "node_id": broker.config.broker.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": broker.metrics.started.elapsed().as_secs(),
        "ready": broker.ready.load(Ordering::Acquire),
        "topics": user.len(),
        "partitions": user.iter().map(|t| t.partitions.len()).sum::<usize>(),
        "records": user.iter().flat_map(|t| &t.partitions).map(|p| p.log.log_end_offset() - p.log.log_start_offset()).sum::<u64>(),
        "disk_bytes": topics.iter().flat_map(|t| &t.partitions).map(|p| p.log.size_bytes()).sum::<u64>(),
        "connections": broker.metrics.connections.get(),
        "groups": broker.groups.list().len(),
        "processors": broker.processor_stats().len(),
        "bytes_in": bytes_in,
        "records_in": records_in,
        "bytes_out": bytes_out,
        "records_out": records_out,
    })
}

/// The latest `limit` records of each partition of a topic, oldest first
/// (by timestamp), read from the logs.
pub fn records(t: &Topic, limit: u64) -> Value {
    let mut out: Vec<(i64, i32, i64, Value)> = Vec::new();
    for p in &t.partitions {
        let (start, end) = (p.log.log_start_offset(), p.high_watermark() as u64);
        let mut next = end.saturating_sub(limit).max(start);
        while next < end {
            let Ok(read) = p.log.read(next, 1024 * 1024, end) else { break };
            let Ok((recs, after)) = crate::log::records::records_in(&read.records, next, end) else { break };
            for r in recs {
                let headers: serde_json::Map<String, Value> = r.headers.iter().map(|(k, v)| (k.clone(), shown(v.as_deref()))).collect();
                let v = json!({ "partition": p.index, "offset": r.offset, "timestamp": r.timestamp, "key": shown(r.key.as_deref()), "value": shown(r.value.as_deref()), "headers": headers });
                out.push((r.timestamp, p.index, r.offset, v));
            }
            if after == next {
                break;
            }
            next = after;
        }
    }
    out.sort_by_key(|r| (r.0, r.1, r.2));
    Value::Array(out.into_iter().map(|r| r.3).collect())
}
