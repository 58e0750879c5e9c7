//! The `spindapr` command line: parses arguments and hands off to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use spindapr::{build_cmd, manifest, up};

#[derive(Parser)]
#[command(name = "spindapr", version, about = "Run Spin HTTP apps (spin.toml) on wasmtime, Spin 3.6-compatible", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve an app: every HTTP trigger of the manifest, a fresh instance per request.
    Up(UpArgs),
    /// Run each component's `[component.<id>.build] command`, like `spin build`.
    Build(BuildArgs),
    /// Run only the Dapr-compatible sidecar, like `daprd`, for an app served elsewhere.
    Sidecar(SidecarArgs),
    /// Write the app as an OCI image layout folder (Spin's media types); push it with any
    /// OCI tool, or run it with `up --from <folder>`.
    Package(PackageArgs),
}

#[derive(clap::Args)]
struct PackageArgs {
    /// The app's spin.toml, or a folder holding one.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
    /// The folder to write the OCI image layout to.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// The reference recorded in the index (org.opencontainers.image.ref.name).
    #[arg(long = "reference", default_value = "latest")]
    reference: String,
    /// Build the components first.
    #[arg(long)]
    build: bool,
}

#[derive(clap::Args)]
struct SidecarArgs {
    /// The app id (source of published events, state key prefix).
    #[arg(long = "app-id")]
    app_id: String,
    /// The app's HTTP port; subscriptions are read from it (GET /dapr/subscribe).
    #[arg(long = "app-port")]
    app_port: Option<u16>,
    /// The app's protocol: only http is supported.
    #[arg(long = "app-protocol", default_value = "http", value_parser = ["http"])]
    app_protocol: String,
    /// The host the app listens on.
    #[arg(long = "app-channel-address", default_value = "127.0.0.1")]
    app_channel_address: String,
    /// The port of the Dapr HTTP API.
    #[arg(long = "dapr-http-port", default_value_t = 3500)]
    dapr_http_port: u16,
    /// A folder (or file) of Component, Subscription and Resiliency YAML. Repeatable.
    #[arg(long = "resources-path")]
    resources_path: Vec<PathBuf>,
    /// Require this token in `dapr-api-token` on every API call but health.
    #[arg(long, env = "DAPR_API_TOKEN", hide_env_values = true)]
    dapr_api_token: Option<String>,
    /// Send this token as `dapr-api-token` on every call to the app.
    #[arg(long, env = "APP_API_TOKEN", hide_env_values = true)]
    app_api_token: Option<String>,
}

#[derive(clap::Args)]
struct UpArgs {
    /// The app's spin.toml, or a folder holding one.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
    /// Build the components before serving.
    #[arg(long)]
    build: bool,
    /// The address to serve on.
    #[arg(long, env = "SPIN_HTTP_LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Spin runtime config file (variables providers, outbound_http, ...).
    #[arg(long = "runtime-config-file")]
    runtime_config_file: Option<PathBuf>,
    /// Set an application variable, NAME=VALUE; wins over every provider. Repeatable.
    #[arg(long = "variable", value_parser = parse_kv)]
    variables: Vec<(String, String)>,
    /// Set an environment variable for every component, NAME=VALUE. Repeatable.
    #[arg(short = 'e', long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Cap on each instance's linear memory, in bytes (e.g. 67108864 for 64 MiB).
    #[arg(long = "max-instance-memory")]
    max_instance_memory: Option<usize>,
    /// Stop a request's instance after this long and answer 500 (e.g. 30s, 500ms).
    #[arg(long = "request-timeout", value_parser = humantime::parse_duration)]
    request_timeout: Option<Duration>,
    /// Allocate instances on demand instead of from the pooling allocator.
    #[arg(long = "disable-pooling")]
    disable_pooling: bool,
    /// Where compiled components are cached (default ~/.cache/spindapr).
    #[arg(long = "cache-dir", env = "SPINDAPR_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print only the listen address and errors.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Do not start the embedded Dapr sidecar (use an external daprd instead).
    #[arg(long = "no-sidecar")]
    no_sidecar: bool,
    /// Port of the embedded sidecar's Dapr HTTP API.
    #[arg(long = "dapr-http-port", default_value_t = 3500)]
    dapr_http_port: u16,
    /// Dapr resources (Component, Subscription, Resiliency YAML) for the sidecar. Repeatable.
    /// Without one, an in-memory `pubsub` and `statestore` are provided.
    #[arg(long = "resources-path")]
    resources_path: Vec<PathBuf>,
    /// The Dapr app id (default: the manifest's application name).
    #[arg(long = "app-id")]
    app_id: Option<String>,
    /// Require this token in `dapr-api-token` on every sidecar API call but health.
    #[arg(long, env = "DAPR_API_TOKEN", hide_env_values = true)]
    dapr_api_token: Option<String>,
    /// The sidecar sends this token as `dapr-api-token` on every call to the app.
    #[arg(long, env = "APP_API_TOKEN", hide_env_values = true)]
    app_api_token: Option<String>,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The app's spin.toml, or a folder holding one.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
    /// Build only these components (repeatable).
    #[arg(short = 'c', long = "component-id")]
    component_id: Vec<String>,
    /// Print nothing but errors.
    #[arg(short = 'q', long)]
    quiet: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info,wasmtime_cranelift=warn,cranelift=warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Build(a) => {
            init_logging(a.quiet);
            let app = manifest::load(&manifest::resolve_manifest_path(&a.from))?;
            build_cmd::build(&app, &a.component_id, a.quiet)
        }
        Command::Up(a) => {
            init_logging(a.quiet);
            let opts = up::UpOptions {
                from: a.from,
                build: a.build,
                listen: a.listen,
                runtime_config_file: a.runtime_config_file,
                variables: a.variables,
                env: a.env,
                max_instance_memory: a.max_instance_memory,
                request_timeout: a.request_timeout,
                disable_pooling: a.disable_pooling,
                cache_dir: a.cache_dir,
                quiet: a.quiet,
                sidecar: (!a.no_sidecar).then_some(up::SidecarOptions {
                    app_id: a.app_id,
                    http_port: a.dapr_http_port,
                    resources_paths: a.resources_path,
                    api_token: a.dapr_api_token,
                    app_api_token: a.app_api_token,
                }),
            };
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(up::run(opts))
        }
        Command::Package(a) => {
            init_logging(true);
            let app = manifest::load(&manifest::resolve_manifest_path(&a.from))?;
            if a.build {
                build_cmd::build(&app, &[], false)?;
            }
            let p = spindapr::package::package(&app, &a.out, &a.reference)?;
            println!("Packaged {} ({} layers) into {} as {}", app.name, p.layers, a.out.display(), p.manifest_digest);
            Ok(())
        }
        Command::Sidecar(a) => {
            init_logging(false);
            let _ = a.app_protocol;
            let cfg = spindapr::dapr::SidecarConfig {
                app_id: a.app_id,
                app_port: a.app_port,
                app_host: a.app_channel_address,
                resources_paths: a.resources_path,
                api_token: a.dapr_api_token,
                app_api_token: a.app_api_token,
            };
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(up::run_sidecar(cfg, a.dapr_http_port))
        }
    }
}
