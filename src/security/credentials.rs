//! SCRAM credentials by user and mechanism, kept in
//! `<data_dir>/scram-credentials.json` (storage-format.md, "SCRAM
//! credentials"): salts, iteration counts and derived keys, never passwords.
//! A change is written to a temporary file, fsynced, renamed over the old
//! one and the directory fsynced before it takes effect in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::scram::{ScramCredential, MAX_ITERATIONS, MIN_ITERATIONS};
use super::Mechanism;

pub const FILE: &str = "scram-credentials.json";
/// PBKDF2 iterations of the bootstrap user's credentials (Kafka's default).
pub const BOOTSTRAP_ITERATIONS: u32 = 4096;

type Users = BTreeMap<String, BTreeMap<Mechanism, ScramCredential>>;

pub struct Credentials {
    path: PathBuf,
    users: RwLock<Users>,
    /// Serializes changes (read, write the file, publish).
    writing: Mutex<()>,
    /// Keys the salts shown for unknown users (`scram_lookup`), so that the
    /// same name gets the same salt for as long as the broker runs.
    mock_key: Vec<u8>,
}

/// One change of AlterUserScramCredentials.
pub enum Change {
    Upsert { user: String, mechanism: Mechanism, credential: ScramCredential },
    Delete { user: String, mechanism: Mechanism },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    users: BTreeMap<String, BTreeMap<String, StoredCredential>>,
    /// The key of unknown users' salts (`scram_lookup`), kept so that they
    /// stay the same across restarts as real users' salts do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mock_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredCredential {
    salt: String,
    iterations: u32,
    stored_key: String,
    server_key: String,
}

impl Credentials {
    /// Loads the credentials file of `data_dir` (none yet: no users); when
    /// there was no file and a bootstrap user is configured, creates its
    /// credentials for both SCRAM mechanisms. Only then: later changes come
    /// from AlterUserScramCredentials and are kept, a deleted bootstrap user
    /// included (it is not brought back by the next start).
    pub fn open(data_dir: &Path, bootstrap: Option<(&str, &str)>) -> std::io::Result<Credentials> {
        let path = data_dir.join(FILE);
        let (users, mock_key, first) = match super::read_json(&path)? {
            Some(file) => {
                let (users, mock_key) = decode(&path, file)?;
                (users, mock_key, false)
            }
            None => (Users::new(), None, true),
        };
        // A file from before the key was kept gets one with its next change.
        let mock_key = match mock_key {
            Some(k) => k,
            None => super::random_bytes(32)?,
        };
        let store = Credentials { path, users: RwLock::new(users), writing: Mutex::new(()), mock_key };
        if let Some((user, password)) = bootstrap {
            if !first && !store.users.read().contains_key(user) {
                tracing::warn!(user, path = %store.path.display(), "the bootstrap user is not created: the credentials file already exists (create users with AlterUserScramCredentials)");
            } else if first {
                let mut changes = Vec::new();
                for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
                    let credential = ScramCredential::new(mechanism, password, BOOTSTRAP_ITERATIONS)?;
                    changes.push(Change::Upsert { user: user.to_string(), mechanism, credential });
                }
                store.apply(changes)?;
                tracing::info!(user, "created the SCRAM credentials of the bootstrap user");
            }
        }
        Ok(store)
    }

    pub fn get(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        self.users.read().get(user)?.get(&mechanism).cloned()
    }

    /// A SCRAM exchange's lookup: the user's credential, or for a user
    /// without one a salt that stays the same for that name.
    pub fn scram_lookup(&self, user: &str, mechanism: Mechanism) -> Result<ScramCredential, Vec<u8>> {
        self.get(user, mechanism).ok_or_else(|| {
            let mut salt = super::scram::hmac(Mechanism::ScramSha256, &self.mock_key, user.as_bytes());
            salt[0] ^= mechanism.scram_code() as u8;
            salt
        })
    }

    /// A user's mechanisms and iteration counts, or None for an unknown user.
    pub fn describe(&self, user: &str) -> Option<Vec<(Mechanism, u32)>> {
        let users = self.users.read();
        let u = users.get(user)?;
        Some(u.iter().map(|(m, c)| (*m, c.iterations)).collect())
    }

    /// Every user with a credential.
    pub fn users(&self) -> Vec<String> {
        self.users.read().keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.users.read().is_empty()
    }

    /// Applies changes all together: durably on disk, then in memory.
    /// The caller has checked each one (`check_upsert`, existence).
    pub fn apply(&self, changes: Vec<Change>) -> std::io::Result<()> {
        let _writing = self.writing.lock();
        let mut next = self.users.read().clone();
        for c in changes {
            match c {
                Change::Upsert { user, mechanism, credential } => {
                    next.entry(user).or_default().insert(mechanism, credential);
                }
                Change::Delete { user, mechanism } => {
                    if let Some(u) = next.get_mut(&user) {
                        u.remove(&mechanism);
                        if u.is_empty() {
                            next.remove(&user);
                        }
                    }
                }
            }
        }
        self.write(&next)?;
        *self.users.write() = next;
        Ok(())
    }

    fn write(&self, users: &Users) -> std::io::Result<()> {
        let file = FileFormat {
            version: 1,
            users: users
                .iter()
                .map(|(u, ms)| {
                    let ms = ms
                        .iter()
                        .map(|(m, c)| (m.name().to_string(), StoredCredential { salt: B64.encode(&c.salt), iterations: c.iterations, stored_key: B64.encode(&c.stored_key), server_key: B64.encode(&c.server_key) }))
                        .collect();
                    (u.clone(), ms)
                })
                .collect(),
            mock_key: Some(B64.encode(&self.mock_key)),
        };
        super::write_json(&self.path, &file)
    }
}

