//! Todos in the Dapr state store: each todo under its own key (`todo:<id>`), and the
//! list's order in a small index of ids. Every change of a todo is one state
//! transaction: the todo (guarded by its ETag) plus an outbox projection carrying the
//! event, so a todo and its event commit together or not at all. A delete writes a
//! tombstone (with a TTL) so its event travels the same way. The index is written
//! before a create and after a delete, each guarded by its ETag: an id whose todo never
//! committed, or is a tombstone, is skipped when listing, so the list never shows a
//! half-written change.

use std::collections::BTreeMap;

use dapr_http::{Dapr, DaprError, TxOp};
use serde_json::Value;
use todo_domain::todo::{ApiError, Index, Stored, TOMBSTONE_TTL_SECONDS, Todo, todo_key};

pub const INDEX_KEY: &str = "todo-index";
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
            Failure::Dapr(DaprError::Unreachable(m)) => {
                ApiError::new(503, "dapr_unavailable", format!("the Dapr sidecar is unreachable; nothing was changed ({m})"))
            }
            Failure::Dapr(e @ DaprError::Api { .. }) => ApiError::new(502, "dapr_error", format!("{e}; nothing was changed")),
            Failure::Dapr(e) => ApiError::new(502, "dapr_error", e.to_string()),
        }
    }
}

fn protocol(e: impl std::fmt::Display) -> DaprError {
    DaprError::Protocol(e.to_string())
}

pub struct Store {
    pub dapr: Dapr,
    pub name: String,
}

impl Store {
    /// A live todo and the ETag of its entry.
    pub async fn get(&self, id: &str) -> Result<Option<(Todo, Option<String>)>, DaprError> {
        match self.dapr.get_state(&self.name, &todo_key(id)).await? {
            None => Ok(None),
            Some(s) => {
                let stored: Stored = serde_json::from_value(s.value).map_err(|e| protocol(format!("todo {id} is not valid: {e}")))?;
                Ok(stored.live().map(|t| (t, s.etag)))
            }
        }
    }

    /// Every live todo, in creation order.
    pub async fn list(&self) -> Result<Vec<Todo>, DaprError> {
        let (index, _) = self.index().await?;
        let keys: Vec<String> = index.ids.iter().map(|id| todo_key(id)).collect();
        let mut out = Vec::with_capacity(keys.len());
        for (_, stored) in self.dapr.bulk_get(&self.name, &keys).await? {
            if let Some(s) = stored
                && let Ok(Stored::Todo(t)) = serde_json::from_value::<Stored>(s.value)
            {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// The index and its ETag; created empty on first use so later writes carry an ETag.
    async fn index(&self) -> Result<(Index, Option<String>), DaprError> {
        let mut stored = self.dapr.get_state(&self.name, INDEX_KEY).await?;
        if stored.is_none() {
            let empty = serde_json::to_value(Index::default()).map_err(protocol)?;
            self.dapr.create_state(&self.name, INDEX_KEY, &empty).await?;
            stored = self.dapr.get_state(&self.name, INDEX_KEY).await?;
        }
        match stored {
            None => Ok((Index::default(), None)),
            Some(s) => Ok((serde_json::from_value(s.value).map_err(|e| protocol(format!("the todo index is not valid: {e}")))?, s.etag)),
        }
    }

    /// Edits the index with optimistic concurrency.
    async fn edit_index(&self, f: impl Fn(&mut Index)) -> Result<(), Failure> {
        for _ in 0..MAX_ATTEMPTS {
            let (mut index, etag) = self.index().await?;
            f(&mut index);
            let value = serde_json::to_value(&index).map_err(protocol)?;
            match self.dapr.save_state(&self.name, INDEX_KEY, &value, etag.as_deref()).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_etag_mismatch() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(409, "conflict", "the todo list kept changing under concurrent writers; try again").into())
    }

    /// Writes a todo's entry and its event in one transaction.
    async fn commit(&self, id: &str, value: Value, etag: Option<String>, event: Value, ttl: Option<u64>) -> Result<(), DaprError> {
        let mut metadata = BTreeMap::new();
        if let Some(t) = ttl {
            metadata.insert("ttlInSeconds".to_string(), t.to_string());
        }
        let projection = BTreeMap::from([("outbox.projection".to_string(), "true".to_string()), ("contentType".to_string(), "application/json".to_string())]);
        let key = todo_key(id);
        let ops = [
            TxOp::Upsert { key: key.clone(), value, etag, first_write: true, metadata },
            TxOp::Upsert { key, value: event, etag: None, first_write: false, metadata: projection },
        ];
        self.dapr.transaction(&self.name, &ops).await
    }

    /// Creates a todo: listed first, then committed with its event.
    pub async fn create(&self, todo: &Todo, event: Value) -> Result<(), Failure> {
        self.edit_index(|i| i.ids.push(todo.id.clone())).await?;
        let value = serde_json::to_value(Stored::Todo(todo.clone())).map_err(protocol)?;
        self.commit(&todo.id, value, None, event, None).await?;
        Ok(())
    }

    /// Read-modify-write of one todo: `f` returns the new todo and its event (`None`:
    /// nothing changed), or the tombstone case for deletes.
    pub async fn update(&self, id: &str, f: impl Fn(&mut Todo) -> Result<Option<Value>, ApiError>) -> Result<Todo, Failure> {
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let (mut todo, etag) = self.get(id).await?.ok_or_else(|| ApiError::not_found(id))?;
            let Some(event) = f(&mut todo)? else {
                return Ok(todo);
            };
            let value = serde_json::to_value(Stored::Todo(todo.clone())).map_err(protocol)?;
            match self.commit(id, value, etag, event, None).await {
                Ok(()) => return Ok(todo),
                Err(e) if e.is_etag_mismatch() => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(conflict(last))
    }

    /// Deletes a todo: a tombstone committed with the event, then unlisted.
    pub async fn delete(&self, id: &str, check: impl Fn(&Todo) -> Result<Value, ApiError>) -> Result<(), Failure> {
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let (todo, etag) = self.get(id).await?.ok_or_else(|| ApiError::not_found(id))?;
            let event = check(&todo)?;
            let tombstone = serde_json::to_value(Stored::Tombstone { deleted: true, id: id.to_string() }).map_err(protocol)?;
            match self.commit(id, tombstone, etag, event, Some(TOMBSTONE_TTL_SECONDS)).await {
                Ok(()) => {
                    // Listing skips tombstones, so a failure here hides nothing.
                    if let Err(e) = self.edit_index(|i| i.ids.retain(|x| x != id)).await {
                        eprintln!("todo-api: {id} is deleted but still in the index: {:?}", e.to_api().message);
                    }
                    return Ok(());
                }
                Err(e) if e.is_etag_mismatch() => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(conflict(last))
    }
}

fn conflict(last: Option<DaprError>) -> Failure {
    let why = last.map(|e| e.to_string()).unwrap_or_default();
    ApiError::new(409, "conflict", format!("the change kept conflicting with concurrent writers (last: {why}); try again")).into()
}
