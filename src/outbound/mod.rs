//! Outbound HTTP from guests (`wasi:http/outgoing-handler`): the allow-list check, the
//! shared keep-alive client pool, and the hook that hands `self` and `*.spin.internal`
//! requests back to the in-process router instead of the network.

pub mod allowed_hosts;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::trigger_http::{HttpRuntime, LoadedComponent};

/// Outbound HTTP settings (runtime-config `[outbound_http]`).
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    pub connection_pooling: bool,
    pub max_concurrent_requests: Option<usize>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self { connection_pooling: true, max_concurrent_requests: None }
    }
}

/// The network side: one pooled plain-HTTP client shared by every instance.
pub struct Outbound {
    client: Client<HttpConnector, WasiBody>,
    limit: Option<Arc<Semaphore>>,
}

impl Outbound {
    pub fn new(cfg: &OutboundConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(90));
        if !cfg.connection_pooling {
            builder.pool_max_idle_per_host(0);
        }
        Self { client: builder.build(connector), limit: cfg.max_concurrent_requests.map(|n| Arc::new(Semaphore::new(n))) }
    }

    /// Sends an allowed request to the network.
    pub async fn send(&self, request: http::Request<WasiBody>, options: Option<RequestOptions>) -> Result<http::Response<WasiBody>, Error> {
        let _permit = match &self.limit {
            Some(s) => Some(s.clone().acquire_owned().await.map_err(|_| Error::ConnectionLimitReached)?),
            None => None,
        };
        if request.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
            // TLS goes through wasmtime-wasi-http's own rustls client (one connection per request).
            let (resp, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            tokio::spawn(async move {
                if let Err(e) = io.await {
                    tracing::debug!("outbound https connection ended: {e}");
                }
            });
            return Ok(resp.map(|b| b.boxed_unsync()));
        }
        let first_byte = options.and_then(|o| o.first_byte_timeout);
        let fut = self.client.request(request);
        let resp = match first_byte {
            Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| Error::ConnectionReadTimeout)?,
            None => fut.await,
        }
        .map_err(client_error)?;
        Ok(resp.map(|b| b.map_err(Error::from).boxed_unsync()))
    }
}

fn client_error(e: hyper_util::client::legacy::Error) -> Error {
    if e.is_connect() {
        let text = format!("{e:?}");
        tracing::debug!("outbound connect failed: {text}");
        if text.contains("dns error") || text.contains("failed to lookup") {
            return Error::DnsError { rcode: Some("address not available".into()), info_code: None };
        }
        return Error::ConnectionRefused;
    }
    match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<hyper::Error>()) {
        Some(h) if h.is_incomplete_message() => Error::HttpResponseIncomplete,
        Some(h) if h.is_timeout() => Error::ConnectionReadTimeout,
        _ => Error::HttpProtocolError,
    }
}

/// The per-instance wasi:http hook: every outgoing request of a guest passes here.
pub struct OutboundHooks {
    pub runtime: Arc<HttpRuntime>,
    pub component: Arc<LoadedComponent>,
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let runtime = self.runtime.clone();
        let component = self.component.clone();
        Box::new(async move {
            let resp = runtime.outbound_request(&component, request, options).await?;
            Ok((resp, Box::new(async { Ok(()) }) as IoFuture))
        })
    }
}

/// An empty body of the wasi:http body type.
pub fn empty_body() -> WasiBody {
    http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// A complete body of the wasi:http body type.
pub fn full_body(b: impl Into<Bytes>) -> WasiBody {
    http_body_util::Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}
