//! `eddy topic list|create|describe`, `eddy group list|describe`,
//! `eddy tail TOPIC`: conveniences over the Kafka protocol (they work against
//! any broker), printing readable tables or, with `--json`, JSON.

mod client;

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use uuid::Uuid;

use client::Client;

pub const HELP: &str = "    eddy topic list [--json]
    eddy topic create NAME [--partitions N] [--config KEY=VALUE]... [--json]
    eddy topic describe NAME [--json]
    eddy group list [--json]
    eddy group describe GROUP [--json]
    eddy tail TOPIC [-n N] [--json]     the last N records (default 10) of every partition,
                                        newest last, values shown as JSON when they are JSON
  Each takes --bootstrap HOST:PORT (default 127.0.0.1:9092).";

/// Parsed arguments: positional words, `--name value` options (repeatable), flags.
struct Args {
    words: Vec<String>,
    opts: Vec<(String, String)>,
    json: bool,
}

impl Args {
    fn parse(args: &[String], with_value: &[&str]) -> anyhow::Result<Args> {
        let mut a = Args { words: Vec::new(), opts: Vec::new(), json: false };
        let mut it = args.iter();
        while let Some(x) = it.next() {
            if x == "--json" {
                a.json = true;
            } else if let Some((n, v)) = x.split_once('=').filter(|(n, _)| n.starts_with('-')) {
                if !with_value.contains(&n) {
                    bail!("unknown option {n:?}\n{HELP}");
                }
                a.opts.push((n.to_string(), v.to_string()));
            } else if x.starts_with('-') {
                if !with_value.contains(&x.as_str()) {
                    bail!("unknown option {x:?}\n{HELP}");
                }
                let v = it.next().with_context(|| format!("{x} needs a value"))?;
                a.opts.push((x.clone(), v.clone()));
            } else {
                a.words.push(x.clone());
            }
        }
        Ok(a)
    }

    fn opt(&self, name: &str) -> Option<&str> {
        self.opts.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn client(&self) -> anyhow::Result<Client> {
        Client::connect(self.opt("--bootstrap").unwrap_or("127.0.0.1:9092"))
    }

    fn word(&self, i: usize, what: &str) -> anyhow::Result<&str> {
        self.words.get(i).map(String::as_str).with_context(|| format!("missing {what}\n{HELP}"))
    }
}

/// Runs `eddy topic|group|tail ...`.
pub fn run(command: &str, args: &[String]) -> anyhow::Result<()> {
    let a = Args::parse(args, &["--bootstrap", "--partitions", "--config", "-n"])?;
    let out = match (command, a.words.first().map(String::as_str)) {
        ("topic", Some("list")) => topic_list(&a)?,
        ("topic", Some("create")) => topic_create(&a)?,
        ("topic", Some("describe")) => topic_describe(&a)?,
        ("group", Some("list")) => group_list(&a)?,
        ("group", Some("describe")) => group_describe(&a)?,
        ("tail", Some(_)) => tail(&a)?,
        _ => bail!("usage:\n{HELP}"),
    };
    print!("{out}");
    Ok(())
}

/// Left-aligned columns under a header row.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = *w));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize") + "\n"
}

fn check(code: i16, what: &str, message: Option<&StrBytes>) -> anyhow::Result<()> {
    if code != 0 {
        let name = kafka_protocol::error::ResponseError::try_from_code(code).map(|e| e.to_string()).unwrap_or_else(|| "unknown error".into());
        match message {
            Some(m) => bail!("{what}: {name} (error code {code}): {}", m.as_str()),
            None => bail!("{what}: {name} (error code {code})"),
        }
    }
    Ok(())
}

/// A topic as Metadata describes it.
struct TopicInfo {
    name: String,
    id: Uuid,
    internal: bool,
    partitions: Vec<i32>,
    error_code: i16,
}

