//! What a run did.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::model::TxStrategy;

/// What happened to one change in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeOutcome {
    /// Applied in this run.
    Applied,
    /// Already applied before; nothing done.
    Skipped,
    /// Found in place after an interrupted run, by the target's marker or the
    /// change's already-in-place check, and recorded APPLIED without running
    /// it again.
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
///
/// The ids are shared with the runner (`Arc<str>`): a report of 10,000
/// skipped changes copies no string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ChangeReport {
    /// Stage id.
    pub stage: Arc<str>,
    /// Change id.
    pub change_id: Arc<str>,
    /// Strategy it ran (or would run) with.
    pub strategy: TxStrategy,
    /// What happened.
    pub outcome: ChangeOutcome,
    /// Time spent on it in this run.
    pub duration: Duration,
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
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
#[non_exhaustive]
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
            .map(|c| &*c.change_id)
            .collect()
    }
}

/// A duration for people: `0 ms`, `286 ms`, `1.2 s`, `14 s`, `2 min 5 s`
/// (not `285.805578ms` or `0.0ns`).
///
/// ```
/// use std::time::Duration;
/// use flamingock_core::report::format_duration;
///
/// assert_eq!(format_duration(Duration::from_nanos(285_805_578)), "286 ms");
/// assert_eq!(format_duration(Duration::from_millis(1_234)), "1.2 s");
/// ```
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 999.5 {
        format!("{} ms", ms.round() as u64)
    } else if ms < 9_950.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms < 59_500.0 {
        format!("{} s", (ms / 1000.0).round() as u64)
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    }
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.totals();
        writeln!(
            f,
            "run {}: {} applied, {} skipped, {} failed, {} blocked, {} not run in {}",
            self.run_id,
            t.applied,
            t.skipped,
            t.failed,
            t.blocked,
            t.not_run,
            format_duration(self.duration)
        )?;
        for c in &self.changes {
            let what = match &c.outcome {
                ChangeOutcome::Applied => "applied".to_owned(),
                ChangeOutcome::Skipped => "skipped".to_owned(),
                ChangeOutcome::RecoveredApplied => {
                    "applied (found in place: marker or check)".to_owned()
                }
                ChangeOutcome::Failed { error, rolled_back } => {
                    format!("FAILED (rolled back: {rolled_back}): {error}")
                }
                ChangeOutcome::Blocked { reason } => format!("BLOCKED: {reason}"),
                ChangeOutcome::NotRun => "not run".to_owned(),
            };
            // Only work done in this run has a duration worth showing.
            let took = match c.outcome {
                ChangeOutcome::Applied
                | ChangeOutcome::RecoveredApplied
                | ChangeOutcome::Failed { .. } => format_duration(c.duration),
                _ => String::new(),
            };
            writeln!(
                f,
                "  {:<12} {:<32} {:<24} {:>9}  {}",
                c.stage,
                c.change_id,
                c.strategy.as_str(),
                took,
                what
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_rounded_and_skipped_changes_show_none() {
        assert_eq!(format_duration(Duration::from_nanos(285_805_578)), "286 ms");
        assert_eq!(format_duration(Duration::ZERO), "0 ms");
        assert_eq!(format_duration(Duration::from_millis(1_234)), "1.2 s");
        assert_eq!(format_duration(Duration::from_millis(14_400)), "14 s");
        assert_eq!(
            format_duration(Duration::from_millis(999_600)),
            "16 min 40 s"
        );
        let line = |id: &str, outcome, ms| ChangeReport {
            stage: "s".into(),
            change_id: id.into(),
            strategy: TxStrategy::SharedTx,
            outcome,
            duration: Duration::from_micros(ms),
        };
        let report = RunReport {
            run_id: "r".into(),
            changes: vec![
                line("done", ChangeOutcome::Applied, 285_805),
                line("old", ChangeOutcome::Skipped, 0),
            ],
            duration: Duration::from_micros(1_234_567),
            ..RunReport::default()
        };
        let text = report.to_string();
        assert!(text.contains("not run in 1.2 s"), "{text}");
        assert!(text.contains("286 ms  applied"), "{text}");
        let skipped = text.lines().find(|l| l.contains("old")).unwrap_or_default();
        assert!(!skipped.contains("ns") && !skipped.contains("ms"), "{text}");
        assert!(!text.contains("0.0ns") && !text.contains("285.8"), "{text}");
    }
}
