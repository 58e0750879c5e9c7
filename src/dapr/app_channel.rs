//! The sidecar's HTTP channel to the app: `GET /dapr/subscribe` and event deliveries,
//! over a pooled keep-alive client, with `dapr-api-token` when APP_API_TOKEN is set.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub struct AppChannel {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    app_id: String,
    token: Option<String>,
}

impl AppChannel {
    pub fn new(host: &str, port: u16, app_id: &str, token: Option<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector);
        Self { client, base: format!("http://{host}:{port}"), app_id: app_id.into(), token }
    }

    async fn call(&self, req: http::request::Builder, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let mut req = req.header("dapr-app-id", &self.app_id);
        if let Some(t) = &self.token {
            req = req.header("dapr-api-token", t);
        }
        let resp = self.client.request(req.body(Full::new(body))?).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `GET /dapr/subscribe`.
    pub async fn get_subscribe(&self) -> anyhow::Result<(u16, Bytes)> {
        self.call(http::Request::get(format!("{}/dapr/subscribe", self.base)), Bytes::new()).await
    }

    /// Posts an event to `path` and returns the app's status and body.
    pub async fn post_event(&self, path: &str, body: Bytes, headers: &[(String, String)]) -> anyhow::Result<(u16, Bytes)> {
        let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        let mut req =
            http::Request::post(format!("{}{path}", self.base)).header("content-type", super::cloudevents::CLOUDEVENT_CONTENT_TYPE);
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                req = req.header(k, v);
            }
        }
        self.call(req, body).await
    }
}
