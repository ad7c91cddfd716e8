//! The transaction APIs: AddPartitionsToTxn (v0–3 and batched v4), AddOffsetsToTxn,
//! TxnOffsetCommit and EndTxn, glue around `crate::txn::TxnCoordinator`.
//! The coordinator writes and fsyncs state and markers, so its calls run in
//! `block_in_place`.

use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult};
use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::*;

use super::Broker;
use crate::group::store::Committed;
use crate::protocol::code;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Context;

fn blocking<R>(f: impl FnOnce() -> R) -> R {
    crate::security::off_runtime(f)
}

/// Whether a transaction may hold `topic`/`partition`: it exists and is
/// not one of the broker's own topics.
fn user_partition(broker: &Broker, topic: &str, partition: i32) -> bool {
    broker.partition(topic, partition).is_some() && !Broker::is_internal(topic)
}

/// WRITE on the transactional id.
fn may_write(broker: &Broker, ctx: &Context, id: &str) -> bool {
    broker.authorize(ctx, Operation::Write, ResourceType::TransactionalId, id)
}

fn topic_results(broker: &Broker, ctx: &Context, id: &str, producer_id: i64, epoch: i16, topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic]) -> Vec<AddPartitionsToTxnTopicResult> {
    let wanted: Vec<(String, i32)> = topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str().to_string(), *p))).collect();
    let known = |t: &str, p: i32| user_partition(broker, t, p);
    let writable: Vec<bool> = topics.iter().map(|t| broker.authorize(ctx, Operation::Write, ResourceType::Topic, t.name.as_str())).collect();
    let codes: Vec<i16> = if !may_write(broker, ctx, id) {
        vec![code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED; wanted.len()]
    } else if writable.contains(&false) {
        // Nothing is added: denied topics and unknown partitions say why,
        // the others were not attempted (as Kafka answers).
        let writable = &writable;
        topics
            .iter()
            .zip(writable)
            .flat_map(|(t, ok)| {
                t.partitions.iter().map(move |p| match *ok {
                    false => code::TOPIC_AUTHORIZATION_FAILED,
                    true if !known(t.name.as_str(), *p) => code::UNKNOWN_TOPIC_OR_PARTITION,
                    true => code::OPERATION_NOT_ATTEMPTED,
                })
            })
            .collect()
    } else {
        blocking(|| broker.txns.add_partitions(id, producer_id, epoch, &wanted, known))
    };
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

pub fn add_partitions(broker: &Broker, ctx: &Context, req: AddPartitionsToTxnRequest, version: i16) -> AddPartitionsToTxnResponse {
    let mut r = AddPartitionsToTxnResponse::default();
    if version <= 3 {
        r.results_by_topic_v3_and_below = topic_results(broker, ctx, req.v3_and_below_transactional_id.as_str(), req.v3_and_below_producer_id.0, req.v3_and_below_producer_epoch, &req.v3_and_below_topics);
        return r;
    }
    // v4 batches transactions for brokers (clients send v3 and below):
    // Kafka asks CLUSTER_ACTION for it.
    if !broker.authorize_cluster(ctx, Operation::ClusterAction) {
        r.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        return r;
    }
    for t in &req.transactions {
        let mut res = AddPartitionsToTxnResult::default();
        res.transactional_id = t.transactional_id.clone();
        res.topic_results = topic_results(broker, ctx, t.transactional_id.as_str(), t.producer_id.0, t.producer_epoch, &t.topics);
        r.results_by_transaction.push(res);
    }
    r
}

