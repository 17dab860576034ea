//! The operations API: what operators read (snapshot, history, plan,
//! validate, issues, lock status) and the fixes they write, each under the
//! lock and the fence.

use futures::future::BoxFuture;
use tracing::info;

use crate::audit::{AuditEntry, AuditState, AuditStore, HistoryFilter, TxStrategy};
use crate::decision::{decide, resolution_for, Decision};
use crate::error::{BlockedChange, Error, LockError};
use crate::lock::{HeldLease, LockInfo, LockProvider, Waited};
use crate::plan::{PlanAction, PlanItem};
use crate::report::RunReport;
use crate::runner::{append_under, baseline_entry, index, release_after, Flamingock};
use crate::shutdown::Shutdown;
use crate::strategy::stored_recovery;

impl Flamingock {
    /// The ids of the pipeline's changes, in execution order.
    pub fn change_ids(&self) -> Vec<&str> {
        self.inner
            .changes
            .iter()
            .map(|c| c.meta.id.as_str())
            .collect()
    }

    /// Latest entry per change, sorted by change id.
    ///
    /// Looking never writes: this and every other read of the operations API
    /// ([`history`](Self::history), [`plan`](Self::plan),
    /// [`validate`](Self::validate), [`issues`](Self::issues),
    /// [`lock_status`](Self::lock_status)) neither prepares the store nor
    /// takes the lock. A store whose tables do not exist yet reads as empty.
    pub async fn snapshot(&self) -> Result<Vec<AuditEntry>, Error> {
        Ok(self.inner.store.snapshot().await?)
    }

    /// Full history matching `filter`, oldest first. Never writes.
    pub async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, Error> {
        Ok(self.inner.store.history(filter).await?)
    }

    /// What `run` would do, in order, with strategies. Takes no lock.
    pub async fn plan(&self) -> Result<Vec<PlanItem>, Error> {
        let snapshot = self.snapshot().await?;
        let latest = index(&snapshot);
        Ok(self
            .inner
            .changes
            .iter()
            .map(|c| PlanItem {
                stage: c.stage.to_string(),
                change_id: c.meta.id.clone(),
                order: c.meta.order.clone(),
                target: c.target_id.clone(),
                strategy: c.strategy,
                reason: c.meta.transactional_reason.clone(),
                action: match decide(latest.get(c.meta.id.as_str()).copied(), c.meta.recovery) {
                    Decision::Apply => PlanAction::Apply,
                    Decision::Skip => PlanAction::Skip,
                    Decision::ResolveByMarker => PlanAction::ResolveByMarker,
                    Decision::Block { reason } => PlanAction::Block { reason },
                },
            })
            .collect())
    }

    /// Checks the pipeline against the store: orphans, blocked and pending
    /// changes. `Ok` means a run would do nothing.
    pub async fn validate(&self) -> Result<(), Error> {
        let snapshot = self.snapshot().await?;
        let latest = index(&snapshot);
        self.check_audit(&latest)?;
        let decisions = self.decisions(&latest);
        if decisions.iter().all(|d| *d == Decision::Skip) {
            Ok(())
        } else {
            Err(self.validate_only_error(&latest, &decisions, RunReport::default()))
        }
    }

    /// Changes that need an operator, with guidance. Works from the audit
    /// alone, so it also covers changes no longer in code.
    pub async fn issues(&self) -> Result<Vec<BlockedChange>, Error> {
        let snapshot = self.snapshot().await?;
        Ok(snapshot.iter().filter_map(|e| self.issue_of(e)).collect())
    }

    fn issue_of(&self, e: &AuditEntry) -> Option<BlockedChange> {
        let recovery = self
            .inner
            .changes
            .iter()
            .find(|c| c.meta.id == e.change_id)
            .map_or_else(|| stored_recovery(e), |c| c.meta.recovery);
        match decide(Some(e), recovery) {
            Decision::Block { mut reason } => Some(BlockedChange {
                stage: e.stage_id.clone(),
                change_id: e.change_id.clone(),
                state: e.state,
                error: e.error.as_ref().map(ToString::to_string),
                reason: {
                    if let Some(at) = crate::runner::step_position(e) {
                        reason.push_str(&format!("; {at}"));
                    }
                    reason
                },
                resolution: resolution_for(&e.change_id, &e.target_system),
            }),
            Decision::Apply | Decision::Skip | Decision::ResolveByMarker => None,
        }
    }

    /// Records that an operator verified `change_id` is applied. Takes the lock;
    /// refuses when the change has no issue.
    pub async fn mark_applied(&self, change_id: &str, reason: &str) -> Result<AuditEntry, Error> {
        self.fix(
            change_id,
            Fix::Mark(AuditState::ManualMarkedAsApplied),
            reason,
        )
        .await
    }

