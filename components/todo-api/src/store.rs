//! Todos in the Dapr state store, each under its own key (`todo:<id>`). Every change of
//! a todo is one state transaction: the todo (guarded by its ETag, or create-only) plus
//! an outbox projection carrying the event, so a todo and its event commit together or
//! not at all, and no entry is shared between writers of different todos. A delete
//! writes a tombstone (with a TTL) so its event travels the same way. The list is read
//! from the pages the subscriber projects from the events (see `todo_domain::list`).

use dapr_http::{Attempt, Dapr, DaprError, Exhausted, TxOp, conflict_or, optimistic};
use serde_json::Value;
use todo_domain::feed::{FEED_KEY, Feed};
use todo_domain::list::{self, Cursor, ListQuery, Page};
use todo_domain::todo::{ApiError, Stored, Todo, todo_key};

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
    /// Where todos live.
    pub name: String,
    /// Where the subscriber keeps the list pages.
    pub list_store: String,
    /// Seconds a deleted todo's tombstone is kept.
    pub tombstone_ttl: u64,
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

    /// Up to `q.limit` live todos from `q.cursor` on, in list order, and where the next
    /// page starts (`None` at the end of the list as it stands).
    pub async fn list(&self, q: &ListQuery) -> Result<(Vec<Todo>, Option<Cursor>), DaprError> {
        // The feed holds the tail page and its number; earlier pages are keys of their own.
        let feed: Feed = match self.dapr.get_state(&self.list_store, FEED_KEY).await? {
            Some(s) => serde_json::from_value(s.value).map_err(|e| protocol(format!("the subscriber's feed is not valid: {e}")))?,
            None => Feed::default(),
        };
        let mut at = q.cursor.unwrap_or_default();
        let mut out = Vec::new();
        let mut pages_read = 0;
        while pages_read < list::MAX_PAGES_PER_REQUEST && at.page <= feed.list_tail {
            // The full pages this answer may need, in one read; the tail is in the feed.
            let want = (q.limit - out.len()).div_ceil(list::PAGE_SIZE) + 1;
            let last = feed.list_tail.min(at.page + want as u64);
            let keys: Vec<String> = (at.page..last).map(list::page_key).collect();
            let mut pages: Vec<Page> = Vec::with_capacity(keys.len() + 1);
            for (key, s) in self.dapr.bulk_get(&self.list_store, &keys).await? {
                let page = match s {
                    Some(s) => serde_json::from_value(s.value).map_err(|e| protocol(format!("list page {key} is not valid: {e}")))?,
                    None => Page::default(),
                };
                pages.push(page);
            }
            if last == feed.list_tail {
                pages.push(Page { ids: feed.tail_ids.clone() });
            }
            for page in pages {
                pages_read += 1;
                while at.offset < page.ids.len() {
                    // Read only as many todos as could still fit.
                    let end = page.ids.len().min(at.offset + (q.limit - out.len()));
                    let keys: Vec<String> = page.ids[at.offset..end].iter().map(|id| todo_key(id)).collect();
                    for (_, s) in self.dapr.bulk_get(&self.name, &keys).await? {
                        at.offset += 1;
                        let live = s.and_then(|s| serde_json::from_value::<Stored>(s.value).ok()).and_then(Stored::live);
                        if let Some(t) = live.filter(|t| q.completed.is_none_or(|c| t.completed == c)) {
                            out.push(t);
                            if out.len() == q.limit {
                                return Ok((out, Some(at)));
                            }
                        }
                    }
                }
                // The tail page: the list ends here, for now.
                if at.page >= feed.list_tail {
                    return Ok((out, None));
                }
                at = Cursor { page: at.page + 1, offset: 0 };
            }
        }
        // Past the tail (a cursor from the future): nothing more, not the same cursor again.
        Ok((out, (at.page <= feed.list_tail).then_some(at)))
    }

    /// Writes a todo's entry and its event in one transaction.
    async fn commit(&self, id: &str, value: Value, etag: Option<String>, event: Value, ttl: Option<u64>) -> Result<(), DaprError> {
        let key = todo_key(id);
        let entry = match (&etag, ttl) {
            (None, _) => TxOp::create(key.clone(), value, ttl),
            (Some(_), None) => TxOp::write_guarded(key.clone(), value, etag),
            (Some(_), Some(t)) => {
                let mut op = TxOp::write_guarded(key.clone(), value, etag);
                if let TxOp::Upsert { metadata, .. } = &mut op {
                    metadata.insert("ttlInSeconds".into(), t.to_string());
                }
                op
            }
        };
        self.dapr.transaction(&self.name, &[entry, TxOp::outbox_event(key, event)]).await
    }

    /// Creates a todo: its entry (create-only) and its event, one transaction.
    pub async fn create(&self, todo: &Todo, event: Value) -> Result<(), Failure> {
        let value = serde_json::to_value(Stored::Todo(todo.clone())).map_err(protocol)?;
        self.commit(&todo.id, value, None, event, None).await?;
        Ok(())
    }

    /// Read-modify-write of one todo: `f` returns the event of the change (`None`:
    /// nothing changed).
    pub async fn update(&self, id: &str, f: impl Fn(&mut Todo) -> Result<Option<Value>, ApiError>) -> Result<Todo, Failure> {
        optimistic(MAX_ATTEMPTS, async || {
            let (mut todo, etag) = self.get(id).await?.ok_or_else(|| ApiError::not_found(id))?;
            let Some(event) = f(&mut todo)? else {
                return Ok(Attempt::Done(todo));
            };
            let value = serde_json::to_value(Stored::Todo(todo.clone())).map_err(protocol)?;
            Ok(conflict_or(self.commit(id, value, etag, event, None).await)?.map(|()| todo))
        })
        .await
        .map_err(conflict)
    }

    /// Deletes a todo: a tombstone committed with the event.
    pub async fn delete(&self, id: &str, check: impl Fn(&Todo) -> Result<Value, ApiError>) -> Result<(), Failure> {
        optimistic(MAX_ATTEMPTS, async || {
            let (todo, etag) = self.get(id).await?.ok_or_else(|| ApiError::not_found(id))?;
            let event = check(&todo)?;
            let tombstone = serde_json::to_value(Stored::Tombstone { deleted: true, id: id.to_string() }).map_err(protocol)?;
            Ok::<_, Failure>(conflict_or(self.commit(id, tombstone, etag, event, Some(self.tombstone_ttl)).await)?)
        })
        .await
        .map_err(conflict)
    }
}

fn conflict(e: Exhausted<Failure>) -> Failure {
    match e {
        Exhausted::Failed(f) => f,
        Exhausted::Conflicts(last) => {
            ApiError::new(409, "conflict", format!("the change kept conflicting with concurrent writers (last: {last}); try again")).into()
        }
    }
}
