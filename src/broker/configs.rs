//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and
//! a read-only view of the broker's own settings).

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::topics::source_code;
use super::{Broker, TopicError};
use crate::protocol::code;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Context;
use crate::topic_config::{self, Kind, Source};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const BROKER_LOGGER: i8 = 8;

/// Kafka's ConfigType numbers (DescribeConfigs v3+).
fn type_code(kind: Kind) -> i8 {
    match kind {
        Kind::Bool => 1,
        Kind::Choice(_) => 2,
        Kind::Int { .. } => 3,
        Kind::Long { .. } => 5,
        Kind::Double { .. } => 6,
        Kind::List(_) => 7,
    }
}

fn entry(name: &str, value: String, source: Source, read_only: bool, kind: i8, doc: &str, req: &DescribeConfigsRequest) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = StrBytes::from_string(name.to_string());
    c.value = Some(StrBytes::from_string(value.clone()));
    c.read_only = read_only;
    c.config_source = source_code(source);
    c.is_sensitive = false;
    c.config_type = kind;
    if req.include_synonyms {
        let mut s = DescribeConfigsSynonym::default();
        s.name = StrBytes::from_string(name.to_string());
        s.value = Some(StrBytes::from_string(value));
        s.source = source_code(source);
        c.synonyms = vec![s];
    }
    if req.include_documentation {
        c.documentation = Some(StrBytes::from_string(doc.to_string()));
    }
    c
}

pub fn describe(broker: &Broker, ctx: &Context, req: DescribeConfigsRequest, _version: i16) -> DescribeConfigsResponse {
    let mut r = DescribeConfigsResponse::default();
    for res in &req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let wanted = |name: &str| res.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name));
        if let Some(e) = denied(broker, ctx, res.resource_type, res.resource_name.as_str(), Operation::DescribeConfigs) {
            out.error_code = e.code;
            out.error_message = error_message(&e);
            r.results.push(out);
            continue;
        }
        match res.resource_type {
            TOPIC => match broker.topic(res.resource_name.as_str()) {
                None => {
                    out.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
                    out.error_message = Some(StrBytes::from_string(format!("unknown topic {:?}", res.resource_name.as_str())));
                }
                Some(t) => {
                    for (def, value, source) in topic_config::effective(&broker.config.topic_defaults, &t.configs) {
                        if wanted(def.name) {
                            out.configs.push(entry(def.name, value, source, false, type_code(def.kind), def.doc, &req));
                        }
                    }
                }
            },
            BROKER => {
                let me = broker.config.broker.node_id.to_string();
                if !res.resource_name.is_empty() && res.resource_name.as_str() != me {
                    out.error_code = code::INVALID_REQUEST;
                    out.error_message = Some(StrBytes::from_string(format!("this is broker {me}")));
                } else {
                    for (name, value, kind, doc) in broker_settings(broker) {
                        if wanted(name) {
                            out.configs.push(entry(name, value, Source::Broker, true, kind, doc, &req));
                        }
                    }
                }
            }
            BROKER_LOGGER => {} // no per-logger levels: RUST_LOG sets them at start
            other => {
                out.error_code = code::INVALID_REQUEST;
                out.error_message = Some(StrBytes::from_string(format!("resource type {other} has no configs here")));
            }
        }
        r.results.push(out);
    }
    r
}

