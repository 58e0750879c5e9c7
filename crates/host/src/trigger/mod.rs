//! The HTTP trigger: the inbound server (HTTP/1.1 and h2c), Spin's routing and
//! well-known endpoints, static responses, and dispatch of each request to a fresh
//! instance of a pre-instantiated component — with a per-request timeout (epoch
//! interruption plus a deadline), a memory cap per instance, and in-process service
//! chaining for `self` and `<id>.spin.internal` requests.

mod headers;
mod state;
mod unoffered;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpView};

use crate::profile;
use spindapr_manifest::allowed_hosts::{AllowList, chaining_target};
use spindapr_manifest::{App, RouteConfig, StaticResponse, TriggerTarget};
use spindapr_metrics::trace;
use state::{GuestLog, HostState};
use wasmtime_wasi_http::WasiHttpHooks;

use crate::engine::{self, EngineOptions};
use crate::outbound::{LocalServices, Outbound, OutboundConfig, empty_body, full_body};
use crate::routes::{RouteMatch, Router, WELL_KNOWN_PREFIX};
use crate::variables::{ComponentVariables, Resolver};

/// How the runtime runs components.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Engine settings (pooling, epochs).
    pub engine: EngineOptions,
    /// Where compiled components are cached; `None` compiles every start.
    pub cache_dir: Option<PathBuf>,
    /// A request's instance is stopped after this long (answer 500).
    pub request_timeout: Option<Duration>,
    /// Cap on each instance's linear memory, in bytes.
    pub max_instance_memory: Option<usize>,
    /// Environment every component gets first (e.g. what `dapr run` gives an app); the
    /// manifest's `environment` and then `-e` override it.
    pub base_env: Vec<(String, String)>,
    /// `-e/--env` values: they override the manifest's `environment`, as `spin up`.
    pub env: Vec<(String, String)>,
    /// Outbound HTTP settings (runtime config `[outbound_http]`).
    pub outbound: OutboundConfig,
    /// Where each component's output is also written, as Spin's
    /// `<id>_stdout.txt` / `<id>_stderr.txt`; `None`: the host log only.
    pub log_dir: Option<PathBuf>,
    /// Empty those files at start instead of appending (`--truncate-logs`).
    pub truncate_logs: bool,
    /// Whose output also shows in the host log (`--follow`, `--quiet`).
    pub follow: FollowComponents,
    /// The app's key-value stores (`default` and the runtime config's).
    pub key_value: Arc<crate::key_value::KeyValueStores>,
    /// The app's SQLite databases (`default` and the runtime config's).
    pub sqlite: Arc<crate::sqlite::SqliteDatabases>,
}

/// Which components' output shows in the host log, as Spin's `--follow` / `--quiet`
/// choose what reaches its terminal (the log files get every line regardless).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FollowComponents {
    /// Every component's (no `--follow`).
    #[default]
    All,
    /// None (`--quiet`).
    None,
    /// These components' (`--follow ID`, repeatable).
    Named(std::collections::HashSet<String>),
}

impl FollowComponents {
    /// Whether `id`'s output is shown.
    pub fn follows(&self, id: &str) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Named(ids) => ids.contains(id),
        }
    }
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            engine: EngineOptions::default(),
            cache_dir: engine::default_cache_dir(),
            request_timeout: None,
            max_instance_memory: None,
            base_env: Vec::new(),
            env: Vec::new(),
            outbound: OutboundConfig::default(),
            log_dir: None,
            truncate_logs: false,
            follow: FollowComponents::All,
            key_value: Arc::new(crate::key_value::KeyValueStores::in_memory()),
            sqlite: Arc::new(crate::sqlite::SqliteDatabases::default()),
        }
    }
}

/// One component, compiled and linked once, instantiated per request.
struct LoadedComponent {
    id: Arc<str>,
    pre: ProxyPre<HostState>,
    variables: Arc<ComponentVariables>,
    allow: AllowList,
    env: Vec<(String, String)>,
    /// The trigger that chaining requests to this component use.
    chaining_trigger: Option<usize>,
    /// Its metrics, labelled once.
    active: prometheus::IntGauge,
    duration: prometheus::Histogram,
    /// An instance made ahead, while the host was idle, for the next request (each
    /// instance still serves exactly one request).
    warm: std::sync::Mutex<Option<(Store<HostState>, Proxy)>>,
    /// Signalled when a task has made the next warm instance (or given up).
    warm_ready: tokio::sync::Notify,
    /// Whether a task is making the next warm instance.
    refilling: std::sync::atomic::AtomicBool,
    /// Spin's `<id>_stdout.txt` and `<id>_stderr.txt`, when logging to files.
    log_files: (Option<state::LogFile>, Option<state::LogFile>),
    /// Whether its output shows in the host log.
    follow: bool,
    /// Its `key_value_stores` and `sqlite_databases` labels.
    kv_allowed: Arc<std::collections::HashSet<String>>,
    sql_allowed: Arc<std::collections::HashSet<String>>,
}

