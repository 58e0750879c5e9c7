//! `pubsub.redis` as components-contrib implements it, on Redis Streams: publish is
//! `XADD <topic> [MAXLEN ~ maxLenApprox] * data <envelope> metadata <json>`; a
//! subscription is the consumer group `consumerID` (default the app id), read with
//! `XREADGROUP ... COUNT queueDepth`, handled by up to `concurrency` workers; a message
//! is acked after its handler returns (success or error, as Dapr 1.17+) unless it
//! failed after `processingTimeout`; every `redeliverInterval` pending entries idle
//! longer than `processingTimeout` are claimed and handled again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::AsyncCommands;
use redis::streams::{StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use tokio::sync::{Semaphore, watch};

use super::{Handler, Message, PubSub, PubSubError};
use crate::redis_conn::RedisSettings;
use crate::{Component, parse_go_duration};

/// The `pubsub.redis` component, on Redis Streams.
pub struct RedisPubSub {
    settings: RedisSettings,
    conn: redis::aio::ConnectionManager,
    consumer_id: String,
    processing_timeout: Duration,
    redeliver_interval: Duration,
    queue_depth: usize,
    concurrency: usize,
    max_len_approx: Option<u64>,
    stop: watch::Sender<bool>,
}

impl RedisPubSub {
    /// Reads the component's metadata and connects; `app_id` is the default consumer group.
    pub async fn new(c: &Component, app_id: &str) -> anyhow::Result<Self> {
        let settings = RedisSettings::from_component(c)?;
        // contrib reads a bare number here as milliseconds (a legacy of these two keys).
        let dur = |k: &str, default: Duration| -> anyhow::Result<Duration> {
            match c.meta(k).map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(ms) => Ok(Duration::from_millis(ms)),
                    Err(_) => parse_go_duration(v).map_err(|e| anyhow::anyhow!("component {}: {k}: {e}", c.name)),
                },
            }
        };
        let num = |k: &str, default: usize| -> anyhow::Result<usize> {
            match c.meta(k).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => v.parse().with_context(|| format!("component {}: {k} {v:?} is not a whole number", c.name)),
            }
        };
        let consumer_id = match c.meta("consumerID").filter(|v| !v.is_empty()) {
            Some(v) => super::expand_placeholders(v, app_id),
            None => app_id.to_string(),
        };
        let max_len_approx = num("maxLenApprox", 0)? as u64;
        let conn = settings
            .manager()
            .await
            .with_context(|| format!("component {}: connecting to Redis at {}:{}", c.name, settings.host, settings.port))?;
        let (stop, _) = watch::channel(false);
        Ok(Self {
            settings,
            conn,
            consumer_id,
            processing_timeout: dur("processingTimeout", Duration::from_secs(60))?,
            redeliver_interval: dur("redeliverInterval", Duration::from_secs(15))?,
            queue_depth: num("queueDepth", 100)?.max(1),
            concurrency: num("concurrency", 10)?.max(1),
            max_len_approx: (max_len_approx > 0).then_some(max_len_approx),
            stop,
        })
    }

    async fn create_group(&self, stream: &str) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<()> =
            redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(&self.consumer_id).arg("0").arg("MKSTREAM").query_async(&mut conn).await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Everything a subscription's loops share.
struct Worker {
    stream: String,
    group: String,
    conn: redis::aio::ConnectionManager,
    handler: Handler,
    permits: Arc<Semaphore>,
    processing_timeout: Duration,
    /// Whether pending entries are reclaimed (processingTimeout and redeliverInterval set).
    reclaims: bool,
}

impl Worker {
    fn message(&self, entry: &StreamId) -> Message {
        let data = match entry.map.get("data") {
            Some(redis::Value::BulkString(b)) => bytes::Bytes::from(b.clone()),
            Some(redis::Value::SimpleString(s)) => bytes::Bytes::from(s.clone()),
            _ => bytes::Bytes::new(),
        };
        let metadata: BTreeMap<String, String> = match entry.map.get("metadata") {
            Some(redis::Value::BulkString(b)) => serde_json::from_slice(b).unwrap_or_else(|e| {
                tracing::warn!(id = %entry.id, "could not read the metadata of a Redis message: {e}");
                BTreeMap::new()
            }),
            _ => BTreeMap::new(),
        };
        Message { topic: self.stream.clone(), data, metadata }
    }

    /// Handles one entry on a worker permit, then acks it (unless it timed out).
    async fn dispatch(self: &Arc<Self>, entry: StreamId) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else { return };
        let me = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let msg = me.message(&entry);
            // As contrib's processMessage with daprd's handler (which delivers on its own
            // context): the handler is never cut off; a success is acked however long it
            // took, a failure is acked unless it came after processingTimeout, when the
            // entry stays pending for the reclaim loop.
            let started = std::time::Instant::now();
            if let Err(e) = (me.handler)(msg).await {
                tracing::error!(stream = %me.stream, id = %entry.id, "error processing Redis message: {e:#}");
                if me.reclaims && started.elapsed() >= me.processing_timeout {
                    tracing::warn!(stream = %me.stream, id = %entry.id, "the failure came after processingTimeout; the message stays pending for redelivery");
                    return;
                }
            }
            let mut conn = me.conn.clone();
            let acked: redis::RedisResult<i64> = conn.xack(&me.stream, &me.group, &[&entry.id]).await;
            if let Err(e) = acked {
                tracing::error!(stream = %me.stream, id = %entry.id, "error acknowledging Redis message: {e}");
            }
        });
    }
}

