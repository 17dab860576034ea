//! The PostgreSQL target system and the context its changes receive.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use flamingock_core::{
    CommitWith, ContextMode, Marker, MarkerSettings, SharedAudit, TargetCapabilities, TargetError,
    TargetSystem,
};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor, PgConnection, PgPool, Postgres, Row, Transaction};
use tokio::sync::OnceCell;

use crate::names::{Names, Table};
use crate::schema::{self, SchemaError};
use crate::script::split_statements;
use crate::space::{idempotent, is_connection_lost, is_undefined_table};
use crate::store::{PostgresAuditStore, DEFAULT_PREFIX};

/// A PostgreSQL database changes are applied to.
///
/// Built with [`PostgresTarget::builder`] (any database) or
/// [`PostgresAuditStore::shared_target`] (the audit store's own database),
/// then `build().await`:
///
/// * A **shared** target commits each change in **one transaction** with its
///   APPLIED entry and the fence check (shared-transaction strategy), so a
///   crash at any instant leaves both or neither.
/// * Any other target runs the separate-transaction strategy, with a marker
///   row in `<schema>.<prefix>_marker` written inside the change's
///   transaction, which lets the next run resolve a crash after commit by
///   itself; [`marker(false)`](PostgresTargetBuilder::marker) turns it off.
///
/// A change declared `.transactional(false)` gets a plain pooled connection
/// outside any transaction (for `CREATE INDEX CONCURRENTLY`, `VACUUM`,
/// `ALTER TYPE ... ADD VALUE` on old servers...). There, execute statements
/// **one at a time**: several statements sent as one string travel as one
/// simple query, which PostgreSQL runs as one implicit transaction (and
/// `CREATE INDEX CONCURRENTLY` refuses to run inside one).
/// [`PgContext::execute_script`] splits a script and does exactly that.
///
/// ```no_run
/// # async fn f(pool: sqlx::PgPool) -> Result<(), flamingock_core::TargetError> {
/// use flamingock_postgres::PostgresTarget;
/// let target = PostgresTarget::builder("reporting", pool)
///     .schema("reporting")
///     .build()
///     .await?;
/// # let _ = target; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    id: String,
    pool: PgPool,
    /// The schema set on the builder; `None`: the connection's current schema,
    /// asked once, when a change first needs it.
    schema: Option<Arc<str>>,
    /// Marker table names, with the schema resolved.
    names: Arc<OnceCell<Names>>,
    prefix: String,
    shared: Option<SharedAudit<PostgresAuditStore>>,
    marker: bool,
    marker_ready: Arc<OnceCell<()>>,
    /// See [`PostgresTargetBuilder::transaction_pooler`].
    pooler: bool,
    /// `BEGIN` plus the transaction's settings, sent as one simple query.
    begin_sql: Arc<str>,
}

/// Configures a [`PostgresTarget`]; from [`PostgresTarget::builder`] or
/// [`PostgresAuditStore::shared_target`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PostgresTargetBuilder {
    id: String,
    pool: PgPool,
    schema: Option<String>,
    shared: Option<PostgresAuditStore>,
    markers: MarkerSettings,
    idle: Option<Duration>,
    pooler: bool,
    search_path: Option<String>,
}

/// Default [`PostgresTargetBuilder::idle_in_transaction_timeout`]: the default lease.
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// `BEGIN` and the transaction-scoped settings (`SET LOCAL`: no session
/// state is left behind), one simple query.
fn begin_sql(idle: Option<Duration>, pooler: bool, search_path: Option<&str>) -> Arc<str> {
    let mut sql = String::from("BEGIN");
    if let Some(d) = idle {
        sql.push_str(&format!(
            "; SET LOCAL idle_in_transaction_session_timeout = {}",
            d.as_millis().clamp(1, i32::MAX as u128)
        ));
    }
    if let Some(path) = search_path {
        sql.push_str(&format!("; SET LOCAL search_path = {path}"));
    }
    if pooler {
        // Behind a transaction pooler the server connection may carry named
        // statements other clients prepared and left (sqlx names them
        // sqlx_s_1, sqlx_s_2... on every connection): drop them, so the
        // change's own statements cannot collide with them.
        sql.push_str("; DEALLOCATE ALL");
    }
    Arc::from(sql)
}

