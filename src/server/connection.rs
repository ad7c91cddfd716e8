//! One client connection: 4-byte length framing; requests are handled one at
//! a time, in order, and responses go back strictly in request order. A
//! produce that waits for its fsync (acks=all) does not hold up the reading
//! of the next request: its response waits in an ordered queue while the
//! connection goes on (so consecutive produces share fsyncs).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::Served;
use crate::broker::{Broker, Handled};
use crate::log::FileRecords;
use crate::protocol::{self, DecodeError, Frame, FrameBuf, Part, Reply};
use crate::security::sasl::{Gate, Session};
use crate::security::Context;

/// Responses a connection may have queued before it stops reading.
const MAX_IN_FLIGHT: usize = 32;
/// Spare room kept in a connection's read buffer.
const READ_BUFFER: usize = 64 * 1024;

type Pending = Pin<Box<dyn Future<Output = Option<Frame>> + Send>>;

/// Serves one connection, read from `rd` and answered on `wr`: the halves
/// of a TcpStream (plaintext) or of a TLS stream. `ctx` names the peer, the
/// listener and the principal so far (a TLS client certificate's, or
/// anonymous); `served` holds the listener's limits and SASL settings.
pub(crate) async fn serve<R, W>(mut rd: R, mut wr: W, mut ctx: Context, broker: Arc<Broker>, mut stop: watch::Receiver<bool>, served: Arc<Served>)
where
    R: AsyncRead + Unpin,
    W: Sink,
{
    let (peer, max_frame, idle, sasl) = (ctx.peer, served.max_frame, served.idle, served.sasl.clone());
    tracing::debug!(%peer, listener = %served.name, "connection opened");

    // The writer sends responses in the order their requests arrived.
    let (queue, mut responses) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(next) = responses.recv().await {
            // None here is a response that could not be encoded: the client
            // would wait for it forever, so the connection closes.
            let Some(frame) = next.await else { break };
            // A client that stops reading is let go after
            // connections.max.idle.ms: else its connection, its place and
            // what its queued responses hold (chunks of the log, open
            // segment files) would be kept for ever.
            let sent = tokio::time::timeout(idle, send_frame(&mut wr, frame)).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::warn!(%peer, idle_ms = idle.as_millis() as u64, "a client stopped reading its responses; closing the connection (connections.max.idle.ms)");
                    return;
                }
            }
        }
        let _ = tokio::time::timeout(idle, wr.shutdown()).await;
    });

    // Frames are read into one growing buffer and split off it; once a
    // frame's bytes are dropped (appended, answered), `reserve` reuses the
    // space instead of allocating (and page-faulting) a new buffer per request.
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let mut session = sasl.as_deref().map(Session::new);
    // Client quotas: how long to read nothing after the last request.
    let mut throttle = std::time::Duration::ZERO;
    // Whether the last frame was larger than READ_BUFFER.
    let mut large = false;
    loop {
        // A throttled client's next request waits (Kafka mutes the channel).
        // What it sends meanwhile is buffered, up to one read buffer, only
        // to notice a client that leaves: its slot is not held to the end.
        if !throttle.is_zero() {
            let muted = tokio::time::sleep(std::mem::take(&mut throttle));
            tokio::pin!(muted);
            loop {
                if buf.capacity() == buf.len() && buf.len() < READ_BUFFER {
                    buf.reserve(READ_BUFFER - buf.len());
                }
                let mut ahead = (&mut rd).take(READ_BUFFER.saturating_sub(buf.len()) as u64);
                tokio::select! {
                    _ = &mut muted => break,
                    _ = stop.changed() => return finish(peer, queue, writer).await,
                    r = ahead.read_buf(&mut buf), if buf.len() < READ_BUFFER => {
                        if !matches!(r, Ok(n) if n > 0) {
                            tracing::debug!(%peer, "a throttled client closed its connection");
                            return finish(peer, queue, writer).await;
                        }
                    }
                }
            }
        }
        // Between requests, a stopping server closes the connection.
        while buf.len() < 4 {
            if buf.is_empty() {
                // After a large frame, a fresh small buffer when the last
                // one is still held (growing a 64 KiB one would copy it).
                if !large {
                    buf.reserve(READ_BUFFER);
                } else if !buf.try_reclaim(4) {
                    buf = BytesMut::new();
                }
            }
            // After a large frame only the next one's length is read: the
            // frame then gets a buffer of its own size, read into directly,
            // instead of having a read-ahead prefix copied into it. Small
            // frames are read many at a time.
            let ahead = if large { 4 - buf.len() } else { READ_BUFFER };
            let mut head = (&mut rd).take(ahead as u64);
            // connections.max.idle.ms: a client that sends nothing is let go.
            let n = tokio::select! {
                r = tokio::time::timeout(idle, head.read_buf(&mut buf)) => match r {
                    Ok(r) => r.unwrap_or(0),
                    Err(_) => {
                        tracing::debug!(%peer, idle_ms = idle.as_millis() as u64, "idle connection closed (connections.max.idle.ms)");
                        0
                    }
                },
                _ = stop.changed() => 0,
            };
            if n == 0 {
                if !buf.is_empty() {
                    tracing::debug!(%peer, "connection closed in the middle of a frame length");
                }
                return finish(peer, queue, writer).await;
            }
        }
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len < 0 || len as usize > max_frame {
            tracing::warn!(%peer, frame_bytes = len, max_frame, "request frame is larger than socket.request.max.bytes (or negative); closing the connection");
            break;
        }
        // Before authentication only small frames (sasl.server.max.receive.size).
        if let (Some(s), Some(l)) = (&session, &sasl) {
            if !s.authenticated() && len as usize > l.max_receive {
                tracing::warn!(%peer, frame_bytes = len, max_receive = l.max_receive, "request frame before SASL authentication is larger than sasl.server.max.receive.size; closing the connection");
                break;
            }
        }
        let need = 4 + len as usize;
        large = need > READ_BUFFER;
        if buf.len() < need {
            buf.reserve(need - buf.len());
        }
        while buf.len() < need {
            // Only what the frame lacks is read: bytes of the next frame read
            // here would be copied again when its buffer is reserved (this
            // frame's allocation is still held by the request it becomes).
            let mut rest = (&mut rd).take((need - buf.len()) as u64);
            // A frame that stops arriving (slowloris) is idle too.
            match tokio::time::timeout(idle, rest.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    tracing::debug!(%peer, "connection closed in the middle of a request frame");
                    return finish(peer, queue, writer).await;
                }
                Err(_) => {
                    tracing::warn!(%peer, idle_ms = idle.as_millis() as u64, "a request frame stopped arriving; closing the connection (connections.max.idle.ms)");
                    return finish(peer, queue, writer).await;
                }
                Ok(Ok(_)) => {}
            }
        }
        let _ = buf.split_to(4);
        let frame = buf.split_to(len as usize);
        let mut close_after = false;
        let pending: Pending = match protocol::decode_request(frame.freeze()) {
            Ok(req) => {
                let (api, version, correlation) = (req.api_key, req.version, req.header.correlation_id);
                let (started, metrics) = (std::time::Instant::now(), Arc::clone(&broker.metrics));
                let encode = move |reply: Option<Reply>| {
                    metrics.request(api, started.elapsed(), reply.as_ref().map(|r| &r.body));
                    reply.and_then(|r| encoded(&peer, protocol::encode_response(api, version, correlation, &r.body, r.files)))
                };
                let gate = match session.as_mut() {
                    Some(s) => s.admit(req, &broker.credentials),
                    None => Gate::Pass(req),
                };
                if let Some(user) = session.as_ref().and_then(|s| s.user()) {
                    ctx.authenticated_as(user);
                }
                match gate {
                    Gate::Pass(req) => {
                        let dispatched = broker.dispatch(req, &ctx).await;
                        throttle = dispatched.throttle;
                        match dispatched.handled {
                            Handled::Now(None) => {
                                // acks=0: no response
                                encode(None);
                                continue;
                            }
                            Handled::Now(body) => {
                                let bytes = encode(body);
                                Box::pin(async move { bytes })
                            }
                            Handled::Later(fut) => Box::pin(async move { encode(fut.await) }),
                        }
                    }
                    // SASL answers; a failed exchange closes after its answer.
                    Gate::Reply { body, close } => {
                        close_after = close;
                        let bytes = encode(Some(body.into()));
                        let delay = if close { sasl.as_ref().map_or(std::time::Duration::ZERO, |l| l.failure_delay) } else { std::time::Duration::ZERO };
                        Box::pin(async move {
                            tokio::time::sleep(delay).await;
                            bytes
                        })
                    }
                    Gate::Close(reason) => {
                        tracing::warn!(%peer, reason, "request not allowed on this SASL connection; closing it");
                        break;
                    }
                }
            }
            Err(DecodeError::UnsupportedVersion { api: ApiKey::ApiVersions, version, correlation_id }) => {
                tracing::debug!(%peer, version, "ApiVersions at an unknown version: answering with the supported list");
                let body = ResponseKind::ApiVersions(crate::broker::api_versions_unsupported());
                let bytes = encoded(&peer, protocol::encode_response(ApiKey::ApiVersions, 0, correlation_id, &body, Vec::new()));
                Box::pin(async move { bytes })
            }
            Err(e) => {
                broker.metrics.malformed.inc();
                tracing::warn!(%peer, error = %e, "bad request; closing the connection");
                break;
            }
        };
        if queue.send(pending).await.is_err() || close_after {
            break; // the writer stopped (the client is gone), or SASL failed
        }
    }
    finish(peer, queue, writer).await
}

