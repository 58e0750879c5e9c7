//! A small Dapr client for Spin components: publish, state get/save/delete and
//! transactions over daprd's HTTP API, sent with `spin_sdk::http::send`. It builds the
//! same URLs and bodies any Dapr SDK does, so it works unchanged against real daprd.
//! Errors carry daprd's `errorCode`. URL and body building and error parsing are plain
//! functions, tested natively.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spin_sdk::http::{Method, Request, Response};

/// A failed Dapr call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaprError {
    /// The sidecar could not be reached (not running, refused, denied by the allow-list).
    Unreachable(String),
    /// daprd answered with an error.
    Api { status: u16, error_code: String, message: String },
    /// The answer could not be understood.
    Protocol(String),
}

impl std::fmt::Display for DaprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaprError::Unreachable(m) => write!(f, "the Dapr sidecar is unreachable: {m}"),
            DaprError::Api { status, error_code, message } => write!(f, "Dapr answered {status} {error_code}: {message}"),
            DaprError::Protocol(m) => write!(f, "unexpected answer from Dapr: {m}"),
        }
    }
}

impl std::error::Error for DaprError {}

impl DaprError {
    /// An optimistic-concurrency conflict: an ETag mismatch on save or delete (409), or a
    /// failed transaction. daprd reports a transaction's ETag conflict only as
    /// ERR_STATE_TRANSACTION, with a store-specific message (in-memory: "possible etag
    /// mismatch", Redis: "failed to set key"), so every failed transaction counts: callers
    /// re-read and retry a bounded number of times.
    pub fn is_etag_mismatch(&self) -> bool {
        match self {
            DaprError::Api { status: 409, .. } => true,
            DaprError::Api { error_code, .. } => error_code == "ERR_STATE_TRANSACTION",
            _ => false,
        }
    }
}

/// Reads daprd's error body `{"errorCode","message"}`.
pub fn parse_error(status: u16, body: &[u8]) -> DaprError {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(default)]
        error_code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => DaprError::Api { status, error_code: b.error_code, message: b.message },
        Err(_) => DaprError::Api { status, error_code: String::new(), message: String::from_utf8_lossy(body).into_owned() },
    }
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters kept).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One operation of a state transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum TxOp {
    Upsert { key: String, value: Value, etag: Option<String>, first_write: bool, metadata: BTreeMap<String, String> },
    Delete { key: String, etag: Option<String> },
}

impl TxOp {
    /// Creates `key` only if it does not exist (first-write without an ETag): the
    /// transaction fails if it does. `ttl_seconds` lets the store expire it.
    pub fn create(key: impl Into<String>, value: Value, ttl_seconds: Option<u64>) -> Self {
        let metadata = ttl_seconds.map(|t| BTreeMap::from([("ttlInSeconds".to_string(), t.to_string())])).unwrap_or_default();
        TxOp::Upsert { key: key.into(), value, etag: None, first_write: true, metadata }
    }

    /// Writes `key` over the version `etag` (or creates it when `etag` is `None`), failing
    /// the transaction if it changed meanwhile.
    pub fn write_guarded(key: impl Into<String>, value: Value, etag: Option<String>) -> Self {
        TxOp::Upsert { key: key.into(), value, etag, first_write: true, metadata: BTreeMap::new() }
    }

    /// The outbox projection for `key`: the event the store's outbox publishes when the
    /// transaction commits, instead of the stored value (sent as JSON).
    pub fn outbox_event(key: impl Into<String>, event: Value) -> Self {
        let metadata = BTreeMap::from([
            ("outbox.projection".to_string(), "true".to_string()),
            ("contentType".to_string(), "application/json".to_string()),
        ]);
        TxOp::Upsert { key: key.into(), value: event, etag: None, first_write: false, metadata }
    }

    fn to_json(&self) -> Value {
        match self {
            TxOp::Upsert { key, value, etag, first_write, metadata } => {
                let mut req = json!({ "key": key, "value": value });
                if let Some(e) = etag {
                    req["etag"] = json!(e);
                }
                if *first_write {
                    req["options"] = json!({ "concurrency": "first-write" });
                }
                if !metadata.is_empty() {
                    req["metadata"] = json!(metadata);
                }
                json!({ "operation": "upsert", "request": req })
            }
            TxOp::Delete { key, etag } => {
                let mut req = json!({ "key": key });
                if let Some(e) = etag {
                    req["etag"] = json!(e);
                }
                json!({ "operation": "delete", "request": req })
            }
        }
    }
}

/// The body of `POST /v1.0/state/{store}/transaction`.
pub fn transaction_body(ops: &[TxOp]) -> Value {
    json!({ "operations": ops.iter().map(TxOp::to_json).collect::<Vec<_>>() })
}

