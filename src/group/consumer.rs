//! The KIP-848 consumer group protocol: members send ConsumerGroupHeartbeat
//! with their subscription and the partitions they own; the coordinator
//! computes a target assignment with a server-side assignor ("uniform" or
//! "range") whenever the group epoch moves, and walks each member to its
//! target: first it must release partitions that go elsewhere, then it gets
//! partitions nobody else still owns. No stop-the-world rebalance.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{ClientInfo, Coordinator, Group};
use crate::protocol::code;

/// topic id → partitions.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

pub const ASSIGNORS: &[&str] = &["uniform", "range"];

#[derive(Default)]
pub(crate) struct ConsumerGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, CMember>,
    pub target: HashMap<String, Assignment>,
    /// Subscribed topics and their partition counts when the target was made.
    pub topics_seen: BTreeMap<String, i32>,
}

pub(crate) struct CMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client: ClientInfo,
    pub epoch: i32,
    pub subscribed: Vec<String>,
    pub assigned: Assignment,
    pub revoking: Assignment,
    pub rebalance_timeout_ms: i32,
    pub last_seen: Instant,
    pub revoke_deadline: Option<Instant>,
    /// The epoch before the last bump, accepted while the member may not
    /// have received the response that moved it (as Kafka does).
    pub previous_epoch: i32,
}

/// A ConsumerGroupHeartbeat, decoded.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatArgs {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed: Option<Vec<String>>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub owned: Option<Assignment>,
}

#[derive(Clone, Debug, Default)]
pub struct HeartbeatResult {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    pub assignment: Option<Assignment>,
}

fn fail(error: i16, message: &str) -> HeartbeatResult {
    HeartbeatResult { error, message: Some(message.to_string()), member_epoch: -1, ..HeartbeatResult::default() }
}

/// Topic lookup: name → (id, partition count).
pub type TopicLookup<'a> = &'a dyn Fn(&str) -> Option<(Uuid, i32)>;

