//! The Spin-compatible host, driven over real HTTP with real spin-sdk 5.2 components.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;

fn probe() -> String {
    guest_wasm("spin-probe").display().to_string()
}

/// An app with one probe component behind many routes, a private copy for chaining,
/// a static response and variables.
fn probe_app(extra_component: &str) -> String {
    let probe = probe();
    format!(
        r#"spin_manifest_version = 2
[application]
name = "probe-app"
version = "0.3.1"

[variables]
greeting = {{ default = "hello" }}
from_cli = {{ default = "default-cli" }}
from_env = {{ default = "default-env" }}
from_dotenv = {{ default = "default-dotenv" }}
from_static = {{ default = "default-static" }}
upstream_port = {{ default = "1" }}
secret_token = {{ required = true, secret = true }}

[[trigger.http]]
route = "/..."
component = "probe"
[[trigger.http]]
route = "/one/..."
component = "probe"
[[trigger.http]]
route = "/one/two/..."
component = "probe"
[[trigger.http]]
route = "/one/two/exact"
component = "probe"
[[trigger.http]]
route = "/users/:user_id"
component = "probe"
[[trigger.http]]
route = "/users/me"
component = "probe"
[[trigger.http]]
route = "/static"
static_response = {{ status_code = 418, headers = {{ x-teapot = "yes" }}, body = "short and stout" }}
[[trigger.http]]
route = {{ private = true }}
component = "hidden"

[component.probe]
source = "{probe}"
description = "the probe"
allowed_outbound_hosts = ["http://self", "http://127.0.0.1:{{{{ upstream_port }}}}", "http://hidden.spin.internal", "http://127.0.0.1:40000..40010"]
environment = {{ FROM_MANIFEST = "manifest-value" }}
[component.probe.variables]
greet = "{{{{ greeting }}}} world"
cli = "{{{{ from_cli }}}}"
env = "{{{{ from_env }}}}"
dotenv = "{{{{ from_dotenv }}}}"
rc = "{{{{ from_static }}}}"
token = "{{{{ secret_token }}}}"

[component.hidden]
source = "{probe}"
{extra_component}
"#
    )
}

fn start_probe(upstream_port: u16) -> (tempfile::TempDir, Host) {
    let dir = app_dir(&[
        ("spin.toml", &probe_app("")),
        (".env", "SPIN_VARIABLE_FROM_DOTENV=dotenv-value\n"),
        ("rc.toml", "[[variables_provider]]\ntype = \"static\"\nvalues = { from_static = \"static-value\" }\n"),
    ]);
    let host = HostBuilder::new(&dir.path().join("spin.toml"))
        .current_dir(dir.path())
        .arg("--runtime-config-file")
        .arg(dir.path().join("rc.toml"))
        .arg("--variable")
        .arg("from_cli=cli-value")
        .arg("--variable")
        .arg(format!("upstream_port={upstream_port}"))
        .arg("-e")
        .arg("FROM_CLI_ENV=cli-env-value")
        .arg("--request-timeout")
        .arg("2s")
        .arg("--max-instance-memory")
        .arg("33554432")
        .env("SPIN_VARIABLE_FROM_ENV", "env-value")
        .env("SPIN_VARIABLE_SECRET_TOKEN", "s3cr3t-value")
        .start();
    (dir, host)
}

