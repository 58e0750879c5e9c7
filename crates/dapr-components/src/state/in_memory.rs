//! `state.in-memory`: a map in the sidecar. ETags are fresh UUIDs per write; with
//! first-write a write without an ETag to an existing key is a mismatch, and an ETag on
//! a missing key is always a mismatch; TTLs expire entries, and expired entries are
//! evicted a few at a time on every write (so memory follows the live data, with no
//! sweeper task); transactions are atomic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use tokio::sync::Mutex;

use super::{Concurrency, DeleteRequest, Item, Operation, SetRequest, StateError, StateStore, ttl};

#[derive(Debug, Clone)]
struct Entry {
    data: bytes::Bytes,
    etag: String,
    expires: Option<Instant>,
    /// The same moment on the wall clock, for `ttlExpireTime`.
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The `state.in-memory` component: a map in this process.
#[derive(Default)]
pub struct InMemoryState {
    map: Mutex<Map>,
}

/// Expired entries removed per write: more than one, so eviction outpaces expiry.
const EVICT_PER_WRITE: usize = 8;

#[derive(Default)]
struct Map {
    entries: HashMap<String, Entry>,
    /// When TTL'd entries expire, soonest first (stale after an overwrite; checked).
    expiries: BinaryHeap<Reverse<(Instant, String)>>,
}

impl Map {
    fn evict_expired(&mut self) {
        let now = Instant::now();
        for _ in 0..EVICT_PER_WRITE {
            match self.expiries.peek() {
                Some(Reverse((t, _))) if *t <= now => {}
                _ => return,
            }
            if let Some(Reverse((t, key))) = self.expiries.pop()
                && self.entries.get(&key).is_some_and(|e| e.expires == Some(t))
            {
                self.entries.remove(&key);
            }
        }
    }

    /// Entries held, expired or not (for tests of eviction).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.entries.len()
    }
}

fn live<'a>(map: &'a HashMap<String, Entry>, key: &str) -> Option<&'a Entry> {
    map.get(key).filter(|e| e.expires.is_none_or(|t| t > Instant::now()))
}

fn check_etag(key: &str, current: Option<&Entry>, etag: &Option<String>, concurrency: &Concurrency) -> Result<(), StateError> {
    match (current, etag) {
        (Some(e), Some(t)) if &e.etag != t => {
            Err(StateError::EtagMismatch(format!("state etag not match for key={key}: current={}, expect={t}", e.etag)))
        }
        (None, Some(_)) => Err(StateError::EtagMismatch(format!("state not exist or expired for key={key}"))),
        (Some(_), None) if *concurrency == Concurrency::FirstWrite => {
            Err(StateError::EtagMismatch("item already exists and no etag was passed".into()))
        }
        _ => Ok(()),
    }
}

/// What an operation does to its key.
enum Change {
    Put(Entry),
    Remove,
    Nothing,
}

/// Checks `op` against its key's live entry and says what it changes.
fn change(current: Option<&Entry>, op: &Operation) -> Result<Change, StateError> {
    match op {
        Operation::Upsert(r) => {
            check_etag(&r.key, current, &r.etag, &r.concurrency)?;
            // As contrib's in-memory store, only a positive TTL expires; one too far out
            // for the clock means never (no overflow).
            let secs = ttl(&r.metadata)?.filter(|s| *s > 0);
            let expires = secs.and_then(|s| Instant::now().checked_add(std::time::Duration::from_secs(s as u64)));
            let expires_at = secs.and_then(|s| chrono::Utc::now().checked_add_signed(chrono::Duration::try_seconds(s)?));
            Ok(Change::Put(Entry { data: r.value.clone(), etag: uuid::Uuid::new_v4().to_string(), expires, expires_at }))
        }
        Operation::Delete(r) => {
            if current.is_none() && r.etag.is_none() {
                return Ok(Change::Nothing);
            }
            check_etag(&r.key, current, &r.etag, &r.concurrency)?;
            Ok(Change::Remove)
        }
    }
}

fn key_of(op: &Operation) -> &str {
    match op {
        Operation::Upsert(r) => &r.key,
        Operation::Delete(r) => &r.key,
    }
}

fn commit(map: &mut Map, key: String, change: Change) {
    match change {
        Change::Put(e) => {
            if let Some(t) = e.expires {
                map.expiries.push(Reverse((t, key.clone())));
            }
            map.entries.insert(key, e);
        }
        Change::Remove => {
            map.entries.remove(&key);
        }
        Change::Nothing => {}
    }
}

fn apply(map: &mut Map, op: &Operation) -> Result<(), StateError> {
    map.evict_expired();
    let c = change(live(&map.entries, key_of(op)), op)?;
    commit(map, key_of(op).to_string(), c);
    Ok(())
}

#[async_trait::async_trait]
impl StateStore for InMemoryState {
    async fn get(&self, key: &str) -> Result<Option<Item>, StateError> {
        let map = self.map.lock().await;
        Ok(live(&map.entries, key).map(|e| Item {
            data: e.data.clone(),
            etag: Some(e.etag.clone()),
            // contrib's in-memory Get: the expiry as RFC 3339, whole seconds, UTC.
            metadata: e
                .expires_at
                .map(|t| [("ttlExpireTime".to_string(), t.format("%Y-%m-%dT%H:%M:%SZ").to_string())].into())
                .unwrap_or_default(),
        }))
    }