impl Coordinator {
    pub fn consumer_heartbeat(&self, a: HeartbeatArgs, client: ClientInfo, topics: TopicLookup<'_>) -> HeartbeatResult {
        let now = Instant::now();
        tracing::trace!(args = ?a, "ConsumerGroupHeartbeat");
        if a.group_id.is_empty() {
            return fail(code::INVALID_GROUP_ID, "empty group id");
        }
        if a.regex.as_deref().is_some_and(|r| !r.is_empty()) {
            return fail(code::INVALID_REQUEST, "subscription by regular expression is not supported yet");
        }
        if let Some(name) = &a.assignor {
            if !ASSIGNORS.contains(&name.as_str()) {
                return fail(code::UNSUPPORTED_ASSIGNOR, "server assignors are uniform and range");
            }
        }
        let mut groups = self.groups.lock();
        let g = groups.entry(a.group_id.clone()).or_insert_with(|| Group::new(&a.group_id));
        if !g.members.is_empty() {
            return fail(code::INCONSISTENT_GROUP_PROTOCOL, "the group is a classic group with members");
        }
        let cg = g.consumer.get_or_insert_with(|| ConsumerGroup { assignor: "uniform".into(), ..ConsumerGroup::default() });

        let member_id = match a.member_epoch {
            0 => {
                let Some(subscribed) = a.subscribed.clone() else { return fail(code::INVALID_REQUEST, "a joining member must send its subscription") };
                let id = if a.member_id.is_empty() { uuid::Uuid::new_v4().simple().to_string() } else { a.member_id.clone() };
                if let Some(instance) = &a.instance_id {
                    // A static member coming back replaces its old self.
                    let old = cg.members.values().find(|m| m.instance_id.as_ref() == Some(instance) && m.id != id).map(|m| m.id.clone());
                    if let Some(old) = old {
                        let prev = cg.members.remove(&old).expect("found");
                        cg.target.remove(&old);
                        cg.members.insert(id.clone(), CMember { id: id.clone(), epoch: 0, assigned: Assignment::new(), revoking: Assignment::new(), revoke_deadline: None, last_seen: now, ..prev });
                    }
                }
                let m = cg.members.entry(id.clone()).or_insert_with(|| CMember {
                    id: id.clone(),
                    instance_id: a.instance_id.clone(),
                    rack_id: a.rack_id.clone(),
                    client: client.clone(),
                    epoch: 0,
                    subscribed: Vec::new(),
                    assigned: Assignment::new(),
                    revoking: Assignment::new(),
                    rebalance_timeout_ms: a.rebalance_timeout_ms,
                    last_seen: now,
                    revoke_deadline: None,
                    previous_epoch: -1,
                });
                m.epoch = 0;
                m.subscribed = subscribed;
                m.client = client;
                cg.epoch += 1;
                tracing::info!(group = %a.group_id, member = %id, epoch = cg.epoch, "consumer joined (KIP-848)");
                id
            }
            -1 | -2 => {
                if cg.members.remove(&a.member_id).is_some() {
                    cg.target.remove(&a.member_id);
                    cg.epoch += 1;
                    tracing::info!(group = %a.group_id, member = %a.member_id, "consumer left (KIP-848)");
                }
                if cg.members.is_empty() {
                    g.empty_since_ms = crate::log::now_ms();
                }
                return HeartbeatResult { error: code::NONE, member_id: Some(a.member_id), member_epoch: a.member_epoch, heartbeat_interval_ms: self.cfg.consumer_heartbeat_ms, ..HeartbeatResult::default() };
            }
            epoch => {
                let Some(m) = cg.members.get_mut(&a.member_id) else { return fail(code::UNKNOWN_MEMBER_ID, "unknown member") };
                // A member whose last response was lost still sends the
                // previous epoch; it may go on if it owns nothing it should
                // not (Kafka's rule), and is simply told the current state.
                let owns_only_assigned = a.owned.as_ref().is_some_and(|o| o.iter().all(|(t, ps)| m.assigned.get(t).is_some_and(|a| ps.is_subset(a))));
                let tolerated = epoch == m.previous_epoch && epoch < m.epoch && owns_only_assigned;
                if epoch != m.epoch && !tolerated {
                    // The member missed something: it must rejoin.
                    let id = a.member_id.clone();
                    cg.members.remove(&id);
                    cg.target.remove(&id);
                    cg.epoch += 1;
                    return fail(code::FENCED_MEMBER_EPOCH, "member epoch does not match");
                }
                if let Some(sub) = &a.subscribed {
                    if *sub != m.subscribed {
                        m.subscribed = sub.clone();
                        cg.epoch += 1;
                    }
                }
                a.member_id.clone()
            }
        };
        let m = cg.members.get_mut(&member_id).expect("member present");
        m.last_seen = now;
        if a.rebalance_timeout_ms > 0 {
            m.rebalance_timeout_ms = a.rebalance_timeout_ms;
        }
        if let Some(name) = &a.assignor {
            cg.assignor = name.clone();
        }

        // Topic metadata changes (new partitions, new topics) move the epoch.
        let mut seen = BTreeMap::new();
        for m in cg.members.values() {
            for t in &m.subscribed {
                seen.insert(t.clone(), topics(t).map_or(0, |(_, n)| n));
            }
        }
        if seen != cg.topics_seen {
            cg.topics_seen = seen;
            cg.epoch += 1;
        }
        if cg.assignment_epoch < cg.epoch {
            cg.target = assign(&cg.assignor, &cg.members, topics);
            cg.assignment_epoch = cg.epoch;
        }
        let result = reconcile(cg, &member_id, a.owned.as_ref(), now);
        HeartbeatResult { heartbeat_interval_ms: self.cfg.consumer_heartbeat_ms, ..result }
    }
}

