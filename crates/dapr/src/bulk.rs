//! Bulk subscribe as daprd delivers it over HTTP (pkg/runtime/subscription/
//! bulksubscription.go, postman/http DeliverBulk, pkg/runtime/pubsub/default_bulksub.go):
//! a subscription's messages are gathered into batches (flushed at `maxMessagesCount`
//! or `maxAwaitDurationMs` after a batch's first message), routed per entry, posted per
//! path as one `com.dapr.event.sent.bulk` envelope, and the app's `statuses` answer is
//! read entry by entry; failed entries alone are retried by the inbound policy, and
//! dropped, unroutable, expired or finally failed ones go to the dead-letter topic.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::app_channel::AppChannel;
use crate::delivery::Route;
use crate::resiliency::{Failure, Policy};
use crate::resources::BulkConfig;
use spindapr_dapr_components::pubsub::{Handler, Message, NotProcessed, PubSub};

/// contrib's `DefaultBulkEventType`.
const BULK_EVENT_TYPE: &str = "com.dapr.event.sent.bulk";

/// What the app's answer means for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryOutcome {
    /// Acked (SUCCESS, or a 404 answer).
    Success,
    /// DROP: acked, and sent to the dead-letter topic if there is one.
    Drop,
    /// Not processed: retried, then dead-lettered or handed back to the broker.
    Retry(String),
}

/// Reads an app's answer to a bulk delivery of `sent` entry ids, as DeliverBulk does:
/// a 404 acks every entry (no retry, no dead letter), any other non-2xx fails them all,
/// a 2xx body that does not decode as `{"statuses":[…]}` fails them all, and an entry
/// whose status is not SUCCESS or DROP — or that the answer leaves out — is retried
/// (an empty status too, unlike a single delivery). Keys are matched as Go's decoder
/// does; ids not sent are ignored; for a repeated id the last status wins.
pub fn interpret_bulk(answer: Result<(u16, &[u8]), String>, sent: &[&str]) -> Vec<EntryOutcome> {
    let all = |o: EntryOutcome| vec![o; sent.len()];
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) => return all(EntryOutcome::Retry(format!("delivering to the app failed: {e}"))),
    };
    if status == 404 {
        tracing::error!("non-retriable error returned from app while processing bulk pub/sub event: 404 Not Found");
        return all(EntryOutcome::Success);
    }
    if !(200..300).contains(&status) {
        return all(EntryOutcome::Retry(format!("the app answered status {status}")));
    }
    #[derive(serde::Deserialize, Default)]
    struct Answer {
        #[serde(default)]
        statuses: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default, rename = "entryId")]
        entry_id: String,
        #[serde(default)]
        status: String,
    }
    // Go's Decoder reads the first JSON value and ignores what follows; `null` is the
    // zero struct.
    let first = serde_json::Deserializer::from_slice(body).into_iter::<Value>().next();
    let answer = match first {
        Some(Ok(Value::Null)) => Ok(Answer::default()),
        Some(Ok(v)) => serde_json::from_value::<Answer>(crate::go_json::fold(v, &crate::go_json::BULK_ANSWER)).map_err(|e| e.to_string()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("EOF".to_string()),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return all(EntryOutcome::Retry(format!("failed unmarshalling app response for bulk subscribe: {e}"))),
    };
    let answers = answer.statuses.into_iter().map(|item| {
        let outcome = match item.status.as_str() {
            "SUCCESS" => EntryOutcome::Success,
            "DROP" => EntryOutcome::Drop,
            "RETRY" => EntryOutcome::Retry("the app asked to retry the entry".into()),
            other => EntryOutcome::Retry(format!("unknown status returned from the app: {other:?}")),
        };
        (item.entry_id, outcome)
    });
    per_entry(sent, answers, "response not received for the entry")
}

