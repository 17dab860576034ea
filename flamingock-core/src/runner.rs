//! The runner: builder, validation, planning, the locked run and the
//! operations API.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Serialize;
use tracing::{debug, info, warn, Instrument};

use crate::audit::{AuditEntry, AuditState, AuditStore, HistoryFilter, TxStrategy};
use crate::change::ChangeMeta;
use crate::deadline::{target_call, TimedLock, TimedStore, Timeouts};
use crate::decision::{decide, resolution_for, Decision};
use crate::error::{BlockedChange, ChangeFailure, Error, LockError, StoreError};
use crate::events::{Emitter, Event, EventListener};
use crate::fault::FaultInjector;
use crate::import::{ForeignHistory, ImportOptions};
use crate::lock::{HeldLease, LockConfig, LockInfo, LockProvider, Waited};
use crate::pipeline::{
    stored_recovery, strategy_for, Abort, BoundChange, Exec, ExecCtx, InterruptedApply,
    PlannedChange, RegisteredTarget, RunIdentity, Stage, UnboundChange,
};
use crate::report::{ChangeOutcome, ChangeReport, RunReport};
use crate::shutdown::Shutdown;
use crate::target::TargetSystem;
use crate::validate::{check_id, CheckPolicy, ValidationErrors, ValidationProblem};

/// Builds a [`Flamingock`] runner. See the crate docs for a full example.
#[must_use]
pub struct FlamingockBuilder {
    store: Option<Arc<dyn AuditStore>>,
    lock: Option<Arc<dyn LockProvider>>,
    targets: Vec<RegisteredTarget>,
    stages: Vec<Stage>,
    lock_config: LockConfig,
    timeouts: Timeouts,
    enabled: bool,
    validate_only: bool,
    service: String,
    metadata: serde_json::Value,
    listeners: Vec<Arc<dyn EventListener>>,
    orphans: CheckPolicy,
    drift: CheckPolicy,
    fault: Option<Arc<dyn FaultInjector>>,
    import: Option<(ForeignHistory, ImportOptions)>,
}

impl std::fmt::Debug for FlamingockBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlamingockBuilder")
            .field("service", &self.service)
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl Default for FlamingockBuilder {
    fn default() -> Self {
        FlamingockBuilder {
            store: None,
            lock: None,
            targets: Vec::new(),
            stages: Vec::new(),
            lock_config: LockConfig::default(),
            timeouts: Timeouts::default(),
            enabled: true,
            validate_only: false,
            service: "flamingock".to_owned(),
            metadata: serde_json::Value::Null,
            listeners: Vec::new(),
            orphans: CheckPolicy::Error,
            drift: CheckPolicy::Error,
            fault: None,
            import: None,
        }
    }
}

