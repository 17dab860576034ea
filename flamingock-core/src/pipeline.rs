//! Stages hold type-erased changes; binding ties each change to its target
//! (checked by type), and the per-change execution strategies live here.

use std::any::{Any, TypeId};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::{info, warn, Instrument};

use crate::audit::{AuditEntry, AuditState, AuditStore, ErrorInfo, TxStrategy};
use crate::change::{Change, ChangeMeta, RecoveryStrategy};
use crate::deadline::{human, target_call, Timeouts};
use crate::error::{BoxError, NoRollback, StoreError, TargetError};
use crate::events::{Emitter, Event};
use crate::fault::{FaultInjector, FaultPoint};
use crate::lock::{Backoff, HeldLease, LockConfig};
use crate::shutdown::Shutdown;
use crate::target::{CommitWith, ContextMode, Marker, TargetCapabilities, TargetSystem};

/// An ordered group of changes. Changes run in lexicographic order of their
/// `order` within the stage; stages run in the order they were added.
///
/// ```
/// use flamingock_core::{Change, ChangeMeta, ChangeResult, Stage};
/// use flamingock_core::memory::{InMemoryTarget, KvTx};
///
/// struct CreateIndex;
/// impl Change for CreateIndex {
///     type Target = InMemoryTarget;
///     fn meta(&self) -> ChangeMeta { ChangeMeta::new("create-index").order("0001") }
///     async fn apply(&self, tx: &mut KvTx) -> ChangeResult { tx.put("index:users", "email"); Ok(()) }
/// }
///
/// let stage = Stage::new("schema").change(CreateIndex);
/// assert_eq!(stage.len(), 1);
/// ```
#[derive(Clone)]
pub struct Stage {
    pub(crate) id: String,
    pub(crate) changes: Vec<Arc<dyn UnboundChange>>,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("id", &self.id)
            .field(
                "changes",
                &self
                    .changes
                    .iter()
                    .map(|c| &c.meta().id)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Stage {
    /// An empty stage.
    pub fn new(id: impl Into<String>) -> Self {
        Stage {
            id: id.into(),
            changes: Vec::new(),
        }
    }

    /// Adds a change (builder style).
    pub fn change<C: Change>(mut self, change: C) -> Self {
        self.add(change);
        self
    }

    /// Adds a change.
    pub fn add<C: Change>(&mut self, change: C) -> &mut Self {
        self.add_shared(Arc::new(change))
    }

    /// Adds a change shared with other pipelines (e.g. several runners in one process).
    pub fn add_shared<C: Change>(&mut self, change: Arc<C>) -> &mut Self {
        let meta = Arc::new(change.meta());
        self.changes.push(Arc::new(Unbound { change, meta }));
        self
    }

    /// The stage id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether the stage has no changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

pub(crate) trait UnboundChange: Send + Sync {
    /// Read once, when the change was added to its stage; shared with the
    /// planned change (no copy per runner built).
    fn meta(&self) -> &Arc<ChangeMeta>;
    fn target_type(&self) -> TypeId;
    fn target_type_name(&self) -> &'static str;
    fn bind(&self, target: &Arc<dyn Any + Send + Sync>) -> Option<Arc<dyn BoundChange>>;
}

struct Unbound<C: Change> {
    change: Arc<C>,
    meta: Arc<ChangeMeta>,
}

impl<C: Change> UnboundChange for Unbound<C> {
    fn meta(&self) -> &Arc<ChangeMeta> {
        &self.meta
    }
    fn target_type(&self) -> TypeId {
        TypeId::of::<C::Target>()
    }
    fn target_type_name(&self) -> &'static str {
        std::any::type_name::<C::Target>()
    }
    fn bind(&self, target: &Arc<dyn Any + Send + Sync>) -> Option<Arc<dyn BoundChange>> {
        let target = target.clone().downcast::<C::Target>().ok()?;
        Some(Arc::new(Bound {
            change: self.change.clone(),
            target,
        }))
    }
}

/// [`TargetSystem::on_claimed`] of a registered target, type-erased.
pub(crate) type OnClaimed = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A target as the registry keeps it.
#[derive(Clone)]
pub(crate) struct RegisteredTarget {
    pub(crate) id: String,
    pub(crate) caps: TargetCapabilities,
    pub(crate) type_id: TypeId,
    pub(crate) any: Arc<dyn Any + Send + Sync>,
    pub(crate) on_claimed: OnClaimed,
}

impl RegisteredTarget {
    pub(crate) fn new<T: TargetSystem>(target: T) -> Self {
        let target = Arc::new(target);
        let hook = target.clone();
        RegisteredTarget {
            id: target.id().to_owned(),
            caps: target.capabilities(),
            type_id: TypeId::of::<T>(),
            on_claimed: Arc::new(move || {
                let t = hook.clone();
                Box::pin(async move { t.on_claimed().await })
            }),
            any: target,
        }
    }
}

/// A change bound to its target, ready to execute.
pub(crate) trait BoundChange: Send + Sync {
    fn execute<'a>(&'a self, x: &'a ExecCtx<'a>) -> BoxFuture<'a, Exec>;
    fn marker<'a>(
        &'a self,
        change_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Marker>, TargetError>>;
    fn clear_marker<'a>(&'a self, change_id: &'a str) -> BoxFuture<'a, Result<(), TargetError>>;
    /// The change's "already in place" check on a non-transactional
    /// context; `Ok(None)` when it has none.
    fn check<'a>(
        &'a self,
        target_id: &'a str,
        t: Timeouts,
    ) -> BoxFuture<'a, Result<Option<bool>, BoxError>>;
    /// The change's rollback on a non-transactional context; `Ok(false)`
    /// when it has none.
    fn undo<'a>(&'a self, target_id: &'a str, t: Timeouts)
        -> BoxFuture<'a, Result<bool, BoxError>>;
    /// The names of the change's steps (empty: one piece).
    fn steps(&self) -> Vec<String>;
    /// Step `step`'s check on a non-transactional context; `Ok(None)` when it has none.
    fn check_step<'a>(
        &'a self,
        target_id: &'a str,
        t: Timeouts,
        step: usize,
    ) -> BoxFuture<'a, Result<Option<bool>, BoxError>>;
}

