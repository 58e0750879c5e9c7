//! Redis connection settings shared by `pubsub.redis` and `state.redis`, read from the
//! component metadata as components-contrib's settings.go reads them (`redisHost`, with
//! `redisPort` or 6379 when it has no port, `redisPassword`, `redisUsername`,
//! `redisDB`, `enableTLS` with `insecureSkipTLSVerify` and an optional `clientCert` /
//! `clientKey` pair; booleans as Go's strconv.ParseBool), and the auto-reconnecting
//! connection both use. Cluster (`redisType: cluster`) and sentinel (`failover`) are
//! refused with a clear error.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::Component;

/// Where and how to connect to Redis, from a component's metadata.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The host part of `redisHost`.
    pub host: String,
    /// The port part of `redisHost` (else `redisPort`, else 6379).
    pub port: u16,
    /// `redisDB`: the database number (0 by default).
    pub db: i64,
    /// `redisUsername`, if set.
    pub username: Option<String>,
    /// `redisPassword`, if set.
    pub password: Option<String>,
    /// `enableTLS`: connect over TLS (the system's roots).
    pub tls: bool,
    /// `insecureSkipTLSVerify`: no certificate verification.
    pub insecure: bool,
    /// `clientCert` and `clientKey` (PEM), used when both are set.
    pub client_cert: Option<(String, String)>,
}

/// Go's strconv.ParseBool, which contrib's settings decoder uses (junk is an error).
fn parse_bool(c: &Component, key: &str) -> anyhow::Result<bool> {
    match c.meta(key).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(false),
        Some(v) => crate::parse_go_bool(v).with_context(|| {
            format!("{}: component {}: redis client configuration error: {key}: invalid bool {v:?}", c.file.display(), c.name)
        }),
    }
}

impl RedisSettings {
    /// Reads and checks the connection metadata of `c`.
    pub fn from_component(c: &Component) -> anyhow::Result<Self> {
        let host = c
            .meta("redisHost")
            .filter(|h| !h.is_empty())
            .with_context(|| format!("{}: component {} needs metadata redisHost (host:port)", c.file.display(), c.name))?;
        // contrib acts on the exact "cluster" only; any other redisType is one node.
        if c.meta("redisType") == Some("cluster") {
            bail!("{}: component {}: redisType cluster is not supported by this sidecar; use one node", c.file.display(), c.name);
        }
        if parse_bool(c, "failover")? {
            bail!("{}: component {}: failover (Redis Sentinel) is not supported by this sidecar; use one node", c.file.display(), c.name);
        }
        let redis_port = match c.meta("redisPort").map(str::trim).filter(|v| !v.is_empty()) {
            Some(p) => Some(p.parse::<u16>().with_context(|| format!("component {}: redisPort {p:?} is not a port number", c.name))?),
            None => None,
        };
        let (h, port) = match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(']') || h.ends_with(']') => {
                let port: u16 = p.parse().with_context(|| format!("component {}: redisHost port {p:?} is not a number", c.name))?;
                if let Some(rp) = redis_port.filter(|rp| *rp != port) {
                    bail!(
                        "{}: component {}: redis host {host:?} already contains port {port}, but redisPort is set to {rp}; set only one",
                        c.file.display(),
                        c.name
                    );
                }
                (h.to_string(), port)
            }
            _ => (host.to_string(), redis_port.unwrap_or(6379)),
        };
        let db = match c.meta("redisDB").filter(|v| !v.is_empty()) {
            Some(v) => v.parse().with_context(|| format!("component {}: redisDB {v:?} is not a number", c.name))?,
            None => 0,
        };
        let nonempty = |k: &str| c.meta(k).filter(|v| !v.is_empty()).map(str::to_owned);
        let tls = parse_bool(c, "enableTLS")?;
        let client_cert = match (nonempty("clientCert"), nonempty("clientKey")) {
            (Some(cert), Some(key)) if tls => Some((cert, key)),
            _ => None,
        };
        Ok(Self {
            host: h,
            port,
            db,
            username: nonempty("redisUsername"),
            password: nonempty("redisPassword"),
            tls,
            insecure: tls && parse_bool(c, "insecureSkipTLSVerify")?,
            client_cert,
        })
    }

    /// A client for these settings (no connection made yet).
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        use redis::IntoConnectionInfo;
        let addr = if self.tls {
            // rustls needs a process-wide crypto provider; installing it twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            redis::ConnectionAddr::TcpTls { host: self.host.clone(), port: self.port, insecure: self.insecure, tls_params: None }
        } else {
            redis::ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let info = addr.into_connection_info()?;
        let mut r = info.redis_settings().clone().set_db(self.db);
        if let Some(u) = &self.username {
            r = r.set_username(u);
        }
        if let Some(p) = &self.password {
            r = r.set_password(p);
        }
        let info = info.set_redis_settings(r);
        Ok(match &self.client_cert {
            Some((cert, key)) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: Some(redis::ClientTlsConfig {
                        client_cert: cert.clone().into_bytes(),
                        client_key: key.clone().into_bytes(),
                    }),
                    root_cert: None,
                },
            )?,
            None => redis::Client::open(info)?,
        })
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
