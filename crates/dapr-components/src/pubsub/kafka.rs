//! `pubsub.kafka` as components-contrib implements it, on librdkafka: `brokers`,
//! `consumerGroup` (default the consumer id, i.e. the app id), `clientId`, `authType`
//! (only `none` here, refused otherwise), `initialOffset` (`newest` | `oldest`),
//! `maxMessageBytes`, `sessionTimeout` (10s) and `heartbeatInterval` (3s). Publish: the `partitionKey` (or `__key`) metadata is the record
//! key and every metadata entry a record header. Subscribe: one consumer in the group per
//! topic; a message whose handler fails is retried in place after a back-off (the
//! partition waits, as Dapr's consumer does); its offset is stored only once handled, so
//! a restart resumes at the first unhandled message. Deliveries carry `__key`,
//! `__offset`, `__partition` and `__topic` beside the record headers.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{Mutex, watch};

use super::{Handler, Message, PubSub, PubSubError};
use crate::{Component, parse_go_duration};

/// The `pubsub.kafka` component.
pub struct KafkaPubSub {
    base: ClientConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    group: String,
    initial_offset: &'static str,
    retry_interval: Duration,
    session_timeout: Duration,
    heartbeat: Duration,
    known_topics: Mutex<std::collections::HashSet<String>>,
    stop: watch::Sender<bool>,
}

impl KafkaPubSub {
    /// Reads the component's metadata and creates its clients; `consumer_id` is the default consumer group.
    pub fn new(c: &Component, consumer_id: &str) -> anyhow::Result<Self> {
        let meta = |k: &str| c.meta(k).filter(|v| !v.is_empty());
        let brokers = meta("brokers")
            .with_context(|| format!("{}: component {} needs metadata brokers (host:port, comma separated)", c.file.display(), c.name))?;
        match meta("authType") {
            Some("none") => {}
            Some(other) => {
                bail!("{}: component {}: authType {other} is not supported by this sidecar yet; use none", c.file.display(), c.name)
            }
            None => bail!(
                "{}: component {}: authType is required (none, password, mtls, oidc, awsiam); this sidecar supports none",
                c.file.display(),
                c.name
            ),
        }
        let initial_offset = match meta("initialOffset").unwrap_or("newest") {
            "newest" => "latest",
            "oldest" => "earliest",
            other => bail!("component {}: initialOffset {other:?} must be newest or oldest", c.name),
        };
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", brokers);
        base.set("client.id", meta("clientId").unwrap_or("sarama"));
        if let Some(max) = meta("maxMessageBytes") {
            let n: usize = max.parse().with_context(|| format!("component {}: maxMessageBytes {max:?} is not a number", c.name))?;
            base.set("message.max.bytes", n.max(1000).to_string());
        }
        // Sent at once, as Dapr's synchronous producer does (librdkafka would linger 5 ms).
        let producer: FutureProducer =
            base.clone().set("message.timeout.ms", "10000").set("linger.ms", "0").create().context("creating the Kafka producer")?;
        let admin: AdminClient<DefaultClientContext> = base.create().context("creating the Kafka admin client")?;
        let retry_interval = match meta("backOffInitialInterval").or(meta("consumeRetryInterval")) {
            Some(v) => parse_go_duration(v)?,
            None => Duration::from_secs(5),
        };
        // How long a dead consumer keeps its partitions (Dapr's default: 10s).
        let session_timeout = match meta("sessionTimeout") {
            Some(v) => parse_go_duration(v)?,
            None => Duration::from_secs(10),
        };
        let heartbeat = match meta("heartbeatInterval") {
            Some(v) => parse_go_duration(v)?,
            None => Duration::from_secs(3),
        };
        let (stop, _) = watch::channel(false);
        Ok(Self {
            session_timeout,
            heartbeat,
            base,
            producer,
            admin,
            group: meta("consumerGroup").map(str::to_owned).unwrap_or_else(|| consumer_id.to_string()),
            initial_offset,
            retry_interval,
            known_topics: Mutex::new(Default::default()),
            stop,
        })
    }

