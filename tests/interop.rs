//! Interop: the official Dapr JS SDK (`@dapr/dapr`, HTTP protocol) runs a publish /
//! subscribe, bulk publish / bulk subscribe and state round trip against this sidecar
//! (tests/interop/interop.js); the official Python SDK (`dapr`, gRPC) and a
//! `dapr-ext-grpc` app run the same over the gRPC API and `--app-protocol grpc`
//! (tests/interop/py/interop.py), ending with the Shutdown API.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;

use common::*;

#[test]
fn dapr_js_sdk_round_trip() {
    let dir = repo_root().join("tests/interop");
    if !dir.join("node_modules/@dapr/dapr").exists() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("npm is needed for the interop test");
        assert!(out.status.success(), "npm ci failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let app_port = free_port().to_string();
    let host = HostBuilder::sidecar(&["--app-id", "interop", "--app-port", &app_port]).start();
    let dapr_port = host.base.rsplit(':').next().unwrap().to_string();
    let out = Command::new("node")
        .arg("interop.js")
        .current_dir(&dir)
        .env("DAPR_HTTP_PORT", &dapr_port)
        .env("APP_PORT", &app_port)
        .output()
        .expect("node is needed for the interop test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("interop ok"),
        "the JS SDK round trip failed:\n{stdout}\n{}\n--- sidecar ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        host.logs()
    );
}

/// The Python SDK in a virtual environment under target/ (made once, from PyPI).
fn python_sdk() -> std::path::PathBuf {
    let venv = repo_root().join("target/interop-venv");
    let python = venv.join("bin/python");
    let reqs = repo_root().join("tests/interop/py/requirements.txt");
    let stamp = venv.join("requirements.txt");
    if std::fs::read(&stamp).ok() != std::fs::read(&reqs).ok() {
        let out = Command::new("python3").args(["-m", "venv"]).arg(&venv).output().expect("python3 is needed for the interop test");
        assert!(out.status.success(), "python3 -m venv failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&reqs)
            .output()
            .expect("pip");
        assert!(out.status.success(), "installing the Dapr Python SDK failed:\n{}", String::from_utf8_lossy(&out.stderr));
        std::fs::copy(&reqs, &stamp).unwrap();
    }
    python
}

#[test]
fn dapr_python_sdk_over_grpc() {
    let python = python_sdk();
    let res = tempfile::tempdir().unwrap();
    std::fs::write(
        res.path().join("components.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n\
         ---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n\
         ---\napiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: retries\nspec:\n  policies:\n    retries:\n      quick:\n        policy: constant\n        duration: 50ms\n        maxRetries: 3\n  targets:\n    components:\n      pubsub:\n        inbound:\n          retry: quick\n",
    )
    .unwrap();
    let app_port = free_port().to_string();
    let mut host = HostBuilder::sidecar(&["--app-id", "pyinterop", "--app-port", &app_port, "--app-protocol", "grpc", "--resources-path"])
        .arg(res.path())
        .start();
    let grpc = host.grpc_addr(std::time::Duration::from_secs(10));
    let dapr_port = host.base.rsplit(':').next().unwrap().to_string();
    let out = Command::new(&python)
        .arg("interop.py")
        .current_dir(repo_root().join("tests/interop/py"))
        .env("DAPR_HTTP_PORT", &dapr_port)
        .env("DAPR_GRPC_PORT", grpc.rsplit(':').next().unwrap())
        .env("APP_PORT", &app_port)
        .env("APP_ID", "pyinterop")
        .env("DAPR_HEALTH_TIMEOUT", "20")
        .output()
        .expect("the venv's python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("interop ok"),
        "the Python SDK round trip failed:\n{stdout}\n{}\n--- sidecar ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        host.logs()
    );
    // The Shutdown API stopped the sidecar.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host.child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the sidecar did not stop after Shutdown:\n{}", host.logs());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
