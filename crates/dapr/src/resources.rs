//! Dapr resources as daprd loads them from `--resources-path`: `Component`
//! (dapr.io/v1alpha1), `Subscription` (v1alpha1 and v2alpha1) and `Resiliency`, from
//! every `.yaml`/`.yml` file (multi-document), with `scopes` honoured and metadata
//! values taken from `value`, `secretKeyRef` (the environment secret store) or `envRef`.
//! Bad YAML or an unknown field stops the start with the file, line and field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
pub use spindapr_dapr_components::{Component, parse_go_duration};

/// A resource that could not be loaded, located by file, line and field.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}{}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), field.as_ref().map(|f| format!(" (field `{f}`)")).unwrap_or_default())]
pub struct ResourceError {
    /// The file (or resources folder) at fault.
    pub file: PathBuf,
    /// The 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// The path of the offending field, e.g. `spec.metadata[0]`, when known.
    pub field: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

/// The `metadata` block every Dapr resource carries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectMeta {
    /// `metadata.name`: the resource's name; for a component, the name apps address it by.
    pub name: String,
    /// `metadata.namespace`: the namespace the resource belongs to (accepted, not acted on here).
    #[serde(default)]
    pub namespace: Option<String>,
    /// `metadata.labels`: Kubernetes-style labels (accepted, ignored).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`: Kubernetes-style annotations (accepted, ignored).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A `kind: Component` document as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentDoc {
    /// `apiVersion`: the resource schema, `dapr.io/v1alpha1`.
    pub api_version: String,
    /// `kind`: always `Component` here.
    pub kind: String,
    /// `metadata`: the component's name and labels.
    pub metadata: ObjectMeta,
    /// `spec`: the component's type, version and configuration.
    pub spec: ComponentSpec,
    /// `auth`: which secret store resolves the component's `secretKeyRef`s.
    #[serde(default)]
    pub auth: Option<ComponentAuth>,
    /// `scopes`: the app ids allowed to load the component; empty means every app.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A component's `auth` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentAuth {
    /// `auth.secretStore`: the secret store for `secretKeyRef` values (the environment here).
    #[serde(default)]
    pub secret_store: Option<String>,
}

/// A component's `spec` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentSpec {
    /// `spec.type`: the building block and implementation, e.g. `pubsub.redis`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `spec.version`: the implementation's version, e.g. `v1`.
    pub version: String,
    /// `spec.ignoreErrors`: when true, daprd carries on if the component fails to initialise (not acted on here).
    #[serde(default)]
    pub ignore_errors: bool,
    /// `spec.initTimeout`: how long daprd lets the component initialise, a Go duration (not acted on here).
    #[serde(default)]
    pub init_timeout: Option<String>,
    /// `spec.metadata`: the component's configuration entries.
    #[serde(default)]
    pub metadata: Vec<MetadataItem>,
}

/// One entry of a component's `spec.metadata`; one of `value`, `secretKeyRef`, `envRef` gives its value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetadataItem {
    /// `name`: the configuration key.
    pub name: String,
    /// `value`: a literal value; non-string scalars are turned into text.
    #[serde(default)]
    pub value: Option<serde_norway::Value>,
    /// `secretKeyRef`: take the value from a secret in the component's secret store.
    #[serde(default)]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// `envRef`: take the value from this environment variable of the sidecar.
    #[serde(default)]
    pub env_ref: Option<String>,
}

/// A metadata entry's `secretKeyRef`: the secret holding its value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// `secretKeyRef.name`: the secret's name.
    pub name: String,
    /// `secretKeyRef.key`: the key inside the secret; here, defaults to the name.
    #[serde(default)]
    pub key: Option<String>,
}

