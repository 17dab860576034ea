//! Deadlines: no store, lock or target operation may make a runner wait
//! longer than its configured limits, whatever a server does.
//!
//! The runner wraps its audit store and lock provider in [`TimedStore`] and
//! [`TimedLock`] at build time, so every call the algorithm makes (the run,
//! the lock protocol, the operations API) is bounded by
//! [`Timeouts::operation`]; target calls are bounded in the execution
//! strategies. A call that passes its deadline is dropped (for SQL drivers
//! that closes the connection, which makes the server roll back what it had
//! open) and surfaces as an `Unresponsive` error naming the store, lock or
//! target, the operation and what to check.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::audit::{AuditEntry, AuditStore, HistoryFilter};
use crate::error::{LockError, StoreError, TargetError};
use crate::lock::{Acquire, Lease, LockInfo, LockProvider};

/// How long a runner waits for things other than the lock itself.
///
/// ```
/// use std::time::Duration;
/// use flamingock_core::Timeouts;
/// let t = Timeouts::default().change(Duration::from_secs(600));
/// assert_eq!(t.operation, Duration::from_secs(30));
/// assert_eq!(t.change, Some(Duration::from_secs(600)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Bound of every single audit store, lock and target operation (read,
    /// write, fence claim, begin, commit, rollback, marker), default 30 s.
    pub operation: Duration,
    /// Bound of one change's `apply` (and of its `rollback`); `None` (the
    /// default) lets a change run as long as it needs, logging every 30 s
    /// that it is still running. A change that passes it fails like any
    /// failure: a transactional change is rolled back, a non-transactional
    /// one is recorded FAILED (and its rollback runs).
    pub change: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            operation: Duration::from_secs(30),
            change: None,
        }
    }
}

impl Timeouts {
    /// Sets the bound of every store, lock and target operation.
    pub fn operation(mut self, d: Duration) -> Self {
        self.operation = d;
        self
    }
    /// Sets the bound of one change's `apply`.
    pub fn change(mut self, d: Duration) -> Self {
        self.change = Some(d);
        self
    }
}

/// Durations in messages read as people write them (`250 ms`, `2.5 s`).
pub(crate) use crate::report::format_duration as human;

pub(crate) fn hint(h: &Option<String>) -> String {
    match h {
        Some(h) => format!("; {h}"),
        None => "; check that the server is reachable and not blocked".to_owned(),
    }
}

/// Runs `fut` under `limit`; `on_timeout` builds the error when it passes.
pub(crate) async fn within<T, E>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
    on_timeout: impl FnOnce() -> E,
) -> Result<T, E> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(on_timeout()),
    }
}

/// An audit store whose every operation is bounded.
pub(crate) struct TimedStore {
    inner: Arc<dyn AuditStore>,
    limit: Duration,
}

impl TimedStore {
    pub(crate) fn wrap(inner: Arc<dyn AuditStore>, limit: Duration) -> Arc<dyn AuditStore> {
        Arc::new(TimedStore { inner, limit })
    }

    async fn call<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        within(self.limit, fut, || StoreError::Unresponsive {
            store: self.inner.describe(),
            operation,
            after: self.limit,
            hint: self.inner.stall_hint(),
        })
        .await
    }
}

#[async_trait]
impl AuditStore for TimedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn store_id(&self) -> &str {
        self.inner.store_id()
    }
    async fn prepare(&self) -> Result<(), StoreError> {
        self.call("prepare", self.inner.prepare()).await
    }
    async fn claim_fence(&self) -> Result<u64, StoreError> {
        self.call("claim the fence", self.inner.claim_fence()).await
    }
    async fn fence(&self) -> Result<u64, StoreError> {
        self.call("read the fence", self.inner.fence()).await
    }
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.call("append an entry", self.inner.append(entry)).await
    }
    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.call("read the snapshot", self.inner.snapshot()).await
    }
    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.call("read the history", self.inner.history(filter))
            .await
    }
    async fn summary(&self) -> Result<Option<crate::summary::AuditSummary>, StoreError> {
        self.call("read the summary", self.inner.summary()).await
    }
    fn default_lock(&self) -> Option<Arc<dyn LockProvider>> {
        self.inner.default_lock()
    }
    fn stall_hint(&self) -> Option<String> {
        self.inner.stall_hint()
    }
}

/// A lock provider whose every operation is bounded.
pub(crate) struct TimedLock {
    inner: Arc<dyn LockProvider>,
    limit: Duration,
}

impl TimedLock {
    pub(crate) fn wrap(inner: Arc<dyn LockProvider>, limit: Duration) -> Arc<dyn LockProvider> {
        Arc::new(TimedLock { inner, limit })
    }

    async fn call<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = Result<T, LockError>>,
    ) -> Result<T, LockError> {
        within(self.limit, fut, || LockError::Unresponsive {
            lock: self.inner.describe(),
            operation,
            after: self.limit,
            hint: self.inner.stall_hint(),
        })
        .await
    }
}

#[async_trait]
impl LockProvider for TimedLock {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError> {
        self.call("acquire", self.inner.try_acquire(owner, lease))
            .await
    }
    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError> {
        self.call("extend the lease", self.inner.extend(owner, token, lease))
            .await
    }
    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError> {
        self.call("release", self.inner.release(owner, token)).await
    }
    async fn inspect(&self) -> Result<Option<LockInfo>, LockError> {
        self.call("inspect", self.inner.inspect()).await
    }
    async fn force_release(&self) -> Result<Option<LockInfo>, LockError> {
        self.call("force release", self.inner.force_release()).await
    }
    fn stall_hint(&self) -> Option<String> {
        self.inner.stall_hint()
    }
}

/// Bounds one target operation.
pub(crate) async fn target_call<T>(
    target: &str,
    operation: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, TargetError>>,
) -> Result<T, TargetError> {
    within(limit, fut, || TargetError::Unresponsive {
        target: target.to_owned(),
        operation,
        after: limit,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_ends_at_its_deadline() {
        let r: Result<(), &str> = within(
            Duration::from_secs(5),
            std::future::pending::<Result<(), &str>>(),
            || "timed out",
        )
        .await;
        assert_eq!(r, Err("timed out"));
    }
}
