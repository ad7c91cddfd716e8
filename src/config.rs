//! The broker's configuration file (TOML) and its embedded defaults.
//!
//! ```toml
//! [broker]
//! "node.id" = 1
//! listen = "127.0.0.1:9092"
//! data_dir = "./data"
//! "auto.create.topics.enable" = true
//!
//! [topic_defaults]
//! "retention.ms" = 604800000
//! ```
//!
//! Keys that are Kafka configs keep Kafka's dotted names, which TOML needs
//! quoted. Unknown keys and bad values stop start-up with the file, key and
//! reason. `config/eddy.toml` lists every option with its default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::security::{Mechanism, SecurityProtocol};
pub use crate::security::tls::ClientAuth;
use crate::topic_config;

/// One Kafka listener: a name, its security protocol, the address it binds
/// and the one it advertises.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerSpec {
    /// As written in `listeners` (`PLAINTEXT`, or a name mapped by
    /// `listener.security.protocol.map`).
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Where it listens; port 0 takes any free port.
    pub addr: SocketAddr,
    /// `host:port` clients are told to use (`advertised.listeners`, or
    /// `advertised` for a single listener); None: the bound address.
    pub advertised: Option<(String, u16)>,
}

/// `host:port` (a host name, an IPv4 address or a bracketed IPv6 one).
fn host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let h = h.trim_matches(['[', ']']);
    if h.is_empty() {
        return None;
    }
    Some((h.to_string(), p.parse().ok()?))
}

/// `NAME://address` items of a comma-separated list, in order; names upper
/// cased, as Kafka normalises them.
fn named_items(list: &str) -> Result<Vec<(String, &str)>, String> {
    let mut out: Vec<(String, &str)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, addr) = item.split_once("://").ok_or_else(|| format!("{item:?} is not NAME://host:port"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("{item:?}: a listener name is letters, digits, _ and -"));
        }
        let name = name.to_ascii_uppercase();
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("listener {name} is given twice"));
        }
        out.push((name, addr));
    }
    Ok(out)
}

/// `listener.security.protocol.map`: `NAME:PROTOCOL` pairs (either case).
fn protocol_map(map: &str) -> Result<Vec<(String, SecurityProtocol)>, String> {
    let mut out = Vec::new();
    for item in map.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, protocol) = item.split_once(':').ok_or_else(|| format!("{item:?} is not NAME:PROTOCOL"))?;
        out.push((name.trim().to_ascii_uppercase(), SecurityProtocol::parse(&protocol.trim().to_ascii_uppercase())?));
    }
    Ok(out)
}

/// `listeners` with their protocols and advertised addresses, or PLAINTEXT
/// at `listen`. Errors name the key at fault.
fn parse_listeners(b: &BrokerSection) -> Result<Vec<ListenerSpec>, String> {
    let advertised_one = match &b.advertised {
        Some(a) => Some(host_port(a).ok_or_else(|| format!("advertised: {a:?} is not host:port"))?),
        None => None,
    };
    let Some(list) = &b.listeners else {
        let addr = b.listen.parse().map_err(|_| format!("listen: {:?} is not an IP:port address", b.listen))?;
        if b.advertised_listeners.is_some() {
            return Err("advertised.listeners: needs listeners (NAME://host:port) to name".into());
        }
        return Ok(vec![ListenerSpec { name: "PLAINTEXT".into(), protocol: SecurityProtocol::Plaintext, addr, advertised: advertised_one }]);
    };
    let map = match &b.listener_security_protocol_map {
        Some(m) => Some(protocol_map(m).map_err(|e| format!("listener.security.protocol.map: {e}"))?),
        None => None,
    };
    let mut specs = Vec::new();
    for (name, addr) in named_items(list).map_err(|e| format!("listeners: {e}"))? {
        let protocol = match &map {
            // Kafka: a map given replaces the default one, so it names every listener.
            Some(m) => m.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).ok_or_else(|| format!("listener.security.protocol.map: no security protocol for listener {name}"))?,
            None => SecurityProtocol::parse(&name).map_err(|e| format!("listeners: {e} (a custom listener name needs listener.security.protocol.map)"))?,
        };
        // Kafka's `NAME://:port`: every interface.
        let full = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.to_string() };
        let addr: SocketAddr = full.parse().map_err(|_| format!("listeners: {name}://{addr}: {addr:?} is not an IP:port address"))?;
        if addr.port() != 0 && specs.iter().any(|s: &ListenerSpec| s.addr == addr) {
            return Err(format!("listeners: {addr} is used by two listeners"));
        }
        specs.push(ListenerSpec { name, protocol, addr, advertised: None });
    }
    if specs.is_empty() {
        return Err("listeners: no listener given".into());
    }
    match (&b.advertised_listeners, advertised_one) {
        (Some(_), Some(_)) => return Err("advertised and advertised.listeners: set one of them, not both".into()),
        (None, Some(a)) if specs.len() == 1 => specs[0].advertised = Some(a),
        (None, Some(_)) => return Err("advertised: gives one address; with several listeners use advertised.listeners".into()),
        (Some(list), None) => {
            for (name, addr) in named_items(list).map_err(|e| format!("advertised.listeners: {e}"))? {
                let spec = specs.iter_mut().find(|s| s.name == name).ok_or_else(|| format!("advertised.listeners: {name} is not one of listeners"))?;
                let hp = host_port(addr).ok_or_else(|| format!("advertised.listeners: {name}://{addr}: {addr:?} is not host:port"))?;
                if hp.1 == 0 || hp.0 == "0.0.0.0" || hp.0 == "::" {
                    return Err(format!("advertised.listeners: {name}://{addr} is not an address clients can connect to"));
                }
                spec.advertised = Some(hp);
            }
        }
        (None, None) => {}
    }
    Ok(specs)
}

