//! The run: the fast path, the locked run, stages and their changes.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::{debug, info, warn, Instrument};

use crate::audit::{AuditEntry, AuditState, AuditStore, TxStrategy};
use crate::builder::FlamingockBuilder;
use crate::deadline::{target_call, Timeouts};
use crate::decision::{decide, resolution_for, Decision};
use crate::error::{BlockedChange, ChangeFailure, Error, StoreError};
use crate::events::{Emitter, Event};
use crate::fault::FaultInjector;
use crate::import::{ForeignHistory, ImportOptions};
use crate::lock::{HeldLease, LockConfig, LockProvider, Waited};
use crate::operations::is_retired;
use crate::pipeline::{
    Abort, Exec, ExecCtx, InterruptedApply, PlannedChange, RegisteredTarget, RunIdentity,
};
use crate::report::{ChangeOutcome, ChangeReport, RunReport};
use crate::shutdown::Shutdown;
use crate::stop::Stop;
use crate::validate::{CheckPolicy, ValidationErrors, ValidationProblem};

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn AuditStore>,
    pub(crate) lock: Arc<dyn LockProvider>,
    pub(crate) changes: Vec<PlannedChange>,
    /// The store's summary when every change of the pipeline is applied.
    pub(crate) all_applied: crate::summary::AuditSummary,
    pub(crate) targets: Vec<RegisteredTarget>,
    pub(crate) lock_config: LockConfig,
    pub(crate) timeouts: Timeouts,
    pub(crate) enabled: bool,
    pub(crate) validate_only: bool,
    pub(crate) runner_id: String,
    pub(crate) hostname: String,
    pub(crate) metadata: serde_json::Value,
    pub(crate) events: Emitter,
    pub(crate) orphans: CheckPolicy,
    pub(crate) drift: CheckPolicy,
    pub(crate) fault: Option<Arc<dyn FaultInjector>>,
    pub(crate) import: Option<(ForeignHistory, ImportOptions)>,
    pub(crate) prepared: tokio::sync::OnceCell<()>,
}

/// The runner. Cheap to clone; `run` may be called more than once.
#[derive(Clone)]
pub struct Flamingock {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Flamingock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flamingock")
            .field("runner_id", &self.inner.runner_id)
            .field("store", &self.inner.store.describe())
            .field("lock", &self.inner.lock.describe())
            .field("changes", &self.inner.changes.len())
            .finish()
    }
}

impl Flamingock {
    /// A builder.
    pub fn builder() -> FlamingockBuilder {
        FlamingockBuilder::default()
    }

    /// This runner's id, `service@hostname#uuid`.
    pub fn runner_id(&self) -> &str {
        &self.inner.runner_id
    }

    /// Applies every pending change, in order, exactly once.
    ///
    /// Fast path: when the store's applied-set summary
    /// ([`summary`](crate::summary), one read of constant size) equals the
    /// pipeline's, or else the snapshot (read without the lock) shows
    /// nothing to do, returns without touching the lock. Otherwise takes the lock
    /// (waiting for it with backoff, and stopping early when another runner
    /// finishes the work meanwhile), claims an epoch from the audit store,
    /// re-reads and re-plans.
    pub async fn run(&self) -> Result<RunReport, Error> {
        self.run_with(Shutdown::never()).await
    }