/// A value read from the state store with its ETag.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub value: Value,
    pub etag: Option<String>,
}

/// A Dapr sidecar reachable over HTTP.
#[derive(Debug, Clone)]
pub struct Dapr {
    base: String,
    token: Option<String>,
}

impl Dapr {
    /// `base` like `http://127.0.0.1:3500`; `token` is DAPR_API_TOKEN, if the sidecar wants one.
    pub fn new(base: impl Into<String>, token: Option<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_string();
        Self { base, token: token.filter(|t| !t.is_empty()) }
    }

    pub fn publish_url(&self, pubsub: &str, topic: &str) -> String {
        format!("{}/v1.0/publish/{}/{}", self.base, encode_segment(pubsub), encode_segment(topic))
    }

    pub fn state_url(&self, store: &str, key: Option<&str>) -> String {
        match key {
            Some(k) => format!("{}/v1.0/state/{}/{}", self.base, encode_segment(store), encode_segment(k)),
            None => format!("{}/v1.0/state/{}", self.base, encode_segment(store)),
        }
    }

    async fn call(
        &self,
        method: Method,
        url: String,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>, Option<String>), DaprError> {
        let mut b = Request::builder();
        b.method(method).uri(url);
        if let Some(t) = &self.token {
            b.header("dapr-api-token", t.as_str());
        }
        for (k, v) in headers {
            b.header(*k, *v);
        }
        let req = match body {
            Some(body) => b.body(body).build(),
            None => b.build(),
        };
        let resp: Response = spin_sdk::http::send(req).await.map_err(|e| DaprError::Unreachable(format!("{e:?}")))?;
        let etag = resp.header("etag").and_then(|v| v.as_str()).map(str::to_owned);
        Ok((*resp.status(), resp.body().to_vec(), etag))
    }

    /// Publishes a JSON event; Dapr wraps it in a CloudEvent.
    pub async fn publish(&self, pubsub: &str, topic: &str, event: &Value) -> Result<(), DaprError> {
        let body = serde_json::to_vec(event).map_err(|e| DaprError::Protocol(e.to_string()))?;
        let (status, body, _) =
            self.call(Method::Post, self.publish_url(pubsub, topic), &[("content-type", "application/json")], Some(body)).await?;
        expect_no_content(status, &body)
    }

    /// Reads a key; `None` when it does not exist.
    pub async fn get_state(&self, store: &str, key: &str) -> Result<Option<Stored>, DaprError> {
        let (status, body, etag) = self.call(Method::Get, self.state_url(store, Some(key)), &[], None).await?;
        match status {
            200 if body.is_empty() => Ok(None),
            200 => {
                let value = serde_json::from_slice(&body).map_err(|e| DaprError::Protocol(format!("state {key} is not JSON: {e}")))?;
                Ok(Some(Stored { value, etag }))
            }
            204 => Ok(None),
            _ => Err(parse_error(status, &body)),
        }
    }

    /// Saves one key; with `etag`, only over that version.
    pub async fn save_state(&self, store: &str, key: &str, value: &Value, etag: Option<&str>) -> Result<(), DaprError> {
        let mut item = json!({ "key": key, "value": value });
        if let Some(e) = etag {
            item["etag"] = json!(e);
            item["options"] = json!({ "concurrency": "first-write" });
        }
        let body = serde_json::to_vec(&json!([item])).map_err(|e| DaprError::Protocol(e.to_string()))?;
        let (status, body, _) =
            self.call(Method::Post, self.state_url(store, None), &[("content-type", "application/json")], Some(body)).await?;
        expect_no_content(status, &body)
    }

