//! Processors: TOML-declared, event-time windowed aggregations running
//! inside the broker, materialized as compacted topics. The semantics are
//! `shared/processing.md`'s: `config` parses and validates a processor,
//! `extract` turns a record into key, event time and aggregate inputs,
//! `engine` keeps windows and emits results, `aggregate` holds the
//! aggregate functions, `runtime` runs a processor on the broker's logs, and
//! `checkpoint` writes and reads its checkpoints (a base and deltas).

pub mod aggregate;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod extract;
pub mod parse;
pub mod runtime;
pub mod shards;

pub use config::{ProcessorSpec, SpecError};
