//! Error types. Every variant names what failed and where (store, lock, target,
//! change id) and keeps the underlying error as its `source`.

use std::time::Duration;

use crate::model::{AuditState, LockInfo};
use crate::report::RunReport;
use crate::validate::ValidationErrors;

/// A boxed error from user code or a driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors raised by an [`AuditStore`](crate::AuditStore).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write carried a fencing token lower than the store's fence: a runner
    /// with a newer lease has been here since, so this runner must stop.
    #[error("audit store {store}: write of epoch {token} rejected, the fence is already at {fence} (another runner claimed the store since)")]
    Fenced {
        /// Store description.
        store: String,
        /// The epoch (fencing token) this write carried.
        token: u64,
        /// The fence: the newest epoch claimed from the store.
        fence: u64,
    },
    /// The store did not answer within the runner's operation timeout.
    #[error("audit store {store}: {operation} did not answer within {}{}", crate::deadline::human(*after), crate::deadline::hint(hint))]
    Unresponsive {
        /// Store description.
        store: String,
        /// What was being done.
        operation: &'static str,
        /// The timeout that passed.
        after: Duration,
        /// What to check, from the backend.
        hint: Option<String>,
    },
    /// The driver or server failed.
    #[error("audit store {store}: {operation} failed")]
    Backend {
        /// Store description.
        store: String,
        /// What was being done.
        operation: &'static str,
        /// Driver error.
        #[source]
        source: BoxError,
    },
    /// Data read from the store does not have the expected shape.
    #[error("audit store {store}: malformed {what}: {detail}")]
    Malformed {
        /// Store description.
        store: String,
        /// Which record (table/collection and key).
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The store's tables/collections do not exist and automatic creation is off.
    #[error("audit store {store}: {detail}")]
    NotReady {
        /// Store description.
        store: String,
        /// What is missing and how to fix it.
        detail: String,
    },
    /// The store was configured wrongly (an invalid prefix or schema name,
    /// no database named): refused when it is built, before any I/O.
    #[error("audit store {store}: invalid configuration: {detail}")]
    InvalidConfig {
        /// Store description.
        store: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
}

/// Errors raised by a [`LockProvider`](crate::LockProvider) or by the lock protocol.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Waited for the lock longer than the configured timeout.
    #[error("lock {lock}: not acquired after {waited:?}; held by {} (token {}) until {}", holder.owner, holder.token, holder.expires_at)]
    Timeout {
        /// Lock description.
        lock: String,
        /// How long this runner waited.
        waited: Duration,
        /// The holder seen at the last attempt.
        holder: LockInfo,
    },
    /// The lease is not ours any more (expired and taken, or force-released).
    #[error("lock {lock}: lease of {owner} with token {token} is no longer held")]
    Lost {
        /// Lock description.
        lock: String,
        /// The owner that believed it held the lease.
        owner: String,
        /// The token of that lease.
        token: u64,
    },
    /// The driver or server failed.
    #[error("lock {lock}: {operation} failed")]
    Backend {
        /// Lock description.
        lock: String,
        /// What was being done.
        operation: &'static str,
        /// Driver error.
        #[source]
        source: BoxError,
    },
    /// The lock service did not answer within the runner's operation timeout.
    #[error("lock {lock}: {operation} did not answer within {}{}", crate::deadline::human(*after), crate::deadline::hint(hint))]
    Unresponsive {
        /// Lock description.
        lock: String,
        /// What was being done.
        operation: &'static str,
        /// The timeout that passed.
        after: Duration,
        /// What to check, from the backend.
        hint: Option<String>,
    },
    /// The lock record has an unexpected shape.
    #[error("lock {lock}: malformed lock record: {detail}")]
    Malformed {
        /// Lock description.
        lock: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The lock was configured wrongly (an invalid prefix or schema name, no
    /// database named): refused when it is built, before any I/O.
    #[error("lock {lock}: invalid configuration: {detail}")]
    InvalidConfig {
        /// Lock description.
        lock: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
}

/// Errors raised by a [`TargetSystem`](crate::TargetSystem).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The driver or server failed.
    #[error("target system {target}: {operation} failed")]
    Backend {
        /// Target id.
        target: String,
        /// What was being done.
        operation: &'static str,
        /// Driver error.
        #[source]
        source: BoxError,
    },
    /// The audit write that shares the change's transaction failed (fence included).
    #[error("target system {target}: audit write inside the change's transaction failed")]
    Audit {
        /// Target id.
        target: String,
        /// The store error.
        #[source]
        source: StoreError,
    },
    /// The commit was refused before anything was committed (too many
    /// writes for one transaction, a condition on the change's own writes
    /// failed, a constraint violated at commit). Recorded as a failure that
    /// the database rolled back.
    #[error("target system {target}: transaction refused, nothing committed")]
    NotCommitted {
        /// Target id.
        target: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The database committed the change's transaction before the runner
    /// did: MySQL and MariaDB commit implicitly at every DDL statement (and
    /// at `LOCK TABLES`, a nested `START TRANSACTION`...). What the change
    /// did up to then is in place and cannot be made atomic with its audit
    /// entry. Returned by `commit` (nothing of the runner's was written:
    /// no audit entry, no marker) and by `abort` (the rest was rolled back);
    /// the runner then records the outcome under the non-transactional rules
    /// (APPLIED; or FAILED, then the change's rollback if it has one) and
    /// warns, naming the change.
    #[error("target system {target}: the change's transaction was committed implicitly before its end ({detail}); what the change did up to then is in place")]
    ImplicitlyCommitted {
        /// Target id.
        target: String,
        /// What the target saw.
        detail: String,
    },
    /// The target is held by another writer right now (e.g. a SQLite file
    /// another connection keeps a write transaction open on). The runner
    /// waits for it like for a held lock, reporting the wait, and gives up
    /// after the lock's acquire timeout.
    #[error("target system {target} is busy: {detail}")]
    Busy {
        /// Target id.
        target: String,
        /// What holds it, as far as the target can tell.
        detail: String,
    },
    /// The target did not answer within the runner's operation timeout.
    #[error("target system {target}: {operation} did not answer within {}; check that the system is reachable and that nothing else (a stalled or killed runner's transaction, another writer) holds what the change needs", crate::deadline::human(*after))]
    Unresponsive {
        /// Target id.
        target: String,
        /// What was being done.
        operation: &'static str,
        /// The timeout that passed.
        after: Duration,
    },
    /// The change cannot run on this target as declared.
    #[error("target system {target}: {detail}")]
    Unsupported {
        /// Target id.
        target: String,
        /// What is not supported and what to do instead.
        detail: String,
    },
}

/// A change that could not be applied, with its id and stage.
#[derive(thiserror::Error)]
#[error("change '{change_id}' (stage '{stage}') failed")]
pub struct ChangeFailure {
    /// Stage id.
    pub stage: String,
    /// Change id.
    pub change_id: String,
    /// What the change (or its target) returned.
    #[source]
    pub source: BoxError,
}

/// A change the runner refuses to run until an operator resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedChange {
    /// Stage id.
    pub stage: String,
    /// Change id.
    pub change_id: String,
    /// Its latest audit state.
    pub state: AuditState,
    /// The recorded error, if any.
    pub error: Option<String>,
    /// Why it is blocked and what to check.
    pub reason: String,
    /// The operator command(s) that resolve it.
    pub resolution: String,
}

impl std::fmt::Display for BlockedChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  - '{}' (stage '{}'): last state {}",
            self.change_id, self.stage, self.state
        )?;
        if let Some(e) = &self.error {
            write!(f, ", error: {e}")?;
        }
        write!(
            f,
            "\n    why: {}\n    resolve: {}",
            self.reason, self.resolution
        )
    }
}

