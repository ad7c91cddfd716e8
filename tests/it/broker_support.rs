//! A real Eddy server on an ephemeral loopback port, in this process, with
//! its own runtime thread and data directory.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eddy::broker::Broker;
use eddy::config::Config;

pub struct TestBroker {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's name and bound address, in `listeners` order.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The HTTP listener (metrics, JSON API, queries).
    pub http_addr: SocketAddr,
    pub broker: Arc<Broker>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Set before stopping to skip the clean close (a crash, as far as the
    /// data directory can tell: no final flush, no clean-shutdown marker).
    crash: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBroker {
    /// A broker with default settings and a fresh data directory.
    pub fn start() -> TestBroker {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = TestBroker::start_in(tmp.path(), |_| {});
        b._tmp = Some(tmp);
        b
    }

    /// A broker on `data_dir`, with the config adjusted by `tweak`.
    pub fn start_in(data_dir: &Path, tweak: impl FnOnce(&mut Config)) -> TestBroker {
        // Broker logs go to the test's captured output (RUST_LOG to change the level).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        let mut config = Config::default();
        config.broker.data_dir = data_dir.to_path_buf();
        config.broker.listen = "127.0.0.1:0".into();
        // Tests write records with timestamps from 1970 on purpose (time
        // lookups); with Kafka's default retention.ms of 7 days the broker's
        // retention would rightly delete them within a second.
        config.topic_defaults.insert("retention.ms".into(), "-1".into());
        tweak(&mut config);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let crash = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let crash_flag = Arc::clone(&crash);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                // Every listener of the config (ports 0: ephemeral); the
                // first one is `addr`.
                let listeners = eddy::server::bind(&config).await.unwrap_or_else(|e| panic!("binding the listeners: {e}"));
                let named: Vec<(String, SocketAddr)> = listeners.iter().map(|l| (l.name().to_string(), l.local_addr())).collect();
                let broker = Arc::new(Broker::open(config).unwrap());
                let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let http_addr = http.local_addr().unwrap();
                let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
                let http_task = tokio::spawn(eddy::http::serve(http, Arc::clone(&broker), async {
                    let _ = http_stopped.await;
                }));
                addr_tx.send((named, http_addr, Arc::clone(&broker))).unwrap();
                eddy::server::run(listeners, Arc::clone(&broker), async {
                    let _ = stop_rx.await;
                })
                .await;
                let _ = http_stop.send(());
                let _ = http_task.await;
                if !crash_flag.load(std::sync::atomic::Ordering::SeqCst) {
                    broker.shutdown().unwrap();
                }
            });
        });
        let (listeners, http_addr, broker) = addr_rx.recv_timeout(Duration::from_secs(30)).expect("the broker started");
        let addr = listeners[0].1;
        TestBroker { addr, listeners, http_addr, broker, data_dir: data_dir.to_path_buf(), _tmp: None, stop: Some(stop_tx), crash, thread: Some(thread) }
    }

    /// Keeps `tmp` alive as long as the broker.
    pub fn keep_dir(&mut self, tmp: tempfile::TempDir) {
        self._tmp = Some(tmp);
    }

    /// A group's committed offsets, read from the coordinator.
    pub fn broker_committed(&self, group: &str) -> std::collections::HashMap<(String, i32), i64> {
        self.broker.groups.committed(group).into_iter().map(|(t, p, c)| ((t, p), c.offset)).collect()
    }

    pub fn log_end(&self, topic: &str, partition: i32) -> i64 {
        self.broker.partition(topic, partition).expect("partition exists").log.log_end_offset() as i64
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The bound address of the listener called `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no listener {name}: {:?}", self.listeners)).1
    }

    /// Stops the server cleanly (as SIGTERM would) and waits for it.
    pub fn stop(mut self) -> Option<tempfile::TempDir> {
        self.shutdown();
        self._tmp.take()
    }

    /// Stops without the clean close: the next start recovers.
    pub fn crash(mut self) -> Option<tempfile::TempDir> {
        self.crash.store(true, std::sync::atomic::Ordering::SeqCst);
        self.shutdown();
        self._tmp.take()
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("the broker thread panicked");
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs a command to its end, collecting its stdout; panics if it takes
/// longer than `limit` (after killing it).
pub fn output_within(cmd: &mut std::process::Command, limit: Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        let _ = tx.send(v);
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Its children may hold the pipe a moment longer.
    let stdout = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    std::process::Output { status, stdout, stderr: Vec::new() }
}
