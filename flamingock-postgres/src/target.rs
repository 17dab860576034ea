//! The PostgreSQL target system and the context its changes receive.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use flamingock_core::{
    AuditStore, CommitWith, ContextMode, Marker, StoreError, TargetCapabilities, TargetError,
    TargetSystem,
};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor, PgConnection, PgPool, Postgres, Row, Transaction};
use tokio::sync::OnceCell;

use crate::names::{Names, Table};
use crate::schema::{self, SchemaError};
use crate::script::split_statements;
use crate::space::{idempotent, is_connection_lost, is_undefined_table};
use crate::store::{PostgresAuditStore, DEFAULT_PREFIX, DEFAULT_SCHEMA};

/// A PostgreSQL database changes are applied to.
///
/// * [`PostgresAuditStore::target`] gives a target on the audit store's own
///   database: each change commits in **one transaction** with its APPLIED
///   entry and the fence check (shared-transaction strategy), so a crash at
///   any instant leaves both or neither.
/// * [`PostgresTarget::new`] gives a target on any other database (or the
///   same one with a separate audit store): separate-transaction strategy,
///   with a marker row in `<schema>.<prefix>_marker` written inside the
///   change's transaction, which lets the next run resolve a crash after
///   commit by itself; [`without_marker`](Self::without_marker) turns it off.
///
/// A change declared `.transactional(false)` gets a plain pooled connection
/// outside any transaction (for `CREATE INDEX CONCURRENTLY`, `VACUUM`,
/// `ALTER TYPE ... ADD VALUE` on old servers...). There, execute statements
/// **one at a time**: several statements sent as one string travel as one
/// simple query, which PostgreSQL runs as one implicit transaction (and
/// `CREATE INDEX CONCURRENTLY` refuses to run inside one).
/// [`PgContext::execute_script`] splits a script and does exactly that.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    id: String,
    pool: PgPool,
    schema: Arc<str>,
    prefix: String,
    shared: Option<PostgresAuditStore>,
    marker: bool,
    marker_ready: Arc<OnceCell<()>>,
    /// See [`PostgresTarget::idle_in_transaction_timeout`].
    idle: Option<Duration>,
    /// See [`PostgresTarget::transaction_pooler`].
    pooler: bool,
    /// See [`PostgresTarget::search_path`].
    search_path: Option<String>,
    /// `BEGIN` plus the transaction's settings, sent as one simple query.
    begin_sql: Arc<str>,
}

