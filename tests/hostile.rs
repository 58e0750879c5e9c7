//! Hostile input (#11): 2,000 requests against the sidecar's API and the Todo app served
//! by `up` — the fixed cases that once panicked or were taken whole, and seeded random
//! methods, paths, query metadata, content types, Host headers and bodies (proptest
//! strategies, drawn from a fixed seed, so a failure reproduces). Each is written on a
//! raw socket, so nothing is cleaned up on the way. Every one must get an HTTP answer; no
//! 5xx but daprd's own error JSON from the sidecar and none at all from the app; no
//! panic in the logs; and both still serve the Todo flow afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const WAIT: Duration = Duration::from_secs(30);
const SEED: [u8; 32] = *b"spindapr-hostile-input-seed-0001";

#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn new(method: &str, target: &str, ct: &str, body: impl Into<Vec<u8>>) -> Self {
        Req {
            method: method.into(),
            target: target.into(),
            headers: vec![("content-type".into(), ct.as_bytes().to_vec())],
            body: body.into(),
        }
    }
}

/// Writes the request as is and reads the status line and body of the answer.
fn raw(addr: &str, host: &[u8], r: &Req) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", r.method, r.target).as_bytes());
    out.extend_from_slice(b"host: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\nconnection: close\r\n");
    for (k, v) in &r.headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", r.body.len()).as_bytes());
    out.extend_from_slice(&r.body);
    // The server may answer (413, 400) before reading everything: a failed write is fine.
    let _ = s.write_all(&out);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn hostile_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("99999999999999".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1e400".to_string()),
        Just("".to_string()),
        Just("NaN".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[ -~]{0,12}",
    ]
}

fn metadata_query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("ttlInSeconds"),
        Just("ttl"),
        Just("rawPayload"),
        Just("contentType"),
        Just("cloudevent.id"),
        Just("cloudevent.traceparent"),
        Just("partitionKey"),
        Just("x"),
    ];
    proptest::collection::vec((key, hostile_number()), 0..4)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| format!("metadata.{k}={}", pct(&v))).collect::<Vec<_>>().join("&"))
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        hostile_number().prop_map(serde_json::Value::from),
        "\\PC{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("key".to_string()),
                    Just("value".to_string()),
                    Just("etag".to_string()),
                    Just("metadata".to_string()),
                    Just("operations".to_string()),
                    Just("operation".to_string()),
                    Just("request".to_string()),
                    Just("keys".to_string()),
                    Just("title".to_string()),
                    Just("completed".to_string()),
                    Just("ttlInSeconds".to_string()),
                    Just("options".to_string()),
                    Just("concurrency".to_string()),
                    Just("entries".to_string()),
                    Just("entryId".to_string()),
                    Just("event".to_string()),
                    Just("contentType".to_string()),
                    Just("id".to_string()),
                    Just("type".to_string()),
                    Just("data".to_string()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => Just(Vec::new()),
        1 => Just(b"{\"truncated\": [1, 2".to_vec()),
    ]
}

/// Bodies shaped like what the app reads: a todo, or a CloudEvent for its subscriber.
fn app_body() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![3 => "\\PC{0,300}".prop_map(serde_json::Value::from), 1 => json_value()];
    let todo = (text.clone(), proptest::option::of(json_value())).prop_map(|(title, completed)| {
        let mut t = serde_json::json!({ "title": title });
        if let Some(c) = completed {
            t["completed"] = c;
        }
        t.to_string().into_bytes()
    });
    let event =
        ("\\PC{0,60}", prop_oneof![Just("todo.created".to_string()), Just("todo.deleted".to_string()), "\\PC{0,12}"], text, "\\PC{0,300}")
            .prop_map(|(id, ty, title, todo_id)| {
                serde_json::json!({"id": id, "type": ty, "specversion": "1.0", "source": "todo-api", "datacontenttype": "application/json",
                "data": {"id": todo_id, "title": title, "completed": false}})
                .to_string()
                .into_bytes()
            });
    prop_oneof![3 => todo, 2 => event, 2 => body()]
}

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("application/json".to_string()),
        Just("application/cloudevents+json".to_string()),
        Just("text/plain".to_string()),
        Just("application/octet-stream".to_string()),
        Just("application/vnd+json; charset=utf-8".to_string()),
        Just("".to_string()),
        "[ -~]{0,30}",
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("POST".to_string()),
        2 => Just("GET".to_string()),
        1 => Just("PUT".to_string()),
        1 => Just("DELETE".to_string()),
        1 => Just("PATCH".to_string()),
        1 => Just("OPTIONS".to_string()),
        1 => "[A-Z]{1,10}",
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("pubsub".to_string()),
        Just("statestore".to_string()),
        Just("activitystore".to_string()),
        Just("todos".to_string()),
        Just("..".to_string()),
        Just("%00".to_string()),
        Just("%ZZ".to_string()),
        "\\PC{0,20}".prop_map(|s| pct(&s)),
    ]
}

