//! The group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups,
//! DeleteGroups, OffsetDelete. Request and response glue around
//! `crate::group::Coordinator`.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use crate::group::consumer::{Assignment, HeartbeatArgs};
use crate::group::{ClientInfo, JoinArgs, State, TopicOffsets};
use crate::protocol::code;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Context;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// The address advertised is that of the listener the request came in on.
pub fn find_coordinator(broker: &Broker, ctx: &Context, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let (host, port) = broker.advertised(&ctx.listener);
    let node = BrokerId(broker.config.broker.node_id);
    // Key types 0 (group) and 1 (transaction): this node coordinates both,
    // for a principal that may DESCRIBE the group or transactional id.
    let outcome = |key: &str| match req.key_type {
        0 if !broker.authorize(ctx, Operation::Describe, ResourceType::Group, key) => Err((code::GROUP_AUTHORIZATION_FAILED, code::denied(code::GROUP_AUTHORIZATION_FAILED))),
        1 if !broker.authorize(ctx, Operation::Describe, ResourceType::TransactionalId, key) => Err((code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED, code::denied(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED))),
        0 | 1 => Ok(()),
        _ => Err((code::INVALID_REQUEST, "unknown coordinator key type")),
    };
    let mut r = FindCoordinatorResponse::default();
    if version >= 4 {
        r.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let mut c = CoordinatorEntry::default();
                c.key = k.clone();
                match outcome(k.as_str()) {
                    Ok(()) => {
                        c.node_id = node;
                        c.host = s(&host);
                        c.port = port;
                    }
                    Err((error, message)) => {
                        c.error_code = error;
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        c.error_message = Some(s(message));
                    }
                }
                c
            })
            .collect();
    } else {
        match outcome(req.key.as_str()) {
            Ok(()) => {
                r.node_id = node;
                r.host = s(&host);
                r.port = port;
            }
            Err((error, message)) => {
                r.error_code = error;
                r.node_id = BrokerId(-1);
                r.port = -1;
                r.error_message = Some(s(message));
            }
        }
    }
    r
}

/// Whether the principal may READ the group (join, sync, heartbeat, leave, commit).
fn may_read(broker: &Broker, ctx: &Context, group: &str) -> bool {
    broker.authorize(ctx, Operation::Read, ResourceType::Group, group)
}

pub async fn join(broker: &Broker, ctx: &Context, req: JoinGroupRequest, version: i16, client: ClientInfo) -> JoinGroupResponse {
    if !may_read(broker, ctx, req.group_id.as_str()) {
        let mut r = JoinGroupResponse::default();
        r.error_code = code::GROUP_AUTHORIZATION_FAILED;
        r.generation_id = -1;
        r.protocol_name = if version >= 7 { None } else { Some(s("")) };
        return r;
    }
    let args = JoinArgs {
        group_id: req.group_id.as_str().to_string(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        member_id: req.member_id.as_str().to_string(),
        instance_id: req.group_instance_id.as_ref().map(|x| x.as_str().to_string()),
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req.protocols.iter().map(|p| (p.name.as_str().to_string(), p.metadata.clone())).collect(),
        version,
    };
    let res = broker.groups.join(args, client).await;
    let mut r = JoinGroupResponse::default();
    r.error_code = res.error;
    r.generation_id = res.generation;
    r.protocol_type = res.protocol_type.as_deref().map(s);
    // Before v7 the protocol name is not nullable.
    r.protocol_name = Some(s(res.protocol.as_deref().unwrap_or("")));
    r.leader = s(&res.leader);
    r.member_id = s(&res.member_id);
    r.skip_assignment = res.skip_assignment;
    r.members = res
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = s(&id);
            m.group_instance_id = instance.as_deref().map(s);
            m.metadata = metadata;
            m
        })
        .collect();
    r
}

