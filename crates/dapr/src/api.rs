//! daprd's HTTP API as an app sees it: publish and bulk publish, state (get, save,
//! delete, bulk get, transactions with the outbox), metadata and health, with
//! DAPR_API_TOKEN checked on everything but health.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::net::TcpListener;

use super::Sidecar;
use super::cloudevents::{self, PublishInput};
use super::errors::ApiError;
use crate::resiliency::{Dir, Failure, Kind, Policy, RunError};
use spindapr_dapr_components::pubsub::{Message, PubSubError};
use spindapr_dapr_components::state::{Concurrency, DeleteRequest, Item, Operation, SetRequest, StateError};

type Resp = Response<Full<Bytes>>;

/// daprd's SetDefaultFeatures with no Configuration: what the metadata lists as enabled.
pub(crate) const ENABLED_FEATURES: &[&str] = &["HotReload", "WorkflowsRemoteActivityReminder"];

fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn json(status: StatusCode, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn error(e: ApiError) -> Resp {
    json(e.status, &e.body())
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `metadata.<k>=v` query parameters.
fn query_metadata(query: Option<&str>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter_map(|(k, v)| k.strip_prefix("metadata.").map(|k| (k.to_string(), v.into_owned())))
        .collect()
}

/// daprd's answer when a body exceeds `--max-body-size`: its limited reader fails with
/// dapr/kit's `stream too large`, and each handler reports its read error its own way
/// (`onPublish`: a publish error; the state handlers: their JSON decoder's error;
/// the rest: `ERR_BODY_READ`).
fn too_large(segs: &[&str], m: &Method) -> Resp {
    const TOO_LARGE: &str = "stream too large";
    let post = m == Method::POST || m == Method::PUT;
    match segs {
        ["v1.0", "publish", "bulk", ..] | ["v1.0-alpha1", "publish", "bulk", ..] if post => error(ApiError::body_read(TOO_LARGE)),
        ["v1.0", "publish", pubsub, topic @ ..] if post => {
            error(ApiError::pubsub_publish(&decode(&topic.join("/")), &decode(pubsub), TOO_LARGE))
        }
        ["v1.0", "state", _, ..] if post => error(ApiError::malformed(TOO_LARGE)),
        _ => error(ApiError::body_read(TOO_LARGE)),
    }
}

/// The `path` label daprd's legacy HTTP metrics give a request: the state API cut to
/// `/v1.0/state/<store>` (no keys), anything else as it is.
fn metrics_path(path: &str) -> String {
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
    match segs.as_slice() {
        [v, "state" | "secrets", store, ..] => format!("/{v}/{}/{store}", segs[1]),
        _ => path.to_string(),
    }
}

/// A span's name for an API path: state keys (data) replaced by `{key}`.
fn span_path(path: &str) -> String {
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
    match segs.as_slice() {
        [v, "state", store, "bulk" | "transaction"] => format!("/{v}/state/{store}/{}", segs[3]),
        [v, "state", store, _] => format!("/{v}/state/{store}/{{key}}"),
        _ => path.to_string(),
    }
}

/// The `namespace` label: the NAMESPACE the sidecar runs in, if any.
pub(crate) fn namespace() -> &'static str {
    static NS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NS.get_or_init(|| std::env::var("NAMESPACE").unwrap_or_default())
}

/// Whether a route is one of daprd's API routes (anything else is service invocation).
fn is_api_route(segs: &[&str], m: &Method) -> bool {
    let post = m == Method::POST || m == Method::PUT;
    match segs {
        ["v1.0", "healthz", ..] | ["v1.0", "metadata", ..] => true,
        ["v1.0" | "v1.0-alpha1", "publish", ..] => post,
        ["v1.0", "state", ..] => true,
        _ => false,
    }
}

impl Sidecar {
    /// Serves the HTTP API until `shutdown` resolves, then closes the components.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.serve_all(listener, None, shutdown).await
    }

    /// Serves the HTTP API and, with a listener for it, the gRPC API until `shutdown`
    /// resolves; each drains for at most 5 s, and only then are the components closed
    /// (as daprd stops its API servers before its components).
    pub async fn serve_all(
        self: Arc<Self>,
        http: TcpListener,
        grpc: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        const DRAIN: Duration = Duration::from_secs(5);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let me = self.clone();
        let service_for = move |_client| {
            let me = me.clone();
            hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let me = me.clone();
                async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
            })
        };
        let http_server = spindapr_server::serve(http, service_for, stopped(stop_rx.clone()), DRAIN);
        let grpc_server = async {
            let Some(listener) = grpc else { return Ok(()) };
            let server = self.clone().serve_grpc(listener, stopped(stop_rx.clone()));
            // tonic waits for every call without a limit: bound the drain as HTTP's.
            let deadline = async {
                stopped(stop_rx.clone()).await;
                tokio::time::sleep(DRAIN).await;
            };
            tokio::select! {
                r = server => r,
                () = deadline => {
                    tracing::warn!("gRPC calls still running {} s after shutdown began; stopping without them", DRAIN.as_secs());
                    Ok(())
                }
            }
        };
        let signal = async {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let ((), (), grpc_result) = tokio::join!(signal, http_server, grpc_server);
        self.close().await;
        grpc_result
    }

    /// Answers one API request, recording daprd's `dapr_http_server_*` metrics.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Resp
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = std::time::Instant::now();
        let (method, path) = (req.method().clone(), metrics_path(req.uri().path()));
        // With tracing on: a server span per call; its context is the caller's trace from
        // here on (a published event carries it), as daprd's tracing middleware does.
        let mut req = req;
        let span = spindapr_metrics::trace::from_headers(spindapr_metrics::trace::Kind::Server, req.headers(), || {
            (
                format!("{method} {}", span_path(req.uri().path())),
                vec![
                    spindapr_metrics::trace::kv("http.request.method", method.to_string()),
                    spindapr_metrics::trace::kv("url.path", path.clone()),
                    spindapr_metrics::trace::kv("dapr.app_id", self.cfg.app_id.clone()),
                ],
            )
        });
        if let Some(s) = &span {
            s.inject(req.headers_mut());
        }
        let resp = self.route(req).await;
        if let Some(s) = &span {
            s.set("http.response.status_code", i64::from(resp.status().as_u16()));
            s.end(resp.status().is_server_error().then(|| resp.status().to_string()));
        }
        let m = spindapr_metrics::sidecar();
        let status = resp.status();
        let labels = [self.cfg.app_id.as_str(), method.as_str(), path.as_str(), status.as_str()];
        m.http_request_count.with_label_values(&labels).inc();
        m.http_latency.with_label_values(&labels).observe(spindapr_metrics::millis(started.elapsed()));
        resp
    }

    async fn route<B>(self: &Arc<Self>, req: Request<B>) -> Resp
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let is_health = parts.method == Method::GET && (path == "/v1.0/healthz" || path == "/v1.0/healthz/outbound");
        if let Some(token) = &self.cfg.api_token
            && !is_health
            && parts.headers.get("dapr-api-token").and_then(|v| v.to_str().ok()) != Some(token.as_str())
        {
            // As Go's http.Error writes it.
            let mut r = Response::new(Full::new(Bytes::from_static(b"invalid api token\n")));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
            r.headers_mut().insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
            return r;
        }
        let limit = match self.cfg.max_body_size {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let body = match http_body_util::Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                // An invocation fails as daprd's app call does when its body read fails.
                if !is_api_route(&segs, &parts.method) {
                    let decoded = decode(parts.uri.path());
                    if let Some(t) = crate::invoke::find_target(&decoded, &parts.headers) {
                        return error(ApiError::direct_invoke(&t.id, "stream too large"));
                    }
                }
                return too_large(&segs, &parts.method);
            }
            Err(e) => {
                return error(ApiError::malformed(format!("failed reading the request body: {e}")));
            }
        };
        let query = parts.uri.query();
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let m = &parts.method;
        match (segs.as_slice(), m) {
            (["v1.0", "healthz"], &Method::GET) => {
                if self.is_ready() {
                    empty(StatusCode::NO_CONTENT)
                } else {
                    error(ApiError::health_not_ready())
                }
            }
            (["v1.0", "healthz", "outbound"], &Method::GET) => empty(StatusCode::NO_CONTENT),
            (["v1.0", "metadata"], &Method::GET) => self.metadata().await,
            (["v1.0", "shutdown"], &Method::POST) => {
                if header("dapr-force-shutdown").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                    self.force_shutdown();
                } else {
                    self.request_shutdown();
                }
                empty(StatusCode::NO_CONTENT)
            }
            (["v1.0-alpha1" | "v1.0", "publish", "bulk", pubsub, topic @ ..], &Method::POST | &Method::PUT) => {
                let (tp, ts) = trace_context(header("traceparent"), header("tracestate"));
                self.bulk_publish(&decode(pubsub), &decode(&topic.join("/")), query, &tp, &ts, &body).await.unwrap_or_else(error)
            }
            (["v1.0", "publish", pubsub, topic @ ..], &Method::POST | &Method::PUT) => {
                let ct = header("content-type");
                let (tp, ts) = trace_context(header("traceparent"), header("tracestate"));
                match self.publish(&decode(pubsub), &decode(&topic.join("/")), query_metadata(query), ct.as_deref(), &tp, &ts, &body).await
                {
                    Ok(()) => empty(StatusCode::NO_CONTENT),
                    Err(e) => error(e),
                }
            }
            (["v1.0", "state", store, "bulk"], &Method::POST | &Method::PUT) => {
                self.state_bulk(&decode(store), &body).await.unwrap_or_else(error)
            }
            (["v1.0", "state", store, "transaction"], &Method::POST | &Method::PUT) => {
                let (tp, ts) = trace_context(header("traceparent"), header("tracestate"));
                match self.state_transaction(&decode(store), &body, query, (&tp, &ts)).await {
                    Ok(()) => empty(StatusCode::NO_CONTENT),
                    Err(e) => error(e),
                }
            }
            (["v1.0", "state", store], &Method::POST | &Method::PUT) => match self.state_save(&decode(store), &body, query).await {
                Ok(()) => empty(StatusCode::NO_CONTENT),
                Err(e) => error(e),
            },
            (["v1.0", "state", store, key @ ..], &Method::GET) if !key.is_empty() => {
                self.state_get(&decode(store), &decode(&key.join("/"))).await.unwrap_or_else(error)
            }
            (["v1.0", "state", store, key @ ..], &Method::DELETE) if !key.is_empty() => {
                let etag = header("if-match");
                match self.state_delete(&decode(store), &decode(&key.join("/")), etag, query).await {
                    Ok(()) => empty(StatusCode::NO_CONTENT),
                    Err(e) => error(e),
                }
            }
            (["v1.0", "metadata", key @ ..], &Method::PUT) if !key.is_empty() => {
                self.put_metadata(&decode(&key.join("/")), &body).await;
                empty(StatusCode::NO_CONTENT)
            }
            // daprd's fallback for every other route (and verb) is service invocation.
            _ => self.invoke(&parts, body).await,
        }
    }

    /// daprd's validateAndGetPubsubAndTopic: the pubsub and the topic named.
    fn check_publish(
        &self,
        pubsub: &str,
        topic: &str,
        md: &BTreeMap<String, String>,
    ) -> Result<(Arc<dyn spindapr_dapr_components::pubsub::PubSub>, &super::resources::Component), ApiError> {
        // daprd's pubsub adapter always exists: no pubsub at all is "not found" too.
        if pubsub.is_empty() {
            return Err(ApiError::pubsub_empty().with_metadata(md.iter().map(|(k, v)| (k.as_str(), v.clone()))));
        }
        let Some((ps, comp)) = self.pubsubs.get(pubsub) else {
            return Err(ApiError::pubsub_not_found(pubsub).with_metadata(md.iter().map(|(k, v)| (k.as_str(), v.clone()))));
        };
        if topic.is_empty() {
            return Err(ApiError::topic_empty(pubsub).with_metadata(md.iter().map(|(k, v)| (k.as_str(), v.clone()))));
        }
        Ok((ps.clone(), comp))
    }

    /// The publishing scope check, which daprd's publisher makes last (after the body
    /// was read and the envelope built).
    fn check_scope(&self, comp: &super::resources::Component, pubsub: &str, topic: &str) -> Result<(), ApiError> {
        if topic_allowed(comp, &self.cfg.app_id, topic, "publishingScopes") {
            Ok(())
        } else {
            Err(ApiError::pubsub_forbidden(pubsub, topic, &self.cfg.app_id))
        }
    }

    /// contrib's IsRawPayload: an empty value is false, anything else strconv.ParseBool.
    fn raw_payload(pubsub: &str, md: &BTreeMap<String, String>) -> Result<bool, ApiError> {
        match md.get("rawPayload").filter(|v| !v.is_empty()) {
            None => Ok(false),
            Some(v) => cloudevents::parse_go_bool(v)
                .ok_or_else(|| ApiError::pubsub_metadata(pubsub, format!("rawPayload value must be a valid boolean: actual is '{v}'"), md)),
        }
    }

    /// `POST /v1.0/publish/{pubsub}/{topic}`.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish(
        &self,
        pubsub: &str,
        topic: &str,
        metadata: BTreeMap<String, String>,
        content_type: Option<&str>,
        traceparent: &str,
        tracestate: &str,
        body: &[u8],
    ) -> Result<(), ApiError> {
        let (ps, comp) = self.check_publish(pubsub, topic, &metadata)?;
        let data = if Self::raw_payload(pubsub, &metadata)? {
            Bytes::copy_from_slice(body)
        } else {
            let input =
                PublishInput { app_id: &self.cfg.app_id, pubsub, topic, content_type, traceparent, tracestate, metadata: &metadata };
            let ce = cloudevents::envelope(&input, body, chrono::Utc::now()).map_err(|e| {
                tracing::debug!("cannot create cloudevent for topic {topic} pubsub {pubsub}: {e}");
                ApiError::pubsub_cloud_events_ser(pubsub, &self.cfg.app_id, e)
            })?;
            Bytes::from(cloudevents::to_go_json(&ce))
        };
        self.check_scope(comp, pubsub, topic)?;
        self.send(&ps, pubsub, Message { topic: topic.into(), data, metadata })
            .await
            .map_err(|e| ApiError::pubsub_publish(topic, pubsub, e))
    }

    /// Publishes under the component's outbound Resiliency policy.
    async fn send(&self, ps: &Arc<dyn spindapr_dapr_components::pubsub::PubSub>, pubsub: &str, msg: Message) -> Result<(), String> {
        let policy = self.resiliency.component(pubsub, crate::resiliency::Kind::Pubsub, crate::resiliency::Dir::Outbound);
        let (started, topic) = (std::time::Instant::now(), msg.topic.clone());
        let res = policy
            .run(|_| async { ps.publish(msg.clone()).await.map_err(|e: PubSubError| crate::resiliency::Failure::Other(format!("{e:#}"))) })
            .await
            .map_err(|e| e.to_string());
        let m = spindapr_metrics::sidecar();
        let labels = [self.cfg.app_id.as_str(), pubsub, namespace(), if res.is_ok() { "true" } else { "false" }, topic.as_str()];
        m.pubsub_egress_count.with_label_values(&labels).inc();
        m.pubsub_egress_latencies.with_label_values(&labels).observe(spindapr_metrics::millis(started.elapsed()));
        res
    }

    /// `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`, as daprd's onBulkPublish: each
    /// entry converted to bytes by its `contentType` (ConvertEventToBytes), wrapped with
    /// the caller's trace, request metadata merged into entries that carry their own.
    async fn bulk_publish(
        &self,
        pubsub: &str,
        topic: &str,
        query: Option<&str>,
        traceparent: &str,
        tracestate: &str,
        body: &[u8],
    ) -> Result<Resp, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry {
            #[serde(default, deserialize_with = "null_default")]
            entry_id: String,
            #[serde(default)]
            event: Value,
            #[serde(default, deserialize_with = "null_default")]
            content_type: String,
            #[serde(default)]
            metadata: Option<BTreeMap<String, String>>,
        }
        let app_id = &self.cfg.app_id;
        let req_md = query_metadata(query);
        self.check_publish(pubsub, topic, &req_md)?;
        Self::raw_payload(pubsub, &req_md)?;
        // Go's json.Decoder into a slice: the first value, keys folded, `null` = none.
        let unmarshal = |e: String| ApiError::pubsub_unmarshal_events(topic, pubsub, app_id, e);
        let entries: Vec<Entry> = match serde_json::Deserializer::from_slice(body).into_iter::<Value>().next() {
            None => return Err(unmarshal("EOF".into())),
            Some(Err(e)) => return Err(unmarshal(e.to_string())),
            Some(Ok(Value::Null)) => Vec::new(),
            Some(Ok(v @ Value::Array(_))) => {
                serde_json::from_value(crate::go_json::fold(v, &crate::go_json::BULK_PUBLISH)).map_err(|e| unmarshal(e.to_string()))?
            }
            Some(Ok(other)) => {
                let kind = match other {
                    Value::Object(_) => "object",
                    Value::String(_) => "string",
                    Value::Number(_) => "number",
                    _ => "bool",
                };
                return Err(unmarshal(format!("json: cannot unmarshal {kind} into Go value of type []http.bulkPublishMessageEntry")));
            }
        };
        let entries = entries
            .into_iter()
            .map(|e| BulkEntry {
                event: event_to_bytes(&e.event, &e.content_type),
                entry_id: e.entry_id,
                content_type: e.content_type,
                metadata: e.metadata,
            })
            .collect();
        let failed = self.bulk_publish_entries(pubsub, topic, req_md, entries, traceparent, tracestate).await?;
        let Some((_, first)) = failed.first() else {
            return Ok(empty(StatusCode::NO_CONTENT));
        };
        let desc = format!("api error: code = Internal desc = error when publishing to topic {topic} in pubsub {pubsub}: {first}");
        let body = serde_json::json!({
            "failedEntries": failed.iter().map(|(id, e)| serde_json::json!({"entryId": id, "error": e})).collect::<Vec<_>>(),
            "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
        });
        let mut r = json(StatusCode::INTERNAL_SERVER_ERROR, &body);
        for (k, v) in [("metadata.responsedata", body.to_string()), ("metadata.error", desc)] {
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        Ok(r)
    }

    /// daprd's bulk publish after the request was read: each entry (its event already
    /// converted to bytes, or the conversion's error) checked and enveloped in order,
    /// the scope checked, then each published; the entries that failed, with why.
    pub(crate) async fn bulk_publish_entries(
        &self,
        pubsub: &str,
        topic: &str,
        req_md: BTreeMap<String, String>,
        entries: Vec<BulkEntry>,
        traceparent: &str,
        tracestate: &str,
    ) -> Result<Vec<(String, String)>, ApiError> {
        let app_id = &self.cfg.app_id;
        let (ps, comp) = self.check_publish(pubsub, topic, &req_md)?;
        let raw = Self::raw_payload(pubsub, &req_md)?;
        let mut ids = std::collections::HashSet::new();
        let mut msgs = Vec::with_capacity(entries.len());
        for e in entries {
            let bytes = e.event.map_err(|err| ApiError::pubsub_marshal_envelope(topic, pubsub, app_id, err))?;
            if e.entry_id.is_empty() || !ids.insert(e.entry_id.clone()) {
                return Err(ApiError::pubsub_marshal_events(topic, pubsub, app_id));
            }
            let md = e.metadata.map(|own| {
                let mut m = req_md.clone();
                m.extend(own);
                m
            });
            let md = md.unwrap_or_default();
            let data = if raw {
                Bytes::from(bytes)
            } else {
                let ct = (!e.content_type.is_empty()).then_some(e.content_type.as_str());
                let input = PublishInput { app_id, pubsub, topic, content_type: ct, traceparent, tracestate, metadata: &md };
                let ce = cloudevents::envelope(&input, &bytes, chrono::Utc::now())
                    .map_err(|err| ApiError::pubsub_cloud_events_ser(pubsub, app_id, err))?;
                Bytes::from(cloudevents::to_go_json(&ce))
            };
            msgs.push((e.entry_id, Message { topic: topic.into(), data, metadata: md }));
        }
        self.check_scope(comp, pubsub, topic)?;
        let mut failed = Vec::new();
        for (id, msg) in msgs {
            if let Err(err) = self.send(&ps, pubsub, msg).await {
                failed.push((id, err));
            }
        }
        Ok(failed)
    }

    /// The state store `name` (daprd's GetStateStore checks).
    pub(crate) fn store_entry(&self, name: &str) -> Result<&super::StateEntry, ApiError> {
        self.store(name)
    }

    fn store(&self, name: &str) -> Result<&super::StateEntry, ApiError> {
        if self.states.is_empty() {
            return Err(ApiError::state_stores_not_configured(name));
        }
        self.states.get(name).ok_or_else(|| ApiError::state_store_not_found(name))
    }

    /// The stored key for `key`, after the store's `keyPrefix` strategy.
    fn state_key(&self, entry: &super::StateEntry, key: &str) -> Result<String, ApiError> {
        if key.contains("||") {
            return Err(ApiError::malformed(format!("input key/keyPrefix '{key}' can't contain '||'")));
        }
        // daprd's GetModifiedStateKey: the strategy lower-cased; an empty one is a prefix
        // of its own ("||key"); a literal with `||` was refused at start.
        let strategy = entry.component.meta("keyPrefix").map(str::to_lowercase);
        let prefix = match strategy.as_deref() {
            None | Some("appid") => (!self.cfg.app_id.is_empty()).then(|| self.cfg.app_id.clone()),
            Some("name") => Some(entry.component.name.clone()),
            Some("namespace") => Some(match std::env::var("NAMESPACE") {
                Ok(ns) if !ns.is_empty() => format!("{ns}.{}", self.cfg.app_id),
                _ => self.cfg.app_id.clone(),
            }),
            Some("none") => None,
            Some(literal) => Some(literal.to_string()),
        };
        Ok(match prefix {
            Some(p) => format!("{p}||{key}"),
            None => key.to_string(),
        })
    }

    /// The store's outbound Resiliency policy (every state call runs under it).
    fn state_policy(&self, store: &str) -> Arc<Policy> {
        self.resiliency.component(store, Kind::Statestore, Dir::Outbound)
    }

    /// daprd's `dapr_component_state_*` for one operation.
    fn record_state(&self, store: &str, operation: &str, ok: bool, started: std::time::Instant) {
        let m = spindapr_metrics::sidecar();
        let labels = [self.cfg.app_id.as_str(), store, namespace(), operation, if ok { "true" } else { "false" }];
        m.state_count.with_label_values(&labels).inc();
        m.state_latencies.with_label_values(&labels).observe(spindapr_metrics::millis(started.elapsed()));
    }

    /// The item stored under `key` (after the key prefix), read under the store's policy.
    pub(crate) async fn get_item(&self, store: &str, key: &str) -> Result<Option<Item>, ApiError> {
        let entry = self.store(store)?;
        let k = self.state_key(entry, key)?;
        let started = std::time::Instant::now();
        let got = self.state_policy(store).run(|_| async { entry.store.get(&k).await.map_err(Failure::Other) }).await;
        self.record_state(store, "get", got.is_ok(), started);
        got.map_err(|e| ApiError::state_get(key, store, e))
    }

    async fn state_get(&self, store: &str, key: &str) -> Result<Resp, ApiError> {
        match self.get_item(store, key).await? {
            Some(item) => {
                let mut r = Response::new(Full::new(item.data));
                r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                if let Some(etag) = item.etag.and_then(|e| http::HeaderValue::from_str(&e).ok()) {
                    r.headers_mut().insert(http::header::ETAG, etag);
                }
                // The store's response metadata as `metadata.<key>` headers (daprd's onGetState).
                for (k, v) in &item.metadata {
                    if let (Ok(name), Ok(value)) =
                        (http::HeaderName::from_bytes(format!("metadata.{k}").as_bytes()), http::HeaderValue::from_str(v))
                    {
                        r.headers_mut().insert(name, value);
                    }
                }
                Ok(r)
            }
            None => Ok(empty(StatusCode::NO_CONTENT)),
        }
    }

    /// daprd's onPostState: every item is checked (and the `metadata.*` query merged into
    /// its metadata, the query winning) before any is written.
    async fn state_save(&self, store: &str, body: &[u8], query: Option<&str>) -> Result<(), ApiError> {
        self.store(store)?;
        let reqs = parse_items(body)?;
        self.save_items(store, reqs, &query_metadata(query)).await
    }

    /// Saves `reqs` in order (`md` merged into each item's metadata, winning), as daprd's
    /// save: every item is checked before any is written.
    pub(crate) async fn save_items(&self, store: &str, reqs: Vec<ItemReq>, md: &BTreeMap<String, String>) -> Result<(), ApiError> {
        let entry = self.store(store)?;
        let mut sets = Vec::with_capacity(reqs.len());
        for mut r in reqs {
            if r.key.is_empty() {
                return Err(ApiError::malformed_plain("\"key\" is a required field"));
            }
            r.metadata.extend(md.iter().map(|(k, v)| (k.clone(), v.clone())));
            let options_error = r.options_error.take();
            sets.push((self.set_request(entry, r)?, options_error));
        }
        let policy = self.state_policy(store);
        for (req, options_error) in sets {
            if let Some(e) = options_error {
                return Err(ApiError::state_save(StatusCode::INTERNAL_SERVER_ERROR, store, e));
            }
            // As daprd's save: ETag errors are final, anything else is retried.
            let started = std::time::Instant::now();
            let run = policy
                .run(|_| async {
                    entry.store.set(req.clone()).await.map_err(|e| match e {
                        StateError::EtagMismatch(_) | StateError::InvalidEtag(_) => Failure::Permanent(e),
                        StateError::Other(_) => Failure::Other(e),
                    })
                })
                .await;
            self.record_state(store, "set", run.is_ok(), started);
            run.map_err(|e| match e {
                RunError::Failed(e @ StateError::EtagMismatch(_)) => ApiError::state_save(StatusCode::CONFLICT, store, e),
                RunError::Failed(e @ StateError::InvalidEtag(_)) => ApiError::state_save(StatusCode::BAD_REQUEST, store, e),
                other => ApiError::state_save(StatusCode::INTERNAL_SERVER_ERROR, store, other),
            })?;
        }
        Ok(())
    }

    fn set_request(&self, entry: &super::StateEntry, r: ItemReq) -> Result<SetRequest, ApiError> {
        if r.key.is_empty() {
            return Err(ApiError::malformed("failed saving state in state store: \"key\" is a required field"));
        }
        Ok(SetRequest {
            key: self.state_key(entry, &r.key)?,
            // daprd stores json.Marshal of an HTTP value (Go key order, quoted strings) and
            // a gRPC value's bytes as they are.
            value: match r.raw {
                Some(b) => b,
                None => Bytes::from(cloudevents::value_to_go_json(&r.value)),
            },
            etag: r.etag,
            concurrency: r.concurrency,
            metadata: r.metadata,
        })
    }

    async fn state_delete(&self, store: &str, key: &str, etag: Option<String>, query: Option<&str>) -> Result<(), ApiError> {
        let param =
            |name: &str| url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        self.delete_item(store, key, etag, param("concurrency").as_deref(), param("consistency").as_deref()).await
    }

    /// Deletes `key` with its ETag and options under the store's policy.
    pub(crate) async fn delete_item(
        &self,
        store: &str,
        key: &str,
        etag: Option<String>,
        concurrency: Option<&str>,
        consistency: Option<&str>,
    ) -> Result<(), ApiError> {
        let entry = self.store(store)?;
        let k = self.state_key(entry, key)?;
        let (concurrency, options_error) = request_options(concurrency, consistency);
        if let Some(e) = options_error {
            return Err(ApiError::state_delete(StatusCode::INTERNAL_SERVER_ERROR, key, e));
        }
        let req = DeleteRequest { key: k, etag, concurrency };
        // daprd retries every delete error, ETag mismatches included.
        let started = std::time::Instant::now();
        let run = self.state_policy(store).run(|_| async { entry.store.delete(req.clone()).await.map_err(Failure::Other) }).await;
        self.record_state(store, "delete", run.is_ok(), started);
        run.map_err(|e| match e {
            RunError::Failed(e @ StateError::EtagMismatch(_)) => ApiError::state_delete(StatusCode::CONFLICT, key, e),
            RunError::Failed(e @ StateError::InvalidEtag(_)) => ApiError::state_delete(StatusCode::BAD_REQUEST, key, e),
            other => ApiError::state_delete(StatusCode::INTERNAL_SERVER_ERROR, key, other),
        })
    }

    async fn state_bulk(&self, store: &str, body: &[u8]) -> Result<Resp, ApiError> {
        #[derive(serde::Deserialize)]
        struct Bulk {
            #[serde(default, deserialize_with = "null_default")]
            keys: Vec<String>,
            // Passed to the store by daprd; the stores here read none.
            #[serde(default, deserialize_with = "null_default")]
            #[allow(dead_code)]
            metadata: BTreeMap<String, String>,
            #[serde(default, deserialize_with = "null_default")]
            #[allow(dead_code)]
            parallelism: Option<u32>,
        }
        self.store(store)?;
        let b: Bulk = serde_json::from_slice(body).map_err(|e| ApiError::malformed(format!("failed parsing the bulk request: {e}")))?;
        let mut out = Vec::new();
        for (key, got) in self.bulk_get(store, b.keys).await? {
            let mut item = serde_json::json!({ "key": key });
            match got {
                Ok(Some(i)) => {
                    item["data"] =
                        serde_json::from_slice(&i.data).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&i.data).into_owned()));
                    if let Some(e) = i.etag {
                        item["etag"] = e.into();
                    }
                    if !i.metadata.is_empty() {
                        item["metadata"] = serde_json::to_value(&i.metadata).unwrap_or_default();
                    }
                }
                Ok(None) => {}
                Err(e) => item["error"] = e.into(),
            }
            out.push(item);
        }
        Ok(json(StatusCode::OK, &Value::Array(out)))
    }

    /// Each key's item (or why it could not be read), in the order asked.
    pub(crate) async fn bulk_get(&self, store: &str, keys: Vec<String>) -> Result<Vec<(String, Result<Option<Item>, String>)>, ApiError> {
        let entry = self.store(store)?;
        let mut out = Vec::with_capacity(keys.len());
        let (started, mut all_ok) = (std::time::Instant::now(), true);
        for key in keys {
            let k = self.state_key(entry, &key)?;
            let got = self.state_policy(store).run(|_| async { entry.store.get(&k).await.map_err(Failure::Other) }).await;
            all_ok &= got.is_ok();
            out.push((key, got.map_err(|e| e.to_string())));
        }
        self.record_state(store, "bulk_get", all_ok, started);
        Ok(out)
    }

    /// `trace`: the caller's traceparent and tracestate, carried by the outbox events.
    async fn state_transaction(&self, store: &str, body: &[u8], query: Option<&str>, trace: (&str, &str)) -> Result<(), ApiError> {
        #[derive(serde::Deserialize)]
        struct Tx {
            #[serde(default, deserialize_with = "null_default")]
            operations: Vec<TxOp>,
            #[serde(default, deserialize_with = "null_default")]
            #[allow(dead_code)]
            metadata: BTreeMap<String, String>,
        }
        #[derive(serde::Deserialize)]
        struct TxOp {
            operation: String,
            request: Value,
        }
        self.store(store)?;
        let tx: Tx = serde_json::from_slice(body).map_err(|e| ApiError::malformed(format!("failed parsing the transaction: {e}")))?;
        // Each operation's request is parsed when its turn comes (an unsupported
        // operation before a malformed one is reported first, as daprd's loop does).
        let ops = tx
            .operations
            .into_iter()
            .map(|op| {
                let r = serde_json::from_value::<ItemReq>(op.request)
                    .map_err(|e| ApiError::malformed(format!("failed parsing a transaction operation: {e}")));
                (op.operation, r)
            })
            .collect();
        // daprd gives every operation the request's `metadata.*` query (the query winning).
        self.transact(store, ops, &query_metadata(query), trace).await
    }

    /// Runs a transaction of `(operation, item)` pairs (`upsert` / `delete`), with the
    /// outbox when the store has one; `query_md` is merged into each item's metadata.
    pub(crate) async fn transact(
        &self,
        store: &str,
        tx_ops: Vec<(String, Result<ItemReq, ApiError>)>,
        query_md: &BTreeMap<String, String>,
        trace: (&str, &str),
    ) -> Result<(), ApiError> {
        let entry = self.store(store)?;
        let mut ops = Vec::new();
        let mut projections: BTreeMap<String, (Payload, BTreeMap<String, String>)> = BTreeMap::new();
        let mut published: Vec<(String, Payload, BTreeMap<String, String>)> = Vec::new();
        for (operation, r) in tx_ops {
            // The operation is checked before its request is used: an unsupported operation
            // is reported before a malformed request, as daprd's loop does.
            let upsert = match operation.as_str() {
                "upsert" => true,
                "delete" => false,
                other => return Err(ApiError::not_supported_state_operation(other)),
            };
            let mut r = r?;
            r.metadata.extend(query_md.iter().map(|(k, v)| (k.clone(), v.clone())));
            if upsert {
                if r.metadata.get("outbox.projection").is_some_and(|v| v == "true") {
                    if entry.outbox.is_none() && !entry.warned_no_outbox.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::error!(
                            store = %store,
                            "a transaction on state store {store} carries an outbox projection (key {:?}), but {} configures no outbox: \
                             the projection is not stored and NO EVENT IS PUBLISHED. Set outboxPublishPubsub and outboxPublishTopic \
                             in the component's metadata",
                            r.key,
                            entry.component.file.display()
                        );
                    }
                    projections.insert(r.key.clone(), (r.payload(), r.metadata.clone()));
                    continue;
                }
                published.push((r.key.clone(), r.payload(), r.metadata.clone()));
                ops.push(Operation::Upsert(self.set_request(entry, r)?));
            } else {
                if r.key.is_empty() {
                    return Err(ApiError::malformed("\"key\" is a required field"));
                }
                ops.push(Operation::Delete(DeleteRequest {
                    key: self.state_key(entry, &r.key)?,
                    etag: r.etag,
                    concurrency: r.concurrency,
                }));
            }
        }
        // The outbox: each event goes to the internal topic before the commit and its
        // marker into the transaction (see `outbox`).
        let policy = self.state_policy(store);
        let started = std::time::Instant::now();
        let Some(outbox) = &entry.outbox else {
            let run = policy.run(|_| async { entry.store.multi(ops.clone()).await.map_err(Failure::Other) }).await;
            self.record_state(store, "transaction", run.is_ok(), started);
            run.map_err(ApiError::transaction)?;
            return Ok(());
        };
        let (pubsub, topic) = outbox.target();
        let mut events = Vec::with_capacity(published.len());
        for (key, value, md) in published {
            // As daprd: a projection with the same key replaces the published payload,
            // `contentType` metadata decides how it is rendered, and the operation's
            // metadata (but `data` and `id`) is copied into the envelope.
            let (payload, ct) = match projections.remove(&key) {
                Some((v, pmd)) => (v, pmd.get("contentType").cloned()),
                None => (value, md.get("contentType").cloned()),
            };
            let ct = ct.filter(|c| !c.is_empty());
            let body = match (&ct, payload) {
                // A gRPC item's value is bytes already: daprd's outbox hands them on as they are.
                (_, Payload::Raw(b)) => b.to_vec(),
                (Some(c), Payload::Json(v)) if c.eq_ignore_ascii_case("application/json") => cloudevents::value_to_go_json(&v),
                (_, Payload::Json(v)) => cloudevents::go_fmt_v(&v).into_bytes(),
            };
            let none = BTreeMap::new();
            let input = PublishInput {
                app_id: &self.cfg.app_id,
                pubsub,
                topic,
                content_type: ct.as_deref(),
                // daprd's outbox sets only `traceid` (its `traceparent` stays empty, so the
                // delivery loses the trace); both fields here, so it reaches the subscriber.
                traceparent: trace.0,
                tracestate: trace.1,
                metadata: &none,
            };
            let mut ce = cloudevents::envelope(&input, &body, chrono::Utc::now()).map_err(ApiError::transaction)?;
            // The event's id is its marker's key.
            ce.insert("id".into(), Value::String(format!("outbox-{}", uuid::Uuid::new_v4())));
            for (k, v) in &md {
                if k != "data" && k != "id" {
                    ce.insert(k.clone(), Value::String(v.clone()));
                }
            }
            events.push(ce);
        }
        let (markers, pending) = outbox.prepare(events).await.map_err(|e| {
            tracing::error!(pubsub = %pubsub, "outbox: publishing to the internal topic failed; nothing committed: {e}");
            ApiError::pubsub_outbox(&self.cfg.app_id, e)
        })?;
        ops.extend(markers);
        let result = policy.run(|_| async { entry.store.multi(ops.clone()).await.map_err(Failure::Other) }).await;
        self.record_state(store, "transaction", result.is_ok(), started);
        outbox.finish(pending, result.is_ok()).await;
        result.map_err(ApiError::transaction)
    }

    /// `PUT /v1.0/metadata/{key}`: the body, as text, under `extended`.
    pub(crate) async fn put_metadata(&self, key: &str, body: &[u8]) {
        if !key.is_empty() {
            self.extended.write().await.insert(key.to_string(), String::from_utf8_lossy(body).into_owned());
        }
    }

    /// The metadata's `extended` map: the values set through the API, and daprd's
    /// `daprRuntimeVersion` (written last, so it cannot be replaced).
    pub(crate) async fn extended_metadata(&self) -> BTreeMap<String, String> {
        let mut extended = self.extended.read().await.clone();
        extended.insert("daprRuntimeVersion".into(), super::DAPR_VERSION.into());
        extended
    }

    /// `GET /v1.0/metadata` as daprd writes it: Go's encoder over its structs (fields in
    /// order, empty lists left out, `<>&` escaped, a trailing newline).
    async fn metadata(&self) -> Resp {
        use crate::cloudevents::write_string;
        let q = |s: &str| {
            let mut o = String::new();
            write_string(&mut o, s);
            o
        };
        let map = |m: &BTreeMap<String, String>| {
            let obj: serde_json::Map<String, Value> = m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            String::from_utf8_lossy(&cloudevents::value_to_go_json(&Value::Object(obj))).into_owned()
        };
        let list = |items: Vec<String>| format!("[{}]", items.join(","));
        let mut doc = Fields::default();
        doc.add("id", q(&self.cfg.app_id));
        doc.add("runtimeVersion", q(super::DAPR_VERSION));
        doc.add("enabledFeatures", list(ENABLED_FEATURES.iter().map(|f| q(f)).collect()));
        let components: Vec<String> = self
            .resources
            .components
            .iter()
            .map(|c| {
                let mut f = Fields::default();
                f.add("name", q(&c.name));
                f.add("type", q(&c.type_));
                if !c.version.is_empty() {
                    f.add("version", q(&c.version));
                }
                let caps = capabilities(&c.type_);
                if !caps.is_empty() {
                    f.add("capabilities", list(caps.iter().map(|c| q(c)).collect()));
                }
                f.end()
            })
            .collect();
        if !components.is_empty() {
            doc.add("components", list(components));
        }
        doc.add("extended", map(&self.extended_metadata().await));
        let subs: Vec<String> = self
            .subscriptions
            .read()
            .await
            .iter()
            .map(|s| {
                let mut f = Fields::default();
                f.add("pubsubname", q(&s.pubsub));
                f.add("topic", q(&s.topic));
                if !s.metadata.is_empty() {
                    f.add("metadata", map(&s.metadata));
                }
                let mut rules: Vec<String> = s
                    .rules
                    .iter()
                    .map(|r| {
                        let mut rf = Fields::default();
                        if !r.match_.trim().is_empty() {
                            rf.add("match", q(r.match_.trim()));
                        }
                        if !r.path.is_empty() {
                            rf.add("path", q(&r.path));
                        }
                        rf.end()
                    })
                    .collect();
                if let Some(d) = &s.default_path {
                    let mut rf = Fields::default();
                    rf.add("path", q(d));
                    rules.push(rf.end());
                }
                if !rules.is_empty() {
                    f.add("rules", list(rules));
                }
                f.add("deadLetterTopic", q(s.dead_letter_topic.as_deref().unwrap_or_default()));
                f.add("type", q(if s.declarative { "DECLARATIVE" } else { "PROGRAMMATIC" }));
                f.end()
            })
            .collect();
        if !subs.is_empty() {
            doc.add("subscriptions", list(subs));
        }
        let mut app = Fields::default();
        if let Some(port) = self.cfg.app_port.filter(|p| *p > 0) {
            app.add("port", port.to_string());
        }
        app.add("protocol", q(self.cfg.app_protocol.as_str()));
        app.add("channelAddress", q(&self.cfg.app_host));
        doc.add("appConnectionProperties", app.end());
        // No placement service: daprd's actor runtime reports itself disabled.
        doc.add("actorRuntime", r#"{"runtimeStatus":"DISABLED","hostReady":false,"placement":"placement: disconnected"}"#.into());
        if !self.resources.resiliency_names.is_empty() {
            let names = self.resources.resiliency_names.iter().map(|n| format!("{{\"name\":{}}}", q(n))).collect();
            doc.add("resiliencies", list(names));
        }
        let mut body = doc.end();
        body.push('\n');
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        r
    }
}

