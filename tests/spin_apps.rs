//! Spin apps beyond a wasip2 HTTP handler, over real HTTP with fixtures this project
//! builds: a wasm32-wasip1 spin-sdk module componentized at load, Spin's key-value store
//! (default SQLite store across requests and restarts, `--key-value`, a Redis store from
//! the runtime config, labels not granted or not defined), SQLite (a `--sqlite`
//! migration, interfaces 2 and 3), wasi:config over the variables, wasi:keyvalue over the
//! same stores, an interface the host
//! does not offer (MQTT), `--follow`,
//! and `spindapr watch` rebuilding a real Rust component after a source edit.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn stores_app(wasm: &Path, kv: &[&str], dbs: &[&str]) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "stores"

[[trigger.http]]
route = "/..."
component = "stores"

[component.stores]
source = "{}"
key_value_stores = {kv:?}
sqlite_databases = {dbs:?}
"#,
        wasm.display()
    )
}

fn start(dir: &Path, extra: &[&str]) -> Host {
    HostBuilder::new(&dir.join("spin.toml")).current_dir(dir).args(extra).arg("--no-sidecar").start()
}

fn kv(host: &Host, store: &str, op: &str, key: &str, body: &str) -> Answer {
    send("POST", &host.url(&format!("/kv?store={store}&op={op}&key={key}")), &[], body)
}

fn sql(host: &Host, version: &str, db: &str, statement: &str, params: serde_json::Value) -> Answer {
    let body = serde_json::json!({ "statement": statement, "params": params }).to_string();
    send("POST", &host.url(&format!("/{version}?db={db}")), &[("content-type", "application/json")], &body)
}

#[test]
fn a_wasip1_module_is_componentized_and_serves() {
    let wasm = guest_wasm_p1("spin-stores");
    let bytes = std::fs::read(&wasm).unwrap();
    assert_eq!(&bytes[..8], b"\0asm\x01\0\0\0", "the fixture is a core module, as the http-rust template builds");
    let dir = app_dir(&[("spin.toml", &stores_app(&wasm, &["default"], &[]))]);
    let host = start(dir.path(), &[]);
    let hello = get(&host.url("/hello"));
    assert_eq!((hello.status, hello.json()["target"].as_str()), (200, Some("wasip1")), "{}", host.logs());
    assert_eq!(kv(&host, "default", "set", "k", "from-p1").status, 200);
    assert_eq!(kv(&host, "default", "get", "k", "").json()["value"], "from-p1");
    drop(host);
    // Cached like any compiled component: the next start neither componentizes nor compiles.
    let again = start(dir.path(), &[]);
    assert_eq!(get(&again.url("/hello")).json()["target"], "wasip1");
    assert!(!again.logs().contains("core module componentized"), "{}", again.logs());
}

#[test]
fn key_value_persists_across_requests_and_restarts() {
    let wasm = guest_wasm("spin-stores");
    let dir = app_dir(&[("spin.toml", &stores_app(&wasm, &["default"], &[]))]);
    let host = start(dir.path(), &["--key-value", "seeded=from-cli", "--key-value", "other=x=y"]);
    assert!(host.printed().contains("Storing default key-value data to"), "{}", host.printed());
    assert_eq!(kv(&host, "default", "get", "seeded", "").json()["value"], "from-cli");
    assert_eq!(kv(&host, "default", "get", "other", "").json()["value"], "x=y", "only the first '=' splits");
    assert_eq!(kv(&host, "default", "set", "k", "v1").status, 200);
    assert_eq!(kv(&host, "default", "get", "k", "").json()["value"], "v1");
    assert_eq!(kv(&host, "default", "exists", "k", "").json()["exists"], true);
    assert_eq!(kv(&host, "default", "delete", "other", "").status, 200);
    assert_eq!(kv(&host, "default", "exists", "other", "").json()["exists"], false);
    assert_eq!(kv(&host, "default", "keys", "", "").json()["keys"], serde_json::json!(["k", "seeded"]));
    assert_eq!(kv(&host, "default", "get", "missing", "").json()["value"], serde_json::Value::Null);
    // A store the component does not list.
    let denied = kv(&host, "other", "get", "k", "");
    assert_eq!((denied.status, denied.json()["error"].as_str()), (409, Some("Error::AccessDenied")));
    drop(host);
    assert!(dir.path().join(".spin/sqlite_key_value.db").exists(), "the default store lives in the state folder");
    let again = start(dir.path(), &[]);
    assert_eq!(kv(&again, "default", "get", "k", "").json()["value"], "v1", "kept across a restart");
    drop(again);
    // Without a state folder the store is in memory.
    let memory = start(dir.path(), &["--state-dir", ""]);
    assert_eq!(kv(&memory, "default", "get", "k", "").json()["value"], serde_json::Value::Null);
}

