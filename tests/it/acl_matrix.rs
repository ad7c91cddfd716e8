//! Every API against a user without rights, by hand-built requests: the
//! exact error codes and where Kafka puts them (per partition, per topic,
//! per group, at the top), listings that leave out what may not be seen,
//! then partial grants (the group but not the topic).

use std::net::TcpStream;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::acl::{acl_broker, create_acls, create_alice, session, ALICE, ALICE_PASSWORD};
use crate::security::{ADMIN, ADMIN_PASSWORD};
use crate::wire_support::call;

const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const CLUSTER_DENIED: i16 = 31;
const TXN_DENIED: i16 = 53;

fn n(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic(s: &str) -> TopicName {
    TopicName(n(s))
}

fn group(s: &str) -> GroupId {
    GroupId(n(s))
}

fn txn(s: &str) -> TransactionalId {
    TransactionalId(n(s))
}

fn commit_request(group_id: &str, t: &str) -> OffsetCommitRequest {
    let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
    p.committed_offset = 1;
    let mut tp = offset_commit_request::OffsetCommitRequestTopic::default();
    tp.name = topic(t);
    tp.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = group(group_id);
    r.generation_id_or_member_epoch = -1;
    r.topics = vec![tp];
    r
}

/// OffsetFetch v8 of one group: `topics` None asks for all.
fn fetch_offsets(s: &mut TcpStream, group_id: &str, topics: Option<&[&str]>) -> offset_fetch_response::OffsetFetchResponseGroup {
    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
    g.group_id = group(group_id);
    g.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| {
                let mut x = offset_fetch_request::OffsetFetchRequestTopics::default();
                x.name = topic(t);
                x.partition_indexes = vec![0];
                x
            })
            .collect()
    });
    let mut r = OffsetFetchRequest::default();
    r.groups = vec![g];
    let mut resp: OffsetFetchResponse = call(s, ApiKey::OffsetFetch, 8, &r);
    resp.groups.remove(0)
}

fn txn_offset_commit(s: &mut TcpStream, t: &str) -> i16 {
    let mut p = txn_offset_commit_request::TxnOffsetCommitRequestPartition::default();
    p.committed_offset = 1;
    let mut tp = txn_offset_commit_request::TxnOffsetCommitRequestTopic::default();
    tp.name = topic(t);
    tp.partitions = vec![p];
    let mut r = TxnOffsetCommitRequest::default();
    r.transactional_id = txn("tx");
    r.group_id = group("g");
    r.producer_id = ProducerId(0);
    r.topics = vec![tp];
    let resp: TxnOffsetCommitResponse = call(s, ApiKey::TxnOffsetCommit, 3, &r);
    resp.topics[0].partitions[0].error_code
}

fn init_producer(s: &mut TcpStream, id: Option<&str>) -> InitProducerIdResponse {
    let mut r = InitProducerIdRequest::default();
    r.transactional_id = id.map(txn);
    r.transaction_timeout_ms = 60_000;
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    call(s, ApiKey::InitProducerId, 4, &r)
}

