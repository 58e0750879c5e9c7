//! The serde model of a Spin manifest (`spin_manifest_version = 2`) as Spin 3.6 reads it:
//! every table rejects unknown keys, and only the fields this host can honour exist.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// A whole `spin.toml` document in manifest format version 2.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppManifest {
    /// `spin_manifest_version`: the manifest format version; must be `2`.
    pub spin_manifest_version: toml::Value,
    /// `[application]`: the app's name, version and other metadata.
    pub application: AppDetails,
    /// `[variables]`: the application variables, by lower_snake_case name.
    #[serde(default)]
    pub variables: IndexMap<String, Variable>,
    /// `[[trigger.<type>]]`: the app's triggers, grouped by trigger type.
    #[serde(rename = "trigger", default)]
    pub triggers: Triggers,
    /// `[component.<id>]`: the app's components, by kebab-case id.
    #[serde(rename = "component", default)]
    pub components: IndexMap<String, Component>,
}

/// The `[application]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppDetails {
    /// `name`: the application's name (required).
    pub name: String,
    /// `version`: the application's version; empty when absent.
    #[serde(default)]
    pub version: String,
    /// `description`: a human-readable description of the application.
    #[serde(default)]
    pub description: String,
    /// `authors`: the application's authors.
    #[serde(default)]
    pub authors: Vec<String>,
    /// `targets`: the environments (e.g. `"spin-up:3.2"`) the app's components must be compatible with.
    #[serde(default)]
    pub targets: Vec<toml::Value>,
    /// `[application.trigger.<type>]`: settings shared by every trigger of one type;
    /// for HTTP only `base`, which this host accepts only as `"/"`.
    #[serde(rename = "trigger", default)]
    pub trigger_global_configs: IndexMap<String, toml::Table>,
    /// `[application.tool.<name>]`: settings for external tools and plugins; Spin ignores them.
    #[serde(default)]
    pub tool: IndexMap<String, toml::Table>,
}

/// Trigger types this host runs. Only HTTP: any other type is an unknown key, so an
/// app that needs e.g. a Redis trigger is refused at load rather than half-served.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    /// `[[trigger.http]]`: the HTTP triggers, each tying a route to a component.
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
}

/// One `[[trigger.http]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    /// `id`: the trigger's id; empty when absent, and then generated as Spin does.
    #[serde(default)]
    pub id: String,
    /// `component`: the component that handles the route, by id or as an inline table.
    #[serde(default)]
    pub component: Option<ComponentSpec>,
    /// `route`: the path pattern the trigger serves, or `{ private = true }`.
    pub route: RouteConfig,
    /// `executor`: how the component is invoked; `spin` (wasi:http) when absent.
    #[serde(default)]
    pub executor: Option<Executor>,
    /// `static_response`: a fixed response served instead of running a component.
    #[serde(default)]
    pub static_response: Option<StaticResponse>,
}

/// A trigger's component: an id of a `[component.<id>]` table, or an inline table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ComponentSpec {
    /// The id of a component defined in a `[component.<id>]` table.
    Reference(String),
    /// A component table written inline in the trigger.
    Inline(Box<Component>),
}

/// The `route` of an HTTP trigger.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RouteConfig {
    /// A path pattern: exact, with `:name` segments, or ending in `/...` as a wildcard.
    Route(String),
    /// `{ private = true }`: no public route; reachable only through service chaining.
    Private(PrivateEndpoint),
}

/// The table form of `route`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateEndpoint {
    /// `private`: must be `true`; the trigger then has no public route.
    pub private: bool,
}

/// An HTTP trigger's `executor` table, chosen by its `type` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "kebab-case")]
pub enum Executor {
    /// `type = "spin"` (or `"http"`): the component is a wasi:http handler.
    #[serde(alias = "spin")]
    Http,
    /// `type = "wagi"`: a WAGI (CGI-style) module with its options; refused by this host.
    Wagi(toml::Table),
}

/// A trigger's `static_response` table: a fixed HTTP response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResponse {
    /// `status_code`: the response status; 200 when absent.
    #[serde(default)]
    pub status_code: Option<u16>,
    /// `headers`: the response headers, by name.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// `body`: the response body text; empty when absent.
    #[serde(default)]
    pub body: Option<String>,
}

