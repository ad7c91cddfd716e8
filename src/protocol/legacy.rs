//! Request versions below what the `kafka-protocol` crate decodes: the
//! pre-4.0 versions that clients which do not negotiate still send (Sarama
//! 1.22 commits with OffsetCommit v1 and lists topics with DescribeConfigs
//! v0; kafka-go 0.2 hard-codes CreateTopics v0, Produce v2 and Fetch v2).
//! Kafka up to 3.9 served them. None of them is flexible, so each is
//! decoded here by hand into the crate's struct that its handler already
//! takes, and answered in its own layout. Produce v0–2 and Fetch v0–3 carry
//! message sets (magic 0 and 1), which the broker converts
//! (`log::message_set`); here they are only bytes.
//!
//! Decoding is bounded by the frame: every length is checked against the
//! bytes left before anything is sliced, and a vector is sized from an
//! array's count only once the bytes left could hold that many elements.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, FetchResponse, GroupId, OffsetCommitRequest, ProduceRequest, ProduceResponse, RequestKind,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// Whether `version` of `api` is decoded and encoded here rather than by the
/// crate (which starts at OffsetCommit v2, DescribeConfigs v1, Produce v3,
/// Fetch v4 and CreateTopics v2).
pub fn handles(api: ApiKey, version: i16) -> bool {
    match api {
        ApiKey::Produce => version <= 2,
        ApiKey::Fetch => version <= 3,
        ApiKey::CreateTopics => version <= 1,
        ApiKey::OffsetCommit => version <= 1,
        ApiKey::DescribeConfigs => version == 0,
        _ => false,
    }
}

/// Decodes the body of a request `handles` accepts (the bytes after its
/// header). The error is a sentence for the log.
pub fn decode(api: ApiKey, version: i16, body: Bytes) -> Result<RequestKind, String> {
    let mut r = Reader(body);
    match api {
        ApiKey::OffsetCommit => offset_commit(&mut r, version).map(RequestKind::OffsetCommit),
        ApiKey::DescribeConfigs => describe_configs(&mut r).map(RequestKind::DescribeConfigs),
        ApiKey::Produce => produce(&mut r).map(RequestKind::Produce),
        ApiKey::Fetch => fetch(&mut r, version).map(RequestKind::Fetch),
        ApiKey::CreateTopics => create_topics(&mut r, version).map(RequestKind::CreateTopics),
        _ => Err(format!("{api:?} v{version} has no hand-written decoder")),
    }
}

/// Encodes the body of a response to a request `handles` accepts.
pub fn encode(api: ApiKey, version: i16, body: &ResponseKind, buf: &mut BytesMut) -> anyhow::Result<()> {
    match body {
        // v0 and v1 responses have exactly v2's layout (no throttle time).
        ResponseKind::OffsetCommit(r) => r.encode(buf, 2),
        ResponseKind::DescribeConfigs(r) => describe_configs_v0(r, buf),
        ResponseKind::Produce(r) => produce_response(r, version, buf),
        ResponseKind::Fetch(r) => fetch_response(r, version, buf),
        ResponseKind::CreateTopics(r) => create_topics_response(r, version, buf),
        _ => anyhow::bail!("{api:?} v{version} has no hand-written encoder"),
    }
}

/// The unread rest of a request body.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.0.remaining() < n {
            return Err(format!("the request ends {} bytes early", n - self.0.remaining()));
        }
        Ok(())
    }

    fn i8(&mut self) -> Result<i8, String> {
        self.need(1)?;
        Ok(self.0.get_i8())
    }

    fn i16(&mut self) -> Result<i16, String> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }

    fn i32(&mut self) -> Result<i32, String> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }

    fn i64(&mut self) -> Result<i64, String> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }

    fn nullable_bytes(&mut self) -> Result<Option<Bytes>, String> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| format!("bytes length {len}"))?;
        self.need(len)?;
        Ok(Some(self.0.split_to(len)))
    }

    fn nullable_string(&mut self) -> Result<Option<StrBytes>, String> {
        let len = self.i16()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| format!("string length {len}"))?;
        self.need(len)?;
        StrBytes::from_utf8(self.0.split_to(len)).map(Some).map_err(|_| "a string is not UTF-8".to_string())
    }

    fn string(&mut self) -> Result<StrBytes, String> {
        self.nullable_string()?.ok_or_else(|| "a string that may not be null is null".to_string())
    }

    /// An array's element count, or None for a null array. Each element
    /// takes at least `min_len` bytes, so a count the rest of the frame
    /// cannot hold is refused before anything is sized from it.
    fn nullable_count(&mut self, min_len: usize) -> Result<Option<usize>, String> {
        let n = self.i32()?;
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n).map_err(|_| format!("array length {n}"))?;
        if n.saturating_mul(min_len.max(1)) > self.0.remaining() {
            return Err(format!("an array of {n} elements does not fit in the {} bytes left", self.0.remaining()));
        }
        Ok(Some(n))
    }

    /// An array whose elements `item` reads; a null array is an error.
    fn array<T>(&mut self, min_len: usize, item: impl FnMut(&mut Reader) -> Result<T, String>) -> Result<Vec<T>, String> {
        self.nullable_array(min_len, item)?.ok_or_else(|| "an array that may not be null is null".to_string())
    }

    fn nullable_array<T>(&mut self, min_len: usize, mut item: impl FnMut(&mut Reader) -> Result<T, String>) -> Result<Option<Vec<T>>, String> {
        let Some(n) = self.nullable_count(min_len)? else { return Ok(None) };
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(Some(out))
    }
}

