//! Delivering a message to the app as daprd does: pick the route (CEL rules over
//! `{"event": <CloudEvent>}`, then the default), POST the exact envelope bytes as
//! `application/cloudevents+json`, read the answer (SUCCESS / RETRY / DROP, 404, other
//! statuses, connection errors), retry by the inbound Resiliency policy, and send what
//! is dropped, unroutable, expired or out of retries to the dead-letter topic.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::app_channel::AppChannel;
use crate::resiliency::{Failure, Policy};
use crate::resources::Subscription;
use spindapr_dapr_components::pubsub::{Message, NotProcessed, PubSub};

/// What the app's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Retry(String),
    Drop(String),
}

/// Reads an app answer the way daprd's HTTP channel does.
pub fn interpret(status: u16, body: &[u8]) -> Outcome {
    if (200..300).contains(&status) {
        #[derive(serde::Deserialize)]
        struct Answer {
            status: Option<String>,
        }
        // An empty, non-JSON or wrongly typed body counts as success; keys are matched
        // as Go's encoding/json matches them (`{"Status":"RETRY"}` is a retry).
        let answer = serde_json::from_slice::<Value>(body).map(|v| crate::go_json::fold(v, &crate::go_json::DELIVERY_ANSWER));
        let Ok(Some(Answer { status: Some(s) })) = answer.and_then(serde_json::from_value::<Option<Answer>>) else {
            return Outcome::Success;
        };
        return match s.as_str() {
            "" | "SUCCESS" => Outcome::Success,
            "RETRY" => Outcome::Retry("the app asked to retry the message".into()),
            "DROP" => Outcome::Drop("the app asked to drop the message".into()),
            other => Outcome::Retry(format!("unknown status returned from the app: {other:?}")),
        };
    }
    if status == 404 {
        return Outcome::Drop("the app answered 404 Not Found for the subscription route".into());
    }
    Outcome::Retry(format!("the app answered status {status}"))
}

/// A rule with its CEL program compiled once.
pub struct CompiledRule {
    program: Option<cel::Program>,
    source: String,
    path: String,
}

/// A subscription ready to route.
pub struct Route {
    pub sub: Subscription,
    rules: Vec<CompiledRule>,
}

/// A routing rule whose CEL expression does not compile.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(String);

impl Route {
    /// Compiles the subscription's rules.
    pub fn compile(sub: Subscription) -> Result<Self, RuleError> {
        let mut rules = Vec::new();
        for r in &sub.rules {
            let program = if r.match_.trim().is_empty() {
                None
            } else {
                Some(cel::Program::compile(&r.match_).map_err(|e| {
                    RuleError(format!("invalid CEL expression {:?} in subscription {}/{}: {e}", r.match_, sub.pubsub, sub.topic))
                })?)
            };
            rules.push(CompiledRule { program, source: r.match_.clone(), path: r.path.clone() });
        }
        Ok(Self { sub, rules })
    }

    /// The path for `event`: the first rule that matches, else the default; `Ok(None)`
    /// when nothing matches. A non-boolean result or an evaluation error is an error.
    pub fn path_for(&self, event: &Value) -> Result<Option<String>, String> {
        // Built at the first CEL rule, shared by the rest.
        let mut ctx: Option<cel::Context> = None;
        for r in &self.rules {
            let Some(program) = &r.program else {
                return Ok(Some(r.path.clone()));
            };
            if ctx.is_none() {
                let mut c = cel::Context::default();
                c.add_variable_from_value("event", cel::to_value(event).map_err(|e| e.to_string())?);
                ctx = Some(c);
            }
            let Some(ctx) = ctx.as_ref() else { continue };
            match program.execute(ctx) {
                Ok(cel::Value::Bool(true)) => return Ok(Some(r.path.clone())),
                Ok(cel::Value::Bool(false)) => continue,
                Ok(other) => {
                    return Err(format!("the match expression {:?} returned {other:?}, not a boolean", r.source));
                }
                Err(e) => return Err(format!("evaluating {:?}: {e}", r.source)),
            }
        }
        Ok(self.sub.default_path.clone())
    }
}

