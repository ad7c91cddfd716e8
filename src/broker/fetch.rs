//! Fetch: whole batches from each requested partition, capped by the high
//! watermark and the byte limits; a long poll that waits for appends (not a
//! timer) when less than `min_bytes` is ready. Versions 0–3 get the batches
//! down-converted to a message set.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind};
use tokio::sync::Notify;

use super::{Broker, Partition};
use crate::log::file_records::{self, FileRecords, Records};
use crate::log::LogError;
use crate::protocol::{code, Reply};
use crate::security::acl::{Operation, ResourceType};
use crate::security::Context;

/// The response, with the file regions its stand-in record sets stand for
/// (fetches from v4 on send batches no longer in memory from the segment
/// files; the socket reads them through the page cache, from the disk if
/// need be, as the reads into memory did).
pub async fn handle(broker: &Broker, ctx: &Context, req: FetchRequest, version: i16) -> Reply {
    // READ on each topic, decided once for the whole long poll (empty: all
    // allowed); an unknown topic id has no name to ask about (it is
    // answered UNKNOWN_TOPIC_ID).
    let read = |name: &str| broker.authorize(ctx, Operation::Read, ResourceType::Topic, name);
    // A fetch that says it comes from a follower replica needs CLUSTER_ACTION instead.
    let follower = req.replica_id.0 >= 0 || req.replica_state.replica_id.0 >= 0;
    let denied: Vec<bool> = match broker.authorizer {
        None => Vec::new(),
        Some(_) if follower => vec![!broker.authorize_cluster(ctx, Operation::ClusterAction); req.topics.len()],
        Some(_) if version >= 13 => req.topics.iter().map(|t| broker.topic_by_id(t.topic_id).is_some_and(|t| !read(&t.name))).collect(),
        Some(_) => req.topics.iter().map(|t| !read(t.topic.as_str())).collect(),
    };
    let (r, files) = poll(broker, &req, version, &denied).await;
    count_out(broker, &r, &files, version);
    Reply { body: ResponseKind::Fetch(r), files }
}

/// Adds what a response carries to the per-topic traffic counters.
fn count_out(broker: &Broker, r: &FetchResponse, files: &[FileRecords], version: i16) {
    let mut files = files.iter();
    for tr in &r.responses {
        let bytes: usize = tr.partitions.iter().filter_map(|p| p.records.as_ref()).map(Bytes::len).sum();
        if bytes == 0 {
            continue;
        }
        let mut records = 0u64;
        for b in tr.partitions.iter().filter_map(|p| p.records.as_ref()) {
            records += if file_records::is_stand_in(b) {
                files.next().map_or(0, |f| f.records)
            } else if version < 4 {
                crate::log::message_set::count(b)
            } else {
                batch_records(b)
            };
        }
        let t = if version >= 13 { broker.topic_by_id(tr.topic_id) } else { broker.topic(tr.topic.as_str()) };
        let Some(t) = t else { continue };
        let c = broker.metrics.topic(&t.name);
        c.bytes_out.inc_by(bytes as u64);
        c.records_out.inc_by(records);
    }
}

/// Records in whole batches (by their headers' counts).
fn batch_records(b: &[u8]) -> u64 {
    crate::log::batch::whole_batches(b).map(|(h, _)| h.records_count.max(0) as u64).sum()
}

