//! Bytes and connections: the listeners and their accept loops, connection
//! limits, TLS handshakes, shutdown. No Kafka semantics here beyond framing
//! (see `connection.rs`).

mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;
use crate::config::{Config, ListenerSpec};
use crate::security::sasl::SaslListener;
use crate::security::{Context, SecurityProtocol};

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

/// A Kafka listener bound and ready to serve: its name, security protocol,
/// socket, and what its connections need (SASL settings, TLS acceptor).
pub struct Listener {
    name: Arc<str>,
    protocol: SecurityProtocol,
    tcp: TcpListener,
    local: SocketAddr,
    /// What clients of this listener are told to connect to.
    advertised: (String, i32),
    sasl: Option<Arc<SaslListener>>,
    tls: Option<TlsAcceptor>,
}

impl Listener {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn protocol(&self) -> SecurityProtocol {
        self.protocol
    }

    /// The bound address (the real port when `listeners` said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The `host:port` clients of this listener are told to use.
    pub fn advertised(&self) -> (&str, i32) {
        (&self.advertised.0, self.advertised.1)
    }
}

/// Why the listeners could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A listener setting or a TLS file is wrong (the message names the key).
    #[error("{0}")]
    Config(String),
    #[error("listener {name} cannot listen on {addr}: {source}")]
    Io { name: String, addr: SocketAddr, source: std::io::Error },
}

/// The listeners of a config, checked, with their SASL settings and TLS
/// acceptors (keystore and truststore read and checked), not bound yet.
pub struct Prepared {
    listeners: Vec<(ListenerSpec, Option<Arc<SaslListener>>, Option<TlsAcceptor>)>,
}

/// Checks the listeners of the config (`listeners`, or PLAINTEXT at
/// `listen`) and loads their TLS files, so that a wrong setting or file
/// stops start-up before anything else happens.
pub fn prepare(config: &Config) -> Result<Prepared, BindError> {
    let specs = config.listeners().map_err(|e| BindError::Config(format!("[broker] {e}")))?;
    let sasl = match specs.iter().any(|s| s.protocol.uses_sasl()) {
        true => Some(Arc::new(SaslListener::from_config(config).map_err(|e| BindError::Config(format!("[broker] sasl.enabled.mechanisms: {e}")))?)),
        false => None,
    };
    let mut acceptors: Vec<(SecurityProtocol, TlsAcceptor)> = Vec::new();
    let mut listeners = Vec::with_capacity(specs.len());
    for spec in specs {
        let tls = match spec.protocol.uses_tls() {
            false => None,
            true => match acceptors.iter().find(|(p, _)| *p == spec.protocol) {
                Some((_, a)) => Some(a.clone()),
                None => {
                    let a = crate::security::tls::acceptor(config, spec.protocol).map_err(BindError::Config)?;
                    acceptors.push((spec.protocol, a.clone()));
                    Some(a)
                }
            },
        };
        let sasl = if spec.protocol.uses_sasl() { sasl.clone() } else { None };
        listeners.push((spec, sasl, tls));
    }
    Ok(Prepared { listeners })
}

impl Prepared {
    /// Binds every listener (port 0: any free port).
    pub async fn bind(self) -> Result<Vec<Listener>, BindError> {
        let mut out = Vec::with_capacity(self.listeners.len());
        for (spec, sasl, tls) in self.listeners {
            let io = |source| BindError::Io { name: spec.name.clone(), addr: spec.addr, source };
            let tcp = TcpListener::bind(spec.addr).await.map_err(io)?;
            let local = tcp.local_addr().map_err(io)?;
            let advertised = match &spec.advertised {
                Some((host, port)) => (host.clone(), *port as i32),
                None => (local.ip().to_string(), local.port() as i32),
            };
            out.push(Listener { name: spec.name.into(), protocol: spec.protocol, tcp, local, advertised, sasl, tls });
        }
        Ok(out)
    }
}

/// `prepare`, then `bind`.
pub async fn bind(config: &Config) -> Result<Vec<Listener>, BindError> {
    prepare(config)?.bind().await
}

/// What every connection of a listener shares.
pub(crate) struct Served {
    pub name: Arc<str>,
    /// `socket.request.max.bytes`.
    pub max_frame: usize,
    /// `connections.max.idle.ms`.
    pub idle: Duration,
    /// The listener's SASL settings, if clients must authenticate.
    pub sasl: Option<Arc<SaslListener>>,
}

/// What every listener shares: the connection limits.
struct Limits {
    connections: Arc<Semaphore>,
    per_ip: PerIp,
}

