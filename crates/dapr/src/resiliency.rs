//! Resiliency as daprd applies it (pkg/resiliency): every loaded `Resiliency` merged into
//! one set of named policies (a later document wins a name), resolved per target —
//! components inbound/outbound and apps — with daprd's `Default…Policy` fallbacks when
//! a component or app has no target entry (and none when it has one), and run as retry
//! around circuit breaker around a per-attempt timeout. Retries follow dapr/kit: a
//! constant wait, or an exponential one that ignores `duration` (500 ms × 1.5, ±50 %
//! jitter, capped at `maxInterval`, giving up after 15 minutes); `matching` status codes
//! filter which app answers are retried.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::breaker::{Breaker, BreakerError, BreakerSpec, Breakers};
use crate::go_compat;
use crate::resources::{CircuitBreakerSpec, ComponentTargets, ResiliencySpec, RetrySpec, TargetPolicies};

/// dapr/kit's exponential back-off never retries past this much elapsed time.
const MAX_ELAPSED: Duration = Duration::from_secs(15 * 60);

/// How the wait between retries grows.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// The same wait before every retry.
    Constant(Duration),
    /// 500 ms growing ×1.5 per retry up to `max_interval`, each wait randomised ±50 %.
    Exponential {
        /// The cap on the un-randomised wait.
        max_interval: Duration,
    },
}

/// A retry policy, parsed as dapr/kit's `retry.DecodeConfig` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// How long to wait before each retry.
    pub backoff: Backoff,
    /// Retries after the first attempt; -1: no limit.
    pub max_retries: i64,
    /// `matching.httpStatusCodes`: the status codes retried (`None`: all).
    pub http_codes: Option<Vec<(u32, u32)>>,
    /// `matching.gRPCStatusCodes`: the gRPC codes retried (`None`: all).
    pub grpc_codes: Option<Vec<(u32, u32)>>,
}

impl RetryPolicy {
    /// Parses a `policies.retries` entry; the error says which field is wrong.
    pub(crate) fn parse(r: &RetrySpec) -> Result<Self, String> {
        let dur = |field: &str, v: &Option<String>, default: Duration| -> Result<Duration, String> {
            match v.as_deref() {
                None => Ok(default),
                Some(s) => go_compat::resiliency_duration(s).map_err(|e| format!("{field}: {e}")),
            }
        };
        // daprd lower-cases the policy name before comparing it.
        let backoff = match r.policy.as_deref().map(str::to_lowercase).as_deref() {
            None | Some("") | Some("constant") => Backoff::Constant(dur("duration", &r.duration, Duration::from_secs(5))?),
            // `duration` is accepted and ignored, as dapr/kit's NewBackOff does.
            Some("exponential") => Backoff::Exponential { max_interval: dur("maxInterval", &r.max_interval, Duration::from_secs(60))? },
            Some(other) => return Err(format!("policy: unknown retry policy {other:?}: use constant or exponential")),
        };
        let (mut http_codes, mut grpc_codes) = (None, None);
        if let Some(m) = &r.matching {
            if let Some(s) = &m.http_status_codes {
                http_codes = go_compat::parse_status_code_ranges(s, 100, 599).map_err(|e| format!("matching.httpStatusCodes: {e}"))?;
            }
            if let Some(s) = &m.grpc_status_codes {
                grpc_codes = go_compat::parse_status_code_ranges(s, 0, 16).map_err(|e| format!("matching.gRPCStatusCodes: {e}"))?;
            }
        }
        Ok(Self { backoff, max_retries: r.max_retries.unwrap_or(-1), http_codes, grpc_codes })
    }

    /// The wait before retry number `n` (0-based).
    pub fn delay(&self, n: u32) -> Duration {
        match &self.backoff {
            Backoff::Constant(d) => *d,
            Backoff::Exponential { max_interval } => {
                let base = (0.5 * 1.5f64.powi(n.min(1000) as i32)).min(max_interval.as_secs_f64());
                // cenkalti/backoff: uniformly in [base − 50 %, base + 50 %].
                let jitter = 0.5 + rand_unit();
                Duration::from_secs_f64(base * jitter)
            }
        }
    }

    /// Whether a failure carrying `code` (an HTTP status, or a gRPC code 0–16) is retried.
    pub fn retries_code(&self, code: u32) -> bool {
        match code {
            0..=16 => go_compat::code_matches(self.grpc_codes.as_deref(), code),
            _ => go_compat::code_matches(self.http_codes.as_deref(), code),
        }
    }
}

/// A number in [0, 1) for back-off jitter; not for anything needing good randomness.
fn rand_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Which way a component call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From the component to the app (pub/sub delivery).
    Inbound,
    /// From the sidecar to the component (publish, state).
    Outbound,
}

