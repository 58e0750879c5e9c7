//! What daprd's Go `encoding/json` does with JSON an app sends (the subscription list,
//! delivery answers): object keys match struct fields case-insensitively (an exact match
//! first), a later key for the same field wins, unknown keys are ignored, and `null`
//! leaves a field at its zero value. [`fold`] rewrites a value into that canonical shape
//! so ordinary serde structs read it as daprd would.

use serde_json::{Map, Value};

/// The fields of a Go struct, as far as key folding needs them.
pub(crate) enum Shape {
    /// A value read as it is (strings, numbers, maps keyed by data such as metadata).
    Leaf,
    /// A struct: its JSON field names and their shapes.
    Struct(&'static [(&'static str, Shape)]),
    /// A slice of one shape.
    List(&'static Shape),
}

/// Rewrites `v` to `shape`'s canonical keys: known fields renamed, unknown ones and
/// `null`s dropped (so a missing field and a null one both take the zero value).
pub(crate) fn fold(v: Value, shape: &Shape) -> Value {
    match (v, shape) {
        (Value::Object(obj), Shape::Struct(fields)) => {
            let mut out = Map::new();
            for (key, value) in obj {
                let field = fields
                    .iter()
                    .find(|(name, _)| *name == key)
                    .or_else(|| fields.iter().find(|(name, _)| name.eq_ignore_ascii_case(&key)));
                let Some((name, inner)) = field else { continue };
                if value.is_null() {
                    out.remove(*name);
                    continue;
                }
                out.insert((*name).to_string(), fold(value, inner));
            }
            Value::Object(out)
        }
        (Value::Array(items), Shape::List(inner)) => Value::Array(items.into_iter().map(|i| fold(i, inner)).collect()),
        (v, _) => v,
    }
}

/// The app's `GET /dapr/subscribe` answer: a list of subscriptions.
pub(crate) const SUBSCRIPTIONS: Shape = Shape::List(&Shape::Struct(&[
    ("pubsubname", Shape::Leaf),
    ("topic", Shape::Leaf),
    ("route", Shape::Leaf),
    (
        "routes",
        Shape::Struct(&[
            ("rules", Shape::List(&Shape::Struct(&[("match", Shape::Leaf), ("path", Shape::Leaf)]))),
            ("default", Shape::Leaf),
        ]),
    ),
    ("metadata", Shape::Leaf),
    ("deadLetterTopic", Shape::Leaf),
    ("bulkSubscribe", Shape::Struct(&[("enabled", Shape::Leaf), ("maxMessagesCount", Shape::Leaf), ("maxAwaitDurationMs", Shape::Leaf)])),
]));

/// An app's answer to a delivery.
pub(crate) const DELIVERY_ANSWER: Shape = Shape::Struct(&[("status", Shape::Leaf)]);

/// An app's answer to a bulk delivery (contrib's `AppBulkResponse`).
pub(crate) const BULK_ANSWER: Shape =
    Shape::Struct(&[("statuses", Shape::List(&Shape::Struct(&[("entryId", Shape::Leaf), ("status", Shape::Leaf)])))]);

/// A bulk publish request's entries (daprd's `bulkPublishMessageEntry`; the JS SDK
/// sends `entryID`).
pub(crate) const BULK_PUBLISH: Shape = Shape::List(&Shape::Struct(&[
    ("entryId", Shape::Leaf),
    ("event", Shape::Leaf),
    ("contentType", Shape::Leaf),
    ("metadata", Shape::Leaf),
]));

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_fold_as_go_decodes_them() {
        let v = json!([{"pubsubName": "p", "TOPIC": "t", "Routes": {"Rules": [{"Match": "m", "PATH": "/x"}], "DEFAULT": "/d"},
                        "metadata": {"rawPayload": "true"}, "unknown": 1, "deadlettertopic": null}]);
        let folded = fold(v, &SUBSCRIPTIONS);
        assert_eq!(
            folded,
            json!([{"pubsubname": "p", "topic": "t", "routes": {"rules": [{"match": "m", "path": "/x"}], "default": "/d"},
                    "metadata": {"rawPayload": "true"}}])
        );
        // Metadata keys are data, not fields: kept as sent.
        assert_eq!(folded[0]["metadata"]["rawPayload"], "true");
        // A later key for the same field wins; an exact match is found like any other.
        assert_eq!(fold(json!({"Status": "RETRY", "status": "DROP"}), &DELIVERY_ANSWER), json!({"status": "DROP"}));
        assert_eq!(fold(json!({"status": "DROP", "STATUS": "RETRY"}), &DELIVERY_ANSWER), json!({"status": "RETRY"}));
        assert_eq!(fold(json!("SUCCESS"), &DELIVERY_ANSWER), json!("SUCCESS"));
    }
}
