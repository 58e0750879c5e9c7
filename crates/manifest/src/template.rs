//! Spin's `{{ name }}` templates, used by component variables and allowed_outbound_hosts:
//! parsed and checked when the manifest loads, rendered by the host once values resolve.

/// Why a template could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// A `{{` without a closing `}}`; holds the template.
    #[error("unclosed `{{{{` in template {0:?}: close it with `}}}}`")]
    Unclosed(String),
    /// A reference that is not a lower_snake_case name; holds the name.
    #[error("invalid variable reference {0:?} in template: names are lower_snake_case")]
    InvalidName(String),
}

/// A string with `{{ variable }}` references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(String),
}

impl Template {
    /// Parses `s`, checking the name in every `{{ name }}` reference.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| TemplateError::Unclosed(s.to_string()))?;
            let name = after[..end].trim();
            crate::check_lower_snake(name).map_err(|_| TemplateError::InvalidName(name.to_string()))?;
            parts.push(Part::Var(name.to_string()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Whether the template has no references.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// The referenced variable names, in order.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Renders the template, getting each reference's value from `lookup`.
    pub fn render<E>(&self, mut lookup: impl FnMut(&str) -> Result<String, E>) -> Result<String, E> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Var(v) => out.push_str(&lookup(v)?),
            }
        }
        Ok(out)
    }
}
