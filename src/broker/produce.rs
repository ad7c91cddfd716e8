//! Produce: validate and append each partition's record set as sent (an
//! old version's message set up-converted first), then answer per acks —
//! none for acks=0, after the append for acks=1, after the shared fsync for
//! acks=all.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Broker, Partition};
use crate::log::batch::BatchHeader;
use crate::protocol::code;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Context;

struct Pending {
    topic: usize,
    slot: usize,
    partition: Arc<Partition>,
    end: u64,
    /// acks=all (fsynced); else acks=1 (written to the file).
    durable: bool,
}

/// A produce request whose records are appended, waiting only for the
/// write to the file acks=1 asks for, or the write and fsync of acks=all. It owns everything it needs, so the connection
/// can go on to its next request meanwhile (responses stay in order).
pub struct Appended {
    acks: i16,
    responses: Vec<TopicProduceResponse>,
    pending: Vec<Pending>,
}

/// Validates and appends every partition's records now: those the
/// principal may write (WRITE on the topic, and on the transactional id for
/// transactional records).
pub fn append(broker: &Broker, ctx: &Context, req: ProduceRequest, version: i16) -> Appended {
    let acks = req.acks;
    let txn_denied = broker.authorizer.is_some() && transactional(&req) && !req.transactional_id.as_ref().is_some_and(|id| broker.authorize(ctx, Operation::Write, ResourceType::TransactionalId, id));
    let txn_id = req.transactional_id.as_ref().map(|t| t.as_str());
    let mut responses = Vec::with_capacity(req.topic_data.len());
    let mut pending: Vec<Pending> = Vec::new();
    for (ti, td) in req.topic_data.into_iter().enumerate() {
        let topic = if version >= 13 { broker.topic_by_id(td.topic_id) } else { broker.topic(td.name.as_str()) };
        // acks=all is impossible when the topic wants more than one in-sync replica.
        let needs_replicas = topic.as_ref().and_then(|t| t.configs.get("min.insync.replicas")).or_else(|| broker.config.topic_defaults.get("min.insync.replicas")).is_some_and(|m| m != "1");
        let traffic = topic.as_ref().map(|t| broker.metrics.topic(&t.name));
        // Asked before existence, as Kafka does; an unknown topic id has no name to ask about.
        let allowed = match &topic {
            Some(t) => broker.authorize(ctx, Operation::Write, ResourceType::Topic, &t.name),
            None => version >= 13 || broker.authorize(ctx, Operation::Write, ResourceType::Topic, td.name.as_str()),
        };
        let topic_name = topic.as_ref().map_or("", |t| t.name.as_str());
        let mut tr = TopicProduceResponse::default();
        // A copy, not a slice of the request frame: the frame's buffer is
        // then free for the connection's next read while this response
        // waits for its write.
        tr.name = kafka_protocol::messages::TopicName(StrBytes::from_string(td.name.to_string()));
        tr.topic_id = td.topic_id;
        for pd in td.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            let partition = topic.as_ref().and_then(|t| t.partitions.get(usize::try_from(pd.index).ok()?).cloned());
            let fail = |pr: &mut PartitionProduceResponse, code: i16, message: String| {
                pr.error_code = code;
                pr.error_message = Some(StrBytes::from_string(message));
            };
            match (partition, pd.records) {
                _ if txn_denied => fail(&mut pr, code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED, code::denied(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED).into()),
                _ if !allowed => fail(&mut pr, code::TOPIC_AUTHORIZATION_FAILED, code::denied(code::TOPIC_AUTHORIZATION_FAILED).into()),
                _ if !matches!(acks, -1..=1) => fail(&mut pr, code::INVALID_REQUIRED_ACKS, format!("acks must be 0, 1 or -1, not {acks}")),
                (None, _) if topic.is_none() && version >= 13 => fail(&mut pr, code::UNKNOWN_TOPIC_ID, "unknown topic id".into()),
                (None, _) => fail(&mut pr, code::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic or partition".into()),
                (Some(_), _) if topic.as_ref().is_some_and(|t| Broker::is_internal(&t.name)) => fail(&mut pr, code::INVALID_TOPIC_EXCEPTION, "internal topics are written by the broker only".into()),
                (Some(_), None) => fail(&mut pr, code::CORRUPT_MESSAGE, "no records".into()),
                // Produce v0–2 carry a message set (magic 0 or 1): it becomes
                // one v2 batch here, so the log holds only v2 batches; only
                // for a partition the arms above let through, so a request
                // to nowhere costs no decompression.
                (Some(p), Some(set)) => match if version < 3 { crate::log::message_set::to_batch(&set) } else { Ok(set) } {
                    Err(e) => fail(&mut pr, e.kafka_code(), format!("the message set does not convert to a record batch: {e}")),
                    Ok(records) if !single_batch(&records) => fail(&mut pr, code::INVALID_RECORD, "a produce request must carry exactly one record batch per partition".into()),
                    Ok(records) => {
                        if let Some((code, message)) = refused(broker, txn_id, &records, version, topic_name, pd.index) {
                            fail(&mut pr, code, message);
                        } else if acks == -1 && needs_replicas {
                            fail(&mut pr, code::NOT_ENOUGH_REPLICAS, "min.insync.replicas is above 1 and Eddy has one replica".into());
                        } else {
                            match p.log.append_staged(&records) {
                                Ok(info) => {
                                    if let Some(t) = &traffic {
                                        t.bytes_in.inc_by(records.len() as u64);
                                        t.records_in.inc_by(info.last_offset + 1 - info.base_offset);
                                    }
                                    pr.base_offset = info.base_offset as i64;
                                    pr.log_append_time_ms = info.log_append_time;
                                    pr.log_start_offset = info.log_start_offset as i64;
                                    p.appended();
                                    let end = info.last_offset + 1;
                                    match acks {
                                        // Nothing to answer: the write-out runs on its own.
                                        0 => drop(tokio::spawn(async move { p.wait_written(end).await })),
                                        _ => pending.push(Pending { topic: ti, slot: tr.partition_responses.len(), partition: p, end, durable: acks == -1 }),
                                    }
                                }
                                Err(e) => {
                                    tracing::debug!(topic = %td.name.as_str(), partition = pd.index, error = %e, "produce rejected");
                                    fail(&mut pr, e.kafka_code(), e.to_string());
                                    // Clients read the log start offset on errors too.
                                    pr.log_start_offset = p.log.log_start_offset() as i64;
                                }
                            }
                        }
                    }
                },
            }
            tr.partition_responses.push(pr);
        }
        responses.push(tr);
    }

    Appended { acks, responses, pending }
}

