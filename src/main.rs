//! The `eddy` binary. Thin: parses the command line and calls the library.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use eddy::log::batch::{self, BatchHeader, HEADER_LEN};
use eddy::broker::Broker;
use eddy::config::Config;
use eddy::log::compression::codec_name;

mod cli;

/// mimalloc: processors parse records on one thread and free them on
/// another, where glibc's allocator spent a fifth of the time (bench/README.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HELP: &str = "\
eddy — a Kafka-compatible log broker with built-in stream processing

USAGE:
    eddy serve [OPTIONS]          run the broker until SIGINT/SIGTERM
    eddy check --config FILE      validate a config file and print the effective settings
    eddy dump-log <FILE.log>...   print the record batches of segment files, checking each
                                  one's structure and CRC-32C
    eddy --help                   this text

SERVE OPTIONS:
    --config FILE         TOML config (see config/eddy.toml); without it the embedded
                          defaults are used: 127.0.0.1:9092, data under ./data
    --listen HOST:PORT    overrides [broker] listen (or the address of a single listener)
    --data-dir DIR        overrides [broker] data_dir
    --http-listen ADDR    overrides [http] listen (metrics, health, JSON API, queries;
                          default 127.0.0.1:9644); \"off\" turns HTTP off
    --log-format FORMAT   text (default) or json; RUST_LOG sets the level (default info)";

/// The whole `--help` text.
fn help() -> String {
    format!("{HELP}\n\nCOMMANDS OVER THE KAFKA PROTOCOL (any broker):\n{}", cli::HELP)
}

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
            println!("{}", help());
            Ok(())
        }
        Some("serve") => serve(&args[1..]),
        Some("check") => check(&args[1..]),
        Some(c @ ("topic" | "group" | "tail")) => cli::run(c, &args[1..]),
        Some("dump-log") if args.len() > 1 => args[1..].iter().try_for_each(|f| dump_log(Path::new(f))),
        Some(other) => bail!("unknown command or missing argument: {other:?}\n\n{}", help()),
    }
}

/// `--name value` options of a subcommand.
fn options(args: &[String], allowed: &[&str]) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--help" || a == "-h" {
            println!("{}", help());
            std::process::exit(0);
        }
        let (name, value) = match a.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (a.clone(), it.next().with_context(|| format!("{a} needs a value"))?.clone()),
        };
        if !allowed.contains(&name.as_str()) {
            bail!("unknown option {name:?}\n\n{}", help());
        }
        out.insert(name, value);
    }
    Ok(out)
}

fn load_config(opts: &HashMap<String, String>) -> anyhow::Result<Config> {
    let mut config = match opts.get("--config") {
        Some(path) => Config::load(Path::new(path))?,
        None => Config::default(),
    };
    if let Some(listen) = opts.get("--listen") {
        listen.parse::<std::net::SocketAddr>().with_context(|| format!("--listen {listen:?} is not an IP:port address"))?;
        // With `listeners`, the address of the one listener changes; its name stays.
        if config.broker.listeners.is_some() {
            let specs = config.listeners().map_err(|e| anyhow::anyhow!("{e}"))?;
            let [one] = specs.as_slice() else {
                bail!("--listen sets the address of a single listener; with several, set them in listeners");
            };
            config.broker.listeners = Some(format!("{}://{listen}", one.name));
        } else {
            config.broker.listen = listen.clone();
        }
    }
    if let Some(dir) = opts.get("--data-dir") {
        config.broker.data_dir = dir.into();
    }
    match opts.get("--http-listen").map(String::as_str) {
        None => {}
        Some("off") => config.http.enabled = false,
        Some(listen) => {
            listen.parse::<std::net::SocketAddr>().with_context(|| format!("--http-listen {listen:?} is not an IP:port address (or off)"))?;
            config.http.enabled = true;
            config.http.listen = listen.to_string();
        }
    }
    Ok(config)
}

fn check(args: &[String]) -> anyhow::Result<()> {
    let opts = options(args, &["--config"])?;
    if !opts.contains_key("--config") {
        bail!("check needs --config FILE");
    }
    let config = load_config(&opts)?;
    // The keystore and truststore files are read as the broker would.
    eddy::server::prepare(&config).map_err(|e| anyhow::anyhow!("{}: {e}", opts["--config"]))?;
    println!("# {} is valid; effective settings:", opts["--config"]);
    print!("{}", config.describe());
    Ok(())
}

fn serve(args: &[String]) -> anyhow::Result<()> {
    let opts = options(args, &["--config", "--listen", "--data-dir", "--http-listen", "--log-format"])?;
    let json = match opts.get("--log-format").map(String::as_str) {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => bail!("--log-format must be text or json, not {other:?}"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let config = load_config(&opts)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        // Checked before the data directory is opened: a wrong listener
        // setting or TLS file stops start-up at once. Bound once it is open.
        let listeners = eddy::server::prepare(&config)?;
        let http = config.http.clone();
        let data_dir = config.broker.data_dir.clone();
        let broker = tokio::task::spawn_blocking(move || Broker::open(config))
            .await?
            .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
        let broker = Arc::new(broker);
        let listeners = listeners.bind().await?;
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http_task = if http.enabled {
            let l = tokio::net::TcpListener::bind(&http.listen).await.with_context(|| format!("listening for HTTP on {} ([http] listen)", http.listen))?;
            tracing::info!(listen = %l.local_addr()?, "serving metrics, health and the JSON API over HTTP");
            Some(tokio::spawn(eddy::http::serve(l, Arc::clone(&broker), async {
                let _ = http_stopped.await;
            })))
        } else {
            None
        };
        for l in &listeners {
            let (host, port) = l.advertised();
            tracing::info!(listener = l.name(), listen = %l.local_addr(), security_protocol = l.protocol().name(), advertised = %format!("{host}:{port}"), "listening for Kafka clients");
        }
        tracing::info!(data_dir = %data_dir.display(), cluster_id = %broker.cluster_id, "eddy is serving Kafka clients");
        eddy::server::run(listeners, Arc::clone(&broker), stop_signal()).await;
        let _ = http_stop.send(());
        if let Some(t) = http_task {
            let _ = t.await;
        }
        let b = Arc::clone(&broker);
        tokio::task::spawn_blocking(move || b.shutdown()).await??;
        tracing::info!("stopped cleanly");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
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
