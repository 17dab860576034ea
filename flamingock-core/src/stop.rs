//! Why a locked run stopped before its end, while it is still running.
//!
//! The parts of a run (the lock wait, a stage, a change's recovery) say why
//! they stop with a [`Stop`]; the run turns it into the public [`Error`]
//! once, in [`Stop::into_error`], together with the report of everything it
//! did, so every error that carries a report carries the real one.

use crate::error::{
    BlockedChange, Chain, ChangeFailure, Error, LockError, StoreError, TargetError,
};
use crate::report::RunReport;

/// Why a run stopped early; see the module docs.
pub(crate) enum Stop {
    /// Changes need an operator.
    Blocked(Vec<BlockedChange>),
    /// A change failed; its outcome is recorded.
    ChangeFailed(ChangeFailure),
    /// The lease ended before the work did: what was observed.
    LeaseLost(String),
    /// A shutdown request: what was finished and what the next run does.
    Interrupted(String),
    /// Anything else (a store, lock or target failure outside a change):
    /// carries no report.
    Other(Error),
}

impl Stop {
    /// The public error, with the run's report (its `run_id` names the run).
    pub(crate) fn into_error(self, report: RunReport) -> Error {
        let run_id = report.run_id.clone();
        let report = Box::new(report);
        match self {
            Stop::Blocked(blocked) => Error::Blocked { blocked, report },
            Stop::ChangeFailed(failure) => Error::ChangeFailed { failure, report },
            Stop::LeaseLost(detail) => Error::LeaseLost {
                run_id,
                detail,
                report,
            },
            Stop::Interrupted(detail) => Error::Interrupted {
                run_id,
                detail,
                report,
            },
            Stop::Other(e) => e,
        }
    }

    /// A store error that stops a run: a fence rejection means the lease
    /// is gone.
    pub(crate) fn store(e: StoreError) -> Stop {
        match e {
            StoreError::Fenced { .. } => Stop::LeaseLost(e.to_string()),
            other => Stop::Other(Error::Store(other)),
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Blocked(_) => f.write_str("blocked changes"),
            Stop::ChangeFailed(failure) => write!(f, "{}", Chain(failure)),
            Stop::LeaseLost(detail) => write!(f, "the lock lease was lost ({detail})"),
            Stop::Interrupted(detail) => write!(f, "interrupted by a shutdown request: {detail}"),
            Stop::Other(e) => write!(f, "{}", Chain(e)),
        }
    }
}

impl From<Error> for Stop {
    /// Keeps what a report-carrying error says, so the run puts its own
    /// report in.
    fn from(e: Error) -> Stop {
        match e {
            Error::Blocked { blocked, .. } => Stop::Blocked(blocked),
            Error::ChangeFailed { failure, .. } => Stop::ChangeFailed(failure),
            Error::LeaseLost { detail, .. } => Stop::LeaseLost(detail),
            Error::Interrupted { detail, .. } => Stop::Interrupted(detail),
            other => Stop::Other(other),
        }
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Other(Error::Store(e))
    }
}

impl From<LockError> for Stop {
    fn from(e: LockError) -> Stop {
        Stop::Other(Error::Lock(e))
    }
}

impl From<TargetError> for Stop {
    fn from(e: TargetError) -> Stop {
        Stop::Other(Error::Target(e))
    }
}
