//! Committed offsets: OffsetCommit (with the group-membership checks Kafka
//! makes), OffsetFetch and OffsetDelete. A commit is acknowledged only after
//! its record in `__consumer_offsets` is fsynced.

use std::sync::Arc;

use bytes::Bytes;

use super::store::{self, Committed};
use super::{Coordinator, Group, State};
use crate::protocol::code;

/// One partition of a commit request.
#[derive(Clone, Debug)]
pub struct CommitPart {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A topic's partitions with their committed offsets (None: no commit).
pub type TopicOffsets = (String, Vec<(i32, Option<Committed>)>);

impl Coordinator {
    /// Checks who may commit to the group: a member of the current
    /// generation, or anyone while the group has no members (generation -1,
    /// as standalone consumers commit).
    fn commit_allowed(g: Option<&Group>, generation: i32, member_id: &str, instance_id: Option<&str>) -> i16 {
        let Some(g) = g else {
            return if generation < 0 { code::NONE } else { code::ILLEGAL_GENERATION };
        };
        if let Some(instance) = instance_id {
            if g.instances.get(instance).is_some_and(|id| id != member_id) {
                return code::FENCED_INSTANCE_ID;
            }
        }
        if let Some(cg) = g.consumer.as_ref().filter(|c| !c.members.is_empty()) {
            // KIP-848 groups: the member's current epoch.
            return match cg.members.get(member_id) {
                None => code::UNKNOWN_MEMBER_ID,
                Some(m) if generation > m.epoch => code::FENCED_MEMBER_EPOCH,
                Some(m) if generation < m.epoch => code::STALE_MEMBER_EPOCH,
                Some(_) => code::NONE,
            };
        }
        if generation < 0 && member_id.is_empty() {
            return if g.members.is_empty() { code::NONE } else { code::UNKNOWN_MEMBER_ID };
        }
        if !g.members.contains_key(member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        // As Kafka: the generation first; a member of the current generation
        // may still commit while the group prepares a rebalance (consumers
        // commit as they give partitions up), not while the leader assigns.
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        match g.state {
            State::CompletingRebalance => code::REBALANCE_IN_PROGRESS,
            _ => code::NONE,
        }
    }

    /// Who may add a group's offsets to a transaction (TxnOffsetCommit),
    /// by Kafka's looser rule than OffsetCommit's: a producer that names no
    /// member (member id "", generation -1: `sendOffsetsToTransaction` with
    /// a group id alone) always may; one that names a member (KIP-447) must
    /// name a member of the group, of its current generation (epoch for
    /// KIP-848 groups), not fenced by a static instance id. A group that
    /// does not exist yet counts as a new one (no members, generation 0).
    pub fn txn_commit_allowed(&self, group_id: &str, generation: i32, member_id: &str, instance_id: Option<&str>) -> i16 {
        if group_id.is_empty() {
            return code::INVALID_GROUP_ID;
        }
        let groups = self.groups.lock();
        let Some(g) = groups.get(group_id) else {
            return if !member_id.is_empty() {
                code::UNKNOWN_MEMBER_ID
            } else if generation > 0 {
                code::ILLEGAL_GENERATION
            } else {
                code::NONE
            };
        };
        if let Some(instance) = instance_id {
            if g.instances.get(instance).is_some_and(|id| id != member_id) {
                return code::FENCED_INSTANCE_ID;
            }
        }
        let current = match g.consumer.as_ref().filter(|c| !c.members.is_empty()) {
            Some(cg) => match cg.members.get(member_id) {
                None if !member_id.is_empty() => return code::UNKNOWN_MEMBER_ID,
                m => m.map_or(g.generation, |m| m.epoch),
            },
            None => {
                if !member_id.is_empty() && !g.members.contains_key(member_id) {
                    return code::UNKNOWN_MEMBER_ID;
                }
                g.generation
            }
        };
        if generation >= 0 && generation != current {
            return code::ILLEGAL_GENERATION;
        }
        code::NONE
    }

    /// Commits offsets. `known` tells whether a topic partition exists.
    /// Returns one error code per part, in order.
    pub async fn commit(&self, group_id: &str, generation: i32, member_id: &str, instance_id: Option<&str>, parts: Vec<CommitPart>, known: impl Fn(&str, i32) -> bool) -> Vec<i16> {
        if group_id.is_empty() {
            return vec![code::INVALID_GROUP_ID; parts.len()];
        }
        let now = crate::log::now_ms();
        let group_error = Self::commit_allowed(self.groups.lock().get(group_id), generation, member_id, instance_id);
        if group_error != code::NONE {
            return vec![group_error; parts.len()];
        }
        let mut errors = vec![code::NONE; parts.len()];
        let mut records: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        let mut accepted: Vec<(String, i32, Committed)> = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let metadata = p.metadata.clone().unwrap_or_default();
            if metadata.len() > self.cfg.max_metadata_bytes {
                errors[i] = code::OFFSET_METADATA_TOO_LARGE;
            } else if !known(&p.topic, p.partition) {
                errors[i] = code::UNKNOWN_TOPIC_OR_PARTITION;
            } else {
                let c = Committed { offset: p.offset, leader_epoch: p.leader_epoch, metadata, timestamp: now };
                records.push((store::offset_key(group_id, &p.topic, p.partition), Some(store::offset_value(&c))));
                accepted.push((p.topic.clone(), p.partition, c));
            }
        }
        let log = Arc::clone(&self.log);
        let written = tokio::task::spawn_blocking(move || store::write(&log, &records)).await;
        let failure = match written {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.kafka_code()),
            Err(_) => Some(code::KAFKA_STORAGE_ERROR),
        };
        if let Some(code) = failure {
            tracing::error!(group = group_id, "offset commit could not be made durable");
            for (i, e) in errors.iter_mut().enumerate() {
                if parts[i].metadata.as_ref().is_none_or(|m| m.len() <= self.cfg.max_metadata_bytes) && *e == code::NONE {
                    *e = code;
                }
            }
            return errors;
        }
        let mut groups = self.groups.lock();
        let g = groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id));
        if !g.has_members() {
            g.empty_since_ms = now;
        }
        for (topic, partition, c) in accepted {
            g.offsets.insert((topic, partition), c);
        }
        errors
    }

    /// Commits offsets without membership checks (a committed transaction's
    /// offsets, checked when they were sent), durably.
    pub fn commit_now(&self, offsets: &[(String, String, i32, Committed)]) -> Result<(), crate::log::LogError> {
        let records: Vec<(Bytes, Option<Bytes>)> = offsets.iter().map(|(g, t, p, c)| (store::offset_key(g, t, *p), Some(store::offset_value(c)))).collect();
        store::write(&self.log, &records)?;
        let mut groups = self.groups.lock();
        for (g, t, p, c) in offsets {
            let group = groups.entry(g.clone()).or_insert_with(|| Group::new(g));
            group.offsets.insert((t.clone(), *p), c.clone());
        }
        Ok(())
    }

    /// Committed offsets of a group: for the given partitions, or all when
    /// `wanted` is None. Unknown partitions come back as offset -1.
    pub fn fetch_offsets(&self, group_id: &str, wanted: Option<Vec<(String, Vec<i32>)>>) -> Vec<TopicOffsets> {
        let groups = self.groups.lock();
        let g = groups.get(group_id);
        match wanted {
            Some(list) => list.into_iter().map(|(topic, parts)| {
                let got = parts.into_iter().map(|p| (p, g.and_then(|g| g.offsets.get(&(topic.clone(), p)).cloned()))).collect();
                (topic, got)
            }).collect(),
            None => {
                let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> = Default::default();
                if let Some(g) = g {
                    for ((t, p), c) in &g.offsets {
                        by_topic.entry(t.clone()).or_default().push((*p, Some(c.clone())));
                    }
                }
                by_topic.into_iter().map(|(t, mut v)| {
                    v.sort_by_key(|x| x.0);
                    (t, v)
                }).collect()
            }
        }
    }

    /// OffsetDelete: drops committed offsets of partitions the group is not
    /// consuming. Returns (group error, per-partition errors).
    pub fn delete_offsets(&self, group_id: &str, parts: &[(String, i32)]) -> (i16, Vec<i16>) {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group_id) else { return (code::GROUP_ID_NOT_FOUND, vec![code::NONE; parts.len()]) };
        let subscribed = subscribed_topics(g);
        let mut errors = Vec::with_capacity(parts.len());
        let mut tombstones = Vec::new();
        for (topic, partition) in parts {
            let consumer_subscribed = g.consumer.as_ref().is_some_and(|c| c.members.values().any(|m| m.subscribed.contains(topic)));
            if (g.state != State::Empty && subscribed.iter().any(|t| t == topic)) || consumer_subscribed {
                errors.push(code::GROUP_SUBSCRIBED_TO_TOPIC);
            } else {
                if g.offsets.remove(&(topic.clone(), *partition)).is_some() {
                    tombstones.push((store::offset_key(group_id, topic, *partition), None));
                }
                errors.push(code::NONE);
            }
        }
        drop(groups);
        if let Err(e) = store::write(&self.log, &tombstones) {
            return (e.kafka_code(), errors);
        }
        (code::NONE, errors)
    }
}

/// Topics in the members' consumer-protocol subscriptions (version, then an
/// array of topic names).
fn subscribed_topics(g: &Group) -> Vec<String> {
    let mut out = Vec::new();
    if g.protocol_type.as_deref() != Some("consumer") {
        return out;
    }
    for m in g.members.values() {
        for (_, meta) in &m.protocols {
            let b = &meta[..];
            if b.len() < 6 {
                continue;
            }
            let n = i32::from_be_bytes([b[2], b[3], b[4], b[5]]).max(0) as usize;
            let mut pos = 6;
            for _ in 0..n {
                let Some(len) = b.get(pos..pos + 2).map(|x| i16::from_be_bytes([x[0], x[1]]).max(0) as usize) else { break };
                let Some(name) = b.get(pos + 2..pos + 2 + len) else { break };
                let name = String::from_utf8_lossy(name).into_owned();
                if !out.contains(&name) {
                    out.push(name);
                }
                pos += 2 + len;
            }
        }
    }
    out
}
