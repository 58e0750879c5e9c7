//! What one request's wasmtime `Store` holds: the WASI and wasi:http contexts, the
//! resource table, the memory limiter, the component's variables, and the outbound hook.
//! Also binds `fermyon:spin/variables@2.0.0` (from `wit/`) and routes guest stdout and
//! stderr into the host log, line by line, prefixed with the component id.

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
});

use fermyon::spin::variables;

pub struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub http: WasiHttpCtx,
    pub hooks: OutboundHooks,
    pub limits: StoreLimits,
    pub variables: Arc<ComponentVariables>,
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
    fn get(&mut self, name: String) -> Result<String, variables::Error> {
        self.variables.get(&name).map_err(|e| match e {
            GetError::InvalidName(m) => variables::Error::InvalidName(m),
            GetError::Undefined(m) => variables::Error::Undefined(m),
        })
    }
}

/// Adds every interface the host offers to `linker`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    variables::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// Guest stdout/stderr, sent to the host log one line at a time, and to the component's
/// log file when there is one.
#[derive(Clone)]
pub struct GuestLog {
    component: Arc<str>,
    stream: &'static str,
    file: Option<LogFile>,
}

impl GuestLog {
    pub fn new(component: Arc<str>, stream: &'static str, file: Option<LogFile>) -> Self {
        Self { component, stream, file }
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