impl LoadedComponent {
    /// The instance made ahead, if one is waiting.
    fn take_warm(&self) -> Option<(Store<HostState>, Proxy)> {
        self.warm.lock().ok().and_then(|mut w| w.take())
    }
}

/// Counts a request as active until it ends — normally or by being cancelled (a client
/// that went away) — and records its duration.
struct Active<'a> {
    component: &'a LoadedComponent,
    started: std::time::Instant,
}

impl<'a> Active<'a> {
    fn start(component: &'a LoadedComponent) -> Self {
        component.active.inc();
        Self { component, started: std::time::Instant::now() }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.component.active.dec();
        self.component.duration.observe(self.started.elapsed().as_secs_f64());
    }
}

/// The running app.
pub struct HttpRuntime {
    app: App,
    engine: Engine,
    router: Router,
    components: HashMap<String, Arc<LoadedComponent>>,
    outbound: Outbound,
    /// Services in this process (the embedded sidecar), set once it exists.
    local: std::sync::OnceLock<LocalServices>,
    opts: RuntimeOptions,
}

impl HttpRuntime {
    /// Compiles (or loads from cache) and links every component, resolves variables and
    /// allow-lists. Fails with a message naming the component and what to fix.
    pub fn new(app: App, resolver: &Resolver, opts: RuntimeOptions) -> anyhow::Result<Self> {
        resolver.check_required()?;
        let engine = engine::build(&opts.engine)?;
        let mut linker = Linker::<HostState>::new(&engine);
        state::add_to_linker(&mut linker)?;

        let routes: Vec<(usize, Option<&str>)> = app
            .http_triggers
            .iter()
            .enumerate()
            .map(|(i, t)| match &t.route {
                RouteConfig::Route(r) => (i, Some(r.as_str())),
                RouteConfig::Private(_) => (i, None),
            })
            .collect();
        let (router, duplicates) = Router::build(routes)?;
        if !duplicates.is_empty() {
            tracing::error!("The following component routes are duplicates and will never be used:");
            for d in &duplicates {
                tracing::error!("  {}: {} (duplicate of {})", app.http_triggers[d.replaced].id, d.route, app.http_triggers[d.effective].id);
            }
        }
        if router.contains_reserved_route() {
            tracing::error!("Routes under {WELL_KNOWN_PREFIX} are handled by the Spin runtime and will never be reached");
        }

        let ids: Vec<String> = app.components.keys().cloned().collect();
        check_labels(&app, &opts)?;
        let mut stubbed: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
        let mut components = HashMap::new();
        for (id, c) in &app.components {
            let variables = ComponentVariables::resolve(&app, id, resolver)
                .with_context(|| format!("component `{id}`: resolving its [component.{id}.variables]"))?;
            let mut entries = Vec::new();
            for e in &c.allowed_outbound_hosts {
                entries
                    .push(resolver.render(e).with_context(|| format!("component `{id}`: resolving allowed_outbound_hosts entry {e:?}"))?);
            }
            let allow = AllowList::parse(&entries, &ids)
                .with_context(|| format!("component `{id}`: invalid allowed_outbound_hosts {entries:?}"))?;
            if !c.source.exists() {
                anyhow::bail!(
                    "component `{id}`: source {} does not exist (manifest says {:?}); build it first with `spindapr build` or `up --build`",
                    c.source.display(),
                    c.source_as_written
                );
            }
            let component =
                engine::load_component(&engine, &c.source, opts.cache_dir.as_deref()).with_context(|| format!("component `{id}`"))?;
            for name in unoffered::link_unoffered(&mut linker, &engine, &component, &mut stubbed)? {
                tracing::warn!(
                    "component `{id}` imports {name}, which this host does not offer: the app starts, and each of its calls returns an error"
                );
            }
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("component `{id}` imports something this host does not offer"))?;
            let pre = ProxyPre::new(pre).map_err(anyhow::Error::from).with_context(|| {
                format!("component `{id}` does not export wasi:http/incoming-handler; build it with spin-sdk's #[http_component]")
            })?;
            // Later sources override earlier ones: one value per name.
            let mut merged: indexmap::IndexMap<String, String> = opts.base_env.iter().cloned().collect();
            merged.extend(c.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged.extend(opts.env.iter().cloned());
            let env: Vec<(String, String)> = merged.into_iter().collect();
            let chaining_trigger = app.http_triggers.iter().position(|t| matches!(&t.target, TriggerTarget::Component(cid) if cid == id));
            components.insert(
                id.clone(),
                Arc::new(LoadedComponent {
                    id: Arc::from(id.as_str()),
                    pre,
                    variables: Arc::new(variables),
                    allow,
                    env,
                    chaining_trigger,
                    active: spindapr_metrics::host().instances_active.with_label_values(&[id.as_str()]),
                    duration: spindapr_metrics::host().request_duration.with_label_values(&[id.as_str()]),
                    warm: std::sync::Mutex::new(None),
                    warm_ready: tokio::sync::Notify::new(),
                    refilling: std::sync::atomic::AtomicBool::new(false),
                    log_files: match &opts.log_dir {
                        Some(dir) => (
                            Some(state::LogFile::open(dir, id, "stdout", opts.truncate_logs)?),
                            Some(state::LogFile::open(dir, id, "stderr", opts.truncate_logs)?),
                        ),
                        None => (None, None),
                    },
                    follow: opts.follow.follows(id),
                    kv_allowed: Arc::new(c.key_value_stores.iter().cloned().collect()),
                    sql_allowed: Arc::new(c.sqlite_databases.iter().cloned().collect()),
                }),
            );
        }
        let outbound = Outbound::new(&opts.outbound);
        Ok(Self { app, engine, router, components, outbound, local: std::sync::OnceLock::new(), opts })
    }

