//! What one request's wasmtime `Store` holds: the WASI and wasi:http contexts, the
//! resource table, the memory limiter, the component's variables, key-value stores and
//! SQLite connections, and the outbound hook. Also binds the Spin interfaces of `wit/`
//! (variables and wasi:config, key-value and wasi:keyvalue, SQLite 2 and 3) to them, and routes guest stdout and stderr into
//! the host log, line by line, prefixed with the component id.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::OutboundHooks;
use crate::variables::{ComponentVariables, GetError};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "spindapr:host/http-component-imports",
    imports: { default: async | trappable },
});

use fermyon::spin::{key_value, sqlite as sqlite2, variables};
use spin::sqlite::sqlite as sqlite3;
use wasi::config::store as wasi_config;
use wasi::keyvalue::{atomics as wkv_atomics, batch as wkv_batch, store as wkv};
use wasmtime::component::Resource;

use crate::key_value::{KvError, KvInstance, SwapFailure};
use crate::sqlite::{QueryResult, SqlError, SqlInstance, SqlValue};

pub struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub http: WasiHttpCtx,
    pub hooks: OutboundHooks,
    pub limits: StoreLimits,
    pub variables: Arc<ComponentVariables>,
    pub kv: KvInstance,
    pub sql: SqlInstance,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { hooks: &mut self.hooks, table: &mut self.table, ctx: &mut self.http }
    }
}

impl variables::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        Ok(self.variables.get(&name).map_err(|e| match e {
            GetError::InvalidName(m) => variables::Error::InvalidName(m),
            GetError::Undefined(m) => variables::Error::Undefined(m),
        }))
    }
}

/// `wasi:config/store`: the component's variables, as Spin's: a name that is not a
/// variable (or not a valid name) is none, not an error.
impl wasi_config::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, wasi_config::Error>> {
        Ok(Ok(self.variables.get(&key).ok()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, wasi_config::Error>> {
        Ok(Ok(self.variables.all()))
    }
}

impl From<KvError> for wkv::Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::NoSuchStore => Self::NoSuchStore,
            KvError::AccessDenied => Self::AccessDenied,
            KvError::StoreTableFull => Self::Other("store table full".into()),
            KvError::Other(m) => Self::Other(m),
        }
    }
}

/// A bucket handle that is not open: Spin answers `no-such-store` (not a trap).
fn no_bucket<T>(r: anyhow::Result<Result<T, KvError>>) -> Result<T, wkv::Error> {
    match r {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(wkv::Error::NoSuchStore),
    }
}

/// `wasi:keyvalue` (0.2.0-draft2) over the same stores as `fermyon:spin/key-value`, as
/// Spin 3.6: a bucket is a `key_value_stores` label.
impl wkv::Host for HostState {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<wkv::Bucket>, wkv::Error>> {
        Ok(self.kv.open(&identifier).await.map(Resource::new_own).map_err(Into::into))
    }
}

