//! Outbound HTTP from guests (`wasi:http/outgoing-handler`), the network side: the
//! shared keep-alive client pool with its concurrency limit, the services that live in
//! this process (the embedded sidecar) and the wasi:http body helpers. Which request
//! may go where (the allow-list) and the in-process chaining are the trigger's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiResolver, Name};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Outbound HTTP settings (runtime-config `[outbound_http]`).
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Whether plain-HTTP connections are kept alive and reused across requests.
    pub connection_pooling: bool,
    /// The most outbound requests in flight at once, across all instances; unlimited when `None`.
    pub max_concurrent_requests: Option<usize>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self { connection_pooling: true, max_concurrent_requests: None }
    }
}

/// The network side: one pooled plain-HTTP client shared by every instance.
pub struct Outbound {
    client: Client<HttpConnector<Resolver>, WasiBody>,
    limit: Option<Arc<Semaphore>>,
}

impl Outbound {
    /// The shared client, configured from `cfg`.
    pub fn new(cfg: &OutboundConfig) -> Self {
        let mut connector = HttpConnector::new_with_resolver(Resolver(GaiResolver::new()));
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

/// A name that did not resolve: the resolver's own error type, so a failed connect can
/// tell DNS from a refused connection by type rather than by message.
#[derive(Debug, thiserror::Error)]
#[error("dns lookup failed: {0}")]
struct DnsFailure(std::io::Error);

/// The system resolver (getaddrinfo on a blocking thread), failing with [`DnsFailure`].
#[derive(Clone)]
struct Resolver(GaiResolver);

impl tower_service::Service<Name> for Resolver {
    type Response = GaiAddrs;
    type Error = DnsFailure;
    type Future = futures::future::BoxFuture<'static, Result<GaiAddrs, DnsFailure>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), DnsFailure>> {
        self.0.poll_ready(cx).map_err(DnsFailure)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let lookup = self.0.call(name);
        Box::pin(async move { lookup.await.map_err(DnsFailure) })
    }
}

/// The first error of type `T` in `e`'s source chain.
fn find_source<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

fn client_error(e: hyper_util::client::legacy::Error) -> Error {
    if e.is_connect() {
        tracing::debug!("outbound connect failed: {e:?}");
        if find_source::<DnsFailure>(&e).is_some() {
            return Error::DnsError { rcode: Some("address not available".into()), info_code: None };
        }
        return match find_source::<std::io::Error>(&e).map(std::io::Error::kind) {
            Some(std::io::ErrorKind::TimedOut) => Error::ConnectionTimeout,
            _ => Error::ConnectionRefused,
        };
    }
    match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<hyper::Error>()) {
        Some(h) if h.is_incomplete_message() => Error::HttpResponseIncomplete,
        Some(h) if h.is_timeout() => Error::ConnectionReadTimeout,
        _ => Error::HttpProtocolError,
    }
}

/// A service living in this process that answers requests for one authority: the
/// embedded Dapr sidecar. A guest's request to that authority, once the allow-list has
/// admitted it, is handed to the service directly instead of going through a socket.
pub trait LocalService: Send + Sync {
    /// Answers one request; the request URI is in origin form, `Host` as sent.
    fn call(&self, req: http::Request<WasiBody>) -> futures::future::BoxFuture<'static, http::Response<WasiBody>>;
}

/// The local services, by the `host:port` authorities they answer for.
#[derive(Default, Clone)]
pub struct LocalServices {
    by_authority: Vec<(String, u16, Arc<dyn LocalService>)>,
}

impl LocalServices {
    /// Answers plain-HTTP requests to `127.0.0.1:port` and `localhost:port` with `service`.
    pub fn loopback(mut self, port: u16, service: Arc<dyn LocalService>) -> Self {
        for host in ["127.0.0.1", "localhost"] {
            self.by_authority.push((host.to_string(), port, service.clone()));
        }
        self
    }

    /// The service for an `http` request to `host:port`, if one is local.
    pub fn find(&self, scheme: &str, host: &str, port: Option<u16>) -> Option<&Arc<dyn LocalService>> {
        if scheme != "http" {
            return None;
        }
        let port = port.unwrap_or(80);
        self.by_authority.iter().find(|(h, p, _)| *p == port && h.eq_ignore_ascii_case(host)).map(|(_, _, s)| s)
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