    /// The app being served.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Hands requests for these authorities to in-process services from now on (after
    /// the allow-list admitted them). Set once; a second call is refused.
    pub fn set_local_services(&self, services: LocalServices) -> Result<(), LocalServices> {
        self.local.set(services)
    }

    /// Lines describing each route, as `spin up` prints them.
    pub fn route_listing(&self, base_url: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (route, trigger) in self.router.routes() {
            let t = &self.app.http_triggers[trigger];
            let key = match &t.target {
                TriggerTarget::Component(c) => c.clone(),
                TriggerTarget::Static(_) => t.id.clone(),
            };
            out.push(format!("  {key}: {base_url}{route}"));
            if let TriggerTarget::Component(c) = &t.target
                && let Some(d) = self.app.components.get(c).map(|c| &c.description)
                && !d.is_empty()
            {
                out.push(format!("    {d}"));
            }
        }
        out
    }

    /// Answers one inbound request.
    pub async fn handle(self: &Arc<Self>, mut req: Request<WasiBody>, client_addr: SocketAddr) -> Response<WasiBody> {
        let clock = profile::Clock::start();
        // A Host naming a chaining target must not leak into the component (as Spin).
        if req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).is_some_and(|h| chaining_target(host_only(h)).is_some()) {
            req.headers_mut().remove(http::header::HOST);
        }
        // A Host that is not an authority cannot become the component's URL: the client's
        // error, not the app's (an empty Host is allowed and read as localhost).
        if req.headers().get(http::header::HOST).is_some_and(|h| !h.is_empty() && http::uri::Authority::try_from(h.as_bytes()).is_err()) {
            tracing::debug!("rejecting a request whose Host header is not a valid authority");
            return status(StatusCode::BAD_REQUEST);
        }
        let path = req.uri().path().to_string();
        tracing::debug!("Processing request on path '{path}'");
        if let Some(wk) = path.strip_prefix(WELL_KNOWN_PREFIX) {
            return match wk {
                "health" => Response::new(full_body("OK")),
                "info" => self.app_info(),
                _ => status(StatusCode::NOT_FOUND),
            };
        }
        match self.router.route(&path) {
            Some(m) => self.handle_trigger(req, m, client_addr, clock).await,
            None => status(StatusCode::NOT_FOUND),
        }
    }

    async fn handle_trigger(
        self: &Arc<Self>,
        req: Request<WasiBody>,
        m: RouteMatch,
        client_addr: SocketAddr,
        mut clock: profile::Clock,
    ) -> Response<WasiBody> {
        match &self.app.http_triggers[m.trigger].target {
            TriggerTarget::Static(sr) => static_response(sr),
            TriggerTarget::Component(id) => {
                let Some(component) = self.components.get(id).cloned() else {
                    tracing::error!("unknown component {id}");
                    return status(StatusCode::INTERNAL_SERVER_ERROR);
                };
                let active = Active::start(&component);
                // With tracing on: the request's server span, parent of its outbound calls.
                let span = trace::from_headers(trace::Kind::Server, req.headers(), || {
                    (
                        format!("{} {}", req.method(), m.based_route),
                        vec![
                            trace::kv("http.request.method", req.method().to_string()),
                            trace::kv("http.route", m.based_route.clone()),
                            trace::kv("spin.component", component.id.to_string()),
                        ],
                    )
                })
                .map(Arc::new);
                let resp = match self.execute(component.clone(), req, &m, client_addr, span.clone(), &mut clock).await {
                    Ok(resp) => resp,
                    Err(e) => {
                        tracing::error!(component = %component.id, "Error processing request: {e:#}");
                        status(StatusCode::INTERNAL_SERVER_ERROR)
                    }
                };
                drop(active);
                if let Some(span) = &span {
                    span.set("http.response.status_code", i64::from(resp.status().as_u16()));
                    span.end(resp.status().is_server_error().then(|| resp.status().to_string()));
                }
                spindapr_metrics::host().request_count.with_label_values(&[&*component.id, resp.status().as_str()]).inc();
                clock.finish(profile::Phase::Finish);
                resp
            }
        }
    }

    /// Runs the request in a fresh instance of `component`.
    async fn execute(
        self: &Arc<Self>,
        component: Arc<LoadedComponent>,
        req: Request<WasiBody>,
        m: &RouteMatch,
        client_addr: SocketAddr,
        span: Option<Arc<trace::SpanCx>>,
        clock: &mut profile::Clock,
    ) -> anyhow::Result<Response<WasiBody>> {
        let (mut parts, body) = req.into_parts();
        // The caller's W3C trace context, handed on to the instance's outbound requests.
        let trace = TraceContext::from_headers(&parts.headers);
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or("localhost")
            .to_string();
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let scheme = parts.uri.scheme_str().unwrap_or("http").to_string();
        let pairs = headers::spin_headers(&scheme, &host, &path_and_query, m, client_addr);
        headers::apply(&mut parts.headers, pairs);
        parts.uri = http::Uri::builder()
            .scheme(scheme.as_str())
            .authority(host.as_str())
            .path_and_query(path_and_query.as_str())
            .build()
            .context("the request's Host and path do not form a valid URL")?;
        let req = Request::from_parts(parts, body);
        clock.lap(profile::Phase::Prepare);

        // The instance made ahead while idle, else a new one now. One being made right now
        // is waited for, briefly: a second one on the same core would cost more.
        let mut warm = component.take_warm();
        if warm.is_none() {
            let made = component.warm_ready.notified();
            tokio::pin!(made);
            made.as_mut().enable();
            if component.refilling.load(std::sync::atomic::Ordering::Acquire) {
                let _ = tokio::time::timeout(Duration::from_millis(2), made).await;
                warm = component.take_warm();
            }
        }
        let (mut store, proxy) = match warm {
            Some(w) => w,
            None => {
                let store = self.new_store(&component);
                clock.lap(profile::Phase::Store);
                match self.instantiate(&component, store).await {
                    Ok(ready) => ready,
                    // The pool may be full of other components' waiting instances: free
                    // them and try once more.
                    Err(e) => {
                        let freed = self.components.values().filter_map(|c| c.take_warm()).count();
                        if freed == 0 {
                            return Err(e);
                        }
                        tracing::debug!(component = %component.id, freed, "instantiation failed; retrying after freeing the instances made ahead: {e:#}");
                        let store = self.new_store(&component);
                        self.instantiate(&component, store).await?
                    }
                }
            }
        };
        store.data_mut().hooks.trace = trace;
        store.data_mut().hooks.span = span;
        clock.lap(profile::Phase::Instantiate);
        let wasi_req = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let out = store.data_mut().http().new_response_outparam(tx)?;
        clock.lap(profile::Phase::Resources);

        let timeout = self.opts.request_timeout;
        let id = component.id.clone();
        let task = tokio::spawn(async move {
            let call = proxy.wasi_http_incoming_handler().call_handle(&mut store, wasi_req, out);
            match timeout {
                Some(t) => match tokio::time::timeout(t, call).await {
                    Ok(r) => r.map_err(|e| anyhow::anyhow!(e)),
                    Err(_) => Err(anyhow::anyhow!("the request exceeded the {t:?} request timeout; the instance was stopped")),
                },
                None => call.await.map_err(|e| anyhow::anyhow!(e)),
            }
        });

        let answer = rx.await;
        clock.lap(profile::Phase::Guest);
        self.refill(&component);
        match answer {
            Ok(Ok(resp)) => {
                // The body may still be streaming from the guest: watch the task to its end.
                tokio::spawn(async move {
                    match task.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(component = %id, "guest failed after sending its response head: {e:#}")
                        }
                        Err(e) => tracing::error!(component = %id, "guest task panicked: {e}"),
                    }
                });
                Ok(resp)
            }
            Ok(Err(code)) => {
                let _ = task.await;
                anyhow::bail!("the guest answered with error code {code:?}")
            }
            Err(_) => match task.await {
                Ok(Ok(())) => anyhow::bail!("the guest returned without setting a response"),
                Ok(Err(e)) => Err(e.context("guest invocation failed")),
                Err(e) => anyhow::bail!("guest task panicked: {e}"),
            },
        }
    }

    /// A fresh store for one instance of `component`.
    fn new_store(self: &Arc<Self>, component: &Arc<LoadedComponent>) -> Store<HostState> {
        let mut limits = StoreLimitsBuilder::new();
        if let Some(max) = self.opts.max_instance_memory {
            limits = limits.memory_size(max);
        }
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestLog::new(component.id.clone(), "stdout", component.log_files.0.clone(), component.follow))
            .stderr(GuestLog::new(component.id.clone(), "stderr", component.log_files.1.clone(), component.follow))
            .envs(&component.env)
            .build();
        let data = HostState {
            wasi,
            table: wasmtime::component::ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks { runtime: self.clone(), component: component.clone(), trace: None, span: None },
            limits: limits.build(),
            variables: component.variables.clone(),
            kv: crate::key_value::KvInstance::new(component.kv_allowed.clone(), self.opts.key_value.clone()),
            sql: crate::sqlite::SqlInstance::new(component.sql_allowed.clone(), self.opts.sqlite.clone()),
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limits);
        // Yield to the executor every epoch tick so a busy guest cannot starve others.
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    async fn instantiate(&self, component: &LoadedComponent, mut store: Store<HostState>) -> anyhow::Result<(Store<HostState>, Proxy)> {
        let proxy =
            component.pre.instantiate_async(&mut store).await.map_err(anyhow::Error::from).context("instantiating the component")?;
        Ok((store, proxy))
    }

    /// Makes the next instance of `component` in the background, if none is waiting:
    /// the instantiation is done while the host would otherwise idle between requests.
    fn refill(self: &Arc<Self>, component: &Arc<LoadedComponent>) {
        use std::sync::atomic::Ordering;
        if component.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let (me, c) = (self.clone(), component.clone());
        tokio::spawn(async move {
            // Let the response that triggered this go out first.
            tokio::task::yield_now().await;
            if c.warm.lock().is_ok_and(|w| w.is_none()) {
                let store = me.new_store(&c);
                // Bounded, so a stuck start function cannot hold the refill forever.
                match tokio::time::timeout(Duration::from_secs(30), me.instantiate(&c, store)).await {
                    Ok(Ok(ready)) => {
                        if let Ok(mut w) = c.warm.lock() {
                            *w = Some(ready);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(component = %c.id, "making an instance ahead failed (the next request makes its own): {e:#}")
                    }
                    Err(_) => tracing::warn!(component = %c.id, "making an instance ahead took over 30 s; abandoned"),
                }
            }
            c.refilling.store(false, Ordering::Release);
            c.warm_ready.notify_waiters();
        });
    }

    /// Every outgoing request of a guest: allow-list, then in-process or network.
    async fn outbound_request(
        self: &Arc<Self>,
        from: &LoadedComponent,
        mut req: Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<Response<WasiBody>, Error> {
        let scheme = req.uri().scheme_str().unwrap_or("https").to_string();
        let host = req.uri().host().unwrap_or("").to_string();
        let is_self = host.is_empty() || host == "self.alt";
        if is_self {
            if !from.allow.allows_self() {
                deny(&from.id, &scheme, "self");
                return Err(Error::HttpRequestDenied);
            }
            // A request to the app itself: routed exactly as an inbound request.
            strip_authority(&mut req);
            let me = self.clone();
            return Ok(Box::pin(me.handle(req, SocketAddr::from(([127, 0, 0, 1], 0)))).await);
        }
        let port = req.uri().port_u16();
        if !from.allow.allows(&scheme, &host, port) {
            let authority = req.uri().authority().map(|a| a.as_str().to_string()).unwrap_or(host.clone());
            deny(&from.id, &scheme, &authority);
            return Err(Error::HttpRequestDenied);
        }
        if let Some(target) = chaining_target(&host) {
            let Some(trigger) = self.components.get(target).and_then(|c| c.chaining_trigger) else {
                tracing::warn!(component = %from.id, "service chaining to `{target}`: no such component with an HTTP trigger in this app");
                return Err(Error::DestinationNotFound);
            };
            let path = req.uri().path().to_string();
            strip_authority(&mut req);
            req.headers_mut().remove(http::header::HOST);
            let me = self.clone();
            let m = RouteMatch::synthetic(trigger, &path);
            return Ok(Box::pin(me.handle_trigger(req, m, SocketAddr::from(([0, 0, 0, 0], 0)), crate::profile::Clock::start())).await);
        }
        if let Some(service) = self.local.get().and_then(|l| l.find(&scheme, &host, port)) {
            // The embedded sidecar: the same request it would read from a socket, without one.
            tracing::debug!(target: "spindapr::in_process", "[{}] {} {} served in-process", from.id, req.method(), req.uri().path());
            if !req.headers().contains_key(http::header::HOST)
                && let Some(a) = req.uri().authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(http::header::HOST, a);
            }
            strip_authority(&mut req);
            return Ok(service.call(req).await);
        }
        // Some servers reject a Host header on h2; hyper sets it from the URI anyway.
        req.headers_mut().remove(http::header::HOST);
        self.outbound.send(req, options).await
    }

    fn app_info(&self) -> Response<WasiBody> {
        let mut info = serde_json::Map::new();
        info.insert("name".into(), self.app.name.clone().into());
        if !self.app.version.is_empty() {
            info.insert("version".into(), self.app.version.clone().into());
        }
        let body = serde_json::to_vec_pretty(&info).unwrap_or_default();
        let mut resp = Response::new(full_body(body));
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        resp
    }
}

