//! Where the authorization server keeps its state: one small key-value interface
//! ([`Store`]) with expiring entries, an atomic take (single-use codes, refresh rotation) and
//! a capped insert (open registrations), behind which sit the file store here (the default:
//! one JSON file, rewritten atomically) and Redis (`redis_store`, with `--broker redis://`).
//!
//! Everything a caller can make the store hold is bounded: capped kinds by their cap, and
//! the file store in all by [`MAX_ENTRIES`] and [`MAX_FILE_BYTES`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::Error;

/// The most entries the file store keeps in all (past it, a write fails with 503).
pub const MAX_ENTRIES: usize = 200_000;
/// The largest state file the file store reads at start.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// What an entry is; each kind is a namespace of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A signing key, by its rotation slot.
    Key,
    /// A client registered by DCR, by its client id.
    Client,
    /// An authorization code, by its digest.
    Code,
    /// A code already exchanged, by its digest: a second exchange revokes what it gave.
    UsedCode,
    /// A refresh token, by its digest: its grant (kept after rotation, to spot reuse).
    Refresh,
    /// The refresh token of a family that may be used now, by its digest (taken on use).
    RefreshLive,
    /// A refresh family (one authorization and its rotations), by its id; gone = revoked.
    Family,
    /// A user's consent to a client for a pool, by user, client and resource.
    Consent,
    /// A browser's login, by the digest of its cookie.
    Login,
    /// A revoked access token, by its `jti`, until it expires.
    RevokedToken,
}

impl Kind {
    /// Its name in keys and in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Client => "client",
            Kind::Code => "code",
            Kind::UsedCode => "used_code",
            Kind::Refresh => "refresh",
            Kind::RefreshLive => "refresh_live",
            Kind::Family => "family",
            Kind::Consent => "consent",
            Kind::Login => "login",
            Kind::RevokedToken => "revoked_token",
        }
    }
}

/// How [`Store::put`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// Write, replacing what is there.
    Always,
    /// Write only when the key is absent (or expired).
    IfAbsent,
    /// Write unless this would make more than this many live entries of the kind (replacing
    /// an entry does not count).
    Capped(usize),
}

/// The authorization server's state. Every method is atomic on its own.
pub trait Store: Send + Sync {
    /// The value of `key`, if present and not expired.
    fn get<'a>(&'a self, kind: Kind, key: &'a str) -> BoxFuture<'a, Result<Option<String>, Error>>;
    /// Writes `value` for `ttl`; `Ok(false)` when `mode` refused it (present, or capped).
    fn put<'a>(
        &'a self,
        kind: Kind,
        key: &'a str,
        value: String,
        ttl: Duration,
        mode: Put,
    ) -> BoxFuture<'a, Result<bool, Error>>;
    /// Reads and deletes `key` at once: of two takers, one gets the value.
    fn take<'a>(&'a self, kind: Kind, key: &'a str)
        -> BoxFuture<'a, Result<Option<String>, Error>>;
    /// Deletes `key`.
    fn delete<'a>(&'a self, kind: Kind, key: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    /// Where the state lives, for the log.
    fn describe(&self) -> String;
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    kind: Kind,
    key: String,
    value: String,
    /// Seconds since the epoch.
    expires: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    entries: Vec<Entry>,
}

type Entries = BTreeMap<(Kind, String), (String, u64)>;

/// The file store: every entry in memory, the whole set rewritten to its file after each
/// change (a temporary file, then a rename, so a crash leaves the old file or the new one,
/// never half of one). Without a path it keeps memory only (tests, embedders).
pub struct FileStore {
    path: Option<PathBuf>,
    /// An async lock: held across the file write, so writes land in the order of changes.
    entries: tokio::sync::Mutex<Entries>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish()
    }
}

impl FileStore {
    /// A store in memory only.
    pub fn memory() -> Self {
        FileStore {
            path: None,
            entries: tokio::sync::Mutex::new(Entries::new()),
        }
    }

    /// The store in `path`, read now (a missing file is an empty store; an unreadable or
    /// malformed one is refused, so a bad file never silently logs everyone out).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::InvalidConfig {
            flag: "--oauth-state",
            reason: format!("{}: {reason}", path.display()),
        };
        let mut entries = Entries::new();
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bad(e.to_string())),
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                return Err(bad(format!("larger than {MAX_FILE_BYTES} bytes")))
            }
            Ok(_) => {
                let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
                let file: StateFile = serde_json::from_slice(&text)
                    .map_err(|e| bad(format!("not a state file: {e}")))?;
                let now = unix_now();
                for e in file.entries.into_iter().filter(|e| e.expires > now) {
                    entries.insert((e.kind, e.key), (e.value, e.expires));
                }
                info!(file = %path.display(), entries = entries.len(), "authorization server state loaded");
            }
        }
        Ok(FileStore {
            path: Some(path.to_owned()),
            entries: tokio::sync::Mutex::new(entries),
        })
    }

    /// Writes `entries` to the file (when there is one), dropping expired entries first.
    async fn persist(&self, entries: &mut Entries) -> Result<(), Error> {
        let now = unix_now();
        entries.retain(|_, (_, expires)| *expires > now);
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let file = StateFile {
            version: 1,
            entries: entries
                .iter()
                .map(|((kind, key), (value, expires))| Entry {
                    kind: *kind,
                    key: key.clone(),
                    value: value.clone(),
                    expires: *expires,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&file).expect("entries serialize");
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| Error::AuthState(e.to_string()))?
            .map_err(|e| Error::AuthState(format!("cannot write the state file: {e}")))
    }
}