/// Moves one member towards its target assignment.
fn reconcile(cg: &mut ConsumerGroup, id: &str, owned: Option<&Assignment>, now: Instant) -> HeartbeatResult {
    let target = cg.target.get(id).cloned().unwrap_or_default();
    // Partitions other members still hold (assigned or being released).
    let mut held_by_others: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    for (mid, m) in &cg.members {
        if mid != id {
            for (t, ps) in m.assigned.iter().chain(m.revoking.iter()) {
                held_by_others.extend(ps.iter().map(|p| (*t, *p)));
            }
        }
    }
    let assignment_epoch = cg.assignment_epoch;
    let m = cg.members.get_mut(id).expect("member present");
    let before = (m.epoch, m.assigned.clone());
    if !m.revoking.is_empty() {
        let released = owned.is_some_and(|o| !m.revoking.iter().any(|(t, ps)| o.get(t).is_some_and(|op| !op.is_disjoint(ps))));
        if released {
            m.revoking.clear();
            m.revoke_deadline = None;
        } else {
            return HeartbeatResult { error: code::NONE, member_id: Some(m.id.clone()), member_epoch: m.epoch, ..HeartbeatResult::default() };
        }
    }
    let mut to_revoke = Assignment::new();
    for (t, ps) in &m.assigned {
        let keep = target.get(t);
        let gone: BTreeSet<i32> = ps.iter().filter(|p| !keep.is_some_and(|k| k.contains(p))).copied().collect();
        if !gone.is_empty() {
            to_revoke.insert(*t, gone);
        }
    }
    if !to_revoke.is_empty() {
        for (t, gone) in &to_revoke {
            if let Some(ps) = m.assigned.get_mut(t) {
                ps.retain(|p| !gone.contains(p));
            }
        }
        m.assigned.retain(|_, ps| !ps.is_empty());
        m.revoking = to_revoke;
        m.revoke_deadline = Some(now + Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64));
        return HeartbeatResult { error: code::NONE, member_id: Some(m.id.clone()), member_epoch: m.epoch, assignment: Some(m.assigned.clone()), ..HeartbeatResult::default() };
    }
    for (t, ps) in &target {
        for p in ps {
            if !held_by_others.contains(&(*t, *p)) {
                m.assigned.entry(*t).or_default().insert(*p);
            }
        }
    }
    if m.epoch != assignment_epoch {
        m.previous_epoch = m.epoch;
    }
    m.epoch = assignment_epoch;
    let changed = (m.epoch, &m.assigned) != (before.0, &before.1);
    let out_of_sync = owned.is_some_and(|o| *o != m.assigned);
    HeartbeatResult {
        error: code::NONE,
        member_id: Some(m.id.clone()),
        member_epoch: m.epoch,
        assignment: (changed || out_of_sync || before.0 == 0).then(|| m.assigned.clone()),
        ..HeartbeatResult::default()
    }
}

/// The target assignment of every member.
fn assign(assignor: &str, members: &BTreeMap<String, CMember>, topics: TopicLookup<'_>) -> HashMap<String, Assignment> {
    let mut out: HashMap<String, Assignment> = members.keys().map(|id| (id.clone(), Assignment::new())).collect();
    let mut all_topics: BTreeSet<&String> = BTreeSet::new();
    for m in members.values() {
        all_topics.extend(m.subscribed.iter());
    }
    if assignor == "range" {
        // Per topic, contiguous ranges over the members subscribed to it.
        for t in all_topics {
            let Some((id, n)) = topics(t) else { continue };
            let subs: Vec<&String> = members.values().filter(|m| m.subscribed.contains(t)).map(|m| &m.id).collect();
            let k = subs.len() as i32;
            for (i, mid) in subs.iter().enumerate() {
                let i = i as i32;
                let (base, extra) = (n / k, n % k);
                let start = i * base + i.min(extra);
                let len = base + if i < extra { 1 } else { 0 };
                let set: BTreeSet<i32> = (start..start + len).collect();
                if !set.is_empty() {
                    out.get_mut(*mid).expect("member").insert(id, set);
                }
            }
        }
        return out;
    }
    // Uniform: balanced counts, keeping what members already have (sticky).
    let mut owner: HashMap<(Uuid, i32), String> = HashMap::new();
    let mut all: Vec<(Uuid, i32, &String)> = Vec::new();
    for t in &all_topics {
        if let Some((id, n)) = topics(t) {
            all.extend((0..n).map(|p| (id, p, *t)));
        }
    }
    let eligible = |m: &CMember, topic: &String| m.subscribed.contains(topic);
    let count = all.len();
    let k = members.len().max(1);
    let quota = |i: usize| count / k + usize::from(i < count % k);
    let order: Vec<&String> = members.keys().collect();
    let mut load: HashMap<&String, usize> = HashMap::new();
    let quotas: HashMap<&String, usize> = order.iter().enumerate().map(|(i, id)| (*id, quota(i))).collect();
    for (t, p, topic) in &all {
        for m in members.values() {
            if eligible(m, topic) && m.assigned.get(t).is_some_and(|ps| ps.contains(p)) && load.get(&m.id).copied().unwrap_or(0) < quotas[&m.id] {
                owner.insert((*t, *p), m.id.clone());
                *load.entry(&m.id).or_default() += 1;
                break;
            }
        }
    }
    // Most constrained partitions first (fewest members subscribed), so a
    // partition only some members can take does not unbalance the rest.
    let mut rest: Vec<&(Uuid, i32, &String)> = all.iter().filter(|(t, p, _)| !owner.contains_key(&(*t, *p))).collect();
    rest.sort_by_key(|(t, p, topic)| (members.values().filter(|m| eligible(m, topic)).count(), *t, *p));
    for (t, p, topic) in rest {
        let best = members.values().filter(|m| eligible(m, topic)).min_by_key(|m| (load.get(&m.id).copied().unwrap_or(0), m.id.clone()));
        if let Some(m) = best {
            owner.insert((*t, *p), m.id.clone());
            *load.entry(&m.id).or_default() += 1;
        }
    }
    for ((t, p), mid) in owner {
        out.get_mut(&mid).expect("member").entry(t).or_default().insert(p);
    }
    out
}

