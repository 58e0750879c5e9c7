//! Spin's key-value stores (`fermyon:spin/key-value@2.0.0`) as Spin 3.6 runs them: the
//! labelled stores of the runtime config's `[key_value_store.<label>]` tables (`type =
//! "spin"`: a SQLite file, or memory without a path; `type = "redis"`: a Redis server),
//! the `default` store every app has (`<state dir>/sqlite_key_value.db`, in memory without
//! a state dir), and each instance's table of open stores with Spin's checks: a label the
//! component does not list is `access-denied`, more than 256 open is `store-table-full`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;

use crate::handles::Handles;

/// The label of the store every app has.
pub const DEFAULT_LABEL: &str = "default";
/// The default store's file name in the state folder, as Spin's.
pub const DEFAULT_FILE: &str = "sqlite_key_value.db";
/// The most bytes one call may hand back, as Spin's host buffer limit.
pub const MAX_RESULT_BYTES: usize = 128 << 20;

/// Why a key-value call failed: the cases of the interface's `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The instance holds too many open stores.
    #[error("too many stores are open")]
    StoreTableFull,
    /// No store has the label.
    #[error("no such store")]
    NoSuchStore,
    /// The component's `key_value_stores` does not list the label.
    #[error("access denied")]
    AccessDenied,
    /// The backend failed.
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> KvError {
    KvError::Other(e.to_string())
}

/// One `[key_value_store.<label>]` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// `type = "spin"`: SQLite at `path` (relative to the runtime config file's folder),
    /// or in memory without one.
    Spin {
        /// `path`: the database file.
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// `type = "redis"`: the Redis server at `url` (`redis://host:port`).
    Redis {
        /// `url`: the server.
        url: String,
    },
}

/// Every store the app may open, by label.
pub struct KeyValueStores {
    stores: HashMap<String, Arc<Backend>>,
}

impl std::fmt::Debug for KeyValueStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.stores.iter().map(|(k, v)| (k, v.summary()))).finish()
    }
}

impl Default for KeyValueStores {
    /// Only the `default` store, in memory.
    fn default() -> Self {
        Self::in_memory()
    }
}

impl KeyValueStores {
    /// Only the `default` store, in memory (an app run without a state folder).
    pub fn in_memory() -> Self {
        let mut stores = HashMap::new();
        stores.insert(DEFAULT_LABEL.to_string(), Arc::new(Backend::sqlite(DEFAULT_LABEL, None)));
        Self { stores }
    }

    /// The configured stores (relative `spin` paths taken from `base`), plus `default` at
    /// `default_path` (memory when `None`) unless the configuration names one.
    pub fn new(configs: &[(String, StoreConfig)], base: &std::path::Path, default_path: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut stores = HashMap::new();
        for (label, config) in configs {
            let backend = match config {
                StoreConfig::Spin { path } => {
                    let path = path.as_ref().map(|p| base.join(p));
                    Backend::sqlite(label, path)
                }
                StoreConfig::Redis { url } => {
                    let client = redis::Client::open(url.as_str())
                        .with_context(|| format!("[key_value_store.{label}]: the url is not a Redis URL (redis://host:port)"))?;
                    // Only host and port are ever shown: the URL may hold a password.
                    let addr = client.get_connection_info().addr().to_string();
                    Backend::Redis { url: addr, client, conn: tokio::sync::OnceCell::new() }
                }
            };
            stores.insert(label.clone(), Arc::new(backend));
        }
        stores.entry(DEFAULT_LABEL.to_string()).or_insert_with(|| Arc::new(Backend::sqlite(DEFAULT_LABEL, default_path)));
        for backend in stores.values() {
            if let Backend::Sqlite { path: Some(path), .. } = &**backend
                && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create the key-value store's folder {}", parent.display()))?;
            }
        }
        Ok(Self { stores })
    }

    /// Whether a store has this label.
    pub fn is_defined(&self, label: &str) -> bool {
        self.stores.contains_key(label)
    }

    /// Where a store keeps its data, for the start-up summary.
    pub fn summary(&self, label: &str) -> Option<String> {
        self.stores.get(label).map(|b| b.summary())
    }

    /// Sets `key` in the store `label` (`--key-value` at start).
    pub async fn set(&self, label: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let store = self.stores.get(label).ok_or(KvError::NoSuchStore)?;
        store.set(key, value).await
    }

    fn get(&self, label: &str) -> Option<Arc<Backend>> {
        self.stores.get(label).cloned()
    }
}

