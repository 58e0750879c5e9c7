//! Resiliency circuit breakers, reproducing daprd v1.18.3 (pkg/resiliency/breaker, a thin
//! wrapper over sony/gobreaker v0.5.0): a `BreakerSpec` is a parsed `policies.circuitBreakers`
//! entry with its `trip` CEL expression compiled; a `Breaker` is one live instance (closed,
//! open or half-open, with gobreaker's counts, generation and expiry) that each attempt asks
//! before it runs (`allow`) and tells afterwards (`record`); `Breakers` is the registry that
//! creates instances on first use, one per component name or per app method, the latter in a
//! bounded least-recently-used cache as daprd's.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// gobreaker's open period when `timeout` is 0.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The trip expression daprd documents when `trip` is absent (gobreaker's default).
const DEFAULT_TRIP: &str = "consecutiveFailures > 5";

/// daprd's `defaultEndpointCacheSize`: how many app-method breakers it keeps per app id.
pub(crate) const APP_BREAKER_CAPACITY: usize = 100;

/// A breaker's state, named as gobreaker prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Requests run; failures are counted and may trip the breaker.
    Closed,
    /// Up to `maxRequests` probe requests run; one failure reopens, enough successes close.
    HalfOpen,
    /// Every request is refused at once until `timeout` has passed.
    Open,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::HalfOpen => "half-open",
            State::Open => "open",
        })
    }
}

/// Why a breaker refused to run an attempt (gobreaker's `ErrOpenState`, `ErrTooManyRequests`).
/// daprd treats both as permanent: the retry loop stops on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BreakerError {
    /// The breaker is open.
    #[error("circuit breaker is open")]
    Open,
    /// The breaker is half-open and its probe requests are all taken.
    #[error("too many requests")]
    TooManyRequests,
}

/// A `policies.circuitBreakers` entry, ready to create breakers from.
#[derive(Debug, Clone)]
pub(crate) struct BreakerSpec {
    /// Probe requests allowed while half-open (0 is stored as gobreaker's 1).
    max_requests: u32,
    /// How often counts are cleared while closed; zero = never.
    interval: Duration,
    /// How long the breaker stays open (0 is stored as gobreaker's 60 s).
    timeout: Duration,
    /// The trip expression's source, for logs.
    trip: String,
    /// The compiled `trip`; `None` for the default, evaluated natively as gobreaker does.
    program: Option<Arc<cel::Program>>,
}

impl BreakerSpec {
    /// Builds a spec with gobreaker's defaults applied; `trip` is compiled here so that a
    /// syntax error refuses the resource at load, as daprd's decoding does.
    pub(crate) fn new(max_requests: u32, interval: Duration, timeout: Duration, trip: Option<&str>) -> Result<Self, String> {
        let (trip, program) = match trip {
            None => (DEFAULT_TRIP.to_owned(), None),
            Some(source) => {
                let program =
                    cel::Program::compile(source).map_err(|e| format!("invalid circuit breaker trip expression {source:?}: {e}"))?;
                (source.to_owned(), Some(Arc::new(program)))
            }
        };
        Ok(Self {
            max_requests: max_requests.max(1),
            interval,
            timeout: if timeout.is_zero() { DEFAULT_TIMEOUT } else { timeout },
            trip,
            program,
        })
    }

    /// gobreaker's `ReadyToTrip`, asked after each failure while closed. As daprd's wrapper:
    /// an evaluation error (an unknown identifier, a type mismatch) or a non-bool result never
    /// trips, since an unusable expression must not cut traffic.
    fn ready_to_trip(&self, counts: &Counts) -> bool {
        let Some(program) = &self.program else {
            return counts.consecutive_failures > 5;
        };
        let mut ctx = cel::Context::default();
        for (name, value) in [
            ("requests", counts.requests),
            ("totalSuccesses", counts.total_successes),
            ("totalFailures", counts.total_failures),
            ("consecutiveSuccesses", counts.consecutive_successes),
            ("consecutiveFailures", counts.consecutive_failures),
        ] {
            // daprd passes the counts as int64, so comparisons with int literals work.
            ctx.add_variable_from_value(name, cel::Value::Int(i64::from(value)));
        }
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(trip)) => trip,
            Ok(other) => {
                tracing::debug!("circuit breaker trip expression {:?} returned {other:?}, not a boolean; not tripping", self.trip);
                false
            }
            Err(e) => {
                tracing::debug!("circuit breaker trip expression {:?} failed: {e}; not tripping", self.trip);
                false
            }
        }
    }
}

