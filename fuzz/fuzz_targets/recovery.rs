//! Log recovery: whatever bytes a crash (or a disk) left in a segment file,
//! opening the log after an unclean stop either recovers a prefix of whole
//! batches with valid checksums or reports an error, without a panic; what
//! it recovered reads back within the log's offsets (a compressed body may
//! still fail to decompress: recovery checks checksums, as Kafka's does).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("t-0");
    std::fs::create_dir_all(&log_dir).unwrap();
    std::fs::write(log_dir.join("00000000000000000000.log"), data).unwrap();
    let Ok(log) = eddy::log::Log::open(&log_dir, eddy::log::LogConfig::default(), false) else { return };
    let end = log.log_end_offset();
    let _ = eddy::log::records::for_each_record(&log, |r| {
        assert!((r.offset as u64) < end, "a record at {} past the log end {end}", r.offset);
    });
});
