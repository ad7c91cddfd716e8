//! The group coordinator: classic consumer groups (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup with static membership and KIP-394 member ids) and
//! committed offsets, kept in `__consumer_offsets`.
//!
//! All groups live behind one mutex: every operation on a group is a short
//! synchronous state change. Requests that must wait (a JoinGroup until the
//! rebalance completes, a follower's SyncGroup until the leader's) park a
//! oneshot sender in the member and are answered by whoever completes the
//! step. A ticker expires sessions and ends join phases on time.

mod classic;
pub mod consumer;
mod offsets;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::log::{Log, LogError};
pub use classic::{JoinArgs, JoinResult, SyncResult};
pub use offsets::{CommitPart, TopicOffsets};
pub use store::Committed;

/// Group coordinator settings (Kafka's broker config names and defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an
    /// empty group waits for more members. Default 3000.
    pub initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`. Default 6000.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`. Default 1800000.
    pub max_session_timeout_ms: i32,
    /// `offsets.retention.minutes` in ms: offsets of a group empty this long are dropped. Default 7 days.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`: an empty group with no
    /// committed offsets is dropped once empty this long (Kafka drops it
    /// at its next check, at most that long after). Default 600000.
    pub empty_group_ms: i64,
    /// `offset.metadata.max.bytes`: largest commit metadata string. Default 4096.
    pub max_metadata_bytes: usize,
    /// `group.consumer.session.timeout.ms` (KIP-848 groups). Default 45000.
    pub consumer_session_ms: i32,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups). Default 5000.
    pub consumer_heartbeat_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig { initial_rebalance_delay_ms: 3000, min_session_timeout_ms: 6000, max_session_timeout_ms: 1_800_000, offsets_retention_ms: 7 * 24 * 3600 * 1000, empty_group_ms: 600_000, max_metadata_bytes: 4096, consumer_session_ms: 45_000, consumer_heartbeat_ms: 5_000 }
    }
}

/// Who sent a request.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub client_id: String,
    pub host: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client: ClientInfo,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_seen: Instant,
    /// Joined (or rejoined) in the current rebalance.
    pub joined: bool,
    pub join_waiter: Option<(oneshot::Sender<JoinResult>, i16)>,
    pub sync_waiter: Option<oneshot::Sender<SyncResult>>,
    /// Join order, for leader election.
    pub seq: u64,
}

pub(crate) struct Group {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// `group.instance.id` → member id.
    pub instances: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join.
    pub pending: HashMap<String, Instant>,
    pub join_deadline: Option<Instant>,
    pub initial_delay_until: Option<Instant>,
    pub offsets: HashMap<(String, i32), Committed>,
    /// When the group last became empty (or last took a commit while empty).
    pub empty_since_ms: i64,
    pub next_seq: u64,
    /// Set for a group run by the KIP-848 consumer protocol.
    pub consumer: Option<consumer::ConsumerGroup>,
}

impl Group {
    fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            instances: HashMap::new(),
            pending: HashMap::new(),
            join_deadline: None,
            initial_delay_until: None,
            offsets: HashMap::new(),
            empty_since_ms: crate::log::now_ms(),
            next_seq: 0,
            consumer: None,
        }
    }

    /// Members of either protocol.
    pub fn has_members(&self) -> bool {
        !self.members.is_empty() || self.consumer.as_ref().is_some_and(|c| !c.members.is_empty())
    }

    fn state_name(&self) -> &'static str {
        match &self.consumer {
            Some(c) if self.members.is_empty() => consumer::state_name(c),
            _ => self.state.name(),
        }
    }
}

pub struct Coordinator {
    pub(crate) cfg: GroupConfig,
    pub(crate) log: Arc<Log>,
    pub(crate) groups: Mutex<HashMap<String, Group>>,
}

