//! Metadata: this node as the only broker and controller, topics with ids,
//! auto-creation of unknown topics.

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{Broker, Topic};
use crate::protocol::{code, operations};

/// `listener`: the one the request came in on, whose address is advertised.
pub async fn handle(broker: &Broker, req: MetadataRequest, version: i16, listener: &str) -> MetadataResponse {
    let cluster_operations = req.include_cluster_authorized_operations;
    let node = BrokerId(broker.config.broker.node_id);
    let (host, port) = broker.advertised(listener);
    let mut b = MetadataResponseBroker::default();
    b.node_id = node;
    b.host = StrBytes::from_string(host);
    b.port = port;

    let auto_create = broker.config.broker.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match req.topics {
        // v0 has no null: an empty list means every topic.
        None => topics.extend(broker.topic_names().into_iter().filter_map(|n| broker.topic(&n)).map(|t| topic_entry(&t, node, req.include_topic_authorized_operations))),
        Some(list) if list.is_empty() && version == 0 => {
            topics.extend(broker.topic_names().into_iter().filter_map(|n| broker.topic(&n)).map(|t| topic_entry(&t, node, false)))
        }
        Some(list) => {
            for wanted in list {
                let found = match (&wanted.name, wanted.topic_id) {
                    (Some(name), _) => broker.topic(name.as_str()),
                    (None, id) if !id.is_nil() => broker.topic_by_id(id),
                    _ => None,
                };
                let entry = match (found, wanted.name) {
                    (Some(t), _) => topic_entry(&t, node, req.include_topic_authorized_operations),
                    (None, Some(name)) if auto_create => {
                        let n = broker.config.broker.num_partitions;
                        match broker.create_topic(name.as_str(), n, Default::default()).await {
                            Ok(t) => topic_entry(&t, node, req.include_topic_authorized_operations),
                            Err(e) if e.code == code::TOPIC_ALREADY_EXISTS => match broker.topic(name.as_str()) {
                                Some(t) => topic_entry(&t, node, req.include_topic_authorized_operations),
                                None => error_entry(Some(name), wanted.topic_id, code::LEADER_NOT_AVAILABLE),
                            },
                            Err(e) => error_entry(Some(name), wanted.topic_id, e.code),
                        }
                    }
                    (None, Some(name)) => error_entry(Some(name), Uuid::nil(), code::UNKNOWN_TOPIC_OR_PARTITION),
                    (None, None) => error_entry(None, wanted.topic_id, code::UNKNOWN_TOPIC_ID),
                };
                topics.push(entry);
            }
        }
    }

    let mut r = MetadataResponse::default();
    r.brokers = vec![b];
    r.cluster_id = Some(StrBytes::from_string(broker.cluster_id.clone()));
    r.controller_id = node;
    r.topics = topics;
    r.cluster_authorized_operations = operations::answer(cluster_operations, operations::CLUSTER);
    r
}

fn error_entry(name: Option<TopicName>, id: Uuid, error: i16) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = error;
    t.name = name;
    t.topic_id = id;
    t.topic_authorized_operations = i32::MIN;
    t
}

fn topic_entry(topic: &Topic, node: BrokerId, with_operations: bool) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = code::NONE;
    t.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    t.topic_id = topic.id;
    t.is_internal = topic.name.starts_with("__");
    t.topic_authorized_operations = operations::answer(with_operations, operations::TOPIC);
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