#[test]
fn routing_headers_variables_outbound_and_isolation() {
    let upstream = Upstream::start("from upstream");
    let (dir, host) = start_probe(upstream.port);

    // Route precedence, read back from the matched route the component was given.
    let cases = [
        ("/", "/..."),
        ("/anything/else", "/..."),
        ("/one", "/one/..."),
        ("/one/x", "/one/..."),
        ("/one/two", "/one/two/..."),
        ("/one/two/three", "/one/two/..."),
        ("/one/two/exact", "/one/two/exact"),
        ("/users/42", "/users/:user_id"),
        ("/users/me", "/users/me"),
        ("/users/42/more", "/..."),
    ];
    for (path, route) in cases {
        let a = get(&host.url(path));
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(a.json()["headers"]["spin-matched-route"], route, "path {path}");
    }

    // Every Spin inbound header, on a wildcard and on a parameter route.
    let a = get_with(&host.url("/one/two/three/four?q=1&r=2"), &[("x-custom", "kept")]).json();
    let h = &a["headers"];
    assert_eq!(h["spin-full-url"], host.url("/one/two/three/four?q=1&r=2"));
    assert_eq!(h["spin-path-info"], "/three/four");
    assert_eq!(h["spin-matched-route"], "/one/two/...");
    assert_eq!(h["spin-raw-component-route"], "/one/two/...");
    assert_eq!(h["spin-component-route"], "/one/two");
    assert_eq!(h["spin-base-path"], "/");
    assert!(h["spin-client-addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{h}");
    assert_eq!(h["x-custom"], "kept");
    assert!(h.get("connection").is_none(), "Connection must not reach the guest: {h}");
    let h = &get(&host.url("/users/7")).json()["headers"];
    assert_eq!(h["spin-path-match-user-id"], "7");
    assert_eq!(h["spin-path-info"], "");

    // Static response, health and info; no match is an empty 404 (there is a catch-all
    // here, so check under the well-known prefix).
    let a = get(&host.url("/static"));
    assert_eq!((a.status, a.body.as_str(), a.header("x-teapot")), (418, "short and stout", Some("yes")));
    let a = get(&host.url("/.well-known/spin/health"));
    assert_eq!((a.status, a.body.as_str()), (200, "OK"));
    let a = get(&host.url("/.well-known/spin/info"));
    assert_eq!(a.json(), serde_json::json!({"name": "probe-app", "version": "0.3.1"}));
    let a = get(&host.url("/.well-known/spin/nope"));
    assert_eq!((a.status, a.body.as_str()), (404, ""));

    // Variables from each provider, and the component's own templates.
    for (name, want) in [
        ("greet", "hello world"),
        ("cli", "cli-value"),
        ("env", "env-value"),
        ("dotenv", "dotenv-value"),
        ("rc", "static-value"),
        ("token", "s3cr3t-value"),
    ] {
        let a = get(&host.url(&format!("/var?name={name}")));
        assert_eq!((a.status, a.json()["value"].as_str()), (200, Some(want)), "variable {name}");
    }
    let a = get(&host.url("/var?name=not_declared"));
    assert!(a.json()["error"].as_str().unwrap().contains("Undefined"), "{}", a.body);
    let a = get(&host.url("/var?name=Invalid-Name"));
    assert!(a.json()["error"].as_str().unwrap().contains("InvalidName"), "{}", a.body);
    assert!(!host.logs().contains("s3cr3t-value"), "a secret reached the log");

    // Environment: manifest `environment` and `-e`.
    assert_eq!(get(&host.url("/env?name=FROM_MANIFEST")).json()["value"], "manifest-value");
    assert_eq!(get(&host.url("/env?name=FROM_CLI_ENV")).json()["value"], "cli-env-value");

    // Outbound: allowed through a templated entry, denied elsewhere with a log naming the entry.
    let a = get(&host.url(&format!("/fetch?url=http://127.0.0.1:{}/up", upstream.port)));
    assert_eq!(a.json(), serde_json::json!({"status": 200, "body": "from upstream"}));
    assert!(upstream.seen.lock().unwrap().iter().any(|h| h.contains("x-probe: 1")), "upstream did not see the request");
    // The inbound request's W3C trace context goes with the component's outbound calls
    // (as Spin's outbound HTTP injects it), with no guest code.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a = get_with(
        &host.url(&format!("/fetch?url=http://127.0.0.1:{}/traced", upstream.port)),
        &[("traceparent", tp), ("tracestate", "k=v")],
    );
    assert_eq!(a.status, 200);
    let seen = upstream.seen.lock().unwrap().clone();
    let traced = seen.iter().find(|h| h.contains("/traced")).expect("the traced call");
    assert!(traced.contains(&format!("traceparent: {tp}")) && traced.contains("tracestate: k=v"), "{traced}");
    assert!(!seen.iter().find(|h| h.contains("GET /up")).unwrap().contains("traceparent"), "none without an inbound trace");
    let denied_port = if upstream.port == 40100 { 40101 } else { 40100 };
    let a = get(&host.url(&format!("/fetch?url=http://127.0.0.1:{denied_port}/x")));
    assert_eq!(a.status, 502);
    assert!(a.json()["error"].as_str().unwrap().contains("HttpRequestDenied"), "{}", a.body);
    let entry = format!("allowed_outbound_hosts = [\"http://127.0.0.1:{denied_port}\"]");
    assert!(host.wait_log(&entry, Duration::from_secs(5)), "no hint in log:\n{}", host.logs());
    let a = get(&host.url("/fetch?url=http://localhost:1/x"));
    assert!(a.json()["error"].as_str().unwrap().contains("HttpRequestDenied"), "localhost must not match 127.0.0.1: {}", a.body);
    // A port inside the allowed range is allowed (nothing listens there, so the connect fails).
    let a = get(&host.url("/fetch?url=http://127.0.0.1:40005/x"));
    assert!(a.json()["error"].as_str().unwrap().contains("ConnectionRefused"), "{}", a.body);

    // Self requests and service chaining (private route reachable only in-process).
    let a = get(&host.url("/fetch?url=/static"));
    assert_eq!(a.json(), serde_json::json!({"status": 418, "body": "short and stout"}));
    let a = get(&host.url("/fetch?url=http://hidden.spin.internal/some/path"));
    let inner: serde_json::Value = serde_json::from_str(a.json()["body"].as_str().unwrap()).unwrap();
    assert_eq!(inner["path"], "/some/path");
    assert_eq!(inner["headers"]["spin-client-addr"], "0.0.0.0:0");
    assert_eq!(inner["headers"]["spin-matched-route"], "/...");
    let a = get(&host.url("/fetch?url=http://probe.spin.internal/"));
    assert!(a.json()["error"].as_str().unwrap().contains("HttpRequestDenied"), "{}", a.body);

    // Guest stdout/stderr reach the host log with the component id.
    get(&host.url("/print"));
    assert!(host.wait_log("[probe] probe says hello on stdout", Duration::from_secs(5)), "{}", host.logs());
    assert!(host.wait_log("[probe] probe says hello on stderr", Duration::from_secs(5)));
    // ...and Spin's log files, `<app dir>/.spin/logs/<component>_stdout.txt` / `_stderr.txt`.
    let logs = dir.path().join(".spin/logs");
    assert!(std::fs::read_to_string(logs.join("probe_stdout.txt")).unwrap().contains("probe says hello on stdout\n"));
    assert!(std::fs::read_to_string(logs.join("probe_stderr.txt")).unwrap().contains("probe says hello on stderr\n"));

    // A trapping guest gets 500 and the host lives on.
    let a = get(&host.url("/trap"));
    assert_eq!((a.status, a.body.as_str()), (500, ""));
    assert_eq!(get(&host.url("/after-trap")).status, 200);

    // A looping guest is stopped at the request timeout while others keep flowing.
    let looping = {
        let url = host.url("/loop");
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            (get(&url).status, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_eq!(get(&host.url("/meanwhile")).status, 200);
    }
    let (status, took) = looping.join().unwrap();
    assert_eq!(status, 500);
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "loop took {took:?}");
    assert!(host.logs().contains("request timeout"), "{}", host.logs());

    // The memory cap: 8 MiB fits in 32 MiB, 64 MiB does not.
    assert_eq!(get(&host.url("/alloc?mb=8")).status, 200);
    assert_eq!(get(&host.url("/alloc?mb=64")).status, 500);
    assert_eq!(get(&host.url("/after-alloc")).status, 200);
}