fn list_blocked(blocked: &[BlockedChange]) -> String {
    blocked
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The error returned by runs and operations.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline is invalid; every problem is listed.
    #[error(transparent)]
    Validation(#[from] ValidationErrors),
    /// One or more changes need an operator before the pipeline can go on.
    #[error("{} change(s) need manual intervention; nothing in their stage was run:\n{}", blocked.len(), list_blocked(blocked))]
    Blocked {
        /// Every blocked change.
        blocked: Vec<BlockedChange>,
        /// What the run did before stopping.
        report: Box<RunReport>,
    },
    /// A change failed; its outcome is recorded in the audit store.
    #[error("run {} stopped at change '{}'", report.run_id, failure.change_id)]
    ChangeFailed {
        /// The failure.
        #[source]
        failure: ChangeFailure,
        /// What the run did before stopping.
        report: Box<RunReport>,
    },
    /// `validate_only` found changes that would run.
    #[error("validate-only: {} change(s) pending: {}", pending.len(), pending.join(", "))]
    Pending {
        /// Pending change ids, in execution order.
        pending: Vec<String>,
    },
    /// The runner's lease ended before its work did; it stopped without committing.
    #[error("run {run_id} stopped: the lock lease was lost ({detail}); another runner may now continue the work")]
    LeaseLost {
        /// The run that stopped.
        run_id: String,
        /// What was observed.
        detail: String,
        /// What the run did before stopping.
        report: Box<RunReport>,
    },
    /// The run was asked to stop (a shutdown signal) and stopped cleanly.
    #[error("run {run_id} interrupted by a shutdown request: {detail}")]
    Interrupted {
        /// The run that stopped.
        run_id: String,
        /// What was finished, what was undone and what the next run will do.
        detail: String,
        /// What the run did before stopping.
        report: Box<RunReport>,
    },
    /// The audit store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lock provider failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A target system failed outside of a change.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// An operation named a change the store knows nothing about.
    #[error("change '{change_id}' has no audit entry in {store}")]
    UnknownChange {
        /// The id given.
        change_id: String,
        /// Store description.
        store: String,
    },
    /// `fix` was asked for a change that has nothing to fix.
    #[error("change '{change_id}' has no issue to fix (latest state {state}); refusing to overwrite its audit")]
    NothingToFix {
        /// The id given.
        change_id: String,
        /// Its latest state.
        state: AuditState,
    },
    /// An operator operation that does not apply to this change.
    #[error("change '{change_id}': refusing: {detail}")]
    FixRefused {
        /// The id given.
        change_id: String,
        /// Why, and what to do instead.
        detail: String,
    },
    /// Another tool's history does not fit the changes here: nothing was
    /// imported. Each line says what and what to do.
    #[error(
        "import from {tool} ({table}) refused, nothing recorded: {} row(s) do not fit the changes:\n  - {}\nResolve them, or record what fits and leave these as they are by accepting the mismatches (`import --accept-mismatches`, ImportOptions::accept_mismatches)",
        mismatches.len(),
        mismatches.join("\n  - ")
    )]
    ImportRefused {
        /// The tool.
        tool: &'static str,
        /// The table or collection read.
        table: String,
        /// What does not fit, one line each.
        mismatches: Vec<String>,
    },
    /// The builder was given an inconsistent configuration.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The run report carried by this error, when the run got far enough to make one.
    pub fn report(&self) -> Option<&RunReport> {
        match self {
            Error::Blocked { report, .. }
            | Error::ChangeFailed { report, .. }
            | Error::LeaseLost { report, .. }
            | Error::Interrupted { report, .. } => Some(report),
            _ => None,
        }
    }
}