/// Default [`PostgresTarget::idle_in_transaction_timeout`]: the default lease.
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
    /// A target named `id` on `pool`, keeping markers in
    /// `public.flamingock_marker` (see [`schema`](Self::schema) and
    /// [`table_prefix`](Self::table_prefix)).
    pub fn new(id: impl Into<String>, pool: PgPool) -> Self {
        crate::install_tls_provider();
        PostgresTarget {
            id: id.into(),
            pool,
            schema: Arc::from(DEFAULT_SCHEMA),
            prefix: DEFAULT_PREFIX.to_owned(),
            shared: None,
            marker: true,
            marker_ready: Arc::default(),
            idle: Some(DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT),
            pooler: false,
            search_path: None,
            begin_sql: begin_sql(Some(DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT), false, None),
        }
    }

    pub(crate) fn shared(id: String, store: PostgresAuditStore) -> Self {
        let pooler = store.inner.space.pooler;
        PostgresTarget {
            id,
            pool: store.pool().clone(),
            schema: Arc::from(store.schema()),
            prefix: DEFAULT_PREFIX.to_owned(),
            shared: Some(store),
            marker: false,
            marker_ready: Arc::default(),
            idle: Some(DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT),
            pooler,
            search_path: None,
            begin_sql: begin_sql(Some(DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT), pooler, None),
        }
    }

    fn rebuilt(mut self) -> Self {
        self.begin_sql = begin_sql(self.idle, self.pooler, self.search_path.as_deref());
        self
    }

    /// Declares that the pool reaches PostgreSQL through a pooler in
    /// transaction mode (see
    /// [`PostgresAuditStoreBuilder::transaction_pooler`](crate::PostgresAuditStoreBuilder::transaction_pooler);
    /// a target made by [`PostgresAuditStore::target`] takes the store's
    /// setting). Then the marker statements are not kept prepared, and each
    /// change's transaction starts with `DEALLOCATE ALL`, so the named
    /// statements other clients left on the server connection cannot collide
    /// with the change's own. Build the pool with
    /// `statement_cache_capacity(0)`: a cached statement would be looked up
    /// on whatever server connection the next transaction gets.
    #[must_use]
    pub fn transaction_pooler(mut self, yes: bool) -> Self {
        self.pooler = yes;
        self.rebuilt()
    }

    /// Sets `search_path` for each change's transaction (`SET LOCAL`, in the
    /// same round trip as `BEGIN`), e.g. `"\"ops\", public"`: unqualified
    /// names in the changes resolve there. Unlike a connection option, it
    /// also holds behind a transaction pooler; it does not apply to
    /// non-transactional changes. The text is sent as written.
    #[must_use]
    pub fn search_path(mut self, path: impl Into<String>) -> Self {
        self.search_path = Some(path.into());
        self.rebuilt()
    }

    /// The schema of the marker table, also what [`PgContext::schema`] reports
    /// to changes (default `public`). Created when missing.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Arc::from(schema.into());
        self.marker_ready = Arc::default();
        self
    }

    /// The prefix of the marker table's name (default `flamingock`).
    #[must_use]
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self.marker_ready = Arc::default();
        self
    }

    /// No marker table: a crash between the change's commit and its APPLIED
    /// entry then needs an operator (or `AlwaysRetry`).
    #[must_use]
    pub fn without_marker(mut self) -> Self {
        self.marker = false;
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
    #[must_use]
    pub fn idle_in_transaction_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle = timeout;
        self.rebuilt()
    }

    /// The same target under another id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema changes are told about ([`PgContext::schema`]).
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    fn backend(&self, operation: &'static str, source: sqlx::Error) -> TargetError {
        TargetError::Backend {
            target: self.id.clone(),
            operation,
            source: crate::db_error::with_hint(source),
        }
    }

    fn names(&self) -> Result<Names, TargetError> {
        Names::new(&self.schema, &self.prefix).map_err(|detail| TargetError::Unsupported {
            target: self.id.clone(),
            detail: format!("invalid marker table configuration: {detail}"),
        })
    }

    async fn ensure_marker_table(&self) -> Result<(), TargetError> {
        let names = self.names()?;
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
///     fn meta(&self) -> ChangeMeta { ChangeMeta::new("seed-countries", "0002") }
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
        let mut caps = TargetCapabilities::transactional();
        if self.marker {
            caps = caps.with_marker();
        }
        if let Some(store) = &self.shared {
            caps = caps.sharing_audit_store(store.store_id());
        }
        caps
    }

    async fn begin(&self, mode: ContextMode) -> Result<PgContext, TargetError> {
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
        Ok(PgContext {
            conn,
            schema: self.schema.clone(),
        })
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
                let Some(store) = &self.shared else {
                    let e = self.unsupported(
                        "asked to commit an audit entry but this target shares no audit store \
                         (create it with PostgresAuditStore::target)",
                    );
                    return Err(self.not_committed(tx, Box::new(e)).await);
                };
                match store.append_on(&mut *tx, entry).await {
                    Ok(()) => {}
                    Err(source @ StoreError::Fenced { .. }) => {
                        if let Err(e) = tx.rollback().await {
                            tracing::warn!(error = %e, "rollback of a fenced transaction failed");
                        }
                        return Err(TargetError::Audit {
                            target: self.id.clone(),
                            source,
                        });
                    }
                    Err(e) => return Err(self.not_committed(tx, Box::new(e)).await),
                }
            }
            CommitWith::Marker(m) => {
                if !self.marker {
                    let e = self.unsupported("asked to write a marker but markers are off");
                    return Err(self.not_committed(tx, Box::new(e)).await);
                }
                let names = self.names()?;
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
        let t = self.names()?.qualified(Table::Marker);
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
        let t = self.names()?.qualified(Table::Marker);
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