/// How one delivery attempt ended, when it did not fail.
enum Attempt {
    /// The app took the message.
    Delivered,
    /// The app dropped it: acknowledged, and dead-lettered when there is a topic for it.
    Dropped(String),
    /// The app has no handler for it (gRPC UNIMPLEMENTED): acknowledged, not dead-lettered.
    Ignored(String),
}

/// Everything a subscription's handler needs.
pub struct Delivery {
    pub route: Route,
    pub pubsub: Arc<dyn PubSub>,
    pub app: Arc<AppChannel>,
    /// The component's inbound Resiliency policy.
    pub policy: Arc<Policy>,
    /// Why the dead-letter topic may not be published to (publishingScopes), if so.
    pub dlq_forbidden: Option<String>,
    /// The app id, for the metrics' labels.
    pub app_id: String,
}

impl Delivery {
    /// Handles one message; `Err` hands the failure back to the broker.
    pub async fn deliver(&self, msg: Message) -> Result<(), NotProcessed> {
        let sub = &self.route.sub;
        // A rawPayload subscription (strconv.ParseBool, as daprd) always gets the broker's
        // bytes wrapped in a fresh envelope; any other gets the broker's exact bytes.
        let raw = sub.metadata.get("rawPayload").and_then(|v| crate::cloudevents::parse_go_bool(v)).unwrap_or(false);
        let parsed = if raw { None } else { Some(serde_json::from_slice(&msg.data)) };
        let (event, body) = match parsed {
            None => {
                let e = raw_envelope(&msg, sub);
                let b = Bytes::from(serde_json::to_vec(&e).map_err(|e| NotProcessed(format!("wrapping the raw payload: {e}")))?);
                (e, b)
            }
            Some(Ok(v @ Value::Object(_))) => (v, msg.data.clone()),
            Some(_) => {
                tracing::error!(pubsub = %sub.pubsub, topic = %msg.topic, "error deserializing cloud event: the message is not a JSON object");
                return self.fail(&msg, "the message is not a CloudEvent".into()).await;
            }
        };
        if crate::cloudevents::is_expired(&event, chrono::Utc::now()) {
            tracing::warn!(pubsub = %sub.pubsub, topic = %msg.topic, id = ?event.get("id"), "dropping expired message");
            return self.dead_letter(&msg, "expired").await;
        }
        let path = match self.route.path_for(&event) {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::warn!(pubsub = %sub.pubsub, topic = %msg.topic, "no route matched the message; dropping it");
                return self.dead_letter(&msg, "no matching route").await;
            }
            Err(e) => {
                tracing::error!(pubsub = %sub.pubsub, topic = %msg.topic, "routing failed: {e}");
                return self.fail(&msg, e).await;
            }
        };
        let mut headers = delivery_headers(&event, &msg.metadata, &sub.pubsub);
        // With tracing on: a consumer span, child of the event's trace, is the app's parent.
        let tp = event.get("traceparent").or_else(|| event.get("traceid")).and_then(Value::as_str);
        let span = spindapr_metrics::trace::from_traceparent(spindapr_metrics::trace::Kind::Consumer, tp.filter(|t| !t.is_empty()), || {
            (
                format!("{} process", msg.topic),
                vec![
                    spindapr_metrics::trace::kv("messaging.system", "dapr"),
                    spindapr_metrics::trace::kv("messaging.destination.name", msg.topic.clone()),
                    spindapr_metrics::trace::kv("dapr.pubsub", sub.pubsub.clone()),
                    spindapr_metrics::trace::kv("url.path", path.clone()),
                ],
            )
        });
        if let Some(s) = &span {
            headers.retain(|(k, _)| k != "traceparent" && k != "tracestate");
            let mut h = http::HeaderMap::new();
            s.inject(&mut h);
            headers.extend(h.iter().filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string()))));
        }
        // Each attempt as daprd's policy runner sees it: DROP and 404 end it (after the
        // dead-letter topic), a status answer is a CodeError for `matching`, the rest
        // (RETRY, unknown statuses, no answer) are plain errors.
        let started = std::time::Instant::now();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let result = self
            .policy
            .run(|n| {
                attempts.store(n + 1, std::sync::atomic::Ordering::Relaxed);
                async {
                    if self.app.is_grpc() {
                        return self.attempt_grpc(&event, &msg.topic, &path, &headers, span.is_some()).await;
                    }
                    let (outcome, status) = match self.app.post_event(&path, body.clone(), &headers).await {
                        Ok((status, answer)) => (interpret(status, &answer), Some(status)),
                        Err(e) => (Outcome::Retry(format!("delivering to the app failed: {e:#}")), None),
                    };
                    match outcome {
                        Outcome::Success => Ok(Attempt::Delivered),
                        // Dead-lettered after the run, outside any per-attempt timeout.
                        Outcome::Drop(why) => Ok(Attempt::Dropped(why)),
                        Outcome::Retry(why) => match status.filter(|s| !(200..300).contains(s)) {
                            Some(code) => Err(Failure::Code(u32::from(code), why)),
                            None => Err(Failure::Other(why)),
                        },
                    }
                }
            })
            .await;
        let (status, done) = match result {
            Ok(Attempt::Dropped(why)) => {
                tracing::warn!(pubsub = %sub.pubsub, topic = %msg.topic, path = %path, "{why}; the message is dropped");
                ("drop", self.dead_letter(&msg, &why).await)
            }
            Ok(Attempt::Ignored(why)) => {
                tracing::warn!(pubsub = %sub.pubsub, topic = %msg.topic, path = %path, "{why}; the message is dropped");
                ("drop", Ok(()))
            }
            Ok(Attempt::Delivered) => ("success", Ok(())),
            Err(e) => {
                let why = e.to_string();
                tracing::error!(pubsub = %sub.pubsub, topic = %msg.topic, path = %path, "delivery failed: {why}");
                // daprd counts a failure the dead-letter topic took as dropped.
                let done = self.fail(&msg, why).await;
                (if done.is_ok() && sub.dead_letter_topic.is_some() { "drop" } else { "retry" }, done)
            }
        };
        record_ingress(&self.app_id, &sub.pubsub, &msg.topic, status, started.elapsed());
        if let Some(s) = &span {
            s.set("dapr.delivery.outcome", status);
            s.set("dapr.delivery.attempts", i64::from(attempts.load(std::sync::atomic::Ordering::Relaxed)));
            s.end(done.as_ref().err().map(|e| e.to_string()));
        }
        done
    }

    /// One attempt over the gRPC channel: `OnTopicEvent` with daprd's TopicEventRequest.
    /// The event's trace goes as metadata only when tracing is on, as daprd sends it.
    async fn attempt_grpc(
        &self,
        event: &Value,
        topic: &str,
        path: &str,
        headers: &[(String, String)],
        traced: bool,
    ) -> Result<Attempt, Failure<String>> {
        use crate::grpc_app::GrpcAnswer;
        let req = crate::grpc_app::topic_event_request(event, topic, &self.route.sub.pubsub, path).map_err(Failure::Other)?;
        let headers: Vec<(String, String)> =
            headers.iter().filter(|(k, _)| traced || (k != "traceparent" && k != "tracestate")).cloned().collect();
        match self.app.on_topic_event(req, &headers).await {
            GrpcAnswer::Success => Ok(Attempt::Delivered),
            GrpcAnswer::Drop => Ok(Attempt::Dropped("the app asked to drop the message".into())),
            GrpcAnswer::Unimplemented(why) => Ok(Attempt::Ignored(why)),
            GrpcAnswer::Retry(why) => Err(Failure::Other(why)),
            GrpcAnswer::Error(code, why) => Err(Failure::Code(code, why)),
        }
    }

    /// A failure: to the dead-letter topic if there is one, else back to the broker.
    async fn fail(&self, msg: &Message, why: String) -> Result<(), NotProcessed> {
        if self.route.sub.dead_letter_topic.is_some() {
            return self.dead_letter(msg, &why).await;
        }
        Err(NotProcessed(why))
    }

    async fn dead_letter(&self, msg: &Message, why: &str) -> Result<(), NotProcessed> {
        let Some(dlq) = &self.route.sub.dead_letter_topic else {
            return Ok(());
        };
        if let Some(e) = &self.dlq_forbidden {
            tracing::error!("error sending message to dead letter, origin topic: {} dead letter topic {dlq} err: {e}", msg.topic);
            return Err(NotProcessed(e.clone()));
        }
        tracing::warn!(pubsub = %self.route.sub.pubsub, topic = %msg.topic, dead_letter_topic = %dlq, "sending the message to the dead-letter topic: {why}");
        let m = dead_letter_message(msg, dlq, &self.route.sub.pubsub);
        self.pubsub.publish(m).await.map_err(|e| NotProcessed(format!("publishing to the dead-letter topic {dlq}: {e}")))
    }
}