async fn poll(broker: &Broker, req: &FetchRequest, version: i16, denied: &[bool]) -> (FetchResponse, Vec<FileRecords>) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    // A fetch of nothing but partitions it may not read is answered at once,
    // as Kafka does when no authorized partition remains.
    // (`denied` is empty when nothing is, else it has one entry per topic.)
    let all_denied = !denied.is_empty() && denied.iter().all(|&d| d);
    let may_wait = req.max_wait_ms > 0 && req.min_bytes > 0 && !all_denied;
    let waker = Arc::new(Notify::new());
    loop {
        // Register before reading, so an append between the read and the
        // wait still wakes this fetch.
        if may_wait {
            for (_, topic) in req.topics.iter().enumerate().filter(|(i, _)| denied.get(*i) != Some(&true)) {
                let t = if version >= 13 { broker.topic_by_id(topic.topic_id) } else { broker.topic(topic.topic.as_str()) };
                if let Some(t) = t {
                    for fp in &topic.partitions {
                        if let Some(p) = usize::try_from(fp.partition).ok().and_then(|i| t.partitions.get(i)) {
                            p.watch(&waker);
                        }
                    }
                }
            }
        }
        let (response, files, bytes, errors) = read_all(broker, req, version, denied);
        let enough = bytes >= req.min_bytes.max(0) as usize || errors;
        if enough || !may_wait || tokio::time::Instant::now() >= deadline {
            return (response, files);
        }
        if tokio::time::timeout_at(deadline, waker.notified()).await.is_err() {
            // Timed out: answer with whatever is there now.
            let (response, files, _, _) = read_all(broker, req, version, denied);
            return (response, files);
        }
    }
}

/// One pass over the requested partitions. Returns the response, the file
/// regions of its stand-ins (in order), the bytes of records in it, and
/// whether any partition had an error.
fn read_all(broker: &Broker, req: &FetchRequest, version: i16, denied: &[bool]) -> (FetchResponse, Vec<FileRecords>, usize, bool) {
    let mut files = Vec::new();
    // Regions of files replace record sets from v4 on (earlier versions
    // get message sets made from the bytes).
    let by_file = version >= 4;
    let mut remaining = req.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut errors = false;
    // Fetch v0–3 have no isolation level, and their message sets no
    // transaction markers: such a fetch sees committed data only.
    let read_committed = req.isolation_level == 1 || version < 4;
    let mut responses = Vec::with_capacity(req.topics.len());
    for (i, topic) in req.topics.iter().enumerate() {
        let denied = denied.get(i) == Some(&true);
        let t = if version >= 13 { broker.topic_by_id(topic.topic_id) } else { broker.topic(topic.topic.as_str()) };
        let mut tr = FetchableTopicResponse::default();
        tr.topic = topic.topic.clone();
        tr.topic_id = topic.topic_id;
        for fp in &topic.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            pd.aborted_transactions = if read_committed { Some(Vec::new()) } else { None };
            pd.high_watermark = -1;
            pd.last_stable_offset = -1;
            pd.log_start_offset = -1;
            // Empty, not null, on errors too, as Kafka answers: librdkafka
            // refuses a null record set in flexible versions.
            pd.records = Some(Bytes::new());
            let partition = t.as_ref().and_then(|t| usize::try_from(fp.partition).ok().and_then(|i| t.partitions.get(i)).cloned());
            if denied {
                // Not an error that ends the long poll: the other partitions may still fill it.
                pd.error_code = code::TOPIC_AUTHORIZATION_FAILED;
                tr.partitions.push(pd);
                continue;
            }
            match partition {
                None => {
                    errors = true;
                    pd.error_code = if t.is_none() && version >= 13 { code::UNKNOWN_TOPIC_ID } else { code::UNKNOWN_TOPIC_OR_PARTITION };
                }
                Some(p) => {
                    let limit = (fp.partition_max_bytes.max(0) as usize).min(remaining);
                    // read_committed readers stop at the last stable offset
                    // and are told which aborted transactions to skip.
                    let upper = if read_committed { p.log.last_stable_offset() } else { p.high_watermark() as u64 };
                    // Before v3 there is no response-wide limit: every
                    // partition may return one batch larger than its limit,
                    // or one that is too large would never be fetched.
                    let first = total == 0 || version <= 2;
                    let read = read_partition(&p, fp.fetch_offset, limit, first, upper, by_file).and_then(|records| match records {
                        Records::Bytes(b) if version < 4 => down_convert(&p, b, fp.fetch_offset, upper, version, limit, first).map(Records::Bytes),
                        records => Ok(records),
                    });
                    match read {
                        Ok(records) => {
                            total += records.len();
                            remaining = remaining.saturating_sub(records.len());
                            pd.error_code = code::NONE;
                            if read_committed && version >= 4 && !records.is_empty() {
                                // The aborted transactions of what is sent, as
                                // Kafka lists them (not all up to the LSO).
                                let from = u64::try_from(fp.fetch_offset).unwrap_or(0);
                                let to = records.next_offset().map_or(upper, |n| n.min(upper));
                                pd.aborted_transactions = Some(
                                    p.log
                                        .aborted_transactions(from, to)
                                        .into_iter()
                                        .map(|a| {
                                            let mut t = kafka_protocol::messages::fetch_response::AbortedTransaction::default();
                                            t.producer_id = kafka_protocol::messages::ProducerId(a.producer_id);
                                            t.first_offset = a.first_offset as i64;
                                            t
                                        })
                                        .collect(),
                                );
                            }
                            pd.records = Some(match records {
                                Records::Bytes(b) => b,
                                Records::File(f) => {
                                    let stand_in = f.stand_in().expect("stand-ins are available when reading for send");
                                    files.push(f);
                                    stand_in
                                }
                            });
                        }
                        Err(e) => {
                            errors = true;
                            if !matches!(e, LogError::OffsetOutOfRange { .. }) {
                                tracing::warn!(topic = %topic.topic.as_str(), partition = fp.partition, error = %e, "fetch failed");
                            }
                            pd.error_code = e.kafka_code();
                        }
                    }
                    pd.high_watermark = p.high_watermark();
                    pd.last_stable_offset = p.log.last_stable_offset() as i64;
                    pd.log_start_offset = p.log.log_start_offset() as i64;
                }
            }
            tr.partitions.push(pd);
        }
        responses.push(tr);
    }
    let mut r = FetchResponse::default();
    r.error_code = code::NONE;
    r.session_id = 0; // no incremental fetch sessions: every fetch is full
    r.responses = responses;
    (r, files, total, errors)
}

