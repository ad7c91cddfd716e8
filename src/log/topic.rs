//! Topic metadata files: `<data_dir>/<topic>.topic`, one per topic.
//!
//! A small text file of `key=value` lines (Kafka's properties style), so an
//! operator can read it; the last line is a CRC-32 of everything before it:
//!
//! ```text
//! version=1
//! name=orders
//! id=0f8e...           32 hex digits: the topic id (a UUID)
//! partitions=6
//! config.retention.ms=86400000
//! crc32=1a2b3c4d       IEEE CRC-32 (crc32fast) of all preceding bytes
//! ```
//!
//! Written tmp → fsync → rename → fsync dir, like every file Eddy replaces.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

pub const SUFFIX: &str = ".topic";
const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: u32,
    /// Topic-level config overrides, by Kafka config name.
    pub configs: BTreeMap<String, String>,
}

pub fn path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!("{name}{SUFFIX}"))
}

impl TopicMeta {
    /// What `encode` needs to round-trip: a legal Kafka topic name, and no
    /// line breaks or `=` in config keys, no line breaks in values.
    pub fn check(&self) -> Result<(), String> {
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.name.is_empty() || self.name.len() > 249 || self.name == "." || self.name == ".." || !self.name.chars().all(legal) {
            return Err(format!("illegal topic name {:?}", self.name));
        }
        for (k, v) in &self.configs {
            if k.contains(['\n', '\r', '=']) || v.contains(['\n', '\r']) {
                return Err(format!("config {k:?} cannot be stored (line break or '=')"));
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> String {
        let mut s = format!("version={VERSION}\nname={}\nid=", self.name);
        for b in self.id {
            s.push_str(&format!("{b:02x}"));
        }
        s.push_str(&format!("\npartitions={}\n", self.partitions));
        for (k, v) in &self.configs {
            s.push_str(&format!("config.{k}={v}\n"));
        }
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&format!("crc32={crc:08x}\n"));
        s
    }

    pub fn decode(text: &str) -> Result<TopicMeta, String> {
        let body_end = text.rfind("crc32=").ok_or("no crc32 line")?;
        let (body, crc_line) = text.split_at(body_end);
        let crc = u32::from_str_radix(crc_line.trim_end().trim_start_matches("crc32="), 16).map_err(|_| "unreadable crc32 line")?;
        if crc32fast::hash(body.as_bytes()) != crc {
            return Err("checksum mismatch".into());
        }
        let (mut name, mut id, mut partitions, mut version) = (None, None, None, None);
        let mut configs = BTreeMap::new();
        for line in body.lines() {
            let (k, v) = line.split_once('=').ok_or_else(|| format!("line without '=': {line:?}"))?;
            match k {
                "version" => version = v.parse::<u32>().ok(),
                "name" => name = Some(v.to_string()),
                "id" => id = parse_id(v),
                "partitions" => partitions = v.parse::<u32>().ok(),
                _ => match k.strip_prefix("config.") {
                    Some(key) => {
                        configs.insert(key.to_string(), v.to_string());
                    }
                    None => return Err(format!("unknown key {k:?}")),
                },
            }
        }
        if version != Some(VERSION) {
            return Err(format!("unsupported version {version:?}"));
        }
        Ok(TopicMeta {
            name: name.ok_or("no name")?,
            id: id.ok_or("missing or malformed id")?,
            partitions: partitions.ok_or("missing or malformed partitions")?,
            configs,
        })
    }

    /// Writes atomically and durably into the data directory.
    pub fn write(&self, data_dir: &Path) -> io::Result<()> {
        super::checkpoint::write_atomically(&path(data_dir, &self.name), self.encode().as_bytes())
    }
}

fn parse_id(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detected() {
        let t = TopicMeta {
            name: "orders.eu-1".into(),
            id: [7; 16],
            partitions: 6,
            configs: [("retention.ms".to_string(), "1000".to_string()), ("cleanup.policy".into(), "compact,delete".into())].into(),
        };
        let text = t.encode();
        assert_eq!(TopicMeta::decode(&text), Ok(t.clone()));
        let damaged = text.replace("partitions=6", "partitions=7");
        assert_eq!(TopicMeta::decode(&damaged), Err("checksum mismatch".into()));
        assert!(TopicMeta::decode(&text[..text.len() / 2]).is_err());
        let dir = tempfile::tempdir().unwrap();
        t.write(dir.path()).unwrap();
        let back = std::fs::read_to_string(path(dir.path(), "orders.eu-1")).unwrap();
        assert_eq!(TopicMeta::decode(&back), Ok(t));
    }
}