/// daprd's `dapr_component_pubsub_ingress_*` for one delivered message.
pub(crate) fn record_ingress(app_id: &str, pubsub: &str, topic: &str, status: &str, elapsed: std::time::Duration) {
    let m = spindapr_metrics::sidecar();
    let labels = [app_id, pubsub, crate::api::namespace(), status, status, topic];
    m.pubsub_ingress_count.with_label_values(&labels).inc();
    m.pubsub_ingress_latencies.with_label_values(&labels).observe(spindapr_metrics::millis(elapsed));
}

/// The message daprd's sendToDeadLetter publishes: the original bytes, the metadata
/// with `pubsubName` added.
pub(crate) fn dead_letter_message(msg: &Message, dlq: &str, pubsub: &str) -> Message {
    let mut metadata = msg.metadata.clone();
    metadata.insert("pubsubName".into(), pubsub.into());
    Message { topic: dlq.to_string(), data: msg.data.clone(), metadata }
}

/// daprd's zero span context, sent when the event's trace is empty or invalid.
pub(crate) const ZERO_TRACEPARENT: &str = "00-00000000000000000000000000000000-0000000000000000-00";

/// The headers of a delivery, as postman/http `Deliver` builds them: `traceparent` from
/// the event's `traceparent` (else `traceid`) — normalised, or the zero value when empty
/// or invalid, none when absent or not a string; never `tracestate`; the message's
/// metadata as headers but for trace, content and hop-by-hop keys (`grpc-*` renamed
/// `dapr-grpc-*`); `pubsubName` last.
pub(crate) fn delivery_headers(event: &Value, metadata: &BTreeMap<String, String>, pubsub: &str) -> Vec<(String, String)> {
    // Beyond what no forwarded header carries: the trace (sent from the event), the
    // body's own headers, and the channel's own, which metadata must not forge.
    const DROPPED: &[&str] =
        &["traceparent", "tracestate", "content-type", "content-length", "pubsubname", "host", "dapr-api-token", "dapr-app-id"];
    let mut headers = Vec::new();
    let trace = match event.get("traceparent").filter(|v| !v.is_null()) {
        Some(v) => Some(v),
        None => event.get("traceid").filter(|v| !v.is_null()),
    };
    if let Some(Value::String(t)) = trace {
        headers.push(("traceparent".to_string(), crate::go_compat::normalise_traceparent(t).unwrap_or_else(|| ZERO_TRACEPARENT.into())));
    }
    for (k, v) in metadata {
        let lower = k.to_ascii_lowercase();
        if DROPPED.contains(&lower.as_str()) {
            continue;
        }
        if let Some(name) = crate::app_channel::forwarded_header_name(&lower) {
            headers.push((name.into_owned(), v.clone()));
        }
    }
    headers.push(("pubsubname".to_string(), pubsub.to_string()));
    headers
}

