//! The HTTP listener: Prometheus metrics after a known workload, health and
//! readiness, the JSON API, and interactive queries of processor state
//! checked against what a consumer reads from the compacted output.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use serde_json::{json, Value};

use crate::broker_support::TestBroker;
use crate::processors::{client, consume_until, create, processor, produce};

/// A plain HTTP/1.1 request; returns (status, body).
pub(crate) fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

pub(crate) fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A sample's value from the Prometheus text: `name{labels} value`, the
/// labels given matching exactly (in any order).
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let got: BTreeMap<&str, &str> = l.split(',').filter(|x| !x.is_empty()).filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, v.trim_matches('"'))).collect();
        if got == want {
            return value.parse().ok();
        }
    }
    None
}

/// A group member (kept alive by the caller) that has read `n` records of
/// `topic` from the start and committed them.
pub(crate) fn read_in_group(b: &TestBroker, group: &str, client_id: &str, topic: &str, n: usize) -> BaseConsumer {
    let c: BaseConsumer = client(b).set("group.id", group).set("client.id", client_id).set("enable.auto.commit", "false").set("auto.offset.reset", "earliest").create().unwrap();
    c.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while seen < n {
        assert!(Instant::now() < deadline, "read {seen} of {n}");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            m.unwrap();
            seen += 1;
        }
    }
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    c
}

#[test]
fn metrics_count_a_known_workload() {
    let b = TestBroker::start();
    create(&b, "m", 2);
    let records: Vec<(Option<String>, String)> = (0..100).map(|i| (Some(format!("k{i}")), format!("value-{i:04}-{}", "x".repeat(50)))).collect();
    let refs: Vec<(Option<&str>, String)> = records.iter().map(|(k, v)| (k.as_deref(), v.clone())).collect();
    produce(&b, "m", &refs);

    // A group reads everything and commits.
    let _member = read_in_group(&b, "g", "rdkafka", "m", 100);

    // An error the metrics must show: ListOffsets for a partition that does not exist.
    {
        use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
        use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse, TopicName};
        use kafka_protocol::protocol::StrBytes;
        let mut p = ListOffsetsPartition::default();
        p.partition_index = 9;
        p.timestamp = -1;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_static_str("m"));
        t.partitions = vec![p];
        let mut r = ListOffsetsRequest::default();
        r.replica_id = kafka_protocol::messages::BrokerId(-1);
        r.topics = vec![t];
        let resp: ListOffsetsResponse = crate::wire_support::call_once(b.addr, ApiKey::ListOffsets, 1, &r);
        assert_eq!(resp.topics[0].partitions[0].error_code, 3);
    }

    let text = http(b.http_addr, "GET", "/metrics").1;
    let m = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
    let logs: u64 = b.broker.topic("m").unwrap().partitions.iter().map(|p| p.log.size_bytes()).sum();
    assert_eq!(m("eddy_topic_records_in_total", &[("topic", "m")]), 100.0);
    assert_eq!(m("eddy_topic_bytes_in_total", &[("topic", "m")]), logs as f64, "bytes in are the batches as stored");
    assert!(m("eddy_topic_records_out_total", &[("topic", "m")]) >= 100.0);
    assert!(m("eddy_topic_bytes_out_total", &[("topic", "m")]) >= logs as f64);
    let end0 = m("eddy_log_end_offset", &[("topic", "m"), ("partition", "0")]);
    let end1 = m("eddy_log_end_offset", &[("topic", "m"), ("partition", "1")]);
    assert_eq!(end0 + end1, 100.0);
    assert_eq!(m("eddy_log_start_offset", &[("topic", "m"), ("partition", "0")]), 0.0);
    assert!(m("eddy_log_size_bytes", &[("topic", "m"), ("partition", "0")]) > 0.0);
    assert_eq!(m("eddy_consumer_group_lag", &[("group", "g"), ("topic", "m"), ("partition", "0")]), 0.0);
    assert_eq!(m("eddy_consumer_group_lag", &[("group", "g"), ("topic", "m"), ("partition", "1")]), 0.0);
    assert_eq!(m("eddy_request_errors_total", &[("api", "ListOffsets"), ("code", "3")]), 1.0);
    assert!(m("eddy_requests_total", &[("api", "Produce")]) >= 1.0);
    assert!(m("eddy_requests_total", &[("api", "Fetch")]) >= 1.0);
    assert!(m("eddy_requests_total", &[("api", "OffsetCommit")]) >= 1.0);
    assert!(m("eddy_request_duration_seconds_count", &[("api", "Produce")]) >= 1.0);
    assert!(m("eddy_fsync_duration_seconds_count", &[]) >= 1.0, "acks=all produce fsyncs");
    assert!(m("eddy_connections", &[]) >= 1.0, "the consumer is connected");
    assert_eq!(m("eddy_malformed_requests_total", &[]), 0.0);

    // Five more records on partition 0: the group lags by five there.
    {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let p: BaseProducer = client(&b).set("acks", "1").create().unwrap();
        for i in 0..5 {
            p.send(BaseRecord::<str, str>::to("m").partition(0).key("x").payload(&format!("more-{i}"))).unwrap();
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }
    // acks=1 leaves them unsynced; a checkpoint fsyncs them, and the
    // histogram counts every fsync of a topic log, whoever asked for it.
    let fsyncs = || b.broker.topics().iter().flat_map(|t| t.partitions.iter().map(|p| p.log.fsync_count())).sum::<u64>() as f64;
    b.broker.topic("m").unwrap().partitions[0].log.checkpoint().unwrap();
    let before = fsyncs();
    let text = http(b.http_addr, "GET", "/metrics").1;
    let after = fsyncs();
    let counted = sample(&text, "eddy_fsync_duration_seconds_count", &[]).unwrap();
    assert!(before <= counted && counted <= after, "{before} <= {counted} <= {after}");
    assert!(counted > m("eddy_fsync_duration_seconds_count", &[]));
    assert_eq!(sample(&text, "eddy_consumer_group_lag", &[("group", "g"), ("topic", "m"), ("partition", "0")]), Some(5.0));
    assert_eq!(sample(&text, "eddy_topic_records_in_total", &[("topic", "m")]), Some(105.0));
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
}