/// The users of a credentials file, and its mock key if it has one.
fn decode(path: &Path, file: FileFormat) -> std::io::Result<(Users, Option<Vec<u8>>)> {
    let bad = super::bad_file;
    if file.version != 1 {
        return Err(bad(path, format!("unknown version {}", file.version)));
    }
    let mut users = Users::new();
    for (user, ms) in file.users {
        for (name, c) in ms {
            let mechanism = Mechanism::scram(&name).ok_or_else(|| bad(path, format!("user {user:?}: unknown mechanism {name:?}")))?;
            let b64 = |field: &str, v: &str| B64.decode(v).map_err(|_| bad(path, format!("user {user:?} {name}: {field} is not base64")));
            let credential = ScramCredential { salt: b64("salt", &c.salt)?, iterations: c.iterations, stored_key: b64("stored_key", &c.stored_key)?, server_key: b64("server_key", &c.server_key)? };
            if credential.stored_key.len() != mechanism.hash_len() || credential.server_key.len() != mechanism.hash_len() {
                return Err(bad(path, format!("user {user:?} {name}: keys of the wrong length")));
            }
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&credential.iterations) || credential.salt.is_empty() {
                return Err(bad(path, format!("user {user:?} {name}: {} iterations and a salt of {} bytes (iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}, the salt not empty)", credential.iterations, credential.salt.len())));
            }
            users.entry(user.clone()).or_default().insert(mechanism, credential);
        }
    }
    let mock_key = match file.mock_key {
        Some(k) => Some(B64.decode(&k).ok().filter(|k| k.len() >= 16).ok_or_else(|| bad(path, "mock_key is not base64 of at least 16 bytes".into()))?),
        None => None,
    };
    Ok((users, mock_key))
}

/// Why an upsertion is unacceptable (Kafka's UNACCEPTABLE_CREDENTIAL), if it is.
pub fn check_upsert(user: &str, mechanism: Mechanism, iterations: i32, salt: &[u8], salted_password: &[u8]) -> Result<(), String> {
    if user.is_empty() {
        return Err("the user name must not be empty".into());
    }
    if iterations < MIN_ITERATIONS as i32 || iterations > MAX_ITERATIONS as i32 {
        return Err(format!("iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}, not {iterations}"));
    }
    if salt.is_empty() {
        return Err("the salt must not be empty".into());
    }
    if salted_password.len() != mechanism.hash_len() {
        return Err(format!("a salted password for {} must be {} bytes, not {}", mechanism.name(), mechanism.hash_len(), salted_password.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_once_then_changes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Credentials::open(dir.path(), Some(("admin", "first"))).unwrap();
        let c = store.get("admin", Mechanism::ScramSha512).unwrap();
        assert!(c.matches_password(Mechanism::ScramSha512, "first"));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains("first"), "a password reached the disk");
        let credential = ScramCredential::new(Mechanism::ScramSha256, "second", 4096).unwrap();
        store.apply(vec![Change::Upsert { user: "admin".into(), mechanism: Mechanism::ScramSha256, credential }]).unwrap();
        store.apply(vec![Change::Delete { user: "admin".into(), mechanism: Mechanism::ScramSha512 }]).unwrap();
        drop(store);
        // The config's password does not override a user that exists.
        let store = Credentials::open(dir.path(), Some(("admin", "first"))).unwrap();
        assert!(store.get("admin", Mechanism::ScramSha512).is_none());
        assert!(store.get("admin", Mechanism::ScramSha256).unwrap().matches_password(Mechanism::ScramSha256, "second"));
        // Nor brings back a bootstrap user who was deleted.
        store.apply(vec![Change::Delete { user: "admin".into(), mechanism: Mechanism::ScramSha256 }]).unwrap();
        drop(store);
        let store = Credentials::open(dir.path(), Some(("admin", "first"))).unwrap();
        assert!(store.get("admin", Mechanism::ScramSha256).is_none() && store.get("admin", Mechanism::ScramSha512).is_none());
        // An unknown user's salt is the same each time, and differs by mechanism.
        let mock = store.scram_lookup("nobody", Mechanism::ScramSha256).unwrap_err();
        assert_eq!(store.scram_lookup("nobody", Mechanism::ScramSha256).unwrap_err(), mock);
        assert_ne!(store.scram_lookup("nobody", Mechanism::ScramSha512).unwrap_err(), mock);
        assert_ne!(store.scram_lookup("somebody", Mechanism::ScramSha256).unwrap_err(), mock);
        // ...and across a restart, like a real user's.
        drop(store);
        let store = Credentials::open(dir.path(), None).unwrap();
        assert_eq!(store.scram_lookup("nobody", Mechanism::ScramSha256).unwrap_err(), mock);
        drop(store);
        // Iterations out of Kafka's range are refused at load.
        std::fs::write(dir.path().join(FILE), format!("{{\"version\":1,\"users\":{{\"x\":{{\"SCRAM-SHA-256\":{{\"salt\":\"AAAA\",\"iterations\":1,\"stored_key\":\"{k}\",\"server_key\":\"{k}\"}}}}}}}}", k = B64.encode([0u8; 32]))).unwrap();
        let e = Credentials::open(dir.path(), None).err().unwrap().to_string();
        assert!(e.contains("1 iterations"), "{e}");
        std::fs::write(dir.path().join(FILE), "{\"version\":1,\"users\":{\"x\":{\"SCRAM-SHA-1\":{}}}}").unwrap();
        assert!(Credentials::open(dir.path(), None).is_err());
    }
}