struct Bound<C: Change> {
    change: Arc<C>,
    target: Arc<C::Target>,
}

impl<C: Change> BoundChange for Bound<C> {
    fn execute<'a>(&'a self, x: &'a ExecCtx<'a>) -> BoxFuture<'a, Exec> {
        Box::pin(execute(&*self.change, &*self.target, x))
    }
    fn marker<'a>(
        &'a self,
        change_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Marker>, TargetError>> {
        Box::pin(self.target.marker(change_id))
    }
    fn clear_marker<'a>(&'a self, change_id: &'a str) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(self.target.clear_marker(change_id))
    }
    fn check<'a>(
        &'a self,
        target_id: &'a str,
        t: Timeouts,
    ) -> BoxFuture<'a, Result<Option<bool>, BoxError>> {
        Box::pin(async move {
            let mut ctx = plain_context(&*self.target, target_id, t).await?;
            let out = limited(t.change, self.change.is_applied(&mut ctx)).await;
            release_plain(&*self.target, target_id, t, ctx).await;
            match out {
                Ok(in_place) => Ok(Some(in_place)),
                Err(e) if e.is::<crate::error::NoCheck>() => Ok(None),
                Err(e) => Err(e),
            }
        })
    }
    fn steps(&self) -> Vec<String> {
        self.change.steps()
    }
    fn check_step<'a>(
        &'a self,
        target_id: &'a str,
        t: Timeouts,
        step: usize,
    ) -> BoxFuture<'a, Result<Option<bool>, BoxError>> {
        Box::pin(async move {
            let mut ctx = plain_context(&*self.target, target_id, t).await?;
            let out = limited(t.change, self.change.is_step_done(&mut ctx, step)).await;
            release_plain(&*self.target, target_id, t, ctx).await;
            match out {
                Ok(done) => Ok(Some(done)),
                Err(e) if e.is::<crate::error::NoCheck>() => Ok(None),
                Err(e) => Err(e),
            }
        })
    }
    fn undo<'a>(
        &'a self,
        target_id: &'a str,
        t: Timeouts,
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        Box::pin(async move {
            let mut ctx = plain_context(&*self.target, target_id, t).await?;
            let out = limited(t.change, self.change.rollback(&mut ctx)).await;
            release_plain(&*self.target, target_id, t, ctx).await;
            match out {
                Ok(()) => Ok(true),
                Err(e) if e.is::<NoRollback>() => Ok(false),
                Err(e) => Err(e),
            }
        })
    }
}

/// A non-transactional context of `target`, bounded.
async fn plain_context<T: TargetSystem>(
    target: &T,
    target_id: &str,
    t: Timeouts,
) -> Result<T::Context, BoxError> {
    let begin = target.begin(ContextMode::NonTransactional);
    Ok(target_call(target_id, "open a context", t.operation, begin).await?)
}

/// Releases a non-transactional context, bounded; a failure only logs.
async fn release_plain<T: TargetSystem>(target: &T, target_id: &str, t: Timeouts, ctx: T::Context) {
    let release = target.commit(ctx, CommitWith::Nothing);
    if let Err(e) = target_call(target_id, "release the context", t.operation, release).await {
        warn!(error = %e, "releasing the non-transactional context failed");
    }
}

