//! The todo list as a projection of the event stream, free of I/O. Creating a todo
//! writes only that todo (and its event); the subscriber appends each created id to the
//! list's tail page, kept inside its feed entry, and when that page is full writes it
//! once as `todo-list:<n>` ([`PAGE_SIZE`] ids) and starts the next: every write touches
//! O(1) bytes whatever the number of todos. `GET /todos` walks the pages from a cursor
//! (`<page>.<offset>`), a page of results at a time, skipping ids whose todo was
//! deleted. The list is eventually consistent: an id appears once its `todo.created`
//! event has been delivered.

use serde::{Deserialize, Serialize};

use crate::todo::ApiError;

/// Ids per page: once the tail holds this many, the next id starts a new page.
pub const PAGE_SIZE: usize = 32;
/// `limit` when none is given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;
/// Pages one list request reads at most (deleted ids are skipped, so a sparse stretch
/// could otherwise make one request read without bound); the cursor resumes after them.
pub const MAX_PAGES_PER_REQUEST: usize = 20;

/// The state key of page `n`.
pub fn page_key(n: u64) -> String {
    format!("todo-list:{n}")
}

/// One page of ids, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Todo ids in the order their `todo.created` events arrived.
    pub ids: Vec<String>,
}

/// Where the list continues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The page number.
    pub page: u64,
    /// The index within the page of the next id to read.
    pub offset: usize,
}

impl Cursor {
    /// The cursor as it appears in URLs and answers.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.page, self.offset)
    }

    /// Reads a cursor given back by a client.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad =
            || ApiError::field("cursor", format!("cursor {s:?} is not one this API gave out; pass the next_cursor of a previous answer"));
        let (page, offset) = s.split_once('.').ok_or_else(bad)?;
        let page: u64 = page.parse().map_err(|_| bad())?;
        let offset: usize = offset.parse().map_err(|_| bad())?;
        if offset > PAGE_SIZE || page > u64::MAX / 2 {
            return Err(bad());
        }
        Ok(Self { page, offset })
    }
}

/// The query of `GET /todos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// How many todos at most.
    pub limit: usize,
    /// Where to start (the beginning when `None`).
    pub cursor: Option<Cursor>,
    /// `?completed=true|false`.
    pub completed: Option<bool>,
}

/// Parses `limit`, `cursor` and `completed`; anything else is refused by name.
pub fn parse_list_query(query: &str) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery { limit: DEFAULT_LIMIT, cursor: None, completed: None };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "limit" => {
                q.limit =
                    v.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                        ApiError::field("limit", format!("limit must be a whole number from 1 to {MAX_LIMIT}, not {v:?}"))
                    })?;
            }
            "cursor" => q.cursor = Some(Cursor::parse(v)?),
            "completed" => {
                q.completed = Some(match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::field("completed", format!("completed must be true or false, not {v:?}"))),
                })
            }
            other => {
                return Err(ApiError::field(other, format!("unknown query parameter {other:?}: use limit, cursor and completed")));
            }
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor { page: 12, offset: 30 };
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        for bad in ["", "1", "a.b", "1.-1", "1.33", "-1.0", "99999999999999999999.0", "1.2.3"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_are_checked_by_name() {
        assert_eq!(parse_list_query("").unwrap(), ListQuery { limit: DEFAULT_LIMIT, cursor: None, completed: None });
        let q = parse_list_query("limit=5&cursor=2.3&completed=true").unwrap();
        assert_eq!((q.limit, q.cursor, q.completed), (5, Some(Cursor { page: 2, offset: 3 }), Some(true)));
        for (bad, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("completed=yes", "completed"),
            ("cursor=zz", "cursor"),
            ("sort=asc", "sort"),
        ] {
            let e = parse_list_query(bad).unwrap_err();
            assert_eq!((e.status, e.field.as_deref()), (400, Some(field)), "{bad}");
        }
    }
}
