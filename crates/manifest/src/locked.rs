//! The locked app: the resolved manifest with each component's source replaced by the
//! digest of its Wasm layer, in the shape of Spin's `spin_lock_version = 1` lock file.
//! `package` writes it and `up --from <layout>` reads it back with the same types, so a
//! field missing or misspelt on the way in is an error, never a silent default.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::schema::{PrivateEndpoint, RouteConfig, StaticResponse, Variable};
use crate::{App, ComponentDef, HttpTriggerDef, TriggerTarget};

/// The lock file version this host writes and reads.
pub const SPIN_LOCK_VERSION: u32 = 1;

/// A locked app (Spin's `LockedApp`, restricted to what HTTP apps use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedApp {
    /// Always [`SPIN_LOCK_VERSION`].
    pub spin_lock_version: u32,
    /// Features a reader must support; this host writes none and refuses any.
    #[serde(default)]
    pub must_understand: Vec<String>,
    /// Application metadata.
    pub metadata: LockedMetadata,
    /// Declared application variables.
    #[serde(default)]
    pub variables: IndexMap<String, LockedVariable>,
    /// HTTP triggers in manifest order.
    pub triggers: Vec<LockedTrigger>,
    /// Components in manifest order.
    pub components: Vec<LockedComponent>,
}

/// `[application]` as locked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedMetadata {
    /// Application name.
    pub name: String,
    /// Application version ("" when unset).
    #[serde(default)]
    pub version: String,
    /// Application description ("" when unset).
    #[serde(default)]
    pub description: String,
    /// The trigger type of every trigger (always `http` here).
    pub trigger: LockedTriggerType,
}

/// `metadata.trigger`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedTriggerType {
    /// Trigger type name.
    #[serde(rename = "type")]
    pub type_: String,
}

/// A variable as locked (the manifest's `[variables.<name>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedVariable {
    /// Description, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether a provider must supply a value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Default value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Whether the value is secret (never logged).
    #[serde(default)]
    pub secret: bool,
}

/// One HTTP trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedTrigger {
    /// Trigger id.
    pub id: String,
    /// Always `http`.
    pub trigger_type: String,
    /// Route and target.
    pub trigger_config: LockedHttpConfig,
}

/// An HTTP trigger's config: a route and either a component or a static response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedHttpConfig {
    /// The route, or `{ private = true }`.
    pub route: RouteConfig,
    /// The component id, for component triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The response, for static triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_response: Option<StaticResponse>,
}

/// One component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedComponent {
    /// Component id.
    pub id: String,
    /// Description and allow-list.
    pub metadata: LockedComponentMetadata,
    /// Where the Wasm is: a content digest.
    pub source: LockedSource,
    /// Environment variables.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Component variables (templates over application variables).
    #[serde(default)]
    pub config: IndexMap<String, String>,
}

/// A component's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedComponentMetadata {
    /// Description ("" when unset).
    #[serde(default)]
    pub description: String,
    /// `allowed_outbound_hosts`, templates unresolved.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// `key_value_stores`: the store labels the component may open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_value_stores: Vec<String>,
    /// `sqlite_databases`, under Spin's lock key `databases`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
}

/// A component's source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedSource {
    /// Always `application/wasm`.
    pub content_type: String,
    /// The content's digest.
    pub content: LockedContent,
}

/// Content addressed by digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedContent {
    /// `sha256:<hex>`.
    pub digest: String,
}

/// Why a locked app cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockedAppError {
    /// The lock file version is not [`SPIN_LOCK_VERSION`].
    #[error("unsupported spin_lock_version {0}: this host reads version {SPIN_LOCK_VERSION}")]
    Version(u32),
    /// `must_understand` lists features this host lacks.
    #[error("the locked app needs features this host does not have: {0:?}")]
    MustUnderstand(Vec<String>),
    /// A trigger names neither or both of a component and a static response.
    #[error("trigger {0}: exactly one of `component` and `static_response` must be set")]
    Target(String),
    /// A trigger names a component that is not in the app.
    #[error("trigger {trigger}: component {component:?} is not in the locked app")]
    UnknownComponent {
        /// The trigger id.
        trigger: String,
        /// The missing component id.
        component: String,
    },
    /// The trigger type is not `http`.
    #[error("trigger {0}: only http triggers are supported")]
    TriggerType(String),
    /// A component has no digest for its source.
    #[error("component {0}: no digest for its Wasm")]
    MissingDigest(String),
    /// Resolving a component's digest to a file failed.
    #[error("component {component}: {message}")]
    Source {
        /// The component id.
        component: String,
        /// What went wrong.
        message: String,
    },
}