/// `work`, bounded by `limit` when there is one.
async fn limited<R>(
    limit: Option<Duration>,
    work: impl std::future::Future<Output = Result<R, BoxError>>,
) -> Result<R, BoxError> {
    match limit {
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("did not finish within {}", human(limit)).into()),
        },
        None => work.await,
    }
}

/// A change of the validated pipeline.
#[derive(Clone)]
pub(crate) struct PlannedChange {
    /// Shared with every line of every report (no copy per run).
    pub(crate) stage: Arc<str>,
    /// `meta.id`, shared the same way.
    pub(crate) id: Arc<str>,
    pub(crate) meta: Arc<ChangeMeta>,
    pub(crate) target_id: String,
    pub(crate) strategy: TxStrategy,
    pub(crate) transactional: bool,
    pub(crate) bound: Arc<dyn BoundChange>,
}

/// Who is running: identity fields of every audit entry.
#[derive(Debug, Clone)]
pub(crate) struct RunIdentity {
    pub(crate) run_id: String,
    pub(crate) runner_id: String,
    pub(crate) hostname: String,
    pub(crate) metadata: serde_json::Value,
}

/// Everything one change execution needs.
pub(crate) struct ExecCtx<'a> {
    pub(crate) store: &'a dyn AuditStore,
    pub(crate) lease: &'a HeldLease,
    /// The epoch claimed from the audit store: every entry carries it.
    pub(crate) epoch: u64,
    pub(crate) who: &'a RunIdentity,
    pub(crate) change: &'a PlannedChange,
    pub(crate) fault: Option<&'a dyn FaultInjector>,
    pub(crate) events: &'a Emitter,
    pub(crate) timeouts: Timeouts,
    /// How a busy target is waited for (backoff, reports, the bound).
    pub(crate) lock_config: &'a LockConfig,
    pub(crate) shutdown: &'a Shutdown,
    /// For a multi-step change run outside a transaction: the first step to
    /// run (the steps before it are recorded done).
    pub(crate) resume_from: usize,
}

/// Why an execution stopped without a normal failure record.
#[derive(Debug)]
pub(crate) enum Abort {
    LeaseLost(String),
    Store(StoreError),
    Target(TargetError),
    Injected(BoxError),
}

/// The result of one change execution.
#[derive(Debug)]
pub(crate) enum Exec {
    Applied,
    Failed { error: BoxError, rolled_back: bool },
    Abort(Abort),
}

/// The error recorded for a transactional change whose `apply` was cut short
/// by a shutdown request (its transaction is rolled back).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted by a shutdown request before it finished; its transaction was rolled back")]
pub(crate) struct InterruptedApply;

/// A change's `apply` or `rollback` that passed [`Timeouts::change`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} did not finish within the change time limit of {}", human(*limit))]
pub(crate) struct ChangeTimedOut {
    what: &'static str,
    limit: Duration,
}

/// How often a long change is reported as still running.
const STILL_RUNNING_EVERY: Duration = Duration::from_secs(30);

