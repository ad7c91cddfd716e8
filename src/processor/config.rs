//! `[processors.NAME]` tables: parsed with unknown keys refused, validated,
//! and turned into a `ProcessorSpec` the runtime uses. Every error names the
//! processor, the key and the reason. The shape is `shared/processing.md`'s.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A config error: processor, key (dotted, inside the processor's table) and reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("[processors.{processor}] {key}: {reason}")]
pub struct SpecError {
    pub processor: String,
    pub key: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    Json,
    String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
}

/// What happens to a record that cannot be processed (no key, no time, a bad
/// field, unparseable) or arrives late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadAction {
    Drop,
    DeadLetter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    EpochMs,
    EpochS,
    Rfc3339,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Tumbling (advance = size) and hopping windows.
    Hopping { size: i64, advance: i64 },
    /// KIP-450 sliding windows with this time difference.
    Sliding { difference: i64 },
    /// Session windows with this inactivity gap.
    Session { gap: i64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Changes,
    Final,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    Json,
    KafkaStreamsWindowed,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AggFn {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
    CountDistinct { hll: bool },
    Percentile { q: f64 },
    TopK { k: usize },
}

impl AggFn {
    /// The `fn` name in the config.
    pub fn name(&self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Avg => "avg",
            AggFn::First => "first",
            AggFn::Last => "last",
            AggFn::CountDistinct { .. } => "count_distinct",
            AggFn::Percentile { .. } => "percentile",
            AggFn::TopK { .. } => "topk",
        }
    }
}

/// A processor's window as JSON (the HTTP API): kind, sizes and grace in ms.
pub fn describe_window(spec: &ProcessorSpec) -> serde_json::Value {
    let mut v = match spec.window {
        WindowKind::Hopping { size, advance } if size == advance => serde_json::json!({ "type": "tumbling", "size_ms": size }),
        WindowKind::Hopping { size, advance } => serde_json::json!({ "type": "hopping", "size_ms": size, "advance_ms": advance }),
        WindowKind::Sliding { difference } => serde_json::json!({ "type": "sliding", "difference_ms": difference }),
        WindowKind::Session { gap } => serde_json::json!({ "type": "session", "gap_ms": gap }),
    };
    v["grace_ms"] = spec.grace_ms.into();
    v["retention_ms"] = spec.retention_ms.into();
    v
}

#[derive(Clone, Debug, PartialEq)]
pub struct AggSpec {
    pub name: String,
    pub func: AggFn,
    /// The JSON path it reads (`a.b.c`); None for `count`.
    pub field: Option<Vec<String>>,
}

/// A validated processor.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessorSpec {
    pub name: String,
    /// Parse workers (reads of source partitions are split over them) and
    /// engine threads (keys are split over them); 1 (the default) does all
    /// of it on the processor's own thread.
    pub threads: usize,
    pub guarantee: Guarantee,
    pub commit_interval_ms: i64,
    pub topics: Vec<String>,
    pub format: SourceFormat,
    pub start: Start,
    /// JSON paths of the key fields (several: a composite key); empty for a
    /// `string` source, whose key is the record key.
    pub key_fields: Vec<Vec<String>>,
    pub on_missing: BadAction,
    /// None: the record timestamp.
    pub time_field: Option<Vec<String>>,
    pub time_format: TimeFormat,
    pub max_out_of_orderness_ms: i64,
    pub idle_timeout_ms: i64,
    pub idle_advance: bool,
    pub window: WindowKind,
    pub grace_ms: i64,
    pub retention_ms: i64,
    pub aggregates: Vec<AggSpec>,
    pub output_topic: String,
    pub emit: Emit,
    pub key_format: KeyFormat,
    pub tombstones_on_expire: bool,
    pub flush_interval_ms: i64,
    pub late_action: BadAction,
    pub dead_letter_topic: Option<String>,
}