/// A comma-separated list of SASL mechanism names.
fn parse_mechanisms(list: &str) -> Result<Vec<Mechanism>, String> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match Mechanism::parse(name) {
            Some(m) if !out.contains(&m) => out.push(m),
            Some(_) => {}
            None => return Err(format!("{name:?} is not supported: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")),
        }
    }
    Ok(out)
}

/// The `[broker]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// `node.id`: this broker's id in Metadata. Default 1.
    #[serde(rename = "node.id")]
    pub node_id: i32,
    /// Address to listen on. Default `127.0.0.1:9092` (loopback only).
    pub listen: String,
    /// `host:port` clients are told to connect to, for a single listener; default: the
    /// listener's address. With several listeners, use `advertised.listeners`.
    pub advertised: Option<String>,
    /// Where partition logs live. Default `./data`.
    pub data_dir: PathBuf,
    /// Cluster id reported to clients; default: generated once and kept in the data directory.
    pub cluster_id: Option<String>,
    /// `auto.create.topics.enable`: Metadata requests create unknown topics. Default true.
    #[serde(rename = "auto.create.topics.enable")]
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of auto-created topics and of CreateTopics without a count. Default 1.
    #[serde(rename = "num.partitions")]
    pub num_partitions: i32,
    /// `message.max.bytes`: the broker-wide default of the topic config `max.message.bytes`. Default 1048588.
    #[serde(rename = "message.max.bytes")]
    pub message_max_bytes: i32,
    /// `socket.request.max.bytes`: largest request frame; a larger one closes the connection. Default 104857600.
    #[serde(rename = "socket.request.max.bytes")]
    pub socket_request_max_bytes: i32,
    /// `max.connections`: connections served at once, over all listeners; more wait to be served. Default 10000.
    #[serde(rename = "max.connections")]
    pub max_connections: u32,
    /// `max.connections.per.ip`: connections one client address may hold; a further one is closed at once. Default 2147483647.
    #[serde(rename = "max.connections.per.ip")]
    pub max_connections_per_ip: u32,
    /// `connections.max.idle.ms`: a connection that sends nothing for this long (between requests or in the middle of one) is closed. Default 600000.
    #[serde(rename = "connections.max.idle.ms")]
    pub connections_max_idle_ms: u64,
    /// `group.initial.rebalance.delay.ms`: the first rebalance of an empty group waits this long for more members. Default 3000.
    #[serde(rename = "group.initial.rebalance.delay.ms")]
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`. Default 6000.
    #[serde(rename = "group.min.session.timeout.ms")]
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`. Default 1800000.
    #[serde(rename = "group.max.session.timeout.ms")]
    pub group_max_session_timeout_ms: i32,
    /// `offsets.retention.minutes`: committed offsets of a group empty this long are dropped. Default 10080 (7 days).
    #[serde(rename = "offsets.retention.minutes")]
    pub offsets_retention_minutes: i64,
    /// `offsets.retention.check.interval.ms`: an empty group with no
    /// committed offsets is dropped once empty this long. Default 600000.
    #[serde(rename = "offsets.retention.check.interval.ms")]
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`: largest metadata string of a commit. Default 4096.
    #[serde(rename = "offset.metadata.max.bytes")]
    pub offset_metadata_max_bytes: i32,
    /// `group.consumer.session.timeout.ms`: session timeout of KIP-848 consumer-protocol members. Default 45000.
    #[serde(rename = "group.consumer.session.timeout.ms")]
    pub group_consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`: heartbeat interval given to KIP-848 members. Default 5000.
    #[serde(rename = "group.consumer.heartbeat.interval.ms")]
    pub group_consumer_heartbeat_interval_ms: i32,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask for. Default 900000.
    #[serde(rename = "transaction.max.timeout.ms")]
    pub transaction_max_timeout_ms: i32,
    /// `log.cleaner.enable`: run the cleaner of compacted topics. Default true.
    #[serde(rename = "log.cleaner.enable")]
    pub log_cleaner_enable: bool,
    /// `log.cleaner.dedupe.buffer.size`: memory for the cleaner's key → offset map. Default 134217728.
    #[serde(rename = "log.cleaner.dedupe.buffer.size")]
    pub log_cleaner_dedupe_buffer_size: i64,
    /// `log.cleaner.io.max.bytes.per.second`: cap on the cleaner's reads plus writes; 0 for none. Default 0.
    #[serde(rename = "log.cleaner.io.max.bytes.per.second")]
    pub log_cleaner_io_max_bytes_per_second: f64,
    /// `log.cleaner.backoff.ms`: how long the cleaner sleeps when no log needs cleaning. Default 15000.
    #[serde(rename = "log.cleaner.backoff.ms")]
    pub log_cleaner_backoff_ms: i64,
    /// A directory of `*.toml` files with more `[processors.NAME]` tables; relative to the config file.
    pub processors_dir: Option<PathBuf>,
    /// `listeners`: Kafka's comma-separated `NAME://ip:port` list; a name is its security
    /// protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) unless
    /// `listener.security.protocol.map` maps it. Default: unset, meaning `PLAINTEXT://` at
    /// `listen`. Set either `listen` or `listeners`.
    pub listeners: Option<String>,
    /// `advertised.listeners`: `NAME://host:port` per listener, what clients connected to
    /// that listener are told; a listener left out advertises its own address. Default: unset.
    #[serde(rename = "advertised.listeners")]
    pub advertised_listeners: Option<String>,
    /// `listener.security.protocol.map`: `NAME:PROTOCOL` pairs for custom listener names;
    /// when set it must name every listener (Kafka's rule). Default: unset (names are protocols).
    #[serde(rename = "listener.security.protocol.map")]
    pub listener_security_protocol_map: Option<String>,
    /// `ssl.keystore.location`: a PEM file with the private key (unencrypted) and the
    /// certificate chain of SSL and SASL_SSL listeners. Default: unset (required by them).
    #[serde(rename = "ssl.keystore.location")]
    pub ssl_keystore_location: Option<PathBuf>,
    /// `ssl.keystore.type`: only `PEM` is read. Default `PEM`.
    #[serde(rename = "ssl.keystore.type")]
    pub ssl_keystore_type: String,
    /// `ssl.truststore.location`: a PEM file of CA certificates that client certificates
    /// must chain to (`ssl.client.auth`). Default: unset.
    #[serde(rename = "ssl.truststore.location")]
    pub ssl_truststore_location: Option<PathBuf>,
    /// `ssl.truststore.type`: only `PEM` is read. Default `PEM`.
    #[serde(rename = "ssl.truststore.type")]
    pub ssl_truststore_type: String,
    /// `ssl.client.auth`: `none`, `requested` or `required` client certificates on SSL
    /// listeners (SASL_SSL listeners never ask, as in Kafka without a listener prefix).
    /// Default `none`.
    #[serde(rename = "ssl.client.auth")]
    pub ssl_client_auth: ClientAuth,
    /// `sasl.enabled.mechanisms`: comma-separated, of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
    /// Default `SCRAM-SHA-256,SCRAM-SHA-512` (PLAIN sends the password itself; without TLS, opt in).
    #[serde(rename = "sasl.enabled.mechanisms")]
    pub sasl_enabled_mechanisms: String,
    /// `sasl.server.max.receive.size`: largest request frame before a SASL listener's client has
    /// authenticated; a larger one closes the connection. Default 8192 (Kafka's is 524288).
    #[serde(rename = "sasl.server.max.receive.size")]
    pub sasl_server_max_receive_size: u32,
    /// `connections.max.reauth.ms`: SASL sessions last this long, then the client must
    /// re-authenticate on its connection (KIP-368); 0: sessions do not end. Default 0.
    #[serde(rename = "connections.max.reauth.ms")]
    pub connections_max_reauth_ms: u64,
    /// `connection.failed.authentication.delay.ms`: a failed SASL exchange is answered (and its
    /// connection closed) this much later, to slow down password guessing. Default 100.
    #[serde(rename = "connection.failed.authentication.delay.ms")]
    pub connection_failed_authentication_delay_ms: u64,
    /// `sasl.bootstrap.user` / `sasl.bootstrap.password`: a user whose SCRAM credentials are
    /// created at start-up if it has none yet (salted, in the data directory; the password
    /// is never stored there). Default: unset.
    #[serde(rename = "sasl.bootstrap.user")]
    pub sasl_bootstrap_user: Option<String>,
    #[serde(rename = "sasl.bootstrap.password")]
    pub sasl_bootstrap_password: Option<String>,
    /// `authorizer.class.name`: enables ACLs. Kafka's class names
    /// `org.apache.kafka.metadata.authorizer.StandardAuthorizer` or
    /// `kafka.security.authorizer.AclAuthorizer` (both mean Eddy's authorizer). Default: unset,
    /// no authorizer: every request is allowed and the ACL APIs answer SECURITY_DISABLED.
    #[serde(rename = "authorizer.class.name")]
    pub authorizer_class_name: Option<String>,
    /// `super.users`: principals allowed everything, `User:a;User:b`. Default: empty.
    #[serde(rename = "super.users")]
    pub super_users: String,
    /// `allow.everyone.if.no.acl.found`: a resource no ACL names is open to everyone. Default false.
    #[serde(rename = "allow.everyone.if.no.acl.found")]
    pub allow_everyone_if_no_acl_found: bool,
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            node_id: 1,
            listen: "127.0.0.1:9092".into(),
            advertised: None,
            data_dir: PathBuf::from("./data"),
            cluster_id: None,
            auto_create_topics: true,
            num_partitions: 1,
            message_max_bytes: 1_048_588,
            socket_request_max_bytes: 104_857_600,
            max_connections: 10_000,
            max_connections_per_ip: 2_147_483_647,
            connections_max_idle_ms: 600_000,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_retention_minutes: 10_080,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            transaction_max_timeout_ms: 900_000,
            log_cleaner_enable: true,
            log_cleaner_dedupe_buffer_size: 134_217_728,
            log_cleaner_io_max_bytes_per_second: 0.0,
            log_cleaner_backoff_ms: 15_000,
            processors_dir: None,
            listeners: None,
            advertised_listeners: None,
            listener_security_protocol_map: None,
            ssl_keystore_location: None,
            ssl_keystore_type: "PEM".into(),
            ssl_truststore_location: None,
            ssl_truststore_type: "PEM".into(),
            ssl_client_auth: ClientAuth::None,
            sasl_enabled_mechanisms: "SCRAM-SHA-256,SCRAM-SHA-512".into(),
            sasl_server_max_receive_size: 8192,
            connections_max_reauth_ms: 0,
            connection_failed_authentication_delay_ms: 100,
            sasl_bootstrap_user: None,
            sasl_bootstrap_password: None,
            authorizer_class_name: None,
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
        }
    }
}

