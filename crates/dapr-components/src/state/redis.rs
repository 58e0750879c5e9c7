//! `state.redis` in Dapr's layout: each key is a hash with fields `data` (the JSON value)
//! and `version` (the ETag: "1", "2", ... by HINCRBY), written by Lua scripts so the
//! version check and the write are one step. Semantics follow components-contrib: an
//! ETag must be a number (else 400), an ETag on a missing key is accepted,
//! `first-write` marks the hash, TTL via EXPIRE, and transactions are MULTI/EXEC
//! (no rollback of earlier operations, as in Dapr).

use anyhow::Context;
use redis::AsyncCommands;

use super::{Concurrency, DeleteRequest, Item, Operation, SetRequest, StateError, StateStore, ttl};
use crate::Component;
use crate::redis_conn::RedisSettings;

// ARGV[1]: the expected version ("0" when none), ARGV[2]: the data, ARGV[3]: "0" to mark
// the key first-write. A key of another type is reset; a missing or unversioned key,
// a matching version, or no expected version on a key never marked first-write may be
// written.
const SET_SCRIPT: &str = r#"
local version = redis.pcall("HGET", KEYS[1], "version")
if type(version) == "table" then
  redis.call("DEL", KEYS[1])
end
local marked = redis.pcall("HGET", KEYS[1], "first-write")
local unversioned = (not version) or type(version) == "table" or version == ""
if unversioned or version == ARGV[1] or ((not marked) and ARGV[1] == "0") then
  redis.call("HSET", KEYS[1], "data", ARGV[2])
  if ARGV[3] == "0" then
    redis.call("HSET", KEYS[1], "first-write", 0)
  end
  return redis.call("HINCRBY", KEYS[1], "version", 1)
end
return redis.error_reply("failed to set key " .. KEYS[1])
"#;

// ARGV[1]: the expected version ("0" when none).
const DEL_SCRIPT: &str = r#"
local version = redis.pcall("HGET", KEYS[1], "version")
if (not version) or type(version) == "table" or version == "" or version == ARGV[1] or ARGV[1] == "0" then
  return redis.call("DEL", KEYS[1])
end
return redis.error_reply("failed to delete " .. KEYS[1])
"#;

/// The `state.redis` component.
pub struct RedisState {
    conn: redis::aio::ConnectionManager,
    default_ttl: Option<i64>,
}

impl RedisState {
    /// Reads the component's metadata (connection, default `ttlInSeconds`) and connects.
    pub async fn new(c: &Component) -> anyhow::Result<Self> {
        let settings = RedisSettings::from_component(c)?;
        let conn = settings
            .manager()
            .await
            .with_context(|| format!("component {}: connecting to Redis at {}:{}", c.name, settings.host, settings.port))?;
        let default_ttl = match c.meta("ttlInSeconds").filter(|v| !v.is_empty()) {
            Some(v) => Some(v.parse().with_context(|| format!("component {}: ttlInSeconds {v:?} is not a number", c.name))?),
            None => None,
        };
        Ok(Self { conn, default_ttl })
    }

    /// The version argument of a write: the ETag, which must be a number, or "0" without
    /// one — or with an explicit last-write, which ignores it (contrib's parseETag).
    fn version_arg(etag: &Option<String>, concurrency: &Concurrency) -> Result<String, StateError> {
        if *concurrency == Concurrency::LastWrite {
            return Ok("0".into());
        }
        match etag.as_deref().filter(|e| !e.is_empty()) {
            Some(e) => e
                .parse::<i64>()
                .map(|n| n.to_string())
                .map_err(|err| StateError::InvalidEtag(format!("strconv.Atoi: parsing {e:?}: {err}"))),
            None => Ok("0".into()),
        }
    }

    /// The TTL in seconds: > 0 expires, ≤ 0 persists (overriding the component's).
    fn ttl_of(&self, r: &SetRequest) -> Result<Option<i64>, StateError> {
        Ok(ttl(&r.metadata)?.or(self.default_ttl))
    }
}

/// The scripts' own refusals (`redis.error_reply("failed ...")`): a version conflict.
fn is_script_error(e: &redis::RedisError) -> bool {
    e.code() == Some("failed")
}