fn list_groups(s: &mut TcpStream) -> Vec<String> {
    let r: ListGroupsResponse = call(s, ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    r.groups.iter().map(|g| g.group_id.to_string()).collect()
}

fn list_transactions(s: &mut TcpStream) -> Vec<String> {
    let r: ListTransactionsResponse = call(s, ApiKey::ListTransactions, 0, &ListTransactionsRequest::default());
    r.transaction_states.iter().map(|t| t.transactional_id.to_string()).collect()
}

#[test]
fn every_api_answers_a_user_without_rights_with_kafkas_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let b = acl_broker(tmp.path());
    let mut admin = session(&b, ADMIN, ADMIN_PASSWORD);
    create_alice(&mut admin);
    // The admin makes what alice will be refused: topic t, group g with a
    // committed offset, transactional id tx.
    let mut ct = CreateTopicsRequest::default();
    let mut nt = create_topics_request::CreatableTopic::default();
    nt.name = topic("t");
    nt.num_partitions = 1;
    nt.replication_factor = 1;
    ct.topics = vec![nt];
    let r: CreateTopicsResponse = call(&mut admin, ApiKey::CreateTopics, 7, &ct);
    assert_eq!(r.topics[0].error_code, 0);
    let r: OffsetCommitResponse = call(&mut admin, ApiKey::OffsetCommit, 8, &commit_request("g", "t"));
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(init_producer(&mut admin, Some("tx")).error_code, 0);
    assert_eq!(list_groups(&mut admin), ["g"]);
    assert_eq!(list_transactions(&mut admin), ["tx"]);

    let mut s = session(&b, ALICE, ALICE_PASSWORD);
    let s = &mut s;

    // Topics.
    let mut lo = ListOffsetsRequest::default();
    let mut lt = list_offsets_request::ListOffsetsTopic::default();
    lt.name = topic("t");
    lt.partitions = vec![list_offsets_request::ListOffsetsPartition::default()];
    lo.topics = vec![lt];
    let r: ListOffsetsResponse = call(s, ApiKey::ListOffsets, 7, &lo);
    assert_eq!(r.topics[0].partitions[0].error_code, TOPIC_DENIED);
    let mut dt = DeleteTopicsRequest::default();
    dt.topic_names = vec![topic("t"), topic("nope")];
    let r: DeleteTopicsResponse = call(s, ApiKey::DeleteTopics, 5, &dt);
    assert_eq!(r.responses.iter().map(|x| x.error_code).collect::<Vec<_>>(), [TOPIC_DENIED, TOPIC_DENIED], "existence is not disclosed");
    let mut cp = CreatePartitionsRequest::default();
    let mut cpt = create_partitions_request::CreatePartitionsTopic::default();
    cpt.name = topic("t");
    cpt.count = 2;
    cpt.assignments = None;
    cp.topics = vec![cpt];
    let r: CreatePartitionsResponse = call(s, ApiKey::CreatePartitions, 3, &cp);
    assert_eq!(r.results[0].error_code, TOPIC_DENIED);
    let mut dr = DeleteRecordsRequest::default();
    let mut drt = delete_records_request::DeleteRecordsTopic::default();
    drt.name = topic("t");
    drt.partitions = vec![delete_records_request::DeleteRecordsPartition::default()];
    dr.topics = vec![drt];
    let r: DeleteRecordsResponse = call(s, ApiKey::DeleteRecords, 2, &dr);
    assert_eq!(r.topics[0].partitions[0].error_code, TOPIC_DENIED);
    let mut dp = DescribeProducersRequest::default();
    let mut dpt = describe_producers_request::TopicRequest::default();
    dpt.name = topic("t");
    dpt.partition_indexes = vec![0];
    dp.topics = vec![dpt];
    let r: DescribeProducersResponse = call(s, ApiKey::DescribeProducers, 0, &dp);
    assert_eq!(r.topics[0].partitions[0].error_code, TOPIC_DENIED);

    // Configs: a topic's need rights on the topic, the broker's on the cluster.
    let mut dc = DescribeConfigsRequest::default();
    for (rt, name) in [(2, "t"), (4, "1")] {
        let mut x = describe_configs_request::DescribeConfigsResource::default();
        x.resource_type = rt;
        x.resource_name = n(name);
        x.configuration_keys = None;
        dc.resources.push(x);
    }
    let r: DescribeConfigsResponse = call(s, ApiKey::DescribeConfigs, 4, &dc);
    assert_eq!(r.results.iter().map(|x| (x.error_code, x.configs.len())).collect::<Vec<_>>(), [(TOPIC_DENIED, 0), (CLUSTER_DENIED, 0)]);
    let mut ac = AlterConfigsRequest::default();
    for (rt, name) in [(2, "t"), (4, "1")] {
        let mut x = alter_configs_request::AlterConfigsResource::default();
        x.resource_type = rt;
        x.resource_name = n(name);
        ac.resources.push(x);
    }
    let r: AlterConfigsResponse = call(s, ApiKey::AlterConfigs, 2, &ac);
    assert_eq!(r.responses.iter().map(|x| x.error_code).collect::<Vec<_>>(), [TOPIC_DENIED, CLUSTER_DENIED]);
    let mut ic = IncrementalAlterConfigsRequest::default();
    let mut icr = incremental_alter_configs_request::AlterConfigsResource::default();
    icr.resource_type = 2;
    icr.resource_name = n("t");
    ic.resources = vec![icr];
    let r: IncrementalAlterConfigsResponse = call(s, ApiKey::IncrementalAlterConfigs, 1, &ic);
    assert_eq!(r.responses[0].error_code, TOPIC_DENIED);

    // Groups.
    let mut fc = FindCoordinatorRequest::default();
    fc.key_type = 0;
    fc.coordinator_keys = vec![n("g")];
    let r: FindCoordinatorResponse = call(s, ApiKey::FindCoordinator, 4, &fc);
    assert_eq!((r.coordinators[0].error_code, r.coordinators[0].node_id.0), (GROUP_DENIED, -1));
    fc.key_type = 1;
    fc.coordinator_keys = vec![n("tx")];
    let r: FindCoordinatorResponse = call(s, ApiKey::FindCoordinator, 4, &fc);
    assert_eq!(r.coordinators[0].error_code, TXN_DENIED);
    let mut fc3 = FindCoordinatorRequest::default();
    fc3.key = n("g");
    let r: FindCoordinatorResponse = call(s, ApiKey::FindCoordinator, 3, &fc3);
    assert_eq!(r.error_code, GROUP_DENIED);
    let mut sg = SyncGroupRequest::default();
    sg.group_id = group("g");
    let r: SyncGroupResponse = call(s, ApiKey::SyncGroup, 5, &sg);
    assert_eq!(r.error_code, GROUP_DENIED);
    let mut hb = HeartbeatRequest::default();
    hb.group_id = group("g");
    let r: HeartbeatResponse = call(s, ApiKey::Heartbeat, 4, &hb);
    assert_eq!(r.error_code, GROUP_DENIED);
    let mut lg = LeaveGroupRequest::default();
    lg.group_id = group("g");
    lg.members = vec![leave_group_request::MemberIdentity::default()];
    let r: LeaveGroupResponse = call(s, ApiKey::LeaveGroup, 5, &lg);
    assert_eq!(r.error_code, GROUP_DENIED);
    let r: OffsetCommitResponse = call(s, ApiKey::OffsetCommit, 8, &commit_request("g", "t"));
    assert_eq!(r.topics[0].partitions[0].error_code, GROUP_DENIED);
    assert_eq!(fetch_offsets(s, "g", None).error_code, GROUP_DENIED);
    let mut of7 = OffsetFetchRequest::default();
    of7.group_id = group("g");
    let mut oft = offset_fetch_request::OffsetFetchRequestTopic::default();
    oft.name = topic("t");
    oft.partition_indexes = vec![0];
    of7.topics = Some(vec![oft]);
    let r: OffsetFetchResponse = call(s, ApiKey::OffsetFetch, 7, &of7);
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code, r.topics[0].partitions[0].committed_offset), (GROUP_DENIED, GROUP_DENIED, -1));
    let mut dg = DescribeGroupsRequest::default();
    dg.groups = vec![group("g")];
    dg.include_authorized_operations = true;
    let r: DescribeGroupsResponse = call(s, ApiKey::DescribeGroups, 5, &dg);
    assert_eq!((r.groups[0].error_code, r.groups[0].members.len()), (GROUP_DENIED, 0));
    assert_eq!(list_groups(s), Vec::<String>::new(), "ListGroups shows only groups alice may describe");
    let mut xg = DeleteGroupsRequest::default();
    xg.groups_names = vec![group("g")];
    let r: DeleteGroupsResponse = call(s, ApiKey::DeleteGroups, 2, &xg);
    assert_eq!(r.results[0].error_code, GROUP_DENIED);
    let mut od = OffsetDeleteRequest::default();
    od.group_id = group("g");
    let r: OffsetDeleteResponse = call(s, ApiKey::OffsetDelete, 0, &od);
    assert_eq!(r.error_code, GROUP_DENIED);
    let mut ch = ConsumerGroupHeartbeatRequest::default();
    ch.group_id = group("g");
    ch.member_epoch = 0;
    ch.subscribed_topic_names = Some(vec![topic("t")]);
    let r: ConsumerGroupHeartbeatResponse = call(s, ApiKey::ConsumerGroupHeartbeat, 0, &ch);
    assert_eq!(r.error_code, GROUP_DENIED);
    let mut cd = ConsumerGroupDescribeRequest::default();
    cd.group_ids = vec![group("g")];
    let r: ConsumerGroupDescribeResponse = call(s, ApiKey::ConsumerGroupDescribe, 0, &cd);
    assert_eq!(r.groups[0].error_code, GROUP_DENIED);

    // Transactions.
    assert_eq!(init_producer(s, Some("tx")).error_code, TXN_DENIED);
    let mut ap = AddPartitionsToTxnRequest::default();
    ap.v3_and_below_transactional_id = txn("tx");
    let mut apt = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
    apt.name = topic("t");
    apt.partitions = vec![0];
    ap.v3_and_below_topics = vec![apt];
    let r: AddPartitionsToTxnResponse = call(s, ApiKey::AddPartitionsToTxn, 3, &ap);
    assert_eq!(r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, TXN_DENIED);
    let r: AddPartitionsToTxnResponse = call(s, ApiKey::AddPartitionsToTxn, 4, &AddPartitionsToTxnRequest::default());
    assert_eq!(r.error_code, CLUSTER_DENIED, "v4 is for brokers: CLUSTER_ACTION");
    let mut ao = AddOffsetsToTxnRequest::default();
    ao.transactional_id = txn("tx");
    ao.group_id = group("g");
    let r: AddOffsetsToTxnResponse = call(s, ApiKey::AddOffsetsToTxn, 3, &ao);
    assert_eq!(r.error_code, TXN_DENIED);
    let mut et = EndTxnRequest::default();
    et.transactional_id = txn("tx");
    let r: EndTxnResponse = call(s, ApiKey::EndTxn, 3, &et);
    assert_eq!(r.error_code, TXN_DENIED);
    assert_eq!(txn_offset_commit(s, "t"), TXN_DENIED);
    let mut dtx = DescribeTransactionsRequest::default();
    dtx.transactional_ids = vec![txn("tx")];
    let r: DescribeTransactionsResponse = call(s, ApiKey::DescribeTransactions, 0, &dtx);
    assert_eq!(r.transaction_states[0].error_code, TXN_DENIED);
    assert_eq!(list_transactions(s), Vec::<String>::new());

    // The cluster.
    let r: DescribeLogDirsResponse = call(s, ApiKey::DescribeLogDirs, 4, &DescribeLogDirsRequest::default());
    assert_eq!((r.error_code, r.results.len()), (CLUSTER_DENIED, 0));
    let r: DescribeUserScramCredentialsResponse = call(s, ApiKey::DescribeUserScramCredentials, 0, &DescribeUserScramCredentialsRequest::default());
    assert_eq!((r.error_code, r.results.len()), (CLUSTER_DENIED, 0));
    let mut au = AlterUserScramCredentialsRequest::default();
    au.upsertions = vec![crate::security::upsertion(ALICE, 1, "new"), crate::security::upsertion(ALICE, 2, "new")];
    let r: AlterUserScramCredentialsResponse = call(s, ApiKey::AlterUserScramCredentials, 0, &au);
    assert_eq!(r.results.iter().map(|u| (u.user.to_string(), u.error_code)).collect::<Vec<_>>(), [(ALICE.to_string(), CLUSTER_DENIED)]);
    // Client quotas: DESCRIBE_CONFIGS / ALTER_CONFIGS on the cluster.
    let r: DescribeClientQuotasResponse = call(s, ApiKey::DescribeClientQuotas, 1, &DescribeClientQuotasRequest::default());
    assert_eq!((r.error_code, r.entries.is_none()), (CLUSTER_DENIED, true));
    let mut aq = AlterClientQuotasRequest::default();
    let mut entity = alter_client_quotas_request::EntityData::default();
    entity.entity_type = n("user");
    let mut op = alter_client_quotas_request::OpData::default();
    op.key = n("producer_byte_rate");
    op.value = 1024.0;
    let mut entry = alter_client_quotas_request::EntryData::default();
    entry.entity = vec![entity];
    entry.ops = vec![op];
    aq.entries = vec![entry];
    let r: AlterClientQuotasResponse = call(s, ApiKey::AlterClientQuotas, 1, &aq);
    assert_eq!(r.entries.iter().map(|e| e.error_code).collect::<Vec<_>>(), [CLUSTER_DENIED]);
    let mut dcl = DescribeClusterRequest::default();
    dcl.include_cluster_authorized_operations = true;
    let r: DescribeClusterResponse = call(s, ApiKey::DescribeCluster, 1, &dcl);
    assert_eq!((r.error_code, r.cluster_authorized_operations, r.brokers.len()), (0, 0, 1), "DescribeCluster needs no right, as on Kafka's brokers");

    // The group but not the topic: commits and fetches of the topic are refused, the rest works.
    assert_eq!(create_acls(&mut admin, &[(3, "g", 3, "User:alice", 3, 3), (5, "tx", 3, "User:alice", 4, 3)]), [0, 0]);
    let r: OffsetCommitResponse = call(s, ApiKey::OffsetCommit, 8, &commit_request("g", "t"));
    assert_eq!(r.topics[0].partitions[0].error_code, TOPIC_DENIED);
    let g = fetch_offsets(s, "g", Some(&["t"]));
    assert_eq!((g.error_code, g.topics[0].partitions[0].error_code, g.topics[0].partitions[0].committed_offset), (0, TOPIC_DENIED, -1));
    assert!(fetch_offsets(s, "g", None).topics.is_empty(), "an all-topics fetch leaves out what alice may not describe");
    assert_eq!(list_groups(s), ["g"]);
    assert_eq!(txn_offset_commit(s, "t"), TOPIC_DENIED);
    // DESCRIBE on the topic shows its committed offset.
    assert_eq!(create_acls(&mut admin, &[(2, "t", 3, "User:alice", 8, 3)]), [0]);
    let g = fetch_offsets(s, "g", None);
    assert_eq!(g.topics.iter().map(|t| (t.name.to_string(), t.partitions[0].committed_offset)).collect::<Vec<_>>(), [("t".to_string(), 1)]);
    let r: ListOffsetsResponse = call(s, ApiKey::ListOffsets, 7, &lo);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let r: DescribeGroupsResponse = call(s, ApiKey::DescribeGroups, 5, &dg);
    assert_eq!((r.groups[0].error_code, r.groups[0].authorized_operations), (0, 1 << 3 | 1 << 8), "READ and the DESCRIBE it implies");

    // READ on the topic lets alice fetch as a consumer, not as a follower
    // replica (that needs CLUSTER_ACTION).
    assert_eq!(create_acls(&mut admin, &[(2, "t", 3, "User:alice", 3, 3)]), [0]);
    let fetch_error = |s: &mut TcpStream, replica: i32| {
        let mut f = FetchRequest::default();
        f.replica_id = BrokerId(replica);
        f.max_bytes = 1 << 20;
        let mut ft = fetch_request::FetchTopic::default();
        ft.topic = topic("t");
        let mut fp = fetch_request::FetchPartition::default();
        fp.partition_max_bytes = 1 << 20;
        ft.partitions = vec![fp];
        f.topics = vec![ft];
        let r: FetchResponse = call(s, ApiKey::Fetch, 12, &f);
        (r.responses[0].partitions[0].error_code, r.responses[0].partitions[0].records.is_some())
    };
    assert_eq!(fetch_error(s, -1), (0, true));
    assert_eq!(fetch_error(s, 1), (TOPIC_DENIED, true), "an error comes with an empty record set, not a null one");
}

