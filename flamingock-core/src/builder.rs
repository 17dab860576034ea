//! Building a runner: its settings, validation of the pipeline, and the plan of
//! strategies each change gets.

use std::collections::HashSet;
use std::sync::Arc;

use crate::audit::AuditStore;
use crate::change::ChangeMeta;
use crate::deadline::{TimedLock, TimedStore, Timeouts};
use crate::error::Error;
use crate::events::{Emitter, EventListener};
use crate::fault::FaultInjector;
use crate::import::{ForeignHistory, ImportOptions};
use crate::lock::{LockConfig, LockProvider};
use crate::pipeline::{BoundChange, PlannedChange, RegisteredTarget};
use crate::stage::{Stage, UnboundChange};
use crate::strategy::strategy_for;
use crate::target::TargetSystem;
use crate::validate::{check_id, CheckPolicy, ValidationErrors, ValidationProblem};

use crate::runner::{Flamingock, Inner};

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
    /// Fault injection for crash tests: `f` is called at every
    /// [fault point](crate::fault::FaultPoint) of every change and may fail
    /// the run there or freeze it (a test then drops the run's future, as a
    /// crash would). Only with the `testing` feature, which
    /// `flamingock-test-support` turns on; never in an application.
    #[cfg(feature = "testing")]
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
