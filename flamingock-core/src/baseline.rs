//! Adopting a system that is already in place: recording every change up to
//! a point as applied without running it (a database built by hand, restored
//! from a dump, or migrated by another tool).

use tracing::info;

use crate::audit::{AuditEntry, AuditState};
use crate::error::Error;
use crate::lock::HeldLease;
use crate::pipeline::PlannedChange;
use crate::runner::{append_under, baseline_entry, release_after, Flamingock};

impl Flamingock {
    /// Records every change of the pipeline up to and including `up_to` (a
    /// change id, or an order that names one change) as applied without
    /// running it: one `MANUAL_MARKED_AS_APPLIED` entry per change, built
    /// from its declaration, with metadata `baseline: true`,
    /// `baseline_up_to` and `reason`. After it, a run applies only the
    /// changes after `up_to`.
    ///
    /// Takes the lock. Refused, before anything is written, when any of
    /// those changes already has an audit entry other than a baseline (the
    /// error lists them all); changes already baselined are left as they
    /// are, so a baseline interrupted half-way is finished by running it
    /// again. Returns the entries written.
    ///
    /// ```
    /// # use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
    /// # use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
    /// # struct Step(&'static str, &'static str);
    /// # impl Change for Step {
    /// #     type Target = InMemoryTarget;
    /// #     fn meta(&self) -> ChangeMeta { ChangeMeta::new(self.0).order(self.1) }
    /// #     async fn apply(&self, tx: &mut KvTx) -> ChangeResult { tx.put(self.0, "v"); Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flamingock_core::Error> {
    /// let store = InMemoryAuditStore::new();
    /// let runner = Flamingock::builder()
    ///     .audit_store(store.clone())
    ///     .target(InMemoryTarget::new("db"))
    ///     .stage(Stage::new("init").change(Step("create-users", "0001"))
    ///         .change(Step("create-orders", "0002")).change(Step("add-index", "0003")))
    ///     .build()?;
    /// // The database was restored from a dump taken after 0002.
    /// let written = runner.baseline_up_to("0002", "restored from the 2026-12-01 dump").await?;
    /// assert_eq!(written.len(), 2);
    /// let report = runner.run().await?;
    /// assert_eq!(report.applied(), ["add-index"]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn baseline_up_to(
        &self,
        up_to: &str,
        reason: &str,
    ) -> Result<Vec<AuditEntry>, Error> {
        let end = self.baseline_end(up_to)?;
        self.prepare().await?;
        let lease = self.operator_lease().await?;
        let changes = &self.inner.changes[..=end];
        let result = self.baseline_locked(changes, up_to, reason, &lease).await;
        release_after(lease, result).await
    }

    /// The index of the last change a baseline `up_to` covers.
    fn baseline_end(&self, up_to: &str) -> Result<usize, Error> {
        let changes = &self.inner.changes;
        if let Some(i) = changes.iter().position(|c| &*c.id == up_to) {
            return Ok(i);
        }
        let by_order: Vec<usize> = (0..changes.len())
            .filter(|i| changes[*i].meta.order == up_to)
            .collect();
        match by_order.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::FixRefused {
                change_id: up_to.to_owned(),
                detail: "no change of the loaded pipeline has this id or order".into(),
            }),
            many => Err(Error::FixRefused {
                change_id: up_to.to_owned(),
                detail: format!(
                    "this order names {} changes ({}): give the change id",
                    many.len(),
                    many.iter()
                        .map(|i| format!("{} in stage {}", changes[*i].id, changes[*i].stage))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    async fn baseline_locked(
        &self,
        changes: &[PlannedChange],
        up_to: &str,
        reason: &str,
        lease: &HeldLease,
    ) -> Result<Vec<AuditEntry>, Error> {
        let store = &*self.inner.store;
        let epoch = store.claim_fence().await?;
        let snapshot = store.snapshot().await?;
        let latest = |id: &str| snapshot.iter().find(|e| e.change_id == id);
        let recorded: Vec<String> = changes
            .iter()
            .filter_map(|c| latest(&c.id).map(|e| (c, e)))
            .filter(|(_, e)| !is_baseline(e))
            .map(|(c, e)| format!("{} ({})", c.id, e.state))
            .collect();
        if !recorded.is_empty() {
            return Err(Error::FixRefused {
                change_id: up_to.to_owned(),
                detail: format!(
                    "{} of the {} changes up to it already have audit entries: {}; a baseline \
                     only records changes nothing has recorded yet (resolve those with `audit fix`, \
                     or baseline up to an earlier change)",
                    recorded.len(),
                    changes.len(),
                    recorded.join(", ")
                ),
            });
        }
        let mut written = Vec::new();
        for c in changes.iter().filter(|c| latest(&c.id).is_none()) {
            let mut entry = baseline_entry(c);
            let extra = serde_json::Map::from_iter([
                ("baseline".to_owned(), true.into()),
                ("baseline_up_to".to_owned(), up_to.into()),
            ]);
            self.stamp_operator_entry(
                &mut entry,
                AuditState::ManualMarkedAsApplied,
                epoch,
                reason,
                None,
                extra,
            );
            append_under(lease, store, &entry).await?;
            written.push(entry);
        }
        info!(up_to, recorded = written.len(), "baseline recorded");
        Ok(written)
    }
}

/// Whether `e` is a baseline entry (left alone by a repeated baseline).
fn is_baseline(e: &AuditEntry) -> bool {
    e.state == AuditState::ManualMarkedAsApplied
        && e.metadata.get("baseline") == Some(&serde_json::Value::Bool(true))
}
