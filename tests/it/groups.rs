//! Consumer groups with librdkafka consumers: assignment, leave, kill and
//! session expiry, commits and resume, cooperative-sticky, static
//! membership, restarts; and hand-built requests for the error edges.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker_support::TestBroker;
use crate::wire_support::call;

fn start() -> TestBroker {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| c.groups.initial_rebalance_delay_ms = 200);
    b.keep_dir(tmp);
    b
}

fn produce(b: &TestBroker, topic: &str, partitions: i32, count: usize, tag: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let p: FutureProducer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).set("linger.ms", "5").create().unwrap();
    rt.block_on(async {
        let futures: Vec<_> = (0..count)
            .map(|i| {
                let v = format!("{tag}-{i}");
                p.send_result(FutureRecord::to(topic).partition((i % partitions as usize) as i32).key(&v).payload(&v)).map_err(|(e, _)| e).unwrap()
            })
            .collect();
        for f in futures {
            f.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    });
}

fn create_topic(b: &TestBroker, name: &str, partitions: i32) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let a: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().unwrap();
    let r = rt.block_on(a.create_topics(&[rdkafka::admin::NewTopic::new(name, partitions, rdkafka::admin::TopicReplication::Fixed(1))], &rdkafka::admin::AdminOptions::new())).unwrap();
    assert!(r[0].is_ok());
}

/// Counts rebalances a consumer goes through.
#[derive(Default, Clone)]
struct Counting(Arc<AtomicUsize>);
impl ClientContext for Counting {}
impl ConsumerContext for Counting {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if matches!(r, Rebalance::Assign(_)) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A classic-protocol consumer (session and heartbeat set by the client).
fn consumer(b: &TestBroker, group: &str, extra: &[(&str, &str)]) -> BaseConsumer<Counting> {
    let mut all = vec![("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "300")];
    all.extend_from_slice(extra);
    group_consumer(b, group, &all)
}

fn group_consumer(b: &TestBroker, group: &str, extra: &[(&str, &str)]) -> BaseConsumer<Counting> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("log_level", "3");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(Counting::default()).unwrap()
}

fn partitions_of(c: &BaseConsumer<Counting>) -> BTreeSet<i32> {
    c.assignment().unwrap().elements().iter().map(|e| e.partition()).collect()
}

/// Polls every consumer until `done` says the assignments are as wanted.
/// Returns the messages seen, by consumer index.
fn poll_until(consumers: &[&BaseConsumer<Counting>], secs: u64, what: &str, mut done: impl FnMut(&[BTreeSet<i32>], &[Vec<(i32, i64, String)>]) -> bool) -> Vec<Vec<(i32, i64, String)>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = vec![Vec::new(); consumers.len()];
    loop {
        for (i, c) in consumers.iter().enumerate() {
            while let Some(m) = c.poll(Duration::from_millis(20)) {
                let m = m.unwrap();
                seen[i].push((m.partition(), m.offset(), String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()));
            }
        }
        let assigned: Vec<BTreeSet<i32>> = consumers.iter().map(|c| partitions_of(c)).collect();
        if done(&assigned, &seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: assignments {assigned:?}");
    }
}

/// Each of the six partitions assigned exactly once across the consumers.
fn exactly_once(a: &[BTreeSet<i32>], n: i32) -> bool {
    let total: usize = a.iter().map(|s| s.len()).sum();
    let union: BTreeSet<i32> = a.iter().flatten().copied().collect();
    total == n as usize && union == (0..n).collect() && a.iter().all(|s| !s.is_empty())
}

#[test]
#[ignore = "the child process of members_leave_die_and_resume_at_committed_offsets; does nothing alone"]
fn group_child() {
    let Ok(bootstrap) = std::env::var("EDDY_GROUP_CHILD") else { return };
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "six")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["six"]).unwrap();
    loop {
        let _ = c.poll(Duration::from_millis(100));
        let n = c.assignment().map(|a| a.count()).unwrap_or(0);
        println!("ASSIGNED {n}");
    }
}