fn sidecar_req() -> impl Strategy<Value = Req> {
    let path = prop_oneof![
        (segment(), segment()).prop_map(|(p, t)| format!("/v1.0/publish/{p}/{t}")),
        (segment(), segment()).prop_map(|(p, t)| format!("/v1.0-alpha1/publish/bulk/{p}/{t}")),
        segment().prop_map(|s| format!("/v1.0/state/{s}")),
        (segment(), segment()).prop_map(|(s, k)| format!("/v1.0/state/{s}/{k}")),
        segment().prop_map(|s| format!("/v1.0/state/{s}/bulk")),
        segment().prop_map(|s| format!("/v1.0/state/{s}/transaction")),
        Just("/v1.0/metadata".to_string()),
        Just("/v1.0/healthz".to_string()),
        proptest::collection::vec(segment(), 0..5).prop_map(|s| format!("/{}", s.join("/"))),
    ];
    (method(), path, metadata_query(), content_type(), body()).prop_map(|(m, p, q, ct, b)| {
        let target = if q.is_empty() { p } else { format!("{p}?{q}") };
        Req::new(&m, &target, &ct, b)
    })
}

fn app_req() -> impl Strategy<Value = Req> {
    let path = prop_oneof![
        4 => Just("/todos".to_string()),
        2 => segment().prop_map(|s| format!("/todos/{s}")),
        2 => (hostile_number(), segment()).prop_map(|(l, c)| format!("/todos?limit={}&cursor={c}&completed={c}", pct(&l))),
        1 => Just("/activity".to_string()),
        2 => Just("/events/todo".to_string()),
        1 => Just("/events/dead-letter".to_string()),
        1 => Just("/dapr/subscribe".to_string()),
        1 => proptest::collection::vec(segment(), 0..4).prop_map(|s| format!("/{}", s.join("/"))),
    ];
    (method(), path, content_type(), app_body()).prop_map(|(m, p, ct, b)| Req::new(&m, &p, &ct, b))
}

fn host_header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => Just(b"localhost".to_vec()),
        1 => Just(b"bad host!!".to_vec()),
        1 => Just(b"".to_vec()),
        1 => Just(b"[::1".to_vec()),
        1 => proptest::collection::vec(any::<u8>().prop_filter("no line breaks", |b| *b != b'\r' && *b != b'\n'), 0..20),
    ]
}

/// The fixed cases: what panicked or was read whole before, and daprd's body limit.
fn fixed_sidecar_cases() -> Vec<(Req, Option<u16>)> {
    let big = vec![b'x'; 10 << 20];
    vec![
        (Req::new("POST", "/v1.0/publish/pubsub/t?metadata.ttlInSeconds=99999999999999", "application/json", "{}"), Some(204)),
        (
            Req::new(
                "POST",
                "/v1.0/state/statestore",
                "application/json",
                r#"[{"key":"k","value":1,"metadata":{"ttlInSeconds":"9223372036854775807"}}]"#,
            ),
            Some(204),
        ),
        (
            Req::new(
                "POST",
                "/v1.0/state/statestore",
                "application/json",
                r#"[{"key":"k","value":1,"metadata":{"ttlInSeconds":"-9223372036854775808"}}]"#,
            ),
            Some(204),
        ),
        // daprd reads at most --max-body-size (4Mi): its limited reader fails the publish.
        (Req::new("POST", "/v1.0/publish/pubsub/t", "application/octet-stream", big.clone()), Some(500)),
        (Req::new("POST", "/v1.0/state/statestore", "application/json", big), Some(400)),
    ]
}

struct Tally {
    sent: usize,
    failures: Vec<String>,
    /// (sidecar?, status) → count, to show the requests reached real handlers.
    seen: std::collections::BTreeMap<(bool, u16), usize>,
}

