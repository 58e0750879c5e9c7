//! Spin application variables: `{{ name }}` templates, the providers that supply values
//! (`--variable`, runtime-config `static` and `env` providers, the always-present
//! `SPIN_VARIABLE_*` environment provider with `./.env`, then manifest defaults), and
//! the per-component values the guest reads through `fermyon:spin/variables@2.0.0`.
//! Everything resolves once at start, so a missing required variable fails the start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use spindapr_manifest::template::{Template, TemplateError};
use spindapr_manifest::{App, Variable};

/// Why a variable has no value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// A required variable that no provider supplies; holds the name.
    #[error("variable `{0}` is required but has no value: set it with `--variable {0}=...`, the environment variable SPIN_VARIABLE_{up}, or a runtime-config provider", up = .0.to_uppercase())]
    MissingRequired(String),
    /// A name not declared in the manifest's `[variables]`.
    #[error("variable `{0}` is not declared in the manifest's [variables]")]
    Undeclared(String),
    /// A malformed template.
    #[error("{0}")]
    Template(#[from] TemplateError),
}

/// A source of variable values.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Fixed values by variable name (`--variable`, or a runtime-config `static` provider).
    Static(HashMap<String, String>),
    /// Environment variables named `{prefix}_{NAME}`, then the same keys in a dotenv file.
    Env {
        /// The environment variable prefix, `SPIN_VARIABLE` by default.
        prefix: String,
        /// The key/value pairs read from the dotenv file.
        dotenv: HashMap<String, String>,
    },
}

impl Provider {
    /// The env provider: `{PREFIX}_{NAME}` upper-cased, then the dotenv file.
    pub fn env(prefix: Option<&str>, dotenv_path: Option<&Path>) -> anyhow::Result<Self> {
        let prefix = prefix.unwrap_or("SPIN_VARIABLE").to_string();
        let path: PathBuf = dotenv_path.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".env"));
        let mut dotenv = HashMap::new();
        if path.exists() {
            for item in dotenvy::from_path_iter(&path).map_err(|e| anyhow::anyhow!("cannot read dotenv file {}: {e}", path.display()))? {
                let (k, v) = item.map_err(|e| anyhow::anyhow!("bad line in dotenv file {}: {e}", path.display()))?;
                dotenv.insert(k, v);
            }
        }
        Ok(Provider::Env { prefix, dotenv })
    }

    fn get(&self, name: &str) -> Option<String> {
        match self {
            Provider::Static(values) => values.get(name).cloned(),
            Provider::Env { prefix, dotenv } => {
                let key = format!("{prefix}_{}", name.to_ascii_uppercase());
                std::env::var(&key).ok().or_else(|| dotenv.get(&key).cloned())
            }
        }
    }
}

/// Resolves application variables through providers in priority order.
#[derive(Debug, Clone)]
pub struct Resolver {
    declared: IndexMap<String, Variable>,
    providers: Vec<Provider>,
}

impl Resolver {
    /// A resolver for the `declared` variables, asking `providers` first to last.
    pub fn new(declared: IndexMap<String, Variable>, providers: Vec<Provider>) -> Self {
        Self { declared, providers }
    }

    /// The value of an app variable: the first provider's, else its default.
    pub fn app_variable(&self, name: &str) -> Result<String, ResolveError> {
        let var = self.declared.get(name).ok_or_else(|| ResolveError::Undeclared(name.to_string()))?;
        if let Some(v) = self.providers.iter().find_map(|p| p.get(name)) {
            return Ok(v);
        }
        var.default.clone().ok_or_else(|| ResolveError::MissingRequired(name.to_string()))
    }

    /// Renders a `{{ name }}` template with app variable values.
    pub fn render(&self, template: &str) -> Result<String, ResolveError> {
        Template::parse(template)?.render(|v| self.app_variable(v))
    }

    /// Checks every required variable has a value: the start fails otherwise.
    pub fn check_required(&self) -> Result<(), ResolveError> {
        for name in self.declared.keys() {
            self.app_variable(name)?;
        }
        Ok(())
    }

    /// Whether the variable is declared `secret = true`.
    pub fn is_secret(&self, name: &str) -> bool {
        self.declared.get(name).is_some_and(|v| v.secret)
    }
}

