//! Loads a `spin.toml` (manifest version 2) the way Spin 3.6 does and turns it into the
//! [`App`] the host runs: unknown keys rejected, ids and variable names checked, inline
//! components and trigger ids normalised like Spin. Every error names the file, the key
//! and the line, and says what to do.

pub mod allowed_hosts;
pub mod locate;
pub mod locked;
pub mod routes;
pub mod schema;
pub mod template;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use locate::{Locator, Seg, display_path, from_serde_path};
pub use routes::SyntaxError;
use schema::{AppManifest, ComponentSource, ComponentSpec, Executor};
pub use schema::{BuildConfig, RouteConfig, StaticResponse, Variable};

/// A configuration error located in a file.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: `{key}`: {message}{}", file.display(), position.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default(), hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// The 1-based (line, column) of the offending key, when it could be found.
    pub position: Option<(usize, usize)>,
    /// The dotted path of the offending key, e.g. `component.api.source`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when there is a suggestion.
    pub hint: Option<String>,
}

impl ConfigError {
    /// The 1-based line of the error, when known.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.0)
    }
}

/// Builds located errors for one TOML file.
pub struct ErrorSite<'a> {
    file: &'a Path,
    locator: Locator<'a>,
}

impl<'a> ErrorSite<'a> {
    /// An error builder for `text`, the contents of `file`.
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Self { file, locator: Locator::new(text) }
    }

    /// An error at the key `path`, located in the text, with an optional hint.
    pub fn error(&self, path: &[Seg], message: impl Into<String>, hint: Option<&str>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            position: self.locator.position(path),
            key: display_path(path),
            message: message.into(),
            hint: hint.map(str::to_owned),
        }
    }

    /// Deserialises the whole document, locating a failure by the error's span or path.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self, text: &str) -> Result<T, ConfigError> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| self.toml_error(&[], &e))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = from_serde_path(e.path());
            self.toml_error(&path, e.inner())
        })
    }

    fn toml_error(&self, path: &[Seg], e: &toml::de::Error) -> ConfigError {
        let mut err = self.error(path, e.message().trim().to_string(), None);
        if let Some(span) = e.span() {
            err.position = Some(locate::line_col(self.text(), span.start));
        }
        if e.message().contains("unknown field") {
            err.hint = Some("remove or rename the key; see the accepted keys listed above".into());
        } else if e.message().contains("did not match any variant") {
            err.hint = Some("check the value's shape against the Spin manifest reference".into());
        }
        err
    }

    fn text(&self) -> &str {
        self.locator.text()
    }
}

/// The app as the host runs it: every inline component hoisted, every trigger with an id.
#[derive(Debug, Clone)]
pub struct App {
    /// The file the app was loaded from (a `spin.toml`, or an OCI layout's `index.json`).
    pub manifest_path: PathBuf,
    /// The folder that relative paths in the manifest are resolved against.
    pub base_dir: PathBuf,
    /// `application.name`.
    pub name: String,
    /// `application.version`; empty when absent.
    pub version: String,
    /// `application.description`; empty when absent.
    pub description: String,
    /// The `[variables]` declarations, by name.
    pub variables: IndexMap<String, Variable>,
    /// Every component by id, trigger-inline ones included.
    pub components: IndexMap<String, ComponentDef>,
    /// The HTTP triggers in manifest order, each with an id.
    pub http_triggers: Vec<HttpTriggerDef>,
}

/// A component as the host runs it.
#[derive(Debug, Clone)]
pub struct ComponentDef {
    /// The component's id.
    pub id: String,
    /// The component's `description`.
    pub description: String,
    /// Absolute path of the component's .wasm.
    pub source: PathBuf,
    /// The source as written, for messages.
    pub source_as_written: String,
    /// The component's `variables`: name to template over app variables.
    pub variables: IndexMap<String, String>,
    /// The component's `environment`: variables set in the guest's environment.
    pub environment: IndexMap<String, String>,
    /// The component's `allowed_outbound_hosts`, templates not yet rendered.
    pub allowed_outbound_hosts: Vec<String>,
    /// The component's `key_value_stores`: the store labels it may open.
    pub key_value_stores: Vec<String>,
    /// The component's `sqlite_databases`: the database labels it may open.
    pub sqlite_databases: Vec<String>,
    /// The component's `build` table, if any.
    pub build: Option<BuildConfig>,
}

