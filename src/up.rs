//! `up`: loads the manifest (or a packaged app) and the runtime config, optionally
//! builds, resolves variables, starts the embedded sidecar next to the HTTP trigger and
//! serves until SIGINT/SIGTERM, then drains.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use spindapr_dapr::Sidecar;
use spindapr_host::engine::{self, EngineOptions};
use spindapr_host::key_value::{self, KeyValueStores};
use spindapr_host::outbound::LocalServices;
use spindapr_host::runtime_config::RuntimeConfig;
use spindapr_host::sqlite::{self, SqliteDatabases};
use spindapr_host::trigger::FollowComponents;
use spindapr_host::variables::{Provider, Resolver};
use spindapr_host::{HttpRuntime, RuntimeOptions};
use spindapr_manifest as manifest;

use crate::in_process::{RuntimeTransport, SidecarService};
use crate::sidecar::{DaprArgs, shutdown_signal, spawn_subscriptions};

/// What `up` was asked to do.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The app's spin.toml, its folder, or a packaged OCI layout.
    pub from: PathBuf,
    /// Build the components first.
    pub build: bool,
    /// Where to serve the app: `HOST:PORT`, the host resolved as Spin does.
    pub listen: String,
    /// Spin runtime config file.
    pub runtime_config_file: Option<PathBuf>,
    /// `--variable` values.
    pub variables: Vec<(String, String)>,
    /// `-e/--env` values.
    pub env: Vec<(String, String)>,
    /// Cap on each instance's linear memory.
    pub max_instance_memory: Option<usize>,
    /// Per-request deadline.
    pub request_timeout: Option<Duration>,
    /// Allocate instances on demand instead of from the pool.
    pub disable_pooling: bool,
    /// Compiled-code cache folder.
    pub cache_dir: Option<PathBuf>,
    /// Print only the listen address and errors.
    pub quiet: bool,
    /// The embedded sidecar; `None` with `--no-sidecar` (an external daprd).
    pub sidecar: Option<DaprArgs>,
    /// Calls between the components and the embedded sidecar stay in this process
    /// (`false`: over loopback TCP, as with a separate daprd).
    pub in_process: bool,
    /// The metrics endpoint's port, if metrics are on (with or without the sidecar).
    pub metrics_port: Option<u16>,
    /// `-L/--log-dir`: where component output files go (an empty path: none).
    pub log_dir: Option<PathBuf>,
    /// `--state-dir`: Spin's state folder (default `<app dir>/.spin`), home of `logs/`.
    pub state_dir: Option<PathBuf>,
    /// `--truncate-logs`: empty the output files at start.
    pub truncate_logs: bool,
    /// `--follow`: the components whose output shows in the log (empty: all).
    pub follow: Vec<String>,
    /// `--key-value KEY=VALUE`: set in the `default` store before serving.
    pub key_values: Vec<(String, String)>,
    /// `--sqlite`: statements (or `@file[:label]`) run before serving.
    pub sqlite_statements: Vec<String>,
}

/// Everything needed to serve, prepared but not yet listening.
pub struct Prepared {
    /// The loaded app.
    pub runtime: Arc<HttpRuntime>,
    /// The bound app listener.
    pub listener: tokio::net::TcpListener,
}

/// Loads the app: a packaged OCI layout as it is, else the spin.toml (built if asked).
fn load_app(o: &UpOptions) -> anyhow::Result<manifest::App> {
    if crate::package::is_layout(&o.from) {
        anyhow::ensure!(!o.build, "--build does not apply to a packaged app ({})", o.from.display());
        return crate::package::load_layout(&o.from);
    }
    let app = manifest::load(&manifest::resolve_manifest_path(&o.from))?;
    if o.build {
        crate::build::build(&app, &[], o.quiet)?;
    }
    Ok(app)
}

/// Resolves `--listen` (a host name too, as Spin does) to the first address it names.
async fn listen_addr(listen: &str) -> anyhow::Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("--listen {listen}: not an address; use HOST:PORT, e.g. 127.0.0.1:3000 or localhost:3000"))?;
    addrs.next().with_context(|| format!("--listen {listen}: the host name resolves to no address"))
}