impl Appended {
    /// Whether `finish` has anything to wait for.
    pub fn is_waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Waits for the write-outs (acks=1) or write-outs and fsyncs
    /// (acks=all), shared with concurrent producers (group commit), and
    /// builds the response; None for acks=0.
    pub async fn finish(self) -> Option<ProduceResponse> {
        let Appended { acks, mut responses, pending } = self;
    if !pending.is_empty() {
        // Partitions write in parallel; one partition's waiters share writes.
        let mut waits = tokio::task::JoinSet::new();
        for (i, w) in pending.iter().enumerate() {
            let (p, end) = (Arc::clone(&w.partition), w.end);
            let durable = w.durable;
            waits.spawn(async move { (i, if durable { p.wait_durable(end).await } else { p.wait_written(end).await }) });
        }
        // Anything not confirmed written is an error, whatever went wrong.
        let mut outcome: Vec<Result<(), String>> = vec![Err("the write wait did not complete".into()); pending.len()];
        while let Some(done) = waits.join_next().await {
            if let Ok((i, r)) = done {
                outcome[i] = r;
            }
        }
        for (w, r) in pending.iter().zip(outcome) {
            if let Err(message) = r {
                tracing::error!(error = %message, acks, "writing produced records failed");
                let pr = &mut responses[w.topic].partition_responses[w.slot];
                pr.error_code = code::KAFKA_STORAGE_ERROR;
                pr.error_message = Some(StrBytes::from_string(message));
            }
        }
    }
    if acks == 0 {
        return None;
    }
    let mut r = ProduceResponse::default();
    r.responses = responses;
    Some(r)
    }
}