/// The resolved values one component can read.
#[derive(Debug, Clone, Default)]
pub struct ComponentVariables {
    values: HashMap<String, String>,
}

/// What `fermyon:spin/variables.get` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetError {
    /// The name is not a valid variable name; holds the message.
    InvalidName(String),
    /// The component has no variable of that name; holds the message.
    Undefined(String),
}

impl ComponentVariables {
    /// Renders the component's `variables` templates with the resolved app variables.
    pub fn resolve(app: &App, component: &str, resolver: &Resolver) -> Result<Self, ResolveError> {
        let mut values = HashMap::new();
        if let Some(c) = app.components.get(component) {
            for (name, template) in &c.variables {
                values.insert(name.clone(), resolver.render(template)?);
            }
        }
        Ok(Self { values })
    }

    /// Every variable of the component, by name.
    pub fn all(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort();
        all
    }

    /// The value of one of the component's variables.
    pub fn get(&self, name: &str) -> Result<String, GetError> {
        if spindapr_manifest::check_lower_snake(name).is_err() {
            return Err(GetError::InvalidName(format!("invalid variable name {name:?}")));
        }
        self.values.get(name).cloned().ok_or_else(|| GetError::Undefined(format!("no variable for {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(default: Option<&str>, required: bool) -> Variable {
        Variable { description: None, required, default: default.map(str::to_owned), secret: false }
    }

    #[test]
    fn templates_parse_and_render() {
        let t = Template::parse("http://{{ host }}:{{port}}/x").unwrap();
        assert_eq!(t.references().collect::<Vec<_>>(), vec!["host", "port"]);
        assert!(!t.is_literal());
        let out = t.render(|v| Ok::<_, ResolveError>(if v == "host" { "h".into() } else { "1".into() })).unwrap();
        assert_eq!(out, "http://h:1/x");
        assert!(Template::parse("plain").unwrap().is_literal());
        assert_eq!(Template::parse("{{ x"), Err(TemplateError::Unclosed("{{ x".into())));
        assert_eq!(Template::parse("{{ Bad-Name }}"), Err(TemplateError::InvalidName("Bad-Name".into())));
    }

    #[test]
    fn providers_are_tried_in_order_then_default() {
        let mut declared = IndexMap::new();
        declared.insert("a".to_string(), var(Some("default-a"), false));
        declared.insert("b".to_string(), var(Some("default-b"), false));
        declared.insert("c".to_string(), var(None, true));
        let first = Provider::Static(HashMap::from([("a".to_string(), "cli".to_string())]));
        let second = Provider::Static(HashMap::from([("a".to_string(), "rc".to_string()), ("b".to_string(), "rc-b".to_string())]));
        let r = Resolver::new(declared, vec![first, second]);
        assert_eq!(r.app_variable("a").unwrap(), "cli");
        assert_eq!(r.app_variable("b").unwrap(), "rc-b");
        assert_eq!(r.app_variable("c"), Err(ResolveError::MissingRequired("c".into())));
        assert!(r.check_required().is_err());
        assert_eq!(r.app_variable("zzz"), Err(ResolveError::Undeclared("zzz".into())));
    }

    #[test]
    fn env_provider_reads_prefixed_upper_case_and_dotenv() {
        let dir = tempfile::tempdir().unwrap();
        let dotenv = dir.path().join(".env");
        std::fs::write(&dotenv, "MYAPP_FROM_FILE=file-value\n").unwrap();
        let p = Provider::env(Some("MYAPP"), Some(&dotenv)).unwrap();
        assert_eq!(p.get("from_file").as_deref(), Some("file-value"));
        assert_eq!(p.get("absent_here"), None);
    }

    #[test]
    fn component_get_distinguishes_invalid_and_undefined() {
        let cv = ComponentVariables { values: HashMap::from([("ok".to_string(), "v".to_string())]) };
        assert_eq!(cv.get("ok").unwrap(), "v");
        assert!(matches!(cv.get("invalid-name"), Err(GetError::InvalidName(_))));
        assert!(matches!(cv.get("4invalid"), Err(GetError::InvalidName(_))));
        assert!(matches!(cv.get("missing"), Err(GetError::Undefined(_))));
    }
}