#[test]
fn each_request_gets_a_fresh_instance() {
    // A guest's statics start over on every request: its counter never passes 1.
    let (_dir, host) = start_probe(1);
    for _ in 0..5 {
        assert_eq!(get(&host.url("/count")).json()["seen_by_this_instance"], 1);
    }
}

#[test]
fn h2c_prior_knowledge_is_served() {
    let (_dir, host) = start_probe(1);
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
        .arg(host.url("/h2"))
        .output()
        .expect("curl is needed for the h2c check");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
}

#[test]
fn missing_required_variable_fails_the_start() {
    let dir = app_dir(&[("spin.toml", &probe_app(""))]);
    let err = HostBuilder::new(&dir.path().join("spin.toml")).current_dir(dir.path()).try_start().err().expect("start must fail");
    assert!(err.contains("variable `secret_token` is required but has no value"), "{err}");
    assert!(err.contains("SPIN_VARIABLE_SECRET_TOKEN"), "{err}");
}

#[test]
fn manifest_errors_name_file_key_and_line() {
    let text = probe_app("unknown_key = true\n");
    let line = text.lines().position(|l| l.starts_with("unknown_key")).unwrap() + 1;
    let dir = app_dir(&[("spin.toml", &text)]);
    let manifest = dir.path().join("spin.toml");
    let err = HostBuilder::new(&manifest).try_start().err().expect("start must fail");
    assert!(err.contains(&format!("{}:{line}:", manifest.display())), "{err}");
    assert!(err.contains("unknown_key"), "{err}");

    let dir = app_dir(&[(
        "spin.toml",
        "spin_manifest_version = 2\n[application]\nname = \"x\"\n\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"ghost\"\n",
    )]);
    let err = HostBuilder::new(&dir.path().join("spin.toml")).try_start().err().expect("start must fail");
    assert!(err.contains("spin.toml:7:"), "{err}");
    assert!(err.contains("trigger.http[0].component"), "{err}");
    assert!(err.contains("ghost"), "{err}");
}