#[async_trait::async_trait]
impl StateStore for RedisState {
    async fn get(&self, key: &str) -> Result<Option<Item>, StateError> {
        let mut conn = self.conn.clone();
        let fields: redis::RedisResult<std::collections::HashMap<String, Vec<u8>>> = conn.hgetall(key).await;
        match fields {
            Ok(f) if f.is_empty() => Ok(None),
            Ok(mut f) => {
                let (Some(data), Some(version)) = (f.remove("data"), f.remove("version")) else {
                    return Err(StateError::Other("required hash field 'data' or 'version' was not found".into()));
                };
                Ok(Some(Item { data: data.into(), etag: Some(String::from_utf8_lossy(&version).into_owned()), ..Item::default() }))
            }
            // A plain string value (written without Dapr's layout): read it without an ETag.
            Err(e) if e.code() == Some("WRONGTYPE") => {
                let v: Option<Vec<u8>> = conn.get(key).await.map_err(|e| StateError::Other(e.to_string()))?;
                Ok(v.map(|d| Item { data: d.into(), ..Item::default() }))
            }
            Err(e) => Err(StateError::Other(e.to_string())),
        }
    }

    async fn set(&self, r: SetRequest) -> Result<(), StateError> {
        let version = Self::version_arg(&r.etag, &r.concurrency)?;
        let ttl = self.ttl_of(&r)?;
        let first_write = if r.concurrency == Concurrency::FirstWrite { "0" } else { "1" };
        let mut conn = self.conn.clone();
        let res: redis::RedisResult<i64> =
            redis::Script::new(SET_SCRIPT).key(&r.key).arg(&version).arg(r.value.as_ref()).arg(first_write).invoke_async(&mut conn).await;
        match res {
            Ok(_) => {}
            // Only a write that carried an ETag is a mismatch; one without (over a key saved
            // with first-write) is a plain failure, as contrib's Set.
            Err(e) if version != "0" => {
                return Err(StateError::EtagMismatch(format!("failed to set key {}: {e}", r.key)));
            }
            Err(e) => return Err(StateError::Other(format!("failed to set key {}: {e}", r.key))),
        }
        match ttl {
            Some(t) if t > 0 => conn.expire::<_, ()>(&r.key, t).await.map_err(|e| StateError::Other(e.to_string()))?,
            Some(_) => conn.persist::<_, ()>(&r.key).await.map_err(|e| StateError::Other(e.to_string()))?,
            None => {}
        }
        Ok(())
    }

    async fn delete(&self, r: DeleteRequest) -> Result<(), StateError> {
        let version = r.etag.clone().filter(|e| !e.is_empty()).unwrap_or_else(|| "0".into());
        let mut conn = self.conn.clone();
        let res: redis::RedisResult<i64> = redis::Script::new(DEL_SCRIPT).key(&r.key).arg(&version).invoke_async(&mut conn).await;
        res.map(|_| ()).map_err(|e| {
            if is_script_error(&e) {
                StateError::EtagMismatch(format!("failed to delete {}", r.key))
            } else {
                StateError::Other(e.to_string())
            }
        })
    }

    async fn multi(&self, ops: Vec<Operation>) -> Result<(), StateError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for op in &ops {
            match op {
                Operation::Upsert(r) => {
                    let version = Self::version_arg(&r.etag, &r.concurrency)?;
                    pipe.cmd("EVAL").arg(SET_SCRIPT).arg(1).arg(&r.key).arg(&version).arg(r.value.as_ref()).arg("1");
                    match self.ttl_of(r)? {
                        Some(t) if t > 0 => {
                            pipe.cmd("EXPIRE").arg(&r.key).arg(t);
                        }
                        Some(_) => {
                            pipe.cmd("PERSIST").arg(&r.key);
                        }
                        None => {}
                    }
                }
                Operation::Delete(r) => {
                    let version = r.etag.clone().filter(|e| !e.is_empty()).unwrap_or_else(|| "0".into());
                    pipe.cmd("EVAL").arg(DEL_SCRIPT).arg(1).arg(&r.key).arg(&version);
                }
            }
        }
        let mut conn = self.conn.clone();
        // As go-redis' TxPipeline: the first failed command's error, plainly (daprd then
        // answers ERR_STATE_TRANSACTION "...: failed to set key <key>").
        let results: Vec<redis::RedisResult<redis::Value>> =
            pipe.ignore_errors().query_async(&mut conn).await.map_err(|e| StateError::Other(e.to_string()))?;
        match results.into_iter().find_map(Result::err) {
            Some(e) if is_script_error(&e) => Err(StateError::Other(format!("failed {}", e.detail().unwrap_or("to set key")))),
            Some(e) => Err(StateError::Other(e.to_string())),
            None => Ok(()),
        }
    }
}
