//! OCI packaging round trip: `spindapr package` writes an image layout whose index,
//! manifest, config and layers check out (digests, sizes, media types), and
//! `up --from <layout>` serves the app from it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use sha2::Digest;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Reads a blob named by a descriptor and checks its digest and size.
fn blob(layout: &std::path::Path, d: &serde_json::Value) -> Vec<u8> {
    let digest = d["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(sha256_hex(&bytes), hex, "digest of {digest}");
    assert_eq!(bytes.len() as u64, d["size"].as_u64().unwrap(), "size of {digest}");
    bytes
}

#[test]
fn package_then_serve_from_the_layout() {
    guest_wasm("todo-api");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("todo-oci");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_spindapr"))
        .args(["package", "-f"])
        .arg(repo_root().join("spin.toml"))
        .arg("--out")
        .arg(&layout)
        .args(["--reference", "todo:0.1.0"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let oci_layout: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let mdesc = &index["manifests"][0];
    assert_eq!(mdesc["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(mdesc["annotations"]["org.opencontainers.image.ref.name"], "todo:0.1.0");
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&layout, mdesc)).unwrap();
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let config: serde_json::Value = serde_json::from_slice(&blob(&layout, &manifest["config"])).unwrap();
    assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("wasip1"), Some("wasm")));

    let layers = manifest["layers"].as_array().unwrap();
    let wasm: Vec<_> = layers.iter().filter(|l| l["mediaType"] == "application/vnd.wasm.content.layer.v1+wasm").collect();
    let locked: Vec<_> = layers.iter().filter(|l| l["mediaType"] == "application/vnd.fermyon.spin.application.v1+config").collect();
    assert_eq!((wasm.len(), locked.len(), layers.len()), (2, 1, 3));
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    // The layers are the built components, byte for byte.
    let built = [std::fs::read(guest_wasm("todo-api")).unwrap(), std::fs::read(guest_wasm("todo-events")).unwrap()];
    for l in &wasm {
        let bytes = blob(&layout, l);
        assert!(built.contains(&bytes), "a Wasm layer is not one of the built components");
    }
    let lock: serde_json::Value = serde_json::from_slice(&blob(&layout, locked[0])).unwrap();
    assert_eq!(lock["spin_lock_version"], 1);
    let ids: Vec<&str> = lock["components"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["todo-api", "todo-events"]);
    for c in lock["components"].as_array().unwrap() {
        let d = c["source"]["content"]["digest"].as_str().unwrap();
        assert!(wasm.iter().any(|l| l["digest"] == d), "component {} points at a layer", c["id"]);
    }
    assert_eq!(lock["triggers"].as_array().unwrap().len(), 4);

    // Serve from the layout, through the embedded sidecar.
    let dapr_port = free_port().to_string();
    let host = HostBuilder::new(&layout)
        .arg("--dapr-http-port")
        .arg(&dapr_port)
        .arg("--variable")
        .arg(format!("dapr_url=http://127.0.0.1:{dapr_port}"))
        .arg("--resources-path")
        .arg(repo_root().join("runtime-config/dapr"))
        .start();
    wait_healthy(&host, Duration::from_secs(15));
    let a = send("POST", &host.url("/todos"), &[], r#"{"title":"from the OCI layout"}"#);
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(get(&host.url("/.well-known/spin/info")).json()["name"], "todo");
    assert!(host.wait_log("todo-events: received todo.created", Duration::from_secs(10)), "{}", host.logs());

    // A damaged blob is refused with a clear error.
    let hex = wasm[0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
    std::fs::write(layout.join("blobs/sha256").join(hex), b"tampered").unwrap();
    let err = HostBuilder::new(&layout).try_start().err().expect("a tampered layout must not start");
    assert!(err.contains("does not match its descriptor"), "{err}");
}