impl ExecCtx<'_> {
    pub(crate) fn entry(
        &self,
        state: AuditState,
        elapsed: Duration,
        error: Option<&BoxError>,
    ) -> AuditEntry {
        let c = self.change;
        AuditEntry {
            run_id: self.who.run_id.clone(),
            stage_id: c.stage.to_string(),
            change_id: c.meta.id.clone(),
            author: c.meta.author.clone(),
            order: c.meta.order.clone(),
            target_system: c.target_id.clone(),
            state,
            created_at: crate::audit::audit_clock(),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            hostname: self.who.hostname.clone(),
            runner_id: self.who.runner_id.clone(),
            error: error.map(|e| ErrorInfo::from_error(&**e)),
            metadata: self.who.metadata.clone(),
            tx_strategy: c.strategy,
            recovery: c.meta.recovery,
            transactional: c.transactional,
            fencing_token: self.epoch,
            checksum: c.meta.checksum.clone(),
        }
    }

    /// Writes an entry, after checking that the lease still holds with margin.
    async fn append(
        &self,
        state: AuditState,
        started: Instant,
        error: Option<&BoxError>,
    ) -> Result<(), Abort> {
        self.append_as(self.change.strategy, state, started, error)
            .await
    }

    /// [`append`](Self::append), recording `strategy` as the one used (the
    /// non-transactional rules after an implicit commit).
    async fn append_as(
        &self,
        strategy: TxStrategy,
        state: AuditState,
        started: Instant,
        error: Option<&BoxError>,
    ) -> Result<(), Abort> {
        self.append_full(strategy, state, started, error, None)
            .await
    }

    /// [`append_as`](Self::append_as), with `extra` merged into the entry's
    /// metadata (a multi-step change's position).
    async fn append_full(
        &self,
        strategy: TxStrategy,
        state: AuditState,
        started: Instant,
        error: Option<&BoxError>,
        extra: Option<serde_json::Value>,
    ) -> Result<(), Abort> {
        self.lease.check().map_err(Abort::LeaseLost)?;
        let mut entry = self.entry(state, started.elapsed(), error);
        entry.tx_strategy = strategy;
        if let Some(serde_json::Value::Object(extra)) = extra {
            let mut meta = match entry.metadata.take() {
                serde_json::Value::Object(m) => m,
                serde_json::Value::Null => serde_json::Map::new(),
                other => {
                    let mut m = serde_json::Map::new();
                    m.insert("run_metadata".into(), other);
                    m
                }
            };
            meta.extend(extra);
            entry.metadata = serde_json::Value::Object(meta);
        }
        self.store.append(&entry).await.map_err(Abort::Store)
    }

    async fn fault(&self, point: FaultPoint) -> Result<(), BoxError> {
        match self.fault {
            Some(f) => f.at(point, &self.change.meta.id).await,
            None => Ok(()),
        }
    }

    fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    fn id(&self) -> String {
        self.change.meta.id.clone()
    }

    fn target_id(&self) -> &str {
        &self.change.target_id
    }

    /// Records a failure whose effects the database undid: FAILED then ROLLED_BACK.
    async fn record_rolled_back_failure(&self, started: Instant, error: BoxError) -> Exec {
        if let Err(a) = self.append(AuditState::Failed, started, Some(&error)).await {
            return Exec::Abort(a);
        }
        if let Err(a) = self.append(AuditState::RolledBack, started, None).await {
            return Exec::Abort(a);
        }
        self.emit(Event::ChangeFailed {
            change_id: self.id(),
            error: error.to_string(),
        });
        self.emit(Event::ChangeRolledBack {
            change_id: self.id(),
        });
        Exec::Failed {
            error,
            rolled_back: true,
        }
    }

    /// Runs a change's `apply` (or `rollback`): panics become errors, the
    /// change time limit applies, a long change is reported every 30 s, and
    /// when `interruptible` (its transaction can be rolled back) a shutdown
    /// request cuts it short.
    async fn bounded(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = Result<(), BoxError>>,
        interruptible: bool,
    ) -> Result<(), BoxError> {
        let work = AssertUnwindSafe(work).catch_unwind();
        tokio::pin!(work);
        let started = Instant::now();
        let limit = self.timeouts.change;
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        let interrupt = self.shutdown.requested();
        tokio::pin!(interrupt);
        loop {
            let tick = tokio::time::sleep(STILL_RUNNING_EVERY);
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                out = &mut work => {
                    return match out {
                        Ok(r) => r,
                        Err(panic) => Err(panic_error(what, panic)),
                    };
                }
                () = expiry => {
                    return Err(Box::new(ChangeTimedOut { what, limit: limit.unwrap_or_default() }));
                }
                () = &mut interrupt, if interruptible => {
                    return Err(Box::new(InterruptedApply));
                }
                () = tick => {
                    info!(
                        change_id = %self.change.meta.id,
                        running = %human(started.elapsed()),
                        "{what} of change '{}' still running", self.change.meta.id
                    );
                }
            }
        }
    }
}

fn panic_error(what: &str, panic: Box<dyn Any + Send>) -> BoxError {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    format!("{what} panicked: {msg}").into()
}

async fn execute<C: Change>(change: &C, target: &C::Target, x: &ExecCtx<'_>) -> Exec {
    let span = tracing::info_span!(
        "change",
        change_id = %x.change.meta.id,
        stage = %x.change.stage,
        strategy = %x.change.strategy,
        epoch = x.epoch,
    );
    async move {
        if let Err(why) = x.lease.check() {
            return Exec::Abort(Abort::LeaseLost(why));
        }
        if let Err(e) = x.fault(FaultPoint::BeforeStart).await {
            return Exec::Abort(Abort::Injected(e));
        }
        x.emit(Event::ChangeStarted { change_id: x.id() });
        let started = Instant::now();
        let out = match x.change.strategy {
            TxStrategy::SharedTx => shared_tx(change, target, x, started).await,
            TxStrategy::SeparateTx | TxStrategy::SeparateTxWithMarker => {
                separate_tx(change, target, x, started).await
            }
            TxStrategy::NonTransactional | TxStrategy::Manual if !change.steps().is_empty() => {
                multi_step(change, target, x, started).await
            }
            TxStrategy::NonTransactional | TxStrategy::Manual => {
                non_transactional(change, target, x, started).await
            }
        };
        match &out {
            Exec::Applied => {
                info!(elapsed = %human(started.elapsed()), "applied");
                x.emit(Event::ChangeApplied {
                    change_id: x.id(),
                    duration: started.elapsed(),
                });
            }
            Exec::Failed { error, rolled_back } => {
                warn!(%error, rolled_back, "change failed")
            }
            Exec::Abort(a) => warn!(reason = ?a, "change execution stopped"),
        }
        out
    }
    .instrument(span)
    .await
}

