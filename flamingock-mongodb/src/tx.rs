//! Transaction helpers that follow the driver's documented retry rules.

use std::time::Duration;

use mongodb::error::{Error as DriverError, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::ClientSession;
use tracing::debug;

/// Commit attempts when the outcome is unknown (`UnknownTransactionCommitResult`).
const COMMIT_ATTEMPTS: u32 = 5;

/// Commits, retrying while the server says the outcome is unknown: per the
/// driver documentation a commit with that label is safe to retry until it
/// succeeds or fails without the label. A `TransientTransactionError` is
/// returned to the caller, who may run the whole transaction again.
pub(crate) async fn commit(session: &mut ClientSession) -> Result<(), DriverError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e)
                if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && attempt < COMMIT_ATTEMPTS =>
            {
                debug!(attempt, error = %e, "commit outcome unknown; retrying the commit");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Exponential backoff with jitter, 5 ms doubling up to 200 ms.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 5_u64.saturating_mul(1 << attempt.min(6)).min(200);
    let jitter = (uuid::Uuid::new_v4().as_u128() % u128::from(base)) as u64;
    Duration::from_millis(base / 2 + jitter)
}
