//! Dapr's pluggable components as components-contrib shapes them: one trait per kind
//! (`pubsub::PubSub`, `state::StateStore`), one module per implementation (in-memory
//! always; Redis and Kafka behind the `redis` and `kafka` features), each reading its
//! metadata as contrib does. The sidecar's API never knows which one it talks to.

pub mod pubsub;
#[cfg(feature = "redis")]
mod redis_conn;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A component as loaded from its YAML: type, version and metadata values resolved to
/// strings (secrets and env refs already applied).
#[derive(Debug, Clone)]
pub struct Component {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`, e.g. `pubsub.redis`.
    pub type_: String,
    /// `spec.version`, e.g. `v1`.
    pub version: String,
    /// `spec.metadata`, name to value.
    pub metadata: BTreeMap<String, String>,
    /// The file it came from, for messages.
    pub file: PathBuf,
}

impl Component {
    /// A component with no metadata (the sidecar's defaults).
    pub fn new(name: &str, type_: &str) -> Self {
        Self { name: name.into(), type_: type_.into(), version: "v1".into(), metadata: BTreeMap::new(), file: PathBuf::from("<default>") }
    }

    /// The building block: `pubsub`, `state`, ...
    pub fn kind(&self) -> &str {
        self.type_.split('.').next().unwrap_or("")
    }

    /// A metadata value; keys match case-insensitively, as Dapr's metadata decoding.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    /// A metadata value that is set and not empty.
    pub fn meta_nonempty(&self, key: &str) -> Option<&str> {
        self.meta(key).filter(|v| !v.is_empty())
    }

    /// Where the component is declared, for messages: `file: component name`.
    pub fn origin(&self) -> String {
        format!("{}: component {}", self.file.display(), self.name)
    }
}

/// Why a component could not be built from its YAML.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The type is not one this sidecar implements (or was built without).
    #[error("{origin}: unsupported type {type_}")]
    Unsupported {
        /// Where the component is declared.
        origin: String,
        /// `spec.type`.
        type_: String,
    },
    /// Its metadata is invalid or its backend cannot be reached; the text says which.
    #[error("{origin}: {message}")]
    Init {
        /// Where the component is declared.
        origin: String,
        /// What went wrong, with its causes.
        message: String,
    },
}

impl ComponentError {
    /// An initialisation failure of `c`, keeping every cause's text.
    pub fn init(c: &Component, e: impl std::fmt::Display) -> Self {
        ComponentError::Init { origin: c.origin(), message: format!("{e:#}") }
    }
}

/// A duration that is not in Go's syntax; the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {value:?}: {why}")]
pub struct DurationError {
    /// The value as written.
    pub value: String,
    /// Why it does not parse.
    pub why: String,
}

/// Go's strconv.ParseBool, which daprd and contrib use for many boolean settings.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// dapr/kit's `IsTruthy`: y, yes, true, t, on, 1 (any case, trimmed); anything else false.
pub fn is_truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "y" | "yes" | "true" | "t" | "on" | "1")
}

/// Go duration strings: "5s", "500ms", "1m30s", "1h".
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(s.trim()).map_err(|e| DurationError { value: s.to_string(), why: e.to_string() })
}