#[test]
fn labels_that_are_not_defined_stop_the_start() {
    let wasm = guest_wasm("spin-stores");
    let dir = app_dir(&[("spin.toml", &stores_app(&wasm, &["cache"], &[]))]);
    let e = HostBuilder::new(&dir.path().join("spin.toml")).arg("--no-sidecar").try_start().err().expect("the start fails");
    assert!(e.contains("unknown key_value_stores label \"cache\" for component \"stores\""), "{e}");
    let dir = app_dir(&[("spin.toml", &stores_app(&wasm, &[], &["orders"]))]);
    let e = HostBuilder::new(&dir.path().join("spin.toml")).arg("--no-sidecar").try_start().err().expect("the start fails");
    assert!(e.contains("Component stores uses database 'orders'"), "{e}");
}

#[test]
fn a_redis_key_value_store_from_the_runtime_config() {
    let wasm = guest_wasm("spin-stores");
    let db = RedisDb::new();
    let rc = format!("[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379/{}\"\n", db.db);
    let dir = app_dir(&[("spin.toml", &stores_app(&wasm, &["cache"], &[])), ("rc.toml", &rc)]);
    let host = start(dir.path(), &["--runtime-config-file", "rc.toml"]);
    assert_eq!(kv(&host, "cache", "set", "greeting", "hi").status, 200, "{}", host.logs());
    let stored: Option<String> = redis::cmd("GET").arg("greeting").query(&mut db.conn()).unwrap();
    assert_eq!(stored.as_deref(), Some("hi"), "the value is the server's key, as Spin's");
    let _: () = redis::cmd("SET").arg("written-by-redis").arg("r").query(&mut db.conn()).unwrap();
    assert_eq!(kv(&host, "cache", "get", "written-by-redis", "").json()["value"], "r");
    assert_eq!(kv(&host, "cache", "keys", "", "").json()["keys"], serde_json::json!(["greeting", "written-by-redis"]));
    let denied = kv(&host, "default", "get", "x", "");
    assert_eq!(denied.json()["error"], "Error::AccessDenied", "default is not listed by this component");
    // wasi:keyvalue's atomics on Redis: INCRBY, and compare-and-swap in one server step.
    let wkv = |op: &str, key: &str, extra: &str, body: &str| {
        send("POST", &host.url(&format!("/wkv?store=cache&op={op}&key={key}{extra}")), &[], body)
    };
    assert_eq!(wkv("incr", "n", "&delta=2", "").json()["value"], 2);
    assert_eq!(wkv("incr", "n", "&delta=2", "").json()["value"], 4);
    let n: String = redis::cmd("GET").arg("n").query(&mut db.conn()).unwrap();
    assert_eq!(n, "4");
    assert_eq!(wkv("cas", "c", "", "first").json()["before"], serde_json::Value::Null);
    assert_eq!(wkv("cas", "c", "", "second").json()["before"], "first");
    assert_eq!(wkv("stale-cas", "c", "", "third").json()["fresh_saw"], "intruder");
    let c: String = redis::cmd("GET").arg("c").query(&mut db.conn()).unwrap();
    assert_eq!(c, "third");
}

