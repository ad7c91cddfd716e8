//! The classic group protocol's state machine: JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup, as Kafka's group coordinator runs them.
//!
//! Empty → PreparingRebalance (members join) → CompletingRebalance (the
//! leader assigns) → Stable; a join, leave or expiry in Stable or
//! CompletingRebalance goes back to PreparingRebalance.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{ClientInfo, Coordinator, Group, Member, State};
use crate::protocol::code;

/// A JoinGroup request, already decoded.
#[derive(Clone, Debug)]
pub struct JoinArgs {
    pub group_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub version: i16,
}

#[derive(Clone, Debug, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

#[derive(Clone, Debug, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

fn join_error(error: i16, member_id: &str) -> JoinResult {
    JoinResult { error, generation: -1, member_id: member_id.to_string(), ..JoinResult::default() }
}

fn sync_error(error: i16) -> SyncResult {
    SyncResult { error, ..SyncResult::default() }
}

fn new_member_id(client: &ClientInfo) -> String {
    let prefix = if client.client_id.is_empty() { "member" } else { &client.client_id };
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl Coordinator {
    pub async fn join(&self, mut a: JoinArgs, client: ClientInfo) -> JoinResult {
        // Copies: the request's bytes pin its connection's whole read buffer.
        a.protocols = a.protocols.into_iter().map(|(n, m)| (n, Bytes::copy_from_slice(&m))).collect();
        let rx = {
            let mut groups = self.groups.lock();
            if a.group_id.is_empty() {
                return join_error(code::INVALID_GROUP_ID, &a.member_id);
            }
            if a.session_timeout_ms < self.cfg.min_session_timeout_ms || a.session_timeout_ms > self.cfg.max_session_timeout_ms {
                return join_error(code::INVALID_SESSION_TIMEOUT, &a.member_id);
            }
            if a.protocols.is_empty() || a.protocol_type.is_empty() {
                return join_error(code::INCONSISTENT_GROUP_PROTOCOL, &a.member_id);
            }
            let g = groups.entry(a.group_id.clone()).or_insert_with(|| Group::new(&a.group_id));
            if g.consumer.as_ref().is_some_and(|c| !c.members.is_empty()) {
                return join_error(code::INCONSISTENT_GROUP_PROTOCOL, &a.member_id);
            }
            match self.join_locked(g, a, client) {
                Ok(rx) => rx,
                Err(result) => return result,
            }
        };
        rx.await.unwrap_or_else(|_| join_error(code::UNKNOWN_MEMBER_ID, ""))
    }

    #[allow(clippy::result_large_err)] // the Err is the answer itself, sent at once
    fn join_locked(&self, g: &mut Group, a: JoinArgs, client: ClientInfo) -> Result<oneshot::Receiver<JoinResult>, JoinResult> {
        let now = Instant::now();
        let mut static_rejoin = false;
        // Protocol type and protocols must fit the group's.
        if g.state != State::Empty {
            if g.protocol_type.as_deref() != Some(a.protocol_type.as_str()) {
                return Err(join_error(code::INCONSISTENT_GROUP_PROTOCOL, &a.member_id));
            }
            let supported = |name: &str| g.members.values().filter(|m| Some(&m.id) != Some(&a.member_id)).all(|m| m.protocols.iter().any(|(n, _)| n == name));
            if !a.protocols.iter().any(|(n, _)| supported(n)) {
                return Err(join_error(code::INCONSISTENT_GROUP_PROTOCOL, &a.member_id));
            }
        }
        let rebalance_timeout = if a.version == 0 { a.session_timeout_ms } else { a.rebalance_timeout_ms };

        let member_id = if a.member_id.is_empty() {
            match &a.instance_id {
                Some(instance) => {
                    let new_id = new_member_id(&client);
                    if let Some(old_id) = g.instances.get(instance).cloned() {
                        // A static member comes back: it takes over its old
                        // slot under a new id; the old id is fenced.
                        if let Some(mut m) = g.members.remove(&old_id) {
                            if let Some((tx, _)) = m.join_waiter.take() {
                                let _ = tx.send(join_error(code::FENCED_INSTANCE_ID, &old_id));
                            }
                            if let Some(tx) = m.sync_waiter.take() {
                                let _ = tx.send(sync_error(code::FENCED_INSTANCE_ID));
                            }
                            // As Kafka: no rebalance while the group's chosen
                            // protocol is still one the member offers (its
                            // metadata, e.g. owned partitions, may differ).
                            let same_protocols = g.protocol.as_ref().is_some_and(|p| a.protocols.iter().any(|(n, _)| n == p));
                            m.protocols = a.protocols.clone();
                            m.id = new_id.clone();
                            m.client = client.clone();
                            m.session_timeout_ms = a.session_timeout_ms;
                            m.rebalance_timeout_ms = rebalance_timeout;
                            m.last_seen = now;
                            let was_leader = g.leader.as_deref() == Some(old_id.as_str());
                            if was_leader {
                                g.leader = Some(new_id.clone());
                            }
                            g.instances.insert(instance.clone(), new_id.clone());
                            if g.state == State::Stable && same_protocols {
                                // No rebalance (KIP-345): the same assignment
                                // is returned by the coming SyncGroup. A
                                // returning leader (v9+) sees the members but
                                // is told to skip the assignment (KIP-814);
                                // an older one gets no members, and whatever
                                // it then syncs is ignored in Stable.
                                g.members.insert(new_id.clone(), m);
                                let result = JoinResult {
                                    error: code::NONE,
                                    generation: g.generation,
                                    protocol_type: g.protocol_type.clone(),
                                    protocol: g.protocol.clone(),
                                    leader: g.leader.clone().unwrap_or_default(),
                                    member_id: new_id.clone(),
                                    members: if was_leader && a.version >= 9 { leader_members(g) } else { Vec::new() },
                                    skip_assignment: was_leader && a.version >= 9,
                                };
                                self.persist_group(g);
                                return Err(result);
                            }
                            m.protocols = a.protocols.clone();
                            // Not the fast path: its rejoin below must start a rebalance.
                            m.assignment = Bytes::new();
                            g.members.insert(new_id.clone(), m);
                            static_rejoin = true;
                        }
                    }
                    new_id
                }
                None if a.version >= 4 => {
                    // KIP-394: hand out an id and ask the member to rejoin with it.
                    let id = new_member_id(&client);
                    g.pending.insert(id.clone(), now + Duration::from_millis(a.session_timeout_ms as u64));
                    return Err(join_error(code::MEMBER_ID_REQUIRED, &id));
                }
                None => new_member_id(&client),
            }
        } else {
            let known = g.members.contains_key(&a.member_id) || g.pending.contains_key(&a.member_id);
            if !known {
                return Err(join_error(code::UNKNOWN_MEMBER_ID, &a.member_id));
            }
            if let Some(instance) = &a.instance_id {
                if g.instances.get(instance).is_some_and(|id| *id != a.member_id) {
                    return Err(join_error(code::FENCED_INSTANCE_ID, &a.member_id));
                }
            }
            a.member_id.clone()
        };
        g.pending.remove(&member_id);

        let (tx, rx) = oneshot::channel();
        let changed = match g.members.get_mut(&member_id) {
            Some(m) => {
                let changed = m.protocols != a.protocols;
                m.protocols = a.protocols.clone();
                m.session_timeout_ms = a.session_timeout_ms;
                m.rebalance_timeout_ms = rebalance_timeout;
                m.last_seen = now;
                m.joined = true;
                m.join_waiter = Some((tx, a.version));
                changed || static_rejoin || g.state != State::Stable || g.leader.as_deref() == Some(member_id.as_str())
            }
            None => {
                let seq = g.next_seq;
                g.next_seq += 1;
                if let Some(instance) = &a.instance_id {
                    g.instances.insert(instance.clone(), member_id.clone());
                }
                g.members.insert(
                    member_id.clone(),
                    Member {
                        id: member_id.clone(),
                        instance_id: a.instance_id.clone(),
                        client,
                        session_timeout_ms: a.session_timeout_ms,
                        rebalance_timeout_ms: rebalance_timeout,
                        protocols: a.protocols.clone(),
                        assignment: Bytes::new(),
                        last_seen: now,
                        joined: true,
                        join_waiter: Some((tx, a.version)),
                        sync_waiter: None,
                        seq,
                    },
                );
                true
            }
        };
        if g.protocol_type.is_none() {
            g.protocol_type = Some(a.protocol_type.clone());
        }
        tracing::debug!(group = %g.id, member = %member_id, instance = a.instance_id.as_deref().unwrap_or(""), state = g.state.name(), changed, "member joins");
        match g.state {
            State::Empty | State::Stable | State::CompletingRebalance if changed => self.prepare_rebalance(g, now),
            State::Stable | State::CompletingRebalance => {
                // A known member rejoining with nothing changed in Stable: it
                // gets the current generation back right away.
                let m = g.members.get_mut(&member_id).expect("just updated");
                if let Some((tx, _)) = m.join_waiter.take() {
                    let _ = tx.send(JoinResult {
                        error: code::NONE,
                        generation: g.generation,
                        protocol_type: g.protocol_type.clone(),
                        protocol: g.protocol.clone(),
                        leader: g.leader.clone().unwrap_or_default(),
                        member_id: member_id.clone(),
                        members: Vec::new(),
                        skip_assignment: false,
                    });
                }
            }
            State::PreparingRebalance => {
                // Each new member of a first rebalance extends the initial delay.
                if let Some(until) = g.initial_delay_until {
                    let extended = until.max(now + Duration::from_millis(self.cfg.initial_rebalance_delay_ms));
                    g.initial_delay_until = Some(g.join_deadline.map_or(extended, |d| extended.min(d)));
                }
            }
            _ => {}
        }
        self.maybe_complete_join(g, now);
        Ok(rx)
    }

    /// Starts a rebalance: every member must rejoin before the deadline.
    pub(crate) fn prepare_rebalance(&self, g: &mut Group, now: Instant) {
        let first = g.state == State::Empty;
        for m in g.members.values_mut() {
            if m.join_waiter.is_none() {
                m.joined = false;
            }
            if let Some(tx) = m.sync_waiter.take() {
                let _ = tx.send(sync_error(code::REBALANCE_IN_PROGRESS));
            }
        }
        let timeout = g.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0).max(0) as u64;
        g.join_deadline = Some(now + Duration::from_millis(timeout));
        g.initial_delay_until = if first && self.cfg.initial_rebalance_delay_ms > 0 { Some((now + Duration::from_millis(self.cfg.initial_rebalance_delay_ms)).min(now + Duration::from_millis(timeout))) } else { None };
        g.state = State::PreparingRebalance;
        tracing::debug!(group = %g.id, members = g.members.len(), "preparing rebalance");
    }

    /// Ends the join phase when every member has rejoined (and the initial
    /// delay is over), or when its deadline passed.
    pub(crate) fn maybe_complete_join(&self, g: &mut Group, now: Instant) {
        if g.state != State::PreparingRebalance {
            return;
        }
        // Ids handed out with MEMBER_ID_REQUIRED are members on their way.
        let all_joined = g.members.values().all(|m| m.joined) && g.pending.is_empty();
        let delay_over = g.initial_delay_until.is_none_or(|t| now >= t);
        let deadline_passed = g.join_deadline.is_some_and(|t| now >= t);
        if !(deadline_passed || all_joined && delay_over) {
            return;
        }
        // Dynamic members that did not rejoin in time are out; static members
        // stay (KIP-345) until their session times out.
        let gone: Vec<String> = g.members.values().filter(|m| !m.joined && m.instance_id.is_none()).map(|m| m.id.clone()).collect();
        for id in gone {
            remove_member(g, &id);
        }
        g.generation += 1;
        g.initial_delay_until = None;
        g.join_deadline = None;
        if g.members.is_empty() {
            g.state = State::Empty;
            g.protocol = None;
            g.protocol_type = None;
            g.leader = None;
            g.empty_since_ms = crate::log::now_ms();
            self.persist_group(g);
            return;
        }
        g.protocol = select_protocol(g);
        if g.leader.as_ref().is_none_or(|l| !g.members.get(l).is_some_and(|m| m.joined)) {
            g.leader = g.members.values().filter(|m| m.joined).min_by_key(|m| m.seq).map(|m| m.id.clone());
        }
        g.state = State::CompletingRebalance;
        let leader = g.leader.clone().unwrap_or_default();
        let all = leader_members(g);
        for m in g.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_seen = now;
            if let Some((tx, _version)) = m.join_waiter.take() {
                let _ = tx.send(JoinResult {
                    error: code::NONE,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol: g.protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader { all.clone() } else { Vec::new() },
                    skip_assignment: false,
                });
            }
        }
        tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), protocol = g.protocol.as_deref().unwrap_or(""), "rebalance: members joined");
        self.persist_group(g);
    }

    #[allow(clippy::too_many_arguments)] // one per SyncGroup field
    pub async fn sync(&self, group_id: &str, generation: i32, member_id: &str, instance_id: Option<&str>, protocol_type: Option<&str>, protocol: Option<&str>, assignments: Vec<(String, Bytes)>) -> SyncResult {
        let rx = {
            let mut groups = self.groups.lock();
            let Some(g) = groups.get_mut(group_id) else { return sync_error(code::UNKNOWN_MEMBER_ID) };
            if let Some(instance) = instance_id {
                if g.instances.get(instance).is_some_and(|id| id != member_id) {
                    return sync_error(code::FENCED_INSTANCE_ID);
                }
            }
            if !g.members.contains_key(member_id) {
                return sync_error(code::UNKNOWN_MEMBER_ID);
            }
            if generation != g.generation {
                return sync_error(code::ILLEGAL_GENERATION);
            }
            if protocol_type.is_some_and(|p| Some(p) != g.protocol_type.as_deref()) || protocol.is_some_and(|p| Some(p) != g.protocol.as_deref()) {
                return sync_error(code::INCONSISTENT_GROUP_PROTOCOL);
            }
            match g.state {
                State::Empty | State::Dead => return sync_error(code::UNKNOWN_MEMBER_ID),
                State::PreparingRebalance => return sync_error(code::REBALANCE_IN_PROGRESS),
                State::Stable => {
                    let m = g.members.get_mut(member_id).expect("checked");
                    m.last_seen = Instant::now();
                    return SyncResult { error: code::NONE, protocol_type: g.protocol_type.clone(), protocol: g.protocol.clone(), assignment: m.assignment.clone() };
                }
                State::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            g.members.get_mut(member_id).expect("checked").sync_waiter = Some(tx);
            if g.leader.as_deref() == Some(member_id) {
                for (id, assignment) in assignments {
                    if let Some(m) = g.members.get_mut(&id) {
                        // A copy: the request's bytes pin its whole read buffer.
                        m.assignment = Bytes::copy_from_slice(&assignment);
                    }
                }
                g.state = State::Stable;
                let now = Instant::now();
                for m in g.members.values_mut() {
                    m.last_seen = now;
                    if let Some(tx) = m.sync_waiter.take() {
                        let _ = tx.send(SyncResult { error: code::NONE, protocol_type: g.protocol_type.clone(), protocol: g.protocol.clone(), assignment: m.assignment.clone() });
                    }
                }
                tracing::info!(group = %g.id, generation = g.generation, "rebalance: assignment distributed, group stable");
                self.persist_group(g);
            }
            rx
        };
        rx.await.unwrap_or_else(|_| sync_error(code::REBALANCE_IN_PROGRESS))
    }

    pub fn heartbeat(&self, group_id: &str, generation: i32, member_id: &str, instance_id: Option<&str>) -> i16 {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group_id) else { return code::UNKNOWN_MEMBER_ID };
        if let Some(instance) = instance_id {
            if g.instances.get(instance).is_some_and(|id| id != member_id) {
                return code::FENCED_INSTANCE_ID;
            }
        }
        let Some(m) = g.members.get_mut(member_id) else { return code::UNKNOWN_MEMBER_ID };
        m.last_seen = Instant::now();
        match g.state {
            State::Empty | State::Dead => code::UNKNOWN_MEMBER_ID,
            _ if generation != g.generation => code::ILLEGAL_GENERATION,
            State::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
            _ => code::NONE,
        }
    }

    /// LeaveGroup for one member (by id, or by instance id for static
    /// members). Returns the member's error code.
    pub fn leave(&self, group_id: &str, member_id: &str, instance_id: Option<&str>) -> i16 {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group_id) else { return code::UNKNOWN_MEMBER_ID };
        let id = match instance_id {
            Some(instance) => match g.instances.get(instance) {
                Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                Some(_) => return code::FENCED_INSTANCE_ID,
                None => return code::UNKNOWN_MEMBER_ID,
            },
            None => member_id.to_string(),
        };
        if !g.members.contains_key(&id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        tracing::info!(group = %g.id, member = %id, "member left the group");
        remove_member(g, &id);
        self.member_gone(g, Instant::now());
        code::NONE
    }

    /// After a member left or expired: rebalance what remains.
    fn member_gone(&self, g: &mut Group, now: Instant) {
        match g.state {
            State::Stable | State::CompletingRebalance => self.prepare_rebalance(g, now),
            _ => {}
        }
        self.maybe_complete_join(g, now);
    }
}