/// A `kind: Subscription` document as written, v1alpha1 or v2alpha1.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubscriptionDoc {
    /// `apiVersion`: `dapr.io/v1alpha1` (single `route`) or `dapr.io/v2alpha1` (`routes`).
    pub api_version: String,
    /// `kind`: always `Subscription` here.
    pub kind: String,
    /// `metadata`: the subscription's name.
    pub metadata: ObjectMeta,
    /// `spec`: what to subscribe to and where to deliver it.
    pub spec: SubscriptionSpec,
    /// `scopes`: the app ids the subscription applies to; empty means every app.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A subscription's `spec` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// `spec.pubsubname`: the pub/sub component to subscribe through.
    pub pubsubname: String,
    /// `spec.topic`: the topic to receive messages from.
    pub topic: String,
    /// `spec.route` (v1alpha1): the app path every message is posted to.
    #[serde(default)]
    pub route: Option<String>,
    /// `spec.routes` (v2alpha1): CEL rules choosing the app path, plus a default.
    #[serde(default)]
    pub routes: Option<RoutesSpec>,
    /// `spec.metadata`: per-subscription options, e.g. `rawPayload`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `spec.deadLetterTopic`: where a message goes once its delivery has finally failed.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// `spec.bulkSubscribe`: batched delivery settings.
    #[serde(default)]
    pub bulk_subscribe: Option<BulkSubscribeSpec>,
}

/// `bulkSubscribe` of a subscription (declarative v1alpha1/v2alpha1, or programmatic).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkSubscribeSpec {
    /// `enabled`: deliver in batches.
    #[serde(default)]
    pub enabled: bool,
    /// `maxMessagesCount`: the most entries in one batch (≤ 0: 100).
    #[serde(default)]
    pub max_messages_count: i32,
    /// `maxAwaitDurationMs`: how long a batch waits for more after its first entry (≤ 0: 1000).
    #[serde(default)]
    pub max_await_duration_ms: i32,
}

impl BulkSubscribeSpec {
    /// The batching a subscription gets, `None` when not enabled; values ≤ 0 take
    /// daprd's defaults (pkg/runtime/pubsub/default_bulksub.go: 100 entries, 1000 ms).
    pub fn config(&self) -> Option<BulkConfig> {
        self.enabled.then(|| BulkConfig {
            max_messages: if self.max_messages_count > 0 { self.max_messages_count as usize } else { 100 },
            max_await: Duration::from_millis(if self.max_await_duration_ms > 0 { self.max_await_duration_ms as u64 } else { 1000 }),
        })
    }
}

/// How a bulk subscription batches its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkConfig {
    /// A batch is sent once it holds this many entries...
    pub max_messages: usize,
    /// ...or this long after its first entry arrived.
    pub max_await: Duration,
}

/// A v2 subscription's `routes`: rules tried in order, then a default path.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoutesSpec {
    /// `routes.rules`: match/path pairs; the first rule whose match holds picks the path.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// `routes.default`: the path for events no rule matches.
    #[serde(default)]
    pub default: Option<String>,
}

/// One routing rule of `routes.rules`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `match`: a CEL expression over the CloudEvent (`event.type == ...`); empty always matches.
    #[serde(rename = "match", default)]
    pub match_: String,
    /// `path`: the app path events matching this rule are posted to.
    pub path: String,
}

/// A declarative or programmatic subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The pub/sub component name.
    pub pubsub: String,
    /// The topic subscribed to.
    pub topic: String,
    /// Routing rules, tried in order.
    pub rules: Vec<Rule>,
    /// The path when no rule matches; `None` when there is none.
    pub default_path: Option<String>,
    /// The subscription's metadata options, e.g. `rawPayload`.
    pub metadata: BTreeMap<String, String>,
    /// The dead-letter topic for messages whose delivery failed, if any.
    pub dead_letter_topic: Option<String>,
    /// True for a subscription from a resource file, false for one the app declared.
    pub declarative: bool,
    /// Batched delivery, when `bulkSubscribe.enabled`.
    pub bulk: Option<BulkConfig>,
    /// The declarative resource's name (empty for a programmatic one).
    pub name: String,
}