/// The broker's settings as Kafka broker config names (read-only: they come
/// from the config file).
fn broker_settings(broker: &Broker) -> Vec<(&'static str, String, i8, &'static str)> {
    let b = &broker.config.broker;
    let endpoints = broker.endpoints();
    let list = |f: &dyn Fn(&crate::broker::Endpoint) -> String| endpoints.iter().map(f).collect::<Vec<_>>().join(",");
    vec![
        ("advertised.listeners", list(&|e| format!("{}://{}:{}", e.listener, e.host, e.port)), 7, "the addresses clients are told to use, per listener"),
        ("auto.create.topics.enable", b.auto_create_topics.to_string(), 1, "Metadata creates unknown topics"),
        ("broker.id", b.node_id.to_string(), 3, "this broker's id"),
        ("connections.max.reauth.ms", b.connections_max_reauth_ms.to_string(), 3, "SASL session lifetime; 0: sessions do not end"),
        ("default.replication.factor", "1".into(), 3, "a single node"),
        ("listener.security.protocol.map", list(&|e| format!("{}:{}", e.listener, e.protocol.name())), 7, "each listener's security protocol"),
        ("listeners", list(&|e| format!("{}://{}", e.listener, e.bound)), 7, "the addresses listened on"),
        ("log.dirs", b.data_dir.display().to_string(), 2, "the data directory"),
        ("max.connections", b.max_connections.to_string(), 3, "connections served at once"),
        ("message.max.bytes", b.message_max_bytes.to_string(), 3, "default largest record batch"),
        ("node.id", b.node_id.to_string(), 3, "this broker's id"),
        ("num.partitions", b.num_partitions.to_string(), 3, "partitions of auto-created topics"),
        ("sasl.enabled.mechanisms", b.sasl_enabled_mechanisms.clone(), 3, "SASL mechanisms of SASL_PLAINTEXT and SASL_SSL listeners"),
        ("socket.request.max.bytes", b.socket_request_max_bytes.to_string(), 3, "largest request frame"),
        ("ssl.client.auth", b.ssl_client_auth.name().to_string(), 3, "client certificates on SSL listeners: none, requested or required"),
    ]
}

fn error_message(e: &TopicError) -> Option<StrBytes> {
    Some(StrBytes::from_string(e.message.clone()))
}

/// Validates a full set of topic overrides.
fn validated(configs: impl IntoIterator<Item = (String, Option<String>)>) -> Result<BTreeMap<String, String>, TopicError> {
    let mut out = BTreeMap::new();
    for (k, v) in configs {
        let Some(v) = v else {
            return Err(TopicError { code: code::INVALID_CONFIG, message: format!("config {k} has a null value") });
        };
        let v = topic_config::validate(&k, &v).map_err(|e| TopicError { code: code::INVALID_CONFIG, message: e })?;
        if out.insert(k.clone(), v).is_some() {
            return Err(TopicError { code: code::INVALID_REQUEST, message: format!("config {k} appears twice") });
        }
    }
    Ok(out)
}

/// The error for a resource whose configs the principal may not `op`
/// (DESCRIBE_CONFIGS or ALTER_CONFIGS): a topic's own, the broker's (and its
/// loggers') on the cluster.
fn denied(broker: &Broker, ctx: &Context, resource_type: i8, name: &str, op: Operation) -> Option<TopicError> {
    match resource_type {
        TOPIC if !broker.authorize(ctx, op, ResourceType::Topic, name) => Some(TopicError::denied(code::TOPIC_AUTHORIZATION_FAILED)),
        BROKER | BROKER_LOGGER if !broker.authorize_cluster(ctx, op) => Some(TopicError::denied(code::CLUSTER_AUTHORIZATION_FAILED)),
        _ => None,
    }
}

fn not_topic(resource_type: i8) -> TopicError {
    match resource_type {
        BROKER | BROKER_LOGGER => TopicError { code: code::INVALID_REQUEST, message: "broker settings come from the config file and cannot be changed at run time".into() },
        other => TopicError { code: code::INVALID_REQUEST, message: format!("resource type {other} has no configs here") },
    }
}