#[test]
fn members_leave_die_and_resume_at_committed_offsets() {
    let b = start();
    create_topic(&b, "six", 6);
    produce(&b, "six", 6, 3000, "first");
    let c1 = consumer(&b, "six", &[]);
    let c2 = consumer(&b, "six", &[]);
    let c3 = consumer(&b, "six", &[]);
    for c in [&c1, &c2, &c3] {
        c.subscribe(&["six"]).unwrap();
    }
    // All three share the six partitions, each exactly once.
    let mut all: Vec<(i32, i64, String)> = Vec::new();
    let seen = poll_until(&[&c1, &c2, &c3], 60, "three members", |a, _| exactly_once(a, 6));
    all.extend(seen.into_iter().flatten());

    // One leaves: the other two take its partitions.
    c3.unsubscribe();
    // Closed once its partitions are revoked (see the end of the KIP-848 test).
    all.extend(poll_until(&[&c3], 60, "the leaving member unassigned", |a, _| a[0].is_empty()).into_iter().flatten());
    drop(c3);
    let seen = poll_until(&[&c1, &c2], 60, "two members after a leave", |a, _| exactly_once(a, 6));
    all.extend(seen.into_iter().flatten());

    // A third member in another process, then killed: its session expires
    // and the survivors get everything back.
    let exe = if std::path::Path::new("/proc/self/exe").exists() { "/proc/self/exe".into() } else { std::env::current_exe().unwrap() };
    let mut child = Command::new(exe)
        .args(["groups::group_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("EDDY_GROUP_CHILD", b.bootstrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ASSIGNED ") {
                if tx.send(n.parse::<usize>().unwrap_or(0)).is_err() {
                    return;
                }
            }
        }
    });
    let seen = poll_until(&[&c1, &c2], 60, "the child to join", |a, _| {
        let child_has = rx.try_iter().last().unwrap_or(0);
        child_has > 0 && a.iter().map(|s| s.len()).sum::<usize>() + child_has == 6
    });
    all.extend(seen.into_iter().flatten());
    child.kill().unwrap(); // SIGKILL: no LeaveGroup
    child.wait().unwrap();
    let killed_at = Instant::now();
    let seen = poll_until(&[&c1, &c2], 60, "the dead member to expire", |a, _| exactly_once(a, 6));
    all.extend(seen.into_iter().flatten());
    assert!(killed_at.elapsed() >= Duration::from_secs(3), "reassigned only after the session timeout");

    // Drain everything, commit, and check nothing was missed.
    let seen = poll_until(&[&c1, &c2], 60, "all records", |_, seen| {
        let mut values: BTreeSet<String> = all.iter().map(|x| x.2.clone()).collect();
        values.extend(seen.iter().flatten().map(|x| x.2.clone()));
        values.len() >= 3000
    });
    all.extend(seen.into_iter().flatten());
    let values: BTreeSet<&str> = all.iter().map(|x| x.2.as_str()).collect();
    assert_eq!(values.len(), 3000, "every produced record consumed");
    // Every partition's owner has read to the end (a partition that moved
    // may be re-read from the start: at-least-once), then commits.
    poll_until(&[&c1, &c2], 60, "positions at the end", |a, _| {
        exactly_once(a, 6)
            && [&c1, &c2].iter().all(|c| c.position().unwrap().elements().iter().all(|e| e.offset() == Offset::Offset(500)))
    });
    for c in [&c1, &c2] {
        c.commit_consumer_state(CommitMode::Sync).unwrap();
    }
    // Leave, and wait for the revocations, before closing: librdkafka can
    // hang for ever in the rebalance callback of a close that meets one
    // (confluentinc/librdkafka#4884, #4527).
    for c in [&c1, &c2] {
        c.unsubscribe();
    }
    poll_until(&[&c1, &c2], 60, "both members unassigned", |a, _| a.iter().all(BTreeSet::is_empty));
    drop(c1);
    drop(c2);

    // A restarted group resumes at the committed offsets: it sees exactly the
    // records produced since.
    produce(&b, "six", 6, 600, "second");
    let r1 = consumer(&b, "six", &[]);
    r1.subscribe(&["six"]).unwrap();
    let seen = poll_until(&[&r1], 60, "the resumed group", |_, seen| seen[0].len() >= 600);
    std::thread::sleep(Duration::from_millis(300));
    let extra = poll_until(&[&r1], 5, "nothing more", |_, _| true);
    let got: Vec<&(i32, i64, String)> = seen.iter().chain(extra.iter()).flatten().collect();
    assert_eq!(got.len(), 600, "no record skipped, none repeated");
    assert!(got.iter().all(|x| x.2.starts_with("second-")));
}