pub fn add_offsets(broker: &Broker, ctx: &Context, req: AddOffsetsToTxnRequest, _version: i16) -> AddOffsetsToTxnResponse {
    let mut r = AddOffsetsToTxnResponse::default();
    r.error_code = if !may_write(broker, ctx, req.transactional_id.as_str()) {
        code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else if !broker.authorize(ctx, Operation::Read, ResourceType::Group, req.group_id.as_str()) {
        code::GROUP_AUTHORIZATION_FAILED
    } else {
        blocking(|| broker.txns.add_offsets(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch))
    };
    r
}

pub fn txn_offset_commit(broker: &Broker, ctx: &Context, req: TxnOffsetCommitRequest, _version: i16) -> TxnOffsetCommitResponse {
    let now = crate::log::now_ms();
    // WRITE on the transactional id and READ on the group deny everything;
    // READ on a topic only that topic's offsets.
    // Then the group's membership (v3+ name the member; older versions
    // and producers that give only the group id always pass).
    let denied_all = if !may_write(broker, ctx, req.transactional_id.as_str()) {
        Some(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    } else if !broker.authorize(ctx, Operation::Read, ResourceType::Group, req.group_id.as_str()) {
        Some(code::GROUP_AUTHORIZATION_FAILED)
    } else {
        match broker.groups.txn_commit_allowed(req.group_id.as_str(), req.generation_id, req.member_id.as_str(), req.group_instance_id.as_ref().map(|i| i.as_str())) {
            code::NONE => None,
            refused => Some(refused),
        }
    };
    let readable: Vec<bool> = req.topics.iter().map(|t| broker.authorize(ctx, Operation::Read, ResourceType::Topic, t.name.as_str())).collect();
    let known = |t: &str, p: i32| user_partition(broker, t, p);
    let mut offsets = Vec::new();
    for (t, _) in req.topics.iter().zip(&readable).filter(|(_, ok)| denied_all.is_none() && **ok) {
        for p in t.partitions.iter().filter(|p| known(t.name.as_str(), p.partition_index)) {
            offsets.push((t.name.as_str().to_string(), p.partition_index, Committed { offset: p.committed_offset, leader_epoch: p.committed_leader_epoch, metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(), timestamp: now }));
        }
    }
    let committed = match denied_all {
        Some(denied) => denied,
        None if offsets.is_empty() => code::NONE,
        None => blocking(|| broker.txns.commit_offsets(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch, req.group_id.as_str(), offsets)),
    };
    let mut r = TxnOffsetCommitResponse::default();
    for (t, readable) in req.topics.iter().zip(readable) {
        let mut tr = TxnOffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = TxnOffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = if !readable && denied_all.is_none() {
                code::TOPIC_AUTHORIZATION_FAILED
            } else if denied_all.is_none() && !known(t.name.as_str(), p.partition_index) {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                committed
            };
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

pub async fn end_txn(broker: &Broker, ctx: &Context, req: EndTxnRequest, _version: i16) -> EndTxnResponse {
    let mut r = EndTxnResponse::default();
    r.error_code = if !may_write(broker, ctx, req.transactional_id.as_str()) {
        code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else {
        blocking(|| broker.with_txn_effects(|fx| broker.txns.end(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch, req.committed, fx)))
    };
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    r
}

pub fn describe_producers(broker: &Broker, ctx: &Context, req: DescribeProducersRequest, _version: i16) -> DescribeProducersResponse {
    use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
    let mut r = DescribeProducersResponse::default();
    for t in &req.topics {
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        let readable = broker.authorize(ctx, Operation::Read, ResourceType::Topic, t.name.as_str());
        for &p in &t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = p;
            match broker.partition(t.name.as_str(), p) {
                _ if !readable => pr.error_code = code::TOPIC_AUTHORIZATION_FAILED,
                None => pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(part) => {
                    pr.active_producers = part
                        .log
                        .producers()
                        .into_iter()
                        .map(|(pid, epoch, last_seq, last_ts, txn_start)| {
                            let mut s = ProducerState::default();
                            s.producer_id = ProducerId(pid);
                            s.producer_epoch = epoch as i32;
                            s.last_sequence = last_seq;
                            s.last_timestamp = last_ts;
                            s.coordinator_epoch = -1;
                            s.current_txn_start_offset = txn_start;
                            s
                        })
                        .collect();
                }
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

pub fn describe_transactions(broker: &Broker, ctx: &Context, req: DescribeTransactionsRequest, _version: i16) -> DescribeTransactionsResponse {
    use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
    let mut r = DescribeTransactionsResponse::default();
    for id in &req.transactional_ids {
        let mut s = TransactionState::default();
        s.transactional_id = id.clone();
        match broker.txns.get(id.as_str()) {
            _ if !broker.authorize(ctx, Operation::Describe, ResourceType::TransactionalId, id.as_str()) => s.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            None => s.error_code = code::TRANSACTIONAL_ID_NOT_FOUND,
            Some(m) => {
                s.transaction_state = kafka_protocol::protocol::StrBytes::from_static_str(m.status.name());
                s.transaction_timeout_ms = m.timeout_ms;
                s.transaction_start_time_ms = if m.status == crate::txn::Status::Ongoing { m.start_ms } else { -1 };
                s.producer_id = ProducerId(m.producer_id);
                s.producer_epoch = m.epoch;
                let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
                // Only the topics the principal may describe, as in Kafka.
                for (t, p) in m.partitions.iter().filter(|(t, _)| broker.authorize(ctx, Operation::Describe, ResourceType::Topic, t)) {
                    by_topic.entry(t).or_default().push(*p);
                }
                s.topics = by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        let mut d = TopicData::default();
                        d.topic = TopicName(kafka_protocol::protocol::StrBytes::from_string(t.to_string()));
                        d.partitions = ps;
                        d
                    })
                    .collect();
            }
        }
        r.transaction_states.push(s);
    }
    r
}

pub fn list_transactions(broker: &Broker, ctx: &Context, req: ListTransactionsRequest, _version: i16) -> ListTransactionsResponse {
    use kafka_protocol::messages::list_transactions_response::TransactionState;
    let known = ["Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort"];
    let mut r = ListTransactionsResponse::default();
    r.unknown_state_filters = req.state_filters.iter().filter(|f| !known.contains(&f.as_str())).cloned().collect();
    let now = crate::log::now_ms();
    for (id, m) in broker.txns.list() {
        // Only the transactional ids the principal may DESCRIBE.
        if !broker.authorize(ctx, Operation::Describe, ResourceType::TransactionalId, &id) {
            continue;
        }
        if !req.state_filters.is_empty() && !req.state_filters.iter().any(|f| f.as_str() == m.status.name()) {
            continue;
        }
        if !req.producer_id_filters.is_empty() && !req.producer_id_filters.iter().any(|p| p.0 == m.producer_id) {
            continue;
        }
        // v1: only transactions running longer than this many ms.
        if req.duration_filter >= 0 && !(m.status == crate::txn::Status::Ongoing && now - m.start_ms > req.duration_filter) {
            continue;
        }
        let mut s = TransactionState::default();
        s.transactional_id = TransactionalId(kafka_protocol::protocol::StrBytes::from_string(id));
        s.producer_id = ProducerId(m.producer_id);
        s.transaction_state = kafka_protocol::protocol::StrBytes::from_static_str(m.status.name());
        r.transaction_states.push(s);
    }
    r
}