/// Session expiry and join deadlines, run by the ticker.
pub(crate) fn expire(c: &Coordinator, g: &mut Group, now: Instant) {
    g.pending.retain(|_, deadline| *deadline > now);
    let expired: Vec<String> = g
        .members
        .values()
        .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none() && now.duration_since(m.last_seen) > Duration::from_millis(m.session_timeout_ms.max(0) as u64))
        .map(|m| m.id.clone())
        .collect();
    for id in &expired {
        tracing::info!(group = %g.id, member = %id, "member session expired");
        remove_member(g, id);
    }
    if !expired.is_empty() {
        c.member_gone(g, now);
    }
    c.maybe_complete_join(g, now);
}

fn remove_member(g: &mut Group, id: &str) {
    if let Some(mut m) = g.members.remove(id) {
        if let Some(instance) = &m.instance_id {
            if g.instances.get(instance).is_some_and(|x| x == id) {
                g.instances.remove(instance);
            }
        }
        if let Some((tx, _)) = m.join_waiter.take() {
            let _ = tx.send(join_error(code::UNKNOWN_MEMBER_ID, id));
        }
        if let Some(tx) = m.sync_waiter.take() {
            let _ = tx.send(sync_error(code::UNKNOWN_MEMBER_ID));
        }
    }
    if g.leader.as_deref() == Some(id) {
        g.leader = None;
    }
}

