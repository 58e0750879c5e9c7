//! `up`: loads the manifest and runtime config, optionally builds, resolves variables,
//! starts the HTTP trigger on the listen address and serves until SIGINT/SIGTERM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::dapr::{Sidecar, SidecarConfig};
use crate::engine::EngineOptions;
use crate::manifest;
use crate::runtime_config::RuntimeConfig;
use crate::trigger_http::{self, HttpRuntime, RuntimeOptions};
use crate::variables::{Provider, Resolver};

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub from: PathBuf,
    pub build: bool,
    pub listen: SocketAddr,
    pub runtime_config_file: Option<PathBuf>,
    pub variables: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub max_instance_memory: Option<usize>,
    pub request_timeout: Option<Duration>,
    pub disable_pooling: bool,
    pub cache_dir: Option<PathBuf>,
    pub quiet: bool,
    /// The embedded sidecar; `None` with `--no-sidecar` (an external daprd).
    pub sidecar: Option<SidecarOptions>,
}

/// How `up` runs the embedded Dapr sidecar.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    pub app_id: Option<String>,
    pub http_port: u16,
    pub resources_paths: Vec<PathBuf>,
    pub api_token: Option<String>,
    pub app_api_token: Option<String>,
}

/// Everything needed to serve, prepared but not yet listening.
pub struct Prepared {
    pub runtime: Arc<HttpRuntime>,
    pub listener: tokio::net::TcpListener,
}

pub async fn prepare(o: &UpOptions) -> anyhow::Result<Prepared> {
    // An OCI image layout written by `package` runs as it is; anything else is a spin.toml.
    let app = if crate::package::is_layout(&o.from) {
        anyhow::ensure!(!o.build, "--build does not apply to a packaged app ({})", o.from.display());
        crate::package::load_layout(&o.from)?
    } else {
        manifest::load(&manifest::resolve_manifest_path(&o.from))?
    };
    if o.build {
        crate::build_cmd::build(&app, &[], o.quiet)?;
    }
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
    let opts = RuntimeOptions {
        engine: EngineOptions { pooling: !o.disable_pooling, ..EngineOptions::default() },
        cache_dir: o.cache_dir.clone().or_else(crate::engine::default_cache_dir),
        request_timeout: o.request_timeout,
        max_instance_memory: o.max_instance_memory.or(rc.max_instance_memory),
        env: o.env.clone(),
        outbound: rc.outbound(),
    };
    let runtime = tokio::task::block_in_place(|| HttpRuntime::new(app, &resolver, opts))?;
    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .with_context(|| format!("cannot listen on {}: is another server using it? pick another with --listen", o.listen))?;
    Ok(Prepared { runtime: Arc::new(runtime), listener })
}

pub async fn run(o: UpOptions) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let p = prepare(&o).await?;
    let addr = p.listener.local_addr()?;
    let base_url = format!("http://{addr}");
    // The sidecar binds before the app serves, so components can reach it at once.
    let sidecar = match &o.sidecar {
        Some(s) => {
            let cfg = SidecarConfig {
                app_id: s.app_id.clone().unwrap_or_else(|| p.runtime.app().name.clone()),
                app_port: Some(addr.port()),
                app_host: app_host(addr),
                resources_paths: s.resources_paths.clone(),
                api_token: s.api_token.clone(),
                app_api_token: s.app_api_token.clone(),
            };
            let sidecar = Sidecar::new(cfg).await?;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", s.http_port))
                .await
                .with_context(|| format!("the Dapr sidecar cannot listen on 127.0.0.1:{}: pick another with --dapr-http-port, or --no-sidecar to use an external daprd", s.http_port))?;
            println!("Dapr sidecar http://{}", listener.local_addr()?);
            Some((sidecar, listener))
        }
        None => None,
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
    if let Some((sidecar, listener)) = sidecar {
        discovery = Some(spawn_subscriptions(sidecar.clone()));
        tasks.spawn(sidecar.serve(listener, stopped(stop_rx.clone())));
    }
    tasks.spawn(trigger_http::serve(p.runtime, p.listener, stopped(stop_rx.clone()), Duration::from_secs(10)));
    shutdown.await;
    // Discovery polls the app until it answers; once the app stops, it never would.
    if let Some(d) = discovery {
        d.abort();
    }
    let _ = stop_tx.send(true);
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// The address the sidecar calls the app on: loopback when the app listens on all interfaces.
fn app_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() { "127.0.0.1".into() } else { addr.ip().to_string() }
}

/// `sidecar`: the sidecar alone, like `daprd`, for an app running elsewhere.
pub async fn run_sidecar(cfg: SidecarConfig, http_port: u16) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let sidecar = Sidecar::new(cfg).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", http_port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{http_port}: pick another with --dapr-http-port"))?;
    println!("Dapr sidecar http://{}", listener.local_addr()?);
    spawn_subscriptions(sidecar.clone());
    sidecar.serve(listener, shutdown).await
}

/// Reads the app's subscriptions in the background (it waits for the app to answer).
fn spawn_subscriptions(sidecar: std::sync::Arc<Sidecar>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = sidecar.start_subscriptions().await {
            tracing::error!("the sidecar could not set up subscriptions: {e:#}");
        }
    })
}

/// Registers SIGINT and SIGTERM handlers now, and returns a future that resolves on
/// either. Registering before anything is served matters: a signal that arrives before
/// its handler exists would kill the process instead of draining it.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
