//! Shared test harness: builds the guest components for wasm32-wasip2 once, starts the
//! real `spindapr` binary on a free port, and talks to it over real HTTP.
#![allow(dead_code)]

pub mod app;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the guest workspace (release, wasm32-wasip2) once per test binary and returns
/// the path of `<name>.wasm`. Fails with the build's output and what to do.
pub fn guest_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let components = repo_root().join("components");
            let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .current_dir(&components)
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("RUSTFLAGS")
                .output()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building the guest components failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(components.join("target/wasm32-wasip2/release"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Builds one guest crate for wasm32-wasip1 (a core module, as Spin's http-rust template
/// makes) once per test binary and returns its `.wasm`.
pub fn guest_wasm_p1(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let components = repo_root().join("components");
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|b| b == name) {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip1", "-p", name])
            .current_dir(&components)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .output()
            .expect("cannot run cargo");
        assert!(
            out.status.success(),
            "building {name} for wasm32-wasip1 failed (is the target installed? `rustup target add wasm32-wasip1`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        built.push(name.to_string());
    }
    let path = components.join("target/wasm32-wasip1/release").join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Compiled-code cache shared by the tests (inside target/, so a clean clone starts cold).
pub fn test_cache_dir() -> PathBuf {
    repo_root().join("target").join("test-compiled-cache")
}

/// A running host process; killed on drop.
pub struct Host {
    pub child: Child,
    /// The app server's base URL (`up`), or the sidecar's (`sidecar`).
    pub base: String,
    /// The embedded sidecar's base URL, when one runs.
    pub dapr: Option<String>,
    /// The sidecar's gRPC API address (`127.0.0.1:port`), once printed.
    pub grpc: Arc<Mutex<Option<String>>>,
    pub stderr: Arc<Mutex<String>>,
    /// Every line the process printed on stdout.
    pub stdout: Arc<Mutex<String>>,
}

pub struct HostBuilder {
    cmd: Command,
    /// Pass the arguments as given: no free ports chosen for the caller.
    raw: bool,
}

impl HostBuilder {
    pub fn new(manifest: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spindapr"));
        cmd.arg("up").arg("-f").arg(manifest).args(["--listen", "127.0.0.1:0"]);
        cmd.env("SPINDAPR_CACHE_DIR", test_cache_dir());
        cmd.env("RUST_LOG", "info");
        Self { cmd, raw: false }
    }

    /// `spindapr up` with exactly `args` (no listen address or sidecar port added).
    pub fn up_exactly(args: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spindapr"));
        cmd.arg("up").args(args);
        cmd.env("SPINDAPR_CACHE_DIR", test_cache_dir());
        cmd.env("RUST_LOG", "info");
        Self { cmd, raw: true }
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, a: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args(a);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn current_dir(mut self, d: &Path) -> Self {
        self.cmd.current_dir(d);
        self
    }

    /// A `spindapr sidecar` process instead of `up`.
    pub fn sidecar(args: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spindapr"));
        cmd.arg("sidecar").args(args);
        cmd.env("RUST_LOG", "info");
        Self { cmd, raw: false }
    }

    pub fn start(self) -> Host {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the host; on failure returns its stderr.
    pub fn try_start(mut self) -> Result<Host, String> {
        // Parallel tests must not fight over the sidecar's default port 3500.
        if !self.raw && !self.cmd.get_args().any(|a| a == "--dapr-http-port" || a == "--no-sidecar") {
            self.cmd.args(["--dapr-http-port", "0"]);
        }
        // Nor over daprd's gRPC port 50001.
        if !self.raw && !self.cmd.get_args().any(|a| a == "--dapr-grpc-port" || a == "--no-sidecar") {
            self.cmd.args(["--dapr-grpc-port", "0"]);
        }
        // Nor over the metrics port 9090: tests that scrape pass their own.
        if !self.raw && !self.cmd.get_args().any(|a| a == "--metrics-port" || a.to_string_lossy().starts_with("--enable-metrics")) {
            self.cmd.arg("--enable-metrics=false");
        }
        let mut child = self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("spawn: {e}"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let is_sidecar = self.cmd.get_args().next().is_some_and(|a| a == "sidecar");
        let (tx, rx) = std::sync::mpsc::channel();
        let printed = Arc::new(Mutex::new(String::new()));
        let out_sink = printed.clone();
        let grpc = Arc::new(Mutex::new(None));
        let grpc_sink = grpc.clone();
        std::thread::spawn(move || {
            let mut dapr = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out_sink.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(addr) = line.strip_prefix("Dapr gRPC ") {
                    *grpc_sink.lock().unwrap() = Some(addr.trim().to_string());
                }
                if let Some(url) = line.strip_prefix("Dapr sidecar ") {
                    dapr = Some(url.trim().to_string());
                    if is_sidecar {
                        let _ = tx.send((url.trim().to_string(), dapr.clone()));
                    }
                }
                if let Some(url) = line.strip_prefix("Serving ") {
                    let _ = tx.send((url.trim().to_string(), dapr.clone()));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok((base, dapr)) => Ok(Host { child, base, dapr, grpc, stderr, stdout: printed }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                Err(stderr.lock().unwrap().clone())
            }
        }
    }
}

impl Host {
    /// The gRPC API's address, waiting up to `wait` for the line that prints it.
    pub fn grpc_addr(&self, wait: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(a) = self.grpc.lock().unwrap().clone() {
                return a;
            }
            assert!(start.elapsed() < wait, "the sidecar printed no gRPC address:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A URL on the embedded sidecar.
    pub fn dapr_url(&self, path: &str) -> String {
        format!("{}{}", self.dapr.as_deref().expect("no sidecar running"), path)
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// What the process printed on stdout so far.
    pub fn printed(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until the host log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into()
    })
}

fn read(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut resp = resp.unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Answer { status, headers, body }
}

pub fn get(url: &str) -> Answer {
    read(agent().get(url).call())
}

pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut r = agent().get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    read(r.call())
}

pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(body.to_string()).expect("request");
    read(agent().run(req))
}

/// A tiny HTTP/1.1 upstream on loopback that answers every request with `body` and
/// records the request heads it saw.
pub struct Upstream {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub fn start(body: &'static str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    use std::io::Write;
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            head.push_str(&line);
                        }
                        log.lock().unwrap().push(head);
                        let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{}", body.len(), body);
                        if stream.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, seen }
    }
}

/// Writes `files` into a fresh temp dir and returns it.
pub fn app_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let p = dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// A broker for the end-to-end suites: the resources folder `up` is given.
pub enum Broker {
    InMemory,
    /// In-memory, with the components and the sidecar talking over loopback TCP.
    InMemoryOverNetwork,
    /// Redis on 127.0.0.1:6379, in a database of its own, flushed before and after.
    Redis {
        dir: tempfile::TempDir,
        db: RedisDb,
    },
    /// A Kafka-protocol broker (tansu, in memory) of its own on a free port.
    Kafka {
        dir: tempfile::TempDir,
        broker: KafkaBroker,
    },
}

impl Broker {
    pub fn redis() -> Self {
        let db = RedisDb::new();
        let dir = tempfile::tempdir().unwrap();
        for f in ["pubsub.yaml", "statestore.yaml", "resiliency.yaml"] {
            let text = std::fs::read_to_string(repo_root().join("runtime-config/dapr/redis").join(f)).unwrap();
            // Only the database changes: the YAML is otherwise the shipped one.
            let text = text
                .replace("  - name: redisPassword\n", &format!("  - name: redisDB\n    value: \"{}\"\n  - name: redisPassword\n", db.db));
            std::fs::write(dir.path().join(f), text).unwrap();
        }
        Broker::Redis { dir, db }
    }

    pub fn kafka() -> Self {
        let broker = KafkaBroker::start();
        let dir = tempfile::tempdir().unwrap();
        for f in ["pubsub.yaml", "statestore.yaml", "resiliency.yaml"] {
            let text = std::fs::read_to_string(repo_root().join("runtime-config/dapr/kafka").join(f)).unwrap();
            // Only the broker address changes: the YAML is otherwise the shipped one.
            std::fs::write(dir.path().join(f), text.replace("127.0.0.1:19092", &format!("127.0.0.1:{}", broker.port))).unwrap();
        }
        Broker::Kafka { dir, broker }
    }

    /// Whether the broker delivers a topic's events one at a time, in order.
    pub fn delivers_in_order(&self) -> bool {
        !matches!(self, Broker::Redis { .. })
    }

    /// Flags `up` needs for this broker beyond the resources path.
    pub fn extra_args(&self) -> &'static [&'static str] {
        match self {
            Broker::InMemoryOverNetwork => &["--no-in-process"],
            _ => &[],
        }
    }

    pub fn resources(&self) -> PathBuf {
        match self {
            Broker::InMemory | Broker::InMemoryOverNetwork => repo_root().join("runtime-config/dapr"),
            Broker::Redis { dir, .. } | Broker::Kafka { dir, .. } => dir.path().to_path_buf(),
        }
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Redis database reserved for one test (1..=15, one per test in this binary).
pub struct RedisDb {
    pub db: i64,
}

impl RedisDb {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
        let db = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(db <= 15, "more Redis tests in one binary than databases");
        let me = Self { db };
        me.flush();
        me
    }

    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:6379/{}", self.db)).unwrap();
        client.get_connection().unwrap_or_else(|e| panic!("Redis must run on 127.0.0.1:6379 for this test ({e}); .ci/run starts it"))
    }

    fn flush(&self) {
        let _: () = redis::cmd("FLUSHDB").query(&mut self.conn()).unwrap();
    }
}

impl Drop for RedisDb {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A tansu broker (Kafka protocol, in-memory storage) on a free port; stopped on drop.
pub struct KafkaBroker {
    pub port: u16,
    child: Child,
}

impl KafkaBroker {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Stops the broker (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// With extra `tansu broker` arguments (e.g. `--cert`/`--key`, `--authentication`).
    pub fn start_with(port: u16, extra: &[&std::ffi::OsStr]) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(std::env::var("TANSU").unwrap_or_else(|_| "tansu".into()))
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("tansu is needed for the Kafka tests ({e}): cargo install tansu --locked --features dynostore (.ci/run does)")
            });
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "tansu did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `spindapr sidecar` for an app on `app_port` with the resources in `res`, and
/// waits until it is healthy (the app's subscriptions read).
pub fn sidecar_for(app_id: &str, app_port: u16, res: &Path, dapr_port: Option<u16>, wait: Duration) -> Host {
    let (ap, path) = (app_port.to_string(), res.display().to_string());
    let dp = dapr_port.map(|p| p.to_string());
    let mut args = vec!["--app-id", app_id, "--app-port", &ap, "--resources-path", &path];
    if let Some(p) = &dp {
        args.extend(["--dapr-http-port", p]);
    }
    let host = HostBuilder::sidecar(&args).start();
    wait_healthy(&host, wait);
    host
}

/// Runs `spindapr sidecar` with the resources in `res` and expects it to refuse to start;
/// returns its stderr.
pub fn sidecar_start_error(res: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_spindapr"))
        .args(["sidecar", "--app-id", "x", "--enable-metrics=false", "--dapr-grpc-port", "0", "--dapr-http-port", &free_port().to_string()])
        .arg("--resources-path")
        .arg(res)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the sidecar started:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until the sidecar (standalone, or embedded in `up`) answers 204 on /v1.0/healthz.
pub fn wait_healthy(host: &Host, wait: Duration) {
    let start = Instant::now();
    while get(&host.dapr_url("/v1.0/healthz")).status != 204 {
        assert!(start.elapsed() < wait, "the sidecar never became healthy:\n{}", host.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The durability scenario for a persistent broker: 60 events published, the sidecar
/// SIGKILLed while a slow subscriber works through them, then restarted: every event
/// must arrive at least once. `res` holds a `pubsub` component of the broker under test.
pub fn assert_sigkill_loses_no_published_event(res: &Path, wait: Duration) {
    let app = app::TestApp::start(Some(serde_json::json!([{"pubsubname": "pubsub", "topic": "jobs", "route": "/jobs"}])));
    // A slow subscriber, so the kill lands while events flow.
    app.script("/jobs", &[(200, r#"sleep:40:{"status":"SUCCESS"}"#)]);
    let dapr_port = free_port();
    let mut host = sidecar_for("orders", app.port, res, Some(dapr_port), wait);
    const N: usize = 60;
    for i in 0..N {
        let a = send("POST", &host.url("/v1.0/publish/pubsub/jobs"), &[("content-type", "application/json")], &format!(r#"{{"n":{i}}}"#));
        assert_eq!(a.status, 204);
    }
    app.wait_calls("/jobs", 5, wait);
    host.child.kill().unwrap(); // SIGKILL
    host.child.wait().unwrap();
    let before = app.calls("/jobs").len();
    assert!(before < N, "the kill came too late to test anything ({before} delivered)");
    let host = sidecar_for("orders", app.port, res, Some(dapr_port), wait);
    let start = Instant::now();
    let delivered = loop {
        let seen: std::collections::BTreeSet<i64> = app.calls("/jobs").iter().filter_map(|r| r.json()["data"]["n"].as_i64()).collect();
        if seen.len() == N || start.elapsed() > wait {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let missing: Vec<i64> = (0..N as i64).filter(|n| !delivered.contains(n)).collect();
    assert!(missing.is_empty(), "missing after restart: {missing:?}\n{}", host.logs());
}

/// An OTLP/HTTP traces receiver: keeps the protobuf body of every `POST` it gets and
/// answers 200, as a collector would.
pub struct OtlpReceiver {
    pub port: u16,
    pub bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl OtlpReceiver {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let keep = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let keep = keep.clone();
                std::thread::spawn(move || {
                    use std::io::Write;
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    loop {
                        let mut len = 0usize;
                        let mut first = true;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" && !first {
                                break;
                            }
                            first = false;
                            if let Some((k, v)) = line.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        keep.lock().unwrap().push(body);
                        let resp = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, bodies }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        use prost::Message as _;
        let bodies = self.bodies.lock().unwrap().clone();
        let mut out = Vec::new();
        for b in bodies {
            let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(b.as_slice())
                .expect("an OTLP ExportTraceServiceRequest");
            for rs in req.resource_spans {
                for ss in rs.scope_spans {
                    out.extend(ss.spans);
                }
            }
        }
        out
    }
}