impl Tally {
    fn check(&mut self, what: &str, r: &Req, got: Result<(u16, String), String>, sidecar: bool, want: Option<u16>) {
        self.sent += 1;
        let shown = || format!("{what}: {} {} ({} body bytes)", r.method, r.target, r.body.len());
        match got {
            Err(e) => self.failures.push(format!("{}: {e}", shown())),
            Ok((status, body)) => {
                *self.seen.entry((sidecar, status)).or_default() += 1;
                if let Some(w) = want
                    && w != status
                {
                    self.failures.push(format!("{}: {status}, expected {w}: {body}", shown()));
                }
                if status >= 500 {
                    let daprd_error = sidecar && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["errorCode"].is_string());
                    if !daprd_error {
                        self.failures.push(format!("{}: {status} {body}", shown()));
                    }
                }
            }
        }
    }
}

#[test]
fn two_thousand_hostile_requests_get_answers_and_break_nothing() {
    guest_wasm("todo-api");
    let root = repo_root();
    let dapr_port = free_port();
    let host = HostBuilder::new(&root.join("spin.toml"))
        .args(["--dapr-http-port", &dapr_port.to_string()])
        .arg("--variable")
        .arg(format!("dapr_url=http://127.0.0.1:{dapr_port}"))
        .arg("--resources-path")
        .arg(root.join("runtime-config/dapr"))
        .start();
    wait_healthy(&host, WAIT);
    let app_addr = host.url("/").trim_start_matches("http://").trim_end_matches('/').to_string();
    let dapr_addr = format!("127.0.0.1:{dapr_port}");
    let mut tally = Tally { sent: 0, failures: Vec::new(), seen: Default::default() };

    for (r, want) in fixed_sidecar_cases() {
        let got = raw(&dapr_addr, b"localhost", &r);
        tally.check("fixed", &r, got, true, want);
    }
    // A body far over the app's own limit: refused, not a trap.
    let r = Req::new("POST", "/todos", "application/json", vec![b' '; 10 << 20]);
    let got = raw(&app_addr, b"localhost", &r);
    tally.check("app body", &r, got, false, Some(413));
    // The Host header only the app reads: never a 500.
    for h in [&b"bad host!!"[..], b"[::1", b"a b", b"\xff\xfe", b""] {
        let r = Req::new("GET", "/todos", "application/json", "");
        let got = raw(&app_addr, h, &r);
        tally.check("host header", &r, got, false, None);
    }

    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    let (sidecar, app, hosts) = (sidecar_req(), app_req(), host_header());
    while tally.sent < 2000 {
        let r = sidecar.new_tree(&mut runner).unwrap().current();
        let got = raw(&dapr_addr, b"localhost", &r);
        tally.check("sidecar", &r, got, true, None);
        let r = app.new_tree(&mut runner).unwrap().current();
        let h = hosts.new_tree(&mut runner).unwrap().current();
        let got = raw(&app_addr, &h, &r);
        tally.check("app", &r, got, false, None);
    }
    assert!(tally.failures.is_empty(), "{} of {} requests failed:\n{}", tally.failures.len(), tally.sent, tally.failures.join("\n"));
    eprintln!("answers (sidecar?, status) → count: {:?}", tally.seen);
    // The generators reach the handlers, not only the router's 404: publishes and state
    // writes succeed, bad input is refused, todos are created.
    for (sidecar, status) in [(true, 204), (true, 400), (true, 404), (false, 201), (false, 400), (false, 404)] {
        assert!(tally.seen.get(&(sidecar, status)).is_some_and(|n| *n >= 5), "too few {status} answers: {:?}", tally.seen);
    }

    // Both healthy, and the Todo flow works end to end.
    assert_eq!(get(&host.dapr_url("/v1.0/healthz")).status, 204);
    let a = send("POST", &host.url("/todos"), &[("content-type", "application/json")], r#"{"title":"after the storm"}"#);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json()["id"].as_str().unwrap().to_string();
    assert_eq!(get(&host.url(&format!("/todos/{id}"))).status, 200);
    let start = std::time::Instant::now();
    while !get(&host.url("/activity")).body.contains(&id) {
        assert!(start.elapsed() < WAIT, "the event never reached the subscriber:\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = host.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}