/// `[http]`: metrics, health, the JSON API and interactive queries.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Serve HTTP at all. Default true.
    pub enabled: bool,
    /// Address to listen on. Default 127.0.0.1:9644 (loopback only).
    pub listen: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection { enabled: true, listen: "127.0.0.1:9644".into() }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    broker: BrokerSection,
    #[serde(default)]
    http: HttpSection,
    #[serde(default)]
    topic_defaults: BTreeMap<String, toml::Value>,
    #[serde(default)]
    processors: BTreeMap<String, toml::Value>,
}

/// A file of the processors directory: processors only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessorsFile {
    #[serde(default)]
    processors: BTreeMap<String, toml::Value>,
}

/// The whole, validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub broker: BrokerSection,
    pub http: HttpSection,
    /// Topic config defaults by Kafka name, validated and normalized.
    pub topic_defaults: BTreeMap<String, String>,
    /// Group coordinator settings, from the `[broker]` table.
    pub groups: crate::group::GroupConfig,
    /// Processors by name, from `[processors.NAME]` tables here and in `processors_dir`.
    pub processors: BTreeMap<String, crate::processor::ProcessorSpec>,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_toml("", "<defaults>").expect("the embedded defaults are valid")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError { file: path.display().to_string(), message: format!("cannot read: {e}") })?;
        let mut config = Config::from_toml(&text, &path.display().to_string())?;
        if let Some(dir) = config.broker.processors_dir.clone() {
            let dir = if dir.is_relative() { path.parent().unwrap_or(Path::new(".")).join(dir) } else { dir };
            config.load_processors_dir(&dir)?;
        }
        Ok(config)
    }

    /// Adds the processors of every `*.toml` file in `dir` (in name order).
    pub fn load_processors_dir(&mut self, dir: &Path) -> Result<(), ConfigError> {
        let err = |file: &Path, message: String| ConfigError { file: file.display().to_string(), message };
        let entries = std::fs::read_dir(dir).map_err(|e| err(dir, format!("cannot read the processors directory: {e}")))?;
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| err(&f, format!("cannot read: {e}")))?;
            let pf: ProcessorsFile = toml::from_str(&text).map_err(|e| err(&f, e.to_string().trim_end().to_string()))?;
            for (name, table) in pf.processors {
                if self.processors.contains_key(&name) {
                    return Err(err(&f, format!("[processors.{name}]: a processor of that name is already defined")));
                }
                let spec = crate::processor::config::parse(&name, &table).map_err(|e| err(&f, e.to_string()))?;
                self.processors.insert(name, spec);
            }
        }
        self.check_processors().map_err(|m| err(dir, m))
    }

    /// Checks across processors: no processor reads another's output or
    /// dead-letter topic in a cycle is not detected, but two processors may
    /// not write the same output topic.
    fn check_processors(&self) -> Result<(), String> {
        let mut outputs: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, p) in &self.processors {
            if let Some(other) = outputs.insert(&p.output_topic, name) {
                return Err(format!("[processors.{name}] output.topic: {:?} is also the output of processor {other:?}", p.output_topic));
            }
        }
        Ok(())
    }

    /// Parses and validates a config file's text; `name` is used in errors.
    pub fn from_toml(text: &str, name: &str) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError { file: name.to_string(), message };
        let file: File = toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        let b = &file.broker;
        if b.listen.parse::<SocketAddr>().is_err() {
            return Err(err(format!("[broker] listen: {:?} is not an IP:port address", b.listen)));
        }
        if b.listeners.is_some() && b.listen != BrokerSection::default().listen {
            return Err(err("[broker] listen and listeners: set one of them, not both".into()));
        }
        let listeners = parse_listeners(b).map_err(|m| err(format!("[broker] {m}")))?;
        let mechanisms = parse_mechanisms(&b.sasl_enabled_mechanisms).map_err(|m| err(format!("[broker] sasl.enabled.mechanisms: {m}")))?;
        if let Some(l) = listeners.iter().find(|l| l.protocol.uses_sasl()) {
            if mechanisms.is_empty() {
                return Err(err(format!("[broker] sasl.enabled.mechanisms: the {} listener {} needs at least one mechanism", l.protocol.name(), l.name)));
            }
        }
        for (key, kind) in [("ssl.keystore.type", &b.ssl_keystore_type), ("ssl.truststore.type", &b.ssl_truststore_type)] {
            if kind != "PEM" {
                return Err(err(format!("[broker] {key}: {kind:?} is not supported: Eddy reads PEM files only (convert JKS or PKCS12 with keytool or openssl)")));
            }
        }
        if let Some(l) = listeners.iter().find(|l| l.protocol.uses_tls()) {
            if b.ssl_keystore_location.is_none() {
                return Err(err(format!("[broker] ssl.keystore.location: the {} listener {} needs a keystore (a PEM file with the private key and certificate chain)", l.protocol.name(), l.name)));
            }
        }
        if b.ssl_client_auth != ClientAuth::None && b.ssl_truststore_location.is_none() {
            return Err(err(format!("[broker] ssl.truststore.location: ssl.client.auth = {:?} needs a truststore (PEM CA certificates) to check client certificates against", b.ssl_client_auth.name())));
        }
        if b.connection_failed_authentication_delay_ms >= b.connections_max_idle_ms {
            return Err(err("[broker] connection.failed.authentication.delay.ms: must be below connections.max.idle.ms".into()));
        }
        if b.sasl_server_max_receive_size < 512 {
            return Err(err("[broker] sasl.server.max.receive.size: must be at least 512".into()));
        }
        match (&b.sasl_bootstrap_user, &b.sasl_bootstrap_password) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => {}
            (None, None) => {}
            _ => return Err(err("[broker] sasl.bootstrap.user / sasl.bootstrap.password: set both (not empty) or neither".into())),
        }
        if let Some(class) = &b.authorizer_class_name {
            if !crate::security::acl::AUTHORIZER_CLASSES.contains(&class.as_str()) {
                return Err(err(format!("[broker] authorizer.class.name: {class:?} is not supported: use {} (or leave it unset for no authorizer)", crate::security::acl::AUTHORIZER_CLASSES.join(" or "))));
            }
        }
        crate::security::acl::parse_super_users(&b.super_users).map_err(|m| err(format!("[broker] super.users: {m}")))?;
        if b.node_id < 0 {
            return Err(err("[broker] node.id: must be 0 or more".into()));
        }
        if b.num_partitions < 1 {
            return Err(err("[broker] num.partitions: must be at least 1".into()));
        }
        if b.message_max_bytes < 0 {
            return Err(err("[broker] message.max.bytes: must be 0 or more".into()));
        }
        if b.socket_request_max_bytes < 1024 {
            return Err(err("[broker] socket.request.max.bytes: must be at least 1024".into()));
        }
        if b.max_connections < 1 {
            return Err(err("[broker] max.connections: must be at least 1".into()));
        }
        if b.max_connections_per_ip < 1 {
            return Err(err("[broker] max.connections.per.ip: must be at least 1".into()));
        }
        if b.connections_max_idle_ms < 1 {
            return Err(err("[broker] connections.max.idle.ms: must be at least 1".into()));
        }
        if let Some(id) = &b.cluster_id {
            if id.is_empty() || id.len() > 64 {
                return Err(err("[broker] cluster_id: must be 1 to 64 characters".into()));
            }
        }
        if b.group_min_session_timeout_ms < 1 || b.group_max_session_timeout_ms < b.group_min_session_timeout_ms {
            return Err(err("[broker] group.min.session.timeout.ms / group.max.session.timeout.ms: need 1 ≤ min ≤ max".into()));
        }
        if b.transaction_max_timeout_ms < 1 {
            return Err(err("[broker] transaction.max.timeout.ms: must be at least 1".into()));
        }
        if b.offsets_retention_minutes < 1 {
            return Err(err("[broker] offsets.retention.minutes: must be at least 1".into()));
        }
        if b.offsets_retention_check_interval_ms < 1 {
            return Err(err("[broker] offsets.retention.check.interval.ms: must be at least 1".into()));
        }
        if b.offset_metadata_max_bytes < 0 {
            return Err(err("[broker] offset.metadata.max.bytes: must be 0 or more".into()));
        }
        if b.log_cleaner_dedupe_buffer_size < 1024 * 1024 {
            return Err(err("[broker] log.cleaner.dedupe.buffer.size: must be at least 1048576".into()));
        }
        if b.log_cleaner_io_max_bytes_per_second.is_nan() || b.log_cleaner_io_max_bytes_per_second < 0.0 {
            return Err(err("[broker] log.cleaner.io.max.bytes.per.second: must be 0 (no limit) or more".into()));
        }
        if b.log_cleaner_backoff_ms < 1 {
            return Err(err("[broker] log.cleaner.backoff.ms: must be at least 1".into()));
        }
        let groups = crate::group::GroupConfig {
            initial_rebalance_delay_ms: b.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: b.group_min_session_timeout_ms,
            max_session_timeout_ms: b.group_max_session_timeout_ms,
            offsets_retention_ms: b.offsets_retention_minutes.saturating_mul(60_000),
            empty_group_ms: b.offsets_retention_check_interval_ms,
            max_metadata_bytes: b.offset_metadata_max_bytes as usize,
            consumer_session_ms: b.group_consumer_session_timeout_ms,
            consumer_heartbeat_ms: b.group_consumer_heartbeat_interval_ms,
        };
        if b.group_consumer_heartbeat_interval_ms < 1 || b.group_consumer_session_timeout_ms <= b.group_consumer_heartbeat_interval_ms {
            return Err(err("[broker] group.consumer.heartbeat.interval.ms must be at least 1 and below group.consumer.session.timeout.ms".into()));
        }
        let mut topic_defaults = BTreeMap::new();
        topic_defaults.insert("max.message.bytes".to_string(), b.message_max_bytes.to_string());
        for (key, value) in &file.topic_defaults {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(err(format!("[topic_defaults] {key}: unsupported value {other}"))),
            };
            let v = topic_config::validate(key, &text).map_err(|e| err(format!("[topic_defaults] {e}")))?;
            topic_defaults.insert(key.clone(), v);
        }
        let mut processors = BTreeMap::new();
        for (pname, table) in &file.processors {
            let spec = crate::processor::config::parse(pname, table).map_err(|e| err(e.to_string()))?;
            processors.insert(pname.clone(), spec);
        }
        if file.http.listen.parse::<SocketAddr>().is_err() {
            return Err(err(format!("[http] listen: {:?} is not an IP:port address", file.http.listen)));
        }
        let config = Config { broker: file.broker, http: file.http, topic_defaults, groups, processors };
        config.check_processors().map_err(err)?;
        Ok(config)
    }

    /// The log cleaner's settings.
    pub fn cleaner(&self) -> crate::log::cleaner::CleanerConfig {
        let b = &self.broker;
        crate::log::cleaner::CleanerConfig {
            enabled: b.log_cleaner_enable,
            dedupe_buffer_bytes: b.log_cleaner_dedupe_buffer_size as u64,
            io_max_bytes_per_second: b.log_cleaner_io_max_bytes_per_second,
            backoff_ms: b.log_cleaner_backoff_ms as u64,
        }
    }

    /// The listeners, in `listeners` order (validated when the config was read).
    pub fn listeners(&self) -> Result<Vec<ListenerSpec>, String> {
        parse_listeners(&self.broker)
    }

    /// The SASL mechanisms enabled (`sasl.enabled.mechanisms`).
    pub fn sasl_mechanisms(&self) -> Result<Vec<Mechanism>, String> {
        parse_mechanisms(&self.broker.sasl_enabled_mechanisms)
    }

    /// The bootstrap SASL user and password, if configured.
    pub fn sasl_bootstrap(&self) -> Option<(&str, &str)> {
        Some((self.broker.sasl_bootstrap_user.as_deref()?, self.broker.sasl_bootstrap_password.as_deref()?))
    }

    /// The authorizer's settings (`super.users`, `allow.everyone.if.no.acl.found`),
    /// or None when `authorizer.class.name` is unset.
    pub fn authorizer(&self) -> Option<(Vec<String>, bool)> {
        self.broker.authorizer_class_name.as_ref()?;
        // Checked when the config was parsed.
        let super_users = crate::security::acl::parse_super_users(&self.broker.super_users).unwrap_or_default();
        Some((super_users, self.broker.allow_everyone_if_no_acl_found))
    }

    /// A readable dump of the effective settings (`eddy check`).
    pub fn describe(&self) -> String {
        let b = &self.broker;
        let mut s = String::from("[broker]\n");
        s.push_str(&format!("\"node.id\" = {}\n", b.node_id));
        match self.listeners() {
            Ok(specs) => {
                let list = |f: &dyn Fn(&ListenerSpec) -> String| specs.iter().map(f).collect::<Vec<_>>().join(",");
                s.push_str(&format!("listeners = {:?}\n", list(&|l| format!("{}://{}", l.name, l.addr))));
                s.push_str(&format!("\"listener.security.protocol.map\" = {:?}\n", list(&|l| format!("{}:{}", l.name, l.protocol.name()))));
                let advertised = list(&|l| match &l.advertised {
                    Some((h, p)) => format!("{}://{h}:{p}", l.name),
                    None => format!("{}://{} (the bound address)", l.name, l.addr),
                });
                s.push_str(&format!("\"advertised.listeners\" = {advertised:?}\n"));
            }
            Err(e) => s.push_str(&format!("# listeners: {e}\n")),
        }
        s.push_str(&format!("data_dir = {:?}\n", b.data_dir.display().to_string()));
        s.push_str(&format!("cluster_id = {:?}\n", b.cluster_id.clone().unwrap_or_else(|| "(generated, kept in the data directory)".into())));
        s.push_str(&format!("\"auto.create.topics.enable\" = {}\n", b.auto_create_topics));
        s.push_str(&format!("\"num.partitions\" = {}\n", b.num_partitions));
        s.push_str(&format!("\"message.max.bytes\" = {}\n", b.message_max_bytes));
        s.push_str(&format!("\"socket.request.max.bytes\" = {}\n", b.socket_request_max_bytes));
        s.push_str(&format!("\"max.connections\" = {}\n", b.max_connections));
        s.push_str(&format!("\"max.connections.per.ip\" = {}\n", b.max_connections_per_ip));
        s.push_str(&format!("\"connections.max.idle.ms\" = {}\n", b.connections_max_idle_ms));
        s.push_str(&format!("\"group.initial.rebalance.delay.ms\" = {}\n", b.group_initial_rebalance_delay_ms));
        s.push_str(&format!("\"group.min.session.timeout.ms\" = {}\n", b.group_min_session_timeout_ms));
        s.push_str(&format!("\"group.max.session.timeout.ms\" = {}\n", b.group_max_session_timeout_ms));
        s.push_str(&format!("\"offsets.retention.minutes\" = {}\n", b.offsets_retention_minutes));
        s.push_str(&format!("\"offsets.retention.check.interval.ms\" = {}\n", b.offsets_retention_check_interval_ms));
        s.push_str(&format!("\"offset.metadata.max.bytes\" = {}\n", b.offset_metadata_max_bytes));
        s.push_str(&format!("\"group.consumer.session.timeout.ms\" = {}\n", b.group_consumer_session_timeout_ms));
        s.push_str(&format!("\"group.consumer.heartbeat.interval.ms\" = {}\n", b.group_consumer_heartbeat_interval_ms));
        s.push_str(&format!("\"transaction.max.timeout.ms\" = {}\n", b.transaction_max_timeout_ms));
        s.push_str(&format!("\"log.cleaner.enable\" = {}\n", b.log_cleaner_enable));
        s.push_str(&format!("\"log.cleaner.dedupe.buffer.size\" = {}\n", b.log_cleaner_dedupe_buffer_size));
        s.push_str(&format!("\"log.cleaner.io.max.bytes.per.second\" = {}\n", b.log_cleaner_io_max_bytes_per_second));
        s.push_str(&format!("\"log.cleaner.backoff.ms\" = {}\n", b.log_cleaner_backoff_ms));
        let path = |p: &Option<PathBuf>| p.as_ref().map_or("(unset)".to_string(), |p| p.display().to_string());
        s.push_str(&format!("\"ssl.keystore.location\" = {:?}\n", path(&b.ssl_keystore_location)));
        s.push_str(&format!("\"ssl.truststore.location\" = {:?}\n", path(&b.ssl_truststore_location)));
        s.push_str(&format!("\"ssl.client.auth\" = {:?}\n", b.ssl_client_auth.name()));
        s.push_str(&format!("\"sasl.enabled.mechanisms\" = {:?}\n", b.sasl_enabled_mechanisms));
        s.push_str(&format!("\"sasl.server.max.receive.size\" = {}\n", b.sasl_server_max_receive_size));
        s.push_str(&format!("\"connections.max.reauth.ms\" = {}\n", b.connections_max_reauth_ms));
        s.push_str(&format!("\"connection.failed.authentication.delay.ms\" = {}\n", b.connection_failed_authentication_delay_ms));
        match &b.sasl_bootstrap_user {
            Some(u) => s.push_str(&format!("\"sasl.bootstrap.user\" = {u:?}\n# \"sasl.bootstrap.password\" is set (not shown)\n")),
            None => s.push_str("# sasl.bootstrap.user: unset\n"),
        }
        match &b.authorizer_class_name {
            Some(c) => s.push_str(&format!("\"authorizer.class.name\" = {c:?}\n")),
            None => s.push_str("# authorizer.class.name: unset (no ACLs: everything is allowed)\n"),
        }
        s.push_str(&format!("\"super.users\" = {:?}\n", b.super_users));
        s.push_str(&format!("\"allow.everyone.if.no.acl.found\" = {}\n", b.allow_everyone_if_no_acl_found));
        if let Some(d) = &b.processors_dir {
            s.push_str(&format!("processors_dir = {:?}\n", d.display().to_string()));
        }
        s.push_str(&format!("\n[http]\nenabled = {}\nlisten = {:?}\n", self.http.enabled, self.http.listen));
        s.push_str("\n[topic_defaults]\n");
        for (def, value, _) in topic_config::effective(&self.topic_defaults, &BTreeMap::new()) {
            s.push_str(&format!("{:?} = {:?}\n", def.name, value));
        }
        for (name, p) in &self.processors {
            s.push_str(&format!("\n# processor {name}: {:?} window over {:?} -> {:?} (emit {:?})\n", p.window, p.topics, p.output_topic, p.emit));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::from_toml("", "x").unwrap();
        assert_eq!(c.broker, BrokerSection::default());
        assert_eq!(c.topic_defaults.get("max.message.bytes").map(String::as_str), Some("1048588"));
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = Config::from_toml("[broker]\nlisten_addr = \"x\"\n", "a.toml").unwrap_err().to_string();
        assert!(e.starts_with("a.toml:") && e.contains("listen_addr"), "{e}");
        let e = Config::from_toml("[broker]\nlisten = \"nope\"\n", "a.toml").unwrap_err().to_string();
        assert!(e.contains("listen") && e.contains("nope"), "{e}");
        let e = Config::from_toml("[topic_defaults]\n\"retention.ms\" = \"soon\"\n", "b.toml").unwrap_err().to_string();
        assert!(e.contains("retention.ms") && e.contains("soon"), "{e}");
        let e = Config::from_toml("[topic_defaults]\n\"retention.msec\" = 5\n", "b.toml").unwrap_err().to_string();
        assert!(e.contains("unknown topic config") && e.contains("retention.msec"), "{e}");
        let e = Config::from_toml("[broker]\n\"num.partitions\" = \"two\"\n", "c.toml").unwrap_err().to_string();
        assert!(e.contains("num.partitions"), "{e}");
        let e = Config::from_toml("[broker]\nlisteners = \"SASL_SSL://127.0.0.1:9093\"\n", "d.toml").unwrap_err().to_string();
        assert!(e.starts_with("d.toml:") && e.contains("ssl.keystore.location") && e.contains("SASL_SSL"), "{e}");
        let e = Config::from_toml("[broker]\n\"sasl.enabled.mechanisms\" = \"GSSAPI\"\n", "d.toml").unwrap_err().to_string();
        assert!(e.contains("sasl.enabled.mechanisms") && e.contains("GSSAPI"), "{e}");
        let e = Config::from_toml("[broker]\n\"sasl.bootstrap.user\" = \"admin\"\n", "d.toml").unwrap_err().to_string();
        assert!(e.contains("sasl.bootstrap.password"), "{e}");
        let e = Config::from_toml("[broker]\n\"authorizer.class.name\" = \"com.example.MyAuthorizer\"\n", "d.toml").unwrap_err().to_string();
        assert!(e.contains("authorizer.class.name") && e.contains("StandardAuthorizer"), "{e}");
        let e = Config::from_toml("[broker]\n\"super.users\" = \"admin\"\n", "d.toml").unwrap_err().to_string();
        assert!(e.contains("super.users") && e.contains("User:NAME"), "{e}");
        let c = Config::from_toml("[broker]\n\"authorizer.class.name\" = \"kafka.security.authorizer.AclAuthorizer\"\n\"super.users\" = \"User:admin;User:ops\"\n", "d.toml").unwrap();
        assert_eq!(c.authorizer(), Some((vec!["User:admin".to_string(), "User:ops".to_string()], false)));
        assert_eq!(Config::default().authorizer(), None);
        let c = Config::from_toml("[broker]\nlisteners = \"SASL_PLAINTEXT://127.0.0.1:9093\"\n", "d.toml").unwrap();
        let one = ListenerSpec { name: "SASL_PLAINTEXT".into(), protocol: SecurityProtocol::SaslPlaintext, addr: "127.0.0.1:9093".parse().unwrap(), advertised: None };
        assert_eq!(c.listeners().unwrap(), [one]);
    }

    fn listeners_of(broker_table: &str) -> Result<Vec<ListenerSpec>, String> {
        Config::from_toml(&format!("[broker]\n{broker_table}"), "l.toml").map(|c| c.listeners().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn listeners_protocol_map_and_advertised_listeners() {
        let spec = |name: &str, protocol, addr: &str, advertised: Option<(&str, u16)>| ListenerSpec { name: name.into(), protocol, addr: addr.parse().unwrap(), advertised: advertised.map(|(h, p)| (h.to_string(), p)) };
        // The default: PLAINTEXT at listen, `advertised` applying to it.
        assert_eq!(listeners_of("").unwrap(), [spec("PLAINTEXT", SecurityProtocol::Plaintext, "127.0.0.1:9092", None)]);
        assert_eq!(listeners_of("advertised = \"kafka.example:19092\"").unwrap(), [spec("PLAINTEXT", SecurityProtocol::Plaintext, "127.0.0.1:9092", Some(("kafka.example", 19092)))]);
        // Several, names being protocols; advertised.listeners for some of them.
        let tls = "\"ssl.keystore.location\" = \"k.pem\"\n";
        let got = listeners_of(&format!("{tls}listeners = \"PLAINTEXT://127.0.0.1:9092, SSL://0.0.0.0:9093,SASL_SSL://[::1]:0\"\n\"advertised.listeners\" = \"SSL://b1.example:443\"")).unwrap();
        assert_eq!(got, [spec("PLAINTEXT", SecurityProtocol::Plaintext, "127.0.0.1:9092", None), spec("SSL", SecurityProtocol::Ssl, "0.0.0.0:9093", Some(("b1.example", 443))), spec("SASL_SSL", SecurityProtocol::SaslSsl, "[::1]:0", None)]);
        // Custom names through listener.security.protocol.map.
        let got = listeners_of(&format!("{tls}listeners = \"INTERNAL://127.0.0.1:9092,EXTERNAL://127.0.0.1:9093\"\n\"listener.security.protocol.map\" = \"INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL\"")).unwrap();
        assert_eq!(got.iter().map(|l| (l.name.as_str(), l.protocol)).collect::<Vec<_>>(), [("INTERNAL", SecurityProtocol::Plaintext), ("EXTERNAL", SecurityProtocol::SaslSsl)]);
        // Names in either case (Kafka upper-cases them); an empty host is every interface.
        let got = listeners_of("listeners = \"internal://:9092\"\n\"listener.security.protocol.map\" = \"Internal:sasl_plaintext\"").unwrap();
        assert_eq!(got, [spec("INTERNAL", SecurityProtocol::SaslPlaintext, "0.0.0.0:9092", None)]);
        assert_eq!(listeners_of("listeners = \"plaintext://127.0.0.1:1\"").unwrap()[0].name, "PLAINTEXT");
        // Mistakes, each naming its key.
        for (table, needle) in [
            ("listeners = \"INTERNAL://127.0.0.1:9092\"", "unknown security protocol \"INTERNAL\""),
            ("listeners = \"TLS://127.0.0.1:9092\"", "listener.security.protocol.map"),
            ("listeners = \"A://127.0.0.1:1\"\n\"listener.security.protocol.map\" = \"B:PLAINTEXT\"", "no security protocol for listener A"),
            ("listeners = \"A://127.0.0.1:1\"\n\"listener.security.protocol.map\" = \"A:TLS\"", "listener.security.protocol.map: unknown security protocol \"TLS\""),
            ("listeners = \"PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2\"", "PLAINTEXT is given twice"),
            ("listeners = \"PLAINTEXT://127.0.0.1:1,SASL_PLAINTEXT://127.0.0.1:1\"", "127.0.0.1:1 is used by two listeners"),
            ("listeners = \"PLAINTEXT://localhost:1\"", "is not an IP:port address"),
            ("listeners = \"127.0.0.1:9092\"", "is not NAME://host:port"),
            ("listeners = \"\"", "no listener given"),
            ("listeners = \"PLAINTEXT://127.0.0.1:1,SASL_PLAINTEXT://127.0.0.1:2\"\nadvertised = \"h:1\"", "use advertised.listeners"),
            ("listeners = \"PLAINTEXT://127.0.0.1:1\"\nadvertised = \"h:1\"\n\"advertised.listeners\" = \"PLAINTEXT://h:1\"", "set one of them"),
            ("listeners = \"PLAINTEXT://127.0.0.1:1\"\n\"advertised.listeners\" = \"SSL://h:1\"", "SSL is not one of listeners"),
            ("listeners = \"PLAINTEXT://127.0.0.1:1\"\n\"advertised.listeners\" = \"PLAINTEXT://0.0.0.0:1\"", "not an address clients can connect to"),
            ("listeners = \"PLAINTEXT://127.0.0.1:1\"\n\"advertised.listeners\" = \"PLAINTEXT://h\"", "is not host:port"),
            ("\"advertised.listeners\" = \"PLAINTEXT://h:1\"", "needs listeners"),
            ("advertised = \"nohost\"", "advertised: \"nohost\" is not host:port"),
            ("listeners = \"SSL://127.0.0.1:1\"", "ssl.keystore.location: the SSL listener SSL needs a keystore"),
            ("\"ssl.client.auth\" = \"required\"", "ssl.truststore.location"),
            ("\"ssl.client.auth\" = \"always\"", "ssl.client.auth"),
            ("\"ssl.keystore.type\" = \"JKS\"", "PEM files only"),
            ("listeners = \"SASL_PLAINTEXT://127.0.0.1:1\"\n\"sasl.enabled.mechanisms\" = \"\"", "needs at least one mechanism"),
        ] {
            let e = listeners_of(table).unwrap_err();
            assert!(e.starts_with("l.toml:") && e.contains(needle), "{table}: {e}");
        }
    }

    #[test]
    fn every_file_in_config_dir_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let c = Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
            if p.file_name().is_some_and(|n| n == "eddy.toml") {
                assert_eq!(c, Config::default(), "config/eddy.toml must show exactly the defaults");
            }
            names.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
        assert!(names.iter().any(|n| n == "eddy.toml"), "config/eddy.toml is missing");
    }

    #[test]
    fn the_example_documents_every_option() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/eddy.toml")).unwrap();
        for key in ["\"node.id\"", "listen", "advertised", "data_dir", "cluster_id", "auto.create.topics.enable", "num.partitions", "message.max.bytes", "socket.request.max.bytes", "max.connections", "max.connections.per.ip", "connections.max.idle.ms", "group.initial.rebalance.delay.ms", "group.min.session.timeout.ms", "group.max.session.timeout.ms", "offsets.retention.minutes", "offsets.retention.check.interval.ms", "offset.metadata.max.bytes", "group.consumer.session.timeout.ms", "group.consumer.heartbeat.interval.ms", "transaction.max.timeout.ms", "listeners", "sasl.enabled.mechanisms", "sasl.server.max.receive.size", "connections.max.reauth.ms", "connection.failed.authentication.delay.ms", "sasl.bootstrap.user", "sasl.bootstrap.password", "authorizer.class.name", "super.users", "allow.everyone.if.no.acl.found", "advertised.listeners", "listener.security.protocol.map", "ssl.keystore.location", "ssl.keystore.type", "ssl.truststore.location", "ssl.truststore.type", "ssl.client.auth"] {
            assert!(text.contains(key), "config/eddy.toml does not mention {key}");
        }
        for def in topic_config::TOPIC_CONFIGS {
            assert!(text.contains(&format!("\"{}\" = ", def.name)), "config/eddy.toml does not list topic config {}", def.name);
        }
    }
}