#[test]
fn second_start_uses_the_compiled_code_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = app_dir(&[("spin.toml", &probe_app(""))]);
    let start = || {
        HostBuilder::new(&dir.path().join("spin.toml"))
            .arg("--cache-dir")
            .arg(cache.path())
            .env("SPIN_VARIABLE_SECRET_TOKEN", "x")
            .env("RUST_LOG", "spindapr=debug")
            .start()
    };
    let first = start();
    assert_eq!(get(&first.url("/")).status, 200);
    assert!(first.logs().contains("component compiled"), "{}", first.logs());
    drop(first);
    let second = start();
    assert_eq!(get(&second.url("/")).status, 200);
    assert!(!second.logs().contains("component compiled"), "recompiled:\n{}", second.logs());
    assert!(second.logs().contains("loaded from the compiled-code cache"), "{}", second.logs());
}

#[test]
fn sigterm_shuts_down_gracefully() {
    // SIGTERM the moment the host says it serves: the handler must already be in place
    // (it once was installed only after the server started, and the signal killed it).
    let (_dir, mut host) = start_probe(1);
    let ok = std::process::Command::new("kill").args(["-TERM", &host.pid().to_string()]).status().unwrap();
    assert!(ok.success());
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = host.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "host did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn build_runs_commands_and_reports_failures() {
    let dir = app_dir(&[(
        "spin.toml",
        "spin_manifest_version = 2\n[application]\nname = \"b\"\n[component.good]\nsource = \"g.wasm\"\n[component.good.build]\ncommand = \"echo built > out.txt\"\nworkdir = \"sub\"\n[component.bad]\nsource = \"b.wasm\"\n[component.bad.build]\ncommand = [\"echo first-step\", \"echo broken-on-purpose >&2; exit 3\"]\n",
    )]);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spindapr")).args(["build", "-f"]).arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Building component good"), "{stdout}");
    assert_eq!(std::fs::read_to_string(dir.path().join("sub/out.txt")).unwrap().trim(), "built");
    assert!(stderr.contains("component `bad`") && stderr.contains("broken-on-purpose") && stderr.contains("exit status: 3"), "{stderr}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spindapr"))
        .args(["build", "-c", "good", "-f"])
        .arg(dir.path().join("spin.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Spin's log file options (#14): `-L` picks the folder, `--truncate-logs` empties the
/// files at start (otherwise they are appended to across restarts), `-L ""` writes none.
#[test]
fn component_output_files_follow_spins_log_options() {
    let dir = app_dir(&[("spin.toml", &probe_app(""))]);
    let logs = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let host = HostBuilder::new(&dir.path().join("spin.toml"))
            .env("SPIN_VARIABLE_SECRET_TOKEN", "x")
            .env("SPIN_VARIABLE_UPSTREAM_PORT", "1")
            .arg("-L")
            .arg(logs.path())
            .args(extra)
            .arg("--no-sidecar")
            .start();
        assert_eq!(get(&host.url("/print")).status, 200);
        assert!(host.wait_log("probe says hello on stdout", Duration::from_secs(5)));
    };
    let lines = || std::fs::read_to_string(logs.path().join("probe_stdout.txt")).unwrap().matches("probe says hello").count();
    run(&[]);
    run(&[]);
    assert_eq!(lines(), 2, "appended across restarts");
    run(&["--truncate-logs"]);
    assert_eq!(lines(), 1, "emptied at start");
    let host = HostBuilder::new(&dir.path().join("spin.toml"))
        .env("SPIN_VARIABLE_SECRET_TOKEN", "x")
        .env("SPIN_VARIABLE_UPSTREAM_PORT", "1")
        .args(["-L", "", "--no-sidecar"])
        .start();
    get(&host.url("/print"));
    assert!(host.wait_log("probe says hello on stdout", Duration::from_secs(5)));
    // (.spin itself exists: it holds the default key-value store, as Spin's.)
    assert!(!dir.path().join(".spin/logs").exists(), "-L \"\" writes no files");
}
