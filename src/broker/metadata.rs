//! Metadata: this node as the only broker and controller, topics with ids,
//! auto-creation of unknown topics.

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{Broker, Topic};
use crate::protocol::code;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Context;

/// The advertised address is that of the listener the request came in on.
pub async fn handle(broker: &Broker, ctx: &Context, req: MetadataRequest, version: i16) -> MetadataResponse {
    let node = BrokerId(broker.config.broker.node_id);
    let (host, port) = broker.advertised(&ctx.listener);
    let mut b = MetadataResponseBroker::default();
    b.node_id = node;
    b.host = StrBytes::from_string(host);
    b.port = port;

    // Topics the principal may not DESCRIBE are left out of the all-topics
    // list and answered TOPIC_AUTHORIZATION_FAILED when named, whether they
    // exist or not (their existence is not disclosed).
    let describe = |name: &str| broker.authorize(ctx, Operation::Describe, ResourceType::Topic, name);
    let described = |t: &Topic, with_operations: bool| topic_entry(t, node, broker.authorized_operations(ctx, with_operations, ResourceType::Topic, &t.name));
    let denied = |name: Option<TopicName>, id: Uuid| error_entry(name, id, code::TOPIC_AUTHORIZATION_FAILED, 0);
    let auto_create = broker.config.broker.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match req.topics {
        // v0 has no null: an empty list means every topic.
        None => topics.extend(broker.topics().iter().filter(|t| describe(&t.name)).map(|t| described(t, req.include_topic_authorized_operations))),
        Some(list) if list.is_empty() && version == 0 => topics.extend(broker.topics().iter().filter(|t| describe(&t.name)).map(|t| described(t, false))),
        Some(list) => {
            for wanted in list {
                let found = match (&wanted.name, wanted.topic_id) {
                    (Some(name), _) => broker.topic(name.as_str()),
                    (None, id) if !id.is_nil() => broker.topic_by_id(id),
                    _ => None,
                };
                let answer = match (found, wanted.name) {
                    (Some(t), name) if !describe(&t.name) => denied(name, wanted.topic_id),
                    (Some(t), _) => described(&t, req.include_topic_authorized_operations),
                    (None, Some(name)) if !describe(name.as_str()) => denied(Some(name), Uuid::nil()),
                    // Auto-creation needs CREATE on the cluster or the topic.
                    (None, Some(name)) if auto_create && !broker.authorize_cluster(ctx, Operation::Create) && !broker.authorize(ctx, Operation::Create, ResourceType::Topic, name.as_str()) => denied(Some(name), Uuid::nil()),
                    (None, Some(name)) if auto_create => {
                        let n = broker.config.broker.num_partitions;
                        match broker.create_topic(name.as_str(), n, Default::default()).await {
                            Ok(t) => described(&t, req.include_topic_authorized_operations),
                            Err(e) if e.code == code::TOPIC_ALREADY_EXISTS => match broker.topic(name.as_str()) {
                                Some(t) => described(&t, req.include_topic_authorized_operations),
                                None => error_entry(Some(name), wanted.topic_id, code::LEADER_NOT_AVAILABLE, i32::MIN),
                            },
                            Err(e) => error_entry(Some(name), wanted.topic_id, e.code, i32::MIN),
                        }
                    }
                    (None, Some(name)) => error_entry(Some(name), Uuid::nil(), code::UNKNOWN_TOPIC_OR_PARTITION, i32::MIN),
                    (None, None) => error_entry(None, wanted.topic_id, code::UNKNOWN_TOPIC_ID, i32::MIN),
                };
                topics.push(answer);
            }
        }
    }

    let mut r = MetadataResponse::default();
    r.brokers = vec![b];
    r.cluster_id = Some(StrBytes::from_string(broker.cluster_id.clone()));
    r.controller_id = node;
    r.topics = topics;
    r.cluster_authorized_operations = broker.cluster_operations(ctx, req.include_cluster_authorized_operations);
    r
}

fn error_entry(name: Option<TopicName>, id: Uuid, error: i16, operations: i32) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = error;
    t.name = name;
    t.topic_id = id;
    t.topic_authorized_operations = operations;
    t
}

fn topic_entry(topic: &Topic, node: BrokerId, operations: i32) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = code::NONE;
    t.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    t.topic_id = topic.id;
    t.is_internal = Broker::is_internal(&topic.name);
    t.topic_authorized_operations = operations;
    t.partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let mut m = MetadataResponsePartition::default();
            m.error_code = code::NONE;
            m.partition_index = p.index;
            m.leader_id = node;
            m.leader_epoch = 0;
            m.replica_nodes = vec![node];
            m.isr_nodes = vec![node];
            m
        })
        .collect();
    t
}
