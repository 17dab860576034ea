//! What `Flamingock::plan` returns.

use serde::Serialize;

use crate::audit::TxStrategy;

/// What `plan` says would happen to a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PlanAction {
    /// It would run.
    Apply,
    /// It is applied already.
    Skip,
    /// Its previous run left a marker question the runner answers by itself.
    ResolveByMarker,
    /// An operator must resolve it first.
    Block {
        /// Why.
        reason: String,
    },
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PlanItem {
    /// Stage id.
    pub stage: String,
    /// Change id.
    pub change_id: String,
    /// Order.
    pub order: String,
    /// Target system id.
    pub target: String,
    /// Execution strategy.
    pub strategy: TxStrategy,
    /// Why the change is (not) transactional, when its form decided it
    /// ([`ChangeMeta::transactional_reason`](crate::ChangeMeta::transactional_reason)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What would happen.
    pub action: PlanAction,
}