pub async fn sync(broker: &Broker, ctx: &Context, req: SyncGroupRequest, _version: i16) -> SyncGroupResponse {
    if !may_read(broker, ctx, req.group_id.as_str()) {
        let mut r = SyncGroupResponse::default();
        r.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    let assignments = req.assignments.iter().map(|a| (a.member_id.as_str().to_string(), a.assignment.clone())).collect();
    let res = broker
        .groups
        .sync(
            req.group_id.as_str(),
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
            req.protocol_type.as_deref(),
            req.protocol_name.as_deref(),
            assignments,
        )
        .await;
    let mut r = SyncGroupResponse::default();
    r.error_code = res.error;
    r.protocol_type = res.protocol_type.as_deref().map(s);
    r.protocol_name = res.protocol.as_deref().map(s);
    r.assignment = res.assignment;
    r
}

pub fn heartbeat(broker: &Broker, ctx: &Context, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let mut r = HeartbeatResponse::default();
    if !may_read(broker, ctx, req.group_id.as_str()) {
        r.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    r.error_code = broker.groups.heartbeat(req.group_id.as_str(), req.generation_id, req.member_id.as_str(), req.group_instance_id.as_deref());
    r
}

pub fn leave(broker: &Broker, ctx: &Context, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let mut r = LeaveGroupResponse::default();
    if !may_read(broker, ctx, req.group_id.as_str()) {
        r.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    if version < 3 {
        r.error_code = broker.groups.leave(req.group_id.as_str(), req.member_id.as_str(), None);
        return r;
    }
    for m in &req.members {
        let mut mr = MemberResponse::default();
        mr.member_id = m.member_id.clone();
        mr.group_instance_id = m.group_instance_id.clone();
        mr.error_code = broker.groups.leave(req.group_id.as_str(), m.member_id.as_str(), m.group_instance_id.as_deref());
        r.members.push(mr);
    }
    r
}

pub async fn offset_commit(broker: &Broker, ctx: &Context, req: OffsetCommitRequest, version: i16) -> OffsetCommitResponse {
    // READ on the group, then on each topic: what is denied is not committed.
    let group_denied = !may_read(broker, ctx, req.group_id.as_str());
    let mut parts = Vec::new();
    let mut shape = Vec::new();
    for t in &req.topics {
        let name = if version >= 10 { broker.topic_by_id(t.topic_id).map(|x| x.name.clone()).unwrap_or_default() } else { t.name.as_str().to_string() };
        // v10 names topics by id: an unknown id has no name to ask about.
        let denied = if group_denied {
            Some(code::GROUP_AUTHORIZATION_FAILED)
        } else {
            (!name.is_empty() && !broker.authorize(ctx, Operation::Read, ResourceType::Topic, &name)).then_some(code::TOPIC_AUTHORIZATION_FAILED)
        };
        let mut idx = Vec::new();
        for p in &t.partitions {
            idx.push(p.partition_index);
            if denied.is_some() {
                continue;
            }
            parts.push(crate::group::CommitPart {
                topic: name.clone(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.as_str().to_string()),
            });
        }
        shape.push((t.name.clone(), t.topic_id, idx, denied));
    }
    let generation = req.generation_id_or_member_epoch;
    let errors = if parts.is_empty() {
        Vec::new()
    } else {
        broker.groups.commit(req.group_id.as_str(), generation, req.member_id.as_str(), req.group_instance_id.as_deref(), parts, |topic, p| broker.partition(topic, p).is_some()).await
    };
    let mut r = OffsetCommitResponse::default();
    let mut it = errors.into_iter();
    for (name, id, idx, denied) in shape {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = name;
        tr.topic_id = id;
        // v10 names topics by id: an id we do not know is UNKNOWN_TOPIC_ID.
        let unknown_id = version >= 10 && broker.topic_by_id(id).is_none();
        for p in idx {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p;
            let e = match denied {
                Some(denied) => denied,
                None => it.next().unwrap_or(code::NONE),
            };
            pr.error_code = if unknown_id && e == code::UNKNOWN_TOPIC_OR_PARTITION { code::UNKNOWN_TOPIC_ID } else { e };
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

/// A group's committed offsets as the principal may see them (OffsetFetch):
/// Err when it may not DESCRIBE the group; topics it may not DESCRIBE are
/// left out of an all-topics answer and answered TOPIC_AUTHORIZATION_FAILED
/// when named. Each topic comes with its error code.
fn visible_offsets(broker: &Broker, ctx: &Context, group: &str, wanted: Option<Vec<(String, Vec<i32>)>>) -> Result<Vec<(TopicOffsets, i16)>, i16> {
    if !broker.authorize(ctx, Operation::Describe, ResourceType::Group, group) {
        return Err(code::GROUP_AUTHORIZATION_FAILED);
    }
    // An empty name (an unknown topic id) has nothing to ask about.
    let may = |t: &str| t.is_empty() || broker.authorize(ctx, Operation::Describe, ResourceType::Topic, t);
    let Some(list) = wanted else {
        return Ok(broker.groups.fetch_offsets(group, None).into_iter().filter(|(t, _)| may(t)).map(|t| (t, code::NONE)).collect());
    };
    let (allowed, denied): (Vec<_>, Vec<_>) = list.into_iter().partition(|(t, _)| may(t));
    let mut out: Vec<(TopicOffsets, i16)> = broker.groups.fetch_offsets(group, Some(allowed)).into_iter().map(|t| (t, code::NONE)).collect();
    out.extend(denied.into_iter().map(|(t, ps)| ((t, ps.into_iter().map(|p| (p, None)).collect()), code::TOPIC_AUTHORIZATION_FAILED)));
    Ok(out)
}

/// One partition of an OffsetFetch answer (the two layouts, before and
/// from v8, have the same fields).
macro_rules! offset_partition {
    ($ty:ty, $p:expr, $c:expr, $error:expr) => {{
        let c: &Option<crate::group::Committed> = $c;
        let mut pr = <$ty>::default();
        pr.partition_index = $p;
        pr.error_code = $error;
        pr.committed_offset = c.as_ref().map_or(-1, |c| c.offset);
        pr.committed_leader_epoch = c.as_ref().map_or(-1, |c| c.leader_epoch);
        pr.metadata = Some(s(c.as_ref().map_or("", |c| c.metadata.as_str())));
        pr
    }};
}

pub fn offset_fetch(broker: &Broker, ctx: &Context, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut r = OffsetFetchResponse::default();
    if version >= 8 {
        for g in &req.groups {
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| {
                        let name = if version >= 10 { broker.topic_by_id(t.topic_id).map(|x| x.name.clone()).unwrap_or_default() } else { t.name.as_str().to_string() };
                        (name, t.partition_indexes.clone())
                    })
                    .collect()
            });
            let mut gr = OffsetFetchResponseGroup::default();
            gr.group_id = g.group_id.clone();
            let unstable = unstable(broker, req.require_stable, g.group_id.as_str());
            match visible_offsets(broker, ctx, g.group_id.as_str(), wanted) {
                Err(e) => gr.error_code = e,
                Ok(topics) => {
                    for ((topic, parts), error) in topics {
                        let mut tr = OffsetFetchResponseTopics::default();
                        tr.topic_id = broker.topic(&topic).map(|t| t.id).unwrap_or_default();
                        tr.name = TopicName(s(&topic));
                        let waiting = |p: i32| unstable.iter().any(|(t, q)| *t == topic && *q == p);
                        tr.partitions = parts.iter().map(|(p, c)| if waiting(*p) { offset_partition!(OffsetFetchResponsePartitions, *p, &None, code::UNSTABLE_OFFSET_COMMIT) } else { offset_partition!(OffsetFetchResponsePartitions, *p, c, error) }).collect();
                        gr.topics.push(tr);
                    }
                }
            }
            r.groups.push(gr);
        }
        return r;
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone())).collect());
    let topics = match visible_offsets(broker, ctx, req.group_id.as_str(), wanted.clone()) {
        Ok(topics) => topics,
        Err(e) => {
            // v2+ carry it at the top; every version in each partition asked for.
            r.error_code = e;
            wanted.unwrap_or_default().into_iter().map(|(t, ps)| ((t, ps.into_iter().map(|p| (p, None)).collect()), e)).collect()
        }
    };
    let unstable = unstable(broker, version >= 7 && req.require_stable, req.group_id.as_str());
    for ((topic, parts), error) in topics {
        let mut tr = OffsetFetchResponseTopic::default();
        tr.name = TopicName(s(&topic));
        let waiting = |p: i32| unstable.iter().any(|(t, q)| *t == topic && *q == p);
        tr.partitions = parts.iter().map(|(p, c)| if waiting(*p) { offset_partition!(OffsetFetchResponsePartition, *p, &None, code::UNSTABLE_OFFSET_COMMIT) } else { offset_partition!(OffsetFetchResponsePartition, *p, c, error) }).collect();
        r.topics.push(tr);
    }
    r
}

/// With `require_stable` (a read_committed consumer, OffsetFetch v7+): the
/// group's partitions whose offsets wait in an unfinished transaction, which
/// are answered UNSTABLE_OFFSET_COMMIT (the client asks again) rather than
/// with the offset committed before (KIP-447).
fn unstable(broker: &Broker, require_stable: bool, group: &str) -> std::collections::BTreeSet<(String, i32)> {
    if require_stable {
        broker.txns.pending_offsets_of(group)
    } else {
        Default::default()
    }
}

pub fn describe_groups(broker: &Broker, ctx: &Context, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    for id in &req.groups {
        let mut d = DescribedGroup::default();
        d.group_id = id.clone();
        if !broker.authorize(ctx, Operation::Describe, ResourceType::Group, id.as_str()) {
            d.error_code = code::GROUP_AUTHORIZATION_FAILED;
            d.authorized_operations = i32::MIN;
            r.groups.push(d);
            continue;
        }
        d.authorized_operations = broker.authorized_operations(ctx, req.include_authorized_operations, ResourceType::Group, id.as_str());
        match broker.groups.describe(id.as_str()) {
            None => {
                d.group_state = s(State::Dead.name());
                if version >= 6 {
                    d.error_code = code::GROUP_ID_NOT_FOUND;
                    d.error_message = Some(s("no such group"));
                }
            }
            Some(g) => {
                d.group_state = s(g.state);
                d.protocol_type = s(&g.protocol_type);
                d.protocol_data = s(&g.protocol);
                d.members = g
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = s(&m.member_id);
                        dm.group_instance_id = m.instance_id.as_deref().map(s);
                        dm.client_id = s(&m.client_id);
                        dm.client_host = s(&m.client_host);
                        dm.member_metadata = m.metadata;
                        dm.member_assignment = m.assignment;
                        dm
                    })
                    .collect();
            }
        }
        r.groups.push(d);
    }
    r
}