/// Spin's start-up checks of the labels components list: each key-value store and SQLite
/// database must be defined (`default` always is), and each `--follow` id must exist.
fn check_labels(app: &App, opts: &RuntimeOptions) -> anyhow::Result<()> {
    for (id, c) in &app.components {
        for label in &c.key_value_stores {
            anyhow::ensure!(
                opts.key_value.is_defined(label),
                "unknown key_value_stores label {label:?} for component {id:?}: define it as [key_value_store.{label}] in the runtime config (--runtime-config-file)"
            );
        }
    }
    let missing: Vec<String> = app
        .components
        .iter()
        .flat_map(|(id, c)| {
            c.sqlite_databases.iter().filter(|l| !opts.sqlite.is_defined(l)).map(move |l| format!("- Component {id} uses database '{l}'"))
        })
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "One or more components use SQLite databases which are not defined.\nCheck the spelling, or pass a runtime configuration file that defines these databases ([sqlite_database.<label>]).\nDetails:\n{}",
            missing.join("\n")
        );
    }
    if let FollowComponents::Named(names) = &opts.follow {
        let mut unknown: Vec<&String> = names.iter().filter(|n| !app.components.contains_key(*n)).collect();
        if !unknown.is_empty() {
            unknown.sort();
            let list = |v: Vec<&String>| v.iter().map(|s| format!("    {s}")).collect::<Vec<_>>().join("\n");
            anyhow::bail!(
                "The following component(s) specified in --follow do not exist in the application:\n{}\nThe following components exist:\n{}",
                list(unknown),
                list(app.components.keys().collect())
            );
        }
    }
    Ok(())
}

