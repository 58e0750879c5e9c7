//! The todo-events subscriber. `GET /dapr/subscribe` declares its subscriptions (the
//! todo topic with a dead-letter topic, and a route for the dead-letter topic); each
//! delivered CloudEvent is answered SUCCESS (processed, or a duplicate), DROP (malformed
//! or unknown event type, with a log line saying why) or RETRY (its own state call
//! failed). It keeps two projections of the events in its Dapr state store: the activity
//! feed (`GET /activity`) and the todo list's pages that `GET /todos` reads. Each event's
//! effects are applied exactly once (see `apply_once`), so a redelivery counts once.

use dapr_http::{Attempt, Dapr, DaprError, Exhausted, conflict_or, optimistic};
use serde_json::{Value, json};
use spin_sdk::http::{Params, Request, Response, Router};
use spin_sdk::http_component;
use todo_domain::feed::{self, Decision, EventInfo, FEED_KEY, Feed};
use todo_domain::list;
use todo_domain::todo::CREATED;

/// Attempts before answering RETRY; concurrent deliveries (several workers or replicas)
/// contend on the feed entry.
const MAX_ATTEMPTS: usize = 32;

struct Config {
    dapr: Dapr,
    pubsub: String,
    topic: String,
    store: String,
    /// Seconds an event's "seen" marker is kept.
    seen_ttl: u64,
}

fn config() -> Result<Config, String> {
    let v = |n: &str| spin_sdk::variables::get(n).map_err(|e| format!("Spin variable {n}: {e:?}"));
    Ok(Config {
        dapr: Dapr::new(v("dapr_url")?, Some(v("dapr_api_token")?)),
        pubsub: v("pubsub_name")?,
        topic: v("topic")?,
        store: v("activity_store")?,
        seen_ttl: todo_domain::todo::parse_ttl_seconds("seen_ttl_seconds", &v("seen_ttl_seconds")?)?,
    })
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder().status(status).header("content-type", "application/json").body(body.to_string()).build()
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
    json_response(status, &json!({"error": {"code": code, "message": message.into()}}))
}

#[http_component]
async fn handle(req: Request) -> Response {
    // Every route but the 404 needs the configuration: read it once, up front.
    let cfg = match config() {
        Ok(c) => std::rc::Rc::new(c),
        Err(e) => return config_error(e),
    };
    let mut router = Router::new();
    let c = cfg.clone();
    router.get("/dapr/subscribe", move |_: Request, _: Params| json_response(200, &subscriptions(&c)));
    let c = cfg.clone();
    router.post_async("/events/todo", move |req: Request, _: Params| {
        let c = c.clone();
        async move { json_response(200, &on_event(&c, req.body()).await) }
    });
    let c = cfg.clone();
    router.post_async("/events/dead-letter", move |req: Request, _: Params| {
        let c = c.clone();
        async move { json_response(200, &on_dead_letter(&c, req.body()).await) }
    });
    router.get_async("/activity", move |_: Request, _: Params| {
        let c = cfg.clone();
        async move { activity(&c).await }
    });
    router.any("/...", |req: Request, _: Params| error(404, "not_found", format!("no route for {} {}", req.method(), req.path())));
    router.handle_async(req).await
}

fn config_error(e: String) -> Response {
    eprintln!("todo-events: {e}");
    error(500, "configuration", e)
}