// ---- the TOML shape, unknown keys refused ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    threads: Option<i64>,
    guarantee: Option<String>,
    commit_interval: Option<String>,
    source: RawSource,
    key: Option<RawKey>,
    time: Option<RawTime>,
    window: RawWindow,
    aggregates: BTreeMap<String, RawAgg>,
    output: RawOutput,
    late: Option<RawLate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    topics: Vec<String>,
    format: Option<String>,
    start: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    fields: Option<Vec<String>>,
    on_missing: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTime {
    field: Option<String>,
    format: Option<String>,
    max_out_of_orderness: Option<String>,
    idle_timeout: Option<String>,
    idle_advance: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    #[serde(rename = "type")]
    kind: String,
    size: Option<String>,
    advance: Option<String>,
    gap: Option<String>,
    grace: Option<String>,
    retention: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgg {
    #[serde(rename = "fn")]
    func: String,
    field: Option<String>,
    approx: Option<String>,
    q: Option<f64>,
    k: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    topic: String,
    emit: Option<String>,
    key_format: Option<String>,
    tombstones: Option<String>,
    flush_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLate {
    action: Option<String>,
    topic: Option<String>,
}

/// Parses a duration: an integer and a unit (`ms`, `s`, `m`, `h`, `d`).
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().map_err(|_| format!("{text:?} is not a duration like \"250ms\", \"30s\", \"5m\", \"1h\" or \"1d\""))?;
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        u if u.starts_with('.') => return Err(format!("{text:?} is not a whole number: write a smaller unit (\"1500ms\", not \"1.5s\")")),
        "" => return Err(format!("{text:?} has no unit (ms, s, m, h or d)")),
        u => return Err(format!("{text:?} has an unknown unit {u:?} (ms, s, m, h or d)")),
    };
    n.checked_mul(scale).filter(|&ms| ms <= MAX_DURATION_MS).ok_or_else(|| format!("{text:?} is too long (at most about 100 years)"))
}

/// Durations stay far below the event-time range, so window arithmetic
/// cannot overflow.
const MAX_DURATION_MS: i64 = 100 * 365 * 86_400_000;

fn path(field: &str) -> Vec<String> {
    field.split('.').map(str::to_string).collect()
}