/// OffsetCommit v0: group, then topics of (partition, offset, metadata).
/// v1 adds the generation and member id, and a commit timestamp per
/// partition, which is read and ignored: as for v2+, the broker stamps
/// commits with its own clock. A v0 commit has no generation (−1) and no
/// member, like a v2+ commit from outside the group's generations.
fn offset_commit(r: &mut Reader, version: i16) -> Result<OffsetCommitRequest, String> {
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(r.string()?);
    if version >= 1 {
        req.generation_id_or_member_epoch = r.i32()?;
        req.member_id = r.string()?;
    }
    let partition_len = if version >= 1 { 4 + 8 + 8 + 2 } else { 4 + 8 + 2 };
    req.topics = r.array(2 + 4, |r| {
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(r.string()?);
        t.partitions = r.array(partition_len, |r| {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = r.i32()?;
            p.committed_offset = r.i64()?;
            if version >= 1 {
                let _commit_timestamp = r.i64()?;
            }
            p.committed_metadata = r.nullable_string()?;
            Ok(p)
        })?;
        Ok(t)
    })?;
    Ok(req)
}

/// DescribeConfigs v0: resources of (type, name, keys or null for all);
/// v1 only adds the synonyms flag, which v0 leaves off.
fn describe_configs(r: &mut Reader) -> Result<DescribeConfigsRequest, String> {
    let mut req = DescribeConfigsRequest::default();
    req.resources = r.array(1 + 2 + 4, |r| {
        let mut res = DescribeConfigsResource::default();
        res.resource_type = r.i8()?;
        res.resource_name = r.string()?;
        res.configuration_keys = r.nullable_array(2, Reader::string)?;
        Ok(res)
    })?;
    Ok(req)
}

/// Produce v0–2: acks, timeout, then topics of (partition, message set).
/// v3 only adds the transactional id in front, which these have none of.
fn produce(r: &mut Reader) -> Result<ProduceRequest, String> {
    let mut req = ProduceRequest::default();
    req.acks = r.i16()?;
    req.timeout_ms = r.i32()?;
    req.topic_data = r.array(2 + 4, |r| {
        let mut t = TopicProduceData::default();
        t.name = TopicName(r.string()?);
        t.partition_data = r.array(4 + 4, |r| {
            let mut p = PartitionProduceData::default();
            p.index = r.i32()?;
            p.records = r.nullable_bytes()?; // a slice of the frame
            Ok(p)
        })?;
        Ok(t)
    })?;
    Ok(req)
}

/// Fetch v0–3: replica, max wait, min bytes, (v3) max bytes, then topics of
/// (partition, offset, partition max bytes). Before v3 a response had no
/// overall limit (Kafka read it as `i32::MAX`); before v4 there was no
/// isolation level: the broker decides what such a fetch may see.
fn fetch(r: &mut Reader, version: i16) -> Result<FetchRequest, String> {
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(r.i32()?);
    req.max_wait_ms = r.i32()?;
    req.min_bytes = r.i32()?;
    req.max_bytes = if version >= 3 { r.i32()? } else { i32::MAX };
    req.isolation_level = 0;
    req.topics = r.array(2 + 4, |r| {
        let mut t = FetchTopic::default();
        t.topic = TopicName(r.string()?);
        t.partitions = r.array(4 + 8 + 4, |r| {
            let mut p = FetchPartition::default();
            p.partition = r.i32()?;
            p.fetch_offset = r.i64()?;
            p.partition_max_bytes = r.i32()?;
            Ok(p)
        })?;
        Ok(t)
    })?;
    Ok(req)
}

