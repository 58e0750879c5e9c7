//! The subscriber's decisions and its activity feed, free of I/O: which CloudEvents are
//! processed and which are dropped (and why), the feed of latest events and counts per
//! type, and idempotency on the CloudEvent `id` so an at-least-once duplicate is not
//! counted twice.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::todo::EVENT_TYPES;
const LATEST: usize = 50;
const REMEMBERED_IDS: usize = 1000;

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
    Decision::Process(EventInfo {
        event_id: event_id.to_string(),
        event_type: event_type.to_string(),
        todo_id: todo_id.to_string(),
        title: data["todo"].get("title").and_then(Value::as_str).unwrap_or("").to_string(),
        occurred_at: data.get("occurred_at").and_then(Value::as_str).unwrap_or("").to_string(),
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
    /// CloudEvent ids already counted (bounded).
    pub seen: VecDeque<String>,
}

impl Feed {
    /// Records an event; `false` when it was seen before (nothing changes).
    pub fn record(&mut self, e: &EventInfo) -> bool {
        if self.seen.contains(&e.event_id) {
            return false;
        }
        self.seen.push_back(e.event_id.clone());
        while self.seen.len() > REMEMBERED_IDS {
            self.seen.pop_front();
        }
        *self.counts.entry(e.event_type.clone()).or_default() += 1;
        self.total += 1;
        self.latest.push_front(e.clone());
        self.latest.truncate(LATEST);
        true
    }

    /// Records a dead-lettered event; `false` when seen before.
    pub fn record_dead_letter(&mut self, d: DeadLetter) -> bool {
        let key = format!("dlq:{}", d.event_id);
        if self.seen.contains(&key) {
            return false;
        }
        self.seen.push_back(key);
        self.dead_lettered += 1;
        self.dead_letters.push_front(d);
        self.dead_letters.truncate(LATEST);
        true
    }

    /// The feed as served at GET /activity (without the idempotency bookkeeping).
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
        let as_string = ce("e2", Value::String(r#"{"event_type":"todo.deleted","todo":{"id":"t2"}}"#.into()));
        assert!(matches!(decide(&as_string), Decision::Process(i) if i.event_type == "todo.deleted"));
        for (body, why) in [
            (b"nope".to_vec(), "not JSON"),
            (ce("", serde_json::json!({})), "no id"),
            (ce("e3", serde_json::json!({"todo": {"id": "t"}})), "no event_type"),
            (ce("e4", serde_json::json!({"event_type": "todo.exploded", "todo": {"id": "t"}})), "unknown event_type"),
            (ce("e5", serde_json::json!({"event_type": "todo.created"})), "no todo id"),
        ] {
            match decide(&body) {
                Decision::Drop(r) => assert!(r.contains(why), "{r}"),
                other => panic!("expected a drop for {why}, got {other:?}"),
            }
        }
    }

    #[test]
    fn duplicates_are_counted_once() {
        let mut f = Feed::default();
        let e = EventInfo { event_id: "e1".into(), event_type: "todo.created".into(), todo_id: "t".into(), title: "x".into(), occurred_at: "".into() };
        assert!(f.record(&e));
        assert!(!f.record(&e));
        assert_eq!((f.total, f.counts["todo.created"], f.latest.len()), (1, 1, 1));
        let mut e2 = e.clone();
        e2.event_id = "e2".into();
        e2.event_type = "todo.completed".into();
        assert!(f.record(&e2));
        assert_eq!(f.latest[0].event_id, "e2", "newest first");
        assert!(f.record_dead_letter(DeadLetter { event_id: "e9".into(), topic: "todo-events".into() }));
        assert!(!f.record_dead_letter(DeadLetter { event_id: "e9".into(), topic: "todo-events".into() }));
        assert_eq!(f.public()["dead_lettered"], 1);
        assert!(f.public().get("seen").is_none());
    }

    #[test]
    fn memory_of_ids_is_bounded() {
        let mut f = Feed::default();
        for i in 0..(REMEMBERED_IDS + 10) {
            let e = EventInfo { event_id: format!("e{i}"), event_type: "todo.updated".into(), todo_id: "t".into(), title: String::new(), occurred_at: String::new() };
            f.record(&e);
        }
        assert_eq!(f.seen.len(), REMEMBERED_IDS);
        assert_eq!(f.latest.len(), LATEST);
        assert_eq!(f.total, (REMEMBERED_IDS + 10) as u64);
    }
}