impl Subscription {
    /// v1 `route` and v2 `routes` folded into rules + a default, as daprd does.
    pub fn new(
        pubsub: String,
        topic: String,
        route: Option<String>,
        routes: Option<RoutesSpec>,
        metadata: BTreeMap<String, String>,
        dlq: Option<String>,
        declarative: bool,
    ) -> Self {
        let routes = routes.unwrap_or_default();
        let default_path = routes.default.filter(|d| !d.is_empty()).or(route.filter(|r| !r.is_empty()));
        Self {
            pubsub,
            topic,
            rules: routes.rules,
            default_path,
            metadata,
            dead_letter_topic: dlq.filter(|d| !d.is_empty()),
            declarative,
            bulk: None,
            name: String::new(),
        }
    }

    /// With the batching `bulkSubscribe` asks for.
    pub fn with_bulk(mut self, bulk: Option<&BulkSubscribeSpec>) -> Self {
        self.bulk = bulk.and_then(BulkSubscribeSpec::config);
        self
    }
}

/// A `kind: Resiliency` document as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResiliencyDoc {
    /// `apiVersion`: the resource schema, `dapr.io/v1alpha1`.
    pub api_version: String,
    /// `kind`: always `Resiliency` here.
    pub kind: String,
    /// `metadata`: the resiliency resource's name.
    pub metadata: ObjectMeta,
    /// `spec`: the named policies and the targets they apply to.
    pub spec: ResiliencySpec,
    /// `scopes`: the app ids the policies apply to; empty means every app.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A resiliency resource's `spec` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResiliencySpec {
    /// `spec.policies`: named timeout, retry and circuit breaker policies.
    #[serde(default)]
    pub policies: Policies,
    /// `spec.targets`: which named policies apply to which apps, actors and components.
    #[serde(default)]
    pub targets: Targets,
}

/// The `spec.policies` block: policies by name, for targets to refer to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policies {
    /// `policies.timeouts`: policy name to Go duration.
    #[serde(default)]
    pub timeouts: BTreeMap<String, String>,
    /// `policies.retries`: policy name to retry settings.
    #[serde(default)]
    pub retries: BTreeMap<String, RetrySpec>,
    /// `policies.circuitBreakers`: named circuit breakers.
    #[serde(default)]
    pub circuit_breakers: BTreeMap<String, CircuitBreakerSpec>,
}

/// One retry policy under `spec.policies.retries`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetrySpec {
    /// `policy`: `constant` (the default) or `exponential` back-off (any case).
    #[serde(default)]
    pub policy: Option<String>,
    /// `duration`: the constant wait (ignored by `exponential`, as daprd).
    #[serde(default)]
    pub duration: Option<String>,
    /// `maxInterval`: the cap on an exponential back-off's wait.
    #[serde(default)]
    pub max_interval: Option<String>,
    /// `maxRetries`: how many retries after the first attempt; -1 or absent means no limit.
    #[serde(default)]
    pub max_retries: Option<i64>,
    /// `matching`: which status codes are retried.
    #[serde(default)]
    pub matching: Option<MatchingSpec>,
}

/// A retry policy's `matching` block: comma lists of codes or `A-B` ranges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingSpec {
    /// `httpStatusCodes`: the HTTP statuses retried (100–599).
    #[serde(default, rename = "httpStatusCodes")]
    pub http_status_codes: Option<String>,
    /// `gRPCStatusCodes`: the gRPC codes retried (0–16).
    #[serde(default, rename = "gRPCStatusCodes")]
    pub grpc_status_codes: Option<String>,
}

/// One circuit breaker under `spec.policies.circuitBreakers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    /// `maxRequests`: calls let through while half-open (0: 1).
    #[serde(default)]
    pub max_requests: Option<u32>,
    /// `interval`: how often a closed breaker clears its counts (0: never).
    #[serde(default)]
    pub interval: Option<String>,
    /// `timeout`: how long it stays open before trying again (0: 60 s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// `trip`: a CEL expression over the counts (default `consecutiveFailures > 5`).
    #[serde(default)]
    pub trip: Option<String>,
}