fn deny(component: &str, scheme: &str, authority: &str) {
    let pattern = format!("{scheme}://{authority}");
    if authority == "self" {
        tracing::warn!(
            component,
            "A component tried to make an HTTP request to its own app but it does not have permission. To allow this request, add 'allowed_outbound_hosts = [\"{pattern}\"]' to the manifest component section."
        );
    } else {
        tracing::warn!(
            component,
            "A component tried to make an outbound network connection to disallowed destination '{pattern}'. To allow this request, add 'allowed_outbound_hosts = [\"{pattern}\"]' to the manifest component section."
        );
    }
}

/// The per-instance wasi:http hook: every outgoing request of a guest passes here.
struct OutboundHooks {
    runtime: Arc<HttpRuntime>,
    component: Arc<LoadedComponent>,
    trace: Option<TraceContext>,
    /// The request's span when tracing is on; each outbound call gets a child.
    span: Option<Arc<trace::SpanCx>>,
}

/// The W3C trace context of the request an instance serves (`traceparent` and
/// `tracestate`), injected into each outbound request the guest did not give its own, as
/// Spin's outbound HTTP does — so a trace continues through the sidecar with no guest code.
#[derive(Clone)]
struct TraceContext {
    traceparent: http::HeaderValue,
    tracestate: Option<http::HeaderValue>,
}

