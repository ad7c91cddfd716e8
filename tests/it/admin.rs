//! Topic administration beyond create/delete: configs, partitions, records,
//! cluster and log dirs — through librdkafka's admin client where it has the
//! call, hand-built requests where it does not.

use std::time::Duration;

use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest, DescribeLogDirsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker_support::TestBroker;
use crate::wire_support::call_once;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn config(b: &TestBroker) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap()).set("broker.address.family", "v4").set("log_level", "3");
    c
}

fn admin(b: &TestBroker) -> AdminClient<DefaultClientContext> {
    config(b).create().unwrap()
}

fn create(b: &TestBroker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let r = rt().block_on(admin(b).create_topics(&[t], &AdminOptions::new())).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
}

fn describe(b: &TestBroker, topic: &str) -> std::collections::HashMap<String, (Option<String>, ConfigSource, bool)> {
    let r = rt().block_on(admin(b).describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())).unwrap();
    let res = r.into_iter().next().unwrap().unwrap();
    res.entries.into_iter().map(|e| (e.name, (e.value, e.source, e.is_default))).collect()
}

#[test]
fn describe_alter_and_persist_topic_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    create(&b, "conf", 1, &[("retention.ms", "3600000")]);
    let d = describe(&b, "conf");
    assert_eq!(d.len(), eddy::topic_config::TOPIC_CONFIGS.len(), "every config is described");
    assert_eq!(d["retention.ms"], (Some("3600000".into()), ConfigSource::DynamicTopic, false));
    assert_eq!(d["segment.bytes"], (Some("1073741824".into()), ConfigSource::Default, true));
    assert_eq!(d["max.message.bytes"].1, ConfigSource::StaticBroker, "message.max.bytes comes from the broker config");

    // AlterConfigs replaces the whole set of overrides.
    let rt = rt();
    let a = admin(&b);
    let alter = AlterConfig::new(ResourceSpecifier::Topic("conf")).set("cleanup.policy", "compact,delete").set("segment.ms", "600000");
    let r = rt.block_on(a.alter_configs(&[alter], &AdminOptions::new())).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let d = describe(&b, "conf");
    assert_eq!(d["cleanup.policy"].0.as_deref(), Some("compact,delete"));
    assert_eq!(d["segment.ms"].0.as_deref(), Some("600000"));
    assert_eq!(d["retention.ms"], (Some("-1".into()), ConfigSource::StaticBroker, false), "retention.ms override replaced: the broker default shows");

    // rdkafka-rust drops per-resource AlterConfigs errors (admin.rs builds
    // Ok for every resource), so the refusals are checked on the wire.
    let alter_raw = |topic: &'static str, name: &'static str, value: &'static str| -> i16 {
        let mut c = kafka_protocol::messages::alter_configs_request::AlterableConfig::default();
        c.name = StrBytes::from_static_str(name);
        c.value = Some(StrBytes::from_static_str(value));
        let mut res = kafka_protocol::messages::alter_configs_request::AlterConfigsResource::default();
        res.resource_type = 2;
        res.resource_name = StrBytes::from_static_str(topic);
        res.configs = vec![c];
        let mut req = kafka_protocol::messages::AlterConfigsRequest::default();
        req.resources = vec![res];
        let r: kafka_protocol::messages::AlterConfigsResponse = call_once(b.addr, ApiKey::AlterConfigs, 2, &req);
        r.responses[0].error_code
    };
    assert_eq!(alter_raw("conf", "retention.ms", "tomorrow"), 40, "INVALID_CONFIG");
    assert_eq!(alter_raw("conf", "no.such.config", "1"), 40, "INVALID_CONFIG");
    assert_eq!(alter_raw("nope", "retention.ms", "1"), 3, "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!(describe(&b, "conf")["segment.ms"].0.as_deref(), Some("600000"), "refused changes change nothing");

    // The broker's own settings are described, read-only.
    let r = rt.block_on(a.describe_configs(&[ResourceSpecifier::Broker(1)], &AdminOptions::new())).unwrap();
    let broker = r.into_iter().next().unwrap().unwrap();
    assert_eq!(broker.get("num.partitions").unwrap().value.as_deref(), Some("1"));
    assert!(broker.get("num.partitions").unwrap().is_read_only);
    drop(a);

    // Overrides survive a restart.
    b.stop();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let d = describe(&b, "conf");
    assert_eq!(d["cleanup.policy"].0.as_deref(), Some("compact,delete"));
    assert_eq!(d["segment.ms"].1, ConfigSource::DynamicTopic);
}


