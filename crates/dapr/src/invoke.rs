//! Service invocation over HTTP as daprd serves it for its own app (pkg/api/http/
//! directmessaging.go, pkg/messaging/direct_messaging.go, pkg/channel/http): the target
//! from `dapr-app-id`, Basic auth `dapr-app-id:<id>` or `/v1.0/invoke/{id}/method/…`,
//! the method normalised, the request forwarded without hop-by-hop headers under the
//! app's Resiliency policy, and the app's answer passed back (statuses outside 200–399
//! after `matching` retries). This sidecar knows no other app: any other id is not found,
//! as daprd's name resolver answers.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use http_body_util::Full;

use crate::Sidecar;
use crate::app_channel::{HOP_BY_HOP, forwarded_header_name};
use crate::errors::ApiError;
use crate::resiliency::Failure;

type Resp = Response<Full<Bytes>>;

/// Where an invocation goes: the app id as written and the method (path) on it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub id: String,
    pub method: String,
}

/// Go's `path.Clean`.
pub(crate) fn go_path_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// daprd's findTargetIDAndMethod over the decoded path: the `dapr-app-id` header (the
/// whole path is the method), Basic auth with user `dapr-app-id`, then the URL form.
pub(crate) fn find_target(decoded_path: &str, headers: &HeaderMap) -> Option<Target> {
    let whole_path = || go_path_clean(decoded_path).trim_start_matches('/').to_string();
    if let Some(id) = headers.get("dapr-app-id").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()) {
        return Some(Target { id: id.to_string(), method: whole_path() });
    }
    if let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(b64) = auth.strip_prefix("Basic ")
    {
        use base64::Engine as _;
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim())
            && let Ok(text) = String::from_utf8(decoded)
            && let Some((user, id)) = text.split_once(':')
            && user.eq_ignore_ascii_case("dapr-app-id")
            && !id.is_empty()
        {
            return Some(Target { id: id.to_string(), method: whole_path() });
        }
    }
    // `/v1.0/invoke/<id>/method/<method…>`, empty segments skipped before the id.
    let rest = decoded_path.trim_start_matches('/');
    let rest = rest.strip_prefix("v1.0/")?.trim_start_matches('/');
    let rest = rest.strip_prefix("invoke/")?.trim_start_matches('/');
    let at = rest.find("/method/")?;
    let id = percent_encoding::percent_decode_str(&rest[..at]).decode_utf8_lossy().into_owned();
    if id.is_empty() {
        return None;
    }
    let method = go_path_clean(&rest[at + "/method/".len()..]);
    Some(Target { id, method: if method == "." { String::new() } else { method } })
}

/// daprd's NormalizeMethod: control bytes, `#` and `?` refused; the path cleaned with
/// no way above its root.
pub(crate) fn normalize_method(m: &str) -> Result<String, String> {
    if m.bytes().any(|b| b == b'#' || b == b'?' || b < 0x20 || b == 0x7f) {
        return Err(format!(
            "rpc error: code = InvalidArgument desc = invalid method: method contains forbidden character: {}",
            crate::go_compat::go_quote(m)
        ));
    }
    let mut cleaned = go_path_clean(m);
    while let Some(rest) = cleaned.strip_prefix("../") {
        cleaned = rest.to_string();
    }
    Ok(match cleaned.as_str() {
        ".." | "." => String::new(),
        _ => cleaned,
    })
}

/// The path as Go's URL.EscapedPath writes it for the request to the app.
fn escape_path(p: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/')
        .remove(b'!')
        .remove(b'$')
        .remove(b'&')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')')
        .remove(b'*')
        .remove(b'+')
        .remove(b',')
        .remove(b';')
        .remove(b'=')
        .remove(b':')
        .remove(b'@')
        .remove(b'[')
        .remove(b']');
    percent_encoding::utf8_percent_encode(p, KEEP).to_string()
}

