//! The subscriber's decisions and its activity feed, free of I/O: which CloudEvents are
//! processed and which are dropped (and why), the feed of latest events and counts per
//! type (a bounded entry, so recording an event costs the same at any volume), and the
//! per-event marker keys that make an at-least-once duplicate count once.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::list::{PAGE_SIZE, Page};
use crate::todo::{EVENT_TYPES, MAX_TITLE};
const LATEST: usize = 10;
/// The longest event or todo id accepted (todo ids are UUIDs; outbox event ids are
/// `outbox-<uuid>`).
const MAX_ID: usize = 200;
/// Event ids whose effects are in the feed but whose marker may not be written yet.
const RECENT: usize = 32;

/// The state key of the subscriber's feed (which also holds the list's tail page).
pub const FEED_KEY: &str = "activity";

/// The marker key written, create-only, once an event's effects are in the feed: a later
/// delivery of the same CloudEvent id finds it and changes nothing. (Between the feed
/// write and the marker write, the feed's own `recent` ids cover the event: a Dapr state
/// transaction is not all-or-nothing on every store — Redis applies the operations that
/// pass — so effects and marker cannot rely on one.)
pub fn seen_key(event_id: &str) -> String {
    format!("seen:{event_id}")
}

/// The marker key of a dead-lettered event.
pub fn dead_letter_seen_key(event_id: &str) -> String {
    format!("seen-dlq:{event_id}")
}

/// What an event is about, once checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    pub event_id: String,
    pub event_type: String,
    pub todo_id: String,
    pub title: String,
    pub occurred_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Process(EventInfo),
    Drop(String),
}

/// Checks a delivered CloudEvent.
pub fn decide(body: &[u8]) -> Decision {
    let Ok(ce) = serde_json::from_slice::<Value>(body) else {
        return Decision::Drop("the body is not JSON".into());
    };
    let Some(event_id) = ce.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return Decision::Drop("the CloudEvent has no id".into());
    };
    // Ids become state keys and stay in the feed: anything this long is not one of ours.
    if event_id.len() > MAX_ID {
        return Decision::Drop(format!("the CloudEvent id is {} bytes long (at most {MAX_ID})", event_id.len()));
    }
    // JSON data arrives embedded; tolerate a JSON document sent as a string too.
    let data = match ce.get("data") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    };
    let Some(event_type) = data.get("event_type").and_then(Value::as_str) else {
        return Decision::Drop(format!("event {event_id} has no event_type"));
    };
    if !EVENT_TYPES.contains(&event_type) {
        return Decision::Drop(format!("event {event_id} has unknown event_type {event_type:?}"));
    }
    let Some(todo_id) = data.get("todo").and_then(|t| t.get("id")).and_then(Value::as_str) else {
        return Decision::Drop(format!("event {event_id} ({event_type}) carries no todo id"));
    };
    if todo_id.is_empty() || todo_id.len() > MAX_ID {
        return Decision::Drop(format!("event {event_id} ({event_type}) carries a todo id of {} bytes", todo_id.len()));
    }
    Decision::Process(EventInfo {
        event_id: event_id.to_string(),
        event_type: event_type.to_string(),
        todo_id: todo_id.to_string(),
        // Kept in the feed: bounded as the API bounds titles, whatever a publisher sent.
        title: data["todo"].get("title").and_then(Value::as_str).unwrap_or("").chars().take(MAX_TITLE).collect(),
        occurred_at: data.get("occurred_at").and_then(Value::as_str).unwrap_or("").chars().take(64).collect(),
    })
}

/// A dead-lettered event, as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event_id: String,
    pub topic: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feed {
    pub counts: BTreeMap<String, u64>,
    pub total: u64,
    /// Newest first.
    pub latest: VecDeque<EventInfo>,
    pub dead_lettered: u64,
    pub dead_letters: VecDeque<DeadLetter>,
    /// The number of the todo list's tail page (see `list`).
    #[serde(default)]
    pub list_tail: u64,
    /// The ids on the tail page (at most `PAGE_SIZE`); earlier pages are their own keys.
    #[serde(default)]
    pub tail_ids: Vec<String>,
    /// The latest event ids applied here (bounded), oldest first.
    #[serde(default)]
    pub recent: VecDeque<String>,
}

impl Feed {
    /// Whether an event id's effects are already in this feed (its marker may lag).
    pub fn applied(&self, event_id: &str) -> bool {
        self.recent.iter().any(|r| r == event_id)
    }

