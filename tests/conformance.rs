//! One conformance suite per component trait, run against every implementation, as
//! components-contrib does: the `PubSub` scenarios against pubsub.in-memory, pubsub.redis
//! (the Redis on 127.0.0.1:6379) and pubsub.kafka (a tansu broker of its own), the
//! `StateStore` scenarios against state.in-memory and state.redis. A component is done
//! when it passes here; the sidecar's API relies on nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{KafkaBroker, RedisDb};
use spindapr_dapr_components::Component;
use spindapr_dapr_components::pubsub::{self, Handler, Message, PubSub};
use spindapr_dapr_components::state::{self, Concurrency, DeleteRequest, Operation, SetRequest, StateError, StateStore};

const WAIT: Duration = Duration::from_secs(30);

fn component(name: &str, type_: &str, metadata: &[(&str, String)]) -> Component {
    let mut c = Component::new(name, type_);
    c.metadata = metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    c
}

/// What must live as long as a component under test (its database or broker).
enum Backing {
    None,
    Redis(#[allow(dead_code)] RedisDb),
    Kafka(#[allow(dead_code)] KafkaBroker),
}

async fn pubsub_for(kind: &str) -> (Arc<dyn PubSub>, Backing) {
    let (c, backing) = match kind {
        "in-memory" => (component("pubsub", "pubsub.in-memory", &[]), Backing::None),
        "redis" => {
            let db = RedisDb::new();
            let c = component("pubsub", "pubsub.redis", &[("redisHost", "127.0.0.1:6379".into()), ("redisDB", db.db.to_string())]);
            (c, Backing::Redis(db))
        }
        "kafka" => {
            let b = KafkaBroker::start();
            let c = component(
                "pubsub",
                "pubsub.kafka",
                &[("brokers", format!("127.0.0.1:{}", b.port)), ("authType", "none".into()), ("initialOffset", "oldest".into())],
            );
            (c, Backing::Kafka(b))
        }
        other => panic!("no pub/sub {other}"),
    };
    let ps = pubsub::from_component(&c, "conformance").await.unwrap_or_else(|e| panic!("{kind}: {e:#}"));
    (ps, backing)
}

async fn state_for(kind: &str) -> (Arc<dyn StateStore>, Backing) {
    let (c, backing) = match kind {
        "in-memory" => (component("store", "state.in-memory", &[]), Backing::None),
        "redis" => {
            let db = RedisDb::new();
            (
                component("store", "state.redis", &[("redisHost", "127.0.0.1:6379".into()), ("redisDB", db.db.to_string())]),
                Backing::Redis(db),
            )
        }
        other => panic!("no state store {other}"),
    };
    let s = state::from_component(&c).await.unwrap_or_else(|e| panic!("{kind}: {e:#}"));
    (s, backing)
}

/// A handler that records every message it is given.
fn recorder() -> (Handler, Arc<Mutex<Vec<Message>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let h: Handler = Arc::new(move |m| {
        let sink = sink.clone();
        Box::pin(async move {
            sink.lock().unwrap().push(m);
            Ok(())
        })
    });
    (h, got)
}

async fn wait_for(got: &Arc<Mutex<Vec<Message>>>, n: usize) -> Vec<Message> {
    let start = Instant::now();
    loop {
        let now = got.lock().unwrap().clone();
        if now.len() >= n || start.elapsed() > WAIT {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pubsub_conformance(kind: &str) {
    let (ps, _backing) = pubsub_for(kind).await;

    // Every message arrives on its topic, with its exact bytes and its metadata.
    let (h, got) = recorder();
    ps.subscribe("orders", h).await.unwrap();
    let (other, other_got) = recorder();
    ps.subscribe("audit", other).await.unwrap();
    const N: usize = 20;
    for i in 0..N {
        let metadata = BTreeMap::from([("tenant".to_string(), format!("t{i}"))]);
        let msg = Message { topic: "orders".into(), data: Bytes::from(format!(r#"{{"n":{i}}}"#)), metadata };
        ps.publish(msg).await.unwrap_or_else(|e| panic!("{kind}: publish: {e:#}"));
    }
    ps.publish(Message { topic: "audit".into(), data: Bytes::from_static(b"only audit"), metadata: BTreeMap::new() }).await.unwrap();
    let delivered = wait_for(&got, N).await;
    let bodies: BTreeSet<String> = delivered.iter().map(|m| String::from_utf8_lossy(&m.data).into_owned()).collect();
    let expected: BTreeSet<String> = (0..N).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    assert_eq!(bodies, expected, "{kind}: every message, at least once");
    for m in &delivered {
        assert_eq!(m.topic, "orders", "{kind}");
        let n: usize = serde_json::from_slice::<serde_json::Value>(&m.data).unwrap()["n"].as_u64().unwrap() as usize;
        assert_eq!(m.metadata.get("tenant"), Some(&format!("t{n}")), "{kind}: the metadata travels with its message");
    }
    // Topics do not leak into each other.
    let audit = wait_for(&other_got, 1).await;
    assert_eq!(audit.len(), 1, "{kind}");
    assert_eq!(&audit[0].data[..], b"only audit", "{kind}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(got.lock().unwrap().iter().all(|m| m.topic == "orders"), "{kind}");
    // Close while the broker still runs: consumers commit and leave their group.
    ps.close().await;
    drop(ps);
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn set(key: &str, value: &str, etag: Option<&str>, concurrency: Concurrency) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: Bytes::from(value.to_string()),
        etag: etag.map(str::to_owned),
        concurrency,
        metadata: BTreeMap::new(),
    }
}

async fn state_conformance(kind: &str) {
    let (s, _backing) = state_for(kind).await;
    let mismatch = |r: Result<(), StateError>, what: &str| {
        assert!(matches!(r, Err(StateError::EtagMismatch(_))), "{kind}: {what}: expected an ETag mismatch, got {r:?}");
    };

    // Missing keys read as nothing; a write is read back with an ETag.
    assert!(s.get("k1").await.unwrap().is_none(), "{kind}");
    s.set(set("k1", r#"{"v":1}"#, None, Concurrency::LastWrite)).await.unwrap();
    let first = s.get("k1").await.unwrap().unwrap();
    assert_eq!(&first.data[..], br#"{"v":1}"#, "{kind}");
    let etag1 = first.etag.clone().unwrap_or_else(|| panic!("{kind}: no ETag"));

    // Writes guarded by an ETag: the current one wins and changes it, a stale one loses.
    s.set(set("k1", r#"{"v":2}"#, Some(&etag1), Concurrency::FirstWrite)).await.unwrap();
    let etag2 = s.get("k1").await.unwrap().unwrap().etag.unwrap();
    assert_ne!(etag1, etag2, "{kind}: a write changes the ETag");
    mismatch(s.set(set("k1", r#"{"v":3}"#, Some(&etag1), Concurrency::FirstWrite)).await, "stale ETag");
    assert_eq!(&s.get("k1").await.unwrap().unwrap().data[..], br#"{"v":2}"#, "{kind}: the stale write changed nothing");

    // First-write without an ETag creates only. contrib's state.redis reports that refusal
    // as a plain failure (daprd: 500), not an ETag mismatch, since the write carried no ETag.
    let r = s.set(set("k1", "{}", None, Concurrency::FirstWrite)).await;
    if kind == "redis" {
        assert!(matches!(&r, Err(StateError::Other(e)) if e.contains("failed to set key")), "{kind}: {r:?}");
    } else {
        mismatch(r, "first-write over an existing key");
    }
    assert_eq!(&s.get("k1").await.unwrap().unwrap().data[..], br#"{"v":2}"#, "{kind}: the refused write changed nothing");
    s.set(set("k2", r#""new""#, None, Concurrency::FirstWrite)).await.unwrap();
    assert!(s.get("k2").await.unwrap().is_some(), "{kind}");

    // Deletes guarded by an ETag.
    let del = |key: &str, etag: Option<&str>| DeleteRequest {
        key: key.into(),
        etag: etag.map(str::to_owned),
        concurrency: Concurrency::FirstWrite,
    };
    mismatch(s.delete(del("k1", Some(&etag1))).await, "delete with a stale ETag");
    s.delete(del("k1", Some(&etag2))).await.unwrap();
    assert!(s.get("k1").await.unwrap().is_none(), "{kind}");

    // Transactions: one with a stale ETag fails. in-memory applies none of it; Redis, as
    // components-contrib's MULTI/EXEC of one script per operation, applies the operations
    // that pass (Redis has no rollback) — apps must not rely on more than one key.
    let k2 = s.get("k2").await.unwrap().unwrap().etag.unwrap();
    let stale = if kind == "redis" { "999" } else { "stale-etag" };
    let bad = vec![
        Operation::Upsert(set("t1", "1", None, Concurrency::LastWrite)),
        Operation::Upsert(set("k2", "2", Some(stale), Concurrency::FirstWrite)),
    ];
    assert!(s.multi(bad).await.is_err(), "{kind}: a transaction with a stale ETag fails");
    let atomic = kind != "redis";
    assert_eq!(s.get("t1").await.unwrap().is_none(), atomic, "{kind}: all-or-nothing is {atomic}");
    assert_eq!(&s.get("k2").await.unwrap().unwrap().data[..], br#""new""#, "{kind}: the stale write is not applied");
    let mut invalid = set("k2", "2", Some("not-a-number"), Concurrency::FirstWrite);
    invalid.value = Bytes::from_static(b"3");
    if kind == "redis" {
        // A malformed ETag is refused before anything is sent.
        assert!(matches!(s.multi(vec![Operation::Upsert(invalid)]).await, Err(StateError::InvalidEtag(_))), "{kind}");
    }
    s.delete(DeleteRequest { key: "t1".into(), etag: None, concurrency: Concurrency::LastWrite }).await.unwrap();
    let good = vec![
        Operation::Upsert(set("t1", "1", None, Concurrency::FirstWrite)),
        Operation::Upsert(set("k2", "2", Some(&k2), Concurrency::FirstWrite)),
        Operation::Delete(del("k2-absent", None)),
    ];
    s.multi(good).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
    assert_eq!(&s.get("t1").await.unwrap().unwrap().data[..], b"1", "{kind}");
    assert_eq!(&s.get("k2").await.unwrap().unwrap().data[..], b"2", "{kind}");

    // TTL: an entry written with ttlInSeconds expires.
    let mut ttl = set("short", "1", None, Concurrency::LastWrite);
    ttl.metadata.insert("ttlInSeconds".into(), "1".into());
    s.set(ttl).await.unwrap();
    assert!(s.get("short").await.unwrap().is_some(), "{kind}");
    let start = Instant::now();
    while s.get("short").await.unwrap().is_some() {
        assert!(start.elapsed() < Duration::from_secs(5), "{kind}: the entry never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_in_memory() {
    pubsub_conformance("in-memory").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_redis() {
    pubsub_conformance("redis").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_kafka() {
    pubsub_conformance("kafka").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_in_memory() {
    state_conformance("in-memory").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_redis() {
    state_conformance("redis").await;
}
