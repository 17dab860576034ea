//! The decision table of DESIGN section 4, as one pure function.

use crate::audit::{AuditEntry, AuditState, TxStrategy};
use crate::change::RecoveryStrategy;

/// What the runner does with one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it.
    Apply,
    /// Already applied: nothing to do.
    Skip,
    /// The last execution crashed after a separate transaction may have
    /// committed; the target's marker tells which (then decide again).
    ResolveByMarker,
    /// Refuse: an operator must look first.
    Block {
        /// Why the outcome of the last execution is unknown.
        reason: String,
    },
}

/// Decides what to do with a change from its latest audit entry and the
/// change's recovery strategy.
///
/// | latest state | strategy used | ManualIntervention | AlwaysRetry |
/// |---|---|---|---|
/// | none | – | apply | apply |
/// | APPLIED, MANUAL_MARKED_AS_APPLIED | – | skip | skip |
/// | ROLLED_BACK, MANUAL_MARKED_AS_ROLLED_BACK | – | apply | apply |
/// | FAILED | shared or separate tx | apply | apply |
/// | FAILED | non-transactional | **block** | apply |
/// | STARTED | separate tx with marker | resolve by marker | resolve by marker |
/// | STARTED | any other | **block** | apply |
/// | ROLLBACK_FAILED | any | **block** | apply |
pub fn decide(latest: Option<&AuditEntry>, recovery: RecoveryStrategy) -> Decision {
    let Some(e) = latest else {
        return Decision::Apply;
    };
    let retry = recovery == RecoveryStrategy::AlwaysRetry;
    match e.state {
        AuditState::Applied | AuditState::ManualMarkedAsApplied => Decision::Skip,
        AuditState::RolledBack | AuditState::ManualMarkedAsRolledBack => Decision::Apply,
        AuditState::Failed if e.tx_strategy.rolls_back_on_failure() => Decision::Apply,
        AuditState::Started if e.tx_strategy == TxStrategy::SeparateTxWithMarker => {
            Decision::ResolveByMarker
        }
        AuditState::Failed | AuditState::Started | AuditState::RollbackFailed if retry => {
            Decision::Apply
        }
        AuditState::Failed => Decision::Block {
            reason: "it failed outside a transaction and has no successful rollback, so its effects may be partially in place".into(),
        },
        AuditState::Started => Decision::Block {
            reason: format!(
                "a run ({}) started it and never recorded the outcome (crash or lost connection); with strategy {} its effects may or may not be in place",
                e.run_id, e.tx_strategy
            ),
        },
        AuditState::RollbackFailed => Decision::Block {
            reason: "it failed and its rollback failed too, so its effects may be partially in place".into(),
        },
    }
}

/// The operator command that resolves a blocked change.
pub fn resolution_for(change_id: &str, target: &str) -> String {
    format!(
        "inspect target system '{target}': if the effects of '{change_id}' are fully in place run \
         `flamingock audit fix {change_id} --resolution applied --reason \"<what you checked>\"`; \
         otherwise undo any partial effect and run \
         `flamingock audit fix {change_id} --resolution rolled-back --reason \"<what you undid>\"` \
         so it is applied again (or, in code, Flamingock::mark_applied / mark_rolled_back)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use AuditState::*;
    use RecoveryStrategy::*;
    use TxStrategy::*;

    fn entry(state: AuditState, strategy: TxStrategy) -> AuditEntry {
        AuditEntry::new("c", state, 1).strategy(strategy)
    }

    fn both(state: AuditState, strategy: TxStrategy) -> (Decision, Decision) {
        let e = entry(state, strategy);
        (
            decide(Some(&e), ManualIntervention),
            decide(Some(&e), AlwaysRetry),
        )
    }

    fn is_block(d: &Decision) -> bool {
        matches!(d, Decision::Block { .. })
    }

    #[test]
    fn row_none_applies() {
        assert_eq!(decide(None, ManualIntervention), Decision::Apply);
        assert_eq!(decide(None, AlwaysRetry), Decision::Apply);
    }

    #[test]
    fn row_applied_and_manual_applied_skip() {
        for st in [Applied, ManualMarkedAsApplied] {
            for s in [SharedTx, SeparateTx, NonTransactional, Manual] {
                assert_eq!(both(st, s), (Decision::Skip, Decision::Skip), "{st} {s}");
            }
        }
    }

    #[test]
    fn row_rolled_back_and_manual_rolled_back_apply() {
        for st in [RolledBack, ManualMarkedAsRolledBack] {
            for s in [SharedTx, SeparateTx, NonTransactional, Manual] {
                assert_eq!(both(st, s), (Decision::Apply, Decision::Apply), "{st} {s}");
            }
        }
    }

    #[test]
    fn row_failed_transactional_applies() {
        for s in [SharedTx, SeparateTx, SeparateTxWithMarker] {
            assert_eq!(both(Failed, s), (Decision::Apply, Decision::Apply), "{s}");
        }
    }

    #[test]
    fn row_failed_non_transactional_blocks_unless_retry() {
        let (manual, retry) = both(Failed, NonTransactional);
        assert!(is_block(&manual), "{manual:?}");
        assert_eq!(retry, Decision::Apply);
    }

    #[test]
    fn row_started_blocks_unless_retry() {
        for s in [SharedTx, SeparateTx, NonTransactional] {
            let (manual, retry) = both(Started, s);
            assert!(is_block(&manual), "{s}: {manual:?}");
            assert_eq!(retry, Decision::Apply, "{s}");
        }
    }

    #[test]
    fn row_started_with_marker_is_resolved_by_marker() {
        assert_eq!(
            both(Started, SeparateTxWithMarker),
            (Decision::ResolveByMarker, Decision::ResolveByMarker)
        );
    }

    #[test]
    fn row_rollback_failed_blocks_unless_retry() {
        for s in [SharedTx, SeparateTx, NonTransactional] {
            let (manual, retry) = both(RollbackFailed, s);
            assert!(is_block(&manual), "{s}: {manual:?}");
            assert_eq!(retry, Decision::Apply, "{s}");
        }
    }
}