/// Compiles the app and binds its listener, without serving. `dapr_env` is the
/// environment `dapr run` would give an app (it comes before the manifest's
/// `environment` and `-e`, which win over it).
pub async fn prepare(o: &UpOptions, app: manifest::App, dapr_env: Vec<(String, String)>) -> anyhow::Result<Prepared> {
    let rc = match &o.runtime_config_file {
        Some(p) => RuntimeConfig::load(p)?,
        None => RuntimeConfig::default(),
    };
    let rc_base = o.runtime_config_file.as_ref().and_then(|p| p.parent().map(|d| d.to_path_buf())).unwrap_or_default();
    // Priority: --variable, then runtime-config providers, then SPIN_VARIABLE_* / ./.env.
    let mut providers = vec![Provider::Static(o.variables.iter().cloned().collect::<HashMap<_, _>>())];
    providers.extend(rc.providers(&rc_base)?);
    providers.push(Provider::env(None, None)?);
    let resolver = Resolver::new(app.variables.clone(), providers);
    for (k, _) in &o.variables {
        if !app.variables.contains_key(k) {
            tracing::warn!("--variable {k}: the manifest declares no such variable; it is ignored");
        }
    }
    // As Spin: --state-dir, else runtime config `state_dir`, else `<app dir>/.spin`; an
    // empty value means none (stores in memory, no log files). Paths from the command line
    // or the file are taken from the working folder, as Spin's.
    let given = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| absolute(p));
    let state_dir = match (&o.state_dir, &rc.state_dir) {
        (Some(d), _) | (None, Some(d)) => given(d).transpose()?,
        (None, None) => Some(app.base_dir.join(".spin")),
    };
    let log_dir = match (&o.log_dir, &rc.log_dir) {
        (Some(d), _) | (None, Some(d)) => given(d).transpose()?,
        (None, None) => state_dir.as_ref().map(|s| s.join("logs")),
    };
    let cwd = std::env::current_dir().context("cannot read the working folder")?;
    let kv_configs: Vec<_> = rc.key_value_store.clone().into_iter().collect();
    let key_value = KeyValueStores::new(&kv_configs, &rc_base, state_dir.as_ref().map(|d| d.join(key_value::DEFAULT_FILE)))?;
    let sql_configs: Vec<_> = rc.sqlite_database.clone().into_iter().collect();
    let sqlite = SqliteDatabases::new(&sql_configs, &cwd, state_dir.as_ref().map(|d| d.join(sqlite::DEFAULT_FILE)))?;
    let uses = |label: &str, pick: fn(&manifest::ComponentDef) -> &Vec<String>| {
        app.components.values().any(|c| pick(c).iter().any(|l| l == label))
    };
    if !o.quiet {
        if uses(key_value::DEFAULT_LABEL, |c| &c.key_value_stores) {
            println!("Storing default key-value data to {}.", key_value.summary(key_value::DEFAULT_LABEL).unwrap_or_default());
        }
        if uses(sqlite::DEFAULT_LABEL, |c| &c.sqlite_databases) {
            println!("Storing default SQLite data to {}.", sqlite.summary(sqlite::DEFAULT_LABEL).unwrap_or_default());
        }
    }
    let follow = if o.quiet {
        FollowComponents::None
    } else if o.follow.is_empty() {
        FollowComponents::All
    } else {
        FollowComponents::Named(o.follow.iter().cloned().collect())
    };
    let opts = RuntimeOptions {
        engine: EngineOptions { pooling: !o.disable_pooling, ..EngineOptions::default() },
        cache_dir: o.cache_dir.clone().or_else(engine::default_cache_dir),
        request_timeout: o.request_timeout,
        max_instance_memory: o.max_instance_memory.or(rc.max_instance_memory),
        base_env: dapr_env,
        env: o.env.clone(),
        outbound: rc.outbound(),
        log_dir,
        truncate_logs: o.truncate_logs,
        follow,
        key_value: Arc::new(key_value),
        sqlite: Arc::new(sqlite),
    };
    let (key_value, sqlite) = (opts.key_value.clone(), opts.sqlite.clone());
    let listen = listen_addr(&o.listen).await?;
    // The runtime checks the components' store and database labels first; then, as
    // Spin's hooks, `--key-value` and `--sqlite` run before anything is served.
    let runtime = tokio::task::block_in_place(|| HttpRuntime::new(app, &resolver, opts))?;
    for (k, v) in &o.key_values {
        key_value
            .set(key_value::DEFAULT_LABEL, k, v.as_bytes())
            .await
            .with_context(|| format!("--key-value {k}=…: setting it in the default store failed"))?;
    }
    sqlite.run_statements(&o.sqlite_statements).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}: is another server using it? pick another with --listen"))?;
    Ok(Prepared { runtime: Arc::new(runtime), listener })
}

/// `path` made absolute against the working folder.
fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} an absolute path", path.display()))
}

/// daprd's default HTTP port: components written for daprd call it.
const DAPRD_DEFAULT_PORT: u16 = 3500;