/// A Go struct's JSON: fields in the order added.
#[derive(Default)]
struct Fields(String);

impl Fields {
    fn add(&mut self, key: &str, raw: String) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        crate::cloudevents::write_string(&mut self.0, key);
        self.0.push(':');
        self.0.push_str(&raw);
    }

    fn end(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// What daprd reports a component type can do (its Features(), plus ACTOR for a state
/// store with ETAG and TRANSACTIONAL).
pub(crate) fn capabilities(type_: &str) -> &'static [&'static str] {
    match type_ {
        "state.in-memory" => &["ETAG", "TRANSACTIONAL", "TTL", "DELETE_WITH_PREFIX", "KEYS_LIKE", "ACTOR"],
        "state.redis" => &["ETAG", "TRANSACTIONAL", "TTL", "KEYS_LIKE", "ACTOR"],
        "pubsub.in-memory" => &["SUBSCRIBE_WILDCARDS"],
        "pubsub.kafka" => &["BULK_PUBSUB"],
        _ => &[],
    }
}

/// Go's encoding/json reads `null` as the zero value of any field: so do we.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Ok(<Option<T> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

/// One state item of a save or transaction request.
pub(crate) struct ItemReq {
    pub(crate) key: String,
    /// The value from JSON (HTTP), stored as Go's json.Marshal writes it.
    pub(crate) value: Value,
    /// The value as bytes (gRPC), stored as they are; wins over `value`.
    pub(crate) raw: Option<Bytes>,
    pub(crate) etag: Option<String>,
    pub(crate) concurrency: Concurrency,
    pub(crate) metadata: BTreeMap<String, String>,
    /// contrib's CheckRequestOptions refusal, reported when the store is called.
    pub(crate) options_error: Option<String>,
}

