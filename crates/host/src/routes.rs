//! Spin's HTTP route table: exact routes, `:name` segments, trailing `/...` wildcards,
//! precedence (exact beats parameter beats wildcard, segment by segment, so the longest
//! prefix wins), duplicate routes (the last one wins, with a warning), and the values
//! Spin derives from a match (path info, component route, named captures).

use spindapr_manifest::routes::{SyntaxError, parse_route, sanitize_with_base};

/// Where a route leads: the index of an HTTP trigger in the app.
pub type TriggerIndex = usize;

#[derive(Debug, Clone)]
struct RouteHandler {
    trigger: TriggerIndex,
    based_route: String,
    raw_route: String,
}

/// A route replaced by a later trigger with the same route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateRoute {
    /// The duplicated route, with the base applied.
    pub route: String,
    /// The earlier trigger, whose route is dropped.
    pub replaced: TriggerIndex,
    /// The later trigger, which serves the route.
    pub effective: TriggerIndex,
}

/// An app's HTTP route table.
#[derive(Debug)]
pub struct Router {
    rf: routefinder::Router<RouteHandler>,
}

/// The outcome of matching a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The trigger that serves the request.
    pub trigger: TriggerIndex,
    /// The route with the base applied (Spin's `spin-matched-route`).
    pub based_route: String,
    /// The route as written in the manifest (`spin-raw-component-route`).
    pub raw_route: String,
    /// `:name` captures in route order.
    pub named: Vec<(String, String)>,
    /// The part of the path below a trailing wildcard (`spin-path-info`).
    pub path_info: String,
}

impl RouteMatch {
    /// A match for a service-chaining request: the whole path goes to the component as if
    /// it were routed by `/...` (how Spin serves `<id>.spin.internal`).
    pub fn synthetic(trigger: TriggerIndex, path: &str) -> Self {
        Self { trigger, based_route: "/...".into(), raw_route: "/...".into(), named: Vec::new(), path_info: path.to_string() }
    }

    /// `spin-component-route`: the raw route without a trailing `/...`.
    pub fn raw_route_or_prefix(&self) -> &str {
        self.raw_route.strip_suffix("/...").unwrap_or(&self.raw_route)
    }
}

impl Router {
    /// Builds the table from `(trigger, route)` pairs; private routes are passed as `None`
    /// (they are reachable only through service chaining).
    pub fn build<'a>(
        routes: impl IntoIterator<Item = (TriggerIndex, Option<&'a str>)>,
    ) -> Result<(Self, Vec<DuplicateRoute>), SyntaxError> {
        let mut by_raw: indexmap::IndexMap<String, RouteHandler> = indexmap::IndexMap::new();
        let mut duplicates = Vec::new();
        for (trigger, route) in routes {
            let Some(raw) = route else { continue };
            let handler = RouteHandler { trigger, based_route: sanitize_with_base("/", raw), raw_route: raw.to_string() };
            if let Some(old) = by_raw.insert(raw.to_string(), handler) {
                let route = if old.based_route.is_empty() { "/".into() } else { old.based_route };
                duplicates.push(DuplicateRoute { route, replaced: old.trigger, effective: trigger });
            }
        }
        let mut rf = routefinder::Router::new();
        for h in by_raw.into_values() {
            let spec = parse_route(&h.based_route)?;
            rf.add(spec, h).map_err(|e: std::convert::Infallible| SyntaxError(e.to_string()))?;
        }
        Ok((Self { rf }, duplicates))
    }