impl PostgresTarget {
    /// A builder for a target named `id` on `pool` (separate-transaction
    /// strategy, with a marker table).
    pub fn builder(id: impl Into<String>, pool: PgPool) -> PostgresTargetBuilder {
        crate::install_tls_provider();
        PostgresTargetBuilder {
            id: id.into(),
            pool,
            schema: None,
            shared: None,
            markers: MarkerSettings::default(),
            idle: Some(DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT),
            pooler: false,
            search_path: None,
        }
    }

    pub(crate) fn shared(id: String, store: PostgresAuditStore) -> PostgresTargetBuilder {
        let mut builder = Self::builder(id, store.pool().clone());
        builder.pooler = store.inner.space.pooler;
        builder.schema = Some(store.schema().to_owned());
        builder.shared = Some(store);
        builder
    }
}

impl PostgresTargetBuilder {
    /// Declares that the pool reaches PostgreSQL through a pooler in
    /// transaction mode (see
    /// [`PostgresAuditStoreBuilder::transaction_pooler`](crate::PostgresAuditStoreBuilder::transaction_pooler);
    /// a shared target takes the store's setting). Then the marker
    /// statements are not kept prepared, and each change's transaction starts
    /// with `DEALLOCATE ALL`, so the named statements other clients left on
    /// the server connection cannot collide with the change's own. Build the
    /// pool with `statement_cache_capacity(0)`: a cached statement would be
    /// looked up on whatever server connection the next transaction gets.
    pub fn transaction_pooler(mut self, yes: bool) -> Self {
        self.pooler = yes;
        self
    }

    /// Sets `search_path` for each change's transaction (`SET LOCAL`, in the
    /// same round trip as `BEGIN`), e.g. `"\"ops\", public"`: unqualified
    /// names in the changes resolve there. Unlike a connection option, it
    /// also holds behind a transaction pooler; it does not apply to
    /// non-transactional changes. The text is sent as written.
    pub fn search_path(mut self, path: impl Into<String>) -> Self {
        self.search_path = Some(path.into());
        self
    }

    /// The schema of the marker table, also what [`PgContext::schema`]
    /// reports to changes; created when missing. Default: the connection's
    /// current schema (`current_schema()`, the first schema of its
    /// `search_path` that exists), asked once, when a change first needs it,
    /// so the marker sits where the changes' own unqualified tables go. A
    /// shared target's default is the audit store's schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The prefix of the marker table's name (default `flamingock`). A shared
    /// target keeps no marker: setting it there is an error at `build`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.markers.set_prefix(prefix);
        self
    }

    /// Whether the target keeps a marker table (default `true`; a shared
    /// target never needs one, and `marker(true)` on it is an error at
    /// `build`). Without it a crash between the change's commit and its
    /// APPLIED entry needs an operator (or `AlwaysRetry`).
    pub fn marker(mut self, yes: bool) -> Self {
        self.markers.set_marker(yes);
        self
    }

    /// How long a change's transaction may sit idle (the runner stalled or
    /// lost, the change awaiting something else) before the server ends it
    /// (default 60 s, the default lease; `None`: the server's setting).
    ///
    /// A runner that lost its lease while its transaction holds row locks
    /// would otherwise block the runner that took over until it woke up; with
    /// this set no longer than the lease, the server rolls the stale
    /// transaction back and the new runner goes on. The setting is `SET LOCAL`
    /// in the same round trip as `BEGIN`.
    pub fn idle_in_transaction_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle = timeout;
        self
    }

    /// Checks the settings. Does no I/O (a start with nothing pending stays
    /// one read of the audit store).
    ///
    /// # Errors
    /// [`TargetError::Unsupported`] naming what is wrong: an invalid schema
    /// or prefix, or marker settings on a shared target.
    pub async fn build(self) -> Result<PostgresTarget, TargetError> {
        let invalid = |detail: String| TargetError::Unsupported {
            target: self.id.clone(),
            detail,
        };
        let (prefix, marker) = match self.shared {
            Some(_) => {
                self.markers.check_shared(&self.id)?;
                (DEFAULT_PREFIX.to_owned(), false)
            }
            None => self.markers.separate(DEFAULT_PREFIX),
        };
        crate::names::check_prefix(&prefix)
            .map_err(|e| invalid(format!("invalid marker table configuration: {e}")))?;
        let names = OnceCell::new();
        if let Some(schema) = &self.schema {
            let n = Names::new(schema, &prefix)
                .map_err(|e| invalid(format!("invalid marker table configuration: {e}")))?;
            let _ = names.set(n);
        }
        Ok(PostgresTarget {
            begin_sql: begin_sql(self.idle, self.pooler, self.search_path.as_deref()),
            marker,
            id: self.id,
            pool: self.pool,
            schema: self.schema.map(Arc::from),
            names: Arc::new(names),
            prefix,
            shared: self.shared.map(SharedAudit::new),
            marker_ready: Arc::default(),
            pooler: self.pooler,
        })
    }
}