/// A transaction item's payload, for the outbox's event.
enum Payload {
    Json(Value),
    Raw(Bytes),
}

impl ItemReq {
    fn payload(&self) -> Payload {
        match &self.raw {
            Some(b) => Payload::Raw(b.clone()),
            None => Payload::Json(self.value.clone()),
        }
    }
}

/// One bulk publish entry, its event already converted to bytes (or why it could not be).
pub(crate) struct BulkEntry {
    pub(crate) entry_id: String,
    pub(crate) event: Result<Vec<u8>, String>,
    pub(crate) content_type: String,
    pub(crate) metadata: Option<BTreeMap<String, String>>,
}

/// contrib's CheckRequestOptions over a request's `concurrency` and `consistency`.
pub(crate) fn request_options(concurrency: Option<&str>, consistency: Option<&str>) -> (Concurrency, Option<String>) {
    let (c, mut err) = match concurrency.unwrap_or("") {
        "" => (Concurrency::Unspecified, None),
        "first-write" => (Concurrency::FirstWrite, None),
        "last-write" => (Concurrency::LastWrite, None),
        other => (Concurrency::Unspecified, Some(format!("unrecognized concurrency model '{other}'"))),
    };
    if let Some(other) = consistency.filter(|c| !matches!(*c, "" | "eventual" | "strong")) {
        err.get_or_insert_with(|| format!("unrecognized consistency model '{other}'"));
    }
    (c, err)
}