/// Serves until SIGINT/SIGTERM.
pub async fn run(o: UpOptions) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let app = tokio::task::block_in_place(|| load_app(&o))?;
    let app_dir = app.base_dir.clone();
    let app_id = o.sidecar.as_ref().map(|d| d.app_id.clone().unwrap_or_else(|| app.name.clone()));
    // Spin's convention: OTEL_EXPORTER_OTLP_ENDPOINT turns span export on.
    if let Some(t) = spindapr_metrics::trace::TraceConfig::from_env(app_id.as_deref().unwrap_or(&app.name)) {
        spindapr_metrics::trace::init(&t).map_err(|e| anyhow::anyhow!("tracing: {e}"))?;
    }
    // The sidecar binds first, so the components are told its port (as `dapr run` tells
    // its app) and can reach it as soon as they serve.
    let sidecar_listener = match &o.sidecar {
        Some(d) => Some(d.bind().await?),
        None => None,
    };
    // The gRPC API is for apps beside the components (they speak HTTP): a port already
    // taken (another `up` on this machine) leaves it off with a warning.
    let grpc_listener = match &o.sidecar {
        Some(d) => match d.bind_grpc().await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("{e:#}; the sidecar serves its HTTP API only");
                None
            }
        },
        None => None,
    };
    let grpc_port = grpc_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port());
    // One metrics endpoint for the host and its embedded sidecar.
    if let Some(port) = o.metrics_port {
        crate::sidecar::spawn_metrics(port).await;
    }
    let dapr_port = sidecar_listener.as_ref().map(|l| l.local_addr()).transpose()?.map(|a| a.port());
    let dapr_env = match (dapr_port, &app_id) {
        (Some(port), Some(id)) => {
            let mut env = vec![
                ("DAPR_HTTP_PORT".to_string(), port.to_string()),
                ("DAPR_HTTP_ENDPOINT".to_string(), format!("http://127.0.0.1:{port}")),
                ("APP_ID".to_string(), id.clone()),
            ];
            if let Some(g) = grpc_port {
                env.push(("DAPR_GRPC_PORT".to_string(), g.to_string()));
                env.push(("DAPR_GRPC_ENDPOINT".to_string(), format!("http://127.0.0.1:{g}")));
            }
            env
        }
        _ => Vec::new(),
    };
    let p = prepare(&o, app, dapr_env).await?;
    let addr = p.listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let sidecar = match (&o.sidecar, sidecar_listener, app_id, dapr_port) {
        (Some(d), Some(listener), Some(app_id), Some(port)) => {
            let (paths, origin) = d.resources(Some(&app_dir));
            let mut cfg = d.config(app_id, Some(addr.port()), app_host(addr));
            cfg.resources_paths = paths;
            let sidecar = if o.in_process {
                // Deliveries go straight into this process's router, never through a socket.
                let sidecar = Sidecar::with_app_transport(cfg, Arc::new(RuntimeTransport(p.runtime.clone()))).await?;
                // And the components' calls to the sidecar come straight to it: at its own
                // port, and at daprd's default port, which components written for daprd use.
                let service: Arc<SidecarService> = Arc::new(SidecarService(sidecar.clone()));
                let mut local = LocalServices::default().loopback(port, service.clone());
                if port != DAPRD_DEFAULT_PORT {
                    local = local.loopback(DAPRD_DEFAULT_PORT, service);
                }
                if p.runtime.set_local_services(local).is_err() {
                    anyhow::bail!("internal error: the runtime's local services were already set");
                }
                sidecar
            } else {
                Sidecar::new(cfg).await?
            };
            if !o.quiet {
                println!("Dapr resources: {origin}: {}", sidecar.component_summary().join(", "));
            }
            Some((sidecar, listener))
        }
        _ => None,
    };
    println!("Serving {base_url}");
    if !o.quiet {
        println!("Available Routes:");
        for line in p.runtime.route_listing(&base_url) {
            println!("{line}");
        }
    }
    tracing::info!("Serving {base_url}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut discovery = None;
    let mut requested: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(std::future::pending());
    if let Some((sidecar, listener)) = sidecar {
        discovery = Some(spawn_subscriptions(sidecar.clone(), o.quiet));
        requested = Box::pin(sidecar.shutdown_requested());
        tasks.spawn(sidecar.serve_all(listener, grpc_listener, stopped(stop_rx.clone())));
    }
    let runtime = p.runtime.clone();
    let app_stopped = stopped(stop_rx.clone());
    tasks.spawn(async move {
        spindapr_host::serve(runtime, p.listener, app_stopped, Duration::from_secs(10)).await;
        Ok(())
    });
    // A signal, or the sidecar's Shutdown API, as daprd's stops `dapr run`'s app.
    tokio::select! {
        _ = shutdown => {},
        _ = requested => {},
    }
    // Discovery polls the app until it answers; once the app stops, it never would.
    if let Some(d) = discovery {
        d.abort();
    }
    let _ = stop_tx.send(true);
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    tokio::task::block_in_place(spindapr_metrics::trace::shutdown);
    Ok(())
}

/// The address the sidecar calls the app on: loopback when the app listens on all interfaces.
fn app_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() { "127.0.0.1".into() } else { addr.ip().to_string() }
}
