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
        ("res.yaml", &resiliency("        policy: exponential\n        duration: 10s\n        maxInterval: 1s\n        maxRetries: 3")),
    ]);
    let host = start_sidecar(&app, &res);
    let started = std::time::Instant::now();
    publish(&host, "/v1.0/publish/pubsub/t", "text/plain", "x");
    let calls = app.wait_calls("/t", 4, WAIT);
    assert_eq!(calls.len(), 4);
    // dapr/kit ignores `duration` for exponential: 500 ms × 1.5ⁿ capped at maxInterval,
    // each ±50 %: at least 250 + 375 + 500 ms, at most 750 + 1125 + 1500 ms.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1125) && took < Duration::from_millis(4500), "{took:?}");
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

/// Resiliency as pkg/resiliency resolves and runs it (#12 item 8): `matching` filters
/// which app statuses are retried (RETRY answers are always retried); a component with
/// a target entry gets no `Default…Policy`; an inbound circuit breaker opens after its
/// `trip`, then the app is not called until `timeout` lets one try through.
#[test]
fn resiliency_matching_defaults_and_circuit_breakers() {
    let subs = json!([
        {"pubsubname": "pubsub", "topic": "t500", "route": "/t500"},
        {"pubsubname": "pubsub", "topic": "t503", "route": "/t503"},
        {"pubsubname": "pubsub", "topic": "tretry", "route": "/tretry"},
        {"pubsubname": "other", "topic": "plain", "route": "/plain"},
        {"pubsubname": "cbps", "topic": "cb", "route": "/cb"}
    ]);
    let app = TestApp::start(Some(subs));
    for p in ["/t500", "/plain", "/cb"] {
        app.script(p, &[(500, "")]);
    }
    app.script("/t503", &[(503, "")]);
    app.script("/tretry", &[(200, r#"{"status":"RETRY"}"#)]);
    let other = PUBSUB.replace("name: pubsub", "name: other");
    let cbps = PUBSUB.replace("name: pubsub", "name: cbps");
    let res = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      m:\n        policy: Constant\n        duration: \"10\"\n        maxRetries: 4\n        matching:\n          httpStatusCodes: \"500\"\n      forever:\n        policy: constant\n        duration: 10ms\n      DefaultRetryPolicy:\n        policy: constant\n        duration: 10ms\n        maxRetries: 2\n    circuitBreakers:\n      cb:\n        maxRequests: 1\n        timeout: 1s\n        trip: consecutiveFailures >= 2\n  targets:\n    components:\n      pubsub:\n        inbound:\n          retry: m\n      cbps:\n        inbound:\n          retry: forever\n          circuitBreaker: cb\n";
    let dir = resources(&[("pubsub.yaml", PUBSUB), ("other.yaml", &other), ("cbps.yaml", &cbps), ("res.yaml", res)]);
    let host = start_sidecar(&app, &dir);
    for t in ["t500", "t503", "tretry"] {
        publish(&host, &format!("/v1.0/publish/pubsub/{t}"), "text/plain", "x");
    }
    publish(&host, "/v1.0/publish/other/plain", "text/plain", "x");
    assert_eq!(app.wait_calls("/t500", 5, WAIT).len(), 5, "500 matches: 1 + 4 retries");
    assert_eq!(app.wait_calls("/tretry", 5, WAIT).len(), 5, "a RETRY answer is no status code: always retried");
    assert_eq!(app.wait_calls("/plain", 3, WAIT).len(), 3, "no target entry: DefaultRetryPolicy (1 + 2)");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.calls("/t503").len(), 1, "503 is not in matching: not retried");
    assert_eq!(app.calls("/t500").len(), 5);

    // The breaker trips after two failures and the retries stop there; while it is open
    // the app is not called at all (one breaker per component, as daprd's).
    publish(&host, "/v1.0/publish/cbps/cb", "text/plain", "1");
    assert_eq!(app.wait_calls("/cb", 2, WAIT).len(), 2);
    assert!(host.wait_log("circuit breaker is open", WAIT), "{}", host.logs());
    publish(&host, "/v1.0/publish/cbps/cb", "text/plain", "2");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.calls("/cb").len(), 2, "open: not called");
    // After `timeout`, half-open: one call goes through, fails, and it opens again.
    std::thread::sleep(Duration::from_millis(1000));
    publish(&host, "/v1.0/publish/cbps/cb", "text/plain", "3");
    app.wait_calls("/cb", 3, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.calls("/cb").len(), 3);
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Publish conversions (#12 item 5: pkg/api/http/http.go onPublish/onBulkPublish,
/// contrib pubsub/envelope.go, metadata.TryGetTTL, ConvertEventToBytes), scopes (item 4:
/// pkg/scopes, IsOperationAllowed on publish, subscribe and dead letters) and the trace
/// on delivery (item 6: postman/http Deliver; daprd's pubsub/http/traceparent test).
#[test]
fn publish_conversions_scopes_and_delivery_trace_as_daprd() {
    let subs = json!([
        {"pubsubname": "pubsub", "topic": "a", "route": "/a"},
        {"pubsubname": "pubsub", "topic": "b", "route": "/b"},
        {"pubsubname": "pubsub", "topic": "t9", "route": "/t9"},
        {"pubsubname": "pubsub", "topic": "d", "route": "/d", "deadLetterTopic": "nodlq"},
        {"pubsubname": "pubsub", "topic": "nodlq", "route": "/nodlq"}
    ]);
    let app = TestApp::start(Some(subs));
    app.script("/d", &[(404, "")]);
    let scoped = format!(
        "{PUBSUB}  metadata:\n  - name: publishingScopes\n    value: \"todo=a,t9;other=z;todo=b, d\"\n  - name: subscriptionScopes\n    value: \"todo=a,b,d,nodlq;x=t9\"\n  - name: protectedTopics\n    value: p1\n"
    );
    let res = resources(&[("pubsub.yaml", &scoped)]);
    let host = start_sidecar(&app, &res);
    let pub_with = |topic_query: &str, headers: &[(&str, &str)], body: &str| {
        send("POST", &host.url(&format!("/v1.0/publish/pubsub/{topic_query}")), headers, body)
    };

    // Scopes: this app's entries are combined (a, t9, b, d); others are forbidden, with
    // daprd's details (ResourceInfo, then ErrorInfo with its metadata); a protected topic
    // needs a scope.
    for t in ["a", "b", "t9", "d"] {
        assert_eq!(pub_with(t, &[], "x").status, 204, "{t}");
    }
    let a = pub_with("c", &[], "x");
    assert_eq!(a.status, 403);
    assert_eq!(
        a.json(),
        json!({"errorCode": "ERR_PUBSUB_FORBIDDEN", "message": "topic c is not allowed for app id todo", "details": [
            {"@type": "type.googleapis.com/google.rpc.ResourceInfo", "description": "topic c is not allowed for app id todo", "owner": "", "resource_name": "pubsub", "resource_type": "pubsub"},
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "domain": "dapr.io", "metadata": {"error": "topic c is not allowed for app id todo", "topic": "c"}, "reason": "DAPR_PUBSUB_FORBIDDEN"}
        ]})
    );
    assert_eq!(pub_with("p1", &[], "x").status, 403);
    // The scope check comes last: a bad rawPayload is reported first.
    let a = pub_with("c?metadata.rawPayload=maybe", &[], "x");
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (400, Some("ERR_PUBSUB_REQUEST_METADATA")));
    assert_eq!(a.json()["message"], "failed deserializing metadata. Error: rawPayload value must be a valid boolean: actual is 'maybe'");
    // t9 is published but this app may not subscribe to it: listed, never delivered.
    assert!(host.wait_log("subscription to topic 't9' on pubsub 'pubsub' is not allowed", WAIT), "{}", host.logs());
    let md = get(&host.url("/v1.0/metadata")).json();
    assert!(md["subscriptions"].as_array().unwrap().iter().any(|s| s["topic"] == "t9"), "{md}");
    // The dead-letter topic is not in the publishing scopes: the 404'd message is not sent there.
    assert!(host.wait_log("error sending message to dead letter, origin topic: d dead letter topic nodlq", WAIT), "{}", host.logs());

    // Trace on delivery: no caller trace → daprd's zero traceparent, never a tracestate.
    let got = app.wait_calls("/a", 1, WAIT);
    assert_eq!(got[0].header("traceparent"), Some("00-00000000000000000000000000000000-0000000000000000-00"));
    assert_eq!(got[0].header("tracestate"), None);
    // A valid caller trace is kept (no Configuration: daprd's no-op tracer) and reaches
    // the app; an invalid one (upper-case hex) is no trace.
    assert_eq!(pub_with("b", &[("traceparent", TP), ("tracestate", "k=v ,  x=y")], "x").status, 204);
    assert_eq!(pub_with("b", &[("traceparent", &TP.to_uppercase()), ("tracestate", "k=v")], "y").status, 204);
    let got = app.wait_calls("/b", 3, WAIT);
    let (with, without) = (got[1].json(), got[2].json());
    assert_eq!(
        (with["traceid"].as_str(), with["traceparent"].as_str(), with["tracestate"].as_str()),
        (Some(TP), Some(TP), Some("k=v,x=y"))
    );
    assert_eq!(got[1].header("traceparent"), Some(TP));
    assert_eq!((without["traceid"].as_str(), without["tracestate"].as_str()), (Some(""), Some("")));
    assert_eq!(got[2].header("traceparent"), Some("00-00000000000000000000000000000000-0000000000000000-00"));

    // Conversions: `+json` is not JSON; an empty rawPayload is false; `ttl` as a Go
    // duration; a bad TTL is ignored; TTL 0 expires at once; an override of traceparent
    // fills both trace fields.
    let cases: &[(&str, &str, &str)] = &[
        ("a?metadata.rawPayload=", "text/plain", "plain"),
        ("a", "application/vnd.x+json", "[1]"),
        ("a?metadata.ttl=90s", "text/plain", "ttl"),
        ("a?metadata.ttlInSeconds=abc", "text/plain", "badttl"),
        ("a?metadata.ttlInSeconds=0", "text/plain", "expired"),
    ];
    for (q, ct, body) in cases {
        assert_eq!(pub_with(q, &[("content-type", ct)], body).status, 204, "{q}");
    }
    let over = format!("a?metadata.cloudevent.traceparent={TP}");
    assert_eq!(pub_with(&over, &[], "over").status, 204);
    let got = app.wait_calls("/a", 6, WAIT);
    std::thread::sleep(Duration::from_millis(200));
    let evs: Vec<serde_json::Value> = app.calls("/a").iter().map(|r| r.json()).collect();
    let by = |data: &str| evs.iter().find(|e| e["data"] == data).unwrap_or_else(|| panic!("{data} not delivered: {evs:?}")).clone();
    assert_eq!(by("plain")["datacontenttype"], "text/plain");
    assert_eq!(by("[1]")["datacontenttype"], "application/vnd.x+json");
    assert!(by("ttl")["expiration"].is_string());
    assert!(by("badttl").get("expiration").is_none());
    assert!(evs.iter().all(|e| e["data"] != "expired"), "TTL 0 is expired on arrival");
    assert_eq!((by("over")["traceid"].as_str(), by("over")["traceparent"].as_str()), (Some(TP), Some(TP)));
    assert_eq!(got.len(), 6);

    // Bulk publish: octet-stream events are base64 (decoded, then re-encoded in the
    // envelope); conversion errors come before id errors; the caller's trace is on
    // every entry.
    let bulk = |body: &str| send("POST", &host.url("/v1.0-alpha1/publish/bulk/pubsub/b"), &[("traceparent", TP)], body);
    assert_eq!(
        bulk(r#"[{"entryId":"1","event":"aGk=","contentType":"application/octet-stream"},{"EntryID":"2","event":{"n":1},"contentType":"application/json","metadata":{"k":"v"}}]"#)
            .status,
        204
    );
    let got = app.wait_calls("/b", 5, WAIT);
    let bin = got.iter().map(|r| r.json()).find(|e| e["data_base64"] == "aGk=").expect("the binary entry");
    assert_eq!(bin["traceparent"], TP);
    let obj = got.iter().find(|r| r.json()["data"] == json!({"n": 1})).expect("the JSON entry");
    assert_eq!(obj.header("k"), Some("v"));
    let a = bulk(r#"[{"entryId":"1","event":"%%%","contentType":"application/octet-stream"}]"#);
    assert_eq!(
        a.json()["message"],
        "error when marshalling cloud event envelope for topic b pubsub pubsub: error: unable to decode base64 application/octect-stream data: illegal base64 data at input byte 0"
    );
    let a = bulk(r#"[{"entryId":"1","event":{}}]"#);
    assert_eq!((a.status, a.json()["details"][1]["reason"].as_str()), (400, Some("DAPR_PUBSUB_MARSHAL_ENVELOPE")));
    assert!(a.body.contains("mismatch between contentType and event"), "{}", a.body);
    let a = bulk(r#"[{"entryId":"a","event":"x","contentType":"text/plain"},{"entryId":"a","event":1,"contentType":"text/plain"}]"#);
    assert_eq!(a.json()["details"][1]["reason"], "DAPR_PUBSUB_MARSHAL_ENVELOPE", "the conversion error comes first");
    let a = bulk(r#"[{"entryId":"a","event":"x","contentType":"text/plain"},{"entryId":"a","event":"y","contentType":"text/plain"}]"#);
    assert_eq!(a.json()["details"][1]["reason"], "DAPR_PUBSUB_MARSHAL_EVENTS");
    assert_eq!(bulk("null").status, 204, "null is no entries");
}

/// Service invocation of the app itself (#12 item 12), as pkg/api/http/directmessaging.go
/// and pkg/channel/http forward it: the URL form, the `dapr-app-id` header, the method
/// normalised, headers filtered, APP_API_TOKEN replacing the caller's token, the app's
/// answer passed back, `targets.apps` retries with `matching`, unknown ids not found.
#[test]
fn service_invocation_of_the_app_itself() {
    let app = TestApp::start(None);
    app.script("/p", &[(502, "PATCH")]);
    app.script("/flaky", &[(503, "busy")]);
    app.script("/broken", &[(500, "")]);
    let res = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      r3:\n        policy: constant\n        duration: 10ms\n        maxRetries: 3\n        matching:\n          httpStatusCodes: \"503\"\n  targets:\n    apps:\n      todo:\n        retry: r3\n";
    let dir = resources(&[("pubsub.yaml", PUBSUB), ("res.yaml", res)]);
    let (port_s, path) = (app.port.to_string(), dir.path().display().to_string());
    let host = HostBuilder::sidecar(&["--app-id", "todo", "--app-port", &port_s, "--resources-path", &path])
        .env("DAPR_API_TOKEN", "api-secret")
        .env("APP_API_TOKEN", "app-secret")
        .start();
    let tok = ("dapr-api-token", "api-secret");
    let start = std::time::Instant::now();
    while get_with(&host.url("/v1.0/healthz"), &[tok]).status != 204 {
        assert!(start.elapsed() < WAIT, "{}", host.logs());
        std::thread::sleep(Duration::from_millis(20));
    }

    let a = send(
        "POST",
        &host.url("/v1.0/invoke/todo/method/echo?x=1&y=%20"),
        &[tok, ("foo", "bar"), ("traceparent", TP), ("content-type", "text/plain"), ("proxy-authorization", "x")],
        "hi",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let got = app.calls("/echo?x=1&y=%20");
    assert_eq!(got.len(), 1, "the raw query is kept");
    let r = &got[0];
    assert_eq!((r.method.as_str(), r.body.as_slice()), ("POST", b"hi".as_slice()));
    assert_eq!((r.header("foo"), r.header("traceparent"), r.header("content-type")), (Some("bar"), Some(TP), Some("text/plain")));
    assert_eq!(r.header("dapr-api-token"), Some("app-secret"), "APP_API_TOKEN replaces the caller's token");
    assert_eq!((r.header("dapr-app-id"), r.header("proxy-authorization")), (None, None));

    // The app's status and body come back as they are, an error status too.
    let a = send("PATCH", &host.url("/v1.0/invoke/todo.default/method/p"), &[tok], "");
    assert_eq!((a.status, a.body.as_str()), (502, "PATCH"));
    assert_eq!(app.calls("/p")[0].method, "PATCH");
    // The header form: any path not an API route; the header is not forwarded.
    let a = send("GET", &host.url("/foo/bar"), &[tok, ("dapr-app-id", "todo")], "");
    assert_eq!(a.status, 200);
    assert_eq!(app.calls("/foo/bar")[0].header("dapr-app-id"), None);
    // The method is cleaned: no way above the app's root.
    send("GET", &host.url("/v1.0/invoke/todo/method/admin%2F..%2Fpublic"), &[tok], "");
    assert_eq!(app.calls("/public").len(), 1);
    let a = send("GET", &host.url("/v1.0/invoke/todo/method/test%23x"), &[tok], "");
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (500, Some("ERR_DIRECT_INVOKE")));
    // No method, and an app this sidecar does not know.
    let a = send("POST", &host.url("/v1.0/invoke/todo"), &[tok], "");
    assert_eq!(
        (a.status, a.json()["message"].as_str()),
        (404, Some("failed getting app id either from the URL path or the header dapr-app-id"))
    );
    let a = send("GET", &host.url("/v1.0/invoke/nosuchapp/method/x"), &[tok], "");
    assert_eq!(
        a.json(),
        json!({"errorCode": "ERR_DIRECT_INVOKE", "message": "failed to invoke, id: nosuchapp, err: couldn't find service: nosuchapp"})
    );
    assert_eq!(a.status, 500);
    // targets.apps.todo retries 503 (in `matching`) three times, and not a 500.
    let a = send("GET", &host.url("/v1.0/invoke/todo/method/flaky"), &[tok], "");
    assert_eq!((a.status, a.body.as_str()), (503, "busy"));
    assert_eq!(app.calls("/flaky").len(), 4);
    let a = send("GET", &host.url("/v1.0/invoke/todo/method/broken"), &[tok], "");
    assert_eq!(a.status, 500);
    assert_eq!(app.calls("/broken").len(), 1);
    // An API path with a verb it does not serve falls to invocation, as daprd's router.
    let a = send("GET", &host.url("/v1.0/publish/pubsub/t"), &[tok], "");
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (404, Some("ERR_DIRECT_INVOKE")));
}

/// The metadata document as daprd's encoder writes it (#12 item 10): struct field
/// order, empty lists left out, flat HTTP `rules`, each component's real capabilities,
/// the actor runtime disabled, `extended` with `daprRuntimeVersion` and PUT values.
#[test]
fn metadata_document_and_put_as_daprd() {
    let app = TestApp::start(None);
    let sub = "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  pubsubname: pubsub\n  topic: B\n  routes:\n    rules:\n    - match: ' event.type > \"x\" '\n      path: /x\n    default: /B\n";
    let state =
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n";
    let res = resources(&[("pubsub.yaml", PUBSUB), ("state.yaml", state), ("sub.yaml", sub)]);
    let host = sidecar_for("myapp", app.port, res.path(), None, WAIT);
    let want = format!(
        concat!(
            r#"{{"id":"myapp","runtimeVersion":"1.18.3","enabledFeatures":["HotReload","WorkflowsRemoteActivityReminder"],"#,
            r#""components":[{{"name":"pubsub","type":"pubsub.in-memory","version":"v1","capabilities":["SUBSCRIBE_WILDCARDS"]}},"#,
            r#"{{"name":"statestore","type":"state.in-memory","version":"v1","capabilities":["ETAG","TRANSACTIONAL","TTL","DELETE_WITH_PREFIX","KEYS_LIKE","ACTOR"]}}],"#,
            r#""extended":{{"daprRuntimeVersion":"1.18.3"}},"#,
            r#""subscriptions":[{{"pubsubname":"pubsub","topic":"B","rules":[{{"match":"event.type \u003e \"x\"","path":"/x"}},{{"path":"/B"}}],"deadLetterTopic":"","type":"DECLARATIVE"}}],"#,
            r#""appConnectionProperties":{{"port":{},"protocol":"http","channelAddress":"127.0.0.1"}},"#,
            r#""actorRuntime":{{"runtimeStatus":"DISABLED","hostReady":false,"placement":"placement: disconnected"}}}}"#,
            "\n"
        ),
        app.port
    );
    assert_eq!(get(&host.url("/v1.0/metadata")).body, want);
    let a = send("PUT", &host.url("/v1.0/metadata/foo"), &[], "bar");
    assert_eq!((a.status, a.body.as_str()), (204, ""));
    send("PUT", &host.url("/v1.0/metadata/daprRuntimeVersion"), &[], "x");
    let md = get(&host.url("/v1.0/metadata")).json();
    assert_eq!(md["extended"], json!({"daprRuntimeVersion": "1.18.3", "foo": "bar"}));
}

/// Subscription edge cases (#12 item 11): in-memory wildcards as contrib's event bus (a
/// trailing `*`, delivered under the pattern's name); two declarative subscriptions for
/// one pubsub+topic keep the first; a declarative one with no route subscribes and drops
/// every event; a programmatic one with no route is dropped and does not replace the
/// declarative one; a programmatic one replaces a declarative one in place.
#[test]
fn subscription_edge_cases_as_daprd() {
    let app = TestApp::start(Some(json!([
        {"pubsubname": "pubsub", "topic": "noroute"},
        {"pubsubname": "pubsub", "topic": "a", "route": "/123"},
        {"pubsubname": "pubsub", "topic": "orders*", "route": "/orders-any", "metadata": {"rawPayload": "true"}}
    ])));
    let decl = |name: &str, topic: &str, route: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: {name}\nspec:\n  pubsubname: pubsub\n  topic: {topic}\n  route: {route}\n"
        )
    };
    let blackhole =
        "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: hole\nspec:\n  pubsubname: pubsub\n  topic: hole\n";
    let res = resources(&[
        ("pubsub.yaml", PUBSUB),
        ("s1.yaml", &decl("s1", "dup", "/one")),
        ("s2.yaml", &decl("s2", "dup", "/two")),
        ("s3.yaml", &decl("s3", "noroute", "/x")),
        ("s4.yaml", &decl("s4", "a", "/456")),
        ("s5.yaml", blackhole),
    ]);
    let host = start_sidecar(&app, &res);
    for t in ["dup", "noroute", "a", "hole", "orders1", "orders/eu", "orders"] {
        assert_eq!(publish(&host, &format!("/v1.0/publish/pubsub/{}", t.replace('/', "%2F")), "text/plain", t).status, 204, "{t}");
    }
    assert_eq!(app.wait_calls("/orders-any", 2, WAIT).len(), 2);
    app.wait_calls("/one", 1, WAIT);
    app.wait_calls("/x", 1, WAIT);
    app.wait_calls("/123", 1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.calls("/one").len(), 1, "the first declarative subscription only");
    assert!(app.calls("/two").is_empty() && app.calls("/456").is_empty());
    let wild: Vec<serde_json::Value> = app.calls("/orders-any").iter().map(|r| r.json()).collect();
    assert_eq!(wild.len(), 2, "orders* matches orders1 and orders/eu, not orders");
    assert!(wild.iter().all(|e| e["topic"] == "orders*"), "delivered under the pattern: {wild:?}");
    assert!(host.logs().contains("has an empty routes"), "{}", host.logs());
    let md = get(&host.url("/v1.0/metadata")).json();
    let subs: Vec<(String, String)> = md["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["topic"].as_str().unwrap().to_string(), s["type"].as_str().unwrap().to_string()))
        .collect();
    let want: Vec<(String, String)> =
        [("dup", "DECLARATIVE"), ("noroute", "DECLARATIVE"), ("a", "PROGRAMMATIC"), ("hole", "DECLARATIVE"), ("orders*", "PROGRAMMATIC")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    assert_eq!(subs, want);
}

/// State leftovers (#12 item 7), as pkg/api/http/http.go and contrib's stores: the
/// in-memory store's `metadata.ttlExpireTime` (GET header, bulk item metadata);
/// `?metadata.*` applied to every transaction operation; bulk get without `keys`;
/// unknown concurrency/consistency refused as CheckRequestOptions; keyPrefix
/// lower-cased, an empty one its own prefix, one with `||` refused at start.
#[test]
fn state_ttl_expire_time_transaction_metadata_and_key_prefix() {
    let app = TestApp::start(None);
    let store = |name: &str, prefix: Option<&str>| {
        let md = prefix.map(|p| format!("  metadata:\n  - name: keyPrefix\n    value: \"{p}\"\n")).unwrap_or_default();
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.in-memory\n  version: v1\n{md}"
        )
    };
    let res = resources(&[
        ("s.yaml", &store("statestore", None)),
        ("p.yaml", &store("prefixed", Some("MyPrefix"))),
        ("e.yaml", &store("empty", Some(""))),
    ]);
    let host = start_sidecar(&app, &res);
    let save = |store: &str, q: &str, body: &str| send("POST", &host.url(&format!("/v1.0/state/{store}{q}")), &[], body).status;
    assert_eq!(
        save("statestore", "", r#"[{"key":"key1","value":"value1","metadata":{"ttlInSeconds":"3"}},{"key":"plain","value":1}]"#),
        204
    );
    let a = get(&host.url("/v1.0/state/statestore/key1"));
    let exp = a.header("metadata.ttlExpireTime").expect("ttlExpireTime").to_string();
    let t = chrono::DateTime::parse_from_rfc3339(&exp).unwrap();
    let left = t.signed_duration_since(chrono::Utc::now()).num_milliseconds();
    assert!(exp.ends_with('Z') && exp.len() == 20 && (1000..=3100).contains(&left), "{exp} ({left} ms)");
    assert_eq!(get(&host.url("/v1.0/state/statestore/plain")).header("metadata.ttlExpireTime"), None);
    let a = send("POST", &host.url("/v1.0/state/statestore/bulk"), &[], r#"{"keys":["key1","plain"]}"#).json();
    assert_eq!(a[0]["metadata"]["ttlExpireTime"], exp.as_str());
    assert!(a[1].get("metadata").is_none());
    assert_eq!(send("POST", &host.url("/v1.0/state/statestore/bulk?metadata.a=1"), &[], "{}").body, "[]");

    // The query's metadata reaches every operation of a transaction; the body's does not.
    let tx = |q: &str, body: &str| send("POST", &host.url(&format!("/v1.0/state/statestore/transaction{q}")), &[], body).status;
    assert_eq!(tx("?metadata.ttlInSeconds=1", r#"{"operations":[{"operation":"upsert","request":{"key":"t","value":1}}]}"#), 204);
    assert_eq!(tx("", r#"{"operations":[{"operation":"upsert","request":{"key":"u","value":1}}],"metadata":{"ttlInSeconds":"1"}}"#), 204);
    assert!(get(&host.url("/v1.0/state/statestore/t")).header("metadata.ttlExpireTime").is_some());
    assert!(get(&host.url("/v1.0/state/statestore/u")).header("metadata.ttlExpireTime").is_none());

    // CheckRequestOptions.
    let a = send("POST", &host.url("/v1.0/state/statestore"), &[], r#"[{"key":"k","value":1,"options":{"concurrency":"foo"}}]"#);
    assert_eq!(
        (a.status, a.json()["message"].as_str()),
        (500, Some("failed saving state in state store statestore: unrecognized concurrency model 'foo'"))
    );
    let a = send("POST", &host.url("/v1.0/state/statestore"), &[], r#"[{"key":"k","value":1,"options":{"consistency":"sometimes"}}]"#);
    assert_eq!(a.status, 500);
    // in-memory checks an ETag whatever the concurrency.
    let a = send(
        "POST",
        &host.url("/v1.0/state/statestore"),
        &[],
        r#"[{"key":"plain","value":2,"etag":"stale","options":{"concurrency":"last-write"}}]"#,
    );
    assert_eq!(a.status, 409);

    // keyPrefix `MyPrefix` and an empty one load and serve (the stored keys themselves
    // are checked on Redis in tests/redis.rs).
    assert_eq!(save("prefixed", "", r#"[{"key":"k","value":"p"}]"#), 204);
    assert_eq!(save("empty", "", r#"[{"key":"k","value":"e"}]"#), 204);
    assert_eq!(get(&host.url("/v1.0/state/prefixed/k")).body, "\"p\"");
    assert_eq!(get(&host.url("/v1.0/state/empty/k")).body, "\"e\"");
    drop(host);

    let bad = resources(&[("p.yaml", &store("bad", Some("a||b")))]);
    let err = sidecar_start_error(bad.path());
    assert!(err.contains("can't contain '||'"), "{err}");
}

/// Observability (#13): daprd's Prometheus metrics on `--metrics-port` (names and labels
/// of pkg/diagnostics) move as the sidecar publishes, delivers and stores; logs are one
/// JSON object per line with `--log-format json`.
#[test]
fn metrics_and_json_logs() {
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}])));
    let state =
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n";
    let res = resources(&[("pubsub.yaml", PUBSUB), ("state.yaml", state)]);
    let metrics_port = free_port().to_string();
    let (port_s, path) = (app.port.to_string(), res.path().display().to_string());
    let host =
        HostBuilder::sidecar(&["--app-id", "shop", "--app-port", &port_s, "--resources-path", &path, "--metrics-port", &metrics_port])
            .arg("--log-format")
            .arg("json")
            .start();
    wait_healthy(&host, WAIT);
    let scrape = || get(&format!("http://127.0.0.1:{metrics_port}/metrics")).body;
    for n in 0..2 {
        assert_eq!(publish(&host, "/v1.0/publish/pubsub/orders", "application/json", &format!(r#"{{"n":{n}}}"#)).status, 204);
    }
    app.wait_calls("/orders", 2, WAIT);
    assert_eq!(send("POST", &host.url("/v1.0/state/statestore"), &[], r#"[{"key":"k","value":1}]"#).status, 204);
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    };
    let start = std::time::Instant::now();
    let text = loop {
        let t = scrape();
        if value(
            &t,
            r#"dapr_component_pubsub_ingress_count{app_id="shop",component="pubsub",namespace="",process_status="success",status="success",topic="orders"}"#,
        ) == Some(2.0)
        {
            break t;
        }
        assert!(start.elapsed() < WAIT, "{t}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        value(&text, r#"dapr_component_pubsub_egress_count{app_id="shop",component="pubsub",namespace="",success="true",topic="orders"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"dapr_component_state_count{app_id="shop",component="statestore",namespace="",operation="set",success="true"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"dapr_http_server_request_count{app_id="shop",method="POST",path="/v1.0/publish/pubsub/orders",status="204"}"#),
        Some(2.0),
        "{text}"
    );
    assert!(text.contains(r#"dapr_component_pubsub_egress_latencies_bucket{app_id="shop",component="pubsub",namespace="",success="true",topic="orders",le="1"}"#), "{text}");
    // The counters move.
    assert_eq!(publish(&host, "/v1.0/publish/pubsub/orders", "application/json", "{}").status, 204);
    let text = scrape();
    assert_eq!(
        value(&text, r#"dapr_component_pubsub_egress_count{app_id="shop",component="pubsub",namespace="",success="true",topic="orders"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(get(&format!("http://127.0.0.1:{metrics_port}/other")).status, 404);

    // JSON logs: every log line is an object with a level and a message.
    let logs = host.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
    }
    assert!(lines.iter().any(|l| l.contains("app is subscribed to topic")), "{logs}");
}
