//! The sidecar's channel to the app: `GET /dapr/subscribe` and event deliveries, with
//! `dapr-app-id` and (when APP_API_TOKEN is set) `dapr-api-token` on every call. The
//! request is built once here; an [`AppTransport`] carries it — over a pooled keep-alive
//! HTTP client, or straight into the app's router when the app is served by this process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Headers never forwarded to or from the app (Go's hop-by-hop list).
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
];

/// daprd's InternalMetadataToHTTPHeader for one lower-cased key, shared by deliveries
/// and invocations: hop-by-hop, `*-bin` and `destination-app-id` are not sent, `grpc-*`
/// goes as `dapr-grpc-*`.
pub(crate) fn forwarded_header_name(lower: &str) -> Option<std::borrow::Cow<'_, str>> {
    if HOP_BY_HOP.contains(&lower) || lower.ends_with("-bin") || lower == "destination-app-id" {
        return None;
    }
    Some(match lower.strip_prefix("grpc-") {
        Some(rest) => std::borrow::Cow::Owned(format!("dapr-grpc-{rest}")),
        None => std::borrow::Cow::Borrowed(lower),
    })
}

/// Why a call to the app got no answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// Carries one request to the app and brings back its whole answer.
#[async_trait::async_trait]
pub trait AppTransport: Send + Sync {
    /// Sends `req` (absolute URI, `Host` set) and returns the app's answer.
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError>;
}

/// The network transport: a pooled keep-alive HTTP/1.1 client.
pub struct HttpTransport {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpTransport {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector);
        Self { client }
    }
}

#[async_trait::async_trait]
impl AppTransport for HttpTransport {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        let resp = self.client.request(req.map(Full::new)).await.map_err(|e| TransportError(format!("{e:#}")))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| TransportError(e.to_string()))?.to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }
}

/// The gRPC client of the app: hyper's pooled HTTP/2 (h2c) client straight under the
/// generated stub — no tower buffer task between a delivery and its connection.
pub(crate) type GrpcAppClient = crate::grpc::pb::runtime::app_callback_client::AppCallbackClient<Client<HttpConnector, tonic::body::Body>>;

/// The app's gRPC connection pool and address, for the AppCallback stubs.
#[derive(Clone)]
pub(crate) struct GrpcApp {
    client: Client<HttpConnector, tonic::body::Body>,
    origin: http::Uri,
}

impl GrpcApp {
    /// The `AppCallback` stub.
    pub(crate) fn callback(&self) -> GrpcAppClient {
        GrpcAppClient::with_origin(self.client.clone(), self.origin.clone())
    }

    /// The `AppCallbackAlpha` stub (the older bulk method).
    pub(crate) fn alpha(
        &self,
    ) -> crate::grpc::pb::runtime::app_callback_alpha_client::AppCallbackAlphaClient<Client<HttpConnector, tonic::body::Body>> {
        crate::grpc::pb::runtime::app_callback_alpha_client::AppCallbackAlphaClient::with_origin(self.client.clone(), self.origin.clone())
    }
}

/// The app as the sidecar calls it.
pub struct AppChannel {
    transport: Arc<dyn AppTransport>,
    authority: String,
    app_id: String,
    token: Option<String>,
    /// With `--app-protocol grpc`: the app's AppCallback services.
    grpc: Option<GrpcApp>,
}

impl AppChannel {
    /// A channel to the app at `host:port`, carried by `transport`.
    pub fn new(transport: Arc<dyn AppTransport>, host: &str, port: u16, app_id: &str, token: Option<String>) -> Self {
        let authority = if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Self { transport, authority, app_id: app_id.into(), token, grpc: None }
    }

    /// The same app, called over gRPC (h2c) instead: subscriptions and deliveries go to
    /// its AppCallback service. The connection is made on first use.
    pub fn over_grpc(mut self) -> anyhow::Result<Self> {
        let origin: http::Uri =
            format!("http://{}", self.authority).parse().map_err(|e| anyhow::anyhow!("the app's gRPC address {}: {e}", self.authority))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
        self.grpc = Some(GrpcApp { client, origin });
        Ok(self)
    }

