//! Maps a key path (`component.todo-api.source`) to a line and column of the TOML text,
//! so every manifest or runtime-config error can point at the spot to fix.

use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// A 0-based array index.
    Index(usize),
}

impl Seg {
    /// A key segment.
    pub fn key(k: impl Into<String>) -> Self {
        Seg::Key(k.into())
    }
}

/// Renders a path as `a.b[0].c`.
pub fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A parsed TOML document that keeps the spans of keys and values.
pub struct Locator<'a> {
    text: &'a str,
    root: Option<toml::Spanned<DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    /// Parses `text`; when it is not valid TOML, no position is found.
    pub fn new(text: &'a str) -> Self {
        Self { text, root: DeTable::parse(text).ok() }
    }

    /// The whole document text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The 1-based (line, column) of the deepest part of `path` present in the document.
    pub fn position(&self, path: &[Seg]) -> Option<(usize, usize)> {
        self.span(path).map(|s| line_col(self.text, s.start))
    }

    fn span(&self, path: &[Seg]) -> Option<std::ops::Range<usize>> {
        let root = self.root.as_ref()?;
        let mut best = None;
        let mut table: Option<&DeTable> = Some(root.get_ref());
        let mut value: Option<&DeValue> = None;
        for seg in path {
            match seg {
                Seg::Key(k) => {
                    let t = match (table, value) {
                        (Some(t), _) => t,
                        (None, Some(DeValue::Table(t))) => t,
                        _ => break,
                    };
                    let Some((key, v)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k) else {
                        break;
                    };
                    best = Some(key.span());
                    table = None;
                    value = Some(v.get_ref());
                }
                Seg::Index(i) => {
                    let Some(DeValue::Array(a)) = value else {
                        break;
                    };
                    let Some(item) = a.get(*i) else { break };
                    best = Some(item.span());
                    value = Some(item.get_ref());
                }
            }
        }
        best
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// Converts a serde_path_to_error path into our segments.
pub fn from_serde_path(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_array_items() {
        let text = "a = 1\n[component.x]\nsource = \"x.wasm\"\n\n[[trigger.http]]\nroute = \"/\"\n[[trigger.http]]\nroute = \"/b\"\n";
        let loc = Locator::new(text);
        assert_eq!(loc.position(&[Seg::key("a")]), Some((1, 1)));
        assert_eq!(loc.position(&[Seg::key("component"), Seg::key("x"), Seg::key("source")]), Some((3, 1)));
        assert_eq!(loc.position(&[Seg::key("trigger"), Seg::key("http"), Seg::Index(1), Seg::key("route")]), Some((8, 1)));
        // A missing leaf falls back to the deepest present parent.
        assert_eq!(loc.position(&[Seg::key("component"), Seg::key("x"), Seg::key("nope")]), Some((2, 12)));
        assert_eq!(display_path(&[Seg::key("trigger"), Seg::key("http"), Seg::Index(1), Seg::key("route")]), "trigger.http[1].route");
    }

    #[test]
    fn line_col_is_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