#[test]
fn cooperative_sticky_rebalances_incrementally() {
    let b = start();
    create_topic(&b, "coop", 6);
    let extra = [("partition.assignment.strategy", "cooperative-sticky")];
    let c1 = consumer(&b, "coop", &extra);
    let c2 = consumer(&b, "coop", &extra);
    c1.subscribe(&["coop"]).unwrap();
    c2.subscribe(&["coop"]).unwrap();
    poll_until(&[&c1, &c2], 60, "two cooperative members", |a, _| exactly_once(a, 6));
    let before: Vec<BTreeSet<i32>> = vec![partitions_of(&c1), partitions_of(&c2)];
    let c3 = consumer(&b, "coop", &extra);
    c3.subscribe(&["coop"]).unwrap();
    poll_until(&[&c1, &c2, &c3], 60, "three cooperative members", |a, _| exactly_once(a, 6));
    // Sticky: the first two kept partitions they had.
    assert!(partitions_of(&c1).is_subset(&before[0]) && partitions_of(&c2).is_subset(&before[1]), "partitions moved needlessly");
}

#[test]
fn a_static_member_rejoins_without_a_rebalance() {
    let b = start();
    create_topic(&b, "static", 4);
    let a = consumer(&b, "static", &[("group.instance.id", "member-a"), ("session.timeout.ms", "20000")]);
    let s1 = consumer(&b, "static", &[("group.instance.id", "member-b"), ("session.timeout.ms", "20000")]);
    a.subscribe(&["static"]).unwrap();
    s1.subscribe(&["static"]).unwrap();
    poll_until(&[&a, &s1], 60, "two static members", |x, _| exactly_once(x, 4));
    // librdkafka may rejoin once more as topic metadata arrives: wait until
    // the group has been quiet for a while.
    let mut rebalances = a.context().0.load(Ordering::SeqCst);
    loop {
        let quiet_until = Instant::now() + Duration::from_millis(1500);
        poll_until(&[&a, &s1], 5, "a quiet group", |_, _| Instant::now() >= quiet_until);
        let now = a.context().0.load(Ordering::SeqCst);
        if now == rebalances {
            break;
        }
        rebalances = now;
    }
    assert!(exactly_once(&[partitions_of(&a), partitions_of(&s1)], 4));
    let had = partitions_of(&s1);
    // Static members do not leave on close; a new process with the same
    // instance id takes over within the session timeout.
    drop(s1);
    let s2 = consumer(&b, "static", &[("group.instance.id", "member-b"), ("session.timeout.ms", "20000")]);
    s2.subscribe(&["static"]).unwrap();
    poll_until(&[&a, &s2], 60, "the static member back", |x, _| exactly_once(x, 4));
    assert_eq!(partitions_of(&s2), had, "same partitions back");
    std::thread::sleep(Duration::from_millis(1000));
    poll_until(&[&a, &s2], 5, "quiet", |_, _| true);
    assert_eq!(a.context().0.load(Ordering::SeqCst), rebalances, "the other member saw no rebalance");
}

#[test]
fn committed_offsets_and_metadata_survive_a_broker_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(tmp.path(), |c| c.groups.initial_rebalance_delay_ms = 0);
    create_topic(&b, "kept", 2);
    let c = consumer(&b, "keepers", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("kept", 0, Offset::Offset(0)).unwrap();
    tpl.add_partition_offset("kept", 1, Offset::Offset(0)).unwrap();
    c.assign(&tpl).unwrap();
    let mut commit = TopicPartitionList::new();
    commit.add_partition_offset("kept", 0, Offset::Offset(17)).unwrap();
    commit.add_partition_offset("kept", 1, Offset::Offset(5)).unwrap();
    commit.find_partition("kept", 0).unwrap().set_metadata("first half");
    c.commit(&commit, CommitMode::Sync).unwrap();
    drop(c);
    b.stop();
    let b = TestBroker::start_in(tmp.path(), |_| {});
    let c = consumer(&b, "keepers", &[]);
    let mut ask = TopicPartitionList::new();
    ask.add_partition("kept", 0);
    ask.add_partition("kept", 1);
    let got = c.committed_offsets(ask, Duration::from_secs(10)).unwrap();
    assert_eq!(got.find_partition("kept", 0).unwrap().offset(), Offset::Offset(17));
    assert_eq!(got.find_partition("kept", 0).unwrap().metadata(), "first half", "commit metadata round-trips");
    assert_eq!(got.find_partition("kept", 1).unwrap().offset(), Offset::Offset(5));
}

