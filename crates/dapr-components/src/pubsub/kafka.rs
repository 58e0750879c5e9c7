//! `pubsub.kafka` as components-contrib implements it, on librdkafka: `brokers`, the
//! group (`consumerGroup`, else `consumerID`, else the app id), `clientId`, `authType`
//! (only `none` here, refused otherwise), `initialOffset` (`newest` | `oldest`, any
//! case), `maxMessageBytes` (producer), `sessionTimeout` (10s) and `heartbeatInterval`
//! (3s), a bare number being seconds. Publish: `partitionKey` (or `__key`) is the record
//! key, `partitionNumber` the partition, every metadata entry a record header, keys
//! spread as Sarama's hash partitioner (FNV-1a). Subscribe: one consumer in the group
//! per topic; a message whose handler fails is retried in place by the `backOff*`
//! policy (dapr/kit retry: constant 5 s by default, no limit; the partition waits), and
//! once retries are exhausted it is left unmarked and the next message handled, as
//! contrib's consumer; offsets are stored only for handled messages. Deliveries carry
//! `__key`, `__offset`, `__topic`, `__timestamp` (Unix ms) and `__partition`, then the
//! record headers; a tombstone's data is `null`.

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
    backoff: BackOff,
    session_timeout: Duration,
    heartbeat: Duration,
    known_topics: Mutex<std::collections::HashSet<String>>,
    stop: watch::Sender<bool>,
}

