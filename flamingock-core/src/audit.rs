//! The audit model: entries, states, the snapshot reduction and the
//! [`AuditStore`] trait that backends implement.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::lock::LockProvider;
use crate::model::RecoveryStrategy;

pub use crate::model::{AuditState, TxStrategy, UnknownState};

/// A recorded error: its message and the messages of its `source` chain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Top-level message.
    pub message: String,
    /// Messages of the source chain, outermost first.
    #[serde(default)]
    pub chain: Vec<String>,
}

impl ErrorInfo {
    /// Captures an error and its source chain.
    pub fn from_error(err: &(dyn std::error::Error + 'static)) -> Self {
        ErrorInfo {
            message: err.to_string(),
            chain: crate::error::error_chain(err),
        }
    }
}

impl ErrorInfo {
    /// The causes the message does not already quote (most error types
    /// print their source in their own message too), each once.
    pub fn new_causes(&self) -> Vec<&str> {
        let mut seen = self.message.clone();
        let mut out = Vec::new();
        for c in &self.chain {
            if !seen.contains(c.as_str()) {
                seen.push('\n');
                seen.push_str(c);
                out.push(c.as_str());
            }
        }
        out
    }
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for c in self.new_causes() {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

/// One state transition of one change (append-only history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// The run that wrote it.
    pub run_id: String,
    /// Stage id.
    pub stage_id: String,
    /// Change id.
    pub change_id: String,
    /// Change author.
    pub author: String,
    /// Change order within its stage.
    pub order: String,
    /// Target system id.
    pub target_system: String,
    /// The state recorded.
    pub state: AuditState,
    /// When (UTC). Stores with a clock overwrite this with their own time.
    pub created_at: DateTime<Utc>,
    /// How long the execution took, in milliseconds.
    pub duration_ms: u64,
    /// Host of the runner.
    pub hostname: String,
    /// Runner id (`service@hostname#uuid`).
    pub runner_id: String,
    /// For failures: the error.
    pub error: Option<ErrorInfo>,
    /// Free-form metadata (run metadata, operator reason...).
    pub metadata: serde_json::Value,
    /// The execution strategy used.
    pub tx_strategy: TxStrategy,
    /// The change's recovery strategy at the time.
    pub recovery: RecoveryStrategy,
    /// Whether the change ran transactionally.
    pub transactional: bool,
    /// Fencing token of the lease this was written under.
    pub fencing_token: u64,
    /// Content checksum, for template (file-based) changes.
    pub checksum: Option<String>,
}

impl AuditEntry {
    /// A minimal entry; fill the rest with struct update syntax on the result or
    /// the `with_*` helpers. Used by stores' tests and by operations.
    pub fn new(change_id: impl Into<String>, state: AuditState, fencing_token: u64) -> Self {
        AuditEntry {
            run_id: String::new(),
            stage_id: String::new(),
            change_id: change_id.into(),
            author: String::new(),
            order: String::new(),
            target_system: String::new(),
            state,
            created_at: audit_clock(),
            duration_ms: 0,
            hostname: String::new(),
            runner_id: String::new(),
            error: None,
            metadata: serde_json::Value::Null,
            tx_strategy: TxStrategy::NonTransactional,
            recovery: RecoveryStrategy::ManualIntervention,
            transactional: false,
            fencing_token,
            checksum: None,
        }
    }

    /// Sets `created_at`.
    pub fn at(mut self, created_at: DateTime<Utc>) -> Self {
        self.created_at = created_at;
        self
    }

    /// Sets the strategy.
    pub fn strategy(mut self, s: TxStrategy) -> Self {
        self.tx_strategy = s;
        self
    }

    /// Sets the run id.
    pub fn run(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = run_id.into();
        self
    }

    /// Sets the recovery strategy.
    pub fn recovery(mut self, r: RecoveryStrategy) -> Self {
        self.recovery = r;
        self
    }

    /// Sets the error.
    pub fn error(mut self, e: ErrorInfo) -> Self {
        self.error = Some(e);
        self
    }

    /// Whether `self` supersedes `other` in the snapshot: later `created_at`,
    /// or on a tie the later state in [`AuditState`] order.
    pub fn supersedes(&self, other: &AuditEntry) -> bool {
        snapshot_order(self, other) == Ordering::Greater
    }
}

/// The runner's clock for `created_at`: UTC now, but strictly increasing
/// within the process (at least one microsecond after the previous value), so
/// that stores which keep the client's timestamp (DynamoDB) order the entries
/// of one change exactly as they were written. Stores with a clock of their
/// own replace it.
pub fn audit_clock() -> DateTime<Utc> {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST_MICROS: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = Utc::now().timestamp_micros();
    let mut last = LAST_MICROS.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST_MICROS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return DateTime::from_timestamp_micros(next).unwrap_or_else(Utc::now),
            Err(seen) => last = seen,
        }
    }
}

