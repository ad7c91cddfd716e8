//! DescribeCluster and DescribeLogDirs.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic};
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use crate::protocol::code;
use crate::security::acl::Operation;
use crate::security::Context;

/// Like Kafka's brokers, DescribeCluster needs no permission; only the
/// authorized operations depend on DESCRIBE on the cluster. The address
/// advertised is that of the listener the request came in on.
pub fn describe_cluster(broker: &Broker, ctx: &Context, req: DescribeClusterRequest, _version: i16) -> DescribeClusterResponse {
    let mut r = DescribeClusterResponse::default();
    if req.endpoint_type > 1 {
        // Controller endpoints (2) are a KRaft-internal view Eddy does not have.
        r.error_code = code::UNSUPPORTED_ENDPOINT_TYPE;
        r.error_message = Some(StrBytes::from_static_str("only broker endpoints are described"));
        return r;
    }
    let (host, port) = broker.advertised(&ctx.listener);
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(broker.config.broker.node_id);
    b.host = StrBytes::from_string(host);
    b.port = port;
    r.endpoint_type = 1;
    r.cluster_id = StrBytes::from_string(broker.cluster_id.clone());
    r.controller_id = BrokerId(broker.config.broker.node_id);
    r.brokers = vec![b];
    r.cluster_authorized_operations = broker.cluster_operations(ctx, req.include_cluster_authorized_operations);
    r
}

pub fn describe_log_dirs(broker: &Broker, ctx: &Context, req: DescribeLogDirsRequest, _version: i16) -> DescribeLogDirsResponse {
    if !broker.authorize_cluster(ctx, Operation::Describe) {
        let mut r = DescribeLogDirsResponse::default();
        r.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        return r;
    }
    let wanted: Vec<(String, Option<Vec<i32>>)> = match req.topics {
        None => broker.topic_names().into_iter().map(|n| (n, None)).collect(),
        Some(list) => list.into_iter().map(|t| (t.topic.as_str().to_string(), Some(t.partitions))).collect(),
    };
    let mut dir = DescribeLogDirsResult::default();
    dir.error_code = code::NONE;
    dir.log_dir = StrBytes::from_string(broker.config.broker.data_dir.display().to_string());
    for (name, parts) in wanted {
        let Some(topic) = broker.topic(&name) else { continue };
        let mut t = DescribeLogDirsTopic::default();
        t.name = TopicName(StrBytes::from_string(name));
        for p in &topic.partitions {
            if parts.as_ref().is_some_and(|w| !w.contains(&p.index)) {
                continue;
            }
            let mut d = DescribeLogDirsPartition::default();
            d.partition_index = p.index;
            d.partition_size = p.log.size_bytes() as i64;
            d.offset_lag = 0;
            t.partitions.push(d);
        }
        dir.topics.push(t);
    }
    let (total, usable) = disk_space(&broker.config.broker.data_dir);
    dir.total_bytes = total;
    dir.usable_bytes = usable;
    let mut r = DescribeLogDirsResponse::default();
    r.results = vec![dir];
    r
}

/// Total and available bytes of the file system holding `path` (-1 if unknown).
fn disk_space(path: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return (-1, -1) };
    // SAFETY: statvfs fills a plain struct we own; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return (-1, -1);
        }
        ((s.f_blocks as u64 * s.f_frsize as u64) as i64, (s.f_bavail as u64 * s.f_frsize as u64) as i64)
    }
}