/// A summary of one group, for DescribeGroups and ListGroups.
#[derive(Clone, Debug)]
pub struct GroupView {
    pub id: String,
    pub state: &'static str,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

#[derive(Clone, Debug)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

impl Coordinator {
    /// Builds the coordinator from the offsets topic's log, replaying it.
    pub fn open(cfg: GroupConfig, log: Arc<Log>) -> Result<Coordinator, LogError> {
        let mut groups: HashMap<String, Group> = HashMap::new();
        let entries = store::replay(&log)?;
        let n = entries.len();
        for e in entries {
            match e {
                store::Entry::Offset { group, topic, partition, value } => {
                    let g = groups.entry(group.clone()).or_insert_with(|| Group::new(&group));
                    match value {
                        Some(c) => {
                            g.empty_since_ms = g.empty_since_ms.max(c.timestamp);
                            g.offsets.insert((topic, partition), c);
                        }
                        None => {
                            g.offsets.remove(&(topic, partition));
                        }
                    }
                }
                store::Entry::Group { group, value: Some(v) } => {
                    let g = groups.entry(group.clone()).or_insert_with(|| Group::new(&group));
                    // Members rejoin after a restart; what stays is the
                    // generation and protocol, so stale members are told.
                    g.generation = v.generation;
                    g.protocol_type = Some(v.protocol_type).filter(|p| !p.is_empty());
                    g.empty_since_ms = v.state_timestamp;
                }
                // A group's tombstone ends its membership record; its
                // offsets end by their own tombstones (written before it
                // when a group is deleted or its offsets expire), so offsets
                // a commit wrote around the time the group was dropped as
                // empty stay.
                store::Entry::Group { group, value: None } => {
                    if groups.get(&group).is_some_and(|g| g.offsets.is_empty()) {
                        groups.remove(&group);
                    } else if let Some(g) = groups.get_mut(&group) {
                        let (offsets, since) = (std::mem::take(&mut g.offsets), g.empty_since_ms);
                        *g = Group::new(&group);
                        (g.offsets, g.empty_since_ms) = (offsets, since);
                    }
                }
            }
        }
        tracing::info!(groups = groups.len(), records = n, "restored consumer groups and committed offsets");
        Ok(Coordinator { cfg, log, groups: Mutex::new(groups) })
    }

    /// Periodic work: session expiry, join-phase deadlines, offset retention.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut expired_offsets: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        let mut groups = self.groups.lock();
        let now_ms = crate::log::now_ms();
        let mut dead = Vec::new();
        for g in groups.values_mut() {
            classic::expire(self, g, now);
            consumer::expire(self, g, now);
            if g.state == State::Empty && !g.has_members() && g.pending.is_empty() && !g.offsets.is_empty() && now_ms - g.empty_since_ms > self.cfg.offsets_retention_ms {
                for (topic, partition) in g.offsets.keys() {
                    expired_offsets.push((store::offset_key(&g.id, topic, *partition), None));
                }
                tracing::info!(group = %g.id, offsets = g.offsets.len(), "offsets expired (offsets.retention.minutes)");
                g.offsets.clear();
                dead.push(g.id.clone());
            } else if g.state == State::Empty && !g.has_members() && g.pending.is_empty() && g.offsets.is_empty() && now_ms - g.empty_since_ms > self.cfg.empty_group_ms {
                // Joined and left without committing (or gave up after
                // MEMBER_ID_REQUIRED: its pending entry expires with the
                // session timeout): kept for ever, such groups would grow
                // without bound, one per group id ever tried.
                tracing::debug!(group = %g.id, "empty group without offsets dropped");
                dead.push(g.id.clone());
            }
        }
        for id in dead {
            groups.remove(&id);
            expired_offsets.push((store::group_key(&id), None));
        }
        drop(groups);
        if let Err(e) = store::write(&self.log, &expired_offsets) {
            tracing::error!(error = %e, "could not record expired offsets");
        }
    }