    /// [`run`](Self::run), stopping cleanly when `shutdown` completes (a
    /// signal, a cancellation token, a channel).
    ///
    /// On the request the runner takes no new change; a transactional change
    /// in its `apply` is cut short and its transaction rolled back (recorded
    /// FAILED + ROLLED_BACK, so the next run applies it again); a commit
    /// under way finishes; a non-transactional change runs to its end (or
    /// its time limit), since cutting it short would leave a partial effect.
    /// Then the lock is released and the run ends with
    /// [`Error::Interrupted`], which says what the next run will do. A wait
    /// for the lock ends at once. Drop the future returned here (a second
    /// signal) to stop without waiting for anything.
    ///
    /// ```
    /// # use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
    /// # use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
    /// # struct CreateUsers;
    /// # impl Change for CreateUsers {
    /// #     type Target = InMemoryTarget;
    /// #     fn meta(&self) -> ChangeMeta { ChangeMeta::new("create-users").order("0001") }
    /// #     async fn apply(&self, tx: &mut KvTx) -> ChangeResult { tx.put("t", "v"); Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flamingock_core::Error> {
    /// # let store = InMemoryAuditStore::new();
    /// let runner = Flamingock::builder()
    ///     .audit_store(store.clone())
    ///     .target(store.shared_target("app-db"))
    ///     .stage(Stage::new("init").change(CreateUsers))
    ///     .build()?;
    /// // In a service: `runner.run_until(async { tokio::signal::ctrl_c().await.ok(); })`.
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let report = runner.run_until(async { stopped.await.ok(); }).await?;
    /// # drop(stop);
    /// assert_eq!(report.applied(), ["create-users"]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_until(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<RunReport, Error> {
        let (trigger, request) = Shutdown::new();
        let events = self.inner.events.clone();
        let watch = async move {
            shutdown.await;
            let detail = "taking no new change; the current one finishes or rolls back, \
                          then the lock is released"
                .to_owned();
            info!("shutdown requested: {detail}");
            events.emit(Event::ShutdownRequested { detail });
            trigger.fire();
            std::future::pending::<()>().await;
        };
        let run = self.run_with(request);
        tokio::pin!(run, watch);
        match futures::future::select(run, watch).await {
            futures::future::Either::Left((res, _)) => res,
            futures::future::Either::Right(((), _)) => unreachable!("the watcher never ends"),
        }
    }

    pub(crate) async fn run_with(&self, shutdown: Shutdown) -> Result<RunReport, Error> {
        let run_id = uuid::Uuid::new_v4().to_string();
        let span =
            tracing::info_span!("flamingock_run", %run_id, runner_id = %self.inner.runner_id);
        async {
            self.emit(Event::PipelineStarted {
                run_id: run_id.clone(),
            });
            let started = Instant::now();
            let mut res = self.run_inner(&run_id, started, &shutdown).await;
            if let Ok(r) = &mut res {
                r.duration = started.elapsed();
            }
            match &res {
                Ok(r) => {
                    let t = r.totals();
                    info!(
                        applied = t.applied,
                        skipped = t.skipped,
                        took_lock = r.took_lock,
                        "run completed"
                    );
                    self.emit(Event::PipelineCompleted {
                        run_id: run_id.clone(),
                        applied: t.applied,
                    });
                }
                Err(e) => {
                    warn!(error = %crate::error::Chain(e), "run failed");
                    self.emit(Event::PipelineFailed {
                        run_id: run_id.clone(),
                        error: crate::error::Chain(e).to_string(),
                    });
                }
            }
            res
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn prepare(&self) -> Result<(), StoreError> {
        self.inner
            .prepared
            .get_or_try_init(|| self.inner.store.prepare())
            .await
            .map(|_| ())
    }

    pub(crate) fn emit(&self, event: Event) {
        self.inner.events.emit(event);
    }

    /// The constant-size check: `true` when the store keeps a summary and
    /// it says every change of the pipeline is applied with its current
    /// checksum and no other change has an entry (then the full check finds
    /// nothing to do and nothing to report). `false` means "read the
    /// snapshot", not "something is pending".
    pub(crate) async fn summary_says_all_applied(&self) -> Result<bool, Error> {
        if self.inner.changes.is_empty() {
            return Ok(false);
        }
        Ok(self.inner.store.summary().await? == Some(self.inner.all_applied))
    }

    /// Reads the snapshot without the lock: `Ok(true)` when everything is
    /// applied (nothing to do), after checking the audit against the code.
    pub(crate) async fn nothing_pending(&self) -> Result<bool, Error> {
        if self.summary_says_all_applied().await? {
            return Ok(true);
        }
        let snapshot = self.inner.store.snapshot().await?;
        let latest = index(&snapshot);
        self.check_audit(&latest)?;
        Ok(self.decisions(&latest).iter().all(|d| *d == Decision::Skip))
    }

    pub(crate) fn all_skipped(&self, mut report: RunReport) -> RunReport {
        report.changes = self
            .inner
            .changes
            .iter()
            .map(|c| line(c, ChangeOutcome::Skipped))
            .collect();
        report
    }

    /// The run. An error that carries a report gets this run's, complete
    /// (id, duration, every change's line), when it is made.
    pub(crate) async fn run_inner(
        &self,
        run_id: &str,
        started: Instant,
        shutdown: &Shutdown,
    ) -> Result<RunReport, Error> {
        let report = RunReport {
            run_id: run_id.to_owned(),
            ..RunReport::default()
        };
        if !self.inner.enabled {
            info!("flamingock disabled: nothing run");
            return Ok(report);
        }
        // The start-up check of every replica: one read of constant size
        // where the store keeps a summary, before anything else (no DDL, no
        // catalog query, no snapshot) when nothing is pending.
        if self.summary_says_all_applied().await? {
            return Ok(self.all_skipped(report));
        }
        // Another tool's history first (builder option), so the run applies
        // only what that tool had not; a validating run writes nothing.
        if let (Some((history, opts)), false) = (&self.inner.import, self.inner.validate_only) {
            self.import_history(history, opts).await?;
        }
        self.prepare().await?;
        let snapshot = self.inner.store.snapshot().await?;
        let latest = index(&snapshot);
        self.check_audit(&latest)?;
        let decisions = self.decisions(&latest);
        if decisions.iter().all(|d| *d == Decision::Skip) {
            return Ok(self.all_skipped(report));
        }
        if self.inner.validate_only {
            let report = finished(report, started);
            return Err(self.validate_only_error(&latest, &decisions, report));
        }
        let mut still_needed = || -> BoxFuture<'_, Result<bool, Error>> {
            Box::pin(async { Ok(!self.nothing_pending().await?) })
        };
        let waited = HeldLease::acquire(
            self.inner.lock.clone(),
            &self.inner.runner_id,
            &self.inner.lock_config,
            &self.inner.events,
            &mut still_needed,
            shutdown,
        )
        .await;
        let lease = match waited {
            Ok(Waited::Acquired(lease)) => lease,
            Ok(Waited::NotNeeded) => return Ok(self.all_skipped(report)),
            // A shutdown while waiting: this run's report says nothing ran.
            Err(e) => return Err(Stop::from(e).into_error(finished(report, started))),
        };
        let who = RunIdentity {
            run_id: run_id.to_owned(),
            runner_id: self.inner.runner_id.clone(),
            hostname: self.inner.hostname.clone(),
            metadata: self.inner.metadata.clone(),
        };
        let mut report = report;
        report.took_lock = true;
        // Release on every exit path, panics included.
        let result = AssertUnwindSafe(self.locked_run(&lease, &who, report, started, shutdown))
            .catch_unwind()
            .await;
        let released = lease.release().await;
        let mut result = match result {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if let Err(e) = released {
            warn!(error = %crate::error::Chain(&e), "lock release failed; the lease will expire by itself");
            if let Ok(r) = &mut result {
                r.release_error = Some(crate::error::Chain(&e).to_string());
            }
        }
        result
    }

    /// What `run` would do with each change, from the snapshot alone.
    pub(crate) fn decisions(&self, latest: &HashMap<&str, &AuditEntry>) -> Vec<Decision> {
        self.inner
            .changes
            .iter()
            .map(|c| decide(latest.get(c.meta.id.as_str()).copied(), c.meta.recovery))
            .collect()
    }

    pub(crate) fn validate_only_error(
        &self,
        latest: &HashMap<&str, &AuditEntry>,
        decisions: &[Decision],
        report: RunReport,
    ) -> Error {
        let blocked: Vec<BlockedChange> = self
            .inner
            .changes
            .iter()
            .zip(decisions)
            .filter_map(|(c, d)| match d {
                Decision::Block { reason } => Some(blocked(c, latest, reason)),
                Decision::Apply | Decision::Skip | Decision::ResolveByMarker => None,
            })
            .collect();
        if !blocked.is_empty() {
            return Error::Blocked {
                blocked,
                report: Box::new(report),
            };
        }
        Error::Pending {
            pending: self
                .inner
                .changes
                .iter()
                .zip(decisions)
                .filter(|(_, d)| **d != Decision::Skip)
                .map(|(c, _)| c.meta.id.clone())
                .collect(),
        }
    }

    /// Checks the code against the audit: entries of changes no longer in
    /// code, and applied changes whose content changed. All problems at once.
    pub(crate) fn check_audit(&self, latest: &HashMap<&str, &AuditEntry>) -> Result<(), Error> {
        let mut problems = Vec::new();
        let known: HashSet<&str> = self
            .inner
            .changes
            .iter()
            .map(|c| c.meta.id.as_str())
            .collect();
        let mut orphans: Vec<String> = latest
            .iter()
            .filter(|(id, e)| !known.contains(*id) && !is_retired(e))
            .map(|(id, _)| (*id).to_owned())
            .collect();
        if !orphans.is_empty() {
            orphans.sort();
            match self.inner.orphans {
                CheckPolicy::Warn => {
                    warn!(orphans = ?orphans, "audit entries for changes no longer in code")
                }
                CheckPolicy::Error => problems.push(ValidationProblem::OrphanAudit {
                    change_ids: orphans,
                }),
            }
        }
        for c in &self.inner.changes {
            let Some(prev) = latest.get(c.meta.id.as_str()) else {
                continue;
            };
            let applied = matches!(
                prev.state,
                AuditState::Applied | AuditState::ManualMarkedAsApplied
            );
            if let (true, Some(recorded), Some(current)) =
                (applied, &prev.checksum, &c.meta.checksum)
            {
                if recorded != current {
                    let problem = ValidationProblem::ChecksumDrift {
                        change_id: c.meta.id.clone(),
                        recorded: recorded.clone(),
                        current: current.clone(),
                    };
                    match self.inner.drift {
                        CheckPolicy::Warn => warn!(%problem, "checksum drift"),
                        CheckPolicy::Error => problems.push(problem),
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors { problems }.into())
        }
    }

    pub(crate) async fn locked_run(
        &self,
        lease: &HeldLease,
        who: &RunIdentity,
        mut report: RunReport,
        started: Instant,
        shutdown: &Shutdown,
    ) -> Result<RunReport, Error> {
        match self.locked_stages(lease, who, &mut report, shutdown).await {
            Ok(()) => Ok(report),
            Err(stop) => Err(stop.into_error(finished(report, started))),
        }
    }

    /// Claims the epoch, settles what crashed runs left, then runs the
    /// stages in order, writing each change's line into `report`.
    async fn locked_stages(
        &self,
        lease: &HeldLease,
        who: &RunIdentity,
        report: &mut RunReport,
        shutdown: &Shutdown,
    ) -> Result<(), Stop> {
        let store = &*self.inner.store;
        let epoch = store.claim_fence().await?;
        report.fencing_token = Some(epoch);
        debug!(
            epoch,
            lock_token = lease.token(),
            "claimed an epoch from the audit store"
        );
        let limit = self.inner.timeouts.operation;
        for t in &self.inner.targets {
            if tokio::time::timeout(limit, (t.on_claimed)()).await.is_err() {
                warn!(target = %t.id, "clearing stale transactions of the target did not finish in time");
            }
        }
        let snapshot = store.snapshot().await?;
        let latest = index(&snapshot);
        let mut decisions = Vec::with_capacity(self.inner.changes.len());
        let mut blocked_all = Vec::new();
        for c in &self.inner.changes {
            let prev = latest.get(c.meta.id.as_str()).copied();
            let mut d = decide(prev, c.meta.recovery);
            let mut recovered = false;
            if let (Decision::ResolveByMarker, Some(prev)) = (&d, prev) {
                let (entry, committed) = self.resolve_by_marker(c, prev, lease, epoch, who).await?;
                recovered = committed;
                d = decide(Some(&entry), c.meta.recovery);
            }
            let mut resume_from = 0;
            let stepped = prev.and_then(|p| step_progress(c, p));
            if let (Some(done), Some(prev)) = (stepped, prev) {
                match self.resume_point(c, prev, done).await {
                    Ok(from) => {
                        resume_from = from;
                        d = Decision::Apply;
                    }
                    Err(reason) => d = Decision::Block { reason },
                }
            } else if let Some(prev) = prev.filter(|p| outcome_unknown_outside_a_transaction(p)) {
                match self.resolve_by_check(c, prev, lease, epoch, who).await? {
                    Checked::Entry(entry) => {
                        recovered = entry.state == AuditState::Applied;
                        d = decide(Some(&entry), c.meta.recovery);
                    }
                    Checked::Unresolved(why) => {
                        if let Decision::Block { reason } = &mut d {
                            reason.push_str(&format!("; {why}"));
                        }
                    }
                    Checked::NoCheck => {}
                }
            }
            if let (Decision::Block { reason }, Some(prev)) = (&mut d, prev) {
                if let Some(at) = step_position(prev) {
                    reason.push_str(&format!("; {at}"));
                }
            }
            if let Decision::Block { reason } = &d {
                blocked_all.push(blocked(c, &latest, reason));
            }
            decisions.push((d, recovered, resume_from));
        }
        let mut stopped: Option<Stop> = None;
        let mut idx = 0;
        while idx < self.inner.changes.len() {
            let stage = self.inner.changes[idx].stage.to_string();
            let end = idx
                + self.inner.changes[idx..]
                    .iter()
                    .take_while(|c| *c.stage == *stage)
                    .count();
            let range = idx..end;
            idx = end;
            if stopped.is_some() {
                for c in &self.inner.changes[range] {
                    report.changes.push(line(c, ChangeOutcome::NotRun));
                }
                continue;
            }
            if decisions[range.clone()]
                .iter()
                .any(|(d, _, _)| matches!(d, Decision::Block { .. }))
            {
                for (c, (d, _, _)) in self.inner.changes[range.clone()]
                    .iter()
                    .zip(&decisions[range])
                {
                    report.changes.push(line(
                        c,
                        match d {
                            Decision::Block { reason } => ChangeOutcome::Blocked {
                                reason: reason.clone(),
                            },
                            Decision::Skip => ChangeOutcome::Skipped,
                            Decision::Apply | Decision::ResolveByMarker => ChangeOutcome::NotRun,
                        },
                    ));
                }
                self.emit(Event::StageFailed {
                    stage: stage.clone(),
                    error: "blocked changes".into(),
                });
                stopped = Some(Stop::Blocked(blocked_all.clone()));
                continue;
            }
            let stage_span = tracing::info_span!("stage", stage = %stage);
            let run = StageRun {
                lease,
                epoch,
                who,
                shutdown,
            };
            let outcome = self
                .run_stage(&run, range.clone(), &decisions[range], report)
                .instrument(stage_span)
                .await;
            match outcome {
                Ok(()) => self.emit(Event::StageCompleted { stage }),
                Err(e) => {
                    self.emit(Event::StageFailed {
                        stage,
                        error: e.to_string(),
                    });
                    stopped = Some(e);
                }
            }
        }
        match stopped {
            None => Ok(()),
            Some(stop) => Err(stop),
        }
    }

    pub(crate) async fn run_stage(
        &self,
        run: &StageRun<'_>,
        range: std::ops::Range<usize>,
        decisions: &[(Decision, bool, usize)],
        report: &mut RunReport,
    ) -> Result<(), Stop> {
        let who = run.who;
        let changes = &self.inner.changes[range];
        if let Some(first) = changes.first() {
            self.emit(Event::StageStarted {
                stage: first.stage.to_string(),
            });
        }
        let mut failed: Option<Stop> = None;
        for (c, (d, recovered, resume_from)) in changes.iter().zip(decisions) {
            if failed.is_some() {
                report.changes.push(line(c, ChangeOutcome::NotRun));
                continue;
            }
            match d {
                Decision::Skip => report.changes.push(line(
                    c,
                    if *recovered {
                        ChangeOutcome::RecoveredApplied
                    } else {
                        ChangeOutcome::Skipped
                    },
                )),
                _ if run.shutdown.is_requested() => {
                    report.changes.push(line(c, ChangeOutcome::NotRun));
                    failed = Some(interrupted(None));
                }
                _ => {
                    let started = Instant::now();
                    let x = ExecCtx {
                        store: &*self.inner.store,
                        lease: run.lease,
                        epoch: run.epoch,
                        who,
                        change: c,
                        fault: self.inner.fault.as_deref(),
                        events: &self.inner.events,
                        timeouts: self.inner.timeouts,
                        lock_config: &self.inner.lock_config,
                        shutdown: run.shutdown,
                        resume_from: *resume_from,
                    };
                    let exec = c.bound.execute(&x).await;
                    let mut l = line(c, ChangeOutcome::Applied);
                    l.duration = started.elapsed();
                    match exec {
                        Exec::Applied => report.changes.push(l),
                        Exec::Failed { error, rolled_back } => {
                            l.outcome = ChangeOutcome::Failed {
                                error: crate::error::Chain(&*error).to_string(),
                                rolled_back,
                            };
                            report.changes.push(l);
                            failed = Some(if error.is::<InterruptedApply>() {
                                interrupted(Some(&c.meta.id))
                            } else {
                                Stop::ChangeFailed(ChangeFailure {
                                    stage: c.stage.to_string(),
                                    change_id: c.meta.id.clone(),
                                    source: error,
                                })
                            });
                        }
                        Exec::Abort(a) => {
                            l.outcome = ChangeOutcome::NotRun;
                            report.changes.push(l);
                            failed = Some(match a {
                                Abort::LeaseLost(detail) => Stop::LeaseLost(detail),
                                Abort::Store(e) => Stop::store(e),
                                Abort::Target(e) => Stop::from(e),
                                Abort::Injected(source) => Stop::ChangeFailed(ChangeFailure {
                                    stage: c.stage.to_string(),
                                    change_id: c.meta.id.clone(),
                                    source,
                                }),
                            });
                        }
                    }
                }
            }
        }
        match failed {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Resolves a STARTED entry of the separate-with-marker strategy: the marker
    /// exists for that run iff its transaction committed. Returns the entry
    /// written and whether the change turned out applied.
    /// Where a multi-step change cut by a crash goes on: the step after the
    /// `done` recorded ones, once its check says whether it is in place;
    /// `Err` (the reason to block) when it has no check or the check fails.
    pub(crate) async fn resume_point(
        &self,
        c: &PlannedChange,
        prev: &AuditEntry,
        done: usize,
    ) -> Result<usize, String> {
        let names = c.bound.steps();
        let n = names.len();
        if done >= n {
            return Ok(n);
        }
        let name = &names[done];
        match c
            .bound
            .check_step(&c.target_id, self.inner.timeouts, done)
            .await
        {
            Ok(Some(true)) => {
                info!(change_id = %c.meta.id, step = done + 1, steps = n, "the step a crashed run was in is in place (its check says so): going on after it");
                Ok(done + 1)
            }
            Ok(Some(false)) => Ok(done),
            Ok(None) => Err(format!(
                "a run ({}) stopped in step {} of {n} ({name}) and that step has no check, so \
                 whether it is in place is unknown (steps 1 to {done} are done)",
                prev.run_id,
                done + 1
            )),
            Err(e) => Err(format!(
                "a run ({}) stopped in step {} of {n} ({name}) and the step's check failed: {}",
                prev.run_id,
                done + 1,
                crate::error::Chain(&*e)
            )),
        }
    }

    /// Asks the "already in place" check of a change whose last
    /// non-transactional execution left its outcome unknown, and records
    /// what it says: APPLIED (in place), or ROLLED_BACK after running the
    /// change's rollback if it has one (not in place: it runs again). Looking
    /// is under the lock and the fence, like the marker's resolution.
    pub(crate) async fn resolve_by_check(
        &self,
        c: &PlannedChange,
        prev: &AuditEntry,
        lease: &HeldLease,
        epoch: u64,
        who: &RunIdentity,
    ) -> Result<Checked, Stop> {
        let t = self.inner.timeouts;
        let in_place = match c.bound.check(&c.target_id, t).await {
            Ok(None) => return Ok(Checked::NoCheck),
            Ok(Some(in_place)) => in_place,
            Err(e) => {
                warn!(change_id = %c.meta.id, error = %crate::error::Chain(&*e), "the change's already-in-place check failed; its outcome stays unknown");
                return Ok(Checked::Unresolved(format!(
                    "its already-in-place check failed: {}",
                    crate::error::Chain(&*e)
                )));
            }
        };
        let rolled_back = if in_place {
            false
        } else {
            match c.bound.undo(&c.target_id, t).await {
                Ok(ran) => ran,
                Err(e) => {
                    warn!(change_id = %c.meta.id, error = %crate::error::Chain(&*e), "the change is not in place and its rollback failed");
                    return Ok(Checked::Unresolved(format!(
                        "its check says it is not in place, and its rollback failed: {}",
                        crate::error::Chain(&*e)
                    )));
                }
            }
        };
        let mut entry = prev.clone();
        entry.state = if in_place {
            AuditState::Applied
        } else {
            AuditState::RolledBack
        };
        entry.error = None;
        entry.created_at = crate::audit::audit_clock();
        entry.fencing_token = epoch;
        entry.runner_id = who.runner_id.clone();
        entry.hostname = who.hostname.clone();
        entry.run_id = who.run_id.clone();
        entry.metadata = serde_json::json!({
            "resolved_by_check": true,
            "in_place": in_place,
            "rollback_ran": rolled_back,
            "previous_state": prev.state.as_str(),
            "previous_run": prev.run_id,
        });
        info!(change_id = %c.meta.id, in_place, rolled_back, "resolved an unknown outcome with the change's already-in-place check");
        lease.check().map_err(Stop::LeaseLost)?;
        if let Err(e) = self.inner.store.append(&entry).await {
            return Err(Stop::store(e));
        }
        Ok(Checked::Entry(Box::new(entry)))
    }

    pub(crate) async fn resolve_by_marker(
        &self,
        c: &PlannedChange,
        prev: &AuditEntry,
        lease: &HeldLease,
        epoch: u64,
        who: &RunIdentity,
    ) -> Result<(AuditEntry, bool), Stop> {
        let limit = self.inner.timeouts.operation;
        let read = c.bound.marker(&c.meta.id);
        let marker = target_call(&c.target_id, "read the marker", limit, read).await?;
        let committed = marker.is_some_and(|m| m.run_id == prev.run_id);
        let mut entry = prev.clone();
        entry.state = if committed {
            AuditState::Applied
        } else {
            AuditState::RolledBack
        };
        entry.created_at = crate::audit::audit_clock();
        entry.fencing_token = epoch;
        entry.runner_id = who.runner_id.clone();
        entry.hostname = who.hostname.clone();
        entry.metadata = serde_json::json!({
            "resolved_by_marker": true,
            "resolved_by_run": who.run_id,
        });
        info!(change_id = %c.meta.id, committed, "resolved an interrupted execution from the target's marker");
        lease.check().map_err(Stop::LeaseLost)?;
        if let Err(e) = self.inner.store.append(&entry).await {
            return Err(Stop::store(e));
        }
        if committed {
            let clear = c.bound.clear_marker(&c.meta.id);
            if let Err(e) = target_call(&c.target_id, "clear the marker", limit, clear).await {
                warn!(error = %crate::error::Chain(&e), "could not remove a resolved marker");
            }
        }
        Ok((entry, committed))
    }
}

/// What every change of one locked run shares.
pub(crate) struct StageRun<'a> {
    lease: &'a HeldLease,
    epoch: u64,
    who: &'a RunIdentity,
    shutdown: &'a Shutdown,
}

/// Releases an operator's lease after its operation; a failed release is
/// only a warning (the lease expires by itself).
pub(crate) async fn release_after<T>(
    lease: HeldLease,
    result: Result<T, Error>,
) -> Result<T, Error> {
    let released = lease.release().await;
    let value = result?;
    if let Err(e) = released {
        warn!(error = %crate::error::Chain(&e), "lock release after fix failed; the lease will expire by itself");
    }
    Ok(value)
}

/// Appends an operator's entry while `lease` still holds the lock (a lost
/// lease writes nothing).
pub(crate) async fn append_under(
    lease: &HeldLease,
    store: &dyn AuditStore,
    entry: &AuditEntry,
) -> Result<(), Error> {
    lease.check().map_err(|detail| Error::LeaseLost {
        run_id: entry.run_id.clone(),
        detail,
        report: Box::default(),
    })?;
    store.append(entry).await?;
    Ok(())
}

/// The entry that records a declared change as in place without running
/// it (a baseline), before [`Flamingock::stamp_operator_entry`].
pub(crate) fn baseline_entry(c: &PlannedChange) -> AuditEntry {
    AuditEntry {
        stage_id: c.stage.to_string(),
        author: c.meta.author.clone(),
        order: c.meta.order.clone(),
        target_system: c.target_id.clone(),
        recovery: c.meta.recovery,
        transactional: c.transactional,
        checksum: c.meta.checksum.clone(),
        ..AuditEntry::new(&*c.id, AuditState::ManualMarkedAsApplied, 0)
    }
}

pub(crate) fn index(snapshot: &[AuditEntry]) -> HashMap<&str, &AuditEntry> {
    snapshot.iter().map(|e| (e.change_id.as_str(), e)).collect()
}

pub(crate) fn line(c: &PlannedChange, outcome: ChangeOutcome) -> ChangeReport {
    ChangeReport {
        stage: c.stage.clone(),
        change_id: c.id.clone(),
        strategy: c.strategy,
        outcome,
        duration: std::time::Duration::ZERO,
    }
}

pub(crate) fn blocked(
    c: &PlannedChange,
    latest: &HashMap<&str, &AuditEntry>,
    reason: &str,
) -> BlockedChange {
    let prev = latest.get(c.meta.id.as_str());
    BlockedChange {
        stage: c.stage.to_string(),
        change_id: c.meta.id.clone(),
        state: prev.map_or(AuditState::Started, |e| e.state),
        error: prev.and_then(|e| e.error.as_ref().map(ToString::to_string)),
        reason: reason.to_owned(),
        resolution: resolution_for(&c.meta.id, &c.target_id),
    }
}

/// The error of a run stopped by a shutdown request, saying what the next
/// run will do.
pub(crate) fn interrupted(rolled_back: Option<&str>) -> Stop {
    let detail = match rolled_back {
        Some(id) => format!(
            "change '{id}' was cut short and rolled back (recorded FAILED, ROLLED_BACK); no \
             further change was started and the lock was released; the next run applies \
             '{id}' and the changes after it"
        ),
        None => "no further change was started and the lock was released; the next run \
                 continues with the first change not applied"
            .to_owned(),
    };
    Stop::Interrupted(detail)
}

/// `report` with the run's duration, for the error that carries it.
fn finished(mut report: RunReport, started: Instant) -> RunReport {
    report.duration = started.elapsed();
    report
}

/// How many steps of multi-step change `c` its STARTED entry `prev` records
/// done (a non-transactional run cut by a crash), if that is what it is.
pub(crate) fn step_progress(c: &PlannedChange, prev: &AuditEntry) -> Option<usize> {
    if prev.state != AuditState::Started
        || !matches!(
            prev.tx_strategy,
            TxStrategy::NonTransactional | TxStrategy::Manual
        )
        || c.bound.steps().is_empty()
    {
        return None;
    }
    prev.metadata
        .get("steps_done")
        .and_then(serde_json::Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
}

/// A multi-step change's position as an entry records it, for operators:
/// `steps done: 2 of 3 (next: bind-queue)`.
pub(crate) fn step_position(e: &AuditEntry) -> Option<String> {
    let done = e.metadata.get("steps_done")?.as_u64()?;
    let n = e.metadata.get("steps")?.as_u64()?;
    let mut s = format!("steps done: {done} of {n}");
    if let Some(step) = e
        .metadata
        .get("failed_step")
        .and_then(serde_json::Value::as_str)
    {
        s.push_str(&format!(" (failed: {step})"));
    } else if let Some(next) = e
        .metadata
        .get("next_step")
        .and_then(serde_json::Value::as_str)
    {
        s.push_str(&format!(" (next: {next})"));
    }
    Some(s)
}

/// What [`Flamingock::resolve_by_check`] found.
pub(crate) enum Checked {
    /// The change has no check.
    NoCheck,
    /// The check (or the rollback it called for) failed: the outcome stays unknown.
    Unresolved(String),
    /// The entry recorded from the check's answer.
    Entry(Box<AuditEntry>),
}

/// Whether `e` records a non-transactional execution whose outcome is
/// unknown (STARTED, FAILED or ROLLBACK_FAILED): what a change's
/// already-in-place check can settle.
pub(crate) fn outcome_unknown_outside_a_transaction(e: &AuditEntry) -> bool {
    matches!(
        e.tx_strategy,
        TxStrategy::NonTransactional | TxStrategy::Manual
    ) && matches!(
        e.state,
        AuditState::Started | AuditState::Failed | AuditState::RollbackFailed
    )
}