/// False when a record set holds more than one batch (Produce v3+ allows
/// one); damaged or short sets are left to batch validation.
fn single_batch(records: &bytes::Bytes) -> bool {
    if records.len() < 12 {
        return true;
    }
    let len = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
    len < 0 || 12 + len as usize >= records.len()
}

/// Why this partition's batch is refused before the log looks at it, if
/// it is (sets too short or too damaged to tell are left to the log's
/// batch validation):
/// - as Kafka's ProduceRequest.validateRecords does in v3+: a batch that
///   is not v2 (magic 0 or 1: INVALID_RECORD), and zstd before v7, which is
///   how a client says it can read zstd (UNSUPPORTED_COMPRESSION_TYPE);
/// - a transactional batch (not a marker) without the request's
///   transactional id (Kafka: TRANSACTIONAL_ID_AUTHORIZATION_FAILED), or
///   for a partition its producer's open transaction does not hold
///   (`TxnCoordinator::verify_partition`).
fn refused(broker: &Broker, transactional_id: Option<&str>, records: &bytes::Bytes, version: i16, topic: &str, partition: i32) -> Option<(i16, String)> {
    let magic = *records.get(16)?;
    if version >= 3 && magic != 2 {
        return Some((code::INVALID_RECORD, format!("Produce requests with version {version} are only allowed to contain record batches with magic version 2, not {magic}")));
    }
    let h = BatchHeader::parse(records).filter(|_| magic == 2)?;
    if version < 7 && h.compression() == 4 {
        return Some((code::UNSUPPORTED_COMPRESSION_TYPE, format!("Produce requests with version {version} are not allowed to use ZStandard compression (it needs version 7 or later)")));
    }
    if !h.is_transactional() || h.is_control() {
        return None;
    }
    let (producer_id, epoch) = (h.producer_id, h.producer_epoch);
    let Some(id) = transactional_id else {
        return Some((code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "a transactional batch needs the request's transactional id".into()));
    };
    let reason = |code| match code {
        code::INVALID_TXN_STATE => format!("partition {topic}-{partition} is not part of the open transaction of {id:?} (AddPartitionsToTxn first)"),
        code::INVALID_PRODUCER_EPOCH => format!("producer {producer_id} epoch {epoch} is not the current epoch of {id:?}"),
        _ => format!("transactional id {id:?} does not belong to producer {producer_id}"),
    };
    broker.txns.verify_partition(id, producer_id, epoch, topic, partition).err().map(|code| (code, reason(code)))
}

/// Whether any partition's records are a transactional batch (v2 batch
/// attributes bit 4), which needs WRITE on the transactional id.
fn transactional(req: &ProduceRequest) -> bool {
    req.topic_data.iter().flat_map(|t| &t.partition_data).filter_map(|p| p.records.as_ref()).any(|r| r.len() >= 23 && r[16] == 2 && r[22] & 0x10 != 0)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};

    use super::*;

    fn request(batches: &[&[u8]]) -> ProduceRequest {
        let mut t = TopicProduceData::default();
        t.partition_data = batches
            .iter()
            .map(|b| {
                let mut p = PartitionProduceData::default();
                p.records = Some(bytes::Bytes::copy_from_slice(b));
                p
            })
            .collect();
        let mut r = ProduceRequest::default();
        r.topic_data = vec![t];
        r
    }

    #[test]
    fn transactional_batches_are_recognized_by_their_attributes() {
        // A v2 batch header: magic at byte 16, attributes (i16) at 21–22.
        let mut plain = [0u8; 61];
        plain[16] = 2;
        let mut txn = plain;
        txn[22] = 0x10;
        let mut old = txn;
        old[16] = 1; // a message set's magic: no transactions
        assert!(!transactional(&request(&[&plain, &old])));
        assert!(transactional(&request(&[&plain, &txn])));
        assert!(!transactional(&request(&[&txn[..20]])), "too short to tell");
    }
}