// ---- hand-built requests ----


fn join_request(member: &str) -> JoinGroupRequest {
    crate::wire_support::join_request("edges", member)
}

fn commit_request(generation: i32, member: &str) -> OffsetCommitRequest {
    let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = 3;
    p.committed_metadata = Some(StrBytes::from_static_str("m"));
    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = TopicName(StrBytes::from_static_str("edge-topic"));
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(StrBytes::from_static_str("edges"));
    r.generation_id_or_member_epoch = generation;
    r.member_id = StrBytes::from_string(member.to_string());
    r.topics = vec![t];
    r
}

/// A broker whose groups rebalance at once (then `tweak`), with topic
/// "edge-topic", and a connection to it.
fn edge_broker(tweak: impl FnOnce(&mut eddy::group::GroupConfig)) -> (TestBroker, TcpStream) {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| {
        c.groups.initial_rebalance_delay_ms = 0;
        tweak(&mut c.groups);
    });
    b.keep_dir(tmp);
    create_topic(&b, "edge-topic", 1);
    let s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (b, s)
}

#[test]
fn member_id_required_generations_and_commit_errors() {
    let (b, mut s) = edge_broker(|_| {});
    // KIP-394: the first join gets an id and MEMBER_ID_REQUIRED.
    let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 9, &join_request(""));
    assert_eq!(r.error_code, 79);
    let member = r.member_id.to_string();
    assert!(member.starts_with("wire-test-"), "member ids start with the client id");
    let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 9, &join_request(&member));
    assert_eq!(r.error_code, 0);
    assert_eq!(r.leader.as_str(), member, "the only member leads");
    assert_eq!(r.members.len(), 1);
    let generation = r.generation_id;

    // Commits before the sync: the group is still rebalancing.
    let c: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &commit_request(generation, &member));
    assert_eq!(c.topics[0].partitions[0].error_code, 27, "REBALANCE_IN_PROGRESS");

    let mut a = sync_group_request::SyncGroupRequestAssignment::default();
    a.member_id = StrBytes::from_string(member.clone());
    a.assignment = bytes::Bytes::from_static(b"assignment-bytes");
    let mut sync = SyncGroupRequest::default();
    sync.group_id = GroupId(StrBytes::from_static_str("edges"));
    sync.generation_id = generation;
    sync.member_id = StrBytes::from_string(member.clone());
    sync.protocol_type = Some(StrBytes::from_static_str("consumer"));
    sync.protocol_name = Some(StrBytes::from_static_str("range"));
    sync.assignments = vec![a];
    let r: SyncGroupResponse = call(&mut s, ApiKey::SyncGroup, 5, &sync);
    assert_eq!(r.error_code, 0);
    assert_eq!(&r.assignment[..], b"assignment-bytes");

    let c: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &commit_request(generation + 1, &member));
    assert_eq!(c.topics[0].partitions[0].error_code, 22, "ILLEGAL_GENERATION");
    let c: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &commit_request(generation, "stranger"));
    assert_eq!(c.topics[0].partitions[0].error_code, 25, "UNKNOWN_MEMBER_ID");
    let c: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &commit_request(-1, ""));
    assert_eq!(c.topics[0].partitions[0].error_code, 25, "a group with members refuses standalone commits");
    let c: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &commit_request(generation, &member));
    assert_eq!(c.topics[0].partitions[0].error_code, 0);

    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(StrBytes::from_static_str("edges"));
    hb.generation_id = generation;
    hb.member_id = StrBytes::from_string(member.clone());
    let r: HeartbeatResponse = call(&mut s, ApiKey::Heartbeat, 4, &hb);
    assert_eq!(r.error_code, 0);

    // DescribeGroups and ListGroups show the member and its assignment.
    let mut d = DescribeGroupsRequest::default();
    d.groups = vec![GroupId(StrBytes::from_static_str("edges")), GroupId(StrBytes::from_static_str("no-such"))];
    let r: DescribeGroupsResponse = call(&mut s, ApiKey::DescribeGroups, 5, &d);
    assert_eq!(r.groups[0].group_state.as_str(), "Stable");
    assert_eq!(r.groups[0].protocol_data.as_str(), "range");
    assert_eq!(r.groups[0].members[0].member_id.as_str(), member);
    assert_eq!(&r.groups[0].members[0].member_assignment[..], b"assignment-bytes");
    assert_eq!(r.groups[0].members[0].client_host.as_str(), "/127.0.0.1");
    assert_eq!(r.groups[1].group_state.as_str(), "Dead");
    let mut l = ListGroupsRequest::default();
    l.states_filter = vec![StrBytes::from_static_str("Stable")];
    let r: ListGroupsResponse = call(&mut s, ApiKey::ListGroups, 4, &l);
    assert_eq!(r.groups.iter().map(|g| g.group_id.as_str()).collect::<Vec<_>>(), vec!["edges"]);
    l.states_filter = vec![StrBytes::from_static_str("Empty")];
    let r: ListGroupsResponse = call(&mut s, ApiKey::ListGroups, 4, &l);
    assert!(r.groups.iter().all(|g| g.group_id.as_str() != "edges"));

    // Deleting a group with members is refused; after the member leaves, the
    // group and its offsets go.
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(StrBytes::from_static_str("edges"))];
    let r: DeleteGroupsResponse = call(&mut s, ApiKey::DeleteGroups, 2, &del);
    assert_eq!(r.results[0].error_code, 68, "NON_EMPTY_GROUP");
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = GroupId(StrBytes::from_static_str("edges"));
    let mut who = leave_group_request::MemberIdentity::default();
    who.member_id = StrBytes::from_string(member.clone());
    leave.members = vec![who];
    let r: LeaveGroupResponse = call(&mut s, ApiKey::LeaveGroup, 5, &leave);
    assert_eq!(r.members[0].error_code, 0);
    let r: DeleteGroupsResponse = call(&mut s, ApiKey::DeleteGroups, 2, &del);
    assert_eq!(r.results[0].error_code, 0);
    let r: DeleteGroupsResponse = call(&mut s, ApiKey::DeleteGroups, 2, &del);
    assert_eq!(r.results[0].error_code, 69, "GROUP_ID_NOT_FOUND");

    // FindCoordinator, batched (v4+).
    let mut fc = FindCoordinatorRequest::default();
    fc.coordinator_keys = vec![StrBytes::from_static_str("a"), StrBytes::from_static_str("b")];
    let r: FindCoordinatorResponse = call(&mut s, ApiKey::FindCoordinator, 4, &fc);
    assert_eq!(r.coordinators.len(), 2);
    assert!(r.coordinators.iter().all(|c| c.error_code == 0 && c.port == b.addr.port() as i32));
}