/// Topics (all, or those named), by name.
fn metadata(c: &mut Client, topics: Option<&[&str]>) -> anyhow::Result<Vec<TopicInfo>> {
    let mut req = MetadataRequest::default();
    req.allow_auto_topic_creation = false;
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| {
                let mut m = metadata_request::MetadataRequestTopic::default();
                m.name = Some(TopicName(StrBytes::from_string(t.to_string())));
                m
            })
            .collect()
    });
    let r: MetadataResponse = c.call(ApiKey::Metadata, 12, &req)?;
    let mut out: Vec<_> = r
        .topics
        .into_iter()
        .map(|t| {
            let mut partitions: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
            partitions.sort();
            TopicInfo { name: t.name.map(|n| n.to_string()).unwrap_or_default(), id: t.topic_id, internal: t.is_internal, partitions, error_code: t.error_code }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Offsets of `topic`'s partitions at `timestamp` (-2 earliest, -1 latest).
fn offsets(c: &mut Client, topic: &str, partitions: &[i32], timestamp: i64) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut t = list_offsets_request::ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = partitions
        .iter()
        .map(|&p| {
            let mut lp = list_offsets_request::ListOffsetsPartition::default();
            lp.partition_index = p;
            lp.timestamp = timestamp;
            lp.current_leader_epoch = -1;
            lp
        })
        .collect();
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req)?;
    let mut out = BTreeMap::new();
    for p in r.topics.iter().flat_map(|t| &t.partitions) {
        check(p.error_code, &format!("offsets of {topic}/{}", p.partition_index), None)?;
        out.insert(p.partition_index, p.offset);
    }
    Ok(out)
}

fn topic_list(a: &Args) -> anyhow::Result<String> {
    let mut c = a.client()?;
    let topics = metadata(&mut c, None)?;
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for TopicInfo { name, id, internal, partitions: parts, .. } in &topics {
        let start = offsets(&mut c, name, parts, -2)?;
        let end = offsets(&mut c, name, parts, -1)?;
        let records: i64 = parts.iter().map(|p| end.get(p).unwrap_or(&0) - start.get(p).unwrap_or(&0)).sum();
        rows.push(vec![name.clone(), parts.len().to_string(), records.to_string(), if *internal { "yes".into() } else { String::new() }, id.to_string()]);
        js.push(json!({ "name": name, "id": id.to_string(), "partitions": parts.len(), "records": records, "internal": internal }));
    }
    Ok(if a.json { pretty(&Value::Array(js)) } else { table(&["TOPIC", "PARTITIONS", "RECORDS", "INTERNAL", "ID"], &rows) })
}

fn topic_create(a: &Args) -> anyhow::Result<String> {
    let name = a.word(1, "the topic name")?;
    let partitions: i32 = match a.opt("--partitions") {
        Some(p) => p.parse().with_context(|| format!("--partitions {p:?} is not a number"))?,
        None => -1,
    };
    let mut t = create_topics_request::CreatableTopic::default();
    t.name = TopicName(StrBytes::from_string(name.to_string()));
    t.num_partitions = partitions;
    t.replication_factor = -1;
    for (_, v) in a.opts.iter().filter(|(n, _)| n == "--config") {
        let (k, val) = v.split_once('=').with_context(|| format!("--config {v:?} is not KEY=VALUE"))?;
        let mut cfg = create_topics_request::CreatableTopicConfig::default();
        cfg.name = StrBytes::from_string(k.to_string());
        cfg.value = Some(StrBytes::from_string(val.to_string()));
        t.configs.push(cfg);
    }
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 30_000;
    let r: CreateTopicsResponse = a.client()?.call(ApiKey::CreateTopics, 7, &req)?;
    let t = r.topics.first().context("an empty CreateTopics response")?;
    check(t.error_code, &format!("creating {name}"), t.error_message.as_ref())?;
    Ok(if a.json {
        pretty(&json!({ "name": name, "id": t.topic_id.to_string(), "partitions": t.num_partitions }))
    } else {
        format!("created topic {name} with {} partition(s), id {}\n", t.num_partitions, t.topic_id)
    })
}

