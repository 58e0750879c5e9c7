//! The Dapr-compatible sidecar, driven over HTTP with a scripted test app.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::app::TestApp;
use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn resources(files: &[(&str, &str)]) -> tempfile::TempDir {
    app_dir(files)
}

const PUBSUB: &str =
    "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n";
const STATE_WITH_OUTBOX: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n  metadata:\n  - name: outboxPublishPubsub\n    value: pubsub\n  - name: outboxPublishTopic\n    value: outbox\n";

fn resiliency(policy: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      inbound:\n{policy}\n  targets:\n    components:\n      pubsub:\n        inbound:\n          retry: inbound\n"
    )
}

fn start_sidecar(app: &TestApp, res: &tempfile::TempDir) -> Host {
    sidecar_for("todo", app.port, res.path(), None, WAIT)
}

fn publish(host: &Host, path: &str, content_type: &str, body: &str) -> Answer {
    send("POST", &host.url(path), &[("content-type", content_type)], body)
}

#[test]
fn envelope_fields_and_content_types() {
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}])));
    let res = resources(&[("pubsub.yaml", PUBSUB)]);
    let host = start_sidecar(&app, &res);

    let a = send(
        "POST",
        &host.url("/v1.0/publish/pubsub/orders?metadata.custom=yes"),
        &[("content-type", "application/json"), ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
        r#"{"id":7,"note":"<b>&"}"#,
    );
    assert_eq!((a.status, a.body.as_str()), (204, ""));
    let got = app.wait_calls("/orders", 1, WAIT);
    let r = &got[0];
    assert_eq!(r.header("content-type"), Some("application/cloudevents+json"));
    assert_eq!(r.header("pubsubname"), Some("pubsub"));
    assert_eq!(r.header("custom"), Some("yes"));
    let ce = r.json();
    assert_eq!(ce["data"], json!({"id": 7, "note": "<b>&"}));
    assert_eq!(ce["datacontenttype"], "application/json");
    assert_eq!(ce["source"], "todo");
    assert_eq!(ce["type"], "com.dapr.event.sent");
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["topic"], "orders");
    assert_eq!(ce["pubsubname"], "pubsub");
    assert_eq!(ce["traceid"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_eq!(ce["traceparent"], ce["traceid"]);
    assert!(uuid::Uuid::parse_str(ce["id"].as_str().unwrap()).is_ok());
    assert!(chrono::DateTime::parse_from_rfc3339(ce["time"].as_str().unwrap()).is_ok());
    // Go's json.Marshal: sorted keys, HTML characters escaped.
    let raw = String::from_utf8(r.body.clone()).unwrap();
    assert!(raw.starts_with(r#"{"data":{"id":7,"note":"\u003cb\u003e\u0026"},"datacontenttype":"application/json","id":"#), "{raw}");

    publish(&host, "/v1.0/publish/pubsub/orders", "text/plain", "hello");
    publish(&host, "/v1.0/publish/pubsub/orders", "application/octet-stream", "\u{1}\u{2}");
    publish(&host, "/v1.0/publish/pubsub/orders", "application/cloudevents+json", r#"{"id":"mine","type":"my.type","data":{"x":1}}"#);
    publish(&host, "/v1.0/publish/pubsub/orders?metadata.ttlInSeconds=60", "text/plain", "ttl");
    let got = app.wait_calls("/orders", 5, WAIT);
    assert_eq!(got[1].json()["data"], "hello");
    assert_eq!(got[1].json()["datacontenttype"], "text/plain");
    assert_eq!(got[2].json()["data_base64"], "AQI=");
    assert_eq!(got[3].json()["id"], "mine");
    assert_eq!(got[3].json()["type"], "my.type");
    assert_eq!(got[3].json()["source"], "Dapr");
    assert!(got[4].json()["expiration"].is_string());

    // rawPayload: the bytes are delivered as they were published.
    publish(&host, "/v1.0/publish/pubsub/orders?metadata.rawPayload=true", "application/json", r#"{"raw":true}"#);
    let got = app.wait_calls("/orders", 6, WAIT);
    assert_eq!(got[5].json(), json!({"raw": true}));
}

#[test]
fn publishing_without_any_pubsub_is_not_found() {
    // daprd's pubsub adapter exists even with no pubsub component (http.go
    // validateAndGetPubsubAndTopic): the answer is NotFound, not NotConfigured.
    let app = TestApp::start(None);
    let state = STATE_WITH_OUTBOX.split("  metadata:\n  - name: outbox").next().unwrap().to_string();
    let res = resources(&[("state.yaml", &state)]);
    let host = start_sidecar(&app, &res);
    let a = publish(&host, "/v1.0/publish/pubsub/t", "text/plain", "x");
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (404, Some("ERR_PUBSUB_NOT_FOUND")), "{}", a.body);
    // And, as subscriber.go initProgrammaticSubscriptions, the app is never asked for
    // its subscriptions.
    std::thread::sleep(Duration::from_millis(300));
    assert!(app.calls("/dapr/subscribe").is_empty());
}

#[test]
fn publish_errors_match_daprd() {
    let app = TestApp::start(None);
    let scoped = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: scoped\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata:\n  - name: publishingScopes\n    value: \"todo=allowed\"\n";
    let res = resources(&[("pubsub.yaml", PUBSUB), ("scoped.yaml", scoped)]);
    let host = start_sidecar(&app, &res);
    let a = publish(&host, "/v1.0/publish/nope/t", "text/plain", "x");
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["errorCode"], "ERR_PUBSUB_NOT_FOUND");
    assert_eq!(a.json()["message"], "pubsub nope is not found");
    // Any other route reaches daprd's fallback, service invocation (directmessaging.go
    // onDirectMessage), which finds no app id.
    let a = get(&host.url("/v1.0/nothing/here"));
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (404, Some("ERR_DIRECT_INVOKE")));
    assert_eq!(a.json()["message"], "failed getting app id either from the URL path or the header dapr-app-id");
    let a = publish(&host, "/v1.0/publish/pubsub/t?metadata.rawPayload=maybe", "text/plain", "x");
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (400, Some("ERR_PUBSUB_REQUEST_METADATA")));
    let a = publish(&host, "/v1.0/publish/pubsub/t", "application/cloudevents+json", "{not json");
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (500, Some("ERR_PUBSUB_CLOUD_EVENTS_SER")));
    let a = publish(&host, "/v1.0/publish/scoped/forbidden", "text/plain", "x");
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["message"], "topic forbidden is not allowed for app id todo");
    assert_eq!(publish(&host, "/v1.0/publish/scoped/allowed", "text/plain", "x").status, 204);
    assert_eq!(publish(&host, "/v1.0/publish/pubsub/a%2Fb", "text/plain", "x").status, 204);

    // Bulk publish.
    let a = publish(
        &host,
        "/v1.0-alpha1/publish/bulk/pubsub/t",
        "application/json",
        r#"[{"entryId":"1","event":"a","contentType":"text/plain"},{"entryId":"1","event":"b","contentType":"text/plain"}]"#,
    );
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (400, Some("ERR_PUBSUB_EVENTS_SER")));
    let a = publish(
        &host,
        "/v1.0-alpha1/publish/bulk/pubsub/t",
        "application/json",
        r#"[{"entryId":"1","event":{"k":1},"contentType":"application/json"},{"entryId":"2","event":"b","contentType":"text/plain"}]"#,
    );
    assert_eq!(a.status, 204, "{}", a.body);
}

