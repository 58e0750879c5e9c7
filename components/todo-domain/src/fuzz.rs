//! Property tests over what the Todo components read from outside (#11): request bodies
//! of every shape, the list's query and cursor, delivered CloudEvents. From a fixed seed.
//! Each parser answers or refuses with a 4xx, never panics; what it accepts keeps the
//! limits (title length, page size) the rest of the code relies on.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};

use crate::feed::{Decision, decide};
use crate::list::{Cursor, PAGE_SIZE, parse_list_query};
use crate::todo::{MAX_TITLE, Shape, parse_change};

fn seeded(cases: u32) -> Config {
    Config { cases, rng_seed: RngSeed::Fixed(0x5eed_0013), failure_persistence: None, ..Config::default() }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,260}".prop_map(Value::from),
        Just(Value::from("x".repeat(MAX_TITLE + 1))),
        Just(json!([])),
        Just(json!({})),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (proptest::option::of(leaf()), proptest::option::of(leaf()), proptest::option::of(leaf())).prop_map(|(t, c, x)| {
            let mut o = serde_json::Map::new();
            t.map(|t| o.insert("title".into(), t));
            c.map(|c| o.insert("completed".into(), c));
            x.map(|x| o.insert("extra".into(), x));
            Value::Object(o).to_string().into_bytes()
        }),
        1 => leaf().prop_map(|v| v.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(seeded(1000))]
    #[test]
    fn request_bodies_are_accepted_within_limits_or_refused_with_4xx(b in body(), shape in 0..3u8) {
        let shape = [Shape::Create, Shape::Replace, Shape::Patch][shape as usize];
        match parse_change(&b, shape) {
            Ok(c) => prop_assert!(c.title.is_none_or(|t| t.chars().count() <= MAX_TITLE && !t.trim().is_empty())),
            Err(e) => prop_assert!((400..500).contains(&e.status), "{e:?}"),
        }
    }

    #[test]
    fn list_queries_and_cursors(q in "((limit|cursor|completed|x)=[-0-9a-z.%]{0,24}&?){0,4}", c in "[-0-9.a-z]{0,30}") {
        if let Ok(l) = parse_list_query(&q) {
            prop_assert!(l.limit >= 1 && l.limit <= 1000);
        }
        if let Ok(cur) = Cursor::parse(&c) {
            prop_assert!(cur.offset <= PAGE_SIZE);
            prop_assert_eq!(Cursor::parse(&cur.encode()), Ok(cur));
        }
    }

    #[test]
    fn delivered_events_are_processed_or_dropped(
        id in proptest::option::of(leaf()),
        ty in prop_oneof![Just(Value::from("todo.created")), Just(Value::from("todo.deleted")), leaf()],
        data in proptest::option::of(prop_oneof![leaf(), (leaf(), leaf()).prop_map(|(i, t)| json!({"id": i, "title": t}))]),
        raw in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut ce = json!({"type": ty, "specversion": "1.0"});
        if let Some(id) = id { ce["id"] = id; }
        if let Some(d) = data { ce["data"] = d; }
        if let Decision::Process(info) = decide(ce.to_string().as_bytes()) {
            prop_assert!(!info.event_id.is_empty() && info.event_id.len() <= 200);
            prop_assert!(info.todo_id.len() <= 200);
        }
        let _ = decide(&raw);
    }
}
