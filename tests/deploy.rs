//! The Kubernetes manifests: every overlay is rendered with `kubectl kustomize`, every
//! object parsed into a typed model (SpinApp from spin-operator v0.6's schema; Dapr
//! Component, Subscription and Resiliency with the sidecar's own strict models; unknown
//! fields rejected), and the cross-references checked: app-id ↔ scopes ↔ pubsub names,
//! SpinApp variables ↔ spin.toml, secret names and keys, the outbox topic.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The typed models mirror the CRD schemas: every field exists so unknown ones are
// rejected, not because each is read.
#![allow(dead_code)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::repo_root;
use serde::Deserialize;
use spindapr_dapr::resources::{DaprDoc, parse_dapr_doc};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpinApp {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: SpinAppSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpinAppSpec {
    executor: String,
    image: String,
    #[serde(default)]
    image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default)]
    checks: Option<HealthChecks>,
    #[serde(default)]
    replicas: Option<i32>,
    #[serde(default)]
    enable_autoscaling: Option<bool>,
    #[serde(default)]
    runtime_config: Option<serde_norway::Value>,
    #[serde(default)]
    volumes: Vec<serde_norway::Value>,
    #[serde(default)]
    volume_mounts: Vec<serde_norway::Value>,
    #[serde(default)]
    variables: Vec<SpinVar>,
    #[serde(default)]
    service_annotations: BTreeMap<String, String>,
    #[serde(default)]
    deployment_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pod_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pod_labels: BTreeMap<String, String>,
    #[serde(default)]
    resources: Option<Resources>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    service_account_name: Option<String>,
    #[serde(default)]
    invocation_limits: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalObjectReference {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthChecks {
    #[serde(default)]
    readiness: Option<HealthProbe>,
    #[serde(default)]
    liveness: Option<HealthProbe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HealthProbe {
    #[serde(default)]
    http_get: Option<HttpGet>,
    #[serde(default)]
    initial_delay_seconds: Option<i32>,
    #[serde(default)]
    timeout_seconds: Option<i32>,
    #[serde(default)]
    period_seconds: Option<i32>,
    #[serde(default)]
    success_threshold: Option<i32>,
    #[serde(default)]
    failure_threshold: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HttpGet {
    path: String,
    #[serde(default)]
    http_headers: Vec<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resources {
    #[serde(default)]
    limits: BTreeMap<String, String>,
    #[serde(default)]
    requests: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpinVar {
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_from: Option<EnvVarSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvVarSource {
    #[serde(default)]
    secret_key_ref: Option<KeySelector>,
    #[serde(default)]
    config_map_key_ref: Option<KeySelector>,
    #[serde(default)]
    field_ref: Option<serde_norway::Value>,
    #[serde(default)]
    resource_field_ref: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySelector {
    name: String,
    key: String,
    #[serde(default)]
    optional: Option<bool>,
}

/// Everything one overlay renders.
#[derive(Default)]
struct Rendered {
    spinapps: Vec<SpinApp>,
    dapr: Vec<DaprDoc>,
    /// Secret name → its keys.
    secrets: BTreeMap<String, BTreeSet<String>>,
    other_kinds: Vec<String>,
}

fn parse_docs(text: &str) -> Rendered {
    let mut r = Rendered::default();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v = serde_norway::Value::deserialize(doc).expect("rendered YAML parses");
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string();
        match kind.as_str() {
            "SpinApp" => {
                r.spinapps.push(serde_path_to_error::deserialize(v).unwrap_or_else(|e| panic!("SpinApp: {} at {}", e.inner(), e.path())))
            }
            "Secret" => {
                let name = v["metadata"]["name"].as_str().unwrap().to_string();
                let keys = v
                    .get("data")
                    .and_then(|d| d.as_mapping())
                    .map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                r.secrets.insert(name, keys);
            }
            _ if v.get("apiVersion").and_then(|a| a.as_str()).is_some_and(|a| a.starts_with("dapr.io/")) => {
                let d = parse_dapr_doc(v).unwrap_or_else(|e| panic!("{kind}: {} at {}", e.inner(), e.path()));
                r.dapr.push(d.unwrap_or_else(|| panic!("unexpected Dapr kind {kind}")));
            }
            _ => r.other_kinds.push(kind),
        }
    }
    r
}

fn render(overlay: &str) -> Rendered {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo_root().join("deploy/overlays").join(overlay))
        .output()
        .expect("kubectl is needed to render the overlays");
    assert!(out.status.success(), "kubectl kustomize {overlay}: {}", String::from_utf8_lossy(&out.stderr));
    parse_docs(&String::from_utf8_lossy(&out.stdout))
}

fn check_overlay(overlay: &str, pubsub_type: &str) {
    let r = render(overlay);
    assert_eq!(r.spinapps.len(), 1, "{overlay}: one SpinApp");
    let app = &r.spinapps[0];
    assert_eq!((app.api_version.as_str(), app.kind.as_str()), ("core.spinkube.dev/v1alpha1", "SpinApp"));
    assert_eq!(app.spec.executor, "containerd-shim-spin");
    let ann = &app.spec.pod_annotations;
    assert_eq!(ann.get("dapr.io/enabled").map(String::as_str), Some("true"));
    assert_eq!(ann.get("dapr.io/app-port").map(String::as_str), Some("80"), "the shim listens on 80");
    let app_id = ann.get("dapr.io/app-id").expect("app-id annotation").clone();
    for probe in [&app.spec.checks.as_ref().unwrap().readiness, &app.spec.checks.as_ref().unwrap().liveness] {
        assert_eq!(probe.as_ref().unwrap().http_get.as_ref().unwrap().path, "/.well-known/spin/health");
    }

    // Variables: every SpinApp variable is one spin.toml declares; secrets exist with the key.
    let manifest = spindapr_manifest::load(&repo_root().join("spin.toml")).unwrap();
    let vars: BTreeMap<&str, &SpinVar> = app.spec.variables.iter().map(|v| (v.name.as_str(), v)).collect();
    for v in &app.spec.variables {
        assert!(manifest.variables.contains_key(&v.name), "{overlay}: SpinApp variable {} is not in spin.toml", v.name);
        assert!(v.value.is_some() != v.value_from.is_some(), "{}: value or valueFrom", v.name);
        if let Some(sel) = v.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()) {
            assert!(
                r.secrets.get(&sel.name).is_some_and(|k| k.contains(&sel.key)),
                "{overlay}: secret {}/{} is not rendered",
                sel.name,
                sel.key
            );
        }
    }
    assert_eq!(vars["dapr_url"].value.as_deref(), Some("http://localhost:3500"));
    let token = vars["dapr_api_token"].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!(ann.get("dapr.io/api-token-secret"), Some(&token.name), "daprd and the components use one token secret");
    for (name, var) in &manifest.variables {
        assert!(
            vars.contains_key(name.as_str()) || var.default.is_some(),
            "{overlay}: spin.toml variable {name} has no default and no SpinApp value"
        );
    }

    // Dapr resources: scopes name the app; names match the variables; secrets exist.
    let mut pubsubs = BTreeMap::new();
    let mut stores = BTreeMap::new();
    let mut subs = Vec::new();
    for d in &r.dapr {
        match d {
            DaprDoc::Component(c) => {
                assert_eq!(c.scopes, vec![app_id.clone()], "{overlay}: component {} is scoped to the app", c.metadata.name);
                for m in &c.spec.metadata {
                    if let Some(s) = &m.secret_key_ref {
                        let key = s.key.clone().unwrap_or_else(|| s.name.clone());
                        assert!(
                            r.secrets.get(&s.name).is_some_and(|k| k.contains(&key)),
                            "{overlay}: component {} needs secret {}/{key}",
                            c.metadata.name,
                            s.name
                        );
                    }
                }
                let meta: BTreeMap<&str, Option<String>> = c
                    .spec
                    .metadata
                    .iter()
                    .map(|m| (m.name.as_str(), m.value.as_ref().and_then(|v| v.as_str().map(str::to_owned))))
                    .collect();
                if c.spec.type_.starts_with("pubsub.") {
                    pubsubs.insert(c.metadata.name.clone(), c.spec.type_.clone());
                } else if c.spec.type_.starts_with("state.") {
                    stores.insert(c.metadata.name.clone(), meta.clone());
                }
            }
            DaprDoc::Subscription(s) => subs.push(s.spec.pubsubname.clone()),
            DaprDoc::Resiliency(res) => {
                assert!(res.scopes.contains(&app_id));
                for target in res.spec.targets.components.keys() {
                    assert!(
                        r.dapr.iter().any(|d| matches!(d, DaprDoc::Component(c) if &c.metadata.name == target)),
                        "resiliency targets unknown component {target}"
                    );
                }
            }
        }
    }
    let pubsub_name = vars["pubsub_name"].value.clone().unwrap();
    assert_eq!(pubsubs.get(&pubsub_name).map(String::as_str), Some(pubsub_type), "{overlay}: the pubsub the components use");
    let store = &stores[vars["state_store"].value.as_ref().unwrap()];
    assert_eq!(store["outboxPublishPubsub"].as_deref(), Some(pubsub_name.as_str()));
    assert_eq!(
        store["outboxPublishTopic"].as_deref(),
        vars["topic"].value.as_deref(),
        "the outbox publishes to the topic the subscriber reads"
    );
    let activity = &stores[vars["activity_store"].value.as_ref().unwrap()];
    assert!(activity.get("outboxPublishTopic").is_none(), "the subscriber's own writes must not publish events");
    for s in subs {
        assert!(pubsubs.contains_key(&s));
    }
    assert!(r.other_kinds.iter().all(|k| k == "Deployment" || k == "Service"), "{:?}", r.other_kinds);
}

#[test]
fn redis_overlay_renders_and_cross_references() {
    check_overlay("redis", "pubsub.redis");
}

#[test]
fn kafka_overlay_renders_and_cross_references() {
    check_overlay("kafka", "pubsub.kafka");
}

#[test]
fn optional_declarative_subscription_is_typed_and_matches() {
    let text = std::fs::read_to_string(repo_root().join("deploy/base/optional/subscription.yaml")).unwrap();
    let r = parse_docs(&text);
    let topics: Vec<(String, String)> = r
        .dapr
        .iter()
        .map(|d| match d {
            DaprDoc::Subscription(s) => {
                assert_eq!(s.api_version, "dapr.io/v2alpha1");
                assert_eq!(s.scopes, vec!["todo".to_string()]);
                (s.spec.topic.clone(), s.spec.routes.as_ref().and_then(|r| r.default.clone()).unwrap_or_default())
            }
            _ => panic!("only subscriptions here"),
        })
        .collect();
    assert_eq!(topics, vec![("todo-events".into(), "/events/todo".into()), ("todo-events-dlq".into(), "/events/dead-letter".into())]);
}

#[test]
fn unknown_fields_are_rejected_by_the_models() {
    let bad =
        "apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nmetadata:\n  name: x\nspec:\n  image: i\n  executor: e\n  replica: 2\n";
    let v: serde_norway::Value = serde_norway::from_str(bad).unwrap();
    let e = serde_path_to_error::deserialize::<_, SpinApp>(v).unwrap_err();
    assert!(e.inner().to_string().contains("replica"), "{e}");
    let bad =
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec:\n  type: pubsub.redis\n  version: v1\n  metdata: []\n";
    assert!(parse_dapr_doc(serde_norway::from_str(bad).unwrap()).is_err());
}