    /// Creates the topic if the cluster lacks it (brokers without auto-creation).
    async fn ensure_topic(&self, topic: &str) {
        if self.known_topics.lock().await.contains(topic) {
            return;
        }
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
        match self.admin.create_topics([&new], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)))).await {
            Ok(results) => {
                for r in results {
                    if let Err((t, e)) = r
                        && e != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
                    {
                        tracing::debug!("creating topic {t}: {e}");
                    }
                }
            }
            Err(e) => tracing::debug!("creating topic {topic}: {e}"),
        }
        let mut known = self.known_topics.lock().await;
        // Topic names come from publishers: forget them all past a bound (creating a
        // topic that exists is harmless), so memory does not follow the names seen.
        if known.len() >= MAX_KNOWN_TOPICS {
            known.clear();
        }
        known.insert(topic.to_string());
    }
}

/// Topic names remembered as existing before the set starts over.
const MAX_KNOWN_TOPICS: usize = 10_000;

/// Record headers and the delivery metadata Dapr adds.
fn metadata_of(m: &rdkafka::message::BorrowedMessage<'_>) -> BTreeMap<String, String> {
    let mut md = BTreeMap::new();
    if let Some(h) = m.headers() {
        for Header { key, value } in h.iter() {
            md.insert(key.to_string(), String::from_utf8_lossy(value.unwrap_or_default()).into_owned());
        }
    }
    if let Some(k) = m.key() {
        md.insert("__key".into(), String::from_utf8_lossy(k).into_owned());
    }
    md.insert("__offset".into(), m.offset().to_string());
    md.insert("__partition".into(), m.partition().to_string());
    md.insert("__topic".into(), m.topic().to_string());
    md
}

#[async_trait::async_trait]
impl PubSub for KafkaPubSub {
    async fn publish(&self, msg: Message) -> Result<(), PubSubError> {
        self.ensure_topic(&msg.topic).await;
        let key = msg.metadata.get("partitionKey").or_else(|| msg.metadata.get("__key")).cloned();
        let mut headers = OwnedHeaders::new();
        for (k, v) in &msg.metadata {
            headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
        }
        let mut record = FutureRecord::to(&msg.topic).payload(msg.data.as_ref()).headers(headers);
        if let Some(k) = &key {
            record = record.key(k.as_str());
        }
        if let Err((e, _)) = self.producer.send(record, Duration::from_secs(10)).await {
            // The broker may come back empty (or be another one): check the topic again next time.
            self.known_topics.lock().await.remove(&msg.topic);
            return Err(PubSubError(format!("kafka: error from publish: {e}")));
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str, handler: Handler) -> Result<(), PubSubError> {
        self.ensure_topic(topic).await;
        let consumer: StreamConsumer = self
            .base
            .clone()
            .set("group.id", &self.group)
            .set("auto.offset.reset", self.initial_offset)
            .set("enable.auto.commit", "true")
            // Offsets are stored by us, after a message is handled; librdkafka commits them.
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("session.timeout.ms", self.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", self.heartbeat.as_millis().to_string())
            // A bounded long-poll: brokers that answer a fetch only at its deadline still
            // deliver within ~100 ms (librdkafka's default is 500 ms).
            .set("fetch.wait.max.ms", "100")
            .create()
            .map_err(|e| PubSubError(format!("creating the Kafka consumer: {e}")))?;
        consumer.subscribe(&[topic]).map_err(|e| PubSubError(format!("subscribing to Kafka topic {topic}: {e}")))?;
        let (mut stop, retry, topic) = (self.stop.subscribe(), self.retry_interval, topic.to_string());
        tokio::spawn(async move {
            loop {
                let m = tokio::select! { m = consumer.recv() => m, _ = stop.changed() => break };
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(topic = %topic, "kafka: consumer error: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let msg = Message {
                    topic: m.topic().to_string(),
                    data: bytes::Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                    metadata: metadata_of(&m),
                };
                // Retried in place until handled: the partition waits, nothing is skipped.
                loop {
                    match handler(msg.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(topic = %topic, offset = m.offset(), "kafka: message not processed, retrying in {retry:?}: {e:#}");
                            tokio::select! { _ = tokio::time::sleep(retry) => {}, _ = stop.changed() => return }
                        }
                    }
                }
                if let Err(e) = consumer.store_offset_from_message(&m) {
                    tracing::error!(topic = %topic, "kafka: storing the offset failed: {e}");
                }
            }
            // Commit what was handled, then leave the group. Both block inside librdkafka
            // (for as long as the broker takes to answer, or not), so off the async workers.
            drop(tokio::task::spawn_blocking(move || {
                let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
                drop(consumer);
            }));
        });
        Ok(())
    }

    async fn close(&self) {
        let _ = self.stop.send(true);
    }
}