impl FlamingockBuilder {
    /// The audit store (required).
    pub fn audit_store(mut self, store: impl AuditStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }
    /// The lock provider; defaults to the audit store's own.
    pub fn lock_provider(mut self, lock: impl LockProvider) -> Self {
        self.lock = Some(Arc::new(lock));
        self
    }
    /// Registers a target system.
    pub fn target<T: TargetSystem>(mut self, target: T) -> Self {
        self.targets.push(RegisteredTarget::new(target));
        self
    }
    /// Appends a stage.
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stages.push(stage);
        self
    }
    /// Lock timings.
    pub fn lock_config(mut self, cfg: LockConfig) -> Self {
        self.lock_config = cfg;
        self
    }
    /// Deadlines of store, lock and target operations and of each change.
    pub fn timeouts(mut self, t: Timeouts) -> Self {
        self.timeouts = t;
        self
    }
    /// The longest a change's `apply` may run (see [`Timeouts::change`]).
    pub fn change_timeout(mut self, d: std::time::Duration) -> Self {
        self.timeouts = self.timeouts.change(d);
        self
    }
    /// When false, `run` does nothing and returns an empty report.
    pub fn enabled(mut self, yes: bool) -> Self {
        self.enabled = yes;
        self
    }
    /// When true, `run` applies nothing and fails if anything is pending or blocked.
    pub fn validate_only(mut self, yes: bool) -> Self {
        self.validate_only = yes;
        self
    }
    /// Service name, the first part of the runner id `service@hostname#uuid`.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = name.into();
        self
    }
    /// Metadata stored with every audit entry of this runner.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
    /// Adds an event listener.
    pub fn listener(mut self, l: impl EventListener) -> Self {
        self.listeners.push(Arc::new(l));
        self
    }
    /// What to do with audit entries of changes no longer in code.
    pub fn orphans(mut self, policy: CheckPolicy) -> Self {
        self.orphans = policy;
        self
    }
    /// What to do when an applied change's checksum differs from the code's.
    pub fn drift(mut self, policy: CheckPolicy) -> Self {
        self.drift = policy;
        self
    }
    /// Fault injection for crash tests (see [`crate::fault`]).
    #[doc(hidden)]
    pub fn fault_injector(mut self, f: Arc<dyn FaultInjector>) -> Self {
        self.fault = Some(f);
        self
    }

    /// Imports another tool's history at the start of every run, before
    /// deciding what to apply (see [`Flamingock::import_history`]): a
    /// service moving from sqlx, diesel, Flyway, refinery or Mongock reads
    /// the tool's table with its backend and hands it here, and its first
    /// run applies only what that tool had not. Idempotent: once imported,
    /// a run finds nothing left to record and takes no lock for it. A run
    /// with rows that do not fit fails with [`Error::ImportRefused`]
    /// before anything is applied, unless the options accept them.
    /// Ignored by a [`validate_only`](Self::validate_only) runner.
    ///
    /// ```
    /// # use flamingock_core::memory::InMemoryAuditStore;
    /// use flamingock_core::import::{ForeignHistory, ImportOptions, Tool};
    /// # fn demo(history: ForeignHistory) -> Result<(), flamingock_core::Error> {
    /// // `history` read with e.g. `flamingock_postgres::read_history(&pool, Tool::Sqlx, None)`.
    /// let runner = flamingock_core::Flamingock::builder()
    ///     .audit_store(InMemoryAuditStore::new())
    ///     .import_history(history, ImportOptions::new("moved from sqlx"))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn import_history(mut self, history: ForeignHistory, opts: ImportOptions) -> Self {
        self.import = Some((history, opts));
        self
    }

    /// Validates the pipeline (every problem at once) and builds the runner.
    pub fn build(self) -> Result<Flamingock, Error> {
        let store = self
            .store
            .ok_or_else(|| Error::Config("no audit store: call .audit_store(..)".into()))?;
        let lock = match self.lock.or_else(|| store.default_lock()) {
            Some(l) => l,
            None => {
                return Err(Error::Config(format!(
                    "audit store {} has no lock of its own: call .lock_provider(..)",
                    store.describe()
                )))
            }
        };
        let changes = plan_pipeline(&self.stages, &self.targets, store.store_id())?;
        let all_applied = crate::summary::AuditSummary::all_applied(
            changes
                .iter()
                .map(|c| (c.meta.id.as_str(), c.meta.checksum.as_deref())),
        );
        let store = TimedStore::wrap(store, self.timeouts.operation);
        let lock = TimedLock::wrap(lock, self.timeouts.operation);
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let runner_id = format!("{}@{}#{}", self.service, hostname, uuid::Uuid::new_v4());
        Ok(Flamingock {
            inner: Arc::new(Inner {
                store,
                lock,
                changes,
                all_applied,
                targets: self.targets,
                lock_config: self.lock_config,
                timeouts: self.timeouts,
                enabled: self.enabled,
                validate_only: self.validate_only,
                runner_id,
                hostname,
                metadata: self.metadata,
                events: Emitter::new(self.listeners),
                orphans: self.orphans,
                drift: self.drift,
                fault: self.fault,
                import: self.import,
                prepared: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

/// Validates stages and targets, binds each change to its target and sorts
/// the result into execution order.
///
/// Every start pays for this, so it reads each change's meta once, checks
/// duplicates on sorted references rather than maps of copies, and shares
/// each meta with its planned change.
fn plan_pipeline(
    stages: &[Stage],
    targets: &[RegisteredTarget],
    store_id: &str,
) -> Result<Vec<PlannedChange>, ValidationErrors> {
    let mut problems = Vec::new();
    let mut seen_targets = HashSet::new();
    for t in targets {
        if !seen_targets.insert(t.id.as_str()) {
            problems.push(ValidationProblem::DuplicateTarget {
                target: t.id.clone(),
            });
        }
    }
    let known = || -> Vec<String> { targets.iter().map(|t| t.id.clone()).collect() };
    let metas: Vec<Vec<&Arc<ChangeMeta>>> = stages
        .iter()
        .map(|s| s.changes.iter().map(|c| c.meta()).collect())
        .collect();
    // (change id, stage id) of every change, for duplicate ids.
    let mut ids: Vec<(&str, &str)> = Vec::with_capacity(metas.iter().map(Vec::len).sum());
    let mut stage_ids = HashSet::new();
    // Per stage, the bound changes in execution order.
    let mut bound: Vec<Vec<Binding<'_>>> = Vec::with_capacity(stages.len());
    for (stage, metas) in stages.iter().zip(&metas) {
        if stage.id.is_empty() || !stage_ids.insert(stage.id.as_str()) {
            problems.push(ValidationProblem::BadStage {
                stage: stage.id.clone(),
                detail: if stage.id.is_empty() {
                    "empty stage id".into()
                } else {
                    "stage id used twice".into()
                },
            });
        }
        let mut in_stage = Vec::with_capacity(metas.len());
        for (i, (c, meta)) in stage.changes.iter().zip(metas).enumerate() {
            check_id(&stage.id, &meta.order, &meta.id, &mut problems);
            ids.push((meta.id.as_str(), stage.id.as_str()));
            let Some(target) = bind_target(c.as_ref(), meta, targets, &known, &mut problems) else {
                continue;
            };
            if let (Some(reason), false) = (
                &target.caps.transactions_unavailable,
                meta.transactional == Some(false),
            ) {
                problems.push(ValidationProblem::TransactionsUnavailable {
                    change_id: meta.id.clone(),
                    target: target.id.clone(),
                    reason: reason.clone(),
                });
                continue;
            }
            if meta.transactional == Some(true) && !target.caps.transactions {
                problems.push(ValidationProblem::TransactionalUnsupported {
                    change_id: meta.id.clone(),
                    target: target.id.clone(),
                });
                continue;
            }
            let transactional = meta.transactional.unwrap_or(true) && target.caps.transactions;
            let Some(b) = c.bind(&target.any) else {
                continue;
            };
            in_stage.push((i, target, transactional, b));
        }
        order_problems(&stage.id, metas, &mut problems);
        // Stable: changes with equal orders (already a problem) keep their
        // declaration order.
        in_stage.sort_by(|a, b| metas[a.0].order.cmp(&metas[b.0].order));
        bound.push(in_stage);
    }
    ids.sort_by(|a, b| a.0.cmp(b.0));
    for same in ids.chunk_by(|a, b| a.0 == b.0) {
        if same.len() > 1 && !same[0].0.is_empty() {
            problems.push(ValidationProblem::DuplicateId {
                change_id: same[0].0.to_owned(),
                stages: same.iter().map(|(_, s)| (*s).to_owned()).collect(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(ValidationErrors { problems });
    }
    drop(ids);
    let mut out = Vec::with_capacity(bound.iter().map(Vec::len).sum());
    for ((stage, metas), in_stage) in stages.iter().zip(metas).zip(bound) {
        let stage_id: Arc<str> = Arc::from(stage.id.as_str());
        for (i, target, transactional, b) in in_stage {
            let meta = Arc::clone(metas[i]);
            out.push(PlannedChange {
                stage: stage_id.clone(),
                id: Arc::from(meta.id.as_str()),
                meta,
                target_id: target.id.clone(),
                strategy: strategy_for(transactional, &target.caps, store_id),
                transactional,
                bound: b,
            });
        }
    }
    Ok(out)
}

/// A change bound to its target during planning: (index in its stage,
/// target, transactional, bound change).
type Binding<'t> = (usize, &'t RegisteredTarget, bool, Arc<dyn BoundChange>);

/// The target a change runs on: the one it names, or the only registered
/// target of its type; `None` after recording why not.
fn bind_target<'t>(
    c: &dyn UnboundChange,
    meta: &ChangeMeta,
    targets: &'t [RegisteredTarget],
    known: &dyn Fn() -> Vec<String>,
    problems: &mut Vec<ValidationProblem>,
) -> Option<&'t RegisteredTarget> {
    match &meta.target_system {
        Some(name) => match targets.iter().find(|t| &t.id == name) {
            None => {
                problems.push(ValidationProblem::UnknownTarget {
                    change_id: meta.id.clone(),
                    target: name.clone(),
                    known: known(),
                });
                None
            }
            Some(t) if t.type_id != c.target_type() => {
                problems.push(ValidationProblem::TargetTypeMismatch {
                    change_id: meta.id.clone(),
                    target: name.clone(),
                    expected: c.target_type_name(),
                });
                None
            }
            Some(t) => Some(t),
        },
        None => {
            let mut fits = targets.iter().filter(|t| t.type_id == c.target_type());
            match (fits.next(), fits.next()) {
                (Some(one), None) => Some(one),
                (None, _) => {
                    problems.push(ValidationProblem::UnknownTarget {
                        change_id: meta.id.clone(),
                        target: format!("(any {})", c.target_type_name()),
                        known: known(),
                    });
                    None
                }
                (Some(_), Some(_)) => {
                    problems.push(ValidationProblem::AmbiguousTarget {
                        change_id: meta.id.clone(),
                        candidates: targets
                            .iter()
                            .filter(|t| t.type_id == c.target_type())
                            .map(|t| t.id.clone())
                            .collect(),
                    });
                    None
                }
            }
        }
    }
}

/// Orders of one stage: numbers that text order would misplace, and orders
/// used twice.
fn order_problems(stage: &str, metas: &[&Arc<ChangeMeta>], problems: &mut Vec<ValidationProblem>) {
    // (order, change id), stably sorted by order: ids of one order keep
    // their declaration order.
    let mut orders: Vec<(&str, &str)> = metas
        .iter()
        .map(|m| (m.order.as_str(), m.id.as_str()))
        .collect();
    orders.sort_by(|a, b| a.0.cmp(b.0));
    let conflicts = crate::order::numeric_order_conflicts(orders.iter().map(|o| o.0));
    if !conflicts.is_empty() {
        let first_id = |o: &str| {
            let at = orders.partition_point(|x| x.0 < o);
            orders
                .get(at)
                .filter(|x| x.0 == o)
                .map(|x| x.1.to_owned())
                .unwrap_or_default()
        };
        problems.push(ValidationProblem::NumericOrderMismatch {
            stage: stage.to_owned(),
            pairs: conflicts
                .iter()
                .map(|(a, b)| {
                    (
                        (first_id(a), (*a).to_owned()),
                        (first_id(b), (*b).to_owned()),
                    )
                })
                .collect(),
        });
    }
    for same in orders.chunk_by(|a, b| a.0 == b.0) {
        if same.len() > 1 {
            problems.push(ValidationProblem::DuplicateOrder {
                stage: stage.to_owned(),
                order: same[0].0.to_owned(),
                change_ids: same.iter().map(|(_, id)| (*id).to_owned()).collect(),
            });
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn AuditStore>,
    lock: Arc<dyn LockProvider>,
    pub(crate) changes: Vec<PlannedChange>,
    /// The store's summary when every change of the pipeline is applied.
    all_applied: crate::summary::AuditSummary,
    targets: Vec<RegisteredTarget>,
    lock_config: LockConfig,
    timeouts: Timeouts,
    enabled: bool,
    validate_only: bool,
    runner_id: String,
    hostname: String,
    metadata: serde_json::Value,
    events: Emitter,
    orphans: CheckPolicy,
    drift: CheckPolicy,
    fault: Option<Arc<dyn FaultInjector>>,
    import: Option<(ForeignHistory, ImportOptions)>,
    prepared: tokio::sync::OnceCell<()>,
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

/// What `plan` says would happen to a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PlanAction {
    /// It would run.
    Apply,
    /// It is applied already.
    Skip,
    /// Its previous run left a marker question the runner answers by itself.
    ResolveByMarker,
    /// An operator must resolve it first.
    Block {
        /// Why.
        reason: String,
    },
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PlanItem {
    /// Stage id.
    pub stage: String,
    /// Change id.
    pub change_id: String,
    /// Order.
    pub order: String,
    /// Target system id.
    pub target: String,
    /// Execution strategy.
    pub strategy: TxStrategy,
    /// Why the change is (not) transactional, when its form decided it
    /// ([`ChangeMeta::transactional_reason`](crate::ChangeMeta::transactional_reason)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What would happen.
    pub action: PlanAction,
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

    async fn run_with(&self, shutdown: Shutdown) -> Result<RunReport, Error> {
        let run_id = uuid::Uuid::new_v4().to_string();
        let span =
            tracing::info_span!("flamingock_run", %run_id, runner_id = %self.inner.runner_id);
        async {
            self.emit(Event::PipelineStarted {
                run_id: run_id.clone(),
            });
            let started = Instant::now();
            let mut res = self.run_inner(&run_id, &shutdown).await;
            match &mut res {
                Ok(r) => r.duration = started.elapsed(),
                Err(e) => {
                    if let Error::Interrupted { run_id: id, .. } = e {
                        id.clone_from(&run_id);
                    }
                    if let Some(r) = e.report_mut() {
                        r.run_id.clone_from(&run_id);
                        r.duration = started.elapsed();
                    }
                }
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
                    warn!(error = %e, "run failed");
                    self.emit(Event::PipelineFailed {
                        run_id: run_id.clone(),
                        error: e.to_string(),
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

    fn emit(&self, event: Event) {
        self.inner.events.emit(event);
    }

    /// The constant-size check: `true` when the store keeps a summary and
    /// it says every change of the pipeline is applied with its current
    /// checksum and no other change has an entry (then the full check finds
    /// nothing to do and nothing to report). `false` means "read the
    /// snapshot", not "something is pending".
    async fn summary_says_all_applied(&self) -> Result<bool, Error> {
        if self.inner.changes.is_empty() {
            return Ok(false);
        }
        Ok(self.inner.store.summary().await? == Some(self.inner.all_applied))
    }

    /// Reads the snapshot without the lock: `Ok(true)` when everything is
    /// applied (nothing to do), after checking the audit against the code.
    async fn nothing_pending(&self) -> Result<bool, Error> {
        if self.summary_says_all_applied().await? {
            return Ok(true);
        }
        let snapshot = self.inner.store.snapshot().await?;
        let latest = index(&snapshot);
        self.check_audit(&latest)?;
        Ok(self.decisions(&latest).iter().all(|d| *d == Decision::Skip))
    }

    fn all_skipped(&self, mut report: RunReport) -> RunReport {
        report.changes = self
            .inner
            .changes
            .iter()
            .map(|c| line(c, ChangeOutcome::Skipped))
            .collect();
        report
    }

    async fn run_inner(&self, run_id: &str, shutdown: &Shutdown) -> Result<RunReport, Error> {
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
            return Err(self.validate_only_error(&latest, &decisions, report));
        }
        let mut still_needed = || -> BoxFuture<'_, Result<bool, Error>> {
            Box::pin(async { Ok(!self.nothing_pending().await?) })
        };
        let lease = match HeldLease::acquire(
            self.inner.lock.clone(),
            &self.inner.runner_id,
            &self.inner.lock_config,
            &self.inner.events,
            &mut still_needed,
            shutdown,
        )
        .await?
        {
            Waited::Acquired(lease) => lease,
            Waited::NotNeeded => return Ok(self.all_skipped(report)),
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
        let result = AssertUnwindSafe(self.locked_run(&lease, &who, report, shutdown))
            .catch_unwind()
            .await;
        let released = lease.release().await;
        let mut result = match result {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if let Err(e) = released {
            warn!(error = %e, "lock release failed; the lease will expire by itself");
            if let Ok(r) = &mut result {
                r.release_error = Some(e.to_string());
            }
        }
        result
    }

    /// What `run` would do with each change, from the snapshot alone.
    fn decisions(&self, latest: &HashMap<&str, &AuditEntry>) -> Vec<Decision> {
        self.inner
            .changes
            .iter()
            .map(|c| decide(latest.get(c.meta.id.as_str()).copied(), c.meta.recovery))
            .collect()
    }

    fn validate_only_error(
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
                _ => None,
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
    fn check_audit(&self, latest: &HashMap<&str, &AuditEntry>) -> Result<(), Error> {
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

    async fn locked_run(
        &self,
        lease: &HeldLease,
        who: &RunIdentity,
        mut report: RunReport,
        shutdown: &Shutdown,
    ) -> Result<RunReport, Error> {
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
            if let Decision::Block { reason } = &d {
                blocked_all.push(blocked(c, &latest, reason));
            }
            decisions.push((d, recovered));
        }
        let mut stopped: Option<Error> = None;
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
                .any(|(d, _)| matches!(d, Decision::Block { .. }))
            {
                for (c, (d, _)) in self.inner.changes[range.clone()]
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
                            _ => ChangeOutcome::NotRun,
                        },
                    ));
                }
                self.emit(Event::StageFailed {
                    stage: stage.clone(),
                    error: "blocked changes".into(),
                });
                stopped = Some(Error::Blocked {
                    blocked: blocked_all.clone(),
                    report: Box::default(),
                });
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
                .run_stage(&run, range.clone(), &decisions[range], &mut report)
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
            None => Ok(report),
            Some(e) => Err(attach_report(e, report)),
        }
    }

    async fn run_stage(
        &self,
        run: &StageRun<'_>,
        range: std::ops::Range<usize>,
        decisions: &[(Decision, bool)],
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let who = run.who;
        let changes = &self.inner.changes[range];
        if let Some(first) = changes.first() {
            self.emit(Event::StageStarted {
                stage: first.stage.to_string(),
            });
        }
        let mut failed: Option<Error> = None;
        for (c, (d, recovered)) in changes.iter().zip(decisions) {
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
                    failed = Some(interrupted(who, None));
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
                    };
                    let exec = c.bound.execute(&x).await;
                    let mut l = line(c, ChangeOutcome::Applied);
                    l.duration = started.elapsed();
                    match exec {
                        Exec::Applied => report.changes.push(l),
                        Exec::Failed { error, rolled_back } => {
                            l.outcome = ChangeOutcome::Failed {
                                error: error.to_string(),
                                rolled_back,
                            };
                            report.changes.push(l);
                            failed = Some(if error.is::<InterruptedApply>() {
                                interrupted(who, Some(&c.meta.id))
                            } else {
                                Error::ChangeFailed {
                                    failure: ChangeFailure {
                                        stage: c.stage.to_string(),
                                        change_id: c.meta.id.clone(),
                                        source: error,
                                    },
                                    report: Box::default(),
                                }
                            });
                        }
                        Exec::Abort(a) => {
                            l.outcome = ChangeOutcome::NotRun;
                            report.changes.push(l);
                            failed = Some(match a {
                                Abort::LeaseLost(detail) => Error::LeaseLost {
                                    run_id: who.run_id.clone(),
                                    detail,
                                    report: Box::default(),
                                },
                                Abort::Store(e) => store_abort(e, who),
                                Abort::Target(e) => Error::Target(e),
                                Abort::Injected(source) => Error::ChangeFailed {
                                    failure: ChangeFailure {
                                        stage: c.stage.to_string(),
                                        change_id: c.meta.id.clone(),
                                        source,
                                    },
                                    report: Box::default(),
                                },
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
    async fn resolve_by_marker(
        &self,
        c: &PlannedChange,
        prev: &AuditEntry,
        lease: &HeldLease,
        epoch: u64,
        who: &RunIdentity,
    ) -> Result<(AuditEntry, bool), Error> {
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
        lease.check().map_err(|detail| Error::LeaseLost {
            run_id: who.run_id.clone(),
            detail,
            report: Box::default(),
        })?;
        if let Err(e) = self.inner.store.append(&entry).await {
            return Err(store_abort(e, who));
        }
        if committed {
            let clear = c.bound.clear_marker(&c.meta.id);
            if let Err(e) = target_call(&c.target_id, "clear the marker", limit, clear).await {
                warn!(error = %e, "could not remove a resolved marker");
            }
        }
        Ok((entry, committed))
    }

    // ---- operations API ----------------------------------------------

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
            Decision::Block { reason } => Some(BlockedChange {
                stage: e.stage_id.clone(),
                change_id: e.change_id.clone(),
                state: e.state,
                error: e.error.as_ref().map(ToString::to_string),
                reason,
                resolution: resolution_for(&e.change_id, &e.target_system),
            }),
            _ => None,
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

/// What every change of one locked run shares.
struct StageRun<'a> {
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
        warn!(error = %e, "lock release after fix failed; the lease will expire by itself");
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

/// A store error that stops a run; a fence rejection means the lease is gone.
fn store_abort(e: StoreError, who: &RunIdentity) -> Error {
    match e {
        StoreError::Fenced { .. } => Error::LeaseLost {
            run_id: who.run_id.clone(),
            detail: e.to_string(),
            report: Box::default(),
        },
        other => Error::Store(other),
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
fn is_retired(e: &AuditEntry) -> bool {
    e.state == AuditState::ManualMarkedAsRolledBack
        && e.metadata
            .get("retired")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
}

fn index(snapshot: &[AuditEntry]) -> HashMap<&str, &AuditEntry> {
    snapshot.iter().map(|e| (e.change_id.as_str(), e)).collect()
}

fn line(c: &PlannedChange, outcome: ChangeOutcome) -> ChangeReport {
    ChangeReport {
        stage: c.stage.clone(),
        change_id: c.id.clone(),
        strategy: c.strategy,
        outcome,
        duration: std::time::Duration::ZERO,
    }
}

fn blocked(c: &PlannedChange, latest: &HashMap<&str, &AuditEntry>, reason: &str) -> BlockedChange {
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

fn attach_report(e: Error, report: RunReport) -> Error {
    match e {
        Error::Blocked { blocked, .. } => Error::Blocked {
            blocked,
            report: Box::new(report),
        },
        Error::ChangeFailed { failure, .. } => Error::ChangeFailed {
            failure,
            report: Box::new(report),
        },
        Error::LeaseLost { run_id, detail, .. } => Error::LeaseLost {
            run_id,
            detail,
            report: Box::new(report),
        },
        Error::Interrupted { run_id, detail, .. } => Error::Interrupted {
            run_id,
            detail,
            report: Box::new(report),
        },
        other => other,
    }
}

/// The error of a run stopped by a shutdown request, saying what the next
/// run will do.
fn interrupted(who: &RunIdentity, rolled_back: Option<&str>) -> Error {
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
    Error::Interrupted {
        run_id: who.run_id.clone(),
        detail,
        report: Box::default(),
    }
}