/// A raw (non-CloudEvent) payload wrapped as daprd does for `rawPayload` subscriptions.
fn raw_envelope(msg: &Message, sub: &Subscription) -> Value {
    use base64::Engine as _;
    let mut m = BTreeMap::new();
    m.insert("id".to_string(), Value::String(uuid::Uuid::new_v4().to_string()));
    m.insert("specversion".to_string(), "1.0".into());
    m.insert("source".to_string(), "Dapr".into());
    m.insert("type".to_string(), "com.dapr.event.sent".into());
    m.insert("datacontenttype".to_string(), "application/octet-stream".into());
    m.insert("topic".to_string(), msg.topic.clone().into());
    m.insert("pubsubname".to_string(), sub.pubsub.clone().into());
    m.insert("data_base64".to_string(), base64::engine::general_purpose::STANDARD.encode(&msg.data).into());
    Value::Object(m.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Rule;

    #[test]
    fn app_answers_are_read_like_daprd() {
        let cases: &[(u16, &str, Outcome)] = &[
            (200, "", Outcome::Success),
            (200, "not json", Outcome::Success),
            (200, "null", Outcome::Success),
            (200, "{}", Outcome::Success),
            (200, "\"\"", Outcome::Success),
            (200, r#"{"status":5}"#, Outcome::Success),
            (200, r#"{"status":""}"#, Outcome::Success),
            (200, r#"{"status":"SUCCESS"}"#, Outcome::Success),
            (204, "", Outcome::Success),
        ];
        for (status, body, want) in cases {
            assert_eq!(&interpret(*status, body.as_bytes()), want, "{status} {body}");
        }
        assert!(matches!(interpret(200, br#"{"status":"RETRY"}"#), Outcome::Retry(_)));
        assert!(matches!(interpret(200, br#"{"status":"DROP"}"#), Outcome::Drop(_)));
        assert!(matches!(interpret(200, br#"{"status":"success"}"#), Outcome::Retry(_)), "statuses are case-sensitive");
        assert!(matches!(interpret(200, br#"{"Status":"RETRY"}"#), Outcome::Retry(_)), "keys are not (Go's decoder)");
        assert!(matches!(interpret(200, br#"{"STATUS":"DROP","other":1}"#), Outcome::Drop(_)));
        assert_eq!(interpret(200, br#"{"status":null}"#), Outcome::Success);
        assert!(matches!(interpret(404, b""), Outcome::Drop(_)));
        assert!(matches!(interpret(500, b""), Outcome::Retry(_)));
        assert!(matches!(interpret(503, br#"{"status":"SUCCESS"}"#), Outcome::Retry(_)));
    }

    fn route(rules: &[(&str, &str)], default: Option<&str>) -> Route {
        let sub = Subscription::new(
            "ps".into(),
            "t".into(),
            None,
            Some(crate::resources::RoutesSpec {
                rules: rules.iter().map(|(m, p)| Rule { match_: m.to_string(), path: p.to_string() }).collect(),
                default: default.map(str::to_owned),
            }),
            Default::default(),
            None,
            false,
        );
        Route::compile(sub).unwrap()
    }

    #[test]
    fn cel_rules_pick_routes_in_order() {
        let r = route(&[(r#"event.type == "widget""#, "/widgets"), (r#"event.data.n > 5"#, "/big")], Some("/default"));
        assert_eq!(r.path_for(&serde_json::json!({"type": "widget", "data": {"n": 1}})).unwrap().as_deref(), Some("/widgets"));
        assert_eq!(r.path_for(&serde_json::json!({"type": "x", "data": {"n": 9}})).unwrap().as_deref(), Some("/big"));
        assert_eq!(r.path_for(&serde_json::json!({"type": "x", "data": {"n": 1}})).unwrap().as_deref(), Some("/default"));
        let r = route(&[(r#"event.type == "widget""#, "/widgets")], None);
        assert_eq!(r.path_for(&serde_json::json!({"type": "x"})).unwrap(), None);
        let r = route(&[("", "/always")], None);
        assert_eq!(r.path_for(&serde_json::json!({})).unwrap().as_deref(), Some("/always"));
        let r = route(&[(r#"event.type"#, "/not-bool")], None);
        assert!(r.path_for(&serde_json::json!({"type": "x"})).is_err());
        assert!(
            Route::compile(Subscription::new(
                "p".into(),
                "t".into(),
                None,
                Some(crate::resources::RoutesSpec { rules: vec![Rule { match_: "event.(".into(), path: "/x".into() }], default: None }),
                Default::default(),
                None,
                false
            ))
            .is_err()
        );
    }
}