/// The `spec.targets` block: where the named policies apply.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Targets {
    /// `targets.apps`: policies for service invocation, by app id.
    #[serde(default)]
    pub apps: BTreeMap<String, TargetPolicies>,
    /// `targets.actors`: policies for actor types (accepted, not applied here).
    #[serde(default)]
    pub actors: BTreeMap<String, serde_norway::Value>,
    /// `targets.components`: inbound and outbound policies, by component name.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentTargets>,
}

/// The policies for one component under `spec.targets.components`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentTargets {
    /// `inbound`: policies for calls from the component to the app, i.e. pub/sub delivery.
    #[serde(default)]
    pub inbound: Option<TargetPolicies>,
    /// `outbound`: policies for calls from the sidecar to the component, e.g. publish.
    #[serde(default)]
    pub outbound: Option<TargetPolicies>,
}

/// The policy names applied in one direction (`inbound` or `outbound`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetPolicies {
    /// `timeout`: a timeout policy name (a duration written here is no policy, as daprd).
    #[serde(default)]
    pub timeout: Option<String>,
    /// `retry`: a retry policy name.
    #[serde(default)]
    pub retry: Option<String>,
    /// `circuitBreaker`: a circuit breaker policy name.
    #[serde(default)]
    pub circuit_breaker: Option<String>,
    /// `circuitBreakerCacheSize` (apps): accepted; the cache holds 100 methods.
    #[serde(default)]
    pub circuit_breaker_cache_size: Option<i64>,
}

/// Everything loaded from the resources paths.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// Components scoped to this app.
    pub components: Vec<Component>,
    /// Declarative subscriptions scoped to this app.
    pub subscriptions: Vec<Subscription>,
    /// Resiliency specs scoped to this app, in load order.
    pub resiliency: Vec<ResiliencySpec>,
    /// Their resource names, in the same order.
    pub resiliency_names: Vec<String>,
    /// `spec.tracing` of a `Configuration`: where to export spans and how many.
    pub tracing: Option<TracingConfig>,
}

/// A Dapr `Configuration`'s `spec.tracing`, as far as this sidecar exports spans.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// `samplingRate` (`"1"`: every trace; `"0"`: none).
    pub sampling_rate: f64,
    /// The OTLP/HTTP traces URL from `otel.endpointAddress` (`isSecure` picks https).
    pub endpoint: Option<String>,
}

/// Reads `spec.tracing` of a `Configuration` document (its other settings are daprd's
/// and ignored here).
fn tracing_of(doc: &serde_norway::Value) -> Result<Option<TracingConfig>, String> {
    let Some(t) = doc.get("spec").and_then(|s| s.get("tracing")) else { return Ok(None) };
    let str_of = |v: Option<&serde_norway::Value>| -> Option<String> {
        v.and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_f64().map(|f| f.to_string())))
    };
    let rate = match str_of(t.get("samplingRate")) {
        None => 0.0,
        Some(r) if r.trim().is_empty() => 0.0,
        Some(r) => r.trim().parse::<f64>().map_err(|_| format!("spec.tracing.samplingRate {r:?} is not a number between 0 and 1"))?,
    };
    let otel = t.get("otel");
    let endpoint = match str_of(otel.and_then(|o| o.get("endpointAddress"))) {
        None => None,
        Some(addr) => {
            let protocol = str_of(otel.and_then(|o| o.get("protocol"))).unwrap_or_else(|| "grpc".into());
            if !protocol.eq_ignore_ascii_case("http") {
                return Err(format!(
                    "spec.tracing.otel.protocol {protocol:?}: this sidecar exports OTLP over HTTP only; set protocol: http (and the collector's HTTP port, 4318)"
                ));
            }
            let secure = otel.and_then(|o| o.get("isSecure")).and_then(serde_norway::Value::as_bool).unwrap_or(false);
            let base = if addr.contains("://") { addr } else { format!("{}://{addr}", if secure { "https" } else { "http" }) };
            Some(format!("{}/v1/traces", base.trim_end_matches('/').trim_end_matches("/v1/traces")))
        }
    };
    Ok(Some(TracingConfig { sampling_rate: rate, endpoint }))
}