#[test]
fn app_answers_retries_and_dead_letters() {
    let subs = json!([
        {"pubsubname": "pubsub", "topic": "retry-then-ok", "route": "/retry-then-ok"},
        {"pubsubname": "pubsub", "topic": "always-500", "route": "/always-500", "deadLetterTopic": "dlq"},
        {"pubsubname": "pubsub", "topic": "drop", "route": "/drop", "deadLetterTopic": "dlq"},
        {"pubsubname": "pubsub", "topic": "not-found", "route": "/not-found", "deadLetterTopic": "dlq"},
        {"pubsubname": "pubsub", "topic": "odd-answers", "route": "/odd"},
        {"pubsubname": "pubsub", "topic": "dlq", "route": "/dlq"}
    ]);
    let app = TestApp::start(Some(subs));
    app.script("/retry-then-ok", &[(200, r#"{"status":"RETRY"}"#), (200, r#"{"status":"success"}"#), (200, r#"{"status":"SUCCESS"}"#)]);
    app.script("/always-500", &[(500, "")]);
    app.script("/drop", &[(200, r#"{"status":"DROP"}"#)]);
    app.script("/not-found", &[(404, "")]);
    app.script("/odd", &[(200, "not json")]);
    let res = resources(&[
        ("pubsub.yaml", PUBSUB),
        ("res.yaml", &resiliency("        policy: constant\n        duration: 50ms\n        maxRetries: 4")),
    ]);
    let host = start_sidecar(&app, &res);

    // RETRY, then an unknown status (case matters), then SUCCESS: three calls.
    publish(&host, "/v1.0/publish/pubsub/retry-then-ok", "text/plain", "a");
    assert_eq!(app.wait_calls("/retry-then-ok", 3, WAIT).len(), 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.calls("/retry-then-ok").len(), 3, "acked after SUCCESS");
    // maxRetries 4 with a 500 every time: exactly 5 calls, then the dead-letter topic,
    // carrying the original bytes (topic field kept).
    publish(&host, "/v1.0/publish/pubsub/always-500", "text/plain", "b");
    let dlq = app.wait_calls("/dlq", 1, WAIT);
    assert_eq!(app.calls("/always-500").len(), 5);
    assert_eq!(dlq[0].json()["topic"], "always-500");
    assert_eq!(dlq[0].body, app.calls("/always-500")[0].body, "the DLQ gets the exact bytes");
    // DROP and 404: one call each, then the dead-letter topic.
    publish(&host, "/v1.0/publish/pubsub/drop", "text/plain", "c");
    publish(&host, "/v1.0/publish/pubsub/not-found", "text/plain", "d");
    let dlq = app.wait_calls("/dlq", 3, WAIT);
    assert_eq!(dlq.len(), 3);
    assert_eq!(app.calls("/drop").len(), 1);
    assert_eq!(app.calls("/not-found").len(), 1);
    // A 2xx body that is not JSON counts as success.
    publish(&host, "/v1.0/publish/pubsub/odd-answers", "text/plain", "e");
    app.wait_calls("/odd", 1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.calls("/odd").len(), 1);
}

#[test]
fn exponential_backoff_spacing_and_no_retry_without_policy() {
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "t", "route": "/t"}])));
    app.script("/t", &[(500, "")]);
    let res = resources(&[
        ("pubsub.yaml", PUBSUB),
        ("res.yaml", &resiliency("        policy: exponential\n        duration: 100ms\n        maxInterval: 1s\n        maxRetries: 3")),
    ]);
    let host = start_sidecar(&app, &res);
    let started = std::time::Instant::now();
    publish(&host, "/v1.0/publish/pubsub/t", "text/plain", "x");
    let calls = app.wait_calls("/t", 4, WAIT);
    assert_eq!(calls.len(), 4);
    // 100 + 150 + 225 ms of back-off at least.
    assert!(started.elapsed() >= Duration::from_millis(475), "{:?}", started.elapsed());
    drop(host);

    // No Resiliency: daprd does not retry; the in-memory component logs and moves on.
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "t", "route": "/t"}])));
    app.script("/t", &[(500, "")]);
    let res = resources(&[("pubsub.yaml", PUBSUB)]);
    let host = start_sidecar(&app, &res);
    publish(&host, "/v1.0/publish/pubsub/t", "text/plain", "x");
    app.wait_calls("/t", 1, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(app.calls("/t").len(), 1);
    assert!(host.wait_log("not processed", WAIT), "{}", host.logs());
}

