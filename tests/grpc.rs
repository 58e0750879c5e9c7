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