/// Opens a context, bounded; a busy target (another writer holds it) is
/// waited for like a held lock: backoff, a report at the start and every
/// few seconds, and at most the lock's acquire timeout.
async fn begin_bounded<T: TargetSystem>(
    target: &T,
    mode: ContextMode,
    x: &ExecCtx<'_>,
) -> Result<T::Context, TargetError> {
    let started = Instant::now();
    let cfg = x.lock_config;
    let mut backoff = Backoff::new(cfg.retry_initial, cfg.retry_interval);
    let mut reported: Option<Instant> = None;
    loop {
        let op = "begin a transaction";
        match target_call(x.target_id(), op, x.timeouts.operation, target.begin(mode)).await {
            Err(TargetError::Busy { target: t, detail }) => {
                let waited = started.elapsed();
                if waited >= cfg.acquire_timeout {
                    return Err(TargetError::Busy {
                        target: t,
                        detail: format!("{detail} (waited {})", human(waited)),
                    });
                }
                if reported.is_none_or(|r| r.elapsed() >= cfg.report_every) {
                    reported = Some(Instant::now());
                    info!(
                        target = %t,
                        waited = %human(waited),
                        "waiting for target system {t}: {detail}"
                    );
                }
                tokio::time::sleep(backoff.pause()).await;
            }
            other => return other,
        }
    }
}

/// Rolls a transaction back, bounded; a failure only logs (the database
/// rolls back an abandoned transaction by itself). Returns the target's
/// [`TargetError::ImplicitlyCommitted`] when part of the change had been
/// committed by the database before.
async fn abort_bounded<T: TargetSystem>(
    target: &T,
    ctx: T::Context,
    x: &ExecCtx<'_>,
) -> Option<TargetError> {
    let limit = x.timeouts.operation;
    match target_call(x.target_id(), "roll back", limit, target.abort(ctx)).await {
        Ok(()) => None,
        Err(e @ TargetError::ImplicitlyCommitted { .. }) => Some(e),
        Err(e) => {
            warn!(error = %e, "rollback of the change's transaction failed");
            None
        }
    }
}

/// Says loudly that a "transactional" change was committed by the database
/// part-way, so its outcome is recorded under the non-transactional rules.
fn warn_implicit_commit(x: &ExecCtx<'_>, e: &TargetError) {
    warn!(
        change_id = %x.change.meta.id,
        error = %e,
        "change '{}' was declared transactional but its transaction was committed implicitly \
         (DDL?): it is not atomic with its audit entry, and its outcome is recorded under the \
         non-transactional rules; declare such a change .transactional(false), one DDL \
         statement per change",
        x.change.meta.id
    );
}

/// A failure after an implicit commit, under the non-transactional rules:
/// FAILED, then the change's rollback on a fresh non-transactional context
/// (ROLLED_BACK, or ROLLBACK_FAILED), else the change stays FAILED and
/// blocks for an operator.
async fn implicitly_committed_failure<C: Change>(
    change: &C,
    target: &C::Target,
    x: &ExecCtx<'_>,
    started: Instant,
    error: BoxError,
    implicit: TargetError,
) -> Exec {
    warn_implicit_commit(x, &implicit);
    let error: BoxError = format!("{error} (and {implicit})").into();
    let ctx = begin_bounded(target, ContextMode::NonTransactional, x).await;
    fail_non_transactional(
        change,
        target,
        ctx.ok(),
        x,
        TxStrategy::NonTransactional,
        started,
        error,
    )
    .await
}