#[test]
fn lag_is_committed_offset_against_log_end() {
    let b = start();
    create_topic(&b, "lagging", 1);
    produce(&b, "lagging", 1, 50, "x");
    let c = consumer(&b, "lag-group", &[]);
    let mut t = TopicPartitionList::new();
    t.add_partition_offset("lagging", 0, Offset::Offset(20)).unwrap();
    c.commit(&t, CommitMode::Sync).unwrap();
    let committed: HashMap<(String, i32), i64> = b.broker_committed("lag-group");
    let end = b.log_end("lagging", 0);
    assert_eq!(end - committed[&("lagging".to_string(), 0)], 30);
}

/// A KIP-848 consumer (the broker sets session and heartbeat).
fn consumer_protocol(b: &TestBroker, group: &str, extra: &[(&str, &str)]) -> BaseConsumer<Counting> {
    let mut all = vec![("group.protocol", "consumer")];
    all.extend_from_slice(extra);
    group_consumer(b, group, &all)
}

#[test]
fn kip_848_consumer_protocol_assigns_reassigns_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| {
        c.groups.consumer_heartbeat_ms = 200;
        c.groups.consumer_session_ms = 3000;
    });
    b.keep_dir(tmp);
    create_topic(&b, "kip848", 6);
    produce(&b, "kip848", 6, 1200, "r");
    let c1 = consumer_protocol(&b, "g848", &[]);
    let c2 = consumer_protocol(&b, "g848", &[]);
    let c3 = consumer_protocol(&b, "g848", &[("group.remote.assignor", "range")]);
    for c in [&c1, &c2, &c3] {
        c.subscribe(&["kip848"]).unwrap();
    }
    let mut all = poll_until(&[&c1, &c2, &c3], 60, "three KIP-848 members", |a, _| exactly_once(a, 6)).into_iter().flatten().collect::<Vec<_>>();

    // The group as ConsumerGroupDescribe shows it.
    let mut s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut d = ConsumerGroupDescribeRequest::default();
    d.group_ids = vec![GroupId(StrBytes::from_static_str("g848"))];
    let r: ConsumerGroupDescribeResponse = call(&mut s, ApiKey::ConsumerGroupDescribe, 1, &d);
    assert_eq!(r.groups[0].error_code, 0);
    assert_eq!(r.groups[0].members.len(), 3);
    assert_eq!(r.groups[0].assignor_name.as_str(), "range", "the last requested server assignor");
    let described: usize = r.groups[0].members.iter().map(|m| m.assignment.topic_partitions.iter().map(|t| t.partitions.len()).sum::<usize>()).sum();
    assert_eq!(described, 6);
    // The HTTP API and `eddy group describe` show the same assignments.
    let g = crate::http::get_json(b.http_addr, "/api/groups/g848");
    assert_eq!(g["type"], "consumer");
    let partitions = |members: &serde_json::Value, field: &str| -> BTreeSet<i64> {
        members.as_array().unwrap().iter().flat_map(|m| m[field].as_array().unwrap().clone()).flat_map(|t| {
            assert_eq!(t["topic"], "kip848");
            t["partitions"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect::<Vec<_>>()
        }).collect()
    };
    assert_eq!(g["members"].as_array().unwrap().len(), 3);
    assert_eq!(partitions(&g["members"], "assignment"), (0..6).collect());
    assert_eq!(partitions(&g["members"], "target_assignment"), (0..6).collect());
    let (ok, out, err) = crate::cli::eddy_cli(&b, &["group", "describe", "g848", "--json"]);
    assert!(ok, "{err}");
    let cli: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli["protocol_type"], "consumer");
    let mut listed: Vec<i64> = cli["members"].as_array().unwrap().iter().flat_map(|m| {
        let a = m["assignment"].as_str().unwrap().to_string();
        a.strip_prefix("kip848:").unwrap_or_else(|| panic!("{out}")).split(',').map(|p| p.parse::<i64>().unwrap()).collect::<Vec<_>>()
    }).collect();
    listed.sort();
    assert_eq!(listed, (0..6).collect::<Vec<_>>(), "{out}");
    let mut l = ListGroupsRequest::default();
    l.types_filter = vec![StrBytes::from_static_str("consumer")];
    let r: ListGroupsResponse = call(&mut s, ApiKey::ListGroups, 5, &l);
    assert_eq!(r.groups.iter().map(|g| g.group_id.as_str()).collect::<Vec<_>>(), vec!["g848"]);

    // One leaves: the others take over its partitions, without a stop-the-world.
    c3.unsubscribe();
    // Closed once its partitions are revoked (librdkafka#4884; the note at the end).
    all.extend(poll_until(&[&c3], 60, "the leaving member unassigned", |a, _| a[0].is_empty()).into_iter().flatten());
    drop(c3);
    all.extend(poll_until(&[&c1, &c2], 60, "two KIP-848 members", |a, _| exactly_once(a, 6)).into_iter().flatten());
    all.extend(
        poll_until(&[&c1, &c2], 60, "every record", |_, seen| {
            let mut v: BTreeSet<String> = all.iter().map(|x| x.2.clone()).collect();
            v.extend(seen.iter().flatten().map(|x| x.2.clone()));
            v.len() >= 1200
        })
        .into_iter()
        .flatten(),
    );
    let values: BTreeSet<&str> = all.iter().map(|x| x.2.as_str()).collect();
    assert_eq!(values.len(), 1200);
    poll_until(&[&c1, &c2], 60, "positions at the end", |a, _| {
        exactly_once(a, 6) && [&c1, &c2].iter().all(|c| c.position().unwrap().elements().iter().all(|e| e.offset() == Offset::Offset(200)))
    });
    for c in [&c1, &c2] {
        c.commit_consumer_state(CommitMode::Sync).unwrap();
    }
    // Leave, and wait for the revocations, before closing: librdkafka can
    // hang for ever in the rebalance callback of a close that meets one
    // (confluentinc/librdkafka#4884, #4527).
    for c in [&c1, &c2] {
        c.unsubscribe();
    }
    poll_until(&[&c1, &c2], 60, "both members unassigned", |a, _| a.iter().all(BTreeSet::is_empty));
    drop(c1);
    drop(c2);
    produce(&b, "kip848", 6, 120, "later");
    let r1 = consumer_protocol(&b, "g848", &[]);
    r1.subscribe(&["kip848"]).unwrap();
    let seen = poll_until(&[&r1], 60, "the resumed KIP-848 group", |_, seen| seen[0].len() >= 120);
    assert!(seen[0].iter().all(|x| x.2.starts_with("later-")), "resumed at the committed offsets");
}

