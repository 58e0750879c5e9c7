//! daprd's gRPC API over a real connection (a tonic client on the same protos): the API
//! token and message-size checks, state errors with daprd's codes and details, bulk
//! delete, JSON values, transactions, metadata, and the Shutdown API over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use spindapr_dapr::grpc::pb::common as c;
use spindapr_dapr::grpc::pb::runtime as rt;
use tonic::Code;
use tonic_types::StatusExt;

type Client = rt::dapr_client::DaprClient<tonic::transport::Channel>;

async fn client(host: &Host) -> Client {
    let addr = host.grpc_addr(Duration::from_secs(10));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    rt::dapr_client::DaprClient::new(channel)
}

fn reason(s: &tonic::Status) -> (String, std::collections::HashMap<String, String>) {
    let info = s.get_details_error_info().expect("an ErrorInfo detail");
    assert_eq!(info.domain, "dapr.io");
    (info.reason, info.metadata)
}

fn with_token<T>(body: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut().insert("dapr-api-token", token.parse().unwrap());
    r
}

fn publish(data: Vec<u8>) -> rt::PublishEventRequest {
    rt::PublishEventRequest { pubsub_name: "pubsub".into(), topic: "t".into(), data, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_token_and_message_size_as_daprd() {
    let host = HostBuilder::sidecar(&["--app-id", "g", "--dapr-api-token", "secret", "--max-body-size", "1Ki"]).start();
    let mut cl = client(&host).await;
    let e = cl.publish_event(publish(b"x".to_vec())).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "Unauthorized"));
    let (r, md) = reason(&e);
    assert_eq!((r.as_str(), md["http.error_message"].as_str()), ("Unauthorized", "missing api token in request metadata"));
    let e = cl.get_metadata(with_token(rt::GetMetadataRequest {}, "wrong")).await.unwrap_err();
    assert_eq!(reason(&e).1["http.error_message"], "authentication error: api token mismatch");
    cl.publish_event(with_token(publish(b"x".to_vec()), "secret")).await.unwrap();
    let e = cl.publish_event(with_token(publish(vec![b'a'; 4096]), "secret")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().starts_with("grpc: received message larger than max (") && e.message().ends_with(" vs. 1024)"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn state_calls_answer_with_daprds_codes_and_details() {
    let host = HostBuilder::sidecar(&["--app-id", "g"]).start();
    let mut cl = client(&host).await;
    let item = |key: &str, value: &[u8]| c::StateItem { key: key.into(), value: value.to_vec(), ..Default::default() };
    let save = |items: Vec<c::StateItem>| rt::SaveStateRequest { store_name: "statestore".into(), states: items };

    let e = cl.save_state(save(vec![item("", b"1")])).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "state key cannot be empty"));
    assert_eq!(reason(&e).0, "ERR_STATE_SAVE");
    let e = cl.get_state(rt::GetStateRequest { store_name: "nope".into(), key: "k".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "state store nope is not found"));
    assert_eq!(reason(&e), ("DAPR_STATE_NOT_FOUND".to_string(), Default::default()), "no metadata over gRPC");

    // Bytes are stored as they are; a value sent as exactly application/json is JSON.
    let mut json = item("j", br#"{"b":1, "a":2}"#);
    json.metadata.insert("contentType".into(), "application/json".into());
    cl.save_state(save(vec![item("raw", b"\x00\x01"), json])).await.unwrap();
    let raw = cl.get_state(rt::GetStateRequest { store_name: "statestore".into(), key: "raw".into(), ..Default::default() }).await.unwrap();
    assert_eq!(raw.get_ref().data, b"\x00\x01");
    let via_http = get(&format!("{}/v1.0/state/statestore/j", host.base));
    assert_eq!(via_http.body, r#"{"a":2,"b":1}"#, "stored as Go's json.Marshal of the decoded value");
    let mut bad = item("bad", b"{not json");
    bad.metadata.insert("contentType".into(), "application/json".into());
    assert_eq!(cl.save_state(save(vec![bad])).await.unwrap_err().code(), Code::Unknown);

    // ETags: a stale one is ABORTED; first-write without one on an existing key too.
    let etag = |v: &str| Some(c::Etag { value: v.into() });
    let e = cl
        .delete_state(rt::DeleteStateRequest {
            store_name: "statestore".into(),
            key: "raw".into(),
            etag: etag("stale"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((e.code(), reason(&e).0.as_str()), (Code::Aborted, "ERR_STATE_DELETE"));
    assert!(e.message().starts_with("failed deleting state with key raw: "), "{}", e.message());
    let mut fw = item("raw", b"2");
    fw.options =
        Some(c::StateOptions { concurrency: c::state_options::StateConcurrency::ConcurrencyFirstWrite as i32, ..Default::default() });
    let e = cl.save_state(save(vec![fw])).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert!(e.message().contains("etag mismatch"), "{}", e.message());

    // Bulk delete: every item is tried; an ETag failure among them makes it ABORTED.
    let mut stale = item("j", b"");
    stale.etag = etag("stale");
    let e = cl
        .delete_bulk_state(rt::DeleteBulkStateRequest { store_name: "statestore".into(), states: vec![stale, item("raw", b"")] })
        .await
        .unwrap_err();
    assert_eq!((e.code(), reason(&e).0.as_str()), (Code::Aborted, "ERR_STATE_BULK_DELETE"));
    let gone =
        cl.get_state(rt::GetStateRequest { store_name: "statestore".into(), key: "raw".into(), ..Default::default() }).await.unwrap();
    assert!(gone.get_ref().data.is_empty() && gone.get_ref().etag.is_empty(), "the other item was deleted");

    let op = |t: &str, key: &str| rt::TransactionalStateOperation { operation_type: t.into(), request: Some(item(key, b"v")) };
    let tx = |ops| rt::ExecuteStateTransactionRequest { store_name: "statestore".into(), operations: ops, ..Default::default() };
    let e = cl.execute_state_transaction(tx(vec![op("merge", "x")])).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unimplemented, "operation type merge not supported"));
    cl.execute_state_transaction(tx(vec![op("upsert", "x"), op("delete", "j")])).await.unwrap();
    let bulk = cl
        .get_bulk_state(rt::GetBulkStateRequest {
            store_name: "statestore".into(),
            keys: vec!["x".into(), "j".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let items: Vec<(&str, &[u8])> = bulk.get_ref().items.iter().map(|i| (i.key.as_str(), i.data.as_slice())).collect();
    assert_eq!(items, vec![("x", b"v".as_slice()), ("j", b"".as_slice())]);

    // An illegal key anywhere in a bulk delete refuses it before anything is deleted.
    let e = cl
        .delete_bulk_state(rt::DeleteBulkStateRequest { store_name: "statestore".into(), states: vec![item("x", b""), item("a||b", b"")] })
        .await
        .unwrap_err();
    assert_eq!((e.code(), reason(&e).0.as_str()), (Code::InvalidArgument, "DAPR_STATE_ILLEGAL_KEY"));
    let kept = cl.get_state(rt::GetStateRequest { store_name: "statestore".into(), key: "x".into(), ..Default::default() }).await.unwrap();
    assert_eq!(kept.get_ref().data, b"v");

    let md = cl.get_metadata(rt::GetMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(md.id, "g");
    assert_eq!(md.extended_metadata["daprRuntimeVersion"], spindapr_dapr::DAPR_VERSION);
    assert_eq!(md.app_connection_properties.unwrap().protocol, "http");
}

#[test]
fn shutdown_api_stops_the_sidecar() {
    let mut host = HostBuilder::sidecar(&["--app-id", "g"]).start();
    assert_eq!(send("POST", &format!("{}/v1.0/shutdown", host.base), &[], "").status, 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "still running after POST /v1.0/shutdown:\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A gRPC app (AppCallback) that answers each event by its data: `ok`, `drop`,
/// `unimplemented` (UNIMPLEMENTED), `fail` (INTERNAL); it records every call.
async fn grpc_app(port: u16) -> std::sync::Arc<std::sync::Mutex<Vec<(String, String, rt::TopicEventRequest)>>> {
    type Calls = std::sync::Arc<std::sync::Mutex<Vec<(String, String, rt::TopicEventRequest)>>>;
    struct App(Calls);
    #[tonic::async_trait]
    impl rt::app_callback_server::AppCallback for App {
        async fn list_topic_subscriptions(
            &self,
            _: tonic::Request<()>,
        ) -> Result<tonic::Response<rt::ListTopicSubscriptionsResponse>, tonic::Status> {
            let subs = vec![
                rt::TopicSubscription {
                    pubsub_name: "pubsub".into(),
                    topic: "t".into(),
                    dead_letter_topic: "dlq".into(),
                    ..Default::default()
                },
                rt::TopicSubscription {
                    pubsub_name: "pubsub".into(),
                    topic: "dlq".into(),
                    routes: Some(rt::TopicRoutes { rules: vec![], default: "/dead".into() }),
                    ..Default::default()
                },
                rt::TopicSubscription {
                    pubsub_name: "pubsub".into(),
                    topic: "bulk".into(),
                    dead_letter_topic: "dlq".into(),
                    bulk_subscribe: Some(rt::BulkSubscribeConfig { enabled: true, max_messages_count: 3, max_await_duration_ms: 200 }),
                    ..Default::default()
                },
            ];
            Ok(tonic::Response::new(rt::ListTopicSubscriptionsResponse { subscriptions: subs }))
        }
        async fn on_topic_event(
            &self,
            req: tonic::Request<rt::TopicEventRequest>,
        ) -> Result<tonic::Response<rt::TopicEventResponse>, tonic::Status> {
            let pubsubname = req.metadata().get("pubsubname").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let r = req.into_inner();
            let data = String::from_utf8_lossy(&r.data).into_owned();
            self.0.lock().unwrap().push((r.topic.clone(), pubsubname, r.clone()));
            use rt::topic_event_response::TopicEventResponseStatus as S;
            let status = match (r.topic.as_str(), data.as_str()) {
                ("dlq", _) | (_, "ok") => S::Success,
                (_, "drop") => S::Drop,
                (_, "unimplemented") => return Err(tonic::Status::unimplemented("no handler")),
                _ => return Err(tonic::Status::internal("handler failed")),
            };
            Ok(tonic::Response::new(rt::TopicEventResponse { status: status as i32 }))
        }
        async fn on_bulk_topic_event(
            &self,
            req: tonic::Request<rt::TopicEventBulkRequest>,
        ) -> Result<tonic::Response<rt::TopicEventBulkResponse>, tonic::Status> {
            use rt::topic_event_bulk_request_entry::Event;
            use rt::topic_event_response::TopicEventResponseStatus as S;
            let r = req.into_inner();
            let mut statuses = Vec::new();
            for e in &r.entries {
                let Some(Event::CloudEvent(ce)) = &e.event else { return Err(tonic::Status::invalid_argument("not a CloudEvent")) };
                let data = String::from_utf8_lossy(&ce.data).into_owned();
                let one = rt::TopicEventRequest {
                    id: ce.id.clone(),
                    data: ce.data.clone(),
                    data_content_type: ce.data_content_type.clone(),
                    r#type: r.r#type.clone(),
                    pubsub_name: r.pubsub_name.clone(),
                    path: r.path.clone(),
                    ..Default::default()
                };
                self.0.lock().unwrap().push((r.topic.clone(), "bulk".into(), one));
                let status = if data == "drop" { S::Drop } else { S::Success };
                statuses.push(rt::TopicEventBulkResponseEntry { entry_id: e.entry_id.clone(), status: status as i32 });
            }
            Ok(tonic::Response::new(rt::TopicEventBulkResponse { statuses }))
        }
    }
    let calls: Calls = Default::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let svc = rt::app_callback_server::AppCallbackServer::new(App(calls.clone()));
    tokio::spawn(
        tonic::transport::Server::builder().add_service(svc).serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    calls
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_app_gets_daprds_event_and_its_answers_drive_retries_and_dead_letters() {
    let port = free_port();
    let calls = grpc_app(port).await;
    let res = tempfile::tempdir().unwrap();
    std::fs::write(
        res.path().join("c.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n\
         ---\napiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      twice:\n        policy: constant\n        duration: 10ms\n        maxRetries: 2\n  targets:\n    components:\n      pubsub:\n        inbound:\n          retry: twice\n",
    )
    .unwrap();
    let host = HostBuilder::sidecar(&["--app-id", "g", "--app-protocol", "grpc", "--app-port", &port.to_string(), "--resources-path"])
        .arg(res.path())
        .start();
    wait_healthy(&host, Duration::from_secs(10));
    let mut cl = client(&host).await;
    for data in ["ok", "drop", "unimplemented", "fail"] {
        let mut req = publish(data.as_bytes().to_vec());
        req.data_content_type = "text/plain".into();
        req.metadata.insert("cloudevent.subject".into(), "s".into());
        cl.publish_event(req).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = || calls.lock().unwrap().iter().filter(|(t, _, _)| t == "dlq").count();
    while dead() < 2 {
        assert!(Instant::now() < deadline, "dead letters never arrived: {:?}\n{}", calls.lock().unwrap(), host.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = calls.lock().unwrap().clone();
    let on_t = |d: &str| calls.iter().filter(|(t, _, r)| t == "t" && r.data == d.as_bytes()).count();
    assert_eq!((on_t("ok"), on_t("drop"), on_t("unimplemented"), on_t("fail")), (1, 1, 1, 3), "a failure is retried by the policy (1 + 2)");
    let mut dead: Vec<String> =
        calls.iter().filter(|(t, _, _)| t == "dlq").map(|(_, _, r)| String::from_utf8_lossy(&r.data).into_owned()).collect();
    dead.sort();
    assert_eq!(dead, ["drop", "fail"], "DROP and a failure dead-letter; UNIMPLEMENTED is acknowledged without");
    // daprd's TopicEventRequest: the CloudEvent's fields, the rest as extensions.
    let (_, pubsubname, ok) = calls.iter().find(|(t, _, r)| t == "t" && r.data == b"ok").unwrap();
    assert_eq!(pubsubname, "pubsub");
    assert_eq!((ok.source.as_str(), ok.r#type.as_str(), ok.spec_version.as_str()), ("g", "com.dapr.event.sent", "1.0"));
    assert_eq!((ok.data_content_type.as_str(), ok.pubsub_name.as_str(), ok.path.as_str()), ("text/plain", "pubsub", ""));
    let ext = &ok.extensions.as_ref().unwrap().fields;
    let s = |k: &str| match ext.get(k).and_then(|v| v.kind.clone()) {
        Some(prost_types::value::Kind::StringValue(s)) => s,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!((s("topic"), s("pubsubname"), s("subject")), ("t".into(), "pubsub".into(), "s".into()));
    assert!(ext.contains_key("traceid") && ext.contains_key("time") && !ext.contains_key("data") && !ext.contains_key("id"));
    let (_, _, d) = calls.iter().find(|(t, _, r)| t == "dlq" && r.data == b"drop").unwrap();
    assert_eq!(d.path, "/dead", "the dead-letter subscription's default route");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_apps_bulk_subscription_gets_batches_through_on_bulk_topic_event() {
    let port = free_port();
    let calls = grpc_app(port).await;
    let host = HostBuilder::sidecar(&["--app-id", "g", "--app-protocol", "grpc", "--app-port", &port.to_string()]).start();
    wait_healthy(&host, Duration::from_secs(10));
    let mut cl = client(&host).await;
    for data in ["a", "b", "drop"] {
        let req = rt::PublishEventRequest {
            pubsub_name: "pubsub".into(),
            topic: "bulk".into(),
            data: data.into(),
            data_content_type: "text/plain".into(),
            ..Default::default()
        };
        cl.publish_event(req).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !calls.lock().unwrap().iter().any(|(t, _, r)| t == "dlq" && r.data == b"drop") {
        assert!(
            Instant::now() < deadline,
            "the dropped bulk entry never reached the dead-letter topic: {:?}\n{}",
            calls.lock().unwrap(),
            host.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = calls.lock().unwrap().clone();
    let bulk: Vec<&rt::TopicEventRequest> = calls.iter().filter(|(t, how, _)| t == "bulk" && how == "bulk").map(|(_, _, r)| r).collect();
    let mut data: Vec<String> = bulk.iter().map(|r| String::from_utf8_lossy(&r.data).into_owned()).collect();
    data.sort();
    assert_eq!(data, ["a", "b", "drop"], "each entry delivered once, in a batch");
    assert!(
        bulk.iter().all(|r| r.r#type == "com.dapr.event.sent.bulk" && r.pubsub_name == "pubsub" && r.data_content_type == "text/plain")
    );
    assert!(!calls.iter().any(|(t, how, _)| t == "bulk" && how != "bulk"), "no one-by-one delivery for a bulk subscription");
}

#[test]
fn up_hands_components_the_grpc_port_as_dapr_run_does() {
    let probe = guest_wasm("spin-probe");
    let manifest = format!(
        "spin_manifest_version = 2\n[application]\nname = \"g\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"probe\"\n[component.probe]\nsource = \"{}\"\n",
        probe.display()
    );
    let dir = app_dir(&[("spin.toml", &manifest)]);
    let host = HostBuilder::new(&dir.path().join("spin.toml")).start();
    let grpc = host.grpc_addr(Duration::from_secs(10));
    let port = grpc.rsplit(':').next().unwrap().to_string();
    assert_eq!(get(&host.url("/env?name=DAPR_GRPC_PORT")).json()["value"], port.as_str());
    assert_eq!(get(&host.url("/env?name=DAPR_GRPC_ENDPOINT")).json()["value"], format!("http://127.0.0.1:{port}").as_str());
}
