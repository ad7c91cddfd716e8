//! The one integration test binary (each extra binary relinks everything).

mod admin;
mod broker_crash;
mod broker_support;
mod groups;
mod http;
mod idempotence;
mod cli;
mod compaction;
mod kafka_clients;
mod legacy_versions;
mod log_behaviour;
mod log_compaction;
mod log_corruption;
mod log_crash;
mod log_format;
mod log_model;
mod log_support;
mod log_txn_index;
mod processor_cases;
mod processor_engine;
mod processors;
mod security;
mod tls;
mod transactions;
mod wire;
mod wire_support;