fn offset_fetch_v8(s: &mut TcpStream, groups: &[&'static str]) -> OffsetFetchResponse {
    let mut req = OffsetFetchRequest::default();
    req.groups = groups
        .iter()
        .map(|g| {
            let mut x = offset_fetch_request::OffsetFetchRequestGroup::default();
            x.group_id = GroupId(StrBytes::from_static_str(g));
            x.topics = None; // all committed
            x
        })
        .collect();
    call(s, ApiKey::OffsetFetch, 8, &req)
}

#[test]
fn offset_delete_fencing_multi_group_fetch_and_offset_retention() {
    let (_broker, mut s) = edge_broker(|g| g.offsets_retention_ms = 1500);

    // Standalone commits (generation -1, no member) to two groups, then one
    // multi-group OffsetFetch (v8).
    for g in ["solo-a", "solo-b"] {
        let mut r = commit_request(-1, "");
        r.group_id = GroupId(StrBytes::from_static_str(g));
        let c: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &r);
        assert_eq!(c.topics[0].partitions[0].error_code, 0);
    }
    let r = offset_fetch_v8(&mut s, &["solo-a", "solo-b", "never"]);
    assert_eq!(r.groups.len(), 3);
    assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 3);
    assert_eq!(r.groups[0].topics[0].partitions[0].metadata.as_ref().map(|m| m.as_str()), Some("m"));
    assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, 3);
    assert!(r.groups[2].topics.is_empty(), "a group without commits has none");

    // OffsetDelete on an empty group removes the offset.
    let mut del = OffsetDeleteRequest::default();
    del.group_id = GroupId(StrBytes::from_static_str("solo-b"));
    let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
    t.name = TopicName(StrBytes::from_static_str("edge-topic"));
    let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
    p.partition_index = 0;
    t.partitions = vec![p];
    del.topics = vec![t];
    let r: OffsetDeleteResponse = call(&mut s, ApiKey::OffsetDelete, 0, &del);
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
    assert!(offset_fetch_v8(&mut s, &["solo-b"]).groups[0].topics.is_empty());

    // A static member, and a second join with its instance id but a stale
    // member id: FENCED_INSTANCE_ID.
    let mut j = join_request("");
    j.group_instance_id = Some(StrBytes::from_static_str("inst-1"));
    let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 9, &j);
    assert_eq!(r.error_code, 0, "static members need no MEMBER_ID_REQUIRED round trip");
    let mut stale = join_request("not-the-current-id");
    stale.group_instance_id = Some(StrBytes::from_static_str("inst-1"));
    let r2: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 9, &stale);
    assert_eq!(r2.error_code, 25, "an id the group never gave out is unknown");
    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(StrBytes::from_static_str("edges"));
    hb.generation_id = r.generation_id;
    hb.member_id = StrBytes::from_static_str("someone-else");
    hb.group_instance_id = Some(StrBytes::from_static_str("inst-1"));
    let h: HeartbeatResponse = call(&mut s, ApiKey::Heartbeat, 4, &hb);
    assert_eq!(h.error_code, 82, "FENCED_INSTANCE_ID");

    // Offsets of a group empty for longer than offsets.retention.minutes go.
    std::thread::sleep(Duration::from_millis(2500));
    let r = offset_fetch_v8(&mut s, &["solo-a"]);
    assert!(r.groups[0].topics.is_empty(), "expired: {:?}", r.groups[0].topics);
}

