//! One client connection: 4-byte length framing, requests handled one at a
//! time so responses go back strictly in request order (as Kafka does: a
//! connection is muted while its request is in flight).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::protocol::{self, DecodeError};

pub async fn serve(stream: TcpStream, peer: SocketAddr, broker: Arc<Broker>, mut stop: watch::Receiver<bool>, max_frame: usize) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    tracing::debug!(%peer, "connection opened");
    loop {
        // Between requests, a stopping server closes the connection.
        let len = tokio::select! {
            r = rd.read_i32() => match r {
                Ok(n) => n,
                Err(_) => break, // closed by the client
            },
            _ = stop.changed() => break,
        };
        if len < 0 || len as usize > max_frame {
            tracing::warn!(%peer, frame_bytes = len, max_frame, "request frame is larger than socket.request.max.bytes (or negative); closing the connection");
            break;
        }
        let mut frame = BytesMut::with_capacity(len as usize);
        while frame.len() < len as usize {
            let want = (len as usize - frame.len()) as u64;
            match (&mut rd).take(want).read_buf(&mut frame).await {
                Ok(0) | Err(_) => {
                    tracing::debug!(%peer, "connection closed in the middle of a request frame");
                    return;
                }
                Ok(_) => {}
            }
        }
        let response = match protocol::decode_request(frame.freeze()) {
            Ok(req) => {
                let (api, version, correlation) = (req.api_key, req.version, req.header.correlation_id);
                match broker.handle(req, peer).await {
                    Some(body) => protocol::encode_response(api, version, correlation, &body),
                    None => continue, // acks=0: no response
                }
            }
            Err(DecodeError::UnsupportedVersion { api: ApiKey::ApiVersions, version, correlation_id }) => {
                tracing::debug!(%peer, version, "ApiVersions at an unknown version: answering with the supported list");
                let body = ResponseKind::ApiVersions(crate::broker::api_versions_unsupported());
                protocol::encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "bad request; closing the connection");
                break;
            }
        };
        match response {
            Ok(bytes) => {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "could not encode a response; closing the connection");
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
    tracing::debug!(%peer, "connection closed");
}