/// Writes `bytes` to a temporary file beside `path` (readable by its owner only: it holds
/// signing keys), flushes it to disk, and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

fn live(entries: &Entries, kind: Kind, key: &str, now: u64) -> Option<String> {
    entries
        .get(&(kind, key.to_owned()))
        .filter(|(_, expires)| *expires > now)
        .map(|(value, _)| value.clone())
}

impl Store for FileStore {
    fn get<'a>(&'a self, kind: Kind, key: &'a str) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async move { Ok(live(&*self.entries.lock().await, kind, key, unix_now())) })
    }

    fn put<'a>(
        &'a self,
        kind: Kind,
        key: &'a str,
        value: String,
        ttl: Duration,
        mode: Put,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut entries = self.entries.lock().await;
            let now = unix_now();
            let present = live(&entries, kind, key, now).is_some();
            match mode {
                Put::Always => {}
                Put::IfAbsent if present => return Ok(false),
                Put::IfAbsent => {}
                Put::Capped(max) => {
                    let count = entries
                        .iter()
                        .filter(|((k, _), (_, exp))| *k == kind && *exp > now)
                        .count();
                    if !present && count >= max {
                        return Ok(false);
                    }
                }
            }
            if !present && entries.len() >= MAX_ENTRIES {
                entries.retain(|_, (_, expires)| *expires > now);
                if entries.len() >= MAX_ENTRIES {
                    return Err(Error::AuthState(format!(
                        "the state file holds {MAX_ENTRIES} entries"
                    )));
                }
            }
            let expires = now.saturating_add(ttl.as_secs().max(1));
            entries.insert((kind, key.to_owned()), (value, expires));
            self.persist(&mut entries).await?;
            Ok(true)
        })
    }

    fn take<'a>(
        &'a self,
        kind: Kind,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async move {
            let mut entries = self.entries.lock().await;
            let value = live(&entries, kind, key, unix_now());
            if entries.remove(&(kind, key.to_owned())).is_some() {
                self.persist(&mut entries).await?;
            }
            Ok(value)
        })
    }

    fn delete<'a>(&'a self, kind: Kind, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut entries = self.entries.lock().await;
            if entries.remove(&(kind, key.to_owned())).is_some() {
                self.persist(&mut entries).await?;
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("file {}", p.display()),
            None => "memory".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[tokio::test]
    async fn entries_survive_a_restart_and_take_is_single_use() {
        let dir = std::env::temp_dir().join(format!("mcp-proxy-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        let store = FileStore::open(&path).unwrap();
        assert!(store
            .put(Kind::Code, "c1", "grant".into(), DAY, Put::Always)
            .await
            .unwrap());
        assert!(!store
            .put(Kind::Code, "c1", "other".into(), DAY, Put::IfAbsent)
            .await
            .unwrap());
        store
            .put(Kind::Client, "a", "1".into(), DAY, Put::Capped(2))
            .await
            .unwrap();
        store
            .put(Kind::Client, "b", "1".into(), DAY, Put::Capped(2))
            .await
            .unwrap();
        assert!(!store
            .put(Kind::Client, "c", "1".into(), DAY, Put::Capped(2))
            .await
            .unwrap());
        assert!(
            store
                .put(Kind::Client, "a", "2".into(), DAY, Put::Capped(2))
                .await
                .unwrap(),
            "replacing does not count"
        );
        drop(store);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the file holds signing keys");
        }

        let store = FileStore::open(&path).unwrap();
        assert_eq!(
            store.get(Kind::Client, "a").await.unwrap().as_deref(),
            Some("2")
        );
        assert_eq!(
            store.take(Kind::Code, "c1").await.unwrap().as_deref(),
            Some("grant")
        );
        assert_eq!(store.take(Kind::Code, "c1").await.unwrap(), None);
        assert_eq!(store.get(Kind::Client, "c").await.unwrap(), None);
        store.delete(Kind::Client, "a").await.unwrap();
        drop(store);
        let store = FileStore::open(&path).unwrap();
        assert_eq!(store.get(Kind::Client, "a").await.unwrap(), None);
        assert_eq!(store.get(Kind::Code, "c1").await.unwrap(), None);

        std::fs::write(&path, b"not json").unwrap();
        assert!(FileStore::open(&path).is_err(), "a bad file is refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
