"""Interop check: the official Dapr Python SDK over gRPC against the spindapr sidecar.

DaprClient (gRPC) publishes (one and bulk), saves with first-write concurrency and ETags, reads, runs a
transaction, reads and sets metadata and finally shuts the sidecar down; a dapr-ext-grpc
App (the sidecar runs with --app-protocol grpc) receives the events through
ListTopicSubscriptions / OnTopicEvent, answering RETRY to each event's first delivery.
Environment: DAPR_HTTP_PORT and DAPR_GRPC_PORT (the sidecar), APP_PORT (this App),
APP_ID (the sidecar's app id).
"""

import json
import os
import threading
import time
import urllib.request

import grpc
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._response import TopicEventResponse
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.ext.grpc import App

APP_ID = os.environ["APP_ID"]
HTTP = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}"

app = App()
received = []
attempts = {}
lock = threading.Lock()


def orders(event):
    with lock:
        n = attempts.get(event.id, 0) + 1
        attempts[event.id] = n
        received.append(
            {
                "id": event.id,
                "source": event.source,
                "type": event.type,
                "content_type": event.content_type,
                "data": bytes(event.data).decode(),
                "subject": event.subject,
                "extensions": {k: v for k, v in event.extensions.items() if not k.startswith("_metadata_")},
                "metadata_pubsubname": event.extensions.get("_metadata_pubsubname"),
                "attempt": n,
            }
        )
    return TopicEventResponse("retry" if n == 1 else "success")


app.subscribe("pubsub", "orders")(orders)
app.register_health_check(lambda: None)
threading.Thread(target=app.run, args=(int(os.environ["APP_PORT"]),), daemon=True).start()


def wait(what, check, seconds=20):
    deadline = time.time() + seconds
    while not check():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def healthy():
    try:
        with urllib.request.urlopen(f"{HTTP}/v1.0/healthz") as r:
            return r.status == 204
    except Exception:
        return False


def expect_error(code, reason, fn):
    try:
        fn()
    except DaprGrpcError as e:
        assert e.code() == code, (e.code(), e.details())
        assert e.error_code() == reason, (e.error_code(), e.details())
        return e
    raise AssertionError(f"expected {code} {reason}")


# The sidecar reports healthy once it has read the App's subscriptions.
wait("the sidecar to read the subscriptions", healthy)

first_write = StateOptions(concurrency=Concurrency.first_write)
with DaprClient() as d:
    d.publish_event("pubsub", "orders", json.dumps({"orderId": 42, "item": "<widget>"}), data_content_type="application/json")
    d.publish_event("pubsub", "orders", "plain text")
    bulk = d.publish_events("pubsub", "orders", [json.dumps({"bulk": 1}), json.dumps({"bulk": 2})], data_content_type="application/json")
    assert bulk.failed_entries == [], bulk.failed_entries
    wait("the four events, each retried once", lambda: sum(1 for r in received if r["attempt"] == 2) == 4)
    delivered = [r for r in received if r["attempt"] == 2]
    order = next(r for r in delivered if r["content_type"] == "application/json" and "orderId" in r["data"])
    assert sorted(r["data"] for r in delivered if "bulk" in r["data"]) == ['{"bulk":1}', '{"bulk":2}'], delivered
    # JSON data is re-encoded as daprd's Go json.Marshal does: sorted keys, <>& escaped.
    assert order["data"] == '{"item":"\\u003cwidget\\u003e","orderId":42}', order["data"]
    assert json.loads(order["data"]) == {"orderId": 42, "item": "<widget>"}
    assert order["content_type"] == "application/json", order
    assert order["source"] == APP_ID and order["type"] == "com.dapr.event.sent", order
    assert order["subject"] == "orders", order
    ext = order["extensions"]
    assert ext["topic"] == "orders" and ext["pubsubname"] == "pubsub", ext
    assert {"traceid", "traceparent", "tracestate", "time", "specversion"} - set(ext) == {"specversion"}, ext
    assert order["metadata_pubsubname"] == "pubsub", order
    text = next(r for r in delivered if r["data"] == "plain text")
    assert text["content_type"] == "text/plain", text
    retried = [r for r in received if r["attempt"] == 1]
    assert {r["id"] for r in retried} == {r["id"] for r in delivered}, "each RETRY answer was redelivered with the same id"

    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "DAPR_PUBSUB_NOT_FOUND", lambda: d.publish_event("nope", "orders", "x"))

    d.save_state("statestore", "k1", "v1", options=first_write)
    e = expect_error(grpc.StatusCode.ABORTED, "ERR_STATE_SAVE", lambda: d.save_state("statestore", "k1", "v2", options=first_write))
    assert "etag mismatch" in e.details(), e.details()
    got = d.get_state("statestore", "k1")
    assert got.data == b"v1" and got.etag, (got.data, got.etag)
    d.save_state("statestore", "k1", "v2", etag=got.etag, options=first_write)
    expect_error(grpc.StatusCode.ABORTED, "ERR_STATE_SAVE", lambda: d.save_state("statestore", "k1", "v3", etag=got.etag))
    assert d.get_state("statestore", "k1").data == b"v2"
    missing = d.get_state("statestore", "missing")
    assert missing.data == b"" and missing.etag == "", (missing.data, missing.etag)
    bulk = d.get_bulk_state("statestore", ["k1", "missing"]).items
    assert [(i.key, i.data) for i in bulk] == [("k1", b"v2"), ("missing", b"")], bulk
    d.execute_state_transaction(
        "statestore",
        [
            TransactionalStateOperation(key="a", data="1"),
            TransactionalStateOperation(key="k1", operation_type=TransactionOperationType.delete),
        ],
    )
    assert d.get_state("statestore", "a").data == b"1"
    assert d.get_state("statestore", "k1").data == b""
    d.delete_state("statestore", "a")
    assert d.get_state("statestore", "a").data == b""
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "DAPR_STATE_NOT_FOUND", lambda: d.get_state("nostore", "k"))

    md = d.get_metadata()
    assert md.application_id == APP_ID, md.application_id
    names = {c.name for c in md.registered_components}
    assert {"pubsub", "statestore"} <= names, names
    d.set_metadata("interop", "python")
    assert d.get_metadata().extended_metadata["interop"] == "python"

    d.shutdown()

print("interop ok")
