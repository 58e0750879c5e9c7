//! The pub/sub component contract: publish bytes to a topic, subscribe a handler to a
//! topic. The API layer and delivery never know which broker is behind it.

pub mod in_memory;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "redis")]
pub mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

/// A message as it crosses the broker: the envelope bytes and publish metadata.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic it is published to or was received from.
    pub topic: String,
    /// The payload, normally the CloudEvent envelope's JSON bytes.
    pub data: Bytes,
    /// Publish metadata, or what the broker attaches on delivery.
    pub metadata: BTreeMap<String, String>,
}

/// The broker could not publish or subscribe; the text is the broker's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PubSubError(pub String);

/// A handler's answer that a message was not processed (the broker decides what that
/// means: in-memory logs and drops it, Redis leaves it pending, Kafka retries in place).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotProcessed(pub String);

/// Called for each message; an error means "not processed" (the broker decides what
/// that means: in-memory logs it and moves on).
pub type Handler = Arc<dyn Fn(Message) -> BoxFuture<'static, Result<(), NotProcessed>> + Send + Sync>;

/// A pub/sub component: publishes to topics and runs handlers for subscribed ones.
#[async_trait::async_trait]
pub trait PubSub: Send + Sync {
    /// Sends a message to its topic.
    async fn publish(&self, msg: Message) -> Result<(), PubSubError>;
    /// Starts running `handler` for every message that arrives on `topic`.
    async fn subscribe(&self, topic: &str, handler: Handler) -> Result<(), PubSubError>;
    /// Stops delivering; pending work is abandoned.
    async fn close(&self) {}
}

/// Expands daprd's placeholders in a component value (pkg/runtime/meta): each `{uuid}`
/// a fresh UUID, `{appID}` the app id, `{podName}` $POD_NAME, `{namespace}`
/// `<$NAMESPACE>.<app id>`.
pub fn expand_placeholders(raw: &str, app_id: &str) -> String {
    let mut out = raw.to_string();
    while let Some(i) = out.find("{uuid}") {
        out.replace_range(i..i + "{uuid}".len(), &uuid::Uuid::new_v4().to_string());
    }
    let ns = format!("{}.{app_id}", std::env::var("NAMESPACE").unwrap_or_default());
    out.replace("{appID}", app_id).replace("{podName}", &std::env::var("POD_NAME").unwrap_or_default()).replace("{namespace}", &ns)
}

/// Builds the pub/sub for a component.
pub async fn from_component(c: &crate::Component, app_id: &str) -> Result<Arc<dyn PubSub>, crate::ComponentError> {
    match c.type_.as_str() {
        "pubsub.in-memory" => Ok(Arc::new(in_memory::InMemoryPubSub::default())),
        #[cfg(feature = "redis")]
        "pubsub.redis" => Ok(Arc::new(redis::RedisPubSub::new(c, app_id).await.map_err(|e| crate::ComponentError::init(c, e))?)),
        #[cfg(feature = "kafka")]
        "pubsub.kafka" => Ok(Arc::new(kafka::KafkaPubSub::new(c, app_id).map_err(|e| crate::ComponentError::init(c, e))?)),
        other => Err(crate::ComponentError::Unsupported { origin: c.origin(), type_: other.to_string() }),
    }
}