fn topic_describe(a: &Args) -> anyhow::Result<String> {
    let name = a.word(1, "the topic name")?;
    let mut c = a.client()?;
    let md = metadata(&mut c, Some(&[name]))?;
    let TopicInfo { id, internal, partitions: parts, error_code, .. } = md.into_iter().next().context("an empty Metadata response")?;
    check(error_code, &format!("topic {name}"), None)?;
    let start = offsets(&mut c, name, &parts, -2)?;
    let end = offsets(&mut c, name, &parts, -1)?;
    let mut res = describe_configs_request::DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(name.to_string());
    res.configuration_keys = None; // every config
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![res];
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &req)?;
    let result = r.results.first().context("an empty DescribeConfigs response")?;
    check(result.error_code, &format!("configs of {name}"), result.error_message.as_ref())?;
    // Kafka's config sources: 1 DYNAMIC_TOPIC_CONFIG, 2–4 broker settings, 5 DEFAULT_CONFIG.
    let source = |s: i8| match s {
        1 => "topic",
        5 => "default",
        _ => "broker",
    };
    let configs: Vec<(String, String, &str)> = result.configs.iter().map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(), source(c.config_source))).collect();
    let partitions: Vec<(i32, i64, i64)> = parts.iter().map(|p| (*p, *start.get(p).unwrap_or(&0), *end.get(p).unwrap_or(&0))).collect();
    if a.json {
        return Ok(pretty(&json!({
            "name": name,
            "id": id.to_string(),
            "internal": internal,
            "partitions": partitions.iter().map(|(p, s, e)| json!({ "partition": p, "log_start_offset": s, "log_end_offset": e, "records": e - s })).collect::<Vec<_>>(),
            "configs": configs.iter().map(|(n, v, s)| (n.clone(), json!({ "value": v, "source": s }))).collect::<serde_json::Map<_, _>>(),
        })));
    }
    let mut out = format!("topic {name}  id {id}{}\n\n", if internal { "  (internal)" } else { "" });
    out.push_str(&table(&["PARTITION", "START", "END", "RECORDS"], &partitions.iter().map(|(p, s, e)| vec![p.to_string(), s.to_string(), e.to_string(), (e - s).to_string()]).collect::<Vec<_>>()));
    out.push('\n');
    out.push_str(&table(&["CONFIG", "VALUE", "SOURCE"], &configs.iter().map(|(n, v, s)| vec![n.clone(), v.clone(), s.to_string()]).collect::<Vec<_>>()));
    Ok(out)
}

fn group_list(a: &Args) -> anyhow::Result<String> {
    let r: ListGroupsResponse = a.client()?.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())?;
    check(r.error_code, "listing groups", None)?;
    let mut groups: Vec<(String, String, String)> = r.groups.iter().map(|g| (g.group_id.to_string(), g.group_state.to_string(), g.protocol_type.to_string())).collect();
    groups.sort();
    Ok(if a.json {
        pretty(&Value::Array(groups.iter().map(|(g, s, p)| json!({ "group_id": g, "state": s, "protocol_type": p })).collect()))
    } else {
        table(&["GROUP", "STATE", "PROTOCOL TYPE"], &groups.iter().map(|(g, s, p)| vec![g.clone(), s.clone(), p.clone()]).collect::<Vec<_>>())
    })
}