/// FAILED, then the change's rollback on `ctx` if it has one (ROLLED_BACK
/// or ROLLBACK_FAILED); without a context the change stays FAILED.
async fn fail_non_transactional<C: Change>(
    change: &C,
    target: &C::Target,
    ctx: Option<<C::Target as TargetSystem>::Context>,
    x: &ExecCtx<'_>,
    strategy: TxStrategy,
    started: Instant,
    error: BoxError,
) -> Exec {
    if let Err(a) = x
        .append_as(strategy, AuditState::Failed, started, Some(&error))
        .await
    {
        if let Some(ctx) = ctx {
            abort_bounded(target, ctx, x).await;
        }
        return Exec::Abort(a);
    }
    x.emit(Event::ChangeFailed {
        change_id: x.id(),
        error: error.to_string(),
    });
    let Some(mut ctx) = ctx else {
        return Exec::Failed {
            error,
            rolled_back: false,
        };
    };
    let rollback = x
        .bounded("rollback", change.rollback(&mut ctx), false)
        .await;
    abort_bounded(target, ctx, x).await;
    let rolled_back = match rollback {
        Ok(()) => {
            if let Err(a) = x
                .append_as(strategy, AuditState::RolledBack, started, None)
                .await
            {
                return Exec::Abort(a);
            }
            x.emit(Event::ChangeRolledBack { change_id: x.id() });
            true
        }
        Err(e) if e.is::<NoRollback>() => false,
        Err(e) => {
            if let Err(a) = x
                .append_as(strategy, AuditState::RollbackFailed, started, Some(&e))
                .await
            {
                return Exec::Abort(a);
            }
            false
        }
    };
    Exec::Failed { error, rolled_back }
}

/// Begins the target's transaction and applies the change in it. On any
/// failure the transaction is rolled back (by the database) and recorded as
/// FAILED then ROLLED_BACK; the caller returns that outcome.
async fn apply_in_transaction<C: Change>(
    change: &C,
    target: &C::Target,
    x: &ExecCtx<'_>,
    started: Instant,
) -> Result<<C::Target as TargetSystem>::Context, Exec> {
    let mut ctx = match begin_bounded(target, ContextMode::Transaction, x).await {
        Ok(c) => c,
        Err(e) => return Err(x.record_rolled_back_failure(started, Box::new(e)).await),
    };
    let applied = match x.bounded("apply", change.apply(&mut ctx), true).await {
        Ok(()) => x.fault(FaultPoint::BeforeCommit).await,
        Err(e) => Err(e),
    };
    match applied {
        Ok(()) => Ok(ctx),
        Err(error) => {
            if error.is::<InterruptedApply>() || error.is::<ChangeTimedOut>() {
                // The change's statement may still be running: a rollback
                // would wait for it. Dropping a transactional context leaves
                // nothing committed (the TargetSystem contract); the driver
                // and the server roll it back.
                drop(ctx);
            } else if let Some(implicit) = abort_bounded(target, ctx, x).await {
                return Err(implicitly_committed_failure(
                    change, target, x, started, error, implicit,
                )
                .await);
            }
            Err(x.record_rolled_back_failure(started, error).await)
        }
    }
}

/// Begin, apply, write APPLIED with the fence check, commit: all or nothing.
async fn shared_tx<C: Change>(
    change: &C,
    target: &C::Target,
    x: &ExecCtx<'_>,
    started: Instant,
) -> Exec {
    let ctx = match apply_in_transaction(change, target, x, started).await {
        Ok(ctx) => ctx,
        Err(failed) => return failed,
    };
    // The fence inside the transaction is the guarantee; this check stops a
    // runner that already knows its lease is gone from even trying.
    if let Err(why) = x.lease.check() {
        abort_bounded(target, ctx, x).await;
        return Exec::Abort(Abort::LeaseLost(why));
    }
    let entry = x.entry(AuditState::Applied, started.elapsed(), None);
    let commit = target.commit(ctx, CommitWith::Audit(&entry));
    match target_call(x.target_id(), "commit", x.timeouts.operation, commit).await {
        Ok(()) => {}
        Err(TargetError::Audit {
            source: e @ StoreError::Fenced { .. },
            ..
        }) => return Exec::Abort(Abort::LeaseLost(e.to_string())),
        Err(e @ TargetError::NotCommitted { .. }) => {
            return x.record_rolled_back_failure(started, Box::new(e)).await
        }
        Err(e @ TargetError::ImplicitlyCommitted { .. }) => {
            warn_implicit_commit(x, &e);
            if let Err(a) = x
                .append_as(
                    TxStrategy::NonTransactional,
                    AuditState::Applied,
                    started,
                    None,
                )
                .await
            {
                return Exec::Abort(a);
            }
        }
        // Outcome unknown (e.g. connection lost during COMMIT, or no answer
        // in time): write nothing. The APPLIED entry is in the same
        // transaction, so the next run sees exactly what the database kept.
        Err(e) => return Exec::Abort(Abort::Target(e)),
    }
    for point in [FaultPoint::AfterCommit, FaultPoint::AfterApplied] {
        if let Err(e) = x.fault(point).await {
            return Exec::Abort(Abort::Injected(e));
        }
    }
    Exec::Applied
}

