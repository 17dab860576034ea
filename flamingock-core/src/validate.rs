//! Validation of the pipeline before anything runs: every problem, all at once.

use std::fmt;

/// How strictly a check against the audit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckPolicy {
    /// Fail validation (default).
    #[default]
    Error,
    /// Log a warning and go on.
    Warn,
}

/// What to do with audit entries whose change id no longer exists in code
/// (default: error, a renamed or deleted change is usually a mistake).
pub type OrphanPolicy = CheckPolicy;

/// What to do when an applied change's content checksum differs from the
/// code's (default: error, an applied file was edited).
pub type DriftPolicy = CheckPolicy;

/// One problem found by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidationProblem {
    /// An empty change id.
    EmptyId {
        /// Stage id.
        stage: String,
        /// The change's order.
        order: String,
    },
    /// A change without an order ([`ChangeMeta::order`](crate::ChangeMeta::order) never set).
    EmptyOrder {
        /// Stage id.
        stage: String,
        /// The change's id.
        change_id: String,
    },
    /// An id longer than 255 bytes.
    IdTooLong {
        /// The id (truncated in display).
        change_id: String,
        /// Its length in bytes.
        len: usize,
    },
    /// An id with control characters.
    UnprintableId {
        /// The id, escaped.
        change_id: String,
    },
    /// The same id used more than once in the pipeline.
    DuplicateId {
        /// The id.
        change_id: String,
        /// Stages it appears in (once per occurrence).
        stages: Vec<String>,
    },
    /// Two changes of one stage share an order.
    DuplicateOrder {
        /// Stage id.
        stage: String,
        /// The order.
        order: String,
        /// The changes sharing it.
        change_ids: Vec<String>,
    },
    /// Orders of one stage that run in text order although their numeric
    /// parts say otherwise (`1_10` runs before `1_2`).
    NumericOrderMismatch {
        /// Stage id.
        stage: String,
        /// `(change id, order)` pairs: the first runs before the second,
        /// though its number is larger.
        pairs: Vec<((String, String), (String, String))>,
    },
    /// An empty stage id, or two stages with one id.
    BadStage {
        /// Stage id.
        stage: String,
        /// What is wrong.
        detail: String,
    },
    /// A change names a target that is not registered.
    UnknownTarget {
        /// Change id.
        change_id: String,
        /// The target id it names (or the type it needs).
        target: String,
        /// Registered target ids.
        known: Vec<String>,
    },
    /// A change's target id is registered, but for another kind of target.
    TargetTypeMismatch {
        /// Change id.
        change_id: String,
        /// Target id.
        target: String,
        /// The type the change needs.
        expected: &'static str,
    },
    /// A change names no target and several targets of its type exist.
    AmbiguousTarget {
        /// Change id.
        change_id: String,
        /// Candidate target ids.
        candidates: Vec<String>,
    },
    /// Two targets registered with the same id.
    DuplicateTarget {
        /// Target id.
        target: String,
    },
    /// A change requires a transaction its target cannot give.
    TransactionalUnsupported {
        /// Change id.
        change_id: String,
        /// Target id.
        target: String,
    },
    /// A change needs a transaction (the default) on a deployment that cannot run one.
    TransactionsUnavailable {
        /// Change id.
        change_id: String,
        /// Target id.
        target: String,
        /// Why, and what to do.
        reason: String,
    },
    /// An applied change's content changed since it was applied.
    ChecksumDrift {
        /// Change id.
        change_id: String,
        /// Checksum recorded when it was applied.
        recorded: String,
        /// Checksum of the code now.
        current: String,
    },
    /// Audit entries exist for changes no longer in code.
    OrphanAudit {
        /// The ids.
        change_ids: Vec<String>,
    },
}

impl fmt::Display for ValidationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ValidationProblem::*;
        match self {
            EmptyId { stage, order } => write!(f, "stage '{stage}': change with order '{order}' has an empty id"),
            EmptyOrder { stage, change_id } => write!(f, "stage '{stage}': change '{change_id}' has no order; give it one with ChangeMeta::order (e.g. \"0001\")"),
            IdTooLong { change_id, len } => {
                let short: String = change_id.chars().take(40).collect();
                write!(f, "change '{short}...': id is {len} bytes, the limit is 255")
            }
            UnprintableId { change_id } => write!(f, "change {change_id:?}: id contains control characters"),
            DuplicateId { change_id, stages } => write!(f, "change id '{change_id}' is declared {} times (stages: {})", stages.len(), stages.join(", ")),
            DuplicateOrder { stage, order, change_ids } => write!(f, "stage '{stage}': order '{order}' is shared by {}", change_ids.join(", ")),
            NumericOrderMismatch { stage, pairs } => {
                let list: Vec<String> = pairs.iter().map(|((a, ao), (b, bo))| format!("'{a}' (order {ao}) runs before '{b}' (order {bo})")).collect();
                write!(f, "stage '{stage}': orders run in text order, which their numbers contradict: {}; zero-pad the numeric parts of the orders to one width (e.g. 1_02, 1_10)", list.join(", "))
            }
            BadStage { stage, detail } => write!(f, "stage '{stage}': {detail}"),
            UnknownTarget { change_id, target, known } => write!(f, "change '{change_id}': target system '{target}' is not registered (registered: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") }),
            TargetTypeMismatch { change_id, target, expected } => write!(f, "change '{change_id}': target system '{target}' is not a {expected}"),
            AmbiguousTarget { change_id, candidates } => write!(f, "change '{change_id}': several target systems fit ({}); name one with ChangeMeta::target", candidates.join(", ")),
            DuplicateTarget { target } => write!(f, "target system id '{target}' is registered twice"),
            TransactionalUnsupported { change_id, target } => write!(f, "change '{change_id}' is declared transactional but target system '{target}' has no transactions; declare it .transactional(false)"),
            TransactionsUnavailable { change_id, target, reason } => write!(f, "change '{change_id}' needs a transaction but target system '{target}' cannot run one: {reason}; or declare the change .transactional(false)"),
            ChecksumDrift { change_id, recorded, current } => write!(f, "change '{change_id}' was applied with checksum {recorded} but its content now has checksum {current}: restore it, or add a new change instead of editing an applied one"),
            OrphanAudit { change_ids } => write!(f, "the audit store has entries for changes no longer in the pipeline: {} (restore them; or, if they were removed on purpose, retire each for good, recording why: `flamingock audit retire <change-id> --reason \"...\"` on the command line, Flamingock::retire_orphan in code; or go on with a warning: `--orphans warn`, OrphanPolicy::Warn)", change_ids.join(", ")),
        }
    }
}

/// Every validation problem found.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// The problems, in pipeline order.
    pub problems: Vec<ValidationProblem>,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid pipeline, {} problem(s):", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

crate::error::debug_as_report!(ValidationErrors);

/// Checks an id per DESIGN section 3, and that the change has an order.
pub(crate) fn check_id(stage: &str, order: &str, id: &str, out: &mut Vec<ValidationProblem>) {
    if order.is_empty() {
        out.push(ValidationProblem::EmptyOrder {
            stage: stage.to_owned(),
            change_id: id.to_owned(),
        });
    }
    if id.is_empty() {
        out.push(ValidationProblem::EmptyId {
            stage: stage.to_owned(),
            order: order.to_owned(),
        });
    } else if id.len() > 255 {
        out.push(ValidationProblem::IdTooLong {
            change_id: id.to_owned(),
            len: id.len(),
        });
    } else if id.chars().any(char::is_control) {
        out.push(ValidationProblem::UnprintableId {
            change_id: id.to_owned(),
        });
    }
}