impl LockedApp {
    /// Locks `app`; `digests` maps each component id to its layer digest.
    pub fn from_app(app: &App, digests: &IndexMap<String, String>) -> Result<Self, LockedAppError> {
        let variables = app
            .variables
            .iter()
            .map(|(k, v)| {
                let lv = LockedVariable {
                    description: v.description.clone(),
                    required: v.required,
                    default: v.default.clone(),
                    secret: v.secret,
                };
                (k.clone(), lv)
            })
            .collect();
        let triggers = app
            .http_triggers
            .iter()
            .map(|t| {
                let (component, static_response) = match &t.target {
                    TriggerTarget::Component(c) => (Some(c.clone()), None),
                    TriggerTarget::Static(s) => (None, Some(s.clone())),
                };
                LockedTrigger {
                    id: t.id.clone(),
                    trigger_type: "http".into(),
                    trigger_config: LockedHttpConfig { route: t.route.clone(), component, static_response },
                }
            })
            .collect();
        let mut components = Vec::new();
        for c in app.components.values() {
            let digest = digests.get(&c.id).ok_or_else(|| LockedAppError::MissingDigest(c.id.clone()))?;
            components.push(LockedComponent {
                id: c.id.clone(),
                metadata: LockedComponentMetadata {
                    description: c.description.clone(),
                    allowed_outbound_hosts: c.allowed_outbound_hosts.clone(),
                    key_value_stores: c.key_value_stores.clone(),
                    databases: c.sqlite_databases.clone(),
                },
                source: LockedSource { content_type: "application/wasm".into(), content: LockedContent { digest: digest.clone() } },
                env: c.environment.clone(),
                config: c.variables.clone(),
            });
        }
        Ok(Self {
            spin_lock_version: SPIN_LOCK_VERSION,
            must_understand: Vec::new(),
            metadata: LockedMetadata {
                name: app.name.clone(),
                version: app.version.clone(),
                description: app.description.clone(),
                trigger: LockedTriggerType { type_: "http".into() },
            },
            variables,
            triggers,
            components,
        })
    }

    /// The app this lock describes; `source_of(digest)` gives the file holding a digest's
    /// content, and `base_dir` is where the app lives.
    pub fn into_app(
        self,
        manifest_path: PathBuf,
        base_dir: PathBuf,
        source_of: impl Fn(&str) -> Result<PathBuf, String>,
    ) -> Result<App, LockedAppError> {
        if self.spin_lock_version != SPIN_LOCK_VERSION {
            return Err(LockedAppError::Version(self.spin_lock_version));
        }
        if !self.must_understand.is_empty() {
            return Err(LockedAppError::MustUnderstand(self.must_understand));
        }
        let mut components = IndexMap::new();
        for c in self.components {
            let digest = c.source.content.digest;
            let source = source_of(&digest).map_err(|message| LockedAppError::Source { component: c.id.clone(), message })?;
            components.insert(
                c.id.clone(),
                ComponentDef {
                    id: c.id,
                    description: c.metadata.description,
                    source,
                    source_as_written: digest,
                    variables: c.config,
                    environment: c.env,
                    allowed_outbound_hosts: c.metadata.allowed_outbound_hosts,
                    key_value_stores: c.metadata.key_value_stores,
                    sqlite_databases: c.metadata.databases,
                    build: None,
                },
            );
        }
        let mut http_triggers = Vec::new();
        for t in self.triggers {
            if t.trigger_type != "http" {
                return Err(LockedAppError::TriggerType(t.id));
            }
            let cfg = t.trigger_config;
            let target = match (cfg.component, cfg.static_response) {
                (Some(c), None) => {
                    if !components.contains_key(&c) {
                        return Err(LockedAppError::UnknownComponent { trigger: t.id, component: c });
                    }
                    TriggerTarget::Component(c)
                }
                (None, Some(s)) => TriggerTarget::Static(s),
                _ => return Err(LockedAppError::Target(t.id)),
            };
            let route = match cfg.route {
                RouteConfig::Private(_) => RouteConfig::Private(PrivateEndpoint { private: true }),
                r => r,
            };
            http_triggers.push(HttpTriggerDef { id: t.id, route, target });
        }
        let variables = self
            .variables
            .into_iter()
            .map(|(k, v)| (k, Variable { description: v.description, required: v.required, default: v.default, secret: v.secret }))
            .collect();
        Ok(App {
            manifest_path,
            base_dir,
            name: self.metadata.name,
            version: self.metadata.version,
            description: self.metadata.description,
            variables,
            components,
            http_triggers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let text = "spin_manifest_version = 2\n[application]\nname = \"t\"\nversion = \"1\"\n[variables]\nv = { default = \"x\" }\n\
            [[trigger.http]]\nroute = \"/...\"\ncomponent = \"web\"\n[[trigger.http]]\nroute = { private = true }\nstatic_response = { status_code = 201, body = \"hi\" }\n\
            [component.web]\nsource = \"web.wasm\"\nallowed_outbound_hosts = [\"http://127.0.0.1:3500\"]\nvariables = { a = \"{{ v }}\" }\n";
        let app = crate::parse(std::path::Path::new("/app/spin.toml"), text).unwrap();
        let digests = IndexMap::from([("web".to_string(), "sha256:00".to_string())]);
        let locked = LockedApp::from_app(&app, &digests).unwrap();
        let json = serde_json::to_string(&locked).unwrap();
        let back: LockedApp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, locked);
        let app2 = back.into_app("/l/index.json".into(), "/l".into(), |d| Ok(PathBuf::from(format!("/l/{d}")))).unwrap();
        assert_eq!(app2.components["web"].source, PathBuf::from("/l/sha256:00"));
        assert_eq!(app2.components["web"].variables["a"], "{{ v }}");
        assert_eq!(app2.http_triggers.len(), 2);
        assert!(matches!(&app2.http_triggers[1].target, TriggerTarget::Static(s) if s.status_code == Some(201)));
        assert_eq!(app2.http_triggers[1].route, RouteConfig::Private(PrivateEndpoint { private: true }));

        let bad = json.replacen("\"spin_lock_version\"", "\"spin_lock_versoin\"", 1);
        assert!(serde_json::from_str::<LockedApp>(&bad).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["triggers"][0]["trigger_config"]["component"] = "nope".into();
        let l: LockedApp = serde_json::from_value(v).unwrap();
        assert!(matches!(l.into_app("/".into(), "/".into(), |_| Ok("/x".into())), Err(LockedAppError::UnknownComponent { .. })));
    }
}