    /// The best route for `path`, or `None` (Spin answers an empty 404).
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let m = self.rf.best_match(path)?;
        let h = m.handler();
        let captures = m.captures();
        let named = captures.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let path_info = captures
            .wildcard()
            .map(|s| match (s.is_empty(), path.ends_with('/')) {
                (true, false) => s.to_string(),
                (true, true) => "/".to_string(),
                (false, false) => format!("/{s}"),
                (false, true) => format!("/{s}/"),
            })
            .unwrap_or_default();
        Some(RouteMatch { trigger: h.trigger, based_route: h.based_route.clone(), raw_route: h.raw_route.clone(), named, path_info })
    }

    /// Every route with its trigger, highest precedence first, for the start-up listing.
    pub fn routes(&self) -> Vec<(String, TriggerIndex)> {
        self.rf
            .iter()
            .map(|(_, h)| {
                let shown = match h.based_route.strip_suffix("/...") {
                    Some(p) => format!("{p} (wildcard)"),
                    None => h.based_route.clone(),
                };
                (shown, h.trigger)
            })
            .collect()
    }

    /// Whether some route lies under the host-reserved `/.well-known/spin/` prefix.
    pub fn contains_reserved_route(&self) -> bool {
        self.rf.iter().any(|(_, h)| h.based_route.starts_with(WELL_KNOWN_PREFIX))
    }
}

/// Paths under this prefix are answered by the host, never routed.
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&str]) -> Router {
        Router::build(routes.iter().enumerate().map(|(i, r)| (i, Some(*r)))).unwrap().0
    }

    fn hit(r: &Router, path: &str) -> Option<TriggerIndex> {
        r.route(path).map(|m| m.trigger)
    }

    #[test]
    fn precedence_table() {
        let r = router(&["/...", "/one/...", "/one/two/...", "/one/two/exact", "/users/:id", "/users/me", "/a/:x/c"]);
        let cases: &[(&str, Option<usize>)] = &[
            ("/", Some(0)),
            ("/zzz", Some(0)),
            ("/one", Some(1)),
            ("/one/x", Some(1)),
            ("/one/two", Some(2)),
            ("/one/two/three", Some(2)),
            ("/one/two/exact", Some(3)),
            ("/users/42", Some(4)),
            ("/users/me", Some(5)),
            ("/users/42/more", Some(0)),
            ("/a/b/c", Some(6)),
        ];
        for (path, want) in cases {
            assert_eq!(hit(&r, path), *want, "path {path}");
        }
    }

    #[test]
    fn exact_routes_do_not_match_below() {
        let r = router(&["/foo", "/foo/bar"]);
        assert_eq!(hit(&r, "/foo"), Some(0));
        assert_eq!(hit(&r, "/foo/bar"), Some(1));
        assert_eq!(hit(&r, "/foo/baz"), None);
        assert_eq!(hit(&r, "/"), None);
    }

    #[test]
    fn trailing_slash_and_relative_routes_are_sanitised() {
        let r = router(&["foo/", "/bar/..."]);
        assert_eq!(hit(&r, "/foo"), Some(0));
        let m = r.route("/bar").unwrap();
        assert_eq!(m.path_info, "");
        let m = r.route("/bar/").unwrap();
        assert_eq!(m.path_info, "/");
        let m = r.route("/bar/x/y").unwrap();
        assert_eq!(m.path_info, "/x/y");
        let m = r.route("/bar/x/y/").unwrap();
        assert_eq!(m.path_info, "/x/y/");
        assert_eq!(m.based_route, "/bar/...");
        assert_eq!(m.raw_route_or_prefix(), "/bar");
    }

    #[test]
    fn named_captures_are_reported() {
        let r = router(&["/todos/:id/items/:item"]);
        let m = r.route("/todos/7/items/abc").unwrap();
        assert_eq!(m.named, vec![("id".into(), "7".into()), ("item".into(), "abc".into())]);
        assert_eq!(m.path_info, "");
    }

    #[test]
    fn duplicate_routes_keep_the_last() {
        let (r, dups) = Router::build([(0, Some("/x")), (1, Some("/x")), (2, None)]).unwrap();
        assert_eq!(hit(&r, "/x"), Some(1));
        assert_eq!(dups, vec![DuplicateRoute { route: "/x".into(), replaced: 0, effective: 1 }]);
    }

    #[test]
    fn private_routes_are_not_routable() {
        let (r, _) = Router::build([(0, None)]).unwrap();
        assert_eq!(hit(&r, "/"), None);
    }

    #[test]
    fn root_wildcard_listing() {
        let r = router(&["/..."]);
        assert_eq!(r.routes(), vec![(" (wildcard)".to_string(), 0)]);
        assert!(!r.contains_reserved_route());
        assert!(router(&["/.well-known/spin/x"]).contains_reserved_route());
    }
}
