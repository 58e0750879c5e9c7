//! Spin's SQLite databases (`fermyon:spin/sqlite@2.0.0`, `spin:sqlite/sqlite@3.0.0`) as
//! Spin 3.6 runs them: the labelled databases of `[sqlite_database.<label>]` (`type =
//! "spin"`, a file path taken from the working folder, or memory without one), the
//! `default` database every app has (`<state dir>/sqlite_db.db`), a new connection per
//! `open` (so an in-memory database lives as long as its connection), `--sqlite`
//! statements at start, and each instance's table of connections (a label the component
//! does not list is `access-denied`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::handles::Handles;

/// The label of the database every app has.
pub const DEFAULT_LABEL: &str = "default";
/// The default database's file name in the state folder, as Spin's.
pub const DEFAULT_FILE: &str = "sqlite_db.db";

/// A SQLite value: the interface's `value`.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// An INTEGER.
    Integer(i64),
    /// A REAL.
    Real(f64),
    /// TEXT.
    Text(String),
    /// A BLOB.
    Blob(Vec<u8>),
    /// NULL.
    Null,
}

/// A statement's columns and rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each a value per column.
    pub rows: Vec<Vec<SqlValue>>,
}

/// Why a SQLite call failed: the interface's `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// No database has the label.
    #[error("no such database")]
    NoSuchDatabase,
    /// The component's `sqlite_databases` does not list the label.
    #[error("access denied")]
    AccessDenied,
    /// The connection handle is not open.
    #[error("invalid connection")]
    InvalidConnection,
    /// SQLite's error text, or the host's.
    #[error("{0}")]
    Io(String),
}

fn io(e: impl std::fmt::Display) -> SqlError {
    SqlError::Io(e.to_string())
}

/// One `[sqlite_database.<label>]` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatabaseConfig {
    /// `type = "spin"`: the file at `path` (relative to the working folder, as Spin's),
    /// or memory without one.
    Spin {
        /// `path`: the database file.
        #[serde(default)]
        path: Option<PathBuf>,
    },
}

/// Every database the app may open, by label: where each lives (`None`: memory).
#[derive(Debug, Clone)]
pub struct SqliteDatabases {
    databases: HashMap<String, Option<PathBuf>>,
}

impl Default for SqliteDatabases {
    /// Only the `default` database, in memory.
    fn default() -> Self {
        Self { databases: HashMap::from([(DEFAULT_LABEL.to_string(), None)]) }
    }
}

impl SqliteDatabases {
    /// The configured databases (relative paths from `cwd`), plus `default` at
    /// `default_path` unless the configuration names one. Folders are made here.
    pub fn new(configs: &[(String, DatabaseConfig)], cwd: &Path, default_path: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut databases: HashMap<String, Option<PathBuf>> =
            configs.iter().map(|(label, DatabaseConfig::Spin { path })| (label.clone(), path.as_ref().map(|p| cwd.join(p)))).collect();
        databases.entry(DEFAULT_LABEL.to_string()).or_insert(default_path);
        for path in databases.values().flatten() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create the SQLite database's folder {}", parent.display()))?;
            }
        }
        Ok(Self { databases })
    }

    /// Whether a database has this label.
    pub fn is_defined(&self, label: &str) -> bool {
        self.databases.contains_key(label)
    }

    /// Where a database keeps its data, for the start-up summary.
    pub fn summary(&self, label: &str) -> Option<String> {
        self.databases.get(label).map(|p| match p {
            Some(p) => format!("\"{}\"", p.display()),
            None => "a temporary in-memory database".into(),
        })
    }

    /// A new connection to `label`.
    async fn connect(&self, label: &str) -> Result<Connection, SqlError> {
        let path = self.databases.get(label).ok_or(SqlError::NoSuchDatabase)?.clone();
        let conn = tokio::task::spawn_blocking(move || match &path {
            Some(p) => rusqlite::Connection::open(p).map_err(|e| SqlError::Io(format!("cannot open {}: {e}", p.display()))),
            None => rusqlite::Connection::open_in_memory().map_err(io),
        })
        .await
        .map_err(io)??;
        Ok(Connection(Arc::new(Mutex::new(conn))))
    }

    /// Runs `--sqlite` values at start, as `spin up`: `@FILE` or `@FILE:LABEL` runs the
    /// file's statements against `default` or `LABEL`; anything else is one statement
    /// against `default`.
    pub async fn run_statements(&self, statements: &[String]) -> anyhow::Result<()> {
        for s in statements {
            match s.strip_prefix('@') {
                Some(spec) => {
                    let (file, label) = parse_file_and_label(spec)?;
                    anyhow::ensure!(
                        self.is_defined(label),
                        "--sqlite @{spec}: no database is labelled {label:?}; define it under [sqlite_database.{label}] in the runtime config"
                    );
                    let sql = std::fs::read_to_string(file).with_context(|| format!("--sqlite @{spec}: cannot read {file}"))?;
                    let conn = self.connect(label).await?;
                    conn.batch(sql)
                        .await
                        .with_context(|| format!("--sqlite @{spec}: the statements in {file} failed on database {label:?}"))?;
                }
                None => {
                    let conn = self.connect(DEFAULT_LABEL).await?;
                    conn.execute(s.clone(), Vec::new())
                        .await
                        .with_context(|| format!("--sqlite: the statement failed on the default database: {s}"))?;
                }
            }
        }
        Ok(())
    }
}