impl TraceContext {
    fn from_headers(h: &http::HeaderMap) -> Option<Self> {
        let traceparent = h.get("traceparent").filter(|v| !v.is_empty())?.clone();
        Some(Self { traceparent, tracestate: h.get("tracestate").cloned() })
    }

    fn inject(&self, h: &mut http::HeaderMap) {
        if h.contains_key("traceparent") {
            return;
        }
        h.insert("traceparent", self.traceparent.clone());
        if let Some(ts) = &self.tracestate
            && !h.contains_key("tracestate")
        {
            h.insert("tracestate", ts.clone());
        }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let runtime = self.runtime.clone();
        let component = self.component.clone();
        let mut request = request;
        let client = self.span.as_ref().and_then(|s| {
            s.child(
                format!("{}", request.method()),
                trace::Kind::Client,
                vec![trace::kv("http.request.method", request.method().to_string()), trace::kv("url.full", request.uri().to_string())],
            )
        });
        match (&client, &self.trace) {
            // A guest's own trace header is kept.
            (Some(c), _) if !request.headers().contains_key("traceparent") => c.inject(request.headers_mut()),
            (None, Some(t)) => t.inject(request.headers_mut()),
            _ => {}
        }
        Box::new(async move {
            let resp = runtime.outbound_request(&component, request, options).await;
            if let Some(c) = client {
                match &resp {
                    Ok(r) => {
                        c.set("http.response.status_code", i64::from(r.status().as_u16()));
                        c.end(r.status().is_server_error().then(|| r.status().to_string()));
                    }
                    Err(e) => c.end(Some(format!("{e:?}"))),
                }
            }
            let resp = resp?;
            Ok((resp, Box::new(async { Ok(()) }) as IoFuture))
        })
    }
}