impl PostgresTarget {
    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema set on the builder, or, once a change has run, the
    /// connection's current schema it resolved to; `None` before that.
    pub fn schema(&self) -> Option<&str> {
        match &self.schema {
            Some(s) => Some(s),
            None => self.names.get().map(|n| n.schema.as_str()),
        }
    }

    fn backend(&self, operation: &'static str, source: sqlx::Error) -> TargetError {
        TargetError::Backend {
            target: self.id.clone(),
            operation,
            source: crate::db_error::with_hint(source),
        }
    }

    /// The marker table's names, asking the server for its current schema
    /// the first time when none was set.
    async fn names(&self) -> Result<&Names, TargetError> {
        self.names
            .get_or_try_init(|| async {
                let schema: Option<String> = idempotent("read current_schema()", || async {
                    let mut c = crate::space::conn(&self.pool, self.pooler).await?;
                    let schema = sqlx::query_scalar("SELECT current_schema()")
                        .persistent(!self.pooler)
                        .fetch_one(&mut *c)
                        .await?;
                    c.finish().await?;
                    Ok(schema)
                })
                .await
                .map_err(|e| self.backend("read current_schema()", e))?;
                let Some(schema) = schema else {
                    return Err(self.unsupported(
                        "the connection has no current schema (no schema of its search_path \
                         exists): name one with PostgresTarget::builder(..).schema(..)",
                    ));
                };
                Names::new(&schema, &self.prefix).map_err(|detail| TargetError::Unsupported {
                    target: self.id.clone(),
                    detail: format!("invalid marker table configuration: {detail}"),
                })
            })
            .await
    }

    async fn ensure_marker_table(&self) -> Result<(), TargetError> {
        let names = self.names().await?.clone();
        self.marker_ready
            .get_or_try_init(|| async {
                schema::ensure(&self.pool, self.pooler, &names, &[Table::Marker], true)
                    .await
                    .map_err(|e| match e {
                        SchemaError::Db { operation, source } => self.backend(operation, source),
                        SchemaError::Missing { detail, .. } => TargetError::Unsupported {
                            target: self.id.clone(),
                            detail,
                        },
                        SchemaError::WrongShape { table, detail } => TargetError::Unsupported {
                            target: self.id.clone(),
                            detail: format!("marker table {table}: {detail}"),
                        },
                    })
            })
            .await
            .map(|_| ())
    }

    fn unsupported(&self, detail: &str) -> TargetError {
        TargetError::Unsupported {
            target: self.id.clone(),
            detail: detail.to_owned(),
        }
    }

    /// Rolls back after a failure inside the transaction, before COMMIT:
    /// nothing was committed, whatever the rollback itself says.
    async fn not_committed(
        &self,
        tx: Transaction<'static, Postgres>,
        source: flamingock_core::BoxError,
    ) -> TargetError {
        if let Err(e) = tx.rollback().await {
            tracing::warn!(target_system = %self.id, error = %e, "rollback failed (the server discards the transaction anyway)");
        }
        TargetError::NotCommitted {
            target: self.id.clone(),
            source,
        }
    }
}

enum Conn {
    Tx(Transaction<'static, Postgres>),
    Plain(PoolConnection<Postgres>),
}

/// What a PostgreSQL change receives: a connection inside the change's open
/// transaction, or a plain pooled connection for a non-transactional change.
/// Dereferences to [`PgConnection`], so any sqlx executor call works:
///
/// ```no_run
/// use flamingock_core::{Change, ChangeMeta, ChangeResult};
/// use flamingock_postgres::{PgContext, PostgresTarget};
///
/// struct SeedCountries;
/// impl Change for SeedCountries {
///     type Target = PostgresTarget;
///     fn meta(&self) -> ChangeMeta { ChangeMeta::new("seed-countries").order("0002") }
///     async fn apply(&self, ctx: &mut PgContext) -> ChangeResult {
///         sqlx::query("INSERT INTO countries (code) VALUES ($1), ($2)")
///             .bind("es").bind("pt")
///             .execute(ctx.conn())
///             .await?;
///         Ok(())
///     }
/// }
/// ```
pub struct PgContext {
    conn: Conn,
    schema: Arc<str>,
}

impl std::fmt::Debug for PgContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgContext")
            .field("transactional", &self.is_transactional())
            .field("schema", &self.schema)
            .finish()
    }
}

