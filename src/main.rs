//! The `eddy` binary. Thin: parses the command line and calls the library.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use eddy::log::batch::{self, BatchHeader, HEADER_LEN};
use eddy::log::compression::codec_name;

const HELP: &str = "\
eddy — a Kafka-compatible log broker with built-in stream processing

USAGE:
    eddy dump-log <FILE.log>...   print the record batches of segment files,
                                  checking each one's structure and CRC-32C
    eddy --help                   this text

The network broker (`eddy serve`) is not built yet; see README.md.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eddy: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        None | Some("--help" | "-h" | "help") => {
            println!("{HELP}");
            Ok(())
        }
        Some("dump-log") if args.len() > 1 => args[1..].iter().try_for_each(|f| dump_log(Path::new(f))),
        Some(other) => bail!("unknown command or missing argument: {other:?}\n\n{HELP}"),
    }
}

/// Prints one line per batch; stops at the first batch that is not valid,
/// saying why (this is where recovery would truncate).
fn dump_log(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    println!("{}: {} bytes", path.display(), bytes.len());
    let mut pos = 0usize;
    let mut batches = 0u64;
    while pos < bytes.len() {
        let Some(h) = BatchHeader::parse(&bytes[pos..]) else {
            println!("position {pos}: {} trailing bytes cannot hold a batch header", bytes.len() - pos);
            break;
        };
        let end = pos + h.total_len();
        if h.check_structure().is_err() || end > bytes.len() {
            println!("position {pos}: invalid batch header (length {}, magic {})", h.batch_length, h.magic);
            break;
        }
        let crc = match batch::check_stored(&bytes[pos..end]) {
            Ok(_) => "ok",
            Err(reason) => reason,
        };
        println!(
            "position {pos} offsets {}..={} records {} size {} codec {} max_timestamp {} producer {}/{} crc {crc}",
            h.base_offset,
            h.last_offset(),
            h.records_count,
            h.total_len(),
            codec_name(h.compression()),
            h.max_timestamp,
            h.producer_id,
            h.producer_epoch,
        );
        batches += 1;
        pos = end.max(pos + HEADER_LEN);
    }
    println!("{batches} batches");
    Ok(())
}
