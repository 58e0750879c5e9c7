//! Todos in the Dapr state store, one entry holding the whole collection so the list and
//! each todo always agree. Every change is one state transaction: the new collection
//! (guarded by its ETag) plus an outbox projection carrying the event, so the todo and
//! its event commit together or not at all. Concurrent writers retry on ETag conflict.

use std::collections::BTreeMap;

use dapr_http::{Dapr, DaprError, TxOp};
use serde_json::Value;

use todo_domain::todo::{ApiError, Collection};

pub const KEY: &str = "todos";
const MAX_ATTEMPTS: usize = 16;

/// Why a request could not be served.
#[derive(Debug)]
pub enum Failure {
    Api(ApiError),
    Dapr(DaprError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<DaprError> for Failure {
    fn from(e: DaprError) -> Self {
        Failure::Dapr(e)
    }
}

impl Failure {
    /// The client-facing error: the sidecar down is 503, any other Dapr failure 502.
    pub fn to_api(&self) -> ApiError {
        match self {
            Failure::Api(e) => e.clone(),
            Failure::Dapr(DaprError::Unreachable(m)) => ApiError::new(503, "dapr_unavailable", format!("the Dapr sidecar is unreachable; nothing was changed ({m})")),
            Failure::Dapr(e @ DaprError::Api { .. }) => ApiError::new(502, "dapr_error", format!("{e}; nothing was changed")),
            Failure::Dapr(e) => ApiError::new(502, "dapr_error", e.to_string()),
        }
    }
}

pub struct Store {
    pub dapr: Dapr,
    pub name: String,
}

impl Store {
        /// The collection and its ETag; an empty one is created on first use so every later
    /// write can be guarded by an ETag.
    pub async fn load(&self) -> Result<(Collection, Option<String>), DaprError> {
        let mut stored = self.dapr.get_state(&self.name, KEY).await?;
        if stored.is_none() {
            let empty = serde_json::to_value(Collection::default()).map_err(|e| DaprError::Protocol(e.to_string()))?;
            self.dapr.create_state(&self.name, KEY, &empty).await?;
            stored = self.dapr.get_state(&self.name, KEY).await?;
        }
        match stored {
            None => Ok((Collection::default(), None)),
            Some(s) => {
                let c = serde_json::from_value(s.value).map_err(|e| DaprError::Protocol(format!("the stored todo collection is not valid: {e}")))?;
                Ok((c, s.etag))
            }
        }
    }

    /// Read-modify-write: `f` edits the collection and returns its result and the event
    /// to publish (`None`: nothing changed, nothing written).
    pub async fn mutate<T>(&self, f: impl Fn(&mut Collection) -> Result<(T, Option<Value>), ApiError>) -> Result<T, Failure> {
                let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let (mut c, etag) = self.load().await?;
            let (out, event) = f(&mut c)?;
            let Some(event) = event else {
                return Ok(out);
            };
            let value = serde_json::to_value(&c).map_err(|e| DaprError::Protocol(e.to_string()))?;
            let projection = BTreeMap::from([("outbox.projection".to_string(), "true".to_string()), ("contentType".to_string(), "application/json".to_string())]);
            let ops = [
                TxOp::Upsert { key: KEY.into(), value, etag, first_write: true, metadata: BTreeMap::new() },
                TxOp::Upsert { key: KEY.into(), value: event, etag: None, first_write: false, metadata: projection },
            ];
            match self.dapr.transaction(&self.name, &ops).await {
                Ok(()) => return Ok(out),
                                Err(e) if e.is_etag_mismatch() => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        let why = last.map(|e| e.to_string()).unwrap_or_default();
        Err(ApiError::new(409, "conflict", format!("the change kept conflicting with concurrent writers (last: {why}); try again")).into())
    }
}
