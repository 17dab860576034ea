//! What a run did.

use std::time::Duration;

use serde::Serialize;

use crate::audit::TxStrategy;

/// What happened to one change in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeOutcome {
    /// Applied in this run.
    Applied,
    /// Already applied before; nothing done.
    Skipped,
    /// Found already committed by a previous run's marker and recorded APPLIED.
    RecoveredApplied,
    /// Failed in this run.
    Failed {
        /// The error.
        error: String,
        /// Whether its effects were undone (transaction or rollback).
        rolled_back: bool,
    },
    /// Refused: needs an operator.
    Blocked {
        /// Why.
        reason: String,
    },
    /// Not reached (an earlier change failed or its stage was blocked).
    NotRun,
}

/// One change's line in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeReport {
    /// Stage id.
    pub stage: String,
    /// Change id.
    pub change_id: String,
    /// Strategy it ran (or would run) with.
    pub strategy: TxStrategy,
    /// What happened.
    pub outcome: ChangeOutcome,
    /// Time spent on it in this run.
    pub duration: Duration,
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Applied in this run (marker recoveries included).
    pub applied: usize,
    /// Already applied.
    pub skipped: usize,
    /// Failed.
    pub failed: usize,
    /// Blocked.
    pub blocked: usize,
    /// Not reached.
    pub not_run: usize,
}

/// What a run did, change by change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// The run id.
    pub run_id: String,
    /// Whether the lock was taken (false on the fast path).
    pub took_lock: bool,
    /// The epoch this run claimed from the audit store (carried by every
    /// entry it wrote as `fencing_token`), when it took the lock.
    pub fencing_token: Option<u64>,
    /// One line per change, in pipeline order.
    pub changes: Vec<ChangeReport>,
    /// Total time.
    pub duration: Duration,
    /// A failed lock release, reported but not fatal (the lease expires).
    pub release_error: Option<String>,
}

impl RunReport {
    /// Counts per outcome.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in &self.changes {
            match c.outcome {
                ChangeOutcome::Applied | ChangeOutcome::RecoveredApplied => t.applied += 1,
                ChangeOutcome::Skipped => t.skipped += 1,
                ChangeOutcome::Failed { .. } => t.failed += 1,
                ChangeOutcome::Blocked { .. } => t.blocked += 1,
                ChangeOutcome::NotRun => t.not_run += 1,
            }
        }
        t
    }

    /// Ids of the changes applied in this run.
    pub fn applied(&self) -> Vec<&str> {
        self.changes
            .iter()
            .filter(|c| {
                matches!(
                    c.outcome,
                    ChangeOutcome::Applied | ChangeOutcome::RecoveredApplied
                )
            })
            .map(|c| c.change_id.as_str())
            .collect()
    }
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.totals();
        writeln!(
            f,
            "run {}: {} applied, {} skipped, {} failed, {} blocked, {} not run in {:?}",
            self.run_id, t.applied, t.skipped, t.failed, t.blocked, t.not_run, self.duration
        )?;
        for c in &self.changes {
            let what = match &c.outcome {
                ChangeOutcome::Applied => "applied".to_owned(),
                ChangeOutcome::Skipped => "skipped".to_owned(),
                ChangeOutcome::RecoveredApplied => "applied (recovered from marker)".to_owned(),
                ChangeOutcome::Failed { error, rolled_back } => {
                    format!("FAILED (rolled back: {rolled_back}): {error}")
                }
                ChangeOutcome::Blocked { reason } => format!("BLOCKED: {reason}"),
                ChangeOutcome::NotRun => "not run".to_owned(),
            };
            writeln!(
                f,
                "  {:<12} {:<32} {:<24} {:>9.1?}  {}",
                c.stage,
                c.change_id,
                c.strategy.as_str(),
                c.duration,
                what
            )?;
        }
        Ok(())
    }
}
