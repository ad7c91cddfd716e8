//! The `eddy` binary as a user runs it.

use std::process::Command;

use eddy::log::{Log, LogConfig};

use crate::log_support::{scratch_dir, simple_batch};

#[test]
fn dump_log_lists_batches_and_stops_at_damage() {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), LogConfig::default(), false).unwrap();
    for _ in 0..3 {
        log.append(&simple_batch(2, 30, 1)).unwrap();
    }
    log.close().unwrap();
    let seg = dir.path().join("00000000000000000000.log");
    let out = Command::new(env!("CARGO_BIN_EXE_eddy")).arg("dump-log").arg(&seg).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("offsets 4..=5 records 2"), "{text}");
    assert_eq!(text.matches("crc ok").count(), 3, "{text}");
    assert!(text.contains("3 batches"), "{text}");

    // Damage the last batch's body: reported, not a crash.
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy")).arg("dump-log").arg(&seg).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("crc CRC-32C mismatch"), "{text}");

    let out = Command::new(env!("CARGO_BIN_EXE_eddy")).arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command"));
}

/// Waits until `addr` accepts connections (the broker is up).
fn wait_listening(addr: &str, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "eddy exited early");
        assert!(std::time::Instant::now() < deadline, "eddy did not start listening");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn serve_stops_cleanly_on_sigterm_and_sigint() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["serve", "--listen", &addr, "--http-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_listening(&addr, &mut child);
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "exit status after signal {signal}: {log}");
        assert!(dir.path().join(".clean_shutdown").exists(), "clean-shutdown marker written");
        assert!(log.contains("stopped cleanly"), "{log}");
    }
}