impl<'de> serde::Deserialize<'de> for ItemReq {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Raw {
            #[serde(default, deserialize_with = "null_default")]
            key: String,
            #[serde(default, deserialize_with = "null_default")]
            value: Value,
            #[serde(default, deserialize_with = "null_default")]
            etag: Option<String>,
            #[serde(default, deserialize_with = "null_default")]
            metadata: BTreeMap<String, String>,
            #[serde(default, deserialize_with = "null_default")]
            options: Option<Options>,
        }
        #[derive(serde::Deserialize)]
        struct Options {
            #[serde(default, deserialize_with = "null_default")]
            concurrency: Option<String>,
            #[serde(default, deserialize_with = "null_default")]
            consistency: Option<String>,
        }
        let r = Raw::deserialize(d)?;
        let (concurrency, options_error) = match &r.options {
            Some(o) => request_options(o.concurrency.as_deref(), o.consistency.as_deref()),
            None => (Concurrency::Unspecified, None),
        };
        Ok(ItemReq {
            key: r.key,
            value: r.value,
            raw: None,
            etag: r.etag.filter(|e| !e.is_empty()),
            concurrency,
            metadata: r.metadata,
            options_error,
        })
    }
}

fn parse_items(body: &[u8]) -> Result<Vec<ItemReq>, ApiError> {
    serde_json::from_slice::<Vec<ItemReq>>(body).map_err(|e| ApiError::malformed(format!("failed to parse the state request body: {e}")))
}

