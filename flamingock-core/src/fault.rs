//! Fault points for crash tests (feature `testing`): the test-support
//! suites stop a run at a named point (by never resuming it and dropping its
//! future, as a crash would) or make it fail there. Not for production use:
//! without the `testing` feature the runner still passes its points, but
//! nothing can be injected.
//!
//! A point means the same for every execution strategy, stated in terms of
//! the change's effects and its audit entries:
//!
//! | point | the change's effects | the APPLIED entry |
//! |---|---|---|
//! | [`BeforeStart`](FaultPoint::BeforeStart) | none | not written (nor STARTED) |
//! | [`BeforeCommit`](FaultPoint::BeforeCommit) | `apply` returned; in a transaction they are not committed, outside one they are already in place | not written |
//! | [`AfterCommit`](FaultPoint::AfterCommit) | committed (outside a transaction: in place, the context released) | not written, except under the shared-transaction strategy, where it is part of that same commit |
//! | [`AfterApplied`](FaultPoint::AfterApplied) | committed | written |
//!
//! So under the shared-transaction strategy `AfterCommit` and
//! `AfterApplied` are the same moment, and outside a transaction
//! `BeforeCommit` and `AfterCommit` differ only by the release of the
//! context: each strategy has only the moments it has, and a point never
//! means another moment than the table says. For a multi-step change the
//! points are those of the whole change (`BeforeCommit`: after its last
//! step).
#![cfg_attr(not(feature = "testing"), allow(unreachable_pub, dead_code))]

use futures::future::BoxFuture;

use crate::error::BoxError;

/// A point in a change's execution (see the [module](self) for what each
/// means under each strategy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Before anything is written or begun for the change.
    BeforeStart,
    /// After `apply` returned, before the target's commit.
    BeforeCommit,
    /// After the target's commit, before the APPLIED entry (under the
    /// shared strategy: after the commit that wrote it).
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
