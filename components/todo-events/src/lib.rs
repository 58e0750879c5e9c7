//! The todo-events subscriber. `GET /dapr/subscribe` declares its subscriptions (the
//! todo topic with a dead-letter topic, and a route for the dead-letter topic); each
//! delivered CloudEvent is answered SUCCESS (processed, or a duplicate), DROP (malformed
//! or unknown event type, with a log line saying why) or RETRY (its own state call
//! failed). The activity feed lives in the Dapr state store and is served at
//! `GET /activity`.

use dapr_http::{Dapr, DaprError};
use todo_domain::feed::{self, Decision, Feed};
use serde_json::{Value, json};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

const FEED_KEY: &str = "activity";
const MAX_ATTEMPTS: usize = 16;

struct Config {
    dapr: Dapr,
    pubsub: String,
    topic: String,
    store: String,
}

fn config() -> Result<Config, String> {
    let v = |n: &str| spin_sdk::variables::get(n).map_err(|e| format!("Spin variable {n}: {e:?}"));
    Ok(Config { dapr: Dapr::new(v("dapr_url")?, Some(v("dapr_api_token")?)), pubsub: v("pubsub_name")?, topic: v("topic")?, store: v("activity_store")? })
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder().status(status).header("content-type", "application/json").body(body.to_string()).build()
}

#[http_component]
async fn handle(req: Request) -> Response {
    let cfg = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("todo-events: {e}");
            return json_response(500, &json!({"error": {"code": "configuration", "message": e}}));
        }
    };
    match (req.method(), req.path()) {
        (Method::Get, "/dapr/subscribe") => json_response(200, &subscriptions(&cfg)),
        (Method::Post, "/events/todo") => json_response(200, &on_event(&cfg, req.body()).await),
        (Method::Post, "/events/dead-letter") => json_response(200, &on_dead_letter(&cfg, req.body()).await),
        (Method::Get, "/activity") => match load(&cfg).await {
            Ok((f, _)) => json_response(200, &f.public()),
            Err(DaprError::Unreachable(m)) => json_response(503, &json!({"error": {"code": "dapr_unavailable", "message": m}})),
            Err(e) => json_response(502, &json!({"error": {"code": "dapr_error", "message": e.to_string()}})),
        },
        (_, path) => json_response(404, &json!({"error": {"code": "not_found", "message": format!("no route for {path}")}})),
    }
}

/// The programmatic subscriptions, as Dapr's SDKs declare them.
fn subscriptions(cfg: &Config) -> Value {
    let dlq = format!("{}-dlq", cfg.topic);
    json!([
        {"pubsubname": cfg.pubsub, "topic": cfg.topic, "route": "/events/todo", "deadLetterTopic": dlq},
        {"pubsubname": cfg.pubsub, "topic": dlq, "route": "/events/dead-letter"},
    ])
}

async fn load(cfg: &Config) -> Result<(Feed, Option<String>), DaprError> {
    let mut stored = cfg.dapr.get_state(&cfg.store, FEED_KEY).await?;
    if stored.is_none() {
        // Created once with first-write, so every later write is guarded by an ETag.
        let empty = serde_json::to_value(Feed::default()).map_err(|e| DaprError::Protocol(e.to_string()))?;
        cfg.dapr.create_state(&cfg.store, FEED_KEY, &empty).await?;
        stored = cfg.dapr.get_state(&cfg.store, FEED_KEY).await?;
    }
    match stored {
        None => Ok((Feed::default(), None)),
        Some(s) => Ok((serde_json::from_value(s.value).unwrap_or_default(), s.etag)),
    }
}

/// Applies `f` to the feed with optimistic concurrency; `Ok(false)` when `f` changed nothing.
async fn update(cfg: &Config, f: impl Fn(&mut Feed) -> bool) -> Result<bool, DaprError> {
    for _ in 0..MAX_ATTEMPTS {
        let (mut feed, etag) = load(cfg).await?;
        if !f(&mut feed) {
            return Ok(false);
        }
        let value = serde_json::to_value(&feed).map_err(|e| DaprError::Protocol(e.to_string()))?;
        match cfg.dapr.save_state(&cfg.store, FEED_KEY, &value, etag.as_deref()).await {
            Ok(()) => return Ok(true),
            Err(e) if e.is_etag_mismatch() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(DaprError::Protocol("the activity feed kept changing under us".into()))
}

async fn on_event(cfg: &Config, body: &[u8]) -> Value {
    let info = match feed::decide(body) {
        Decision::Process(i) => i,
        Decision::Drop(why) => {
            println!("todo-events: DROP: {why}");
            return feed::status("DROP");
        }
    };
    match update(cfg, |f| f.record(&info)).await {
        Ok(true) => {
            println!("todo-events: received {} for todo {} \"{}\" (event {})", info.event_type, info.todo_id, info.title, info.event_id);
            feed::status("SUCCESS")
        }
        Ok(false) => {
            println!("todo-events: duplicate event {} ignored", info.event_id);
            feed::status("SUCCESS")
        }
        Err(e) => {
            println!("todo-events: RETRY event {}: {e}", info.event_id);
            feed::status("RETRY")
        }
    }
}

async fn on_dead_letter(cfg: &Config, body: &[u8]) -> Value {
    let ce: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let d = feed::DeadLetter {
        event_id: ce.get("id").and_then(Value::as_str).unwrap_or("").to_string(),
        topic: ce.get("topic").and_then(Value::as_str).unwrap_or("").to_string(),
    };
    println!("todo-events: dead-lettered event {} from topic {}", d.event_id, d.topic);
    match update(cfg, |f| f.record_dead_letter(d.clone())).await {
        Ok(_) => feed::status("SUCCESS"),
        Err(e) => {
            println!("todo-events: RETRY dead letter {}: {e}", d.event_id);
            feed::status("RETRY")
        }
    }
}