    /// Reads several keys at once (`POST /v1.0/state/{store}/bulk`), in the order asked;
    /// `None` for a key that does not exist.
    pub async fn bulk_get(&self, store: &str, keys: &[String]) -> Result<Vec<(String, Option<Stored>)>, DaprError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::to_vec(&json!({ "keys": keys })).map_err(|e| DaprError::Protocol(e.to_string()))?;
        let url = format!("{}/bulk", self.state_url(store, None));
        let (status, body, _) = self.call(Method::Post, url, &[("content-type", "application/json")], Some(body)).await?;
        if status != 200 {
            return Err(parse_error(status, &body));
        }
        parse_bulk(&body)
    }

    /// Creates a key only if it does not exist (first-write without an ETag); `Ok(false)`
    /// when it already existed. Writing with ETags afterwards is then safe on every store,
    /// including Redis, where a write without an ETag may replace a concurrent one.
    pub async fn create_state(&self, store: &str, key: &str, value: &Value) -> Result<bool, DaprError> {
        let item = json!([{ "key": key, "value": value, "options": { "concurrency": "first-write" } }]);
        self.create_with(store, &item).await
    }

    async fn create_with(&self, store: &str, item: &Value) -> Result<bool, DaprError> {
        let body = serde_json::to_vec(item).map_err(|e| DaprError::Protocol(e.to_string()))?;
        let (status, body, _) =
            self.call(Method::Post, self.state_url(store, None), &[("content-type", "application/json")], Some(body)).await?;
        match expect_no_content(status, &body) {
            Ok(()) => Ok(true),
            Err(e) if e.is_etag_mismatch() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads `key`, creating it with `initial` first (first-write) when it is missing, so
    /// every later write can be guarded by its ETag.
    pub async fn get_or_create(&self, store: &str, key: &str, initial: &Value) -> Result<Stored, DaprError> {
        if let Some(s) = self.get_state(store, key).await? {
            return Ok(s);
        }
        self.create_state(store, key, initial).await?;
        self.get_state(store, key).await?.ok_or_else(|| DaprError::Protocol(format!("state {key} vanished right after it was created")))
    }

    /// As [`Dapr::create_state`], with a TTL (`ttlInSeconds` metadata); `Ok(false)` when
    /// the key already existed.
    pub async fn create_state_with_ttl(&self, store: &str, key: &str, value: &Value, ttl_seconds: u64) -> Result<bool, DaprError> {
        let item = json!([{ "key": key, "value": value, "options": { "concurrency": "first-write" }, "metadata": { "ttlInSeconds": ttl_seconds.to_string() } }]);
        self.create_with(store, &item).await
    }

    /// Deletes one key; with `etag`, only that version.
    pub async fn delete_state(&self, store: &str, key: &str, etag: Option<&str>) -> Result<(), DaprError> {
        let headers: Vec<(&str, &str)> = etag.map(|e| vec![("if-match", e)]).unwrap_or_default();
        let (status, body, _) = self.call(Method::Delete, self.state_url(store, Some(key)), &headers, None).await?;
        expect_no_content(status, &body)
    }

    /// Runs operations atomically.
    pub async fn transaction(&self, store: &str, ops: &[TxOp]) -> Result<(), DaprError> {
        let body = serde_json::to_vec(&transaction_body(ops)).map_err(|e| DaprError::Protocol(e.to_string()))?;
        let url = format!("{}/transaction", self.state_url(store, None));
        let (status, body, _) = self.call(Method::Post, url, &[("content-type", "application/json")], Some(body)).await?;
        expect_no_content(status, &body)
    }
}

/// The outcome of one optimistic attempt.
pub enum Attempt<T> {
    /// Done: stop with this value.
    Done(T),
    /// Someone else changed what was read: read again and retry.
    Conflict(DaprError),
}

impl<T> Attempt<T> {
    /// Maps the value of a done attempt.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Attempt<U> {
        match self {
            Attempt::Done(v) => Attempt::Done(f(v)),
            Attempt::Conflict(e) => Attempt::Conflict(e),
        }
    }
}

/// Runs read-modify-write `attempt`s until one is done, at most `max` times. After `max`
/// conflicts the last one is returned, so callers can answer 409 (or RETRY) with its text.
pub async fn optimistic<T, E>(max: usize, mut attempt: impl AsyncFnMut() -> Result<Attempt<T>, E>) -> Result<T, Exhausted<E>> {
    let mut last = None;
    for _ in 0..max.max(1) {
        match attempt().await.map_err(Exhausted::Failed)? {
            Attempt::Done(v) => return Ok(v),
            Attempt::Conflict(e) => last = Some(e),
        }
    }
    Err(Exhausted::Conflicts(last.unwrap_or_else(|| DaprError::Protocol("no attempt was made".into()))))
}

/// Why [`optimistic`] gave up.
#[derive(Debug)]
pub enum Exhausted<E> {
    /// An attempt failed with an error that retrying would not mend.
    Failed(E),
    /// Every attempt conflicted; the last conflict.
    Conflicts(DaprError),
}

/// Classifies a write's result for [`optimistic`]: an ETag conflict is a [`Attempt::Conflict`].
pub fn conflict_or<T>(r: Result<T, DaprError>) -> Result<Attempt<T>, DaprError> {
    match r {
        Ok(v) => Ok(Attempt::Done(v)),
        Err(e) if e.is_etag_mismatch() => Ok(Attempt::Conflict(e)),
        Err(e) => Err(e),
    }
}