/// Parses and validates one `[processors.NAME]` table.
pub fn parse(name: &str, table: &toml::Value) -> Result<ProcessorSpec, SpecError> {
    let err = |key: &str, reason: String| SpecError { processor: name.to_string(), key: key.to_string(), reason };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(err("", "a processor name uses only ASCII letters, digits, '.', '_' and '-'".into()));
    }
    let raw: Raw = serde_path_to_error::deserialize(table.clone()).map_err(|e: serde_path_to_error::Error<toml::de::Error>| {
        let msg = e.inner().message().to_string();
        // The path is of the value that failed (window.size), or of the
        // table a field is missing from or unknown in: then the field (in
        // backticks in serde's message) completes the key.
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let field = ["missing field `", "unknown field `"].iter().find_map(|p| msg.strip_prefix(p)).and_then(|rest| rest.split('`').next());
        let key = match field {
            Some(f) if path.is_empty() => f.to_string(),
            Some(f) if !path.ends_with(&format!(".{f}")) && path != f => format!("{path}.{f}"),
            _ => path,
        };
        err(&key, msg)
    })?;
    let dur = |key: &str, v: &Option<String>, default: Option<&str>| -> Result<i64, SpecError> {
        match v.as_deref().or(default) {
            Some(text) => parse_duration(text).map_err(|r| err(key, r)),
            None => Err(err(key, "is required".into())),
        }
    };
    let choice = |key: &str, v: &Option<String>, default: &str, allowed: &[&str]| -> Result<String, SpecError> {
        let v = v.as_deref().unwrap_or(default);
        if allowed.contains(&v) {
            Ok(v.to_string())
        } else {
            Err(err(key, format!("{v:?} is not one of {}", allowed.join(", "))))
        }
    };

    let guarantee = match choice("guarantee", &raw.guarantee, "at_least_once", &["at_least_once", "exactly_once"])?.as_str() {
        "exactly_once" => Guarantee::ExactlyOnce,
        _ => Guarantee::AtLeastOnce,
    };
    let commit_interval_ms = dur("commit_interval", &raw.commit_interval, Some("1s"))?;
    if commit_interval_ms < 1 {
        return Err(err("commit_interval", "must be at least 1ms".into()));
    }

    if raw.source.topics.is_empty() {
        return Err(err("source.topics", "names no topic".into()));
    }
    let format = match choice("source.format", &raw.source.format, "json", &["json", "string"])?.as_str() {
        "string" => SourceFormat::String,
        _ => SourceFormat::Json,
    };
    let start = match choice("source.start", &raw.source.start, "earliest", &["earliest", "latest"])?.as_str() {
        "latest" => Start::Latest,
        _ => Start::Earliest,
    };

    let key = raw.key.unwrap_or_default();
    let key_fields: Vec<Vec<String>> = key.fields.unwrap_or_default().iter().map(|f| path(f)).collect();
    if key_fields.iter().any(|p| p.iter().any(String::is_empty)) {
        return Err(err("key.fields", "a field path has an empty part".into()));
    }
    if format == SourceFormat::Json && key_fields.is_empty() {
        return Err(err("key.fields", "a json source needs at least one key field".into()));
    }
    if format == SourceFormat::String && !key_fields.is_empty() {
        return Err(err("key.fields", "a string source is keyed by the record key; fields need format = \"json\"".into()));
    }
    let on_missing = match choice("key.on_missing", &key.on_missing, "drop", &["drop", "dead_letter"])?.as_str() {
        "dead_letter" => BadAction::DeadLetter,
        _ => BadAction::Drop,
    };

    let time = raw.time.unwrap_or_default();
    let time_field = time.field.as_deref().map(path);
    if time_field.is_some() && format == SourceFormat::String {
        return Err(err("time.field", "a string source has no fields; omit it to use the record timestamp".into()));
    }
    let time_format = match choice("time.format", &time.format, "epoch_ms", &["epoch_ms", "epoch_s", "rfc3339"])?.as_str() {
        "epoch_s" => TimeFormat::EpochS,
        "rfc3339" => TimeFormat::Rfc3339,
        _ => TimeFormat::EpochMs,
    };
    let max_out_of_orderness_ms = dur("time.max_out_of_orderness", &time.max_out_of_orderness, Some("0s"))?;
    let idle_timeout_ms = dur("time.idle_timeout", &time.idle_timeout, Some("30s"))?;
    let idle_advance = time.idle_advance.unwrap_or(false);

    let w = &raw.window;
    let grace_ms = dur("window.grace", &w.grace, None)?;
    let window = match w.kind.as_str() {
        "tumbling" => {
            if w.advance.is_some() {
                return Err(err("window.advance", "a tumbling window has no advance (it is its size); use type = \"hopping\"".into()));
            }
            let size = dur("window.size", &w.size, None)?;
            WindowKind::Hopping { size, advance: size }
        }
        "hopping" => {
            let size = dur("window.size", &w.size, None)?;
            let advance = dur("window.advance", &w.advance, None)?;
            if advance <= 0 || advance > size {
                return Err(err("window.advance", format!("must be in (0, size]; size is {size} ms, advance {advance} ms")));
            }
            if size > advance.saturating_mul(100) {
                tracing::warn!(processor = name, windows_per_record = (size + advance - 1) / advance, "hopping windows: every record updates more than 100 windows");
            }
            WindowKind::Hopping { size, advance }
        }
        "sliding" => {
            if w.size.is_some() {
                return Err(err("window.size", "a sliding window is set by its time difference: use advance".into()));
            }
            WindowKind::Sliding { difference: dur("window.advance", &w.advance, None)? }
        }
        "session" => {
            if w.size.is_some() {
                return Err(err("window.size", "a session window is set by its gap".into()));
            }
            let gap = match (&w.gap, &w.advance) {
                (Some(_), Some(_)) => return Err(err("window.gap", "give the gap once (gap or advance)".into())),
                (Some(_), None) => dur("window.gap", &w.gap, None)?,
                (None, _) => dur("window.gap", &w.advance, None)?,
            };
            WindowKind::Session { gap }
        }
        other => return Err(err("window.type", format!("{other:?} is not one of tumbling, hopping, sliding, session"))),
    };
    if matches!(window, WindowKind::Hopping { size, .. } if size <= 0) || matches!(window, WindowKind::Sliding { difference } if difference <= 0) || matches!(window, WindowKind::Session { gap } if gap <= 0) {
        return Err(err("window", "sizes, differences and gaps must be more than 0".into()));
    }
    if w.gap.is_some() && !matches!(window, WindowKind::Session { .. }) {
        return Err(err("window.gap", "only session windows have a gap".into()));
    }
    let span = match window {
        WindowKind::Hopping { size, .. } => size,
        WindowKind::Sliding { difference } => difference,
        WindowKind::Session { gap } => gap,
    };
    let retention_ms = match &w.retention {
        Some(_) => dur("window.retention", &w.retention, None)?,
        None => span.saturating_add(grace_ms).max(86_400_000),
    };
    if retention_ms < span.saturating_add(grace_ms) {
        return Err(err("window.retention", format!("must be at least size + grace ({} ms)", span + grace_ms)));
    }

    if raw.aggregates.is_empty() {
        return Err(err("aggregates", "names no aggregate".into()));
    }
    let mut aggregates = Vec::new();
    for (agg_name, a) in &raw.aggregates {
        let key = |k: &str| format!("aggregates.{agg_name}.{k}");
        if ["window_start", "window_end"].contains(&agg_name.as_str()) {
            return Err(err(&format!("aggregates.{agg_name}"), "the name is taken by the window bounds in the output".into()));
        }
        let func = match a.func.as_str() {
            "count" => AggFn::Count,
            "sum" => AggFn::Sum,
            "min" => AggFn::Min,
            "max" => AggFn::Max,
            "avg" => AggFn::Avg,
            "first" => AggFn::First,
            "last" => AggFn::Last,
            "count_distinct" => match a.approx.as_deref().unwrap_or("none") {
                "none" => AggFn::CountDistinct { hll: false },
                "hll" => AggFn::CountDistinct { hll: true },
                other => return Err(err(&key("approx"), format!("{other:?} is not one of none, hll"))),
            },
            "percentile" => match a.q {
                Some(q) if q > 0.0 && q < 1.0 => AggFn::Percentile { q },
                Some(q) => return Err(err(&key("q"), format!("{q} is not in (0, 1)"))),
                None => return Err(err(&key("q"), "is required for percentile".into())),
            },
            "topk" => match a.k {
                Some(k) if (1..=1000).contains(&k) => AggFn::TopK { k: k as usize },
                Some(k) => return Err(err(&key("k"), format!("{k} is not in [1, 1000]"))),
                None => return Err(err(&key("k"), "is required for topk".into())),
            },
            other => return Err(err(&key("fn"), format!("{other:?} is not one of count, sum, min, max, avg, first, last, count_distinct, percentile, topk"))),
        };
        if a.approx.is_some() && !matches!(func, AggFn::CountDistinct { .. }) {
            return Err(err(&key("approx"), "only count_distinct has an approx setting".into()));
        }
        if a.q.is_some() && !matches!(func, AggFn::Percentile { .. }) {
            return Err(err(&key("q"), "only percentile has q".into()));
        }
        if a.k.is_some() && !matches!(func, AggFn::TopK { .. }) {
            return Err(err(&key("k"), "only topk has k".into()));
        }
        let field = match (&func, &a.field) {
            (AggFn::Count, None) => None,
            (AggFn::Count, Some(_)) => return Err(err(&key("field"), "count counts records and takes no field".into())),
            (_, None) if format == SourceFormat::String => None, // the value itself
            (_, None) => return Err(err(&key("field"), format!("is required for {}", a.func))),
            (_, Some(_)) if format == SourceFormat::String => return Err(err(&key("field"), "a string source has no fields: the aggregate reads the value".into())),
            (_, Some(f)) => Some(path(f)),
        };
        aggregates.push(AggSpec { name: agg_name.clone(), func, field });
    }

    let o = &raw.output;
    if o.topic.is_empty() {
        return Err(err("output.topic", "is empty".into()));
    }
    if raw.source.topics.contains(&o.topic) {
        return Err(err("output.topic", format!("{:?} is also a source topic; a processor never writes to a topic it reads", o.topic)));
    }
    let emit = match choice("output.emit", &o.emit, "changes", &["changes", "final"])?.as_str() {
        "final" => Emit::Final,
        _ => Emit::Changes,
    };
    let key_format = match choice("output.key_format", &o.key_format, "json", &["json", "kafka_streams_windowed"])?.as_str() {
        "kafka_streams_windowed" => KeyFormat::KafkaStreamsWindowed,
        _ => KeyFormat::Json,
    };
    let tombstones_on_expire = choice("output.tombstones", &o.tombstones, "none", &["none", "on_expire"])? == "on_expire";
    let flush_interval_ms = match &o.flush_interval {
        Some(_) => dur("output.flush_interval", &o.flush_interval, None)?,
        None => commit_interval_ms,
    };

    let late = raw.late.unwrap_or_default();
    let late_action = match choice("late.action", &late.action, "drop", &["drop", "dead_letter"])?.as_str() {
        "dead_letter" => BadAction::DeadLetter,
        _ => BadAction::Drop,
    };
    let needs_topic = late_action == BadAction::DeadLetter || on_missing == BadAction::DeadLetter;
    match (&late.topic, needs_topic) {
        (None, true) => return Err(err("late.topic", "is required when late.action or key.on_missing is dead_letter".into())),
        (Some(t), _) if raw.source.topics.contains(t) || *t == o.topic => return Err(err("late.topic", format!("{t:?} is a source or the output topic"))),
        _ => {}
    }
    let threads = match raw.threads {
        None => 1,
        Some(t) if (1..=64).contains(&t) => t as usize,
        Some(t) => return Err(err("threads", format!("{t} is not in [1, 64]"))),
    };
    Ok(ProcessorSpec {
        name: name.to_string(),
        threads,
        guarantee,
        commit_interval_ms,
        topics: raw.source.topics.clone(),
        format,
        start,
        key_fields,
        on_missing,
        time_field,
        time_format,
        max_out_of_orderness_ms,
        idle_timeout_ms,
        idle_advance,
        window,
        grace_ms,
        retention_ms,
        aggregates,
        output_topic: o.topic.clone(),
        emit,
        key_format,
        tombstones_on_expire,
        flush_interval_ms,
        late_action,
        dead_letter_topic: late.topic.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Value {
        toml::from_str::<toml::Value>(text).unwrap()
    }

    const GOOD: &str = r#"
        guarantee = "at_least_once"
        commit_interval = "100ms"
        [source]
        topics = ["clicks"]
        [key]
        fields = ["user.id"]
        [time]
        field = "ts"
        [window]
        type = "hopping"
        size = "5m"
        advance = "1m"
        grace = "30s"
        [aggregates]
        clicks = { fn = "count" }
        revenue = { fn = "sum", field = "amount" }
        p95 = { fn = "percentile", field = "latency_ms", q = 0.95 }
        [output]
        topic = "clicks-per-user"
        emit = "final"
    "#;

    #[test]
    fn a_good_processor_parses() {
        let s = parse("clicks", &table(GOOD)).unwrap();
        assert_eq!(s.window, WindowKind::Hopping { size: 300_000, advance: 60_000 });
        assert_eq!((s.grace_ms, s.commit_interval_ms, s.guarantee), (30_000, 100, Guarantee::AtLeastOnce));
        assert_eq!(s.key_fields, vec![vec!["user".to_string(), "id".to_string()]]);
        assert_eq!(s.aggregates.len(), 3);
        assert_eq!(s.emit, Emit::Final);
        assert_eq!(s.retention_ms, 86_400_000);
    }

    #[test]
    fn errors_name_processor_key_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            ("size = \"5m\"", "size = \"5m\"\ncolour = \"red\"", "window.colour"),
            ("fn = \"count\"", "fn = \"count\", weight = 2", "aggregates.clicks.weight"),
            ("advance = \"1m\"", "advance = \"6m\"", "window.advance"),
            ("advance = \"1m\"", "advance = \"1 minute\"", "window.advance"),
            ("grace = \"30s\"", "grace = \"30s\"\nretention = \"1m\"", "window.retention"),
            ("fn = \"count\"", "fn = \"median\"", "aggregates.clicks.fn"),
            ("topic = \"clicks-per-user\"", "topic = \"clicks\"", "output.topic"),
            ("grace = \"30s\"", "", "window.grace"),
            ("q = 0.95", "q = 1.5", "aggregates.p95.q"),
            // A key that exists in another table is named in its own.
            ("size = \"5m\"", "size = \"5m\"\ntopic = \"x\"", "window.topic"),
            ("size = \"5m\"", "size = \"5m\"\nfield = \"ts\"", "window.field"),
            // A value of the wrong type, and a missing one.
            ("size = \"5m\"", "size = 5", "window.size"),
            ("revenue = { fn = \"sum\", field = \"amount\" }", "revenue = { fn = \"sum\", field = 3 }", "aggregates.revenue.field"),
            ("topic = \"clicks-per-user\"", "", "output.topic"),
            ("topics = [\"clicks\"]", "topics = \"clicks\"", "source.topics"),
            ("guarantee = \"at_least_once\"", "guarantee = \"at_least_once\"\nthreds = 2", "threds"),
        ];
        for (from, to, key) in cases {
            assert!(GOOD.contains(from), "{from}");
            let text = GOOD.replacen(from, to, 1);
            let e = parse("clicks", &table(&text)).unwrap_err();
            assert_eq!(e.processor, "clicks");
            assert_eq!(e.key, *key, "{e}");
        }
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert!(parse_duration("5").is_err() && parse_duration("m").is_err() && parse_duration("-1s").is_err());
        assert!(parse_duration("1.5s").unwrap_err().contains("whole number"), "{:?}", parse_duration("1.5s"));
        assert!(parse_duration("5 minutes").unwrap_err().contains("unknown unit \"minutes\""), "{:?}", parse_duration("5 minutes"));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
    }
}