async fn activity(cfg: &Config) -> Response {
    match cfg.dapr.get_state(&cfg.store, FEED_KEY).await {
        Ok(s) => {
            let feed: Feed = s.and_then(|s| serde_json::from_value(s.value).ok()).unwrap_or_default();
            json_response(200, &feed.public())
        }
        Err(DaprError::Unreachable(m)) => error(503, "dapr_unavailable", m),
        Err(e) => error(502, "dapr_error", e.to_string()),
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

fn to_value(v: &impl serde::Serialize) -> Result<Value, DaprError> {
    serde_json::to_value(v).map_err(|e| DaprError::Protocol(e.to_string()))
}

/// Applies one event's effects exactly once: `Ok(false)` when they were applied before
/// (a duplicate delivery). The effects go into the feed entry in one ETag-guarded write
/// (a single key, so atomic on every store), together with the event id in the feed's
/// `recent` ids; a full list page is written first, as its own key (same content on any
/// retry); the create-only marker is written last and covers the event from then on.
async fn apply_once(
    cfg: &Config,
    event_id: &str,
    marker: String,
    effects: impl Fn(&mut Feed) -> Option<EventInfo>,
) -> Result<bool, Exhausted<DaprError>> {
    // The marker and the feed in one read.
    let keys = [marker.clone(), FEED_KEY.to_string()];
    let mut read = cfg.dapr.bulk_get(&cfg.store, &keys).await.map_err(Exhausted::Failed)?.into_iter().map(|(_, s)| s);
    if read.next().flatten().is_some() {
        return Ok(false);
    }
    let mut first = read.next().flatten();
    let initial = to_value(&Feed::default()).map_err(Exhausted::Failed)?;
    let applied = optimistic(MAX_ATTEMPTS, async || {
        let stored = match first.take() {
            Some(s) => s,
            None => cfg.dapr.get_or_create(&cfg.store, FEED_KEY, &initial).await?,
        };
        let mut feed: Feed =
            serde_json::from_value(stored.value).map_err(|e| DaprError::Protocol(format!("the activity feed is not valid: {e}")))?;
        if feed.applied(event_id) {
            return Ok(Attempt::Done(false));
        }
        if let Some(info) = effects(&mut feed).filter(|i| i.event_type == CREATED)
            && let Some((n, page)) = feed.append_to_list(&info.todo_id)
        {
            cfg.dapr.save_state(&cfg.store, &list::page_key(n), &to_value(&page)?, None).await?;
        }
        feed.remember(event_id);
        Ok(conflict_or(cfg.dapr.save_state(&cfg.store, FEED_KEY, &to_value(&feed)?, stored.etag.as_deref()).await)?.map(|()| true))
    })
    .await?;
    // Best effort: until it is written, the feed's recent ids stand in for it.
    if let Err(e) = cfg.dapr.create_state_with_ttl(&cfg.store, &marker, &json!(true), cfg.seen_ttl).await {
        println!("todo-events: marker for event {event_id} not written ({e}); the feed's recent ids cover it");
    }
    Ok(applied)
}

async fn on_event(cfg: &Config, body: &[u8]) -> Value {
    let info = match feed::decide(body) {
        Decision::Process(i) => i,
        Decision::Drop(why) => {
            println!("todo-events: DROP: {why}");
            return feed::status("DROP");
        }
    };
    match apply_once(cfg, &info.event_id, feed::seen_key(&info.event_id), |f| {
        f.record(&info);
        Some(info.clone())
    })
    .await
    {
        Ok(true) => {
            println!("todo-events: received {} for todo {} \"{}\" (event {})", info.event_type, info.todo_id, info.title, info.event_id);
            feed::status("SUCCESS")
        }
        Ok(false) => {
            println!("todo-events: duplicate event {} ignored", info.event_id);
            feed::status("SUCCESS")
        }
        Err(e) => {
            println!("todo-events: RETRY event {}: {}", info.event_id, exhausted(&e));
            feed::status("RETRY")
        }
    }
}

async fn on_dead_letter(cfg: &Config, body: &[u8]) -> Value {
    let ce: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let d = feed::DeadLetter {
        // Bounded: they are kept in the feed and the id names a state key.
        event_id: ce.get("id").and_then(Value::as_str).unwrap_or("").chars().take(200).collect(),
        topic: ce.get("topic").and_then(Value::as_str).unwrap_or("").chars().take(200).collect(),
    };
    println!("todo-events: dead-lettered event {} from topic {}", d.event_id, d.topic);
    let dlq_id = format!("dlq:{}", d.event_id);
    match apply_once(cfg, &dlq_id, feed::dead_letter_seen_key(&d.event_id), |f| {
        f.record_dead_letter(d.clone());
        None
    })
    .await
    {
        Ok(_) => feed::status("SUCCESS"),
        Err(e) => {
            println!("todo-events: RETRY dead letter {}: {}", d.event_id, exhausted(&e));
            feed::status("RETRY")
        }
    }
}

fn exhausted(e: &Exhausted<DaprError>) -> String {
    match e {
        Exhausted::Failed(e) => e.to_string(),
        Exhausted::Conflicts(e) => format!("still conflicting after {MAX_ATTEMPTS} attempts: {e}"),
    }
}