#[test]
fn sqlite_with_a_migration_through_both_interface_versions() {
    let wasm = guest_wasm("spin-stores");
    let rc = "[sqlite_database.orders]\ntype = \"spin\"\npath = \"data/orders.db\"\n";
    let migration = "CREATE TABLE IF NOT EXISTS todos (id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER, score REAL, data BLOB);\n\
                     INSERT INTO todos (title, done) VALUES ('from-migration', 0);\n";
    let dir = app_dir(&[
        ("spin.toml", &stores_app(&wasm, &[], &["default", "orders"])),
        ("rc.toml", rc),
        ("migration.sql", migration),
        ("orders.sql", "CREATE TABLE o (n INTEGER); INSERT INTO o VALUES (41);"),
    ]);
    let host = start(
        dir.path(),
        &[
            "--runtime-config-file",
            "rc.toml",
            "--sqlite",
            "@migration.sql",
            "--sqlite",
            "INSERT INTO todos (title, done) VALUES ('from-cli', 1)",
            "--sqlite",
            "@orders.sql:orders",
        ],
    );
    assert!(host.printed().contains("Storing default SQLite data to"), "{}", host.printed());
    let r = sql(&host, "sql", "default", "SELECT id, title, done FROM todos ORDER BY id", serde_json::json!([]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["columns"], serde_json::json!(["id", "title", "done"]));
    assert_eq!(r.json()["rows"], serde_json::json!([[1, "from-migration", 0], [2, "from-cli", 1]]));
    let ins = sql(
        &host,
        "sql3",
        "default",
        "INSERT INTO todos (title, done, score) VALUES (?, ?, ?)",
        serde_json::json!(["from-guest", null, 2.5]),
    );
    assert_eq!(
        (ins.status, ins.json()["last_insert_rowid"].as_i64(), ins.json()["changes"].as_u64()),
        (200, Some(3), Some(1)),
        "{}",
        ins.body
    );
    let got = sql(&host, "sql3", "default", "SELECT title, done, score FROM todos WHERE id = ?", serde_json::json!([3]));
    assert_eq!(got.json()["rows"], serde_json::json!([["from-guest", null, 2.5]]));
    let bad = sql(&host, "sql", "default", "SELECT * FROM nowhere", serde_json::json!([]));
    assert_eq!(bad.status, 409);
    assert!(bad.json()["error"].as_str().unwrap().starts_with("Error::Io(\"no such table: nowhere"), "{}", bad.body);
    let orders = sql(&host, "sql", "orders", "SELECT n + 1 AS answer FROM o", serde_json::json!([]));
    assert_eq!(orders.json()["rows"], serde_json::json!([[42]]), "{}", orders.body);
    assert!(dir.path().join("data/orders.db").exists(), "a labelled database's relative path is taken from the working folder");
    let denied = sql(&host, "sql", "elsewhere", "SELECT 1", serde_json::json!([]));
    assert_eq!(denied.json()["error"], "Error::AccessDenied");
    drop(host);
    let again = start(dir.path(), &["--runtime-config-file", "rc.toml"]);
    let r = sql(&again, "sql", "default", "SELECT count(*) AS n FROM todos", serde_json::json!([]));
    assert_eq!(r.json()["rows"], serde_json::json!([[3]]), "kept in .spin/sqlite_db.db across a restart");
    drop(again);
    let e = HostBuilder::new(&dir.path().join("spin.toml"))
        .current_dir(dir.path())
        .args(["--no-sidecar", "--runtime-config-file", "rc.toml", "--sqlite", "NOT SQL"])
        .try_start()
        .err()
        .expect("a failing statement stops the start");
    assert!(e.contains("--sqlite: the statement failed on the default database: NOT SQL"), "{e}");
}

#[test]
fn an_app_importing_mqtt_starts_and_its_call_fails_cleanly() {
    let wasm = guest_wasm("spin-stores");
    let dir = app_dir(&[("spin.toml", &stores_app(&wasm, &[], &[]))]);
    let host = start(dir.path(), &[]);
    assert!(host.logs().contains("imports fermyon:spin/mqtt@2.0.0, which this host does not offer"), "{}", host.logs());
    let r = get(&host.url("/mqtt"));
    assert_eq!(r.status, 409, "{}", r.body);
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(e.starts_with("Error::ConnectionFailed(\"fermyon:spin/mqtt@2.0.0 is not offered by this host"), "{e}");
    assert_eq!(get(&host.url("/hello")).status, 200, "the app keeps serving");
}

#[test]
fn follow_chooses_whose_output_reaches_the_log() {
    let probe = guest_wasm("spin-probe");
    let hello = guest_wasm("hello");
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "two"
[[trigger.http]]
route = "/probe/..."
component = "probe"
[[trigger.http]]
route = "/hello"
component = "hello"
[component.probe]
source = "{}"
[component.hello]
source = "{}"
"#,
        probe.display(),
        hello.display()
    );
    let dir = app_dir(&[("spin.toml", &manifest)]);
    let e = HostBuilder::new(&dir.path().join("spin.toml")).args(["--no-sidecar", "--follow", "nope"]).try_start().err().expect("refused");
    assert!(e.contains("specified in --follow do not exist") && e.contains("nope") && e.contains("probe"), "{e}");
    let host = start(dir.path(), &["--follow", "hello"]);
    assert_eq!(get(&host.url("/probe/print")).status, 200);
    let file = dir.path().join(".spin/logs/probe_stdout.txt");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&file).unwrap_or_default().contains("probe says hello") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::fs::read_to_string(&file).unwrap().contains("probe says hello"), "the file gets every line");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!host.logs().contains("probe says hello"), "not followed: {}", host.logs());
    drop(host);
    let host = start(dir.path(), &["--follow", "probe"]);
    get(&host.url("/probe/print"));
    assert!(host.wait_log("[probe] probe says hello on stdout", Duration::from_secs(5)), "{}", host.logs());
}

