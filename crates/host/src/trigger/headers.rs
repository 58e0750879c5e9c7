//! The headers Spin adds to every request it hands a component: `spin-full-url`,
//! `spin-path-info`, `spin-matched-route`, `spin-base-path`, `spin-raw-component-route`,
//! `spin-component-route`, `spin-client-addr` and one `spin-path-match-<name>` per
//! `:name` capture. The request's own headers are kept (hop-by-hop ones are dropped
//! by wasi:http).

use std::net::SocketAddr;

use http::{HeaderName, HeaderValue};

use crate::routes::RouteMatch;

/// The `(name, value)` pairs Spin computes for a matched request.
pub fn spin_headers(scheme: &str, host: &str, path_and_query: &str, m: &RouteMatch, client: SocketAddr) -> Vec<(String, String)> {
    let mut out = vec![
        ("spin-path-info".to_string(), m.path_info.clone()),
        ("spin-full-url".to_string(), format!("{scheme}://{host}{path_and_query}")),
        ("spin-matched-route".to_string(), m.based_route.clone()),
        ("spin-base-path".to_string(), "/".to_string()),
        ("spin-raw-component-route".to_string(), m.raw_route.clone()),
        ("spin-component-route".to_string(), m.raw_route_or_prefix().to_string()),
        ("spin-client-addr".to_string(), client.to_string()),
    ];
    for (name, value) in &m.named {
        out.push((format!("spin-path-match-{}", name.to_ascii_lowercase().replace('_', "-")), value.clone()));
    }
    out
}

/// Appends Spin's headers to `headers`, skipping any that are not valid header text.
pub fn apply(headers: &mut http::HeaderMap, pairs: Vec<(String, String)>) {
    for (k, v) in pairs {
        if let (Ok(name), Ok(value)) = (k.parse::<HeaderName>(), HeaderValue::from_str(&v)) {
            headers.append(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Router;

    #[test]
    fn wildcard_route_headers_match_spin() {
        let (r, _) = Router::build([(0, Some("/foo/..."))]).unwrap();
        let m = r.route("/foo/bar").unwrap();
        let h = spin_headers("http", "fermyon.dev", "/foo/bar?key1=value1&key2=value2", &m, "127.0.0.1:8777".parse().unwrap());
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("spin-full-url"), Some("http://fermyon.dev/foo/bar?key1=value1&key2=value2"));
        assert_eq!(get("spin-path-info"), Some("/bar"));
        assert_eq!(get("spin-matched-route"), Some("/foo/..."));
        assert_eq!(get("spin-base-path"), Some("/"));
        assert_eq!(get("spin-raw-component-route"), Some("/foo/..."));
        assert_eq!(get("spin-component-route"), Some("/foo"));
        assert_eq!(get("spin-client-addr"), Some("127.0.0.1:8777"));
    }

    #[test]
    fn named_captures_become_path_match_headers() {
        let (r, _) = Router::build([(0, Some("/todos/:todo_id"))]).unwrap();
        let m = r.route("/todos/42").unwrap();
        let h = spin_headers("http", "h", "/todos/42", &m, "127.0.0.1:1".parse().unwrap());
        assert!(h.contains(&("spin-path-match-todo-id".to_string(), "42".to_string())));
        assert!(h.contains(&("spin-path-info".to_string(), String::new())));
    }
}
