//! The plain data the other modules share: the states and strategies an
//! audit entry records, a change's recovery strategy and a lock's holder.
//! They depend on nothing else in the crate, so the modules that use them
//! (the audit, changes, locks, errors, reports) do not depend on each other
//! through them. Each is re-exported where it is documented
//! ([`audit`](crate::audit), [`change`](crate::change), [`lock`](crate::lock))
//! and at the crate root.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The state an audit entry records. The declaration order is the tie-break
/// order of the snapshot (DESIGN section 4): on equal `created_at` the later
/// variant wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditState {
    /// Execution began (separate-transaction and non-transactional strategies).
    Started,
    /// The change's effect is in place.
    Applied,
    /// The change failed.
    Failed,
    /// The change's effect was undone (by the database or by its rollback).
    RolledBack,
    /// The change's rollback failed.
    RollbackFailed,
    /// An operator declared the change applied.
    ManualMarkedAsApplied,
    /// An operator declared the change rolled back.
    ManualMarkedAsRolledBack,
}

impl AuditState {
    /// All states, in tie-break order.
    pub const ALL: [AuditState; 7] = [
        AuditState::Started,
        AuditState::Applied,
        AuditState::Failed,
        AuditState::RolledBack,
        AuditState::RollbackFailed,
        AuditState::ManualMarkedAsApplied,
        AuditState::ManualMarkedAsRolledBack,
    ];

    /// The stored name, e.g. `MANUAL_MARKED_AS_APPLIED`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditState::Started => "STARTED",
            AuditState::Applied => "APPLIED",
            AuditState::Failed => "FAILED",
            AuditState::RolledBack => "ROLLED_BACK",
            AuditState::RollbackFailed => "ROLLBACK_FAILED",
            AuditState::ManualMarkedAsApplied => "MANUAL_MARKED_AS_APPLIED",
            AuditState::ManualMarkedAsRolledBack => "MANUAL_MARKED_AS_ROLLED_BACK",
        }
    }

    /// Position in the tie-break order (0 = first).
    pub fn rank(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for AuditState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Returned when a stored state name is not one of [`AuditState::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown audit state '{0}'")]
pub struct UnknownState(pub String);

impl FromStr for AuditState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// How a change was executed (recorded with each entry; the decision table
/// depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxStrategy {
    /// Change and its APPLIED entry commit in one transaction of the audit store's database.
    SharedTx,
    /// The change commits in the target's own transaction; audit written separately.
    SeparateTx,
    /// As [`TxStrategy::SeparateTx`], plus a marker record written inside the target
    /// transaction that lets the next run resolve a crash after commit.
    SeparateTxWithMarker,
    /// No transaction: the effect may be partial on failure.
    NonTransactional,
    /// Written by an operator, not by an execution.
    Manual,
}

impl TxStrategy {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TxStrategy::SharedTx => "SHARED_TX",
            TxStrategy::SeparateTx => "SEPARATE_TX",
            TxStrategy::SeparateTxWithMarker => "SEPARATE_TX_WITH_MARKER",
            TxStrategy::NonTransactional => "NON_TRANSACTIONAL",
            TxStrategy::Manual => "MANUAL",
        }
    }

    /// Whether the database undid a failed change by itself.
    pub fn rolls_back_on_failure(self) -> bool {
        matches!(
            self,
            TxStrategy::SharedTx | TxStrategy::SeparateTx | TxStrategy::SeparateTxWithMarker
        )
    }
}

impl fmt::Display for TxStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for TxStrategy {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            TxStrategy::SharedTx,
            TxStrategy::SeparateTx,
            TxStrategy::SeparateTxWithMarker,
            TxStrategy::NonTransactional,
            TxStrategy::Manual,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// What the runner does with a change whose previous execution ended in an
/// uncertain state (see the decision table in [`decide`](crate::decide)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecoveryStrategy {
    /// Stop and ask an operator (default: safety first).
    #[default]
    ManualIntervention,
    /// Apply again: only for idempotent changes.
    AlwaysRetry,
}

impl RecoveryStrategy {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryStrategy::ManualIntervention => "MANUAL_INTERVENTION",
            RecoveryStrategy::AlwaysRetry => "ALWAYS_RETRY",
        }
    }
}

impl std::str::FromStr for RecoveryStrategy {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "MANUAL_INTERVENTION" => Ok(RecoveryStrategy::ManualIntervention),
            "ALWAYS_RETRY" => Ok(RecoveryStrategy::AlwaysRetry),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

/// The current holder of a lock, as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LockInfo {
    /// Owner id (`service@hostname#uuid`).
    pub owner: String,
    /// Fencing token of the lease.
    pub token: u64,
    /// When the lease ends (store clock where the store has one).
    pub expires_at: DateTime<Utc>,
    /// Whether the lease has already ended, judged by the store.
    pub expired: bool,
}

impl LockInfo {
    /// What a lock backend reports of the holder.
    pub fn new(
        owner: impl Into<String>,
        token: u64,
        expires_at: DateTime<Utc>,
        expired: bool,
    ) -> Self {
        LockInfo {
            owner: owner.into(),
            token,
            expires_at,
            expired,
        }
    }
}
