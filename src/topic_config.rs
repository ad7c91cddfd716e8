//! Kafka topic configs: the names Eddy accepts, their types, defaults and
//! validation, and how they become a storage `LogConfig`.
//!
//! One table serves `[topic_defaults]` in the broker config, CreateTopics,
//! AlterConfigs and DescribeConfigs. A name not in the table is rejected
//! (Kafka answers INVALID_CONFIG for unknown topic configs).

use std::collections::BTreeMap;

use crate::log::LogConfig;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// An integer with a minimum (and i32 range when `int`).
    Long { min: i64 },
    Int { min: i64 },
    Double { min: f64, max: f64 },
    Bool,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A comma-separated list of words from a fixed set.
    List(&'static [&'static str]),
}

#[derive(Clone, Copy, Debug)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub doc: &'static str,
}

const LONG_MAX: &str = "9223372036854775807";

/// Every topic config Eddy accepts, sorted by name.
pub const TOPIC_CONFIGS: &[Def] = &[
    Def { name: "cleanup.policy", kind: Kind::List(&["delete", "compact"]), default: "delete", doc: "delete old segments (retention) and/or compact them (keep the latest record per key)" },
    Def { name: "compression.type", kind: Kind::Choice(&["producer"]), default: "producer", doc: "batches are stored compressed as the producer sent them" },
    Def { name: "delete.retention.ms", kind: Kind::Long { min: 0 }, default: "86400000", doc: "how long tombstones are kept on compacted topics" },
    Def { name: "flush.messages", kind: Kind::Long { min: 1 }, default: LONG_MAX, doc: "fsync after this many records (acks=all is always fsynced)" },
    Def { name: "flush.ms", kind: Kind::Long { min: 0 }, default: LONG_MAX, doc: "fsync when the oldest unflushed record is this old" },
    Def { name: "index.interval.bytes", kind: Kind::Int { min: 0 }, default: "4096", doc: "bytes between offset index entries" },
    Def { name: "max.compaction.lag.ms", kind: Kind::Long { min: 1 }, default: LONG_MAX, doc: "longest a record may stay uncompacted" },
    Def { name: "max.message.bytes", kind: Kind::Int { min: 0 }, default: "1048588", doc: "largest record batch accepted" },
    Def { name: "message.timestamp.type", kind: Kind::Choice(&["CreateTime", "LogAppendTime"]), default: "CreateTime", doc: "keep the producer's timestamps or stamp the broker's append time" },
    Def { name: "min.cleanable.dirty.ratio", kind: Kind::Double { min: 0.0, max: 1.0 }, default: "0.5", doc: "dirty share of a log before the cleaner runs" },
    Def { name: "min.compaction.lag.ms", kind: Kind::Long { min: 0 }, default: "0", doc: "shortest time a record stays uncompacted" },
    Def { name: "min.insync.replicas", kind: Kind::Int { min: 1 }, default: "1", doc: "replicas needed for acks=all; Eddy has one" },
    Def { name: "retention.bytes", kind: Kind::Long { min: -1 }, default: "-1", doc: "size above which old segments are deleted; -1 for none" },
    Def { name: "retention.ms", kind: Kind::Long { min: -1 }, default: "604800000", doc: "age after which old segments are deleted; -1 for never" },
    Def { name: "segment.bytes", kind: Kind::Int { min: 14 }, default: "1073741824", doc: "size at which a segment rolls" },
    Def { name: "segment.index.bytes", kind: Kind::Int { min: 48 }, default: "10485760", doc: "preallocated size of each index file" },
    Def { name: "segment.ms", kind: Kind::Long { min: 1 }, default: "604800000", doc: "age at which a segment rolls" },
    Def { name: "unclean.leader.election.enable", kind: Kind::Bool, default: "false", doc: "accepted for compatibility; a single node has no other replica" },
];