/// Each sent entry's outcome from an answer's (entry id, outcome) pairs, as daprd reads
/// a bulk answer on either channel: an id not sent is ignored, a repeated id's last
/// answer wins, an entry left out is retried with `missing` as the reason.
pub(crate) fn per_entry(sent: &[&str], answers: impl IntoIterator<Item = (String, EntryOutcome)>, missing: &str) -> Vec<EntryOutcome> {
    let mut out: Vec<Option<EntryOutcome>> = vec![None; sent.len()];
    for (entry_id, outcome) in answers {
        let Some(i) = sent.iter().position(|id| *id == entry_id) else {
            tracing::warn!(entry_id = %entry_id, "the app answered for an entry id it was not sent; ignored");
            continue;
        };
        out[i] = Some(outcome);
    }
    out.into_iter().map(|o| o.unwrap_or_else(|| EntryOutcome::Retry(missing.to_string()))).collect()
}

/// One entry of a batch, ready to send: made once per batch, in the form the app's
/// protocol takes.
struct Entry {
    id: String,
    body: EntryBody,
}

/// An entry as an HTTP app gets it in the JSON envelope, or as a gRPC app does.
enum EntryBody {
    /// The `event` rendered as JSON, the message's metadata as a Go map, the content type.
    Json { event: String, metadata: String, content_type: &'static str },
    /// daprd's TopicEventBulkRequestEntry, or why the event could not become one.
    Grpc(Box<Result<crate::grpc::pb::runtime::TopicEventBulkRequestEntry, String>>),
}

/// Everything a bulk subscription's batches need.
pub struct BulkDelivery {
    pub route: Route,
    pub pubsub: Arc<dyn PubSub>,
    pub app: Arc<AppChannel>,
    /// The component's inbound Resiliency policy.
    pub policy: Arc<Policy>,
    pub config: BulkConfig,
    /// Why the dead-letter topic may not be published to (publishingScopes), if so.
    pub dlq_forbidden: Option<String>,
}

type Pending = (Message, oneshot::Sender<Result<(), NotProcessed>>);

/// The broker-facing handler of a bulk subscription: each message waits in the current
/// batch until the batch has been delivered, and gets its own entry's result (daprd's
/// default bulk subscriber, which every broker here uses).
pub fn batching_handler(d: Arc<BulkDelivery>) -> Handler {
    let (tx, mut rx) = mpsc::channel::<Pending>(d.config.max_messages);
    tokio::spawn(async move {
        let max = d.config.max_messages;
        // maxMessagesCount comes from the app: reserve what a batch usually holds, not it.
        let mut batch: Vec<Pending> = Vec::with_capacity(max.min(1024));
        let mut deadline = tokio::time::Instant::now();
        loop {
            if batch.is_empty() {
                let Some(first) = rx.recv().await else { return };
                batch.push(first);
                deadline = tokio::time::Instant::now() + d.config.max_await;
            }
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let flush = if batch.len() >= max {
                true
            } else {
                tokio::select! {
                    next = rx.recv() => match next {
                        Some(p) => { batch.push(p); false }
                        None => true,
                    },
                    _ = tokio::time::sleep_until(deadline) => true,
                }
            };
            if flush {
                let (msgs, waiters): (Vec<Message>, Vec<_>) = std::mem::take(&mut batch).into_iter().unzip();
                let results = d.deliver_batch(msgs).await;
                for (w, r) in waiters.into_iter().zip(results) {
                    let _ = w.send(r);
                }
            }
        }
    });
    Arc::new(move |m: Message| {
        let tx = tx.clone();
        Box::pin(async move {
            let (done, result) = oneshot::channel();
            tx.send((m, done)).await.map_err(|_| NotProcessed("the bulk subscription is closed".into()))?;
            result.await.map_err(|_| NotProcessed("the bulk subscription is closed".into()))?
        })
    })
}

impl BulkDelivery {
    /// Delivers one batch and returns each message's result, as bulkSubscribeTopic and
    /// flushMessages decide it.
    pub async fn deliver_batch(&self, msgs: Vec<Message>) -> Vec<Result<(), NotProcessed>> {
        let sub = &self.route.sub;
        let n = msgs.len();
        let raw = match sub.metadata.get("rawPayload").filter(|v| !v.is_empty()) {
            None => false,
            Some(v) => match crate::cloudevents::parse_go_bool(v) {
                Some(b) => b,
                None => {
                    let why = format!("invalid rawPayload metadata {v:?}: not a boolean");
                    tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, "{why}");
                    let all: Vec<usize> = (0..n).collect();
                    return match self.dead_letter(&msgs, &all).await {
                        Some(Ok(())) => (0..n).map(|_| Ok(())).collect(),
                        _ => (0..n).map(|_| Err(NotProcessed(why.clone()))).collect(),
                    };
                }
            },
        };
        let grpc = self.app.is_grpc();
        // The entry in the app protocol's form: `event` is the CloudEvent, or `None` for a
        // raw payload (its bytes, base64 in JSON).
        let body = |id: &str, m: &Message, event: Option<&Value>| -> EntryBody {
            let content_type = if event.is_some() { crate::cloudevents::CLOUDEVENT_CONTENT_TYPE } else { "application/octet-stream" };
            if grpc {
                let raw = event.is_none().then_some(&m.data);
                return EntryBody::Grpc(Box::new(crate::grpc_app::bulk_entry(id, event, raw, content_type, &m.metadata)));
            }
            let event = match event {
                Some(v) => String::from_utf8_lossy(&crate::cloudevents::value_to_go_json(v)).into_owned(),
                None => {
                    use base64::Engine as _;
                    let mut e = String::new();
                    crate::cloudevents::write_string(&mut e, &base64::engine::general_purpose::STANDARD.encode(&m.data));
                    e
                }
            };
            let metadata = String::from_utf8_lossy(&crate::cloudevents::value_to_go_json(&Value::Object(
                m.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect(),
            )))
            .into_owned();
            EntryBody::Json { event, metadata, content_type }
        };
        // Per message: None = acked, Some(why) = not processed.
        let mut results: Vec<Option<String>> = vec![None; n];
        // daprd's batch error: the last entry's JSON decoding, then any path's failure.
        let mut batch_err: Option<String> = None;
        let mut entries: Vec<Option<Entry>> = Vec::with_capacity(n);
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        let now = chrono::Utc::now();
        for (i, m) in msgs.iter().enumerate() {
            let id = uuid::Uuid::new_v4().to_string();
            let (route_on, entry) = if raw {
                let body = body(&id, m, None);
                (Value::String(String::from_utf8_lossy(&m.data).into_owned()), Entry { id, body })
            } else {
                match serde_json::from_slice::<Value>(&m.data) {
                    Ok(v @ (Value::Object(_) | Value::Null)) => {
                        batch_err = None;
                        if crate::cloudevents::is_expired(&v, now) {
                            tracing::warn!(pubsub = %sub.pubsub, topic = %m.topic, "dropping expired message");
                            if let Some(Err(e)) = self.dead_letter(&msgs, &[i]).await {
                                results[i] = Some(e);
                            }
                            entries.push(None);
                            continue;
                        }
                        let body = body(&id, m, Some(&v));
                        (v, Entry { id, body })
                    }
                    other => {
                        let why = match other {
                            Err(e) => format!("error deserializing cloud event: {e}"),
                            Ok(_) => "error deserializing cloud event: not a JSON object".into(),
                        };
                        tracing::error!(pubsub = %sub.pubsub, topic = %m.topic, "{why}");
                        results[i] = Some(why.clone());
                        batch_err = Some(why);
                        entries.push(None);
                        continue;
                    }
                }
            };
            match self.route.path_for(&route_on) {
                Ok(Some(path)) => match groups.iter_mut().find(|(p, _)| *p == path) {
                    Some((_, idx)) => idx.push(i),
                    None => groups.push((path, vec![i])),
                },
                Ok(None) => {
                    tracing::warn!(pubsub = %sub.pubsub, topic = %m.topic, "no route matched the entry; dropping it");
                    if let Some(Err(e)) = self.dead_letter(&msgs, &[i]).await {
                        results[i] = Some(e);
                    }
                }
                Err(e) => {
                    tracing::error!(pubsub = %sub.pubsub, topic = %m.topic, "routing failed: {e}");
                    results[i] = Some(e);
                }
            }
            entries.push(Some(entry));
        }
        for (path, idx) in &groups {
            if let Err(e) = self.deliver_group(path, idx, &entries, &msgs, &mut results).await {
                batch_err = Some(e);
            }
        }
        let failed: Vec<usize> = (0..n).filter(|i| results[*i].is_some()).collect();
        if failed.is_empty() {
            return (0..n).map(|_| Ok(())).collect();
        }
        if sub.dead_letter_topic.is_some() && matches!(self.dead_letter(&msgs, &failed).await, Some(Ok(()))) {
            return (0..n).map(|_| Ok(())).collect();
        }
        // As flushMessages: without a batch error every message is acked, whatever its
        // entry's result.
        if batch_err.is_none() {
            return (0..n).map(|_| Ok(())).collect();
        }
        results.into_iter().map(|r| r.map_or(Ok(()), |why| Err(NotProcessed(why)))).collect()
    }

