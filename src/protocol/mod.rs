//! Codec glue around the `kafka-protocol` crate: request decoding, response
//! encoding, and the table of API versions Eddy implements.
//!
//! Only envelopes are decoded: record sets stay `Bytes` slices of the
//! request frame (the crate's `Bytes` decoder slices, it does not copy).
//! Versions older than the crate decodes are handled in `legacy`.

pub mod legacy;

use bytes::{BufMut, Bytes, BytesMut};

use crate::log::file_records::{self, FileRecords};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// `(api, min, max)` for every API Eddy serves. Advertised exactly. The
/// versions below the crate's floor (Produce 0–2, Fetch 0–3, CreateTopics
/// 0–1, OffsetCommit 0–1, DescribeConfigs 0) are served by `legacy`, for
/// clients that send them without asking (Kafka 4.0 dropped them).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 13),
    (ApiKey::Fetch, 0, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 1, 10),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::InitProducerId, 0, 6),
    (ApiKey::AddPartitionsToTxn, 0, 4),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    // v0 of SaslHandshake (raw SASL tokens without SaslAuthenticate framing) is not served.
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// An API's name as Kafka spells it (metric labels).
pub fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
        ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
        ApiKey::EndTxn => "EndTxn",
        ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
        ApiKey::DescribeProducers => "DescribeProducers",
        ApiKey::DescribeTransactions => "DescribeTransactions",
        ApiKey::ListTransactions => "ListTransactions",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        ApiKey::DescribeClientQuotas => "DescribeClientQuotas",
        ApiKey::AlterClientQuotas => "AlterClientQuotas",
        ApiKey::DescribeAcls => "DescribeAcls",
        ApiKey::CreateAcls => "CreateAcls",
        ApiKey::DeleteAcls => "DeleteAcls",
        _ => "other",
    }
}