/// `watch` over a real Rust component: builds it, serves, and after an edit of its
/// source rebuilds and serves the new answer. The crate shares the guest workspace's
/// lock file, profile and target folder, so only the crate itself compiles.
#[test]
fn watch_rebuilds_after_a_source_edit_and_serves_the_new_answer() {
    guest_wasm("hello"); // the shared target holds spin-sdk built for this profile
    let components = repo_root().join("components");
    let target = components.join("target");
    let lib = |answer: &str| {
        format!(
            "use spin_sdk::http::{{Request, Response}};\n#[spin_sdk::http_component]\nfn handle(_req: Request) -> Response {{\n    Response::builder().status(200).body(\"{answer}\").build()\n}}\n"
        )
    };
    let cargo = r#"[package]
name = "watched"
edition = "2024"
version = "0.1.0"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
spin-sdk = { version = "=5.2.0", default-features = false }

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
debug = false
"#;
    let port = free_port();
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "watched"
[[trigger.http]]
route = "/..."
component = "watched"
[component.watched]
source = "{}/wasm32-wasip2/release/watched.wasm"
[component.watched.build]
command = "cargo build --release --target wasm32-wasip2"
watch = ["src/**/*.rs", "Cargo.toml"]
"#,
        target.display()
    );
    let lock = std::fs::read_to_string(components.join("Cargo.lock")).unwrap();
    let dir = app_dir(&[("Cargo.toml", cargo), ("Cargo.lock", &lock), ("src/lib.rs", &lib("v1")), ("spin.toml", &manifest)]);
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_spindapr"))
        .args(["watch", "-f"])
        .arg(dir.path().join("spin.toml"))
        .args(["--", "--listen", &format!("127.0.0.1:{port}"), "--no-sidecar", "--enable-metrics=false"])
        .env("CARGO_TARGET_DIR", &target)
        .env("SPINDAPR_CACHE_DIR", test_cache_dir())
        .env_remove("RUSTFLAGS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let wait_for = |answer: &str| {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let body = ureq::get(&url).call().ok().and_then(|mut r| r.body_mut().read_to_string().ok());
            if body.as_deref() == Some(answer) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let served_v1 = wait_for("v1");
    std::fs::write(dir.path().join("src/lib.rs"), lib("v2")).unwrap();
    let served_v2 = served_v1 && wait_for("v2");
    let _ = std::process::Command::new("kill").arg("-TERM").arg(watch.id().to_string()).status();
    let stopped = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        watch.try_wait().ok().flatten().is_some()
    });
    if !stopped {
        let _ = watch.kill();
    }
    assert!(served_v1, "the first build was never served");
    assert!(served_v2, "the edit was not rebuilt and served");
    assert!(stopped, "watch did not stop on SIGTERM");
    assert!(ureq::get(&url).call().is_err(), "watch's `up` was left running");
}