/// Serves Kafka clients on every listener until `shutdown` completes; then
/// stops accepting, lets every connection finish its in-flight request, and
/// returns. The caller closes the broker (`Broker::shutdown`). Each listener
/// has its own accept loop; `max.connections` and `max.connections.per.ip`
/// count connections across all of them. On SASL listeners clients
/// authenticate first; on TLS ones the handshake runs in the connection's
/// own task, bounded by `tls::HANDSHAKE_TIMEOUT`.
pub async fn run(listeners: Vec<Listener>, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    if listeners.iter().any(|l| l.sasl.is_some()) && broker.credentials.is_empty() {
        tracing::warn!("SASL listener without any SCRAM user: nobody can log in (set sasl.bootstrap.user)");
    }
    for l in listeners.iter().filter(|l| l.advertised.0 == "0.0.0.0" || l.advertised.0 == "::") {
        tracing::warn!(listener = %l.name, advertised = %l.advertised.0, "the listener advertises an address clients cannot connect to; set advertised.listeners");
    }
    broker.set_endpoints(listeners.iter().map(|l| crate::broker::Endpoint { listener: l.name.to_string(), protocol: l.protocol, bound: l.local, host: l.advertised.0.clone(), port: l.advertised.1 }).collect());
    let (stop_tx, stop_rx) = watch::channel(false);
    broker.start_processors();
    let limits = Arc::new(Limits { connections: Arc::new(Semaphore::new(broker.config.broker.max_connections as usize)), per_ip: PerIp::new(broker.config.broker.max_connections_per_ip) });

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

    let mut loops = JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(listener, Arc::clone(&broker), Arc::clone(&limits), stop_rx.clone()));
    }
    broker.ready.store(true, std::sync::atomic::Ordering::Release);
    shutdown.await;
    broker.ready.store(false, std::sync::atomic::Ordering::Release);
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    let _ = upkeep.await;
    let _ = group_ticker.await;
}

/// One listener's accept loop, until `stop`; then its connections finish
/// their in-flight requests (up to `DRAIN_TIMEOUT`).
async fn accept_loop(listener: Listener, broker: Arc<Broker>, limits: Arc<Limits>, stop: watch::Receiver<bool>) {
    let b = &broker.config.broker;
    let idle = Duration::from_millis(b.connections_max_idle_ms);
    let served = Arc::new(Served { name: Arc::clone(&listener.name), max_frame: b.socket_request_max_bytes as usize, idle, sasl: listener.sasl.clone() });
    let handshake = crate::security::tls::HANDSHAKE_TIMEOUT.min(idle);
    let mut connections = JoinSet::new();
    let shutdown = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    tokio::pin!(shutdown);
    // Accept first, then wait for a connection slot: a loop waiting for
    // clients holds no slot that another listener's client could use.
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = shutdown.as_mut() => break,
            a = listener.tcp.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let Some(slot) = limits.per_ip.take(peer.ip()) else {
            tracing::warn!(%peer, listener = %listener.name, limit = limits.per_ip.limit, "max.connections.per.ip reached; closing the new connection");
            drop(stream);
            continue;
        };
        // max.connections: this client (and the listener) waits for one to end.
        let permit = tokio::select! {
            _ = shutdown.as_mut() => break,
            p = Arc::clone(&limits.connections).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (broker, stop, served, tls) = (Arc::clone(&broker), stop.clone(), Arc::clone(&served), listener.tls.clone());
        broker.metrics.connections_accepted.inc();
        broker.metrics.connections.inc();
        connections.spawn(async move {
            let metrics = Arc::clone(&broker.metrics);
            let ctx = Context::new(peer, &served.name);
            let _ = stream.set_nodelay(true);
            match tls {
                // Plaintext keeps the lock-free halves of a TcpStream.
                None => {
                    let (rd, wr) = stream.into_split();
                    connection::serve(rd, wr, ctx, broker, stop, served).await;
                }
                Some(acceptor) => handshake_then_serve(&acceptor, stream, handshake, ctx, broker, stop, served).await,
            }
            metrics.connections.dec();
            drop(slot);
            drop(permit);
        });
    }
    drop(listener.tcp);
    tracing::info!(listener = %listener.name, connections = connections.len(), "stopping: no new connections, finishing in-flight requests");
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(listener = %listener.name, connections = connections.len(), "connections still busy after the drain timeout; closing them");
        connections.shutdown().await;
    }
}

/// A TLS connection: the handshake (bounded, and cut short by a stopping
/// server), the principal of its client certificate, then requests.
async fn handshake_then_serve(acceptor: &TlsAcceptor, stream: TcpStream, bound: Duration, mut ctx: Context, broker: Arc<Broker>, mut stop: watch::Receiver<bool>, served: Arc<Served>) {
    let peer = ctx.peer;
    let accepted = tokio::select! {
        r = crate::security::tls::accept(acceptor, stream, bound) => r,
        _ = stop.wait_for(|s| *s) => return,
    };
    match accepted {
        Ok((tls, principal)) => {
            if let Some(p) = principal {
                tracing::debug!(%peer, listener = %served.name, principal = %p, "TLS client certificate accepted");
                ctx.principal = p.into();
            }
            let (rd, wr) = tokio::io::split(tls);
            connection::serve(rd, wr, ctx, broker, stop, served).await;
        }
        Err(reason) => tracing::info!(%peer, listener = %served.name, reason, "TLS connection closed before serving"),
    }
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