impl PgContext {
    /// The connection (inside the change's transaction when it has one).
    pub fn conn(&mut self) -> &mut PgConnection {
        self
    }

    /// Whether the change runs inside a transaction.
    pub fn is_transactional(&self) -> bool {
        matches!(self.conn, Conn::Tx(_))
    }

    /// The target's schema (for the change's own qualified names; quote it
    /// with [`quote_ident`](crate::quote_ident)).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Runs a script statement by statement (see [`split_statements`]):
    /// each statement is sent on its own, so outside a transaction none of
    /// them is wrapped in an implicit one and `CREATE INDEX CONCURRENTLY`
    /// works. Stops at the first failing statement, whose error says which
    /// one it was. Returns the total number of rows affected.
    pub async fn execute_script(&mut self, sql: &str) -> Result<u64, ScriptError> {
        let mut rows = 0;
        for (index, stmt) in split_statements(sql).into_iter().enumerate() {
            let done = self
                .conn()
                .execute(AssertSqlSafe(stmt))
                .await
                .map_err(|source| ScriptError {
                    index,
                    statement: stmt.chars().take(200).collect(),
                    source,
                })?;
            rows += done.rows_affected();
        }
        Ok(rows)
    }
}

/// A statement of [`PgContext::execute_script`] failed. Its message holds
/// the database's ([`describe_error`](crate::describe_error)), so it has
/// no `source()`: the cause is printed once.
#[derive(Debug)]
#[non_exhaustive]
pub struct ScriptError {
    /// Position of the statement (0-based).
    pub index: usize,
    /// The statement (first 200 characters).
    pub statement: String,
    /// The driver's error.
    pub source: sqlx::Error,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "statement #{} of the script failed: {}\n  statement: {}",
            self.index + 1,
            crate::describe_error(&self.source),
            self.statement
        )
    }
}

impl std::error::Error for ScriptError {}

impl Deref for PgContext {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match &self.conn {
            Conn::Tx(tx) => tx,
            Conn::Plain(c) => c,
        }
    }
}

impl DerefMut for PgContext {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match &mut self.conn {
            Conn::Tx(tx) => tx,
            Conn::Plain(c) => c,
        }
    }
}

impl flamingock_core::ChangeContext for PgContext {
    type Target = PostgresTarget;
}

