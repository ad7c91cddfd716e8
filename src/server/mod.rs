//! Bytes and connections: the accept loop, connection limit, shutdown. No
//! Kafka semantics here beyond framing (see `connection.rs`).

mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::broker::Broker;

/// How long a stopping server waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often log upkeep (flush.ms, retention, checkpoints) runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// Waits for a free connection slot, then for a connection; None once
/// `shutdown` completes (or the limit is closed).
pub async fn accept<F: Future<Output = ()>>(listener: &TcpListener, limit: &Arc<Semaphore>, shutdown: &mut std::pin::Pin<&mut F>) -> Option<(OwnedSemaphorePermit, std::io::Result<(TcpStream, SocketAddr)>)> {
    let permit = tokio::select! {
        _ = shutdown.as_mut() => return None,
        p = Arc::clone(limit).acquire_owned() => p.ok()?,
    };
    tokio::select! {
        _ = shutdown.as_mut() => None,
        a = listener.accept() => Some((permit, a)),
    }
}

/// Out of descriptors and the like: logged, and a pause instead of spinning.
pub async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves Kafka clients on `listener` until `shutdown` completes; then stops
/// accepting, lets every connection finish its in-flight request, and
/// returns. The caller closes the broker (`Broker::shutdown`). The
/// configured listener's security protocol applies (`listeners`): on
/// SASL_PLAINTEXT, clients authenticate first.
pub async fn run(listener: TcpListener, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    let sasl = match crate::security::sasl::SaslListener::from_config(&broker.config) {
        Ok(s) => s.map(Arc::new),
        Err(e) => {
            tracing::error!(error = %e, "bad listener settings; not serving");
            return;
        }
    };
    if sasl.is_some() && broker.credentials.is_empty() {
        tracing::warn!("SASL listener without any SCRAM user: nobody can log in (set sasl.bootstrap.user)");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    broker.start_processors();
    let limit = Arc::new(Semaphore::new(broker.config.broker.max_connections as usize));
    let max_frame = broker.config.broker.socket_request_max_bytes as usize;
    let idle = Duration::from_millis(broker.config.broker.connections_max_idle_ms);
    let per_ip = PerIp::new(broker.config.broker.max_connections_per_ip);
    let mut connections = JoinSet::new();

    // Log upkeep (blocking I/O, on its own task so that a slow retention
    // pass never delays group session expiry) and the group ticker.
    let upkeep = {
        let broker = Arc::clone(&broker);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let b = Arc::clone(&broker);
                        let _ = tokio::task::spawn_blocking(move || b.maintain()).await;
                    }
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let group_ticker = {
        let broker = Arc::clone(&broker);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::group::TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => broker.group_tick(),
                    _ = stop.changed() => return,
                }
            }
        })
    };

    tokio::pin!(shutdown);
    broker.ready.store(true, std::sync::atomic::Ordering::Release);
    while let Some((permit, accepted)) = accept(&listener, &limit, &mut shutdown).await {
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = per_ip.take(peer.ip()) else {
                    tracing::warn!(%peer, limit = per_ip.limit, "max.connections.per.ip reached; closing the new connection");
                    drop(stream);
                    continue;
                };
                let (broker, stop, sasl) = (Arc::clone(&broker), stop_rx.clone(), sasl.clone());
                broker.metrics.connections_accepted.inc();
                broker.metrics.connections.inc();
                connections.spawn(async move {
                    let metrics = Arc::clone(&broker.metrics);
                    connection::serve(stream, peer, broker, stop, max_frame, idle, sasl).await;
                    metrics.connections.dec();
                    drop(slot);
                    drop(permit);
                });
            }
            Err(e) => accept_failed(e).await,
        }
        while connections.try_join_next().is_some() {}
    }
    broker.ready.store(false, std::sync::atomic::Ordering::Release);
    tracing::info!(connections = connections.len(), "stopping: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(connections = connections.len(), "connections still busy after the drain timeout; closing them");
        connections.shutdown().await;
    }
    let _ = upkeep.await;
    let _ = group_ticker.await;
}

/// Connections held per client address (`max.connections.per.ip`).
#[derive(Clone)]
struct PerIp {
    limit: u32,
    held: Arc<parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>>,
}

/// One connection's place in its address's count, given back on drop.
struct IpSlot {
    ip: std::net::IpAddr,
    held: Arc<parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>>,
}

impl PerIp {
    fn new(limit: u32) -> PerIp {
        PerIp { limit, held: Arc::default() }
    }

    /// A slot for one more connection from `ip`, or None at the limit.
    fn take(&self, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut held = self.held.lock();
        let n = held.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(IpSlot { ip, held: Arc::clone(&self.held) })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock();
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}
