//! The `spindapr` command line: parses arguments and hands off to the library.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use spindapr::sidecar::{DaprArgs, SidecarArgs};
use spindapr::{build, up, watch};
use spindapr_manifest as manifest;

// The host allocates and frees per request (instances, headers, JSON); mimalloc spends
// far less time on that than glibc's malloc (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "spindapr", version, about = "Run Spin HTTP apps (spin.toml) on wasmtime, Spin 3.6-compatible", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as `text` or as one JSON object per line (`json`), for log collectors.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// daprd's spelling of `--log-format json`.
    #[arg(long = "log-as-json", global = true)]
    log_as_json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process")]
enum Command {
    /// Serve an app: every HTTP trigger of the manifest, a fresh instance per request.
    Up(UpArgs),
    /// Run each component's `[component.<id>.build] command`, like `spin build`.
    Build(BuildArgs),
    /// Run only the Dapr-compatible sidecar, like `daprd`, for an app served elsewhere.
    Sidecar(SidecarArgs),
    /// Build and serve the app, rebuilding and restarting it when files change, like
    /// `spin watch`.
    Watch(WatchArgs),
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
struct UpArgs {
    /// The app's spin.toml, or a folder holding one.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
    /// Build the components before serving.
    #[arg(long)]
    build: bool,
    /// The address to serve on, HOST:PORT (a host name is resolved, as Spin does).
    #[arg(long, env = "SPIN_HTTP_LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    listen: String,
    /// Spin runtime config file (variables providers, outbound_http, ...).
    #[arg(long = "runtime-config-file")]
    runtime_config_file: Option<PathBuf>,
    /// Set application variables; win over every provider. Repeatable. NAME=VALUE,
    /// NAME=@FILE (the value is the file's content), or @FILE.json / @FILE.toml (a table
    /// of NAME = value).
    #[arg(long = "variable", value_parser = parse_variable)]
    variables: Vec<Vec<(String, String)>>,
    /// Set an environment variable for every component, NAME=VALUE. Repeatable.
    #[arg(short = 'e', long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Cap on each instance's linear memory, in bytes (e.g. 67108864 for 64 MiB).
    #[arg(long = "max-instance-memory")]
    max_instance_memory: Option<usize>,
    /// Stop a request's instance after this long and answer 500: seconds (30, 1.5) or a
    /// duration (30s, 500ms).
    #[arg(long = "request-timeout", value_parser = parse_timeout)]
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
    /// Send the components' calls to the embedded sidecar, and its deliveries to them,
    /// over loopback TCP instead of in-process (as a separate daprd would see them).
    #[arg(long = "no-in-process")]
    no_in_process: bool,
    /// Where each component's output is also written (`<id>_stdout.txt`,
    /// `<id>_stderr.txt`), as Spin; default `<state dir>/logs`; an empty value writes none.
    #[arg(short = 'L', long = "log-dir")]
    log_dir: Option<String>,
    /// Spin's state folder (default `.spin` next to spin.toml): home of `logs/` and of the
    /// default key-value store and SQLite database; an empty value keeps those in memory.
    #[arg(long = "state-dir")]
    state_dir: Option<String>,
    /// Empty the component output files at start instead of appending.
    #[arg(long = "truncate-logs")]
    truncate_logs: bool,
    /// Show only these components' output in the log (repeatable; default all). The
    /// files in the log folder get every component's output regardless.
    #[arg(long = "follow", value_name = "ID", conflicts_with = "quiet")]
    follow: Vec<String>,
    /// Set KEY=VALUE in the app's default key-value store before serving (repeatable;
    /// an existing value is replaced).
    #[arg(long = "key-value", value_parser = parse_kv)]
    key_values: Vec<(String, String)>,
    /// Run a SQLite statement against the default database before serving, or the
    /// statements of a file with @FILE (@FILE:LABEL for another database). Repeatable.
    #[arg(long = "sqlite", value_name = "STATEMENT | @FILE[:LABEL]")]
    sqlite: Vec<String>,
    #[command(flatten)]
    dapr: DaprArgs,
}

#[derive(clap::Args)]
struct WatchArgs {
    /// The app's spin.toml, or a folder holding one.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
    /// Clear the screen before each build or restart.
    #[arg(short = 'c', long = "clear")]
    clear: bool,
    /// Milliseconds to gather changes before acting on them.
    #[arg(short = 'd', long = "debounce", default_value_t = 100)]
    debounce: u64,
    /// Only serve, restarting when a component's .wasm changes (no builds).
    #[arg(long = "skip-build")]
    skip_build: bool,
    /// Arguments for `up`, after watch's own (e.g. `--listen 127.0.0.1:3001`; `--` first
    /// works too), as `spin watch` passes them on.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    up_args: Vec<String>,
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

/// `--request-timeout`: bare seconds as Spin takes them, or a humantime duration.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => Ok(Duration::from_secs_f64(secs)),
        Ok(_) => Err(format!("{s:?} is not a positive number of seconds")),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("{s:?} is neither seconds nor a duration like 30s: {e}")),
    }
}

