//! CreatePartitions and DeleteRecords.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use crate::log::LogError;
use crate::protocol::code;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Context;

pub async fn create(broker: &Broker, ctx: &Context, req: CreatePartitionsRequest, _version: i16) -> CreatePartitionsResponse {
    let mut r = CreatePartitionsResponse::default();
    let node = broker.config.broker.node_id;
    for t in req.topics {
        let mut res = CreatePartitionsTopicResult::default();
        res.name = t.name.clone();
        let bad_assignment = t.assignments.as_ref().is_some_and(|a| a.iter().any(|x| x.broker_ids.len() != 1 || x.broker_ids[0].0 != node));
        let outcome = if !broker.authorize(ctx, Operation::Alter, ResourceType::Topic, t.name.as_str()) {
            Err(super::TopicError::denied(code::TOPIC_AUTHORIZATION_FAILED))
        } else if bad_assignment {
            Err(super::TopicError { code: code::INVALID_REPLICA_ASSIGNMENT, message: format!("every partition must be assigned to node {node} alone") })
        } else {
            broker.add_partitions(t.name.as_str(), t.count, req.validate_only).await
        };
        if let Err(e) = outcome {
            res.error_code = e.code;
            res.error_message = Some(StrBytes::from_string(e.message));
        }
        r.results.push(res);
    }
    r
}

pub async fn delete_records(broker: &Broker, ctx: &Context, req: DeleteRecordsRequest, _version: i16) -> DeleteRecordsResponse {
    let mut r = DeleteRecordsResponse::default();
    for t in req.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        let allowed = broker.authorize(ctx, Operation::Delete, ResourceType::Topic, t.name.as_str());
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            match broker.partition(t.name.as_str(), p.partition_index) {
                _ if !allowed => pr.error_code = code::TOPIC_AUTHORIZATION_FAILED,
                None => pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(part) => {
                    let hw = part.high_watermark();
                    // -1 means "up to the high watermark"; beyond it is out of range.
                    let target = if p.offset == -1 { hw } else { p.offset };
                    if target < 0 || target > hw {
                        pr.error_code = code::OFFSET_OUT_OF_RANGE;
                    } else {
                        let log = std::sync::Arc::clone(&part.log);
                        let done = tokio::task::spawn_blocking(move || log.delete_records(target as u64)).await;
                        match done {
                            Ok(Ok(low)) => pr.low_watermark = low as i64,
                            Ok(Err(e)) => pr.error_code = e.kafka_code(),
                            Err(_) => pr.error_code = LogError::Closed.kafka_code(),
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