/// `publishingScopes` / `subscriptionScopes` and `allowedTopics` component metadata.
/// The caller's trace as daprd's HTTP tracing middleware keeps it with no tracing
/// Configuration (a no-op tracer): a valid `traceparent` re-serialised, its
/// `tracestate` normalised; an invalid or missing one is no trace.
pub(crate) fn trace_context(traceparent: Option<String>, tracestate: Option<String>) -> (String, String) {
    match traceparent.as_deref().and_then(crate::go_compat::normalise_traceparent) {
        Some(tp) => (tp, tracestate.as_deref().and_then(crate::go_compat::normalise_tracestate).unwrap_or_default()),
        None => (String::new(), String::new()),
    }
}

/// daprd's ConvertEventToBytes: what a bulk entry's `event` is for its `contentType`.
fn event_to_bytes(event: &Value, content_type: &str) -> Result<Vec<u8>, String> {
    const MISMATCH: &str = "error: mismatch between contentType and event";
    if cloudevents::is_binary_content_type(content_type) {
        let Value::String(s) = event else { return Err(MISMATCH.into()) };
        // Go's base64.StdEncoding: padding required, \r and \n skipped, trailing bits allowed.
        use base64::Engine as _;
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
        );
        let clean: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        return engine.decode(clean.as_bytes()).map_err(|e| {
            let at = match e {
                base64::DecodeError::InvalidByte(i, _) | base64::DecodeError::InvalidLastSymbol(i, _) => i,
                _ => clean.len(),
            };
            format!("error: unable to decode base64 application/octect-stream data: illegal base64 data at input byte {at}")
        });
    }
    if cloudevents::is_string_content_type(content_type) {
        return match event {
            Value::String(s) => Ok(s.clone().into_bytes()),
            _ => Err(MISMATCH.into()),
        };
    }
    if cloudevents::is_json_content_type(content_type) || cloudevents::is_cloudevent_content_type(content_type) {
        return Ok(cloudevents::value_to_go_json(event));
    }
    Err(MISMATCH.into())
}

