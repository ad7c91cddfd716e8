//! CreateTopics and DeleteTopics.

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{Broker, TopicError};
use crate::protocol::code;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Context;
use crate::topic_config::{self, Source};

/// Kafka's ConfigSource numbers, as DescribeConfigs and CreateTopics use them.
pub fn source_code(s: Source) -> i8 {
    match s {
        Source::Topic => 1,  // DYNAMIC_TOPIC_CONFIG
        Source::Broker => 4, // STATIC_BROKER_CONFIG
        Source::Default => 5, // DEFAULT_CONFIG
    }
}

pub async fn create(broker: &Broker, ctx: &Context, req: CreateTopicsRequest, _version: i16) -> CreateTopicsResponse {
    let mut r = CreateTopicsResponse::default();
    // CREATE on the cluster allows every topic; else CREATE on each.
    let cluster_create = broker.authorize_cluster(ctx, Operation::Create);
    let names: Vec<String> = req.topics.iter().map(|t| t.name.as_str().to_string()).collect();
    for t in req.topics {
        let name = t.name.as_str().to_string();
        let mut res = CreatableTopicResult::default();
        res.name = t.name.clone();
        res.num_partitions = -1;
        res.replication_factor = -1;
        let outcome: Result<(Uuid, i32, std::collections::BTreeMap<String, String>), TopicError> = async {
            if !cluster_create && !broker.authorize(ctx, Operation::Create, ResourceType::Topic, &name) {
                return Err(TopicError::denied(code::TOPIC_AUTHORIZATION_FAILED));
            }
            if names.iter().filter(|n| **n == name).count() > 1 {
                return Err(TopicError { code: code::INVALID_REQUEST, message: format!("topic {name:?} appears more than once in the request") });
            }
            let mut partitions = if t.num_partitions == -1 { broker.config.broker.num_partitions } else { t.num_partitions };
            if !t.assignments.is_empty() {
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err(TopicError { code: code::INVALID_REQUEST, message: "give either assignments or partition count and replication factor".into() });
                }
                let node = broker.config.broker.node_id;
                if t.assignments.iter().any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node) {
                    return Err(TopicError { code: code::INVALID_REPLICA_ASSIGNMENT, message: format!("every partition must be assigned to node {node} alone") });
                }
                partitions = t.assignments.len() as i32;
            }
            let replication = if t.replication_factor == -1 { 1 } else { t.replication_factor };
            let configs: Vec<(String, Option<String>)> = t.configs.iter().map(|c| (c.name.as_str().to_string(), c.value.as_ref().map(|v| v.as_str().to_string()))).collect();
            let normalized = broker.check_new_topic(&name, partitions, replication, &configs)?;
            if req.validate_only {
                return Ok((Uuid::nil(), partitions, normalized));
            }
            let topic = broker.create_topic(&name, partitions, normalized.clone()).await?;
            Ok((topic.id, partitions, normalized))
        }
        .await;
        match outcome {
            Ok((id, partitions, overrides)) => {
                res.error_code = code::NONE;
                res.topic_id = id;
                res.num_partitions = partitions;
                res.replication_factor = 1;
                // The configs are shown to who may DESCRIBE_CONFIGS the topic.
                if !broker.authorize(ctx, Operation::DescribeConfigs, ResourceType::Topic, &name) {
                    res.topic_config_error_code = code::TOPIC_AUTHORIZATION_FAILED;
                } else {
                    res.configs = Some(
                        topic_config::effective(&broker.config.topic_defaults, &overrides)
                            .into_iter()
                            .map(|(def, value, source)| {
                                let mut c = CreatableTopicConfigs::default();
                                c.name = StrBytes::from_static_str(def.name);
                                c.value = Some(StrBytes::from_string(value));
                                c.read_only = false;
                                c.config_source = source_code(source);
                                c.is_sensitive = false;
                                c
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => {
                res.error_code = e.code;
                res.error_message = Some(StrBytes::from_string(e.message));
            }
        }
        r.topics.push(res);
    }
    r
}

pub async fn delete(broker: &Broker, ctx: &Context, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let wanted: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        req.topics.into_iter().map(|t| (t.name, t.topic_id)).collect()
    } else {
        req.topic_names.into_iter().map(|n| (Some(n), Uuid::nil())).collect()
    };
    let mut r = DeleteTopicsResponse::default();
    for (name, id) in wanted {
        let mut res = DeletableTopicResult::default();
        res.name = name.clone();
        res.topic_id = id;
        let topic = match &name {
            Some(n) => broker.topic(n.as_str()),
            None => broker.topic_by_id(id),
        };
        // DELETE on the topic, asked before existence for a name.
        let deletable = |n: &str| broker.authorize(ctx, Operation::Delete, ResourceType::Topic, n);
        match topic {
            _ if name.as_ref().is_some_and(|n| !deletable(n.as_str())) => res.error_code = code::TOPIC_AUTHORIZATION_FAILED,
            Some(t) if !deletable(&t.name) => res.error_code = code::TOPIC_AUTHORIZATION_FAILED,
            None => {
                res.error_code = if name.is_none() { code::UNKNOWN_TOPIC_ID } else { code::UNKNOWN_TOPIC_OR_PARTITION };
            }
            Some(t) if !id.is_nil() && t.id != id => res.error_code = code::UNKNOWN_TOPIC_ID,
            Some(t) if Broker::is_internal(&t.name) => {
                res.error_code = code::INVALID_TOPIC_EXCEPTION;
                res.error_message = Some(StrBytes::from_static_str("internal topics cannot be deleted"));
            }
            Some(t) => {
                res.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
                res.topic_id = t.id;
                if let Err(e) = broker.delete_topic(&t.name).await {
                    res.error_code = e.kafka_code();
                    res.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            }
        }
        r.responses.push(res);
    }
    r
}
