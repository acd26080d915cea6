//! The one owner of retries for object downloads: which faults are transient, how long
//! to back off, and the per-object (or per-part) budget.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Requests allowed for one object or part, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A response that sends no byte for this long is a stall (a transient fault). It
    /// bounds silence, not the length of a healthy transfer.
    pub idle_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// The longest Retry-After we honour; a server asking for more gets this much.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Statuses worth another try: server errors, request timeout, throttling.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429) || (500..600).contains(&status) && !matches!(status, 501 | 505)
}

/// `Retry-After` as delta-seconds (the form S3-compatible stores send), at most
/// `MAX_RETRY_AFTER`. Anything else (a date, garbage, a negative or non-finite number) is
/// ignored rather than trusted.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

impl RetryPolicy {
    /// Exponential backoff with full jitter for the `retry`-th retry (1-based); a server's
    /// Retry-After is a floor.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let ceiling = exp.min(self.max_delay);
        let jittered = ceiling.mul_f64(rand::rng().random_range(0.5..=1.0));
        jittered.max(retry_after.unwrap_or_default())
    }
}

/// The retry budget of one object or part. After each failed attempt, `after_failure`
/// either waits out the backoff (another attempt may go) or returns the final error.
pub struct Budget<'a> {
    policy: &'a RetryPolicy,
    attempts: u32,
}

impl<'a> Budget<'a> {
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Budget { policy, attempts: 1 }
    }

    pub async fn after_failure(&mut self, err: Error, cancel: &CancellationToken) -> Result<()> {
        let n = self.attempts;
        if !matches!(err.kind, ErrorKind::Transient | ErrorKind::Integrity) {
            return Err(Error { attempts: n, ..err });
        }
        if n >= self.policy.max_attempts {
            return Err(Error::exhausted(Error { attempts: n, ..err }, n));
        }
        let delay = self.policy.backoff(n, err.retry_after);
        tokio::select! {
            _ = cancel.cancelled() => return Err(Error::new(ErrorKind::Cancelled, "cancelled")),
            _ = tokio::time::sleep(delay) => {}
        }
        self.attempts += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 412, 416, 501] {
            assert!(!is_transient_status(s), "{s}");
        }
    }

    #[test]
    fn parses_retry_after_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("100000"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-1"), None);
        for huge in ["1e20", "inf", "18446744073709551616"] {
            assert_eq!(parse_retry_after(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("-inf"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            ..Default::default()
        };
        for retry in 1..10 {
            let d = p.backoff(retry, None);
            let ceiling = (Duration::from_millis(100) * 2u32.pow(retry - 1)).min(p.max_delay);
            assert!(d <= ceiling && d >= ceiling / 2, "retry {retry}: {d:?}");
        }
        assert!(p.backoff(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }

    fn transient() -> Error {
        Error::new(ErrorKind::Transient, "503")
    }

    async fn drive(policy: &RetryPolicy, mut outcomes: Vec<Error>) -> (Result<()>, u32) {
        let mut budget = Budget::new(policy);
        let mut calls = 0;
        loop {
            calls += 1;
            let Some(err) = outcomes.pop() else {
                return (Ok(()), calls);
            };
            if let Err(e) = budget.after_failure(err, &CancellationToken::new()).await {
                return (Err(e), calls);
            }
        }
    }

    #[tokio::test]
    async fn retries_transient_faults_until_success() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(1),
            ..Default::default()
        };
        let (out, calls) = drive(&p, vec![transient(), transient()]).await;
        assert!(out.is_ok());
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn exhaustion_keeps_the_last_fault_as_cause() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            ..Default::default()
        };
        let (out, calls) = drive(&p, vec![transient(); 5]).await;
        let err = out.unwrap_err();
        assert_eq!((err.kind, err.attempts, calls), (ErrorKind::Store, 3, 3));
        assert_eq!(err.cause.unwrap().kind, ErrorKind::Transient);
    }

    #[tokio::test]
    async fn permanent_faults_are_not_retried() {
        let p = RetryPolicy::default();
        let (out, calls) = drive(&p, vec![Error::new(ErrorKind::PermissionDenied, "403")]).await;
        let err = out.unwrap_err();
        assert_eq!(
            (err.kind, err.attempts, calls),
            (ErrorKind::PermissionDenied, 1, 1)
        );
    }
}