/// One Dapr resource document, typed (unknown fields rejected), before any check of
/// what this sidecar supports.
#[derive(Debug, Clone)]
pub enum DaprDoc {
    /// A `kind: Component` document.
    Component(ComponentDoc),
    /// A `kind: Subscription` document.
    Subscription(SubscriptionDoc),
    /// A `kind: Resiliency` document.
    Resiliency(ResiliencyDoc),
}

/// Types a parsed YAML document by its `kind`; `Ok(None)` for documents that are not
/// Dapr resources (or kinds daprd loads but this sidecar ignores). Errors carry the path
/// of the offending field.
pub fn parse_dapr_doc(value: serde_norway::Value) -> Result<Option<DaprDoc>, serde_path_to_error::Error<serde_norway::Error>> {
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string();
    let api = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("");
    if !api.starts_with("dapr.io/") {
        return Ok(None);
    }
    Ok(match kind.as_str() {
        "Component" => Some(DaprDoc::Component(serde_path_to_error::deserialize(value)?)),
        "Subscription" => Some(DaprDoc::Subscription(serde_path_to_error::deserialize(value)?)),
        "Resiliency" => Some(DaprDoc::Resiliency(serde_path_to_error::deserialize(value)?)),
        _ => None,
    })
}

/// Component types the sidecar can run.
pub const SUPPORTED_TYPES: &[&str] = &["pubsub.in-memory", "pubsub.redis", "pubsub.kafka", "state.in-memory", "state.redis"];

