//! The embedded Dapr-compatible sidecar: loads resources as daprd does, owns the
//! pub/sub and state components, discovers the app's subscriptions once its port
//! answers, delivers messages, and serves daprd's HTTP API (see `api`).

mod api;
pub mod app_channel;
mod breaker;
mod bulk;
mod cloudevents;
mod delivery;
mod errors;
#[cfg(test)]
mod fuzz;
mod go_compat;
mod go_json;
pub mod grpc;
mod grpc_app;
mod invoke;
mod outbox;
mod resiliency;
pub mod resources;

use spindapr_dapr_components::{pubsub, state};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::RwLock;

use app_channel::{AppChannel, AppTransport, HttpTransport};
use delivery::{Delivery, Route};
use pubsub::PubSub;
use resources::{Component, Resources, Subscription};
use state::StateStore;

/// The daprd release this sidecar follows: what `GET /v1.0/metadata` reports (daprd's
/// own tests require a plain `x.y.z` there).
pub const DAPR_VERSION: &str = "1.18.3";

/// This sidecar's own version, for logs and `--version`.
pub const RUNTIME_VERSION: &str = concat!("1.18.3-spindapr.", env!("CARGO_PKG_VERSION"));

/// daprd's flags, as far as this sidecar honours them.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The Dapr app id (event source, state key prefix).
    pub app_id: String,
    /// The app's HTTP port; without one there are no subscriptions.
    pub app_port: Option<u16>,
    /// The host the app listens on.
    pub app_host: String,
    /// `--resources-path` folders or files.
    pub resources_paths: Vec<PathBuf>,
    /// DAPR_API_TOKEN: required on every API call but health.
    pub api_token: Option<String>,
    /// APP_API_TOKEN: sent to the app on every call.
    pub app_api_token: Option<String>,
    /// `--max-body-size` in bytes (0: no limit): a larger request body fails as daprd's
    /// read of it fails.
    pub max_body_size: u64,
    /// `--app-protocol`: how the app is called (subscriptions and deliveries).
    pub app_protocol: AppProtocol,
}

/// daprd's `--app-protocol`, as far as this sidecar speaks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AppProtocol {
    /// HTTP/1.1: `GET /dapr/subscribe`, events POSTed to the route.
    #[default]
    Http,
    /// gRPC (h2c): `AppCallback.ListTopicSubscriptions` and `OnTopicEvent`.
    Grpc,
}

impl AppProtocol {
    /// The flag's value (`http`, `grpc`).
    pub fn as_str(self) -> &'static str {
        match self {
            AppProtocol::Http => "http",
            AppProtocol::Grpc => "grpc",
        }
    }
}

impl std::str::FromStr for AppProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http" => Ok(AppProtocol::Http),
            "grpc" => Ok(AppProtocol::Grpc),
            other => Err(format!("app protocol {other:?} is not supported: use http or grpc")),
        }
    }
}

/// A Kubernetes resource quantity as daprd's `--max-body-size` reads it, in bytes:
/// a whole or decimal number with an optional binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal
/// (`k`, `M`, `G`, `T`) suffix, rounded up to a whole byte.
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => return Err(format!("{s:?}: unknown unit {other:?}; use a number of bytes or one of Ki, Mi, Gi, Ti, k, M, G, T")),
    };
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a quantity: expected a number of bytes such as 4Mi or 400"))?;
    let bytes = (n * mult as f64).ceil();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// A loaded state store and what the API needs to know about it.
pub(crate) struct StateEntry {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) component: Component,
    /// The transactional outbox, when the component configures one.
    pub(crate) outbox: Option<Arc<outbox::Outbox>>,
    /// Whether the "outbox projection on a store without an outbox" error was logged.
    pub(crate) warned_no_outbox: AtomicBool,
}