impl wkv::HostBucket for HostState {
    async fn get(&mut self, b: Resource<wkv::Bucket>, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, wkv::Error>> {
        Ok(no_bucket(self.kv.get(b.rep(), &key).await))
    }

    async fn set(&mut self, b: Resource<wkv::Bucket>, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), wkv::Error>> {
        Ok(no_bucket(self.kv.set(b.rep(), &key, &value).await))
    }

    async fn delete(&mut self, b: Resource<wkv::Bucket>, key: String) -> wasmtime::Result<Result<(), wkv::Error>> {
        Ok(no_bucket(self.kv.delete(b.rep(), &key).await))
    }

    async fn exists(&mut self, b: Resource<wkv::Bucket>, key: String) -> wasmtime::Result<Result<bool, wkv::Error>> {
        Ok(no_bucket(self.kv.exists(b.rep(), &key).await))
    }

    async fn list_keys(
        &mut self,
        b: Resource<wkv::Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wkv::KeyResponse, wkv::Error>> {
        if cursor.is_some() {
            return Ok(Err(wkv::Error::Other("list_keys: cursor not supported".into())));
        }
        Ok(no_bucket(self.kv.get_keys(b.rep()).await).map(|keys| wkv::KeyResponse { keys, cursor: None }))
    }

    async fn drop(&mut self, b: Resource<wkv::Bucket>) -> wasmtime::Result<()> {
        self.kv.close(b.rep());
        Ok(())
    }
}

impl wkv_batch::Host for HostState {
    async fn get_many(
        &mut self,
        b: Resource<wkv::Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, wkv::Error>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match no_bucket(self.kv.get(b.rep(), &key).await) {
                Ok(v) => out.push((key, v)),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(&mut self, b: Resource<wkv::Bucket>, key_values: Vec<(String, Vec<u8>)>) -> wasmtime::Result<Result<(), wkv::Error>> {
        for (key, value) in key_values {
            if let Err(e) = no_bucket(self.kv.set(b.rep(), &key, &value).await) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(&mut self, b: Resource<wkv::Bucket>, keys: Vec<String>) -> wasmtime::Result<Result<(), wkv::Error>> {
        for key in keys {
            if let Err(e) = no_bucket(self.kv.delete(b.rep(), &key).await) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}

impl wkv_atomics::Host for HostState {
    async fn increment(&mut self, b: Resource<wkv::Bucket>, key: String, delta: i64) -> wasmtime::Result<Result<i64, wkv::Error>> {
        Ok(no_bucket(self.kv.increment(b.rep(), &key, delta).await))
    }

    async fn swap(&mut self, cas: Resource<wkv_atomics::Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), wkv_atomics::CasError>> {
        Ok(match self.kv.swap(cas.rep(), value).await.map_err(wasmtime::Error::from_anyhow)? {
            Ok(()) => Ok(()),
            Err(SwapFailure::Changed(fresh)) => Err(wkv_atomics::CasError::CasFailed(Resource::new_own(fresh))),
            Err(SwapFailure::Store(e)) => Err(wkv_atomics::CasError::StoreError(e.into())),
        })
    }
}

impl wkv_atomics::HostCas for HostState {
    async fn new(&mut self, b: Resource<wkv::Bucket>, key: String) -> wasmtime::Result<Result<Resource<wkv_atomics::Cas>, wkv::Error>> {
        Ok(no_bucket(self.kv.new_cas(b.rep(), &key)).map(Resource::new_own))
    }

    async fn current(&mut self, cas: Resource<wkv_atomics::Cas>) -> wasmtime::Result<Result<Option<Vec<u8>>, wkv::Error>> {
        Ok(self.kv.cas_current(cas.rep()).await.map_err(wasmtime::Error::from_anyhow)?.map_err(Into::into))
    }

    async fn drop(&mut self, cas: Resource<wkv_atomics::Cas>) -> wasmtime::Result<()> {
        self.kv.close_cas(cas.rep());
        Ok(())
    }
}

impl From<KvError> for key_value::Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::StoreTableFull => Self::StoreTableFull,
            KvError::NoSuchStore => Self::NoSuchStore,
            KvError::AccessDenied => Self::AccessDenied,
            KvError::Other(m) => Self::Other(m),
        }
    }
}

impl key_value::Host for HostState {}

impl key_value::HostStore for HostState {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<key_value::Store>, key_value::Error>> {
        Ok(self.kv.open(&label).await.map(Resource::new_own).map_err(Into::into))
    }

    async fn get(&mut self, store: Resource<key_value::Store>, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, key_value::Error>> {
        Ok(self.kv.get(store.rep(), &key).await.map_err(wasmtime::Error::from_anyhow)?.map_err(Into::into))
    }

    async fn set(
        &mut self,
        store: Resource<key_value::Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        Ok(self.kv.set(store.rep(), &key, &value).await.map_err(wasmtime::Error::from_anyhow)?.map_err(Into::into))
    }

    async fn delete(&mut self, store: Resource<key_value::Store>, key: String) -> wasmtime::Result<Result<(), key_value::Error>> {
        Ok(self.kv.delete(store.rep(), &key).await.map_err(wasmtime::Error::from_anyhow)?.map_err(Into::into))
    }

    async fn exists(&mut self, store: Resource<key_value::Store>, key: String) -> wasmtime::Result<Result<bool, key_value::Error>> {
        Ok(self.kv.exists(store.rep(), &key).await.map_err(wasmtime::Error::from_anyhow)?.map_err(Into::into))
    }

    async fn get_keys(&mut self, store: Resource<key_value::Store>) -> wasmtime::Result<Result<Vec<String>, key_value::Error>> {
        Ok(self.kv.get_keys(store.rep()).await.map_err(wasmtime::Error::from_anyhow)?.map_err(Into::into))
    }

    async fn drop(&mut self, store: Resource<key_value::Store>) -> wasmtime::Result<()> {
        self.kv.close(store.rep());
        Ok(())
    }
}

/// The conversions between the host's SQLite types and one version's bindings (2 and 3
/// declare the same value, error and result types).
macro_rules! sqlite_conversions {
    ($m:ident) => {
        impl From<$m::Value> for SqlValue {
            fn from(v: $m::Value) -> Self {
                match v {
                    $m::Value::Integer(i) => Self::Integer(i),
                    $m::Value::Real(r) => Self::Real(r),
                    $m::Value::Text(t) => Self::Text(t),
                    $m::Value::Blob(b) => Self::Blob(b),
                    $m::Value::Null => Self::Null,
                }
            }
        }

        impl From<SqlValue> for $m::Value {
            fn from(v: SqlValue) -> Self {
                match v {
                    SqlValue::Integer(i) => Self::Integer(i),
                    SqlValue::Real(r) => Self::Real(r),
                    SqlValue::Text(t) => Self::Text(t),
                    SqlValue::Blob(b) => Self::Blob(b),
                    SqlValue::Null => Self::Null,
                }
            }
        }

        impl From<SqlError> for $m::Error {
            fn from(e: SqlError) -> Self {
                match e {
                    SqlError::NoSuchDatabase => Self::NoSuchDatabase,
                    SqlError::AccessDenied => Self::AccessDenied,
                    SqlError::InvalidConnection => Self::InvalidConnection,
                    SqlError::Io(m) => Self::Io(m),
                }
            }
        }

        impl From<QueryResult> for $m::QueryResult {
            fn from(r: QueryResult) -> Self {
                Self {
                    columns: r.columns,
                    rows: r.rows.into_iter().map(|row| $m::RowResult { values: row.into_iter().map(Into::into).collect() }).collect(),
                }
            }
        }

        impl $m::Host for HostState {}
    };
}

sqlite_conversions!(sqlite2);
sqlite_conversions!(sqlite3);

impl HostState {
    async fn sql_execute(&mut self, rep: u32, statement: String, parameters: Vec<SqlValue>) -> Result<QueryResult, SqlError> {
        self.sql.execute(rep, statement, parameters).await
    }
}

impl sqlite2::HostConnection for HostState {
    async fn open(&mut self, database: String) -> wasmtime::Result<Result<Resource<sqlite2::Connection>, sqlite2::Error>> {
        Ok(self.sql.open(&database).await.map(Resource::new_own).map_err(Into::into))
    }

    async fn execute(
        &mut self,
        conn: Resource<sqlite2::Connection>,
        statement: String,
        parameters: Vec<sqlite2::Value>,
    ) -> wasmtime::Result<Result<sqlite2::QueryResult, sqlite2::Error>> {
        let params = parameters.into_iter().map(Into::into).collect();
        Ok(self.sql_execute(conn.rep(), statement, params).await.map(Into::into).map_err(Into::into))
    }

    async fn drop(&mut self, conn: Resource<sqlite2::Connection>) -> wasmtime::Result<()> {
        self.sql.close(conn.rep());
        Ok(())
    }
}

impl sqlite3::HostConnection for HostState {
    async fn open(&mut self, database: String) -> wasmtime::Result<Result<Resource<sqlite3::Connection>, sqlite3::Error>> {
        Ok(self.sql.open(&database).await.map(Resource::new_own).map_err(Into::into))
    }

    async fn execute(
        &mut self,
        conn: Resource<sqlite3::Connection>,
        statement: String,
        parameters: Vec<sqlite3::Value>,
    ) -> wasmtime::Result<Result<sqlite3::QueryResult, sqlite3::Error>> {
        let params = parameters.into_iter().map(Into::into).collect();
        Ok(self.sql_execute(conn.rep(), statement, params).await.map(Into::into).map_err(Into::into))
    }

    async fn last_insert_rowid(&mut self, conn: Resource<sqlite3::Connection>) -> wasmtime::Result<i64> {
        // The interface has no error case here; a closed handle is a trap.
        self.sql.last_insert_rowid(conn.rep()).await.map_err(|e| wasmtime::Error::msg(e.to_string()))
    }

    async fn changes(&mut self, conn: Resource<sqlite3::Connection>) -> wasmtime::Result<u64> {
        self.sql.changes(conn.rep()).await.map_err(|e| wasmtime::Error::msg(e.to_string()))
    }

    async fn drop(&mut self, conn: Resource<sqlite3::Connection>) -> wasmtime::Result<()> {
        self.sql.close(conn.rep());
        Ok(())
    }
}

/// Adds every interface the host offers to `linker`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> anyhow::Result<()> {
    use wasmtime::component::HasSelf;
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    variables::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    key_value::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    sqlite2::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    sqlite3::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wasi_config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wkv::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wkv_batch::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wkv_atomics::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// Guest stdout/stderr, sent to the host log one line at a time, and to the component's
/// log file when there is one.
#[derive(Clone)]
pub struct GuestLog {
    component: Arc<str>,
    stream: &'static str,
    file: Option<LogFile>,
    /// Whether lines go to the host log too (`--follow` / `--quiet`).
    follow: bool,
}

impl GuestLog {
    pub fn new(component: Arc<str>, stream: &'static str, file: Option<LogFile>, follow: bool) -> Self {
        Self { component, stream, file, follow }
    }
}

/// One of Spin's component log files, `<log dir>/<id>_<stream>.txt`, shared by the
/// component's instances (lines are appended whole).
#[derive(Clone)]
pub struct LogFile(Arc<std::sync::Mutex<std::fs::File>>);

impl LogFile {
    /// Opens (creating the folder) for appending, or emptied first when `truncate`.
    pub fn open(dir: &std::path::Path, component: &str, stream: &str, truncate: bool) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the log folder {}", dir.display()))?;
        let path = dir.join(format!("{component}_{stream}.txt"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(!truncate)
            .write(true)
            .truncate(truncate)
            .open(&path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        Ok(Self(Arc::new(std::sync::Mutex::new(file))))
    }

    fn append(&self, line: &[u8]) {
        use std::io::Write as _;
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(line).and_then(|()| f.write_all(b"\n"));
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter { log: self.clone(), buf: Vec::new() })
    }
}

struct LineWriter {
    log: GuestLog,
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        if let Some(f) = &self.log.file {
            f.append(line);
        }
        if !self.log.follow {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if self.log.stream == "stderr" {
            tracing::warn!(target: "guest", "[{}] {}", self.log.component, text);
        } else {
            tracing::info!(target: "guest", "[{}] {}", self.log.component, text);
        }
    }

    fn flush_lines(&mut self) {
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            self.emit(&line[..line.len() - 1]);
        }
        // A runaway line is logged in pieces rather than held without bound.
        if self.buf.len() > 16 * 1024 {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.buf.extend_from_slice(data);
        self.flush_lines();
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.emit(&rest);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.emit(&rest);
        }
    }
}
