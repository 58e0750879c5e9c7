//! `pubsub.in-memory`: per sidecar, nothing persisted, a message published with no
//! subscriber is lost; each subscription gets its own queue worked serially, so
//! delivery per topic is ordered; handler errors are only logged.

use std::collections::HashMap;

use tokio::sync::{RwLock, mpsc};

use super::{Handler, Message, PubSub, PubSubError};

/// The `pubsub.in-memory` component: topics live in this process only.
#[derive(Default)]
pub struct InMemoryPubSub {
    topics: RwLock<HashMap<String, Vec<mpsc::UnboundedSender<Message>>>>,
}

#[async_trait::async_trait]
impl PubSub for InMemoryPubSub {
    async fn publish(&self, msg: Message) -> Result<(), PubSubError> {
        let topics = self.topics.read().await;
        if let Some(subs) = topics.get(&msg.topic) {
            for s in subs {
                let _ = s.send(msg.clone());
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str, handler: Handler) -> Result<(), PubSubError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
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
}