/// Total order used by the snapshot: `created_at`, then state rank.
pub fn snapshot_order(a: &AuditEntry, b: &AuditEntry) -> Ordering {
    a.created_at
        .cmp(&b.created_at)
        .then(a.state.rank().cmp(&b.state.rank()))
}

/// Reduces a history to the latest entry per change id (DESIGN section 4),
/// sorted by change id. The reference for every store's current-state table.
pub fn reduce_snapshot<I: IntoIterator<Item = AuditEntry>>(history: I) -> Vec<AuditEntry> {
    let mut latest: HashMap<String, AuditEntry> = HashMap::new();
    for e in history {
        match latest.get(&e.change_id) {
            Some(cur) if !e.supersedes(cur) => {}
            _ => {
                latest.insert(e.change_id.clone(), e);
            }
        }
    }
    let mut out: Vec<AuditEntry> = latest.into_values().collect();
    out.sort_by(|a, b| a.change_id.cmp(&b.change_id));
    out
}

/// Filter for [`AuditStore::history`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryFilter {
    /// Only this change.
    pub change_id: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl HistoryFilter {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only `change_id`.
    pub fn change(mut self, change_id: impl Into<String>) -> Self {
        self.change_id = Some(change_id.into());
        self
    }

    /// Only entries at or after `since`.
    pub fn since(mut self, since: DateTime<Utc>) -> Self {
        self.since = Some(since);
        self
    }

    /// Whether `e` passes the filter.
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.change_id.as_deref().is_none_or(|c| c == e.change_id)
            && self.since.is_none_or(|s| e.created_at >= s)
    }
}

/// Where the history of executions lives.
///
/// Backends implement small primitives; the runner in core does the rest.
/// The contract (checked by `flamingock-test-support`'s audit suite):
///
/// * [`append`](AuditStore::append) is atomic: the history row and the
///   current-state row are written together, and the write is rejected with
///   [`StoreError::Fenced`] when `entry.fencing_token` is lower than the fence,
///   in the same atomic operation.
/// * [`snapshot`](AuditStore::snapshot) returns the latest entry per change
///   (see [`reduce_snapshot`]) in one read sized by the number of changes.
/// * [`claim_fence`](AuditStore::claim_fence) atomically increments the
///   fence and returns the new value: the caller's **epoch**. Every epoch is
///   strictly greater than every epoch handed out before, by this store,
///   whatever any lock service remembers. A runner that holds the lock claims
///   its epoch before reading anything, and every entry it writes carries it
///   as `fencing_token`; a runner whose writes arrive after another claim is
///   therefore rejected, even when a lock service forgot its tokens and
///   granted the same token twice.
/// * Looking never writes: [`fence`](AuditStore::fence),
///   [`snapshot`](AuditStore::snapshot) and [`history`](AuditStore::history)
///   create, alter and write nothing, and on a store that was never prepared
///   (its tables, collections or files do not exist yet) they answer 0 and
///   empty. Only [`prepare`](AuditStore::prepare) creates what is missing.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// A human-readable name used in errors and logs, e.g. `postgres(public.flamingock_audit)`.
    fn describe(&self) -> String;

    /// Identity of the database/namespace. Targets whose
    /// [`TargetCapabilities::shared_audit_store`](crate::TargetCapabilities::shared_audit_store)
    /// equals this id commit their changes together with the audit entry.
    fn store_id(&self) -> &str;

    /// Creates tables/indexes if needed and allowed. Called once per runner,
    /// before it writes; never by the read-only operations.
    async fn prepare(&self) -> Result<(), StoreError>;

    /// Atomically increments the fence and returns the new value, this
    /// runner's epoch (the first claim on an empty store returns 1).
    ///
    /// Called only by a runner that has just taken the lock, before it reads
    /// the snapshot. A backend whose stale writers can hold resources the new
    /// epoch needs (MongoDB: an open transaction of a killed runner) clears
    /// them here, within a bounded time.
    async fn claim_fence(&self) -> Result<u64, StoreError>;

    /// The current fence (0 when none was ever raised).
    async fn fence(&self) -> Result<u64, StoreError>;

    /// Appends one entry atomically with its current-state update and the fence check.
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// Latest entry per change id, sorted by change id.
    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError>;

    /// Full history matching `filter`, oldest first.
    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError>;

    /// The applied-set summary ([`AuditSummary`](crate::summary::AuditSummary)),
    /// for the start-up check: one read of constant size. `None` when this
    /// store keeps none (the default), or keeps none yet (its tables predate
    /// it, or were never prepared): the runner then reads the snapshot.
    ///
    /// A store that returns `Some` keeps it in the same atomic write as each
    /// current-state row, so that at every instant it equals
    /// [`AuditSummary::of_snapshot`](crate::summary::AuditSummary::of_snapshot)
    /// of [`snapshot`](AuditStore::snapshot) (the audit suite checks it). A
    /// read, like `snapshot`: creates and writes nothing.
    async fn summary(&self) -> Result<Option<crate::summary::AuditSummary>, StoreError> {
        Ok(None)
    }

    /// The lock provider that lives in the same store, used when the builder is
    /// given none.
    fn default_lock(&self) -> Option<Arc<dyn LockProvider>> {
        None
    }

    /// What to check when an operation on this store does not answer within
    /// the runner's operation timeout (added to the timeout error).
    fn stall_hint(&self) -> Option<String> {
        None
    }
}

