//! Kafka against a real Kafka-protocol broker (tansu, one per test): record key and
//! headers as Dapr writes them (read back with an independent consumer), delivery
//! metadata, a failed message retried in place before the next one, and a SIGKILLed
//! sidecar losing no published event (offsets are stored only after handling).

mod common;

use std::time::Duration;

use common::app::TestApp;
use common::*;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use serde_json::json;

// A restarted consumer waits for the killed one's session (10 s) to expire.
const WAIT: Duration = Duration::from_secs(45);

fn pubsub_yaml(port: u16, extra: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.kafka\n  version: v1\n  metadata:\n  - name: brokers\n    value: 127.0.0.1:{port}\n  - name: authType\n    value: none\n  - name: initialOffset\n    value: oldest\n{extra}"
    )
}

fn sidecar(app_port: u16, res: &tempfile::TempDir, dapr_port: Option<u16>) -> Host {
    let (ap, path) = (app_port.to_string(), res.path().display().to_string());
    let dp = dapr_port.map(|p| p.to_string());
    let mut args = vec!["--app-id", "orders", "--app-port", &ap, "--resources-path", &path];
    if let Some(p) = &dp {
        args.extend(["--dapr-http-port", p]);
    }
    let host = HostBuilder::sidecar(&args).start();
    let start = std::time::Instant::now();
    while get(&host.url("/v1.0/healthz")).status != 204 {
        assert!(start.elapsed() < WAIT, "not healthy:\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    host
}

#[test]
fn records_carry_key_and_headers_and_deliveries_the_kafka_metadata() {
    let broker = KafkaBroker::start();
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}])));
    let res = app_dir(&[("pubsub.yaml", &pubsub_yaml(broker.port, ""))]);
    let host = sidecar(app.port, &res, None);
    let a = send(
        "POST",
        &host.url("/v1.0/publish/pubsub/orders?metadata.partitionKey=order-7&metadata.custom=yes"),
        &[("content-type", "application/json")],
        r#"{"id":7}"#,
    );
    assert_eq!(a.status, 204, "{}", a.body);
    let got = app.wait_calls("/orders", 1, WAIT);
    assert_eq!(got.len(), 1, "{}", host.logs());
    let r = &got[0];
    assert_eq!(r.json()["data"], json!({"id": 7}));
    assert_eq!(r.header("__key"), Some("order-7"));
    assert_eq!(r.header("__topic"), Some("orders"));
    assert_eq!(r.header("__partition"), Some("0"));
    assert_eq!(r.header("__offset"), Some("0"));
    assert_eq!(r.header("custom"), Some("yes"));

    // An independent consumer sees Dapr's record layout: key, headers, the envelope as value.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{}", broker.port))
        .set("group.id", "inspector")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    let start = std::time::Instant::now();
    let record = loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            break m.detach();
        }
        assert!(start.elapsed() < WAIT, "the inspector read nothing");
    };
    assert_eq!(record.key(), Some(&b"order-7"[..]));
    let headers = record.headers().unwrap();
    let custom = headers.iter().find(|h| h.key == "custom").and_then(|h| h.value).unwrap();
    assert_eq!(custom, b"yes");
    assert_eq!(record.payload().unwrap(), r.body.as_slice(), "the app gets the record's exact bytes");
}

#[test]
fn a_failed_message_is_retried_in_place() {
    let broker = KafkaBroker::start();
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "jobs", "route": "/jobs"}])));
    app.script("/jobs", &[(500, ""), (500, ""), (200, r#"{"status":"SUCCESS"}"#)]);
    let res = app_dir(&[("pubsub.yaml", &pubsub_yaml(broker.port, "  - name: backOffInitialInterval\n    value: 100ms\n"))]);
    let host = sidecar(app.port, &res, None);
    for n in [1, 2] {
        let a = send("POST", &host.url("/v1.0/publish/pubsub/jobs"), &[("content-type", "application/json")], &format!(r#"{{"n":{n}}}"#));
        assert_eq!(a.status, 204);
    }
    let got = app.wait_calls("/jobs", 4, WAIT);
    let order: Vec<i64> = got.iter().map(|r| r.json()["data"]["n"].as_i64().unwrap()).collect();
    assert_eq!(order, vec![1, 1, 1, 2], "the partition waits for the failing message\n{}", host.logs());
}

#[test]
fn sigkill_loses_no_published_event() {
    let broker = KafkaBroker::start();
    let app = TestApp::start(Some(json!([{"pubsubname": "pubsub", "topic": "jobs", "route": "/jobs"}])));
    app.script("/jobs", &[(200, r#"sleep:40:{"status":"SUCCESS"}"#)]);
    let res = app_dir(&[("pubsub.yaml", &pubsub_yaml(broker.port, ""))]);
    let dapr_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut host = sidecar(app.port, &res, Some(dapr_port));
    const N: usize = 60;
    for i in 0..N {
        let a = send("POST", &host.url("/v1.0/publish/pubsub/jobs"), &[("content-type", "application/json")], &format!(r#"{{"n":{i}}}"#));
        assert_eq!(a.status, 204);
    }
    app.wait_calls("/jobs", 5, WAIT);
    host.child.kill().unwrap();
    host.child.wait().unwrap();
    let before = app.calls("/jobs").len();
    assert!(before < N, "the kill came too late ({before} delivered)");
    let host = sidecar(app.port, &res, Some(dapr_port));
    let start = std::time::Instant::now();
    let delivered = loop {
        let seen: std::collections::BTreeSet<i64> = app.calls("/jobs").iter().filter_map(|r| r.json()["data"]["n"].as_i64()).collect();
        if seen.len() == N || start.elapsed() > WAIT {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        delivered.len(),
        N,
        "missing after restart: {:?}\n{}",
        (0..N as i64).filter(|n| !delivered.contains(n)).collect::<Vec<_>>(),
        host.logs()
    );
}