    async fn set(&self, req: SetRequest) -> Result<(), StateError> {
        apply(&mut *self.map.lock().await, &Operation::Upsert(req))
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StateError> {
        apply(&mut *self.map.lock().await, &Operation::Delete(req))
    }

    async fn multi(&self, ops: Vec<Operation>) -> Result<(), StateError> {
        let mut map = self.map.lock().await;
        map.evict_expired();
        // Check every operation against the store as the earlier ones leave it (an overlay
        // of the keys this transaction touches); write only when all of them pass. The
        // cost is the transaction's size, not the store's.
        let mut overlay: HashMap<String, Option<Entry>> = HashMap::new();
        for op in &ops {
            let key = key_of(op);
            let current = match overlay.get(key) {
                Some(e) => e.as_ref(),
                None => live(&map.entries, key),
            };
            let after = match change(current, op)? {
                Change::Put(e) => Some(e),
                Change::Remove => None,
                Change::Nothing => current.cloned(),
            };
            overlay.insert(key.to_string(), after);
        }
        for (key, after) in overlay {
            commit(&mut map, key, after.map_or(Change::Remove, Change::Put));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, v: &str, etag: Option<&str>, c: Concurrency) -> SetRequest {
        SetRequest {
            key: key.into(),
            value: v.to_string().into(),
            etag: etag.map(str::to_owned),
            concurrency: c,
            metadata: Default::default(),
        }
    }

    #[tokio::test]
    async fn etags_and_concurrency() {
        let s = InMemoryState::default();
        s.set(set("k", "1", None, Concurrency::LastWrite)).await.unwrap();
        let e1 = s.get("k").await.unwrap().unwrap().etag.unwrap();
        assert!(matches!(s.set(set("k", "2", Some("wrong"), Concurrency::LastWrite)).await, Err(StateError::EtagMismatch(_))));
        assert!(matches!(s.set(set("k", "2", None, Concurrency::FirstWrite)).await, Err(StateError::EtagMismatch(_))));
        s.set(set("k", "2", Some(&e1), Concurrency::FirstWrite)).await.unwrap();
        assert!(matches!(s.set(set("k", "3", Some(&e1), Concurrency::LastWrite)).await, Err(StateError::EtagMismatch(_))));
        assert!(matches!(s.set(set("missing", "3", Some("x"), Concurrency::LastWrite)).await, Err(StateError::EtagMismatch(_))));
        assert_eq!(s.get("k").await.unwrap().unwrap().data, "2");
        s.delete(DeleteRequest { key: "absent".into(), etag: None, concurrency: Concurrency::LastWrite }).await.unwrap();
    }

    #[tokio::test]
    async fn transactions_are_atomic() {
        let s = InMemoryState::default();
        s.set(set("a", "1", None, Concurrency::LastWrite)).await.unwrap();
        let r = s
            .multi(vec![
                Operation::Upsert(set("b", "2", None, Concurrency::LastWrite)),
                Operation::Upsert(set("a", "x", Some("bad"), Concurrency::LastWrite)),
            ])
            .await;
        assert!(r.is_err());
        assert!(s.get("b").await.unwrap().is_none(), "a failed transaction must leave nothing behind");
        s.multi(vec![
            Operation::Upsert(set("b", "2", None, Concurrency::LastWrite)),
            Operation::Delete(DeleteRequest { key: "a".into(), etag: None, concurrency: Concurrency::LastWrite }),
        ])
        .await
        .unwrap();
        assert!(s.get("a").await.unwrap().is_none());
        assert_eq!(s.get("b").await.unwrap().unwrap().data, "2");
    }

    fn with_ttl(key: &str, v: &str, secs: &str) -> SetRequest {
        let mut r = set(key, v, None, Concurrency::LastWrite);
        r.metadata.insert("ttlInSeconds".into(), secs.into());
        r
    }

    /// As contrib's in-memory store (`doSet`: only `ttlInSeconds > 0` sets an expiry),
    /// then expiry and eviction of what expired. One test: it waits a real second.
    #[tokio::test]
    async fn ttls_expire_and_expired_entries_are_evicted() {
        let s = InMemoryState::default();
        // 0, negative and unreachable TTLs never expire (no overflow either).
        s.set(with_ttl("zero", "v", "0")).await.unwrap();
        s.set(with_ttl("negative", "v", "-5")).await.unwrap();
        s.set(with_ttl("far", "v", &i64::MAX.to_string())).await.unwrap();
        for i in 0..1000 {
            s.set(with_ttl(&format!("t{i}"), "v", "1")).await.unwrap();
        }
        // Overwritten without a TTL: its stale expiry must not evict it.
        s.set(set("t5", "kept", None, Concurrency::LastWrite)).await.unwrap();
        assert!(s.get("t7").await.unwrap().is_some());
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert!(s.get("t7").await.unwrap().is_none());
        for i in 0..200 {
            s.set(set(&format!("live{i}"), "v", None, Concurrency::LastWrite)).await.unwrap();
        }
        // 200 writes evict up to 8 each: all 999 expired entries are gone.
        assert_eq!(s.map.lock().await.held(), 204);
        assert_eq!(s.get("t5").await.unwrap().unwrap().data, "kept");
        for k in ["zero", "negative", "far"] {
            assert!(s.get(k).await.unwrap().is_some(), "{k}");
        }
    }
}
