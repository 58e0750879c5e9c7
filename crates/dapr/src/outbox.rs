//! The transactional outbox, built as daprd's (`pkg/runtime/pubsub/outbox.go`): before a
//! transaction on a store with `outboxPublishPubsub`/`outboxPublishTopic` commits, each
//! event is published to the internal topic `<namespace><app-id><topic>outbox` (on
//! `outboxPubsub`, default the publish pubsub) and a marker `outbox-<uuid>` (the event's
//! id) is added to the transaction. An internal subscription then publishes an event
//! whose marker exists and deletes the marker, so a change that committed always yields
//! its event, even when the broker was down right after the commit or the process died:
//! the internal message waits in the broker until it can be handled.
//!
//! Where this differs from daprd, it is faster and never drops a committed event: the
//! sidecar that committed publishes at once (daprd waits a second in the internal
//! handler) and marks the marker published (`"1"`); the internal handler on that sidecar
//! knows the outcome and only removes the marker, and one on another replica removes a
//! published marker, publishes a pending one once [`GRACE`] has passed, and drops a
//! message whose marker never appears (the transaction did not commit; daprd rejects it
//! again and again unless `outboxDiscardWhenMissingState`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use spindapr_dapr_components::pubsub::{self, Message, NotProcessed, PubSub};
use spindapr_dapr_components::state::{Concurrency, DeleteRequest, Operation, SetRequest, StateStore};
use tokio::sync::watch;

use crate::cloudevents;

/// How long a marker may stay unpublished (or absent) before a sidecar that did not
/// commit the transaction acts on it: the committing sidecar publishes within
/// milliseconds, so only a crashed or cut-off one leaves it that long.
const GRACE: Duration = Duration::from_secs(2);
/// How often the marker is looked at during [`GRACE`].
const POLL: Duration = Duration::from_millis(20);
/// How long a sidecar remembers the outcome of its own transactions (their internal
/// messages may be handled by another replica and never come back).
const REMEMBER: Duration = Duration::from_secs(60);
/// Marker values: committed, and committed and published.
const PENDING: &[u8] = b"\"0\"";
const PUBLISHED: &[u8] = b"\"1\"";

/// A state store's outbox settings (its component metadata).
#[derive(Debug, Clone)]
pub(crate) struct OutboxSettings {
    /// `outboxPublishPubsub`: where the events go.
    pub publish_pubsub: String,
    /// `outboxPublishTopic`.
    pub publish_topic: String,
    /// `outboxPubsub`: the pubsub of the internal topic (default the publish pubsub).
    pub outbox_pubsub: String,
    /// `outboxDiscardWhenMissingState` (kept for the log line: a missing marker is
    /// dropped either way, see the module comment).
    pub discard_when_missing: bool,
}

/// Where a transaction of this sidecar stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    InFlight,
    /// The transaction failed: nothing to publish.
    Failed,
    /// Committed and published (the marker says `"1"`, or only this process knows).
    Published,
    /// Committed, but the publish failed: the internal handler publishes it.
    Unpublished,
}

#[derive(Default)]
struct Local {
    phases: HashMap<String, watch::Sender<Phase>>,
    /// Internal messages being settled, by id (a redelivery joins the running work).
    working: HashMap<String, watch::Receiver<bool>>,
    order: VecDeque<(Instant, String)>,
}

/// One state store's outbox.
pub(crate) struct Outbox {
    settings: OutboxSettings,
    store: Arc<dyn StateStore>,
    publish: Arc<dyn PubSub>,
    internal: Arc<dyn PubSub>,
    internal_topic: String,
    /// The internal pubsub lives in this process (in-memory): its messages always come
    /// back here, so the marker need not say "published".
    internal_is_local: bool,
    local: Mutex<Local>,
}

/// The events of one transaction, published to the internal topic and awaiting the
/// transaction's outcome.
pub(crate) struct Pending {
    events: Vec<(String, BTreeMap<String, Value>)>,
}

impl Outbox {
    pub(crate) fn new(
        settings: OutboxSettings,
        app_id: &str,
        store: Arc<dyn StateStore>,
        publish: Arc<dyn PubSub>,
        internal: Arc<dyn PubSub>,
        internal_is_local: bool,
    ) -> Self {
        let namespace = std::env::var("NAMESPACE").unwrap_or_default();
        let internal_topic = format!("{namespace}{app_id}{}outbox", settings.publish_topic);
        Self { settings, store, publish, internal, internal_topic, internal_is_local, local: Mutex::default() }
    }

