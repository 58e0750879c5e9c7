//! The process's Prometheus metrics and the `/metrics` endpoint that serves them: the
//! sidecar's under daprd's names and labels (`dapr_http_server_*`,
//! `dapr_component_pubsub_{egress,ingress}_*`, `dapr_component_state_*`, latencies in
//! milliseconds with daprd's default buckets), and the host's per component
//! (`spindapr_host_*`). One registry per process, so `up` serves the host's and its
//! embedded sidecar's on one port, as daprd's `--metrics-port`.

pub mod trace;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// daprd's default latency distribution, in milliseconds (pkg/config MetricSpec).
const LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 65.0, 80.0, 100.0, 130.0, 160.0, 200.0, 250.0,
    300.0, 400.0, 500.0, 650.0, 800.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0,
];

/// The sidecar's metrics, as daprd's pkg/diagnostics records them.
pub struct SidecarMetrics {
    /// `dapr_http_server_request_count{app_id,method,path,status}`.
    pub http_request_count: IntCounterVec,
    /// `dapr_http_server_latency{app_id,method,path,status}` (ms).
    pub http_latency: HistogramVec,
    /// `dapr_component_pubsub_egress_count{app_id,component,namespace,success,topic}`.
    pub pubsub_egress_count: IntCounterVec,
    /// `dapr_component_pubsub_egress_latencies{…}` (ms).
    pub pubsub_egress_latencies: HistogramVec,
    /// `dapr_component_pubsub_ingress_count{app_id,component,namespace,process_status,status,topic}`.
    pub pubsub_ingress_count: IntCounterVec,
    /// `dapr_component_pubsub_ingress_latencies{…}` (ms).
    pub pubsub_ingress_latencies: HistogramVec,
    /// `dapr_component_state_count{app_id,component,namespace,operation,success}`.
    pub state_count: IntCounterVec,
    /// `dapr_component_state_latencies{…}` (ms).
    pub state_latencies: HistogramVec,
}

/// The host's metrics, per component.
pub struct HostMetrics {
    /// `spindapr_host_request_count{component,status}`: requests a component answered.
    pub request_count: IntCounterVec,
    /// `spindapr_host_request_duration_seconds{component}`: from routing to the response head.
    pub request_duration: HistogramVec,
    /// `spindapr_host_instances_active{component}`: requests being handled now (instances up to their response head).
    pub instances_active: IntGaugeVec,
}

struct All {
    registry: Registry,
    sidecar: SidecarMetrics,
    host: HostMetrics,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(c.clone())).unwrap_or_else(|e| panic!("registering {name}: {e}"));
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(h.clone())).unwrap_or_else(|e| panic!("registering {name}: {e}"));
    h
}