    /// Records that `change_id`, a change in the audit but no longer in the
    /// pipeline (renamed or deleted on purpose), is retired: a
    /// `MANUAL_MARKED_AS_ROLLED_BACK` entry with metadata `retired: true`,
    /// the runner's metadata (e.g. the operator) and `reason`. From then on
    /// the orphan check skips it. Takes the lock. Refuses a change that is
    /// still in the pipeline or has no audit entry.
    ///
    /// Should a change with this id come back to the pipeline, it is
    /// applied again, as after any rollback.
    pub async fn retire_orphan(&self, change_id: &str, reason: &str) -> Result<AuditEntry, Error> {
        self.fix(change_id, Fix::Retire, reason).await
    }

    /// Accepts the current content of an applied change whose checksum
    /// differs from the recorded one (an applied file was edited and the
    /// operator checked the edit needs no new change): a
    /// `MANUAL_MARKED_AS_APPLIED` entry with the new checksum and metadata
    /// `previous_checksum` and `reason`. Takes the lock. Refuses a change
    /// that is not in the pipeline, not applied, or not drifted.
    pub async fn accept_checksum(
        &self,
        change_id: &str,
        reason: &str,
    ) -> Result<AuditEntry, Error> {
        self.fix(change_id, Fix::AcceptChecksum, reason).await
    }

    /// Records that `change_id`, a change of the pipeline with no audit
    /// entry at all, is already in place (applied by hand or by another
    /// tool before Flamingock managed it): a `MANUAL_MARKED_AS_APPLIED`
    /// entry built from the change's declaration, with metadata
    /// `baseline: true` and `reason`. Takes the lock. Refuses a change that
    /// is not in the pipeline or already has an entry.
    pub async fn baseline(&self, change_id: &str, reason: &str) -> Result<AuditEntry, Error> {
        self.fix(change_id, Fix::Baseline, reason).await
    }

    /// Records that an operator verified `change_id` is not in place (it will be
    /// applied again). Takes the lock; refuses when the change has no issue.
    pub async fn mark_rolled_back(
        &self,
        change_id: &str,
        reason: &str,
    ) -> Result<AuditEntry, Error> {
        self.fix(
            change_id,
            Fix::Mark(AuditState::ManualMarkedAsRolledBack),
            reason,
        )
        .await
    }

    async fn fix(&self, change_id: &str, fix: Fix, reason: &str) -> Result<AuditEntry, Error> {
        self.prepare().await?;
        let lease = self.operator_lease().await?;
        let result = self.fix_locked(change_id, fix, reason, &lease).await;
        release_after(lease, result).await
    }

    /// The lock for an operator operation (which always needs it).
    pub(crate) async fn operator_lease(&self) -> Result<HeldLease, Error> {
        let mut always = || -> BoxFuture<'_, Result<bool, Error>> { Box::pin(async { Ok(true) }) };
        match HeldLease::acquire(
            self.inner.lock.clone(),
            &self.inner.runner_id,
            &self.inner.lock_config,
            &self.inner.events,
            &mut always,
            &Shutdown::never(),
        )
        .await?
        {
            Waited::Acquired(lease) => Ok(lease),
            Waited::NotNeeded => unreachable!("an operator fix always needs the lock"),
        }
    }

