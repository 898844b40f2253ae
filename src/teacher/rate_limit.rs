//! An endpoint's rate limits: requests per minute and tokens per minute as token buckets, and
//! the pauses a server asks for (`Retry-After`, `x-ratelimit-remaining-*` at 0 until
//! `x-ratelimit-reset-*`).
//!
//! Both buckets work by reservation: a request takes its share now, and when that drives the
//! bucket below zero the caller waits until the refill has paid the debt back. The request
//! bucket holds one request, so requests are spaced evenly at the limit. The token bucket
//! holds one second of tokens; a request reserves an estimate of its prompt and is charged its
//! real usage (prompt and completion) when it ends, so the long-run rate is the limit whatever
//! the estimate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits of one endpoint (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<f64>,
    /// Prompt plus completion tokens per minute.
    pub tokens_per_minute: Option<f64>,
}

/// A token bucket refilled at a constant rate up to its capacity; it may go into debt.
#[derive(Debug)]
struct TokenBucket {
    per_second: f64,
    capacity: f64,
    level: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn new(per_minute: f64, capacity: f64, now: Instant) -> Self {
        TokenBucket {
            per_second: per_minute / 60.0,
            capacity,
            level: capacity,
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.level = (self.level + elapsed * self.per_second).min(self.capacity);
        self.refilled_at = now;
    }

    /// Takes `amount` and returns how long to wait before using it (zero when the bucket
    /// held enough).
    fn reserve(&mut self, amount: f64, now: Instant) -> Duration {
        self.refill(now);
        self.level -= amount;
        if self.level >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.level / self.per_second)
        }
    }

    /// Charges `amount` more (negative: gives back) without waiting.
    fn charge(&mut self, amount: f64, now: Instant) {
        self.refill(now);
        self.level = (self.level - amount).min(self.capacity);
    }
}

/// The buckets of one endpoint.
#[derive(Debug)]
pub(super) struct RateLimiter {
    requests: Option<Mutex<TokenBucket>>,
    tokens: Option<Mutex<TokenBucket>>,
}

/// What [`RateLimiter::admit`] reserved, to be settled with the real usage.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reservation {
    /// Tokens reserved before the request.
    estimated_tokens: f64,
    /// How long to wait before sending.
    pub(super) wait: Duration,
}

impl RateLimiter {
    /// A limiter for `limits`; errors name the bad limit.
    pub(super) fn new(limits: RateLimits) -> Result<Self, String> {
        let now = Instant::now();
        let bucket = |value: Option<f64>, name: &str, capacity: fn(f64) -> f64| match value {
            None => Ok(None),
            Some(v) if v.is_finite() && v > 0.0 => {
                Ok(Some(Mutex::new(TokenBucket::new(v, capacity(v), now))))
            }
            Some(v) => Err(format!("`{name}` must be a positive number, got {v}")),
        };
        Ok(RateLimiter {
            requests: bucket(limits.requests_per_minute, "rpm", |_| 1.0)?,
            tokens: bucket(limits.tokens_per_minute, "tpm", |v| (v / 60.0).max(1.0))?,
        })
    }

    /// Reserves one request and `estimated_tokens`; the caller waits `wait` before sending.
    pub(super) fn admit(&self, estimated_tokens: f64) -> Reservation {
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        if let Some(bucket) = &self.requests {
            wait = wait.max(lock(bucket).reserve(1.0, now));
        }
        if let Some(bucket) = &self.tokens {
            wait = wait.max(lock(bucket).reserve(estimated_tokens, now));
        }
        Reservation {
            estimated_tokens,
            wait,
        }
    }

    /// Charges the request's real token usage against its reservation.
    pub(super) fn settle(&self, reservation: Reservation, used_tokens: f64) {
        if let Some(bucket) = &self.tokens {
            lock(bucket).charge(used_tokens - reservation.estimated_tokens, Instant::now());
        }
    }
}

fn lock(bucket: &Mutex<TokenBucket>) -> std::sync::MutexGuard<'_, TokenBucket> {
    bucket
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The pause a response asks for before the endpoint is called again: `Retry-After` (seconds),
/// and the `x-ratelimit-reset-requests`/`-tokens` time of a limit whose
/// `x-ratelimit-remaining-*` is 0 (OpenAI's headers, also sent by vLLM gateways and LiteLLM).
/// `header` looks a header up by name.
pub(super) fn server_pause(header: impl Fn(&str) -> Option<String>) -> Option<Duration> {
    let retry_after = header("retry-after").and_then(|v| parse_seconds(&v));
    let exhausted = |kind: &str| {
        let remaining = header(&format!("x-ratelimit-remaining-{kind}"))?;
        if remaining.trim().parse::<f64>().ok()? > 0.0 {
            return None;
        }
        header(&format!("x-ratelimit-reset-{kind}")).and_then(|v| parse_reset(&v))
    };
    [retry_after, exhausted("requests"), exhausted("tokens")]
        .into_iter()
        .flatten()
        .max()
}

/// `Retry-After` in seconds (`2`, `1.5`); an HTTP date is not understood (`None`).
fn parse_seconds(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// An `x-ratelimit-reset-*` value: plain seconds (`0.5`) or a duration such as `1s`, `20ms`,
/// `6m0s`, `1h2m3.5s`.
fn parse_reset(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Some(plain) = parse_seconds(value) {
        return Some(plain);
    }
    let mut total = 0.0;
    let mut rest = value;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_bucket_spaces_requests_evenly() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(600.0, 1.0, now);
        let waits: Vec<Duration> = (0..4).map(|_| bucket.reserve(1.0, now)).collect();
        let millis: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, vec![0, 100, 200, 300]);
        // After a quiet second the bucket holds one request again, not ten.
        let later = now + Duration::from_secs(2);
        assert_eq!(bucket.reserve(1.0, later), Duration::ZERO);
        assert_eq!(bucket.reserve(1.0, later).as_millis(), 100);
    }

    #[test]
    fn token_usage_is_charged_after_the_request() {
        let limiter = RateLimiter::new(RateLimits {
            requests_per_minute: None,
            tokens_per_minute: Some(6000.0),
        })
        .unwrap();
        // 100 tokens/s, capacity 100: reserve 10, then use 210 → 110 in debt → 1.1 s.
        let reservation = limiter.admit(10.0);
        assert_eq!(reservation.wait, Duration::ZERO);
        limiter.settle(reservation, 210.0);
        let next = limiter.admit(0.0);
        assert!(
            (1050..=1100).contains(&next.wait.as_millis()),
            "{:?}",
            next.wait
        );
        assert!(RateLimiter::new(RateLimits {
            requests_per_minute: Some(-1.0),
            tokens_per_minute: None,
        })
        .unwrap_err()
        .contains("rpm"));
    }

    #[test]
    fn servers_pauses_are_read_from_their_headers() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            server_pause(headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            server_pause(headers(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1m30s"),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "250ms"),
            ])),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            server_pause(headers(&[
                ("x-ratelimit-remaining-requests", "5"),
                ("x-ratelimit-reset-requests", "10s"),
            ])),
            None
        );
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("soon"), None);
    }
}
