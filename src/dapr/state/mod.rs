//! The state store contract, as Dapr's: get/set/delete with ETags and first-write or
//! last-write concurrency, bulk get, and atomic multi-operation transactions.

pub mod in_memory;
pub mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Concurrency {
    FirstWrite,
    #[default]
    LastWrite,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub data: Bytes,
    pub etag: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SetRequest {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct DeleteRequest {
    pub key: String,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
}

#[derive(Debug, Clone)]
pub enum Operation {
    Upsert(SetRequest),
    Delete(DeleteRequest),
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("possible etag mismatch. error from state store: {0}")]
    EtagMismatch(String),
    #[error("invalid etag value: {0}")]
    InvalidEtag(String),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Item>, StateError>;
    async fn set(&self, req: SetRequest) -> Result<(), StateError>;
    async fn delete(&self, req: DeleteRequest) -> Result<(), StateError>;
    /// All operations or none.
    async fn multi(&self, ops: Vec<Operation>) -> Result<(), StateError>;
}

/// Builds the state store for a component.
pub async fn from_component(c: &crate::dapr::resources::Component) -> anyhow::Result<Arc<dyn StateStore>> {
    match c.type_.as_str() {
        "state.in-memory" => Ok(Arc::new(in_memory::InMemoryState::default())),
        "state.redis" => Ok(Arc::new(redis::RedisState::new(c).await?)),
        other => anyhow::bail!("component {}: unsupported state store type {other}", c.name),
    }
}

/// `metadata.ttlInSeconds` of a request, if any.
pub fn ttl(metadata: &BTreeMap<String, String>) -> Result<Option<std::time::Duration>, StateError> {
    match metadata.get("ttlInSeconds") {
        None => Ok(None),
        Some(v) => {
            let secs: i64 =
                v.parse().map_err(|_| StateError::Other(anyhow::anyhow!("invalid ttlInSeconds {v:?}: expected a whole number")))?;
            Ok((secs >= 0).then(|| std::time::Duration::from_secs(secs as u64)))
        }
    }
}