/// A component's building block, for the `Default<Kind>Component…Policy` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pubsub,
    Statestore,
}

/// The policies one call runs under.
#[derive(Clone, Default)]
pub struct Policy {
    pub retry: Option<RetryPolicy>,
    /// Per attempt.
    pub timeout: Option<Duration>,
    pub breaker: Option<Arc<Breaker>>,
}

/// How one attempt failed.
#[derive(Debug)]
pub enum Failure<E> {
    /// A status code (daprd's `CodeError`): retried only if `matching` allows it.
    Code(u32, E),
    /// Any other error: always retried while the policy allows.
    Other(E),
    /// Never retried.
    Permanent(E),
}

/// Why a call failed in the end.
#[derive(Debug)]
pub enum RunError<E> {
    /// The last attempt's own error.
    Failed(E),
    /// The last attempt outlived the timeout.
    TimedOut,
    /// The circuit breaker refused the attempt.
    Breaker(BreakerError),
}

impl<E: std::fmt::Display> std::fmt::Display for RunError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(e) => e.fmt(f),
            // Go's context.DeadlineExceeded, as daprd's callers see it.
            Self::TimedOut => f.write_str("context deadline exceeded"),
            Self::Breaker(e) => e.fmt(f),
        }
    }
}

impl Policy {
    /// Runs `op` (given the attempt number) under this policy.
    pub async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, RunError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Failure<E>>>,
    {
        let started = tokio::time::Instant::now();
        let mut n: u32 = 0;
        loop {
            let ticket = match &self.breaker {
                Some(b) => Some(b.allow().map_err(RunError::Breaker)?),
                None => None,
            };
            let res = match self.timeout {
                Some(t) => tokio::time::timeout(t, op(n)).await.map_err(|_| ()),
                None => Ok(op(n).await),
            };
            if let (Some(b), Some(t)) = (&self.breaker, ticket) {
                b.record(t, matches!(res, Ok(Ok(_))));
            }
            let (retryable, err) = match res {
                Ok(Ok(v)) => return Ok(v),
                Err(()) => (true, RunError::TimedOut),
                Ok(Err(Failure::Code(code, e))) => (self.retry.as_ref().is_some_and(|p| p.retries_code(code)), RunError::Failed(e)),
                Ok(Err(Failure::Other(e))) => (true, RunError::Failed(e)),
                Ok(Err(Failure::Permanent(e))) => (false, RunError::Failed(e)),
            };
            let Some(p) = &self.retry else { return Err(err) };
            if !retryable || !(p.max_retries < 0 || i64::from(n) < p.max_retries) {
                return Err(err);
            }
            let delay = p.delay(n);
            if matches!(p.backoff, Backoff::Exponential { .. }) && started.elapsed() + delay > MAX_ELAPSED {
                return Err(err);
            }
            tokio::time::sleep(delay).await;
            n = n.saturating_add(1);
        }
    }
}

/// Parses a `policies.circuitBreakers` entry.
pub(crate) fn breaker_spec(c: &CircuitBreakerSpec) -> Result<BreakerSpec, String> {
    let dur = |field: &str, v: &Option<String>| -> Result<Duration, String> {
        v.as_deref().map_or(Ok(Duration::ZERO), |s| go_compat::resiliency_duration(s).map_err(|e| format!("{field}: {e}")))
    };
    BreakerSpec::new(c.max_requests.unwrap_or(0), dur("interval", &c.interval)?, dur("timeout", &c.timeout)?, c.trip.as_deref())
        .map_err(|e| format!("trip: {e}"))
}

/// Resolved component policies: by direction, then by component name.
type Resolved = std::collections::HashMap<(Kind, Dir), std::collections::HashMap<String, Arc<Policy>>>;

/// Every loaded policy, merged, and the breakers made from them.
#[derive(Default)]
pub struct Resiliency {
    timeouts: BTreeMap<String, Duration>,
    retries: BTreeMap<String, RetryPolicy>,
    breakers: BTreeMap<String, BreakerSpec>,
    apps: BTreeMap<String, TargetPolicies>,
    components: BTreeMap<String, ComponentTargets>,
    /// One breaker per component, shared by both directions (daprd's instance cache).
    component_breakers: Breakers,
    /// One per app method, bounded as daprd's endpoint cache.
    app_breakers: Breakers,
    /// Each component's resolved policies, made on first use (every publish and state
    /// call asks).
    resolved: std::sync::RwLock<Resolved>,
}

