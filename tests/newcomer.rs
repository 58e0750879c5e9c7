//! What a newcomer types, over real HTTP with the real binary: `up` with no Dapr flags
//! reaches its embedded sidecar whatever its port; `up --build` in the repository runs
//! the seed flow with the default resources folder; Spin's flag forms (`--listen` with a
//! host name, bare-seconds `--request-timeout`, `-e` over the manifest's `environment`,
//! `--variable NAME=@file` and `@vars.json`); and a loud message when the state store
//! an app writes through has no outbox.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn post_todo(host: &Host, title: &str) -> Answer {
    send("POST", &host.url("/todos"), &[("content-type", "application/json")], &format!(r#"{{"title":"{title}"}}"#))
}

fn wait_total(host: &Host, total: u64) -> Value {
    let start = Instant::now();
    loop {
        let a = get(&host.url("/activity")).json();
        if a["total"].as_u64() == Some(total) {
            return a;
        }
        assert!(start.elapsed() < WAIT, "the activity feed never reached {total}: {a}\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_non_default_sidecar_port_needs_no_other_flag() {
    guest_wasm("todo-api");
    // No dapr_url, no resources path: the harness only picks free ports for the app and
    // the sidecar, so the sidecar is not on daprd's 3500 the components are configured for.
    let port = free_port().to_string();
    let host = HostBuilder::new(&repo_root().join("spin.toml")).args(["--dapr-http-port", &port]).start();
    wait_healthy(&host, WAIT);
    let a = post_todo(&host, "no flags");
    assert_eq!(a.status, 201, "{}", a.body);
    wait_total(&host, 1);
    // The start-up lines say where things are and what was loaded.
    let out = host.printed();
    assert!(out.contains(&format!("Dapr sidecar http://127.0.0.1:{port}")), "{out}");
    assert!(out.contains("runtime-config/dapr (the default folder"), "{out}");
    assert!(out.contains("statestore (state.in-memory)") && out.contains("activitystore (state.in-memory)"), "{out}");
    let start = Instant::now();
    while !host.printed().contains("Dapr subscription: pubsub/todo-events → /events/todo, dead letters to todo-events-dlq") {
        assert!(start.elapsed() < WAIT, "{}", host.printed());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn up_build_with_no_flags_runs_the_seed_flow() {
    guest_wasm("todo-api");
    // Exactly what the README says, in the repository: the default ports 3000 and 3500.
    let host = HostBuilder::up_exactly(&["--build"]).current_dir(&repo_root()).start();
    assert_eq!(host.base, "http://127.0.0.1:3000");
    wait_healthy(&host, WAIT);
    let a = post_todo(&host, "Learn Dapr pub/sub");
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json()["id"].as_str().unwrap().to_string();
    let feed = wait_total(&host, 1);
    assert_eq!(feed["latest"][0]["todo_id"], id.as_str());
    assert!(host.wait_log(&format!("todo-events: received todo.created for todo {id}"), WAIT), "{}", host.logs());
}

fn probe_app() -> tempfile::TempDir {
    let probe = guest_wasm("spin-probe").display().to_string();
    app_dir(&[
        (
            "spin.toml",
            &format!(
                "spin_manifest_version = 2\n[application]\nname = \"probe\"\n[variables]\ngreeting = {{ default = \"hi\" }}\nfarewell = {{ default = \"bye\" }}\nlevel = {{ default = \"0\" }}\n\
                 [[trigger.http]]\nroute = \"/...\"\ncomponent = \"probe\"\n[component.probe]\nsource = \"{probe}\"\n\
                 environment = {{ FROM_MANIFEST = \"manifest\", ONLY_MANIFEST = \"kept\" }}\n\
                 [component.probe.variables]\ngreeting = \"{{{{ greeting }}}}\"\nfarewell = \"{{{{ farewell }}}}\"\nlevel = \"{{{{ level }}}}\"\n"
            ),
        ),
        ("greeting.txt", "hello from a file"),
        ("vars.json", r#"{"farewell": "see you", "level": 3}"#),
    ])
}

#[test]
fn listen_takes_host_names_and_timeouts_take_bare_seconds() {
    let dir = probe_app();
    let port = free_port();
    let listen = format!("localhost:{port}");
    let m = dir.path().join("spin.toml").display().to_string();
    let host = HostBuilder::up_exactly(&["-f", &m, "--listen", &listen, "--no-sidecar", "--request-timeout", "1"]).start();
    assert!(host.base.ends_with(&format!(":{port}")), "{}", host.base);
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).status, 200);
    let start = Instant::now();
    let a = get(&host.url("/loop"));
    assert_eq!(a.status, 500, "a busy guest is stopped at the timeout");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert!(host.wait_log("request timeout", WAIT), "{}", host.logs());
}

#[test]
fn env_flags_override_the_manifest_and_variables_come_from_files() {
    let dir = probe_app();
    let m = dir.path().join("spin.toml").display().to_string();
    let dapr_port = free_port().to_string();
    let host = HostBuilder::up_exactly(&[
        "-f",
        &m,
        "--listen",
        "127.0.0.1:0",
        "--dapr-http-port",
        &dapr_port,
        "-e",
        "FROM_MANIFEST=cli",
        "--variable",
        &format!("greeting=@{}", dir.path().join("greeting.txt").display()),
        "--variable",
        &format!("@{}", dir.path().join("vars.json").display()),
    ])
    .start();
    let env = |name: &str| get(&host.url(&format!("/env?name={name}"))).json()["value"].clone();
    assert_eq!(env("FROM_MANIFEST"), "cli", "-e wins over the manifest's environment");
    assert_eq!(env("ONLY_MANIFEST"), "kept");
    // As `dapr run` tells its app where the sidecar is.
    assert_eq!(env("DAPR_HTTP_PORT"), dapr_port.as_str());
    assert_eq!(env("DAPR_HTTP_ENDPOINT"), format!("http://127.0.0.1:{dapr_port}").as_str());
    assert_eq!(env("APP_ID"), "probe");
    let var = |name: &str| get(&host.url(&format!("/var?name={name}"))).json()["value"].clone();
    assert_eq!(var("greeting"), "hello from a file");
    assert_eq!(var("farewell"), "see you");
    assert_eq!(var("level"), "3");
}

#[test]
fn a_store_without_an_outbox_is_reported_loudly() {
    guest_wasm("todo-api");
    let res = app_dir(&[
        (
            "pubsub.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n",
        ),
        (
            "statestore.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n\
             ---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: activitystore\nspec:\n  type: state.in-memory\n  version: v1\n",
        ),
    ]);
    let host = HostBuilder::new(&repo_root().join("spin.toml")).arg("--resources-path").arg(res.path()).start();
    wait_healthy(&host, WAIT);
    assert_eq!(post_todo(&host, "no outbox").status, 201);
    assert!(host.wait_log("NO EVENT IS PUBLISHED", WAIT), "{}", host.logs());
    assert!(host.logs().contains("Set outboxPublishPubsub and outboxPublishTopic"), "{}", host.logs());
}