#[test]
fn health_readiness_and_the_json_api() {
    let b = TestBroker::start();
    create(&b, "orders", 3);
    produce(&b, "orders", &[(Some("a"), "1".into()), (Some("b"), "2".into())]);
    assert_eq!(get_json(b.http_addr, "/health")["status"], "ok");
    assert_eq!(get_json(b.http_addr, "/ready")["ready"], true);

    let topics = get_json(b.http_addr, "/api/topics");
    let orders = topics.as_array().unwrap().iter().find(|t| t["name"] == "orders").expect("orders listed").clone();
    assert_eq!(orders["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(orders["records"], 2);
    assert_eq!(orders["configs"]["cleanup.policy"], json!({ "value": "delete", "source": "default" }));
    assert_eq!(orders["configs"]["retention.ms"]["source"], "broker", "the tests' broker sets retention.ms in [topic_defaults]");
    let one = get_json(b.http_addr, "/api/topics/orders");
    assert_eq!(one["id"], orders["id"]);
    let ends: u64 = one["partitions"].as_array().unwrap().iter().map(|p| p["log_end_offset"].as_u64().unwrap()).sum();
    assert_eq!(ends, 2);

    // A group with a member and committed offsets.
    let _member = read_in_group(&b, "readers", "reader-1", "orders", 2);
    let g = get_json(b.http_addr, "/api/groups/readers");
    assert_eq!(g["state"], "Stable");
    assert_eq!(g["members"][0]["client_id"], "reader-1");
    let assigned: Vec<i64> = g["members"][0]["assignment"][0]["partitions"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect();
    assert_eq!(assigned, vec![0, 1, 2]);
    assert_eq!(g["lag"], 0);
    let committed: i64 = g["offsets"].as_array().unwrap().iter().map(|o| o["committed_offset"].as_i64().unwrap()).sum();
    assert_eq!(committed, 2);
    assert!(get_json(b.http_addr, "/api/groups").as_array().unwrap().iter().any(|g| g["group_id"] == "readers"));
    assert_eq!(get_json(b.http_addr, "/api/processors"), json!([]));

    assert_eq!(http(b.http_addr, "GET", "/api/topics/nope").0, 404);
    assert_eq!(http(b.http_addr, "GET", "/nothing/here").0, 404);
    assert_eq!(http(b.http_addr, "POST", "/api/topics").0, 405);
    assert_eq!(http(b.http_addr, "GET", "/processors/nope/windows?key=a").0, 404);
    // Garbage instead of HTTP closes that connection; the listener goes on.
    {
        let mut s = TcpStream::connect(b.http_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    assert_eq!(get_json(b.http_addr, "/health")["status"], "ok");
}

const PAGES: &str = r#"
    commit_interval = "200ms"
    threads = THREADS
    [source]
    topics = ["views"]
    [key]
    fields = ["page"]
    [time]
    field = "ts"
    idle_timeout = "1h"
    [window]
    type = "hopping"
    size = "10s"
    advance = "5s"
    grace = "1h"
    retention = "1d"
    [aggregates]
    views = { fn = "count" }
    ms = { fn = "sum", field = "ms" }
    slowest = { fn = "max", field = "ms" }
    [output]
    topic = "views-per-page"
    emit = "changes"
    flush_interval = "100ms"
"#;

/// The latest output value per window of `page`, keyed by window start.
fn output_windows(got: &[crate::processors::Got], page: &str) -> BTreeMap<i64, Value> {
    let mut latest: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    for (k, v, _) in got {
        latest.insert(k.clone(), v.clone());
    }
    let mut out = BTreeMap::new();
    for (k, v) in latest {
        let k: Value = serde_json::from_slice(&k).unwrap();
        if k["key"] == page {
            if let Some(v) = v {
                out.insert(k["start"].as_i64().unwrap(), serde_json::from_slice(&v).unwrap());
            }
        }
    }
    out
}

/// The query's windows, without the fields the output value lacks.
fn queried_windows(answer: &Value) -> BTreeMap<i64, Value> {
    answer["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let mut w = w.clone();
            let m = w.as_object_mut().unwrap();
            for extra in ["key", "max_event_time", "final"] {
                m.remove(extra);
            }
            (w["window_start"].as_i64().unwrap(), w)
        })
        .collect()
}

fn queries_match_the_output(threads: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "pages", &PAGES.replace("THREADS", &threads.to_string())));
    b.keep_dir(tmp);
    create(&b, "views", 2);
    let mut records = Vec::new();
    for i in 0..300i64 {
        let page = ["/home", "/cart", "/pay"][(i % 3) as usize];
        records.push((Some(page), json!({ "page": page, "ts": 1_700_000_000_000i64 + i * 97, "ms": (i * 37) % 500 }).to_string()));
    }
    produce(&b, "views", &records);
    let stats = b.broker.processor_stats().into_iter().next().unwrap().1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.records_in.load(std::sync::atomic::Ordering::Relaxed) < 300 {
        assert!(Instant::now() < deadline, "the processor did not read every record");
        std::thread::sleep(Duration::from_millis(20));
    }
    for page in ["/home", "/pay"] {
        let path = format!("/processors/pages/windows?key={}", page.replace('/', "%2F"));
        // Once the last flush is out, the output topic and the state agree.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = get_json(b.http_addr, &path);
            let queried = queried_windows(&answer);
            // Everything in the output as it is now (no markers, no cleaning:
            // the log end offsets count its records).
            let ends: u64 = b.broker.topic("views-per-page").map_or(0, |t| t.partitions.iter().map(|p| p.log.log_end_offset()).sum());
            let all = consume_until(&b, "views-per-page", |g| g.len() as u64 >= ends);
            let output = output_windows(&all, page);
            if queried == output && !queried.is_empty() {
                assert_eq!(answer["key"], page);
                assert!(answer["staleness"]["state_as_of_ms"].as_i64().unwrap() > 0);
                let total: i64 = queried.values().map(|w| w["views"].as_i64().unwrap()).sum();
                assert_eq!(total, 200, "100 views of {page}, each in two hopping windows");
                break;
            }
            assert!(Instant::now() < deadline, "{page}: query {queried:#?}\nvs output {output:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // A time range narrows the answer; a bad time is refused.
    let all = get_json(b.http_addr, "/processors/pages/windows?key=%2Fhome")["windows"].as_array().unwrap().len();
    let some = get_json(b.http_addr, "/processors/pages/windows?key=%2Fhome&from=1700000020000&to=1700000025000")["windows"].as_array().unwrap().len();
    assert!(some > 0 && some < all, "{some} of {all}");
    assert_eq!(http(b.http_addr, "GET", "/processors/pages/windows?key=%2Fhome&from=yesterday").0, 400);
    assert_eq!(http(b.http_addr, "GET", "/processors/pages/windows").0, 400);
    assert_eq!(get_json(b.http_addr, "/processors/pages/windows?key=%2Fnowhere")["windows"], json!([]));
    let p = get_json(b.http_addr, "/api/processors/pages");
    assert_eq!(p["records_in"], 300);
    assert_eq!(p["window"]["type"], "hopping");
    assert_eq!(p["status"], "running");
    let text = http(b.http_addr, "GET", "/metrics").1;
    assert_eq!(sample(&text, "eddy_processor_records_in_total", &[("processor", "pages")]), Some(300.0));
    assert_eq!(sample(&text, "eddy_processor_lag_records", &[("processor", "pages")]), Some(0.0));
}

#[test]
fn interactive_queries_return_what_the_compacted_output_holds() {
    queries_match_the_output(1);
}

#[test]
fn interactive_queries_reach_every_engine_thread() {
    queries_match_the_output(2);
}

/// Renders a console page in headless Chromium: its DOM once the page's
/// requests are answered, and a screenshot for a human to look at.
fn render(url: &str, shot: &std::path::Path) -> String {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists()).expect("Debian's chromium is not installed: tests/run.sh installs it (apt-get install chromium)");
    let profile = tempfile::tempdir().unwrap();
    let common = |cmd: &mut std::process::Command| {
        cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1440,1100", "--virtual-time-budget=6000"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    };
    let mut dom = std::process::Command::new(chromium);
    common(&mut dom);
    let out = crate::broker_support::output_within(dom.arg("--dump-dom").arg(url), Duration::from_secs(60));
    let mut pic = std::process::Command::new(chromium);
    common(&mut pic);
    crate::broker_support::output_within(pic.arg(format!("--screenshot={}", shot.display())).arg(url), Duration::from_secs(60));
    assert!(shot.exists(), "no screenshot of {url}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `data-testid="id"` (its first one).
fn testid<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!("data-testid=\"{id}\"")).unwrap_or_else(|| panic!("no {id} in the page:\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap();
    &rest[start..start + end]
}

#[test]
fn the_console_renders_overview_topics_groups_and_processors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_in(tmp.path(), |c| processor(c, "pages", &PAGES.replace("THREADS", "1")));
    b.keep_dir(tmp);
    create(&b, "views", 2);
    let records: Vec<(Option<&str>, String)> = (0..300i64)
        .map(|i| {
            let page = ["/home", "/cart", "/pay"][(i % 3) as usize];
            (Some(page), json!({ "page": page, "ts": 1_700_000_000_000i64 + i * 97, "ms": (i * 37) % 500 }).to_string())
        })
        .collect();
    produce(&b, "views", &records);
    // A group that read everything, then five more records: lag 5.
    let _member = read_in_group(&b, "dash", "rdkafka", "views", 300);
    produce(&b, "views", &vec![(Some("/home"), json!({ "page": "/home", "ts": 1_700_000_040_000i64, "ms": 7 }).to_string()); 5]);
    // The processor has read everything and its output stopped growing.
    let stats = b.broker.processor_stats().into_iter().next().unwrap().1;
    let output_end = || b.broker.topic("views-per-page").map_or(0, |t| t.partitions.iter().map(|p| p.log.log_end_offset()).sum::<u64>());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (u64::MAX, Instant::now());
    loop {
        assert!(Instant::now() < deadline, "the processor did not settle");
        let now = (stats.records_in.load(std::sync::atomic::Ordering::Relaxed), output_end());
        if now.0 == 305 && now.1 == last.0 && last.1.elapsed() > Duration::from_millis(600) {
            break;
        }
        if now.1 != last.0 {
            last = (now.1, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stored: u64 = b.broker.topics().iter().filter(|t| !eddy::broker::Broker::is_internal(&t.name)).flat_map(|t| t.partitions.clone()).map(|p| p.log.log_end_offset() - p.log.log_start_offset()).sum();

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let base = format!("http://{}/", b.http_addr);
    let en = |n: u64| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    };

    // The broker keeps a history of throughput and lag for the charts:
    // wait for three samples after the workload settled.
    let deadline = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let g = get_json(b.http_addr, "/api/groups/dash");
        let h = g["lag_history"].as_array().unwrap().clone();
        if h.len() >= 3 && h[h.len() - 3..].iter().all(|s| s["lag"] == 5) {
            break h;
        }
        assert!(Instant::now() < deadline, "no lag history: {g}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(history.windows(2).all(|w| w[0]["t"].as_i64() < w[1]["t"].as_i64()), "oldest first: {history:?}");
    let o = get_json(b.http_addr, "/api/overview");
    let last = o["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((&last["bytes_in"], &last["records_in"]), (&o["bytes_in"], &o["records_in"]), "nothing produced since the last sample");

    let dom = render(&format!("{base}#/overview"), &shots.join("overview.png"));
    assert_eq!(dom.matches("<svg class=\"chart\"").count(), 2, "throughput charts drawn from the broker's history on first load");
    assert_eq!(testid(&dom, "tile-topics"), "2", "views and the processor's output");
    assert_eq!(testid(&dom, "tile-partitions"), "4");
    assert_eq!(testid(&dom, "tile-records"), en(stored));
    assert_eq!(testid(&dom, "tile-groups"), "1");
    assert_eq!(testid(&dom, "tile-processors"), "1");
    assert!(dom.contains("Produce throughput") && dom.contains("Largest topics"));

    let dom = render(&format!("{base}#/topics"), &shots.join("topics.png"));
    assert!(dom.contains("views-per-page") && dom.contains("__consumer_offsets"));

    let dom = render(&format!("{base}#/topics/views"), &shots.join("topic.png"));
    assert_eq!(testid(&dom, "tile-records"), "305");
    assert_eq!(dom.matches("data-testid=\"record\"").count(), 40, "the latest 20 of each partition");
    assert!(dom.contains(r#""page":"/home""#), "values shown as JSON");

    let dom = render(&format!("{base}#/groups/dash"), &shots.join("group.png"));
    assert_eq!(testid(&dom, "tile-state"), "Stable", "the consumer is still a member");
    assert_eq!(testid(&dom, "tile-lag"), "5");
    assert!(dom.contains("<svg class=\"chart\""), "the lag is charted on first load");

    let answer = get_json(b.http_addr, "/processors/pages/windows?key=%2Fhome");
    let dom = render(&format!("{base}#/processors/pages?key=%2Fhome"), &shots.join("processor.png"));
    assert_eq!(testid(&dom, "tile-records-in"), "305");
    assert_eq!(dom.matches("data-testid=\"window\"").count(), answer["windows"].as_array().unwrap().len());
    assert!(dom.contains("<svg class=\"chart\""), "the windows are charted");
    assert!(dom.contains("hopping 10s, advancing 5s · grace 1h · kept 1d"), "the window in words");
    println!("console screenshots in {}", shots.display());
}