/// A store's backend.
#[allow(clippy::large_enum_variant, reason = "one per label, behind an Arc")]
enum Backend {
    /// Spin's SQLite store: one table shared by every label in the file, rows keyed by
    /// (store label, key); the connection is opened on first use.
    Sqlite { label: String, path: Option<PathBuf>, conn: OnceLock<Arc<Mutex<rusqlite::Connection>>> },
    /// A Redis server; the keys are the server's keys, unprefixed, as Spin's. `url` is its
    /// address for messages (no credentials).
    Redis { url: String, client: redis::Client, conn: tokio::sync::OnceCell<redis::aio::ConnectionManager> },
}

impl Backend {
    fn sqlite(label: &str, path: Option<PathBuf>) -> Self {
        Backend::Sqlite { label: label.to_string(), path, conn: OnceLock::new() }
    }

    fn summary(&self) -> String {
        match self {
            Backend::Sqlite { path: Some(p), .. } => format!("\"{}\"", p.display()),
            Backend::Sqlite { path: None, .. } => "a temporary in-memory store".into(),
            Backend::Redis { url, .. } => format!("Redis at {url}"),
        }
    }

    /// Runs `f` on the SQLite connection, off the async threads.
    async fn with_sqlite<R: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection, &str) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, KvError> {
        let Backend::Sqlite { label, path, conn } = self else {
            return Err(KvError::Other("internal error: not a SQLite store".into()));
        };
        let conn = match conn.get() {
            Some(c) => c.clone(),
            None => {
                let path = path.clone();
                let fresh = tokio::task::spawn_blocking(move || open_sqlite(path.as_deref())).await.map_err(other)??;
                conn.get_or_init(|| fresh).clone()
            }
        };
        let label = label.clone();
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().map_err(|_| KvError::Other("the store's connection was poisoned by an earlier failure".into()))?;
            f(&c, &label).map_err(other)
        })
        .await
        .map_err(other)?
    }

    /// As [`Backend::with_sqlite`], inside one transaction (committed when `f` answers
    /// `Ok(Ok(_))`).
    async fn with_sqlite_tx<R: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &str) -> rusqlite::Result<Result<R, KvError>> + Send + 'static,
    ) -> Result<Result<R, KvError>, KvError> {
        self.with_sqlite(move |c, label| {
            let tx = c.unchecked_transaction()?;
            let out = f(&tx, label)?;
            if out.is_ok() {
                tx.commit()?;
            }
            Ok(out)
        })
        .await
    }

    async fn redis(&self) -> Result<redis::aio::ConnectionManager, KvError> {
        let Backend::Redis { client, conn, url } = self else {
            return Err(KvError::Other("internal error: not a Redis store".into()));
        };
        conn.get_or_try_init(|| async {
            redis::aio::ConnectionManager::new(client.clone())
                .await
                .map_err(|e| KvError::Other(format!("cannot connect to Redis at {url}: {e}")))
        })
        .await
        .cloned()
    }

    /// Checks the backend can be reached when a guest opens it.
    async fn after_open(&self) -> Result<(), KvError> {
        match self {
            Backend::Redis { .. } => self.redis().await.map(drop),
            Backend::Sqlite { .. } => self.with_sqlite(|_, _| Ok(())).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let value = match self {
            Backend::Sqlite { .. } => {
                let key = key.to_string();
                self.with_sqlite(move |c, label| {
                    let mut s = c.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?;
                    let mut rows = s.query_map(rusqlite::params![label, key], |r| r.get::<_, Vec<u8>>(0))?;
                    rows.next().transpose()
                })
                .await?
            }
            Backend::Redis { .. } => redis::AsyncCommands::get(&mut self.redis().await?, key).await.map_err(other)?,
        };
        if value.as_ref().is_some_and(|v| v.len() > MAX_RESULT_BYTES) {
            return Err(KvError::Other(format!("the value of {key:?} is larger than the {MAX_RESULT_BYTES} bytes a call may return")));
        }
        Ok(value)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        match self {
            Backend::Sqlite { .. } => {
                let (key, value) = (key.to_string(), value.to_vec());
                self.with_sqlite(move |c, label| {
                    c.prepare_cached(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(rusqlite::params![label, key, value])
                    .map(drop)
                })
                .await
            }
            Backend::Redis { .. } => redis::AsyncCommands::set(&mut self.redis().await?, key, value).await.map_err(other),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        match self {
            Backend::Sqlite { .. } => {
                let key = key.to_string();
                self.with_sqlite(move |c, label| {
                    c.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                        .execute(rusqlite::params![label, key])
                        .map(drop)
                })
                .await
            }
            Backend::Redis { .. } => redis::AsyncCommands::del(&mut self.redis().await?, key).await.map_err(other),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        match self {
            Backend::Sqlite { .. } => Ok(self.get(key).await?.is_some()),
            Backend::Redis { .. } => redis::AsyncCommands::exists(&mut self.redis().await?, key).await.map_err(other),
        }
    }

    /// Adds `delta` to the key's integer, as Spin's: 8 little-endian bytes in a SQLite
    /// store (absent = 0), Redis' INCRBY in a Redis one.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        match self {
            Backend::Sqlite { .. } => {
                let key = key.to_string();
                self.with_sqlite_tx(move |tx, label| {
                    let old: Option<Vec<u8>> = tx
                        .prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                        .query_map(rusqlite::params![label, key], |r| r.get(0))?
                        .next()
                        .transpose()?;
                    let n = match old {
                        None => 0,
                        Some(v) => match <[u8; 8]>::try_from(v.as_slice()) {
                            Ok(b) => i64::from_le_bytes(b),
                            Err(_) => return Ok(Err(KvError::Other(format!("the value of {key:?} is not a 64-bit integer")))),
                        },
                    };
                    let Some(new) = n.checked_add(delta) else {
                        return Ok(Err(KvError::Other(format!("incrementing {key:?} by {delta} overflows"))));
                    };
                    tx.prepare_cached(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(rusqlite::params![label, key, new.to_le_bytes().to_vec()])?;
                    Ok(Ok(new))
                })
                .await?
            }
            Backend::Redis { .. } => redis::AsyncCommands::incr(&mut self.redis().await?, key, delta).await.map_err(other),
        }
    }

    /// Writes `new` if the key still holds `old` (`None`: if it is still absent);
    /// whether it did.
    async fn compare_and_swap(&self, key: &str, old: Option<Vec<u8>>, new: Vec<u8>) -> Result<bool, KvError> {
        match self {
            Backend::Sqlite { .. } => {
                let key = key.to_string();
                self.with_sqlite(move |c, label| {
                    let rows = match old {
                        Some(old) => c
                            .prepare_cached("UPDATE spin_key_value SET value = ?4 WHERE store = ?1 AND key = ?2 AND value = ?3")?
                            .execute(rusqlite::params![label, key, old, new])?,
                        None => c
                            .prepare_cached(
                                "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (store, key) DO NOTHING",
                            )?
                            .execute(rusqlite::params![label, key, new])?,
                    };
                    Ok(rows == 1)
                })
                .await
            }
            Backend::Redis { .. } => {
                // One atomic step on the server (WATCH needs a connection of its own).
                let script = redis::Script::new(
                    "local cur = redis.call('GET', KEYS[1]) \
                     if (ARGV[1] == '0' and cur == false) or (ARGV[1] == '1' and cur == ARGV[2]) then \
                       redis.call('SET', KEYS[1], ARGV[3]) return 1 else return 0 end",
                );
                let (has_old, old) = match old {
                    Some(v) => ("1", v),
                    None => ("0", Vec::new()),
                };
                let done: i64 =
                    script.key(key).arg(has_old).arg(old).arg(new).invoke_async(&mut self.redis().await?).await.map_err(other)?;
                Ok(done == 1)
            }
        }
    }

    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        let keys: Vec<String> = match self {
            Backend::Sqlite { .. } => {
                self.with_sqlite(|c, label| {
                    let mut s = c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?;
                    let keys = s.query_map([label], |r| r.get::<_, String>(0))?;
                    keys.collect()
                })
                .await?
            }
            Backend::Redis { .. } => redis::AsyncCommands::keys(&mut self.redis().await?, "*").await.map_err(other)?,
        };
        let size: usize = keys.iter().map(|k| k.len() + std::mem::size_of::<String>()).sum();
        if size > MAX_RESULT_BYTES {
            return Err(KvError::Other(format!("the store's keys are larger than the {MAX_RESULT_BYTES} bytes a call may return")));
        }
        Ok(keys)
    }
}

fn open_sqlite(path: Option<&std::path::Path>) -> Result<Arc<Mutex<rusqlite::Connection>>, KvError> {
    let c = match path {
        Some(p) => rusqlite::Connection::open(p).map_err(|e| KvError::Other(format!("cannot open {}: {e}", p.display())))?,
        None => rusqlite::Connection::open_in_memory().map_err(other)?,
    };
    c.execute(
        "CREATE TABLE IF NOT EXISTS spin_key_value (
             store TEXT NOT NULL,
             key   TEXT NOT NULL,
             value BLOB NOT NULL,
             PRIMARY KEY (store, key)
         )",
        [],
    )
    .map_err(other)?;
    Ok(Arc::new(Mutex::new(c)))
}

