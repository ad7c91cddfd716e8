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
