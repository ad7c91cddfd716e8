//! Eddy: a Kafka-compatible log broker with a built-in stream-processing tier.

pub mod broker;
pub mod config;
pub mod group;
pub mod http;
pub mod log;
pub mod metrics;
pub mod processor;
pub mod security;
pub mod protocol;
pub mod server;
pub mod topic_config;
pub mod txn;
