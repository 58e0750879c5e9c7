//! The app over gRPC (`--app-protocol grpc`), as daprd's gRPC channel calls it:
//! subscriptions from `AppCallback.ListTopicSubscriptions` (UNIMPLEMENTED = none), and each
//! delivery as `OnTopicEvent` with the TopicEventRequest daprd builds from the CloudEvent
//! (`data` from `data_base64`, text as it is, JSON re-encoded as Go's json.Marshal, any
//! other content type empty; every other CloudEvent field under `extensions`), answered
//! SUCCESS / RETRY / DROP; UNIMPLEMENTED acknowledges the message with no dead letter,
//! any other gRPC error is a status-code failure for Resiliency's `gRPCStatusCodes`.
//! Bulk subscriptions go as `OnBulkTopicEvent` (then `OnBulkTopicEventAlpha1` when that is
//! UNIMPLEMENTED; both UNIMPLEMENTED acknowledges the batch as dropped), read per entry.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::app_channel::{AppChannel, TransportError};
use crate::bulk::EntryOutcome;
use crate::grpc::pb::runtime as rt;
use crate::resources::{self, Subscription};

/// What the app's answer to one event means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcAnswer {
    /// SUCCESS (an empty answer too).
    Success,
    /// DROP: acknowledged, and dead-lettered when the subscription has a topic for it.
    Drop,
    /// RETRY, or an unknown status.
    Retry(String),
    /// UNIMPLEMENTED: acknowledged as dropped, never dead-lettered.
    Unimplemented(String),
    /// Any other gRPC error: its code (for `matching.gRPCStatusCodes`) and message.
    Error(u32, String),
}

/// A protobuf Struct from a JSON object (as protojson reads Go's json.Marshal of it).
fn to_struct(m: &serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct { fields: m.iter().map(|(k, v)| (k.clone(), to_proto_value(v))).collect() }
}

fn to_proto_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue { values: a.iter().map(to_proto_value).collect() }),
        Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The CloudEvent fields a TopicEventRequest carries in its own fields.
const OWN_FIELDS: &[&str] = &["id", "source", "datacontenttype", "type", "specversion", "data", "data_base64"];

/// daprd's TopicEventRequest for `event` delivered on `path`; `Err` (the app is not called,
/// the attempt fails) when the data does not fit its content type.
pub fn topic_event_request(event: &Value, topic: &str, pubsub: &str, path: &str) -> Result<rt::TopicEventRequest, String> {
    let empty = serde_json::Map::new();
    let ce = event.as_object().unwrap_or(&empty);
    let field = |k: &str| ce.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let content_type = field("datacontenttype");
    let data = match (ce.get("data_base64").filter(|v| !v.is_null()), ce.get("data").filter(|v| !v.is_null())) {
        (Some(Value::String(b64)), _) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("failed to decode data_base64: {e}"))?
        }
        (Some(_), _) => return Err("data_base64 is not a string".into()),
        (None, Some(data)) => {
            if crate::cloudevents::is_string_content_type(&content_type) {
                match data {
                    Value::String(s) => s.clone().into_bytes(),
                    _ => return Err(format!("data is not a string for content type {content_type:?}")),
                }
            } else if crate::cloudevents::is_json_content_type(&content_type)
                || crate::cloudevents::is_cloudevent_content_type(&content_type)
            {
                crate::cloudevents::value_to_go_json(data)
            } else {
                Vec::new()
            }
        }
        (None, None) => Vec::new(),
    };
    let extensions: serde_json::Map<String, Value> =
        ce.iter().filter(|(k, _)| !OWN_FIELDS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(rt::TopicEventRequest {
        id: field("id"),
        source: field("source"),
        r#type: field("type"),
        spec_version: field("specversion"),
        data_content_type: content_type,
        data,
        topic: topic.to_string(),
        pubsub_name: pubsub.to_string(),
        path: path.to_string(),
        extensions: Some(to_struct(&extensions)),
    })
}