#[test]
fn check_validates_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = Command::new(env!("CARGO_BIN_EXE_eddy")).args(["check", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/config/eddy.toml")]).output().unwrap();
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{text}");
    assert!(text.contains("\"retention.ms\" = \"604800000\""), "{text}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[broker]\n\"num.partitions\" = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy")).args(["check", "--config"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("bad.toml") && err.contains("num.partitions") && err.contains("at least 1"), "{err}");

    std::fs::write(&bad, "[brokr]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy")).args(["check", "--config"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("brokr"), "unknown table named: {err}");

    // A processor with an unknown key: the file, the processor and the key are named.
    let procs = dir.path().join("procs.toml");
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/processors.toml")).unwrap();
    std::fs::write(&procs, example.replacen("size = \"1m\"", "size = \"1m\"\ncolour = \"red\"", 1)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy")).args(["check", "--config"]).arg(&procs).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("procs.toml") && err.contains("[processors.clicks_per_minute] window.colour"), "{err}");
    let good = Command::new(env!("CARGO_BIN_EXE_eddy")).args(["check", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/config/processors.toml")]).output().unwrap();
    assert!(good.status.success() && String::from_utf8_lossy(&good.stdout).contains("processor visits"));

    // serve refuses a bad file before binding anything.
    let out = Command::new(env!("CARGO_BIN_EXE_eddy")).args(["serve", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `eddy ARGS --bootstrap ADDR`; returns (success, stdout, stderr).
pub(crate) fn eddy_cli(b: &crate::broker_support::TestBroker, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy")).args(args).args(["--bootstrap", &b.addr.to_string()]).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn topic_group_and_tail_commands_speak_the_protocol() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use serde_json::Value;
    let b = crate::broker_support::TestBroker::start();
    let (ok, out, err) = eddy_cli(&b, &["topic", "create", "events", "--partitions", "2", "--config", "cleanup.policy=compact", "--config", "retention.ms=1000"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("created topic events with 2 partition(s)"), "{out}");
    let (ok, _, err) = eddy_cli(&b, &["topic", "create", "events"]);
    assert!(!ok);
    assert!(err.contains("error code 36") && err.contains("already exists"), "{err}");
    let (ok, _, err) = eddy_cli(&b, &["topic", "create", "bad", "--config", "no.such.config=1"]);
    assert!(!ok && err.contains("error code 40"), "{err}");

    let p: BaseProducer = crate::processors::client(&b).create().unwrap();
    for i in 0..6 {
        let value = if i % 2 == 0 { format!(r#"{{"n":{i}}}"#) } else { format!("plain text {i}") };
        p.send(BaseRecord::to("events").partition(i % 2).key(&format!("k{i}")).payload(&value).timestamp(1_700_000_000_000 + i as i64)).unwrap();
    }
    p.flush(std::time::Duration::from_secs(30)).unwrap();

    let (ok, out, err) = eddy_cli(&b, &["topic", "list"]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with("events ")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(line.split_whitespace().take(3).collect::<Vec<_>>(), vec!["events", "2", "6"], "{out}");
    assert!(out.starts_with("TOPIC"), "{out}");

    let (ok, out, err) = eddy_cli(&b, &["topic", "describe", "events", "--json"]);
    assert!(ok, "{err}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["partitions"][0]["log_end_offset"], 3);
    assert_eq!(d["partitions"][1]["records"], 3);
    assert_eq!(d["configs"]["cleanup.policy"]["value"], "compact");
    assert_eq!(d["configs"]["cleanup.policy"]["source"], "topic");
    assert_eq!(d["configs"]["segment.bytes"]["source"], "default");

    // The last records, oldest first, JSON values as JSON.
    let (ok, out, err) = eddy_cli(&b, &["tail", "events", "-n", "2", "--json"]);
    assert!(ok, "{err}");
    let recs: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let keys: Vec<&str> = recs.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["k2", "k3", "k4", "k5"], "two per partition, by time: {out}");
    assert_eq!(recs[2]["value"], serde_json::json!({ "n": 4 }));
    assert_eq!(recs[3]["value"], "plain text 5");
    assert_eq!(recs[3]["offset"], 2);
    let (ok, out, _) = eddy_cli(&b, &["tail", "events"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 7, "a header and all six records: {out}");
    assert!(out.lines().last().unwrap().contains("plain text 5"), "{out}");

    // A group that consumed one partition and committed.
    let _member = crate::http::read_in_group(&b, "cli-readers", "cli-consumer", "events", 6);
    p.send(BaseRecord::to("events").partition(0).key("late").payload("x")).unwrap();
    p.flush(std::time::Duration::from_secs(30)).unwrap();
    let (ok, out, err) = eddy_cli(&b, &["group", "list"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("cli-readers") && l.contains("Stable") && l.contains("consumer")), "{out}");
    let (ok, out, err) = eddy_cli(&b, &["group", "describe", "cli-readers", "--json"]);
    assert!(ok, "{err}");
    let g: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["members"][0]["client_id"], "cli-consumer");
    assert_eq!(g["members"][0]["assignment"], "events:0,1");
    assert_eq!(g["lag"], 1, "one record after the commit: {out}");
    let (ok, out, _) = eddy_cli(&b, &["group", "describe", "cli-readers"]);
    assert!(ok && out.contains("LAG") && out.contains("cli-consumer"), "{out}");
    let (ok, _, err) = eddy_cli(&b, &["group", "describe", "nobody"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, _, err) = eddy_cli(&b, &["topic", "describe", "missing"]);
    assert!(!ok && err.contains("error code 3"), "{err}");
}

/// The broker sends batches from its files without checking their CRCs
/// (as Kafka does); `eddy tail`, a client, checks them: a batch damaged at
/// rest is reported, not printed.
#[test]
fn tail_reports_a_batch_damaged_at_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let b = crate::broker_support::TestBroker::start_in(tmp.path(), |_| {});
    crate::processors::create(&b, "damaged", 1);
    // One batch per record: 8 of them, 8 KB, the first wholly below the
    // block the active segment keeps in memory after a restart.
    for i in 0..8 {
        crate::processors::produce(&b, "damaged", &[(Some("k"), format!("{i}").repeat(1000))]);
    }
    let (ok, out, err) = eddy_cli(&b, &["tail", "damaged"]);
    assert!(ok && out.lines().count() == 9, "{out}{err}");
    b.stop();
    let log = std::fs::read_dir(tmp.path().join("damaged-0")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|x| x == "log")).unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    assert!(bytes.len() > 8000);
    // A byte of the first record's value.
    bytes[500] ^= 0x55;
    std::fs::write(&log, &bytes).unwrap();
    let b = crate::broker_support::TestBroker::start_in(tmp.path(), |_| {});
    let (ok, out, err) = eddy_cli(&b, &["tail", "damaged"]);
    assert!(!ok, "a damaged batch was printed: {out}");
    assert!(err.contains("damaged/0 at offset 0 is damaged: CRC-32C mismatch"), "{err}");
}
