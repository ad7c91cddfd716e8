//! Request decoding: any frame either decodes or is refused with an error,
//! without a panic and without allocating more than the frame justifies
//! (libFuzzer's -rss_limit_mb / -malloc_limit_mb catch the latter).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = eddy::protocol::decode_request(bytes::Bytes::copy_from_slice(data)) {
        // What the broker logs and counts about a request must hold too.
        let _ = eddy::protocol::api_name(req.api_key);
        let _ = format!("{:?}", req.header);
    }
});
