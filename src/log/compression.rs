//! Decompression of record-batch bodies, for the few places that must look
//! inside a batch (timestamp lookups, compaction, processors), and
//! compression for the batches the cleaner rewrites. The produce and fetch
//! paths never call this, except to convert the message sets of pre-0.11
//! request versions (`message_set`).

use std::io::{Read, Write};

use super::LogError;

/// A decompressed body larger than this is treated as corrupt rather than
/// allowed to exhaust memory (a "zip bomb" inside a batch).
pub const MAX_DECOMPRESSED: u64 = 256 * 1024 * 1024;

/// The xerial snappy-java stream header the Java client writes.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

pub fn codec_name(codec: u8) -> &'static str {
    match codec {
        0 => "none",
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown",
    }
}

fn read_capped(mut r: impl Read, codec: u8, cap: u64) -> Result<Vec<u8>, LogError> {
    let mut out = Vec::new();
    (&mut r)
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| LogError::CorruptBatch(format!("{} body does not decompress: {e}", codec_name(codec))))?;
    if out.len() as u64 > cap {
        return Err(LogError::CorruptBatch(format!("{} body decompresses to more than {cap} bytes", codec_name(codec))));
    }
    Ok(out)
}

fn snappy(data: &[u8], cap: u64) -> Result<Vec<u8>, LogError> {
    let bad = |e: String| LogError::CorruptBatch(format!("snappy body does not decompress: {e}"));
    if !data.starts_with(&XERIAL_MAGIC) {
        // Raw snappy declares its length up front: checked before allocating.
        let n = snap::raw::decompress_len(data).map_err(|e| bad(e.to_string()))?;
        if n as u64 > cap {
            return Err(bad(format!("it declares {n} bytes, more than {cap}")));
        }
        return snap::raw::Decoder::new().decompress_vec(data).map_err(|e| bad(e.to_string()));
    }
    // xerial framing: magic, i32 version, i32 compatible version, then
    // blocks of (i32 length, raw snappy block).
    let mut pos = XERIAL_MAGIC.len() + 8;
    let mut out = Vec::new();
    while pos < data.len() {
        if pos + 4 > data.len() {
            return Err(bad("truncated xerial block length".into()));
        }
        let len = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        pos += 4;
        let block = data.get(pos..pos + len).ok_or_else(|| bad("truncated xerial block".into()))?;
        let n = snap::raw::decompress_len(block).map_err(|e| bad(e.to_string()))?;
        if (out.len() + n) as u64 > cap {
            return Err(bad("decompressed size over the limit".into()));
        }
        let start = out.len();
        out.resize(start + n, 0);
        snap::raw::Decoder::new().decompress(block, &mut out[start..]).map_err(|e| bad(e.to_string()))?;
        pos += len;
    }
    Ok(out)
}

/// The records section of a stored batch (the bytes after its 61-byte
/// header), decompressed when its codec says so.
pub fn batch_body(batch: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, LogError> {
    let h = super::batch::BatchHeader::parse(batch).ok_or_else(|| LogError::CorruptBatch("batch shorter than its header".into()))?;
    let raw = &batch[super::batch::HEADER_LEN..];
    Ok(match h.compression() {
        0 => std::borrow::Cow::Borrowed(raw),
        codec => std::borrow::Cow::Owned(decompress(codec, raw)?),
    })
}

/// Decompresses a batch body (the bytes after the 61-byte header), to at
/// most `MAX_DECOMPRESSED` bytes.
pub fn decompress(codec: u8, data: &[u8]) -> Result<Vec<u8>, LogError> {
    decompress_capped(codec, data, MAX_DECOMPRESSED)
}

/// Decompresses `data`, refusing it (CorruptBatch) once it would exceed
/// `cap` bytes.
pub fn decompress_capped(codec: u8, data: &[u8], cap: u64) -> Result<Vec<u8>, LogError> {
    match codec {
        0 => Ok(data.to_vec()),
        1 => read_capped(flate2::read::GzDecoder::new(data), codec, cap),
        2 => snappy(data, cap),
        3 => read_capped(lz4_flex::frame::FrameDecoder::new(data), codec, cap),
        4 => {
            let d = zstd::stream::read::Decoder::new(data)
                .map_err(|e| LogError::CorruptBatch(format!("zstd body does not decompress: {e}")))?;
            read_capped(d, codec, cap)
        }
        other => Err(LogError::CorruptBatch(format!("unknown compression codec {other}"))),
    }
}

/// Block size of the xerial framing written (snappy-java's default).
const XERIAL_BLOCK: usize = 32 * 1024;

/// Compresses a batch body with `codec` the way the Java client does: gzip,
/// snappy in xerial (snappy-java) framing, an LZ4 frame of independent 64 KiB
/// blocks without content size or checksum (what Kafka's LZ4 reader
/// supports), zstd.
pub fn compress(codec: u8, data: &[u8]) -> Result<Vec<u8>, LogError> {
    let failed = |e: std::io::Error| LogError::CorruptBatch(format!("{} compression failed: {e}", codec_name(codec)));
    match codec {
        0 => Ok(data.to_vec()),
        1 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::default());
            gz.write_all(data).map_err(failed)?;
            gz.finish().map_err(failed)
        }
        2 => {
            let mut out = Vec::with_capacity(data.len() / 2 + 16);
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let block = enc.compress_vec(chunk).map_err(|e| failed(std::io::Error::other(e)))?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        3 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut lz = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::with_capacity(data.len() / 2));
            lz.write_all(data).map_err(failed)?;
            lz.finish().map_err(|e| failed(std::io::Error::other(e)))
        }
        4 => zstd::bulk::compress(data, 3).map_err(failed),
        other => Err(LogError::CorruptBatch(format!("unknown compression codec {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog, again and again and again";

    #[test]
    fn gzip_lz4_zstd_round_trip() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(TEXT).unwrap();
        assert_eq!(decompress(1, &gz.finish().unwrap()).unwrap(), TEXT);

        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz.write_all(TEXT).unwrap();
        assert_eq!(decompress(3, &lz.finish().unwrap()).unwrap(), TEXT);

        let z = zstd::bulk::compress(TEXT, 3).unwrap();
        assert_eq!(decompress(4, &z).unwrap(), TEXT);
    }

    #[test]
    fn snappy_raw_and_xerial_framed() {
        let raw = snap::raw::Encoder::new().compress_vec(TEXT).unwrap();
        assert_eq!(decompress(2, &raw).unwrap(), TEXT);

        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for chunk in TEXT.chunks(20) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(decompress(2, &framed).unwrap(), TEXT);
    }

    #[test]
    fn every_codec_compresses_what_it_decompresses() {
        let big: Vec<u8> = TEXT.iter().copied().cycle().take(200_000).collect();
        for codec in 0..=4 {
            for data in [TEXT, &big[..], &[][..]] {
                let c = compress(codec, data).unwrap();
                assert_eq!(decompress(codec, &c).unwrap(), data, "codec {codec}");
            }
        }
        assert!(compress(2, TEXT).unwrap().starts_with(&XERIAL_MAGIC), "snappy uses the Java framing");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in 1..=4 {
            assert!(decompress(codec, b"\x00\x01garbage\xff\xff\xff").is_err(), "codec {codec}");
        }
        assert!(decompress(7, b"").is_err());
    }
}
