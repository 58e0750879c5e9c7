//! `allowed_outbound_hosts` with Spin's syntax: `scheme://host[:port]`, where scheme is
//! `*` or one name; host is `*`, `*.domain`, a literal, an IP CIDR, `self`, or a
//! `*.spin.internal` / `<id>.spin.internal` chaining target; port is omitted (the
//! scheme's default), `*`, a number or an end-exclusive range `a..b`.

use std::ops::Range;

use url::Host;

/// An `allowed_outbound_hosts` entry that is not in Spin's syntax; the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AllowedHostError(String);

macro_rules! bail {
    ($($t:tt)*) => { return Err(AllowedHostError(format!($($t)*))) };
}

macro_rules! ensure {
    ($c:expr, $($t:tt)*) => { if !$c { bail!($($t)*) } };
}

/// Adds what was being parsed in front of a cause, as "context: cause".
trait Context<T> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, AllowedHostError>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, AllowedHostError> {
        self.map_err(|e| AllowedHostError(format!("{}: {e}", what())))
    }
}

impl<T> Context<T> for Option<T> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, AllowedHostError> {
        self.ok_or_else(|| AllowedHostError(what()))
    }
}

/// The host suffix of service-chaining targets (`<component-id>.spin.internal`).
pub const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    original: String,
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    AnySubdomain(String),
    ToSelf,
    Literal(Host),
    Cidr(ipnet::IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Port(u16),
    Range(Range<u16>),
}

const FORMAT_HINT: &str =
    "hosts must be in the form <scheme>://<host>[:<port>], with '*' wildcards allowed for each (use '*://*:*' to allow everything)";

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    /// Parses one entry written as `scheme://host[:port]`.
    pub fn parse(entry: &str) -> Result<Self, AllowedHostError> {
        let url = entry.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            if matches!(url, "*" | ":" | "" | "?") {
                bail!("{url:?} is not an allowed outbound host format: {FORMAT_HINT}");
            }
            bail!("{url:?} does not contain a scheme (e.g. 'http://' or '*://'): {FORMAT_HINT}");
        };
        let (host, rest) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match rest.split_once('/') {
            Some((port, path)) => {
                ensure!(path.is_empty(), "{url:?} has a path but is not allowed to");
                port
            }
            None => rest,
        };
        let port = parse_port(port, scheme).with_context(|| format!("invalid allowed host port {port:?}"))?;
        let scheme = parse_scheme(scheme).with_context(|| format!("invalid allowed host scheme {scheme:?}"))?;
        let host = parse_host(host).with_context(|| format!("invalid allowed host {host:?}"))?;
        Ok(Self { original: entry.to_string(), scheme, host, port })
    }

    /// Does this entry allow a request to `scheme://host[:port]`?
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.scheme.as_deref().is_none_or(|s| s == scheme) && self.host_allows(host) && self.port_allows(port, scheme)
    }

    /// Does this entry allow a request to the app itself (a relative URL)?
    pub fn allows_self(&self, schemes: &[&str]) -> bool {
        schemes.iter().any(|s| self.scheme.as_deref().is_none_or(|x| x == *s))
            && matches!(self.host, HostPattern::Any | HostPattern::ToSelf)
    }

    fn host_allows(&self, host: &str) -> bool {
        let Ok(host) = Host::parse(host) else {
            return false;
        };
        match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::AnySubdomain(suffix), Host::Domain(d)) => d.ends_with(suffix.as_str()),
            (HostPattern::Literal(l), h) => h == *l,
            (HostPattern::Cidr(c), Host::Ipv4(ip)) => c.contains(&std::net::IpAddr::V4(ip)),
            (HostPattern::Cidr(c), Host::Ipv6(ip)) => c.contains(&std::net::IpAddr::V6(ip)),
            _ => false,
        }
    }

    fn port_allows(&self, port: Option<u16>, scheme: &str) -> bool {
        let Some(port) = port.or_else(|| well_known_port(scheme)) else {
            return matches!(self.port, PortPattern::Any);
        };
        match &self.port {
            PortPattern::Any => true,
            PortPattern::Port(p) => *p == port,
            PortPattern::Range(r) => r.contains(&port),
        }
    }

    /// `*.spin.internal` stands for every component of the app: Spin expands it so.
    fn expand_chaining(self, component_ids: &[String]) -> Vec<Self> {
        match &self.host {
            HostPattern::AnySubdomain(s) if s == SERVICE_CHAINING_SUFFIX => component_ids
                .iter()
                .map(|id| {
                    let mut h = self.clone();
                    h.host = HostPattern::Literal(Host::Domain(format!("{id}{SERVICE_CHAINING_SUFFIX}")));
                    h
                })
                .collect(),
            _ => vec![self],
        }
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.original)
    }
}