/// One instance's view: the labels its component may open, the stores it has open (a
/// `fermyon:spin/key-value` store and a `wasi:keyvalue` bucket alike) and its
/// compare-and-swap handles.
pub struct KvInstance {
    allowed: Arc<HashSet<String>>,
    stores: Arc<KeyValueStores>,
    open: Handles<Arc<Backend>>,
    cas: Handles<Cas>,
}

/// A `wasi:keyvalue/atomics` cas: the bucket it was made on, its key, and the value
/// `current` last read (what a swap compares against).
struct Cas {
    bucket: u32,
    key: String,
    read: Option<Vec<u8>>,
}

/// Why a swap did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum SwapFailure {
    /// The store failed.
    Store(KvError),
    /// The value changed since it was read: a fresh cas on the current value.
    Changed(u32),
}

impl KvInstance {
    /// An instance of a component allowed the stores `allowed`.
    pub fn new(allowed: Arc<HashSet<String>>, stores: Arc<KeyValueStores>) -> Self {
        Self { allowed, stores, open: Handles::default(), cas: Handles::default() }
    }

    /// Opens `label`: the handle of the open store.
    pub async fn open(&mut self, label: &str) -> Result<u32, KvError> {
        if !self.allowed.contains(label) {
            return Err(KvError::AccessDenied);
        }
        let store = self.stores.get(label).ok_or(KvError::NoSuchStore)?;
        store.after_open().await?;
        self.open.insert(store).ok_or(KvError::StoreTableFull)
    }

