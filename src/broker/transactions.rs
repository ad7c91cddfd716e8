//! The transaction APIs: AddPartitionsToTxn (v0–3 and batched v4), AddOffsetsToTxn,
//! TxnOffsetCommit and EndTxn, glue around `crate::txn::TxnCoordinator`.
//! The coordinator writes and fsyncs state and markers, so its calls run in
//! `block_in_place`.

use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult};
use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::*;

use super::Broker;
use crate::group::store::Committed;

fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

fn topic_results(broker: &Broker, id: &str, producer_id: i64, epoch: i16, topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic]) -> Vec<AddPartitionsToTxnTopicResult> {
    let wanted: Vec<(String, i32)> = topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str().to_string(), *p))).collect();
    let known = |t: &str, p: i32| broker.partition(t, p).is_some() && !Broker::is_internal(t);
    let codes = blocking(|| broker.txns.add_partitions(id, producer_id, epoch, &wanted, known));
    let mut it = codes.into_iter();
    topics
        .iter()
        .map(|t| {
            let mut tr = AddPartitionsToTxnTopicResult::default();
            tr.name = t.name.clone();
            tr.results_by_partition = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = AddPartitionsToTxnPartitionResult::default();
                    pr.partition_index = *p;
                    pr.partition_error_code = it.next().unwrap_or(0);
                    pr
                })
                .collect();
            tr
        })
        .collect()
}

pub fn add_partitions(broker: &Broker, req: AddPartitionsToTxnRequest, version: i16) -> AddPartitionsToTxnResponse {
    let mut r = AddPartitionsToTxnResponse::default();
    if version <= 3 {
        r.results_by_topic_v3_and_below = topic_results(broker, req.v3_and_below_transactional_id.as_str(), req.v3_and_below_producer_id.0, req.v3_and_below_producer_epoch, &req.v3_and_below_topics);
        return r;
    }
    for t in &req.transactions {
        let mut res = AddPartitionsToTxnResult::default();
        res.transactional_id = t.transactional_id.clone();
        res.topic_results = topic_results(broker, t.transactional_id.as_str(), t.producer_id.0, t.producer_epoch, &t.topics);
        r.results_by_transaction.push(res);
    }
    r
}

pub fn add_offsets(broker: &Broker, req: AddOffsetsToTxnRequest, _version: i16) -> AddOffsetsToTxnResponse {
    let mut r = AddOffsetsToTxnResponse::default();
    r.error_code = blocking(|| broker.txns.add_offsets(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch));
    r
}

pub fn txn_offset_commit(broker: &Broker, req: TxnOffsetCommitRequest, _version: i16) -> TxnOffsetCommitResponse {
    let now = crate::log::now_ms();
    let mut offsets = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            offsets.push((t.name.as_str().to_string(), p.partition_index, Committed { offset: p.committed_offset, leader_epoch: p.committed_leader_epoch, metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(), timestamp: now }));
        }
    }
    let code = blocking(|| broker.txns.commit_offsets(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch, req.group_id.as_str(), offsets));
    let mut r = TxnOffsetCommitResponse::default();
    for t in &req.topics {
        let mut tr = TxnOffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = TxnOffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = code;
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

pub async fn end_txn(broker: &Broker, req: EndTxnRequest, _version: i16) -> EndTxnResponse {
    let mut r = EndTxnResponse::default();
    r.error_code = blocking(|| broker.with_txn_effects(|fx| broker.txns.end(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch, req.committed, fx)));
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    r
}