/// Reads a bulk-get answer `[{key, data?, etag?, error?}]`.
pub fn parse_bulk(body: &[u8]) -> Result<Vec<(String, Option<Stored>)>, DaprError> {
    #[derive(serde::Deserialize)]
    struct Item {
        key: String,
        #[serde(default)]
        data: Option<Value>,
        #[serde(default)]
        etag: Option<String>,
        #[serde(default)]
        error: Option<String>,
    }
    let items: Vec<Item> = serde_json::from_slice(body).map_err(|e| DaprError::Protocol(format!("bulk answer: {e}")))?;
    items
        .into_iter()
        .map(|i| match i.error.filter(|e| !e.is_empty()) {
            Some(e) => Err(DaprError::Api { status: 500, error_code: "ERR_STATE_BULK_GET".into(), message: format!("{}: {e}", i.key) }),
            None => Ok((i.key, i.data.filter(|d| !d.is_null()).map(|value| Stored { value, etag: i.etag }))),
        })
        .collect()
}

fn expect_no_content(status: u16, body: &[u8]) -> Result<(), DaprError> {
    if (200..300).contains(&status) { Ok(()) } else { Err(parse_error(status, body)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_and_encoded_like_the_sdks() {
        let d = Dapr::new("http://127.0.0.1:3500/", Some(String::new()));
        assert_eq!(d.publish_url("pubsub", "todo-events"), "http://127.0.0.1:3500/v1.0/publish/pubsub/todo-events");
        assert_eq!(d.publish_url("pubsub", "a/b"), "http://127.0.0.1:3500/v1.0/publish/pubsub/a%2Fb");
        assert_eq!(d.state_url("statestore", Some("todo 1")), "http://127.0.0.1:3500/v1.0/state/statestore/todo%201");
        assert_eq!(d.state_url("statestore", None), "http://127.0.0.1:3500/v1.0/state/statestore");
        assert_eq!(d.token, None);
    }

    #[test]
    fn errors_carry_daprd_codes() {
        let e = parse_error(404, br#"{"errorCode":"ERR_PUBSUB_NOT_FOUND","message":"pubsub x is not found"}"#);
        assert_eq!(e, DaprError::Api { status: 404, error_code: "ERR_PUBSUB_NOT_FOUND".into(), message: "pubsub x is not found".into() });
        assert!(!e.is_etag_mismatch());
        assert!(parse_error(409, br#"{"errorCode":"ERR_STATE_SAVE","message":"x"}"#).is_etag_mismatch());
        assert!(
            parse_error(
                500,
                br#"{"errorCode":"ERR_STATE_TRANSACTION","message":"error while executing state transaction: possible etag mismatch"}"#
            )
            .is_etag_mismatch()
        );
        assert!(parse_error(500, br#"{"errorCode":"ERR_STATE_TRANSACTION","message":"error while executing state transaction: failed to set key todo||todos"}"#).is_etag_mismatch());
        assert!(!parse_error(500, br#"{"errorCode":"ERR_STATE_SAVE","message":"connection refused"}"#).is_etag_mismatch());
        assert_eq!(
            parse_error(502, b"bad gateway"),
            DaprError::Api { status: 502, error_code: String::new(), message: "bad gateway".into() }
        );
    }

    #[test]
    fn bulk_answers_are_read_in_order() {
        let got = parse_bulk(br#"[{"key":"a","data":{"x":1},"etag":"3"},{"key":"b"}]"#).unwrap();
        assert_eq!(got[0], ("a".to_string(), Some(Stored { value: json!({"x": 1}), etag: Some("3".into()) })));
        assert_eq!(got[1], ("b".to_string(), None));
        assert!(parse_bulk(br#"[{"key":"a","error":"boom"}]"#).is_err());
    }

    #[test]
    fn transaction_bodies_match_the_http_api() {
        let ops = vec![
            TxOp::Upsert {
                key: "todos".into(),
                value: json!({"a": 1}),
                etag: Some("7".into()),
                first_write: true,
                metadata: BTreeMap::new(),
            },
            TxOp::Upsert {
                key: "todos".into(),
                value: json!({"event_type": "todo.created"}),
                etag: None,
                first_write: false,
                metadata: BTreeMap::from([("outbox.projection".to_string(), "true".to_string())]),
            },
            TxOp::Delete { key: "gone".into(), etag: None },
        ];
        assert_eq!(
            transaction_body(&ops),
            json!({"operations": [
                {"operation": "upsert", "request": {"key": "todos", "value": {"a": 1}, "etag": "7", "options": {"concurrency": "first-write"}}},
                {"operation": "upsert", "request": {"key": "todos", "value": {"event_type": "todo.created"}, "metadata": {"outbox.projection": "true"}}},
                {"operation": "delete", "request": {"key": "gone"}}
            ]})
        );
    }
}
