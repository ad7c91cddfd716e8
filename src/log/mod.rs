//! Storage: the append-only, segmented log of one partition, and the manager
//! of a data directory full of them. Synchronous by design (no async runtime
//! inside): the broker calls it from blocking-capable threads, and benches
//! and tests drive it directly. The byte layout is in `storage-format.md`.

pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod compression;
pub mod config;
pub mod file_records;
pub mod index;
pub mod manager;
pub mod message_set;
pub mod partition;
pub mod producer;
pub mod records;
pub mod segment;
pub mod tail;
pub mod topic;
pub mod txn;
pub mod txn_index;

use std::io;
use std::path::PathBuf;

pub use config::{LogConfig, TimestampType};
pub use file_records::{FileRecords, Records};
pub use manager::LogManager;
pub use partition::{AppendInfo, Log, ReadResult};
pub use topic::TopicMeta;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    #[error("record batch of {size} bytes is larger than max.message.bytes ({max})")]
    MessageTooLarge { size: usize, max: usize },
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: u64, log_start_offset: u64, log_end_offset: u64 },
    #[error("corrupt data in {path} at position {position}: {reason}")]
    CorruptLog { path: PathBuf, position: u64, reason: String },
    #[error("damaged topic metadata {path}: {reason}")]
    BadTopicMeta { path: PathBuf, reason: String },
    #[error("the log is closed")]
    Closed,
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    InvalidProducerEpoch { producer_id: i64, epoch: i16, current: i16 },
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence { producer_id: i64, expected: i32, got: i32 },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl LogError {
    /// The Kafka protocol error code a client should see for this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            LogError::OffsetOutOfRange { .. } => 1, // OFFSET_OUT_OF_RANGE
            LogError::CorruptBatch(_) => 2,         // CORRUPT_MESSAGE
            LogError::MessageTooLarge { .. } => 10, // MESSAGE_TOO_LARGE
            LogError::InvalidRecord(_) => 87,       // INVALID_RECORD
            LogError::InvalidTimestamp(_) => 32,    // INVALID_TIMESTAMP
            LogError::OutOfOrderSequence { .. } => 45, // OUT_OF_ORDER_SEQUENCE_NUMBER
            LogError::InvalidProducerEpoch { .. } => 47, // INVALID_PRODUCER_EPOCH
            LogError::CorruptLog { .. } | LogError::BadTopicMeta { .. } | LogError::Io(_) | LogError::Closed => 56, // KAFKA_STORAGE_ERROR
        }
    }
}

/// Milliseconds since the Unix epoch, the clock of timestamps and retention.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