/// gobreaker's `Counts`: uint32 counters that wrap as Go's do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    requests: u32,
    total_successes: u32,
    total_failures: u32,
    consecutive_successes: u32,
    consecutive_failures: u32,
}

impl Counts {
    fn on_request(&mut self) {
        self.requests = self.requests.wrapping_add(1);
    }

    fn on_success(&mut self) {
        self.total_successes = self.total_successes.wrapping_add(1);
        self.consecutive_successes = self.consecutive_successes.wrapping_add(1);
        self.consecutive_failures = 0;
    }

    fn on_failure(&mut self) {
        self.total_failures = self.total_failures.wrapping_add(1);
        self.consecutive_failures = self.consecutive_failures.wrapping_add(1);
        self.consecutive_successes = 0;
    }
}

/// The mutable part of a breaker, behind its mutex.
#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped whenever counts are cleared, so late results of older requests are ignored.
    generation: u64,
    counts: Counts,
    /// When closed: the next counts clearing; when open: the switch to half-open. `None` never
    /// comes (closed with no interval, half-open, or a duration too large to add).
    expiry: Option<Instant>,
}

/// One circuit breaker instance.
#[derive(Debug)]
pub(crate) struct Breaker {
    name: String,
    spec: BreakerSpec,
    inner: Mutex<Inner>,
}

/// Permission to run one attempt, from [`Breaker::allow`]. Hand it back to
/// [`Breaker::record`] with the attempt's outcome. Dropped without that (the attempt's future
/// was cancelled, or it panicked) it counts as a failure, as gobreaker's `Execute` counts a
/// panic and as daprd's operations fail on a cancelled context; otherwise a half-open breaker
/// would wait forever for the outcome of its probe.
#[derive(Debug)]
#[must_use = "report the attempt's outcome with Breaker::record"]
pub(crate) struct Ticket<'a> {
    breaker: &'a Breaker,
    generation: u64,
    pending: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.pending {
            self.pending = false;
            self.breaker.after_request(self.generation, false);
        }
    }
}

impl Breaker {
    /// A closed breaker named `name` (the name only appears in logs).
    pub(crate) fn new(name: String, spec: &BreakerSpec) -> Self {
        let now = Instant::now();
        let inner = Inner { state: State::Closed, generation: 0, counts: Counts::default(), expiry: None };
        let breaker = Self { name, spec: spec.clone(), inner: Mutex::new(inner) };
        {
            let mut inner = lock(&breaker.inner);
            breaker.new_generation(&mut inner, now);
        }
        breaker
    }