/// Writes one response: runs of byte parts in vectored writes, file
/// regions through the stream's `send_file` (their tails join the next run). A TLS stream may keep the tail
/// of what it encrypted when the socket is full; flush sends it (a no-op on
/// plain TCP).
async fn send_frame<W: Sink>(wr: &mut W, frame: Frame) -> io::Result<()> {
    let mut run = VecDeque::new();
    for part in frame.0 {
        match part {
            Part::Bytes(b) => run.push_back(b),
            Part::File(f) => {
                if !run.is_empty() {
                    wr.write_all_buf(&mut FrameBuf::new(std::mem::take(&mut run))).await?;
                }
                wr.send_file(&f).await?;
                run.push_back(f.tail);
            }
        }
    }
    if !run.is_empty() {
        wr.write_all_buf(&mut FrameBuf::new(run)).await?;
    }
    wr.flush().await
}

type SendFuture<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;

/// The writing half of a connection: a stream that can also send a region
/// of a segment file. The region must follow every byte written before it:
/// a stream that buffers written bytes in user space sends the region
/// through that buffer too (as the default does).
pub(crate) trait Sink: AsyncWrite + Unpin + Send + 'static {
    /// Sends the region's bytes in the file (not its tail). By default they
    /// are read from the file and written (a TLS stream has to encrypt them).
    fn send_file<'a>(&'a mut self, f: &'a FileRecords) -> SendFuture<'a> {
        Box::pin(copy_file(self, f))
    }
}

