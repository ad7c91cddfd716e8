//! The data directory: every partition's log, the directory lock, and the
//! clean-shutdown marker.
//!
//! Layout: `<data_dir>/<topic>-<partition>/` per partition, `<topic>.topic`
//! per topic (see `topic.rs`), `.lock` (held with `flock` while a process
//! uses the directory) and `.clean_shutdown` (present only between a clean
//! stop and the next start).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use super::checkpoint::sync_dir;
use super::cleaner::{Cleaner, CleanerConfig, CleanerTotals, SharedLogs};
use super::topic::{self, TopicMeta};
use super::{now_ms, Log, LogConfig, LogError};

const LOCK_FILE: &str = ".lock";
const CLEAN_SHUTDOWN: &str = ".clean_shutdown";
/// Suffix of a partition directory being deleted.
const DELETE_SUFFIX: &str = ".delete";

pub type PartitionKey = (String, u32);

pub struct LogManager {
    data_dir: PathBuf,
    _lock: File,
    logs: SharedLogs,
    cleaner: parking_lot::Mutex<Option<Cleaner>>,
    topics: RwLock<std::collections::BTreeMap<String, TopicMeta>>,
    default_config: LogConfig,
    checkpoint_interval_ms: i64,
    last_checkpoint_ms: parking_lot::Mutex<i64>,
}

/// Splits a partition directory name `<topic>-<partition>`.
pub fn parse_partition_dir(name: &str) -> Option<PartitionKey> {
    let (topic, p) = name.rsplit_once('-')?;
    if topic.is_empty() || p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_string(), p.parse().ok()?))
}

/// Raises the soft open-files limit to the hard limit: every segment keeps
/// its log file open, so many partitions need many descriptors.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: plain libc calls on a stack struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

