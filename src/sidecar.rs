//! `sidecar`: the Dapr-compatible sidecar alone, like `daprd`, for an app served
//! elsewhere; and the flags `up` and `sidecar` share ([`DaprArgs`]), with the start-up
//! steps both run (bind the API, discover subscriptions, stop on a signal).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use spindapr_dapr::{Sidecar, SidecarConfig};

/// The daprd flags `up` and `sidecar` share.
#[derive(Debug, Clone, clap::Args)]
pub struct DaprArgs {
    /// The Dapr app id (source of published events, state key prefix). `up` defaults it
    /// to the manifest's application name.
    #[arg(long = "app-id")]
    pub app_id: Option<String>,
    /// Port of the sidecar's Dapr HTTP API.
    #[arg(long = "dapr-http-port", default_value_t = 3500)]
    pub dapr_http_port: u16,
    /// Port of the sidecar's Dapr gRPC API (daprd's default 50001; 0 picks a free one).
    #[arg(long = "dapr-grpc-port", default_value_t = 50001)]
    pub dapr_grpc_port: u16,
    /// A folder (or file) of Component, Subscription and Resiliency YAML. Repeatable.
    /// Default: the app's `runtime-config/dapr` (`up`), else `~/.dapr/components`, else
    /// an in-memory `pubsub` and `statestore`.
    #[arg(long = "resources-path")]
    pub resources_path: Vec<PathBuf>,
    /// Require this token in `dapr-api-token` on every API call but health.
    #[arg(long, env = "DAPR_API_TOKEN", hide_env_values = true)]
    pub dapr_api_token: Option<String>,
    /// Send this token as `dapr-api-token` on every call to the app.
    #[arg(long, env = "APP_API_TOKEN", hide_env_values = true)]
    pub app_api_token: Option<String>,
    /// Largest request body the Dapr API reads, as a Kubernetes quantity (daprd's flag:
    /// `4Mi`, `512Ki`, `1k`, `400`); `0` for no limit.
    #[arg(long = "max-body-size", default_value = "4Mi", value_parser = spindapr_dapr::parse_quantity)]
    pub max_body_size: u64,
    /// Port of the Prometheus `/metrics` endpoint (daprd's flag and default), on loopback.
    #[arg(long = "metrics-port", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Serve metrics (`--enable-metrics=false` to not), as daprd's flag.
    #[arg(long = "enable-metrics", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_metrics: bool,
}

impl DaprArgs {
    /// The sidecar's configuration for an app reachable at `app_host:app_port`.
    pub fn config(&self, app_id: String, app_port: Option<u16>, app_host: String) -> SidecarConfig {
        SidecarConfig {
            app_id,
            app_port,
            app_host,
            resources_paths: self.resources_path.clone(),
            api_token: self.dapr_api_token.clone(),
            app_api_token: self.app_api_token.clone(),
            max_body_size: self.max_body_size,
            app_protocol: spindapr_dapr::AppProtocol::Http,
        }
    }

    /// The resources folders to load and where they came from: `--resources-path` when
    /// given; else, as `dapr run` has a default folder, the app's `runtime-config/dapr`
    /// (`up`) or `~/.dapr/components`, whichever exists first; else none (the sidecar
    /// then provides an in-memory `pubsub` and `statestore`).
    pub fn resources(&self, app_dir: Option<&Path>) -> (Vec<PathBuf>, String) {
        if !self.resources_path.is_empty() {
            let shown: Vec<String> = self.resources_path.iter().map(|p| p.display().to_string()).collect();
            return (self.resources_path.clone(), shown.join(", "));
        }
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".dapr").join("components"));
        let candidates = app_dir.map(|d| d.join("runtime-config").join("dapr")).into_iter().chain(home);
        for dir in candidates {
            if dir.is_dir() {
                let shown = format!("{} (the default folder; choose another with --resources-path)", dir.display());
                return (vec![dir], shown);
            }
        }
        (Vec::new(), "no resources folder found, built-in in-memory defaults (their state store has no outbox)".into())
    }

    /// The metrics port, when metrics are on.
    pub fn metrics_port(&self) -> Option<u16> {
        self.enable_metrics.then_some(self.metrics_port)
    }

    /// Binds the sidecar's API on loopback and prints its address (tests read it).
    pub async fn bind(&self) -> anyhow::Result<tokio::net::TcpListener> {
        let port = self.dapr_http_port;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| {
            format!("the Dapr sidecar cannot listen on 127.0.0.1:{port}: pick another with --dapr-http-port (or --no-sidecar with `up` to use an external daprd)")
        })?;
        println!("Dapr sidecar http://{}", listener.local_addr()?);
        Ok(listener)
    }

    /// Binds the sidecar's gRPC API on loopback and prints its address (tests read it).
    pub async fn bind_grpc(&self) -> anyhow::Result<tokio::net::TcpListener> {
        let port = self.dapr_grpc_port;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| {
            format!("the Dapr sidecar's gRPC API cannot listen on 127.0.0.1:{port}: pick another with --dapr-grpc-port")
        })?;
        println!("Dapr gRPC {}", listener.local_addr()?);
        Ok(listener)
    }
}

