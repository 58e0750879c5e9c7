//! `pubsub.in-memory`: per sidecar, nothing persisted, a message published with no
//! subscriber is lost; each subscription gets its own queue worked serially, so
//! delivery per topic is ordered; handler errors are only logged. A subscription whose
//! topic ends in `*` gets every topic that starts with what precedes it (not that prefix
//! itself), delivered under the pattern's name, as contrib's event bus. Queues are bounded:
//! a publish to a full one waits for room (back-pressure on the publisher) and fails
//! after [`FULL_QUEUE_WAIT`], so memory never grows without bound.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{RwLock, mpsc};

use super::{Handler, Message, PubSub, PubSubError};

/// Messages one subscription may hold before publishers wait.
pub const QUEUE_CAPACITY: usize = 10_000;
/// How long a publish waits for room in a full queue before it fails.
pub const FULL_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The `pubsub.in-memory` component: topics live in this process only.
#[derive(Default)]
pub struct InMemoryPubSub {
    topics: RwLock<HashMap<String, Vec<mpsc::Sender<Message>>>>,
}

#[async_trait::async_trait]
impl PubSub for InMemoryPubSub {
    async fn publish(&self, msg: Message) -> Result<(), PubSubError> {
        // Senders are cloned out so a wait for room does not hold the topics' lock.
        let subs: Vec<(Option<String>, mpsc::Sender<Message>)> = {
            let topics = self.topics.read().await;
            let mut subs: Vec<_> = topics.get(&msg.topic).into_iter().flatten().map(|s| (None, s.clone())).collect();
            for (pattern, senders) in topics.iter().filter(|(k, _)| wildcard_matches(k, &msg.topic)) {
                subs.extend(senders.iter().map(|s| (Some(pattern.clone()), s.clone())));
            }
            subs
        };
        for (pattern, s) in subs {
            let mut m = msg.clone();
            if let Some(p) = pattern {
                m.topic = p;
            }
            match s.send_timeout(m, FULL_QUEUE_WAIT).await {
                Ok(()) => {}
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    return Err(PubSubError(format!(
                        "in-memory pubsub: the subscription queue of topic {} stayed full ({QUEUE_CAPACITY} messages) for {FULL_QUEUE_WAIT:?}",
                        msg.topic
                    )));
                }
                // The subscription is gone (closed): nothing to deliver to.
                Err(mpsc::error::SendTimeoutError::Closed(_)) => {}
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str, handler: Handler) -> Result<(), PubSubError> {
        let (tx, mut rx) = mpsc::channel::<Message>(QUEUE_CAPACITY);
        self.topics.write().await.entry(topic.to_string()).or_default().push(tx);
        let topic = topic.to_string();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let Err(e) = handler(msg).await {
                    tracing::error!(topic = %topic, "in-memory pubsub: message not processed and dropped: {e:#}");
                }
            }
        });
        Ok(())
    }

    async fn close(&self) {
        self.topics.write().await.clear();
    }
}

/// contrib's event bus: `key` ending in `*` matches a longer topic starting with the rest.
fn wildcard_matches(key: &str, topic: &str) -> bool {
    key.strip_suffix('*').is_some_and(|prefix| topic.starts_with(prefix) && topic != prefix) && key != topic
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn ordered_delivery_and_loss_without_subscribers() {
        let ps = InMemoryPubSub::default();
        let msg = |t: &str, d: &'static str| Message {
            topic: t.into(),
            data: bytes::Bytes::from_static(d.as_bytes()),
            metadata: Default::default(),
        };
        ps.publish(msg("t", "lost")).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let h: Handler = Arc::new(move |m: Message| {
            let s = s.clone();
            Box::pin(async move {
                s.lock().unwrap().push(String::from_utf8(m.data.to_vec()).unwrap());
                Ok(())
            })
        });
        ps.subscribe("t", h).await.unwrap();
        for i in 0..50 {
            ps.publish(Message { topic: "t".into(), data: i.to_string().into(), metadata: Default::default() }).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let got = seen.lock().unwrap().clone();
        assert_eq!(got, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn wildcards_match_as_contribs_event_bus() {
        assert!(wildcard_matches("orders*", "orders1"));
        assert!(wildcard_matches("orders*", "orders/eu"));
        assert!(!wildcard_matches("orders*", "orders"));
        assert!(wildcard_matches("*", "anything"));
        assert!(!wildcard_matches("a+", "ab"));
        assert!(!wildcard_matches("or*ders", "orxders"));
        assert!(!wildcard_matches("orders*", "orders*"), "an exact subscription is not also a wildcard one");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_publishers_wait_then_fail() {
        let ps = InMemoryPubSub::default();
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        // A subscriber stuck on its first message.
        let h: Handler = Arc::new(move |_m: Message| {
            let g = g.clone();
            Box::pin(async move {
                g.notified().await;
                Ok(())
            })
        });
        ps.subscribe("t", h).await.unwrap();
        let msg = || Message { topic: "t".into(), data: bytes::Bytes::from_static(b"x"), metadata: Default::default() };
        // One in the handler and a full queue behind it...
        for _ in 0..=QUEUE_CAPACITY {
            ps.publish(msg()).await.unwrap();
        }
        // ...then a publish waits FULL_QUEUE_WAIT (virtual time here) and fails.
        let e = ps.publish(msg()).await.unwrap_err();
        assert!(e.to_string().contains("stayed full"), "{e}");
        gate.notify_one();
    }
}
