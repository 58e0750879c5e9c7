//! The short-cut between the host and its embedded sidecar when both live in this
//! process: a guest's request to the sidecar's address goes straight to the sidecar's
//! handler, and a delivery to the app goes straight into the host's router — the same
//! requests and answers as over loopback TCP, without the socket and the HTTP codec.
//! The allow-list and the API tokens still decide exactly as on the network path.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use spindapr_dapr::Sidecar;
use spindapr_dapr::app_channel::{AppTransport, TransportError};
use spindapr_host::HttpRuntime;
use spindapr_host::outbound::{LocalService, full_body};
use wasmtime_wasi_http::WasiBody;

/// The sidecar's API as a host-local service.
pub struct SidecarService(pub Arc<Sidecar>);

impl LocalService for SidecarService {
    fn call(&self, req: http::Request<WasiBody>) -> BoxFuture<'static, http::Response<WasiBody>> {
        let sidecar = self.0.clone();
        Box::pin(async move {
            let resp = sidecar.handle(req).await;
            resp.map(|b| b.map_err(|never| match never {}).boxed_unsync())
        })
    }
}

/// The app's router as the sidecar's transport to the app.
pub struct RuntimeTransport(pub Arc<HttpRuntime>);

/// The client address the app sees for in-process calls (the sidecar is on loopback).
const SIDECAR_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

#[async_trait::async_trait]
impl AppTransport for RuntimeTransport {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        tracing::debug!(target: "spindapr::in_process", "[sidecar] {} {} served in-process", req.method(), req.uri().path());
        let req = req.map(full_body);
        let resp = self.0.handle(req, SIDECAR_ADDR).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| TransportError(format!("reading the app's answer: {e}")))?.to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }
}