#[test]
fn incremental_alter_configs_set_delete_append_subtract() {
    let b = TestBroker::start();
    create(&b, "inc", 1, &[("retention.ms", "1000")]);
    let op = |name: &'static str, operation: i8, value: Option<&'static str>| {
        let mut c = AlterableConfig::default();
        c.name = StrBytes::from_static_str(name);
        c.config_operation = operation;
        c.value = value.map(StrBytes::from_static_str);
        c
    };
    let request = |configs: Vec<AlterableConfig>| {
        let mut res = AlterConfigsResource::default();
        res.resource_type = 2;
        res.resource_name = StrBytes::from_static_str("inc");
        res.configs = configs;
        let mut r = IncrementalAlterConfigsRequest::default();
        r.resources = vec![res];
        r
    };
    let r: IncrementalAlterConfigsResponse = call_once(b.addr, ApiKey::IncrementalAlterConfigs, 1, &request(vec![op("retention.ms", 1, None), op("segment.ms", 0, Some("99999")), op("cleanup.policy", 2, Some("compact"))]));
    assert_eq!(r.responses[0].error_code, 0, "{:?}", r.responses[0].error_message);
    let d = describe(&b, "inc");
    assert_eq!(d["retention.ms"].1, ConfigSource::StaticBroker, "DELETE removed the override: the broker default shows");
    assert_eq!(d["segment.ms"].0.as_deref(), Some("99999"));
    assert_eq!(d["cleanup.policy"].0.as_deref(), Some("delete,compact"), "APPEND adds to the current list");
    let r: IncrementalAlterConfigsResponse = call_once(b.addr, ApiKey::IncrementalAlterConfigs, 1, &request(vec![op("cleanup.policy", 3, Some("delete"))]));
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(describe(&b, "inc")["cleanup.policy"].0.as_deref(), Some("compact"));
    let r: IncrementalAlterConfigsResponse = call_once(b.addr, ApiKey::IncrementalAlterConfigs, 1, &request(vec![op("segment.ms", 2, Some("5"))]));
    assert_eq!(r.responses[0].error_code, 40, "APPEND on a non-list is INVALID_CONFIG");
    let r: IncrementalAlterConfigsResponse = call_once(b.addr, ApiKey::IncrementalAlterConfigs, 1, &request(vec![op("segment.ms", 0, Some("-5"))]));
    assert_eq!(r.responses[0].error_code, 40);
}

#[test]
fn create_partitions_grows_a_topic() {
    let b = TestBroker::start();
    create(&b, "grow", 2, &[]);
    let rt = rt();
    let a = admin(&b);
    let r = rt.block_on(a.create_partitions(&[NewPartitions::new("grow", 5)], &AdminOptions::new())).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let r = rt.block_on(a.create_partitions(&[NewPartitions::new("grow", 3)], &AdminOptions::new())).unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidPartitions);
    let r = rt.block_on(a.create_partitions(&[NewPartitions::new("absent", 3)], &AdminOptions::new())).unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().1, RDKafkaErrorCode::UnknownTopicOrPartition);
    let c: BaseConsumer = config(&b).create().unwrap();
    let md = c.fetch_metadata(Some("grow"), Duration::from_secs(10)).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);
    let p: FutureProducer = config(&b).create().unwrap();
    let d = rt.block_on(p.send(FutureRecord::to("grow").partition(4).key("k").payload("new partition"), Duration::from_secs(30))).map_err(|(e, _)| e).unwrap();
    assert_eq!((d.partition, d.offset), (4, 0));
}

#[test]
fn delete_records_moves_the_low_watermark() {
    let b = TestBroker::start();
    create(&b, "trim", 1, &[]);
    let rt = rt();
    let p: FutureProducer = config(&b).set("linger.ms", "0").create().unwrap();
    rt.block_on(async {
        for i in 0..100 {
            let v = i.to_string();
            p.send(FutureRecord::to("trim").key(&v).payload(&v), Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        }
    });
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("trim", 0, Offset::Offset(40)).unwrap();
    let r = rt.block_on(admin(&b).delete_records(&tpl, &AdminOptions::new())).unwrap();
    assert_eq!(r.find_partition("trim", 0).unwrap().offset(), Offset::Offset(40));
    let mut beyond = TopicPartitionList::new();
    beyond.add_partition_offset("trim", 0, Offset::Offset(500)).unwrap();
    let r = rt.block_on(admin(&b).delete_records(&beyond, &AdminOptions::new())).unwrap();
    assert!(r.find_partition("trim", 0).unwrap().error().is_err(), "past the high watermark");

    let c: BaseConsumer = config(&b).set("group.id", "trim-test").set("enable.auto.commit", "false").create().unwrap();
    assert_eq!(c.fetch_watermarks("trim", 0, Duration::from_secs(10)).unwrap(), (40, 100));
    let mut assign = TopicPartitionList::new();
    assign.add_partition_offset("trim", 0, Offset::Beginning).unwrap();
    c.assign(&assign).unwrap();
    let first = loop {
        if let Some(m) = c.poll(Duration::from_secs(5)) {
            break m.unwrap().offset();
        }
    };
    assert_eq!(first, 40, "consumption starts at the new log start offset");
}

#[test]
fn describe_cluster_and_log_dirs() {
    let b = TestBroker::start();
    create(&b, "dirs", 2, &[]);
    let r: DescribeClusterResponse = call_once(b.addr, ApiKey::DescribeCluster, 1, &DescribeClusterRequest::default());
    assert_eq!(r.error_code, 0);
    assert_eq!(r.brokers.len(), 1);
    assert_eq!(r.brokers[0].port, b.addr.port() as i32);
    assert_eq!(r.controller_id.0, 1);
    assert_eq!(r.cluster_id.len(), 22);

    let mut all = DescribeLogDirsRequest::default();
    all.topics = None; // every topic
    let r: DescribeLogDirsResponse = call_once(b.addr, ApiKey::DescribeLogDirs, 4, &all);
    assert_eq!(r.results.len(), 1);
    let dir = &r.results[0];
    assert_eq!(dir.log_dir.as_str(), b.data_dir.display().to_string());
    assert!(dir.total_bytes > 0 && dir.usable_bytes > 0);
    let t = dir.topics.iter().find(|t| t.name.as_str() == "dirs").unwrap();
    assert_eq!(t.partitions.len(), 2);
}