/// CreateTopics v0: topics of (name, partitions, replication, assignments,
/// configs), then the timeout; v1 adds `validate_only`. v2 is v1's layout.
fn create_topics(r: &mut Reader, version: i16) -> Result<CreateTopicsRequest, String> {
    let mut req = CreateTopicsRequest::default();
    req.topics = r.array(2 + 4 + 2 + 4 + 4, |r| {
        let mut t = CreatableTopic::default();
        t.name = TopicName(r.string()?);
        t.num_partitions = r.i32()?;
        t.replication_factor = r.i16()?;
        t.assignments = r.array(4 + 4, |r| {
            let mut a = CreatableReplicaAssignment::default();
            a.partition_index = r.i32()?;
            a.broker_ids = r.array(4, |r| Ok(BrokerId(r.i32()?)))?;
            Ok(a)
        })?;
        t.configs = r.array(2 + 2, |r| {
            let mut c = CreatableTopicConfig::default();
            c.name = r.string()?;
            c.value = r.nullable_string()?;
            Ok(c)
        })?;
        Ok(t)
    })?;
    req.timeout_ms = r.i32()?;
    req.validate_only = version >= 1 && r.i8()? != 0;
    Ok(req)
}

fn put_string(buf: &mut BytesMut, s: &str) -> anyhow::Result<()> {
    let len = i16::try_from(s.len()).map_err(|_| anyhow::anyhow!("a string of {} bytes is too long for the protocol", s.len()))?;
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&StrBytes>) -> anyhow::Result<()> {
    match s {
        Some(s) => put_string(buf, s),
        None => {
            buf.put_i16(-1);
            Ok(())
        }
    }
}

fn put_count(buf: &mut BytesMut, n: usize) {
    buf.put_i32(n as i32);
}

/// DescribeConfigs v0 has `is_default` where v1+ has the config source.
/// A v0 client reads "not default" as a topic override on a topic and as a
/// broker setting on a broker (Kafka's DescribeConfigsResponse), so a topic
/// config is default unless the topic overrides it (source 1), and a broker
/// config unless it is set (source 5 is Kafka's built-in default).
fn describe_configs_v0(r: &DescribeConfigsResponse, buf: &mut BytesMut) -> anyhow::Result<()> {
    const TOPIC: i8 = 2;
    const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    const DEFAULT_CONFIG: i8 = 5;
    buf.put_i32(r.throttle_time_ms);
    put_count(buf, r.results.len());
    for res in &r.results {
        buf.put_i16(res.error_code);
        put_nullable_string(buf, res.error_message.as_ref())?;
        buf.put_i8(res.resource_type);
        put_string(buf, &res.resource_name)?;
        put_count(buf, res.configs.len());
        for c in &res.configs {
            put_string(buf, &c.name)?;
            put_nullable_string(buf, c.value.as_ref())?;
            buf.put_u8(c.read_only as u8);
            let is_default = if res.resource_type == TOPIC { c.config_source != DYNAMIC_TOPIC_CONFIG } else { c.config_source == DEFAULT_CONFIG };
            buf.put_u8(is_default as u8);
            buf.put_u8(c.is_sensitive as u8);
        }
    }
    Ok(())
}

/// Produce v0: topics of (partition, error, base offset); v1 adds the
/// throttle time at the end, v2 the log append time per partition.
fn produce_response(r: &ProduceResponse, version: i16, buf: &mut BytesMut) -> anyhow::Result<()> {
    put_count(buf, r.responses.len());
    for t in &r.responses {
        put_string(buf, &t.name)?;
        put_count(buf, t.partition_responses.len());
        for p in &t.partition_responses {
            buf.put_i32(p.index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.base_offset);
            if version >= 2 {
                buf.put_i64(p.log_append_time_ms);
            }
        }
    }
    if version >= 1 {
        buf.put_i32(r.throttle_time_ms);
    }
    Ok(())
}

