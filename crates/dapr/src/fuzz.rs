//! Property tests over the parsers that read what publishers and apps send (#11): the
//! CloudEvent envelope built from any body, content type and metadata (and its Go
//! rendering read back as JSON), an app's subscription list and its delivery answers,
//! TTL checks on received events. From a fixed seed; none may panic.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::Value;

use crate::cloudevents::{self, PublishInput};

fn seeded(cases: u32) -> Config {
    Config { cases, rng_seed: RngSeed::Fixed(0x5eed_0012), failure_persistence: None, ..Config::default() }
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
        "(9223372036854775807|-1|0|1e999|true|RETRY|DROP|SUCCESS|2026-11-27T00:00:00Z)".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            proptest::collection::btree_map(
                "(pubsubname|pubsubName|topic|route|routes|rules|match|path|default|metadata|deadLetterTopic|status|Status|statuses|entryId|id|data|data_base64|datacontenttype|expiration|specversion|type|[a-z]{1,6})",
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![json().prop_map(|v| v.to_string().into_bytes()), proptest::collection::vec(any::<u8>(), 0..128)]
}

proptest! {
    #![proptest_config(seeded(1200))]
    #[test]
    fn envelopes_from_any_publish(
        body in body(),
        ct in proptest::option::of("(application/json|application/cloudevents\\+json|text/plain|application/octet-stream|application/[a-z]{1,5}\\+json|[ -~]{0,20})"),
        md in proptest::collection::btree_map("(ttlInSeconds|rawPayload|cloudevent\\.(id|type|source|traceparent|tracestate)|[a-z]{1,6})", "[ -~]{0,24}", 0..4),
        tp in "[ -~]{0,60}",
    ) {
        let input = PublishInput {
            app_id: "app",
            pubsub: "pubsub",
            topic: "t",
            content_type: ct.as_deref(),
            traceparent: &tp,
            tracestate: "",
            metadata: &md,
        };
        if let Ok(ce) = cloudevents::envelope(&input, &body, chrono::Utc::now()) {
            let rendered = cloudevents::to_go_json(&ce);
            let back: BTreeMap<String, Value> = serde_json::from_slice(&rendered).expect("the envelope renders as JSON");
            prop_assert_eq!(back.len(), ce.len());
            let _ = cloudevents::is_expired(&Value::Object(back.into_iter().collect()), chrono::Utc::now());
        }
    }
}

proptest! {
    #![proptest_config(seeded(800))]
    #[test]
    fn subscription_lists_and_delivery_answers(v in json(), status in 0u16..1000, raw in body()) {
        let text = v.to_string();
        if let Ok(subs) = crate::parse_programmatic(text.as_bytes()) {
            for s in subs {
                let _ = crate::delivery::Route::compile(s);
            }
        }
        let _ = crate::parse_programmatic(&raw);
        let _ = crate::delivery::interpret(status, text.as_bytes());
        let _ = crate::delivery::interpret(status, &raw);
    }
}