#[test]
fn a_member_may_commit_while_the_group_prepares_a_rebalance() {
    let (b, mut s) = edge_broker(|_| {});
    let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 9, &join_request(""));
    let member = r.member_id.to_string();
    let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 9, &join_request(&member));
    let generation = r.generation_id;
    let mut sync = SyncGroupRequest::default();
    sync.group_id = GroupId(StrBytes::from_static_str("edges"));
    sync.generation_id = generation;
    sync.member_id = StrBytes::from_string(member.clone());
    let r: SyncGroupResponse = call(&mut s, ApiKey::SyncGroup, 5, &sync);
    assert_eq!(r.error_code, 0);
    // A second member joins (on its own connection; its join waits for the
    // first member to rejoin): the group is preparing a rebalance.
    let addr = b.addr;
    let joiner = std::thread::spawn(move || {
        let mut s2 = TcpStream::connect(addr).unwrap();
        s2.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut j = join_request("");
        j.group_instance_id = Some(StrBytes::from_static_str("second"));
        let r: JoinGroupResponse = call(&mut s2, ApiKey::JoinGroup, 9, &j);
        r.error_code
    });
    std::thread::sleep(Duration::from_millis(300));
    let d: DescribeGroupsResponse = call(&mut s, ApiKey::DescribeGroups, 5, &{
        let mut d = DescribeGroupsRequest::default();
        d.groups = vec![GroupId(StrBytes::from_static_str("edges"))];
        d
    });
    assert_eq!(d.groups[0].group_state.as_str(), "PreparingRebalance");
    let c: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &commit_request(generation, &member));
    assert_eq!(c.topics[0].partitions[0].error_code, 0, "Kafka accepts commits of the current generation while preparing");
    let h: HeartbeatResponse = call(&mut s, ApiKey::Heartbeat, 4, &{
        let mut hb = HeartbeatRequest::default();
        hb.group_id = GroupId(StrBytes::from_static_str("edges"));
        hb.generation_id = generation;
        hb.member_id = StrBytes::from_string(member.clone());
        hb
    });
    assert_eq!(h.error_code, 27, "the heartbeat says: rejoin");
    let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 9, &join_request(&member));
    assert_eq!((r.error_code, r.generation_id), (0, generation + 1));
    assert_eq!(joiner.join().unwrap(), 0);
}

