//! The shared-transaction contract: an audit store that writes an entry
//! inside a transaction of its own database, and the handle a target built
//! from that store keeps to do it.
//!
//! When a target and the audit store are one database, a change's effects
//! and its APPLIED entry commit together (DESIGN section 5, shared
//! transaction), so no crash ever needs an operator. The runner asks for it
//! with [`CommitWith::Audit`](crate::CommitWith::Audit); the target hands its
//! open transaction to [`SharedAudit::append`], which calls the store's one
//! implementation of [`AppendInTransaction`] and reports the outcome the way
//! [`TargetSystem::commit`](crate::TargetSystem::commit) must. The pairing is
//! by type: a target of backend *X* can only hold a `SharedAudit` of *X*'s
//! store, made by that store's `shared_target(..)`.

use std::future::Future;

use crate::audit::{AuditEntry, AuditStore};
use crate::error::{StoreError, TargetError};
use crate::target::TargetCapabilities;

/// An audit store that can write an entry inside a transaction its database
/// runs for a change (the shared-transaction strategy).
///
/// `Transaction` is what the backend's target holds while a change runs: a
/// connection inside `BEGIN … COMMIT` (SQL), a session with a started
/// transaction (MongoDB), or the batch that one request will send at commit
/// (DynamoDB).
///
/// # Contract
///
/// * The entry, the current-state update (only when the entry supersedes it)
///   and the **fence check** go into `tx`, so they commit or roll back with
///   the change's effects. The fence check is atomic with the writes: lock
///   the fence row first (SQL), write under a condition on the fence
///   (MongoDB, DynamoDB).
/// * `Err(StoreError::Fenced { .. })` when a newer epoch than
///   `entry.fencing_token` has been claimed: nothing of the entry was
///   written and the caller rolls `tx` back; the runner stops (its lease is
///   lost). A store whose transaction is one request sent at commit
///   (DynamoDB) only stages the writes here and reports the fence rejection
///   from the commit instead, through its target.
/// * Any other error: the entry could not be written; the caller rolls `tx`
///   back, so nothing of the change is committed either.
/// * It never commits, never rolls back and never retries: the transaction
///   is the caller's.
///
/// The bad-input suite's `fenced_shared_commit_rolls_the_change_back`
/// checks this contract through the backend's shared target: a stale token is
/// refused inside the transaction and the change's effect goes with it.
pub trait AppendInTransaction: AuditStore + Clone {
    /// The open transaction the entry is written in.
    type Transaction: Send;

    /// Writes `entry` with its current-state update and the fence check
    /// inside `tx`. See the trait's contract.
    fn append_in_transaction(
        &self,
        tx: &mut Self::Transaction,
        entry: &AuditEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The audit store a shared target writes its APPLIED entries to, inside the
/// change's transaction. A backend's `shared_target(..)` builds its target
/// with one; the target's
/// [`capabilities`](crate::TargetSystem::capabilities) then name the store
/// ([`SharedAudit::capabilities`]) and its `commit` calls
/// [`SharedAudit::append`] for [`CommitWith::Audit`](crate::CommitWith::Audit).
#[derive(Debug, Clone)]
pub struct SharedAudit<S> {
    store: S,
}

impl<S: AppendInTransaction> SharedAudit<S> {
    /// The handle for `store`.
    pub fn new(store: S) -> Self {
        SharedAudit { store }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// A transactional target's capabilities, sharing this store: the
    /// runner uses the shared-transaction strategy when its audit store has
    /// the same [`store_id`](AuditStore::store_id).
    pub fn capabilities(&self) -> TargetCapabilities {
        TargetCapabilities::transactional().sharing_audit_store(self.store.store_id())
    }

    /// Writes `entry` inside `tx` for the target `target`, and says what
    /// happened the way [`TargetSystem::commit`](crate::TargetSystem::commit)
    /// must report it:
    ///
    /// * a fence rejection is [`TargetError::Audit`] wrapping
    ///   [`StoreError::Fenced`]: the runner stops, its lease is lost;
    /// * any other error is [`TargetError::NotCommitted`]: the transaction
    ///   is rolled back, so the runner records FAILED then ROLLED_BACK.
    ///
    /// On an error the caller rolls `tx` back before returning it.
    pub async fn append(
        &self,
        target: &str,
        tx: &mut S::Transaction,
        entry: &AuditEntry,
    ) -> Result<(), TargetError> {
        self.store
            .append_in_transaction(tx, entry)
            .await
            .map_err(|e| commit_error(target, e))
    }
}

/// The capabilities of a backend's transactional target: sharing `shared`'s
/// store when it was built from one, else keeping markers when `marker`.
pub fn transactional_capabilities<S: AppendInTransaction>(
    shared: Option<&SharedAudit<S>>,
    marker: bool,
) -> TargetCapabilities {
    match shared {
        Some(shared) => shared.capabilities(),
        None if marker => TargetCapabilities::transactional().with_marker(),
        None => TargetCapabilities::transactional(),
    }
}

/// How a failed audit write inside a change's transaction is reported by
/// [`TargetSystem::commit`](crate::TargetSystem::commit): see
/// [`SharedAudit::append`]. For a store that finds the fence rejection only
/// when the transaction is sent (DynamoDB).
pub fn commit_error(target: &str, e: StoreError) -> TargetError {
    match e {
        source @ StoreError::Fenced { .. } => TargetError::Audit {
            target: target.to_owned(),
            source,
        },
        other => TargetError::NotCommitted {
            target: target.to_owned(),
            source: Box::new(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_rejection_stops_and_anything_else_was_not_committed() {
        let fenced = StoreError::Fenced {
            store: "s".into(),
            token: 3,
            fence: 4,
        };
        assert!(matches!(
            commit_error("t", fenced),
            TargetError::Audit {
                source: StoreError::Fenced {
                    token: 3,
                    fence: 4,
                    ..
                },
                ..
            }
        ));
        let other = StoreError::NotReady {
            store: "s".into(),
            detail: "fence row missing".into(),
        };
        assert!(matches!(
            commit_error("t", other),
            TargetError::NotCommitted { .. }
        ));
    }
}
