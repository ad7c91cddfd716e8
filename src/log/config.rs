//! Per-log settings, named after Kafka's topic configs.

/// `message.timestamp.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The topic-level settings the storage layer honours. Defaults are Kafka's.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this. Default 1 GiB.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first batch is older than this. Default 7 days.
    pub segment_ms: i64,
    /// `segment.index.bytes`: preallocated size of each index file. Default 10 MiB.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes of batches between offset index entries. Default 4096.
    pub index_interval_bytes: u64,
    /// `retention.ms`: delete segments whose largest timestamp is older; -1 keeps forever. Default 7 days.
    pub retention_ms: i64,
    /// `retention.bytes`: delete old segments while the log is larger; -1 means no limit. Default -1.
    pub retention_bytes: i64,
    /// `flush.messages`: fsync after this many appended records; None leaves it to the broker. Default None.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: fsync when the oldest unflushed append is this old; None leaves it to the broker. Default None.
    pub flush_ms: Option<u64>,
    /// `max.message.bytes`: largest record batch accepted. Default 1048588.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`. Default CreateTime.
    pub timestamp_type: TimestampType,
    /// `cleanup.policy` contains `delete`: retention applies. Default true.
    pub delete: bool,
    /// `cleanup.policy` contains `compact`: the cleaner keeps the latest record per key. Default false.
    pub compact: bool,
    /// `min.cleanable.dirty.ratio`: dirty share of the log before it is cleaned. Default 0.5.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are never cleaned. Default 0.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log with dirty records older than this is cleaned whatever its ratio. Default i64::MAX.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long tombstones (and transaction markers) stay after their segment is first cleaned. Default 1 day.
    pub delete_retention_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            flush_messages: None,
            flush_ms: None,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            delete: true,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}

impl LogConfig {
    /// This config with Kafka topic-config overrides applied. Keys the
    /// storage layer does not use (`min.insync.replicas`, ...) are left to
    /// the broker; a bad value for a key it does use is an error naming both.
    pub fn with_overrides<'a>(&self, overrides: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<LogConfig, String> {
        let mut c = self.clone();
        for (key, value) in overrides {
            let bad = |why: &str| format!("invalid value {value:?} for {key}: {why}");
            let int = || value.trim().parse::<i64>().map_err(|_| bad("not an integer"));
            let at_least = |min: i64| -> Result<i64, String> {
                let v = int()?;
                if v < min {
                    return Err(bad(&format!("must be at least {min}")));
                }
                Ok(v)
            };
            match key.as_str() {
                // Kafka's segment.bytes is an int; positions in the index are u32.
                "segment.bytes" => c.segment_bytes = at_least(14)?.min(i32::MAX as i64) as u64,
                "segment.ms" => c.segment_ms = at_least(1)?,
                "segment.index.bytes" => c.segment_index_bytes = at_least(4 * 12)?.min(i32::MAX as i64) as u64,
                "index.interval.bytes" => c.index_interval_bytes = at_least(0)? as u64,
                "retention.ms" => c.retention_ms = at_least(-1)?,
                "retention.bytes" => c.retention_bytes = at_least(-1)?,
                "flush.messages" => c.flush_messages = Some(at_least(1)? as u64).filter(|&n| n < i64::MAX as u64),
                "flush.ms" => c.flush_ms = Some(at_least(0)? as u64).filter(|&n| n < i64::MAX as u64),
                "max.message.bytes" => c.max_message_bytes = at_least(0)?.min(i32::MAX as i64) as usize,
                "cleanup.policy" => {
                    let (mut delete, mut compact) = (false, false);
                    for p in value.split(',').map(str::trim) {
                        match p {
                            "delete" => delete = true,
                            "compact" => compact = true,
                            _ => return Err(bad("must be delete, compact or both")),
                        }
                    }
                    (c.delete, c.compact) = (delete, compact);
                }
                "min.cleanable.dirty.ratio" => {
                    c.min_cleanable_dirty_ratio = match value.trim().parse::<f64>() {
                        Ok(x) if (0.0..=1.0).contains(&x) => x,
                        _ => return Err(bad("must be a number in [0, 1]")),
                    }
                }
                "min.compaction.lag.ms" => c.min_compaction_lag_ms = at_least(0)?,
                "max.compaction.lag.ms" => c.max_compaction_lag_ms = at_least(1)?,
                "delete.retention.ms" => c.delete_retention_ms = at_least(0)?,
                "message.timestamp.type" => {
                    c.timestamp_type = match value.as_str() {
                        "CreateTime" => TimestampType::CreateTime,
                        "LogAppendTime" => TimestampType::LogAppendTime,
                        _ => return Err(bad("must be CreateTime or LogAppendTime")),
                    }
                }
                _ => {}
            }
        }
        if c.min_compaction_lag_ms > c.max_compaction_lag_ms {
            return Err(format!("min.compaction.lag.ms ({}) must not exceed max.compaction.lag.ms ({})", c.min_compaction_lag_ms, c.max_compaction_lag_ms));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_bad_values_name_the_key() {
        let o: Vec<(String, String)> = vec![
            ("retention.ms".into(), "-1".into()),
            ("segment.bytes".into(), "99999999999".into()),
            ("message.timestamp.type".into(), "LogAppendTime".into()),
            ("flush.messages".into(), "9223372036854775807".into()),
            ("cleanup.policy".into(), "compact".into()),
        ];
        let c = LogConfig::default().with_overrides(o.iter().map(|(k, v)| (k, v))).unwrap();
        assert_eq!(c.retention_ms, -1);
        assert_eq!(c.segment_bytes, i32::MAX as u64);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(c.flush_messages, None, "Kafka's Long.MAX_VALUE means never");
        assert!(c.compact && !c.delete);
        let bad = [("retention.bytes".to_string(), "ten".to_string())];
        let e = LogConfig::default().with_overrides(bad.iter().map(|(k, v)| (k, v))).unwrap_err();
        assert!(e.contains("retention.bytes") && e.contains("ten"), "{e}");
        let low = [("segment.bytes".to_string(), "3".to_string())];
        assert!(LogConfig::default().with_overrides(low.iter().map(|(k, v)| (k, v))).is_err());
    }
}