/// Calls `f` with every error code a response carries (top level, per
/// topic, per partition), for the common APIs; others report nothing.
pub fn error_codes(r: &ResponseKind, mut f: impl FnMut(i16)) {
    match r {
        ResponseKind::Produce(r) => r.responses.iter().flat_map(|t| &t.partition_responses).for_each(|p| f(p.error_code)),
        ResponseKind::Fetch(r) => {
            f(r.error_code);
            r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::Metadata(r) => r.topics.iter().for_each(|t| f(t.error_code)),
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| f(t.error_code)),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteRecords(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::OffsetCommit(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            f(r.error_code);
            r.groups.iter().for_each(|g| f(g.error_code));
        }
        ResponseKind::FindCoordinator(r) => {
            f(r.error_code);
            r.coordinators.iter().for_each(|c| f(c.error_code));
        }
        ResponseKind::JoinGroup(r) => f(r.error_code),
        ResponseKind::SyncGroup(r) => f(r.error_code),
        ResponseKind::Heartbeat(r) => f(r.error_code),
        ResponseKind::LeaveGroup(r) => f(r.error_code),
        ResponseKind::DescribeGroups(r) => r.groups.iter().for_each(|g| f(g.error_code)),
        ResponseKind::ListGroups(r) => f(r.error_code),
        ResponseKind::ConsumerGroupHeartbeat(r) => f(r.error_code),
        ResponseKind::InitProducerId(r) => f(r.error_code),
        ResponseKind::EndTxn(r) => f(r.error_code),
        ResponseKind::ApiVersions(r) => f(r.error_code),
        ResponseKind::SaslHandshake(r) => f(r.error_code),
        ResponseKind::SaslAuthenticate(r) => f(r.error_code),
        ResponseKind::AlterUserScramCredentials(r) => r.results.iter().for_each(|u| f(u.error_code)),
        ResponseKind::DescribeClientQuotas(r) => f(r.error_code),
        ResponseKind::AlterClientQuotas(r) => r.entries.iter().for_each(|e| f(e.error_code)),
        ResponseKind::DescribeUserScramCredentials(r) => f(r.error_code),
        ResponseKind::DescribeAcls(r) => f(r.error_code),
        ResponseKind::CreateAcls(r) => r.results.iter().for_each(|c| f(c.error_code)),
        ResponseKind::DeleteAcls(r) => r.filter_results.iter().for_each(|c| f(c.error_code)),
        ResponseKind::DescribeCluster(r) => f(r.error_code),
        ResponseKind::DescribeLogDirs(r) => f(r.error_code),
        ResponseKind::AddOffsetsToTxn(r) => f(r.error_code),
        ResponseKind::TxnOffsetCommit(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::DeleteGroups(r) => r.results.iter().for_each(|g| f(g.error_code)),
        ResponseKind::DescribeConfigs(r) => r.results.iter().for_each(|c| f(c.error_code)),
        ResponseKind::AlterConfigs(r) => r.responses.iter().for_each(|c| f(c.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => r.responses.iter().for_each(|c| f(c.error_code)),
        _ => {}
    }
}

/// Sets a response's `throttle_time_ms` (client quotas), for every API
/// whose response has one.
pub fn set_throttle(r: &mut ResponseKind, throttle: std::time::Duration) {
    let ms = throttle.as_millis().min(i32::MAX as u128) as i32;
    macro_rules! set {
        ($($api:ident),* $(,)?) => {
            match r {
                $(ResponseKind::$api(x) => x.throttle_time_ms = ms,)*
                _ => {}
            }
        };
    }
    set!(
        Produce, Fetch, ListOffsets, Metadata, ApiVersions, CreateTopics, DeleteTopics, DeleteRecords, DescribeConfigs, AlterConfigs, DescribeLogDirs, CreatePartitions, IncrementalAlterConfigs,
        DescribeCluster, FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups, DeleteGroups, OffsetDelete, ConsumerGroupHeartbeat,
        ConsumerGroupDescribe, InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit, DescribeProducers, DescribeTransactions, ListTransactions, DescribeUserScramCredentials,
        AlterUserScramCredentials, DescribeClientQuotas, AlterClientQuotas, CreateAcls, DescribeAcls, DeleteAcls,
    );
}

/// The partitions in a classic consumer member's assignment bytes
/// (`ConsumerProtocolAssignment` after its version); empty if they do not
/// decode.
pub fn consumer_assignment(bytes: &[u8]) -> Vec<(String, Vec<i32>)> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]).clamp(0, 3);
    let mut b = Bytes::copy_from_slice(&bytes[2..]);
    kafka_protocol::messages::ConsumerProtocolAssignment::decode(&mut b, version).map(|a| a.assigned_partitions.into_iter().map(|tp| (tp.topic.to_string(), tp.partitions)).collect()).unwrap_or_default()
}

/// The range served for an API, if any.
pub fn served_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, _, _)| *k == key).map(|&(_, min, max)| (min, max))
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
    /// Bytes of the frame, header included (produce quotas count these).
    pub size: usize,
}

/// Why a frame could not become a `Request`.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    Short(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    /// An API Eddy knows, at a version it does not serve.
    #[error("{api:?} version {version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16, correlation_id: i32 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
}

/// Decodes a whole request frame (without its length prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    let size = frame.len();
    if frame.len() < 8 {
        return Err(DecodeError::Short(frame.len()));
    }
    let api_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(api_raw).map_err(|_| DecodeError::UnknownApi(api_raw))?;
    match served_range(api_key) {
        Some((min, max)) if (min..=max).contains(&version) => {}
        _ => return Err(DecodeError::UnsupportedVersion { api: api_key, version, correlation_id }),
    }
    let malformed = |e: anyhow::Error| DecodeError::Malformed { api: api_key, version, reason: format!("{e:#}") };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version)).map_err(malformed)?;
    let body = if legacy::handles(api_key, version) {
        legacy::decode(api_key, version, std::mem::take(&mut frame)).map_err(|reason| DecodeError::Malformed { api: api_key, version, reason })?
    } else {
        RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?
    };
    if !frame.is_empty() {
        // Kafka ignores bytes after the fields it knows, and some clients send
        // them (librdkafka 2.12 pads Metadata v13 with three zero bytes).
        tracing::trace!(api = ?api_key, version, extra = frame.len(), "ignoring trailing request bytes");
    }
    Ok(Request { api_key, version, header, body, size })
}