/// The error a change returns from its default `rollback`: it has none.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the change defines no rollback")]
pub struct NoRollback;

/// The error a change returns from its default
/// [`is_applied`](crate::Change::is_applied): it has no "already in place"
/// check.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the change defines no check")]
pub struct NoCheck;

/// `Debug` of the error types users get from runs and operations: the same
/// text as `Display`, then its causes, as anyhow and eyre print them. So
/// `fn main() -> Result<(), Box<dyn Error>>` shows a readable message, not a
/// dump of the run report.
macro_rules! debug_as_report {
    ($($t:ty),+) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                $crate::error::write_report(self, f)
            }
        }
    )+};
}
pub(crate) use debug_as_report;

debug_as_report!(StoreError, LockError, TargetError, ChangeFailure, Error);

/// Writes `err`, then each cause on a `Caused by:` line. A cause whose text
/// the message already holds is not repeated.
pub(crate) fn write_report(
    err: &(dyn std::error::Error + 'static),
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    let mut seen = err.to_string();
    f.write_str(&seen)?;
    let mut heading = false;
    let mut cur = err.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !seen.contains(&text) {
            if !heading {
                f.write_str("\n\nCaused by:")?;
                heading = true;
            }
            write!(f, "\n    {text}")?;
            seen.push('\n');
            seen.push_str(&text);
        }
        cur = cause.source();
    }
    Ok(())
}

/// An error and its causes on one line, `message: cause: cause`, for logs
/// and one-line messages. Every error of this crate says only what its own
/// layer knows in `Display` and keeps what caused it as its `source()`, so
/// `{e}` alone does not show why; `{:?}` shows the causes one per line, and
/// this shows them on the line. A cause whose text the line already holds
/// (an error type of another crate that quotes its source) is not repeated.
///
/// ```
/// use flamingock_core::error::Chain;
/// use flamingock_core::StoreError;
///
/// let e = StoreError::Backend {
///     store: "postgres(public.flamingock_audit)".into(),
///     operation: "append",
///     source: "connection reset by peer".into(),
/// };
/// assert_eq!(e.to_string(), "audit store postgres(public.flamingock_audit): append failed");
/// assert_eq!(
///     Chain(&e).to_string(),
///     "audit store postgres(public.flamingock_audit): append failed: connection reset by peer"
/// );
/// ```
pub struct Chain<'a, E: ?Sized>(pub &'a E);

impl<E: std::error::Error + ?Sized> std::fmt::Display for Chain<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut seen = self.0.to_string();
        f.write_str(&seen)?;
        let mut cur = self.0.source();
        while let Some(cause) = cur {
            let text = cause.to_string();
            if !seen.contains(&text) {
                write!(f, ": {text}")?;
                seen.push('\n');
                seen.push_str(&text);
            }
            cur = cause.source();
        }
        Ok(())
    }
}

impl<E: std::error::Error + ?Sized> std::fmt::Debug for Chain<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// [`Chain`] as a method of every error (a boxed one too):
/// `format!("{}", e.chain())`.
///
/// ```
/// use flamingock_core::error::ErrorChain;
/// use flamingock_core::BoxError;
///
/// let e: BoxError = "connection reset by peer".into();
/// assert_eq!(e.chain().to_string(), "connection reset by peer");
/// ```
pub trait ErrorChain {
    /// This error and its causes on one line.
    fn chain(&self) -> Chain<'_, Self>;
}

impl<E: std::error::Error + ?Sized> ErrorChain for E {
    fn chain(&self) -> Chain<'_, Self> {
        Chain(self)
    }
}

/// Formats an error and its `source` chain as a list of messages.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push(e.to_string());
        cur = e.source();
    }
    out
}
