//! daprd's API errors: the HTTP status and the JSON body
//! `{"errorCode","message","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",...}]}`
//! an app sees, with daprd's codes and messages.

use std::collections::BTreeMap;

use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The `reason` of the ErrorInfo detail, when daprd sends one.
    pub reason: Option<&'static str>,
    /// The ErrorInfo's `metadata` (`null` when daprd sets none).
    pub metadata: Option<BTreeMap<String, String>>,
    /// A ResourceInfo detail before the ErrorInfo: resource type and name.
    pub resource: Option<Box<(&'static str, String)>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), reason: None, metadata: None, resource: None }
    }

    /// With the ErrorInfo's metadata.
    pub fn with_metadata<'a>(mut self, md: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        self.metadata = Some(md.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        self
    }

    /// With a ResourceInfo detail (daprd's pubsub errors carry one, but for not found).
    pub fn with_resource(mut self, kind: &'static str, name: &str) -> Self {
        self.resource = Some(Box::new((kind, name.to_string())));
        self
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn body(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "errorCode": self.code, "message": self.message });
        if let Some(reason) = self.reason {
            let mut details = Vec::new();
            if let Some((kind, name)) = self.resource.as_deref() {
                details.push(serde_json::json!({
                    "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                    "description": self.message,
                    "owner": "",
                    "resource_name": name,
                    "resource_type": kind,
                }));
            }
            details.push(serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "domain": "dapr.io",
                "metadata": self.metadata,
                "reason": reason,
            }));
            v["details"] = serde_json::Value::Array(details);
        }
        v
    }

    // Pub/sub.
    pub fn pubsub_empty() -> Self {
        Self::new(StatusCode::NOT_FOUND, "ERR_PUBSUB_EMPTY", "pubsub name is empty").with_reason("DAPR_PUBSUB_NAME_EMPTY")
    }
    pub fn topic_empty(pubsub: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ERR_TOPIC_NAME_EMPTY", format!("topic is empty in pubsub {pubsub}"))
            .with_reason("DAPR_PUBSUB_TOPIC_NAME_EMPTY")
            .with_resource("pubsub", pubsub)
    }
    pub fn pubsub_not_found(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ERR_PUBSUB_NOT_FOUND", format!("pubsub {name} is not found")).with_reason("DAPR_PUBSUB_NOT_FOUND")
    }
    pub fn pubsub_forbidden(pubsub: &str, topic: &str, app_id: &str) -> Self {
        let message = format!("topic {topic} is not allowed for app id {app_id}");
        Self::new(StatusCode::FORBIDDEN, "ERR_PUBSUB_FORBIDDEN", message.clone())
            .with_reason("DAPR_PUBSUB_FORBIDDEN")
            .with_resource("pubsub", pubsub)
            .with_metadata([("error", message), ("topic", topic.to_string())])
    }
    pub fn pubsub_metadata(pubsub: &str, err: impl std::fmt::Display, md: &BTreeMap<String, String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ERR_PUBSUB_REQUEST_METADATA", format!("failed deserializing metadata. Error: {err}"))
            .with_reason("DAPR_PUBSUB_METADATA_DESERIALIZATION")
            .with_resource("pubsub", pubsub)
            .with_metadata(md.iter().map(|(k, v)| (k.as_str(), v.clone())))
    }
    pub fn pubsub_cloud_events_ser(pubsub: &str, app_id: &str, err: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR_PUBSUB_CLOUD_EVENTS_SER", "cannot create cloudevent")
            .with_reason("DAPR_PUBSUB_CLOUD_EVENT_CREATION")
            .with_resource("pubsub", pubsub)
            .with_metadata([("appID", app_id.to_string()), ("error", err.to_string())])
    }
    pub fn pubsub_publish(topic: &str, pubsub: &str, err: impl std::fmt::Display) -> Self {
        let err = err.to_string();
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_PUBSUB_PUBLISH_MESSAGE",
            format!("error when publishing to topic {topic} in pubsub {pubsub}: {err}"),
        )
        .with_reason("DAPR_PUBSUB_PUBLISH_MESSAGE")
        .with_resource("pubsub", pubsub)
        .with_metadata([("error", err), ("topic", topic.to_string())])
    }
    pub fn pubsub_unmarshal_events(topic: &str, pubsub: &str, app_id: &str, err: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ERR_PUBSUB_EVENTS_SER",
            format!("error when unmarshaling the request for topic {topic} pubsub {pubsub}: {err}"),
        )
        .with_reason("DAPR_PUBSUB_UNMARSHAL_EVENTS")
        .with_resource("pubsub", pubsub)
        .with_metadata([("appID", app_id.to_string())])
    }
    /// A bulk entry whose event does not convert to bytes for its content type.
    pub fn pubsub_marshal_envelope(topic: &str, pubsub: &str, app_id: &str, err: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ERR_PUBSUB_EVENTS_SER",
            format!("error when marshalling cloud event envelope for topic {topic} pubsub {pubsub}: {err}"),
        )
        .with_reason("DAPR_PUBSUB_MARSHAL_ENVELOPE")
        .with_resource("pubsub", pubsub)
        .with_metadata([("appID", app_id.to_string())])
    }
    /// A bulk request whose entry ids are missing or repeated.
    pub fn pubsub_marshal_events(topic: &str, pubsub: &str, app_id: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ERR_PUBSUB_EVENTS_SER",
            format!(
                "error marshaling events to bytes for topic {topic} pubsub {pubsub}. error: entryId is duplicated or not present for entry"
            ),
        )
        .with_reason("DAPR_PUBSUB_MARSHAL_EVENTS")
        .with_resource("pubsub", pubsub)
        .with_metadata([("appID", app_id.to_string())])
    }
    pub fn pubsub_outbox(app_id: &str, err: impl std::fmt::Display) -> Self {
        let err = err.to_string();
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR_PUBLISH_OUTBOX", format!("error while publishing outbox message: {err}"))
            .with_reason("DAPR_PUBSUB_OUTBOX")
            .with_metadata([("appID", app_id.to_string()), ("error", err)])
    }

    // State.
    pub fn state_stores_not_configured(name: &str) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR_STATE_STORE_NOT_CONFIGURED", format!("state store {name} is not configured"))
            .with_reason("DAPR_STATE_NOT_CONFIGURED")
    }
    pub fn state_store_not_found(name: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ERR_STATE_STORE_NOT_FOUND", format!("state store {name} is not found"))
            .with_reason("DAPR_STATE_NOT_FOUND")
    }
    pub fn body_read(err: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ERR_BODY_READ", format!("failed to read request body: {err}"))
    }
    /// `messages.NewAPIErrorHTTP(msg, ERR_MALFORMED_REQUEST, 400)`: no ErrorInfo details.
    pub fn malformed_plain(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", message)
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", message).with_reason("DAPR_STATE_ILLEGAL_KEY")
    }
    pub fn state_save(status: StatusCode, store: &str, err: impl std::fmt::Display) -> Self {
        Self::new(status, "ERR_STATE_SAVE", format!("failed saving state in state store {store}: {err}"))
    }
    pub fn state_get(key: &str, store: &str, err: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR_STATE_GET", format!("fail to get {key} from state store {store}: {err}"))
    }
    pub fn state_delete(status: StatusCode, key: &str, err: impl std::fmt::Display) -> Self {
        Self::new(status, "ERR_STATE_DELETE", format!("failed deleting state with key {key}: {err}"))
    }
    pub fn state_bulk_get(err: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR_STATE_BULK_GET", format!("failed getting state in bulk: {err}"))
    }
    pub fn transaction(err: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR_STATE_TRANSACTION", format!("error while executing state transaction: {err}"))
    }
    pub fn not_supported_state_operation(op: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ERR_NOT_SUPPORTED_STATE_OPERATION", format!("operation type {op} not supported"))
    }

    // Service invocation (daprd's fallback for any other route).
    /// A failed invocation: 500 with no details (daprd's APIError JSON).
    pub fn direct_invoke(id: &str, err: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR_DIRECT_INVOKE", format!("failed to invoke, id: {id}, err: {err}"))
    }
    pub fn direct_invoke_no_app_id() -> Self {
        Self::new(StatusCode::NOT_FOUND, "ERR_DIRECT_INVOKE", "failed getting app id either from the URL path or the header dapr-app-id")
    }

    // Health and auth.
    pub fn health_not_ready() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "ERR_HEALTH_NOT_READY", "dapr is not ready")
    }
}
