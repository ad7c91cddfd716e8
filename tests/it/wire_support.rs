//! Hand-built Kafka requests for tests: encode with the `kafka-protocol`
//! crate, send on a plain socket, read and decode the response.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A request frame, length prefix included.
pub fn request_bytes(api: ApiKey, version: i16, correlation: i32, body: &impl Encodable) -> Vec<u8> {
    request_bytes_from("wire-test", api, version, correlation, body)
}

/// A request frame from the client id `client_id`.
pub fn request_bytes_from(client_id: &'static str, api: ApiKey, version: i16, correlation: i32, body: &impl Encodable) -> Vec<u8> {
    let mut h = RequestHeader::default();
    h.request_api_key = api as i16;
    h.request_api_version = version;
    h.correlation_id = correlation;
    h.client_id = Some(StrBytes::from_static_str(client_id));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    h.encode(&mut buf, api.request_header_version(version)).unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

/// Reads one response frame; None when the broker closed the connection.
pub fn read_frame(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

/// Sends a request on `s` and decodes its response.
pub fn call<R: Decodable>(s: &mut TcpStream, api: ApiKey, version: i16, body: &impl Encodable) -> R {
    s.write_all(&request_bytes(api, version, 42, body)).unwrap();
    let mut frame = read_frame(s).expect("a response");
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 42);
    R::decode(&mut frame, version).unwrap()
}

/// One request on a fresh connection.
pub fn call_once<R: Decodable>(addr: SocketAddr, api: ApiKey, version: i16, body: &impl Encodable) -> R {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    call(&mut s, api, version, body)
}

/// The broker closed `s` (end of stream or reset) within the read timeout;
/// a read that merely times out is not a close, nor is an answer.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// A JoinGroup request of a "consumer" member (`member` "" for a first
/// join) offering the range assignor, subscribed to topic "edge".
pub fn join_request(group: &'static str, member: &str) -> kafka_protocol::messages::JoinGroupRequest {
    use kafka_protocol::messages::{join_group_request::JoinGroupRequestProtocol, GroupId, JoinGroupRequest};
    let mut p = JoinGroupRequestProtocol::default();
    p.name = StrBytes::from_static_str("range");
    p.metadata = Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 4, b'e', b'd', b'g', b'e', 0xff, 0xff, 0xff, 0xff]);
    let mut j = JoinGroupRequest::default();
    j.group_id = GroupId(StrBytes::from_static_str(group));
    j.session_timeout_ms = 10_000;
    j.rebalance_timeout_ms = 10_000;
    j.member_id = StrBytes::from_string(member.to_string());
    j.protocol_type = StrBytes::from_static_str("consumer");
    j.protocols = vec![p];
    j
}