impl LogManager {
    /// Opens (creating if needed) a data directory and every partition log in
    /// it. Fails if another process holds the directory.
    pub fn open(data_dir: &Path, default_config: LogConfig) -> Result<LogManager, LogError> {
        std::fs::create_dir_all(data_dir)?;
        let lock = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(data_dir.join(LOCK_FILE))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(LogError::Io(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("data directory {} is in use by another process", data_dir.display()),
            )));
        }
        let limit = raise_fd_limit();
        let marker = data_dir.join(CLEAN_SHUTDOWN);
        let clean = marker.exists();

        let mut dirs = Vec::new();
        let mut topics = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(data_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_dir() {
                if name.ends_with(".topic.tmp") {
                    std::fs::remove_file(entry.path())?;
                } else if name.ends_with(topic::SUFFIX) {
                    let text = std::fs::read_to_string(entry.path())?;
                    let meta = TopicMeta::decode(&text)
                        .and_then(|m| match name.strip_suffix(topic::SUFFIX) == Some(m.name.as_str()) {
                            true => Ok(m),
                            false => Err(format!("names topic {:?}, not the one in its file name", m.name)),
                        })
                        .map_err(|reason| LogError::BadTopicMeta { path: entry.path(), reason })?;
                    topics.insert(meta.name.clone(), meta);
                }
                continue;
            }
            if name.ends_with(DELETE_SUFFIX) {
                std::fs::remove_dir_all(entry.path())?;
                continue;
            }
            if let Some(key) = parse_partition_dir(&name) {
                dirs.push((key, entry.path()));
            }
        }
        let started = std::time::Instant::now();
        // Each partition opens with its topic's overrides, when the topic
        // has metadata (logs made directly, as in tests, use the default).
        let mut configs = HashMap::new();
        for meta in topics.values() {
            let c = default_config
                .with_overrides(&meta.configs)
                .map_err(|reason| LogError::BadTopicMeta { path: topic::path(data_dir, &meta.name), reason })?;
            configs.insert(meta.name.clone(), c);
        }
        let dirs: Vec<_> = dirs
            .into_iter()
            .map(|(key, dir)| {
                let c = configs.get(&key.0).cloned().unwrap_or_else(|| default_config.clone());
                (key, dir, c)
            })
            .collect();
        let logs = open_parallel(dirs, clean)?;
        let recovered = logs.values().filter(|l| l.was_recovered()).count();
        tracing::info!(
            data_dir = %data_dir.display(),
            partitions = logs.len(),
            recovered,
            clean_shutdown = clean,
            fd_limit = limit,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "opened the data directory"
        );
        // From here on the directory is in use: a crash must not look clean.
        if clean {
            std::fs::remove_file(&marker)?;
        }
        sync_dir(data_dir)?;
        Ok(LogManager {
            data_dir: data_dir.to_path_buf(),
            _lock: lock,
            logs: Arc::new(RwLock::new(logs)),
            cleaner: parking_lot::Mutex::new(None),
            topics: RwLock::new(topics),
            default_config,
            checkpoint_interval_ms: 60_000,
            last_checkpoint_ms: parking_lot::Mutex::new(now_ms()),
        })
    }

    /// Starts the background cleaner of compacted logs (if enabled).
    pub fn start_cleaner(&self, config: CleanerConfig) -> Result<(), LogError> {
        let mut slot = self.cleaner.lock();
        if config.enabled && slot.is_none() {
            *slot = Some(Cleaner::start(Arc::clone(&self.logs), config)?);
        }
        Ok(())
    }

    /// Asks the cleaner to look for work now.
    pub fn wake_cleaner(&self) {
        if let Some(c) = &*self.cleaner.lock() {
            c.wake();
        }
    }

    /// The cleaner's totals since start, if it runs.
    pub fn cleaner_totals(&self) -> Option<Arc<CleanerTotals>> {
        self.cleaner.lock().as_ref().map(|c| Arc::clone(&c.totals))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn default_config(&self) -> &LogConfig {
        &self.default_config
    }

    pub fn get(&self, topic: &str, partition: u32) -> Option<Arc<Log>> {
        self.logs.read().get(&(topic.to_string(), partition)).cloned()
    }

    pub fn partitions(&self) -> Vec<PartitionKey> {
        let mut v: Vec<_> = self.logs.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Returns the log of a partition, creating it with `config` if new.
    pub fn get_or_create(&self, topic: &str, partition: u32, config: LogConfig) -> Result<Arc<Log>, LogError> {
        if let Some(log) = self.get(topic, partition) {
            return Ok(log);
        }
        let mut logs = self.logs.write();
        let key = (topic.to_string(), partition);
        if let Some(log) = logs.get(&key) {
            return Ok(Arc::clone(log));
        }
        let log = Arc::new(Log::open(&self.data_dir.join(format!("{topic}-{partition}")), config, false)?);
        logs.insert(key, Arc::clone(&log));
        Ok(log)
    }

    /// Removes a partition: closes its log and deletes its directory
    /// (renamed aside first, so a crash mid-delete leaves no half log).
    pub fn delete(&self, topic: &str, partition: u32) -> Result<bool, LogError> {
        let Some(log) = self.logs.write().remove(&(topic.to_string(), partition)) else { return Ok(false) };
        log.close()?;
        let dir = log.dir().to_path_buf();
        let aside = PathBuf::from(format!("{}{DELETE_SUFFIX}", dir.display()));
        if aside.exists() {
            std::fs::remove_dir_all(&aside)?;
        }
        std::fs::rename(&dir, &aside)?;
        sync_dir(&self.data_dir)?;
        std::fs::remove_dir_all(&aside)?;
        Ok(true)
    }

    /// Records a topic's metadata durably (create, or change of partitions
    /// or configs).
    pub fn put_topic(&self, meta: TopicMeta) -> Result<(), LogError> {
        if let Err(reason) = meta.check() {
            return Err(LogError::BadTopicMeta { path: topic::path(&self.data_dir, &meta.name), reason });
        }
        let mut topics = self.topics.write();
        meta.write(&self.data_dir)?;
        topics.insert(meta.name.clone(), meta);
        Ok(())
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.topics.read().get(name).cloned()
    }

    pub fn topics(&self) -> Vec<TopicMeta> {
        self.topics.read().values().cloned().collect()
    }

    /// Deletes a topic: every partition's log, then its metadata. A crash in
    /// between leaves the topic with fewer partition directories, never
    /// partition directories without a topic.
    pub fn delete_topic(&self, name: &str) -> Result<bool, LogError> {
        let Some(meta) = self.topic(name) else { return Ok(false) };
        for p in 0..meta.partitions {
            self.delete(name, p)?;
        }
        self.topics.write().remove(name);
        std::fs::remove_file(topic::path(&self.data_dir, name))?;
        sync_dir(&self.data_dir)?;
        Ok(true)
    }

    /// Periodic upkeep: `flush.ms`, retention, and the recovery-point
    /// checkpoint every minute. Errors are logged per partition; one bad
    /// partition does not stop the others.
    pub fn maintain(&self, now: i64) {
        let checkpoint = {
            let mut last = self.last_checkpoint_ms.lock();
            let due = now - *last >= self.checkpoint_interval_ms;
            if due {
                *last = now;
            }
            due
        };
        let logs: Vec<(PartitionKey, Arc<Log>)> = self.logs.read().iter().map(|(k, l)| (k.clone(), Arc::clone(l))).collect();
        for ((topic, partition), log) in logs {
            // A failed log refuses writes until a restart; its retention
            // still runs.
            if !log.is_failed() {
                if let Err(e) = log.tend_memory() {
                    tracing::error!(topic, partition, error = %e, "writing out a log failed");
                }
            }
            let result = log
                .flush_if_due(now)
                .and_then(|_| log.apply_retention(now))
                .and_then(|_| if checkpoint { log.checkpoint() } else { Ok(()) });
            if let Err(e) = result {
                tracing::error!(topic, partition, error = %e, "log maintenance failed");
            }
        }
    }

    /// Closes every log and records the clean shutdown.
    pub fn shutdown(&self) -> Result<(), LogError> {
        if let Some(c) = self.cleaner.lock().take() {
            c.stop();
        }
        let logs: Vec<Arc<Log>> = self.logs.read().values().cloned().collect();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        let chunk = logs.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = logs.chunks(chunk).map(|c| s.spawn(move || c.iter().try_for_each(|l| l.close()))).collect();
            handles.into_iter().try_for_each(|h| h.join().expect("close thread panicked"))
        })?;
        File::create(self.data_dir.join(CLEAN_SHUTDOWN))?.sync_all()?;
        sync_dir(&self.data_dir)?;
        tracing::info!(data_dir = %self.data_dir.display(), partitions = logs.len(), "closed the data directory cleanly");
        Ok(())
    }
}

fn open_parallel(dirs: Vec<(PartitionKey, PathBuf, LogConfig)>, clean: bool) -> Result<HashMap<PartitionKey, Arc<Log>>, LogError> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let chunk = dirs.len().div_ceil(threads).max(1);
    type Opened = Result<Vec<(PartitionKey, Arc<Log>)>, LogError>;
    let opened: Vec<Opened> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|(key, dir, config)| Ok((key.clone(), Arc::new(Log::open(dir, config.clone(), clean)?))))
                        .collect::<Result<Vec<_>, LogError>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("open thread panicked")).collect()
    });
    let mut logs = HashMap::new();
    for part in opened {
        logs.extend(part?);
    }
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dir_names() {
        assert_eq!(parse_partition_dir("orders-3"), Some(("orders".into(), 3)));
        assert_eq!(parse_partition_dir("a-b-c-10"), Some(("a-b-c".into(), 10)));
        assert_eq!(parse_partition_dir("orders"), None);
        assert_eq!(parse_partition_dir("orders-"), None);
        assert_eq!(parse_partition_dir("-1"), None);
        assert_eq!(parse_partition_dir("x-1a"), None);
    }
}
