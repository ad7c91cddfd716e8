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
