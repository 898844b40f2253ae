//! The endpoints of a teacher as one pool: which endpoint the next request goes to, and each
//! endpoint's health.
//!
//! A request takes a [`Lease`] on the least-loaded available endpoint (fewest requests in
//! flight for its concurrency; ties to the first listed), waiting while none is available. An
//! endpoint is unavailable while it is full, while it is paused because its server asked for a
//! pause (429, `Retry-After`, an exhausted `x-ratelimit-*` limit), or while it is benched:
//! after [`BenchPolicy::after_failures`] failures in a row (5xx, connection errors, timeouts)
//! it gets no requests for a backoff that doubles each time it is benched again. When the
//! bench ends, one request probes it; success makes it healthy, failure benches it again.
//! The pool knows nothing of HTTP: endpoints are indices.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// When an endpoint is benched and for how long.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BenchPolicy {
    /// Failures in a row that bench an endpoint.
    pub(super) after_failures: u32,
    /// The first bench; doubles each time the endpoint is benched again without a success.
    pub(super) first: Duration,
    /// The longest bench.
    pub(super) longest: Duration,
}

/// What the pool knows about one endpoint.
#[derive(Debug, Default)]
struct Health {
    in_flight: usize,
    failures_in_a_row: u32,
    times_benched: u32,
    benched_until: Option<Instant>,
    /// A probe of a benched endpoint is in flight.
    probing: bool,
    paused_until: Option<Instant>,
}

#[derive(Debug)]
struct State {
    health: Vec<Health>,
    stopped: bool,
}

/// The pool; see the module docs.
#[derive(Debug)]
pub(super) struct Pool {
    concurrency: Vec<usize>,
    bench: BenchPolicy,
    state: Mutex<State>,
    changed: Condvar,
}

/// One request's hold on an endpoint; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct Lease<'a> {
    pool: &'a Pool,
    index: usize,
    probe: bool,
}

