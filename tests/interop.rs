//! Interop: the official Dapr JS SDK (`@dapr/dapr`, HTTP protocol) runs a publish /
//! subscribe, bulk publish / bulk subscribe and state round trip against this sidecar
//! (tests/interop/interop.js).
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