/// STARTED; begin; apply; commit (with marker); APPLIED.
async fn separate_tx<C: Change>(
    change: &C,
    target: &C::Target,
    x: &ExecCtx<'_>,
    started: Instant,
) -> Exec {
    if let Err(a) = x.append(AuditState::Started, started, None).await {
        return Exec::Abort(a);
    }
    let ctx = match apply_in_transaction(change, target, x, started).await {
        Ok(ctx) => ctx,
        Err(failed) => return failed,
    };
    if let Err(why) = x.lease.check() {
        // Not committed: say so if the fence still lets us (best effort, so
        // the next run need not ask an operator about it).
        abort_bounded(target, ctx, x).await;
        let _ = x
            .store
            .append(&x.entry(AuditState::RolledBack, started.elapsed(), None))
            .await;
        return Exec::Abort(Abort::LeaseLost(why));
    }
    let marker = Marker {
        change_id: x.id(),
        run_id: x.who.run_id.clone(),
        fencing_token: x.epoch,
    };
    let with = if x.change.strategy == TxStrategy::SeparateTxWithMarker {
        CommitWith::Marker(&marker)
    } else {
        CommitWith::Nothing
    };
    // On a commit error the outcome is unknown: STARTED stays, and the next
    // run resolves it by marker or asks an operator.
    let commit = target.commit(ctx, with);
    let mut strategy = x.change.strategy;
    match target_call(x.target_id(), "commit", x.timeouts.operation, commit).await {
        Ok(()) => {}
        Err(e @ TargetError::NotCommitted { .. }) => {
            return x.record_rolled_back_failure(started, Box::new(e)).await
        }
        Err(e @ TargetError::ImplicitlyCommitted { .. }) => {
            warn_implicit_commit(x, &e);
            strategy = TxStrategy::NonTransactional;
        }
        Err(e) => return Exec::Abort(Abort::Target(e)),
    }
    if let Err(e) = x.fault(FaultPoint::AfterCommit).await {
        return Exec::Abort(Abort::Injected(e));
    }
    if let Err(a) = x
        .append_as(strategy, AuditState::Applied, started, None)
        .await
    {
        return Exec::Abort(a);
    }
    if x.change.strategy == TxStrategy::SeparateTxWithMarker {
        let clear = target.clear_marker(&marker.change_id);
        if let Err(e) = target_call(
            x.target_id(),
            "clear the marker",
            x.timeouts.operation,
            clear,
        )
        .await
        {
            warn!(error = %e, "could not remove the change's marker (harmless: APPLIED is recorded)");
        }
    }
    if let Err(e) = x.fault(FaultPoint::AfterApplied).await {
        return Exec::Abort(Abort::Injected(e));
    }
    Exec::Applied
}

/// STARTED; apply; APPLIED. On failure: FAILED, then the change's rollback if any.
///
/// A shutdown request does not cut a non-transactional change short (that
/// would leave a partial effect): it runs to its end or its time limit.
async fn non_transactional<C: Change>(
    change: &C,
    target: &C::Target,
    x: &ExecCtx<'_>,
    started: Instant,
) -> Exec {
    if let Err(a) = x.append(AuditState::Started, started, None).await {
        return Exec::Abort(a);
    }
    let limit = x.timeouts.operation;
    let mut ctx = match begin_bounded(target, ContextMode::NonTransactional, x).await {
        Ok(c) => c,
        // Nothing of the change ran.
        Err(e) => return x.record_rolled_back_failure(started, Box::new(e)).await,
    };
    let applied = match x.bounded("apply", change.apply(&mut ctx), false).await {
        Ok(()) => x.fault(FaultPoint::BeforeCommit).await,
        Err(e) => Err(e),
    };
    if let Err(error) = applied {
        let strategy = x.change.strategy;
        return fail_non_transactional(change, target, Some(ctx), x, strategy, started, error)
            .await;
    }
    let release = target.commit(ctx, CommitWith::Nothing);
    if let Err(e) = target_call(x.target_id(), "release the context", limit, release).await {
        warn!(error = %e, "releasing the non-transactional context failed");
    }
    if let Err(e) = x.fault(FaultPoint::AfterCommit).await {
        return Exec::Abort(Abort::Injected(e));
    }
    if let Err(a) = x.append(AuditState::Applied, started, None).await {
        return Exec::Abort(a);
    }
    if let Err(e) = x.fault(FaultPoint::AfterApplied).await {
        return Exec::Abort(Abort::Injected(e));
    }
    Exec::Applied
}

