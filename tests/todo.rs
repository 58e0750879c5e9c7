//! The Todo system end to end: the real host, the embedded sidecar and the real
//! todo-api / todo-events components, over HTTP, with the repo's spin.toml and
//! runtime-config. Each scenario runs once per broker, swapping only the resources path.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

/// Runs a scenario once per broker.
macro_rules! on_each_broker {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn in_memory() {
                super::$name(&super::Broker::InMemory)
            }
            /// The same scenario with the components and the sidecar talking over
            /// loopback TCP instead of in-process: both paths must behave the same.
            #[test]
            fn in_memory_over_network() {
                super::$name(&super::Broker::InMemoryOverNetwork)
            }
            #[test]
            fn redis() {
                super::$name(&super::Broker::redis())
            }
            #[test]
            fn kafka() {
                super::$name(&super::Broker::kafka())
            }
        }
    )*};
}

on_each_broker!(
    crud_validation_and_events,
    concurrent_writers_keep_the_list_consistent_and_etags_conflict_once,
    retry_is_redelivered_then_dead_lettered,
    drop_dead_letters_and_duplicates_count_once,
    the_list_pages_with_a_cursor_and_skips_deleted,
);

#[test]
fn calls_between_components_and_the_embedded_sidecar_stay_in_process() {
    let root = repo_root();
    guest_wasm("todo-api");
    let dapr_port = free_port().to_string();
    let host = HostBuilder::new(&root.join("spin.toml"))
        .env("RUST_LOG", "info,spindapr::in_process=debug")
        .args(["--dapr-http-port", &dapr_port, "--variable", &format!("dapr_url=http://127.0.0.1:{dapr_port}")])
        .arg("--resources-path")
        .arg(root.join("runtime-config/dapr"))
        .start();
    wait_healthy(&host, WAIT);
    // The components call the sidecar at its network address; the host answers in-process.
    let a = post(&host, "/todos", r#"{"title":"in-process"}"#);
    assert_eq!(a.status, 201, "{}", a.body);
    wait_activity(&host, |a| a["total"] == 1);
    let logs = host.logs();
    assert!(logs.contains("[todo-api] POST /v1.0/state/statestore/transaction served in-process"), "{logs}");
    assert!(logs.contains("[todo-events] POST /v1.0/state/activitystore served in-process"), "{logs}");
    // And the sidecar reached the app without a socket: discovery and the delivery.
    assert!(logs.contains("[sidecar] GET /dapr/subscribe served in-process"), "{logs}");
    assert!(logs.contains("[sidecar] POST /events/todo served in-process"), "{logs}");
}

/// Starts `up` on the repo's spin.toml with the broker's resources.
fn start(broker: &Broker, extra: &[&str]) -> Host {
    guest_wasm("todo-api");
    let root = repo_root();
    let dapr_port = free_port().to_string();
    let mut b = HostBuilder::new(&root.join("spin.toml"))
        .arg("--dapr-http-port")
        .arg(&dapr_port)
        .arg("--variable")
        .arg(format!("dapr_url=http://127.0.0.1:{dapr_port}"))
        .arg("--resources-path")
        .arg(broker.resources())
        .arg("--runtime-config-file")
        .arg(root.join("runtime-config/runtime-config.toml"));
    for a in extra.iter().chain(broker.extra_args()) {
        b = b.arg(a);
    }
    let host = b.start();
    // Ready once the sidecar has read the subscriptions.
    wait_healthy(&host, WAIT);
    host
}

fn post(host: &Host, path: &str, body: &str) -> Answer {
    send("POST", &host.url(path), &[("content-type", "application/json")], body)
}

fn activity(host: &Host) -> Value {
    get(&host.url("/activity")).json()
}

fn wait_activity(host: &Host, pred: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let a = activity(host);
        if pred(&a) {
            return a;
        }
        assert!(start.elapsed() < WAIT, "activity never got there: {a}\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `GET /todos` with `query`: the todos and the next cursor.
fn list(host: &Host, query: &str) -> (Vec<Value>, Option<String>) {
    let a = get(&host.url(&format!("/todos{query}")));
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    let todos = v["todos"].as_array().unwrap_or_else(|| panic!("no todos array: {v}")).clone();
    (todos, v["next_cursor"].as_str().map(str::to_owned))
}

/// The list is projected from the events: wait until it shows `n` todos for `query`.
fn wait_list(host: &Host, query: &str, n: usize) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let (todos, _) = list(host, query);
        if todos.len() == n {
            return todos;
        }
        assert!(start.elapsed() < WAIT, "the list never reached {n} todos (has {}):\n{}", todos.len(), host.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn crud_validation_and_events(broker: &Broker) {
    let host = start(broker, &[]);
    let a = post(&host, "/todos", r#"{"title":"  buy milk  "}"#);
    assert_eq!(a.status, 201, "{}", a.body);
    let todo = a.json();
    let id = todo["id"].as_str().unwrap().to_string();
    assert_eq!(todo["title"], "buy milk");
    assert_eq!(todo["completed"], false);
    assert_eq!(a.header("location"), Some(format!("/todos/{id}").as_str()));
    assert_eq!(a.header("etag"), Some("\"1\""));
    post(&host, "/todos", r#"{"title":"walk dog","completed":true}"#);

    let a = get(&host.url(&format!("/todos/{id}")));
    assert_eq!((a.status, a.json()["title"].as_str()), (200, Some("buy milk")));
    let titles: Vec<Value> = wait_list(&host, "", 2).iter().map(|t| t["title"].clone()).collect();
    if broker.delivers_in_order() {
        assert_eq!(titles, ["buy milk", "walk dog"], "creation order");
    } else {
        // pubsub.redis delivers with concurrent workers: the list is in arrival order.
        assert!(titles.contains(&"buy milk".into()) && titles.contains(&"walk dog".into()), "{titles:?}");
    }
    assert_eq!(wait_list(&host, "?completed=true", 1)[0]["title"], "walk dog");
    assert_eq!(wait_list(&host, "?completed=false", 1)[0]["title"], "buy milk");

    let a = send("PATCH", &host.url(&format!("/todos/{id}")), &[("if-match", "\"1\"")], r#"{"completed":true}"#);
    assert_eq!((a.status, a.json()["completed"].as_bool(), a.header("etag")), (200, Some(true), Some("\"2\"")));
    let a = send("PUT", &host.url(&format!("/todos/{id}")), &[], r#"{"title":"buy oat milk","completed":true}"#);
    assert_eq!((a.status, a.json()["title"].as_str()), (200, Some("buy oat milk")));
    let a = send("PATCH", &host.url(&format!("/todos/{id}")), &[("if-match", "\"1\"")], r#"{"title":"stale"}"#);
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (412, Some("precondition_failed")));
    let a = send("DELETE", &host.url(&format!("/todos/{id}")), &[], "");
    assert_eq!((a.status, a.body.as_str()), (204, ""));
    assert_eq!(get(&host.url(&format!("/todos/{id}"))).status, 404);
    assert_eq!(send("DELETE", &host.url(&format!("/todos/{id}")), &[], "").status, 404);

    // Each change reached the subscriber as a Dapr outbox CloudEvent.
    let feed = wait_activity(&host, |a| a["total"] == 5);
    assert_eq!(feed["counts"], json!({"todo.created": 2, "todo.completed": 1, "todo.updated": 1, "todo.deleted": 1}));
    let latest = feed["latest"].as_array().unwrap();
    assert_eq!(latest[0]["event_type"], "todo.deleted");
    assert!(latest.iter().all(|e| e["event_id"].as_str().unwrap().starts_with("outbox-")), "{feed}");
    assert!(host.wait_log(&format!("[todo-events] todo-events: received todo.created for todo {id}"), WAIT), "{}", host.logs());

    // Every error case, with a JSON error naming the field.
    let cases: &[(&str, &str, &str, u16, Option<&str>)] = &[
        ("POST", "/todos", "{", 400, None),
        ("POST", "/todos", r#"{"title":""}"#, 400, Some("title")),
        ("POST", "/todos", r#"{"title":"   "}"#, 400, Some("title")),
        ("POST", "/todos", r#"{"title":7}"#, 400, Some("title")),
        ("POST", "/todos", r#"{"title":"x","done":true}"#, 400, Some("done")),
        ("POST", "/todos", r#"{"title":"x","completed":"no"}"#, 400, Some("completed")),
        ("PUT", "/todos/nope", r#"{"title":"x","completed":false}"#, 404, None),
        ("PATCH", "/todos/nope", r#"{"completed":true}"#, 404, None),
        ("GET", "/todos/nope", "", 404, None),
        ("GET", "/todos?completed=maybe", "", 400, Some("completed")),
        ("GET", "/todos?limit=0", "", 400, Some("limit")),
        ("GET", "/todos?limit=99999999999999999999999", "", 400, Some("limit")),
        ("GET", "/todos?cursor=../../etc", "", 400, Some("cursor")),
        ("GET", "/todos?sort=desc", "", 400, Some("sort")),
        ("DELETE", "/todos", "", 405, None),
    ];
    for (method, path, body, status, field) in cases {
        let a = send(method, &host.url(path), &[], body);
        assert_eq!(a.status, *status, "{method} {path} {body}: {}", a.body);
        assert_eq!(a.json()["error"]["field"].as_str(), *field, "{method} {path} {body}");
    }
    let long = format!(r#"{{"title":"{}"}}"#, "x".repeat(201));
    assert_eq!(post(&host, "/todos", &long).status, 400);
    let huge = format!(r#"{{"title":"{}"}}"#, "x".repeat(70 * 1024));
    assert_eq!(post(&host, "/todos", &huge).status, 413);
    // Nothing invalid was stored or published.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(list(&host, "").0.len(), 1);
    assert_eq!(activity(&host)["total"], 5);
}

fn concurrent_writers_keep_the_list_consistent_and_etags_conflict_once(broker: &Broker) {
    let host = start(broker, &[]);
    let base = host.url("");
    let creators: Vec<_> = (0..16)
        .map(|i| {
            let url = format!("{base}/todos");
            std::thread::spawn(move || {
                let a = send("POST", &url, &[], &format!(r#"{{"title":"t{i}"}}"#));
                assert_eq!(a.status, 201, "{}", a.body);
                a.status
            })
        })
        .collect();
    for c in creators {
        assert_eq!(c.join().unwrap(), 201);
    }
    let list = wait_list(&host, "", 16);
    wait_activity(&host, |a| a["counts"]["todo.created"] == 16);

    // Two updates with the same ETag: exactly one wins, the other gets 412.
    for (round, todo) in list.iter().take(5).enumerate() {
        let id = todo["id"].as_str().unwrap().to_string();
        let etag = get(&host.url(&format!("/todos/{id}"))).header("etag").unwrap().to_string();
        let racers: Vec<_> = (0..2)
            .map(|n| {
                let (url, etag) = (format!("{base}/todos/{id}"), etag.clone());
                std::thread::spawn(move || send("PATCH", &url, &[("if-match", &etag)], &format!(r#"{{"title":"racer {n}"}}"#)).status)
            })
            .collect();
        let mut statuses: Vec<u16> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        statuses.sort();
        assert_eq!(statuses, vec![200, 412], "round {round}");
    }
}

#[test]
fn sidecar_unreachable_is_503_and_nothing_is_written() {
    let closed = free_port();
    let host = HostBuilder::new(&repo_root().join("spin.toml"))
        .arg("--no-sidecar")
        .arg("--variable")
        .arg(format!("dapr_url=http://127.0.0.1:{closed}"))
        .start();
    guest_wasm("todo-api");
    let a = post(&host, "/todos", r#"{"title":"lost?"}"#);
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (503, Some("dapr_unavailable")), "{}", a.body);
    assert_eq!(get(&host.url("/todos")).status, 503);
    assert_eq!(get(&host.url("/activity")).status, 503);
}

fn retry_is_redelivered_then_dead_lettered(broker: &Broker) {
    // The subscriber's own state store is missing: every event it receives fails its
    // state call, so it answers RETRY; the Resiliency spec allows 3 retries.
    let host = start(broker, &["--variable", "activity_store=missing-store"]);
    let a = post(&host, "/todos", r#"{"title":"will retry"}"#);
    assert_eq!(a.status, 201);
    assert!(host.wait_log("todo-events: dead-lettered event outbox-", WAIT), "{}", host.logs());
    let retries = host.logs().matches("todo-events: RETRY event outbox-").count();
    assert_eq!(retries, 4, "one delivery and 3 retries:\n{}", host.logs());
}

fn drop_dead_letters_and_duplicates_count_once(broker: &Broker) {
    let host = start(broker, &[]);
    let publish = |ct: &str, body: &str| send("POST", &host.dapr_url("/v1.0/publish/pubsub/todo-events"), &[("content-type", ct)], body);
    // Malformed and unknown event types: DROP with a reason, then the dead-letter route.
    assert_eq!(publish("application/json", r#"{"event_type":"todo.exploded","todo":{"id":"x"}}"#).status, 204);
    assert_eq!(publish("text/plain", "not an event").status, 204);
    let feed = wait_activity(&host, |a| a["dead_lettered"] == 2);
    assert_eq!(feed["total"], 0);
    assert!(host.logs().contains("todo-events: DROP: event"), "{}", host.logs());
    assert!(host.logs().contains("unknown event_type"), "the log says why: {}", host.logs());

    // The same CloudEvent delivered twice (at-least-once) is counted once.
    let ce = r#"{"id":"dup-1","specversion":"1.0","type":"com.dapr.event.sent","source":"test","datacontenttype":"application/json","data":{"event_type":"todo.created","todo":{"id":"t-dup","title":"twice"},"occurred_at":"now"}}"#;
    assert_eq!(publish("application/cloudevents+json", ce).status, 204);
    assert_eq!(publish("application/cloudevents+json", ce).status, 204);
    assert!(host.wait_log("todo-events: duplicate event dup-1 ignored", WAIT), "{}", host.logs());
    let feed = activity(&host);
    assert_eq!((feed["total"].as_u64(), feed["counts"]["todo.created"].as_u64()), (Some(1), Some(1)), "{feed}");
}

fn the_list_pages_with_a_cursor_and_skips_deleted(broker: &Broker) {
    let host = start(broker, &[]);
    // Almost eight list pages (32 ids each), created one after another.
    let ids: Vec<String> =
        (0..250).map(|i| post(&host, "/todos", &format!(r#"{{"title":"n{i}"}}"#)).json()["id"].as_str().unwrap().to_string()).collect();
    wait_list(&host, "?limit=1000", 250);
    for gone in [&ids[0], &ids[99], &ids[100], &ids[249]] {
        assert_eq!(send("DELETE", &host.url(&format!("/todos/{gone}")), &[], "").status, 204);
    }
    // Walk it 30 at a time: every live todo once, in creation order, then no cursor.
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=30&cursor={c}"),
            None => "?limit=30".to_string(),
        };
        let (todos, next) = list(&host, &q);
        assert!(todos.len() <= 30);
        seen.extend(todos.iter().map(|t| t["id"].as_str().unwrap().to_string()));
        pages += 1;
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
        assert!(pages < 20, "the cursor never ended");
    }
    let expected: Vec<String> = ids.iter().enumerate().filter(|(i, _)| ![0, 99, 100, 249].contains(i)).map(|(_, id)| id.clone()).collect();
    if broker.delivers_in_order() {
        assert_eq!(seen, expected, "in the order the events arrived: creation order");
    } else {
        // pubsub.redis delivers with concurrent workers: the list is in arrival order.
        let (mut a, mut b) = (seen.clone(), expected.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "every live todo exactly once");
    }
    assert_eq!(pages, 9, "246 todos, 30 a page");
    // The default limit is 100; a cursor past the end answers nothing, and no cursor.
    assert_eq!(list(&host, "").0.len(), 100);
    assert_eq!(list(&host, "?cursor=99999.0"), (Vec::new(), None));
}

#[test]
fn declarative_subscription_matches_the_programmatic_one() {
    // What todo-events declares at GET /dapr/subscribe ...
    let host = start(&Broker::InMemory, &[]);
    let programmatic = get(&host.url("/dapr/subscribe")).json();
    drop(host);
    // ... equals what runtime-config/dapr/declarative declares.
    let root = repo_root();
    let path = root.join("runtime-config/dapr/declarative").display().to_string();
    let in_memory = root.join("runtime-config/dapr").display().to_string();
    let sidecar = HostBuilder::sidecar(&["--app-id", "todo", "--resources-path", &in_memory, "--resources-path", &path]).start();
    let md = get(&sidecar.url("/v1.0/metadata")).json();
    let declared: Vec<Value> = md["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut v = json!({"pubsubname": s["pubsubname"], "topic": s["topic"], "route": s["rules"][0]["path"]});
            if s["deadLetterTopic"] != "" {
                v["deadLetterTopic"] = s["deadLetterTopic"].clone();
            }
            v
        })
        .collect();
    assert_eq!(Value::Array(declared), programmatic);
    assert!(md["subscriptions"].as_array().unwrap().iter().all(|s| s["type"] == "DECLARATIVE"));
}

#[test]
fn two_replicas_on_one_redis_share_the_list_and_count_each_event_once() {
    // As on Kubernetes: two replicas of the app (one app id, one consumer group) on one
    // Redis, each with its own embedded sidecar.
    let broker = Broker::redis();
    let (a, b) = (start(&broker, &[]), start(&broker, &[]));
    let creators: Vec<_> = [a.url("/todos"), b.url("/todos")]
        .into_iter()
        .enumerate()
        .flat_map(|(r, url)| {
            (0..3).map(move |t| {
                let url = url.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .map(|i| {
                            let ans = send("POST", &url, &[], &format!(r#"{{"title":"r{r} t{t} #{i}"}}"#));
                            assert_eq!(ans.status, 201, "{}", ans.body);
                            ans.json()["id"].as_str().unwrap().to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
        })
        .collect();
    let mut ids: Vec<String> = creators.into_iter().flat_map(|c| c.join().unwrap()).collect();
    ids.sort();
    // Each event went to one replica's subscriber, and counts once in the shared feed.
    wait_activity(&a, |f| f["counts"]["todo.created"] == 120);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(activity(&b)["counts"]["todo.created"], 120, "no event counted twice");
    // Both replicas list the same 120 todos, each once.
    for host in [&a, &b] {
        let mut listed: Vec<String> = wait_list(host, "?limit=1000", 120).iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
        listed.sort();
        assert_eq!(listed, ids);
    }
}

/// Trace context through the whole write path with no guest code (#13): the host hands
/// the `POST /todos` request's `traceparent` to the component's calls, the sidecar puts
/// it on the outbox event (the Redis stream's CloudEvent: `traceid` and `traceparent`),
/// and the delivery of that event carries it (seen by a second app subscribed to the
/// same stream through a sidecar of its own).
#[test]
fn a_traceparent_on_post_todos_reaches_the_stream_and_the_subscribers() {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let broker = Broker::redis();
    let host = start(&broker, &[]);
    let observer = common::app::TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "todo-events", "route": "/seen"}])));
    let _side = sidecar_for("observer", observer.port, &broker.resources(), None, WAIT);
    let a = send(
        "POST",
        &host.url("/todos"),
        &[("content-type", "application/json"), ("traceparent", TP), ("tracestate", "k=v")],
        r#"{"title":"traced"}"#,
    );
    assert_eq!(a.status, 201, "{}", a.body);

    let Broker::Redis { db, .. } = &broker else { unreachable!() };
    let mut conn = db.conn();
    let start = std::time::Instant::now();
    let ce = loop {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE").arg("todo-events").arg("-").arg("+").query(&mut conn).unwrap();
        let found = entries.ids.iter().find_map(|e| {
            let data = redis::from_redis_value_ref::<String>(e.map.get("data")?).ok()?;
            let v: Value = serde_json::from_str(&data).ok()?;
            (v["data"]["todo"]["title"] == "traced" || data.contains("\"traced\"")).then_some(v)
        });
        if let Some(v) = found {
            break v;
        }
        assert!(start.elapsed() < WAIT, "no event in the stream:\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((ce["traceid"].as_str(), ce["traceparent"].as_str(), ce["tracestate"].as_str()), (Some(TP), Some(TP), Some("k=v")), "{ce}");
    let seen = observer.wait_calls("/seen", 1, WAIT);
    let delivered = seen.iter().find(|r| String::from_utf8_lossy(&r.body).contains("\"traced\"")).expect("the event delivered");
    assert_eq!(delivered.header("traceparent"), Some(TP));
}

/// `up` serves one metrics endpoint (#13) with the host's per-component counters and
/// its embedded sidecar's daprd metrics.
#[test]
fn up_serves_host_and_sidecar_metrics_on_one_port() {
    let port = free_port().to_string();
    let host = start(&Broker::InMemory, &["--metrics-port", &port]);
    assert_eq!(post(&host, "/todos", r#"{"title":"counted"}"#).status, 201);
    wait_activity(&host, |a| a["total"] == 1);
    let text = get(&format!("http://127.0.0.1:{port}/metrics")).body;
    for series in [
        r#"spindapr_host_request_count{component="todo-api",status="201"} 1"#,
        r#"spindapr_host_instances_active{component="todo-api"} 0"#,
        r#"dapr_component_pubsub_ingress_count{app_id="todo",component="pubsub",namespace="",process_status="success",status="success",topic="todo-events"} 1"#,
        r#"dapr_component_state_count{app_id="todo",component="statestore",namespace="",operation="transaction",success="true"} 1"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert!(text.contains("spindapr_host_request_duration_seconds_bucket{component=\"todo-events\""), "{text}");
}

/// Spans exported over OTLP/HTTP (#13), with `OTEL_EXPORTER_OTLP_ENDPOINT` set as for
/// Spin, decoded from real OTLP protobuf: one trace from the caller's `traceparent`
/// through the API component's server span, its call to the sidecar, the sidecar's
/// transaction, the delivery to the subscriber and the subscriber's own server span,
/// each the child of the one before.
#[test]
fn spans_from_the_request_to_the_subscriber_are_one_trace() {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let otlp = OtlpReceiver::start();
    guest_wasm("todo-api");
    let root = repo_root();
    let dapr_port = free_port().to_string();
    let host = HostBuilder::new(&root.join("spin.toml"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://127.0.0.1:{}", otlp.port))
        .args(["--dapr-http-port", &dapr_port, "--variable", &format!("dapr_url=http://127.0.0.1:{dapr_port}")])
        .arg("--resources-path")
        .arg(root.join("runtime-config/dapr"))
        .start();
    wait_healthy(&host, WAIT);
    let a = send("POST", &host.url("/todos"), &[("content-type", "application/json"), ("traceparent", TP)], r#"{"title":"spanned"}"#);
    assert_eq!(a.status, 201, "{}", a.body);
    wait_activity(&host, |a| a["total"] == 1);

    let trace_id = hex_bytes("4bf92f3577b34da6a3ce929d0e0e4736");
    let start = std::time::Instant::now();
    let spans = loop {
        let spans: Vec<_> = otlp.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
        if spans.iter().any(|s| s.name.starts_with("POST /events")) {
            break spans;
        }
        assert!(start.elapsed() < WAIT, "spans so far: {:?}\n{}", spans.iter().map(|s| &s.name).collect::<Vec<_>>(), host.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    let find = |pred: &dyn Fn(&opentelemetry_proto::tonic::trace::v1::Span) -> bool, what: &str| {
        spans
            .iter()
            .find(|s| pred(s))
            .unwrap_or_else(|| panic!("no {what} span among {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>()))
            .clone()
    };
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let api = find(&|s| s.name == "POST /todos/..." && s.kind == SpanKind::Server as i32, "API server");
    assert_eq!(api.parent_span_id, hex_bytes("00f067aa0ba902b7"), "the caller's span is the parent");
    let tx = find(&|s| s.name == "POST /v1.0/state/statestore/transaction" && s.kind == SpanKind::Server as i32, "sidecar transaction");
    let call = find(&|s| s.span_id == tx.parent_span_id, "the API's call to the sidecar");
    assert_eq!((call.kind, call.parent_span_id.clone()), (SpanKind::Client as i32, api.span_id.clone()));
    let delivery = find(&|s| s.kind == SpanKind::Consumer as i32 && s.name == "todo-events process", "delivery");
    assert_eq!(delivery.parent_span_id, tx.span_id, "the event carries the transaction's context");
    let sub = find(&|s| s.name.starts_with("POST /events") && s.kind == SpanKind::Server as i32, "subscriber server");
    assert_eq!(sub.parent_span_id, delivery.span_id);
    let attr = |s: &opentelemetry_proto::tonic::trace::v1::Span, k: &str| {
        s.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.clone()).and_then(|v| v.value).map(|v| format!("{v:?}"))
    };
    assert!(attr(&delivery, "dapr.delivery.outcome").is_some_and(|v| v.contains("success")), "{delivery:?}");
    assert!(attr(&api, "spin.component").is_some_and(|v| v.contains("todo-api")), "{api:?}");
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
