//! Bounded exponential backoff for DynamoDB's "slow down" answers.
//!
//! The SDK's own retry layer retries some throttling codes a few times;
//! this layer sits on top of it so that throttling and transaction conflicts
//! (including a `TransactionCanceledException` whose reasons are only
//! conflicts or throttling, which the SDK never retries) are retried with a
//! bound the caller configures. Only answers that guarantee nothing was
//! written are retried.

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

/// How throttled or conflicting requests are retried: the core's policy,
/// shared by every backend.
pub use flamingock_core::RetryPolicy;

/// Sends a request built by `op`, retrying per `policy` while DynamoDB
/// answers with a throttling or conflict code.
pub(crate) async fn send<T, E, R, F, Fut>(
    policy: &RetryPolicy,
    what: &'static str,
    op: F,
) -> Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>>,
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    use flamingock_core::retry::Transient;
    policy
        .run(
            what,
            |e: &aws_sdk_dynamodb::error::SdkError<E, R>| {
                if is_retryable_code(e.code()) {
                    Transient::Busy
                } else {
                    Transient::No
                }
            },
            op,
        )
        .await
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
}