/// `sidecar`'s own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SidecarArgs {
    /// The app's HTTP port; subscriptions are read from it (GET /dapr/subscribe).
    #[arg(long = "app-port")]
    pub app_port: Option<u16>,
    /// The app's protocol: `http` (GET /dapr/subscribe, events POSTed) or `grpc` (the
    /// app's AppCallback service: ListTopicSubscriptions, OnTopicEvent).
    #[arg(long = "app-protocol", default_value = "http")]
    pub app_protocol: spindapr_dapr::AppProtocol,
    /// The host the app listens on.
    #[arg(long = "app-channel-address", default_value = "127.0.0.1")]
    pub app_channel_address: String,
    /// The flags shared with `up`.
    #[command(flatten)]
    pub dapr: DaprArgs,
}

/// Runs the sidecar until SIGINT/SIGTERM.
pub async fn run(a: SidecarArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let app_id = a.dapr.app_id.clone().context("--app-id is required: the Dapr app id of the app this sidecar serves")?;
    if let Some(t) = spindapr_metrics::trace::TraceConfig::from_env(&app_id) {
        spindapr_metrics::trace::init(&t).map_err(|e| anyhow::anyhow!("tracing: {e}"))?;
    }
    let mut cfg = a.dapr.config(app_id, a.app_port, a.app_channel_address.clone());
    cfg.app_protocol = a.app_protocol;
    let (paths, origin) = a.dapr.resources(None);
    cfg.resources_paths = paths;
    let sidecar = Sidecar::new(cfg).await?;
    let listener = a.dapr.bind().await?;
    let grpc = a.dapr.bind_grpc().await?;
    if let Some(port) = a.dapr.metrics_port() {
        spawn_metrics(port).await;
    }
    println!("Dapr resources: {origin}: {}", sidecar.component_summary().join(", "));
    spawn_subscriptions(sidecar.clone(), false);
    // A signal or the Shutdown API stops both servers.
    let requested = sidecar.shutdown_requested();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {},
            _ = requested => {},
        }
    };
    let served = sidecar.serve_all(listener, Some(grpc), stop).await;
    tokio::task::block_in_place(spindapr_metrics::trace::shutdown);
    served
}

/// Serves `/metrics` on `port` in the background. A port already taken (another sidecar
/// on this machine) is a warning, not a failure.
pub async fn spawn_metrics(port: u16) {
    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => {
            if let Ok(addr) = listener.local_addr() {
                println!("Metrics http://{addr}/metrics");
            }
            tokio::spawn(spindapr_metrics::serve(listener, std::future::pending()));
        }
        Err(e) => tracing::warn!(
            "no metrics endpoint: 127.0.0.1:{port} is not available ({e}); choose another with --metrics-port, or --enable-metrics=false"
        ),
    }
}

/// Reads the app's subscriptions in the background (it waits for the app to answer),
/// then prints them unless `quiet`.
pub fn spawn_subscriptions(sidecar: Arc<Sidecar>, quiet: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match sidecar.start_subscriptions().await {
            Ok(()) if !quiet => {
                let subs = sidecar.subscription_summary().await;
                if subs.is_empty() {
                    println!("Dapr subscriptions: none");
                }
                for s in subs {
                    println!("Dapr subscription: {s}");
                }
            }
            Ok(()) => {}
            Err(e) => tracing::error!("the sidecar could not set up subscriptions: {e:#}"),
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
