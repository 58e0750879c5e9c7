//! The state store contract, as Dapr's: get/set/delete with ETags and first-write or
//! last-write concurrency, bulk get, and atomic multi-operation transactions.

pub mod in_memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

/// How a write is checked against concurrent ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// None asked for: an ETag, when sent, is checked.
    #[default]
    Unspecified,
    /// A write to an existing key must carry its current ETag.
    FirstWrite,
    /// Asked for explicitly: the latest write wins (state.redis then ignores an ETag;
    /// state.in-memory still checks it, as contrib's).
    LastWrite,
}

/// A stored value and its ETag.
#[derive(Debug, Clone, Default)]
pub struct Item {
    /// The value's bytes as stored.
    pub data: Bytes,
    /// The value's current ETag, if the store keeps one for it.
    pub etag: Option<String>,
    /// Response metadata (state.in-memory: `ttlExpireTime`).
    pub metadata: BTreeMap<String, String>,
}

/// A request to store one value.
#[derive(Debug, Clone)]
pub struct SetRequest {
    /// The key to write.
    pub key: String,
    /// The bytes to store.
    pub value: Bytes,
    /// The ETag the stored value must still have, if given.
    pub etag: Option<String>,
    /// How the write is checked against concurrent ones.
    pub concurrency: Concurrency,
    /// Request metadata, e.g. `ttlInSeconds`.
    pub metadata: BTreeMap<String, String>,
}

/// A request to delete one key.
#[derive(Debug, Clone)]
pub struct DeleteRequest {
    /// The key to delete.
    pub key: String,
    /// The ETag the stored value must still have, if given.
    pub etag: Option<String>,
    /// How the delete is checked against concurrent writes.
    pub concurrency: Concurrency,
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub enum Operation {
    /// Store a value.
    Upsert(SetRequest),
    /// Delete a key.
    Delete(DeleteRequest),
}

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The ETag check failed (the API answers 409).
    #[error("possible etag mismatch. error from state store: {0}")]
    EtagMismatch(String),
    /// The ETag is malformed for this store (the API answers 400).
    #[error("invalid etag value: {0}")]
    InvalidEtag(String),
    /// Any other failure (the API answers 500).
    #[error("{0}")]
    Other(String),
}

/// A state store component.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// The value at `key`, or `None` if there is none.
    async fn get(&self, key: &str) -> Result<Option<Item>, StateError>;
    /// Stores a value, subject to its ETag and concurrency checks.
    async fn set(&self, req: SetRequest) -> Result<(), StateError>;
    /// Deletes a key, subject to its ETag and concurrency checks.
    async fn delete(&self, req: DeleteRequest) -> Result<(), StateError>;
    /// All operations or none.
    async fn multi(&self, ops: Vec<Operation>) -> Result<(), StateError>;
}

/// Builds the state store for a component.
pub async fn from_component(c: &crate::Component) -> Result<Arc<dyn StateStore>, crate::ComponentError> {
    match c.type_.as_str() {
        "state.in-memory" => Ok(Arc::new(in_memory::InMemoryState::default())),
        #[cfg(feature = "redis")]
        "state.redis" => Ok(Arc::new(redis::RedisState::new(c).await.map_err(|e| crate::ComponentError::init(c, e))?)),
        other => Err(crate::ComponentError::Unsupported { origin: c.origin(), type_: other.to_string() }),
    }
}

/// `metadata.ttlInSeconds` of a request in seconds, if any (each store decides what zero
/// and negative values mean).
pub fn ttl(metadata: &BTreeMap<String, String>) -> Result<Option<i64>, StateError> {
    match metadata.get("ttlInSeconds") {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| StateError::Other(format!("failed to parse ttl from metadata: strconv.ParseInt: parsing {v:?}: invalid syntax"))),
    }
}
