//! Target systems: where a change's effects go, and the typed context each
//! one hands to its changes.

use std::future::Future;

use crate::audit::AuditEntry;
use crate::error::TargetError;

/// What a target system can do; decides the execution strategy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetCapabilities {
    /// Changes can run inside a transaction that commits or rolls back as a whole.
    pub transactions: bool,
    /// The target can write a marker record inside the change's transaction
    /// (separate-transaction strategy with marker).
    pub marker: bool,
    /// The [`AuditStore::store_id`](crate::AuditStore::store_id) of the audit
    /// store this target shares a database with. When it equals the runner's
    /// store, changes use the shared-transaction strategy and
    /// [`TargetSystem::commit`] receives [`CommitWith::Audit`].
    pub shared_audit_store: Option<String>,
    /// Set when the kind of target has transactions but this deployment
    /// cannot run them (e.g. a standalone `mongod`): why, and what to do.
    /// Every change not declared `.transactional(false)` then fails validation
    /// with this text, before anything runs.
    pub transactions_unavailable: Option<String>,
}

impl TargetCapabilities {
    /// A target without transactions.
    pub fn non_transactional() -> Self {
        Self::default()
    }
    /// A transactional target.
    pub fn transactional() -> Self {
        TargetCapabilities {
            transactions: true,
            ..Self::default()
        }
    }
    /// Adds marker support.
    pub fn with_marker(mut self) -> Self {
        self.marker = true;
        self
    }
    /// Declares that this deployment cannot run transactions, and why.
    pub fn transactions_unavailable(mut self, why: impl Into<String>) -> Self {
        self.transactions = false;
        self.transactions_unavailable = Some(why.into());
        self
    }
    /// Declares the audit store this target shares transactions with.
    pub fn sharing_audit_store(mut self, store_id: impl Into<String>) -> Self {
        self.shared_audit_store = Some(store_id.into());
        self
    }
}

/// How a context is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextMode {
    /// Inside a new transaction.
    Transaction,
    /// Outside any transaction (e.g. `CREATE INDEX CONCURRENTLY`).
    NonTransactional,
}

/// The record a separate-transaction target keeps, inside the change's
/// transaction, so that the next run can tell whether that transaction committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Change id.
    pub change_id: String,
    /// The run whose transaction wrote it.
    pub run_id: String,
    /// Fencing token of that run's lease.
    pub fencing_token: u64,
}