    /// Closes a handle (the guest dropped it).
    pub fn close(&mut self, handle: u32) {
        self.open.remove(handle);
    }

    fn store(&self, handle: u32) -> anyhow::Result<Arc<Backend>> {
        self.open.get(handle).cloned().context("invalid key-value store handle")
    }

    /// The value of `key` in the open store `handle`. The outer error (a handle that was
    /// never opened) traps the guest, as Spin's.
    pub async fn get(&self, handle: u32, key: &str) -> anyhow::Result<Result<Option<Vec<u8>>, KvError>> {
        Ok(self.store(handle)?.get(key).await)
    }

    /// Sets `key`.
    pub async fn set(&self, handle: u32, key: &str, value: &[u8]) -> anyhow::Result<Result<(), KvError>> {
        Ok(self.store(handle)?.set(key, value).await)
    }

    /// Deletes `key`.
    pub async fn delete(&self, handle: u32, key: &str) -> anyhow::Result<Result<(), KvError>> {
        Ok(self.store(handle)?.delete(key).await)
    }

    /// Whether `key` is set.
    pub async fn exists(&self, handle: u32, key: &str) -> anyhow::Result<Result<bool, KvError>> {
        Ok(self.store(handle)?.exists(key).await)
    }

    /// Every key of the store.
    pub async fn get_keys(&self, handle: u32) -> anyhow::Result<Result<Vec<String>, KvError>> {
        Ok(self.store(handle)?.get_keys().await)
    }