/// `FILE` or `FILE:LABEL` (an empty part is an error), as Spin reads `--sqlite @…`.
fn parse_file_and_label(spec: &str) -> anyhow::Result<(&str, &str)> {
    let spec = spec.trim();
    anyhow::ensure!(!spec.is_empty(), "--sqlite @: give a file, e.g. --sqlite @migration.sql");
    match spec.split_once(':') {
        Some((_, label)) if label.trim().is_empty() => anyhow::bail!("--sqlite @{spec}: the database label after ':' is empty"),
        Some((file, _)) if file.trim().is_empty() => anyhow::bail!("--sqlite @{spec}: the file before ':' is empty"),
        Some((file, label)) => Ok((file.trim(), label.trim())),
        None => Ok((spec, DEFAULT_LABEL)),
    }
}

/// One open connection.
#[derive(Clone)]
struct Connection(Arc<Mutex<rusqlite::Connection>>);

impl Connection {
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<R, SqlError> + Send + 'static,
    ) -> Result<R, SqlError> {
        let c = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let c = c.lock().map_err(|_| SqlError::Io("the connection was poisoned by an earlier failure".into()))?;
            f(&c)
        })
        .await
        .map_err(io)?
    }

    async fn execute(&self, statement: String, params: Vec<SqlValue>) -> Result<QueryResult, SqlError> {
        self.run(move |c| query(c, &statement, params)).await
    }

    async fn batch(&self, sql: String) -> Result<(), SqlError> {
        self.run(move |c| c.execute_batch(&sql).map_err(io)).await
    }
}

/// Runs one statement, collecting every row (bounded by the host's result limit).
fn query(c: &rusqlite::Connection, statement: &str, params: Vec<SqlValue>) -> Result<QueryResult, SqlError> {
    let mut s = c.prepare_cached(statement).map_err(io)?;
    let columns: Vec<String> = s.column_names().map(str::to_string).collect();
    let params = params.into_iter().map(|p| match p {
        SqlValue::Integer(i) => rusqlite::types::Value::Integer(i),
        SqlValue::Real(r) => rusqlite::types::Value::Real(r),
        SqlValue::Text(t) => rusqlite::types::Value::Text(t),
        SqlValue::Blob(b) => rusqlite::types::Value::Blob(b),
        SqlValue::Null => rusqlite::types::Value::Null,
    });
    let mut rows = s.query(rusqlite::params_from_iter(params)).map_err(io)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next().map_err(io)? {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let v = match row.get_ref(i).map_err(io)? {
                rusqlite::types::ValueRef::Null => SqlValue::Null,
                rusqlite::types::ValueRef::Integer(i) => SqlValue::Integer(i),
                rusqlite::types::ValueRef::Real(r) => SqlValue::Real(r),
                rusqlite::types::ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
                rusqlite::types::ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
            };
            bytes += std::mem::size_of::<SqlValue>()
                + match &v {
                    SqlValue::Text(t) => t.len(),
                    SqlValue::Blob(b) => b.len(),
                    _ => 0,
                };
            values.push(v);
        }
        if bytes > crate::key_value::MAX_RESULT_BYTES {
            return Err(SqlError::Io(format!("query result exceeds limit of {} bytes", crate::key_value::MAX_RESULT_BYTES)));
        }
        out.push(values);
    }
    Ok(QueryResult { columns, rows: out })
}

/// One instance's view: the labels its component may open and its open connections.
pub struct SqlInstance {
    allowed: Arc<HashSet<String>>,
    databases: Arc<SqliteDatabases>,
    open: Handles<Connection>,
}

impl SqlInstance {
    /// An instance of a component allowed the databases `allowed`.
    pub fn new(allowed: Arc<HashSet<String>>, databases: Arc<SqliteDatabases>) -> Self {
        Self { allowed, databases, open: Handles::default() }
    }