#[test]
fn wasi_config_reads_the_components_variables() {
    let wasm = guest_wasm("spin-stores");
    let manifest = format!(
        "{}[variables]\nplace = {{ default = \"world\" }}\n[component.stores.variables]\ngreeting = \"hello {{{{ place }}}}\"\n",
        stores_app(&wasm, &[], &[])
    );
    let dir = app_dir(&[("spin.toml", &manifest)]);
    let host = start(dir.path(), &["--variable", "place=there"]);
    assert_eq!(get(&host.url("/config?key=greeting")).json()["value"], "hello there");
    // Spin's guidance: an unknown or invalid name is none, not an error.
    assert_eq!(get(&host.url("/config?key=missing")).json()["value"], serde_json::Value::Null);
    assert_eq!(get(&host.url("/config?key=Bad-Name")).json()["value"], serde_json::Value::Null);
    assert_eq!(get(&host.url("/config-all")).json()["all"], serde_json::json!([["greeting", "hello there"]]));
    assert!(!host.logs().contains("wasi:config"), "offered, so no warning: {}", host.logs());
}

#[test]
fn wasi_keyvalue_shares_the_spin_stores() {
    let wasm = guest_wasm("spin-stores");
    let dir = app_dir(&[("spin.toml", &stores_app(&wasm, &["default"], &[]))]);
    let host = start(dir.path(), &[]);
    let wkv = |op: &str, key: &str, extra: &str, body: &str| {
        send("POST", &host.url(&format!("/wkv?store=default&op={op}&key={key}{extra}")), &[], body)
    };
    assert_eq!(wkv("set", "k", "", "from-wasi").status, 200);
    assert_eq!(kv(&host, "default", "get", "k", "").json()["value"], "from-wasi", "the same store as fermyon:spin/key-value");
    kv(&host, "default", "set", "j", "from-spin");
    assert_eq!(wkv("get", "j", "", "").json()["value"], "from-spin");
    assert_eq!(wkv("incr", "n", "&delta=5", "").json()["value"], 5);
    assert_eq!(wkv("incr", "n", "&delta=-2", "").json()["value"], 3);
    assert_eq!(wkv("incr", "k", "&delta=1", "").status, 409, "not an integer");
    assert_eq!(wkv("cas", "c", "", "first").json()["before"], serde_json::Value::Null);
    assert_eq!(wkv("cas", "c", "", "second").json()["before"], "first");
    let stale = wkv("stale-cas", "c", "", "third");
    assert_eq!((stale.status, stale.json()["fresh_saw"].as_str()), (200, Some("intruder")), "{}", stale.body);
    assert_eq!(wkv("get", "c", "", "").json()["value"], "third");
    assert_eq!(wkv("many", "", "", "").json()["got"], serde_json::json!([["m1", null], ["m2", "2"]]));
    assert_eq!(wkv("keys", "", "", "").json()["keys"], serde_json::json!(["c", "j", "k", "m2", "n"]));
    let denied = send("POST", &host.url("/wkv?store=other&op=get&key=k"), &[], "");
    assert_eq!((denied.status, denied.json()["error"].as_str()), (409, Some("Error::AccessDenied")));
    assert!(!host.logs().contains("wasi:keyvalue"), "offered, so no warning: {}", host.logs());
}