    /// The app's `host:port`.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether the app is called over gRPC.
    pub fn is_grpc(&self) -> bool {
        self.grpc.is_some()
    }

    /// A gRPC request carrying `headers` and APP_API_TOKEN as `dapr-api-token` (daprd's
    /// gRPC channel sends no `dapr-app-id`).
    pub(crate) fn grpc_request<T>(&self, body: T, headers: &[(String, String)]) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        let md = req.metadata_mut();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(), v.parse()) {
                md.insert(k, v);
            }
        }
        if let Some(t) = self.token.as_deref().and_then(|t| t.parse().ok()) {
            md.insert("dapr-api-token", t);
        }
        req
    }

    /// The app's AppCallback client (gRPC channel only).
    pub(crate) fn grpc_client(&self) -> Result<GrpcAppClient, TransportError> {
        self.grpc_app().map(GrpcApp::callback)
    }

    /// The app's gRPC connection (gRPC channel only).
    pub(crate) fn grpc_app(&self) -> Result<&GrpcApp, TransportError> {
        self.grpc.as_ref().ok_or_else(|| TransportError("the app is not called over gRPC".into()))
    }

    async fn call(&self, req: http::request::Builder, body: Bytes) -> Result<(u16, Bytes), TransportError> {
        let mut req = req.body(body).map_err(|e| TransportError(format!("building the request to the app: {e}")))?;
        // The channel's own values replace any a caller's headers carried.
        let h = req.headers_mut();
        let value = |v: &str| http::HeaderValue::from_str(v).map_err(|e| TransportError(format!("building the request to the app: {e}")));
        h.insert(http::header::HOST, value(&self.authority)?);
        h.insert("dapr-app-id", value(&self.app_id)?);
        if let Some(t) = &self.token {
            h.insert("dapr-api-token", value(t)?);
        }
        let resp = self.transport.send(req).await?;
        Ok((resp.status().as_u16(), resp.into_body()))
    }

    /// Service invocation: `method` on `path_and_query` with the caller's `headers` (already
    /// filtered) and body; no `dapr-app-id`, and APP_API_TOKEN replacing any token.
    pub async fn invoke(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: &http::HeaderMap,
        body: Bytes,
    ) -> Result<http::Response<Bytes>, TransportError> {
        let mut req = http::Request::builder().method(method).uri(format!("http://{}{path_and_query}", self.authority));
        if let Some(h) = req.headers_mut() {
            h.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            h.insert(http::header::HOST, http::HeaderValue::from_str(&self.authority).map_err(|e| TransportError(e.to_string()))?);
            if let Some(t) = self.token.as_deref().and_then(|t| http::HeaderValue::from_str(t).ok()) {
                h.insert("dapr-api-token", t);
            }
        }
        let req = req.body(body).map_err(|e| TransportError(format!("building the request to the app: {e}")))?;
        self.transport.send(req).await
    }

    /// `GET /dapr/subscribe`.
    pub async fn get_subscribe(&self) -> Result<(u16, Bytes), TransportError> {
        self.call(http::Request::get(format!("http://{}/dapr/subscribe", self.authority)), Bytes::new()).await
    }

    /// Posts an event to `path` and returns the app's status and body.
    pub async fn post_event(&self, path: &str, body: Bytes, headers: &[(String, String)]) -> Result<(u16, Bytes), TransportError> {
        self.post(path, crate::cloudevents::CLOUDEVENT_CONTENT_TYPE, body, headers).await
    }

    /// Posts `body` as `content_type` to `path` and returns the app's status and body.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Bytes,
        headers: &[(String, String)],
    ) -> Result<(u16, Bytes), TransportError> {
        let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        let mut req = http::Request::post(format!("http://{}{path}", self.authority)).header("content-type", content_type);
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                req = req.header(k, v);
            }
        }
        self.call(req, body).await
    }
}