/// One bulk entry: the CloudEvent's fields as a TopicEventCERequest, or a raw payload's
/// bytes.
pub fn bulk_entry(
    entry_id: &str,
    event: Option<&Value>,
    raw: Option<&bytes::Bytes>,
    content_type: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<rt::TopicEventBulkRequestEntry, String> {
    use rt::topic_event_bulk_request_entry::Event;
    let event = match (raw, event) {
        (Some(b), _) => Event::Bytes(b.to_vec()),
        (None, Some(ce)) => {
            let r = topic_event_request(ce, "", "", "")?;
            Event::CloudEvent(rt::TopicEventCeRequest {
                id: r.id,
                source: r.source,
                r#type: r.r#type,
                spec_version: r.spec_version,
                data_content_type: r.data_content_type,
                data: r.data,
                extensions: r.extensions,
            })
        }
        (None, None) => return Err("the entry has no event".into()),
    };
    Ok(rt::TopicEventBulkRequestEntry {
        entry_id: entry_id.to_string(),
        event: Some(event),
        content_type: content_type.to_string(),
        metadata: metadata.clone().into_iter().collect(),
    })
}

/// A subscription the app listed, as daprd's gRPC loader reads it: no routes is one
/// rule with the empty path; each rule's match trimmed; `default` appended as a last rule.
pub fn subscription_from(t: rt::TopicSubscription) -> Subscription {
    let (rules, default) = match t.routes {
        None => (Vec::new(), Some(String::new())),
        Some(r) => {
            let rules: Vec<resources::Rule> =
                r.rules.into_iter().map(|x| resources::Rule { match_: x.r#match.trim().to_string(), path: x.path }).collect();
            let default = (!r.default.is_empty()).then_some(r.default);
            if rules.is_empty() && default.is_none() { (Vec::new(), Some(String::new())) } else { (rules, default) }
        }
    };
    let bulk = t.bulk_subscribe.map(|b| resources::BulkSubscribeSpec {
        enabled: b.enabled,
        max_messages_count: b.max_messages_count,
        max_await_duration_ms: b.max_await_duration_ms,
    });
    let metadata: BTreeMap<String, String> = t.metadata.into_iter().collect();
    let dlq = (!t.dead_letter_topic.is_empty()).then_some(t.dead_letter_topic);
    let mut sub = Subscription::new(t.pubsub_name, t.topic, None, None, metadata, dlq, false).with_bulk(bulk.as_ref());
    // Set here, not through `new`: gRPC subscriptions keep an empty path (the app's
    // handler for the topic), which the HTTP loader takes for no route.
    sub.rules = rules;
    sub.default_path = default;
    sub
}

impl AppChannel {
    /// `ListTopicSubscriptions`: the app's subscriptions (none when it answers
    /// UNIMPLEMENTED). As daprd, the app's port is waited for first (an error while it is
    /// closed: the caller tries again); then failures are retried three times, as daprd's
    /// built-in initialisation policy, after which the app is taken to declare none.
    pub async fn list_topic_subscriptions(&self) -> Result<Vec<Subscription>, TransportError> {
        let mut client = self.grpc_client()?;
        // daprd's blockUntilAppIsReady: a TCP connect with a 500 ms timeout.
        match tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(self.authority())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(TransportError(format!("the app's port {} is not open yet: {e}", self.authority()))),
            Err(_) => return Err(TransportError(format!("the app's port {} did not answer within 500 ms", self.authority()))),
        }
        let mut failures = 0;
        loop {
            match client.list_topic_subscriptions(self.grpc_request((), &[])).await {
                Ok(r) => return Ok(r.into_inner().subscriptions.into_iter().map(subscription_from).collect()),
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    tracing::info!("the app does not implement ListTopicSubscriptions: no programmatic subscriptions");
                    return Ok(Vec::new());
                }
                Err(s) => {
                    failures += 1;
                    if failures > 3 {
                        tracing::warn!("failed to list the app's topic subscriptions ({:?}: {}); none are taken", s.code(), s.message());
                        return Ok(Vec::new());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// `OnBulkTopicEvent` (or the Alpha method) with `req`: each of the entries `sent`
    /// as daprd reads the answer — SUCCESS and DROP acknowledged, RETRY, an unknown status
    /// or no status retried; UNIMPLEMENTED from both methods acknowledges every entry;
    /// any other error retries them all.
    pub async fn on_bulk_topic_event(
        &self,
        req: rt::TopicEventBulkRequest,
        sent: &[&str],
        headers: &[(String, String)],
    ) -> Vec<EntryOutcome> {
        let all = |o: EntryOutcome| vec![o; sent.len()];
        let app = match self.grpc_app() {
            Ok(a) => a,
            Err(e) => return all(EntryOutcome::Retry(e.0)),
        };
        let mut answer = app.callback().on_bulk_topic_event(self.grpc_request(req.clone(), headers)).await;
        if matches!(&answer, Err(s) if s.code() == tonic::Code::Unimplemented) {
            tracing::warn!("the app does not implement OnBulkTopicEvent; falling back to OnBulkTopicEventAlpha1");
            answer = app.alpha().on_bulk_topic_event_alpha1(self.grpc_request(req, headers)).await;
        }
        let statuses = match answer {
            Ok(r) => r.into_inner().statuses,
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::warn!("non-retriable error returned from app while processing bulk pub/sub event: {}", s.message());
                return all(EntryOutcome::Success);
            }
            Err(s) => {
                return all(EntryOutcome::Retry(format!(
                    "error returned from app while processing bulk pub/sub event: {:?}: {}",
                    s.code(),
                    s.message()
                )));
            }
        };
        use rt::topic_event_response::TopicEventResponseStatus as S;
        let answers = statuses.into_iter().map(|st| {
            let outcome = match S::try_from(st.status) {
                Ok(S::Success) => EntryOutcome::Success,
                Ok(S::Drop) => EntryOutcome::Drop,
                Ok(S::Retry) => EntryOutcome::Retry(format!(
                    "RETRY status returned from app while processing pub/sub event for entry id: {}",
                    st.entry_id
                )),
                Err(_) => EntryOutcome::Retry(format!("unknown status returned from app for entry id {}: {}", st.entry_id, st.status)),
            };
            (st.entry_id, outcome)
        });
        crate::bulk::per_entry(sent, answers, "response not received, RETRY required while processing bulk subscribe event")
    }

    /// `OnTopicEvent` with `req` and the delivery's metadata.
    pub async fn on_topic_event(&self, req: rt::TopicEventRequest, headers: &[(String, String)]) -> GrpcAnswer {
        let mut client = match self.grpc_client() {
            Ok(c) => c,
            Err(e) => return GrpcAnswer::Error(tonic::Code::Internal as u32, e.0),
        };
        use rt::topic_event_response::TopicEventResponseStatus as S;
        match client.on_topic_event(self.grpc_request(req, headers)).await {
            Ok(r) => match S::try_from(r.into_inner().status) {
                Ok(S::Success) => GrpcAnswer::Success,
                Ok(S::Drop) => GrpcAnswer::Drop,
                Ok(S::Retry) => GrpcAnswer::Retry("the app asked to retry the message".into()),
                Err(_) => GrpcAnswer::Retry("unknown status returned from the app".into()),
            },
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                GrpcAnswer::Unimplemented(format!("the app does not handle this topic (UNIMPLEMENTED: {})", s.message()))
            }
            Err(s) => GrpcAnswer::Error(s.code() as u32, format!("error from the app's OnTopicEvent: {:?}: {}", s.code(), s.message())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_requests_carry_data_by_content_type_and_the_rest_as_extensions() {
        let ce = serde_json::json!({
            "id": "1", "source": "app", "type": "com.dapr.event.sent", "specversion": "1.0",
            "datacontenttype": "application/json", "data": {"b": 1, "a": "<x>"},
            "topic": "orders", "pubsubname": "pubsub", "traceid": "", "custom": {"n": [1, true]}
        });
        let r = topic_event_request(&ce, "orders", "pubsub", "/orders").unwrap();
        assert_eq!((r.id.as_str(), r.source.as_str(), r.spec_version.as_str(), r.path.as_str()), ("1", "app", "1.0", "/orders"));
        assert_eq!(String::from_utf8(r.data).unwrap(), r#"{"a":"\u003cx\u003e","b":1}"#, "as Go's json.Marshal: sorted, escaped");
        let ext = r.extensions.unwrap().fields;
        assert!(ext.contains_key("topic") && ext.contains_key("custom") && ext.contains_key("traceid"));
        assert!(!ext.contains_key("data") && !ext.contains_key("id"));
        let text = serde_json::json!({"datacontenttype": "text/plain", "data": "hi"});
        assert_eq!(topic_event_request(&text, "t", "p", "").unwrap().data, b"hi");
        let b64 = serde_json::json!({"datacontenttype": "application/octet-stream", "data_base64": "AAE="});
        assert_eq!(topic_event_request(&b64, "t", "p", "").unwrap().data, vec![0, 1]);
        let other = serde_json::json!({"datacontenttype": "application/protobuf", "data": "x"});
        assert!(topic_event_request(&other, "t", "p", "").unwrap().data.is_empty(), "daprd sends no data for other types");
        assert!(topic_event_request(&serde_json::json!({"datacontenttype": "text/plain", "data": {"a": 1}}), "t", "p", "").is_err());
        assert!(topic_event_request(&serde_json::json!({"data_base64": "!!"}), "t", "p", "").is_err());
    }

    #[test]
    fn listed_subscriptions_become_daprds() {
        let none = subscription_from(rt::TopicSubscription { pubsub_name: "p".into(), topic: "t".into(), ..Default::default() });
        assert!(none.rules.is_empty());
        assert_eq!(none.default_path.as_deref(), Some(""));
        let routed = subscription_from(rt::TopicSubscription {
            pubsub_name: "p".into(),
            topic: "t".into(),
            routes: Some(rt::TopicRoutes {
                rules: vec![rt::TopicRule { r#match: " event.type == 'a' ".into(), path: "a".into() }],
                default: "d".into(),
            }),
            dead_letter_topic: "dlq".into(),
            ..Default::default()
        });
        assert_eq!(routed.rules[0].match_, "event.type == 'a'");
        assert_eq!(routed.default_path.as_deref(), Some("d"));
        assert_eq!(routed.dead_letter_topic.as_deref(), Some("dlq"));
    }
}