/// AlterConfigs: the given configs replace all of the topic's overrides.
pub async fn alter(broker: &Broker, ctx: &Context, req: AlterConfigsRequest, _version: i16) -> AlterConfigsResponse {
    let mut r = AlterConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.as_str().to_string();
        let outcome = async {
            if let Some(e) = denied(broker, ctx, res.resource_type, &name, Operation::AlterConfigs) {
                return Err(e);
            }
            if res.resource_type != TOPIC {
                return Err(not_topic(res.resource_type));
            }
            let configs = validated(res.configs.iter().map(|c| (c.name.as_str().to_string(), c.value.as_ref().map(|v| v.as_str().to_string()))))?;
            if broker.topic(&name).is_none() {
                return Err(TopicError { code: code::UNKNOWN_TOPIC_OR_PARTITION, message: format!("unknown topic {name:?}") });
            }
            if req.validate_only {
                return Ok(());
            }
            broker.set_topic_configs(&name, configs).await
        }
        .await;
        tracing::debug!(resource = %name, outcome = ?outcome.as_ref().err().map(|e| (e.code, &e.message)), "AlterConfigs");
        let mut out = AlterConfigsResourceResponse::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        if let Err(e) = outcome {
            out.error_code = e.code;
            out.error_message = error_message(&e);
        }
        r.responses.push(out);
    }
    r
}

/// IncrementalAlterConfigs: SET (0), DELETE (1), APPEND (2) and SUBTRACT (3)
/// applied to the topic's current overrides.
pub async fn incremental_alter(broker: &Broker, ctx: &Context, req: IncrementalAlterConfigsRequest, _version: i16) -> IncrementalAlterConfigsResponse {
    let mut r = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.as_str().to_string();
        let outcome = async {
            if let Some(e) = denied(broker, ctx, res.resource_type, &name, Operation::AlterConfigs) {
                return Err(e);
            }
            if res.resource_type != TOPIC {
                return Err(not_topic(res.resource_type));
            }
            let Some(topic) = broker.topic(&name) else {
                return Err(TopicError { code: code::UNKNOWN_TOPIC_OR_PARTITION, message: format!("unknown topic {name:?}") });
            };
            let mut configs = topic.configs.clone();
            let mut touched = std::collections::HashSet::new();
            for c in &res.configs {
                let key = c.name.as_str().to_string();
                if !touched.insert(key.clone()) {
                    return Err(TopicError { code: code::INVALID_REQUEST, message: format!("config {key} appears twice") });
                }
                let def = topic_config::lookup(&key).ok_or_else(|| TopicError { code: code::INVALID_CONFIG, message: format!("unknown topic config {key:?}") })?;
                let value = c.value.as_ref().map(|v| v.as_str().to_string());
                match c.config_operation {
                    0 => {
                        let v = value.ok_or_else(|| TopicError { code: code::INVALID_CONFIG, message: format!("SET {key} needs a value") })?;
                        configs.insert(key, v);
                    }
                    1 => {
                        configs.remove(&key);
                    }
                    op @ (2 | 3) => {
                        if !matches!(def.kind, Kind::List(_)) {
                            return Err(TopicError { code: code::INVALID_CONFIG, message: format!("{key} is not a list: APPEND and SUBTRACT do not apply") });
                        }
                        let current = topic_config::effective(&broker.config.topic_defaults, &configs).into_iter().find(|(d, _, _)| d.name == key).map(|(_, v, _)| v).unwrap_or_default();
                        let mut items: Vec<String> = current.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
                        for item in value.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                            if op == 2 && !items.iter().any(|x| x == item) {
                                items.push(item.to_string());
                            } else if op == 3 {
                                items.retain(|x| x != item);
                            }
                        }
                        configs.insert(key, items.join(","));
                    }
                    other => return Err(TopicError { code: code::INVALID_REQUEST, message: format!("unknown config operation {other}") }),
                }
            }
            let configs = validated(configs.into_iter().map(|(k, v)| (k, Some(v))))?;
            if req.validate_only {
                return Ok(());
            }
            broker.set_topic_configs(&name, configs).await
        }
        .await;
        let mut out = IncrementalResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        if let Err(e) = outcome {
            out.error_code = e.code;
            out.error_message = error_message(&e);
        }
        r.responses.push(out);
    }
    r
}
