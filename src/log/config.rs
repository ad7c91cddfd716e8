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
        }
    }
}