/// `--variable`: `NAME=VALUE`, `NAME=@file`, or `@file.json` / `@file.toml`.
fn parse_variable(s: &str) -> Result<Vec<(String, String)>, String> {
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("--variable: cannot read {path}: {e}"));
    if let Some(path) = s.strip_prefix('@') {
        let text = read(path)?;
        let table: Vec<(String, serde_json::Value)> = if path.ends_with(".json") {
            let v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text).map_err(|e| format!("--variable @{path}: not a JSON object of variables: {e}"))?;
            v.into_iter().collect()
        } else if path.ends_with(".toml") {
            let v: toml::Table = toml::from_str(&text).map_err(|e| format!("--variable @{path}: not a TOML table of variables: {e}"))?;
            let v = serde_json::to_value(v).map_err(|e| format!("--variable @{path}: {e}"))?;
            v.as_object().map(|o| o.clone().into_iter().collect()).unwrap_or_default()
        } else {
            return Err(format!("--variable @{path}: a variables file must end in .json or .toml"));
        };
        return table
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                serde_json::Value::Number(n) => Ok((k, n.to_string())),
                serde_json::Value::Bool(b) => Ok((k, b.to_string())),
                other => Err(format!("--variable @{path}: {k} must be a string, number or boolean, not {other}")),
            })
            .collect();
    }
    let (k, v) = parse_kv(s)?;
    match v.strip_prefix('@') {
        Some(path) => Ok(vec![(k, read(path)?)]),
        None => Ok(vec![(k, v)]),
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

fn init_logging(quiet: bool, json: bool) {
    let default = if quiet { "warn" } else { "info,wasmtime_cranelift=warn,cranelift=warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        fmt.json().flatten_event(true).with_current_span(false).init();
    } else {
        fmt.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let json = cli.log_as_json || cli.log_format == LogFormat::Json;
    let init_logging = |quiet: bool| init_logging(quiet, json);
    match cli.command {
        Command::Build(a) => {
            init_logging(a.quiet);
            let app = manifest::load(&manifest::resolve_manifest_path(&a.from))?;
            build::build(&app, &a.component_id, a.quiet)
        }
        Command::Up(a) => {
            init_logging(a.quiet);
            let opts = up::UpOptions {
                from: a.from,
                build: a.build,
                listen: a.listen,
                runtime_config_file: a.runtime_config_file,
                variables: a.variables.into_iter().flatten().collect(),
                env: a.env,
                max_instance_memory: a.max_instance_memory,
                request_timeout: a.request_timeout,
                disable_pooling: a.disable_pooling,
                cache_dir: a.cache_dir,
                quiet: a.quiet,
                metrics_port: a.dapr.metrics_port(),
                log_dir: a.log_dir.map(PathBuf::from),
                state_dir: a.state_dir.map(PathBuf::from),
                truncate_logs: a.truncate_logs,
                follow: a.follow,
                key_values: a.key_values,
                sqlite_statements: a.sqlite,
                sidecar: (!a.no_sidecar).then_some(a.dapr),
                in_process: !a.no_in_process,
            };
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(up::run(opts))
        }
        Command::Watch(a) => {
            init_logging(false);
            let opts = watch::WatchOptions {
                from: a.from,
                clear: a.clear,
                debounce: Duration::from_millis(a.debounce),
                skip_build: a.skip_build,
                up_args: a.up_args,
            };
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(watch::run(opts))
        }
        Command::Package(a) => {
            init_logging(true);
            let app = manifest::load(&manifest::resolve_manifest_path(&a.from))?;
            if a.build {
                build::build(&app, &[], false)?;
            }
            let p = spindapr::package::package(&app, &a.out, &a.reference)?;
            println!("Packaged {} ({} layers) into {} as {}", app.name, p.layers, a.out.display(), p.manifest_digest);
            Ok(())
        }
        Command::Sidecar(a) => {
            init_logging(false);
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(spindapr::sidecar::run(a))
        }
    }
}