/// Fetch v0: topics of (partition, error, high watermark, message set); v1
/// to v3 add the throttle time in front. A partition without records gets
/// an empty set, not a null one (old clients read a size, not a null).
fn fetch_response(r: &FetchResponse, version: i16, buf: &mut BytesMut) -> anyhow::Result<()> {
    let records: usize = r.responses.iter().flat_map(|t| &t.partitions).filter_map(|p| p.records.as_ref()).map(Bytes::len).sum();
    buf.reserve(records + 64);
    if version >= 1 {
        buf.put_i32(r.throttle_time_ms);
    }
    put_count(buf, r.responses.len());
    for t in &r.responses {
        put_string(buf, &t.topic)?;
        put_count(buf, t.partitions.len());
        for p in &t.partitions {
            buf.put_i32(p.partition_index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            let set = p.records.as_deref().unwrap_or_default();
            put_count(buf, set.len());
            buf.put_slice(set);
        }
    }
    Ok(())
}

/// CreateTopics v0: topics of (name, error); v1 adds the error message.
fn create_topics_response(r: &CreateTopicsResponse, version: i16, buf: &mut BytesMut) -> anyhow::Result<()> {
    put_count(buf, r.topics.len());
    for t in &r.topics {
        put_string(buf, &t.name)?;
        buf.put_i16(t.error_code);
        if version >= 1 {
            put_nullable_string(buf, t.error_message.as_ref())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as i16).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    }

    fn offset_commit_v1() -> Vec<u8> {
        let mut b = Vec::new();
        string(&mut b, "g");
        b.extend_from_slice(&3i32.to_be_bytes());
        string(&mut b, "m-1");
        b.extend_from_slice(&1i32.to_be_bytes());
        string(&mut b, "t");
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&17i64.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b
    }

    #[test]
    fn offset_commit_v1_decodes_into_the_v2_struct() {
        let RequestKind::OffsetCommit(r) = decode(ApiKey::OffsetCommit, 1, Bytes::from(offset_commit_v1())).unwrap() else { panic!() };
        assert_eq!((r.group_id.as_str(), r.generation_id_or_member_epoch, r.member_id.as_str()), ("g", 3, "m-1"));
        let p = &r.topics[0].partitions[0];
        assert_eq!((r.topics[0].name.as_str(), p.partition_index, p.committed_offset, p.committed_metadata.is_none()), ("t", 2, 17, true));
    }

    #[test]
    fn every_truncation_and_a_huge_count_are_errors_not_panics() {
        let whole = offset_commit_v1();
        for cut in 0..whole.len() {
            assert!(decode(ApiKey::OffsetCommit, 1, Bytes::copy_from_slice(&whole[..cut])).is_err(), "cut at {cut}");
        }
        // A count of 2^31 − 1 topics in a few bytes: refused before sizing anything.
        let mut b = Vec::new();
        string(&mut b, "g");
        b.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode(ApiKey::OffsetCommit, 0, Bytes::from(b)).unwrap_err().contains("does not fit"));
    }

    #[test]
    fn describe_configs_v0_is_answered_with_is_default() {
        let mut b = Vec::new();
        b.extend_from_slice(&1i32.to_be_bytes());
        b.push(2);
        string(&mut b, "t");
        b.extend_from_slice(&(-1i32).to_be_bytes());
        let RequestKind::DescribeConfigs(req) = decode(ApiKey::DescribeConfigs, 0, Bytes::from(b)).unwrap() else { panic!() };
        assert!(req.resources[0].configuration_keys.is_none() && !req.include_synonyms);

        let mut r = DescribeConfigsResponse::default();
        let mut res = kafka_protocol::messages::describe_configs_response::DescribeConfigsResult::default();
        res.resource_type = 2;
        res.error_message = None;
        res.resource_name = StrBytes::from_static_str("t");
        for (name, source) in [("retention.ms", 1), ("segment.bytes", 5)] {
            let mut c = kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult::default();
            c.name = StrBytes::from_static_str(name);
            c.value = Some(StrBytes::from_static_str("1"));
            c.config_source = source;
            res.configs.push(c);
        }
        r.results.push(res);
        let mut buf = BytesMut::new();
        encode(ApiKey::DescribeConfigs, 0, &ResponseKind::DescribeConfigs(r), &mut buf).unwrap();
        // throttle, 1 result, error 0, null message, type 2, "t", 2 configs,
        // then "retention.ms" = "1", read-only 0, default 0, sensitive 0 ...
        let mut want = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 2, 0, 1, b't', 0, 0, 0, 2];
        for (name, default) in [("retention.ms", 0u8), ("segment.bytes", 1)] {
            string(&mut want, name);
            string(&mut want, "1");
            want.extend_from_slice(&[0, default, 0]);
        }
        assert_eq!(&buf[..], &want[..]);
    }
}
