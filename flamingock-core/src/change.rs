//! Changes: the unit of work, bound at compile time to its target's context.

use std::future::Future;

use crate::error::{BoxError, NoRollback};
use crate::target::TargetSystem;

pub use crate::model::RecoveryStrategy;

/// What a change declares about itself.
///
/// ```
/// use flamingock_core::{ChangeMeta, RecoveryStrategy};
/// let meta = ChangeMeta::new("create-users-table").order("0001")
///     .author("ana")
///     .description("users table with unique email")
///     .recovery(RecoveryStrategy::AlwaysRetry);
/// assert_eq!(meta.id, "create-users-table");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangeMeta {
    /// Unique across the pipeline; non-empty, printable, at most 255 bytes.
    pub id: String,
    /// Sort key within the stage (lexicographic); prefer zero-padded numbers.
    pub order: String,
    /// Who wrote it.
    pub author: String,
    /// What it does.
    pub description: Option<String>,
    /// Id of the target system; `None` means "the only registered target of
    /// this change's target type".
    pub target_system: Option<String>,
    /// `None`: transactional wherever the target supports it. `Some(true)` on a
    /// target without transactions is a validation error.
    pub transactional: Option<bool>,
    /// Recovery strategy.
    pub recovery: RecoveryStrategy,
    /// Content checksum (template changes).
    pub checksum: Option<String>,
    /// Why the change is (or is not) transactional when something other than
    /// its author's plain declaration decided it, e.g. a SQL file whose DDL
    /// MySQL commits implicitly; `plan` shows it next to the strategy.
    pub transactional_reason: Option<String>,
}

impl ChangeMeta {
    /// A change with an id; set its [`order`](Self::order) next (a change
    /// without one fails validation, naming it). The two are set by name so
    /// they cannot be swapped silently.
    pub fn new(id: impl Into<String>) -> Self {
        ChangeMeta {
            id: id.into(),
            order: String::new(),
            author: String::new(),
            description: None,
            target_system: None,
            transactional: None,
            recovery: RecoveryStrategy::ManualIntervention,
            checksum: None,
            transactional_reason: None,
        }
    }
    /// Sets the order: the change's sort key within its stage (compared as
    /// text; prefer zero-padded numbers such as `"0001"`).
    pub fn order(mut self, order: impl Into<String>) -> Self {
        self.order = order.into();
        self
    }
    /// Sets the author.
    pub fn author(mut self, author: impl Into<String>) -> Self {
        self.author = author.into();
        self
    }
    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }
    /// Names the target system by id.
    pub fn target(mut self, target_id: impl Into<String>) -> Self {
        self.target_system = Some(target_id.into());
        self
    }
    /// Declares whether the change must run in a transaction.
    pub fn transactional(mut self, yes: bool) -> Self {
        self.transactional = Some(yes);
        self
    }
    /// Declares whether the change must run in a transaction, and why (shown
    /// by `plan`): for changes whose form decides it, e.g. a SQL file with
    /// DDL on a database that commits DDL implicitly.
    pub fn transactional_because(mut self, yes: bool, reason: impl Into<String>) -> Self {
        self.transactional = Some(yes);
        self.transactional_reason = Some(reason.into());
        self
    }
    /// Sets the recovery strategy.
    pub fn recovery(mut self, r: RecoveryStrategy) -> Self {
        self.recovery = r;
        self
    }
    /// Sets the content checksum.
    pub fn checksum(mut self, c: impl Into<String>) -> Self {
        self.checksum = Some(c.into());
        self
    }
}

/// The result of a change's `apply` or `rollback`: any error converts with `?`.
pub type ChangeResult = Result<(), BoxError>;

