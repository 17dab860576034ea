//! Sending again what a store, lock or target may safely send again: one
//! helper every backend uses, so that "transient" means the same everywhere
//! and every retry is bounded.
//!
//! A backend classifies its own errors ([`Transient`]); [`RetryPolicy::run`]
//! does the rest. Only operations whose repetition cannot double an effect
//! belong here: reads, claims that are atomic on the server, writes the
//! server guarantees it did not perform (a deadlock victim, a throttled or
//! conflicting request). An audit append whose connection broke mid-way is
//! *not* one of them: its outcome is unknown, and the runner handles that.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tracing::{debug, warn};

/// What a failed attempt says about sending the same request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transient {
    /// Not transient: the error is returned as it is.
    No,
    /// The connection was found dead (the server restarted, an administrator
    /// ended it, a pooler dropped it) and the operation is idempotent: sent
    /// once more, on a fresh connection, once per call.
    ConnectionLost,
    /// The server declined for now and wrote nothing (deadlock victim,
    /// lock-wait timeout, throttling, transaction conflict): sent again
    /// after a backoff, within the policy's attempts.
    Busy,
}

/// How transient failures are retried: exponential backoff with jitter from
/// `base_delay`, doubling up to `max_delay`, at most `max_attempts` sends
/// for [`Transient::Busy`] answers (a lost connection adds one more send).
///
/// ```
/// use std::time::Duration;
/// use flamingock_core::RetryPolicy;
/// let p = RetryPolicy::default().max_attempts(5).base_delay(Duration::from_millis(10));
/// assert_eq!(p.delay(1), Duration::from_millis(10));
/// assert_eq!(p.delay(3), Duration::from_millis(40));
/// assert_eq!(RetryPolicy::none().max_attempts, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Total sends after busy answers, the first included (default 8).
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
    /// Sets the total number of sends after busy answers (at least 1).
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
    /// No retry after a busy answer (a lost connection is still tried once
    /// more, on a fresh connection).
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
    /// half random), so that conflicting writers spread out.
    pub async fn backoff(&self, attempt: u32) {
        let d = self.delay(attempt);
        let half = d / 2;
        tokio::time::sleep(half + half.mul_f64(rand_unit())).await;
    }

    /// Runs `op`, sending it again as `classify` says its errors allow:
    /// once more after [`Transient::ConnectionLost`], with backoff after
    /// [`Transient::Busy`] until `max_attempts`. `what` names the operation
    /// in the logs.
    ///
    /// ```
    /// use flamingock_core::retry::{RetryPolicy, Transient};
    /// # async fn demo() {
    /// let mut left = 2;
    /// let r: Result<&str, String> = RetryPolicy::default()
    ///     .run("claim the fence", |_e: &String| Transient::Busy, || {
    ///         left -= 1;
    ///         let answer = if left > 0 { Err("deadlock".to_owned()) } else { Ok("done") };
    ///         async move { answer }
    ///     })
    ///     .await;
    /// assert_eq!(r, Ok("done"));
    /// # }
    /// ```
    pub async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        classify: impl Fn(&E) -> Transient,
        mut op: F,
    ) -> Result<T, E>
    where
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut busy = 0u32;
        let mut reconnected = false;
        loop {
            let e = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match classify(&e) {
                Transient::ConnectionLost if !reconnected => {
                    reconnected = true;
                    warn!(error = %e, operation = what, "connection lost; sending again on a fresh connection");
                }
                Transient::Busy if busy + 1 < self.max_attempts => {
                    busy += 1;
                    debug!(error = %e, operation = what, attempt = busy, "the server declined for now; backing off");
                    self.backoff(busy).await;
                }
                _ => return Err(e),
            }
        }
    }
}

/// A number in [0, 1) from a fresh UUID: no extra dependency for jitter.
fn rand_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn backoff_is_exponential_and_bounded() {
        let p = RetryPolicy::default()
            .base_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(50));
        assert_eq!(p.delay(1), Duration::from_millis(10));
        assert_eq!(p.delay(2), Duration::from_millis(20));
        assert_eq!(p.delay(4), Duration::from_millis(50));
        assert_eq!(p.delay(200), Duration::from_millis(50));
    }

    async fn sends(policy: RetryPolicy, kinds: &[Transient]) -> (usize, Result<(), String>) {
        let n = Cell::new(0usize);
        let r = policy
            .base_delay(Duration::from_millis(1))
            .run(
                "test",
                |e: &String| kinds[e.parse::<usize>().unwrap_or(0)],
                || {
                    let i = n.get();
                    n.set(i + 1);
                    let r = if i < kinds.len() {
                        Err(i.to_string())
                    } else {
                        Ok(())
                    };
                    async move { r }
                },
            )
            .await;
        (n.get(), r)
    }

    #[tokio::test]
    async fn a_lost_connection_is_sent_again_once() {
        let lost = Transient::ConnectionLost;
        assert_eq!(sends(RetryPolicy::none(), &[lost]).await, (2, Ok(())));
        let (n, r) = sends(RetryPolicy::default(), &[lost, lost]).await;
        assert_eq!((n, r.is_err()), (2, true), "not a second time");
    }

    #[tokio::test]
    async fn busy_answers_are_retried_within_the_attempts() {
        let busy = Transient::Busy;
        let p = RetryPolicy::default().max_attempts(3);
        assert_eq!(sends(p, &[busy, busy]).await, (3, Ok(())));
        let (n, r) = sends(p, &[busy, busy, busy]).await;
        assert_eq!((n, r), (3, Err("2".to_owned())));
        assert_eq!(
            sends(RetryPolicy::none(), &[busy]).await,
            (1, Err("0".to_owned()))
        );
    }

    #[tokio::test]
    async fn other_errors_are_returned_at_once() {
        assert_eq!(
            sends(RetryPolicy::default(), &[Transient::No]).await,
            (1, Err("0".to_owned()))
        );
    }
}
