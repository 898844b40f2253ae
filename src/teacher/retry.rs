//! When and how long to wait before retrying an HTTP request: exponential backoff with full
//! jitter, capped, honouring a server's `Retry-After` (in seconds) when it sends one.

use std::time::Duration;

use rand::Rng;

/// Retry settings of an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    /// Upper bound of the first wait; doubles on every further retry.
    pub initial_backoff: Duration,
    /// Upper bound of any wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Whether an HTTP status is worth retrying: 429 (rate limited), 408 (request timeout) and
/// every 5xx. Other 4xx mean the request itself is wrong and would fail again.
pub fn is_retryable_status(status: u16) -> bool {
    status == 429 || status == 408 || (500..600).contains(&status)
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): uniform in
    /// `[0, min(max_backoff, initial_backoff · 2^(retry-1))]`, or the server's `Retry-After`
    /// (capped at `max_backoff`) when given.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_backoff);
        }
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        let cap = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_the_cap() {
        let policy = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            assert!(policy.delay(1, None) <= Duration::from_millis(100));
            assert!(policy.delay(3, None) <= Duration::from_millis(400));
            assert!(policy.delay(30, None) <= Duration::from_millis(1000));
        }
        let server = Some(Duration::from_secs(60));
        assert_eq!(policy.delay(1, server), Duration::from_millis(1000));
    }

    #[test]
    fn only_rate_limits_timeouts_and_server_errors_are_retried() {
        for status in [429, 408, 500, 502, 503] {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(!is_retryable_status(status), "{status}");
        }
    }
}
