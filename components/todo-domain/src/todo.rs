//! The todo itself, free of I/O: the todo and its collection, request validation (title
//! trimmed, 1–200 characters; unknown fields, wrong types and malformed JSON rejected
//! with the field named), ETags, the events each change emits, and the JSON errors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub const MAX_BODY: usize = 64 * 1024;
pub const MAX_TITLE: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Todo {
    pub id: String,
    pub title: String,
    pub completed: bool,
    pub created_at: String,
    pub updated_at: String,
    /// Bumped on every change; the ETag is derived from it.
    pub version: u64,
}

impl Todo {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// What is stored under a todo's key: the todo, or a tombstone left by a delete (the
/// delete's event travels with the tombstone through the outbox; a TTL removes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stored {
    Tombstone { deleted: bool, id: String },
    Todo(Todo),
}

impl Stored {
    pub fn live(self) -> Option<Todo> {
        match self {
            Stored::Todo(t) => Some(t),
            Stored::Tombstone { .. } => None,
        }
    }
}

pub fn todo_key(id: &str) -> String {
    format!("todo:{id}")
}

/// Reads a TTL variable (`seen_ttl_seconds`, `tombstone_ttl_seconds`): whole seconds, at least 1 and at most ten years.
pub fn parse_ttl_seconds(name: &str, value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=10 * 365 * 24 * 3600).contains(&n) => Ok(n),
        _ => Err(format!("Spin variable {name} is {value:?}: expected whole seconds between 1 and 315360000")),
    }
}

/// An error answered to the client: status and `{"error": {"code","message","field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self { status: 400, code: "invalid_field", message: message.into(), field: Some(field.to_string()) }
    }

    pub fn not_found(id: &str) -> Self {
        Self::new(404, "not_found", format!("no todo with id {id}"))
    }

    pub fn body(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message });
        if let Some(f) = &self.field {
            e["field"] = json!(f);
        }
        json!({ "error": e })
    }
}

/// Which fields a request must, may or must not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// POST: title required, completed optional.
    Create,
    /// PUT: the full replacement, both required.
    Replace,
    /// PATCH: at least one of them.
    Patch,
}

/// A validated change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    pub title: Option<String>,
    pub completed: Option<bool>,
}

/// Validates a request body against `shape`.
pub fn parse_change(body: &[u8], shape: Shape) -> Result<Change, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(413, "payload_too_large", format!("the body is {} bytes; the limit is {MAX_BODY}", body.len())));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::new(400, "malformed_json", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::new(400, "malformed_json", "the body must be a JSON object"));
    };
    check_fields(&obj)?;
    let title = match obj.get("title") {
        None => None,
        Some(Value::String(s)) => {
            let t = s.trim();
            let n = t.chars().count();
            if n == 0 {
                return Err(ApiError::field("title", "title must not be empty"));
            }
            if n > MAX_TITLE {
                return Err(ApiError::field("title", format!("title is {n} characters; the limit is {MAX_TITLE}")));
            }
            Some(t.to_string())
        }
        Some(other) => return Err(ApiError::field("title", format!("title must be a string, not {}", kind(other)))),
    };
    let completed = match obj.get("completed") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(ApiError::field("completed", format!("completed must be a boolean, not {}", kind(other)))),
    };
    match shape {
        Shape::Create if title.is_none() => return Err(ApiError::field("title", "title is required")),
        Shape::Replace if title.is_none() => return Err(ApiError::field("title", "title is required")),
        Shape::Replace if completed.is_none() => return Err(ApiError::field("completed", "completed is required")),
        Shape::Patch if title.is_none() && completed.is_none() => {
            return Err(ApiError::new(400, "empty_patch", "send at least one of title, completed"));
        }
        _ => {}
    }
    Ok(Change { title, completed })
}

