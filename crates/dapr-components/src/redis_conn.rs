//! Redis connection settings shared by `pubsub.redis` and `state.redis`, read from the
//! component metadata as components-contrib reads them (`redisHost` with the default
//! port 6379, `redisPassword`, `redisUsername`, `redisDB`, `enableTLS`), and the
//! auto-reconnecting connection both use.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::Component;

/// Where and how to connect to Redis, from a component's metadata.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The host part of `redisHost`.
    pub host: String,
    /// The port part of `redisHost` (6379 when absent).
    pub port: u16,
    /// `redisDB`: the database number (0 by default).
    pub db: i64,
    /// `redisUsername`, if set.
    pub username: Option<String>,
    /// `redisPassword`, if set.
    pub password: Option<String>,
}

impl RedisSettings {
    /// Reads and checks the connection metadata of `c`.
    pub fn from_component(c: &Component) -> anyhow::Result<Self> {
        let host = c
            .meta("redisHost")
            .filter(|h| !h.is_empty())
            .with_context(|| format!("{}: component {} needs metadata redisHost (host:port)", c.file.display(), c.name))?;
        if c.meta("enableTLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            bail!(
                "{}: component {}: enableTLS is not supported by this sidecar yet; use a plain connection locally",
                c.file.display(),
                c.name
            );
        }
        if c.meta("redisType").is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("node")) {
            bail!("{}: component {}: only redisType node is supported (no cluster or sentinel)", c.file.display(), c.name);
        }
        let (h, port) = match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(']') || h.ends_with(']') => {
                (h.to_string(), p.parse().with_context(|| format!("component {}: redisHost port {p:?} is not a number", c.name))?)
            }
            _ => (host.to_string(), 6379),
        };
        let db = match c.meta("redisDB").filter(|v| !v.is_empty()) {
            Some(v) => v.parse().with_context(|| format!("component {}: redisDB {v:?} is not a number", c.name))?,
            None => 0,
        };
        let nonempty = |k: &str| c.meta(k).filter(|v| !v.is_empty()).map(str::to_owned);
        Ok(Self { host: h, port, db, username: nonempty("redisUsername"), password: nonempty("redisPassword") })
    }

    /// A client for these settings (no connection made yet).
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        use redis::IntoConnectionInfo;
        let info = redis::ConnectionAddr::Tcp(self.host.clone(), self.port).into_connection_info()?;
        let mut r = info.redis_settings().clone().set_db(self.db);
        if let Some(u) = &self.username {
            r = r.set_username(u);
        }
        if let Some(p) = &self.password {
            r = r.set_password(p);
        }
        Ok(redis::Client::open(info.set_redis_settings(r))?)
    }

    /// A dedicated connection for blocking reads (XREADGROUP BLOCK), which would stall a
    /// shared multiplexed connection.
    pub async fn blocking_connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let cfg = redis::AsyncConnectionConfig::new().set_connection_timeout(Some(Duration::from_secs(5))).set_response_timeout(None);
        Ok(self.client()?.get_multiplexed_async_connection_with_config(&cfg).await?)
    }

    /// A connection that reconnects by itself after the server comes back.
    pub async fn manager(&self) -> anyhow::Result<redis::aio::ConnectionManager> {
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2);
        Ok(redis::aio::ConnectionManager::new_with_config(self.client()?, cfg).await?)
    }
}