fn group_describe(a: &Args) -> anyhow::Result<String> {
    let id = a.word(1, "the group id")?;
    let mut c = a.client()?;
    let joined = |parts: Vec<(String, Vec<i32>)>| parts.iter().map(|(t, ps)| format!("{t}:{}", ps.iter().map(i32::to_string).collect::<Vec<_>>().join(","))).collect::<Vec<_>>().join(" ");
    // A KIP-848 group is described by ConsumerGroupDescribe (its members
    // hold broker-computed assignments); a classic one by DescribeGroups.
    let mut cd = ConsumerGroupDescribeRequest::default();
    cd.group_ids = vec![GroupId(StrBytes::from_string(id.to_string()))];
    // A broker without the API (it closes the connection) is asked again
    // on a fresh connection with DescribeGroups.
    let described: Option<ConsumerGroupDescribeResponse> = c.call(ApiKey::ConsumerGroupDescribe, 0, &cd).ok();
    if described.is_none() {
        c = a.client()?;
    }
    let (state, protocol_type, protocol, members) = match described.as_ref().and_then(|r| r.groups.first()).filter(|g| g.error_code == 0) {
        Some(g) => {
            let members: Vec<(String, String, String, String)> = g
                .members
                .iter()
                .map(|m| {
                    let parts = m.assignment.topic_partitions.iter().map(|t| (t.topic_name.to_string(), t.partitions.clone())).collect();
                    (m.member_id.to_string(), m.client_id.to_string(), m.client_host.to_string(), joined(parts))
                })
                .collect();
            (g.group_state.to_string(), "consumer".to_string(), g.assignor_name.to_string(), members)
        }
        None => {
            let mut req = DescribeGroupsRequest::default();
            req.groups = vec![GroupId(StrBytes::from_string(id.to_string()))];
            let r: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, 5, &req)?;
            let g = r.groups.first().context("an empty DescribeGroups response")?;
            check(g.error_code, &format!("group {id}"), None)?;
            let members = g.members.iter().map(|m| (m.member_id.to_string(), m.client_id.to_string(), m.client_host.to_string(), joined(eddy::protocol::consumer_assignment(&m.member_assignment)))).collect();
            (g.group_state.to_string(), g.protocol_type.to_string(), g.protocol_data.to_string(), members)
        }
    };
    let mut of = OffsetFetchRequest::default();
    of.group_id = GroupId(StrBytes::from_string(id.to_string()));
    of.topics = None;
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &of)?;
    check(r.error_code, &format!("offsets of group {id}"), None)?;
    let mut lags: Vec<(String, i32, i64, i64)> = Vec::new();
    for t in &r.topics {
        let parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        let end = offsets(&mut c, t.name.as_str(), &parts, -1)?;
        for p in &t.partitions {
            lags.push((t.name.to_string(), p.partition_index, p.committed_offset, *end.get(&p.partition_index).unwrap_or(&0)));
        }
    }
    lags.sort();
    if state == "Dead" && members.is_empty() && lags.is_empty() {
        bail!("consumer group {id:?} does not exist");
    }
    let lag = |committed: i64, end: i64| if committed < 0 { end } else { (end - committed).max(0) };
    if a.json {
        return Ok(pretty(&json!({
            "group_id": id,
            "state": state,
            "protocol_type": protocol_type,
            "protocol": protocol,
            "members": members.iter().map(|(m, c, h, p)| json!({ "member_id": m, "client_id": c, "host": h, "assignment": p })).collect::<Vec<_>>(),
            "offsets": lags.iter().map(|(t, p, c, e)| json!({ "topic": t, "partition": p, "committed_offset": c, "log_end_offset": e, "lag": lag(*c, *e) })).collect::<Vec<_>>(),
            "lag": lags.iter().map(|(_, _, c, e)| lag(*c, *e)).sum::<i64>(),
        })));
    }
    let mut out = format!("group {id}  state {state}  protocol {protocol_type} {protocol}\n\n");
    out.push_str(&table(&["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"], &members.iter().map(|(m, c, h, p)| vec![m.clone(), c.clone(), h.clone(), p.clone()]).collect::<Vec<_>>()));
    out.push('\n');
    out.push_str(&table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"], &lags.iter().map(|(t, p, c, e)| vec![t.clone(), p.to_string(), c.to_string(), e.to_string(), lag(*c, *e).to_string()]).collect::<Vec<_>>()));
    Ok(out)
}

use eddy::http::api::shown;