fn parse_scheme(s: &str) -> Result<Option<String>, AllowedHostError> {
    if s == "*" {
        return Ok(None);
    }
    ensure!(!s.starts_with('{'), "scheme lists are not supported");
    ensure!(!s.is_empty() && s.chars().all(char::is_alphabetic), "only alphabetic characters are allowed");
    Ok(Some(s.to_string()))
}

fn parse_host(host: &str) -> Result<HostPattern, AllowedHostError> {
    let host = host.trim();
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if host == "self" || host == "self.alt" {
        return Ok(HostPattern::ToSelf);
    }
    if host.starts_with('{') {
        bail!("host lists are not yet supported");
    }
    if let Ok(net) = host.parse::<ipnet::IpNet>() {
        return Ok(HostPattern::Cidr(net.trunc()));
    }
    let host = host.trim_end_matches('/');
    ensure!(!host.contains('/'), "must not include a path");
    if let Some(domain) = host.strip_prefix("*.") {
        ensure!(!domain.contains('*'), "wildcards are allowed only as prefixes");
        return Ok(HostPattern::AnySubdomain(format!(".{domain}")));
    }
    ensure!(!host.contains('*'), "wildcards are allowed only as subdomains");
    Ok(HostPattern::Literal(Host::parse(host).map_err(|e| AllowedHostError(e.to_string()))?))
}

fn parse_port(port: &str, scheme: &str) -> Result<PortPattern, AllowedHostError> {
    if port.is_empty() {
        return well_known_port(scheme)
            .map(PortPattern::Port)
            .with_context(|| format!("no port was provided and the scheme {scheme:?} does not have a known default port number"));
    }
    if port == "*" {
        return Ok(PortPattern::Any);
    }
    ensure!(!port.starts_with('{'), "port lists are not yet supported");
    if let Some((start, end)) = port.split_once("..") {
        let start = start.parse().with_context(|| format!("port range {port:?} contains non-number"))?;
        let end = end.parse().with_context(|| format!("port range {port:?} contains non-number"))?;
        return Ok(PortPattern::Range(start..end));
    }
    Ok(PortPattern::Port(port.parse().with_context(|| format!("port {port:?} is not a number"))?))
}

/// A component's resolved allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    hosts: Vec<AllowedHost>,
}

impl AllowList {
    /// Parses resolved entries (templates already rendered).
    pub fn parse(entries: &[String], component_ids: &[String]) -> Result<Self, AllowedHostError> {
        ensure!(
            !(entries.len() == 1 && entries[0] == "insecure:allow-all"),
            "'insecure:allow-all' is not allowed - use '*://*:*' instead if you really want to allow all outbound traffic"
        );
        let mut hosts = Vec::new();
        for e in entries {
            ensure!(!e.trim().is_empty(), "an allowed_outbound_hosts entry resolved to an empty string; give the variable it uses a value");
            hosts.extend(AllowedHost::parse(e)?.expand_chaining(component_ids));
        }
        Ok(Self { hosts })
    }

    /// Whether some entry allows a request to `scheme://host[:port]`.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.hosts.iter().any(|h| h.allows(scheme, host, port))
    }

    /// Whether some entry allows HTTP(S) requests to the app itself (`self`).
    pub fn allows_self(&self) -> bool {
        self.hosts.iter().any(|h| h.allows_self(&["http", "https"]))
    }
}