/// Session expiry and stuck revocations, run by the ticker.
pub(crate) fn expire(c: &Coordinator, g: &mut Group, now: Instant) {
    let Some(cg) = g.consumer.as_mut() else { return };
    let session = Duration::from_millis(c.cfg.consumer_session_ms.max(0) as u64);
    let gone: Vec<String> = cg
        .members
        .values()
        .filter(|m| now.duration_since(m.last_seen) > session || m.revoke_deadline.is_some_and(|d| now > d))
        .map(|m| m.id.clone())
        .collect();
    for id in gone {
        tracing::info!(group = %g.id, member = %id, "consumer session expired (KIP-848)");
        cg.members.remove(&id);
        cg.target.remove(&id);
        cg.epoch += 1;
        if cg.members.is_empty() {
            g.empty_since_ms = crate::log::now_ms();
        }
    }
}

/// Kafka's state name for a consumer group.
pub(crate) fn state_name(cg: &ConsumerGroup) -> &'static str {
    if cg.members.is_empty() {
        "Empty"
    } else if cg.assignment_epoch < cg.epoch {
        "Assigning"
    } else if cg.members.values().any(|m| m.epoch != cg.assignment_epoch || !m.revoking.is_empty()) {
        "Reconciling"
    } else {
        "Stable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> CMember {
        CMember {
            id: id.into(),
            instance_id: None,
            rack_id: None,
            client: ClientInfo::default(),
            epoch: 0,
            subscribed: topics.iter().map(|t| t.to_string()).collect(),
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            rebalance_timeout_ms: 1000,
            last_seen: Instant::now(),
            revoke_deadline: None,
            previous_epoch: -1,
        }
    }

    #[test]
    fn uniform_and_range_cover_every_partition_once() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let lookup = |t: &str| match t {
            "a" => Some((a, 7)),
            "b" => Some((b, 2)),
            _ => None,
        };
        let mut members = BTreeMap::new();
        for (id, t) in [("m1", vec!["a", "b"]), ("m2", vec!["a"]), ("m3", vec!["a", "b", "nope"])] {
            members.insert(id.to_string(), member(id, &t));
        }
        for assignor in ASSIGNORS {
            let out = assign(assignor, &members, &lookup);
            let mut seen = BTreeSet::new();
            for (mid, asg) in &out {
                for (t, ps) in asg {
                    assert!(*t != b || mid != "m2", "{assignor}: m2 is not subscribed to b");
                    for p in ps {
                        assert!(seen.insert((*t, *p)), "{assignor}: {t}/{p} twice");
                    }
                }
            }
            assert_eq!(seen.len(), 9, "{assignor}: every partition assigned");
        }
        let out = assign("uniform", &members, &lookup);
        let sizes: Vec<usize> = out.values().map(|x| x.values().map(|s| s.len()).sum()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "uniform is balanced: {sizes:?}");
    }

    #[test]
    fn a_member_first_releases_then_the_other_receives() {
        let t = Uuid::from_u128(9);
        let lookup = |_: &str| Some((t, 4));
        let mut cg = ConsumerGroup { assignor: "uniform".into(), ..ConsumerGroup::default() };
        cg.members.insert("m1".into(), member("m1", &["x"]));
        cg.epoch = 1;
        cg.target = assign("uniform", &cg.members, &lookup);
        cg.assignment_epoch = 1;
        let r = reconcile(&mut cg, "m1", None, Instant::now());
        assert_eq!(r.assignment.unwrap()[&t].len(), 4);
        // m2 joins: m1 must give up two before m2 gets them.
        cg.members.insert("m2".into(), member("m2", &["x"]));
        cg.epoch = 2;
        cg.target = assign("uniform", &cg.members, &lookup);
        cg.assignment_epoch = 2;
        let r2 = reconcile(&mut cg, "m2", None, Instant::now());
        assert!(r2.assignment.unwrap_or_default().is_empty(), "nothing free yet");
        let r1 = reconcile(&mut cg, "m1", None, Instant::now());
        let kept = r1.assignment.unwrap();
        assert_eq!(kept[&t].len(), 2, "m1 is told to keep two");
        assert_eq!(r1.member_epoch, 1, "its epoch moves only after releasing");
        let r1 = reconcile(&mut cg, "m1", Some(&kept), Instant::now());
        assert_eq!(r1.member_epoch, 2);
        let r2 = reconcile(&mut cg, "m2", Some(&Assignment::new()), Instant::now());
        assert_eq!(r2.assignment.unwrap()[&t].len(), 2, "released partitions reach m2");
        assert_eq!(r2.member_epoch, 2);
    }

    #[test]
    fn a_lost_response_does_not_fence_a_member() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(crate::log::Log::open(dir.path(), crate::log::LogConfig::default(), false).unwrap());
        let c = Coordinator::open(crate::group::GroupConfig::default(), log).unwrap();
        let t = Uuid::from_u128(3);
        let lookup = |_: &str| Some((t, 2));
        let join = |member: &str, epoch: i32, owned: Option<Assignment>| HeartbeatArgs {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: 60_000,
            subscribed: if epoch == 0 { Some(vec!["x".into()]) } else { None },
            owned,
            ..HeartbeatArgs::default()
        };
        let r = c.consumer_heartbeat(join("m1", 0, None), ClientInfo::default(), &lookup);
        let first_epoch = r.member_epoch;
        let owned = r.assignment.clone().unwrap();
        assert_eq!(owned[&t].len(), 2);
        // Another member joins; m1's next heartbeat moves it on, but say that
        // response is lost: m1 still sends the epoch it knew.
        c.consumer_heartbeat(join("m2", 0, None), ClientInfo::default(), &lookup);
        let r = c.consumer_heartbeat(join("m1", first_epoch, Some(owned.clone())), ClientInfo::default(), &lookup);
        assert_eq!(r.error, 0);
        let kept = r.assignment.clone().unwrap();
        let r = c.consumer_heartbeat(join("m1", first_epoch, Some(kept.clone())), ClientInfo::default(), &lookup);
        assert_eq!(r.error, 0);
        let later = r.member_epoch;
        assert!(later > first_epoch, "released: the member moves to the new epoch");
        // That response is lost: m1 sends its old epoch again, owning only
        // what it was left. Kafka tolerates the previous epoch.
        let r = c.consumer_heartbeat(join("m1", first_epoch, Some(kept.clone())), ClientInfo::default(), &lookup);
        assert_eq!((r.error, r.member_epoch), (0, later), "the previous epoch is tolerated: {:?}", r.message);
        // Owning more than it has been assigned with the old epoch is fenced.
        let r = c.consumer_heartbeat(join("m1", first_epoch, Some(owned.clone())), ClientInfo::default(), &lookup);
        assert_eq!(r.error, crate::protocol::code::FENCED_MEMBER_EPOCH);
        // (Fencing removed it; an epoch that was never its own is fenced too.)
        let r = c.consumer_heartbeat(join("m2", later + 5, None), ClientInfo::default(), &lookup);
        assert_eq!(r.error, crate::protocol::code::FENCED_MEMBER_EPOCH);
    }

}

/// A KIP-848 group as ConsumerGroupDescribe shows it.
#[derive(Clone, Debug)]
pub struct ConsumerGroupView {
    pub state: &'static str,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberView>,
}

#[derive(Clone, Debug)]
pub struct ConsumerMemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub assigned: Assignment,
    pub target: Assignment,
}

impl Coordinator {
    pub fn describe_consumer(&self, id: &str) -> Option<ConsumerGroupView> {
        let groups = self.groups.lock();
        let cg = groups.get(id)?.consumer.as_ref()?;
        Some(ConsumerGroupView {
            state: state_name(cg),
            epoch: cg.epoch,
            assignment_epoch: cg.assignment_epoch,
            assignor: cg.assignor.clone(),
            members: cg
                .members
                .values()
                .map(|m| ConsumerMemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    epoch: m.epoch,
                    client_id: m.client.client_id.clone(),
                    client_host: m.client.host.clone(),
                    subscribed: m.subscribed.clone(),
                    assigned: m.assigned.clone(),
                    target: cg.target.get(&m.id).cloned().unwrap_or_default(),
                })
                .collect(),
        })
    }
}
