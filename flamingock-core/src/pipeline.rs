//! Binding: each change of a stage tied to its registered target (checked
//! by type), and what one change execution needs (identity, deadlines,
//! fault points, events); the strategies themselves are in `strategy`.

use std::any::{Any, TypeId};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::{info, warn};

use crate::audit::{AuditEntry, AuditState, AuditStore, ErrorInfo, TxStrategy};
use crate::change::{Change, ChangeMeta};
use crate::deadline::{human, target_call, Timeouts};
use crate::error::{BoxError, NoRollback, StoreError, TargetError};
use crate::events::{Emitter, Event};
use crate::fault::{FaultInjector, FaultPoint};
use crate::lock::{HeldLease, LockConfig};
use crate::shutdown::Shutdown;
use crate::strategy::execute;
use crate::target::{CommitWith, ContextMode, Marker, TargetCapabilities, TargetSystem};

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

/// A change and its target, typed.
pub(crate) struct Bound<C: Change> {
    pub(crate) change: Arc<C>,
    pub(crate) target: Arc<C::Target>,
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
        warn!(error = %crate::error::Chain(&e), "releasing the non-transactional context failed");
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
    pub(crate) async fn append(
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
    pub(crate) async fn append_as(
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
    pub(crate) async fn append_full(
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

    pub(crate) async fn fault(&self, point: FaultPoint) -> Result<(), BoxError> {
        match self.fault {
            Some(f) => f.at(point, &self.change.meta.id).await,
            None => Ok(()),
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    pub(crate) fn id(&self) -> String {
        self.change.meta.id.clone()
    }

    pub(crate) fn target_id(&self) -> &str {
        &self.change.target_id
    }

    /// Records a failure whose effects the database undid: FAILED then ROLLED_BACK.
    pub(crate) async fn record_rolled_back_failure(
        &self,
        started: Instant,
        error: BoxError,
    ) -> Exec {
        if let Err(a) = self.append(AuditState::Failed, started, Some(&error)).await {
            return Exec::Abort(a);
        }
        if let Err(a) = self.append(AuditState::RolledBack, started, None).await {
            return Exec::Abort(a);
        }
        self.emit(Event::ChangeFailed {
            change_id: self.id(),
            error: crate::error::Chain(&*error).to_string(),
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
    pub(crate) async fn bounded(
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

pub(crate) fn panic_error(what: &str, panic: Box<dyn Any + Send>) -> BoxError {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    format!("{what} panicked: {msg}").into()
}