/// The running sidecar: its components, the app's subscriptions, and readiness.
pub struct Sidecar {
    cfg: SidecarConfig,
    resources: Resources,
    pubsubs: HashMap<String, (Arc<dyn PubSub>, Component)>,
    states: HashMap<String, StateEntry>,
    subscriptions: RwLock<Vec<Subscription>>,
    ready: AtomicBool,
    app: Option<Arc<AppChannel>>,
    resiliency: resiliency::Resiliency,
    /// `PUT /v1.0/metadata/{key}` values, shown under `extended`.
    extended: RwLock<BTreeMap<String, String>>,
    /// Set by the Shutdown API (`POST /v1.0/shutdown`, gRPC `Shutdown`).
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Sidecar {
    /// Loads resources and builds every component; with no resources path, an
    /// in-memory `pubsub` and `statestore` (as `dapr init --slim` gives none, but the
    /// local default here should work out of the box).
    pub async fn new(cfg: SidecarConfig) -> anyhow::Result<Arc<Self>> {
        Self::with_app_transport(cfg, Arc::new(HttpTransport::default())).await
    }

    /// As [`Sidecar::new`], reaching the app through `transport` (in-process when the app
    /// is served by this process).
    pub async fn with_app_transport(cfg: SidecarConfig, transport: Arc<dyn AppTransport>) -> anyhow::Result<Arc<Self>> {
        let mut resources =
            if cfg.resources_paths.is_empty() { Resources::default() } else { resources::load(&cfg.resources_paths, &cfg.app_id)? };
        if cfg.resources_paths.is_empty() {
            resources.components.push(Component::new("pubsub", "pubsub.in-memory"));
            resources.components.push(Component::new("statestore", "state.in-memory"));
        }
        // daprd's convention: a Configuration's spec.tracing turns span export on.
        if let Some(t) = &resources.tracing
            && let Some(endpoint) = &t.endpoint
            && t.sampling_rate > 0.0
        {
            let cfg = spindapr_metrics::trace::TraceConfig {
                endpoint: endpoint.clone(),
                sampling_rate: t.sampling_rate,
                service: cfg.app_id.clone(),
            };
            spindapr_metrics::trace::init(&cfg).map_err(|e| anyhow::anyhow!("tracing: {e}"))?;
        }
        let mut pubsubs = HashMap::new();
        let mut states = HashMap::new();
        for c in &resources.components {
            match c.kind() {
                "pubsub" => {
                    let ps = pubsub::from_component(c, &cfg.app_id)
                        .await
                        .with_context(|| format!("{}: initialising component {}", c.file.display(), c.name))?;
                    pubsubs.insert(c.name.clone(), (ps, c.clone()));
                }
                "state" => {
                    if let Some(p) = c.meta("keyPrefix").filter(|p| p.contains("||")) {
                        anyhow::bail!(
                            "{}: state store {}: keyPrefix {p:?} can't contain '||'; use appid, name, namespace, none or a plain prefix",
                            c.file.display(),
                            c.name
                        );
                    }
                    let store = state::from_component(c)
                        .await
                        .with_context(|| format!("{}: initialising component {}", c.file.display(), c.name))?;
                    states.insert(c.name.clone(), (store, c.clone()));
                }
                _ => {}
            }
        }
        let states = states
            .into_iter()
            .map(|(name, (store, c))| {
                let outbox = outbox_of(&c, &cfg.app_id, &store, &pubsubs)?.map(Arc::new);
                Ok((name, StateEntry { store, component: c, outbox, warned_no_outbox: AtomicBool::new(false) }))
            })
            .collect::<anyhow::Result<HashMap<_, _>>>()?;
        // As daprd, the internal outbox topics are subscribed at start, app or no app.
        for o in states.values().filter_map(|s| s.outbox.as_ref()) {
            o.subscribe().await.context("subscribing to the internal outbox topic")?;
        }
        let app = match cfg.app_port {
            None => None,
            Some(port) => {
                let channel = AppChannel::new(transport, &cfg.app_host, port, &cfg.app_id, cfg.app_api_token.clone());
                Some(Arc::new(match cfg.app_protocol {
                    AppProtocol::Http => channel,
                    AppProtocol::Grpc => channel.over_grpc()?,
                }))
            }
        };
        let resiliency = resiliency::Resiliency::build(&resources.resiliency).map_err(|e| anyhow::anyhow!("resiliency: {e}"))?;
        Ok(Arc::new(Self {
            resiliency,
            extended: RwLock::new(BTreeMap::new()),
            shutdown: tokio::sync::watch::channel(false).0,
            subscriptions: RwLock::new(resources.subscriptions.clone()),
            ready: AtomicBool::new(app.is_none()),
            cfg,
            resources,
            pubsubs,
            states,
            app,
        }))
    }

    /// Waits for the app, reads its programmatic subscriptions, merges them with the
    /// declarative ones and subscribes; then the sidecar reports healthy.
    pub async fn start_subscriptions(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(app) = self.app.clone() else {
            return Ok(());
        };
        // As daprd's initProgrammaticSubscriptions: with no pubsub there is nothing to
        // subscribe to, and the app is not asked.
        if self.pubsubs.is_empty() {
            self.ready.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let programmatic = loop {
            if app.is_grpc() {
                match app.list_topic_subscriptions().await {
                    Ok(subs) => break subs,
                    Err(e) => {
                        tracing::debug!("waiting for the app: {e:#}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            match app.get_subscribe().await {
                Ok((200, body)) => {
                    break parse_programmatic(&body).unwrap_or_else(|e| {
                        tracing::error!("the app's /dapr/subscribe answer is not a subscription list: {e}");
                        Vec::new()
                    });
                }
                Ok((status, _)) => {
                    tracing::info!("the app answered {status} to GET /dapr/subscribe: no programmatic subscriptions");
                    break Vec::new();
                }
                Err(e) => {
                    tracing::debug!("waiting for the app: {e:#}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let subs = merge_subscriptions(&self.resources.subscriptions, programmatic);
        for s in &subs {
            let Some((ps, comp)) = self.pubsubs.get(&s.pubsub) else {
                tracing::warn!("subscription to {}/{}: pubsub {} is not loaded; skipped", s.pubsub, s.topic, s.pubsub);
                continue;
            };
            // subscription.New's IsOperationAllowed: a denied subscription stays listed but
            // receives nothing.
            if !api::topic_allowed(comp, &self.cfg.app_id, &s.topic, "subscriptionScopes") {
                tracing::error!(
                    "Failed to start subscription for pubsub {}, topic {}: subscription to topic '{}' on pubsub '{}' is not allowed",
                    s.pubsub,
                    s.topic,
                    s.topic,
                    s.pubsub
                );
                continue;
            }
            let dlq_forbidden = s
                .dead_letter_topic
                .as_ref()
                .filter(|d| !api::topic_allowed(comp, &self.cfg.app_id, d, "publishingScopes"))
                .map(|d| format!("topic {d} is not allowed for app id {}", self.cfg.app_id));
            let route = Route::compile(s.clone())?;
            let policy = self.resiliency.component(&s.pubsub, resiliency::Kind::Pubsub, resiliency::Dir::Inbound);
            let handler: pubsub::Handler = match s.bulk {
                Some(config) => bulk::batching_handler(Arc::new(bulk::BulkDelivery {
                    route,
                    pubsub: ps.clone(),
                    app: app.clone(),
                    policy,
                    config,
                    dlq_forbidden,
                })),
                None => {
                    let d = Arc::new(Delivery {
                        route,
                        pubsub: ps.clone(),
                        app: app.clone(),
                        policy,
                        dlq_forbidden,
                        app_id: self.cfg.app_id.clone(),
                    });
                    Arc::new(move |m| {
                        let d = d.clone();
                        Box::pin(async move { d.deliver(m).await })
                    })
                }
            };
            ps.subscribe(&s.topic, handler).await.with_context(|| format!("subscribing to {}/{}", s.pubsub, s.topic))?;
            tracing::info!(pubsub = %s.pubsub, topic = %s.topic, "app is subscribed to topic");
        }
        *self.subscriptions.write().await = subs;
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Asks the process to stop, as daprd's Shutdown API does (the servers drain).
    pub fn request_shutdown(&self) {
        tracing::info!("shutdown requested through the API");
        self.shutdown.send_replace(true);
    }

    /// `dapr-force-shutdown: true`: exits at once with status 1, skipping the graceful
    /// stop, as daprd does.
    pub fn force_shutdown(&self) {
        tracing::warn!("forced shutdown requested through the API");
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::process::exit(1);
        });
    }

    /// Resolves once the Shutdown API was called.
    pub fn shutdown_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// One line per loaded component: `name (type)`.
    pub fn component_summary(&self) -> Vec<String> {
        self.resources.components.iter().map(|c| format!("{} ({})", c.name, c.type_)).collect()
    }

    /// One line per active subscription: `pubsub/topic → route`, with its dead-letter topic.
    pub async fn subscription_summary(&self) -> Vec<String> {
        self.subscriptions
            .read()
            .await
            .iter()
            .map(|s| {
                let route = s.default_path.clone().or_else(|| s.rules.first().map(|r| r.path.clone())).unwrap_or_default();
                let rules = if s.rules.is_empty() { String::new() } else { format!(" (+{} rules)", s.rules.len()) };
                let dlq = s.dead_letter_topic.as_ref().map(|d| format!(", dead letters to {d}")).unwrap_or_default();
                format!("{}/{} → {route}{rules}{dlq}", s.pubsub, s.topic)
            })
            .collect()
    }

    /// Whether the app's subscriptions are set up (what `/v1.0/healthz` reports).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Stops every pub/sub component's delivery.
    pub async fn close(&self) {
        for (ps, _) in self.pubsubs.values() {
            ps.close().await;
        }
    }
}

/// The outbox a state store's metadata configures (`outboxPublishPubsub`,
/// `outboxPublishTopic`, `outboxPubsub`, `outboxDiscardWhenMissingState`), checked
/// against the loaded pubsubs.
fn outbox_of(
    c: &Component,
    app_id: &str,
    store: &Arc<dyn StateStore>,
    pubsubs: &HashMap<String, (Arc<dyn PubSub>, Component)>,
) -> anyhow::Result<Option<outbox::Outbox>> {
    let (publish_pubsub, publish_topic) = match (c.meta("outboxPublishPubsub"), c.meta("outboxPublishTopic")) {
        (Some(p), Some(t)) if !p.is_empty() && !t.is_empty() => (p.to_string(), t.to_string()),
        (None, None) => return Ok(None),
        _ => anyhow::bail!(
            "{}: state store {} sets only one of outboxPublishPubsub and outboxPublishTopic; set both",
            c.file.display(),
            c.name
        ),
    };
    let outbox_pubsub = c.meta("outboxPubsub").filter(|v| !v.is_empty()).unwrap_or(&publish_pubsub).to_string();
    let loaded = |p: &str, key: &str| {
        pubsubs
            .get(p)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{}: state store {} sets {key} to pubsub {p}, which is not loaded", c.file.display(), c.name))
    };
    let (publish, _) = loaded(&publish_pubsub, "outboxPublishPubsub")?;
    let (internal, internal_c) = loaded(&outbox_pubsub, "outboxPubsub")?;
    let settings = outbox::OutboxSettings {
        publish_pubsub,
        publish_topic,
        outbox_pubsub,
        discard_when_missing: c.meta("outboxDiscardWhenMissingState").is_some_and(spindapr_dapr_components::is_truthy),
    };
    let local = internal_c.type_ == "pubsub.in-memory";
    Ok(Some(outbox::Outbox::new(settings, app_id, store.clone(), publish, internal, local)))
}

/// The subscriptions daprd runs: the first declarative one per pubsub+topic; a
/// programmatic one without any route dropped (with a warning); the others replacing a
/// declarative one for the same pubsub+topic in place (the last of them winning).
pub(crate) fn merge_subscriptions(declarative: &[Subscription], programmatic: Vec<Subscription>) -> Vec<Subscription> {
    let mut subs: Vec<Subscription> = Vec::new();
    for d in declarative {
        if !subs.iter().any(|s| s.pubsub == d.pubsub && s.topic == d.topic) {
            subs.push(d.clone());
        }
    }
    for p in programmatic {
        if p.rules.is_empty() && p.default_path.is_none() {
            tracing::warn!("topic {} has an empty routes. removing from subscriptions list", p.topic);
            continue;
        }
        match subs.iter_mut().find(|s| s.pubsub == p.pubsub && s.topic == p.topic) {
            Some(slot) => *slot = p,
            None => subs.push(p),
        }
    }
    subs
}

/// The app's `GET /dapr/subscribe` answer, v1 (`route`) or v2 (`routes`).
/// Keys are matched as daprd's Go decoder matches them (the Java SDK sends
/// `pubsubName`), unknown keys are ignored and `null` is the zero value.
pub(crate) fn parse_programmatic(body: &[u8]) -> Result<Vec<Subscription>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Item {
        #[serde(default)]
        pubsubname: String,
        #[serde(default)]
        topic: String,
        #[serde(default)]
        route: Option<String>,
        #[serde(default)]
        routes: Option<Routes>,
        #[serde(default)]
        metadata: Option<BTreeMap<String, String>>,
        #[serde(default)]
        dead_letter_topic: Option<String>,
        // Typed as Go's BulkSubscribeJSON: a wrong type fails the whole list, as there.
        #[serde(default)]
        bulk_subscribe: Option<resources::BulkSubscribeSpec>,
    }
    #[derive(serde::Deserialize)]
    struct Routes {
        #[serde(default)]
        rules: Vec<RuleItem>,
        #[serde(default)]
        default: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct RuleItem {
        #[serde(default, rename = "match")]
        match_: String,
        #[serde(default)]
        path: String,
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let items: Vec<Item> = serde_json::from_value(go_json::fold(v, &go_json::SUBSCRIPTIONS)).map_err(|e| e.to_string())?;
    Ok(items
        .into_iter()
        .map(|i| {
            let routes = i.routes.map(|r| resources::RoutesSpec {
                rules: r.rules.into_iter().map(|x| resources::Rule { match_: x.match_, path: x.path }).collect(),
                default: r.default,
            });
            Subscription::new(i.pubsubname, i.topic, i.route, routes, i.metadata.unwrap_or_default(), i.dead_letter_topic, false)
                .with_bulk(i.bulk_subscribe.as_ref())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_as_daprd_reads_them() {
        assert_eq!(parse_quantity("4Mi"), Ok(4 << 20));
        assert_eq!(parse_quantity("400"), Ok(400));
        assert_eq!(parse_quantity("1k"), Ok(1000));
        assert_eq!(parse_quantity("1.5Ki"), Ok(1536));
        assert_eq!(parse_quantity("0"), Ok(0));
        assert!(parse_quantity("4MB").is_err());
        assert!(parse_quantity("-1").is_err());
        assert!(parse_quantity("99999999999999999999Ti").is_err());
        assert!(parse_quantity("").is_err());
    }

    #[test]
    fn subscriptions_merge_as_daprd() {
        let sub = |topic: &str, route: Option<&str>, declarative: bool| {
            Subscription::new("p".into(), topic.into(), route.map(str::to_owned), None, Default::default(), None, declarative)
        };
        let merged = merge_subscriptions(
            &[sub("a", Some("/one"), true), sub("a", Some("/two"), true), sub("b", Some("/b"), true), sub("c", Some("/c"), true)],
            vec![sub("b", Some("/prog"), false), sub("c", None, false), sub("b", Some("/last"), false), sub("d", Some("/d"), false)],
        );
        let got: Vec<(&str, Option<&str>, bool)> =
            merged.iter().map(|s| (s.topic.as_str(), s.default_path.as_deref(), s.declarative)).collect();
        assert_eq!(
            got,
            [("a", Some("/one"), true), ("b", Some("/last"), false), ("c", Some("/c"), true), ("d", Some("/d"), false)],
            "first declarative wins; programmatic replaces in place, last wins; no-route programmatic dropped"
        );
    }

    #[test]
    fn programmatic_v1_and_v2() {
        let subs = parse_programmatic(
            br#"[{"pubsubname":"p","topic":"a","route":"/a","deadLetterTopic":"a-dlq"},
                 {"pubsubname":"p","topic":"b","routes":{"rules":[{"match":"event.type == \"x\"","path":"/x"}],"default":"/b"},"metadata":{"rawPayload":"true"}}]"#,
        )
        .unwrap();
        assert_eq!(subs[0].default_path.as_deref(), Some("/a"));
        assert_eq!(subs[0].dead_letter_topic.as_deref(), Some("a-dlq"));
        assert_eq!(subs[1].rules.len(), 1);
        assert_eq!(subs[1].default_path.as_deref(), Some("/b"));
        assert_eq!(subs[1].metadata.get("rawPayload").map(String::as_str), Some("true"));
        assert!(parse_programmatic(b"{}").is_err());
        // The Java SDK's casing, unknown keys and nulls, as Go's decoder reads them.
        let subs = parse_programmatic(
            br#"[{"pubsubName":"p","Topic":"c","route":"/c","DeadLetterTopic":null,"extra":{"x":1},
                  "routes":{"rules":[{"match":"","path":"/r","note":"ignored"}]}}]"#,
        )
        .unwrap();
        assert_eq!((subs[0].pubsub.as_str(), subs[0].topic.as_str()), ("p", "c"));
        assert_eq!(subs[0].dead_letter_topic, None);
        assert_eq!(subs[0].rules.len(), 1);
    }
}