    /// The pubsub and topic the events are published to.
    pub(crate) fn target(&self) -> (&str, &str) {
        (&self.settings.publish_pubsub, &self.settings.publish_topic)
    }

    /// Subscribes the internal handler (at start, whether or not an app is there).
    pub(crate) async fn subscribe(self: &Arc<Self>) -> Result<(), pubsub::PubSubError> {
        let me = self.clone();
        let handler: pubsub::Handler = Arc::new(move |m| {
            let me = me.clone();
            Box::pin(async move { me.handle(m).await })
        });
        self.internal.subscribe(&self.internal_topic, handler).await
    }

    /// Publishes each event (a CloudEvent whose `id` is its marker key) to the internal
    /// topic and returns the marker operations to add to the transaction. An error means
    /// nothing may be committed.
    pub(crate) async fn prepare(&self, events: Vec<BTreeMap<String, Value>>) -> Result<(Vec<Operation>, Pending), pubsub::PubSubError> {
        let mut pending = Pending { events: Vec::with_capacity(events.len()) };
        let mut ops = Vec::with_capacity(events.len());
        for ce in events {
            let id = ce.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            let mut internal = ce.clone();
            internal.insert("topic".into(), Value::String(String::new()));
            internal.insert("pubsubname".into(), Value::String(self.settings.outbox_pubsub.clone()));
            self.remember(&id);
            let msg = Message {
                topic: self.internal_topic.clone(),
                data: Bytes::from(cloudevents::to_go_json(&internal)),
                metadata: BTreeMap::new(),
            };
            if let Err(e) = self.internal.publish(msg).await {
                self.settle_all(&pending, Phase::Failed);
                self.set_phase(&id, Phase::Failed);
                return Err(e);
            }
            ops.push(Operation::Upsert(marker(&id, PENDING)));
            pending.events.push((id, ce));
        }
        Ok((ops, pending))
    }

    /// Records the transaction's outcome; after a commit, publishes the events at once.
    /// A publish that fails here is left to the internal handler (the change committed,
    /// so the caller is told it succeeded, as daprd tells it).
    pub(crate) async fn finish(&self, pending: Pending, committed: bool) {
        if !committed {
            self.settle_all(&pending, Phase::Failed);
            return;
        }
        for (id, ce) in &pending.events {
            let phase = match self.publish_event(ce).await {
                Ok(()) if self.internal_is_local => Phase::Published,
                Ok(()) => match self.store.set(marker(id, PUBLISHED)).await {
                    Ok(()) => Phase::Published,
                    // The marker still says pending: another replica may publish it again
                    // after GRACE; a duplicate, never a loss.
                    Err(e) => {
                        tracing::warn!(marker = %id, "outbox: marking the event published failed: {e}");
                        Phase::Published
                    }
                },
                Err(e) => {
                    tracing::warn!(
                        pubsub = %self.settings.publish_pubsub,
                        topic = %self.settings.publish_topic,
                        "outbox: publishing after the commit failed ({e}); the event is kept and published when the pubsub answers"
                    );
                    Phase::Unpublished
                }
            };
            self.set_phase(id, phase);
        }
    }

    async fn publish_event(&self, ce: &BTreeMap<String, Value>) -> Result<(), pubsub::PubSubError> {
        let msg = Message {
            topic: self.settings.publish_topic.clone(),
            data: Bytes::from(cloudevents::to_go_json(ce)),
            metadata: BTreeMap::new(),
        };
        self.publish.publish(msg).await
    }