    /// gobreaker's `beforeRequest`: refuses when open, or when half-open with its
    /// `maxRequests` probes already let through; otherwise counts the request.
    pub(crate) fn allow(&self) -> Result<Ticket<'_>, BreakerError> {
        let mut inner = lock(&self.inner);
        let (state, generation) = self.current_state(&mut inner, Instant::now());
        match state {
            State::Open => Err(BreakerError::Open),
            State::HalfOpen if inner.counts.requests >= self.spec.max_requests => Err(BreakerError::TooManyRequests),
            State::Closed | State::HalfOpen => {
                inner.counts.on_request();
                Ok(Ticket { breaker: self, generation, pending: true })
            }
        }
    }

    /// gobreaker's `afterRequest`: counts the attempt's outcome (daprd: success = the attempt
    /// returned no error), unless the counts were cleared since the ticket was issued.
    pub(crate) fn record(&self, mut ticket: Ticket<'_>, success: bool) {
        debug_assert!(std::ptr::eq(self, ticket.breaker), "ticket recorded on another breaker");
        ticket.pending = false;
        ticket.breaker.after_request(ticket.generation, success);
    }

    /// The current state, moving from open to half-open if the timeout has passed.
    #[cfg(test)]
    pub(crate) fn state(&self) -> State {
        let mut inner = lock(&self.inner);
        self.current_state(&mut inner, Instant::now()).0
    }

    fn after_request(&self, before: u64, success: bool) {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        let (state, generation) = self.current_state(&mut inner, now);
        if generation != before {
            return;
        }
        match (state, success) {
            (State::Closed, true) => inner.counts.on_success(),
            (State::HalfOpen, true) => {
                inner.counts.on_success();
                if inner.counts.consecutive_successes >= self.spec.max_requests {
                    self.set_state(&mut inner, State::Closed, now);
                }
            }
            (State::Closed, false) => {
                inner.counts.on_failure();
                if self.spec.ready_to_trip(&inner.counts) {
                    self.set_state(&mut inner, State::Open, now);
                }
            }
            (State::HalfOpen, false) => self.set_state(&mut inner, State::Open, now),
            // Unreachable in practice: no ticket is issued while open, and a state change
            // bumps the generation.
            (State::Open, _) => {}
        }
    }

    /// gobreaker's `currentState`: applies the expiry due at `now`. gobreaker compares with
    /// `expiry.Before(now)`, so the expiry instant itself still belongs to the old period.
    fn current_state(&self, inner: &mut Inner, now: Instant) -> (State, u64) {
        let expired = matches!(inner.expiry, Some(expiry) if expiry < now);
        match inner.state {
            State::Closed if expired => self.new_generation(inner, now),
            State::Open if expired => self.set_state(inner, State::HalfOpen, now),
            State::Closed | State::Open | State::HalfOpen => {}
        }
        (inner.state, inner.generation)
    }

    fn set_state(&self, inner: &mut Inner, state: State, now: Instant) {
        if inner.state == state {
            return;
        }
        let from = inner.state;
        inner.state = state;
        self.new_generation(inner, now);
        // daprd's OnStateChange; like gobreaker it runs under the lock (it never awaits).
        tracing::info!("Circuit breaker {:?} changed state from {from} to {state}", self.name);
    }

    fn new_generation(&self, inner: &mut Inner, now: Instant) {
        inner.generation = inner.generation.wrapping_add(1);
        inner.counts = Counts::default();
        inner.expiry = match inner.state {
            State::Closed if self.spec.interval.is_zero() => None,
            State::Closed => now.checked_add(self.spec.interval),
            State::Open => now.checked_add(self.spec.timeout),
            State::HalfOpen => None,
        };
    }
}

/// A registry of breakers created on first use.
///
/// daprd keeps one breaker per component name (shared by inbound and outbound, the first
/// policy used creating it) in an unbounded map, and one per method per app id in an LRU cache
/// of `circuitBreakerCacheSize` entries (default [`APP_BREAKER_CAPACITY`]). A bounded registry
/// reproduces that: a lookup marks its entry used, and an insert that goes over capacity drops
/// the least recently used entry, whose state is then lost (a later call starts closed). To
/// bound per app id exactly as daprd does, keep one bounded registry per app id; a single one
/// keyed `appid:method` bounds all apps together.
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    /// `None` = unbounded.
    capacity: Option<usize>,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, Entry>,
    /// A use counter standing in for recency; a linear scan finds the oldest, which is cheap
    /// at daprd's capacities.
    tick: u64,
}

#[derive(Debug)]
struct Entry {
    breaker: Arc<Breaker>,
    used: u64,
}