/// What a commit must write together with the change's effects.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum CommitWith<'a> {
    /// Nothing else.
    Nothing,
    /// A marker record, in the same transaction.
    Marker(&'a Marker),
    /// The APPLIED audit entry, with the store's atomic fence check, in the
    /// same transaction (shared-transaction strategy): only sent to a target
    /// whose capabilities name the runner's store, i.e. one built with a
    /// [`SharedAudit`](crate::SharedAudit), which writes it
    /// ([`SharedAudit::append`](crate::SharedAudit::append)). A fence
    /// rejection must abort the transaction and surface as
    /// [`TargetError::Audit`] wrapping
    /// [`StoreError::Fenced`](crate::StoreError::Fenced).
    Audit(&'a AuditEntry),
}

/// A system changes are applied to.
///
/// `Context` is what every change of this target receives: a connection in an
/// open transaction, a database handle plus session, a write builder, or a
/// plain dependency. The runner drives the lifecycle: [`begin`](Self::begin),
/// the change's `apply`, then [`commit`](Self::commit) or [`abort`](Self::abort).
/// A context dropped without either (a crash, a cancelled future) must leave no
/// committed effect for transactional contexts.
pub trait TargetSystem: Send + Sync + 'static {
    /// The context changes of this target receive.
    type Context: Send + 'static;

    /// Unique id of this target within a pipeline.
    fn id(&self) -> &str;

    /// What this target supports; read when the pipeline is planned, so it
    /// must not do I/O (learn what the server can do when the target is
    /// built). It decides each change's strategy: see [`TargetCapabilities`].
    fn capabilities(&self) -> TargetCapabilities;

    /// Opens a context for one change: in [`ContextMode::Transaction`] a
    /// transaction is open when this returns (a marker target also makes
    /// sure its marker table exists first); in
    /// [`ContextMode::NonTransactional`] the change gets a plain handle.
    ///
    /// Errors:
    /// * [`TargetError::Busy`]: another writer holds the target right now.
    ///   The runner waits and calls `begin` again, reporting the wait, up to
    ///   the lock's acquire timeout.
    /// * anything else: nothing began; for a transactional change the runner
    ///   records FAILED then ROLLED_BACK (nothing can have been written).
    fn begin(
        &self,
        mode: ContextMode,
    ) -> impl Future<Output = Result<Self::Context, TargetError>> + Send;

    /// Commits the context's transaction together with `with`; for a
    /// non-transactional context (which only ever gets
    /// [`CommitWith::Nothing`]), releases it.
    ///
    /// What the error says decides what the runner records, so it must be
    /// exact:
    /// * `Ok(())`: committed, with `with` in the same transaction.
    /// * [`TargetError::NotCommitted`]: certainly **not** committed (the
    ///   transaction was refused or rolled back before or at `COMMIT`: a
    ///   constraint checked at commit, a serialization failure, a write
    ///   condition, too many writes). The runner records FAILED then
    ///   ROLLED_BACK and the change runs again next time.
    /// * [`TargetError::Audit`] wrapping [`StoreError::Fenced`](crate::StoreError::Fenced)
    ///   (only with [`CommitWith::Audit`]): the fence check inside the
    ///   transaction found a newer epoch; roll back before returning it. The
    ///   runner stops: its lease is lost.
    /// * [`TargetError::ImplicitlyCommitted`]: the database had already
    ///   committed the transaction by itself (MySQL's DDL): write nothing of
    ///   `with` and return this. The runner records APPLIED under the
    ///   non-transactional rules and warns.
    /// * anything else ([`TargetError::Backend`], a timeout): the outcome is
    ///   **unknown** (the connection dropped during `COMMIT`, no answer). The
    ///   runner writes nothing more: a shared transaction's APPLIED entry
    ///   went with the change, so the next run sees exactly what the
    ///   database kept; a separate transaction's STARTED stays, resolved by
    ///   the marker or by an operator. Never report "unknown" as
    ///   `NotCommitted`, nor the reverse.
    fn commit(
        &self,
        ctx: Self::Context,
        with: CommitWith<'_>,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;

    /// Rolls the transaction back (or releases a non-transactional context).
    /// An error only logs: the runner has already decided the change did not
    /// commit, and a database rolls back a transaction whose connection goes
    /// away. The one exception is [`TargetError::ImplicitlyCommitted`]: the
    /// database had committed part of the change by itself before the
    /// failure, so the runner records the failure under the non-transactional
    /// rules (FAILED, then the change's rollback if it has one, else the
    /// change blocks for an operator). A context dropped without `commit` or `abort` (a crash, a
    /// timeout) must likewise leave nothing committed.
    fn abort(&self, ctx: Self::Context) -> impl Future<Output = Result<(), TargetError>> + Send;

    /// Reads the marker for `change_id`, when the target keeps markers
    /// (`capabilities().marker`): the record [`CommitWith::Marker`] wrote
    /// inside a committed transaction. The next run asks it for a change
    /// whose latest entry is STARTED: a marker whose run and token match that
    /// entry means the transaction committed. `Ok(None)` when there is none
    /// (also when the marker table does not exist yet: looking never
    /// creates it); an error when it cannot tell (the change then blocks for
    /// an operator, it is never guessed).
    fn marker(
        &self,
        change_id: &str,
    ) -> impl Future<Output = Result<Option<Marker>, TargetError>> + Send {
        let _ = change_id;
        async { Ok(None) }
    }

    /// Called once per locked run, right after the runner claimed its epoch
    /// and before any change runs: every transaction of this target still
    /// open belongs to a runner that was killed or lost its lease. A target
    /// whose database keeps such a transaction (and what it wrote) alive
    /// clears it here, e.g. MongoDB kills the sessions it registered. Best
    /// effort and bounded by the runner's operation timeout: fencing, not
    /// this, is what makes a stale commit impossible. The default does nothing.
    fn on_claimed(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Removes the marker for `change_id` once its outcome is audited. An
    /// error only logs (a leftover marker is harmless: the audit decides).
    fn clear_marker(
        &self,
        change_id: &str,
    ) -> impl Future<Output = Result<(), TargetError>> + Send {
        let _ = change_id;
        async { Ok(()) }
    }
}

/// A non-transactional target that hands each change a clone of a dependency
/// the application already has: an HTTP client, a Kafka producer, a feature-flag
/// client...
///
/// ```
/// use flamingock_core::{Change, ChangeMeta, ChangeResult, DependencyTarget};
///
/// #[derive(Clone)]
/// struct Flags { base_url: String }
///
/// struct EnableCheckout;
/// impl Change for EnableCheckout {
///     type Target = DependencyTarget<Flags>;
///     fn meta(&self) -> ChangeMeta { ChangeMeta::new("enable-checkout").order("0001") }
///     async fn apply(&self, flags: &mut Flags) -> ChangeResult {
///         let _url = format!("{}/flags/checkout", flags.base_url);
///         Ok(())
///     }
/// }
/// let target = DependencyTarget::new("flags", Flags { base_url: "http://flags".into() });
/// # let _ = target;
/// ```
#[derive(Debug, Clone)]
pub struct DependencyTarget<D> {
    id: String,
    dependency: D,
}

impl<D: Clone + Send + Sync + 'static> DependencyTarget<D> {
    /// A target named `id` that hands out clones of `dependency`.
    pub fn new(id: impl Into<String>, dependency: D) -> Self {
        DependencyTarget {
            id: id.into(),
            dependency,
        }
    }

    /// The dependency.
    pub fn dependency(&self) -> &D {
        &self.dependency
    }
}

impl<D: Clone + Send + Sync + 'static> TargetSystem for DependencyTarget<D> {
    type Context = D;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        TargetCapabilities::non_transactional()
    }

    async fn begin(&self, _mode: ContextMode) -> Result<D, TargetError> {
        Ok(self.dependency.clone())
    }

    async fn commit(&self, _ctx: D, _with: CommitWith<'_>) -> Result<(), TargetError> {
        Ok(())
    }

    async fn abort(&self, _ctx: D) -> Result<(), TargetError> {
        Ok(())
    }
}