#[async_trait::async_trait]
impl PubSub for RedisPubSub {
    async fn publish(&self, msg: Message) -> Result<(), PubSubError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&msg.topic);
        if let Some(n) = self.max_len_approx {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*")
            .arg("data")
            .arg(msg.data.as_ref())
            .arg("metadata")
            .arg(serde_json::to_vec(&msg.metadata).map_err(|e| PubSubError(format!("encoding the metadata: {e}")))?);
        let _: String = cmd.query_async(&mut conn).await.map_err(|e| PubSubError(format!("redis streams: error from publish: {e}")))?;
        Ok(())
    }

    async fn subscribe(&self, topic: &str, handler: Handler) -> Result<(), PubSubError> {
        self.create_group(topic)
            .await
            .map_err(|e| PubSubError(format!("creating consumer group {} on stream {topic}: {e:#}", self.consumer_id)))?;
        let worker = Arc::new(Worker {
            stream: topic.to_string(),
            group: self.consumer_id.clone(),
            conn: self.conn.clone(),
            handler,
            permits: Arc::new(Semaphore::new(self.concurrency)),
            processing_timeout: self.processing_timeout,
            reclaims: !self.processing_timeout.is_zero() && !self.redeliver_interval.is_zero(),
        });
        // New messages.
        let (w, settings, depth, mut stop) = (worker.clone(), self.settings.clone(), self.queue_depth, self.stop.subscribe());
        tokio::spawn(async move {
            let mut conn = None;
            loop {
                if *stop.borrow() {
                    return;
                }
                if conn.is_none() {
                    match settings.blocking_connection().await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            tracing::error!(stream = %w.stream, "redis streams: cannot connect: {e:#}");
                            tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => {}, _ = stop.changed() => return }
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let mut read_cmd = redis::cmd("XREADGROUP");
                read_cmd
                    .arg("GROUP")
                    .arg(&w.group)
                    .arg(&w.group)
                    .arg("COUNT")
                    .arg(depth)
                    .arg("BLOCK")
                    .arg(2000)
                    .arg("STREAMS")
                    .arg(&w.stream)
                    .arg(">");
                let read = read_cmd.query_async::<Option<StreamReadReply>>(c);
                let reply = tokio::select! { r = read => r, _ = stop.changed() => return };
                match reply {
                    Ok(Some(reply)) => {
                        for key in reply.keys {
                            for entry in key.ids {
                                w.dispatch(entry).await;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if e.code() == Some("NOGROUP") {
                            tracing::warn!(stream = %w.stream, "redis streams: consumer group {} is gone; recreating it", w.group);
                            let mut m = w.conn.clone();
                            let _: redis::RedisResult<()> = redis::cmd("XGROUP")
                                .arg("CREATE")
                                .arg(&w.stream)
                                .arg(&w.group)
                                .arg("0")
                                .arg("MKSTREAM")
                                .query_async(&mut m)
                                .await;
                        } else {
                            tracing::error!(stream = %w.stream, "redis streams: error reading from stream: {e}");
                            conn = None;
                        }
                        tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => {}, _ = stop.changed() => return }
                    }
                }
            }
        });
        // Pending entries whose consumer died or stalled.
        let (w, every, depth, min_idle, mut stop) =
            (worker, self.redeliver_interval, self.queue_depth, self.processing_timeout, self.stop.subscribe());
        if !every.is_zero() && !min_idle.is_zero() {
            tokio::spawn(async move {
                loop {
                    reclaim(&w, depth, min_idle).await;
                    tokio::select! { _ = tokio::time::sleep(every) => {}, _ = stop.changed() => return }
                }
            });
        }
        Ok(())
    }

    async fn close(&self) {
        let _ = self.stop.send(true);
    }
}

async fn reclaim(w: &Arc<Worker>, depth: usize, min_idle: Duration) {
    let mut conn = w.conn.clone();
    let pending: redis::RedisResult<StreamPendingCountReply> = conn.xpending_count(&w.stream, &w.group, "-", "+", depth).await;
    let pending = match pending {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(stream = %w.stream, "error retrieving pending Redis messages: {e}");
            return;
        }
    };
    let idle: Vec<String> = pending.ids.into_iter().filter(|p| p.last_delivered_ms as u128 >= min_idle.as_millis()).map(|p| p.id).collect();
    if idle.is_empty() {
        return;
    }
    let claimed: redis::RedisResult<StreamClaimReply> =
        conn.xclaim(&w.stream, &w.group, &w.group, min_idle.as_millis() as u64, &idle).await;
    let claimed = match claimed {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(stream = %w.stream, "error claiming pending Redis messages: {e}");
            return;
        }
    };
    let got: std::collections::HashSet<String> = claimed.ids.iter().map(|e| e.id.clone()).collect();
    // Entries trimmed from the stream cannot be claimed: ack them so they stop pending.
    let gone: Vec<&String> = idle.iter().filter(|id| !got.contains(*id)).collect();
    if !gone.is_empty() {
        let _: redis::RedisResult<i64> = conn.xack(&w.stream, &w.group, &gone).await;
    }
    for entry in claimed.ids {
        tracing::info!(stream = %w.stream, id = %entry.id, "redelivering a pending message");
        w.dispatch(entry).await;
    }
}