/// The component id of a `<id>.spin.internal` host.
pub fn chaining_target(host: &str) -> Option<&str> {
    host.strip_suffix(SERVICE_CHAINING_SUFFIX).filter(|id| !id.is_empty() && !id.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entry: &str, scheme: &str, host: &str, port: Option<u16>) -> bool {
        AllowedHost::parse(entry).unwrap().allows(scheme, host, port)
    }

    #[test]
    fn allow_and_deny_table() {
        let cases: &[(&str, &str, &str, Option<u16>, bool)] = &[
            ("http://127.0.0.1:3500", "http", "127.0.0.1", Some(3500), true),
            ("http://127.0.0.1:3500", "http", "127.0.0.1", Some(3501), false),
            ("http://127.0.0.1:3500", "https", "127.0.0.1", Some(3500), false),
            ("http://localhost:3500", "http", "127.0.0.1", Some(3500), false),
            ("https://example.com", "https", "example.com", None, true),
            ("https://example.com", "https", "example.com", Some(443), true),
            ("https://example.com", "https", "example.com", Some(8443), false),
            ("http://example.com", "http", "example.com", None, true),
            ("*://example.com:*", "ftp", "example.com", Some(21), true),
            ("https://*.example.com", "https", "api.example.com", None, true),
            ("https://*.example.com", "https", "example.com", None, false),
            ("http://*:8080", "http", "anything.test", Some(8080), true),
            ("http://10.0.0.0/8:*", "http", "10.1.2.3", Some(9), true),
            ("http://10.0.0.0/8:*", "http", "11.1.2.3", Some(9), false),
            ("http://10.0.0.0/8:*", "http", "ten.test", Some(9), false),
            ("http://[::1]:80", "http", "[::1]", Some(80), true),
            ("http://127.0.0.1:3000..3010", "http", "127.0.0.1", Some(3009), true),
            ("http://127.0.0.1:3000..3010", "http", "127.0.0.1", Some(3010), false),
            ("redis://cache", "redis", "cache", Some(6379), true),
            ("*://*:*", "http", "x.y", Some(1), true),
        ];
        for (entry, scheme, host, port, want) in cases {
            assert_eq!(allows(entry, scheme, host, *port), *want, "{entry} vs {scheme}://{host}:{port:?}");
        }
    }

    #[test]
    fn bad_entries_are_rejected_with_reasons() {
        for bad in
            ["*", "example.com", "http://example.com/path", "ht1p://x", "http://a.*.com", "http://x:abc", "{http,https}://x", "foo://x"]
        {
            assert!(AllowedHost::parse(bad).is_err(), "{bad} should be rejected");
        }
        let e = AllowedHost::parse("example.com").unwrap_err();
        assert!(format!("{e:#}").contains("does not contain a scheme"));
    }

    #[test]
    fn self_and_chaining() {
        let l = AllowList::parse(&["http://self".into()], &[]).unwrap();
        assert!(l.allows_self());
        assert!(!l.allows("http", "self", None) || l.allows_self());
        let l = AllowList::parse(&["http://*.spin.internal".into()], &["a".into(), "b-c".into()]).unwrap();
        assert!(l.allows("http", "a.spin.internal", None));
        assert!(l.allows("http", "b-c.spin.internal", None));
        assert!(!l.allows("http", "zzz.spin.internal", None));
        assert!(!l.allows_self());
        let l = AllowList::parse(&["http://a.spin.internal".into()], &["a".into(), "b".into()]).unwrap();
        assert!(l.allows("http", "a.spin.internal", None));
        assert!(!l.allows("http", "b.spin.internal", None));
        assert_eq!(chaining_target("todo-api.spin.internal"), Some("todo-api"));
        assert_eq!(chaining_target("spin.internal"), None);
        assert!(AllowList::parse(&["".into()], &[]).is_err());
        assert!(AllowList::parse(&["insecure:allow-all".into()], &[]).is_err());
    }
}