/// An encoded response frame (length prefix included), in parts sent back
/// to back: a fetch response's record sets are the log's own bytes (chunk
/// memory, a file read, or a file region sent from the file), not copied
/// into it.
#[derive(Debug, Clone)]
pub struct Frame(pub Vec<Part>);

/// A piece of a frame: bytes, or a region of a segment file (with the
/// bytes after it still in memory).
pub use crate::log::file_records::Records as Part;

impl Frame {
    pub fn len(&self) -> usize {
        self.0.iter().map(Part::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Part::is_empty)
    }
}

/// A response and the file regions its stand-in record sets stand for, in
/// the order the response holds them (see `log::file_records`).
pub struct Reply {
    pub body: ResponseKind,
    pub files: Vec<FileRecords>,
}

impl From<ResponseKind> for Reply {
    fn from(body: ResponseKind) -> Reply {
        Reply { body, files: Vec::new() }
    }
}

/// Parts of a frame to send in one go, as a `Buf` for `write_all_buf`
/// (which writes up to 64 of them per call where the stream takes
/// vectored writes).
pub struct FrameBuf {
    parts: std::collections::VecDeque<Bytes>,
    /// Bytes in `parts`.
    left: usize,
}

impl FrameBuf {
    pub fn new(parts: std::collections::VecDeque<Bytes>) -> FrameBuf {
        let left = parts.iter().map(Bytes::len).sum();
        FrameBuf { parts, left }
    }
}

impl bytes::Buf for FrameBuf {
    fn remaining(&self) -> usize {
        self.left
    }

    fn chunk(&self) -> &[u8] {
        self.parts.iter().find(|p| !p.is_empty()).map_or(&[], |p| &p[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(self.parts.iter().filter(|p| !p.is_empty())) {
            *slot = std::io::IoSlice::new(part);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.left, "advanced past the end of a frame");
        self.left -= cnt;
        while cnt > 0 {
            let front = self.parts.front_mut().expect("remaining bytes are in the parts");
            let n = cnt.min(front.len());
            front.advance(n);
            cnt -= n;
            if front.is_empty() {
                self.parts.pop_front();
            }
        }
    }
}

/// Record sets at least this long are sent by reference, not copied.
const BY_REFERENCE: usize = 4096;

/// A record set the encoder will meet, cut out of the frame: by reference
/// (its bytes), or a stand-in for the file region sent in its place.
type Cut = (Bytes, Option<FileRecords>);

/// The encoder's output buffer: small fields are copied into `cur`; the
/// record sets of `refs` (in the order the encoder meets them) are cut out
/// as parts of their own when the encoder writes them.
struct Parts {
    done: Vec<Part>,
    cur: BytesMut,
    refs: std::vec::IntoIter<Cut>,
    next: Option<Cut>,
    /// Bytes in `done`.
    done_len: usize,
}

impl Parts {
    fn new(refs: Vec<Cut>, capacity: usize) -> Parts {
        let mut refs = refs.into_iter();
        let next = refs.next();
        Parts { done: Vec::new(), cur: BytesMut::with_capacity(capacity), refs, next, done_len: 0 }
    }

    fn finish(mut self) -> Vec<Part> {
        if !self.cur.is_empty() {
            self.done.push(Part::Bytes(self.cur.freeze()));
        }
        self.done
    }
}

// SAFETY: every method delegates to `cur`, a BytesMut, whose contract
// these are; put_slice only decides whether to copy or to reference.
unsafe impl BufMut for Parts {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        self.cur.advance_mut(cnt)
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.cur.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        // The encoder writes a record set from the Bytes it holds: the same
        // address and length identify it exactly.
        if let Some((bytes, file)) = self.next.take_if(|(n, _)| n.as_ptr() == src.as_ptr() && n.len() == src.len()) {
            let head = self.cur.split().freeze();
            self.done_len += head.len() + bytes.len();
            self.done.push(Part::Bytes(head));
            self.done.push(match file {
                Some(f) => Part::File(f),
                None => Part::Bytes(bytes),
            });
            self.next = self.refs.next();
        } else {
            self.cur.extend_from_slice(src);
        }
    }
}

impl kafka_protocol::protocol::buf::ByteBufMut for Parts {
    fn offset(&self) -> usize {
        self.done_len + self.cur.len()
    }

