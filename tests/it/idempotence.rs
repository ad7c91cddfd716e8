//! Idempotent producers: librdkafka with enable.idempotence through a proxy
//! that keeps cutting the connections mid-stream, so requests are retried
//! after their records may already have been written. No duplicates, no
//! gaps, order kept.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker_support::TestBroker;

/// A TCP proxy in front of the broker that can cut every live connection.
struct Proxy {
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    cuts: AtomicUsize,
}

impl Proxy {
    fn bind() -> (TcpListener, std::net::SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    fn start(listener: TcpListener, target: std::net::SocketAddr) -> Proxy {
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        listener.set_nonblocking(true).unwrap();
        let (l2, s2) = (Arc::clone(&live), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(target) else { continue };
                        l2.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                        for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 65536];
                                loop {
                                    match from.read(&mut buf) {
                                        Ok(0) | Err(_) => break,
                                        Ok(n) => {
                                            if to.write_all(&buf[..n]).is_err() {
                                                break;
                                            }
                                        }
                                    }
                                }
                                let _ = to.shutdown(Shutdown::Both);
                                let _ = from.shutdown(Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { live, stop, cuts: AtomicUsize::new(0) }
    }

    /// Cuts every connection now (the broker side sees it closed mid-stream).
    fn cut_all(&self) {
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.cuts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut_all();
    }
}

#[test]
fn idempotent_producer_survives_connection_cuts_without_duplicates_or_gaps() {
    let (listener, proxy_addr) = Proxy::bind();
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| c.broker.advertised = Some(proxy_addr.to_string()));
    b.keep_dir(tmp);
    let proxy = Arc::new(Proxy::start(listener, b.addr));
    {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let a: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().unwrap();
        let t = rdkafka::admin::NewTopic::new("idem", 3, rdkafka::admin::TopicReplication::Fixed(1));
        assert!(rt.block_on(a.create_topics(&[t], &rdkafka::admin::AdminOptions::new())).unwrap()[0].is_ok());
    }
    const N: usize = 40_000;
    let done = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (proxy, done) = (Arc::clone(&proxy), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(80));
                proxy.cut_all();
            }
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", proxy_addr.to_string())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "200")
        .set("message.timeout.ms", "120000")
        .set("log_level", "0")
        .create()
        .unwrap();
    let values: Vec<String> = (0..N).map(|i| format!("{i:08}")).collect();
    rt.block_on(async {
        let futures: Vec<_> = values.iter().enumerate().map(|(i, v)| p.send_result(FutureRecord::to("idem").partition((i % 3) as i32).key(v.as_str()).payload(v.as_str())).map_err(|(e, _)| e).unwrap()).collect();
        for f in futures {
            f.await.unwrap().map_err(|(e, _)| e).expect("delivered despite the cuts");
        }
    });
    done.store(true, Ordering::Relaxed);
    chaos.join().unwrap();
    assert!(proxy.cuts.load(Ordering::Relaxed) >= 3, "the connections were cut during the run");

    // Read straight from the broker: every value exactly once, in order.
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).set("group.id", "idem-check").set("enable.auto.commit", "false").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for part in 0..3 {
        tpl.add_partition_offset("idem", part, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut per_partition: Vec<Vec<usize>> = vec![Vec::new(); 3];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut total = 0;
    while total < N {
        assert!(Instant::now() < deadline, "read {total} of {N}");
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let v: usize = std::str::from_utf8(m.payload().unwrap()).unwrap().parse().unwrap();
            per_partition[m.partition() as usize].push(v);
            total += 1;
        }
    }
    assert!(c.poll(Duration::from_millis(500)).is_none(), "more records than produced: duplicates");
    for (part, vs) in per_partition.iter().enumerate() {
        let want: Vec<usize> = (part..N).step_by(3).collect();
        assert_eq!(vs, &want, "partition {part}: every record once, in order");
    }
}
