//! Record-batch validation on the produce path, then what the broker does
//! with a batch it accepted (record timestamps, reading records back, with
//! decompression). The harness writes the right CRC-32C into the input so
//! that mutations reach past the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Offsets in a record batch v2: CRC at 17..21, covering 21.. to the end.
const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;

fuzz_target!(|data: &[u8]| {
    let mut data = data.to_vec();
    if data.len() >= 61 {
        // The batch's declared length, if it fits, bounds what the CRC covers.
        let declared = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        let end = usize::try_from(declared).ok().map(|l| l + 12).filter(|e| (CRC_FROM..=data.len()).contains(e)).unwrap_or(data.len());
        let crc = crc32c::crc32c(&data[CRC_FROM..end]);
        data[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    }
    let records = bytes::Bytes::from(data);
    let Ok(batches) = eddy::log::batch::validate_producer_records(&records) else { return };
    for b in batches {
        let _ = eddy::log::batch::record_stamps(&b.bytes);
        let _ = eddy::log::records::read_records_shared(&b.bytes);
    }
});