/// An HTTP trigger as the host runs it.
#[derive(Debug, Clone)]
pub struct HttpTriggerDef {
    /// The trigger's id, as written or generated.
    pub id: String,
    /// The trigger's route, or private.
    pub route: RouteConfig,
    /// What answers the trigger's requests.
    pub target: TriggerTarget,
}

/// What an HTTP trigger's requests go to.
#[derive(Debug, Clone)]
pub enum TriggerTarget {
    /// The component with this id.
    Component(String),
    /// A fixed `static_response`.
    Static(StaticResponse),
}

/// Resolves `-f/--from`: a spin.toml file or a folder holding one.
pub fn resolve_manifest_path(from: &Path) -> PathBuf {
    if from.is_dir() { from.join("spin.toml") } else { from.to_path_buf() }
}

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read the manifest {}: {source}; pass the app's spin.toml (or its folder) with -f/--from", path.display())]
    Read {
        /// The path tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid manifest.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Reads and validates a manifest file.
pub fn load(path: &Path) -> Result<App, LoadError> {
    let read_error = |source| LoadError::Read { path: path.to_path_buf(), source };
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let abs = std::path::absolute(path).map_err(read_error)?;
    Ok(parse(&abs, &text)?)
}

/// Parses and validates manifest text; `path` is used for messages and relative paths.
pub fn parse(path: &Path, text: &str) -> Result<App, ConfigError> {
    let site = ErrorSite::new(path, text);
    // Check the version first: a v1 manifest fails the v2 schema in confusing ways.
    let probe: toml::Table = toml::from_str(text).map_err(|e| site.toml_error(&[], &e))?;
    match probe.get("spin_manifest_version") {
        Some(toml::Value::Integer(2)) => {}
        Some(other) => {
            return Err(site.error(
                &[Seg::key("spin_manifest_version")],
                format!("unsupported manifest version {other}"),
                Some("this host reads Spin manifest version 2: set `spin_manifest_version = 2` (run `spin doctor` on a machine with Spin to migrate a v1 manifest)"),
            ));
        }
        None => {
            return Err(site.error(&[], "missing `spin_manifest_version`", Some("add `spin_manifest_version = 2` at the top of the file")));
        }
    }
    let manifest: AppManifest = site.deserialize(text)?;
    validate_and_normalise(path, &site, manifest)
}

fn validate_and_normalise(path: &Path, site: &ErrorSite, m: AppManifest) -> Result<App, ConfigError> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

    for (ty, cfg) in &m.application.trigger_global_configs {
        let at = [Seg::key("application"), Seg::key("trigger"), Seg::key(ty.clone())];
        if ty != "http" {
            return Err(site.error(&at, format!("unknown trigger type `{ty}`"), Some("this host runs HTTP triggers only")));
        }
        for (k, v) in cfg {
            let mut p = at.to_vec();
            p.push(Seg::key(k.clone()));
            match (k.as_str(), v) {
                ("base", toml::Value::String(b)) if b == "/" => {}
                ("base", _) => {
                    return Err(site.error(
                        &p,
                        "an HTTP base other than \"/\" is not supported (Spin 3 removed it)",
                        Some("remove `base` and put the prefix in each route"),
                    ));
                }
                _ => {
                    return Err(site.error(&p, format!("unknown field `{k}`, expected `base`"), None));
                }
            }
        }
    }

    for (name, var) in &m.variables {
        let at = [Seg::key("variables"), Seg::key(name.clone())];
        check_lower_snake(name).map_err(|e| {
            site.error(&at, format!("invalid variable name {name:?}: {e}"), Some("variable names are lower_snake_case, e.g. `dapr_url`"))
        })?;
        match (var.required, &var.default) {
            (true, Some(_)) => {
                return Err(site.error(&at, "a required variable cannot have a default", Some("remove `default` or `required = true`")));
            }
            (false, None) => {
                return Err(site.error(
                    &at,
                    "a variable that is not required needs a default",
                    Some("add `default = \"...\"` or set `required = true`"),
                ));
            }
            _ => {}
        }
    }

    let mut components: IndexMap<String, ComponentDef> = IndexMap::new();
    for (id, c) in &m.components {
        let at = vec![Seg::key("component"), Seg::key(id.clone())];
        check_kebab(id).map_err(|e| {
            site.error(&at, format!("invalid component id {id:?}: {e}"), Some("component ids are kebab-case, e.g. `todo-api`"))
        })?;
        components.insert(id.clone(), component_def(site, &base_dir, &at, id, c, &m.variables)?);
    }

    // Trigger ids first (as Spin: `<component>-http-trigger`, else `http-trigger<N>`), then inline components.
    let mut taken: std::collections::HashSet<String> = m.triggers.http.iter().filter(|t| !t.id.is_empty()).map(|t| t.id.clone()).collect();
    let mut counter = 1;
    let mut triggers = Vec::new();
    let mut inline_counter = 1;
    for (i, t) in m.triggers.http.iter().enumerate() {
        let at = vec![Seg::key("trigger"), Seg::key("http"), Seg::Index(i)];
        let mut id = t.id.clone();
        if id.is_empty() {
            if let Some(ComponentSpec::Reference(cid)) = &t.component {
                let candidate = format!("{cid}-http-trigger");
                if taken.insert(candidate.clone()) {
                    id = candidate;
                }
            }
            while id.is_empty() {
                let candidate = format!("http-trigger{counter}");
                counter += 1;
                if taken.insert(candidate.clone()) {
                    id = candidate;
                }
            }
        }
        if let Some(Executor::Wagi(_)) = t.executor {
            let mut p = at.clone();
            p.push(Seg::key("executor"));
            return Err(site.error(
                &p,
                "the Wagi executor is not supported by this host",
                Some("build the component with spin-sdk's #[http_component] (wasi:http) and drop `executor`"),
            ));
        }
        if let RouteConfig::Private(p) = &t.route
            && !p.private
        {
            let mut k = at.clone();
            k.push(Seg::key("route"));
            return Err(site.error(&k, "route must be a string pattern or `{ private = true }`", None));
        }
        if let RouteConfig::Route(r) = &t.route {
            let mut k = at.clone();
            k.push(Seg::key("route"));
            routes::validate_route(r).map_err(|e| site.error(&k, e.to_string(), None))?;
        }
        let target = match (&t.component, &t.static_response) {
            (Some(_), Some(_)) => {
                return Err(site.error(
                    &at,
                    format!("trigger {id} has both `component` and `static_response`"),
                    Some("a trigger names either a component or a static_response"),
                ));
            }
            (None, None) => {
                return Err(site.error(
                    &at,
                    format!("trigger {id} has neither `component` nor `static_response`"),
                    Some("add `component = \"<id>\"`"),
                ));
            }
            (None, Some(sr)) => TriggerTarget::Static(sr.clone()),
            (Some(ComponentSpec::Reference(cid)), None) => {
                if !components.contains_key(cid) {
                    let mut k = at.clone();
                    k.push(Seg::key("component"));
                    return Err(site.error(
                        &k,
                        format!("trigger refers to component {cid:?}, which is not defined"),
                        Some(&format!("add a [component.{cid}] table or fix the id")),
                    ));
                }
                TriggerTarget::Component(cid.clone())
            }
            (Some(ComponentSpec::Inline(c)), None) => {
                let mut cid = format!("{id}-component");
                if check_kebab(&cid).is_err() || components.contains_key(&cid) {
                    loop {
                        cid = format!("inline-component{inline_counter}");
                        if !components.contains_key(&cid) {
                            break;
                        }
                        inline_counter += 1;
                    }
                }
                let mut k = at.clone();
                k.push(Seg::key("component"));
                components.insert(cid.clone(), component_def(site, &base_dir, &k, &cid, c, &m.variables)?);
                TriggerTarget::Component(cid)
            }
        };
        triggers.push(HttpTriggerDef { id, route: t.route.clone(), target });
    }

    Ok(App {
        manifest_path: path.to_path_buf(),
        base_dir,
        name: m.application.name,
        version: m.application.version,
        description: m.application.description,
        variables: m.variables,
        components,
        http_triggers: triggers,
    })
}

