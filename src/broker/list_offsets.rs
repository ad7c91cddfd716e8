//! ListOffsets: earliest, latest, max timestamp, and by timestamp (looking
//! inside batches, since producer timestamps need not increase).

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::Broker;
use crate::protocol::code;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Context;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub fn handle(broker: &Broker, ctx: &Context, req: ListOffsetsRequest, _version: i16) -> ListOffsetsResponse {
    let mut r = ListOffsetsResponse::default();
    for topic in req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = topic.name.clone();
        let allowed = broker.authorize(ctx, Operation::Describe, ResourceType::Topic, topic.name.as_str());
        for lp in topic.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = lp.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            pr.leader_epoch = -1;
            match broker.partition(topic.name.as_str(), lp.partition_index) {
                _ if !allowed => pr.error_code = code::TOPIC_AUTHORIZATION_FAILED,
                None => pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(p) => {
                    // One replica: the high watermark is also the last stable
                    // offset until transactions exist.
                    // read_committed (isolation level 1) sees up to the last
                    // stable offset only.
                    let hw = if req.isolation_level == 1 { p.log.last_stable_offset() } else { p.high_watermark() as u64 };
                    let found = match lp.timestamp {
                        LATEST => Ok(Some((hw, -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((p.log.log_start_offset(), -1))),
                        LATEST_TIERED => Ok(None),
                        MAX_TIMESTAMP => p.log.offset_of_max_timestamp(hw),
                        ts => p.log.offset_for_timestamp(ts, hw),
                    };
                    match found {
                        Ok(Some((offset, ts))) => {
                            pr.offset = offset as i64;
                            pr.timestamp = ts;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(topic = %topic.name.as_str(), partition = lp.partition_index, error = %e, "offset lookup failed");
                            pr.error_code = e.kafka_code();
                        }
                    }
                }
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}