#[test]
fn inbound_timeout_counts_as_a_failed_delivery() {
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "slow", "route": "/slow"}])));
    app.script("/slow", &[(200, r#"sleep:600:{"status":"SUCCESS"}"#), (200, r#"{"status":"SUCCESS"}"#)]);
    let res = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    timeouts:\n      quick: 150ms\n    retries:\n      again:\n        policy: constant\n        duration: 10ms\n        maxRetries: 2\n  targets:\n    components:\n      pubsub:\n        inbound:\n          timeout: quick\n          retry: again\n".to_string();
    let dir = resources(&[("pubsub.yaml", PUBSUB), ("res.yaml", &res)]);
    let host = start_sidecar(&app, &dir);
    publish(&host, "/v1.0/publish/pubsub/slow", "text/plain", "x");
    // The first answer comes too late: the delivery is retried and the second succeeds.
    assert_eq!(app.wait_calls("/slow", 2, WAIT).len(), 2);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(app.calls("/slow").len(), 2);
}

#[test]
fn declarative_subscriptions_with_cel_rules() {
    let app = TestApp::start(None);
    let sub = "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: widgets\nspec:\n  pubsubname: pubsub\n  topic: inventory\n  routes:\n    rules:\n    - match: event.type == \"widget\"\n      path: /widgets\n    - match: event.data.qty > 10\n      path: /bulk\n    default: /other\nscopes:\n- todo\n";
    let res = resources(&[("pubsub.yaml", PUBSUB), ("sub.yaml", sub)]);
    let host = start_sidecar(&app, &res);
    publish(&host, "/v1.0/publish/pubsub/inventory?metadata.cloudevent.type=widget", "application/json", r#"{"qty":1}"#);
    publish(&host, "/v1.0/publish/pubsub/inventory", "application/json", r#"{"qty":50}"#);
    publish(&host, "/v1.0/publish/pubsub/inventory", "application/json", r#"{"qty":2}"#);
    assert_eq!(app.wait_calls("/widgets", 1, WAIT).len(), 1);
    assert_eq!(app.wait_calls("/bulk", 1, WAIT).len(), 1);
    assert_eq!(app.wait_calls("/other", 1, WAIT).len(), 1);
    let md = get(&host.url("/v1.0/metadata")).json();
    assert_eq!(md["id"], "todo");
    assert_eq!(md["subscriptions"][0]["type"], "DECLARATIVE");
    assert_eq!(md["subscriptions"][0]["rules"][0]["path"], "/widgets");
    assert_eq!(md["appConnectionProperties"]["port"], app.port);
}

#[test]
fn state_etags_bulk_and_errors() {
    let app = TestApp::start(None);
    let res = resources(&[(
        "state.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n",
    )]);
    let host = start_sidecar(&app, &res);
    let save = |body: &str| send("POST", &host.url("/v1.0/state/statestore"), &[("content-type", "application/json")], body);
    assert_eq!(save(r#"[{"key":"k1","value":{"b":2,"a":"x"}},{"key":"k2","value":"text"}]"#).status, 204);
    let a = get(&host.url("/v1.0/state/statestore/k1"));
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"a":"x","b":2}"#));
    let etag = a.header("etag").unwrap().to_string();
    assert_eq!(get(&host.url("/v1.0/state/statestore/k2")).body, "\"text\"");
    assert_eq!(get(&host.url("/v1.0/state/statestore/missing")).status, 204);

    let a = save(r#"[{"key":"k1","value":1,"etag":"not-it"}]"#);
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (409, Some("ERR_STATE_SAVE")));
    let a = save(r#"[{"key":"k1","value":1,"options":{"concurrency":"first-write"}}]"#);
    assert_eq!(a.status, 409);
    assert_eq!(save(&format!(r#"[{{"key":"k1","value":1,"etag":"{etag}","options":{{"concurrency":"first-write"}}}}]"#)).status, 204);
    for bad in ["", "{}", "[{\"key\":\"k\",\"value\":1,\"etag\":5}]", "not json"] {
        let a = save(bad);
        assert_eq!((a.status, a.json()["errorCode"].as_str()), (400, Some("ERR_MALFORMED_REQUEST")), "body {bad:?}");
    }
    // daprd's onPostState checks every item before writing any: one missing key, 400
    // with exactly its message, and nothing saved.
    let a = save(r#"[{"key":"first","value":1},{"key":"","value":1}]"#);
    assert_eq!((a.status, a.json()), (400, json!({"errorCode": "ERR_MALFORMED_REQUEST", "message": "\"key\" is a required field"})));
    assert_eq!(get(&host.url("/v1.0/state/statestore/first")).status, 204);
    // contrib's in-memory doSet: only a positive ttlInSeconds expires; `?metadata.*` is
    // merged into each item (onPostState's maps.Copy), the query winning.
    assert_eq!(save(r#"[{"key":"ttl0","value":1,"metadata":{"ttlInSeconds":"0"}}]"#).status, 204);
    assert_eq!(get(&host.url("/v1.0/state/statestore/ttl0")).status, 200);
    let a = send(
        "POST",
        &host.url("/v1.0/state/statestore?metadata.ttlInSeconds=1"),
        &[("content-type", "application/json")],
        r#"[{"key":"q","value":1,"metadata":{"ttlInSeconds":"0"}}]"#,
    );
    assert_eq!(a.status, 204);
    assert_eq!(get(&host.url("/v1.0/state/statestore/q")).status, 200);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&host.url("/v1.0/state/statestore/q")).status, 204, "the query's TTL of 1 s applied");
    assert_eq!(get(&host.url("/v1.0/state/statestore/ttl0")).status, 200);
    let a = save(r#"[{"key":"a||b","value":1}]"#);
    assert_eq!(a.status, 400);
    let a = send("POST", &host.url("/v1.0/state/nope"), &[], "[]");
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (400, Some("ERR_STATE_STORE_NOT_FOUND")));

    let a = send("DELETE", &host.url("/v1.0/state/statestore/k1"), &[("if-match", "wrong")], "");
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (409, Some("ERR_STATE_DELETE")));
    assert_eq!(send("DELETE", &host.url("/v1.0/state/statestore/k1"), &[], "").status, 204);
    assert_eq!(send("DELETE", &host.url("/v1.0/state/statestore/never"), &[], "").status, 204);

    let a = send("POST", &host.url("/v1.0/state/statestore/bulk"), &[], r#"{"keys":["k2","k1"]}"#);
    assert_eq!(a.json()[0]["data"], "text");
    assert!(a.json()[0]["etag"].is_string());
    assert_eq!(a.json()[1], json!({"key": "k1"}));
}

#[test]
fn transactions_commit_with_their_outbox_events() {
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "outbox", "route": "/outbox"}])));
    let res = resources(&[("pubsub.yaml", PUBSUB), ("state.yaml", STATE_WITH_OUTBOX)]);
    let host = start_sidecar(&app, &res);
    let tx = |body: &str| send("POST", &host.url("/v1.0/state/statestore/transaction"), &[("content-type", "application/json")], body);
    let a = tx(
        r#"{"operations":[{"operation":"upsert","request":{"key":"a","value":{"n":1},"metadata":{"contentType":"application/json"}}},{"operation":"upsert","request":{"key":"b","value":{"n":2}}}]}"#,
    );
    assert_eq!(a.status, 204, "{}", a.body);
    let events = app.wait_calls("/outbox", 2, WAIT);
    let mut events: Vec<_> = events.iter().map(|e| e.json()).collect();
    events.sort_by_key(|e| e["datacontenttype"].as_str().unwrap_or("").to_string());
    // As daprd: JSON when the operation says so (its metadata copied into the envelope),
    // else Go's %v rendering as text/plain; ids are `outbox-<uuid>`.
    assert_eq!(events[0]["data"], json!({"n": 1}));
    assert_eq!(events[0]["contentType"], "application/json");
    assert_eq!(events[1]["data"], "map[n:2]");
    assert_eq!(events[1]["datacontenttype"], "text/plain");
    assert!(events[0]["id"].as_str().unwrap().starts_with("outbox-"));
    assert_eq!(events[0]["topic"], "outbox");
    assert_eq!(events[0]["source"], "todo");

    // A failing transaction writes nothing and publishes nothing.
    let a = tx(
        r#"{"operations":[{"operation":"upsert","request":{"key":"c","value":3}},{"operation":"upsert","request":{"key":"a","value":9,"etag":"stale"}}]}"#,
    );
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (500, Some("ERR_STATE_TRANSACTION")));
    assert_eq!(get(&host.url("/v1.0/state/statestore/c")).status, 204);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.calls("/outbox").len(), 2);
    // Go reads `null` as an empty value: the JS SDK sends `"metadata": null`.
    let a = tx(
        r#"{"operations":[{"operation":"upsert","request":{"key":"n","value":1,"etag":null,"metadata":null,"options":null}}],"metadata":null}"#,
    );
    assert_eq!(a.status, 204, "{}", a.body);
    app.wait_calls("/outbox", 3, WAIT);
    let a = tx(r#"{"operations":[{"operation":"merge","request":{"key":"x"}}]}"#);
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (400, Some("ERR_NOT_SUPPORTED_STATE_OPERATION")));

    // A projection: the event carries the projected value, the store the real one.
    let a = tx(
        r#"{"operations":[{"operation":"upsert","request":{"key":"p","value":{"stored":true}}},{"operation":"upsert","request":{"key":"p","value":{"published":true},"metadata":{"outbox.projection":"true","contentType":"application/json"}}}]}"#,
    );
    assert_eq!(a.status, 204);
    let events = app.wait_calls("/outbox", 4, WAIT);
    assert_eq!(events[3].json()["data"], json!({"published": true}));
    assert_eq!(get(&host.url("/v1.0/state/statestore/p")).body, r#"{"stored":true}"#);
}

#[test]
fn api_tokens_and_health() {
    // The app is not up yet: the sidecar is not healthy until it is.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = reserved.local_addr().unwrap().port();
    let res = resources(&[("pubsub.yaml", PUBSUB)]);
    let port_s = port.to_string();
    let path = res.path().display().to_string();
    let host = HostBuilder::sidecar(&["--app-id", "todo", "--app-port", &port_s, "--resources-path", &path])
        .env("DAPR_API_TOKEN", "api-secret")
        .env("APP_API_TOKEN", "app-secret")
        .start();
    drop(reserved);
    let a = get(&host.url("/v1.0/healthz"));
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (500, Some("ERR_HEALTH_NOT_READY")));
    assert_eq!(get(&host.url("/v1.0/healthz/outbound")).status, 204);
    let app = TestApp::start_on(
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
        Some(json!([{"pubsubname": "pubsub", "topic": "t", "route": "/t"}])),
    );
    wait_healthy(&host, WAIT);

    // As Go's http.Error in daprd's APITokenAuthMiddleware writes it.
    let a = publish(&host, "/v1.0/publish/pubsub/t", "text/plain", "x");
    assert_eq!((a.status, a.body.as_str()), (401, "invalid api token\n"));
    assert_eq!(a.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    let a = send("POST", &host.url("/v1.0/publish/pubsub/t"), &[("dapr-api-token", "api-secret")], "x");
    assert_eq!(a.status, 204);
    let got = app.wait_calls("/t", 1, WAIT);
    assert_eq!(got[0].header("dapr-api-token"), Some("app-secret"));
}

#[test]
fn bad_resources_stop_the_start_with_file_and_field() {
    let res = resources(&[(
        "broken.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metdata: []\n",
    )]);
    let path = res.path().display().to_string();
    let err = HostBuilder::sidecar(&["--app-id", "a", "--resources-path", &path]).try_start().err().expect("must fail");
    assert!(err.contains("broken.yaml:8"), "{err}");
    assert!(err.contains("metdata"), "{err}");
    let res = resources(&[(
        "kafka.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec:\n  type: pubsub.rabbitmq\n  version: v1\n",
    )]);
    let path = res.path().display().to_string();
    let err = HostBuilder::sidecar(&["--app-id", "a", "--resources-path", &path]).try_start().err().expect("must fail");
    assert!(err.contains("kafka.yaml:6") && err.contains("pubsub.rabbitmq"), "{err}");
}

#[test]
fn the_apps_json_is_read_as_gos_decoder_reads_it() {
    // The Java SDK's `pubsubName`, other casings, unknown keys and nulls; an answer whose
    // key is `Status` is a RETRY (daprd's encoding/json matches keys case-insensitively).
    let subs = json!([
        {"pubsubName": "pubsub", "Topic": "orders", "ROUTE": "/orders", "deadLetterTopic": "orders-dlq", "extra": {"x": 1}},
        {"PubSubName": "pubsub", "topic": "orders-dlq", "route": "/dlq", "metadata": null}
    ]);
    let app = TestApp::start(Some(subs));
    app.script("/orders", &[(200, r#"{"Status":"RETRY"}"#), (200, r#"{"STATUS":"SUCCESS"}"#)]);
    let res = resources(&[
        ("pubsub.yaml", PUBSUB),
        ("res.yaml", &resiliency("        policy: constant\n        duration: 50ms\n        maxRetries: 3")),
    ]);
    let host = start_sidecar(&app, &res);
    let md = get(&host.url("/v1.0/metadata")).json();
    let topics: Vec<&str> = md["subscriptions"].as_array().unwrap().iter().map(|s| s["topic"].as_str().unwrap()).collect();
    assert_eq!(topics, vec!["orders", "orders-dlq"], "{md}");
    publish(&host, "/v1.0/publish/pubsub/orders", "text/plain", "a");
    // RETRY (read from `Status`), then SUCCESS: two calls, nothing dead-lettered.
    assert_eq!(app.wait_calls("/orders", 2, WAIT).len(), 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.calls("/orders").len(), 2);
    assert!(app.calls("/dlq").is_empty());
}

#[test]
fn raw_payload_subscriptions_always_get_the_bytes_wrapped() {
    // `rawPayload` read as Go's strconv.ParseBool ("True"), and the wrap applies to every
    // message, JSON objects included (daprd's FromRawPayload: data_base64, source Dapr).
    let subs = json!([{"pubsubname": "pubsub", "topic": "raw", "route": "/raw", "metadata": {"rawPayload": "True"}}]);
    let app = TestApp::start(Some(subs));
    let res = resources(&[("pubsub.yaml", PUBSUB)]);
    let host = start_sidecar(&app, &res);
    publish(&host, "/v1.0/publish/pubsub/raw?metadata.rawPayload=true", "application/json", r#"{"a":1}"#);
    let got = app.wait_calls("/raw", 1, WAIT);
    let ce = got[0].json();
    assert_eq!(ce["data_base64"], "eyJhIjoxfQ==", "{ce}");
    assert_eq!((ce["source"].as_str(), ce["datacontenttype"].as_str()), (Some("Dapr"), Some("application/octet-stream")));
    assert_eq!((ce["topic"].as_str(), ce["pubsubname"].as_str(), ce["specversion"].as_str()), (Some("raw"), Some("pubsub"), Some("1.0")));
}

/// Bulk subscribe (#12 item 2), as daprd's pkg/runtime/subscription/bulksubscription.go
/// and postman/http DeliverBulk deliver it, with the in-memory broker (whose serial
/// worker makes every batch one entry, flushed maxAwaitDurationMs after it arrived, as
/// daprd's tests/integration/suite/daprd/pubsub/bulksubscribe/timerflush.go asserts).
#[test]
fn bulk_subscriptions_get_daprds_envelope_and_statuses() {
    let subs = json!([
        {"pubsubname": "pubsub", "topic": "orders", "route": "/bulk",
         "bulkSubscribe": {"enabled": true, "maxMessagesCount": 3, "maxAwaitDurationMs": 300}},
        {"pubsubname": "pubsub", "topic": "mixed", "route": "/mixed", "deadLetterTopic": "dlq",
         "BulkSubscribe": {"Enabled": true, "maxAwaitDurationMs": 50}},
        {"pubsubname": "pubsub", "topic": "flaky", "route": "/flaky", "bulkSubscribe": {"enabled": true, "maxAwaitDurationMs": 20}},
        {"pubsubname": "pubsub", "topic": "gone", "route": "/gone", "deadLetterTopic": "dlq", "bulkSubscribe": {"enabled": true, "maxAwaitDurationMs": 20}},
        {"pubsubname": "pubsub", "topic": "raw", "route": "/raw", "metadata": {"rawPayload": "true"}, "bulkSubscribe": {"enabled": true, "maxAwaitDurationMs": 20}},
        {"pubsubname": "pubsub", "topic": "off", "route": "/off", "bulkSubscribe": {"enabled": false}},
        {"pubsubname": "pubsub", "topic": "dlq", "route": "/dlq"}
    ]);
    let app = TestApp::start(Some(subs));
    app.script("/bulk", &[(200, "@bulk:SUCCESS")]);
    app.script("/mixed", &[(200, "@bulk:data")]);
    // An empty status is a retry here (single delivery would take it as success).
    app.script("/flaky", &[(200, "@bulk:"), (200, "@bulk:SUCCESS")]);
    app.script("/gone", &[(404, "")]);
    app.script("/raw", &[(200, "@bulk:SUCCESS")]);
    let res = resources(&[
        ("pubsub.yaml", PUBSUB),
        ("res.yaml", &resiliency("        policy: constant\n        duration: 50ms\n        maxRetries: 2")),
    ]);
    let host = start_sidecar(&app, &res);

    // The envelope: POST as application/json, `pubsubName` header, Go's key order, each
    // entry the CloudEvent as Go re-marshals it (numbers through float64).
    let start = std::time::Instant::now();
    publish(&host, "/v1.0/publish/pubsub/orders?metadata.k=v", "application/json", r#"{"n":12345678901234567890}"#);
    let got = app.wait_calls("/bulk", 1, WAIT);
    assert!(start.elapsed() >= Duration::from_millis(210), "flushed after maxAwaitDurationMs: {:?}", start.elapsed());
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("pubsubname"), Some("pubsub"));
    let body = String::from_utf8(req.body.clone()).unwrap();
    assert!(body.starts_with(r#"{"entries":[{"entryId":""#), "{body}");
    assert!(body.contains(r#""metadata":{"k":"v"},"contentType":"application/cloudevents+json"}],"id":""#), "{body}");
    assert!(
        body.ends_with(r#","metadata":{"pubsubName":"pubsub"},"pubsubname":"pubsub","topic":"orders","type":"com.dapr.event.sent.bulk"}"#),
        "{body}"
    );
    let env = req.json();
    assert_eq!(env["entries"].as_array().unwrap().len(), 1, "in-memory: one entry per batch");
    assert!(body.contains(r#""data":{"n":12345678901234567000}"#), "numbers through float64: {body}");
    assert_eq!(env["entries"][0]["event"]["topic"], "orders");

    // Per-entry statuses: SUCCESS acked, DROP and RETRY (no retry policy on "mixed"'s
    // answers beyond the component's, which retries it) end at the dead-letter topic.
    publish(&host, "/v1.0/publish/pubsub/mixed", "application/json", r#"{"s":"SUCCESS"}"#);
    publish(&host, "/v1.0/publish/pubsub/mixed", "application/json", r#"{"s":"DROP"}"#);
    publish(&host, "/v1.0/publish/pubsub/mixed", "application/json", r#"{"s":"RETRY"}"#);
    let dlq = app.wait_calls("/dlq", 2, WAIT);
    let mut dead: Vec<String> = dlq.iter().map(|r| r.json()["data"]["s"].as_str().unwrap().to_string()).collect();
    dead.sort();
    assert_eq!(dead, ["DROP", "RETRY"]);
    // SUCCESS once, DROP once, RETRY 1 + 2 retries, each retry carrying only that entry
    // under the same envelope id.
    let mixed = app.calls("/mixed");
    assert_eq!(mixed.len(), 5, "{}", host.logs());
    let retried: Vec<_> = mixed.iter().filter(|r| r.json()["entries"][0]["event"]["data"]["s"] == "RETRY").collect();
    assert_eq!(retried.len(), 3);
    assert_eq!(retried[0].json()["id"], retried[2].json()["id"]);

    // An empty status: retried, then acked.
    publish(&host, "/v1.0/publish/pubsub/flaky", "text/plain", "x");
    assert_eq!(app.wait_calls("/flaky", 2, WAIT).len(), 2);
    // 404: acked without retry and without the dead-letter topic.
    publish(&host, "/v1.0/publish/pubsub/gone", "text/plain", "y");
    app.wait_calls("/gone", 1, WAIT);
    // rawPayload: the entry is the base64 of the broker's bytes, as octet-stream.
    publish(&host, "/v1.0/publish/pubsub/raw?metadata.rawPayload=true", "text/plain", "hello");
    let raw = app.wait_calls("/raw", 1, WAIT)[0].json();
    assert_eq!(raw["entries"][0]["event"], "aGVsbG8=");
    assert_eq!(raw["entries"][0]["contentType"], "application/octet-stream");
    // enabled: false is an ordinary subscription.
    publish(&host, "/v1.0/publish/pubsub/off", "text/plain", "z");
    let off = app.wait_calls("/off", 1, WAIT);
    assert_eq!(off[0].header("content-type"), Some("application/cloudevents+json"));
    assert_eq!(off[0].json()["data"], "z");

    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.calls("/flaky").len(), 2);
    assert_eq!(app.calls("/gone").len(), 1);
    assert_eq!(app.calls("/dlq").len(), 2, "a 404 is not dead-lettered in bulk");
}

/// A programmatic bulkSubscribe with a value of the wrong type fails the whole list, as
/// Go's decoder does in GetSubscriptionsHTTP: no subscription at all.
#[test]
fn a_mistyped_bulk_subscribe_fails_the_whole_list() {
    let subs = json!([
        {"pubsubname": "pubsub", "topic": "a", "route": "/a"},
        {"pubsubname": "pubsub", "topic": "b", "route": "/b", "bulkSubscribe": {"enabled": true, "maxMessagesCount": "5"}}
    ]);
    let app = TestApp::start(Some(subs));
    let res = resources(&[("pubsub.yaml", PUBSUB)]);
    let host = start_sidecar(&app, &res);
    publish(&host, "/v1.0/publish/pubsub/a", "text/plain", "x");
    std::thread::sleep(Duration::from_millis(300));
    assert!(app.calls("/a").is_empty());
    assert!(host.logs().contains("not a subscription list"), "{}", host.logs());
}
