// Interop check: the official Dapr JS SDK (HTTP protocol) against the spindapr sidecar.
// Publish, subscribe (DaprServer), bulk publish and bulk subscribe, state save/get/delete,
// bulk get and a transaction.
// Environment: DAPR_HTTP_PORT (the sidecar), APP_PORT (where this script's DaprServer listens).
const { DaprServer, DaprClient, CommunicationProtocolEnum } = require("@dapr/dapr");
const assert = require("node:assert/strict");

const daprPort = process.env.DAPR_HTTP_PORT;
const appPort = process.env.APP_PORT;

async function main() {
  const clientOptions = { daprHost: "127.0.0.1", daprPort, communicationProtocol: CommunicationProtocolEnum.HTTP };
  const server = new DaprServer({ serverHost: "127.0.0.1", serverPort: appPort, communicationProtocol: CommunicationProtocolEnum.HTTP, clientOptions });
  const received = [];
  await server.pubsub.subscribe("pubsub", "orders", async (data, headers) => {
    received.push({ data, headers });
  });
  // Bulk subscribe: daprd batches and posts com.dapr.event.sent.bulk envelopes, which
  // the SDK unpacks entry by entry and answers with per-entry statuses.
  const bulkReceived = [];
  await server.pubsub.subscribeBulk("pubsub", "bulk-orders", async (data) => {
    bulkReceived.push(data);
  }, { maxMessagesCount: 10, maxAwaitDurationMs: 100 });
  await server.start();

  const client = new DaprClient(clientOptions);
  await client.start();

  // Wait until the sidecar has read our subscriptions (it reports healthy then).
  for (let i = 0; ; i++) {
    const md = await client.metadata.get();
    // daprd leaves `subscriptions` out while there are none.
    if ((md.subscriptions ?? []).some((s) => s.topic === "orders")) break;
    if (i > 100) throw new Error("the sidecar never listed the subscription: " + JSON.stringify(md));
    await new Promise((r) => setTimeout(r, 50));
  }

  const pub = await client.pubsub.publish("pubsub", "orders", { orderId: 42, item: "<widget>" });
  assert.equal(pub.error, undefined, "publish failed: " + JSON.stringify(pub));
  for (let i = 0; received.length === 0; i++) {
    if (i > 200) throw new Error("the event never arrived");
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.deepEqual(received[0].data, { orderId: 42, item: "<widget>" });

  // Bulk publish (the SDK sends `entryID`, read case-insensitively as Go does): a
  // string, an object and a CloudEvent, each through the bulk subscription.
  const bulkPub = await client.pubsub.publishBulk("pubsub", "bulk-orders", [
    "plain text",
    { orderId: 7 },
    { specversion: "1.0", id: "ce-1", source: "interop", type: "com.example.order", datacontenttype: "application/json", data: { orderId: 8 } },
  ]);
  assert.deepEqual(bulkPub.failedMessages, [], "bulk publish failed: " + JSON.stringify(bulkPub));
  for (let i = 0; bulkReceived.length < 3; i++) {
    if (i > 200) throw new Error("bulk events never arrived: " + JSON.stringify(bulkReceived));
    await new Promise((r) => setTimeout(r, 25));
  }
  const byOrder = (x) => JSON.stringify(x);
  assert.deepEqual(bulkReceived.map(byOrder).sort(), ["plain text", { orderId: 7 }, { orderId: 8 }].map(byOrder).sort());

  await client.state.save("statestore", [
    { key: "k1", value: { hello: "world" } },
    { key: "k2", value: "plain" },
  ]);
  assert.deepEqual(await client.state.get("statestore", "k1"), { hello: "world" });
  assert.equal(await client.state.get("statestore", "k2"), "plain");
  const bulk = await client.state.getBulk("statestore", ["k1", "k2"]);
  assert.equal(bulk.length, 2);
  await client.state.transaction("statestore", [
    { operation: "upsert", request: { key: "k3", value: { n: 3 } } },
    { operation: "delete", request: { key: "k2" } },
  ]);
  assert.deepEqual(await client.state.get("statestore", "k3"), { n: 3 });
  assert.equal(await client.state.get("statestore", "k2"), "");
  await client.state.delete("statestore", "k1");
  assert.equal(await client.state.get("statestore", "k1"), "");

  await client.stop();
  await server.stop();
  console.log("interop ok");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error("interop failed:", e);
    process.exit(1);
  },
);