    // Message encoders never seek back (only record batch encoders do, and
    // those write into their own buffers); a gap inside `cur` still works,
    // one reaching into an earlier part would not.
    fn seek(&mut self, offset: usize) {
        debug_assert!(offset >= self.done_len, "a seek into a part already cut off");
        let at = offset.saturating_sub(self.done_len);
        self.cur.resize(at, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        debug_assert!(r.start >= self.done_len, "a range in a part already cut off");
        let base = self.done_len;
        &mut self.cur[r.start.saturating_sub(base)..r.end.saturating_sub(base)]
    }
}

/// Encodes a response frame: a 4-byte length, the header (v0 for
/// ApiVersions, else per the API's flexible versions), then the body, with
/// `files` in place of the body's stand-in record sets.
pub fn encode_response(api_key: ApiKey, version: i16, correlation_id: i32, body: &ResponseKind, files: Vec<FileRecords>) -> anyhow::Result<Frame> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    // ApiVersions answers with a v0 header whatever the request version, so
    // a client that sent a version we do not know can still read it.
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    if let ResponseKind::Fetch(f) = body {
        if !legacy::handles(api_key, version) {
            return encode_fetch(&header, header_version, f, version, files);
        }
    }
    anyhow::ensure!(files.is_empty(), "file regions given for a {api_key:?} v{version} response");
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header.encode(&mut buf, header_version)?;
    if legacy::handles(api_key, version) {
        legacy::encode(api_key, version, body, &mut buf)?;
    } else {
        body.encode(&mut buf, version)?;
    }
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(Frame(vec![Part::Bytes(buf.freeze())]))
}

/// A fetch response, its large record sets referenced rather than copied
/// and its stand-ins replaced by their file regions (sized up front: the
/// length prefix comes first).
fn encode_fetch(header: &ResponseHeader, header_version: i16, f: &kafka_protocol::messages::FetchResponse, version: i16, files: Vec<FileRecords>) -> anyhow::Result<Frame> {
    let mut files = files.into_iter();
    let mut refs: Vec<Cut> = Vec::new();
    for r in f.responses.iter().flat_map(|t| &t.partitions).filter_map(|p| p.records.as_ref()) {
        if file_records::is_stand_in(r) {
            let file = files.next().ok_or_else(|| anyhow::anyhow!("a fetch response has more stand-ins than file regions"))?;
            anyhow::ensure!(file.len() == r.len(), "a stand-in of {} bytes for file records of {}", r.len(), file.len());
            refs.push((r.clone(), Some(file)));
        } else if r.len() >= BY_REFERENCE {
            refs.push((r.clone(), None));
        }
    }
    anyhow::ensure!(files.next().is_none(), "a fetch response has fewer stand-ins than file regions");
    let len = header.compute_size(header_version)? + f.compute_size(version)?;
    let referenced: usize = refs.iter().map(|(b, _)| b.len()).sum();
    let mut buf = Parts::new(refs, 4 + len - referenced);
    buf.put_i32(i32::try_from(len)?);
    header.encode(&mut buf, header_version)?;
    f.encode(&mut buf, version)?;
    anyhow::ensure!(buf.next.is_none(), "a fetch response's record set was not written where expected");
    let frame = Frame(buf.finish());
    anyhow::ensure!(frame.len() == 4 + len, "a fetch response of {} bytes was sized {}", frame.len(), 4 + len);
    Ok(frame)
}

/// Kafka error codes used by the broker.
pub mod code {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const INVALID_FETCH_SIZE: i16 = 4;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const INVALID_RECORD: i16 = 87;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const UNSTABLE_OFFSET_COMMIT: i16 = 88;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const SECURITY_DISABLED: i16 = 54;
    pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const RESOURCE_NOT_FOUND: i16 = 91;
    pub const DUPLICATE_RESOURCE: i16 = 92;
    pub const UNACCEPTABLE_CREDENTIAL: i16 = 93;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    pub const PRODUCER_FENCED: i16 = 90;
    pub const FENCED_MEMBER_EPOCH: i16 = 110;
    pub const UNRELEASED_INSTANCE_ID: i16 = 111;
    pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
    pub const STALE_MEMBER_EPOCH: i16 = 113;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    pub const UNSUPPORTED_ENDPOINT_TYPE: i16 = 119;