    /// Remembers that an event id's effects are in this feed.
    pub fn remember(&mut self, event_id: &str) {
        self.recent.push_back(event_id.to_string());
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    /// Appends a created todo's id to the list. When the tail page was full it is
    /// returned, with its number, to be written as its own key *before* this feed (the
    /// feed then moves on to the next page).
    pub fn append_to_list(&mut self, todo_id: &str) -> Option<(u64, Page)> {
        let flushed = if self.tail_ids.len() >= PAGE_SIZE {
            let page = Page { ids: std::mem::take(&mut self.tail_ids) };
            self.list_tail += 1;
            Some((self.list_tail - 1, page))
        } else {
            None
        };
        self.tail_ids.push(todo_id.to_string());
        flushed
    }

    /// Records an event (duplicates are kept out by the caller).
    pub fn record(&mut self, e: &EventInfo) {
        *self.counts.entry(e.event_type.clone()).or_default() += 1;
        self.total += 1;
        self.latest.push_front(e.clone());
        self.latest.truncate(LATEST);
    }

    /// Records a dead-lettered event.
    pub fn record_dead_letter(&mut self, d: DeadLetter) {
        self.dead_lettered += 1;
        self.dead_letters.push_front(d);
        self.dead_letters.truncate(LATEST);
    }

    /// The feed as served at GET /activity (without the list's bookkeeping).
    pub fn public(&self) -> Value {
        serde_json::json!({
            "total": self.total,
            "counts": self.counts,
            "latest": self.latest,
            "dead_lettered": self.dead_lettered,
            "dead_letters": self.dead_letters,
        })
    }
}

/// The answer Dapr reads.
pub fn status(s: &str) -> Value {
    serde_json::json!({ "status": s })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ce(id: &str, data: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"id": id, "specversion": "1.0", "data": data})).unwrap()
    }

    #[test]
    fn decisions() {
        let good = ce("e1", serde_json::json!({"event_type": "todo.created", "todo": {"id": "t1", "title": "x"}, "occurred_at": "now"}));
        assert!(matches!(decide(&good), Decision::Process(i) if i.todo_id == "t1" && i.event_type == "todo.created"));
        let long = ce("e7", serde_json::json!({"event_type": "todo.updated", "todo": {"id": "t", "title": "y".repeat(10_000)}}));
        assert!(matches!(decide(&long), Decision::Process(i) if i.title.chars().count() == MAX_TITLE));
        let as_string = ce("e2", Value::String(r#"{"event_type":"todo.deleted","todo":{"id":"t2"}}"#.into()));
        assert!(matches!(decide(&as_string), Decision::Process(i) if i.event_type == "todo.deleted"));
        for (body, why) in [
            (b"nope".to_vec(), "not JSON"),
            (ce("", serde_json::json!({})), "no id"),
            (ce("e3", serde_json::json!({"todo": {"id": "t"}})), "no event_type"),
            (ce("e4", serde_json::json!({"event_type": "todo.exploded", "todo": {"id": "t"}})), "unknown event_type"),
            (ce("e5", serde_json::json!({"event_type": "todo.created"})), "no todo id"),
            (ce(&"x".repeat(MAX_ID + 1), serde_json::json!({})), "bytes long"),
            (ce("e6", serde_json::json!({"event_type": "todo.created", "todo": {"id": "t".repeat(MAX_ID + 1)}})), "todo id of"),
        ] {
            match decide(&body) {
                Decision::Drop(r) => assert!(r.contains(why), "{r}"),
                other => panic!("expected a drop for {why}, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_feed_counts_and_stays_bounded() {
        let mut f = Feed::default();
        for i in 0..(LATEST + 10) {
            let e = EventInfo {
                event_id: format!("e{i}"),
                event_type: "todo.updated".into(),
                todo_id: "t".into(),
                title: String::new(),
                occurred_at: String::new(),
            };
            f.record(&e);
        }
        assert_eq!(f.latest.len(), LATEST);
        assert_eq!(f.latest[0].event_id, format!("e{}", LATEST + 9), "newest first");
        assert_eq!((f.total, f.counts["todo.updated"]), ((LATEST + 10) as u64, (LATEST + 10) as u64));
        f.record_dead_letter(DeadLetter { event_id: "e9".into(), topic: "todo-events".into() });
        assert_eq!(f.public()["dead_lettered"], 1);
        assert!(f.public().get("list_tail").is_none() && f.public().get("recent").is_none());
        assert_ne!(seen_key("a"), dead_letter_seen_key("a"));
    }

    #[test]
    fn recent_ids_are_bounded() {
        let mut f = Feed::default();
        for i in 0..(RECENT + 5) {
            f.remember(&format!("e{i}"));
        }
        assert_eq!(f.recent.len(), RECENT);
        assert!(!f.applied("e0") && f.applied(&format!("e{}", RECENT + 4)));
    }

    #[test]
    fn the_list_tail_fills_then_is_flushed_as_a_page() {
        let mut f = Feed::default();
        for i in 0..PAGE_SIZE {
            assert_eq!(f.append_to_list(&format!("t{i}")), None);
        }
        assert_eq!((f.list_tail, f.tail_ids.len()), (0, PAGE_SIZE));
        let (n, page) = f.append_to_list("next").unwrap();
        assert_eq!((n, page.ids.len(), page.ids[0].as_str()), (0, PAGE_SIZE, "t0"));
        assert_eq!((f.list_tail, f.tail_ids.clone()), (1, vec!["next".to_string()]));
    }
}
