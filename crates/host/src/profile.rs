//! Where a request's time goes inside the host, for the host benchmark: with
//! `SPINDAPR_PROFILE_PHASES=1` each phase of serving a component request adds its
//! nanoseconds to `spindapr_host_phase_nanoseconds_total{phase}` (and the requests to
//! `spindapr_host_phase_requests_total`), so a scrape before and after a load run gives
//! the mean per phase. Off (the default), each checkpoint is one load of a flag.

use std::sync::LazyLock;
use std::time::Instant;

/// The phases, in the order a request passes them.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// Routing, the `spin-*` headers and the component's URL (from the host's entry).
    Prepare,
    /// The WASI context, the per-request state and the wasmtime store.
    Store,
    /// Instantiating the pre-instantiated component in a pooled slot.
    Instantiate,
    /// The wasi:http request and response-outparam resources.
    Resources,
    /// The guest's handler, up to its response head.
    Guest,
    /// Metrics, spans and handing the response to hyper.
    Finish,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Store => "store",
            Phase::Instantiate => "instantiate",
            Phase::Resources => "resources",
            Phase::Guest => "guest",
            Phase::Finish => "finish",
        }
    }
}

struct Counters {
    phase: prometheus::IntCounterVec,
    requests: prometheus::IntCounter,
}

static ON: LazyLock<bool> = LazyLock::new(|| std::env::var("SPINDAPR_PROFILE_PHASES").is_ok_and(|v| v == "1"));

static COUNTERS: LazyLock<Option<Counters>> = LazyLock::new(|| {
    if !*ON {
        return None;
    }
    let phase = prometheus::IntCounterVec::new(
        prometheus::Opts::new("spindapr_host_phase_nanoseconds_total", "Time spent per phase of serving a component request."),
        &["phase"],
    )
    .ok()?;
    let requests = prometheus::IntCounter::new("spindapr_host_phase_requests_total", "Component requests profiled by phase.").ok()?;
    spindapr_metrics::register(Box::new(phase.clone()));
    spindapr_metrics::register(Box::new(requests.clone()));
    Some(Counters { phase, requests })
});

/// A request's clock: each [`Clock::lap`] charges the time since the last to a phase.
pub struct Clock(Option<Instant>);

impl Clock {
    /// Starts timing (a no-op when profiling is off).
    pub fn start() -> Self {
        Self(ON.then(Instant::now))
    }

    /// Charges the time since the last lap to `phase`.
    pub fn lap(&mut self, phase: Phase) {
        if let (Some(t), Some(c)) = (self.0.as_mut(), COUNTERS.as_ref()) {
            let now = Instant::now();
            c.phase.with_label_values(&[phase.name()]).inc_by(now.duration_since(*t).as_nanos() as u64);
            *t = now;
        }
    }

    /// Charges the last phase and counts the request.
    pub fn finish(mut self, phase: Phase) {
        self.lap(phase);
        if let (Some(_), Some(c)) = (self.0, COUNTERS.as_ref()) {
            c.requests.inc();
        }
    }
}