    /// The message Kafka's brokers send with an authorization error.
    pub fn denied(code: i16) -> &'static str {
        match code {
            TOPIC_AUTHORIZATION_FAILED => "Topic authorization failed.",
            GROUP_AUTHORIZATION_FAILED => "Group authorization failed.",
            CLUSTER_AUTHORIZATION_FAILED => "Cluster authorization failed.",
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED => "Transactional Id authorization failed.",
            _ => "Authorization failed.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch response sent in parts is byte for byte the crate's own
    /// encoding, at every version, with record sets referenced (large),
    /// copied (small), empty and absent, and the same Bytes twice.
    #[test]
    fn fetch_frames_in_parts_are_the_crates_encoding() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::{FetchResponse, TopicName};
        let big = Bytes::from((0..70_000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
        let sets = [Some(big.slice(..BY_REFERENCE)), Some(big.slice(10..20)), None, Some(Bytes::new()), Some(big.slice(100..65_000)), Some(big.slice(100..65_000)), Some(big.slice(BY_REFERENCE - 1..2 * BY_REFERENCE - 2))];
        let mut f = FetchResponse::default();
        for t in 0..2 {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = TopicName(format!("topic-{t}").into());
            topic.topic_id = uuid::Uuid::from_u128(t + 1);
            for (i, r) in sets.iter().enumerate() {
                let mut p = PartitionData::default();
                p.partition_index = i as i32;
                p.high_watermark = 1000 + i as i64;
                p.records = r.clone();
                topic.partitions.push(p);
            }
            f.responses.push(topic);
        }
        let body = ResponseKind::Fetch(f.clone());
        for version in 4..=18 {
            let frame = encode_response(ApiKey::Fetch, version, 77, &body, Vec::new()).unwrap();
            let mut plain = BytesMut::new();
            plain.put_i32(0);
            ResponseHeader::default().with_correlation_id(77).encode(&mut plain, ApiKey::Fetch.response_header_version(version)).unwrap();
            f.encode(&mut plain, version).unwrap();
            let len = (plain.len() - 4) as i32;
            plain[0..4].copy_from_slice(&len.to_be_bytes());
            let parts: Vec<Bytes> = frame.0.iter().map(|p| match p {
                Part::Bytes(b) => b.clone(),
                Part::File(_) => panic!("no file regions were given"),
            }).collect();
            assert_eq!(parts.concat(), plain.freeze(), "version {version}");
            // The three sets of BY_REFERENCE bytes or more per topic went by
            // reference, each its own part (the one a byte short was copied).
            let referenced = parts.iter().filter(|p| p.len() >= BY_REFERENCE && big.as_ptr() <= p.as_ptr() && p.as_ptr() < big[big.len()..].as_ptr()).count();
            assert_eq!(referenced, 2 * 3, "version {version}");
            // And the Buf view walks the same bytes.
            let mut buf = FrameBuf::new(parts.iter().cloned().collect());
            let mut walked = Vec::new();
            while bytes::Buf::has_remaining(&buf) {
                let n = bytes::Buf::chunk(&buf).len().min(1000);
                walked.extend_from_slice(&bytes::Buf::chunk(&buf)[..n]);
                bytes::Buf::advance(&mut buf, n);
            }
            assert_eq!(walked, parts.concat());
        }
    }

    /// Stand-ins for file regions, big and small, among copied and
    /// referenced sets: each becomes its region's part, and with the
    /// regions' bytes in their place the frame is the crate's encoding of
    /// the response holding those bytes.
    #[test]
    fn stand_ins_become_their_file_regions() {
        use crate::log::FileRecords;
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::{FetchResponse, TopicName};
        let dir = std::env::temp_dir().join(format!("eddy-stand-ins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let content: Vec<u8> = (0..100_000u32).map(|i| (i * 13 + 5) as u8).collect();
        std::fs::write(dir.join("seg"), &content).unwrap();
        let file = std::sync::Arc::new(std::fs::File::open(dir.join("seg")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        let region = |pos: u64, len: usize, tail: &'static [u8]| FileRecords { file: std::sync::Arc::clone(&file), pos, file_len: len, tail: Bytes::from_static(tail), records: 1, next_offset: 1 };
        let big = Bytes::from(vec![7u8; 9000]);
        // (a file region, or bytes)
        let sets: Vec<(Option<FileRecords>, Option<Bytes>)> = vec![
            (Some(region(0, 20_000, b"")), None),
            (None, Some(Bytes::from_static(b"small"))),
            (Some(region(30_000, 100, b"and a tail")), None),
            (None, Some(big.clone())),
            (Some(region(50_000, 20_000, b"")), None),
        ];
        let (mut with_stand_ins, mut with_bytes) = (FetchResponse::default(), FetchResponse::default());
        let mut files = Vec::new();
        let mut topic = FetchableTopicResponse::default();
        topic.topic = TopicName("t".to_string().into());
        let mut plain_topic = topic.clone();
        for (i, (f, b)) in sets.iter().enumerate() {
            let mut p = PartitionData::default();
            p.partition_index = i as i32;
            let mut q = p.clone();
            match (f, b) {
                (Some(f), _) => {
                    p.records = f.stand_in();
                    q.records = Some([&content[f.pos as usize..f.pos as usize + f.file_len], &f.tail[..]].concat().into());
                    files.push(f.clone());
                }
                (None, b) => {
                    p.records = b.clone();
                    q.records = b.clone();
                }
            }
            topic.partitions.push(p);
            plain_topic.partitions.push(q);
        }
        with_stand_ins.responses.push(topic);
        with_bytes.responses.push(plain_topic);
        for version in 4..=18 {
            let frame = encode_response(ApiKey::Fetch, version, 9, &ResponseKind::Fetch(with_stand_ins.clone()), files.clone()).unwrap();
            let expected = encode_response(ApiKey::Fetch, version, 9, &ResponseKind::Fetch(with_bytes.clone()), Vec::new()).unwrap();
            let mut out = Vec::new();
            let mut regions = Vec::new();
            for p in &frame.0 {
                match p {
                    Part::Bytes(b) => out.extend_from_slice(b),
                    Part::File(f) => {
                        out.extend_from_slice(&f.read_all());
                        regions.push((f.pos, f.file_len, f.tail.len()));
                    }
                }
            }
            let plain: Vec<u8> = expected.0.iter().flat_map(|p| match p {
                Part::Bytes(b) => b.to_vec(),
                Part::File(_) => unreachable!(),
            }).collect();
            assert_eq!(out, plain, "version {version}");
            assert_eq!(regions, vec![(0, 20_000, 0), (30_000, 100, 10), (50_000, 20_000, 0)], "version {version}");
            assert_eq!(frame.len(), plain.len());
        }
        // Regions that do not match the stand-ins are an error, not a frame.
        assert!(encode_response(ApiKey::Fetch, 12, 9, &ResponseKind::Fetch(with_stand_ins.clone()), files[..2].to_vec()).is_err());
        assert!(encode_response(ApiKey::Fetch, 12, 9, &ResponseKind::Fetch(with_bytes.clone()), files.clone()).is_err());
        assert!(encode_response(ApiKey::Metadata, 12, 9, &ResponseKind::Metadata(Default::default()), files).is_err());
    }

    /// Every advertised version is one the crate decodes, or one `legacy`
    /// handles: a client that sees a version uses it.
    #[test]
    fn every_advertised_version_can_be_decoded() {
        for &(key, min, max) in SUPPORTED {
            let crate_range = key.valid_versions();
            for v in min..=max {
                assert!(
                    (crate_range.min..=crate_range.max).contains(&v) || legacy::handles(key, v),
                    "{key:?} v{v} is advertised but neither the crate ({}–{}) nor legacy decodes it",
                    crate_range.min,
                    crate_range.max
                );
            }
        }
    }
}
