//! Spin's route syntax: a route as written in `[[trigger.http]] route` (exact, `:name`
//! segments, a trailing `/...`), sanitised against the base and turned into the pattern
//! the host's router matches. The manifest validates with it; the host routes with it.

use std::borrow::Cow;

/// A route, id or name that does not follow Spin's syntax; the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

/// Checks that a route string can be routed; the message says what is wrong.
pub fn validate_route(route: &str) -> Result<(), SyntaxError> {
    parse_route(&sanitize_with_base("/", route)).map(|_| ())
}

/// Turns a route with its base applied into the router's pattern (a trailing `/...` is a wildcard).
pub fn parse_route(based: &str) -> Result<routefinder::RouteSpec, SyntaxError> {
    let spec = if let Some(prefix) = based.strip_suffix("/...") { format!("{prefix}/*") } else { based.to_string() };
    spec.as_str().try_into().map_err(|e: String| SyntaxError(format!("invalid route {based:?}: {e}")))
}

/// Joins `base` and `route` as Spin does: a leading `/` added, trailing slashes dropped.
pub fn sanitize_with_base(base: &str, route: &str) -> String {
    let route = if route.starts_with('/') { Cow::Borrowed(route) } else { Cow::Owned(format!("/{route}")) };
    let strip = |s: &str| s.strip_suffix('/').unwrap_or(s).to_string();
    format!("{}{}", strip(base), strip(&route))
}