fn component_def(
    site: &ErrorSite,
    base_dir: &Path,
    at: &[Seg],
    id: &str,
    c: &schema::Component,
    app_vars: &IndexMap<String, Variable>,
) -> Result<ComponentDef, ConfigError> {
    let key = |k: &str| {
        let mut p = at.to_vec();
        p.push(Seg::key(k));
        p
    };
    let unsupported = |k: &str, what: &str| {
        Err(site.error(&key(k), format!("{what} is not supported by this host"), Some("remove the key, or run this app on Spin itself")))
    };
    if !c.allowed_http_hosts.is_empty() {
        return Err(site.error(
            &key("allowed_http_hosts"),
            "`allowed_http_hosts` is not allowed in manifest version 2",
            Some("use `allowed_outbound_hosts = [\"https://example.com\"]` (scheme://host[:port])"),
        ));
    }
    if !c.files.is_empty() {
        return unsupported("files", "mounting files");
    }
    if !c.ai_models.is_empty() {
        return unsupported("ai_models", "Spin AI models");
    }
    if !c.dependencies.is_empty() {
        return unsupported("dependencies", "component dependencies");
    }
    let source = match &c.source {
        ComponentSource::Local(p) => p.clone(),
        ComponentSource::Remote { .. } | ComponentSource::Registry { .. } => {
            return Err(site.error(
                &key("source"),
                "remote and registry sources are not supported by this host",
                Some("download the .wasm and point `source` at the local file"),
            ));
        }
    };
    for (name, template) in &c.variables {
        let mut p = key("variables");
        p.push(Seg::key(name.clone()));
        check_lower_snake(name)
            .map_err(|e| site.error(&p, format!("invalid variable name {name:?}: {e}"), Some("variable names are lower_snake_case")))?;
        let t = template::Template::parse(template).map_err(|e| site.error(&p, e.to_string(), None))?;
        for r in t.references() {
            if !app_vars.contains_key(r) {
                return Err(site.error(
                    &p,
                    format!("the template refers to {{{{ {r} }}}}, which is not in [variables]"),
                    Some(&format!("declare `{r}` under [variables] with a default or `required = true`")),
                ));
            }
        }
    }
    for (i, h) in c.allowed_outbound_hosts.iter().enumerate() {
        let mut p = key("allowed_outbound_hosts");
        p.push(Seg::Index(i));
        let t = template::Template::parse(h).map_err(|e| site.error(&p, e.to_string(), None))?;
        if t.is_literal() {
            allowed_hosts::AllowedHost::parse(h).map_err(|e| {
                site.error(
                    &p,
                    format!("{e:#}"),
                    Some("entries look like \"http://127.0.0.1:3500\", \"https://*.example.com\", \"*://*:*\""),
                )
            })?;
        } else {
            for r in t.references() {
                if !app_vars.contains_key(r) {
                    return Err(site.error(&p, format!("the entry refers to {{{{ {r} }}}}, which is not in [variables]"), None));
                }
            }
        }
    }
    Ok(ComponentDef {
        id: id.to_string(),
        description: c.description.clone(),
        source: base_dir.join(&source),
        source_as_written: source,
        variables: c.variables.clone(),
        environment: c.environment.clone(),
        allowed_outbound_hosts: c.allowed_outbound_hosts.clone(),
        key_value_stores: c.key_value_stores.clone(),
        sqlite_databases: c.sqlite_databases.clone(),
        build: c.build.clone(),
    })
}