    /// The internal subscription's handler. The work runs in a task of its own, which a
    /// redelivery of the same message joins: a broker that gives up on a slow handler
    /// (Redis's `processingTimeout`) cancels the wait, not the work.
    async fn handle(self: &Arc<Self>, msg: Message) -> Result<(), NotProcessed> {
        let mut ce: BTreeMap<String, Value> = match serde_json::from_slice(&msg.data) {
            Ok(ce) => ce,
            Err(e) => {
                tracing::error!(topic = %self.internal_topic, "outbox: dropping an internal message that is not a CloudEvent: {e}");
                return Ok(());
            }
        };
        let id = ce.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        // The internal topic is an ordinary topic anyone with API access can publish to:
        // act only on ids shaped as this outbox writes them, so a forged message cannot
        // name (and have deleted) any other state key.
        if !is_marker_key(&id) {
            tracing::warn!(topic = %self.internal_topic, id = %id.chars().take(80).collect::<String>(), "outbox: dropping an internal message whose id is not an outbox marker");
            return Ok(());
        }
        ce.insert("topic".into(), Value::String(self.settings.publish_topic.clone()));
        ce.insert("pubsubname".into(), Value::String(self.settings.publish_pubsub.clone()));
        let mut done = {
            let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
            match l.working.get(&id) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(false);
                    l.working.insert(id.clone(), rx.clone());
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.settle(&id, &ce).await;
                        let mut l = me.local.lock().unwrap_or_else(|p| p.into_inner());
                        l.working.remove(&id);
                        l.phases.remove(&id);
                        drop(l);
                        tx.send_replace(true);
                    });
                    rx
                }
            }
        };
        let _ = done.wait_for(|d| *d).await;
        Ok(())
    }

    /// Publishes the event if its transaction committed and nobody published it, then
    /// removes its marker.
    async fn settle(&self, id: &str, ce: &BTreeMap<String, Value>) {
        let phase = match self.watch(id) {
            Some(mut rx) => match tokio::time::timeout(REMEMBER, rx.wait_for(|p| *p != Phase::InFlight)).await {
                Ok(Ok(p)) => Some(*p),
                _ => None,
            },
            None => None,
        };
        match phase {
            Some(Phase::Failed) => {}
            Some(Phase::Published) => self.remove_marker(id).await,
            Some(Phase::Unpublished) => {
                self.publish_until_done(ce).await;
                self.remove_marker(id).await;
            }
            // Another replica's transaction, or this process restarted: read the marker.
            Some(Phase::InFlight) | None => self.handle_foreign(id, ce).await,
        }
    }

    async fn handle_foreign(&self, id: &str, ce: &BTreeMap<String, Value>) {
        let start = Instant::now();
        loop {
            let marker = match self.store.get(id).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(marker = %id, "outbox: reading the marker failed: {e}");
                    tokio::time::sleep(POLL * 10).await;
                    continue;
                }
            };
            let waited = start.elapsed() >= GRACE;
            match marker {
                Some(m) if m.data.as_ref() == PUBLISHED => {
                    self.remove_marker(id).await;
                    return;
                }
                Some(m) if m.data.as_ref() == PENDING => {
                    if waited {
                        self.publish_until_done(ce).await;
                        self.remove_marker(id).await;
                        return;
                    }
                    tokio::time::sleep(POLL).await;
                }
                // Not a value this outbox writes: not ours to publish or delete.
                Some(_) => {
                    tracing::warn!(marker = %id, "outbox: the marker's key holds something else; leaving it and publishing nothing");
                    return;
                }
                None if waited => {
                    tracing::debug!(
                        marker = %id,
                        discard_when_missing = self.settings.discard_when_missing,
                        "outbox: no marker: the transaction did not commit (or the event was already handled); nothing to publish"
                    );
                    return;
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Publishes until the pubsub takes it (at most 5 s between attempts): the change
    /// committed, so its event must go out.
    async fn publish_until_done(&self, ce: &BTreeMap<String, Value>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.publish_event(ce).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(topic = %self.settings.publish_topic, "outbox: publishing failed ({e}); retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 3 / 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn remove_marker(&self, id: &str) {
        for _ in 0..3 {
            match self.store.delete(DeleteRequest { key: id.to_string(), etag: None, concurrency: Concurrency::LastWrite }).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(marker = %id, "outbox: deleting the marker failed: {e}");
                    tokio::time::sleep(POLL * 10).await;
                }
            }
        }
    }

    fn remember(&self, id: &str) {
        let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while l.order.front().is_some_and(|(t, _)| now.duration_since(*t) > REMEMBER) {
            if let Some((_, old)) = l.order.pop_front() {
                l.phases.remove(&old);
            }
        }
        let (tx, _) = watch::channel(Phase::InFlight);
        l.phases.insert(id.to_string(), tx);
        l.order.push_back((now, id.to_string()));
    }

    fn set_phase(&self, id: &str, phase: Phase) {
        let l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = l.phases.get(id) {
            tx.send_replace(phase);
        }
    }

    fn settle_all(&self, pending: &Pending, phase: Phase) {
        for (id, _) in &pending.events {
            self.set_phase(id, phase);
        }
    }

    /// The outcome of one of this sidecar's transactions, as it becomes known.
    fn watch(&self, id: &str) -> Option<watch::Receiver<Phase>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).phases.get(id).map(|tx| tx.subscribe())
    }
}