/// What the review of the ACLs found missing, as Kafka does it: a fetch of
/// nothing but refused partitions is answered at once (not after its
/// max_wait_ms), and DescribeTransactions shows only the topics the
/// principal may describe.
#[test]
fn refused_fetches_do_not_wait_and_transactions_hide_undescribable_topics() {
    let tmp = tempfile::tempdir().unwrap();
    let b = acl_broker(tmp.path());
    let mut admin = session(&b, ADMIN, ADMIN_PASSWORD);
    create_alice(&mut admin);
    let mut ct = CreateTopicsRequest::default();
    let mut nt = create_topics_request::CreatableTopic::default();
    nt.name = topic("t");
    nt.num_partitions = 1;
    nt.replication_factor = 1;
    ct.topics = vec![nt];
    let r: CreateTopicsResponse = call(&mut admin, ApiKey::CreateTopics, 7, &ct);
    assert_eq!(r.topics[0].error_code, 0);
    let p = init_producer(&mut admin, Some("tx"));
    assert_eq!(p.error_code, 0);
    let mut ap = AddPartitionsToTxnRequest::default();
    ap.v3_and_below_transactional_id = txn("tx");
    ap.v3_and_below_producer_id = p.producer_id;
    ap.v3_and_below_producer_epoch = p.producer_epoch;
    let mut apt = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
    apt.name = topic("t");
    apt.partitions = vec![0];
    ap.v3_and_below_topics = vec![apt];
    let r: AddPartitionsToTxnResponse = call(&mut admin, ApiKey::AddPartitionsToTxn, 3, &ap);
    assert_eq!(r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0);

    let mut s = session(&b, ALICE, ALICE_PASSWORD);
    let mut f = FetchRequest::default();
    f.max_wait_ms = 5000;
    f.min_bytes = 1;
    f.max_bytes = 1 << 20;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic = topic("t");
    let mut fp = fetch_request::FetchPartition::default();
    fp.partition_max_bytes = 1 << 20;
    ft.partitions = vec![fp];
    f.topics = vec![ft];
    let started = std::time::Instant::now();
    let r: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &f);
    assert_eq!(r.responses[0].partitions[0].error_code, TOPIC_DENIED);
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "a refused fetch waited {:?} of its 5 s", started.elapsed());

    // DESCRIBE on the transactional id but not on topic t.
    assert_eq!(create_acls(&mut admin, &[(5, "tx", 3, "User:alice", 8, 3)]), [0]);
    let mut dtx = DescribeTransactionsRequest::default();
    dtx.transactional_ids = vec![txn("tx")];
    let r: DescribeTransactionsResponse = call(&mut s, ApiKey::DescribeTransactions, 0, &dtx);
    assert_eq!((r.transaction_states[0].error_code, r.transaction_states[0].topics.len()), (0, 0), "topic t is not shown to alice");
    let r: DescribeTransactionsResponse = call(&mut admin, ApiKey::DescribeTransactions, 0, &dtx);
    assert_eq!(r.transaction_states[0].topics.iter().map(|t| t.topic.to_string()).collect::<Vec<_>>(), ["t"], "the admin sees it");
}