fn check_fields(obj: &Map<String, Value>) -> Result<(), ApiError> {
    for k in obj.keys() {
        if k != "title" && k != "completed" {
            return Err(ApiError::field(k, format!("unknown field {k:?}: a todo has title and completed")));
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks `If-Match` against a todo's ETag (`*` matches any).
pub fn check_if_match(if_match: Option<&str>, todo: &Todo) -> Result<(), ApiError> {
    match if_match {
        None => Ok(()),
        Some(v) if v.trim() == "*" => Ok(()),
        Some(v) if v.split(',').any(|t| t.trim().trim_start_matches("W/") == todo.etag()) => Ok(()),
        Some(v) => Err(ApiError::new(412, "precondition_failed", format!("If-Match {v} does not match the current ETag {}", todo.etag()))),
    }
}

pub const CREATED: &str = "todo.created";
pub const UPDATED: &str = "todo.updated";
pub const COMPLETED: &str = "todo.completed";
pub const DELETED: &str = "todo.deleted";
pub const EVENT_TYPES: [&str; 4] = [CREATED, UPDATED, COMPLETED, DELETED];

/// The event a change publishes.
pub fn event(event_type: &str, todo: &Todo, occurred_at: &str) -> Value {
    json!({ "event_type": event_type, "todo": todo, "occurred_at": occurred_at })
}

/// Applies a change to a todo; returns the event type it amounts to, or `None` when
/// nothing changed.
pub fn apply(todo: &mut Todo, change: &Change, now: &str) -> Option<&'static str> {
    let was_completed = todo.completed;
    let mut changed = false;
    if let Some(t) = &change.title
        && *t != todo.title
    {
        todo.title = t.clone();
        changed = true;
    }
    if let Some(c) = change.completed
        && c != todo.completed
    {
        todo.completed = c;
        changed = true;
    }
    if !changed {
        return None;
    }
    todo.version += 1;
    todo.updated_at = now.to_string();
    Some(if !was_completed && todo.completed { COMPLETED } else { UPDATED })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn todo() -> Todo {
        Todo { id: "1".into(), title: "a".into(), completed: false, created_at: "t0".into(), updated_at: "t0".into(), version: 1 }
    }

    #[test]
    fn create_validation_names_the_field() {
        assert_eq!(
            parse_change(br#"{"title":"  buy milk  "}"#, Shape::Create).unwrap(),
            Change { title: Some("buy milk".into()), completed: None }
        );
        let cases: &[(&[u8], u16, Option<&str>)] = &[
            (b"{", 400, None),
            (b"[]", 400, None),
            (br#"{}"#, 400, Some("title")),
            (br#"{"title":"   "}"#, 400, Some("title")),
            (br#"{"title":5}"#, 400, Some("title")),
            (br#"{"title":"x","completed":"yes"}"#, 400, Some("completed")),
            (br#"{"title":"x","priority":1}"#, 400, Some("priority")),
        ];
        for (body, status, field) in cases {
            let e = parse_change(body, Shape::Create).unwrap_err();
            assert_eq!((e.status, e.field.as_deref()), (*status, *field), "{}", String::from_utf8_lossy(body));
        }
        let long = format!(r#"{{"title":"{}"}}"#, "é".repeat(201));
        assert_eq!(parse_change(long.as_bytes(), Shape::Create).unwrap_err().field.as_deref(), Some("title"));
        let ok = format!(r#"{{"title":"{}"}}"#, "é".repeat(200));
        assert!(parse_change(ok.as_bytes(), Shape::Create).is_ok());
        assert_eq!(parse_ttl_seconds("t", " 60 "), Ok(60));
        assert!(parse_ttl_seconds("t", "0").is_err());
        assert!(parse_ttl_seconds("t", "-1").is_err());
        assert!(parse_ttl_seconds("t", "1h").unwrap_err().contains("Spin variable t"));
        let huge = vec![b' '; MAX_BODY + 1];
        assert_eq!(parse_change(&huge, Shape::Create).unwrap_err().status, 413);
    }

    #[test]
    fn replace_and_patch_shapes() {
        assert_eq!(parse_change(br#"{"title":"x"}"#, Shape::Replace).unwrap_err().field.as_deref(), Some("completed"));
        assert!(parse_change(br#"{"title":"x","completed":true}"#, Shape::Replace).is_ok());
        assert_eq!(parse_change(br#"{}"#, Shape::Patch).unwrap_err().code, "empty_patch");
        assert_eq!(parse_change(br#"{"completed":true}"#, Shape::Patch).unwrap(), Change { title: None, completed: Some(true) });
    }

    #[test]
    fn changes_pick_their_event_type() {
        let mut t = todo();
        assert_eq!(apply(&mut t, &Change { title: Some("b".into()), completed: None }, "t1"), Some(UPDATED));
        assert_eq!((t.version, t.updated_at.as_str()), (2, "t1"));
        assert_eq!(apply(&mut t, &Change { title: None, completed: Some(true) }, "t2"), Some(COMPLETED));
        assert_eq!(apply(&mut t, &Change { title: Some("b".into()), completed: Some(true) }, "t3"), None);
        assert_eq!(t.version, 3);
        assert_eq!(apply(&mut t, &Change { title: None, completed: Some(false) }, "t4"), Some(UPDATED));
        let e = event(CREATED, &t, "now");
        assert_eq!(e["event_type"], "todo.created");
        assert_eq!(e["todo"]["id"], "1");
        assert_eq!(e["occurred_at"], "now");
    }

    #[test]
    fn stored_values_tell_todos_from_tombstones() {
        let t = todo();
        let v = serde_json::to_value(Stored::Todo(t.clone())).unwrap();
        assert_eq!(serde_json::from_value::<Stored>(v).unwrap().live(), Some(t));
        let v = serde_json::to_value(Stored::Tombstone { deleted: true, id: "1".into() }).unwrap();
        assert_eq!(v, json!({"deleted": true, "id": "1"}));
        assert_eq!(serde_json::from_value::<Stored>(v).unwrap().live(), None);
        assert_eq!(todo_key("ab"), "todo:ab");
    }

    #[test]
    fn if_match() {
        let t = todo();
        assert!(check_if_match(None, &t).is_ok());
        assert!(check_if_match(Some("\"1\""), &t).is_ok());
        assert!(check_if_match(Some("W/\"1\""), &t).is_ok());
        assert!(check_if_match(Some("*"), &t).is_ok());
        assert_eq!(check_if_match(Some("\"2\""), &t).unwrap_err().status, 412);
    }
}