impl Breakers {
    /// A registry that never drops breakers (components).
    pub(crate) fn unbounded() -> Self {
        Self::default()
    }

    /// A registry keeping at most `capacity` breakers (at least 1), dropping the least
    /// recently used (app methods).
    pub(crate) fn bounded(capacity: usize) -> Self {
        Self { capacity: Some(capacity.max(1)), entries: Mutex::default() }
    }

    /// The breaker for `key`, created as `name` from `spec` if there is none; an existing
    /// breaker is returned whatever `spec` is now, as daprd's caches do.
    pub(crate) fn get(&self, key: &str, name: &str, spec: &BreakerSpec) -> Arc<Breaker> {
        let mut entries = lock(&self.entries);
        entries.tick = entries.tick.wrapping_add(1);
        let tick = entries.tick;
        if let Some(entry) = entries.map.get_mut(key) {
            entry.used = tick;
            return Arc::clone(&entry.breaker);
        }
        let breaker = Arc::new(Breaker::new(name.to_owned(), spec));
        entries.map.insert(key.to_owned(), Entry { breaker: Arc::clone(&breaker), used: tick });
        if let Some(capacity) = self.capacity
            && entries.map.len() > capacity
        {
            let oldest = entries.map.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.map.remove(&oldest);
            }
        }
        breaker
    }
}