/// Turns an absolute-form URI into origin form (path and query only).
fn strip_authority(req: &mut Request<WasiBody>) {
    let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = http::Uri::from(pq);
}

fn host_only(host_header: &str) -> &str {
    host_header.rsplit_once(':').map_or(host_header, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host_header })
}

fn status(code: StatusCode) -> Response<WasiBody> {
    let mut r = Response::new(empty_body());
    *r.status_mut() = code;
    r
}

fn static_response(sr: &StaticResponse) -> Response<WasiBody> {
    let mut b = Response::builder().status(sr.status_code.unwrap_or(200));
    for (k, v) in &sr.headers {
        b = b.header(k, v);
    }
    let body = sr.body.clone().map(full_body).unwrap_or_else(empty_body);
    b.body(body).unwrap_or_else(|e| {
        tracing::error!("invalid static_response: {e}");
        status(StatusCode::INTERNAL_SERVER_ERROR)
    })
}

/// Serves `runtime` on `listener` until `shutdown` resolves, then drains open
/// connections for up to `grace`.
pub async fn serve(runtime: Arc<HttpRuntime>, listener: TcpListener, shutdown: impl Future<Output = ()>, grace: Duration) {
    let service_for = move |client: SocketAddr| {
        let rt = runtime.clone();
        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let rt = rt.clone();
            async move {
                let req = req.map(|b| b.map_err(Error::from).boxed_unsync());
                Ok::<_, std::convert::Infallible>(rt.handle(req, client).await)
            }
        })
    };
    spindapr_server::serve(listener, service_for, shutdown, grace).await;
    tracing::info!("stopped serving the app");
}