impl Resiliency {
    /// Merges `specs` in load order (a later one wins a name; a component's target entry
    /// is replaced whole). The specs were checked when loaded.
    pub fn build(specs: &[ResiliencySpec]) -> Result<Self, String> {
        let mut me = Self {
            component_breakers: Breakers::unbounded(),
            app_breakers: Breakers::bounded(crate::breaker::APP_BREAKER_CAPACITY),
            ..Self::default()
        };
        for s in specs {
            for (name, t) in &s.policies.timeouts {
                me.timeouts.insert(name.clone(), go_compat::resiliency_duration(t).map_err(|e| format!("timeouts.{name}: {e}"))?);
            }
            for (name, r) in &s.policies.retries {
                me.retries.insert(name.clone(), RetryPolicy::parse(r).map_err(|e| format!("retries.{name}.{e}"))?);
            }
            for (name, c) in &s.policies.circuit_breakers {
                me.breakers.insert(name.clone(), breaker_spec(c).map_err(|e| format!("circuitBreakers.{name}.{e}"))?);
            }
            me.apps.extend(s.targets.apps.iter().map(|(k, v)| (k.clone(), v.clone())));
            me.components.extend(s.targets.components.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(me)
    }

    /// The policy for calls between the sidecar and component `name` in direction `dir`.
    pub fn component(&self, name: &str, kind: Kind, dir: Dir) -> Arc<Policy> {
        // Looked up by the borrowed name: no allocation on the publish and state paths.
        if let Some(p) = self.resolved.read().ok().and_then(|m| m.get(&(kind, dir)).and_then(|n| n.get(name)).cloned()) {
            return p;
        }
        let p = Arc::new(self.resolve_component(name, kind, dir));
        if let Ok(mut m) = self.resolved.write() {
            m.entry((kind, dir)).or_default().insert(name.to_string(), p.clone());
        }
        p
    }

    fn resolve_component(&self, name: &str, kind: Kind, dir: Dir) -> Policy {
        if let Some(t) = self.components.get(name) {
            let side = match dir {
                Dir::Inbound => t.inbound.as_ref(),
                Dir::Outbound => t.outbound.as_ref(),
            };
            return self.named(side, |cb, spec| self.component_breakers.get(name, &format!("{cb}-{name}"), spec));
        }
        let (k, d) = (
            match kind {
                Kind::Pubsub => "Pubsub",
                Kind::Statestore => "Statestore",
            },
            match dir {
                Dir::Inbound => "Inbound",
                Dir::Outbound => "Outbound",
            },
        );
        let names = |x: &str| {
            [
                format!("Default{k}Component{d}{x}Policy"),
                format!("DefaultComponent{d}{x}Policy"),
                format!("DefaultComponent{x}Policy"),
                format!("Default{x}Policy"),
            ]
        };
        self.defaults(&names("Retry"), &names("Timeout"), &names("CircuitBreaker"), |cb, spec| {
            self.component_breakers.get(name, &format!("{cb}-{name}"), spec)
        })
    }

    /// The policy for invoking `method` on app `id` (the id as the caller wrote it).
    pub fn app(&self, id: &str, method: &str) -> Policy {
        let key = format!("{id}:{method}");
        let breaker = |_cb: &str, spec: &BreakerSpec| self.app_breakers.get(&key, method, spec);
        if let Some(t) = self.apps.get(id) {
            return self.named(Some(t), breaker);
        }
        let names = |x: &str| [format!("DefaultApp{x}Policy"), format!("Default{x}Policy")];
        self.defaults(&names("Retry"), &names("Timeout"), &names("CircuitBreaker"), breaker)
    }

    fn named(&self, t: Option<&TargetPolicies>, breaker: impl Fn(&str, &BreakerSpec) -> Arc<Breaker>) -> Policy {
        let Some(t) = t else { return Policy::default() };
        Policy {
            retry: t.retry.as_ref().and_then(|n| self.retries.get(n)).cloned(),
            timeout: t.timeout.as_ref().and_then(|n| self.timeouts.get(n)).copied().filter(|d| !d.is_zero()),
            breaker: t.circuit_breaker.as_ref().and_then(|n| self.breakers.get(n).map(|s| breaker(n, s))),
        }
    }

    fn defaults(
        &self,
        retry: &[String],
        timeout: &[String],
        cb: &[String],
        breaker: impl Fn(&str, &BreakerSpec) -> Arc<Breaker>,
    ) -> Policy {
        Policy {
            retry: retry.iter().find_map(|n| self.retries.get(n)).cloned(),
            timeout: timeout.iter().find_map(|n| self.timeouts.get(n)).copied().filter(|d| !d.is_zero()),
            breaker: cb.iter().find_map(|n| self.breakers.get(n).map(|s| breaker(n, s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::MatchingSpec;

    fn retry(policy: &str, duration: Option<&str>, max_interval: Option<&str>, max_retries: Option<i64>) -> RetrySpec {
        RetrySpec {
            policy: Some(policy.into()),
            duration: duration.map(Into::into),
            max_interval: max_interval.map(Into::into),
            max_retries,
            matching: None,
        }
    }

    #[test]
    fn exponential_ignores_duration_and_jitters_around_500ms_times_1_5() {
        // dapr/kit's NewBackOff: InitialInterval 500 ms whatever `duration` says.
        let p = RetryPolicy::parse(&retry("Exponential", Some("10s"), Some("2s"), Some(3))).unwrap();
        for _ in 0..200 {
            let (d0, d2, d9) = (p.delay(0).as_secs_f64(), p.delay(2).as_secs_f64(), p.delay(9).as_secs_f64());
            assert!((0.25..=0.75).contains(&d0), "{d0}");
            assert!((0.5625..=1.6875).contains(&d2), "{d2}");
            assert!((1.0..=3.0).contains(&d9), "capped at maxInterval before the jitter: {d9}");
        }
        let c = RetryPolicy::parse(&retry("constant", Some("250"), None, None)).unwrap();
        assert_eq!(c.delay(7), Duration::from_millis(250), "a bare number is milliseconds");
        assert_eq!(c.max_retries, -1);
        assert!(RetryPolicy::parse(&retry("linear", None, None, None)).is_err());
    }

    #[test]
    fn matching_filters_status_codes_only() {
        let mut r = retry("constant", Some("1ms"), None, Some(2));
        r.matching = Some(MatchingSpec { http_status_codes: Some("500-502,429".into()), grpc_status_codes: None });
        let p = RetryPolicy::parse(&r).unwrap();
        assert!(p.retries_code(500) && p.retries_code(502) && p.retries_code(429));
        assert!(!p.retries_code(503) && !p.retries_code(404));
        r.matching = Some(MatchingSpec { http_status_codes: Some("500, 429".into()), grpc_status_codes: None });
        assert!(RetryPolicy::parse(&r).is_err(), "no trimming, as daprd");
    }

    #[tokio::test(start_paused = true)]
    async fn runs_retry_around_breaker_around_timeout() {
        let p = Policy {
            retry: Some(RetryPolicy::parse(&retry("constant", Some("10ms"), None, Some(4))).unwrap()),
            timeout: Some(Duration::from_millis(50)),
            breaker: None,
        };
        // A code outside `matching`'s default (all) is retried: 5 attempts.
        let mut n = 0;
        let r: Result<(), _> = p
            .run(|_| {
                n += 1;
                async { Err(Failure::Code(503, "boom")) }
            })
            .await;
        assert_eq!((n, r.unwrap_err().to_string()), (5, "boom".to_string()));
        // A slow attempt times out and is retried.
        let r = p
            .run(|i| async move {
                if i == 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok::<_, Failure<&str>>(i)
            })
            .await;
        assert_eq!(r.unwrap(), 1);
        // Permanent failures stop at once.
        let mut n = 0;
        let _ = p
            .run(|_| {
                n += 1;
                async { Err::<(), _>(Failure::Permanent("no")) }
            })
            .await;
        assert_eq!(n, 1);
        // An open breaker refuses without running the attempt, and ends the retries.
        let spec = BreakerSpec::new(1, Duration::ZERO, Duration::from_secs(60), Some("consecutiveFailures >= 2")).unwrap();
        let p = Policy { breaker: Some(Arc::new(Breaker::new("cb".into(), &spec))), ..p };
        let mut n = 0;
        let r: Result<(), _> = p
            .run(|_| {
                n += 1;
                async { Err(Failure::Other("down")) }
            })
            .await;
        assert_eq!(n, 2);
        assert_eq!(r.unwrap_err().to_string(), "circuit breaker is open");
    }

    #[test]
    fn a_target_entry_switches_the_defaults_off() {
        let doc: ResiliencySpec = serde_norway::from_str(
            "policies:\n  timeouts:\n    t: 5s\n  retries:\n    DefaultRetryPolicy:\n      policy: constant\n      duration: 10ms\n      maxRetries: 2\n    DefaultAppRetryPolicy:\n      policy: constant\n      duration: 20ms\n      maxRetries: 1\ntargets:\n  components:\n    pubsub:\n      outbound:\n        timeout: t\n",
        )
        .unwrap();
        let r = Resiliency::build(&[doc]).unwrap();
        let inbound = r.component("pubsub", Kind::Pubsub, Dir::Inbound);
        assert!(inbound.retry.is_none() && inbound.timeout.is_none(), "the entry has no inbound: no policy at all");
        assert_eq!(r.component("pubsub", Kind::Pubsub, Dir::Outbound).timeout, Some(Duration::from_secs(5)));
        assert_eq!(r.component("statestore", Kind::Statestore, Dir::Outbound).retry.as_ref().map(|p| p.max_retries), Some(2));
        assert_eq!(r.app("me", "m").retry.map(|p| p.max_retries), Some(1));
    }
}