/// The caller's headers as daprd forwards them to its app.
fn forwarded_headers(headers: &HeaderMap, api_token_on: bool) -> HeaderMap {
    let named_in_connection: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        let name = k.as_str();
        if named_in_connection.iter().any(|n| n == name)
            || matches!(name, "dapr-app-id" | "host" | "content-length")
            || (api_token_on && name == "dapr-api-token")
        {
            continue;
        }
        match forwarded_header_name(name) {
            None => {}
            Some(std::borrow::Cow::Borrowed(_)) => {
                out.append(k.clone(), v.clone());
            }
            Some(std::borrow::Cow::Owned(renamed)) => {
                if let Ok(renamed) = http::HeaderName::from_bytes(renamed.as_bytes()) {
                    out.append(renamed, v.clone());
                }
            }
        }
    }
    out
}

impl Sidecar {
    /// Serves an invocation: `parts`/`body` are the request to the sidecar.
    pub(crate) async fn invoke(self: &Arc<Self>, parts: &http::request::Parts, body: Bytes) -> Resp {
        let decoded = percent_encoding::percent_decode_str(parts.uri.path()).decode_utf8_lossy().into_owned();
        let Some(target) = find_target(&decoded, &parts.headers) else {
            return error(ApiError::direct_invoke_no_app_id());
        };
        let failed = |err: String| error(ApiError::direct_invoke(&target.id, err));
        let method = match normalize_method(&target.method) {
            Ok(m) => m,
            Err(e) => return failed(e),
        };
        // `id` or `id.namespace`; the app itself is the only one this sidecar can reach.
        let parts_of_id: Vec<&str> = target.id.split('.').collect();
        let own_ns = std::env::var("NAMESPACE").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        let (id, ns) = match parts_of_id.as_slice() {
            [id] => (*id, own_ns.as_str()),
            [id, ns] => (*id, *ns),
            _ => return failed(format!("invalid app id {}", target.id)),
        };
        if id != self.cfg.app_id || ns != own_ns {
            return failed(format!("couldn't find service: {id}"));
        }
        let Some(app) = self.app.clone() else {
            return failed("cannot invoke local endpoint: app channel not initialized".into());
        };
        let verb = match parts.method.as_str().to_ascii_uppercase().as_str() {
            "CONNECT" => return failed("rpc error: code = InvalidArgument desc = invalid HTTP verb".into()),
            v @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "OPTIONS" | "TRACE" | "PATCH") => {
                Method::from_bytes(v.as_bytes()).unwrap_or(Method::POST)
            }
            // A verb outside daprd's proto enum is sent as POST.
            _ => Method::POST,
        };
        let mut path_and_query = format!("/{}", escape_path(&method));
        if let Some(q) = parts.uri.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let headers = forwarded_headers(&parts.headers, self.cfg.api_token.is_some());
        let policy = self.resiliency.app(&target.id, &method);
        let url = format!("http://127.0.0.1:{}{path_and_query}", self.cfg.app_port.unwrap_or_default());
        // A status outside 200–399 is daprd's CodeError: retried as `matching` says; in the
        // end the caller gets the app's last answer.
        let last_answer = std::sync::Mutex::new(None);
        let run = policy
            .run(|_| async {
                match app.invoke(verb.clone(), &path_and_query, &headers, body.clone()).await {
                    Ok(resp) if (200..400).contains(&resp.status().as_u16()) => Ok(resp),
                    Ok(resp) => {
                        let code = u32::from(resp.status().as_u16());
                        if let Ok(mut last) = last_answer.lock() {
                            *last = Some(resp);
                        }
                        Err(Failure::Code(code, format!("received non-successful status code: {code}")))
                    }
                    Err(e) => {
                        if let Ok(mut last) = last_answer.lock() {
                            *last = None;
                        }
                        Err(Failure::Other(format!("{} \"{url}\": {e}", go_verb(&verb))))
                    }
                }
            })
            .await;
        match run {
            Ok(resp) => pass_back(resp, false),
            Err(crate::resiliency::RunError::Failed(e)) => match last_answer.into_inner().ok().flatten() {
                Some(resp) => pass_back(resp, true),
                None => failed(e),
            },
            Err(e) => failed(e.to_string()),
        }
    }
}