impl Pool {
    /// A pool of endpoints with these concurrencies (each at least 1).
    pub(super) fn new(concurrency: Vec<usize>, bench: BenchPolicy) -> Self {
        let health = concurrency.iter().map(|_| Health::default()).collect();
        Pool {
            concurrency: concurrency.into_iter().map(|c| c.max(1)).collect(),
            bench,
            state: Mutex::new(State {
                health,
                stopped: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for an endpoint and leases it: the least-loaded available one, other than `avoid`
    /// when another is available. `None` once the pool is stopped.
    pub(super) fn acquire(&self, avoid: Option<usize>) -> Option<Lease<'_>> {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return None;
            }
            let now = Instant::now();
            let available: Vec<(usize, bool)> = (0..self.concurrency.len())
                .filter_map(|i| self.availability(&state.health[i], i, now).map(|p| (i, p)))
                .collect();
            let load = |i: usize| state.health[i].in_flight as f64 / self.concurrency[i] as f64;
            let least_loaded = |candidates: Vec<(usize, bool)>| {
                // The first minimum: ties go to the endpoint listed first.
                candidates
                    .into_iter()
                    .min_by(|(a, _), (b, _)| load(*a).total_cmp(&load(*b)))
            };
            let others: Vec<(usize, bool)> = available
                .iter()
                .copied()
                .filter(|(i, _)| Some(*i) != avoid)
                .collect();
            // The endpoint to avoid (where this request just failed) is used again only when
            // no other endpoint is up: a busy healthy endpoint is worth waiting for.
            let others_up = (0..self.concurrency.len())
                .any(|i| Some(i) != avoid && is_up(&state.health[i], now));
            let choice = match least_loaded(others) {
                Some(choice) => Some(choice),
                None if others_up => None,
                None => least_loaded(available),
            };
            if let Some((index, probe)) = choice {
                let health = &mut state.health[index];
                health.in_flight += 1;
                health.probing |= probe;
                return Some(Lease {
                    pool: self,
                    index,
                    probe,
                });
            }
            let wake = state
                .health
                .iter()
                .flat_map(|h| [h.benched_until, h.paused_until])
                .flatten()
                .filter(|&t| t > now)
                .min();
            // Woken by a finished request, or when the next bench or pause ends.
            let timeout = wake.map_or(Duration::from_secs(1), |t| t - now);
            state = self
                .changed
                .wait_timeout(state, timeout)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Whether endpoint `index` can take a request now, and if so whether it is a probe.
    fn availability(&self, health: &Health, index: usize, now: Instant) -> Option<bool> {
        if health.in_flight >= self.concurrency[index] {
            return None;
        }
        if health.paused_until.is_some_and(|t| t > now) {
            return None;
        }
        match health.benched_until {
            None => Some(false),
            Some(until) if until > now => None,
            // The bench is over: one probe at a time, alone on the endpoint.
            Some(_) => (!health.probing && health.in_flight == 0).then_some(true),
        }
    }

    /// Whether an endpoint other than `index` is up (neither benched nor paused).
    pub(super) fn has_other_up(&self, index: usize) -> bool {
        let state = self.lock();
        let now = Instant::now();
        (0..self.concurrency.len()).any(|i| i != index && is_up(&state.health[i], now))
    }

    /// Sends no request to endpoint `index` for `pause` (its server asked for it).
    pub(super) fn pause(&self, index: usize, pause: Duration) {
        let mut state = self.lock();
        let until = Instant::now() + pause;
        let health = &mut state.health[index];
        health.paused_until = Some(health.paused_until.map_or(until, |t| t.max(until)));
    }

    /// Makes every waiting and later [`Pool::acquire`] return `None`.
    pub(super) fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    /// Undoes [`Pool::stop`] (a new batch starts).
    pub(super) fn restart(&self) {
        self.lock().stopped = false;
    }

    /// Whether endpoint `index` is benched now (for tests and summaries).
    #[cfg(test)]
    fn is_benched(&self, index: usize) -> bool {
        self.lock().health[index]
            .benched_until
            .is_some_and(|t| t > Instant::now())
    }

    /// The bench after being benched `times` times in a row.
    fn bench_length(&self, times: u32) -> Duration {
        let factor = 2u32.saturating_pow(times.saturating_sub(1));
        self.bench
            .first
            .saturating_mul(factor)
            .min(self.bench.longest)
    }
}

/// Whether an endpoint is neither benched (nor waiting for a probe to succeed) nor paused; it
/// may be full.
fn is_up(health: &Health, now: Instant) -> bool {
    health.benched_until.is_none() && health.paused_until.is_none_or(|t| t <= now)
}

impl Lease<'_> {
    /// The leased endpoint.
    pub(super) fn index(&self) -> usize {
        self.index
    }

    /// The request succeeded: the endpoint is healthy.
    pub(super) fn succeeded(self) {
        let mut state = self.pool.lock();
        let health = &mut state.health[self.index];
        health.failures_in_a_row = 0;
        health.times_benched = 0;
        health.benched_until = None;
    }

    /// The request failed in a way that says the endpoint is unwell; a failed probe, or the
    /// last of `after_failures` in a row, benches it.
    pub(super) fn failed(self) {
        let mut state = self.pool.lock();
        let health = &mut state.health[self.index];
        health.failures_in_a_row += 1;
        if self.probe || health.failures_in_a_row >= self.pool.bench.after_failures {
            health.failures_in_a_row = 0;
            health.times_benched += 1;
            let length = self.pool.bench_length(health.times_benched);
            health.benched_until = Some(Instant::now() + length);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        let health = &mut state.health[self.index];
        health.in_flight -= 1;
        if self.probe {
            health.probing = false;
        }
        drop(state);
        self.pool.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(concurrency: Vec<usize>) -> Pool {
        Pool::new(
            concurrency,
            BenchPolicy {
                after_failures: 2,
                first: Duration::from_millis(50),
                longest: Duration::from_millis(400),
            },
        )
    }

    #[test]
    fn requests_go_to_the_least_loaded_endpoint() {
        let pool = pool(vec![1, 3]);
        let a = pool.acquire(None).unwrap();
        let b = pool.acquire(None).unwrap();
        let c = pool.acquire(None).unwrap();
        // Loads 0/1 vs 0/3 → 0; then 1/1 vs 0/3 → 1; then full vs 1/3 → 1.
        assert_eq!((a.index(), b.index(), c.index()), (0, 1, 1));
        drop(a);
        // 0/1 vs 2/3: endpoint 0 again, unless told to avoid it.
        assert_eq!(pool.acquire(Some(0)).unwrap().index(), 1);
        assert_eq!(pool.acquire(None).unwrap().index(), 0);
    }

    #[test]
    fn failing_endpoints_are_benched_then_probed() {
        let pool = pool(vec![2, 2]);
        for _ in 0..2 {
            let lease = pool.acquire(Some(1)).unwrap();
            assert_eq!(lease.index(), 0);
            lease.failed();
        }
        assert!(pool.is_benched(0));
        // While benched, even a request avoiding endpoint 1 goes there.
        assert_eq!(pool.acquire(Some(1)).unwrap().index(), 1);
        std::thread::sleep(Duration::from_millis(60));
        // The bench is over: one probe, and no second request alongside it.
        let probe = pool.acquire(Some(1)).unwrap();
        assert_eq!((probe.index(), probe.probe), (0, true));
        assert_eq!(pool.acquire(Some(1)).unwrap().index(), 1);
        probe.failed();
        assert!(pool.is_benched(0), "a failed probe benches again");
        assert_eq!(pool.bench_length(2), Duration::from_millis(100));
        assert_eq!(pool.bench_length(9), Duration::from_millis(400));
    }

    #[test]
    fn a_stopped_pool_releases_its_waiters() {
        let pool = pool(vec![1]);
        let held = pool.acquire(None).unwrap();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| pool.acquire(None).is_none());
            pool.stop();
            assert!(waiter.join().unwrap());
        });
        drop(held);
    }
}