    /// Adds `delta` to the key's integer.
    pub async fn increment(&self, handle: u32, key: &str, delta: i64) -> anyhow::Result<Result<i64, KvError>> {
        Ok(self.store(handle)?.increment(key, delta).await)
    }

    /// A new cas on `key` of bucket `handle`: its handle.
    pub fn new_cas(&mut self, handle: u32, key: &str) -> anyhow::Result<Result<u32, KvError>> {
        self.store(handle)?;
        let cas = Cas { bucket: handle, key: key.to_string(), read: None };
        Ok(self.cas.insert(cas).ok_or_else(|| KvError::Other("too many compare_and_swaps opened".into())))
    }

    /// The cas's key's value now (what a swap will compare against).
    pub async fn cas_current(&mut self, cas: u32) -> anyhow::Result<Result<Option<Vec<u8>>, KvError>> {
        let (bucket, key) = match self.cas.get(cas) {
            Some(c) => (c.bucket, c.key.clone()),
            None => anyhow::bail!("invalid compare-and-swap handle"),
        };
        let value = match self.store(bucket)?.get(&key).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(c) = self.cas.get_mut(cas) {
            c.read.clone_from(&value);
        }
        Ok(Ok(value))
    }

    /// Writes `value` if the key still holds what the cas read; the cas is consumed.
    /// When the value changed, a fresh cas on it (already read) comes back.
    pub async fn swap(&mut self, cas: u32, value: Vec<u8>) -> anyhow::Result<Result<(), SwapFailure>> {
        let Some(c) = self.cas.remove(cas) else {
            anyhow::bail!("invalid compare-and-swap handle");
        };
        let store = self.store(c.bucket)?;
        match store.compare_and_swap(&c.key, c.read, value).await {
            Ok(true) => Ok(Ok(())),
            Ok(false) => {
                let fresh = match self.new_cas(c.bucket, &c.key)? {
                    Ok(h) => h,
                    Err(e) => return Ok(Err(SwapFailure::Store(e))),
                };
                if let Err(e) = self.cas_current(fresh).await? {
                    return Ok(Err(SwapFailure::Store(e)));
                }
                Ok(Err(SwapFailure::Changed(fresh)))
            }
            Err(e) => Ok(Err(SwapFailure::Store(e))),
        }
    }