impl TargetSystem for PostgresTarget {
    type Context = PgContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        flamingock_core::shared_audit::transactional_capabilities(self.shared.as_ref(), self.marker)
    }

    async fn begin(&self, mode: ContextMode) -> Result<PgContext, TargetError> {
        // The schema first: asking for it takes a connection of its own, which
        // a pool of one could not give while the change's is taken.
        let schema = match &self.schema {
            Some(s) => s.clone(),
            None => Arc::from(self.names().await?.schema.as_str()),
        };
        let conn = match mode {
            ContextMode::Transaction => {
                if self.marker {
                    self.ensure_marker_table().await?;
                }
                // Safe to retry: nothing has run yet.
                let tx = idempotent("begin transaction", || {
                    self.pool.begin_with(AssertSqlSafe(self.begin_sql.clone()))
                })
                .await
                .map_err(|e| self.backend("begin transaction", e))?;
                Conn::Tx(tx)
            }
            ContextMode::NonTransactional => Conn::Plain(
                self.pool
                    .acquire()
                    .await
                    .map_err(|e| self.backend("acquire a connection", e))?,
            ),
        };
        Ok(PgContext { conn, schema })
    }

    async fn commit(&self, ctx: PgContext, with: CommitWith<'_>) -> Result<(), TargetError> {
        let mut tx = match ctx.conn {
            Conn::Plain(_) => {
                return match with {
                    CommitWith::Nothing => Ok(()),
                    _ => Err(self.unsupported(
                        "a non-transactional context cannot commit an audit entry or a marker",
                    )),
                }
            }
            Conn::Tx(tx) => tx,
        };
        match with {
            CommitWith::Audit(entry) => {
                let Some(shared) = &self.shared else {
                    let e = self.unsupported(
                        "asked to commit an audit entry but this target shares no audit store \
                         (build it with PostgresAuditStore::shared_target)",
                    );
                    return Err(self.not_committed(tx, Box::new(e)).await);
                };
                if let Err(e) = shared.append(&self.id, &mut tx, entry).await {
                    if let Err(r) = tx.rollback().await {
                        tracing::warn!(error = %r, "rollback after a refused audit write failed");
                    }
                    return Err(e);
                }
            }
            CommitWith::Marker(m) => {
                if !self.marker {
                    let e = self.unsupported("asked to write a marker but markers are off");
                    return Err(self.not_committed(tx, Box::new(e)).await);
                }
                let names = match self.names().await {
                    Ok(n) => n,
                    Err(e) => return Err(self.not_committed(tx, Box::new(e)).await),
                };
                let Ok(token) = i64::try_from(m.fencing_token) else {
                    let e = self.unsupported("fencing token does not fit PostgreSQL's bigint");
                    return Err(self.not_committed(tx, Box::new(e)).await);
                };
                let t = names.qualified(Table::Marker);
                let q = format!(
                    "INSERT INTO {t} (change_id, run_id, token) VALUES ($1, $2, $3)
                     ON CONFLICT (change_id) DO UPDATE
                        SET run_id = EXCLUDED.run_id, token = EXCLUDED.token, created_at = clock_timestamp()"
                );
                if let Err(e) = sqlx::query(AssertSqlSafe(q))
                    .persistent(!self.pooler)
                    .bind(&m.change_id)
                    .bind(&m.run_id)
                    .bind(token)
                    .execute(&mut *tx)
                    .await
                {
                    return Err(self.not_committed(tx, Box::new(e)).await);
                }
            }
            CommitWith::Nothing => {}
            _ => {
                let e = self.unsupported("unknown commit request");
                return Err(self.not_committed(tx, Box::new(e)).await);
            }
        }
        match tx.commit().await {
            Ok(()) => Ok(()),
            // The server answered COMMIT with an error (deferred constraint,
            // serialization failure): it rolled the transaction back.
            Err(e @ sqlx::Error::Database(_)) if !is_connection_lost(&e) => {
                Err(TargetError::NotCommitted {
                    target: self.id.clone(),
                    source: Box::new(e),
                })
            }
            // No answer: the outcome is unknown.
            Err(e) => Err(self.backend("commit", e)),
        }
    }

    async fn abort(&self, ctx: PgContext) -> Result<(), TargetError> {
        match ctx.conn {
            Conn::Tx(tx) => tx.rollback().await.map_err(|e| self.backend("rollback", e)),
            Conn::Plain(_) => Ok(()),
        }
    }

    async fn marker(&self, change_id: &str) -> Result<Option<Marker>, TargetError> {
        if !self.marker {
            return Ok(None);
        }
        let t = self.names().await?.qualified(Table::Marker);
        let q = format!("SELECT run_id, token FROM {t} WHERE change_id = $1");
        let row = match idempotent("read marker", || async {
            let mut c = crate::space::conn(&self.pool, self.pooler).await?;
            let row = sqlx::query(AssertSqlSafe(q.clone()))
                .persistent(!self.pooler)
                .bind(change_id)
                .fetch_optional(&mut *c)
                .await?;
            c.finish().await?;
            Ok(row)
        })
        .await
        {
            Ok(r) => r,
            Err(e) if is_undefined_table(&e) => return Ok(None),
            Err(e) => return Err(self.backend("read marker", e)),
        };
        let Some(row) = row else { return Ok(None) };
        let run_id: String = row.try_get(0).map_err(|e| self.backend("read marker", e))?;
        let token: i64 = row.try_get(1).map_err(|e| self.backend("read marker", e))?;
        Ok(Some(Marker {
            change_id: change_id.to_owned(),
            run_id,
            fencing_token: u64::try_from(token).unwrap_or(0),
        }))
    }

    async fn clear_marker(&self, change_id: &str) -> Result<(), TargetError> {
        if !self.marker {
            return Ok(());
        }
        let t = self.names().await?.qualified(Table::Marker);
        let q = format!("DELETE FROM {t} WHERE change_id = $1");
        match idempotent("clear marker", || async {
            let mut c = crate::space::conn(&self.pool, self.pooler).await?;
            let done = sqlx::query(AssertSqlSafe(q.clone()))
                .persistent(!self.pooler)
                .bind(change_id)
                .execute(&mut *c)
                .await?;
            c.finish().await?;
            Ok(done)
        })
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_undefined_table(&e) => Ok(()),
            Err(e) => Err(self.backend("clear marker", e)),
        }
    }
}
