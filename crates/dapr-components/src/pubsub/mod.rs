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

/// Called for each message; an error means "not processed" (the broker decides what
/// that means: in-memory logs it and moves on).
pub type Handler = Arc<dyn Fn(Message) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// A pub/sub component: publishes to topics and runs handlers for subscribed ones.
#[async_trait::async_trait]
pub trait PubSub: Send + Sync {
    /// Sends a message to its topic.
    async fn publish(&self, msg: Message) -> anyhow::Result<()>;
    /// Starts running `handler` for every message that arrives on `topic`.
    async fn subscribe(&self, topic: &str, handler: Handler) -> anyhow::Result<()>;
    /// Stops delivering; pending work is abandoned.
    async fn close(&self) {}
}

/// Builds the pub/sub for a component.
pub async fn from_component(c: &crate::Component, app_id: &str) -> anyhow::Result<Arc<dyn PubSub>> {
    match c.type_.as_str() {
        "pubsub.in-memory" => Ok(Arc::new(in_memory::InMemoryPubSub::default())),
        #[cfg(feature = "redis")]
        "pubsub.redis" => Ok(Arc::new(redis::RedisPubSub::new(c, app_id).await?)),
        #[cfg(feature = "kafka")]
        "pubsub.kafka" => Ok(Arc::new(kafka::KafkaPubSub::new(c, app_id)?)),
        other => anyhow::bail!("component {}: unsupported pub/sub type {other}", c.name),
    }
}
