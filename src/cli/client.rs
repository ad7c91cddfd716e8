//! A small blocking Kafka client for the `eddy` commands (`topic`, `group`,
//! `tail`): one connection, one request at a time, versions Eddy serves.
//! It speaks the protocol like any client, so the commands work against any
//! Kafka-compatible broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Largest response accepted.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// A request frame, length prefix included.
pub fn frame(api: ApiKey, version: i16, correlation: i32, client_id: &str, body: &impl Encodable) -> anyhow::Result<Vec<u8>> {
    let mut h = RequestHeader::default();
    h.request_api_key = api as i16;
    h.request_api_version = version;
    h.correlation_id = correlation;
    h.client_id = Some(StrBytes::from_string(client_id.to_string()));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    h.encode(&mut buf, api.request_header_version(version))?;
    body.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.to_vec())
}

pub struct Client {
    stream: TcpStream,
    addr: String,
    correlation: i32,
}

impl Client {
    pub fn connect(addr: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_write_timeout(Some(Duration::from_secs(60)))?;
        let _ = stream.set_nodelay(true);
        Ok(Client { stream, addr: addr.to_string(), correlation: 0 })
    }

    /// Sends a request and decodes its response.
    pub fn call<R: Decodable>(&mut self, api: ApiKey, version: i16, body: &impl Encodable) -> anyhow::Result<R> {
        self.correlation += 1;
        let ctx = || format!("{} v{version} to {}", eddy::protocol::api_name(api), self.addr);
        self.stream.write_all(&frame(api, version, self.correlation, "eddy-cli", body)?).with_context(ctx)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).with_context(ctx)?;
        let len = i32::from_be_bytes(len);
        if len < 0 || len as usize > MAX_RESPONSE {
            bail!("{}: response of {len} bytes", ctx());
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body).with_context(ctx)?;
        let mut frame = Bytes::from(body);
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).with_context(ctx)?;
        if header.correlation_id != self.correlation {
            bail!("{}: response to request {} instead of {}", ctx(), header.correlation_id, self.correlation);
        }
        R::decode(&mut frame, version).with_context(ctx)
    }
}