/// Loads every resource under `paths` for `app_id`.
pub fn load(paths: &[PathBuf], app_id: &str) -> Result<Resources, ResourceError> {
    let mut out = Resources::default();
    for dir in paths {
        let mut files: Vec<PathBuf> = if dir.is_file() {
            vec![dir.clone()]
        } else {
            std::fs::read_dir(dir)
                .map_err(|e| ResourceError {
                    file: dir.clone(),
                    line: None,
                    field: None,
                    message: format!("cannot read the resources path: {e}"),
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect()
        };
        files.sort();
        for file in files {
            load_file(&file, app_id, &mut out)?;
        }
    }
    warn_undefined_policies(&out.resiliency);
    Ok(out)
}

/// A target may name a policy of any Resiliency document; one that names a policy no
/// document defines gets none (daprd: silently for retries and timeouts, a crash for
/// circuit breakers), so say so at start.
fn warn_undefined_policies(specs: &[ResiliencySpec]) {
    let defined = |f: Names, name: &str| specs.iter().any(|s| f(&s.policies).contains(&&name.to_string()));
    type Names = fn(&Policies) -> Vec<&String>;
    let check = |target: &str, t: &TargetPolicies| {
        let named: [(&str, &Option<String>, Names); 3] = [
            ("retry", &t.retry, |p| p.retries.keys().collect()),
            ("timeout", &t.timeout, |p| p.timeouts.keys().collect()),
            ("circuitBreaker", &t.circuit_breaker, |p| p.circuit_breakers.keys().collect()),
        ];
        for (kind, name, keys) in named {
            if let Some(n) = name
                && !defined(keys, n)
            {
                tracing::warn!(
                    "resiliency target {target}: {kind} {n:?} is not defined in any Resiliency's policies; it has no {kind} policy"
                );
            }
        }
    };
    for s in specs {
        for (app, t) in &s.targets.apps {
            check(&format!("apps.{app}"), t);
        }
        for (c, t) in &s.targets.components {
            for (side, p) in [("inbound", &t.inbound), ("outbound", &t.outbound)] {
                if let Some(p) = p {
                    check(&format!("components.{c}.{side}"), p);
                }
            }
        }
    }
}

fn load_file(file: &Path, app_id: &str, out: &mut Resources) -> Result<(), ResourceError> {
    let text = std::fs::read_to_string(file).map_err(|e| ResourceError {
        file: file.into(),
        line: None,
        field: None,
        message: format!("cannot read: {e}"),
    })?;
    let err = |line: Option<usize>, field: Option<String>, message: String| ResourceError { file: file.into(), line, field, message };
    for doc in serde_norway::Deserializer::from_str(&text) {
        let value =
            serde_norway::Value::deserialize(doc).map_err(|e| err(e.location().map(|l| l.line()), None, format!("invalid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string();
        if !value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("").starts_with("dapr.io/") {
            // daprd skips non-Dapr documents in a resources folder.
            tracing::debug!(file = %file.display(), "skipping a document that is not a Dapr resource");
            continue;
        }
        let line_of = |needle: &str| text.lines().position(|l| l.trim_start().starts_with(needle)).map(|p| p + 1);
        let typed = |e: serde_path_to_error::Error<serde_norway::Error>| {
            let field = e.path().to_string();
            let leaf = field.rsplit('.').next().unwrap_or(&field).to_string();
            let line = e.inner().location().map(|l| l.line()).or_else(|| line_of(&format!("{leaf}:")));
            err(line, Some(field), e.inner().to_string())
        };
        if !matches!(kind.as_str(), "Component" | "Subscription" | "Resiliency" | "Configuration" | "HTTPEndpoint") {
            return Err(err(
                line_of("kind:"),
                Some("kind".into()),
                format!("unknown resource kind {kind:?}: expected Component, Subscription or Resiliency"),
            ));
        }
        if kind == "Configuration" {
            let scoped_out = value
                .get("scopes")
                .and_then(|s| s.as_sequence())
                .is_some_and(|s| !s.is_empty() && !s.iter().any(|a| a.as_str() == Some(app_id)));
            if !scoped_out && let Some(t) = tracing_of(&value).map_err(|e| err(line_of("tracing:"), Some("spec.tracing".into()), e))? {
                out.tracing = Some(t);
            }
            continue;
        }
        match parse_dapr_doc(value).map_err(typed)? {
            Some(DaprDoc::Component(doc)) => {
                if !doc.scopes.is_empty() && !doc.scopes.iter().any(|s| s == app_id) {
                    continue;
                }
                if let Some(a) = &doc.auth
                    && a.secret_store.as_deref().is_some_and(|s| s != "kubernetes" && s != "env")
                {
                    tracing::warn!("component {}: auth.secretStore is resolved from the environment here", doc.metadata.name);
                }
                if !SUPPORTED_TYPES.contains(&doc.spec.type_.as_str()) {
                    return Err(err(
                        line_of("type:"),
                        Some("spec.type".into()),
                        format!(
                            "component {} has type {}, which this sidecar does not support; supported types: {}",
                            doc.metadata.name,
                            doc.spec.type_,
                            SUPPORTED_TYPES.join(", ")
                        ),
                    ));
                }
                let mut metadata = BTreeMap::new();
                for (i, m) in doc.spec.metadata.iter().enumerate() {
                    let value = metadata_value(m)
                        .map_err(|e| err(line_of(&format!("- name: {}", m.name)), Some(format!("spec.metadata[{i}]")), e))?;
                    metadata.insert(m.name.clone(), value);
                }
                out.components.push(Component {
                    name: doc.metadata.name,
                    type_: doc.spec.type_,
                    version: doc.spec.version,
                    metadata,
                    file: file.into(),
                });
            }
            Some(DaprDoc::Subscription(doc)) => {
                if !doc.scopes.is_empty() && !doc.scopes.iter().any(|s| s == app_id) {
                    continue;
                }
                let s = doc.spec;
                // As daprd's conversion: v1alpha1 reads only `route`, v2alpha1 only `routes`.
                let v1 = doc.api_version == "dapr.io/v1alpha1";
                let (route, routes) = if v1 { (s.route, None) } else { (None, s.routes) };
                let ignored = if v1 { line_of("routes:").map(|_| "routes") } else { line_of("route:").map(|_| "route") };
                if let Some(field) = ignored {
                    tracing::warn!(file = %file.display(), "subscription {}: `{field}` is not read in {} (daprd ignores it)", doc.metadata.name, doc.api_version);
                }
                let name = doc.metadata.name.clone();
                let mut sub = Subscription::new(s.pubsubname, s.topic, route, routes, s.metadata, s.dead_letter_topic, true)
                    .with_bulk(s.bulk_subscribe.as_ref());
                sub.name = name.clone();
                // The same name again replaces the earlier one (daprd's compstore).
                out.subscriptions.retain(|d| d.name != name);
                out.subscriptions.push(sub);
            }
            Some(DaprDoc::Resiliency(doc)) => {
                if !doc.scopes.is_empty() && !doc.scopes.iter().any(|s| s == app_id) {
                    continue;
                }
                let policy =
                    |kind: &str, name: &str, e: String| err(line_of(&format!("{name}:")), Some(format!("spec.policies.{kind}.{name}")), e);
                for (name, r) in &doc.spec.policies.retries {
                    crate::resiliency::RetryPolicy::parse(r).map_err(|e| policy("retries", name, e))?;
                }
                for (name, d) in &doc.spec.policies.timeouts {
                    crate::go_compat::resiliency_duration(d).map_err(|e| policy("timeouts", name, e))?;
                }
                for (name, c) in &doc.spec.policies.circuit_breakers {
                    crate::resiliency::breaker_spec(c).map_err(|e| policy("circuitBreakers", name, e))?;
                }
                out.resiliency_names.push(doc.metadata.name.clone());
                out.resiliency.push(doc.spec);
            }
            None => tracing::debug!(file = %file.display(), "ignoring a {kind} resource"),
        }
    }
    Ok(())
}

fn metadata_value(m: &MetadataItem) -> Result<String, String> {
    if let Some(v) = &m.value {
        return Ok(match v {
            serde_norway::Value::String(s) => s.clone(),
            serde_norway::Value::Bool(b) => b.to_string(),
            serde_norway::Value::Number(n) => n.to_string(),
            serde_norway::Value::Null => String::new(),
            other => serde_json::to_string(other).map_err(|e| e.to_string())?,
        });
    }
    if let Some(r) = &m.secret_key_ref {
        let key = r.key.as_deref().filter(|k| !k.is_empty()).unwrap_or(&r.name);
        return std::env::var(key).or_else(|_| std::env::var(&r.name)).map_err(|_| {
            format!(
                "metadata {}: secretKeyRef {}/{key} is not set; the local secret store reads environment variables: export {key}=...",
                m.name, r.name
            )
        });
    }
    if let Some(e) = &m.env_ref {
        return std::env::var(e).map_err(|_| format!("metadata {}: envRef {e} is not set in the environment", m.name));
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn loads_components_subscriptions_and_resiliency() {
        let d = tempfile::tempdir().unwrap();
        // SAFETY: tests in this module run in one thread for this variable.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SPINDAPR_TEST_SECRET", "hunter2")
        };
        write(
            d.path(),
            "all.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata:\n  - name: plain\n    value: 3\n  - name: pw\n    secretKeyRef:\n      name: SPINDAPR_TEST_SECRET\n      key: SPINDAPR_TEST_SECRET\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: other-app-only\nspec:\n  type: state.in-memory\n  version: v1\nscopes: [someone-else]\n---\napiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  pubsubname: pubsub\n  topic: t\n  routes:\n    rules:\n    - match: event.type == \"x\"\n      path: /x\n    default: /d\n  deadLetterTopic: t-dlq\n---\napiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    retries:\n      three:\n        policy: exponential\n        duration: 100ms\n        maxRetries: 3\n  targets:\n    components:\n      pubsub:\n        inbound:\n          retry: three\n",
        );
        let r = load(&[d.path().to_path_buf()], "todo").unwrap();
        assert_eq!(r.components.len(), 1);
        assert_eq!(r.components[0].meta("plain"), Some("3"));
        assert_eq!(r.components[0].meta("PW"), Some("hunter2"));
        assert_eq!(r.subscriptions[0].default_path.as_deref(), Some("/d"));
        assert_eq!(r.subscriptions[0].dead_letter_topic.as_deref(), Some("t-dlq"));
        use crate::resiliency::{Backoff, Dir, Kind, Resiliency};
        let res = Resiliency::build(&r.resiliency).unwrap();
        let p = res.component("pubsub", Kind::Pubsub, Dir::Inbound).retry.clone().unwrap();
        assert_eq!(p.max_retries, 3);
        // The exponential policy's `duration` (100ms) is ignored, as dapr/kit does.
        assert_eq!(p.backoff, Backoff::Exponential { max_interval: Duration::from_secs(60) });
        assert!(res.component("nope", Kind::Pubsub, Dir::Inbound).retry.is_none());
        assert_eq!(r.resiliency_names, ["r"]);
    }

    #[test]
    fn declarative_bulk_subscriptions_load_with_daprds_defaults() {
        let d = tempfile::tempdir().unwrap();
        let sub = |name: &str, api: &str, route: &str, bulk: &str| {
            format!(
                "apiVersion: dapr.io/{api}\nkind: Subscription\nmetadata:\n  name: {name}\nspec:\n  pubsubname: pubsub\n  topic: {name}\n  {route}\n  bulkSubscribe:\n{bulk}"
            )
        };
        let docs = [
            sub("a", "v1alpha1", "route: /a", "    enabled: true\n    maxMessagesCount: 0\n"),
            sub("b", "v2alpha1", "routes:\n    default: /b", "    enabled: true\n    maxMessagesCount: 7\n    maxAwaitDurationMs: 250\n"),
            sub("c", "v1alpha1", "route: /c", "    enabled: false\n    maxMessagesCount: 7\n"),
        ];
        write(d.path(), "subs.yaml", &docs.join("---\n"));
        let r = load(&[d.path().to_path_buf()], "app").unwrap();
        let bulk: Vec<_> = r.subscriptions.iter().map(|s| s.bulk).collect();
        assert_eq!(
            bulk,
            [
                Some(BulkConfig { max_messages: 100, max_await: Duration::from_millis(1000) }),
                Some(BulkConfig { max_messages: 7, max_await: Duration::from_millis(250) }),
                None
            ]
        );
    }

    #[test]
    fn a_configuration_turns_span_export_on() {
        let doc = |t: &str| -> serde_norway::Value {
            serde_norway::from_str(&format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  metric:\n    enabled: true\n{t}"
            ))
            .unwrap()
        };
        let t = tracing_of(&doc("  tracing:\n    samplingRate: \"0.5\"\n    otel:\n      endpointAddress: collector:4318\n      isSecure: false\n      protocol: http\n")).unwrap();
        assert_eq!(t, Some(TracingConfig { sampling_rate: 0.5, endpoint: Some("http://collector:4318/v1/traces".into()) }));
        let t = tracing_of(&doc("  tracing:\n    samplingRate: \"1\"\n")).unwrap().unwrap();
        assert_eq!((t.sampling_rate, t.endpoint), (1.0, None));
        assert!(
            tracing_of(&doc("  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: c:4317\n")).is_err(),
            "gRPC (the default protocol) is refused"
        );
        assert!(tracing_of(&doc("  tracing:\n    samplingRate: lots\n")).is_err());
        assert_eq!(tracing_of(&doc("")).unwrap(), None);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "c.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec:\n  type: pubsub.nats\n  version: v1\n",
        );
        let e = load(&[d.path().to_path_buf()], "a").unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.to_string().contains("pubsub.nats"), "{e}");
        write(
            d.path(),
            "c.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metdata: []\n",
        );
        let e = load(&[d.path().to_path_buf()], "a").unwrap_err();
        assert!(e.to_string().contains("metdata"), "{e}");
        assert_eq!(e.line, Some(8), "{e}");
        write(d.path(), "c.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: [unclosed\n");
        let e = load(&[d.path().to_path_buf()], "a").unwrap_err();
        assert!(e.to_string().contains("invalid YAML"), "{e}");
    }
}