/// The protocol every member supports that most members prefer.
fn select_protocol(g: &Group) -> Option<String> {
    let first = g.members.values().next()?;
    let candidates: Vec<&String> = first.protocols.iter().map(|(n, _)| n).filter(|n| g.members.values().all(|m| m.protocols.iter().any(|(x, _)| x == *n))).collect();
    let mut best: Option<(&String, usize)> = None;
    for c in &candidates {
        let votes = g.members.values().filter(|m| m.protocols.iter().map(|(n, _)| n).find(|n| candidates.contains(n)) == Some(*c)).count();
        if best.is_none_or(|(_, v)| votes > v) {
            best = Some((c, votes));
        }
    }
    best.map(|(n, _)| n.clone())
}

/// (member id, instance id, metadata for the chosen protocol) of every member.
fn leader_members(g: &Group) -> Vec<(String, Option<String>, Bytes)> {
    let Some(p) = g.protocol.as_ref() else { return Vec::new() };
    let mut members: Vec<&Member> = g.members.values().collect();
    members.sort_by_key(|m| m.seq);
    members.iter().map(|m| (m.id.clone(), m.instance_id.clone(), m.protocols.iter().find(|(n, _)| n == p).map(|(_, b)| b.clone()).unwrap_or_default())).collect()
}