/// One `[variables]` entry: an application variable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// `description`: what the variable is for.
    #[serde(default)]
    pub description: Option<String>,
    /// `required`: whether a value must be supplied at run time (then it has no default).
    #[serde(default)]
    pub required: bool,
    /// `default`: the value used when no provider supplies one.
    #[serde(default)]
    pub default: Option<String>,
    /// `secret`: whether the value is sensitive and must not be shown or logged.
    #[serde(default)]
    pub secret: bool,
}

/// A `[component.<id>]` table, or a trigger's inline `component` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// `source`: where the component's Wasm comes from.
    pub source: ComponentSource,
    /// `description`: a human-readable description of the component.
    #[serde(default)]
    pub description: String,
    /// `variables`: the component's variables, each a template that may use `{{ app_variable }}`.
    #[serde(default)]
    pub variables: IndexMap<String, String>,
    /// `environment`: environment variables set for the component's guest.
    #[serde(default)]
    pub environment: IndexMap<String, String>,
    /// `files`: files to mount into the guest (globs or `{ source, destination }`); refused by this host.
    #[serde(default)]
    pub files: Vec<toml::Value>,
    /// `exclude_files`: glob patterns of files kept out of the `files` mounts.
    #[serde(default)]
    pub exclude_files: Vec<String>,
    /// `allowed_http_hosts`: the manifest v1 form of the outbound allow-list; rejected in v2.
    #[serde(default)]
    pub allowed_http_hosts: Vec<String>,
    /// `allowed_outbound_hosts`: the destinations the component may connect to, as `scheme://host[:port]`.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// `key_value_stores`: the key-value store labels the component may use.
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    /// `sqlite_databases`: the SQLite database labels the component may use.
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    /// `ai_models`: the AI models the component may use; refused by this host.
    #[serde(default)]
    pub ai_models: Vec<String>,
    /// `targets`: environments the component must be compatible with; replaces the app's `targets`.
    #[serde(default)]
    pub targets: Option<Vec<toml::Value>>,
    /// `[component.<id>.build]`: how to build the component's Wasm.
    #[serde(default)]
    pub build: Option<BuildConfig>,
    /// `[component.<id>.tool.<name>]`: settings for external tools and plugins; Spin ignores them.
    #[serde(default)]
    pub tool: IndexMap<String, toml::Table>,
    /// `dependencies_inherit_configuration`: whether the component's dependencies get its
    /// capabilities (outbound hosts, stores, ...).
    #[serde(default)]
    pub dependencies_inherit_configuration: Option<bool>,
    /// `[component.<id>.dependencies]`: components that satisfy this component's imports; refused by this host.
    #[serde(default)]
    pub dependencies: IndexMap<String, toml::Value>,
}

/// A component's `source`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ComponentSource {
    /// A path to a local `.wasm` file, relative to the manifest's folder.
    Local(String),
    /// `{ url, digest }`: a Wasm file downloaded from a URL.
    Remote {
        /// `url`: where to download the Wasm file from.
        url: String,
        /// `digest`: the file's expected `sha256:` digest.
        digest: String,
    },
    /// `{ registry, package, version }`: a component package from an OCI registry.
    Registry {
        /// `registry`: the registry host; the default registry when absent.
        registry: Option<String>,
        /// `package`: the package name, e.g. `namespace:name`.
        package: String,
        /// `version`: the package version.
        version: String,
    },
}

/// A component's `build` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// `command`: the command, or commands run in order, that build the component.
    pub command: Commands,
    /// `workdir`: the folder the commands run in, relative to the manifest's folder; that folder when absent.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `watch`: glob patterns of the source files `spin watch` rebuilds on.
    #[serde(default)]
    pub watch: Vec<String>,
}

/// A build `command`: one command line or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Commands {
    /// One command line.
    Single(String),
    /// Several command lines, run in order.
    Multiple(Vec<String>),
}

impl Commands {
    /// The command lines, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let v: Vec<&str> = match self {
            Commands::Single(c) => vec![c.as_str()],
            Commands::Multiple(cs) => cs.iter().map(String::as_str).collect(),
        };
        v.into_iter()
    }
}