fn cell(v: &Value, max: usize) -> String {
    let s = match v {
        Value::Null => "(null)".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > max {
        s.chars().take(max - 1).collect::<String>() + "…"
    } else {
        s
    }
}

fn tail(a: &Args) -> anyhow::Result<String> {
    let topic = a.word(0, "the topic")?;
    let n: i64 = match a.opt("-n") {
        Some(v) => v.parse().with_context(|| format!("-n {v:?} is not a number"))?,
        None => 10,
    };
    let mut c = a.client()?;
    let md = metadata(&mut c, Some(&[topic]))?;
    let TopicInfo { partitions: parts, error_code, .. } = md.into_iter().next().context("an empty Metadata response")?;
    check(error_code, &format!("topic {topic}"), None)?;
    let start = offsets(&mut c, topic, &parts, -2)?;
    let end = offsets(&mut c, topic, &parts, -1)?;
    /// A record read, with key, value and header values shown as JSON or text.
    struct Tailed {
        timestamp: i64,
        partition: i32,
        offset: i64,
        key: Value,
        value: Value,
        headers: serde_json::Map<String, Value>,
    }
    let mut got: Vec<Tailed> = Vec::new();
    for &p in &parts {
        let (s, e) = (start[&p], end[&p]);
        let mut next = (e - n).max(s);
        while next < e {
            let mut fp = fetch_request::FetchPartition::default();
            fp.partition = p;
            fp.fetch_offset = next;
            fp.partition_max_bytes = 4 * 1024 * 1024;
            fp.current_leader_epoch = -1;
            fp.last_fetched_epoch = -1;
            fp.log_start_offset = -1;
            let mut ft = fetch_request::FetchTopic::default();
            ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
            ft.partitions = vec![fp];
            let mut req = FetchRequest::default();
            req.replica_id = BrokerId(-1);
            req.max_wait_ms = 0;
            req.max_bytes = 16 * 1024 * 1024;
            req.session_epoch = -1;
            req.topics = vec![ft];
            let r: FetchResponse = c.call(ApiKey::Fetch, 12, &req)?;
            check(r.error_code, "fetch", None)?;
            let pd = r.responses.first().and_then(|t| t.partitions.first()).context("an empty Fetch response")?;
            check(pd.error_code, &format!("fetching {topic}/{p}"), None)?;
            let Some(records) = pd.records.as_ref().filter(|r| !r.is_empty()) else { break };
            // The broker sends batches from its files unchecked (as Kafka
            // does): a client checks their CRCs.
            for (h, range) in eddy::log::batch::whole_batches(records) {
                if let Err(reason) = eddy::log::batch::check_stored(&records[range]) {
                    anyhow::bail!("the batch of {topic}/{p} at offset {} is damaged: {reason}", h.base_offset);
                }
            }
            let (recs, after) = eddy::log::records::records_in(records, next as u64, e as u64).with_context(|| format!("decoding batches of {topic}/{p}"))?;
            for rec in recs {
                let headers = rec.headers.iter().map(|(k, v)| (k.clone(), shown(v.as_deref()))).collect();
                got.push(Tailed { timestamp: rec.timestamp, partition: p, offset: rec.offset, key: shown(rec.key.as_deref()), value: shown(rec.value.as_deref()), headers });
            }
            if after as i64 == next {
                break;
            }
            next = after as i64;
        }
    }
    got.sort_by_key(|r| (r.timestamp, r.partition, r.offset));
    if a.json {
        let mut out = String::new();
        for r in &got {
            out.push_str(&json!({ "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp, "key": r.key, "value": r.value, "headers": r.headers }).to_string());
            out.push('\n');
        }
        return Ok(out);
    }
    let rows: Vec<Vec<String>> = got.iter().map(|r| vec![r.partition.to_string(), r.offset.to_string(), r.timestamp.to_string(), cell(&r.key, 30), cell(&r.value, 100)]).collect();
    Ok(table(&["PARTITION", "OFFSET", "TIMESTAMP", "KEY", "VALUE"], &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONG HEADER"], &[vec!["wide cell".into(), "x".into()], vec!["y".into(), "".into()]]);
        assert_eq!(t, "A          LONG HEADER\nwide cell  x\ny\n");
    }
}