fn all() -> &'static All {
    static ALL: OnceLock<All> = OnceLock::new();
    ALL.get_or_init(|| {
        let r = Registry::new();
        let http = ["app_id", "method", "path", "status"];
        let egress = ["app_id", "component", "namespace", "success", "topic"];
        let ingress = ["app_id", "component", "namespace", "process_status", "status", "topic"];
        let state = ["app_id", "component", "namespace", "operation", "success"];
        let sidecar = SidecarMetrics {
            http_request_count: counter(&r, "dapr_http_server_request_count", "Number of HTTP requests started in server.", &http),
            http_latency: histogram(
                &r,
                "dapr_http_server_latency",
                "HTTP request end-to-end latency in server.",
                &http,
                LATENCY_BUCKETS_MS,
            ),
            pubsub_egress_count: counter(
                &r,
                "dapr_component_pubsub_egress_count",
                "The number of outgoing messages published to the pub/sub component.",
                &egress,
            ),
            pubsub_egress_latencies: histogram(
                &r,
                "dapr_component_pubsub_egress_latencies",
                "The latency of the response from the pub/sub component.",
                &egress,
                LATENCY_BUCKETS_MS,
            ),
            pubsub_ingress_count: counter(
                &r,
                "dapr_component_pubsub_ingress_count",
                "The number of incoming messages arriving from the pub/sub component.",
                &ingress,
            ),
            pubsub_ingress_latencies: histogram(
                &r,
                "dapr_component_pubsub_ingress_latencies",
                "The consuming app event processing latency.",
                &ingress,
                LATENCY_BUCKETS_MS,
            ),
            state_count: counter(&r, "dapr_component_state_count", "The number of operations performed on the state component.", &state),
            state_latencies: histogram(
                &r,
                "dapr_component_state_latencies",
                "The latency of the operations performed on the state component.",
                &state,
                LATENCY_BUCKETS_MS,
            ),
        };
        let host = HostMetrics {
            request_count: counter(
                &r,
                "spindapr_host_request_count",
                "Requests answered by a component, by status.",
                &["component", "status"],
            ),
            request_duration: histogram(
                &r,
                "spindapr_host_request_duration_seconds",
                "Time from routing a request to its response head, per component.",
                &["component"],
                prometheus::DEFAULT_BUCKETS,
            ),
            instances_active: {
                let g = IntGaugeVec::new(
                    Opts::new("spindapr_host_instances_active", "Requests a component is handling now (until its response head)."),
                    &["component"],
                )
                .unwrap_or_else(|e| panic!("metric spindapr_host_instances_active: {e}"));
                r.register(Box::new(g.clone())).unwrap_or_else(|e| panic!("registering spindapr_host_instances_active: {e}"));
                g
            },
        };
        All { registry: r, sidecar, host }
    })
}

/// The sidecar's metrics.
pub fn sidecar() -> &'static SidecarMetrics {
    &all().sidecar
}

/// The host's metrics.
pub fn host() -> &'static HostMetrics {
    &all().host
}

/// Milliseconds, as daprd records latencies.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Adds a collector of another crate to the process's registry (once; a second
/// registration of the same metric is ignored).
pub fn register(c: Box<dyn prometheus::core::Collector>) {
    if let Err(e) = all().registry.register(c) {
        tracing::debug!("registering a metric: {e}");
    }
}

/// Every metric in Prometheus' text format.
pub fn render() -> String {
    let mut out = String::new();
    if let Err(e) = TextEncoder::new().encode_utf8(&all().registry.gather(), &mut out) {
        tracing::error!("encoding the metrics: {e}");
    }
    out
}

/// Serves `GET /metrics` (any other path: 404) on `listener` until `shutdown` resolves.
pub async fn serve(listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()>) {
    let service_for = |_client: SocketAddr| {
        hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
            let mut resp = if req.uri().path() == "/metrics" {
                let mut r = http::Response::new(Full::new(Bytes::from(render())));
                r.headers_mut()
                    .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                r
            } else {
                http::Response::new(Full::new(Bytes::new()))
            };
            if req.uri().path() != "/metrics" {
                *resp.status_mut() = http::StatusCode::NOT_FOUND;
            }
            Ok::<_, std::convert::Infallible>(resp)
        })
    };
    spindapr_server::serve(listener, service_for, shutdown, Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_daprds() {
        sidecar().pubsub_egress_count.with_label_values(&["app", "pubsub", "", "true", "orders"]).inc();
        sidecar().state_latencies.with_label_values(&["app", "statestore", "", "get", "true"]).observe(2.5);
        host().request_count.with_label_values(&["api", "200"]).inc();
        let text = render();
        assert!(
            text.contains(
                r#"dapr_component_pubsub_egress_count{app_id="app",component="pubsub",namespace="",success="true",topic="orders"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"dapr_component_state_latencies_bucket{app_id="app",component="statestore",namespace="",operation="get",success="true",le="3"} 1"#), "{text}");
        assert!(text.contains(r#"spindapr_host_request_count{component="api",status="200"} 1"#), "{text}");
    }
}