/// Group ids of ListGroups (every state).
fn listed_groups(s: &mut TcpStream) -> Vec<String> {
    let r: ListGroupsResponse = call(s, ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert_eq!(r.error_code, 0);
    r.groups.iter().map(|g| g.group_id.to_string()).collect()
}

#[test]
fn empty_groups_without_offsets_are_dropped_and_groups_with_offsets_stay() {
    let (_broker, mut s) = edge_broker(|g| g.empty_group_ms = 300);
    // A join that stops at MEMBER_ID_REQUIRED leaves an empty group behind.
    let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 9, &join_request(""));
    assert_eq!(r.error_code, 79);
    assert!(listed_groups(&mut s).contains(&"edges".to_string()));
    let t0 = Instant::now();
    while listed_groups(&mut s).contains(&"edges".to_string()) {
        assert!(t0.elapsed() < Duration::from_secs(15), "an empty group without offsets is still listed after 15 s (offsets.retention.check.interval.ms = 300)");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t0.elapsed() >= Duration::from_millis(200), "dropped before it was empty for the interval");
    // A group with committed offsets is kept (until offsets.retention.minutes).
    let c: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &commit_request(-1, ""));
    assert_eq!(c.topics[0].partitions[0].error_code, 0);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(listed_groups(&mut s).contains(&"edges".to_string()), "a group with offsets was dropped");
    let r = offset_fetch_v8(&mut s, &["edges"]);
    assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 3);
}