/// Locks `m`, ignoring poisoning: the guarded data stays consistent (each update is a few
/// plain assignments), so a panic elsewhere must not disable breakers.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn spec(max_requests: u32, interval: Duration, timeout: Duration, trip: &str) -> BreakerSpec {
        BreakerSpec::new(max_requests, interval, timeout, Some(trip)).unwrap()
    }

    fn breaker(spec: &BreakerSpec) -> Breaker {
        Breaker::new("test".into(), spec)
    }

    fn fail(b: &Breaker) {
        let t = b.allow().unwrap();
        b.record(t, false);
    }

    fn succeed(b: &Breaker) {
        let t = b.allow().unwrap();
        b.record(t, true);
    }

    /// An open breaker with a 2 s timeout and the given `maxRequests`.
    fn opened(max_requests: u32) -> Breaker {
        let b = breaker(&spec(max_requests, Duration::ZERO, Duration::from_secs(2), "consecutiveFailures >= 1"));
        fail(&b);
        assert_eq!(b.state(), State::Open);
        b
    }

    #[tokio::test(start_paused = true)]
    async fn trips_after_consecutive_failures_per_the_expression() {
        let b = breaker(&spec(1, Duration::ZERO, Duration::from_secs(2), "consecutiveFailures >= 2"));
        fail(&b);
        succeed(&b); // resets the consecutive count
        fail(&b);
        assert_eq!(b.state(), State::Closed);
        fail(&b);
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_trips_on_the_sixth_consecutive_failure() {
        let b = breaker(&BreakerSpec::new(0, Duration::ZERO, Duration::ZERO, None).unwrap());
        for _ in 0..5 {
            fail(&b);
        }
        assert_eq!(b.state(), State::Closed);
        fail(&b);
        assert_eq!(b.state(), State::Open);
        // timeout 0 is gobreaker's 60 s.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(MS).await;
        assert_eq!(b.state(), State::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn open_rejects_without_running() {
        let b = opened(1);
        let err = b.allow().unwrap_err();
        assert_eq!(err, BreakerError::Open);
        assert_eq!(err.to_string(), "circuit breaker is open");
        // A refusal is not a request.
        assert_eq!(lock(&b.inner).counts.requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_after_timeout_allows_max_requests_then_too_many() {
        let b = opened(2);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.state(), State::Open, "the expiry instant itself is still open");
        tokio::time::advance(MS).await;
        assert_eq!(b.state(), State::HalfOpen);
        let t1 = b.allow().unwrap();
        let t2 = b.allow().unwrap();
        let err = b.allow().unwrap_err();
        assert_eq!(err, BreakerError::TooManyRequests);
        assert_eq!(err.to_string(), "too many requests");
        b.record(t1, true);
        assert_eq!(b.state(), State::HalfOpen);
        b.record(t2, true);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_in_half_open_closes_with_max_requests_one() {
        let b = opened(1);
        tokio::time::advance(Duration::from_secs(2) + MS).await;
        succeed(&b);
        assert_eq!(b.state(), State::Closed);
        // Counts were cleared on closing: one failure trips again.
        fail(&b);
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_in_half_open_reopens_for_a_new_timeout() {
        let b = opened(3);
        tokio::time::advance(Duration::from_secs(2) + MS).await;
        succeed(&b);
        fail(&b);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.allow().unwrap_err(), BreakerError::Open);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(MS).await;
        assert_eq!(b.state(), State::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_ticket_counts_as_a_failure() {
        let b = opened(1);
        tokio::time::advance(Duration::from_secs(2) + MS).await;
        drop(b.allow().unwrap());
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn interval_clears_counts_while_closed() {
        let b = breaker(&spec(1, Duration::from_secs(10), Duration::from_secs(2), "consecutiveFailures >= 2"));
        fail(&b);
        tokio::time::advance(Duration::from_secs(10) + MS).await;
        fail(&b);
        assert_eq!(b.state(), State::Closed);
        fail(&b);
        assert_eq!(b.state(), State::Open);

        // With no interval, counts survive any wait.
        let b = breaker(&spec(1, Duration::ZERO, Duration::from_secs(2), "consecutiveFailures >= 2"));
        fail(&b);
        tokio::time::advance(Duration::from_secs(3600)).await;
        fail(&b);
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn a_bad_expression_fails_the_spec() {
        assert!(BreakerSpec::new(1, Duration::ZERO, Duration::ZERO, Some("consecutiveFailures >")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_bool_or_failing_expression_never_trips() {
        for trip in ["consecutiveFailures + 1", "unknownCount > 1", "consecutiveFailures > 'a'"] {
            let b = breaker(&spec(1, Duration::ZERO, Duration::ZERO, trip));
            for _ in 0..20 {
                fail(&b);
            }
            assert_eq!(b.state(), State::Closed, "{trip}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn results_from_an_older_generation_are_ignored() {
        let b = breaker(&spec(1, Duration::ZERO, Duration::from_secs(2), "consecutiveFailures >= 1"));
        let stale = b.allow().unwrap();
        fail(&b);
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(Duration::from_secs(2) + MS).await;
        let probe = b.allow().unwrap();
        // Counted, this success would close the breaker (consecutiveSuccesses >= 1).
        b.record(stale, true);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.allow().unwrap_err(), BreakerError::TooManyRequests);
        b.record(probe, true);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_registry_keeps_the_first_breaker_per_key() {
        let breakers = Breakers::unbounded();
        let trips = spec(1, Duration::ZERO, Duration::ZERO, "consecutiveFailures >= 1");
        let never = spec(1, Duration::ZERO, Duration::ZERO, "false");
        let a = breakers.get("statestore", "cb-statestore", &trips);
        let again = breakers.get("statestore", "other", &never);
        assert!(Arc::ptr_eq(&a, &again));
        fail(&again);
        assert_eq!(a.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_registry_drops_the_least_recently_used() {
        let breakers = Breakers::bounded(2);
        let s = spec(1, Duration::ZERO, Duration::ZERO, "consecutiveFailures >= 1");
        let a = breakers.get("app:a", "a", &s);
        let b = breakers.get("app:b", "b", &s);
        assert!(Arc::ptr_eq(&a, &breakers.get("app:a", "a", &s)));
        breakers.get("app:c", "c", &s);
        assert_eq!(lock(&breakers.entries).map.len(), 2);
        assert!(Arc::ptr_eq(&a, &breakers.get("app:a", "a", &s)));
        assert!(!Arc::ptr_eq(&b, &breakers.get("app:b", "b", &s)));
    }
}
