//! The execution strategies, one change at a time: shared transaction,
//! separate transaction (with or without marker), non-transactional, and
//! multi-step; each writes the audit entries of DESIGN section 4 around the
//! change, at the fault points the `fault` module describes.

use std::time::Instant;

use tracing::{info, warn, Instrument};

use crate::audit::{AuditEntry, AuditState, TxStrategy};
use crate::change::{Change, RecoveryStrategy};
use crate::deadline::{human, target_call};
use crate::error::{BoxError, NoRollback, StoreError, TargetError};
use crate::events::Event;
use crate::fault::FaultPoint;
use crate::lock::Backoff;
use crate::pipeline::{Abort, ChangeTimedOut, Exec, ExecCtx, InterruptedApply};
use crate::target::{CommitWith, ContextMode, Marker, TargetCapabilities, TargetSystem};

pub(crate) async fn execute<C: Change>(change: &C, target: &C::Target, x: &ExecCtx<'_>) -> Exec {
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
            warn!(error = %crate::error::Chain(&e), "rollback of the change's transaction failed");
            None
        }
    }
}

/// Says loudly that a "transactional" change was committed by the database
/// part-way, so its outcome is recorded under the non-transactional rules.
fn warn_implicit_commit(x: &ExecCtx<'_>, e: &TargetError) {
    warn!(
        change_id = %x.change.meta.id,
        error = %crate::error::Chain(e),
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
    let error: BoxError = format!(
        "{} (and {})",
        crate::error::Chain(&*error),
        crate::error::Chain(&implicit)
    )
    .into();
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
        error: crate::error::Chain(&*error).to_string(),
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
            warn!(error = %crate::error::Chain(&e), "could not remove the change's marker (harmless: APPLIED is recorded)");
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
        warn!(error = %crate::error::Chain(&e), "releasing the non-transactional context failed");
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
            let error: BoxError = format!(
                "step {} of {n} ({}): {}",
                i + 1,
                names[i],
                crate::error::Chain(&*error)
            )
            .into();
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
                error: crate::error::Chain(&*error).to_string(),
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
                        let e: BoxError = format!(
                            "rollback of step {} of {n} ({}): {}",
                            j + 1,
                            names[j],
                            crate::error::Chain(&*e)
                        )
                        .into();
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
        warn!(error = %crate::error::Chain(&e), "releasing the non-transactional context failed");
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