/// A change to one target system.
///
/// The associated [`Target`](Change::Target) fixes, at compile time, the
/// context the change receives: a change written for a SQL target cannot be
/// handed a MongoDB session. Implement `apply` (and optionally `rollback`)
/// with plain `async fn`s:
///
/// ```
/// use flamingock_core::{Change, ChangeMeta, ChangeResult};
/// use flamingock_core::memory::{KvTx, InMemoryTarget};
///
/// struct SeedCountries;
///
/// impl Change for SeedCountries {
///     type Target = InMemoryTarget;
///
///     fn meta(&self) -> ChangeMeta {
///         ChangeMeta::new("seed-countries").order("0002").author("ana")
///     }
///
///     async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
///         tx.put("country:es", "Spain");
///         tx.put("country:pt", "Portugal");
///         Ok(())
///     }
/// }
/// ```
///
/// `rollback` is used by the non-transactional strategy only (a database
/// transaction undoes a transactional change by itself); when a change
/// defines none, a failure leaves it `FAILED` for an operator.
pub trait Change: Send + Sync + 'static {
    /// The kind of target system this change runs against.
    type Target: TargetSystem;

    /// Id, order, author and options.
    fn meta(&self) -> ChangeMeta;

    /// Applies the change. A change made of [`steps`](Self::steps) need not
    /// write it: the default runs every step in order.
    fn apply(
        &self,
        ctx: &mut <Self::Target as TargetSystem>::Context,
    ) -> impl Future<Output = ChangeResult> + Send {
        async move {
            for i in 0..self.steps().len() {
                self.apply_step(ctx, i).await?;
            }
            Ok(())
        }
    }

    /// The names of the change's steps, in order; empty (the default) for a
    /// change of one piece.
    ///
    /// A multi-step change run non-transactionally (a target without
    /// transactions, or `.transactional(false)`) saves its progress: after
    /// each step the runner appends a STARTED entry whose metadata holds
    /// `steps_done` (under the fence, like every entry). After a crash, the
    /// next run resumes at the first unfinished step: it asks that step's
    /// check ([`is_step_done`](Self::is_step_done)) first, goes on after it
    /// when it is done, applies it when it is not, and blocks for an operator
    /// (naming the step) when the step has no check, since the step may have
    /// been cut anywhere. A failing step records FAILED with the position,
    /// then the failed step and the completed ones are rolled back in reverse
    /// order ([`rollback_step`](Self::rollback_step)): ROLLED_BACK when all of
    /// them undo, else the change stays FAILED (a step without rollback) or
    /// ROLLBACK_FAILED. On a transactional strategy the steps simply run in
    /// the one transaction.
    ///
    /// ```
    /// use flamingock_core::{BoxError, Change, ChangeMeta, ChangeResult, DependencyTarget};
    /// use std::collections::BTreeSet;
    /// use std::sync::{Arc, Mutex};
    ///
    /// type Broker = Arc<Mutex<BTreeSet<String>>>;
    ///
    /// struct OrdersTopology;
    /// impl Change for OrdersTopology {
    ///     type Target = DependencyTarget<Broker>;
    ///     fn meta(&self) -> ChangeMeta { ChangeMeta::new("orders-topology").order("0001") }
    ///     fn steps(&self) -> Vec<String> { vec!["exchange".into(), "queue".into()] }
    ///     async fn apply_step(&self, b: &mut Broker, step: usize) -> ChangeResult {
    ///         let name = ["orders-exchange", "orders-queue"][step];
    ///         b.lock().map_err(|_| "poisoned")?.insert(name.into());
    ///         Ok(())
    ///     }
    ///     async fn is_step_done(&self, b: &mut Broker, step: usize) -> Result<bool, BoxError> {
    ///         let name = ["orders-exchange", "orders-queue"][step];
    ///         Ok(b.lock().map_err(|_| "poisoned")?.contains(name))
    ///     }
    /// }
    /// ```
    fn steps(&self) -> Vec<String> {
        Vec::new()
    }

    /// Applies step `step` (0-based) of [`steps`](Self::steps).
    fn apply_step(
        &self,
        ctx: &mut <Self::Target as TargetSystem>::Context,
        step: usize,
    ) -> impl Future<Output = ChangeResult> + Send {
        let _ = (ctx, step);
        async { Err("this change has no steps: implement apply".into()) }
    }

    /// Undoes step `step`; the default has no rollback ([`NoRollback`]).
    fn rollback_step(
        &self,
        ctx: &mut <Self::Target as TargetSystem>::Context,
        step: usize,
    ) -> impl Future<Output = ChangeResult> + Send {
        let _ = (ctx, step);
        async { Err(Box::new(NoRollback) as BoxError) }
    }

    /// Whether step `step`'s effect is in place; the default has no check
    /// ([`NoCheck`](crate::NoCheck)). Only reads.
    fn is_step_done(
        &self,
        ctx: &mut <Self::Target as TargetSystem>::Context,
        step: usize,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let _ = (ctx, step);
        async { Err(Box::new(crate::error::NoCheck) as BoxError) }
    }

    /// Undoes the change after a failed non-transactional apply.
    fn rollback(
        &self,
        ctx: &mut <Self::Target as TargetSystem>::Context,
    ) -> impl Future<Output = ChangeResult> + Send {
        let _ = ctx;
        async { Err(Box::new(NoRollback) as BoxError) }
    }

    /// The "already in place" check of a non-transactional change: does the
    /// target already show the change's effect (the queue exists with these
    /// arguments, the flag is set)? Only reads.
    ///
    /// When the change's latest state is STARTED, FAILED or ROLLBACK_FAILED
    /// under the non-transactional strategy (a crash or a failure left its
    /// outcome unknown), the next run asks this check, under the lock,
    /// before deciding: `Ok(true)` records the change APPLIED (an entry whose
    /// metadata says `resolved_by_check`); `Ok(false)` runs the change's
    /// rollback if it has one, then applies it again; an error, or no check
    /// (the default, [`NoCheck`](crate::NoCheck)), blocks the change for an
    /// operator as before. It runs on a non-transactional context, also for
    /// changes of a transactional target.
    ///
    /// ```
    /// use flamingock_core::{Change, ChangeMeta, ChangeResult, BoxError, DependencyTarget};
    /// use std::collections::BTreeSet;
    ///
    /// struct CreateQueue;
    /// impl Change for CreateQueue {
    ///     type Target = DependencyTarget<BTreeSet<String>>;
    ///     fn meta(&self) -> ChangeMeta { ChangeMeta::new("orders-queue").order("0001") }
    ///     async fn apply(&self, queues: &mut BTreeSet<String>) -> ChangeResult {
    ///         queues.insert("orders".into());
    ///         Ok(())
    ///     }
    ///     async fn is_applied(&self, queues: &mut BTreeSet<String>) -> Result<bool, BoxError> {
    ///         Ok(queues.contains("orders"))
    ///     }
    /// }
    /// ```
    fn is_applied(
        &self,
        ctx: &mut <Self::Target as TargetSystem>::Context,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let _ = ctx;
        async { Err(Box::new(crate::error::NoCheck) as BoxError) }
    }
}

/// The context type a target gives its changes, tied back to that target
/// type, so that `#[flamingock::change]` can tell a change's target from
/// the type of its function's argument. Each backend implements it for its
/// context (`PgContext` → `PostgresTarget`, ...).
pub trait ChangeContext: Send + 'static {
    /// The target whose changes receive this context.
    type Target: TargetSystem<Context = Self>;
}
