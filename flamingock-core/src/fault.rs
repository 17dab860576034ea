//! Fault points for crash testing: the test-support suites stop a run at a
//! named point (by never resuming it and dropping its future, as a crash
//! would) or make it fail there. Not for production use.

use futures::future::BoxFuture;

use crate::error::BoxError;

/// A point in a change's execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Before anything is written or begun for the change.
    BeforeStart,
    /// After `apply` returned, before the target's commit.
    BeforeCommit,
    /// After the target's commit, before the APPLIED entry (for the shared
    /// strategy: after the commit that wrote it).
    AfterCommit,
    /// After the APPLIED entry.
    AfterApplied,
}

/// Called at every fault point. Return `Err` to inject a failure there, or a
/// future that never completes to freeze the run so a test can drop it.
pub trait FaultInjector: Send + Sync + 'static {
    /// Called at `point` for `change_id`.
    fn at<'a>(
        &'a self,
        point: FaultPoint,
        change_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BoxError>>;
}