    /// Drops a cas handle.
    pub fn close_cas(&mut self, cas: u32) {
        self.cas.remove(cas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(labels: &[&str]) -> Arc<HashSet<String>> {
        Arc::new(labels.iter().map(|s| s.to_string()).collect())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_store_keeps_values_per_label_and_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state").join(DEFAULT_FILE);
        let configs = vec![("other".to_string(), StoreConfig::Spin { path: Some("other.db".into()) })];
        let stores = Arc::new(KeyValueStores::new(&configs, dir.path(), Some(db.clone())).unwrap());
        let mut i = KvInstance::new(allowed(&["default", "other"]), stores.clone());
        let d = i.open("default").await.unwrap();
        let o = i.open("other").await.unwrap();
        i.set(d, "k", b"v1").await.unwrap().unwrap();
        i.set(d, "k", b"v2").await.unwrap().unwrap();
        assert_eq!(i.get(d, "k").await.unwrap().unwrap(), Some(b"v2".to_vec()));
        assert_eq!(i.get(o, "k").await.unwrap().unwrap(), None);
        assert!(i.exists(d, "k").await.unwrap().unwrap());
        assert_eq!(i.get_keys(d).await.unwrap().unwrap(), vec!["k".to_string()]);
        i.delete(d, "k").await.unwrap().unwrap();
        assert!(!i.exists(d, "k").await.unwrap().unwrap());
        i.set(d, "kept", b"1").await.unwrap().unwrap();
        assert!(db.exists(), "the default store is a file in the state folder");
        assert!(dir.path().join("other.db").exists(), "a relative path is taken from the config's folder");
        // A new manager on the same file (a restart) sees the value.
        let again = Arc::new(KeyValueStores::new(&[], dir.path(), Some(db)).unwrap());
        let mut j = KvInstance::new(allowed(&["default"]), again);
        let h = j.open("default").await.unwrap();
        assert_eq!(j.get(h, "kept").await.unwrap().unwrap(), Some(b"1".to_vec()));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn open_checks_the_component_list_the_labels_and_the_table_size() {
        let stores = Arc::new(KeyValueStores::in_memory());
        let mut i = KvInstance::new(allowed(&["default", "missing"]), stores.clone());
        assert_eq!(KvInstance::new(allowed(&[]), stores).open("default").await, Err(KvError::AccessDenied));
        assert_eq!(i.open("missing").await, Err(KvError::NoSuchStore));
        for _ in 0..crate::handles::CAPACITY {
            i.open("default").await.unwrap();
        }
        assert_eq!(i.open("default").await, Err(KvError::StoreTableFull));
        i.close(3);
        assert_eq!(i.open("default").await, Ok(3), "a closed slot is reused");
        assert!(i.get(9999, "k").await.is_err(), "an unknown handle is a trap, not an error value");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn increments_and_compare_and_swap() {
        let mut i = KvInstance::new(allowed(&["default"]), Arc::new(KeyValueStores::in_memory()));
        let b = i.open("default").await.unwrap();
        assert_eq!(i.increment(b, "n", 5).await.unwrap(), Ok(5));
        assert_eq!(i.increment(b, "n", -2).await.unwrap(), Ok(3));
        assert_eq!(i.get(b, "n").await.unwrap().unwrap(), Some(3i64.to_le_bytes().to_vec()));
        i.set(b, "s", b"text").await.unwrap().unwrap();
        assert!(i.increment(b, "s", 1).await.unwrap().is_err(), "not an integer");
        // A swap on an absent key creates it; a stale read fails with a fresh cas.
        let c = i.new_cas(b, "k").unwrap().unwrap();
        assert_eq!(i.cas_current(c).await.unwrap(), Ok(None));
        assert_eq!(i.swap(c, b"v1".to_vec()).await.unwrap(), Ok(()));
        let stale = i.new_cas(b, "k").unwrap().unwrap();
        assert_eq!(i.cas_current(stale).await.unwrap(), Ok(Some(b"v1".to_vec())));
        i.set(b, "k", b"v2").await.unwrap().unwrap();
        let Err(SwapFailure::Changed(fresh)) = i.swap(stale, b"v3".to_vec()).await.unwrap() else { panic!("the stale swap succeeded") };
        assert_eq!(i.swap(fresh, b"v3".to_vec()).await.unwrap(), Ok(()));
        assert_eq!(i.get(b, "k").await.unwrap().unwrap(), Some(b"v3".to_vec()));
        assert!(i.swap(stale, b"x".to_vec()).await.is_err(), "a consumed cas is a trap");
    }

    #[test]
    fn redis_urls_are_checked_at_start() {
        let bad = vec![("r".to_string(), StoreConfig::Redis { url: "not a url".into() })];
        let e = KeyValueStores::new(&bad, std::path::Path::new("."), None).unwrap_err().to_string();
        assert!(e.contains("[key_value_store.r]"), "{e}");
    }
}