impl KafkaPubSub {
    /// Reads the component's metadata and creates its clients; `consumer_id` is the default consumer group.
    pub fn new(c: &Component, consumer_id: &str) -> anyhow::Result<Self> {
        let meta = |k: &str| c.meta(k).filter(|v| !v.is_empty());
        let brokers = meta("brokers").with_context(|| {
            format!("{}: component {}: kafka error: missing 'brokers' attribute (host:port, comma separated)", c.file.display(), c.name)
        })?;
        let security = security(c).map_err(|e| anyhow::anyhow!("{}: component {}: {e}", c.file.display(), c.name))?;
        let initial_offset = match meta("initialOffset").unwrap_or("newest").to_ascii_lowercase().as_str() {
            "newest" => "latest",
            "oldest" => "earliest",
            _ => bail!("component {}: kafka error: invalid initialOffset: {}", c.name, meta("initialOffset").unwrap_or_default()),
        };
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", brokers);
        for (k, v) in security {
            base.set(k, v);
        }
        base.set("client.id", meta("clientId").unwrap_or("sarama"));
        let mut producer_cfg = base.clone();
        // Sent at once, as Dapr's synchronous producer does (librdkafka would linger 5 ms);
        // keys land on the partitions Sarama's hash partitioner picks (FNV-1a 32).
        producer_cfg.set("message.timeout.ms", "10000").set("linger.ms", "0").set("partitioner", "fnv1a_random");
        if let Some(max) = meta("maxMessageBytes") {
            let n: usize = max.parse().with_context(|| format!("component {}: maxMessageBytes {max:?} is not a number", c.name))?;
            producer_cfg.set("message.max.bytes", n.clamp(1000, 1_000_000_000).to_string());
        }
        let producer: FutureProducer = producer_cfg.create().context("creating the Kafka producer")?;
        let admin: AdminClient<DefaultClientContext> = base.create().context("creating the Kafka admin client")?;
        let backoff = BackOff::from_component(c)?;
        // contrib's DecodeMetadata durations: a bare number is seconds.
        let secs = |k: &str, default: Duration| -> anyhow::Result<Duration> {
            match meta(k) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) => Ok(Duration::from_secs(n)),
                    Err(_) => parse_go_duration(v).map_err(|e| anyhow::anyhow!("component {}: {k}: {e}", c.name)),
                },
            }
        };
        // How long a dead consumer keeps its partitions (Dapr's default: 10s).
        let session_timeout = secs("sessionTimeout", Duration::from_secs(10))?;
        let heartbeat = secs("heartbeatInterval", Duration::from_secs(3))?;
        // daprd fills consumerID with the app id when the component sets none.
        let group = meta("consumerGroup")
            .or(meta("consumerID").map(str::trim).filter(|v| !v.is_empty()))
            .map(|g| super::expand_placeholders(g, consumer_id))
            .unwrap_or_else(|| consumer_id.to_string());
        let (stop, _) = watch::channel(false);
        Ok(Self {
            session_timeout,
            heartbeat,
            base,
            producer,
            admin,
            group,
            initial_offset,
            backoff,
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

/// The delivery metadata contrib's GetEventMetadata gives, in its order: `__key` (when
/// there is a key), `__offset`, `__topic`, `__timestamp` (Unix ms), `__partition`, then
/// the record headers (which may override them).
fn metadata_of(m: &rdkafka::message::BorrowedMessage<'_>) -> BTreeMap<String, String> {
    let mut md = BTreeMap::new();
    if let Some(k) = m.key() {
        md.insert("__key".into(), String::from_utf8_lossy(k).into_owned());
    }
    md.insert("__offset".into(), m.offset().to_string());
    md.insert("__topic".into(), m.topic().to_string());
    // Sarama's zero time when the record has none.
    md.insert("__timestamp".into(), m.timestamp().to_millis().unwrap_or(-62_135_596_800_000).to_string());
    md.insert("__partition".into(), m.partition().to_string());
    if let Some(h) = m.headers() {
        for Header { key, value } in h.iter() {
            md.insert(key.to_string(), String::from_utf8_lossy(value.unwrap_or_default()).into_owned());
        }
    }
    md
}

/// The librdkafka security settings for contrib's `authType` and TLS metadata
/// (common/component/kafka/metadata.go and auth.go): `password` is SASL (PLAIN, or SCRAM
/// with `saslMechanism` SHA-256 / SHA-512), `mtls` a client certificate, `certificate` a
/// CA only; TLS is on unless `disableTls` or `authType` is exactly `none`; `caCert`
/// replaces the trust store; `skipVerify` checks neither chain nor host.
fn security(c: &Component) -> Result<Vec<(&'static str, String)>, String> {
    let meta = |k: &str| c.meta(k).filter(|v| !v.is_empty());
    let truthy = |k: &str| meta(k).is_some_and(crate::is_truthy);
    let pem = |k: &str, what: &str, err: &str| -> Result<Option<String>, String> {
        match meta(k) {
            Some(v) if !v.contains(&format!("-----BEGIN {what}")) => Err(err.to_string()),
            v => Ok(v.map(str::to_owned)),
        }
    };
    let ca = pem("caCert", "CERTIFICATE", "kafka error: invalid ca certificate")?;
    let Some(auth_type) = meta("authType") else {
        return Err("kafka error: 'authType' attribute was missing or empty; use none, password, mtls or certificate".into());
    };
    let lower = auth_type.to_ascii_lowercase();
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut client_pair = None;
    match lower.as_str() {
        "none" => {}
        "password" => {
            let user = meta("saslUsername").ok_or("kafka error: missing SASL Username for authType 'password'")?;
            let password = meta("saslPassword").ok_or("kafka error: missing SASL Password for authType 'password'")?;
            // Compared exactly, as contrib: anything but SHA-256/SHA-512 is PLAIN.
            let mechanism = match meta("saslMechanism") {
                Some("SHA-256") => "SCRAM-SHA-256",
                Some("SHA-512") => "SCRAM-SHA-512",
                _ => "PLAIN",
            };
            out.extend([
                ("sasl.mechanisms", mechanism.to_string()),
                ("sasl.username", user.to_string()),
                ("sasl.password", password.to_string()),
            ]);
        }
        "mtls" => {
            let cert = pem("clientCert", "CERTIFICATE", "kafka error: invalid client certificate")?;
            let key = pem("clientKey", "", "kafka error: invalid client key")?;
            match (cert, key) {
                (Some(cert), Some(key)) => client_pair = Some((cert, key)),
                (None, None) => {}
                _ => return Err("kafka error: clientKey or clientCert is missing".into()),
            }
            if truthy("disableTls") {
                return Err("kafka: cannot configure mTLS authentication when TLSDisable is 'true'".into());
            }
        }
        "certificate" => {
            if ca.is_none() {
                return Err("kafka error: missing CA certificate property 'caCert' for authType 'certificate'".into());
            }
        }
        "oidc" | "oidc_private_key_jwt" | "awsiam" => {
            return Err(format!("authType {auth_type} is not supported by this sidecar; use none, password, mtls or certificate"));
        }
        _ => return Err("kafka error: invalid value for 'authType' attribute".into()),
    }
    // contrib compares with "none" exactly here: "None" still turns TLS on.
    let tls = !truthy("disableTls") && auth_type != "none";
    let sasl = lower == "password";
    let protocol = match (sasl, tls) {
        (true, true) => "SASL_SSL",
        (true, false) => "SASL_PLAINTEXT",
        (false, true) => "SSL",
        (false, false) => "PLAINTEXT",
    };
    out.push(("security.protocol", protocol.to_string()));
    if tls {
        if let Some(ca) = ca {
            out.push(("ssl.ca.pem", ca));
        }
        if let Some((cert, key)) = client_pair {
            out.extend([("ssl.certificate.pem", cert), ("ssl.key.pem", key)]);
        }
        if truthy("skipVerify") {
            out.extend([("enable.ssl.certificate.verification", "false".into()), ("ssl.endpoint.identification.algorithm", "none".into())]);
        }
    }
    Ok(out)
}

/// dapr/kit's retry settings read from the `backOff*` metadata (a bare number is
/// milliseconds) and `consumeRetryEnabled` (default on for pubsub.kafka).
#[derive(Debug, Clone, PartialEq)]
struct BackOff {
    enabled: bool,
    exponential: bool,
    duration: Duration,
    initial: Duration,
    randomization: f64,
    multiplier: f64,
    max_interval: Duration,
    /// Zero: no limit.
    max_elapsed: Duration,
    /// -1: no limit.
    max_retries: i64,
}

impl BackOff {
    fn from_component(c: &Component) -> anyhow::Result<Self> {
        let meta = |k: &str| c.meta(k).map(str::trim).filter(|v| !v.is_empty());
        let dur = |k: &str, default: Duration| -> anyhow::Result<Duration> {
            match meta(k) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(ms) => Ok(Duration::from_millis(ms)),
                    Err(_) => parse_go_duration(v).map_err(|e| anyhow::anyhow!("component {}: {k}: {e}", c.name)),
                },
            }
        };
        let float = |k: &str, default: f64| -> anyhow::Result<f64> {
            meta(k).map_or(Ok(default), |v| v.parse().with_context(|| format!("component {}: {k} {v:?} is not a number", c.name)))
        };
        let exponential = match meta("backOffPolicy").map(str::to_ascii_lowercase).as_deref() {
            None | Some("constant") => false,
            Some("exponential") => true,
            Some(other) => bail!("component {}: invalid PolicyType {other:?}: unexpected back off policy type: {other}", c.name),
        };
        Ok(Self {
            enabled: meta("consumeRetryEnabled").is_none_or(crate::is_truthy),
            exponential,
            duration: dur("backOffDuration", Duration::from_secs(5))?,
            initial: dur("backOffInitialInterval", Duration::from_millis(500))?,
            randomization: float("backOffRandomizationFactor", 0.5)?,
            multiplier: float("backOffMultiplier", 1.5)?,
            max_interval: dur("backOffMaxInterval", Duration::from_secs(60))?,
            max_elapsed: dur("backOffMaxElapsedTime", Duration::from_secs(15 * 60))?,
            max_retries: meta("backOffMaxRetries")
                .map_or(Ok(-1), |v| v.parse().with_context(|| format!("component {}: backOffMaxRetries {v:?} is not a number", c.name)))?,
        })
    }

    /// The wait before retry `n` (0-based), or `None` when retrying is over.
    fn next(&self, n: u32, elapsed: Duration) -> Option<Duration> {
        if !self.enabled || (self.max_retries >= 0 && i64::from(n) >= self.max_retries) {
            return None;
        }
        if !self.exponential {
            return Some(self.duration);
        }
        let base = (self.initial.as_secs_f64() * self.multiplier.powi(n.min(1000) as i32)).min(self.max_interval.as_secs_f64());
        let jitter =
            1.0 - self.randomization + 2.0 * self.randomization * (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64;
        // The factors come from YAML: a wait too large for a Duration is the longest one.
        let wait = Duration::try_from_secs_f64((base * jitter).max(0.0)).unwrap_or(Duration::MAX);
        (self.max_elapsed.is_zero() || elapsed.checked_add(wait).is_some_and(|t| t <= self.max_elapsed)).then_some(wait)
    }
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
        let partition = match msg.metadata.get("partitionNumber") {
            None => None,
            Some(v) => match v.parse::<i32>() {
                Ok(n) if n >= 0 => Some(n),
                Ok(n) => return Err(PubSubError(format!("partitionNumber must be non-negative, got {n}"))),
                Err(_) => {
                    return Err(PubSubError(format!(
                        "invalid partitionNumber metadata value {v:?}: strconv.ParseInt: parsing {v:?}: invalid syntax"
                    )));
                }
            },
        };
        let mut record = FutureRecord::to(&msg.topic).headers(headers);
        // Data that is exactly `null` is published as a tombstone.
        if msg.data.as_ref() != b"null" {
            record = record.payload(msg.data.as_ref());
        }
        if let Some(k) = &key {
            record = record.key(k.as_str());
        }
        if let Some(p) = partition {
            record = record.partition(p);
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
        let (mut stop, backoff, topic) = (self.stop.subscribe(), self.backoff.clone(), topic.to_string());
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
                    // A tombstone is delivered as `null` (contrib's DeserializeValue).
                    data: m.payload().map_or_else(|| bytes::Bytes::from_static(b"null"), bytes::Bytes::copy_from_slice),
                    metadata: metadata_of(&m),
                };
                // Retried in place by the back-off (the partition waits); when it gives up,
                // the message stays unmarked and the next one is handled, as contrib's.
                let started = tokio::time::Instant::now();
                let mut attempt = 0;
                let handled = loop {
                    match handler(msg.clone()).await {
                        Ok(()) => break true,
                        Err(e) => match backoff.next(attempt, started.elapsed()) {
                            Some(wait) => {
                                tracing::warn!(topic = %topic, offset = m.offset(), "kafka: message not processed, retrying in {wait:?}: {e:#}");
                                tokio::select! { _ = tokio::time::sleep(wait) => {}, _ = stop.changed() => return }
                                attempt += 1;
                            }
                            None => {
                                tracing::error!(
                                    "Too many failed attempts at processing Kafka message: {}/{}/{}. Error: {e:#}",
                                    m.topic(),
                                    m.partition(),
                                    m.offset()
                                );
                                break false;
                            }
                        },
                    }
                };
                if handled && let Err(e) = consumer.store_offset_from_message(&m) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(pairs: &[(&str, &str)]) -> anyhow::Result<BackOff> {
        let mut c = Component::new("kafka", "pubsub.kafka");
        for (k, v) in pairs {
            c.metadata.insert(k.to_string(), v.to_string());
        }
        BackOff::from_component(&c)
    }

    #[test]
    fn backoff_reads_dapr_kit_settings() {
        // Defaults: constant 5 s, no limit.
        let b = backoff(&[]).unwrap();
        assert_eq!(b.next(1_000, Duration::from_secs(3600)), Some(Duration::from_secs(5)));
        // A bare number is milliseconds; maxRetries 2 allows two retries.
        let b = backoff(&[("backOffDuration", "250"), ("backOffMaxRetries", "2")]).unwrap();
        assert_eq!(b.next(0, Duration::ZERO), Some(Duration::from_millis(250)));
        assert_eq!(b.next(2, Duration::ZERO), None);
        // Exponential: 500 ms × 1.5ⁿ ± 50 %, capped, and over once maxElapsedTime would pass.
        let b = backoff(&[("backOffPolicy", "Exponential"), ("backOffMaxInterval", "1s"), ("backOffMaxElapsedTime", "10s")]).unwrap();
        for _ in 0..100 {
            let w = b.next(0, Duration::ZERO).unwrap().as_secs_f64();
            assert!((0.25..=0.75).contains(&w), "{w}");
            let w = b.next(20, Duration::ZERO).unwrap().as_secs_f64();
            assert!((0.5..=1.5).contains(&w), "{w}");
        }
        assert_eq!(b.next(0, Duration::from_secs(10)), None);
        // consumeRetryEnabled false: a single attempt.
        assert_eq!(backoff(&[("consumeRetryEnabled", "false")]).unwrap().next(0, Duration::ZERO), None);
        assert!(backoff(&[("backOffPolicy", "linear")]).is_err());
        // Hostile factors neither panic nor overflow.
        let b =
            backoff(&[("backOffPolicy", "exponential"), ("backOffRandomizationFactor", "1e300"), ("backOffMaxElapsedTime", "0")]).unwrap();
        for n in 0..50 {
            let _ = b.next(n, Duration::from_secs(1));
        }
        let b =
            backoff(&[("backOffPolicy", "exponential"), ("backOffMultiplier", "NaN"), ("backOffRandomizationFactor", "-1e300")]).unwrap();
        let _ = b.next(3, Duration::ZERO);
    }

    fn sec(pairs: &[(&str, &str)]) -> Result<BTreeMap<&'static str, String>, String> {
        let mut c = Component::new("kafka", "pubsub.kafka");
        for (k, v) in pairs {
            c.metadata.insert(k.to_string(), v.to_string());
        }
        security(&c).map(|v| v.into_iter().collect())
    }

    #[test]
    fn auth_types_map_to_librdkafka_as_contrib_configures_sarama() {
        assert_eq!(sec(&[("authType", "none")]).unwrap()["security.protocol"], "PLAINTEXT");
        let p = sec(&[("authType", "password"), ("saslUsername", "u"), ("saslPassword", "p"), ("saslMechanism", "SHA-512")]).unwrap();
        assert_eq!((p["security.protocol"].as_str(), p["sasl.mechanisms"].as_str()), ("SASL_SSL", "SCRAM-SHA-512"));
        let p = sec(&[
            ("authType", "password"),
            ("saslUsername", "u"),
            ("saslPassword", "p"),
            ("saslMechanism", "sha-256"),
            ("disableTls", "true"),
        ])
        .unwrap();
        assert_eq!(
            (p["security.protocol"].as_str(), p["sasl.mechanisms"].as_str()),
            ("SASL_PLAINTEXT", "PLAIN"),
            "mechanisms compare exactly"
        );
        assert_eq!(sec(&[("authType", "None")]).unwrap()["security.protocol"], "SSL", "contrib's exact-case none check");
        let ca = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let p = sec(&[("authType", "certificate"), ("caCert", ca), ("skipVerify", "true")]).unwrap();
        assert_eq!((p["ssl.ca.pem"].as_str(), p["enable.ssl.certificate.verification"].as_str()), (ca, "false"));
        let errs = [
            (&[][..], "'authType' attribute was missing"),
            (&[("authType", "password"), ("saslPassword", "p")][..], "missing SASL Username"),
            (&[("authType", "certificate")][..], "missing CA certificate property 'caCert'"),
            (&[("authType", "mtls"), ("clientCert", ca)][..], "clientKey or clientCert is missing"),
            (&[("authType", "none"), ("caCert", "junk")][..], "invalid ca certificate"),
            (&[("authType", "kerberos")][..], "invalid value for 'authType'"),
            (&[("authType", "awsiam")][..], "not supported by this sidecar"),
        ];
        for (pairs, want) in errs {
            let e = sec(pairs).unwrap_err();
            assert!(e.contains(want), "{pairs:?}: {e}");
        }
    }
}
