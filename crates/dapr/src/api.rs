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
use spindapr_dapr_components::pubsub::{Message, PubSubError};
use spindapr_dapr_components::state::{Concurrency, DeleteRequest, Operation, SetRequest, StateError};

type Resp = Response<Full<Bytes>>;

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

impl Sidecar {
    /// Serves the API until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let me = self.clone();
        let service_for = move |_client| {
            let me = me.clone();
            hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let me = me.clone();
                async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
            })
        };
        spindapr_server::serve(listener, service_for, shutdown, Duration::from_secs(5)).await;
        self.close().await;
        Ok(())
    }

    /// Answers one API request.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Resp
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
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(&segs, &parts.method),
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
            (["v1.0", "metadata"], &Method::GET) => json(StatusCode::OK, &self.metadata().await),
            (["v1.0-alpha1" | "v1.0", "publish", "bulk", pubsub, topic @ ..], &Method::POST | &Method::PUT) => {
                self.bulk_publish(&decode(pubsub), &decode(&topic.join("/")), query, &body).await.unwrap_or_else(error)
            }
            (["v1.0", "publish", pubsub, topic @ ..], &Method::POST | &Method::PUT) => {
                let ct = header("content-type");
                let tp = header("traceparent").unwrap_or_default();
                let ts = header("tracestate").unwrap_or_default();
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
                match self.state_transaction(&decode(store), &body).await {
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
            // daprd's fallback route is service invocation, which finds no app id here.
            _ => error(ApiError::direct_invoke_no_app_id()),
        }
    }

    fn check_publish(&self, pubsub: &str, topic: &str) -> Result<Arc<dyn spindapr_dapr_components::pubsub::PubSub>, ApiError> {
        // daprd's pubsub adapter always exists: no pubsub at all is "not found" too.
        if pubsub.is_empty() {
            return Err(ApiError::pubsub_empty());
        }
        let Some((ps, comp)) = self.pubsubs.get(pubsub) else {
            return Err(ApiError::pubsub_not_found(pubsub));
        };
        if topic.is_empty() {
            return Err(ApiError::topic_empty(pubsub));
        }
        if !topic_allowed(comp, &self.cfg.app_id, topic, "publishingScopes") {
            return Err(ApiError::pubsub_forbidden(topic, &self.cfg.app_id));
        }
        Ok(ps.clone())
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
        let ps = self.check_publish(pubsub, topic)?;
        let raw = match metadata.get("rawPayload") {
            None => false,
            Some(v) => cloudevents::parse_go_bool(v)
                .ok_or_else(|| ApiError::pubsub_metadata(format!("rawPayload: strconv.ParseBool: parsing {v:?}: invalid syntax")))?,
        };
        let data = if raw {
            Bytes::copy_from_slice(body)
        } else {
            let input =
                PublishInput { app_id: &self.cfg.app_id, pubsub, topic, content_type, traceparent, tracestate, metadata: &metadata };
            let ce = cloudevents::envelope(&input, body, chrono::Utc::now()).map_err(|e| {
                tracing::debug!("cannot create cloudevent for topic {topic} pubsub {pubsub}: {e}");
                ApiError::pubsub_cloud_events_ser()
            })?;
            Bytes::from(cloudevents::to_go_json(&ce))
        };
        self.send(&ps, pubsub, Message { topic: topic.into(), data, metadata })
            .await
            .map_err(|e| ApiError::pubsub_publish(topic, pubsub, e))
    }

    /// Publishes through the component's outbound timeout policy, if any.
    async fn send(&self, ps: &Arc<dyn spindapr_dapr_components::pubsub::PubSub>, pubsub: &str, msg: Message) -> Result<(), String> {
        let fut = ps.publish(msg);
        let res = match self.resources.outbound_timeout(pubsub) {
            Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| Err(PubSubError(format!("timed out after {t:?}")))),
            None => fut.await,
        };
        res.map_err(|e| format!("{e:#}"))
    }

    /// `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`.
    async fn bulk_publish(&self, pubsub: &str, topic: &str, query: Option<&str>, body: &[u8]) -> Result<Resp, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry {
            #[serde(default, deserialize_with = "null_default")]
            entry_id: String,
            #[serde(default)]
            event: Value,
            #[serde(default, deserialize_with = "null_default")]
            content_type: String,
            #[serde(default, deserialize_with = "null_default")]
            metadata: BTreeMap<String, String>,
        }
        let ps = self.check_publish(pubsub, topic)?;
        let req_md = query_metadata(query);
        // Keys as Go's decoder reads them: the JS SDK sends `entryID`.
        let entries: Vec<Entry> = serde_json::from_slice::<Value>(body)
            .map(|v| crate::go_json::fold(v, &crate::go_json::BULK_PUBLISH))
            .and_then(serde_json::from_value)
            .map_err(|e| ApiError::pubsub_unmarshal_events(topic, pubsub, e))?;
        let mut ids = std::collections::HashSet::new();
        for e in &entries {
            if e.entry_id.is_empty() || !ids.insert(e.entry_id.clone()) {
                return Err(ApiError::pubsub_unmarshal_events(topic, pubsub, "entryId is duplicated or not present for entry"));
            }
        }
        let raw = req_md.get("rawPayload").and_then(|v| cloudevents::parse_go_bool(v)).unwrap_or(false);
        let mut failed = Vec::new();
        for e in entries {
            let mut md = req_md.clone();
            md.extend(e.metadata.clone());
            let bytes: Vec<u8> = match &e.event {
                Value::String(s) if !cloudevents::is_json_content_type(&e.content_type) => s.clone().into_bytes(),
                v => serde_json::to_vec(v).unwrap_or_default(),
            };
            let data = if raw {
                Bytes::from(bytes)
            } else {
                let ct = (!e.content_type.is_empty()).then_some(e.content_type.as_str());
                let input = PublishInput {
                    app_id: &self.cfg.app_id,
                    pubsub,
                    topic,
                    content_type: ct,
                    traceparent: "",
                    tracestate: "",
                    metadata: &md,
                };
                match cloudevents::envelope(&input, &bytes, chrono::Utc::now()) {
                    Ok(ce) => Bytes::from(cloudevents::to_go_json(&ce)),
                    Err(err) => {
                        failed.push(serde_json::json!({"entryId": e.entry_id, "error": err}));
                        continue;
                    }
                }
            };
            if let Err(err) = self.send(&ps, pubsub, Message { topic: topic.into(), data, metadata: md }).await {
                failed.push(serde_json::json!({"entryId": e.entry_id, "error": err}));
            }
        }
        if failed.is_empty() {
            Ok(empty(StatusCode::NO_CONTENT))
        } else {
            Ok(json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"failedEntries": failed, "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE"}),
            ))
        }
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
        let prefix = match entry.component.meta("keyPrefix").unwrap_or("appid") {
            "appid" | "" => Some(self.cfg.app_id.clone()),
            "name" => Some(entry.component.name.clone()),
            "namespace" => Some(match std::env::var("NAMESPACE") {
                Ok(ns) if !ns.is_empty() => format!("{ns}.{}", self.cfg.app_id),
                _ => self.cfg.app_id.clone(),
            }),
            "none" => None,
            literal => {
                if literal.contains("||") {
                    return Err(ApiError::malformed(format!("input key/keyPrefix '{literal}' can't contain '||'")));
                }
                Some(literal.to_string())
            }
        };
        Ok(match prefix {
            Some(p) => format!("{p}||{key}"),
            None => key.to_string(),
        })
    }

    async fn state_get(&self, store: &str, key: &str) -> Result<Resp, ApiError> {
        let entry = self.store(store)?;
        let k = self.state_key(entry, key)?;
        match entry.store.get(&k).await {
            Ok(Some(item)) => {
                let mut r = Response::new(Full::new(item.data));
                r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                if let Some(etag) = item.etag.and_then(|e| http::HeaderValue::from_str(&e).ok()) {
                    r.headers_mut().insert(http::header::ETAG, etag);
                }
                Ok(r)
            }
            Ok(None) => Ok(empty(StatusCode::NO_CONTENT)),
            Err(e) => Err(ApiError::state_get(key, store, e)),
        }
    }

    /// daprd's onPostState: every item is checked (and the `metadata.*` query merged into
    /// its metadata, the query winning) before any is written.
    async fn state_save(&self, store: &str, body: &[u8], query: Option<&str>) -> Result<(), ApiError> {
        let entry = self.store(store)?;
        let reqs = parse_items(body)?;
        let md = query_metadata(query);
        let mut sets = Vec::with_capacity(reqs.len());
        for mut r in reqs {
            if r.key.is_empty() {
                return Err(ApiError::malformed_plain("\"key\" is a required field"));
            }
            r.metadata.extend(md.iter().map(|(k, v)| (k.clone(), v.clone())));
            sets.push(self.set_request(entry, r)?);
        }
        for req in sets {
            entry.store.set(req).await.map_err(|e| match e {
                StateError::EtagMismatch(_) => ApiError::state_save(StatusCode::CONFLICT, store, e),
                StateError::InvalidEtag(_) => ApiError::state_save(StatusCode::BAD_REQUEST, store, e),
                StateError::Other(_) => ApiError::state_save(StatusCode::INTERNAL_SERVER_ERROR, store, e),
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
            // daprd stores json.Marshal of the value: Go key order, quoted strings.
            value: Bytes::from(cloudevents::value_to_go_json(&r.value)),
            etag: r.etag,
            concurrency: r.concurrency,
            metadata: r.metadata,
        })
    }

    async fn state_delete(&self, store: &str, key: &str, etag: Option<String>, query: Option<&str>) -> Result<(), ApiError> {
        let entry = self.store(store)?;
        let k = self.state_key(entry, key)?;
        let concurrency = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == "concurrency")
            .map(|(_, v)| if v == "first-write" { Concurrency::FirstWrite } else { Concurrency::LastWrite })
            .unwrap_or_default();
        entry.store.delete(DeleteRequest { key: k, etag, concurrency }).await.map_err(|e| match e {
            StateError::EtagMismatch(_) => ApiError::state_delete(StatusCode::CONFLICT, key, e),
            StateError::InvalidEtag(_) => ApiError::state_delete(StatusCode::BAD_REQUEST, key, e),
            StateError::Other(_) => ApiError::state_delete(StatusCode::INTERNAL_SERVER_ERROR, key, e),
        })
    }

    async fn state_bulk(&self, store: &str, body: &[u8]) -> Result<Resp, ApiError> {
        #[derive(serde::Deserialize)]
        struct Bulk {
            keys: Vec<String>,
            #[serde(default, deserialize_with = "null_default")]
            #[allow(dead_code)]
            parallelism: Option<u32>,
        }
        let entry = self.store(store)?;
        let b: Bulk = serde_json::from_slice(body).map_err(|e| ApiError::malformed(format!("failed parsing the bulk request: {e}")))?;
        let mut out = Vec::new();
        for key in b.keys {
            let k = self.state_key(entry, &key)?;
            let mut item = serde_json::json!({ "key": key });
            match entry.store.get(&k).await {
                Ok(Some(i)) => {
                    item["data"] =
                        serde_json::from_slice(&i.data).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&i.data).into_owned()));
                    if let Some(e) = i.etag {
                        item["etag"] = e.into();
                    }
                }
                Ok(None) => {}
                Err(e) => item["error"] = e.to_string().into(),
            }
            out.push(item);
        }
        Ok(json(StatusCode::OK, &Value::Array(out)))
    }

    async fn state_transaction(&self, store: &str, body: &[u8]) -> Result<(), ApiError> {
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
        let entry = self.store(store)?;
        let tx: Tx = serde_json::from_slice(body).map_err(|e| ApiError::malformed(format!("failed parsing the transaction: {e}")))?;
        let mut ops = Vec::new();
        let mut projections: BTreeMap<String, (Value, BTreeMap<String, String>)> = BTreeMap::new();
        let mut published: Vec<(String, Value, BTreeMap<String, String>)> = Vec::new();
        for op in tx.operations {
            let r: ItemReq = serde_json::from_value(op.request)
                .map_err(|e| ApiError::malformed(format!("failed parsing a transaction operation: {e}")))?;
            match op.operation.as_str() {
                "upsert" => {
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
                        projections.insert(r.key.clone(), (r.value.clone(), r.metadata.clone()));
                        continue;
                    }
                    published.push((r.key.clone(), r.value.clone(), r.metadata.clone()));
                    ops.push(Operation::Upsert(self.set_request(entry, r)?));
                }
                "delete" => {
                    if r.key.is_empty() {
                        return Err(ApiError::malformed("\"key\" is a required field"));
                    }
                    ops.push(Operation::Delete(DeleteRequest {
                        key: self.state_key(entry, &r.key)?,
                        etag: r.etag,
                        concurrency: r.concurrency,
                    }));
                }
                other => return Err(ApiError::not_supported_state_operation(other)),
            }
        }
        // The outbox: each event goes to the internal topic before the commit and its
        // marker into the transaction (see `outbox`).
        let Some(outbox) = &entry.outbox else {
            entry.store.multi(ops).await.map_err(ApiError::transaction)?;
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
            let body = match &ct {
                Some(c) if c.eq_ignore_ascii_case("application/json") => cloudevents::value_to_go_json(&payload),
                _ => cloudevents::go_fmt_v(&payload).into_bytes(),
            };
            let none = BTreeMap::new();
            let input = PublishInput {
                app_id: &self.cfg.app_id,
                pubsub,
                topic,
                content_type: ct.as_deref(),
                traceparent: "",
                tracestate: "",
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
            ApiError::pubsub_outbox(e)
        })?;
        ops.extend(markers);
        let result = entry.store.multi(ops).await;
        outbox.finish(pending, result.is_ok()).await;
        result.map_err(ApiError::transaction)
    }

    async fn metadata(&self) -> Value {
        let mut components: Vec<Value> = Vec::new();
        for c in &self.resources.components {
            let caps: &[&str] = match c.type_.as_str() {
                "state.in-memory" => &["ETAG", "TRANSACTIONAL", "TTL"],
                "pubsub.in-memory" => &["SUBSCRIBE_WILDCARDS"],
                _ => &[],
            };
            components.push(serde_json::json!({"name": c.name, "type": c.type_, "version": c.version, "capabilities": caps}));
        }
        let subs: Vec<Value> = self
            .subscriptions
            .read()
            .await
            .iter()
            .map(|s| {
                let mut rules: Vec<Value> = s.rules.iter().map(|r| serde_json::json!({"match": r.match_, "path": r.path})).collect();
                if let Some(d) = &s.default_path {
                    rules.push(serde_json::json!({"match": "", "path": d}));
                }
                serde_json::json!({
                    "pubsubname": s.pubsub,
                    "topic": s.topic,
                    "metadata": s.metadata,
                    "rules": rules,
                    "deadLetterTopic": s.dead_letter_topic.clone().unwrap_or_default(),
                    "type": if s.declarative { "DECLARATIVE" } else { "PROGRAMMATIC" },
                })
            })
            .collect();
        let mut v = serde_json::json!({
            "id": self.cfg.app_id,
            "runtimeVersion": super::RUNTIME_VERSION,
            "enabledFeatures": [],
            "actors": [],
            "components": components,
            "extended": {},
            "subscriptions": subs,
            "httpEndpoints": [],
        });
        if let Some(port) = self.cfg.app_port {
            v["appConnectionProperties"] =
                serde_json::json!({"port": port, "protocol": "http", "channelAddress": self.cfg.app_host, "maxConcurrency": -1});
        }
        v
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
struct ItemReq {
    key: String,
    value: Value,
    etag: Option<String>,
    concurrency: Concurrency,
    metadata: BTreeMap<String, String>,
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
            #[allow(dead_code)]
            consistency: Option<String>,
        }
        let r = Raw::deserialize(d)?;
        let concurrency = match r.options.and_then(|o| o.concurrency).as_deref() {
            Some("first-write") => Concurrency::FirstWrite,
            _ => Concurrency::LastWrite,
        };
        Ok(ItemReq { key: r.key, value: r.value, etag: r.etag.filter(|e| !e.is_empty()), concurrency, metadata: r.metadata })
    }
}

fn parse_items(body: &[u8]) -> Result<Vec<ItemReq>, ApiError> {
    serde_json::from_slice::<Vec<ItemReq>>(body).map_err(|e| ApiError::malformed(format!("failed to parse the state request body: {e}")))
}

/// `publishingScopes` / `subscriptionScopes` and `allowedTopics` component metadata.
fn topic_allowed(c: &super::resources::Component, app_id: &str, topic: &str, scope_key: &str) -> bool {
    if let Some(allowed) = c.meta("allowedTopics").filter(|v| !v.is_empty())
        && !allowed.split(',').any(|t| t.trim() == topic)
    {
        return false;
    }
    if let Some(scopes) = c.meta(scope_key).filter(|v| !v.is_empty()) {
        for part in scopes.split(';') {
            if let Some((app, topics)) = part.split_once('=')
                && app.trim() == app_id
            {
                return topics.split(',').any(|t| t.trim() == topic);
            }
        }
    }
    true
}