    async fn fix_locked(
        &self,
        change_id: &str,
        fix: Fix,
        reason: &str,
        lease: &HeldLease,
    ) -> Result<AuditEntry, Error> {
        let store = &*self.inner.store;
        let epoch = store.claim_fence().await?;
        let snapshot = store.snapshot().await?;
        let prev = snapshot.iter().find(|e| e.change_id == change_id);
        let declared = self.inner.changes.iter().find(|c| c.meta.id == change_id);
        let refuse = |detail: &str| Error::FixRefused {
            change_id: change_id.to_owned(),
            detail: detail.to_owned(),
        };
        let unknown = || Error::UnknownChange {
            change_id: change_id.to_owned(),
            store: store.describe(),
        };
        let mut extra = serde_json::Map::new();
        let (mut entry, state) = match fix {
            Fix::Baseline => {
                let Some(c) = declared else {
                    return Err(refuse(
                        "it is not in the loaded pipeline: a baseline entry is built from the change's declaration",
                    ));
                };
                if let Some(prev) = prev {
                    return Err(refuse(&format!(
                        "it already has an audit entry (latest state {}): use the fix for that state instead",
                        prev.state
                    )));
                }
                extra.insert("baseline".into(), true.into());
                (baseline_entry(c), AuditState::ManualMarkedAsApplied)
            }
            Fix::Mark(state) => {
                let prev = prev.ok_or_else(unknown)?;
                if self.issue_of(prev).is_none() {
                    return Err(Error::NothingToFix {
                        change_id: change_id.to_owned(),
                        state: prev.state,
                    });
                }
                (prev.clone(), state)
            }
            Fix::Retire => {
                let prev = prev.ok_or_else(unknown)?;
                if declared.is_some() {
                    return Err(refuse(
                        "it is still in the pipeline; only a change no longer in code can be retired",
                    ));
                }
                if is_retired(prev) {
                    return Err(refuse("it is retired already"));
                }
                extra.insert("retired".into(), true.into());
                (prev.clone(), AuditState::ManualMarkedAsRolledBack)
            }
            Fix::AcceptChecksum => {
                let prev = prev.ok_or_else(unknown)?;
                let Some(c) = declared else {
                    return Err(refuse("it is not in the loaded pipeline"));
                };
                if !matches!(
                    prev.state,
                    AuditState::Applied | AuditState::ManualMarkedAsApplied
                ) {
                    return Err(refuse(&format!(
                        "it is not applied (latest state {}); only an applied change's checksum can be accepted",
                        prev.state
                    )));
                }
                let (Some(recorded), Some(current)) = (&prev.checksum, &c.meta.checksum) else {
                    return Err(refuse("it has no content checksum"));
                };
                if recorded == current {
                    return Err(refuse(&format!(
                        "its content matches the recorded checksum {recorded}: nothing to accept"
                    )));
                }
                extra.insert("previous_checksum".into(), recorded.clone().into());
                let mut e = prev.clone();
                e.checksum = Some(current.clone());
                (e, AuditState::ManualMarkedAsApplied)
            }
        };
        let previous_state = prev.map(|p| p.state);
        self.stamp_operator_entry(&mut entry, state, epoch, reason, previous_state, extra);
        append_under(lease, store, &entry).await?;
        info!(change_id, state = %state, "operator fix recorded");
        Ok(entry)
    }

    /// Makes `entry` an operator's entry in `state`: written now, by this
    /// runner under `epoch`, with the runner's metadata plus `reason`, the
    /// state it replaces and `extra`.
    pub(crate) fn stamp_operator_entry(
        &self,
        entry: &mut AuditEntry,
        state: AuditState,
        epoch: u64,
        reason: &str,
        previous_state: Option<AuditState>,
        extra: serde_json::Map<String, serde_json::Value>,
    ) {
        entry.state = state;
        entry.created_at = crate::audit::audit_clock();
        entry.tx_strategy = TxStrategy::Manual;
        entry.fencing_token = epoch;
        entry.runner_id = self.inner.runner_id.clone();
        entry.hostname = self.inner.hostname.clone();
        entry.run_id = uuid::Uuid::new_v4().to_string();
        entry.duration_ms = 0;
        entry.error = None;
        // The runner's metadata (e.g. the operator's name, set by the CLI)
        // plus why, and what the entry replaced.
        let mut metadata = match &self.inner.metadata {
            serde_json::Value::Object(m) => m.clone(),
            serde_json::Value::Null => serde_json::Map::new(),
            other => serde_json::Map::from_iter([("runner_metadata".to_owned(), other.clone())]),
        };
        metadata.insert("reason".into(), reason.into());
        if let Some(p) = previous_state {
            metadata.insert("previous_state".into(), p.as_str().into());
        }
        metadata.extend(extra);
        entry.metadata = serde_json::Value::Object(metadata);
    }

    /// The lock's current holder, if any.
    pub async fn lock_status(&self) -> Result<Option<LockInfo>, LockError> {
        self.inner.lock.inspect().await
    }

    /// Removes the lock whoever holds it. Safe for the audit (the fence
    /// rejects the old holder's writes once a new holder claims the store), but the
    /// old holder's non-transactional work may still be in flight.
    pub async fn force_release_lock(&self) -> Result<Option<LockInfo>, LockError> {
        self.inner.lock.force_release().await
    }
}

/// The operator operations that write the audit.
#[derive(Debug, Clone, Copy)]
enum Fix {
    /// Resolve a blocked change with this state.
    Mark(AuditState),
    /// Retire an orphaned entry.
    Retire,
    /// Accept a drifted checksum.
    AcceptChecksum,
    /// Record a change without entry as applied.
    Baseline,
}

/// Whether `e` records an orphan retired by [`Flamingock::retire_orphan`].
pub(crate) fn is_retired(e: &AuditEntry) -> bool {
    e.state == AuditState::ManualMarkedAsRolledBack
        && e.metadata
            .get("retired")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
}