impl fmt::Debug for dyn AuditStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[async_trait]
impl<S: AuditStore + ?Sized> AuditStore for Arc<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn store_id(&self) -> &str {
        (**self).store_id()
    }
    async fn prepare(&self) -> Result<(), StoreError> {
        (**self).prepare().await
    }
    async fn claim_fence(&self) -> Result<u64, StoreError> {
        (**self).claim_fence().await
    }
    async fn fence(&self) -> Result<u64, StoreError> {
        (**self).fence().await
    }
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        (**self).append(entry).await
    }
    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError> {
        (**self).snapshot().await
    }
    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError> {
        (**self).history(filter).await
    }
    async fn summary(&self) -> Result<Option<crate::summary::AuditSummary>, StoreError> {
        (**self).summary().await
    }
    fn default_lock(&self) -> Option<Arc<dyn LockProvider>> {
        (**self).default_lock()
    }
    fn stall_hint(&self) -> Option<String> {
        (**self).stall_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_info_prints_each_cause_once() {
        let e = ErrorInfo {
            message: "change 'a' failed: disk full".into(),
            chain: vec!["disk full".into(), "no space left on device".into()],
        };
        assert_eq!(
            e.to_string(),
            "change 'a' failed: disk full: no space left on device"
        );
        assert_eq!(e.new_causes(), ["no space left on device"]);
    }

    fn at(id: &str, state: AuditState, secs: i64) -> AuditEntry {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        AuditEntry::new(id, state, 1).at(t0 + chrono::Duration::seconds(secs))
    }

    #[test]
    fn latest_created_at_wins() {
        let snap = reduce_snapshot([
            at("a", AuditState::Applied, 2),
            at("a", AuditState::Started, 1),
            at("b", AuditState::Failed, 5),
        ]);
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].state, AuditState::Applied);
        assert_eq!(snap[1].change_id, "b");
    }

    #[test]
    fn ties_go_to_the_later_state_in_the_list() {
        for (x, y) in [
            (AuditState::Failed, AuditState::RolledBack),
            (AuditState::Started, AuditState::Applied),
            (AuditState::Applied, AuditState::ManualMarkedAsRolledBack),
        ] {
            for order in [[x, y], [y, x]] {
                let snap = reduce_snapshot(order.map(|s| at("a", s, 1)));
                assert_eq!(snap[0].state, y, "{order:?}");
            }
        }
    }

    #[test]
    fn state_names_round_trip_and_unknown_names_are_errors() {
        for s in AuditState::ALL {
            assert_eq!(s.as_str().parse::<AuditState>().ok(), Some(s));
        }
        assert!("APPLIED ".parse::<AuditState>().is_err());
        assert!("SHARED_TX".parse::<TxStrategy>().is_ok());
        assert!("bogus".parse::<TxStrategy>().is_err());
    }
}

#[cfg(test)]
mod clock_tests {
    #[test]
    fn audit_clock_strictly_increases() {
        let mut prev = super::audit_clock();
        for _ in 0..10_000 {
            let next = super::audit_clock();
            assert!(next > prev);
            prev = next;
        }
    }
}