/// Whether `id` is a marker key as `prepare` makes them: `outbox-<uuid>`.
fn is_marker_key(id: &str) -> bool {
    id.strip_prefix("outbox-").is_some_and(|u| uuid::Uuid::try_parse(u).is_ok())
}

fn marker(id: &str, value: &'static [u8]) -> SetRequest {
    SetRequest {
        key: id.to_string(),
        value: Bytes::from_static(value),
        etag: None,
        concurrency: Concurrency::LastWrite,
        metadata: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindapr_dapr_components::pubsub::in_memory::InMemoryPubSub;
    use spindapr_dapr_components::state::in_memory::InMemoryState;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A pubsub that refuses publishes while `down` is set.
    struct Flaky {
        inner: InMemoryPubSub,
        down: AtomicBool,
    }

    #[async_trait::async_trait]
    impl PubSub for Flaky {
        async fn publish(&self, msg: Message) -> Result<(), pubsub::PubSubError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(pubsub::PubSubError("connection refused".into()));
            }
            self.inner.publish(msg).await
        }
        async fn subscribe(&self, topic: &str, handler: pubsub::Handler) -> Result<(), pubsub::PubSubError> {
            self.inner.subscribe(topic, handler).await
        }
    }

    struct Fixture {
        store: Arc<InMemoryState>,
        publish: Arc<Flaky>,
        internal: Arc<InMemoryPubSub>,
        seen: Arc<Mutex<Vec<BTreeMap<String, Value>>>>,
    }

    async fn fixture() -> Fixture {
        let publish = Arc::new(Flaky { inner: InMemoryPubSub::default(), down: AtomicBool::new(false) });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let h: pubsub::Handler = Arc::new(move |m: Message| {
            let s = s.clone();
            Box::pin(async move {
                s.lock().unwrap().push(serde_json::from_slice(&m.data).unwrap());
                Ok(())
            })
        });
        publish.subscribe("todos", h).await.unwrap();
        Fixture { store: Arc::new(InMemoryState::default()), publish, internal: Arc::new(InMemoryPubSub::default()), seen }
    }

    fn outbox(f: &Fixture) -> Arc<Outbox> {
        let settings = OutboxSettings {
            publish_pubsub: "pubsub".into(),
            publish_topic: "todos".into(),
            outbox_pubsub: "pubsub".into(),
            discard_when_missing: false,
        };
        Arc::new(Outbox::new(settings, "app", f.store.clone(), f.publish.clone(), f.internal.clone(), true))
    }

    /// The marker key (and event id) of test event `n`, shaped as `prepare` makes them.
    fn key(n: u32) -> String {
        format!("outbox-00000000-0000-4000-8000-{n:012}")
    }

    fn event(n: u32) -> BTreeMap<String, Value> {
        let id = key(n);
        [("id", Value::String(id)), ("topic", "todos".into()), ("pubsubname", "pubsub".into()), ("data", n.into())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// One transaction as the API runs it: a todo and its event.
    async fn commit(o: &Outbox, store: &InMemoryState, n: u32) {
        let (mut ops, pending) = o.prepare(vec![event(n)]).await.unwrap();
        ops.push(Operation::Upsert(marker(&format!("todo-{n}"), PENDING)));
        let r = store.multi(ops).await;
        o.finish(pending, r.is_ok()).await;
        r.unwrap();
    }

    async fn settle() {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    }

    fn data(seen: &Mutex<Vec<BTreeMap<String, Value>>>) -> Vec<u64> {
        let mut v: Vec<u64> = seen.lock().unwrap().iter().map(|ce| ce["data"].as_u64().unwrap()).collect();
        v.sort();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_publishes_once_and_leaves_no_marker() {
        let f = fixture().await;
        let o = outbox(&f);
        o.subscribe().await.unwrap();
        for n in 0..5 {
            commit(&o, &f.store, n).await;
        }
        settle().await;
        assert_eq!(data(&f.seen), vec![0, 1, 2, 3, 4]);
        for n in 0..5 {
            assert!(f.store.get(&key(n)).await.unwrap().is_none(), "marker {n} left behind");
        }
        let ce = &f.seen.lock().unwrap()[0];
        assert_eq!((ce["topic"].as_str(), ce["pubsubname"].as_str()), (Some("todos"), Some("pubsub")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_broker_down_after_the_commit_delays_the_event_but_never_loses_it() {
        let f = fixture().await;
        let o = outbox(&f);
        o.subscribe().await.unwrap();
        f.publish.down.store(true, Ordering::SeqCst);
        for n in 0..3 {
            commit(&o, &f.store, n).await;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(data(&f.seen).is_empty());
        assert!(f.store.get(&key(0)).await.unwrap().is_some(), "the marker stays until published");
        f.publish.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(data(&f.seen), vec![0, 1, 2]);
        assert!(f.store.get(&key(2)).await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_transaction_publishes_nothing() {
        let f = fixture().await;
        let o = outbox(&f);
        o.subscribe().await.unwrap();
        let (mut ops, pending) = o.prepare(vec![event(7)]).await.unwrap();
        // A create-only write of a key that exists: the transaction fails.
        f.store.set(marker("taken", PENDING)).await.unwrap();
        ops.push(Operation::Upsert(SetRequest { concurrency: Concurrency::FirstWrite, ..marker("taken", PENDING) }));
        let r = f.store.multi(ops).await;
        assert!(r.is_err());
        o.finish(pending, false).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(data(&f.seen).is_empty());
        assert!(f.store.get(&key(7)).await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn another_sidecar_publishes_what_a_crashed_one_committed() {
        let f = fixture().await;
        // The message as a crashed sidecar left it: committed (marker "0"), not published.
        let crashed = outbox(&f);
        let (ops, _pending) = crashed.prepare(vec![event(1), event(2), event(3)]).await.unwrap();
        let ops: Vec<Operation> = ops.into_iter().filter(|op| !matches!(op, Operation::Upsert(r) if r.key == key(3))).collect();
        f.store.multi(ops).await.unwrap();
        f.store.set(marker(&key(2), PUBLISHED)).await.unwrap();
        // A fresh sidecar (no memory of them) handles the internal messages.
        let fresh = outbox(&f);
        for n in 1..=3 {
            let mut internal = event(n);
            internal.insert("topic".into(), Value::String(String::new()));
            let msg = Message {
                topic: "appTodosoutbox".into(),
                data: Bytes::from(cloudevents::to_go_json(&internal)),
                metadata: BTreeMap::new(),
            };
            fresh.handle(msg).await.unwrap();
        }
        settle().await;
        // 1 was pending: published; 2 was published already; 3 never committed.
        assert_eq!(data(&f.seen), vec![1]);
        for n in 1..=3 {
            assert!(f.store.get(&key(n)).await.unwrap().is_none());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_forged_internal_message_publishes_and_deletes_nothing() {
        let f = fixture().await;
        let o = outbox(&f);
        // Ids naming an ordinary key, and a marker-shaped key holding something else.
        f.store.set(marker("todo-1", PENDING)).await.unwrap();
        f.store.set(SetRequest { value: Bytes::from_static(b"{\"mine\":true}"), ..marker(&key(9), PENDING) }).await.unwrap();
        for id in ["todo-1".to_string(), "outbox-".to_string(), "".to_string(), key(9)] {
            let mut forged = event(9);
            forged.insert("id".into(), Value::String(id));
            let msg =
                Message { topic: "appTodosoutbox".into(), data: Bytes::from(cloudevents::to_go_json(&forged)), metadata: BTreeMap::new() };
            o.handle(msg).await.unwrap();
        }
        settle().await;
        assert!(data(&f.seen).is_empty());
        assert!(f.store.get("todo-1").await.unwrap().is_some());
        assert_eq!(f.store.get(&key(9)).await.unwrap().unwrap().data.as_ref(), b"{\"mine\":true}");
    }
}