pub fn list_groups(broker: &Broker, ctx: &Context, req: ListGroupsRequest, _version: i16) -> ListGroupsResponse {
    let mut r = ListGroupsResponse::default();
    // DESCRIBE on the cluster lists every group; else those it may DESCRIBE.
    let every = broker.authorize_cluster(ctx, Operation::Describe);
    let states: Vec<String> = req.states_filter.iter().map(|x| x.as_str().to_ascii_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|x| x.as_str().to_ascii_lowercase()).collect();
    for (id, state, protocol_type, group_type) in broker.groups.list() {
        if !states.is_empty() && !states.contains(&state.to_ascii_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t == group_type) {
            continue;
        }
        if !every && !broker.authorize(ctx, Operation::Describe, ResourceType::Group, &id) {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(s(&id));
        g.protocol_type = s(&protocol_type);
        g.group_state = s(state);
        g.group_type = s(group_type);
        r.groups.push(g);
    }
    r
}

pub fn delete_groups(broker: &Broker, ctx: &Context, req: DeleteGroupsRequest, _version: i16) -> DeleteGroupsResponse {
    let mut r = DeleteGroupsResponse::default();
    for id in &req.groups_names {
        let mut d = kafka_protocol::messages::delete_groups_response::DeletableGroupResult::default();
        d.group_id = id.clone();
        d.error_code = if broker.authorize(ctx, Operation::Delete, ResourceType::Group, id.as_str()) { broker.groups.delete_group(id.as_str()) } else { code::GROUP_AUTHORIZATION_FAILED };
        r.results.push(d);
    }
    r
}

pub fn offset_delete(broker: &Broker, ctx: &Context, req: OffsetDeleteRequest, _version: i16) -> OffsetDeleteResponse {
    let mut r = OffsetDeleteResponse::default();
    if !broker.authorize(ctx, Operation::Delete, ResourceType::Group, req.group_id.as_str()) {
        r.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    // READ on each topic; the offsets of denied topics are kept.
    let readable: Vec<bool> = req.topics.iter().map(|t| broker.authorize(ctx, Operation::Read, ResourceType::Topic, t.name.as_str())).collect();
    let parts: Vec<(String, i32)> = req.topics.iter().zip(&readable).filter(|(_, ok)| **ok).flat_map(|(t, _)| t.partitions.iter().map(move |p| (t.name.as_str().to_string(), p.partition_index))).collect();
    let (error, errors) = broker.groups.delete_offsets(req.group_id.as_str(), &parts);
    r.error_code = error;
    let mut it = errors.into_iter();
    for (t, readable) in req.topics.iter().zip(readable) {
        let mut tr = OffsetDeleteResponseTopic::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = OffsetDeleteResponsePartition::default();
            pr.partition_index = p.partition_index;
            if !readable {
                pr.error_code = code::TOPIC_AUTHORIZATION_FAILED;
                tr.partitions.push(pr);
                continue;
            }
            let e = it.next().unwrap_or(code::NONE);
            pr.error_code = if broker.partition(t.name.as_str(), p.partition_index).is_none() { code::UNKNOWN_TOPIC_OR_PARTITION } else { e };
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

fn topic_partitions(broker: &Broker, a: &Assignment) -> Vec<consumer_group_heartbeat_response::TopicPartitions> {
    let _ = broker;
    a.iter()
        .map(|(id, ps)| {
            let mut t = consumer_group_heartbeat_response::TopicPartitions::default();
            t.topic_id = *id;
            t.partitions = ps.iter().copied().collect();
            t
        })
        .collect()
}

pub fn consumer_heartbeat(broker: &Broker, ctx: &Context, req: ConsumerGroupHeartbeatRequest, _version: i16, client: ClientInfo) -> ConsumerGroupHeartbeatResponse {
    // READ on the group; a subscription may only name topics the principal may DESCRIBE.
    let denied = if !may_read(broker, ctx, req.group_id.as_str()) {
        Some((code::GROUP_AUTHORIZATION_FAILED, code::denied(code::GROUP_AUTHORIZATION_FAILED)))
    } else if req.subscribed_topic_names.iter().flatten().any(|t| !broker.authorize(ctx, Operation::Describe, ResourceType::Topic, t.as_str())) {
        Some((code::TOPIC_AUTHORIZATION_FAILED, "The subscription names topics the principal may not describe."))
    } else {
        None
    };
    if let Some((error, message)) = denied {
        let mut r = ConsumerGroupHeartbeatResponse::default();
        r.error_code = error;
        r.error_message = Some(s(message));
        return r;
    }
    let args = HeartbeatArgs {
        group_id: req.group_id.as_str().to_string(),
        member_id: req.member_id.as_str().to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|x| x.as_str().to_string()),
        rack_id: req.rack_id.as_ref().map(|x| x.as_str().to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed: req.subscribed_topic_names.as_ref().map(|ts| ts.iter().map(|t| t.as_str().to_string()).collect()),
        regex: req.subscribed_topic_regex.as_ref().map(|x| x.as_str().to_string()),
        assignor: req.server_assignor.as_ref().map(|x| x.as_str().to_string()),
        owned: req.topic_partitions.as_ref().map(|tps| tps.iter().map(|t| (t.topic_id, t.partitions.iter().copied().collect())).collect()),
    };
    let lookup = |name: &str| broker.topic(name).filter(|t| !Broker::is_internal(&t.name)).map(|t| (t.id, t.partitions.len() as i32));
    let res = broker.groups.consumer_heartbeat(args, client, &lookup);
    let mut r = ConsumerGroupHeartbeatResponse::default();
    r.error_code = res.error;
    r.error_message = res.message.as_deref().map(s);
    r.member_id = res.member_id.as_deref().map(s);
    r.member_epoch = res.member_epoch;
    r.heartbeat_interval_ms = res.heartbeat_interval_ms;
    r.assignment = res.assignment.as_ref().map(|a| {
        let mut x = consumer_group_heartbeat_response::Assignment::default();
        x.topic_partitions = topic_partitions(broker, a);
        x
    });
    r
}

pub fn consumer_describe(broker: &Broker, ctx: &Context, req: ConsumerGroupDescribeRequest, _version: i16) -> ConsumerGroupDescribeResponse {
    let mut r = ConsumerGroupDescribeResponse::default();
    for id in &req.group_ids {
        let mut d = consumer_group_describe_response::DescribedGroup::default();
        d.group_id = id.clone();
        if !broker.authorize(ctx, Operation::Describe, ResourceType::Group, id.as_str()) {
            d.error_code = code::GROUP_AUTHORIZATION_FAILED;
            d.error_message = Some(s(code::denied(code::GROUP_AUTHORIZATION_FAILED)));
            d.authorized_operations = i32::MIN;
            r.groups.push(d);
            continue;
        }
        d.authorized_operations = broker.authorized_operations(ctx, req.include_authorized_operations, ResourceType::Group, id.as_str());
        match broker.groups.describe_consumer(id.as_str()) {
            None => {
                d.error_code = code::GROUP_ID_NOT_FOUND;
                d.error_message = Some(s("no such consumer group"));
                d.group_state = s("Dead");
            }
            Some(v) => {
                d.group_state = s(v.state);
                d.group_epoch = v.epoch;
                d.assignment_epoch = v.assignment_epoch;
                d.assignor_name = s(&v.assignor);
                let named = |a: &Assignment| {
                    let mut x = consumer_group_describe_response::Assignment::default();
                    x.topic_partitions = a
                        .iter()
                        .map(|(tid, ps)| {
                            let mut t = consumer_group_describe_response::TopicPartitions::default();
                            t.topic_id = *tid;
                            t.topic_name = TopicName(s(&broker.topic_by_id(*tid).map(|t| t.name.clone()).unwrap_or_default()));
                            t.partitions = ps.iter().copied().collect();
                            t
                        })
                        .collect();
                    x
                };
                d.members = v
                    .members
                    .iter()
                    .map(|m| {
                        let mut dm = consumer_group_describe_response::Member::default();
                        dm.member_id = s(&m.member_id);
                        dm.instance_id = m.instance_id.as_deref().map(s);
                        dm.rack_id = m.rack_id.as_deref().map(s);
                        dm.member_epoch = m.epoch;
                        dm.client_id = s(&m.client_id);
                        dm.client_host = s(&m.client_host);
                        dm.subscribed_topic_names = m.subscribed.iter().map(|t| TopicName(s(t))).collect();
                        dm.assignment = named(&m.assigned);
                        dm.target_assignment = named(&m.target);
                        dm.member_type = 1; // consumer protocol (not upgraded from classic)
                        dm
                    })
                    .collect();
            }
        }
        r.groups.push(d);
    }
    r
}
