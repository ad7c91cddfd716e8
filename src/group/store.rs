//! `__consumer_offsets`: committed offsets and group metadata, stored as
//! records in Eddy's own log with Kafka's key and value layouts, so a
//! restart restores them and a Kafka tool could read them.
//!
//! | record | key | value |
//! |---|---|---|
//! | offset commit | i16 1, string group, string topic, i32 partition | i16 3, i64 offset, i32 leader epoch, string metadata, i64 commit timestamp |
//! | group metadata | i16 2, string group | i16 3, string protocol type, i32 generation, nullable string protocol, nullable string leader, i64 state timestamp, array of members (below) |
//!
//! A member: string member id, nullable string instance id, string client
//! id, string client host, i32 rebalance timeout, i32 session timeout,
//! bytes subscription, bytes assignment. Strings are i16-length-prefixed
//! UTF-8 (-1 for null), bytes and arrays i32-length-prefixed. A null value
//! (tombstone) deletes the key. Later records win.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::log::records::{self, NewRecord};
use crate::log::{now_ms, Log, LogError};

pub const TOPIC: &str = "__consumer_offsets";

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub timestamp: i64,
}

/// What is kept of a group across restarts (members rejoin after one).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GroupRecord {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: i32,
    pub session_timeout: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// One decoded record of the topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Offset { group: String, topic: String, partition: i32, value: Option<Committed> },
    Group { group: String, value: Option<GroupRecord> },
}

/// Kafka's non-flexible string: i16 length then UTF-8 bytes.
pub(crate) fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}
fn put_opt_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}
fn put_bytes(b: &mut BytesMut, x: &[u8]) {
    b.put_i32(x.len() as i32);
    b.put_slice(x);
}

fn get_opt_str(b: &mut Bytes) -> Option<Option<String>> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_i16();
    if n < 0 {
        return Some(None);
    }
    if b.remaining() < n as usize {
        return None;
    }
    Some(Some(String::from_utf8_lossy(&b.split_to(n as usize)).into_owned()))
}
/// A non-null string; None when short or null.
pub(crate) fn get_str(b: &mut Bytes) -> Option<String> {
    get_opt_str(b)?
}
fn get_bytes(b: &mut Bytes) -> Option<Bytes> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_i32();
    if n < 0 || b.remaining() < n as usize {
        return None;
    }
    Some(b.split_to(n as usize))
}
fn get_i32(b: &mut Bytes) -> Option<i32> {
    (b.remaining() >= 4).then(|| b.get_i32())
}
fn get_i64(b: &mut Bytes) -> Option<i64> {
    (b.remaining() >= 8).then(|| b.get_i64())
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(1);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn offset_value(c: &Committed) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_str(&mut b, &c.metadata);
    b.put_i64(c.timestamp);
    b.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(2);
    put_str(&mut b, group);
    b.freeze()
}

pub fn group_value(g: &GroupRecord) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    put_str(&mut b, &g.protocol_type);
    b.put_i32(g.generation);
    put_opt_str(&mut b, g.protocol.as_deref());
    put_opt_str(&mut b, g.leader.as_deref());
    b.put_i64(g.state_timestamp);
    b.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_str(&mut b, &m.member_id);
        put_opt_str(&mut b, m.instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout);
        b.put_i32(m.session_timeout);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// Decodes a record of the topic; None for one it does not understand.
pub fn decode(key: &Bytes, value: Option<&Bytes>) -> Option<Entry> {
    let mut k = key.clone();
    if k.remaining() < 2 {
        return None;
    }
    match k.get_i16() {
        0 | 1 => {
            let group = get_str(&mut k)?;
            let topic = get_str(&mut k)?;
            let partition = get_i32(&mut k)?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut v = v.clone();
                    if v.remaining() < 2 {
                        return None;
                    }
                    let version = v.get_i16();
                    let offset = get_i64(&mut v)?;
                    let leader_epoch = if version >= 3 { get_i32(&mut v)? } else { -1 };
                    let metadata = get_str(&mut v)?;
                    let timestamp = get_i64(&mut v)?;
                    Some(Committed { offset, leader_epoch, metadata, timestamp })
                }
            };
            Some(Entry::Offset { group, topic, partition, value })
        }
        2 => {
            let group = get_str(&mut k)?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut v = v.clone();
                    if v.remaining() < 2 || v.get_i16() != 3 {
                        return None;
                    }
                    let mut g = GroupRecord { protocol_type: get_str(&mut v)?, generation: get_i32(&mut v)?, protocol: get_opt_str(&mut v)?, leader: get_opt_str(&mut v)?, state_timestamp: get_i64(&mut v)?, members: Vec::new() };
                    let n = get_i32(&mut v)?;
                    for _ in 0..n.max(0) {
                        g.members.push(MemberRecord {
                            member_id: get_str(&mut v)?,
                            instance_id: get_opt_str(&mut v)?,
                            client_id: get_str(&mut v)?,
                            client_host: get_str(&mut v)?,
                            rebalance_timeout: get_i32(&mut v)?,
                            session_timeout: get_i32(&mut v)?,
                            subscription: get_bytes(&mut v)?,
                            assignment: get_bytes(&mut v)?,
                        });
                    }
                    Some(g)
                }
            };
            Some(Entry::Group { group, value })
        }
        _ => None,
    }
}

/// Writes entries durably (append, then fsync) as one batch.
pub fn write(log: &Arc<Log>, entries: &[(Bytes, Option<Bytes>)]) -> Result<(), LogError> {
    if entries.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let recs: Vec<NewRecord<'_>> = entries.iter().map(|(k, v)| NewRecord { key: Some(k), value: v.as_deref(), timestamp: now, headers: &[] }).collect();
    let info = log.append(&records::build_batch(&recs))?;
    log.sync_to(info.last_offset + 1)
}

/// Every entry in the log, oldest first.
pub fn replay(log: &Log) -> Result<Vec<Entry>, LogError> {
    let mut out = Vec::new();
    records::for_each_record(log, |rec| {
        if let Some(key) = &rec.key {
            match decode(key, rec.value.as_ref()) {
                Some(e) => out.push(e),
                None => tracing::warn!(offset = rec.offset, "skipping a record of __consumer_offsets that does not decode"),
            }
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_group_records_round_trip() {
        let c = Committed { offset: 42, leader_epoch: -1, metadata: "meta".into(), timestamp: 7 };
        let e = decode(&offset_key("g", "t", 3), Some(&offset_value(&c))).unwrap();
        assert_eq!(e, Entry::Offset { group: "g".into(), topic: "t".into(), partition: 3, value: Some(c) });
        let g = GroupRecord {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 9,
            members: vec![MemberRecord { member_id: "m1".into(), instance_id: Some("i".into()), client_id: "c".into(), client_host: "/127.0.0.1".into(), rebalance_timeout: 1, session_timeout: 2, subscription: Bytes::from_static(b"s"), assignment: Bytes::from_static(b"a") }],
        };
        assert_eq!(decode(&group_key("g"), Some(&group_value(&g))), Some(Entry::Group { group: "g".into(), value: Some(g) }));
        assert_eq!(decode(&group_key("g"), None), Some(Entry::Group { group: "g".into(), value: None }));
        assert_eq!(decode(&Bytes::from_static(b"\x00\x09zz"), None), None);
        let v = offset_value(&Committed { offset: 1, leader_epoch: 0, metadata: String::new(), timestamp: 0 });
        assert_eq!(decode(&offset_key("g", "t", 0), Some(&v.slice(..5))), None, "a truncated value is not trusted");
    }
}