    /// Records a group's generation and members (no fsync: losing it only
    /// makes members rejoin).
    pub(crate) fn persist_group(&self, g: &Group) {
        let rec = store::GroupRecord {
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            generation: g.generation,
            protocol: g.protocol.clone(),
            leader: g.leader.clone(),
            state_timestamp: crate::log::now_ms(),
            members: g
                .members
                .values()
                .map(|m| store::MemberRecord {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client.client_id.clone(),
                    client_host: m.client.host.clone(),
                    rebalance_timeout: m.rebalance_timeout_ms,
                    session_timeout: m.session_timeout_ms,
                    subscription: g.protocol.as_ref().and_then(|p| m.protocols.iter().find(|(n, _)| n == p)).map(|(_, b)| b.clone()).unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        };
        let batch = crate::log::records::build_batch(&[crate::log::records::NewRecord { key: Some(&store::group_key(&g.id)), value: Some(&store::group_value(&rec)), timestamp: rec.state_timestamp, headers: &[] }]);
        // Staged: the next write-out or checkpoint takes it to the file.
        if let Err(e) = self.log.append_staged(&batch) {
            tracing::error!(group = %g.id, error = %e, "could not record group metadata");
        }
    }

    pub fn describe(&self, id: &str) -> Option<GroupView> {
        let groups = self.groups.lock();
        let g = groups.get(id)?;
        if let Some(cg) = g.consumer.as_ref().filter(|c| !c.members.is_empty()) {
            return Some(GroupView {
                id: g.id.clone(),
                state: consumer::state_name(cg),
                group_type: "consumer",
                protocol_type: "consumer".into(),
                protocol: String::new(),
                members: cg
                    .members
                    .values()
                    .map(|m| MemberView { member_id: m.id.clone(), instance_id: m.instance_id.clone(), client_id: m.client.client_id.clone(), client_host: m.client.host.clone(), metadata: Bytes::new(), assignment: Bytes::new() })
                    .collect(),
            });
        }
        Some(GroupView {
            id: g.id.clone(),
            state: g.state.name(),
            group_type: "classic",
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if g.state == State::Stable || g.state == State::CompletingRebalance { g.protocol.clone().unwrap_or_default() } else { String::new() },
            members: g
                .members
                .values()
                .map(|m| MemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client.client_id.clone(),
                    client_host: m.client.host.clone(),
                    metadata: g.protocol.as_ref().and_then(|p| m.protocols.iter().find(|(n, _)| n == p)).map(|(_, b)| b.clone()).unwrap_or_default(),
                    assignment: if g.state == State::Stable { m.assignment.clone() } else { Bytes::new() },
                })
                .collect(),
        })
    }

    /// Every group: (id, state, protocol type, group type).
    pub fn list(&self) -> Vec<(String, &'static str, String, &'static str)> {
        let groups = self.groups.lock();
        let mut v: Vec<_> = groups
            .values()
            .map(|g| match &g.consumer {
                Some(_) if g.members.is_empty() => (g.id.clone(), g.state_name(), "consumer".to_string(), "consumer"),
                _ => (g.id.clone(), g.state_name(), g.protocol_type.clone().unwrap_or_default(), "classic"),
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// DeleteGroups: only an empty group (or one that only has offsets).
    /// Returns a Kafka error code.
    pub fn delete_group(&self, id: &str) -> i16 {
        // Taken out of the map first (so no one joins it meanwhile), written
        // without holding the lock, put back if the write fails.
        let g = {
            let mut groups = self.groups.lock();
            let Some(g) = groups.get(id) else { return crate::protocol::code::GROUP_ID_NOT_FOUND };
            if g.state != State::Empty || g.has_members() {
                return crate::protocol::code::NON_EMPTY_GROUP;
            }
            groups.remove(id).expect("present")
        };
        let mut tombstones: Vec<(Bytes, Option<Bytes>)> = g.offsets.keys().map(|(t, p)| (store::offset_key(id, t, *p), None)).collect();
        tombstones.push((store::group_key(id), None));
        if let Err(e) = store::write(&self.log, &tombstones) {
            tracing::error!(group = id, error = %e, "could not delete a group");
            self.groups.lock().entry(id.to_string()).or_insert(g);
            return e.kafka_code();
        }
        crate::protocol::code::NONE
    }

    /// Committed offset lag inputs: every (topic, partition, offset) of a group.
    pub fn committed(&self, id: &str) -> Vec<(String, i32, Committed)> {
        let groups = self.groups.lock();
        groups.get(id).map_or_else(Vec::new, |g| g.offsets.iter().map(|((t, p), c)| (t.clone(), *p, c.clone())).collect())
    }
}

/// How often the coordinator's ticker runs.
pub const TICK: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_tombstone_after_a_commit_keeps_the_offsets_on_replay() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), crate::log::LogConfig::default(), false).unwrap());
        let c = Committed { offset: 42, leader_epoch: -1, metadata: String::new(), timestamp: 1 };
        // A commit that landed just before the tick's tombstone of the
        // group it dropped as empty; and a group deleted properly, its
        // offsets' tombstones first.
        let records = vec![
            (store::offset_key("raced", "t", 0), Some(store::offset_value(&c))),
            (store::group_key("raced"), None),
            (store::offset_key("gone", "t", 0), Some(store::offset_value(&c))),
            (store::offset_key("gone", "t", 0), None),
            (store::group_key("gone"), None),
        ];
        store::write(&log, &records).unwrap();
        let coordinator = Coordinator::open(GroupConfig::default(), Arc::clone(&log)).unwrap();
        assert_eq!(coordinator.committed("raced").iter().map(|(t, p, c)| (t.as_str(), *p, c.offset)).collect::<Vec<_>>(), vec![("t", 0, 42)]);
        assert!(coordinator.describe("gone").is_none() || coordinator.committed("gone").is_empty());
        assert!(!coordinator.list().iter().any(|(id, ..)| id == "gone"), "a deleted group came back");
    }
}