    /// Opens a new connection to `label`: its handle.
    pub async fn open(&mut self, label: &str) -> Result<u32, SqlError> {
        if !self.allowed.contains(label) {
            return Err(SqlError::AccessDenied);
        }
        let conn = self.databases.connect(label).await?;
        self.open.insert(conn).ok_or_else(|| SqlError::Io("too many connections opened".into()))
    }

    /// Closes a handle (the guest dropped it).
    pub fn close(&mut self, handle: u32) {
        self.open.remove(handle);
    }

    fn conn(&self, handle: u32) -> Result<Connection, SqlError> {
        self.open.get(handle).cloned().ok_or(SqlError::InvalidConnection)
    }

    /// Runs `statement` with positional `params` on connection `handle`.
    pub async fn execute(&self, handle: u32, statement: String, params: Vec<SqlValue>) -> Result<QueryResult, SqlError> {
        self.conn(handle)?.execute(statement, params).await
    }

    /// The row id of the connection's last INSERT.
    pub async fn last_insert_rowid(&self, handle: u32) -> Result<i64, SqlError> {
        self.conn(handle)?.run(|c| Ok(c.last_insert_rowid())).await
    }

    /// Rows changed by the connection's last statement.
    pub async fn changes(&self, handle: u32) -> Result<u64, SqlError> {
        self.conn(handle)?.run(|c| Ok(c.changes())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(labels: &[&str]) -> Arc<HashSet<String>> {
        Arc::new(labels.iter().map(|s| s.to_string()).collect())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn migration_then_queries_with_every_value_type() {
        let dir = tempfile::tempdir().unwrap();
        let dbs = Arc::new(SqliteDatabases::new(&[], dir.path(), Some(dir.path().join(".spin").join(DEFAULT_FILE))).unwrap());
        let migration = dir.path().join("migration.sql");
        std::fs::write(&migration, "CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n TEXT); CREATE INDEX ti ON t(i);").unwrap();
        dbs.run_statements(&[format!("@{}", migration.display()), "INSERT INTO t (i) VALUES (0)".into()]).await.unwrap();
        let mut i = SqlInstance::new(allowed(&["default"]), dbs.clone());
        let h = i.open("default").await.unwrap();
        let values =
            vec![SqlValue::Integer(-7), SqlValue::Real(1.5), SqlValue::Text("é".into()), SqlValue::Blob(vec![0, 255]), SqlValue::Null];
        i.execute(h, "INSERT INTO t VALUES (?, ?, ?, ?, ?)".into(), values.clone()).await.unwrap();
        assert_eq!(i.changes(h).await.unwrap(), 1);
        assert_eq!(i.last_insert_rowid(h).await.unwrap(), 2);
        let r = i.execute(h, "SELECT * FROM t WHERE i = ?".into(), vec![SqlValue::Integer(-7)]).await.unwrap();
        assert_eq!(r.columns, ["i", "r", "s", "b", "n"]);
        assert_eq!(r.rows, vec![values]);
        let e = i.execute(h, "SELECT nope FROM t".into(), vec![]).await.unwrap_err();
        assert!(matches!(&e, SqlError::Io(m) if m.contains("no such column")), "{e:?}");
        // A second connection (another instance) sees the committed rows.
        let mut j = SqlInstance::new(allowed(&["default"]), dbs);
        let h2 = j.open("default").await.unwrap();
        assert_eq!(j.execute(h2, "SELECT count(*) FROM t".into(), vec![]).await.unwrap().rows, vec![vec![SqlValue::Integer(2)]]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn labels_handles_and_statement_specs_are_checked() {
        let dbs = Arc::new(SqliteDatabases::default());
        assert_eq!(SqlInstance::new(allowed(&[]), dbs.clone()).open("default").await, Err(SqlError::AccessDenied));
        let mut i = SqlInstance::new(allowed(&["other"]), dbs.clone());
        assert_eq!(i.open("other").await, Err(SqlError::NoSuchDatabase));
        assert_eq!(i.execute(5, "SELECT 1".into(), vec![]).await, Err(SqlError::InvalidConnection));
        assert_eq!(parse_file_and_label("m.sql").unwrap(), ("m.sql", "default"));
        assert_eq!(parse_file_and_label("m.sql:other").unwrap(), ("m.sql", "other"));
        assert!(parse_file_and_label("m.sql:").is_err());
        assert!(parse_file_and_label(":x").is_err());
        let e = dbs.run_statements(&["@m.sql:other".into()]).await.unwrap_err().to_string();
        assert!(e.contains("[sqlite_database.other]"), "{e}");
        assert!(dbs.run_statements(&["NOT SQL".into()]).await.is_err());
    }
}