/// Go's url.Error op for the verb: `Get`, `Post`, ….
fn go_verb(m: &Method) -> String {
    let s = m.as_str().to_ascii_lowercase();
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// The app's answer as the caller gets it: status, headers (not hop-by-hop) and body;
/// an error status without a content type is labelled JSON, as daprd does.
fn pass_back(resp: Response<Bytes>, is_error: bool) -> Resp {
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(Full::new(body));
    *out.status_mut() = parts.status;
    for (k, v) in &parts.headers {
        if HOP_BY_HOP.contains(&k.as_str()) || k == http::header::CONTENT_LENGTH || k.as_str().ends_with("-bin") {
            continue;
        }
        out.headers_mut().append(k.clone(), v.clone());
    }
    if is_error && !out.headers().contains_key(http::header::CONTENT_TYPE) {
        out.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    }
    out
}

fn error(e: ApiError) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(&e.body()).unwrap_or_default())));
    *r.status_mut() = e.status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_bytes(k.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn targets_are_found_as_daprd_finds_them() {
        let t = |p: &str, hs: &[(&str, &str)]| find_target(p, &h(hs));
        assert_eq!(t("/v1.0/invoke/me/method/a/b", &[]), Some(Target { id: "me".into(), method: "a/b".into() }));
        assert_eq!(t("/v1.0/invoke/me/method/admin/../public", &[]).unwrap().method, "public");
        assert_eq!(t("/foo/bar", &[("dapr-app-id", "me")]), Some(Target { id: "me".into(), method: "foo/bar".into() }));
        // The header wins over the URL form, whose path is then the whole method.
        assert_eq!(t("/v1.0/invoke/x/method/y", &[("dapr-app-id", "me")]).unwrap().method, "v1.0/invoke/x/method/y");
        // Basic auth `dapr-app-id:me` ("ZGFwci1hcHAtaWQ6bWU=").
        assert_eq!(t("/p", &[("authorization", "Basic ZGFwci1hcHAtaWQ6bWU=")]).unwrap().id, "me");
        assert_eq!(t("/v1.0/invoke/me", &[]), None);
        assert_eq!(t("/v1.0/invoke//method/x", &[]), None);
        assert_eq!(t("/v1.0/metadata", &[]), None);
    }

    #[test]
    fn methods_are_normalised() {
        assert_eq!(normalize_method("a/./b//c").unwrap(), "a/b/c");
        assert_eq!(normalize_method("../../etc").unwrap(), "etc");
        assert_eq!(normalize_method("..").unwrap(), "");
        assert!(normalize_method("a?b").is_err());
        assert!(normalize_method("a#b").is_err());
        assert!(normalize_method("a\u{1}b").is_err());
        assert_eq!(go_path_clean("/a/b/../../.."), "/");
        assert_eq!(escape_path("a b/\"q\"/ok!$&'()*+,;=:@"), "a%20b/%22q%22/ok!$&'()*+,;=:@");
    }

    #[test]
    fn forwarded_headers_drop_hop_by_hop_and_ids() {
        let out = forwarded_headers(
            &h(&[
                ("foo", "bar"),
                ("connection", "keep-alive, x-drop"),
                ("keep-alive", "5"),
                ("x-drop", "1"),
                ("proxy-authorization", "x"),
                ("dapr-app-id", "me"),
                ("grpc-timeout", "1S"),
                ("trace-bin", "AA=="),
                ("dapr-api-token", "secret"),
            ]),
            true,
        );
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["foo", "dapr-grpc-timeout"]);
    }
}