/// TLS: the region is read and written.
impl<T: AsyncRead + AsyncWrite + Send + 'static> Sink for tokio::io::WriteHalf<T> {}

/// Plain TCP: the kernel sends the region from the page cache (`sendfile`),
/// without a copy through the broker's memory.
impl Sink for tokio::net::tcp::OwnedWriteHalf {
    fn send_file<'a>(&'a mut self, f: &'a FileRecords) -> SendFuture<'a> {
        use std::os::fd::AsRawFd;
        // Set once sendfile was refused (a file system that cannot splice):
        // every region is copied from then on.
        static REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        Box::pin(async move {
            if REFUSED.load(std::sync::atomic::Ordering::Relaxed) {
                return copy_file(self, f).await;
            }
            let stream: &tokio::net::TcpStream = self.as_ref();
            let (sock, file) = (stream.as_raw_fd(), f.file.as_raw_fd());
            let end = f.pos + f.file_len as u64;
            let mut off = f.pos as libc::off_t;
            while (off as u64) < end {
                stream.writable().await?;
                let left = ((end - off as u64) as usize).min(0x7fff_f000);
                // SAFETY: both descriptors stay open for the call (the
                // stream is borrowed, the file held by `f`); sendfile
                // advances `off` by what it sent. (A peer's reset makes it
                // fail with EPIPE, not kill the process: Rust programs
                // start with SIGPIPE ignored.)
                let sent = stream.try_io(tokio::io::Interest::WRITABLE, || match unsafe { libc::sendfile(sock, file, &mut off, left) } {
                    n if n < 0 => Err(io::Error::last_os_error()),
                    n => Ok(n as usize),
                });
                match sent {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a segment file ended inside a region being sent")),
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    // A file system that cannot splice: copy instead.
                    Err(e) if off as u64 == f.pos && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                        tracing::info!(error = %e, "sendfile refused; fetches copy batches from the segment files instead");
                        REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
                        return copy_file(self, f).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }
}

/// Sends a region's bytes in the file by reading them, a piece at a time,
/// and writing them.
async fn copy_file<W: AsyncWrite + Unpin + ?Sized>(wr: &mut W, f: &FileRecords) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    const PIECE: usize = 256 * 1024;
    let mut buf = vec![0u8; PIECE.min(f.file_len)];
    let mut done = 0usize;
    while done < f.file_len {
        let n = PIECE.min(f.file_len - done);
        f.file.read_exact_at(&mut buf[..n], f.pos + done as u64)?;
        wr.write_all(&buf[..n]).await?;
        done += n;
    }
    Ok(())
}

/// Responses already queued still go out, then the connection closes.
async fn finish(peer: SocketAddr, queue: mpsc::Sender<Pending>, writer: tokio::task::JoinHandle<()>) {
    drop(queue);
    let _ = writer.await;
    tracing::debug!(%peer, "connection closed");
}

fn encoded(peer: &SocketAddr, r: anyhow::Result<Frame>) -> Option<Frame> {
    match r {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(%peer, error = %e, "could not encode a response");
            None
        }
    }
}