/// daprd's `IsOperationAllowed` for `topic` with the component's `allowedTopics`,
/// `protectedTopics` and this app's topics under `scope_key` (`publishingScopes` or
/// `subscriptionScopes`), parsed as pkg/scopes does: every space removed, `;`-separated
/// `app=t1,t2` entries, all of this app's entries combined.
pub(crate) fn topic_allowed(c: &super::resources::Component, app_id: &str, topic: &str, scope_key: &str) -> bool {
    let list = |key: &str| -> Option<String> { c.meta(key).filter(|v| !v.is_empty()).map(|v| v.replace(' ', "")) };
    let allowed: Vec<String> = list("allowedTopics").map(|v| v.split(',').map(str::to_owned).collect()).unwrap_or_default();
    let protected: Vec<String> = list("protectedTopics").map(|v| v.split(',').map(str::to_owned).collect()).unwrap_or_default();
    let mut scoped: Vec<String> = Vec::new();
    for entry in list(scope_key).unwrap_or_default().split(';') {
        let parts: Vec<&str> = entry.split('=').collect();
        if parts.len() >= 2 && parts[0] == app_id {
            for t in parts[1].split(',') {
                if !scoped.iter().any(|s| s == t) {
                    scoped.push(t.to_string());
                }
            }
        }
    }
    let has = |l: &[String]| l.iter().any(|t| t == topic);
    if !allowed.is_empty() && !has(&allowed) {
        return false;
    }
    if has(&protected) || !scoped.is_empty() {
        return has(&scoped);
    }
    true
}