/// A multi-step change outside a transaction: STARTED (with the position),
/// each step, a STARTED entry with `steps_done` after each step, APPLIED. On
/// a failing step: FAILED with the position, then the failed step and the
/// completed ones rolled back in reverse order.
async fn multi_step<C: Change>(
    change: &C,
    target: &C::Target,
    x: &ExecCtx<'_>,
    started: Instant,
) -> Exec {
    let names = change.steps();
    let n = names.len();
    let strategy = x.change.strategy;
    let position = |done: usize| {
        serde_json::json!({
            "steps_done": done,
            "steps": n,
            "next_step": names.get(done).cloned(),
        })
    };
    let from = x.resume_from.min(n);
    if from > 0 {
        info!(change_id = %x.change.meta.id, step = from + 1, steps = n, "resuming at step {} of {n}", from + 1);
    }
    if let Err(a) = x
        .append_full(
            strategy,
            AuditState::Started,
            started,
            None,
            Some(position(from)),
        )
        .await
    {
        return Exec::Abort(a);
    }
    let mut ctx = match begin_bounded(target, ContextMode::NonTransactional, x).await {
        Ok(c) => c,
        Err(e) => return x.record_rolled_back_failure(started, Box::new(e)).await,
    };
    for i in from..n {
        let mut applied = x
            .bounded("apply", change.apply_step(&mut ctx, i), false)
            .await;
        if applied.is_ok() && i + 1 == n {
            applied = x.fault(FaultPoint::BeforeCommit).await;
        }
        if let Err(error) = applied {
            let error: BoxError = format!("step {} of {n} ({}): {error}", i + 1, names[i]).into();
            let mut failed = position(i);
            if let serde_json::Value::Object(m) = &mut failed {
                m.insert("failed_step".into(), names[i].clone().into());
            }
            if let Err(a) = x
                .append_full(
                    strategy,
                    AuditState::Failed,
                    started,
                    Some(&error),
                    Some(failed),
                )
                .await
            {
                abort_bounded(target, ctx, x).await;
                return Exec::Abort(a);
            }
            x.emit(Event::ChangeFailed {
                change_id: x.id(),
                error: error.to_string(),
            });
            // Undo the failed step and the completed ones, newest first.
            let mut undone = true;
            for j in (0..=i).rev() {
                match x
                    .bounded("rollback", change.rollback_step(&mut ctx, j), false)
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.is::<NoRollback>() => {
                        undone = false;
                        break;
                    }
                    Err(e) => {
                        abort_bounded(target, ctx, x).await;
                        let e: BoxError =
                            format!("rollback of step {} of {n} ({}): {e}", j + 1, names[j]).into();
                        if let Err(a) = x
                            .append_full(
                                strategy,
                                AuditState::RollbackFailed,
                                started,
                                Some(&e),
                                Some(position(j + 1)),
                            )
                            .await
                        {
                            return Exec::Abort(a);
                        }
                        return Exec::Failed {
                            error,
                            rolled_back: false,
                        };
                    }
                }
            }
            abort_bounded(target, ctx, x).await;
            if undone {
                if let Err(a) = x
                    .append_full(
                        strategy,
                        AuditState::RolledBack,
                        started,
                        None,
                        Some(position(0)),
                    )
                    .await
                {
                    return Exec::Abort(a);
                }
                x.emit(Event::ChangeRolledBack { change_id: x.id() });
            }
            return Exec::Failed {
                error,
                rolled_back: undone,
            };
        }
        if i + 1 < n {
            if let Err(a) = x
                .append_full(
                    strategy,
                    AuditState::Started,
                    started,
                    None,
                    Some(position(i + 1)),
                )
                .await
            {
                abort_bounded(target, ctx, x).await;
                return Exec::Abort(a);
            }
        }
    }
    let release = target.commit(ctx, CommitWith::Nothing);
    let limit = x.timeouts.operation;
    if let Err(e) = target_call(x.target_id(), "release the context", limit, release).await {
        warn!(error = %e, "releasing the non-transactional context failed");
    }
    if let Err(e) = x.fault(FaultPoint::AfterCommit).await {
        return Exec::Abort(Abort::Injected(e));
    }
    if let Err(a) = x
        .append_full(
            strategy,
            AuditState::Applied,
            started,
            None,
            Some(position(n)),
        )
        .await
    {
        return Exec::Abort(a);
    }
    if let Err(e) = x.fault(FaultPoint::AfterApplied).await {
        return Exec::Abort(Abort::Injected(e));
    }
    Exec::Applied
}

/// The strategy a change gets from its declaration and its target.
pub(crate) fn strategy_for(
    transactional: bool,
    caps: &TargetCapabilities,
    store_id: &str,
) -> TxStrategy {
    if !transactional || !caps.transactions {
        TxStrategy::NonTransactional
    } else if caps.shared_audit_store.as_deref() == Some(store_id) {
        TxStrategy::SharedTx
    } else if caps.marker {
        TxStrategy::SeparateTxWithMarker
    } else {
        TxStrategy::SeparateTx
    }
}

/// Recovery strategy used when a change is only known from the audit.
pub(crate) fn stored_recovery(e: &AuditEntry) -> RecoveryStrategy {
    e.recovery
}
