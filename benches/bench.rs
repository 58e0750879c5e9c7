//! Benchmarks, run with `cargo bench --bench bench -- <host|sidecar|todo|all>`:
//! - host: the same component (fixtures/hello) under this host and under `wasmtime serve`
//!   (wasmtime-cli 48.0.8 on PATH or in $WASMTIME), fresh instance per request, measured
//!   with wrk; servers pinned to CPU 0 and wrk to CPU 1, rounds alternated.
//! - sidecar: publish→deliver latency through the in-memory pub/sub to a subscriber, and
//!   publishes/s with concurrent publishers.
//! - todo: POST /todos of `spindapr up` against the seed lesson's FastAPI service
//!   (benches/seed, against this project's sidecar) in interleaved rounds at 1 and 8
//!   connections; the create rate with 0, 5,000 and 50,000 todos stored; GET /todos with
//!   50,000 stored; POST → the event in the subscriber's feed; GET /todos/:id.
//!
//! - soak: `SOAK_SECS` (default 300) of mixed Todo traffic on `spindapr up` plus
//!   publishes to a `spindapr sidecar` whose app has a slow and a failing subscriber;
//!   resident memory of both sampled every 5 s, then every event counted end to end.
//!
//! - grpc: publish→deliver over daprd's gRPC API and `--app-protocol grpc` (a tonic
//!   publisher and AppCallback subscriber in this process) against the same over HTTP,
//!   two sidecars on CPU 0, interleaved rounds.
//!
//! Figures are printed as a table; BENCHMARKS.md records them with this command.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn build_guests() -> PathBuf {
    let ok = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(root().join("components"))
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo");
    assert!(ok.success(), "building the guest components failed");
    root().join("components/target/wasm32-wasip2/release")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` pinned to `cpu` and waits for a stdout line starting with `ready`.
fn start(cpu: &str, program: &Path, args: &[String], ready: &str) -> Proc {
    start_env(cpu, program, args, ready, &[])
}

/// As [`start`], with extra environment variables.
fn start_env(cpu: &str, program: &Path, args: &[String], ready: &str, env: &[(&str, String)]) -> Proc {
    let mut child = Command::new("taskset")
        .arg("-c")
        .arg(cpu)
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("taskset (util-linux) is needed to pin the servers");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !sent && line.starts_with(&ready) {
                let _ = tx.send(());
                sent = true;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("the server did not start");
    Proc(child)
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Wrk {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn to_us(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n,
        "ms" => n * 1000.0,
        "s" => n * 1_000_000.0,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, conns: u32, secs: u32) -> Wrk {
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg(url)
        .output()
        .expect("wrk is needed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = Wrk { rps: f64::NAN, p50_us: f64::NAN, p99_us: f64::NAN };
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse().unwrap_or(f64::NAN),
            ["50%", v] => w.p50_us = to_us(v),
            ["99%", v] => w.p99_us = to_us(v),
            _ => {}
        }
    }
    assert!(w.rps.is_finite(), "could not read wrk's output:\n{text}");
    w
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted_us: &[f64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[i]
}

/// The physical limit for the host benchmark: a native hyper server (one thread, HTTP/1)
/// answering what the hello component answers. Run by this binary as `native-hello PORT`.
fn native_hello(port: u16) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        println!("Serving native");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = format!("{{\"hello\":\"world\",\"path\":\"{}\"}}", req.uri().path().replace('"', ""));
                    http::Response::builder().status(200).header("content-type", "application/json").body(Full::new(Bytes::from(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
}

/// The host's phase counters (SPINDAPR_PROFILE_PHASES=1), scraped from its metrics port.
fn phase_counters(metrics_port: u16) -> std::collections::BTreeMap<String, f64> {
    let text = ureq::get(&format!("http://127.0.0.1:{metrics_port}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            let v: f64 = v.parse().ok()?;
            if let Some(rest) = name.strip_prefix("spindapr_host_phase_nanoseconds_total{phase=\"") {
                Some((rest.trim_end_matches("\"}").to_string(), v))
            } else if name == "spindapr_host_phase_requests_total" {
                Some(("requests".to_string(), v))
            } else {
                None
            }
        })
        .collect()
}

fn bench_host() {
    let guests = build_guests();
    let hello = guests.join("hello.wasm");
    let wasmtime = std::env::var("WASMTIME").unwrap_or_else(|_| "wasmtime".into());
    let version = Command::new(&wasmtime).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let Ok(version) = version else {
        eprintln!(
            "host bench: `wasmtime` not found; install it with `cargo install wasmtime-cli --version 48.0.8 --locked` or set WASMTIME"
        );
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spin.toml"),
        format!("spin_manifest_version = 2\n[application]\nname = \"hello\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"hello\"\n[component.hello]\nsource = \"{}\"\n", hello.display()),
    )
    .unwrap();
    let up = |profiled: bool| {
        let port = free_port();
        let metrics = free_port();
        let env: Vec<(&str, String)> = if profiled { vec![("SPINDAPR_PROFILE_PHASES", "1".into())] } else { vec![] };
        let p = start_env(
            "0",
            Path::new(env!("CARGO_BIN_EXE_spindapr")),
            &[
                "up".into(),
                "-f".into(),
                dir.path().join("spin.toml").display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--no-sidecar".into(),
                "--metrics-port".into(),
                metrics.to_string(),
                "-q".into(),
            ],
            "Serving",
            &env,
        );
        (p, port, metrics)
    };
    let wasmtime_serve = |extra: &[&str]| {
        let port = free_port();
        let child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(&wasmtime)
            .args(["serve", "-Scli"])
            .args(extra)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg(&hello)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wasmtime serve");
        wait_port(port);
        (Proc(child), port)
    };
    let (ours, ours_port, _) = up(false);
    let (theirs, theirs_port) = wasmtime_serve(&[]);
    let (pooled, pooled_port) = wasmtime_serve(&["-O", "pooling-allocator=y"]);
    let native_port = free_port();
    let native = start("0", &std::env::current_exe().unwrap(), &["native-hello".into(), native_port.to_string()], "Serving native");
    let servers: [(&str, u16); 4] = [
        ("spindapr up", ours_port),
        ("wasmtime serve", theirs_port),
        ("wasmtime serve -O pooling-allocator=y", pooled_port),
        ("native hyper (ceiling)", native_port),
    ];

    println!("\n## host: fresh instance per request, hello component ({version})");
    println!("(servers pinned to CPU 0, wrk -t1 on CPU 1; per connection count a 2 s warm-up each, then 3 interleaved rounds × 8 s)");
    for conns in [1u32, 2, 8] {
        let mut results: Vec<Vec<Wrk>> = servers.iter().map(|_| Vec::new()).collect();
        for (_, port) in &servers {
            wrk(&format!("http://127.0.0.1:{port}/"), conns, 2);
        }
        for _ in 0..3 {
            for (i, (_, port)) in servers.iter().enumerate() {
                results[i].push(wrk(&format!("http://127.0.0.1:{port}/"), conns, 8));
            }
        }
        println!("\n| server (c={conns}) | req/s median (min–max) | p50 µs | p99 µs | rounds req/s |");
        println!("|---|---:|---:|---:|---|");
        let med = |w: &[Wrk], f: fn(&Wrk) -> f64| median(w.iter().map(f).collect());
        for (i, (name, _)) in servers.iter().enumerate() {
            let w = &results[i];
            let rps: Vec<f64> = w.iter().map(|x| x.rps).collect();
            println!(
                "| {name} | {} | {:.0} | {:.0} | {} |",
                spread(&rps),
                med(w, |x| x.p50_us),
                med(w, |x| x.p99_us),
                rps.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
            );
        }
        // Per round: ours over the better wasmtime configuration of that round.
        let ratios: Vec<f64> = (0..3).map(|r| results[0][r].rps / results[1][r].rps.max(results[2][r].rps)).collect();
        let p99_best_peer = med(&results[1], |x| x.p99_us).min(med(&results[2], |x| x.p99_us));
        println!(
            "ours / better wasmtime serve: {:.2}× (rounds {}); p99 ours {:.0} µs vs the peer's best {:.0} µs; native ceiling reached: {:.0} %",
            median(ratios.clone()),
            ratios.iter().map(|r| format!("{r:.2}×")).collect::<Vec<_>>().join(", "),
            med(&results[0], |x| x.p99_us),
            p99_best_peer,
            100.0 * med(&results[0], |x| x.rps) / med(&results[3], |x| x.rps)
        );
    }
    drop(native);
    drop(pooled);
    drop(theirs);
    drop(ours);

    // Where the time goes: the same load on a profiled `up` (phase counters scraped before
    // and after), c=1; "outside the handler" is wrk's mean latency minus the phases.
    let (profiled, port, metrics) = up(true);
    wrk(&format!("http://127.0.0.1:{port}/"), 1, 2);
    let before = phase_counters(metrics);
    let w = wrk(&format!("http://127.0.0.1:{port}/"), 1, 8);
    let after = phase_counters(metrics);
    let n = after.get("requests").copied().unwrap_or(0.0) - before.get("requests").copied().unwrap_or(0.0);
    println!("\n| phase (c=1, {n:.0} requests, profiled run at {:.0} req/s) | mean µs per request |", w.rps);
    println!("|---|---:|");
    let mut inside = 0.0;
    for phase in ["prepare", "store", "instantiate", "resources", "guest", "finish"] {
        let us = (after.get(phase).copied().unwrap_or(0.0) - before.get(phase).copied().unwrap_or(0.0)) / n.max(1.0) / 1000.0;
        inside += us;
        println!("| {phase} | {us:.1} |");
    }
    let per_request = 1e6 / w.rps;
    println!("| outside the handler (accept, HTTP parse, response write, wrk; 1e6 / req/s − the above) | {:.1} |", per_request - inside);
    println!("| total (1e6 / req/s) | {per_request:.1} |");
    drop(profiled);
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    // Below uvicorn's 5 s keep-alive: never reuse a connection the server may have closed.
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(2)).build(c)
}

async fn call(c: &HttpClient, method: &str, url: &str, body: Bytes) -> (u16, Bytes) {
    let req = http::Request::builder().method(method).uri(url).header("content-type", "application/json").body(Full::new(body)).unwrap();
    let resp = c.request(req).await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// `conns` loops sending requests for `secs`; returns req/s and sorted latencies in µs
/// (it stops the process on any answer that is not 2xx).
async fn load(
    method: &'static str,
    url: String,
    body: impl Fn(u64) -> Bytes + Send + Sync + 'static,
    conns: usize,
    secs: u64,
) -> (f64, Vec<f64>) {
    let (rps, lat, failed) = load_counting(method, url.clone(), body, conns, secs).await;
    assert_eq!(failed, 0, "{method} {url}: {failed} answers were not 2xx");
    (rps, lat)
}

/// As [`load`], counting answers that are not 2xx (they are not in the rate).
async fn load_counting(
    method: &'static str,
    url: String,
    body: impl Fn(u64) -> Bytes + Send + Sync + 'static,
    conns: usize,
    secs: u64,
) -> (f64, Vec<f64>, u64) {
    let c = client();
    let body = Arc::new(body);
    let n = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (c, url, body, n, failed) = (c.clone(), url.clone(), body.clone(), n.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let i = n.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let (status, _) = call(&c, method, &url, body(i)).await;
                if status < 300 {
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by(|a, b| a.total_cmp(b));
    (all.len() as f64 / secs as f64, all, failed.load(Ordering::Relaxed))
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// A broker for the sidecar benchmark: a resources folder, and what must live as long.
struct BenchBroker {
    name: &'static str,
    resources: Option<tempfile::TempDir>,
    _tansu: Option<Proc>,
}

fn bench_brokers() -> Vec<BenchBroker> {
    let mut out = vec![BenchBroker { name: "in-memory", resources: None, _tansu: None }];
    // Redis: database 15, flushed first.
    let flushed = Command::new("redis-cli").args(["-n", "15", "FLUSHDB"]).output().is_ok_and(|o| o.status.success());
    if flushed {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pubsub.yaml"),
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:6379\n  - name: redisDB\n    value: \"15\"\n",
        )
        .unwrap();
        out.push(BenchBroker { name: "redis", resources: Some(dir), _tansu: None });
    } else {
        eprintln!("sidecar bench: no Redis on 127.0.0.1:6379; skipping pubsub.redis");
    }
    // Kafka: a tansu broker of its own (in memory), pinned with the sidecar.
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    match Command::new("taskset")
        .args([
            "-c",
            "0",
            "tansu",
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => {
            let tansu = Proc(child);
            wait_port(port);
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("pubsub.yaml"),
                format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.kafka\n  version: v1\n  metadata:\n  - name: brokers\n    value: 127.0.0.1:{port}\n  - name: authType\n    value: none\n  - name: initialOffset\n    value: oldest\n"),
            )
            .unwrap();
            out.push(BenchBroker { name: "kafka (tansu)", resources: Some(dir), _tansu: Some(tansu) });
        }
        Err(e) => eprintln!("sidecar bench: tansu not available ({e}); skipping pubsub.kafka"),
    }
    out
}

/// redis-benchmark's XADD rate on the same Redis, for scale.
fn redis_benchmark_xadd() -> Option<f64> {
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "redis-benchmark",
            "-n",
            "100000",
            "-c",
            "8",
            "--csv",
            "-n",
            "100000",
            "XADD",
            "bench-xadd",
            "*",
            "data",
            "0123456789abcdef",
        ])
        .output()
        .ok()?;
    let _ = Command::new("redis-cli").args(["DEL", "bench-xadd"]).output();
    let text = String::from_utf8_lossy(&out.stdout);
    // CSV: "test","rps",...
    text.lines().filter(|l| l.starts_with("\"XADD")).find_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
}

async fn bench_sidecars() {
    println!("\n## sidecar pub/sub, publish→deliver (sidecar and broker on CPU 0; publisher and subscriber in the bench process on CPU 1)");
    println!(
        "| broker | publish→deliver p50 µs | p99 µs | publishes/s (8 publishers, 5 s) | publish call p50 / p99 µs | delivered within 1 s / published |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for b in bench_brokers() {
        bench_sidecar(&b).await;
    }
    if let Some(rps) = redis_benchmark_xadd() {
        println!("\nredis-benchmark XADD on the same Redis (8 clients, 100 000 commands, CPU 1): {rps:.0} per second");
    }
}

async fn bench_sidecar(broker: &BenchBroker) {
    let app_port = free_port();
    let dapr_port = free_port();
    // The subscriber: records publish→deliver latency from the timestamp in each event.
    let seen = http_subscriber(app_port).await;
    let (latencies, delivered) = (seen.latencies.clone(), seen.delivered.clone());
    let mut args: Vec<String> = vec![
        "sidecar".into(),
        "--app-id".into(),
        "bench".into(),
        "--app-port".into(),
        app_port.to_string(),
        "--dapr-http-port".into(),
        dapr_port.to_string(),
        "--dapr-grpc-port".into(),
        "0".into(),
    ];
    if let Some(dir) = &broker.resources {
        args.extend(["--resources-path".into(), dir.path().display().to_string()]);
    }
    let sidecar = start("0", Path::new(env!("CARGO_BIN_EXE_spindapr")), &args, "Dapr sidecar");
    let c = client();
    let health = format!("http://127.0.0.1:{dapr_port}/v1.0/healthz");
    while call(&c, "GET", &health, Bytes::new()).await.0 != 204 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("http://127.0.0.1:{dapr_port}/v1.0/publish/pubsub/bench");
    // Latency: one message at a time.
    for i in 0..3000u32 {
        let measure = i >= 500; // the first 500 warm up
        let body = serde_json::json!({"sent_ns": now_ns().to_string(), "measure": measure, "i": i});
        let (status, _) = call(&c, "POST", &url, Bytes::from(body.to_string())).await;
        assert_eq!(status, 204);
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    // Throughput: 8 concurrent publishers for 5 s.
    let before = delivered.load(Ordering::Relaxed);
    let (rps, lat) = load("POST", url, |i| Bytes::from(format!(r#"{{"sent_ns":"0","measure":false,"i":{i}}}"#)), 8, 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = delivered.load(Ordering::Relaxed) - before;
    println!(
        "| {} | {:.0} | {:.0} | {rps:.0} | {:.0} / {:.0} | {got} / {} |",
        broker.name,
        percentile(&l, 0.50),
        percentile(&l, 0.99),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );
    drop(sidecar);
}

/// What a subscriber in this process saw: publish→deliver latencies (µs) of measured
/// events, and how many events arrived.
#[derive(Clone, Default)]
struct Seen {
    latencies: Arc<std::sync::Mutex<Vec<f64>>>,
    delivered: Arc<AtomicU64>,
}

impl Seen {
    /// Records one event's data (`{"sent_ns": "...", "measure": bool}`).
    fn record(&self, data: &serde_json::Value) {
        let arrived = now_ns();
        if let Some(sent) = data["sent_ns"].as_str().and_then(|s| s.parse::<u128>().ok())
            && data["measure"] == true
        {
            self.latencies.lock().unwrap().push((arrived - sent) as f64 / 1000.0);
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

/// An HTTP app on `port` in this process: each request's path and body go to `answer`,
/// whose text is the response body (200).
async fn serve_app<F, Fut>(port: u16, answer: F)
where
    F: Fn(String, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(answer(path, body).await))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
            });
        }
    });
}

/// An HTTP subscriber app on `port` (topic `bench`, route `/bench`).
async fn http_subscriber(port: u16) -> Seen {
    let seen = Seen::default();
    let s = seen.clone();
    serve_app(port, move |path, body| {
        let s = s.clone();
        async move {
            if path == "/dapr/subscribe" {
                return r#"[{"pubsubname":"pubsub","topic":"bench","route":"/bench"}]"#.to_string();
            }
            let ce: serde_json::Value = serde_json::from_slice(&body).unwrap();
            s.record(&ce["data"]);
            r#"{"status":"SUCCESS"}"#.to_string()
        }
    })
    .await;
    seen
}

/// A gRPC subscriber app (AppCallback) on `port`, subscribed to `bench`.
async fn grpc_subscriber(port: u16) -> Seen {
    use spindapr_dapr::grpc::pb::runtime as rt;
    struct App(Seen);
    #[tonic::async_trait]
    impl rt::app_callback_server::AppCallback for App {
        async fn list_topic_subscriptions(
            &self,
            _: tonic::Request<()>,
        ) -> Result<tonic::Response<rt::ListTopicSubscriptionsResponse>, tonic::Status> {
            let sub = rt::TopicSubscription { pubsub_name: "pubsub".into(), topic: "bench".into(), ..Default::default() };
            Ok(tonic::Response::new(rt::ListTopicSubscriptionsResponse { subscriptions: vec![sub] }))
        }
        async fn on_topic_event(
            &self,
            req: tonic::Request<rt::TopicEventRequest>,
        ) -> Result<tonic::Response<rt::TopicEventResponse>, tonic::Status> {
            let data: serde_json::Value = serde_json::from_slice(&req.get_ref().data).unwrap();
            self.0.record(&data);
            Ok(tonic::Response::new(rt::TopicEventResponse { status: 0 }))
        }
        async fn on_bulk_topic_event(
            &self,
            _: tonic::Request<rt::TopicEventBulkRequest>,
        ) -> Result<tonic::Response<rt::TopicEventBulkResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("no bulk subscriptions here"))
        }
    }
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let svc = rt::app_callback_server::AppCallbackServer::new(App(seen.clone()));
    tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming));
    seen
}

/// One side of the gRPC/HTTP comparison: a sidecar on CPU 0 and its subscriber here.
struct PubSubSide {
    name: &'static str,
    _sidecar: Proc,
    seen: Seen,
    publish: Arc<dyn Fn(Bytes) -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
}

/// A side publishing over gRPC or HTTP (`grpc_publish`) to an app called over gRPC or
/// HTTP (`grpc`).
async fn pubsub_side(name: &'static str, grpc: bool, grpc_publish: bool) -> PubSubSide {
    let (app_port, dapr_port, grpc_port) = (free_port(), free_port(), free_port());
    let seen = if grpc { grpc_subscriber(app_port).await } else { http_subscriber(app_port).await };
    let mut args: Vec<String> = ["sidecar", "--app-id", "bench", "--enable-metrics=false"].iter().map(|s| s.to_string()).collect();
    args.extend(["--app-port".into(), app_port.to_string(), "--dapr-http-port".into(), dapr_port.to_string()]);
    args.extend(["--dapr-grpc-port".into(), grpc_port.to_string(), "--app-protocol".into(), if grpc { "grpc" } else { "http" }.into()]);
    let sidecar = start("0", Path::new(env!("CARGO_BIN_EXE_spindapr")), &args, "Dapr sidecar");
    let c = client();
    let health = format!("http://127.0.0.1:{dapr_port}/v1.0/healthz");
    while call(&c, "GET", &health, Bytes::new()).await.0 != 204 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let publish: Arc<dyn Fn(Bytes) -> futures::future::BoxFuture<'static, ()> + Send + Sync> = if grpc_publish {
        use spindapr_dapr::grpc::pb::runtime as rt;
        wait_port(grpc_port);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        let client = rt::dapr_client::DaprClient::new(channel);
        Arc::new(move |data: Bytes| {
            let mut client = client.clone();
            Box::pin(async move {
                let req = rt::PublishEventRequest {
                    pubsub_name: "pubsub".into(),
                    topic: "bench".into(),
                    data: data.to_vec(),
                    data_content_type: "application/json".into(),
                    metadata: Default::default(),
                };
                client.publish_event(req).await.unwrap();
            })
        })
    } else {
        let url = format!("http://127.0.0.1:{dapr_port}/v1.0/publish/pubsub/bench");
        Arc::new(move |data: Bytes| {
            let (c, url) = (c.clone(), url.clone());
            Box::pin(async move {
                assert_eq!(call(&c, "POST", &url, data).await.0, 204);
            })
        })
    };
    PubSubSide { name, _sidecar: sidecar, seen, publish }
}

/// One round on one side: publish→deliver p50/p99 one event at a time, then
/// publishes/s with 8 concurrent publishers for `secs`, and how many of those arrived.
async fn pubsub_round(side: &PubSubSide, secs: u64) -> (f64, f64, f64, u64, u64) {
    side.seen.latencies.lock().unwrap().clear();
    for i in 0..1500u32 {
        let body = serde_json::json!({"sent_ns": now_ns().to_string(), "measure": i >= 300, "i": i});
        (side.publish)(Bytes::from(body.to_string())).await;
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut l = side.seen.latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let before = side.seen.delivered.load(Ordering::Relaxed);
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (publish, sent) = (side.publish.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let i = sent.fetch_add(1, Ordering::Relaxed);
                publish(Bytes::from(format!(r#"{{"sent_ns":"0","measure":false,"i":{i}}}"#))).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let published = sent.load(Ordering::Relaxed);
    let got = side.seen.delivered.load(Ordering::Relaxed) - before;
    (percentile(&l, 0.5), percentile(&l, 0.99), published as f64 / secs as f64, got, published)
}

async fn bench_grpc(rounds: usize, secs: u64) {
    println!("\n## publish→deliver over gRPC vs HTTP (in-memory pub/sub; sidecars on CPU 0, publishers and subscribers here on CPU 1)");
    println!(
        "gRPC: PublishEvent over one HTTP/2 connection, delivery by OnTopicEvent; HTTP: POST /v1.0/publish over pooled HTTP/1.1 connections, delivery by POST; the third side mixes them."
    );
    println!("| round | side | publish→deliver p50 µs | p99 µs | publishes/s (8 publishers) | delivered / published |");
    println!("|---:|---|---:|---:|---:|---:|");
    let sides = [
        pubsub_side("HTTP", false, false).await,
        pubsub_side("gRPC", true, true).await,
        pubsub_side("HTTP publish, gRPC app", true, false).await,
    ];
    let mut summary: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); sides.len()];
    for round in 1..=rounds {
        for (i, side) in sides.iter().enumerate() {
            let (p50, p99, rps, got, published) = pubsub_round(side, secs).await;
            summary[i].0.push(p50);
            summary[i].1.push(rps);
            println!("| {round} | {} | {p50:.0} | {p99:.0} | {rps:.0} | {got} / {published} |", side.name);
        }
    }
    println!("\nmedian (min–max) over the rounds:");
    for (i, side) in sides.iter().enumerate() {
        println!("- {}: p50 {} µs; {} publishes/s", side.name, spread(&summary[i].0), spread(&summary[i].1));
    }
    let ratio: Vec<f64> = summary[1].1.iter().zip(&summary[0].1).map(|(g, h)| g / h).collect();
    println!("- gRPC/HTTP publishes/s per round: {}", ratio.iter().map(|r| format!("{r:.2}×")).collect::<Vec<_>>().join(", "));
}

/// `spindapr up` on the repo's spin.toml (in-memory resources) pinned to CPU 0.
async fn start_up(extra: &[&str]) -> (Proc, String) {
    start_up_env(extra, &[]).await
}

async fn start_up_env(extra: &[&str], env: &[(&str, String)]) -> (Proc, String) {
    let port = free_port();
    let dapr_port = free_port();
    let r = root();
    let up = start_env(
        "0",
        Path::new(env!("CARGO_BIN_EXE_spindapr")),
        &[
            "up".into(),
            "-f".into(),
            r.join("spin.toml").display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--dapr-http-port".into(),
            dapr_port.to_string(),
            "--dapr-grpc-port".into(),
            "0".into(),
            "--variable".into(),
            format!("dapr_url=http://127.0.0.1:{dapr_port}"),
            "--resources-path".into(),
            r.join("runtime-config/dapr").display().to_string(),
            "-q".into(),
        ]
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>(),
        "Serving",
        env,
    );
    wait_healthy(dapr_port).await;
    (up, format!("http://127.0.0.1:{port}"))
}

async fn wait_healthy(dapr_port: u16) {
    let c = client();
    let start = Instant::now();
    while call(&c, "GET", &format!("http://127.0.0.1:{dapr_port}/v1.0/healthz"), Bytes::new()).await.0 != 204 {
        assert!(start.elapsed() < Duration::from_secs(60), "the sidecar never became healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seed lesson's FastAPI service (benches/seed, one uvicorn worker) next to
/// `spindapr sidecar`, both pinned to CPU 0.
async fn start_seed() -> Option<(Proc, Proc, String)> {
    let ok = Command::new("python3").args(["-c", "import fastapi, uvicorn, httpx, dapr.ext.fastapi"]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("todo bench: the seed needs Python packages: pip install -r benches/seed/requirements.txt");
        return None;
    }
    let (app_port, dapr_port) = (free_port(), free_port());
    let r = root();
    let uvicorn = Command::new("taskset")
        .args(["-c", "0", "python3", "-m", "uvicorn", "app:app", "--workers", "1", "--no-access-log", "--log-level", "warning"])
        .arg("--port")
        .arg(app_port.to_string())
        .current_dir(r.join("benches/seed"))
        .env("DAPR_HTTP_PORT", dapr_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m uvicorn");
    let uvicorn = Proc(uvicorn);
    wait_port(app_port);
    let sidecar = start(
        "0",
        Path::new(env!("CARGO_BIN_EXE_spindapr")),
        &[
            "sidecar".into(),
            "--app-id".into(),
            "seed".into(),
            "--app-port".into(),
            app_port.to_string(),
            "--dapr-http-port".into(),
            dapr_port.to_string(),
            "--dapr-grpc-port".into(),
            "0".into(),
            "--resources-path".into(),
            r.join("runtime-config/dapr").display().to_string(),
        ],
        "Dapr sidecar",
    );
    wait_healthy(dapr_port).await;
    Some((sidecar, uvicorn, format!("http://127.0.0.1:{app_port}")))
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.0} ({lo:.0}–{hi:.0})", median(v.to_vec()))
}

fn create_body(i: u64) -> Bytes {
    Bytes::from(format!(r#"{{"title":"bench {i}"}}"#))
}

/// Creates todos with 8 connections until `n` more exist.
async fn fill(base: &str, n: u64) {
    let c = client();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url, next) = (c.clone(), format!("{base}/todos"), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let (s, _) = call(&c, "POST", &url, create_body(1_000_000 + i)).await;
                assert_eq!(s, 201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// How many creates a side's subscriber has seen: ours counts `todo.created` in its
/// feed, the seed's handler counts every event.
async fn subscriber_count(c: &HttpClient, base: &str, seed: bool) -> u64 {
    let (_, b) = call(c, "GET", &format!("{base}/activity"), Bytes::new()).await;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
    if seed { v["total"].as_u64().unwrap_or(0) } else { v["counts"]["todo.created"].as_u64().unwrap_or(0) }
}

/// Waits until a side's subscriber has seen `created` events; the seconds it took.
async fn drained(c: &HttpClient, base: &str, seed: bool, created: u64) -> f64 {
    let start = Instant::now();
    loop {
        let n = subscriber_count(c, base, seed).await;
        if n >= created {
            return start.elapsed().as_secs_f64();
        }
        assert!(start.elapsed() < Duration::from_secs(600), "the subscriber never caught up: {n} of {created}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One side of the comparison: where it serves and how many todos it created so far.
struct Side {
    base: String,
    seed: bool,
    created: u64,
}

/// One measurement: POSTs for `secs` from a drained start, then the time until the
/// subscriber has seen them all. Returns (POST req/s, latencies, non-2xx, events/s end to end).
async fn measure(c: &HttpClient, side: &mut Side, conns: usize, secs: u64) -> (f64, Vec<f64>, u64, f64) {
    drained(c, &side.base, side.seed, side.created).await;
    let (rps, lat, failed) = load_counting("POST", format!("{}/todos", side.base), create_body, conns, secs).await;
    side.created += lat.len() as u64;
    let tail = drained(c, &side.base, side.seed, side.created).await;
    let e2e = lat.len() as f64 / (secs as f64 + tail);
    (rps, lat, failed, e2e)
}

/// `POST /todos` of `spindapr up` against the seed service, interleaved rounds.
async fn bench_todo_vs_seed(rounds: usize, secs: u64) {
    let (ours, ours_base) = start_up(&[]).await;
    let seed = start_seed().await;
    let c = client();
    println!(
        "\n## todo write path: POST /todos, ours vs the seed service (servers on CPU 0, client on CPU 1; {rounds} interleaved rounds × {secs} s, each from a drained subscriber)"
    );
    println!(
        "| round | c | spindapr up req/s | p50 / p99 µs | end to end /s | seed (FastAPI) req/s | p50 / p99 µs | end to end /s | ratio req/s | non-2xx ours / seed |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut ours_side = Side { base: ours_base, seed: false, created: 0 };
    let mut seed_side = seed.as_ref().map(|(_, _, b)| Side { base: b.clone(), seed: true, created: 0 });
    // Warm-up: compiled code, pools, Python's imports.
    measure(&c, &mut ours_side, 2, 2).await;
    if let Some(s) = seed_side.as_mut() {
        measure(&c, s, 2, 2).await;
    }
    /// Per connection count: ours, the seed's and the ratio, one entry per round.
    type Rounds = (usize, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut summary: Vec<Rounds> = vec![(1, vec![], vec![], vec![]), (8, vec![], vec![], vec![])];
    for round in 1..=rounds {
        for (conns, ours_r, seed_r, ratios) in summary.iter_mut() {
            let (a, la, fa, ea) = measure(&c, &mut ours_side, *conns, secs).await;
            ours_r.push(a);
            let ours_cols = format!("{a:.0} | {:.0} / {:.0} | {ea:.0}", percentile(&la, 0.5), percentile(&la, 0.99));
            match seed_side.as_mut() {
                Some(s) => {
                    let (b, lb, fb, eb) = measure(&c, s, *conns, secs).await;
                    seed_r.push(b);
                    ratios.push(a / b);
                    println!(
                        "| {round} | {conns} | {ours_cols} | {b:.0} | {:.0} / {:.0} | {eb:.0} | {:.2}× | {fa} / {fb} |",
                        percentile(&lb, 0.5),
                        percentile(&lb, 0.99),
                        a / b
                    );
                }
                None => println!("| {round} | {conns} | {ours_cols} | – | – | – | – | {fa} / – |"),
            }
        }
    }
    println!("\nmedian (min–max) over the rounds:");
    for (conns, ours_r, seed_r, ratios) in &summary {
        if seed_r.is_empty() {
            println!("- c={conns}: spindapr up {} req/s", spread(ours_r));
        } else {
            println!(
                "- c={conns}: spindapr up {} req/s; seed {} req/s; ratio {:.2}× ({:.2}–{:.2})",
                spread(ours_r),
                spread(seed_r),
                median(ratios.clone()),
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            );
        }
    }
    drop(seed);
    drop(ours);
}

/// Create rate as the store grows, list latency with 50,000 todos, and POST→subscriber.
async fn bench_todo_growth(secs: u64) {
    let c = client();
    println!(
        "\n## todo: create rate with N todos stored (a fresh server per row, filled, subscriber drained; c=8, {secs} s), server on CPU 0"
    );
    println!("| todos stored | POST /todos req/s | p50 / p99 µs | ratio to empty | end to end /s |");
    println!("|---:|---:|---:|---:|---:|");
    let mut empty = f64::NAN;
    let mut last = None;
    for target in [0u64, 5_000, 50_000] {
        let (up, base) = start_up(&[]).await;
        fill(&base, target).await;
        let mut side = Side { base: base.clone(), seed: false, created: target };
        // A short warm-up (compiled code, pools), not counted.
        measure(&c, &mut side, 2, 1).await;
        let (rps, l, failed, e2e) = measure(&c, &mut side, 8, secs).await;
        assert_eq!(failed, 0);
        if target == 0 {
            empty = rps;
        }
        println!("| {target} | {rps:.0} | {:.0} / {:.0} | {:.2}× | {e2e:.0} |", percentile(&l, 0.5), percentile(&l, 0.99), rps / empty);
        last = Some((up, base, side.created));
    }
    let Some((up, base, stored)) = last else { return };
    let (rps, l) = load("GET", format!("{base}/todos?limit=100"), |_| Bytes::new(), 1, secs).await;
    println!(
        "| GET /todos?limit=100 with {stored} stored | c=1 | {rps:.0} req/s | p50 {:.0} µs | p99 {:.0} µs |",
        percentile(&l, 0.5),
        percentile(&l, 0.99)
    );
    // A page deep in the list, through the cursor.
    let (rps, l) = load("GET", format!("{base}/todos?limit=100&cursor=1500.0"), |_| Bytes::new(), 1, secs).await;
    println!(
        "| GET /todos?limit=100&cursor=1500.0 | c=1 | {rps:.0} req/s | p50 {:.0} µs | p99 {:.0} µs |",
        percentile(&l, 0.5),
        percentile(&l, 0.99)
    );
    // POST → the event in the subscriber's feed, one at a time.
    let total = |b: &Bytes| serde_json::from_slice::<serde_json::Value>(b).unwrap()["total"].as_u64().unwrap();
    let mut seen = total(&call(&c, "GET", &format!("{base}/activity"), Bytes::new()).await.1);
    let mut lat = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        let (s, _) = call(&c, "POST", &format!("{base}/todos"), create_body(9_000_000 + i)).await;
        assert_eq!(s, 201);
        loop {
            let now = total(&call(&c, "GET", &format!("{base}/activity"), Bytes::new()).await.1);
            if now > seen {
                seen = now;
                break;
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| POST → event in /activity (500, one at a time) | c=1 | – | p50 {:.0} µs | p99 {:.0} µs |",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    // A read for scale.
    let (s, b) = call(&c, "POST", &format!("{base}/todos"), create_body(0)).await;
    assert_eq!(s, 201);
    let id = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["id"].as_str().unwrap().to_string();
    let (rps, l) = load("GET", format!("{base}/todos/{id}"), |_| Bytes::new(), 2, secs).await;
    println!("| GET /todos/:id | c=2 | {rps:.0} req/s | p50 {:.0} µs | p99 {:.0} µs |", percentile(&l, 0.5), percentile(&l, 0.99));
    drop(up);
}

/// Resident memory of a process, in MiB (VmRSS).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The soak's second app: `slow` answers SUCCESS after 20 ms, `flaky` answers RETRY to
/// every tenth message (whose retries then end in the dead-letter topic); every message
/// is recorded by the route that took it.
async fn soak_subscriber(port: u16) -> Arc<std::sync::Mutex<std::collections::HashMap<&'static str, std::collections::HashSet<u64>>>> {
    let seen: Arc<std::sync::Mutex<std::collections::HashMap<&'static str, std::collections::HashSet<u64>>>> = Arc::default();
    let s = seen.clone();
    serve_app(port, move |path, body| {
        let s = s.clone();
        async move {
            let ce: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let n = ce["data"]["n"].as_u64().unwrap_or(u64::MAX);
            let answer = match path.as_str() {
                "/dapr/subscribe" => serde_json::json!([
                    {"pubsubname": "pubsub", "topic": "slow", "route": "/slow"},
                    {"pubsubname": "pubsub", "topic": "flaky", "route": "/flaky", "deadLetterTopic": "flaky-dlq"},
                    {"pubsubname": "pubsub", "topic": "flaky-dlq", "route": "/dlq"},
                ]),
                "/slow" => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    s.lock().unwrap().entry("slow").or_default().insert(n);
                    serde_json::json!({"status": "SUCCESS"})
                }
                "/flaky" if n.is_multiple_of(10) => serde_json::json!({"status": "RETRY"}),
                "/flaky" => {
                    s.lock().unwrap().entry("flaky").or_default().insert(n);
                    serde_json::json!({"status": "SUCCESS"})
                }
                "/dlq" => {
                    s.lock().unwrap().entry("flaky").or_default().insert(n);
                    serde_json::json!({"status": "SUCCESS"})
                }
                _ => serde_json::json!({"status": "DROP"}),
            };
            answer.to_string()
        }
    })
    .await;
    seen
}

/// Publishes `{"n": i}` to `topic` at `per_sec` for `secs`; returns how many were accepted.
async fn publish_steadily(dapr_port: u16, topic: &'static str, per_sec: u64, secs: u64) -> u64 {
    let c = client();
    let url = format!("http://127.0.0.1:{dapr_port}/v1.0/publish/pubsub/{topic}");
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let (status, b) = call(&c, "POST", &url, Bytes::from(format!(r#"{{"n":{n}}}"#))).await;
        assert_eq!(status, 204, "publish to {topic}: {}", String::from_utf8_lossy(&b));
        n += 1;
        let due = start + Duration::from_micros(n * 1_000_000 / per_sec);
        tokio::time::sleep_until(due.into()).await;
    }
    n
}

/// Mixed Todo traffic on one connection for `secs`: creates, reads, list pages, the
/// feed, updates and deletes (as many as creates once 100 todos are live). Returns the
/// creates answered 201 and the non-2xx count.
async fn todo_mix(base: String, secs: u64, worker: u64) -> (u64, u64) {
    let c = client();
    let start = Instant::now();
    let (mut created, mut failed, mut i) = (0u64, 0u64, 0u64);
    let mut ids: Vec<String> = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        i += 1;
        // As many deletes as creates once 100 are live: the data stays the same size, so
        // what memory does beyond it is the host's own (and the TTL'd markers, below).
        let deleting = i % 10 >= 3 && i % 10 <= 5 && ids.len() > 100;
        let (status, body) = match i % 10 {
            0..=5 if !deleting => {
                let (s, b) = call(&c, "POST", &format!("{base}/todos"), create_body(worker * 1_000_000_000 + i)).await;
                if s == 201 {
                    created += 1;
                    if let Some(id) = serde_json::from_slice::<serde_json::Value>(&b).ok().and_then(|v| v["id"].as_str().map(str::to_owned))
                    {
                        ids.push(id);
                    }
                }
                (s, b)
            }
            0..=5 => {
                let id = ids.remove(0);
                call(&c, "DELETE", &format!("{base}/todos/{id}"), Bytes::new()).await
            }
            6 => call(&c, "GET", &format!("{base}/todos?limit=50"), Bytes::new()).await,
            7 if !ids.is_empty() => call(&c, "GET", &format!("{base}/todos/{}", ids[ids.len() / 2]), Bytes::new()).await,
            8 if !ids.is_empty() => {
                let id = ids.last().unwrap().clone();
                call(&c, "PATCH", &format!("{base}/todos/{id}"), Bytes::from_static(br#"{"completed":true}"#)).await
            }
            _ => call(&c, "GET", &format!("{base}/activity"), Bytes::new()).await,
        };
        if status >= 300 {
            failed += 1;
            eprintln!("todo mix: {status} {}", String::from_utf8_lossy(&body));
        }
    }
    (created, failed)
}

async fn bench_soak() {
    build_guests();
    let secs: u64 = std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    // Markers and tombstones kept 30 s instead of a day and an hour: long enough for any
    // redelivery here, short enough that the run shows memory levelling off.
    let (up, base) = start_up(&["--variable", "seen_ttl_seconds=30", "--variable", "tombstone_ttl_seconds=30"]).await;
    let app_port = free_port();
    let dapr_port = free_port();
    let seen = soak_subscriber(app_port).await;
    let args: Vec<String> = vec![
        "sidecar".into(),
        "--app-id".into(),
        "soak".into(),
        "--app-port".into(),
        app_port.to_string(),
        "--dapr-http-port".into(),
        dapr_port.to_string(),
        "--dapr-grpc-port".into(),
        "0".into(),
        "--resources-path".into(),
        root().join("runtime-config/dapr").display().to_string(),
    ];
    let sidecar = start("0", Path::new(env!("CARGO_BIN_EXE_spindapr")), &args, "Dapr sidecar");
    wait_healthy(dapr_port).await;
    let (up_pid, sidecar_pid) = (up.0.id(), sidecar.0.id());
    println!(
        "\n## soak: {secs} s of mixed Todo traffic (2 connections) on `up`, publishes to a slow (30/s) and a failing (5/s, every tenth dead-lettered) subscriber of `sidecar`"
    );
    println!("| t (s) | up RSS MiB | sidecar RSS MiB |");
    println!("|---:|---:|---:|");
    let sampler = tokio::spawn(async move {
        let start = Instant::now();
        let mut samples = Vec::new();
        while start.elapsed() < Duration::from_secs(secs) {
            let (a, b) = (rss_mib(up_pid), rss_mib(sidecar_pid));
            let t = start.elapsed().as_secs();
            if t % 30 < 5 {
                println!("| {t} | {a:.1} | {b:.1} |");
            }
            samples.push((a, b));
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        samples
    });
    let mix: Vec<_> = (0..2).map(|w| tokio::spawn(todo_mix(base.clone(), secs, w))).collect();
    let slow = tokio::spawn(publish_steadily(dapr_port, "slow", 30, secs));
    let flaky = tokio::spawn(publish_steadily(dapr_port, "flaky", 5, secs));
    let (mut created, mut failed) = (0, 0);
    for m in mix {
        let (c, f) = m.await.unwrap();
        created += c;
        failed += f;
    }
    let (slow_n, flaky_n) = (slow.await.unwrap(), flaky.await.unwrap());
    let samples = sampler.await.unwrap();
    // Everything must arrive: wait for the subscribers to drain.
    let c = client();
    let start = Instant::now();
    let (mut todo_seen, mut slow_seen, mut flaky_seen) = (0, 0, 0);
    while start.elapsed() < Duration::from_secs(120) {
        todo_seen = subscriber_count(&c, &base, false).await;
        {
            let s = seen.lock().unwrap();
            slow_seen = s.get("slow").map_or(0, |v| v.len() as u64);
            flaky_seen = s.get("flaky").map_or(0, |v| v.len() as u64);
        }
        if todo_seen >= created && slow_seen >= slow_n && flaky_seen >= flaky_n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (end_a, end_b) = (rss_mib(up_pid), rss_mib(sidecar_pid));
    let peak = |f: fn(&(f64, f64)) -> f64| samples.iter().map(f).fold(f64::NAN, f64::max);
    println!("| end (drained) | {end_a:.1} | {end_b:.1} |");
    println!(
        "\nRSS MiB, start / peak / end: up {:.1} / {:.1} / {end_a:.1}; sidecar {:.1} / {:.1} / {end_b:.1}",
        samples.first().map_or(f64::NAN, |s| s.0),
        peak(|s| s.0),
        samples.first().map_or(f64::NAN, |s| s.1),
        peak(|s| s.1),
    );
    let lost = created.saturating_sub(todo_seen) + slow_n.saturating_sub(slow_seen) + flaky_n.saturating_sub(flaky_seen);
    println!(
        "todos created {created} (non-2xx in the mix: {failed}), seen by the subscriber {todo_seen}; slow: published {slow_n}, received {slow_seen}; failing: published {flaky_n}, received or dead-lettered {flaky_seen}; lost: {lost}"
    );
    drop(sidecar);
    drop(up);
}

/// An OTLP/HTTP sink: answers every export 200 and counts the bytes, so the traced side
/// pays for making and sending its spans but nothing is stored.
fn otlp_sink() -> (u16, Arc<std::sync::atomic::AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = bytes.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let counted = counted.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
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
                    counted.fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, bytes)
}

/// `POST /todos` with tracing off and on (every trace sampled, exported over OTLP/HTTP
/// to a sink), both `up`s pinned to CPU 0, interleaved rounds.
async fn bench_tracing(rounds: usize, secs: u64) {
    build_guests();
    let (sink_port, exported) = otlp_sink();
    let (off, off_base) = start_up(&[]).await;
    let endpoint = [("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{sink_port}")), ("OTEL_TRACES_SAMPLER_ARG", "1".into())];
    let (on, on_base) = start_up_env(&[], &endpoint).await;
    let c = client();
    println!(
        "\n## tracing: POST /todos with tracing off vs on (sampling 1.0, OTLP/HTTP to a sink; {rounds} interleaved rounds × {secs} s)"
    );
    println!("| round | c | off req/s | p50 / p99 µs | on req/s | p50 / p99 µs | on / off |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut off_side = Side { base: off_base, seed: false, created: 0 };
    let mut on_side = Side { base: on_base, seed: false, created: 0 };
    measure(&c, &mut off_side, 2, 2).await;
    measure(&c, &mut on_side, 2, 2).await;
    /// Per connection count: off, on and on/off, one entry per round.
    type Rounds = (usize, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut summary: Vec<Rounds> = vec![(1, vec![], vec![], vec![]), (8, vec![], vec![], vec![])];
    for round in 1..=rounds {
        for (conns, offs, ons, ratios) in summary.iter_mut() {
            let (a, la, _, _) = measure(&c, &mut off_side, *conns, secs).await;
            let (b, lb, _, _) = measure(&c, &mut on_side, *conns, secs).await;
            offs.push(a);
            ons.push(b);
            ratios.push(b / a);
            println!(
                "| {round} | {conns} | {a:.0} | {:.0} / {:.0} | {b:.0} | {:.0} / {:.0} | {:.2}× |",
                percentile(&la, 0.5),
                percentile(&la, 0.99),
                percentile(&lb, 0.5),
                percentile(&lb, 0.99),
                b / a
            );
        }
    }
    println!("\nmedian (min–max) over the rounds:");
    for (conns, offs, ons, ratios) in &summary {
        println!(
            "- c={conns}: off {} req/s; on {} req/s; on/off {:.2}× ({:.2}–{:.2})",
            spread(offs),
            spread(ons),
            median(ratios.clone()),
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        );
    }
    println!("- OTLP bytes exported by the traced side: {}", exported.load(std::sync::atomic::Ordering::Relaxed));
    drop(on);
    drop(off);
}

async fn bench_todo() {
    build_guests();
    bench_todo_vs_seed(3, 5).await;
    bench_todo_growth(5).await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("native-hello") {
        native_hello(args.get(2).and_then(|p| p.parse().ok()).expect("native-hello PORT"));
        return;
    }
    let which = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_else(|| "all".into());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // The bench process itself runs on CPU 1, away from the servers.
    let _ = Command::new("taskset").args(["-p", "-c", "1", &std::process::id().to_string()]).stdout(Stdio::null()).status();
    match which.as_str() {
        "host" => bench_host(),
        "sidecar" => rt.block_on(bench_sidecars()),
        "todo" => rt.block_on(bench_todo()),
        "soak" => rt.block_on(bench_soak()),
        "tracing" => rt.block_on(bench_tracing(3, 5)),
        "grpc" => rt.block_on(bench_grpc(3, 3)),
        "all" => {
            bench_host();
            rt.block_on(bench_sidecars());
            rt.block_on(bench_todo());
        }
        other => {
            eprintln!("unknown benchmark {other:?}: use host, sidecar, todo, tracing, grpc, soak or all");
            std::process::exit(2);
        }
    }
}
