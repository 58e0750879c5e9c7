//! Redis against the real server on 127.0.0.1:6379: the stream and hash layout read
//! with plain Redis commands and checked field by field against Dapr's, a stream entry
//! written in Dapr's layout by another producer is delivered, a SIGKILLed sidecar loses
//! no published event, and a broker outage is a 500 that heals without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::app::TestApp;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn pubsub_yaml(db: i64, port: u16, extra: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:{port}\n  - name: redisDB\n    value: \"{db}\"\n{extra}"
    )
}

fn state_yaml(db: i64) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:6379\n  - name: redisDB\n    value: \"{db}\"\n"
    )
}

fn hash(conn: &mut redis::Connection, key: &str) -> std::collections::HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query(conn).unwrap()
}

#[test]
fn layout_matches_dapr_field_by_field() {
    let db = RedisDb::new();
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}])));
    let res = app_dir(&[("pubsub.yaml", &pubsub_yaml(db.db, 6379, "")), ("state.yaml", &state_yaml(db.db))]);
    let host = sidecar_for("orders", app.port, res.path(), None, WAIT);
    let mut conn = db.conn();

    // State: a hash per key (`<app-id>||<key>`) with `data` (JSON) and `version` 1, 2, ...
    let save = |body: &str| send("POST", &host.url("/v1.0/state/statestore"), &[], body);
    assert_eq!(save(r#"[{"key":"order-1","value":{"b":2,"a":1}}]"#).status, 204);
    let h = hash(&mut conn, "orders||order-1");
    assert_eq!(h.get("data").map(String::as_str), Some(r#"{"a":1,"b":2}"#));
    assert_eq!(h.get("version").map(String::as_str), Some("1"));
    let a = get(&host.url("/v1.0/state/statestore/order-1"));
    assert_eq!(a.header("etag"), Some("1"));
    assert_eq!(save(r#"[{"key":"order-1","value":"v2","etag":"1"}]"#).status, 204);
    assert_eq!(hash(&mut conn, "orders||order-1").get("version").map(String::as_str), Some("2"));
    let a = save(r#"[{"key":"order-1","value":"v3","etag":"1"}]"#);
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (409, Some("ERR_STATE_SAVE")));
    let a = save(r#"[{"key":"order-1","value":"v3","etag":"not-a-number"}]"#);
    assert_eq!(a.status, 400, "Redis ETags are numbers: {}", a.body);
    // An ETag on a missing key is accepted by state.redis (unlike in-memory).
    assert_eq!(save(r#"[{"key":"fresh","value":1,"etag":"7"}]"#).status, 204);
    // TTL.
    assert_eq!(save(r#"[{"key":"short","value":1,"metadata":{"ttlInSeconds":"100"}}]"#).status, 204);
    let ttl: i64 = redis::cmd("TTL").arg("orders||short").query(&mut conn).unwrap();
    assert!((1..=100).contains(&ttl), "ttl {ttl}");

    // Pub/sub: XADD <topic> * data <envelope> metadata <json>, consumer group = app id.
    let a = send(
        "POST",
        &host.url("/v1.0/publish/pubsub/orders?metadata.source-system=test"),
        &[("content-type", "application/json")],
        r#"{"id":42}"#,
    );
    assert_eq!(a.status, 204);
    let got = app.wait_calls("/orders", 1, WAIT);
    let entries: Vec<(String, Vec<(String, String)>)> = {
        let v: redis::streams::StreamRangeReply = redis::cmd("XRANGE").arg("orders").arg("-").arg("+").query(&mut conn).unwrap();
        v.ids
            .into_iter()
            .map(|e| {
                let fields = e.map.iter().map(|(k, v)| (k.clone(), redis::from_redis_value_ref::<String>(v).unwrap())).collect();
                (e.id, fields)
            })
            .collect()
    };
    assert_eq!(entries.len(), 1);
    let mut fields = entries[0].1.clone();
    fields.sort();
    assert_eq!(fields.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), vec!["data", "metadata"]);
    let data: Value = serde_json::from_str(&fields[0].1).unwrap();
    assert_eq!(data["data"], json!({"id": 42}));
    assert_eq!(data["topic"], "orders");
    assert_eq!(serde_json::from_str::<Value>(&fields[1].1).unwrap(), json!({"source-system": "test"}));
    assert_eq!(fields[0].1.as_bytes(), got[0].body.as_slice(), "the app gets exactly the stream's bytes");
    let groups: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("XINFO").arg("GROUPS").arg("orders").query(&mut conn).unwrap();
    assert_eq!(redis::from_redis_value_ref::<String>(&groups[0]["name"]).unwrap(), "orders");
    // Acked after SUCCESS: nothing pending.
    let start = std::time::Instant::now();
    loop {
        let pending: (i64, Value, Value, Value) = {
            let v: redis::Value = redis::cmd("XPENDING").arg("orders").arg("orders").query(&mut conn).unwrap();
            let n = match &v {
                redis::Value::Array(a) => redis::from_redis_value_ref::<i64>(&a[0]).unwrap(),
                _ => -1,
            };
            (n, Value::Null, Value::Null, Value::Null)
        };
        if pending.0 == 0 {
            break;
        }
        assert!(start.elapsed() < WAIT, "still pending");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The reverse: an entry another producer (e.g. real daprd) wrote in Dapr's layout.
    let ce = r#"{"id":"from-elsewhere","specversion":"1.0","type":"com.dapr.event.sent","source":"other-app","topic":"orders","pubsubname":"pubsub","datacontenttype":"application/json","data":{"id":7}}"#;
    let _: String = redis::cmd("XADD").arg("orders").arg("*").arg("data").arg(ce).arg("metadata").arg("{}").query(&mut conn).unwrap();
    let got = app.wait_calls("/orders", 2, WAIT);
    assert_eq!(got[1].json()["id"], "from-elsewhere");
    assert_eq!(got[1].body, ce.as_bytes());
}

#[test]
fn sigkill_loses_no_published_event() {
    let db = RedisDb::new();
    let extra = "  - name: processingTimeout\n    value: 1s\n  - name: redeliverInterval\n    value: 300ms\n  - name: concurrency\n    value: \"2\"\n";
    let res = app_dir(&[("pubsub.yaml", &pubsub_yaml(db.db, 6379, extra))]);
    // Pending entries of the killed consumer are reclaimed after processingTimeout.
    assert_sigkill_loses_no_published_event(res.path(), WAIT);
}

/// A Redis server of a test's own on a free port (stopping it disturbs nothing else);
/// with a folder, it keeps its data there across restarts (as a real broker's would).
struct OwnRedis {
    port: u16,
    dir: Option<tempfile::TempDir>,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(persistent: bool) -> Self {
        let mut me = Self { port: free_port(), dir: persistent.then(|| tempfile::tempdir().unwrap()), child: None };
        me.restart();
        me
    }

    /// Starts the server (again) and waits until it accepts connections.
    fn restart(&mut self) {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        match &self.dir {
            Some(d) => cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"]).arg(d.path()),
            None => cmd.args(["--appendonly", "no"]),
        };
        self.child = Some(cmd.stdout(std::process::Stdio::null()).spawn().expect("redis-server is needed for this test"));
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < WAIT, "redis-server did not start on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGKILL).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn broker_outage_is_a_500_and_heals_without_restart() {
    let mut server = OwnRedis::start(false);
    let port = server.port;
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "t", "route": "/t"}])));
    let res = app_dir(&[("pubsub.yaml", &pubsub_yaml(0, port, ""))]);
    let host = sidecar_for("orders", app.port, res.path(), None, WAIT);
    let publish =
        |n: i32| send("POST", &host.url("/v1.0/publish/pubsub/t"), &[("content-type", "application/json")], &format!(r#"{{"n":{n}}}"#));
    assert_eq!(publish(1).status, 204);
    app.wait_calls("/t", 1, WAIT);

    server.kill();
    let a = publish(2);
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (500, Some("ERR_PUBSUB_PUBLISH_MESSAGE")), "{}", a.body);

    server.restart();
    // The same sidecar publishes again once Redis is back, and the subscription resumes.
    let start = std::time::Instant::now();
    while publish(3).status != 204 {
        assert!(start.elapsed() < WAIT, "publishing never recovered:\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = app.wait_calls("/t", 2, WAIT);
    assert_eq!(got.last().unwrap().json()["data"]["n"], 3, "{}", host.logs());
}

/// The durable outbox (#11): the events go to a Redis of their own, which is stopped
/// between the commits and their publishing — once with the sidecar kept running, once
/// with the sidecar SIGKILLed before that Redis is back. The internal outbox topic and
/// the state live on the main Redis. Every transaction answered 204 must have its event
/// delivered, and no marker may be left behind.
#[test]
fn outbox_events_survive_a_broker_outage_and_a_sigkill() {
    let db = RedisDb::new();
    // Persistent, so the stream and its consumer group survive the restarts.
    let mut server = OwnRedis::start(true);
    let port = server.port;
    let quick = "  - name: processingTimeout\n    value: 1s\n  - name: redeliverInterval\n    value: 300ms\n";
    let outbox_pubsub = pubsub_yaml(db.db, 6379, quick).replace("name: pubsub\n", "name: outboxpubsub\n");
    let state = format!(
        "{}  - name: outboxPublishPubsub\n    value: pubsub\n  - name: outboxPublishTopic\n    value: todos\n  - name: outboxPubsub\n    value: outboxpubsub\n",
        state_yaml(db.db)
    );
    let res = app_dir(&[("pubsub.yaml", &pubsub_yaml(0, port, "")), ("outbox.yaml", &outbox_pubsub), ("state.yaml", &state)]);
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "todos", "route": "/todos"}])));
    let dapr_port = free_port();
    let mut host = sidecar_for("orders", app.port, res.path(), Some(dapr_port), WAIT);
    let commit = |host: &Host, n: i64| {
        let body = json!({"operations": [{"operation": "upsert", "request":
            {"key": format!("todo-{n}"), "value": {"n": n}, "metadata": {"contentType": "application/json"}}}]});
        let a = send("POST", &host.url("/v1.0/state/statestore/transaction"), &[("content-type", "application/json")], &body.to_string());
        assert_eq!(a.status, 204, "transaction {n}: {}", a.body);
    };
    let delivered = |app: &TestApp| -> std::collections::BTreeSet<i64> {
        app.calls("/todos").iter().filter_map(|r| r.json()["data"]["n"].as_i64()).collect()
    };
    let wait_all = |app: &TestApp, n: i64, host: &Host| {
        let start = std::time::Instant::now();
        loop {
            let got = delivered(app);
            if got.len() as i64 == n {
                return;
            }
            let missing: Vec<i64> = (0..n).filter(|i| !got.contains(i)).collect();
            assert!(start.elapsed() < WAIT, "events of committed transactions missing: {missing:?}\n{}", host.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for n in 0..10 {
        commit(&host, n);
    }
    wait_all(&app, 10, &host);

    // The events' broker goes down after the internal topic took them: the commits still
    // succeed, and the same sidecar publishes once the broker is back.
    server.kill();
    for n in 10..20 {
        commit(&host, n);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(delivered(&app).len(), 10);
    server.restart();
    wait_all(&app, 20, &host);

    // Down again, and the sidecar is SIGKILLed before it could publish: a new sidecar
    // finds the internal messages, sees their markers and publishes them.
    server.kill();
    for n in 20..30 {
        commit(&host, n);
    }
    host.child.kill().unwrap();
    host.child.wait().unwrap();
    server.restart();
    host = sidecar_for("orders", app.port, res.path(), Some(dapr_port), WAIT);
    wait_all(&app, 30, &host);

    let mut conn = db.conn();
    let start = std::time::Instant::now();
    loop {
        let left: Vec<String> = redis::cmd("KEYS").arg("outbox-*").query(&mut conn).unwrap();
        if left.is_empty() {
            break;
        }
        assert!(start.elapsed() < WAIT, "outbox markers left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let todos: Vec<String> = redis::cmd("KEYS").arg("orders||todo-*").query(&mut conn).unwrap();
    assert_eq!(todos.len(), 30);
}

fn pending(conn: &mut redis::Connection, stream: &str, group: &str) -> i64 {
    let v: redis::Value = redis::cmd("XPENDING").arg(stream).arg(group).query(conn).unwrap();
    match &v {
        redis::Value::Array(a) => redis::from_redis_value_ref::<i64>(&a[0]).unwrap(),
        other => panic!("XPENDING answered {other:?}"),
    }
}

/// contrib's redis streams `processMessage` with daprd's subscription handler, which
/// delivers on its own context (pkg/runtime/subscription/subscription.go:
/// `resiliency.NewRunner(context.Background(), …)`): a delivery is never cut off at
/// `processingTimeout`. A slow success is acked; a failure that comes after
/// processingTimeout stays pending and is reclaimed. Bare numbers for these two keys are
/// milliseconds (common/component/redis/redis.go: "legacy reasons").
#[test]
fn slow_deliveries_are_acked_and_late_failures_redelivered_as_contrib() {
    let db = RedisDb::new();
    let app = TestApp::start(Some(json!([
        {"pubsubname": "pubsub", "topic": "slow", "route": "/slow"},
        {"pubsubname": "pubsub", "topic": "failing", "route": "/failing"}
    ])));
    app.script("/slow", &[(200, r#"sleep:1000:{"status":"SUCCESS"}"#)]);
    app.script("/failing", &[(500, "sleep:800:")]);
    let extra = "  - name: processingTimeout\n    value: \"400\"\n  - name: redeliverInterval\n    value: \"200\"\n";
    let res = app_dir(&[("pubsub.yaml", &pubsub_yaml(db.db, 6379, extra))]);
    let host = sidecar_for("slowapp", app.port, res.path(), None, WAIT);
    let publish = |topic: &str| send("POST", &host.url(&format!("/v1.0/publish/pubsub/{topic}")), &[], "x").status;
    assert_eq!(publish("slow"), 204);
    assert_eq!(publish("failing"), 204);
    let mut conn = db.conn();

    // The slow success: acked once its answer comes (the reclaim loop may deliver it a
    // second time meanwhile, as contrib's does), then nothing is pending and no more
    // deliveries come. Before, the handler was cancelled at 400 ms and never acked.
    app.wait_calls("/slow", 1, WAIT);
    let start = std::time::Instant::now();
    while pending(&mut conn, "slow", "slowapp") != 0 {
        assert!(start.elapsed() < WAIT, "the slow success was never acked:\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let n = app.calls("/slow").len();
    assert!((1..=3).contains(&n), "a slow success is delivered at most a few times, then acked: {n}");
    assert_eq!(pending(&mut conn, "slow", "slowapp"), 0);

    // The late failure: left pending and delivered again and again ("400" read as 400 ms;
    // as seconds nothing would be redelivered within this test).
    let got = app.wait_calls("/failing", 3, WAIT);
    assert!(got.len() >= 3, "a failure after processingTimeout is redelivered: {} calls\n{}", got.len(), host.logs());
    assert_eq!(got[0].body, got[2].body, "the same entry each time");
}

/// state.redis as contrib's Set and daprd's key prefixes (#12 item 7): an explicit
/// last-write ignores the ETag; only a write that carried an ETag is a 409; a write
/// without one over a first-write key is a 500; `ttlInSeconds` ≤ 0 persists over the
/// component's TTL; keyPrefix is lower-cased.
#[test]
fn redis_state_etags_ttl_and_key_prefix_as_contrib() {
    let db = RedisDb::new();
    let state = format!("{}  - name: ttlInSeconds\n    value: \"100\"\n  - name: keyPrefix\n    value: MyPrefix\n", state_yaml(db.db));
    let app = TestApp::start(None);
    let res = app_dir(&[("state.yaml", &state)]);
    let host = sidecar_for("myapp", app.port, res.path(), None, WAIT);
    let mut conn = db.conn();
    let save = |body: &str| send("POST", &host.url("/v1.0/state/statestore"), &[], body);
    assert_eq!(save(r#"[{"key":"k","value":1}]"#).status, 204);
    assert_eq!(hash(&mut conn, "myprefix||k").get("version").map(String::as_str), Some("1"), "keyPrefix lower-cased");
    let a = save(r#"[{"key":"k","value":2,"etag":"9"}]"#);
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (409, Some("ERR_STATE_SAVE")));
    assert!(a.json()["message"].as_str().unwrap().starts_with("failed saving state in state store statestore: possible etag mismatch"));
    let a = save(r#"[{"key":"k","value":2,"etag":"9","options":{"concurrency":"last-write"}}]"#);
    assert_eq!(a.status, 204, "an explicit last-write ignores the ETag: {}", a.body);
    assert_eq!(get(&host.url("/v1.0/state/statestore/k")).header("etag"), Some("2"));
    assert_eq!(save(r#"[{"key":"k","value":2,"etag":"abc"}]"#).status, 400);
    assert_eq!(save(r#"[{"key":"new","value":1,"etag":"5"}]"#).status, 204, "an ETag on a missing key is accepted");
    assert_eq!(save(r#"[{"key":"f","value":1,"options":{"concurrency":"first-write"}}]"#).status, 204);
    let a = save(r#"[{"key":"f","value":2}]"#);
    assert_eq!((a.status, a.json()["errorCode"].as_str()), (500, Some("ERR_STATE_SAVE")), "{}", a.body);
    assert!(
        a.json()["message"].as_str().unwrap().starts_with("failed saving state in state store statestore: failed to set key myprefix||f")
    );
    // The component TTL applies by default; ttlInSeconds ≤ 0 persists.
    let ttl: i64 = redis::cmd("TTL").arg("myprefix||k").query(&mut conn).unwrap();
    assert!((1..=100).contains(&ttl), "{ttl}");
    assert_eq!(save(r#"[{"key":"k","value":3,"metadata":{"ttlInSeconds":"-1"}}]"#).status, 204);
    let ttl: i64 = redis::cmd("TTL").arg("myprefix||k").query(&mut conn).unwrap();
    assert_eq!(ttl, -1);
}

/// `enableTLS` as contrib's Redis settings (#12 item 9): a Redis listening only for TLS
/// (a self-signed certificate made here with the openssl CLI) serves pub/sub and state
/// with `insecureSkipTLSVerify`; without it, the untrusted certificate stops the start.
#[test]
fn redis_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI makes this test's certificate");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let port = free_port();
    let mut server = std::process::Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--tls-auth-clients", "no", "--tls-cert-file"])
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < WAIT, "redis-server (TLS) did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tls =
        |insecure: &str| format!("  - name: enableTLS\n    value: \"true\"\n  - name: insecureSkipTLSVerify\n    value: \"{insecure}\"\n");
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "t", "route": "/t"}])));
    let state = pubsub_yaml(0, port, &tls("true")).replace("name: pubsub", "name: statestore").replace("pubsub.redis", "state.redis");
    let res = app_dir(&[("pubsub.yaml", &pubsub_yaml(0, port, &tls("true"))), ("state.yaml", &state)]);
    let host = sidecar_for("tlsapp", app.port, res.path(), None, WAIT);
    assert_eq!(send("POST", &host.url("/v1.0/publish/pubsub/t"), &[], "over tls").status, 204);
    assert_eq!(app.wait_calls("/t", 1, WAIT)[0].json()["data"], "over tls");
    assert_eq!(send("POST", &host.url("/v1.0/state/statestore"), &[], r#"[{"key":"k","value":"v"}]"#).status, 204);
    assert_eq!(get(&host.url("/v1.0/state/statestore/k")).body, "\"v\"");
    drop(host);

    // Verified TLS against a self-signed certificate: the component cannot start.
    let res = app_dir(&[("pubsub.yaml", &pubsub_yaml(0, port, &tls("false")))]);
    let err = sidecar_start_error(res.path()).to_lowercase();
    assert!(err.contains("certificate"), "an untrusted certificate must not be accepted:\n{err}");
    let _ = server.kill();
    let _ = server.wait();
}

/// An outbound circuit breaker on a pub/sub component (#12 item 8, pkg/resiliency as the
/// publisher runs it): with Redis stopped, two publishes fail with the broker's error and
/// trip the breaker; the next is refused at once with daprd's "circuit breaker is open";
/// after `timeout`, with Redis back, a publish goes through and closes it.
#[test]
fn an_outbound_circuit_breaker_opens_and_closes_around_publish() {
    let mut server = OwnRedis::start(false);
    let port = server.port;
    let app = TestApp::start(None);
    let res = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    circuitBreakers:\n      cb:\n        timeout: 2s\n        trip: consecutiveFailures >= 2\n  targets:\n    components:\n      pubsub:\n        outbound:\n          circuitBreaker: cb\n";
    let dir = app_dir(&[("pubsub.yaml", &pubsub_yaml(0, port, "")), ("res.yaml", res)]);
    let host = sidecar_for("cbapp", app.port, dir.path(), None, WAIT);
    let publish = || send("POST", &host.url("/v1.0/publish/pubsub/t"), &[], "x");
    assert_eq!(publish().status, 204);
    server.kill();
    for _ in 0..2 {
        let a = publish();
        assert_eq!(a.status, 500, "{}", a.body);
        assert!(!a.body.contains("circuit breaker is open"), "{}", a.body);
    }
    let started = std::time::Instant::now();
    let a = publish();
    assert_eq!(a.json()["message"], "error when publishing to topic t in pubsub pubsub: circuit breaker is open", "{}", a.body);
    assert!(started.elapsed() < Duration::from_millis(500), "refused without trying: {:?}", started.elapsed());
    server.restart();
    std::thread::sleep(Duration::from_millis(2200));
    let start = std::time::Instant::now();
    while publish().status != 204 {
        assert!(start.elapsed() < WAIT, "never closed again:\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
}
