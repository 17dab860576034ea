//! Bounded exponential backoff for DynamoDB's "slow down" answers.
//!
//! The SDK's own retry layer retries some throttling codes a few times;
//! this layer sits on top of it so that throttling and transaction conflicts
//! (including a `TransactionCanceledException` whose reasons are only
//! conflicts or throttling, which the SDK never retries) are retried with a
//! bound the caller configures. Only answers that guarantee nothing was
//! written are retried.

use std::time::Duration;

/// Error codes after which DynamoDB guarantees the request had no effect and
/// invites a retry.
const RETRYABLE_CODES: [&str; 5] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
];

/// Cancellation-reason codes of `TransactionCanceledException` that mean
/// "try again later" rather than "your request is wrong".
const RETRYABLE_REASONS: [&str; 4] = [
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
];

/// Whether a service error code asks for a retry.
pub(crate) fn is_retryable_code(code: Option<&str>) -> bool {
    code.is_some_and(|c| RETRYABLE_CODES.contains(&c))
}

/// Whether a transaction cancelled with these reason codes (in item order,
/// `"None"` for items that passed) may simply be sent again: at least one
/// reason is a conflict or throttling, and none is a condition or validation
/// failure.
pub(crate) fn is_retryable_cancellation<'a>(reasons: impl IntoIterator<Item = &'a str>) -> bool {
    let mut any = false;
    for r in reasons {
        if RETRYABLE_REASONS.contains(&r) {
            any = true;
        } else if r != "None" {
            return false;
        }
    }
    any
}

/// How throttled or conflicting requests are retried: exponential backoff
/// from `base_delay`, doubling up to `max_delay`, at most `max_attempts`
/// sends in all.
///
/// ```
/// use std::time::Duration;
/// use flamingock_dynamodb::RetryPolicy;
/// let p = RetryPolicy::default().max_attempts(5).base_delay(Duration::from_millis(10));
/// assert_eq!(p.delay(1), Duration::from_millis(10));
/// assert_eq!(p.delay(3), Duration::from_millis(40));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Total sends, the first included (default 8).
    pub max_attempts: u32,
    /// Delay before the first retry (default 25 ms).
    pub base_delay: Duration,
    /// Upper bound of one delay (default 2 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(25),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Sets the total number of sends (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
    /// Sets the first delay.
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }
    /// Sets the largest delay.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }
    /// No retries at all.
    pub fn none() -> Self {
        Self::default().max_attempts(1)
    }

    /// The delay after failed attempt number `attempt` (1-based), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Sleeps before retry number `attempt` with "equal jitter" (half fixed,
    /// half random) so that conflicting writers spread out.
    pub(crate) async fn backoff(&self, attempt: u32) {
        let d = self.delay(attempt);
        let half = d / 2;
        let jitter = half.mul_f64(rand_unit());
        tokio::time::sleep(half + jitter).await;
    }
}

/// A number in [0, 1) from a fresh UUID: no extra dependency for jitter.
fn rand_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// Sends a request built by `op`, retrying per `policy` while DynamoDB
/// answers with a throttling or conflict code.
pub(crate) async fn send<T, E, R, F, Fut>(
    policy: &RetryPolicy,
    what: &'static str,
    mut op: F,
) -> Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>>,
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < policy.max_attempts && is_retryable_code(e.code()) => {
                tracing::debug!(operation = what, code = ?e.code(), attempt, "throttled; backing off");
                policy.backoff(attempt).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_throttling_codes() {
        for c in RETRYABLE_CODES {
            assert!(is_retryable_code(Some(c)), "{c}");
        }
        for c in [
            "ConditionalCheckFailedException",
            "ValidationException",
            "ResourceNotFoundException",
            "TransactionCanceledException",
            "AccessDeniedException",
        ] {
            assert!(!is_retryable_code(Some(c)), "{c}");
        }
        assert!(!is_retryable_code(None));
    }

    #[test]
    fn classifies_cancellations() {
        assert!(is_retryable_cancellation([
            "None",
            "TransactionConflict",
            "None"
        ]));
        assert!(is_retryable_cancellation(["ThrottlingError"]));
        assert!(is_retryable_cancellation([
            "ProvisionedThroughputExceeded",
            "None"
        ]));
        // A failed condition is an answer, not a hiccup.
        assert!(!is_retryable_cancellation([
            "TransactionConflict",
            "ConditionalCheckFailed"
        ]));
        assert!(!is_retryable_cancellation(["ValidationError", "None"]));
        assert!(!is_retryable_cancellation(["None", "None"]));
        assert!(!is_retryable_cancellation([]));
    }

    #[test]
    fn backoff_is_exponential_and_bounded() {
        let p = RetryPolicy::default()
            .base_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(100));
        assert_eq!(p.delay(1), Duration::from_millis(10));
        assert_eq!(p.delay(2), Duration::from_millis(20));
        assert_eq!(p.delay(4), Duration::from_millis(80));
        assert_eq!(p.delay(5), Duration::from_millis(100));
        assert_eq!(p.delay(60), Duration::from_millis(100));
        assert_eq!(RetryPolicy::none().max_attempts, 1);
        assert_eq!(RetryPolicy::default().max_attempts(0).max_attempts, 1);
        for _ in 0..100 {
            let u = rand_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