    /// Posts the entries `idx` to `path`, retrying the failed ones (same envelope id) by
    /// the inbound policy; records each entry's final result in `results`.
    async fn deliver_group(
        &self,
        path: &str,
        idx: &[usize],
        entries: &[Option<Entry>],
        msgs: &[Message],
        results: &mut [Option<String>],
    ) -> Result<(), String> {
        let sub = &self.route.sub;
        let envelope_id = uuid::Uuid::new_v4().to_string();
        let headers = vec![("pubsubName".to_string(), sub.pubsub.clone())];
        // Shared by the attempts: the entries still to deliver, and every entry's result.
        let pending = std::sync::Mutex::new(idx.to_vec());
        let results = std::sync::Mutex::new(results);
        let dropped: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
        let run = self
            .policy
            .run(|_| async {
                let now_pending = pending.lock().map(|p| p.clone()).unwrap_or_default();
                let sent: Vec<&Entry> = now_pending.iter().filter_map(|i| entries[*i].as_ref()).collect();
                let ids: Vec<&str> = sent.iter().map(|e| e.id.as_str()).collect();
                let outcomes = if self.app.is_grpc() {
                    self.grpc_attempt(&envelope_id, path, &sent, &ids).await
                } else {
                    let body = self.render(&envelope_id, &sent);
                    let answer = self.app.post(path, "application/json", body, &headers).await;
                    interpret_bulk(answer.as_ref().map(|(s, b)| (*s, b.as_ref())).map_err(|e| e.to_string()), &ids)
                };
                let mut still = Vec::new();
                let mut last_err = String::new();
                for (i, outcome) in now_pending.iter().copied().zip(outcomes) {
                    let result = match outcome {
                        EntryOutcome::Success => None,
                        // Dead-lettered after the run, outside any per-attempt timeout.
                        EntryOutcome::Drop => {
                            tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, path, "the app asked to drop a bulk entry");
                            if let Ok(mut d) = dropped.lock() {
                                d.push(i);
                            }
                            None
                        }
                        EntryOutcome::Retry(why) => {
                            last_err.clone_from(&why);
                            still.push(i);
                            Some(why)
                        }
                    };
                    if let Ok(mut r) = results.lock() {
                        r[i] = result;
                    }
                }
                let failed = still.len();
                if let Ok(mut p) = pending.lock() {
                    *p = still;
                }
                if failed == 0 {
                    return Ok(());
                }
                tracing::debug!(pubsub = %sub.pubsub, topic = %sub.topic, path, failed, "bulk delivery attempt failed: {last_err}");
                Err(Failure::Other(last_err))
            })
            .await;
        let dropped = dropped.into_inner().unwrap_or_default();
        if let Some(Err(e)) = self.dead_letter(msgs, &dropped).await
            && let Ok(mut r) = results.lock()
        {
            for i in &dropped {
                r[*i] = Some(e.clone());
            }
        }
        run.map_err(|e| {
            let why = e.to_string();
            tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, path, "bulk delivery failed: {why}");
            // A timed-out or refused attempt leaves its entries failed with that reason.
            if let (Ok(p), Ok(mut r)) = (pending.lock(), results.lock()) {
                for i in p.iter() {
                    if r[*i].is_none() {
                        r[*i] = Some(why.clone());
                    }
                }
            }
            why
        })
    }

    /// One attempt over the gRPC channel: daprd's TopicEventBulkRequest for `sent`.
    async fn grpc_attempt(&self, envelope_id: &str, path: &str, sent: &[&Entry], ids: &[&str]) -> Vec<EntryOutcome> {
        let sub = &self.route.sub;
        let mut entries = Vec::with_capacity(sent.len());
        for e in sent {
            match &e.body {
                EntryBody::Grpc(built) => match built.as_ref() {
                    Ok(entry) => entries.push(entry.clone()),
                    Err(why) => return vec![EntryOutcome::Retry(why.clone()); ids.len()],
                },
                EntryBody::Json { .. } => {
                    return vec![EntryOutcome::Retry("internal error: a JSON entry on the gRPC channel".into()); ids.len()];
                }
            }
        }
        let req = crate::grpc::pb::runtime::TopicEventBulkRequest {
            id: envelope_id.to_string(),
            entries,
            metadata: [("pubsubName".to_string(), sub.pubsub.clone())].into_iter().collect(),
            topic: sub.topic.clone(),
            pubsub_name: sub.pubsub.clone(),
            r#type: BULK_EVENT_TYPE.into(),
            path: path.to_string(),
        };
        self.app.on_bulk_topic_event(req, ids, &[("pubsubname".to_string(), sub.pubsub.clone())]).await
    }

    /// The envelope daprd's NewBulkSubscribeEnvelope makes, as Go marshals it: the
    /// envelope's keys sorted (a map), each entry's in struct order.
    fn render(&self, id: &str, entries: &[&Entry]) -> Bytes {
        use crate::cloudevents::write_string;
        let sub = &self.route.sub;
        let mut out = String::from("{\"entries\":[");
        let json = entries.iter().filter_map(|e| match &e.body {
            EntryBody::Json { event, metadata, content_type } => Some((&e.id, event, metadata, content_type)),
            EntryBody::Grpc(_) => None,
        });
        for (k, (id, event, metadata, content_type)) in json.enumerate() {
            if k > 0 {
                out.push(',');
            }
            out.push_str("{\"entryId\":");
            write_string(&mut out, id);
            out.push_str(",\"event\":");
            out.push_str(event);
            out.push_str(",\"metadata\":");
            out.push_str(metadata);
            out.push_str(",\"contentType\":");
            write_string(&mut out, content_type);
            out.push('}');
        }
        out.push_str("],\"id\":");
        write_string(&mut out, id);
        out.push_str(",\"metadata\":{\"pubsubName\":");
        write_string(&mut out, &sub.pubsub);
        out.push_str("},\"pubsubname\":");
        write_string(&mut out, &sub.pubsub);
        out.push_str(",\"topic\":");
        write_string(&mut out, &sub.topic);
        out.push_str(",\"type\":");
        write_string(&mut out, BULK_EVENT_TYPE);
        out.push('}');
        Bytes::from(out)
    }

    /// Publishes messages `idx` (their original bytes and metadata) to the dead-letter
    /// topic; `None` when the subscription has none.
    async fn dead_letter(&self, msgs: &[Message], idx: &[usize]) -> Option<Result<(), String>> {
        let dlq = self.route.sub.dead_letter_topic.as_ref()?;
        if let Some(e) = &self.dlq_forbidden {
            tracing::error!(
                "error sending message to dead letter, origin topic: {} dead letter topic {dlq} err: {e}",
                self.route.sub.topic
            );
            return Some(Err(e.clone()));
        }
        for i in idx {
            let m = &msgs[*i];
            tracing::warn!(pubsub = %self.route.sub.pubsub, topic = %m.topic, dead_letter_topic = %dlq, "sending a bulk entry to the dead-letter topic");
            let dl = crate::delivery::dead_letter_message(m, dlq, &self.route.sub.pubsub);
            if let Err(e) = self.pubsub.publish(dl).await {
                return Some(Err(format!("publishing to the dead-letter topic {dlq}: {e}")));
            }
        }
        Some(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_channel::{AppTransport, TransportError};
    use crate::resources::Subscription;
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn bulk_answers_are_read_as_deliver_bulk_reads_them() {
        use EntryOutcome::*;
        let ids = ["a", "b", "c"];
        let read = |status: u16, body: &str| interpret_bulk(Ok((status, body.as_bytes())), &ids);
        let retry = |o: &EntryOutcome| matches!(o, Retry(_));
        // Per entry; a missing entry and an empty status are retried; unknown ids ignored.
        let got = read(
            200,
            r#"{"statuses":[{"entryId":"a","status":"SUCCESS"},{"entryId":"b","status":"DROP"},{"entryId":"z","status":"SUCCESS"}]}"#,
        );
        assert_eq!(got[..2], [Success, Drop]);
        assert!(retry(&got[2]));
        let got =
            read(200, r#"{"statuses":[{"entryId":"a","status":""},{"entryId":"b","status":"success"},{"entryId":"c","status":"RETRY"}]}"#);
        assert!(got.iter().all(retry), "{got:?}");
        // Go's decoder: keys fold, the last status for an id wins, trailing bytes ignored.
        let got = read(
            200,
            r#"{"Statuses":[{"EntryID":"a","STATUS":"RETRY"},{"entryid":"a","status":"SUCCESS"},{"entryId":"b","status":"SUCCESS"},{"entryId":"c","status":"SUCCESS"}]} trailing"#,
        );
        assert_eq!(got, [Success, Success, Success]);
        // Bodies that do not decode fail every entry (a single delivery would succeed).
        for body in ["", "not json", "[]", r#"{"statuses":"x"}"#, r#"{"statuses":[{"entryId":5}]}"#] {
            assert!(read(200, body).iter().all(retry), "{body:?}");
        }
        for body in ["null", "{}", r#"{"statuses":[]}"#] {
            assert!(read(200, body).iter().all(retry), "nothing answered for any entry: {body:?}");
        }
        // 404 acks everything (no retry, no dead letter); other statuses fail everything.
        assert_eq!(read(404, ""), [Success, Success, Success]);
        assert!(read(500, r#"{"statuses":[{"entryId":"a","status":"SUCCESS"}]}"#).iter().all(retry));
        assert!(interpret_bulk(Err("refused".into()), &ids).iter().all(retry));
    }

    /// An app that answers every bulk request by `answer(entries)` and keeps the requests.
    struct FakeApp {
        seen: Mutex<Vec<(String, Value)>>,
        answer: fn(&[Value]) -> (u16, String),
    }

    #[async_trait::async_trait]
    impl AppTransport for FakeApp {
        async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
            let body: Value = serde_json::from_slice(req.body()).map_err(|e| TransportError(e.to_string()))?;
            let entries = body["entries"].as_array().cloned().unwrap_or_default();
            self.seen.lock().unwrap().push((req.uri().path().to_string(), body));
            let (status, answer) = (self.answer)(&entries);
            let mut resp = http::Response::new(Bytes::from(answer));
            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok(resp)
        }
    }

    fn echo(entries: &[Value], status: &str) -> String {
        serde_json::json!({"statuses": entries.iter().map(|e| serde_json::json!({"entryId": e["entryId"], "status": status})).collect::<Vec<_>>()})
            .to_string()
    }

    fn delivery(app: Arc<FakeApp>, config: BulkConfig, dlq: Option<&str>) -> (Arc<BulkDelivery>, Arc<dyn PubSub>) {
        let sub = Subscription::new("ps".into(), "t".into(), Some("/b".into()), None, Default::default(), dlq.map(str::to_owned), false);
        let pubsub: Arc<dyn PubSub> = Arc::new(spindapr_dapr_components::pubsub::in_memory::InMemoryPubSub::default());
        let channel = Arc::new(AppChannel::new(app, "127.0.0.1", 1, "me", None));
        let d = BulkDelivery {
            route: Route::compile(sub).unwrap(),
            pubsub: pubsub.clone(),
            app: channel,
            policy: Arc::new(Policy::default()),
            config,
            dlq_forbidden: None,
        };
        (Arc::new(d), pubsub)
    }

    fn msg(n: usize) -> Message {
        let ce = format!(r#"{{"id":"{n}","specversion":"1.0","type":"x","source":"s","topic":"t","pubsubname":"ps","data":{{"n":{n}}}}}"#);
        Message { topic: "t".into(), data: Bytes::from(ce), metadata: [("k".to_string(), "v".to_string())].into() }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_flush_at_the_count_or_after_the_await() {
        let app = Arc::new(FakeApp { seen: Mutex::new(Vec::new()), answer: |e| (200, echo(e, "SUCCESS")) });
        let (d, _) = delivery(app.clone(), BulkConfig { max_messages: 3, max_await: Duration::from_millis(300) }, None);
        let handler = batching_handler(d);
        let start = tokio::time::Instant::now();
        let calls: Vec<_> = (0..5).map(|n| tokio::spawn(handler(msg(n)))).collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        let seen = app.seen.lock().unwrap().clone();
        assert_eq!(seen.iter().map(|(_, b)| b["entries"].as_array().unwrap().len()).collect::<Vec<_>>(), [3, 2]);
        // The second batch waited for its await; nothing waited longer.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_millis(400), "{waited:?}");
        // daprd's envelope, keys in Go's order, each entry the event as Go re-marshals it.
        let (path, body) = &seen[0];
        assert_eq!(path, "/b");
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["entries", "id", "metadata", "pubsubname", "topic", "type"]);
        assert_eq!(body["type"], BULK_EVENT_TYPE);
        assert_eq!(body["metadata"], serde_json::json!({"pubsubName": "ps"}));
        let e = &body["entries"][0];
        assert_eq!(e["event"]["data"], serde_json::json!({"n": 0}));
        assert_eq!(e["metadata"], serde_json::json!({"k": "v"}));
        assert_eq!(e["contentType"], "application/cloudevents+json");
        assert!(uuid::Uuid::parse_str(e["entryId"].as_str().unwrap()).is_ok());
        // No empty flushes while idle.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(app.seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn entries_the_app_fails_go_to_the_dead_letter_topic_and_the_batch_is_acked() {
        let app = Arc::new(FakeApp { seen: Mutex::new(Vec::new()), answer: |e| (200, echo(&e[..1], "SUCCESS")) });
        let (d, pubsub) = delivery(app.clone(), BulkConfig { max_messages: 3, max_await: Duration::from_millis(10) }, Some("dlq"));
        let dead = Arc::new(Mutex::new(Vec::new()));
        let sink = dead.clone();
        pubsub
            .subscribe(
                "dlq",
                Arc::new(move |m: Message| {
                    sink.lock().unwrap().push(m.data);
                    Box::pin(async { Ok(()) })
                }),
            )
            .await
            .unwrap();
        let got = d
            .deliver_batch(vec![
                msg(1),
                msg(2),
                Message { topic: "t".into(), data: Bytes::from_static(b"[1]"), metadata: Default::default() },
            ])
            .await;
        assert!(got.iter().all(Result::is_ok), "{got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let dead = dead.lock().unwrap().clone();
        assert_eq!(dead.len(), 2, "the unanswered entry and the unparsable one");
        assert!(dead.contains(&msg(2).data) && dead.contains(&Bytes::from_static(b"[1]")));

        // Without a dead-letter topic each message gets its own entry's result.
        let (d, _) = delivery(app, BulkConfig { max_messages: 3, max_await: Duration::from_millis(10) }, None);
        let got = d.deliver_batch(vec![msg(1), msg(2)]).await;
        assert!(got[0].is_ok() && got[1].is_err(), "{got:?}");
    }
}