pub fn lookup(name: &str) -> Option<&'static Def> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one value against its definition; returns the normalized value.
pub fn validate(name: &str, value: &str) -> Result<String, String> {
    let def = lookup(name).ok_or_else(|| format!("unknown topic config {name:?}"))?;
    let v = value.trim();
    let bad = |why: String| Err(format!("invalid value {value:?} for {name}: {why}"));
    match def.kind {
        Kind::Long { min } | Kind::Int { min } => {
            let Ok(n) = v.parse::<i64>() else { return bad("not an integer".into()) };
            if n < min {
                return bad(format!("must be at least {min}"));
            }
            if matches!(def.kind, Kind::Int { .. }) && n > i32::MAX as i64 {
                return bad(format!("must be at most {}", i32::MAX));
            }
            Ok(n.to_string())
        }
        Kind::Double { min, max } => match v.parse::<f64>() {
            Ok(x) if (min..=max).contains(&x) => Ok(v.to_string()),
            _ => bad(format!("must be a number in [{min}, {max}]")),
        },
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(v.to_ascii_lowercase()),
            _ => bad("must be true or false".into()),
        },
        Kind::Choice(words) => match words.iter().find(|w| w.eq_ignore_ascii_case(v)) {
            Some(w) => Ok(w.to_string()),
            None => bad(format!("must be one of {}", words.join(", "))),
        },
        Kind::List(words) => {
            let mut out = Vec::new();
            for part in v.split(',').map(str::trim) {
                match words.iter().find(|w| w.eq_ignore_ascii_case(part)) {
                    Some(w) if !out.contains(w) => out.push(*w),
                    Some(_) => {}
                    None => return bad(format!("each entry must be one of {}", words.join(", "))),
                }
            }
            if out.is_empty() {
                return bad("empty list".into());
            }
            Ok(out.join(","))
        }
    }
}

/// The effective value of every config for a topic: its overrides over the
/// broker's topic defaults over Kafka's defaults, each with its source.
pub fn effective(defaults: &BTreeMap<String, String>, overrides: &BTreeMap<String, String>) -> Vec<(&'static Def, String, Source)> {
    TOPIC_CONFIGS
        .iter()
        .map(|d| match (overrides.get(d.name), defaults.get(d.name)) {
            (Some(v), _) => (d, v.clone(), Source::Topic),
            (None, Some(v)) => (d, v.clone(), Source::Broker),
            (None, None) => (d, d.default.to_string(), Source::Default),
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Topic,
    Broker,
    Default,
}

/// The storage settings for a topic with these broker defaults and topic
/// overrides (all already validated).
pub fn log_config(defaults: &BTreeMap<String, String>, overrides: &BTreeMap<String, String>) -> Result<LogConfig, String> {
    LogConfig::default().with_overrides(defaults.iter().chain(overrides.iter()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_defaults_validate() {
        for w in TOPIC_CONFIGS.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        for d in TOPIC_CONFIGS {
            assert_eq!(validate(d.name, d.default).as_deref(), Ok(d.default), "{}", d.name);
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(validate("retention.ms", "-2").unwrap_err().contains("at least -1"));
        assert!(validate("segment.bytes", "3000000000").unwrap_err().contains("at most"));
        assert!(validate("no.such.config", "1").unwrap_err().contains("unknown"));
        assert_eq!(validate("cleanup.policy", "compact, delete").unwrap(), "compact,delete");
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("compression.type", "zstd").is_err());
        assert_eq!(validate("message.timestamp.type", "logappendtime").unwrap(), "LogAppendTime");
    }

    #[test]
    fn effective_sources() {
        let defaults: BTreeMap<String, String> = [("retention.ms".to_string(), "1000".to_string())].into();
        let overrides: BTreeMap<String, String> = [("segment.bytes".to_string(), "100000".to_string())].into();
        let eff = effective(&defaults, &overrides);
        let get = |n: &str| eff.iter().find(|(d, _, _)| d.name == n).map(|(_, v, s)| (v.clone(), *s)).unwrap();
        assert_eq!(get("retention.ms"), ("1000".into(), Source::Broker));
        assert_eq!(get("segment.bytes"), ("100000".into(), Source::Topic));
        assert_eq!(get("flush.ms"), (LONG_MAX.into(), Source::Default));
        let lc = log_config(&defaults, &overrides).unwrap();
        assert_eq!((lc.retention_ms, lc.segment_bytes, lc.flush_ms), (1000, 100000, None));
    }
}