/// Reads up to `limit` bytes of whole batches, possibly as a region of a
/// segment file when `by_file`. Only the first partition with data may
/// exceed the limit with a single oversized batch (KIP-74).
fn read_partition(p: &Partition, offset: i64, limit: usize, first: bool, upper: u64, by_file: bool) -> Result<Records, LogError> {
    let offset = u64::try_from(offset).map_err(|_| LogError::OffsetOutOfRange { offset: 0, log_start_offset: p.log.log_start_offset(), log_end_offset: p.log.log_end_offset() })?;
    let r = if by_file { p.log.read_for_send(offset, limit, upper)? } else { Records::Bytes(p.log.read(offset, limit, upper)?.records) };
    if !first && r.len() > limit {
        return Ok(Records::Bytes(Bytes::new()));
    }
    Ok(r)
}

/// Fetch v0–3 predate record batch v2: the batches read become a message
/// set (magic 0 for v0–1, magic 1 for v2–3) without control batches and
/// aborted data. Should everything read be such (a large aborted
/// transaction), the read moves past it rather than answer an empty set
/// that would hold the client at this offset; it never passes `upper`.
fn down_convert(p: &Partition, mut batches: Bytes, from: i64, upper: u64, version: i16, limit: usize, first: bool) -> Result<Bytes, LogError> {
    let magic = if version >= 2 { 1 } else { 0 };
    let aborted = p.log.aborted_transactions(u64::try_from(from).unwrap_or(0), upper);
    loop {
        let set = crate::log::message_set::from_batches(&batches, from, magic, &aborted, limit)?;
        let next = crate::log::batch::whole_batches(&batches).last().map(|(h, _)| h.next_offset() as u64);
        match next {
            Some(next) if set.is_empty() && next < upper => batches = p.log.read(next, limit, upper)?.records,
            _ if !first && set.len() > limit => return Ok(Bytes::new()),
            _ => return Ok(set),
        }
    }
}
