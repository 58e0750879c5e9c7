//! Spin's `runtime-config.toml` as far as this host honours it: variables providers
//! (`env`, `static`), `state_dir`, `log_dir`, `max_instance_memory`, `[outbound_http]`,
//! `[key_value_store.<label>]` (`spin`, `redis`) and `[sqlite_database.<label>]`
//! (`spin`). Unknown keys and types are rejected with the file, key and line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::outbound::OutboundConfig;
use crate::variables::Provider;
use spindapr_manifest::{ConfigError, ErrorSite};

/// A `runtime-config.toml` file, as given with `--runtime-config-file`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `[[variables_provider]]` (or the older `[[config_provider]]`): variable providers, in file order.
    #[serde(default, alias = "config_provider")]
    pub variables_provider: Vec<ProviderConfig>,
    /// `state_dir`: Spin's state folder (here: the default home of `logs/`).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// `log_dir`: where component output logs are written.
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    /// `max_instance_memory`: the most linear memory, in bytes, one component instance may use.
    #[serde(default)]
    pub max_instance_memory: Option<usize>,
    /// `[outbound_http]`: settings for the components' outbound HTTP requests.
    #[serde(default)]
    pub outbound_http: Option<OutboundHttp>,
    /// `[key_value_store.<label>]`: the app's key-value stores, by label.
    #[serde(default)]
    pub key_value_store: indexmap::IndexMap<String, crate::key_value::StoreConfig>,
    /// `[sqlite_database.<label>]`: the app's SQLite databases, by label.
    #[serde(default)]
    pub sqlite_database: indexmap::IndexMap<String, crate::sqlite::DatabaseConfig>,
}

/// One `[[variables_provider]]` entry, chosen by its `type` key.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// `type = "env"`: values from environment variables, then a dotenv file.
    Env {
        /// `prefix`: the environment variable prefix; `SPIN_VARIABLE` when absent.
        #[serde(default)]
        prefix: Option<String>,
        /// `dotenv_path`: the dotenv file, relative to the config file's folder; `./.env` when absent.
        #[serde(default)]
        dotenv_path: Option<PathBuf>,
    },
    /// `type = "static"`: fixed values written in the file.
    Static {
        /// `values`: the values, by variable name.
        #[serde(default)]
        values: HashMap<String, String>,
    },
}

/// The `[outbound_http]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundHttp {
    /// `connection_pooling`: whether connections are reused across requests; on when absent.
    #[serde(default)]
    pub connection_pooling: Option<bool>,
    /// `max_concurrent_requests`: the most outbound requests in flight at once; unlimited when absent.
    #[serde(default)]
    pub max_concurrent_requests: Option<usize>,
}

impl RuntimeConfig {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read runtime config {}: {e}", path.display()))?;
        Ok(Self::parse(path, &text)?)
    }

    /// Parses runtime-config text, refusing keys this host does not honour; `path` is for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let site = ErrorSite::new(path, text);
        let rc: Self = site.deserialize(text)?;
        Ok(rc)
    }

    /// The configured providers, in file order; relative dotenv paths are taken from
    /// the config file's folder.
    pub fn providers(&self, base: &Path) -> anyhow::Result<Vec<Provider>> {
        self.variables_provider
            .iter()
            .map(|p| match p {
                ProviderConfig::Env { prefix, dotenv_path } => {
                    let dotenv = dotenv_path.as_ref().map(|d| base.join(d));
                    Provider::env(prefix.as_deref(), dotenv.as_deref())
                }
                ProviderConfig::Static { values } => Ok(Provider::Static(values.clone())),
            })
            .collect()
    }

    /// The outbound HTTP settings, with defaults for keys left out.
    pub fn outbound(&self) -> OutboundConfig {
        let mut c = OutboundConfig::default();
        if let Some(o) = &self.outbound_http {
            if let Some(p) = o.connection_pooling {
                c.connection_pooling = p;
            }
            c.max_concurrent_requests = o.max_concurrent_requests;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_providers_and_rejects_unknown_keys() {
        let p = Path::new("rc.toml");
        let rc = RuntimeConfig::parse(
            p,
            "[[variables_provider]]\ntype = \"static\"\nvalues = { a = \"1\" }\n\n[[variables_provider]]\ntype = \"env\"\nprefix = \"X\"\n",
        )
        .unwrap();
        assert_eq!(rc.variables_provider.len(), 2);
        let rc = RuntimeConfig::parse(p, "[[config_provider]]\ntype = \"env\"\n").unwrap();
        assert_eq!(rc.variables_provider.len(), 1);
        let e = RuntimeConfig::parse(p, "\n[outbound_http]\nconnection_pooling = true\nbogus = 1\n").unwrap_err();
        assert_eq!(e.line(), Some(4), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = RuntimeConfig::parse(p, "[[variables_provider]]\ntype = \"vault\"\n").unwrap_err();
        assert!(e.to_string().contains("vault"), "{e}");
    }

    #[test]
    fn parses_key_value_stores_and_sqlite_databases() {
        use crate::key_value::StoreConfig;
        use crate::sqlite::DatabaseConfig;
        let p = Path::new("rc.toml");
        let rc = RuntimeConfig::parse(
            p,
            "[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n\n[key_value_store.default]\ntype = \"spin\"\npath = \"kv.db\"\n\n[sqlite_database.orders]\ntype = \"spin\"\n",
        )
        .unwrap();
        assert_eq!(rc.key_value_store["cache"], StoreConfig::Redis { url: "redis://127.0.0.1:6379".into() });
        assert_eq!(rc.key_value_store["default"], StoreConfig::Spin { path: Some("kv.db".into()) });
        assert_eq!(rc.sqlite_database["orders"], DatabaseConfig::Spin { path: None });
        let e = RuntimeConfig::parse(p, "[key_value_store.x]\ntype = \"azure_cosmos\"\n").unwrap_err();
        assert!(e.to_string().contains("azure_cosmos") && e.line() == Some(2), "{e}");
        let e = RuntimeConfig::parse(p, "[sqlite_database.x]\ntype = \"spin\"\npath = \"a\"\nurl = \"b\"\n").unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");
    }
}