/// Spin's id rule: words of ASCII letters and digits, each starting with a letter,
/// joined by `delim`, each word all lowercase or all uppercase (lowercase when `lower`).
fn check_id(id: &str, delim: char, wrong: char, lower: bool) -> Result<(), SyntaxError> {
    if id.is_empty() {
        return Err(SyntaxError("empty".into()));
    }
    if id.contains(wrong) {
        return Err(SyntaxError(format!("words must be separated with {delim:?}, not {wrong:?}")));
    }
    for word in id.split(delim) {
        let mut chars = word.chars();
        let Some(first) = chars.next() else {
            return Err(SyntaxError(format!("{delim:?}-separated words must not be empty")));
        };
        if !first.is_ascii_alphabetic() {
            return Err(SyntaxError(format!("{delim:?}-separated words must start with an ASCII letter; got {first:?}")));
        }
        let upper = first.is_ascii_uppercase();
        for ch in chars {
            if ch.is_ascii_digit() {
                continue;
            }
            if !ch.is_ascii_alphanumeric() {
                return Err(SyntaxError(format!("{delim:?}-separated words may only contain alphanumeric ASCII; got {ch:?}")));
            }
            if ch.is_ascii_uppercase() != upper {
                return Err(SyntaxError(format!("{delim:?}-separated words must be all lowercase or all UPPERCASE; got {word:?}")));
            }
        }
        if lower && upper {
            return Err(SyntaxError(format!("must be all lowercase; got {id:?}")));
        }
    }
    Ok(())
}

/// Checks a component id: kebab-case words, each all lowercase or all UPPERCASE; the error says why not.
pub fn check_kebab(id: &str) -> Result<(), SyntaxError> {
    check_id(id, '-', '_', false)
}

/// Checks a variable name: lower_snake_case words; the error says why not.
pub fn check_lower_snake(id: &str) -> Result<(), SyntaxError> {
    check_id(id, '_', '-', true)
}

#[cfg(test)]
mod tests;
